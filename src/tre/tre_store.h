/* Between the two halves of the software TRE's files: tre_store.c (the slots: read, sealed,
 * written) and tre_store_key.c (the storage key's files and its rotation). Private to them. */
#ifndef MCIM_TRE_STORE_H
#define MCIM_TRE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "tre/tre_priv.h"

/* One slot file as read: its header, and where its sealed blob is. */
struct slot_file {
  uint8_t *buf;    /* the whole file */
  size_t len;      /* header + sealed blob (format 2 may have stale bytes after it) */
  size_t blob;     /* offset of the sealed blob */
  uint64_t gen;    /* 0 for format 1 */
  char *device;
  mcim_cause_t rc; /* MCIM_OK: header read; else why the slot is unusable */
};

/* The seal context of a generation: "tre/<device>/<gen>" (format 1: "tre/<device>");
 * malloc'd, NULL without memory. */
char *tre_seal_context(const char *device, uint64_t gen);
/* All of `buf` at offset 0 of `fd` (EINTR retried). */
mcim_cause_t tre_pwrite_all(int fd, const uint8_t *buf, size_t len);
/* fsync of a folder (a name created or renamed in it). */
mcim_cause_t tre_sync_dir(const char *dir);
/* The newest slot `f` does not open with the handle's key: take the key file's (another
 * handle rotated), or finish a rotation cut after its slot was written (tre.key.new). Whether
 * the handle now holds a key that opens `f`. Under the TRE's lock. */
bool tre_key_refresh(struct tre_soft *t, const struct slot_file *f);

#endif
