/* The throw-away PostgreSQL server of the tests (scripts/pg.sh, started by the ctest fixture
 * "pg": tests/CMakeLists.txt). MCIM_PG_LOCATOR_FILE names the file its start wrote; a test
 * that needs the server and finds none fails, it never skips.
 *
 * Each test case gets a database of its own (created here, dropped with FORCE at the end),
 * so cases and test programs running at once do not share tables or the writers' lock. */
#ifndef MCIM_TEST_PG_FIXTURE_H
#define MCIM_TEST_PG_FIXTURE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The server's locator (postgres://mcim:PW@127.0.0.1:PORT/mcim), or NULL with the reason on
 * stderr. */
static inline const char *pg_fixture_locator(void)
{
  static char loc[512];
  if (loc[0])
    return loc;
  const char *file = getenv("MCIM_PG_LOCATOR_FILE");
  if (!file || !*file) {
    fprintf(stderr, "MCIM_PG_LOCATOR_FILE is not set: run this test through ctest (fixture pg,"
                    " scripts/pg.sh start DIR)\n");
    return NULL;
  }
  FILE *f = fopen(file, "r");
  if (!f || !fgets(loc, sizeof(loc), f)) {
    fprintf(stderr, "no PostgreSQL server: cannot read %s (did the test pg/start fail?"
                    " scripts/pg.sh start DIR)\n", file);
    if (f)
      fclose(f);
    loc[0] = '\0';
    return NULL;
  }
  fclose(f);
  loc[strcspn(loc, "\r\n")] = '\0';
  return loc;
}

/* The folder of the server's files (data/ in it), for tests that read them. */
static inline bool pg_fixture_server_dir(char *out, size_t len)
{
  const char *file = getenv("MCIM_PG_LOCATOR_FILE");
  if (!file)
    return false;
  char path[512];
  const char *slash = strrchr(file, '/');
  int dlen = slash ? (int)(slash - file) : 1;
  snprintf(path, sizeof(path), "%.*s/server_dir", dlen, slash ? file : ".");
  FILE *f = fopen(path, "r");
  if (f) {
    bool ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return ok;
  }
  snprintf(out, len, "%.*s/server", dlen, slash ? file : ".");
  return true;
}

/* The locator with another database name in place of the last path element. */
static inline bool pg_fixture_locator_for(const char *dbname, char *out, size_t len)
{
  const char *base = pg_fixture_locator();
  if (!base)
    return false;
  const char *slash = strrchr(base, '/');
  if (!slash)
    return false;
  snprintf(out, len, "%.*s/%s", (int)(slash - base), base, dbname);
  return true;
}

static inline void pg_fixture_quiet(void *arg, const char *msg)
{
  (void)arg;
  (void)msg;
}

/* One statement on the server's own database, outside the store API (CREATE DATABASE may
 * not run in a transaction, which the store would wrap a write in). */
static inline bool pg_fixture_admin(const char *sql)
{
  const char *base = pg_fixture_locator();
  if (!base)
    return false;
  PGconn *db = PQconnectdb(base);
  bool ok = PQstatus(db) == CONNECTION_OK;
  if (ok) {
    PQsetNoticeProcessor(db, pg_fixture_quiet, NULL); /* "does not exist, skipping" */
    PGresult *res = PQexec(db, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
      fprintf(stderr, "pg fixture: %s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
  } else {
    fprintf(stderr, "pg fixture: cannot connect: %s", PQerrorMessage(db));
  }
  PQfinish(db);
  return ok;
}

/* A fresh database; its name goes to `name` (room for 64), its locator to `locator`. */
static inline bool pg_fixture_create_db(const char *prefix, char *name, char *locator, size_t len)
{
  static unsigned seq;
  char sql[160];
  snprintf(name, 64, "%s_%ld_%u", prefix, (long)getpid(), ++seq);
  snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
  if (!pg_fixture_admin(sql))
    return false;
  snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
  return pg_fixture_admin(sql) && pg_fixture_locator_for(name, locator, len);
}

static inline void pg_fixture_drop_db(const char *name)
{
  char sql[160];
  if (!name || !*name)
    return;
  snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
  (void)pg_fixture_admin(sql);
}

/* A test of SQL on both engines: `fn` with the locator of a fresh SQLite file in a folder of
 * its own (removed after), or of a fresh database of this server named after `prefix`
 * (dropped after). For assertions inside `fn`: what they leave is removed by the next run. */
static inline void pg_fixture_run_sqlite(const char *prefix, void (*fn)(const char *locator))
{
  char dir[96], path[128], side[140];
  snprintf(dir, sizeof(dir), "/tmp/mcim-%s-XXXXXX", prefix);
  if (!mkdtemp(dir)) {
    fprintf(stderr, "no temporary folder for %s\n", prefix);
    abort();
  }
  snprintf(path, sizeof(path), "%s/role.db", dir);
  fn(path);
  unlink(path);
  snprintf(side, sizeof(side), "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof(side), "%s-shm", path);
  unlink(side);
  rmdir(dir);
}

static inline void pg_fixture_run_postgres(const char *prefix, void (*fn)(const char *locator))
{
  char dbname[64], locator[600];
  if (!pg_fixture_create_db(prefix, dbname, locator, sizeof(locator))) {
    fprintf(stderr, "no PostgreSQL database for %s\n", prefix);
    abort();
  }
  fn(locator);
  pg_fixture_drop_db(dbname);
}

#endif
