/* The PostgreSQL backend's parts (src/store/postgres.c: transactions, scripts, statements;
 * postgres_conn.c: the connection, the fixed statements, errors; postgres_values.c: parameters
 * in, rows out; postgres_batch.c: a transaction in one round trip). Private to the backend:
 * nothing outside src/store includes it. */
#ifndef MCIM_STORE_POSTGRES_PRIV_H
#define MCIM_STORE_POSTGRES_PRIV_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/store.h"

#define STMT_CACHE_SIZE 64
#define ROW_STACK_COLS 16
/* The writers' lock: one advisory lock key ("mcim" in ASCII), scoped to the database. */
#define WRITER_LOCK_SQL "SELECT pg_advisory_xact_lock(1835231597)"
/* Each statement of a transaction runs under this savepoint (a fixed statement, and a
 * script's prefix). */
#define SAVEPOINT_SQL "SAVEPOINT mcim_stmt"
#define RELEASE_SQL "RELEASE SAVEPOINT mcim_stmt"

/* The statements every transaction runs, prepared once a session (mcim_pg_fixed_prepare)
 * instead of parsed, analysed and planned at each use: named "mcimx_*", apart from the
 * cache's "mcim_N". */
enum pg_fixed { FIX_BEGIN, FIX_RELAX, FIX_LOCK, FIX_COMMIT, FIX_SAVEPOINT, FIX_RELEASE, FIX_N };

/* Type OIDs (catalog/pg_type_d.h, not shipped with libpq-dev); stable since 7.x. */
enum {
  OID_BOOL = 16,
  OID_BYTEA = 17,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_TEXT = 25,
  OID_OID = 26,
  OID_NUMERIC = 1700,
};

struct pg_stmt {
  char *sql;        /* the caller's SQL (the key, with sig) */
  char *sig;        /* one letter per parameter: n(ull, unknown type), i, t, b */
  size_t nparams;
  char name[24];
  uint64_t used; /* LRU tick */
};

struct pg_conn {
  PGconn *db;
  int busy_timeout_ms;
  bool read_only;
  bool txn; /* a transaction begun here is open (the session must stay the same) */
  struct pg_stmt cache[STMT_CACHE_SIZE];
  uint64_t tick;
  uint64_t next_id;
  int64_t changes;
  bool fixed; /* the session holds the fixed statements (enum pg_fixed) */
  char errmsg[256];
};

/* What to run: a cached statement, or one to prepare (into a cache slot, or unnamed when
 * the cache is full inside a transaction, where evicting one is not done). */
struct plan {
  struct pg_stmt *slot; /* cached, or to be cached once prepared */
  bool prepare;
  char *dsql; /* the $n form, when preparing */
  Oid *types;
  const char *name;
};

enum cmd { CMD_WRAP, CMD_PREPARE, CMD_EXEC, CMD_RELEASE, CMD_COMMIT };

/* postgres_conn.c */
/* errors: the connection's message (never values) and the cause of a result */
void mcim_pg_set_err(struct pg_conn *c, const char *msg);
void mcim_pg_set_err_line(struct pg_conn *c, const char *msg);
void mcim_pg_set_err_result(struct pg_conn *c, const PGresult *res);
mcim_cause_t mcim_pg_result_cause(const PGresult *res);
bool mcim_pg_result_ok(const PGresult *res);
mcim_cause_t mcim_pg_run_simple(struct pg_conn *c, const char *sql);
mcim_cause_t mcim_pg_fixed_prepare(struct pg_conn *c);
int mcim_pg_send_fixed(struct pg_conn *c, enum pg_fixed f);
/* the connection (the ops table's open and close) */
mcim_cause_t mcim_pg_open(const char *target, const mcim_store_opts_t *opts, void **conn);
void mcim_pg_close(void *conn);
mcim_cause_t mcim_pg_ensure_connected(struct pg_conn *c);
bool mcim_pg_in_txn(const struct pg_conn *c);
void mcim_pg_cache_forget(struct pg_stmt *e);
/* prepared statements (postgres.c) */
bool mcim_pg_stale_statement(const struct pg_conn *c);
mcim_cause_t mcim_pg_plan_stmt(struct pg_conn *c, const char *sql, const char *sig, size_t n,
                               struct plan *pl);
void mcim_pg_plan_free(struct plan *pl);
PGresult *mcim_pg_pipeline_next(struct pg_conn *c, mcim_cause_t *rc);
void mcim_pg_pipeline_end(struct pg_conn *c);
/* values (postgres_values.c) */
mcim_cause_t mcim_pg_bind_params(struct pg_conn *c, const mcim_val_t *params, size_t nparams,
                                 const char **values, int *lengths, int *formats,
                                 char (*ints)[24], char *sig);
mcim_cause_t mcim_pg_deliver_rows(struct pg_conn *c, const PGresult *res, mcim_row_cb cb,
                                  void *arg);
/* batches (postgres_batch.c) */
mcim_cause_t mcim_pg_commit_batch(void *conn, bool relaxed, const mcim_store_stmt_t *stmts,
                                  size_t n, int64_t *changes);

#endif
