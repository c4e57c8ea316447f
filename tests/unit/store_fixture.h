/* The store tests' fixture (test_store.c, test_store_cache.c, test_store_durability.c,
 * test_store_sealed.c). Each of those programs runs its cases on SQLite, or with the argument
 * "postgres" on the PostgreSQL server of the ctest fixture "pg" (pg_fixture.h; each case gets
 * a database of its own, and every case a private temporary folder). Header-only (static
 * functions), included after cmocka.h by each program once. */
#ifndef MCIM_TEST_STORE_FIXTURE_H
#define MCIM_TEST_STORE_FIXTURE_H

#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/store.h"
#include "pg_fixture.h"

/* The backend under test: SQLite, or PostgreSQL with the argument "postgres". */
static bool pg __attribute__((unused));

/* ---- fixture: a private temporary folder per test (and a database on PostgreSQL) ---- */

struct fx {
  char dir[256];
  char db[600];     /* the locator */
  char dbname[64];  /* PostgreSQL: the test's database */
};

static inline int setup(void **state)
{
  struct fx *fx = calloc(1, sizeof(*fx));
  if (!fx)
    return -1;
  const char *tmp = getenv("TMPDIR");
  snprintf(fx->dir, sizeof(fx->dir), "%s/mcim-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(fx->dir)) {
    free(fx);
    return -1;
  }
  snprintf(fx->db, sizeof(fx->db), "%s/role.db", fx->dir);
  if (pg && !pg_fixture_create_db("store", fx->dbname, fx->db, sizeof(fx->db))) {
    rmdir(fx->dir);
    free(fx);
    return -1;
  }
  *state = fx;
  return 0;
}

static inline int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static inline int teardown(void **state)
{
  struct fx *fx = *state;
  nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  if (pg)
    pg_fixture_drop_db(fx->dbname);
  free(fx);
  return 0;
}

static inline mcim_store_t *open_db(const char *path)
{
  mcim_store_t *st = NULL;
  assert_int_equal(mcim_store_open(path, NULL, &st), MCIM_OK);
  assert_non_null(st);
  return st;
}

static inline int64_t count(mcim_store_t *st, const char *table)
{
  char sql[128];
  int64_t n = -1;
  snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s", table);
  assert_int_equal(mcim_store_query_int(st, sql, NULL, 0, &n), MCIM_OK);
  return n;
}

static const char item_sql[] = "CREATE TABLE item (id TEXT PRIMARY KEY, n BIGINT, data BYTEA,"
                               " note TEXT)";

/* Rows of the table `item`, collected by mcim_store_query (test_crud_types, test_batch). */
struct rows {
  int n;
  char id[4][64];
  int64_t num[4];
  uint8_t data[4][16];
  size_t data_len[4];
  bool data_is_blob[4];
  bool note_null[4];
  char note[4][32];
  char names[4][8];
};

static inline mcim_cause_t collect(const mcim_row_t *row, void *arg)
{
  struct rows *r = arg;
  if (r->n >= 4)
    return MCIM_TOO_LARGE;
  int i = r->n++;
  assert_int_equal(mcim_row_ncols(row), 4);
  assert_int_equal(mcim_row_type(row, 0), MCIM_VAL_TEXT);
  snprintf(r->id[i], sizeof(r->id[i]), "%s", mcim_row_text(row, 0));
  r->num[i] = mcim_row_int(row, 1);
  size_t len = 0;
  const uint8_t *p = mcim_row_blob(row, 2, &len);
  r->data_is_blob[i] = p != NULL;
  assert_true(len <= sizeof(r->data[i]));
  if (p && len)
    memcpy(r->data[i], p, len);
  r->data_len[i] = len;
  r->note_null[i] = mcim_row_is_null(row, 3);
  if (!r->note_null[i])
    snprintf(r->note[i], sizeof(r->note[i]), "%s", mcim_row_text(row, 3));
  for (size_t c = 0; c < 4; c++)
    snprintf(r->names[c], sizeof(r->names[c]), "%s", mcim_row_name(row, c));
  /* Getters on a wrong type or column: the empty value, no crash. */
  assert_null(mcim_row_text(row, 1));
  assert_int_equal(mcim_row_int(row, 0), 0);
  assert_null(mcim_row_blob(row, 0, &len));
  assert_int_equal(len, 0);
  assert_int_equal(mcim_row_type(row, 99), MCIM_VAL_NULL);
  assert_null(mcim_row_name(row, 99));
  return MCIM_OK;
}

/* A setting's text value, as the one column of a row. */
static inline mcim_cause_t setting_row(const mcim_row_t *row, void *arg)
{
  snprintf(arg, 32, "%s", mcim_row_type(row, 0) == MCIM_VAL_TEXT ? mcim_row_text(row, 0) : "?");
  return MCIM_OK;
}

/* Two schema steps (the migration tests; test_sealed_k_not_in_files's schema). */
static const mcim_migration_t steps[] = {
    {1, "subscribers", "CREATE TABLE sub (imsi TEXT PRIMARY KEY, k BYTEA NOT NULL);"},
    {2, "SQN per subscriber, orders",
     "ALTER TABLE sub ADD COLUMN sqn BIGINT NOT NULL DEFAULT 0;"
     "CREATE TABLE orders (id TEXT PRIMARY KEY, imsi TEXT NOT NULL REFERENCES sub (imsi));"
     "CREATE INDEX orders_imsi ON orders (imsi);"},
};

/* A file's bytes (NULL, length 0: no such file). */
static inline uint8_t *slurp(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    *len = 0;
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  assert_non_null(buf);
  for (;;) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap)
      break;
    cap *= 2;
    uint8_t *bigger = realloc(buf, cap);
    assert_non_null(bigger);
    buf = bigger;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* The program's argument picks the engine ("postgres": PostgreSQL; none: SQLite), and the
 * log is quiet: these tests provoke store errors on purpose (MCIM_TEST_LOG=1 shows the log).
 * 0, or the exit status for main. */
static inline int store_fixture_init(int argc, char **argv, const char *prog)
{
  pg = argc > 1 && strcmp(argv[1], "postgres") == 0;
  if (argc > 1 && !pg) {
    fprintf(stderr, "usage: %s [postgres]\n", prog);
    return 2;
  }
  if (pg && !pg_fixture_locator())
    return 1; /* no server: a failure, never a skip */
  mcim_log_init("test", MCIM_LOG_TEXT,
                getenv("MCIM_TEST_LOG") ? MCIM_LOG_DEBUG : (mcim_log_level_t)(MCIM_LOG_ERROR + 1),
                NULL);
  return 0;
}

#endif
