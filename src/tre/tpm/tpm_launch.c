/* The measured launch's TPM side (include/mcim/attest.h, mcim_tpm_launch_measure): what the
 * launcher (apps/m2me-boot.c) measured, extended into PCR 10 and appended to the ima-ng log
 * of this TPM power cycle. It runs before the agent, which only reads the log (tre_quote.c);
 * no TRE is opened here: the launcher holds no key. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/attest.h"
#include "mcim/util.h"
#include "tre/tpm/tpm_quote.h"

#define LINE_MAX_LEN 256

/* A log file as it is (regular, bounded), or NULL when there is none or it is unusable. */
static char *read_log(const char *path)
{
  struct stat sb;
  char *buf = NULL;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return NULL;
  if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 &&
      sb.st_size <= MCIM_ATTEST_MAX_LOG && (buf = malloc((size_t)sb.st_size + 1)) != NULL) {
    if (read(fd, buf, (size_t)sb.st_size) == (ssize_t)sb.st_size) {
      buf[sb.st_size] = '\0';
    } else {
      free(buf);
      buf = NULL;
    }
  }
  close(fd);
  return buf;
}

/* Does `log` replay to `pcr`? *lines gets its lines. */
static bool replays_to(const char *log, const uint8_t pcr[32], size_t *lines)
{
  uint8_t v[32];
  char err[160];
  *lines = 0;
  return log && mcim_attest_log_replay(log, v, lines, err, sizeof(err)) == MCIM_OK &&
         memcmp(v, pcr, 32) == 0;
}

static mcim_cause_t write_file(const char *path, const char *text)
{
  size_t len = strlen(text);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  mcim_cause_t rc = MCIM_IO_ERROR;
  if (fd < 0)
    return rc;
  if (write(fd, text, len) == (ssize_t)len && fsync(fd) == 0)
    rc = MCIM_OK;
  if (close(fd) != 0)
    rc = MCIM_IO_ERROR;
  return rc;
}

mcim_cause_t mcim_tpm_launch_measure(const char *tcti, const char *log_path, const json_t *log,
                                     char *detail, size_t detail_len)
{
  static const uint8_t zero[32] = {0};
  uint8_t pcr[32];
  char *old = NULL, *pending = NULL, *text = NULL, *tmp = NULL;
  const char *base = "";
  size_t n = json_array_size(log), base_lines = 0, i;
  const json_t *e;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (detail && detail_len)
    detail[0] = '\0';
  if (!tcti || !log_path || !json_is_array(log) || n == 0)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  tmp = malloc(strlen(log_path) + sizeof(".new"));
  if (!tmp)
    goto cleanup;
  snprintf(tmp, strlen(log_path) + sizeof(".new"), "%s.new", log_path);
  rc = mcim_tpm_open(tcti, &tpm, detail, detail_len);
  if (rc == MCIM_OK)
    rc = mcim_tpm_pcr_read(tpm, MCIM_ATTEST_PCR, pcr);
  if (rc != MCIM_OK) {
    if (tpm)
      mcim_detailf(detail, detail_len, "%s", mcim_tpm_detail(tpm));
    goto cleanup;
  }
  /* The log that replays to the PCR as it is: this power cycle's (the agent started again),
   * or the one a launch that died after its extends left beside it; else a new one. */
  old = read_log(log_path);
  pending = read_log(tmp);
  if (replays_to(old, pcr, &base_lines)) {
    base = old;
  } else if (replays_to(pending, pcr, &base_lines)) {
    base = pending;
  } else {
    base_lines = 0;
    if (memcmp(pcr, zero, 32) != 0)
      mcim_detailf(detail, detail_len,
                   "PCR %d is not at its reset value and no log replays to it (a log lost): "
                   "the PVA refuses this device's quotes until its TPM restarts",
                   MCIM_ATTEST_PCR);
  }
  rc = MCIM_TOO_LARGE;
  if (base_lines + n > MCIM_ATTEST_MAX_ENTRIES) {
    mcim_detailf(detail, detail_len,
                 "the log of PCR %d has %zu lines: %zu more would exceed %d (restart the TPM, "
                 "i.e. the platform)",
                 MCIM_ATTEST_PCR, base_lines, n, MCIM_ATTEST_MAX_ENTRIES);
    goto cleanup;
  }
  size_t used = strlen(base), cap = used + n * LINE_MAX_LEN + 1;
  rc = MCIM_NO_MEMORY;
  text = malloc(cap);
  if (!text)
    goto cleanup;
  memcpy(text, base, used + 1);
  json_array_foreach (log, i, e) {
    uint8_t d[32];
    const char *hex = json_string_value(json_object_get(e, "digest"));
    rc = MCIM_INVALID_ARGUMENT;
    if (!hex || mcim_hex_decode_str(hex, d, sizeof(d)) != MCIM_OK)
      goto cleanup;
    rc = mcim_attest_log_line(d, json_string_value(json_object_get(e, "component")), text + used,
                              cap - used);
    if (rc != MCIM_OK)
      goto cleanup;
    used += strlen(text + used);
  }
  rc = MCIM_TOO_LARGE;
  if (used > MCIM_ATTEST_MAX_LOG) {
    mcim_detailf(detail, detail_len, "the log of PCR %d would exceed %d bytes", MCIM_ATTEST_PCR,
                 MCIM_ATTEST_MAX_LOG);
    goto cleanup;
  }
  /* The log first (beside the old one), then the PCR, then the log in place. */
  rc = write_file(tmp, text);
  if (rc != MCIM_OK) {
    mcim_detailf(detail, detail_len, "cannot write %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  json_array_foreach (log, i, e) {
    uint8_t d[32], th[32];
    rc = mcim_hex_decode_str(json_string_value(json_object_get(e, "digest")), d, sizeof(d));
    if (rc == MCIM_OK)
      rc = mcim_attest_template_hash(d, json_string_value(json_object_get(e, "component")), th);
    if (rc == MCIM_OK)
      rc = mcim_tpm_pcr_extend(tpm, MCIM_ATTEST_PCR, th);
    if (rc != MCIM_OK) {
      mcim_detailf(detail, detail_len, "PCR %d: %s", MCIM_ATTEST_PCR, mcim_tpm_detail(tpm));
      goto cleanup;
    }
  }
  if (rename(tmp, log_path) != 0) {
    rc = MCIM_IO_ERROR;
    mcim_detailf(detail, detail_len, "cannot rename %s: %s", tmp, strerror(errno));
  }
cleanup:
  mcim_tpm_free(tpm);
  free(old);
  free(pending);
  free(text);
  free(tmp);
  return rc;
}
