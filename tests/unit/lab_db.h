/* A lab role's SQLite store, read or written next to its running daemon, for the tests that
 * run a lab (ownership_fixture.h, change_forgery_fixture.h, test_access_e2e.c): each call
 * opens the role's database file, waits out the daemon's writers (busy timeout), and closes
 * it again. A statement that does not prepare, or gives no row where one is read, fails the
 * test. Header-only; include after cmocka.h. */
#ifndef MCIM_TEST_LAB_DB_H
#define MCIM_TEST_LAB_DB_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/lab.h"

#define LAB_DB_BUSY_MS 10000

static inline sqlite3 *lab_db_open(const mcim_lab_t *l, const char *role, bool write)
{
  sqlite3 *db = NULL;
  char path[512];
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(l), role, role);
  assert_int_equal(sqlite3_open_v2(path, &db, write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY,
                                   NULL),
                   SQLITE_OK);
  sqlite3_busy_timeout(db, LAB_DB_BUSY_MS);
  return db;
}

/* The first column of the first row of `sql`, with `arg` (may be NULL) bound to its one
 * parameter, as an integer. */
static inline int64_t lab_db_int(const mcim_lab_t *l, const char *role, const char *sql,
                                 const char *arg)
{
  sqlite3_stmt *s = NULL;
  sqlite3 *db = lab_db_open(l, role, false);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
  if (arg)
    sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

/* The same as text, malloc'd (free() it); the value must not be NULL. */
static inline char *lab_db_text(const mcim_lab_t *l, const char *role, const char *sql)
{
  sqlite3_stmt *s = NULL;
  sqlite3 *db = lab_db_open(l, role, false);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  const unsigned char *t = sqlite3_column_text(s, 0);
  char *out = t ? strdup((const char *)t) : NULL;
  sqlite3_finalize(s);
  sqlite3_close(db);
  assert_non_null(out);
  return out;
}

/* `sql` (one or more statements) run on the role's store: the test reaching in, for a fault
 * or an age it cannot cause otherwise. */
static inline void lab_db_exec(const mcim_lab_t *l, const char *role, const char *sql)
{
  sqlite3 *db = lab_db_open(l, role, true);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

#endif
