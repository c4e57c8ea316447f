/* JOSE keys: P-256 keys as both cjose and OpenSSL need them, from raw coordinates, an OpenSSL
 * key, a JWK, or a private part held elsewhere (mcim_jose_key_external: the TPM TRE's keys).
 * The checks of what is acceptable are jose.c's (jose_p256_pkey). */
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

#include "crypto/jose_priv.h"
#include "crypto/verdicts.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

/* ---- keys --------------------------------------------------------------------------- */

/* `have`, a P-256 key of these coordinates (and d), checked as jose_p256_pkey checks the key
 * it builds: the point on the curve and not infinity, d in [1, n-1]. */
static mcim_cause_t pkey_checked(EVP_PKEY *have, bool with_d, EVP_PKEY **out)
{
  EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, have, NULL);
  mcim_cause_t rc = MCIM_KEY_INVALID;
  if (check && EVP_PKEY_public_check_quick(check) == 1 &&
      (!with_d || EVP_PKEY_private_check(check) == 1) && EVP_PKEY_up_ref(have) == 1) {
    *out = have;
    rc = MCIM_OK;
  }
  EVP_PKEY_CTX_free(check);
  ERR_clear_error();
  return rc;
}

/* Build from raw coordinates (and optionally d): OpenSSL's key is `have` when the caller
 * has one of these coordinates (referenced, checked), else built; cjose gets its own. */
static mcim_cause_t key_from_raw_have(const uint8_t *x, const uint8_t *y, const uint8_t *d,
                                      EVP_PKEY *have, mcim_jose_key_t **out)
{
  cjose_err err;
  mcim_jose_key_t *k = calloc(1, sizeof(*k));
  if (!k)
    return MCIM_NO_MEMORY;
  atomic_init(&k->refs, 1);
  mcim_cause_t rc =
      have ? pkey_checked(have, d != NULL, &k->pkey) : jose_p256_pkey(x, y, d, &k->pkey);
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

static mcim_cause_t key_from_raw(const uint8_t *x, const uint8_t *y, const uint8_t *d,
                                 mcim_jose_key_t **out)
{
  return key_from_raw_have(x, y, d, NULL, out);
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
  uint8_t xb[P256_LEN], yb[P256_LEN], db[P256_LEN], pt[1 + 2 * P256_LEN];
  char group[64], enc[32];
  size_t glen = 0, ptlen = 0, elen = 0;
  bool named = false;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (!pkey || !out)
    return MCIM_INVALID_ARGUMENT;
  if (!EVP_PKEY_is_a(pkey, "EC") ||
      EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &glen) != 1 ||
      strcmp(group, "prime256v1") != 0)
    goto cleanup;
  /* The coordinates from the encoded point (one export of the key, where X and Y were one
   * each); a key on a named curve is kept as OpenSSL's half of the JOSE key (referenced,
   * checked: pkey_checked), not built again from them (EVP_PKEY_fromdata and the curve's
   * group each time: about half of a conversion's 700,000 instructions, callgrind). */
  if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen) == 1 &&
      ptlen == sizeof(pt) && pt[0] == 0x04) {
    memcpy(xb, pt + 1, P256_LEN);
    memcpy(yb, pt + 1 + P256_LEN, P256_LEN);
    named = EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_ENCODING, enc, sizeof(enc),
                                           &elen) == 1 &&
            strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) == 0;
  } else if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
             EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
             BN_bn2binpad(x, xb, P256_LEN) != P256_LEN ||
             BN_bn2binpad(y, yb, P256_LEN) != P256_LEN) {
    goto cleanup;
  }
  /* The private part is optional: a key from a certificate has none. */
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 &&
      BN_bn2binpad(d, db, P256_LEN) != P256_LEN)
    goto cleanup;
  rc = key_from_raw_have(xb, yb, d ? db : NULL, named ? (EVP_PKEY *)pkey : NULL, out);
cleanup:
  mcim_wipe(db, sizeof(db));
  BN_clear_free(d);
  BN_free(x);
  BN_free(y);
  ERR_clear_error();
  return rc;
}

/* A JWK member that must decode to exactly 32 bytes. */
bool jose_jwk_coord(json_t *jwk, const char *name, uint8_t out[P256_LEN])
{
  json_t *v = json_object_get(jwk, name);
  return json_is_string(v) &&
         jose_b64_decode_exact(json_string_value(v), json_string_length(v), out, P256_LEN);
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
  if (!json_is_object(jwk) || !json_is_string(json_object_get(jwk, "kty")) ||
      strcmp(json_string_value(json_object_get(jwk, "kty")), "EC") != 0 ||
      !json_is_string(json_object_get(jwk, "crv")) ||
      strcmp(json_string_value(json_object_get(jwk, "crv")), "P-256") != 0 ||
      !jose_jwk_coord(jwk, "x", x) || !jose_jwk_coord(jwk, "y", y))
    goto cleanup;
  bool has_d = json_object_get(jwk, "d") != NULL;
  if (has_d && !jose_jwk_coord(jwk, "d", d))
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
  char *s = jose_dup_cjose_string(cjose_jwk_to_json(key->jwk, false, &err));
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
    rc = jose_p256_pkey(xb, yb, NULL, out);
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

const char *mcim_jose_key_kid(const mcim_jose_key_t *key) { return key ? key->kid : NULL; }

bool mcim_jose_key_has_private(const mcim_jose_key_t *key) { return key && key->has_private; }

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
