/* Store: a backend through the neutral interface: CRUD with every parameter type,
 * constraints, misuse and backend errors, transactions, concurrent writers, placeholder
 * rewriting, a lost PostgreSQL session, and errors and locators that carry no value into
 * messages or the log. The statement cache is in test_store_cache.c; durability, crash safety
 * and migrations in test_store_durability.c; the proof that a sealed K never reaches the
 * database files in clear in test_store_sealed.c.
 *
 * The same cases run on both backends: `test_store` on SQLite, `test_store postgres` on the
 * PostgreSQL server of the ctest fixture "pg" (tests/unit/store_fixture.h, pg_fixture.h; each
 * case gets a database of its own). Where the engines differ (messages, files, settings), the
 * case says what each one must show. */
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

/* ---- CRUD with every parameter type ---- */

static void test_crud_types(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_string_equal(mcim_store_backend(st), pg ? "postgres" : "sqlite");
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);

  static const char ins[] = "INSERT INTO item (id, n, data, note) VALUES (?, ?, ?, ?)";
  /* A value that would be an injection if formatted into SQL is stored literally. */
  const char *evil = "a'); DROP TABLE item; --";
  static const uint8_t bin[5] = {0x00, 0xff, 0x00, 0x7f, 0x01};
  mcim_val_t p1[] = {MCIM_TEXT(evil), MCIM_INT(INT64_MIN), MCIM_BLOB(bin, sizeof(bin)), MCIM_NULL};
  assert_int_equal(mcim_store_exec(st, ins, p1, MCIM_NPARAMS(p1), NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
  mcim_val_t p2[] = {MCIM_TEXT("b"), MCIM_INT(INT64_MAX), MCIM_BLOB(bin, 0),
                     MCIM_TEXT("h\xc3\xa9llo")};
  assert_int_equal(mcim_store_exec(st, ins, p2, MCIM_NPARAMS(p2), NULL, NULL), MCIM_OK);
  mcim_val_t p3[] = {MCIM_TEXT("c"), MCIM_INT(0), MCIM_NULL, MCIM_TEXT(NULL)};
  assert_int_equal(mcim_store_exec(st, ins, p3, MCIM_NPARAMS(p3), NULL, NULL), MCIM_OK);

  struct rows r = {0};
  assert_int_equal(mcim_store_exec(st, "SELECT id, n, data, note AS remark FROM item ORDER BY id",
                                   NULL, 0, collect, &r),
                   MCIM_OK);
  assert_int_equal(r.n, 3);
  assert_string_equal(r.id[0], evil);
  assert_true(r.num[0] == INT64_MIN);
  assert_true(r.data_is_blob[0]);
  assert_int_equal(r.data_len[0], 5);
  assert_memory_equal(r.data[0], bin, 5);
  assert_true(r.note_null[0]);
  assert_string_equal(r.id[1], "b");
  assert_true(r.num[1] == INT64_MAX);
  assert_true(r.data_is_blob[1]); /* empty blob is a blob, not NULL */
  assert_int_equal(r.data_len[1], 0);
  assert_string_equal(r.note[1], "h\xc3\xa9llo");
  assert_false(r.data_is_blob[2]);
  assert_true(r.note_null[2]);
  assert_string_equal(r.names[0], "id");
  assert_string_equal(r.names[3], "remark");

  /* Update and delete report their changes. */
  mcim_val_t up[] = {MCIM_TEXT("new"), MCIM_TEXT("b")};
  assert_int_equal(mcim_store_exec(st, "UPDATE item SET note = ? WHERE id = ?", up, 2, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
  mcim_val_t none[] = {MCIM_TEXT("x"), MCIM_TEXT("nobody")};
  assert_int_equal(mcim_store_exec(st, "UPDATE item SET note = ? WHERE id = ?", none, 2, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 0);
  mcim_val_t del[] = {MCIM_TEXT("c")};
  assert_int_equal(mcim_store_exec(st, "DELETE FROM item WHERE id = ?", del, 1, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
  assert_int_equal(count(st, "item"), 2);

  /* Query helpers. */
  int64_t v = 0;
  mcim_val_t b[] = {MCIM_TEXT("b")};
  assert_int_equal(mcim_store_query_int(st, "SELECT n FROM item WHERE id = ?", b, 1, &v), MCIM_OK);
  assert_true(v == INT64_MAX);
  assert_int_equal(mcim_store_query_int(st, "SELECT n FROM item WHERE id = ?", del, 1, &v),
                   MCIM_NOT_FOUND);
  assert_int_equal(mcim_store_query_one(st, "SELECT id FROM item WHERE id = ?", del, 1, NULL, NULL),
                   MCIM_NOT_FOUND);
  assert_int_equal(mcim_store_query_one(st, "SELECT id FROM item", NULL, 0, NULL, NULL), MCIM_OK);
  /* A NULL first column is "no value". */
  mcim_val_t a[] = {MCIM_TEXT(evil)};
  assert_int_equal(mcim_store_query_int(st, "SELECT note FROM item WHERE id = ?", a, 1, &v),
                   MCIM_NOT_FOUND);
  mcim_store_close(st);
}

/* ---- constraint violations are conflicts, with a message that names no value ---- */

static void test_constraints(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st,
                                          "CREATE TABLE sho (name TEXT PRIMARY KEY);"
                                          "CREATE TABLE sub (imsi TEXT PRIMARY KEY,"
                                          " sho TEXT NOT NULL REFERENCES sho (name),"
                                          " sqn BIGINT NOT NULL CHECK (sqn >= 0))"),
                   MCIM_OK);
  static const char ins[] = "INSERT INTO sub (imsi, sho, sqn) VALUES (?, ?, ?)";
  mcim_val_t sho[] = {MCIM_TEXT("sho-a")};
  assert_int_equal(mcim_store_exec(st, "INSERT INTO sho (name) VALUES (?)", sho, 1, NULL, NULL),
                   MCIM_OK);
  mcim_val_t ok[] = {MCIM_TEXT("001010123456789"), MCIM_TEXT("sho-a"), MCIM_INT(1)};
  assert_int_equal(mcim_store_exec(st, ins, ok, 3, NULL, NULL), MCIM_OK);

  /* unique (SQLite: "UNIQUE constraint failed: sub.imsi"; PostgreSQL: "duplicate key value
   * violates unique constraint "sub_pkey"", whose DETAIL line, dropped, quotes the key) */
  assert_int_equal(mcim_store_exec(st, ins, ok, 3, NULL, NULL), MCIM_CONFLICT);
  assert_non_null(strcasestr(mcim_store_errmsg(st), "unique"));
  assert_null(strstr(mcim_store_errmsg(st), "001010123456789"));
  /* foreign key (foreign_keys = ON) */
  mcim_val_t fk[] = {MCIM_TEXT("001010000000002"), MCIM_TEXT("sho-zzz"), MCIM_INT(1)};
  assert_int_equal(mcim_store_exec(st, ins, fk, 3, NULL, NULL), MCIM_CONFLICT);
  assert_non_null(strcasestr(mcim_store_errmsg(st), "foreign key"));
  assert_null(strstr(mcim_store_errmsg(st), "sho-zzz"));
  assert_null(strstr(mcim_store_errmsg(st), "001010000000002"));
  /* not null */
  mcim_val_t nn[] = {MCIM_TEXT("001010000000003"), MCIM_NULL, MCIM_INT(1)};
  assert_int_equal(mcim_store_exec(st, ins, nn, 3, NULL, NULL), MCIM_CONFLICT);
  assert_non_null(strcasestr(mcim_store_errmsg(st), "null"));
  assert_null(strstr(mcim_store_errmsg(st), "001010000000003"));
  /* check */
  mcim_val_t ck[] = {MCIM_TEXT("001010000000004"), MCIM_TEXT("sho-a"), MCIM_INT(-5)};
  assert_int_equal(mcim_store_exec(st, ins, ck, 3, NULL, NULL), MCIM_CONFLICT);
  assert_non_null(strcasestr(mcim_store_errmsg(st), "check"));
  assert_null(strstr(mcim_store_errmsg(st), "001010000000004"));
  /* a success clears the message */
  assert_int_equal(count(st, "sub"), 1);
  assert_string_equal(mcim_store_errmsg(st), "");
  mcim_store_close(st);
}

/* ---- misuse and backend errors ---- */

static mcim_cause_t stop_at_first(const mcim_row_t *row, void *arg)
{
  (void)row;
  (*(int *)arg)++;
  return MCIM_REPLAY; /* any cause: it comes back unchanged */
}

static void test_errors(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);
  mcim_val_t one[] = {MCIM_TEXT("a")};

  assert_int_equal(mcim_store_exec(st, "SELEC nonsense", NULL, 0, NULL, NULL), MCIM_STORE_ERROR);
  assert_non_null(strstr(mcim_store_errmsg(st), "syntax error"));
  assert_int_equal(mcim_store_exec(st, "SELECT * FROM missing", NULL, 0, NULL, NULL),
                   MCIM_STORE_ERROR);
  /* wrong number of parameters */
  assert_int_equal(mcim_store_exec(st, "SELECT id FROM item WHERE id = ? AND note = ?", one, 1,
                                   NULL, NULL),
                   MCIM_INVALID_ARGUMENT);
  assert_non_null(strstr(mcim_store_errmsg(st), "2 parameters, 1 given"));
  /* exec runs one statement only */
  assert_int_equal(mcim_store_exec(st, "DELETE FROM item; DROP TABLE item", NULL, 0, NULL, NULL),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(count(st, "item"), 0); /* table still there */
  /* a blob with a length but no bytes */
  mcim_val_t bad[] = {MCIM_TEXT("a"), MCIM_INT(1), MCIM_BLOB(NULL, 3), MCIM_NULL};
  assert_int_equal(mcim_store_exec(st, "INSERT INTO item VALUES (?, ?, ?, ?)", bad, 4, NULL, NULL),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(count(st, "item"), 0);
  /* NULL arguments */
  assert_int_equal(mcim_store_exec(NULL, "SELECT 1", NULL, 0, NULL, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_store_exec(st, NULL, NULL, 0, NULL, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_store_exec(st, "SELECT ?", NULL, 1, NULL, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_store_query_int(st, "SELECT 1", NULL, 0, NULL), MCIM_INVALID_ARGUMENT);

  /* A callback's cause stops the statement and comes back as is. */
  for (int i = 0; i < 3; i++) {
    mcim_val_t p[] = {MCIM_TEXT(i == 0 ? "x" : i == 1 ? "y" : "z"), MCIM_INT(i), MCIM_NULL,
                      MCIM_NULL};
    assert_int_equal(mcim_store_exec(st, "INSERT INTO item VALUES (?, ?, ?, ?)", p, 4, NULL, NULL),
                     MCIM_OK);
  }
  int calls = 0;
  assert_int_equal(mcim_store_exec(st, "SELECT id FROM item", NULL, 0, stop_at_first, &calls),
                   MCIM_REPLAY);
  assert_int_equal(calls, 1);
  /* and the handle is fine afterwards (the statement was reset) */
  assert_int_equal(count(st, "item"), 3);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK);

  /* Locators: both backends are built in; a server that is not there is a store error */
  mcim_store_t *other = NULL;
  assert_true(mcim_store_locator_supported("postgres://db.example/ro", NULL, 0));
  assert_true(mcim_store_locator_supported("postgresql://db.example/ro", NULL, 0));
  assert_int_equal(mcim_store_open("postgres://mcim@127.0.0.1:1/ro?connect_timeout=5", NULL, &other),
                   MCIM_STORE_ERROR);
  assert_null(other);
  assert_int_equal(mcim_store_open("postgresql://mcim@127.0.0.1:1/ro", NULL, &other),
                   MCIM_STORE_ERROR);
  assert_null(other);
  char missing[320];
  snprintf(missing, sizeof(missing), "%s/nope/x.db", fx->dir);
  assert_int_equal(mcim_store_open(missing, NULL, &other), MCIM_STORE_ERROR);
  assert_null(other);
  mcim_store_close(NULL);
  mcim_store_close(st);
}

static void test_read_only_and_locator(void **state)
{
  struct fx *fx = *state;
  char loc[640];
  /* the other spelling of the locator: sqlite:PATH for a path, postgresql:// for postgres:// */
  if (pg)
    snprintf(loc, sizeof(loc), "postgresql://%s", fx->db + strlen("postgres://"));
  else
    snprintf(loc, sizeof(loc), "sqlite:%s", fx->db);
  mcim_store_t *st = open_db(loc);
  assert_string_equal(mcim_store_backend(st), pg ? "postgres" : "sqlite");
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);
  mcim_store_close(st);

  mcim_store_opts_t ro = {.read_only = true};
  assert_int_equal(mcim_store_open(fx->db, &ro, &st), MCIM_OK);
  assert_int_equal(count(st, "item"), 0);
  mcim_val_t p[] = {MCIM_TEXT("a"), MCIM_INT(1), MCIM_NULL, MCIM_NULL};
  assert_int_not_equal(mcim_store_exec(st, "INSERT INTO item VALUES (?, ?, ?, ?)", p, 4, NULL, NULL),
                       MCIM_OK);
  assert_int_not_equal(mcim_store_exec_script(st, "DELETE FROM item"), MCIM_OK);
  assert_int_equal(count(st, "item"), 0);
  mcim_store_close(st);
}

/* ---- transactions ---- */

static void test_rollback(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);
  static const char ins[] = "INSERT INTO item (id, n) VALUES (?, ?)";

  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_true(mcim_store_in_txn(st));
  assert_int_equal(mcim_store_begin(st), MCIM_INVALID_ARGUMENT); /* no nesting */
  for (int i = 0; i < 10; i++) {
    char id[16];
    snprintf(id, sizeof(id), "r%d", i);
    mcim_val_t p[] = {MCIM_TEXT(id), MCIM_INT(i)};
    assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_OK);
  }
  assert_int_equal(count(st, "item"), 10);
  assert_int_equal(mcim_store_rollback(st), MCIM_OK);
  assert_false(mcim_store_in_txn(st));
  assert_int_equal(count(st, "item"), 0);
  assert_int_equal(mcim_store_commit(st), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_store_rollback(st), MCIM_INVALID_ARGUMENT);

  /* A failing statement inside a transaction does not end it: the caller decides. */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  mcim_val_t p[] = {MCIM_TEXT("k"), MCIM_INT(1)};
  assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_CONFLICT);
  assert_int_equal(mcim_store_rollback(st), MCIM_OK);
  assert_int_equal(count(st, "item"), 0);

  /* ... and may go on and commit: the failed statement undid itself only (PostgreSQL: each
   * statement under a savepoint). Errors of every kind: a conflict, a missing table, a
   * syntax error, a failed script. */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_CONFLICT);
  assert_int_equal(mcim_store_exec(st, "SELECT x FROM nowhere", NULL, 0, NULL, NULL),
                   MCIM_STORE_ERROR);
  assert_int_equal(mcim_store_exec(st, "SELEC 1", NULL, 0, NULL, NULL), MCIM_STORE_ERROR);
  assert_int_not_equal(mcim_store_exec_script(st, "CREATE TABLE half (x TEXT);"
                                                  " INSERT INTO nowhere VALUES (1)"),
                       MCIM_OK);
  mcim_val_t p2[] = {MCIM_TEXT("k2"), MCIM_INT(2)};
  assert_int_equal(mcim_store_exec(st, ins, p2, 2, NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_exec_script(st, "UPDATE item SET note = 'script' WHERE id = 'k2'"),
                   MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK);
  assert_int_equal(count(st, "item"), 2);
  int64_t n2 = 0;
  assert_int_equal(mcim_store_query_int(st, "SELECT COUNT(*) FROM item WHERE note = 'script'", NULL,
                                        0, &n2),
                   MCIM_OK);
  assert_int_equal(n2, 1);
  assert_int_equal(mcim_store_exec(st, "DELETE FROM item", NULL, 0, NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 2);

  /* Closing with an open transaction rolls it back. */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, p, 2, NULL, NULL), MCIM_OK);
  mcim_store_close(st);
  st = open_db(fx->db);
  assert_int_equal(count(st, "item"), 0);
  mcim_store_close(st);
}

/* Writers serialize at BEGIN; a lock not obtained in time is STORE_BUSY. */
static void test_busy(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *a = open_db(fx->db);
  mcim_store_t *b = NULL;
  mcim_store_opts_t quick = {.busy_timeout_ms = 50};
  assert_int_equal(mcim_store_exec_script(a, item_sql), MCIM_OK);
  assert_int_equal(mcim_store_open(fx->db, &quick, &b), MCIM_OK);

  assert_int_equal(mcim_store_begin(a), MCIM_OK);
  assert_int_equal(mcim_store_begin(b), MCIM_STORE_BUSY);
  assert_false(mcim_store_in_txn(b));
  /* A write outside a transaction waits for the writer too (PostgreSQL: it takes the
   * writers' lock for its own implicit transaction). */
  mcim_val_t w[] = {MCIM_TEXT("auto"), MCIM_INT(1)};
  assert_int_equal(mcim_store_exec(b, "INSERT INTO item (id, n) VALUES (?, ?)", w, 2, NULL, NULL),
                   MCIM_STORE_BUSY);
  assert_int_equal(mcim_store_exec_script(b, "DELETE FROM item"), MCIM_STORE_BUSY);
  /* WAL: a reader is not blocked by the writer. */
  assert_int_equal(count(b, "item"), 0);
  assert_int_equal(mcim_store_commit(a), MCIM_OK);
  assert_int_equal(mcim_store_begin(b), MCIM_OK);
  assert_int_equal(mcim_store_commit(b), MCIM_OK);
  /* a rollback lets the next writer in as well */
  assert_int_equal(mcim_store_begin(a), MCIM_OK);
  assert_int_equal(mcim_store_rollback(a), MCIM_OK);
  assert_int_equal(mcim_store_begin(b), MCIM_OK);
  assert_int_equal(mcim_store_exec(b, "INSERT INTO item (id, n) VALUES (?, ?)", w, 2, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_commit(b), MCIM_OK);
  assert_int_equal(count(a, "item"), 1);
  mcim_store_close(a);
  mcim_store_close(b);
}

/* Threads, one connection each, increment one counter: no update is lost. */
#define THREADS 4
#define INCREMENTS 40

static void *incrementer(void *arg)
{
  const char *path = arg;
  mcim_store_t *st = NULL;
  if (mcim_store_open(path, NULL, &st) != MCIM_OK)
    return (void *)1;
  int done = 0;
  while (done < INCREMENTS) {
    int64_t v = 0;
    mcim_val_t id[] = {MCIM_TEXT("counter")};
    if (mcim_store_begin(st) != MCIM_OK)
      continue; /* busy: retry */
    if (mcim_store_query_int(st, "SELECT n FROM item WHERE id = ?", id, 1, &v) != MCIM_OK) {
      mcim_store_rollback(st);
      break;
    }
    mcim_val_t p[] = {MCIM_INT(v + 1), MCIM_TEXT("counter")};
    if (mcim_store_exec(st, "UPDATE item SET n = ? WHERE id = ?", p, 2, NULL, NULL) != MCIM_OK ||
        mcim_store_commit(st) != MCIM_OK) {
      if (mcim_store_in_txn(st))
        mcim_store_rollback(st);
      continue;
    }
    done++;
  }
  mcim_store_close(st);
  return done == INCREMENTS ? NULL : (void *)1;
}

static void test_threads(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);
  mcim_val_t p[] = {MCIM_TEXT("counter"), MCIM_INT(0)};
  assert_int_equal(mcim_store_exec(st, "INSERT INTO item (id, n) VALUES (?, ?)", p, 2, NULL, NULL),
                   MCIM_OK);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, incrementer, fx->db), 0);
  for (int i = 0; i < THREADS; i++) {
    void *ret = (void *)1;
    pthread_join(t[i], &ret);
    assert_null(ret);
  }
  int64_t v = 0;
  mcim_val_t id[] = {MCIM_TEXT("counter")};
  assert_int_equal(mcim_store_query_int(st, "SELECT n FROM item WHERE id = ?", id, 1, &v), MCIM_OK);
  assert_int_equal(v, THREADS * INCREMENTS);
  mcim_store_close(st);
}

/* ---- placeholder rewriting for PostgreSQL ---- */

static void test_sql_to_dollar(void **state)
{
  (void)state;
  char *out = NULL;
  size_t n = 0;
  assert_int_equal(mcim_store_sql_to_dollar("SELECT a FROM t WHERE x = ? AND y = '?''?' AND"
                                            " \"q?\" = ? -- ?\n AND z IN (?, ?) /* ? */",
                                            &out, &n),
                   MCIM_OK);
  assert_string_equal(out, "SELECT a FROM t WHERE x = $1 AND y = '?''?' AND"
                           " \"q?\" = $2 -- ?\n AND z IN ($3, $4) /* ? */");
  assert_int_equal(n, 4);
  free(out);

  assert_int_equal(mcim_store_sql_to_dollar("VALUES (?,?,?,?,?,?,?,?,?,?,?)", &out, &n), MCIM_OK);
  assert_string_equal(out, "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)");
  assert_int_equal(n, 11);
  free(out);

  /* Unterminated quote or comment: copied, no overrun. */
  assert_int_equal(mcim_store_sql_to_dollar("SELECT '? ", &out, NULL), MCIM_OK);
  assert_string_equal(out, "SELECT '? ");
  free(out);
  assert_int_equal(mcim_store_sql_to_dollar("? /* ?", &out, &n), MCIM_OK);
  assert_string_equal(out, "$1 /* ?");
  free(out);
  assert_int_equal(mcim_store_sql_to_dollar("?-", &out, &n), MCIM_OK);
  assert_string_equal(out, "$1-");
  free(out);
  assert_int_equal(mcim_store_sql_to_dollar(NULL, &out, &n), MCIM_INVALID_ARGUMENT);
}


/* PostgreSQL: the server ends a session (a restart, a network cut). Outside a transaction
 * the next read runs on a new connection; inside one, the transaction fails whole (nothing
 * of it stays, the rest never runs outside it) and the next begin reconnects. SQLite has no
 * connection to lose. */
static void terminate_backend(mcim_store_t *st)
{
  int64_t pid = 0;
  char sql[96];
  assert_int_equal(mcim_store_query_int(st, "SELECT pg_backend_pid()", NULL, 0, &pid), MCIM_OK);
  snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%lld, 10000)", (long long)pid);
  assert_true(pg_fixture_admin(sql));
}

static void test_reconnect(void **state)
{
  struct fx *fx = *state;
  if (!pg)
    return;
  static const char ins[] = "INSERT INTO item (id, n) VALUES (?, ?)";
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);

  terminate_backend(st);
  assert_int_equal(count(st, "item"), 0); /* a read: again, on a new connection */

  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  mcim_val_t a[] = {MCIM_TEXT("a"), MCIM_INT(1)}, b[] = {MCIM_TEXT("b"), MCIM_INT(2)};
  assert_int_equal(mcim_store_exec(st, ins, a, 2, NULL, NULL), MCIM_OK);
  terminate_backend(st);
  assert_int_equal(mcim_store_exec(st, ins, b, 2, NULL, NULL), MCIM_STORE_ERROR);
  assert_int_equal(mcim_store_exec(st, ins, b, 2, NULL, NULL), MCIM_STORE_ERROR);
  assert_non_null(strstr(mcim_store_errmsg(st), "transaction is gone"));
  assert_int_equal(mcim_store_commit(st), MCIM_STORE_ERROR);
  assert_false(mcim_store_in_txn(st));
  assert_int_equal(count(st, "item"), 0);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, b, 2, NULL, NULL), MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK);
  assert_int_equal(count(st, "item"), 1);

  /* a write outside a transaction is not run again (it may have been committed): it fails
   * once, the next call reconnects */
  terminate_backend(st);
  assert_int_equal(mcim_store_exec(st, ins, a, 2, NULL, NULL), MCIM_STORE_ERROR);
  assert_int_equal(mcim_store_exec(st, ins, a, 2, NULL, NULL), MCIM_OK);
  assert_int_equal(count(st, "item"), 2);
  mcim_store_close(st);
}

/* Placeholders next to quoted `?`, comments and `;`, on the engine itself. */
static void test_placeholders_live(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, "CREATE TABLE ph (id TEXT PRIMARY KEY,"
                                              " \"q?\" TEXT, note TEXT)"),
                   MCIM_OK);
  mcim_val_t p[] = {MCIM_TEXT("a"), MCIM_TEXT("?;")};
  assert_int_equal(mcim_store_exec(st,
                                   "INSERT INTO ph (id, \"q?\", note) /* (?, ?) */"
                                   " VALUES (?, '?''s;', ?) -- ? and ;",
                                   p, 2, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
  char got[32] = "";
  mcim_val_t q[] = {MCIM_TEXT("?;")};
  assert_int_equal(mcim_store_query_one(st,
                                        "SELECT id FROM ph WHERE \"q?\" = '?''s;' AND note = ?"
                                        " AND id <> ';?' -- ?",
                                        q, 1, setting_row, got),
                   MCIM_OK);
  assert_string_equal(got, "a");
  /* a trailing `;` is one statement; a second one is refused, even after a comment */
  assert_int_equal(mcim_store_query_one(st, "SELECT id FROM ph WHERE note = ?;", q, 1, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_exec(st, "SELECT id FROM ph; -- x\n DELETE FROM ph", NULL, 0, NULL,
                                   NULL),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(count(st, "ph"), 1);
  /* a `?` in a literal is not a parameter: one given for it is refused */
  assert_int_equal(mcim_store_exec(st, "SELECT id FROM ph WHERE note = '?'", q, 1, NULL, NULL),
                   MCIM_INVALID_ARGUMENT);
  mcim_store_close(st);
}

/* Failures with distinctive bound values: neither errmsg() nor the log (every level, debug
 * included) ever holds one. PostgreSQL's DETAIL lines and its data exceptions quote values;
 * SQLite's messages do not. */
static void test_errmsg_no_values(void **state)
{
  struct fx *fx = *state;
  char logpath[320];
  snprintf(logpath, sizeof(logpath), "%s/store.log", fx->dir);
  FILE *log = fopen(logpath, "w+");
  assert_non_null(log);
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, log);

  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st,
                                          "CREATE TABLE parent (name TEXT PRIMARY KEY);"
                                          "CREATE TABLE v (id TEXT PRIMARY KEY, secret TEXT NOT NULL,"
                                          " n BIGINT CHECK (n >= 0),"
                                          " parent TEXT REFERENCES parent (name))"),
                   MCIM_OK);
  static const char ins[] = "INSERT INTO v (id, secret, n, parent) VALUES (?, ?, ?, ?)";
  mcim_val_t good[] = {MCIM_TEXT("id-Xq7vA"), MCIM_TEXT("secret-Zp3kW"), MCIM_INT(7301946285), MCIM_NULL};
  assert_int_equal(mcim_store_exec(st, ins, good, 4, NULL, NULL), MCIM_OK);
  const char *const values[] = {"id-Xq7vA", "secret-Zp3kW", "7301946285", "-86421357", "parent-Kd9",
                                "cast-Mx2yR"};
  /* unique: PostgreSQL's DETAIL says Key (id)=(id-Xq7vA) already exists */
  assert_int_equal(mcim_store_exec(st, ins, good, 4, NULL, NULL), MCIM_CONFLICT);
  /* not null, check, foreign key: the DETAIL quotes the whole row */
  mcim_val_t nn[] = {MCIM_TEXT("id-2"), MCIM_NULL, MCIM_INT(7301946285), MCIM_NULL};
  assert_int_equal(mcim_store_exec(st, ins, nn, 4, NULL, NULL), MCIM_CONFLICT);
  mcim_val_t ck[] = {MCIM_TEXT("id-3"), MCIM_TEXT("secret-Zp3kW"), MCIM_INT(-86421357), MCIM_NULL};
  assert_int_equal(mcim_store_exec(st, ins, ck, 4, NULL, NULL), MCIM_CONFLICT);
  mcim_val_t fk[] = {MCIM_TEXT("id-4"), MCIM_TEXT("secret-Zp3kW"), MCIM_INT(1),
                     MCIM_TEXT("parent-Kd9")};
  assert_int_equal(mcim_store_exec(st, ins, fk, 4, NULL, NULL), MCIM_CONFLICT);
  assert_null(strstr(mcim_store_errmsg(st), "parent-Kd9"));
  /* a value the engine cannot convert (PostgreSQL: invalid input syntax for type bigint:
   * "cast-Mx2yR"; SQLite converts it to 0) */
  mcim_val_t cast[] = {MCIM_TEXT("cast-Mx2yR")};
  mcim_cause_t rc = mcim_store_exec(st, "SELECT CAST(? AS BIGINT)", cast, 1, NULL, NULL);
  assert_int_equal(rc, pg ? MCIM_STORE_ERROR : MCIM_OK);
  if (pg)
    assert_non_null(strstr(mcim_store_errmsg(st), "invalid input syntax"));
  assert_null(strstr(mcim_store_errmsg(st), "cast-Mx2yR"));
  /* the same inside a transaction, whose log lines are the same */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, ins, good, 4, NULL, NULL), MCIM_CONFLICT);
  assert_null(strstr(mcim_store_errmsg(st), "id-Xq7vA"));
  assert_int_equal(mcim_store_exec(st, ins, ck, 4, NULL, NULL), MCIM_CONFLICT);
  assert_null(strstr(mcim_store_errmsg(st), "secret-Zp3kW"));
  assert_int_equal(mcim_store_rollback(st), MCIM_OK);
  mcim_store_close(st);

  /* A locator's password never reaches the log (a server that is not there; on PostgreSQL
   * also the real server refusing a wrong password). */
  mcim_store_t *none = NULL;
  assert_int_equal(mcim_store_open("postgres://mcim:pw-Hn4sT@127.0.0.1:1/ro?password=pw-Qe8uV",
                                   NULL, &none),
                   MCIM_STORE_ERROR);
  if (pg) {
    char wrong[640];
    const char *at = strchr(fx->db + strlen("postgres://"), '@');
    assert_non_null(at);
    snprintf(wrong, sizeof(wrong), "postgres://mcim:pw-Hn4sT%s", at);
    assert_int_equal(mcim_store_open(wrong, NULL, &none), MCIM_STORE_ERROR);
  }
  assert_null(none);

  fflush(log);
  size_t len = 0;
  uint8_t *text = slurp(logpath, &len);
  assert_non_null(text);
  assert_true(len > 0);
  /* control: the failures were logged, with the locator shown without its password */
  assert_non_null(memmem(text, len, "INSERT INTO v", 13));
  assert_non_null(memmem(text, len, "mcim:***@127.0.0.1:1/ro?password=***", 36));
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
    if (memmem(text, len, values[i], strlen(values[i]))) {
      fprintf(stderr, "value %s found in the log:\n%.*s\n", values[i], (int)len, (char *)text);
      fail();
    }
  assert_null(memmem(text, len, "pw-Hn4sT", 8));
  assert_null(memmem(text, len, "pw-Qe8uV", 8));
  free(text);
  mcim_log_init("test", MCIM_LOG_TEXT,
                getenv("MCIM_TEST_LOG") ? MCIM_LOG_DEBUG : (mcim_log_level_t)(MCIM_LOG_ERROR + 1),
                NULL);
  fclose(log);
}

/* A password in a locator never reaches a log line. */
static void test_locator_for_log(void **state)
{
  (void)state;
  char out[128];
  mcim_store_locator_for_log("postgres://mcim:s3cret@db.example:5432/ro", out, sizeof(out));
  assert_string_equal(out, "postgres://mcim:***@db.example:5432/ro");
  mcim_store_locator_for_log("postgresql://mcim@db/ro", out, sizeof(out));
  assert_string_equal(out, "postgresql://mcim@db/ro");
  mcim_store_locator_for_log("/var/lib/mcim/ro.db", out, sizeof(out));
  assert_string_equal(out, "/var/lib/mcim/ro.db");
  mcim_store_locator_for_log("sqlite:/x/a:b@c.db", out, sizeof(out));
  assert_string_equal(out, "sqlite:/x/a:b@c.db");
  /* libpq also takes the password as a query parameter */
  mcim_store_locator_for_log("postgres://mcim@db/ro?sslmode=require&password=s3cret&x=1", out,
                             sizeof(out));
  assert_string_equal(out, "postgres://mcim@db/ro?sslmode=require&password=***&x=1");
  mcim_store_locator_for_log("postgres://u:p@db/ro?password=s&password=", out, sizeof(out));
  assert_string_equal(out, "postgres://u:***@db/ro?password=***&password=***");
  mcim_store_locator_for_log("postgres://db/ro?password=a-long-secret", out, 30);
  assert_null(strstr(out, "a-long"));
  mcim_store_locator_for_log("postgres://db/ro?password=s3cret", out, 25);
  assert_null(strstr(out, "s3c"));
}

int main(int argc, char **argv)
{
  int rc = store_fixture_init(argc, argv, "test_store");
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_crud_types, setup, teardown),
      cmocka_unit_test_setup_teardown(test_constraints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_only_and_locator, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
      cmocka_unit_test_setup_teardown(test_placeholders_live, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errmsg_no_values, setup, teardown),
      cmocka_unit_test(test_sql_to_dollar),
      cmocka_unit_test(test_locator_for_log),
  };
  const char *group = pg ? "store on postgres" : "store on sqlite";
  return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
