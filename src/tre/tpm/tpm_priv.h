/* Internals shared by the files of src/tre/tpm/ (tpm.h is their interface). */
#ifndef MCIM_TRE_TPM_PRIV_H
#define MCIM_TRE_TPM_PRIV_H

#include <stdbool.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tcti.h>

struct mcim_tpm {
  TSS2_TCTI_CONTEXT *tcti;
  ESYS_CONTEXT *esys;
  ESYS_TR primary;           /* ESYS_TR_NONE until mcim_tpm_primary() */
  bool primary_persistent;   /* primary is MCIM_TPM_PRIMARY_HANDLE: closed, never flushed */
  TPM2B_PUBLIC *primary_pub; /* ESAPI's allocation (Esys_Free) */
  bool lost;                 /* a TCTI failure happened: ESAPI's state is gone with it */
  char detail[256];          /* the last failure; never key material */
};

#endif
