/* The lab of the forgery tests against the change of subscription (test_change_forgery.c,
 * test_change_forgery_notify.c, test_change_forgery_tokens.c): a real lab per program (mcimd
 * processes on loopback, real TLS, real device agents with their software TREs), fdev1
 * provisioned at sho-a, fdev2 at sho-b, and the attacker's own device "mallory" at sho-a with
 * a pre-provisioned MCIM of sho-b; clients, the lab's keys, a rogue CA; and the attacker's
 * means: tokens, statements signed with any key, requests to the roles and the agents, the
 * roles' databases read and written. Header-only (static functions), included after
 * cmocka.h by each program once. */
#ifndef MCIM_TEST_CHANGE_FORGERY_FIXTURE_H
#define MCIM_TEST_CHANGE_FORGERY_FIXTURE_H

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

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "lab_db.h"

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

static inline char *url(const char *role, const char *path)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s%s", mcim_lab_url(lab, role), path);
  return b;
}

static inline char *lab_file(const char *rel)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s/%s", mcim_lab_path(lab), rel);
  return b;
}

static inline mcim_jose_key_t *load_key(const char *rel)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_pki_key_load(lab_file(rel), &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  EVP_PKEY_free(pk);
  return k;
}

/* A TRE attestation key certified by `ca` for device `name` (PEM in *pem). */
static inline mcim_jose_key_t *tre_key(mcim_pki_ca_t *ca, const char *name, char **pem)
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

static inline char *sign(const mcim_jose_key_t *key, const char *typ, const char *iss,
                         const char *sub, const char *aud, const char *txn, json_t *extra)
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
static inline char *token(const mcim_jose_key_t *net_key, const char *net, const char *device,
                          const char *scope, const char *identity)
{
  return sign(net_key, "mcim-access+jwt", net, device, net, ZERO_TXN,
              json_pack("{s:s,s:s}", "scope", scope, "imsi", identity));
}

/* A restricted token the real way (as test_access_e2e.c does): a PCID credential of our
 * own registered at the ICF for `device` (mTLS as the M2MES), then an attach at the VNO
 * with a software USIM (Milenage, TS 33.102 checks). */
static inline char *vno_token(const char *device, const char *pcid)
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

static inline mcim_cause_t post(const char *role, const char *path, const char *bearer,
                                json_t *body)
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
static inline mcim_cause_t post_keep(const char *role, const char *path, const char *bearer,
                                     json_t *body, json_t **answer, long *status)
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

static inline mcim_cause_t get(const char *role, const char *path, const char *bearer, long *status)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(plain_cli, "GET", url(role, path), NULL, bearer, &r);
  if (status)
    *status = r.status;
  mcim_http_result_clear(&r);
  return rc;
}

static inline mcim_cause_t discard(const char *sho, const char *bearer, const char *txn,
                                   const char *device, const char *receipt, const char *cert)
{
  return post(sho, "/v1/discards", bearer,
              json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", device, "receipt", receipt,
                        "tre_cert", cert, "step", 9));
}

static inline char *receipt(const mcim_jose_key_t *key, const char *device, const char *sho,
                            const char *txn, const char *slot, const char *imsi)
{
  return sign(key, "mcim-discard+jwt", device, device, sho, txn,
              json_pack("{s:s,s:s}", "slot", slot, "imsi", imsi));
}

/* GET on a device agent's control socket. */
static inline json_t *agent_get(const char *device, const char *path)
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
static inline mcim_cause_t agent_attach(const char *device, const char *network, char scope[16])
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

static inline void assert_full_access(const char *device, const char *sho)
{
  char scope[16];
  assert_int_equal(agent_attach(device, sho, scope), MCIM_OK);
  assert_string_equal(scope, "full");
}

static inline void active_imsi(const char *device, char out[24])
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
static inline void running_stage(const char *device, char stage[32], char txn[40])
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
static inline long long db_int(const char *role, const char *sql)
{
  return lab_db_int(lab, role, sql, NULL);
}

static inline void db_exec(const char *role, const char *sql)
{
  lab_db_exec(lab, role, sql);
}

static inline pid_t role_pid(const char *name)
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

static inline void resume_paused(void)
{
  if (paused > 0)
    kill(paused, SIGCONT);
  paused = 0;
}

static inline void run_procedure(const char *device, const char *procedure, const char *sho)
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

static inline void provision(const char *device, const char *sho)
{
  assert_int_equal(mcim_lab_device_add(lab, device, false), MCIM_OK);
  run_procedure(device, "initial", sho);
}

/* The IMSI of `device`'s slot `slot` (any state), from its TRE's public view. */
static inline void slot_imsi(const char *device, const char *slot, char out[24])
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
static inline char *device_sign(const char *device, const char *typ, const char *aud,
                                const char *txn, json_t *extra, char **cert)
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

static inline int setup(void **state)
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

static inline int teardown(void **state)
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

/* Polls `cond` every 50 ms for up to `seconds` seconds: whether it came to hold. */
static inline bool wait_until(int seconds, bool (*cond)(void *), void *arg)
{
  for (int i = 0; i < seconds * 20; i++) {
    if (cond(arg))
      return true;
    usleep(50 * 1000);
  }
  return false;
}

#endif
