/* JOSE keys (src/crypto/jose_key.c): from JWKs and OpenSSL keys (a point off the curve, other
 * curves and RSA refused), shared references, the public half; a key whose private part is
 * elsewhere (mcim_jose_key_external, the TPM TRE's seam); public keys from coordinates.
 * Fixture: jose_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/bn.h>

#include "jose_fixture.h"

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

/* ---- public keys from coordinates ---------------------------------------------------- */

static void point_of(const EVP_PKEY *k, uint8_t x[32], uint8_t y[32])
{
  BIGNUM *bx = NULL, *by = NULL;
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &bx), 1);
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &by), 1);
  assert_int_equal(BN_bn2binpad(bx, x, 32), 32);
  assert_int_equal(BN_bn2binpad(by, y, 32), 32);
  BN_free(bx);
  BN_free(by);
}

static void shared_secret(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t z[32])
{
  size_t z_len = 32;
  EVP_PKEY_CTX *dh = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
  assert_non_null(dh);
  assert_int_equal(EVP_PKEY_derive_init(dh), 1);
  assert_int_equal(EVP_PKEY_derive_set_peer(dh, peer), 1); /* the full check, here */
  assert_int_equal(EVP_PKEY_derive(dh, z, &z_len), 1);
  assert_int_equal(z_len, 32);
  EVP_PKEY_CTX_free(dh);
}

/* A public key from coordinates is a copy of one template key with its point set (jose.c,
 * p256_public): each key is its own point and stands alone, a point off the curve in between
 * is refused and changes nothing for the next, and the keys pass OpenSSL's full check and
 * agree on an ECDH secret. */
static void test_public_from_coordinates(void **state)
{
  (void)state;
  EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  uint8_t xa[32], ya[32], xb[32], yb[32], z1[32], z2[32];
  EVP_PKEY *pa = NULL, *pb = NULL, *off = NULL, *again = NULL;
  assert_non_null(a);
  assert_non_null(b);
  point_of(a, xa, ya);
  point_of(b, xb, yb);
  assert_int_equal(mcim_p256_public_pkey(xa, ya, &pa), MCIM_OK);
  assert_int_equal(mcim_p256_public_pkey(xb, yb, &pb), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(pa, a), 1);
  assert_int_equal(EVP_PKEY_eq(pb, b), 1);
  assert_int_not_equal(EVP_PKEY_eq(pa, pb), 1);
  ya[31] ^= 1;
  assert_int_equal(mcim_p256_public_pkey(xa, ya, &off), MCIM_KEY_INVALID);
  assert_null(off);
  ya[31] ^= 1;
  EVP_PKEY_free(pa);
  assert_int_equal(mcim_p256_public_pkey(xa, ya, &again), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(again, a), 1);
  assert_int_equal(EVP_PKEY_eq(pb, b), 1);
  shared_secret(a, pb, z1);
  shared_secret(b, again, z2);
  assert_memory_equal(z1, z2, 32);
  EVP_PKEY_free(again);
  EVP_PKEY_free(pb);
  EVP_PKEY_free(a);
  EVP_PKEY_free(b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keys),
      cmocka_unit_test(test_external_key),
      cmocka_unit_test(test_public_from_coordinates),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
