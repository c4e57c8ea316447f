/* Store: the statement cache through the neutral interface: more distinct statements than it
 * holds (outside and inside a transaction), the same SQL run again while a run of it is still
 * going, one SQL text with a parameter bound with different types in turn, and on PostgreSQL
 * the server's prepared statements (one per SQL text, at most 64; a failing statement prepared
 * once; what every transaction runs prepared once a session). Moved from test_store.c.
 *
 * The same cases run on both backends: `test_store_cache` on SQLite, `test_store_cache
 * postgres` on the PostgreSQL server of the ctest fixture "pg" (tests/unit/store_fixture.h,
 * pg_fixture.h; each case gets a database of its own). */
#define _XOPEN_SOURCE 700 /* nftw (store_fixture.h) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>

#include "mcim/store.h"
#include "store_fixture.h"

/* ---- statement cache ---- */

struct nest {
  mcim_store_t *st;
  int outer, inner;
};

static mcim_cause_t inner_row(const mcim_row_t *row, void *arg)
{
  (void)row;
  ((struct nest *)arg)->inner++;
  return MCIM_OK;
}

static mcim_cause_t outer_row(const mcim_row_t *row, void *arg)
{
  struct nest *n = arg;
  n->outer++;
  /* The same SQL again, while the outer run of it is still going. */
  mcim_val_t p[] = {MCIM_INT(mcim_row_int(row, 0))};
  return mcim_store_exec(n->st, "SELECT n FROM item WHERE n >= ? ORDER BY n", p, 1, inner_row, n);
}

/* How many times the session ran its prepared statement `name` (-1: it holds none). */
static int64_t fixed_runs(mcim_store_t *st, const char *name)
{
  int64_t n = -1;
  mcim_val_t p[] = {MCIM_TEXT(name)};
  if (mcim_store_query_int(st,
                           "SELECT COALESCE(SUM(generic_plans + custom_plans), -1) FROM"
                           " pg_prepared_statements WHERE name = ?",
                           p, 1, &n) != MCIM_OK)
    return -2;
  return n;
}

static void test_stmt_cache(void **state)
{
  struct fx *fx = *state;
  mcim_store_t *st = open_db(fx->db);
  assert_int_equal(mcim_store_exec_script(st, item_sql), MCIM_OK);
  /* More distinct statements than the cache holds, each run several times. */
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < 80; i++) {
      char sql[128], id[32];
      snprintf(sql, sizeof(sql), "INSERT INTO item (id, n) VALUES (?, ? + %d)", i);
      snprintf(id, sizeof(id), "%d-%d", round, i);
      mcim_val_t p[] = {MCIM_TEXT(id), MCIM_INT(round * 1000)};
      assert_int_equal(mcim_store_exec(st, sql, p, 2, NULL, NULL), MCIM_OK);
    }
  assert_int_equal(count(st, "item"), 240);
  int64_t v = 0;
  mcim_val_t id[] = {MCIM_TEXT("2-79")};
  assert_int_equal(mcim_store_query_int(st, "SELECT n FROM item WHERE id = ?", id, 1, &v), MCIM_OK);
  assert_int_equal(v, 2079);

  assert_int_equal(mcim_store_exec(st, "DELETE FROM item WHERE n >= ?", (mcim_val_t[]){MCIM_INT(3)},
                                   1, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(count(st, "item"), 3); /* n = 0, 1, 2 */
  struct nest n = {st, 0, 0};
  mcim_val_t zero[] = {MCIM_INT(0)};
  assert_int_equal(mcim_store_exec(st, "SELECT n FROM item WHERE n >= ? ORDER BY n", zero, 1,
                                   outer_row, &n),
                   MCIM_OK);
  assert_int_equal(n.outer, 3);
  assert_int_equal(n.inner, 3 + 2 + 1);

  /* More distinct statements than the cache holds inside one transaction (PostgreSQL runs
   * the ones it cannot cache unnamed there), then the cached ones again. */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 80; i++) {
      char sql[128];
      int64_t got = -1;
      snprintf(sql, sizeof(sql), "SELECT COUNT(*) + %d FROM item WHERE n >= ?", i);
      assert_int_equal(mcim_store_query_int(st, sql, zero, 1, &got), MCIM_OK);
      assert_int_equal(got, 3 + i);
    }
  assert_int_equal(mcim_store_commit(st), MCIM_OK);
  /* One SQL text with a parameter bound with different types in turn. */
  static const char typed[] = "SELECT COUNT(*) FROM item WHERE ? IS NOT NULL AND n >= 0";
  mcim_val_t as_int[] = {MCIM_INT(1)}, as_text[] = {MCIM_TEXT("x")}, as_null[] = {MCIM_NULL};
  int64_t got = -1;
  assert_int_equal(mcim_store_query_int(st, typed, as_int, 1, &got), MCIM_OK);
  assert_int_equal(got, 3);
  assert_int_equal(mcim_store_query_int(st, typed, as_text, 1, &got), MCIM_OK);
  assert_int_equal(got, 3);
  assert_int_equal(mcim_store_query_int(st, typed, as_null, 1, &got), MCIM_OK);
  assert_int_equal(got, 0);
  mcim_store_close(st);

  if (pg) {
    /* The server holds one prepared statement per SQL text (and types), at most 64, beside
     * the fixed ones (mcimx_*, below). */
    static const char prepared[] =
        "SELECT COUNT(*) FROM pg_prepared_statements WHERE name NOT LIKE 'mcimx%'";
    st = open_db(fx->db);
    for (int i = 0; i < 5; i++)
      assert_int_equal(mcim_store_query_int(st, "SELECT COUNT(*) FROM item WHERE n >= ?", zero, 1,
                                            &got),
                       MCIM_OK);
    assert_int_equal(mcim_store_query_int(st, prepared, NULL, 0, &got), MCIM_OK);
    assert_int_equal(got, 2); /* that one and this one */
    /* a statement failing from its first run on (an idempotent retry's conflict) is
     * prepared once too, outside and inside a transaction */
    mcim_val_t dup[] = {MCIM_TEXT("0-0"), MCIM_INT(0)};
    for (int i = 0; i < 5; i++) {
      bool txn = i % 2;
      if (txn)
        assert_int_equal(mcim_store_begin(st), MCIM_OK);
      assert_int_equal(mcim_store_exec(st, "INSERT INTO item (id, n) VALUES (?, ?)", dup, 2, NULL,
                                       NULL),
                       MCIM_CONFLICT);
      if (txn)
        assert_int_equal(mcim_store_rollback(st), MCIM_OK);
    }
    assert_int_equal(mcim_store_query_int(st, prepared, NULL, 0, &got), MCIM_OK);
    assert_int_equal(got, 3);
    for (int i = 0; i < 80; i++) {
      char sql[64];
      snprintf(sql, sizeof(sql), "SELECT %d + ?", i);
      assert_int_equal(mcim_store_query_int(st, sql, zero, 1, &got), MCIM_OK);
      assert_int_equal(got, i);
    }
    assert_int_equal(mcim_store_query_int(st, prepared, NULL, 0, &got), MCIM_OK);
    assert_int_equal(got, 64);

    /* What every transaction runs (BEGIN, SET LOCAL, the writers' lock, COMMIT, the
     * savepoints) is prepared once a session and run as prepared: begun, batched (relaxed or
     * not), and the lock of a write outside a transaction. */
    static const char *const names[] = {"mcimx_begin",  "mcimx_relax",     "mcimx_lock",
                                        "mcimx_commit", "mcimx_savepoint", "mcimx_release"};
    static const int64_t runs[] = {4, 2, 5, 4, 2, 2};
    int64_t before[6], after[6];
    for (int k = 0; k < 6; k++)
      before[k] = fixed_runs(st, names[k]);
    for (int i = 0; i < 4; i++) {
      char key[16];
      snprintf(key, sizeof(key), "fx-%d", i);
      mcim_val_t row[] = {MCIM_TEXT(key), MCIM_INT(i)};
      if (i == 0)
        assert_int_equal(mcim_store_begin(st), MCIM_OK);
      else if (i == 1)
        assert_int_equal(mcim_store_begin_relaxed(st), MCIM_OK);
      else
        assert_int_equal(mcim_store_begin_batch(st, i == 3), MCIM_OK);
      assert_int_equal(mcim_store_exec(st, "INSERT INTO item (id, n) VALUES (?, ?)", row, 2, NULL,
                                       NULL),
                       MCIM_OK);
      assert_int_equal(mcim_store_commit(st), MCIM_OK);
    }
    mcim_val_t gone[] = {MCIM_TEXT("fx-0")};
    assert_int_equal(mcim_store_exec(st, "DELETE FROM item WHERE id = ?", gone, 1, NULL, NULL),
                     MCIM_OK);
    for (int k = 0; k < 6; k++) {
      after[k] = fixed_runs(st, names[k]);
      assert_true(before[k] >= 0);
      assert_int_equal(after[k] - before[k], runs[k]);
    }
    assert_int_equal(count(st, "item"), 3 + 3);
    mcim_store_close(st);
  }
}

int main(int argc, char **argv)
{
  int rc = store_fixture_init(argc, argv, "test_store_cache");
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stmt_cache, setup, teardown),
  };
  const char *group = pg ? "store cache on postgres" : "store cache on sqlite";
  return cmocka_run_group_tests_name(group, tests, NULL, NULL);
}
