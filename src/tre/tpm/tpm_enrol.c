/* Enrolment of a TPM (tpm_enrol.h; docs/tre-tpm.md, "Enrolment"): the TPM commands of the
 * device, and the M2MES's checks and TPM2_MakeCredential with OpenSSL.
 *
 * Why MakeCredential/ActivateCredential: the EK certificate says that a key pair is the
 * endorsement key of a genuine TPM, but the attestation key's public area comes from the
 * device's software, which could have made it anywhere. TPM2_ActivateCredential gives the
 * secret back only when the EK's private key decrypts the seed (so the TPM is the certified
 * one) and an object of exactly the name the credential was made for is loaded in that same
 * TPM (the name hashes the public area, attributes included, so the TPM enforces them). */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jose.h"
#include "mcim/util.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"
#include "tre/tpm/tpm_quote.h"

enum { NV_CHUNK = 512, EK_CERT_MAX = 4096 };

/* The attributes an attestation key must have, exactly: what mcim_tpm_key_create makes for
 * MCIM_TPM_KEY_AK. */
#define AK_ATTRS (MCIM_TPM_KEY_ATTRS | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_RESTRICTED)
/* What every certified TRE key must have: made by the TPM and unable to leave it. */
#define FIXED_ATTRS                                                                                \
  (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN)

/* ---- the device's side ---- */

mcim_cause_t mcim_tpm_ek_cert(mcim_tpm_t *t, uint8_t **der, size_t *len)
{
  return mcim_tpm_ek_cert_at(t, MCIM_TPM_EK_CERT_NV, der, len);
}

mcim_cause_t mcim_tpm_ek_cert_at(mcim_tpm_t *t, uint32_t nv_index, uint8_t **der, size_t *len)
{
  ESYS_TR nv = ESYS_TR_NONE;
  TPM2B_NV_PUBLIC *nvpub = NULL;
  TPM2B_MAX_NV_BUFFER *chunk = NULL;
  uint8_t *buf = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t || !der || !len)
    goto cleanup;
  *der = NULL;
  *len = 0;
  r = Esys_TR_FromTPMPublic(t->esys, nv_index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "no EK certificate at that NV index", r);
    goto cleanup;
  }
  r = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nvpub, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_NV_ReadPublic (EK certificate)", r);
    goto cleanup;
  }
  size_t size = nvpub->nvPublic.dataSize;
  rc = mcim_tpm_failf(t, MCIM_TPM_ERROR, "EK certificate index of %zu bytes", size);
  if (size == 0 || size > EK_CERT_MAX)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  buf = malloc(size);
  if (!buf)
    goto cleanup;
  for (size_t off = 0; off < size;) {
    UINT16 n = (UINT16)(size - off > NV_CHUNK ? NV_CHUNK : size - off);
    /* the owner reads it (TPMA_NV_OWNERREAD; swtpm's owner authorisation is empty) */
    r = Esys_NV_Read(t->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
                     (UINT16)off, &chunk);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "TPM2_NV_Read (EK certificate)", r);
      goto cleanup;
    }
    rc = mcim_tpm_failf(t, MCIM_TPM_ERROR, "TPM2_NV_Read: %u bytes asked, %u read", n, chunk->size);
    if (chunk->size != n)
      goto cleanup;
    memcpy(buf + off, chunk->buffer, n);
    off += n;
    Esys_Free(chunk);
    chunk = NULL;
  }
  *der = buf;
  *len = size;
  buf = NULL;
  rc = MCIM_OK;
cleanup:
  if (nv != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &nv);
  Esys_Free(nvpub);
  Esys_Free(chunk);
  free(buf);
  return rc;
}

mcim_cause_t mcim_tpm_activate_credential(mcim_tpm_t *t, mcim_tpm_key_t *ak,
                                          const TPM2B_ID_OBJECT *blob,
                                          const TPM2B_ENCRYPTED_SECRET *enc, uint8_t *secret,
                                          size_t *secret_len)
{
  return mcim_tpm_activate_credential_ek(t, MCIM_TPM_EK_HANDLE, ak, blob, enc, secret, secret_len);
}

mcim_cause_t mcim_tpm_activate_credential_ek(mcim_tpm_t *t, uint32_t ek_handle, mcim_tpm_key_t *ak,
                                             const TPM2B_ID_OBJECT *blob,
                                             const TPM2B_ENCRYPTED_SECRET *enc, uint8_t *secret,
                                             size_t *secret_len)
{
  const TPMT_SYM_DEF no_sym = {.algorithm = TPM2_ALG_NULL};
  ESYS_TR ek = ESYS_TR_NONE, session = ESYS_TR_NONE, auth = ESYS_TR_PASSWORD;
  TPM2B_PUBLIC *pub = NULL;
  TPM2B_DIGEST *out = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t || !ak || !blob || !enc || !secret || !secret_len)
    goto cleanup;
  r = Esys_TR_FromTPMPublic(t->esys, ek_handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &ek);
  if (r == TSS2_RC_SUCCESS)
    r = Esys_ReadPublic(t->esys, ek, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "no endorsement key at its persistent handle", r);
    goto cleanup;
  }
  /* The default templates' USER role: the low range's (RSA 2048, ECC P-256) only through
   * their authPolicy, PolicySecret(TPM_RH_ENDORSEMENT), a policy session that proves
   * knowledge of the endorsement hierarchy's authorisation (empty); the high range's (swtpm's
   * ECC P-384) also with its authValue (userWithAuth, empty). */
  if (!(pub->publicArea.objectAttributes & TPMA_OBJECT_USERWITHAUTH)) {
    r = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &no_sym, TPM2_ALG_SHA256,
                              &session);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "TPM2_StartAuthSession (EK policy)", r);
      goto cleanup;
    }
    r = Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "TPM2_PolicySecret (endorsement)", r);
      goto cleanup;
    }
    auth = session;
  }
  r = Esys_ActivateCredential(t->esys, mcim_tpm_key_handle(ak), ek, ESYS_TR_PASSWORD, auth,
                              ESYS_TR_NONE, blob, enc, &out);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_ActivateCredential", r);
    goto cleanup;
  }
  rc = mcim_tpm_failf(t, MCIM_TPM_ERROR, "TPM2_ActivateCredential: %u bytes back", out->size);
  if (out->size == 0 || out->size > *secret_len)
    goto cleanup;
  memcpy(secret, out->buffer, out->size);
  *secret_len = out->size;
  rc = MCIM_OK;
cleanup:
  if (out)
    OPENSSL_cleanse(out, sizeof(*out));
  Esys_Free(out);
  Esys_Free(pub);
  if (session != ESYS_TR_NONE)
    (void)Esys_FlushContext(t->esys, session);
  if (ek != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &ek);
  return rc;
}

mcim_cause_t mcim_tpm_certify(mcim_tpm_t *t, mcim_tpm_key_t *ak, ESYS_TR obj, const uint8_t *qual,
                              size_t qual_len, uint8_t **attest, size_t *attest_len, uint8_t **sig,
                              size_t *sig_len)
{
  TPM2B_DATA q = {.size = (UINT16)qual_len};
  const TPMT_SIG_SCHEME in_scheme = {.scheme = TPM2_ALG_NULL}; /* the AK's: ECDSA-SHA256 */
  TPM2B_ATTEST *certified = NULL;
  TPMT_SIGNATURE *s = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (attest)
    *attest = NULL;
  if (sig)
    *sig = NULL;
  if (!t || !ak || qual_len > sizeof(q.buffer) || (qual_len && !qual) || !attest || !sig ||
      !attest_len || !sig_len)
    goto cleanup;
  if (qual_len)
    memcpy(q.buffer, qual, qual_len);
  /* objectHandle: ADMIN role, the object's authValue (empty; none has adminWithPolicy) */
  r = Esys_Certify(t->esys, obj, mcim_tpm_key_handle(ak), ESYS_TR_PASSWORD, ESYS_TR_PASSWORD,
                   ESYS_TR_NONE, &q, &in_scheme, &certified, &s);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Certify", r);
    goto cleanup;
  }
  rc = mcim_tpm_attest_out(t, certified, s, "marshalling the certification's signature", attest,
                           attest_len, sig, sig_len);
cleanup:
  if (rc != MCIM_OK && attest && sig) {
    free(*attest);
    free(*sig);
    *attest = *sig = NULL;
  }
  Esys_Free(certified);
  Esys_Free(s);
  return rc;
}

/* ---- the M2MES's side ---- */

/* The parameters of an EK's default template (TCG EK Credential Profile), from its
 * certificate's key: nameAlg (the hash of KDFa, KDFe and the HMAC, and the seed's size) and
 * the symmetric key that protects its credentials. RSA 2048 (L-1) and ECC P-256 (L-2):
 * SHA-256, AES-128-CFB; ECC P-384 (the high range's, as swtpm makes it): SHA-384,
 * AES-256-CFB. */
struct ek_kind {
  const char *md;            /* OpenSSL's name */
  size_t dlen, symlen, plen; /* digest, AES key, ECC coordinate (0: RSA) */
};
static const struct ek_kind EK_RSA = {"SHA256", 32, 16, 0}, EK_P256 = {"SHA256", 32, 16, 32},
                            EK_P384 = {"SHA384", 48, 32, 48};

static const struct ek_kind *ek_kind_of(EVP_PKEY *ek)
{
  char group[32] = "";
  if (EVP_PKEY_get_base_id(ek) == EVP_PKEY_RSA)
    return EVP_PKEY_get_bits(ek) == 2048 ? &EK_RSA : NULL;
  if (EVP_PKEY_get_base_id(ek) != EVP_PKEY_EC ||
      !EVP_PKEY_get_utf8_string_param(ek, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
    return NULL;
  return strcmp(group, "prime256v1") == 0  ? &EK_P256
         : strcmp(group, "secp384r1") == 0 ? &EK_P384
                                           : NULL;
}

static bool add_anchors(X509_STORE *store, const char *path)
{
  FILE *f = fopen(path, "r");
  X509 *c = NULL;
  int n = 0;
  if (!f)
    return false;
  while ((c = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, c) == 1)
      n++;
    X509_free(c);
  }
  ERR_clear_error(); /* the end of the file reads as an error */
  fclose(f);
  return n > 0;
}

mcim_cause_t mcim_tpm_ek_verify(const uint8_t *der, size_t len, const char *vendor_ca,
                                EVP_PKEY **ek, char *err, size_t errlen)
{
  const unsigned char *p = der;
  X509 *cert = NULL;
  X509_STORE *store = NULL;
  X509_STORE_CTX *ctx = NULL;
  EVP_PKEY *key = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!ek)
    goto cleanup;
  *ek = NULL;
  rc = MCIM_TPM_EK_UNTRUSTED;
  if (!der || len == 0 || len > EK_CERT_MAX || !(cert = d2i_X509(NULL, &p, (long)len)) ||
      p != der + len) {
    mcim_detailf(err, errlen, "the EK certificate is not one DER X.509 certificate");
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  store = X509_STORE_new();
  ctx = X509_STORE_CTX_new();
  if (!store || !ctx)
    goto cleanup;
  rc = MCIM_TPM_EK_UNTRUSTED;
  if (!vendor_ca || !add_anchors(store, vendor_ca)) {
    mcim_detailf(err, errlen, "no TPM vendor CA certificate in %s",
                 vendor_ca ? vendor_ca : "(tpm_vendor_ca not configured)");
    goto cleanup;
  }
  /* The EK certificate's critical subjectAltName (the TPM's manufacturer, model, version in
   * a directoryName) is a form OpenSSL handles; its EKU is the TCG's EK certificate OID,
   * which no purpose check knows: the default purpose ("any") does not look at it. */
  if (X509_STORE_CTX_init(ctx, store, cert, NULL) != 1 || X509_verify_cert(ctx) != 1) {
    mcim_detailf(err, errlen, "the EK certificate does not chain to a trusted TPM vendor CA: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    goto cleanup;
  }
  key = X509_get_pubkey(cert);
  if (!key || !ek_kind_of(key)) {
    mcim_detailf(err, errlen,
                 "the EK is not an RSA 2048, ECC P-256 or ECC P-384 key (the EKs "
                 "this M2MES enrols)");
    goto cleanup;
  }
  *ek = key;
  key = NULL;
  rc = MCIM_OK;
cleanup:
  ERR_clear_error();
  EVP_PKEY_free(key);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  return rc;
}

mcim_cause_t mcim_tpm_ak_check(const TPM2B_PUBLIC *ak, char *err, size_t errlen)
{
  const TPMT_PUBLIC *a = ak ? &ak->publicArea : NULL;
  if (!a)
    return MCIM_INVALID_ARGUMENT;
  if (a->type != TPM2_ALG_ECC || a->nameAlg != TPM2_ALG_SHA256 ||
      a->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
      a->parameters.eccDetail.scheme.scheme != TPM2_ALG_ECDSA ||
      a->parameters.eccDetail.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
      a->parameters.eccDetail.symmetric.algorithm != TPM2_ALG_NULL ||
      a->parameters.eccDetail.kdf.scheme != TPM2_ALG_NULL || a->unique.ecc.x.size != 32 ||
      a->unique.ecc.y.size != 32) {
    mcim_detailf(err, errlen, "the attestation key is not an ECC P-256 ECDSA-SHA256 key");
    return MCIM_TPM_KEY_ATTRIBUTES;
  }
  /* Restricted signing: the TPM signs only what it generated (a forged quote cannot be
   * signed); fixedTPM, fixedParent: it never leaves this TPM; sensitiveDataOrigin: the TPM
   * made it. An authPolicy could admit TPM2_Duplicate (fixedParent refuses it anyway) or
   * another user: none. */
  if (a->objectAttributes != AK_ATTRS || a->authPolicy.size != 0) {
    mcim_detailf(err, errlen,
                 "the attestation key's attributes are 0x%08x, not 0x%08x (restricted signing, "
                 "fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA) with no "
                 "authPolicy",
                 (unsigned)a->objectAttributes, (unsigned)AK_ATTRS);
    return MCIM_TPM_KEY_ATTRIBUTES;
  }
  return MCIM_OK;
}

static void be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* KDFa (TPM 2.0 Part 1, 11.4.10.2: SP 800-108 counter mode, HMAC with the EK's nameAlg) for
 * one block, `bits` <= the digest's, contextV empty. */
static bool kdfa(const struct ek_kind *k, const uint8_t *seed, const char *label,
                 const uint8_t *ctx_u, size_t ctx_u_len, uint32_t bits, uint8_t *out)
{
  uint8_t in[4 + 16 + sizeof(TPMU_NAME) + 4], mac[EVP_MAX_MD_SIZE];
  size_t llen = strlen(label) + 1, n = 0, maclen = 0;
  bool ok = false;

  if (bits == 0 || bits > 8 * k->dlen || llen > 16 || ctx_u_len > sizeof(TPMU_NAME))
    return false;
  be32(in, 1);
  n = 4;
  memcpy(in + n, label, llen); /* with its NUL */
  n += llen;
  if (ctx_u_len)
    memcpy(in + n, ctx_u, ctx_u_len);
  n += ctx_u_len;
  be32(in + n, bits);
  n += 4;
  if (EVP_Q_mac(NULL, "HMAC", NULL, k->md, NULL, seed, k->dlen, in, n, mac, sizeof(mac), &maclen) &&
      maclen == k->dlen) {
    memcpy(out, mac, bits / 8);
    ok = true;
  }
  OPENSSL_cleanse(mac, sizeof(mac));
  OPENSSL_cleanse(in, sizeof(in));
  return ok;
}

/* A coordinate of an EC key, left-padded to `plen` bytes. */
static bool coordinate(EVP_PKEY *key, const char *which, size_t plen, uint8_t *out)
{
  BIGNUM *bn = NULL;
  bool ok =
      EVP_PKEY_get_bn_param(key, which, &bn) == 1 && BN_bn2binpad(bn, out, (int)plen) == (int)plen;
  BN_free(bn);
  return ok;
}

/* The seed for an ECC EK (Part 1, C.6.4, "ECC Secret Sharing for Credentials"): an ephemeral
 * key on the EK's curve, Z = x(e * EK), seed = KDFe(nameAlg, Z, "IDENTITY", x(E), x(EK));
 * what the TPM gets is the ephemeral point E (a TPMS_ECC_POINT). */
static bool ecdh_seed(EVP_PKEY *ek, const struct ek_kind *k, uint8_t *seed,
                      TPM2B_ENCRYPTED_SECRET *out)
{
  static const char use[] = "IDENTITY"; /* with its NUL, hashed */
  char group[32] = "";
  uint8_t z[48], ex[48], ey[48], kx[48], in[4 + 48 + sizeof(use) + 2 * 48];
  size_t zlen = sizeof(z), n = 0;
  unsigned int dlen = 0;
  EVP_PKEY *eph = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  bool ok = false;

  if (!EVP_PKEY_get_utf8_string_param(ek, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) ||
      !(eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group)) || !(ctx = EVP_PKEY_CTX_new(eph, NULL)) ||
      EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, ek) != 1 ||
      EVP_PKEY_derive(ctx, z, &zlen) != 1 || zlen != k->plen ||
      !coordinate(eph, OSSL_PKEY_PARAM_EC_PUB_X, k->plen, ex) ||
      !coordinate(eph, OSSL_PKEY_PARAM_EC_PUB_Y, k->plen, ey) ||
      !coordinate(ek, OSSL_PKEY_PARAM_EC_PUB_X, k->plen, kx))
    goto cleanup;
  be32(in, 1);
  n = 4;
  memcpy(in + n, z, zlen);
  n += zlen;
  memcpy(in + n, use, sizeof(use));
  n += sizeof(use);
  memcpy(in + n, ex, k->plen);
  n += k->plen;
  memcpy(in + n, kx, k->plen);
  n += k->plen;
  if (EVP_Digest(in, n, seed, &dlen, EVP_get_digestbyname(k->md), NULL) != 1 || dlen != k->dlen)
    goto cleanup;
  /* TPM2B_ENCRYPTED_SECRET.secret = the marshalled TPMS_ECC_POINT {TPM2B x, TPM2B y} */
  uint8_t *p = out->secret;
  p[0] = 0;
  p[1] = (uint8_t)k->plen;
  memcpy(p + 2, ex, k->plen);
  p[2 + k->plen] = 0;
  p[3 + k->plen] = (uint8_t)k->plen;
  memcpy(p + 4 + k->plen, ey, k->plen);
  out->size = (UINT16)(4 + 2 * k->plen);
  ok = true;
cleanup:
  OPENSSL_cleanse(z, sizeof(z));
  OPENSSL_cleanse(in, sizeof(in));
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(eph); /* OpenSSL clears the ephemeral private key */
  return ok;
}

/* RSA-OAEP with SHA-256 and the label "IDENTITY\0" (Part 1, B.10.3: the label includes its
 * terminating zero). */
static bool oaep_encrypt(EVP_PKEY *ek, const uint8_t *in, size_t len, TPM2B_ENCRYPTED_SECRET *out)
{
  static const char label[] = "IDENTITY";
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(ek, NULL);
  unsigned char *l = OPENSSL_memdup(label, sizeof(label));
  size_t outlen = sizeof(out->secret);
  bool ok = ctx && l && EVP_PKEY_encrypt_init(ctx) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
            EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, l, (int)sizeof(label)) == 1;
  if (ok)
    l = NULL; /* the context's now */
  ok = ok && EVP_PKEY_encrypt(ctx, out->secret, &outlen, in, len) == 1;
  out->size = ok ? (UINT16)outlen : 0;
  OPENSSL_free(l);
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

static bool aes_cfb(const struct ek_kind *k, const uint8_t *key, const uint8_t *in, size_t len,
                    uint8_t *out)
{
  const uint8_t iv[16] = {0};
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int n = 0, m = 0;
  bool ok = c &&
            EVP_EncryptInit_ex(c, k->symlen == 32 ? EVP_aes_256_cfb() : EVP_aes_128_cfb(), NULL,
                               key, iv) == 1 &&
            EVP_EncryptUpdate(c, out, &n, in, (int)len) == 1 &&
            EVP_EncryptFinal_ex(c, out + n, &m) == 1 && (size_t)n + (size_t)m == len;
  EVP_CIPHER_CTX_free(c);
  return ok;
}

mcim_cause_t mcim_tpm_make_credential(EVP_PKEY *ek, const TPM2B_NAME *ak_name,
                                      const uint8_t *secret, size_t secret_len,
                                      TPM2B_ID_OBJECT *blob, TPM2B_ENCRYPTED_SECRET *enc)
{
  /* every intermediate secret in one area, cleansed at the end */
  struct {
    uint8_t seed[48], sym[32], hmac_key[48];
    uint8_t plain[2 + 48]; /* TPM2B_DIGEST of the secret */
  } s;
  const struct ek_kind *k = ek ? ek_kind_of(ek) : NULL;
  uint8_t *p = blob ? blob->credential : NULL;
  size_t plen = 2 + secret_len, maclen = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  memset(&s, 0, sizeof(s));
  /* the secret is a TPM2B_DIGEST no longer than the EK's nameAlg (TPM_RC_SIZE otherwise) */
  if (!ek || !ak_name || ak_name->size == 0 || !secret || secret_len == 0 || !blob || !enc)
    goto cleanup;
  memset(blob, 0, sizeof(*blob));
  memset(enc, 0, sizeof(*enc));
  rc = MCIM_UNSUPPORTED;
  if (!k)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (secret_len > k->dlen)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  if (k->plen ? !ecdh_seed(ek, k, s.seed, enc)
              : RAND_bytes(s.seed, (int)k->dlen) != 1 || !oaep_encrypt(ek, s.seed, k->dlen, enc))
    goto cleanup;
  s.plain[0] = (uint8_t)(secret_len >> 8);
  s.plain[1] = (uint8_t)secret_len;
  memcpy(s.plain + 2, secret, secret_len);
  /* credentialBlob = TPM2B(outerHMAC) || encIdentity (Part 1, 24.4 and 24.5) */
  if (!kdfa(k, s.seed, "STORAGE", ak_name->name, ak_name->size, 8 * (uint32_t)k->symlen, s.sym) ||
      !kdfa(k, s.seed, "INTEGRITY", NULL, 0, 8 * (uint32_t)k->dlen, s.hmac_key) ||
      !aes_cfb(k, s.sym, s.plain, plen, p + 2 + k->dlen))
    goto cleanup;
  uint8_t macin[2 + 48 + sizeof(TPMU_NAME)];
  memcpy(macin, p + 2 + k->dlen, plen);
  memcpy(macin + plen, ak_name->name, ak_name->size);
  p[0] = 0;
  p[1] = (uint8_t)k->dlen;
  if (!EVP_Q_mac(NULL, "HMAC", NULL, k->md, NULL, s.hmac_key, k->dlen, macin, plen + ak_name->size,
                 p + 2, k->dlen, &maclen) ||
      maclen != k->dlen)
    goto cleanup;
  blob->size = (UINT16)(2 + k->dlen + plen);
  rc = MCIM_OK;
cleanup:
  OPENSSL_cleanse(&s, sizeof(s));
  if (rc != MCIM_OK && blob && enc) {
    memset(blob, 0, sizeof(*blob));
    memset(enc, 0, sizeof(*enc));
  }
  return rc;
}

mcim_cause_t mcim_tpm_public_pkey(const TPM2B_PUBLIC *pub, EVP_PKEY **out)
{
  const TPMS_ECC_POINT *u = pub ? &pub->publicArea.unique.ecc : NULL;
  if (!u || !out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (pub->publicArea.type != TPM2_ALG_ECC ||
      pub->publicArea.parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 || u->x.size != 32 ||
      u->y.size != 32)
    return MCIM_KEY_INVALID;
  return mcim_p256_public_pkey(u->x.buffer, u->y.buffer, out);
}

/* ECDSA R || S of a TPMT_SIGNATURE as DER, for OpenSSL. */
static bool signature_der(const uint8_t *sig, size_t len, uint8_t **der, int *der_len)
{
  TPMT_SIGNATURE s;
  size_t off = 0;
  ECDSA_SIG *es = NULL;
  BIGNUM *r = NULL, *ss = NULL;
  bool ok = false;

  memset(&s, 0, sizeof(s));
  *der = NULL;
  if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(sig, len, &off, &s) != TSS2_RC_SUCCESS || off != len ||
      s.sigAlg != TPM2_ALG_ECDSA || s.signature.ecdsa.hash != TPM2_ALG_SHA256)
    return false;
  es = ECDSA_SIG_new();
  r = BN_bin2bn(s.signature.ecdsa.signatureR.buffer, s.signature.ecdsa.signatureR.size, NULL);
  ss = BN_bin2bn(s.signature.ecdsa.signatureS.buffer, s.signature.ecdsa.signatureS.size, NULL);
  if (es && r && ss && ECDSA_SIG_set0(es, r, ss) == 1) {
    r = ss = NULL;
    *der_len = i2d_ECDSA_SIG(es, der);
    ok = *der_len > 0;
  }
  BN_free(r);
  BN_free(ss);
  ECDSA_SIG_free(es);
  return ok;
}

mcim_cause_t mcim_tpm_certify_check(const TPM2B_PUBLIC *ak, const TPM2B_PUBLIC *obj,
                                    const uint8_t *qual, size_t qual_len, const uint8_t *attest,
                                    size_t attest_len, const uint8_t *sig, size_t sig_len,
                                    char *err, size_t errlen)
{
  TPMS_ATTEST a;
  TPM2B_NAME name;
  EVP_PKEY *key = NULL;
  EVP_MD_CTX *md = NULL;
  uint8_t *der = NULL;
  int der_len = 0;
  size_t off = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!ak || !obj || !attest || !sig || (qual_len && !qual))
    goto cleanup;
  rc = MCIM_UNSUPPORTED;
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    goto cleanup;
  rc = MCIM_TPM_CERTIFY_INVALID;
  /* the signature over exactly these bytes first, then what they say */
  if (!signature_der(sig, sig_len, &der, &der_len)) {
    mcim_detailf(err, errlen,
                 "the certification's signature is not an ECDSA-SHA256 TPMT_SIGNATURE");
    goto cleanup;
  }
  if (mcim_tpm_public_pkey(ak, &key) != MCIM_OK)
    goto cleanup;
  md = EVP_MD_CTX_new();
  if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestVerify(md, der, (size_t)der_len, attest, attest_len) != 1) {
    mcim_detailf(err, errlen, "the certification does not verify with the attestation key");
    goto cleanup;
  }
  memset(&a, 0, sizeof(a));
  if (Tss2_MU_TPMS_ATTEST_Unmarshal(attest, attest_len, &off, &a) != TSS2_RC_SUCCESS ||
      off != attest_len || a.magic != TPM2_GENERATED_VALUE || a.type != TPM2_ST_ATTEST_CERTIFY) {
    mcim_detailf(err, errlen,
                 "the certification is not a TPM-generated TPMS_ATTEST of "
                 "TPM2_Certify");
    goto cleanup;
  }
  if (a.extraData.size != qual_len ||
      (qual_len && !mcim_ct_equal(a.extraData.buffer, qual, qual_len))) {
    mcim_detailf(err, errlen, "the certification's qualifying data is not this enrolment's");
    goto cleanup;
  }
  if (mcim_tpm_public_name(obj, &name) != MCIM_OK || a.attested.certify.name.size != name.size ||
      memcmp(a.attested.certify.name.name, name.name, name.size) != 0) {
    mcim_detailf(err, errlen, "the certification names another key than the public area sent");
    goto cleanup;
  }
  /* The name hashes the public area, so the TPM vouched for these attributes. */
  rc = MCIM_TPM_KEY_ATTRIBUTES;
  if ((obj->publicArea.objectAttributes & FIXED_ATTRS) != FIXED_ATTRS) {
    mcim_detailf(err, errlen,
                 "a certified key is not fixedTPM, fixedParent and "
                 "sensitiveDataOrigin (attributes 0x%08x): it could leave the TPM",
                 (unsigned)obj->publicArea.objectAttributes);
    goto cleanup;
  }
  rc = MCIM_OK;
cleanup:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(key);
  return rc;
}

mcim_cause_t mcim_tpm_public_encode(const TPM2B_PUBLIC *pub, char **b64)
{
  uint8_t buf[sizeof(TPM2B_PUBLIC)];
  size_t off = 0;
  if (!pub || !b64)
    return MCIM_INVALID_ARGUMENT;
  *b64 = NULL;
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    return MCIM_UNSUPPORTED;
  if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS)
    return MCIM_INVALID_ARGUMENT;
  *b64 = malloc(mcim_b64url_len(off) + 1);
  if (!*b64)
    return MCIM_NO_MEMORY;
  mcim_b64url_encode(buf, off, *b64);
  return MCIM_OK;
}

mcim_cause_t mcim_tpm_public_decode(const char *b64, TPM2B_PUBLIC *out)
{
  uint8_t buf[sizeof(TPM2B_PUBLIC)];
  size_t len = 0, off = 0;
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  memset(out, 0, sizeof(*out));
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    return MCIM_UNSUPPORTED;
  /* as mcim_tpm_blob_decode: the size field must be exactly what follows, and not 0 */
  if (!b64 || mcim_b64url_decode(b64, strlen(b64), buf, sizeof(buf), &len) != MCIM_OK || len == 0 ||
      Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, out) != TSS2_RC_SUCCESS || off != len ||
      out->size != len - 2 || out->size == 0) {
    memset(out, 0, sizeof(*out));
    return MCIM_KEY_INVALID;
  }
  return MCIM_OK;
}
