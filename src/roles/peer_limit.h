/* A count per peer over fixed windows (DESIGN.md section 10: nothing a party can flood is
 * unbounded): the PVA's revocations per SHO and minute (src/roles/pva/revocations.c), the
 * refusals a role traces per counterpart and hour (src/roles/common.c). Two counts, each
 * bound checked by both: in memory, one per process, which turns a flood away without a write
 * (mcim_peer_limit_admit); and in the role's store, which every instance of the role shares
 * (mcim_peer_limit_admit_db, table peer_counts), so that several instances together admit
 * no more than one (since 2026-12-07; before, the limit was each instance's).
 *
 * A peer's count lives in one of MCIM_PEER_LIMIT_SLOTS slots. A slot of an earlier window is
 * free; when every slot is in use this window the smallest count gives way, so a peer that
 * sends much keeps its count, and it takes that many distinct peers to reset one. */
#ifndef MCIM_ROLES_PEER_LIMIT_H
#define MCIM_ROLES_PEER_LIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcim/store.h"

#define MCIM_PEER_LIMIT_SLOTS 256

struct mcim_peer_count {
  char peer[64];
  int64_t window; /* now / seconds of its count */
  int64_t n;
};

struct mcim_peer_limit {
  pthread_mutex_t lock;
  int64_t seconds; /* the window's length */
  struct mcim_peer_count slot[MCIM_PEER_LIMIT_SLOTS];
};

/* Windows of `seconds` (> 0), aligned on multiples of it since the epoch. */
void mcim_peer_limit_init(struct mcim_peer_limit *l, int64_t seconds);
void mcim_peer_limit_destroy(struct mcim_peer_limit *l);
/* Counts one event of `peer` (cut to 63 bytes) at `now` (seconds) and says whether it is
 * within `max` for that window; if not, counts nothing and *retry_after (may be NULL) gets the
 * seconds to the next window. */
bool mcim_peer_limit_admit(struct mcim_peer_limit *l, const char *peer, int64_t now, int64_t max,
                           int64_t *retry_after);
/* The same in the store, for the bound `what` with windows of `seconds` (> 0): one relaxed
 * upsert (a lost count errs towards admitting), in the caller's transaction if one is open;
 * never inside a batch (mcim_store_begin_batch: MCIM_INVALID_ARGUMENT, nothing counted).
 * *admitted: within `max` (counted), else not counted and *retry_after (may be NULL) the
 * seconds to the next window. A failing store answers its cause, *admitted false. */
mcim_cause_t mcim_peer_limit_admit_db(mcim_store_t *st, const char *what, const char *peer,
                                      int64_t now, int64_t seconds, int64_t max, bool *admitted,
                                      int64_t *retry_after);
/* The common migration's step (src/roles/common.c) and the housekeeping's delete of windows
 * past (older than `before`). */
extern const char mcim_peer_counts_schema_sql[];
mcim_cause_t mcim_peer_limit_purge_db(mcim_store_t *st, int64_t before);

#endif
