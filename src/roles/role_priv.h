/* Runtime internals shared by src/roles/runtime.c, common.c and outbox.c. */
#ifndef MCIM_ROLE_PRIV_H
#define MCIM_ROLE_PRIV_H

#include <pthread.h>
#include <stdbool.h>

#include "mcim/role.h"

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
  pthread_t prefetch; /* peer_prefetch_main: the peers' keys before the load */
  pthread_cond_t prefetch_cond;
  bool prefetch_running;
  bool stopping;
  bool wake;
  bool started;
  mcim_replay_cache_t replay;
  int64_t housekeeping_at; /* when the worker last swept (seconds) */
  int64_t purged_at;       /* when it last deleted records past record_retention */
  /* Messages their writers' transactions queued and claimed, committed, for the worker
   * (mcim_role_outbox_put, src/roles/common.c); under `lock`, oldest first. */
  struct outbox_handed *handed, **handed_tail;
  uint64_t outbox_scanned_ms; /* when the worker last looked for messages due (monotonic) */
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
/* Deliver what is due in the outbox (worker thread). */
void mcim_role_outbox_run(struct mcim_role *r);
/* The worker stops: the messages handed to it and not sent are released (due at once, for
 * another instance or the next start) and forgotten. */
void mcim_role_outbox_stop(struct mcim_role *r);

#endif
