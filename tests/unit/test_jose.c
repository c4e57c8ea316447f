/* JOSE statements, JWS ES256 (src/crypto/jose.c): RFC 7515 A.3, statement claims, signature
 * verdicts, times, the replay cache, algorithm confusion, malformed input, the operation counts.
 * JWE and sealed packages: test_jose_jwe.c; keys: test_jose_key.c; fixture: jose_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jose_fixture.h"

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

/* exp is the signer's (any positive int64): a statement that expires at the end of int64 time
 * is a replay the second time. exp + skew once overflowed there (UBSan aborted; a release build
 * wrapped it into the past, so the cache forgot the jti at once and the statement replayed). */
static void test_replay_exp_max(void **state)
{
  (void)state;
  static const int64_t exps[] = {INT64_MAX, INT64_MAX - 10};
  for (size_t i = 0; i < sizeof(exps) / sizeof(exps[0]); i++) {
    mcim_replay_mem_t *mem = mcim_replay_mem_new(4);
    assert_non_null(mem);
    mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
    mcim_claims_t c = claims_default();
    c.exp = exps[i];
    char *jws = NULL;
    assert_int_equal(mcim_jws_sign(issuer.key, &c, &jws), MCIM_OK);
    mcim_jws_expect_t x = expect_default(); /* skew 30 */
    x.replay = &cache;
    assert_int_equal(verify_str(jws, &x), MCIM_OK);
    assert_int_equal(verify_str(jws, &x), MCIM_REPLAY);
    assert_int_equal(mcim_replay_mem_count(mem, INT64_MAX - 1), 1); /* kept to the end */
    free(jws);
    mcim_replay_mem_free(mem);
  }
}

/* Until when a jti is kept: exp + skew, saturated at INT64_MAX; a skew <= 0 adds nothing. */
static void test_replay_expires(void **state)
{
  (void)state;
  assert_int_equal(mcim_replay_expires(NOW + 300, 30), NOW + 330);
  assert_int_equal(mcim_replay_expires(NOW + 300, 0), NOW + 300);
  assert_int_equal(mcim_replay_expires(NOW + 300, -30), NOW + 300);
  assert_int_equal(mcim_replay_expires(NOW + 300, INT64_MIN), NOW + 300);
  assert_int_equal(mcim_replay_expires(INT64_MAX - 31, 30), INT64_MAX - 1);
  assert_int_equal(mcim_replay_expires(INT64_MAX - 30, 30), INT64_MAX);
  assert_int_equal(mcim_replay_expires(INT64_MAX - 10, 30), INT64_MAX);
  assert_int_equal(mcim_replay_expires(INT64_MAX, 30), INT64_MAX);
  assert_int_equal(mcim_replay_expires(INT64_MAX, 0), INT64_MAX);
  assert_int_equal(mcim_replay_expires(1, INT64_MAX), INT64_MAX);
  assert_int_equal(mcim_replay_expires(-10, 30), 20);
}

/* A verifier's longest lifetime: exp at most max_lifetime and the skew after now; beyond it
 * LIFETIME_TOO_LONG (the issuer would choose how long its jti is kept), before the replay
 * cache sees it. 0: no limit. A negative limit is the caller's mistake. */
static void test_max_lifetime(void **state)
{
  (void)state;
  static const struct {
    int64_t exp, max;
    mcim_cause_t want;
  } cases[] = {
      {NOW + 86400, 86400, MCIM_OK},
      {NOW + 86400 + 30, 86400, MCIM_OK}, /* the skew */
      {NOW + 86400 + 31, 86400, MCIM_LIFETIME_TOO_LONG},
      {INT64_MAX, 86400, MCIM_LIFETIME_TOO_LONG},
      {INT64_MAX, 0, MCIM_OK},
      {NOW + 300, -1, MCIM_INVALID_ARGUMENT},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    mcim_replay_mem_t *mem = mcim_replay_mem_new(4);
    assert_non_null(mem);
    mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
    mcim_claims_t c = claims_default();
    c.exp = cases[i].exp;
    char *jws = NULL;
    assert_int_equal(mcim_jws_sign(issuer.key, &c, &jws), MCIM_OK);
    mcim_jws_expect_t x = expect_default(); /* skew 30 */
    x.replay = &cache;
    x.max_lifetime = cases[i].max;
    assert_int_equal(verify_str(jws, &x), cases[i].want);
    assert_int_equal(mcim_replay_mem_count(mem, NOW), cases[i].want == MCIM_OK ? 1 : 0);
    free(jws);
    mcim_replay_mem_free(mem);
  }
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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc7515_a3),
      cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_signature_verdicts),
      cmocka_unit_test(test_sign_refuses),
      cmocka_unit_test(test_claim_missing),
      cmocka_unit_test(test_claim_mismatch),
      cmocka_unit_test(test_times),
      cmocka_unit_test(test_replay),
      cmocka_unit_test(test_replay_exp_max),
      cmocka_unit_test(test_replay_expires),
      cmocka_unit_test(test_max_lifetime),
      cmocka_unit_test(test_bad_alg),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_op_counts),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
