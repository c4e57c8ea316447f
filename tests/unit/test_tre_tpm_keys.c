/* The TPM TRE's own keys (src/tre/tpm/tpm_keys.c, tre_tpm.c; docs/tre-tpm.md) against a real
 * TPM 2.0: a throw-away swtpm started by the group setup (no swtpm installed is a failure,
 * not a skip: scripts/deps.sh installs it).
 *
 * Each TPM key operation is checked against the software path it replaces: a digest the TPM
 * signs verifies with OpenSSL, and a JWS the TPM TRE signs with the existing verifier
 * (mcim_jws_verify, cjose); the TPM's ECDH Z equals OpenSSL's, and a JWE or a sealed package
 * made by the existing encryptor (mcim_jwe_encrypt, mcim_package_seal: what the M2MES and
 * the SHOs run) for the TRE's key-agreement public key opens through the TPM. Then a TPM TRE
 * end to end (manufacture, certificates, PCID credential, statements, quote, a package
 * staged and installed, AKA with its MCIM), and the proofs that its keys cannot leave the
 * TPM: TPM2_Duplicate refused whatever the authorisation, the blobs refused by another TPM,
 * the document holding TPM blobs and no private key. And a TPM that goes away and comes back
 * with its state, objects left loaded by a process that died, the wrong backend. */
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
#include "swtpm_fixture.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define TXN_A "0123456789abcdef0123456789abcdef"

static char state_dir[64];
static mcim_swtpm_t *sw;

/* ---- fixtures ------------------------------------------------------------------------ */

static mcim_swtpm_t *swtpm_on(const char *dir)
{
  char detail[512];
  mcim_swtpm_t *s = NULL;
  mcim_cause_t rc = mcim_swtpm_start(dir, MCIM_SWTPM_TIED, 20000, &s, detail, sizeof(detail));
  if (rc != MCIM_OK)
    print_error("cannot start swtpm: %s: %s\n", mcim_cause_name(rc), detail);
  assert_int_equal(rc, MCIM_OK);
  return s;
}

static int group_setup(void **state)
{
  (void)state;
  if (tpm_group_setup(false, "/tmp/mcim-tpmtest-XXXXXX", state_dir, sizeof(state_dir), &sw) != 0)
    return -1;
  print_message("swtpm pid %d on %s\n", (int)mcim_swtpm_pid(sw), mcim_swtpm_tcti(sw));
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  return tpm_group_teardown(state_dir, sw);
}

static mcim_tpm_key_t *load_key(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                                const struct mcim_tpm_blob *blob)
{
  mcim_tpm_key_t *k = NULL;
  mcim_cause_t rc = mcim_tpm_key_load(t, kind, blob, &k);
  if (rc != MCIM_OK)
    print_error("load: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
  return k;
}

static void create_key(mcim_tpm_t *t, enum mcim_tpm_key_kind kind, struct mcim_tpm_blob *out)
{
  mcim_cause_t rc = mcim_tpm_key_create(t, kind, out);
  if (rc != MCIM_OK)
    print_error("create: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
}

/* The TPM's error number of a format-one response code (parameter, handle or session n). */
static TSS2_RC fmt1(TSS2_RC r)
{
  return (r & TPM2_RC_FMT1) ? (r & 0xbfu) : r;
}

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

static void point_of(EVP_PKEY *k, uint8_t x[32], uint8_t y[32])
{
  BIGNUM *bx = NULL, *by = NULL;
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &bx), 1);
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &by), 1);
  assert_int_equal(BN_bn2binpad(bx, x, 32), 32);
  assert_int_equal(BN_bn2binpad(by, y, 32), 32);
  BN_free(bx);
  BN_free(by);
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

/* ---- the TPM TRE ---------------------------------------------------------------------- */

struct fx {
  char dir[96];
  mcim_tre_t *tre;
  mcim_jose_key_t *att_pub, *ka_pub;
  char *att_pem, *ka_pem;
  uint8_t pcid_k[16], pcid_opc[16];
};

static char *path_in(const struct fx *f, const char *name)
{
  static char buf[2][256];
  static int n;
  n ^= 1;
  snprintf(buf[n], sizeof(buf[n]), "%s/%s", f->dir, name);
  return buf[n];
}

static char *cert_issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
                        EVP_PKEY *key)
{
  X509 *x = NULL;
  char *pem = NULL;
  mcim_cert_request_t req = {.name = name, .usage = usage, .key = key, .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  return pem;
}

static char *pcid_jwe(const mcim_jose_key_t *ka, const uint8_t k[16], const uint8_t opc[16])
{
  char kh[33], oh[33], text[256];
  char *jwe = NULL;
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}",
           PCID1, kh, oh, (long long)(mcim_now() + 3600));
  /* the existing encryptor (cjose), as the M2MES seals the first PCID credential */
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  return jwe;
}

/* Manufacture, as `mcim lab device add --tre tpm` does: the keys made in the TPM, their
 * public parts certified by the M2MES CA exactly as a software TRE's, the first PCID
 * credential sealed to the KA key. */
static int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *att_jwk = NULL, *ka_jwk = NULL;
  EVP_PKEY *att = NULL, *ka = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-tretpm-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  print_message("mcim_tre_tpm_create: %.1f ms\n", ms_since(t0));
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_CONFLICT);
  assert_int_equal(mcim_tre_open(f->dir, "tpm", mcim_swtpm_tcti(sw), &f->tre), MCIM_OK);
  assert_string_equal(f->tre->ops->name, "tpm");
  /* the restricted attestation key made as enrolment makes it (this swtpm has no EK
   * certificate: the M2MES's side is test_tre_tpm_enrol's): without it a TPM TRE does not
   * quote */
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(f->tre, &enrol);
  json_decref(enrol);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  assert_null(strstr(att_jwk, "\"d\""));
  assert_int_equal(mcim_jose_key_from_jwk(att_jwk, strlen(att_jwk), &f->att_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(ka_jwk, strlen(ka_jwk), &f->ka_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(f->att_pub, &att), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(f->ka_pub, &ka), MCIM_OK);
  f->att_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, att);
  f->ka_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT, ka);
  /* each certificate must certify exactly its TPM key: the KA key under the attestation
   * usage is refused */
  char *wrong = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, ka);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, wrong, f->ka_pem), MCIM_KEY_INVALID);
  free(wrong);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, f->att_pem, f->ka_pem), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_k, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_opc, 16), MCIM_OK);
  /* the PCID credential's K wrapped to the PCID's slot key enrolment made: K in clear is
   * refused (test_pcid_k_in_tpm) */
  char *jwe =
      tre_pcid_jwe_tpm(f->dir, DEVICE, PCID1, f->ka_pub, f->pcid_k, f->pcid_opc, mcim_now() + 3600);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  EVP_PKEY_free(att);
  EVP_PKEY_free(ka);
  free(att_jwk);
  free(ka_jwk);
  *state = f;
  return 0;
}

static int fx_teardown(void **state)
{
  struct fx *f = *state;
  mcim_tre_close(f->tre);
  mcim_jose_key_free(f->att_pub);
  mcim_jose_key_free(f->ka_pub);
  free(f->att_pem);
  free(f->ka_pem);
  rm_tree(f->dir);
  free(f);
  return 0;
}

/* The state document in clear: the newest slot, opened with the TRE's storage key. */
static json_t *state_read(const struct fx *f) { return tre_state_read(f->dir, DEVICE, true); }

static json_t *status_of(mcim_tre_t *tre)
{
  json_t *st = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &st), MCIM_OK);
  return st;
}

/* An SHO's package for this device: the MCIM sealed to the TRE's KA public key, signed. */
static char *sho_package(mcim_jose_key_t *sho, const mcim_jose_key_t *ka_pub, const char *txn,
                         const uint8_t k[16], const uint8_t opc[16])
{
  char kh[33], oh[33], text[256];
  char *pkg = NULL;
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"sho\":\"sho-a\",\"imsi\":\"001020000000007\",\"k\":\"%s\",\"opc\":\"%s\","
           "\"amf\":\"8000\"}",
           kh, oh);
  pkg = package_seal_text(sho, "sho-a", DEVICE, txn, ka_pub, text);
  return pkg;
}

static char *sho_package_text(mcim_jose_key_t *sho, const mcim_jose_key_t *ka_pub, const char *txn,
                              const char *text);
static char *k_tpm_content(const json_t *slot, EVP_PKEY *storage, const uint8_t k[16],
                           const uint8_t opc[16]);

/* Every operation of a TPM TRE that uses a key, its output checked with the existing
 * software verifiers, then the document and the files: TPM blobs, no private key. */
static void test_tre_end_to_end(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char *jws = NULL, *pem = NULL;
  mcim_statement_t *st = NULL;

  /* the certificates it keeps are the M2MES's */
  assert_int_equal(tre->ops->cert(tre->ctx, MCIM_TRE_CERT_ATTESTATION, &pem), MCIM_OK);
  free(pem);
  /* the PCID credential, opened through TPM2_ECDH_ZGen at manufacture, works */
  aka_once(tre, "pcid", f->pcid_k, f->pcid_opc, 32);

  /* a device statement signed by TPM2_Sign: the existing verifier accepts it */
  mcim_jws_verdicts_clear();
  json_t *extra = json_pack("{s:s}", "state", "installed");
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, extra, 300, &jws),
                   MCIM_OK);
  print_message("sign (one transaction: connection, primary, load, TPM2_Sign): %.2f ms\n",
                ms_since(t0));
  json_decref(extra);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .sub = DEVICE,
                         .txn = TXN_A, .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &st), MCIM_OK);
  assert_string_equal(st->kid, DEVICE);
  assert_string_equal(mcim_statement_string(st, "state"), "installed");
  mcim_statement_free(st);
  st = NULL;
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->ka_pub, &x, NULL), MCIM_JWS_BAD_SIGNATURE);
  free(jws);
  /* the quote */
  json_t *log = json_pack("[{s:s, s:s}]", "component", "boot", "digest",
                          "0000000000000000000000000000000000000000000000000000000000000001");
  assert_int_equal(mcim_tre_soft_set_measurements(tre, log), MCIM_OK);
  json_decref(log);
  assert_int_equal(tre->ops->quote(tre->ctx, "pva", TXN_A, "nonce-1", 300, &jws), MCIM_OK);
  mcim_jws_expect_t qx = {.iss = DEVICE, .aud = "pva", .typ = "mcim-quote+jwt", .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &qx, &st), MCIM_OK);
  assert_string_equal(mcim_statement_string(st, "nonce"), "nonce-1");
  /* the procedure's own KA key, a TPM object (docs/tre.md, "Crypto-shredding"), and the
   * slot key its MCIM's K is to be wrapped to, certified by the AK */
  mcim_jose_key_t *txn_ka = NULL;
  json_t *slot_offer = json_incref(json_object_get(st->payload, "tpm_slot"));
  assert_non_null(slot_offer);
  char *txn_jwk = json_dumps(json_object_get(st->payload, "ka_jwk"), JSON_COMPACT);
  assert_non_null(txn_jwk);
  assert_int_equal(mcim_jose_key_from_jwk(txn_jwk, strlen(txn_jwk), &txn_ka), MCIM_OK);
  assert_false(mcim_jose_key_has_private(txn_ka));
  free(txn_jwk);
  mcim_statement_free(st);
  st = NULL;
  free(jws);

  /* an SHO's package, sealed as the SHOs seal them: opens through the TPM, installs, and its
   * MCIM authenticates */
  EVP_PKEY *sho_pkey = NULL;
  mcim_jose_key_t *sho = NULL;
  uint8_t k[16], opc[16];
  assert_int_equal(mcim_pki_key_generate(&sho_pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(sho_pkey, &sho), MCIM_OK);
  char *sho_cert = cert_issue(ops_ca, "sho-a", MCIM_CERT_TLS, sho_pkey);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc, 16), MCIM_OK);
  /* sealed to the static KA key for a procedure that offered its own: refused */
  char *content = k_tpm_content(slot_offer, NULL, k, opc);
  json_decref(slot_offer);
  char *pkg = sho_package_text(sho, f->ka_pub, TXN_A, content);
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert),
                   MCIM_PACKAGE_INVALID);
  free(pkg);
  pkg = sho_package_text(sho, txn_ka, TXN_A, content);
  free(content);
  mcim_jose_key_free(txn_ka);
  t0 = mcim_monotonic_ns();
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert), MCIM_OK);
  print_message("stage (TPM2_ECDH_ZGen): %.2f ms\n", ms_since(t0));
  /* the procedure's key went with the package's opening: its blobs are out of the state */
  json_t *after_stage = state_read(f);
  assert_int_equal(json_array_size(json_object_get(after_stage, "txn_keys")), 0);
  json_decref(after_stage);
  char slot[64];
  assert_int_equal(tre->ops->install(tre->ctx, TXN_A, slot), MCIM_OK);
  assert_string_equal(slot, "sho-a");
  aka_once(tre, "sho-a", k, opc, 64);
  /* a package for another TRE's key does not open here */
  mcim_jose_key_t *stranger = NULL;
  assert_int_equal(mcim_jose_key_generate(&stranger), MCIM_OK);
  char *pkg2 = sho_package(sho, stranger, "fedcba9876543210fedcba9876543210", k, opc);
  assert_int_equal(tre->ops->stage(tre->ctx, "fedcba9876543210fedcba9876543210", pkg2,
                                   strlen(pkg2), sho_cert),
                   MCIM_PACKAGE_INVALID);
  free(pkg2);
  mcim_jose_key_free(stranger);

  /* a second handle, and one on a new process's view, see the same state */
  mcim_tre_t *again = NULL;
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &again), MCIM_OK);
  json_t *a = status_of(tre), *b = status_of(again);
  assert_true(json_equal(a, b));
  json_decref(a);
  json_decref(b);
  assert_int_equal(again->ops->sign(again->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, NULL), MCIM_OK);
  free(jws);
  mcim_tre_close(again);

  /* The document: TPM blobs where a software TRE has PEM private keys, and no private key
   * anywhere, neither in it nor in the files of the TRE. */
  json_t *doc = state_read(f);
  assert_string_equal(json_string_value(json_object_get(doc, "backend")), "tpm");
  const char *names[] = {"attestation", "ka"};
  for (int i = 0; i < 2; i++) {
    json_t *e = json_object_get(json_object_get(doc, "keys"), names[i]);
    assert_true(json_is_object(e));
    /* tpm_public, tpm_private and tpm_parent, nothing else */
    assert_int_equal(json_object_size(e), 3);
    /* tpm_parent: the name of the persistent storage key at its handle */
    mcim_tpm_t *t = swtpm_open(sw);
    TPM2B_NAME name;
    char name_b64[64];
    assert_int_equal(mcim_tpm_primary_persist(t, &name), MCIM_OK);
    mcim_b64url_encode(name.name, name.size, name_b64);
    assert_string_equal(json_string_value(json_object_get(e, "tpm_parent")), name_b64);
    mcim_tpm_free(t);
    struct mcim_tpm_blob blob;
    assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(e, "tpm_public")),
                                          json_string_value(json_object_get(e, "tpm_private")),
                                          &blob),
                     MCIM_OK);
    TPMA_OBJECT attrs = blob.pub.publicArea.objectAttributes;
    assert_true((attrs & MCIM_TPM_KEY_ATTRS) == MCIM_TPM_KEY_ATTRS);
    /* the private part is the TPM's wrapping (an HMAC-protected AES-CFB blob), not a scalar */
    assert_true(blob.priv.size > 32 + 32);
    EVP_PKEY *pub = NULL;
    assert_int_equal(mcim_tpm_key_public(&blob, i ? MCIM_TPM_KEY_ECDH : MCIM_TPM_KEY_SIGN, &pub),
                     MCIM_OK);
    EVP_PKEY *cert_pub = NULL;
    assert_int_equal(mcim_jose_key_public_pkey(i ? f->ka_pub : f->att_pub, &cert_pub), MCIM_OK);
    assert_int_equal(EVP_PKEY_eq(pub, cert_pub), 1);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(cert_pub);
  }
  char *text = json_dumps(doc, JSON_COMPACT);
  assert_null(strstr(text, "PRIVATE KEY"));
  assert_null(strstr(text, "\"d\""));
  free(text);
  json_decref(doc);
  for (int i = 0; i < 4; i++) {
    static const char *const files[] = {"tre.sealed", "tre.sealed.1", "tre.key", "tre.lock"};
    size_t len = 0;
    if (access(path_in(f, files[i]), F_OK) != 0)
      continue;
    uint8_t *buf = file_read(path_in(f, files[i]), &len);
    assert_null(memmem(buf, len, "PRIVATE KEY", 11));
    free(buf);
  }

  free(pkg);
  free(sho_cert);
  mcim_jose_key_free(sho);
  EVP_PKEY_free(sho_pkey);
}

/* Each backend opens only its own TREs, with the reason in the log. */
static void test_wrong_backend(void **state)
{
  struct fx *f = *state;
  char soft_dir[64];
  mcim_tre_t *t = NULL;
  long from = ftell(log_fp);

  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_CONFIG_INVALID);
  assert_null(t);
  assert_int_equal(mcim_tre_open(f->dir, "soft", NULL, &t), MCIM_CONFIG_INVALID);
  assert_int_equal(mcim_tre_open(f->dir, "hsm", NULL, &t), MCIM_CONFIG_INVALID);
  assert_int_equal(mcim_tre_tpm_open(f->dir, NULL, &t), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_tre_tpm_open(f->dir, "", &t), MCIM_INVALID_ARGUMENT);
  snprintf(soft_dir, sizeof(soft_dir), "/tmp/mcim-tresoft-XXXXXX");
  assert_non_null(mkdtemp(soft_dir));
  assert_int_equal(mcim_tre_soft_create(soft_dir, DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(soft_dir, mcim_swtpm_tcti(sw), &t), MCIM_CONFIG_INVALID);
  assert_null(t);
  assert_int_equal(mcim_tre_open(soft_dir, "soft", NULL, &t), MCIM_OK);
  assert_string_equal(t->ops->name, "soft");
  mcim_tre_close(t);
  rm_tree(soft_dir);
  fflush(log_fp);
  long end = ftell(log_fp);
  char *text = calloc(1, (size_t)(end - from) + 1);
  assert_int_equal(fseek(log_fp, from, SEEK_SET), 0);
  assert_int_equal(fread(text, 1, (size_t)(end - from), log_fp), (size_t)(end - from));
  assert_int_equal(fseek(log_fp, 0, SEEK_END), 0);
  assert_non_null(strstr(text, "is a TPM TRE (its keys are in a TPM)"));
  assert_non_null(strstr(text, "is a soft TRE, not a tpm one"));
  free(text);
}

/* The TPM goes away: key operations answer TPM_UNREACHABLE (a package is not called invalid
 * for it, and nothing changes); the TPM comes back with its state, on another port: the same
 * keys work again. */
static void test_tpm_gone_and_back(void **state)
{
  (void)state;
  char dir[64], *jws = NULL;
  mcim_tre_t *tre = NULL;
  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  mcim_swtpm_t *s = swtpm_on(dir);
  struct fx f = {0};
  snprintf(f.dir, sizeof(f.dir), "%.60s/tre", dir);
  assert_int_equal(mcim_tre_tpm_create(f.dir, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  char *jwk = NULL;
  mcim_jose_key_t *att = NULL, *ka = NULL;
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_ATTESTATION, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &att), MCIM_OK);
  free(jwk);
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  free(jwk);
  json_t *before = status_of(tre);

  mcim_swtpm_free(s); /* the state stays in `dir` */
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_UNREACHABLE);
  assert_null(jws);
  uint8_t k[16] = {1}, opc[16] = {2};
  char *jwe = pcid_jwe(ka, k, opc);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_TPM_UNREACHABLE);
  /* status needs no key, but the state it reads is vouched for by the TPM's counter
   * (rollback protection, tre_tpm_nv.c): refused while the TPM is away */
  json_t *after = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &after), MCIM_TPM_UNREACHABLE);
  mcim_tre_close(tre);

  /* back, with the same state, on whatever ports are free now */
  s = swtpm_on(dir);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  after = status_of(tre); /* the refused operations changed nothing */
  assert_true(json_equal(before, after));
  json_decref(after);
  /* a TPM TRE takes the PCID's K into its TPM only: enrolled, K wrapped to its PCID slot key */
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_FORBIDDEN);
  free(jwe);
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(tre, &enrol);
  json_decref(enrol);
  jwe = tre_pcid_jwe_tpm(f.dir, DEVICE, PCID1, ka, k, opc, mcim_now() + 3600);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), att, &x, NULL), MCIM_OK);
  free(jws);
  free(jwe);
  json_decref(before);
  mcim_tre_close(tre);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_swtpm_free(s);
  rm_tree(dir);
}

/* A key made persistent at the TRE's handle (MCIM_TPM_PRIMARY_HANDLE) under the template's
 * name, with another unique field: another key. */
static void impostor_at_handle(mcim_tpm_t *t)
{
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  const TPM2B_PUBLIC *pub = NULL;
  TPM2B_PUBLIC other = {0};
  ESYS_TR h = ESYS_TR_NONE, p = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
  const TPM2B_SENSITIVE_CREATE no_auth = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};

  assert_int_equal(mcim_tpm_primary(t, &h, &pub), MCIM_OK);
  other = *pub;
  other.publicArea.unique.ecc.x.size = 32;
  other.publicArea.unique.ecc.y.size = 32;
  memset(other.publicArea.unique.ecc.x.buffer, 'x', 32);
  memset(other.publicArea.unique.ecc.y.buffer, 'y', 32);
  assert_int_equal(Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE, &no_auth, &other, &no_outside, &no_pcrs, &p,
                                      NULL, NULL, NULL, NULL),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, p, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, MCIM_TPM_PRIMARY_HANDLE, &persistent),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_FlushContext(esys, p), TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_Close(esys, &persistent), TSS2_RC_SUCCESS);
}

/* Remove whatever key is at the TRE's persistent handle. */
static void evict_at_handle(mcim_tpm_t *t)
{
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  ESYS_TR tr = ESYS_TR_NONE, none = ESYS_TR_NONE;
  assert_int_equal(Esys_TR_FromTPMPublic(esys, MCIM_TPM_PRIMARY_HANDLE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, &tr),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, MCIM_TPM_PRIMARY_HANDLE, &none),
                   TSS2_RC_SUCCESS);
}

/* The storage primary is persistent, made so at manufacture, and its name recorded in the
 * state: a TRE refuses the key found at the handle unless it is the recorded one (another
 * key there, or none), and works again once the right one is back. Manufacture refuses a
 * handle held by another key rather than replacing it. Own swtpm: the test changes what is
 * at the handle. */
static void test_primary_not_recorded(void **state)
{
  (void)state;
  char dir[64], dir2[80], *jws = NULL;
  mcim_tre_t *tre = NULL;
  mcim_tpm_t *t = NULL;
  TPM2B_NAME name;
  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  mcim_swtpm_t *s = swtpm_on(dir);
  struct fx f = {0};
  snprintf(f.dir, sizeof(f.dir), "%.60s/tre", dir);
  snprintf(dir2, sizeof(dir2), "%.60s/tre2", dir);
  assert_int_equal(mcim_tre_tpm_create(f.dir, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  free(jws);
  jws = NULL;

  /* another key at the handle: refused, with the cause in the log */
  t = swtpm_open(s);
  evict_at_handle(t);
  impostor_at_handle(t);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_ERROR);
  assert_null(jws);
  assert_true(log_has("is not the storage key recorded in the TRE's state", NULL));
  /* and manufacture does not replace it */
  assert_int_equal(mcim_tre_tpm_create(dir2, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_TPM_ERROR);
  assert_true(log_has("holds another key", NULL));

  /* no key at the handle: refused */
  t = swtpm_open(s);
  evict_at_handle(t);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_ERROR);
  assert_null(jws);
  assert_true(log_has("no key at persistent handle", NULL));

  /* the recorded one back (the same template under the same seed): works again */
  t = swtpm_open(s);
  assert_int_equal(mcim_tpm_primary_persist(t, &name), MCIM_OK);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  free(jws);
  mcim_tre_close(tre);
  mcim_swtpm_free(s);
  rm_tree(dir);
}

/* Objects a process left loaded when it died (swtpm has no resource manager, and 3 transient
 * slots): with two left, TPM2_Load finds no slot; with three, already the TPM2_ReadPublic of
 * the persistent storage key (read through a transient slot). Both times the TRE flushes
 * them and goes on. */
static void test_stray_objects(void **state)
{
  struct fx *f = *state;
  char *jws = NULL;
  json_t *doc = state_read(f);
  struct mcim_tpm_blob blob;
  json_t *e = json_object_get(json_object_get(doc, "keys"), "attestation");
  assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(e, "tpm_public")),
                                        json_string_value(json_object_get(e, "tpm_private")),
                                        &blob),
                   MCIM_OK);
  json_decref(doc);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .skew = 30};
  mcim_tpm_t *t = NULL;

  for (int strays = 2; strays <= 3; strays++) {
    /* load two keys and "die": close without flushing them; mcim_tpm_free flushes its
     * primary, unless ESAPI forgot it first (the third stray) */
    t = swtpm_open(sw);
    ESYS_TR primary = ESYS_TR_NONE, h = ESYS_TR_NONE;
    assert_int_equal(mcim_tpm_primary(t, &primary, NULL), MCIM_OK);
    for (int i = 0; i < 2; i++)
      assert_int_equal(Esys_Load(mcim_tpm_esys(t), primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                 ESYS_TR_NONE, &blob.priv, &blob.pub, &h),
                       TSS2_RC_SUCCESS);
    if (strays == 3)
      assert_int_equal(Esys_TR_Close(mcim_tpm_esys(t), &primary), TSS2_RC_SUCCESS);
    mcim_tpm_free(t);
    assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300,
                                       &jws),
                     MCIM_OK);
    assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, NULL), MCIM_OK);
    free(jws);
    jws = NULL;
    print_message("%d objects left loaded: flushed, signed\n", strays);
  }
  /* and nothing is left behind by the TRE itself */
  t = swtpm_open(sw);
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, UINT32_C(0x80000000) /* transient */,
                                      TPM2_MAX_CAP_HANDLES, &more, &cap),
                   TSS2_RC_SUCCESS);
  assert_int_equal(cap->data.handles.count, 0);
  Esys_Free(cap);
  mcim_tpm_free(t);
}

/* ---- K in the TPM (docs/tre-tpm.md, "K in the TPM") --------------------------------------- */

/* A package whose content is `text` (any JSON the SHO might write), sealed and signed. */
static char *sho_package_text(mcim_jose_key_t *sho, const mcim_jose_key_t *ka_pub,
                              const char *txn, const char *text)
{
  char *pkg = NULL;
  pkg = package_seal_text(sho, "sho-a", DEVICE, txn, ka_pub, text);
  return pkg;
}

/* The MCIM content with K wrapped for the slot key `slot` a procedure's quote offered
 * (mcim_tre_wrap_k_slot, what the SHO sends), or, with `storage`, for that key as the primary's
 * template (mcim_tre_wrap_k: what SHOs sent before every TPM device was enrolled). */
static char *k_tpm_content(const json_t *slot, EVP_PKEY *storage, const uint8_t k[16],
                           const uint8_t opc[16])
{
  char oh[33];
  json_t *k_tpm = NULL;
  mcim_hex_encode(opc, 16, oh);
  assert_int_equal(storage ? mcim_tre_wrap_k(storage, k, &k_tpm)
                           : mcim_tre_wrap_k_slot(slot, k, &k_tpm),
                   MCIM_OK);
  json_t *c = json_pack("{s:s, s:s, s:o, s:s, s:s}", "sho", "sho-a", "imsi", "001020000000007",
                        "k_tpm", k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  json_decref(c);
  return text;
}

/* The TRE's quote of `txn`: *ka the procedure's key-agreement key (what the SHO seals to),
 * *slot (json_decref) the slot key certified by the AK (what the SHO wraps K to). */
static void quote_offer(mcim_tre_t *tre, const char *txn, mcim_jose_key_t **ka, json_t **slot)
{
  char *jws = NULL, *jwk = NULL;
  json_t *offer = NULL;
  assert_int_equal(tre->ops->quote(tre->ctx, "pva", txn, "n0nce", 300, &jws), MCIM_OK);
  assert_int_equal(mcim_jws_peek_claim(jws, "ka_jwk", &offer), MCIM_OK);
  assert_int_equal(mcim_jws_peek_claim(jws, "tpm_slot", slot), MCIM_OK);
  jwk = json_dumps(offer, JSON_COMPACT);
  assert_non_null(jwk);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), ka), MCIM_OK);
  json_decref(offer);
  free(jwk);
  free(jws);
}

static void k_hex_absent(const char *what, const char *text, const uint8_t k[16])
{
  char kh[33], ku[33];
  mcim_hex_encode(k, 16, kh);
  for (int i = 0; i < 33; i++)
    ku[i] = (char)((kh[i] >= 'a' && kh[i] <= 'f') ? kh[i] - 32 : kh[i]);
  if (strstr(text, kh) || strstr(text, ku) || memmem(text, strlen(text), k, 16))
    fail_msg("%s holds K", what);
}

/* The SHO's side (the storage key from the KA certificate's extension, K wrapped to it) and
 * the TRE's (imported at stage, used for AKA through TPM2_EncryptDecrypt2): the MCIM
 * authenticates, the state keeps the TPM's wrapping and never K; a blob for another TPM, an
 * altered one, or K both ways is refused; the software TRE refuses K wrapped for a TPM. */
/* The PCID credential's K in the TPM (docs/tre-tpm.md, "The PCID credential's K"): the
 * fixture's credential came as k_tpm, wrapped to the PCID's slot key enrolment made; the TRE
 * keeps the TPM's wrapping only and runs the PCID's AKA through the TPM. K in clear, K wrapped
 * to the storage primary, k and k_tpm together, k_tpm to a software TRE or to a TPM TRE never
 * enrolled: each refused, with its cause. */
static void test_pcid_k_in_tpm(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char kh[33], oh[33], text[1024], *jwe = NULL, *jwk = NULL, *kt = NULL;
  json_t *doc = state_read(f), *k_tpm = NULL;
  mcim_jose_key_t *storage_jose = NULL;
  EVP_PKEY *storage = NULL;
  int64_t exp = mcim_now() + 3600;

  /* the document: the TPM's wrapping under the PCID's slot key, no K */
  json_t *pcid = json_object_get(doc, "pcid"), *rec = json_object_get(doc, "pcid_slot");
  assert_non_null(rec);
  assert_null(json_object_get(pcid, "k"));
  json_t *kt_doc = json_object_get(pcid, "k_tpm");
  assert_non_null(kt_doc);
  assert_non_null(json_object_get(kt_doc, "tpm_private"));
  assert_int_equal(json_integer_value(json_object_get(kt_doc, "tpm_handle")),
                   json_integer_value(json_object_get(rec, "tpm_handle")));
  mcim_hex_encode(f->pcid_k, 16, kh);
  mcim_hex_encode(f->pcid_opc, 16, oh);
  char *dump = json_dumps(doc, JSON_COMPACT);
  assert_null(strstr(dump, kh)); /* K in no form the agent could read */
  free(dump);
  json_decref(doc);
  /* E_K in the TPM: the network's vector verifies */
  aka_once(tre, MCIM_TRE_PCID, f->pcid_k, f->pcid_opc, 32);
  /* the same credential delivered again (a retried manufacture): its SQN state stays */
  jwe = tre_pcid_jwe_tpm(f->dir, DEVICE, PCID1, f->ka_pub, f->pcid_k, f->pcid_opc, exp);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  aka_once(tre, MCIM_TRE_PCID, f->pcid_k, f->pcid_opc, 64);

  /* K in clear: refused, whatever else */
  jwe = pcid_jwe(f->ka_pub, f->pcid_k, f->pcid_opc);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_FORBIDDEN);
  assert_true(
      log_has("PCID credential k: K in clear, and this TRE takes K into its TPM only", NULL));
  free(jwe);
  /* K wrapped to the storage primary (which TPM2_Rewrap to no parent would open): the TPM
   * refuses it under the PCID's slot key */
  assert_int_equal(mcim_tre_tpm_storage_jwk(tre, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &storage_jose), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(storage_jose, &storage), MCIM_OK);
  assert_int_equal(mcim_tre_wrap_k(storage, f->pcid_k, &k_tpm), MCIM_OK);
  kt = json_dumps(k_tpm, JSON_COMPACT);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k_tpm\":%s,\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}", PCID1,
           kt, oh, (long long)exp);
  assert_int_equal(mcim_jwe_encrypt(f->ka_pub, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_KEY_INVALID);
  assert_true(log_has("does not import under the PCID's slot key", "integrity check failed"));
  free(jwe);
  /* k and k_tpm together */
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"k_tpm\":%s,\"opc\":\"%s\",\"amf\":\"8000\","
           "\"expires\":%lld}",
           PCID1, kh, kt, oh, (long long)exp);
  assert_int_equal(mcim_jwe_encrypt(f->ka_pub, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_INVALID_ARGUMENT);
  free(jwe);
  /* none of these changed the credential */
  aka_once(tre, MCIM_TRE_PCID, f->pcid_k, f->pcid_opc, 96);

  /* a software TRE has no TPM: the credential's k_tpm is refused */
  char soft_dir[64];
  mcim_tre_t *soft = NULL;
  mcim_jose_key_t *soft_ka = NULL;
  char *soft_jwk = NULL;
  snprintf(soft_dir, sizeof(soft_dir), "/tmp/mcim-tresoft-XXXXXX");
  assert_non_null(mkdtemp(soft_dir));
  assert_int_equal(
      mcim_tre_soft_create(soft_dir, DEVICE, MODEL, owner_jwk, ops_ca_pem, m2mes_ca_pem), MCIM_OK);
  assert_int_equal(mcim_tre_soft_open(soft_dir, &soft), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(soft, MCIM_TRE_CERT_KA, &soft_jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(soft_jwk, strlen(soft_jwk), &soft_ka), MCIM_OK);
  jwe = tre_pcid_jwe_tpm(f->dir, DEVICE, PCID1, soft_ka, f->pcid_k, f->pcid_opc, exp);
  assert_int_equal(soft->ops->pcid_install(soft->ctx, jwe, strlen(jwe)), MCIM_UNSUPPORTED);
  assert_true(log_has("PCID credential k_tpm: K wrapped for a TPM, and this TRE has none", NULL));
  free(jwe);
  /* ... and still takes K in clear, as before */
  jwe = pcid_jwe(soft_ka, f->pcid_k, f->pcid_opc);
  assert_int_equal(soft->ops->pcid_install(soft->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  aka_once(soft, MCIM_TRE_PCID, f->pcid_k, f->pcid_opc, 32);
  mcim_tre_close(soft);
  mcim_jose_key_free(soft_ka);
  free(soft_jwk);
  rm_tree(soft_dir);

  json_decref(k_tpm);
  free(kt);
  free(jwk);
  EVP_PKEY_free(storage);
  mcim_jose_key_free(storage_jose);
}

/* A TPM TRE never enrolled has no PCID slot key: no PCID credential, in clear or wrapped. */
static void test_pcid_unenrolled(void **state)
{
  (void)state;
  char dir[64], *jwk = NULL, *jwe = NULL;
  mcim_tre_t *tre = NULL;
  mcim_jose_key_t *ka = NULL;
  json_t *k_tpm = NULL;
  uint8_t k[16] = {3}, opc[16] = {4};
  char oh[33], text[1024];
  snprintf(dir, sizeof(dir), "/tmp/mcim-tretpm-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(mcim_tre_tpm_create(dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(dir, mcim_swtpm_tcti(sw), &tre), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  jwe = pcid_jwe(ka, k, opc);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_FORBIDDEN);
  free(jwe);
  /* a blob to some slot key (another TRE's, say): nothing here to import it under */
  json_t *rec = tre_state_read(dir, DEVICE, false);
  assert_null(json_object_get(rec, "pcid_slot"));
  json_decref(rec);
  mcim_tpm_t *t = swtpm_open(sw);
  struct mcim_tpm_slot other;
  TPM2B_PUBLIC pub;
  char *p64 = NULL;
  TPM2B_NAME pname;
  assert_int_equal(mcim_tpm_primary_persist(t, &pname), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_create(t, &other), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_public(t, &other, &pub, NULL), MCIM_OK);
  assert_int_equal(mcim_tpm_public_encode(&pub, &p64), MCIM_OK);
  json_t *offer = json_pack("{s:s}", "public", p64);
  assert_int_equal(mcim_tre_wrap_k_slot(offer, k, &k_tpm), MCIM_OK);
  char *kt = json_dumps(k_tpm, JSON_COMPACT);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k_tpm\":%s,\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}", PCID1,
           kt, oh, (long long)(mcim_now() + 3600));
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_TPM_SLOT_KEY_MISSING);
  assert_true(log_has("no PCID slot key", NULL));
  assert_int_equal(mcim_tpm_slot_destroy(t, &other, NULL), MCIM_OK);
  mcim_tpm_free(t);
  free(jwe);
  free(kt);
  free(p64);
  json_decref(offer);
  json_decref(k_tpm);
  mcim_tre_close(tre);
  mcim_jose_key_free(ka);
  free(jwk);
  rm_tree(dir);
}

/* A renewed PCID credential's K in the TPM (docs/tre-tpm.md, "The PCID credential's K"): the
 * TRE-signed renewal request offers a slot key certified by the AK over its txn; the issuer's
 * check of it; the renewal's K wrapped to it imported there, the previous credential's slot key
 * evicted once the new one passed an AKA; K in clear, K wrapped to another key, a renewal whose
 * request offered nothing: refused. */
static char *pcid_package(const mcim_jose_key_t *ro, const mcim_jose_key_t *ka, const char *txn,
                          const char *k_member)
{
  char text[2048], *pkg = NULL;
  int64_t now = mcim_now();
  snprintf(text, sizeof(text),
           "{\"pcid\":\"001010000000002\",%s,\"opc\":\"000102030405060708090a0b0c0d0e0f\","
           "\"amf\":\"8000\",\"expires\":%lld}",
           k_member, (long long)(now + 7200));
  mcim_claims_t c = {.iss = "ro",
                     .sub = DEVICE,
                     .aud = DEVICE,
                     .typ = "mcim-pcid+jwt",
                     .txn = txn,
                     .iat = now,
                     .exp = now + 300};
  assert_int_equal(mcim_package_seal(ro, &c, ka, (const uint8_t *)text, strlen(text), &pkg),
                   MCIM_OK);
  return pkg;
}

/* member = "k_tpm":<k_tpm>, a package's K member for pcid_package; k_tpm released */
static void k_tpm_member(char *member, size_t len, json_t *k_tpm)
{
  char *kt = json_dumps(k_tpm, JSON_COMPACT);
  assert_non_null(kt);
  snprintf(member, len, "\"k_tpm\":%s", kt);
  free(kt);
  json_decref(k_tpm);
}

static void test_pcid_renewal_tpm(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  static const char r1[] = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
                    r2[] = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
  static const uint8_t opc[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  mcim_statement_t *stmt = NULL;
  char *jws = NULL, *jws2 = NULL, *jwk = NULL, member[1600], err[256], *pkg = NULL;
  json_t *k_tpm = NULL;
  uint8_t k[16];
  TPM2B_PUBLIC ak_pub;
  EVP_PKEY *ak = NULL, *ro_pkey = NULL, *storage = NULL;
  mcim_jose_key_t *ro = NULL, *storage_jose = NULL;
  assert_int_equal(mcim_random(k, 16), MCIM_OK);

  /* the request offers a slot key, the same at a repeated request of that renewal */
  json_t *extra = json_pack("{s:s}", "pcid", PCID1);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-renew+jwt", "ro", r1, extra, 300, &jws), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-renew+jwt", "ro", r1, extra, 300, &jws2),
                   MCIM_OK);
  json_decref(extra);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-renew+jwt", .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  json_t *offer = json_incref(json_object_get(stmt->payload, "tpm_slot"));
  assert_non_null(offer);
  mcim_statement_free(stmt);
  assert_int_equal(mcim_jws_verify(jws2, strlen(jws2), f->att_pub, &x, &stmt), MCIM_OK);
  assert_true(json_equal(offer, json_object_get(stmt->payload, "tpm_slot")));
  mcim_statement_free(stmt);

  /* the issuer's check, with the AK enrolment made */
  json_t *doc = state_read(f);
  const char *akp = json_string_value(
      json_object_get(json_object_get(json_object_get(doc, "keys"), "quote"), "tpm_public"));
  assert_int_equal(mcim_tpm_public_decode(akp, &ak_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak_pub, &ak), MCIM_OK);
  assert_non_null(json_object_get(doc, "pcid_offer"));
  json_decref(doc);
  assert_int_equal(mcim_tre_pcid_slot_check(ak, offer, r1, err, sizeof(err)), MCIM_OK);
  assert_int_equal(mcim_tre_pcid_slot_check(ak, NULL, r1, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_MISSING);
  assert_int_equal(mcim_tre_pcid_slot_check(ak, offer, r2, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_STALE);
  /* a renewal's offer is no procedure's, and a procedure's no renewal's */
  assert_int_equal(mcim_tre_slot_check(ak, offer, r1, err, sizeof(err)), MCIM_TPM_SLOT_KEY_STALE);
  json_t *forged = json_deep_copy(offer);
  char *a = strdup(json_string_value(json_object_get(forged, "attest")));
  a[10] = a[10] == 'A' ? 'B' : 'A';
  json_object_set_new(forged, "attest", json_string(a));
  assert_int_equal(mcim_tre_pcid_slot_check(ak, forged, r1, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  free(a);
  json_decref(forged);

  /* the RO's packages */
  assert_int_equal(mcim_pki_key_generate(&ro_pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(ro_pkey, &ro), MCIM_OK);
  char *ro_cert = cert_issue(ops_ca, "ro", MCIM_CERT_TLS, ro_pkey);
  char kh[33];
  mcim_hex_encode(k, 16, kh);
  /* K in clear: refused */
  snprintf(member, sizeof(member), "\"k\":\"%s\"", kh);
  pkg = pcid_package(ro, f->ka_pub, r1, member);
  assert_int_equal(tre->ops->pcid_renew(tre->ctx, pkg, strlen(pkg), ro_cert), MCIM_PACKAGE_INVALID);
  assert_true(log_has("PCID credential k: K in clear", NULL));
  free(pkg);
  /* K wrapped to the storage primary: refused by the TPM under the offered key */
  assert_int_equal(mcim_tre_tpm_storage_jwk(tre, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &storage_jose), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(storage_jose, &storage), MCIM_OK);
  assert_int_equal(mcim_tre_wrap_k(storage, k, &k_tpm), MCIM_OK);
  k_tpm_member(member, sizeof(member), k_tpm);
  pkg = pcid_package(ro, f->ka_pub, r1, member);
  assert_int_equal(tre->ops->pcid_renew(tre->ctx, pkg, strlen(pkg), ro_cert), MCIM_PACKAGE_INVALID);
  assert_true(log_has("does not import under the PCID's slot key", "integrity check failed"));
  free(pkg);
  /* K wrapped to the offer, in the package of another renewal, whose request offered nothing */
  assert_int_equal(mcim_tre_wrap_k_slot(offer, k, &k_tpm), MCIM_OK);
  k_tpm_member(member, sizeof(member), k_tpm);
  pkg = pcid_package(ro, f->ka_pub, r2, member);
  assert_int_equal(tre->ops->pcid_renew(tre->ctx, pkg, strlen(pkg), ro_cert), MCIM_PACKAGE_INVALID);
  assert_true(log_has("this renewal's request offered no slot key", NULL));
  free(pkg);
  /* the old credential still works, its slot key in place */
  aka_once(tre, MCIM_TRE_PCID, f->pcid_k, f->pcid_opc, 32);

  /* the renewal as the issuer makes it: installed under the offered key */
  pkg = pcid_package(ro, f->ka_pub, r1, member);
  assert_int_equal(tre->ops->pcid_renew(tre->ctx, pkg, strlen(pkg), ro_cert), MCIM_OK);
  free(pkg);
  doc = state_read(f);
  json_t *cur = json_object_get(json_object_get(doc, "pcid"), "k_tpm");
  assert_non_null(cur);
  assert_null(json_object_get(json_object_get(doc, "pcid"), "k"));
  assert_null(json_object_get(doc, "pcid_offer"));
  assert_non_null(json_object_get(json_object_get(doc, "pcid_prev"), "k_tpm"));
  char *dump = json_dumps(doc, JSON_COMPACT);
  assert_null(strstr(dump, kh));
  free(dump);
  json_decref(doc);
  /* the previous credential works until the new one passes an AKA; then its key is evicted */
  aka_once(tre, MCIM_TRE_PCID_PREV, f->pcid_k, f->pcid_opc, 64);
  aka_once(tre, MCIM_TRE_PCID, k, opc, 32);
  assert_true(log_has("previous PCID credential's slot key evicted", NULL));
  doc = state_read(f);
  assert_null(json_object_get(doc, "pcid_prev"));
  assert_null(json_object_get(doc, "pcid_slot")); /* enrolment's key: gone with it */
  json_decref(doc);
  aka_once(tre, MCIM_TRE_PCID, k, opc, 64);

  json_decref(offer);
  free(ro_cert);
  free(jws);
  free(jws2);
  free(jwk);
  EVP_PKEY_free(ak);
  EVP_PKEY_free(ro_pkey);
  EVP_PKEY_free(storage);
  mcim_jose_key_free(ro);
  mcim_jose_key_free(storage_jose);
}

static void test_k_in_tpm(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char *jwk = NULL, slot[64];
  mcim_jose_key_t *storage_jose = NULL;
  EVP_PKEY *storage = NULL, *from_cert = NULL, *ka = NULL, *sho_pkey = NULL, *other = NULL;
  mcim_jose_key_t *sho = NULL;
  X509 *x = NULL;
  uint8_t k[16], opc[16];

  /* the factory's storage key is the TPM's persistent primary, public only */
  assert_int_equal(mcim_tre_tpm_storage_jwk(tre, &jwk), MCIM_OK);
  assert_null(strstr(jwk, "\"d\""));
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &storage_jose), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(storage_jose, &storage), MCIM_OK);
  mcim_tpm_t *t = swtpm_open(sw);
  TPM2B_NAME name;
  const TPM2B_PUBLIC *ppub = NULL;
  assert_int_equal(mcim_tpm_primary_persist(t, &name), MCIM_OK);
  assert_int_equal(mcim_tpm_primary(t, NULL, &ppub), MCIM_OK);
  uint8_t px[32], py[32];
  point_of(storage, px, py);
  assert_memory_equal(px, ppub->publicArea.unique.ecc.x.buffer, 32);
  assert_memory_equal(py, ppub->publicArea.unique.ecc.y.buffer, 32);
  mcim_tpm_free(t);

  /* the M2MES certifies it in the KA certificate; the SHO reads it back from there */
  assert_int_equal(mcim_jose_key_public_pkey(f->ka_pub, &ka), MCIM_OK);
  mcim_cert_request_t req = {.name = DEVICE, .usage = MCIM_CERT_TRE_KEY_AGREEMENT, .key = ka,
                             .days = 30, .tpm_storage = storage};
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(x, m2mes_ca->cert, MCIM_CERT_TRE_KEY_AGREEMENT, DEVICE, 0),
                   MCIM_OK);
  assert_int_equal(mcim_pki_cert_tpm_storage_key(x, &from_cert), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(from_cert, storage), 1);
  X509_free(x);
  x = NULL;
  /* none in a certificate without it; never on another usage */
  X509 *plain = NULL;
  assert_int_equal(mcim_pki_cert_from_pem(f->ka_pem, strlen(f->ka_pem), &plain), MCIM_OK);
  EVP_PKEY *none = NULL;
  assert_int_equal(mcim_pki_cert_tpm_storage_key(plain, &none), MCIM_NOT_FOUND);
  assert_null(none);
  X509_free(plain);
  req.usage = MCIM_CERT_TRE_ATTESTATION;
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_INVALID_ARGUMENT);

  /* the package: staged (TPM2_Import), installed, and its MCIM authenticates with E_K in the
   * TPM */
  assert_int_equal(mcim_pki_key_generate(&sho_pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(sho_pkey, &sho), MCIM_OK);
  char *sho_cert = cert_issue(ops_ca, "sho-a", MCIM_CERT_TLS, sho_pkey);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc, 16), MCIM_OK);
  mcim_jose_key_t *txn_ka = NULL;
  json_t *slot_offer = NULL;
  quote_offer(tre, TXN_A, &txn_ka, &slot_offer);
  char *text = k_tpm_content(slot_offer, NULL, k, opc);
  k_hex_absent("the content the SHO seals", text, k);
  char *pkg = sho_package_text(sho, txn_ka, TXN_A, text);
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert), MCIM_OK);
  print_message("stage with K wrapped (ECDH_ZGen, TPM2_Import): %.2f ms\n", ms_since(t0));
  assert_int_equal(tre->ops->install(tre->ctx, TXN_A, slot), MCIM_OK);
  t0 = mcim_monotonic_ns();
  aka_once(tre, "sho-a", k, opc, 64);
  print_message("AKA with K in the TPM (load, two TPM2_EncryptDecrypt2, commit): %.2f ms\n",
                ms_since(t0));
  aka_once(tre, "sho-a", k, opc, 96);
  /* a second handle (another process's view) authenticates with it too */
  mcim_tre_t *again = NULL;
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &again), MCIM_OK);
  aka_once(again, "sho-a", k, opc, 128);
  mcim_tre_close(again);

  /* the state: the slot keeps the TPM's wrapping of K, no "k", and K appears nowhere */
  json_t *doc = state_read(f);
  json_t *s0 = json_array_get(json_object_get(doc, "slots"), 0);
  assert_string_equal(json_string_value(json_object_get(s0, "slot")), "sho-a");
  assert_null(json_object_get(s0, "k"));
  json_t *kt = json_object_get(s0, "k_tpm");
  /* the TPM's wrapping of K under the slot's own storage key, and that key's handle, name
   * and authValue (test_tre_tpm_slots) */
  assert_int_equal(json_object_size(kt), 5);
  assert_true(json_is_integer(json_object_get(kt, "tpm_handle")));
  struct mcim_tpm_blob blob;
  assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(kt, "tpm_public")),
                                        json_string_value(json_object_get(kt, "tpm_private")),
                                        &blob),
                   MCIM_OK);
  assert_int_equal(blob.pub.publicArea.type, TPM2_ALG_SYMCIPHER);
  assert_int_equal(blob.pub.publicArea.objectAttributes, MCIM_TPM_AES_ATTRS);
  assert_null(memmem(blob.priv.buffer, blob.priv.size, k, 16));
  char *dump = json_dumps(doc, JSON_COMPACT);
  k_hex_absent("the TRE's state", dump, k);
  free(dump);
  json_decref(doc);

  /* refused, each PACKAGE_INVALID with the state unchanged (its procedure's offer left to
   * the procedure): K wrapped to this TPM's storage primary (what SHOs sent a TPM device
   * certified before enrolment, which TPM2_Rewrap to no parent would open: the TPM refuses it
   * under the procedure's slot key), K wrapped to another key, a blob altered, K both in clear
   * and wrapped, k_tpm not an object, and K in clear (a TPM TRE takes K into its TPM only,
   * whatever its certificate says) */
  static const char *const txns[] = {
      "11111111111111111111111111111111", "22222222222222222222222222222222",
      "33333333333333333333333333333333", "44444444444444444444444444444444",
      "55555555555555555555555555555555", "77777777777777777777777777777777"};
  enum { NEG = sizeof(txns) / sizeof(txns[0]) };
  assert_int_equal(mcim_pki_key_generate(&other), MCIM_OK);
  char *texts[NEG];
  mcim_jose_key_t *kas[NEG];
  for (int i = 0; i < NEG; i++) {
    json_t *offer = NULL;
    quote_offer(tre, txns[i], &kas[i], &offer);
    if (i == 2) { /* K wrapped to the procedure's slot key, one byte of it altered */
      char *good = k_tpm_content(offer, NULL, k, opc);
      json_t *c = json_loads(good, 0, NULL);
      json_t *dupj = json_object_get(c, "k_tpm");
      char *altered = strdup(json_string_value(json_object_get(dupj, "duplicate")));
      altered[strlen(altered) / 2] = altered[strlen(altered) / 2] == 'A' ? 'B' : 'A';
      json_object_set_new(dupj, "duplicate", json_string(altered));
      free(altered);
      texts[i] = json_dumps(c, JSON_COMPACT);
      json_decref(c);
      free(good);
    } else if (i == 3 || i == 4) {
      json_t *c = json_loads(text, 0, NULL);
      json_object_set_new(c, "k", json_string("000102030405060708090a0b0c0d0e0f"));
      if (i == 4)
        json_object_set_new(c, "k_tpm", json_string("AAAA"));
      texts[i] = json_dumps(c, JSON_COMPACT);
      if (i == 4) {
        free(texts[i]);
        json_object_del(c, "k");
        texts[i] = json_dumps(c, JSON_COMPACT);
      }
      json_decref(c);
    } else if (i == 5) {
      texts[i] = NULL; /* K in clear: sho_package below */
    } else {
      texts[i] = k_tpm_content(NULL, i == 0 ? from_cert : other, k, opc);
    }
    json_decref(offer);
  }
  json_t *before = state_read(f);
  char *p = NULL;
  static const char *const why[] = {"k_tpm does not import under this procedure's slot key",
                                    "k_tpm does not import under this procedure's slot key",
                                    "k_tpm does not import under this procedure's slot key",
                                    "content has both k and k_tpm",
                                    "k_tpm does not import under this procedure's slot key",
                                    "K in clear, and this TRE takes K into its TPM only"};
  for (int i = 0; i < NEG; i++) {
    p = texts[i] ? sho_package_text(sho, kas[i], txns[i], texts[i])
                 : sho_package(sho, kas[i], txns[i], k, opc);
    assert_int_equal(tre->ops->stage(tre->ctx, txns[i], p, strlen(p), sho_cert),
                     MCIM_PACKAGE_INVALID);
    if (!log_has(txns[i], NULL) || !log_has(why[i], NULL))
      fail_msg("%s: no log line \"%s\"", txns[i], why[i]);
    free(p);
    free(texts[i]);
  }
  /* the TPM itself refuses K wrapped to the storage primary under the slot key */
  assert_true(log_has("does not import under the procedure's slot key", "integrity check failed"));
  json_t *after = state_read(f);
  assert_true(json_equal(before, after));
  json_decref(before);
  json_decref(after);
  for (int i = 0; i < NEG; i++) { /* abandoned: their offered slot keys go */
    assert_int_equal(tre->ops->unstage(tre->ctx, txns[i]), MCIM_NOT_FOUND);
    mcim_jose_key_free(kas[i]);
  }

  /* its KA certificate may certify its own storage key only; K wrapped still goes in */
  char *ka_own = NULL, *ka_other = NULL;
  req.usage = MCIM_CERT_TRE_KEY_AGREEMENT;
  req.tpm_storage = other;
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &ka_other), MCIM_OK);
  X509_free(x);
  req.tpm_storage = storage;
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &ka_own), MCIM_OK);
  X509_free(x);
  x = NULL;
  assert_int_equal(mcim_tre_soft_set_certs(tre, f->att_pem, ka_other), MCIM_KEY_INVALID);
  assert_true(log_has("certifies a TPM storage key that is not this TRE's", NULL));
  assert_int_equal(mcim_tre_soft_set_certs(tre, f->att_pem, ka_own), MCIM_OK);
  mcim_jose_key_t *ka6 = NULL;
  json_t *offer6 = NULL;
  quote_offer(tre, "66666666666666666666666666666666", &ka6, &offer6);
  char *text2 = k_tpm_content(offer6, NULL, k, opc);
  p = sho_package_text(sho, ka6, "66666666666666666666666666666666", text2);
  assert_int_equal(tre->ops->stage(tre->ctx, "66666666666666666666666666666666", p, strlen(p),
                                   sho_cert),
                   MCIM_OK);
  free(p);
  free(text2);
  json_decref(offer6);
  mcim_jose_key_free(ka6);

  /* the software TRE has no TPM: K wrapped for one is refused */
  char soft_dir[64], *soft_ka_jwk = NULL;
  mcim_tre_t *soft = NULL;
  mcim_jose_key_t *soft_ka = NULL;
  snprintf(soft_dir, sizeof(soft_dir), "/tmp/mcim-tresoft-XXXXXX");
  assert_non_null(mkdtemp(soft_dir));
  assert_int_equal(mcim_tre_soft_create(soft_dir, DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_soft_open(soft_dir, &soft), MCIM_OK);
  assert_int_equal(mcim_tre_tpm_storage_jwk(soft, &soft_ka_jwk), MCIM_NOT_FOUND);
  assert_int_equal(mcim_tre_soft_public_jwk(soft, MCIM_TRE_CERT_KA, &soft_ka_jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(soft_ka_jwk, strlen(soft_ka_jwk), &soft_ka), MCIM_OK);
  p = sho_package_text(sho, soft_ka, TXN_A, text);
  assert_int_equal(soft->ops->stage(soft->ctx, TXN_A, p, strlen(p), sho_cert),
                   MCIM_PACKAGE_INVALID);
  assert_true(log_has("K wrapped for a TPM, and this TRE has none", NULL));
  free(p);
  /* nor does it take a KA certificate that certifies a storage key */
  EVP_PKEY *soft_ka_pkey = NULL;
  assert_int_equal(mcim_jose_key_public_pkey(soft_ka, &soft_ka_pkey), MCIM_OK);
  req.key = soft_ka_pkey;
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
  char *soft_ka_pem = NULL;
  assert_int_equal(mcim_pki_cert_to_pem(x, &soft_ka_pem), MCIM_OK);
  X509_free(x);
  char *soft_att_jwk = NULL;
  mcim_jose_key_t *soft_att = NULL;
  EVP_PKEY *soft_att_pkey = NULL;
  assert_int_equal(mcim_tre_soft_public_jwk(soft, MCIM_TRE_CERT_ATTESTATION, &soft_att_jwk),
                   MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(soft_att_jwk, strlen(soft_att_jwk), &soft_att), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(soft_att, &soft_att_pkey), MCIM_OK);
  char *soft_att_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, soft_att_pkey);
  assert_int_equal(mcim_tre_soft_set_certs(soft, soft_att_pem, soft_ka_pem), MCIM_KEY_INVALID);
  free(soft_att_pem);
  free(soft_att_jwk);
  free(soft_ka_pem);
  EVP_PKEY_free(soft_att_pkey);
  EVP_PKEY_free(soft_ka_pkey);
  mcim_jose_key_free(soft_att);
  mcim_jose_key_free(soft_ka);
  free(soft_ka_jwk);
  mcim_tre_close(soft);
  rm_tree(soft_dir);

  free(ka_own);
  free(ka_other);
  free(text);
  free(pkg);
  json_decref(slot_offer);
  mcim_jose_key_free(txn_ka);
  free(sho_cert);
  free(jwk);
  mcim_jose_key_free(sho);
  mcim_jose_key_free(storage_jose);
  EVP_PKEY_free(other);
  EVP_PKEY_free(sho_pkey);
  EVP_PKEY_free(ka);
  EVP_PKEY_free(from_cert);
  EVP_PKEY_free(storage);
}

int main(void)
{
  /* ESAPI prints each refusal this test provokes on purpose; each is printed with its cause
   * instead. TSS2_LOG=all+warning shows them. */
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keys_against_software),
      cmocka_unit_test(test_keys_not_exportable),
      cmocka_unit_test_setup_teardown(test_tre_end_to_end, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_wrong_backend, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_k_in_tpm, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pcid_k_in_tpm, fx_setup, fx_teardown),
      cmocka_unit_test(test_pcid_unenrolled),
      cmocka_unit_test_setup_teardown(test_pcid_renewal_tpm, fx_setup, fx_teardown),
      cmocka_unit_test(test_tpm_gone_and_back),
      cmocka_unit_test(test_primary_not_recorded),
      cmocka_unit_test_setup_teardown(test_stray_objects, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
