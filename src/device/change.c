/* Change of subscription (seed 5.1.3.8.4.2 and 5.1.3.8.4.3) and the variant with
 * pre-provisioned MCIMs, device side (docs/protocol.md, "Change of subscription,
 * pre-provisioned MCIMs and PCID renewal"). The engine is in procedures.c, the shared steps
 * in initial.c and package.c; the tables here say which steps, in which order, with which
 * seed numbers.
 *
 * Change via the old SHO (steps 1-14; 1 and 3, 5, 6, 13, 14 are the network's):
 *   attach-old  2   attach to the old SHO (the active slot): full connectivity
 *   pcid        -   PCID credential near expiry: renew it first (over that connectivity)
 *   nonce       4   the PVA's nonce (the new SHO asked at step 3)
 *   quote       4   TRE quote -> PVA (verdict to the new SHO: 5)
 *   download    7   the new SHO's package (6) from the DPF, staged whole and verified
 *   discard     8   TRE: destroy the old MCIM and its AVs, queue the signed receipt
 *   receipt     9   receipt -> old SHO with the old SHO's token; its ack (10) in the answer
 *   release     11  ack -> DPF (relayed to the new SHO, privacy-filtered)
 *   install     12  TRE install: the new MCIM is the active one
 *   report      12  TRE-signed status -> DPF (report to the new SHO: 13)
 *   attach-sho  -   attach to the new SHO until it activated (14)
 *
 * Change via the pristine state (steps 1-15):
 *   pcid        -   as above (over the old connectivity: the PCID must work at step 4)
 *   discard     3   TRE: remove the old MCIM (PCID kept), queue the deferred notice
 *   attach..report, attach-sho   4-15: initial provisioning with the new SHO
 *   notify      -   deliver the queued notices over the new full access (step 0)
 *
 * The pre-provisioned MCIMs' procedures (preload, switch): their tables and the switch's steps
 * are in preprovisioned.c; the PCID step (dev_st_pcid) here serves preload too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/role.h" /* mcim_jws_peek_claim */
#include "mcim/util.h"

/* ---- the TRE's slots ---- */

mcim_cause_t dev_tre_slots(struct mcim_device *d, char active[64], const char *slot,
                           char state[16])
{
  json_t *view = NULL, *s;
  size_t i;
  mcim_cause_t rc = d->tre->ops->status(d->tre->ctx, &view);

  active[0] = '\0';
  if (state)
    state[0] = '\0';
  if (rc != MCIM_OK)
    return rc;
  json_array_foreach(json_object_get(view, "slots"), i, s) {
    const char *name = json_string_value(json_object_get(s, "slot"));
    const char *st = json_string_value(json_object_get(s, "state"));
    if (!name || !st)
      continue;
    if (strcmp(st, "active") == 0)
      snprintf(active, 64, "%s", name);
    if (slot && state && strcmp(name, slot) == 0)
      snprintf(state, 16, "%s", st);
  }
  json_decref(view);
  return MCIM_OK;
}

/* ---- what a procedure needs to start ---- */

mcim_cause_t dev_procedure_prepare(struct mcim_device *d, const struct dev_instruction *ins,
                                   json_t **data, char *err, size_t errlen)
{
  char active[64], target[16];
  const char *vno = dev_cfg_str(d, "vno");
  mcim_cause_t rc = dev_tre_slots(d, active, ins->sho, target);

  *data = NULL;
  err[0] = '\0';
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "the TRE does not answer: %s", mcim_cause_text(rc));
    return rc;
  }
  rc = MCIM_WRONG_STATE;
  /* kind is an array in *ins, never NULL: clang 14's analyzer assumes it may be, from
   * dev_tre_slots's check of its slot argument (ins->sho) */
  // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
  if (strcmp(ins->kind, "initial") == 0) {
    /* initial provisioning reaches the network through the VNO with the PCID */
    *data = json_pack("{s:s}", "access", vno);
  } else if (strcmp(ins->kind, "change") == 0) {
    if (strcmp(active, ins->sho) == 0) {
      snprintf(err, errlen, "the device already subscribes to %s (its active MCIM)", ins->sho);
      return rc;
    }
    if (strcmp(ins->via, "old-sho") == 0) {
      if (!active[0]) {
        snprintf(err, errlen, "a change via the old SHO needs an active MCIM (there is none:"
                              " use via pristine, or initial)");
        return rc;
      }
      *data = json_pack("{s:s,s:s,s:s}", "access", active, "old", active, "renew_via", active);
    } else {
      /* the old SHO (if any) is told later, from the TRE's queue */
      *data = json_pack("{s:s,s:s}", "access", vno, "renew_via", active[0] ? active : vno);
      if (*data && active[0])
        json_object_set_new(*data, "old", json_string(active));
    }
  } else if (strcmp(ins->kind, "preload") == 0) {
    if (!d->tre->ops->install_inactive) {
      snprintf(err, errlen, "this TRE cannot hold an inactive MCIM");
      return MCIM_UNSUPPORTED;
    }
    if (strcmp(active, ins->sho) == 0) {
      snprintf(err, errlen, "%s holds the active MCIM: nothing to pre-provision", ins->sho);
      return rc;
    }
    const char *via = active[0] ? active : vno;
    *data = json_pack("{s:s,s:s}", "access", via, "renew_via", via);
  } else if (strcmp(ins->kind, "switch") == 0) {
    if (!target[0]) {
      snprintf(err, errlen, "the TRE holds no MCIM of %s to switch to", ins->sho);
      return rc;
    }
    if (strcmp(target, "active") == 0) {
      snprintf(err, errlen, "the MCIM of %s is the active one already", ins->sho);
      return rc;
    }
    if (!active[0]) {
      snprintf(err, errlen, "no active MCIM to switch from (the network could not be told)");
      return rc;
    }
    /* the VNO once the current SHO's session is gone: the switch's notices through the RO
     * need no token of the current SHO (a dead or hostile one, preprovisioned.c) */
    *data = json_pack("{s:s,s:s,s:s}", "access", active, "old", active, "access_fallback", vno);
  } else {
    snprintf(err, errlen, "unknown procedure \"%s\"", ins->kind);
    return MCIM_UNSUPPORTED;
  }
  if (!*data) {
    snprintf(err, errlen, "out of memory");
    return MCIM_NO_MEMORY;
  }
  return MCIM_OK;
}

/* ---- PCID renewal at the start of a change or a preload ---- */

#define RENEW_TRIES 3

char *dev_quiet_token(struct dev_run *r, const char *net, mcim_cause_t *rc, long *status,
                      char *why, size_t len)
{
  char *token = NULL, scope[16];
  struct dev_attach_result ar;
  *status = 0;
  if ((*rc = dev_session_get(r->d, net, &token, scope)) == MCIM_OK)
    return token;
  *rc = dev_attach(r->d, r->cli, net, r->p->txn, &ar);
  if (*rc == MCIM_OK)
    *rc = dev_session_get(r->d, net, &token, scope);
  if (*rc != MCIM_OK) {
    *status = ar.http_status;
    snprintf(why, len, "attach to %.63s: %.180s", net,
             ar.detail[0] ? ar.detail : mcim_cause_text(*rc));
  }
  return token;
}

/* The seed: "when, during a MCIM re-provisioning process due to change of SHO, the M2ME
 * senses that its existing initial network access credential is about to expire, the M2ME
 * may request and receive a new initial network access credential". Nothing happens when
 * the PCID credential lives longer than `pcid_renew_margin`. A renewal that fails does not
 * stop the procedure, unless it is a change and the PCID has expired already: then step 4
 * (pristine) or step 11 (via the old SHO, over the VNO) could not work, and failing now keeps
 * the old MCIM (step 3 / 8 has not run). */
void dev_st_pcid(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  int64_t expires = 0;
  long status = 0;
  char why[256] = "";
  mcim_cause_t rc = MCIM_OK;
  char *token = NULL;

  if (dev_data_bool(p, "pcid_checked") || !dev_pcid_renewal_near(d, &expires)) {
    r->out = OUT_NEXT;
    return;
  }
  const char *via = dev_data_str(p, "renew_via") ? dev_data_str(p, "renew_via")
                                                   : dev_data_str(p, "access");
  mcim_log_event(MCIM_LOG_NOTICE, p->txn, 0, MCIM_OK,
                 "the PCID credential expires in %lld s (margin %lld s): renewing it first",
                 (long long)(expires - mcim_now()), (long long)dev_cfg_int(d, "pcid_renew_margin"));
  token = via ? dev_quiet_token(r, via, &rc, &status, why, sizeof(why)) : NULL;
  if (token)
    rc = dev_pcid_renew(d, r->cli, p->txn, token, &status, why, sizeof(why));
  else if (!via)
    rc = MCIM_INTERNAL;
  free(token);
  if (rc == MCIM_OK) {
    dev_data_set_bool(p, "pcid_checked", true);
    r->out = OUT_NEXT;
    return;
  }
  json_int_t tries = json_integer_value(json_object_get(p->data, "renew_tries")) + 1;
  json_object_set_new(p->data, "renew_tries", json_integer(tries));
  if (dev_cause_retry(rc, status) && tries < RENEW_TRIES) {
    dev_run_wait(r, rc, "PCID renewal: %s (retrying)", why[0] ? why : mcim_cause_text(rc));
    return;
  }
  bool change = strcmp(p->kind, "change") == 0;
  bool pristine = change && strcmp(p->via, "pristine") == 0;
  if (pristine && expires <= mcim_now()) {
    dev_run_fail(r, MCIM_CREDENTIAL_EXPIRED,
                 "the PCID credential has expired and could not be renewed (%s): the pristine"
                 " path could not attach at step 4, the old MCIM is kept",
                 why[0] ? why : mcim_cause_text(rc));
    return;
  }
  /* The old-SHO path too (model finding F1): after step 10 the device reaches the DPF through
   * the VNO with the PCID (step 11); going on would discard the MCIM at step 8 and then fail
   * at step 11, leaving no working credential at all. */
  if (change && strcmp(p->via, "old-sho") == 0 && expires <= mcim_now()) {
    dev_run_fail(r, MCIM_CREDENTIAL_EXPIRED,
                 "the PCID credential has expired and could not be renewed (%s): the change"
                 " via the old SHO needs it at step 11, the old MCIM is kept",
                 why[0] ? why : mcim_cause_text(rc));
    return;
  }
  mcim_log_event(MCIM_LOG_WARN, p->txn, 0, rc,
                 "PCID renewal failed (%s): going on with the current credential",
                 why[0] ? why : mcim_cause_text(rc));
  dev_data_set_bool(p, "pcid_checked", true);
  r->out = OUT_NEXT;
}

/* ---- change via the old SHO ---- */

/* The old SHO's session, kept in agent.db from step 8 (which destroys the credential it was
 * obtained with) until the receipt is acknowledged: a restart in between must still reach
 * the old SHO (DESIGN.md invariant 3). agent.db is 0600 and the token is a bearer token of
 * network access only, short-lived; it never goes into a trace, a log or an answer. */
mcim_cause_t dev_session_save(struct dev_run *r, const char *net)
{
  char *token = NULL, scope[16];
  json_t *exp = NULL;
  mcim_cause_t rc = dev_session_get(r->d, net, &token, scope);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_jws_peek_claim(token, "exp", &exp);
  json_t *saved = rc == MCIM_OK && json_is_integer(exp)
                      ? json_pack("{s:s,s:s,s:s,s:O}", "network", net, "token", token, "scope",
                                  scope, "expires", exp)
                      : NULL;
  if (saved) {
    json_object_set_new(r->p->data, "saved_token", saved);
    rc = MCIM_OK;
  } else if (rc == MCIM_OK) {
    rc = MCIM_NO_MEMORY;
  }
  mcim_wipe(token, strlen(token));
  free(token);
  json_decref(exp);
  return rc;
}

/* Pristine step 3: back to the pristine state. EVERY MCIM goes, the active one and any
 * inactive (pre-provisioned) one, each with its discard notice queued in the same atomic
 * write (delivered later through the RO's relay); only the PCID credentials stay. The
 * sessions of those SHOs are dropped: their connectivity is not the device's any more. */
static void pristine_discard(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  json_t *removed = NULL, *e;
  size_t i;
  mcim_cause_t rc = MCIM_OK;

  dev_tre_point(MCIM_CRASH_BEFORE_TRE);
  if (d->tre->ops->pristine) {
    rc = d->tre->ops->pristine(d->tre->ctx, p->txn, &removed);
  } else {
    /* a TRE without the operation: slot by slot (each discard is atomic on its own) */
    json_t *view = NULL, *sl;
    removed = json_array();
    rc = removed ? d->tre->ops->status(d->tre->ctx, &view) : MCIM_NO_MEMORY;
    json_array_foreach(json_object_get(view, "slots"), i, sl) {
      const char *slot = json_string_value(json_object_get(sl, "slot"));
      if (rc == MCIM_OK && slot && (rc = d->tre->ops->discard(d->tre->ctx, slot, p->txn)) == MCIM_OK)
        json_array_append_new(removed, json_string(slot));
    }
    json_decref(view);
  }
  if (rc == MCIM_OK)
    dev_tre_point(MCIM_CRASH_AFTER_TRE);
  json_t *tb = json_pack("{s:O?}", "removed", removed);
  dev_trace(d, p->txn, p->n, "tre",
            json_array_size(removed) || rc != MCIM_OK
                ? "remove the old MCIMs (active and inactive), back to the pristine state"
                : "no MCIM to remove: the device is pristine already",
            tb, rc);
  json_decref(tb);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE could not return to the pristine state: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  json_array_foreach(removed, i, e)
    dev_session_drop(d, json_string_value(e));
  dev_data_set_bool(p, "discarded", true);
  r->out = OUT_NEXT;
cleanup:
  json_decref(removed);
}

/* The TRE did step 8 of this txn already: no slot of `old` left and its discard receipt for
 * (old, txn) queued (what tre_op_discard converges on for a retry). */
static bool tre_discarded(struct mcim_device *d, const char *old, const char *txn)
{
  json_t *view = NULL, *e;
  size_t i;
  bool slot = false, queued = false;
  if (d->tre->ops->status(d->tre->ctx, &view) != MCIM_OK)
    return false;
  json_array_foreach(json_object_get(view, "slots"), i, e) {
    const char *s = json_string_value(json_object_get(e, "slot"));
    slot = slot || (s && strcmp(s, old) == 0);
  }
  json_array_foreach(json_object_get(view, "pending"), i, e) {
    const char *to = json_string_value(json_object_get(e, "to"));
    const char *x = json_string_value(json_object_get(e, "txn"));
    queued = queued || (to && x && strcmp(to, old) == 0 && strcmp(x, txn) == 0);
  }
  json_decref(view);
  return !slot && queued;
}

/* 8 (old SHO path): the TRE destroys the old MCIM (K, OPc, SQN array) and, in the same atomic
 * write, queues the signed discard receipt for the old SHO. */
static void st_discard(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *old = dev_data_str(p, "old");
  char *token = NULL;

  if (dev_data_bool(p, "discarded")) {
    r->out = OUT_NEXT;
    return;
  }
  if (strcmp(p->via, "old-sho") != 0) {
    pristine_discard(r);
    return;
  }
  if (!old) {
    dev_run_fail(r, MCIM_INTERNAL, "the procedure does not know the old SHO");
    return;
  }
  /* The agent died after the TRE's discard and before its own save (model finding F3): the
   * TRE first. Asking for the old SHO's token first needs an attach with the MCIM just
   * destroyed once the saved token expired (NOT_FOUND, the change failed after step 8); the
   * receipt stage goes to the RO at once when no session is left. */
  if (tre_discarded(d, old, p->txn)) {
    dev_trace(d, p->txn, p->n, "tre", "the old SHO's MCIM was discarded already (restart)",
              NULL, MCIM_OK);
    dev_data_set_bool(p, "discarded", true);
    r->out = OUT_NEXT;
    return;
  }
  /* steps 9-10 need the old SHO's session after its credential is gone: have a live one
   * (attach again while it is still possible) and keep it for a restart */
  token = dev_run_token_for(r, old);
  if (!token)
    return;
  if (dev_session_save(r, old) != MCIM_OK || dev_run_save(r) != MCIM_OK) {
    dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the old SHO's session before step 8");
    goto cleanup;
  }
  dev_tre_point(MCIM_CRASH_BEFORE_TRE);
  mcim_cause_t rc = d->tre->ops->discard(d->tre->ctx, old, p->txn);
  if (rc == MCIM_OK)
    dev_tre_point(MCIM_CRASH_AFTER_TRE);
  dev_trace(d, p->txn, p->n, "tre", "discard the old SHO's MCIM and AVs", NULL, rc);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE could not discard the MCIM of %s: %s", old, mcim_cause_text(rc));
    goto cleanup;
  }
  dev_data_set_bool(p, "discarded", true);
  r->out = OUT_NEXT;
cleanup:
  free(token);
}

/* After step 10 (or the fallback of step 11): the old SHO ended the subscription, which
 * revoked its tokens. The device drops that session at once and finishes over restricted
 * access through the VNO (the RO is all it still needs to reach). */
static void leave_old_sho(struct dev_run *r, const char *old)
{
  dev_session_drop(r->d, old);
  json_object_del(r->p->data, "saved_token");
  json_object_del(r->p->data, "access_fallback");
  dev_data_set_str(r->p, "access", dev_cfg_str(r->d, "vno"));
}

/* The signed notification the TRE queued for (to, txn), fresh (signed now). */
static mcim_cause_t queued_statement(struct mcim_device *d, const char *to, const char *txn,
                                     char **jws)
{
  json_t *list = NULL, *e;
  size_t i;
  mcim_cause_t rc = d->tre->ops->pending(d->tre->ctx, dev_cfg_int(d, "statement_lifetime"), &list);
  *jws = NULL;
  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_NOT_FOUND;
  json_array_foreach(list, i, e) {
    const char *t = json_string_value(json_object_get(e, "to"));
    const char *x = json_string_value(json_object_get(e, "txn"));
    const char *s = json_string_value(json_object_get(e, "statement"));
    if (t && x && s && strcmp(t, to) == 0 && strcmp(x, txn) == 0) {
      *jws = strdup(s);
      rc = *jws ? MCIM_OK : MCIM_NO_MEMORY;
      break;
    }
  }
  json_decref(list);
  return rc;
}

bool dev_ack_deadline_passed(const struct dev_run *r, int64_t from)
{
  int64_t waited = mcim_now() - from, left = r->p->deadline - from;
  return waited >= dev_cfg_int(r->d, "ack_deadline") || waited >= left / 2;
}

/* Step 9 could not get the old SHO's acknowledgement: wait and retry until `ack_deadline`
 * after the stage began, then give the RO the TRE-signed receipt in its place (step 11): a
 * dead or hostile old SHO cannot veto the change, and the RO tells it when it comes back. */
static void receipt_problem(struct dev_run *r, const char *old, mcim_cause_t rc, const char *why,
                            bool at_once)
{
  int64_t waited = mcim_now() - r->p->since;
  if (at_once || dev_ack_deadline_passed(r, r->p->since)) {
    mcim_log_event(MCIM_LOG_WARN, r->p->txn, 9, rc,
                   "no acknowledgement from %s after %lld s (%s): the RO gets the TRE-signed"
                   " discard receipt in its place", old, (long long)waited, why);
    dev_data_set_bool(r->p, "release_by_receipt", true);
    leave_old_sho(r, old);
    r->out = OUT_NEXT;
    return;
  }
  r->fail_step = 9;
  dev_run_wait(r, rc, "%s (retrying until the acknowledgement deadline, then the receipt goes"
                      " to the RO)", why);
}

/* The old SHO acknowledged the receipt (the ack is saved in agent.db): it leaves the TRE's
 * queue. Idempotent (NOT_FOUND: gone already), so the receipt stage runs it again when it finds
 * the ack saved: an agent killed between that save and this drop would otherwise leave the
 * receipt queued for ever, offered to the RO's relay at every full attach and refused there
 * (the old SHO released the device; the relay never had the notice), and filling the TRE's
 * bounded queue (found by tests/integration/crash_every_step.sh: `receipt before-tre`). */
static void receipt_acked(struct dev_run *r, const char *old)
{
  dev_tre_point(MCIM_CRASH_BEFORE_TRE);
  mcim_cause_t rc = r->d->tre->ops->pending_done(r->d->tre->ctx, old, r->p->txn);
  if (rc == MCIM_OK)
    dev_tre_point(MCIM_CRASH_AFTER_TRE);
  if (rc != MCIM_OK && rc != MCIM_NOT_FOUND)
    mcim_log_event(MCIM_LOG_WARN, r->p->txn, 10, rc, "the acknowledged receipt is still queued");
}

/* 9-10: the discard receipt to the old SHO, over the session the device still holds from it
 * (its own token: the subscription is not ended until it takes the receipt); the old SHO's
 * acknowledgement comes back in the answer, verified here (relayed at step 11). Then the
 * subscription has ended, its tokens are revoked: the device leaves that session. Whatever
 * goes wrong with the old SHO (unreachable, refusing, a bad acknowledgement, the session
 * gone) is retried until `ack_deadline`, then the receipt stands in for the ack. */
static void st_receipt(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *old = dev_data_str(p, "old");
  struct mcim_http_result res = {0};
  json_t *body = NULL, *tb = NULL;
  char *token = NULL, *receipt = NULL, *cert = NULL, scope[16], why[300];
  mcim_cause_t rc;

  if (dev_data_str(p, "ack") || dev_data_bool(p, "release_by_receipt")) {
    /* a restart after the ack's save: its receipt may still be queued (without an ack the
     * receipt stays queued: the release stage hands it to the RO) */
    if (dev_data_str(p, "ack") && old)
      receipt_acked(r, old);
    r->out = OUT_NEXT;
    return;
  }
  if (!old) {
    dev_run_fail(r, MCIM_INTERNAL, "the procedure does not know the old SHO");
    return;
  }
  rc = queued_statement(d, old, p->txn, &receipt);
  if (rc == MCIM_OK)
    rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE has no discard receipt for %s: %s", old, mcim_cause_text(rc));
    goto cleanup;
  }
  snprintf(r->access_used, sizeof(r->access_used), "%s", old);
  if (dev_session_get(d, old, &token, scope) != MCIM_OK) {
    dev_session_restore(d, p, old);
    if (dev_session_get(d, old, &token, scope) != MCIM_OK) {
      /* no way left to reach the old SHO: the RO takes the receipt right away */
      receipt_problem(r, old, MCIM_NO_ACCESS, "the session with the old SHO has expired", true);
      goto cleanup;
    }
  }
  body = json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", p->txn, "device", d->name, "receipt", receipt,
                   "tre_cert", cert, "step", 9);
  int64_t sent = dev_now_us();
  rc = body ? dev_call(d, r->cli, "POST", old, "/v1/discards", body, token, &res) : MCIM_NO_MEMORY;
  tb = json_pack("{s:s,s:s}", "txn", p->txn, "to", old);
  dev_trace_at(d, sent, p->txn, 9, old, "discard receipt: MCIM and AVs of this SHO discarded", tb,
               rc);
  if (rc != MCIM_OK) {
    snprintf(why, sizeof(why), "discard receipt to the old SHO: %s",
             res.detail[0] ? res.detail : mcim_cause_text(rc));
    receipt_problem(r, old, rc, why, false);
    goto cleanup;
  }
  const char *ack = dev_json_str(res.json, "ack", MCIM_JOSE_MAX_LEN);
  rc = ack ? dev_ack_verify(d, r->cli, old, p->txn, ack) : MCIM_PEER_BAD_ANSWER;
  if (rc != MCIM_OK) {
    snprintf(why, sizeof(why), "the old SHO's acknowledgement %s: %s",
             ack ? "does not verify" : "is missing", mcim_cause_text(rc));
    receipt_problem(r, old, rc, why, false);
    goto cleanup;
  }
  /* the ack first (it is what step 11 needs), then the queue entry goes */
  dev_data_set_str(p, "ack", ack);
  leave_old_sho(r, old);
  if (dev_run_save(r) != MCIM_OK) {
    dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the acknowledgement");
    goto cleanup;
  }
  receipt_acked(r, old);
  r->out = OUT_NEXT;
cleanup:
  json_decref(body);
  json_decref(tb);
  mcim_http_result_clear(&res);
  free(receipt);
  free(cert);
  if (token) {
    mcim_wipe(token, strlen(token));
    free(token);
  }
}

/* 11: the old SHO's acknowledgement to the DPF, which verifies it and relays a
 * privacy-filtered release to the new SHO; or, past the acknowledgement deadline, the
 * TRE-signed discard receipt in its place (the DPF then also tells the old SHO, when it can). */
static void st_release(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *ro = dev_cfg_str(d, "ro");
  const char *ack = dev_data_str(p, "ack");
  const char *old = dev_data_str(p, "old");
  bool by_receipt = !ack && dev_data_bool(p, "release_by_receipt");
  struct mcim_http_result res = {0};
  json_t *body = NULL, *tb = NULL;
  char *token = NULL, *receipt = NULL, *cert = NULL;
  mcim_cause_t rc;

  if (!ack && !(by_receipt && old)) {
    dev_run_fail(r, MCIM_INTERNAL, "no acknowledgement to relay");
    return;
  }
  if (by_receipt) {
    rc = queued_statement(d, old, p->txn, &receipt);
    if (rc == MCIM_OK)
      rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
    if (rc != MCIM_OK) {
      dev_run_fail(r, rc, "the TRE has no discard receipt for %s: %s", old, mcim_cause_text(rc));
      goto cleanup;
    }
  }
  token = dev_run_access_token(r);
  if (!token)
    goto cleanup;
  body = by_receipt ? json_pack("{s:s,s:s,s:s,s:s}", "txn", p->txn, "device", d->name, "receipt",
                                receipt, "tre_cert", cert)
                    : json_pack("{s:s,s:s,s:s}", "txn", p->txn, "device", d->name, "ack", ack);
  int64_t sent = dev_now_us();
  rc = body ? dev_call(d, r->cli, "POST", ro, "/v1/dpf/releases", body, token, &res)
            : MCIM_NO_MEMORY;
  tb = json_pack("{s:s}", "txn", p->txn);
  dev_trace_at(d, sent, p->txn, p->n, ro,
               by_receipt ? "DPF: the TRE-signed discard receipt (no acknowledgement by the"
                            " deadline; relayed to the new SHO)"
                          : "DPF: the old SHO's acknowledgement (relayed to the new SHO)",
               tb, rc);
  if (rc != MCIM_OK) {
    dev_run_call_failed(r, r->access_used, rc, &res, "DPF release");
    goto cleanup;
  }
  if (by_receipt) {
    /* the RO has it, and tells the old SHO: nothing left queued for it here */
    dev_tre_point(MCIM_CRASH_BEFORE_TRE);
    mcim_cause_t done = d->tre->ops->pending_done(d->tre->ctx, old, p->txn);
    if (done == MCIM_OK)
      dev_tre_point(MCIM_CRASH_AFTER_TRE);
    if (done != MCIM_OK && done != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_WARN, p->txn, 11, done, "the relayed receipt is still queued");
  }
  r->out = OUT_NEXT;
cleanup:
  json_decref(body);
  json_decref(tb);
  mcim_http_result_clear(&res);
  free(receipt);
  free(cert);
  if (token) {
    mcim_wipe(token, strlen(token));
    free(token);
  }
}

/* ---- change via the pristine state: the deferred notifications ---- */

/* After the full attach to the new SHO: every notice the TRE queued goes out now (the
 * pristine path's own, and any left by an earlier procedure). Best effort: what cannot be
 * delivered stays queued for the next full attach. A delivery that failed for a passing
 * reason (the RO restarting, a 5xx) is tried again for up to NOTIFY_RETRY_S (within the
 * procedure's deadline): until the notice lands the old SHO keeps the subscription active
 * and the DRF lists both SHOs, and a device that does not attach again soon would leave them
 * so (found by tests/integration/crash_every_step.sh: the RO killed at step 15). */
#define NOTIFY_RETRY_S 30
static void st_notify(struct dev_run *r)
{
  char net[64], *token = NULL;
  if (dev_session_full(r->d, net, &token) == MCIM_OK) {
    bool transient = false;
    dev_notify_pending(r->d, r->cli, net, token, &transient);
    mcim_wipe(token, strlen(token));
    free(token);
    int64_t now = mcim_now();
    if (transient && now < r->p->since + NOTIFY_RETRY_S && now + 2 < r->p->deadline) {
      dev_run_wait(r, MCIM_PEER_UNREACHABLE,
                   "a queued notice was not accepted by the RO yet (retrying)");
      return;
    }
  } else {
    mcim_log_event(MCIM_LOG_WARN, r->p->txn, 0, MCIM_NO_ACCESS,
                   "no full access to deliver the queued notifications: they stay queued");
  }
  r->out = OUT_NEXT;
}

/* ---- the tables ---- */

static const struct dev_step old_sho_steps[] = {
    {"attach-old", 2, dev_st_attach}, {"pcid", 0, dev_st_pcid},
    {"nonce", 4, dev_st_nonce},       {"quote", 4, dev_st_quote},
    {"download", 7, dev_st_download}, {"discard", 8, st_discard},
    {"receipt", 9, st_receipt},       {"release", 11, st_release},
    {"install", 12, dev_st_install},  {"report", 12, dev_st_report},
    {"attach-sho", 0, dev_st_attach_sho},
};

static const struct dev_step pristine_steps[] = {
    {"pcid", 0, dev_st_pcid},         {"discard", 3, st_discard},
    {"attach", 4, dev_st_attach},     {"discover", 7, dev_st_discover},
    {"nonce", 10, dev_st_nonce},      {"quote", 10, dev_st_quote},
    {"download", 13, dev_st_download}, {"install", 14, dev_st_install},
    {"report", 14, dev_st_report},    {"attach-sho", 0, dev_st_attach_sho},
    {"notify", 0, st_notify},
};

#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

const struct dev_procedure dev_proc_change_old_sho = {"change", "old-sho", old_sho_steps,
                                                      NSTEPS(old_sho_steps), 14};
const struct dev_procedure dev_proc_change_pristine = {"change", "pristine", pristine_steps,
                                                       NSTEPS(pristine_steps), 15};
