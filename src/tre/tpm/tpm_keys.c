/* The TRE's own keys inside the TPM (tpm.h): ECC P-256 keys created by the TPM under the
 * storage primary, fixedTPM and fixedParent, so that their private parts never exist outside
 * it; an ES256 signing key (TPM2_Sign, ECDSA with SHA-256) and a key-agreement key
 * (TPM2_ECDH_ZGen). What leaves the TPM is the public area and TPM2_Create's outPrivate: the
 * private part wrapped (AES-128-CFB and an HMAC) under keys derived from the primary's seed,
 * which only this TPM can load again. */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jose.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"

#define P256_LEN 32

struct mcim_tpm_key {
  mcim_tpm_t *tpm; /* borrowed */
  ESYS_TR handle;
  enum mcim_tpm_key_kind kind;
};

/* The template of each kind: everything but the attributes the TPM must enforce is fixed.
 * The scheme is pinned in the key (ECDSA-SHA256, ECDH), so the key cannot be used with
 * another one either. */
static void key_template(enum mcim_tpm_key_kind kind, TPM2B_PUBLIC *t)
{
  memset(t, 0, sizeof(*t));
  t->publicArea.type = TPM2_ALG_ECC;
  t->publicArea.nameAlg = TPM2_ALG_SHA256;
  t->publicArea.objectAttributes =
      MCIM_TPM_KEY_ATTRS |
      (kind == MCIM_TPM_KEY_ECDH ? TPMA_OBJECT_DECRYPT : TPMA_OBJECT_SIGN_ENCRYPT);
  /* the quote key signs only what the TPM made (TPMS_ATTEST starting TPM_GENERATED_VALUE) */
  if (kind == MCIM_TPM_KEY_AK)
    t->publicArea.objectAttributes |= TPMA_OBJECT_RESTRICTED;
  TPMS_ECC_PARMS *e = &t->publicArea.parameters.eccDetail;
  e->symmetric.algorithm = TPM2_ALG_NULL;
  e->scheme.scheme = kind == MCIM_TPM_KEY_ECDH ? TPM2_ALG_ECDH : TPM2_ALG_ECDSA;
  e->scheme.details.anySig.hashAlg = TPM2_ALG_SHA256; /* ecdsa and ecdh alike */
  e->curveID = TPM2_ECC_NIST_P256;
  e->kdf.scheme = TPM2_ALG_NULL;
}

/* Is `pub` a key of `kind` as key_template() makes it (the TPM filled in the point)? */
static bool template_matches(enum mcim_tpm_key_kind kind, const TPM2B_PUBLIC *pub)
{
  TPM2B_PUBLIC want;
  key_template(kind, &want);
  const TPMT_PUBLIC *a = &pub->publicArea, *b = &want.publicArea;
  return a->type == b->type && a->nameAlg == b->nameAlg &&
         a->objectAttributes == b->objectAttributes && a->authPolicy.size == 0 &&
         a->parameters.eccDetail.symmetric.algorithm == TPM2_ALG_NULL &&
         a->parameters.eccDetail.scheme.scheme == b->parameters.eccDetail.scheme.scheme &&
         a->parameters.eccDetail.scheme.details.anySig.hashAlg == TPM2_ALG_SHA256 &&
         a->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 &&
         a->parameters.eccDetail.kdf.scheme == TPM2_ALG_NULL &&
         a->unique.ecc.x.size == P256_LEN && a->unique.ecc.y.size == P256_LEN;
}

mcim_cause_t mcim_tpm_key_create(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                                 struct mcim_tpm_blob *out)
{
  const TPM2B_SENSITIVE_CREATE no_auth = {0}; /* empty authValue, no data: the TPM makes d */
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  TPM2B_PUBLIC tmpl;
  TPM2B_PRIVATE *priv = NULL;
  TPM2B_PUBLIC *pub = NULL;
  ESYS_TR parent = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t || !out ||
      (kind != MCIM_TPM_KEY_SIGN && kind != MCIM_TPM_KEY_ECDH && kind != MCIM_TPM_KEY_AK))
    goto cleanup;
  memset(out, 0, sizeof(*out));
  rc = mcim_tpm_primary(t, &parent, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  key_template(kind, &tmpl);
  r = Esys_Create(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &no_auth, &tmpl,
                  &no_outside, &no_pcrs, &priv, &pub, NULL, NULL, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t,
                       kind == MCIM_TPM_KEY_SIGN ? "TPM2_Create (signing key)"
                       : kind == MCIM_TPM_KEY_AK ? "TPM2_Create (attestation key)"
                                                 : "TPM2_Create (key-agreement key)",
                       r);
    goto cleanup;
  }
  rc = mcim_tpm_failf(t, MCIM_TPM_ERROR, "TPM2_Create: the key is not the one asked for");
  if (!template_matches(kind, pub))
    goto cleanup;
  out->pub = *pub;
  out->priv = *priv;
  rc = MCIM_OK;
cleanup:
  if (priv)
    OPENSSL_cleanse(priv, sizeof(*priv)); /* wrapped, but nobody needs this copy */
  Esys_Free(priv);
  Esys_Free(pub);
  return rc;
}

mcim_cause_t mcim_tpm_key_load(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                               const struct mcim_tpm_blob *blob, mcim_tpm_key_t **out)
{
  mcim_tpm_key_t *k = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!out)
    return rc;
  *out = NULL;
  if (!t || !blob)
    goto cleanup;
  rc = mcim_tpm_failf(t, MCIM_KEY_INVALID, "TPM2_Load: the blob is not a %s key of the TRE",
                      kind == MCIM_TPM_KEY_SIGN ? "signing"
                      : kind == MCIM_TPM_KEY_AK ? "attestation"
                                                : "key-agreement");
  if (!template_matches(kind, &blob->pub))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  k = calloc(1, sizeof(*k));
  if (!k)
    goto cleanup;
  k->tpm = t;
  k->kind = kind;
  rc = mcim_tpm_load(t, blob, "TPM2_Load (TRE key)", &k->handle);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = k;
  k = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_tpm_key_free(k);
  return rc;
}

void mcim_tpm_key_free(mcim_tpm_key_t *k)
{
  if (!k)
    return;
  if (k->handle != ESYS_TR_NONE)
    (void)Esys_FlushContext(k->tpm->esys, k->handle); /* swtpm has 3 transient slots */
  free(k);
}

ESYS_TR mcim_tpm_key_handle(const mcim_tpm_key_t *k)
{
  return k ? k->handle : ESYS_TR_NONE;
}

/* A TPM2B_ECC_PARAMETER as 32 big-endian bytes (the TPM may drop leading zeros). */
static bool param32(const TPM2B_ECC_PARAMETER *p, uint8_t out[P256_LEN])
{
  if (p->size == 0 || p->size > P256_LEN)
    return false;
  memset(out, 0, P256_LEN - p->size);
  memcpy(out + P256_LEN - p->size, p->buffer, p->size);
  return true;
}

mcim_cause_t mcim_tpm_key_sign(mcim_tpm_key_t *k, const uint8_t digest[32], uint8_t sig[64])
{
  TPM2B_DIGEST d = {.size = 32};
  const TPMT_SIG_SCHEME how = {.scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256};
  /* no ticket: the key is not restricted, so the TPM signs a digest it did not compute */
  const TPMT_TK_HASHCHECK no_ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
  TPMT_SIGNATURE *s = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!k || !digest || !sig || k->kind != MCIM_TPM_KEY_SIGN)
    goto cleanup;
  memcpy(d.buffer, digest, 32);
  r = Esys_Sign(k->tpm->esys, k->handle, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d, &how,
                &no_ticket, &s);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(k->tpm, "TPM2_Sign", r);
    goto cleanup;
  }
  /* TPMS_SIGNATURE_ECDSA {hash, r, s} to the JWS form R || S (RFC 7518 section 3.4) */
  rc = mcim_tpm_failf(k->tpm, MCIM_TPM_ERROR, "TPM2_Sign: not an ECDSA-SHA256 signature");
  if (s->sigAlg != TPM2_ALG_ECDSA || s->signature.ecdsa.hash != TPM2_ALG_SHA256 ||
      !param32(&s->signature.ecdsa.signatureR, sig) ||
      !param32(&s->signature.ecdsa.signatureS, sig + P256_LEN))
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  Esys_Free(s);
  return rc;
}

mcim_cause_t mcim_tpm_key_ecdh(mcim_tpm_key_t *k, const uint8_t x[32], const uint8_t y[32],
                               uint8_t z[32])
{
  TPM2B_ECC_POINT in = {.size = 2 * (2 + P256_LEN)};
  TPM2B_ECC_POINT *outp = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!k || !x || !y || !z || k->kind != MCIM_TPM_KEY_ECDH)
    goto cleanup;
  in.point.x.size = P256_LEN;
  memcpy(in.point.x.buffer, x, P256_LEN);
  in.point.y.size = P256_LEN;
  memcpy(in.point.y.buffer, y, P256_LEN);
  /* the TPM checks the point is on the key's curve (TPM_RC_ECC_POINT) */
  r = Esys_ECDH_ZGen(k->tpm->esys, k->handle, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &in,
                     &outp);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(k->tpm, "TPM2_ECDH_ZGen", r);
    goto cleanup;
  }
  /* Z is the x coordinate of d * P (SP 800-56A; RFC 7518 section 4.6) */
  rc = mcim_tpm_failf(k->tpm, MCIM_TPM_ERROR, "TPM2_ECDH_ZGen: no point back");
  if (!param32(&outp->point.x, z))
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  /* the shared secret passed through ESAPI's buffers: our copy of it is the caller's */
  if (outp)
    OPENSSL_cleanse(outp, sizeof(*outp));
  Esys_Free(outp);
  return rc;
}

/* ---- host side ---- */

mcim_cause_t mcim_tpm_key_public(const struct mcim_tpm_blob *blob, enum mcim_tpm_key_kind kind,
                                 EVP_PKEY **out)
{
  if (!blob || !out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (!template_matches(kind, &blob->pub))
    return MCIM_KEY_INVALID;
  return mcim_p256_public_pkey(blob->pub.publicArea.unique.ecc.x.buffer,
                               blob->pub.publicArea.unique.ecc.y.buffer, out);
}

mcim_cause_t mcim_tpm_blob_encode(const struct mcim_tpm_blob *blob, char **pub, char **priv)
{
  uint8_t buf[sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE)];
  size_t off = 0;
  char *p = NULL, *q = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!blob || !pub || !priv)
    goto cleanup;
  rc = MCIM_UNSUPPORTED;
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (Tss2_MU_TPM2B_PUBLIC_Marshal(&blob->pub, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  p = malloc(mcim_b64url_len(off) + 1);
  if (!p)
    goto cleanup;
  mcim_b64url_encode(buf, off, p);
  off = 0;
  rc = MCIM_INVALID_ARGUMENT;
  if (Tss2_MU_TPM2B_PRIVATE_Marshal(&blob->priv, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  q = malloc(mcim_b64url_len(off) + 1);
  if (!q)
    goto cleanup;
  mcim_b64url_encode(buf, off, q);
  *pub = p;
  *priv = q;
  p = q = NULL;
  rc = MCIM_OK;
cleanup:
  free(p);
  free(q);
  return rc;
}

/* One TPM2B structure from base64url: the whole string, nothing left over. */
static bool b64_struct(const char *in, uint8_t *buf, size_t cap, size_t *len)
{
  return in && mcim_b64url_decode(in, strlen(in), buf, cap, len) == MCIM_OK && *len > 0;
}

mcim_cause_t mcim_tpm_blob_decode(const char *pub, const char *priv, struct mcim_tpm_blob *out)
{
  uint8_t buf[sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE)];
  size_t len = 0, off = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!out)
    goto cleanup;
  memset(out, 0, sizeof(*out));
  rc = MCIM_UNSUPPORTED;
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  /* tpm2-tss takes a TPM2B_PUBLIC whose size field disagrees with the TPMT_PUBLIC after it
   * (0, or any size up to the buffer's): it must be exactly what follows, and not empty (an
   * empty public area or private part is no key; both found by fuzz_tpm_blob) */
  if (!b64_struct(pub, buf, sizeof(buf), &len) ||
      Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, &out->pub) != TSS2_RC_SUCCESS ||
      off != len || out->pub.size != len - 2 || out->pub.size == 0)
    goto cleanup;
  off = 0;
  if (!b64_struct(priv, buf, sizeof(buf), &len) ||
      Tss2_MU_TPM2B_PRIVATE_Unmarshal(buf, len, &off, &out->priv) != TSS2_RC_SUCCESS ||
      off != len || out->priv.size == 0)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  if (rc != MCIM_OK && out)
    memset(out, 0, sizeof(*out));
  return rc;
}
