/* agent.db: the procedures the agent runs (one row each, the state machine's position and
 * what earlier steps produced) and the trace of the messages it sent. The trace table has
 * the layout of the roles' (src/roles/common.c, component "common") so that one reader
 * serves both; the JSON of an event is the same too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device/device_priv.h"
#include "mcim/crashpoint.h"
#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/trace.h"
#include "mcim/trace_store.h"
#include "mcim/util.h"

static const mcim_migration_t device_migrations[] = {
    {1, "agent: trace (roles' layout) and procedures",
     "CREATE TABLE trace (id TEXT PRIMARY KEY, txn TEXT NOT NULL, step BIGINT NOT NULL,"
     " from_name TEXT NOT NULL, to_name TEXT NOT NULL, msg TEXT NOT NULL,"
     " time_us BIGINT NOT NULL, cause TEXT, body TEXT);"
     "CREATE INDEX trace_txn ON trace (txn, time_us);"
     "CREATE TABLE procedures (txn TEXT PRIMARY KEY, kind TEXT NOT NULL, via TEXT,"
     " sho TEXT NOT NULL, state TEXT NOT NULL, stage TEXT NOT NULL, step BIGINT NOT NULL,"
     " result TEXT, cause TEXT, detail TEXT, data TEXT NOT NULL, created BIGINT NOT NULL,"
     " deadline BIGINT NOT NULL, since BIGINT NOT NULL, updated BIGINT NOT NULL);"
     /* One procedure at a time (the agent checks it too; this makes it a database fact). */
     "CREATE UNIQUE INDEX procedures_one_running ON procedures (state) WHERE state = 'running';"
     "CREATE INDEX procedures_updated ON procedures (updated)"},
    /* The purge (dev_store_purge) at every procedure's end: the ended procedures in the
     * order it cuts them (with `state`, which SQLite 3.40 otherwise reads from the row for
     * the index's own condition: the index alone answers), and the trace by time for the
     * rows of no procedure (without it, a scan of the whole trace at each end). */
    {2, "agent: indexes of the purge of ended procedures and old trace rows",
     "CREATE INDEX procedures_ended ON procedures (updated, txn, state)"
     " WHERE state <> 'running';"
     "CREATE INDEX trace_time ON trace (time_us)"},
    /* The undo of a switch the RO has not taken yet, asked again (preprovisioned.c,
     * dev_undo_round): its procedure is kept by the purge until then. */
    {3, "agent: the undo of a switch, until the RO takes it",
     "CREATE TABLE undo_due (txn TEXT PRIMARY KEY, next_at BIGINT NOT NULL,"
     " attempts BIGINT NOT NULL)"},
};

mcim_cause_t dev_store_migrate(mcim_store_t *st)
{
  return mcim_store_migrate(st, "device", device_migrations,
                            sizeof(device_migrations) / sizeof(device_migrations[0]));
}

mcim_store_t *dev_store_lock(struct mcim_device *d)
{
  pthread_mutex_lock(&d->store_lock);
  return d->store;
}

void dev_store_unlock(struct mcim_device *d)
{
  pthread_mutex_unlock(&d->store_lock);
}

/* ---- trace ---- */

int64_t dev_now_us(void)
{
  return mcim_now_us();
}

void dev_trace_put(mcim_store_t *st, const char *txn, int n, const char *from, const char *to,
                   const char *msg, const json_t *body, mcim_cause_t cause)
{
  dev_trace_put_at(st, dev_now_us(), txn, n, from, to, msg, body, cause);
}

void dev_trace_put_at(mcim_store_t *st, int64_t time_us, const char *txn, int n, const char *from,
                      const char *to, const char *msg, const json_t *body, mcim_cause_t cause)
{
  if (!txn || !from || !to || !msg)
    return;
  mcim_cause_t rc = mcim_trace_store_put(st, time_us, txn, n, from, to, msg, body, cause);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, txn, n, rc, "trace event not recorded: %s",
                   st ? mcim_store_errmsg(st) : "no store");
  mcim_log_event(cause == MCIM_OK ? MCIM_LOG_INFO : MCIM_LOG_WARN, txn, n, cause, "%s -> %s: %s",
                 from, to, msg);
}

void dev_trace(struct mcim_device *d, const char *txn, int n, const char *to, const char *msg,
               const json_t *body, mcim_cause_t cause)
{
  dev_trace_at(d, dev_now_us(), txn, n, to, msg, body, cause);
}

/* Held rows: a worker round traces one to three messages, and each row was a transaction
 * of its own (about 6% of the agent's CPU under loadgen, docs/performance.md); held, they
 * ride on the round's procedure save, or go together at the round's end. A crash of the agent
 * in the round loses them, as an OS crash lost a relaxed row: the trace is for people. */
static bool holding(const struct mcim_device *d)
{
  return d->trace_holding && pthread_equal(d->trace_holder, pthread_self());
}

static void hold_row(struct mcim_device *d, int64_t time_us, const char *txn, int n,
                     const char *to, const char *msg, const json_t *body, mcim_cause_t cause)
{
  json_t *row = json_pack("{s:I,s:s,s:i,s:s,s:s,s:i}", "t", (json_int_t)time_us, "txn", txn,
                          "n", n, "to", to, "msg", msg, "cause", (int)cause);
  if (row && body)
    json_object_set_new(row, "body", mcim_trace_redact(body));
  if (!d->trace_held)
    d->trace_held = json_array();
  if (!row || !d->trace_held || json_array_append(d->trace_held, row) != 0) {
    /* out of memory: written now, as without holding */
    json_decref(row);
    dev_trace_put_at(d->store, time_us, txn, n, d->name, to, msg, body, cause);
    return;
  }
  json_decref(row);
  mcim_log_event(cause == MCIM_OK ? MCIM_LOG_INFO : MCIM_LOG_WARN, txn, n, cause, "%s -> %s: %s",
                 d->name, to, msg);
}

/* The held rows into `st` (inside the caller's transaction, if any); the store is locked. They
 * stay held until the caller knows its transaction committed (forget_held). */
static void write_held(struct mcim_device *d, mcim_store_t *st)
{
  size_t i;
  json_t *row;
  if (!d->trace_held)
    return;
  json_array_foreach(d->trace_held, i, row)
  {
    const char *txn = json_string_value(json_object_get(row, "txn"));
    const char *to = json_string_value(json_object_get(row, "to"));
    const char *msg = json_string_value(json_object_get(row, "msg"));
    int n = (int)json_integer_value(json_object_get(row, "n"));
    mcim_cause_t cause = (mcim_cause_t)json_integer_value(json_object_get(row, "cause"));
    mcim_cause_t rc = mcim_trace_store_put(st, json_integer_value(json_object_get(row, "t")), txn,
                                           n, d->name, to, msg, json_object_get(row, "body"),
                                           cause);
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_WARN, txn, n, rc, "trace event not recorded: %s",
                     mcim_store_errmsg(st));
  }
}

static void forget_held(struct mcim_device *d)
{
  if (d->trace_held)
    json_array_clear(d->trace_held);
}

void dev_trace_hold(struct mcim_device *d)
{
  dev_store_lock(d);
  d->trace_holding = true;
  d->trace_holder = pthread_self();
  dev_store_unlock(d);
}

void dev_trace_release(struct mcim_device *d)
{
  mcim_store_t *st = dev_store_lock(d);
  if (d->trace_held && json_array_size(d->trace_held) > 0) {
    bool txn = mcim_store_begin_relaxed(st) == MCIM_OK;
    write_held(d, st);
    if (txn && mcim_store_commit(st) != MCIM_OK)
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_STORE_ERROR, "trace events not recorded: %s",
                     mcim_store_errmsg(st));
    forget_held(d); /* the last chance: written or logged */
  }
  d->trace_holding = false;
  dev_store_unlock(d);
}

mcim_cause_t dev_proc_save_held(struct mcim_device *d, mcim_store_t *st, const struct dev_proc *p)
{
  if (!holding(d) || !d->trace_held || json_array_size(d->trace_held) == 0 ||
      mcim_store_in_txn(st) || mcim_store_begin(st) != MCIM_OK)
    return dev_proc_save_memo(st, &d->data_memo, p);
  write_held(d, st);
  mcim_cause_t rc = dev_proc_save_memo(st, &d->data_memo, p);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_OK) {
    forget_held(d);
    return rc;
  }
  /* the save is what matters: again on its own (an absolute update); the rows stay held for
   * the round's end */
  return dev_proc_save_memo(st, &d->data_memo, p);
}

void dev_trace_at(struct mcim_device *d, int64_t time_us, const char *txn, int n, const char *to,
                  const char *msg, const json_t *body, mcim_cause_t cause)
{
  if (!txn) {
    mcim_log_event(cause == MCIM_OK ? MCIM_LOG_INFO : MCIM_LOG_WARN, NULL, n, cause,
                   "%s -> %s: %s", d->name, to, msg);
    return;
  }
  if (mcim_crashpoint_armed())
    mcim_crashpoint_note(txn, n);
  mcim_store_t *st = dev_store_lock(d);
  if (holding(d))
    hold_row(d, time_us, txn, n, to, msg, body, cause);
  else
    dev_trace_put_at(st, time_us, txn, n, d->name, to, msg, body, cause);
  dev_store_unlock(d);
}

mcim_cause_t dev_trace_load(mcim_store_t *st, const char *txn, json_t **events)
{
  return mcim_trace_store_load(st, txn, events);
}

/* ---- procedures ---- */

#define PROC_COLS                                                                              \
  "txn, kind, via, sho, state, stage, step, result, cause, detail, data, created, deadline,"   \
  " since, updated"

void dev_proc_clear(struct dev_proc *p)
{
  if (!p)
    return;
  json_decref(p->data);
  memset(p, 0, sizeof(*p));
}

static void copy_col(const mcim_row_t *row, size_t col, char *dst, size_t len)
{
  const char *s = mcim_row_text(row, col);
  snprintf(dst, len, "%s", s ? s : "");
}

void dev_data_memo_clear(struct dev_data_memo *m)
{
  if (!m)
    return;
  free(m->text);
  json_decref(m->tree);
  memset(m, 0, sizeof(*m));
}

/* `text` and `tree` (both taken) become the memo; either NULL: the memo empties. */
static void memo_keep(struct dev_data_memo *m, char *text, size_t len, json_t *tree)
{
  dev_data_memo_clear(m);
  if (!text || !tree) {
    free(text);
    json_decref(tree);
    return;
  }
  m->text = text;
  m->len = len;
  m->tree = tree;
}

struct proc_read {
  struct dev_proc *p;
  struct dev_data_memo *memo; /* NULL: parse */
};

/* The data column's parse: a copy of the memo's tree when the column is its text byte for
 * byte, else json_loads (then kept in the memo). NULL: out of memory (with *oom) or no
 * object. */
static json_t *data_parse(struct dev_data_memo *m, const char *text, bool *oom)
{
  json_t *data;
  size_t len;

  *oom = false;
  if (!text)
    return NULL;
  len = strlen(text);
  if (m && m->tree && len == m->len && memcmp(text, m->text, len) == 0) {
    data = json_deep_copy(m->tree);
    *oom = data == NULL;
    return data;
  }
  data = json_loads(text, 0, NULL);
  if (m && json_is_object(data)) {
    char *copy = malloc(len + 1);
    if (copy)
      memcpy(copy, text, len + 1);
    memo_keep(m, copy, len, json_deep_copy(data));
  }
  return data;
}

static mcim_cause_t proc_row(const mcim_row_t *row, void *arg)
{
  struct proc_read *rd = arg;
  struct dev_proc *p = rd->p;
  json_t *data;
  bool oom;

  dev_proc_clear(p);
  copy_col(row, 0, p->txn, sizeof(p->txn));
  copy_col(row, 1, p->kind, sizeof(p->kind));
  copy_col(row, 2, p->via, sizeof(p->via));
  copy_col(row, 3, p->sho, sizeof(p->sho));
  copy_col(row, 4, p->state, sizeof(p->state));
  copy_col(row, 5, p->stage, sizeof(p->stage));
  p->n = (int)mcim_row_int(row, 6);
  copy_col(row, 7, p->result, sizeof(p->result));
  copy_col(row, 8, p->cause, sizeof(p->cause));
  copy_col(row, 9, p->detail, sizeof(p->detail));
  /* A data column that does not parse (a damaged file) restarts the step with nothing: the
   * steps re-create what they need, and the network side is idempotent. */
  data = data_parse(rd->memo, mcim_row_text(row, 10), &oom);
  if (oom)
    return MCIM_NO_MEMORY;
  if (!json_is_object(data)) {
    json_decref(data);
    data = json_object();
  }
  if (!data)
    return MCIM_NO_MEMORY;
  p->data = data;
  p->created = mcim_row_int(row, 11);
  p->deadline = mcim_row_int(row, 12);
  p->since = mcim_row_int(row, 13);
  p->updated = mcim_row_int(row, 14);
  return MCIM_OK;
}

mcim_cause_t dev_proc_load(mcim_store_t *st, const char *txn, struct dev_proc *p)
{
  mcim_val_t v[] = {MCIM_TEXT(txn)};
  struct proc_read rd = {p, NULL};
  return mcim_store_query_one(st, "SELECT " PROC_COLS " FROM procedures WHERE txn = ?", v, 1,
                              proc_row, &rd);
}

/* The row without its data column (NULL in its place: proc_row gives an empty object), for
 * the views (dev_proc_json shows no data): loadgen reads it after every round, and parsing the
 * data (3.5 kB of JSON) was about 4% of its samples. */
mcim_cause_t dev_proc_view(mcim_store_t *st, const char *txn, struct dev_proc *p)
{
  mcim_val_t v[] = {MCIM_TEXT(txn)};
  struct proc_read rd = {p, NULL};
  return mcim_store_query_one(st,
                              "SELECT txn, kind, via, sho, state, stage, step, result, cause,"
                              " detail, NULL, created, deadline, since, updated"
                              " FROM procedures WHERE txn = ?",
                              v, 1, proc_row, &rd);
}

mcim_cause_t dev_proc_running(mcim_store_t *st, struct dev_proc *p)
{
  return dev_proc_running_memo(st, NULL, p);
}

/* The worker reads the running procedure at every round (about 10 a procedure) and parsed
 * its 3.5 kB data each time: 7% of the device's instructions (docs/performance.md). */
mcim_cause_t dev_proc_running_memo(mcim_store_t *st, struct dev_data_memo *m, struct dev_proc *p)
{
  struct proc_read rd = {p, m};
  return mcim_store_query_one(st,
                              "SELECT " PROC_COLS " FROM procedures WHERE state = 'running'"
                              " ORDER BY created",
                              NULL, 0, proc_row, &rd);
}

mcim_cause_t dev_proc_latest(mcim_store_t *st, struct dev_proc *p)
{
  return mcim_store_query_one(st,
                              "SELECT " PROC_COLS " FROM procedures"
                              " ORDER BY CASE state WHEN 'running' THEN 0 ELSE 1 END,"
                              " updated DESC, created DESC",
                              NULL, 0, proc_row, &(struct proc_read){p, NULL});
}

static char *data_text(const struct dev_proc *p)
{
  return p->data ? mcim_json_dumps(p->data) : strdup("{}");
}

mcim_cause_t dev_procs_running(mcim_store_t *st, int64_t *n)
{
  *n = 0;
  return mcim_store_query_int(st, "SELECT COUNT(*) FROM procedures WHERE state = 'running'",
                              NULL, 0, n);
}

mcim_cause_t dev_proc_insert(mcim_store_t *st, const struct dev_proc *p)
{
  char *data = NULL;
  int64_t running = 0;
  mcim_cause_t rc = mcim_store_begin(st);

  if (rc != MCIM_OK)
    goto cleanup;
  rc = dev_procs_running(st, &running);
  if (rc == MCIM_OK && running > 0)
    rc = MCIM_DEVICE_BUSY;
  if (rc != MCIM_OK)
    goto cleanup;
  data = p->data ? json_dumps(p->data, JSON_COMPACT) : strdup("{}");
  if (!data) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  mcim_val_t v[] = {MCIM_TEXT(p->txn),   MCIM_TEXT(p->kind),  MCIM_TEXT(p->via[0] ? p->via : NULL),
                    MCIM_TEXT(p->sho),   MCIM_TEXT(p->state), MCIM_TEXT(p->stage),
                    MCIM_INT(p->n),      MCIM_TEXT(NULL),     MCIM_TEXT(NULL),
                    MCIM_TEXT(NULL),     MCIM_TEXT(data),     MCIM_INT(p->created),
                    MCIM_INT(p->deadline), MCIM_INT(p->since), MCIM_INT(p->updated)};
  rc = mcim_store_exec(st, "INSERT INTO procedures (" PROC_COLS ") VALUES"
                           " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       v, MCIM_NPARAMS(v), NULL, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_store_commit(st);
cleanup:
  if (mcim_store_in_txn(st))
    mcim_store_rollback(st);
  free(data);
  return rc;
}

mcim_cause_t dev_proc_save(mcim_store_t *st, const struct dev_proc *p)
{
  return dev_proc_save_memo(st, NULL, p);
}

/* A save with the memo (dev_proc_running_memo): data the step did not change is not dumped
 * again (a dump of the 3.5 kB was 165,000 instructions, at each of about 12 saves a
 * procedure); changed data is dumped and becomes the memo with a copy of itself, which is
 * its parse: the dump of a jansson object reads back as an equal object (doubles with 17
 * digits, strings valid UTF-8), save a string holding NUL (read back as no object at all),
 * which is not kept. Kept before the commit is known: the memo says only which tree some text
 * parses to, so a save rolled back or a row written since by someone else costs a parse,
 * never a stale tree. */
mcim_cause_t dev_proc_save_memo(mcim_store_t *st, struct dev_data_memo *m, const struct dev_proc *p)
{
  bool same = m && m->tree && p->data && json_equal(p->data, m->tree);
  char *dump = same ? NULL : data_text(p);
  const char *data = same ? m->text : dump;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!data)
    goto cleanup;
  mcim_val_t v[] = {MCIM_TEXT(p->state),
                    MCIM_TEXT(p->stage),
                    MCIM_INT(p->n),
                    MCIM_TEXT(p->result[0] ? p->result : NULL),
                    MCIM_TEXT(p->cause[0] ? p->cause : NULL),
                    MCIM_TEXT(p->detail[0] ? p->detail : NULL),
                    MCIM_TEXT(data),
                    MCIM_INT(p->since),
                    MCIM_INT(p->updated),
                    MCIM_TEXT(p->txn)};
  rc = mcim_store_exec(st,
                       "UPDATE procedures SET state = ?, stage = ?, step = ?, result = ?,"
                       " cause = ?, detail = ?, data = ?, since = ?, updated = ? WHERE txn = ?",
                       v, MCIM_NPARAMS(v), NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_NOT_FOUND;
  if (rc != MCIM_OK || !m)
    goto cleanup;
  if (strcmp(p->state, "running") != 0) {
    dev_data_memo_clear(m); /* no round reads an ended procedure */
  } else if (dump && json_is_object(p->data) && !strstr(dump, "\\u0000")) {
    memo_keep(m, dump, strlen(dump), json_deep_copy(p->data));
    dump = NULL;
  }
cleanup:
  free(dump);
  return rc;
}

json_t *dev_proc_json(const struct dev_proc *p)
{
  json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:I,s:I,s:I}", "txn", p->txn, "kind", p->kind,
                        "sho", p->sho, "state", p->state, "step", p->n, "stage", p->stage,
                        "created", (json_int_t)p->created, "updated", (json_int_t)p->updated,
                        "deadline", (json_int_t)p->deadline);
  if (!j)
    return NULL;
  json_object_set_new(j, "via", p->via[0] ? json_string(p->via) : json_null());
  json_object_set_new(j, "result", p->result[0] ? json_string(p->result) : json_null());
  json_object_set_new(j, "cause", p->cause[0] ? json_string(p->cause) : json_null());
  if (p->detail[0])
    json_object_set_new(j, "detail", json_string(p->detail));
  return j;
}

/* ---- bounds: what agent.db keeps ---- */

/* The ended procedures that go, bound as (keep, upto, below, upto_txn): never `keep`; of the
 * others, those updated before `below` and those updated at `upto` with a txn up to upto_txn.
 * The count's cut, (updated, txn) at most (u, t): upto = below = u, upto_txn = t. The age
 * alone: upto = below - 1, upto_txn NULL (which no txn compares with). */
#define PROC_GONE                                                                              \
  "state <> 'running' AND txn <> ? AND updated <= ? AND (updated < ? OR txn <= ?)"           \
  " AND txn NOT IN (SELECT txn FROM undo_due)"

struct purge_cut {
  int64_t updated;
  char txn[DEV_TXN_LEN + 1];
};

static mcim_cause_t cut_row(const mcim_row_t *row, void *arg)
{
  struct purge_cut *c = arg;
  c->updated = mcim_row_int(row, 0);
  copy_col(row, 1, c->txn, sizeof(c->txn));
  return MCIM_OK;
}

mcim_cause_t dev_store_purge(mcim_store_t *st, int64_t now, int64_t retention, int64_t max,
                             const char *keep, int64_t *procs, int64_t *rows)
{
  struct purge_cut cut = {0};
  int64_t below = now - retention, gone = 0, traced = 0;
  const char *upto_txn = NULL;
  const char *other = keep ? keep : ""; /* "" is no txn (32 hex digits) */
  mcim_cause_t rc = mcim_store_begin_relaxed(st);

  if (rc != MCIM_OK)
    goto cleanup;
  /* the newest ended procedure beyond the `max` most recent (`keep` the most recent of all,
   * whatever its second: one that ended in the same second as another stays) */
  mcim_val_t cv[] = {MCIM_TEXT(other), MCIM_INT(max < 1 ? 0 : keep ? max - 1 : max)};
  rc = mcim_store_query_one(st,
                            "SELECT updated, txn FROM procedures WHERE state <> 'running'"
                            " AND txn <> ? ORDER BY updated DESC, txn DESC LIMIT 1 OFFSET ?",
                            cv, MCIM_NPARAMS(cv), cut_row, &cut);
  if (rc == MCIM_OK && cut.updated >= below) {
    below = cut.updated; /* the count cuts later than the age */
    upto_txn = cut.txn;
  }
  if (rc != MCIM_OK && rc != MCIM_NOT_FOUND)
    goto cleanup;
  mcim_val_t gv[] = {MCIM_TEXT(other), MCIM_INT(upto_txn ? below : below - 1), MCIM_INT(below),
                     MCIM_TEXT(upto_txn)};
  rc = mcim_store_exec(st,
                       "DELETE FROM trace WHERE txn IN (SELECT txn FROM procedures WHERE "
                       PROC_GONE ")", gv, MCIM_NPARAMS(gv), NULL, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  traced = mcim_store_changes(st);
  rc = mcim_store_exec(st, "DELETE FROM procedures WHERE " PROC_GONE, gv, MCIM_NPARAMS(gv), NULL,
                       NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  gone = mcim_store_changes(st);
  /* rows of no procedure (an attach of the control API, a PCID renewal or a deferred notice
   * between procedures, the notice of a procedure purged already): by their age alone */
  mcim_val_t ov[] = {MCIM_INT((now - retention) * 1000000)};
  rc = mcim_store_exec(st,
                       "DELETE FROM trace WHERE time_us < ? AND NOT EXISTS"
                       " (SELECT 1 FROM procedures p WHERE p.txn = trace.txn)",
                       ov, MCIM_NPARAMS(ov), NULL, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  traced += mcim_store_changes(st);
  rc = mcim_store_commit(st);
cleanup:
  if (mcim_store_in_txn(st))
    mcim_store_rollback(st);
  if (procs)
    *procs = rc == MCIM_OK ? gone : 0;
  if (rows)
    *rows = rc == MCIM_OK ? traced : 0;
  return rc;
}

void dev_records_purge(struct mcim_device *d, mcim_store_t *st, const char *keep)
{
  int64_t procs = 0, rows = 0;
  mcim_cause_t rc = dev_store_purge(st, mcim_now(), dev_cfg_int(d, "record_retention"),
                                    dev_cfg_int(d, "records_max"), keep, &procs, &rows);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "agent.db: ended procedures not purged: %s",
                   mcim_store_errmsg(st));
  else if (procs > 0 || rows > 0)
    mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK,
                   "agent.db: %lld ended procedures and %lld trace rows purged"
                   " (record_retention, records_max)",
                   (long long)procs, (long long)rows);
}
