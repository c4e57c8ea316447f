/* JWE ECDH-ES/A256GCM (RFC 7516, RFC 7518 sections 4.6 and 5.3) and sealed packages (a JWE
 * inside a JWS). cjose encrypts; decryption is assembled from OpenSSL primitives (jose.c's
 * head comment says why), after the compact form is checked strictly. */
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

/* ---- JWE ---------------------------------------------------------------------------- */

/* A compact JWE taken apart and checked, ready to decrypt. */
struct jwe {
  struct jose_part parts[5]; /* header, encrypted key, iv, ciphertext, tag (base64url) */
  EVP_PKEY *epk;             /* the sender's ephemeral public key */
  uint8_t epk_x[P256_LEN], epk_y[P256_LEN]; /* its point (for an external key's ECDH) */
  uint8_t *apu, *apv;                       /* Concat KDF party info, when the header has them */
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
static mcim_cause_t epk_parse(json_t *epk, EVP_PKEY **out, uint8_t x[P256_LEN], uint8_t y[P256_LEN])
{
  json_t *kty = json_object_get(epk, "kty"), *crv = json_object_get(epk, "crv");
  if (!json_is_object(epk) || json_object_get(epk, "d") || !json_is_string(kty) ||
      strcmp(json_string_value(kty), "EC") != 0 || !json_is_string(crv) ||
      strcmp(json_string_value(crv), "P-256") != 0 || !jose_jwk_coord(epk, "x", x) ||
      !jose_jwk_coord(epk, "y", y) || jose_p256_pkey(x, y, NULL, out) != MCIM_OK)
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
  return jose_b64_decode_alloc(json_string_value(v), json_string_length(v), out, len);
}

/* Everything about a compact JWE that can be checked without the key. */
static mcim_cause_t jwe_parse(const char *compact, size_t len, struct jwe *j)
{
  json_t *hdr = NULL;
  struct jose_part *p = j->parts;
  mcim_cause_t rc = jose_split_compact(compact, len, p, 5);
  if (rc != MCIM_OK)
    return rc;
  rc = jose_parse_header(&p[0], &hdr);
  if (rc != MCIM_OK)
    return rc;
  if ((rc = jose_header_require(hdr, "alg", "ECDH-ES")) != MCIM_OK ||
      (rc = jose_header_require(hdr, "enc", "A256GCM")) != MCIM_OK)
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
  if (p[1].len != 0 || p[3].len == 0 ||
      !jose_b64_decode_exact(p[2].p, p[2].len, j->iv, GCM_IV_LEN) ||
      !jose_b64_decode_exact(p[4].p, p[4].len, j->tag, GCM_TAG_LEN))
    goto cleanup;
  rc = jose_b64_decode_alloc(p[3].p, p[3].len, &j->ct, &j->ct_len);
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
                                   const uint8_t *apv, size_t apv_len, uint8_t *out, size_t out_len)
{
  uint8_t z[P256_LEN];
  size_t z_len = sizeof(z);
  EVP_PKEY_CTX *dh = NULL, *check = NULL;
  mcim_cause_t rc = MCIM_JWE_DECRYPT_FAILED;

  mcim_op_count(MCIM_OP_ECDH_ES_DECRYPT);
  if (priv->ext) {
    rc = priv->ext->ecdh ? priv->ext->ecdh(priv->ext_ctx, peer_x, peer_y, z) : MCIM_KEY_INVALID;
    if (rc != MCIM_OK)
      goto cleanup;
  } else {
    /* The peer's point is checked here, by the partial validation of SP 800-56A rev 3
     * 5.6.2.3.4 (Q not infinity, coordinates in [0, p-1], Q on the curve:
     * EVP_PKEY_public_check_quick), and EVP_PKEY_derive_set_peer's own check is turned off:
     * OpenSSL 3 runs the full validation of 5.6.2.3.3 there, whose one further step, n*Q == O,
     * is a scalar multiplication as dear as the ECDH. P-256's cofactor is 1: the group of its
     * points has prime order n, so every point on the curve but infinity has order n and that
     * step cannot fail once the partial validation passed. Every peer key is built by
     * jose_p256_pkey or pkey_checked, which ran the same check; it runs again here so that
     * the ECDH does not depend on how its peer was made. */
    dh = EVP_PKEY_CTX_new_from_pkey(NULL, priv->pkey, NULL);
    check = EVP_PKEY_CTX_new_from_pkey(NULL, peer, NULL);
    if (!dh || !check || EVP_PKEY_public_check_quick(check) != 1 ||
        EVP_PKEY_derive_init(dh) != 1 || EVP_PKEY_derive_set_peer_ex(dh, peer, 0) != 1 ||
        EVP_PKEY_derive(dh, z, &z_len) != 1 || z_len != sizeof(z))
      goto cleanup;
  }
  rc = concat_kdf(z, sizeof(z), alg_id, apu, apu_len, apv, apv_len, out, out_len);
cleanup:
  mcim_wipe(z, sizeof(z));
  EVP_PKEY_CTX_free(check);
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
  if (!priv || !peer || !alg_id || !out || out_len == 0 || out_len > 64 || (apu_len && !apu) ||
      (apv_len && !apv))
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
  *out = jose_dup_cjose_string(cjose_jwe_export(jwe, &err));
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
                               const mcim_jose_key_t *recipient, const uint8_t *content, size_t len,
                               char **out)
{
  char *jwe = NULL;
  json_t *extra = NULL;
  mcim_claims_t c;
  mcim_cause_t rc;

  if (!issuer || !claims || !recipient || !out)
    return MCIM_INVALID_ARGUMENT;
  if (claims->extra &&
      (!json_is_object(claims->extra) || json_object_get(claims->extra, MCIM_PACKAGE_CLAIM)))
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
  mcim_cause_t rc = jose_statement_verify(pkg, len, issuer, x, &st);
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
    rc = jose_replay_check(expect, st);
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
  rc = jose_replay_check(expect, st);
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
