/* Notifications the device owes the network, queued in the TRE (include/mcim/tre.h
 * pending/pending_done): the discard receipts of a change via the pristine state (every SHO
 * whose MCIM step 3 removed is told after the device is provisioned elsewhere), or of a
 * change via the old SHO whose step 9 could not reach it. They survive restarts (they live in
 * the TRE) and go out at every `full` attach until the RO's DPF accepts them: the device has
 * no live token of their SHO, so the RO relays them (POST ro /v1/dpf/notices,
 * src/roles/ro/relay.c). Also the worker's work between procedures: those deliveries, and a
 * PCID renewal the VNO asked for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/util.h"

mcim_cause_t dev_ack_verify(struct mcim_device *d, struct mcim_http_lite *cli, const char *sho,
                            const char *txn, const char *ack)
{
  mcim_statement_t *st = NULL;
  mcim_jws_expect_t ex = {.iss = sho,
                          .aud = dev_cfg_str(d, "ro"),
                          .sub = d->name,
                          .typ = "mcim-discard-ack+jwt",
                          .txn = txn,
                          .skew = dev_cfg_int(d, "clock_skew")};
  mcim_cause_t key_rc = MCIM_OK;
  mcim_cause_t rc = dev_peer_verify(d, cli, sho, ack, &ex, &st, &key_rc);
  if (rc == MCIM_OK && !json_is_true(json_object_get(st->payload, "released")))
    rc = MCIM_CLAIM_MISMATCH;
  mcim_statement_free(st);
  return rc;
}

mcim_cause_t dev_notice_relay(struct mcim_device *d, struct mcim_http_lite *cli,
                              const char *txn, const char *to, const char *statement,
                              const char *cert, const char *token, const char *msg,
                              struct mcim_http_result *res)
{
  const char *ro = dev_cfg_str(d, "ro");
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", d->name, "to", to,
                           "statement", statement, "tre_cert", cert);
  json_t *tb = json_pack("{s:s,s:s}", "txn", txn, "to", to);
  int64_t sent = dev_now_us();
  mcim_cause_t rc =
      body ? dev_call(d, cli, "POST", ro, "/v1/dpf/notices", body, token, res) : MCIM_NO_MEMORY;
  dev_trace_at(d, sent, txn, 0, ro, msg, tb, rc);
  json_decref(body);
  json_decref(tb);
  return rc;
}

/* One queued notification, a discard receipt: handed to the RO's DPF, which relays it to the
 * SHO it is addressed to (the device holds no live token of that SHO any more, and never
 * shows one SHO's token to another). The RO's acceptance is the delivery. Its SHO_NOT_LINKED
 * is final too: no DRF entry links the device to that SHO any more (the SHO released it, or
 * never had it), and none will, so the notice leaves the queue instead of being signed and
 * posted again at every full attach. That cause only: a FORBIDDEN comes as well from a token
 * whose network named another device, which a hostile network can mint to have the device
 * drop the old SHO's discard notice for good (review of 2026-12-07). REGISTRATION_PENDING
 * (a switch notice: the SHO's entry on its way; an RO before 2026-12-07 gave it for discard
 * receipts too), FORBIDDEN and everything else stay queued, up to the TRE's
 * MCIM_TRE_PENDING_LIFETIME. */
static mcim_cause_t deliver_one(struct mcim_device *d, struct mcim_http_lite *cli,
                                const char *to, const char *txn, const char *statement,
                                const char *cert, const char *token, bool *transient)
{
  struct mcim_http_result res = {0};
  mcim_cause_t rc = dev_notice_relay(d, cli, txn, to, statement, cert, token,
                                     "DPF: deferred discard notification (relayed to the old SHO)",
                                     &res);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "deferred notice to %s not accepted by the RO: %s",
                   to, res.detail[0] ? res.detail : mcim_cause_text(rc));
  if (rc != MCIM_OK && transient && dev_cause_retry(rc, res.status))
    *transient = true;
  bool refused = rc == MCIM_SHO_NOT_LINKED && res.status == 403;
  if (refused)
    mcim_log_event(MCIM_LOG_WARN, txn, 0, rc,
                   "deferred notice to %s dropped: %s is not linked to this device any more", to,
                   to);
  if (rc == MCIM_OK || refused) {
    dev_tre_point(MCIM_CRASH_BEFORE_TRE); /* in a procedure's `notify` stage only */
    mcim_cause_t done = d->tre->ops->pending_done(d->tre->ctx, to, txn);
    if (done == MCIM_OK)
      dev_tre_point(MCIM_CRASH_AFTER_TRE);
    if (done != MCIM_OK && done != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_WARN, txn, 0, done, "the %s notice is still queued",
                     refused ? "refused" : "relayed");
  }
  mcim_http_result_clear(&res);
  return rc;
}

int dev_notify_pending(struct mcim_device *d, struct mcim_http_lite *cli, const char *network,
                       const char *token, bool *transient)
{
  json_t *list = NULL, *e;
  char *cert = NULL;
  size_t i;
  int delivered = 0;
  mcim_cause_t rc = d->tre->ops->pending(d->tre->ctx, dev_cfg_int(d, "statement_lifetime"), &list);

  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "cannot read the TRE's queued notifications");
    return -1;
  }
  if (json_array_size(list) == 0)
    goto cleanup;
  rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
    delivered = -1;
    goto cleanup;
  }
  json_array_foreach(list, i, e) {
    const char *to = dev_json_str(e, "to", 63);
    const char *txn = dev_json_str(e, "txn", DEV_TXN_LEN);
    const char *typ = dev_json_str(e, "typ", 63);
    const char *stmt = dev_json_str(e, "statement", MCIM_JOSE_MAX_LEN);
    if (!to || !txn || !typ || !stmt)
      continue;
    if (strcmp(typ, "mcim-discard+jwt") != 0) {
      mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_UNSUPPORTED,
                     "queued notification of type %s for %s: not delivered by this agent", typ,
                     to);
      continue;
    }
    mcim_log_event(MCIM_LOG_INFO, txn, 0, MCIM_OK,
                   "handing the queued discard notice for %s to the RO (over %s)", to,
                   network);
    if (deliver_one(d, cli, to, txn, stmt, cert, token, transient) == MCIM_OK)
      delivered++;
  }
cleanup:
  json_decref(list);
  free(cert);
  return delivered;
}

/* The TRE's queue size, without signing anything: the status view lists it. */
static size_t pending_count(struct mcim_device *d)
{
  json_t *view = NULL;
  size_t n = 0;
  if (d->tre->ops->status(d->tre->ctx, &view) == MCIM_OK)
    n = json_array_size(json_object_get(view, "pending"));
  json_decref(view);
  return n;
}

void dev_idle_round(struct mcim_device *d, struct mcim_http_lite *cli)
{
  char net[64], *token = NULL, scope[16];

  pthread_mutex_lock(&d->lock);
  bool any = d->notify_due || d->pcid_renew_due;
  pthread_mutex_unlock(&d->lock);
  if (!any)
    return;
  /* a running procedure does these itself, in its own steps: whether there is one, not its
   * row (dev_proc_running parses its data: 4% of the device's instructions under loadgen,
   * where an attach of every procedure sets notify_due; callgrind, docs/performance.md) */
  int64_t running = 0;
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_procs_running(st, &running);
  dev_store_unlock(d);
  if (rc != MCIM_OK || running > 0)
    return;

  if (dev_flag_take(d, &d->notify_due) && pending_count(d) > 0 &&
      dev_session_full(d, net, &token) == MCIM_OK) {
    dev_notify_pending(d, cli, net, token, NULL);
    mcim_wipe(token, strlen(token));
    free(token);
    token = NULL;
  }
  if (dev_flag_take(d, &d->pcid_renew_due)) {
    /* the VNO said so at an attach outside a procedure: renew over that session */
    const char *vno = dev_cfg_str(d, "vno");
    char why[256] = "", txn[DEV_TXN_LEN + 1];
    uint8_t rnd[DEV_TXN_LEN / 2];
    long status = 0;
    rc = dev_session_get(d, vno, &token, scope);
    if (rc == MCIM_OK)
      rc = mcim_random(rnd, sizeof(rnd));
    if (rc == MCIM_OK) {
      /* its own procedure id: what `mcim trace` finds the renewal under */
      mcim_hex_encode(rnd, sizeof(rnd), txn);
      rc = dev_pcid_renew(d, cli, txn, token, &status, why, sizeof(why));
    }
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc,
                     "PCID renewal asked for by %s not done: %s (asked again at the next contact)",
                     vno, why[0] ? why : mcim_cause_text(rc));
    if (token) {
      mcim_wipe(token, strlen(token));
      free(token);
    }
  }
}
