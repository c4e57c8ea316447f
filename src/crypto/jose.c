/* JWS ES256 statements, JWE ECDH-ES/A256GCM, and sealed packages (JWE inside a JWS).
 *
 * cjose 0.6.2 signs, verifies and encrypts. Decryption is assembled here from OpenSSL
 * primitives (ECDH by EVP_PKEY_derive, the RFC 7518 section 4.6 Concat KDF by OpenSSL's
 * SSKDF, AES-256-GCM by EVP): cjose's ECDH-ES decryption leaks the buffer of the empty
 * encrypted-key part on every call (_cjose_jwe_decrypt_ek_ecdh_es overwrites it with NULL),
 * which would make every ASan-built program that opens a package fail. Interoperability of
 * the two directions is what test_jose checks (cjose encrypts, we decrypt; RFC 7518 App. C).
 *
 * A key whose private part is elsewhere (mcim_jose_key_external: the TPM TRE's keys) signs
 * and opens JWEs through the same entry points: the compact JWS is assembled here and only
 * the digest goes out for ES256, and only the peer's point goes out for ECDH (Z comes back,
 * the Concat KDF and AES-GCM run here as for the other keys).
 *
 * This file decides what is acceptable. Before anything reaches a cipher the compact form is
 * checked strictly: exact number of parts, canonical base64url (no padding bits set, so one
 * encoding per value), JSON without duplicate names, the one allowed algorithm, exact
 * IV/tag/signature lengths, an ephemeral key on P-256. */
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
#include <stdlib.h>
#include <string.h>

#include "crypto/verdicts.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

#define P256_LEN 32
#define ES256_SIG_LEN 64
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

/* The same P-256 key twice: as cjose needs it and as OpenSSL needs it (decryption). */
struct mcim_jose_key {
  _Atomic unsigned refs; /* mcim_jose_key_dup: shared by reference, freed by the last */
  cjose_jwk_t *jwk;
  EVP_PKEY *pkey;
  uint8_t fp[32]; /* SHA-256 of the public point, x || y: the key in signature verdicts */
  bool has_private;
  char *kid;
  /* mcim_jose_key_external: the private operations are these, elsewhere (a TPM) */
  const struct mcim_jose_key_ops *ext;
  void *ext_ctx;
};

/* The claims every statement must carry; `extra` may not redefine them. */
static const char *const mandatory_strings[] = {"iss", "sub", "aud", "typ", "jti", "txn", NULL};
static const char *const mandatory_times[] = {"iat", "exp", NULL};

/* ---- small helpers ------------------------------------------------------------------ */

static bool is_mandatory(const char *name)
{
  for (size_t i = 0; mandatory_strings[i]; i++)
    if (strcmp(name, mandatory_strings[i]) == 0)
      return true;
  for (size_t i = 0; mandatory_times[i]; i++)
    if (strcmp(name, mandatory_times[i]) == 0)
      return true;
  return false;
}

static bool b64url_char(char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

struct part {
  const char *p;
  size_t len;
};

/* Split a compact serialization into exactly `n` parts of base64url characters. */
static mcim_cause_t split_compact(const char *s, size_t len, struct part *parts, size_t n)
{
  if (!s || len == 0)
    return MCIM_JOSE_MALFORMED;
  if (len > MCIM_JOSE_MAX_LEN)
    return MCIM_TOO_LARGE;
  size_t k = 0;
  parts[0].p = s;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '.') {
      if (++k >= n)
        return MCIM_JOSE_MALFORMED;
      parts[k - 1].len = (size_t)(s + i - parts[k - 1].p);
      parts[k].p = s + i + 1;
    } else if (!b64url_char(s[i])) {
      return MCIM_JOSE_MALFORMED;
    }
  }
  if (k != n - 1)
    return MCIM_JOSE_MALFORMED;
  parts[k].len = (size_t)(s + len - parts[k].p);
  return MCIM_OK;
}

/* Strict base64url decode into a new buffer (one spare byte so that an empty part still
 * gets a valid pointer). Any decoding problem is a malformed object. */
static mcim_cause_t b64_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen)
{
  size_t cap = len / 4 * 3 + 3;
  uint8_t *buf = malloc(cap);
  if (!buf)
    return MCIM_NO_MEMORY;
  if (mcim_b64url_decode(in, len, buf, cap, outlen) != MCIM_OK) {
    free(buf);
    return MCIM_JOSE_MALFORMED;
  }
  *out = buf;
  return MCIM_OK;
}

/* Decode a base64url part that must hold exactly `want` bytes. */
static bool b64_decode_exact(const char *in, size_t len, uint8_t *out, size_t want)
{
  size_t n = 0;
  return mcim_b64url_decode(in, len, out, want, &n) == MCIM_OK && n == want;
}

/* Parse a protected header: a JSON object, no duplicate names, no "crit" (we implement no
 * extension, so RFC 7515 section 4.1.11 says such an object must be refused). */
static mcim_cause_t parse_header(const struct part *p, json_t **out)
{
  uint8_t *raw = NULL;
  size_t rawlen = 0;
  json_t *hdr = NULL;
  mcim_cause_t rc = b64_decode_alloc(p->p, p->len, &raw, &rawlen);
  if (rc != MCIM_OK)
    goto cleanup;
  hdr = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(hdr) || json_object_get(hdr, "crit")) {
    rc = MCIM_JOSE_MALFORMED;
    goto cleanup;
  }
  *out = hdr;
  hdr = NULL;
cleanup:
  json_decref(hdr);
  free(raw);
  return rc;
}

/* The "alg" (and "enc") member must be present as a string and be the one we allow. */
static mcim_cause_t header_require(json_t *hdr, const char *name, const char *allowed)
{
  json_t *v = json_object_get(hdr, name);
  if (!json_is_string(v))
    return MCIM_JOSE_MALFORMED;
  return strcmp(json_string_value(v), allowed) == 0 ? MCIM_OK : MCIM_JWS_BAD_ALG;
}

static char *dup_cjose_string(char *s)
{
  char *copy = s ? strdup(s) : NULL;
  if (s)
    cjose_get_dealloc()(s);
  return copy;
}

/* An OpenSSL P-256 key from raw coordinates (and d for a key pair), checked: the point is
 * on the curve and not at infinity, and d is in [1, n-1]. Every received ephemeral key goes
 * through here before any ECDH (invalid-curve attacks on ECDH-ES).
 *
 * The quick public check (coordinates in range, on the curve, not infinity) is the whole
 * validation for P-256, whose cofactor is 1: every point on the curve but infinity has order
 * n, so the full check's n*Q = infinity (a scalar multiplication, as costly as the ECDH it
 * guards) adds nothing (SP 800-56A rev. 3, 5.6.2.3.3-4). Nor does d*G = Q for a key pair:
 * private keys come only from our own sealed storage or key generation, never from a peer.
 * Both full checks cost about as much as the rest of a procedure's device-side crypto
 * (callgrind, bench/README.md). */
static mcim_cause_t p256_pkey(const uint8_t x[P256_LEN], const uint8_t y[P256_LEN],
                              const uint8_t *d, EVP_PKEY **out)
{
  uint8_t pt[1 + 2 * P256_LEN];
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  BIGNUM *priv = NULL;
  EVP_PKEY_CTX *ctx = NULL, *check = NULL;
  EVP_PKEY *pkey = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  pt[0] = 0x04; /* uncompressed point */
  memcpy(pt + 1, x, P256_LEN);
  memcpy(pt + 1 + P256_LEN, y, P256_LEN);
  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)))
    goto cleanup;
  if (d && (!(priv = BN_secure_new()) || !BN_bin2bn(d, P256_LEN, priv) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)))
    goto cleanup;
  if (!(params = OSSL_PARAM_BLD_to_param(bld)))
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
      EVP_PKEY_fromdata(ctx, &pkey, d ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
    goto cleanup;
  check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
  if (!check || EVP_PKEY_public_check_quick(check) != 1 ||
      (d && EVP_PKEY_private_check(check) != 1))
    goto cleanup;
  *out = pkey;
  pkey = NULL;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_CTX_free(check);
  EVP_PKEY_free(pkey);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params); /* d came from a secure BIGNUM: that part is cleared on free */
  BN_clear_free(priv);
  OSSL_PARAM_BLD_free(bld);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_p256_public_pkey(const uint8_t x[32], const uint8_t y[32], EVP_PKEY **out)
{
  if (!x || !y || !out)
    return MCIM_INVALID_ARGUMENT;
  return p256_pkey(x, y, NULL, out);
}

/* ---- keys --------------------------------------------------------------------------- */

/* Build from raw coordinates (and optionally d); both libraries get their own copy. */
static mcim_cause_t key_from_raw(const uint8_t *x, const uint8_t *y, const uint8_t *d,
                                 mcim_jose_key_t **out)
{
  cjose_err err;
  mcim_jose_key_t *k = calloc(1, sizeof(*k));
  if (!k)
    return MCIM_NO_MEMORY;
  atomic_init(&k->refs, 1);
  mcim_cause_t rc = p256_pkey(x, y, d, &k->pkey);
  if (rc != MCIM_OK)
    goto cleanup;
  cjose_jwk_ec_keyspec spec = {
      .crv = CJOSE_JWK_EC_P_256,
      .d = (uint8_t *)d,
      .dlen = d ? P256_LEN : 0,
      .x = (uint8_t *)x,
      .xlen = P256_LEN,
      .y = (uint8_t *)y,
      .ylen = P256_LEN,
  };
  k->jwk = cjose_jwk_create_EC_spec(&spec, &err);
  if (!k->jwk) {
    rc = MCIM_KEY_INVALID;
    goto cleanup;
  }
  k->has_private = d != NULL;
  const void *xy[] = {x, y};
  const size_t xy_len[] = {P256_LEN, P256_LEN};
  if (!mcim_verdict_id(k->fp, 2, xy, xy_len)) {
    rc = MCIM_CRYPTO_ERROR;
    goto cleanup;
  }
  *out = k;
  k = NULL;
cleanup:
  mcim_jose_key_free(k);
  return rc;
}

mcim_cause_t mcim_jose_key_generate(mcim_jose_key_t **out)
{
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!pkey) {
    ERR_clear_error();
    return MCIM_CRYPTO_ERROR;
  }
  mcim_cause_t rc = mcim_jose_key_from_pkey(pkey, out);
  EVP_PKEY_free(pkey);
  return rc;
}

mcim_cause_t mcim_jose_key_from_pkey(const EVP_PKEY *pkey, mcim_jose_key_t **out)
{
  BIGNUM *x = NULL, *y = NULL, *d = NULL;
  uint8_t xb[P256_LEN], yb[P256_LEN], db[P256_LEN];
  char group[64];
  size_t glen = 0;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (!pkey || !out)
    return MCIM_INVALID_ARGUMENT;
  if (!EVP_PKEY_is_a(pkey, "EC") ||
      EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &glen) != 1 ||
      strcmp(group, "prime256v1") != 0)
    goto cleanup;
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
      EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
      BN_bn2binpad(x, xb, P256_LEN) != P256_LEN || BN_bn2binpad(y, yb, P256_LEN) != P256_LEN)
    goto cleanup;
  /* The private part is optional: a key from a certificate has none. */
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 &&
      BN_bn2binpad(d, db, P256_LEN) != P256_LEN)
    goto cleanup;
  rc = key_from_raw(xb, yb, d ? db : NULL, out);
cleanup:
  mcim_wipe(db, sizeof(db));
  BN_clear_free(d);
  BN_free(x);
  BN_free(y);
  ERR_clear_error();
  return rc;
}

/* A JWK member that must decode to exactly 32 bytes. */
static bool jwk_coord(json_t *jwk, const char *name, uint8_t out[P256_LEN])
{
  json_t *v = json_object_get(jwk, name);
  return json_is_string(v) &&
         b64_decode_exact(json_string_value(v), json_string_length(v), out, P256_LEN);
}

mcim_cause_t mcim_jose_key_from_jwk(const char *json, size_t len, mcim_jose_key_t **out)
{
  uint8_t x[P256_LEN], y[P256_LEN], d[P256_LEN];
  json_t *jwk = NULL, *kid = NULL;
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (!json || !out)
    return MCIM_INVALID_ARGUMENT;
  jwk = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(jwk) ||
      !json_is_string(json_object_get(jwk, "kty")) ||
      strcmp(json_string_value(json_object_get(jwk, "kty")), "EC") != 0 ||
      !json_is_string(json_object_get(jwk, "crv")) ||
      strcmp(json_string_value(json_object_get(jwk, "crv")), "P-256") != 0 ||
      !jwk_coord(jwk, "x", x) || !jwk_coord(jwk, "y", y))
    goto cleanup;
  bool has_d = json_object_get(jwk, "d") != NULL;
  if (has_d && !jwk_coord(jwk, "d", d))
    goto cleanup;
  rc = key_from_raw(x, y, has_d ? d : NULL, &key);
  if (rc != MCIM_OK)
    goto cleanup;
  kid = json_object_get(jwk, "kid");
  if (kid && !json_is_string(kid)) {
    rc = MCIM_KEY_INVALID;
    goto cleanup;
  }
  if (kid && (rc = mcim_jose_key_set_kid(key, json_string_value(kid))) != MCIM_OK)
    goto cleanup;
  *out = key;
  key = NULL;
cleanup:
  mcim_wipe(d, sizeof(d));
  mcim_jose_key_free(key);
  json_decref(jwk); /* jansson does not wipe "d"; it came from the caller's buffer anyway */
  return rc;
}

mcim_cause_t mcim_jose_key_public_jwk(const mcim_jose_key_t *key, char **out)
{
  if (!key || !out)
    return MCIM_INVALID_ARGUMENT;
  cjose_err err;
  char *s = dup_cjose_string(cjose_jwk_to_json(key->jwk, false, &err));
  if (!s)
    return MCIM_NO_MEMORY;
  *out = s;
  return MCIM_OK;
}

/* Only the public coordinates are copied, so the result never carries the private key. */
mcim_cause_t mcim_jose_key_public_pkey(const mcim_jose_key_t *key, EVP_PKEY **out)
{
  BIGNUM *x = NULL, *y = NULL;
  uint8_t xb[P256_LEN], yb[P256_LEN];
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (!key || !out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
      EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1 &&
      BN_bn2binpad(x, xb, P256_LEN) == P256_LEN && BN_bn2binpad(y, yb, P256_LEN) == P256_LEN)
    rc = p256_pkey(xb, yb, NULL, out);
  BN_free(x);
  BN_free(y);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_jose_key_set_kid(mcim_jose_key_t *key, const char *kid)
{
  /* a key shared by reference (mcim_jose_key_dup) is read by others: never renamed */
  if (!key || atomic_load_explicit(&key->refs, memory_order_acquire) != 1)
    return MCIM_INVALID_ARGUMENT;
  char *copy = NULL;
  if (kid) {
    cjose_err err;
    copy = strdup(kid);
    if (!copy || !cjose_jwk_set_kid(key->jwk, kid, strlen(kid), &err)) {
      free(copy);
      return MCIM_NO_MEMORY;
    }
  }
  free(key->kid);
  key->kid = copy;
  return MCIM_OK;
}

const char *mcim_jose_key_kid(const mcim_jose_key_t *key)
{
  return key ? key->kid : NULL;
}

bool mcim_jose_key_has_private(const mcim_jose_key_t *key)
{
  return key && key->has_private;
}

mcim_cause_t mcim_jose_key_dup(const mcim_jose_key_t *key, mcim_jose_key_t **out)
{
  if (!key || !out)
    return MCIM_INVALID_ARGUMENT;
  mcim_jose_key_t *k = (mcim_jose_key_t *)key; /* only its count changes */
  atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
  *out = k;
  return MCIM_OK;
}

void mcim_jose_key_free(mcim_jose_key_t *key)
{
  if (!key || atomic_fetch_sub_explicit(&key->refs, 1, memory_order_acq_rel) != 1)
    return;
  cjose_jwk_release(key->jwk);
  EVP_PKEY_free(key->pkey);
  free(key->kid);
  if (key->ext && key->ext->free)
    key->ext->free(key->ext_ctx);
  free(key);
}

mcim_cause_t mcim_jose_key_external(const EVP_PKEY *pub, const struct mcim_jose_key_ops *ops,
                                    void *ctx, mcim_jose_key_t **out)
{
  BIGNUM *x = NULL, *y = NULL;
  uint8_t xb[P256_LEN], yb[P256_LEN];
  char group[64];
  size_t glen = 0;
  mcim_jose_key_t *k = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!pub || !ops || !out)
    goto cleanup;
  *out = NULL;
  rc = MCIM_KEY_INVALID;
  /* the public coordinates only: whatever else `pub` holds stays out */
  if (!EVP_PKEY_is_a(pub, "EC") ||
      EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &glen) != 1 ||
      strcmp(group, "prime256v1") != 0 ||
      EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
      EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
      BN_bn2binpad(x, xb, P256_LEN) != P256_LEN || BN_bn2binpad(y, yb, P256_LEN) != P256_LEN)
    goto cleanup;
  rc = key_from_raw(xb, yb, NULL, &k);
  if (rc != MCIM_OK)
    goto cleanup;
  k->ext = ops;
  k->ext_ctx = ctx;
  ctx = NULL;
  k->has_private = true;
  *out = k;
  rc = MCIM_OK;
cleanup:
  if (ctx && ops && ops->free)
    ops->free(ctx);
  BN_free(x);
  BN_free(y);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_jose_new_jti(char out[MCIM_JTI_LEN + 1])
{
  uint8_t raw[16];
  mcim_cause_t rc = mcim_random_id(raw, sizeof(raw)); /* an identifier, not a secret */
  if (rc == MCIM_OK)
    mcim_b64url_encode(raw, sizeof(raw), out);
  return rc;
}

void mcim_jose_secret_free(void *p, size_t len)
{
  if (!p)
    return;
  mcim_wipe(p, len);
  free(p);
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

static mcim_cause_t replay_mem_check(void *ctx, const char *iss, const char *jti,
                                     int64_t expires, int64_t now)
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

/* ---- JWS ---------------------------------------------------------------------------- */

void mcim_statement_free(mcim_statement_t *st)
{
  if (!st)
    return;
  json_decref(st->payload);
  free(st->kid);
  free(st);
}

const char *mcim_statement_string(const mcim_statement_t *st, const char *name)
{
  if (!st || !name)
    return NULL;
  return json_string_value(json_object_get(st->payload, name));
}

/* The claims object to sign: mandatory claims first, then the caller's extra ones. */
static mcim_cause_t build_payload(const mcim_claims_t *c, json_t **out)
{
  char jti[MCIM_JTI_LEN + 1];
  const char *key;
  json_t *value;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  json_t *p = NULL;

  const char *strings[] = {c->iss, c->sub, c->aud, c->typ, c->jti, c->txn};
  for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
    if (i != 4 && (!strings[i] || !strings[i][0]))
      return MCIM_INVALID_ARGUMENT; /* every mandatory string but jti (generated) */
  if (c->jti && !c->jti[0])
    return MCIM_INVALID_ARGUMENT;
  int64_t iat = c->iat ? c->iat : mcim_now();
  if (iat <= 0 || c->exp <= iat)
    return MCIM_INVALID_ARGUMENT;
  if (c->extra && !json_is_object(c->extra))
    return MCIM_INVALID_ARGUMENT;
  if (!c->jti && (rc = mcim_jose_new_jti(jti)) != MCIM_OK)
    return rc;

  rc = MCIM_NO_MEMORY;
  p = json_object();
  if (!p || json_object_set_new(p, "iss", json_string(c->iss)) ||
      json_object_set_new(p, "sub", json_string(c->sub)) ||
      json_object_set_new(p, "aud", json_string(c->aud)) ||
      json_object_set_new(p, "iat", json_integer(iat)) ||
      json_object_set_new(p, "exp", json_integer(c->exp)) ||
      json_object_set_new(p, "jti", json_string(c->jti ? c->jti : jti)) ||
      json_object_set_new(p, "txn", json_string(c->txn)) ||
      json_object_set_new(p, "typ", json_string(c->typ)))
    goto cleanup; /* json_string() also fails on invalid UTF-8 */
  if (c->extra) {
    json_object_foreach(c->extra, key, value) {
      if (is_mandatory(key)) {
        rc = MCIM_INVALID_ARGUMENT;
        goto cleanup;
      }
      if (json_object_set(p, key, value))
        goto cleanup;
    }
  }
  *out = p;
  p = NULL;
  rc = MCIM_OK;
cleanup:
  json_decref(p);
  return rc;
}

/* base64url of `len` bytes of `in` at `out`: the end of what was written */
static char *put_b64(char *out, const void *in, size_t len)
{
  return out + mcim_b64url_encode(in, len, out);
}

/* The compact JWS of `text` (the payload) signed by an external key (RFC 7515 section 7.1):
 * BASE64URL(header) '.' BASE64URL(payload) is the signing input, its SHA-256 goes to the
 * key's holder, and R || S comes back as the third part. The protected header is the one
 * cjose writes for the other keys: alg, typ, kid (when the key has one). */
static mcim_cause_t jws_sign_external(const mcim_jose_key_t *key, const char *typ,
                                      const char *text, char **out)
{
  json_t *hdr = NULL;
  char *htext = NULL, *jws = NULL, *p;
  uint8_t digest[32], sig[ES256_SIG_LEN];
  unsigned int dlen = 0;
  size_t tlen = strlen(text), hlen, cap;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (!key->ext->sign)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  hdr = json_pack("{s:s, s:s}", "alg", "ES256", "typ", typ);
  if (!hdr || (key->kid && json_object_set_new(hdr, "kid", json_string(key->kid))))
    goto cleanup;
  htext = json_dumps(hdr, JSON_COMPACT);
  if (!htext)
    goto cleanup;
  hlen = strlen(htext);
  cap = mcim_b64url_len(hlen) + 1 + mcim_b64url_len(tlen) + 1 + mcim_b64url_len(sizeof(sig)) + 1;
  jws = malloc(cap);
  if (!jws)
    goto cleanup;
  p = put_b64(jws, htext, hlen);
  *p++ = '.';
  p = put_b64(p, text, tlen);
  rc = MCIM_CRYPTO_ERROR;
  if (EVP_Digest(jws, (size_t)(p - jws), digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
    goto cleanup;
  mcim_op_count(MCIM_OP_ES256_SIGN);
  rc = key->ext->sign(key->ext_ctx, digest, sig);
  if (rc != MCIM_OK)
    goto cleanup;
  *p++ = '.';
  put_b64(p, sig, sizeof(sig));
  *out = jws;
  jws = NULL;
cleanup:
  free(jws);
  free(htext);
  json_decref(hdr);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_jws_sign(const mcim_jose_key_t *key, const mcim_claims_t *claims, char **out)
{
  json_t *payload = NULL;
  char *text = NULL;
  cjose_header_t *hdr = NULL;
  cjose_jws_t *jws = NULL;
  const char *ser = NULL;
  cjose_err err;
  mcim_cause_t rc;

  if (!key || !claims || !out)
    return MCIM_INVALID_ARGUMENT;
  if (!key->has_private)
    return MCIM_KEY_INVALID;
  rc = build_payload(claims, &payload);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  text = json_dumps(payload, JSON_COMPACT);
  if (text && key->ext) {
    rc = jws_sign_external(key, claims->typ, text, out);
    goto cleanup;
  }
  hdr = cjose_header_new(&err);
  if (!text || !hdr || !cjose_header_set(hdr, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, &err) ||
      /* explicit typing (RFC 8725 section 3.11): the header names the statement type too */
      !cjose_header_set(hdr, "typ", claims->typ, &err) ||
      (key->kid && !cjose_header_set(hdr, CJOSE_HDR_KID, key->kid, &err)))
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  jws = cjose_jws_sign(key->jwk, hdr, (const uint8_t *)text, strlen(text), &err);
  mcim_op_count(MCIM_OP_ES256_SIGN);
  if (!jws || !cjose_jws_export(jws, &ser, &err))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = strdup(ser);
  if (*out)
    rc = MCIM_OK;
cleanup:
  cjose_jws_release(jws);
  cjose_header_release(hdr);
  free(text);
  json_decref(payload);
  return rc;
}

/* Form, algorithm and signature of a compact JWS; returns the decoded payload and header. */
/* Signatures verified before: a device shows its access token with every request and the
 * same statements come back on retries, and each was an ECDSA verification. The id is the
 * SHA-256 of the whole compact JWS (header, payload and signature, byte for byte) and of the
 * key's public point: the same bytes under the same key verify the same way, at any time, so
 * the verdict holds for ever (its claims, times included, are checked at every use by the
 * callers, never kept). Only signatures that verified are kept. */
static struct mcim_verdicts signature_verdicts = MCIM_VERDICTS_INIT;

static bool signature_id(const char *compact, size_t len, const mcim_jose_key_t *key,
                         uint8_t id[32])
{
  const void *parts[] = {key->fp, compact};
  const size_t lens[] = {sizeof(key->fp), len};
  return mcim_verdict_id(id, 2, parts, lens);
}

void mcim_jws_verdicts_clear(void)
{
  mcim_verdict_clear(&signature_verdicts);
}

static mcim_cause_t jws_check(const char *compact, size_t len, const mcim_jose_key_t *key,
                              uint8_t **payload, size_t *payload_len, json_t **header)
{
  struct part parts[3];
  uint8_t sig[ES256_SIG_LEN];
  json_t *hdr = NULL;
  uint8_t *body = NULL;
  size_t body_len = 0;
  cjose_jws_t *jws = NULL;
  cjose_err err;
  mcim_cause_t rc;

  if (!key)
    return MCIM_INVALID_ARGUMENT;
  rc = split_compact(compact, len, parts, 3);
  if (rc != MCIM_OK)
    return rc;
  rc = parse_header(&parts[0], &hdr);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = header_require(hdr, "alg", "ES256");
  if (rc != MCIM_OK)
    goto cleanup;
  rc = b64_decode_alloc(parts[1].p, parts[1].len, &body, &body_len);
  if (rc != MCIM_OK)
    goto cleanup;
  /* ES256 is R || S, 32 bytes each (RFC 7518 section 3.4); anything else cannot verify. */
  if (!b64_decode_exact(parts[2].p, parts[2].len, sig, sizeof(sig))) {
    rc = MCIM_JWS_BAD_SIGNATURE;
    goto cleanup;
  }
  uint8_t id[32];
  bool have_id = signature_id(compact, len, key, id);
  if (have_id && mcim_verdict_known(&signature_verdicts, id, 0))
    goto verified;
  rc = MCIM_JOSE_MALFORMED;
  jws = cjose_jws_import(compact, len, &err);
  if (!jws)
    goto cleanup;
  /* cjose picks the algorithm from its own parse of the header: it must agree with ours. */
  const char *alg = cjose_header_get(cjose_jws_get_protected(jws), CJOSE_HDR_ALG, &err);
  if (!alg || strcmp(alg, CJOSE_HDR_ALG_ES256) != 0) {
    rc = MCIM_JWS_BAD_ALG;
    goto cleanup;
  }
  mcim_op_count(MCIM_OP_ES256_VERIFY);
  if (!cjose_jws_verify(jws, key->jwk, &err)) {
    rc = MCIM_JWS_BAD_SIGNATURE;
    goto cleanup;
  }
  if (have_id)
    mcim_verdict_keep(&signature_verdicts, id, INT64_MIN, INT64_MAX);
verified:
  *payload = body;
  *payload_len = body_len;
  body = NULL;
  if (header) {
    *header = hdr;
    hdr = NULL;
  }
  rc = MCIM_OK;
cleanup:
  cjose_jws_release(jws);
  free(body);
  json_decref(hdr);
  return rc;
}

mcim_cause_t mcim_jws_check_signature(const char *compact, size_t len, const mcim_jose_key_t *key,
                                      uint8_t **payload, size_t *payload_len)
{
  if (!payload || !payload_len)
    return MCIM_INVALID_ARGUMENT;
  return jws_check(compact, len, key, payload, payload_len, NULL);
}

static mcim_cause_t claim_string(json_t *p, const char *name, const char **out)
{
  json_t *v = json_object_get(p, name);
  if (!json_is_string(v) || json_string_length(v) == 0) {
    mcim_log_debug("statement: claim '%s' missing or not a string", name);
    return MCIM_CLAIM_MISSING;
  }
  *out = json_string_value(v);
  return MCIM_OK;
}

static mcim_cause_t claim_time(json_t *p, const char *name, bool required, int64_t *out)
{
  json_t *v = json_object_get(p, name);
  if (!v && !required) {
    *out = 0;
    return MCIM_OK;
  }
  if (!json_is_integer(v) || json_integer_value(v) <= 0) {
    mcim_log_debug("statement: claim '%s' missing or not a positive integer", name);
    return MCIM_CLAIM_MISSING;
  }
  *out = (int64_t)json_integer_value(v);
  return MCIM_OK;
}

static mcim_cause_t claim_expect(const char *name, const char *got, const char *want)
{
  if (!want || strcmp(got, want) == 0)
    return MCIM_OK;
  mcim_log_debug("statement: claim '%s' is '%s', expected '%s'", name, got, want);
  return MCIM_CLAIM_MISMATCH;
}

static bool issuer_accepted(const mcim_jws_expect_t *x, const char *iss)
{
  if (x->iss && strcmp(x->iss, iss) == 0)
    return true;
  for (const char *const *i = x->iss_any; i && *i; i++)
    if (strcmp(*i, iss) == 0)
      return true;
  return false;
}

/* Presence and types of every mandatory claim, then values, then times. */
static mcim_cause_t check_claims(json_t *p, const mcim_jws_expect_t *x, mcim_claims_t *c)
{
  const char **strings[] = {&c->iss, &c->sub, &c->aud, &c->typ, &c->jti, &c->txn};
  int64_t nbf = 0;
  mcim_cause_t rc = MCIM_OK;

  for (size_t i = 0; mandatory_strings[i]; i++)
    if ((rc = claim_string(p, mandatory_strings[i], strings[i])) != MCIM_OK)
      return rc;
  if ((rc = claim_time(p, "iat", true, &c->iat)) != MCIM_OK ||
      (rc = claim_time(p, "exp", true, &c->exp)) != MCIM_OK ||
      (rc = claim_time(p, "nbf", false, &nbf)) != MCIM_OK)
    return rc;

  if (!issuer_accepted(x, c->iss)) {
    mcim_log_debug("statement: issuer '%s' not accepted", c->iss);
    return MCIM_CLAIM_MISMATCH;
  }
  if ((rc = claim_expect("aud", c->aud, x->aud)) != MCIM_OK ||
      (rc = claim_expect("typ", c->typ, x->typ)) != MCIM_OK ||
      (rc = claim_expect("sub", c->sub, x->sub)) != MCIM_OK ||
      (rc = claim_expect("txn", c->txn, x->txn)) != MCIM_OK)
    return rc;
  if (c->exp <= c->iat)
    return MCIM_CLAIM_MISMATCH;

  int64_t now = x->now ? x->now : mcim_now();
  if (c->iat > now + x->skew || nbf > now + x->skew)
    return MCIM_TOKEN_NOT_YET_VALID;
  if (now - x->skew >= c->exp)
    return MCIM_TOKEN_EXPIRED;
  return MCIM_OK;
}

static mcim_cause_t expect_valid(const mcim_jws_expect_t *x)
{
  if (!x || (!x->iss && !x->iss_any) || !x->aud || !x->typ || x->skew < 0)
    return MCIM_INVALID_ARGUMENT;
  return MCIM_OK;
}

/* Everything but the replay cache; the statement is returned on success. */
static mcim_cause_t statement_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
                                     const mcim_jws_expect_t *x, mcim_statement_t **out)
{
  uint8_t *body = NULL;
  size_t body_len = 0;
  json_t *hdr = NULL;
  mcim_statement_t *st = NULL;
  mcim_cause_t rc = expect_valid(x);

  if (rc != MCIM_OK)
    return rc;
  rc = jws_check(compact, len, key, &body, &body_len, &hdr);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  st = calloc(1, sizeof(*st));
  if (!st)
    goto cleanup;
  rc = MCIM_JOSE_MALFORMED;
  st->payload = json_loadb((const char *)body, body_len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(st->payload))
    goto cleanup;
  rc = check_claims(st->payload, x, &st->claims);
  if (rc != MCIM_OK)
    goto cleanup;
  /* A typed header must agree with the typ claim (no type confusion between the two). */
  json_t *htyp = json_object_get(hdr, "typ");
  if (htyp && (!json_is_string(htyp) || strcmp(json_string_value(htyp), st->claims.typ) != 0)) {
    rc = MCIM_CLAIM_MISMATCH;
    goto cleanup;
  }
  json_t *kid = json_object_get(hdr, "kid");
  if (json_is_string(kid) && !(st->kid = strdup(json_string_value(kid)))) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  st->claims.extra = st->payload;
  *out = st;
  st = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_statement_free(st);
  json_decref(hdr);
  free(body);
  return rc;
}

static mcim_cause_t replay_check(const mcim_jws_expect_t *x, const mcim_statement_t *st)
{
  if (!x->replay)
    return MCIM_OK;
  if (!x->replay->check_and_insert)
    return MCIM_INVALID_ARGUMENT;
  int64_t now = x->now ? x->now : mcim_now();
  /* Kept until the statement could no longer be accepted anyway. */
  return x->replay->check_and_insert(x->replay->ctx, st->claims.iss, st->claims.jti,
                                     st->claims.exp + x->skew, now);
}

mcim_cause_t mcim_jws_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
                             const mcim_jws_expect_t *expect, mcim_statement_t **out)
{
  mcim_statement_t *st = NULL;
  mcim_cause_t rc = statement_verify(compact, len, key, expect, &st);
  if (rc == MCIM_OK)
    rc = replay_check(expect, st);
  if (rc == MCIM_OK && out) {
    *out = st;
    st = NULL;
  }
  mcim_statement_free(st);
  return rc;
}

/* ---- JWE ---------------------------------------------------------------------------- */

/* A compact JWE taken apart and checked, ready to decrypt. */
struct jwe {
  struct part parts[5]; /* header, encrypted key, iv, ciphertext, tag (base64url) */
  EVP_PKEY *epk;        /* the sender's ephemeral public key */
  uint8_t epk_x[P256_LEN], epk_y[P256_LEN]; /* its point (for an external key's ECDH) */
  uint8_t *apu, *apv;   /* Concat KDF party info, when the header has them */
  size_t apu_len, apv_len;
  uint8_t iv[GCM_IV_LEN];
  uint8_t tag[GCM_TAG_LEN];
  uint8_t *ct;
  size_t ct_len;
};

static void jwe_free(struct jwe *j)
{
  EVP_PKEY_free(j->epk);
  free(j->apu);
  free(j->apv);
  free(j->ct);
}

/* The ephemeral public key of an ECDH-ES header: a public P-256 JWK whose point is valid. */
static mcim_cause_t epk_parse(json_t *epk, EVP_PKEY **out, uint8_t x[P256_LEN],
                              uint8_t y[P256_LEN])
{
  json_t *kty = json_object_get(epk, "kty"), *crv = json_object_get(epk, "crv");
  if (!json_is_object(epk) || json_object_get(epk, "d") || !json_is_string(kty) ||
      strcmp(json_string_value(kty), "EC") != 0 || !json_is_string(crv) ||
      strcmp(json_string_value(crv), "P-256") != 0 || !jwk_coord(epk, "x", x) ||
      !jwk_coord(epk, "y", y) || p256_pkey(x, y, NULL, out) != MCIM_OK)
    return MCIM_JOSE_MALFORMED;
  return MCIM_OK;
}

/* Optional "apu"/"apv": base64url strings when present. */
static mcim_cause_t party_info(json_t *hdr, const char *name, uint8_t **out, size_t *len)
{
  json_t *v = json_object_get(hdr, name);
  if (!v)
    return MCIM_OK;
  if (!json_is_string(v))
    return MCIM_JOSE_MALFORMED;
  return b64_decode_alloc(json_string_value(v), json_string_length(v), out, len);
}

/* Everything about a compact JWE that can be checked without the key. */
static mcim_cause_t jwe_parse(const char *compact, size_t len, struct jwe *j)
{
  json_t *hdr = NULL;
  struct part *p = j->parts;
  mcim_cause_t rc = split_compact(compact, len, p, 5);
  if (rc != MCIM_OK)
    return rc;
  rc = parse_header(&p[0], &hdr);
  if (rc != MCIM_OK)
    return rc;
  if ((rc = header_require(hdr, "alg", "ECDH-ES")) != MCIM_OK ||
      (rc = header_require(hdr, "enc", "A256GCM")) != MCIM_OK)
    goto cleanup;
  if (json_object_get(hdr, "zip")) { /* compression before encryption leaks; not ours */
    rc = MCIM_JWS_BAD_ALG;
    goto cleanup;
  }
  if ((rc = epk_parse(json_object_get(hdr, "epk"), &j->epk, j->epk_x, j->epk_y)) != MCIM_OK ||
      (rc = party_info(hdr, "apu", &j->apu, &j->apu_len)) != MCIM_OK ||
      (rc = party_info(hdr, "apv", &j->apv, &j->apv_len)) != MCIM_OK)
    goto cleanup;
  /* Direct key agreement: no encrypted key; GCM: 96-bit IV and the full 128-bit tag (GCM
   * checks only as many tag bytes as it is given). */
  rc = MCIM_JOSE_MALFORMED;
  if (p[1].len != 0 || p[3].len == 0 || !b64_decode_exact(p[2].p, p[2].len, j->iv, GCM_IV_LEN) ||
      !b64_decode_exact(p[4].p, p[4].len, j->tag, GCM_TAG_LEN))
    goto cleanup;
  rc = b64_decode_alloc(p[3].p, p[3].len, &j->ct, &j->ct_len);
cleanup:
  json_decref(hdr);
  return rc;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

static uint8_t *put_lendata(uint8_t *p, const uint8_t *data, size_t len)
{
  p = put_u32(p, (uint32_t)len);
  if (len)
    memcpy(p, data, len);
  return p + len;
}

/* The Concat KDF of ECDH-ES (RFC 7518 section 4.6; NIST SP 800-56A, SHA-256) from the shared
 * secret Z, over OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo
 * (keydatalen in bits), each of the first three length-prefixed. */
static mcim_cause_t concat_kdf(uint8_t *z, size_t z_len, const char *alg_id, const uint8_t *apu,
                               size_t apu_len, const uint8_t *apv, size_t apv_len, uint8_t *out,
                               size_t out_len)
{
  size_t alg_len = strlen(alg_id);
  size_t info_len = 4 + alg_len + 4 + apu_len + 4 + apv_len + 4;
  uint8_t *info = malloc(info_len);
  char digest[] = "SHA256";
  EVP_KDF *kdf = NULL;
  EVP_KDF_CTX *kctx = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!info)
    goto cleanup;
  uint8_t *q = put_lendata(info, (const uint8_t *)alg_id, alg_len);
  q = put_lendata(q, apu, apu_len);
  q = put_lendata(q, apv, apv_len);
  put_u32(q, (uint32_t)(out_len * 8));
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, z, z_len),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, info_len),
      OSSL_PARAM_construct_end(),
  };
  rc = MCIM_CRYPTO_ERROR;
  kdf = EVP_KDF_fetch(NULL, "SSKDF", NULL); /* the single-step KDF is the Concat KDF */
  kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
  if (!kctx || EVP_KDF_derive(kctx, out, out_len, params) != 1)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  EVP_KDF_CTX_free(kctx);
  EVP_KDF_free(kdf);
  free(info);
  ERR_clear_error();
  return rc;
}

/* ECDH-ES key derivation, RFC 7518 section 4.6: Z = ECDH(priv, peer) (in this process, or by
 * the holder of an external key, from the peer's point), then the Concat KDF. */
static mcim_cause_t ecdh_es_derive(const mcim_jose_key_t *priv, EVP_PKEY *peer,
                                   const uint8_t peer_x[P256_LEN], const uint8_t peer_y[P256_LEN],
                                   const char *alg_id, const uint8_t *apu, size_t apu_len,
                                   const uint8_t *apv, size_t apv_len, uint8_t *out,
                                   size_t out_len)
{
  uint8_t z[P256_LEN];
  size_t z_len = sizeof(z);
  EVP_PKEY_CTX *dh = NULL;
  mcim_cause_t rc = MCIM_JWE_DECRYPT_FAILED;

  mcim_op_count(MCIM_OP_ECDH_ES_DECRYPT);
  if (priv->ext) {
    rc = priv->ext->ecdh ? priv->ext->ecdh(priv->ext_ctx, peer_x, peer_y, z) : MCIM_KEY_INVALID;
    if (rc != MCIM_OK)
      goto cleanup;
  } else {
    dh = EVP_PKEY_CTX_new_from_pkey(NULL, priv->pkey, NULL);
    if (!dh || EVP_PKEY_derive_init(dh) != 1 || EVP_PKEY_derive_set_peer(dh, peer) != 1 ||
        EVP_PKEY_derive(dh, z, &z_len) != 1 || z_len != sizeof(z))
      goto cleanup;
  }
  rc = concat_kdf(z, sizeof(z), alg_id, apu, apu_len, apv, apv_len, out, out_len);
cleanup:
  mcim_wipe(z, sizeof(z));
  EVP_PKEY_CTX_free(dh);
  ERR_clear_error();
  return rc;
}

/* The coordinates of a P-256 public key. */
static bool p256_point(const EVP_PKEY *pkey, uint8_t x[P256_LEN], uint8_t y[P256_LEN])
{
  BIGNUM *bx = NULL, *by = NULL;
  bool ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) == 1 &&
            EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) == 1 &&
            BN_bn2binpad(bx, x, P256_LEN) == P256_LEN && BN_bn2binpad(by, y, P256_LEN) == P256_LEN;
  BN_free(bx);
  BN_free(by);
  ERR_clear_error();
  return ok;
}

mcim_cause_t mcim_jose_ecdh_es_derive(const mcim_jose_key_t *priv, const mcim_jose_key_t *peer,
                                      const char *alg_id, const uint8_t *apu, size_t apu_len,
                                      const uint8_t *apv, size_t apv_len, uint8_t *out,
                                      size_t out_len)
{
  if (!priv || !peer || !alg_id || !out || out_len == 0 || out_len > 64 ||
      (apu_len && !apu) || (apv_len && !apv))
    return MCIM_INVALID_ARGUMENT;
  uint8_t x[P256_LEN], y[P256_LEN];
  if (!priv->has_private || !p256_point(peer->pkey, x, y))
    return MCIM_KEY_INVALID;
  return ecdh_es_derive(priv, peer->pkey, x, y, alg_id, apu, apu_len, apv, apv_len, out, out_len);
}

/* AES-256-GCM decryption; the additional data is the header part exactly as received. */
static mcim_cause_t gcm_open(const uint8_t cek[32], const struct jwe *j, uint8_t *out)
{
  int n = 0;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  mcim_cause_t rc = MCIM_JWE_DECRYPT_FAILED;
  /* Lengths are bounded by MCIM_JOSE_MAX_LEN, so they fit an int. */
  if (c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, j->iv) == 1 &&
      EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)j->parts[0].p, (int)j->parts[0].len) == 1 &&
      EVP_DecryptUpdate(c, out, &n, j->ct, (int)j->ct_len) == 1 &&
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, (void *)j->tag) == 1 &&
      EVP_DecryptFinal_ex(c, out + n, &n) == 1)
    rc = MCIM_OK;
  EVP_CIPHER_CTX_free(c);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_jwe_encrypt(const mcim_jose_key_t *recipient, const uint8_t *plain, size_t len,
                              char **out)
{
  cjose_header_t *hdr = NULL;
  cjose_jwe_t *jwe = NULL;
  cjose_err err;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!recipient || !plain || len == 0 || !out)
    return MCIM_INVALID_ARGUMENT;
  hdr = cjose_header_new(&err);
  if (!hdr || !cjose_header_set(hdr, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ECDH_ES, &err) ||
      !cjose_header_set(hdr, CJOSE_HDR_ENC, CJOSE_HDR_ENC_A256GCM, &err) ||
      (recipient->kid && !cjose_header_set(hdr, CJOSE_HDR_KID, recipient->kid, &err)))
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  jwe = cjose_jwe_encrypt(recipient->jwk, hdr, plain, len, &err);
  mcim_op_count(MCIM_OP_ECDH_ES_ENCRYPT);
  if (!jwe)
    goto cleanup;
  *out = dup_cjose_string(cjose_jwe_export(jwe, &err));
  rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
cleanup:
  cjose_jwe_release(jwe);
  cjose_header_release(hdr);
  return rc;
}

mcim_cause_t mcim_jwe_decrypt(const mcim_jose_key_t *recipient, const char *compact, size_t len,
                              uint8_t **plain, size_t *plain_len)
{
  struct jwe j = {0};
  uint8_t cek[32];
  uint8_t *pt = NULL;
  mcim_cause_t rc;

  if (!recipient || !plain || !plain_len)
    return MCIM_INVALID_ARGUMENT;
  rc = jwe_parse(compact, len, &j);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (!recipient->has_private)
    goto cleanup;
  rc = ecdh_es_derive(recipient, j.epk, j.epk_x, j.epk_y, "A256GCM", j.apu, j.apu_len, j.apv,
                      j.apv_len, cek, sizeof(cek));
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  pt = malloc(j.ct_len);
  if (!pt)
    goto cleanup;
  rc = gcm_open(cek, &j, pt);
  if (rc != MCIM_OK)
    goto cleanup;
  *plain = pt;
  *plain_len = j.ct_len;
  pt = NULL;
cleanup:
  mcim_jose_secret_free(pt, j.ct_len); /* unverified plaintext is wiped too */
  mcim_wipe(cek, sizeof(cek));
  jwe_free(&j);
  return rc;
}

/* ---- sealed packages ---------------------------------------------------------------- */

mcim_cause_t mcim_package_seal(const mcim_jose_key_t *issuer, const mcim_claims_t *claims,
                               const mcim_jose_key_t *recipient, const uint8_t *content,
                               size_t len, char **out)
{
  char *jwe = NULL;
  json_t *extra = NULL;
  mcim_claims_t c;
  mcim_cause_t rc;

  if (!issuer || !claims || !recipient || !out)
    return MCIM_INVALID_ARGUMENT;
  if (claims->extra && (!json_is_object(claims->extra) ||
                        json_object_get(claims->extra, MCIM_PACKAGE_CLAIM)))
    return MCIM_INVALID_ARGUMENT;
  rc = mcim_jwe_encrypt(recipient, content, len, &jwe);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  extra = claims->extra ? json_copy(claims->extra) : json_object();
  if (!extra || json_object_set_new(extra, MCIM_PACKAGE_CLAIM, json_string(jwe)))
    goto cleanup;
  c = *claims;
  c.extra = extra;
  rc = mcim_jws_sign(issuer, &c, out);
cleanup:
  json_decref(extra);
  free(jwe);
  return rc;
}

/* Origin, claims and the form of the inner JWE; the JWE string stays in the statement. */
static mcim_cause_t package_verify(const char *pkg, size_t len, const mcim_jose_key_t *issuer,
                                   const mcim_jws_expect_t *x, mcim_statement_t **out,
                                   const char **jwe, size_t *jwe_len)
{
  mcim_statement_t *st = NULL;
  mcim_cause_t rc = statement_verify(pkg, len, issuer, x, &st);
  if (rc != MCIM_OK)
    return rc;
  json_t *v = json_object_get(st->payload, MCIM_PACKAGE_CLAIM);
  if (!json_is_string(v)) {
    rc = MCIM_CLAIM_MISSING;
    goto cleanup;
  }
  struct jwe j = {0};
  rc = jwe_parse(json_string_value(v), json_string_length(v), &j);
  jwe_free(&j);
  if (rc != MCIM_OK)
    goto cleanup;
  *jwe = json_string_value(v);
  *jwe_len = json_string_length(v);
  *out = st;
  st = NULL;
cleanup:
  mcim_statement_free(st);
  return rc;
}

mcim_cause_t mcim_package_verify(const char *pkg, size_t len, const mcim_jose_key_t *issuer,
                                 const mcim_jws_expect_t *expect, mcim_statement_t **out)
{
  mcim_statement_t *st = NULL;
  const char *jwe = NULL;
  size_t jwe_len = 0;
  mcim_cause_t rc = package_verify(pkg, len, issuer, expect, &st, &jwe, &jwe_len);
  if (rc == MCIM_OK)
    rc = replay_check(expect, st);
  if (rc == MCIM_OK && out) {
    *out = st;
    st = NULL;
  }
  mcim_statement_free(st);
  return rc;
}

mcim_cause_t mcim_package_open(const char *pkg, size_t len, const mcim_jose_key_t *issuer,
                               const mcim_jws_expect_t *expect, const mcim_jose_key_t *recipient,
                               mcim_statement_t **out, uint8_t **content, size_t *content_len)
{
  mcim_statement_t *st = NULL;
  const char *jwe = NULL;
  size_t jwe_len = 0;
  uint8_t *pt = NULL;
  size_t pt_len = 0;
  mcim_cause_t rc;

  if (!recipient || !content || !content_len)
    return MCIM_INVALID_ARGUMENT;
  rc = package_verify(pkg, len, issuer, expect, &st, &jwe, &jwe_len);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_jwe_decrypt(recipient, jwe, jwe_len, &pt, &pt_len);
  if (rc != MCIM_OK)
    goto cleanup;
  /* Only a package that also opened consumes its jti: a refusal records nothing, so the
   * same package can be retried once the cause (say, the wrong TRE key) is fixed. */
  rc = replay_check(expect, st);
  if (rc != MCIM_OK)
    goto cleanup;
  *content = pt;
  *content_len = pt_len;
  pt = NULL;
  if (out) {
    *out = st;
    st = NULL;
  }
cleanup:
  mcim_jose_secret_free(pt, pt_len);
  mcim_statement_free(st);
  return rc;
}

/* A claim of a compact JWS, read before verification, only to pick the key to verify
 * with; a caller must verify the statement before trusting anything in it. */
mcim_cause_t mcim_jws_peek_claim(const char *jws, const char *name, json_t **out)
{
  *out = NULL;
  const char *d1 = strchr(jws, '.');
  const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
  if (!d1 || !d2 || (size_t)(d2 - d1 - 1) > 65536)
    return MCIM_JOSE_MALFORMED;
  size_t cap = (size_t)(d2 - d1 - 1) / 4 * 3 + 3, n = 0;
  uint8_t *buf = malloc(cap);
  if (!buf)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, cap, &n);
  json_t *p = rc == MCIM_OK ? json_loadb((const char *)buf, n, 0, NULL) : NULL;
  free(buf);
  if (!p)
    return MCIM_JOSE_MALFORMED;
  json_t *v = json_object_get(p, name);
  if (v)
    *out = json_incref(v);
  json_decref(p);
  return v ? MCIM_OK : MCIM_CLAIM_MISSING;
}
