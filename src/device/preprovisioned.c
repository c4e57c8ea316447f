/* The variant with pre-provisioned MCIMs, device side (docs/protocol.md, "Change of
 * subscription, pre-provisioned MCIMs and PCID renewal"): its tables (below; preload_steps and
 * switch_steps at the end of the file), the switch's own steps (suspend, resume, activate) and
 * what a switch that stops half way undoes (dev_change_compensate). The engine is in
 * procedures.c, the shared steps in initial.c and package.c, the PCID step in change.c.
 *
 * Pre-provisioned MCIMs:
 *   preload: attach (current connectivity: the active SHO, else the VNO), pcid, then the
 *            initial steps 7-14 with the TRE installing the new MCIM inactive;
 *   switch:  attach-cur (the active SHO), suspend (notification to it), resume
 *            (notification to the target), activate (TRE), attach-sho (the target). */
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
 * event, and refuse a replayed statement). */
static mcim_cause_t notify_sho(struct mcim_device *d, struct mcim_http_lite *cli,
                               const char *txn, const char *to, const char *event,
                               const char *slot, const char *token, bool via_ro,
                               struct mcim_http_result *res, char *why, size_t len)
{
  char imsi[24] = "", *notice = NULL, *cert = NULL, msg[160];
  json_t *extra = NULL, *body = NULL, *tb = NULL;
  mcim_cause_t rc = d->tre->ops->identity(d->tre->ctx, slot, imsi);

  memset(res, 0, sizeof(*res));
  if (rc == MCIM_OK) {
    extra = json_pack("{s:s,s:s,s:s}", "event", event, "slot", slot, "imsi", imsi);
    rc = extra ? d->tre->ops->sign(d->tre->ctx, "mcim-notify+jwt", to, txn, extra,
                                   dev_cfg_int(d, "statement_lifetime"), &notice)
               : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK)
    rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
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
  mcim_cause_t rc = notify_sho(r->d, r->cli, r->p->txn, to, event, slot, token, via_ro, &res,
                               why, sizeof(why));
  if (rc == MCIM_OK) {
    dev_data_set_bool(r->p, flag, true);
    r->out = OUT_NEXT;
  } else if (res.status == 0 && !mcim_cause_transient(rc, 0) && !dev_cause_token(rc)) {
    dev_run_fail(r, rc, "%s", why); /* the TRE refused */
  } else {
    char what[160];
    snprintf(what, sizeof(what), "%s notice to %s", event, to);
    dev_run_call_failed(r, r->access_used, rc, &res, what);
  }
  mcim_http_result_clear(&res);
  mcim_wipe(token, strlen(token));
  free(token);
}

/* The current SHO: its subscription goes to standby (the MCIM stays, inactive, in the TRE).
 * From then on the device cannot attach anywhere with an MCIM until the switch is done (the
 * current SHO has no AVs for a standby subscription, the target's MCIM is not active yet),
 * so the current SHO's session is kept in agent.db for a restart, as in a change via the old
 * SHO: the resume (or the undo) still reaches the network. */
static void st_suspend(struct dev_run *r)
{
  const char *old = dev_data_str(r->p, "old");
  char *token = NULL;
  if (!old) {
    dev_run_fail(r, MCIM_INTERNAL, "the procedure does not know the current SHO");
    return;
  }
  if (!dev_data_bool(r->p, "suspended")) {
    token = dev_run_token_for(r, old);
    if (!token)
      return;
    mcim_wipe(token, strlen(token));
    free(token);
    if (dev_session_save(r, old) != MCIM_OK || dev_run_save(r) != MCIM_OK) {
      dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the current SHO's session");
      return;
    }
  }
  st_notify_event(r, old, "suspend", old, "suspended", false);
}

/* The target SHO: its standby subscription becomes active (and the DRF learns it), told
 * through the RO's relay over the current SHO's connectivity (the device holds no live token
 * of the target yet). The RO's acceptance is the step's end; the target's activation shows at
 * attach-sho (SUBSCRIPTION_NOT_ACTIVE until the relay lands: retried). Never both active:
 * suspend came first. */
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

/* A switch that stops half way leaves the network as the TRE is: the current SHO active.
 * Best effort (the procedure has failed already); what cannot be undone is logged. */
void dev_change_compensate(struct mcim_device *d, struct mcim_http_lite *cli,
                           struct dev_proc *p)
{
  const char *old = dev_data_str(p, "old");
  struct mcim_http_result res = {0};
  struct dev_attach_result ar;
  char why[300] = "", scope[16], *token = NULL;
  mcim_cause_t rc;

  if (strcmp(p->kind, "switch") != 0 || !old || !cli || !dev_data_bool(p, "suspended") ||
      dev_data_bool(p, "activated"))
    return;
  dev_session_restore(d, p, old);
  if (dev_session_get(d, old, &token, scope) != MCIM_OK &&
      (dev_attach(d, cli, old, p->txn, &ar) != MCIM_OK ||
       dev_session_get(d, old, &token, scope) != MCIM_OK)) {
    mcim_log_event(MCIM_LOG_ERROR, p->txn, 0, MCIM_NO_ACCESS,
                   "switch failed after suspending %s, which cannot be reached to resume it",
                   old);
    return;
  }
  /* The target's suspend first, even when the RO never took its resume: the TRE signed one
   * for each attempt, any of which may have reached the target, so it signs no resume of the
   * current SHO before it signed that suspend (never two live subscriptions, tre_sign.c).
   * Before 2026-12-07 it went only after an accepted resume, and the TRE refused the undo of
   * a switch whose resume step had failed: the device was left with its current SHO's
   * subscription suspended. An SHO already in standby answers a suspend as done. */
  rc = notify_sho(d, cli, p->txn, p->sho, "suspend", p->sho, token, true, &res, why,
                  sizeof(why));
  /* The RO answered, and refused: the target holds no live entry at the DRF (released, or
   * its registration not there yet), so no resume of it can be waiting either, and the
   * current SHO's resume may go. No answer (or a failure of the RO): it may not. */
  bool ro_refused = rc != MCIM_OK && res.status != 0 &&
                    (res.status < 500 || rc == MCIM_REGISTRATION_PENDING);
  mcim_http_result_clear(&res);
  if (rc != MCIM_OK)
    mcim_log_event(dev_data_bool(p, "resumed") ? MCIM_LOG_ERROR : MCIM_LOG_WARN, p->txn, 0, rc,
                   "undoing the switch: %s", why);
  if (ro_refused)
    rc = MCIM_OK;
  /* The current SHO's resume goes through the RO only, after the target's suspend: the RO
   * delivers a device's switch notices of one txn in the order it took them (relay.c), so the
   * current SHO is active again only once the target heard its suspend, even when the target
   * is down (never two live subscriptions, DESIGN.md section 4). The RO's record of it is
   * also the proof the DRF needs to take the current SHO's `subscribed` again (registry.c).
   * Before the RO's chains the resume also went straight to the current SHO, which could make it
   * active while the target's suspend still waited in the RO's outbox, or was never relayed
   * (the RO unreachable): two live subscriptions. Now, with the RO unreachable, the current
   * subscription stays suspended until the RO takes the undo (the owner switches again). */
  if (rc == MCIM_OK)
    rc = notify_sho(d, cli, p->txn, old, "resume", old, token, true, &res, why, sizeof(why));
  mcim_http_result_clear(&res);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, p->txn, 0, rc,
                   "undoing the switch: %s; %s stays suspended on the network", why, old);
  else
    mcim_log_event(MCIM_LOG_NOTICE, p->txn, 0, MCIM_OK,
                   "switch undone: %s is the active subscription again once the RO relayed its"
                   " resume, after the suspend of %s",
                   old, p->sho);
  mcim_wipe(token, strlen(token));
  free(token);
}

/* ---- the tables ---- */

static const struct dev_step preload_steps[] = {
    {"attach", 4, dev_st_attach},     {"pcid", 0, dev_st_pcid},
    {"discover", 7, dev_st_discover}, {"nonce", 10, dev_st_nonce},
    {"quote", 10, dev_st_quote},      {"download", 13, dev_st_download},
    {"install", 14, dev_st_install},  {"report", 14, dev_st_report},
};

static const struct dev_step switch_steps[] = {
    {"attach-cur", 0, dev_st_attach}, {"suspend", 0, st_suspend},
    {"resume", 0, st_resume},         {"activate", 0, st_activate},
    {"attach-sho", 0, dev_st_attach_sho},
};

#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

const struct dev_procedure dev_proc_preload = {"preload", NULL, preload_steps,
                                               NSTEPS(preload_steps), 15};
const struct dev_procedure dev_proc_switch = {"switch", NULL, switch_steps, NSTEPS(switch_steps),
                                              0};
