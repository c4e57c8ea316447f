/* The software TRE on disk: one sealed document in two alternating slots, written crash-safely
 * with one fdatasync, read under a lock. See tre_priv.h for the transaction pattern and
 * docs/tre.md section 3 for the files. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"
#include "tre/tre_store.h"

void (*tre_crash_hook)(const char *where);

/* Header line (magic, device id, generation, length), seal overhead and the largest
 * plaintext mcim_seal accepts. */
#define TRE_HEADER_MAX (sizeof(TRE_MAGIC) + 64 + 1 + 20 + 1 + 20 + 1)
#define TRE_FILE_MAX (TRE_HEADER_MAX + MCIM_SEAL_OVERHEAD + MCIM_SEAL_MAX_PLAIN)

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
  t->path_state[0] = path_join(dir, TRE_FILE_STATE);
  t->path_state[1] = path_join(dir, TRE_FILE_STATE_1);
  t->path_lock = path_join(dir, TRE_FILE_LOCK);
  return t->dir && t->path_state[0] && t->path_state[1] && t->path_lock ? MCIM_OK
                                                                        : MCIM_NO_MEMORY;
}

void tre_soft_free(struct tre_soft *t)
{
  if (!t)
    return;
  if (t->keys && t->keys->end)
    t->keys->end(t);
  free(t->tcti);
  if (t->lock_fd >= 0)
    close(t->lock_fd);
  free(t->dir);
  free(t->path_state[0]);
  free(t->path_state[1]);
  free(t->path_lock);
  free(t->device);
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
  /* O_NONBLOCK: a FIFO put in a slot's place is refused below, not waited on (no effect on a
   * regular file's reads) */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

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

static void slot_file_clear(struct slot_file *f)
{
  free(f->buf);
  free(f->device);
  *f = (struct slot_file){0};
}

/* A decimal number of at most 20 digits, no sign, no leading zero, ended by `end`. */
static bool parse_u64(const uint8_t **p, const uint8_t *limit, char end, uint64_t *out)
{
  const uint8_t *q = *p;
  uint64_t v = 0;
  if (q >= limit || *q < '0' || *q > '9' || (*q == '0' && q + 1 < limit && q[1] != (uint8_t)end))
    return false;
  for (; q < limit && *q >= '0' && *q <= '9'; q++) {
    if (v > (UINT64_MAX - (uint64_t)(*q - '0')) / 10)
      return false;
    v = v * 10 + (uint64_t)(*q - '0');
  }
  if (q >= limit || *q != (uint8_t)end)
    return false;
  *p = q + 1;
  *out = v;
  return true;
}

/* The header of a slot: format 2 "mcim-tre 2 <device> <gen> <length>\n" or format 1
 * "mcim-tre 1 <device>\n" (generation 0, the blob to the end). */
static mcim_cause_t parse_header(struct slot_file *f)
{
  const uint8_t *buf = f->buf, *end = f->buf + f->len;
  size_t m = strlen(TRE_MAGIC);
  bool v1 = f->len >= m && memcmp(buf, TRE_MAGIC_V1, m) == 0;
  if (!v1 && (f->len < m || memcmp(buf, TRE_MAGIC, m) != 0))
    return MCIM_UNSEAL_FAILED;
  const uint8_t *limit = buf + (f->len < TRE_HEADER_MAX ? f->len : TRE_HEADER_MAX);
  const uint8_t *sep = buf + m;
  while (sep < limit && *sep != (v1 ? '\n' : ' ') && *sep != '\n')
    sep++;
  if (sep >= limit || *sep != (v1 ? '\n' : ' '))
    return MCIM_UNSEAL_FAILED;
  size_t dlen = (size_t)(sep - (buf + m));
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
  const uint8_t *p = sep + 1;
  uint64_t gen = 0, blob_len = 0;
  if (!v1 && (!parse_u64(&p, limit, ' ', &gen) || gen == 0 ||
              !parse_u64(&p, limit, '\n', &blob_len) || blob_len > (size_t)(end - p))) {
    free(d);
    return MCIM_UNSEAL_FAILED;
  }
  f->device = d;
  f->blob = (size_t)(p - buf);
  f->gen = gen;
  if (!v1)
    f->len = f->blob + (size_t)blob_len;
  return MCIM_OK;
}

/* The seal context of a generation: "tre/<device>/<gen>" (format 1: "tre/<device>"). */
char *tre_seal_context(const char *device, uint64_t gen)
{
  size_t n = strlen(TRE_CONTEXT_PREFIX) + strlen(device) + 22;
  char *c = malloc(n);
  if (c && gen == 0)
    snprintf(c, n, "%s%s", TRE_CONTEXT_PREFIX, device);
  else if (c)
    snprintf(c, n, "%s%s/%" PRIu64, TRE_CONTEXT_PREFIX, device, gen);
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

static void slot_read(struct tre_soft *t, int i, struct slot_file *f)
{
  *f = (struct slot_file){0};
  f->rc = read_file(t->path_state[i], &f->buf, &f->len);
  if (f->rc == MCIM_OK)
    f->rc = parse_header(f);
  if (f->rc == MCIM_OK && t->device && strcmp(f->device, t->device) != 0) {
    f->rc = MCIM_UNSEAL_FAILED;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, f->rc,
                   "tre: %s now belongs to device '%s', this handle opened '%s'",
                   t->path_state[i], f->device, t->device);
  } else if (f->rc != MCIM_OK && f->rc != MCIM_NOT_FOUND) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, f->rc, "tre: %s has no valid header",
                   t->path_state[i]);
  }
}

/* Unseal and check one slot's document. */
static mcim_cause_t slot_open(struct tre_soft *t, int i, const struct slot_file *f, json_t **out)
{
  uint8_t *plain = NULL;
  size_t plain_len = 0, cap = f->len - f->blob;
  json_t *st = NULL;
  json_error_t jerr;
  mcim_cause_t rc = MCIM_NO_MEMORY;
  char *context = tre_seal_context(f->device, f->gen);

  plain = malloc(cap + 1);
  if (!context || !plain)
    goto cleanup;
  rc = mcim_unseal(t->skey, context, f->buf + f->blob, cap, plain, cap, &plain_len);
  if (rc != MCIM_OK) {
    rc = MCIM_UNSEAL_FAILED;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "tre: %s (generation %" PRIu64 ") does not open with the storage key"
                   " (altered, truncated, cut by a crash while written, or another TRE's key)",
                   t->path_state[i], f->gen);
    goto cleanup;
  }
  rc = MCIM_UNSEAL_FAILED;
  st = json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!json_is_object(st) || tre_int(st, "version") != TRE_STATE_VERSION ||
      !tre_str(st, "device") || strcmp(tre_str(st, "device"), f->device) != 0) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: state document of %s is not valid",
                   t->path_state[i]);
    goto cleanup;
  }
  *out = st;
  st = NULL;
  rc = MCIM_OK;
cleanup:
  if (plain) {
    mcim_wipe(plain, cap + 1);
    free(plain);
  }
  tre_json_wipe_free(st);
  free(context);
  return rc;
}

/* borrow: on a hit, *out is the handle's kept document itself (tre_begin_read), not a copy. */
static mcim_cause_t load_doc(struct tre_soft *t, json_t **out, bool borrow)
{
  struct slot_file f[2];
  json_t *st = NULL;
  uint8_t id[32];
  mcim_cause_t rc = MCIM_UNSEAL_FAILED;

  slot_read(t, 0, &f[0]);
  slot_read(t, 1, &f[1]);
  if (f[0].rc == MCIM_NOT_FOUND && f[1].rc == MCIM_NOT_FOUND) {
    rc = MCIM_NOT_FOUND;
    goto cleanup;
  }
  /* The newest first. Two slots never carry one generation: a write takes the generation
   * after the one it read. */
  int order[2] = {0, 1};
  if (f[1].rc == MCIM_OK && (f[0].rc != MCIM_OK || f[1].gen > f[0].gen)) {
    order[0] = 1;
    order[1] = 0;
  }
  for (int k = 0; k < 2; k++) {
    int i = order[k];
    if (f[i].rc != MCIM_OK)
      continue;
    bool have_id = file_id(f[i].buf, f[i].len, id);
    if (have_id && t->cache && t->device && t->slot == i &&
        memcmp(id, t->cache_id, sizeof(id)) == 0) {
      *out = borrow ? t->cache : json_deep_copy(t->cache);
      rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
      /* the same bytes may be a copy put back after another handle's writes: checked too */
      if (rc == MCIM_OK && t->keys->fresh_check &&
          (rc = t->keys->fresh_check(t, *out, f[i].gen)) != MCIM_OK) {
        if (!borrow)
          tre_json_wipe_free(*out);
        *out = NULL;
      }
      if (rc == MCIM_OK)
        t->fresh_lag = false;
      goto cleanup;
    }
    rc = slot_open(t, i, &f[i], &st);
    /* A slot under another storage key: a rotation (tre_commit_shred) by another handle, or
     * one a crash cut before its key file was renamed (or, for the older slot, while the
     * newest was being written again under the new key). */
    if (rc == MCIM_UNSEAL_FAILED && tre_key_refresh(t, &f[i]))
      rc = slot_open(t, i, &f[i], &st);
    if (rc == MCIM_NO_MEMORY)
      goto cleanup;
    if (rc != MCIM_OK)
      continue;
    if (k > 0)
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_UNSEAL_FAILED,
                     "tre: the newest state does not open; using %s, generation %" PRIu64
                     " (the state before a write that did not complete)",
                     t->path_state[i], f[i].gen);
    /* The newest state that opens is the one the TPM's counter must vouch for: refused as
     * a whole when older (an older slot would be older still). */
    if (t->keys->fresh_check && (rc = t->keys->fresh_check(t, st, f[i].gen)) != MCIM_OK)
      goto cleanup;
    t->fresh_lag = false;
    if (!t->device) {
      t->device = f[i].device;
      f[i].device = NULL;
    }
    t->slot = i;
    t->gen = f[i].gen;
    if (have_id)
      cache_set(t, st, id);
    *out = st;
    st = NULL;
    goto cleanup;
  }
  rc = MCIM_UNSEAL_FAILED;
cleanup:
  tre_json_wipe_free(st);
  slot_file_clear(&f[0]);
  slot_file_clear(&f[1]);
  return rc;
}

mcim_cause_t tre_load(struct tre_soft *t, json_t **out)
{
  return load_doc(t, out, false);
}

/* ---- writing ---- */

mcim_cause_t tre_pwrite_all(int fd, const uint8_t *buf, size_t len)
{
  off_t at = 0;
  while (len) {
    ssize_t n = pwrite(fd, buf, len, at);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return MCIM_IO_ERROR;
    buf += n;
    at += n;
    len -= (size_t)n;
  }
  return MCIM_OK;
}

mcim_cause_t tre_sync_dir(const char *dir)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return MCIM_IO_ERROR;
  int r = fsync(fd);
  close(fd);
  return r == 0 ? MCIM_OK : MCIM_IO_ERROR;
}

/* Open a slot for writing in place. Created only the first time (then its name must reach
 * the disk too: *created tells the caller to sync the folder); never through a symbolic
 * link, never a file with another name linked to it, always 0600. */
static int slot_open_write(const char *path, bool *created)
{
  /* O_NONBLOCK: a FIFO without a reader fails with ENXIO instead of blocking the open */
  const int flags = O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;
  struct stat sb;
  int fd = open(path, flags);
  *created = false;
  if (fd < 0 && errno == ENOENT) {
    fd = open(path, flags | O_CREAT | O_EXCL, 0600);
    *created = fd >= 0;
  }
  if (fd < 0)
    return -1;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
      ((sb.st_mode & 0777) != 0600 && fchmod(fd, 0600) != 0)) {
    close(fd);
    errno = EPERM;
    return -1;
  }
  return fd;
}

/* A lab device's document is about 5 kB: one serialisation in the usual case. */
#define TRE_DUMP_GUESS 16384

/* Why the other slot, in place, with one fdatasync: the state before this write stays
 * whole in the slot we do not touch, so a crash anywhere in the write leaves a slot that does
 * not open (torn: the seal fails) next to the previous state, and tre_load() takes the
 * previous one; once fdatasync returns, the new slot holds a higher generation and wins.
 * Written in place and never shortened (the header gives the sealed length), a slot keeps
 * its blocks and its size in the usual case, so fdatasync writes the data alone: no
 * journal commit for a new file, a rename and the folder, which the former temporary file
 * needed (165 -> 34 us of CPU and 430 -> 90 us of wall time a write here). */
mcim_cause_t tre_persist(struct tre_soft *t, json_t *st)
{
  char header[TRE_HEADER_MAX + 1];
  char *plain = NULL, *context = NULL;
  uint8_t *file = NULL;
  size_t plain_len = 0, plain_cap = TRE_DUMP_GUESS, sealed_len = 0, cap = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  int fd = -1, slot = t->slot ^ 1;
  uint64_t gen = t->gen + 1;
  bool created = false;

  if (!t->device || (t->slot != 0 && t->slot != 1) || gen == 0)
    goto cleanup;
  /* json_dumpb's bytes (mcim_json_dumpb: the same text, a twelfth of the instructions)
   * into a buffer we own: no growing intermediate copies of the secrets are left behind in
   * freed memory (json_dumps reallocates as it goes). One pass into a buffer that fits a
   * usual document; a larger one is dumped again into a buffer of its size. */
  rc = MCIM_NO_MEMORY;
  plain = malloc(plain_cap);
  if (!plain)
    goto cleanup;
  plain_len = mcim_json_dumpb(st, plain, plain_cap);
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
    if (!plain || mcim_json_dumpb(st, plain, plain_cap) != plain_len)
      goto cleanup;
  }
  rc = MCIM_INTERNAL;
  int hlen = snprintf(header, sizeof(header), "%s%s %" PRIu64 " %zu\n", TRE_MAGIC, t->device,
                      gen, mcim_seal_len(plain_len));
  if (hlen < 0 || (size_t)hlen >= sizeof(header))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  context = tre_seal_context(t->device, gen);
  cap = (size_t)hlen + mcim_seal_len(plain_len);
  file = malloc(cap);
  if (!file || !context)
    goto cleanup;
  memcpy(file, header, (size_t)hlen);
  rc = mcim_seal(t->skey, context, (const uint8_t *)plain, plain_len, file + hlen,
                 cap - (size_t)hlen, &sealed_len);
  if (rc == MCIM_OK && (size_t)hlen + sealed_len != cap)
    rc = MCIM_INTERNAL; /* the header announced mcim_seal_len() */
  if (rc != MCIM_OK)
    goto cleanup;

  /* a write of this handle left the counter one behind: catch it up first, or write nothing */
  if (t->fresh_lag && t->keys->fresh_check &&
      (rc = t->keys->fresh_check(t, st, t->gen)) != MCIM_OK)
    goto cleanup;
  t->fresh_lag = false;
  if (tre_crash_hook)
    tre_crash_hook("before-write");
  fd = slot_open_write(t->path_state[slot], &created);
  if (fd < 0)
    goto io_error;
  if (tre_pwrite_all(fd, file, cap) != MCIM_OK || fdatasync(fd) != 0)
    goto io_error;
  mcim_work_count(MCIM_WORK_TRE_SYNCED_WRITE);
  if (close(fd) != 0) {
    fd = -1;
    goto io_error;
  }
  fd = -1;
  /* A slot's first write also creates its name: durable only once the folder is synced. */
  if (created && tre_sync_dir(t->dir) != MCIM_OK)
    goto io_error;
  t->slot = slot;
  t->gen = gen;
  if (tre_crash_hook)
    tre_crash_hook("after-write");
  /* The slot first, the counter after (tre_tpm_nv.c: why). The state is durable now: a
   * failed increment is caught up by the next load or write, not a failed write. */
  mcim_cause_t advanced = t->keys->fresh_advance ? t->keys->fresh_advance(t, st) : MCIM_OK;
  if (advanced != MCIM_OK) {
    t->fresh_lag = true;
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, advanced,
                   "tre: generation %" PRIu64 " written, the TPM counter not advanced: done"
                   " at the next load or write",
                   gen);
  }
  uint8_t id[32];
  if (file_id(file, cap, id))
    cache_set(t, st, id);
  rc = MCIM_OK;
  goto cleanup;

io_error:
  rc = MCIM_IO_ERROR;
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot write %s: %s", t->path_state[slot],
                 strerror(errno));
cleanup:
  if (fd >= 0)
    close(fd);
  if (plain) {
    mcim_wipe(plain, plain_cap);
    free(plain);
  }
  free(file);
  free(context);
  return rc;
}

/* ---- transactions ---- */

/* The handle's lock, then the file's (other handles and processes): every transaction's
 * first step; tre_unlock the last. */
static mcim_cause_t tre_lock(struct tre_soft *t)
{
  if (pthread_mutex_lock(&t->mu) != 0)
    return MCIM_INTERNAL;
  mcim_cause_t rc = flock_retry(t->lock_fd, LOCK_EX);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot lock %s", t->path_lock);
    pthread_mutex_unlock(&t->mu);
  }
  return rc;
}

static void tre_unlock(struct tre_soft *t)
{
  flock_retry(t->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&t->mu);
}

mcim_cause_t tre_begin(struct tre_soft *t, json_t **st)
{
  *st = NULL;
  mcim_cause_t rc = tre_lock(t);
  if (rc != MCIM_OK)
    return rc;
  rc = tre_load(t, st);
  if (rc != MCIM_OK)
    tre_unlock(t);
  else /* no working copy holds an expired queued notice: never handed out, gone at the write */
    tre_pending_prune(json_object_get(*st, "pending"), mcim_now());
  return rc;
}

mcim_cause_t tre_commit(struct tre_soft *t, json_t *st)
{
  /* a procedure's KA key that expired in this write is shredded like any other secret */
  if (tre_txn_keys_prune(t, st, mcim_now()) > 0)
    return tre_commit_shred(t, st);
  return tre_persist(t, st);
}

/* The read-only transaction of tre_priv.h: tre_begin's lock and load, without the working
 * copy when the handle keeps the document (every call but the first after another handle's
 * write): a copy of a 5 kB document per status, cert or identity, at every round of the
 * agent (docs/performance.md). */
mcim_cause_t tre_begin_read(struct tre_soft *t, json_t **st)
{
  json_t *doc = NULL;

  *st = NULL;
  mcim_cause_t rc = tre_lock(t);
  if (rc != MCIM_OK)
    return rc;
  rc = load_doc(t, &doc, true);
  if (rc != MCIM_OK) {
    tre_unlock(t);
    return rc;
  }
  *st = doc;
  return MCIM_OK;
}

void tre_end_read(struct tre_soft *t, json_t *st)
{
  if (t->keys && t->keys->end)
    t->keys->end(t);
  if (st != t->cache) /* a document just parsed (the handle keeps a copy of it) */
    tre_json_wipe_free(st);
  tre_unlock(t);
}

void tre_end(struct tre_soft *t, json_t *st)
{
  /* the TPM backend's connection: the TPM serves one connection at a time (swtpm), and
   * other handles and processes take their turns through the lock released below */
  if (t->keys && t->keys->end)
    t->keys->end(t);
  tre_json_wipe_free(st);
  tre_unlock(t);
}
