/* Sets of positive verdicts (src/crypto/verdicts.h). */
#include "crypto/verdicts.h"

#include <openssl/evp.h>
#include <string.h>

static EVP_MD *sha256_fetched;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
  sha256_fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *mcim_sha256(void)
{
  pthread_once(&sha256_once, sha256_fetch);
  return sha256_fetched ? sha256_fetched : EVP_sha256();
}

bool mcim_verdict_id(uint8_t id[32], size_t n, const void *const *parts, const size_t *lens)
{
  unsigned int got = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md && EVP_DigestInit_ex(md, mcim_sha256(), NULL) == 1;
  for (size_t i = 0; ok && i < n; i++) {
    uint64_t len = parts[i] ? (uint64_t)lens[i] : UINT64_MAX;
    ok = EVP_DigestUpdate(md, &len, sizeof(len)) == 1 &&
         (!parts[i] || EVP_DigestUpdate(md, parts[i], lens[i]) == 1);
  }
  ok = ok && EVP_DigestFinal_ex(md, id, &got) == 1 && got == 32;
  EVP_MD_CTX_free(md);
  return ok;
}

bool mcim_verdict_known(struct mcim_verdicts *v, const uint8_t id[32], int64_t now)
{
  bool known = false;
  pthread_mutex_lock(&v->mu);
  for (size_t i = 0; i < MCIM_VERDICTS_MAX && !known; i++)
    known = v->e[i].used && memcmp(v->e[i].id, id, 32) == 0 && now >= v->e[i].not_before &&
            now < v->e[i].not_after;
  pthread_mutex_unlock(&v->mu);
  return known;
}

void mcim_verdict_keep(struct mcim_verdicts *v, const uint8_t id[32], int64_t not_before,
                       int64_t not_after)
{
  pthread_mutex_lock(&v->mu);
  size_t i = v->next;
  v->next = (i + 1) % MCIM_VERDICTS_MAX;
  memcpy(v->e[i].id, id, 32);
  v->e[i].not_before = not_before;
  v->e[i].not_after = not_after;
  v->e[i].used = true;
  pthread_mutex_unlock(&v->mu);
}

void mcim_verdict_clear(struct mcim_verdicts *v)
{
  pthread_mutex_lock(&v->mu);
  memset(v->e, 0, sizeof(v->e));
  v->next = 0;
  pthread_mutex_unlock(&v->mu);
}
