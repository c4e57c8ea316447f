/* A PostgreSQL notification channel (LISTEN/NOTIFY) on a connection of its own, served by a
 * thread of its own (src/store/pg_channel.c). What instances of one role on one database use
 * to tell each other "this changed" at once instead of polling (src/roles/wake_relay.c). */
#ifndef MCIM_STORE_PG_CHANNEL_H
#define MCIM_STORE_PG_CHANNEL_H

#include <stdbool.h>

#include "mcim/cause.h"

typedef struct mcim_pg_channel mcim_pg_channel_t;

/* Called from the channel's thread: a notification's payload (another connection's, or this
 * channel's own: the caller tells them apart); `live` true once the channel listens (again),
 * false when its connection is lost (notifications sent meanwhile are lost to it). */
struct mcim_pg_channel_cbs {
  void (*on_message)(const char *payload, void *arg);
  void (*on_live)(bool live, void *arg);
  void *arg;
};

/* Start listening on `channel` (a plain identifier) of the database `locator` names (a libpq
 * URI, as mcim_store_open takes it). Returns at once: the thread connects, and connects again
 * after a loss (at most one attempt a second), calling on_live each time. MCIM_INVALID_ARGUMENT
 * for a channel that is not an identifier. */
mcim_cause_t mcim_pg_channel_open(const char *locator, const char *channel,
                                  const struct mcim_pg_channel_cbs *cbs, mcim_pg_channel_t **out);
/* Queue `payload` (at most 7999 bytes, PostgreSQL's limit) for NOTIFY on the channel; the
 * thread sends it, after the caller's own commit (the caller calls this after committing).
 * Never blocks on the network. false when it could not be queued (full, too long, closed): the
 * receivers then learn of the change only by their own means. */
bool mcim_pg_channel_send(mcim_pg_channel_t *ch, const char *payload);
/* Stop the thread, close the connection. NULL is fine. */
void mcim_pg_channel_close(mcim_pg_channel_t *ch);

#endif
