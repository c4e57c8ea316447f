/* Shared by the TPM TRE's two files (tre_tpm.c: the connection, the TRE's keys, struct
 * tre_keys_ops tre_keys_tpm; tre_tpm_slots.c: K under slot keys). Not an interface of the
 * TRE: include/mcim/tre.h and tpm.h are. */
#ifndef MCIM_TRE_TPM_TRE_TPM_PRIV_H
#define MCIM_TRE_TPM_TRE_TPM_PRIV_H

#include <jansson.h>
#include <stdbool.h>

#include "mcim/milenage.h"
#include "tre/tpm/tpm.h"

struct tre_soft;

/* A key's (and a slot's K's) members in the document */
#define MEMBER_PUBLIC "tpm_public"
#define MEMBER_PRIVATE "tpm_private"
#define MEMBER_PARENT "tpm_parent"

/* What a transaction holds in the TPM (t->keys_ctx): the connection, opened on first use,
 * and a slot's K while Milenage runs on it (k_milenage), flushed at the end. */
struct tpm_txn {
  mcim_tpm_t *tpm;
  mcim_tpm_aes_t *k;
};

/* tre_tpm.c: the connection, with the persistent storage primary checked against the name
 * recorded at manufacture */
mcim_cause_t tre_tpm_storage_use(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm);
/* tre_tpm.c: a TPM failure logged with the TPM's detail */
void tre_tpm_log(mcim_tpm_t *tpm, mcim_cause_t rc, const char *what);

/* tre_tpm_slots.c: the operations of struct tre_keys_ops on K (tre_priv.h says what each does) */
mcim_cause_t tpm_k_milenage(struct tre_soft *t, json_t *st, const json_t *j, mcim_milenage_t **out);
mcim_cause_t tpm_k_destroy(struct tre_soft *t, json_t *st, const json_t *j);
mcim_cause_t tpm_k_import_txn(struct tre_soft *t, json_t *st, const char *txn, const json_t *j,
                              json_t **out);
mcim_cause_t tpm_k_import_pcid(struct tre_soft *t, json_t *st, const json_t *j, json_t **out);
mcim_cause_t tpm_k_import_pcid_renewal(struct tre_soft *t, json_t *st, const char *txn,
                                       const json_t *j, json_t **out);
mcim_cause_t tpm_pcid_slot_offer(struct tre_soft *t, json_t *st, const char *txn, json_t **offer,
                                 bool *made);
mcim_cause_t tpm_txn_slot_create(struct tre_soft *t, json_t *st, const char *txn, json_t **out);
/* the slot key a K blob (or a procedure's offer) of the document records, evicted */
mcim_cause_t tpm_slot_evict(struct tre_soft *t, json_t *st, const json_t *j);

#endif
