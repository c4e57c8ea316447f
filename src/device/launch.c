/* The measured launch of a TPM device (include/mcim/device.h, mcim_device_measured_launch;
 * apps/m2me-boot.c): what a platform's boot loader and IMA do before the agent runs. The
 * boot and os images and the agent's executable are hashed here, by the launcher, and
 * extended into PCR 10 with their ima-ng log (src/tre/tpm/tpm_launch.c); the agent then runs
 * from the very file descriptor that was hashed (fexecve), so what runs is what was measured,
 * and the agent itself extends nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device/device_priv.h"
#include "mcim/attest.h"
#include "mcim/firmware.h"
#include "mcim/util.h"

static mcim_cause_t measure_path(const char *path, json_t *log, const char *component, int *keep_fd,
                                 char *detail, size_t len)
{
  char hex[MCIM_FIRMWARE_HEX_LEN + 1];
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  mcim_cause_t rc = fd < 0 ? MCIM_IO_ERROR : mcim_firmware_measure_fd(fd, hex);

  if (rc == MCIM_OK &&
      json_array_append_new(log, json_pack("{s:s,s:s}", "component", component, "digest", hex)))
    rc = MCIM_NO_MEMORY;
  if (rc != MCIM_OK)
    mcim_detailf(detail, len, "cannot measure %s (%s): %s", path, component,
                 fd < 0 ? strerror(errno) : mcim_cause_text(rc));
  if (rc == MCIM_OK && keep_fd)
    *keep_fd = fd;
  else if (fd >= 0)
    close(fd);
  return rc;
}

mcim_cause_t mcim_device_measured_launch(const char *dir, const char *agent, int *agent_fd,
                                         char *detail, size_t detail_len)
{
  mcim_config_t *cfg = NULL;
  json_t *log = NULL;
  char path[4096];
  int fd = -1;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (detail && detail_len)
    detail[0] = '\0';
  if (!dir || !agent || !agent_fd)
    goto cleanup;
  *agent_fd = -1;
  rc = dev_config_load(dir, &cfg, NULL);
  if (rc != MCIM_OK) {
    mcim_detailf(detail, detail_len, "cannot load %s/agent.json", dir);
    goto cleanup;
  }
  const char *backend = mcim_config_str(cfg, "tre_backend");
  const char *tcti = mcim_config_str(cfg, "tpm_tcti");
  if (!backend || strcmp(backend, "tpm") != 0 || !tcti) {
    /* the software TRE: no TPM to measure into; its agent is started directly */
    rc = MCIM_UNSUPPORTED;
    mcim_detailf(detail, detail_len, "%s/agent.json names no TPM (tre_backend tpm, tpm_tcti)", dir);
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  log = json_array();
  if (!log)
    goto cleanup;
  /* boot order: the images the platform loads, then the agent that is about to run */
  static const char *const images[] = {"boot", "os"};
  for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++) {
    rc = MCIM_TOO_LARGE;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.img", mcim_config_path(cfg, "firmware"),
                         images[i]) >= sizeof(path))
      goto cleanup;
    rc = measure_path(path, log, images[i], NULL, detail, detail_len);
    if (rc != MCIM_OK)
      goto cleanup;
  }
  rc = measure_path(agent, log, "agent", &fd, detail, detail_len);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_TOO_LARGE;
  if ((size_t)snprintf(path, sizeof(path), "%s/%s", mcim_config_path(cfg, "tre"),
                       MCIM_ATTEST_LOG_FILE) >= sizeof(path))
    goto cleanup;
  rc = mcim_tpm_launch_measure(tcti, path, log, detail, detail_len);
  if (rc == MCIM_OK) {
    *agent_fd = fd;
    fd = -1;
  }
cleanup:
  if (fd >= 0)
    close(fd);
  json_decref(log);
  mcim_config_free(cfg);
  return rc;
}
