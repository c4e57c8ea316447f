/* The TPM's evidence for the PVA (seed step 10, change step 4): TPM2_Quote over the PVA's
 * nonce and the measurement log of PCR 10, which the launcher wrote (include/mcim/attest.h). */
#include <stdlib.h>

#include "device/tpm_evidence.h"
#include "mcim/attest.h"

mcim_cause_t dev_tpm_evidence(struct mcim_device *d, struct dev_proc *p, const char *nonce)
{
  json_t *ev = NULL;
  char *text = NULL;
  mcim_cause_t rc = mcim_tre_tpm_quote(d->tre, nonce, &ev);

  dev_data_set_str(p, "tpm_quote", NULL); /* never one over an older nonce */
  if (rc == MCIM_NOT_FOUND) /* the software TRE: the JWS quote alone */
    return MCIM_OK;
  if (rc != MCIM_OK)
    return rc;
  text = json_dumps(ev, JSON_COMPACT);
  if (text)
    dev_data_set_str(p, "tpm_quote", text);
  else
    rc = MCIM_NO_MEMORY;
  free(text);
  json_decref(ev);
  return rc;
}
