/* Store: the one way a role reaches its database.
 *
 * The interface is backend-neutral (a struct of function pointers, as lpac and
 * Open5GS do it): SQLite is the embedded default, PostgreSQL the scale-out one.
 * Role code writes portable SQL (docs/store.md: `?` placeholders, BIGINT / TEXT /
 * BYTEA columns, no engine-only functions) and binds every value as a typed
 * parameter; values are never formatted into SQL text.
 *
 * Threads: a store handle belongs to one thread at a time (open one per worker
 * thread). Correctness between threads and processes comes from the database:
 * writers serialize in mcim_store_begin() (BEGIN IMMEDIATE on SQLite, the writers' advisory
 * lock on PostgreSQL).
 *
 * Errors are causes: MCIM_CONFLICT for a unique / foreign key / check / not-null
 * violation, MCIM_STORE_BUSY when a lock was not obtained in time (retry),
 * MCIM_NOT_FOUND from the query helpers when no row matched, MCIM_STORE_ERROR for
 * the rest. The backend's own message is in mcim_store_errmsg() for logs; it names
 * tables and constraints, never bound values. */
#ifndef MCIM_STORE_H
#define MCIM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

/* ---- typed values: bound parameters and result columns ---- */

typedef enum mcim_val_type {
  MCIM_VAL_NULL = 0,
  MCIM_VAL_INT,  /* int64 (BIGINT) */
  MCIM_VAL_TEXT, /* UTF-8, NUL-terminated (TEXT) */
  MCIM_VAL_BLOB, /* bytes (BYTEA) */
} mcim_val_type_t;

typedef struct mcim_val {
  mcim_val_type_t type;
  int64_t i;
  const char *s;
  const uint8_t *p;
  size_t len;
} mcim_val_t;

/* Parameter constructors, for arrays such as
 *   mcim_val_t p[] = {MCIM_TEXT(imsi), MCIM_INT(sqn), MCIM_BLOB(k_sealed, k_len)};
 * A NULL text pointer binds SQL NULL. Bound memory must stay valid during the call only. */
#define MCIM_NULL ((mcim_val_t){.type = MCIM_VAL_NULL})
#define MCIM_INT(v) ((mcim_val_t){.type = MCIM_VAL_INT, .i = (int64_t)(v)})
#define MCIM_TEXT(v) ((mcim_val_t){.type = MCIM_VAL_TEXT, .s = (v)})
#define MCIM_BLOB(ptr, n) ((mcim_val_t){.type = MCIM_VAL_BLOB, .p = (ptr), .len = (n)})
#define MCIM_NPARAMS(arr) (sizeof(arr) / sizeof((arr)[0]))

/* One result row, valid only inside the row callback. Getters never crash on a
 * bad column index or type: they return the type's empty value (0, NULL). */
typedef struct mcim_row {
  size_t ncols;
  const mcim_val_t *cols;
  const char *const *names;
} mcim_row_t;

size_t mcim_row_ncols(const mcim_row_t *row);
mcim_val_type_t mcim_row_type(const mcim_row_t *row, size_t col);
bool mcim_row_is_null(const mcim_row_t *row, size_t col);
/* INT column: its value; anything else: 0. */
int64_t mcim_row_int(const mcim_row_t *row, size_t col);
/* TEXT column: the string; anything else: NULL. Copy it to keep it. */
const char *mcim_row_text(const mcim_row_t *row, size_t col);
/* BLOB column: the bytes and their length (an empty blob is a non-NULL pointer,
 * length 0); anything else: NULL, length 0. Copy to keep. */
const uint8_t *mcim_row_blob(const mcim_row_t *row, size_t col, size_t *len);
/* Column name as the SQL gave it (`AS x`); NULL if out of range. */
const char *mcim_row_name(const mcim_row_t *row, size_t col);

/* Called once per result row. Return MCIM_OK to go on; any other cause stops the
 * statement and is returned by the exec call. */
typedef mcim_cause_t (*mcim_row_cb)(const mcim_row_t *row, void *arg);

/* ---- backends ---- */

typedef struct mcim_store_opts {
  int busy_timeout_ms; /* how long to wait for a lock; 0 means 5000 */
  bool read_only;      /* open an existing database for reading only */
} mcim_store_opts_t;

/* A statement and its parameters, as a batch holds it (mcim_store_begin_batch). */
typedef struct mcim_store_stmt {
  const char *sql;
  const mcim_val_t *params;
  size_t nparams;
} mcim_store_stmt_t;

/* What a backend implements. `conn` is the backend's own connection object.
 * exec: one statement, `?` placeholders, typed parameters, rows to `cb` (may be NULL).
 * exec_script: several `;`-separated statements without parameters (migrations).
 * changes: rows changed by the last INSERT/UPDATE/DELETE.
 * errmsg: the backend's last message (never values), "" if none. */
typedef struct mcim_store_ops {
  const char *name;
  mcim_cause_t (*open)(const char *target, const mcim_store_opts_t *opts, void **conn);
  void (*close)(void *conn);
  mcim_cause_t (*begin)(void *conn);
  mcim_cause_t (*commit)(void *conn);
  mcim_cause_t (*rollback)(void *conn);
  mcim_cause_t (*exec)(void *conn, const char *sql, const mcim_val_t *params, size_t nparams,
                       mcim_row_cb cb, void *arg);
  mcim_cause_t (*exec_script)(void *conn, const char *sql);
  int64_t (*changes)(void *conn);
  const char *(*errmsg)(void *conn);
  /* Optional: whether the commits that follow must reach the disk before they return
   * (default true). NULL: every commit is durable. */
  mcim_cause_t (*set_durable)(void *conn, bool durable);
  /* Optional: begin a transaction whose commit alone need not reach the disk (the
   * backend's own per-transaction setting, nothing to undo after it). NULL: the front end
   * brackets begin .. commit/rollback with set_durable (SQLite, which refuses to change
   * its safety level inside a transaction). */
  mcim_cause_t (*begin_relaxed)(void *conn);
  /* Optional: one whole transaction of writes (mcim_store_begin_batch): begin (relaxed or
   * not), the statements in order, commit; all or nothing; changes[i] gets the rows the i-th
   * statement changed. NULL: the front end runs it through begin, exec and commit. */
  mcim_cause_t (*commit_batch)(void *conn, bool relaxed, const struct mcim_store_stmt *stmts,
                               size_t n, int64_t *changes);
} mcim_store_ops_t;

extern const mcim_store_ops_t mcim_store_sqlite_ops;
/* SQLite for a process with one small database (the device agent): no lookaside buffers
 * (about 120 KiB per connection, written through when the connection opens) and no page
 * cache allocated ahead (20 pages per connection): pages come as they are needed.
 * Process-wide, before the first store is opened (afterwards it changes nothing). */
void mcim_store_sqlite_small(void);
/* PostgreSQL (libpq): `target` is the whole locator, passed to libpq
 * (src/store/postgres_conn.c). */
extern const mcim_store_ops_t mcim_store_postgres_ops;

/* ---- the handle roles use ---- */

typedef struct mcim_store mcim_store_t;

/* Open by locator: "sqlite:PATH" or a plain PATH (SQLite; the file is created if
 * missing unless read_only); "postgres://..." / "postgresql://..." (PostgreSQL: the whole
 * locator goes to libpq, the database must exist). `opts` may be NULL. */
mcim_cause_t mcim_store_open(const char *locator, const mcim_store_opts_t *opts, mcim_store_t **out);
/* Whether this build can open `locator` (its backend is built in). When it cannot, `why`
 * says so in words for a person (configuration checks refuse such a locator up front). */
bool mcim_store_locator_supported(const char *locator, char *why, size_t whylen);
/* Open with an explicit backend (tests, or a backend not in the locator table). */
mcim_cause_t mcim_store_open_with(const mcim_store_ops_t *ops, const char *target,
                                  const mcim_store_opts_t *opts, mcim_store_t **out);
/* Rolls back an open transaction, then closes. NULL is fine. */
void mcim_store_close(mcim_store_t *st);
const char *mcim_store_backend(const mcim_store_t *st);

/* Transactions do not nest: begin inside a transaction is MCIM_INVALID_ARGUMENT.
 * If commit fails the transaction is rolled back, so the handle is always usable. */
mcim_cause_t mcim_store_begin(mcim_store_t *st);
mcim_cause_t mcim_store_commit(mcim_store_t *st);
mcim_cause_t mcim_store_rollback(mcim_store_t *st);
bool mcim_store_in_txn(const mcim_store_t *st);
/* Have `fn(arg, committed)` called once when the open transaction ends: committed true after
 * its commit succeeded, false after a rollback or a failed commit (or at the close of the
 * handle). One hook per transaction: set again with the same fn and arg it is kept once;
 * another is MCIM_INVALID_ARGUMENT, as is a handle with no open transaction. What runs in
 * `fn` must not use the handle. (The outbox hands a message its writer's transaction queued
 * and claimed to the worker only once it is committed: src/roles/outbox.c.) */
mcim_cause_t mcim_store_on_end(mcim_store_t *st, void (*fn)(void *arg, bool committed), void *arg);
/* mcim_store_begin for a transaction whose commit need not be on disk when it returns: the
 * commit is answered once the database has it (another process sees it, an mcimd crash
 * loses nothing), and a crash of the database server or of the OS within a moment after it
 * may lose it, whole, never in part and never out of order: PostgreSQL, synchronous_commit
 * off for this transaction only (its WAL writer flushes it within wal_writer_delay, at
 * most three times that; any later durable commit on the server flushes it with itself);
 * SQLite, synchronous = NORMAL for it (WAL frames without their fsync, synced with the next
 * durable commit's or a checkpoint). Only for a transaction whose loss someone is bound to
 * repair (say at the call who and how). The commits after it are durable again; on a
 * backend without the choice it is mcim_store_begin. */
mcim_cause_t mcim_store_begin_relaxed(mcim_store_t *st);
/* A transaction of writes only, sent to the database whole at its commit. Until then
 * mcim_store_exec (and _exec_relaxed) keep each statement without rows (cb NULL) with a
 * copy of its parameters and return MCIM_OK: the statement's outcome is the commit's. A
 * statement with a callback (a read) is refused, MCIM_INVALID_ARGUMENT, and
 * mcim_store_changes means nothing in it. The commit runs the statements in order in one
 * transaction, relaxed as mcim_store_begin_relaxed if `relaxed`, and returns the first
 * failure's cause (a unique key taken: MCIM_CONFLICT), leaving nothing of it: there is no
 * statement-level atomicity inside a batch. Why: on PostgreSQL a transaction statement by
 * statement is 2 + n round trips to the server, each waited for while holding the writers'
 * lock; a batch is one (BEGIN, the lock, the statements and COMMIT in one pipeline). SQLite
 * runs it statement by statement at the commit. A rollback drops what was kept. */
mcim_cause_t mcim_store_begin_batch(mcim_store_t *st, bool relaxed);
/* After a batch's commit: the rows the i-th statement it kept (from 0, in the order they were
 * kept) inserted, updated or deleted; -1 when the commit failed or there was no such
 * statement. What the last batch's commit left, until the next batch begins. */
int64_t mcim_store_batch_changes(const mcim_store_t *st, size_t i);

/* One statement; `cb` may be NULL when no rows are wanted. */
mcim_cause_t mcim_store_exec(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                             size_t nparams, mcim_row_cb cb, void *arg);
/* First row only, to `cb`; MCIM_NOT_FOUND if there is none. */
mcim_cause_t mcim_store_query_one(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                  size_t nparams, mcim_row_cb cb, void *arg);
/* First column of the first row as an integer; MCIM_NOT_FOUND if no row or NULL. */
mcim_cause_t mcim_store_query_int(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                  size_t nparams, int64_t *out);
/* One statement in its own transaction that need not be on disk when it returns: records
 * whose loss in a crash harms nothing (the trace, an outbox message marked delivered, which
 * is delivered again and deduplicated). It reaches the disk with the next durable commit on
 * this handle (SQLite: WAL frames written without their fsync, synced by the next commit's;
 * PostgreSQL: synchronous_commit off for it, the server's WAL writer flushes it within
 * wal_writer_delay, a durable commit flushes it with itself). Inside an open transaction it
 * is part of that transaction, durable as it is. On a backend without the choice it is
 * mcim_store_exec. */
mcim_cause_t mcim_store_exec_relaxed(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                     size_t nparams, mcim_row_cb cb, void *arg);
/* Statements without parameters, separated by `;` (schema scripts). */
mcim_cause_t mcim_store_exec_script(mcim_store_t *st, const char *sql);
int64_t mcim_store_changes(mcim_store_t *st);
/* The backend's last error message, for logs (tables and constraints, no values). */
const char *mcim_store_errmsg(const mcim_store_t *st);

/* The locator as it may be logged: a password in "scheme://user:password@host/..." becomes
 * "***" (a PostgreSQL locator may carry one); anything else is copied (cut to `len`). */
void mcim_store_locator_for_log(const char *locator, char *out, size_t len);

/* Rewrite `?` placeholders to `$1, $2, ...` (PostgreSQL), leaving quoted strings,
 * quoted identifiers and comments alone. *out is malloc'd; the count of
 * placeholders goes to *nparams (may be NULL). */
mcim_cause_t mcim_store_sql_to_dollar(const char *sql, char **out, size_t *nparams);

/* ---- versioned migrations ---- */

/* One step of a component's schema. Versions start at 1 and go up by one; a
 * shipped step is never edited, a change is a new step. `sql` is portable SQL,
 * one or more statements, no BEGIN/COMMIT (each step runs in its own transaction). */
typedef struct mcim_migration {
  int64_t version;
  const char *description;
  const char *sql;
} mcim_migration_t;

/* Bring `component` (e.g. "ro", "outbox", "trace") up to the last step. Creates the
 * schema_version table, applies each missing step in its own transaction (a failed
 * step leaves the previous version intact), and refuses a database whose version is
 * newer than the last step (MCIM_STORE_SCHEMA_TOO_NEW). Safe when several processes
 * start at once. Must not be called inside a transaction. */
mcim_cause_t mcim_store_migrate(mcim_store_t *st, const char *component,
                                const mcim_migration_t *steps, size_t nsteps);
/* Current version of `component`, 0 if it has none yet. */
mcim_cause_t mcim_store_schema_version(mcim_store_t *st, const char *component, int64_t *version);

#endif
