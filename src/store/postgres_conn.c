/* The PostgreSQL backend's connection (docs/store.md): opening one (libpq parameters, the
 * session settings every connection needs, again after a reconnection), closing it,
 * re-establishing one lost outside a transaction, the statements every transaction runs,
 * prepared once a session (the fixed statements), and the connection's errors: its message
 * (never values) and the cause of a result. The isolation model, statements and transactions
 * are in postgres.c, whose head comment says why each error maps as it does. */
#include "store/postgres_priv.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000
#define MIN_SERVER_VERSION 120000

/* ---- errors ---- */

void mcim_pg_set_err(struct pg_conn *c, const char *msg)
{
  snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg ? msg : "");
}

/* The first line of a libpq message (connection failures), tabs and newlines gone. */
void mcim_pg_set_err_line(struct pg_conn *c, const char *msg)
{
  size_t o = 0;
  for (const char *p = msg ? msg : ""; *p && o + 1 < sizeof(c->errmsg); p++) {
    if (*p == '\n') {
      /* libpq's hint lines start with a tab: keep them on the same line */
      if (p[1] != '\t')
        break;
      continue;
    }
    c->errmsg[o++] = (char)(*p == '\t' ? ' ' : *p);
  }
  c->errmsg[o] = '\0';
  if (o == 0)
    mcim_pg_set_err(c, "connection to the server lost");
}

/* Class 22 messages quote the offending input (`invalid input syntax for type bigint:
 * "..."`, `invalid byte sequence for encoding "UTF8": 0xc3 0x28`): hide what is quoted and
 * the bytes after ": 0x". */
static void redact_data_exception(const char *msg, char *out, size_t len)
{
  static const char hidden[] = "\"***\"";
  size_t o = 0;
  for (const char *p = msg; *p && o + sizeof(hidden) < len; p++) {
    if (*p == '"') {
      memcpy(out + o, hidden, sizeof(hidden) - 1);
      o += sizeof(hidden) - 1;
      const char *end = strchr(p + 1, '"');
      if (!end)
        break;
      p = end;
    } else if (strncmp(p, ": 0x", 4) == 0) {
      break;
    } else {
      out[o++] = *p;
    }
  }
  out[o] = '\0';
}

void mcim_pg_set_err_result(struct pg_conn *c, const PGresult *res)
{
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (!primary) {
    /* made by libpq itself (connection lost, protocol): no values in it */
    mcim_pg_set_err_line(c, res ? PQresultErrorMessage(res) : PQerrorMessage(c->db));
    return;
  }
  char clean[200];
  if (state && strncmp(state, "22", 2) == 0)
    redact_data_exception(primary, clean, sizeof(clean));
  else
    snprintf(clean, sizeof(clean), "%s", primary);
  snprintf(c->errmsg, sizeof(c->errmsg), "%s (SQLSTATE %s)", clean, state ? state : "?");
}

static mcim_cause_t map_state(const char *state)
{
  if (!state)
    return MCIM_STORE_ERROR;
  if (strncmp(state, "23", 2) == 0)
    return MCIM_CONFLICT;
  if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
    return MCIM_STORE_BUSY;
  return MCIM_STORE_ERROR;
}

mcim_cause_t mcim_pg_result_cause(const PGresult *res)
{
  return map_state(res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL);
}

bool mcim_pg_result_ok(const PGresult *res)
{
  ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* One simple query; its error becomes the connection's message. */
mcim_cause_t mcim_pg_run_simple(struct pg_conn *c, const char *sql)
{
  PGresult *res = PQexec(c->db, sql);
  mcim_cause_t rc = MCIM_OK;
  if (!mcim_pg_result_ok(res)) {
    mcim_pg_set_err_result(c, res);
    rc = mcim_pg_result_cause(res);
  }
  PQclear(res);
  return rc;
}

/* ---- the fixed statements ---- */

static const char *const fixed_sql[FIX_N] = {
    [FIX_BEGIN] = "BEGIN ISOLATION LEVEL READ COMMITTED",
    [FIX_RELAX] = "SET LOCAL synchronous_commit TO off",
    [FIX_LOCK] = WRITER_LOCK_SQL,
    [FIX_COMMIT] = "COMMIT",
    [FIX_SAVEPOINT] = SAVEPOINT_SQL,
    [FIX_RELEASE] = RELEASE_SQL,
};
static const char *const fixed_name[FIX_N] = {
    [FIX_BEGIN] = "mcimx_begin",         [FIX_RELAX] = "mcimx_relax",
    [FIX_LOCK] = "mcimx_lock",           [FIX_COMMIT] = "mcimx_commit",
    [FIX_SAVEPOINT] = "mcimx_savepoint", [FIX_RELEASE] = "mcimx_release",
};

/* Prepares the fixed statements on this session, once (one round trip), outside a
 * transaction and outside pipeline mode. Sent by text they were parsed, analysed and (the
 * writers' lock, a SELECT) planned at every use: five or more times a DRF discovery's
 * cascade (bench/drf_pgstat.py). A failure is not one: they go by text then. */
mcim_cause_t mcim_pg_fixed_prepare(struct pg_conn *c)
{
  if (c->fixed || mcim_pg_in_txn(c) || PQstatus(c->db) != CONNECTION_OK)
    return MCIM_OK;
  if (PQenterPipelineMode(c->db) != 1)
    return MCIM_OK;
  bool sent = true, ok = true;
  size_t k = 0;
  for (; k < FIX_N && sent; k++)
    sent = PQsendPrepare(c->db, fixed_name[k], fixed_sql[k], 0, NULL) == 1;
  sent = sent && PQpipelineSync(c->db) == 1;
  mcim_cause_t rc = MCIM_OK;
  for (size_t i = 0; sent && i < FIX_N; i++) {
    PGresult *res = mcim_pg_pipeline_next(c, &rc);
    if (!res) {
      ok = false;
      break;
    }
    ok = ok && mcim_pg_result_ok(res);
    PQclear(res);
  }
  mcim_pg_pipeline_end(c);
  c->fixed = sent && ok;
  mcim_pg_set_err(c, "");
  return MCIM_OK;
}

/* In pipeline mode: the fixed statement `f`, prepared if the session holds it, else by text. */
int mcim_pg_send_fixed(struct pg_conn *c, enum pg_fixed f)
{
  if (c->fixed)
    return PQsendQueryPrepared(c->db, fixed_name[f], 0, NULL, NULL, NULL, 0);
  return PQsendQueryParams(c->db, fixed_sql[f], 0, NULL, NULL, NULL, NULL, 0);
}

/* ---- connection ---- */

static void on_notice(void *arg, const PGresult *res)
{
  (void)arg;
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  mcim_log_debug("store postgres: server notice: %s", msg ? msg : "");
}

void mcim_pg_cache_forget(struct pg_stmt *e)
{
  free(e->sql);
  free(e->sig);
  memset(e, 0, sizeof(*e));
}

/* The session settings every connection needs (again after a reconnect). */
static mcim_cause_t configure(struct pg_conn *c)
{
  char sql[512];
  if (PQserverVersion(c->db) < MIN_SERVER_VERSION) {
    snprintf(c->errmsg, sizeof(c->errmsg), "server version %d is older than PostgreSQL 12",
             PQserverVersion(c->db));
    return MCIM_UNSUPPORTED;
  }
  if (PQsetClientEncoding(c->db, "UTF8") != 0) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    return MCIM_STORE_ERROR;
  }
  PQsetNoticeReceiver(c->db, on_notice, NULL);
  snprintf(sql, sizeof(sql),
           "SET lock_timeout = '%dms'; SET bytea_output = 'hex';"
           " SET client_min_messages = 'warning'; SET standard_conforming_strings = on;"
           " SET default_transaction_isolation = 'read committed';"
           " SET default_transaction_read_only = %s",
           c->busy_timeout_ms, c->read_only ? "on" : "off");
  return mcim_pg_run_simple(c, sql);
}

void mcim_pg_close(void *conn)
{
  struct pg_conn *c = conn;
  if (!c)
    return;
  for (size_t i = 0; i < STMT_CACHE_SIZE; i++)
    mcim_pg_cache_forget(&c->cache[i]);
  PQfinish(c->db); /* an open transaction is rolled back by the server */
  free(c);
}

mcim_cause_t mcim_pg_open(const char *target, const mcim_store_opts_t *opts, void **conn)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  struct pg_conn *c = NULL;
  char shown[512];

  if (!target || !conn)
    return MCIM_INVALID_ARGUMENT;
  *conn = NULL;
  mcim_store_locator_for_log(target, shown, sizeof(shown));
  if (!PQisthreadsafe()) {
    mcim_log_error("store postgres: the libpq library is built without thread safety");
    return MCIM_STORE_ERROR;
  }
  c = calloc(1, sizeof(*c));
  if (!c)
    goto cleanup;
  c->busy_timeout_ms =
      opts && opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS;
  c->read_only = opts && opts->read_only;
  /* Defaults first: the locator's own parameters (expanded from "dbname") override them. */
  const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
  const char *const vals[] = {"10", "mcim", target, NULL};
  c->db = PQconnectdbParams(keys, vals, 1);
  if (!c->db)
    goto cleanup;
  if (PQstatus(c->db) != CONNECTION_OK) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    rc = MCIM_STORE_ERROR;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "store postgres: cannot connect to %s: %s", shown,
                   c->errmsg);
    goto cleanup;
  }
  rc = configure(c);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "store postgres: cannot set up %s: %s", shown,
                   c->errmsg);
    goto cleanup;
  }
  *conn = c;
  c = NULL;

cleanup:
  mcim_pg_close(c);
  return rc;
}

/* A connection the server or the network dropped is re-established when no transaction
 * is open (a transaction's state is gone with its session: that one fails). */
mcim_cause_t mcim_pg_ensure_connected(struct pg_conn *c)
{
  if (PQstatus(c->db) == CONNECTION_OK)
    return MCIM_OK;
  PQreset(c->db);
  for (size_t i = 0; i < STMT_CACHE_SIZE; i++)
    mcim_pg_cache_forget(&c->cache[i]); /* the server forgot them */
  c->fixed = false;
  if (PQstatus(c->db) != CONNECTION_OK) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    return MCIM_STORE_ERROR;
  }
  mcim_cause_t rc = configure(c);
  if (rc == MCIM_OK)
    mcim_log_warn("store postgres: connection to the server re-established");
  return rc;
}

bool mcim_pg_in_txn(const struct pg_conn *c)
{
  PGTransactionStatusType t = PQtransactionStatus(c->db);
  return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}
