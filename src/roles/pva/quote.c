/* The PVA's POST /v1/validations/{id}/quote (step 10, change 4: the device, pva.c's
 * validations): the TRE's quote over the validation's nonce, verified with the attestation
 * key the M2MES certified for the device (a TPM device's TPM2_Quote by its enrolled AK,
 * quote_tpm.c), its log matched against the model's RIMs (validate.c), then in one
 * transaction the state, the signed verdict for the SHO in the outbox (step 11) and the
 * stored answer. A refusal that cannot be attributed to the device's TRE keeps the nonce
 * (note_refusal). Apart from pva.c: the one handler that judges a platform. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/util.h"
#include "roles/pva/pva.h"

static mcim_cause_t rim_row(const mcim_row_t *row, void *arg)
{
  json_t *rims = arg;
  const char *comp = mcim_row_text(row, 0);
  const char *dig = mcim_row_text(row, 1);
  if (!comp || !dig)
    return MCIM_OK;
  json_t *list = json_object_get(rims, comp);
  if (!list) {
    list = json_array();
    json_object_set_new(rims, comp, list);
  }
  json_array_append_new(list, json_string(dig));
  return MCIM_OK;
}

static void sha256_hex(const char *s, char out[65])
{
  uint8_t md[32];
  unsigned n = 0;
  out[0] = '\0';
  if (EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) == 1 && n == sizeof(md))
    mcim_hex_encode(md, sizeof(md), out);
}

/* The validation left `pending` under us (or the quote's jti is already recorded): the same
 * quote again gets the stored answer; anything else is a second use of the nonce. */
static void already_used(struct mcim_role *r, mcim_store_t *st, struct mcim_http_response *resp,
                         const char *id, const char *sha, const char *device)
{
  struct vrow v;
  int status = 0;
  json_t *answer = NULL;
  if (pva_vrow_load(st, id, &v) != MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_NOT_FOUND, 0, "no validation %s", id);
    return;
  }
  int step = v.step + 1;
  if (strcmp(v.state, "pending") != 0 && sha[0] && strcmp(v.quote_sha, sha) == 0 &&
      mcim_role_answer_get(st, v.txn, step, "quote", &status, &answer) == MCIM_OK) {
    pva_reply_stored(resp, status, answer);
    return;
  }
  if (strcmp(v.state, "expired") == 0) {
    pva_fail(r, resp, v.txn, step, device, r->name, "TRE quote", MCIM_NONCE_UNKNOWN,
             "the nonce of validation %s expired; the SHO must ask for a new validation", id);
    return;
  }
  pva_fail(r, resp, v.txn, step, device, r->name, "TRE quote", MCIM_REPLAY,
           "the nonce of validation %s was already used (%s)", id, v.state);
}

/* Remember why a quote was refused: if no good quote follows before the nonce expires, the
 * SHO's failure verdict says why. */
static void note_refusal(mcim_store_t *st, const char *id, mcim_cause_t cause)
{
  mcim_val_t p[] = {MCIM_TEXT(mcim_cause_name(cause)), MCIM_TEXT(id)};
  mcim_store_exec(st, "UPDATE validations SET last_cause = ? WHERE id = ? AND state = 'pending'", p,
                  2, NULL, NULL);
}

mcim_cause_t pva_quote_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"quote", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN},
      {"tre_cert", MCIM_JV_STRING, true, 16384},
      /* optional echoes of what the quote and the token already say; checked if present */
      {"txn", MCIM_JV_HEX, false, 32},
      {"device", MCIM_JV_STRING, false, 63},
      /* a TPM device's TPM2_Quote and measurement log (quote_tpm.c) */
      {"tpm", MCIM_JV_OBJECT, false, 0},
  };
  return mcim_jsonv_check(body, fields, sizeof(fields) / sizeof(fields[0]), err, err_len);
}

void pva_quote(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  const char *id = req->params[0];
  struct mcim_access acc;
  struct vrow v;
  char err[200];
  char sha[65];
  char detail[512];
  mcim_jose_key_t *key = NULL;
  mcim_statement_t *q = NULL;
  json_t *rims = NULL, *mismatches = NULL, *extra = NULL, *answer = NULL, *obody = NULL;
  json_t *tbody = NULL, *tpm_log = NULL;
  char tpm_digest[65], cert_model[64] = "";
  char *verdict = NULL;
  const char *model = NULL;
  const json_t *log = NULL;
  int status = 200;
  int step = STEP_VALIDATE + 1;
  mcim_store_t *st = NULL;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);

  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, step, NULL, r->name, "TRE quote", rc,
             "an access token of the device is needed (attach first): %s", mcim_cause_text(rc));
    mcim_role_access_challenge(resp, rc);
    goto cleanup;
  }
  rc = pva_quote_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, step, acc.device, r->name, "TRE quote", rc, "%s", err);
    goto cleanup;
  }
  /* The TRE's own proof first, before any record of the validation is read (DESIGN.md
   * section 10): its attestation certificate for the token's device, and the quote's
   * signature and claims but the txn (the validation's) and the jti (recorded in the
   * transaction below). Before 2026-12-07 the validation was read first: anyone who minted
   * a token naming the device learnt from the causes of junk quotes whether another SHO's
   * validation was decided and how, and chose the cause of its failure verdict
   * (note_refusal). These refusals name no validation and change none. */
  const char *quote = json_string_value(json_object_get(req->json, "quote"));
  rc = mcim_role_device_key_from_pem(r, json_string_value(json_object_get(req->json, "tre_cert")),
                                     acc.device, MCIM_CERT_TRE_ATTESTATION, &key);
  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, step, acc.device, r->name, "TRE quote", rc,
             "tre_cert is not a TRE attestation certificate of the M2MES CA for device %s: %s",
             acc.device, mcim_cause_text(rc));
    goto cleanup;
  }
  mcim_jws_expect_t ex0 = {.iss = acc.device,
                           .sub = acc.device,
                           .aud = r->name,
                           .typ = "mcim-quote+jwt",
                           .skew = mcim_config_duration(r->cfg, "clock_skew")};
  rc = mcim_jws_verify(quote, strlen(quote), key, &ex0, NULL);
  /* Expired, its signature and claims checked (mcim_jws_verify's order): still the TRE's
   * proof. A retry whose answer was lost, after the quote's lifetime, gets the stored
   * verdict below; a pending validation refuses it at the full check. */
  if (rc != MCIM_OK && rc != MCIM_TOKEN_EXPIRED) {
    pva_fail(r, resp, NULL, step, acc.device, r->name, "TRE quote", MCIM_QUOTE_INVALID,
             "the quote does not verify with the certified attestation key (expected iss = sub"
             " = %s, aud %s, typ mcim-quote+jwt): %s: %s",
             acc.device, r->name, mcim_cause_name(rc), mcim_cause_text(rc));
    goto cleanup;
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, step, "store unavailable");
    goto cleanup;
  }
  rc = strlen(id) == 32 ? pva_vrow_load(st, id, &v) : MCIM_NOT_FOUND;
  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, step, acc.device, r->name, "TRE quote", rc,
             rc == MCIM_NOT_FOUND ? "no validation %s" : "cannot read validation %s", id);
    goto cleanup;
  }
  step = v.step + 1;
  const char *btxn = json_string_value(json_object_get(req->json, "txn"));
  const char *bdev = json_string_value(json_object_get(req->json, "device"));
  if (strcmp(acc.device, v.device) != 0 || (bdev && strcmp(bdev, v.device) != 0)) {
    pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", MCIM_FORBIDDEN,
             "validation %s is for device \"%s\", the caller is \"%s\"", id, v.device,
             bdev && strcmp(bdev, v.device) != 0 ? bdev : acc.device);
    goto cleanup;
  }
  if (btxn && strcasecmp(btxn, v.txn) != 0) {
    pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", MCIM_CLAIM_MISMATCH,
             "validation %s belongs to procedure %s, not %s", id, v.txn, btxn);
    goto cleanup;
  }
  sha256_hex(quote, sha);
  if (strcmp(v.state, "pending") != 0) {
    already_used(r, st, resp, id, sha, acc.device);
    goto cleanup;
  }
  if (v.expires <= mcim_now()) {
    pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", MCIM_NONCE_UNKNOWN,
             "the nonce of validation %s expired; the SHO must ask for a new validation", id);
    goto cleanup;
  }

  rims = json_object();
  if (!rims) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, step, "out of memory");
    goto cleanup;
  }
  /* From here on one transaction: the quote's jti (replay cache), the state change, the
   * verdict in the outbox and the stored answer exist together or not at all. */
  rc = mcim_store_begin(st);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "store busy, retry");
    goto cleanup;
  }
  mcim_jws_expect_t ex = {.iss = v.device,
                          .sub = v.device,
                          .aud = r->name,
                          .typ = "mcim-quote+jwt",
                          .txn = v.txn,
                          .skew = mcim_config_duration(r->cfg, "clock_skew"),
                          .replay = mcim_role_replay(r)};
  rc = mcim_jws_verify(quote, strlen(quote), key, &ex, &q);
  if (rc == MCIM_REPLAY) {
    mcim_store_rollback(st);
    already_used(r, st, resp, id, sha, acc.device);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_store_rollback(st);
    note_refusal(st, id, MCIM_QUOTE_INVALID);
    pva_fail(
        r, resp, v.txn, step, acc.device, r->name, "TRE quote", MCIM_QUOTE_INVALID,
        "the quote does not verify with the certified attestation key (expected iss = sub = %s,"
        " aud %s, typ mcim-quote+jwt, txn %s): %s: %s",
        v.device, r->name, v.txn, mcim_cause_name(rc), mcim_cause_text(rc));
    goto cleanup;
  }
  rc = pva_quote_evidence(q, v.nonce, &model, &log, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_store_rollback(st);
    note_refusal(st, id, rc);
    pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", rc, "%s", err);
    goto cleanup;
  }
  /* A TPM device: the RIMs are matched against the log the TPM's quote vouches for, not the
   * one in the JWS (which the agent wrote). Refusals keep the nonce, as above. */
  const json_t *tpm = json_object_get(req->json, "tpm");
  const char *quoted_digest = mcim_statement_string(q, "digest");
  if (tpm || pva_tpm_required(json_string_value(json_object_get(req->json, "tre_cert")))) {
    /* the M2MES certified this key as in a TPM (or the device sends TPM evidence): only the
     * TPM's quote by its enrolled AK counts, never the JWS alone (the agent's word) */
    rc = pva_tpm_evidence(key, json_string_value(json_object_get(req->json, "tre_cert")), tpm,
                          v.nonce, &tpm_log, tpm_digest, cert_model, err, sizeof(err));
    if (rc != MCIM_OK) {
      mcim_store_rollback(st);
      note_refusal(st, id, rc);
      mcim_log_event(MCIM_LOG_WARN, v.txn, step, rc, "validation %s of %s: TPM quote refused: %s",
                     id, v.device, err);
      pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", rc, "TPM quote: %s", err);
      goto cleanup;
    }
    log = tpm_log;
    quoted_digest = tpm_digest;
    model = cert_model; /* the M2MES certified it: the quote's "model" is the device's word */
  }
  mcim_val_t mp[] = {MCIM_TEXT(model)};
  rc = mcim_store_exec(st, "SELECT component, digest FROM rims WHERE model = ? ORDER BY component",
                       mp, 1, rim_row, rims);
  mismatches = rc == MCIM_OK ? pva_match(model, log, quoted_digest, rims) : NULL;
  if (!mismatches) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, rc == MCIM_OK ? MCIM_NO_MEMORY : rc, step,
                            "cannot match the measurements");
    goto cleanup;
  }
  bool good = json_array_size(mismatches) == 0;
  mcim_cause_t verdict_cause = good ? MCIM_OK : MCIM_VALIDATION_FAILED;
  const char *result = good ? "success" : "failure";

  /* Step 11 (change 5): the verdict, signed for the SHO that asked, via the outbox. It
   * carries the device's quote it judged: the SHO seals the MCIM to the procedure's KA key
   * that the TRE signed in it ("ka_jwk", docs/tre.md "Crypto-shredding"), and checks that
   * signature itself. */
  extra = json_pack("{s:s,s:s,s:O,s:s,s:s,s:s}", "result", result, "cause",
                    mcim_cause_name(verdict_cause), "mismatches", mismatches, "validation_id", id,
                    "model", model, "quote", quote);
  rc = extra ? mcim_role_sign(r, "mcim-verdict+jwt", v.device, v.sho, v.txn, extra, &verdict)
             : MCIM_NO_MEMORY;
  if (rc == MCIM_OK) {
    obody = json_pack("{s:s,s:s,s:s}", "txn", v.txn, "device", v.device, "verdict", verdict);
    rc = obody ? mcim_role_outbox_put(r, st, v.sho, "/v1/verdicts", obody, v.txn, v.step + 2,
                                      "verdict")
               : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK) {
    mcim_val_t u[] = {MCIM_TEXT(result), MCIM_TEXT(verdict), MCIM_TEXT(sha),
                      MCIM_TEXT(mcim_cause_name(verdict_cause)), MCIM_TEXT(id)};
    rc = mcim_store_exec(st,
                         "UPDATE validations SET state = ?, verdict = ?, quote_sha = ?, cause = ?"
                         " WHERE id = ? AND state = 'pending'",
                         u, MCIM_NPARAMS(u), NULL, NULL);
    if (rc == MCIM_OK && mcim_store_changes(st) != 1) {
      /* another quote was accepted between our read and our transaction */
      mcim_store_rollback(st);
      already_used(r, st, resp, id, sha, acc.device);
      goto cleanup;
    }
  }
  if (rc == MCIM_OK) {
    if (good) {
      answer = json_pack("{s:s,s:s,s:s}", "result", result, "validation_id", id, "txn", v.txn);
      status = 200;
    } else {
      /* The device must learn why: the detail for people, the full list for programs. */
      pva_mismatch_summary(mismatches, model, detail, sizeof(detail));
      answer = mcim_problem_new(MCIM_VALIDATION_FAILED, step, detail);
      if (answer) {
        json_object_set_new(answer, "result", json_string(result));
        json_object_set(answer, "mismatches", mismatches);
        json_object_set_new(answer, "validation_id", json_string(id));
      }
      status = mcim_cause_http_status(MCIM_VALIDATION_FAILED);
    }
    rc = answer ? mcim_role_answer_put(st, v.txn, step, "quote", status, answer) : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK) { /* the trace row rides on the verdict's commit */
    tbody = json_pack("{s:s,s:s,s:O,s:s,s:s,s:O,s:s}", "validation_id", id, "model", model, "log",
                      log, "digest", quoted_digest, "result", result, "mismatches", mismatches,
                      "evidence", tpm ? "tpm-quote" : "tre-jws");
    mcim_role_trace(r, v.txn, step, acc.device, r->name, "TRE quote", tbody, verdict_cause);
    rc = mcim_store_commit(st);
  }
  if (rc != MCIM_OK) {
    if (mcim_store_in_txn(st))
      mcim_store_rollback(st);
    pva_fail(r, resp, v.txn, step, acc.device, r->name, "TRE quote", rc,
             "cannot record the verdict of validation %s, retry the same quote", id);
    goto cleanup;
  }
  mcim_role_wake(r);
  pva_reply_stored(resp, status, answer);
  answer = NULL;

cleanup:
  if (st && mcim_store_in_txn(st))
    mcim_store_rollback(st);
  json_decref(tbody);
  json_decref(tpm_log);
  json_decref(answer);
  json_decref(obody);
  json_decref(extra);
  json_decref(mismatches);
  json_decref(rims);
  free(verdict);
  mcim_statement_free(q);
  mcim_jose_key_free(key);
}
