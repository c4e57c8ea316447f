/* The lab PKI on the OpenSSL 3 X509 API: P-256 keys, two CAs (the operators' CA for TLS
 * between network roles, the M2MES CA for device TRE certificates), certificates issued for
 * a name and a usage, PEM files (keys written 0600, atomically), verification against a CA.
 * See docs/jose-pki.md for the layout of a lab PKI folder. */
#ifndef MCIM_PKI_H
#define MCIM_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mcim/cause.h"

/* What a certificate is for; decides keyUsage, extendedKeyUsage and subjectAltName. */
typedef enum mcim_cert_usage {
  MCIM_CERT_TLS = 0,           /* network role: TLS server and client (mTLS), signs statements;
                                  SAN DNS:localhost, IP:127.0.0.1, DNS:<name> */
  MCIM_CERT_TLS_CLIENT,        /* TLS client only (the lab's `admin`) */
  MCIM_CERT_TRE_ATTESTATION,   /* device TRE signing key (quotes, statements); M2MES CA */
  MCIM_CERT_TRE_KEY_AGREEMENT, /* device TRE key-agreement key (sealed packages); M2MES CA */
} mcim_cert_usage_t;

/* "tls", "tls-client", "tre-attestation", "tre-ka"; -1 if unknown. */
int mcim_cert_usage_from_name(const char *name);
const char *mcim_cert_usage_name(mcim_cert_usage_t usage);

/* A name usable as a certificate CN, a SAN DNS label and a folder name: 1-63 characters of
 * [A-Za-z0-9._-], starting with a letter or digit. */
bool mcim_pki_name_valid(const char *name);

/* ---- keys --------------------------------------------------------------------------- */

/* A fresh P-256 key pair. */
mcim_cause_t mcim_pki_key_generate(EVP_PKEY **out);
/* True if `key` is an EC key on P-256. */
bool mcim_pki_key_is_p256(const EVP_PKEY *key);
/* Private key as PKCS#8 PEM, mode 0600, atomically (temporary file, fsync, rename). */
mcim_cause_t mcim_pki_key_write(const char *path, EVP_PKEY *key);
/* Load a PEM private key (P-256 only, else MCIM_KEY_INVALID). Warns if group/others can read. */
mcim_cause_t mcim_pki_key_load(const char *path, EVP_PKEY **out);
/* The same from a BIO holding the PEM (a secure-memory BIO for a key held in memory). */
mcim_cause_t mcim_pki_key_read_bio(BIO *bio, EVP_PKEY **out);

/* ---- certificates ------------------------------------------------------------------- */

/* Certificate as PEM, mode 0644, atomically. */
mcim_cause_t mcim_pki_cert_write(const char *path, X509 *cert);
mcim_cause_t mcim_pki_cert_load(const char *path, X509 **out);
/* From/to PEM in memory (certificates travel in messages, e.g. the DRF answer). */
mcim_cause_t mcim_pki_cert_from_pem(const char *pem, size_t len, X509 **out);
mcim_cause_t mcim_pki_cert_to_pem(X509 *cert, char **out); /* free() */
/* The subject CN (the role or device name); free(). */
mcim_cause_t mcim_pki_cert_name(X509 *cert, char **out);

/* Verify `cert` against the trust anchor `ca`: signature chain, validity at `now` (0: wall
 * clock; MCIM_CERT_EXPIRED when past notAfter), and the usage's keyUsage / extendedKeyUsage;
 * if `name` is given, the subject CN must equal it. Any other failure: MCIM_CERT_INVALID.
 * A positive answer is remembered for the same certificate, CA, usage and name while both are
 * valid (src/crypto/pki_verdict.c): checked again, it costs two SHA-256, not a chain check. */
mcim_cause_t mcim_pki_cert_verify(X509 *cert, X509 *ca, mcim_cert_usage_t usage,
                                  const char *name, int64_t now);
/* Forget the kept verdicts (tests, benchmarks). */
void mcim_pki_verdicts_clear(void);
/* Verify as above, then return the certificate's public key (EVP_PKEY_free() it). */
mcim_cause_t mcim_pki_cert_public_key(X509 *cert, X509 *ca, mcim_cert_usage_t usage,
                                      const char *name, int64_t now, EVP_PKEY **out);

/* ---- certificate authorities -------------------------------------------------------- */

typedef struct mcim_pki_ca {
  EVP_PKEY *key;
  X509 *cert;
} mcim_pki_ca_t;

/* A self-signed P-256 CA (CN = `name`, basicConstraints CA:TRUE pathlen:0), valid `days`. */
mcim_cause_t mcim_pki_ca_create(const char *name, int days, mcim_pki_ca_t **out);
mcim_cause_t mcim_pki_ca_load(const char *cert_path, const char *key_path, mcim_pki_ca_t **out);
mcim_cause_t mcim_pki_ca_write(const mcim_pki_ca_t *ca, const char *cert_path,
                               const char *key_path);
void mcim_pki_ca_free(mcim_pki_ca_t *ca);

/* One certificate to issue. */
typedef struct mcim_cert_request {
  const char *name;        /* subject CN (mcim_pki_name_valid) */
  mcim_cert_usage_t usage;
  EVP_PKEY *key;           /* the subject's key (only its public part is used) */
  int64_t not_before;      /* 0: now minus 5 minutes (small clock differences in a lab) */
  int64_t not_after;       /* 0: not_before + days */
  int days;                /* used when not_after is 0; 0: 365 */
  /* MCIM_CERT_TRE_KEY_AGREEMENT only, may be NULL: the public key of the TPM storage key
   * (P-256) the device's TRE imports keys under, certified in the same certificate
   * (MCIM_OID_TPM_STORAGE) so that an SHO can wrap K for that TPM (docs/tre-tpm.md). */
  EVP_PKEY *tpm_storage;
  /* MCIM_CERT_TRE_ATTESTATION only: the key is in the device's TPM (the factory enrolled
   * the device with a TPM storage key), so the PVA takes no validation of this device
   * without a TPM quote (MCIM_OID_TPM_ATTESTATION; docs/roles-pva-m2mes.md). */
  bool tpm_attestation;
  /* MCIM_CERT_TRE_ATTESTATION only, may be NULL: the TPM's restricted attestation key that
   * signs the device's quotes, enrolled by the M2MES (MCIM_OID_TPM_AK; docs/tre-tpm.md,
   * "Enrolment"), and the device's model (MCIM_OID_DEVICE_MODEL), which the PVA then takes
   * from the certificate rather than from the device's word. */
  EVP_PKEY *tpm_ak;
  const char *model;
} mcim_cert_request_t;

/* The extension of a TRE key-agreement certificate that carries the public key of the
 * device's TPM storage key (the parent K is imported under): non-critical, its value the
 * DER SubjectPublicKeyInfo of a P-256 key. The arc is IANA's enterprise number for
 * documentation (32473, RFC 5612): a lab's private extension, not a registered one. */
#define MCIM_OID_TPM_STORAGE "1.3.6.1.4.1.32473.11.1"

/* The marker of a TRE attestation certificate whose key is in a TPM: non-critical, its value
 * an ASN.1 NULL (same arc as MCIM_OID_TPM_STORAGE). */
#define MCIM_OID_TPM_ATTESTATION "1.3.6.1.4.1.32473.11.2"

mcim_cause_t mcim_pki_issue(const mcim_pki_ca_t *ca, const mcim_cert_request_t *req, X509 **out);
/* The enrolled TPM attestation key (quotes): non-critical, its value a SubjectPublicKeyInfo
 * (DER) as MCIM_OID_TPM_STORAGE's. */
#define MCIM_OID_TPM_AK "1.3.6.1.4.1.32473.11.3"
/* The device's model as the M2MES certified it: non-critical, a DER UTF8String. */
#define MCIM_OID_DEVICE_MODEL "1.3.6.1.4.1.32473.11.4"
/* The AK of a (verified) TRE attestation certificate (EVP_PKEY_free() it): MCIM_NOT_FOUND
 * without one (not enrolled), MCIM_KEY_INVALID if it is not exactly one P-256 key. */
mcim_cause_t mcim_pki_cert_tpm_ak(X509 *cert, EVP_PKEY **out);
/* The certified model of a (verified) TRE attestation certificate into `out`: MCIM_NOT_FOUND
 * without one, MCIM_KEY_INVALID if it is not one name (mcim_pki_name_valid) that fits. */
mcim_cause_t mcim_pki_cert_model(X509 *cert, char *out, size_t out_len);
/* Whether a (verified) certificate carries MCIM_OID_TPM_ATTESTATION. */
bool mcim_pki_cert_tpm_attestation(X509 *cert);
/* The TPM storage key a (verified) TRE key-agreement certificate certifies, from its
 * MCIM_OID_TPM_STORAGE extension (EVP_PKEY_free() it). MCIM_NOT_FOUND without one (a device
 * whose TRE has no TPM), MCIM_KEY_INVALID if it is not exactly one P-256 public key. */
mcim_cause_t mcim_pki_cert_tpm_storage_key(X509 *cert, EVP_PKEY **out);

/* ---- the lab PKI folder ------------------------------------------------------------- */

/* Relative paths inside a lab PKI folder. */
#define MCIM_PKI_OPERATORS_CA_CERT "ca/operators-ca.crt"
#define MCIM_PKI_OPERATORS_CA_KEY "ca/operators-ca.key"
#define MCIM_PKI_M2MES_CA_CERT "ca/m2mes-ca.crt"
#define MCIM_PKI_M2MES_CA_KEY "ca/m2mes-ca.key"
/* The lab's stand-in for a TPM vendor: the CA of its swtpms' endorsement key certificates,
 * which the M2MES trusts (`tpm_vendor_ca`; docs/tre-tpm.md, "Enrolment"). */
#define MCIM_PKI_TPM_VENDOR_CA_CERT "ca/tpm-vendor-ca.crt"
#define MCIM_PKI_TPM_VENDOR_CA_KEY "ca/tpm-vendor-ca.key"
/* <dir>/<role>/cert.pem and key.pem; `admin` is the lab's TLS client for admin paths. */
#define MCIM_PKI_ADMIN "admin"

/* Roles `mcim pki init` creates when none are given. */
extern const char *const mcim_pki_default_roles[];

/* Create `dir` (if needed) with both CAs, a TLS certificate per role (operators' CA) and the
 * admin client certificate. MCIM_CONFLICT if a PKI is already there and !force.
 * Roles must be valid names, distinct, and not "ca" or "admin". */
mcim_cause_t mcim_pki_lab_init(const char *dir, const char *const *roles, size_t nroles,
                               bool force, int days);
/* Load <dir>/<role>/{cert,key}.pem; either output may be NULL. */
mcim_cause_t mcim_pki_lab_load_role(const char *dir, const char *role, X509 **cert,
                                    EVP_PKEY **key);

typedef enum mcim_pki_lab_ca { MCIM_PKI_CA_OPERATORS = 0, MCIM_PKI_CA_M2MES } mcim_pki_lab_ca_t;
/* Load one of the lab's CAs (certificate and key), e.g. the M2MES CA at manufacture. */
mcim_cause_t mcim_pki_lab_load_ca(const char *dir, mcim_pki_lab_ca_t which, mcim_pki_ca_t **out);

#endif
