/* Sets of positive verdicts of costly checks (a certificate chain, a JWS signature), each by
 * a 32-byte id that is the SHA-256 of everything the verdict depends on, and the time window
 * in which it holds. Bounded: the oldest verdict goes. Only for checks whose answer is a pure
 * function of what the id covers and of the time; refusals are never kept. */
#ifndef MCIM_CRYPTO_VERDICTS_H
#define MCIM_CRYPTO_VERDICTS_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MCIM_VERDICTS_MAX 256

struct mcim_verdicts {
  pthread_mutex_t mu;
  size_t next;
  struct {
    uint8_t id[32];
    int64_t not_before, not_after;
    bool used;
  } e[MCIM_VERDICTS_MAX];
};

#define MCIM_VERDICTS_INIT {.mu = PTHREAD_MUTEX_INITIALIZER}

/* SHA-256, fetched once: EVP_sha256() given to a digest fetches the implementation again at
 * every call (OpenSSL 3), which cost more than hashing a token (perf of the DRF's discovery).
 * EVP_sha256() if the fetch failed. */
const EVP_MD *mcim_sha256(void);
/* The id of a verdict: the SHA-256 of `n` parts, each preceded by its length (so that no
 * two different lists of parts give the same bytes); a NULL part counts as absent, apart from
 * an empty one. false if it cannot be computed (then there is no verdict to keep or find). */
bool mcim_verdict_id(uint8_t id[32], size_t n, const void *const *parts, const size_t *lens);
/* true if a verdict with this id is kept and `now` is in [not_before, not_after). */
bool mcim_verdict_known(struct mcim_verdicts *v, const uint8_t id[32], int64_t now);
void mcim_verdict_keep(struct mcim_verdicts *v, const uint8_t id[32], int64_t not_before,
                       int64_t not_after);
void mcim_verdict_clear(struct mcim_verdicts *v);

#endif
