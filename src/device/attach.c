/* Attach: the device side of UMTS AKA with an access network (server side:
 * src/roles/access.c). The VNO is reached with the PCID credential (seed steps 4-6, scope
 * `restricted`), an SHO with the MCIM of its slot (scope `full`). The TRE computes RES or
 * AUTS; K, OPc, CK and IK never leave it. A synchronisation failure is answered with AUTS
 * and the network's new challenge is taken, at most `max_resync` times. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/role.h"
#include "mcim/util.h"

/* The steps of the seed an attach is traced with: the VNO attach is pristine steps 4-6;
 * the attach with a new MCIM after provisioning is outside the numbered steps (0). */
struct attach_plan {
  const char *cred;    /* TRE credential name */
  const char *id_field;/* "pcid" | "imsi" */
  int step_attach, step_auth;
};

static mcim_cause_t challenge_parse(const json_t *ans, char id[65], uint8_t rand[16],
                                    uint8_t autn[16])
{
  const char *aid = dev_json_str(ans, "attach_id", 64);
  const char *r = dev_json_hex(ans, "rand", 32);
  const char *a = dev_json_hex(ans, "autn", 32);
  /* the attach id goes into a URL path: hex only */
  const char *aid_hex = dev_json_hex(ans, "attach_id", 0);
  if (!aid || aid_hex != aid || strlen(aid) < 16 || !r || !a ||
      mcim_hex_decode_str(r, rand, 16) != MCIM_OK || mcim_hex_decode_str(a, autn, 16) != MCIM_OK)
    return MCIM_PEER_BAD_ANSWER;
  snprintf(id, 65, "%s", aid);
  return MCIM_OK;
}

/* A claim of a token the device cannot verify (signed by the network for itself), as text. */
static bool claim_is(const json_t *claims, const char *claim, const char *want)
{
  const char *v = json_string_value(json_object_get(claims, claim));
  return v && strcmp(v, want) == 0;
}

mcim_cause_t dev_attach_answer_check(const struct dev_attach_expect *w, const char *scope,
                                     const char *token, int64_t *exp)
{
  json_t *claims = NULL;
  *exp = 0;
  if (!scope || !token || mcim_jws_peek_payload(token, &claims) != MCIM_OK)
    return MCIM_PEER_BAD_ANSWER;
  json_t *e = json_object_get(claims, "exp"), *iat = json_object_get(claims, "iat");
  if (json_is_integer(e))
    *exp = json_integer_value(e);
  /* the scope the identity gets: a PCID's restricted access (the VNO), an IMSI's full */
  const char *due = strcmp(w->id_field, "pcid") == 0 ? "restricted" : "full";
  /* Every claim the RO and the PVA check of an access token (peers.c, access_verify), but
   * the signature: a token they would refuse for a claim is the network's lie, found here,
   * not a refusal of the device's own request later (review of 2026-12-07). Alive past the
   * margin the agent uses a session within (dev_session_get). */
  bool ok = strcmp(scope, due) == 0 && *exp > w->now + w->margin && json_is_integer(iat) &&
            json_integer_value(iat) < *exp && claim_is(claims, "iss", w->network) &&
            claim_is(claims, "aud", w->network) && claim_is(claims, "sub", w->device) &&
            claim_is(claims, "scope", scope) && claim_is(claims, "typ", "mcim-access+jwt") &&
            claim_is(claims, "imsi", w->identity) &&
            json_is_string(json_object_get(claims, "jti")) &&
            json_is_string(json_object_get(claims, "txn"));
  json_decref(claims);
  return ok ? MCIM_OK : MCIM_PEER_BAD_ANSWER;
}

static void fail_detail(struct dev_attach_result *out, int step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_detail(struct dev_attach_result *out, int step, const char *fmt, ...)
{
  va_list ap;
  out->step = step;
  va_start(ap, fmt);
  vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
  va_end(ap);
}

static mcim_cause_t attach_once(struct mcim_device *d, struct mcim_http_lite *cli,
                                const char *network, const char *txn,
                                const struct attach_plan *plan, struct dev_attach_result *out)
{
  char identity[24] = "", attach_id[65], path[128], hex[33];
  uint8_t rand[16], autn[16], res[8], auts[14];
  struct mcim_http_result hr = {0};
  json_t *body = NULL;
  int resyncs = 0;
  int max_resync = (int)dev_cfg_int(d, "max_resync");
  mcim_cause_t rc;

  rc = d->tre->ops->identity(d->tre->ctx, plan->cred, identity);
  if (rc != MCIM_OK) {
    fail_detail(out, plan->step_attach, "the TRE holds no credential \"%s\"", plan->cred);
    goto cleanup;
  }
  snprintf(out->identity, sizeof(out->identity), "%s", identity);

  /* Step 4 (VNO): attach with the identity; the network answers with a challenge. */
  body = json_pack("{s:s,s:s}", plan->id_field, identity, "device", d->name);
  if (!body) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  if (txn)
    json_object_set_new(body, "txn", json_string(txn));
  int64_t sent = dev_now_us();
  rc = dev_call(d, cli, "POST", network, "/v1/attach", body, NULL, &hr);
  dev_trace_at(d, sent, txn, plan->step_attach, network,
            strcmp(plan->id_field, "pcid") == 0 ? "attach (PCID)" : "attach (IMSI)", body, rc);
  if (rc == MCIM_OK)
    rc = challenge_parse(hr.json, attach_id, rand, autn);
  if (rc != MCIM_OK) {
    fail_detail(out, plan->step_attach, "%s", hr.detail[0] ? hr.detail : mcim_cause_text(rc));
    goto cleanup;
  }

  for (;;) {
    /* Step 5: the TRE checks AUTN (MAC, then SQN) and answers RES, or AUTS to resync. */
    rc = d->tre->ops->aka(d->tre->ctx, plan->cred, rand, autn, res, auts);
    mcim_metric_inc(&mcim_m_m2me_aka_challenges, NULL);
    if (rc != MCIM_OK)
      mcim_metric_inc(&mcim_m_m2me_aka_failures, MCIM_LABELS(mcim_cause_name(rc)));
    json_decref(body);
    body = NULL;
    mcim_http_result_clear(&hr);
    snprintf(path, sizeof(path), "/v1/attach/%s", attach_id);
    if (rc == MCIM_OK) {
      mcim_hex_encode(res, sizeof(res), hex);
      body = json_pack("{s:s}", "res", hex);
      mcim_wipe(hex, sizeof(hex));
      mcim_wipe(res, sizeof(res));
      if (body && txn)
        json_object_set_new(body, "txn", json_string(txn));
      sent = dev_now_us();
      rc = body ? dev_call(d, cli, "POST", network, path, body, NULL, &hr) : MCIM_NO_MEMORY;
      out->session_gone = rc == MCIM_WRONG_STATE;
      /* the RES itself is not put in the trace: a response to a challenge is replayable */
      dev_trace_at(d, sent, txn, plan->step_auth, network, "authentication response (RES)", NULL,
                   rc);
      break;
    }
    if (rc != MCIM_SYNC_FAILURE || resyncs >= max_resync) {
      dev_trace(d, txn, plan->step_auth, "tre",
                rc == MCIM_SYNC_FAILURE ? "AKA: resynchronisation limit reached"
                                        : "AKA: challenge refused by the TRE",
                NULL, rc);
      fail_detail(out, plan->step_auth,
                  rc == MCIM_MAC_FAILURE
                      ? "the network's AUTN does not verify with %s (%s: wrong key or forged challenge)"
                      : "the TRE refused the challenge for %s: %s",
                  plan->cred, mcim_cause_text(rc));
      if (rc == MCIM_SYNC_FAILURE)
        snprintf(out->detail, sizeof(out->detail),
                 "still out of sequence after %d resynchronisations", resyncs);
      goto cleanup;
    }
    resyncs++;
    mcim_hex_encode(auts, sizeof(auts), hex);
    body = json_pack("{s:s}", "auts", hex);
    if (body && txn)
      json_object_set_new(body, "txn", json_string(txn));
    sent = dev_now_us();
    rc = body ? dev_call(d, cli, "POST", network, path, body, NULL, &hr) : MCIM_NO_MEMORY;
    dev_trace_at(d, sent, txn, plan->step_auth, network, "synchronisation failure (AUTS)", body,
                 rc);
    if (rc == MCIM_OK)
      rc = challenge_parse(hr.json, attach_id, rand, autn);
    if (rc != MCIM_OK) {
      fail_detail(out, plan->step_auth, "%s", hr.detail[0] ? hr.detail : mcim_cause_text(rc));
      goto cleanup;
    }
  }
  if (rc != MCIM_OK) {
    fail_detail(out, plan->step_auth, "%s", hr.detail[0] ? hr.detail : mcim_cause_text(rc));
    goto cleanup;
  }

  /* Step 6: connectivity; keep the session. */
  const char *scope = dev_json_str(hr.json, "scope", 15);
  const char *token = dev_json_str(hr.json, "token", 3500);
  int64_t exp = 0;
  const struct dev_attach_expect want = {.network = network, .device = d->name,
                                         .id_field = plan->id_field, .identity = identity,
                                         .now = mcim_now(),
                                         .margin = dev_cfg_int(d, "token_margin")};
  rc = dev_attach_answer_check(&want, scope, token, &exp);
  if (rc != MCIM_OK) {
    fail_detail(out, plan->step_auth + (plan->step_auth ? 1 : 0),
                "%s answered the authentication without the scope its identity gets and a live"
                " token of its own, for this device, of that scope",
                network);
    goto cleanup;
  }
  dev_session_put(d, network, scope, identity, token, exp);
  snprintf(out->scope, sizeof(out->scope), "%s", scope);
  out->expires = exp;
  /* Network-initiated PCID renewal: the VNO's accept says the ICF marked it due. */
  const char *renewal = dev_json_str(hr.json, "renewal", 15);
  if (renewal && strcmp(renewal, "due") == 0 && strcmp(plan->id_field, "pcid") == 0) {
    out->renewal_due = true;
    dev_flag_set(d, &d->pcid_renew_due);
    mcim_log_event(MCIM_LOG_NOTICE, txn, plan->step_auth, MCIM_OK,
                   "%s says the PCID credential is due for renewal", network);
  }
  /* Full access: the notifications the TRE queued can go out now. */
  if (strcmp(scope, "full") == 0)
    dev_flag_set(d, &d->notify_due);
cleanup:
  if (rc != MCIM_OK)
    out->http_status = hr.status;
  mcim_wipe(res, sizeof(res));
  mcim_wipe(hex, sizeof(hex));
  json_decref(body);
  mcim_http_result_clear(&hr);
  return rc;
}

/* An SHO attach uses that SHO's slot, which must hold the active MCIM: checked on the TRE's
 * public view before the network is bothered (the TRE checks it again in aka()). */
static mcim_cause_t slot_usable(struct mcim_device *d, const char *sho,
                                struct dev_attach_result *out)
{
  json_t *view = NULL, *slot;
  size_t i;
  const char *active = NULL, *state = NULL;
  mcim_cause_t rc = d->tre->ops->status(d->tre->ctx, &view);

  if (rc != MCIM_OK) {
    fail_detail(out, 0, "the TRE does not answer: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  json_array_foreach(json_object_get(view, "slots"), i, slot) {
    const char *name = json_string_value(json_object_get(slot, "slot"));
    const char *st = json_string_value(json_object_get(slot, "state"));
    if (name && st && strcmp(st, "active") == 0)
      active = name;
    if (name && strcmp(name, sho) == 0)
      state = st ? st : "?";
  }
  rc = MCIM_OK;
  if (!state) {
    rc = MCIM_NOT_FOUND;
    fail_detail(out, 0, "the TRE holds no MCIM of %s", sho);
  } else if (strcmp(state, "active") != 0) {
    rc = MCIM_WRONG_STATE;
    fail_detail(out, 0, "the MCIM of %s is %s; the active one is %s's", sho, state,
                active ? active : "nobody");
  }
cleanup:
  json_decref(view);
  return rc;
}

/* A network answer that could mean "this PCID is not (yet) the one the network knows":
 * the previous PCID credential, kept by the TRE after a renewal, may still work. */
static bool try_previous_pcid(mcim_cause_t rc)
{
  return rc == MCIM_UNKNOWN_IDENTITY || rc == MCIM_CREDENTIAL_EXPIRED || rc == MCIM_MAC_FAILURE ||
         rc == MCIM_RES_MISMATCH;
}

mcim_cause_t dev_attach(struct mcim_device *d, struct mcim_http_lite *cli, const char *network,
                        const char *txn, struct dev_attach_result *out)
{
  return dev_attach_at(d, cli, network, txn, -1, out);
}

mcim_cause_t dev_attach_at(struct mcim_device *d, struct mcim_http_lite *cli,
                           const char *network, const char *txn, int step,
                           struct dev_attach_result *out)
{
  mcim_cause_t rc;
  bool vno = strcmp(network, dev_cfg_str(d, "vno")) == 0;
  struct attach_plan plan = {.cred = vno ? MCIM_TRE_PCID : network,
                             .id_field = vno ? "pcid" : "imsi",
                             .step_attach = vno ? 4 : 0,
                             .step_auth = vno ? 5 : 0};
  if (step >= 0) {
    plan.step_attach = step;
    plan.step_auth = vno ? step + 1 : step;
  }

  memset(out, 0, sizeof(*out));
  snprintf(out->network, sizeof(out->network), "%s", network);
  if (!vno && !dev_is_sho_name(network)) {
    snprintf(out->detail, sizeof(out->detail),
             "\"%s\" is not an access network (the VNO \"%s\" or an SHO name)", network,
             dev_cfg_str(d, "vno"));
    return MCIM_INVALID_ARGUMENT;
  }
  if (!vno) {
    rc = slot_usable(d, network, out);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "attach to %s refused: %s", network, out->detail);
      return rc;
    }
  }
  mcim_metric_inc(&mcim_m_m2me_attach_attempts, MCIM_LABELS(network));
  pthread_mutex_lock(&d->attach_lock);
  rc = attach_once(d, cli, network, txn, &plan, out);
  /* Our RES reached a network that then lost its answer (an instance killed after it closed
   * the session, a retry that reached another instance): the session is spent, a fresh
   * challenge is the way on, once. */
  if (rc == MCIM_WRONG_STATE && out->session_gone) {
    mcim_log_event(MCIM_LOG_NOTICE, txn, plan.step_auth, rc,
                   "%s: the attach session was closed without our answer: attaching again",
                   network);
    memset(out, 0, sizeof(*out));
    snprintf(out->network, sizeof(out->network), "%s", network);
    rc = attach_once(d, cli, network, txn, &plan, out);
  }
  if (vno && try_previous_pcid(rc)) {
    char prev[24];
    struct dev_attach_result again;
    if (d->tre->ops->identity(d->tre->ctx, MCIM_TRE_PCID_PREV, prev) == MCIM_OK) {
      mcim_log_event(MCIM_LOG_NOTICE, txn, plan.step_attach, rc,
                     "attach with the PCID failed, trying the previous PCID credential");
      plan.cred = MCIM_TRE_PCID_PREV;
      memset(&again, 0, sizeof(again));
      snprintf(again.network, sizeof(again.network), "%s", network);
      mcim_cause_t rc2 = attach_once(d, cli, network, txn, &plan, &again);
      if (rc2 == MCIM_OK) {
        *out = again;
        rc = rc2;
      }
    }
  }
  pthread_mutex_unlock(&d->attach_lock);
  if (rc != MCIM_OK)
    mcim_metric_inc(&mcim_m_m2me_attach_failures, MCIM_LABELS(network, mcim_cause_name(rc)));
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, txn, out->step, rc, "attach to %s failed: %s", network,
                   out->detail);
  else
    mcim_log_event(MCIM_LOG_INFO, txn, 0, MCIM_OK, "attached to %s as %s, scope %s", network,
                   out->identity, out->scope);
  return rc;
}
