/* The software TRE's storage key on disk (tre.key, tre.key.new): opening a slot with the key
 * file that seals it, and the rotation that crypto-shredding needs (tre_commit_shred). Split
 * from tre_store.c, which reads and writes the slots; docs/tre.md section 3, "Rotation". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"
#include "tre/tre_store.h"

static char *key_path(const struct tre_soft *t, const char *suffix)
{
  size_t n = strlen(t->dir) + sizeof("/" TRE_FILE_KEY) + strlen(suffix);
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s%s", t->dir, TRE_FILE_KEY, suffix);
  return p;
}

/* Does slot `f` open with the key of `path`? Then that key becomes the handle's. */
static bool key_try(struct tre_soft *t, const struct slot_file *f, const char *path)
{
  mcim_storage_key_t *k = NULL;
  uint8_t *plain = NULL;
  size_t cap = f->len - f->blob, n = 0;
  char *context = tre_seal_context(f->device, f->gen);
  bool ok = false;

  if (context && path && mcim_storage_key_load_file(path, &k) == MCIM_OK &&
      (plain = malloc(cap + 1)) != NULL)
    ok = mcim_unseal(k, context, f->buf + f->blob, cap, plain, cap, &n) == MCIM_OK;
  if (plain) {
    mcim_wipe(plain, cap + 1);
    free(plain);
  }
  if (ok) {
    mcim_storage_key_free(t->skey);
    t->skey = k;
    k = NULL;
  }
  mcim_storage_key_free(k);
  free(context);
  return ok;
}

/* Put the key bytes `k` in the key file `path`, in place: a regular file of one link, mode
 * 0600 and a key's length has its bytes overwritten where they lie, so the key it held is gone
 * from the file, and no name or inode changes (no folder to sync); then fdatasync when `sync`.
 * Any other file there is replaced (unlinked, never written through: it may have been
 * readable) by a new one, 0600, synced with its folder, when `create` allows it; else
 * MCIM_IO_ERROR and nothing written. */
static mcim_cause_t key_file_put(const struct tre_soft *t, const char *path, const uint8_t *k,
                                 bool create, bool sync)
{
  /* O_NONBLOCK: a FIFO put there fails the checks below instead of blocking the open */
  const int flags = O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;
  struct stat sb;
  bool made = false;
  int fd = open(path, flags);

  if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
                  (sb.st_mode & 07777) != 0600 || sb.st_size != MCIM_STORAGE_KEY_LEN)) {
    close(fd);
    fd = -1;
    if (!create || unlink(path) != 0)
      return MCIM_IO_ERROR;
    errno = ENOENT;
  }
  if (fd < 0 && errno == ENOENT && create) {
    fd = open(path, flags | O_CREAT | O_EXCL, 0600);
    made = fd >= 0;
  }
  if (fd < 0)
    return MCIM_IO_ERROR;
  mcim_cause_t rc = made && fchmod(fd, 0600) != 0 ? MCIM_IO_ERROR : MCIM_OK;
  if (rc == MCIM_OK)
    rc = tre_pwrite_all(fd, k, MCIM_STORAGE_KEY_LEN);
  if (rc == MCIM_OK && (made ? fsync(fd) : sync ? fdatasync(fd) : 0) != 0)
    rc = MCIM_IO_ERROR;
  else if (rc == MCIM_OK && (made || sync))
    mcim_work_count(MCIM_WORK_TRE_SYNCED_WRITE);
  if (close(fd) != 0)
    rc = MCIM_IO_ERROR;
  if (rc == MCIM_OK && made)
    rc = tre_sync_dir(t->dir);
  return rc;
}

/* The key bytes of a key file (exactly a key's length). */
static bool key_file_get(const char *path, uint8_t k[MCIM_STORAGE_KEY_LEN])
{
  uint8_t buf[MCIM_STORAGE_KEY_LEN + 1];
  size_t got = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return false;
  while (got < sizeof(buf)) {
    ssize_t n = read(fd, buf + got, sizeof(buf) - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  bool ok = got == MCIM_STORAGE_KEY_LEN;
  if (ok)
    memcpy(k, buf, MCIM_STORAGE_KEY_LEN);
  mcim_wipe(buf, sizeof(buf));
  return ok;
}

/* Overwrite a key file's bytes in place and sync them, so the old key does not linger in
 * the blocks a rename frees (on a file system that writes in place; see docs/tre.md). */
static void key_file_scrub(const char *path)
{
  uint8_t zero[64] = {0};
  struct stat sb;
  int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return;
  if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 &&
      (size_t)sb.st_size <= sizeof(zero) &&
      tre_pwrite_all(fd, zero, (size_t)sb.st_size) == MCIM_OK && fdatasync(fd) == 0)
    mcim_work_count(MCIM_WORK_TRE_SYNCED_WRITE);
  close(fd);
}

/* tre.key becomes the key `k` (which tre.key.new holds, synced): written over the old key in
 * place; where that cannot be (tre.key is not a plain 0600 file of a key's length), the old
 * way: tre.key overwritten with zeros and tre.key.new renamed over it, the folder synced. */
static mcim_cause_t key_install(const struct tre_soft *t, const char *cur, const char *next,
                                const uint8_t *k)
{
  if (key_file_put(t, cur, k, false, true) == MCIM_OK)
    return MCIM_OK;
  key_file_scrub(cur);
  if (rename(next, cur) != 0 || tre_sync_dir(t->dir) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_IO_ERROR,
                   "tre: new storage key not put in place: %s", strerror(errno));
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
}

/* The newest slot does not open with the key this handle holds: the key file may have
 * changed under it (another handle rotated), or a rotation was cut after the slot was written
 * under the new key and before tre.key received it; tre.key.new holds it then, and the
 * rotation is finished here (we hold the lock). Whether the handle now holds a key that opens
 * `f`. */
bool tre_key_refresh(struct tre_soft *t, const struct slot_file *f)
{
  static const uint8_t zero[MCIM_STORAGE_KEY_LEN] = {0};
  uint8_t k[MCIM_STORAGE_KEY_LEN];
  char *cur = key_path(t, ""), *next = key_path(t, ".new");
  bool ok = key_try(t, f, cur);
  if (!ok && key_try(t, f, next)) {
    ok = true;
    if (key_file_get(next, k) && key_install(t, cur, next, k) == MCIM_OK) {
      (void)key_file_put(t, next, zero, false, false);
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_OK,
                     "tre: a storage key rotation cut by a crash, finished");
    }
    mcim_wipe(k, sizeof(k));
  }
  free(cur);
  free(next);
  return ok;
}

/* Why these steps, in this order (each file written in place, one fdatasync each: no new
 * file, rename or folder sync, which the first version of this paid at every rotation):
 * (1) the new key reaches the disk in tre.key.new; (2) the state is written under it over the
 * other slot (a crash here: the newest slot is torn, the older one still opens with tre.key:
 * the state before this write); (3) the new key is written over the old one in tre.key (a
 * crash between (2) and (3), or one that tears tre.key's block in (3): tre_load finds that the
 * newest slot opens with tre.key.new and finishes (3)); (4) the state is written once more,
 * over the slot that still held the previous state under the old key, so that both slots open
 * with the current key again (the crash fallback of tre_load needs it) and no copy of the
 * secret just removed is left under any key, not even under a copy of the old key taken
 * before; (5) tre.key.new is overwritten with zeros (not synced: a crash that loses it leaves
 * the current key there, the same bytes as tre.key), so between rotations no second copy of
 * any key is kept. A key is in tre.key, or in tre.key.new until (5), and every key a rotation
 * retires is overwritten in place: the old tre.key in (3), a key tre.key.new held in (1). */
mcim_cause_t tre_commit_shred(struct tre_soft *t, json_t *st)
{
  static const uint8_t zero[MCIM_STORAGE_KEY_LEN] = {0};
  uint8_t k[MCIM_STORAGE_KEY_LEN];
  char *cur = key_path(t, ""), *next = key_path(t, ".new");
  mcim_storage_key_t *fresh = NULL, *old = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!cur || !next)
    goto cleanup;
  if ((rc = mcim_random(k, sizeof(k))) != MCIM_OK ||
      (rc = mcim_storage_key_from_bytes(k, sizeof(k), &fresh)) != MCIM_OK)
    goto cleanup;
  if ((rc = key_file_put(t, next, k, true, true)) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot write a new storage key to %s: %s",
                   next, strerror(errno));
    goto cleanup;
  }
  if (tre_crash_hook)
    tre_crash_hook("rotate-key-written");
  old = t->skey;
  t->skey = fresh;
  fresh = NULL;
  rc = tre_persist(t, st);
  if (rc != MCIM_OK) {
    /* nothing written that opens: the old key stays the key */
    mcim_storage_key_free(t->skey);
    t->skey = old;
    old = NULL;
    (void)key_file_put(t, next, zero, false, false);
    goto cleanup;
  }
  if (tre_crash_hook)
    tre_crash_hook("rotate-slot-written");
  /* durable under the new key either way: if not in tre.key, tre_load finds it in
   * tre.key.new */
  (void)key_install(t, cur, next, k);
  if (tre_crash_hook)
    tre_crash_hook("rotate-key-installed");
  if (tre_persist(t, st) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_IO_ERROR,
                   "tre: the previous slot not rewritten under the new storage key (it does"
                   " not open with it)");
  if (tre_crash_hook)
    tre_crash_hook("rotate-both-written");
  (void)key_file_put(t, next, zero, false, false);
  rc = MCIM_OK;
cleanup:
  mcim_wipe(k, sizeof(k));
  mcim_storage_key_free(old);
  mcim_storage_key_free(fresh);
  free(cur);
  free(next);
  return rc;
}
