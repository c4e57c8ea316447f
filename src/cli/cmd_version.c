/* `mcim version`: the same as `mcim --version`. */
#include <stdio.h>

#include "mcim/cli.h"
#include "mcim/opts.h"
#include "mcim/version.h"

int mcim_cmd_version(int argc, char **argv)
{
  const struct mcim_cmd cmd = {
      .name = "mcim version",
      .usage = "mcim version",
      .description = "Prints the version of mcim and the git commit it was built from (\"-dirty\"\n"
                     "when the tree had uncommitted changes), as `mcim --version` does.",
      .examples = "mcim version",
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  mcim_version_print("mcim", stdout);
  return MCIM_EXIT_OK;
}
