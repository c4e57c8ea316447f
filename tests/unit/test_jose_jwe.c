/* JOSE JWE ECDH-ES/A256GCM and sealed packages (src/crypto/jose_jwe.c): RFC 7518 C (our
 * derivation) and RFC 7516 A.1 (cjose's A256GCM layer), cjose-sealed JWEs opened by ours,
 * packages sealed, verified, opened and tampered with. Fixture: jose_fixture.h. */
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
      jwe[i] = (char)(jwe[i] ^ mask);
      pt = NULL;
      assert_int_not_equal(mcim_jwe_decrypt(recipient.key, jwe, len, &pt, &ptlen), MCIM_OK);
      assert_null(pt);
      jwe[i] = (char)(jwe[i] ^ mask);
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
      /* x = p (the field's prime: out of range), y = the generator's */
      {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
       "\"x\":\"_____wAAAAEAAAAAAAAAAAAAAAD_______________8\","
       "\"y\":\"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU\"}}",
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

/* A peer point that is not a point of P-256 other than infinity never reaches an ECDH (whose
 * own check of the peer is the partial validation since P-256's cofactor is 1: jose_jwe.c's
 * ecdh_es_derive): a JWE's epk off the curve, at (0, 0) or out of range is refused as
 * MCIM_JOSE_MALFORMED (test_jwe), and the point at infinity, which OpenSSL imports (an
 * encoded point of one zero byte), cannot become a JOSE key to derive with
 * (MCIM_KEY_INVALID); nor can a point off the curve given by its coordinates. */
static void test_ecdh_peer_invalid(void **state)
{
  (void)state;
  static const uint8_t infinity[1] = {0x00};
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  assert_non_null(bld);
  assert_int_equal(
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), 1);
  assert_int_equal(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, infinity,
                                                    sizeof(infinity)),
                   1);
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  EVP_PKEY *at_infinity = NULL;
  assert_non_null(params);
  assert_non_null(ctx);
  assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
  assert_int_equal(EVP_PKEY_fromdata(ctx, &at_infinity, EVP_PKEY_PUBLIC_KEY, params), 1);
  mcim_jose_key_t *peer = NULL;
  assert_int_equal(mcim_jose_key_from_pkey(at_infinity, &peer), MCIM_KEY_INVALID);
  assert_null(peer);

  /* coordinates: (0, 0), and the generator with y changed */
  uint8_t x[32] = {0}, y[32] = {0};
  EVP_PKEY *off = NULL;
  assert_int_equal(mcim_p256_public_pkey(x, y, &off), MCIM_KEY_INVALID);
  static const uint8_t gx[32] = {
      0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5,
      0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0,
      0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
  };
  static const uint8_t gy[32] = {
      0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a,
      0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce,
      0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
  };
  memcpy(x, gx, sizeof(x));
  memcpy(y, gy, sizeof(y));
  assert_int_equal(mcim_p256_public_pkey(x, y, &off), MCIM_OK); /* G itself */
  EVP_PKEY_free(off);
  off = NULL;
  y[31] ^= 1;
  assert_int_equal(mcim_p256_public_pkey(x, y, &off), MCIM_KEY_INVALID);
  assert_null(off);

  EVP_PKEY_free(at_infinity);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
}

/* ---- sealed packages ---------------------------------------------------------------- */

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
      pkg[i] = (char)(pkg[i] ^ masks[m]);
      uint8_t *content = NULL;
      size_t clen = 0;
      mcim_statement_t *st = NULL;
      mcim_cause_t rc =
          mcim_package_open(pkg, len, issuer.pub, &x, recipient.key, &st, &content, &clen);
      if (rc == MCIM_OK)
        fail_msg("byte %zu ^ 0x%02x accepted", i, masks[m]);
      assert_null(content);
      assert_null(st);
      pkg[i] = (char)(pkg[i] ^ masks[m]);
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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc7518_c),
      cmocka_unit_test(test_rfc7516_a1),
      cmocka_unit_test(test_jwe),
      cmocka_unit_test(test_ecdh_peer_invalid),
      cmocka_unit_test(test_package),
      cmocka_unit_test(test_package_tamper),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
