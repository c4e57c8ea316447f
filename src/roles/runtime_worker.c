/* A role's background threads (runtime.c starts them): the worker, which delivers the
 * outbox's messages, runs the kind's sweeps and the housekeeping, and polls the store with a
 * backoff while it finds nothing; the peers' statement keys fetched from the start; and the
 * wake of the worker once a handler's answer is sent (mcim_role_wake). Apart from runtime.c:
 * what runs after start-up, on its own thread. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "mcim/http.h"
#include "mcim/role.h"
#include "mcim/util.h"
#include "roles/role_priv.h"

/* The worker. Each round sends the messages its role's handlers handed it (at once: their
 * commits wake it) and, when it polls, looks in the store for what only a look finds: the
 * outbox's messages due (retries, messages of an instance that died once their leases end,
 * or not handed as written), the kind's sweeps (expiries) and the housekeeping. A poll comes
 * tick_ms after the last one while polls find something; each that finds nothing doubles the
 * interval, up to idle_tick_max_ms, so an idle role does not keep its database busy (the lab's
 * six roles at tick_ms 50 cost its PostgreSQL about 5% of a core doing nothing,
 * docs/performance.md). Bounds: a handed message at once; a retry this instance recorded,
 * and a message the last poll saw in the store not due yet (a lease that ends), when it is
 * due (outbox_due_ms); a message written but not handed ends the backoff (poll_soon);
 * anything else a poll finds at most idle_tick_max_ms after it is due. Handed
 * messages do not end the backoff: under load the worker runs a round after nearly every
 * commit, and the polls need not come with them. */
void *mcim_role_worker_main(void *arg)
{
  mcim_thread_name("mcim-worker");
  struct mcim_role *r = arg;
  struct mcim_role_priv *p = r->priv;
  int64_t tick = mcim_config_int(r->cfg, "tick_ms");
  int64_t idle_max = mcim_config_int(r->cfg, "idle_tick_max_ms");
  int64_t period = tick;
  uint64_t polled_ms = 0;
  bool polled = false;
  if (idle_max < tick)
    idle_max = tick;
  pthread_mutex_lock(&p->lock);
  p->poll_period_ms = period;
  while (!p->stopping) {
    uint64_t now_ms = mcim_monotonic_ns() / 1000000u;
    if (p->poll_soon) {
      p->poll_soon = false;
      period = tick;
    }
    bool poll = !polled || now_ms - polled_ms >= (uint64_t)period;
    bool due = p->outbox_due_ms != 0 && mcim_now_us() / 1000 >= p->outbox_due_ms;
    if (poll || due)
      p->outbox_due_ms = 0; /* what it finds is recorded again if still to be retried */
    pthread_mutex_unlock(&p->lock);
    size_t found = mcim_role_outbox_run(r, poll || due);
    if (poll) {
      polled = true;
      polled_ms = now_ms;
      mcim_role_housekeeping(r); /* at most once a second (its own check) */
      if (r->kind->tick && r->kind->tick(r))
        found++;
    }
    if (found > 0)
      period = tick;
    else if (poll)
      period = period * 2 < idle_max ? period * 2 : idle_max;
    mcim_role_store_release(r); /* its cache goes on to the next request */
    pthread_mutex_lock(&p->lock);
    if (poll) {
      p->polls++;
      p->poll_period_ms = period;
    }
    if (p->stopping)
      break;
    if (!p->wake) {
      if (p->poll_soon)
        period = tick;
      int64_t wait_ms =
          (int64_t)(polled_ms + (uint64_t)period) - (int64_t)(mcim_monotonic_ns() / 1000000u);
      if (p->outbox_due_ms != 0) {
        int64_t due_in = p->outbox_due_ms - mcim_now_us() / 1000;
        if (due_in < wait_ms)
          wait_ms = due_in;
      }
      if (wait_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        ts.tv_sec += (time_t)(wait_ms / 1000) + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&p->cond, &p->lock, &ts);
      }
    }
    p->wake = false;
  }
  pthread_mutex_unlock(&p->lock);
  mcim_role_outbox_stop(r); /* the server has stopped: nothing is handed any more */
  mcim_role_store_release(r);
  /* per-thread store and client are closed by their key destructors */
  return NULL;
}

void mcim_role_worker_polls(struct mcim_role *r, uint64_t *polls, int64_t *period_ms)
{
  pthread_mutex_lock(&r->priv->lock);
  *polls = r->priv->polls;
  *period_ms = r->priv->poll_period_ms;
  pthread_mutex_unlock(&r->priv->lock);
}

/* The peers' statement keys, fetched in the background from the start. Why: handler threads
 * call peers synchronously (the VNO asks the ICF at the RO for vectors; the RO checks a VNO
 * token with the VNO's key, fetched the first time it is needed). With the caches empty and
 * every thread of both pools in such a call, each side waited for the other until
 * peer_timeout_ms: the first discoveries of a fresh lab under loadgen answered 504 after
 * 5.0 s ("no verified key for peer vno"). Fetched before the load, the key is there. A peer
 * not reachable yet is asked again, 1 s later, then ever less often (up to a minute), until
 * every peer's key is known or the role stops. */
void *mcim_role_peer_prefetch_main(void *arg)
{
  mcim_thread_name("mcim-peerkeys");
  struct mcim_role *r = arg;
  struct mcim_role_priv *p = r->priv;
  int64_t wait_s = 1;
  for (;;) {
    json_t *names = json_array();
    const char *name;
    json_t *url;
    pthread_mutex_lock(&p->peers_lock);
    json_object_foreach (r->peers, name, url) {
      if (names && strcmp(name, r->name) != 0)
        json_array_append_new(names, json_string(name));
    }
    pthread_mutex_unlock(&p->peers_lock);
    size_t missing = names ? mcim_role_peer_keys_prefetch(r, names) : 1;
    json_decref(names);
    pthread_mutex_lock(&p->lock);
    if (missing == 0 || p->stopping) {
      pthread_mutex_unlock(&p->lock);
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_s;
    pthread_cond_timedwait(&p->prefetch_cond, &p->lock, &ts);
    bool stop = p->stopping;
    pthread_mutex_unlock(&p->lock);
    if (stop)
      break;
    wait_s = wait_s < 32 ? wait_s * 2 : 60;
  }
  return NULL;
}

static void wake_now(void *arg)
{
  struct mcim_role *r = arg;
  pthread_mutex_lock(&r->priv->lock);
  r->priv->wake = true;
  pthread_cond_signal(&r->priv->cond);
  pthread_mutex_unlock(&r->priv->lock);
}

/* From a request handler, once its answer is sent: what the handler's commit handed the
 * worker (a DRF discovery's step-8 announcement: a request to the SHO, which sets off the
 * SHO's and the PVA's work) then does not compete with the answer for the 2 cores it was
 * measured on (docs/performance.md, "The DRF at operator scale"). */
void mcim_role_wake(struct mcim_role *r) { mcim_http_after_reply(wake_now, r); }
