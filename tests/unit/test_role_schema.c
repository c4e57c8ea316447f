/* Every role kind's schema (the common tables and the kind's own), and the device agent's,
 * made on a fresh database of each engine: SQLite and PostgreSQL (the server of the ctest
 * fixture "pg", tests/unit/pg_fixture.h). The migrations must apply on both, again without
 * a change, and give the same tables with the same columns of the same types, BIGINT, TEXT
 * and BYTEA only (docs/store.md, "Portable SQL"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "mcim/role.h"
#include "mcim/store.h"
#include "pg_fixture.h"
#include "roles/role_priv.h"

/* What to migrate: a role kind (with the common tables), or the device agent (kind NULL). */
struct subject {
  const struct mcim_role_kind *kind;
};

static mcim_cause_t migrate(mcim_store_t *st, const struct subject *s)
{
  if (!s->kind)
    return dev_store_migrate(st);
  mcim_cause_t rc = mcim_role_common_migrate(st);
  if (rc == MCIM_OK && s->kind->nmigrations)
    rc = mcim_store_migrate(st, s->kind->kind, s->kind->migrations, s->kind->nmigrations);
  return rc;
}

/* "table.column type" lines, sorted, of every table but schema_version. */
struct schema {
  char *text;
  size_t len, cap;
  int columns;
};

static mcim_cause_t add_column(const mcim_row_t *row, void *arg)
{
  struct schema *sc = arg;
  char line[256];
  int n = snprintf(line, sizeof(line), "%s.%s %s\n", mcim_row_text(row, 0), mcim_row_text(row, 1),
                   mcim_row_text(row, 2));
  assert_true(n > 0 && (size_t)n < sizeof(line));
  if (sc->len + (size_t)n + 1 > sc->cap) {
    sc->cap = (sc->cap + (size_t)n + 1) * 2;
    sc->text = realloc(sc->text, sc->cap);
    assert_non_null(sc->text);
  }
  memcpy(sc->text + sc->len, line, (size_t)n + 1);
  sc->len += (size_t)n;
  sc->columns++;
  return MCIM_OK;
}

static void read_schema(mcim_store_t *st, bool pg, struct schema *sc)
{
  static const char sqlite_sql[] =
      "SELECT m.name, p.name, lower(p.type) FROM sqlite_master AS m, pragma_table_info(m.name) AS p"
      " WHERE m.type = 'table' AND m.name <> 'schema_version' ORDER BY m.name, p.name";
  static const char pg_sql[] =
      "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT), CAST(data_type AS TEXT)"
      " FROM information_schema.columns WHERE table_schema = 'public'"
      " AND table_name <> 'schema_version' ORDER BY 1, 2";
  memset(sc, 0, sizeof(*sc));
  assert_int_equal(mcim_store_exec(st, pg ? pg_sql : sqlite_sql, NULL, 0, add_column, sc), MCIM_OK);
  assert_true(sc->columns > 0);
}

static void check_types(const struct schema *sc, const char *what)
{
  for (const char *line = sc->text; line && *line;) {
    const char *type = strchr(line, ' ');
    const char *end = strchr(line, '\n');
    assert_non_null(type);
    assert_non_null(end);
    size_t n = (size_t)(end - type - 1);
    bool ok = (n == 6 && strncmp(type + 1, "bigint", 6) == 0) ||
              (n == 4 && strncmp(type + 1, "text", 4) == 0) ||
              (n == 5 && strncmp(type + 1, "bytea", 5) == 0);
    if (!ok) {
      fprintf(stderr, "%s: a column outside BIGINT, TEXT, BYTEA: %.*s\n", what,
                      (int)(end - line), line);
      fail();
    }
    line = end + 1;
  }
}

static int64_t version(mcim_store_t *st, const char *component)
{
  int64_t v = -1;
  assert_int_equal(mcim_store_schema_version(st, component, &v), MCIM_OK);
  return v;
}

static void check_versions(mcim_store_t *st, const struct subject *s)
{
  if (!s->kind)
    return; /* the device's steps are its own business: applied once, checked by rerun */
  assert_true(version(st, "common") >= 1);
  assert_int_equal(version(st, s->kind->kind), (int64_t)s->kind->nmigrations);
}

/* One subject on both engines: same schema, portable types, idempotent. */
static void one_subject(const struct subject *s)
{
  const char *what = s->kind ? s->kind->kind : "device";
  struct schema on[2];
  char dir[] = "/tmp/mcim-schema-XXXXXX";
  char path[64], dbname[64], locator[600];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/role.db", dir);
  assert_true(pg_fixture_create_db("schema", dbname, locator, sizeof(locator)));

  for (int e = 0; e < 2; e++) {
    bool pg = e == 1;
    mcim_store_t *st = NULL;
    assert_int_equal(mcim_store_open(pg ? locator : path, NULL, &st), MCIM_OK);
    assert_string_equal(mcim_store_backend(st), pg ? "postgres" : "sqlite");
    mcim_cause_t rc = migrate(st, s);
    if (rc != MCIM_OK) {
      fprintf(stderr, "%s on %s: migration failed: %s\n", what, mcim_store_backend(st),
              mcim_store_errmsg(st));
      fail();
    }
    check_versions(st, s);
    mcim_store_close(st);
    /* again, as at every start: nothing to do */
    assert_int_equal(mcim_store_open(pg ? locator : path, NULL, &st), MCIM_OK);
    assert_int_equal(migrate(st, s), MCIM_OK);
    check_versions(st, s);
    read_schema(st, pg, &on[e]);
    check_types(&on[e], what);
    mcim_store_close(st);
  }
  if (strcmp(on[0].text, on[1].text) != 0) {
    fprintf(stderr, "%s: the engines' schemas differ\n--- sqlite\n%s--- postgres\n%s", what,
            on[0].text, on[1].text);
    fail();
  }
  free(on[0].text);
  free(on[1].text);
  pg_fixture_drop_db(dbname);
  unlink(path);
  char wal[80];
  snprintf(wal, sizeof(wal), "%s-wal", path);
  unlink(wal);
  snprintf(wal, sizeof(wal), "%s-shm", path);
  unlink(wal);
  rmdir(dir);
}

static void test_role_kinds(void **state)
{
  (void)state;
  size_t n = 0;
  for (size_t i = 0; mcim_role_kinds[i]; i++, n++) {
    struct subject s = {mcim_role_kinds[i]};
    one_subject(&s);
  }
  assert_true(n >= 5); /* ro, vno, sho, pva, m2mes */
}

/* Queries that run per procedure, or under the writers' lock each minute, find their rows by
 * index, not by reading the whole table (SQLite's plan; bench/drf_scale.sh checks the RO's on
 * PostgreSQL): the SHO's discard (its other subscriptions of the device), the RO's PCID
 * renewal, the PVA's purges. */
struct plan {
  bool indexed, scan;
};

/* SQLite's plan lines: "SEARCH t USING [COVERING] INDEX i (...)" or "SCAN t". */
static mcim_cause_t plan_row(const mcim_row_t *row, void *arg)
{
  struct plan *pl = arg;
  const char *detail = mcim_row_text(row, 3);
  if (detail && strncmp(detail, "SEARCH", 6) == 0 && strstr(detail, "INDEX"))
    pl->indexed = true;
  if (detail && strncmp(detail, "SCAN", 4) == 0)
    pl->scan = true;
  return MCIM_OK;
}

static void test_queries_by_device_indexed(void **state)
{
  (void)state;
  static const struct {
    const char *kind, *sql;
  } queries[] = {
      {"sho", "SELECT COUNT(*) FROM auc WHERE device = 'd' AND imsi <> 'i' AND state IN"
              " ('pending', 'active', 'standby')"},
      {"ro", "SELECT imsi FROM auc WHERE device = 'd' AND state = 'active'"},
      /* the purges, each minute, under the writers' lock */
      {"pva", "DELETE FROM validations WHERE state <> 'pending' AND created_us < 5 * 1000000"},
      {"pva", "DELETE FROM revocations WHERE created < 5 - 86400"},
  };
  for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
    const struct mcim_role_kind *kind = NULL;
    for (size_t i = 0; mcim_role_kinds[i]; i++)
      if (strcmp(mcim_role_kinds[i]->kind, queries[q].kind) == 0)
        kind = mcim_role_kinds[i];
    assert_non_null(kind);
    char dir[] = "/tmp/mcim-plan-XXXXXX", path[64], sql[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/role.db", dir);
    mcim_store_t *st = NULL;
    assert_int_equal(mcim_store_open(path, NULL, &st), MCIM_OK);
    struct subject s = {kind};
    assert_int_equal(migrate(st, &s), MCIM_OK);
    struct plan pl = {false, false};
    snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", queries[q].sql);
    assert_int_equal(mcim_store_exec(st, sql, NULL, 0, plan_row, &pl), MCIM_OK);
    if (!pl.indexed || pl.scan)
      fail_msg("%s: %s reads the whole table (no index)", queries[q].kind, queries[q].sql);
    mcim_store_close(st);
    char f[96];
    const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
      snprintf(f, sizeof(f), "%s%s", path, sfx[i]);
      unlink(f);
    }
    rmdir(dir);
  }
}

static void test_device(void **state)
{
  (void)state;
  struct subject s = {NULL};
  one_subject(&s);
}

/* Instances of one role starting together on one PostgreSQL database: each migrates at
 * once, every step is applied once, every instance starts. */
#define INSTANCES 3

static void test_instances_migrate_concurrently(void **state)
{
  (void)state;
  for (size_t k = 0; mcim_role_kinds[k]; k++) {
    char dbname[64], locator[600];
    pid_t pids[INSTANCES];
    int go[2];
    assert_true(pg_fixture_create_db("schema", dbname, locator, sizeof(locator)));
    assert_int_equal(pipe(go), 0);
    fflush(NULL);
    for (int i = 0; i < INSTANCES; i++) {
      pids[i] = fork();
      assert_true(pids[i] >= 0);
      if (pids[i] == 0) {
        char c;
        mcim_store_t *st = NULL;
        struct subject s = {mcim_role_kinds[k]};
        close(go[1]);
        bool ok = mcim_store_open(locator, NULL, &st) == MCIM_OK;
        ok = read(go[0], &c, 1) == 0 && ok; /* all connected, then all at once */
        ok = ok && migrate(st, &s) == MCIM_OK;
        mcim_store_close(st);
        _exit(ok ? 0 : 1);
      }
    }
    close(go[0]);
    usleep(100 * 1000);
    close(go[1]);
    for (int i = 0; i < INSTANCES; i++) {
      int status = 0;
      assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
      assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    mcim_store_t *st = NULL;
    struct subject s = {mcim_role_kinds[k]};
    assert_int_equal(mcim_store_open(locator, NULL, &st), MCIM_OK);
    int64_t rows = -1;
    assert_int_equal(mcim_store_query_int(st, "SELECT COUNT(*) FROM schema_version", NULL, 0,
                                          &rows),
                     MCIM_OK);
    assert_int_equal(rows, s.kind->nmigrations ? 2 : 1); /* common and the kind */
    check_versions(st, &s);
    mcim_store_close(st);
    pg_fixture_drop_db(dbname);
  }
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT,
                getenv("MCIM_TEST_LOG") ? MCIM_LOG_DEBUG : (mcim_log_level_t)(MCIM_LOG_ERROR + 1),
                NULL);
  if (!pg_fixture_locator())
    return 1; /* no server: a failure, never a skip */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_role_kinds),
      cmocka_unit_test(test_device),
      cmocka_unit_test(test_queries_by_device_indexed),
      cmocka_unit_test(test_instances_migrate_concurrently),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
