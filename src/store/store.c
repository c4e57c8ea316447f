/* Store front end: picks a backend, keeps the transaction state, logs failures
 * (SQL text and the backend message only: values are bound, never in the SQL),
 * and offers the row getters and query helpers every backend shares. */
#include "mcim/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcim/log.h"
#include "mcim/opcount.h"

struct mcim_store {
  const mcim_store_ops_t *ops;
  void *conn;
  bool in_txn;
  /* A relaxed transaction made through set_durable(false) (mcim_store_begin_relaxed): the
   * handle goes back to durable commits when it ends, or before the next begin if that
   * failed, so durability is never left off by accident. */
  bool relaxed;
  /* The open transaction commits relaxed (the backend's begin_relaxed, or set_durable(false)
   * took): which work count its commit adds to (include/mcim/opcount.h). */
  bool txn_relaxed;
  /* mcim_store_exec_relaxed's statement runs: its autocommit, if a write, is relaxed */
  bool autocommit_relaxed;
  /* A batch (mcim_store_begin_batch): in_txn is set, nothing is begun at the backend, and
   * the statements wait here, each in one allocation of its own (SQL, parameters, their
   * bytes), for the commit. */
  bool batch, batch_relaxed;
  mcim_store_stmt_t *kept;
  size_t nkept, capkept;
  /* the rows each statement of the last batch changed (mcim_store_batch_changes) */
  int64_t *batch_rows;
  size_t nbatch_rows;
  /* mcim_store_on_end: called once when the open transaction ends */
  void (*end_fn)(void *arg, bool committed);
  void *end_arg;
};

/* The transaction ended: its hook, once, then none. */
static void end_hook(mcim_store_t *st, bool committed)
{
  void (*fn)(void *, bool) = st->end_fn;
  st->end_fn = NULL;
  if (fn)
    fn(st->end_arg, committed);
}

mcim_cause_t mcim_store_on_end(mcim_store_t *st, void (*fn)(void *arg, bool committed), void *arg)
{
  if (!st || !st->in_txn || !fn || (st->end_fn && (st->end_fn != fn || st->end_arg != arg)))
    return MCIM_INVALID_ARGUMENT;
  st->end_fn = fn;
  st->end_arg = arg;
  return MCIM_OK;
}

mcim_cause_t mcim_store_open_with(const mcim_store_ops_t *ops, const char *target,
                                  const mcim_store_opts_t *opts, mcim_store_t **out)
{
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  mcim_store_t *st = NULL;

  if (!ops || !target || !out)
    goto cleanup;
  *out = NULL;
  rc = MCIM_NO_MEMORY;
  st = calloc(1, sizeof(*st));
  if (!st)
    goto cleanup;
  st->ops = ops;
  rc = ops->open(target, opts, &st->conn);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = st;
  st = NULL;

cleanup:
  free(st);
  return rc;
}

void mcim_store_close(mcim_store_t *st)
{
  if (!st)
    return;
  if (st->in_txn)
    (void)mcim_store_rollback(st);
  st->ops->close(st->conn);
  free(st->batch_rows);
  free(st);
}

const char *mcim_store_backend(const mcim_store_t *st)
{
  return st ? st->ops->name : "";
}

const char *mcim_store_errmsg(const mcim_store_t *st)
{
  return st ? st->ops->errmsg(st->conn) : "";
}

/* Conflicts and busy locks are ordinary outcomes (idempotent retries, races the
 * database settles), so they are logged at debug; anything else is an error. */
static void log_failure(const mcim_store_t *st, const char *what, mcim_cause_t rc)
{
  mcim_log_level_t lvl =
      (rc == MCIM_CONFLICT || rc == MCIM_STORE_BUSY || rc == MCIM_NOT_FOUND) ? MCIM_LOG_DEBUG
                                                                             : MCIM_LOG_ERROR;
  mcim_log_event(lvl, NULL, 0, rc, "store %s: %.200s: %s", st->ops->name, what,
                 mcim_store_errmsg(st));
}

/* Back to durable commits after a relaxed transaction (outside any transaction). */
static mcim_cause_t durable_again(mcim_store_t *st)
{
  if (!st->relaxed)
    return MCIM_OK;
  /* relaxed is set only after set_durable(false) succeeded (begin) */
  // NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage)
  if (st->ops->set_durable(st->conn, true) != MCIM_OK) {
    log_failure(st, "back to durable commits", MCIM_STORE_ERROR);
    return MCIM_STORE_ERROR;
  }
  st->relaxed = false;
  return MCIM_OK;
}

static void batch_clear(mcim_store_t *st)
{
  for (size_t i = 0; i < st->nkept; i++)
    free((void *)st->kept[i].sql); /* the statement's one allocation */
  free(st->kept);
  st->kept = NULL;
  st->nkept = st->capkept = 0;
  st->batch = false;
}

/* A copy of one statement for a batch: the SQL, the parameters and what they point to, in
 * one block that starts with the SQL (so freeing the SQL frees all of it). */
static mcim_cause_t batch_keep(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                               size_t nparams)
{
  size_t sql_len = strlen(sql) + 1, bytes = 0;
  for (size_t i = 0; i < nparams; i++) {
    if (params[i].type == MCIM_VAL_TEXT && params[i].s)
      bytes += strlen(params[i].s) + 1;
    else if (params[i].type == MCIM_VAL_BLOB)
      bytes += params[i].len;
  }
  if (st->nkept == st->capkept) {
    size_t cap = st->capkept ? st->capkept * 2 : 8;
    mcim_store_stmt_t *more = realloc(st->kept, cap * sizeof(*more));
    if (!more)
      return MCIM_NO_MEMORY;
    st->kept = more;
    st->capkept = cap;
  }
  /* the SQL, padded to the parameters' alignment, the parameters, then their bytes */
  size_t head = (sql_len + _Alignof(mcim_val_t) - 1) / _Alignof(mcim_val_t) * _Alignof(mcim_val_t);
  char *block = malloc(head + nparams * sizeof(mcim_val_t) + bytes);
  if (!block)
    return MCIM_NO_MEMORY;
  memcpy(block, sql, sql_len);
  mcim_val_t *vals = (mcim_val_t *)(void *)(block + head);
  uint8_t *data = (uint8_t *)(vals + nparams);
  for (size_t i = 0; i < nparams; i++) {
    vals[i] = params[i];
    if (params[i].type == MCIM_VAL_TEXT && params[i].s) {
      size_t n = strlen(params[i].s) + 1;
      memcpy(data, params[i].s, n);
      vals[i].s = (const char *)data;
      data += n;
    } else if (params[i].type == MCIM_VAL_BLOB && params[i].len) {
      memcpy(data, params[i].p, params[i].len);
      vals[i].p = data;
      data += params[i].len;
    }
  }
  st->kept[st->nkept++] = (mcim_store_stmt_t){.sql = block, .params = vals, .nparams = nparams};
  return MCIM_OK;
}

static mcim_cause_t begin(mcim_store_t *st, bool relaxed);

/* A batch's commit without the backend's own: begin, the statements, commit. */
static mcim_cause_t batch_run(mcim_store_t *st, bool relaxed, int64_t *changes)
{
  mcim_cause_t rc = begin(st, relaxed);
  for (size_t i = 0; rc == MCIM_OK && i < st->nkept; i++) {
    rc = mcim_store_exec(st, st->kept[i].sql, st->kept[i].params, st->kept[i].nparams, NULL, NULL);
    if (rc == MCIM_OK)
      changes[i] = mcim_store_changes(st);
  }
  if (rc == MCIM_OK)
    return mcim_store_commit(st);
  if (st->in_txn)
    (void)mcim_store_rollback(st);
  return rc;
}

static mcim_cause_t batch_commit(mcim_store_t *st)
{
  mcim_cause_t rc = MCIM_OK;
  bool relaxed = st->batch_relaxed;
  int64_t *changes = NULL;
  st->batch = false; /* from here on, exec runs statements */
  st->in_txn = false;
  if (st->nkept == 0)
    goto done;
  changes = calloc(st->nkept, sizeof(*changes));
  if (!changes) {
    rc = MCIM_NO_MEMORY;
    goto done;
  }
  if (!st->ops->commit_batch) {
    rc = batch_run(st, relaxed, changes);
    goto done;
  }
  rc = durable_again(st);
  if (rc == MCIM_OK)
    rc = st->ops->commit_batch(st->conn, relaxed, st->kept, st->nkept, changes);
  if (rc != MCIM_OK)
    log_failure(st, st->nkept == 1 ? st->kept[0].sql : "a batch's commit", rc);
  mcim_work_add(MCIM_WORK_STORE_STATEMENT, st->nkept); /* sent, whatever the outcome */
  if (rc == MCIM_OK)
    mcim_work_count(relaxed ? MCIM_WORK_STORE_COMMIT_RELAXED : MCIM_WORK_STORE_COMMIT_DURABLE);
done:
  if (rc == MCIM_OK) {
    st->batch_rows = changes;
    st->nbatch_rows = changes ? st->nkept : 0;
  } else {
    free(changes);
  }
  batch_clear(st);
  end_hook(st, rc == MCIM_OK);
  return rc;
}

mcim_cause_t mcim_store_begin_batch(mcim_store_t *st, bool relaxed)
{
  if (!st || st->in_txn)
    return MCIM_INVALID_ARGUMENT;
  free(st->batch_rows);
  st->batch_rows = NULL;
  st->nbatch_rows = 0;
  st->in_txn = true;
  st->batch = true;
  st->batch_relaxed = relaxed;
  return MCIM_OK;
}

static mcim_cause_t begin(mcim_store_t *st, bool relaxed)
{
  if (!st || st->in_txn)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = durable_again(st);
  if (rc != MCIM_OK)
    return rc;
  if (relaxed && st->ops->begin_relaxed) {
    rc = st->ops->begin_relaxed(st->conn);
  } else {
    if (relaxed && st->ops->set_durable && st->ops->set_durable(st->conn, false) == MCIM_OK)
      st->relaxed = true; /* otherwise durable: never less than asked for */
    rc = st->ops->begin(st->conn);
  }
  if (rc != MCIM_OK) {
    log_failure(st, "BEGIN", rc);
    (void)durable_again(st);
    return rc;
  }
  st->in_txn = true;
  st->txn_relaxed = relaxed && (st->ops->begin_relaxed || st->relaxed);
  return MCIM_OK;
}

mcim_cause_t mcim_store_begin(mcim_store_t *st)
{
  return begin(st, false);
}

mcim_cause_t mcim_store_begin_relaxed(mcim_store_t *st)
{
  return begin(st, true);
}

mcim_cause_t mcim_store_commit(mcim_store_t *st)
{
  if (!st || !st->in_txn)
    return MCIM_INVALID_ARGUMENT;
  if (st->batch)
    return batch_commit(st);
  mcim_cause_t rc = st->ops->commit(st->conn);
  if (rc != MCIM_OK) {
    log_failure(st, "COMMIT", rc);
    /* Leave no half-open transaction behind: the caller retries from the start. */
    (void)st->ops->rollback(st->conn);
  } else {
    mcim_work_count(st->txn_relaxed ? MCIM_WORK_STORE_COMMIT_RELAXED
                                    : MCIM_WORK_STORE_COMMIT_DURABLE);
  }
  st->in_txn = false;
  /* the transaction's outcome stands; a failure here is retried by the next begin */
  (void)durable_again(st);
  end_hook(st, rc == MCIM_OK);
  return rc;
}

mcim_cause_t mcim_store_rollback(mcim_store_t *st)
{
  if (!st || !st->in_txn)
    return MCIM_INVALID_ARGUMENT;
  if (st->batch) { /* nothing was sent */
    batch_clear(st);
    st->in_txn = false;
    end_hook(st, false);
    return MCIM_OK;
  }
  mcim_cause_t rc = st->ops->rollback(st->conn);
  if (rc != MCIM_OK)
    log_failure(st, "ROLLBACK", rc);
  st->in_txn = false;
  (void)durable_again(st);
  end_hook(st, false);
  return rc;
}

bool mcim_store_in_txn(const mcim_store_t *st)
{
  return st && st->in_txn;
}

/* The backend's failures (logged); any other cause is one the caller's callback returned. */
static bool store_failure(mcim_cause_t rc)
{
  return rc == MCIM_STORE_ERROR || rc == MCIM_CONFLICT || rc == MCIM_STORE_BUSY ||
         rc == MCIM_INVALID_ARGUMENT || rc == MCIM_NO_MEMORY;
}

/* A statement that writes, told by its first word (cheap; a write inside a WITH is missed):
 * outside a transaction, its success is a commit of its own. */
static bool writes(const char *sql)
{
  while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')
    sql++;
  return strncasecmp(sql, "INSERT", 6) == 0 || strncasecmp(sql, "UPDATE", 6) == 0 ||
         strncasecmp(sql, "DELETE", 6) == 0 || strncasecmp(sql, "REPLACE", 7) == 0;
}

mcim_cause_t mcim_store_exec(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                             size_t nparams, mcim_row_cb cb, void *arg)
{
  if (!st || !sql || (nparams && !params))
    return MCIM_INVALID_ARGUMENT;
  if (st->batch) {
    if (cb) { /* a read in a batch: our own mistake, said loudly */
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INVALID_ARGUMENT,
                     "store %s: a read inside a batch: %.200s", st->ops->name, sql);
      return MCIM_INVALID_ARGUMENT;
    }
    return batch_keep(st, sql, params, nparams);
  }
  /* an autocommit write is durable, even right after a relaxed transaction */
  if (!st->in_txn && durable_again(st) != MCIM_OK)
    return MCIM_STORE_ERROR;
  mcim_work_count(MCIM_WORK_STORE_STATEMENT);
  mcim_cause_t rc = st->ops->exec(st->conn, sql, params, nparams, cb, arg);
  /* A cause returned by the caller's callback is the caller's business. */
  if (store_failure(rc))
    log_failure(st, sql, rc);
  else if (!st->in_txn && writes(sql))
    mcim_work_count(st->autocommit_relaxed ? MCIM_WORK_STORE_COMMIT_RELAXED
                                           : MCIM_WORK_STORE_COMMIT_DURABLE);
  return rc;
}

mcim_cause_t mcim_store_exec_relaxed(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                     size_t nparams, mcim_row_cb cb, void *arg)
{
  if (!st || mcim_store_in_txn(st) || !st->ops->set_durable ||
      st->ops->set_durable(st->conn, false) != MCIM_OK)
    return mcim_store_exec(st, sql, params, nparams, cb, arg);
  st->autocommit_relaxed = true;
  mcim_cause_t rc = mcim_store_exec(st, sql, params, nparams, cb, arg);
  st->autocommit_relaxed = false;
  /* back to durable commits, whatever happened: if that fails the handle is unusable */
  if (st->ops->set_durable(st->conn, true) != MCIM_OK)
    rc = MCIM_STORE_ERROR;
  return rc;
}

mcim_cause_t mcim_store_exec_script(mcim_store_t *st, const char *sql)
{
  if (!st || !sql)
    return MCIM_INVALID_ARGUMENT;
  mcim_work_count(MCIM_WORK_STORE_STATEMENT); /* one, however many it holds */
  mcim_cause_t rc = st->ops->exec_script(st->conn, sql);
  if (rc != MCIM_OK)
    log_failure(st, "script", rc);
  return rc;
}

int64_t mcim_store_batch_changes(const mcim_store_t *st, size_t i)
{
  return st && i < st->nbatch_rows ? st->batch_rows[i] : -1;
}

int64_t mcim_store_changes(mcim_store_t *st)
{
  return st ? st->ops->changes(st->conn) : 0;
}

/* query_one: forward the first row, then stop the statement; `stopped` tells our
 * own stop apart from a cause the caller's callback returned. */
struct one_ctx {
  mcim_row_cb cb;
  void *arg;
  bool seen;
  bool stopped;
};

static mcim_cause_t one_row(const mcim_row_t *row, void *arg)
{
  struct one_ctx *ctx = arg;
  ctx->seen = true;
  if (ctx->cb) {
    mcim_cause_t rc = ctx->cb(row, ctx->arg);
    if (rc != MCIM_OK)
      return rc;
  }
  ctx->stopped = true;
  return MCIM_INTERNAL;
}

mcim_cause_t mcim_store_query_one(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                  size_t nparams, mcim_row_cb cb, void *arg)
{
  struct one_ctx ctx = {cb, arg, false, false};
  mcim_cause_t rc = mcim_store_exec(st, sql, params, nparams, one_row, &ctx);
  if (ctx.stopped)
    return MCIM_OK;
  if (rc == MCIM_OK && !ctx.seen)
    return MCIM_NOT_FOUND;
  return rc;
}

struct int_ctx {
  int64_t v;
  bool null;
};

static mcim_cause_t int_row(const mcim_row_t *row, void *arg)
{
  struct int_ctx *ctx = arg;
  ctx->null = mcim_row_type(row, 0) != MCIM_VAL_INT;
  ctx->v = mcim_row_int(row, 0);
  return MCIM_OK;
}

mcim_cause_t mcim_store_query_int(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                  size_t nparams, int64_t *out)
{
  struct int_ctx ctx = {0, true};
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = mcim_store_query_one(st, sql, params, nparams, int_row, &ctx);
  if (rc != MCIM_OK)
    return rc;
  if (ctx.null)
    return MCIM_NOT_FOUND;
  *out = ctx.v;
  return MCIM_OK;
}

/* ---- row getters ---- */

static const mcim_val_t *col_at(const mcim_row_t *row, size_t col)
{
  if (!row || !row->cols || col >= row->ncols)
    return NULL;
  return &row->cols[col];
}

size_t mcim_row_ncols(const mcim_row_t *row)
{
  return row ? row->ncols : 0;
}

mcim_val_type_t mcim_row_type(const mcim_row_t *row, size_t col)
{
  const mcim_val_t *v = col_at(row, col);
  return v ? v->type : MCIM_VAL_NULL;
}

bool mcim_row_is_null(const mcim_row_t *row, size_t col)
{
  return mcim_row_type(row, col) == MCIM_VAL_NULL;
}

int64_t mcim_row_int(const mcim_row_t *row, size_t col)
{
  const mcim_val_t *v = col_at(row, col);
  return (v && v->type == MCIM_VAL_INT) ? v->i : 0;
}

const char *mcim_row_text(const mcim_row_t *row, size_t col)
{
  const mcim_val_t *v = col_at(row, col);
  return (v && v->type == MCIM_VAL_TEXT) ? v->s : NULL;
}

const uint8_t *mcim_row_blob(const mcim_row_t *row, size_t col, size_t *len)
{
  const mcim_val_t *v = col_at(row, col);
  bool ok = v && v->type == MCIM_VAL_BLOB;
  if (len)
    *len = ok ? v->len : 0;
  return ok ? v->p : NULL;
}

const char *mcim_row_name(const mcim_row_t *row, size_t col)
{
  if (!row || !row->names || col >= row->ncols)
    return NULL;
  return row->names[col];
}

/* ---- placeholder rewriting for PostgreSQL ---- */

mcim_cause_t mcim_store_sql_to_dollar(const char *sql, char **out, size_t *nparams)
{
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  char *buf = NULL;
  size_t n = 0, o = 0;

  if (!sql || !out)
    goto cleanup;
  *out = NULL;
  /* Each `?` becomes at most "$" + 20 digits. */
  size_t len = strlen(sql), qs = 0;
  for (size_t i = 0; i < len; i++)
    qs += sql[i] == '?';
  rc = MCIM_NO_MEMORY;
  buf = malloc(len + qs * 21 + 1);
  if (!buf)
    goto cleanup;

  for (size_t i = 0; i < len;) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      /* Quoted string or identifier; a doubled quote is an escaped one, and is
       * handled by leaving and re-entering. */
      size_t j = i + 1;
      while (j < len && sql[j] != c)
        j++;
      j = j < len ? j + 1 : len;
      memcpy(buf + o, sql + i, j - i);
      o += j - i;
      i = j;
    } else if (c == '-' && sql[i + 1] == '-') {
      size_t j = i;
      while (j < len && sql[j] != '\n')
        j++;
      memcpy(buf + o, sql + i, j - i);
      o += j - i;
      i = j;
    } else if (c == '/' && sql[i + 1] == '*') {
      const char *end = strstr(sql + i + 2, "*/");
      size_t j = end ? (size_t)(end - sql) + 2 : len;
      memcpy(buf + o, sql + i, j - i);
      o += j - i;
      i = j;
    } else if (c == '?') {
      n++;
      char num[24];
      int w = snprintf(num, sizeof(num), "$%zu", n);
      memcpy(buf + o, num, (size_t)w);
      o += (size_t)w;
      i++;
    } else {
      buf[o++] = c;
      i++;
    }
  }
  buf[o] = '\0';
  *out = buf;
  buf = NULL;
  if (nparams)
    *nparams = n;
  rc = MCIM_OK;

cleanup:
  free(buf);
  return rc;
}

void mcim_store_locator_for_log(const char *locator, char *out, size_t len)
{
  if (!out || !len)
    return;
  out[0] = '\0';
  if (!locator)
    return;
  const char *scheme = strstr(locator, "://");
  const char *auth = scheme ? scheme + 3 : NULL;
  const char *at = auth ? strchr(auth, '@') : NULL;
  const char *slash = auth ? strchr(auth, '/') : NULL;
  const char *colon = auth ? strchr(auth, ':') : NULL;
  /* user:password@ must sit before the first '/' of the path */
  if (at && (!slash || at < slash) && colon && colon < at)
    snprintf(out, len, "%.*s***%s", (int)(colon + 1 - locator), locator, at);
  else
    snprintf(out, len, "%s", locator);
  if (!scheme)
    return;
  /* libpq takes a password as a query parameter too: ...?password=X&... */
  char *q = strchr(out, '?');
  while (q) {
    char *key = q + 1;
    char *next = strchr(key, '&');
    if (strncmp(key, "password=", 9) == 0) {
      char *val = key + 9;
      size_t rest = next ? strlen(next) : 0;
      if ((size_t)(val - out) + 3 + rest < len) {
        memmove(val + 3, next ? next : val + strlen(val), rest + 1);
        memcpy(val, "***", 3);
        next = next ? val + 3 : NULL;
      } else {
        *val = '\0'; /* no room for the stars: cut */
        next = NULL;
      }
    }
    q = next;
  }
}
