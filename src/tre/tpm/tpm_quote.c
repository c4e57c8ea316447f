/* PCRs and TPM2_Quote (tpm_quote.h): the TPM commands of the measured launch and of the
 * evidence the PVA checks. */
#include <stdlib.h>
#include <string.h>

#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"
#include "tre/tpm/tpm_quote.h"

#define PCR_MAX 23

mcim_cause_t mcim_tpm_pcr_reset(mcim_tpm_t *t, unsigned pcr)
{
  if (!t || pcr > PCR_MAX)
    return MCIM_INVALID_ARGUMENT;
  TSS2_RC r = Esys_PCR_Reset(t->esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE);
  return r == TSS2_RC_SUCCESS ? MCIM_OK : mcim_tpm_fail(t, "TPM2_PCR_Reset", r);
}

mcim_cause_t mcim_tpm_pcr_read(mcim_tpm_t *t, unsigned pcr, uint8_t out[32])
{
  TPML_PCR_SELECTION sel = {.count = 1};
  TPML_PCR_SELECTION *sel_out = NULL;
  TPML_DIGEST *values = NULL;
  UINT32 counter = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !out || pcr > PCR_MAX)
    goto cleanup;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  sel.pcrSelections[0].pcrSelect[pcr / 8] = (BYTE)(1u << (pcr % 8));
  TSS2_RC r = Esys_PCR_Read(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &sel, &counter,
                            &sel_out, &values);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_PCR_Read", r);
    goto cleanup;
  }
  rc = MCIM_TPM_ERROR;
  if (!values || values->count != 1 || values->digests[0].size != 32)
    goto cleanup;
  memcpy(out, values->digests[0].buffer, 32);
  rc = MCIM_OK;
cleanup:
  Esys_Free(sel_out);
  Esys_Free(values);
  return rc;
}

mcim_cause_t mcim_tpm_pcr_extend(mcim_tpm_t *t, unsigned pcr, const uint8_t digest[32])
{
  TPML_DIGEST_VALUES v = {.count = 1};

  if (!t || !digest || pcr > PCR_MAX)
    return MCIM_INVALID_ARGUMENT;
  /* the SHA-256 bank only: the one the quote selects (another bank keeps its reset value) */
  v.digests[0].hashAlg = TPM2_ALG_SHA256;
  memcpy(v.digests[0].digest.sha256, digest, 32);
  TSS2_RC r = Esys_PCR_Extend(t->esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &v);
  return r == TSS2_RC_SUCCESS ? MCIM_OK : mcim_tpm_fail(t, "TPM2_PCR_Extend", r);
}

mcim_cause_t mcim_tpm_attest_out(mcim_tpm_t *t, const TPM2B_ATTEST *a, const TPMT_SIGNATURE *s,
                                 const char *what, uint8_t **attest, size_t *attest_len,
                                 uint8_t **sig, size_t *sig_len)
{
  uint8_t buf[sizeof(TPMT_SIGNATURE)];
  size_t off = 0;
  TSS2_RC r = Tss2_MU_TPMT_SIGNATURE_Marshal(s, buf, sizeof(buf), &off);

  *attest = *sig = NULL;
  if (r != TSS2_RC_SUCCESS)
    return what ? mcim_tpm_fail(t, what, r) : MCIM_INTERNAL;
  *attest = malloc(a->size ? a->size : 1);
  *sig = malloc(off);
  if (!*attest || !*sig) {
    free(*attest);
    free(*sig);
    *attest = *sig = NULL;
    return MCIM_NO_MEMORY;
  }
  memcpy(*attest, a->attestationData, a->size);
  *attest_len = a->size;
  memcpy(*sig, buf, off);
  *sig_len = off;
  return MCIM_OK;
}

mcim_cause_t mcim_tpm_quote(mcim_tpm_t *t, mcim_tpm_key_t *key, unsigned pcr, const uint8_t *qual,
                            size_t qual_len, uint8_t **attest, size_t *attest_len, uint8_t **sig,
                            size_t *sig_len)
{
  TPM2B_DATA q = {.size = (UINT16)qual_len};
  const TPMT_SIG_SCHEME in_scheme = {.scheme = TPM2_ALG_NULL}; /* the key's: ECDSA-SHA256 */
  TPML_PCR_SELECTION sel = {.count = 1};
  TPM2B_ATTEST *quoted = NULL;
  TPMT_SIGNATURE *s = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (attest)
    *attest = NULL;
  if (sig)
    *sig = NULL;
  if (!t || !key || !qual || qual_len > sizeof(q.buffer) || pcr > PCR_MAX || !attest || !sig ||
      !attest_len || !sig_len)
    goto cleanup;
  memcpy(q.buffer, qual, qual_len);
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  sel.pcrSelections[0].pcrSelect[pcr / 8] = (BYTE)(1u << (pcr % 8));
  r = Esys_Quote(t->esys, mcim_tpm_key_handle(key), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                 &q, &in_scheme, &sel, &quoted, &s);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Quote", r);
    goto cleanup;
  }
  rc = mcim_tpm_attest_out(t, quoted, s, "marshalling the quote's signature", attest, attest_len,
                           sig, sig_len);
cleanup:
  if (rc != MCIM_OK && attest && sig) {
    free(*attest);
    free(*sig);
    *attest = *sig = NULL;
  }
  Esys_Free(quoted);
  Esys_Free(s);
  return rc;
}
