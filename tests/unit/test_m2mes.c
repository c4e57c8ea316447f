/* The M2MES role over real TLS on loopback: manufacture of a device (POST /v1/devices by the
 * lab admin): certificates from the M2MES CA, PCID allocation, the PCID credential registered
 * at the ICF and sealed (JWE) to the TRE key-agreement key, the model's RIMs registered at the
 * PVA (the real PVA role), idempotency, conflicts, refusals, and that no secret reaches the
 * answer, the log or the store in clear. The RO's ICF is a stand-in (test double) that
 * records what it is sent and can be down or answer 409. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mcim/firmware.h"
#include "mcim/log.h"
#include "pva_m2mes_fixture.h"
#include "roles/kinds.h"
#ifdef MCIM_HAVE_TPM
#include <sys/stat.h>

#include "mcim/aka.h"
#include "mcim/attest.h"
#include "mcim/milenage.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#endif

static struct lab lab;
static struct mcim_role *m2mes, *pva;
static struct mcim_http_server *icf_srv;
static struct mcim_http_client *admin_cli;
static uint16_t ro_port;
static char base[64];
static char logpath[256];
static FILE *log_file;
static mcim_jose_key_t *att1, *ka1;
static char *first_answer;

/* ---- the ICF stand-in ---- */

static struct {
  pthread_mutex_t lock;
  int calls;
  int conflicts_left;
  json_t *bodies; /* every registration received */
} icf = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void h_icf_pcids(void *ctx, const struct mcim_http_request *req,
                        struct mcim_http_response *resp)
{
  (void)ctx;
  pthread_mutex_lock(&icf.lock);
  icf.calls++;
  json_array_append_new(icf.bodies, json_deep_copy(req->json));
  bool conflict = icf.conflicts_left > 0;
  if (conflict)
    icf.conflicts_left--;
  pthread_mutex_unlock(&icf.lock);
  if (!req->peer || strcmp(req->peer, "m2mes") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "only the M2MES registers PCIDs");
    return;
  }
  if (conflict) {
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0, "PCID held by another device");
    return;
  }
  mcim_http_reply_json(resp, 201,
                       json_pack("{s:O,s:O,s:O}", "pcid", json_object_get(req->json, "pcid"),
                                 "device", json_object_get(req->json, "device"), "expires",
                                 json_object_get(req->json, "expires")));
}

static const struct mcim_http_route icf_routes[] = {
    {"POST", "/v1/icf/pcids", h_icf_pcids, MCIM_ROUTE_PEER_CERT},
};

/* ---- helpers ---- */

static json_t *jwk_of(const mcim_jose_key_t *k)
{
  char *text = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(k, &text), MCIM_OK);
  json_t *j = json_loads(text, 0, NULL);
  free(text);
  return j;
}

static mcim_cause_t manufacture(struct mcim_http_client *cli, const char *device,
                                const mcim_jose_key_t *att, const mcim_jose_key_t *ka,
                                struct mcim_http_result *res)
{
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/devices", base);
  json_t *body = json_pack("{s:s,s:s,s:o,s:o}", "device", device, "model", "m2me-lab-1",
                           "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(ka));
  mcim_cause_t rc = mcim_http_request(cli, "POST", url, body, NULL, res);
  json_decref(body);
  return rc;
}

static mcim_cause_t post_devices(json_t *body, struct mcim_http_result *res)
{
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/devices", base);
  mcim_cause_t rc = mcim_http_request(admin_cli, "POST", url, body, NULL, res);
  json_decref(body);
  return rc;
}

static int64_t db_int(const char *db, const char *sql, const char *arg)
{
  int64_t n = -1;
  mcim_store_t *st = lab_open_db(&lab, db);
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_TEXT(arg)};
  assert_int_equal(mcim_store_query_int(st, sql, p, arg ? 1 : 0, &n), MCIM_OK);
  mcim_store_close(st);
  return n;
}

/* `pem` is a certificate of the M2MES CA for `device` and `usage`, of the key `key`. */
static void check_cert(const char *pem, const char *device, mcim_cert_usage_t usage,
                       const mcim_jose_key_t *key)
{
  X509 *cert = NULL, *ca = NULL;
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *certified = NULL;
  char *want = NULL, *got = NULL;
  assert_non_null(pem);
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_load(lab.m2mes_ca, &ca), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ca, usage, device, 0), MCIM_OK);
  assert_int_not_equal(mcim_pki_cert_verify(cert, ca, usage, "someone-else", 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_public_key(cert, ca, usage, device, 0, &pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pub, &certified), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(certified, &got), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(key, &want), MCIM_OK);
  assert_string_equal(got, want);
  free(got);
  free(want);
  mcim_jose_key_free(certified);
  EVP_PKEY_free(pub);
  X509_free(cert);
  X509_free(ca);
}

/* ---- setup ---- */

static int setup(void **state)
{
  static const char *const roles[] = {"ro", "pva", "m2mes", "sho-a", "vno"};
  char cfg[256], key[256];
  (void)state;
  icf.bodies = json_array();
  if (lab_init(&lab, roles, 5) != 0)
    return -1;
  /* everything the roles log goes to a file the test searches for secrets */
  lab_path(&lab, logpath, sizeof(logpath), "test.log");
  log_file = fopen(logpath, "w");
  if (!log_file)
    return -1;
  mcim_log_init("test-m2mes", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, log_file);

  uint16_t m2mes_port = lab_free_port(), pva_port = lab_free_port();
  ro_port = lab_free_port();
  lab_write_peers(&lab, "m2mes", (int)m2mes_port, "pva", (int)pva_port, "ro", (int)ro_port,
                  (const char *)NULL);
  if (lab_write_config(&lab, "pva", pva_port, NULL, cfg, sizeof(cfg)) != 0 ||
      mcim_role_start(&mcim_role_pva, cfg, &pva) != MCIM_OK)
    return -1;
  snprintf(key, sizeof(key), "%s/%s", lab.pki, MCIM_PKI_M2MES_CA_KEY);
  char vendor[300];
  snprintf(vendor, sizeof(vendor), "%s/%s", lab.pki, MCIM_PKI_TPM_VENDOR_CA_CERT);
  json_t *extra = json_pack("{s:s,s:s,s:s}", "m2mes_ca_key", key, "pcid_lifetime", "30d",
                            "tpm_vendor_ca", vendor);
  int rc = lab_write_config(&lab, "m2mes", m2mes_port, extra, cfg, sizeof(cfg));
  json_decref(extra);
  if (rc != 0 || mcim_role_start(&mcim_role_m2mes, cfg, &m2mes) != MCIM_OK)
    return -1;
  snprintf(base, sizeof(base), "https://localhost:%u", m2mes_port);
  admin_cli = lab_client(&lab, "admin");
  if (mcim_jose_key_generate(&att1) != MCIM_OK || mcim_jose_key_generate(&ka1) != MCIM_OK)
    return -1;
  return admin_cli ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_role_free(m2mes);
  mcim_role_free(pva);
  mcim_http_server_free(icf_srv);
  mcim_http_client_free(admin_cli);
  mcim_jose_key_free(att1);
  mcim_jose_key_free(ka1);
  free(first_answer);
  json_decref(icf.bodies);
  mcim_log_init("test-m2mes", MCIM_LOG_TEXT, MCIM_LOG_WARN, NULL);
  if (log_file)
    fclose(log_file);
  lab_remove(&lab);
  return 0;
}

/* ---- tests ---- */

#ifdef MCIM_HAVE_TPM
/* A TPM device's manufacture as the lab's factory runs it (src/lab/device.c), against a real
 * TPM: a swtpm manufactured by swtpm_setup with an EK certificate of the lab PKI's TPM vendor
 * CA (which the M2MES trusts, `tpm_vendor_ca`), a TPM TRE in it, the enrolment request, the
 * TPM's activation and certifications, the manufacture. The attestation certificate names
 * the AK and the model, the KA certificate the storage key. Before that, every refusal with
 * its cause: an activated secret that is not the one sent, a token of another device or of
 * another enrolment, a certification of one key presented for another, an AK that is not
 * restricted; and the EK certificate of a TPM whose vendor the M2MES does not trust. */
static void test_tpm_enrolment(void **state)
{
  char tpmdir[256], tredir[256], vcert[256], vkey[256], vstate[256], other_key[256];
  char other_cert[256], url[160], detail[512] = "";
  char *ops = NULL, *m2ca = NULL, *owner = NULL, *att_jwk = NULL, *ka_jwk = NULL, *st_jwk = NULL;
  mcim_swtpm_t *sw = NULL;
  mcim_tre_t *tre = NULL;
  mcim_jose_key_t *owner_key = NULL;
  json_t *begin = NULL, *answer = NULL;
  struct mcim_http_result res = {0}, res2 = {0};
  (void)state;

  lab_path(&lab, tpmdir, sizeof(tpmdir), "tpm-dev");
  lab_path(&lab, tredir, sizeof(tredir), "tre-dev");
  lab_path(&lab, vstate, sizeof(vstate), "tpm-vendor");
  snprintf(vcert, sizeof(vcert), "%s/%s", lab.pki, MCIM_PKI_TPM_VENDOR_CA_CERT);
  snprintf(vkey, sizeof(vkey), "%s/%s", lab.pki, MCIM_PKI_TPM_VENDOR_CA_KEY);
  assert_int_equal(mkdir(tpmdir, 0700), 0);
  assert_int_equal(mkdir(vstate, 0700), 0);
  mcim_cause_t rc = mcim_swtpm_manufacture(tpmdir, vcert, vkey, vstate, detail, sizeof(detail));
  if (rc == MCIM_OK)
    rc = mcim_swtpm_start(tpmdir, MCIM_SWTPM_TIED, 20000, &sw, detail, sizeof(detail));
  if (rc != MCIM_OK)
    print_error("TPM: %s: %s\n", mcim_cause_name(rc), detail);
  assert_int_equal(rc, MCIM_OK);
  ops = lab_read_text(lab.ops_ca);
  m2ca = lab_read_text(lab.m2mes_ca);
  assert_int_equal(mcim_jose_key_generate(&owner_key), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(owner_key, &owner), MCIM_OK);
  assert_int_equal(
      mcim_tre_tpm_create(tredir, mcim_swtpm_tcti(sw), "dev-enrol", "m2me-lab-1", owner, ops, m2ca),
      MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(tredir, mcim_swtpm_tcti(sw), &tre), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_tpm_storage_jwk(tre, &st_jwk), MCIM_OK);

  /* step 1: the EK certificate and the AK, the M2MES's challenge */
  assert_int_equal(mcim_tre_tpm_enrol_begin(tre, &begin), MCIM_OK);
  snprintf(url, sizeof(url), "%s/v1/devices/enrolment", base);
  json_t *req = json_pack("{s:s,s:O,s:O}", "device", "dev-enrol", "ek_cert",
                          json_object_get(begin, "ek_cert"), "ak_public",
                          json_object_get(begin, "ak_public"));
  /* only the factory enrols: an SHO's certificate is refused (403, no challenge given), a
   * caller without one is not authenticated */
  struct mcim_http_client *sho = lab_client(&lab, "sho-a");
  struct mcim_http_client *anon = lab_client(&lab, NULL);
  assert_int_equal(mcim_http_request(sho, "POST", url, req, NULL, &res2), MCIM_FORBIDDEN);
  assert_int_equal(res2.status, 403);
  assert_null(json_object_get(res2.json, "token"));
  assert_null(json_object_get(res2.json, "credential"));
  mcim_http_result_clear(&res2);
  assert_int_equal(mcim_http_request(anon, "POST", url, req, NULL, &res2),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&res2);
  mcim_http_client_free(sho);
  mcim_http_client_free(anon);
  assert_int_equal(mcim_http_request(admin_cli, "POST", url, req, NULL, &res), MCIM_OK);
  json_decref(req);
  /* an AK that is not restricted: the signing key's public area, from the certification the
   * TPM makes of it below, is refused before any credential */
  assert_int_equal(mcim_tre_tpm_enrol_answer(tre, res.json, &answer), MCIM_OK);
  const char *sign_pub = json_string_value(json_object_get(
      json_object_get(json_object_get(answer, "certify"), "attestation"), "public"));
  req = json_pack("{s:s,s:O,s:s}", "device", "dev-enrol", "ek_cert",
                  json_object_get(begin, "ek_cert"), "ak_public", sign_pub);
  assert_int_equal(mcim_http_request(admin_cli, "POST", url, req, NULL, &res2),
                   MCIM_TPM_KEY_ATTRIBUTES);
  json_decref(req);
  mcim_http_result_clear(&res2);
  /* the body's form: a member too many, a missing one */
  req = json_pack("{s:s,s:O,s:O,s:b}", "device", "dev-enrol", "ek_cert",
                  json_object_get(begin, "ek_cert"), "ak_public",
                  json_object_get(begin, "ak_public"), "trusted", 1);
  assert_int_equal(mcim_http_request(admin_cli, "POST", url, req, NULL, &res2), MCIM_UNKNOWN_FIELD);
  json_decref(req);
  mcim_http_result_clear(&res2);
  req = json_pack("{s:s,s:O}", "device", "dev-enrol", "ak_public",
                  json_object_get(begin, "ak_public"));
  assert_int_equal(mcim_http_request(admin_cli, "POST", url, req, NULL, &res2), MCIM_FIELD_MISSING);
  json_decref(req);
  mcim_http_result_clear(&res2);

  /* the manufacture request as the factory makes it, and its variants */
#define TPM_BODY(dev, tok, act, certify)                                                           \
  json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:O,s:O,s:O,s:O,s:O}}", "device", dev, "model", "m2me-lab-1", \
            "attestation_jwk", att_jwk, "ka_jwk", ka_jwk, "tpm_storage_jwk", st_jwk, "tpm",        \
            "ek_cert", json_object_get(begin, "ek_cert"), "ak_public",                             \
            json_object_get(begin, "ak_public"), "token", tok, "activation", act, "certify",       \
            certify)
  json_t *token = json_object_get(res.json, "token");
  json_t *act = json_object_get(answer, "activation");
  json_t *certify = json_object_get(answer, "certify");
  /* a wrong secret: one character of the activation changed */
  char *bad = strdup(json_string_value(act));
  bad[3] = bad[3] == 'A' ? 'B' : 'A';
  json_t *bad_act = json_string(bad);
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, bad_act, certify), &res2),
                   MCIM_TPM_ACTIVATION_FAILED);
  mcim_http_result_clear(&res2);
  /* the token of this enrolment for another device */
  assert_int_equal(post_devices(TPM_BODY("dev-other", token, act, certify), &res2),
                   MCIM_TPM_ACTIVATION_FAILED);
  mcim_http_result_clear(&res2);
  /* the KA key's certification presented as the attestation key's */
  json_t *swapped = json_deep_copy(certify);
  json_object_set(swapped, "attestation", json_object_get(certify, "ka"));
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, act, swapped), &res2),
                   MCIM_TPM_CERTIFY_INVALID);
  mcim_http_result_clear(&res2);
  /* the PCID's slot key (docs/tre-tpm.md, "The PCID credential's K"): not offered, the storage
   * primary's certification in its place (a genuine one, but not a slot key: K wrapped to it
   * could be rewrapped out of the TPM), another key's certification under its public area */
  json_t *no_pcid = json_deep_copy(certify);
  json_object_del(no_pcid, "pcid");
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, act, no_pcid), &res2),
                   MCIM_TPM_SLOT_KEY_MISSING);
  mcim_http_result_clear(&res2);
  json_t *pcid_storage = json_deep_copy(certify);
  json_object_set(pcid_storage, "pcid", json_object_get(certify, "storage"));
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, act, pcid_storage), &res2),
                   MCIM_TPM_KEY_ATTRIBUTES);
  mcim_http_result_clear(&res2);
  json_t *pcid_other = json_deep_copy(certify);
  json_t *po = json_object_get(pcid_other, "pcid");
  json_object_set(po, "attest", json_object_get(json_object_get(certify, "ka"), "attest"));
  json_object_set(po, "signature", json_object_get(json_object_get(certify, "ka"), "signature"));
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, act, pcid_other), &res2),
                   MCIM_TPM_CERTIFY_INVALID);
  mcim_http_result_clear(&res2);
  json_decref(no_pcid);
  json_decref(pcid_storage);
  json_decref(pcid_other);
  assert_int_equal(db_int("m2mes", "SELECT COUNT(*) FROM devices WHERE device = ?", "dev-enrol"),
                   0);

  /* the right one: certificates with the AK, the model and the storage key */
  assert_int_equal(post_devices(TPM_BODY("dev-enrol", token, act, certify), &res2), MCIM_OK);
  /* the PCID credential's K wrapped to the certified slot key ("k_tpm", no "k"): the TRE
   * imports it under that key and runs the PCID's AKA in the TPM */
  const char *cred_jwe = json_string_value(json_object_get(res2.json, "pcid_credential"));
  assert_non_null(cred_jwe);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, cred_jwe, strlen(cred_jwe)), MCIM_OK);
  pthread_mutex_lock(&icf.lock);
  json_t *reg = json_array_get(icf.bodies, json_array_size(icf.bodies) - 1);
  uint8_t pk[16], popc[16], res_b[8], auts[14], sqnb[MCIM_SQN_LEN];
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(reg, "k")), pk, 16),
                   MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(reg, "opc")), popc, 16),
                   MCIM_OK);
  pthread_mutex_unlock(&icf.lock);
  static const uint8_t amf[2] = {0x80, 0x00};
  mcim_milenage_t *m = NULL;
  struct mcim_aka_av av;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, pk, popc), MCIM_OK);
  mcim_sqn_to_bytes(32, sqnb);
  assert_int_equal(mcim_aka_gen_av(m, NULL, sqnb, amf, &av), MCIM_OK);
  assert_int_equal(tre->ops->aka(tre->ctx, MCIM_TRE_PCID, av.rand, av.autn, res_b, auts), MCIM_OK);
  assert_memory_equal(res_b, av.xres, 8);
  mcim_milenage_free(m);
  mcim_wipe(pk, sizeof(pk));
  X509 *cert = NULL;
  EVP_PKEY *ak = NULL, *signing = NULL, *storage = NULL;
  char model[64];
  const char *pem = json_string_value(json_object_get(res2.json, "attestation_cert"));
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &cert), MCIM_OK);
  assert_true(mcim_pki_cert_tpm_attestation(cert));
  assert_int_equal(mcim_pki_cert_tpm_ak(cert, &ak), MCIM_OK);
  assert_int_equal(mcim_pki_cert_model(cert, model, sizeof(model)), MCIM_OK);
  assert_string_equal(model, "m2me-lab-1");
  signing = X509_get_pubkey(cert);
  assert_int_not_equal(EVP_PKEY_eq(ak, signing), 1); /* the AK is not the JWS signing key */
  X509_free(cert);
  pem = json_string_value(json_object_get(res2.json, "ka_cert"));
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_tpm_storage_key(cert, &storage), MCIM_OK);
  EVP_PKEY *none = NULL;
  assert_int_equal(mcim_pki_cert_tpm_ak(cert, &none), MCIM_NOT_FOUND); /* the AK: attestation */
  X509_free(cert);
  mcim_http_result_clear(&res2);

  /* another vendor's TPM: the M2MES trusts only its vendor CA */
  mcim_pki_ca_t *other = NULL;
  char other_state[256], other_tpm[256];
  lab_path(&lab, other_cert, sizeof(other_cert), "other-vendor.crt");
  lab_path(&lab, other_key, sizeof(other_key), "other-vendor.key");
  lab_path(&lab, other_state, sizeof(other_state), "other-vendor");
  lab_path(&lab, other_tpm, sizeof(other_tpm), "tpm-other");
  assert_int_equal(mcim_pki_ca_create("tpm vendor", 2, &other), MCIM_OK);
  assert_int_equal(mcim_pki_ca_write(other, other_cert, other_key), MCIM_OK);
  mcim_pki_ca_free(other);
  assert_int_equal(mkdir(other_state, 0700), 0);
  assert_int_equal(mkdir(other_tpm, 0700), 0);
  mcim_swtpm_t *sw2 = NULL;
  assert_int_equal(
      mcim_swtpm_manufacture(other_tpm, other_cert, other_key, other_state, detail, sizeof(detail)),
      MCIM_OK);
  assert_int_equal(
      mcim_swtpm_start(other_tpm, MCIM_SWTPM_TIED, 20000, &sw2, detail, sizeof(detail)), MCIM_OK);
  mcim_tpm_t *t2 = NULL;
  uint8_t *der = NULL;
  size_t der_len = 0;
  assert_int_equal(mcim_tpm_open(mcim_swtpm_tcti(sw2), &t2, detail, sizeof(detail)), MCIM_OK);
  json_decref(begin);
  begin = NULL;
  assert_int_equal(mcim_tre_tpm_enrol_begin(tre, &begin), MCIM_OK); /* the same AK again */
  mcim_cause_t ek_rc = mcim_tpm_ek_cert(t2, &der, &der_len);
  assert_int_equal(ek_rc, MCIM_OK);
  char *ek64 = malloc(mcim_b64url_len(der_len) + 1);
  mcim_b64url_encode(der, der_len, ek64);
  req = json_pack("{s:s,s:s,s:O}", "device", "dev-other", "ek_cert", ek64, "ak_public",
                  json_object_get(begin, "ak_public"));
  assert_int_equal(mcim_http_request(admin_cli, "POST", url, req, NULL, &res2),
                   MCIM_TPM_EK_UNTRUSTED);
  json_decref(req);
  mcim_http_result_clear(&res2);
  free(ek64);
  free(der);
  mcim_tpm_free(t2);
  mcim_swtpm_free(sw2);
#undef TPM_BODY

  EVP_PKEY_free(ak);
  EVP_PKEY_free(signing);
  EVP_PKEY_free(storage);
  json_decref(bad_act);
  json_decref(swapped);
  free(bad);
  mcim_http_result_clear(&res);
  json_decref(begin);
  json_decref(answer);
  mcim_tre_close(tre);
  mcim_swtpm_free(sw);
  mcim_jose_key_free(owner_key);
  free(owner);
  free(ops);
  free(m2ca);
  free(att_jwk);
  free(ka_jwk);
  free(st_jwk);
}
#endif

/* The ICF is down: the factory is told which peer and what to do; nothing half-issued. */
static void test_icf_unreachable(void **state)
{
  struct mcim_http_result res;
  (void)state;
  assert_int_equal(manufacture(admin_cli, "dev1", att1, ka1, &res), MCIM_PEER_UNREACHABLE);
  assert_int_equal(res.status, 502);
  assert_non_null(strstr(res.detail, "ICF"));
  assert_non_null(strstr(res.detail, "send the same request again"));
  assert_null(json_object_get(res.json, "pcid_credential"));
  mcim_http_result_clear(&res);
  /* the PCID is reserved, K and OPc are kept sealed for the retry */
  assert_int_equal(db_int("m2mes", "SELECT COUNT(*) FROM devices WHERE device = ? AND"
                                   " state = 'new' AND k IS NOT NULL AND opc IS NOT NULL",
                          "dev1"),
                   1);
  /* no RIM was registered either (the ICF comes first) */
  assert_int_equal(db_int("pva", "SELECT COUNT(*) FROM rims WHERE model = ?", "m2me-lab-1"), 0);
}

static void test_issue(void **state)
{
  struct mcim_http_result res;
  uint8_t *plain = NULL;
  size_t plen = 0;
  (void)state;
  icf_srv = lab_standin(&lab, "ro", ro_port, icf_routes, 1, NULL);
  assert_non_null(icf_srv);
  assert_int_equal(manufacture(admin_cli, "dev1", att1, ka1, &res), MCIM_OK);
  assert_int_equal(res.status, 201);
  json_t *a = res.json;
  assert_string_equal(json_string_value(json_object_get(a, "device")), "dev1");
  assert_string_equal(json_string_value(json_object_get(a, "model")), "m2me-lab-1");
  const char *pcid = json_string_value(json_object_get(a, "pcid"));
  assert_non_null(pcid);
  assert_int_equal(strlen(pcid), 15);
  assert_memory_equal(pcid, "00101", 5);
  assert_string_equal(pcid, "001010000000001");
  int64_t exp = json_integer_value(json_object_get(a, "pcid_expires"));
  assert_true(exp > mcim_now() + 29 * 86400 && exp <= mcim_now() + 30 * 86400);
  check_cert(json_string_value(json_object_get(a, "attestation_cert")), "dev1",
             MCIM_CERT_TRE_ATTESTATION, att1);
  check_cert(json_string_value(json_object_get(a, "ka_cert")), "dev1",
             MCIM_CERT_TRE_KEY_AGREEMENT, ka1);
  assert_null(json_object_get(a, "k"));
  assert_null(json_object_get(a, "opc"));

  /* what the ICF got */
  pthread_mutex_lock(&icf.lock);
  assert_int_equal(icf.calls, 1);
  json_t *reg = json_incref(json_array_get(icf.bodies, 0));
  pthread_mutex_unlock(&icf.lock);
  assert_string_equal(json_string_value(json_object_get(reg, "pcid")), pcid);
  assert_string_equal(json_string_value(json_object_get(reg, "device")), "dev1");
  assert_string_equal(json_string_value(json_object_get(reg, "amf")), "8000");
  assert_int_equal(json_integer_value(json_object_get(reg, "expires")), exp);
  const char *k = json_string_value(json_object_get(reg, "k"));
  const char *opc = json_string_value(json_object_get(reg, "opc"));
  assert_int_equal(strlen(k), 32);
  assert_int_equal(strlen(opc), 32);
  assert_string_not_equal(k, opc);

  /* the credential opens with the TRE key-agreement key and only with it */
  const char *jwe = json_string_value(json_object_get(a, "pcid_credential"));
  assert_non_null(jwe);
  assert_null(strstr(jwe, k));
  assert_int_not_equal(mcim_jwe_decrypt(att1, jwe, strlen(jwe), &plain, &plen), MCIM_OK);
  assert_int_equal(mcim_jwe_decrypt(ka1, jwe, strlen(jwe), &plain, &plen), MCIM_OK);
  json_t *cred = json_loadb((const char *)plain, plen, 0, NULL);
  mcim_jose_secret_free(plain, plen);
  assert_non_null(cred);
  assert_string_equal(json_string_value(json_object_get(cred, "pcid")), pcid);
  assert_string_equal(json_string_value(json_object_get(cred, "k")), k);
  assert_string_equal(json_string_value(json_object_get(cred, "opc")), opc);
  assert_string_equal(json_string_value(json_object_get(cred, "amf")), "8000");
  assert_int_equal(json_integer_value(json_object_get(cred, "expires")), exp);
  json_decref(cred);
  /* K nowhere in the answer */
  char *text = json_dumps(a, JSON_COMPACT);
  assert_null(strstr(text, k));
  assert_null(strstr(text, opc));
  first_answer = text;
  json_decref(reg);
  mcim_http_result_clear(&res);

  /* the model's RIMs at the PVA */
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    char rim[65];
    assert_int_equal(mcim_firmware_rim("m2me-lab-1", mcim_firmware_components[i], rim), MCIM_OK);
    assert_int_equal(db_int("pva", "SELECT COUNT(*) FROM rims WHERE digest = ?", rim), 1);
  }
  /* issued: the M2MES forgot K and OPc */
  assert_int_equal(db_int("m2mes", "SELECT COUNT(*) FROM devices WHERE device = ? AND"
                                   " state = 'issued' AND k IS NULL AND opc IS NULL",
                          "dev1"),
                   1);
}

static void test_idempotent(void **state)
{
  struct mcim_http_result res;
  (void)state;
  assert_int_equal(manufacture(admin_cli, "dev1", att1, ka1, &res), MCIM_OK);
  assert_int_equal(res.status, 201);
  char *text = json_dumps(res.json, JSON_COMPACT);
  assert_string_equal(text, first_answer);
  free(text);
  mcim_http_result_clear(&res);
  pthread_mutex_lock(&icf.lock);
  assert_int_equal(icf.calls, 1);
  pthread_mutex_unlock(&icf.lock);
  /* the JWKs as JSON text are the same keys */
  char *a = NULL, *b = NULL;
  mcim_jose_key_public_jwk(att1, &a);
  mcim_jose_key_public_jwk(ka1, &b);
  assert_int_equal(post_devices(json_pack("{s:s,s:s,s:s}", "device", "dev1", "attestation_jwk", a,
                                          "ka_jwk", b),
                                &res),
                   MCIM_OK);
  mcim_http_result_clear(&res);
  free(a);
  free(b);
}

static void test_conflict(void **state)
{
  struct mcim_http_result res;
  mcim_jose_key_t *other = NULL;
  (void)state;
  assert_int_equal(mcim_jose_key_generate(&other), MCIM_OK);
  assert_int_equal(manufacture(admin_cli, "dev1", other, ka1, &res), MCIM_CONFLICT);
  assert_int_equal(res.status, 409);
  mcim_http_result_clear(&res);
  assert_int_equal(manufacture(admin_cli, "dev1", att1, other, &res), MCIM_CONFLICT);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(other);
}

/* The ICF holds the next PCID for another device: the M2MES takes the one after. */
static void test_second_device_icf_conflict(void **state)
{
  struct mcim_http_result res;
  mcim_jose_key_t *att = NULL, *ka = NULL;
  (void)state;
  assert_int_equal(mcim_jose_key_generate(&att), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&ka), MCIM_OK);
  pthread_mutex_lock(&icf.lock);
  icf.conflicts_left = 1;
  int before = icf.calls;
  pthread_mutex_unlock(&icf.lock);
  assert_int_equal(manufacture(admin_cli, "dev2", att, ka, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "pcid")), "001010000000003");
  mcim_http_result_clear(&res);
  pthread_mutex_lock(&icf.lock);
  assert_int_equal(icf.calls, before + 2);
  json_t *b1 = json_array_get(icf.bodies, (size_t)before);
  json_t *b2 = json_array_get(icf.bodies, (size_t)before + 1);
  assert_string_equal(json_string_value(json_object_get(b1, "pcid")), "001010000000002");
  /* the same K for the next PCID: it was never accepted for the first */
  assert_string_equal(json_string_value(json_object_get(b1, "k")),
                      json_string_value(json_object_get(b2, "k")));
  pthread_mutex_unlock(&icf.lock);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
}

static void test_refusals(void **state)
{
  struct mcim_http_result res;
  mcim_jose_key_t *att = NULL, *ka = NULL;
  (void)state;
  assert_int_equal(mcim_jose_key_generate(&att), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&ka), MCIM_OK);
  /* only the factory */
  struct mcim_http_client *sho = lab_client(&lab, "sho-a");
  struct mcim_http_client *anon = lab_client(&lab, NULL);
  assert_int_equal(manufacture(sho, "dev9", att, ka, &res), MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  assert_int_equal(manufacture(anon, "dev9", att, ka, &res), MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&res);
  mcim_http_client_free(sho);
  mcim_http_client_free(anon);
  /* the same key twice */
  assert_int_equal(manufacture(admin_cli, "dev9", att, att, &res), MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  /* a private key in the request (a valid private JWK: public part + "d") */
  EVP_PKEY *pk = NULL;
  BIGNUM *d = NULL;
  uint8_t db[32];
  char d64[64];
  assert_int_equal(mcim_pki_key_generate(&pk), MCIM_OK);
  assert_int_equal(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d), 1);
  assert_int_equal(BN_bn2binpad(d, db, 32), 32);
  mcim_b64url_encode(db, 32, d64);
  mcim_jose_key_t *pub = NULL;
  assert_int_equal(mcim_jose_key_from_pkey(pk, &pub), MCIM_OK);
  json_t *priv = jwk_of(pub);
  json_object_set_new(priv, "d", json_string(d64));
  BN_clear_free(d);
  EVP_PKEY_free(pk);
  mcim_jose_key_free(pub);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o}", "device", "dev9", "attestation_jwk",
                                          jwk_of(att), "ka_jwk", priv),
                                &res),
                   MCIM_KEY_INVALID);
  assert_non_null(strstr(res.detail, "private"));
  mcim_http_result_clear(&res);
  /* not a P-256 JWK */
  assert_int_equal(post_devices(json_pack("{s:s,s:{s:s},s:o}", "device", "dev9",
                                          "attestation_jwk", "kty", "RSA", "ka_jwk", jwk_of(ka)),
                                &res),
                   MCIM_KEY_INVALID);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:i,s:o}", "device", "dev9", "attestation_jwk", 7,
                                          "ka_jwk", jwk_of(ka)),
                                &res),
                   MCIM_WRONG_TYPE);
  mcim_http_result_clear(&res);
  /* fields */
  assert_int_equal(post_devices(json_pack("{s:s,s:o}", "device", "dev9", "attestation_jwk",
                                          jwk_of(att)),
                                &res),
                   MCIM_FIELD_MISSING);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o,s:s}", "device", "dev9",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(ka),
                                          "k", "00112233445566778899aabbccddeeff"),
                                &res),
                   MCIM_UNKNOWN_FIELD);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o}", "device", "../etc",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(ka)),
                                &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_array(), &res), MCIM_BAD_JSON);
  mcim_http_result_clear(&res);
  /* the model defaults to the configured one */
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o}", "device", "dev9", "attestation_jwk",
                                          jwk_of(att), "ka_jwk", jwk_of(ka)),
                                &res),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "model")), "m2me-lab-1");
  mcim_http_result_clear(&res);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
}

/* A TRE on a TPM names its storage key (tpm_storage_jwk); the M2MES certifies TPM keys as such
 * only with the TPM's enrolment ("tpm": test_tpm_enrolment has the certificates it gives):
 * without it, or with an incomplete one, TPM_ENROLMENT_REQUIRED, and no device row; with
 * an EK certificate that is none, TPM_EK_UNTRUSTED (UNSUPPORTED for all three where the M2MES
 * is built without the TPM code). A storage key equal to a TRE key, or not a public P-256 JWK,
 * is refused before. */
#ifdef MCIM_HAVE_TPM
#define TPM_REFUSAL(cause) (cause)
#else
/* an M2MES built without the TPM code refuses any TPM device with UNSUPPORTED (enrol.c) */
#define TPM_REFUSAL(cause) MCIM_UNSUPPORTED
#endif
static void test_tpm_storage(void **state)
{
  struct mcim_http_result res;
  mcim_jose_key_t *att = NULL, *ka = NULL, *stor = NULL, *other = NULL;
  (void)state;
  assert_int_equal(mcim_jose_key_generate(&att), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&ka), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&stor), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&other), MCIM_OK);
  assert_int_equal(
      post_devices(json_pack("{s:s,s:o,s:o,s:o}", "device", "dev-tpm", "attestation_jwk",
                             jwk_of(att), "ka_jwk", jwk_of(ka), "tpm_storage_jwk", jwk_of(stor)),
                   &res),
      TPM_REFUSAL(MCIM_TPM_ENROLMENT_REQUIRED));
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o,s:o,s:{}}", "device", "dev-tpm",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(ka),
                                          "tpm_storage_jwk", jwk_of(stor), "tpm"),
                                &res),
                   TPM_REFUSAL(MCIM_TPM_ENROLMENT_REQUIRED));
  mcim_http_result_clear(&res);
  assert_int_equal(
      post_devices(json_pack("{s:s,s:o,s:o,s:o,s:{s:s,s:s,s:s,s:s,s:{}}}", "device", "dev-tpm",
                             "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(ka),
                             "tpm_storage_jwk", jwk_of(stor), "tpm", "ek_cert", "MAMCAQE",
                             "ak_public", "AA", "token", "AA", "activation", "AA", "certify"),
                   &res),
      TPM_REFUSAL(MCIM_TPM_EK_UNTRUSTED));
  mcim_http_result_clear(&res);
  assert_int_equal(db_int("m2mes", "SELECT COUNT(*) FROM devices WHERE device = ?", "dev-tpm"), 0);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o,s:o}", "device", "dev-tpm2",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(other),
                                          "tpm_storage_jwk", jwk_of(other)),
                                &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o,s:i}", "device", "dev-tpm2",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(other),
                                          "tpm_storage_jwk", 7),
                                &res),
                   MCIM_WRONG_TYPE);
  mcim_http_result_clear(&res);
  assert_int_equal(post_devices(json_pack("{s:s,s:o,s:o,s:{s:s}}", "device", "dev-tpm2",
                                          "attestation_jwk", jwk_of(att), "ka_jwk", jwk_of(other),
                                          "tpm_storage_jwk", "kty", "RSA"),
                                &res),
                   MCIM_KEY_INVALID);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(stor);
  mcim_jose_key_free(other);
}

/* No K or OPc that went to the ICF appears in the log or the M2MES store. */
static void test_no_secret_leak(void **state)
{
  (void)state;
  fflush(log_file);
  char *log = lab_read_text(logpath);
  char dbpath[256];
  lab_path(&lab, dbpath, sizeof(dbpath), "m2mes.db");
  char *db = lab_read_text(dbpath); /* binary, but hex text would show as text */
  assert_non_null(log);
  assert_non_null(strstr(log, "manufactured")); /* the log is there and has content */
  pthread_mutex_lock(&icf.lock);
  size_t i;
  json_t *b;
  json_array_foreach(icf.bodies, i, b) {
    const char *k = json_string_value(json_object_get(b, "k"));
    const char *opc = json_string_value(json_object_get(b, "opc"));
    assert_null(strstr(log, k));
    assert_null(strstr(log, opc));
    if (db) {
      assert_null(strstr(db, k));
      assert_null(strstr(db, opc));
    }
  }
  pthread_mutex_unlock(&icf.lock);
  free(log);
  free(db);
}

/* A start-up with a CA key that is not the M2MES CA's is refused with a clear cause. */
static void test_bad_config(void **state)
{
  char cfg[256], key[256];
  struct mcim_role *r = NULL;
  (void)state;
  snprintf(key, sizeof(key), "%s/%s", lab.pki, MCIM_PKI_OPERATORS_CA_KEY);
  json_t *extra = json_pack("{s:s,s:s}", "m2mes_ca_key", key, "database", "m2mes-bad.db");
  lab_write_config(&lab, "m2mes", lab_free_port(), extra, cfg, sizeof(cfg));
  json_decref(extra);
  assert_int_equal(mcim_role_start(&mcim_role_m2mes, cfg, &r), MCIM_KEY_INVALID);
  assert_null(r);
  snprintf(key, sizeof(key), "%s/%s", lab.pki, MCIM_PKI_M2MES_CA_KEY);
  extra = json_pack("{s:s,s:s,s:s}", "m2mes_ca_key", key, "database", "m2mes-bad.db",
                    "pcid_prefix", "0010x");
  lab_write_config(&lab, "m2mes", lab_free_port(), extra, cfg, sizeof(cfg));
  json_decref(extra);
  assert_int_equal(mcim_role_start(&mcim_role_m2mes, cfg, &r), MCIM_CONFIG_INVALID);
  assert_null(r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_icf_unreachable),
      cmocka_unit_test(test_issue),
      cmocka_unit_test(test_idempotent),
      cmocka_unit_test(test_conflict),
      cmocka_unit_test(test_second_device_icf_conflict),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_tpm_storage),
#ifdef MCIM_HAVE_TPM
      cmocka_unit_test(test_tpm_enrolment),
#endif
      cmocka_unit_test(test_no_secret_leak),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
