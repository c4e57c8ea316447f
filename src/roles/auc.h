/* The authentication centre (AuC) shared by the RO's ICF (PCID credentials) and each
 * SHO (the MCIMs it issues): subscribers with K and OPc sealed at rest, SQN state per
 * TS 33.102 Annex C, AV generation and resynchronisation.
 *
 * SQN rule (DESIGN.md invariant 5): the new SEQ_HE is written in the same transaction
 * that reads the old one, and that transaction commits before any AV leaves this
 * module, so an SQN is never handed out twice nor goes backwards, restarts included. */
#ifndef MCIM_ROLES_AUC_H
#define MCIM_ROLES_AUC_H

#include <stdbool.h>
#include <stdint.h>

#include "mcim/aka.h"
#include "mcim/seal.h"
#include "mcim/store.h"

/* Schema step (append to the role's migrations). */
extern const char mcim_auc_schema_sql[];

struct mcim_auc_sub {
  const char *imsi;
  const char *device;
  uint8_t k[MCIM_MILENAGE_K_LEN];
  uint8_t opc[MCIM_MILENAGE_OP_LEN];
  uint8_t amf[MCIM_MILENAGE_AMF_LEN];
  int64_t expires; /* 0: no expiry */
  const char *state; /* NULL: "active"; "pending" until the SHO learns it is installed */
};

/* Add a subscriber (K and OPc sealed with `skey`); MCIM_CONFLICT if the IMSI exists.
 * Runs inside the caller's transaction if one is open. */
mcim_cause_t mcim_auc_add(mcim_store_t *st, const mcim_storage_key_t *skey,
                          const struct mcim_auc_sub *sub);

/* A subscriber's K, OPc, AMF and lifetime, unsealed into `sub` (its imsi and device are left
 * as they are; the caller wipes the keys), and its state (16 bytes; may be NULL): what a remote
 * AuC is given (src/roles/auc_sync.c). MCIM_NOT_FOUND if there is none. */
mcim_cause_t mcim_auc_keys(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                           struct mcim_auc_sub *sub, char state[16]);

/* Up to `n` (1..5) vectors for `imsi`. MCIM_UNKNOWN_IDENTITY, MCIM_SUBSCRIPTION_TERMINATED,
 * MCIM_CREDENTIAL_EXPIRED (past its lifetime). Own transaction. */
mcim_cause_t mcim_auc_gen_avs(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                              int n, int64_t now, struct mcim_aka_av *avs);

/* Resynchronisation from a device's AUTS for `rand`. Own transaction. */
mcim_cause_t mcim_auc_resync(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                             const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                             const uint8_t auts[MCIM_AKA_AUTS_LEN]);

/* "pending" -> "active" (the device reported the MCIM installed). Caller's transaction. */
mcim_cause_t mcim_auc_activate(mcim_store_t *st, const char *imsi);
/* Compare-and-set of the subscription state (pending, active, standby, terminated), in the
 * caller's transaction. MCIM_WRONG_STATE if it is not `from`. */
mcim_cause_t mcim_auc_set_state(mcim_store_t *st, const char *imsi, const char *from,
                                const char *to);
/* Stop issuing AVs for `imsi` (the subscription ended). Inside the caller's transaction. */
mcim_cause_t mcim_auc_terminate(mcim_store_t *st, const char *imsi);
/* "active", "terminated", or MCIM_NOT_FOUND. `state` holds 16 bytes. */
mcim_cause_t mcim_auc_state(mcim_store_t *st, const char *imsi, char *state, int64_t *expires);
/* Why a subscription in `state` (expiring at `expires`, 0: never) has no vectors at `now`, or
 * MCIM_OK: the one rule of the built-in AuC and of the role's record before a remote one
 * (auc_sync.c). A resynchronisation refuses any state but active, and no expiry. */
mcim_cause_t mcim_auc_no_vectors(const char *state, int64_t expires, int64_t now, bool resync);
/* Whether `imsi` is a live subscription (active, or standby between two pre-provisioned
 * MCIMs) of `device`: MCIM_OK, else MCIM_SUBSCRIPTION_TERMINATED (none, ended, another
 * device's). What a token of it stands on: checked at its issue and at every use. */
mcim_cause_t mcim_auc_live(mcim_store_t *st, const char *imsi, const char *device);
/* Extend or change the lifetime (PCID renewal). */
mcim_cause_t mcim_auc_set_expires(mcim_store_t *st, const char *imsi, int64_t expires);

#endif
