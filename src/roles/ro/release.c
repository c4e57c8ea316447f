/* RO, DPF function, change step 11: the device hands over the old SHO's acknowledgement
 * of its discard receipt; the DPF verifies it and tells the new SHO only what it needs —
 * that the old subscription is released, verified by the RO, and when. The old SHO's name
 * and the old IMSI stay here (the seed's privacy filtering). */
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

/* POST /v1/dpf/releases (the device, step 11). */
void mcim_dpf_release(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"ack", MCIM_JV_STRING, true, 16384},
  };
  char err[200], old[64];
  struct mcim_access acc;
  struct pkg_owner po = {0};
  const mcim_jose_key_t *old_key = NULL;
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  char *release = NULL;
  int status = 0;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "the release needs network access");
    return;
  }
  rc = mcim_jsonv_check(req->json, fields, 3, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *ack = json_string_value(json_object_get(req->json, "ack"));
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 11, "a device relays only its own release");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 11, "store unavailable");
    return;
  }
  if (mcim_role_answer_get(st, txn, 11, "release", &status, &answer) == MCIM_OK) {
    mcim_http_reply_json(resp, status, answer);
    return;
  }
  /* The procedure this belongs to: a change whose new SHO sent us its package. */
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device)};
  rc = mcim_store_exec(st, "SELECT sho, procedure FROM dpf_packages WHERE txn = ? AND device = ?",
                       p, 2, owner_cb, &po);
  if (rc == MCIM_OK && (!po.found || strcmp(po.procedure, "change") != 0))
    rc = MCIM_NOT_FOUND;
  /* Who acknowledged: an SHO, not the new one itself, proven by its signature. */
  if (rc == MCIM_OK)
    rc = mcim_jws_peek_iss(ack, old, sizeof(old));
  if (rc == MCIM_OK && (!mcim_role_name_is_sho(old) || strcmp(old, po.sho) == 0))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc == MCIM_OK)
    rc = mcim_role_peer_key(r, old, &old_key);
  /* From here on one transaction: the jti of the acknowledgement is recorded together with
   * the stored answer, so a duplicate that raced this one waits for the lock and then finds
   * the answer instead of tripping over the replay cache. */
  bool in_txn = false;
  if (rc == MCIM_OK) {
    rc = mcim_store_begin(st);
    in_txn = rc == MCIM_OK;
  }
  if (in_txn && mcim_role_answer_get(st, txn, 11, "release", &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = old, .aud = r->name, .sub = device,
                            .typ = "mcim-discard-ack+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .replay = mcim_role_replay(r)};
    rc = mcim_jws_verify(ack, strlen(ack), old_key, &ex, &stmt);
  }
  if (rc == MCIM_OK && !json_is_true(json_object_get(stmt->payload, "released")))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc != MCIM_OK) {
    if (in_txn)
      mcim_store_rollback(st);
    mcim_role_trace(r, txn, 11, r->name, device, "DPF: acknowledgement refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, 11, "acknowledgement for %s does not verify", txn);
    goto out;
  }
  /* Privacy filtering: the new SHO gets a statement of the RO, not the old SHO's. */
  json_t *extra = json_pack("{s:b,s:I}", "released", 1, "verified_at", (json_int_t)mcim_now());
  rc = mcim_role_sign(r, "mcim-release+jwt", device, po.sho, txn, extra, &release);
  json_decref(extra);
  answer = json_pack("{s:s,s:s}", "txn", txn, "state", "relayed");
  if (rc != MCIM_OK)
    mcim_store_rollback(st);
  if (rc == MCIM_OK) {
    json_t *body = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "release", release);
    rc = mcim_role_outbox_put(r, st, po.sho, "/v1/releases", body, txn, 11,
                              "DPF: old subscription released (privacy-filtered relay)");
    json_decref(body);
    if (rc == MCIM_OK)
      rc = mcim_role_answer_put(st, txn, 11, "release", 202, answer);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "release not relayed");
    goto out;
  }
  mcim_role_wake(r);
  mcim_log_event(MCIM_LOG_INFO, txn, 11, MCIM_OK,
                 "DPF: %s's release of %s verified, relayed to %s without its identity", old,
                 device, po.sho);
  mcim_http_reply_json(resp, 202, answer);
  answer = NULL;
out:
  json_decref(answer);
  free(release);
  mcim_statement_free(stmt);
}
