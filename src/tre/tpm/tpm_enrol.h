/* Enrolment of a TPM at the M2MES (issue 11 point 2; docs/tre-tpm.md, "Enrolment"): what the
 * device's TPM does (the endorsement key's certificate, TPM2_ActivateCredential,
 * TPM2_Certify) and what the M2MES checks on the host, with OpenSSL and no TPM
 * (TPM2_MakeCredential in software, the EK certificate's chain, the attestation key's
 * attributes, the certifications). tpm_enrol.c. */
#ifndef MCIM_TRE_TPM_ENROL_H
#define MCIM_TRE_TPM_ENROL_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "tre/tpm/tpm.h"

/* TCG EK Credential Profile 2.0: the RSA 2048 EK of the default template (L-1) at its
 * persistent handle, and its certificate's NV index. */
#define MCIM_TPM_EK_HANDLE UINT32_C(0x81010001)
#define MCIM_TPM_EK_CERT_NV UINT32_C(0x01c00002)
/* The ECC NIST P-384 EK of the high range (what swtpm_setup 0.7.1 makes beside the RSA one). */
#define MCIM_TPM_EK_P384_HANDLE UINT32_C(0x81010016)
#define MCIM_TPM_EK_P384_CERT_NV UINT32_C(0x01c00016)
#define MCIM_TPM_CREDENTIAL_LEN 32 /* the secret the M2MES sends through MakeCredential */

/* ---- the device's side (a TPM) ---- */
/* The RSA EK certificate (DER) from NV 0x01c00002 (or the one at `nv_index`): free() *der. */
mcim_cause_t mcim_tpm_ek_cert(mcim_tpm_t *t, uint8_t **der, size_t *len);
mcim_cause_t mcim_tpm_ek_cert_at(mcim_tpm_t *t, uint32_t nv_index, uint8_t **der, size_t *len);
/* TPM2_ActivateCredential: the EK at MCIM_TPM_EK_HANDLE (its USER role through a policy
 * session of PolicySecret(TPM_RH_ENDORSEMENT), as its template's authPolicy says) decrypts the
 * seed, and the TPM releases the secret only if `ak`, loaded, has the name the credential was
 * made for. `secret` is what came back (at most 64 bytes, *secret_len its size). */
mcim_cause_t mcim_tpm_activate_credential(mcim_tpm_t *t, mcim_tpm_key_t *ak,
                                          const TPM2B_ID_OBJECT *blob,
                                          const TPM2B_ENCRYPTED_SECRET *enc, uint8_t *secret,
                                          size_t *secret_len);
/* The same with the EK at `ek_handle` (an ECC EK: MCIM_TPM_EK_P384_HANDLE); its USER role by
 * the policy above, or by its empty authValue where its template has userWithAuth. */
mcim_cause_t mcim_tpm_activate_credential_ek(mcim_tpm_t *t, uint32_t ek_handle, mcim_tpm_key_t *ak,
                                             const TPM2B_ID_OBJECT *blob,
                                             const TPM2B_ENCRYPTED_SECRET *enc, uint8_t *secret,
                                             size_t *secret_len);
/* TPM2_Certify of the loaded object `obj` by the attestation key `ak`, with `qual` (at most
 * 64 bytes) as qualifying data: the marshalled TPMS_ATTEST and TPMT_SIGNATURE, free() both. */
mcim_cause_t mcim_tpm_certify(mcim_tpm_t *t, mcim_tpm_key_t *ak, ESYS_TR obj, const uint8_t *qual,
                              size_t qual_len, uint8_t **attest, size_t *attest_len, uint8_t **sig,
                              size_t *sig_len);

/* ---- the M2MES's side (host, OpenSSL; tpm2-tss's marshalling only) ---- */
/* The EK certificate (DER) verified against the PEM bundle at `vendor_ca` (the TPM vendors'
 * root and intermediate certificates: every self-signed one is an anchor): its chain, its
 * dates, and its key an RSA 2048, ECC P-256 or ECC P-384 key (the EKs of the TCG default
 * templates this M2MES enrols). *ek is that key.
 * MCIM_TPM_EK_UNTRUSTED (with `err`) for anything else. */
mcim_cause_t mcim_tpm_ek_verify(const uint8_t *der, size_t len, const char *vendor_ca,
                                EVP_PKEY **ek, char *err, size_t errlen);
/* The attestation key's public area (what the device sent) checked as an attestation key
 * must be: ECC P-256, ECDSA-SHA256, sign, restricted, fixedTPM, fixedParent,
 * sensitiveDataOrigin, not decrypt; MCIM_TPM_KEY_ATTRIBUTES (with `err`) otherwise. */
mcim_cause_t mcim_tpm_ak_check(const TPM2B_PUBLIC *ak, char *err, size_t errlen);
/* TPM2_MakeCredential in software (TPM 2.0 Part 1, "Credential Protection"; Part 3,
 * TPM2_MakeCredential) for the EK `ek` of a default template (RSA 2048 and ECC P-256: nameAlg
 * SHA-256, AES-128-CFB; ECC P-384: SHA-384, AES-256-CFB): the seed RSA-OAEP(label "IDENTITY")
 * encrypted to an RSA EK, or KDFe("IDENTITY") of an ECDH with an ephemeral key for an ECC EK,
 * and `secret` (at most the nameAlg's size) wrapped under keys derived from the seed and
 * `ak_name` (KDFa "STORAGE" and "INTEGRITY"). MCIM_UNSUPPORTED for another EK. */
mcim_cause_t mcim_tpm_make_credential(EVP_PKEY *ek, const TPM2B_NAME *ak_name,
                                      const uint8_t *secret, size_t secret_len,
                                      TPM2B_ID_OBJECT *blob, TPM2B_ENCRYPTED_SECRET *enc);
/* A TPM2_Certify of `obj` (its public area as the device sent it) by the attestation key `ak`
 * (already checked): the signature verifies with `ak` over exactly `attest`, which is a
 * TPM-generated TPM_ST_ATTEST_CERTIFY whose certified name is that of `obj` and whose
 * qualifying data is `qual`; and `obj` is fixedTPM, fixedParent and sensitiveDataOrigin (the
 * TPM made it and it cannot leave). MCIM_TPM_CERTIFY_INVALID or MCIM_TPM_KEY_ATTRIBUTES, with
 * `err`. */
mcim_cause_t mcim_tpm_certify_check(const TPM2B_PUBLIC *ak, const TPM2B_PUBLIC *obj,
                                    const uint8_t *qual, size_t qual_len, const uint8_t *attest,
                                    size_t attest_len, const uint8_t *sig, size_t sig_len,
                                    char *err, size_t errlen);
/* The P-256 public key of an ECC public area (EVP_PKEY_free() it). */
mcim_cause_t mcim_tpm_public_pkey(const TPM2B_PUBLIC *pub, EVP_PKEY **out);
/* Base64url of a marshalled TPM2B_PUBLIC and back (exactly one, nothing left over). */
mcim_cause_t mcim_tpm_public_encode(const TPM2B_PUBLIC *pub, char **b64);
mcim_cause_t mcim_tpm_public_decode(const char *b64, TPM2B_PUBLIC *out);

#endif
