/* Forged statements against the change of subscription, on a real lab (mcimd processes on
 * loopback, real TLS, real device agents with their software TREs). Two devices are
 * manufactured and provisioned with the CLI's library calls (fdev1 at sho-a, fdev2 at
 * sho-b); the test then plays an attacker who holds valid network access and, for some
 * cases, a TRE key certified by the M2MES CA for a device of its own ("mallory"). Access:
 * restricted tokens from a real attach at the VNO (a PCID credential of the test's own,
 * registered at the ICF as the M2MES does, and a software USIM, as test_access_e2e.c);
 * full tokens signed with the SHO's key from the lab PKI, as the SHO issues them after an
 * attach ("the device holds a full token"). It sends:
 *  - discard receipts to the old SHO (POST /v1/discards, change step 9) signed by a key that
 *    is not the device's TRE: certified by another CA, or by the M2MES CA for another device;
 *    naming another device's IMSI, another SHO's slot, an IMSI the SHO does not know;
 *  - notifications (POST /v1/notifications) for another SHO's slot or another device's IMSI;
 *  - acknowledgements at step 11 (POST ro /v1/dpf/releases) while a real change of fdev1
 *    from sho-a to sho-b waits at step 9: signed by the new SHO itself, by a role that is
 *    not an SHO (pva), by an unknown key, with released=false, for another txn, about
 *    another device, for another audience, of another type.
 * Every one is refused with its cause; afterwards the subscriptions are as they were (the
 * devices still attach with full access), nothing was relayed to the new SHO, and the real
 * change, let go, completes with the invariants of DESIGN.md section 4. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"

#define ZERO_TXN "00000000000000000000000000000000"
#define TXN_F1 "0000000000000000000000000000f001"
#define TXN_F2 "0000000000000000000000000000f002"
#define TXN_F3 "0000000000000000000000000000f003"
#define TXN_F4 "0000000000000000000000000000f004"
#define TXN_F5 "0000000000000000000000000000f005"

static char dir[] = "/tmp/mcim-forgery-XXXXXX";
static char labdir[128];
static mcim_lab_t *lab;
static struct mcim_http_client *plain_cli, *m2mes_cli;
static mcim_pki_ca_t *m2mes_ca, *rogue_ca;
static mcim_jose_key_t *key_sho_a, *key_sho_b, *key_pva, *key_vno;
static char imsi1[24], imsi2[24]; /* fdev1's at sho-a, fdev2's at sho-b */
/* mallory: a real device of the attacker's own, subscribed at sho-a (active) and with a
 * pre-provisioned MCIM of sho-b (standby): its tokens are genuine */
static char imsim_a[24], imsim_b[24];
static pid_t paused;               /* a daemon we SIGSTOPped: always resumed */

/* ---- helpers ---- */

static char *url(const char *role, const char *path)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s%s", mcim_lab_url(lab, role), path);
  return b;
}

static char *lab_file(const char *rel)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s/%s", mcim_lab_path(lab), rel);
  return b;
}

static mcim_jose_key_t *load_key(const char *rel)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_pki_key_load(lab_file(rel), &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  EVP_PKEY_free(pk);
  return k;
}

/* A TRE attestation key certified by `ca` for device `name` (PEM in *pem). */
static mcim_jose_key_t *tre_key(mcim_pki_ca_t *ca, const char *name, char **pem)
{
  mcim_jose_key_t *k = NULL;
  EVP_PKEY *pub = NULL;
  X509 *x = NULL;
  assert_int_equal(mcim_jose_key_generate(&k), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(k, &pub), MCIM_OK);
  mcim_cert_request_t req = {.name = name, .usage = MCIM_CERT_TRE_ATTESTATION, .key = pub,
                             .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, pem), MCIM_OK);
  X509_free(x);
  EVP_PKEY_free(pub);
  return k;
}

static char *sign(const mcim_jose_key_t *key, const char *typ, const char *iss, const char *sub,
                  const char *aud, const char *txn, json_t *extra)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = iss, .sub = sub, .aud = aud, .typ = typ, .txn = txn, .iat = now,
                     .exp = now + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

/* An access token as an access network issues it after an attach (src/roles/access.c):
 * aud = the issuer. */
static char *token(const mcim_jose_key_t *net_key, const char *net, const char *device,
                   const char *scope, const char *identity)
{
  return sign(net_key, "mcim-access+jwt", net, device, net, ZERO_TXN,
              json_pack("{s:s,s:s}", "scope", scope, "imsi", identity));
}

/* A restricted token the real way (as test_access_e2e.c does): a PCID credential of our
 * own registered at the ICF for `device` (mTLS as the M2MES), then an attach at the VNO
 * with a software USIM (Milenage, TS 33.102 checks). */
static char *vno_token(const char *device, const char *pcid)
{
  uint8_t k[16], opc[16], rand[16], autn[16];
  char kh[33], oh[33], res[17], path[128];
  struct mcim_sqn_params params;
  struct mcim_sqn_usim sqn, next;
  struct mcim_aka_usim_out out;
  struct mcim_http_result r;
  mcim_milenage_t *m = NULL;
  char *tok = NULL;

  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc, 16), MCIM_OK);
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "pcid", pcid, "device", device, "k", kh,
                           "opc", oh, "amf", "8000", "expires", (json_int_t)mcim_now() + 3600);
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("ro", "/v1/icf/pcids"), body, NULL, &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  json_decref(body);

  body = json_pack("{s:s,s:s}", "pcid", pcid, "device", device);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", "/v1/attach"), body, NULL, &r),
                   MCIM_OK);
  json_decref(body);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(r.json, "rand")), rand, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(r.json, "autn")), autn, 16), MCIM_OK);
  snprintf(path, sizeof(path), "/v1/attach/%s", json_string_value(json_object_get(r.json, "attach_id")));
  mcim_http_result_clear(&r);
  mcim_sqn_params_default(&params);
  assert_int_equal(mcim_sqn_usim_init(&params, &sqn), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, k, opc), MCIM_OK);
  assert_int_equal(mcim_aka_usim_check(m, &params, &sqn, rand, autn, &next, &out), MCIM_OK);
  mcim_milenage_free(m);
  mcim_hex_encode(out.res, 8, res);
  body = json_pack("{s:s}", "res", res);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(r.json, "scope")), "restricted");
  tok = strdup(json_string_value(json_object_get(r.json, "token")));
  mcim_http_result_clear(&r);
  json_decref(body);
  assert_non_null(tok);
  return tok;
}

static mcim_cause_t post(const char *role, const char *path, const char *bearer, json_t *body)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url(role, path), body, bearer, &r);
  if (rc != MCIM_OK && getenv("MCIM_TEST_VERBOSE"))
    fprintf(stderr, "  %s %s -> %s: %s\n", role, path, mcim_cause_name(rc), r.detail);
  mcim_http_result_clear(&r);
  json_decref(body);
  return rc;
}

/* The same, keeping the answer (*answer: the JSON body, or NULL) and the HTTP status. */
static mcim_cause_t post_keep(const char *role, const char *path, const char *bearer, json_t *body,
                              json_t **answer, long *status)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url(role, path), body, bearer, &r);
  *answer = r.json ? json_incref(r.json) : NULL;
  if (status)
    *status = r.status;
  mcim_http_result_clear(&r);
  json_decref(body);
  return rc;
}

static mcim_cause_t get(const char *role, const char *path, const char *bearer, long *status)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(plain_cli, "GET", url(role, path), NULL, bearer, &r);
  if (status)
    *status = r.status;
  mcim_http_result_clear(&r);
  return rc;
}

static mcim_cause_t discard(const char *sho, const char *bearer, const char *txn,
                            const char *device, const char *receipt, const char *cert)
{
  return post(sho, "/v1/discards", bearer,
              json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", device, "receipt", receipt,
                        "tre_cert", cert, "step", 9));
}

static char *receipt(const mcim_jose_key_t *key, const char *device, const char *sho,
                     const char *txn, const char *slot, const char *imsi)
{
  return sign(key, "mcim-discard+jwt", device, device, sho, txn,
              json_pack("{s:s,s:s}", "slot", slot, "imsi", imsi));
}

/* GET on a device agent's control socket. */
static json_t *agent_get(const char *device, const char *path)
{
  struct mcim_http_client *cli = NULL;
  struct mcim_http_result r;
  char u[256];
  json_t *out = NULL;
  snprintf(u, sizeof(u), "http://localhost%s", path);
  assert_int_equal(mcim_lab_device_client(lab, device, &cli), MCIM_OK);
  if (mcim_http_request(cli, "GET", u, NULL, NULL, &r) == MCIM_OK)
    out = json_incref(r.json);
  mcim_http_result_clear(&r);
  mcim_http_client_free(cli);
  return out;
}

/* The agent attaches now (control API): the network's verdict on its MCIM. */
static mcim_cause_t agent_attach(const char *device, const char *network, char scope[16])
{
  struct mcim_http_client *cli = NULL;
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "network", network);
  assert_int_equal(mcim_lab_device_client(lab, device, &cli), MCIM_OK);
  mcim_cause_t rc = mcim_http_request(cli, "POST", "http://localhost/v1/attach", body, NULL, &r);
  if (scope)
    snprintf(scope, 16, "%s",
             rc == MCIM_OK && json_string_value(json_object_get(r.json, "scope"))
                 ? json_string_value(json_object_get(r.json, "scope"))
                 : "");
  mcim_http_result_clear(&r);
  mcim_http_client_free(cli);
  json_decref(body);
  return rc;
}

static void assert_full_access(const char *device, const char *sho)
{
  char scope[16];
  assert_int_equal(agent_attach(device, sho, scope), MCIM_OK);
  assert_string_equal(scope, "full");
}

static void active_imsi(const char *device, char out[24])
{
  json_t *st = agent_get(device, "/v1/status"), *s;
  size_t i;
  out[0] = '\0';
  assert_non_null(st);
  json_array_foreach(json_object_get(st, "slots"), i, s)
    if (strcmp(json_string_value(json_object_get(s, "state")), "active") == 0)
      snprintf(out, 24, "%s", json_string_value(json_object_get(s, "imsi")));
  json_decref(st);
  assert_int_equal(strlen(out), 15);
}

/* The running procedure's stage at the device ("" if none runs). */
static void running_stage(const char *device, char stage[32], char txn[40])
{
  json_t *st = agent_get(device, "/v1/status");
  json_t *p = st ? json_object_get(st, "procedure") : NULL;
  stage[0] = txn[0] = '\0';
  if (p && json_string_value(json_object_get(p, "state")) &&
      strcmp(json_string_value(json_object_get(p, "state")), "running") == 0) {
    snprintf(stage, 32, "%s", json_string_value(json_object_get(p, "stage")));
    snprintf(txn, 40, "%s", json_string_value(json_object_get(p, "txn")));
  }
  json_decref(st);
}

/* One integer from a role's database (read-only, next to the running daemon). */
static long long db_int(const char *role, const char *sql)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *s = NULL;
  char path[512];
  long long v = -1;
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
  if (sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

static void db_exec(const char *role, const char *sql)
{
  sqlite3 *db = NULL;
  char path[512];
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

static pid_t role_pid(const char *name)
{
  json_t *st = NULL, *r;
  size_t i;
  pid_t pid = 0;
  assert_int_equal(mcim_lab_status(lab, &st), MCIM_OK);
  json_array_foreach(json_object_get(st, "roles"), i, r)
    if (strcmp(json_string_value(json_object_get(r, "name")), name) == 0)
      pid = (pid_t)json_integer_value(json_object_get(r, "pid"));
  json_decref(st);
  assert_true(pid > 0);
  return pid;
}

static void resume_paused(void)
{
  if (paused > 0)
    kill(paused, SIGCONT);
  paused = 0;
}

static void run_procedure(const char *device, const char *procedure, const char *sho)
{
  struct mcim_lab_run run = {.device = device, .procedure = procedure, .sho = sho,
                             .timeout_s = 90};
  struct mcim_lab_run_result res;
  mcim_cause_t rc = mcim_lab_run(lab, &run, &res);
  if (rc != MCIM_OK)
    fprintf(stderr, "%s %s: %s %s\n", procedure, device, res.result, res.detail);
  assert_int_equal(rc, MCIM_OK);
  mcim_lab_run_result_clear(&res);
}

static void provision(const char *device, const char *sho)
{
  assert_int_equal(mcim_lab_device_add(lab, device, false), MCIM_OK);
  run_procedure(device, "initial", sho);
}

/* The IMSI of `device`'s slot `slot` (any state), from its TRE's public view. */
static void slot_imsi(const char *device, const char *slot, char out[24])
{
  json_t *st = agent_get(device, "/v1/status"), *s;
  size_t i;
  out[0] = '\0';
  assert_non_null(st);
  json_array_foreach(json_object_get(st, "slots"), i, s)
    if (strcmp(json_string_value(json_object_get(s, "slot")), slot) == 0)
      snprintf(out, 24, "%s", json_string_value(json_object_get(s, "imsi")));
  json_decref(st);
  assert_int_equal(strlen(out), 15);
}

/* A statement signed by a lab device's own TRE (the legitimate device, as its agent would
 * sign it): opened next to the running agent (the TRE locks its file per operation). */
static char *device_sign(const char *device, const char *typ, const char *aud, const char *txn,
                         json_t *extra, char **cert)
{
  mcim_tre_t *tre = NULL;
  char *jws = NULL, path[512];
  snprintf(path, sizeof(path), "%s/devices/%s/tre", mcim_lab_path(lab), device);
  assert_int_equal(mcim_tre_soft_open(path, &tre), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, typ, aud, txn, extra, 300, &jws), MCIM_OK);
  if (cert)
    assert_int_equal(tre->ops->cert(tre->ctx, MCIM_TRE_CERT_ATTESTATION, cert), MCIM_OK);
  mcim_tre_close(tre);
  json_decref(extra);
  return jws;
}

/* ---- setup ---- */

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir))
    return -1;
  setenv("MCIM_BIN", MCIM_BIN_DIR, 1);
  snprintf(labdir, sizeof(labdir), "%s/lab", dir);
  if (mcim_lab_up(labdir, NULL, &lab) != MCIM_OK)
    return -1;
  struct mcim_http_client_cfg pc = {.ca_file = lab_file("pki/" MCIM_PKI_OPERATORS_CA_CERT)};
  struct mcim_http_client_cfg mc = {.ca_file = lab_file("pki/" MCIM_PKI_OPERATORS_CA_CERT),
                                    .cert_file = lab_file("pki/m2mes/cert.pem"),
                                    .key_file = lab_file("pki/m2mes/key.pem")};
  if (mcim_http_client_new(&pc, &plain_cli) != MCIM_OK ||
      mcim_http_client_new(&mc, &m2mes_cli) != MCIM_OK ||
      mcim_pki_ca_load(lab_file("pki/" MCIM_PKI_M2MES_CA_CERT),
                       lab_file("pki/" MCIM_PKI_M2MES_CA_KEY), &m2mes_ca) != MCIM_OK ||
      mcim_pki_ca_create("rogue-ca", 30, &rogue_ca) != MCIM_OK)
    return -1;
  key_sho_a = load_key("pki/sho-a/key.pem");
  key_sho_b = load_key("pki/sho-b/key.pem");
  key_pva = load_key("pki/pva/key.pem");
  key_vno = load_key("pki/vno/key.pem");
  provision("fdev1", "sho-a");
  provision("fdev2", "sho-b");
  provision("mallory", "sho-a");
  run_procedure("mallory", "preload", "sho-b");
  active_imsi("fdev1", imsi1);
  active_imsi("fdev2", imsi2);
  slot_imsi("mallory", "sho-a", imsim_a);
  slot_imsi("mallory", "sho-b", imsim_b);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  resume_paused();
  mcim_http_client_free(plain_cli);
  mcim_http_client_free(m2mes_cli);
  mcim_pki_ca_free(m2mes_ca);
  mcim_pki_ca_free(rogue_ca);
  mcim_jose_key_free(key_sho_a);
  mcim_jose_key_free(key_sho_b);
  mcim_jose_key_free(key_pva);
  mcim_jose_key_free(key_vno);
  if (lab)
    mcim_lab_down(lab);
  mcim_lab_free(lab);
  if (getenv("MCIM_TEST_KEEP")) {
    fprintf(stderr, "lab kept in %s\n", dir);
    return 0;
  }
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- step 9: forged discard receipts to the old SHO ---- */

static void test_forged_receipts(void **state)
{
  (void)state;
  char *rogue_pem = NULL, *mallory_pem = NULL, *r = NULL;
  /* a key that is not fdev1's TRE, certified by another CA for the name fdev1 */
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  /* mallory: a device of the attacker's own, properly certified by the M2MES CA */
  mcim_jose_key_t *mallory = tre_key(m2mes_ca, "mallory", &mallory_pem);
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);

  /* fdev1's receipt, signed by a key of another CA */
  r = receipt(rogue, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, rogue_pem), MCIM_CERT_INVALID);
  free(r);
  /* fdev1's receipt, signed by a key the M2MES CA certified for another device */
  r = receipt(mallory, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, mallory_pem), MCIM_CERT_INVALID);
  free(r);
  /* ... the same with mallory's own certificate and a receipt naming mallory: the body says
   * fdev1 (the token's device), the statement another: refused */
  r = receipt(mallory, "mallory", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, mallory_pem), MCIM_CERT_INVALID);
  free(r);
  /* mallory, with its own valid statement and access, names fdev1's IMSI */
  r = receipt(mallory, "mallory", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tokm, TXN_F1, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* ... another SHO's slot */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-b", imsi1);
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* ... an IMSI of another SHO (fdev2's at sho-b), sent to sho-a */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-a", imsi2);
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_UNKNOWN_IDENTITY);
  free(r);
  /* ... an IMSI nobody has */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-a", "001029999999999");
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_UNKNOWN_IDENTITY);
  free(r);
  /* ... fdev2's IMSI at its own SHO: another device's subscription */
  char *tokm_b = token(key_sho_b, "sho-b", "mallory", "full", imsim_b);
  r = receipt(mallory, "mallory", "sho-b", TXN_F2, "sho-b", imsi2);
  assert_int_equal(discard("sho-b", tokm_b, TXN_F2, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* a token of the VNO does not reach the SHO's discard service at all */
  char *tokr = vno_token("fdev1", "001019100000001");
  r = receipt(rogue, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tokr, TXN_F1, "fdev1", r, rogue_pem), MCIM_TOKEN_WRONG_ISSUER);
  /* ... nor does a token of another device for fdev1's receipt */
  assert_int_equal(discard("sho-a", tokm, TXN_F1, "fdev1", r, rogue_pem), MCIM_FORBIDDEN);
  free(r);

  /* nothing changed: both subscriptions active, the devices attach with full access */
  char q[256];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi2);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_int_equal(db_int("sho-a", "SELECT COUNT(*) FROM answers WHERE step = 10"), 0);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE state = 'released'"), 0);
  assert_full_access("fdev1", "sho-a");
  assert_full_access("fdev2", "sho-b");

  free(tok1);
  free(tokm);
  free(tokm_b);
  free(tokr);
  free(rogue_pem);
  free(mallory_pem);
  mcim_jose_key_free(rogue);
  mcim_jose_key_free(mallory);
}

/* ---- notifications (switch between pre-provisioned MCIMs) ---- */

static mcim_cause_t notify(const char *sho, const char *bearer, const char *device,
                           const mcim_jose_key_t *key, const char *cert, const char *event,
                           const char *slot, const char *imsi)
{
  char *n = sign(key, "mcim-notify+jwt", device, device, sho, TXN_F3,
                 json_pack("{s:s,s:s,s:s}", "event", event, "slot", slot, "imsi", imsi));
  mcim_cause_t rc = post(sho, "/v1/notifications", bearer,
                         json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F3, "device", device, "notice",
                                   n, "tre_cert", cert));
  free(n);
  return rc;
}

/* A relayed notice to an SHO (POST ro /v1/dpf/notices): while the DRF holds mallory's
 * installed order at sho-b but not yet sho-b's registration (step 15, on sho-b's outbox: here
 * its entry is moved aside for the test), the RO answers "not yet" (503 REGISTRATION_PENDING,
 * Retry-After) and relays nothing. fdev2, whose orders are only at sho-b, relaying to sho-a
 * (no order, no entry) is FORBIDDEN, as is fdev2's notice sent with mallory's token. */
static mcim_cause_t relay_notice(const char *device, const char *token, const char *to,
                                 const char *txn, long *status)
{
  char *cert = NULL;
  char *jws = device_sign(device, "mcim-notify+jwt", to, txn,
                          json_pack("{s:s,s:s,s:s}", "event", "resume", "slot", to, "imsi",
                                    strcmp(device, "mallory") == 0 ? imsim_b : imsi2),
                          &cert);
  json_t *ans = NULL;
  mcim_cause_t rc = post_keep("ro", "/v1/dpf/notices", token,
                              json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", device, "to",
                                        to, "statement", jws, "tre_cert", cert),
                              &ans, status);
  json_decref(ans);
  free(jws);
  free(cert);
  return rc;
}

static void test_registration_pending(void **state)
{
  (void)state;
  long status = 0;
  char q[256];
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  char *tok2 = token(key_sho_b, "sho-b", "fdev2", "full", imsi2);
  assert_true(db_int("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = 'mallory' AND sho = 'sho-b'"
                           " AND state = 'installed'") >= 1);
  db_exec("ro", "UPDATE drf SET device = 'mallory-aside' WHERE device = 'mallory' AND sho = 'sho-b'");
  long long queued = db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'");
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F4, &status),
                   MCIM_REGISTRATION_PENDING);
  assert_int_equal(status, 503);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  db_exec("ro", "UPDATE drf SET device = 'mallory' WHERE device = 'mallory-aside'");
  /* a device with neither an order nor an entry at that SHO, another device's token */
  assert_int_equal(relay_notice("fdev2", tok2, "sho-a", TXN_F4, &status), MCIM_FORBIDDEN);
  assert_int_equal(status, 403);
  assert_int_equal(relay_notice("fdev2", tokm, "sho-b", TXN_F4, &status), MCIM_FORBIDDEN);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM drf WHERE device = 'mallory' AND sho = 'sho-b'");
  assert_int_equal(db_int("ro", q), 1);
  /* An entry `released` by an earlier subscription at sho-b is no link: still "not yet". */
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE device = 'mallory' AND"
                                " sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  db_exec("ro", "UPDATE drf SET state = 'released' WHERE device = 'mallory' AND sho = 'sho-b'");
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F4, &status),
                   MCIM_REGISTRATION_PENDING);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  db_exec("ro", "UPDATE drf SET state = 'preloaded' WHERE device = 'mallory' AND sho = 'sho-b'");
  free(tokm);
  free(tok2);
}

static void test_forged_notifications(void **state)
{
  (void)state;
  char *rogue_pem = NULL, *mallory_pem = NULL;
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  mcim_jose_key_t *mallory = tre_key(m2mes_ca, "mallory", &mallory_pem);
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);

  /* a notice for the other SHO's slot */
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "suspend", "sho-b", imsi2),
                   MCIM_SLOT_FORBIDDEN);
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "resume", "sho-b", imsi1),
                   MCIM_SLOT_FORBIDDEN);
  /* our slot, but another device's IMSI */
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "suspend", "sho-a", imsi1),
                   MCIM_SLOT_FORBIDDEN);
  /* fdev1's own IMSI, signed by a key of another CA */
  assert_int_equal(notify("sho-a", tok1, "fdev1", rogue, rogue_pem, "suspend", "sho-a", imsi1),
                   MCIM_CERT_INVALID);
  /* sho-b's slot sent to sho-b about fdev2's IMSI by mallory */
  char *tokm_b = token(key_sho_b, "sho-b", "mallory", "full", imsim_b);
  assert_int_equal(notify("sho-b", tokm_b, "mallory", mallory, mallory_pem, "suspend", "sho-b", imsi2),
                   MCIM_SLOT_FORBIDDEN);

  /* Stored answers are per (txn, device, event): fdev1 suspends its sho-a subscription under
   * TXN_F4 (a genuine notice of its TRE), then mallory, with a notice of ITS OWN for the same
   * txn, gets its own answer, never fdev1's (its IMSI); a forged one gets a refusal. Both
   * resume after (a standby subscription's token is still honoured). */
  json_t *ans = NULL;
  char *cert1 = NULL, *certm = NULL, *n;
  n = device_sign("fdev1", "mcim-notify+jwt", "sho-a", TXN_F4,
                  json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", "sho-a", "imsi", imsi1),
                  &cert1);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tok1,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "fdev1",
                                       "notice", n, "tre_cert", cert1),
                             &ans, NULL),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(ans, "imsi")), imsi1);
  json_decref(ans);
  free(n);
  n = sign(rogue, "mcim-notify+jwt", "mallory", "mallory", "sho-a", TXN_F4,
           json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", "sho-a", "imsi", imsim_a));
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tokm,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "mallory",
                                       "notice", n, "tre_cert", rogue_pem),
                             &ans, NULL),
                   MCIM_CERT_INVALID);
  assert_null(json_object_get(ans, "imsi"));
  json_decref(ans);
  free(n);
  n = device_sign("mallory", "mcim-notify+jwt", "sho-a", TXN_F4,
                  json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", "sho-a", "imsi", imsim_a),
                  &certm);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tokm,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "mallory",
                                       "notice", n, "tre_cert", certm),
                             &ans, NULL),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(ans, "imsi")), imsim_a);
  json_decref(ans);
  free(n);
  for (int i = 0; i < 2; i++) {
    const char *dev = i ? "mallory" : "fdev1", *im = i ? imsim_a : imsi1;
    n = device_sign(dev, "mcim-notify+jwt", "sho-a", TXN_F4,
                    json_pack("{s:s,s:s,s:s}", "event", "resume", "slot", "sho-a", "imsi", im),
                    NULL);
    assert_int_equal(post_keep("sho-a", "/v1/notifications", i ? tokm : tok1,
                               json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", dev,
                                         "notice", n, "tre_cert", i ? certm : cert1),
                               &ans, NULL),
                     MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(ans, "state")), "active");
    json_decref(ans);
    free(n);
  }
  free(cert1);
  free(certm);

  /* still active (not in standby): full access */
  char q[256];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi2);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_full_access("fdev1", "sho-a");
  assert_full_access("fdev2", "sho-b");

  free(tok1);
  free(tokm);
  free(tokm_b);
  free(rogue_pem);
  free(mallory_pem);
  mcim_jose_key_free(rogue);
  mcim_jose_key_free(mallory);
}

/* ---- tokens bound to their issuer (DESIGN.md section 10) ---- */

static void test_token_binding(void **state)
{
  (void)state;
  char path[128];
  long status = 0;
  json_t *ans = NULL;
  snprintf(path, sizeof(path), "/v1/devices/fdev1/subscription");

  /* a genuine token of sho-a for fdev1: its own subscription, at sho-a */
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", path, tok1, &status), MCIM_OK);
  /* sho-b's token (sho-b holds the real key: a competitor) for fdev1 at sho-a: refused with
   * its cause, whatever identity and audience it claims */
  char *tb = token(key_sho_b, "sho-b", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", path, tb, &status), MCIM_TOKEN_WRONG_ISSUER);
  assert_int_equal(status, 403);
  free(tb);
  tb = sign(key_sho_b, "mcim-access+jwt", "sho-b", "fdev1", "sho-a", ZERO_TXN,
            json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1));
  assert_int_equal(get("sho-a", path, tb, &status), MCIM_TOKEN_WRONG_ISSUER);
  free(tb);
  /* ... and sho-b cannot use one to act at sho-a either (a discard, a notice) */
  tb = token(key_sho_b, "sho-b", "fdev1", "full", imsi2);
  assert_int_equal(discard("sho-a", tb, TXN_F1, "fdev1", "x.y.z", "pem"), MCIM_TOKEN_WRONG_ISSUER);
  free(tb);
  /* a token of sho-a in the old form (aud "access") is not a token any more */
  char *old_form = sign(key_sho_a, "mcim-access+jwt", "sho-a", "fdev1", "access", ZERO_TXN,
                        json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1));
  assert_int_equal(get("sho-a", path, old_form, &status), MCIM_CLAIM_MISMATCH);
  free(old_form);
  /* sho-a's own signature on an identity that is not fdev1's: not a live subscription of
   * that device (mallory's IMSI for fdev1, fdev1's IMSI for mallory) */
  char *bad = token(key_sho_a, "sho-a", "fdev1", "full", imsim_a);
  assert_int_equal(get("sho-a", path, bad, &status), MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);
  free(bad);
  bad = token(key_sho_a, "sho-a", "mallory", "full", imsi1);
  assert_int_equal(get("sho-a", "/v1/devices/mallory/subscription", bad, &status),
                   MCIM_TOKEN_REVOKED);
  free(bad);

  /* the VNO grants restricted access only: a `full` token signed with the VNO's real key is
   * refused where VNO tokens are honoured (the RO, the PVA), and an SHO refuses it anyway */
  char *vfull = token(key_vno, "vno", "fdev1", "full", "001019100000009");
  assert_int_equal(post_keep("ro", "/v1/dpf/notices", vfull,
                             json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", TXN_F1, "device", "fdev1",
                                       "to", "sho-a", "statement", "x.y.z", "tre_cert", "pem"),
                             &ans, &status),
                   MCIM_SCOPE_NOT_GRANTABLE);
  assert_int_equal(status, 403);
  assert_string_equal(json_string_value(json_object_get(ans, "cause")), "SCOPE_NOT_GRANTABLE");
  json_decref(ans);
  assert_int_equal(post("ro", "/v1/drf/discover", vfull,
                        json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1")),
                   MCIM_SCOPE_NOT_GRANTABLE);
  assert_int_equal(get("sho-a", "/v1/devices/fdev1/subscription", vfull, &status),
                   MCIM_TOKEN_WRONG_ISSUER);
  free(vfull);
  /* ... nor may an SHO hand out restricted tokens (its scope is full) */
  char *srestr = token(key_sho_a, "sho-a", "fdev1", "restricted", imsi1);
  assert_int_equal(post("ro", "/v1/drf/discover", srestr,
                        json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1")),
                   MCIM_SCOPE_NOT_GRANTABLE);
  free(srestr);
  /* the RO honours the tokens of every access network (for reaching it): past the token
   * check, the DRF has nothing for this txn */
  mcim_cause_t rc = post("ro", "/v1/drf/discover", tok1,
                         json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1"));
  assert_true(rc != MCIM_TOKEN_WRONG_ISSUER && rc != MCIM_SCOPE_NOT_GRANTABLE && rc != MCIM_OK);
  free(tok1);
}

/* An SHO's access token issued at `iat_us`, saying so in its iat_us claim (`claim_us`: that
 * claim's value, -1 to leave it out). */
static char *token_at(const mcim_jose_key_t *net_key, const char *net, const char *device,
                      const char *identity, int64_t iat_us, int64_t claim_us)
{
  char *jws = NULL;
  int64_t iat = iat_us / 1000000;
  json_t *extra = json_pack("{s:s,s:s}", "scope", "full", "imsi", identity);
  if (claim_us >= 0)
    json_object_set_new(extra, "iat_us", json_integer(claim_us));
  mcim_claims_t c = {.iss = net, .sub = device, .aud = net, .typ = "mcim-access+jwt",
                     .txn = ZERO_TXN, .iat = iat, .exp = iat + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(net_key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static mcim_cause_t ro_discover_as(const char *tok)
{
  return post("ro", "/v1/drf/discover", tok,
              json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "rdev"));
}

/* The RO revokes an SHO's tokens issued before the SHO released the device there, on the
 * SHO's clock to the microsecond (the release's seq against the token's iat_us): a token of
 * the next subscription at the same SHO, issued within the same second as the release, is
 * honoured (it was refused TOKEN_REVOKED in whole seconds: the pristine path's deferred
 * notice failed so in a demo); one issued before it, or without iat_us in that second, is
 * not; a release without seq (an older SHO) counts from its arrival. */
static void test_token_release_order(void **state)
{
  (void)state;
  char q[320];
  /* mid-second, so that both sides of the release fall in the same second */
  int64_t rel = (mcim_now() - 2) * 1000000 + 500000;
  snprintf(q, sizeof(q),
           "INSERT INTO drf (device, sho, state, endpoint, txn, updated, seq) VALUES"
           " ('rdev', 'sho-a', 'released', 'https://sho-a.invalid', '%s', %lld, %lld)",
           TXN_F1, (long long)(rel / 1000000), (long long)rel);
  db_exec("ro", q);

  char *before = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel - 1, rel - 1);
  char *after = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1, rel + 1);
  char *no_us = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1, -1);
  assert_int_equal(ro_discover_as(before), MCIM_TOKEN_REVOKED);
  assert_int_equal(ro_discover_as(no_us), MCIM_TOKEN_REVOKED);
  mcim_cause_t rc = ro_discover_as(after);
  assert_true(rc != MCIM_TOKEN_REVOKED && rc != MCIM_OK);
  /* an iat_us outside its iat's second is not believed: counted from the start of iat's */
  char *lying = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1, rel + 3000000);
  assert_int_equal(ro_discover_as(lying), MCIM_TOKEN_REVOKED);
  free(lying);

  /* the same release recorded by an older SHO (no seq): from its arrival, in whole seconds */
  db_exec("ro", "UPDATE drf SET seq = 0 WHERE device = 'rdev' AND sho = 'sho-a'");
  assert_int_equal(ro_discover_as(after), MCIM_TOKEN_REVOKED);
  char *next = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1000000, rel + 1000000);
  rc = ro_discover_as(next);
  assert_true(rc != MCIM_TOKEN_REVOKED && rc != MCIM_OK);
  db_exec("ro", "DELETE FROM drf WHERE device = 'rdev'");
  free(before);
  free(after);
  free(no_us);
  free(next);
}

/* ---- step 11: forged acknowledgements while a real change waits at step 9 ---- */

struct bg_run {
  pthread_t th;
  struct mcim_lab_run run;
  struct mcim_lab_run_result res;
  mcim_cause_t rc;
};

static void *bg_main(void *arg)
{
  struct bg_run *b = arg;
  mcim_lab_t *own = NULL; /* the lab's clients are per thread: a handle of its own */
  b->rc = mcim_lab_open(labdir, &own);
  if (b->rc == MCIM_OK)
    b->rc = mcim_lab_run(own, &b->run, &b->res);
  mcim_lab_free(own);
  return NULL;
}

static bool wait_until(int seconds, bool (*cond)(void *), void *arg)
{
  for (int i = 0; i < seconds * 20; i++) {
    if (cond(arg))
      return true;
    usleep(50 * 1000);
  }
  return false;
}

static bool relay_retried(void *arg)
{
  return db_int("ro", (const char *)arg) > 0;
}

/* The RO relays mallory's switch (resume) to sho-b while sho-b has not heard the MCIM's
 * install report yet (its AuC entry still `pending`; set here): sho-b answers "not yet"
 * (503 REPORT_PENDING; a 409 the RO's outbox would take as delivered, and the device would
 * wait for an activation that never comes), the RO keeps the message pending and asks
 * again, and sho-b changed nothing. The message is then dropped (the test's lab stays as it
 * was). */
static void test_report_pending(void **state)
{
  (void)state;
  long status = 0;
  char q[256], seen[256];
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  snprintf(q, sizeof(q), "UPDATE auc SET state = 'pending' WHERE imsi = '%s' AND state = 'standby'",
           imsim_b);
  db_exec("sho-b", q);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'pending'",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F5, &status), MCIM_OK);
  snprintf(seen, sizeof(seen),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s' AND state = 'pending'"
           " AND attempts >= 2 AND last_cause = 'REPORT_PENDING'",
           TXN_F5);
  assert_true(wait_until(30, relay_retried, seen));
  assert_int_equal(db_int("sho-b", q), 1);
  snprintf(q, sizeof(q), "DELETE FROM outbox WHERE peer = 'sho-b' AND txn = '%s'", TXN_F5);
  db_exec("ro", q);
  snprintf(q, sizeof(q), "UPDATE auc SET state = 'standby' WHERE imsi = '%s' AND state = 'pending'",
           imsim_b);
  db_exec("sho-b", q);
  free(tokm);
}

struct stage_wait {
  const char *device, *stage;
  char txn[40];
};

static bool at_stage(void *arg)
{
  struct stage_wait *w = arg;
  char stage[32];
  running_stage(w->device, stage, w->txn);
  return strcmp(stage, w->stage) == 0;
}

static bool package_held(void *arg)
{
  (void)arg;
  return db_int("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = 'fdev1' AND state = 'held'") == 1;
}

static bool pva_revoked(void *arg)
{
  char q[160];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM revocations WHERE network = 'sho-a' AND imsi = '%s'",
           (const char *)arg);
  return db_int("pva", q) == 1;
}

/* The PVA honours every network's token, so it is told when an SHO ends a subscription:
 * sho-a's outbox delivers the revocation of imsi1 (step 10), and from then on the PVA refuses
 * that subscription's tokens too. A revocation binds only its sender's tokens: sho-b
 * "revoking" mallory's sho-a IMSI changes nothing for sho-a's tokens, and a role that is not
 * an SHO (the M2MES, 403) or a caller without a certificate (401) cannot revoke at all. */
static void pva_revocation_checks(const char *txn, const char *revoked)
{
  char path[160];
  long status = 0;
  snprintf(path, sizeof(path), "/v1/validations/pending/fdev1/%s", txn);
  assert_true(wait_until(30, pva_revoked, imsi1));
  assert_int_equal(get("pva", path, revoked, &status), MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);

  struct mcim_http_client *sho_b_cli = NULL;
  struct mcim_http_client_cfg bc = {.ca_file = lab_file("pki/" MCIM_PKI_OPERATORS_CA_CERT),
                                    .cert_file = lab_file("pki/sho-b/cert.pem"),
                                    .key_file = lab_file("pki/sho-b/key.pem")};
  assert_int_equal(mcim_http_client_new(&bc, &sho_b_cli), MCIM_OK);
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", "mallory", "imsi", imsim_a);
  long long rows = db_int("pva", "SELECT COUNT(*) FROM revocations");
  /* not an SHO (the M2MES), no client certificate at all: refused, nothing recorded */
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_FORBIDDEN);
  assert_int_equal(r.status, 403);
  mcim_http_result_clear(&r);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&r);
  assert_int_equal(db_int("pva", "SELECT COUNT(*) FROM revocations"), rows);
  /* another SHO: recorded, but only as its own (it revokes nothing of sho-a's) */
  assert_int_equal(mcim_http_request(sho_b_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  json_decref(body);
  mcim_http_client_free(sho_b_cli);
  char q[160];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM revocations WHERE network = 'sho-a' AND imsi = '%s'",
           imsim_a);
  assert_int_equal(db_int("pva", q), 0);
  char *live = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  snprintf(path, sizeof(path), "/v1/validations/pending/mallory/%s", txn);
  assert_int_equal(get("pva", path, live, &status), MCIM_NOT_FOUND); /* honoured: no nonce */
  free(live);
}

static mcim_cause_t release(const char *bearer, const char *txn, const char *device,
                            const char *ack)
{
  return post("ro", "/v1/dpf/releases", bearer,
              json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "ack", ack));
}

/* The old SHO's acknowledgement as src/roles/sho/change.c makes it, with what we vary. */
static char *ack(const mcim_jose_key_t *key, const char *iss, const char *sub, const char *aud,
                 const char *typ, const char *txn, bool released)
{
  return sign(key, typ, iss, sub, aud, txn,
              json_pack("{s:b,s:s,s:s,s:I}", "released", released, "imsi", imsi1, "sho", iss,
                        "at", (json_int_t)mcim_now()));
}

static void test_forged_acknowledgements(void **state)
{
  (void)state;
  struct bg_run b = {.run = {.device = "fdev1", .procedure = "change", .sho = "sho-b",
                             .via = "old-sho", .timeout_s = 90}};
  struct stage_wait w = {.device = "fdev1", .stage = "download"};
  char q[512], *a = NULL;

  /* The package sho-b sends for this change reaches the DPF but stays out of the device's
   * reach until sho-a has been paused: the device then stages it, discards the sho-a MCIM
   * (step 8) and waits on sho-a at step 9, with no acknowledgement relayed yet. */
  db_exec("ro", "CREATE TRIGGER hold_fdev1 AFTER INSERT ON dpf_packages"
                " WHEN NEW.device = 'fdev1' BEGIN"
                " UPDATE dpf_packages SET state = 'held' WHERE txn = NEW.txn; END;");
  assert_int_equal(pthread_create(&b.th, NULL, bg_main, &b), 0);
  assert_true(wait_until(60, package_held, NULL));
  assert_true(wait_until(30, at_stage, &w));
  paused = role_pid("sho-a");
  assert_int_equal(kill(paused, SIGSTOP), 0);
  db_exec("ro", "DROP TRIGGER hold_fdev1;"
                " UPDATE dpf_packages SET state = 'ready' WHERE state = 'held';");
  w.stage = "receipt";
  assert_true(wait_until(30, at_stage, &w));
  const char *txn = w.txn;
  assert_int_equal(strlen(txn), 32);

  /* the device's access: a restricted token of the VNO reaches the RO */
  char *tok = vno_token("fdev1", "001019100000002");
  char *mallory_tok = vno_token("fdev2", "001019100000003");
  mcim_jose_key_t *unknown = NULL;
  assert_int_equal(mcim_jose_key_generate(&unknown), MCIM_OK);

  /* signed by the new SHO itself */
  a = ack(key_sho_b, "sho-b", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* by a role that is not an SHO */
  a = ack(key_pva, "pva", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* in the old SHO's name, by an unknown key */
  a = ack(unknown, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_JWS_BAD_SIGNATURE);
  free(a);
  /* the old SHO's key, released = false */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, false);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... for another txn */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", TXN_F1, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  assert_int_equal(release(tok, TXN_F1, "fdev1", a), MCIM_NOT_FOUND); /* no such change */
  free(a);
  /* ... about another device */
  a = ack(key_sho_a, "sho-a", "fdev2", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... addressed to the new SHO instead of the RO */
  a = ack(key_sho_a, "sho-a", "fdev1", "sho-b", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... a statement of another type (an access token of sho-a) */
  a = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* a good-looking acknowledgement sent with another device's access */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(mallory_tok, txn, "fdev1", a), MCIM_FORBIDDEN);
  free(a);

  /* The old SHO (sho-a knows this txn from step 9, and the RO honours a token it mints for
   * fdev1, still its subscriber) asks the RO who takes fdev1 over. The DRF's discovery and
   * the DPF's package go to the device itself only (its TRE's request, beside the token):
   * without that request FIELD_MISSING; with one signed by a key certified as fdev1 by a
   * rogue CA, or by another device's real M2MES certificate, CERT_INVALID; fdev1's own
   * request of another txn or for the other thing, CLAIM_MISMATCH. No answer names sho-b;
   * the RO stores and queues nothing (before the check, the discovery answered sho-b's name
   * and queued a step-8 announcement). */
  {
    char *own = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
    char pkg_path[128], *rogue_pem = NULL, *other_pem = NULL;
    snprintf(pkg_path, sizeof(pkg_path), "/v1/dpf/packages/fdev1/%s", txn);
    mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
    mcim_jose_key_t *other = tre_key(m2mes_ca, "mallory", &other_pem);
    long long answers0 = db_int("ro", "SELECT COUNT(*) FROM answers");
    long long outbox0 = db_int("ro", "SELECT COUNT(*) FROM outbox");
    static const struct {
      const char *path, *what, *other;
    } asks[] = {{"/v1/drf/discover", "discovery", "package"},
                {NULL, "package", "discovery"}};
    for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
      const char *path = asks[i].path ? asks[i].path : pkg_path;
      struct {
        const char *why;
        mcim_cause_t want;
        char *proof;
        const char *cert;
        char *cert_owned;
      } tries[5] = {
          {"no TRE request", MCIM_FIELD_MISSING, NULL, NULL, NULL},
          {"a rogue CA's fdev1", MCIM_CERT_INVALID,
           sign(rogue, "mcim-request+jwt", "fdev1", "fdev1", "ro", txn,
                json_pack("{s:s}", "for", asks[i].what)),
           rogue_pem, NULL},
          {"another device's", MCIM_CERT_INVALID,
           sign(other, "mcim-request+jwt", "fdev1", "fdev1", "ro", txn,
                json_pack("{s:s}", "for", asks[i].what)),
           other_pem, NULL},
          {"fdev1's for another txn", MCIM_CLAIM_MISMATCH, NULL, NULL, NULL},
          {"fdev1's for the other thing", MCIM_CLAIM_MISMATCH, NULL, NULL, NULL},
      };
      tries[3].proof = device_sign("fdev1", "mcim-request+jwt", "ro", TXN_F1,
                                   json_pack("{s:s}", "for", asks[i].what), &tries[3].cert_owned);
      tries[3].cert = tries[3].cert_owned;
      tries[4].proof = device_sign("fdev1", "mcim-request+jwt", "ro", txn,
                                   json_pack("{s:s}", "for", asks[i].other), &tries[4].cert_owned);
      tries[4].cert = tries[4].cert_owned;
      for (size_t j = 0; j < 5; j++) {
        json_t *body = asks[i].path ? json_pack("{s:s,s:s}", "txn", txn, "device", "fdev1")
                                    : json_object();
        if (tries[j].proof) {
          json_object_set_new(body, "proof", json_string(tries[j].proof));
          json_object_set_new(body, "tre_cert", json_string(tries[j].cert));
        }
        json_t *ans = NULL;
        long status = 0;
        mcim_cause_t rc = post_keep("ro", path, own, body, &ans, &status);
        char *text = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
        if (rc != tries[j].want || (text && strstr(text, "sho-b")))
          fprintf(stderr, "  %s with %s: %s (%ld) %s\n", path, tries[j].why,
                  mcim_cause_name(rc), status, text ? text : "");
        assert_int_equal(rc, tries[j].want);
        assert_int_equal(status, tries[j].want == MCIM_FIELD_MISSING ? 400 : 401);
        assert_null(text ? strstr(text, "sho-b") : NULL);
        free(text);
        json_decref(ans);
        free(tries[j].proof);
        free(tries[j].cert_owned);
      }
    }
    assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM answers"), answers0);
    assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox"), outbox0);
    mcim_jose_key_free(rogue);
    mcim_jose_key_free(other);
    free(rogue_pem);
    free(other_pem);
    free(own);
  }

  /* nothing was relayed: no answer stored, nothing queued for sho-b, its order not released
   * and not active, its MCIM not active */
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM answers WHERE txn = '%s' AND step = 11", txn);
  assert_int_equal(db_int("ro", q), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM outbox WHERE txn = '%s' AND path = '/v1/releases'", txn);
  assert_int_equal(db_int("ro", q), 0);
  snprintf(q, sizeof(q), "SELECT released FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(db_int("sho-b", q), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM orders WHERE txn = '%s' AND state = 'active'", txn);
  assert_int_equal(db_int("sho-b", q), 0);
  assert_int_equal(db_int("sho-b", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 0);

  /* let sho-a answer: the real change completes despite the forgeries */
  resume_paused();
  assert_int_equal(pthread_join(b.th, NULL), 0);
  if (b.rc != MCIM_OK)
    fprintf(stderr, "change: %s %s\n", b.res.result, b.res.detail);
  assert_int_equal(b.rc, MCIM_OK);
  mcim_lab_run_result_clear(&b.res);
  snprintf(q, sizeof(q), "SELECT released FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(db_int("sho-b", q), 1);
  /* invariant 1: one active subscription, at sho-b; the old IMSI terminated at sho-a */
  assert_int_equal(db_int("sho-b", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 1);
  assert_int_equal(db_int("sho-a", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'terminated'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE device = 'fdev1' AND state = 'subscribed'"), 1);
  assert_full_access("fdev1", "sho-b");

  /* The termination at step 10 revoked every token of the old subscription at once, and the
   * device dropped that session (it lists none of sho-a). */
  long status = 0;
  json_t *ans = NULL;
  char *revoked = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", "/v1/devices/fdev1/subscription", revoked, &status),
                   MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);
  /* ... at the RO too: a token sho-a issued before it released fdev1's registry entry */
  int64_t now = mcim_now();
  char *before = NULL;
  json_t *x = json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1);
  mcim_claims_t c = {.iss = "sho-a", .sub = "fdev1", .aud = "sho-a", .typ = "mcim-access+jwt",
                     .txn = ZERO_TXN, .iat = now - 120, .exp = now + 300, .extra = x};
  assert_int_equal(mcim_jws_sign(key_sho_a, &c, &before), MCIM_OK);
  json_decref(x);
  assert_int_equal(post("ro", "/v1/drf/discover", before,
                        json_pack("{s:s,s:s}", "txn", txn, "device", "fdev1")),
                   MCIM_TOKEN_REVOKED);
  free(before);
  pva_revocation_checks(txn, revoked);
  json_t *view = agent_get("fdev1", "/v1/status"), *acc;
  size_t i;
  json_array_foreach(json_object_get(view, "access"), i, acc)
    assert_string_not_equal(json_string_value(json_object_get(acc, "network")), "sho-a");
  json_decref(view);

  /* sho-a's stored acknowledgement (it names sho-a and the old IMSI) goes to nobody without
   * a valid receipt of fdev1 for this txn: not with the revoked token and a forged receipt,
   * not with another device's live token, not without a token */
  char *rogue_pem = NULL;
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  char *fake = receipt(rogue, "fdev1", "sho-a", txn, "sho-a", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  const char *bearers[] = {revoked, tokm, NULL};
  const mcim_cause_t want[] = {MCIM_CERT_INVALID, MCIM_FORBIDDEN, MCIM_NO_ACCESS};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(post_keep("sho-a", "/v1/discards", bearers[k],
                               json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", "fdev1",
                                         "receipt", fake, "tre_cert", rogue_pem, "step", 9),
                               &ans, &status),
                     want[k]);
    assert_null(json_object_get(ans, "ack"));
    json_decref(ans);
  }
  /* ... while the device itself, retrying with a receipt of its TRE, gets it back (the
   * very request that revoked its token) */
  char *cert = NULL;
  char *real = device_sign("fdev1", "mcim-discard+jwt", "sho-a", txn,
                           json_pack("{s:s,s:s}", "slot", "sho-a", "imsi", imsi1), &cert);
  assert_int_equal(post_keep("sho-a", "/v1/discards", revoked,
                             json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", "fdev1",
                                       "receipt", real, "tre_cert", cert, "step", 9),
                             &ans, &status),
                   MCIM_OK);
  assert_non_null(json_string_value(json_object_get(ans, "ack")));
  json_decref(ans);
  free(real);
  free(cert);
  free(fake);
  free(tokm);
  free(rogue_pem);
  mcim_jose_key_free(rogue);
  free(revoked);

  free(tok);
  free(mallory_tok);
  mcim_jose_key_free(unknown);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forged_receipts),
      cmocka_unit_test(test_forged_notifications),
      cmocka_unit_test(test_registration_pending),
      cmocka_unit_test(test_report_pending),
      cmocka_unit_test(test_token_binding),
      cmocka_unit_test(test_token_release_order),
      cmocka_unit_test(test_forged_acknowledgements),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
