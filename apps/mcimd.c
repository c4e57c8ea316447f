/* mcimd: one daemon binary for every network role (see `mcimd --help`). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/log.h"
#include "mcim/opts.h"
#include "mcim/role.h"

static volatile sig_atomic_t stop_requested, reopen_requested;

static void on_signal(int sig)
{
  if (sig == SIGHUP)
    reopen_requested = 1;
  else
    stop_requested = 1;
}

/* The log keys of a configuration (empty when absent or unreadable). */
static void log_config(const struct mcim_role_kind *kind, const char *path, char format[16],
                       char level[16], char file[4096])
{
  size_t n = mcim_role_common_nspec + kind->nspec;
  mcim_config_spec_t *spec = calloc(n, sizeof(*spec));
  mcim_config_t *cfg = NULL;
  if (!spec)
    return;
  memcpy(spec, mcim_role_common_spec, mcim_role_common_nspec * sizeof(*spec));
  if (kind->nspec)
    memcpy(spec + mcim_role_common_nspec, kind->spec, kind->nspec * sizeof(*spec));
  if (mcim_config_load(path, spec, n, &cfg, NULL, 0) == MCIM_OK) {
    const char *f = mcim_config_str(cfg, "log_format"), *l = mcim_config_str(cfg, "log_level");
    snprintf(format, 16, "%s", f ? f : "");
    snprintf(level, 16, "%s", l ? l : "");
    if (mcim_config_has(cfg, "log_file"))
      snprintf(file, 4096, "%s", mcim_config_path(cfg, "log_file"));
  }
  mcim_config_free(cfg);
  free(spec);
}

static void kinds(FILE *out)
{
  fprintf(out, "kinds:\n");
  for (size_t i = 0; mcim_role_kinds[i]; i++)
    fprintf(out, "  %-6s %s\n", mcim_role_kinds[i]->kind, mcim_role_kinds[i]->summary);
}

int main(int argc, char **argv)
{
  const char *kind_name = NULL, *config = NULL, *check = NULL;
  const char *log_format = NULL, *log_level = NULL, *log_file = NULL;
  bool describe = false;
  const struct mcim_opt opts[] = {
      {.name = "role", .arg = "KIND", .help = "the role kind (below)", .value = &kind_name},
      {.name = "config", .arg = "FILE",
       .help = "the instance's configuration (JSON; --describe-config lists\nthe keys)",
       .value = &config},
      {.name = "check-config", .arg = "FILE", .help = "validate FILE for KIND and exit (0: valid)",
       .value = &check},
      {.name = "describe-config", .help = "print the configuration reference of KIND and exit",
       .flag = &describe},
      {.name = "log-format", .arg = "F",
       .help = "text (default) or json: one line per event with time, level,\n"
               "role, txn, step, cause and message",
       .value = &log_format},
      {.name = "log-level", .arg = "L", .help = "debug, info (default), notice, warn or error",
       .value = &log_level},
      {.name = "log-file", .arg = "FILE",
       .help = "append the log to FILE instead of stderr; SIGHUP reopens it", .value = &log_file},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcimd",
      .usage = "mcimd --role KIND --config FILE [--log-format text|json] [--log-level LEVEL]\n"
               "      [--log-file FILE]\n"
               "mcimd --role KIND --check-config FILE\n"
               "mcimd --role KIND --describe-config\n"
               "mcimd --version",
      .description =
          "Runs one role instance of the mcim system as an HTTPS service.\n"
          "Every option takes its value as `--opt VALUE` or `--opt=VALUE`. The command line\n"
          "wins over the log_format, log_level and log_file keys of FILE.\n"
          "GET /metrics serves Prometheus metrics; SSLKEYLOGFILE=PATH makes the TLS library\n"
          "write the session keys (for Wireshark). See docs/operations.md.\n"
          "SIGTERM or SIGINT stops the instance. Exit status: 0, 1 when it failed to start,\n"
          "2 for a usage error.",
      .opts = opts,
      .more = kinds,
      .examples = "mcimd --role ro --config mcim-lab/ro/ro.json\n"
                  "mcimd --role vno --config /etc/mcim/vno.json --log-format json \\\n"
                  "      --log-file /var/log/mcim/vno.log\n"
                  "mcimd --role=sho --check-config=mcim-lab/sho-a/sho-a.json\n"
                  "mcimd --role vno --describe-config",
      .version = "mcimd",
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  const struct mcim_role_kind *kind = mcim_role_kind_find(kind_name);
  if (!kind) {
    char names[256] = "";
    for (size_t i = 0, n = 0; mcim_role_kinds[i] && n < sizeof(names); i++)
      n += (size_t)snprintf(names + n, sizeof(names) - n, " %s", mcim_role_kinds[i]->kind);
    return kind_name ? mcim_opts_error(&cmd, "--role '%s' is not a kind; one of:%s", kind_name,
                                       names)
                     : mcim_opts_error(&cmd, "--role KIND is required; one of:%s", names);
  }
  if (describe) {
    mcim_role_describe_config(kind, stdout);
    return MCIM_EXIT_OK;
  }
  if (check) {
    char err[4096] = "";
    mcim_cause_t rc = mcim_role_check_config(kind, check, err, sizeof(err));
    if (rc != MCIM_OK) {
      fprintf(stderr, "%s\n", err[0] ? err : mcim_cause_text(rc));
      return MCIM_EXIT_FAIL;
    }
    printf("%s: ok\n", check);
    return MCIM_EXIT_OK;
  }
  if (!config)
    return mcim_opts_error(&cmd, "--config FILE is required");
  if (log_format && mcim_log_format_from_name(log_format) < 0)
    return mcim_opts_error(&cmd, "--log-format is text or json, not '%s'", log_format);
  if (log_level && mcim_log_level_from_name(log_level) < 0)
    return mcim_opts_error(&cmd, "--log-level is debug, info, notice, warn or error, not '%s'",
                           log_level);
  /* The log settings: the command line, else the configuration's keys, else text/info to
   * stderr. An unreadable configuration is reported by mcim_role_start below. */
  char cfg_format[16] = "", cfg_level[16] = "", cfg_file[4096] = "";
  log_config(kind, config, cfg_format, cfg_level, cfg_file);
  int fmt = mcim_log_format_from_name(log_format ? log_format : cfg_format[0] ? cfg_format : "text");
  int lvl = mcim_log_level_from_name(log_level ? log_level : cfg_level[0] ? cfg_level : "info");
  mcim_log_init(kind->kind, fmt < 0 ? MCIM_LOG_TEXT : (mcim_log_format_t)fmt,
                lvl < 0 ? MCIM_LOG_INFO : (mcim_log_level_t)lvl, NULL);
  if (!log_file && cfg_file[0])
    log_file = cfg_file;
  if (log_file && mcim_log_open_file(log_file) != MCIM_OK) {
    fprintf(stderr, "mcimd: cannot append to the log file %s\n", log_file);
    return MCIM_EXIT_FAIL;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct mcim_role *r = NULL;
  mcim_cause_t rc = mcim_role_start(kind, config, &r);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcimd: %s failed to start: %s (%s)\n", kind->kind, mcim_cause_text(rc),
            mcim_cause_name(rc));
    return MCIM_EXIT_FAIL;
  }
  mcim_log_set_role(r->name);
  while (!stop_requested) {
    pause();
    if (reopen_requested) {
      reopen_requested = 0;
      mcim_log_reopen();
      mcim_log_info("log file reopened (SIGHUP)");
    }
  }
  mcim_log_info("stopping");
  mcim_role_free(r);
  return MCIM_EXIT_OK;
}
