/* The PVA's view of revoked access tokens (issue 8, point 5).
 *
 * Every device reaches the PVA with the token of whatever network it is attached to, so the
 * PVA honours any access network's token. When an SHO terminates a subscription (change step
 * 10, or the deferred notice of the pristine path) it revokes that subscription's tokens at
 * once at home; the PVA, which cannot see the SHO's AuC, is told through the SHO's outbox:
 *
 *   10 SHO -> PVA   outbox POST /v1/revocations {txn, device, imsi}   tokens for imsi revoked
 *
 * An SHO can revoke only its own tokens (the issuer is the caller's certificate name), so
 * no SHO can cut off another's device here. A revocation lives as long as any token it
 * covers can: the longest token lifetime (1 day, runtime.c) and the clock skew after it came
 * (pva.c, pva_tick). What one SHO can add is bounded: revocations_per_minute, all the PVA's
 * instances together (src/roles/peer_limit.c; beyond it 503 REVOCATIONS_TOO_FAST, which its
 * outbox retries: a burst of genuine ones is delayed, never lost), so at most a day of that. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/role.h"
#include "mcim/util.h"
#include "roles/kinds.h"
#include "roles/pva/pva.h"

mcim_cause_t pva_revocation_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"imsi", MCIM_JV_STRING, true, 15},
      {"step", MCIM_JV_INTEGER, false, 0},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 4, err, err_len);
  if (rc != MCIM_OK)
    return rc;
  /* the step of the termination: 10, or 0 for the deferred notice of the pristine path */
  json_int_t step = 10;
  if (json_object_get(body, "step"))
    step = json_integer_value(json_object_get(body, "step"));
  const char *imsi = json_string_value(json_object_get(body, "imsi"));
  if (step < 0 || step > 90) {
    snprintf(err, err_len, "step must be 0..90");
    return MCIM_INVALID_ARGUMENT;
  }
  if (strlen(imsi) < 6 || strspn(imsi, "0123456789") != strlen(imsi)) {
    snprintf(err, err_len, "imsi must be 6-15 digits");
    return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

void pva_revocation(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[160];
  const char *sho = req->peer;
  if (!mcim_role_name_is_sho(sho)) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 10,
                            "only an SHO revokes tokens, its own (caller \"%s\")", sho ? sho : "");
    return;
  }
  mcim_cause_t rc = pva_revocation_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 10, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *imsi = json_string_value(json_object_get(req->json, "imsi"));
  struct mcim_peer_limit *limit = pva_revocation_limit(r);
  int64_t wait = 0, max = mcim_config_int(r->cfg, "revocations_per_minute");
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 10, "store unavailable");
    return;
  }
  /* this instance's count first (a flood turned away without a write), then all instances' */
  bool admitted = !limit || mcim_peer_limit_admit(limit, sho, mcim_now(), max, &wait);
  if (admitted) {
    rc = mcim_peer_limit_admit_db(st, "revocations", sho, mcim_now(), 60, max, &admitted, &wait);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 10, "revocation not counted");
      return;
    }
  }
  if (!admitted) {
    /* logged, not traced: a flood must not add a row per request */
    mcim_log_event(MCIM_LOG_WARN, txn, 10, MCIM_REVOCATIONS_TOO_FAST,
                   "%s sent more than revocations_per_minute revocations: asked to retry in %lld s",
                   sho, (long long)wait);
    resp->retry_after = (int)wait;
    mcim_http_reply_problem(resp, MCIM_REVOCATIONS_TOO_FAST, 10,
                            "more than revocations_per_minute from %s this minute", sho);
    return;
  }
  /* the step of the termination: 10, or 0 for the deferred notice of the pristine path */
  json_int_t step = json_integer_value(json_object_get(req->json, "step"));
  if (!json_object_get(req->json, "step"))
    step = 10;
  /* Idempotent: a retried delivery finds the row and changes nothing. The trace row rides on
   * the same commit (one batch: a commit less than the row's own relaxed one after it; the
   * count above is a relaxed write of its own). */
  mcim_val_t p[] = {MCIM_TEXT(sho), MCIM_TEXT(imsi), MCIM_TEXT(device), MCIM_INT(mcim_now())};
  rc = mcim_store_begin_batch(st, false);
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "INSERT INTO revocations (network, imsi, device, created)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (network, imsi) DO NOTHING",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  if (rc == MCIM_OK)
    mcim_role_trace(r, txn, (int)step, sho, r->name, "tokens of the ended subscription revoked",
                    NULL, MCIM_OK);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 10, "revocation not recorded");
    return;
  }
  mcim_log_event(MCIM_LOG_INFO, txn, (int)step, MCIM_OK,
                 "%s revoked the tokens of its ended subscription of %s", sho, device);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:b}", "txn", txn, "revoked", 1));
}

mcim_cause_t pva_token_live(struct mcim_role *r, const char *network, const char *imsi)
{
  int64_t n = 0;
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_val_t p[] = {MCIM_TEXT(network), MCIM_TEXT(imsi)};
  mcim_cause_t rc = mcim_store_query_int(
      st, "SELECT COUNT(*) FROM revocations WHERE network = ? AND imsi = ?", p, 2, &n);
  return rc == MCIM_OK && n > 0 ? MCIM_TOKEN_REVOKED : rc;
}
