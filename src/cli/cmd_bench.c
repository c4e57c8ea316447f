#include "mcim/cli.h"

/* Placeholder until the bench command lands (being written now). */
int mcim_cmd_bench(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return mcim_usage_error("bench: not available in this build yet");
}
