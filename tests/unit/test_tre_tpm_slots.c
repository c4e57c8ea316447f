/* Slots in the TPM (src/tre/tpm/tpm_slot.c; docs/tre-tpm.md, "Slots in the TPM"): issue 11
 * point 7, two MCIMs isolated by the TPM, against a real TPM 2.0: a throw-away swtpm (none
 * installed is a failure; tests/unit/tre_tpm_slots_fixture.h). The same in a TRE, with two
 * SHOs' MCIMs, is test_tre_tpm_slots_tre.c.
 *
 * In the TPM: each slot's K is under a storage key of its own with its own authValue and a
 * policy that admits TPM2_Import, TPM2_Load and TPM2_Certify only; slot A's authorisation does
 * not load slot B's K (the TPM's policy error), B's K does not load under A's key or the
 * primary (integrity), using A leaves exactly A's K loaded; the key's policy refuses a
 * password and other commands; an evicted slot key makes its blob unloadable anywhere; and
 * K wrapped by an SHO to a certified slot key imports there with no way back out (no
 * TPM2_Rewrap to no parent). The SHO takes a TPM device only once the M2MES enrolled it. */
#define _GNU_SOURCE /* memmem, nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <tss2/tss2_mu.h>
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
#include "roles/sho/sho.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h" /* tpm2-tss's marshalling, loaded with dlopen() */
#include "tre/tpm/tpm_slot.h"
#include "tre_tpm_slots_fixture.h"

/* AES-128-ECB of one block under k (OpenSSL): what the TPM's E_K must give. */
static void aes_block(const uint8_t k[16], const uint8_t in[16], uint8_t out[16])
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int n = 0;
  assert_non_null(c);
  assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_128_ecb(), NULL, k, NULL), 1);
  EVP_CIPHER_CTX_set_padding(c, 0);
  assert_int_equal(EVP_EncryptUpdate(c, out, &n, in, 16), 1);
  assert_int_equal(n, 16);
  EVP_CIPHER_CTX_free(c);
}

static void slot_new(mcim_tpm_t *t, struct mcim_tpm_slot *s)
{
  mcim_cause_t rc = mcim_tpm_slot_create(t, s);
  if (rc != MCIM_OK)
    print_error("slot create: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
}

/* K wrapped to the slot key itself (as the SHO wraps it to a procedure's certified slot key)
 * and imported under it. */
static void k_import(mcim_tpm_t *t, const struct mcim_tpm_slot *s, const uint8_t k[16],
                     struct mcim_tpm_blob *out)
{
  TPM2B_PUBLIC pub;
  struct mcim_tpm_dup dup;
  assert_int_equal(mcim_tpm_slot_public(t, s, &pub, NULL), MCIM_OK);
  assert_int_equal(mcim_tpm_dup_aes128(&pub, k, MCIM_TPM_AES_ATTRS, &dup), MCIM_OK);
  mcim_cause_t rc = mcim_tpm_slot_import_own(t, s, &dup, out);
  if (rc != MCIM_OK)
    print_error("slot import: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
}

/* The SHO takes a TPM device only once the M2MES enrolled it (mcim_sho_tpm_device, order.c:
 * step 1, and again at the verdict): its KA certificate's storage key, its attestation
 * certificate's TPM mark and AK, all three; a software TRE has none. Any other mix is a TPM
 * device certified without enrolment, whose K could only go to the storage key (TPM2_Rewrap
 * to no parent gives it out in clear): TPM_ENROLMENT_REQUIRED. */
static void test_sho_refuses_unenrolled(void **state)
{
  EVP_PKEY *att = NULL, *ka = NULL, *storage = NULL, *ak = NULL, *s_out = NULL, *a_out = NULL;
  (void)state;
  assert_int_equal(mcim_pki_key_generate(&att), MCIM_OK);
  assert_int_equal(mcim_pki_key_generate(&ka), MCIM_OK);
  assert_int_equal(mcim_pki_key_generate(&storage), MCIM_OK);
  assert_int_equal(mcim_pki_key_generate(&ak), MCIM_OK);
  static const struct {
    bool storage, mark, ak;
    mcim_cause_t want;
  } cases[] = {
      {false, false, false, MCIM_OK},                    /* a software TRE */
      {true, true, true, MCIM_OK},                       /* enrolled */
      {true, true, false, MCIM_TPM_ENROLMENT_REQUIRED},  /* certified before enrolment */
      {true, false, false, MCIM_TPM_ENROLMENT_REQUIRED}, /* before the TPM mark */
      {false, true, true, MCIM_TPM_ENROLMENT_REQUIRED},  /* no storage key */
      {true, false, true, MCIM_TPM_ENROLMENT_REQUIRED},  /* no mark */
      {false, true, false, MCIM_TPM_ENROLMENT_REQUIRED}, /* the mark alone */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    X509 *xa = NULL, *xk = NULL;
    char *pa = NULL, *pk = NULL;
    mcim_cert_request_t ra = {.name = DEVICE,
                              .usage = MCIM_CERT_TRE_ATTESTATION,
                              .key = att,
                              .tpm_attestation = cases[i].mark,
                              .tpm_ak = cases[i].ak ? ak : NULL,
                              .model = cases[i].ak ? MODEL : NULL};
    mcim_cert_request_t rk = {.name = DEVICE,
                              .usage = MCIM_CERT_TRE_KEY_AGREEMENT,
                              .key = ka,
                              .tpm_storage = cases[i].storage ? storage : NULL};
    assert_int_equal(mcim_pki_issue(m2mes_ca, &ra, &xa), MCIM_OK);
    assert_int_equal(mcim_pki_issue(m2mes_ca, &rk, &xk), MCIM_OK);
    assert_int_equal(mcim_pki_cert_to_pem(xa, &pa), MCIM_OK);
    assert_int_equal(mcim_pki_cert_to_pem(xk, &pk), MCIM_OK);
    mcim_cause_t rc = mcim_sho_tpm_device(pa, pk, &s_out, &a_out);
    if (rc != cases[i].want)
      fail_msg("case %zu: %s, expected %s", i, mcim_cause_name(rc), mcim_cause_name(cases[i].want));
    assert_int_equal(s_out != NULL, rc == MCIM_OK && cases[i].storage);
    assert_int_equal(a_out != NULL, rc == MCIM_OK && cases[i].ak);
    if (s_out)
      assert_int_equal(EVP_PKEY_eq(s_out, storage), 1);
    if (a_out)
      assert_int_equal(EVP_PKEY_eq(a_out, ak), 1);
    EVP_PKEY_free(s_out);
    EVP_PKEY_free(a_out);
    s_out = a_out = NULL;
    free(pa);
    free(pk);
    X509_free(xa);
    X509_free(xk);
  }
  EVP_PKEY_free(att);
  EVP_PKEY_free(ka);
  EVP_PKEY_free(storage);
  EVP_PKEY_free(ak);
}

/* ---- in the TPM ------------------------------------------------------------------------ */

static void test_slot_keys(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm();
  TPM2B_NAME primary_name;
  struct mcim_tpm_slot a, b, c, wrong;
  struct mcim_tpm_blob ka, kb;
  mcim_tpm_aes_t *key = NULL;
  uint8_t k_a[16], k_b[16], block[16] = {1, 2, 3}, want[16], got[16];

  assert_int_equal(mcim_tpm_primary_persist(t, &primary_name), MCIM_OK);
  assert_int_equal(mcim_random(k_a, 16), MCIM_OK);
  assert_int_equal(mcim_random(k_b, 16), MCIM_OK);
  uint64_t t0 = mcim_monotonic_ns();
  slot_new(t, &a);
  print_message("slot key made persistent: %.1f ms\n", (double)(mcim_monotonic_ns() - t0) / 1e6);
  slot_new(t, &b);
  assert_int_not_equal(a.handle, b.handle);
  assert_memory_not_equal(a.name.name, b.name.name, a.name.size);
  assert_memory_not_equal(a.auth, b.auth, sizeof(a.auth));
  t0 = mcim_monotonic_ns();
  k_import(t, &a, k_a, &ka);
  print_message("K imported under its slot key (policy, TPM2_Import): %.1f ms\n",
                (double)(mcim_monotonic_ns() - t0) / 1e6);
  k_import(t, &b, k_b, &kb);

  /* each K under its own key, with its own authorisation: E_K as OpenSSL computes it */
  assert_int_equal(mcim_tpm_slot_load(t, &a, &ka, &key), MCIM_OK);
  assert_int_equal(mcim_tpm_aes_encrypt(key, block, got, 16), MCIM_OK);
  aes_block(k_a, block, want);
  assert_memory_equal(got, want, 16);
  /* using A loaded A's K and nothing else: one transient object, named as A's K */
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, UINT32_C(0x80000000), 16, &more, &cap),
                   TSS2_RC_SUCCESS);
  assert_int_equal(cap->data.handles.count, 1);
  TPM2B_NAME *loaded = NULL, want_name;
  assert_int_equal(Esys_TR_GetName(mcim_tpm_esys(t), mcim_tpm_aes_handle(key), &loaded),
                   TSS2_RC_SUCCESS);
  assert_int_equal(mcim_tpm_public_name(&ka.pub, &want_name), MCIM_OK);
  assert_memory_equal(loaded->name, want_name.name, want_name.size);
  Esys_Free(loaded);
  Esys_Free(cap);
  mcim_tpm_aes_free(key);
  key = NULL;
  assert_int_equal(mcim_tpm_slot_load(t, &b, &kb, &key), MCIM_OK);
  assert_int_equal(mcim_tpm_aes_encrypt(key, block, got, 16), MCIM_OK);
  aes_block(k_b, block, want);
  assert_memory_equal(got, want, 16);
  mcim_tpm_aes_free(key);
  key = NULL;

  /* A's authorisation does not load B's K: the policy session's HMAC fails with B's key
   * (TPM_RC_BAD_AUTH, session 1; noDA, so no lockout) */
  wrong = b;
  memcpy(wrong.auth, a.auth, sizeof(wrong.auth));
  assert_int_equal(mcim_tpm_slot_load(t, &wrong, &kb, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000009a2)");
  /* B's K under A's key, with A's authorisation, and under the storage primary: the blob is
   * wrapped with B's key's seed (TPM_RC_INTEGRITY, parameter 1: inPrivate) */
  assert_int_equal(mcim_tpm_slot_load(t, &a, &kb, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_int_equal(mcim_tpm_aes_load(t, &kb, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_null(key);

  /* the policy is the only way in: a password session with A's own authValue is refused
   * (userWithAuth clear: TPM_RC_AUTH_UNAVAILABLE), and so is any command but Import, Load
   * and Certify (TPM2_ObjectChangeAuth needs the ADMIN role, by policy, and a session for it
   * is in no branch of the policy: TPM_RC_POLICY_FAIL) */
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  ESYS_TR ta = ESYS_TR_NONE, k_tr = ESYS_TR_NONE;
  TPM2B_AUTH auth = {.size = sizeof(a.auth)};
  memcpy(auth.buffer, a.auth, sizeof(a.auth));
  assert_int_equal(
      Esys_TR_FromTPMPublic(esys, a.handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &ta),
      TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_SetAuth(esys, ta, &auth), TSS2_RC_SUCCESS);
  TSS2_RC r =
      Esys_Load(esys, ta, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &ka.priv, &ka.pub, &k_tr);
  print_message("  password session on a slot key: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_AUTH_UNAVAILABLE & 0xbfu);
  ESYS_TR session = ESYS_TR_NONE;
  const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
  assert_int_equal(Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
                                         TPM2_ALG_SHA256, &session),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyAuthValue(esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyCommandCode(esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                          TPM2_CC_ObjectChangeAuth),
                   TSS2_RC_SUCCESS);
  TPM2B_AUTH new_auth = {.size = 4, .buffer = {1, 2, 3, 4}};
  TPM2B_PRIVATE *changed = NULL;
  ESYS_TR primary = ESYS_TR_NONE;
  assert_int_equal(mcim_tpm_primary(t, &primary, NULL), MCIM_OK);
  r = Esys_ObjectChangeAuth(esys, ta, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, &new_auth,
                            &changed);
  print_message("  TPM2_ObjectChangeAuth on a slot key: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_POLICY_FAIL & 0xbfu);
  assert_null(changed);
  (void)Esys_FlushContext(esys, session);
  (void)Esys_TR_Close(esys, &ta);

  /* destroyed: A's handle is empty, its blob loads nowhere (no key at the handle; under B
   * or the primary, integrity), B is untouched; destroying again finds nothing */
  bool gone = false;
  assert_int_equal(mcim_tpm_slot_destroy(t, &a, &gone), MCIM_OK);
  assert_true(gone);
  assert_false(slot_key_in_tpm(t, a.handle));
  assert_int_equal(mcim_tpm_slot_load(t, &a, &ka, &key), MCIM_NOT_FOUND);
  detail_has(t, "no key at persistent handle");
  assert_int_equal(mcim_tpm_slot_load(t, &b, &ka, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_int_equal(mcim_tpm_aes_load(t, &ka, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_int_equal(mcim_tpm_slot_destroy(t, &a, &gone), MCIM_OK);
  assert_false(gone);
  /* a new slot key takes the freed handle: the old record is refused by name, and even with
   * the new key's own authorisation the old blob does not load under it */
  slot_new(t, &c);
  assert_int_equal(c.handle, a.handle);
  assert_int_equal(mcim_tpm_slot_load(t, &a, &ka, &key), MCIM_CONFLICT);
  detail_has(t, "not the slot's storage key");
  assert_int_equal(mcim_tpm_slot_load(t, &c, &ka, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  /* ... and destroying the old record leaves the new key alone */
  assert_int_equal(mcim_tpm_slot_destroy(t, &a, &gone), MCIM_OK);
  assert_false(gone);
  assert_true(slot_key_in_tpm(t, c.handle));
  assert_int_equal(mcim_tpm_slot_load(t, &b, &kb, &key), MCIM_OK);
  mcim_tpm_aes_free(key);
  assert_int_equal(mcim_tpm_slot_destroy(t, &b, &gone), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_destroy(t, &c, &gone), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 0);
  mcim_tpm_free(t);
}

/* The hole TPM2_Rewrap to no parent was, and that it is closed (docs/tre-tpm.md, "Slots in the
 * TPM"). A blob wrapped to the storage primary, as SHOs wrapped K before, still gives K in
 * clear through TPM2_Rewrap to TPM_RH_NULL (the control: the primary's USER role is free).
 * K wrapped the way an SHO now wraps it, to the procedure's slot key that the restricted AK
 * certified over the txn (the TRE's mcim_tpm_slot_certify, the SHO's mcim_tre_slot_check and
 * mcim_tre_wrap_k_slot), is refused by the TPM whichever way it is asked: from the slot key
 * with a password, TPM_RC_AUTH_UNAVAILABLE (userWithAuth clear); with a session for a command
 * the policy admits, TPM_RC_POLICY_CC; from the storage primary, TPM_RC_INTEGRITY (the seed is
 * the slot key's). The same blob imports under the slot key (mcim_tpm_slot_import_own). The
 * SHO's check refuses each bad offer with its cause: none, forged (a bit of the signature or of
 * TPMS_ATTEST), certified by another AK, for another txn, a certified key that is not a slot
 * key. */
static void test_rewrap_to_null(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm();
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  TPM2B_NAME primary_name, k_name;
  const TPM2B_PUBLIC *primary_pub = NULL;
  ESYS_TR primary = ESYS_TR_NONE, tr = ESYS_TR_NONE, session = ESYS_TR_NONE;
  struct mcim_tpm_dup dup;
  struct mcim_tpm_slot s;
  struct mcim_tpm_blob ak_blob, ak2_blob, kb;
  mcim_tpm_key_t *ak = NULL;
  TPM2B_PRIVATE *out = NULL;
  TPM2B_ENCRYPTED_SECRET *seed = NULL;
  TPM2B_PUBLIC pub;
  EVP_PKEY *ak_pkey = NULL, *ak2_pkey = NULL;
  uint8_t k[16], qual[MCIM_TPM_SLOT_QUAL_LEN], *att = NULL, *sig = NULL;
  size_t alen = 0, slen = 0;
  char *p64 = NULL, err[256];
  json_t *k_tpm = NULL;

  assert_int_equal(mcim_tpm_primary_persist(t, &primary_name), MCIM_OK);
  assert_int_equal(mcim_tpm_primary(t, &primary, &primary_pub), MCIM_OK);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);

  /* the control: K wrapped to the storage primary comes out in clear */
  assert_int_equal(mcim_tpm_dup_aes128(primary_pub, k, MCIM_TPM_AES_ATTRS, &dup), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&dup.pub, &k_name), MCIM_OK);
  TSS2_RC r = Esys_Rewrap(esys, primary, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, &dup.dup, &k_name, &dup.seed, &out, &seed);
  print_message("control: TPM2_Rewrap to TPM_RH_NULL of a blob to the primary: 0x%08x\n",
                (unsigned)r);
  assert_int_equal(r, TSS2_RC_SUCCESS);
  assert_non_null(memmem(out->buffer, out->size, k, 16));
  Esys_Free(out);
  Esys_Free(seed);
  out = NULL;
  seed = NULL;

  /* the TRE's side at the quote: the procedure's slot key, certified by the AK over the txn */
  slot_new(t, &s);
  assert_int_equal(mcim_tpm_key_create(t, MCIM_TPM_KEY_AK, &ak_blob), MCIM_OK);
  assert_int_equal(mcim_tpm_key_create(t, MCIM_TPM_KEY_AK, &ak2_blob), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak_blob.pub, &ak_pkey), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak2_blob.pub, &ak2_pkey), MCIM_OK);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak_blob, &ak), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_qual(TXN_A, qual), MCIM_OK);
  mcim_cause_t rc = mcim_tpm_slot_certify(t, &s, ak, qual, sizeof(qual), &att, &alen, &sig, &slen);
  if (rc != MCIM_OK)
    fail_msg("slot certify: %s: %s", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(mcim_tpm_slot_public(t, &s, &pub, NULL), MCIM_OK);
  assert_int_equal(mcim_tpm_public_encode(&pub, &p64), MCIM_OK);
  char *a64 = malloc(mcim_b64url_len(alen) + 1), *s64 = malloc(mcim_b64url_len(slen) + 1);
  assert_non_null(a64);
  assert_non_null(s64);
  mcim_b64url_encode(att, alen, a64);
  mcim_b64url_encode(sig, slen, s64);
  json_t *offer = json_pack("{s:s, s:s, s:s}", "public", p64, "attest", a64, "signature", s64);
  assert_non_null(offer);

  /* the SHO's check: accepted for this txn with this AK, and each bad offer with its cause */
  rc = mcim_tre_slot_check(ak_pkey, offer, TXN_A, err, sizeof(err));
  if (rc != MCIM_OK)
    fail_msg("the SHO's check of a good offer: %s: %s", mcim_cause_name(rc), err);
  assert_int_equal(mcim_tre_slot_check(ak_pkey, NULL, TXN_A, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_MISSING);
  assert_int_equal(mcim_tre_slot_check(ak_pkey, offer, TXN_B, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_STALE);
  print_message("  another txn: %s\n", err);
  assert_int_equal(mcim_tre_slot_check(ak2_pkey, offer, TXN_A, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  print_message("  another AK: %s\n", err);
  for (int which = 0; which < 2; which++) {
    uint8_t *b = which ? sig : att;
    size_t n = which ? slen : alen;
    char *b64 = malloc(mcim_b64url_len(n) + 1);
    assert_non_null(b64);
    b[n - 1] ^= 0x01; /* the last byte: of TPMS_ATTEST's certified name, of the signature's S */
    mcim_b64url_encode(b, n, b64);
    json_t *forged = json_deep_copy(offer);
    json_object_set_new(forged, which ? "signature" : "attest", json_string(b64));
    assert_int_equal(mcim_tre_slot_check(ak_pkey, forged, TXN_A, err, sizeof(err)),
                     MCIM_TPM_CERTIFY_INVALID);
    print_message("  %s forged: %s\n", which ? "signature" : "TPMS_ATTEST", err);
    b[n - 1] ^= 0x01;
    json_decref(forged);
    free(b64);
  }
  json_t *extra = json_deep_copy(offer);
  json_object_set_new(extra, "k", json_string("00"));
  assert_int_equal(mcim_tre_slot_check(ak_pkey, extra, TXN_A, err, sizeof(err)),
                   MCIM_TPM_CERTIFY_INVALID);
  json_decref(extra);
  /* a genuine certification of a key that is not a slot key: the storage primary */
  {
    uint8_t *patt = NULL, *psig = NULL;
    size_t palen = 0, pslen = 0;
    char *pp64 = NULL;
    assert_int_equal(
        mcim_tpm_certify(t, ak, primary, qual, sizeof(qual), &patt, &palen, &psig, &pslen),
        MCIM_OK);
    assert_int_equal(mcim_tpm_public_encode(primary_pub, &pp64), MCIM_OK);
    char *pa = malloc(mcim_b64url_len(palen) + 1), *ps = malloc(mcim_b64url_len(pslen) + 1);
    assert_non_null(pa);
    assert_non_null(ps);
    mcim_b64url_encode(patt, palen, pa);
    mcim_b64url_encode(psig, pslen, ps);
    json_t *prim = json_pack("{s:s, s:s, s:s}", "public", pp64, "attest", pa, "signature", ps);
    assert_int_equal(mcim_tre_slot_check(ak_pkey, prim, TXN_A, err, sizeof(err)),
                     MCIM_TPM_KEY_ATTRIBUTES);
    print_message("  the storage primary offered: %s\n", err);
    /* and the SHO wraps to nothing but a slot key */
    assert_int_equal(mcim_tre_wrap_k_slot(prim, k, &k_tpm), MCIM_KEY_INVALID);
    json_decref(prim);
    free(pa);
    free(ps);
    free(pp64);
    free(patt);
    free(psig);
  }
  mcim_tpm_key_free(ak);

  /* the SHO's wrap, and what the agent then holds: the package's "k_tpm" */
  assert_int_equal(mcim_tre_wrap_k_slot(offer, k, &k_tpm), MCIM_OK);
  assert_int_equal(mcim_tpm_dup_decode(k_tpm, &dup), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&dup.pub, &k_name), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_public(t, &s, &pub, &tr), MCIM_OK);
  r = Esys_Rewrap(esys, tr, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dup.dup,
                  &k_name, &dup.seed, &out, &seed);
  print_message("closed: Rewrap to TPM_RH_NULL from the slot key, password: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_AUTH_UNAVAILABLE & 0xbfu);
  assert_null(out);
  assert_int_equal(mcim_tpm_slot_session(t, TPM2_CC_Import, &session), MCIM_OK);
  r = Esys_Rewrap(esys, tr, ESYS_TR_RH_NULL, session, ESYS_TR_NONE, ESYS_TR_NONE, &dup.dup, &k_name,
                  &dup.seed, &out, &seed);
  (void)Esys_FlushContext(esys, session);
  print_message("closed: Rewrap from the slot key, a session for TPM2_Import: 0x%08x\n",
                (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_POLICY_CC & 0xbfu);
  assert_null(out);
  (void)Esys_TR_Close(esys, &tr);
  r = Esys_Rewrap(esys, primary, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                  &dup.dup, &k_name, &dup.seed, &out, &seed);
  print_message("closed: Rewrap from the storage primary: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_INTEGRITY & 0xbfu);
  assert_null(out);

  /* and it is K, usable under the slot key */
  assert_int_equal(mcim_tpm_slot_import_own(t, &s, &dup, &kb), MCIM_OK);
  mcim_tpm_aes_t *key = NULL;
  uint8_t block[16] = {1, 2, 3}, got[16], want[16];
  assert_int_equal(mcim_tpm_slot_load(t, &s, &kb, &key), MCIM_OK);
  assert_int_equal(mcim_tpm_aes_encrypt(key, block, got, 16), MCIM_OK);
  aes_block(k, block, want);
  assert_memory_equal(got, want, 16);
  mcim_tpm_aes_free(key);

  assert_int_equal(mcim_tpm_slot_destroy(t, &s, NULL), MCIM_OK);
  json_decref(k_tpm);
  json_decref(offer);
  free(a64);
  free(s64);
  free(p64);
  free(att);
  free(sig);
  EVP_PKEY_free(ak_pkey);
  EVP_PKEY_free(ak2_pkey);
  mcim_tpm_free(t);
}

/* The TPM side of the next step (docs/tre-tpm.md, "Slots in the TPM", "Next"): an SHO wraps K
 * to a slot key itself, its public area certified by the restricted attestation key; the TRE
 * imports it there with no Rewrap. The certification verifies as the M2MES checks one; K
 * imports and E_K is right; and that blob cannot be rewrapped to no parent: not with a
 * password (userWithAuth clear), not with a session for another command (the policy), not
 * from the storage primary (its seed is the slot key's). */
static void test_wrapped_to_slot_key(void **state)
{
  (void)state;
  mcim_tpm_t *t = open_tpm();
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  TPM2B_NAME primary_name, k_name;
  struct mcim_tpm_slot s;
  struct mcim_tpm_blob ak_blob, kb;
  struct mcim_tpm_dup dup;
  TPM2B_PUBLIC pub;
  TPM2B_DIGEST policy;
  mcim_tpm_key_t *ak = NULL;
  mcim_tpm_aes_t *key = NULL;
  ESYS_TR tr = ESYS_TR_NONE, session = ESYS_TR_NONE, primary = ESYS_TR_NONE;
  TPM2B_PRIVATE *out = NULL;
  TPM2B_ENCRYPTED_SECRET *seed = NULL;
  uint8_t k[16], block[16] = {9, 8, 7}, want[16], got[16], sigbuf[sizeof(TPMT_SIGNATURE)];
  size_t sig_len = 0;
  char err[256];

  assert_int_equal(mcim_tpm_primary_persist(t, &primary_name), MCIM_OK);
  slot_new(t, &s);
  assert_int_equal(mcim_tpm_slot_public(t, &s, &pub, &tr), MCIM_OK);
  mcim_tpm_slot_policy(&policy);
  assert_int_equal(pub.publicArea.authPolicy.size, 32);
  assert_memory_equal(pub.publicArea.authPolicy.buffer, policy.buffer, 32);

  /* certified by the attestation key through the policy's third branch, checked as the M2MES
   * checks a certification (mcim_tpm_certify_check: signature, TPM-made, name, extraData) */
  assert_int_equal(mcim_tpm_key_create(t, MCIM_TPM_KEY_AK, &ak_blob), MCIM_OK);
  assert_int_equal(mcim_tpm_key_load(t, MCIM_TPM_KEY_AK, &ak_blob, &ak), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_session(t, TPM2_CC_Certify, &session), MCIM_OK);
  TPM2B_DATA qual = {.size = 16, .buffer = "txn-0123456789a"};
  const TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_NULL};
  TPM2B_ATTEST *attest = NULL;
  TPMT_SIGNATURE *sig = NULL;
  TSS2_RC r = Esys_Certify(esys, tr, mcim_tpm_key_handle(ak), session, ESYS_TR_PASSWORD,
                           ESYS_TR_NONE, &qual, &scheme, &attest, &sig);
  (void)Esys_FlushContext(esys, session);
  session = ESYS_TR_NONE;
  assert_int_equal(r, TSS2_RC_SUCCESS);
  assert_int_equal(Tss2_MU_TPMT_SIGNATURE_Marshal(sig, sigbuf, sizeof(sigbuf), &sig_len),
                   TSS2_RC_SUCCESS);
  mcim_cause_t rc =
      mcim_tpm_certify_check(&ak_blob.pub, &pub, qual.buffer, qual.size, attest->attestationData,
                             attest->size, sigbuf, sig_len, err, sizeof(err));
  if (rc != MCIM_OK)
    fail_msg("certification of the slot key: %s: %s", mcim_cause_name(rc), err);
  Esys_Free(attest);
  Esys_Free(sig);
  mcim_tpm_key_free(ak);

  /* the SHO's side: K wrapped to the certified slot key; the TRE's: imported there */
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_tpm_dup_aes128(&pub, k, MCIM_TPM_AES_ATTRS, &dup), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_import_own(t, &s, &dup, &kb), MCIM_OK);
  assert_int_equal(mcim_tpm_slot_load(t, &s, &kb, &key), MCIM_OK);
  assert_int_equal(mcim_tpm_aes_encrypt(key, block, got, 16), MCIM_OK);
  aes_block(k, block, want);
  assert_memory_equal(got, want, 16);
  mcim_tpm_aes_free(key);

  /* no way to K from that blob: TPM2_Rewrap to no parent from the slot key with a password,
   * or with a session made for TPM2_Import (TPM_RC_POLICY_CC), and from the primary. (The
   * key opened again: ESAPI gives one ESYS_TR per TPM handle, which the calls above closed.) */
  assert_int_equal(mcim_tpm_slot_public(t, &s, &pub, &tr), MCIM_OK);
  assert_int_equal(mcim_tpm_public_name(&dup.pub, &k_name), MCIM_OK);
  r = Esys_Rewrap(esys, tr, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dup.dup,
                  &k_name, &dup.seed, &out, &seed);
  print_message("  Rewrap from the slot key, password: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_AUTH_UNAVAILABLE & 0xbfu);
  assert_int_equal(mcim_tpm_slot_session(t, TPM2_CC_Import, &session), MCIM_OK);
  r = Esys_Rewrap(esys, tr, ESYS_TR_RH_NULL, session, ESYS_TR_NONE, ESYS_TR_NONE, &dup.dup, &k_name,
                  &dup.seed, &out, &seed);
  (void)Esys_FlushContext(esys, session);
  print_message("  Rewrap from the slot key, a session for TPM2_Import: 0x%08x\n", (unsigned)r);
  assert_int_equal(r & 0xbfu, TPM2_RC_POLICY_CC & 0xbfu);
  assert_int_equal(mcim_tpm_primary(t, &primary, NULL), MCIM_OK);
  r = Esys_Rewrap(esys, primary, ESYS_TR_RH_NULL, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                  &dup.dup, &k_name, &dup.seed, &out, &seed);
  print_message("  Rewrap from the storage primary: 0x%08x\n", (unsigned)r);
  assert_int_not_equal(r, TSS2_RC_SUCCESS);
  assert_null(out);

  (void)Esys_TR_Close(esys, &tr);
  assert_int_equal(mcim_tpm_slot_destroy(t, &s, NULL), MCIM_OK);
  mcim_tpm_free(t);
}

int main(void)
{
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slot_keys),
      cmocka_unit_test(test_rewrap_to_null),
      cmocka_unit_test(test_sho_refuses_unenrolled),
      cmocka_unit_test(test_wrapped_to_slot_key),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
