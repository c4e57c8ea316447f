/* The verdicts a role keeps about what devices show it again and again (src/roles/verified.c):
 * a TRE certificate's key and an access token, each given again only for the very same bytes,
 * trust anchor and role, inside the time the full check accepts; a refusal after a kept
 * verdict keeps its cause; the tables are bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

#include "mcim/config.h"
#include "mcim/http.h"
#include "mcim/jose.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/util.h"
#include "roles/verified.h"

#define DEVICE "dev-verified"
#define TXN "00112233445566778899aabbccddeeff"

static mcim_pki_ca_t *ops, *m2mes, *other_m2mes;
static EVP_PKEY *att; /* the TRE's attestation key */
static char *att_pem; /* its certificate, valid for a year */
static mcim_jose_key_t *att_jose, *vno_key;
static struct mcim_role ro, vno;

static const mcim_config_spec_t spec[] = {
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "0", .min = 0, .max = 3600},
};

static char *issue_for(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
                       EVP_PKEY *key, int64_t not_after)
{
  X509 *x = NULL;
  char *pem = NULL;
  mcim_cert_request_t req = {.name = name, .usage = usage, .key = key, .not_after = not_after};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  return pem;
}

/* A TRE attestation certificate. */
static char *issue(const mcim_pki_ca_t *ca, const char *name, EVP_PKEY *key, int64_t not_after)
{
  return issue_for(ca, name, MCIM_CERT_TRE_ATTESTATION, key, not_after);
}

static void role_make(struct mcim_role *r, const char *kind, const char *name)
{
  r->kind = mcim_role_kind_find(kind);
  r->name = name;
  r->m2mes_ca = m2mes->cert;
  r->operators_ca = ops->cert;
  assert_non_null(r->kind);
  assert_int_equal(mcim_config_load_string("test", "{}", NULL, spec, 1, &r->cfg, NULL, 0), MCIM_OK);
}

static int group_setup(void **state)
{
  (void)state;
  EVP_PKEY *vk = NULL;
  if (mcim_pki_ca_create("mcim operators CA", 30, &ops) != MCIM_OK ||
      mcim_pki_ca_create("mcim M2MES CA", 30, &m2mes) != MCIM_OK ||
      mcim_pki_ca_create("mcim M2MES CA", 30, &other_m2mes) != MCIM_OK ||
      mcim_pki_key_generate(&att) != MCIM_OK || mcim_pki_key_generate(&vk) != MCIM_OK ||
      mcim_jose_key_from_pkey(att, &att_jose) != MCIM_OK ||
      mcim_jose_key_from_pkey(vk, &vno_key) != MCIM_OK)
    return -1;
  EVP_PKEY_free(vk);
  role_make(&ro, "ro", "ro");
  role_make(&vno, "vno", "vno");
  vno.sign_key = vno_key;
  att_pem = issue(m2mes, DEVICE, att, 0);
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  mcim_role_verified_clear();
  mcim_config_free(ro.cfg);
  mcim_config_free(vno.cfg);
  mcim_jose_key_free(att_jose);
  mcim_jose_key_free(vno_key);
  EVP_PKEY_free(att);
  free(att_pem);
  mcim_pki_ca_free(ops);
  mcim_pki_ca_free(m2mes);
  mcim_pki_ca_free(other_m2mes);
  return 0;
}

/* Every verdict of the lower layers forgotten, so the counters show what this layer kept. */
static void forget_lower(void)
{
  mcim_pki_verdicts_clear();
  mcim_jws_verdicts_clear();
}

static mcim_cause_t key_of(struct mcim_role *r, const char *pem, const char *device)
{
  mcim_jose_key_t *k = NULL;
  mcim_cause_t rc = mcim_role_device_key_from_pem(r, pem, device, MCIM_CERT_TRE_ATTESTATION, &k);
  assert_true(rc == MCIM_OK ? k != NULL : k == NULL);
  mcim_jose_key_free(k);
  return rc;
}

static void test_cert_key_hit_and_miss(void **state)
{
  (void)state;
  mcim_role_verified_clear();
  forget_lower();
  uint64_t v0 = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  forget_lower();
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK); /* kept: no chain check */
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  /* the same bytes for another device name: checked, and refused (its CN is DEVICE) */
  assert_int_equal(key_of(&ro, att_pem, "dev-other"), MCIM_CERT_INVALID);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 2);
  /* a byte more (a trailing newline): other bytes, checked again */
  size_t n = strlen(att_pem);
  char *more = malloc(n + 2);
  assert_non_null(more);
  snprintf(more, n + 2, "%s\n", att_pem);
  assert_int_equal(key_of(&ro, more, DEVICE), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 3);
  free(more);
}

static void test_cert_key_trust_change(void **state)
{
  (void)state;
  mcim_role_verified_clear();
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK);
  /* another M2MES CA (same name, other key): the kept verdict is not for it */
  ro.m2mes_ca = other_m2mes->cert;
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_CERT_INVALID);
  ro.m2mes_ca = m2mes->cert;
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK);
}

/* The verdict is for one usage and one CA: the attestation certificate asked for as a
 * key-agreement certificate, or as an operator's certificate against the operators' CA, is
 * checked in full and refused, with the kept verdict there. */
static void test_cert_key_usage_and_anchor(void **state)
{
  (void)state;
  mcim_jose_key_t *k = NULL;
  mcim_role_verified_clear();
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK);
  forget_lower();
  uint64_t v0 = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(
      mcim_role_device_key_from_pem(&ro, att_pem, DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT, &k),
      MCIM_CERT_INVALID);
  assert_null(k);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  assert_int_equal(mcim_role_peer_key_from_pem(&ro, att_pem, DEVICE, &k), MCIM_CERT_INVALID);
  assert_null(k);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 2);
  /* and the kept one still answers, without a check */
  assert_int_equal(key_of(&ro, att_pem, DEVICE), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 2);
}

/* An operator's certificate: its key kept the same way (mcim_role_peer_key_from_pem). */
static void test_peer_key_kept(void **state)
{
  (void)state;
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_pki_key_generate(&pk), MCIM_OK);
  char *pem = issue_for(ops, "sho-a", MCIM_CERT_TLS, pk, 0);
  mcim_role_verified_clear();
  forget_lower();
  uint64_t v0 = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(mcim_role_peer_key_from_pem(&ro, pem, "sho-a", &k), MCIM_OK);
  mcim_jose_key_free(k);
  forget_lower();
  assert_int_equal(mcim_role_peer_key_from_pem(&ro, pem, "sho-a", &k), MCIM_OK);
  mcim_jose_key_free(k);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  /* another name: checked, refused */
  assert_int_equal(mcim_role_peer_key_from_pem(&ro, pem, "sho-b", &k), MCIM_CERT_INVALID);
  assert_null(k);
  /* no name: no key without the CN check, kept or not */
  assert_int_equal(mcim_role_peer_key_from_pem(&ro, pem, NULL, &k), MCIM_INVALID_ARGUMENT);
  assert_null(k);
  assert_int_equal(
      mcim_role_device_key_from_pem(&ro, att_pem, NULL, MCIM_CERT_TRE_ATTESTATION, &k),
      MCIM_INVALID_ARGUMENT);
  assert_null(k);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 2);
  free(pem);
  EVP_PKEY_free(pk);
}

static mcim_cause_t key_at(const char *pem, int64_t now)
{
  mcim_jose_key_t *k = NULL;
  mcim_cause_t rc =
      mcim_role_cert_key_at(pem, m2mes->cert, MCIM_CERT_TRE_ATTESTATION, DEVICE, now, &k);
  assert_true(rc == MCIM_OK ? k != NULL : k == NULL);
  mcim_jose_key_free(k);
  return rc;
}

/* A kept key is given only while its certificate is valid: past its notAfter the full check
 * runs again and refuses. The times are given, not waited for (a certificate valid for one
 * second had expired before its first check on a loaded CI machine). */
static void test_cert_key_expiry(void **state)
{
  (void)state;
  EVP_PKEY *k = NULL;
  int64_t t = mcim_now();
  mcim_role_verified_clear();
  assert_int_equal(mcim_pki_key_generate(&k), MCIM_OK);
  char *pem = issue(m2mes, DEVICE, k, t + 100);
  forget_lower();
  uint64_t v0 = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(key_at(pem, t), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  forget_lower();
  assert_int_equal(key_at(pem, t + 99), MCIM_OK); /* kept */
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  forget_lower();
  assert_int_equal(key_at(pem, t + 101), MCIM_CERT_EXPIRED); /* checked again, refused */
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 2);
  free(pem);
  EVP_PKEY_free(k);
}

static void test_cert_key_bounded(void **state)
{
  (void)state;
  enum { N = 129 }; /* one more than the table holds */
  char *pems[N];
  mcim_role_verified_clear();
  for (int i = 0; i < N; i++) {
    EVP_PKEY *k = NULL;
    assert_int_equal(mcim_pki_key_generate(&k), MCIM_OK);
    pems[i] = issue(m2mes, DEVICE, k, 0);
    EVP_PKEY_free(k);
    assert_int_equal(key_of(&ro, pems[i], DEVICE), MCIM_OK);
  }
  forget_lower();
  uint64_t v0 = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(key_of(&ro, pems[N - 1], DEVICE), MCIM_OK); /* the newest: kept */
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0);
  assert_int_equal(key_of(&ro, pems[0], DEVICE), MCIM_OK); /* the oldest went first */
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), v0 + 1);
  for (int i = 0; i < N; i++)
    free(pems[i]);
}

static char *proof(const mcim_jose_key_t *key, const char *what)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s}", "for", what);
  mcim_claims_t c = {.iss = DEVICE,
                     .sub = DEVICE,
                     .aud = "ro",
                     .typ = MCIM_DEVICE_REQUEST_TYP,
                     .txn = TXN,
                     .exp = mcim_now() + 300,
                     .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static mcim_cause_t request(const char *jws, const char *cert)
{
  json_t *body = json_pack("{s:s,s:s}", "proof", jws, "tre_cert", cert);
  mcim_cause_t rc = mcim_role_check_device_request(&ro, body, DEVICE, TXN, "discovery");
  json_decref(body);
  return rc;
}

/* A bad proof after a good one with the same certificate is refused with its own cause. */
static void test_bad_proof_after_good(void **state)
{
  (void)state;
  EVP_PKEY *k = NULL;
  mcim_jose_key_t *stranger = NULL;
  mcim_role_verified_clear();
  char *good = proof(att_jose, "discovery");
  assert_int_equal(request(good, att_pem), MCIM_OK);
  assert_int_equal(request(good, att_pem), MCIM_OK);
  assert_int_equal(mcim_pki_key_generate(&k), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(k, &stranger), MCIM_OK);
  char *forged = proof(stranger, "discovery");
  assert_int_equal(request(forged, att_pem), MCIM_JWS_BAD_SIGNATURE);
  char *other = proof(att_jose, "package");
  assert_int_equal(request(other, att_pem), MCIM_CLAIM_MISMATCH);
  /* the good proof with another device's certificate */
  char *theirs = issue(m2mes, "dev-other", att, 0);
  assert_int_equal(request(good, theirs), MCIM_CERT_INVALID);
  assert_int_equal(request(good, att_pem), MCIM_OK);
  free(good);
  free(forged);
  free(other);
  free(theirs);
  mcim_jose_key_free(stranger);
  EVP_PKEY_free(k);
}

static char *token(const char *scope, int64_t lifetime)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s,s:s}", "scope", scope, "imsi", "001010000000001");
  mcim_claims_t c = {.iss = "vno",
                     .sub = DEVICE,
                     .aud = "vno",
                     .typ = "mcim-access+jwt",
                     .txn = TXN,
                     .exp = mcim_now() + lifetime,
                     .extra = extra};
  assert_int_equal(mcim_jws_sign(vno_key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static mcim_cause_t check(const char *bearer, bool need_full, struct mcim_access *a)
{
  struct mcim_http_request req = {.bearer = bearer};
  return mcim_role_check_access(&vno, &req, need_full, a);
}

static void test_token_hit_miss_expiry(void **state)
{
  (void)state;
  struct mcim_access a, b;
  mcim_role_verified_clear();
  forget_lower();
  int64_t t = mcim_now();
  char *t1 = token("restricted", 60), *t2 = token("restricted", 300);
  uint64_t v0 = mcim_op_read(MCIM_OP_ES256_VERIFY);
  assert_int_equal(check(t1, false, &a), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), v0 + 1);
  forget_lower();
  assert_int_equal(check(t1, false, &b), MCIM_OK); /* kept: not verified again */
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), v0 + 1);
  assert_memory_equal(&a, &b, sizeof(a));
  assert_string_equal(b.device, DEVICE);
  assert_string_equal(b.scope, "restricted");
  /* the scope asked for is checked at every use, kept verdict or not */
  assert_int_equal(check(t1, true, &b), MCIM_SCOPE_RESTRICTED);
  /* another token: verified */
  assert_int_equal(check(t2, false, &b), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), v0 + 2);
  /* a changed signature byte: refused with its cause */
  char *bad = strdup(t2);
  assert_non_null(bad);
  char *sig = strrchr(bad, '.') + 2;
  *sig = *sig == 'A' ? 'B' : 'A';
  assert_int_equal(check(bad, false, &b), MCIM_JWS_BAD_SIGNATURE);
  /* past its exp (clock skew 0 here): the kept verdict no longer holds, the full check
   * refuses. The time is given, not waited for. */
  struct mcim_http_request req = {.bearer = t1};
  uint64_t v1 = mcim_op_read(MCIM_OP_ES256_VERIFY);
  assert_int_equal(mcim_role_check_access_at(&vno, &req, false, t + 59, &b), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), v1); /* kept to its last second */
  forget_lower();
  assert_int_equal(mcim_role_check_access_at(&vno, &req, false, t + 90, &b),
                   MCIM_TOKEN_EXPIRED);
  assert_int_equal(mcim_op_read(MCIM_OP_ES256_VERIFY), v1 + 1); /* the full check, not kept */
  free(bad);
  free(t1);
  free(t2);
}

static void test_token_id_and_bounds(void **state)
{
  (void)state;
  uint8_t id[32], id2[32], first[32];
  struct mcim_access a = {.network = "vno", .device = DEVICE, .scope = "restricted"}, b;
  mcim_role_verified_clear();
  assert_true(mcim_role_access_id(&vno, "x.y.z", id));
  assert_true(mcim_role_access_id(&ro, "x.y.z", id2)); /* another role: another verdict */
  assert_memory_not_equal(id, id2, 32);
  vno.operators_ca = m2mes->cert; /* other trust anchors */
  assert_true(mcim_role_access_id(&vno, "x.y.z", id2));
  vno.operators_ca = ops->cert;
  assert_memory_not_equal(id, id2, 32);
  /* the window is [not_before, not_after) */
  mcim_role_access_keep(id, &a, 100, 200);
  assert_false(mcim_role_access_known(id, 99, &b));
  assert_true(mcim_role_access_known(id, 100, &b));
  assert_true(mcim_role_access_known(id, 199, &b));
  assert_false(mcim_role_access_known(id, 200, &b));
  /* bounded: 256 more and the first is gone */
  memcpy(first, id, 32);
  for (int i = 0; i < 256; i++) {
    char t[16];
    snprintf(t, sizeof(t), "t%d", i);
    assert_true(mcim_role_access_id(&vno, t, id2));
    mcim_role_access_keep(id2, &a, 100, 200);
  }
  assert_false(mcim_role_access_known(first, 150, &b));
  assert_true(mcim_role_access_known(id2, 150, &b));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cert_key_hit_and_miss), cmocka_unit_test(test_cert_key_trust_change),
      cmocka_unit_test(test_cert_key_expiry),       cmocka_unit_test(test_cert_key_bounded),
      cmocka_unit_test(test_cert_key_usage_and_anchor), cmocka_unit_test(test_peer_key_kept),
      cmocka_unit_test(test_bad_proof_after_good),  cmocka_unit_test(test_token_hit_miss_expiry),
      cmocka_unit_test(test_token_id_and_bounds),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
