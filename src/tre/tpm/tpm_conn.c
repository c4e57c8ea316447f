/* An ESAPI context (ours: tpm_esys.c) on a TCTI, and TSS2 return codes as causes (tpm.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"

mcim_cause_t mcim_tpm_cause(TSS2_RC rc)
{
  TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  TSS2_RC base = rc & 0xffffu;

  if (rc == TSS2_RC_SUCCESS)
    return MCIM_OK;
  if (base == TSS2_BASE_RC_MEMORY && layer != TSS2_TPM_RC_LAYER)
    return MCIM_NO_MEMORY;
  if (layer == TSS2_TCTI_RC_LAYER) {
    switch (base) {
    case TSS2_BASE_RC_IO_ERROR:
    case TSS2_BASE_RC_NO_CONNECTION:
    case TSS2_BASE_RC_TRY_AGAIN:
    case TSS2_BASE_RC_GENERAL_FAILURE:
      return MCIM_TPM_UNREACHABLE;
    case TSS2_BASE_RC_BAD_VALUE:
    case TSS2_BASE_RC_NOT_IMPLEMENTED:
    case TSS2_BASE_RC_NOT_SUPPORTED:
      return MCIM_INVALID_ARGUMENT; /* the TCTI configuration string */
    default:
      return MCIM_TPM_UNREACHABLE;
    }
  }
  return MCIM_TPM_ERROR; /* the TPM's own answer (layer 0) or ESAPI's */
}

mcim_cause_t mcim_tpm_fail(mcim_tpm_t *t, const char *what, TSS2_RC rc)
{
  mcim_cause_t cause = mcim_tpm_cause(rc);
  if (!t)
    return cause;
  /* After a transport failure ESAPI answers every later call with a sequence error of its
   * own: the cause stays the lost TPM, not a refusal. */
  if (cause == MCIM_TPM_UNREACHABLE)
    t->lost = true;
  mcim_detailf(t->detail, sizeof(t->detail), "%s: %s (0x%08x)%s", what, Tss2_RC_Decode(rc),
               (unsigned)rc,
               t->lost && cause != MCIM_TPM_UNREACHABLE ? " (TPM connection lost)" : "");
  return t->lost ? MCIM_TPM_UNREACHABLE : cause;
}

mcim_cause_t mcim_tpm_failf(mcim_tpm_t *t, mcim_cause_t cause, const char *fmt, ...)
{
  va_list ap;
  if (!t)
    return cause;
  va_start(ap, fmt);
  vsnprintf(t->detail, sizeof(t->detail), fmt, ap);
  va_end(ap);
  return cause;
}

mcim_cause_t mcim_tpm_open(const char *tcti, mcim_tpm_t **out, char *detail, size_t detail_len)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  mcim_tpm_t *t = NULL;
  TSS2_RC r;

  mcim_detailf(detail, detail_len, "%s", "");
  if (!out || !tcti || !*tcti) {
    mcim_detailf(detail, detail_len, "no TCTI configuration");
    return MCIM_INVALID_ARGUMENT;
  }
  *out = NULL;
  rc = mcim_tss2_load(detail, detail_len);
  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_NO_MEMORY;
  t = calloc(1, sizeof(*t));
  if (!t) {
    mcim_detailf(detail, detail_len, "out of memory");
    goto cleanup;
  }
  t->primary = ESYS_TR_NONE;
  r = Tss2_TctiLdr_Initialize(tcti, &t->tcti);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_cause(r);
    mcim_detailf(detail, detail_len, "TCTI \"%s\": %s (0x%08x)", tcti, Tss2_RC_Decode(r),
                 (unsigned)r);
    goto cleanup;
  }
  r = Esys_Initialize(&t->esys, t->tcti, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_cause(r);
    mcim_detailf(detail, detail_len, "Esys_Initialize on \"%s\": %s (0x%08x)", tcti,
                 Tss2_RC_Decode(r), (unsigned)r);
    goto cleanup;
  }
  *out = t;
  t = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_tpm_free(t);
  return rc;
}

void mcim_tpm_free(mcim_tpm_t *t)
{
  if (!t)
    return;
  if (t->esys && t->primary != ESYS_TR_NONE && t->primary_persistent)
    (void)Esys_TR_Close(t->esys, &t->primary); /* stays in the TPM: ESAPI forgets it */
  else if (t->esys && t->primary != ESYS_TR_NONE)
    (void)Esys_FlushContext(t->esys, t->primary); /* a transient object: free the TPM's slot */
  Esys_Free(t->primary_pub);
  if (t->esys)
    Esys_Finalize(&t->esys);
  if (t->tcti)
    Tss2_TctiLdr_Finalize(&t->tcti);
  free(t);
}

const char *mcim_tpm_detail(const mcim_tpm_t *t)
{
  return t ? t->detail : "";
}

ESYS_CONTEXT *mcim_tpm_esys(mcim_tpm_t *t)
{
  return t ? t->esys : NULL;
}
