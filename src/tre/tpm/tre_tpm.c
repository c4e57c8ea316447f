/* The TPM TRE (include/mcim/tre.h, docs/tre-tpm.md): the software TRE's document, sealing and
 * operations (src/tre/), with its two keys inside a TPM. This file is the TPM's side of
 * struct tre_keys_ops (tre_priv.h): the keys are made by TPM2_Create under the storage
 * primary (tpm_keys.c) and the document keeps, for each, the TPM's blobs:
 *
 *   "keys": {"attestation": {"tpm_public": B64URL(TPM2B_PUBLIC),
 *                            "tpm_private": B64URL(TPM2B_PRIVATE)},
 *            "ka":          {... the same ...}},
 *   "backend": "tpm"
 *
 * The operations get each key as a JOSE key whose private operations go to the TPM
 * (mcim_jose_key_external): an ES256 signature is TPM2_Sign of the signing input's digest,
 * the ECDH of ECDH-ES is TPM2_ECDH_ZGen, each in the TPM and on a key loaded for that one
 * operation and flushed after it (swtpm has 3 transient slots). The connection is opened
 * by the first key operation of a transaction and closed at its end (tre_end): the TPM
 * serves one connection at a time, and the TRE's lock already orders the transactions of
 * every handle and process. */
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tre_priv.h"

#define MEMBER_PUBLIC "tpm_public"
#define MEMBER_PRIVATE "tpm_private"

static const char *key_member(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? "attestation" : "ka";
}

static enum mcim_tpm_key_kind key_kind(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? MCIM_TPM_KEY_SIGN : MCIM_TPM_KEY_ECDH;
}

/* The transaction's connection, opened on first use. */
static mcim_cause_t connection(struct tre_soft *t, mcim_tpm_t **out)
{
  char detail[320];
  mcim_cause_t rc = MCIM_OK;

  if (!t->keys_ctx) {
    mcim_tpm_t *tpm = NULL;
    rc = mcim_tpm_open(t->tcti, &tpm, detail, sizeof(detail));
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s", detail);
    t->keys_ctx = tpm;
  }
  *out = t->keys_ctx;
  return rc;
}

static void tpm_end(struct tre_soft *t)
{
  mcim_tpm_free(t->keys_ctx); /* flushes the primary */
  t->keys_ctx = NULL;
}

static void log_tpm(mcim_tpm_t *tpm, mcim_cause_t rc, const char *what)
{
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s: %s", what, mcim_tpm_detail(tpm));
}

/* ---- the blobs in the document ---- */

static mcim_cause_t blob_of(json_t *st, enum mcim_tre_cert which, struct mcim_tpm_blob *out)
{
  json_t *k = json_object_get(json_object_get(st, "keys"), key_member(which));
  mcim_cause_t rc = mcim_tpm_blob_decode(tre_str(k, MEMBER_PUBLIC), tre_str(k, MEMBER_PRIVATE),
                                         out);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s key in the state is not a TPM blob",
                   key_member(which));
  return rc;
}

static mcim_cause_t blob_json(const struct mcim_tpm_blob *blob, json_t **out)
{
  char *pub = NULL, *priv = NULL;
  mcim_cause_t rc = mcim_tpm_blob_encode(blob, &pub, &priv);
  if (rc == MCIM_OK) {
    *out = json_pack("{s:s, s:s}", MEMBER_PUBLIC, pub, MEMBER_PRIVATE, priv);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
  }
  free(pub);
  free(priv);
  return rc;
}

/* ---- struct tre_keys_ops ---- */

static mcim_cause_t tpm_create(struct tre_soft *t, json_t **attestation, json_t **ka)
{
  struct mcim_tpm_blob sign = {0}, ecdh = {0};
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = connection(t, &tpm);

  if (rc != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_SIGN, &sign)) != MCIM_OK ||
      (rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_ECDH, &ecdh)) != MCIM_OK) {
    log_tpm(tpm, rc, "cannot create the TRE keys");
    goto cleanup;
  }
  if ((rc = blob_json(&sign, attestation)) == MCIM_OK)
    rc = blob_json(&ecdh, ka);
cleanup:
  if (rc != MCIM_OK) {
    json_decref(*attestation);
    *attestation = NULL;
  }
  return rc;
}

static mcim_cause_t tpm_public_key(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                                   EVP_PKEY **out)
{
  struct mcim_tpm_blob blob;
  mcim_cause_t rc = blob_of(st, which, &blob);
  (void)t;
  if (rc == MCIM_OK)
    rc = mcim_tpm_key_public(&blob, key_kind(which), out);
  return rc;
}

/* What an external JOSE key of the TRE needs to reach its key in the TPM. */
struct key_ref {
  struct tre_soft *t;
  enum mcim_tre_cert which;
  struct mcim_tpm_blob blob;
};

static mcim_cause_t ref_load(struct key_ref *r, mcim_tpm_t **tpm, mcim_tpm_key_t **key)
{
  mcim_cause_t rc = connection(r->t, tpm);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_tpm_key_load(*tpm, key_kind(r->which), &r->blob, key);
  if (rc != MCIM_OK)
    log_tpm(*tpm, rc, "cannot load the TRE key");
  return rc;
}

static mcim_cause_t ref_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
  struct key_ref *r = ctx;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  mcim_cause_t rc = ref_load(r, &tpm, &key);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_sign(key, digest, sig)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot sign");
  mcim_tpm_key_free(key);
  return rc;
}

static mcim_cause_t ref_ecdh(void *ctx, const uint8_t x[32], const uint8_t y[32], uint8_t z[32])
{
  struct key_ref *r = ctx;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  mcim_cause_t rc = ref_load(r, &tpm, &key);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_ecdh(key, x, y, z)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot compute the key agreement");
  mcim_tpm_key_free(key);
  return rc;
}

static void ref_free(void *ctx)
{
  free(ctx);
}

static const struct mcim_jose_key_ops tpm_sign_ops = {.sign = ref_sign, .free = ref_free};
static const struct mcim_jose_key_ops tpm_ecdh_ops = {.ecdh = ref_ecdh, .free = ref_free};

static mcim_cause_t tpm_jose(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                             mcim_jose_key_t **out)
{
  struct key_ref *r = calloc(1, sizeof(*r));
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!r)
    goto cleanup;
  r->t = t;
  r->which = which;
  if ((rc = blob_of(st, which, &r->blob)) != MCIM_OK ||
      (rc = mcim_tpm_key_public(&r->blob, key_kind(which), &pub)) != MCIM_OK)
    goto cleanup;
  /* each key does its one job only: the attestation key signs, the KA key agrees keys */
  rc = mcim_jose_key_external(pub, which == MCIM_TRE_CERT_ATTESTATION ? &tpm_sign_ops
                                                                      : &tpm_ecdh_ops,
                              r, &key);
  r = NULL; /* the key's now, also on failure */
  if (rc != MCIM_OK)
    goto cleanup;
  /* Verifiers find the device's certificate by the kid of what it signs. */
  if (which == MCIM_TRE_CERT_ATTESTATION &&
      (rc = mcim_jose_key_set_kid(key, tre_str(st, "device"))) != MCIM_OK)
    goto cleanup;
  *out = key;
  key = NULL;
cleanup:
  mcim_jose_key_free(key);
  EVP_PKEY_free(pub);
  free(r);
  return rc;
}

const struct tre_keys_ops tre_keys_tpm = {
    .name = TRE_BACKEND_TPM,
    .create = tpm_create,
    .public_key = tpm_public_key,
    .jose = tpm_jose,
    .end = tpm_end,
};

/* ---- manufacture and open ---- */

static bool tcti_given(const char *tcti, const char *dir)
{
  if (tcti && *tcti)
    return true;
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INVALID_ARGUMENT,
                 "tre: %s: a TPM TRE needs the TCTI of its TPM", dir ? dir : "?");
  return false;
}

mcim_cause_t mcim_tre_tpm_create(const char *dir, const char *tcti, const char *device,
                                 const char *model, const char *owner_jwk,
                                 const char *operators_ca_pem, const char *m2mes_ca_pem)
{
  char detail[320];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!tcti_given(tcti, dir))
    return rc;
  rc = mcim_tss2_load(detail, sizeof(detail));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s", detail);
    return rc;
  }
  return tre_create(&tre_keys_tpm, tcti, dir, device, model, owner_jwk, operators_ca_pem,
                    m2mes_ca_pem);
}

mcim_cause_t mcim_tre_tpm_open(const char *dir, const char *tcti, mcim_tre_t **out)
{
  char detail[320];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (out)
    *out = NULL;
  if (!tcti_given(tcti, dir))
    return rc;
  /* tpm2-tss now, while the caller (the agent's boot) has one thread: it sets TSS2_LOG */
  rc = mcim_tss2_load(detail, sizeof(detail));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s", detail);
    return rc;
  }
  return tre_open(&tre_keys_tpm, tcti, dir, out);
}
