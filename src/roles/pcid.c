/* PCID credential renewal, shared by the RO's DPF and the M2MES CCIF (see pcid.h). */
#include "roles/pcid.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"

const char mcim_pcid_counter_sql[] =
    "CREATE TABLE pcid_counter (id BIGINT PRIMARY KEY, next BIGINT NOT NULL);"
    "INSERT INTO pcid_counter (id, next) VALUES (1, 1)";

const char mcim_pcid_grants_sql[] =
    "CREATE TABLE pcid_grants (device TEXT PRIMARY KEY, txn TEXT NOT NULL,"
    " granted BIGINT NOT NULL)";

struct grant {
  char txn[33];
  int64_t granted;
};

static mcim_cause_t grant_cb(const mcim_row_t *row, void *arg)
{
  struct grant *g = arg;
  snprintf(g->txn, sizeof(g->txn), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  g->granted = mcim_row_int(row, 1);
  return MCIM_OK;
}

/* MCIM_OK when `device` may be granted a renewal under `txn` now, MCIM_RENEWAL_TOO_EARLY
 * (*wait: seconds left) when another txn of it was granted less than the interval ago. */
static mcim_cause_t grant_check(struct mcim_role *r, mcim_store_t *st, const char *device,
                                const char *txn, int *wait)
{
  struct grant g = {{0}, 0};
  int64_t interval = mcim_config_duration(r->cfg, "pcid_renewal_interval");
  int64_t now = mcim_now();
  mcim_val_t p[] = {MCIM_TEXT(device)};
  mcim_cause_t rc = mcim_store_query_one(
      st, "SELECT txn, granted FROM pcid_grants WHERE device = ?", p, 1, grant_cb, &g);
  *wait = 0;
  if (rc == MCIM_NOT_FOUND)
    return MCIM_OK;
  if (rc != MCIM_OK)
    return rc;
  if (strcmp(g.txn, txn) == 0 || g.granted + interval <= now)
    return MCIM_OK;
  int64_t left = g.granted + interval - now;
  *wait = left > 86400 * 31 ? 86400 * 31 : (int)left;
  return MCIM_RENEWAL_TOO_EARLY;
}

mcim_cause_t mcim_pcid_grant_take(struct mcim_role *r, mcim_store_t *st, const char *device,
                                  const char *txn, bool due, int *wait)
{
  int64_t now = mcim_now();
  int64_t cutoff = now - mcim_config_duration(r->cfg, "pcid_renewal_interval");
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(txn), MCIM_INT(now), MCIM_INT(cutoff),
                    MCIM_INT(due ? 1 : 0)};
  /* one statement: of two concurrent new txns of a device, one is granted */
  mcim_cause_t rc = mcim_store_exec(
      st,
      "INSERT INTO pcid_grants (device, txn, granted) VALUES (?, ?, ?)"
      " ON CONFLICT (device) DO UPDATE SET txn = excluded.txn, granted = excluded.granted"
      " WHERE pcid_grants.txn = excluded.txn OR pcid_grants.granted <= ? OR ? > 0",
      p, MCIM_NPARAMS(p), NULL, NULL);
  *wait = 0;
  if (rc == MCIM_OK && mcim_store_changes(st) == 0) {
    rc = grant_check(r, st, device, txn, wait);
    if (rc == MCIM_OK) /* cannot be: the row was not ours, yet is now */
      rc = MCIM_RENEWAL_TOO_EARLY;
  }
  return rc;
}

void mcim_pcid_answer_what(const char *device, char out[80])
{
  snprintf(out, 80, "pcid/%s", device);
}

void mcim_pcid_request_clear(struct mcim_pcid_request *rq)
{
  mcim_jose_key_free(rq->ka);
  json_decref(rq->tpm_slot);
  memset(rq, 0, sizeof(*rq));
}

mcim_cause_t mcim_pcid_request_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},          {"device", MCIM_JV_STRING, true, 63},
      {"request", MCIM_JV_STRING, true, 16384}, {"tre_cert", MCIM_JV_STRING, true, 8192},
      {"ka_cert", MCIM_JV_STRING, true, 8192},
  };
  return mcim_jsonv_check(body, fields, sizeof(fields) / sizeof(fields[0]), err, err_len);
}

/* The request's "tpm_slot" checked for a TPM device (tre_cert names an AK): *out the offer
 * (json_decref), NULL for a device without a TPM. */
static mcim_cause_t tpm_slot(struct mcim_role *r, const char *txn, const char *device,
                             const char *tre_pem, const mcim_statement_t *stmt, json_t **out,
                             char *err, size_t errlen)
{
  X509 *cert = NULL;
  EVP_PKEY *ak = NULL;
  const json_t *offer = json_object_get(stmt->payload, "tpm_slot");
  mcim_cause_t rc = mcim_pki_cert_from_pem(tre_pem, strlen(tre_pem), &cert);
  (void)r;
  (void)device;

  *out = NULL;
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_tpm_ak(cert, &ak);
  if (rc == MCIM_NOT_FOUND) { /* no TPM: K as before */
    rc = MCIM_OK;
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    rc = MCIM_TPM_CERTIFY_INVALID;
    mcim_detailf(err, errlen, "the attestation certificate's attestation key is unreadable");
    goto cleanup;
  }
  rc = mcim_tre_pcid_slot_check(ak, offer, txn, err, errlen);
  if (rc == MCIM_OK) {
    *out = json_deep_copy(offer);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
  }
cleanup:
  EVP_PKEY_free(ak);
  X509_free(cert);
  return rc;
}

bool mcim_pcid_request_begin(struct mcim_role *r, const struct mcim_http_request *req,
                             struct mcim_http_response *resp, mcim_pcid_due_fn due,
                             struct mcim_pcid_request *out)
{
  const int step = MCIM_PCID_STEP;
  char err[200], what[80];
  struct mcim_access acc;
  mcim_jose_key_t *att = NULL;
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  int status = 0;
  bool go_on = false;

  memset(out, 0, sizeof(*out));
  /* Any scope: a device whose PCID nears expiry attaches at the VNO (restricted) to renew
   * it, or uses the connectivity of its SHO. */
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, step, "PCID renewal");
    return false;
  }
  rc = mcim_pcid_request_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "%s", err);
    return false;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *request = json_string_value(json_object_get(req->json, "request"));
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, step,
                            "a device renews only its own PCID (token of another device)");
    return false;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, step, "store unavailable");
    return false;
  }
  /* The TRE: its attestation key signs the request, its key-agreement key gets the JWE. */
  rc = mcim_role_device_key_from_pem(r, json_string_value(json_object_get(req->json, "tre_cert")),
                                     device, MCIM_CERT_TRE_ATTESTATION, &att);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step,
                            "tre_cert is not an attestation certificate of %s (M2MES CA)", device);
    goto out;
  }
  rc = mcim_role_device_key_from_pem(r, json_string_value(json_object_get(req->json, "ka_cert")),
                                     device, MCIM_CERT_TRE_KEY_AGREEMENT, &out->ka);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step,
                            "ka_cert is not a key-agreement certificate of %s (M2MES CA)", device);
    goto out;
  }
  /* The request before any stored answer (DESIGN.md section 10): the answer goes only to a
   * request of this device's TRE for this txn. Its jti is spent after the lookup (a refusal
   * spends none, a retry of a request already answered finds the answer). */
  int64_t skew = mcim_config_duration(r->cfg, "clock_skew");
  mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = r->name,
                          .typ = MCIM_PCID_TYP_REQUEST, .txn = txn, .skew = skew};
  rc = mcim_jws_verify(request, strlen(request), att, &ex, &stmt);
  const char *claim = rc == MCIM_OK ? mcim_statement_string(stmt, "pcid") : NULL;
  if (rc == MCIM_OK && !claim)
    rc = MCIM_CLAIM_MISSING;
  else if (rc == MCIM_OK && !mcim_digits(claim, 6, MCIM_PCID_DIGITS))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc != MCIM_OK) {
    /* traced only once the device's TRE signed it for this txn; else anyone's, logged */
    if (stmt)
      mcim_role_trace(r, txn, step, r->name, device, "PCID renewal request refused", NULL, rc);
    else
      mcim_log_event(MCIM_LOG_WARN, txn, step, rc, "PCID renewal request of %s refused", device);
    mcim_http_reply_problem(resp, rc, step,
                            "the renewal request of %s does not verify (mcim-renew+jwt by its"
                            " TRE, aud %s, txn, claim pcid)",
                            device, r->name);
    goto out;
  }
  /* A TPM device (its attestation certificate names the AK enrolment certified): the new K
   * goes to the slot key its request offers, certified by that AK over this txn, or nowhere. */
  rc = tpm_slot(r, txn, device, json_string_value(json_object_get(req->json, "tre_cert")), stmt,
                &out->tpm_slot, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, txn, step, rc, "PCID renewal of %s refused: %s", device, err);
    mcim_role_trace(r, txn, step, r->name, device, "PCID renewal request refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, step, "%s", err);
    goto out;
  }
  /* A retry: the answer given before. */
  mcim_pcid_answer_what(device, what);
  rc = mcim_role_answer_get(st, txn, step, what, &status, &answer);
  if (rc == MCIM_OK) {
    mcim_log_event(MCIM_LOG_INFO, txn, step, MCIM_OK, "PCID renewal of %s answered again",
                   device);
    mcim_http_reply_json(resp, status, answer);
    goto out;
  }
  if (rc != MCIM_NOT_FOUND) {
    mcim_http_reply_problem(resp, rc, step, "cannot read earlier answers");
    goto out;
  }
  /* A new txn: at most one renewal per device per pcid_renewal_interval, each one a PCID of
   * the pool and rows kept (DESIGN.md section 10), unless the network asked for it. Before
   * the jti: a refused request spends none. */
  int wait = 0;
  rc = due && due(st, device) ? MCIM_OK : grant_check(r, st, device, txn, &wait);
  if (rc != MCIM_OK) {
    /* logged, not traced: a flood of them must not add a row each */
    mcim_log_event(MCIM_LOG_WARN, txn, step, rc, "PCID renewal of %s refused: %s", device,
                   rc == MCIM_RENEWAL_TOO_EARLY ? "within pcid_renewal_interval" : "store");
    if (rc == MCIM_RENEWAL_TOO_EARLY)
      mcim_http_reply_problem(resp, rc, step,
                              "%s renewed its PCID credential less than pcid_renewal_interval"
                              " ago (another txn); renew in %d s",
                              device, wait);
    else
      mcim_http_reply_problem(resp, rc, step, "cannot read earlier renewals");
    resp->retry_after = wait;
    goto out;
  }
  /* a new request acts once: its jti kept while it verifies (exp + skew, saturated) */
  const mcim_replay_cache_t *rep = mcim_role_replay(r);
  rc = rep->check_and_insert(rep->ctx, stmt->claims.iss, stmt->claims.jti,
                             mcim_replay_expires(stmt->claims.exp, skew), mcim_now());
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, step, r->name, device, "PCID renewal request refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, step, "the renewal request of %s %s", device,
                            rc == MCIM_REPLAY ? "was used already" : "cannot be recorded");
    goto out;
  }
  snprintf(out->txn, sizeof(out->txn), "%s", txn);
  snprintf(out->device, sizeof(out->device), "%s", device);
  snprintf(out->pcid, sizeof(out->pcid), "%s", claim);
  snprintf(out->network, sizeof(out->network), "%s", acc.network);
  go_on = true;
out:
  if (!go_on)
    mcim_pcid_request_clear(out);
  mcim_statement_free(stmt);
  mcim_jose_key_free(att);
  return go_on;
}

mcim_cause_t mcim_pcid_allocate(struct mcim_role *r, mcim_store_t *st,
                                char pcid[MCIM_PCID_DIGITS + 1])
{
  const char *prefix = mcim_config_str(r->cfg, "pcid_prefix");
  int64_t n = 0, space = 1;
  if (!mcim_digits(prefix, 5, MCIM_PCID_DIGITS - 1)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                   "%s: \"pcid_prefix\": expected 5 to 14 digits, got \"%s\"",
                   mcim_config_file(r->cfg), prefix ? prefix : "");
    return MCIM_CONFIG_INVALID;
  }
  for (size_t i = strlen(prefix); i < MCIM_PCID_DIGITS; i++)
    space *= 10;
  mcim_cause_t rc = mcim_store_exec(st, "UPDATE pcid_counter SET next = next + 1 WHERE id = 1",
                                    NULL, 0, NULL, NULL);
  if (rc == MCIM_OK)
    rc = mcim_store_query_int(st, "SELECT next - 1 FROM pcid_counter WHERE id = 1", NULL, 0, &n);
  if (rc != MCIM_OK)
    return rc;
  if (n < 1 || n >= space) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFLICT, "the PCID pool %s is exhausted",
                   prefix);
    return MCIM_CONFLICT;
  }
  snprintf(pcid, MCIM_PCID_DIGITS + 1, "%s%0*lld", prefix,
           (int)(MCIM_PCID_DIGITS - strlen(prefix)), (long long)n);
  return MCIM_OK;
}

mcim_cause_t mcim_pcid_cred_secrets(struct mcim_role *r, struct mcim_pcid_cred *c)
{
  uint8_t op[MCIM_MILENAGE_OP_LEN];
  mcim_cause_t rc = mcim_random(c->k, sizeof(c->k));
  if (rc == MCIM_OK)
    rc = mcim_random(op, sizeof(op));
  /* OP is per credential and thrown away: only OPc is provisioned (TS 35.206 allows either). */
  if (rc == MCIM_OK)
    rc = mcim_milenage_opc(c->k, op, c->opc);
  mcim_wipe(op, sizeof(op));
  c->amf[0] = 0x80;
  c->amf[1] = 0x00;
  c->expires = mcim_now() + mcim_config_duration(r->cfg, "pcid_lifetime");
  return rc;
}

void mcim_pcid_cred_wipe(struct mcim_pcid_cred *c)
{
  mcim_wipe(c, sizeof(*c));
}

static void wipe_string(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);
  /* jansson frees without wiping; the buffer is its own, writable copy */
  if (json_is_string(v))
    mcim_wipe((char *)json_string_value(v), json_string_length(v));
}

mcim_cause_t mcim_pcid_answer(struct mcim_role *r, const struct mcim_pcid_request *rq,
                              const struct mcim_pcid_cred *c, json_t **answer)
{
  char khex[2 * MCIM_MILENAGE_K_LEN + 1], ohex[2 * MCIM_MILENAGE_OP_LEN + 1], amf[5];
  char *text = NULL, *pkg = NULL;
  int64_t now = mcim_now();
  mcim_cause_t rc = MCIM_NO_MEMORY;

  *answer = NULL;
  mcim_hex_encode(c->k, sizeof(c->k), khex);
  mcim_hex_encode(c->opc, sizeof(c->opc), ohex);
  mcim_hex_encode(c->amf, sizeof(c->amf), amf);
  json_t *k_tpm = NULL, *content = NULL;
  /* a TPM device: K wrapped to the slot key its request offered, never in clear */
  if (rq->tpm_slot && (rc = mcim_tre_wrap_k_slot(rq->tpm_slot, c->k, &k_tpm)) != MCIM_OK) {
    mcim_wipe(khex, sizeof(khex));
    mcim_wipe(ohex, sizeof(ohex));
    return rc;
  }
  content = k_tpm ? json_pack("{s:s,s:o,s:s,s:s,s:I}", "pcid", c->pcid, "k_tpm", k_tpm, "opc", ohex,
                              "amf", amf, "expires", (json_int_t)c->expires)
                  : json_pack("{s:s,s:s,s:s,s:s,s:I}", "pcid", c->pcid, "k", khex, "opc", ohex,
                              "amf", amf, "expires", (json_int_t)c->expires);
  rc = MCIM_NO_MEMORY;
  mcim_wipe(khex, sizeof(khex));
  mcim_wipe(ohex, sizeof(ohex));
  text = content ? json_dumps(content, JSON_COMPACT) : NULL;
  if (text) {
    mcim_claims_t claims = {.iss = r->name, .sub = rq->device, .aud = rq->device,
                            .typ = MCIM_PCID_TYP_PACKAGE, .txn = rq->txn, .iat = now,
                            .exp = now + mcim_role_statement_lifetime(r)};
    rc = mcim_package_seal(r->sign_key, &claims, rq->ka, (const uint8_t *)text, strlen(text),
                           &pkg);
    mcim_wipe(text, strlen(text));
    free(text);
  }
  wipe_string(content, "k");
  wipe_string(content, "opc");
  json_decref(content);
  if (rc == MCIM_OK) {
    *answer = json_pack("{s:s}", "package", pkg);
    rc = *answer ? MCIM_OK : MCIM_NO_MEMORY;
  }
  free(pkg);
  return rc;
}
