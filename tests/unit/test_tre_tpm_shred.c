/* Crypto-shredding with the TPM TRE (issue 11 point 6; docs/tre.md section 7, docs/tre-tpm.md
 * "Crypto-shredding"): the procedure's key-agreement key is a TPM object whose blobs leave the
 * state when its package is opened, and every write that removes an MCIM or such a key goes
 * under a new storage key. Tested on the files left behind: a package kept (as the DPF keeps
 * it) and copies of the TRE's files, then the MCIM discarded; the device's current state
 * (files, key, TPM) opens neither the package nor the copies. The control shows what the
 * rotation destroyed: the copy of before with the key of before still holds the procedure's
 * key blob, which this TPM loads (the limit docs/tre-tpm.md states), and what that opens is
 * the IMSI and OPc and K wrapped to the procedure's slot key, which the discard evicted: K
 * imports nowhere. Against a throw-away swtpm (no swtpm is a failure, not a skip). */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_slot.h"
#include "swtpm_fixture.h"
#include "tre/tre_priv.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define TXN_A "0123456789abcdef0123456789abcdef"
#define TXN_B "fedcba9876543210fedcba9876543210"

SWTPM_GROUP(true, "/tmp/mcim-tpmsh-XXXXXX")

static char dir[64];

static const char *path_in(const char *name)
{
  static char buf[4][128];
  static int n;
  char *p = buf[n++ % 4];
  snprintf(p, 128, "%s/%s", dir, name);
  return p;
}

/* One slot file as a copy, opened with a key: the unseal's cause, and the document. */
struct file_copy {
  uint8_t *buf;
  size_t len;
};

static void copy_take(const char *name, struct file_copy *c)
{
  FILE *fp = fopen(path_in(name), "rb");
  assert_non_null(fp);
  c->buf = malloc(1 << 20);
  assert_non_null(c->buf);
  c->len = fread(c->buf, 1, 1 << 20, fp);
  fclose(fp);
}

static mcim_cause_t copy_open(const struct file_copy *c, const mcim_storage_key_t *key,
                              json_t **doc)
{
  unsigned long long gen = 0;
  size_t n = 0, plain_len = 0;
  int used = 0;
  char head[128], context[96];
  memcpy(head, c->buf, sizeof(head) - 1);
  head[sizeof(head) - 1] = '\0';
  assert_int_equal(sscanf(head, "mcim-tre 2 " DEVICE " %llu %zu\n%n", &gen, &n, &used), 2);
  snprintf(context, sizeof(context), "tre/%s/%llu", DEVICE, gen);
  uint8_t *plain = malloc(c->len);
  assert_non_null(plain);
  mcim_cause_t rc = mcim_unseal(key, context, c->buf + used, n, plain, c->len, &plain_len);
  if (doc)
    *doc = rc == MCIM_OK ? json_loadb((const char *)plain, plain_len, 0, NULL) : NULL;
  free(plain);
  return rc;
}

static mcim_storage_key_t *key_copy(void)
{
  mcim_storage_key_t *k = NULL;
  assert_int_equal(mcim_storage_key_load_file(path_in("tre.key"), &k), MCIM_OK);
  return k;
}

static char *cert_issue(const char *name, EVP_PKEY *key)
{
  X509 *x = NULL;
  char *pem = NULL;
  mcim_cert_request_t req = {.name = name, .usage = MCIM_CERT_TLS, .key = key, .days = 30};
  assert_int_equal(mcim_pki_issue(ops_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  return pem;
}

/* The procedure's keys the quote of `txn` offers (signed by the attestation key): its
 * key-agreement key (a public JWK) and *slot, the slot key certified by the AK. */
static mcim_jose_key_t *quoted_ka(mcim_tre_t *tre, const char *txn, json_t **slot)
{
  char *jws = NULL, *jwk = NULL;
  mcim_jose_key_t *k = NULL;
  json_t *offer = NULL;
  assert_int_equal(tre->ops->quote(tre->ctx, "pva", txn, "n0nce", 60, &jws), MCIM_OK);
  assert_int_equal(mcim_jws_peek_claim(jws, "ka_jwk", &offer), MCIM_OK);
  assert_true(json_is_object(offer));
  assert_int_equal(mcim_jws_peek_claim(jws, "tpm_slot", slot), MCIM_OK);
  jwk = json_dumps(offer, JSON_COMPACT);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &k), MCIM_OK);
  assert_false(mcim_jose_key_has_private(k));
  json_decref(offer);
  free(jwk);
  free(jws);
  return k;
}

/* The MCIM as the SHO sends it to a TPM: K wrapped to the procedure's slot key. */
static char *package(mcim_jose_key_t *sho, const mcim_jose_key_t *to, const char *txn,
                     const json_t *slot, const uint8_t k[16])
{
  json_t *k_tpm = NULL;
  char *text = NULL, *pkg = NULL;
  assert_int_equal(mcim_tre_wrap_k_slot(slot, k, &k_tpm), MCIM_OK);
  json_t *c = json_pack("{s:s, s:s, s:o, s:s, s:s}", "sho", "sho-a", "imsi", "001020000000007",
                        "k_tpm", k_tpm, "opc", "000102030405060708090a0b0c0d0e0f", "amf", "8000");
  text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  pkg = package_seal_text(sho, "sho-a", DEVICE, txn, to, text);
  free(text);
  json_decref(c);
  return pkg;
}

/* The JWE decrypted through the TPM with the TRE's static KA key, or with the procedure's key
 * whose document entry is `txn_key` (the TRE's own key operations, white-box). */
static mcim_cause_t tpm_decrypt_to(mcim_tre_t *tre, json_t *txn_key, const char *jwe,
                                   json_t **content)
{
  struct tre_soft *t = tre->ctx;
  json_t *st = NULL;
  mcim_jose_key_t *k = NULL;
  uint8_t *plain = NULL;
  size_t n = 0;
  assert_int_equal(tre_begin(t, &st), MCIM_OK);
  mcim_cause_t rc = txn_key ? t->keys->txn_ka_jose(t, st, txn_key, &k)
                            : tre_key_jose(t, st, MCIM_TRE_CERT_KA, &k);
  if (rc == MCIM_OK)
    rc = mcim_jwe_decrypt(k, jwe, strlen(jwe), &plain, &n);
  if (rc == MCIM_OK && content)
    *content = json_loadb((const char *)plain, n, 0, NULL);
  mcim_jose_secret_free(plain, n);
  mcim_jose_key_free(k);
  tre_end(t, st);
  return rc;
}

static mcim_cause_t tpm_decrypt(mcim_tre_t *tre, json_t *txn_key, const char *jwe)
{
  return tpm_decrypt_to(tre, txn_key, jwe, NULL);
}

static void test_tpm_files_left_behind(void **state)
{
  mcim_tre_t *tre = NULL;
  EVP_PKEY *sho_pkey = NULL;
  mcim_jose_key_t *sho = NULL;
  struct file_copy before[2], now[2];
  json_t *doc = NULL, *jwe_claim = NULL;
  char slot[64], k_hex[33];
  uint8_t k[16];
  (void)state;

  snprintf(dir, sizeof(dir), "/tmp/mcim-tresh-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(mcim_tre_tpm_create(dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(dir, mcim_swtpm_tcti(sw), &tre), MCIM_OK);
  /* the AK made as enrolment makes it (this swtpm has no EK certificate) */
  json_t *enrol = NULL, *slot_offer = NULL;
  (void)mcim_tre_tpm_enrol_begin(tre, &enrol);
  json_decref(enrol);
  assert_int_equal(mcim_pki_key_generate(&sho_pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(sho_pkey, &sho), MCIM_OK);
  char *sho_cert = cert_issue("sho-a", sho_pkey);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  mcim_hex_encode(k, 16, k_hex);

  /* the procedure's key: a TPM object, its blobs in the state */
  mcim_jose_key_t *ka = quoted_ka(tre, TXN_A, &slot_offer);
  char *pkg = package(sho, ka, TXN_A, slot_offer, k);
  assert_int_equal(mcim_jws_peek_claim(pkg, "jwe", &jwe_claim), MCIM_OK);
  const char *jwe = json_string_value(jwe_claim);
  copy_take("tre.sealed", &before[0]);
  copy_take("tre.sealed.1", &before[1]);
  mcim_storage_key_t *key_before = key_copy();
  json_t *txn_key = NULL, *txn_slot = NULL;
  for (int i = 0; i < 2 && !txn_key; i++) {
    if (copy_open(&before[i], key_before, &doc) != MCIM_OK)
      continue;
    json_t *e = json_array_get(json_object_get(doc, "txn_keys"), 0);
    if (e) {
      assert_string_equal(json_string_value(json_object_get(e, "txn")), TXN_A);
      txn_key = json_incref(json_object_get(e, "key"));
      txn_slot = json_incref(json_object_get(e, "slot"));
      /* TPM blobs, no private key in clear */
      assert_non_null(json_object_get(txn_key, "tpm_private"));
      char *blob = json_dumps(txn_key, 0);
      assert_null(strstr(blob, "PRIVATE KEY"));
      free(blob);
    }
    json_decref(doc);
  }
  assert_non_null(txn_key);
  /* the static KA key (in the same TPM) does not open a package sealed to the procedure's */
  assert_int_equal(tpm_decrypt(tre, NULL, jwe), MCIM_JWE_DECRYPT_FAILED);

  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert), MCIM_OK);
  assert_int_equal(tre->ops->install(tre->ctx, TXN_A, slot), MCIM_OK);
  assert_int_equal(tre->ops->discard(tre->ctx, "sho-a", TXN_B), MCIM_OK);

  /* the device's current state */
  mcim_storage_key_t *key_now = key_copy();
  copy_take("tre.sealed", &now[0]);
  copy_take("tre.sealed.1", &now[1]);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(copy_open(&now[i], key_now, &doc), MCIM_OK);
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_null(strstr(text, k_hex));
    assert_null(strstr(text, json_string_value(json_object_get(txn_key, "tpm_private"))));
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "slots")), 0);
    free(text);
    json_decref(doc);
    assert_int_equal(copy_open(&now[i], key_before, NULL), MCIM_UNSEAL_FAILED);
    assert_int_equal(copy_open(&before[i], key_now, NULL), MCIM_UNSEAL_FAILED);
  }
  /* every key the current state holds fails on the old package: the static one ... */
  assert_int_equal(tpm_decrypt(tre, NULL, jwe), MCIM_JWE_DECRYPT_FAILED);
  /* ... and the TRE refuses it */
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert),
                   MCIM_PACKAGE_INVALID);

  /* the control, and the TPM backend's limit: the blob from a copy opened with the old key
   * still loads in this TPM (it is wrapped under the storage primary, which stays) */
  json_t *content = NULL;
  assert_int_equal(tpm_decrypt_to(tre, txn_key, jwe, &content), MCIM_OK);
  /* what that opens: IMSI and OPc, and K only as the SHO wrapped it, to the procedure's slot
   * key, which the discard evicted: it imports nowhere, so the discarded MCIM's K stays gone */
  assert_non_null(content);
  assert_null(json_object_get(content, "k"));
  char *ctext = json_dumps(content, JSON_COMPACT);
  assert_null(strstr(ctext, k_hex));
  free(ctext);
  struct mcim_tpm_dup dup;
  struct mcim_tpm_blob imported;
  struct mcim_tpm_slot old_slot = {0};
  size_t len = 0;
  assert_int_equal(mcim_tpm_dup_decode(json_object_get(content, "k_tpm"), &dup), MCIM_OK);
  assert_non_null(txn_slot);
  const char *sn = json_string_value(json_object_get(txn_slot, "tpm_parent"));
  const char *sa = json_string_value(json_object_get(txn_slot, "tpm_auth"));
  assert_non_null(sn);
  assert_non_null(sa);
  old_slot.handle = (TPM2_HANDLE)json_integer_value(json_object_get(txn_slot, "tpm_handle"));
  assert_int_equal(
      mcim_b64url_decode(sn, strlen(sn), old_slot.name.name, sizeof(old_slot.name.name), &len),
      MCIM_OK);
  old_slot.name.size = (UINT16)len;
  assert_int_equal(mcim_b64url_decode(sa, strlen(sa), old_slot.auth, sizeof(old_slot.auth), &len),
                   MCIM_OK);
  mcim_tpm_t *tpm = swtpm_open(sw);
  assert_int_equal(mcim_tpm_slot_import_own(tpm, &old_slot, &dup, &imported), MCIM_NOT_FOUND);
  print_message("the old package's K, to the evicted slot key: %s\n", mcim_tpm_detail(tpm));
  mcim_tpm_free(tpm);
  json_decref(content);
  json_decref(txn_slot);

  for (int i = 0; i < 2; i++) {
    free(before[i].buf);
    free(now[i].buf);
  }
  json_decref(txn_key);
  json_decref(slot_offer);
  json_decref(jwe_claim);
  mcim_storage_key_free(key_before);
  mcim_storage_key_free(key_now);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(sho);
  EVP_PKEY_free(sho_pkey);
  free(sho_cert);
  free(pkg);
  mcim_tre_close(tre);
  rm_tree(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tpm_files_left_behind),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
