/* PostgreSQL backend (libpq): the scale-out store, several instances of a role on one
 * database. The locator ("postgres://..." or "postgresql://...") goes to libpq whole, so
 * every libpq connection parameter works (host, port, sslmode, passfile, options, ...).
 *
 * Isolation: READ COMMITTED plus one transaction-level advisory lock per database, taken
 * at begin, the writers' lock. That is SQLite's single-writer model, reproduced exactly:
 *
 *   - mcim_store_begin() waits for the writers' lock (pg_advisory_xact_lock, up to
 *     busy_timeout_ms through lock_timeout; MCIM_STORE_BUSY after that), as BEGIN
 *     IMMEDIATE waits for SQLite's write lock. The lock is released by COMMIT or ROLLBACK,
 *     after the commit is visible, so the next writer's statements (READ COMMITTED takes a
 *     snapshot per statement) see everything its predecessors committed.
 *   - A write outside a transaction (an INSERT, UPDATE, DELETE or script on its own) takes
 *     the same lock for its own implicit transaction, as an autocommit write does on
 *     SQLite: a begun transaction's read-then-write can never interleave with any write.
 *   - Reads outside a transaction take no lock and never wait (SQLite in WAL mode).
 *   - A statement that fails inside a transaction (a conflict) undoes itself only, and the
 *     transaction goes on, as on SQLite: each statement runs under a savepoint (SAVEPOINT,
 *     the statement and RELEASE in one round trip, pipelined).
 *
 * The role code relies on this: it reads, decides and writes inside one begun transaction
 * (SQN, order states, outbox claims) and treats MCIM_CONFLICT as "the other copy won"; it
 * does not retry on MCIM_STORE_BUSY. SERIALIZABLE would allow more concurrency, but every
 * transaction could then fail with a serialization failure at any statement or at commit,
 * and every caller would have to retry whole transactions; READ COMMITTED without the lock
 * would lose updates. Writers of one database are serialised, as on SQLite; readers are
 * not, and separate databases (one per role instance) do not share the lock.
 *
 * Statements: `?` rewritten to `$n` (mcim_store_sql_to_dollar), prepared once per
 * connection and cached by SQL text and parameter types (least recently used goes first).
 * Parameters are typed: int8 and text in text format, bytea in binary; a NULL is of
 * unknown type (the server infers it from its place). Results come in text format and are
 * mapped by column type: int2/int4/int8, bool and integral numeric to INT (SUM of a BIGINT
 * is numeric on PostgreSQL), bytea to BLOB, NULL to NULL, anything else to TEXT.
 *
 * Errors: SQLSTATE class 23 is MCIM_CONFLICT, 40001, 40P01 and 55P03 MCIM_STORE_BUSY, the
 * rest MCIM_STORE_ERROR; errmsg() keeps the primary message and the SQLSTATE only (the
 * DETAIL line quotes key values and whole rows), and in class 22 (data exceptions, whose
 * messages quote the input) quoted text is replaced by ***.
 *
 * Threads: one connection per thread (libpq connections are not shared), as with SQLite. A
 * connection lost outside a transaction is re-established at the next call (a read that
 * found it lost is run again at once; a write is not, it may have been committed); inside
 * one, every further statement and the commit fail (never run outside it on a new
 * session), and the next begin reconnects.
 *
 * Here: transactions, scripts and statements (the cache of prepared statements, the pipeline
 * a statement runs in) and the backend's table of operations. The connection, the fixed
 * statements and the errors are in postgres_conn.c, values in postgres_values.c, batches in
 * postgres_batch.c. */
#include "store/postgres_priv.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PARAM_STACK 16
#define UNDO_SQL "ROLLBACK TO SAVEPOINT mcim_stmt; RELEASE SAVEPOINT mcim_stmt"

/* ---- the session a statement runs on ---- */

/* Before a statement: inside a transaction the session must still be the one that began
 * it (a new connection would run the rest of it outside, each statement on its own);
 * outside one, a lost connection is opened again. */
static mcim_cause_t ready(struct pg_conn *c)
{
  if (!c->txn)
    return mcim_pg_ensure_connected(c);
  if (PQstatus(c->db) != CONNECTION_OK || !mcim_pg_in_txn(c)) {
    mcim_pg_set_err(c, "the connection to the server was lost: the transaction is gone");
    return MCIM_STORE_ERROR;
  }
  return MCIM_OK;
}

/* ---- transactions ---- */

/* The fixed statements in `f` in one round trip (`skip_relax`: FIX_RELAX left out); the first
 * failure's cause. */
static mcim_cause_t run_fixed(struct pg_conn *c, const enum pg_fixed *f, size_t n, bool skip_relax)
{
  (void)mcim_pg_fixed_prepare(c);
  if (PQenterPipelineMode(c->db) != 1) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    return MCIM_STORE_ERROR;
  }
  bool sent = true;
  size_t ncmds = 0;
  for (size_t k = 0; k < n; k++) {
    if (skip_relax && f[k] == FIX_RELAX)
      continue;
    sent = sent && mcim_pg_send_fixed(c, f[k]) == 1;
    ncmds++;
  }
  sent = sent && PQpipelineSync(c->db) == 1;
  mcim_cause_t rc = MCIM_OK;
  if (!sent) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    rc = MCIM_STORE_ERROR;
    ncmds = 0;
  }
  for (size_t k = 0; k < ncmds; k++) {
    PGresult *res = mcim_pg_pipeline_next(c, &rc);
    if (!res)
      break;
    if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED && !mcim_pg_result_ok(res) && rc == MCIM_OK) {
      mcim_pg_set_err_result(c, res);
      rc = mcim_pg_result_cause(res);
    }
    PQclear(res);
  }
  mcim_pg_pipeline_end(c);
  if (rc != MCIM_OK && mcim_pg_stale_statement(c))
    c->fixed = false; /* gone from the session (26000): by text, prepared again later */
  return rc;
}

static mcim_cause_t begin_txn(void *conn, bool relaxed)
{
  struct pg_conn *c = conn;
  mcim_pg_set_err(c, "");
  mcim_cause_t rc = mcim_pg_ensure_connected(c);
  if (rc != MCIM_OK)
    return rc;
  if (c->read_only) {
    rc = mcim_pg_run_simple(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    c->txn = rc == MCIM_OK;
    return rc;
  }
  /* The writers' lock, waited for up to lock_timeout (55P03: MCIM_STORE_BUSY). */
  /* A relaxed transaction (mcim_store_begin_relaxed): SET LOCAL lasts until this
   * transaction ends, so nothing is set back after it; the same round trip as BEGIN. */
  const enum pg_fixed head[] = {FIX_BEGIN, FIX_RELAX, FIX_LOCK};
  rc = run_fixed(c, head, 3, !relaxed);
  if (rc != MCIM_OK && mcim_pg_in_txn(c)) {
    char keep[sizeof(c->errmsg)];
    memcpy(keep, c->errmsg, sizeof(keep));
    (void)mcim_pg_run_simple(c, "ROLLBACK");
    memcpy(c->errmsg, keep, sizeof(keep));
  }
  c->txn = rc == MCIM_OK;
  return rc;
}

static mcim_cause_t pg_begin(void *conn)
{
  return begin_txn(conn, false);
}

static mcim_cause_t pg_begin_relaxed(void *conn)
{
  return begin_txn(conn, true);
}

static mcim_cause_t pg_commit(void *conn)
{
  struct pg_conn *c = conn;
  mcim_pg_set_err(c, "");
  mcim_cause_t rc = ready(c);
  c->txn = false;
  if (rc != MCIM_OK)
    return rc; /* the server rolled it back when the session ended */
  PGresult *res = c->fixed ? PQexecPrepared(c->db, "mcimx_commit", 0, NULL, NULL, NULL, 0)
                           : PQexec(c->db, "COMMIT");
  if (!mcim_pg_result_ok(res)) {
    mcim_pg_set_err_result(c, res);
    rc = mcim_pg_result_cause(res);
  } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
    /* COMMIT of a transaction an error aborted answers ROLLBACK */
    mcim_pg_set_err(c, "the transaction was rolled back: a statement in it failed");
    rc = MCIM_STORE_ERROR;
  }
  PQclear(res);
  if (rc != MCIM_OK && mcim_pg_stale_statement(c))
    c->fixed = false;
  return rc;
}

static mcim_cause_t pg_rollback(void *conn)
{
  struct pg_conn *c = conn;
  c->txn = false;
  if (!mcim_pg_in_txn(c))
    return MCIM_OK; /* ended by a failed commit or a lost connection */
  return mcim_pg_run_simple(c, "ROLLBACK");
}

/* ---- scripts (migrations): the simple query protocol ---- */

static mcim_cause_t pg_exec_script(void *conn, const char *sql)
{
  struct pg_conn *c = conn;
  mcim_cause_t rc;
  char *full = NULL;
  bool txn;

  mcim_pg_set_err(c, "");
  rc = ready(c);
  if (rc != MCIM_OK)
    return rc;
  txn = c->txn;
  if (c->read_only)
    return mcim_pg_run_simple(c, sql);
  /* Inside a transaction: under a savepoint, so a failed script leaves the transaction
   * usable. Outside: one implicit transaction holding the writers' lock. */
  const char *prefix = txn ? SAVEPOINT_SQL ";\n" : WRITER_LOCK_SQL ";\n";
  size_t n = strlen(prefix) + strlen(sql) + 1;
  full = malloc(n);
  if (!full)
    return MCIM_NO_MEMORY;
  snprintf(full, n, "%s%s", prefix, sql);
  rc = mcim_pg_run_simple(c, full);
  free(full);
  if (txn) {
    char keep[sizeof(c->errmsg)];
    memcpy(keep, c->errmsg, sizeof(keep));
    mcim_cause_t undo = mcim_pg_run_simple(c, rc == MCIM_OK ? RELEASE_SQL : UNDO_SQL);
    if (rc == MCIM_OK)
      rc = undo;
    else
      memcpy(c->errmsg, keep, sizeof(keep));
  }
  return rc;
}

/* ---- statements ---- */

static const char *skip_space_and_comments(const char *p)
{
  for (;;) {
    while (*p && isspace((unsigned char)*p))
      p++;
    if (p[0] == '-' && p[1] == '-') {
      while (*p && *p != '\n')
        p++;
    } else if (p[0] == '/' && p[1] == '*') {
      const char *end = strstr(p + 2, "*/");
      p = end ? end + 2 : p + strlen(p);
    } else {
      return p;
    }
  }
}

/* A statement that only reads runs without the writers' lock outside a transaction. */
static bool is_read(const char *sql)
{
  const char *p = skip_space_and_comments(sql);
  static const char *const reads[] = {"SELECT", "VALUES", "SHOW"};
  for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
    size_t n = strlen(reads[i]);
    if (strncasecmp(p, reads[i], n) == 0 && !isalnum((unsigned char)p[n]) && p[n] != '_')
      return true;
  }
  return false;
}

/* exec runs one statement: a `;` outside quotes and comments with more SQL after it is
 * refused, as SQLite's backend does (a prepared statement could not hold it anyway). */
static bool several_statements(const char *sql)
{
  for (const char *p = sql; *p;) {
    if (*p == '\'' || *p == '"') {
      const char *end = strchr(p + 1, *p);
      p = end ? end + 1 : p + strlen(p);
    } else if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
      p = skip_space_and_comments(p);
    } else if (*p == ';') {
      const char *rest = p + 1;
      for (;;) {
        rest = skip_space_and_comments(rest);
        if (*rest != ';')
          break;
        rest++;
      }
      return *rest != '\0';
    } else {
      p++;
    }
  }
  return false;
}

static bool sig_matches(const struct pg_stmt *e, const char *sql, const char *sig, size_t n)
{
  if (!e->sql || e->nparams != n || strcmp(e->sql, sql) != 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (sig[i] != 'n' && sig[i] != e->sig[i])
      return false; /* a NULL fits any type; a value only its own */
  return true;
}

static Oid sig_oid(char t)
{
  return t == 'i' ? OID_INT8 : t == 't' ? OID_TEXT : t == 'b' ? OID_BYTEA : 0;
}

mcim_cause_t mcim_pg_plan_stmt(struct pg_conn *c, const char *sql, const char *sig, size_t n,
                              struct plan *pl)
{
  struct pg_stmt *victim = NULL;
  size_t want = 0;
  memset(pl, 0, sizeof(*pl));
  for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
    struct pg_stmt *e = &c->cache[i];
    if (sig_matches(e, sql, sig, n)) {
      e->used = ++c->tick;
      pl->slot = e;
      pl->name = e->name;
      return MCIM_OK;
    }
    /* an empty slot first, else the least recently used */
    if (!victim || (victim->sql && (!e->sql || e->used < victim->used)))
      victim = e;
  }
  mcim_cause_t rc = mcim_store_sql_to_dollar(sql, &pl->dsql, &want);
  if (rc != MCIM_OK)
    return rc;
  if (want != n) {
    snprintf(c->errmsg, sizeof(c->errmsg), "statement has %zu parameters, %zu given", want, n);
    return MCIM_INVALID_ARGUMENT;
  }
  if (several_statements(sql)) {
    mcim_pg_set_err(c, "exactly one SQL statement expected");
    return MCIM_INVALID_ARGUMENT;
  }
  if (n) {
    pl->types = calloc(n, sizeof(*pl->types));
    if (!pl->types)
      return MCIM_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
      pl->types[i] = sig_oid(sig[i]);
  }
  pl->prepare = true;
  pl->name = "";
  if (victim->sql && c->txn)
    return MCIM_OK; /* unnamed, not cached */
  if (victim->sql) {
    /* Outside a transaction a failed DEALLOCATE harms nothing (names are never reused). */
    char dealloc[48];
    snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", victim->name);
    PQclear(PQexec(c->db, dealloc));
    mcim_pg_cache_forget(victim);
  }
  victim->sql = strdup(sql);
  victim->sig = malloc(n + 1);
  if (!victim->sql || !victim->sig) {
    mcim_pg_cache_forget(victim);
    return MCIM_OK; /* run unnamed */
  }
  memcpy(victim->sig, sig, n + 1);
  victim->nparams = n;
  victim->used = ++c->tick;
  snprintf(victim->name, sizeof(victim->name), "mcim_%llu", (unsigned long long)++c->next_id);
  pl->slot = victim;
  pl->name = victim->name;
  return MCIM_OK;
}

void mcim_pg_plan_free(struct plan *pl)
{
  free(pl->dsql);
  free(pl->types);
}

enum wrap { WRAP_NONE, WRAP_SAVEPOINT, WRAP_LOCK };

/* The next command's result in a pipeline (each command's results end with a NULL, read
 * here); NULL when there is none, the connection's failure then in *rc (if none yet). */
PGresult *mcim_pg_pipeline_next(struct pg_conn *c, mcim_cause_t *rc)
{
  PGresult *res = PQgetResult(c->db);
  if (!res) {
    if (*rc == MCIM_OK) {
      mcim_pg_set_err_line(c, PQerrorMessage(c->db));
      *rc = MCIM_STORE_ERROR;
    }
    return NULL;
  }
  for (PGresult *more; (more = PQgetResult(c->db)) != NULL;)
    PQclear(more);
  return res;
}

/* The Sync's result, then out of pipeline mode. */
void mcim_pg_pipeline_end(struct pg_conn *c)
{
  for (int guard = 0; guard < 64 && PQexitPipelineMode(c->db) != 1; guard++) {
    PGresult *res = PQgetResult(c->db);
    if (!res && PQstatus(c->db) != CONNECTION_OK)
      break;
    PQclear(res);
  }
}

/* One round trip: [SAVEPOINT | writers' lock] [Parse] Bind/Execute [RELEASE] Sync. The
 * statement's result goes to *out. Returns the first failure's cause; *undo tells whether
 * a savepoint was taken and the statement failed (the caller rolls back to it). */
static mcim_cause_t run_pipeline(struct pg_conn *c, enum wrap wrap, struct plan *pl, size_t n,
                                 const char *const *values, const int *lengths, const int *formats,
                                 PGresult **out, bool *undo)
{
  enum cmd cmds[4];
  size_t ncmds = 0;
  mcim_cause_t rc = MCIM_OK;
  bool sent = true, savepoint_ok = false, prepared = false;

  *out = NULL;
  *undo = false;
  if (wrap == WRAP_LOCK)
    (void)mcim_pg_fixed_prepare(c);
  if (PQenterPipelineMode(c->db) != 1) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    return MCIM_STORE_ERROR;
  }
  if (wrap != WRAP_NONE) {
    sent = sent && mcim_pg_send_fixed(c, wrap == WRAP_LOCK ? FIX_LOCK : FIX_SAVEPOINT) == 1;
    cmds[ncmds++] = CMD_WRAP;
  }
  if (pl->prepare) {
    sent = sent && PQsendPrepare(c->db, pl->name, pl->dsql, (int)n, pl->types) == 1;
    cmds[ncmds++] = CMD_PREPARE;
  }
  sent = sent && PQsendQueryPrepared(c->db, pl->name, (int)n, values, lengths, formats, 0) == 1;
  cmds[ncmds++] = CMD_EXEC;
  if (wrap == WRAP_SAVEPOINT) {
    sent = sent && mcim_pg_send_fixed(c, FIX_RELEASE) == 1;
    cmds[ncmds++] = CMD_RELEASE;
  }
  sent = sent && PQpipelineSync(c->db) == 1;
  if (!sent) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    rc = MCIM_STORE_ERROR;
    ncmds = 0; /* nothing reliable to read: drain below */
  }

  for (size_t k = 0; k < ncmds; k++) {
    PGresult *res = mcim_pg_pipeline_next(c, &rc);
    if (!res)
      break;
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_ABORTED) {
      PQclear(res); /* skipped after an earlier failure, reported already */
      continue;
    }
    if (!mcim_pg_result_ok(res)) {
      if (rc == MCIM_OK) {
        mcim_pg_set_err_result(c, res);
        rc = mcim_pg_result_cause(res);
        if (cmds[k] == CMD_PREPARE && pl->slot) {
          mcim_pg_cache_forget(pl->slot);
          pl->slot = NULL;
        }
      }
      PQclear(res);
      continue;
    }
    if (cmds[k] == CMD_WRAP && wrap == WRAP_SAVEPOINT)
      savepoint_ok = true;
    if (cmds[k] == CMD_PREPARE)
      prepared = true; /* kept by the server whatever happens next (not transactional) */
    if (cmds[k] == CMD_EXEC)
      *out = res;
    else
      PQclear(res);
  }
  mcim_pg_pipeline_end(c);
  if (rc != MCIM_OK && wrap != WRAP_NONE && mcim_pg_stale_statement(c))
    c->fixed = false; /* the wrap may be what is gone: by text, prepared again later */
  if (rc != MCIM_OK && *out) {
    PQclear(*out);
    *out = NULL;
  }
  if (rc != MCIM_OK && pl->prepare && !prepared && pl->slot) {
    /* never prepared (it, or a command before it, failed): do not keep the slot */
    mcim_pg_cache_forget(pl->slot);
    pl->slot = NULL;
  }
  *undo = rc != MCIM_OK && savepoint_ok;
  return rc;
}

static bool changes_rows(const char *status)
{
  static const char *const verbs[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE "};
  for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
    if (strncmp(status, verbs[i], strlen(verbs[i])) == 0)
      return true;
  return false;
}

/* A cached statement the server can no longer run as prepared (a table's columns changed
 * under `SELECT *`, or the statement is gone): forget it, so it is prepared again. */
bool mcim_pg_stale_statement(const struct pg_conn *c)
{
  return strstr(c->errmsg, "(SQLSTATE 0A000)") || strstr(c->errmsg, "(SQLSTATE 26000)");
}

static mcim_cause_t pg_exec(void *conn, const char *sql, const mcim_val_t *params, size_t nparams,
                            mcim_row_cb cb, void *arg)
{
  struct pg_conn *c = conn;
  mcim_cause_t rc = MCIM_NO_MEMORY;
  const char *stack_values[PARAM_STACK];
  int stack_lengths[PARAM_STACK], stack_formats[PARAM_STACK];
  char stack_ints[PARAM_STACK][24];
  char stack_sig[PARAM_STACK + 1];
  const char **values = stack_values;
  int *lengths = stack_lengths, *formats = stack_formats;
  char(*ints)[24] = stack_ints;
  char *sig = stack_sig;
  PGresult *res = NULL;
  struct plan pl = {0};

  mcim_pg_set_err(c, "");
  if (nparams > PARAM_STACK) {
    if (nparams > 65535) {
      mcim_pg_set_err(c, "more than 65535 parameters");
      return MCIM_INVALID_ARGUMENT;
    }
    values = calloc(nparams, sizeof(*values));
    lengths = calloc(nparams, sizeof(*lengths));
    formats = calloc(nparams, sizeof(*formats));
    ints = calloc(nparams, sizeof(*ints));
    sig = calloc(nparams + 1, 1);
    if (!values || !lengths || !formats || !ints || !sig)
      goto cleanup;
  }
  rc = mcim_pg_bind_params(c, params, nparams, values, lengths, formats, ints, sig);
  if (rc != MCIM_OK)
    goto cleanup;

  rc = ready(c);
  if (rc != MCIM_OK)
    goto cleanup;
  for (int attempt = 0; attempt < 2; attempt++) {
    bool txn = c->txn, undo = false, reads = c->read_only || is_read(sql);
    enum wrap wrap = txn ? WRAP_SAVEPOINT : reads ? WRAP_NONE : WRAP_LOCK;
    rc = mcim_pg_plan_stmt(c, sql, sig, nparams, &pl);
    if (rc == MCIM_OK)
      rc = run_pipeline(c, wrap, &pl, nparams, values, lengths, formats, &res, &undo);
    if (undo) {
      char keep[sizeof(c->errmsg)];
      memcpy(keep, c->errmsg, sizeof(keep));
      (void)mcim_pg_run_simple(c, UNDO_SQL);
      memcpy(c->errmsg, keep, sizeof(keep));
    }
    bool retry = rc == MCIM_STORE_ERROR && !pl.prepare && pl.slot && mcim_pg_stale_statement(c);
    if (retry) {
      if (!mcim_pg_in_txn(c)) {
        char dealloc[48];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", pl.slot->name);
        PQclear(PQexec(c->db, dealloc));
      }
      mcim_pg_cache_forget(pl.slot);
    }
    mcim_pg_plan_free(&pl);
    memset(&pl, 0, sizeof(pl));
    /* A read outside a transaction that found the connection gone (a server restart) is
     * run again on a new one; a write is not: it may have been committed before the
     * connection went. */
    if (rc == MCIM_STORE_ERROR && !txn && reads && PQstatus(c->db) != CONNECTION_OK) {
      char keep[sizeof(c->errmsg)];
      memcpy(keep, c->errmsg, sizeof(keep));
      if (mcim_pg_ensure_connected(c) != MCIM_OK) {
        memcpy(c->errmsg, keep, sizeof(keep));
        break;
      }
      continue;
    }
    /* once more, prepared afresh, only where nothing of a caller's transaction is lost */
    if (!retry || txn)
      break;
  }
  if (rc != MCIM_OK)
    goto cleanup;
  if (changes_rows(PQcmdStatus(res)))
    c->changes = strtoll(PQcmdTuples(res), NULL, 10);
  rc = mcim_pg_deliver_rows(c, res, cb, arg);

cleanup:
  mcim_pg_plan_free(&pl);
  PQclear(res);
  if (values != stack_values) {
    free((void *)values);
    free(lengths);
    free(formats);
    free(ints);
    free(sig);
  }
  return rc;
}

static int64_t pg_changes(void *conn)
{
  const struct pg_conn *c = conn;
  return c->changes;
}

static const char *pg_errmsg(void *conn)
{
  const struct pg_conn *c = conn;
  return c ? c->errmsg : "";
}

/* Relaxed commits (mcim_store_exec_relaxed): the server answers the COMMIT before its WAL
 * reaches the disk (synchronous_commit off, for this session until set back). A crash of the
 * server may lose the last such commits (the WAL writer flushes them within
 * wal_writer_delay), never a durable one, and never out of order: a durable commit flushes
 * the WAL up to itself, earlier relaxed commits included. */
static mcim_cause_t pg_set_durable(void *conn, bool durable)
{
  struct pg_conn *c = conn;
  return mcim_pg_run_simple(c, durable ? "SET synchronous_commit TO on"
                                       : "SET synchronous_commit TO off");
}

const mcim_store_ops_t mcim_store_postgres_ops = {
    .name = "postgres",
    .open = mcim_pg_open,
    .close = mcim_pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .exec_script = pg_exec_script,
    .set_durable = pg_set_durable,
    .begin_relaxed = pg_begin_relaxed,
    .commit_batch = mcim_pg_commit_batch,
    .changes = pg_changes,
    .errmsg = pg_errmsg,
};
