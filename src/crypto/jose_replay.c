/* The in-memory replay cache of JWS jti values (a role's store keeps its own in its database;
 * this one serves a process without a store). */
#include "mcim/jose.h"

#include <cjose/cjose.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/jose_priv.h"
#include "crypto/verdicts.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

int64_t mcim_replay_expires(int64_t exp, int64_t skew)
{
  if (skew <= 0)
    return exp;
  return exp > INT64_MAX - skew ? INT64_MAX : exp + skew;
}

/* ---- in-memory replay cache --------------------------------------------------------- */

struct replay_entry {
  uint64_t hash;
  int64_t expires; /* <= now: free for reuse */
  char *iss;
  char *jti;
};

struct mcim_replay_mem {
  pthread_mutex_t lock;
  size_t cap;
  size_t used; /* slots ever filled; [0, used) are scanned */
  struct replay_entry *e;
};

static uint64_t replay_hash(const char *iss, const char *jti)
{
  uint64_t h = 0xcbf29ce484222325u; /* FNV-1a; a quick filter before strcmp, not security */
  for (const char *s = iss; *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3u;
  h = (h ^ 0xff) * 0x100000001b3u; /* separator: ("ab","c") differs from ("a","bc") */
  for (const char *s = jti; *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3u;
  return h;
}

static mcim_cause_t replay_mem_check(void *ctx, const char *iss, const char *jti, int64_t expires,
                                     int64_t now)
{
  struct mcim_replay_mem *m = ctx;
  if (!m || !iss || !jti)
    return MCIM_INVALID_ARGUMENT;
  uint64_t h = replay_hash(iss, jti);
  mcim_cause_t rc = MCIM_OK;
  size_t slot = SIZE_MAX;

  pthread_mutex_lock(&m->lock);
  for (size_t i = 0; i < m->used; i++) {
    struct replay_entry *e = &m->e[i];
    if (e->expires <= now) {
      if (slot == SIZE_MAX)
        slot = i;
      continue;
    }
    if (e->hash == h && strcmp(e->iss, iss) == 0 && strcmp(e->jti, jti) == 0) {
      rc = MCIM_REPLAY;
      goto unlock;
    }
  }
  if (slot == SIZE_MAX && m->used < m->cap)
    slot = m->used++;
  if (slot == SIZE_MAX) {
    /* Evicting a live entry would reopen a replay window: refuse instead. */
    rc = MCIM_REPLAY_CACHE_FULL;
    goto unlock;
  }
  char *iss_copy = strdup(iss), *jti_copy = strdup(jti);
  if (!iss_copy || !jti_copy) {
    free(iss_copy);
    free(jti_copy);
    rc = MCIM_NO_MEMORY;
    goto unlock;
  }
  struct replay_entry *e = &m->e[slot];
  free(e->iss);
  free(e->jti);
  *e = (struct replay_entry){.hash = h, .expires = expires, .iss = iss_copy, .jti = jti_copy};
unlock:
  pthread_mutex_unlock(&m->lock);
  return rc;
}

mcim_replay_mem_t *mcim_replay_mem_new(size_t capacity)
{
  if (capacity == 0)
    return NULL;
  mcim_replay_mem_t *m = calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  m->e = calloc(capacity, sizeof(*m->e));
  if (!m->e || pthread_mutex_init(&m->lock, NULL) != 0) {
    free(m->e);
    free(m);
    return NULL;
  }
  m->cap = capacity;
  return m;
}

void mcim_replay_mem_free(mcim_replay_mem_t *m)
{
  if (!m)
    return;
  for (size_t i = 0; i < m->used; i++) {
    free(m->e[i].iss);
    free(m->e[i].jti);
  }
  pthread_mutex_destroy(&m->lock);
  free(m->e);
  free(m);
}

mcim_replay_cache_t mcim_replay_mem_cache(mcim_replay_mem_t *m)
{
  return (mcim_replay_cache_t){.check_and_insert = replay_mem_check, .ctx = m};
}

size_t mcim_replay_mem_count(mcim_replay_mem_t *m, int64_t now)
{
  size_t n = 0;
  if (!m)
    return 0;
  pthread_mutex_lock(&m->lock);
  for (size_t i = 0; i < m->used; i++)
    if (m->e[i].expires > now)
      n++;
  pthread_mutex_unlock(&m->lock);
  return n;
}
