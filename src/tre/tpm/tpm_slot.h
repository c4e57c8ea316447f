/* A slot's own storage key in the TPM (docs/tre-tpm.md, "Slots in the TPM"): the isolation of
 * two MCIMs by the TPM (issue 11 point 7) and the destruction of a discarded one's K
 * (point 6).
 *
 * Each staged MCIM whose K came as a duplication blob ("k_tpm") gets a storage key of its
 * own, made by TPM2_Create under the TRE's storage primary and kept only as a persistent
 * object (TPM2_EvictControl; its private blob is wiped, never stored), with:
 *
 *   - an authValue of 32 random bytes, the slot's own secret (kept in the slot's entry);
 *   - userWithAuth clear and adminWithPolicy set: every use needs a policy session, and the
 *     policy admits exactly three commands, each only with the authValue:
 *       PolicyOR{ PolicyAuthValue + PolicyCommandCode(TPM2_Import),
 *                 PolicyAuthValue + PolicyCommandCode(TPM2_Load),
 *                 PolicyAuthValue + PolicyCommandCode(TPM2_Certify) }
 *     so the key cannot re-wrap what is wrapped to it (TPM2_Rewrap), have its authValue
 *     changed (TPM2_ObjectChangeAuth) or anything else; and fixedTPM, fixedParent.
 *
 * The TRE makes the slot key at the quote of a procedure (tre_tpm_slots.c, txn_slot_create) and has
 * the restricted attestation key certify it (TPM2_Certify through the third branch); the SHO
 * checks that certification and wraps K to that key alone, and the TRE imports it there
 * (mcim_tpm_slot_import_own): the SHO's blob is wrapped to a key that cannot re-wrap it, so
 * there is no TPM2_Rewrap to no parent (docs/tre-tpm.md, "Slots in the TPM"). K's private
 * part is then wrapped with the slot key's seed: it loads under that key only, with that
 * slot's authorisation only, and once the slot key is evicted it loads nowhere, from any
 * copy of the state. */
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
/* K wrapped by the SHO to the slot key itself (mcim_tpm_dup_aes128 with the slot key's public
 * area, mcim_tpm_slot_public): TPM2_Import under it with the slot's policy, no Rewrap. `out`
 * is what the slot keeps. A blob the TPM refuses (wrapped to another key, another TPM's,
 * altered): MCIM_TPM_ERROR, the detail names the command. */
mcim_cause_t mcim_tpm_slot_import_own(mcim_tpm_t *t, const struct mcim_tpm_slot *s,
                                      const struct mcim_tpm_dup *dup, struct mcim_tpm_blob *out);
/* The slot key's public area (after the name check): what an SHO wraps K to. With `tr`, the
 * key stays open with its authValue set (*tr, Esys_TR_Close it), e.g. for TPM2_Certify with
 * a session from mcim_tpm_slot_session(TPM2_CC_Certify), until the next call of this file on
 * that slot (ESAPI keeps one ESYS_TR per TPM handle, and each call closes it after use). */
mcim_cause_t mcim_tpm_slot_public(mcim_tpm_t *t, const struct mcim_tpm_slot *s, TPM2B_PUBLIC *out,
                                  ESYS_TR *tr);
/* A policy session satisfying the slot keys' policy for `cc` (TPM2_CC_Import, _Load or
 * _Certify), for the one command that follows; the key's authValue must be set on its ESYS_TR.
 * Flush it after. */
mcim_cause_t mcim_tpm_slot_session(mcim_tpm_t *t, TPM2_CC cc, ESYS_TR *session);
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

/* ---- K wrapped by the SHO straight to a slot key (docs/tre-tpm.md, "Slots in the TPM") ---- */
/* The qualifying data of a slot key's certification for procedure `txn`:
 * SHA-256("mcim-slot-key" || 0x00 || txn). The SHO computes it from its order's txn, so a
 * certification made for another procedure is refused. */
#define MCIM_TPM_SLOT_QUAL_LEN 32
mcim_cause_t mcim_tpm_slot_qual(const char *txn, uint8_t out[MCIM_TPM_SLOT_QUAL_LEN]);
/* The same for the slot key a PCID renewal `txn` offers (docs/tre-tpm.md, "The PCID
 * credential's K"): SHA-256("mcim-pcid-slot" || 0x00 || txn), so neither certification passes
 * for the other. */
mcim_cause_t mcim_tpm_pcid_slot_qual(const char *txn, uint8_t out[MCIM_TPM_SLOT_QUAL_LEN]);
/* TPM2_Certify of the slot key `s` (through its policy's TPM2_Certify branch) by the loaded
 * attestation key `ak` over `qual`: the marshalled TPMS_ATTEST and TPMT_SIGNATURE, free() both.
 * mcim_tpm_certify_check verifies them. */
mcim_cause_t mcim_tpm_slot_certify(mcim_tpm_t *t, const struct mcim_tpm_slot *s, mcim_tpm_key_t *ak,
                                   const uint8_t *qual, size_t qual_len, uint8_t **attest,
                                   size_t *attest_len, uint8_t **sig, size_t *sig_len);
/* Whether `pub` is exactly a slot key's public area (the attributes, parameters and policy
 * digest mcim_tpm_slot_create gives): userWithAuth clear, so K wrapped to it cannot be
 * rewrapped out of the TPM. Host only. */
bool mcim_tpm_slot_public_check(const TPM2B_PUBLIC *pub);

/* tpm_aes.c: an AES key loaded by other means (the slot's load) as an mcim_tpm_aes_t. */
mcim_cause_t mcim_tpm_aes_adopt(mcim_tpm_t *t, ESYS_TR handle, mcim_tpm_aes_t **out);

#endif
