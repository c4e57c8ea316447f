/* K in the TPM (docs/tre-tpm.md, "K in the TPM" and "The PCID credential's K") against a
 * real TPM 2.0: a throw-away swtpm started by the group setup (no swtpm installed is a
 * failure, not a skip; tests/unit/tre_tpm_keys_fixture.h).
 *
 * An MCIM's K wrapped by the SHO to the slot key a procedure's quote offered, imported at
 * stage and used for AKA through the TPM, the state keeping the TPM's wrapping and never K;
 * the PCID credential's K the same, at manufacture and at renewal (the previous slot key
 * evicted); K in clear, K wrapped to another key or TPM, altered blobs, k and k_tpm together,
 * k_tpm to a software TRE or a TPM TRE never enrolled: each refused, with its cause. */
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

/* ---- K in the TPM (docs/tre-tpm.md, "K in the TPM") --------------------------------------- */


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
  char pcid_kh[33];
  mcim_hex_encode(f->pcid_k, 16, pcid_kh);
  assert_false(log_has(pcid_kh, NULL)); /* the refusal names K, never its value */
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
  assert_false(log_has(kh, NULL)); /* the refusal names K, never its value */
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
      cmocka_unit_test_setup_teardown(test_k_in_tpm, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pcid_k_in_tpm, fx_setup, fx_teardown),
      cmocka_unit_test(test_pcid_unenrolled),
      cmocka_unit_test_setup_teardown(test_pcid_renewal_tpm, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
