/* The lab PKI's issuing side: CAs (created, loaded, written) and the certificates they issue
 * (mcim_pki_issue: usage in keyUsage/extendedKeyUsage, subjectAltName for TLS), with the
 * device certificate's own extensions (MCIM_OID_DEVICE_MODEL, MCIM_OID_TPM_ATTESTATION,
 * MCIM_OID_TPM_STORAGE, MCIM_OID_TPM_AK) written here and read back by the verifiers
 * (mcim_pki_cert_model, mcim_pki_cert_tpm_*). Apart from pki.c, which reads and verifies
 * certificates: only a CA's holder (m2mes, `mcim pki`) issues. */
#include "mcim/pki.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/pki_priv.h"
#include "mcim/util.h"

#define DEFAULT_DAYS 365
#define DAY_SECONDS 86400
/* Certificates start a little in the past: lab hosts' clocks are never exactly in step. */
#define BACKDATE_SECONDS 300

/* The public half only, through its DER encoding. OpenSSL's X509_set_pubkey() keeps a
 * reference to the EVP_PKEY it is given, so without this an in-memory certificate would carry
 * (and X509_get_pubkey() hand out) the subject's private key. */
static EVP_PKEY *public_copy(EVP_PKEY *key)
{
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(key, &der);
  const unsigned char *p = der;
  EVP_PKEY *pub = len > 0 ? d2i_PUBKEY(NULL, &p, len) : NULL;
  OPENSSL_free(der);
  return pub;
}

/* A version 3 certificate with a random 127-bit serial, the validity, subject and key. */
static mcim_cause_t cert_new(const char *cn, EVP_PKEY *key, int64_t nb, int64_t na, X509 **out)
{
  X509 *x = X509_new();
  BIGNUM *serial = BN_new();
  EVP_PKEY *pub = public_copy(key);
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  X509_NAME *subject = x ? X509_get_subject_name(x) : NULL;

  if (!x || !serial || !pub || X509_set_version(x, X509_VERSION_3) != 1 ||
      BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ODD) != 1 || /* odd: never 0 */
      !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
      !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
      !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) ||
      X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, (const unsigned char *)"mcim lab", -1,
                                 -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                 0) != 1 ||
      X509_set_pubkey(x, pub) != 1)
    goto cleanup;
  *out = x;
  x = NULL;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(pub);
  BN_free(serial);
  X509_free(x);
  return rc;
}

/* One extension in openssl.cnf syntax; `issuer` provides the authority key id. */
static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  bool ok = ext && X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* Key identifiers, then the signature by the issuer's key. */
static mcim_cause_t finish(X509 *x, X509 *issuer, EVP_PKEY *issuer_key)
{
  if (!add_ext(x, issuer, NID_subject_key_identifier, "hash") ||
      !add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") ||
      X509_sign(x, issuer_key, EVP_sha256()) <= 0)
    return MCIM_CRYPTO_ERROR;
  return MCIM_OK;
}

void mcim_pki_ca_free(mcim_pki_ca_t *ca)
{
  if (!ca)
    return;
  EVP_PKEY_free(ca->key);
  X509_free(ca->cert);
  free(ca);
}

mcim_cause_t mcim_pki_ca_create(const char *name, int days, mcim_pki_ca_t **out)
{
  mcim_pki_ca_t *ca = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!name || !name[0] || strlen(name) > 64 || !out || days < 0)
    return MCIM_INVALID_ARGUMENT;
  rc = MCIM_NO_MEMORY;
  ca = calloc(1, sizeof(*ca));
  if (!ca)
    goto cleanup;
  int64_t nb = mcim_now() - BACKDATE_SECONDS;
  int64_t na = nb + (int64_t)(days ? days : DEFAULT_DAYS) * DAY_SECONDS;
  if ((rc = mcim_pki_key_generate(&ca->key)) != MCIM_OK ||
      (rc = cert_new(name, ca->key, nb, na, &ca->cert)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  /* Self-signed: issuer name = subject name. pathlen 0: it issues leaves only. */
  if (X509_set_issuer_name(ca->cert, X509_get_subject_name(ca->cert)) != 1 ||
      !add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign"))
    goto cleanup;
  rc = finish(ca->cert, ca->cert, ca->key);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = ca;
  ca = NULL;
cleanup:
  mcim_pki_ca_free(ca);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_ca_load(const char *cert_path, const char *key_path, mcim_pki_ca_t **out)
{
  if (!cert_path || !key_path || !out)
    return MCIM_INVALID_ARGUMENT;
  mcim_pki_ca_t *ca = calloc(1, sizeof(*ca));
  if (!ca)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_pki_cert_load(cert_path, &ca->cert);
  if (rc != MCIM_OK || (rc = mcim_pki_key_load(key_path, &ca->key)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (X509_check_ca(ca->cert) < 1 || X509_check_private_key(ca->cert, ca->key) != 1)
    goto cleanup;
  *out = ca;
  ca = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_pki_ca_free(ca);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_ca_write(const mcim_pki_ca_t *ca, const char *cert_path, const char *key_path)
{
  if (!ca || !cert_path || !key_path)
    return MCIM_INVALID_ARGUMENT;
  /* Key first: a certificate on disk always has its key next to it. */
  mcim_cause_t rc = mcim_pki_key_write(key_path, ca->key);
  return rc == MCIM_OK ? mcim_pki_cert_write(cert_path, ca->cert) : rc;
}

/* A non-critical extension `oid_txt` whose value is the DER `der` (`len` bytes; none if `len`
 * is not positive). */
static bool add_der_ext(X509 *x, const char *oid_txt, const unsigned char *der, int len)
{
  ASN1_OBJECT *oid = OBJ_txt2obj(oid_txt, 1);
  ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
  X509_EXTENSION *ext = NULL;
  bool ok = oid && value && len > 0 && ASN1_OCTET_STRING_set(value, der, len) == 1 &&
            (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value)) != NULL &&
            X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(value);
  ASN1_OBJECT_free(oid);
  return ok;
}

/* The TPM storage key as MCIM_OID_TPM_STORAGE (non-critical: a verifier that does not know
 * it still accepts the certificate, it just cannot wrap keys for the TPM). */
static bool add_key_ext(X509 *x, const char *oid_txt, EVP_PKEY *key)
{
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(key, &der);
  bool ok = add_der_ext(x, oid_txt, der, len);
  OPENSSL_free(der);
  return ok;
}

/* MCIM_OID_DEVICE_MODEL, its value the model as a DER UTF8String. */
static bool add_model(X509 *x, const char *model)
{
  ASN1_UTF8STRING *s = ASN1_UTF8STRING_new();
  unsigned char *der = NULL;
  int len = s && ASN1_STRING_set(s, model, -1) == 1 ? i2d_ASN1_UTF8STRING(s, &der) : 0;
  bool ok = add_der_ext(x, MCIM_OID_DEVICE_MODEL, der, len);
  OPENSSL_free(der);
  ASN1_UTF8STRING_free(s);
  return ok;
}

/* The data of the one extension `oid_txt` of `cert`: MCIM_NOT_FOUND without one,
 * MCIM_KEY_INVALID with two or an empty one. */
static mcim_cause_t ext_data(X509 *cert, const char *oid_txt, const unsigned char **p, long *len)
{
  ASN1_OBJECT *oid = OBJ_txt2obj(oid_txt, 1);
  mcim_cause_t rc = MCIM_NO_MEMORY;
  int i = oid ? X509_get_ext_by_OBJ(cert, oid, -1) : -1;
  if (!oid)
    goto cleanup;
  rc = MCIM_NOT_FOUND;
  if (i < 0)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (X509_get_ext_by_OBJ(cert, oid, i) >= 0)
    goto cleanup;
  X509_EXTENSION *ext = X509_get_ext(cert, i);
  ASN1_OCTET_STRING *value = ext ? X509_EXTENSION_get_data(ext) : NULL;
  *p = value ? ASN1_STRING_get0_data(value) : NULL;
  *len = value ? ASN1_STRING_length(value) : 0;
  if (*p && *len > 0)
    rc = MCIM_OK;
cleanup:
  ASN1_OBJECT_free(oid);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_model(X509 *cert, char *out, size_t out_len)
{
  const unsigned char *p = NULL;
  long len = 0;
  if (!cert || !out || out_len == 0)
    return MCIM_INVALID_ARGUMENT;
  out[0] = '\0';
  mcim_cause_t rc = ext_data(cert, MCIM_OID_DEVICE_MODEL, &p, &len);
  if (rc != MCIM_OK)
    return rc;
  const unsigned char *end = p + len;
  ASN1_UTF8STRING *s = d2i_ASN1_UTF8STRING(NULL, &p, len);
  int n = s ? ASN1_STRING_length(s) : 0;
  rc = MCIM_KEY_INVALID;
  if (s && p == end && n > 0 && (size_t)n < out_len) {
    memcpy(out, ASN1_STRING_get0_data(s), (size_t)n);
    out[n] = '\0';
    rc = mcim_pki_name_valid(out) ? MCIM_OK : MCIM_KEY_INVALID;
  }
  if (rc != MCIM_OK)
    out[0] = '\0';
  ASN1_UTF8STRING_free(s);
  ERR_clear_error();
  return rc;
}

/* MCIM_OID_TPM_ATTESTATION, its value an ASN.1 NULL (05 00). */
static bool add_tpm_attestation(X509 *x)
{
  static const unsigned char null_der[] = {0x05, 0x00};
  ASN1_OBJECT *oid = OBJ_txt2obj(MCIM_OID_TPM_ATTESTATION, 1);
  ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
  X509_EXTENSION *ext = NULL;
  bool ok = oid && value && ASN1_OCTET_STRING_set(value, null_der, sizeof(null_der)) == 1 &&
            (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value)) != NULL &&
            X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(value);
  ASN1_OBJECT_free(oid);
  return ok;
}

bool mcim_pki_cert_tpm_attestation(X509 *cert)
{
  ASN1_OBJECT *oid = cert ? OBJ_txt2obj(MCIM_OID_TPM_ATTESTATION, 1) : NULL;
  bool found = oid && X509_get_ext_by_OBJ(cert, oid, -1) >= 0;
  ASN1_OBJECT_free(oid);
  ERR_clear_error();
  return found;
}

/* The P-256 public key in the one extension `oid_txt` of `cert`. */
static mcim_cause_t cert_key_ext(X509 *cert, const char *oid_txt, EVP_PKEY **out)
{
  EVP_PKEY *key = NULL;
  const unsigned char *p = NULL;
  long len = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!cert || !out)
    return rc;
  *out = NULL;
  /* one such extension, holding exactly one P-256 public key */
  rc = ext_data(cert, oid_txt, &p, &len);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  const unsigned char *end = p + len;
  key = d2i_PUBKEY(NULL, &p, len);
  if (!key || p != end || !mcim_pki_key_is_p256(key))
    goto cleanup;
  *out = key;
  key = NULL;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(key);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_tpm_storage_key(X509 *cert, EVP_PKEY **out)
{
  return cert_key_ext(cert, MCIM_OID_TPM_STORAGE, out);
}

mcim_cause_t mcim_pki_cert_tpm_ak(X509 *cert, EVP_PKEY **out)
{
  return cert_key_ext(cert, MCIM_OID_TPM_AK, out);
}

mcim_cause_t mcim_pki_issue(const mcim_pki_ca_t *ca, const mcim_cert_request_t *req, X509 **out)
{
  X509 *x = NULL;
  char san[128];

  if (!ca || !ca->key || !ca->cert || !req || !out || !mcim_pki_name_valid(req->name) ||
      !pki_usage_valid(req->usage) || !mcim_pki_key_is_p256(req->key) || req->days < 0 ||
      (req->tpm_storage &&
       (req->usage != MCIM_CERT_TRE_KEY_AGREEMENT || !mcim_pki_key_is_p256(req->tpm_storage))) ||
      (req->tpm_attestation && req->usage != MCIM_CERT_TRE_ATTESTATION) ||
      (req->tpm_ak &&
       (req->usage != MCIM_CERT_TRE_ATTESTATION || !mcim_pki_key_is_p256(req->tpm_ak))) ||
      (req->model && (req->usage != MCIM_CERT_TRE_ATTESTATION || !mcim_pki_name_valid(req->model))))
    return MCIM_INVALID_ARGUMENT;
  int64_t nb = req->not_before ? req->not_before : mcim_now() - BACKDATE_SECONDS;
  int64_t na = req->not_after ? req->not_after
                              : nb + (int64_t)(req->days ? req->days : DEFAULT_DAYS) * DAY_SECONDS;
  if (na <= nb)
    return MCIM_INVALID_ARGUMENT;

  mcim_cause_t rc = cert_new(req->name, req->key, nb, na, &x);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  if (X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
      !add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE"))
    goto cleanup;
  bool ok = false;
  switch (req->usage) {
  case MCIM_CERT_TLS:
    snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,DNS:%s", req->name);
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") &&
         add_ext(x, ca->cert, NID_subject_alt_name, san);
    break;
  case MCIM_CERT_TLS_CLIENT:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "clientAuth");
    break;
  case MCIM_CERT_TRE_ATTESTATION:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         (!req->tpm_attestation || add_tpm_attestation(x)) &&
         (!req->tpm_ak || add_key_ext(x, MCIM_OID_TPM_AK, req->tpm_ak)) &&
         (!req->model || add_model(x, req->model));
    break;
  case MCIM_CERT_TRE_KEY_AGREEMENT:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,keyAgreement") &&
         (!req->tpm_storage || add_key_ext(x, MCIM_OID_TPM_STORAGE, req->tpm_storage));
    break;
  }
  if (!ok)
    goto cleanup;
  rc = finish(x, ca->cert, ca->key);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = x;
  x = NULL;
cleanup:
  X509_free(x);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}
