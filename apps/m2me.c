/* m2me: the M2ME device agent (see `m2me --help` and docs/device.md). main() only. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/device.h"
#include "mcim/log.h"

static void usage(FILE *out)
{
  fprintf(out,
          "usage: m2me --dir DEVICE_DIR [--log-format text|json] [--log-level LEVEL]\n"
          "            [--log-file FILE]\n"
          "       m2me --dir DEVICE_DIR --check-config\n"
          "       m2me --describe-config\n\n"
          "Runs the agent of one M2ME: measured boot into its TRE (DEVICE_DIR/tre), then the\n"
          "control API on DEVICE_DIR/control.sock and the procedures the owner instructs.\n"
          "Configuration: DEVICE_DIR/agent.json (see --describe-config, docs/device.md).\n\n"
          "options:\n"
          "  --dir DEVICE_DIR   the device's folder (agent.json, TRE, firmware, store)\n"
          "  --check-config     validate DEVICE_DIR/agent.json and exit (0: valid)\n"
          "  --describe-config  print the agent.json reference and exit\n"
          "  --log-format F     text (default) or json; the role of each line is the device id\n"
          "  --log-level L      debug, info (default), notice, warn or error\n"
          "  --log-file FILE    append the log to FILE instead of stderr; SIGHUP reopens it\n"
          "GET /metrics on the control socket serves the agent's Prometheus metrics;\n"
          "SSLKEYLOGFILE=PATH makes the TLS library write the session keys (docs/operations.md).\n"
          "SIGTERM or SIGINT stops it; a procedure in progress resumes at the next start.\n\n"
          "examples:\n"
          "  m2me --dir mcim-lab/devices/dev1\n"
          "  m2me --dir /var/lib/mcim/dev1 --log-format json --log-file /var/log/mcim/dev1.log\n"
          "  curl --unix-socket mcim-lab/devices/dev1/control.sock http://localhost/v1/status\n"
          "  curl --unix-socket mcim-lab/devices/dev1/control.sock http://localhost/metrics\n");
}

int main(int argc, char **argv)
{
  const char *dir = NULL, *log_format = NULL, *log_level = NULL, *log_file = NULL;
  bool check = false, describe = false;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return MCIM_EXIT_OK;
    } else if (strcmp(a, "--describe-config") == 0) {
      describe = true;
    } else if (strcmp(a, "--check-config") == 0) {
      check = true;
    } else if (!v) {
      fprintf(stderr, "m2me: %s needs a value (see --help)\n", a);
      return MCIM_EXIT_USAGE;
    } else if (strcmp(a, "--dir") == 0) {
      dir = argv[++i];
    } else if (strcmp(a, "--log-format") == 0) {
      log_format = argv[++i];
    } else if (strcmp(a, "--log-level") == 0) {
      log_level = argv[++i];
    } else if (strcmp(a, "--log-file") == 0) {
      log_file = argv[++i];
    } else {
      fprintf(stderr, "m2me: unknown option %s (see --help)\n", a);
      return MCIM_EXIT_USAGE;
    }
  }
  if (describe) {
    mcim_device_describe_config(stdout);
    return MCIM_EXIT_OK;
  }
  if (!dir) {
    fprintf(stderr, "m2me: --dir DEVICE_DIR is required (see --help)\n");
    return MCIM_EXIT_USAGE;
  }
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
  if (fmt < 0 || lvl < 0) {
    fprintf(stderr, "m2me: --log-format is text|json, --log-level debug|info|notice|warn|error\n");
    return MCIM_EXIT_USAGE;
  }
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
