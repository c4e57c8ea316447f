/* Runtime internals shared by src/roles/runtime.c (and its runtime_config.c and
 * runtime_worker.c), common.c and outbox.c. */
#ifndef MCIM_ROLE_PRIV_H
#define MCIM_ROLE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/role.h"
#include "roles/peer_limit.h"

struct mcim_role_priv {
  mcim_config_spec_t *spec;
  char *db_locator;
  struct mcim_http_route *routes;
  pthread_key_t store_key;
  /* Free store connections, most recently given back last (mcim_role_store). */
  pthread_mutex_t pool_lock;
  mcim_store_t **pool;
  size_t npool, pool_cap;
  pthread_key_t client_key;
  bool keys_created;
  pthread_mutex_t lock;
  pthread_mutex_t peers_lock;
  pthread_cond_t cond;
  pthread_t worker;
  bool worker_running;
  pthread_t prefetch; /* mcim_role_peer_prefetch_main: the peers' keys before the load */
  pthread_cond_t prefetch_cond;
  bool prefetch_running;
  bool stopping;
  bool wake;
  bool started;
  mcim_replay_cache_t replay;
  int64_t housekeeping_at; /* when the worker last swept (seconds) */
  int64_t purged_at;       /* when it last deleted records past record_retention */
  /* refusals traced per counterpart and hour (common.c, traced_refusals_per_hour) */
  struct mcim_peer_limit traced_refusals;
  /* Messages their writers' transactions queued and claimed, committed, for the worker
   * (mcim_role_outbox_put, src/roles/outbox.c); under `lock`, oldest first. */
  struct outbox_handed *handed, **handed_tail;
  /* The worker's polls of the store (runtime_worker.c, mcim_role_worker_main), under `lock`:
   * outbox_due_ms, when the earliest retry this instance recorded or the next message the
   * last poll saw in the store comes due (wall clock ms, 0: none: a lease that ends, another
   * instance's retry), polled then whatever the backoff; poll_soon, the backoff ends (a message
   * written but not handed, found only by a poll); polls and poll_period_ms, how many polls
   * so far and the interval to the next one (mcim_role_worker_polls). */
  int64_t outbox_due_ms;
  bool poll_soon;
  uint64_t polls;
  int64_t poll_period_ms;
  /* PostgreSQL: the long polls' wakes to and from the other instances (wake_relay.c) */
  struct wake_relay *wake_relay;
};

/* Schema every role has: trace, answers, replay, outbox (component "common"). */
mcim_cause_t mcim_role_common_migrate(mcim_store_t *st);
/* The role's storage key opens the check value sealed into its database at the first start
 * (sealed now when there is none): else MCIM_UNSEAL_FAILED, logged with the cause
 * (src/roles/keycheck.c). */
mcim_cause_t mcim_role_storage_key_check(struct mcim_role *r, mcim_store_t *st);
/* The trace events of one procedure, as a JSON array (mcim_trace_event_to_json form). */
mcim_cause_t mcim_role_trace_load(struct mcim_role *r, const char *txn, json_t **events);
void mcim_role_replay_init(struct mcim_role *r);
void mcim_role_replay_fini(struct mcim_role *r);
/* Drop what has served its time (worker thread, at most once a second): spent replay-cache
 * entries past their expiry, stored answers and finished outbox messages past
 * answer_retention. */
void mcim_role_housekeeping(struct mcim_role *r);
/* outbox.c: deliver the messages handed to the worker and, with `poll`, those due in the
 * store (worker thread). Returns how many it found due in the store (a full batch of handed
 * messages, which leaves no room to look, counts as one): 0 when it did not look or found
 * none. */
size_t mcim_role_outbox_run(struct mcim_role *r, bool poll);
/* The worker's polls so far and the interval to its next one (ms): for tests. */
void mcim_role_worker_polls(struct mcim_role *r, uint64_t *polls, int64_t *period_ms);
/* The long polls' wakes between instances on PostgreSQL (src/roles/wake_relay.c): started
 * before the server serves (nothing on SQLite), stopped once no handler or worker runs. */
mcim_cause_t mcim_role_wake_relay_start(struct mcim_role *r);
void mcim_role_wake_relay_stop(struct mcim_role *r);
/* outbox.c: the worker stops, the messages handed to it and not sent are released (due at
 * once, for another instance or the next start) and forgotten. */
void mcim_role_outbox_stop(struct mcim_role *r);

/* runtime_config.c: the common keys followed by the kind's keys (and the AuC backend's, for a
 * kind with an AuC); *n of them; the caller frees it */
mcim_config_spec_t *mcim_role_merged_spec(const struct mcim_role_kind *kind, size_t *n);
/* runtime_worker.c: the worker thread's and the peers' keys prefetch thread's functions */
void *mcim_role_worker_main(void *arg);
void *mcim_role_peer_prefetch_main(void *arg);

#endif
