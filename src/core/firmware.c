/* Lab firmware images, RIMs and the measurement chain (include/mcim/firmware.h). */
#include "mcim/firmware.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/pki.h"
#include "mcim/util.h"

const char *const mcim_firmware_components[] = {"boot", "os", "agent", NULL};

mcim_cause_t mcim_firmware_image(const char *model, const char *component, char **out)
{
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  /* Names only: the text goes into files and digests other parties recompute. */
  if (!model || !component || !mcim_pki_name_valid(model) || !mcim_pki_name_valid(component))
    return MCIM_INVALID_ARGUMENT;
  int n = snprintf(NULL, 0, "mcim lab firmware %s %s v1\n", model, component);
  char *s = malloc((size_t)n + 1);
  if (!s)
    return MCIM_NO_MEMORY;
  snprintf(s, (size_t)n + 1, "mcim lab firmware %s %s v1\n", model, component);
  *out = s;
  return MCIM_OK;
}

mcim_cause_t mcim_firmware_measure(const uint8_t *image, size_t len,
                                   char hex[MCIM_FIRMWARE_HEX_LEN + 1])
{
  uint8_t md[MCIM_FIRMWARE_DIGEST_LEN];
  unsigned mdlen = 0;
  if ((!image && len) || !hex)
    return MCIM_INVALID_ARGUMENT;
  if (EVP_Digest(image ? (const void *)image : (const void *)"", len, md, &mdlen, EVP_sha256(),
                 NULL) != 1 ||
      mdlen != sizeof(md))
    return MCIM_CRYPTO_ERROR;
  mcim_hex_encode(md, sizeof(md), hex);
  return MCIM_OK;
}

#define FILE_MAX (256u * 1024u * 1024u) /* an agent's executable or an image, not a disk */

mcim_cause_t mcim_firmware_measure_fd(int fd, char hex[MCIM_FIRMWARE_HEX_LEN + 1])
{
  struct stat sb;
  uint8_t buf[65536], md[32];
  unsigned mdlen = 0;
  size_t total = 0;
  EVP_MD_CTX *ctx = NULL;
  mcim_cause_t rc = MCIM_IO_ERROR;

  if (fd < 0 || !hex)
    return MCIM_INVALID_ARGUMENT;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || lseek(fd, 0, SEEK_SET) != 0)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
    goto cleanup;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = MCIM_IO_ERROR;
      goto cleanup;
    }
    if (n == 0)
      break;
    total += (size_t)n;
    if (total > FILE_MAX) {
      rc = MCIM_TOO_LARGE;
      goto cleanup;
    }
    if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
      goto cleanup;
  }
  if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != sizeof(md))
    goto cleanup;
  mcim_hex_encode(md, sizeof(md), hex);
  rc = MCIM_OK;
cleanup:
  EVP_MD_CTX_free(ctx);
  return rc;
}

mcim_cause_t mcim_firmware_measure_file(const char *path, char hex[MCIM_FIRMWARE_HEX_LEN + 1])
{
  int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;
  mcim_cause_t rc = fd < 0 ? MCIM_IO_ERROR : mcim_firmware_measure_fd(fd, hex);
  if (fd >= 0)
    close(fd);
  return rc;
}

mcim_cause_t mcim_firmware_rim(const char *model, const char *component,
                               char hex[MCIM_FIRMWARE_HEX_LEN + 1])
{
  char *img = NULL;
  mcim_cause_t rc = mcim_firmware_image(model, component, &img);
  if (rc == MCIM_OK)
    rc = mcim_firmware_measure((const uint8_t *)img, strlen(img), hex);
  free(img);
  return rc;
}

mcim_cause_t mcim_firmware_extend(uint8_t d[MCIM_FIRMWARE_DIGEST_LEN],
                                  const uint8_t m[MCIM_FIRMWARE_DIGEST_LEN])
{
  uint8_t buf[2 * MCIM_FIRMWARE_DIGEST_LEN];
  unsigned mdlen = 0;
  if (!d || !m)
    return MCIM_INVALID_ARGUMENT;
  memcpy(buf, d, MCIM_FIRMWARE_DIGEST_LEN);
  memcpy(buf + MCIM_FIRMWARE_DIGEST_LEN, m, MCIM_FIRMWARE_DIGEST_LEN);
  if (EVP_Digest(buf, sizeof(buf), d, &mdlen, EVP_sha256(), NULL) != 1 ||
      mdlen != MCIM_FIRMWARE_DIGEST_LEN)
    return MCIM_CRYPTO_ERROR;
  return MCIM_OK;
}

mcim_cause_t mcim_firmware_log_digest(const json_t *log, char hex[MCIM_FIRMWARE_HEX_LEN + 1],
                                      char *err, size_t errlen)
{
  uint8_t d[MCIM_FIRMWARE_DIGEST_LEN] = {0};
  uint8_t m[MCIM_FIRMWARE_DIGEST_LEN];
  char dummy[8];
  mcim_cause_t rc = MCIM_OK;
  size_t i;
  json_t *entry;

  if (!err) {
    err = dummy;
    errlen = sizeof(dummy);
  }
  err[0] = '\0';
  if (!hex)
    return MCIM_INVALID_ARGUMENT;
  if (!json_is_array(log)) {
    snprintf(err, errlen, "the measurement log must be an array");
    return MCIM_BAD_JSON;
  }
  if (json_array_size(log) > MCIM_FIRMWARE_MAX_LOG) {
    snprintf(err, errlen, "the measurement log has %zu entries, at most %d allowed",
             json_array_size(log), MCIM_FIRMWARE_MAX_LOG);
    return MCIM_TOO_LARGE;
  }
  json_array_foreach(log, i, entry) {
    json_t *comp = json_object_get(entry, "component");
    json_t *dig = json_object_get(entry, "digest");
    if (!json_is_object(entry) || json_object_size(entry) != 2 || !json_is_string(comp) ||
        !json_is_string(dig)) {
      snprintf(err, errlen, "log entry %zu must be {\"component\", \"digest\"} strings", i);
      rc = MCIM_BAD_JSON;
      goto cleanup;
    }
    rc = mcim_hex_decode(json_string_value(dig), json_string_length(dig), m, sizeof(m));
    if (rc != MCIM_OK) {
      snprintf(err, errlen, "log entry %zu: digest must be %d hex digits", i,
               MCIM_FIRMWARE_HEX_LEN);
      goto cleanup;
    }
    rc = mcim_firmware_extend(d, m);
    if (rc != MCIM_OK)
      goto cleanup;
  }
  mcim_hex_encode(d, sizeof(d), hex);
cleanup:
  return rc;
}
