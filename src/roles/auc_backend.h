/* The AuC backend: where an SHO or the RO's ICF gets its authentication vectors from.
 *
 * A backend is a struct of function pointers (struct mcim_auc_backend_ops) behind a handle;
 * role code calls the mcim_auc_backend_* functions below and never knows which one it has.
 * Two implementations:
 *   - "builtin": mcim's own AuC (src/roles/auc.c), the subscriber's K and OPc sealed in the
 *     role's store, SEQ_HE persisted before a vector leaves;
 *   - "osmo-hlr": an osmo-hlr reached over GSUP (IPA on TCP), SendAuthInfo for vectors and
 *     for resynchronisation (RAND and AUTS); K, OPc and SQN live in the HLR's database,
 *     where its CTRL interface creates and deletes subscribers.
 * Another HLR/HSS or a UDM is a third file that fills the same table (docs/operations.md,
 * "The AuC backend").
 *
 * Every call is made on the calling thread and blocks until it has its answer or its
 * timeout: a backend must be safe to call from several threads at once. `st` is the calling
 * thread's store (mcim_role_store): the built-in AuC works in it, a remote backend ignores
 * it. On a failure, `detail` (may be NULL) gets a human sentence for the problem's detail
 * and the log, never a key. */
#ifndef MCIM_ROLES_AUC_BACKEND_H
#define MCIM_ROLES_AUC_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/aka.h"
#include "mcim/seal.h"
#include "mcim/store.h"
#include "roles/auc.h"

enum {
  MCIM_AUC_MAX_AVS = 5,      /* vectors per request (GSUP's limit too) */
  MCIM_AUC_DETAIL_LEN = 192, /* room for a detail sentence */
};

struct mcim_auc_backend;

struct mcim_auc_backend_ops {
  const char *name; /* "builtin", "osmo-hlr" */
  /* Exactly `n` (1..MCIM_AUC_MAX_AVS) fresh vectors for `imsi`, each SQN issued once.
   * MCIM_UNKNOWN_IDENTITY, MCIM_SUBSCRIPTION_TERMINATED, MCIM_SUBSCRIPTION_NOT_ACTIVE,
   * MCIM_CREDENTIAL_EXPIRED; remote: MCIM_PEER_UNREACHABLE, MCIM_TIMEOUT, MCIM_PEER_ERROR,
   * MCIM_PEER_BAD_ANSWER. */
  mcim_cause_t (*gen_avs)(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi, int n,
                          int64_t now, struct mcim_aka_av *avs, char *detail, size_t dlen);
  /* Resynchronisation from the device's AUTS for `rand` (TS 33.102 6.3.5): MAC-S verified,
   * SEQ_HE moved so that the next vector is accepted. Then `n` (0..MCIM_AUC_MAX_AVS) fresh
   * vectors in `avs` (a remote AuC answers a resync with vectors anyway: asking for 0 loses
   * one SQN, which the USIM tolerates). MCIM_AUTS_INVALID when MAC-S does not verify. */
  mcim_cause_t (*resync)(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi,
                         const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                         const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                         struct mcim_aka_av *avs, char *detail, size_t dlen);
  /* Create the subscriber: Milenage K and OPc, the IND length MCIM_SQN_IND_BITS_DEFAULT (the
   * USIM side's). AMF: the built-in AuC keeps sub->amf; osmo-hlr 1.5 keeps none and its
   * vectors carry 0000. The built-in AuC writes in the caller's transaction if one is open
   * (sub->state, sub->expires are its own); osmo-hlr's CTRL is outside any transaction.
   * MCIM_CONFLICT if the IMSI exists. */
  mcim_cause_t (*create_sub)(struct mcim_auc_backend *b, mcim_store_t *st,
                             const struct mcim_auc_sub *sub, char *detail, size_t dlen);
  /* The subscriber's authentication data leaves the AuC: the built-in AuC marks it
   * terminated (no more vectors; purged after record_retention), osmo-hlr deletes it.
   * MCIM_UNKNOWN_IDENTITY if there is none. */
  mcim_cause_t (*delete_sub)(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi,
                             char *detail, size_t dlen);
  /* Optional (NULL: MCIM_UNSUPPORTED): whether the AuC holds `sub` with its K and OPc, so that
   * a create repeated after a crash (CONFLICT) is known for ours. MCIM_OK: the same keys;
   * MCIM_CONFLICT: other keys (someone else's subscriber: never touch it); MCIM_NOT_FOUND:
   * the subscriber exists without Milenage data (nobody can authenticate with it);
   * MCIM_UNKNOWN_IDENTITY: no such subscriber. */
  mcim_cause_t (*same_sub)(struct mcim_auc_backend *b, mcim_store_t *st,
                           const struct mcim_auc_sub *sub, char *detail, size_t dlen);
  void (*free)(struct mcim_auc_backend *b);
};

/* Implementations start with this member. request_timeout_ms: the longest one request to
 * the backend's peer may take (0: no peer); an intent's apply is bounded by a few of them
 * (auc_sync.c's claim). */
struct mcim_auc_backend {
  const struct mcim_auc_backend_ops *ops;
  int request_timeout_ms;
};

mcim_cause_t mcim_auc_backend_gen_avs(struct mcim_auc_backend *b, mcim_store_t *st,
                                      const char *imsi, int n, int64_t now,
                                      struct mcim_aka_av *avs, char *detail, size_t dlen);
mcim_cause_t mcim_auc_backend_resync(struct mcim_auc_backend *b, mcim_store_t *st,
                                     const char *imsi, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                     const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                     struct mcim_aka_av *avs, char *detail, size_t dlen);
mcim_cause_t mcim_auc_backend_create_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                         const struct mcim_auc_sub *sub, char *detail,
                                         size_t dlen);
mcim_cause_t mcim_auc_backend_delete_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                         const char *imsi, char *detail, size_t dlen);
mcim_cause_t mcim_auc_backend_same_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                       const struct mcim_auc_sub *sub, char *detail,
                                       size_t dlen);
const char *mcim_auc_backend_name(const struct mcim_auc_backend *b);
/* A cause that says the backend's peer failed (unreachable, too slow, an error or a malformed
 * answer), not the subscriber: worth a line in the log with the detail. */
bool mcim_auc_cause_is_remote(mcim_cause_t rc);
void mcim_auc_backend_free(struct mcim_auc_backend *b);

/* The built-in AuC (src/roles/auc.c) with the role's storage key (kept by reference: it must
 * outlive the backend). Exactly what mcim_auc_gen_avs and mcim_auc_resync do. */
mcim_cause_t mcim_auc_builtin_new(const mcim_storage_key_t *skey, struct mcim_auc_backend **out);

/* An osmo-hlr over GSUP (src/roles/auc_osmo_hlr.c). One TCP connection per request, one
 * request at a time, no osmocom select loop (see the file's comment); the IPA identity
 * `unit_name` (osmo-hlr gives every name its own IND: one name per role instance). */
struct mcim_auc_osmo_hlr_cfg {
  const char *gsup_addr; /* IPv4 address of the HLR's GSUP server */
  uint16_t gsup_port;    /* 0: 4222 */
  const char *ctrl_addr; /* IPv4 address of its CTRL interface (loopback!); NULL: gsup_addr */
  uint16_t ctrl_port;    /* 0: 4259 */
  const char *unit_name; /* IPA unit name, 1..63 bytes */
  int timeout_ms;        /* the whole request, its turn included; 0: 3000; at most 600000 */
};
mcim_cause_t mcim_auc_osmo_hlr_new(const struct mcim_auc_osmo_hlr_cfg *cfg,
                                   struct mcim_auc_backend **out);

/* Test hook: the checks applied to a GSUP answer from the HLR, on raw bytes (the payload
 * after the IPA header and its GSUP extension byte). MCIM_OK and `avs` filled, or the cause
 * the backend returns for such an answer, with `detail`. */
mcim_cause_t mcim_auc_osmo_hlr_check_answer_(const uint8_t *msg, size_t len, const char *imsi,
                                             int n, struct mcim_aka_av *avs, char *detail,
                                             size_t dlen);

#endif
