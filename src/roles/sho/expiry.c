/* SHO: nothing of an abandoned procedure lives forever (issue 8, point 8). An order that has
 * not reached its subscriber's device within `order_lifetime` (the device never came, the
 * owner gave up, a peer stayed away) fails with TIMEOUT; the MCIM made for it (AuC entry
 * `pending`, never activated) is terminated, so no AV is ever made for it. An order whose MCIM
 * is installed and waits only for the old SHO's release (change step 11) is left alone: the
 * device holds that MCIM, and the RO's fallback (a TRE-signed receipt) releases it. Attach
 * sessions that were never answered go after `attach_lifetime` (src/roles/access.c). The
 * orders of a device's previous owners end the same way, with NOT_OWNER, when its new owner's
 * first order comes (mcim_sho_orders_end_older, called by order.c): those with no package yet,
 * and those with one beyond the newest orders_open_max. */
#include <stdio.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/util.h"
#include "roles/access.h"
#include "roles/auc.h"
#include "roles/auc_sync.h"
#include "roles/sho/sho.h"

#define SWEEP_BATCH 64

struct stale {
  char txn[40], imsi[24], state[16], procedure[16];
};

struct stale_batch {
  struct stale s[SWEEP_BATCH];
  size_t n;
};

static mcim_cause_t stale_row(const mcim_row_t *row, void *arg)
{
  struct stale_batch *b = arg;
  if (b->n == SWEEP_BATCH)
    return MCIM_OK;
  struct stale *s = &b->s[b->n++];
  snprintf(s->txn, sizeof(s->txn), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(s->imsi, sizeof(s->imsi), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  snprintf(s->state, sizeof(s->state), "%s", mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  snprintf(s->procedure, sizeof(s->procedure), "%s",
           mcim_row_text(row, 3) ? mcim_row_text(row, 3) : "");
  return MCIM_OK;
}

/* One live order failed with `cause` and, if its MCIM was made, the MCIM terminated, in the
 * caller's transaction: both or none. */
static mcim_cause_t end_order(struct mcim_role *r, mcim_store_t *st, const struct stale *s,
                              mcim_cause_t cause)
{
  mcim_cause_t rc = MCIM_OK;
  if (strcmp(s->state, "provisioning") == 0) {
    rc = mcim_auc_terminate(st, s->imsi);
    if (rc == MCIM_NOT_FOUND)
      rc = MCIM_OK;
    if (rc == MCIM_OK) /* and out of the HLR (the sweep's sync, or a later tick) */
      rc = mcim_auc_sync_want(r, st, s->imsi, false);
  }
  return rc == MCIM_OK ? mcim_sho_order_set_state(st, s->txn, s->state, "failed", cause) : rc;
}

static mcim_cause_t expire_order(struct mcim_role *r, mcim_store_t *st, const struct stale *s)
{
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc == MCIM_OK)
    rc = end_order(r, st, s, MCIM_TIMEOUT);
  return rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
}

/* One batch of `sql` (the rows of stale_row; parameters p), each ended NOT_OWNER and
 * recorded in `ended`; *more when the batch was full. */
static mcim_cause_t end_batch(struct mcim_role *r, mcim_store_t *st, const char *sql,
                              const mcim_val_t *p, size_t np, struct mcim_sho_ended *ended,
                              bool *more)
{
  struct stale_batch b = {.n = 0};
  mcim_cause_t rc = mcim_store_exec(st, sql, p, np, stale_row, &b);
  for (size_t i = 0; rc == MCIM_OK && i < b.n; i++) {
    rc = end_order(r, st, &b.s[i], MCIM_NOT_OWNER);
    if (rc == MCIM_OK && ended->n < MCIM_SHO_ENDED_MAX) {
      struct mcim_sho_ended_order *e = &ended->o[ended->n++];
      snprintf(e->txn, sizeof(e->txn), "%s", b.s[i].txn);
      snprintf(e->state, sizeof(e->state), "%s", b.s[i].state);
      snprintf(e->procedure, sizeof(e->procedure), "%s", b.s[i].procedure);
    }
  }
  *more = rc == MCIM_OK && b.n == SWEEP_BATCH;
  return rc;
}

mcim_cause_t mcim_sho_orders_end_older(struct mcim_role *r, mcim_store_t *st, const char *device,
                                       int64_t epoch, struct mcim_sho_ended *ended)
{
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_INT(epoch),
                    MCIM_INT(mcim_config_int(r->cfg, "orders_open_max"))};
  mcim_cause_t rc = MCIM_OK;
  bool more = true;
  ended->n = 0;
  /* Those with no package yet. Batches until none is left (orders_open_max may be above
   * one): each one ended leaves the next query. */
  while (rc == MCIM_OK && more)
    rc = end_batch(r, st,
                   "SELECT txn, imsi, state, procedure FROM orders WHERE device = ? AND state IN"
                   " ('ordered', 'validating') AND owner_epoch < ? LIMIT 64",
                   p, 2, ended, &more);
  /* `provisioning` ones have their package, and the device may have installed it already (its
   * report still on the way): a new owner's order terminating what the device holds would cut
   * it off, so the newest orders_open_max of them are left to their report or to
   * order_lifetime. Only the newest: an owner that drove orders to their packages before each
   * handover to keys of its own would otherwise keep that many more live after each (review of
   * 2026-12-08), and a device runs one procedure at a time. */
  more = true;
  while (rc == MCIM_OK && more)
    rc = end_batch(r, st,
                   "SELECT txn, imsi, state, procedure FROM orders WHERE device = ? AND"
                   " state = 'provisioning' AND owner_epoch < ? ORDER BY created DESC, txn"
                   " LIMIT 64 OFFSET ?",
                   p, 3, ended, &more);
  return rc;
}

void mcim_sho_orders_ended_report(const char *device, const struct mcim_sho_ended *ended)
{
  for (size_t i = 0; i < ended->n; i++) {
    const struct mcim_sho_ended_order *e = &ended->o[i];
    mcim_metric_inc(&mcim_m_procedures_failed,
                    MCIM_LABELS(e->procedure, mcim_cause_name(MCIM_NOT_OWNER)));
    mcim_log_event(MCIM_LOG_NOTICE, e->txn, 0, MCIM_NOT_OWNER,
                   "order of %s's previous owner ended in state %s: the device has a new owner",
                   device, e->state);
  }
}

bool mcim_sho_expire(struct mcim_role *r)
{
  mcim_store_t *st = mcim_role_store(r);
  struct stale_batch b = {.n = 0};
  if (!st)
    return false;
  mcim_val_t p[] = {MCIM_INT(mcim_now() - mcim_config_duration(r->cfg, "order_lifetime"))};
  if (mcim_store_exec(st,
                      "SELECT txn, imsi, state, procedure FROM orders WHERE state IN"
                      " ('ordered', 'validating', 'provisioning') AND created <= ? LIMIT 64",
                      p, 1, stale_row, &b) != MCIM_OK)
    return false;
  for (size_t i = 0; i < b.n; i++) {
    mcim_cause_t rc = expire_order(r, st, &b.s[i]);
    if (rc == MCIM_WRONG_STATE)
      continue; /* it moved on meanwhile */
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_WARN, b.s[i].txn, 0, rc, "abandoned order not expired yet");
      continue;
    }
    mcim_metric_inc(&mcim_m_procedures_failed,
                    MCIM_LABELS(b.s[i].procedure, mcim_cause_name(MCIM_TIMEOUT)));
    mcim_log_event(MCIM_LOG_WARN, b.s[i].txn, 0, MCIM_TIMEOUT,
                   "order abandoned in state %s after order_lifetime: failed%s", b.s[i].state,
                   strcmp(b.s[i].state, "provisioning") == 0
                       ? "; its MCIM (never activated) is terminated"
                       : "");
  }
  mcim_access_purge(r);
  bool synced = mcim_auc_sync_tick(r); /* what the HLR should hold and does not yet */
  return b.n > 0 || synced;
}
