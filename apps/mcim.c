/* mcim: the command line of the mcim lab (see `mcim --help`). main() only dispatches. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/log.h"
#include "mcim/opts.h"

static void commands(FILE *out)
{
  fprintf(out, "commands:\n");
  for (const struct mcim_cli_command *c = mcim_cli_commands; c->name; c++)
    fprintf(out, "  %-10s %s\n", c->name, c->summary);
}

static const struct mcim_cmd mcim = {
    .name = "mcim",
    .usage = "mcim COMMAND [ARGS...]\n"
             "mcim --version",
    .description =
        "The command line of mcim, remote provisioning and change of subscription for M2M\n"
        "equipment (3GPP TR 33.812): a lab of every role on loopback, the M2ME subscriber's\n"
        "procedures, their traces and charts, the lab PKI, Milenage tools.\n"
        "`mcim COMMAND --help` describes a command and gives examples. Every option of every\n"
        "command takes its value as `--opt VALUE` or `--opt=VALUE`; usage errors exit with 2.\n"
        "The daemons are separate programs: `mcimd --help` (network roles), `m2me --help`\n"
        "(device agent); operating them: docs/operations.md.",
    .more = commands,
    .examples = "mcim demo\n"
                "mcim lab up && mcim lab device add dev1 && mcim run initial dev1 --sho sho-a\n"
                "mcim trace TXID --format text",
    .version = "mcim",
    .subcommands = true,
};

int main(int argc, char **argv)
{
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_WARN, stderr);
  struct mcim_args a;
  int ex = mcim_opts_parse(&mcim, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.next >= argc)
    return mcim_opts_error(&mcim, "missing COMMAND");
  const char *name = argv[a.next];
  if (strcmp(name, "help") == 0) {
    mcim_opts_help(&mcim, stdout);
    return MCIM_EXIT_OK;
  }
  for (const struct mcim_cli_command *c = mcim_cli_commands; c->name; c++)
    if (strcmp(name, c->name) == 0)
      return c->run(argc - a.next, argv + a.next);
  return mcim_opts_error(&mcim, "unknown command '%s'", name);
}
