/* The TPM's part of the quote step (tpm_evidence.c). */
#ifndef MCIM_DEVICE_TPM_EVIDENCE_H
#define MCIM_DEVICE_TPM_EVIDENCE_H

#include "device/device_priv.h"

/* Step 10 (change 4), with a TPM TRE: the TPM2_Quote over the PVA's `nonce` and the
 * measurement log (include/mcim/attest.h), kept in the procedure's data as "tpm_quote" (JSON
 * text) beside the JWS quote, to be sent with it and again on a retry. With the software TRE
 * "tpm_quote" is dropped and MCIM_OK returned. */
mcim_cause_t dev_tpm_evidence(struct mcim_device *d, struct dev_proc *p, const char *nonce);

#endif
