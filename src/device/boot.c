/* The platform part of the agent: open the TRE of the device folder (the backend agent.json
 * names: software, or TPM-resident keys) and, for the software TRE, the measured boot (SHA-256
 * of each firmware image, recorded in the TRE in boot order, which the TRE then quotes for the
 * PVA: the agent's own word). A TPM TRE was measured before the agent ran, by the launcher
 * (launch.c, apps/m2me-boot.c). A hardware TRE measures in its own platform and is started
 * with mcim_device_start_with().
 * Kept apart from agent.c so that code driving another TRE (tests, a hardware TRE) does not
 * link the software one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "device/device_priv.h"
#include "mcim/firmware.h"
#include "mcim/log.h"

#define IMAGE_MAX (64u * 1024u * 1024u) /* a lab image is a line; refuse to slurp a disk */

static mcim_cause_t read_image(const char *path, uint8_t **buf, size_t *len)
{
  struct stat sb;
  FILE *f = NULL;
  mcim_cause_t rc = MCIM_IO_ERROR;

  *buf = NULL;
  *len = 0;
  if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
    goto cleanup;
  rc = MCIM_TOO_LARGE;
  if ((uint64_t)sb.st_size > IMAGE_MAX)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  f = fopen(path, "rb");
  if (!f)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *buf = malloc((size_t)sb.st_size + 1);
  if (!*buf)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  *len = fread(*buf, 1, (size_t)sb.st_size, f);
  if (*len != (size_t)sb.st_size || ferror(f))
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  if (f)
    fclose(f);
  if (rc != MCIM_OK) {
    free(*buf);
    *buf = NULL;
    *len = 0;
  }
  return rc;
}

static mcim_cause_t measure(mcim_tre_t *tre, const char *fwdir)
{
  json_t *log = json_array();
  mcim_cause_t rc = log ? MCIM_OK : MCIM_NO_MEMORY;

  for (size_t i = 0; rc == MCIM_OK && mcim_firmware_components[i]; i++) {
    const char *c = mcim_firmware_components[i];
    char path[1024], hex[MCIM_FIRMWARE_HEX_LEN + 1];
    uint8_t *img = NULL;
    size_t len = 0;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.img", fwdir, c) >= sizeof(path)) {
      rc = MCIM_TOO_LARGE;
      break;
    }
    rc = read_image(path, &img, &len);
    if (rc == MCIM_OK)
      rc = mcim_firmware_measure(img, len, hex);
    free(img);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "measured boot: cannot measure %s", path);
      break;
    }
    json_array_append_new(log, json_pack("{s:s,s:s}", "component", c, "digest", hex));
    mcim_log_info("measured boot: %s %s", c, hex);
  }
  if (rc == MCIM_OK) {
    rc = mcim_tre_soft_set_measurements(tre, log);
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "measured boot: the TRE refused the log");
  }
  /* A TPM TRE extends nothing here: the launcher (m2me-boot, launch.c) measured the images
   * and this very executable into PCR 10 before it ran, and the quote reads its log. The list
   * above goes only into the JWS quote, which the PVA does not match for a TPM device. */
  json_decref(log);
  return rc;
}

/* The TRE of DEVICE_DIR, opened after measured boot. */
static mcim_cause_t boot(const char *dir, mcim_tre_t **out)
{
  mcim_config_t *cfg = NULL;
  mcim_tre_t *tre = NULL;
  mcim_cause_t rc;

  *out = NULL;
  /* where the TRE and the firmware are */
  rc = dev_config_load(dir, &cfg, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  /* the backend agent.json names: soft, or tpm with the TPM's TCTI (checked by the loader) */
  rc = mcim_tre_open(mcim_config_path(cfg, "tre"), mcim_config_str(cfg, "tre_backend"),
                     mcim_config_str(cfg, "tpm_tcti"), &tre);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot open the TRE in %s",
                   mcim_config_path(cfg, "tre"));
    goto cleanup;
  }
  rc = measure(tre, mcim_config_path(cfg, "firmware"));
  if (rc == MCIM_OK) {
    *out = tre;
    tre = NULL;
  }
cleanup:
  mcim_tre_close(tre);
  mcim_config_free(cfg);
  return rc;
}

mcim_cause_t mcim_device_start(const char *dir, struct mcim_device **out)
{
  mcim_tre_t *tre = NULL;
  mcim_cause_t rc = boot(dir, &tre);
  *out = NULL;
  /* the agent owns the TRE now, also on failure */
  return rc == MCIM_OK ? mcim_device_start_with(dir, tre, out) : rc;
}

mcim_cause_t mcim_device_open(const char *dir, struct mcim_device **out)
{
  mcim_tre_t *tre = NULL;
  mcim_cause_t rc = boot(dir, &tre);
  *out = NULL;
  return rc == MCIM_OK ? mcim_device_open_with(dir, tre, out) : rc;
}
