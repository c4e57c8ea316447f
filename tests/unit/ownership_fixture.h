/* The lab of the ownership tests of issue 8 (test_ownership_e2e.c, test_registry_e2e.c): a
 * real lab per program (soft_device_fixture.h: mcimd processes on loopback, real TLS, real
 * device agents), device DEV added with its owner's key and parameters; clients of sho-a and
 * sho-b, sho-a's key, a stranger's key of its own; signed statements, requests to the roles
 * and to a device's control API, the roles' stores counted, read and written, lab runs.
 * Header-only: include it once per test program, after defining OWNERSHIP_LAB_DIR, the
 * mkdtemp template of that program's lab folder (each program has its own, so that two of
 * them running at once never share one). */
#ifndef MCIM_TEST_OWNERSHIP_FIXTURE_H
#define MCIM_TEST_OWNERSHIP_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

#include "soft_device_fixture.h"
#include "lab_db.h"
#include "mcim/jose.h"
#include "mcim/lab_run.h"
#include "mcim/role.h"

#ifndef OWNERSHIP_LAB_DIR
#error "define OWNERSHIP_LAB_DIR (e.g. \"/tmp/mcim-<program>-XXXXXX\") before including this"
#endif

/* Every helper: a program that does not use one compiles without warnings. */
#define OWN_FN static __attribute__((unused))

static char dir[] = OWNERSHIP_LAB_DIR;
static struct mcim_http_client *sho_a_cli, *sho_b_cli;
static mcim_jose_key_t *owner, *stranger, *key_sho_a;
static json_t *params;

#define DEV "odev1"

OWN_FN char *lab_file(const char *rel)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s/%s", mcim_lab_path(lab), rel);
  return b;
}

OWN_FN mcim_jose_key_t *load_key(const char *path)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_pki_key_load(path, &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  EVP_PKEY_free(pk);
  return k;
}

OWN_FN struct mcim_http_client *role_client(const char *role)
{
  char cert[256], key[256];
  struct mcim_http_client *c = NULL;
  snprintf(cert, sizeof(cert), "%s/pki/%s/cert.pem", mcim_lab_path(lab), role);
  snprintf(key, sizeof(key), "%s/pki/%s/key.pem", mcim_lab_path(lab), role);
  struct mcim_http_client_cfg cfg = {.ca_file = ca, .cert_file = cert, .key_file = key};
  assert_int_equal(mcim_http_client_new(&cfg, &c), MCIM_OK);
  return c;
}

OWN_FN void new_txn(char txn[33])
{
  uint8_t b[16];
  assert_int_equal(mcim_random(b, sizeof(b)), MCIM_OK);
  mcim_hex_encode(b, sizeof(b), txn);
}

OWN_FN char *sign_lived(const mcim_jose_key_t *key, const char *typ, const char *iss,
                        const char *sub, const char *aud, const char *txn, json_t *extra,
                        int64_t lifetime)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = iss, .sub = sub, .aud = aud, .typ = typ, .txn = txn, .iat = now,
                     .exp = now + lifetime, .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

OWN_FN char *sign(const mcim_jose_key_t *key, const char *typ, const char *iss, const char *sub,
                  const char *aud, const char *txn, json_t *extra)
{
  return sign_lived(key, typ, iss, sub, aud, txn, extra, 300);
}

/* An order as the subscriber makes it (src/lab/run.c), signed by `key`. */
OWN_FN char *order_jws(const mcim_jose_key_t *key, const char *sho, const char *txn)
{
  return sign(key, "mcim-order+jwt", "subscriber", DEV, sho, txn,
              json_pack("{s:O,s:O,s:s}", "attestation_cert",
                        json_object_get(params, "attestation_cert"), "ka_cert",
                        json_object_get(params, "ka_cert"), "procedure", "initial"));
}

/* A request; its cause, and the HTTP status in *status (may be NULL). */
OWN_FN mcim_cause_t req(struct mcim_http_client *cli, const char *method, const char *role,
                        const char *path, json_t *body, const char *bearer, long *status)
{
  struct mcim_http_result r;
  mcim_cause_t rc = mcim_http_request(cli, method, url(role, path), body, bearer, &r);
  if (status)
    *status = r.status;
  if (rc != MCIM_OK && getenv("MCIM_TEST_VERBOSE"))
    fprintf(stderr, "  %s %s%s -> %s: %s\n", method, role, path, mcim_cause_name(rc), r.detail);
  mcim_http_result_clear(&r);
  json_decref(body);
  return rc;
}

OWN_FN mcim_cause_t post_order(const mcim_jose_key_t *key, const char *sho, const char *to,
                               const char *txn, long *status)
{
  char *jws = order_jws(key, sho, txn);
  mcim_cause_t rc = req(plain_cli, "POST", to, "/v1/orders",
                        json_pack("{s:s,s:s}", "txn", txn, "order", jws), NULL, status);
  free(jws);
  return rc;
}

/* ---- the stores, counted ---- */

static const struct {
  const char *role, *table;
} counted[] = {
    {"sho-a", "orders"},      {"sho-a", "auc"},         {"sho-a", "answers"},
    {"sho-a", "replay"},      {"sho-a", "trace"},       {"sho-a", "outbox"},
    {"sho-b", "orders"},      {"sho-b", "answers"},     {"sho-b", "outbox"},
    {"ro", "owners"},         {"ro", "drf_orders"},     {"ro", "drf"},
    {"ro", "dpf_packages"},   {"ro", "answers"},        {"ro", "replay"},
    {"ro", "trace"},          {"ro", "outbox"},         {"pva", "validations"},
    {"pva", "answers"},       {"pva", "trace"},
};
#define NCOUNTED (sizeof(counted) / sizeof(counted[0]))

OWN_FN int64_t count_rows(const char *role, const char *sql)
{
  return lab_db_int(lab, role, sql, NULL);
}

/* The first column of the first row of `sql` on a role's store, as text (malloc'd). */
OWN_FN char *text_row(const char *role, const char *sql)
{
  return lab_db_text(lab, role, sql);
}

/* `sql` run on a role's store (the test reaching in: a fault it cannot cause otherwise). */
OWN_FN void exec_sql(const char *role, const char *sql)
{
  lab_db_exec(lab, role, sql);
}

OWN_FN void snapshot(int64_t out[NCOUNTED + 1])
{
  char sql[128];
  for (size_t i = 0; i < NCOUNTED; i++) {
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s", counted[i].table);
    out[i] = count_rows(counted[i].role, sql);
  }
  out[NCOUNTED] = count_rows("sho-a", "SELECT value FROM counters WHERE name = 'msin'");
}

OWN_FN void assert_unchanged(const int64_t before[NCOUNTED + 1], const char *after_what)
{
  int64_t now[NCOUNTED + 1];
  snapshot(now);
  for (size_t i = 0; i < NCOUNTED; i++)
    if (now[i] != before[i])
      fail_msg("%s: %s.%s has %lld rows, had %lld", after_what, counted[i].role,
               counted[i].table, (long long)now[i], (long long)before[i]);
  if (now[NCOUNTED] != before[NCOUNTED])
    fail_msg("%s: sho-a reserved IMSIs", after_what);
}

/* ---- setup ---- */

OWN_FN int setup(void **state)
{
  char path[512];
  (void)state;
  if (soft_lab_up(dir) != 0)
    return -1;
  if (mcim_lab_device_add(lab, DEV, false) != MCIM_OK)
    return -1;
  snprintf(path, sizeof(path), "%s/owner/owner.key", mcim_lab_device_dir(lab, DEV));
  owner = load_key(path);
  snprintf(path, sizeof(path), "%s/params.json", mcim_lab_device_dir(lab, DEV));
  params = json_load_file(path, 0, NULL);
  key_sho_a = load_key(lab_file("pki/sho-a/key.pem"));
  sho_a_cli = role_client("sho-a");
  sho_b_cli = role_client("sho-b");
  return owner && params && mcim_jose_key_generate(&stranger) == MCIM_OK ? 0 : -1;
}

OWN_FN int teardown(void **state)
{
  (void)state;
  mcim_jose_key_free(owner);
  mcim_jose_key_free(stranger);
  mcim_jose_key_free(key_sho_a);
  mcim_http_client_free(sho_a_cli);
  mcim_http_client_free(sho_b_cli);
  json_decref(params);
  return soft_lab_down(dir);
}

/* A procedure of `device` at `sho`, run by the lab as the subscriber does; fails the test
 * unless it succeeds. */
OWN_FN void run_ok(const char *device, const char *procedure, const char *sho)
{
  struct mcim_lab_run run = {.device = device, .procedure = procedure, .sho = sho,
                             .timeout_s = 60};
  struct mcim_lab_run_result res;
  mcim_cause_t rc = mcim_lab_run(lab, &run, &res);
  if (rc != MCIM_OK)
    fail_msg("%s %s at %s: %s (%s)", procedure, device, sho, res.result, res.detail);
  mcim_lab_run_result_clear(&res);
}

/* ---- a device's control API ---- */

/* The device's procedure at `dev` (its control API): its stage, cause (the detail when it
 * has none: a wait), result. */
OWN_FN void device_proc(struct mcim_http_client *dev, const char *txn, char stage[32],
                        char cause[128], char result[48])
{
  char u[128];
  struct mcim_http_result r;
  snprintf(u, sizeof(u), "http://localhost/v1/procedures/%s", txn);
  stage[0] = cause[0] = result[0] = '\0';
  if (mcim_http_request(dev, "GET", u, NULL, NULL, &r) == MCIM_OK) {
    const char *v;
    if ((v = json_string_value(json_object_get(r.json, "stage"))))
      snprintf(stage, 32, "%s", v);
    if ((v = json_string_value(json_object_get(r.json, "cause"))) ||
        (v = json_string_value(json_object_get(r.json, "detail"))))
      snprintf(cause, 128, "%s", v);
    if ((v = json_string_value(json_object_get(r.json, "result"))))
      snprintf(result, 48, "%s", v);
  }
  mcim_http_result_clear(&r);
}

/* `field`: `jws` posted to the device's control API at `path`; the cause of the answer. */
OWN_FN mcim_cause_t device_post(struct mcim_http_client *dev, const char *path, const char *field,
                                const char *jws)
{
  char u[128];
  struct mcim_http_result r;
  json_t *b = json_pack("{s:s}", field, jws);
  snprintf(u, sizeof(u), "http://localhost%s", path);
  mcim_cause_t rc = mcim_http_request(dev, "POST", u, b, NULL, &r);
  mcim_http_result_clear(&r);
  json_decref(b);
  return rc;
}

/* The owner `key`'s instruction to `device` (claims: procedure, sho, via), as posted. */
OWN_FN mcim_cause_t instruct(struct mcim_http_client *dev, const mcim_jose_key_t *key,
                             const char *device, const char *txn, json_t *claims)
{
  char *ins = sign(key, "mcim-instruction+jwt", "subscriber", device, device, txn, claims);
  mcim_cause_t rc = device_post(dev, "/v1/procedures", "instruction", ins);
  free(ins);
  return rc;
}

/* The owner `key`'s order for `device` at `sho` (procedure, via may be NULL), as answered. */
OWN_FN mcim_cause_t order_for(const mcim_jose_key_t *key, const char *device, const json_t *dparams,
                              const char *sho, const char *txn, const char *procedure,
                              const char *via)
{
  char *o = sign(key, "mcim-order+jwt", "subscriber", device, sho, txn,
                 json_pack("{s:O,s:O,s:s,s:s?}", "attestation_cert",
                           json_object_get(dparams, "attestation_cert"), "ka_cert",
                           json_object_get(dparams, "ka_cert"), "procedure", procedure, "via",
                           via));
  mcim_cause_t rc = req(plain_cli, "POST", sho, "/v1/orders",
                        json_pack("{s:s,s:s}", "txn", txn, "order", o), NULL, NULL);
  free(o);
  return rc;
}

/* A new lab device `name`: its owner's key and its parameters, as the M2MES made them (the
 * caller frees both). */
OWN_FN void device_and_owner(const char *name, mcim_jose_key_t **key, json_t **dparams)
{
  char path[512];
  assert_int_equal(mcim_lab_device_add(lab, name, false), MCIM_OK);
  snprintf(path, sizeof(path), "%s/owner/owner.key", mcim_lab_device_dir(lab, name));
  *key = load_key(path);
  snprintf(path, sizeof(path), "%s/params.json", mcim_lab_device_dir(lab, name));
  *dparams = json_load_file(path, 0, NULL);
  assert_non_null(*key);
  assert_non_null(*dparams);
}

/* A new lab device `name`, whose owner's initial order at sho-a is taken (another device
 * than one a bound holds back). */
OWN_FN void new_device_ordered(const char *name)
{
  char txn[33];
  mcim_jose_key_t *key = NULL;
  json_t *dparams = NULL;
  device_and_owner(name, &key, &dparams);
  new_txn(txn);
  assert_int_equal(order_for(key, name, dparams, "sho-a", txn, "initial", NULL), MCIM_OK);
  json_decref(dparams);
  mcim_jose_key_free(key);
}

/* Polls the device until the procedure `txn` has a result; fails unless it is success. */
OWN_FN void wait_success(struct mcim_http_client *dev, const char *txn, const char *what)
{
  char stage[32], cause[128], result[48] = "";
  for (int waited = 0; waited < 60000 && !result[0]; waited += 100) {
    usleep(100 * 1000);
    device_proc(dev, txn, stage, cause, result);
  }
  if (strcmp(result, "success") != 0)
    fail_msg("%s: result '%s', cause %s, stage %s", what, result, cause, stage);
}

#endif
