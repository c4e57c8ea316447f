/* PCID credential renewal against a real lab (mcimd processes on loopback, real TLS). The
 * test plays a device: TRE keys it holds itself (certified by the lab's M2MES CA), a
 * software USIM per PCID credential, its PCID registered at the ICF as the M2MES does. It
 * checks (docs/protocol.md "PCID credential lifetime and renewal"):
 *  - device-initiated at the RO: POST /v1/dpf/pcid with a restricted token gives a package
 *    signed by `ro`, sealed to the KA key, whose new PCID attaches at once; a retry of the
 *    txn gives the same answer, only to a request of the device's TRE; bad requests are
 *    refused with their causes;
 *  - the ICF keeps the claimed PCID and the new one, and terminates older ones;
 *  - network-initiated: `mcim pcid push` (admin) marks the PCID, the VNO's attach accept says
 *    `renewal: "due"`, a renewal clears it;
 *  - the M2MES CCIF: POST /v1/ccif/pcid, a package signed by `m2mes`, the PCID registered
 *    at the ICF (from the M2MES's pool), a wrong claim refused by the ICF;
 *  - an expired PCID is refused at the ICF;
 *  - a device whose attestation certificate names a TPM AK: the DPF and the CCIF refuse its
 *    renewal request without a slot key offer, or with a malformed one, each with its cause,
 *    and store nothing for it (docs/tre-tpm.md "Slots in the TPM", renewal step 5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/pki.h"
#include "mcim/store.h"
#include "mcim/util.h"

#define TXN1 "0000000000000000000000000000aa01"
#define TXN2 "0000000000000000000000000000aa02"
#define TXN3 "0000000000000000000000000000aa03"
#define TXN4 "0000000000000000000000000000aa04"
#define TXN5 "0000000000000000000000000000aa05"
#define TXN6 "0000000000000000000000000000aa06"

static char dir[] = "/tmp/mcim-pcid-XXXXXX";
static char labdir[128];
static mcim_lab_t *lab;
static struct mcim_http_client *m2mes_cli, *plain_cli;
static mcim_pki_ca_t *m2mes_ca;

static char *url(const char *role, const char *path)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s%s", mcim_lab_url(lab, role), path);
  return b;
}

/* ---- the device: TRE keys, USIM ---- */

struct cred {
  char pcid[16];
  uint8_t k[16], opc[16];
  struct mcim_sqn_params params;
  struct mcim_sqn_usim sqn;
};

struct dev {
  const char *name;
  mcim_jose_key_t *att, *ka;
  char *att_pem, *ka_pem;
  struct cred cur;
  char token[4096];
};

/* `tpm_ak`: the AK an attestation certificate names (as the M2MES's TPM enrolment), or NULL. */
static char *cert_for_ak(const mcim_jose_key_t *key, const char *name, mcim_cert_usage_t usage,
                         EVP_PKEY *tpm_ak)
{
  EVP_PKEY *pub = NULL;
  X509 *x = NULL;
  char *pem = NULL;
  assert_int_equal(mcim_jose_key_public_pkey(key, &pub), MCIM_OK);
  mcim_cert_request_t req = {
      .name = name, .usage = usage, .key = pub, .days = 30, .tpm_ak = tpm_ak};
  assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  EVP_PKEY_free(pub);
  return pem;
}

static char *cert_for(const mcim_jose_key_t *key, const char *name, mcim_cert_usage_t usage)
{
  return cert_for_ak(key, name, usage, NULL);
}

static void cred_set(struct cred *c, const char *pcid, const uint8_t k[16], const uint8_t opc[16])
{
  snprintf(c->pcid, sizeof(c->pcid), "%s", pcid);
  memcpy(c->k, k, 16);
  memcpy(c->opc, opc, 16);
  mcim_sqn_params_default(&c->params);
  assert_int_equal(mcim_sqn_usim_init(&c->params, &c->sqn), MCIM_OK);
}

/* A manufactured device: keys, certificates, a first PCID registered at the ICF. */
static void dev_make(struct dev *d, const char *name, const char *pcid, int64_t expires)
{
  uint8_t k[16], opc[16];
  char kh[33], oh[33];
  memset(d, 0, sizeof(*d));
  d->name = name;
  assert_int_equal(mcim_jose_key_generate(&d->att), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&d->ka), MCIM_OK);
  d->att_pem = cert_for(d->att, name, MCIM_CERT_TRE_ATTESTATION);
  d->ka_pem = cert_for(d->ka, name, MCIM_CERT_TRE_KEY_AGREEMENT);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc, 16), MCIM_OK);
  cred_set(&d->cur, pcid, k, opc);
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "pcid", pcid, "device", name, "k", kh,
                           "opc", oh, "amf", "8000", "expires", (json_int_t)expires);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("ro", "/v1/icf/pcids"), body, NULL, &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  json_decref(body);
}

static void dev_free(struct dev *d)
{
  mcim_jose_key_free(d->att);
  mcim_jose_key_free(d->ka);
  free(d->att_pem);
  free(d->ka_pem);
}

/* Attach at the VNO with credential `c`: the cause, the token in d->token, and the attach
 * accept (caller decrefs) in *accept. */
static mcim_cause_t attach(struct dev *d, struct cred *c, json_t **accept)
{
  struct mcim_http_result r;
  if (accept)
    *accept = NULL;
  json_t *body = json_pack("{s:s,s:s}", "pcid", c->pcid, "device", d->name);
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url("vno", "/v1/attach"), body, NULL, &r);
  json_decref(body);
  if (rc != MCIM_OK) {
    mcim_http_result_clear(&r);
    return rc;
  }
  uint8_t rand[16], autn[16];
  assert_int_equal(
      mcim_hex_decode_str(json_string_value(json_object_get(r.json, "rand")), rand, 16), MCIM_OK);
  assert_int_equal(
      mcim_hex_decode_str(json_string_value(json_object_get(r.json, "autn")), autn, 16), MCIM_OK);
  char path[128];
  snprintf(path, sizeof(path), "/v1/attach/%s",
           json_string_value(json_object_get(r.json, "attach_id")));
  mcim_http_result_clear(&r);
  mcim_milenage_t *m = NULL;
  struct mcim_sqn_usim next;
  struct mcim_aka_usim_out out;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, c->k, c->opc), MCIM_OK);
  rc = mcim_aka_usim_check(m, &c->params, &c->sqn, rand, autn, &next, &out);
  mcim_milenage_free(m);
  if (rc != MCIM_OK)
    return rc;
  c->sqn = next;
  char hex[17];
  mcim_hex_encode(out.res, 8, hex);
  body = json_pack("{s:s}", "res", hex);
  rc = mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r);
  json_decref(body);
  if (rc == MCIM_OK) {
    snprintf(d->token, sizeof(d->token), "%s", json_string_value(json_object_get(r.json, "token")));
    if (accept)
      *accept = json_incref(r.json);
  }
  mcim_http_result_clear(&r);
  return rc;
}

/* The renewal request statement (mcim-renew+jwt by the TRE attestation key); `tpm_slot`, when
 * not NULL, its "tpm_slot" member (a TPM TRE's slot key offer). */
static char *renew_request_slot(const struct dev *d, const char *aud, const char *txn,
                                const char *pcid, json_t *tpm_slot)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:s}", "pcid", pcid);
  if (tpm_slot)
    assert_int_equal(json_object_set(extra, "tpm_slot", tpm_slot), 0);
  mcim_claims_t c = {.iss = d->name,
                     .sub = d->name,
                     .aud = aud,
                     .typ = "mcim-renew+jwt",
                     .txn = txn,
                     .iat = now,
                     .exp = now + 300,
                     .extra = extra};
  assert_int_equal(mcim_jws_sign(d->att, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static char *renew_request(const struct dev *d, const char *aud, const char *txn, const char *pcid)
{
  return renew_request_slot(d, aud, txn, pcid, NULL);
}

static json_t *renew_body(const struct dev *d, const char *txn, const char *request)
{
  return json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", d->name, "request", request,
                   "tre_cert", d->att_pem, "ka_cert", d->ka_pem);
}

static long last_retry_after; /* the Retry-After of renew_call's last answer, 0 if none */

/* POST {role}{path}: the cause; the package (free it) in *pkg on success. */
static mcim_cause_t renew_call(const char *role, const char *path, const char *token, json_t *body,
                               char **pkg)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url(role, path), body, token, &r);
  last_retry_after = r.retry_after;
  if (pkg)
    *pkg = rc == MCIM_OK && json_string_value(json_object_get(r.json, "package"))
               ? strdup(json_string_value(json_object_get(r.json, "package")))
               : NULL;
  if (rc == MCIM_OK) /* the answer is {package} and nothing else (no secret beside it) */
    assert_int_equal(json_object_size(r.json), 1);
  mcim_http_result_clear(&r);
  return rc;
}

/* The issuer's statement key, from its GET /v1/certificate (checked against the operators' CA). */
static mcim_jose_key_t *issuer_key(const char *role)
{
  struct mcim_http_result r;
  char ca[256];
  X509 *cert = NULL, *cax = NULL;
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *key = NULL;
  assert_int_equal(
      mcim_http_request(plain_cli, "GET", url(role, "/v1/certificate"), NULL, NULL, &r), MCIM_OK);
  const char *pem = json_string_value(json_object_get(r.json, "cert"));
  snprintf(ca, sizeof(ca), "%s/pki/%s", mcim_lab_path(lab), MCIM_PKI_OPERATORS_CA_CERT);
  assert_int_equal(mcim_pki_cert_load(ca, &cax), MCIM_OK);
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_public_key(cert, cax, MCIM_CERT_TLS, role, 0, &pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pub, &key), MCIM_OK);
  EVP_PKEY_free(pub);
  X509_free(cert);
  X509_free(cax);
  mcim_http_result_clear(&r);
  return key;
}

/* What the TRE does: open the package (issuer's signature, claims, JWE to the KA key) and
 * take the credential. */
static void open_package(const struct dev *d, const char *issuer, const char *txn, const char *pkg,
                         struct cred *out, int64_t *expires)
{
  mcim_jose_key_t *ikey = issuer_key(issuer);
  mcim_statement_t *st = NULL;
  uint8_t *plain = NULL, k[16], opc[16];
  size_t len = 0;
  mcim_jws_expect_t ex = {.iss = issuer,
                          .aud = d->name,
                          .sub = d->name,
                          .typ = "mcim-pcid+jwt",
                          .txn = txn,
                          .skew = 30};
  assert_int_equal(mcim_package_open(pkg, strlen(pkg), ikey, &ex, d->ka, &st, &plain, &len),
                   MCIM_OK);
  json_t *c = json_loadb((const char *)plain, len, 0, NULL);
  assert_non_null(c);
  const char *pcid = json_string_value(json_object_get(c, "pcid"));
  assert_non_null(pcid);
  assert_int_equal(strlen(pcid), 15);
  assert_string_equal(json_string_value(json_object_get(c, "amf")), "8000");
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(c, "k")), k, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(c, "opc")), opc, 16),
                   MCIM_OK);
  *expires = json_integer_value(json_object_get(c, "expires"));
  cred_set(out, pcid, k, opc);
  json_decref(c);
  mcim_jose_secret_free(plain, len);
  mcim_statement_free(st);
  mcim_jose_key_free(ikey);
}

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir))
    return -1;
  setenv("MCIM_BIN", MCIM_BIN_DIR, 1);
  snprintf(labdir, sizeof(labdir), "%s/lab", dir);
  if (mcim_lab_up(labdir, NULL, &lab) != MCIM_OK)
    return -1;
  char ca[256], cert[256], key[256], mca[256], mkey[256];
  snprintf(ca, sizeof(ca), "%s/pki/%s", mcim_lab_path(lab), MCIM_PKI_OPERATORS_CA_CERT);
  snprintf(cert, sizeof(cert), "%s/pki/m2mes/cert.pem", mcim_lab_path(lab));
  snprintf(key, sizeof(key), "%s/pki/m2mes/key.pem", mcim_lab_path(lab));
  snprintf(mca, sizeof(mca), "%s/pki/%s", mcim_lab_path(lab), MCIM_PKI_M2MES_CA_CERT);
  snprintf(mkey, sizeof(mkey), "%s/pki/%s", mcim_lab_path(lab), MCIM_PKI_M2MES_CA_KEY);
  struct mcim_http_client_cfg mc = {.ca_file = ca, .cert_file = cert, .key_file = key};
  struct mcim_http_client_cfg pc = {.ca_file = ca};
  if (mcim_http_client_new(&mc, &m2mes_cli) != MCIM_OK ||
      mcim_http_client_new(&pc, &plain_cli) != MCIM_OK ||
      mcim_pki_ca_load(mca, mkey, &m2mes_ca) != MCIM_OK)
    return -1;
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_client_free(m2mes_cli);
  mcim_http_client_free(plain_cli);
  mcim_pki_ca_free(m2mes_ca);
  if (lab)
    mcim_lab_down(lab);
  mcim_lab_free(lab);
  if (getenv("MCIM_TEST_KEEP")) { /* to read the daemons' logs afterwards */
    fprintf(stderr, "lab kept in %s\n", dir);
    return 0;
  }
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ---- */

/* A count read from the store of the lab's role `role` (its SQLite file, read only): `sql`
 * with `arg` as its one parameter, or none. */
static int64_t store_count(const char *role, const char *sql, const char *arg)
{
  char db[512];
  mcim_store_t *st = NULL;
  mcim_store_opts_t ro = {.read_only = true};
  int64_t n = -1;
  mcim_val_t q[] = {MCIM_TEXT(arg)};
  snprintf(db, sizeof(db), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(mcim_store_open(db, &ro, &st), MCIM_OK);
  assert_int_equal(mcim_store_query_int(st, sql, arg ? q : NULL, arg ? 1 : 0, &n), MCIM_OK);
  mcim_store_close(st);
  return n;
}

/* What a renewal stores at `role`: the PCIDs allocated from its pool, the answers to `txn`,
 * and the rows of the device (the ICF's AuC at the RO, the CCIF's renewals at the M2MES). */
struct stored {
  int64_t allocated, answers, device_rows;
};

static struct stored stored_at(const char *role, const char *txn, const char *device)
{
  struct stored s;
  s.allocated = store_count(role, "SELECT next FROM pcid_counter WHERE id = 1", NULL);
  s.answers = store_count(role, "SELECT COUNT(*) FROM answers WHERE txn = ?", txn);
  s.device_rows =
      store_count(role,
                  strcmp(role, "ro") == 0 ? "SELECT COUNT(*) FROM auc WHERE device = ?"
                                          : "SELECT COUNT(*) FROM ccif_renewals WHERE device = ?",
                  device);
  return s;
}

/* `sql` with `device` as its one parameter written to the store of the lab's role `role` (its
 * SQLite file): the rows it changed. */
static int64_t store_write(const char *role, const char *sql, const char *device)
{
  char db[512];
  mcim_store_t *st = NULL;
  mcim_store_opts_t rw = {.read_only = false};
  mcim_val_t q[] = {MCIM_TEXT(device)};
  snprintf(db, sizeof(db), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(mcim_store_open(db, &rw, &st), MCIM_OK);
  assert_int_equal(mcim_store_exec(st, sql, q, 1, NULL, NULL), MCIM_OK);
  int64_t n = mcim_store_changes(st);
  mcim_store_close(st);
  return n;
}

/* The lab's role `role` granted `device` its last renewal pcid_renewal_interval (and more)
 * ago: the row of its limit moved back in time (the clock is not moved and nothing sleeps). */
static void interval_passed(const char *role, const char *device)
{
  assert_int_equal(store_write(role,
                               "UPDATE pcid_grants SET granted = granted - 31 * 86400"
                               " WHERE device = ?",
                               device),
                   1);
}

static void test_dpf_renewal(void **state)
{
  (void)state;
  struct dev d, other;
  struct cred fresh = {0};
  int64_t expires = 0;
  char *pkg = NULL, *again = NULL;
  dev_make(&d, "pcid-d1", "001017000000001", mcim_now() + 600);
  dev_make(&other, "pcid-d2", "001017000000002", mcim_now() + 600);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);

  char *req = renew_request(&d, "ro", TXN1, d.cur.pcid);
  json_t *body = renew_body(&d, TXN1, req);
  /* no token, another device's token */
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", NULL, body, NULL), MCIM_NO_ACCESS);
  assert_int_equal(attach(&other, &other.cur, NULL), MCIM_OK);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", other.token, body, NULL), MCIM_FORBIDDEN);

  /* the renewal, with the restricted token of the VNO */
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg), MCIM_OK);
  open_package(&d, "ro", TXN1, pkg, &fresh, &expires);
  assert_memory_equal(fresh.pcid, "0010190", 7); /* the RO's pool */
  assert_string_not_equal(fresh.pcid, d.cur.pcid);
  assert_true(expires > mcim_now() + 29 * 86400 && expires <= mcim_now() + 30 * 86400 + 60);
  /* a retry of the txn: the same answer, not a second PCID */
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &again), MCIM_OK);
  assert_string_equal(pkg, again);
  free(again);
  json_decref(body);
  free(req);
  /* ... but only to a request of d's TRE for the txn (DESIGN.md section 10), d's token or
   * not: one signed by another key with d's certificates, another device's certificates */
  struct dev forger = d;
  forger.att = other.att;
  req = renew_request(&forger, "ro", TXN1, d.cur.pcid);
  body = renew_body(&d, TXN1, req);
  again = NULL;
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &again),
                   MCIM_JWS_BAD_SIGNATURE);
  assert_null(again);
  json_object_set_new(body, "tre_cert", json_string(other.att_pem));
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &again), MCIM_CERT_INVALID);
  assert_null(again);
  json_decref(body);
  free(req);

  /* the new credential attaches at once, and so does the old one (the TRE keeps it as
   * pcid-prev until the new one has passed an AKA) */
  json_t *accept = NULL;
  assert_int_equal(attach(&d, &fresh, &accept), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(accept, "scope")), "restricted");
  assert_null(json_object_get(accept, "renewal"));
  json_decref(accept);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);

  /* renewing again from the old one (the device never installed the first renewal), a new
   * txn: not within pcid_renewal_interval of the first (DESIGN.md section 10: each renewal
   * is a PCID of the pool and rows at the ICF), nothing allocated or stored for it; a retry
   * of the first txn still gets its answer */
  req = renew_request(&d, "ro", TXN2, d.cur.pcid);
  body = renew_body(&d, TXN2, req);
  struct cred second = {0};
  char *pkg2 = NULL;
  struct stored before = stored_at("ro", TXN2, d.name);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg2),
                   MCIM_RENEWAL_TOO_EARLY);
  assert_true(last_retry_after > 86400 - 600 && last_retry_after <= 86400);
  assert_null(pkg2);
  struct stored after = stored_at("ro", TXN2, d.name);
  assert_int_equal(after.allocated, before.allocated);
  assert_int_equal(after.answers, 0);
  assert_int_equal(after.device_rows, before.device_rows);
  /* logged, not traced: a flood of refusals adds no row */
  assert_int_equal(store_count("ro", "SELECT COUNT(*) FROM trace WHERE txn = ?", TXN2), 0);
  char *req1 = renew_request(&d, "ro", TXN1, d.cur.pcid);
  json_t *body1 = renew_body(&d, TXN1, req1);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body1, &again), MCIM_OK);
  assert_string_equal(pkg, again);
  free(again);
  json_decref(body1);
  free(req1);
  /* once the interval has passed, the same request (its jti not spent by the refusal): the
   * unused renewal is terminated, the claimed one stays */
  interval_passed("ro", d.name);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg2), MCIM_OK);
  open_package(&d, "ro", TXN2, pkg2, &second, &expires);
  assert_string_not_equal(second.pcid, fresh.pcid);
  assert_int_equal(attach(&d, &fresh, NULL), MCIM_SUBSCRIPTION_TERMINATED);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);
  assert_int_equal(attach(&d, &second, NULL), MCIM_OK);
  json_decref(body);
  free(req);
  free(pkg2);

  /* renewing from the second: now the first PCID goes */
  interval_passed("ro", d.name);
  req = renew_request(&d, "ro", TXN3, second.pcid);
  body = renew_body(&d, TXN3, req);
  char *pkg3 = NULL;
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg3), MCIM_OK);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_SUBSCRIPTION_TERMINATED);
  assert_int_equal(attach(&d, &second, NULL), MCIM_OK);
  /* a claim of a superseded PCID is refused (after the limit: the interval passed) */
  free(req);
  json_decref(body);
  interval_passed("ro", d.name);
  req = renew_request(&d, "ro", TXN4, d.cur.pcid);
  body = renew_body(&d, TXN4, req);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CLAIM_MISMATCH);
  free(req);
  json_decref(body);
  free(pkg3);
  free(pkg);
  dev_free(&d);
  dev_free(&other);
}

static void test_dpf_refusals(void **state)
{
  (void)state;
  struct dev d, other;
  dev_make(&d, "pcid-d3", "001017000000003", mcim_now() + 600);
  dev_make(&other, "pcid-d4", "001017000000004", mcim_now() + 600);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);
  /* another device's PCID as the claim */
  char *req = renew_request(&d, "ro", TXN5, other.cur.pcid);
  json_t *body = renew_body(&d, TXN5, req);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CLAIM_MISMATCH);
  json_decref(body);
  free(req);
  /* a request for the M2MES sent to the RO */
  req = renew_request(&d, "m2mes", TXN5, d.cur.pcid);
  body = renew_body(&d, TXN5, req);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CLAIM_MISMATCH);
  json_decref(body);
  free(req);
  /* another txn in the body than in the request */
  req = renew_request(&d, "ro", TXN5, d.cur.pcid);
  body = renew_body(&d, TXN6, req);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CLAIM_MISMATCH);
  json_decref(body);
  /* the other device's certificates; the attestation certificate as KA certificate */
  body = renew_body(&d, TXN5, req);
  json_object_set_new(body, "tre_cert", json_string(other.att_pem));
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CERT_INVALID);
  json_object_set_new(body, "tre_cert", json_string(d.att_pem));
  json_object_set_new(body, "ka_cert", json_string(d.att_pem));
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CERT_INVALID);
  /* signed by the KA key instead of the attestation key */
  json_object_set_new(body, "ka_cert", json_string(d.ka_pem));
  json_object_set_new(body, "tre_cert", json_string(d.ka_pem));
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CERT_INVALID);
  json_decref(body);
  /* a missing field, an unknown one */
  body = renew_body(&d, TXN5, req);
  json_object_del(body, "ka_cert");
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_FIELD_MISSING);
  json_object_set_new(body, "ka_cert", json_string(d.ka_pem));
  json_object_set_new(body, "k", json_string("00"));
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_UNKNOWN_FIELD);
  json_decref(body);
  /* and the good one still works after all that (no jti was spent by a refusal) */
  body = renew_body(&d, TXN5, req);
  char *pkg = NULL;
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg), MCIM_OK);
  json_decref(body);
  free(pkg);
  free(req);
  dev_free(&d);
  dev_free(&other);
}

/* A device whose TRE signs a statement for any txn its agent names gets a refusal traced
 * at most traced_refusals_per_hour times an hour at a role (120 by default), each in a txn
 * of its own; beyond it the refusal is logged only, answered the same (DESIGN.md section 10:
 * before 2026-12-07 each added a row for record_retention). The count is per hour: a test
 * that straddles one may see up to twice the limit. */
static void test_traced_refusals_bounded(void **state)
{
  (void)state;
  const int max = 120;
  struct dev d, other;
  char txn[33];
  dev_make(&d, "pcid-d9", "001017000000009", mcim_now() + 600);
  dev_make(&other, "pcid-d10", "001017000000010", mcim_now() + 600);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);
  int64_t hour = mcim_now() / 3600;
  for (int i = 0; i < max + 5; i++) {
    snprintf(txn, sizeof(txn), "%032x", 0xf2000000u + (unsigned)i);
    char *req = renew_request(&d, "ro", txn, other.cur.pcid); /* another device's PCID */
    json_t *body = renew_body(&d, txn, req);
    assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_CLAIM_MISMATCH);
    json_decref(body);
    free(req);
  }
  int64_t rows = store_count("ro", "SELECT COUNT(*) FROM trace WHERE to_name = ? AND"
                                   " cause = 'CLAIM_MISMATCH'", d.name);
  if (mcim_now() / 3600 == hour)
    assert_int_equal(rows, max);
  else
    assert_true(rows >= max && rows <= 2 * max);
  dev_free(&d);
  dev_free(&other);
}

static void test_network_initiated(void **state)
{
  (void)state;
  struct dev d;
  json_t *accept = NULL;
  struct mcim_http_result r;
  dev_make(&d, "pcid-d5", "001017000000005", mcim_now() + 600);
  assert_int_equal(attach(&d, &d.cur, &accept), MCIM_OK);
  assert_null(json_object_get(accept, "renewal"));
  json_decref(accept);

  /* only the admin pushes */
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("ro", "/v1/admin/pcid/pcid-d5/renew"),
                                     NULL, NULL, &r),
                   MCIM_FORBIDDEN);
  mcim_http_result_clear(&r);
  struct mcim_http_client *admin = mcim_lab_admin_client(lab);
  assert_int_equal(
      mcim_http_request(admin, "POST", url("ro", "/v1/admin/pcid/nobody/renew"), NULL, NULL, &r),
      MCIM_NOT_FOUND);
  mcim_http_result_clear(&r);

  /* the CLI: mcim pcid push */
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "%s/mcim pcid push pcid-d5 --dir %s >/dev/null", MCIM_BIN_DIR, labdir);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof(cmd), "%s/mcim pcid push nobody --dir %s 2>/dev/null", MCIM_BIN_DIR, labdir);
  assert_int_not_equal(system(cmd), 0);
  /* pushing twice is harmless */
  json_t *txn = json_pack("{s:s}", "txn", TXN6);
  assert_int_equal(
      mcim_http_request(admin, "POST", url("ro", "/v1/admin/pcid/pcid-d5/renew"), txn, NULL, &r),
      MCIM_OK);
  assert_int_equal(r.status, 202);
  assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "pcids"), 0)),
                      d.cur.pcid);
  mcim_http_result_clear(&r);
  json_decref(txn);

  /* the VNO tells the device at its next attach */
  assert_int_equal(attach(&d, &d.cur, &accept), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(accept, "renewal")), "due");
  json_decref(accept);

  /* the device renews; the flag is gone, for the old PCID and the new one */
  char *req = renew_request(&d, "ro", TXN1, d.cur.pcid);
  json_t *body = renew_body(&d, TXN1, req);
  char *pkg = NULL;
  struct cred fresh = {0};
  int64_t expires = 0;
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg), MCIM_OK);
  open_package(&d, "ro", TXN1, pkg, &fresh, &expires);
  assert_int_equal(attach(&d, &d.cur, &accept), MCIM_OK);
  assert_null(json_object_get(accept, "renewal"));
  json_decref(accept);
  assert_int_equal(attach(&d, &fresh, &accept), MCIM_OK);
  assert_null(json_object_get(accept, "renewal"));
  json_decref(accept);
  json_decref(body);
  free(req);
  free(pkg);

  /* within pcid_renewal_interval of that renewal: a device-initiated one is refused, one the
   * network asks for (pushed again) is not */
  req = renew_request(&d, "ro", TXN2, fresh.pcid);
  body = renew_body(&d, TXN2, req);
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, NULL), MCIM_RENEWAL_TOO_EARLY);
  snprintf(cmd, sizeof(cmd), "%s/mcim pcid push pcid-d5 --dir %s >/dev/null", MCIM_BIN_DIR, labdir);
  assert_int_equal(system(cmd), 0);
  char *pkg2 = NULL;
  assert_int_equal(renew_call("ro", "/v1/dpf/pcid", d.token, body, &pkg2), MCIM_OK);
  struct cred second = {0};
  open_package(&d, "ro", TXN2, pkg2, &second, &expires);
  assert_string_not_equal(second.pcid, fresh.pcid);
  free(pkg2);
  json_decref(body);
  free(req);
  dev_free(&d);
}

static void test_ccif_renewal(void **state)
{
  (void)state;
  struct dev d, other;
  struct cred fresh = {0};
  int64_t expires = 0;
  char *pkg = NULL, *again = NULL;
  dev_make(&d, "pcid-d6", "001017000000006", mcim_now() + 600);
  dev_make(&other, "pcid-d7", "001017000000007", mcim_now() + 600);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);

  /* the M2MES checks the access token like the RO */
  char *req = renew_request(&d, "m2mes", TXN2, d.cur.pcid);
  json_t *body = renew_body(&d, TXN2, req);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", NULL, body, NULL), MCIM_NO_ACCESS);
  /* a request for the RO sent to the M2MES */
  char *wrong = renew_request(&d, "ro", TXN2, d.cur.pcid);
  json_t *wbody = renew_body(&d, TXN2, wrong);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, wbody, NULL), MCIM_CLAIM_MISMATCH);
  json_decref(wbody);
  free(wrong);
  /* a claim the ICF does not know for this device: the ICF refuses, the M2MES relays */
  wrong = renew_request(&d, "m2mes", TXN3, other.cur.pcid);
  wbody = renew_body(&d, TXN3, wrong);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, wbody, NULL), MCIM_CLAIM_MISMATCH);
  json_decref(wbody);
  free(wrong);
  /* Requests of that txn again, each signed afresh (a new jti): refused from the refused
   * row, no other PCID taken from the pool. Before 2026-12-07 the row was deleted and each
   * retry took one and called the ICF again, without end. */
  int64_t rows = store_count("m2mes", "SELECT COUNT(*) FROM ccif_renewals WHERE device = ?",
                             d.name);
  assert_int_equal(store_count("m2mes",
                               "SELECT COUNT(*) FROM ccif_renewals WHERE device = ?"
                               " AND state = 'refused' AND k IS NULL AND opc IS NULL",
                               d.name),
                   1);
  for (int i = 0; i < 3; i++) {
    wrong = renew_request(&d, "m2mes", TXN3, other.cur.pcid);
    wbody = renew_body(&d, TXN3, wrong);
    assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, wbody, NULL),
                     MCIM_CLAIM_MISMATCH);
    json_decref(wbody);
    free(wrong);
  }
  assert_int_equal(store_count("m2mes", "SELECT COUNT(*) FROM ccif_renewals WHERE device = ?",
                               d.name),
                   rows);
  /* that one took a PCID of the pool before the ICF refused it: it counts for the limit */
  interval_passed("m2mes", d.name);

  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, body, &pkg), MCIM_OK);
  open_package(&d, "m2mes", TXN2, pkg, &fresh, &expires);
  assert_memory_equal(fresh.pcid, "00101", 5);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, body, &again), MCIM_OK);
  assert_string_equal(pkg, again);
  free(again);
  /* the ICF has it: it attaches */
  assert_int_equal(attach(&d, &fresh, NULL), MCIM_OK);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);
  /* a new txn within pcid_renewal_interval: refused, no PCID allocated, no row; then a retry
   * of the answered txn still gets its answer */
  wrong = renew_request(&d, "m2mes", TXN4, d.cur.pcid);
  wbody = renew_body(&d, TXN4, wrong);
  struct stored before = stored_at("m2mes", TXN4, d.name);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, wbody, NULL),
                   MCIM_RENEWAL_TOO_EARLY);
  assert_true(last_retry_after > 86400 - 600 && last_retry_after <= 86400);
  struct stored after = stored_at("m2mes", TXN4, d.name);
  assert_int_equal(after.allocated, before.allocated);
  assert_int_equal(after.answers, 0);
  assert_int_equal(after.device_rows, before.device_rows);
  assert_int_equal(store_count("m2mes", "SELECT COUNT(*) FROM trace WHERE txn = ?", TXN4), 0);
  json_decref(body);
  free(req);
  req = renew_request(&d, "m2mes", TXN2, d.cur.pcid);
  body = renew_body(&d, TXN2, req);
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, body, &again), MCIM_OK);
  assert_string_equal(pkg, again);
  free(again);
  /* once the interval has passed: the same request (its jti not spent by the refusal) */
  interval_passed("m2mes", d.name);
  char *pkg4 = NULL;
  assert_int_equal(renew_call("m2mes", "/v1/ccif/pcid", d.token, wbody, &pkg4), MCIM_OK);
  struct cred fourth = {0};
  open_package(&d, "m2mes", TXN4, pkg4, &fourth, &expires);
  assert_string_not_equal(fourth.pcid, fresh.pcid);
  assert_int_equal(stored_at("m2mes", TXN4, d.name).device_rows, before.device_rows + 1);
  free(pkg4);
  json_decref(wbody);
  free(wrong);
  /* a package of the RO does not pass for one of the M2MES: the TRE checks the issuer
   * (unit tests), here: it is signed by m2mes, not ro */
  mcim_jose_key_t *ro_key = issuer_key("ro");
  mcim_jws_expect_t ex = {
      .iss = "ro", .aud = d.name, .sub = d.name, .typ = "mcim-pcid+jwt", .skew = 30};
  assert_int_not_equal(mcim_package_verify(pkg, strlen(pkg), ro_key, &ex, NULL), MCIM_OK);
  mcim_jose_key_free(ro_key);
  json_decref(body);
  free(req);
  free(pkg);
  dev_free(&d);
  dev_free(&other);
}

static void test_expired_pcid(void **state)
{
  (void)state;
  struct dev d;
  dev_make(&d, "pcid-d8", "001017000000008", mcim_now() - 1);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_CREDENTIAL_EXPIRED);
  dev_free(&d);
}

/* A TPM device (its attestation certificate names an AK, as the M2MES's TPM enrolment writes
 * it) renews at the DPF and at the CCIF over HTTPS with a request (signed by its attestation
 * key, every other check passing) whose "tpm_slot" is missing, of the wrong type, or
 * malformed: 400 with the cause of docs/tre-tpm.md (renewal step 5), and nothing allocated,
 * answered or recorded for it. The control: the same device, its certificate without the AK,
 * renews at each (so the store's counts do see a renewal). The AK is a software key: no offer
 * here could be certified by it, so no TPM is needed. Without the TPM TRE in the build
 * (MCIM_TPM=OFF) the issuers check no offer and refuse each request UNSUPPORTED. */
static void test_tpm_slot_refusals(void **state)
{
  (void)state;
  static const struct {
    const char *role, *path;
  } issuers[] = {{"ro", "/v1/dpf/pcid"}, {"m2mes", "/v1/ccif/pcid"}};
  struct dev d;
  EVP_PKEY *ak = NULL;
  char big[2200];
  memset(big, 'A', sizeof(big) - 1); /* 1,649 bytes decoded: beyond any TPMS_ATTEST */
  big[sizeof(big) - 1] = '\0';
  json_t *offers[] = {
      NULL, /* none */
      json_integer(42),
      json_null(),
      json_string("a-slot-key"),
      json_pack("{s:s,s:s}", "public", "AAAA", "attest", "AAAA"), /* a member missing */
      json_pack("{s:s,s:s,s:s}", "public", "not base64url!", "attest", "AAAA", "signature", "AAAA"),
      json_pack("{s:i,s:s,s:s}", "public", 7, "attest", "AAAA", "signature", "AAAA"),
      json_pack("{s:s,s:s,s:s}", "public", "AAAA", "attest", big, "signature", "AAAA"),
  };
  const size_t n_offers = sizeof(offers) / sizeof(offers[0]);
#ifdef MCIM_HAVE_TPM
  const mcim_cause_t missing = MCIM_TPM_SLOT_KEY_MISSING, bad = MCIM_TPM_CERTIFY_INVALID;
#else
  const mcim_cause_t missing = MCIM_UNSUPPORTED, bad = MCIM_UNSUPPORTED;
#endif

  dev_make(&d, "pcid-t1", "001017000000011", mcim_now() + 600);
  char *plain_att = d.att_pem;
  assert_int_equal(mcim_pki_key_generate(&ak), MCIM_OK);
  d.att_pem = cert_for_ak(d.att, d.name, MCIM_CERT_TRE_ATTESTATION, ak);
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);

  for (size_t i = 0; i < sizeof(issuers) / sizeof(issuers[0]); i++) {
    const char *role = issuers[i].role;
    for (size_t j = 0; j < n_offers; j++) {
      char txn[33];
      struct mcim_http_result r;
      snprintf(txn, sizeof(txn), "0000000000000000000000000000b%zu%02zx", i, j);
      struct stored before = stored_at(role, txn, d.name);
      char *req = renew_request_slot(&d, role, txn, d.cur.pcid, offers[j]);
      json_t *body = renew_body(&d, txn, req);
      mcim_cause_t want = offers[j] ? bad : missing;
      assert_int_equal(
          mcim_http_request(plain_cli, "POST", url(role, issuers[i].path), body, d.token, &r),
          want);
      assert_int_equal(r.status, 400);
      assert_int_equal(mcim_cause_http_status(want), 400);
      assert_non_null(r.json); /* problem+json: its cause by name, the step */
      assert_string_equal(json_string_value(json_object_get(r.json, "cause")),
                          mcim_cause_name(want));
      struct stored after = stored_at(role, txn, d.name);
      assert_int_equal(after.allocated, before.allocated);
      assert_int_equal(after.answers, 0);
      assert_int_equal(after.device_rows, before.device_rows);
      mcim_http_result_clear(&r);
      json_decref(body);
      free(req);
    }
  }
  /* the old credential was not superseded */
  assert_int_equal(attach(&d, &d.cur, NULL), MCIM_OK);

  /* the control: without the AK in its certificate, the device renews, and the counts move */
  free(d.att_pem);
  d.att_pem = plain_att;
  for (size_t i = 0; i < sizeof(issuers) / sizeof(issuers[0]); i++) {
    const char *role = issuers[i].role;
    char txn[33], *pkg = NULL;
    snprintf(txn, sizeof(txn), "0000000000000000000000000000c%zu00", i);
    struct stored before = stored_at(role, txn, d.name);
    char *req = renew_request(&d, role, txn, d.cur.pcid);
    json_t *body = renew_body(&d, txn, req);
    assert_int_equal(renew_call(role, issuers[i].path, d.token, body, &pkg), MCIM_OK);
    struct stored after = stored_at(role, txn, d.name);
    assert_int_equal(after.allocated, before.allocated + 1);
    assert_int_equal(after.answers, 1);
    assert_int_equal(after.device_rows, before.device_rows + 1);
    free(pkg);
    json_decref(body);
    free(req);
  }
  for (size_t j = 0; j < n_offers; j++)
    json_decref(offers[j]);
  EVP_PKEY_free(ak);
  dev_free(&d);
}

/* Lifetimes (DESIGN.md section 10): the PCIDs a renewal terminated leave the ICF
 * record_retention after their expiry, the CCIF's answered renewals record_retention after
 * the answer, the VNO's renewal flags record_retention after they were set (a flag of a
 * PCID that never attached again stayed for good before 2026-12-06); the live PCIDs, and
 * terminated ones not that old, stay. The rows are moved back
 * in time and the role restarted (its first housekeeping purges: no minute to wait). Runs
 * after the renewals above (pcid-d1 at the DPF, pcid-d5 pushed, pcid-d6 at the CCIF). */
static void test_purge_renewals(void **state)
{
  (void)state;
  const char *terminated = "SELECT COUNT(*) FROM auc WHERE device = ? AND state = 'terminated'";
  const char *active = "SELECT COUNT(*) FROM auc WHERE device = ? AND state = 'active'";
  const char *issued = "SELECT COUNT(*) FROM ccif_renewals WHERE device = ? AND state = 'issued'";
  int64_t live = store_count("ro", active, "pcid-d1");
  int64_t other_terminated = store_count("ro", terminated, "pcid-d5");
  assert_true(store_count("ro", terminated, "pcid-d1") >= 2);
  assert_true(other_terminated >= 1);
  assert_true(store_count("m2mes", issued, "pcid-d6") >= 2);
  assert_true(store_write("ro",
                          "UPDATE auc SET expires = expires - 400 * 86400 WHERE device = ? AND"
                          " state = 'terminated'",
                          "pcid-d1") >= 2);
  assert_true(store_write("m2mes",
                          "UPDATE ccif_renewals SET updated = updated - 400 * 86400 WHERE"
                          " device = ? AND state = 'issued'",
                          "pcid-d6") >= 2);
  const char *flag = "SELECT COUNT(*) FROM pcid_renewal WHERE pcid = ?";
  assert_int_equal(store_write("vno", "INSERT INTO pcid_renewal (pcid, since) VALUES (?, 1000)",
                               "001019999999990"),
                   1);
  assert_int_equal(store_count("vno", flag, "001019999999990"), 1);
  assert_int_equal(mcim_lab_role_restart(lab, "ro"), MCIM_OK);
  assert_int_equal(mcim_lab_role_restart(lab, "m2mes"), MCIM_OK);
  assert_int_equal(mcim_lab_role_restart(lab, "vno"), MCIM_OK);
  /* polled, each role's housekeeping runs within a worker tick of its start */
  int64_t deadline = mcim_now() + 20;
  while ((store_count("ro", terminated, "pcid-d1") > 0 ||
          store_count("m2mes", issued, "pcid-d6") > 0 ||
          store_count("vno", flag, "001019999999990") > 0) &&
         mcim_now() < deadline)
    usleep(100 * 1000);
  assert_int_equal(store_count("vno", flag, "001019999999990"), 0);
  assert_int_equal(store_count("ro", terminated, "pcid-d1"), 0);
  assert_int_equal(store_count("m2mes", issued, "pcid-d6"), 0);
  assert_int_equal(store_count("ro", active, "pcid-d1"), live);
  assert_int_equal(store_count("ro", terminated, "pcid-d5"), other_terminated);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dpf_renewal),       cmocka_unit_test(test_dpf_refusals),
      cmocka_unit_test(test_network_initiated), cmocka_unit_test(test_ccif_renewal),
      cmocka_unit_test(test_expired_pcid),      cmocka_unit_test(test_tpm_slot_refusals),
      cmocka_unit_test(test_purge_renewals),    cmocka_unit_test(test_traced_refusals_bounded),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
