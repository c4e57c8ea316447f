/* Parsed OpenSSL objects (certificates, keys) kept by the SHA-256 of the text they were
 * parsed from: OpenSSL 3 decodes PEM through its provider decoders, millions of
 * instructions an object, and the same texts come back all through a procedure. A cache is
 * bounded (the oldest entry goes) and shares its objects by reference (up_ref). Callers
 * still check what they get at every use. */
#ifndef MCIM_CRYPTO_OBJCACHE_H
#define MCIM_CRYPTO_OBJCACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCIM_OBJCACHE_MAX 128

struct mcim_objcache {
  pthread_mutex_t mu;
  int (*up_ref)(void *obj); /* 1 on success, as OpenSSL's X509_up_ref / EVP_PKEY_up_ref */
  void (*free)(void *obj);
  size_t size; /* entries used, at most MCIM_OBJCACHE_MAX */
  size_t next; /* the entry replaced when full */
  struct {
    uint8_t id[32];
    void *obj;
    int64_t not_before, not_after; /* mcim_objcache_put_until's window */
  } e[MCIM_OBJCACHE_MAX];
};

/* A static cache: MCIM_OBJCACHE_INIT(up_ref, free, size). */
#define MCIM_OBJCACHE_INIT(up, fr, n)                                                          \
  {.mu = PTHREAD_MUTEX_INITIALIZER, .up_ref = (up), .free = (fr), .size = (n)}

/* The id of a text: its SHA-256. false if it cannot be computed (then do without cache). */
bool mcim_objcache_id(const void *text, size_t len, uint8_t id[32]);
/* A new reference to the object with this id, or NULL. */
void *mcim_objcache_get(struct mcim_objcache *c, const uint8_t id[32]);
/* Keep a reference to `obj` under `id`. */
void mcim_objcache_put(struct mcim_objcache *c, const uint8_t id[32], void *obj);
/* For objects that stand for a verdict holding for a time (a key of a certificate that
 * verified): kept with the window [not_before, not_after) in which it holds, and found only by
 * mcim_objcache_get_at inside it. The id is compared in constant time. */
void mcim_objcache_put_until(struct mcim_objcache *c, const uint8_t id[32], void *obj,
                             int64_t not_before, int64_t not_after);
void *mcim_objcache_get_at(struct mcim_objcache *c, const uint8_t id[32], int64_t now);
/* Drop every entry (their references are freed). */
void mcim_objcache_clear(struct mcim_objcache *c);

#endif
