/* M2MES: manufacture, POST /v1/devices (the handler m2mes_devices; the role and its steps in
 * m2mes.c): the request checked (the TRE's public keys, mcim_m2mes_devices_body), the TPM's
 * enrolment checked (enrol.c), the device row loaded or made (PCID, K and OPc), the
 * certificates of the TRE keys issued by the M2MES CA, the PCID credential registered at the
 * ICF, the RIMs at the PVA and the first owner at the DRF (m2mes.c's calls to peers), then
 * the answer: the certificates and the PCID credential sealed (JWE) to the TRE's KA key, kept
 * for a retry of the same request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/firmware.h"
#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/kinds.h"
#include "roles/m2mes/ccif.h"
#include "roles/m2mes/m2mes_priv.h"

#define ICF_ATTEMPTS 4 /* PCIDs tried when the ICF says one is held by another device */

/* ---- the request ---- */

/* The identity of a public key, to compare two requests: "x.y" of its JWK. */
static mcim_cause_t key_identity(const mcim_jose_key_t *key, char *out, size_t len)
{
  char *jwk = NULL;
  mcim_cause_t rc = mcim_jose_key_public_jwk(key, &jwk);
  if (rc != MCIM_OK)
    return rc;
  json_t *j = json_loads(jwk, 0, NULL);
  const char *x = json_string_value(json_object_get(j, "x"));
  const char *y = json_string_value(json_object_get(j, "y"));
  rc = x && y && (size_t)snprintf(out, len, "%s.%s", x, y) < len ? MCIM_OK : MCIM_KEY_INVALID;
  json_decref(j);
  free(jwk);
  return rc;
}

/* A TRE public key from the request: a JWK object (or its JSON text), P-256, public only. */
static mcim_cause_t request_key(const json_t *v, const char *what, mcim_jose_key_t **out,
                                char *err, size_t errlen)
{
  char *text = NULL;
  mcim_cause_t rc = MCIM_KEY_INVALID;
  *out = NULL;
  if (json_is_object(v))
    text = json_dumps(v, JSON_COMPACT);
  else if (json_is_string(v))
    text = strdup(json_string_value(v));
  if (!text) {
    snprintf(err, errlen, "%s must be a JWK (object)", what);
    return json_is_object(v) || json_is_string(v) ? MCIM_NO_MEMORY : MCIM_WRONG_TYPE;
  }
  rc = mcim_jose_key_from_jwk(text, strlen(text), out);
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "%s is not an EC P-256 JWK: %s", what, mcim_cause_text(rc));
  } else if (mcim_jose_key_has_private(*out)) {
    /* A private key in a request means it left the TRE: refuse rather than certify it. */
    snprintf(err, errlen, "%s holds a private key (\"d\"): send the public key only", what);
    rc = MCIM_KEY_INVALID;
  }
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*out);
    *out = NULL;
  }
  mcim_wipe(text, strlen(text));
  free(text);
  return rc;
}

/* ---- POST /v1/devices ---- */

/* `storage` (may be NULL): the TRE's TPM storage key, certified in the KA certificate; a
 * device enrolled with one has its attestation key in that TPM too, which its attestation
 * certificate says (MCIM_OID_TPM_ATTESTATION: the PVA then wants a TPM quote). */
static mcim_cause_t issue_cert(struct m2mes_state *ms, const mcim_jose_key_t *key,
                               const mcim_jose_key_t *storage, EVP_PKEY *ak, const char *device,
                               const char *model, mcim_cert_usage_t usage, char **pem)
{
  EVP_PKEY *pub = NULL, *spub = NULL;
  X509 *cert = NULL;
  mcim_cause_t rc = mcim_jose_key_public_pkey(key, &pub);
  bool ka = usage == MCIM_CERT_TRE_KEY_AGREEMENT;
  if (rc == MCIM_OK && storage && ka)
    rc = mcim_jose_key_public_pkey(storage, &spub);
  if (rc == MCIM_OK) {
    /* an enrolled TPM's attestation certificate names its AK and the model */
    mcim_cert_request_t req = {.name = device,
                               .usage = usage,
                               .key = pub,
                               .tpm_storage = spub,
                               .tpm_attestation = (storage || ak) && !ka,
                               .tpm_ak = ka ? NULL : ak,
                               .model = ka || !ak ? NULL : model};
    rc = mcim_pki_issue(ms->ca, &req, &cert);
  }
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_to_pem(cert, pem);
  X509_free(cert);
  EVP_PKEY_free(spub);
  EVP_PKEY_free(pub);
  return rc;
}

/* The PCID credential sealed to the TRE's KA key (the plaintext is wiped). For a TPM device (`pcid_slot`, the slot key
 * certify.pcid offered and enrol.c checked) K goes as "k_tpm", a duplication blob to that key
 * (docs/tre-tpm.md, "The PCID credential's K"), never as "k". */
static mcim_cause_t seal_credential(const struct drow *d, const uint8_t *k, const uint8_t *opc,
                                    const mcim_jose_key_t *ka, const json_t *pcid_slot, char **jwe)
{
  char khex[2 * MCIM_MILENAGE_K_LEN + 1], ohex[2 * MCIM_MILENAGE_OP_LEN + 1];
  json_t *k_tpm = NULL;
  mcim_hex_encode(k, MCIM_MILENAGE_K_LEN, khex);
  mcim_hex_encode(opc, MCIM_MILENAGE_OP_LEN, ohex);
  if (pcid_slot) {
    mcim_cause_t wrc = mcim_tre_wrap_k_slot(pcid_slot, k, &k_tpm);
    if (wrc != MCIM_OK) {
      mcim_wipe(khex, sizeof(khex));
      mcim_wipe(ohex, sizeof(ohex));
      return wrc;
    }
  }
  json_t *cred = k_tpm ? json_pack("{s:s,s:o,s:s,s:s,s:I}", "pcid", d->pcid, "k_tpm", k_tpm, "opc",
                                   ohex, "amf", "8000", "expires", (json_int_t)d->expires)
                       : json_pack("{s:s,s:s,s:s,s:s,s:I}", "pcid", d->pcid, "k", khex, "opc", ohex,
                                   "amf", "8000", "expires", (json_int_t)d->expires);
  char *text = cred ? json_dumps(cred, JSON_COMPACT) : NULL;
  mcim_cause_t rc = text ? mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), jwe)
                         : MCIM_NO_MEMORY;
  if (text) {
    mcim_wipe(text, strlen(text));
    free(text);
  }
  m2mes_wipe_json_string(cred, "k");
  m2mes_wipe_json_string(cred, "opc");
  json_decref(cred);
  mcim_wipe(khex, sizeof(khex));
  mcim_wipe(ohex, sizeof(ohex));
  return rc;
}

static mcim_cause_t unseal_secrets(struct mcim_role *r, const struct drow *d, uint8_t *k,
                                   uint8_t *opc)
{
  char ctx[96];
  size_t n = 0;
  m2mes_seal_context(ctx, sizeof(ctx), "k", d->device);
  mcim_cause_t rc = mcim_unseal(r->storage_key, ctx, d->k_sealed, d->k_len, k,
                                MCIM_MILENAGE_K_LEN, &n);
  if (rc == MCIM_OK && n != MCIM_MILENAGE_K_LEN)
    rc = MCIM_UNSEAL_FAILED;
  m2mes_seal_context(ctx, sizeof(ctx), "opc", d->device);
  if (rc == MCIM_OK)
    rc = mcim_unseal(r->storage_key, ctx, d->opc_sealed, d->opc_len, opc, MCIM_MILENAGE_OP_LEN,
                     &n);
  if (rc == MCIM_OK && n != MCIM_MILENAGE_OP_LEN)
    rc = MCIM_UNSEAL_FAILED;
  return rc;
}

/* The answer given before, if this request is the same manufacture (same keys and model). */
static bool reply_if_same(struct mcim_http_response *resp, const struct drow *d,
                          const char *model, const char *att, const char *ka)
{
  if (strcmp(d->state, "issued") != 0)
    return false;
  if (strcmp(d->att_key, att) != 0 || strcmp(d->ka_key, ka) != 0 ||
      strcmp(d->model, model) != 0) {
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                            "device %s was already manufactured with other keys or another "
                            "model; a device id is given once",
                            d->device);
    return true;
  }
  json_t *answer = d->answer ? json_loads(d->answer, 0, NULL) : NULL;
  if (!answer) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 0, "the stored answer of %s is unreadable",
                            d->device);
    return true;
  }
  mcim_http_reply_json(resp, 201, answer);
  return true;
}

mcim_cause_t mcim_m2mes_devices_body(const json_t *body, mcim_jose_key_t **att,
                                     mcim_jose_key_t **ka, mcim_jose_key_t **storage, char *err,
                                     size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"device", MCIM_JV_STRING, true, 63},
      {"model", MCIM_JV_STRING, false, 63},
  };
  json_t *rest = NULL;
  mcim_cause_t rc = MCIM_BAD_JSON;

  *att = *ka = *storage = NULL;
  if (!json_is_object(body)) {
    snprintf(err, err_len, "body must be a JSON object");
    goto cleanup;
  }
  /* The JWKs are checked by the key parser; the rest of the body by the field table. */
  const json_t *jatt = json_object_get(body, "attestation_jwk");
  const json_t *jka = json_object_get(body, "ka_jwk");
  const json_t *owner = json_object_get(body, "owner_jwk"); /* optional, an object */
  /* optional: a TRE on a TPM names the storage key K is to be imported under */
  const json_t *jstorage = json_object_get(body, "tpm_storage_jwk");
  rc = MCIM_WRONG_TYPE;
  if (owner && !json_is_object(owner)) {
    snprintf(err, err_len, "owner_jwk must be a JWK object");
    goto cleanup;
  }
  rc = MCIM_FIELD_MISSING;
  if (!jatt || !jka) {
    snprintf(err, err_len, "missing field \"%s\"", jatt ? "ka_jwk" : "attestation_jwk");
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  rest = json_copy((json_t *)body);
  if (!rest) {
    snprintf(err, err_len, "out of memory");
    goto cleanup;
  }
  json_object_del(rest, "attestation_jwk");
  json_object_del(rest, "ka_jwk");
  json_object_del(rest, "owner_jwk");
  json_object_del(rest, "tpm_storage_jwk");
  json_object_del(rest, "tpm"); /* checked by mcim_m2mes_tpm_check (enrol.c) */
  rc = mcim_jsonv_check(rest, fields, 2, err, err_len);
  if (rc == MCIM_OK)
    rc = request_key(jatt, "attestation_jwk", att, err, err_len);
  if (rc == MCIM_OK)
    rc = request_key(jka, "ka_jwk", ka, err, err_len);
  if (rc == MCIM_OK && jstorage)
    rc = request_key(jstorage, "tpm_storage_jwk", storage, err, err_len);
cleanup:
  json_decref(rest);
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*att);
    mcim_jose_key_free(*ka);
    mcim_jose_key_free(*storage);
    *att = *ka = *storage = NULL;
  }
  return rc;
}

void m2mes_devices(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct m2mes_state *ms = r->state;
  char err[200];
  char att_id[200], ka_id[200], storage_id[100];
  uint8_t k[MCIM_MILENAGE_K_LEN], opc[MCIM_MILENAGE_OP_LEN];
  struct drow d;
  mcim_jose_key_t *att = NULL, *ka = NULL, *storage = NULL;
  EVP_PKEY *ak = NULL;
  json_t *pcid_slot = NULL; /* a TPM device: the slot key the PCID credential's K goes to */
  json_t *answer = NULL;
  char *att_pem = NULL, *ka_pem = NULL, *jwe = NULL, *answer_text = NULL;
  mcim_store_t *st = NULL;
  mcim_cause_t rc;

  memset(&d, 0, sizeof(d));
  if (!req->peer || strcmp(req->peer, "admin") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0,
                            "only the factory (lab admin certificate) manufactures devices"
                            " (caller \"%s\")",
                            req->peer ? req->peer : "");
    goto cleanup;
  }
  rc = mcim_m2mes_devices_body(req->json, &att, &ka, &storage, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  const json_t *owner = json_object_get(req->json, "owner_jwk"); /* optional, an object */
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *model = json_string_value(json_object_get(req->json, "model"));
  if (!model)
    model = mcim_config_str(r->cfg, "model");
  if (!mcim_pki_name_valid(device) || !mcim_pki_name_valid(model)) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "device and model must be names of 1-63 characters [A-Za-z0-9._-]");
    goto cleanup;
  }
  if (key_identity(att, att_id, sizeof(att_id)) != MCIM_OK ||
      key_identity(ka, ka_id, sizeof(ka_id)) != MCIM_OK ||
      (storage && key_identity(storage, storage_id, sizeof(storage_id)) != MCIM_OK)) {
    mcim_http_reply_problem(resp, MCIM_KEY_INVALID, 0, "cannot read the TRE public keys");
    goto cleanup;
  }
  /* Key separation: a signing key must not also be the one packages are sealed to, nor
   * either of them the TPM's storage key. */
  if (strcmp(att_id, ka_id) == 0 ||
      (storage && (strcmp(storage_id, att_id) == 0 || strcmp(storage_id, ka_id) == 0))) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "attestation_jwk, ka_jwk and tpm_storage_jwk must be different keys");
    goto cleanup;
  }
  /* The KA certificate certifies the storage key with it: the same KA key under another
   * storage key is another certificate, so another manufacture (the row keeps both). */
  size_t ka_len = strlen(ka_id);
  if (storage && (size_t)snprintf(ka_id + ka_len, sizeof(ka_id) - ka_len, "+tpm:%s",
                                  storage_id) >= sizeof(ka_id) - ka_len) {
    mcim_http_reply_problem(resp, MCIM_KEY_INVALID, 0, "cannot read the TRE public keys");
    goto cleanup;
  }
  /* A TPM's keys are certified as such only once its TPM is enrolled (enrol.c): the EK
   * certificate trusted, the credential activated by the AK, every key certified by it. */
  const json_t *tpm = json_object_get(req->json, "tpm");
  if (tpm || storage) {
    rc = mcim_m2mes_tpm_check(r, device, tpm, att, ka, storage, &ak, &pcid_slot, err, sizeof(err));
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "manufacture of %s refused: %s", device, err);
      mcim_http_reply_problem(resp, rc, 0, "%s", err);
      goto cleanup;
    }
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 0, "store unavailable");
    goto cleanup;
  }

  rc = m2mes_drow_load(st, device, &d);
  if (rc == MCIM_NOT_FOUND) {
    rc = m2mes_drow_create(r, st, device, model, att_id, ka_id);
    /* CONFLICT: the same device raced in (read it below), or the PCID pool is exhausted */
    if (rc == MCIM_OK || rc == MCIM_CONFLICT)
      rc = m2mes_drow_load(st, device, &d);
    if (rc == MCIM_NOT_FOUND)
      rc = MCIM_CONFLICT;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0,
                            rc == MCIM_CONFLICT ? "no PCID left in pool %s" : "cannot record "
                            "device (pool %s)",
                            ms->prefix);
    goto cleanup;
  }
  if (reply_if_same(resp, &d, model, att_id, ka_id))
    goto cleanup;
  /* Not issued yet (an earlier attempt failed at a peer): the factory may have new keys or
   * another model by now; PCID, K and OPc stay, so the ICF sees the same registration. */
  if (strcmp(d.att_key, att_id) != 0 || strcmp(d.ka_key, ka_id) != 0 ||
      strcmp(d.model, model) != 0) {
    mcim_val_t u[] = {MCIM_TEXT(att_id), MCIM_TEXT(ka_id), MCIM_TEXT(model),
                      MCIM_INT(mcim_now()), MCIM_TEXT(device)};
    rc = mcim_store_exec(st,
                         "UPDATE devices SET att_key = ?, ka_key = ?, model = ?, updated = ?"
                         " WHERE device = ? AND state = 'new'",
                         u, MCIM_NPARAMS(u), NULL, NULL);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 0, "cannot update device %s", device);
      goto cleanup;
    }
    snprintf(d.model, sizeof(d.model), "%s", model);
  }
  rc = unseal_secrets(r, &d, k, opc);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "sealed PCID secrets of %s do not open", device);
    mcim_http_reply_problem(resp, rc, 0, "the PCID credential of %s cannot be read back", device);
    goto cleanup;
  }
  rc = issue_cert(ms, att, storage, ak, device, d.model, MCIM_CERT_TRE_ATTESTATION, &att_pem);
  if (rc == MCIM_OK)
    rc = issue_cert(ms, ka, storage, NULL, device, d.model, MCIM_CERT_TRE_KEY_AGREEMENT, &ka_pem);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot certify the TRE keys of %s", device);
    goto cleanup;
  }

  for (int attempt = 1;; attempt++) {
    rc = m2mes_icf_register(r, &d, k, opc, resp);
    if (rc != MCIM_CONFLICT)
      break;
    /* The ICF has this PCID for another device (e.g. a pool share used twice): take the next
     * one; K and OPc stay, they were never accepted for that PCID. */
    if (attempt == ICF_ATTEMPTS) {
      mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                              "the ICF holds %d PCIDs of pool %s for other devices; check that"
                              " no other M2MES uses this pool",
                              ICF_ATTEMPTS, ms->prefix);
      goto cleanup;
    }
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "PCID %s is held by another device at the ICF",
                   d.pcid);
    char pcid[PCID_MAX_DIGITS + 1];
    rc = mcim_store_begin(st);
    if (rc == MCIM_OK)
      rc = m2mes_pcid_allocate(ms, st, pcid, sizeof(pcid));
    if (rc == MCIM_OK) {
      /* only from the PCID this copy tried: another copy that moved it first registers the
       * next one, and this one stops rather than register a third (review of 2026-12-07) */
      mcim_val_t u[] = {MCIM_TEXT(pcid), MCIM_TEXT(device), MCIM_TEXT(d.pcid)};
      rc = mcim_store_exec(st,
                           "UPDATE devices SET pcid = ? WHERE device = ? AND state = 'new'"
                           " AND pcid = ?",
                           u, 3, NULL, NULL);
      if (rc == MCIM_OK && mcim_store_changes(st) != 1)
        rc = MCIM_STORE_BUSY; /* 503: asked again, the other copy's device is there then */
    }
    if (rc == MCIM_OK)
      rc = mcim_store_commit(st);
    else if (mcim_store_in_txn(st))
      mcim_store_rollback(st);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 0, "cannot allocate another PCID for %s", device);
      goto cleanup;
    }
    snprintf(d.pcid, sizeof(d.pcid), "%s", pcid);
  }
  if (rc != MCIM_OK)
    goto cleanup; /* the problem is in resp */
  rc = m2mes_pva_register(r, d.model, device, resp);
  if (rc == MCIM_OK && owner)
    rc = m2mes_owner_register(r, device, owner, resp);
  if (rc != MCIM_OK)
    goto cleanup;

  rc = seal_credential(&d, k, opc, ka, pcid_slot, &jwe);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot seal the PCID credential to the TRE");
    goto cleanup;
  }
  answer = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s}", "device", device, "model", d.model, "pcid",
                     d.pcid, "pcid_expires", (json_int_t)d.expires, "attestation_cert", att_pem,
                     "ka_cert", ka_pem, "pcid_credential", jwe);
  answer_text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
  if (!answer_text) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "out of memory");
    goto cleanup;
  }
  /* Issued: keep the answer for retries, forget K and OPc. A concurrent identical request
   * may have finished first; then its answer is the one. */
  mcim_val_t u[] = {MCIM_TEXT(answer_text), MCIM_INT(mcim_now()), MCIM_TEXT(device),
                    MCIM_TEXT(att_id), MCIM_TEXT(ka_id)};
  rc = mcim_store_exec(st,
                       "UPDATE devices SET state = 'issued', answer = ?, k = NULL, opc = NULL,"
                       " updated = ? WHERE device = ? AND state = 'new' AND att_key = ? AND"
                       " ka_key = ?",
                       u, MCIM_NPARAMS(u), NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1) {
    rc = m2mes_drow_load(st, device, &d);
    if (rc == MCIM_OK && reply_if_same(resp, &d, model, att_id, ka_id))
      goto cleanup;
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                            "device %s changed during manufacture (concurrent request)", device);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot record device %s, send the same request again",
                            device);
    goto cleanup;
  }
  mcim_log_info("device %s (model %s) manufactured: PCID %s until %lld", device, d.model, d.pcid,
                (long long)d.expires);
  mcim_http_reply_json(resp, 201, answer);
  answer = NULL;

cleanup:
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
  m2mes_drow_clear(&d);
  json_decref(answer);
  free(answer_text);
  free(jwe);
  free(att_pem);
  free(ka_pem);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(storage);
  EVP_PKEY_free(ak);
  json_decref(pcid_slot);
}
