/* The one option parser of every program and command: a table over getopt_long
 * (include/mcim/opts.h says what it accepts and how it reports). */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/opts.h"
#include "mcim/version.h"

/* getopt_long's return value for the option at index i of a table without a short name; the
 * --version entry takes VAL_BASE + the table's length. 'h' is -h/--help; 1 is an argument
 * ("-" ordering); '?' and ':' are errors. */
enum { VAL_BASE = 256 };

static size_t count_opts(const struct mcim_opt *o)
{
  size_t n = 0;
  while (o && (o[n].name || o[n].letter))
    n++;
  return n;
}

static void verror(const struct mcim_cmd *cmd, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void verror(const struct mcim_cmd *cmd, const char *fmt, va_list ap)
{
  fprintf(stderr, "%s: ", cmd->name);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see %s --help)\n", cmd->name);
}

int mcim_opts_error(const struct mcim_cmd *cmd, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  verror(cmd, fmt, ap);
  va_end(ap);
  return MCIM_EXIT_USAGE;
}

/* "--name", or "-c" for a short-only option. */
static const char *display(const struct mcim_opt *o, char buf[64])
{
  if (o->name)
    snprintf(buf, 64, "--%s", o->name);
  else
    snprintf(buf, 64, "-%c", o->letter);
  return buf;
}

/* The table entry getopt_long's value `val` stands for (NULL: none of the table's). */
static const struct mcim_opt *find(const struct mcim_opt *opts, size_t n, int val)
{
  if (val >= VAL_BASE && (size_t)(val - VAL_BASE) < n)
    return &opts[val - VAL_BASE];
  for (size_t i = 0; i < n && val > 0 && val < VAL_BASE; i++)
    if (opts[i].letter == val)
      return &opts[i];
  return NULL;
}

/* Whether `arg` (the argument getopt_long took a long option from) spells `name` in full:
 * getopt_long would also take an unambiguous abbreviation, which we do not. */
static bool exact(const char *arg, const char *name)
{
  size_t len = strlen(name);
  return strncmp(arg, "--", 2) == 0 && strncmp(arg + 2, name, len) == 0 &&
         (arg[2 + len] == '\0' || arg[2 + len] == '=');
}

/* The option as the user wrote it, without its "=value". */
static int unknown(const struct mcim_cmd *cmd, const char *arg)
{
  size_t len = strcspn(arg, "=");
  return mcim_opts_error(cmd, "unknown option '%.*s'", (int)len, arg);
}

static int parse(const struct mcim_cmd *cmd, int argc, char **argv, struct mcim_args *out,
                 const struct option *lo, const char *so, size_t n, bool *seen)
{
  char buf[64];
  optind = 0; /* glibc: start over (another command may have parsed before) */
  opterr = 0; /* the errors are ours */
  for (;;) {
    int at = optind > 0 ? optind : 1; /* the argument getopt_long looks at next */
    int li = -1;
    int c = getopt_long(argc, argv, so, lo, &li);
    if (c == -1)
      break;
    if (c == 1) { /* an argument, in order among the options */
      if (out->n >= cmd->max_args || out->n >= MCIM_OPTS_MAX_ARGS)
        return mcim_opts_error(cmd, "unexpected argument '%s'", optarg);
      out->arg[out->n++] = optarg;
      continue;
    }
    bool is_long = at < argc && strncmp(argv[at], "--", 2) == 0;
    if (li >= 0 && !exact(argv[at], lo[li].name))
      return unknown(cmd, argv[at]);
    if (c == '?') {
      const struct mcim_opt *o = is_long ? find(cmd->opts, n, optopt) : NULL;
      if (is_long && o)
        return mcim_opts_error(cmd, "option '%s' takes no value", display(o, buf));
      if (is_long && optopt == 'h')
        return mcim_opts_error(cmd, "option '--help' takes no value");
      if (is_long && cmd->version && optopt == VAL_BASE + (int)n)
        return mcim_opts_error(cmd, "option '--version' takes no value");
      if (is_long)
        return unknown(cmd, argv[at]);
      return mcim_opts_error(cmd, "unknown option '-%c'", optopt);
    }
    if (c == ':') {
      const struct mcim_opt *o = find(cmd->opts, n, optopt);
      return mcim_opts_error(cmd, "option '%s' needs a value", o ? display(o, buf) : "?");
    }
    if (c == 'h') {
      mcim_opts_help(cmd, stdout);
      return MCIM_EXIT_OK;
    }
    if (cmd->version && c == VAL_BASE + (int)n) {
      mcim_version_print(cmd->version, stdout);
      return MCIM_EXIT_OK;
    }
    const struct mcim_opt *o = find(cmd->opts, n, c);
    if (!o) /* cannot happen: every value getopt_long returns is in the table */
      return unknown(cmd, at < argc ? argv[at] : "?");
    /* A value taken from the next argument may not look like an option: `--sho --json` is
     * a forgotten value, not a SHO named "--json". */
    if (o->arg && optarg == argv[optind - 1] && strncmp(optarg, "--", 2) == 0)
      return mcim_opts_error(cmd, "option '%s' needs a value", display(o, buf));
    size_t idx = (size_t)(o - cmd->opts);
    if (o->once && seen[idx])
      return mcim_opts_error(cmd, "option '%s' given more than once", display(o, buf));
    seen[idx] = true;
    if (o->flag) {
      *o->flag = true;
    } else if (o->value) {
      *o->value = optarg;
    } else if (o->list && o->count) {
      if (*o->count >= o->max)
        return mcim_opts_error(cmd, "option '%s' given more than %zu times", display(o, buf),
                               o->max);
      o->list[(*o->count)++] = optarg;
    }
  }
  if (cmd->subcommands) {
    out->next = optind;
    return MCIM_OPTS_RUN;
  }
  /* after "--": arguments only */
  for (int i = optind; i < argc; i++) {
    if (out->n >= cmd->max_args || out->n >= MCIM_OPTS_MAX_ARGS)
      return mcim_opts_error(cmd, "unexpected argument '%s'", argv[i]);
    out->arg[out->n++] = argv[i];
  }
  return MCIM_OPTS_RUN;
}

int mcim_opts_parse(const struct mcim_cmd *cmd, int argc, char **argv, struct mcim_args *out)
{
  size_t n = count_opts(cmd->opts);
  memset(out, 0, sizeof(*out));
  out->next = argc;
  /* getopt_long's tables: every long name, help, version; "-" (arguments returned in order:
   * options may follow them) or "+" (stop at the subcommand), ":" (a missing value is ':'),
   * then the short names. */
  struct option *lo = calloc(n + 3, sizeof(*lo));
  char *so = calloc(2 * n + 8, 1);
  bool *seen = calloc(n + 1, sizeof(*seen));
  int rc = MCIM_EXIT_FAIL;
  if (!lo || !so || !seen) {
    fprintf(stderr, "%s: out of memory\n", cmd->name);
    goto done;
  }
  size_t k = 0, s = 0;
  so[s++] = cmd->subcommands ? '+' : '-';
  so[s++] = ':';
  so[s++] = 'h';
  for (size_t i = 0; i < n; i++) {
    const struct mcim_opt *o = &cmd->opts[i];
    int val = o->letter ? o->letter : VAL_BASE + (int)i;
    if (o->name)
      lo[k++] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, val};
    if (o->letter) {
      so[s++] = o->letter;
      if (o->arg)
        so[s++] = ':';
    }
  }
  lo[k++] = (struct option){"help", no_argument, NULL, 'h'};
  if (cmd->version)
    lo[k++] = (struct option){"version", no_argument, NULL, VAL_BASE + (int)n};
  rc = parse(cmd, argc, argv, out, lo, so, n, seen);
done:
  free(lo);
  free(so);
  free(seen);
  return rc;
}

/* ---- help ---- */

/* Each line of `text` with `first` before the first line and `rest` before the others. */
static void lines(FILE *out, const char *text, const char *first, const char *rest)
{
  const char *p = text;
  for (bool at_first = true; *p; at_first = false) {
    size_t len = strcspn(p, "\n");
    fprintf(out, "%s%.*s\n", len ? (at_first ? first : rest) : "", (int)len, p);
    p += len;
    if (*p == '\n')
      p++;
  }
}

static void left(const struct mcim_opt *o, char *buf, size_t size)
{
  if (o->letter && o->name)
    snprintf(buf, size, "  -%c, --%s%s%s", o->letter, o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
  else if (o->name)
    snprintf(buf, size, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
  else
    snprintf(buf, size, "  -%c%s%s", o->letter, o->arg ? " " : "", o->arg ? o->arg : "");
}

enum { MAX_COL = 26 };

/* One option line: the names at the left, the help from column `col` (on the next line when
 * the names are too long), continuation lines at `col` too. */
static void option_line(FILE *out, const char *names, const char *help, int col)
{
  int len = (int)strlen(names);
  if (!help[0]) {
    fprintf(out, "%s\n", names);
    return;
  }
  if (len + 2 > col)
    fprintf(out, "%s\n%*s", names, col, "");
  else
    fprintf(out, "%s%*s", names, col - len, "");
  const char *p = help;
  for (bool at_first = true; *p || at_first; at_first = false) {
    size_t l = strcspn(p, "\n");
    fprintf(out, "%*s%.*s\n", at_first ? 0 : col, "", (int)l, p);
    p += l;
    if (*p == '\n')
      p++;
  }
}

void mcim_opts_help(const struct mcim_cmd *cmd, FILE *out)
{
  static const struct mcim_opt help = {.name = "help", .letter = 'h',
                                       .help = "print this help and exit"};
  static const struct mcim_opt version = {
      .name = "version", .help = "print the version and the git commit, and exit"};
  size_t n = count_opts(cmd->opts);
  char names[160];
  int col = 0;
  lines(out, cmd->usage, "usage: ", "       ");
  if (cmd->description && cmd->description[0]) {
    fputc('\n', out);
    lines(out, cmd->description, "", "");
  }
  for (size_t i = 0; i <= n + (cmd->version ? 1 : 0); i++) {
    const struct mcim_opt *o = i < n ? &cmd->opts[i] : i == n ? &help : &version;
    left(o, names, sizeof(names));
    int len = (int)strlen(names) + 2;
    if (len <= MAX_COL && len > col)
      col = len;
  }
  fputs("\noptions:\n", out);
  for (size_t i = 0; i < n; i++) {
    left(&cmd->opts[i], names, sizeof(names));
    option_line(out, names, cmd->opts[i].help ? cmd->opts[i].help : "", col);
  }
  left(&help, names, sizeof(names));
  option_line(out, names, help.help, col);
  if (cmd->version) {
    left(&version, names, sizeof(names));
    option_line(out, names, version.help, col);
  }
  if (cmd->more) {
    fputc('\n', out);
    cmd->more(out);
  }
  if (cmd->examples && cmd->examples[0]) {
    fputs("\nexamples:\n", out);
    lines(out, cmd->examples, "  ", "  ");
  }
}
