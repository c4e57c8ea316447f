/* Verdicts a role keeps about what peers and devices show it again and again
 * (src/roles/verified.h).
 *
 * Why: a device's first discovery at the DRF (pristine steps 7-8) checked its access token
 * (the payload decoded twice, a SHA-256 over the token, the claims parsed) and its TRE's
 * certificate (the PEM hashed, both certificates' DER hashed, the key's curve asked of the
 * provider) before the one check that is new for it, its proof's signature: a fifth of the
 * RO's CPU per discovery (perf, docs/performance.md "The DRF at operator scale"), for the
 * same token and certificate the device shows with every request of a procedure. A
 * certificate's key is kept before its PEM is even parsed (OpenSSL 3.0 decodes the public key
 * as it parses), for a device's TRE certificates and the operators' certificates alike.
 *
 * Why it is safe: each verdict is a positive answer of the full check, kept under the SHA-256
 * of everything that answer depends on, and given only inside the time span in which the
 * full check would answer the same:
 *   - a certificate's key: the certificate's PEM byte for byte, the trust anchor (the SHA-256
 *     of the CA's DER: the M2MES CA's, or the operators'), the usage and the name (a device's
 *     or a role's, the certificate's CN); the span is the one in which both the certificate
 *     and the CA are valid (the only time-dependent part of the check: no CRL, no external
 *     store);
 *   - an access token: its bytes, the role's name and kind (which issuers it honours), its
 *     clock skew and operators' CA (the issuers' keys are verified against it and kept for
 *     the process's life, src/roles/peers.c); the span is the one its claims accept (iat and
 *     nbf minus the skew to exp plus the skew). What may change while a token lives, its
 *     revocation (the SHO's subscription, the RO's registry, the PVA's list), is read from
 *     the store at every use, never kept.
 * Refusals are never kept: a changed byte, another CA or a time outside the span runs the
 * full check with its cause. Both tables are bounded, the oldest verdict goes first; ids are
 * compared in constant time (one is the hash of a bearer token). */
#include "roles/verified.h"

#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "crypto/objcache.h"
#include "crypto/pki_verdict.h"
#include "crypto/verdicts.h"
#include "mcim/pki.h"
#include "mcim/util.h"

/* ---- trust anchors ---- */

/* A CA's fingerprint, by its object: the same CA is asked about at every request. A reference
 * is held, so the address of a remembered CA is never another certificate's. */
#define CA_MEMO 8
static struct {
  pthread_mutex_t mu;
  size_t next;
  struct {
    X509 *ca;
    uint8_t fp[32];
  } e[CA_MEMO];
} cas = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool ca_fingerprint(X509 *ca, uint8_t fp[32])
{
  bool found = false;
  unsigned int n = 0;
  if (!ca)
    return false;
  pthread_mutex_lock(&cas.mu);
  for (size_t i = 0; i < CA_MEMO && !found; i++)
    if (cas.e[i].ca == ca) {
      memcpy(fp, cas.e[i].fp, 32);
      found = true;
    }
  pthread_mutex_unlock(&cas.mu);
  if (found)
    return true;
  if (X509_digest(ca, mcim_sha256(), fp, &n) != 1 || n != 32)
    return false;
  pthread_mutex_lock(&cas.mu);
  if (X509_up_ref(ca) == 1) {
    size_t i = cas.next;
    cas.next = (i + 1) % CA_MEMO;
    X509_free(cas.e[i].ca);
    cas.e[i].ca = ca;
    memcpy(cas.e[i].fp, fp, 32);
  }
  pthread_mutex_unlock(&cas.mu);
  return true;
}

/* ---- certificates' keys ---- */

static int key_up_ref(void *key)
{
  mcim_jose_key_t *ref = NULL;
  return mcim_jose_key_dup(key, &ref) == MCIM_OK;
}

static void key_release(void *key) { mcim_jose_key_free(key); }

/* Looked up before the PEM is parsed: OpenSSL 3.0 decodes a certificate's public key through
 * its provider decoders as it parses it (OSSL_DECODER_CTX_new_for_pkey, about 90 us), which
 * was half of what a known certificate still cost (perf of the daemons, docs/performance.md). */
static struct mcim_objcache cert_keys = MCIM_OBJCACHE_INIT(key_up_ref, key_release, 128);

mcim_cause_t mcim_role_cert_key(const char *cert_pem, X509 *ca, mcim_cert_usage_t usage,
                                const char *name, mcim_jose_key_t **out)
{
  return mcim_role_cert_key_at(cert_pem, ca, usage, name, mcim_now(), out);
}

mcim_cause_t mcim_role_cert_key_at(const char *cert_pem, X509 *ca, mcim_cert_usage_t usage,
                                   const char *name, int64_t now, mcim_jose_key_t **out)
{
  X509 *cert = NULL;
  EVP_PKEY *pub = NULL;
  uint8_t fp[32], id[32];
  int32_t u = (int32_t)usage;
  int64_t nb, na;
  *out = NULL;
  if (!name) /* a key without the CN check is never what a role asks for */
    return MCIM_INVALID_ARGUMENT;
  if (!cert_pem)
    return MCIM_CERT_INVALID;
  const void *parts[] = {"cert-key", cert_pem, fp, &u, name};
  const size_t lens[] = {8, strlen(cert_pem), sizeof(fp), sizeof(u), strlen(name)};
  bool have_id = ca_fingerprint(ca, fp) && mcim_verdict_id(id, 5, parts, lens);
  if (have_id && (*out = mcim_objcache_get_at(&cert_keys, id, now)) != NULL)
    return MCIM_OK;
  /* the full check: the chain, the usage, the name and the time (src/crypto/pki.c) */
  mcim_cause_t rc = mcim_pki_cert_from_pem(cert_pem, strlen(cert_pem), &cert);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_public_key(cert, ca, usage, name, now, &pub);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pub, out);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_set_kid(*out, name);
  if (rc == MCIM_OK && have_id && mcim_pki_both_valid(cert, ca, &nb, &na))
    mcim_objcache_put_until(&cert_keys, id, *out, nb, na);
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*out);
    *out = NULL;
  }
  EVP_PKEY_free(pub);
  X509_free(cert);
  return rc;
}

/* ---- access tokens ---- */

#define ACCESS_MAX 256
static struct {
  pthread_mutex_t mu;
  size_t next;
  struct {
    uint8_t id[32];
    int64_t not_before, not_after;
    bool used;
    struct mcim_access a;
  } e[ACCESS_MAX];
} accesses = {.mu = PTHREAD_MUTEX_INITIALIZER};

bool mcim_role_access_id(struct mcim_role *r, const char *bearer, uint8_t id[32])
{
  uint8_t fp[32];
  int64_t skew = mcim_config_duration(r->cfg, "clock_skew");
  if (!bearer || !ca_fingerprint(r->operators_ca, fp))
    return false;
  const void *parts[] = {"access", r->kind->kind, r->name, &skew, fp, bearer};
  const size_t lens[] = {6,          strlen(r->kind->kind), strlen(r->name), sizeof(skew),
                         sizeof(fp), strlen(bearer)};
  return mcim_verdict_id(id, 6, parts, lens);
}

bool mcim_role_access_known(const uint8_t id[32], int64_t now, struct mcim_access *out)
{
  bool known = false;
  pthread_mutex_lock(&accesses.mu);
  for (size_t i = 0; i < ACCESS_MAX && !known; i++)
    if (accesses.e[i].used && CRYPTO_memcmp(accesses.e[i].id, id, 32) == 0 &&
        now >= accesses.e[i].not_before && now < accesses.e[i].not_after) {
      *out = accesses.e[i].a;
      known = true;
    }
  pthread_mutex_unlock(&accesses.mu);
  return known;
}

void mcim_role_access_keep(const uint8_t id[32], const struct mcim_access *a, int64_t not_before,
                           int64_t not_after)
{
  pthread_mutex_lock(&accesses.mu);
  size_t i = accesses.next;
  accesses.next = (i + 1) % ACCESS_MAX;
  memcpy(accesses.e[i].id, id, 32);
  accesses.e[i].not_before = not_before;
  accesses.e[i].not_after = not_after;
  accesses.e[i].a = *a;
  accesses.e[i].used = true;
  pthread_mutex_unlock(&accesses.mu);
}

void mcim_role_verified_clear(void)
{
  mcim_objcache_clear(&cert_keys);
  pthread_mutex_lock(&accesses.mu);
  memset(accesses.e, 0, sizeof(accesses.e));
  accesses.next = 0;
  pthread_mutex_unlock(&accesses.mu);
}
