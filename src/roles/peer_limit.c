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
