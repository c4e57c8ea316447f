/* AES-128-ECB on OpenSSL 3, through EVP or the provider's dispatch table (see aes_ecb.h). */
#include "aes_ecb.h"

#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/util.h"

static const char alg_name[] = "AES-128-ECB";

struct mcim_aes_ecb {
  mcim_milenage_aes_t backend;
  EVP_CIPHER *cipher; /* both backends: the fetch decides the provider, and pins it */
  bool keyed;
  /* EVP backend */
  EVP_CIPHER_CTX *evp;
  /* PROVIDER backend */
  void *provctx;
  void *algctx; /* NULL until the first set_key after new/clear */
  OSSL_FUNC_cipher_newctx_fn *newctx;
  OSSL_FUNC_cipher_freectx_fn *freectx;
  OSSL_FUNC_cipher_encrypt_init_fn *einit;
  OSSL_FUNC_cipher_cipher_fn *cipher_fn;
};

/* Is `name` one of the colon-separated names in `names`? */
static bool has_name(const char *names, const char *name)
{
  size_t n = strlen(name);
  for (const char *p = names; p && *p;) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0)
      return true;
    p = end ? end + 1 : NULL;
  }
  return false;
}

/* Find the provider functions for AES-128-ECB in the provider EVP chose. */
static bool bind_provider(mcim_aes_ecb_t *a)
{
  const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(a->cipher);
  int no_cache = 0;
  const OSSL_ALGORITHM *algs;

  if (!prov)
    return false;
  algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_cache);
  for (const OSSL_ALGORITHM *alg = algs; alg && alg->algorithm_names; alg++) {
    if (!has_name(alg->algorithm_names, alg_name))
      continue;
    for (const OSSL_DISPATCH *d = alg->implementation; d && d->function_id; d++) {
      switch (d->function_id) {
      case OSSL_FUNC_CIPHER_NEWCTX:
        a->newctx = OSSL_FUNC_cipher_newctx(d);
        break;
      case OSSL_FUNC_CIPHER_FREECTX:
        a->freectx = OSSL_FUNC_cipher_freectx(d);
        break;
      case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
        a->einit = OSSL_FUNC_cipher_encrypt_init(d);
        break;
      case OSSL_FUNC_CIPHER_CIPHER:
        a->cipher_fn = OSSL_FUNC_cipher_cipher(d);
        break;
      default:
        break;
      }
    }
    break;
  }
  if (algs)
    OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs);
  a->provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
  return a->newctx && a->freectx && a->einit && a->cipher_fn;
}

mcim_cause_t mcim_aes_ecb_new(mcim_milenage_aes_t backend, mcim_aes_ecb_t **out)
{
  mcim_aes_ecb_t *a = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!out || backend < MCIM_MILENAGE_AES_AUTO || backend > MCIM_MILENAGE_AES_PROVIDER)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  a = calloc(1, sizeof(*a));
  if (!a)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  a->cipher = EVP_CIPHER_fetch(NULL, alg_name, NULL);
  if (!a->cipher)
    goto cleanup;
  if (backend != MCIM_MILENAGE_AES_EVP && bind_provider(a)) {
    a->backend = MCIM_MILENAGE_AES_PROVIDER;
  } else if (backend == MCIM_MILENAGE_AES_PROVIDER) {
    rc = MCIM_UNSUPPORTED; /* asked for explicitly, not available */
    goto cleanup;
  } else {
    a->backend = MCIM_MILENAGE_AES_EVP;
    a->evp = EVP_CIPHER_CTX_new();
    if (!a->evp)
      goto cleanup;
  }
  *out = a;
  a = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_aes_ecb_free(a);
  return rc;
}

void mcim_aes_ecb_clear(mcim_aes_ecb_t *a)
{
  if (!a)
    return;
  /* Both paths end in the provider's freectx/reset, which cleanses the schedule. */
  if (a->evp)
    EVP_CIPHER_CTX_reset(a->evp);
  if (a->algctx) {
    a->freectx(a->algctx);
    a->algctx = NULL;
  }
  a->keyed = false;
}

void mcim_aes_ecb_free(mcim_aes_ecb_t *a)
{
  if (!a)
    return;
  mcim_aes_ecb_clear(a);
  EVP_CIPHER_CTX_free(a->evp);
  EVP_CIPHER_free(a->cipher);
  free(a);
}

static mcim_cause_t set_key_evp(mcim_aes_ecb_t *a, const uint8_t key[16])
{
  if (a->keyed) /* same cipher: only the key schedule is redone */
    return EVP_EncryptInit_ex2(a->evp, NULL, key, NULL, NULL) == 1 ? MCIM_OK : MCIM_CRYPTO_ERROR;
  /* Raw blocks: never let OpenSSL pad (Final is never called either). */
  if (EVP_EncryptInit_ex2(a->evp, a->cipher, key, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_set_padding(a->evp, 0) != 1)
    return MCIM_CRYPTO_ERROR;
  return MCIM_OK;
}

static mcim_cause_t set_key_provider(mcim_aes_ecb_t *a, const uint8_t key[16])
{
  if (!a->algctx) {
    a->algctx = a->newctx(a->provctx);
    if (!a->algctx)
      return MCIM_NO_MEMORY;
  }
  return a->einit(a->algctx, key, 16, NULL, 0, NULL) == 1 ? MCIM_OK : MCIM_CRYPTO_ERROR;
}

mcim_cause_t mcim_aes_ecb_set_key(mcim_aes_ecb_t *a, const uint8_t key[16])
{
  if (!a || !key)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = a->backend == MCIM_MILENAGE_AES_PROVIDER ? set_key_provider(a, key)
                                                             : set_key_evp(a, key);
  if (rc != MCIM_OK) {
    mcim_aes_ecb_clear(a);
    return rc;
  }
  a->keyed = true;
  return MCIM_OK;
}

mcim_cause_t mcim_aes_ecb_encrypt(mcim_aes_ecb_t *a, const uint8_t *in, uint8_t *out, size_t len)
{
  if (!a || !a->keyed || !in || !out || len == 0 || len % 16 || len > 1024)
    return MCIM_INVALID_ARGUMENT;
  if (a->backend == MCIM_MILENAGE_AES_PROVIDER) {
    size_t outl = 0;
    if (a->cipher_fn(a->algctx, out, &outl, len, in, len) != 1 || outl != len)
      return MCIM_CRYPTO_ERROR;
    return MCIM_OK;
  }
  int outl = 0;
  if (EVP_EncryptUpdate(a->evp, out, &outl, in, (int)len) != 1 || outl != (int)len)
    return MCIM_CRYPTO_ERROR;
  return MCIM_OK;
}

mcim_milenage_aes_t mcim_aes_ecb_backend(const mcim_aes_ecb_t *a)
{
  return a ? a->backend : MCIM_MILENAGE_AES_AUTO;
}
