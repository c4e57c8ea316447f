/* mcimd: one daemon binary for every network role (see `mcimd --help`). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/log.h"
#include "mcim/role.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

static void usage(FILE *out)
{
  fprintf(out,
          "usage: mcimd --role KIND --config FILE [--log-format text|json] [--log-level LEVEL]\n"
          "       mcimd --role KIND --check-config FILE\n"
          "       mcimd --role KIND --describe-config\n\n"
          "Runs one role instance of the mcim system as an HTTPS service.\n\nkinds:\n");
  for (size_t i = 0; mcim_role_kinds[i]; i++)
    fprintf(out, "  %-6s %s\n", mcim_role_kinds[i]->kind, mcim_role_kinds[i]->summary);
  fprintf(out, "\nexamples:\n"
               "  mcimd --role ro --config mcim-lab/ro/ro.json\n"
               "  mcimd --role sho --check-config mcim-lab/sho-a/sho-a.json\n"
               "  mcimd --role vno --describe-config\n");
}

int main(int argc, char **argv)
{
  const char *kind_name = NULL, *config = NULL, *check = NULL;
  const char *log_format = NULL, *log_level = NULL;
  bool describe = false;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return MCIM_EXIT_OK;
    } else if (strcmp(a, "--describe-config") == 0) {
      describe = true;
    } else if (!v) {
      fprintf(stderr, "mcimd: %s needs a value (see --help)\n", a);
      return MCIM_EXIT_USAGE;
    } else if (strcmp(a, "--role") == 0) {
      kind_name = argv[++i];
    } else if (strcmp(a, "--config") == 0) {
      config = argv[++i];
    } else if (strcmp(a, "--check-config") == 0) {
      check = argv[++i];
    } else if (strcmp(a, "--log-format") == 0) {
      log_format = argv[++i];
    } else if (strcmp(a, "--log-level") == 0) {
      log_level = argv[++i];
    } else {
      fprintf(stderr, "mcimd: unknown option %s (see --help)\n", a);
      return MCIM_EXIT_USAGE;
    }
  }
  const struct mcim_role_kind *kind = mcim_role_kind_find(kind_name);
  if (!kind) {
    fprintf(stderr, "mcimd: --role must be one of:");
    for (size_t i = 0; mcim_role_kinds[i]; i++)
      fprintf(stderr, " %s", mcim_role_kinds[i]->kind);
    fprintf(stderr, "\n");
    return MCIM_EXIT_USAGE;
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
  if (!config) {
    fprintf(stderr, "mcimd: --config FILE is required (see --help)\n");
    return MCIM_EXIT_USAGE;
  }
  int fmt = mcim_log_format_from_name(log_format ? log_format : "text");
  int lvl = mcim_log_level_from_name(log_level ? log_level : "info");
  if (fmt < 0 || lvl < 0) {
    fprintf(stderr, "mcimd: --log-format is text|json, --log-level debug|info|notice|warn|error\n");
    return MCIM_EXIT_USAGE;
  }
  mcim_log_init(kind->kind, (mcim_log_format_t)fmt, (mcim_log_level_t)lvl, NULL);

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct mcim_role *r = NULL;
  mcim_cause_t rc = mcim_role_start(kind, config, &r);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcimd: %s failed to start: %s (%s)\n", kind->kind, mcim_cause_text(rc),
            mcim_cause_name(rc));
    return MCIM_EXIT_FAIL;
  }
  mcim_log_init(r->name, (mcim_log_format_t)fmt, (mcim_log_level_t)lvl, NULL);
  while (!stop_requested)
    pause();
  mcim_log_info("stopping");
  mcim_role_free(r);
  return MCIM_EXIT_OK;
}
