/* A TPM NV monotonic counter (TPM_NT_COUNTER) that binds the TRE's state to the TPM, against
 * an older state file put back (issue 11 point 5; tre_tpm_nv.c has the rule, docs/tre-tpm.md
 * "Rollback"). For the files of src/tre/tpm/ only. */
#ifndef MCIM_TRE_TPM_NV_H
#define MCIM_TRE_TPM_NV_H

#include <jansson.h>
#include <stdint.h>
#include <tss2/tss2_tpm2_types.h>

#include "tre/tpm/tpm.h"

/* The owner range of NV indices (TCG handle registry, 0x01000000-0x013fffff): the TRE takes
 * the first free index from here at manufacture (several TREs may share one TPM in tests). */
#define MCIM_TPM_NV_COUNTER_FIRST UINT32_C(0x01004d43)
#define MCIM_TPM_NV_COUNTER_TRIES 64
#define MCIM_TPM_NV_AUTH_LEN 32

/* Manufacture: define a counter index in the owner hierarchy (owner authorisation; the TPM's
 * owner auth is empty, as swtpm's and a fresh chip's) whose only authorisation for
 * increment and read is `auth` (TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD, no policy, no
 * platform or owner write: only who knows `auth` increments it; NV_UndefineSpace needs the
 * owner's authorisation and a counter is never reset or written otherwise), increment it once
 * (a counter is unreadable before its first increment) and read it: *index, its *name (with
 * TPMA_NV_WRITTEN set: the name every later use must find) and *value. */
mcim_cause_t mcim_tpm_nv_counter_define(mcim_tpm_t *t, const uint8_t auth[MCIM_TPM_NV_AUTH_LEN],
                                        TPM2_HANDLE *index, TPM2B_NAME *name, uint64_t *value);
/* The counter's value, after checking that `index` is still the counter of that `name`
 * (MCIM_NOT_FOUND: no index there; MCIM_CONFLICT: another index at that handle). */
mcim_cause_t mcim_tpm_nv_counter_read(mcim_tpm_t *t, TPM2_HANDLE index, const TPM2B_NAME *name,
                                      const uint8_t auth[MCIM_TPM_NV_AUTH_LEN], uint64_t *value);
/* TPM2_NV_Increment, with the same check of the index first. */
mcim_cause_t mcim_tpm_nv_counter_increment(mcim_tpm_t *t, TPM2_HANDLE index, const TPM2B_NAME *name,
                                           const uint8_t auth[MCIM_TPM_NV_AUTH_LEN]);

/* ---- tre_tpm_nv.c: the TPM TRE's side of struct tre_keys_ops (tre_priv.h) ---- */
struct tre_soft;
/* Manufacture: a new counter, recorded in the document as "tpm_counter". */
mcim_cause_t tre_tpm_fresh_create(struct tre_soft *t, json_t *st);
/* A load: the newest slot that opens, of generation `gen`, against the counter.
 * MCIM_TRE_ROLLBACK (logged) when the state is older than the counter says. */
mcim_cause_t tre_tpm_fresh_check(struct tre_soft *t, json_t *st, uint64_t gen);
/* A write, once its slot is durable: the counter's one increment. */
mcim_cause_t tre_tpm_fresh_advance(struct tre_soft *t, json_t *st);

#endif
