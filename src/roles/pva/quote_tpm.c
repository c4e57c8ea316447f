/* A TPM device's evidence at the PVA (seed step 10, change step 4; docs/roles-pva-m2mes.md,
 * "A TPM device's quote"): the TPM2_Quote over this validation's nonce, signed by the
 * device's certified attestation key, and the measurement log that replays to the quoted PCR
 * (include/mcim/attest.h checks both). What comes out is the log the RIMs are matched
 * against, in the form pva_match() takes, and its chain. */
#include <openssl/evp.h>
#include <string.h>

#include "mcim/attest.h"
#include "mcim/firmware.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/pva/pva.h"

bool pva_tpm_required(const char *tre_cert_pem)
{
  X509 *cert = NULL;
  bool required = tre_cert_pem &&
                  mcim_pki_cert_from_pem(tre_cert_pem, strlen(tre_cert_pem), &cert) == MCIM_OK &&
                  mcim_pki_cert_tpm_attestation(cert);
  X509_free(cert);
  return required;
}

mcim_cause_t pva_tpm_evidence(const mcim_jose_key_t *key, const char *tre_cert_pem,
                              const json_t *tpm, const char *nonce, json_t **log, char digest[65],
                              char model[64], char *err, size_t errlen)
{
  uint8_t n[64];
  size_t nlen = nonce ? strlen(nonce) / 2 : 0;
  EVP_PKEY *ak = NULL;
  X509 *cert = NULL;
  json_t *list = NULL;
  mcim_cause_t rc = MCIM_INTERNAL;

  *log = NULL;
  model[0] = '\0';
  /* our own nonce: 32 random bytes in hex, as the validation stored it */
  if (nlen == 0 || nlen > sizeof(n) || mcim_hex_decode(nonce, strlen(nonce), n, nlen) != MCIM_OK) {
    mcim_detailf(err, errlen, "the validation's nonce is not hex");
    goto cleanup;
  }
  /* The certificate was verified by the caller. A TPM device quotes with its restricted AK,
   * which the M2MES names in the certificate with the device's model and the TPM mark once
   * it enrolled the TPM; a certificate without them is a device that was never enrolled (or
   * a software TRE sending TPM evidence): refused. Without a certificate (tests, the fuzz
   * target), `key` is the AK. */
  if (tre_cert_pem) {
    rc = mcim_pki_cert_from_pem(tre_cert_pem, strlen(tre_cert_pem), &cert);
    if (rc == MCIM_OK && (rc = mcim_pki_cert_tpm_ak(cert, &ak)) != MCIM_OK &&
        rc != MCIM_NOT_FOUND) {
      mcim_detailf(err, errlen, "the attestation certificate's TPM attestation key is malformed");
      rc = MCIM_ATTEST_SIGNATURE;
      goto cleanup;
    }
    if (rc == MCIM_OK && mcim_pki_cert_model(cert, model, 64) != MCIM_OK)
      model[0] = '\0';
    if (rc != MCIM_OK || !ak || !model[0] || !mcim_pki_cert_tpm_attestation(cert)) {
      mcim_detailf(err, errlen,
                   "the attestation certificate names no enrolled TPM (its attestation key, "
                   "model and TPM mark): a TPM device is validated only once the M2MES enrolled "
                   "its TPM");
      rc = MCIM_TPM_ENROLMENT_REQUIRED;
      goto cleanup;
    }
  } else if ((rc = mcim_jose_key_public_pkey(key, &ak)) != MCIM_OK) {
    mcim_detailf(err, errlen, "the attestation key is not usable");
    goto cleanup;
  }
  if (!tpm) {
    mcim_detailf(err, errlen,
                 "the attestation certificate says its key is in a TPM: the quote must carry the "
                 "TPM's evidence (\"tpm\")");
    rc = MCIM_ATTEST_MISSING;
    goto cleanup;
  }
  rc = mcim_attest_verify(ak, tpm, n, nlen, &list, err, errlen);
  if (rc != MCIM_OK)
    goto cleanup;
  /* The chain pva_match() replays: the TPM's log, not the JWS's (which the agent wrote). */
  rc = mcim_firmware_log_digest(list, digest, err, errlen);
  if (rc != MCIM_OK) {
    rc = MCIM_ATTEST_LOG_MISMATCH;
    goto cleanup;
  }
  *log = list;
  list = NULL;
cleanup:
  json_decref(list);
  X509_free(cert);
  EVP_PKEY_free(ak);
  return rc;
}
