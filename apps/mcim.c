/* mcim: the command line of the mcim lab (see `mcim --help`). main() only dispatches. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/log.h"

static void usage(FILE *out)
{
  fprintf(out, "usage: mcim COMMAND [ARGS...]\n\ncommands:\n");
  for (const struct mcim_cli_command *c = mcim_cli_commands; c->name; c++)
    fprintf(out, "  %-10s %s\n", c->name, c->summary);
  fprintf(out, "\n`mcim COMMAND --help` describes a command and gives examples.\n"
               "The daemons are separate programs: `mcimd --help` (network roles), `m2me --help`\n"
               "(device agent); operating them: docs/operations.md.\n\n"
               "examples:\n"
               "  mcim demo\n"
               "  mcim lab up && mcim lab device add dev1 && mcim run initial dev1 --sho sho-a\n"
               "  mcim trace TXID --format text\n");
}

int main(int argc, char **argv)
{
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_WARN, stderr);
  if (argc < 2) {
    usage(stderr);
    return MCIM_EXIT_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return MCIM_EXIT_OK;
  }
  for (const struct mcim_cli_command *c = mcim_cli_commands; c->name; c++)
    if (strcmp(argv[1], c->name) == 0)
      return c->run(argc - 1, argv + 1);
  fprintf(stderr, "mcim: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return MCIM_EXIT_USAGE;
}
