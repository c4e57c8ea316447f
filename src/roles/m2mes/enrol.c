/* M2MES: enrolment of a device's TPM at manufacture (issue 11 point 2; docs/tre-tpm.md,
 * "Enrolment"), in two requests of the factory:
 *
 *   POST /v1/devices/enrolment {device, ek_cert, ak_public}: the EK certificate must chain to
 *     a TPM vendor CA of `tpm_vendor_ca`, the attestation key's public area must be a
 *     restricted signing key that cannot leave its TPM; then TPM2_MakeCredential (in software)
 *     of a fresh 32-byte secret for the AK's name, encrypted to the EK. Answer {credential,
 *     seed, nonce, token}: the token is the secret and the nonce sealed under the M2MES's
 *     storage key, bound to the device, the EK certificate and the AK (nothing kept here).
 *   POST /v1/devices {..., "tpm": {ek_cert, ak_public, token, activation, certify}}: the same
 *     checks again, the token opened for exactly these, the activated secret compared in
 *     constant time (only the TPM holding that EK, with that AK loaded, could recover it),
 *     and each TRE key's TPM2_Certify by the AK over the nonce checked (the key is the one the
 *     request names and is fixedTPM, fixedParent). Only then are the certificates issued
 *     (manufacture.c), the attestation certificate with the AK and the model. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/seal.h"
#include "mcim/util.h"
#include "roles/m2mes/ccif.h"
#ifdef MCIM_HAVE_TPM
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_slot.h"
#endif

#define ENROL_LIFETIME 600 /* seconds between the challenge and the manufacture */
#define SECRET_LEN 32
#define NONCE_LEN 32
#define TOKEN_PLAIN (SECRET_LEN + NONCE_LEN + 8)

#ifdef MCIM_HAVE_TPM

static void token_context(char *out, size_t len, const char *device, const char *ek64,
                          const char *ak64)
{
  uint8_t h[32] = {0};
  char hex[65];
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
      EVP_DigestUpdate(c, ek64, strlen(ek64)) != 1 || EVP_DigestUpdate(c, ".", 1) != 1 ||
      EVP_DigestUpdate(c, ak64, strlen(ak64)) != 1 || EVP_DigestFinal_ex(c, h, NULL) != 1)
    memset(h, 0, sizeof(h)); /* then no token opens: the context differs from the sealing's */
  EVP_MD_CTX_free(c);
  mcim_hex_encode(h, sizeof(h), hex);
  /* bound to the device and its exact EK certificate and AK: a token of another enrolment
   * does not open */
  snprintf(out, len, "m2mes/enrol/%s/%s", device, hex);
}

/* The EK certificate and the AK of a request, checked. */
static mcim_cause_t ek_and_ak(struct mcim_role *r, const char *ek64, const char *ak64,
                              EVP_PKEY **ek, TPM2B_PUBLIC *ak, char *err, size_t errlen)
{
  uint8_t der[4096];
  size_t len = 0;
  *ek = NULL;
  if (!ek64 || mcim_b64url_decode(ek64, strlen(ek64), der, sizeof(der), &len) != MCIM_OK) {
    mcim_detailf(err, errlen, "ek_cert must be the EK certificate, DER in base64url");
    return MCIM_TPM_EK_UNTRUSTED;
  }
  mcim_cause_t rc =
      mcim_tpm_ek_verify(der, len, mcim_config_path(r->cfg, "tpm_vendor_ca"), ek, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_tpm_public_decode(ak64, ak);
  if (rc != MCIM_OK) {
    mcim_detailf(err, errlen, "ak_public is not one marshalled TPM2B_PUBLIC in base64url");
    rc = MCIM_TPM_KEY_ATTRIBUTES;
  } else {
    rc = mcim_tpm_ak_check(ak, err, errlen);
  }
  if (rc != MCIM_OK) {
    EVP_PKEY_free(*ek);
    *ek = NULL;
  }
  return rc;
}

void mcim_m2mes_enrolment(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  uint8_t plain[TOKEN_PLAIN], sealed[TOKEN_PLAIN + MCIM_SEAL_OVERHEAD];
  size_t sealed_len = 0;
  TPM2B_PUBLIC ak;
  TPM2B_NAME name;
  TPM2B_ID_OBJECT cred;
  TPM2B_ENCRYPTED_SECRET enc;
  EVP_PKEY *ek = NULL;
  char err[256] = "", context[200];
  char *c64 = NULL, *s64 = NULL, *n64 = NULL, *t64 = NULL;
  json_t *answer = NULL;

  /* an EK certificate is about 1 KB (its NV index at most 4 KB), a TPM2B_PUBLIC < 1 KB */
  static const struct mcim_jsonv_field fields[] = {
      {"device", MCIM_JV_STRING, true, 63},
      {"ek_cert", MCIM_JV_STRING, true, 6000},
      {"ak_public", MCIM_JV_STRING, true, 1500},
  };
  if (!req->peer || strcmp(req->peer, "admin") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "only the factory enrols devices");
    goto cleanup;
  }
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 3, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *ek64 = json_string_value(json_object_get(req->json, "ek_cert"));
  const char *ak64 = json_string_value(json_object_get(req->json, "ak_public"));
  if (!mcim_pki_name_valid(device)) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "device must be a name of 1-63 characters [A-Za-z0-9._-]");
    goto cleanup;
  }
  rc = ek_and_ak(r, ek64, ak64, &ek, &ak, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "enrolment of %s refused: %s", device, err);
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  uint64_t expires = (uint64_t)(mcim_now() + ENROL_LIFETIME);
  for (int i = 0; i < 8; i++)
    plain[SECRET_LEN + NONCE_LEN + i] = (uint8_t)(expires >> (56 - 8 * i));
  token_context(context, sizeof(context), device, ek64, ak64);
  rc = mcim_random(plain, SECRET_LEN + NONCE_LEN);
  if (rc == MCIM_OK)
    rc = mcim_tpm_public_name(&ak, &name);
  if (rc == MCIM_OK)
    rc = mcim_tpm_make_credential(ek, &name, plain, SECRET_LEN, &cred, &enc);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, context, plain, sizeof(plain), sealed, sizeof(sealed),
                   &sealed_len);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot make the credential for %s", device);
    goto cleanup;
  }
  c64 = mcim_b64url_dup(cred.credential, cred.size);
  s64 = mcim_b64url_dup(enc.secret, enc.size);
  n64 = mcim_b64url_dup(plain + SECRET_LEN, NONCE_LEN);
  t64 = mcim_b64url_dup(sealed, sealed_len);
  answer = c64 && s64 && n64 && t64 ? json_pack("{s:s,s:s,s:s,s:s}", "credential", c64, "seed", s64,
                                                "nonce", n64, "token", t64)
                                    : NULL;
  if (!answer) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "out of memory");
    goto cleanup;
  }
  mcim_log_info("enrolment of %s: EK certificate trusted, credential made for its AK", device);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
cleanup:
  mcim_wipe(plain, sizeof(plain));
  json_decref(answer);
  free(c64);
  free(s64);
  free(n64);
  free(t64);
  EVP_PKEY_free(ek);
}

/* certify.<which> = {"public", "attest", "signature"}: the public area (*pub, as sent *p64)
 * certified by the AK over the nonce. Not in that form: TPM_CERTIFY_INVALID; otherwise
 * mcim_tpm_certify_check's cause. */
static mcim_cause_t certify_entry(const json_t *certify, const char *which, const TPM2B_PUBLIC *ak,
                                  const uint8_t *nonce, TPM2B_PUBLIC *pub, const char **p64,
                                  char *err, size_t errlen)
{
  const json_t *c = json_object_get(certify, which);
  const char *a64 = json_string_value(json_object_get(c, "attest"));
  const char *s64 = json_string_value(json_object_get(c, "signature"));
  uint8_t attest[1024], sig[512];
  size_t alen = 0, slen = 0;

  *p64 = json_string_value(json_object_get(c, "public"));
  if (!*p64 || !a64 || !s64 || mcim_tpm_public_decode(*p64, pub) != MCIM_OK ||
      mcim_b64url_decode(a64, strlen(a64), attest, sizeof(attest), &alen) != MCIM_OK ||
      mcim_b64url_decode(s64, strlen(s64), sig, sizeof(sig), &slen) != MCIM_OK) {
    mcim_detailf(err, errlen, "certify.%s must be {\"public\", \"attest\", \"signature\"}", which);
    return MCIM_TPM_CERTIFY_INVALID;
  }
  return mcim_tpm_certify_check(ak, pub, nonce, NONCE_LEN, attest, alen, sig, slen, err, errlen);
}

/* One certified key: its public area certified by the AK over the nonce, and the key the
 * request names. */
static mcim_cause_t certified(const json_t *certify, const char *which, const TPM2B_PUBLIC *ak,
                              const uint8_t *nonce, const mcim_jose_key_t *want, char *err,
                              size_t errlen)
{
  const char *p64 = NULL;
  TPM2B_PUBLIC pub;
  EVP_PKEY *have = NULL, *named = NULL;
  mcim_cause_t rc = certify_entry(certify, which, ak, nonce, &pub, &p64, err, errlen);

  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_TPM_CERTIFY_INVALID;
  if (mcim_tpm_public_pkey(&pub, &have) != MCIM_OK ||
      mcim_jose_key_public_pkey(want, &named) != MCIM_OK || EVP_PKEY_eq(have, named) != 1) {
    mcim_detailf(err, errlen, "the key certified as %s is not the one the request names", which);
    goto cleanup;
  }
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(have);
  EVP_PKEY_free(named);
  return rc;
}

/* certify.pcid: the PCID's slot key, certified by the AK over the nonce, and exactly a slot
 * key (its policy admits no TPM2_Rewrap: K wrapped to it does not leave the TPM). */
static mcim_cause_t certified_slot(const json_t *certify, const TPM2B_PUBLIC *ak,
                                   const uint8_t *nonce, json_t **out, char *err, size_t errlen)
{
  const char *p64 = NULL;
  TPM2B_PUBLIC pub;
  mcim_cause_t rc;

  if (!json_object_get(certify, "pcid")) {
    mcim_detailf(err, errlen,
                 "certify.pcid is missing: the TRE offers no slot key for the PCID credential's "
                 "K, and a TPM device takes K into its TPM only");
    return MCIM_TPM_SLOT_KEY_MISSING;
  }
  rc = certify_entry(certify, "pcid", ak, nonce, &pub, &p64, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  if (!mcim_tpm_slot_public_check(&pub)) {
    mcim_detailf(err, errlen,
                 "the key certified as pcid is not a slot key (attributes 0x%08x, or its "
                 "policy, parameters): K wrapped to it might be rewrapped out of the TPM",
                 (unsigned)pub.publicArea.objectAttributes);
    return MCIM_TPM_KEY_ATTRIBUTES;
  }
  *out = json_pack("{s:s}", "public", p64);
  return *out ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_m2mes_tpm_check(struct mcim_role *r, const char *device, const json_t *tpm,
                                  const mcim_jose_key_t *att, const mcim_jose_key_t *ka,
                                  const mcim_jose_key_t *storage, EVP_PKEY **ak_out,
                                  json_t **pcid_slot, char *err, size_t errlen)
{
  uint8_t plain[TOKEN_PLAIN], sealed[TOKEN_PLAIN + MCIM_SEAL_OVERHEAD], act[64];
  size_t sealed_len = 0, plain_len = 0, act_len = 0;
  TPM2B_PUBLIC ak;
  EVP_PKEY *ek = NULL;
  char context[200];
  const char *ek64 = json_string_value(json_object_get(tpm, "ek_cert"));
  const char *ak64 = json_string_value(json_object_get(tpm, "ak_public"));
  const char *tok = json_string_value(json_object_get(tpm, "token"));
  const char *a64 = json_string_value(json_object_get(tpm, "activation"));
  const json_t *certify = json_object_get(tpm, "certify");
  mcim_cause_t rc = MCIM_TPM_ENROLMENT_REQUIRED;

  *ak_out = NULL;
  *pcid_slot = NULL;
  memset(plain, 0, sizeof(plain));
  if (!json_is_object(tpm) || !ek64 || !ak64 || !tok || !a64 || !json_is_object(certify)) {
    mcim_detailf(err, errlen,
                 "tpm must be {\"ek_cert\", \"ak_public\", \"token\", "
                 "\"activation\", \"certify\"}");
    goto cleanup;
  }
  rc = ek_and_ak(r, ek64, ak64, &ek, &ak, err, errlen);
  if (rc != MCIM_OK)
    goto cleanup;
  /* the order of the checks: who the TPM is (EK), what the AK is, that the AK is in that
   * TPM (the activation), then what the AK vouches for (the certifications) */
  token_context(context, sizeof(context), device, ek64, ak64);
  rc = MCIM_TPM_ACTIVATION_FAILED;
  if (mcim_b64url_decode(tok, strlen(tok), sealed, sizeof(sealed), &sealed_len) != MCIM_OK ||
      mcim_unseal(r->storage_key, context, sealed, sealed_len, plain, sizeof(plain), &plain_len) !=
          MCIM_OK ||
      plain_len != TOKEN_PLAIN) {
    mcim_detailf(err, errlen,
                 "the enrolment token is not this M2MES's for this device, EK "
                 "certificate and attestation key");
    goto cleanup;
  }
  uint64_t expires = 0;
  for (int i = 0; i < 8; i++)
    expires = (expires << 8) | plain[SECRET_LEN + NONCE_LEN + i];
  if ((int64_t)expires < mcim_now()) {
    mcim_detailf(err, errlen, "the enrolment expired; ask for a new credential");
    goto cleanup;
  }
  if (mcim_b64url_decode(a64, strlen(a64), act, sizeof(act), &act_len) != MCIM_OK ||
      act_len != SECRET_LEN || !mcim_ct_equal(act, plain, SECRET_LEN)) {
    mcim_detailf(err, errlen,
                 "the activated secret is not the one sent: the attestation key is "
                 "not in the TPM of that endorsement key");
    goto cleanup;
  }
  if ((rc = certified(certify, "attestation", &ak, plain + SECRET_LEN, att, err, errlen)) !=
          MCIM_OK ||
      (rc = certified(certify, "ka", &ak, plain + SECRET_LEN, ka, err, errlen)) != MCIM_OK ||
      (storage && (rc = certified(certify, "storage", &ak, plain + SECRET_LEN, storage, err,
                                  errlen)) != MCIM_OK) ||
      (rc = certified_slot(certify, &ak, plain + SECRET_LEN, pcid_slot, err, errlen)) != MCIM_OK)
    goto cleanup;
  rc = mcim_tpm_public_pkey(&ak, ak_out);
  if (rc != MCIM_OK) {
    json_decref(*pcid_slot);
    *pcid_slot = NULL;
  }
cleanup:
  mcim_wipe(plain, sizeof(plain));
  mcim_wipe(act, sizeof(act));
  EVP_PKEY_free(ek);
  return rc;
}

#else /* a build without tpm2-tss: no TPM is enrolled */

void mcim_m2mes_enrolment(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_reply_problem(resp, MCIM_UNSUPPORTED, 0,
                          "this M2MES was built without the TPM "
                          "code (MCIM_TPM=OFF): no TPM enrolment");
}

mcim_cause_t mcim_m2mes_tpm_check(struct mcim_role *r, const char *device, const json_t *tpm,
                                  const mcim_jose_key_t *att, const mcim_jose_key_t *ka,
                                  const mcim_jose_key_t *storage, EVP_PKEY **ak_out,
                                  json_t **pcid_slot, char *err, size_t errlen)
{
  (void)r;
  (void)device;
  (void)tpm;
  (void)att;
  (void)ka;
  (void)storage;
  *ak_out = NULL;
  *pcid_slot = NULL;
  mcim_detailf(err, errlen, "this M2MES was built without the TPM code (MCIM_TPM=OFF)");
  return MCIM_UNSUPPORTED;
}

#endif
