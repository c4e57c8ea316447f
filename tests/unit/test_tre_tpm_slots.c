/* Slots in the TPM (src/tre/tpm/tpm_slot.c; docs/tre-tpm.md, "Slots in the TPM"): issue 11
 * point 7, two MCIMs isolated by the TPM, and the TPM side of point 6, a discarded MCIM's K
 * destroyed. Against a real TPM 2.0: a throw-away swtpm (none installed is a failure).
 *
 * In the TPM: each slot's K is under a storage key of its own with its own authValue and a
 * policy that admits TPM2_Import, TPM2_Load and TPM2_Certify only; slot A's authorisation does
 * not load slot B's K (the TPM's policy error), B's K does not load under A's key or the
 * primary (integrity), using A leaves exactly A's K loaded; the key's policy refuses a
 * password and other commands; an evicted slot key makes its blob unloadable anywhere; and
 * K wrapped by an SHO to a certified slot key imports there with no way back out.
 *
 * In the TRE, with two pre-provisioned MCIMs from two SHOs (K wrapped by each for the TPM):
 * the packages of one SHO cannot reach the other's slot (each refusal with its cause, the
 * other slot unchanged and working), each slot works with the other's key destroyed behind
 * the TRE's back, and discard, unstage, re-provisioning and pristine destroy exactly the
 * slot keys of what they remove: a copy of the older files with the current TPM cannot use
 * the discarded K (no key at its handle; integrity under any other), and is refused whole
 * by the rollback counter anyway. */
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
#include "swtpm_fixture.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define IMSI_A "001020000000001"
#define IMSI_B "001030000000002"
#define TXN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TXN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

SWTPM_GROUP(false, "/tmp/mcim-tpmslots-XXXXXX")

static mcim_tpm_t *open_tpm(void) { return swtpm_open(sw); }

/* The connection's last failure names the TPM's response code `code` (e.g. "0x000009a2"). */
static void detail_has(mcim_tpm_t *t, const char *what)
{
  if (!strstr(mcim_tpm_detail(t), what))
    fail_msg("detail \"%s\" does not say \"%s\"", mcim_tpm_detail(t), what);
  print_message("  refused as expected: %s\n", mcim_tpm_detail(t));
}

static void log_reset(void)
{
  fflush(log_fp);
  assert_int_equal(ftruncate(fileno(log_fp), 0), 0);
  rewind(log_fp);
}

/* The persistent handles of the slot keys' range the TPM holds now. */
/* The PCID's slot key of the fixture's TRE (made at enrolment, docs/tre-tpm.md "The PCID
 * credential's K"): not an MCIM's, so not counted below. */
static TPM2_HANDLE pcid_handle;

static UINT32 slot_keys_in_tpm(mcim_tpm_t *t, TPM2_HANDLE *first)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, MCIM_TPM_SLOT_HANDLE_FIRST,
                                      MCIM_TPM_SLOT_HANDLES, &more, &cap),
                   TSS2_RC_SUCCESS);
  UINT32 n = 0;
  for (UINT32 i = 0; i < cap->data.handles.count; i++)
    if (cap->data.handles.handle[i] < MCIM_TPM_SLOT_HANDLE_FIRST + MCIM_TPM_SLOT_HANDLES &&
        (!pcid_handle || cap->data.handles.handle[i] != pcid_handle)) {
      if (first && n == 0)
        *first = cap->data.handles.handle[i];
      n++;
    }
  Esys_Free(cap);
  return n;
}

static bool slot_key_in_tpm(mcim_tpm_t *t, TPM2_HANDLE h)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, h, 1, &more, &cap),
                   TSS2_RC_SUCCESS);
  bool yes = cap->data.handles.count == 1 && cap->data.handles.handle[0] == h;
  Esys_Free(cap);
  return yes;
}

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

/* ---- in the TRE: two SHOs, two pre-provisioned MCIMs ------------------------------------ */

struct sho {
  const char *name;
  mcim_jose_key_t *key;
  char *cert;
};

struct fx {
  char dir[96];
  mcim_tre_t *tre;
  mcim_jose_key_t *ka_pub;
  EVP_PKEY *storage;
  struct sho a, b;
  uint8_t k_a[16], opc_a[16], k_b[16], opc_b[16];
};

static void sho_make(struct sho *s, const char *name)
{
  EVP_PKEY *pkey = NULL;
  X509 *x = NULL;
  s->name = name;
  assert_int_equal(mcim_pki_key_generate(&pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pkey, &s->key), MCIM_OK);
  mcim_cert_request_t req = {.name = name, .usage = MCIM_CERT_TLS, .key = pkey, .days = 30};
  assert_int_equal(mcim_pki_issue(ops_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &s->cert), MCIM_OK);
  X509_free(x);
  EVP_PKEY_free(pkey);
}

static json_t *jws_payload(const char *jws);

/* A package as an SHO makes it for procedure `txn`: the TRE's quote of that txn offers its
 * key-agreement key and its slot key; K is wrapped to that slot key (mcim_tre_wrap_k_slot) and
 * the content sealed to that key-agreement key; signed by `signer` with iss `iss`, its content
 * naming `content_sho`. The quote of a txn offers the same keys each time. */
static char *package(struct fx *f, const struct sho *signer, const char *iss,
                     const char *content_sho, const char *imsi, const char *txn,
                     const uint8_t k[16], const uint8_t opc[16])
{
  char oh[33], *jws = NULL, *jwk = NULL;
  json_t *k_tpm = NULL;
  mcim_jose_key_t *ka = NULL;
  char *pkg = NULL;
  mcim_hex_encode(opc, 16, oh);
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn, "nonce", 300, &jws), MCIM_OK);
  json_t *q = jws_payload(jws);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  assert_non_null(jwk);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(q, "tpm_slot"), k, &k_tpm), MCIM_OK);
  json_t *c = json_pack("{s:s, s:s, s:o, s:s, s:s}", "sho", content_sho, "imsi", imsi, "k_tpm",
                        k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  pkg = package_seal_text(signer->key, iss, DEVICE, txn, ka, text);
  free(text);
  json_decref(c);
  json_decref(q);
  free(jwk);
  free(jws);
  mcim_jose_key_free(ka);
  return pkg;
}

static mcim_cause_t stage(struct fx *f, const char *txn, char *pkg, const char *cert)
{
  mcim_cause_t rc = f->tre->ops->stage(f->tre->ctx, txn, pkg, strlen(pkg), cert);
  free(pkg);
  return rc;
}

/* The PCID's slot key the TRE in `dir` made at enrolment: its handle, and (destroy) evicted. */
static TPM2_HANDLE pcid_slot_key(const char *dir, bool destroy)
{
  json_t *doc = tre_state_read(dir, DEVICE, false);
  json_t *rec = json_object_get(doc, "pcid_slot");
  struct mcim_tpm_slot s;
  size_t len = 0;
  bool gone = false;
  assert_non_null(rec);
  memset(&s, 0, sizeof(s));
  s.handle = (TPM2_HANDLE)json_integer_value(json_object_get(rec, "tpm_handle"));
  const char *name = json_string_value(json_object_get(rec, "tpm_parent"));
  assert_non_null(name);
  assert_int_equal(mcim_b64url_decode(name, strlen(name), s.name.name, sizeof(s.name.name), &len),
                   MCIM_OK);
  s.name.size = (UINT16)len;
  if (destroy) {
    mcim_tpm_t *t = open_tpm();
    assert_int_equal(mcim_tpm_slot_destroy(t, &s, &gone), MCIM_OK);
    assert_true(gone);
    mcim_tpm_free(t);
  }
  json_decref(doc);
  return s.handle;
}

/* A TPM device with two MCIMs: sho-a's installed (active), sho-b's pre-provisioned
 * (installed inactive), each K wrapped by its SHO for the TPM. */
static int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *jwk = NULL, slot[64];
  mcim_jose_key_t *storage = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-tpmslots-tre-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &f->tre), MCIM_OK);
  /* the AK made as enrolment makes it (this swtpm has no EK certificate: the rest of the
   * enrolment, at the M2MES, is test_tre_tpm_enrol's): the TRE quotes and offers slot keys */
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(f->tre, &enrol);
  json_decref(enrol);
  pcid_handle = pcid_slot_key(f->dir, false);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &f->ka_pub), MCIM_OK);
  free(jwk);
  assert_int_equal(mcim_tre_tpm_storage_jwk(f->tre, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &storage), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(storage, &f->storage), MCIM_OK);
  mcim_jose_key_free(storage);
  free(jwk);
  sho_make(&f->a, "sho-a");
  sho_make(&f->b, "sho-b");
  assert_int_equal(mcim_random(f->k_a, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->opc_a, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->k_b, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->opc_b, 16), MCIM_OK);
  assert_int_equal(stage(f, TXN_A,
                         package(f, &f->a, "sho-a", "sho-a", IMSI_A, TXN_A, f->k_a, f->opc_a),
                         f->a.cert),
                   MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  assert_int_equal(stage(f, TXN_B,
                         package(f, &f->b, "sho-b", "sho-b", IMSI_B, TXN_B, f->k_b, f->opc_b),
                         f->b.cert),
                   MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  *state = f;
  return 0;
}

static int fx_teardown(void **state)
{
  struct fx *f = *state;
  json_t *removed = NULL;
  /* the TPM is shared by the group: no slot key left behind */
  if (f->tre)
    (void)f->tre->ops->pristine(f->tre->ctx, "ffffffffffffffffffffffffffffffff", &removed);
  json_decref(removed);
  mcim_tre_close(f->tre);
  if (pcid_handle)
    (void)pcid_slot_key(f->dir, true); /* and the PCID's */
  pcid_handle = 0;
  mcim_jose_key_free(f->ka_pub);
  EVP_PKEY_free(f->storage);
  mcim_jose_key_free(f->a.key);
  mcim_jose_key_free(f->b.key);
  free(f->a.cert);
  free(f->b.cert);
  rm_tree(f->dir);
  free(f);
  return 0;
}

static void file_copy(const char *from, const char *to)
{
  size_t len = 0;
  uint8_t *buf = file_read(from, &len);
  FILE *fp = fopen(to, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(buf, 1, len, fp), len);
  fclose(fp);
  assert_int_equal(chmod(to, 0600), 0);
  free(buf);
}

/* The state document in clear (the newest slot file of `dir`, opened with its tre.key). */
static json_t *state_read(const char *dir) { return tre_state_read(dir, DEVICE, false); }

/* A slot's "k_tpm" in a document: its blob and its slot key's record. */
static void slot_record(json_t *doc, const char *slot, struct mcim_tpm_blob *blob,
                        struct mcim_tpm_slot *s)
{
  json_t *slots = json_object_get(doc, "slots"), *e;
  size_t i, len = 0;
  json_t *kt = NULL;
  json_array_foreach (slots, i, e) {
    if (strcmp(json_string_value(json_object_get(e, "slot")), slot) == 0)
      kt = json_object_get(e, "k_tpm");
  }
  assert_non_null(kt);
  assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(kt, "tpm_public")),
                                        json_string_value(json_object_get(kt, "tpm_private")),
                                        blob),
                   MCIM_OK);
  memset(s, 0, sizeof(*s));
  s->handle = (TPM2_HANDLE)json_integer_value(json_object_get(kt, "tpm_handle"));
  const char *name = json_string_value(json_object_get(kt, "tpm_parent"));
  const char *auth = json_string_value(json_object_get(kt, "tpm_auth"));
  assert_non_null(name);
  assert_non_null(auth);
  assert_int_equal(mcim_b64url_decode(name, strlen(name), s->name.name, sizeof(s->name.name), &len),
                   MCIM_OK);
  s->name.size = (UINT16)len;
  assert_int_equal(mcim_b64url_decode(auth, strlen(auth), s->auth, sizeof(s->auth), &len), MCIM_OK);
  assert_int_equal(len, sizeof(s->auth));
}

static char *slots_json(struct fx *f)
{
  json_t *doc = state_read(f->dir);
  char *text = json_dumps(json_object_get(doc, "slots"), JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(doc);
  return text;
}

/* One SHO's packages cannot reach the other's slot: each refusal has its cause, and the
 * other slot (its K's blob, its slot key) is unchanged and works. Each slot works with the
 * other's key gone: using one never needs the other's objects. */
static void test_two_shos(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  struct mcim_tpm_blob blob_a, blob_b;
  struct mcim_tpm_slot slot_a, slot_b;

  /* two slots, two slot keys: distinct handles, names and authValues */
  json_t *doc = state_read(f->dir);
  slot_record(doc, "sho-a", &blob_a, &slot_a);
  slot_record(doc, "sho-b", &blob_b, &slot_b);
  json_decref(doc);
  assert_int_not_equal(slot_a.handle, slot_b.handle);
  assert_memory_not_equal(slot_a.name.name, slot_b.name.name, slot_a.name.size);
  assert_memory_not_equal(slot_a.auth, slot_b.auth, sizeof(slot_a.auth));
  uint64_t t0 = mcim_monotonic_ns();
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 32);
  print_message("AKA, K under its slot key (ReadPublic, policy session, Load, two "
                "EncryptDecrypt2, commit): %.2f ms\n",
                (double)(mcim_monotonic_ns() - t0) / 1e6);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  aka_once(tre, "sho-b", f->k_b, f->opc_b, 32);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-a"), MCIM_OK);
  char *before = slots_json(f);

  /* sho-b's packages aimed at sho-a's slot, each refused with its cause */
  static const char *const txns[] = {"c0000000000000000000000000000001",
                                     "c0000000000000000000000000000002",
                                     "c0000000000000000000000000000003"};
  uint8_t k_x[16], opc_x[16];
  assert_int_equal(mcim_random(k_x, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc_x, 16), MCIM_OK);
  struct {
    const char *what, *iss, *content, *cert, *txn, *cause, *why;
  } cases[] = {
      {"content naming sho-a, signed by sho-b", "sho-b", "sho-a", f->b.cert, txns[0],
       "cause=SLOT_FORBIDDEN", "content names another SHO"},
      {"iss sho-a with sho-b's certificate", "sho-a", "sho-a", f->b.cert, txns[1],
       "cause=CLAIM_MISMATCH", "package does not open"},
      {"sho-a's certificate, sho-b's signature", "sho-a", "sho-a", f->a.cert, txns[2],
       "cause=JWS_BAD_SIGNATURE", "package does not open"},
      {"another package for sho-a's installed txn", "sho-b", "sho-b", f->b.cert, TXN_A,
       "cause=CONFLICT", "another package was already staged or installed"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    log_reset();
    char *pkg = package(f, &f->b, cases[i].iss, cases[i].content, IMSI_A, cases[i].txn, k_x, opc_x);
    assert_int_equal(stage(f, cases[i].txn, pkg, cases[i].cert), MCIM_PACKAGE_INVALID);
    if (!log_has(cases[i].cause, cases[i].why))
      fail_msg("%s: no log line with %s and \"%s\"", cases[i].what, cases[i].cause, cases[i].why);
    print_message("  refused: %s (%s)\n", cases[i].what, cases[i].cause);
    /* the procedure abandoned: the slot key its quote offered goes with its KA key */
    assert_int_equal(tre->ops->unstage(tre->ctx, cases[i].txn), MCIM_NOT_FOUND);
  }
  /* nothing moved: the slots are byte for byte as before, and only their two slot keys are
   * in the TPM (nothing imported for a refused package) */
  char *after = slots_json(f);
  assert_string_equal(before, after);
  free(after);
  mcim_tpm_t *t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 64);

  /* sho-b re-provisioning its own slot replaces its slot key alone (the old one destroyed);
   * sho-a's is untouched */
  static const char txn_b2[] = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
  char slot[64];
  assert_int_equal(stage(f, txn_b2,
                         package(f, &f->b, "sho-b", "sho-b", IMSI_B, txn_b2, f->k_b, f->opc_b),
                         f->b.cert),
                   MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 3); /* the staged one has its own already */
  assert_int_equal(tre->ops->install_inactive(tre->ctx, txn_b2, slot), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  assert_false(slot_key_in_tpm(t, slot_b.handle));
  assert_true(slot_key_in_tpm(t, slot_a.handle));
  doc = state_read(f->dir);
  struct mcim_tpm_blob blob_a2;
  struct mcim_tpm_slot slot_a2;
  slot_record(doc, "sho-a", &blob_a2, &slot_a2);
  assert_memory_equal(&slot_a2, &slot_a, sizeof(slot_a));
  assert_memory_equal(blob_a2.priv.buffer, blob_a.priv.buffer, blob_a.priv.size);
  slot_record(doc, "sho-b", &blob_b, &slot_b);
  json_decref(doc);

  /* each slot without the other's key: sho-b's destroyed behind the TRE's back (owner
   * hierarchy), sho-a still authenticates; sho-b's own AKA then fails in the TPM, with the
   * reason logged */
  ESYS_TR tr = ESYS_TR_NONE, none = ESYS_TR_NONE;
  assert_int_equal(Esys_TR_FromTPMPublic(mcim_tpm_esys(t), slot_b.handle, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, &tr),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(mcim_tpm_esys(t), ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD,
                                     ESYS_TR_NONE, ESYS_TR_NONE, slot_b.handle, &none),
                   TSS2_RC_SUCCESS);
  mcim_tpm_free(t);
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 96);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  log_reset();
  uint8_t rand[16] = {0}, autn[16] = {0}, res[8], auts[14];
  assert_int_equal(tre->ops->aka(tre->ctx, "sho-b", rand, autn, res, auts), MCIM_TPM_ERROR);
  assert_true(log_has("cannot load the slot's K", "no key at persistent handle"));
  free(before);
}

/* Discard destroys the slot key first: a copy of the files from before the discard, with
 * the current TPM, cannot use the discarded K (its blob loads nowhere), and is refused whole
 * by the rollback counter. unstage and pristine destroy theirs too. */
static void test_discard_destroys(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char old_dir[128], from[256], to[256];
  static const char *const files[] = {"tre.key", "tre.sealed", "tre.sealed.1"};
  struct mcim_tpm_blob blob_a, blob_b;
  struct mcim_tpm_slot slot_a, slot_b;
  mcim_tpm_aes_t *key = NULL;

  snprintf(old_dir, sizeof(old_dir), "%s/old", f->dir);
  assert_int_equal(mkdir(old_dir, 0700), 0);
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof(from), "%s/%s", f->dir, files[i]);
    snprintf(to, sizeof(to), "%s/%s", old_dir, files[i]);
    file_copy(from, to);
  }
  mcim_tpm_t *t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);

  assert_int_equal(tre->ops->discard(tre->ctx, "sho-a", "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"),
                   MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  aka_once(tre, "sho-b", f->k_b, f->opc_b, 32);

  /* the files left behind: the old document still has sho-a's blob, slot key record and
   * authValue; with the current TPM none of it loads K */
  json_t *old = state_read(old_dir), *cur = state_read(f->dir);
  slot_record(old, "sho-a", &blob_a, &slot_a);
  slot_record(cur, "sho-b", &blob_b, &slot_b);
  json_decref(old);
  json_decref(cur);
  assert_false(slot_key_in_tpm(t, slot_a.handle));
  assert_int_equal(mcim_tpm_slot_load(t, &slot_a, &blob_a, &key), MCIM_NOT_FOUND);
  detail_has(t, "no key at persistent handle");
  assert_int_equal(mcim_tpm_slot_load(t, &slot_b, &blob_a, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_int_equal(mcim_tpm_aes_load(t, &blob_a, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_null(key);

  /* unstage: a staged package's slot key goes with it */
  static const char txn_c[] = "cccccccccccccccccccccccccccccccc";
  struct sho c;
  sho_make(&c, "sho-c");
  uint8_t k_c[16], opc_c[16];
  assert_int_equal(mcim_random(k_c, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc_c, 16), MCIM_OK);
  assert_int_equal(
      stage(f, txn_c, package(f, &c, "sho-c", "sho-c", IMSI_A, txn_c, k_c, opc_c), c.cert),
      MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  assert_int_equal(tre->ops->unstage(tre->ctx, txn_c), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  /* a staged package dropped to make room (MCIM_TRE_MAX_STAGED) takes its slot key along */
  char txns[MCIM_TRE_MAX_STAGED + 1][33];
  for (int i = 0; i <= MCIM_TRE_MAX_STAGED; i++) {
    snprintf(txns[i], sizeof(txns[i]), "c%031d", i);
    assert_int_equal(
        stage(f, txns[i], package(f, &c, "sho-c", "sho-c", IMSI_A, txns[i], k_c, opc_c), c.cert),
        MCIM_OK);
  }
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1 + MCIM_TRE_MAX_STAGED);
  assert_int_equal(tre->ops->unstage(tre->ctx, txns[0]), MCIM_NOT_FOUND); /* the one dropped */
  for (int i = 1; i <= MCIM_TRE_MAX_STAGED; i++)
    assert_int_equal(tre->ops->unstage(tre->ctx, txns[i]), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  mcim_jose_key_free(c.key);
  free(c.cert);

  /* pristine: every slot key goes */
  json_t *removed = NULL;
  assert_int_equal(tre->ops->pristine(tre->ctx, "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0", &removed),
                   MCIM_OK);
  json_decref(removed);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 0);
  mcim_tpm_free(t);

  /* the older files put back whole: the TRE refuses them (the counter), before any key */
  mcim_tre_close(tre);
  f->tre = NULL;
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof(from), "%s/%s", old_dir, files[i]);
    snprintf(to, sizeof(to), "%s/%s", f->dir, files[i]);
    file_copy(from, to);
  }
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &f->tre), MCIM_TRE_ROLLBACK);
  assert_null(f->tre);
}

/* The JSON payload of a compact JWS (not verified: the SHO's check is tested above). */
static json_t *jws_payload(const char *jws)
{
  const char *a = strchr(jws, '.'), *b = a ? strchr(a + 1, '.') : NULL;
  uint8_t buf[16384];
  size_t n = 0;
  assert_non_null(b);
  assert_int_equal(mcim_b64url_decode(a + 1, (size_t)(b - a - 1), buf, sizeof(buf), &n), MCIM_OK);
  json_t *j = json_loadb((const char *)buf, n, 0, NULL);
  assert_non_null(j);
  return j;
}

/* A package of `signer` (sho-a if NULL) for `txn` with K already wrapped (`k_tpm`), sealed to
 * `ka`. */
static char *package_by(struct fx *f, const struct sho *signer, const char *txn, const char *imsi,
                        json_t *k_tpm, const mcim_jose_key_t *ka)
{
  char oh[33], *pkg = NULL;
  if (!signer)
    signer = &f->a;
  mcim_hex_encode(f->opc_a, 16, oh);
  json_t *c = json_pack("{s:s, s:s, s:O, s:s, s:s}", "sho", signer->name, "imsi", imsi, "k_tpm",
                        k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  pkg = package_seal_text(signer->key, signer->name, DEVICE, txn, ka, text);
  free(text);
  json_decref(c);
  return pkg;
}

/* The TRE's side of the procedure's slot key (docs/tre-tpm.md, "The procedure's slot key"),
 * once it has its restricted attestation key: its quote offers a slot key certified by that
 * key over the txn, the same at a second quote, and the SHO's check accepts it for that txn
 * only; K wrapped to the storage primary is refused (for that txn: TPM_RC_INTEGRITY under its
 * slot key; for a txn whose quote offered none: before the TPM), K wrapped to the offered key
 * imports under it (no Rewrap) and authenticates; a procedure that ends without its package
 * (unstage) destroys its slot key. */
static void test_enrolled_tre_slot_offer(void **state)
{
  struct fx *f = *state;
  mcim_tpm_t *t = NULL;
  json_t *out = NULL, *doc = NULL, *q = NULL, *k_tpm = NULL;
  TPM2B_PUBLIC ak_pub;
  EVP_PKEY *ak = NULL;
  mcim_jose_key_t *ka = NULL;
  char *jws = NULL, *jws2 = NULL, *jwk = NULL, err[256], slot[64];
  const char *txn_c = "cccccccccccccccccccccccccccccccc",
             *txn_d = "dddddddddddddddddddddddddddddddd",
             *txn_e = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", *imsi_c = "001020000000009";

  /* the AK made as enrolment makes it (the EK certificate is not needed for that part) */
  (void)mcim_tre_tpm_enrol_begin(f->tre, &out);
  json_decref(out);
  doc = state_read(f->dir);
  const char *akp = json_string_value(
      json_object_get(json_object_get(json_object_get(doc, "keys"), "quote"), "tpm_public"));
  assert_non_null(akp);
  assert_int_equal(mcim_tpm_public_decode(akp, &ak_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak_pub, &ak), MCIM_OK);
  json_decref(doc);

  t = open_tpm();
  UINT32 before = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_c, "n1", 300, &jws), MCIM_OK);
  uint64_t t1 = mcim_monotonic_ns();
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_c, "n2", 300, &jws2), MCIM_OK);
  print_message("first quote of a txn (KA key, slot key made and certified, a write): %.1f ms; "
                "the second (the same offer): %.1f ms\n",
                (double)(t1 - t0) / 1e6, (double)(mcim_monotonic_ns() - t1) / 1e6);
  q = jws_payload(jws);
  json_t *q2 = jws_payload(jws2);
  json_t *offer = json_object_get(q, "tpm_slot");
  assert_non_null(offer);
  assert_true(json_equal(offer, json_object_get(q2, "tpm_slot")));
  json_decref(q2);
  mcim_cause_t rc = mcim_tre_slot_check(ak, offer, txn_c, err, sizeof(err));
  if (rc != MCIM_OK)
    fail_msg("the SHO's check of the TRE's offer: %s: %s", mcim_cause_name(rc), err);
  assert_int_equal(mcim_tre_slot_check(ak, offer, txn_d, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_STALE);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), before + 1);
  mcim_tpm_free(t);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);

  /* K wrapped to the storage primary, as SHOs did: refused, for this txn by the TPM under
   * the offered slot key, for a txn without an offer before the TPM */
  log_reset();
  assert_int_equal(mcim_tre_wrap_k(f->storage, f->k_a, &k_tpm), MCIM_OK);
  assert_int_equal(stage(f, txn_c, package_by(f, NULL, txn_c, imsi_c, k_tpm, ka), f->a.cert),
                   MCIM_PACKAGE_INVALID);
  assert_true(log_has("does not import under the procedure's slot key", "integrity check failed"));
  assert_int_equal(stage(f, txn_d, package_by(f, NULL, txn_d, imsi_c, k_tpm, f->ka_pub), f->a.cert),
                   MCIM_PACKAGE_INVALID);
  assert_true(log_has("offered no slot key", "FORBIDDEN"));
  json_decref(k_tpm);
  k_tpm = NULL;

  /* K wrapped as the SHO now wraps it: imported under the offered key, which is the MCIM's */
  assert_int_equal(mcim_tre_wrap_k_slot(offer, f->k_a, &k_tpm), MCIM_OK);
  log_reset();
  t0 = mcim_monotonic_ns();
  assert_int_equal(stage(f, txn_c, package_by(f, NULL, txn_c, imsi_c, k_tpm, ka), f->a.cert),
                   MCIM_OK);
  print_message("stage, K imported under the offered slot key (no Rewrap): %.1f ms\n",
                (double)(mcim_monotonic_ns() - t0) / 1e6);
  assert_true(log_has("K under the procedure's certified slot key", "no TPM2_Rewrap"));
  assert_false(log_has("TPM2_Rewrap (K to the slot key)", ""));
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txn_c, slot), MCIM_OK);
  aka_once(f->tre, "sho-a", f->k_a, f->opc_a, 64);
  doc = state_read(f->dir);
  assert_null(json_object_get(doc, "txn_keys") ? json_array_get(json_object_get(doc, "txn_keys"), 0)
                                               : NULL);
  json_decref(doc);

  /* a procedure that ends without its package takes its slot key along */
  t = open_tpm();
  UINT32 installed = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  free(jws);
  jws = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_e, "n3", 300, &jws), MCIM_OK);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), installed + 1);
  mcim_tpm_free(t);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, txn_e), MCIM_NOT_FOUND);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), installed);
  mcim_tpm_free(t);

  /* a package refused after its K went under the offered key (no free slot for a new SHO)
   * leaves that key with its procedure: the same package, staged again once a slot is free,
   * imports under it */
  struct sho extra[6], z;
  char name[8], txn_x[33], imsi_x[16], *pkg_z = NULL;
  const char *txn_f = "ffffffffffffffffffffffffffff0001";
  for (int i = 0; i < 6; i++) {
    snprintf(name, sizeof(name), "sho-%c", 'c' + i);
    extra[i].name = NULL;
    sho_make(&extra[i], strdup(name));
    snprintf(txn_x, sizeof(txn_x), "0123456789abcdef0123456789abcd%02d", i);
    snprintf(imsi_x, sizeof(imsi_x), "0010400000000%02d", i);
    free(jws);
    jws = NULL;
    assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_x, "nx", 300, &jws), MCIM_OK);
    json_t *qx = jws_payload(jws), *kx = NULL;
    char *kaj = json_dumps(json_object_get(qx, "ka_jwk"), JSON_COMPACT);
    mcim_jose_key_t *kax = NULL;
    assert_int_equal(mcim_jose_key_from_jwk(kaj, strlen(kaj), &kax), MCIM_OK);
    assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(qx, "tpm_slot"), f->k_b, &kx), MCIM_OK);
    assert_int_equal(
        stage(f, txn_x, package_by(f, &extra[i], txn_x, imsi_x, kx, kax), extra[i].cert), MCIM_OK);
    assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, txn_x, slot), MCIM_OK);
    json_decref(kx);
    json_decref(qx);
    free(kaj);
    mcim_jose_key_free(kax);
  }
  sho_make(&z, "sho-z");
  free(jws);
  jws = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_f, "nf", 300, &jws), MCIM_OK);
  json_decref(q);
  q = jws_payload(jws);
  free(jwk);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  mcim_jose_key_free(ka);
  ka = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  json_decref(k_tpm);
  k_tpm = NULL;
  assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(q, "tpm_slot"), f->k_b, &k_tpm), MCIM_OK);
  pkg_z = package_by(f, &z, txn_f, "001050000000001", k_tpm, ka);
  t = open_tpm();
  UINT32 offered = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  log_reset();
  assert_int_equal(stage(f, txn_f, strdup(pkg_z), z.cert), MCIM_PACKAGE_INVALID);
  assert_true(log_has("no free slot for a new SHO", "TOO_LARGE"));
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), offered);
  mcim_tpm_free(t);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-c", "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"),
                   MCIM_OK);
  assert_int_equal(stage(f, txn_f, pkg_z, z.cert), MCIM_OK);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, txn_f), MCIM_OK);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), offered - 2); /* sho-c's and sho-z's */
  mcim_tpm_free(t);
  for (int i = 0; i < 6; i++) {
    free((char *)extra[i].name);
    mcim_jose_key_free(extra[i].key);
    free(extra[i].cert);
  }
  mcim_jose_key_free(z.key);
  free(z.cert);

  json_decref(k_tpm);
  json_decref(q);
  mcim_jose_key_free(ka);
  EVP_PKEY_free(ak);
  free(jwk);
  free(jws);
  free(jws2);
}

int main(void)
{
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slot_keys),
      cmocka_unit_test(test_rewrap_to_null),
      cmocka_unit_test(test_sho_refuses_unenrolled),
      cmocka_unit_test(test_wrapped_to_slot_key),
      cmocka_unit_test_setup_teardown(test_two_shos, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_discard_destroys, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_enrolled_tre_slot_offer, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
