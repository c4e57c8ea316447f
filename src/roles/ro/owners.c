/* RO: the owner records that anchor every order (issue 8, DESIGN.md section 10).
 *
 * Who owns a device is not something an order can say about itself: anyone can make a key
 * and sign an order with it. The M2MES, which everyone trusts for a device's identity,
 * registers each device with its first owner's public key here at manufacture; the DRF then
 * accepts an SHO's order (step 1, forwarded by the SHO) only when the owner it records
 * signed it. A later owner takes over by a handover statement signed by the current one.
 *
 *   POST /v1/drf/owners                      M2MES (mTLS)    first owner of a device
 *   POST /v1/drf/owners/{device}/handover    anyone          signed by the current owner
 *   POST /v1/drf/owner-queries               SHO (mTLS)      is the owner's query of one of
 *                                                            its orders signed by the owner
 *                                                            now (not an owner since handed
 *                                                            over)? */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

/* The key in one canonical spelling (our own public JWK of it), so two spellings of one key
 * compare equal and nothing private is ever stored. */
static mcim_cause_t canonical_jwk(const json_t *jwk, char **out)
{
  *out = NULL;
  char *text = json_is_object(jwk) ? json_dumps(jwk, JSON_COMPACT) : NULL;
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = text ? mcim_jose_key_from_jwk(text, strlen(text), &key) : MCIM_KEY_INVALID;
  if (rc == MCIM_OK && json_object_get(jwk, "d"))
    rc = MCIM_KEY_INVALID; /* a private key sent by mistake: refuse rather than keep it */
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(key, out);
  mcim_jose_key_free(key);
  free(text);
  return rc;
}

static mcim_cause_t owner_row(const mcim_row_t *row, void *arg)
{
  char **jwk = arg;
  *jwk = strdup(mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  return *jwk ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_ro_owner_key(mcim_store_t *st, const char *device, mcim_jose_key_t **key,
                               char **jwk_out)
{
  char *jwk = NULL;
  *key = NULL;
  if (jwk_out)
    *jwk_out = NULL;
  mcim_val_t p[] = {MCIM_TEXT(device)};
  mcim_cause_t rc =
      mcim_store_query_one(st, "SELECT owner_jwk FROM owners WHERE device = ?", p, 1, owner_row, &jwk);
  if (rc == MCIM_NOT_FOUND)
    rc = MCIM_OWNER_UNKNOWN;
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_jwk(jwk, strlen(jwk), key);
  if (rc == MCIM_OK && jwk_out) {
    *jwk_out = jwk;
    jwk = NULL;
  }
  free(jwk);
  return rc;
}

mcim_cause_t mcim_drf_owner_register_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"device", MCIM_JV_STRING, true, 63},
      {"owner_jwk", MCIM_JV_OBJECT, true, 0},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 2, err, err_len);
  if (rc == MCIM_OK && !mcim_pki_name_valid(json_string_value(json_object_get(body, "device")))) {
    rc = MCIM_INVALID_ARGUMENT;
    snprintf(err, err_len, "device must be a device id");
  }
  return rc;
}

/* POST /v1/drf/owners (the M2MES, at manufacture): the device's first owner. The same key
 * again is a retry; another key is refused: owners change only by handover. */
void mcim_drf_owner_register(void *ctx, const struct mcim_http_request *req,
                             struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], *jwk = NULL, *have = NULL;
  mcim_jose_key_t *have_key = NULL;
  mcim_cause_t rc = mcim_drf_owner_register_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK && (!req->peer || strcmp(req->peer, mcim_config_str(r->cfg, "m2mes")) != 0)) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "only the M2MES registers a device's first owner (caller \"%s\")",
             req->peer ? req->peer : "");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  const char *device = json_string_value(json_object_get(req->json, "device"));
  rc = canonical_jwk(json_object_get(req->json, "owner_jwk"), &jwk);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "owner_jwk is not a public EC key");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  int64_t now = mcim_now();
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(jwk), MCIM_TEXT(req->peer), MCIM_INT(now),
                    MCIM_INT(now)};
  rc = st ? mcim_store_exec(st,
                            "INSERT INTO owners (device, owner_jwk, registered_by, created, updated)"
                            " VALUES (?, ?, ?, ?, ?)",
                            p, MCIM_NPARAMS(p), NULL, NULL)
          : MCIM_STORE_ERROR;
  if (rc == MCIM_CONFLICT) {
    rc = mcim_ro_owner_key(st, device, &have_key, &have);
    if (rc == MCIM_OK && strcmp(have, jwk) != 0) {
      mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                              "device %s already has an owner; owners change only by a handover"
                              " signed by the current owner",
                              device);
      goto out;
    }
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "owner of %s not recorded", device);
    goto out;
  }
  mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK, "DRF: first owner of %s registered by %s",
                 device, req->peer);
  mcim_http_reply_json(resp, 201, json_pack("{s:s,s:s}", "device", device, "state", "registered"));
out:
  mcim_jose_key_free(have_key);
  free(have);
  free(jwk);
}

mcim_cause_t mcim_drf_owner_query_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"query", MCIM_JV_STRING, true, 16384},
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

/* POST /v1/drf/owner-queries {txn, device, query} (an SHO, mTLS): an owner reads its order at
 * the SHO with a query it signs (mcim-order-query+jwt, aud = that SHO, txn); the SHO keeps the
 * key the order was placed with, which a handover does not change there. Here the query is
 * checked against the owner the RO records now: an old owner reads nothing more of the
 * device's business after it handed the device over (DESIGN.md section 10). Who may ask: the
 * SHO of that order (the DRF's record of it, in any state), about a query addressed to it.
 * The answer is yes (200) or NOT_OWNER: nothing of who the owner is now. */
void mcim_drf_owner_query(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct mcim_drf_order o = {0};
  mcim_jose_key_t *owner = NULL;
  mcim_statement_t *stmt = NULL;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = mcim_drf_owner_query_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *query = json_string_value(json_object_get(req->json, "query"));
  if (!mcim_ro_is_sho_name(req->peer)) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "only an SHO asks about its orders");
    return;
  }
  rc = st ? mcim_drf_order_load(st, txn, &o) : MCIM_STORE_ERROR;
  if (rc == MCIM_NOT_FOUND ||
      (rc == MCIM_OK && (strcmp(o.device, device) != 0 || strcmp(o.sho, req->peer) != 0))) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_NOT_PARTY,
                   "DRF: %s asked about an order of %s it does not hold", req->peer, device);
    mcim_http_reply_problem(resp, MCIM_NOT_PARTY, 0, "no order of %s for %s with this txn",
                            req->peer, device);
    goto out;
  }
  if (rc == MCIM_OK)
    rc = mcim_ro_owner_key(st, device, &owner, NULL);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = "subscriber", .aud = req->peer, .sub = device,
                            .typ = "mcim-order-query+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .max_lifetime = MCIM_OWNER_STATEMENT_MAX_LIFETIME};
    rc = mcim_jws_verify(query, strlen(query), owner, &ex, &stmt);
    if (rc == MCIM_JWS_BAD_SIGNATURE)
      rc = MCIM_NOT_OWNER;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "the query is not the owner's of %s now", device);
    goto out;
  }
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device,
                                            "owner", "current"));
out:
  mcim_drf_order_clear(&o);
  mcim_statement_free(stmt);
  mcim_jose_key_free(owner);
}

mcim_cause_t mcim_drf_owner_handover_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"handover", MCIM_JV_STRING, true, 16384},
  };
  return mcim_jsonv_check(body, fields, 1, err, err_len);
}

/* A handover ends the device's live orders here: expired now, the packages the DPF holds for
 * them dropped, as the sweep does at order_lifetime (mcim_drf_expire_due; a package the device
 * fetched before stays its own). They are the old owner's, whose business with the device ends
 * with the handover: left live, they counted against the device's bound for order_lifetime and
 * the device could still discover them and fetch their packages (it follows its new owner only
 * once told, docs/device.md). */
static mcim_cause_t lapse_orders(mcim_store_t *st, const char *device, int64_t now,
                                 int64_t *lapsed)
{
  int64_t packages = 0;
  mcim_val_t p[] = {MCIM_INT(now), MCIM_INT(now), MCIM_TEXT(device), MCIM_INT(now)};
  mcim_cause_t rc = mcim_store_exec(st,
                                    "UPDATE drf_orders SET expires = ?, updated = ? WHERE"
                                    " device = ? AND state IN ('ordered', 'authorised')"
                                    " AND expires > ?",
                                    p, MCIM_NPARAMS(p), NULL, NULL);
  return rc == MCIM_OK ? mcim_drf_expire_due(st, device, now, lapsed, &packages) : rc;
}

/* POST /v1/drf/owners/{device}/handover: the current owner hands the device to a new owner
 * (a statement it signs: typ mcim-handover+jwt, iss "subscriber", sub = device, aud = the
 * RO, claim new_owner_jwk). Nobody else can: the statement is checked against the recorded
 * owner, and its jti is spent. */
void mcim_drf_owner_handover(void *ctx, const struct mcim_http_request *req,
                             struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], *jwk = NULL, *old_jwk = NULL;
  const char *device = req->params[0];
  mcim_jose_key_t *owner = NULL;
  mcim_statement_t *stmt = NULL;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = mcim_drf_owner_handover_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  const char *jws = json_string_value(json_object_get(req->json, "handover"));
  rc = st ? mcim_ro_owner_key(st, device, &owner, &old_jwk) : MCIM_STORE_ERROR;
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = "subscriber", .aud = r->name, .sub = device,
                            .typ = "mcim-handover+jwt",
                            .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .replay = mcim_role_replay(r),
                            .max_lifetime = MCIM_OWNER_STATEMENT_MAX_LIFETIME};
    rc = mcim_jws_verify(jws, strlen(jws), owner, &ex, &stmt);
    if (rc == MCIM_JWS_BAD_SIGNATURE)
      rc = MCIM_NOT_OWNER;
  }
  if (rc == MCIM_OK)
    rc = canonical_jwk(json_object_get(stmt->payload, "new_owner_jwk"), &jwk);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "handover of %s refused", device);
    goto out;
  }
  /* To the key it has: nothing to hand over, and it would end the owner's own orders */
  if (strcmp(jwk, old_jwk) == 0) {
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                            "handover of %s refused: new_owner_jwk is its owner's key already",
                            device);
    goto out;
  }
  int64_t now = mcim_now(), lapsed = 0;
  mcim_val_t p[] = {MCIM_TEXT(jwk), MCIM_INT(now), MCIM_TEXT(device), MCIM_TEXT(old_jwk)};
  bool in_tx = (rc = mcim_store_begin(st)) == MCIM_OK;
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "UPDATE owners SET owner_jwk = ?, registered_by = 'handover', updated = ?,"
                         " epoch = epoch + 1 WHERE device = ? AND owner_jwk = ?",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_CONFLICT; /* another handover won meanwhile */
  if (rc == MCIM_OK)
    rc = lapse_orders(st, device, now, &lapsed);
  if (in_tx)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "handover of %s not recorded", device);
    goto out;
  }
  mcim_log_event(MCIM_LOG_NOTICE, NULL, 0, MCIM_OK,
                 "DRF: %s handed over to a new owner (%lld live orders of the old one ended)",
                 device, (long long)lapsed);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "device", device, "state", "handed over"));
out:
  mcim_statement_free(stmt);
  mcim_jose_key_free(owner);
  free(old_jwk);
  free(jwk);
}
