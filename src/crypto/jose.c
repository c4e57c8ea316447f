/* JWS ES256 statements, and the strict compact form every JOSE object of mcim is checked
 * against. JWE ECDH-ES/A256GCM and sealed packages (a JWE inside a JWS) are in jose_jwe.c, keys
 * in jose_key.c, the in-memory replay cache in jose_replay.c; what they share is in
 * jose_priv.h.
 *
 * cjose 0.6.2 signs, verifies and encrypts. Decryption is assembled in jose_jwe.c from OpenSSL
 * primitives (ECDH by EVP_PKEY_derive, the RFC 7518 section 4.6 Concat KDF by OpenSSL's
 * SSKDF, AES-256-GCM by EVP): cjose's ECDH-ES decryption leaks the buffer of the empty
 * encrypted-key part on every call (_cjose_jwe_decrypt_ek_ecdh_es overwrites it with NULL),
 * which would make every ASan-built program that opens a package fail. Interoperability of
 * the two directions is what test_jose_jwe checks (cjose encrypts, we decrypt; RFC 7518
 * App. C).
 *
 * A key whose private part is elsewhere (mcim_jose_key_external: the TPM TRE's keys) signs
 * and opens JWEs through the same entry points: the compact JWS is assembled here and only
 * the digest goes out for ES256, and only the peer's point goes out for ECDH (Z comes back,
 * the Concat KDF and AES-GCM run in jose_jwe.c as for the other keys).
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

#include "crypto/jose_priv.h"
#include "crypto/verdicts.h"
#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

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

/* Split a compact serialization into exactly `n` parts of base64url characters. */
mcim_cause_t jose_split_compact(const char *s, size_t len, struct jose_part *parts, size_t n)
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
mcim_cause_t jose_b64_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen)
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
bool jose_b64_decode_exact(const char *in, size_t len, uint8_t *out, size_t want)
{
  size_t n = 0;
  return mcim_b64url_decode(in, len, out, want, &n) == MCIM_OK && n == want;
}

/* Parse a protected header: a JSON object, no duplicate names, no "crit" (we implement no
 * extension, so RFC 7515 section 4.1.11 says such an object must be refused). */
mcim_cause_t jose_parse_header(const struct jose_part *p, json_t **out)
{
  uint8_t *raw = NULL;
  size_t rawlen = 0;
  json_t *hdr = NULL;
  mcim_cause_t rc = jose_b64_decode_alloc(p->p, p->len, &raw, &rawlen);
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
mcim_cause_t jose_header_require(json_t *hdr, const char *name, const char *allowed)
{
  json_t *v = json_object_get(hdr, name);
  if (!json_is_string(v))
    return MCIM_JOSE_MALFORMED;
  return strcmp(json_string_value(v), allowed) == 0 ? MCIM_OK : MCIM_JWS_BAD_ALG;
}

char *jose_dup_cjose_string(char *s)
{
  char *copy = s ? strdup(s) : NULL;
  if (s)
    cjose_get_dealloc()(s);
  return copy;
}

/* A public key is made as a copy of this one, the generator G as a public P-256 key, with
 * its point replaced (OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, which checks the point is on the
 * curve as the import does): EVP_PKEY_fromdata builds the curve's group again for every key
 * (its Montgomery context: a modular inversion), where a copy copies the template's; a
 * received key costs less than half as much (callgrind, docs/performance.md). Made once, never
 * changed nor given out; NULL if it could not be made (then every key is imported). A key
 * pair is imported: the EC provider takes no private key as a parameter of a key it holds. */
static EVP_PKEY *p256_public_template;
static pthread_once_t p256_public_once = PTHREAD_ONCE_INIT;

static const uint8_t p256_g[1 + 2 * P256_LEN] = {
    0x04, /* uncompressed */
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98,
    0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c,
    0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68,
    0x37, 0xbf, 0x51, 0xf5,
};

/* EVP_PKEY_fromdata of the point `pt` (and d): a fresh group. */
static EVP_PKEY *p256_import(const uint8_t pt[1 + 2 * P256_LEN], const uint8_t *d)
{
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  BIGNUM *priv = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  EVP_PKEY *pkey = NULL;

  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * P256_LEN))
    goto cleanup;
  if (d && (!(priv = BN_secure_new()) || !BN_bin2bn(d, P256_LEN, priv) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)))
    goto cleanup;
  if (!(params = OSSL_PARAM_BLD_to_param(bld)))
    goto cleanup;
  ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
      EVP_PKEY_fromdata(ctx, &pkey, d ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1) {
    EVP_PKEY_free(pkey);
    pkey = NULL;
  }
cleanup:
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params); /* d came from a secure BIGNUM: that part is cleared on free */
  BN_clear_free(priv);
  OSSL_PARAM_BLD_free(bld);
  return pkey;
}

static void p256_public_template_make(void)
{
  p256_public_template = p256_import(p256_g, NULL);
  ERR_clear_error();
}

/* A public key of the point `pt`: a copy of the template with that point, else imported. */
static EVP_PKEY *p256_public(const uint8_t pt[1 + 2 * P256_LEN])
{
  pthread_once(&p256_public_once, p256_public_template_make);
  if (!p256_public_template)
    return p256_import(pt, NULL);
  EVP_PKEY *pkey = EVP_PKEY_dup(p256_public_template);
  if (pkey && EVP_PKEY_set_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
                                              1 + 2 * P256_LEN) != 1) {
    EVP_PKEY_free(pkey); /* not a point of the curve */
    pkey = NULL;
  }
  return pkey;
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
mcim_cause_t jose_p256_pkey(const uint8_t x[P256_LEN], const uint8_t y[P256_LEN], const uint8_t *d,
                            EVP_PKEY **out)
{
  uint8_t pt[1 + 2 * P256_LEN];
  EVP_PKEY_CTX *check = NULL;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  pt[0] = 0x04; /* uncompressed point */
  memcpy(pt + 1, x, P256_LEN);
  memcpy(pt + 1 + P256_LEN, y, P256_LEN);
  EVP_PKEY *pkey = d ? p256_import(pt, d) : p256_public(pt);
  if (!pkey)
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
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_p256_public_pkey(const uint8_t x[32], const uint8_t y[32], EVP_PKEY **out)
{
  if (!x || !y || !out)
    return MCIM_INVALID_ARGUMENT;
  return jose_p256_pkey(x, y, NULL, out);
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
    json_object_foreach (c->extra, key, value) {
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
static mcim_cause_t jws_sign_external(const mcim_jose_key_t *key, const char *typ, const char *text,
                                      char **out)
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
  htext = mcim_json_dumps(hdr);
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
  text = mcim_json_dumps(payload);
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

void mcim_jws_verdicts_clear(void) { mcim_verdict_clear(&signature_verdicts); }

static mcim_cause_t jws_check(const char *compact, size_t len, const mcim_jose_key_t *key,
                              uint8_t **payload, size_t *payload_len, json_t **header)
{
  struct jose_part parts[3];
  uint8_t sig[ES256_SIG_LEN];
  json_t *hdr = NULL;
  uint8_t *body = NULL;
  size_t body_len = 0;
  cjose_jws_t *jws = NULL;
  cjose_err err;
  mcim_cause_t rc;

  if (!key)
    return MCIM_INVALID_ARGUMENT;
  rc = jose_split_compact(compact, len, parts, 3);
  if (rc != MCIM_OK)
    return rc;
  rc = jose_parse_header(&parts[0], &hdr);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = jose_header_require(hdr, "alg", "ES256");
  if (rc != MCIM_OK)
    goto cleanup;
  rc = jose_b64_decode_alloc(parts[1].p, parts[1].len, &body, &body_len);
  if (rc != MCIM_OK)
    goto cleanup;
  /* ES256 is R || S, 32 bytes each (RFC 7518 section 3.4); anything else cannot verify. */
  if (!jose_b64_decode_exact(parts[2].p, parts[2].len, sig, sizeof(sig))) {
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
  /* exp > now - skew here, so exp - now cannot overflow */
  if (x->max_lifetime > 0 && c->exp - now > x->max_lifetime + x->skew)
    return MCIM_LIFETIME_TOO_LONG;
  return MCIM_OK;
}

static mcim_cause_t expect_valid(const mcim_jws_expect_t *x)
{
  if (!x || (!x->iss && !x->iss_any) || !x->aud || !x->typ || x->skew < 0 ||
      x->max_lifetime < 0)
    return MCIM_INVALID_ARGUMENT;
  return MCIM_OK;
}

/* Everything but the replay cache; the statement is returned on success. */
mcim_cause_t jose_statement_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
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

mcim_cause_t jose_replay_check(const mcim_jws_expect_t *x, const mcim_statement_t *st)
{
  if (!x->replay)
    return MCIM_OK;
  if (!x->replay->check_and_insert)
    return MCIM_INVALID_ARGUMENT;
  int64_t now = x->now ? x->now : mcim_now();
  /* Kept until the statement could no longer be accepted anyway. */
  return x->replay->check_and_insert(x->replay->ctx, st->claims.iss, st->claims.jti,
                                     mcim_replay_expires(st->claims.exp, x->skew), now);
}

mcim_cause_t mcim_jws_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
                             const mcim_jws_expect_t *expect, mcim_statement_t **out)
{
  mcim_statement_t *st = NULL;
  mcim_cause_t rc = jose_statement_verify(compact, len, key, expect, &st);
  if (rc == MCIM_OK)
    rc = jose_replay_check(expect, st);
  if (rc == MCIM_OK && out) {
    *out = st;
    st = NULL;
  }
  mcim_statement_free(st);
  return rc;
}

mcim_cause_t mcim_jws_peek_payload(const char *jws, json_t **out)
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
  *out = p;
  return MCIM_OK;
}

mcim_cause_t mcim_jws_peek_claim(const char *jws, const char *name, json_t **out)
{
  json_t *p = NULL;
  *out = NULL;
  mcim_cause_t rc = mcim_jws_peek_payload(jws, &p);
  if (rc != MCIM_OK)
    return rc;
  json_t *v = json_object_get(p, name);
  if (v)
    *out = json_incref(v);
  json_decref(p);
  return v ? MCIM_OK : MCIM_CLAIM_MISSING;
}
