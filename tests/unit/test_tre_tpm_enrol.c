/* Enrolment of a TPM (src/tre/tpm/tpm_enrol.c; docs/tre-tpm.md, "Enrolment") against real
 * TPMs: two swtpms manufactured by swtpm_setup with EK certificates from a "vendor" CA made
 * here (the lab's way, mcim_swtpm_manufacture). The M2MES's side (OpenSSL) is checked against
 * the TPM's own commands: the credential made in software is activated by the TPM, and only
 * for the right attestation key in the right TPM; what TPM2_Certify signs is what the host
 * check takes. And the refusals, each with its cause: an EK certificate of another CA, a
 * credential for another key or another TPM, a secret that is not the one sent, an
 * attestation key that is not restricted or could leave its TPM, a certification of another
 * key or of a key that could leave. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/pva/pva.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_quote.h"
#include "swtpm_fixture.h"

static char dir_a[64], dir_b[64], vendor_dir[64];
static char vendor_cert[128], vendor_key[128], other_cert[128];
static mcim_swtpm_t *sw_a, *sw_b;

/* A TPM as its maker ships it: swtpm_setup's EK and EK certificate, then started. */
static int manufactured(char *tmpl, mcim_swtpm_t **sw)
{
  char detail[512];
  if (!mkdtemp(tmpl)) {
    tmpl[0] = '\0';
    return -1;
  }
  mcim_cause_t rc =
      mcim_swtpm_manufacture(tmpl, vendor_cert, vendor_key, vendor_dir, detail, sizeof(detail));
  if (rc == MCIM_OK)
    rc = mcim_swtpm_start(tmpl, MCIM_SWTPM_TIED, 20000, sw, detail, sizeof(detail));
  if (rc != MCIM_OK)
    print_error("TPM manufacture in %s: %s: %s\n", tmpl, mcim_cause_name(rc), detail);
  return rc == MCIM_OK ? 0 : -1;
}

static int group_setup(void **state)
{
  mcim_pki_ca_t *vendor = NULL, *other = NULL;
  (void)state;
  if (test_log_open(false) != 0)
    return -1;
  snprintf(vendor_dir, sizeof(vendor_dir), "/tmp/mcim-tpmvendor-XXXXXX");
  if (!mkdtemp(vendor_dir))
    return -1;
  snprintf(vendor_cert, sizeof(vendor_cert), "%s/ca.crt", vendor_dir);
  snprintf(vendor_key, sizeof(vendor_key), "%s/ca.key", vendor_dir);
  snprintf(other_cert, sizeof(other_cert), "%s/other.crt", vendor_dir);
  char other_key[128];
  snprintf(other_key, sizeof(other_key), "%s/other.key", vendor_dir);
  int ok = mcim_pki_ca_create("tpm-vendor-ca", 30, &vendor) == MCIM_OK &&
           mcim_pki_ca_write(vendor, vendor_cert, vendor_key) == MCIM_OK &&
           mcim_pki_ca_create("tpm-vendor-ca", 30, &other) == MCIM_OK &&
           mcim_pki_ca_write(other, other_cert, other_key) == MCIM_OK;
  mcim_pki_ca_free(vendor);
  mcim_pki_ca_free(other);
  if (!ok)
    return -1;
  snprintf(dir_a, sizeof(dir_a), "/tmp/mcim-tpmtest-XXXXXX");
  snprintf(dir_b, sizeof(dir_b), "/tmp/mcim-tpmtest-XXXXXX");
  return manufactured(dir_a, &sw_a) == 0 && manufactured(dir_b, &sw_b) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
  (void)state;
  mcim_swtpm_free(sw_a);
  mcim_swtpm_free(sw_b);
  rm_tree(dir_a);
  rm_tree(dir_b);
  rm_tree(vendor_dir);
  test_log_close();
  return 0;
}

static mcim_tpm_t *open_tpm(const mcim_swtpm_t *s)
{
  mcim_tpm_t *t = swtpm_open(s);
  assert_int_equal(mcim_tpm_primary_persist(t, &(TPM2B_NAME){0}), MCIM_OK);
  return t;
}

/* The TPM's EK, verified against `ca` as the M2MES does. */
static mcim_cause_t ek_of(mcim_tpm_t *t, const char *ca, EVP_PKEY **ek)
{
  uint8_t *der = NULL;
  size_t len = 0;
  char err[256] = "";
  assert_int_equal(mcim_tpm_ek_cert(t, &der, &len), MCIM_OK);
  mcim_cause_t rc = mcim_tpm_ek_verify(der, len, ca, ek, err, sizeof(err));
  if (rc != MCIM_OK)
    print_message("EK refused (expected in some tests): %s\n", err);
  free(der);
  return rc;
}

static void create(mcim_tpm_t *t, enum mcim_tpm_key_kind kind, struct mcim_tpm_blob *b)
{
  mcim_cause_t rc = mcim_tpm_key_create(t, kind, b);
  if (rc != MCIM_OK)
    print_error("create: %s\n", mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
}

/* MakeCredential on the host for `name` and `ek`, ActivateCredential in `t` with `ak`. */
static mcim_cause_t round_trip(mcim_tpm_t *t, EVP_PKEY *ek, const TPM2B_NAME *name,
                               const struct mcim_tpm_blob *ak_blob, uint8_t sent[32],
                               uint8_t back[64], size_t *back_len)
{
  TPM2B_ID_OBJECT blob;
  TPM2B_ENCRYPTED_SECRET enc;
  mcim_tpm_key_t *ak = NULL;
  assert_int_equal(RAND_bytes(sent, 32), 1);
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(mcim_tpm_make_credential(ek, name, sent, 32, &blob, &enc), MCIM_OK);
  uint64_t t1 = mcim_monotonic_ns();
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, ak_blob, &ak), MCIM_OK);
  *back_len = 64;
  uint64_t t2 = mcim_monotonic_ns();
  mcim_cause_t rc = mcim_tpm_activate_credential(t, ak, &blob, &enc, back, back_len);
  uint64_t t3 = mcim_monotonic_ns();
  if (rc == MCIM_OK)
    print_message("MakeCredential (host, OpenSSL) %.2f ms, ActivateCredential (TPM) %.2f ms\n",
                  (double)(t1 - t0) / 1e6, (double)(t3 - t2) / 1e6);
  if (rc != MCIM_OK)
    print_message("ActivateCredential refused (expected in some tests): %s\n", mcim_tpm_detail(t));
  mcim_tpm_key_free(ak);
  return rc;
}

/* The host's TPM2_MakeCredential against the TPM's TPM2_ActivateCredential: the secret comes
 * back exactly, for the attestation key it was made for, in the TPM of the EK it was made
 * for; the AK passes the M2MES's attribute check, the unrestricted signing key does not. */
static void test_make_activate_round_trip(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm(sw_a);
  struct mcim_tpm_blob ak = {0}, sign = {0};
  EVP_PKEY *ek = NULL;
  TPM2B_NAME name;
  uint8_t sent[32], back[64];
  size_t back_len = 0;
  char err[256] = "";

  create(t, MCIM_TPM_KEY_AK, &ak);
  create(t, MCIM_TPM_KEY_SIGN, &sign);
  assert_int_equal(ek_of(t, vendor_cert, &ek), MCIM_OK);
  assert_int_equal(mcim_tpm_ak_check(&ak.pub, err, sizeof(err)), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&ak.pub, &name), MCIM_OK);
  for (int i = 0; i < 3; i++) { /* fresh seeds each time */
    assert_int_equal(round_trip(t, ek, &name, &ak, sent, back, &back_len), MCIM_OK);
    assert_int_equal(back_len, 32);
    assert_memory_equal(back, sent, 32);
  }
  /* the same public area through its base64url form, as the M2MES receives it */
  char *b64 = NULL;
  TPM2B_PUBLIC again;
  assert_int_equal(mcim_tpm_public_encode(&ak.pub, &b64), MCIM_OK);
  assert_int_equal(mcim_tpm_public_decode(b64, &again), MCIM_OK);
  assert_memory_equal(&again, &ak.pub, sizeof(again));
  free(b64);

  /* an AK that is not restricted (the JWS signing key) is refused before any credential */
  assert_int_equal(mcim_tpm_ak_check(&sign.pub, err, sizeof(err)), MCIM_TPM_KEY_ATTRIBUTES);
  print_message("signing key as AK: %s\n", err);
  /* ... and one that could leave its TPM (fixedTPM, fixedParent clear) */
  TPM2B_PUBLIC loose = ak.pub;
  loose.publicArea.objectAttributes &= ~(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT);
  assert_int_equal(mcim_tpm_ak_check(&loose, err, sizeof(err)), MCIM_TPM_KEY_ATTRIBUTES);
  loose = ak.pub;
  loose.publicArea.objectAttributes &= ~TPMA_OBJECT_SENSITIVEDATAORIGIN;
  assert_int_equal(mcim_tpm_ak_check(&loose, err, sizeof(err)), MCIM_TPM_KEY_ATTRIBUTES);
  loose = ak.pub;
  loose.publicArea.objectAttributes |= TPMA_OBJECT_DECRYPT;
  assert_int_equal(mcim_tpm_ak_check(&loose, err, sizeof(err)), MCIM_TPM_KEY_ATTRIBUTES);

  EVP_PKEY_free(ek);
  mcim_tpm_free(t);
}

/* The same against the TPM's ECC EK (NIST P-384, swtpm_setup's, high-range template: SHA-384,
 * AES-256-CFB, userWithAuth): MakeCredential by ECDH with an ephemeral key and KDFe, the EK
 * certificate from its own NV index verified as the RSA one; a credential for the RSA EK
 * does not activate with the ECC one. */
static void test_ecc_ek_round_trip(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm(sw_a);
  struct mcim_tpm_blob ak = {0};
  mcim_tpm_key_t *akk = NULL;
  EVP_PKEY *ek = NULL, *rsa_ek = NULL;
  TPM2B_NAME name;
  TPM2B_ID_OBJECT blob;
  TPM2B_ENCRYPTED_SECRET enc;
  uint8_t *der = NULL, sent[48], back[64];
  size_t len = 0, back_len = sizeof(back);
  char err[256] = "";

  create(t, MCIM_TPM_KEY_AK, &ak);
  assert_int_equal(mcim_tpm_public_name(&ak.pub, &name), MCIM_OK);
  assert_int_equal(mcim_tpm_ek_cert_at(t, MCIM_TPM_EK_P384_CERT_NV, &der, &len), MCIM_OK);
  assert_int_equal(mcim_tpm_ek_verify(der, len, vendor_cert, &ek, err, sizeof(err)), MCIM_OK);
  free(der);
  assert_int_equal(EVP_PKEY_get_base_id(ek), EVP_PKEY_EC);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak, &akk), MCIM_OK);
  for (size_t n = 32; n <= 48; n += 16) { /* up to the size of SHA-384 */
    assert_int_equal(RAND_bytes(sent, (int)n), 1);
    uint64_t t0 = mcim_monotonic_ns();
    assert_int_equal(mcim_tpm_make_credential(ek, &name, sent, n, &blob, &enc), MCIM_OK);
    uint64_t t1 = mcim_monotonic_ns();
    back_len = sizeof(back);
    mcim_cause_t rc = mcim_tpm_activate_credential_ek(t, MCIM_TPM_EK_P384_HANDLE, akk, &blob, &enc,
                                                      back, &back_len);
    if (rc != MCIM_OK)
      print_error("ECC EK: %s\n", mcim_tpm_detail(t));
    assert_int_equal(rc, MCIM_OK);
    print_message("ECC P-384 EK: MakeCredential %.2f ms, ActivateCredential %.2f ms\n",
                  (double)(t1 - t0) / 1e6, (double)(mcim_monotonic_ns() - t1) / 1e6);
    assert_int_equal(back_len, n);
    assert_memory_equal(back, sent, n);
  }
  /* more than SHA-384's size is not a credential */
  assert_int_equal(mcim_tpm_make_credential(ek, &name, sent, 49, &blob, &enc),
                   MCIM_INVALID_ARGUMENT);
  /* made for the RSA EK, given to the ECC one */
  assert_int_equal(ek_of(t, vendor_cert, &rsa_ek), MCIM_OK);
  assert_int_equal(mcim_tpm_make_credential(rsa_ek, &name, sent, 32, &blob, &enc), MCIM_OK);
  back_len = sizeof(back);
  assert_int_not_equal(mcim_tpm_activate_credential_ek(t, MCIM_TPM_EK_P384_HANDLE, akk, &blob, &enc,
                                                       back, &back_len),
                       MCIM_OK);
  mcim_tpm_key_free(akk);
  EVP_PKEY_free(ek);
  EVP_PKEY_free(rsa_ek);
  mcim_tpm_free(t);
}

/* A credential the TPM must not activate: made for another key's name (the device sent the
 * public area of a software key, or of an unrestricted one, and loads its real AK), or
 * encrypted to another TPM's EK (the device's software shows the EK certificate of a genuine
 * TPM it does not run on). And a secret that differs from the one sent is what the M2MES
 * refuses: the comparison, constant time, tells them apart. */
static void test_activation_refused(void **state)
{
  (void)state;
  mcim_tpm_t *ta = open_tpm(sw_a);
  struct mcim_tpm_blob ak = {0}, ak2 = {0};
  EVP_PKEY *ek_a = NULL, *ek_b = NULL;
  TPM2B_NAME name, other_name;
  uint8_t sent[32], back[64];
  size_t back_len = 0;

  create(ta, MCIM_TPM_KEY_AK, &ak);
  create(ta, MCIM_TPM_KEY_AK, &ak2);
  assert_int_equal(ek_of(ta, vendor_cert, &ek_a), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&ak.pub, &name), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&ak2.pub, &other_name), MCIM_OK);

  /* made for ak2's name, activated with ak loaded: the TPM's integrity check fails */
  assert_int_not_equal(round_trip(ta, ek_a, &other_name, &ak, sent, back, &back_len), MCIM_OK);
  assert_non_null(strstr(mcim_tpm_detail(ta), "TPM2_ActivateCredential"));

  /* encrypted to TPM B's EK, activated in TPM A */
  mcim_tpm_t *tb = open_tpm(sw_b);
  assert_int_equal(ek_of(tb, vendor_cert, &ek_b), MCIM_OK);
  mcim_tpm_free(tb);
  assert_int_not_equal(round_trip(ta, ek_b, &name, &ak, sent, back, &back_len), MCIM_OK);

  /* a wrong secret: the right round trip, then one bit of the answer changed */
  assert_int_equal(round_trip(ta, ek_a, &name, &ak, sent, back, &back_len), MCIM_OK);
  assert_true(mcim_ct_equal(back, sent, 32));
  back[7] ^= 0x10;
  assert_false(mcim_ct_equal(back, sent, 32));

  EVP_PKEY_free(ek_a);
  EVP_PKEY_free(ek_b);
  mcim_tpm_free(ta);
}

/* The EK certificate is checked against the vendor CAs the M2MES trusts: another CA of the
 * same name, no CA file, or garbage are TPM_EK_UNTRUSTED. */
static void test_ek_untrusted(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm(sw_a);
  EVP_PKEY *ek = NULL;
  char err[256] = "";

  assert_int_equal(ek_of(t, other_cert, &ek), MCIM_TPM_EK_UNTRUSTED);
  assert_null(ek);
  assert_int_equal(ek_of(t, "/nonexistent/ca.crt", &ek), MCIM_TPM_EK_UNTRUSTED);
  assert_int_equal(ek_of(t, NULL, &ek), MCIM_TPM_EK_UNTRUSTED);
  static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
  assert_int_equal(mcim_tpm_ek_verify(junk, sizeof(junk), vendor_cert, &ek, err, sizeof(err)),
                   MCIM_TPM_EK_UNTRUSTED);
  /* the certificate with one byte of its signature changed */
  uint8_t *der = NULL;
  size_t len = 0;
  assert_int_equal(mcim_tpm_ek_cert(t, &der, &len), MCIM_OK);
  der[len - 3] ^= 0x01;
  assert_int_equal(mcim_tpm_ek_verify(der, len, vendor_cert, &ek, err, sizeof(err)),
                   MCIM_TPM_EK_UNTRUSTED);
  print_message("altered EK certificate: %s\n", err);
  free(der);
  mcim_tpm_free(t);
}

/* TPM2_Certify by the AK of the TRE's keys and of the storage primary, checked on the host;
 * a certification presented for another key, altered, or with other qualifying data is
 * TPM_CERTIFY_INVALID; a certified key that could leave the TPM (an imported AES key: not
 * fixedTPM) is TPM_KEY_ATTRIBUTES. */
static void test_certify(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm(sw_a);
  struct mcim_tpm_blob ak = {0}, sign = {0}, ecdh = {0};
  mcim_tpm_key_t *akk = NULL, *k = NULL;
  const TPM2B_PUBLIC *ppub = NULL;
  ESYS_TR primary = ESYS_TR_NONE;
  uint8_t *att = NULL, *sig = NULL, qual[32];
  size_t alen = 0, slen = 0;
  char err[256] = "";

  assert_int_equal(RAND_bytes(qual, sizeof(qual)), 1);
  create(t, MCIM_TPM_KEY_AK, &ak);
  create(t, MCIM_TPM_KEY_SIGN, &sign);
  create(t, MCIM_TPM_KEY_ECDH, &ecdh);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak, &akk), MCIM_OK);

  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &sign, &k), MCIM_OK);
  assert_int_equal(mcim_tpm_certify(t, akk, mcim_tpm_key_handle(k), qual, sizeof(qual), &att, &alen,
                                    &sig, &slen),
                   MCIM_OK);
  mcim_tpm_key_free(k);
  assert_int_equal(mcim_tpm_certify_check(&ak.pub, &sign.pub, qual, sizeof(qual), att, alen, sig,
                                          slen, err, sizeof(err)),
                   MCIM_OK);
  /* the same certification for the KA key's public area: names another key */
  assert_int_equal(mcim_tpm_certify_check(&ak.pub, &ecdh.pub, qual, sizeof(qual), att, alen, sig,
                                          slen, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  /* other qualifying data (a replayed certification) */
  assert_int_equal(
      mcim_tpm_certify_check(&ak.pub, &sign.pub, qual, 16, att, alen, sig, slen, err, sizeof(err)),
      MCIM_TPM_CERTIFY_INVALID);
  /* verified with another key than the AK (a certification by the signing key's TPM2_Sign
   * would be this) */
  assert_int_equal(mcim_tpm_certify_check(&sign.pub, &sign.pub, qual, sizeof(qual), att, alen, sig,
                                          slen, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  att[alen - 1] ^= 0x01;
  assert_int_equal(mcim_tpm_certify_check(&ak.pub, &sign.pub, qual, sizeof(qual), att, alen, sig,
                                          slen, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  free(att);
  free(sig);

  /* the storage primary (persistent) */
  assert_int_equal(mcim_tpm_primary(t, &primary, &ppub), MCIM_OK);
  assert_int_equal(mcim_tpm_certify(t, akk, primary, qual, sizeof(qual), &att, &alen, &sig, &slen),
                   MCIM_OK);
  assert_int_equal(mcim_tpm_certify_check(&ak.pub, ppub, qual, sizeof(qual), att, alen, sig, slen,
                                          err, sizeof(err)),
                   MCIM_OK);
  free(att);
  free(sig);

  /* an imported AES key: the TPM certifies it, the host refuses it (not fixedTPM) */
  uint8_t key[16];
  struct mcim_tpm_dup dup;
  struct mcim_tpm_blob aes = {0};
  mcim_tpm_aes_t *ak_aes = NULL;
  assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
  assert_int_equal(mcim_tpm_dup_aes128(ppub, key, MCIM_TPM_AES_ATTRS, &dup), MCIM_OK);
  OPENSSL_cleanse(key, sizeof(key));
  assert_int_equal(mcim_tpm_aes_import(t, &dup, &aes), MCIM_OK);
  assert_int_equal(mcim_tpm_aes_load(t, &aes, &ak_aes), MCIM_OK);
  assert_int_equal(mcim_tpm_certify(t, akk, mcim_tpm_aes_handle(ak_aes), qual, sizeof(qual), &att,
                                    &alen, &sig, &slen),
                   MCIM_OK);
  mcim_tpm_aes_free(ak_aes);
  assert_int_equal(mcim_tpm_certify_check(&ak.pub, &aes.pub, qual, sizeof(qual), att, alen, sig,
                                          slen, err, sizeof(err)),
                   MCIM_TPM_KEY_ATTRIBUTES);
  print_message("imported key: %s\n", err);
  free(att);
  free(sig);

  /* The TPM refuses to have the AK sign a digest it did not compute (a restricted key needs
   * a TPM2_Hash ticket, which the TPM gives only for data not starting with
   * TPM_GENERATED_VALUE): a forged TPMS_ATTEST cannot be signed. */
  TPM2B_DIGEST d = {.size = 32};
  const TPMT_SIG_SCHEME how = {.scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256};
  const TPMT_TK_HASHCHECK no_ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
  TPMT_SIGNATURE *forged = NULL;
  TSS2_RC r = Esys_Sign(mcim_tpm_esys(t), mcim_tpm_key_handle(akk), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                        ESYS_TR_NONE, &d, &how, &no_ticket, &forged);
  assert_int_not_equal(r, TSS2_RC_SUCCESS);
  assert_null(forged);
  print_message("TPM2_Sign of a digest with the AK: %s\n", Tss2_RC_Decode(r));
  mcim_tpm_key_free(akk);
  mcim_tpm_free(t);
}

static char *b64(const uint8_t *in, size_t len)
{
  char *s = malloc(mcim_b64url_len(len) + 1);
  assert_non_null(s);
  mcim_b64url_encode(in, len, s);
  return s;
}

/* The PVA's side of the restricted key: an attestation certificate that names the AK
 * (what the M2MES issues after enrolment) makes the PVA verify quotes with the AK and take
 * the certificate's model. The attack the restricted key closes: the agent hashes a
 * TPMS_ATTEST of its choosing and has the TPM sign it with the unrestricted JWS key
 * (TPM2_Sign): with the AK in the certificate, ATTEST_SIGNATURE; a certificate from before
 * enrolment (no AK, no model), or without the TPM mark, is TPM_ENROLMENT_REQUIRED whatever
 * the quote, the forgery included. */
static void test_pva_takes_the_ak(void **state)
{
  (void)state;
  static const char nonce[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  mcim_tpm_t *t = open_tpm(sw_a);
  struct mcim_tpm_blob ak = {0}, sign = {0};
  mcim_tpm_key_t *akk = NULL, *signk = NULL;
  uint8_t q[32], d[32], th[32], *att = NULL, *sig = NULL;
  size_t alen = 0, slen = 0;
  char line[256], err[256] = "", digest[65], model[64];
  json_t *log = NULL;

  create(t, MCIM_TPM_KEY_AK, &ak);
  create(t, MCIM_TPM_KEY_SIGN, &sign);
  assert_int_equal(mcim_hex_decode_str(nonce, q, sizeof(q)), MCIM_OK);
  memset(d, 0x5a, sizeof(d));
  assert_int_equal(mcim_attest_template_hash(d, "boot", th), MCIM_OK);
  assert_int_equal(mcim_attest_log_line(d, "boot", line, sizeof(line)), MCIM_OK);
  /* PCR 10 cannot be reset: its one line replays only from the value this TPM started with */
  uint8_t pcr[32], zero[32] = {0};
  assert_int_equal(mcim_tpm_pcr_read(t, MCIM_ATTEST_PCR, pcr), MCIM_OK);
  assert_memory_equal(pcr, zero, 32);
  assert_int_equal(mcim_tpm_pcr_extend(t, MCIM_ATTEST_PCR, th), MCIM_OK);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak, &akk), MCIM_OK);
  assert_int_equal(mcim_tpm_quote(t, akk, MCIM_ATTEST_PCR, q, sizeof(q), &att, &alen, &sig, &slen),
                   MCIM_OK);
  mcim_tpm_key_free(akk);

  /* the certificate the M2MES issues an enrolled device: the JWS key, the AK, the model */
  mcim_pki_ca_t *ca = NULL;
  EVP_PKEY *sign_pub = NULL, *ak_pub = NULL;
  X509 *cert = NULL;
  char *pem = NULL;
  mcim_jose_key_t *jws_key = NULL;
  assert_int_equal(mcim_pki_ca_create("m2mes-ca", 1, &ca), MCIM_OK);
  assert_int_equal(mcim_tpm_key_public(&sign, MCIM_TPM_KEY_SIGN, &sign_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak.pub, &ak_pub), MCIM_OK);
  mcim_cert_request_t req = {.name = "dev1",
                             .usage = MCIM_CERT_TRE_ATTESTATION,
                             .key = sign_pub,
                             .tpm_attestation = true,
                             .tpm_ak = ak_pub,
                             .model = "model-x"};
  assert_int_equal(mcim_pki_issue(ca, &req, &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(cert, &pem), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(sign_pub, &jws_key), MCIM_OK);

  char *a64 = b64(att, alen), *s64 = b64(sig, slen);
  json_t *ev = json_pack("{s:s,s:s,s:s}", "attest", a64, "signature", s64, "log", line);
  assert_int_equal(pva_tpm_evidence(jws_key, pem, ev, nonce, &log, digest, model, err, sizeof(err)),
                   MCIM_OK);
  assert_string_equal(model, "model-x");
  json_decref(log);
  log = NULL;
  /* a certificate of the same JWS key from before enrolment (marked, no AK, no model), and
   * one without the mark: refused, whatever the quote (the PVA before enrolment checked the
   * quote with the certificate's own key, which signs any digest) */
  X509 *old_cert = NULL;
  char *old_pem = NULL, *soft_pem = NULL;
  req.tpm_ak = NULL;
  req.model = NULL;
  assert_int_equal(mcim_pki_issue(ca, &req, &old_cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(old_cert, &old_pem), MCIM_OK);
  X509_free(old_cert);
  req.tpm_attestation = false;
  assert_int_equal(mcim_pki_issue(ca, &req, &old_cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(old_cert, &soft_pem), MCIM_OK);
  X509_free(old_cert);
  assert_int_equal(
      pva_tpm_evidence(jws_key, old_pem, ev, nonce, &log, digest, model, err, sizeof(err)),
      MCIM_TPM_ENROLMENT_REQUIRED);
  print_message("certificate from before enrolment: %s\n", err);
  assert_null(log);
  assert_int_equal(
      pva_tpm_evidence(jws_key, soft_pem, ev, nonce, &log, digest, model, err, sizeof(err)),
      MCIM_TPM_ENROLMENT_REQUIRED);
  /* no evidence from an enrolled device: ATTEST_MISSING */
  assert_int_equal(
      pva_tpm_evidence(jws_key, pem, NULL, nonce, &log, digest, model, err, sizeof(err)),
      MCIM_ATTEST_MISSING);
  json_decref(ev);
  free(s64);

  /* the forgery: the same TPMS_ATTEST (it could say anything) signed by TPM2_Sign */
  uint8_t h[32], rs[64], buf[sizeof(TPMT_SIGNATURE)];
  size_t off = 0;
  TPMT_SIGNATURE ts = {.sigAlg = TPM2_ALG_ECDSA};
  unsigned int hlen = 0;
  assert_int_equal(EVP_Digest(att, alen, h, &hlen, EVP_sha256(), NULL), 1);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_SIGN, &sign, &signk), MCIM_OK);
  assert_int_equal(mcim_tpm_key_sign(signk, h, rs), MCIM_OK);
  mcim_tpm_key_free(signk);
  ts.signature.ecdsa.hash = TPM2_ALG_SHA256;
  ts.signature.ecdsa.signatureR.size = 32;
  memcpy(ts.signature.ecdsa.signatureR.buffer, rs, 32);
  ts.signature.ecdsa.signatureS.size = 32;
  memcpy(ts.signature.ecdsa.signatureS.buffer, rs + 32, 32);
  assert_int_equal(Tss2_MU_TPMT_SIGNATURE_Marshal(&ts, buf, sizeof(buf), &off), TSS2_RC_SUCCESS);
  s64 = b64(buf, off);
  ev = json_pack("{s:s,s:s,s:s}", "attest", a64, "signature", s64, "log", line);
  assert_int_equal(pva_tpm_evidence(jws_key, pem, ev, nonce, &log, digest, model, err, sizeof(err)),
                   MCIM_ATTEST_SIGNATURE);
  print_message("forged quote, enrolled device: %s\n", err);
  /* the forgery the unrestricted key allows, with the certificate from before enrolment
   * whose key signed it: refused before any signature is checked */
  assert_int_equal(
      pva_tpm_evidence(jws_key, old_pem, ev, nonce, &log, digest, model, err, sizeof(err)),
      MCIM_TPM_ENROLMENT_REQUIRED);
  assert_null(log);
  free(old_pem);
  free(soft_pem);
  json_decref(ev);
  free(a64);
  free(s64);
  free(att);
  free(sig);

  /* A genuine quote by the AK of PCR 23, the resettable PCR an agent could reset and extend
   * itself, over a log that replays to it: refused, the PVA takes PCR 10 alone. */
  assert_int_equal(mcim_tpm_pcr_reset(t, 23), MCIM_OK);
  assert_int_equal(mcim_tpm_pcr_extend(t, 23, th), MCIM_OK);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak, &akk), MCIM_OK);
  assert_int_equal(mcim_tpm_quote(t, akk, 23, q, sizeof(q), &att, &alen, &sig, &slen), MCIM_OK);
  mcim_tpm_key_free(akk);
  a64 = b64(att, alen);
  s64 = b64(sig, slen);
  ev = json_pack("{s:s,s:s,s:s}", "attest", a64, "signature", s64, "log", line);
  assert_int_equal(pva_tpm_evidence(jws_key, pem, ev, nonce, &log, digest, model, err, sizeof(err)),
                   MCIM_ATTEST_MALFORMED);
  print_message("quote of PCR 23: %s\n", err);
  assert_null(log);
  json_decref(ev);
  free(a64);
  free(s64);
  free(att);
  free(sig);
  free(pem);
  X509_free(cert);
  EVP_PKEY_free(sign_pub);
  EVP_PKEY_free(ak_pub);
  mcim_jose_key_free(jws_key);
  mcim_pki_ca_free(ca);
  mcim_tpm_free(t);
}

int main(void)
{
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_make_activate_round_trip),
      cmocka_unit_test(test_ecc_ek_round_trip),
      cmocka_unit_test(test_activation_refused),
      cmocka_unit_test(test_ek_untrusted),
      cmocka_unit_test(test_certify),
      cmocka_unit_test(test_pva_takes_the_ak),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
