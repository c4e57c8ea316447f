/* A slot's own storage key in the TPM (docs/tre-tpm.md, "Slots in the TPM"): the isolation of
 * two MCIMs by the TPM (issue 11 point 7) and the destruction of a discarded one's K
 * (point 6).
 *
 * Each staged MCIM whose K came as a duplication blob ("k_tpm") gets a storage key of its
 * own, made by TPM2_Create under the TRE's storage primary and kept only as a persistent
 * object (TPM2_EvictControl; its private blob is wiped, never stored), with:
 *
 *   - an authValue of 32 random bytes, the slot's own secret (kept in the slot's entry);
 *   - userWithAuth and adminWithPolicy clear: every use needs a policy session, and the
 *     policy admits exactly two commands, each only with the authValue:
 *       PolicyOR{ PolicyAuthValue + PolicyCommandCode(TPM2_Import),
 *                 PolicyAuthValue + PolicyCommandCode(TPM2_Load) }
 *     so the key cannot be re-wrapped (TPM2_Rewrap), have its authValue changed
 *     (TPM2_ObjectChangeAuth), certified or anything else; and fixedTPM, fixedParent.
 *
 * The SHO's blob is wrapped to the storage primary (the key the M2MES certified), so the TRE
 * moves it under the slot's key inside the TPM: TPM2_Rewrap (primary -> slot key), then
 * TPM2_Import under the slot key. K's private part is then wrapped with the slot key's seed:
 * it loads under that key only, with that slot's authorisation only, and once the slot key is
 * evicted it loads nowhere, from any copy of the state. */
#ifndef MCIM_TRE_TPM_SLOT_H
#define MCIM_TRE_TPM_SLOT_H

#include <stdint.h>

#include "tre/tpm/tpm.h"

/* The persistent handles of the slot keys: the owner's storage-key range, next to the
 * primary (MCIM_TPM_PRIMARY_HANDLE = 0x81004d43); the first free one is taken. */
#define MCIM_TPM_SLOT_HANDLE_FIRST UINT32_C(0x81004d50)
#define MCIM_TPM_SLOT_HANDLES 48
#define MCIM_TPM_SLOT_AUTH_LEN 32

/* What the TRE keeps of a slot key: where it is, its name (checked before each use: another
 * key at the handle is refused), and its authValue (a secret). */
struct mcim_tpm_slot {
  TPM2_HANDLE handle;
  TPM2B_NAME name;
  uint8_t auth[MCIM_TPM_SLOT_AUTH_LEN];
};

/* The slot keys' policy digest (above), computed on the host (OpenSSL). */
void mcim_tpm_slot_policy(TPM2B_DIGEST *policy);
/* A new slot key under the storage primary of this connection (mcim_tpm_primary_use first),
 * made persistent at the first free handle of the range (none free: MCIM_TOO_LARGE). */
mcim_cause_t mcim_tpm_slot_create(mcim_tpm_t *t, struct mcim_tpm_slot *out);
/* The SHO's duplication blob of K (wrapped to the storage primary) moved under the slot key:
 * TPM2_Rewrap, then TPM2_Import with the slot's policy. `out` is what the slot keeps. A blob
 * the TPM refuses (another TPM's, altered): MCIM_TPM_ERROR, the detail names the command. */
mcim_cause_t mcim_tpm_slot_import(mcim_tpm_t *t, const struct mcim_tpm_slot *s,
                                  const struct mcim_tpm_dup *dup, struct mcim_tpm_blob *out);
/* TPM2_Load of a slot's K under its slot key, with a policy session for TPM2_Load and the
 * slot's authValue. A key at the handle that is not the recorded one, or none: MCIM_TPM_ERROR
 * before the TPM is given the blob; another slot's authValue: MCIM_TPM_ERROR
 * (TPM_RC_BAD_AUTH). */
mcim_cause_t mcim_tpm_slot_load(mcim_tpm_t *t, const struct mcim_tpm_slot *s,
                                const struct mcim_tpm_blob *blob, mcim_tpm_aes_t **out);
/* Destroy the slot key (TPM2_EvictControl): every blob under it is unloadable from then on.
 * Nothing at the handle, or another key there (the slot key was destroyed before and the
 * handle reused): MCIM_OK, nothing done, *gone (may be NULL) false. */
mcim_cause_t mcim_tpm_slot_destroy(mcim_tpm_t *t, const struct mcim_tpm_slot *s, bool *gone);

/* tpm_aes.c: an AES key loaded by other means (the slot's load) as an mcim_tpm_aes_t. */
mcim_cause_t mcim_tpm_aes_adopt(mcim_tpm_t *t, ESYS_TR handle, mcim_tpm_aes_t **out);

#endif
