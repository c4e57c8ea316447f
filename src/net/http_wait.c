/* Long polls (RFC 7240 "Prefer: wait=N"): a handler's "not yet" answer (a package not stored
 * yet, a validation not asked yet, a subscription not active yet) is held instead of sent when
 * the client asked to wait, and the request is dispatched again when what it waits for may
 * have happened: a handler of this process made it true (mcim_http_wake, after its commit),
 * the request's wait ended, or, where another instance of the role on the same database may
 * make it true, every recheck interval. A device then asks once instead of polling every
 * poll_ms, and gets its answer at the commit, not up to a poll later.
 *
 * libmicrohttpd serves many connections on each of its few threads, so a handler must never
 * block: the connection is suspended (MHD_suspend_connection, from the access handler, the
 * only place it may be) and resumed later from this file's thread or the waking handler;
 * MHD then calls the access handler again, which dispatches the request anew (the same
 * checks, the store read again). A wake that came between the dispatch's read and the
 * suspension is not lost: recent wakes are kept (a ring of keys and times), and a request
 * woken since its dispatch began is dispatched again at once instead of held.
 *
 * Several instances on one database: a wake is also handed to the relay (mcim_http_wake_relay:
 * src/roles/wake_relay.c, a PostgreSQL NOTIFY), whose receiving side wakes the others' held
 * requests (mcim_http_wake_local). While the relay is live the rechecks slow down to every
 * LIVE_RECHECK_MS (a wake may be lost at its sender); when it becomes live every held request
 * is dispatched once, for the wakes it may have missed.
 *
 * A thread may also wait for a key within its own call (mcim_http_await_wake): a handler that
 * must see another instance's work finish before it answers (the AuC's create of a
 * subscriber, src/roles/auc_sync.c). It is woken by the same wakes, local or relayed, and it
 * is also let go every recheck interval (LIVE_RECHECK_MS while the relay is live), as a held
 * request is.
 *
 * Bounds: at most MAX_HELD requests held by the process (more are answered "not yet" at once,
 * as without the header), each at most the server's long_poll_max_s, and a held connection
 * still counts against the connection limits. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "mcim/metrics.h"
#include "mcim/util.h"
#include "net/http_priv.h"

#define MAX_HELD 4096
#define RECENT 256
/* While the relay is live a held request is still looked at again this often (at least its
 * own recheck): a wake can be lost on the way, at the sending instance (its channel down or
 * its queue full, NOTIFY refused, killed between its commit and the NOTIFY), where this
 * instance cannot see it (review of 2026-12-07). Rare: seconds, not the whole long poll. */
#define LIVE_RECHECK_MS 2000u

struct held {
  struct held *next;
  const void *srv;
  struct MHD_Connection *conn;
  char key[MCIM_HTTP_WAIT_KEY_LEN];
  uint64_t until_ns;   /* the wait's end: answered "not yet" then */
  uint64_t recheck_ns; /* 0: none; else dispatched again at this time */
  uint64_t live_recheck_ns; /* the same while the relay is live (LIVE_RECHECK_MS) */
  unsigned recheck_ms;
  bool woken;
};

struct recent_wake {
  char key[MCIM_HTTP_WAIT_KEY_LEN];
  uint64_t at_ns;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static pthread_once_t cv_once = PTHREAD_ONCE_INIT;
static struct held *held_list;
static size_t held_n;
static bool thread_started;
static struct recent_wake recent[RECENT];
static unsigned recent_pos;
/* when the newest wake the ring forgot came (overwritten), and when the relay last became
 * live: a request that read the store before either may have missed its wake */
static uint64_t recent_lost_ns, relay_live_ns;
/* the other instances: told by relay_fn, their wakes delivered (relay_live) or not */
static void (*relay_fn)(const char *key, void *arg);
static void *relay_arg;
static bool relay_live;
/* threads in mcim_http_await_wake: each on the stack of its caller, in the list while it waits */
struct key_waiter {
  struct key_waiter *next;
  const char *key;
  bool woken;
};
static struct key_waiter *key_waiters;
static pthread_cond_t key_cv;

static void cv_init(void)
{
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&cv, &a);
  pthread_cond_init(&key_cv, &a);
  pthread_condattr_destroy(&a);
}

static bool woken_since(const char *key, uint64_t since_ns)
{
  /* Not known: taken as woken, so the caller reads the store again (review of 2026-12-07:
   * more than RECENT wakes between a request's read and its hold pushed its own out, and a
   * relay back from an outage wakes only the requests held by then). */
  if (recent_lost_ns >= since_ns || relay_live_ns >= since_ns)
    return true;
  for (unsigned i = 0; i < RECENT; i++)
    if (recent[i].at_ns >= since_ns && recent[i].key[0] && strcmp(recent[i].key, key) == 0)
      return true;
  return false;
}

/* Take the due ones out of the list (under mu): woken, at their end, or at their recheck. */
static size_t take_due(uint64_t now, struct MHD_Connection **out, size_t max, uint64_t *next)
{
  size_t n = 0;
  *next = UINT64_MAX;
  for (struct held **pp = &held_list; *pp;) {
    struct held *h = *pp;
    /* while the relay delivers every instance's wakes, a slow recheck only: a wake comes */
    uint64_t recheck_ns = relay_live ? h->live_recheck_ns : h->recheck_ns;
    bool due = h->woken || now >= h->until_ns || (recheck_ns && now >= recheck_ns);
    if (due && n < max) {
      out[n++] = h->conn;
      *pp = h->next;
      held_n--;
      free(h);
      continue;
    }
    uint64_t at = recheck_ns && recheck_ns < h->until_ns ? recheck_ns : h->until_ns;
    if (due) /* more due than one round takes: the next round at once */
      at = now;
    if (at < *next)
      *next = at;
    pp = &h->next;
  }
  return n;
}

/* The one thread that resumes held requests at their end or recheck (a wake resumes at once
 * from the waking thread). It sleeps while nothing is held. Resumed outside the lock: a
 * connection taken from the list is this thread's to resume, and stays suspended (so alive)
 * until it is. */
static void *resumer_main(void *arg)
{
  mcim_thread_name("mcim-resumer");
  struct MHD_Connection *due[64];
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    uint64_t next;
    size_t n = take_due(mcim_monotonic_ns(), due, 64, &next);
    if (n) {
      pthread_mutex_unlock(&mu);
      for (size_t i = 0; i < n; i++)
        MHD_resume_connection(due[i]);
      pthread_mutex_lock(&mu);
      continue;
    }
    if (next == UINT64_MAX) {
      pthread_cond_wait(&cv, &mu);
      continue;
    }
    struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                          .tv_nsec = (long)(next % 1000000000u)};
    pthread_cond_timedwait(&cv, &mu, &ts);
  }
  return NULL;
}

int mcim_http_hold_(const void *srv, struct MHD_Connection *conn, const char *key,
                    uint64_t since_ns, uint64_t until_ns, unsigned recheck_ms)
{
  int held = 0;
  pthread_once(&cv_once, cv_init);
  pthread_mutex_lock(&mu);
  if (woken_since(key, since_ns)) {
    held = -1;
    goto out;
  }
  if (held_n >= MAX_HELD)
    goto out;
  if (!thread_started) {
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    thread_started = pthread_create(&th, &a, resumer_main, NULL) == 0;
    pthread_attr_destroy(&a);
    if (!thread_started)
      goto out;
  }
  struct held *h = calloc(1, sizeof(*h));
  if (!h)
    goto out;
  h->srv = srv;
  h->conn = conn;
  snprintf(h->key, sizeof(h->key), "%s", key);
  h->until_ns = until_ns;
  h->recheck_ms = recheck_ms;
  uint64_t now = mcim_monotonic_ns();
  h->recheck_ns = recheck_ms ? now + (uint64_t)recheck_ms * 1000000u : 0;
  h->live_recheck_ns =
      recheck_ms ? now + (uint64_t)(recheck_ms > LIVE_RECHECK_MS ? recheck_ms : LIVE_RECHECK_MS) *
                             1000000u
                 : 0;
  /* suspended before anyone can find it in the list, so no resume comes first */
  MHD_suspend_connection(conn);
  h->next = held_list;
  held_list = h;
  held_n++;
  held = 1;
  pthread_cond_signal(&cv);
out:
  pthread_mutex_unlock(&mu);
  return held;
}

/* The held requests on `key` dispatched again; `source` counts them (the metric's label). */
static void wake_key(const char *key, const char *source)
{
  size_t n = key ? strlen(key) : 0;
  if (n == 0 || n >= MCIM_HTTP_WAIT_KEY_LEN)
    return;
  pthread_once(&cv_once, cv_init);
  pthread_mutex_lock(&mu);
  if (recent[recent_pos].key[0])
    recent_lost_ns = recent[recent_pos].at_ns;
  recent[recent_pos].at_ns = mcim_monotonic_ns();
  memcpy(recent[recent_pos].key, key, n + 1);
  recent_pos = (recent_pos + 1) % RECENT;
  unsigned woken = 0;
  for (struct held *h = held_list; h; h = h->next)
    if (strcmp(h->key, key) == 0 && !h->woken) {
      h->woken = true;
      woken++;
    }
  if (woken)
    pthread_cond_signal(&cv);
  bool threads = false;
  for (struct key_waiter *w = key_waiters; w; w = w->next)
    if (!w->woken && strcmp(w->key, key) == 0)
      threads = w->woken = true;
  if (threads)
    pthread_cond_broadcast(&key_cv);
  pthread_mutex_unlock(&mu);
  if (woken)
    mcim_metric_add(&mcim_m_http_long_poll_wakes, MCIM_LABELS(source), woken);
}

void mcim_http_wake_local(const char *key)
{
  wake_key(key, "instance");
}

void mcim_http_wake(const char *fmt, ...)
{
  char key[MCIM_HTTP_WAIT_KEY_LEN];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(key, sizeof(key), fmt, ap);
  va_end(ap);
  if (n <= 0 || (size_t)n >= sizeof(key))
    return; /* no request waits on a key that long (mcim_http_reply_wait_on refuses it) */
  wake_key(key, "commit");
  pthread_mutex_lock(&mu);
  void (*fn)(const char *, void *) = relay_fn;
  void *arg = relay_arg;
  pthread_mutex_unlock(&mu);
  if (fn)
    fn(key, arg);
}

void mcim_http_wake_relay(void (*fn)(const char *key, void *arg), void *arg)
{
  pthread_once(&cv_once, cv_init);
  pthread_mutex_lock(&mu);
  relay_fn = fn;
  relay_arg = arg;
  if (!fn)
    relay_live = false;
  pthread_mutex_unlock(&mu);
}

void mcim_http_wake_live(bool live)
{
  pthread_once(&cv_once, cv_init);
  pthread_mutex_lock(&mu);
  bool was = relay_live;
  unsigned woken = 0;
  relay_live = live && relay_fn;
  if (relay_live && !was)
    relay_live_ns = mcim_monotonic_ns();
  if (relay_live && !was) /* wakes sent while it was not live were lost to us */
    for (struct held *h = held_list; h; h = h->next)
      if (!h->woken) {
        h->woken = true;
        woken++;
      }
  pthread_cond_signal(&cv); /* the resumer's next time changes either way */
  for (struct key_waiter *w = key_waiters; w; w = w->next)
    if (relay_live && !was)
      w->woken = true;             /* as the held requests: a wake may have been missed */
  pthread_cond_broadcast(&key_cv); /* and the waiting threads' rechecks change */
  pthread_mutex_unlock(&mu);
  if (woken)
    mcim_metric_add(&mcim_m_http_long_poll_wakes, MCIM_LABELS("relisten"), woken);
}

size_t mcim_http_release_(const void *srv)
{
  size_t n = 0;
  pthread_once(&cv_once, cv_init);
  pthread_mutex_lock(&mu);
  for (struct held *h = held_list; h; h = h->next)
    if (h->srv == srv) {
      h->woken = true;
      n++;
    }
  if (n)
    pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  return n;
}

bool mcim_http_await_wake(const char *key, uint64_t since_ns, unsigned max_ms, unsigned recheck_ms)
{
  size_t n = key ? strlen(key) : 0;
  if (n == 0 || n >= MCIM_HTTP_WAIT_KEY_LEN)
    return false;
  pthread_once(&cv_once, cv_init);
  uint64_t start = mcim_monotonic_ns();
  uint64_t end = start + (uint64_t)max_ms * 1000000u;
  uint64_t recheck = start + (uint64_t)recheck_ms * 1000000u;
  uint64_t live_recheck =
      start + (uint64_t)(recheck_ms > LIVE_RECHECK_MS ? recheck_ms : LIVE_RECHECK_MS) * 1000000u;
  struct key_waiter w = {.key = key};
  pthread_mutex_lock(&mu);
  w.woken = woken_since(key, since_ns); /* woken between the caller's read and now */
  w.next = key_waiters;
  key_waiters = &w;
  while (!w.woken) {
    /* the relay's state may change while waiting: its rechecks with it */
    uint64_t again = relay_live ? live_recheck : recheck;
    uint64_t until = recheck_ms && again < end ? again : end;
    if (mcim_monotonic_ns() >= until)
      break;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                          .tv_nsec = (long)(until % 1000000000u)};
    pthread_cond_timedwait(&key_cv, &mu, &ts);
  }
  for (struct key_waiter **pp = &key_waiters; *pp; pp = &(*pp)->next)
    if (*pp == &w) {
      *pp = w.next;
      break;
    }
  pthread_mutex_unlock(&mu);
  return w.woken;
}
