/* SQLite backend: the embedded default, one database file per role instance.
 *
 * Durability: WAL journal with synchronous=FULL, so a COMMIT that returned is on
 * disk (the WAL is fsynced at every commit), and a crash rolls back to the last
 * commit. Writers serialize at BEGIN IMMEDIATE, waiting up to busy_timeout, so a
 * read-then-write transaction never fails half-way on a lock upgrade.
 *
 * Threads: a connection is opened with SQLITE_OPEN_NOMUTEX (no per-call locking)
 * and its statement cache is unguarded, so a handle belongs to one thread at a
 * time; open one per thread. The library must still be built thread-safe
 * (checked at open), because handles of different threads share its globals.
 *
 * Statements are prepared once per connection and cached by SQL text; values are
 * always bound (SQLITE_STATIC: no copies of bound data), and the bindings are
 * cleared after every run. The transaction control statements (BEGIN IMMEDIATE, COMMIT,
 * ROLLBACK, the two synchronous levels) are prepared once per connection too, apart from
 * that cache: sqlite3_exec parsed them again at every transaction (2% of the daemons'
 * samples, docs/performance.md). */
#include "mcim/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/log.h"

/* A role's handles go from thread to thread (mcim_role_store takes one from a pool), so one
 * handle's cache serves every handler of its role: under loadgen the RO runs 43 distinct
 * statements, an SHO 39. At 32 slots the six daemons prepared 877 statements again in a loadgen
 * run (400 procedures, change-old-sho); at 64, 81. */
#define STMT_CACHE_SIZE 64
#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* Result rows up to this width are described on the stack. */
#define ROW_STACK_COLS 16

struct cached_stmt {
  char *sql;
  size_t len; /* strlen(sql): most entries are passed over on their length, not a strcmp */
  sqlite3_stmt *stmt;
  uint64_t used; /* LRU tick */
  bool busy;     /* running now (an exec from inside a row callback) */
};

/* The transaction control statements, prepared at their first use (ctl_sql). */
enum ctl { CTL_BEGIN, CTL_COMMIT, CTL_ROLLBACK, CTL_DURABLE, CTL_RELAXED, CTL_COUNT };

static const char *const ctl_sql[CTL_COUNT] = {
    /* IMMEDIATE takes the write lock now: writers queue here (busy_timeout), not at their
     * first write, where a deferred transaction could only fail. */
    [CTL_BEGIN] = "BEGIN IMMEDIATE",
    [CTL_COMMIT] = "COMMIT",
    [CTL_ROLLBACK] = "ROLLBACK",
    [CTL_DURABLE] = "PRAGMA synchronous = FULL",
    [CTL_RELAXED] = "PRAGMA synchronous = NORMAL",
};

struct sqlite_conn {
  sqlite3 *db;
  sqlite3_stmt *ctl[CTL_COUNT];
  struct cached_stmt cache[STMT_CACHE_SIZE];
  uint64_t tick;
  char errmsg[256];
};

static void set_err(struct sqlite_conn *c, const char *msg)
{
  snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg ? msg : "");
}

static void set_db_err(struct sqlite_conn *c)
{
  set_err(c, sqlite3_errmsg(c->db));
}

static mcim_cause_t map_rc(int rc)
{
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE:
    return MCIM_OK;
  case SQLITE_CONSTRAINT:
    return MCIM_CONFLICT;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return MCIM_STORE_BUSY;
  case SQLITE_NOMEM:
    return MCIM_NO_MEMORY;
  case SQLITE_TOOBIG:
    return MCIM_TOO_LARGE;
  case SQLITE_RANGE:
  case SQLITE_MISUSE:
    return MCIM_INVALID_ARGUMENT;
  default:
    return MCIM_STORE_ERROR;
  }
}

/* Pragmas that must hold on every connection. journal_mode answers with the mode
 * it got, which is checked: a file system without shared memory would silently
 * stay in rollback mode. */
static mcim_cause_t configure(struct sqlite_conn *c, const mcim_store_opts_t *opts)
{
  static const char *const pragmas[] = {
      "PRAGMA foreign_keys = ON",
      "PRAGMA synchronous = FULL",
      /* Deleted rows (old sealed blobs, removed subscribers) are overwritten, not
       * left in free pages. */
      "PRAGMA secure_delete = ON",
      /* The schema is ours; do not run functions named in it with extra rights. */
      "PRAGMA trusted_schema = OFF",
  };
  int timeout = opts && opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS;
  sqlite3_stmt *stmt = NULL;
  mcim_cause_t rc = MCIM_STORE_ERROR;
  int src;

  sqlite3_extended_result_codes(c->db, 1);
  if (sqlite3_busy_timeout(c->db, timeout) != SQLITE_OK)
    goto cleanup;
  for (size_t i = 0; i < sizeof(pragmas) / sizeof(pragmas[0]); i++)
    if (sqlite3_exec(c->db, pragmas[i], NULL, NULL, NULL) != SQLITE_OK)
      goto cleanup;
  if (opts && opts->read_only) {
    rc = MCIM_OK;
    goto cleanup;
  }
  src = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
  /* The switch to WAL needs the file's exclusive lock, and SQLite answers SQLITE_BUSY at once,
   * without its busy handler, when another connection is opening the same fresh file (a
   * handler there could deadlock): processes that open a new database together (instances
   * of a role starting at once; test_store_durability's test_migrate_concurrent, 2 opens in
   * 800) failed with "database is locked". Asked again for up to the busy timeout: the mode
   * is the file's, so once one of them switched, the others find WAL. */
  for (int waited = 0; src == SQLITE_OK; waited += 10) {
    src = sqlite3_step(stmt);
    if ((src & 0xff) != SQLITE_BUSY || waited >= timeout)
      break;
    sqlite3_reset(stmt);
    sqlite3_sleep(10);
    src = SQLITE_OK;
  }
  if (src != SQLITE_ROW) {
    rc = map_rc(src);
    goto cleanup;
  }
  const unsigned char *mode = sqlite3_column_text(stmt, 0);
  if (!mode || strcmp((const char *)mode, "wal") != 0) {
    set_err(c, "database did not switch to WAL journal mode");
    rc = MCIM_STORE_ERROR;
    goto cleanup_keep_msg;
  }
  rc = MCIM_OK;

cleanup:
  if (rc != MCIM_OK)
    set_db_err(c);
cleanup_keep_msg:
  sqlite3_finalize(stmt);
  return rc;
}

/* The database holds subscriber data and sealed secrets: create it 0600 (SQLite
 * gives the -wal and -shm files the same mode). */
/* Make the database file private (0600) before anything is written to it; SQLite gives
 * the -wal and -shm files the mode of the database file. chmod() and not open()+close():
 * closing any descriptor of a file drops every POSIX lock this process holds on it, so an
 * open()/close() here would silently unlock the connections other threads have open
 * (SQLite's "how to corrupt" list, section 2.2) and break them with disk I/O errors. */
static void make_private(const char *path)
{
  if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
    return;
  if (chmod(path, 0600) != 0)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_IO_ERROR, "store sqlite: cannot chmod 600 %s",
                   path);
}

static void sqlite_close(void *conn)
{
  struct sqlite_conn *c = conn;
  if (!c)
    return;
  for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
    sqlite3_finalize(c->cache[i].stmt);
    free(c->cache[i].sql);
  }
  for (size_t i = 0; i < CTL_COUNT; i++)
    sqlite3_finalize(c->ctl[i]);
  /* The last connection to close checkpoints the WAL into the database file. */
  sqlite3_close_v2(c->db);
  free(c);
}

static mcim_cause_t sqlite_open(const char *target, const mcim_store_opts_t *opts, void **conn)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  struct sqlite_conn *c = NULL;
  bool ro = opts && opts->read_only;
  int flags = (ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
              SQLITE_OPEN_NOMUTEX;

  if (!target || !conn)
    return MCIM_INVALID_ARGUMENT;
  *conn = NULL;
  if (!sqlite3_threadsafe()) {
    mcim_log_error("store sqlite: the SQLite library is built without thread safety");
    return MCIM_STORE_ERROR;
  }
  c = calloc(1, sizeof(*c));
  if (!c)
    goto cleanup;
  int src = sqlite3_open_v2(target, &c->db, flags, NULL);
  if (src == SQLITE_OK && !ro)
    make_private(target);
  if (src != SQLITE_OK) {
    rc = map_rc(src);
    if (rc == MCIM_OK || rc == MCIM_INVALID_ARGUMENT)
      rc = MCIM_STORE_ERROR;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "store sqlite: cannot open %s: %s", target,
                   c->db ? sqlite3_errmsg(c->db) : "out of memory");
    goto cleanup;
  }
  rc = configure(c, opts);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "store sqlite: cannot set up %s: %s", target,
                   c->errmsg);
    goto cleanup;
  }
  *conn = c;
  c = NULL;

cleanup:
  sqlite_close(c);
  return rc;
}

static mcim_cause_t run_simple(struct sqlite_conn *c, const char *sql)
{
  char *err = NULL;
  int src = sqlite3_exec(c->db, sql, NULL, NULL, &err);
  if (src != SQLITE_OK)
    set_err(c, err ? err : sqlite3_errmsg(c->db));
  sqlite3_free(err);
  return map_rc(src);
}

/* One transaction control statement, as sqlite3_exec would run it (the same result codes
 * and message), from its prepared statement. */
static mcim_cause_t run_ctl(struct sqlite_conn *c, enum ctl which)
{
  sqlite3_stmt **stmt = &c->ctl[which];
  int src = SQLITE_OK;
  if (!*stmt)
    src = sqlite3_prepare_v3(c->db, ctl_sql[which], -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
  if (src == SQLITE_OK) {
    src = sqlite3_step(*stmt);
    if (src == SQLITE_DONE || src == SQLITE_ROW)
      src = SQLITE_OK;
    else
      set_db_err(c); /* before the reset: the step's message */
    sqlite3_reset(*stmt);
  } else {
    set_db_err(c);
  }
  return map_rc(src);
}

static mcim_cause_t sqlite_begin(void *conn) { return run_ctl(conn, CTL_BEGIN); }

static mcim_cause_t sqlite_commit(void *conn) { return run_ctl(conn, CTL_COMMIT); }

static mcim_cause_t sqlite_rollback(void *conn)
{
  struct sqlite_conn *c = conn;
  /* Some errors (I/O, disk full) end the transaction by themselves. */
  if (sqlite3_get_autocommit(c->db))
    return MCIM_OK;
  return run_ctl(c, CTL_ROLLBACK);
}

static mcim_cause_t sqlite_exec_script(void *conn, const char *sql)
{
  return run_simple(conn, sql);
}

static int64_t sqlite_changes(void *conn)
{
  struct sqlite_conn *c = conn;
  return (int64_t)sqlite3_changes64(c->db);
}

static const char *sqlite_errmsg(void *conn)
{
  const struct sqlite_conn *c = conn;
  return c ? c->errmsg : "";
}

static bool only_space(const char *s)
{
  for (; s && *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != ';')
      return false;
  return true;
}

static mcim_cause_t prepare(struct sqlite_conn *c, const char *sql, bool persistent,
                            sqlite3_stmt **out)
{
  const char *tail = NULL;
  int src = sqlite3_prepare_v3(c->db, sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0, out,
                               &tail);
  if (src != SQLITE_OK) {
    set_db_err(c);
    return map_rc(src);
  }
  if (!*out || !only_space(tail)) {
    /* exec runs exactly one statement; several belong in exec_script. */
    sqlite3_finalize(*out);
    *out = NULL;
    set_err(c, "exactly one SQL statement expected");
    return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

/* Find or prepare a statement. A cached one already running (a nested exec of the
 * same SQL from a row callback) is not reused: a private one is returned and
 * *slot is NULL, telling the caller to finalize it. */
static mcim_cause_t get_stmt(struct sqlite_conn *c, const char *sql, sqlite3_stmt **stmt,
                             struct cached_stmt **slot)
{
  struct cached_stmt *victim = NULL;
  size_t len = strlen(sql);
  *slot = NULL;
  for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
    struct cached_stmt *e = &c->cache[i];
    if (e->sql && e->len == len && memcmp(e->sql, sql, len) == 0) {
      if (e->busy)
        return prepare(c, sql, false, stmt);
      e->used = ++c->tick;
      *stmt = e->stmt;
      *slot = e;
      return MCIM_OK;
    }
    /* Least recently used; an empty slot has used == 0 and wins. */
    if (!e->busy && (!victim || e->used < victim->used))
      victim = e;
  }
  mcim_cause_t rc = prepare(c, sql, victim != NULL, stmt);
  if (rc != MCIM_OK || !victim)
    return rc;
  char *copy = malloc(len + 1);
  if (!copy)
    return MCIM_OK; /* run uncached */
  memcpy(copy, sql, len + 1);
  sqlite3_finalize(victim->stmt);
  free(victim->sql);
  victim->sql = copy;
  victim->len = len;
  victim->stmt = *stmt;
  victim->used = ++c->tick;
  *slot = victim;
  return MCIM_OK;
}

static mcim_cause_t bind_params(struct sqlite_conn *c, sqlite3_stmt *stmt,
                                const mcim_val_t *params, size_t nparams)
{
  int want = sqlite3_bind_parameter_count(stmt);
  if ((size_t)want != nparams) {
    char msg[96];
    snprintf(msg, sizeof(msg), "statement has %d parameters, %zu given", want, nparams);
    set_err(c, msg);
    return MCIM_INVALID_ARGUMENT;
  }
  for (size_t i = 0; i < nparams; i++) {
    const mcim_val_t *v = &params[i];
    int idx = (int)i + 1, src;
    switch (v->type) {
    case MCIM_VAL_NULL:
      src = sqlite3_bind_null(stmt, idx);
      break;
    case MCIM_VAL_INT:
      src = sqlite3_bind_int64(stmt, idx, v->i);
      break;
    case MCIM_VAL_TEXT:
      src = v->s ? sqlite3_bind_text(stmt, idx, v->s, -1, SQLITE_STATIC)
                 : sqlite3_bind_null(stmt, idx);
      break;
    case MCIM_VAL_BLOB:
      if (v->len == 0)
        src = sqlite3_bind_zeroblob(stmt, idx, 0); /* empty, not NULL */
      else if (!v->p)
        src = SQLITE_MISUSE;
      else
        src = sqlite3_bind_blob64(stmt, idx, v->p, (sqlite3_uint64)v->len, SQLITE_STATIC);
      break;
    default:
      src = SQLITE_MISUSE;
      break;
    }
    if (src != SQLITE_OK) {
      char msg[96];
      snprintf(msg, sizeof(msg), "cannot bind parameter %d", idx);
      set_err(c, msg);
      return map_rc(src);
    }
  }
  return MCIM_OK;
}

static const uint8_t empty_blob[1];

static void read_row(sqlite3_stmt *stmt, size_t ncols, mcim_val_t *vals)
{
  for (size_t i = 0; i < ncols; i++) {
    int col = (int)i;
    mcim_val_t *v = &vals[i];
    memset(v, 0, sizeof(*v));
    switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER:
      v->type = MCIM_VAL_INT;
      v->i = sqlite3_column_int64(stmt, col);
      break;
    case SQLITE_BLOB:
      v->type = MCIM_VAL_BLOB;
      v->p = sqlite3_column_blob(stmt, col);
      v->len = (size_t)sqlite3_column_bytes(stmt, col);
      if (!v->p)
        v->p = empty_blob;
      break;
    case SQLITE_NULL:
      v->type = MCIM_VAL_NULL;
      break;
    default:
      /* TEXT, and FLOAT (outside the portable subset) as its decimal text. */
      v->type = MCIM_VAL_TEXT;
      v->s = (const char *)sqlite3_column_text(stmt, col);
      v->len = (size_t)sqlite3_column_bytes(stmt, col);
      if (!v->s)
        v->type = MCIM_VAL_NULL;
      break;
    }
  }
}

static mcim_cause_t step_all(struct sqlite_conn *c, sqlite3_stmt *stmt, mcim_row_cb cb, void *arg)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  mcim_val_t stack_vals[ROW_STACK_COLS];
  const char *stack_names[ROW_STACK_COLS];
  mcim_val_t *vals = stack_vals;
  const char **names = stack_names;
  size_t ncols = (size_t)sqlite3_column_count(stmt);

  if (ncols > ROW_STACK_COLS) {
    vals = calloc(ncols, sizeof(*vals));
    names = calloc(ncols, sizeof(*names));
    if (!vals || !names)
      goto cleanup;
  }
  for (size_t i = 0; i < ncols; i++)
    names[i] = sqlite3_column_name(stmt, (int)i);

  for (;;) {
    int src = sqlite3_step(stmt);
    if (src == SQLITE_DONE) {
      rc = MCIM_OK;
      break;
    }
    if (src != SQLITE_ROW) {
      set_db_err(c);
      rc = map_rc(src);
      if (rc == MCIM_OK)
        rc = MCIM_STORE_ERROR;
      break;
    }
    if (!cb)
      continue;
    read_row(stmt, ncols, vals);
    mcim_row_t row = {ncols, vals, names};
    rc = cb(&row, arg);
    if (rc != MCIM_OK)
      break;
  }

cleanup:
  if (vals != stack_vals)
    free(vals);
  if (names != stack_names)
    free((void *)names);
  return rc;
}

static mcim_cause_t sqlite_exec(void *conn, const char *sql, const mcim_val_t *params,
                                size_t nparams, mcim_row_cb cb, void *arg)
{
  struct sqlite_conn *c = conn;
  struct cached_stmt *slot = NULL;
  sqlite3_stmt *stmt = NULL;
  mcim_cause_t rc;

  set_err(c, "");
  rc = get_stmt(c, sql, &stmt, &slot);
  if (rc != MCIM_OK)
    goto cleanup;
  if (slot)
    slot->busy = true;
  rc = bind_params(c, stmt, params, nparams);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = step_all(c, stmt, cb, arg);

cleanup:
  if (stmt) {
    /* Reset ends the statement's read of the database (a held read snapshot would
     * keep the WAL from being checkpointed); clearing drops the pointers to the
     * caller's bound memory. */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }
  if (slot)
    slot->busy = false;
  else
    sqlite3_finalize(stmt);
  return rc;
}

void mcim_store_sqlite_small(void)
{
  /* SQLITE_MISUSE once SQLite is initialised: then the defaults stay, nothing breaks */
  sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0);
  sqlite3_config(SQLITE_CONFIG_PAGECACHE, (void *)NULL, 0, 0);
}

/* synchronous = NORMAL in WAL mode: a commit writes its frames to the WAL without fsync;
 * the next FULL commit's fsync of the WAL makes them durable too. */
static mcim_cause_t sqlite_set_durable(void *conn, bool durable)
{
  return run_ctl(conn, durable ? CTL_DURABLE : CTL_RELAXED) == MCIM_OK ? MCIM_OK : MCIM_STORE_ERROR;
}

const mcim_store_ops_t mcim_store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .exec = sqlite_exec,
    .exec_script = sqlite_exec_script,
    .changes = sqlite_changes,
    .errmsg = sqlite_errmsg,
    .set_durable = sqlite_set_durable,
};
