/* RO, DPF function: notices a device owes an SHO it holds no live access token of, relayed
 * (DESIGN.md section 10: a token is honoured only by its issuer, and the device never sends
 * one SHO's token, name or IMSI to another SHO):
 *   - the discard receipt of a change via the pristine state (step 3's deferred notice to
 *     the old SHO: the device now has only the VNO's or the new SHO's access);
 *   - the `resume` notice of a switch between pre-provisioned MCIMs (the target SHO, whose
 *     MCIM the device cannot attach with before it is resumed), and its undo;
 *   - a discard receipt taken in place of an old SHO's acknowledgement (release.c, change
 *     step 11 when the old SHO did not answer step 9 by the device's deadline).
 * The statement is the device TRE's, addressed to that SHO (aud): the RO checks it and that
 * the DRF links that SHO to that device, by an entry or (a discard receipt) an install of its
 * MCIM on record (a device cannot use the RO to write to an SHO it has nothing to do with),
 * records it once per (txn, device, SHO, what) and hands
 * it to the SHO through the outbox (mTLS as `ro`), with a retry budget that outlasts an SHO
 * being down for long. The SHO answers the RO; the device learns the outcome from the RO's
 * acceptance (it may then drop the notice from its TRE). */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

/* About a day of attempts at the outbox's longest backoff (60 s): an SHO that comes back
 * within that is told. */

mcim_cause_t mcim_ro_verify_statement(struct mcim_role *r, const char *device, const char *to,
                                      const char *txn, const char *typ, const char *jws,
                                      const char *cert, mcim_statement_t **out)
{
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = mcim_role_device_key_from_pem(r, cert, device, MCIM_CERT_TRE_ATTESTATION, &key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = to, .typ = typ, .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(jws, strlen(jws), key, &ex, out);
  }
  mcim_jose_key_free(key);
  return rc;
}

mcim_cause_t mcim_ro_device_statement(struct mcim_role *r, const char *device, const char *to,
                                      const char *txn, const char *typ, const char *jws,
                                      const char *cert, mcim_statement_t **out)
{
  int64_t n = 0;
  mcim_store_t *st = mcim_role_store(r);
  *out = NULL;
  if (!mcim_role_name_is_sho(to))
    return MCIM_CLAIM_MISMATCH;
  if (!st)
    return MCIM_STORE_ERROR;
  /* The TRE's statement verified first: what the registry holds is told only to the device
   * whose TRE signed for it. Looked up before, it answered any SHO that minted a token for a
   * device, with a junk statement, which SHOs serve or served it (CERT_INVALID, 503 or 403;
   * review of 2026-12-07). */
  mcim_cause_t rc = mcim_ro_verify_statement(r, device, to, txn, typ, jws, cert, out);
  if (rc != MCIM_OK)
    return rc;
  /* Linked as for a discard receipt: the suspend of the subscription a switch leaves (leg
   * "from"), which the device hands here only when that SHO did not take it. That SHO rewrites
   * its own entry at will: held to a live one, it released its entry and the relay refused
   * the suspend until the switch's deadline, a veto (review of 2026-12-08). */
  const char *event = mcim_statement_string(*out, "event");
  const char *leg = mcim_statement_string(*out, "leg");
  bool any_entry = strcmp(typ, "mcim-discard+jwt") == 0 ||
                   (event && leg && strcmp(event, "suspend") == 0 && strcmp(leg, "from") == 0);
  /* Only an SHO the registry links to this device: what is relayed is that device's
   * business with that SHO, nothing else.
   *  - A switch notice: an entry live now (subscribed, preloaded). An entry `released` by an
   *    earlier subscription there does not count: a switch right after a new preload at that
   *    SHO must wait for the new registration below, not reach the SHO before its MCIM is in
   *    reserve.
   *  - A discard receipt, or a suspend of leg "from" (above): an entry in any state. An SHO
   *    that released its entry before the device's deferred notice came (its own
   *    termination, or a hostile SHO pinning the device's notices) is still the one the
   *    receipt is about; the receipt, which the TRE signs only once it destroyed that SHO's
   *    MCIM, ends nothing it did not hold. Held back, the notice waited out the TRE's 30
   *    days. */
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(to), MCIM_INT(any_entry)};
  rc = mcim_store_query_int(st,
                            "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ?"
                            " AND (state <> 'released' OR ? = 1)",
                            p, 3, &n);
  /* No entry, but the device's install at that SHO is on record: the SHO's registration
   * (step 15, sent by its outbox once it heard of the install) may be on its way.
   *  - A switch notice waits for it (a device that switches right after a preload gets here
   *    first; it asks again).
   *  - A discard receipt (or a suspend of leg "from") is relayed: the install links the
   *    SHO, as it does for step 11 (mcim_ro_sho_linked). Held for the registration, it
   *    waited for good when that
   *    registration came after the install that overtook it (the pristine path's new SHO)
   *    and was refused: the old SHO stayed active beside the new one (integration/scale_out,
   *    an SHO instance killed with the registration in its outbox). */
  if (rc == MCIM_OK && n == 0) {
    rc = mcim_store_query_int(st,
                              "SELECT COUNT(*) FROM drf_orders WHERE device = ? AND sho = ?"
                              " AND state = 'installed'",
                              p, 2, &n);
    if (rc == MCIM_OK && n == 0)
      rc = MCIM_SHO_NOT_LINKED;
    else if (rc == MCIM_OK && !any_entry)
      rc = MCIM_REGISTRATION_PENDING;
  }
  /* A switch notice carries its place in the device's order (tre_sign.c): the SHO refuses one
   * without for good, so it is refused here, before the device is told it is on its way. */
  if (rc == MCIM_OK && strcmp(typ, "mcim-notify+jwt") == 0 && mcim_notice_seq(*out) == 0)
    rc = MCIM_CLAIM_MISSING;
  /* refused: no statement for the caller (it traces none then, as before) */
  if (rc != MCIM_OK) {
    mcim_statement_free(*out);
    *out = NULL;
  }
  return rc;
}

mcim_cause_t mcim_ro_sho_linked(struct mcim_role *r, const char *device, const char *sho)
{
  int64_t n = 0;
  mcim_store_t *st = mcim_role_store(r);
  if (!mcim_role_name_is_sho(sho))
    return MCIM_CLAIM_MISMATCH;
  if (!st)
    return MCIM_STORE_ERROR;
  /* Change step 11: the RO's own records, never the old SHO's registration alone. An entry
   * in any state (F2, F4: an SHO registers its own entry `released` whenever it likes, with
   * any txn, so an entry released with another txn still links it), or an install of that
   * SHO's package the device's TRE reported to the DPF (dpf.c: drf_orders `installed`). The
   * install counts on its own because step 15's registration is the SHO's to send: an old
   * SHO that never sent it, then does not answer step 9, must not veto the change either
   * (review of 2026-12-06). */
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_TEXT(device), MCIM_TEXT(sho)};
  mcim_cause_t rc = mcim_store_query_int(st,
                                         "SELECT (SELECT COUNT(*) FROM drf WHERE device = ?"
                                         " AND sho = ?) + (SELECT COUNT(*) FROM drf_orders"
                                         " WHERE device = ? AND sho = ? AND state = 'installed')",
                                         p, 4, &n);
  if (rc == MCIM_OK && n == 0)
    rc = MCIM_NOT_PARTY;
  return rc;
}

mcim_cause_t mcim_ro_relay_queue(struct mcim_role *r, mcim_store_t *st, const char *to,
                                 const char *typ, const char *txn, const char *device,
                                 const char *jws, const char *cert, const char *msg,
                                 bool chained)
{
  bool discard = strcmp(typ, "mcim-discard+jwt") == 0;
  /* verified_at: the SHO checks the statement's lifetime at the time we verified it, so a
   * relay that waited for it to come back is still taken */
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:I}", "txn", txn, "device", device,
                           discard ? "receipt" : "notice", jws, "tre_cert", cert, "verified_at",
                           (json_int_t)mcim_now());
  if (!body)
    return MCIM_NO_MEMORY;
  if (discard)
    json_object_set_new(body, "step", json_integer(0));
  /* A device's switch notices of one txn go out in the order the RO took them, whatever SHO
   * each is for: the undo of a switch (the target's suspend, then the current SHO's resume)
   * never resumes the current SHO before the target heard its suspend, even with the target
   * down (never two live subscriptions, DESIGN.md section 4). Per device and txn, so that no
   * other party's notices can hold a device's back. The order among notices to one SHO is
   * also the TRE's (seq, tre_sign.c). Outside the chain: discard receipts, and the suspend
   * of the SHO a switch leaves once it did not take it from the device (mcim_dpf_notice). */
  char chain[160];
  snprintf(chain, sizeof(chain), "switch/%s/%s", device, txn);
  mcim_cause_t rc = mcim_role_outbox_put_chained(r, st, to,
                                                 discard ? "/v1/discards" : "/v1/notifications",
                                                 body, txn, 0, msg, MCIM_OUTBOX_UNTIL_RETENTION,
                                                 chained ? chain : NULL);
  json_decref(body);
  return rc;
}

mcim_cause_t mcim_dpf_notice_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},           {"device", MCIM_JV_STRING, true, 63},
      {"to", MCIM_JV_STRING, true, 63},         {"statement", MCIM_JV_STRING, true, 16384},
      {"tre_cert", MCIM_JV_STRING, true, 8192},
  };
  return mcim_jsonv_check(body, fields, 5, err, err_len);
}

/* Once per (txn, device, SHO, what), and for a switch notice its place in the device's
 * order (tre_sign.c): a notice the TRE signed again after the slot's record moved (the switch
 * again after its undo, in the same txn) is a new one to relay, its retries the same. */
static void notice_what(char *what, size_t len, const char *device, const char *to,
                        const char *event, const mcim_statement_t *stmt)
{
  json_int_t seq = strcmp(event, "discard") == 0 ? 0 : mcim_notice_seq(stmt);
  if (seq == 0)
    snprintf(what, len, "notice/%s/%s/%s", device, to, event);
  else
    snprintf(what, len, "notice/%s/%s/%s/%lld", device, to, event, (long long)seq);
}

/* The registry no longer links `to` to the device: perhaps because this very notice was
 * relayed and the SHO released its entry, and the device asks again because the first answer
 * was lost (the RO killed before answering; tests/integration/crash_every_step.sh). A notice
 * already accepted gets its stored answer, after the statement's own checks; without it the
 * device kept a discard notice queued for ever, refused (503) at every later full attach.
 * True if it answered. */
static bool stored_notice_answer(struct mcim_role *r, const char *device, const char *to,
                                 const char *txn, const char *typ, const char *jws,
                                 const char *cert, struct mcim_http_response *resp)
{
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  int status = 0;
  char what[200];
  bool answered = false;
  mcim_store_t *st = mcim_role_store(r);
  if (!st || mcim_ro_verify_statement(r, device, to, txn, typ, jws, cert, &stmt) != MCIM_OK)
    goto out;
  const char *event = strcmp(typ, "mcim-discard+jwt") == 0 ? "discard"
                                                           : mcim_statement_string(stmt, "event");
  if (!event)
    goto out;
  notice_what(what, sizeof(what), device, to, event, stmt);
  if (mcim_role_answer_get(st, txn, 0, what, &status, &answer) != MCIM_OK)
    goto out;
  mcim_http_reply_json(resp, status, answer);
  answer = NULL;
  answered = true;
out:
  json_decref(answer);
  mcim_statement_free(stmt);
  return answered;
}

/* The registry's record of a switch (registry.c): a relayed `resume` makes `to` the device's
 * newest switch there, the proof of its `subscribed` and what overtakes the proofs other
 * SHOs held before it; a relayed `suspend` of the same txn (the device undoing a switch that
 * failed half way) takes it back. One row per (device, SHO), purged record_retention after
 * it was relayed (ro.c), as the installs it overtakes are. */
static mcim_cause_t record_switch(mcim_store_t *st, const char *device, const char *to,
                                  const char *txn, const char *event)
{
  if (strcmp(event, "resume") == 0) {
    mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(to), MCIM_TEXT(txn), MCIM_INT(mcim_now())};
    return mcim_store_exec(st,
                           "INSERT INTO drf_switches (device, sho, txn, relayed)"
                           " VALUES (?, ?, ?, ?) ON CONFLICT (device, sho) DO UPDATE SET"
                           " txn = excluded.txn, relayed = excluded.relayed",
                           p, 4, NULL, NULL);
  }
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(to), MCIM_TEXT(txn)};
  return mcim_store_exec(st, "DELETE FROM drf_switches WHERE device = ? AND sho = ? AND txn = ?",
                         p, 3, NULL, NULL);
}

/* POST /v1/dpf/notices (the device; seed: change via the pristine state, step 3's deferred
 * notice, and the pre-provisioned variant's switch): {txn, device, to, statement, tre_cert}. */
void mcim_dpf_notice(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], what[200], typ[32] = "";
  struct mcim_access acc;
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL, *t = NULL;
  int status = 0;
  bool in_txn = false;
  mcim_store_t *st = NULL;
  const char *txn = NULL, *device = NULL, *to = NULL, *jws = NULL, *cert = NULL;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, 0, "the notice");
    goto out;
  }
  rc = mcim_dpf_notice_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto out;
  }
  txn = json_string_value(json_object_get(req->json, "txn"));
  device = json_string_value(json_object_get(req->json, "device"));
  to = json_string_value(json_object_get(req->json, "to"));
  jws = json_string_value(json_object_get(req->json, "statement"));
  cert = json_string_value(json_object_get(req->json, "tre_cert"));
  /* FORBIDDEN here, never SHO_NOT_LINKED: the network that issued the token chose its sub,
   * and the device drops a notice for good on SHO_NOT_LINKED alone (notify.c) */
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "a device relays only its own notices");
    goto out;
  }
  /* Which statement it is (read unverified only to pick the expectation; verified below). */
  rc = mcim_jws_peek_claim(jws, "typ", &t);
  if (rc == MCIM_OK && json_is_string(t) && strlen(json_string_value(t)) < sizeof(typ))
    snprintf(typ, sizeof(typ), "%s", json_string_value(t));
  if (rc == MCIM_OK && strcmp(typ, "mcim-discard+jwt") != 0 && strcmp(typ, "mcim-notify+jwt") != 0)
    rc = MCIM_UNSUPPORTED;
  if (rc == MCIM_OK)
    rc = mcim_ro_device_statement(r, device, to, txn, typ, jws, cert, &stmt);
  if ((rc == MCIM_REGISTRATION_PENDING || rc == MCIM_SHO_NOT_LINKED) &&
      stored_notice_answer(r, device, to, txn, typ, jws, cert, resp))
    goto out;
  const char *event = stmt ? mcim_statement_string(stmt, "event") : "discard";
  if (rc == MCIM_OK && strcmp(typ, "mcim-notify+jwt") == 0 &&
      (!event || (strcmp(event, "suspend") != 0 && strcmp(event, "resume") != 0)))
    rc = MCIM_UNSUPPORTED;
  /* A suspend of the subscription a switch leaves (its leg "from", signed by the TRE,
   * tre_sign.c): the device sends it straight to that SHO first, and here once that SHO did
   * not take it by the device's `ack_deadline` (dead, or hostile: no SHO vetoes a switch its
   * device's owner asked for, as no old SHO vetoes a change, release.c). It is relayed
   * outside the device's chain of switch notices, and changes no record of the registry:
   * that SHO, which can bring it here as well (it received it), must not head the chain and
   * hold back what follows (the target's resume) while it refuses it (reviews of
   * 2026-12-06), nor take back a switch record the device's undo made (its resume of that
   * SHO, signed later: the SHO answers this suspend NOTICE_OVERTAKEN then). The undo's
   * suspend is of the target (leg "to"), in the chain; one of those for the token's own
   * network is refused. */
  bool from_leg = false;
  if (rc == MCIM_OK && strcmp(typ, "mcim-notify+jwt") == 0 && strcmp(event, "suspend") == 0) {
    const char *leg = mcim_statement_string(stmt, "leg");
    from_leg = leg && strcmp(leg, "from") == 0;
    if (!from_leg && (!leg || strcmp(leg, "to") != 0 || strcmp(to, acc.network) == 0))
      rc = MCIM_NOTICE_NOT_RELAYED;
  }
  if (rc != MCIM_OK) {
    /* A notice's txn is the device's, unknown here: traced only once its TRE's statement
     * verified for it; before that (an unlinked SHO, a bad signature, a registration still
     * on its way), logged, so that refusals leave the store as it was. */
    if (stmt)
      mcim_role_trace(r, txn, 0, r->name, device, "DPF: notice refused", NULL, rc);
    else
      mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "DPF: notice of %s for %s refused", device,
                     to);
    if (rc == MCIM_REGISTRATION_PENDING)
      resp->retry_after = 1;
    mcim_http_reply_problem(resp, rc, 0, "notice of %s for %s refused", device, to);
    goto out;
  }
  /* Once per (txn, device, SHO, what): the device's retries (signed afresh) get the same
   * answer, after the same checks. */
  notice_what(what, sizeof(what), device, to,
              strcmp(typ, "mcim-discard+jwt") == 0 ? "discard" : event, stmt);
  st = mcim_role_store(r);
  rc = st ? mcim_store_begin(st) : MCIM_STORE_ERROR;
  in_txn = rc == MCIM_OK;
  if (in_txn && mcim_role_answer_get(st, txn, 0, what, &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  answer = json_pack("{s:s,s:s,s:s}", "txn", txn, "to", to, "state", "relayed");
  if (rc == MCIM_OK)
    rc = answer ? mcim_ro_relay_queue(r, st, to, typ, txn, device, jws, cert,
                                      strcmp(typ, "mcim-discard+jwt") == 0
                                          ? "DPF: the device's deferred discard notice (relayed)"
                                          : from_leg ? "DPF: the device's suspend of the SHO"
                                                       " it leaves, not taken there (relayed)"
                                                     : "DPF: the device's switch notice (relayed)",
                                      strcmp(typ, "mcim-notify+jwt") == 0 && !from_leg)
                : MCIM_NO_MEMORY;
  if (rc == MCIM_OK && strcmp(typ, "mcim-notify+jwt") == 0 && !from_leg)
    rc = record_switch(st, device, to, txn, event);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 0, what, 202, answer);
  if (in_txn)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "notice not recorded");
    goto out;
  }
  mcim_role_wake(r);
  mcim_role_trace(r, txn, 0, device, r->name, "DPF: notice for an SHO (to relay)", answer,
                  MCIM_OK);
  mcim_log_event(MCIM_LOG_INFO, txn, 0, MCIM_OK, "DPF: %s notice of %s queued for %s", what,
                 device, to);
  mcim_http_reply_json(resp, 202, answer);
  answer = NULL;
out:
  json_decref(t);
  json_decref(answer);
  mcim_statement_free(stmt);
}
