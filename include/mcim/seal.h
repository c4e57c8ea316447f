/* Sealing: secrets at rest (K, OPc, private keys of a role) encrypted with the
 * role's 256-bit storage key before they reach the database.
 *
 * Format of a sealed blob (version 1), MCIM_SEAL_OVERHEAD bytes more than the secret:
 *   version (1 byte, 0x01) | nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)
 * The associated data is the version byte followed by the caller's context string,
 * which names where the secret lives ("sub/k/001010000000001"), so a sealed blob
 * copied to another row or column does not open there.
 *
 * The storage key lives in a key file of exactly 32 random bytes, mode 0600,
 * written atomically, and never overwritten by this code (losing it loses every
 * sealed secret). A key file readable by group or others is refused. */
#ifndef MCIM_SEAL_H
#define MCIM_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

#define MCIM_STORAGE_KEY_LEN 32
#define MCIM_SEAL_VERSION 1
#define MCIM_SEAL_NONCE_LEN 12
#define MCIM_SEAL_TAG_LEN 16
#define MCIM_SEAL_OVERHEAD (1 + MCIM_SEAL_NONCE_LEN + MCIM_SEAL_TAG_LEN)
/* Secrets are keys, not documents. */
#define MCIM_SEAL_MAX_PLAIN (1024 * 1024)

/* Opaque; immutable once made, so one key may be shared by threads. Wiped on free. */
typedef struct mcim_storage_key mcim_storage_key_t;

/* A fresh random key in memory (tests, or before writing it). */
mcim_cause_t mcim_storage_key_generate(mcim_storage_key_t **out);
/* From 32 bytes the caller holds (it still wipes its own copy). */
mcim_cause_t mcim_storage_key_from_bytes(const uint8_t *bytes, size_t len,
                                         mcim_storage_key_t **out);
/* Generate a key and write it to `path` (0600: temp file, fsync, hard link into
 * place, fsync of the directory). MCIM_CONFLICT if `path` exists: a key file is
 * never replaced. */
mcim_cause_t mcim_storage_key_create_file(const char *path, mcim_storage_key_t **out);
/* Load a key file. MCIM_NOT_FOUND if missing, MCIM_KEY_FILE_INSECURE if group or
 * others have any access or it is not a regular file (symlinks are not followed),
 * MCIM_BAD_LENGTH if it is not exactly 32 bytes, MCIM_IO_ERROR otherwise. */
mcim_cause_t mcim_storage_key_load_file(const char *path, mcim_storage_key_t **out);
/* Load, or create when missing (first start of a role instance). */
mcim_cause_t mcim_storage_key_load_or_create(const char *path, mcim_storage_key_t **out);
void mcim_storage_key_free(mcim_storage_key_t *key);

/* Size of the sealed form of `plain_len` bytes. */
size_t mcim_seal_len(size_t plain_len);

/* Seal `plain` for the place named by `context` (non-empty). Writes
 * mcim_seal_len(plain_len) bytes to `out` (MCIM_TOO_LARGE if out_cap is smaller).
 * MCIM_SEAL_FAILED if the crypto library fails. */
mcim_cause_t mcim_seal(const mcim_storage_key_t *key, const char *context, const uint8_t *plain,
                       size_t plain_len, uint8_t *out, size_t out_cap, size_t *out_len);

/* Open a sealed blob. MCIM_UNSEAL_FAILED for anything that does not verify: wrong
 * key, wrong context, altered, truncated, unknown version. On failure nothing is
 * left in `out`. */
mcim_cause_t mcim_unseal(const mcim_storage_key_t *key, const char *context,
                         const uint8_t *sealed, size_t sealed_len, uint8_t *out, size_t out_cap,
                         size_t *out_len);

#endif
