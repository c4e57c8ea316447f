/* A PostgreSQL notification channel: LISTEN and NOTIFY on a connection of its own, served by a
 * thread of its own (pg_channel.h says what for).
 *
 * Why a connection of its own: a LISTENing session receives notifications only between its own
 * statements, and the store's pooled connections run the handlers' transactions; one idle
 * connection that waits in poll() on its socket gets each notification as the server sends it,
 * at the NOTIFYing transaction's commit. Sends go through the same connection, from the same
 * thread, so a caller (a handler right after its commit) only queues a string and never waits
 * on the network.
 *
 * What is not promised: delivery across a lost connection. The server forgets a session's
 * LISTEN with the session, so whatever was notified until it listens again is lost to it;
 * on_live(false) then on_live(true) tell the caller, which makes up for it (wake_relay.c
 * dispatches every held request again). Sends queued meanwhile go out after the reconnection. */
#include "store/pg_channel.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/store.h"
#include "mcim/util.h"

#define QUEUE_MAX 1024
#define PAYLOAD_MAX 7999  /* PostgreSQL's limit is 8000 bytes, terminator included */
#define RECONNECT_MS 1000 /* at most one attempt a second */
#define CHANNEL_MAX 63    /* NAMEDATALEN - 1 */

struct mcim_pg_channel {
  char *locator;
  char channel[CHANNEL_MAX + 1];
  struct mcim_pg_channel_cbs cbs;
  int efd; /* eventfd: a send queued, or the stop */
  pthread_t thread;
  pthread_mutex_t mu;
  char *queue[QUEUE_MAX]; /* FIFO ring of payloads to NOTIFY */
  size_t head, count;
  bool stopping;
  bool dropped_logged;
};

static bool is_identifier(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > CHANNEL_MAX || (s[0] >= '0' && s[0] <= '9'))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
      return false;
  return true;
}

static void kick(mcim_pg_channel_t *ch)
{
  uint64_t one = 1;
  ssize_t w = write(ch->efd, &one, sizeof(one)); /* at its maximum it is kicked already */
  (void)w;
}

static bool stopping(mcim_pg_channel_t *ch)
{
  pthread_mutex_lock(&ch->mu);
  bool s = ch->stopping;
  pthread_mutex_unlock(&ch->mu);
  return s;
}

/* Wait up to ms for the eventfd (a send or the stop); drains it. */
static void wait_kick(mcim_pg_channel_t *ch, int ms)
{
  struct pollfd p = {.fd = ch->efd, .events = POLLIN};
  if (poll(&p, 1, ms) > 0) {
    uint64_t v;
    ssize_t r = read(ch->efd, &v, sizeof(v));
    (void)r;
  }
}

static PGconn *connect_listen(mcim_pg_channel_t *ch)
{
  /* The locator's own parameters (expanded from "dbname") override these defaults. Keepalives
   * so that a server gone without a word is noticed within a minute, not two hours. */
  const char *const keys[] = {"connect_timeout",
                              "fallback_application_name",
                              "keepalives_idle",
                              "keepalives_interval",
                              "keepalives_count",
                              "dbname",
                              NULL};
  const char *const vals[] = {"10", "mcim-listen", "20", "10", "3", ch->locator, NULL};
  PGconn *db = PQconnectdbParams(keys, vals, 1);
  if (!db || PQstatus(db) != CONNECTION_OK) {
    char shown[512];
    mcim_store_locator_for_log(ch->locator, shown, sizeof(shown));
    mcim_log_warn("store postgres: channel %s: cannot connect to %s: %s", ch->channel, shown,
                  db ? PQerrorMessage(db) : "out of memory");
    PQfinish(db);
    return NULL;
  }
  char sql[32 + CHANNEL_MAX];
  snprintf(sql, sizeof(sql), "LISTEN %s", ch->channel); /* an identifier: is_identifier */
  PGresult *res = PQexec(db, sql);
  bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok)
    mcim_log_warn("store postgres: channel %s: LISTEN failed: %s", ch->channel, PQerrorMessage(db));
  PQclear(res);
  if (!ok || PQsetnonblocking(db, 0) != 0) {
    PQfinish(db);
    return NULL;
  }
  return db;
}

/* Send what is queued; false when the connection failed (what was not sent stays queued). */
static bool send_queued(mcim_pg_channel_t *ch, PGconn *db)
{
  for (;;) {
    pthread_mutex_lock(&ch->mu);
    char *p = ch->count ? ch->queue[ch->head] : NULL;
    pthread_mutex_unlock(&ch->mu);
    if (!p)
      return true;
    const char *params[2] = {ch->channel, p};
    PGresult *res = PQexecParams(db, "SELECT pg_notify($1, $2)", 2, NULL, params, NULL, NULL, 0);
    bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    if (!ok && PQstatus(db) != CONNECTION_OK)
      return false;
    if (!ok) /* refused by the server (not the connection): dropped, not retried for ever */
      mcim_log_warn("store postgres: channel %s: NOTIFY failed: %s", ch->channel,
                    PQerrorMessage(db));
    pthread_mutex_lock(&ch->mu);
    ch->queue[ch->head] = NULL;
    ch->head = (ch->head + 1) % QUEUE_MAX;
    ch->count--;
    pthread_mutex_unlock(&ch->mu);
    free(p);
  }
}

static void deliver(mcim_pg_channel_t *ch, PGconn *db)
{
  PGnotify *n;
  while ((n = PQnotifies(db)) != NULL) {
    if (ch->cbs.on_message && n->extra)
      ch->cbs.on_message(n->extra, ch->cbs.arg);
    PQfreemem(n);
  }
}

static void *channel_main(void *arg)
{
  mcim_thread_name("mcim-pglisten");
  mcim_pg_channel_t *ch = arg;
  while (!stopping(ch)) {
    PGconn *db = connect_listen(ch);
    if (!db) {
      wait_kick(ch, RECONNECT_MS);
      continue;
    }
    if (ch->cbs.on_live)
      ch->cbs.on_live(true, ch->cbs.arg);
    bool up = send_queued(ch, db);
    while (up && !stopping(ch)) {
      struct pollfd p[2] = {{.fd = PQsocket(db), .events = POLLIN},
                            {.fd = ch->efd, .events = POLLIN}};
      if (poll(p, 2, -1) < 0 && errno != EINTR)
        break;
      if (p[1].revents & POLLIN) {
        uint64_t v;
        ssize_t r = read(ch->efd, &v, sizeof(v));
        (void)r;
        up = send_queued(ch, db);
      }
      if (p[0].revents & (POLLIN | POLLERR | POLLHUP))
        up = up && PQconsumeInput(db) == 1;
      deliver(ch, db); /* also what arrived during the sends */
    }
    if (ch->cbs.on_live)
      ch->cbs.on_live(false, ch->cbs.arg);
    if (!up)
      mcim_log_warn("store postgres: channel %s: connection lost: %s", ch->channel,
                    PQerrorMessage(db));
    PQfinish(db);
    if (!up)
      wait_kick(ch, RECONNECT_MS);
  }
  return NULL;
}

mcim_cause_t mcim_pg_channel_open(const char *locator, const char *channel,
                                  const struct mcim_pg_channel_cbs *cbs, mcim_pg_channel_t **out)
{
  if (!locator || !channel || !cbs || !out || !is_identifier(channel))
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  mcim_pg_channel_t *ch = calloc(1, sizeof(*ch));
  if (!ch)
    return MCIM_NO_MEMORY;
  ch->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ch->locator = strdup(locator);
  snprintf(ch->channel, sizeof(ch->channel), "%s", channel);
  ch->cbs = *cbs;
  if (ch->efd < 0 || !ch->locator) {
    if (ch->efd >= 0)
      close(ch->efd);
    free(ch->locator);
    free(ch);
    return MCIM_NO_MEMORY;
  }
  pthread_mutex_init(&ch->mu, NULL);
  if (pthread_create(&ch->thread, NULL, channel_main, ch) != 0) {
    pthread_mutex_destroy(&ch->mu);
    close(ch->efd);
    free(ch->locator);
    free(ch);
    return MCIM_INTERNAL;
  }
  *out = ch;
  return MCIM_OK;
}

bool mcim_pg_channel_send(mcim_pg_channel_t *ch, const char *payload)
{
  if (!ch || !payload || strlen(payload) > PAYLOAD_MAX)
    return false;
  char *p = strdup(payload);
  if (!p)
    return false;
  bool queued = false, log_drop = false;
  pthread_mutex_lock(&ch->mu);
  if (!ch->stopping && ch->count < QUEUE_MAX) {
    ch->queue[(ch->head + ch->count) % QUEUE_MAX] = p;
    ch->count++;
    queued = true;
  } else if (!ch->dropped_logged) {
    ch->dropped_logged = log_drop = true;
  }
  pthread_mutex_unlock(&ch->mu);
  if (!queued) {
    free(p);
    if (log_drop)
      mcim_log_warn("store postgres: channel %s: %d notifications queued, dropping (logged once)",
                    ch->channel, QUEUE_MAX);
    return false;
  }
  kick(ch);
  /* the queue owns p now (freed once sent, or at the close) */
  // cppcheck-suppress memleak
  return true;
}

void mcim_pg_channel_close(mcim_pg_channel_t *ch)
{
  if (!ch)
    return;
  pthread_mutex_lock(&ch->mu);
  ch->stopping = true;
  pthread_mutex_unlock(&ch->mu);
  kick(ch);
  pthread_join(ch->thread, NULL);
  for (size_t i = 0; i < ch->count; i++)
    free(ch->queue[(ch->head + i) % QUEUE_MAX]);
  pthread_mutex_destroy(&ch->mu);
  close(ch->efd);
  free(ch->locator);
  free(ch);
}
