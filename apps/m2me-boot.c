/* m2me-boot: the measured launch of a TPM device's agent (see `m2me-boot --help`,
 * docs/tre-tpm.md "Attestation at the PVA"). main() only: mcim_device_measured_launch()
 * measures, then the agent runs from the descriptor that was hashed. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/device.h"
#include "mcim/log.h"
#include "mcim/opts.h"

extern char **environ;

int main(int argc, char **argv)
{
  const char *dir = NULL, *agent = NULL, *log_format = NULL;
  char self[PATH_MAX], beside[PATH_MAX], detail[512] = "";
  const struct mcim_opt opts[] = {
      {.name = "dir",
       .arg = "DEVICE_DIR",
       .help = "the device's folder (agent.json naming its TPM, firmware, TRE)",
       .value = &dir},
      {.name = "agent",
       .arg = "PATH",
       .help = "the agent's executable (default: the m2me beside this program)",
       .value = &agent},
      {.name = "log-format",
       .arg = "F",
       .help = "the agent's log format, text or json (passed to it as --log-format F)",
       .value = &log_format},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "m2me-boot",
      .usage = "m2me-boot --dir DEVICE_DIR [--agent PATH] [--log-format text|json]",
      .description =
          "The launcher of a TPM device's agent, as a platform's boot loader and IMA: SHA-256\n"
          "of DEVICE_DIR's firmware/boot.img and firmware/os.img and of the agent's\n"
          "executable, extended into the TPM's PCR 10 (agent.json \"tpm_tcti\") with their\n"
          "ima-ng lines appended to TRE/measurements.ima, then the agent runs (`AGENT --dir\n"
          "DEVICE_DIR`, from the very file that was hashed) in this process. The agent\n"
          "measures nothing: its TPM quotes PCR 10 with this log, which the PVA replays and\n"
          "matches with the RIMs the M2MES published. A device with the software TRE has\n"
          "no TPM: its m2me is started directly. The default agent is the m2me beside this\n"
          "program.\n"
          "Exit status (when the agent did not run): 1 when the measurement failed (the agent\n"
          "must not run unmeasured), 2 for a usage error.",
      .opts = opts,
      .examples =
          "m2me-boot --dir mcim-lab/devices/dev1\n"
          "m2me-boot --dir /var/lib/mcim/devices/dev1 --agent /usr/bin/m2me --log-format json",
      .version = "m2me-boot",
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (!dir)
    return mcim_opts_error(&cmd, "--dir DEVICE_DIR is required");
  if (log_format && strcmp(log_format, "text") != 0 && strcmp(log_format, "json") != 0)
    return mcim_opts_error(&cmd, "--log-format is text or json, not '%s'", log_format);
  if (!agent) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
      return mcim_opts_error(&cmd, "cannot find this program's folder: give --agent PATH");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
      *slash = '\0';
    if ((size_t)snprintf(beside, sizeof(beside), "%s/m2me", self) >= sizeof(beside))
      return mcim_opts_error(&cmd, "the path of m2me is too long: give --agent PATH");
    agent = beside;
  }
  /* what the configuration loader logs goes to stderr, as the agent's own log will */
  mcim_log_init("m2me-boot", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL);
  int fd = -1;
  mcim_cause_t rc = mcim_device_measured_launch(dir, agent, &fd, detail, sizeof(detail));
  if (rc != MCIM_OK) {
    fprintf(stderr, "m2me-boot: %s: measured launch failed, the agent does not run: %s (%s)\n", dir,
            detail[0] ? detail : mcim_cause_text(rc), mcim_cause_name(rc));
    return MCIM_EXIT_FAIL;
  }
  if (detail[0])
    fprintf(stderr, "m2me-boot: %s: warning: %s\n", dir, detail);
  fprintf(stderr, "m2me-boot: %s: boot, os and %s measured into PCR 10; starting the agent\n", dir,
          agent);
  char *const args[] = {(char *)agent,      "--dir",
                        (char *)dir,        log_format ? "--log-format" : NULL,
                        (char *)log_format, NULL};
  fexecve(fd, args, environ);
  perror("m2me-boot: fexecve");
  close(fd);
  return MCIM_EXIT_FAIL;
}
