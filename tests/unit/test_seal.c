/* Sealing of secrets at rest (AES-256-GCM) and the storage key file. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/seal.h"
#include "mcim/util.h"

static const char ctx_k[] = "sub/k/001010123456789";

static mcim_storage_key_t *new_key(void)
{
  mcim_storage_key_t *key = NULL;
  assert_int_equal(mcim_storage_key_generate(&key), MCIM_OK);
  assert_non_null(key);
  return key;
}

/* ---- seal / unseal ---- */

static void test_roundtrip(void **state)
{
  (void)state;
  static const size_t lens[] = {0, 1, 15, 16, 32, 100, 4096};
  mcim_storage_key_t *key = new_key();
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    size_t n = lens[i];
    uint8_t *plain = malloc(n + 1), *sealed = malloc(mcim_seal_len(n)), *out = malloc(n + 1);
    assert_true(plain && sealed && out);
    for (size_t j = 0; j < n; j++)
      plain[j] = (uint8_t)(j * 7 + 1);
    size_t slen = 0, olen = 99;
    assert_int_equal(mcim_seal(key, ctx_k, plain, n, sealed, mcim_seal_len(n), &slen), MCIM_OK);
    assert_int_equal(slen, n + MCIM_SEAL_OVERHEAD);
    assert_int_equal(sealed[0], MCIM_SEAL_VERSION);
    assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, n, &olen), MCIM_OK);
    assert_int_equal(olen, n);
    if (n)
      assert_memory_equal(out, plain, n);
    free(plain);
    free(sealed);
    free(out);
  }
  mcim_storage_key_free(key);
}

static void test_nonce_fresh(void **state)
{
  (void)state;
  mcim_storage_key_t *key = new_key();
  uint8_t k[16] = {0}, a[64], b[64];
  size_t la = 0, lb = 0;
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, a, sizeof(a), &la), MCIM_OK);
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, b, sizeof(b), &lb), MCIM_OK);
  assert_int_equal(la, lb);
  /* Same secret, same place: different nonce, different ciphertext. */
  assert_memory_not_equal(a + 1, b + 1, MCIM_SEAL_NONCE_LEN);
  assert_memory_not_equal(a + 1 + MCIM_SEAL_NONCE_LEN, b + 1 + MCIM_SEAL_NONCE_LEN, 16);
  /* The secret is not in the sealed form. */
  uint8_t k2[16];
  memset(k2, 0x5a, sizeof(k2));
  assert_int_equal(mcim_seal(key, ctx_k, k2, 16, a, sizeof(a), &la), MCIM_OK);
  for (size_t i = 0; i + 16 <= la; i++)
    assert_memory_not_equal(a + i, k2, 16);
  mcim_storage_key_free(key);
}

static void test_wrong_key_and_context(void **state)
{
  (void)state;
  mcim_storage_key_t *key = new_key(), *other = new_key();
  uint8_t k[16], sealed[64], out[16];
  size_t slen = 0, olen = 0;
  memset(k, 0x42, sizeof(k));
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);

  memset(out, 0xee, sizeof(out));
  assert_int_equal(mcim_unseal(other, ctx_k, sealed, slen, out, sizeof(out), &olen),
                   MCIM_UNSEAL_FAILED);
  assert_int_equal(olen, 0);
  /* nothing unverified left in the output */
  static const uint8_t zero[16];
  assert_memory_equal(out, zero, sizeof(out));

  static const char *const wrong[] = {"sub/k/001010123456780", "sub/opc/001010123456789",
                                      "sub/k/00101012345678", "sub/k/0010101234567890",
                                      "SUB/K/001010123456789"};
  for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
    assert_int_equal(mcim_unseal(key, wrong[i], sealed, slen, out, sizeof(out), &olen),
                     MCIM_UNSEAL_FAILED);
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, sizeof(out), &olen), MCIM_OK);
  assert_memory_equal(out, k, 16);

  /* The same bytes make the same key. */
  uint8_t raw[MCIM_STORAGE_KEY_LEN];
  memset(raw, 7, sizeof(raw));
  mcim_storage_key_t *a = NULL, *b = NULL;
  assert_int_equal(mcim_storage_key_from_bytes(raw, sizeof(raw), &a), MCIM_OK);
  assert_int_equal(mcim_storage_key_from_bytes(raw, sizeof(raw), &b), MCIM_OK);
  assert_int_equal(mcim_seal(a, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);
  assert_int_equal(mcim_unseal(b, ctx_k, sealed, slen, out, sizeof(out), &olen), MCIM_OK);
  mcim_storage_key_free(a);
  mcim_storage_key_free(b);
  mcim_storage_key_free(key);
  mcim_storage_key_free(other);
}

static void test_every_bit_flipped(void **state)
{
  (void)state;
  mcim_storage_key_t *key = new_key();
  uint8_t k[16], sealed[64], out[16];
  size_t slen = 0, olen = 0;
  memset(k, 0x33, sizeof(k));
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);
  for (size_t i = 0; i < slen; i++)
    for (int bit = 0; bit < 8; bit++) {
      sealed[i] ^= (uint8_t)(1u << bit);
      assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, sizeof(out), &olen),
                       MCIM_UNSEAL_FAILED);
      sealed[i] ^= (uint8_t)(1u << bit);
    }
  /* and whole bytes */
  for (size_t i = 0; i < slen; i++) {
    sealed[i] ^= 0xff;
    assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, sizeof(out), &olen),
                     MCIM_UNSEAL_FAILED);
    sealed[i] ^= 0xff;
  }
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, sizeof(out), &olen), MCIM_OK);
  mcim_storage_key_free(key);
}

static void test_truncated_and_garbage(void **state)
{
  (void)state;
  mcim_storage_key_t *key = new_key();
  uint8_t k[16], sealed[64], out[64];
  size_t slen = 0, olen = 0;
  memset(k, 0x11, sizeof(k));
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);
  /* Every shorter prefix, and every suffix (head cut off). */
  for (size_t n = 0; n < slen; n++) {
    assert_int_equal(mcim_unseal(key, ctx_k, sealed, n, out, sizeof(out), &olen),
                     MCIM_UNSEAL_FAILED);
    assert_int_equal(mcim_unseal(key, ctx_k, sealed + (slen - n), n, out, sizeof(out), &olen),
                     MCIM_UNSEAL_FAILED);
  }
  /* One byte appended. */
  sealed[slen] = 0;
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen + 1, out, sizeof(out), &olen),
                   MCIM_UNSEAL_FAILED);
  assert_int_equal(mcim_unseal(key, ctx_k, NULL, 0, out, sizeof(out), &olen), MCIM_UNSEAL_FAILED);

  /* Random garbage of every small length, with and without a valid version byte. */
  uint8_t junk[256];
  for (int round = 0; round < 2000; round++) {
    size_t n = (size_t)(round % 200);
    assert_int_equal(mcim_random(junk, sizeof(junk)), MCIM_OK);
    if (round & 1)
      junk[0] = MCIM_SEAL_VERSION;
    uint8_t big[256];
    assert_int_equal(mcim_unseal(key, ctx_k, junk, n, big, sizeof(big), &olen), MCIM_UNSEAL_FAILED);
  }
  /* An unknown version is refused even with an otherwise good blob. */
  sealed[0] = 2;
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, sizeof(out), &olen),
                   MCIM_UNSEAL_FAILED);
  mcim_storage_key_free(key);
}

static void test_arguments(void **state)
{
  (void)state;
  mcim_storage_key_t *key = new_key();
  uint8_t k[16] = {0}, sealed[64], out[16];
  size_t slen = 0, olen = 0;

  assert_int_equal(mcim_seal(NULL, ctx_k, k, 16, sealed, sizeof(sealed), &slen),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_seal(key, NULL, k, 16, sealed, sizeof(sealed), &slen),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_seal(key, "", k, 16, sealed, sizeof(sealed), &slen), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_seal(key, ctx_k, NULL, 16, sealed, sizeof(sealed), &slen),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, sealed, 16 + MCIM_SEAL_OVERHEAD - 1, &slen),
                   MCIM_TOO_LARGE);
  assert_int_equal(mcim_seal(key, ctx_k, k, MCIM_SEAL_MAX_PLAIN + 1, sealed, sizeof(sealed), &slen),
                   MCIM_TOO_LARGE);
  assert_int_equal(mcim_seal(key, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, 15, &olen), MCIM_TOO_LARGE);
  assert_int_equal(mcim_unseal(NULL, ctx_k, sealed, slen, out, 16, &olen), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_unseal(key, "", sealed, slen, out, 16, &olen), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_unseal(key, ctx_k, sealed, slen, out, 16, NULL), MCIM_INVALID_ARGUMENT);

  mcim_storage_key_t *bad = NULL;
  assert_int_equal(mcim_storage_key_from_bytes(k, 16, &bad), MCIM_BAD_LENGTH);
  assert_null(bad);
  assert_int_equal(mcim_storage_key_from_bytes(NULL, 32, &bad), MCIM_INVALID_ARGUMENT);
  mcim_storage_key_free(NULL);
  mcim_storage_key_free(key);
}

/* ---- key files ---- */

struct fx {
  char dir[256];
  char key[300];
  FILE *log;
};

static int setup(void **state)
{
  struct fx *fx = calloc(1, sizeof(*fx));
  if (!fx)
    return -1;
  const char *tmp = getenv("TMPDIR");
  snprintf(fx->dir, sizeof(fx->dir), "%s/mcim-seal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(fx->dir)) {
    free(fx);
    return -1;
  }
  snprintf(fx->key, sizeof(fx->key), "%s/storage.key", fx->dir);
  /* Capture the log to check the operator's messages. */
  fx->log = tmpfile();
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, fx->log);
  *state = fx;
  return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int teardown(void **state)
{
  struct fx *fx = *state;
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL);
  if (fx->log)
    fclose(fx->log);
  nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(fx);
  return 0;
}

/* Everything logged so far (the caller frees). */
static char *log_text(struct fx *fx)
{
  fflush(fx->log);
  long n = ftell(fx->log);
  char *buf = calloc(1, (size_t)n + 1);
  assert_non_null(buf);
  rewind(fx->log);
  assert_int_equal(fread(buf, 1, (size_t)n, fx->log), (size_t)n);
  return buf;
}

static int dir_entries(const char *dir)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      n++;
  closedir(d);
  return n;
}

static void write_file(const char *path, const uint8_t *buf, size_t len, mode_t mode)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, len), (ssize_t)len);
  assert_int_equal(fchmod(fd, mode), 0);
  close(fd);
}

/* The two keys are the same key: one seals, the other opens. */
static void assert_same_key(const mcim_storage_key_t *a, const mcim_storage_key_t *b)
{
  uint8_t k[16], sealed[64], out[16];
  size_t slen = 0, olen = 0;
  memset(k, 0x99, sizeof(k));
  assert_int_equal(mcim_seal(a, ctx_k, k, 16, sealed, sizeof(sealed), &slen), MCIM_OK);
  assert_int_equal(mcim_unseal(b, ctx_k, sealed, slen, out, sizeof(out), &olen), MCIM_OK);
}

static void test_key_file_create_load(void **state)
{
  struct fx *fx = *state;
  mcim_storage_key_t *created = NULL, *loaded = NULL, *again = NULL;

  /* Even with a careless umask the file is 0600. */
  mode_t old = umask(0);
  assert_int_equal(mcim_storage_key_create_file(fx->key, &created), MCIM_OK);
  umask(old);
  struct stat sb;
  assert_int_equal(stat(fx->key, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  assert_int_equal(sb.st_size, MCIM_STORAGE_KEY_LEN);
  assert_int_equal(dir_entries(fx->dir), 1); /* no temp file left */

  assert_int_equal(mcim_storage_key_load_file(fx->key, &loaded), MCIM_OK);
  assert_same_key(created, loaded);

  /* An existing key file is never replaced. */
  uint8_t before[MCIM_STORAGE_KEY_LEN], after[MCIM_STORAGE_KEY_LEN];
  FILE *f = fopen(fx->key, "rb");
  assert_int_equal(fread(before, 1, sizeof(before), f), sizeof(before));
  fclose(f);
  assert_int_equal(mcim_storage_key_create_file(fx->key, &again), MCIM_CONFLICT);
  assert_null(again);
  f = fopen(fx->key, "rb");
  assert_int_equal(fread(after, 1, sizeof(after), f), sizeof(after));
  fclose(f);
  assert_memory_equal(before, after, sizeof(before));
  assert_int_equal(dir_entries(fx->dir), 1);

  /* load_or_create loads the one that exists. */
  assert_int_equal(mcim_storage_key_load_or_create(fx->key, &again), MCIM_OK);
  assert_same_key(again, created);
  mcim_storage_key_free(again);
  mcim_storage_key_free(created);
  mcim_storage_key_free(loaded);

  /* Owner-only read access is fine. */
  assert_int_equal(chmod(fx->key, 0400), 0);
  assert_int_equal(mcim_storage_key_load_file(fx->key, &loaded), MCIM_OK);
  mcim_storage_key_free(loaded);
}

static void test_key_file_load_or_create_new(void **state)
{
  struct fx *fx = *state;
  mcim_storage_key_t *a = NULL, *b = NULL;
  assert_int_equal(mcim_storage_key_load_or_create(fx->key, &a), MCIM_OK);
  assert_int_equal(mcim_storage_key_load_or_create(fx->key, &b), MCIM_OK);
  assert_same_key(a, b);
  mcim_storage_key_free(a);
  mcim_storage_key_free(b);
  /* create without wanting the key back */
  char other[320];
  snprintf(other, sizeof(other), "%s/second.key", fx->dir);
  assert_int_equal(mcim_storage_key_create_file(other, NULL), MCIM_OK);
  assert_int_equal(mcim_storage_key_load_file(other, &a), MCIM_OK);
  mcim_storage_key_free(a);
}

static void test_key_file_permissions(void **state)
{
  struct fx *fx = *state;
  mcim_storage_key_t *key = NULL;
  uint8_t raw[MCIM_STORAGE_KEY_LEN];
  memset(raw, 0xab, sizeof(raw));

  static const mode_t bad_modes[] = {0640, 0604, 0660, 0644, 0601, 0610, 0700 | 0004};
  for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
    write_file(fx->key, raw, sizeof(raw), bad_modes[i]);
    assert_int_equal(mcim_storage_key_load_file(fx->key, &key), MCIM_KEY_FILE_INSECURE);
    assert_null(key);
  }
  /* The operator is told what is wrong and what to do, and no key byte is shown. */
  char *log = log_text(fx);
  assert_non_null(strstr(log, fx->key));
  assert_non_null(strstr(log, "has mode 0640"));
  assert_non_null(strstr(log, "chmod 600"));
  assert_non_null(strstr(log, "KEY_FILE_INSECURE"));
  assert_null(strstr(log, "abab"));
  free(log);

  /* load_or_create does not paper over it by making a new key. */
  assert_int_equal(mcim_storage_key_load_or_create(fx->key, &key), MCIM_KEY_FILE_INSECURE);

  write_file(fx->key, raw, sizeof(raw), 0600);
  assert_int_equal(mcim_storage_key_load_file(fx->key, &key), MCIM_OK);
  mcim_storage_key_free(key);
  key = NULL;

  /* A symbolic link is not followed, even to a good key file. */
  char link_path[320];
  snprintf(link_path, sizeof(link_path), "%s/link.key", fx->dir);
  assert_int_equal(symlink(fx->key, link_path), 0);
  assert_int_equal(mcim_storage_key_load_file(link_path, &key), MCIM_KEY_FILE_INSECURE);
  /* A directory is not a key file. */
  assert_int_equal(mcim_storage_key_load_file(fx->dir, &key), MCIM_KEY_FILE_INSECURE);
}

static void test_key_file_bad_content(void **state)
{
  struct fx *fx = *state;
  mcim_storage_key_t *key = NULL;
  uint8_t raw[MCIM_STORAGE_KEY_LEN + 1] = {0};

  write_file(fx->key, raw, MCIM_STORAGE_KEY_LEN - 1, 0600);
  assert_int_equal(mcim_storage_key_load_file(fx->key, &key), MCIM_BAD_LENGTH);
  write_file(fx->key, raw, MCIM_STORAGE_KEY_LEN + 1, 0600);
  assert_int_equal(mcim_storage_key_load_file(fx->key, &key), MCIM_BAD_LENGTH);
  write_file(fx->key, raw, 0, 0600);
  assert_int_equal(mcim_storage_key_load_file(fx->key, &key), MCIM_BAD_LENGTH);
  assert_null(key);

  char missing[320];
  snprintf(missing, sizeof(missing), "%s/missing.key", fx->dir);
  assert_int_equal(mcim_storage_key_load_file(missing, &key), MCIM_NOT_FOUND);
  snprintf(missing, sizeof(missing), "%s/no/such/dir.key", fx->dir);
  assert_int_equal(mcim_storage_key_create_file(missing, &key), MCIM_IO_ERROR);
  assert_int_equal(mcim_storage_key_load_file(NULL, &key), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_storage_key_create_file("", &key), MCIM_INVALID_ARGUMENT);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_nonce_fresh),
      cmocka_unit_test(test_wrong_key_and_context),
      cmocka_unit_test(test_every_bit_flipped),
      cmocka_unit_test(test_truncated_and_garbage),
      cmocka_unit_test(test_arguments),
      cmocka_unit_test_setup_teardown(test_key_file_create_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_file_load_or_create_new, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_file_permissions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_file_bad_content, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
