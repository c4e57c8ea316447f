/* A count per peer over fixed windows (peer_limit.h). */
#include "roles/peer_limit.h"

#include <stdio.h>
#include <string.h>

void mcim_peer_limit_init(struct mcim_peer_limit *l, int64_t seconds)
{
  memset(l, 0, sizeof(*l));
  l->seconds = seconds > 0 ? seconds : 1;
  pthread_mutex_init(&l->lock, NULL);
}

void mcim_peer_limit_destroy(struct mcim_peer_limit *l)
{
  pthread_mutex_destroy(&l->lock);
}

bool mcim_peer_limit_admit(struct mcim_peer_limit *l, const char *peer, int64_t now, int64_t max,
                           int64_t *retry_after)
{
  char key[sizeof(l->slot[0].peer)];
  snprintf(key, sizeof(key), "%s", peer ? peer : "");
  /* window 0 marks a free slot: windows start at 1 */
  int64_t window = now / l->seconds + 1;
  struct mcim_peer_count *c = NULL, *free_slot = NULL, *least = NULL;
  bool ok;
  pthread_mutex_lock(&l->lock);
  for (size_t i = 0; i < MCIM_PEER_LIMIT_SLOTS && !c; i++) {
    struct mcim_peer_count *s = &l->slot[i];
    if (s->window == window && strcmp(s->peer, key) == 0)
      c = s;
    else if (s->window != window && !free_slot)
      free_slot = s;
    else if (s->window == window && (!least || s->n < least->n))
      least = s;
  }
  if (!c) { /* a new count this window: a free slot, else the smallest count gives way */
    c = free_slot ? free_slot : least;
    memcpy(c->peer, key, sizeof(key));
    c->window = window;
    c->n = 0;
  }
  ok = c->n < max;
  if (ok)
    c->n++;
  else if (retry_after)
    *retry_after = window * l->seconds - now;
  pthread_mutex_unlock(&l->lock);
  return ok;
}

const char mcim_peer_counts_schema_sql[] =
    "CREATE TABLE peer_counts (what TEXT NOT NULL, peer TEXT NOT NULL,"
    " window_start BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (what, peer, window_start));"
    "CREATE INDEX peer_counts_window ON peer_counts (window_start)";

static mcim_cause_t count_row(const mcim_row_t *row, void *arg)
{
  (void)row;
  *(bool *)arg = true;
  return MCIM_OK;
}

mcim_cause_t mcim_peer_limit_admit_db(mcim_store_t *st, const char *what, const char *peer,
                                      int64_t now, int64_t seconds, int64_t max, bool *admitted,
                                      int64_t *retry_after)
{
  *admitted = false;
  if (!st || !what || seconds <= 0)
    return MCIM_INVALID_ARGUMENT;
  char key[64];
  snprintf(key, sizeof(key), "%s", peer ? peer : ""); /* as the memory's count cuts it */
  int64_t start = now - now % seconds;
  /* The count goes up only while under `max`, in the statement that reads it: two instances
   * at once take turns on the row (PostgreSQL's row lock, SQLite's one writer). The row comes
   * back only when it was counted (RETURNING), which also makes the call a read: inside a
   * batch, whose statements run only at its commit, it is refused (MCIM_INVALID_ARGUMENT)
   * rather than answered from another statement's count. */
  mcim_val_t p[] = {MCIM_TEXT(what), MCIM_TEXT(key), MCIM_INT(start), MCIM_INT(max)};
  mcim_cause_t rc = mcim_store_exec_relaxed(
      st,
      "INSERT INTO peer_counts (what, peer, window_start, n) VALUES (?, ?, ?, 1)"
      " ON CONFLICT (what, peer, window_start) DO UPDATE SET n = peer_counts.n + 1"
      " WHERE peer_counts.n < ? RETURNING n",
      p, MCIM_NPARAMS(p), count_row, admitted);
  if (rc != MCIM_OK) {
    *admitted = false;
    return rc;
  }
  if (!*admitted && retry_after)
    *retry_after = start + seconds - now;
  return MCIM_OK;
}

mcim_cause_t mcim_peer_limit_purge_db(mcim_store_t *st, int64_t before)
{
  mcim_val_t p[] = {MCIM_INT(before)};
  return mcim_store_exec(st, "DELETE FROM peer_counts WHERE window_start < ?", p, 1, NULL, NULL);
}
