/* JOSE: RFC examples (RFC 7515 A.3, RFC 7518 C, RFC 7516 A.1), statement claims, replay
 * cache, algorithm confusion, sealed packages and their tampering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjose/cjose.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "mcim/jose.h"
#include "mcim/metrics.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

#define NOW ((int64_t)1700000000)
#define TYP "mcim-package+jwt"

/* ---- fixtures ----------------------------------------------------------------------- */

struct party {
  cjose_jwk_t *jwk;     /* for hand-made (hostile) objects */
  mcim_jose_key_t *key; /* private */
  mcim_jose_key_t *pub; /* public only */
};

static struct party issuer, recipient, other;

static void party_make(struct party *p)
{
  cjose_err err;
  p->jwk = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
  assert_non_null(p->jwk);
  char *priv = cjose_jwk_to_json(p->jwk, true, &err);
  char *pub = cjose_jwk_to_json(p->jwk, false, &err);
  assert_int_equal(mcim_jose_key_from_jwk(priv, strlen(priv), &p->key), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(pub, strlen(pub), &p->pub), MCIM_OK);
  mcim_wipe(priv, strlen(priv));
  free(priv);
  free(pub);
}

static void party_free(struct party *p)
{
  cjose_jwk_release(p->jwk);
  mcim_jose_key_free(p->key);
  mcim_jose_key_free(p->pub);
}

static int group_setup(void **state)
{
  (void)state;
  party_make(&issuer);
  party_make(&recipient);
  party_make(&other);
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  party_free(&issuer);
  party_free(&recipient);
  party_free(&other);
  return 0;
}

static char *read_data(const char *name, size_t *len)
{
  char path[512];
  snprintf(path, sizeof(path), "%s/jose/%s", MCIM_TEST_DATA, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 16);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  fclose(f);
  if (len)
    *len = n;
  return buf;
}

static mcim_claims_t claims_default(void)
{
  return (mcim_claims_t){.iss = "sho-a", .sub = "dev1", .aud = "dev1", .typ = TYP,
                         .txn = "0123456789abcdef0123456789abcdef", .iat = NOW, .exp = NOW + 300};
}

static mcim_jws_expect_t expect_default(void)
{
  return (mcim_jws_expect_t){.iss = "sho-a", .aud = "dev1", .typ = TYP, .now = NOW, .skew = 30};
}

/* A claims object with every mandatory claim; tests then break one thing. */
static json_t *payload_default(void)
{
  json_t *p = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "iss", "sho-a", "sub", "dev1",
                        "aud", "dev1", "iat", (json_int_t)NOW, "exp", (json_int_t)(NOW + 300),
                        "jti", "jti-1", "txn", "t1", "typ", TYP);
  assert_non_null(p);
  return p;
}

/* Sign any payload (and one more string header member) with cjose directly. */
static char *sign_raw(cjose_jwk_t *jwk, const char *alg, json_t *payload, const char *extra_name,
                      const char *extra_value)
{
  cjose_err err;
  char *text = json_dumps(payload, JSON_COMPACT);
  cjose_header_t *h = cjose_header_new(&err);
  assert_true(cjose_header_set(h, CJOSE_HDR_ALG, alg, &err));
  if (extra_name)
    assert_true(cjose_header_set(h, extra_name, extra_value, &err));
  cjose_jws_t *jws = cjose_jws_sign(jwk, h, (const uint8_t *)text, strlen(text), &err);
  assert_non_null(jws);
  const char *ser = NULL;
  assert_true(cjose_jws_export(jws, &ser, &err));
  char *out = strdup(ser);
  cjose_jws_release(jws);
  cjose_header_release(h);
  free(text);
  return out;
}

/* The default payload, signed by the issuer. */
static char *sign_default(void)
{
  json_t *p = payload_default();
  char *jws = sign_raw(issuer.jwk, "ES256", p, NULL, NULL);
  json_decref(p);
  return jws;
}

/* Hand-made compact JWS: any header text, any payload, any signature text. */
static char *compact3(const char *header, const char *payload, const char *sig_b64)
{
  size_t hl = strlen(header), pl = strlen(payload);
  char *out = malloc(mcim_b64url_len(hl) + mcim_b64url_len(pl) + strlen(sig_b64) + 3);
  size_t o = mcim_b64url_encode((const uint8_t *)header, hl, out);
  out[o++] = '.';
  o += mcim_b64url_encode((const uint8_t *)payload, pl, out + o);
  out[o++] = '.';
  strcpy(out + o, sig_b64);
  return out;
}

static mcim_cause_t verify_str(const char *jws, const mcim_jws_expect_t *x)
{
  return mcim_jws_verify(jws, strlen(jws), issuer.pub, x, NULL);
}

static mcim_cause_t verify_payload(json_t *payload)
{
  char *jws = sign_raw(issuer.jwk, "ES256", payload, NULL, NULL);
  mcim_jws_expect_t x = expect_default();
  mcim_cause_t rc = verify_str(jws, &x);
  free(jws);
  json_decref(payload);
  return rc;
}

/* ---- RFC examples ------------------------------------------------------------------- */

/* RFC 7515 Appendix A.3: the published ES256 JWS verifies with the published key; every
 * one-character change does not. */
static void test_rfc7515_a3(void **state)
{
  (void)state;
  static const char payload[] =
      "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
  size_t jwk_len, jws_len;
  char *jwk = read_data("rfc7515-a3.jwk", &jwk_len);
  char *jws = read_data("rfc7515-a3.jws", &jws_len);
  mcim_jose_key_t *key = NULL, *pub = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(jwk, jwk_len, &key), MCIM_OK);
  char *pub_json = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(key, &pub_json), MCIM_OK);
  assert_null(strstr(pub_json, "\"d\""));
  assert_int_equal(mcim_jose_key_from_jwk(pub_json, strlen(pub_json), &pub), MCIM_OK);
  assert_false(mcim_jose_key_has_private(pub));

  uint8_t *body = NULL;
  size_t body_len = 0;
  assert_int_equal(mcim_jws_check_signature(jws, jws_len, pub, &body, &body_len), MCIM_OK);
  assert_int_equal(body_len, strlen(payload));
  assert_memory_equal(body, payload, body_len);
  free(body);

  /* It is a valid JWS but not an mcim statement: the claims check is what refuses it. */
  mcim_jws_expect_t x = {.iss = "joe", .aud = "x", .typ = "y", .now = 1300819000};
  assert_int_equal(mcim_jws_verify(jws, jws_len, pub, &x, NULL), MCIM_CLAIM_MISSING);
  assert_int_equal(mcim_jws_check_signature(jws, jws_len, issuer.pub, &body, &body_len),
                   MCIM_JWS_BAD_SIGNATURE);

  for (size_t i = 0; i < jws_len; i++) {
    for (int mask = 1; mask <= 0x20; mask <<= 5) {
      jws[i] ^= (char)mask;
      body = NULL;
      assert_int_not_equal(mcim_jws_check_signature(jws, jws_len, pub, &body, &body_len), MCIM_OK);
      assert_null(body);
      jws[i] ^= (char)mask;
    }
  }
  free(pub_json);
  mcim_jose_key_free(key);
  mcim_jose_key_free(pub);
  free(jwk);
  free(jws);
}

/* RFC 7518 Appendix C: our ECDH-ES derivation (used to open packages) reproduces the
 * published derived key from either side. cjose's derivation (used to seal packages) agrees
 * with ours: test_jwe opens cjose-made JWEs, with and without apu/apv. (cjose's own ECDH-ES
 * decryption is not called: it leaks, see src/crypto/jose.c and jose_jwe.c.) */
static void test_rfc7518_c(void **state)
{
  (void)state;
  size_t hlen, klen, blen, alen;
  char *hdr = read_data("rfc7518-c-header.json", &hlen);
  char *key_b64 = read_data("rfc7518-c-derived-key.b64u", &klen);
  char *bob = read_data("rfc7518-c-bob.jwk", &blen);
  char *alice = read_data("rfc7518-c-alice.jwk", &alen);
  uint8_t cek[16];
  size_t ceklen = 0;
  assert_int_equal(mcim_b64url_decode(key_b64, klen, cek, sizeof(cek), &ceklen), MCIM_OK);
  assert_int_equal(ceklen, 16);

  mcim_jose_key_t *a = NULL, *b = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(alice, alen, &a), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(bob, blen, &b), MCIM_OK);
  uint8_t derived[16];
  assert_int_equal(mcim_jose_ecdh_es_derive(b, a, "A128GCM", (const uint8_t *)"Alice", 5,
                                            (const uint8_t *)"Bob", 3, derived, sizeof(derived)),
                   MCIM_OK);
  assert_memory_equal(derived, cek, sizeof(cek));
  assert_int_equal(mcim_jose_ecdh_es_derive(a, b, "A128GCM", (const uint8_t *)"Alice", 5,
                                            (const uint8_t *)"Bob", 3, derived, sizeof(derived)),
                   MCIM_OK);
  assert_memory_equal(derived, cek, sizeof(cek));
  char derived_b64[32];
  mcim_b64url_encode(derived, sizeof(derived), derived_b64);
  assert_string_equal(derived_b64, "VqqN6vgjbSBcIijNcacQGg");
  /* Any other party info gives another key. */
  assert_int_equal(mcim_jose_ecdh_es_derive(b, a, "A128GCM", NULL, 0, NULL, 0, derived,
                                            sizeof(derived)),
                   MCIM_OK);
  assert_memory_not_equal(derived, cek, sizeof(cek));
  mcim_jose_key_free(a);

  /* mcim accepts A256GCM only: a JWE with the published header is refused by algorithm
   * before any ECDH. */
  char jwe[1024];
  size_t o = mcim_b64url_encode((const uint8_t *)hdr, hlen, jwe);
  snprintf(jwe + o, sizeof(jwe) - o, "..AQIDBAUGBwgJCgsM.AAAA.AAAAAAAAAAAAAAAAAAAAAA");
  uint8_t *pt = NULL;
  size_t ptlen = 0;
  assert_int_equal(mcim_jwe_decrypt(b, jwe, strlen(jwe), &pt, &ptlen), MCIM_JWS_BAD_ALG);
  mcim_jose_key_free(b);
  free(alice);
  free(hdr);
  free(key_b64);
  free(bob);
}

/* RFC 7516 Appendix A.1: RSA-OAEP + A256GCM decrypts with cjose, so cjose's A256GCM content
 * layer (which seals our packages) follows the RFC; test_jwe then opens cjose-sealed objects
 * with our own GCM path. mcim itself refuses the RSA algorithm and key. */
static void test_rfc7516_a1(void **state)
{
  (void)state;
  size_t jlen, klen, tlen;
  char *jwe = read_data("rfc7516-a1.jwe", &jlen);
  char *jwk = read_data("rfc7516-a1.jwk", &klen);
  char *text = read_data("rfc7516-a1.txt", &tlen);
  cjose_err err;
  cjose_jwk_t *rsa = cjose_jwk_import(jwk, klen, &err);
  assert_non_null(rsa);
  cjose_jwe_t *j = cjose_jwe_import(jwe, jlen, &err);
  assert_non_null(j);
  size_t outlen = 0;
  uint8_t *out = cjose_jwe_decrypt(j, rsa, &outlen, &err);
  assert_non_null(out);
  assert_int_equal(outlen, tlen);
  assert_memory_equal(out, text, tlen);
  free(out);
  cjose_jwe_release(j);
  cjose_jwk_release(rsa);

  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(jwk, klen, &k), MCIM_KEY_INVALID);
  uint8_t *pt = NULL;
  size_t ptlen = 0;
  assert_int_equal(mcim_jwe_decrypt(recipient.key, jwe, jlen, &pt, &ptlen), MCIM_JWS_BAD_ALG);
  free(jwe);
  free(jwk);
  free(text);
}

/* ---- statements --------------------------------------------------------------------- */

static void test_sign_verify(void **state)
{
  (void)state;
  mcim_claims_t c = claims_default();
  json_t *extra = json_pack("{s:s}", "scope", "restricted");
  c.extra = extra;
  assert_int_equal(mcim_jose_key_set_kid(issuer.key, "sho-a#1"), MCIM_OK);
  char *jws = NULL;
  assert_int_equal(mcim_jws_sign(issuer.key, &c, &jws), MCIM_OK);
  assert_int_equal(mcim_jose_key_set_kid(issuer.key, NULL), MCIM_OK);

  mcim_jws_expect_t x = expect_default();
  x.sub = "dev1";
  x.txn = c.txn;
  mcim_statement_t *st = NULL;
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, &st), MCIM_OK);
  assert_string_equal(st->claims.iss, "sho-a");
  assert_string_equal(st->claims.sub, "dev1");
  assert_string_equal(st->claims.typ, TYP);
  assert_int_equal(strlen(st->claims.jti), MCIM_JTI_LEN);
  assert_int_equal(st->claims.iat, NOW);
  assert_int_equal(st->claims.exp, NOW + 300);
  assert_string_equal(st->kid, "sho-a#1");
  assert_string_equal(mcim_statement_string(st, "scope"), "restricted");
  assert_null(mcim_statement_string(st, "nope"));
  mcim_statement_free(st);

  /* Signed by someone else: the signature, not the claims, is what fails. */
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), other.pub, &x, NULL),
                   MCIM_JWS_BAD_SIGNATURE);
  /* The verifier's input is (buffer, length): a trailing NUL or byte is not part of it. */
  assert_int_equal(mcim_jws_verify(jws, strlen(jws) + 1, issuer.pub, &x, NULL),
                   MCIM_JOSE_MALFORMED);
  free(jws);
  json_decref(extra);
}

/* The operation counts (include/mcim/opcount.h): one signature, one verification, one JWE
 * each way; /metrics shows them. Refusals before any cryptography count nothing. */
static void test_op_counts(void **state)
{
  (void)state;
  uint64_t sign0 = mcim_op_read(MCIM_OP_ES256_SIGN), ver0 = mcim_op_read(MCIM_OP_ES256_VERIFY),
           enc0 = mcim_op_read(MCIM_OP_ECDH_ES_ENCRYPT),
           dec0 = mcim_op_read(MCIM_OP_ECDH_ES_DECRYPT);
  mcim_claims_t c = claims_default();
  char *jws = NULL, *out = NULL;
  assert_int_equal(mcim_jws_sign(issuer.key, &c, &jws), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_SIGN), sign0 + 1);
  assert_int_equal(mcim_jws_sign(issuer.pub, &c, &out), MCIM_KEY_INVALID);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_SIGN), sign0 + 1);
  mcim_jws_expect_t x = expect_default();
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, NULL), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), ver0 + 1);
  assert_int_equal(mcim_jws_verify("x.y", 3, issuer.pub, &x, NULL), MCIM_JOSE_MALFORMED);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), ver0 + 1);
  static const uint8_t secret[] = "secret";
  char *jwe = NULL;
  uint8_t *pt = NULL;
  size_t ptlen = 0;
  assert_int_equal(mcim_jwe_encrypt(recipient.pub, secret, sizeof(secret), &jwe), MCIM_OK);
  assert_int_equal(mcim_jwe_decrypt(recipient.key, jwe, strlen(jwe), &pt, &ptlen), MCIM_OK);
  mcim_jose_secret_free(pt, ptlen);
  assert_int_equal(mcim_op_read(MCIM_OP_ECDH_ES_ENCRYPT), enc0 + 1);
  assert_int_equal(mcim_op_read(MCIM_OP_ECDH_ES_DECRYPT), dec0 + 1);
  char *text = mcim_metrics_render(MCIM_MF_CRYPTO), line[96];
  assert_non_null(text);
  snprintf(line, sizeof(line), "mcim_crypto_operations_total{op=\"es256_sign\"} %llu\n",
           (unsigned long long)(sign0 + 1));
  assert_non_null(strstr(text, line));
  assert_non_null(strstr(text, "mcim_crypto_operations_total{op=\"tls_client_resumed\"} 0\n"));
  free(text);
  free(jwe);
  free(jws);
}

/* A signature that verified is not verified again (the operation count stays), and only
 * for the same bytes under the same key: a changed signature or another key is verified, and
 * refused; the claims are checked at every use (a later time: expired). */
static void test_signature_verdicts(void **state)
{
  (void)state;
  mcim_claims_t c = claims_default();
  char *jws = NULL;
  assert_int_equal(mcim_jws_sign(issuer.key, &c, &jws), MCIM_OK);
  mcim_jws_verdicts_clear();
  mcim_jws_expect_t x = expect_default();
  uint64_t ver0 = mcim_op_read(MCIM_OP_ES256_VERIFY);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, NULL), MCIM_OK);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, NULL), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), ver0 + 1);
  x.now = NOW + 3600;
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, NULL), MCIM_TOKEN_EXPIRED);
  x = expect_default();
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), other.pub, &x, NULL),
                   MCIM_JWS_BAD_SIGNATURE);
  char *last = jws + strlen(jws) - 2; /* a signature byte changed, still base64url */
  *last = *last == 'A' ? 'B' : 'A';
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), issuer.pub, &x, NULL),
                   MCIM_JWS_BAD_SIGNATURE);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), ver0 + 3);
  free(jws);
}

static void test_sign_refuses(void **state)
{
  (void)state;
  char *out = NULL;
  mcim_claims_t c = claims_default();
  assert_int_equal(mcim_jws_sign(issuer.pub, &c, &out), MCIM_KEY_INVALID);
  const char **fields[] = {&c.iss, &c.sub, &c.aud, &c.typ, &c.txn};
  for (size_t i = 0; i < 5; i++) {
    c = claims_default();
    *fields[i] = NULL;
    assert_int_equal(mcim_jws_sign(issuer.key, &c, &out), MCIM_INVALID_ARGUMENT);
    *fields[i] = "";
    assert_int_equal(mcim_jws_sign(issuer.key, &c, &out), MCIM_INVALID_ARGUMENT);
  }
  c = claims_default();
  c.exp = c.iat;
  assert_int_equal(mcim_jws_sign(issuer.key, &c, &out), MCIM_INVALID_ARGUMENT);
  c = claims_default();
  json_t *extra = json_pack("{s:s}", "aud", "someone-else");
  c.extra = extra;
  assert_int_equal(mcim_jws_sign(issuer.key, &c, &out), MCIM_INVALID_ARGUMENT);
  json_decref(extra);
  assert_null(out);
}

static void test_claim_missing(void **state)
{
  (void)state;
  static const char *const names[] = {"iss", "sub", "aud", "iat", "exp", "jti", "txn", "typ"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    json_t *p = payload_default();
    json_object_del(p, names[i]);
    assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  }
  /* Wrong types count as missing: the claim is not there in the form required. */
  json_t *p = payload_default();
  json_object_set_new(p, "iat", json_string("1700000000"));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  p = payload_default();
  json_object_set_new(p, "exp", json_real(1700000300.5));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  p = payload_default();
  json_object_set_new(p, "aud", json_pack("[s]", "dev1"));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  p = payload_default();
  json_object_set_new(p, "iss", json_string(""));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  p = payload_default();
  json_object_set_new(p, "nbf", json_string("soon"));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISSING);
  assert_int_equal(verify_payload(payload_default()), MCIM_OK);
}

static void test_claim_mismatch(void **state)
{
  (void)state;
  char *jws = sign_default();
  mcim_jws_expect_t x = expect_default();
  x.aud = "dev2";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  x = expect_default();
  x.typ = "mcim-status+jwt";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  x = expect_default();
  x.iss = "sho-b";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  x = expect_default();
  x.sub = "dev2";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  x = expect_default();
  x.txn = "t2";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  /* A set of accepted issuers. */
  static const char *const set_ok[] = {"sho-b", "sho-a", NULL};
  static const char *const set_bad[] = {"sho-b", "ro", NULL};
  x = expect_default();
  x.iss = NULL;
  x.iss_any = set_ok;
  assert_int_equal(verify_str(jws, &x), MCIM_OK);
  x.iss_any = set_bad;
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  /* The verifier must state what it expects. */
  x = expect_default();
  x.aud = NULL;
  assert_int_equal(verify_str(jws, &x), MCIM_INVALID_ARGUMENT);
  x = expect_default();
  x.iss = NULL;
  assert_int_equal(verify_str(jws, &x), MCIM_INVALID_ARGUMENT);
  free(jws);

  /* exp not after iat. */
  json_t *p = payload_default();
  json_object_set_new(p, "exp", json_integer(NOW));
  assert_int_equal(verify_payload(p), MCIM_CLAIM_MISMATCH);
  /* Header typ must agree with the typ claim. */
  p = payload_default();
  jws = sign_raw(issuer.jwk, "ES256", p, "typ", "mcim-access+jwt");
  x = expect_default();
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = sign_raw(issuer.jwk, "ES256", p, "typ", TYP);
  assert_int_equal(verify_str(jws, &x), MCIM_OK);
  free(jws);
  json_decref(p);
}

static void test_times(void **state)
{
  (void)state;
  char *jws = sign_default();
  mcim_jws_expect_t x = expect_default();
  x.now = NOW + 300 + 29; /* within the skew after exp */
  assert_int_equal(verify_str(jws, &x), MCIM_OK);
  x.now = NOW + 300 + 30;
  assert_int_equal(verify_str(jws, &x), MCIM_TOKEN_EXPIRED);
  x.skew = 0;
  x.now = NOW + 300;
  assert_int_equal(verify_str(jws, &x), MCIM_TOKEN_EXPIRED);
  x.now = NOW - 1; /* issued one second in our future, no skew allowed */
  assert_int_equal(verify_str(jws, &x), MCIM_TOKEN_NOT_YET_VALID);
  x.skew = 30;
  x.now = NOW - 30;
  assert_int_equal(verify_str(jws, &x), MCIM_OK);
  x.now = NOW - 31;
  assert_int_equal(verify_str(jws, &x), MCIM_TOKEN_NOT_YET_VALID);
  x.skew = -1;
  assert_int_equal(verify_str(jws, &x), MCIM_INVALID_ARGUMENT);
  free(jws);
  json_t *p = payload_default();
  json_object_set_new(p, "nbf", json_integer(NOW + 100));
  assert_int_equal(verify_payload(p), MCIM_TOKEN_NOT_YET_VALID);
  /* The wall clock is used when now is 0: a 2023 statement is long expired. */
  jws = sign_default();
  x = expect_default();
  x.now = 0;
  assert_int_equal(verify_str(jws, &x), MCIM_TOKEN_EXPIRED);
  free(jws);
}

static void test_replay(void **state)
{
  (void)state;
  mcim_replay_mem_t *mem = mcim_replay_mem_new(16);
  assert_non_null(mem);
  mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
  char *jws = sign_default();
  mcim_jws_expect_t x = expect_default();
  x.replay = &cache;
  /* A refused statement does not consume its jti. */
  x.aud = "ro";
  assert_int_equal(verify_str(jws, &x), MCIM_CLAIM_MISMATCH);
  assert_int_equal(mcim_replay_mem_count(mem, NOW), 0);
  x.aud = "dev1";
  assert_int_equal(verify_str(jws, &x), MCIM_OK);
  assert_int_equal(verify_str(jws, &x), MCIM_REPLAY);
  assert_int_equal(mcim_replay_mem_count(mem, NOW), 1);
  /* The same jti from another issuer is another statement. */
  json_t *p = payload_default();
  json_object_set_new(p, "iss", json_string("sho-b"));
  char *jws_b = sign_raw(issuer.jwk, "ES256", p, NULL, NULL);
  json_decref(p);
  x.iss = "sho-b";
  assert_int_equal(verify_str(jws_b, &x), MCIM_OK);
  assert_int_equal(verify_str(jws_b, &x), MCIM_REPLAY);
  free(jws_b);
  free(jws);
  mcim_replay_mem_free(mem);

  /* Bounded: full of live entries it fails closed; expired entries are reused. */
  mem = mcim_replay_mem_new(2);
  cache = mcim_replay_mem_cache(mem);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "a", NOW + 10, NOW), MCIM_OK);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "b", NOW + 20, NOW), MCIM_OK);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "c", NOW + 20, NOW),
                   MCIM_REPLAY_CACHE_FULL);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "a", NOW + 10, NOW + 5), MCIM_REPLAY);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "c", NOW + 30, NOW + 10), MCIM_OK);
  assert_int_equal(cache.check_and_insert(cache.ctx, "i", "b", NOW + 20, NOW + 10), MCIM_REPLAY);
  assert_int_equal(mcim_replay_mem_count(mem, NOW + 10), 2);
  assert_int_equal(mcim_replay_mem_count(mem, NOW + 30), 0);
  mcim_replay_mem_free(mem);
  assert_null(mcim_replay_mem_new(0));
}

/* Algorithm confusion: "none", HS256 keyed with the public key, other signature algorithms. */
static void test_bad_alg(void **state)
{
  (void)state;
  json_t *p = payload_default();
  char *payload = json_dumps(p, JSON_COMPACT);
  mcim_jws_expect_t x = expect_default();
  static const char *const headers[] = {
      "{\"alg\":\"none\"}", "{\"alg\":\"HS256\"}", "{\"alg\":\"ES384\"}",
      "{\"alg\":\"RS256\"}", "{\"alg\":\"es256\"}", "{\"alg\":\"EdDSA\"}",
  };
  for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
    char *jws = compact3(headers[i], payload, "");
    assert_int_equal(verify_str(jws, &x), MCIM_JWS_BAD_ALG);
    free(jws);
  }
  /* A real HS256 token whose secret is the issuer's public JWK (the classic confusion). */
  char *pub_json = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(issuer.pub, &pub_json), MCIM_OK);
  cjose_err err;
  cjose_jwk_t *oct = cjose_jwk_create_oct_spec((const uint8_t *)pub_json, strlen(pub_json), &err);
  assert_non_null(oct);
  char *hs = sign_raw(oct, "HS256", p, NULL, NULL);
  assert_int_equal(verify_str(hs, &x), MCIM_JWS_BAD_ALG);
  free(hs);
  cjose_jwk_release(oct);
  free(pub_json);
  /* No alg, a non-string alg, an unknown critical extension: not a usable object. */
  static const char *const broken[] = {"{}", "{\"alg\":256}", "{\"alg\":null}",
                                       "{\"alg\":\"ES256\",\"crit\":[\"exp\"],\"exp\":1}",
                                       "{\"alg\":\"ES256\",\"alg\":\"none\"}", "[\"ES256\"]",
                                       "{\"alg\":\"ES256\""};
  for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
    char *jws = compact3(broken[i], payload, "AAAA");
    assert_int_equal(verify_str(jws, &x), MCIM_JOSE_MALFORMED);
    free(jws);
  }
  /* A right alg with a signature of the wrong size. */
  char *jws = compact3("{\"alg\":\"ES256\"}", payload, "AAAA");
  assert_int_equal(verify_str(jws, &x), MCIM_JWS_BAD_SIGNATURE);
  free(jws);
  free(payload);
  json_decref(p);
}

static void test_malformed(void **state)
{
  (void)state;
  mcim_jws_expect_t x = expect_default();
  static const char *const junk[] = {"", ".", "..", "a.b", "a.b.c.d", "eyJ.eyJ.", "a b.c.d",
                                     "e30.e30.e30", "====.====.===="};
  for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
    assert_int_equal(verify_str(junk[i], &x), MCIM_JOSE_MALFORMED);
  assert_int_equal(mcim_jws_verify(NULL, 0, issuer.pub, &x, NULL), MCIM_JOSE_MALFORMED);
  assert_int_equal(mcim_jws_verify("a.b.c", 5, NULL, &x, NULL), MCIM_INVALID_ARGUMENT);
  char *big = malloc(MCIM_JOSE_MAX_LEN + 2);
  memset(big, 'A', MCIM_JOSE_MAX_LEN + 1);
  big[10] = big[20] = '.';
  assert_int_equal(mcim_jws_verify(big, MCIM_JOSE_MAX_LEN + 1, issuer.pub, &x, NULL),
                   MCIM_TOO_LARGE);
  free(big);

  /* Signed, but the payload is not one JSON object without duplicate names. */
  cjose_err err;
  static const char *const bodies[] = {"[1,2]", "\"iss\"", "{\"iss\":\"sho-a\",\"iss\":\"ro\"}",
                                       "{", "null"};
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    cjose_header_t *h = cjose_header_new(&err);
    cjose_header_set(h, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, &err);
    cjose_jws_t *j = cjose_jws_sign(issuer.jwk, h, (const uint8_t *)bodies[i], strlen(bodies[i]),
                                    &err);
    const char *ser = NULL;
    assert_true(cjose_jws_export(j, &ser, &err));
    assert_int_equal(verify_str(ser, &x), MCIM_JOSE_MALFORMED);
    cjose_jws_release(j);
    cjose_header_release(h);
  }

  /* Random strings over the compact alphabet: never OK, never a crash. */
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
  char buf[200];
  for (int round = 0; round < 2000; round++) {
    uint8_t r[200];
    assert_int_equal(mcim_random(r, sizeof(r)), MCIM_OK);
    size_t len = 1 + r[0] % (sizeof(buf) - 1);
    for (size_t i = 0; i < len; i++)
      buf[i] = alphabet[r[i] % (sizeof(alphabet) - 1)];
    assert_int_not_equal(mcim_jws_verify(buf, len, issuer.pub, &x, NULL), MCIM_OK);
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    assert_int_not_equal(mcim_jwe_decrypt(recipient.key, buf, len, &pt, &ptlen), MCIM_OK);
  }
}

/* ---- keys --------------------------------------------------------------------------- */

static void test_keys(void **state)
{
  (void)state;
  mcim_jose_key_t *k = NULL;
  /* Point not on the curve (y of the RFC 7515 key with its last byte changed). */
  static const char off_curve[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                                  "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                                  "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5aA\"}";
  assert_int_equal(mcim_jose_key_from_jwk(off_curve, strlen(off_curve), &k), MCIM_KEY_INVALID);
  static const char p384[] = "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AAAA\",\"y\":\"AAAA\"}";
  assert_int_equal(mcim_jose_key_from_jwk(p384, strlen(p384), &k), MCIM_KEY_INVALID);
  static const char oct[] = "{\"kty\":\"oct\",\"k\":\"AAAA\"}";
  assert_int_equal(mcim_jose_key_from_jwk(oct, strlen(oct), &k), MCIM_KEY_INVALID);
  assert_int_equal(mcim_jose_key_from_jwk("{", 1, &k), MCIM_KEY_INVALID);

  /* From OpenSSL keys: P-256 private and public; other curves and RSA refused. */
  EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *p384k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  assert_int_equal(mcim_jose_key_from_pkey(p384k, &k), MCIM_KEY_INVALID);
  assert_int_equal(mcim_jose_key_from_pkey(rsa, &k), MCIM_KEY_INVALID);
  assert_int_equal(mcim_jose_key_from_pkey(p256, &k), MCIM_OK);
  assert_true(mcim_jose_key_has_private(k));
  mcim_claims_t c = claims_default();
  char *jws = NULL;
  assert_int_equal(mcim_jws_sign(k, &c, &jws), MCIM_OK);
  /* The JOSE key holds its own reference to the OpenSSL key it was made from (kept, not
   * built again): the caller's may go first (the sanitizers see a use after free). */
  EVP_PKEY *gone = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  mcim_jose_key_t *kg = NULL;
  char *jg = NULL;
  assert_int_equal(mcim_jose_key_from_pkey(gone, &kg), MCIM_OK);
  EVP_PKEY_free(gone);
  assert_int_equal(mcim_jws_sign(kg, &c, &jg), MCIM_OK);
  mcim_jws_expect_t xg = expect_default();
  assert_int_equal(mcim_jws_verify(jg, strlen(jg), kg, &xg, NULL), MCIM_OK);
  free(jg);
  mcim_jose_key_free(kg);

  /* Its public half, through DER, verifies what it signed. */
  unsigned char *der = NULL;
  int derlen = i2d_PUBKEY(p256, &der);
  const unsigned char *pp = der;
  EVP_PKEY *pub = d2i_PUBKEY(NULL, &pp, derlen);
  mcim_jose_key_t *kp = NULL;
  assert_int_equal(mcim_jose_key_from_pkey(pub, &kp), MCIM_OK);
  assert_false(mcim_jose_key_has_private(kp));
  mcim_jws_expect_t x = expect_default();
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), kp, &x, NULL), MCIM_OK);
  /* A shared reference (mcim_jose_key_dup) is the same key and outlives the first one; each
   * is freed (the sanitizers see a double free or a leak). */
  mcim_jose_key_t *kd = NULL;
  assert_int_equal(mcim_jose_key_dup(kp, &kd), MCIM_OK);
  assert_ptr_equal(kd, kp);
  assert_int_equal(mcim_jose_key_set_kid(kd, "renamed"), MCIM_INVALID_ARGUMENT); /* shared */
  assert_int_equal(mcim_jose_key_dup(NULL, &kd), MCIM_INVALID_ARGUMENT);
  mcim_jose_key_free(kp);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), kd, &x, NULL), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pub, &kp), MCIM_OK);
  mcim_jose_key_free(kd);
  /* And back: the public OpenSSL key of a private mcim key has no private part. */
  EVP_PKEY *back = NULL;
  assert_int_equal(mcim_jose_key_public_pkey(k, &back), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(back, pub), 1);
  BIGNUM *bn_d = NULL;
  assert_int_equal(EVP_PKEY_get_bn_param(back, OSSL_PKEY_PARAM_PRIV_KEY, &bn_d), 0);
  EVP_PKEY_free(back);
  char jti[MCIM_JTI_LEN + 1];
  assert_int_equal(mcim_jose_new_jti(jti), MCIM_OK);
  assert_int_equal(strlen(jti), MCIM_JTI_LEN);
  OPENSSL_free(der);
  EVP_PKEY_free(pub);
  EVP_PKEY_free(p256);
  EVP_PKEY_free(p384k);
  EVP_PKEY_free(rsa);
  mcim_jose_key_free(k);
  mcim_jose_key_free(kp);
  free(jws);
}

/* ---- JWE ---------------------------------------------------------------------------- */

static void test_jwe(void **state)
{
  (void)state;
  static const uint8_t secret[] = "K=000102030405060708090a0b0c0d0e0f OPc=...";
  char *jwe = NULL;
  assert_int_equal(mcim_jwe_encrypt(recipient.pub, secret, sizeof(secret), &jwe), MCIM_OK);
  uint8_t *pt = NULL;
  size_t ptlen = 0;
  size_t len = strlen(jwe);
  assert_int_equal(mcim_jwe_decrypt(recipient.key, jwe, len, &pt, &ptlen), MCIM_OK);
  assert_int_equal(ptlen, sizeof(secret));
  assert_memory_equal(pt, secret, ptlen);
  mcim_jose_secret_free(pt, ptlen);
  assert_int_equal(mcim_jwe_decrypt(other.key, jwe, len, &pt, &ptlen), MCIM_JWE_DECRYPT_FAILED);
  assert_int_equal(mcim_jwe_decrypt(recipient.pub, jwe, len, &pt, &ptlen), MCIM_KEY_INVALID);
  assert_int_equal(mcim_jwe_encrypt(recipient.pub, secret, 0, &jwe), MCIM_INVALID_ARGUMENT);

  /* apu/apv set by a sender: cjose and our derivation must agree on the party info. */
  cjose_err err;
  cjose_header_t *h = cjose_header_new(&err);
  assert_true(cjose_header_set(h, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ECDH_ES, &err));
  assert_true(cjose_header_set(h, CJOSE_HDR_ENC, CJOSE_HDR_ENC_A256GCM, &err));
  assert_true(cjose_header_set(h, CJOSE_HDR_APU, "c2hvLWE", &err));
  assert_true(cjose_header_set(h, CJOSE_HDR_APV, "ZGV2MQ", &err));
  cjose_jwe_t *cj = cjose_jwe_encrypt(recipient.jwk, h, secret, sizeof(secret), &err);
  assert_non_null(cj);
  char *with_party = cjose_jwe_export(cj, &err);
  assert_int_equal(mcim_jwe_decrypt(recipient.key, with_party, strlen(with_party), &pt, &ptlen),
                   MCIM_OK);
  assert_memory_equal(pt, secret, sizeof(secret));
  mcim_jose_secret_free(pt, ptlen);
  free(with_party);
  cjose_jwe_release(cj);
  cjose_header_release(h);

  /* Every character flipped, every truncation: refused, no crash. */
  for (size_t i = 0; i < len; i++) {
    for (int mask = 1; mask <= 0x20; mask <<= 5) {
      jwe[i] ^= (char)mask;
      pt = NULL;
      assert_int_not_equal(mcim_jwe_decrypt(recipient.key, jwe, len, &pt, &ptlen), MCIM_OK);
      assert_null(pt);
      jwe[i] ^= (char)mask;
    }
    assert_int_not_equal(mcim_jwe_decrypt(recipient.key, jwe, i, &pt, &ptlen), MCIM_OK);
  }

  /* Hand-made headers around the genuine rest of the object. */
  const char *rest = strchr(jwe, '.');
  struct {
    const char *hdr;
    mcim_cause_t want;
  } cases[] = {
      {"{\"alg\":\"dir\",\"enc\":\"A256GCM\"}", MCIM_JWS_BAD_ALG},
      {"{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\"}", MCIM_JWS_BAD_ALG},
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A128CBC-HS256\"}", MCIM_JWS_BAD_ALG},
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"zip\":\"DEF\"}", MCIM_JWS_BAD_ALG},
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\"}", MCIM_JOSE_MALFORMED}, /* no epk */
      /* epk off the curve: an invalid-curve attack is stopped before any ECDH */
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
       "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
       "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5aA\"}}",
       MCIM_JOSE_MALFORMED},
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
       "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
       "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}",
       MCIM_JOSE_MALFORMED},
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"crit\":[\"x\"]}", MCIM_JOSE_MALFORMED},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char buf[2048];
    size_t o = mcim_b64url_encode((const uint8_t *)cases[i].hdr, strlen(cases[i].hdr), buf);
    snprintf(buf + o, sizeof(buf) - o, "%s", rest);
    assert_int_equal(mcim_jwe_decrypt(recipient.key, buf, strlen(buf), &pt, &ptlen),
                     cases[i].want);
  }

  /* A shortened tag (GCM would check only what it is given) and an encrypted key. */
  char *last = strrchr(jwe, '.');
  char trunc[2048];
  snprintf(trunc, sizeof(trunc), "%.*s", (int)(last - jwe + 1 + 11), jwe); /* 8-byte tag */
  assert_int_equal(mcim_jwe_decrypt(recipient.key, trunc, strlen(trunc), &pt, &ptlen),
                   MCIM_JOSE_MALFORMED);
  size_t hlen = (size_t)(rest - jwe);
  snprintf(trunc, sizeof(trunc), "%.*s.AAAA%s", (int)hlen, jwe, rest + 1);
  assert_int_equal(mcim_jwe_decrypt(recipient.key, trunc, strlen(trunc), &pt, &ptlen),
                   MCIM_JOSE_MALFORMED);
  free(jwe);
}

/* ---- sealed packages ---------------------------------------------------------------- */

static const uint8_t mcim_content[] = "{\"imsi\":\"001020000000001\",\"k\":\"...\",\"opc\":\"...\"}";

static char *seal_default(void)
{
  mcim_claims_t c = claims_default();
  char *pkg = NULL;
  assert_int_equal(mcim_package_seal(issuer.key, &c, recipient.pub, mcim_content,
                                     sizeof(mcim_content), &pkg),
                   MCIM_OK);
  return pkg;
}

static void test_package(void **state)
{
  (void)state;
  char *pkg = seal_default();
  size_t len = strlen(pkg);
  mcim_jws_expect_t x = expect_default();

  /* The relay checks origin with the issuer's public key and cannot read the content. */
  mcim_statement_t *st = NULL;
  assert_int_equal(mcim_package_verify(pkg, len, issuer.pub, &x, &st), MCIM_OK);
  const char *jwe = mcim_statement_string(st, MCIM_PACKAGE_CLAIM);
  assert_non_null(jwe);
  assert_null(strstr(jwe, "001020000000001"));
  mcim_statement_free(st);
  assert_int_equal(mcim_package_verify(pkg, len, other.pub, &x, NULL), MCIM_JWS_BAD_SIGNATURE);

  /* The recipient opens it. */
  uint8_t *content = NULL;
  size_t clen = 0;
  st = NULL;
  assert_int_equal(
      mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, &st, &content, &clen), MCIM_OK);
  assert_int_equal(clen, sizeof(mcim_content));
  assert_memory_equal(content, mcim_content, clen);
  assert_string_equal(st->claims.sub, "dev1");
  mcim_jose_secret_free(content, clen);
  mcim_statement_free(st);

  /* Another TRE's key does not open it; a public key cannot. */
  content = NULL;
  assert_int_equal(mcim_package_open(pkg, len, issuer.pub, &x, other.key, NULL, &content, &clen),
                   MCIM_JWE_DECRYPT_FAILED);
  assert_null(content);
  assert_int_equal(
      mcim_package_open(pkg, len, issuer.pub, &x, recipient.pub, NULL, &content, &clen),
      MCIM_KEY_INVALID);

  /* Replay: a failed open consumes nothing, a successful one does. */
  mcim_replay_mem_t *mem = mcim_replay_mem_new(8);
  mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
  x.replay = &cache;
  assert_int_equal(mcim_package_open(pkg, len, issuer.pub, &x, other.key, NULL, &content, &clen),
                   MCIM_JWE_DECRYPT_FAILED);
  assert_int_equal(
      mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, NULL, &content, &clen), MCIM_OK);
  mcim_jose_secret_free(content, clen);
  content = NULL;
  assert_int_equal(
      mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, NULL, &content, &clen),
      MCIM_REPLAY);
  assert_null(content);
  mcim_replay_mem_free(mem);
  x.replay = NULL;

  /* A plain statement without the "jwe" claim is not a package. */
  char *plain = sign_default();
  assert_int_equal(mcim_package_verify(plain, strlen(plain), issuer.pub, &x, NULL),
                   MCIM_CLAIM_MISSING);
  free(plain);
  /* Seal refuses extra claims that would hide the JWE. */
  mcim_claims_t c = claims_default();
  json_t *extra = json_pack("{s:s}", MCIM_PACKAGE_CLAIM, "x");
  c.extra = extra;
  char *bad = NULL;
  assert_int_equal(mcim_package_seal(issuer.key, &c, recipient.pub, mcim_content,
                                     sizeof(mcim_content), &bad),
                   MCIM_INVALID_ARGUMENT);
  json_decref(extra);
  free(pkg);
}

/* Every byte of the whole compact package flipped (three ways), one at a time, and every
 * truncation: refused, and nothing leaks or crashes (run under ASan). */
static void test_package_tamper(void **state)
{
  (void)state;
  char *pkg = seal_default();
  size_t len = strlen(pkg);
  mcim_jws_expect_t x = expect_default();
  static const int masks[] = {0x01, 0x02, 0x20};
  for (size_t i = 0; i < len; i++) {
    for (size_t m = 0; m < sizeof(masks) / sizeof(masks[0]); m++) {
      pkg[i] ^= (char)masks[m];
      uint8_t *content = NULL;
      size_t clen = 0;
      mcim_statement_t *st = NULL;
      mcim_cause_t rc =
          mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, &st, &content, &clen);
      if (rc == MCIM_OK)
        fail_msg("byte %zu ^ 0x%02x accepted", i, masks[m]);
      assert_null(content);
      assert_null(st);
      pkg[i] ^= (char)masks[m];
    }
  }
  for (size_t i = 0; i < len; i++) {
    uint8_t *content = NULL;
    size_t clen = 0;
    assert_int_not_equal(
        mcim_package_open(pkg, i, issuer.pub, &x, recipient.key, NULL, &content, &clen), MCIM_OK);
  }
  /* Untouched, it still opens. */
  uint8_t *content = NULL;
  size_t clen = 0;
  assert_int_equal(
      mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, NULL, &content, &clen), MCIM_OK);
  mcim_jose_secret_free(content, clen);
  free(pkg);

  /* An issuer that signs an altered JWE (one ciphertext byte): origin checks out, content
   * does not open. */
  char *jwe = NULL;
  assert_int_equal(mcim_jwe_encrypt(recipient.pub, mcim_content, sizeof(mcim_content), &jwe),
                   MCIM_OK);
  char *ct = strchr(strchr(strchr(jwe, '.') + 1, '.') + 1, '.') + 1;
  ct[0] = ct[0] == 'A' ? 'B' : 'A';
  json_t *p = payload_default();
  json_object_set_new(p, MCIM_PACKAGE_CLAIM, json_string(jwe));
  char *forged = sign_raw(issuer.jwk, "ES256", p, NULL, NULL);
  assert_int_equal(mcim_package_verify(forged, strlen(forged), issuer.pub, &x, NULL), MCIM_OK);
  assert_int_equal(mcim_package_open(forged, strlen(forged), issuer.pub, &x, recipient.key, NULL,
                                     &content, &clen),
                   MCIM_JWE_DECRYPT_FAILED);
  free(forged);
  json_decref(p);
  free(jwe);
}

/* ---- keys whose private part is elsewhere (mcim_jose_key_external) ------------------ */

/* A holder of a private key outside the module, as the TPM TRE is: an OpenSSL key here, used
 * only through the two operations, with counters. */
struct holder {
  EVP_PKEY *key;
  int signs, ecdhs, freed;
  mcim_cause_t fail; /* MCIM_OK, or what every operation answers */
};

static mcim_cause_t holder_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
  struct holder *h = ctx;
  uint8_t der[80];
  size_t der_len = sizeof(der);
  const uint8_t *p = der;
  const BIGNUM *r = NULL, *s = NULL;
  h->signs++;
  if (h->fail != MCIM_OK)
    return h->fail;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(h->key, NULL);
  assert_non_null(c);
  assert_int_equal(EVP_PKEY_sign_init(c), 1);
  assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()), 1);
  assert_int_equal(EVP_PKEY_sign(c, der, &der_len, digest, 32), 1);
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
  assert_non_null(es);
  ECDSA_SIG_get0(es, &r, &s);
  assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
  assert_int_equal(BN_bn2binpad(s, sig + 32, 32), 32);
  ECDSA_SIG_free(es);
  EVP_PKEY_CTX_free(c);
  return MCIM_OK;
}

static mcim_cause_t holder_ecdh(void *ctx, const uint8_t x[32], const uint8_t y[32], uint8_t z[32])
{
  struct holder *h = ctx;
  uint8_t pt[65] = {0x04};
  size_t z_len = 32;
  h->ecdhs++;
  if (h->fail != MCIM_OK)
    return h->fail;
  memcpy(pt + 1, x, 32);
  memcpy(pt + 33, y, 32);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY *peer = NULL;
  EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  assert_int_equal(EVP_PKEY_fromdata_init(fc), 1);
  assert_int_equal(EVP_PKEY_fromdata(fc, &peer, EVP_PKEY_PUBLIC_KEY, params), 1);
  EVP_PKEY_CTX *dh = EVP_PKEY_CTX_new(h->key, NULL);
  assert_int_equal(EVP_PKEY_derive_init(dh), 1);
  assert_int_equal(EVP_PKEY_derive_set_peer(dh, peer), 1);
  assert_int_equal(EVP_PKEY_derive(dh, z, &z_len), 1);
  assert_int_equal(z_len, 32);
  EVP_PKEY_CTX_free(dh);
  EVP_PKEY_CTX_free(fc);
  EVP_PKEY_free(peer);
  return MCIM_OK;
}

static void holder_free(void *ctx)
{
  ((struct holder *)ctx)->freed++;
}

static const struct mcim_jose_key_ops holder_ops = {
    .sign = holder_sign, .ecdh = holder_ecdh, .free = holder_free};

/* An external key signs statements the ordinary verifier accepts and opens what the ordinary
 * encryptor (cjose) sealed for its public key, through the same entry points; the private
 * key is never handed to the module. */
static void test_external_key(void **state)
{
  (void)state;
  struct holder h = {.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")};
  mcim_jose_key_t *ext = NULL, *pub = NULL, *soft = NULL;
  assert_non_null(h.key);
  assert_int_equal(mcim_jose_key_external(h.key, &holder_ops, &h, &ext), MCIM_OK);
  assert_true(mcim_jose_key_has_private(ext));
  assert_int_equal(mcim_jose_key_from_pkey(h.key, &soft), MCIM_OK);
  /* the public JWK is the key's, and has no "d" */
  char *jwk_ext = NULL, *jwk_soft = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(ext, &jwk_ext), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(soft, &jwk_soft), MCIM_OK);
  assert_string_equal(jwk_ext, jwk_soft);
  assert_null(strstr(jwk_ext, "\"d\""));
  assert_int_equal(mcim_jose_key_from_jwk(jwk_ext, strlen(jwk_ext), &pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_set_kid(ext, "dev1"), MCIM_OK);

  /* ES256: the existing verifier (cjose) accepts it, with the kid and typ in the header */
  mcim_claims_t c = claims_default();
  c.iss = "dev1";
  c.typ = "mcim-status+jwt";
  c.iat = 0;
  c.exp = mcim_now() + 300;
  char *jws = NULL;
  assert_int_equal(mcim_jws_sign(ext, &c, &jws), MCIM_OK);
  assert_int_equal(h.signs, 1);
  mcim_jws_expect_t x = {.iss = "dev1", .aud = "dev1", .typ = "mcim-status+jwt", .skew = 30};
  mcim_statement_t *st = NULL;
  mcim_jws_verdicts_clear();
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), pub, &x, &st), MCIM_OK);
  assert_string_equal(st->kid, "dev1");
  assert_string_equal(st->claims.txn, c.txn);
  mcim_statement_free(st);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), other.pub, &x, NULL), MCIM_JWS_BAD_SIGNATURE);
  /* one flipped bit of the signature */
  jws[strlen(jws) - 5] = jws[strlen(jws) - 5] == 'A' ? 'B' : 'A';
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), pub, &x, NULL), MCIM_JWS_BAD_SIGNATURE);
  free(jws);

  /* ECDH-ES: a JWE sealed by cjose for the public key opens through the holder's ECDH */
  char *jwe = NULL;
  uint8_t *pt = NULL;
  size_t pt_len = 0;
  assert_int_equal(mcim_jwe_encrypt(pub, mcim_content, sizeof(mcim_content), &jwe), MCIM_OK);
  assert_int_equal(mcim_jwe_decrypt(ext, jwe, strlen(jwe), &pt, &pt_len), MCIM_OK);
  assert_int_equal(h.ecdhs, 1);
  assert_int_equal(pt_len, sizeof(mcim_content));
  assert_memory_equal(pt, mcim_content, pt_len);
  mcim_jose_secret_free(pt, pt_len);
  /* a package: issuer's JWS around a JWE for the external key */
  mcim_claims_t pc = claims_default();
  pc.iat = 0;
  pc.exp = mcim_now() + 300;
  char *pkg = NULL;
  assert_int_equal(mcim_package_seal(issuer.key, &pc, pub, mcim_content, sizeof(mcim_content),
                                     &pkg),
                   MCIM_OK);
  mcim_jws_expect_t px = {.iss = "sho-a", .aud = "dev1", .typ = TYP, .skew = 30};
  pt = NULL;
  assert_int_equal(mcim_package_open(pkg, strlen(pkg), issuer.pub, &px, ext, NULL, &pt, &pt_len),
                   MCIM_OK);
  assert_memory_equal(pt, mcim_content, sizeof(mcim_content));
  mcim_jose_secret_free(pt, pt_len);
  assert_int_equal(h.ecdhs, 2);

  /* the holder's failure is the cause, not a decryption failure nor a bad signature */
  h.fail = MCIM_TPM_UNREACHABLE;
  pt = NULL;
  assert_int_equal(mcim_jwe_decrypt(ext, jwe, strlen(jwe), &pt, &pt_len), MCIM_TPM_UNREACHABLE);
  assert_null(pt);
  jws = NULL;
  assert_int_equal(mcim_jws_sign(ext, &c, &jws), MCIM_TPM_UNREACHABLE);
  assert_null(jws);
  h.fail = MCIM_OK;
  free(pkg);
  free(jwe);

  /* the Concat KDF of RFC 7518 Appendix C with Z from the holder: Bob's key held outside */
  size_t blen, alen;
  char *bob = read_data("rfc7518-c-bob.jwk", &blen);
  char *alice = read_data("rfc7518-c-alice.jwk", &alen);
  mcim_jose_key_t *a = NULL, *b = NULL, *b_ext = NULL;
  EVP_PKEY *bob_pkey = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(alice, alen, &a), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(bob, blen, &b), MCIM_OK);
  struct holder hb = {0};
  /* Bob's private key as an OpenSSL key, for the holder */
  json_t *bj = json_loadb(bob, blen, 0, NULL);
  uint8_t d[32];
  size_t dn = 0;
  const char *d64 = json_string_value(json_object_get(bj, "d"));
  assert_int_equal(mcim_b64url_decode(d64, strlen(d64), d, sizeof(d), &dn), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(b, &bob_pkey), MCIM_OK);
  BIGNUM *dbn = BN_bin2bn(d, 32, NULL);
  uint8_t bpt[65];
  size_t bpt_len = 0;
  assert_int_equal(EVP_PKEY_get_octet_string_param(bob_pkey, OSSL_PKEY_PARAM_PUB_KEY, bpt,
                                                   sizeof(bpt), &bpt_len),
                   1);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  assert_true(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0));
  assert_true(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, bpt, bpt_len));
  assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, dbn));
  OSSL_PARAM *bp = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  assert_int_equal(EVP_PKEY_fromdata_init(fc), 1);
  assert_int_equal(EVP_PKEY_fromdata(fc, &hb.key, EVP_PKEY_KEYPAIR, bp), 1);
  assert_int_equal(mcim_jose_key_external(bob_pkey, &holder_ops, &hb, &b_ext), MCIM_OK);
  uint8_t derived[16], want[16];
  assert_int_equal(mcim_jose_ecdh_es_derive(b, a, "A128GCM", (const uint8_t *)"Alice", 5,
                                            (const uint8_t *)"Bob", 3, want, sizeof(want)),
                   MCIM_OK);
  assert_int_equal(mcim_jose_ecdh_es_derive(b_ext, a, "A128GCM", (const uint8_t *)"Alice", 5,
                                            (const uint8_t *)"Bob", 3, derived, sizeof(derived)),
                   MCIM_OK);
  assert_memory_equal(derived, want, sizeof(want));
  char derived_b64[32];
  mcim_b64url_encode(derived, sizeof(derived), derived_b64);
  assert_string_equal(derived_b64, "VqqN6vgjbSBcIijNcacQGg");
  assert_int_equal(hb.ecdhs, 1);
  mcim_jose_key_free(b_ext);
  assert_int_equal(hb.freed, 1);
  EVP_PKEY_CTX_free(fc);
  OSSL_PARAM_free(bp);
  OSSL_PARAM_BLD_free(bld);
  BN_clear_free(dbn);
  mcim_wipe(d, sizeof(d));
  json_decref(bj);
  EVP_PKEY_free(bob_pkey);
  EVP_PKEY_free(hb.key);
  mcim_jose_key_free(a);
  mcim_jose_key_free(b);
  free(alice);
  free(bob);

  /* an operation the holder does not offer; a key that is not P-256 */
  static const struct mcim_jose_key_ops sign_only = {.sign = holder_sign};
  struct holder hs = {.key = h.key};
  mcim_jose_key_t *so = NULL;
  assert_int_equal(mcim_jose_key_external(h.key, &sign_only, &hs, &so), MCIM_OK);
  assert_int_equal(mcim_jwe_encrypt(pub, mcim_content, sizeof(mcim_content), &jwe), MCIM_OK);
  assert_int_equal(mcim_jwe_decrypt(so, jwe, strlen(jwe), &pt, &pt_len), MCIM_KEY_INVALID);
  free(jwe);
  mcim_jose_key_free(so);
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  struct holder hr = {0};
  assert_non_null(rsa);
  assert_int_equal(mcim_jose_key_external(rsa, &holder_ops, &hr, &so), MCIM_KEY_INVALID);
  assert_null(so);
  assert_int_equal(hr.freed, 1); /* the context is released on failure too */
  EVP_PKEY_free(rsa);

  free(jwk_ext);
  free(jwk_soft);
  mcim_jose_key_free(pub);
  mcim_jose_key_free(soft);
  mcim_jose_key_free(ext);
  assert_int_equal(h.freed, 1);
  EVP_PKEY_free(h.key);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc7515_a3),     cmocka_unit_test(test_rfc7518_c),
      cmocka_unit_test(test_rfc7516_a1),     cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_signature_verdicts),
      cmocka_unit_test(test_sign_refuses),   cmocka_unit_test(test_claim_missing),
      cmocka_unit_test(test_claim_mismatch), cmocka_unit_test(test_times),
      cmocka_unit_test(test_replay),         cmocka_unit_test(test_bad_alg),
      cmocka_unit_test(test_malformed),      cmocka_unit_test(test_keys),
      cmocka_unit_test(test_jwe),            cmocka_unit_test(test_package),
      cmocka_unit_test(test_package_tamper), cmocka_unit_test(test_op_counts),
      cmocka_unit_test(test_external_key),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
