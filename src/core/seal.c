/* Sealing of secrets at rest with AES-256-GCM (OpenSSL EVP), and the storage key
 * file. See include/mcim/seal.h for the format. */
#include "mcim/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/util.h"

struct mcim_storage_key {
  uint8_t k[MCIM_STORAGE_KEY_LEN];
};

/* ---- keys in memory ---- */

mcim_cause_t mcim_storage_key_from_bytes(const uint8_t *bytes, size_t len,
                                         mcim_storage_key_t **out)
{
  if (!bytes || !out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (len != MCIM_STORAGE_KEY_LEN)
    return MCIM_BAD_LENGTH;
  mcim_storage_key_t *key = calloc(1, sizeof(*key));
  if (!key)
    return MCIM_NO_MEMORY;
  memcpy(key->k, bytes, MCIM_STORAGE_KEY_LEN);
  *out = key;
  return MCIM_OK;
}

mcim_cause_t mcim_storage_key_generate(mcim_storage_key_t **out)
{
  uint8_t k[MCIM_STORAGE_KEY_LEN];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!out)
    goto cleanup;
  *out = NULL;
  rc = mcim_random(k, sizeof(k));
  if (rc == MCIM_OK)
    rc = mcim_storage_key_from_bytes(k, sizeof(k), out);

cleanup:
  mcim_wipe(k, sizeof(k));
  return rc;
}

void mcim_storage_key_free(mcim_storage_key_t *key)
{
  if (!key)
    return;
  mcim_wipe(key->k, sizeof(key->k));
  free(key);
}

/* ---- key file ---- */

static mcim_cause_t write_all(int fd, const uint8_t *buf, size_t len)
{
  while (len) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return MCIM_IO_ERROR;
    buf += n;
    len -= (size_t)n;
  }
  return MCIM_OK;
}

/* fsync the directory holding `path`, so the new name survives a power cut. */
static mcim_cause_t sync_parent_dir(const char *path)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, sizeof(dir), ".");
  else if (slash == path)
    snprintf(dir, sizeof(dir), "/");
  else if ((size_t)(slash - path) < sizeof(dir))
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
  else
    return MCIM_IO_ERROR;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return MCIM_IO_ERROR;
  int r = fsync(fd);
  close(fd);
  return r == 0 ? MCIM_OK : MCIM_IO_ERROR;
}

mcim_cause_t mcim_storage_key_create_file(const char *path, mcim_storage_key_t **out)
{
  uint8_t k[MCIM_STORAGE_KEY_LEN];
  char tmp[PATH_MAX];
  mcim_storage_key_t *key = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  int fd = -1;
  bool tmp_made = false;

  if (!path || !*path)
    goto cleanup;
  if (out)
    *out = NULL;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
    goto cleanup;
  rc = mcim_random(k, sizeof(k));
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  fd = mkstemp(tmp); /* 0600, O_EXCL */
  if (fd < 0) {
    mcim_log_error("storage key: cannot create a file next to %s: %s", path, strerror(errno));
    goto cleanup;
  }
  tmp_made = true;
  if (fchmod(fd, 0600) != 0 || write_all(fd, k, sizeof(k)) != MCIM_OK || fsync(fd) != 0) {
    mcim_log_error("storage key: cannot write %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  if (close(fd) != 0) {
    fd = -1;
    goto cleanup;
  }
  fd = -1;
  /* link() rather than rename(): it fails if the key file exists, atomically, so
   * two processes starting at once cannot replace each other's key. */
  if (link(tmp, path) != 0) {
    if (errno == EEXIST) {
      rc = MCIM_CONFLICT;
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "storage key: %s exists, not replaced", path);
    } else {
      mcim_log_error("storage key: cannot create %s: %s", path, strerror(errno));
    }
    goto cleanup;
  }
  rc = sync_parent_dir(path);
  if (rc != MCIM_OK)
    goto cleanup;
  if (out) {
    rc = mcim_storage_key_from_bytes(k, sizeof(k), &key);
    if (rc != MCIM_OK)
      goto cleanup;
    *out = key;
  }
  mcim_log_info("storage key: created %s", path);
  rc = MCIM_OK;

cleanup:
  if (fd >= 0)
    close(fd);
  if (tmp_made)
    unlink(tmp);
  mcim_wipe(k, sizeof(k));
  return rc;
}

static mcim_cause_t read_exact_key(int fd, uint8_t *k)
{
  /* One byte more than a key, to notice a longer file. */
  uint8_t buf[MCIM_STORAGE_KEY_LEN + 1];
  size_t got = 0;
  mcim_cause_t rc = MCIM_IO_ERROR;

  while (got < sizeof(buf)) {
    ssize_t n = read(fd, buf + got, sizeof(buf) - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      goto cleanup;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  rc = MCIM_BAD_LENGTH;
  if (got != MCIM_STORAGE_KEY_LEN)
    goto cleanup;
  memcpy(k, buf, MCIM_STORAGE_KEY_LEN);
  rc = MCIM_OK;

cleanup:
  mcim_wipe(buf, sizeof(buf));
  return rc;
}

mcim_cause_t mcim_storage_key_load_file(const char *path, mcim_storage_key_t **out)
{
  uint8_t k[MCIM_STORAGE_KEY_LEN];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  struct stat sb;
  int fd = -1;

  if (!path || !out)
    goto cleanup;
  *out = NULL;
  fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    rc = e == ENOENT ? MCIM_NOT_FOUND : e == ELOOP ? MCIM_KEY_FILE_INSECURE : MCIM_IO_ERROR;
    mcim_log_event(e == ENOENT ? MCIM_LOG_INFO : MCIM_LOG_ERROR, NULL, 0, rc,
                   "storage key: cannot open %s: %s", path,
                   e == ELOOP ? "it is a symbolic link" : strerror(e));
    goto cleanup;
  }
  rc = MCIM_IO_ERROR;
  if (fstat(fd, &sb) != 0)
    goto cleanup;
  rc = MCIM_KEY_FILE_INSECURE;
  if (!S_ISREG(sb.st_mode)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "storage key: %s is not a regular file", path);
    goto cleanup;
  }
  if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "storage key: %s has mode %04o, group or others can reach it;"
                   " refusing to use it (chmod 600 %s, and consider the key exposed)",
                   path, (unsigned)(sb.st_mode & 07777), path);
    goto cleanup;
  }
  rc = read_exact_key(fd, k);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "storage key: %s must hold exactly %d bytes",
                   path, MCIM_STORAGE_KEY_LEN);
    goto cleanup;
  }
  rc = mcim_storage_key_from_bytes(k, sizeof(k), out);

cleanup:
  if (fd >= 0)
    close(fd);
  mcim_wipe(k, sizeof(k));
  return rc;
}

mcim_cause_t mcim_storage_key_load_or_create(const char *path, mcim_storage_key_t **out)
{
  mcim_cause_t rc = mcim_storage_key_load_file(path, out);
  if (rc != MCIM_NOT_FOUND)
    return rc;
  rc = mcim_storage_key_create_file(path, out);
  /* Another process created it between our two calls: use theirs. */
  if (rc == MCIM_CONFLICT)
    rc = mcim_storage_key_load_file(path, out);
  return rc;
}

/* ---- seal / unseal ---- */

size_t mcim_seal_len(size_t plain_len)
{
  return plain_len + MCIM_SEAL_OVERHEAD;
}

static mcim_cause_t check_context(const char *context, int *len)
{
  size_t n = context ? strlen(context) : 0;
  if (n == 0 || n > INT_MAX)
    return MCIM_INVALID_ARGUMENT;
  *len = (int)n;
  return MCIM_OK;
}

mcim_cause_t mcim_seal(const mcim_storage_key_t *key, const char *context, const uint8_t *plain,
                       size_t plain_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
  const uint8_t version = MCIM_SEAL_VERSION;
  EVP_CIPHER_CTX *ctx = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  uint8_t fin[MCIM_SEAL_TAG_LEN];
  int ctxlen = 0, n = 0;

  if (!key || !out || !out_len || (!plain && plain_len) ||
      check_context(context, &ctxlen) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  *out_len = 0;
  rc = MCIM_TOO_LARGE;
  if (plain_len > MCIM_SEAL_MAX_PLAIN || out_cap < mcim_seal_len(plain_len))
    goto cleanup;

  uint8_t *nonce = out + 1, *ct = nonce + MCIM_SEAL_NONCE_LEN, *tag = ct + plain_len;
  out[0] = version;
  /* A random 96-bit nonce: safe for far more seals than a role ever makes under
   * one key (NIST SP 800-38D limit 2^32). */
  rc = mcim_random(nonce, MCIM_SEAL_NONCE_LEN);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_SEAL_FAILED;
  ctx = EVP_CIPHER_CTX_new();
  if (!ctx || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, MCIM_SEAL_NONCE_LEN, NULL) != 1 ||
      EVP_EncryptInit_ex(ctx, NULL, NULL, key->k, nonce) != 1)
    goto cleanup;
  /* AAD = version || context: neither the format nor the place can be swapped. */
  if (EVP_EncryptUpdate(ctx, NULL, &n, &version, 1) != 1 ||
      EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)context, ctxlen) != 1)
    goto cleanup;
  if (plain_len && EVP_EncryptUpdate(ctx, ct, &n, plain, (int)plain_len) != 1)
    goto cleanup;
  /* GCM's final step writes no bytes; `fin` only gives it somewhere to point. */
  if (EVP_EncryptFinal_ex(ctx, fin, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MCIM_SEAL_TAG_LEN, tag) != 1)
    goto cleanup;
  *out_len = mcim_seal_len(plain_len);
  rc = MCIM_OK;

cleanup:
  if (rc != MCIM_OK)
    mcim_wipe(out, out_cap < mcim_seal_len(plain_len) ? out_cap : mcim_seal_len(plain_len));
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

mcim_cause_t mcim_unseal(const mcim_storage_key_t *key, const char *context,
                         const uint8_t *sealed, size_t sealed_len, uint8_t *out, size_t out_cap,
                         size_t *out_len)
{
  EVP_CIPHER_CTX *ctx = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  uint8_t fin[MCIM_SEAL_TAG_LEN];
  size_t ctlen = 0;
  int ctxlen = 0, n = 0;

  if (!key || !out_len || (!sealed && sealed_len) || (!out && out_cap) ||
      check_context(context, &ctxlen) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  *out_len = 0;
  rc = MCIM_UNSEAL_FAILED;
  if (!sealed || sealed_len < MCIM_SEAL_OVERHEAD || sealed[0] != MCIM_SEAL_VERSION ||
      sealed_len - MCIM_SEAL_OVERHEAD > MCIM_SEAL_MAX_PLAIN)
    goto cleanup;
  ctlen = sealed_len - MCIM_SEAL_OVERHEAD;
  rc = MCIM_TOO_LARGE;
  if (out_cap < ctlen)
    goto cleanup;

  const uint8_t *nonce = sealed + 1, *ct = nonce + MCIM_SEAL_NONCE_LEN, *tag = ct + ctlen;
  uint8_t tagbuf[MCIM_SEAL_TAG_LEN];
  memcpy(tagbuf, tag, sizeof(tagbuf)); /* the ctrl takes a non-const pointer */
  rc = MCIM_SEAL_FAILED;
  ctx = EVP_CIPHER_CTX_new();
  if (!ctx || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, MCIM_SEAL_NONCE_LEN, NULL) != 1 ||
      EVP_DecryptInit_ex(ctx, NULL, NULL, key->k, nonce) != 1)
    goto cleanup;
  if (EVP_DecryptUpdate(ctx, NULL, &n, sealed, 1) != 1 ||
      EVP_DecryptUpdate(ctx, NULL, &n, (const uint8_t *)context, ctxlen) != 1)
    goto cleanup;
  if (ctlen && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) != 1)
    goto cleanup;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MCIM_SEAL_TAG_LEN, tagbuf) != 1)
    goto cleanup;
  rc = MCIM_UNSEAL_FAILED;
  /* The plaintext in `out` counts only if the tag verifies. */
  if (EVP_DecryptFinal_ex(ctx, fin, &n) != 1)
    goto cleanup;
  *out_len = ctlen;
  rc = MCIM_OK;

cleanup:
  if (rc != MCIM_OK && out && ctlen && ctlen <= out_cap)
    mcim_wipe(out, ctlen);
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}
