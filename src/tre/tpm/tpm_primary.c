/* The storage primary key (tpm.h), and names of public areas. */
#include <openssl/evp.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_priv.h"

/* The storage key template of the TCG "TPM v2.0 Provisioning Guidance" (ECC NIST P-256 SRK):
 * restricted decrypt, AES-128-CFB for its children, the unique field empty. Nothing in it is
 * random, so the TPM derives the same key from the owner hierarchy's seed every time. */
static const TPM2B_PUBLIC primary_template = {
    .publicArea =
        {
            .type = TPM2_ALG_ECC,
            .nameAlg = TPM2_ALG_SHA256,
            .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
            .parameters.eccDetail =
                {
                    .symmetric = {.algorithm = TPM2_ALG_AES,
                                  .keyBits.aes = 128,
                                  .mode.aes = TPM2_ALG_CFB},
                    .scheme = {.scheme = TPM2_ALG_NULL},
                    .curveID = TPM2_ECC_NIST_P256,
                    .kdf = {.scheme = TPM2_ALG_NULL},
                },
        },
};

mcim_cause_t mcim_tpm_primary(mcim_tpm_t *t, ESYS_TR *handle, const TPM2B_PUBLIC **pub)
{
  const TPM2B_SENSITIVE_CREATE no_auth = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  TSS2_RC r;

  if (!t)
    return MCIM_INVALID_ARGUMENT;
  if (t->primary == ESYS_TR_NONE) {
    r = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &no_auth, &primary_template, &no_outside, &no_pcrs, &t->primary,
                           &t->primary_pub, NULL, NULL, NULL);
    if (r != TSS2_RC_SUCCESS) {
      t->primary = ESYS_TR_NONE;
      return mcim_tpm_fail(t, "TPM2_CreatePrimary (storage key)", r);
    }
  }
  if (handle)
    *handle = t->primary;
  if (pub)
    *pub = t->primary_pub;
  return MCIM_OK;
}

mcim_cause_t mcim_tpm_public_name(const TPM2B_PUBLIC *pub, TPM2B_NAME *name)
{
  uint8_t buf[sizeof(TPMT_PUBLIC)];
  size_t len = 0;
  unsigned int dlen = 0;

  if (!pub || !name)
    return MCIM_INVALID_ARGUMENT;
  if (pub->publicArea.nameAlg != TPM2_ALG_SHA256)
    return MCIM_UNSUPPORTED;
  if (Tss2_MU_TPMT_PUBLIC_Marshal(&pub->publicArea, buf, sizeof(buf), &len) != TSS2_RC_SUCCESS)
    return MCIM_INVALID_ARGUMENT;
  /* nameAlg (big-endian) || SHA-256(TPMT_PUBLIC) */
  name->name[0] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
  name->name[1] = (uint8_t)(TPM2_ALG_SHA256 & 0xff);
  if (EVP_Digest(buf, len, name->name + 2, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
    return MCIM_CRYPTO_ERROR;
  name->size = (UINT16)(2 + dlen);
  return MCIM_OK;
}
