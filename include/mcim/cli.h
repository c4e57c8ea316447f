/* The `mcim` command line: each top-level command is one function in src/cli/,
 * called by apps/mcim.c with argv starting at the command's name. Every command (and mcimd,
 * m2me) parses its options with mcim_opts_parse (include/mcim/opts.h): the same syntax, help
 * layout and usage errors everywhere.
 * Exit status: 0 success, 1 the operation failed (cause printed), 2 usage error. */
#ifndef MCIM_CLI_H
#define MCIM_CLI_H

enum { MCIM_EXIT_OK = 0, MCIM_EXIT_FAIL = 1, MCIM_EXIT_USAGE = 2 };

struct mcim_cli_command {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
};

int mcim_cmd_crypto(int argc, char **argv); /* src/cli/cmd_crypto.c */
int mcim_cmd_bench(int argc, char **argv);  /* src/cli/cmd_bench.c */
int mcim_cmd_pki(int argc, char **argv);    /* src/cli/cmd_pki.c */
int mcim_cmd_lab(int argc, char **argv);    /* src/cli/cmd_lab.c */
int mcim_cmd_trace(int argc, char **argv);  /* src/cli/cmd_trace.c */
int mcim_cmd_device(int argc, char **argv); /* src/cli/cmd_device.c */
int mcim_cmd_run(int argc, char **argv);    /* src/cli/cmd_run.c */
int mcim_cmd_demo(int argc, char **argv);   /* src/cli/cmd_demo.c */
int mcim_cmd_pcid(int argc, char **argv);   /* src/cli/cmd_pcid.c */
int mcim_cmd_version(int argc, char **argv); /* src/cli/cmd_version.c */
int mcim_cmd_loadgen(int argc, char **argv); /* src/cli/cmd_loadgen.c */

/* The command table, NULL-terminated (src/cli/commands.c). */
extern const struct mcim_cli_command mcim_cli_commands[];

#endif
