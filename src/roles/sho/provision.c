/* SHO: an order's MCIM from the device's announcement to the live subscription, the
 * handlers of the peers' messages about an order (pristine steps 8-15, change via the old SHO
 * steps 3-14; the order itself, step 1, is order.c's):
 *
 *   8       RO (DRF) -> SHO  POST /v1/devices/ready {txn, device}   the device found us
 *   9 / 3   SHO -> PVA       outbox POST /v1/validations            validate the device
 *   11 / 5  PVA -> SHO       POST /v1/verdicts {txn, device, verdict}
 *   12 / 6  SHO -> RO        outbox POST /v1/drf/authorisations     the MCIM, sealed to the TRE
 *                            (pristine) or /v1/dpf/packages (change)
 *   15 / 13 RO (DPF) -> SHO  POST /v1/reports {txn, device, result} the subscription goes live
 *   15 / 14 SHO -> RO (DRF)  outbox POST /v1/drf/registrations      the device subscribes here
 *
 * The table of these step numbers by procedure heads the file; the role's set-up, its routes,
 * the order's record and the attach are in sho.c. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_sync.h"
#include "roles/sho/sho.h"

/* ---- steps by procedure ---- */

static const struct mcim_sho_steps sho_steps[] = {
    /* order, validate, verdict, package, report, register */
    {"initial", 1, 9, 11, 12, 15, 15},
    {"change", 1, 3, 5, 6, 13, 14},
};

/* The change via the pristine state and the preload of a second MCIM run the initial
 * provisioning's steps (4-15); only the change via the old SHO has its own numbering. */
const struct mcim_sho_steps *mcim_sho_steps_for(const char *procedure, const char *via)
{
  if (!procedure)
    return NULL;
  if (strcmp(procedure, "change") == 0 && via && strcmp(via, "old-sho") == 0)
    return &sho_steps[1];
  if (strcmp(procedure, "initial") == 0 || strcmp(procedure, "preload") == 0 ||
      (strcmp(procedure, "change") == 0 && via && strcmp(via, "pristine") == 0))
    return &sho_steps[0];
  return NULL;
}

/* The DPF numbers its messages by the same two tables. */
const char *mcim_sho_dpf_procedure(const struct mcim_sho_order *o)
{
  return mcim_sho_steps_for(o->procedure, o->via) == &sho_steps[1] ? "change" : "initial";
}

/* ---- the peers' messages about an order ---- */

/* The common front of what a peer role sends about an order (the DRF's "ready", the PVA's
 * verdict, the DPF's report): the body's fields, the caller's certificate name, the order of
 * `txn`, which must be for the body's `device`. On failure the problem is answered (with
 * `step`) and false returned; the caller clears `o` either way. */
static bool peer_order_request(struct mcim_role *r, const struct mcim_http_request *req,
                               struct mcim_http_response *resp, const char *peer,
                               const char *refusal,
                               mcim_cause_t (*body)(const json_t *, char *, size_t), int step,
                               struct mcim_sho_order *o, const struct mcim_sho_steps **steps)
{
  char err[200];
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = body(req->json, err, sizeof(err));
  if (rc == MCIM_OK && (!req->peer || strcmp(req->peer, peer) != 0)) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "%s", refusal);
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "%s", err);
    return false;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  rc = st ? mcim_sho_order_load(st, txn, o) : MCIM_STORE_ERROR;
  *steps = mcim_sho_steps_for(o->procedure, o->via);
  if (rc == MCIM_OK && !*steps)
    rc = MCIM_INTERNAL;
  if (rc == MCIM_OK && strcmp(o->device, json_string_value(json_object_get(req->json, "device"))) != 0)
    rc = MCIM_CONFLICT;
  if (rc == MCIM_NOT_FOUND && step == 8) {
    /* The DRF holds the order only because we registered it (step 1), and we store it
     * once the DRF has answered: a device that discovers in between gets its announcement
     * here first. "Not yet", so the DRF's outbox asks again; a 404 would end it. */
    rc = MCIM_ORDER_NOT_STORED_YET;
    resp->retry_after = 1;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "no order %s for this device", txn);
    return false;
  }
  return true;
}

mcim_cause_t mcim_sho_ready_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
  };
  return mcim_jsonv_check(body, fields, 2, err, err_len);
}

/* POST /v1/devices/ready (RO's DRF, step 8): the device found us; validate it (step 9). */
void mcim_sho_device_ready(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_sho_order o = {0};
  const struct mcim_sho_steps *steps = NULL;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc;
  if (!peer_order_request(r, req, resp, mcim_config_str(r->cfg, "ro"),
                          "only the RO's DRF announces devices", mcim_sho_ready_body, 8, &o,
                          &steps))
    goto out;
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  if (strcmp(o.state, "ordered") == 0 && steps) {
    rc = mcim_store_begin(st);
    if (rc == MCIM_OK)
      rc = mcim_sho_order_set_state(st, txn, "ordered", "validating", MCIM_OK);
    if (rc == MCIM_OK)
      rc = mcim_sho_queue_validation(r, st, &o, steps);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
    if (rc != MCIM_OK && rc != MCIM_WRONG_STATE) {
      mcim_http_reply_problem(resp, rc, steps->validate, "validation not requested");
      goto out;
    }
    mcim_role_wake(r);
    if (rc == MCIM_OK) { /* ours: the order is where this transaction left it */
      mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", "validating"));
      goto out;
    }
  }
  /* A repeated announcement changes nothing; the answer says where the order is: as read
   * above, or read again when another request moved it since (MCIM_WRONG_STATE). Not read
   * again after our own transition: one round trip less per announcement. */
  rc = MCIM_OK;
  if (strcmp(o.state, "ordered") == 0 && steps) {
    mcim_sho_order_clear(&o);
    rc = mcim_sho_order_load(st, txn, &o);
  }
  mcim_http_reply_json(
      resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", rc == MCIM_OK ? o.state : "unknown"));
out:
  mcim_sho_order_clear(&o);
}

/* The device's TPM storage key, if its KA certificate (verified by the caller against the
 * M2MES CA) certifies one: *out stays NULL for a TRE without a TPM. */
static mcim_cause_t tpm_storage_of(const struct mcim_sho_order *o, EVP_PKEY **out)
{
  X509 *cert = NULL;
  mcim_cause_t rc = mcim_pki_cert_from_pem(o->ka_cert, strlen(o->ka_cert), &cert);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_tpm_storage_key(cert, out);
  X509_free(cert);
  return rc == MCIM_NOT_FOUND ? MCIM_OK : rc;
}

static mcim_cause_t cert_row(const mcim_row_t *row, void *arg)
{
  char **out = arg;
  *out = mcim_row_text(row, 0) ? strdup(mcim_row_text(row, 0)) : NULL;
  return *out ? MCIM_OK : MCIM_NO_MEMORY;
}

/* The procedure's own key-agreement key (docs/tre.md, "Crypto-shredding"): the device's
 * quote that the PVA judged travels in its verdict ("quote"); its "ka_jwk" is a key the TRE
 * made for this txn alone and deletes once the package is open. Checked here, not taken on
 * the PVA's word: the quote must verify with the device's certified attestation key, be the
 * device's, for the PVA and this txn, at the time the PVA signed the verdict (the quote was
 * live then; the verdict may come later, through the outbox). *out stays NULL only for a
 * verdict without a quote or a quote without "ka_jwk" (a PVA or a device from before: the
 * static KA key); a device that offered one never gets a package sealed to the static key.
 *
 * A TPM-enrolled device that takes K in its TPM (its attestation certificate names an AK, its
 * KA certificate a storage key) must offer in the same quote the slot key K is to be wrapped to
 * ("tpm_slot", docs/tre-tpm.md "Slots in the TPM"), certified by that AK over this txn:
 * *slot is that offer, checked. No offer, or one that does not check, fails the order with
 * its cause: never K wrapped to the storage key, which TPM2_Rewrap would give out in clear. A
 * TPM device that was not enrolled (mcim_sho_tpm_device) fails with TPM_ENROLMENT_REQUIRED. */
static mcim_cause_t txn_ka_of(struct mcim_role *r, mcim_store_t *st, const struct mcim_sho_order *o,
                              const mcim_statement_t *verdict, mcim_jose_key_t **out, json_t **slot)
{
  const char *quote = mcim_statement_string(verdict, "quote");
  mcim_jose_key_t *att = NULL, *ka = NULL;
  mcim_statement_t *q = NULL;
  EVP_PKEY *ak = NULL, *storage = NULL;
  char *cert = NULL, *jwk = NULL, why[256] = "";
  mcim_val_t p[] = {MCIM_TEXT(o->txn)};
  mcim_cause_t rc = MCIM_OK;

  *out = NULL;
  *slot = NULL;
  rc = mcim_store_query_one(st, "SELECT attestation_cert FROM orders WHERE txn = ?", p, 1, cert_row,
                            &cert);
  if (rc == MCIM_OK)
    rc = mcim_role_device_key_from_pem(r, cert, o->device, MCIM_CERT_TRE_ATTESTATION, &att);
  /* a TPM device certified without enrolment was refused at step 1; again here */
  if (rc == MCIM_OK && (rc = mcim_sho_tpm_device(cert, o->ka_cert, &storage, &ak)) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, o->txn, 0, rc,
                   "%s's TRE certificates name a TPM that was not enrolled", o->device);
  if (rc != MCIM_OK)
    goto cleanup;
  bool need_slot = ak != NULL; /* enrolled: K goes into its TPM, under this slot key only */
  if (!quote) {
    if (need_slot) {
      rc = MCIM_TPM_SLOT_KEY_MISSING;
      mcim_log_event(MCIM_LOG_WARN, o->txn, 0, rc,
                     "the verdict carries no quote: no slot key for %s's TPM", o->device);
    }
    goto cleanup;
  }
  mcim_jws_expect_t ex = {.iss = o->device,
                          .aud = mcim_config_str(r->cfg, "pva"),
                          .sub = o->device,
                          .typ = "mcim-quote+jwt",
                          .txn = o->txn,
                          .now = verdict->claims.iat,
                          .skew = mcim_config_duration(r->cfg, "clock_skew")};
  if ((rc = mcim_jws_verify(quote, strlen(quote), att, &ex, &q)) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, o->txn, 0, rc,
                   "the device's quote in the verdict does not verify with its attestation key");
    rc = MCIM_QUOTE_INVALID;
    goto cleanup;
  }
  if (need_slot) {
    json_t *offered = json_object_get(q->payload, "tpm_slot");
    rc = mcim_tre_slot_check(ak, offered, o->txn, why, sizeof(why));
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_WARN, o->txn, 0, rc, "the quote's slot key is refused: %s", why);
      goto cleanup;
    }
    *slot = json_incref(offered);
  }
  json_t *offer = json_object_get(q->payload, "ka_jwk");
  if (!offer)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  /* a public P-256 key and nothing else */
  if (!json_is_object(offer) || json_object_get(offer, "d") ||
      !(jwk = json_dumps(offer, JSON_COMPACT)) ||
      mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka) != MCIM_OK || mcim_jose_key_has_private(ka)) {
    mcim_log_event(MCIM_LOG_WARN, o->txn, 0, rc, "the quote's ka_jwk is not a public EC key");
    goto cleanup;
  }
  *out = ka;
  ka = NULL;
  rc = MCIM_OK;
cleanup:
  if (rc != MCIM_OK) {
    json_decref(*slot);
    *slot = NULL;
  }
  EVP_PKEY_free(ak);
  EVP_PKEY_free(storage);
  free(cert);
  free(jwk);
  mcim_statement_free(q);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  return rc;
}

/* Make the MCIM for an order and seal it to the TRE (step 12 / 6; content: sho, imsi, k,
 * opc, amf): to `txn_ka`, the procedure's own KA key (txn_ka_of), or to the KA key of the
 * device's certificate when it offered none. For a TRE whose KA certificate certifies a TPM
 * storage key, K goes as a duplication blob ("k_tpm", docs/tre-tpm.md "K in the TPM") instead
 * of "k": to `slot`, the procedure's certified slot key (txn_ka_of; a TPM device is always
 * enrolled, and K never goes to its storage key). Only that TPM can import it, so neither the
 * RO nor the device's agent ever sees K. */
static mcim_cause_t make_package(struct mcim_role *r, mcim_store_t *st,
                                 const struct mcim_sho_order *o, const mcim_jose_key_t *txn_ka,
                                 const json_t *slot, char **package)
{
  struct mcim_auc_sub sub = {.imsi = o->imsi, .device = o->device, .state = "pending"};
  mcim_jose_key_t *tre = NULL;
  EVP_PKEY *storage = NULL;
  json_t *k_tpm = NULL;
  char k_hex[33], opc_hex[33], amf_hex[5];
  char *content = NULL;
  mcim_cause_t rc = mcim_random(sub.k, sizeof(sub.k));
  if (rc == MCIM_OK)
    rc = mcim_random(sub.opc, sizeof(sub.opc));
  if (rc == MCIM_OK)
    rc = mcim_hex_decode_str(mcim_config_str(r->cfg, "amf"), sub.amf, sizeof(sub.amf));
  if (rc == MCIM_OK)
    rc = mcim_role_device_key_from_pem(r, o->ka_cert, o->device, MCIM_CERT_TRE_KEY_AGREEMENT,
                                       &tre);
  if (rc == MCIM_OK && !slot && (rc = tpm_storage_of(o, &storage)) == MCIM_OK && storage) {
    rc = MCIM_TPM_SLOT_KEY_MISSING; /* txn_ka_of gives every TPM device its slot key */
    mcim_log_event(MCIM_LOG_ERROR, o->txn, 0, rc, "no slot key to wrap K to for %s", o->device);
  }
  if (rc == MCIM_OK && slot) {
    rc = mcim_tre_wrap_k_slot(slot, sub.k, &k_tpm);
    mcim_log_event(rc == MCIM_OK ? MCIM_LOG_INFO : MCIM_LOG_ERROR, o->txn, 0, rc,
                   "K %swrapped to the procedure's certified slot key of %s",
                   rc == MCIM_OK ? "" : "cannot be ", o->device);
  }
  if (rc == MCIM_OK)
    rc = mcim_auc_add(st, r->storage_key, &sub);
  if (rc == MCIM_OK) {
    mcim_hex_encode(sub.k, sizeof(sub.k), k_hex);
    mcim_hex_encode(sub.opc, sizeof(sub.opc), opc_hex);
    mcim_hex_encode(sub.amf, sizeof(sub.amf), amf_hex);
    json_t *c = json_pack("{s:s,s:s,s:s,s:s}", "sho", r->name, "imsi", o->imsi, "opc", opc_hex,
                          "amf", amf_hex);
    if (c && (k_tpm ? json_object_set(c, "k_tpm", k_tpm)
                    : json_object_set_new(c, "k", json_string(k_hex)))) {
      json_decref(c);
      c = NULL;
    }
    content = c ? json_dumps(c, JSON_COMPACT) : NULL;
    json_decref(c); /* jansson does not wipe; the strings lived briefly in its heap */
    mcim_wipe(k_hex, sizeof(k_hex));
    mcim_wipe(opc_hex, sizeof(opc_hex));
    if (!content)
      rc = MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK) {
    int64_t now = mcim_now();
    mcim_claims_t c = {.iss = r->name, .sub = o->device, .aud = o->device,
                       .typ = "mcim-package+jwt", .txn = o->txn, .iat = now,
                       .exp = now + mcim_role_statement_lifetime(r)};
    rc = mcim_package_seal(r->sign_key, &c, txn_ka ? txn_ka : tre, (const uint8_t *)content,
                           strlen(content), package);
  }
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, o->txn, 0, rc, "MCIM for %s sealed to %s", o->device,
                   txn_ka ? "the procedure's own key-agreement key (its quote's ka_jwk)"
                          : "the key-agreement key of its certificate (its quote offered none)");
  if (content) {
    mcim_wipe(content, strlen(content));
    free(content);
  }
  mcim_wipe(&sub, sizeof(sub));
  json_decref(k_tpm);
  EVP_PKEY_free(storage);
  mcim_jose_key_free(tre);
  return rc;
}

mcim_cause_t mcim_sho_verdict_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"verdict", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN}, /* it carries the device's quote */
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

/* POST /v1/verdicts (PVA, step 11 / 5). */
void mcim_sho_verdict(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_sho_order o = {0};
  const struct mcim_sho_steps *steps = NULL;
  const mcim_jose_key_t *pva_key = NULL;
  mcim_jose_key_t *txn_ka = NULL;
  json_t *slot = NULL;
  mcim_statement_t *stmt = NULL;
  char *package = NULL;
  const char *pva = mcim_config_str(r->cfg, "pva");
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc;
  if (!peer_order_request(r, req, resp, pva, "only the PVA delivers verdicts",
                          mcim_sho_verdict_body, 11, &o, &steps))
    goto out;
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *verdict = json_string_value(json_object_get(req->json, "verdict"));
  if (strcmp(o.state, "validating") != 0) {
    /* a retried delivery after we acted on it: same answer */
    mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", o.state));
    goto out;
  }
  rc = mcim_role_peer_key(r, pva, &pva_key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = pva, .aud = r->name, .sub = o.device,
                            .typ = "mcim-verdict+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(verdict, strlen(verdict), pva_key, &ex, &stmt);
  }
  const char *result = stmt ? mcim_statement_string(stmt, "result") : NULL;
  if (rc == MCIM_OK && !result)
    rc = MCIM_CLAIM_MISSING;
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, steps->verdict, "verdict does not verify");
    goto out;
  }
  rc = mcim_store_begin(st);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, steps->verdict, "store unavailable");
    goto out;
  }
  /* The order again, under the writers' lock: a copy of this delivery that arrived at the
   * same time (the PVA's outbox retries one that outlived its timeout) may have acted on it
   * since; it gets the same answer as a later one, not WRONG_STATE from the change below. */
  mcim_sho_order_clear(&o);
  rc = mcim_sho_order_load(st, txn, &o);
  if (rc == MCIM_OK && strcmp(o.state, "validating") != 0) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", o.state));
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, rc, steps->verdict, "order %s unavailable", txn);
    goto out;
  }
  /* a positive verdict whose quote does not vouch for the key it offers is no verdict to
   * seal an MCIM on: the order fails with why */
  mcim_cause_t fail = strcmp(result, "success") != 0 ? MCIM_VALIDATION_FAILED
                                                     : txn_ka_of(r, st, &o, stmt, &txn_ka, &slot);
  if (fail == MCIM_NO_MEMORY || fail == MCIM_STORE_ERROR) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, fail, steps->verdict, "order %s unavailable", txn);
    goto out;
  }
  if (fail != MCIM_OK) {
    rc = mcim_sho_order_set_state(st, txn, "validating", "failed", fail);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
    if (rc == MCIM_OK)
      mcim_metric_inc(&mcim_m_procedures_failed, MCIM_LABELS(o.procedure, mcim_cause_name(fail)));
    mcim_log_event(MCIM_LOG_WARN, txn, steps->verdict, fail,
                   "%s failed validation: no MCIM will be issued", o.device);
    mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", "failed"));
    goto out;
  }
  rc = make_package(r, st, &o, txn_ka, slot, &package);
  /* Step 12 / 6 with an HLR: the subscriber is to be created there, recorded with the MCIM
   * (a preloaded one waits in reserve, outside the HLR, until the device switches to it) */
  bool preload = strcmp(o.procedure, "preload") == 0;
  if (rc == MCIM_OK && !preload)
    rc = mcim_auc_sync_want(r, st, o.imsi, true);
  if (rc == MCIM_OK)
    rc = mcim_sho_order_set_state(st, txn, "validating", "provisioning", MCIM_OK);
  if (rc == MCIM_OK) {
    /* Step 12 (pristine): "authorises RO (DRF function) to authorize its DPF": the DRF gets
     * the PVA's verdict with the package (signed by us, sealed to the TRE) and hands it to its
     * DPF. Step 6 (change via the old SHO) sends the same to the DPF. */
    bool drf = strcmp(mcim_sho_dpf_procedure(&o), "initial") == 0;
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", o.device, "package",
                             package, "procedure", mcim_sho_dpf_procedure(&o), "verdict",
                             verdict);
    rc = mcim_role_outbox_put(r, st, mcim_config_str(r->cfg, "ro"),
                              drf ? "/v1/drf/authorisations" : "/v1/dpf/packages", body, txn,
                              steps->package,
                              drf ? "DRF: authorise the DPF to provision (positive validation)"
                                  : "DPF: new MCIM (sealed), positive validation");
    json_decref(body);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, steps->package, "MCIM not issued");
    goto out;
  }
  mcim_role_wake(r);
  if (!preload) /* in the HLR before the device can attach; else the tick or the attach */
    (void)mcim_auc_sync_run(r, o.imsi);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "state", "provisioning"));
out:
  if (package) {
    mcim_wipe(package, strlen(package));
    free(package);
  }
  mcim_jose_key_free(txn_ka);
  json_decref(slot);
  mcim_statement_free(stmt);
  mcim_sho_order_clear(&o);
}

mcim_cause_t mcim_sho_report_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"result", MCIM_JV_STRING, true, 64},
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

/* POST /v1/reports (RO's DPF, step 15 / 13). */
void mcim_sho_report(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_sho_order o = {0};
  const struct mcim_sho_steps *steps = NULL;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc;
  if (!peer_order_request(r, req, resp, mcim_config_str(r->cfg, "ro"),
                          "only the RO's DPF reports provisioning", mcim_sho_report_body, 15,
                          &o, &steps))
    goto out;
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *result = json_string_value(json_object_get(req->json, "result"));
  rc = mcim_sho_on_report(r, st, &o, steps, result);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, steps->report, "report not applied");
    goto out;
  }
  mcim_role_wake(r);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "txn", txn, "result", result));
out:
  mcim_sho_order_clear(&o);
}

/* Queue the DRF registration of this device at this SHO (caller's transaction). */
mcim_cause_t mcim_sho_register(struct mcim_role *r, mcim_store_t *st, const char *txn,
                               const char *device, const char *state, int step, const char *msg)
{
  const char *endpoint = mcim_role_peer_url(r, r->name);
  int64_t seq = 0;
  /* seq: when we decided it, on the decision clock; the DRF keeps the newest of our
   * registrations of a device, whatever order our outbox (or our instances' outboxes)
   * delivers them in */
  mcim_cause_t rc = mcim_sho_decision_us(st, &seq);
  if (rc != MCIM_OK)
    return rc;
  json_t *reg = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "txn", txn, "device", device, "sho",
                          r->name, "state", state, "endpoint",
                          endpoint ? endpoint : "https://unknown", "seq", (json_int_t)seq);
  rc = mcim_role_outbox_put(r, st, mcim_config_str(r->cfg, "ro"), "/v1/drf/registrations", reg,
                            txn, step, msg);
  json_decref(reg);
  return rc;
}

/* The subscription goes live (AuC pending -> active) and the DRF learns it: caller's
 * transaction. */
mcim_cause_t mcim_sho_activate(struct mcim_role *r, mcim_store_t *st,
                               const struct mcim_sho_order *o, const char *from_state,
                               const struct mcim_sho_steps *steps)
{
  mcim_cause_t rc = mcim_auc_activate(st, o->imsi);
  if (rc == MCIM_OK)
    rc = mcim_sho_order_set_state(st, o->txn, from_state, "active", MCIM_OK);
  if (rc == MCIM_OK)
    rc = mcim_sho_register(r, st, o->txn, o->device, "subscribed", steps->reg,
                           "DRF: register M2ME as subscribing to this SHO");
  return rc;
}

mcim_cause_t mcim_sho_on_report(struct mcim_role *r, mcim_store_t *st,
                                const struct mcim_sho_order *o,
                                const struct mcim_sho_steps *steps, const char *result)
{
  if (strcmp(o->state, "provisioning") != 0)
    return MCIM_OK; /* already applied: a retried report */
  bool ok = strcmp(result, "success") == 0;
  struct mcim_sho_order cur = {0};
  bool preload = strcmp(o->procedure, "preload") == 0;
  bool needs_release = strcmp(o->procedure, "change") == 0 && strcmp(o->via, "old-sho") == 0;
  const char *outcome = "failed";
  mcim_cause_t fail_cause = MCIM_PROCEDURE_FAILED;
  bool done = false; /* the procedure ends here successfully (metrics) */
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc != MCIM_OK)
    return rc;
  /* The order again, under the writers' lock: the old SHO's release (step 11) may have been
   * recorded since `o` was read, by another thread or another instance of this SHO. Deciding
   * on the stale copy, each side would wait for the other and the subscription would never
   * go live (seen with two instances and a SIGKILL). */
  rc = mcim_sho_order_load(st, o->txn, &cur);
  if (rc == MCIM_OK && strcmp(cur.state, "provisioning") != 0) {
    mcim_store_rollback(st); /* applied meanwhile: a retried report */
    mcim_sho_order_clear(&cur);
    return MCIM_OK;
  }
  if (rc == MCIM_OK && !ok) {
    int cause = mcim_cause_from_name(result);
    if (cause > 0)
      fail_cause = (mcim_cause_t)cause;
    rc = mcim_auc_terminate(st, o->imsi);
    if (rc == MCIM_OK || rc == MCIM_NOT_FOUND)
      rc = mcim_auc_sync_want(r, st, o->imsi, false); /* out of the HLR (the worker's tick) */
    if (rc == MCIM_OK)
      rc = mcim_sho_order_set_state(st, o->txn, "provisioning", "failed",
                                    cause > 0 ? (mcim_cause_t)cause : MCIM_PROCEDURE_FAILED);
  } else if (rc == MCIM_OK && preload) {
    /* A second MCIM held in reserve: no AVs until the device switches to it. */
    outcome = "standby";
    done = true;
    rc = mcim_auc_set_state(st, o->imsi, "pending", "standby");
    if (rc == MCIM_OK)
      rc = mcim_sho_order_set_state(st, o->txn, "provisioning", "standby", MCIM_OK);
    if (rc == MCIM_OK)
      rc = mcim_sho_register(r, st, o->txn, o->device, "preloaded", steps->reg,
                             "DRF: M2ME holds a pre-provisioned MCIM of this SHO");
  } else if (rc == MCIM_OK && needs_release && !cur.released) {
    /* Invariant 1: not active before the old subscription is released (step 11). */
    outcome = "installed, waiting for the old SHO's release";
    rc = mcim_sho_order_set_state(st, o->txn, "provisioning", "installed", MCIM_OK);
  } else if (rc == MCIM_OK) {
    outcome = "active";
    done = true;
    rc = mcim_sho_activate(r, st, o, "provisioning", steps);
  }
  mcim_sho_order_clear(&cur);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_OK && !ok)
    mcim_metric_inc(&mcim_m_procedures_failed,
                    MCIM_LABELS(o->procedure, mcim_cause_name(fail_cause)));
  else if (rc == MCIM_OK && done)
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS(o->procedure));
  if (rc == MCIM_OK)
    mcim_log_event(ok ? MCIM_LOG_INFO : MCIM_LOG_WARN, o->txn, steps->report, MCIM_OK,
                   "subscription %s of %s: %s", o->imsi, o->device, outcome);
  if (rc == MCIM_OK && ok && done && !preload)
    mcim_http_wake("auc-active:%s", o->imsi); /* the device's attach held for it */
  return rc;
}
