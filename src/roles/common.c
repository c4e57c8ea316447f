/* What every role keeps in its store besides its own tables: the trace of each
 * procedure, the answers it gave (idempotency per txn and step), the jti it has
 * seen (replay cache) and the outbox (its table here, its messages in outbox.c); and the
 * housekeeping that drops what has served its time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcim/crashpoint.h"
#include "mcim/log.h"
#include "mcim/trace.h"
#include "mcim/trace_store.h"
#include "mcim/util.h"
#include "roles/peer_limit.h"
#include "roles/role_priv.h"

static const mcim_migration_t common_migrations[] = {
    {1, "trace, answers, replay cache, outbox",
     "CREATE TABLE trace (id TEXT PRIMARY KEY, txn TEXT NOT NULL, step BIGINT NOT NULL,"
     " from_name TEXT NOT NULL, to_name TEXT NOT NULL, msg TEXT NOT NULL,"
     " time_us BIGINT NOT NULL, cause TEXT, body TEXT);"
     "CREATE INDEX trace_txn ON trace (txn, time_us);"
     "CREATE TABLE answers (txn TEXT NOT NULL, step BIGINT NOT NULL, what TEXT NOT NULL,"
     " status BIGINT NOT NULL, answer TEXT NOT NULL, created BIGINT NOT NULL,"
     " PRIMARY KEY (txn, step, what));"
     "CREATE TABLE replay (iss TEXT NOT NULL, jti TEXT NOT NULL, expires BIGINT NOT NULL,"
     " PRIMARY KEY (iss, jti));"
     "CREATE TABLE outbox (id TEXT PRIMARY KEY, peer TEXT NOT NULL, path TEXT NOT NULL,"
     " body TEXT NOT NULL, txn TEXT NOT NULL, step BIGINT NOT NULL, msg TEXT NOT NULL,"
     " state TEXT NOT NULL, attempts BIGINT NOT NULL, next_at BIGINT NOT NULL,"
     " created BIGINT NOT NULL, last_cause TEXT);"
     "CREATE INDEX outbox_due ON outbox (state, next_at)"},
    {2, "outbox: a retry budget per message (NULL: outbox_max_attempts)",
     "ALTER TABLE outbox ADD COLUMN max_attempts BIGINT"},
    /* The housekeeping's deletes by age (each second) and the purge's (each minute) run under
     * the writers' lock: scanning a whole table there stalls every writer of the role (issue
     * 10, point 6; bench/drf_scale.sh: at 1,000,000 devices the RO's answers took 8 ms a
     * second, its trace 100 ms a minute, by full scans). */
    {3, "indexes for the deletes by age: answers, replay, outbox, trace",
     "CREATE INDEX answers_created ON answers (created);"
     "CREATE INDEX replay_expires ON replay (expires);"
     "CREATE INDEX outbox_done ON outbox (state, created);"
     "CREATE INDEX trace_time ON trace (time_us)"},
    /* Messages sent in the order they were written (mcim_role_outbox_put_chained): the undo
     * of a switch resumes the current SHO only after the target's suspend is delivered. */
    {4, "outbox: chains of messages sent in order (chain, chain_pos, after_id, ready_at)",
     "ALTER TABLE outbox ADD COLUMN chain TEXT;"
     "ALTER TABLE outbox ADD COLUMN chain_pos BIGINT;"
     "ALTER TABLE outbox ADD COLUMN after_id TEXT;"
     "ALTER TABLE outbox ADD COLUMN ready_at BIGINT;"
     "CREATE INDEX outbox_chain ON outbox (chain, chain_pos)"},
    /* The flood bounds counted by all instances together (src/roles/peer_limit.c). */
    {5, "peer_counts: the counts of the bounds per peer and window", mcim_peer_counts_schema_sql},
};

mcim_cause_t mcim_role_common_migrate(mcim_store_t *st)
{
  return mcim_store_migrate(st, "common", common_migrations,
                            sizeof(common_migrations) / sizeof(common_migrations[0]));
}

/* ---- trace ---- */

void mcim_role_trace(struct mcim_role *r, const char *txn, int step, const char *from,
                     const char *to, const char *msg, const json_t *body, mcim_cause_t cause)
{
  mcim_role_trace_at(r, mcim_now_us(), txn, step, from, to, msg, body, cause);
}

/* A refusal is traced at most traced_refusals_per_hour times per counterpart `key` (DESIGN.md
 * section 10): a device whose TRE signs a statement for any txn its agent names could
 * otherwise add a row per request, each in a txn of its own, kept record_retention. Beyond it
 * the refusal is logged, which is where a flood shows. */
static void trace_keyed(struct mcim_role *r, const char *key, int64_t time_us, const char *txn,
                        int step, const char *from, const char *to, const char *msg,
                        const json_t *body, mcim_cause_t cause)
{
  mcim_store_t *st = mcim_role_store(r);
  if (!st || !txn)
    return;
  if (mcim_crashpoint_armed())
    mcim_crashpoint_note(txn, step);
  int64_t max = mcim_config_int(r->cfg, "traced_refusals_per_hour");
  bool admitted = true;
  if (cause != MCIM_OK &&
      (!mcim_peer_limit_admit(&r->priv->traced_refusals, key, time_us / 1000000, max, NULL) ||
       (mcim_peer_limit_admit_db(st, "traced_refusals", key, time_us / 1000000, 3600, max,
                                 &admitted, NULL) == MCIM_OK &&
        !admitted))) {
    mcim_log_event(MCIM_LOG_WARN, txn, step, cause,
                   "%s -> %s: %s (not traced: traced_refusals_per_hour of %s this hour)", from,
                   to, msg, key ? key : "?");
    return;
  }
  mcim_cause_t rc = mcim_trace_store_put(st, time_us, txn, step, from, to, msg, body, cause);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, txn, step, rc, "trace event not recorded: %s",
                   mcim_store_errmsg(st));
  mcim_log_event(cause == MCIM_OK ? MCIM_LOG_INFO : MCIM_LOG_WARN, txn, step, cause,
                 "%s -> %s: %s", from, to, msg);
}

void mcim_role_trace_at(struct mcim_role *r, int64_t time_us, const char *txn, int step,
                        const char *from, const char *to, const char *msg, const json_t *body,
                        mcim_cause_t cause)
{
  /* the counterpart: the end of the message that is not this role */
  const char *other = from && r->name && strcmp(from, r->name) != 0 ? from : to;
  trace_keyed(r, other, time_us, txn, step, from, to, msg, body, cause);
}

void mcim_role_trace_refusal(struct mcim_role *r, const char *key, const char *txn, int step,
                             const char *from, const char *to, const char *msg,
                             mcim_cause_t cause)
{
  trace_keyed(r, key, mcim_now_us(), txn, step, from, to, msg, NULL, cause);
}

mcim_cause_t mcim_role_trace_load(struct mcim_role *r, const char *txn, json_t **events)
{
  mcim_store_t *st = mcim_role_store(r);
  return st ? mcim_trace_store_load(st, txn, events) : MCIM_STORE_ERROR;
}

/* ---- per-party bounds ---- */

struct count_min {
  int64_t n, earliest;
};

static mcim_cause_t count_min_row(const mcim_row_t *row, void *arg)
{
  struct count_min *c = arg;
  c->n = mcim_row_int(row, 0);
  c->earliest = mcim_row_int(row, 1);
  return MCIM_OK;
}

json_int_t mcim_notice_seq(const mcim_statement_t *stmt)
{
  json_t *seq = stmt ? json_object_get(stmt->payload, "seq") : NULL;
  json_int_t v = json_is_integer(seq) ? json_integer_value(seq) : 0;
  return v > 0 ? v : 0;
}

mcim_cause_t mcim_role_count_below(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                   size_t nparams, int64_t max, int64_t lapse, mcim_cause_t busy,
                                   int64_t *wait)
{
  struct count_min c = {0, 0};
  mcim_cause_t rc = mcim_store_query_one(st, sql, params, nparams, count_min_row, &c);
  if (rc != MCIM_OK || c.n < max)
    return rc;
  *wait = c.earliest + lapse - mcim_now();
  if (*wait < 1)
    *wait = 1;
  return busy;
}

/* ---- answers (idempotency) ---- */

struct answer_out {
  int *status;
  json_t **answer;
};

static mcim_cause_t answer_row(const mcim_row_t *row, void *arg)
{
  struct answer_out *o = arg;
  *o->status = (int)mcim_row_int(row, 0);
  *o->answer = json_loads(mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "null",
                          JSON_DECODE_ANY, NULL);
  return *o->answer ? MCIM_OK : MCIM_STORE_ERROR;
}

mcim_cause_t mcim_role_answer_get(mcim_store_t *st, const char *txn, int step, const char *what,
                                  int *status, json_t **answer)
{
  struct answer_out o = {status, answer};
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_INT(step), MCIM_TEXT(what)};
  return mcim_store_query_one(st,
                              "SELECT status, answer FROM answers WHERE txn = ? AND step = ?"
                              " AND what = ?",
                              p, MCIM_NPARAMS(p), answer_row, &o);
}

mcim_cause_t mcim_role_answer_put(mcim_store_t *st, const char *txn, int step, const char *what,
                                  int status, const json_t *answer)
{
  char *text = json_dumps(answer, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!text)
    return MCIM_NO_MEMORY;
  mcim_val_t p[] = {MCIM_TEXT(txn),   MCIM_INT(step),     MCIM_TEXT(what),
                    MCIM_INT(status), MCIM_TEXT(text),    MCIM_INT(mcim_now())};
  mcim_cause_t rc = mcim_store_exec(
      st,
      "INSERT INTO answers (txn, step, what, status, answer, created) VALUES (?, ?, ?, ?, ?, ?)",
      p, MCIM_NPARAMS(p), NULL, NULL);
  free(text);
  return rc;
}

/* ---- replay cache on the store ---- */

static mcim_cause_t replay_check_and_insert(void *ctx, const char *iss, const char *jti,
                                            int64_t expires, int64_t now)
{
  struct mcim_role *r = ctx;
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  /* Drop an expired record of the same id first: it can be used again (it would fail the
   * exp check anyway), and the insert below then decides atomically. */
  mcim_val_t d[] = {MCIM_TEXT(iss), MCIM_TEXT(jti), MCIM_INT(now)};
  mcim_cause_t rc = mcim_store_exec(
      st, "DELETE FROM replay WHERE iss = ? AND jti = ? AND expires < ?", d, 3, NULL, NULL);
  if (rc != MCIM_OK)
    return rc;
  mcim_val_t p[] = {MCIM_TEXT(iss), MCIM_TEXT(jti), MCIM_INT(expires)};
  rc = mcim_store_exec(st, "INSERT INTO replay (iss, jti, expires) VALUES (?, ?, ?)", p, 3, NULL,
                       NULL);
  return rc == MCIM_CONFLICT ? MCIM_REPLAY : rc;
}

void mcim_role_replay_init(struct mcim_role *r)
{
  r->priv->replay.check_and_insert = replay_check_and_insert;
  r->priv->replay.ctx = r;
}

void mcim_role_replay_fini(struct mcim_role *r)
{
  (void)r;
}

const mcim_replay_cache_t *mcim_role_replay(struct mcim_role *r)
{
  return &r->priv->replay;
}

/* ---- housekeeping ---- */

/* Records of finished procedures go once they are record_retention old (issue 8, point 8:
 * nothing lives forever): the trace of every role and what the kind names (its `purge`).
 * At most once a minute (or once per retention, when shorter): the trace has no index on
 * time alone and a sweep scans it. One transaction: a failure leaves everything for the
 * next sweep. */
static void purge_finished(struct mcim_role *r, mcim_store_t *st, int64_t now)
{
  int64_t keep = mcim_config_duration(r->cfg, "record_retention");
  int64_t every = keep < 60 ? keep : 60;
  if (now - r->priv->purged_at < every)
    return;
  r->priv->purged_at = now;
  int64_t cutoff = now - keep;
  int64_t deleted = 0;
  mcim_cause_t rc = mcim_store_begin(st);
  mcim_val_t tp[] = {MCIM_INT(cutoff * 1000000)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st, "DELETE FROM trace WHERE time_us < ?", tp, 1, NULL, NULL);
  if (rc == MCIM_OK)
    deleted += mcim_store_changes(st);
  for (const char *const *sql = r->kind->purge; rc == MCIM_OK && sql && *sql; sql++) {
    mcim_val_t p[] = {MCIM_INT(cutoff)};
    rc = mcim_store_exec(st, *sql, p, 1, NULL, NULL);
    if (rc == MCIM_OK)
      deleted += mcim_store_changes(st);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "purge of finished records: %s",
                   mcim_store_errmsg(st));
  else if (deleted > 0)
    mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK,
                   "%lld records of procedures finished before record_retention deleted",
                   (long long)deleted);
}

void mcim_role_housekeeping(struct mcim_role *r)
{
  int64_t now = mcim_now();
  if (now == r->priv->housekeeping_at)
    return;
  r->priv->housekeeping_at = now;
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return;
  /* a jti past its statement's expiry (and the skew) can never verify again */
  mcim_val_t rp[] = {MCIM_INT(now - mcim_config_duration(r->cfg, "clock_skew"))};
  mcim_cause_t rc = mcim_store_exec(st, "DELETE FROM replay WHERE expires < ?", rp, 1, NULL, NULL);
  int64_t keep = mcim_config_duration(r->cfg, "answer_retention");
  mcim_val_t ap[] = {MCIM_INT(now - keep)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st, "DELETE FROM answers WHERE created < ?", ap, 1, NULL, NULL);
  mcim_val_t op[] = {MCIM_INT((now - keep) * 1000)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "DELETE FROM outbox WHERE state IN ('delivered', 'failed') AND"
                         " created < ?",
                         op, 1, NULL, NULL);
  if (rc == MCIM_OK) /* the windows are a minute or an hour long: a day keeps every live one */
    rc = mcim_peer_limit_purge_db(st, now - 86400);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "housekeeping: %s", mcim_store_errmsg(st));
  purge_finished(r, st, now);
}
