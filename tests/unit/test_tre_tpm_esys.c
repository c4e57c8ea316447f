/* Our ESAPI subset (src/tre/tpm/tpm_esys.c, tpm_esys_cmd.c) against a real TPM 2.0 (a
 * throw-away swtpm): what it computes itself, the policy session's HMACs, checked by the TPM
 * and checked by us on the TPM's answer.
 *
 * A signing key whose policy is TPM2_PolicyAuthValue (its authPolicy computed by a trial
 * session of ours, TPM2_PolicyGetDigest) signs through a policy session only with the HMAC
 * keyed by its authValue: the right value signs, a wrong one and a nonce we tampered with are
 * refused by the TPM with TPM_RC_BAD_AUTH for session 1. An authValue given with trailing zero
 * octets signs, given with or without them (the TPM keeps it without: Part 1, 19.6.5; with
 * our sessions' empty session key the HMAC's zero padding makes both keys one anyway, so this
 * shows the two forms work, not the stripping itself). A response whose HMAC was changed
 * between the TPM and us (a TCTI of the test's, in the middle) is refused with
 * TSS2_ESYS_RC_RSP_AUTH_FAILED, and the signature is not handed out; a public area changed on
 * its way is refused (TSS2_ESYS_RC_MALFORMED_RESPONSE: its name is not its hash). The sessions
 * and TRs we do not support are refused before anything is sent. An NV index's name asked
 * again and refused leaves the TR's name as it was. No swtpm is a failure. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre/tpm/tpm_esys_priv.h"
#include "tre/tpm/tpm_lib.h"
#include "swtpm_fixture.h"

/* TPM_RC_BAD_AUTH for the first session (Part 2, 6.6: format 1, session 1): an HMAC that
 * does not check, on an object exempt from dictionary-attack protection (noDA) */
#define BAD_AUTH_SESSION_1 (TPM2_RC_BAD_AUTH | TPM2_RC_S | TPM2_RC_1)

static char state_dir[64];
static mcim_swtpm_t *sw;

/* A TCTI in the middle: passes every byte through, and when `flip` is set changes the next
 * response's octet at `at` (by `mask`), or its last octet (with one session, its HMAC's last
 * octet) when `at` is 0. */
struct mitm {
  TSS2_TCTI_CONTEXT_COMMON_V2 common;
  TSS2_TCTI_CONTEXT *inner;
  bool flip;
  size_t at;
  uint8_t mask;
};

static TSS2_RC mitm_transmit(TSS2_TCTI_CONTEXT *ctx, size_t size, const uint8_t *command)
{
  struct mitm *m = (struct mitm *)ctx;
  return Tss2_Tcti_Transmit(m->inner, size, command);
}

static TSS2_RC mitm_receive(TSS2_TCTI_CONTEXT *ctx, size_t *size, uint8_t *response,
                            int32_t timeout)
{
  struct mitm *m = (struct mitm *)ctx;
  TSS2_RC r = Tss2_Tcti_Receive(m->inner, size, response, timeout);
  if (r == TSS2_RC_SUCCESS && response && m->flip && *size > 10 && m->at < *size) {
    response[m->at ? m->at : *size - 1] ^= m->mask ? m->mask : 0x01;
    m->flip = false;
  }
  return r;
}

struct conn {
  TSS2_TCTI_CONTEXT *tcti;
  struct mitm mitm;
  ESYS_CONTEXT *esys;
  ESYS_TR primary;
};

static void conn_open(struct conn *c)
{
  memset(c, 0, sizeof(*c));
  assert_int_equal(mcim_tss2_load(NULL, 0), MCIM_OK);
  assert_int_equal(Tss2_TctiLdr_Initialize(mcim_swtpm_tcti(sw), &c->tcti), TSS2_RC_SUCCESS);
  c->mitm.common.v1.magic = 0x6d69746dULL;
  c->mitm.common.v1.version = 2;
  c->mitm.common.v1.transmit = mitm_transmit;
  c->mitm.common.v1.receive = mitm_receive;
  c->mitm.inner = c->tcti;
  assert_int_equal(Esys_Initialize(&c->esys, (TSS2_TCTI_CONTEXT *)&c->mitm, NULL),
                   TSS2_RC_SUCCESS);

  TPM2B_SENSITIVE_CREATE none = {0};
  TPM2B_PUBLIC tmpl = {
      .publicArea = {
          .type = TPM2_ALG_ECC,
          .nameAlg = TPM2_ALG_SHA256,
          .objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
                              TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                              TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH,
          .parameters.eccDetail = {
              .symmetric = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
                            .mode.aes = TPM2_ALG_CFB},
              .scheme.scheme = TPM2_ALG_NULL,
              .curveID = TPM2_ECC_NIST_P256,
              .kdf.scheme = TPM2_ALG_NULL}}};
  TPM2B_DATA no_data = {0};
  TPML_PCR_SELECTION no_pcrs = {0};
  assert_int_equal(Esys_CreatePrimary(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE, &none, &tmpl, &no_data, &no_pcrs,
                                      &c->primary, NULL, NULL, NULL, NULL),
                   TSS2_RC_SUCCESS);
}

static void conn_close(struct conn *c)
{
  if (c->esys && c->primary != ESYS_TR_NONE)
    (void)Esys_FlushContext(c->esys, c->primary);
  Esys_Finalize(&c->esys);
  Tss2_TctiLdr_Finalize(&c->tcti);
}

static void start_policy(struct conn *c, TPM2_SE type, ESYS_TR *session)
{
  const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
  assert_int_equal(Esys_StartAuthSession(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, type, &none,
                                         TPM2_ALG_SHA256, session),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_PolicyAuthValue(c->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE,
                                        ESYS_TR_NONE),
                   TSS2_RC_SUCCESS);
}

/* An ES256 key under the primary, usable only through PolicyAuthValue, with `auth`, loaded. */
static ESYS_TR make_key(struct conn *c, const TPM2B_AUTH *auth)
{
  ESYS_TR trial = ESYS_TR_NONE, key = ESYS_TR_NONE;
  TPM2B_DIGEST *policy = NULL;
  TPM2B_PRIVATE *priv = NULL;
  TPM2B_PUBLIC *pub = NULL;

  start_policy(c, TPM2_SE_TRIAL, &trial);
  assert_int_equal(Esys_PolicyGetDigest(c->esys, trial, ESYS_TR_NONE, ESYS_TR_NONE,
                                        ESYS_TR_NONE, &policy),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_FlushContext(c->esys, trial), TSS2_RC_SUCCESS);

  TPM2B_SENSITIVE_CREATE sens = {.sensitive.userAuth = *auth};
  TPM2B_PUBLIC tmpl = {
      .publicArea = {
          .type = TPM2_ALG_ECC,
          .nameAlg = TPM2_ALG_SHA256,
          /* no userWithAuth: the policy, and with it the HMAC, is the only way; noDA, or
           * the wrong values below would lock the TPM out (TPM_RC_LOCKOUT) for the rest */
          .objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM |
                              TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                              TPMA_OBJECT_NODA,
          .authPolicy = *policy,
          .parameters.eccDetail = {
              .symmetric.algorithm = TPM2_ALG_NULL,
              .scheme = {.scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256},
              .curveID = TPM2_ECC_NIST_P256,
              .kdf.scheme = TPM2_ALG_NULL}}};
  TPM2B_DATA no_data = {0};
  TPML_PCR_SELECTION no_pcrs = {0};
  assert_int_equal(Esys_Create(c->esys, c->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, &sens, &tmpl, &no_data, &no_pcrs, &priv, &pub, NULL,
                               NULL, NULL),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_Load(c->esys, c->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                             priv, pub, &key),
                   TSS2_RC_SUCCESS);
  Esys_Free(policy);
  Esys_Free(priv);
  Esys_Free(pub);
  return key;
}

/* TPM2_Sign of a fixed digest with `key` through a new policy session; the TPM's answer.
 * tamper_nonce: the TPM's last nonce altered on our side before the command; flip: the
 * Sign's answer altered in the middle (one session: its HMAC's last octet). */
static TSS2_RC sign_with_policy(struct conn *c, ESYS_TR key, bool tamper_nonce, bool flip,
                                TPMT_SIGNATURE **sig)
{
  ESYS_TR session = ESYS_TR_NONE;
  TPM2B_DIGEST digest = {.size = 32};
  TPMT_SIG_SCHEME how = {.scheme = TPM2_ALG_NULL};
  TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
  TSS2_RC r;

  memset(digest.buffer, 0x5a, sizeof(digest.buffer));
  start_policy(c, TPM2_SE_POLICY, &session);
  if (tamper_nonce)
    mcim_esys_res(c->esys, session)->nonce_tpm.buffer[0] ^= 0x80;
  c->mitm.flip = flip;
  r = Esys_Sign(c->esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &how, &ticket,
                sig);
  (void)Esys_FlushContext(c->esys, session);
  return r;
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(state_dir, sizeof(state_dir), "/tmp/mcim-tpmesys-XXXXXX");
  return swtpm_in_new_dir(state_dir, &sw) == MCIM_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
  (void)state;
  mcim_swtpm_free(sw);
  sw = NULL;
  rm_tree(state_dir);
  return 0;
}

static void test_policy_auth_value(void **state)
{
  struct conn c;
  TPM2B_AUTH auth = {.size = 16}, wrong;
  TPMT_SIGNATURE *sig = NULL;
  ESYS_TR key;
  (void)state;

  conn_open(&c);
  memset(auth.buffer, 0xa5, auth.size);
  key = make_key(&c, &auth);

  /* the right authValue: our HMAC is the one the TPM computes, and its answer checks */
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, &auth), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), TSS2_RC_SUCCESS);
  assert_non_null(sig);
  assert_int_equal(sig->sigAlg, TPM2_ALG_ECDSA);
  Esys_Free(sig);
  sig = NULL;

  /* the nonces are in the HMAC: one altered, the TPM refuses */
  assert_int_equal(sign_with_policy(&c, key, true, false, &sig), BAD_AUTH_SESSION_1);
  assert_null(sig);

  /* a wrong authValue: refused by the TPM, not by us */
  wrong = auth;
  wrong.buffer[15] ^= 0x01;
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, &wrong), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), BAD_AUTH_SESSION_1);
  assert_null(sig);

  /* no authValue at all (ESAPI's default for a loaded key): refused alike */
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, NULL), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), BAD_AUTH_SESSION_1);

  (void)Esys_FlushContext(c.esys, key);
  conn_close(&c);
}

static void test_auth_trailing_zeros(void **state)
{
  struct conn c;
  TPM2B_AUTH with_zeros = {.size = 4, .buffer = {0xab, 0xcd, 0x00, 0x00}};
  TPM2B_AUTH without = {.size = 2, .buffer = {0xab, 0xcd}};
  TPMT_SIGNATURE *sig = NULL;
  ESYS_TR key;
  (void)state;

  conn_open(&c);
  key = make_key(&c, &with_zeros); /* the TPM keeps 0xabcd */
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, &with_zeros), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), TSS2_RC_SUCCESS);
  Esys_Free(sig);
  sig = NULL;
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, &without), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), TSS2_RC_SUCCESS);
  Esys_Free(sig);
  (void)Esys_FlushContext(c.esys, key);
  conn_close(&c);
}

static void test_response_hmac_checked(void **state)
{
  struct conn c;
  TPM2B_AUTH auth = {.size = 8, .buffer = {1, 2, 3, 4, 5, 6, 7, 8}};
  TPMT_SIGNATURE *sig = NULL;
  ESYS_TR key;
  (void)state;

  conn_open(&c);
  key = make_key(&c, &auth);
  assert_int_equal(Esys_TR_SetAuth(c.esys, key, &auth), TSS2_RC_SUCCESS);
  assert_int_equal(sign_with_policy(&c, key, false, true, &sig), TSS2_ESYS_RC_RSP_AUTH_FAILED);
  assert_false(c.mitm.flip); /* the flip did land on the Sign's answer */
  assert_null(sig);          /* and nothing of it was handed out */
  /* the connection goes on: the next signature, unaltered, checks */
  assert_int_equal(sign_with_policy(&c, key, false, false, &sig), TSS2_RC_SUCCESS);
  Esys_Free(sig);
  (void)Esys_FlushContext(c.esys, key);
  conn_close(&c);
}

static void test_public_area_checked(void **state)
{
  struct conn c;
  TPM2B_PUBLIC *pub = NULL;
  TPM2B_NAME *name = NULL;
  TPM2_HANDLE h = 0;
  ESYS_TR again = ESYS_TR_NONE;
  (void)state;

  conn_open(&c);
  assert_int_equal(Esys_TR_GetTpmHandle(c.esys, c.primary, &h), TSS2_RC_SUCCESS);
  /* TPM2_ReadPublic's answer: a 10-octet header, the TPM2B_PUBLIC's size, type, nameAlg,
   * then objectAttributes (octets 16-19): userWithAuth (0x40 of the last) turned over, as a
   * TPM (or someone on its bus) lying about what the key allows would; the name no longer
   * is the hash of that area */
  c.mitm.at = 19;
  c.mitm.mask = 0x40;
  c.mitm.flip = true;
  assert_int_equal(Esys_ReadPublic(c.esys, c.primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &pub, &name, NULL),
                   TSS2_ESYS_RC_MALFORMED_RESPONSE);
  assert_false(c.mitm.flip);
  assert_null(pub);
  c.mitm.flip = true;
  assert_int_equal(Esys_TR_FromTPMPublic(c.esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         &again),
                   TSS2_ESYS_RC_MALFORMED_RESPONSE);
  assert_int_equal(again, ESYS_TR_NONE);
  /* unaltered, both check */
  assert_int_equal(Esys_ReadPublic(c.esys, c.primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &pub, &name, NULL),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_FromTPMPublic(c.esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         &again),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_Close(c.esys, &again), TSS2_RC_SUCCESS);
  Esys_Free(pub);
  Esys_Free(name);
  conn_close(&c);
}

static void test_refusals(void **state)
{
  struct conn c;
  const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
  const TPMT_SYM_DEF aes = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
                            .mode.aes = TPM2_ALG_CFB};
  ESYS_TR s = ESYS_TR_NONE, gone;
  TPM2B_PUBLIC *pub = NULL;
  TPM2B_NAME *name = NULL;
  TPM2_HANDLE h = 0;
  (void)state;

  conn_open(&c);
  /* sessions this subset does not do: HMAC, bound, salted, encrypting, SHA-1 */
  assert_int_equal(Esys_StartAuthSession(c.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &none,
                                         TPM2_ALG_SHA256, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  assert_int_equal(Esys_StartAuthSession(c.esys, ESYS_TR_NONE, c.primary, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
                                         TPM2_ALG_SHA256, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  assert_int_equal(Esys_StartAuthSession(c.esys, c.primary, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
                                         TPM2_ALG_SHA256, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  assert_int_equal(Esys_StartAuthSession(c.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &aes,
                                         TPM2_ALG_SHA256, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  assert_int_equal(Esys_StartAuthSession(c.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
                                         TPM2_ALG_SHA1, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  assert_int_equal(s, ESYS_TR_NONE);

  /* a command without authorisations given a session (audit): refused, not sent */
  assert_int_equal(Esys_ReadPublic(c.esys, c.primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, &pub, NULL, NULL),
                   TSS2_ESYS_RC_BAD_VALUE);
  /* one that needs an authorisation given none */
  assert_int_equal(Esys_EvictControl(c.esys, ESYS_TR_RH_OWNER, c.primary, ESYS_TR_NONE,
                                     ESYS_TR_NONE, ESYS_TR_NONE, 0x81000099u, &s),
                   TSS2_ESYS_RC_BAD_VALUE);
  /* a TR that is not ours, or no longer */
  assert_int_equal(Esys_ReadPublic(c.esys, (ESYS_TR)0x1fff, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, &pub, NULL, NULL),
                   TSS2_ESYS_RC_BAD_TR);
  start_policy(&c, TPM2_SE_POLICY, &s);
  gone = s;
  assert_int_equal(Esys_FlushContext(c.esys, s), TSS2_RC_SUCCESS);
  assert_int_equal(Esys_FlushContext(c.esys, gone), TSS2_ESYS_RC_BAD_TR);
  assert_int_equal(Esys_TR_GetTpmHandle(c.esys, gone, &h), TSS2_ESYS_RC_BAD_TR);
  assert_null(pub);

  /* what the TPM says of the primary: its name as ReadPublic gives it, kept with the TR */
  assert_int_equal(Esys_ReadPublic(c.esys, c.primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &pub, &name, NULL),
                   TSS2_RC_SUCCESS);
  {
    TPM2B_NAME *kept = NULL;
    assert_int_equal(Esys_TR_GetName(c.esys, c.primary, &kept), TSS2_RC_SUCCESS);
    assert_int_equal(kept->size, name->size);
    assert_memory_equal(kept->name, name->name, name->size);
    Esys_Free(kept);
  }
  Esys_Free(pub);
  Esys_Free(name);
  conn_close(&c);
}

/* An NV index's name is asked afresh at each Esys_TR_GetName (it changes once the index is
 * written); an answer whose name is not the hash of the public area sent with it is refused,
 * and the refused name must not become the TR's: it is what the cpHash of every later command
 * on the index binds (found by fuzz_tpm_response, regression nv-getname-took-a-refused-name). */
static void test_nv_name_kept_only_checked(void **state)
{
  struct conn c;
  TPM2B_NAME *name = NULL;
  ESYS_TR nv = ESYS_TR_NONE;
  (void)state;

  conn_open(&c);
  TPM2B_AUTH no_auth = {0};
  TPM2B_NV_PUBLIC pub = {
      .nvPublic = {.nvIndex = 0x01500042,
                   .nameAlg = TPM2_ALG_SHA256,
                   .attributes = TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHWRITE |
                                 TPMA_NV_AUTHREAD | TPMA_NV_NO_DA,
                   .dataSize = 8}};
  assert_int_equal(Esys_NV_DefineSpace(c.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &no_auth, &pub, &nv),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_GetName(c.esys, nv, &name), TSS2_RC_SUCCESS);
  TPM2B_NAME before = *name;
  Esys_Free(name);
  name = NULL;

  /* TPM2_NV_ReadPublic's answer carries no session: its last octet is the name's */
  c.mitm.at = 0;
  c.mitm.mask = 0x01;
  c.mitm.flip = true;
  assert_int_equal(Esys_TR_GetName(c.esys, nv, &name), TSS2_ESYS_RC_MALFORMED_RESPONSE);
  assert_false(c.mitm.flip); /* the alteration landed on this answer */
  assert_null(name);
  const struct mcim_esys_res *res = mcim_esys_res(c.esys, nv);
  assert_non_null(res);
  assert_int_equal(res->name.size, before.size);
  assert_memory_equal(res->name.name, before.name, before.size);

  assert_int_equal(Esys_NV_UndefineSpace(c.esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD,
                                         ESYS_TR_NONE, ESYS_TR_NONE),
                   TSS2_RC_SUCCESS);
  conn_close(&c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy_auth_value),
      cmocka_unit_test(test_auth_trailing_zeros),
      cmocka_unit_test(test_response_hmac_checked),
      cmocka_unit_test(test_public_area_checked),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_nv_name_kept_only_checked),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
