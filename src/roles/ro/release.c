/* RO, DPF function, change step 11: the device hands over the old SHO's acknowledgement
 * of its discard receipt; the DPF verifies it and tells the new SHO only what it needs —
 * that the old subscription is released, verified by the RO, and when. The old SHO's name
 * and the old IMSI stay here (the seed's privacy filtering). An old SHO that does not
 * acknowledge by the device's deadline cannot veto the change: the TRE-signed discard receipt
 * is then the proof, and the old SHO is told by the outbox when it comes back. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

struct pkg_owner {
  char sho[64];
  char procedure[16];
  bool found;
};

static mcim_cause_t owner_cb(const mcim_row_t *row, void *arg)
{
  struct pkg_owner *o = arg;
  snprintf(o->sho, sizeof(o->sho), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(o->procedure, sizeof(o->procedure), "%s",
           mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  o->found = true;
  return MCIM_OK;
}

/* Spend a statement's jti (caller's transaction), for as long as it would verify. */
static mcim_cause_t record_jti(struct mcim_role *r, const mcim_statement_t *stmt)
{
  const mcim_replay_cache_t *rep = mcim_role_replay(r);
  return rep->check_and_insert(
      rep->ctx, stmt->claims.iss, stmt->claims.jti,
      mcim_replay_expires(stmt->claims.exp, mcim_config_duration(r->cfg, "clock_skew")),
      mcim_now());
}

/* The proof that the old subscription is released, one of:
 *  - `ack`: the old SHO's acknowledgement (step 10), signed by an SHO other than the new one;
 *  - `receipt` + `tre_cert`: the TRE-signed discard receipt addressed to the old SHO, when
 *    the device gave up waiting for that SHO's acknowledgement (its `ack_deadline`): the TRE,
 *    which everyone trusts for receipts, attests that the old MCIM is destroyed. It is told
 *    by the outbox when it answers.
 * Either way the old SHO must be one the RO's own records link to this device
 * (mcim_ro_sho_linked): an SHO's acknowledgement about a device it never served releases
 * nothing. `old` (64 bytes) gets the old SHO.
 * The signature first, the new SHO and the registry after: the claimed signer is read
 * unverified, and compared before, it told the old SHO which SHO takes its customer (a
 * statement with each guess as its signer: CLAIM_MISMATCH for the new SHO, NOT_PARTY for one
 * that never served the device, a bad signature for the others; review of 2026-12-07). */
static mcim_cause_t verify_proof(struct mcim_role *r, const char *txn, const char *device,
                                 const char *new_sho, const char *ack, const char *receipt,
                                 const char *cert, char old[64], mcim_statement_t **out)
{
  const mcim_jose_key_t *old_key = NULL;
  json_t *aud = NULL;
  mcim_cause_t rc;
  *out = NULL;
  old[0] = '\0';
  if (ack) {
    rc = mcim_jws_peek_iss(ack, old, 64);
  } else {
    rc = mcim_jws_peek_claim(receipt, "aud", &aud);
    if (rc == MCIM_OK && (!json_is_string(aud) || strlen(json_string_value(aud)) >= 64))
      rc = MCIM_CLAIM_MISMATCH;
    if (rc == MCIM_OK)
      snprintf(old, 64, "%s", json_string_value(aud));
    json_decref(aud);
  }
  if (rc == MCIM_OK && !mcim_role_name_is_sho(old))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc == MCIM_OK && ack) {
    rc = mcim_role_peer_key(r, old, &old_key);
    mcim_jws_expect_t ex = {.iss = old, .aud = r->name, .sub = device,
                            .typ = "mcim-discard-ack+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    if (rc == MCIM_OK)
      rc = mcim_jws_verify(ack, strlen(ack), old_key, &ex, out);
    if (rc == MCIM_OK && !json_is_true(json_object_get((*out)->payload, "released")))
      rc = MCIM_CLAIM_MISMATCH;
  } else if (rc == MCIM_OK) {
    /* Whatever the old SHO registered or did not: its entry live, released with any txn (its
     * ack lost, or released on its own before step 9: model findings F2, F4), or never
     * registered at all; the receipt, which the TRE signs only once the MCIM is destroyed,
     * is the proof. */
    rc = mcim_ro_verify_statement(r, device, old, txn, "mcim-discard+jwt", receipt, cert, out);
    const char *slot = rc == MCIM_OK ? mcim_statement_string(*out, "slot") : NULL;
    if (rc == MCIM_OK && (!slot || strcmp(slot, old) != 0))
      rc = MCIM_SLOT_FORBIDDEN;
  }
  /* an SHO other than the new one, and one the RO's records link to the device */
  if (rc == MCIM_OK && strcmp(old, new_sho) == 0)
    rc = MCIM_CLAIM_MISMATCH;
  if (rc == MCIM_OK)
    rc = mcim_ro_sho_linked(r, device, old);
  return rc;
}

mcim_cause_t mcim_dpf_release_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},          {"device", MCIM_JV_STRING, true, 63},
      {"ack", MCIM_JV_STRING, false, 16384},   {"receipt", MCIM_JV_STRING, false, 16384},
      {"tre_cert", MCIM_JV_STRING, false, 8192},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 5, err, err_len);
  const char *ack = json_string_value(json_object_get(body, "ack"));
  const char *receipt = json_string_value(json_object_get(body, "receipt"));
  const char *cert = json_string_value(json_object_get(body, "tre_cert"));
  if (rc == MCIM_OK && (!ack == !receipt || (receipt && !cert))) {
    rc = MCIM_FIELD_MISSING;
    snprintf(err, err_len, "send \"ack\", or \"receipt\" with \"tre_cert\"");
  }
  return rc;
}

/* POST /v1/dpf/releases (the device, change step 11): {txn, device, ack} or, past the
 * device's acknowledgement deadline, {txn, device, receipt, tre_cert}. */
void mcim_dpf_release(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], old[64] = "";
  struct mcim_access acc;
  struct pkg_owner po = {0};
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  char *release = NULL;
  int status = 0;
  bool in_txn = false;
  mcim_store_t *st = NULL;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, 11, "the release");
    goto out;
  }
  rc = mcim_dpf_release_body(req->json, err, sizeof(err));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *ack = json_string_value(json_object_get(req->json, "ack"));
  const char *receipt = json_string_value(json_object_get(req->json, "receipt"));
  const char *cert = json_string_value(json_object_get(req->json, "tre_cert"));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "%s", err);
    goto out;
  }
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 11, "a device relays only its own release");
    goto out;
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 11, "store unavailable");
    goto out;
  }
  /* The procedure this belongs to: a change whose new SHO sent us its package. */
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device)};
  rc = mcim_store_exec(st, "SELECT sho, procedure FROM dpf_packages WHERE txn = ? AND device = ?",
                       p, 2, owner_cb, &po);
  if (rc == MCIM_OK && (!po.found || strcmp(po.procedure, "change") != 0))
    rc = MCIM_NOT_FOUND;
  if (rc == MCIM_OK)
    rc = verify_proof(r, txn, device, po.sho, ack, receipt, cert, old, &stmt);
  if (rc != MCIM_OK) {
    /* traced in the change's own trace only: a txn with no change of this device here is
     * anyone's guess, logged (a flood of them leaves the store as it was) */
    if (po.found)
      mcim_role_trace(r, txn, 11, r->name, device,
                      ack ? "DPF: acknowledgement refused" : "DPF: discard receipt refused",
                      NULL, rc);
    else
      mcim_log_event(MCIM_LOG_WARN, txn, 11, rc, "DPF: release refused: no change of %s here",
                     device);
    mcim_http_reply_problem(resp, rc, 11, "%s for %s does not verify",
                            ack ? "acknowledgement" : "discard receipt", txn);
    goto out;
  }
  /* From here on one transaction: the stored answer (returned only after the checks above,
   * to the device they passed for), the jti and the relays. */
  rc = mcim_store_begin(st);
  in_txn = rc == MCIM_OK;
  if (in_txn && mcim_role_answer_get(st, txn, 11, "release", &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  /* the acknowledgement acts once; a receipt's jti is the old SHO's to spend */
  if (rc == MCIM_OK && ack)
    rc = record_jti(r, stmt);
  /* Privacy filtering: the new SHO gets a statement of the RO, not the old SHO's. */
  json_t *extra = json_pack("{s:b,s:I}", "released", 1, "verified_at", (json_int_t)mcim_now());
  if (rc == MCIM_OK)
    rc = mcim_role_sign(r, "mcim-release+jwt", device, po.sho, txn, extra, &release);
  json_decref(extra);
  answer = json_pack("{s:s,s:s}", "txn", txn, "state", "relayed");
  if (rc == MCIM_OK) {
    json_t *body = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "release", release);
    rc = mcim_role_outbox_put(r, st, po.sho, "/v1/releases", body, txn, 11,
                              "DPF: old subscription released (privacy-filtered relay)");
    json_decref(body);
  }
  /* No acknowledgement: the old SHO learns it from the receipt, whenever it answers. */
  if (rc == MCIM_OK && receipt)
    rc = mcim_ro_relay_queue(r, st, old, "mcim-discard+jwt", txn, device, receipt, cert,
                             "DPF: the discard receipt the RO took in place of the"
                             " acknowledgement (relayed)",
                             false);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 11, "release", 202, answer);
  if (in_txn)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "release not relayed");
    goto out;
  }
  mcim_role_wake(r);
  mcim_log_event(MCIM_LOG_INFO, txn, 11, MCIM_OK,
                 "DPF: %s's release of %s verified (%s), relayed to %s without its identity", old,
                 device, ack ? "acknowledgement" : "TRE-signed receipt, no acknowledgement",
                 po.sho);
  mcim_http_reply_json(resp, 202, answer);
  answer = NULL;
out:
  json_decref(answer);
  free(release);
  mcim_statement_free(stmt);
}
