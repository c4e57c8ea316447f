/* The device agent's OpenSSL: the default provider's algorithms the agent uses, and no
 * other (src/crypto/subset.h; docs/device.md, "Footprint"). */
#include "crypto/subset.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* What the agent uses, per operation: names as the default provider spells one of them.
 * TLS (src/net/http_lite_conn.c: ECDHE with ECDSA certificates, AES-GCM and ChaCha20-Poly1305,
 * TLS 1.2's PRF and TLS 1.3's HKDF, SHA-1 for certificates' fingerprints), the seal
 * (AES-256-GCM), Milenage (AES-128-ECB), JOSE (ES256, ECDH-ES with the Concat KDF and
 * A256GCM), P-256 keys in PEM, and the random generators. An operation not listed offers
 * nothing: libssl leaves out what it cannot fetch (DH groups, RSA, DES...). */
static const struct {
  int op;
  const char *names[12];
} wanted[] = {
    {OSSL_OP_DIGEST, {"SHA1", "SHA2-256", "SHA2-384", "SHA2-512"}},
    {OSSL_OP_CIPHER,
     {"AES-128-ECB", "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305", "AES-256-CTR"}},
    {OSSL_OP_MAC, {"HMAC"}},
    {OSSL_OP_KDF, {"HKDF", "TLS13-KDF", "TLS1-PRF", "SSKDF"}},
    {OSSL_OP_RAND, {"CTR-DRBG", "HASH-DRBG", "HMAC-DRBG", "SEED-SRC"}},
    /* HMAC as a key and a signature too: ESAPI's session HMACs (EVP_PKEY_new_raw_private_key,
     * EVP_DigestSign) where the agent and tpm2-tss share one libcrypto (a dynamically linked
     * agent: the sanitizer builds), as a slot key's policy session needs */
    {OSSL_OP_KEYMGMT, {"EC", "X25519", "HMAC"}},
    {OSSL_OP_KEYEXCH, {"ECDH", "X25519"}},
    {OSSL_OP_SIGNATURE, {"ECDSA", "HMAC"}},
    /* keys and certificates in and out: PEM <-> DER <-> EC key */
    {OSSL_OP_ENCODER, {"EC"}},
    {OSSL_OP_DECODER, {"EC", "DER"}},
};
#define N_OPS (sizeof(wanted) / sizeof(wanted[0]))
#define MAX_ALGS 24 /* per operation: the EC encoders are the most, 14 in OpenSSL 3.0.19 */

static struct {
  OSSL_LIB_CTX *libctx; /* where the default provider is loaded, and only there */
  OSSL_PROVIDER *deflt;
  OSSL_PROVIDER *subset; /* our reference to "mcim-subset", given back at the exit */
  OSSL_ALGORITHM algs[N_OPS][MAX_ALGS + 1]; /* each ends with a zeroed entry */
} g;

/* Is one of the colon-separated `names` one of `want`? */
static bool wanted_name(const char *names, const char *const *want)
{
  for (const char *p = names; p && *p;) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    for (size_t i = 0; i < 12 && want[i]; i++)
      if (strlen(want[i]) == len && strncasecmp(p, want[i], len) == 0)
        return true;
    p = end ? end + 1 : NULL;
  }
  return false;
}

static const OSSL_ALGORITHM *subset_query(void *provctx, int op, int *no_cache)
{
  (void)provctx;
  *no_cache = 0;
  for (size_t i = 0; i < N_OPS; i++)
    if (wanted[i].op == op)
      return g.algs[i];
  return NULL;
}

static int subset_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb,
                                   void *arg)
{
  (void)provctx;
  /* TLS-GROUP and TLS-SIGALG: libssl keeps those whose key management it can fetch */
  return OSSL_PROVIDER_get_capabilities(g.deflt, capability, cb, arg);
}

static const OSSL_PARAM *subset_gettable_params(void *provctx)
{
  (void)provctx;
  return OSSL_PROVIDER_gettable_params(g.deflt);
}

static int subset_get_params(void *provctx, OSSL_PARAM params[])
{
  (void)provctx;
  return OSSL_PROVIDER_get_params(g.deflt, params);
}

static const OSSL_DISPATCH subset_dispatch[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))subset_query},
    {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))subset_get_capabilities},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))subset_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))subset_get_params},
    {0, NULL},
};

/* The algorithms are the default provider's, with its provider context: they run as they
 * would from the default provider, in its library context (what they fetch themselves, the
 * digest of a signature or an HMAC, comes from there). */
static int subset_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
  (void)handle;
  (void)in;
  for (size_t i = 0; i < N_OPS; i++) {
    int no_cache = 0;
    const OSSL_ALGORITHM *all = OSSL_PROVIDER_query_operation(g.deflt, wanted[i].op, &no_cache);
    size_t n = 0;
    for (const OSSL_ALGORITHM *a = all; a && a->algorithm_names; a++)
      if (wanted_name(a->algorithm_names, wanted[i].names) && n++ < MAX_ALGS)
        g.algs[i][n - 1] = *a;
    if (all)
      OSSL_PROVIDER_unquery_operation(g.deflt, wanted[i].op, all);
    if (n > MAX_ALGS)
      return 0; /* a subset cut short would fail later, obscurely: the default serves */
    memset(&g.algs[i][n], 0, sizeof(g.algs[i][n]));
  }
  *out = subset_dispatch;
  *provctx = OSSL_PROVIDER_get0_provider_ctx(g.deflt);
  return *provctx != NULL;
}

static void subset_unload(void)
{
  if (g.subset)
    OSSL_PROVIDER_unload(g.subset);
  g.subset = NULL;
}

bool mcim_crypto_subset_init(void)
{
  bool ok = false;

  g.libctx = OSSL_LIB_CTX_new();
  if (!g.libctx)
    goto cleanup;
  /* Hash_DRBG (SHA-256) in both contexts instead of CTR_DRBG (AES-256-CTR): a CTR_DRBG of
   * the default provider's context would fetch its cipher there, where every cipher is. */
  if (RAND_set_DRBG_type(g.libctx, "HASH-DRBG", NULL, NULL, "SHA2-256") != 1 ||
      RAND_set_DRBG_type(NULL, "HASH-DRBG", NULL, NULL, "SHA2-256") != 1)
    goto cleanup;
  g.deflt = OSSL_PROVIDER_load(g.libctx, "default");
  if (!g.deflt)
    goto cleanup;
  /* Loaded before anything fetches, the default context's only provider: OpenSSL loads its
   * fallback (the whole default provider) only into a context that has none. */
  if (OSSL_PROVIDER_add_builtin(NULL, "mcim-subset", subset_init) != 1 ||
      !(g.subset = OSSL_PROVIDER_load(NULL, "mcim-subset")))
    goto cleanup;
  /* Registered after OpenSSL's own exit handler (OSSL_LIB_CTX_new above ran its init), so it
   * runs first: our reference goes back before OpenSSL frees the default context, which then
   * frees the provider (valgrind found it lost at the exit: scripts/valgrind.sh). */
  ok = atexit(subset_unload) == 0;
cleanup:
  return ok;
}
