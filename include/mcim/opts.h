/* The one option parser of every program and command (mcim and its commands, mcimd, m2me):
 * a table of options over getopt_long, which also gives every command the same --help layout
 * and the same usage errors.
 *
 * Syntax, for every option of every command:
 *   --opt VALUE and --opt=VALUE are the same; a short option takes -o VALUE or -oVALUE;
 *   a flag takes no value (--json=1 is refused); option names are exact (no abbreviations);
 *   options and arguments may come in any order (`mcim run initial dev1 --sho sho-a`), except
 *   for a command with subcommands, whose own options come before the subcommand;
 *   `--` ends the options; a value given as the next argument may not start with "--"
 *   (`--sho --json` is a missing value; write `--opt=--x` for such a value);
 *   -h and --help print the help on stdout and exit 0, --version (where there is one) the
 *   version and the git commit.
 * Usage errors are one line on stderr, "NAME: what is wrong (see NAME --help)", exit status 2
 * (MCIM_EXIT_USAGE):
 *   mcim run: unknown option '--bogus' (see mcim run --help)
 *   mcim run: option '--timeout' needs a value (see mcim run --help)
 *   mcim run: option '--json' takes no value (see mcim run --help)
 *   mcim run: unexpected argument 'x' (see mcim run --help)
 *   mcim run: missing NAME (see mcim run --help)
 *
 * Help layout (help2man reads it: the usage lines first, then sections):
 *   usage: SYNOPSIS
 *          SYNOPSIS...
 *
 *   DESCRIPTION
 *
 *   options:
 *     -o, --opt VALUE   what it does     (generated from the table, -h/--help and --version
 *                                         added)
 *   MORE SECTIONS (optional, e.g. "commands:" or "kinds:")
 *
 *   examples:
 *     EXAMPLE... */
#ifndef MCIM_OPTS_H
#define MCIM_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "mcim/cli.h"

/* One option. Exactly one destination is set: flag, value, or list. A table ends with an
 * entry whose name and letter are both 0. */
struct mcim_opt {
  const char *name;   /* the long name without "--" ("timeout"), or NULL (short only) */
  char letter;        /* the short name ('o' for -o), or 0 */
  const char *arg;    /* the value's name in the help ("S", "FILE"); NULL for a flag */
  const char *help;   /* what it does; '\n' starts a continuation line */
  bool *flag;         /* a flag: set to true when given */
  const char **value; /* a value: the last one given */
  const char **list;  /* a repeatable value: each one appended to list[*count] */
  size_t *count;
  size_t max;         /* the list's capacity */
  bool once;          /* a second occurrence is a usage error */
};

/* A command (or a program, or a subcommand): its help and what the parser accepts. */
struct mcim_cmd {
  const char *name;        /* "mcim run": starts every error, named in "(see NAME --help)" */
  const char *usage;       /* the synopsis lines, '\n'-separated, without "usage: " */
  const char *description; /* the text after the synopsis (may hold indented lists) */
  const struct mcim_opt *opts;  /* may be NULL: only -h/--help (and --version) */
  void (*more)(FILE *out); /* further sections after the options, or NULL */
  const char *examples;    /* one example a line, printed indented by two spaces */
  const char *version;     /* the program name for --version (mcim_version_print), or NULL */
  int max_args;            /* how many arguments (positionals) at most; more is an error */
  bool subcommands;        /* the options end at the first argument, the subcommand: it and
                              everything after it are left to the subcommand (see `next`) */
};

enum { MCIM_OPTS_MAX_ARGS = 8, MCIM_OPTS_RUN = -1 };

struct mcim_args {
  const char *arg[MCIM_OPTS_MAX_ARGS]; /* the arguments, in order */
  int n;
  int next; /* subcommands: index in argv of the subcommand (argc if none) */
};

/* Parses argv[1..argc-1] (argv[0] is the command's own name) for `cmd`: the options go to
 * their destinations, the arguments to `out`. Returns MCIM_OPTS_RUN when the command is to
 * run; else the exit status the command returns at once: MCIM_EXIT_OK after the help or the
 * version was printed on stdout, MCIM_EXIT_USAGE after a usage error was printed on stderr. */
int mcim_opts_parse(const struct mcim_cmd *cmd, int argc, char **argv, struct mcim_args *out);

/* The help of `cmd`, in the common layout. */
void mcim_opts_help(const struct mcim_cmd *cmd, FILE *out);

/* A usage error of `cmd` found after parsing (a missing or bad argument or value): prints
 * "NAME: MESSAGE (see NAME --help)" on stderr, returns MCIM_EXIT_USAGE. */
int mcim_opts_error(const struct mcim_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
