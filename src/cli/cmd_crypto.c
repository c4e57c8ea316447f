#include "mcim/cli.h"

/* Placeholder until the crypto command lands (being written now). */
int mcim_cmd_crypto(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return mcim_usage_error("crypto: not available in this build yet");
}
