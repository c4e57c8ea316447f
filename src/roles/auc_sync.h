/* A role's subscribers in a remote AuC (issue 13 point 1): the SHO's MCIMs, the ICF's PCIDs in
 * an HLR (src/roles/auc_sync.c).
 *
 * The role's own `auc` table stays the record of its subscribers (state, lifetime, device,
 * K and OPc sealed); a remote AuC is told what that table says, never the other way round.
 * What the HLR should hold is an intent (table `auc_hlr`: the IMSI, present or absent, a
 * generation) written in the transaction that changes the subscriber, so the two cannot
 * disagree after a crash: the intent is applied after the commit, idempotently (a create
 * answered CONFLICT is checked to be ours, a delete answered UNKNOWN_IDENTITY is done), by the
 * handler at once and again by the worker's tick until it holds, and by an attach that finds it
 * still pending. With the built-in AuC the `auc` table is the AuC: every function here then
 * does what the role did before (no intent, the backend called directly). */
#ifndef MCIM_ROLES_AUC_SYNC_H
#define MCIM_ROLES_AUC_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "mcim/role.h"
#include "roles/auc_backend.h"

/* Schema step (append to the role's migrations). */
extern const char mcim_auc_hlr_schema_sql[];
/* The migration after it: each intent's claim (`lease`, until when one apply holds it). */
extern const char mcim_auc_hlr_lease_sql[];

/* Record, in the caller's transaction, that `imsi` (an `auc` row) should be in the remote AuC
 * (`present`) or gone from it; nothing with the built-in AuC. */
mcim_cause_t mcim_auc_sync_want(struct mcim_role *r, mcim_store_t *st, const char *imsi,
                                bool present);

/* The device's active subscribers other than `keep1` and `keep2` (about to be terminated in
 * the same transaction: a PCID renewal's supersede) are to leave the remote AuC. */
mcim_cause_t mcim_auc_sync_unwant_others(struct mcim_role *r, mcim_store_t *st,
                                         const char *device, const char *keep1,
                                         const char *keep2);

/* Apply what is pending (after the commit; no transaction open): `imsi`'s intent, or with
 * NULL a batch of those due (the worker's tick; it stops at the first AuC that does not
 * answer and backs off). MCIM_OK when `imsi`'s intent holds (or there is none). */
mcim_cause_t mcim_auc_sync_run(struct mcim_role *r, const char *imsi);
/* The worker's tick: mcim_auc_sync_run(r, NULL); true when it found intents due (the worker
 * then polls again after tick_ms rather than backing off). */
bool mcim_auc_sync_tick(struct mcim_role *r);

/* Vectors and resynchronisation for the role's subscriber `imsi`: the role's own record
 * decides whether it gets any (state active, within its lifetime: the causes of
 * src/roles/auc.c), then the backend makes them (a pending create applied first). */
mcim_cause_t mcim_auc_sync_gen_avs(struct mcim_role *r, mcim_store_t *st, const char *imsi,
                                   int n, int64_t now, struct mcim_aka_av *avs, char *detail,
                                   size_t dlen);
mcim_cause_t mcim_auc_sync_resync(struct mcim_role *r, mcim_store_t *st, const char *imsi,
                                  const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                  const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                  struct mcim_aka_av *avs, char *detail, size_t dlen);

/* The same on a backend, a storage key and a store of the caller's (what the role's forms
 * above pass: r->auc, r->storage_key, the thread's store; the tests call these). */
mcim_cause_t mcim_auc_sync_want_in(struct mcim_auc_backend *b, mcim_store_t *st,
                                   const char *imsi, bool present);
mcim_cause_t mcim_auc_sync_run_in(struct mcim_auc_backend *b, const mcim_storage_key_t *skey,
                                  mcim_store_t *st, const char *imsi);
mcim_cause_t mcim_auc_sync_gen_avs_in(struct mcim_auc_backend *b,
                                      const mcim_storage_key_t *skey, mcim_store_t *st,
                                      const char *imsi, int n, int64_t now,
                                      struct mcim_aka_av *avs, char *detail, size_t dlen);

#endif
