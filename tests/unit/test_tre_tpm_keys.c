/* The TPM TRE's own keys (src/tre/tpm/tpm_keys.c; docs/tre-tpm.md) against a real TPM 2.0:
 * a throw-away swtpm started by the group setup (no swtpm installed is a failure, not a
 * skip: scripts/deps.sh installs it; tests/unit/tre_tpm_keys_fixture.h).
 *
 * Each TPM key operation is checked against the software path it replaces: a digest the TPM
 * signs verifies with OpenSSL, the TPM's ECDH Z equals OpenSSL's; and the proofs that the
 * keys cannot leave the TPM: TPM2_Duplicate refused whatever the authorisation, the blobs
 * refused by another TPM and in altered forms. A TPM TRE as a whole is tested in
 * test_tre_tpm_tre.c, K in the TPM in test_tre_tpm_k.c. */
#define _GNU_SOURCE /* memmem, nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_slot.h"
#include "tre_tpm_keys_fixture.h"

/* ---- the keys, against the software path ------------------------------------------- */

/* OpenSSL's verdict on R || S over `digest` with `pub`. */
static bool ecdsa_ok(EVP_PKEY *pub, const uint8_t digest[32], const uint8_t sig[64])
{
  ECDSA_SIG *s = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, 32, NULL), *sv = BN_bin2bn(sig + 32, 32, NULL);
  uint8_t *der = NULL;
  assert_true(s && r && sv);
  assert_int_equal(ECDSA_SIG_set0(s, r, sv), 1);
  int der_len = i2d_ECDSA_SIG(s, &der);
  assert_true(der_len > 0);
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pub, NULL);
  assert_non_null(c);
  assert_int_equal(EVP_PKEY_verify_init(c), 1);
  assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()), 1);
  int ok = EVP_PKEY_verify(c, der, (size_t)der_len, digest, 32);
  EVP_PKEY_CTX_free(c);
  OPENSSL_free(der);
  ECDSA_SIG_free(s);
  return ok == 1;
}

/* Create both kinds, keep only their blobs, load them on a new connection (the primary made
 * again from its template), and compare every result with OpenSSL's. */
static void test_keys_against_software(void **state)
{
  (void)state;
  struct mcim_tpm_blob sign, ecdh, again;
  uint8_t digest[32], sig[64], x[32], y[32], z_tpm[32], z_ssl[32];
  size_t z_len = sizeof(z_ssl);
  char *pub_b64 = NULL, *priv_b64 = NULL;
  EVP_PKEY *sign_pub = NULL, *ecdh_pub = NULL;

  mcim_tpm_t *t = swtpm_open(sw);
  uint64_t t0 = mcim_monotonic_ns();
  create_key(t, MCIM_TPM_KEY_SIGN, &sign);
  print_message("TPM2_Create (signing key): %.2f ms\n", ms_since(t0));
  create_key(t, MCIM_TPM_KEY_ECDH, &ecdh);
  mcim_tpm_free(t);
  /* the public areas: the attributes that make them non-exportable, set by the TPM */
  for (int i = 0; i < 2; i++) {
    TPMA_OBJECT a = (i ? ecdh : sign).pub.publicArea.objectAttributes;
    assert_true(a & TPMA_OBJECT_FIXEDTPM);
    assert_true(a & TPMA_OBJECT_FIXEDPARENT);
    assert_true(a & TPMA_OBJECT_SENSITIVEDATAORIGIN);
    assert_false(a & TPMA_OBJECT_RESTRICTED);
    assert_int_equal((i ? ecdh : sign).pub.publicArea.authPolicy.size, 0);
  }
  assert_true(sign.pub.publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT);
  assert_false(sign.pub.publicArea.objectAttributes & TPMA_OBJECT_DECRYPT);
  assert_true(ecdh.pub.publicArea.objectAttributes & TPMA_OBJECT_DECRYPT);
  assert_false(ecdh.pub.publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT);
  /* the blobs as the document keeps them, and back */
  assert_int_equal(mcim_tpm_blob_encode(&sign, &pub_b64, &priv_b64), MCIM_OK);
  assert_int_equal(mcim_tpm_blob_decode(pub_b64, priv_b64, &again), MCIM_OK);
  assert_memory_equal(&again.pub, &sign.pub, sizeof(again.pub));
  assert_memory_equal(&again.priv, &sign.priv, sizeof(again.priv));
  assert_int_equal(mcim_tpm_blob_decode(priv_b64, pub_b64, &again), MCIM_KEY_INVALID);
  assert_int_equal(mcim_tpm_blob_decode(pub_b64, "", &again), MCIM_KEY_INVALID);
  assert_int_equal(mcim_tpm_blob_decode(pub_b64, NULL, &again), MCIM_KEY_INVALID);
  /* a TPM2B_PUBLIC whose size field is not its content's (tpm2-tss unmarshals it all the
   * same; tests/fuzz/regressions/fuzz_tpm_blob/tpm2b-public-size-zero-accepted) */
  uint8_t raw[sizeof(TPM2B_PUBLIC)];
  size_t raw_len = 0;
  assert_int_equal(mcim_b64url_decode(pub_b64, strlen(pub_b64), raw, sizeof(raw), &raw_len),
                   MCIM_OK);
  char *bad = malloc(mcim_b64url_len(raw_len) + 1);
  assert_non_null(bad);
  for (int i = 0; i < 2; i++) {
    raw[0] = 0;
    raw[1] = (uint8_t)(i ? raw_len - 3 : 0); /* 0, then one byte short */
    mcim_b64url_encode(raw, raw_len, bad);
    assert_int_equal(mcim_tpm_blob_decode(bad, priv_b64, &again), MCIM_KEY_INVALID);
  }
  free(bad);
  /* empty: a TPM2B of size 0 ("AAA" is its two bytes) is no public area, no private part */
  assert_int_equal(mcim_tpm_blob_decode("AAA", priv_b64, &again), MCIM_KEY_INVALID);
  assert_int_equal(mcim_tpm_blob_decode(pub_b64, "AAA", &again), MCIM_KEY_INVALID);
  free(pub_b64);
  free(priv_b64);
  /* the public keys, on the host; a blob of the other kind is refused */
  assert_int_equal(mcim_tpm_key_public(&sign, MCIM_TPM_KEY_SIGN, &sign_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_key_public(&ecdh, MCIM_TPM_KEY_ECDH, &ecdh_pub), MCIM_OK);
  EVP_PKEY *wrong = NULL;
  assert_int_equal(mcim_tpm_key_public(&sign, MCIM_TPM_KEY_ECDH, &wrong), MCIM_KEY_INVALID);
  assert_null(wrong);

  /* a new connection: the blobs load under the primary made again */
  t = swtpm_open(sw);
  mcim_tpm_key_t *k = NULL;
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_ECDH, &sign, &k), MCIM_KEY_INVALID);
  assert_null(k);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(mcim_random(digest, sizeof(digest)), MCIM_OK);
    t0 = mcim_monotonic_ns();
    k = load_key(t, MCIM_TPM_KEY_SIGN, &sign);
    assert_int_equal(mcim_tpm_key_sign(k, digest, sig), MCIM_OK);
    mcim_tpm_key_free(k);
    if (i == 0)
      print_message("TPM2_Load + TPM2_Sign + flush: %.2f ms\n", ms_since(t0));
    assert_true(ecdsa_ok(sign_pub, digest, sig));
    digest[0] ^= 1;
    assert_false(ecdsa_ok(sign_pub, digest, sig));
  }
  /* ECDH: Z from the TPM equals OpenSSL's from the other side */
  for (int i = 0; i < 4; i++) {
    EVP_PKEY *eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(eph);
    point_of(eph, x, y);
    t0 = mcim_monotonic_ns();
    k = load_key(t, MCIM_TPM_KEY_ECDH, &ecdh);
    assert_int_equal(mcim_tpm_key_ecdh(k, x, y, z_tpm), MCIM_OK);
    if (i == 0)
      print_message("TPM2_Load + TPM2_ECDH_ZGen + flush: %.2f ms\n", ms_since(t0));
    EVP_PKEY_CTX *dh = EVP_PKEY_CTX_new(eph, NULL);
    assert_int_equal(EVP_PKEY_derive_init(dh), 1);
    assert_int_equal(EVP_PKEY_derive_set_peer(dh, ecdh_pub), 1);
    z_len = sizeof(z_ssl);
    assert_int_equal(EVP_PKEY_derive(dh, z_ssl, &z_len), 1);
    assert_int_equal(z_len, 32);
    assert_memory_equal(z_tpm, z_ssl, 32);
    /* a point off the curve: the TPM refuses it */
    y[31] ^= 1;
    assert_int_equal(mcim_tpm_key_ecdh(k, x, y, z_tpm), MCIM_TPM_ERROR);
    print_message("point off the curve: %s\n", mcim_tpm_detail(t));
    mcim_tpm_key_free(k);
    EVP_PKEY_CTX_free(dh);
    EVP_PKEY_free(eph);
  }
  /* each key does its one job: the signing key agrees no key, the KA key signs nothing */
  TPM2B_ECC_POINT in = {.size = 68, .point = {.x = {.size = 32}, .y = {.size = 32}}};
  memcpy(in.point.x.buffer, x, 32);
  y[31] ^= 1;
  memcpy(in.point.y.buffer, y, 32);
  TPM2B_ECC_POINT *outp = NULL;
  k = load_key(t, MCIM_TPM_KEY_SIGN, &sign);
  TSS2_RC r = Esys_ECDH_ZGen(mcim_tpm_esys(t), mcim_tpm_key_handle(k), ESYS_TR_PASSWORD,
                             ESYS_TR_NONE, ESYS_TR_NONE, &in, &outp);
  assert_int_not_equal(r, TSS2_RC_SUCCESS);
  assert_null(outp);
  assert_int_equal(mcim_tpm_fail(t, "TPM2_ECDH_ZGen (signing key)", r), MCIM_TPM_ERROR);
  print_message("ECDH with the signing key refused: %s\n", mcim_tpm_detail(t));
  mcim_tpm_key_free(k);
  k = load_key(t, MCIM_TPM_KEY_ECDH, &ecdh);
  TPM2B_DIGEST d = {.size = 32};
  const TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA,
                                  .details.ecdsa.hashAlg = TPM2_ALG_SHA256};
  const TPMT_TK_HASHCHECK no_ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
  TPMT_SIGNATURE *s = NULL;
  r = Esys_Sign(mcim_tpm_esys(t), mcim_tpm_key_handle(k), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                ESYS_TR_NONE, &d, &scheme, &no_ticket, &s);
  assert_int_not_equal(r, TSS2_RC_SUCCESS);
  assert_null(s);
  assert_int_equal(fmt1(r), TPM2_RC_KEY);
  print_message("signature with the KA key refused: %s\n",
                (mcim_tpm_fail(t, "TPM2_Sign (KA key)", r), mcim_tpm_detail(t)));
  mcim_tpm_key_free(k);
  mcim_tpm_free(t);
  EVP_PKEY_free(sign_pub);
  EVP_PKEY_free(ecdh_pub);
}

/* The keys cannot leave the TPM: TPM2_Duplicate is refused with the password and with a
 * policy session for it (fixedParent: TPM_RC_ATTRIBUTES, whatever the authorisation), and
 * their blobs do not load in another TPM. */
static void test_keys_not_exportable(void **state)
{
  (void)state;
  struct mcim_tpm_blob sign, ecdh;
  const TPM2B_DATA no_key = {0};
  const TPMT_SYM_DEF_OBJECT no_sym = {.algorithm = TPM2_ALG_NULL};
  const TPMT_SYM_DEF no_param_enc = {.algorithm = TPM2_ALG_NULL};
  TPM2B_DATA *enc_key = NULL;
  TPM2B_PRIVATE *dup = NULL;
  TPM2B_ENCRYPTED_SECRET *seed = NULL;
  ESYS_TR primary = ESYS_TR_NONE;

  mcim_tpm_t *t = swtpm_open(sw);
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  create_key(t, MCIM_TPM_KEY_SIGN, &sign);
  create_key(t, MCIM_TPM_KEY_ECDH, &ecdh);
  assert_int_equal(mcim_tpm_primary(t, &primary, NULL), MCIM_OK);
  for (int i = 0; i < 2; i++) {
    const struct mcim_tpm_blob *b = i ? &ecdh : &sign;
    mcim_tpm_key_t *k = load_key(t, i ? MCIM_TPM_KEY_ECDH : MCIM_TPM_KEY_SIGN, b);
    /* with the password, to the NULL parent (in clear) and to the primary */
    ESYS_TR parents[] = {ESYS_TR_RH_NULL, primary};
    for (int p = 0; p < 2; p++) {
      TSS2_RC r = Esys_Duplicate(esys, mcim_tpm_key_handle(k), parents[p], ESYS_TR_PASSWORD,
                                 ESYS_TR_NONE, ESYS_TR_NONE, &no_key, &no_sym, &enc_key, &dup,
                                 &seed);
      assert_int_not_equal(r, TSS2_RC_SUCCESS);
      assert_null(dup);
      assert_int_equal(mcim_tpm_fail(t, "TPM2_Duplicate", r), MCIM_TPM_ERROR);
      print_message("%s key, duplicate with the password: %s\n", i ? "KA" : "signing",
                    mcim_tpm_detail(t));
    }
    /* with a policy session for TPM2_Duplicate: fixedParent stops it before any policy */
    ESYS_TR policy = ESYS_TR_NONE;
    assert_int_equal(Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY,
                                           &no_param_enc, TPM2_ALG_SHA256, &policy),
                     TSS2_RC_SUCCESS);
    assert_int_equal(Esys_PolicyCommandCode(esys, policy, ESYS_TR_NONE, ESYS_TR_NONE,
                                            ESYS_TR_NONE, TPM2_CC_Duplicate),
                     TSS2_RC_SUCCESS);
    TSS2_RC r = Esys_Duplicate(esys, mcim_tpm_key_handle(k), ESYS_TR_RH_NULL, policy,
                               ESYS_TR_NONE, ESYS_TR_NONE, &no_key, &no_sym, &enc_key, &dup,
                               &seed);
    assert_int_not_equal(r, TSS2_RC_SUCCESS);
    assert_null(dup);
    assert_int_equal(mcim_tpm_fail(t, "TPM2_Duplicate (policy session)", r), MCIM_TPM_ERROR);
    print_message("%s key, duplicate with a policy session: %s\n", i ? "KA" : "signing",
                  mcim_tpm_detail(t));
    (void)Esys_FlushContext(esys, policy);
    mcim_tpm_key_free(k);
  }

  /* Even a key whose policy does allow TPM2_Duplicate cannot be duplicated when it has our
   * attributes: fixedParent alone stops it (TPM_RC_ATTRIBUTES). A key made like the TRE's,
   * but with authPolicy = PolicyCommandCode(TPM2_CC_Duplicate), computed by a trial session. */
  ESYS_TR trial = ESYS_TR_NONE, policy = ESYS_TR_NONE;
  TPM2B_DIGEST *digest = NULL;
  assert_int_equal(Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_TRIAL,
                                         &no_param_enc, TPM2_ALG_SHA256, &trial),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyCommandCode(esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                          TPM2_CC_Duplicate),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyGetDigest(esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        &digest),
                   TSS2_RC_SUCCESS);
  (void)Esys_FlushContext(esys, trial);
  TPM2B_PUBLIC tmpl = sign.pub;
  memset(&tmpl.publicArea.unique, 0, sizeof(tmpl.publicArea.unique));
  tmpl.publicArea.authPolicy = *digest;
  const TPM2B_SENSITIVE_CREATE no_auth = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  TPM2B_PRIVATE *priv = NULL;
  TPM2B_PUBLIC *pub = NULL;
  ESYS_TR h = ESYS_TR_NONE;
  assert_int_equal(Esys_Create(esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               &no_auth, &tmpl, &no_outside, &no_pcrs, &priv, &pub, NULL, NULL,
                               NULL),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_Load(esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv,
                             pub, &h),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY,
                                         &no_param_enc, TPM2_ALG_SHA256, &policy),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyCommandCode(esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                          TPM2_CC_Duplicate),
                   TSS2_RC_SUCCESS);
  TSS2_RC r = Esys_Duplicate(esys, h, ESYS_TR_RH_NULL, policy, ESYS_TR_NONE, ESYS_TR_NONE,
                             &no_key, &no_sym, &enc_key, &dup, &seed);
  assert_null(dup);
  assert_int_equal(fmt1(r), TPM2_RC_ATTRIBUTES);
  assert_int_equal(mcim_tpm_fail(t, "TPM2_Duplicate (the policy allows it)", r), MCIM_TPM_ERROR);
  print_message("fixedParent, with a policy that allows duplication: %s\n", mcim_tpm_detail(t));
  (void)Esys_FlushContext(esys, policy);
  (void)Esys_FlushContext(esys, h);
  Esys_Free(digest);
  Esys_Free(priv);
  Esys_Free(pub);
  mcim_tpm_free(t);

  /* another TPM (another owner seed, so another primary): the blobs do not load there */
  char dir[64];
  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  mcim_swtpm_t *other = swtpm_on(dir);
  t = swtpm_open(other);
  mcim_tpm_key_t *k = NULL;
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &sign, &k), MCIM_TPM_ERROR);
  assert_null(k);
  assert_non_null(strstr(mcim_tpm_detail(t), "TPM2_Load"));
  print_message("the signing key's blob in another TPM: %s\n", mcim_tpm_detail(t));
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_ECDH, &ecdh, &k), MCIM_TPM_ERROR);
  /* an altered blob does not load in its own TPM either */
  mcim_tpm_free(t);
  mcim_swtpm_free(other);
  rm_tree(dir);
  t = swtpm_open(sw);
  struct mcim_tpm_blob bad = sign;
  bad.priv.buffer[bad.priv.size - 1] ^= 1;
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &bad, &k), MCIM_TPM_ERROR);
  print_message("an altered blob: %s\n", mcim_tpm_detail(t));
  bad = sign;
  bad.pub.publicArea.unique.ecc.x.buffer[0] ^= 1; /* another key's public part, same private */
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &bad, &k), MCIM_TPM_ERROR);
  bad = sign;
  bad.pub.publicArea.objectAttributes &= ~(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &bad, &k), MCIM_KEY_INVALID);
  mcim_tpm_free(t);
}

int main(void)
{
  /* ESAPI prints each refusal this test provokes on purpose; each is printed with its cause
   * instead. TSS2_LOG=all+warning shows them. */
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keys_against_software),
      cmocka_unit_test(test_keys_not_exportable),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
