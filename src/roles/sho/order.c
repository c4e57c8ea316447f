/* SHO: the subscriber's order (step 1), anchored at the RO (issue 8).
 *
 *   1  subscriber -> SHO   POST /v1/orders {txn, order}       the owner-signed order
 *   1  SHO -> RO (DRF)     POST /v1/drf/orders                forwarded; the DRF checks it against
 *                                                             the owner record the M2MES made at
 *                                                             manufacture and records it by txn
 *   9/3 SHO -> PVA         outbox POST /v1/validations        with the RO-signed order record
 *
 * An order carries no authority of its own (anyone can make a key and sign with it): the SHO
 * takes it only once the DRF has recognised the device's owner in it. Until then nothing is
 * stored here, so a stranger's order, or a burst of them, leaves every store as it was. The
 * order and its answer are readable only by the owner (an owner-signed query) and by the
 * procedure's other parties (RO, PVA). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/sho/sho.h"

mcim_cause_t mcim_sho_imsi_draw(const char *plmn, const char *prefix, char imsi[24])
{
  size_t head = strlen(plmn) + (prefix ? strlen(prefix) : 0);
  uint64_t limit = 1, v = 0;
  if (head > 15 - MCIM_SHO_MSIN_RANDOM_MIN)
    return MCIM_INVALID_ARGUMENT;
  for (size_t i = head; i < 15; i++)
    limit *= 10;
  /* uniform: draws in the last, partial run of `limit` values are drawn again */
  const uint64_t cut = UINT64_MAX - UINT64_MAX % limit;
  do {
    if (mcim_random((uint8_t *)&v, sizeof(v)) != MCIM_OK)
      return MCIM_INTERNAL;
  } while (v >= cut);
  snprintf(imsi, 24, "%s%s%0*" PRIu64, plmn, prefix ? prefix : "", (int)(15 - head), v % limit);
  return MCIM_OK;
}

/* IMSI = MCC || MNC || MSIN, the MSIN drawn at random (after the operator's `msin_prefix`),
 * one not held by an order or a subscriber here (the caller's transaction: the writers' lock
 * keeps two orders from drawing the same one). Not a counter: the IMSIs of a counter are
 * each other's neighbours, so anyone could attach with every one of them in turn, learn from
 * the answers which are issued and in which state, and hold every subscriber's open
 * challenges at attach_open_max (review of 2026-12-07). */
static mcim_cause_t next_imsi(struct mcim_role *r, mcim_store_t *st, char imsi[24])
{
  for (int tries = 0; tries < 32; tries++) {
    int64_t n = 0;
    mcim_cause_t rc = mcim_sho_imsi_draw(mcim_config_str(r->cfg, "plmn"),
                                         mcim_config_str(r->cfg, "msin_prefix"), imsi);
    mcim_val_t p[] = {MCIM_TEXT(imsi), MCIM_TEXT(imsi)};
    if (rc == MCIM_OK)
      rc = mcim_store_query_int(st,
                                "SELECT (SELECT COUNT(*) FROM orders WHERE imsi = ?) +"
                                " (SELECT COUNT(*) FROM auc WHERE imsi = ?)",
                                p, 2, &n);
    if (rc != MCIM_OK || n == 0)
      return rc;
  }
  mcim_log_event(MCIM_LOG_ERROR, NULL, 1, MCIM_CONFLICT,
                 "no free IMSI in 32 draws: the MSIN range after msin_prefix is nearly full");
  return MCIM_CONFLICT;
}

mcim_cause_t mcim_sho_queue_validation(struct mcim_role *r, mcim_store_t *st,
                                       const struct mcim_sho_order *o,
                                       const struct mcim_sho_steps *steps)
{
  json_t *body = json_pack("{s:s,s:s,s:i,s:s}", "txn", o->txn, "device", o->device, "step",
                           steps->validate, "order_record", o->record ? o->record : "");
  mcim_cause_t rc = mcim_role_outbox_put(r, st, mcim_config_str(r->cfg, "pva"), "/v1/validations",
                                         body, o->txn, steps->validate, "validate M2ME");
  json_decref(body);
  return rc;
}

/* The owner's order verified with the owner key the RO vouched for (its jti is spent by the
 * caller, with the order stored). */
static mcim_cause_t verify_order(struct mcim_role *r, const char *order, const char *jwk,
                                 const char *txn, mcim_statement_t **stmt)
{
  mcim_jose_key_t *owner = NULL;
  mcim_cause_t rc = jwk ? mcim_jose_key_from_jwk(jwk, strlen(jwk), &owner) : MCIM_NOT_OWNER;
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = "subscriber", .aud = r->name, .typ = "mcim-order+jwt",
                            .txn = txn, .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .max_lifetime = MCIM_OWNER_STATEMENT_MAX_LIFETIME};
    rc = mcim_jws_verify(order, strlen(order), owner, &ex, stmt);
    if (rc == MCIM_JWS_BAD_SIGNATURE)
      rc = MCIM_NOT_OWNER;
  }
  mcim_jose_key_free(owner);
  return rc;
}

mcim_cause_t mcim_sho_tpm_device(const char *att_pem, const char *ka_pem, EVP_PKEY **storage,
                                 EVP_PKEY **ak)
{
  X509 *att = NULL, *ka = NULL;
  EVP_PKEY *s = NULL, *a = NULL;
  mcim_cause_t rc = mcim_pki_cert_from_pem(att_pem, strlen(att_pem), &att);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_from_pem(ka_pem, strlen(ka_pem), &ka);
  if (rc == MCIM_OK && (rc = mcim_pki_cert_tpm_storage_key(ka, &s)) == MCIM_NOT_FOUND)
    rc = MCIM_OK;
  if (rc == MCIM_OK && (rc = mcim_pki_cert_tpm_ak(att, &a)) == MCIM_NOT_FOUND)
    rc = MCIM_OK;
  bool mark = rc == MCIM_OK && mcim_pki_cert_tpm_attestation(att);
  /* all three (enrolled) or none (a software TRE); any other mix is a TPM device the M2MES
   * certified without enrolment, whose K the SHO would have to wrap to the storage key */
  if (rc == MCIM_OK && (s || a || mark) && !(s && a && mark))
    rc = MCIM_TPM_ENROLMENT_REQUIRED;
  if (rc == MCIM_OK && storage) {
    *storage = s;
    s = NULL;
  }
  if (rc == MCIM_OK && ak) {
    *ak = a;
    a = NULL;
  }
  EVP_PKEY_free(s);
  EVP_PKEY_free(a);
  X509_free(att);
  X509_free(ka);
  return rc;
}

/* A TPM device gets K wrapped for its TPM at step 12 / 6 (make_package, provision.c): refused now,
 * at step 1, if it was not enrolled (TPM_ENROLMENT_REQUIRED: mcim_sho_tpm_device), if this SHO
 * cannot wrap K (a build without the TPM TRE, tpm2-tss not installed: UNSUPPORTED) or the
 * certified storage key is not one (KEY_INVALID), rather than a procedure failing at its
 * package. A trial wrap of a zero key (one ECDH; nothing of it leaves) answers the last two. */
static mcim_cause_t tpm_wrap_possible(const char *att_pem, const char *ka_pem)
{
  static const uint8_t zero[16] = {0};
  EVP_PKEY *storage = NULL;
  json_t *trial = NULL;
  mcim_cause_t rc = mcim_sho_tpm_device(att_pem, ka_pem, &storage, NULL);
  if (rc == MCIM_OK && storage)
    rc = mcim_tre_wrap_k(storage, zero, &trial);
  json_decref(trial);
  EVP_PKEY_free(storage);
  return rc;
}

/* The M2ME's parameters in an order (read before the owner is known, verified after): its
 * TRE certificates must be the M2MES's for the device the order is about. */
static mcim_cause_t check_parameters(struct mcim_role *r, const char *order, char *device,
                                     size_t dlen)
{
  json_t *payload = NULL;
  mcim_jose_key_t *k1 = NULL, *k2 = NULL;
  /* the payload decoded once (it carries both certificates, some 2 kB) */
  mcim_cause_t rc = mcim_jws_peek_payload(order, &payload);
  const json_t *sub = json_object_get(payload, "sub");
  const json_t *att = json_object_get(payload, "attestation_cert");
  const json_t *ka = json_object_get(payload, "ka_cert");
  if (rc == MCIM_OK && (!json_is_string(sub) || !mcim_pki_name_valid(json_string_value(sub))))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK && (!json_is_string(att) || !json_is_string(ka)))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK)
    rc = mcim_role_device_key_from_pem(r, json_string_value(att), json_string_value(sub),
                                       MCIM_CERT_TRE_ATTESTATION, &k1);
  if (rc == MCIM_OK)
    rc = mcim_role_device_key_from_pem(r, json_string_value(ka), json_string_value(sub),
                                       MCIM_CERT_TRE_KEY_AGREEMENT, &k2);
  if (rc == MCIM_OK)
    rc = tpm_wrap_possible(json_string_value(att), json_string_value(ka));
  if (rc == MCIM_OK)
    snprintf(device, dlen, "%s", json_string_value(sub));
  mcim_jose_key_free(k1);
  mcim_jose_key_free(k2);
  json_decref(payload);
  return rc;
}

/* Step 1 at the DRF: the RO checks the order against the device's owner record and
 * answers the owner key and its signed order record. A synchronous call: the RO never
 * calls back into us while answering it. */
static mcim_cause_t forward_to_drf(struct mcim_role *r, const char *txn, const char *order,
                                   struct mcim_http_result *res)
{
  const char *ro = mcim_config_str(r->cfg, "ro");
  const char *base = mcim_role_peer_url(r, ro);
  const char *self = mcim_role_peer_url(r, r->name);
  struct mcim_http_client *cli = mcim_role_client(r);
  char url[600];
  memset(res, 0, sizeof(*res));
  if (!base || !cli || !self) {
    snprintf(res->detail, sizeof(res->detail), "the RO (%s) is not in the peers file", ro);
    return res->cause = MCIM_PEER_UNREACHABLE;
  }
  snprintf(url, sizeof(url), "%s/v1/drf/orders", base);
  json_t *body = json_pack("{s:s,s:s,s:s}", "txn", txn, "order", order, "endpoint", self);
  mcim_cause_t rc = body ? mcim_http_request(cli, "POST", url, body, NULL, res) : MCIM_NO_MEMORY;
  json_decref(body);
  /* owner_epoch may be missing (an RO from before 2026-12-08, while the roles are upgraded):
   * the order is then kept without one and ends no other */
  const json_t *epoch = json_object_get(res->json, "owner_epoch");
  if (rc == MCIM_OK && (!json_is_object(json_object_get(res->json, "owner_jwk")) ||
                        !json_is_string(json_object_get(res->json, "record")) ||
                        (epoch && (!json_is_integer(epoch) || json_integer_value(epoch) < 0)))) {
    snprintf(res->detail, sizeof(res->detail),
             "the DRF's answer lacks owner_jwk or record, or its owner_epoch is no count");
    rc = res->cause = MCIM_PEER_BAD_ANSWER;
  }
  return rc;
}

/* At most orders_open_max live orders of one device here at once (DESIGN.md section 10:
 * nothing a party can flood is unbounded). Each order reserves an IMSI, is recorded at the
 * DRF and lives until it is provisioned, fails or expires (order_lifetime, expiry.c); only
 * the device's owner can place one, and it needs a few at most (a retry is the same txn, not
 * a new order). Live: ordered, validating, provisioning (what expiry.c fails), counted only
 * within order_lifetime, as one past it is failed by the next sweep. Over the bound:
 * MCIM_ORDERS_BUSY, *wait the seconds until the oldest live one expires. */
#define LIVE_ORDER                                                                          \
  "device = ? AND state IN ('ordered', 'validating', 'provisioning') AND created > ?"

/* Counted per owner (`owner_jwk`, the key the DRF vouched for): a previous owner's orders
 * neither count against the new owner's nor show to it (a 429 told it they exist). They are
 * ended when the new owner's first order here brings the RO's newer owner epoch
 * (owner_epoch_turn), so an owner handing the device to keys of its own gets no more live
 * orders by it. Until 2026-12-08 all owners' orders together were bounded at twice the bound
 * instead, which an owner could fill before handing the device over, holding the next owner's
 * orders off for order_lifetime. */
static mcim_cause_t orders_below_max(struct mcim_role *r, mcim_store_t *st, const char *device,
                                     const char *owner_jwk, int64_t *wait)
{
  int64_t lifetime = mcim_config_duration(r->cfg, "order_lifetime");
  int64_t max = mcim_config_int(r->cfg, "orders_open_max");
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_INT(mcim_now() - lifetime), MCIM_TEXT(owner_jwk)};
  return mcim_role_count_below(st,
                               "SELECT COUNT(*), MIN(created) FROM orders WHERE " LIVE_ORDER
                               " AND owner_jwk = ?",
                               p, 3, max, lifetime, MCIM_ORDERS_BUSY, wait);
}

/* The RO's owner epoch of an order (one more at each handover, RO migration 13), in the
 * transaction that stores it. An order of an older epoch than a live one here is a previous
 * owner's that the DRF answered before the handover and that came here after the new owner's:
 * NOT_OWNER (the DRF ended it at the handover), and it ends nothing. An order of a newer epoch
 * ends the device's orders of older ones that have no package yet (expiry.c): the previous
 * owners' business with the device ended at the handover. Orders stored before SHO migration
 * 15, or answered by an RO that sends no epoch (epoch < 0), are left to expire. */
static mcim_cause_t owner_epoch_turn(struct mcim_role *r, mcim_store_t *st, const char *txn,
                                     const char *device, int64_t epoch,
                                     struct mcim_sho_ended *ended)
{
  int64_t newer = 0;
  ended->n = 0;
  if (epoch < 0)
    return MCIM_OK;
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_INT(mcim_now() -
                                                mcim_config_duration(r->cfg, "order_lifetime")),
                    MCIM_INT(epoch)};
  mcim_cause_t rc = mcim_store_query_int(st,
                                         "SELECT COUNT(*) FROM orders WHERE " LIVE_ORDER
                                         " AND owner_epoch > ?",
                                         p, 3, &newer);
  if (rc == MCIM_OK && newer > 0) {
    mcim_log_event(MCIM_LOG_NOTICE, txn, 1, MCIM_NOT_OWNER,
                   "order of %s refused: placed by an owner the device had before its newest"
                   " handover (the DRF answered it before the handover)",
                   device);
    return MCIM_NOT_OWNER;
  }
  return rc == MCIM_OK ? mcim_sho_orders_end_older(r, st, device, epoch, ended) : rc;
}

static mcim_cause_t text_row(const mcim_row_t *row, void *arg)
{
  char **out = arg;
  *out = mcim_row_text(row, 0) ? strdup(mcim_row_text(row, 0)) : NULL;
  return MCIM_OK;
}

/* Before the RO is asked: a device at its bound whose order verifies with the owner key the
 * RO vouched for with its newest live order is refused here, and the DRF records nothing (a
 * burst of them costs the RO nothing). Any other order (a stranger's, refused NOT_OWNER by
 * the DRF as before, so nobody else learns that the device has orders here; a new owner's
 * after a handover) goes on, and meets the bound where the order would be stored. */
static mcim_cause_t owner_at_max(struct mcim_role *r, mcim_store_t *st, const char *device,
                                 const char *order, const char *txn, int64_t *wait)
{
  char *jwk = NULL;
  mcim_statement_t *stmt = NULL;
  mcim_cause_t rc = MCIM_OK;
  mcim_val_t p[] = {MCIM_TEXT(device),
                    MCIM_INT(mcim_now() - mcim_config_duration(r->cfg, "order_lifetime"))};
  if (mcim_store_query_one(st,
                           "SELECT owner_jwk FROM orders WHERE " LIVE_ORDER
                           " ORDER BY created DESC LIMIT 1",
                           p, 2, text_row, &jwk) == MCIM_OK &&
      jwk && verify_order(r, order, jwk, txn, &stmt) == MCIM_OK)
    rc = orders_below_max(r, st, device, jwk, wait) == MCIM_ORDERS_BUSY ? MCIM_ORDERS_BUSY
                                                                         : MCIM_OK;
  mcim_statement_free(stmt);
  free(jwk);
  return rc;
}

/* The refusal at the bound: logged, never traced, nothing stored. */
static void reply_orders_busy(struct mcim_http_response *resp, const char *txn,
                              const char *device, int64_t wait, const char *where)
{
  mcim_log_event(MCIM_LOG_WARN, txn, 1, MCIM_ORDERS_BUSY,
                 "order refused (%s): %s has orders_open_max live orders here", where, device);
  resp->retry_after = (int)wait;
  mcim_http_reply_problem(resp, MCIM_ORDERS_BUSY, 1,
                          "too many live orders of this device: order again in %lld s",
                          (long long)wait);
}

mcim_cause_t mcim_sho_order_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"order", MCIM_JV_STRING, true, 32768},
  };
  return mcim_jsonv_check(body, fields, 2, err, err_len);
}

/* POST /v1/orders: the subscriber's order (step 1), signed by the owner key. */
void mcim_sho_order_post(void *ctx, const struct mcim_http_request *req,
                         struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], imsi[24] = "", device[64] = "";
  json_t *answer = NULL;
  mcim_statement_t *stmt = NULL;
  struct mcim_sho_order o = {0};
  struct mcim_http_result res = {0};
  struct mcim_sho_ended ended = {.n = 0};
  char *jwk = NULL;
  int status = 0;
  mcim_store_t *st = mcim_role_store(r);
  int64_t received_us = mcim_now_us();
  mcim_cause_t rc = mcim_sho_order_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 1, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *order = json_string_value(json_object_get(req->json, "order"));
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 1, "store unavailable");
    return;
  }
  /* The same order again: the stored answer (it names the IMSI), but only to the owner. */
  if (mcim_sho_order_load(st, txn, &o) == MCIM_OK) {
    rc = verify_order(r, order, o.owner_jwk, txn, &stmt);
    if (rc == MCIM_OK && strcmp(stmt->claims.sub, o.device) != 0)
      rc = MCIM_CONFLICT;
    if (rc == MCIM_OK)
      rc = mcim_role_answer_get(st, txn, 1, "order", &status, &answer);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 1, "procedure %s is already ordered otherwise", txn);
      goto out;
    }
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  int64_t sent_us = mcim_now_us(), wait = 0;
  rc = check_parameters(r, order, device, sizeof(device));
  if (rc == MCIM_OK && owner_at_max(r, st, device, order, txn, &wait) == MCIM_ORDERS_BUSY) {
    reply_orders_busy(resp, txn, device, wait, "the RO not asked");
    goto out;
  }
  if (rc == MCIM_OK)
    rc = forward_to_drf(r, txn, order, &res);
  if (rc == MCIM_OK) {
    /* the jti is spent below, in the transaction that stores the order: a store failure
     * leaves the same order usable again */
    jwk = json_dumps(json_object_get(res.json, "owner_jwk"), JSON_COMPACT);
    rc = jwk ? verify_order(r, order, jwk, txn, &stmt) : MCIM_NO_MEMORY;
  }
  const char *att_cert = stmt ? mcim_statement_string(stmt, "attestation_cert") : NULL;
  const char *ka_cert = stmt ? mcim_statement_string(stmt, "ka_cert") : NULL;
  const char *procedure = stmt ? mcim_statement_string(stmt, "procedure") : NULL;
  const char *via = stmt ? mcim_statement_string(stmt, "via") : NULL;
  const struct mcim_sho_steps *steps = mcim_sho_steps_for(procedure, via);
  if (rc == MCIM_OK && (strcmp(stmt->claims.sub, device) != 0 || !att_cert || !ka_cert))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc == MCIM_OK && !steps)
    rc = procedure ? MCIM_CLAIM_MISMATCH : MCIM_CLAIM_MISSING;
  if (rc != MCIM_OK) {
    /* Logged, not traced or stored: a stranger's order leaves nothing behind. */
    mcim_log_event(MCIM_LOG_WARN, NULL, 1, rc, "order refused: %s",
                   res.detail[0] ? res.detail : mcim_cause_text(rc));
    /* The DRF's bound on the device's live orders (drf_orders_open_max): its Retry-After
     * (at most order_lifetime's maximum, 30 d) goes on to the owner. */
    if (rc == MCIM_ORDERS_BUSY)
      resp->retry_after =
          res.retry_after > 0 && res.retry_after <= 30L * 86400 ? (int)res.retry_after : 1;
    mcim_http_reply_problem(resp, rc, 1, "order refused: %s",
                            res.detail[0] ? res.detail : mcim_cause_text(rc));
    goto out;
  }
  const char *record = json_string_value(json_object_get(res.json, "record"));
  const json_t *epoch_json = json_object_get(res.json, "owner_epoch");
  int64_t epoch = epoch_json ? json_integer_value(epoch_json) : -1;
  bool validating = strcmp(procedure, "change") == 0 && via && strcmp(via, "old-sho") == 0;
  rc = mcim_store_begin(st);
  /* A copy of this order that raced us has been stored meanwhile: its answer, not a replay. */
  if (rc == MCIM_OK && mcim_role_answer_get(st, txn, 1, "order", &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  /* The bound, counted in the transaction that stores the order: two orders at once cannot
   * both pass it. A begun transaction holds the writers' lock (SQLite BEGIN IMMEDIATE; on
   * PostgreSQL the advisory lock taken at begin, READ COMMITTED: this count sees every order
   * committed before, on any instance), so count and insert are one step. Refused before the
   * jti is spent: the same order may come again after Retry-After (the DRF, which recorded
   * it just now, answers it as a retry). */
  if (rc == MCIM_OK &&
      (rc = owner_epoch_turn(r, st, txn, device, epoch, &ended)) == MCIM_NOT_OWNER) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, rc, 1, "order refused: the device has a newer owner");
    goto out;
  }
  if (rc == MCIM_OK && (rc = orders_below_max(r, st, device, jwk, &wait)) == MCIM_ORDERS_BUSY) {
    mcim_store_rollback(st);
    reply_orders_busy(resp, txn, device, wait, "at the store");
    goto out;
  }
  if (rc == MCIM_OK) {
    const mcim_replay_cache_t *replay = mcim_role_replay(r);
    /* kept as long as verify_order() would accept it: exp plus clock_skew */
    int64_t jti_until =
        mcim_replay_expires(stmt->claims.exp, mcim_config_duration(r->cfg, "clock_skew"));
    rc = replay->check_and_insert(replay->ctx, "subscriber", stmt->claims.jti, jti_until,
                                  mcim_now());
  }
  if (rc == MCIM_OK)
    rc = next_imsi(r, st, imsi);
  if (rc == MCIM_OK) {
    int64_t now = mcim_now();
    mcim_val_t p[] = {MCIM_TEXT(txn),       MCIM_TEXT(device),   MCIM_TEXT(imsi),
                      MCIM_TEXT(procedure), MCIM_TEXT(via),      MCIM_TEXT(att_cert),
                      MCIM_TEXT(ka_cert),   MCIM_INT(now),       MCIM_INT(now),
                      MCIM_TEXT(jwk),       MCIM_TEXT(record),
                      epoch >= 0 ? MCIM_INT(epoch) : MCIM_NULL};
    rc = mcim_store_exec(st,
                         "INSERT INTO orders (txn, device, imsi, state, procedure, via,"
                         " attestation_cert, ka_cert, created, updated, owner_jwk, record,"
                         " owner_epoch) VALUES (?, ?, ?, 'ordered', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  if (rc == MCIM_OK && validating) {
    /* With the old SHO's connectivity the device needs no discovery: validate now (step 3). */
    snprintf(o.txn, sizeof(o.txn), "%s", txn);
    snprintf(o.device, sizeof(o.device), "%s", device);
    free(o.record);
    o.record = strdup(record);
    /* o is cleared at out (mcim_sho_order_clear): clang 14's analyzer loses it across the call */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    rc = o.record ? mcim_sho_queue_validation(r, st, &o, steps) : MCIM_NO_MEMORY;
    if (rc == MCIM_OK)
      rc = mcim_sho_order_set_state(st, txn, "ordered", "validating", MCIM_OK);
  }
  answer = json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", device, "imsi", imsi, "state",
                     validating ? "validating" : "ordered");
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 1, "order", 201, answer);
  if (rc == MCIM_OK) { /* the trace rows ride on the order's commit */
    mcim_role_trace_at(r, received_us, txn, 1, "subscriber", r->name,
                       "order: M2ME parameters (device, TRE certificates)", stmt->payload,
                       MCIM_OK);
    mcim_role_trace_at(r, sent_us, txn, 1, r->name, mcim_config_str(r->cfg, "ro"),
                       "DRF: the owner's order (checked against the owner record)", NULL, MCIM_OK);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    json_t *stored = NULL; /* on a store without the lock above, the copy won the insert */
    if (rc == MCIM_CONFLICT &&
        mcim_role_answer_get(st, txn, 1, "order", &status, &stored) == MCIM_OK) {
      mcim_http_reply_json(resp, status, stored);
      goto out;
    }
    mcim_http_reply_problem(resp, rc, 1, "order not stored");
    goto out;
  }
  mcim_role_wake(r);
  mcim_sho_orders_ended_report(device, &ended);
  mcim_metric_inc(&mcim_m_procedures_started, MCIM_LABELS(procedure));
  mcim_log_event(MCIM_LOG_INFO, txn, 1, MCIM_OK, "order for %s: IMSI %s reserved", device, imsi);
  mcim_http_reply_json(resp, 201, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_http_result_clear(&res);
  mcim_statement_free(stmt);
  mcim_sho_order_clear(&o);
  free(jwk);
}

/* The RO's word that the owner who signed `query` owns the device now (POST
 * /v1/drf/owner-queries): the key kept with the order is the owner's when it was placed, and
 * a handover since then is recorded only at the RO. A synchronous call, as forward_to_drf. */
static mcim_cause_t owner_now(struct mcim_role *r, const struct mcim_sho_order *o,
                              const char *query)
{
  const char *base = mcim_role_peer_url(r, mcim_config_str(r->cfg, "ro"));
  struct mcim_http_client *cli = mcim_role_client(r);
  struct mcim_http_result res;
  char url[600];
  memset(&res, 0, sizeof(res));
  if (!base || !cli)
    return MCIM_PEER_UNREACHABLE;
  snprintf(url, sizeof(url), "%s/v1/drf/owner-queries", base);
  json_t *body = json_pack("{s:s,s:s,s:s}", "txn", o->txn, "device", o->device, "query", query);
  mcim_cause_t rc = body ? mcim_http_request(cli, "POST", url, body, NULL, &res) : MCIM_NO_MEMORY;
  json_decref(body);
  if (rc != MCIM_OK && res.status >= 400 && res.status < 500) { /* the RO's "no" */
    mcim_log_event(MCIM_LOG_NOTICE, o->txn, 0, rc,
                   "order of %s: read refused, its owner is no longer the device's (the RO: %s)",
                   o->device, res.detail);
    rc = MCIM_NOT_PARTY;
  } else if (rc != MCIM_OK) {
    rc = MCIM_PEER_UNREACHABLE;
  }
  mcim_http_result_clear(&res);
  return rc;
}

/* Who may read an order: the procedure's other parties on their certificates (RO, PVA, the
 * lab's admin), or the owner with a query it signed (typ mcim-order-query+jwt, aud = this
 * SHO, sub = the device, txn), checked against the owner key the RO vouched for, then (the
 * RO's word) against the device's owner now: an owner that handed the device over reads
 * nothing more of it here. MCIM_NOT_PARTY, or MCIM_PEER_UNREACHABLE when the RO could not say
 * (answered 502 with Retry-After: not a refusal). */
static mcim_cause_t may_read_order(struct mcim_role *r, const struct mcim_http_request *req,
                                   const struct mcim_sho_order *o)
{
  if (req->peer && (strcmp(req->peer, mcim_config_str(r->cfg, "ro")) == 0 ||
                    strcmp(req->peer, mcim_config_str(r->cfg, "pva")) == 0 ||
                    strcmp(req->peer, "admin") == 0))
    return MCIM_OK;
  if (!req->bearer || !o->owner_jwk)
    return MCIM_NOT_PARTY;
  mcim_jose_key_t *owner = NULL;
  mcim_statement_t *stmt = NULL;
  mcim_cause_t rc = mcim_jose_key_from_jwk(o->owner_jwk, strlen(o->owner_jwk), &owner);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = "subscriber", .aud = r->name, .sub = o->device,
                            .typ = "mcim-order-query+jwt", .txn = o->txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .max_lifetime = MCIM_OWNER_STATEMENT_MAX_LIFETIME};
    rc = mcim_jws_verify(req->bearer, strlen(req->bearer), owner, &ex, &stmt);
  }
  mcim_statement_free(stmt);
  mcim_jose_key_free(owner);
  if (rc != MCIM_OK)
    return MCIM_NOT_PARTY;
  return owner_now(r, o, req->bearer);
}

/* GET /v1/orders/{txn} */
void mcim_sho_order_get(void *ctx, const struct mcim_http_request *req,
                        struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_sho_order o = {0};
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = st ? mcim_sho_order_load(st, req->params[0], &o) : MCIM_STORE_ERROR;
  mcim_cause_t may = rc == MCIM_OK ? may_read_order(r, req, &o) : MCIM_NOT_PARTY;
  if (may == MCIM_PEER_UNREACHABLE) { /* only an owner of that order gets this far */
    resp->retry_after = 5;
    mcim_http_reply_problem(resp, may, 0, "the RO cannot confirm the device's owner now");
    goto out;
  }
  /* an unknown txn and a refused reader look the same: nobody learns which txns exist */
  if (rc == MCIM_NOT_FOUND || (rc == MCIM_OK && may != MCIM_OK)) {
    mcim_http_reply_problem(resp, MCIM_NOT_PARTY, 0,
                            "order %s is readable only by its owner and the procedure's parties",
                            req->params[0]);
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "order %s unreadable", req->params[0]);
    goto out;
  }
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", o.txn, "device", o.device, "imsi",
                           o.imsi, "state", o.state, "procedure", o.procedure);
  if (o.cause[0])
    json_object_set_new(body, "cause", json_string(o.cause));
  mcim_http_reply_json(resp, 200, body);
out:
  mcim_sho_order_clear(&o);
}
