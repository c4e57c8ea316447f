/* Issue 8, points 1-4, on a real lab (mcimd processes on loopback, real TLS, a real device
 * agent): who may order, read an order, register at the DRF, authorise the DPF, for which
 * device and which procedure (txn). The hostile parties are real clients holding a valid
 * certificate of their role (sho-b, sho-a acting for a device it has no order for) or none
 * (a stranger with a key of its own). Every refusal is asserted by its cause, and the stores
 * of every role are compared before and after: a refused request leaves nothing behind.
 *   - step 1: a stranger's order (its own key, the device's real TRE certificates) is
 *     NOT_OWNER at the SHO, 1,000 of them leave every store as it was; an owner's order
 *     for another SHO is refused; an SHO cannot get the DRF to record a stranger's order;
 *   - an order is readable only by its owner (owner-signed query) and the parties;
 *   - step 7-8: the DRF answers ORDER_PENDING (503) for a txn it holds no order of;
 *   - step 12 / 6: the DRF and the DPF take a package only from the SHO of the order, with
 *     the PVA's verdict;
 *   - step 14 / 15: the DRF takes a registration only on proof (an install the DPF recorded).
 *   - the owner hands the device over: the old owner's orders are refused from then on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <unistd.h>

#include "soft_device_fixture.h"
#include "mcim/jose.h"
#include "mcim/lab_run.h"
#include "mcim/role.h"

static char dir[] = "/tmp/mcim-ownership-XXXXXX";
static struct mcim_http_client *sho_a_cli, *sho_b_cli;
static mcim_jose_key_t *owner, *stranger, *key_sho_a;
static json_t *params;

#define DEV "odev1"

static char *lab_file(const char *rel)
{
  static char buf[4][512];
  static int n;
  char *b = buf[n++ % 4];
  snprintf(b, 512, "%s/%s", mcim_lab_path(lab), rel);
  return b;
}

static mcim_jose_key_t *load_key(const char *path)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(mcim_pki_key_load(path, &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  EVP_PKEY_free(pk);
  return k;
}

static struct mcim_http_client *role_client(const char *role)
{
  char cert[256], key[256];
  struct mcim_http_client *c = NULL;
  snprintf(cert, sizeof(cert), "%s/pki/%s/cert.pem", mcim_lab_path(lab), role);
  snprintf(key, sizeof(key), "%s/pki/%s/key.pem", mcim_lab_path(lab), role);
  struct mcim_http_client_cfg cfg = {.ca_file = ca, .cert_file = cert, .key_file = key};
  assert_int_equal(mcim_http_client_new(&cfg, &c), MCIM_OK);
  return c;
}

static void new_txn(char txn[33])
{
  uint8_t b[16];
  assert_int_equal(mcim_random(b, sizeof(b)), MCIM_OK);
  mcim_hex_encode(b, sizeof(b), txn);
}

static char *sign_lived(const mcim_jose_key_t *key, const char *typ, const char *iss,
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

static char *sign(const mcim_jose_key_t *key, const char *typ, const char *iss, const char *sub,
                  const char *aud, const char *txn, json_t *extra)
{
  return sign_lived(key, typ, iss, sub, aud, txn, extra, 300);
}

/* An order as the subscriber makes it (src/lab/run.c), signed by `key`. */
static char *order_jws(const mcim_jose_key_t *key, const char *sho, const char *txn)
{
  return sign(key, "mcim-order+jwt", "subscriber", DEV, sho, txn,
              json_pack("{s:O,s:O,s:s}", "attestation_cert",
                        json_object_get(params, "attestation_cert"), "ka_cert",
                        json_object_get(params, "ka_cert"), "procedure", "initial"));
}

/* A request; its cause, and the HTTP status in *status (may be NULL). */
static mcim_cause_t req(struct mcim_http_client *cli, const char *method, const char *role,
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

static mcim_cause_t post_order(const mcim_jose_key_t *key, const char *sho, const char *to,
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

static int64_t count_rows(const char *role, const char *sql)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *s = NULL;
  char path[512];
  int64_t n = -1;
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
    n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  assert_true(n >= 0);
  return n;
}

/* The first column of the first row of `sql` on a role's store, as text (malloc'd). */
static char *text_row(const char *role, const char *sql)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *s = NULL;
  char path[512];
  char *out = NULL;
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
      sqlite3_column_text(s, 0))
    out = strdup((const char *)sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  assert_non_null(out);
  return out;
}

/* `sql` run on a role's store (the test reaching in: a fault it cannot cause otherwise). */
static void exec_sql(const char *role, const char *sql)
{
  sqlite3 *db = NULL;
  char path[512];
  snprintf(path, sizeof(path), "%s/%s/%s.db", mcim_lab_path(lab), role, role);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

static void snapshot(int64_t out[NCOUNTED + 1])
{
  char sql[128];
  for (size_t i = 0; i < NCOUNTED; i++) {
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s", counted[i].table);
    out[i] = count_rows(counted[i].role, sql);
  }
  out[NCOUNTED] = count_rows("sho-a", "SELECT value FROM counters WHERE name = 'msin'");
}

static void assert_unchanged(const int64_t before[NCOUNTED + 1], const char *after_what)
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

static int setup(void **state)
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

static int teardown(void **state)
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

/* ---- step 1 ---- */

static void test_forged_orders(void **state)
{
  int64_t before[NCOUNTED + 1];
  char txn[33];
  long status = 0;
  (void)state;
  snapshot(before);
  new_txn(txn);
  /* a stranger's key, the device's real (public) parameters */
  assert_int_equal(post_order(stranger, "sho-a", "sho-a", txn, &status), MCIM_NOT_OWNER);
  assert_int_equal(status, 403);
  assert_unchanged(before, "one forged order");
  /* the owner's real order, for sho-b, replayed at sho-a */
  assert_int_equal(post_order(owner, "sho-b", "sho-a", txn, &status), MCIM_CLAIM_MISMATCH);
  assert_unchanged(before, "another SHO's order");
  /* an SHO cannot get a stranger's order, or another SHO's, recorded at the DRF itself */
  char *o = order_jws(stranger, "sho-b", txn);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/orders",
                       json_pack("{s:s,s:s,s:s}", "txn", txn, "order", o, "endpoint",
                                 mcim_lab_url(lab, "sho-b")),
                       NULL, &status),
                   MCIM_NOT_OWNER);
  free(o);
  o = order_jws(owner, "sho-a", txn);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/orders",
                       json_pack("{s:s,s:s,s:s}", "txn", txn, "order", o, "endpoint",
                                 mcim_lab_url(lab, "sho-b")),
                       NULL, &status),
                   MCIM_CLAIM_MISMATCH);
  free(o);
  /* without a certificate the DRF does not even listen */
  o = order_jws(owner, "sho-a", txn);
  assert_int_not_equal(req(plain_cli, "POST", "ro", "/v1/drf/orders",
                           json_pack("{s:s,s:s,s:s}", "txn", txn, "order", o, "endpoint",
                                     mcim_lab_url(lab, "sho-a")),
                           NULL, &status),
                       MCIM_OK);
  assert_true(status == 401 || status == 403);
  free(o);
  assert_unchanged(before, "orders at the DRF");

  /* a burst: 1,000 forged orders, every one refused for the same cause, nothing kept */
  int refused = 0;
  for (int i = 0; i < 1000; i++) {
    new_txn(txn);
    if (post_order(stranger, "sho-a", "sho-a", txn, NULL) == MCIM_NOT_OWNER)
      refused++;
  }
  assert_int_equal(refused, 1000);
  assert_unchanged(before, "1,000 forged orders");
}

/* ---- orders are readable by the owner and the parties only ---- */

static void test_order_read(void **state)
{
  char txn[33], path[128];
  long status = 0;
  (void)state;
  new_txn(txn);
  assert_int_equal(post_order(owner, "sho-a", "sho-a", txn, &status), MCIM_OK);
  assert_int_equal(status, 201);
  /* the owner's retry gets the same answer; a stranger presenting the txn does not */
  assert_int_equal(post_order(owner, "sho-a", "sho-a", txn, &status), MCIM_OK);
  assert_int_equal(post_order(stranger, "sho-a", "sho-a", txn, &status), MCIM_NOT_OWNER);
  snprintf(path, sizeof(path), "/v1/orders/%s", txn);
  assert_int_equal(req(plain_cli, "GET", "sho-a", path, NULL, NULL, &status), MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  assert_int_equal(req(sho_b_cli, "GET", "sho-a", path, NULL, NULL, &status), MCIM_NOT_PARTY);
  char *q = sign(stranger, "mcim-order-query+jwt", "subscriber", DEV, "sho-a", txn, NULL);
  assert_int_equal(req(plain_cli, "GET", "sho-a", path, NULL, q, &status), MCIM_NOT_PARTY);
  free(q);
  q = sign(owner, "mcim-order-query+jwt", "subscriber", DEV, "sho-a", txn, NULL);
  assert_int_equal(req(plain_cli, "GET", "sho-a", path, NULL, q, &status), MCIM_OK);
  free(q);
  assert_int_equal(req(mcim_lab_admin_client(lab), "GET", "sho-a", path, NULL, NULL, &status),
                   MCIM_OK);
  /* an unknown txn looks the same as a refused one */
  snprintf(path, sizeof(path), "/v1/orders/%s", "0123456789abcdef0123456789abcdef");
  assert_int_equal(req(plain_cli, "GET", "sho-a", path, NULL, NULL, &status), MCIM_NOT_PARTY);

  /* The DRF holds the order by txn (for the device and sho-a) ... */
  char sql[160];
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM drf_orders WHERE txn = '%s' AND device = '" DEV
           "' AND sho = 'sho-a' AND state = 'ordered'",
           txn);
  assert_int_equal(count_rows("ro", sql), 1);

  /* ... so sho-b may not authorise the DPF for it (step 12), nor park a package (step 6) */
  int64_t before[NCOUNTED + 1];
  snapshot(before);
  char *verdict = sign(key_sho_a, "mcim-verdict+jwt", "pva", DEV, "sho-b", txn,
                       json_pack("{s:s}", "result", "success"));
  json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", DEV, "package", "x.y.z",
                        "procedure", "initial", "verdict", verdict);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/authorisations", json_incref(b), NULL,
                       &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/dpf/packages", json_incref(b), NULL, &status),
                   MCIM_NOT_PARTY);
  /* the PVA validates only for the SHO of the order */
  char *record = sign(key_sho_a, "mcim-order-record+jwt", "ro", DEV, "sho-b", txn, NULL);
  assert_int_equal(req(sho_b_cli, "POST", "pva", "/v1/validations",
                       json_pack("{s:s,s:s,s:s}", "txn", txn, "device", DEV, "order_record",
                                 record),
                       NULL, &status),
                   MCIM_NOT_PARTY);
  free(record);
  /* ... nor for sho-b replaying sho-a's genuine record (the RO's, aud = sho-a, as the DRF
   * answered sho-a's forwarded order and sho-a keeps it) */
  snprintf(sql, sizeof(sql), "SELECT record FROM orders WHERE txn = '%s'", txn);
  char *genuine = text_row("sho-a", sql);
  char iss[16];
  assert_int_equal(mcim_jws_peek_iss(genuine, iss, sizeof(iss)), MCIM_OK);
  assert_string_equal(iss, "ro");
  assert_int_equal(req(sho_b_cli, "POST", "pva", "/v1/validations",
                       json_pack("{s:s,s:s,s:s}", "txn", txn, "device", DEV, "order_record",
                                 genuine),
                       NULL, &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  free(genuine);
  assert_unchanged(before, "step 12 by the wrong parties");
  /* sho-a, whose order it is, without the PVA's verdict (signed by itself instead): refused
   * (and traced, it is a party), no package held */
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/authorisations", b, NULL, &status),
                   MCIM_JWS_BAD_SIGNATURE);
  free(verdict);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = '" DEV "'"),
                   0);
}

/* The owner's statements are valid at most a day (MCIM_OWNER_STATEMENT_MAX_LIFETIME): the
 * roles keep each jti until it expires, and an owner must not choose for how long (before
 * 2026-12-06 an order or a handover valid for years kept its replay row for years). Refused
 * LIFETIME_TOO_LONG, nothing stored, the jti not spent. */
static void test_owner_statement_lifetime(void **state)
{
  int64_t before[NCOUNTED + 1];
  char txn[33], path[128];
  long status = 0;
  (void)state;
  snapshot(before);
  new_txn(txn);
  char *o = sign_lived(owner, "mcim-order+jwt", "subscriber", DEV, "sho-a", txn,
                       json_pack("{s:O,s:O,s:s}", "attestation_cert",
                                 json_object_get(params, "attestation_cert"), "ka_cert",
                                 json_object_get(params, "ka_cert"), "procedure", "initial"),
                       10 * 86400);
  assert_int_equal(req(plain_cli, "POST", "sho-a", "/v1/orders",
                       json_pack("{s:s,s:s}", "txn", txn, "order", o), NULL, &status),
                   MCIM_LIFETIME_TOO_LONG);
  assert_int_equal(status, 401);
  free(o);
  char *jwk = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(stranger, &jwk), MCIM_OK);
  char *h = sign_lived(owner, "mcim-handover+jwt", "subscriber", DEV, "ro", txn,
                       json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)),
                       10 * 86400);
  snprintf(path, sizeof(path), "/v1/drf/owners/%s/handover", DEV);
  assert_int_equal(req(plain_cli, "POST", "ro", path, json_pack("{s:s}", "handover", h), NULL,
                       &status),
                   MCIM_LIFETIME_TOO_LONG);
  free(h);
  free(jwk);
  assert_unchanged(before, "owner statements valid for ten days");
}

/* ---- the DRF registry changes only on proof ---- */

static void test_registrations(void **state)
{
  int64_t before[NCOUNTED + 1];
  char txn[33];
  long status = 0;
  (void)state;
  snapshot(before);
  new_txn(txn);
  const char *states[] = {"subscribed", "preloaded", "released"};
  for (size_t i = 0; i < 3; i++) {
    json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", DEV, "sho", "sho-b",
                          "state", states[i], "endpoint", mcim_lab_url(lab, "sho-b"));
    /* a release of an entry it does not hold (yet: its registration may have been
     * overtaken on the way) is "not yet", and changes nothing either */
    bool release = strcmp(states[i], "released") == 0;
    assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                     release ? MCIM_REGISTRATION_PENDING : MCIM_NOT_PARTY);
    assert_int_equal(status, release ? 503 : 403);
  }
  /* "ordered" comes only as the owner's order */
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations",
                       json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", DEV, "sho",
                                 "sho-b", "state", "ordered", "endpoint",
                                 mcim_lab_url(lab, "sho-b")),
                       NULL, &status),
                   MCIM_INVALID_ARGUMENT);
  /* and nobody registers for another SHO */
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations",
                       json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", DEV, "sho",
                                 "sho-a", "state", "released", "endpoint",
                                 mcim_lab_url(lab, "sho-a")),
                       NULL, &status),
                   MCIM_FORBIDDEN);
  assert_unchanged(before, "registrations without proof");
}

/* An SHO holding a pre-provisioned MCIM cannot make itself the device's SHO on its own
 * word: preloaded -> subscribed needs the device's switch (its TRE-signed resume notice,
 * relayed by the RO for that txn). A retry of its own state and stepping back stay allowed. */
static void run_ok(const char *device, const char *procedure, const char *sho)
{
  struct mcim_lab_run run = {.device = device, .procedure = procedure, .sho = sho,
                             .timeout_s = 60};
  struct mcim_lab_run_result res;
  mcim_cause_t rc = mcim_lab_run(lab, &run, &res);
  if (rc != MCIM_OK)
    fail_msg("%s %s at %s: %s (%s)", procedure, device, sho, res.result, res.detail);
  mcim_lab_run_result_clear(&res);
}

static void test_preloaded_promotion(void **state)
{
  char txn[33];
  long status = 0;
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "pdev1", false), MCIM_OK);
  run_ok("pdev1", "initial", "sho-a");
  run_ok("pdev1", "preload", "sho-b");
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND"
                                    " sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  /* nor with the preload's own txn: its install proves `preloaded`, not `subscribed` (before
   * 2026-12-06 it did) */
  char *preload_txn = text_row("ro", "SELECT txn FROM dpf_packages WHERE device = 'pdev1' AND"
                                     " sho = 'sho-b' AND state = 'installed'");
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations",
                       json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", preload_txn, "device", "pdev1",
                                 "sho", "sho-b", "state", "subscribed", "endpoint",
                                 mcim_lab_url(lab, "sho-b")),
                       NULL, &status),
                   MCIM_NOT_PARTY);
  free(preload_txn);
  new_txn(txn);
  json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", "pdev1", "sho", "sho-b",
                        "state", "subscribed", "endpoint", mcim_lab_url(lab, "sho-b"));
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND"
                                    " sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  /* its own state again is a retry */
  b = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", "pdev1", "sho", "sho-b",
                "state", "preloaded", "endpoint", mcim_lab_url(lab, "sho-b"));
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                   MCIM_OK);
  /* Registrations that overtook each other: the entry keeps the newest `seq` (the SHO's
   * time of deciding); an older one is answered as done ("superseded") and changes
   * nothing. */
  json_int_t newest = (json_int_t)mcim_now_us();
  b = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "txn", txn, "device", "pdev1", "sho", "sho-b",
                "state", "preloaded", "endpoint", mcim_lab_url(lab, "sho-b"), "seq", newest);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                   MCIM_OK);
  b = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "txn", txn, "device", "pdev1", "sho", "sho-b",
                "state", "released", "endpoint", mcim_lab_url(lab, "sho-b"), "seq",
                newest - 1000000);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                   MCIM_OK);
  char q[200];
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND sho = 'sho-b' AND"
           " state = 'preloaded' AND seq = %lld",
           (long long)newest);
  assert_int_equal(count_rows("ro", q), 1);
  /* the device's switch is the proof: sho-b is subscribed after it */
  run_ok("pdev1", "switch", "sho-b");
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND"
                                    " sho = 'sho-b' AND state = 'subscribed'"),
                   1);
}

/* A step back to preloaded that overtook the registration it steps back from (the install's
 * `subscribed`, still in the SHO's outbox; a switch's suspend reaches the SHO straight from
 * the device, so nothing orders the two): "not yet", retried, never final. Refused as final,
 * the older `subscribed` arrived after it and stood for good (the device then held two
 * subscribed entries: integration/hlr_scale_out under load, 2026-12-06). The entry is taken
 * out of the RO's store to stand for "not arrived yet": the outbox cannot be held back from
 * outside. */
static void test_preloaded_overtaken(void **state)
{
  char txn[33], sql[256];
  long status = 0;
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "pdev2", false), MCIM_OK);
  run_ok("pdev2", "initial", "sho-a");
  char *installed = text_row("ro", "SELECT txn FROM dpf_packages WHERE device = 'pdev2' AND"
                                   " sho = 'sho-a' AND state = 'installed'");
  /* the install's registration is delivered by sho-a's outbox after the procedure's end */
  for (int waited = 0;
       waited < 30000 && count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev2'") == 0;
       waited += 50)
    usleep(50 * 1000);
  exec_sql("ro", "DELETE FROM drf WHERE device = 'pdev2'");
  json_int_t decided = (json_int_t)mcim_now_us();
  new_txn(txn);
  json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "txn", txn, "device", "pdev2", "sho",
                        "sho-a", "state", "preloaded", "endpoint", mcim_lab_url(lab, "sho-a"),
                        "seq", decided);
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/registrations", json_incref(b), NULL,
                       &status),
                   MCIM_REGISTRATION_PENDING);
  assert_int_equal(status, 503);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev2'"), 0);
  /* the older registration arrives, then the retry of the newer one: the newer stands */
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/registrations",
                       json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "txn", installed, "device",
                                 "pdev2", "sho", "sho-a", "state", "subscribed", "endpoint",
                                 mcim_lab_url(lab, "sho-a"), "seq", decided - 1000000),
                       NULL, &status),
                   MCIM_OK);
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/registrations", b, NULL, &status),
                   MCIM_OK);
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM drf WHERE device = 'pdev2' AND sho = 'sho-a' AND"
           " state = 'preloaded' AND seq = %lld",
           (long long)decided);
  assert_int_equal(count_rows("ro", sql), 1);
  /* an SHO with no install on this device is still refused for good */
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/registrations",
                       json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", "pdev2", "sho",
                                 "sho-b", "state", "preloaded", "endpoint",
                                 mcim_lab_url(lab, "sho-b")),
                       NULL, &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  free(installed);
}

/* ---- discovery is bound to the procedure ---- */

/* The device's procedure at `dev` (its control API): its stage, cause (the detail when it
 * has none: a wait), result. */
static void device_proc(struct mcim_http_client *dev, const char *txn, char stage[32],
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
static mcim_cause_t device_post(struct mcim_http_client *dev, const char *path, const char *field,
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
static mcim_cause_t instruct(struct mcim_http_client *dev, const mcim_jose_key_t *key,
                             const char *device, const char *txn, json_t *claims)
{
  char *ins = sign(key, "mcim-instruction+jwt", "subscriber", device, device, txn, claims);
  mcim_cause_t rc = device_post(dev, "/v1/procedures", "instruction", ins);
  free(ins);
  return rc;
}

/* The owner `key`'s order for `device` at `sho` (procedure, via may be NULL), as answered. */
static mcim_cause_t order_for(const mcim_jose_key_t *key, const char *device, const json_t *dparams,
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

/* Polls the device until the procedure `txn` has a result; fails unless it is success. */
static void wait_success(struct mcim_http_client *dev, const char *txn, const char *what)
{
  char stage[32], cause[128], result[48] = "";
  for (int waited = 0; waited < 60000 && !result[0]; waited += 100) {
    usleep(100 * 1000);
    device_proc(dev, txn, stage, cause, result);
  }
  if (strcmp(result, "success") != 0)
    fail_msg("%s: result '%s', cause %s, stage %s", what, result, cause, stage);
}

/* The owner instructs the device before ordering (seed step 2 before step 1 reached the
 * DRF): the DRF answers "not yet" (ORDER_PENDING, Retry-After) and the device keeps asking
 * until the order is there, then completes the procedure. */
static void test_device_waits_for_order(void **state)
{
  struct mcim_http_client *dev = NULL;
  char txn[33], path[512], stage[32], cause[128], result[48];
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "wdev1", false), MCIM_OK);
  snprintf(path, sizeof(path), "%s/owner/owner.key", mcim_lab_device_dir(lab, "wdev1"));
  mcim_jose_key_t *wowner = load_key(path);
  snprintf(path, sizeof(path), "%s/params.json", mcim_lab_device_dir(lab, "wdev1"));
  json_t *wparams = json_load_file(path, 0, NULL);
  assert_non_null(wowner);
  assert_non_null(wparams);
  assert_int_equal(mcim_lab_device_client(lab, "wdev1", &dev), MCIM_OK);
  new_txn(txn);
  assert_int_equal(instruct(dev, wowner, "wdev1", txn,
                            json_pack("{s:s,s:s}", "procedure", "initial", "sho", "sho-a")),
                   MCIM_OK);
  /* it reaches discovery and is told "not yet" (ORDER_PENDING: it waits, cause-free, saying
   * so in its detail) */
  int waited = 0;
  for (; waited < 30000; waited += 100) {
    device_proc(dev, txn, stage, cause, result);
    if (strcmp(stage, "discover") == 0 && strstr(cause, "has not reached the RO yet"))
      break;
    assert_true(result[0] == '\0');
    usleep(100 * 1000);
  }
  if (waited >= 30000)
    fail_msg("the device never waited for its order: stage %s, cause %s", stage, cause);
  /* The DRF's step-8 announcement can beat the SHO's own commit of an order the DRF has
   * just answered (step 1): the SHO says "not yet" (503, a retry for the DRF's outbox),
   * not 404 (which would end the delivery and strand the device at its nonce). */
  struct mcim_http_client *ro_cli = role_client("ro");
  long status = 0;
  assert_int_equal(req(ro_cli, "POST", "sho-a", "/v1/devices/ready",
                       json_pack("{s:s,s:s}", "txn", txn, "device", "wdev1"), NULL, &status),
                   MCIM_ORDER_NOT_STORED_YET);
  assert_int_equal(status, 503);
  mcim_http_client_free(ro_cli);
  /* only the RO announces: another SHO is FORBIDDEN, no certificate is not heard, and
   * neither leaves anything at the SHO */
  assert_int_equal(req(sho_b_cli, "POST", "sho-a", "/v1/devices/ready",
                       json_pack("{s:s,s:s}", "txn", txn, "device", "wdev1"), NULL, &status),
                   MCIM_FORBIDDEN);
  assert_int_equal(status, 403);
  assert_int_equal(req(plain_cli, "POST", "sho-a", "/v1/devices/ready",
                       json_pack("{s:s,s:s}", "txn", txn, "device", "wdev1"), NULL, &status),
                   MCIM_PEER_NOT_AUTHENTICATED);
  assert_int_equal(status, 401);
  char none[160];
  snprintf(none, sizeof(none), "SELECT COUNT(*) FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(count_rows("sho-a", none), 0);
  /* the order, now: the device finds it and the procedure completes */
  assert_int_equal(order_for(wowner, "wdev1", wparams, "sho-a", txn, "initial", NULL), MCIM_OK);
  wait_success(dev, txn, "after the order");
  /* A repeated step-8 announcement (the RO's outbox retrying) changes nothing at the SHO and
   * is answered with the order's state as stored: past "validating", which only the
   * announcement that moves the order there answers without reading it again. */
  {
    struct mcim_http_client *ro2 = role_client("ro");
    struct mcim_http_result r;
    char stored[256];
    json_t *ready = json_pack("{s:s,s:s}", "txn", txn, "device", "wdev1");
    assert_int_equal(
        mcim_http_request(ro2, "POST", url("sho-a", "/v1/devices/ready"), ready, NULL, &r),
        MCIM_OK);
    json_decref(ready);
    assert_int_equal(r.status, 200);
    const char *at = json_string_value(json_object_get(r.json, "state"));
    assert_non_null(at);
    assert_string_not_equal(at, "validating");
    assert_string_not_equal(at, "ordered");
    snprintf(stored, sizeof(stored),
             "SELECT COUNT(*) FROM orders WHERE txn = '%s' AND state = '%s'", txn, at);
    assert_int_equal(count_rows("sho-a", stored), 1);
    mcim_http_result_clear(&r);
    mcim_http_client_free(ro2);
  }
  /* The SHO orders again after the device discovered (it could not store what the DRF
   * answered: a crash, its store busy) and the step-8 announcement was given up meanwhile:
   * the DRF announces again, once, so the procedure is not stranded at the nonce. */
  char q[256], *o = sign(wowner, "mcim-order+jwt", "subscriber", "wdev1", "sho-a", txn,
                         json_pack("{s:O,s:O,s:s}", "attestation_cert",
                                   json_object_get(wparams, "attestation_cert"), "ka_cert",
                                   json_object_get(wparams, "ka_cert"), "procedure", "initial"));
  snprintf(q, sizeof(q), "UPDATE outbox SET state = 'failed' WHERE txn = '%s' AND step = 8", txn);
  exec_sql("ro", q);
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE txn = '%s' AND step = 8 AND"
           " state IN ('pending', 'delivered')",
           txn);
  assert_int_equal(count_rows("ro", q), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/orders",
                         json_pack("{s:s,s:s,s:s}", "txn", txn, "order", o, "endpoint",
                                   mcim_lab_url(lab, "sho-a")),
                         NULL, &status),
                     MCIM_OK);
    assert_int_equal(count_rows("ro", q), 1); /* the second order queues nothing more */
  }
  free(o);
  mcim_http_client_free(dev);
  mcim_jose_key_free(wowner);
  json_decref(wparams);
}

static void test_discovery_pending(void **state)
{
  struct usim u;
  char token[4096] = "", txn[33];
  mcim_cause_t net = MCIM_INTERNAL;
  (void)state;
  /* a device of the test's own with a PCID at the ICF, attached at the VNO */
  register_pcid("001019000000777", "sdev1", mcim_now() + 3600);
  usim_init(&u, K);
  json_t *c = attach_start("001019000000777", MCIM_OK);
  assert_int_equal(usim_answer(&u, c, &net, token, sizeof(token), NULL), MCIM_OK);
  json_decref(c);
  assert_int_equal(net, MCIM_OK);
  new_txn(txn);
  json_t *ask = json_pack("{s:s,s:s}", "txn", txn, "device", "sdev1");
  assert_int_equal(soft_device_proof("sdev1", txn, "discovery", ask, NULL), 0);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("ro", "/v1/drf/discover"), ask, token,
                                     &r),
                   MCIM_ORDER_PENDING);
  /* "not yet", and when to ask again */
  assert_int_equal(r.status, 503);
  assert_int_equal(r.retry_after, 1);
  mcim_http_result_clear(&r);
  json_decref(ask);
  /* a txn of another device's order is "not yet" too: nothing about it is told */
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = '" DEV "'") >
                       0,
                   1);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM answers WHERE what = 'sdev1'"), 0);
}

/* ---- the whole procedure, then a handover ---- */

static void test_provision_then_handover(void **state)
{
  struct mcim_lab_run run = {.device = DEV, .procedure = "initial", .sho = "sho-a",
                             .timeout_s = 60};
  struct mcim_lab_run_result res;
  char txn[33];
  long status = 0;
  (void)state;
  assert_int_equal(mcim_lab_run(lab, &run, &res), MCIM_OK);
  char installed[33], order_path[128];
  snprintf(installed, sizeof(installed), "%s", res.txn);
  snprintf(order_path, sizeof(order_path), "/v1/orders/%s", installed);
  mcim_lab_run_result_clear(&res);
  /* the owner reads its order (the RO confirms it is the device's owner now) */
  char *oq = sign(owner, "mcim-order-query+jwt", "subscriber", DEV, "sho-a", installed, NULL);
  assert_int_equal(req(plain_cli, "GET", "sho-a", order_path, NULL, oq, &status), MCIM_OK);
  /* the DRF now has the install on record: sho-a's registration was accepted */
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = '" DEV
                                    "' AND sho = 'sho-a' AND state = 'subscribed'"),
                   1);
  /* the owner hands the device to the stranger; a third party cannot */
  mcim_jose_key_t *third = NULL;
  char *jwk = NULL, path[128];
  assert_int_equal(mcim_jose_key_generate(&third), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(stranger, &jwk), MCIM_OK);
  snprintf(path, sizeof(path), "/v1/drf/owners/%s/handover", DEV);
  new_txn(txn);
  char *h = sign(third, "mcim-handover+jwt", "subscriber", DEV, "ro", txn,
                 json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  assert_int_equal(req(plain_cli, "POST", "ro", path, json_pack("{s:s}", "handover", h), NULL,
                       &status),
                   MCIM_NOT_OWNER);
  free(h);
  h = sign(owner, "mcim-handover+jwt", "subscriber", DEV, "ro", txn,
           json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  assert_int_equal(req(plain_cli, "POST", "ro", path, json_pack("{s:s}", "handover", h), NULL,
                       &status),
                   MCIM_OK);
  /* the same handover again is spent */
  assert_int_equal(req(plain_cli, "POST", "ro", path, json_pack("{s:s}", "handover", h), NULL,
                       &status),
                   MCIM_NOT_OWNER);
  free(h);
  /* The old owner reads nothing more of the device: its query of its own order, signed by
   * the key sho-a keeps with that order, is refused once the RO says it is not the owner
   * now (before 2026-12-06 sho-a answered it, and would have told it when the new owner
   * moved the device away). The RO's check answers only the SHO of that order, about a
   * query addressed to it. */
  assert_int_equal(req(plain_cli, "GET", "sho-a", order_path, NULL, oq, &status), MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  json_t *oqb = json_pack("{s:s,s:s,s:s}", "txn", installed, "device", DEV, "query", oq);
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/owner-queries", json_incref(oqb), NULL,
                       &status),
                   MCIM_NOT_OWNER);
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/owner-queries", json_incref(oqb), NULL,
                       &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(req(plain_cli, "POST", "ro", "/v1/drf/owner-queries", oqb, NULL, &status),
                   MCIM_PEER_NOT_AUTHENTICATED);
  free(oq);
  /* the new owner's query of that order: the RO says yes, sho-a still no (the order is not
   * its: placed with the old owner's key) */
  oq = sign(stranger, "mcim-order-query+jwt", "subscriber", DEV, "sho-a", installed, NULL);
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/owner-queries",
                       json_pack("{s:s,s:s,s:s}", "txn", installed, "device", DEV, "query", oq),
                       NULL, &status),
                   MCIM_OK);
  assert_int_equal(req(plain_cli, "GET", "sho-a", order_path, NULL, oq, &status), MCIM_NOT_PARTY);
  free(oq);
  free(jwk);
  mcim_jose_key_free(third);
  new_txn(txn);
  assert_int_equal(post_order(owner, "sho-b", "sho-b", txn, &status), MCIM_NOT_OWNER);
  new_txn(txn);
  assert_int_equal(post_order(stranger, "sho-b", "sho-b", txn, &status), MCIM_OK);
  /* a second "first owner" from the M2MES is refused: owners change only by handover */
  char *owner_jwk = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(owner, &owner_jwk), MCIM_OK);
  assert_int_equal(req(m2mes_cli, "POST", "ro", "/v1/drf/owners",
                       json_pack("{s:s,s:o}", "device", DEV, "owner_jwk",
                                 json_loads(owner_jwk, 0, NULL)),
                       NULL, &status),
                   MCIM_CONFLICT);
  /* and only the M2MES registers first owners */
  assert_int_equal(req(sho_b_cli, "POST", "ro", "/v1/drf/owners",
                       json_pack("{s:s,s:o}", "device", "newdev", "owner_jwk",
                                 json_loads(owner_jwk, 0, NULL)),
                       NULL, &status),
                   MCIM_FORBIDDEN);
  free(owner_jwk);

  /* The device learns of the handover too: its TRE pins the new owner's key on the old
   * owner's statement (its own twin, aud = the device), and from then on takes only the new
   * owner's instructions: the stranger changes the device's SHO end to end. */
  struct mcim_http_client *dev = NULL;
  assert_int_equal(mcim_lab_device_client(lab, DEV, &dev), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(stranger, &jwk), MCIM_OK);
  mcim_jose_key_t *third2 = NULL;
  assert_int_equal(mcim_jose_key_generate(&third2), MCIM_OK);
  new_txn(txn);
  h = sign(third2, "mcim-handover+jwt", "subscriber", DEV, DEV, txn,
           json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  assert_int_equal(device_post(dev, "/v1/owner", "handover", h), MCIM_NOT_OWNER);
  free(h);
  h = sign(owner, "mcim-handover+jwt", "subscriber", DEV, DEV, txn,
           json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  assert_int_equal(device_post(dev, "/v1/owner", "handover", h), MCIM_OK);
  /* the same statement again: the old owner's key is no longer the one pinned */
  assert_int_equal(device_post(dev, "/v1/owner", "handover", h), MCIM_NOT_OWNER);
  free(h);
  free(jwk);
  mcim_jose_key_free(third2);
  /* the old owner's instruction is refused */
  new_txn(txn);
  assert_int_equal(instruct(dev, owner, DEV, txn,
                            json_pack("{s:s,s:s,s:s}", "procedure", "change", "sho", "sho-b",
                                      "via", "old-sho")),
                   MCIM_NOT_OWNER);
  /* the new owner's change via the old SHO: order at sho-b, instruction, done */
  assert_int_equal(order_for(stranger, DEV, params, "sho-b", txn, "change", "old-sho"), MCIM_OK);
  assert_int_equal(instruct(dev, stranger, DEV, txn,
                            json_pack("{s:s,s:s,s:s}", "procedure", "change", "sho", "sho-b",
                                      "via", "old-sho")),
                   MCIM_OK);
  wait_success(dev, txn, "the new owner's change");
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = '" DEV
                                    "' AND sho = 'sho-b' AND state = 'subscribed'"),
                   1);
  mcim_http_client_free(dev);
}

/* Nothing an owner's orders leave at the RO lives for good (DESIGN.md section 10): orders
 * that failed (the TRE signs a failure status for any txn) and their packages go
 * record_retention after they ended, and of the installed orders of one device at one SHO all
 * but the newest (which links that SHO to the device, relay.c). Before 2026-12-06 failed and
 * installed orders, and failed packages, stayed for ever. Rows of a device of the test's own,
 * aged by the test; the RO's first sweep after its start purges them. */
static void test_orders_purged(void **state)
{
  char sql[900];
  int64_t now = mcim_now(), old = now - 400 * 86400;
  (void)state;
  const struct {
    const char *txn, *sho, *state;
    int64_t created, expires;
  } rows[] = {
      {"0000000000000000000000000000a001", "sho-a", "installed", old, old + 3600},
      {"0000000000000000000000000000a002", "sho-a", "installed", old + 10, old + 3610},
      {"0000000000000000000000000000a003", "sho-b", "installed", old, old + 3600},
      {"0000000000000000000000000000a004", "sho-a", "failed", old, old + 3600},
      {"0000000000000000000000000000a005", "sho-a", "failed", now, now + 3600},
  };
  for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
    snprintf(sql, sizeof(sql),
             "INSERT INTO drf_orders (txn, device, sho, endpoint, procedure, via, state, record,"
             " created, updated, expires) VALUES ('%s', 'purge-dev', '%s', 'https://x', 'initial',"
             " '', '%s', 'r', %lld, %lld, %lld);"
             "INSERT INTO dpf_packages (txn, device, sho, procedure, package, state, created,"
             " updated) VALUES ('%s', 'purge-dev', '%s', 'initial', '', '%s', %lld, %lld)",
             rows[i].txn, rows[i].sho, rows[i].state, (long long)rows[i].created,
             (long long)rows[i].created, (long long)rows[i].expires, rows[i].txn, rows[i].sho,
             rows[i].state, (long long)rows[i].created, (long long)rows[i].created);
    exec_sql("ro", sql);
  }
  assert_int_equal(mcim_lab_role_restart(lab, "ro"), MCIM_OK);
  const char *gone = "SELECT COUNT(*) FROM drf_orders WHERE txn = '0000000000000000000000000000a004'";
  for (int waited = 0; waited < 20000 && count_rows("ro", gone) != 0; waited += 100)
    usleep(100 * 1000);
  assert_int_equal(count_rows("ro", gone), 0);
  /* kept: the newest installed order of each (device, SHO), and the recent failure */
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = 'purge-dev'"
                                    " AND txn IN ('0000000000000000000000000000a002',"
                                    " '0000000000000000000000000000a003',"
                                    " '0000000000000000000000000000a005')"),
                   3);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = 'purge-dev'"),
                   3);
  /* the old packages, failed ones included, are gone; the recent one stays */
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = 'purge-dev'"),
                   1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forged_orders),
      cmocka_unit_test(test_order_read),
      cmocka_unit_test(test_owner_statement_lifetime),
      cmocka_unit_test(test_registrations),
      cmocka_unit_test(test_discovery_pending),
      cmocka_unit_test(test_preloaded_promotion),
      cmocka_unit_test(test_preloaded_overtaken),
      cmocka_unit_test(test_device_waits_for_order),
      cmocka_unit_test(test_provision_then_handover),
      cmocka_unit_test(test_orders_purged),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
