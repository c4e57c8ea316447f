/* The software TRE on disk: one sealed document, written crash-safely, read under a lock.
 * See tre_priv.h for the transaction pattern and docs/tre.md section 3 for the file. */
#include <errno.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

/* Header line, device id, seal overhead and the largest plaintext mcim_seal accepts. */
#define TRE_FILE_MAX (sizeof(TRE_MAGIC) + 64 + 1 + MCIM_SEAL_OVERHEAD + MCIM_SEAL_MAX_PLAIN)

static char *path_join(const char *dir, const char *name)
{
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

mcim_cause_t tre_paths(struct tre_soft *t, const char *dir)
{
  t->dir = strdup(dir);
  t->path_state = path_join(dir, TRE_FILE_STATE);
  t->path_tmp = path_join(dir, TRE_FILE_TMP);
  t->path_lock = path_join(dir, TRE_FILE_LOCK);
  return t->dir && t->path_state && t->path_tmp && t->path_lock ? MCIM_OK : MCIM_NO_MEMORY;
}

void tre_soft_free(struct tre_soft *t)
{
  if (!t)
    return;
  if (t->lock_fd >= 0)
    close(t->lock_fd);
  free(t->dir);
  free(t->path_state);
  free(t->path_tmp);
  free(t->path_lock);
  free(t->device);
  free(t->context);
  mcim_storage_key_free(t->skey);
  tre_json_wipe_free(t->cache);
  pthread_mutex_destroy(&t->mu);
  free(t);
  tre_key_cache_release();
}

/* The lock file only carries the flock; it holds no data. */
mcim_cause_t tre_lock_open(struct tre_soft *t)
{
  t->lock_fd = open(t->path_lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
  if (t->lock_fd < 0) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_IO_ERROR, "tre: cannot open %s: %s",
                   t->path_lock, strerror(errno));
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
}

static mcim_cause_t flock_retry(int fd, int op)
{
  while (flock(fd, op) != 0) {
    if (errno != EINTR)
      return MCIM_IO_ERROR;
  }
  return MCIM_OK;
}

/* ---- wiping ---- */

void tre_json_wipe(json_t *v)
{
  const char *key;
  json_t *item;
  size_t i;

  if (json_is_string(v)) {
    /* jansson frees strings without clearing them; the buffer is ours to clear since the
     * document is about to be released and nothing else references it. */
    mcim_wipe((void *)json_string_value(v), json_string_length(v));
  } else if (json_is_object(v)) {
    json_object_foreach(v, key, item) {
      tre_json_wipe(item);
    }
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, item) {
      tre_json_wipe(item);
    }
  }
}

void tre_json_wipe_free(json_t *doc)
{
  if (!doc)
    return;
  tre_json_wipe(doc);
  json_decref(doc);
}

/* ---- reading ---- */

static mcim_cause_t read_file(const char *path, uint8_t **out, size_t *out_len)
{
  struct stat sb;
  uint8_t *buf = NULL;
  size_t got = 0;
  mcim_cause_t rc = MCIM_IO_ERROR;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

  if (fd < 0) {
    rc = errno == ENOENT ? MCIM_NOT_FOUND : MCIM_IO_ERROR;
    if (rc != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot open %s: %s", path,
                     strerror(errno));
    goto cleanup;
  }
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    goto cleanup;
  rc = MCIM_UNSEAL_FAILED; /* no state of ours is this large: altered */
  if ((uint64_t)sb.st_size > TRE_FILE_MAX || sb.st_size == 0)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  buf = malloc((size_t)sb.st_size);
  if (!buf)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  while (got < (size_t)sb.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)sb.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      goto cleanup;
    got += (size_t)n;
  }
  *out = buf;
  *out_len = got;
  buf = NULL;
  rc = MCIM_OK;
cleanup:
  free(buf);
  if (fd >= 0)
    close(fd);
  return rc;
}

/* "mcim-tre 1 <device>\n": returns the device (copied) and where the sealed blob starts. */
static mcim_cause_t parse_header(const uint8_t *buf, size_t len, char **device, size_t *blob)
{
  size_t m = strlen(TRE_MAGIC);
  if (len < m || memcmp(buf, TRE_MAGIC, m) != 0)
    return MCIM_UNSEAL_FAILED;
  const uint8_t *nl = memchr(buf + m, '\n', len - m < 65 ? len - m : 65);
  if (!nl)
    return MCIM_UNSEAL_FAILED;
  size_t dlen = (size_t)(nl - (buf + m));
  /* copy by length: the buffer is not a C string */
  char *d = malloc(dlen + 1);
  if (!d)
    return MCIM_NO_MEMORY;
  memcpy(d, buf + m, dlen);
  d[dlen] = '\0';
  if (strlen(d) != dlen || !mcim_pki_name_valid(d)) {
    free(d);
    return MCIM_UNSEAL_FAILED;
  }
  *device = d;
  *blob = (size_t)(nl - buf) + 1;
  return MCIM_OK;
}

static char *context_for(const char *device)
{
  size_t n = strlen(TRE_CONTEXT_PREFIX) + strlen(device) + 1;
  char *c = malloc(n);
  if (c)
    snprintf(c, n, "%s%s", TRE_CONTEXT_PREFIX, device);
  return c;
}

/* Remember a copy of `st` as the document of the sealed bytes whose SHA-256 is `id`. */
static void cache_set(struct tre_soft *t, const json_t *st, const uint8_t id[32])
{
  tre_json_wipe_free(t->cache);
  t->cache = json_deep_copy(st);
  memcpy(t->cache_id, id, 32);
}

static bool file_id(const uint8_t *file, size_t len, uint8_t id[32])
{
  unsigned int n = 0;
  return EVP_Digest(file, len, id, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

mcim_cause_t tre_load(struct tre_soft *t, json_t **out)
{
  uint8_t *file = NULL, *plain = NULL;
  size_t file_len = 0, blob = 0, plain_len = 0;
  char *device = NULL, *context = NULL;
  json_t *st = NULL;
  json_error_t jerr;
  uint8_t id[32];
  mcim_cause_t rc = read_file(t->path_state, &file, &file_len);

  if (rc != MCIM_OK)
    goto cleanup;
  bool have_id = file_id(file, file_len, id);
  if (have_id && t->cache && t->device && memcmp(id, t->cache_id, sizeof(id)) == 0) {
    *out = json_deep_copy(t->cache);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
    goto cleanup;
  }
  rc = parse_header(file, file_len, &device, &blob);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s has no valid header", t->path_state);
    goto cleanup;
  }
  if (t->device && strcmp(device, t->device) != 0) {
    rc = MCIM_UNSEAL_FAILED;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "tre: %s now belongs to device '%s', this handle opened '%s'", t->path_state,
                   device, t->device);
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  context = context_for(device);
  plain = malloc(file_len - blob + 1);
  if (!context || !plain)
    goto cleanup;
  rc = mcim_unseal(t->skey, context, file + blob, file_len - blob, plain, file_len - blob,
                   &plain_len);
  if (rc != MCIM_OK) {
    rc = MCIM_UNSEAL_FAILED;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "tre: %s does not open with the storage key (altered, truncated, or another"
                   " TRE's key)",
                   t->path_state);
    goto cleanup;
  }
  rc = MCIM_UNSEAL_FAILED;
  st = json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!json_is_object(st) || tre_int(st, "version") != TRE_STATE_VERSION ||
      !tre_str(st, "device") || strcmp(tre_str(st, "device"), device) != 0) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: state document of %s is not valid",
                   t->path_state);
    goto cleanup;
  }
  if (!t->device) {
    t->device = device;
    t->context = context;
    device = context = NULL;
  }
  if (have_id)
    cache_set(t, st, id);
  *out = st;
  st = NULL;
  rc = MCIM_OK;
cleanup:
  if (plain) {
    mcim_wipe(plain, file_len - blob);
    free(plain);
  }
  tre_json_wipe_free(st);
  free(file);
  free(device);
  free(context);
  return rc;
}

/* ---- writing ---- */

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

static mcim_cause_t sync_dir(const char *dir)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return MCIM_IO_ERROR;
  int r = fsync(fd);
  close(fd);
  return r == 0 ? MCIM_OK : MCIM_IO_ERROR;
}

/* A lab device's document is about 5 kB: one serialisation in the usual case. */
#define TRE_DUMP_GUESS 16384

mcim_cause_t tre_persist(struct tre_soft *t, json_t *st)
{
  const size_t flags = JSON_COMPACT;
  char header[sizeof(TRE_MAGIC) + 66];
  char *plain = NULL;
  uint8_t *file = NULL;
  size_t plain_len = 0, plain_cap = TRE_DUMP_GUESS, sealed_len = 0, cap = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  int fd = -1;
  bool tmp_made = false;

  if (!t->device || !t->context)
    goto cleanup;
  int hlen = snprintf(header, sizeof(header), "%s%s\n", TRE_MAGIC, t->device);
  if (hlen < 0 || (size_t)hlen >= sizeof(header))
    goto cleanup;
  /* json_dumpb into a buffer we own: no growing intermediate copies of the secrets are
   * left behind in freed memory (json_dumps reallocates as it goes). One pass into a buffer
   * that fits a usual document; a larger one is dumped again into a buffer of its size. */
  rc = MCIM_NO_MEMORY;
  plain = malloc(plain_cap);
  if (!plain)
    goto cleanup;
  plain_len = json_dumpb(st, plain, plain_cap, flags);
  if (plain_len == 0)
    goto cleanup;
  rc = MCIM_TOO_LARGE;
  if (plain_len > MCIM_SEAL_MAX_PLAIN) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: state document too large (%zu bytes)",
                   plain_len);
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  if (plain_len > plain_cap) {
    mcim_wipe(plain, plain_cap);
    free(plain);
    plain_cap = plain_len;
    plain = malloc(plain_cap);
    if (!plain || json_dumpb(st, plain, plain_cap, flags) != plain_len)
      goto cleanup;
  }
  cap = (size_t)hlen + mcim_seal_len(plain_len);
  file = malloc(cap);
  if (!file)
    goto cleanup;
  memcpy(file, header, (size_t)hlen);
  rc = mcim_seal(t->skey, t->context, (const uint8_t *)plain, plain_len, file + hlen,
                 cap - (size_t)hlen, &sealed_len);
  if (rc != MCIM_OK)
    goto cleanup;

  /* A tmp file left by a crash is garbage: remove it and create ours exclusively (no
   * following a planted symlink, no inheriting its mode). */
  rc = MCIM_IO_ERROR;
  if (unlink(t->path_tmp) != 0 && errno != ENOENT)
    goto io_error;
  fd = open(t->path_tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
  if (fd < 0)
    goto io_error;
  tmp_made = true;
  if (write_all(fd, file, (size_t)hlen + sealed_len) != MCIM_OK || fsync(fd) != 0)
    goto io_error;
  if (close(fd) != 0) {
    fd = -1;
    goto io_error;
  }
  fd = -1;
  if (rename(t->path_tmp, t->path_state) != 0)
    goto io_error;
  tmp_made = false;
  /* The rename is durable only once the directory is synced. */
  rc = sync_dir(t->dir);
  if (rc != MCIM_OK)
    goto io_error;
  uint8_t id[32];
  if (file_id(file, (size_t)hlen + sealed_len, id))
    cache_set(t, st, id);
  rc = MCIM_OK;
  goto cleanup;

io_error:
  rc = MCIM_IO_ERROR;
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot write %s: %s", t->path_state,
                 strerror(errno));
cleanup:
  if (fd >= 0)
    close(fd);
  if (tmp_made)
    unlink(t->path_tmp);
  if (plain) {
    mcim_wipe(plain, plain_cap);
    free(plain);
  }
  free(file);
  return rc;
}

/* ---- transactions ---- */

mcim_cause_t tre_begin(struct tre_soft *t, json_t **st)
{
  mcim_cause_t rc;

  *st = NULL;
  if (pthread_mutex_lock(&t->mu) != 0)
    return MCIM_INTERNAL;
  rc = flock_retry(t->lock_fd, LOCK_EX);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot lock %s", t->path_lock);
    pthread_mutex_unlock(&t->mu);
    return rc;
  }
  rc = tre_load(t, st);
  if (rc != MCIM_OK) {
    flock_retry(t->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&t->mu);
  }
  return rc;
}

mcim_cause_t tre_commit(struct tre_soft *t, json_t *st)
{
  return tre_persist(t, st);
}

void tre_end(struct tre_soft *t, json_t *st)
{
  tre_json_wipe_free(st);
  flock_retry(t->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&t->mu);
}
