/* Measured launch and TPM2_Quote (issue 11 point 4; docs/tre-tpm.md, "Attestation at the
 * PVA"): the TPM commands (tpm_quote.c), the launcher's measurements (tpm_launch.c) and the
 * TRE's quote under its lock (tre_quote.c). The log's form and the verifier: include/mcim/attest.h. */
#ifndef MCIM_TRE_TPM_QUOTE_H
#define MCIM_TRE_TPM_QUOTE_H

#include <stddef.h>
#include <stdint.h>

#include "tre/tpm/tpm.h"
#include "tre/tre_priv.h"

/* ---- tpm_quote.c ---- */
/* TPM2_PCR_Reset of `pcr`: the TPM allows it for the resettable ones only (16, 23 at
 * locality 0); PCR 10, the measured launch's, it refuses (TPM_RC_LOCALITY). Kept for the test
 * that shows that refusal. */
mcim_cause_t mcim_tpm_pcr_reset(mcim_tpm_t *t, unsigned pcr);
/* TPM2_PCR_Read of `pcr`'s SHA-256 bank: its value in `out`. */
mcim_cause_t mcim_tpm_pcr_read(mcim_tpm_t *t, unsigned pcr, uint8_t out[32]);
/* TPM2_PCR_Extend of `pcr`'s SHA-256 bank with `digest`. */
mcim_cause_t mcim_tpm_pcr_extend(mcim_tpm_t *t, unsigned pcr, const uint8_t digest[32]);
/* TPM2_Quote of `pcr` (SHA-256 bank) with the signing key `key` (its own scheme, ECDSA-SHA256)
 * and `qual` (at most 64 bytes) as the qualifying data: the marshalled TPMS_ATTEST and
 * TPMT_SIGNATURE, free() both. */
mcim_cause_t mcim_tpm_quote(mcim_tpm_t *t, mcim_tpm_key_t *key, unsigned pcr, const uint8_t *qual,
                            size_t qual_len, uint8_t **attest, size_t *attest_len, uint8_t **sig,
                            size_t *sig_len);
/* The output of a TPM2_Certify or TPM2_Quote copied out, for mcim_tpm_certify,
 * mcim_tpm_slot_certify and mcim_tpm_quote: the marshalled TPMS_ATTEST `a` and the TPMT_SIGNATURE
 * `s` marshalled, in malloc'd buffers (free() both; NULL both on failure). A failure to marshal
 * the signature is mcim_tpm_fail's with `what`, or MCIM_INTERNAL with `what` NULL. */
mcim_cause_t mcim_tpm_attest_out(mcim_tpm_t *t, const TPM2B_ATTEST *a, const TPMT_SIGNATURE *s,
                                 const char *what, uint8_t **attest, size_t *attest_len,
                                 uint8_t **sig, size_t *sig_len);

/* ---- tre_tpm.c, for tre_quote.c ---- */
/* The transaction's TPM connection (opened on first use, closed by tre_end). */
mcim_cause_t tre_tpm_connection(struct tre_soft *t, mcim_tpm_t **tpm);
/* tre_enrol.c: the key quotes are signed with, loaded on that connection, its storage primary
 * checked against the recorded name first: the restricted attestation key enrolment made
 * ("keys": {"quote"}); MCIM_TPM_ENROLMENT_REQUIRED in a TRE never enrolled (its unrestricted
 * JWS key would sign any digest, a forged TPMS_ATTEST included). mcim_tpm_key_free() it
 * before tre_end(). */
mcim_cause_t tre_tpm_quote_key(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm,
                               mcim_tpm_key_t **key);

/* tre_tpm_slots.c: the PCID's slot key (docs/tre-tpm.md, "The PCID credential's K"), made under the
 * storage primary with the slot keys' policy and recorded as TRE_PCID_SLOT in `st` (the caller
 * commits; the key is destroyed again on failure); and its TPM2_Certify by the loaded AK `ak`
 * over `qual`: *out = {"public", "attest", "signature"} (MCIM_TPM_SLOT_KEY_MISSING without
 * one). */
mcim_cause_t tre_tpm_pcid_slot_create(struct tre_soft *t, json_t *st);
mcim_cause_t tre_tpm_pcid_slot_certify(struct tre_soft *t, json_t *st, mcim_tpm_key_t *ak,
                                       const uint8_t *qual, size_t qual_len, json_t **out);

#endif
