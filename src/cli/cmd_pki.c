#include "mcim/cli.h"

/* Placeholder until the pki command lands (being written now). */
int mcim_cmd_pki(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return mcim_usage_error("pki: not available in this build yet");
}
