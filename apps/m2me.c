/* m2me: the M2ME device agent (see `m2me --help` and docs/device.md). main() only. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/device.h"
#include "mcim/log.h"
#include "mcim/opts.h"

int main(int argc, char **argv)
{
  const char *dir = NULL, *log_format = NULL, *log_level = NULL, *log_file = NULL;
  bool check = false, describe = false;
  const struct mcim_opt opts[] = {
      {.name = "dir", .arg = "DEVICE_DIR",
       .help = "the device's folder (agent.json, TRE, firmware, store)", .value = &dir},
      {.name = "check-config", .help = "validate DEVICE_DIR/agent.json and exit (0: valid)",
       .flag = &check},
      {.name = "describe-config", .help = "print the agent.json reference and exit",
       .flag = &describe},
      {.name = "log-format", .arg = "F",
       .help = "text (default) or json; the role of each line is the device id",
       .value = &log_format},
      {.name = "log-level", .arg = "L", .help = "debug, info (default), notice, warn or error",
       .value = &log_level},
      {.name = "log-file", .arg = "FILE",
       .help = "append the log to FILE instead of stderr; SIGHUP reopens it", .value = &log_file},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "m2me",
      .usage = "m2me --dir DEVICE_DIR [--log-format text|json] [--log-level LEVEL]\n"
               "     [--log-file FILE]\n"
               "m2me --dir DEVICE_DIR --check-config\n"
               "m2me --describe-config\n"
               "m2me --version",
      .description =
          "Runs the agent of one M2ME: measured boot into its TRE (DEVICE_DIR/tre), then the\n"
          "control API on DEVICE_DIR/control.sock and the procedures the owner instructs.\n"
          "Configuration: DEVICE_DIR/agent.json (see --describe-config, docs/device.md).\n"
          "Every option takes its value as `--opt VALUE` or `--opt=VALUE`.\n"
          "GET /metrics on the control socket serves the agent's Prometheus metrics;\n"
          "SSLKEYLOGFILE=PATH makes the TLS library write the session keys (docs/operations.md).\n"
          "SIGTERM or SIGINT stops it; a procedure in progress resumes at the next start.\n"
          "Exit status: 0, 1 when the agent could not start, 2 for a usage error.",
      .opts = opts,
      .examples =
          "m2me --dir mcim-lab/devices/dev1\n"
          "m2me --dir=/var/lib/mcim/dev1 --log-format json --log-file /var/log/mcim/dev1.log\n"
          "curl --unix-socket mcim-lab/devices/dev1/control.sock http://localhost/v1/status\n"
          "curl --unix-socket mcim-lab/devices/dev1/control.sock http://localhost/metrics",
      .version = "m2me",
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (describe) {
    mcim_device_describe_config(stdout);
    return MCIM_EXIT_OK;
  }
  if (!dir)
    return mcim_opts_error(&cmd, "--dir DEVICE_DIR is required");
  if (check) {
    char err[4096] = "";
    mcim_cause_t rc = mcim_device_check_config(dir, err, sizeof(err));
    if (rc != MCIM_OK) {
      fprintf(stderr, "%s\n", err[0] ? err : mcim_cause_text(rc));
      return MCIM_EXIT_FAIL;
    }
    printf("%s/%s: ok\n", dir, MCIM_DEVICE_CONFIG);
    return MCIM_EXIT_OK;
  }
  int fmt = mcim_log_format_from_name(log_format ? log_format : "text");
  int lvl = mcim_log_level_from_name(log_level ? log_level : "info");
  if (fmt < 0)
    return mcim_opts_error(&cmd, "--log-format is text or json, not '%s'", log_format);
  if (lvl < 0)
    return mcim_opts_error(&cmd, "--log-level is debug, info, notice, warn or error, not '%s'",
                           log_level);
  /* Every line names the device: the folder's name until the TRE says the device id. */
  char provisional[256];
  snprintf(provisional, sizeof(provisional), "%s", dir);
  size_t n = strlen(provisional);
  while (n > 1 && provisional[n - 1] == '/')
    provisional[--n] = '\0';
  const char *slash = strrchr(provisional, '/');
  memmove(provisional, slash ? slash + 1 : provisional, strlen(slash ? slash + 1 : provisional) + 1);
  mcim_log_init(provisional[0] ? provisional : "m2me", (mcim_log_format_t)fmt,
                (mcim_log_level_t)lvl, NULL);
  if (log_file && mcim_log_open_file(log_file) != MCIM_OK) {
    fprintf(stderr, "m2me: cannot append to the log file %s\n", log_file);
    return MCIM_EXIT_FAIL;
  }

  /* Before any thread or store: one malloc arena, a small SQLite (docs/device.md,
   * "Footprint"). */
  mcim_device_process_init();
  /* Signals are taken synchronously by this thread only: block them before any thread
   * starts (threads inherit the mask), then wait for one. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct mcim_device *d = NULL;
  mcim_cause_t rc = mcim_device_start(dir, &d);
  if (rc != MCIM_OK) {
    fprintf(stderr, "m2me: the agent of %s failed to start: %s (%s)\n", dir,
            mcim_cause_text(rc), mcim_cause_name(rc));
    return MCIM_EXIT_FAIL;
  }
  mcim_log_set_role(mcim_device_name(d));
  int sig = 0;
  while (sigwait(&stop, &sig) != 0 || sig == SIGHUP) {
    if (sig == SIGHUP) {
      sig = 0;
      mcim_log_reopen();
      mcim_log_info("log file reopened (SIGHUP)");
    }
  }
  mcim_log_info("signal %d: stopping", sig);
  mcim_device_free(d);
  return MCIM_EXIT_OK;
}
