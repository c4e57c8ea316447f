/* Store: the proof that a sealed K never reaches the database files in clear: K sealed and
 * stored, then every file the engine writes searched for it (SQLite's database, WAL and
 * journal; on PostgreSQL every file under the server's data folder, after a checkpoint and
 * before), and the control that a K stored in clear is found by the same search.
 *
 * The same cases run on both backends: `test_store_sealed` on SQLite,
 * `test_store_sealed postgres` on the PostgreSQL server of the ctest fixture "pg"
 * (tests/unit/store_fixture.h, pg_fixture.h; each case gets a database of its own). */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/seal.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "store_fixture.h"

/* ---- a sealed K never reaches the database files in clear ---- */

/* Count files (db, -wal) holding `needle`; `read` counts the files that exist. */
static int files_containing(const char *db, const uint8_t *needle, size_t nlen, int *read)
{
  static const char *const suffix[] = {"", "-wal", "-journal"};
  int hits = 0;
  *read = 0;
  for (size_t i = 0; i < 3; i++) {
    char path[320];
    size_t len = 0;
    int plen = snprintf(path, sizeof(path), "%s%s", db, suffix[i]);
    assert_true(plen >= 0 && (size_t)plen < sizeof(path));
    uint8_t *buf = slurp(path, &len);
    if (!buf)
      continue;
    (*read)++;
    if (memmem(buf, len, needle, nlen))
      hits++;
    free(buf);
  }
  return hits;
}

/* PostgreSQL: count the server's files (tables, WAL, everything under data/) holding
 * `needle`; `read` counts the files read. CHECKPOINT first, when asked, so the tables' pages
 * are written out (the WAL has every commit already). */
static const uint8_t *scan_needle;
static size_t scan_nlen;
static int scan_hits, scan_read;

static int scan_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)ftw;
  if (flag != FTW_F || !S_ISREG(sb->st_mode))
    return 0;
  size_t len = 0;
  uint8_t *buf = slurp(path, &len);
  if (!buf)
    return 0; /* gone meanwhile (another test's database dropped) */
  scan_read++;
  if (memmem(buf, len, scan_needle, scan_nlen))
    scan_hits++;
  free(buf);
  return 0;
}

static int server_files_containing(const uint8_t *needle, size_t nlen, bool checkpoint, int *read)
{
  char sdir[512], data[600];
  if (checkpoint)
    assert_true(pg_fixture_admin("CHECKPOINT"));
  assert_true(pg_fixture_server_dir(sdir, sizeof(sdir)));
  snprintf(data, sizeof(data), "%s/data", sdir);
  scan_needle = needle;
  scan_nlen = nlen;
  scan_hits = scan_read = 0;
  /* other tests' databases come and go meanwhile: a folder gone mid-walk is no failure */
  (void)nftw(data, scan_entry, 16, FTW_PHYS);
  *read = scan_read;
  return scan_hits;
}

struct blob {
  uint8_t b[64];
  size_t n;
};

static mcim_cause_t copy_blob(const mcim_row_t *row, void *arg)
{
  struct blob *out = arg;
  const uint8_t *p = mcim_row_blob(row, 0, &out->n);
  if (!p || out->n > sizeof(out->b))
    return MCIM_BAD_LENGTH;
  memcpy(out->b, p, out->n);
  return MCIM_OK;
}

static void test_sealed_k_not_in_files(void **state)
{
  struct fx *fx = *state;
  mcim_storage_key_t *key = NULL;
  uint8_t k[16], opc[16], sk[16 + MCIM_SEAL_OVERHEAD], sopc[16 + MCIM_SEAL_OVERHEAD];
  size_t sklen = 0, sopclen = 0;
  int nread = 0;

  assert_int_equal(mcim_storage_key_generate(&key), MCIM_OK);
  assert_int_equal(mcim_random(k, sizeof(k)), MCIM_OK);
  assert_int_equal(mcim_random(opc, sizeof(opc)), MCIM_OK);
  const char *imsi = "001010123456789";
  assert_int_equal(mcim_seal(key, "sub/k/001010123456789", k, 16, sk, sizeof(sk), &sklen), MCIM_OK);
  assert_int_equal(mcim_seal(key, "sub/opc/001010123456789", opc, 16, sopc, sizeof(sopc), &sopclen),
                   MCIM_OK);

  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_migrate(st, "sho", steps, 2), MCIM_OK);
  assert_int_equal(mcim_store_exec_script(st, "ALTER TABLE sub ADD COLUMN opc BYTEA"), MCIM_OK);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  mcim_val_t p[] = {MCIM_TEXT(imsi), MCIM_BLOB(sk, sklen), MCIM_BLOB(sopc, sopclen)};
  assert_int_equal(mcim_store_exec(st, "INSERT INTO sub (imsi, k, opc) VALUES (?, ?, ?)", p, 3,
                                   NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK);

  if (pg) {
    /* Committed: in the WAL, and after a checkpoint in the table's file, where the sealed
     * blobs are found (the search works: a WAL record may be cut by a WAL page header, a
     * table row never is); K and OPc in clear nowhere, before and after. */
    assert_int_equal(server_files_containing(k, 16, false, &nread), 0);
    assert_true(nread > 10);
    assert_int_equal(server_files_containing(opc, 16, false, &nread), 0);
    mcim_store_close(st);
    assert_int_equal(server_files_containing(k, 16, true, &nread), 0);
    assert_int_equal(server_files_containing(opc, 16, false, &nread), 0);
    assert_true(server_files_containing(sk, sklen, false, &nread) >= 1);
    assert_true(server_files_containing(sopc, sopclen, false, &nread) >= 1);
  } else {
    /* While open, the commit sits in the WAL. */
    assert_int_equal(files_containing(fx->db, k, 16, &nread), 0);
    assert_true(nread >= 2);
    assert_int_equal(files_containing(fx->db, opc, 16, &nread), 0);
    /* Control: the search does see what was written (the sealed blob itself). */
    assert_int_equal(files_containing(fx->db, sk, sklen, &nread), 1);

    mcim_store_close(st); /* checkpoint into the main file, WAL removed */

    assert_int_equal(files_containing(fx->db, k, 16, &nread), 0);
    assert_int_equal(nread, 1);
    assert_int_equal(files_containing(fx->db, opc, 16, &nread), 0);
    assert_int_equal(files_containing(fx->db, sk, sklen, &nread), 1);
  }

  /* What the database holds opens with the key, at its own place only. */
  st = open_db(fx->db);
  struct blob got = {{0}, 0};
  mcim_val_t w[] = {MCIM_TEXT(imsi)};
  assert_int_equal(mcim_store_query_one(st, "SELECT k FROM sub WHERE imsi = ?", w, 1, copy_blob,
                                        &got),
                   MCIM_OK);
  mcim_store_close(st);
  uint8_t out[16];
  size_t outlen = 0;
  assert_int_equal(mcim_unseal(key, "sub/k/001010123456789", got.b, got.n, out, sizeof(out),
                               &outlen),
                   MCIM_OK);
  assert_int_equal(outlen, 16);
  assert_memory_equal(out, k, 16);
  assert_int_equal(mcim_unseal(key, "sub/opc/001010123456789", got.b, got.n, out, sizeof(out),
                               &outlen),
                   MCIM_UNSEAL_FAILED);
  assert_int_equal(mcim_unseal(key, "sub/k/001010123456780", got.b, got.n, out, sizeof(out),
                               &outlen),
                   MCIM_UNSEAL_FAILED);
  mcim_storage_key_free(key);
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
}

/* Control for the test above: a K stored in clear is found by the same search. */
static void test_clear_k_is_found(void **state)
{
  struct fx *fx = *state;
  uint8_t k[16];
  int nread = 0;
  assert_int_equal(mcim_random(k, sizeof(k)), MCIM_OK);
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, "CREATE TABLE bad (k BYTEA)"), MCIM_OK);
  mcim_val_t p[] = {MCIM_BLOB(k, sizeof(k))};
  assert_int_equal(mcim_store_exec(st, "INSERT INTO bad (k) VALUES (?)", p, 1, NULL, NULL), MCIM_OK);
  if (pg) {
    mcim_store_close(st);
    /* the table's file after a checkpoint (and the WAL, unless a page header cut it) */
    assert_true(server_files_containing(k, 16, true, &nread) >= 1);
    return;
  }
  assert_int_equal(files_containing(fx->db, k, 16, &nread), 1);
  mcim_store_close(st);
  assert_int_equal(files_containing(fx->db, k, 16, &nread), 1);
}

int main(int argc, char **argv)
{
  int rc = store_fixture_init(argc, argv, "test_store_sealed");
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sealed_k_not_in_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clear_k_is_found, setup, teardown),
  };
  const char *group = pg ? "store sealed on postgres" : "store sealed on sqlite";
  return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
