/* A build without the TPM TRE (MCIM_TPM=OFF): no TRE has a TPM to quote with, and the
 * launcher has none to measure into (include/mcim/attest.h; the real ones are in
 * src/tre/tpm/tre_quote.c and tpm_launch.c). */
#ifndef MCIM_HAVE_TPM
#include <stdio.h>

#include "mcim/attest.h"

mcim_cause_t mcim_tpm_launch_measure(const char *tcti, const char *log_path, const json_t *log,
                                     char *detail, size_t detail_len)
{
  (void)tcti;
  (void)log_path;
  (void)log;
  if (detail && detail_len)
    snprintf(detail, detail_len, "this mcim was built without the TPM TRE (MCIM_TPM=OFF)");
  return MCIM_UNSUPPORTED;
}

mcim_cause_t mcim_tre_tpm_quote(struct mcim_tre *tre, const char *nonce, json_t **evidence)
{
  (void)tre;
  (void)nonce;
  if (evidence)
    *evidence = NULL;
  return MCIM_NOT_FOUND;
}

mcim_cause_t mcim_tre_tpm_enrol_begin(struct mcim_tre *tre, json_t **out)
{
  (void)tre;
  if (out)
    *out = NULL;
  return MCIM_NOT_FOUND;
}

mcim_cause_t mcim_tre_tpm_enrol_answer(struct mcim_tre *tre, const json_t *challenge, json_t **out)
{
  (void)tre;
  (void)challenge;
  if (out)
    *out = NULL;
  return MCIM_NOT_FOUND;
}
#else
typedef int mcim_tre_attest_none_unused; /* ISO C: a translation unit is never empty */
#endif
