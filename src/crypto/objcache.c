/* Content-addressed cache of parsed OpenSSL objects (src/crypto/objcache.h). */
#include "crypto/objcache.h"

#include "crypto/verdicts.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

bool mcim_objcache_id(const void *text, size_t len, uint8_t id[32])
{
  unsigned int n = 0;
  return EVP_Digest(text, len, id, &n, mcim_sha256(), NULL) == 1 && n == 32;
}

void *mcim_objcache_get(struct mcim_objcache *c, const uint8_t id[32])
{
  void *obj = NULL;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->size && !obj; i++)
    if (c->e[i].obj && memcmp(c->e[i].id, id, 32) == 0 && c->up_ref(c->e[i].obj) == 1)
      obj = c->e[i].obj;
  pthread_mutex_unlock(&c->mu);
  return obj;
}

void *mcim_objcache_get_at(struct mcim_objcache *c, const uint8_t id[32], int64_t now)
{
  void *obj = NULL;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->size && !obj; i++)
    if (c->e[i].obj && CRYPTO_memcmp(c->e[i].id, id, 32) == 0 && now >= c->e[i].not_before &&
        now < c->e[i].not_after && c->up_ref(c->e[i].obj) == 1)
      obj = c->e[i].obj;
  pthread_mutex_unlock(&c->mu);
  return obj;
}

void mcim_objcache_put(struct mcim_objcache *c, const uint8_t id[32], void *obj)
{
  mcim_objcache_put_until(c, id, obj, INT64_MIN, INT64_MAX);
}

void mcim_objcache_put_until(struct mcim_objcache *c, const uint8_t id[32], void *obj,
                             int64_t not_before, int64_t not_after)
{
  pthread_mutex_lock(&c->mu);
  if (c->size > 0 && c->up_ref(obj) == 1) {
    size_t i = c->next;
    c->next = (i + 1) % c->size;
    if (c->e[i].obj)
      c->free(c->e[i].obj);
    memcpy(c->e[i].id, id, 32);
    c->e[i].obj = obj;
    c->e[i].not_before = not_before;
    c->e[i].not_after = not_after;
  }
  pthread_mutex_unlock(&c->mu);
}

void mcim_objcache_clear(struct mcim_objcache *c)
{
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->size; i++) {
    if (c->e[i].obj)
      c->free(c->e[i].obj);
    c->e[i].obj = NULL;
  }
  c->next = 0;
  pthread_mutex_unlock(&c->mu);
}
