/* The variant with pre-provisioned MCIMs, device side (docs/protocol.md, "Change of
 * subscription, pre-provisioned MCIMs and PCID renewal"): its tables (below; preload_steps and
 * switch_steps at the end of the file), the switch's own steps (suspend, resume, activate) and
 * what a switch that stops half way undoes (dev_change_compensate). The engine is in
 * procedures.c, the shared steps in initial.c and package.c, the PCID step in change.c.
 *
 * Pre-provisioned MCIMs:
 *   preload: attach (current connectivity: the active SHO, else the VNO), pcid, then the
 *            initial steps 7-14 with the TRE installing the new MCIM inactive;
 *   switch:  attach-cur (the active SHO), suspend (notification to it; past ack_deadline
 *            through the RO's relay), resume (notification to the target, through the RO),
 *            activate (TRE), attach-sho (the target). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/role.h" /* mcim_jws_peek_claim */
#include "mcim/util.h"

/* ---- switch between pre-provisioned MCIMs ---- */

/* A TRE-signed mcim-notify+jwt about `slot` for SHO `to`: POST {to}/v1/notifications with
 * `token` when it is that SHO's own (the SHO the device leaves), else handed to the RO's
 * relay (the SHO the device enters: no live token of it yet, and never another SHO's). The
 * notice is signed for each attempt (the receivers keep their answer per txn, device and
 * event, and refuse a replayed statement). *by_tre: the failure is the TRE's (it would not
 * sign), not the call's: a peer's answer, whatever it is (a refusal, a body too large), is
 * never taken for the TRE's word. */
static mcim_cause_t notify_sho(struct mcim_device *d, struct mcim_http_lite *cli,
                               const char *txn, const char *to, const char *event,
                               const char *slot, const char *token, bool via_ro,
                               struct mcim_http_result *res, bool *by_tre, char *why,
                               size_t len)
{
  char imsi[24] = "", *notice = NULL, *cert = NULL, msg[160];
  json_t *extra = NULL, *body = NULL, *tb = NULL;
  mcim_cause_t rc = d->tre->ops->identity(d->tre->ctx, slot, imsi);

  memset(res, 0, sizeof(*res));
  *by_tre = false;
  if (rc == MCIM_OK) {
    extra = json_pack("{s:s,s:s,s:s}", "event", event, "slot", slot, "imsi", imsi);
    rc = extra ? d->tre->ops->sign(d->tre->ctx, "mcim-notify+jwt", to, txn, extra,
                                   dev_cfg_int(d, "statement_lifetime"), &notice)
               : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK)
    rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
    *by_tre = true;
    snprintf(why, len, "the TRE cannot sign the %s notice for %s: %s", event, slot,
             mcim_cause_text(rc));
    goto cleanup;
  }
  snprintf(msg, sizeof(msg), "%snotification: %s the subscription of slot %s",
           via_ro ? "DPF: (relayed) " : "", strcmp(event, "resume") == 0 ? "resume" : "suspend",
           slot);
  if (via_ro) {
    rc = dev_notice_relay(d, cli, txn, to, notice, cert, token, msg, res);
  } else {
    body = json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", d->name, "notice", notice,
                     "tre_cert", cert);
    int64_t sent = dev_now_us();
    rc = body ? dev_call(d, cli, "POST", to, "/v1/notifications", body, token, res)
              : MCIM_NO_MEMORY;
    tb = json_pack("{s:s,s:s,s:s}", "txn", txn, "event", event, "slot", slot);
    dev_trace_at(d, sent, txn, 0, to, msg, tb, rc);
  }
  if (rc != MCIM_OK)
    snprintf(why, len, "%s notice to %s: %s", event, to,
             res->detail[0] ? res->detail : mcim_cause_text(rc));
cleanup:
  json_decref(extra);
  json_decref(body);
  json_decref(tb);
  free(notice);
  free(cert);
  return rc;
}

/* The round's call went with the current SHO's token (the switch's access before its suspend
 * went through the RO). */
static bool old_sho_token(const struct dev_run *r)
{
  const char *old = dev_data_str(r->p, "old");
  return old && strcmp(r->access_used, old) == 0 &&
         strcmp(r->access_used, dev_cfg_str(r->d, "vno")) != 0;
}

static void st_notify_event(struct dev_run *r, const char *to, const char *event,
                            const char *slot, const char *flag, bool via_ro)
{
  struct mcim_http_result res = {0};
  char why[300] = "";
  char *token = NULL;

  if (dev_data_bool(r->p, flag)) {
    r->out = OUT_NEXT;
    return;
  }
  token = dev_run_access_token(r);
  if (!token)
    return;
  bool by_tre = false;
  mcim_cause_t rc = notify_sho(r->d, r->cli, r->p->txn, to, event, slot, token, via_ro, &res,
                               &by_tre, why, sizeof(why));
  if (rc == MCIM_OK) {
    dev_data_set_bool(r->p, flag, true);
    r->out = OUT_NEXT;
  } else if (by_tre && !dev_cause_retry(rc, 0)) {
    dev_run_fail(r, rc, "%s", why); /* the TRE refused */
  } else if (via_ro && !by_tre && old_sho_token(r)) {
    /* The RO checks the current SHO's token with that SHO's key, which an RO instance that
     * never had it fetches from that SHO: away, or serving a bad certificate, it would fail
     * the switch from outside (a review of 2026-12-08). The relay takes the PCID's token at
     * the VNO as well: the next round goes over it. */
    dev_data_set_str(r->p, "access", dev_cfg_str(r->d, "vno"));
    if (dev_run_save(r) != MCIM_OK) {
      dev_data_set_str(r->p, "access", dev_data_str(r->p, "old"));
      dev_run_wait(r, rc, "%s (asked again)", why);
    } else {
      mcim_log_event(MCIM_LOG_WARN, r->p->txn, 0, rc,
                     "%s: not taken with the current SHO's token, asked again over the VNO",
                     why);
      dev_run_wait(r, rc, "%s (asked again over the VNO)", why);
    }
  } else {
    char what[160];
    snprintf(what, sizeof(what), "%s notice to %s", event, to);
    dev_run_call_failed(r, r->access_used, rc, &res, what);
  }
  mcim_http_result_clear(&res);
  mcim_wipe(token, strlen(token));
  free(token);
}

/* The current SHO did not take its suspend (unreachable, refusing, its answer lost): asked
 * again until `ack_deadline` after the stage began, then the TRE-signed suspend goes to the
 * RO's relay in its place (relayed outside the device's chain of switch notices there:
 * nothing of the switch waits for it), as the discard receipt stands in for a missing
 * acknowledgement in a change via the old SHO (change.c). So a dead or hostile current SHO
 * cannot veto the switch its device's owner asked for. Until the relay reaches it, that SHO's
 * own record says active beside the target's; its MCIM is inactive in the TRE from
 * `activate` on, which answers no challenge with it (docs/state-machines.md, section 5). */
/* The wait for the current SHO began with the switch (attach-cur's stage): its attach and
 * its suspend share one deadline, so that stalling each in turn gains it nothing. */
static int64_t current_sho_since(const struct dev_run *r)
{
  json_int_t from = json_integer_value(json_object_get(r->p->data, "current_since"));
  return from > 0 ? (int64_t)from : r->p->since;
}

/* From here the switch's notices go through the RO, over the PCID's access at the VNO: the
 * current SHO's token would make the RO depend on that SHO (its key, fetched from it), which
 * is what it did not do. */
static void suspend_to_ro(struct dev_run *r, mcim_cause_t rc, const char *why)
{
  mcim_log_event(MCIM_LOG_WARN, r->p->txn, 0, rc,
                 "%s did not take the suspend after %lld s (%s): the RO relays the TRE-signed"
                 " suspend in its place, over the VNO",
                 dev_data_str(r->p, "old"), (long long)(mcim_now() - current_sho_since(r)),
                 why);
  dev_data_set_bool(r->p, "suspend_by_ro", true);
  dev_data_set_str(r->p, "access", dev_cfg_str(r->d, "vno"));
}

static bool suspend_deadline_passed(struct dev_run *r, mcim_cause_t rc, const char *why)
{
  if (!dev_ack_deadline_passed(r, current_sho_since(r)))
    return false;
  suspend_to_ro(r, rc, why);
  return true;
}

/* The current SHO's attach, whose connectivity carries the switch's notices. A current SHO
 * that refuses it, or does not answer it until its wait ends (dev_ack_deadline_passed, one
 * wait with the suspend's), does not stop the switch either (nothing has changed yet, but its
 * word is not needed): the switch goes on over the PCID's access at the VNO, the suspend
 * straight to the RO's relay. */
static void st_attach_cur(struct dev_run *r)
{
  if (!json_object_get(r->p->data, "current_since"))
    json_object_set_new(r->p->data, "current_since", json_integer(r->p->since));
  dev_st_attach(r);
  if (r->out == OUT_NEXT || !dev_data_str(r->p, "old") ||
      (r->out == OUT_WAIT && !dev_ack_deadline_passed(r, current_sho_since(r))))
    return;
  mcim_log_event(MCIM_LOG_WARN, r->p->txn, 0, r->cause,
                 "no attach to %s (%s): the switch goes on over the VNO, its suspend through the"
                 " RO's relay", dev_data_str(r->p, "old"), r->detail);
  dev_data_set_bool(r->p, "suspend_by_ro", true);
  dev_data_set_str(r->p, "access", dev_cfg_str(r->d, "vno"));
  r->out = OUT_NEXT;
  r->cause = MCIM_OK;
  r->fail_step = 0;
  r->detail[0] = '\0';
}

/* The current SHO: its subscription goes to standby (the MCIM stays, inactive, in the TRE).
 * From then on the device cannot attach anywhere with an MCIM until the switch is done (the
 * current SHO has no AVs for a standby subscription, the target's MCIM is not active yet),
 * so the current SHO's session is kept in agent.db for a restart, as in a change via the old
 * SHO: the resume (or the undo) still reaches the network; with it gone, the PCID's access at
 * the VNO (the switch's `access_fallback`; its `access` once the suspend goes through the RO),
 * which reaches the RO. */
static void st_suspend(struct dev_run *r)
{
  const char *old = dev_data_str(r->p, "old");
  struct mcim_http_result res = {0};
  char why[300] = "", *token = NULL;
  if (!old) {
    dev_run_fail(r, MCIM_INTERNAL, "the procedure does not know the current SHO");
    return;
  }
  if (dev_data_bool(r->p, "suspended")) {
    r->out = OUT_NEXT;
    return;
  }
  if (!dev_data_bool(r->p, "suspend_sent")) {
    char scope[16];
    bool session = dev_session_get(r->d, old, &token, scope) == MCIM_OK;
    if (token) {
      mcim_wipe(token, strlen(token));
      free(token);
      token = NULL;
    }
    /* From here the TRE signs the suspend and the current SHO may apply it whatever the
     * device hears back (an answer lost until the deadline): the procedure's end undoes the
     * switch from then on (undo_needed), not only once an answer came. Undoing a suspend that
     * never landed costs nothing: the target is in standby already, the current SHO active.
     * Its session, when attach-cur got one, is kept for a restart. */
    dev_data_set_bool(r->p, "suspend_sent", true);
    if ((session && dev_session_save(r, old) != MCIM_OK) || dev_run_save(r) != MCIM_OK) {
      dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the current SHO's session");
      return;
    }
  }
  if (!dev_data_bool(r->p, "suspend_by_ro")) {
    /* straight to the current SHO, with its own token: the session in memory, the one saved
     * for a restart, else a new attach */
    long status = 0;
    mcim_cause_t rc;
    bool for_good = false;
    snprintf(r->access_used, sizeof(r->access_used), "%s", old);
    dev_session_restore(r->d, r->p, old);
    token = dev_quiet_token(r, old, &rc, &status, why, sizeof(why));
    if (rc != MCIM_OK)
      for_good = !dev_cause_retry(rc, status);
    if (rc == MCIM_OK) {
      bool by_tre = false;
      rc = notify_sho(r->d, r->cli, r->p->txn, old, "suspend", old, token, false, &res, &by_tre,
                      why, sizeof(why));
      if (rc == MCIM_OK) {
        dev_data_set_bool(r->p, "suspended", true);
        r->out = OUT_NEXT;
        goto cleanup;
      }
      if (by_tre && !dev_cause_retry(rc, 0)) {
        dev_run_fail(r, rc, "%s", why); /* the TRE refused to sign it */
        goto cleanup;
      }
      /* a token refused: that session and the one saved go (dev_run_call_failed) */
      if (!by_tre) {
        dev_run_call_failed(r, old, rc, &res, "suspend notice");
        for_good = r->out == OUT_FAIL;
      }
    }
    /* a refusal for good goes to the RO at once, anything else once the deadline passed */
    if (!for_good && !suspend_deadline_passed(r, rc, why)) {
      dev_run_wait(r, rc, "%s (retrying until the acknowledgement deadline, then the suspend"
                          " goes to the RO's relay)", why);
      goto cleanup;
    }
    if (for_good)
      suspend_to_ro(r, rc, why);
    r->out = OUT_WAIT; /* what the relay below decides, not the straight call */
    r->cause = MCIM_OK;
    r->fail_step = 0;
    r->detail[0] = '\0';
    mcim_http_result_clear(&res);
    if (token) {
      mcim_wipe(token, strlen(token));
      free(token);
      token = NULL;
    }
    if (dev_run_save(r) != MCIM_OK) {
      dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the suspend's way through the RO");
      goto cleanup;
    }
  }
  /* through the RO, over the VNO (suspend_to_ro) */
  st_notify_event(r, old, "suspend", old, "suspended", true);
cleanup:
  mcim_http_result_clear(&res);
  if (token) {
    mcim_wipe(token, strlen(token));
    free(token);
  }
}

/* The target SHO: its standby subscription becomes active (and the DRF learns it), told
 * through the RO's relay over the current SHO's connectivity, or the VNO's once the suspend
 * went through the RO or the RO did not take the current SHO's token (st_notify_event); the
 * device holds no live token of the target yet. The RO's acceptance is the step's end; the
 * target's activation shows at attach-sho (SUBSCRIPTION_NOT_ACTIVE until the relay lands:
 * retried). Never both usable: the suspend came first (straight, or in the RO's outbox while
 * the TRE holds the current MCIM active until `activate`). */
static void st_resume(struct dev_run *r)
{
  st_notify_event(r, r->p->sho, "resume", r->p->sho, "resumed", true);
}

static void st_activate(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  dev_tre_point(MCIM_CRASH_BEFORE_TRE);
  mcim_cause_t rc = d->tre->ops->activate(d->tre->ctx, r->p->sho);
  if (rc == MCIM_OK)
    dev_tre_point(MCIM_CRASH_AFTER_TRE);
  json_t *tb = json_pack("{s:s}", "slot", r->p->sho);
  dev_trace(d, r->p->txn, 0, "tre", "activate the pre-provisioned MCIM", tb, rc);
  json_decref(tb);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE could not activate the MCIM of %s: %s", r->p->sho,
                 mcim_cause_text(rc));
    return;
  }
  dev_data_set_bool(r->p, "activated", true);
  /* the old SHO's session ends with its subscription */
  if (dev_data_str(r->p, "old"))
    dev_session_drop(d, dev_data_str(r->p, "old"));
  r->out = OUT_NEXT;
}

/* ---- the undo of a switch that stops half way ---- */

/* A switch that stops half way leaves the network as the TRE is: the current SHO active.
 * Its undo is two notices through the RO (below); until the RO took them the device asks
 * again (dev_undo_round), since without them the current SHO's subscription stays suspended
 * and the device has no access with the MCIM its TRE holds active. */
enum undo_outcome {
  UNDO_TAKEN, /* the RO took both notices (or refused the suspend: nothing to wait for) */
  UNDO_AGAIN, /* no access, or the RO did not answer or cannot yet: ask again later */
  UNDO_FINAL, /* the TRE or the RO refused for good: nothing more to do, logged */
};

/* Access for the undo's notices: the current SHO's session (a standby subscription's token
 * is honoured while it lives), a new attach to it, else the PCID's at the VNO (the RO takes a
 * device's notices with any token of the device's: relay.c). NULL if none. */
static char *undo_access(struct mcim_device *d, struct mcim_http_lite *cli,
                         const struct dev_proc *p, const char *old, bool vno_only,
                         const char **net)
{
  const char *nets[] = {old, dev_cfg_str(d, "vno")};
  struct dev_attach_result ar;
  char *token = NULL, scope[16];
  /* the current SHO did not take the switch's suspend: the VNO only (suspend_to_ro) */
  size_t first = vno_only || dev_data_bool(p, "suspend_by_ro") ? 1 : 0;
  for (size_t i = first; i < sizeof(nets) / sizeof(nets[0]); i++)
    if (dev_session_get(d, nets[i], &token, scope) == MCIM_OK ||
        (dev_attach(d, cli, nets[i], p->txn, &ar) == MCIM_OK &&
         dev_session_get(d, nets[i], &token, scope) == MCIM_OK)) {
      *net = nets[i];
      return token;
    }
  return NULL;
}

static bool tre_refused(mcim_cause_t rc);

static enum undo_outcome undo_relay(struct mcim_device *d, struct mcim_http_lite *cli,
                                    const struct dev_proc *p, const char *old, const char *token,
                                    bool *token_refused)
{
  struct mcim_http_result res = {0};
  char why[300] = "";
  /* The target's suspend first, even when the RO never took its resume: the TRE signed one
   * for each attempt, any of which may have reached the target, so it signs no resume of the
   * current SHO before it signed that suspend (never two live subscriptions, tre_sign.c).
   * Before 2026-12-07 it went only after an accepted resume, and the TRE refused the undo of
   * a switch whose resume step had failed: the device was left with its current SHO's
   * subscription suspended. An SHO already in standby answers a suspend as done. */
  bool by_tre = false;
  mcim_cause_t rc = notify_sho(d, cli, p->txn, p->sho, "suspend",
                               p->sho, token, true, &res, &by_tre, why, sizeof(why));
  long status = res.status;
  bool refused_token = dev_token_refused(rc, &res);
  mcim_http_result_clear(&res);
  if (rc != MCIM_OK && by_tre && tre_refused(rc)) {
    mcim_log_event(MCIM_LOG_ERROR, p->txn, 0, rc, "undoing the switch: %s", why);
    return UNDO_FINAL; /* the TRE refused: the slots moved since (another procedure) */
  }
  /* The RO refused it because the target holds no live entry at the DRF (SHO_NOT_LINKED:
   * released; REGISTRATION_PENDING: its registration not there yet): the RO relays no switch
   * notice to it then, so no resume of it can be waiting either, and the current SHO's
   * resume may go (as deliver_one, notify.c, reads the same answers). Not on FORBIDDEN: a
   * token whose network named another device gets that too, and a hostile network would
   * have the current SHO resumed while the target may be active (review of 2026-12-07).
   * No answer, a failure of the RO or an access problem (that FORBIDDEN among them): asked
   * again. Any other refusal: for good. */
  bool no_entry = (rc == MCIM_SHO_NOT_LINKED && status == 403) ||
                  rc == MCIM_REGISTRATION_PENDING;
  /* refused_token drops the session (a new attach); a cause that may be the token's or the
   * notice's (TOKEN_EXPIRED at the RO's clock...) is asked again either way, as before */
  *token_refused = refused_token;
  bool again = !no_entry && (dev_cause_retry(rc, status) || *token_refused ||
                             dev_cause_token(rc) || status == 0 ||
                             (rc == MCIM_FORBIDDEN && status == 403));
  if (rc != MCIM_OK)
    mcim_log_event(no_entry ? MCIM_LOG_WARN : MCIM_LOG_ERROR, p->txn, 0, rc,
                   "undoing the switch: %s%s", why,
                   again ? "; asked again later, the current subscription suspended till then"
                   : no_entry ? "" : "; refused for good, the current subscription stays suspended");
  if (rc != MCIM_OK && !no_entry)
    return again ? UNDO_AGAIN : UNDO_FINAL;
  /* The current SHO's resume goes through the RO only, after the target's suspend: the RO
   * delivers a device's switch notices of one txn in the order it took them (relay.c), so the
   * current SHO is active again only once the target heard its suspend, even when the target
   * is down (never two live subscriptions, DESIGN.md section 4). The RO's record of it is
   * also the proof the DRF needs to take the current SHO's `subscribed` again (registry.c).
   * Before the RO's chains the resume also went straight to the current SHO, which could
   * make it active while the target's suspend still waited in the RO's outbox, or was never
   * relayed (the RO unreachable): two live subscriptions. */
  rc = notify_sho(d, cli, p->txn, old, "resume", old, token, true, &res, &by_tre, why,
                  sizeof(why));
  status = res.status;
  refused_token = dev_token_refused(rc, &res);
  mcim_http_result_clear(&res);
  if (rc == MCIM_OK) {
    mcim_log_event(MCIM_LOG_NOTICE, p->txn, 0, MCIM_OK,
                   "switch undone: %s is the active subscription again once the RO relayed its"
                   " resume, after the suspend of %s",
                   old, p->sho);
    return UNDO_TAKEN;
  }
  *token_refused = refused_token;
  again = dev_cause_retry(rc, status) || *token_refused || dev_cause_token(rc) ||
          rc == MCIM_REGISTRATION_PENDING ||
          (status == 0 && !(by_tre && tre_refused(rc)));
  mcim_log_event(MCIM_LOG_ERROR, p->txn, 0, rc, "undoing the switch: %s; %s stays suspended%s",
                 why, old, again ? " until the RO takes it (asked again later)" : "");
  return again ? UNDO_AGAIN : UNDO_FINAL;
}

/* The TRE's refusals of an undo's notice that are for good: the slots moved since (another
 * procedure; a later switch, tre_sign.c), the instruction gone. Any other failure of the TRE
 * (its store, a TPM) may pass: asked again. */
static bool tre_refused(mcim_cause_t rc)
{
  return rc == MCIM_WRONG_STATE || rc == MCIM_FORBIDDEN || rc == MCIM_NOT_FOUND ||
         rc == MCIM_CLAIM_MISMATCH || rc == MCIM_INVALID_ARGUMENT;
}

static bool undo_needed(const struct dev_proc *p)
{
  return strcmp(p->kind, "switch") == 0 && dev_data_str(p, "old") &&
         (dev_data_bool(p, "suspended") || dev_data_bool(p, "suspend_sent")) &&
         !dev_data_bool(p, "activated");
}

static enum undo_outcome undo_run(struct mcim_device *d, struct mcim_http_lite *cli,
                                  const struct dev_proc *p)
{
  const char *old = dev_data_str(p, "old");
  enum undo_outcome o = UNDO_AGAIN;
  /* A second pass, over the VNO at once, when the first did not get through with the current
   * SHO's token (the RO checks it with that SHO's key, which it may have to fetch from that
   * SHO), as a switch's relays do (st_notify_event). The RO answers what it took already from
   * its stored answers. */
  for (int pass = 0; pass < 2; pass++) {
    const char *net = NULL;
    bool token_refused = false;
    char *token = undo_access(d, cli, p, old, pass > 0, &net);
    if (!token) {
      if (pass == 0)
        mcim_log_event(MCIM_LOG_ERROR, p->txn, 0, MCIM_NO_ACCESS,
                       "undoing the switch: no access to the network (%s, %s); asked again"
                       " later",
                       old, dev_cfg_str(d, "vno"));
      break;
    }
    o = undo_relay(d, cli, p, old, token, &token_refused);
    /* a token the RO refused for what its issuer decided: the next attempt attaches again */
    if (token_refused)
      dev_session_drop(d, net);
    mcim_wipe(token, strlen(token));
    free(token);
    if (o != UNDO_AGAIN || strcmp(net, old) != 0)
      break;
  }
  return o;
}

/* The undo's retries, in agent.db (table undo_due, store.c): one row per switch whose undo
 * the RO has not taken, asked again after undo_retry, doubled at each attempt up to an hour.
 * `d->undo_next_ms` (under `lock`) is the earliest, 0 for none: the worker's idle sleep ends
 * then (dev_undo_wait_ms). */
static void undo_schedule(struct mcim_device *d, mcim_store_t *st, int64_t not_before)
{
  int64_t next = 0;
  if (mcim_store_query_int(st, "SELECT COALESCE(MIN(next_at), 0) FROM undo_due", NULL, 0,
                           &next) != MCIM_OK)
    next = mcim_now_us() / 1000 + dev_cfg_int(d, "undo_retry") * 1000; /* look again then */
  /* a round that could not record its outcome (the store full, busy or read-only) leaves the
   * row as it was, due already: not again before its backoff, or the worker would spin */
  if (next != 0 && next < not_before)
    next = not_before;
  pthread_mutex_lock(&d->lock);
  d->undo_next_ms = next;
  pthread_mutex_unlock(&d->lock);
}

static void undo_record(struct mcim_device *d, const char *txn, enum undo_outcome o,
                        int64_t attempts)
{
  int64_t wait = dev_cfg_int(d, "undo_retry");
  for (int64_t i = 0; i < attempts && wait < 3600; i++)
    wait *= 2;
  if (wait > 3600)
    wait = 3600;
  int64_t due = mcim_now_us() / 1000 + wait * 1000;
  mcim_val_t up[] = {MCIM_TEXT(txn), MCIM_INT(due), MCIM_INT(attempts + 1)};
  mcim_val_t del[] = {MCIM_TEXT(txn)};
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc =
      o == UNDO_AGAIN
          ? mcim_store_exec(st,
                            "INSERT INTO undo_due (txn, next_at, attempts) VALUES (?, ?, ?)"
                            " ON CONFLICT (txn) DO UPDATE SET next_at = excluded.next_at,"
                            " attempts = excluded.attempts",
                            up, 3, NULL, NULL)
          : mcim_store_exec(st, "DELETE FROM undo_due WHERE txn = ?", del, 1, NULL, NULL);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, txn, 0, rc, "the undo's retry not recorded: %s",
                   mcim_store_errmsg(st));
  undo_schedule(d, st, rc == MCIM_OK ? 0 : due);
  dev_store_unlock(d);
}

/* Best effort at the procedure's end (finish, procedures.c); asked again until the RO takes
 * it when it did not answer. */
void dev_change_compensate(struct mcim_device *d, struct mcim_http_lite *cli,
                           struct dev_proc *p)
{
  if (!cli || !undo_needed(p))
    return;
  dev_session_restore(d, p, dev_data_str(p, "old"));
  if (undo_run(d, cli, p) == UNDO_AGAIN)
    undo_record(d, p->txn, UNDO_AGAIN, 0);
}

void dev_undo_load(struct mcim_device *d)
{
  mcim_store_t *st = dev_store_lock(d);
  undo_schedule(d, st, 0);
  dev_store_unlock(d);
}

int64_t dev_undo_wait_ms(struct mcim_device *d)
{
  pthread_mutex_lock(&d->lock);
  int64_t next = d->undo_next_ms;
  pthread_mutex_unlock(&d->lock);
  if (next == 0)
    return -1;
  int64_t now = mcim_now_us() / 1000;
  return next > now ? next - now : 0;
}

struct undo_row {
  char txn[DEV_TXN_LEN + 1];
  int64_t attempts;
};

static mcim_cause_t undo_row_cb(const mcim_row_t *row, void *arg)
{
  struct undo_row *u = arg;
  snprintf(u->txn, sizeof(u->txn), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  u->attempts = mcim_row_int(row, 1);
  return MCIM_OK;
}

/* Between procedures: the undo whose turn it is, again (one a round). Its procedure gone (purged
 * by records_max) or no longer in need of it: the row goes. Not while a procedure runs (one
 * the control API started since the worker's round): the undo waits for its end. */
void dev_undo_round(struct mcim_device *d, struct mcim_http_lite *cli)
{
  if (dev_undo_wait_ms(d) != 0)
    return;
  struct undo_row u = {{0}, 0};
  struct dev_proc p;
  int64_t running = 0, now_ms = mcim_now_us() / 1000;
  memset(&p, 0, sizeof(p));
  mcim_val_t now[] = {MCIM_INT(now_ms)};
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_procs_running(st, &running);
  if (rc == MCIM_OK && running > 0) { /* its end wakes the worker again */
    dev_store_unlock(d);
    return;
  }
  if (rc == MCIM_OK)
    rc = mcim_store_query_one(st,
                              "SELECT txn, attempts FROM undo_due WHERE next_at <= ?"
                              " ORDER BY next_at LIMIT 1",
                              now, 1, undo_row_cb, &u);
  if (rc == MCIM_OK)
    rc = dev_proc_load(st, u.txn, &p);
  /* nothing due after all, or a store that cannot answer: looked at again later, not at once */
  if (rc != MCIM_OK)
    undo_schedule(d, st, now_ms + dev_cfg_int(d, "undo_retry") * 1000);
  dev_store_unlock(d);
  if (rc == MCIM_NOT_FOUND && u.txn[0])
    undo_record(d, u.txn, UNDO_FINAL, 0);
  if (rc != MCIM_OK)
    goto cleanup;
  enum undo_outcome o = strcmp(p.state, "failed") == 0 && undo_needed(&p) ? undo_run(d, cli, &p)
                                                                         : UNDO_FINAL;
  undo_record(d, u.txn, o, u.attempts);
cleanup:
  dev_proc_clear(&p);
}

/* ---- the tables ---- */

static const struct dev_step preload_steps[] = {
    {"attach", 4, dev_st_attach},     {"pcid", 0, dev_st_pcid},
    {"discover", 7, dev_st_discover}, {"nonce", 10, dev_st_nonce},
    {"quote", 10, dev_st_quote},      {"download", 13, dev_st_download},
    {"install", 14, dev_st_install},  {"report", 14, dev_st_report},
};

static const struct dev_step switch_steps[] = {
    {"attach-cur", 0, st_attach_cur}, {"suspend", 0, st_suspend},
    {"resume", 0, st_resume},         {"activate", 0, st_activate},
    {"attach-sho", 0, dev_st_attach_sho},
};

#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

const struct dev_procedure dev_proc_preload = {"preload", NULL, preload_steps,
                                               NSTEPS(preload_steps), 15};
const struct dev_procedure dev_proc_switch = {"switch", NULL, switch_steps, NSTEPS(switch_steps),
                                              0};
