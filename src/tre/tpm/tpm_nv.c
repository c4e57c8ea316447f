/* The TRE's NV monotonic counter in the TPM (tpm_nv.h). The rule that uses it is in
 * tre_tpm_nv.c. */
#include <string.h>

#include "mcim/util.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_nv.h"
#include "tre/tpm/tpm_priv.h"

/* A counter (TPM_NT_COUNTER) incremented and read with its own authValue only; NO_DA: the
 * value is 32 random bytes, no dictionary to attack, and a wrong try must not lock the TPM
 * out for the TRE's other keys. */
#define NV_ATTRS                                                                                   \
  ((TPMA_NV)((TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT) | TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD |   \
             TPMA_NV_NO_DA))

static bool rc_is(TSS2_RC r, TSS2_RC want)
{
  return (r & 0xffffu & ~(TSS2_RC)TPM2_RC_N_MASK) == want;
}

static void set_auth(TPM2B_AUTH *a, const uint8_t auth[MCIM_TPM_NV_AUTH_LEN])
{
  memset(a, 0, sizeof(*a));
  a->size = MCIM_TPM_NV_AUTH_LEN;
  memcpy(a->buffer, auth, MCIM_TPM_NV_AUTH_LEN);
}

/* The index as an ESAPI object with its authValue set, checked against `name` when given (its
 * public area, so its type and attributes, is what the name hashes), else its name in *got. */
static mcim_cause_t index_open(mcim_tpm_t *t, TPM2_HANDLE index, const TPM2B_NAME *name,
                               const uint8_t auth[MCIM_TPM_NV_AUTH_LEN], ESYS_TR *tr,
                               TPM2B_NAME *got)
{
  TPM2B_NAME *n = NULL;
  TPM2B_AUTH a;
  mcim_cause_t rc = MCIM_OK;
  TSS2_RC r = Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);

  if (rc_is(r, TPM2_RC_HANDLE)) {
    *tr = ESYS_TR_NONE;
    return mcim_tpm_failf(t, MCIM_NOT_FOUND, "no NV index 0x%08x", (unsigned)index);
  }
  if (r != TSS2_RC_SUCCESS) {
    *tr = ESYS_TR_NONE;
    return mcim_tpm_fail(t, "TPM2_NV_ReadPublic (TRE counter)", r);
  }
  r = Esys_TR_GetName(t->esys, *tr, &n);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "Esys_TR_GetName (TRE counter)", r);
    goto cleanup;
  }
  if (name && (n->size != name->size || memcmp(n->name, name->name, n->size) != 0)) {
    rc = mcim_tpm_failf(t, MCIM_CONFLICT,
                        "NV index 0x%08x is not the TRE's counter (another name: deleted and"
                        " defined again, or another index)",
                        (unsigned)index);
    goto cleanup;
  }
  if (got)
    *got = *n;
  set_auth(&a, auth);
  r = Esys_TR_SetAuth(t->esys, *tr, &a);
  mcim_wipe(&a, sizeof(a));
  if (r != TSS2_RC_SUCCESS)
    rc = mcim_tpm_fail(t, "Esys_TR_SetAuth (TRE counter)", r);
cleanup:
  Esys_Free(n);
  if (rc != MCIM_OK) {
    (void)Esys_TR_Close(t->esys, tr);
    *tr = ESYS_TR_NONE;
  }
  return rc;
}

static mcim_cause_t index_read(mcim_tpm_t *t, ESYS_TR tr, uint64_t *value)
{
  TPM2B_MAX_NV_BUFFER *data = NULL;
  TSS2_RC r =
      Esys_NV_Read(t->esys, tr, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0, &data);
  mcim_cause_t rc = MCIM_OK;

  if (r != TSS2_RC_SUCCESS)
    return mcim_tpm_fail(t, "TPM2_NV_Read (TRE counter)", r);
  if (data->size != 8) {
    rc = mcim_tpm_failf(t, MCIM_TPM_ERROR, "TPM2_NV_Read (TRE counter): %u bytes",
                        (unsigned)data->size);
  } else {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
      v = v << 8 | data->buffer[i]; /* big-endian, TPM2 Part 1 31.3.1 */
    *value = v;
  }
  Esys_Free(data);
  return rc;
}

mcim_cause_t mcim_tpm_nv_counter_define(mcim_tpm_t *t, const uint8_t auth[MCIM_TPM_NV_AUTH_LEN],
                                        TPM2_HANDLE *index, TPM2B_NAME *name, uint64_t *value)
{
  TPM2B_NV_PUBLIC pub = {
      .nvPublic = {.nameAlg = TPM2_ALG_SHA256, .attributes = NV_ATTRS, .dataSize = 8}};
  TPM2B_AUTH a;
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC r = TPM2_RC_NV_DEFINED;
  mcim_cause_t rc;

  set_auth(&a, auth);
  /* the first free index (format-zero code: no handle number to mask) */
  for (int i = 0; i < MCIM_TPM_NV_COUNTER_TRIES && (r & 0xffffu) == TPM2_RC_NV_DEFINED; i++) {
    pub.nvPublic.nvIndex = MCIM_TPM_NV_COUNTER_FIRST + (TPM2_HANDLE)i;
    r = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &a, &pub, &tr);
  }
  mcim_wipe(&a, sizeof(a));
  if (r != TSS2_RC_SUCCESS)
    return mcim_tpm_fail(t, "TPM2_NV_DefineSpace (TRE counter)", r);
  (void)Esys_TR_Close(t->esys, &tr);
  *index = pub.nvPublic.nvIndex;
  rc = mcim_tpm_nv_counter_increment(t, *index, NULL, auth);
  if (rc != MCIM_OK)
    return rc;
  /* the name again: TPMA_NV_WRITTEN is set now, and is part of it */
  rc = index_open(t, *index, NULL, auth, &tr, name);
  if (rc == MCIM_OK)
    rc = index_read(t, tr, value);
  (void)Esys_TR_Close(t->esys, &tr);
  return rc;
}

mcim_cause_t mcim_tpm_nv_counter_read(mcim_tpm_t *t, TPM2_HANDLE index, const TPM2B_NAME *name,
                                      const uint8_t auth[MCIM_TPM_NV_AUTH_LEN], uint64_t *value)
{
  ESYS_TR tr = ESYS_TR_NONE;
  mcim_cause_t rc = index_open(t, index, name, auth, &tr, NULL);
  if (rc == MCIM_OK)
    rc = index_read(t, tr, value);
  if (tr != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &tr);
  return rc;
}

mcim_cause_t mcim_tpm_nv_counter_increment(mcim_tpm_t *t, TPM2_HANDLE index, const TPM2B_NAME *name,
                                           const uint8_t auth[MCIM_TPM_NV_AUTH_LEN])
{
  ESYS_TR tr = ESYS_TR_NONE;
  mcim_cause_t rc = index_open(t, index, name, auth, &tr, NULL);
  if (rc == MCIM_OK) {
    TSS2_RC r = Esys_NV_Increment(t->esys, tr, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
    if (r != TSS2_RC_SUCCESS)
      rc = mcim_tpm_fail(t, "TPM2_NV_Increment (TRE counter)", r);
  }
  if (tr != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &tr);
  return rc;
}
