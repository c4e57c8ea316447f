/* An AES-128 key inside the TPM (tpm.h): TPM2_Import of a duplication blob, TPM2_Load, and
 * AES-128-ECB encryption with TPM2_EncryptDecrypt2, offered to Milenage as its E_K. K is
 * never in this process: the blob that comes in is wrapped to the storage key, the blob that
 * is kept (TPM2_Import's outPrivate) is wrapped by the TPM, and the cipher only sends blocks
 * in and gets blocks back. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"
#include "tre/tpm/tpm_slot.h"

struct mcim_tpm_aes {
  mcim_tpm_t *tpm; /* borrowed */
  ESYS_TR handle;
};

mcim_cause_t mcim_tpm_aes_import(mcim_tpm_t *t, const struct mcim_tpm_dup *dup,
                                 struct mcim_tpm_blob *out)
{
  const TPM2B_DATA no_inner_key = {0};
  const TPMT_SYM_DEF_OBJECT no_inner = {.algorithm = TPM2_ALG_NULL};
  TPM2B_PRIVATE *priv = NULL;
  ESYS_TR parent = ESYS_TR_NONE;
  mcim_cause_t rc;
  TSS2_RC r;

  if (!t || !dup || !out)
    return MCIM_INVALID_ARGUMENT;
  memset(out, 0, sizeof(*out));
  rc = mcim_tpm_primary(t, &parent, NULL);
  if (rc != MCIM_OK)
    goto cleanup;
  r = Esys_Import(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &no_inner_key,
                  &dup->pub, &dup->dup, &dup->seed, &no_inner, &priv);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Import", r);
    goto cleanup;
  }
  out->pub = dup->pub;
  out->priv = *priv;
  rc = MCIM_OK;
cleanup:
  if (priv)
    OPENSSL_cleanse(priv, sizeof(*priv));
  Esys_Free(priv);
  return rc;
}

mcim_cause_t mcim_tpm_aes_load(mcim_tpm_t *t, const struct mcim_tpm_blob *blob,
                               mcim_tpm_aes_t **out)
{
  mcim_tpm_aes_t *k = NULL;
  mcim_cause_t rc;

  if (!out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (!t || !blob)
    return MCIM_INVALID_ARGUMENT;
  rc = MCIM_NO_MEMORY;
  k = calloc(1, sizeof(*k));
  if (!k)
    goto cleanup;
  k->tpm = t;
  rc = mcim_tpm_load(t, blob, "TPM2_Load (AES key)", &k->handle);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = k;
  k = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_tpm_aes_free(k);
  return rc;
}

mcim_cause_t mcim_tpm_aes_adopt(mcim_tpm_t *t, ESYS_TR handle, mcim_tpm_aes_t **out)
{
  mcim_tpm_aes_t *k = calloc(1, sizeof(*k));
  if (!k) {
    (void)Esys_FlushContext(t->esys, handle);
    return MCIM_NO_MEMORY;
  }
  k->tpm = t;
  k->handle = handle;
  *out = k;
  return MCIM_OK;
}

void mcim_tpm_aes_free(mcim_tpm_aes_t *k)
{
  if (!k)
    return;
  if (k->handle != ESYS_TR_NONE)
    (void)Esys_FlushContext(k->tpm->esys, k->handle);
  free(k);
}

mcim_cause_t mcim_tpm_aes_encrypt(mcim_tpm_aes_t *k, const uint8_t *in, uint8_t *out, size_t len)
{
  TPM2B_MAX_BUFFER data = {0};
  const TPM2B_IV no_iv = {0}; /* ECB: the TPM wants none */
  TPM2B_MAX_BUFFER *res = NULL;
  TPM2B_IV *iv_out = NULL;
  mcim_cause_t rc;
  TSS2_RC r;

  if (!k || !in || !out || len == 0 || len % 16 || len > sizeof(data.buffer))
    return MCIM_INVALID_ARGUMENT;
  data.size = (UINT16)len;
  memcpy(data.buffer, in, len);
  r = Esys_EncryptDecrypt2(k->tpm->esys, k->handle, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &data, TPM2_NO, TPM2_ALG_ECB, &no_iv, &res, &iv_out);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(k->tpm, "TPM2_EncryptDecrypt2", r);
    goto cleanup;
  }
  if (res->size != len) {
    rc = mcim_tpm_failf(k->tpm, MCIM_TPM_ERROR, "TPM2_EncryptDecrypt2: %u bytes back for %zu",
                        (unsigned)res->size, len);
    goto cleanup;
  }
  memcpy(out, res->buffer, len);
  rc = MCIM_OK;
cleanup:
  /* Milenage's inputs and outputs (RES, CK, IK) are key material of their own. */
  OPENSSL_cleanse(&data, sizeof(data));
  if (res)
    OPENSSL_cleanse(res, sizeof(*res));
  Esys_Free(res);
  Esys_Free(iv_out);
  return rc;
}

static mcim_cause_t cipher_encrypt(void *ctx, const uint8_t *in, uint8_t *out, size_t len)
{
  return mcim_tpm_aes_encrypt(ctx, in, out, len);
}

static const struct mcim_milenage_cipher_ops tpm_cipher_ops = {.encrypt = cipher_encrypt};

mcim_milenage_cipher_t mcim_tpm_aes_cipher(mcim_tpm_aes_t *k)
{
  mcim_milenage_cipher_t c = {&tpm_cipher_ops, k};
  return c;
}

ESYS_TR mcim_tpm_aes_handle(const mcim_tpm_aes_t *k)
{
  return k ? k->handle : ESYS_TR_NONE;
}
