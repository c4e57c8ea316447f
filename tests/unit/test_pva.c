/* The PVA role over real TLS on loopback: RIM registration (caller m2mes), validation
 * requests (caller an SHO), the nonce to the device (access token), TRE quotes (good,
 * tampered, wrong nonce, replayed nonce, another device, bad certificates), the verdict in
 * the outbox (step 11, or 5 in the change procedure), traces, and expiry of a nonce.
 * The access network (vno) is a stand-in serving its certificate; the SHO is not running:
 * verdicts stay in the outbox, which the test reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>

#include "mcim/firmware.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "pva_m2mes_fixture.h"
#include "roles/kinds.h"

#define MODEL "m2me-lab-1"

static struct lab lab;
static struct mcim_role *pva;
static struct mcim_http_server *vno_srv;
static char *vno_cert;
static const char *vno_nc[2];
/* the RO stands in only for its certificate; the test signs its order records */
static struct mcim_http_server *ro_srv;
static char *ro_cert;
static const char *ro_nc[2];
static mcim_jose_key_t *ro_key;
static mcim_jose_key_t *vno_key, *pva_pub;
static struct mcim_http_client *sho_cli, *m2mes_cli, *dev_cli;
static char base[64];
/* dev1: the device under test; dev2: another device of the same M2MES */
static mcim_jose_key_t *dev1_key, *dev2_key;
static char *dev1_cert, *dev2_cert, *tok1, *tok2;

/* ---- helpers ---- */

static mcim_cause_t call(struct mcim_http_client *cli, const char *method, const char *path,
                         json_t *body, const char *bearer, struct mcim_http_result *res)
{
  char url[256];
  snprintf(url, sizeof(url), "%s%s", base, path);
  mcim_cause_t rc = mcim_http_request(cli, method, url, body, bearer, res);
  json_decref(body);
  return rc;
}

static void new_txn(char txn[33])
{
  uint8_t b[16];
  assert_int_equal(mcim_random(b, sizeof(b)), MCIM_OK);
  mcim_hex_encode(b, sizeof(b), txn);
}

static json_t *good_log(const char *model)
{
  json_t *log = json_array();
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    char rim[65];
    assert_int_equal(mcim_firmware_rim(model, mcim_firmware_components[i], rim), MCIM_OK);
    json_array_append_new(log, json_pack("{s:s,s:s}", "component", mcim_firmware_components[i],
                                         "digest", rim));
  }
  return log;
}

/* A quote by `key` as device `iss` over `nonce`; `digest` NULL: the log's true chain. */
static char *make_quote(const mcim_jose_key_t *key, const char *iss, const char *txn,
                        const char *nonce, json_t *log, const char *digest)
{
  char chain[65];
  char *jws = NULL;
  assert_int_equal(mcim_firmware_log_digest(log, chain, NULL, 0), MCIM_OK);
  json_t *extra = json_pack("{s:s,s:s,s:O,s:s}", "nonce", nonce, "model", MODEL, "log", log,
                            "digest", digest ? digest : chain);
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = iss, .sub = iss, .aud = "pva", .typ = "mcim-quote+jwt", .txn = txn,
                     .iat = now, .exp = now + 120, .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  json_decref(log);
  return jws;
}

/* The RO's record of an owner's order (issue 8): the PVA validates only for one. */
static char *order_record(const char *txn, const char *device, const char *sho)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:s,s:s}", "sho", sho, "procedure", "initial");
  mcim_claims_t c = {.iss = "ro", .sub = device, .aud = sho, .typ = "mcim-order-record+jwt",
                     .txn = txn, .iat = now, .exp = now + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(ro_key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

/* The body of sho-a's POST /v1/validations, with sho-a's order record. */
static json_t *vbody(const char *txn, const char *device)
{
  char *rec = order_record(txn, device, "sho-a");
  json_t *b = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "order_record", rec);
  free(rec);
  return b;
}

static char pending_path_buf[128];
static const char *pending_path(const char *device, const char *txn)
{
  snprintf(pending_path_buf, sizeof(pending_path_buf), "/v1/validations/pending/%s/%s", device,
           txn);
  return pending_path_buf;
}

/* SHO sho-a asks for a validation; returns its id and nonce. */
static void create_validation(const char *txn, const char *device, int step, char id[33],
                              char nonce[65])
{
  struct mcim_http_result res;
  json_t *body = vbody(txn, device);
  if (step)
    json_object_set_new(body, "step", json_integer(step));
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", body, NULL, &res), MCIM_OK);
  assert_int_equal(res.status, 201);
  snprintf(id, 33, "%s", json_string_value(json_object_get(res.json, "validation_id")));
  snprintf(nonce, 65, "%s", json_string_value(json_object_get(res.json, "nonce")));
  assert_int_equal(strlen(id), 32);
  assert_int_equal(strlen(nonce), 64);
  mcim_http_result_clear(&res);
}

static mcim_cause_t post_quote(const char *id, const char *token, const char *quote,
                               const char *cert, struct mcim_http_result *res)
{
  char path[128];
  snprintf(path, sizeof(path), "/v1/validations/%s/quote", id);
  return call(dev_cli, "POST", path, json_pack("{s:s,s:s}", "quote", quote, "tre_cert", cert),
              token, res);
}

struct outbox_row {
  char peer[64], path[64];
  int64_t step;
  json_t *body;
  int n;
};

static mcim_cause_t outbox_cb(const mcim_row_t *row, void *arg)
{
  struct outbox_row *o = arg;
  snprintf(o->peer, sizeof(o->peer), "%s", mcim_row_text(row, 0));
  snprintf(o->path, sizeof(o->path), "%s", mcim_row_text(row, 1));
  json_decref(o->body);
  o->body = json_loads(mcim_row_text(row, 2), 0, NULL);
  o->step = mcim_row_int(row, 3);
  o->n++;
  return MCIM_OK;
}

/* The verdict the PVA queued for `txn` (exactly one), verified with the PVA's key. */
static mcim_statement_t *queued_verdict(const char *txn, int64_t want_step, const char *device)
{
  struct outbox_row o = {.n = 0};
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  assert_int_equal(mcim_store_exec(st, "SELECT peer, path, body, step FROM outbox WHERE txn = ?",
                                   p, 1, outbox_cb, &o),
                   MCIM_OK);
  mcim_store_close(st);
  assert_int_equal(o.n, 1);
  assert_string_equal(o.peer, "sho-a");
  assert_string_equal(o.path, "/v1/verdicts");
  assert_int_equal(o.step, want_step);
  assert_string_equal(json_string_value(json_object_get(o.body, "txn")), txn);
  assert_string_equal(json_string_value(json_object_get(o.body, "device")), device);
  const char *v = json_string_value(json_object_get(o.body, "verdict"));
  assert_non_null(v);
  mcim_statement_t *stmt = NULL;
  mcim_jws_expect_t ex = {.iss = "pva", .aud = "sho-a", .sub = device,
                          .typ = "mcim-verdict+jwt", .txn = txn};
  assert_int_equal(mcim_jws_verify(v, strlen(v), pva_pub, &ex, &stmt), MCIM_OK);
  json_decref(o.body);
  return stmt;
}

static int64_t count(const char *sql, const char *arg)
{
  int64_t n = -1;
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_TEXT(arg)};
  assert_int_equal(mcim_store_query_int(st, sql, p, arg ? 1 : 0, &n), MCIM_OK);
  mcim_store_close(st);
  return n;
}

/* The stand-ins' certificates, served and counted (test_peer_keys_fetched_first). */
static _Atomic int vno_cert_gets, ro_cert_gets;

static void counted_certificate(void *ctx, const struct mcim_http_request *req,
                                struct mcim_http_response *resp)
{
  const char *const *nc = ctx;
  atomic_fetch_add(strcmp(nc[0], "vno") == 0 ? &vno_cert_gets : &ro_cert_gets, 1);
  lab_h_certificate(ctx, req, resp);
}

/* ---- setup ---- */

static int setup(void **state)
{
  static const char *const roles[] = {"ro", "pva", "m2mes", "sho-a", "vno"};
  char cfg[256], path[256];
  (void)state;
  if (lab_init(&lab, roles, 5) != 0)
    return -1;
  uint16_t pva_port = lab_free_port(), vno_port = lab_free_port(), sho_port = lab_free_port();
  uint16_t ro_port = lab_free_port();
  /* sho-a is listed but not running: verdicts wait in the outbox */
  lab_write_peers(&lab, "pva", (int)pva_port, "vno", (int)vno_port, "sho-a", (int)sho_port, "ro",
                  (int)ro_port, (const char *)NULL);
  json_t *extra = json_pack("{s:s,s:i,s:i,s:s}", "nonce_lifetime", "1m", "outbox_backoff_ms",
                            600000, "outbox_max_attempts", 1000, "log_level", "warn");
  lab_write_config(&lab, "pva", pva_port, extra, cfg, sizeof(cfg));
  json_decref(extra);

  snprintf(path, sizeof(path), "%s/vno/cert.pem", lab.pki);
  vno_cert = lab_read_text(path);
  vno_nc[0] = "vno";
  vno_nc[1] = vno_cert;
  static const struct mcim_http_route vno_routes[] = {
      {"GET", "/v1/certificate", counted_certificate, 0},
  };
  vno_srv = lab_standin(&lab, "vno", vno_port, vno_routes, 1, vno_nc);
  if (!vno_srv || !vno_cert)
    return -1;
  snprintf(path, sizeof(path), "%s/ro/cert.pem", lab.pki);
  ro_cert = lab_read_text(path);
  ro_nc[0] = "ro";
  ro_nc[1] = ro_cert;
  ro_srv = lab_standin(&lab, "ro", ro_port, vno_routes, 1, ro_nc);
  ro_key = lab_role_key(&lab, "ro");
  if (!ro_srv || !ro_cert || !ro_key)
    return -1;
  if (mcim_role_start(&mcim_role_pva, cfg, &pva) != MCIM_OK)
    return -1;
  snprintf(base, sizeof(base), "https://localhost:%u", pva_port);

  sho_cli = lab_client(&lab, "sho-a");
  m2mes_cli = lab_client(&lab, "m2mes");
  dev_cli = lab_client(&lab, NULL);
  vno_key = lab_role_key(&lab, "vno");
  mcim_jose_key_t *pva_priv = lab_role_key(&lab, "pva");
  char *jwk = NULL;
  if (!pva_priv || mcim_jose_key_public_jwk(pva_priv, &jwk) != MCIM_OK ||
      mcim_jose_key_from_jwk(jwk, strlen(jwk), &pva_pub) != MCIM_OK)
    return -1;
  free(jwk);
  mcim_jose_key_free(pva_priv);
  if (lab_tre_key(&lab, "dev1", MCIM_CERT_TRE_ATTESTATION, NULL, &dev1_key, &dev1_cert) != 0 ||
      lab_tre_key(&lab, "dev2", MCIM_CERT_TRE_ATTESTATION, NULL, &dev2_key, &dev2_cert) != 0)
    return -1;
  tok1 = lab_access_token(vno_key, "dev1", "restricted");
  tok2 = lab_access_token(vno_key, "dev2", "restricted");
  return sho_cli && m2mes_cli && dev_cli && tok1 && tok2 ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_role_free(pva);
  mcim_http_server_free(vno_srv);
  mcim_http_server_free(ro_srv);
  mcim_jose_key_free(ro_key);
  free(ro_cert);
  mcim_http_client_free(sho_cli);
  mcim_http_client_free(m2mes_cli);
  mcim_http_client_free(dev_cli);
  mcim_jose_key_free(vno_key);
  mcim_jose_key_free(pva_pub);
  mcim_jose_key_free(dev1_key);
  mcim_jose_key_free(dev2_key);
  free(dev1_cert);
  free(dev2_cert);
  free(tok1);
  free(tok2);
  free(vno_cert);
  lab_remove(&lab);
  return 0;
}

/* ---- tests ---- */

/* Before any request, the PVA has fetched its peers' certificates by itself (runtime_worker.c,
 * mcim_role_peer_prefetch_main): a device's first request does not have to wait for one while the
 * peer's threads wait for us (a cold start under load waited a peer timeout). Runs first:
 * no test before it made the PVA need a peer's key. */
static void test_peer_keys_fetched_first(void **state)
{
  (void)state;
  for (int i = 0; i < 1000 && (atomic_load(&vno_cert_gets) == 0 || atomic_load(&ro_cert_gets) == 0);
       i++) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_true(atomic_load(&vno_cert_gets) >= 1);
  assert_true(atomic_load(&ro_cert_gets) >= 1);
}

static void test_firmware(void **state)
{
  char *img = NULL, hex[65], chain[65], err[128];
  (void)state;
  assert_int_equal(mcim_firmware_image("m2me-lab-1", "os", &img), MCIM_OK);
  assert_string_equal(img, "mcim lab firmware m2me-lab-1 os v1\n");
  free(img);
  /* printf 'mcim lab firmware m2me-lab-1 os v1\n' | sha256sum */
  assert_int_equal(mcim_firmware_rim("m2me-lab-1", "os", hex), MCIM_OK);
  FILE *p = popen("printf 'mcim lab firmware m2me-lab-1 os v1\\n' | sha256sum", "r");
  char want[80] = "";
  assert_non_null(p);
  assert_non_null(fgets(want, sizeof(want), p));
  pclose(p);
  want[64] = '\0';
  assert_string_equal(hex, want);
  assert_int_equal(mcim_firmware_image("bad name", "os", &img), MCIM_INVALID_ARGUMENT);

  /* d1 = SHA-256(0^32 || m) for a one-entry log */
  json_t *log = json_pack("[{s:s,s:s}]", "component", "os", "digest", hex);
  uint8_t d[32] = {0}, m[32];
  assert_int_equal(mcim_hex_decode_str(hex, m, 32), MCIM_OK);
  assert_int_equal(mcim_firmware_extend(d, m), MCIM_OK);
  mcim_hex_encode(d, 32, want);
  assert_int_equal(mcim_firmware_log_digest(log, chain, err, sizeof(err)), MCIM_OK);
  assert_string_equal(chain, want);
  json_decref(log);
  log = json_pack("[{s:s,s:s}]", "component", "os", "digest", "abcd");
  assert_int_not_equal(mcim_firmware_log_digest(log, chain, err, sizeof(err)), MCIM_OK);
  json_decref(log);
  log = json_pack("[{s:s,s:s,s:i}]", "component", "os", "digest", hex, "x", 1);
  assert_int_equal(mcim_firmware_log_digest(log, chain, err, sizeof(err)), MCIM_BAD_JSON);
  json_decref(log);
  log = json_string("x");
  assert_int_equal(mcim_firmware_log_digest(log, chain, err, sizeof(err)), MCIM_BAD_JSON);
  json_decref(log);
}

static void test_rims(void **state)
{
  struct mcim_http_result res;
  (void)state;
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    char rim[65];
    mcim_firmware_rim(MODEL, mcim_firmware_components[i], rim);
    json_t *b = json_pack("{s:s,s:s,s:s}", "model", MODEL, "component",
                          mcim_firmware_components[i], "digest", rim);
    assert_int_equal(call(m2mes_cli, "POST", "/v1/rims", json_incref(b), NULL, &res), MCIM_OK);
    assert_int_equal(res.status, 201);
    mcim_http_result_clear(&res);
    /* again: idempotent */
    assert_int_equal(call(m2mes_cli, "POST", "/v1/rims", b, NULL, &res), MCIM_OK);
    assert_int_equal(res.status, 200);
    mcim_http_result_clear(&res);
  }
  assert_int_equal(count("SELECT COUNT(*) FROM rims WHERE model = ?", MODEL), 3);

  /* only the M2MES */
  char rim[65];
  mcim_firmware_rim(MODEL, "os", rim);
  assert_int_equal(call(sho_cli, "POST", "/v1/rims",
                        json_pack("{s:s,s:s,s:s}", "model", MODEL, "component", "os", "digest",
                                  rim),
                        NULL, &res),
                   MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  /* a device (no certificate) never reaches it */
  assert_int_equal(call(dev_cli, "POST", "/v1/rims",
                        json_pack("{s:s,s:s,s:s}", "model", MODEL, "component", "os", "digest",
                                  rim),
                        NULL, &res),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&res);
  /* bad bodies */
  assert_int_equal(call(m2mes_cli, "POST", "/v1/rims",
                        json_pack("{s:s,s:s,s:s}", "model", MODEL, "component", "os", "digest",
                                  "abcd"),
                        NULL, &res),
                   MCIM_BAD_LENGTH);
  mcim_http_result_clear(&res);
  assert_int_equal(call(m2mes_cli, "POST", "/v1/rims",
                        json_pack("{s:s,s:s,s:s,s:i}", "model", MODEL, "component", "os",
                                  "digest", rim, "extra", 1),
                        NULL, &res),
                   MCIM_UNKNOWN_FIELD);
  mcim_http_result_clear(&res);
  assert_int_equal(call(m2mes_cli, "POST", "/v1/rims",
                        json_pack("{s:s,s:s,s:s}", "model", "a b", "component", "os", "digest",
                                  rim),
                        NULL, &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
}

static void test_good_quote(void **state)
{
  char txn[33], id[33], nonce[65], id2[33], nonce2[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  /* the SHO retries: same answer */
  create_validation(txn, "dev1", 0, id2, nonce2);
  assert_string_equal(id, id2);
  assert_string_equal(nonce, nonce2);
  /* the same txn for another device is a conflict */
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", vbody(txn, "dev2"), NULL, &res),
                   MCIM_CONFLICT);
  mcim_http_result_clear(&res);

  /* step 10: the device fetches the nonce with its token, twice (polling) */
  for (int i = 0; i < 2; i++) {
    assert_int_equal(call(dev_cli, "GET", pending_path("dev1", txn), NULL, tok1, &res),
                     MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(res.json, "validation_id")), id);
    assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), nonce);
    assert_string_equal(json_string_value(json_object_get(res.json, "txn")), txn);
    assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 10);
    mcim_http_result_clear(&res);
  }
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  assert_int_equal(res.status, 200);
  assert_string_equal(json_string_value(json_object_get(res.json, "result")), "success");
  mcim_http_result_clear(&res);
  /* the device retries the same quote: same answer, nothing changes twice */
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "result")), "success");
  mcim_http_result_clear(&res);
  free(q);

  /* step 11: one verdict for sho-a in the outbox */
  int64_t pending = 0;
  assert_int_equal(mcim_role_outbox_pending(pva, &pending), MCIM_OK);
  assert_true(pending >= 1);
  mcim_statement_t *v = queued_verdict(txn, 11, "dev1");
  assert_string_equal(mcim_statement_string(v, "result"), "success");
  assert_string_equal(mcim_statement_string(v, "cause"), "OK");
  assert_int_equal(json_array_size(json_object_get(v->payload, "mismatches")), 0);
  mcim_statement_free(v);

  /* no pending validation any more */
  assert_int_equal(call(dev_cli, "GET", pending_path("dev1", txn), NULL, tok1, &res),
                   MCIM_NOT_FOUND);
  mcim_http_result_clear(&res);

  /* the trace: 9 validate, 10 nonce (once), 10 quote */
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ? AND step = 9 AND"
                         " from_name = 'sho-a' AND to_name = 'pva' AND cause IS NULL",
                         txn),
                   1);
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ? AND step = 10 AND"
                         " from_name = 'pva' AND to_name = 'dev1' AND msg = 'nonce'",
                         txn),
                   1);
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ? AND step = 10 AND"
                         " from_name = 'dev1' AND to_name = 'pva' AND msg = 'TRE quote'"
                         " AND cause IS NULL",
                         txn),
                   1);
}

static void test_replayed_nonce(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  free(q);
  /* a second, freshly signed quote over the used nonce */
  q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_REPLAY);
  assert_int_equal(res.status, 409);
  mcim_http_result_clear(&res);
  free(q);
  mcim_statement_t *v = queued_verdict(txn, 11, "dev1"); /* still exactly one verdict */
  mcim_statement_free(v);
}

static void test_tampered(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  /* the os image differs from the RIM (what `--tamper` manufactures) */
  json_t *log = good_log(MODEL);
  char bad[65];
  const char *evil = "mcim lab firmware m2me-lab-1 os v1 with a backdoor\n";
  mcim_firmware_measure((const uint8_t *)evil, strlen(evil), bad);
  json_object_set_new(json_array_get(log, 1), "digest", json_string(bad));
  char *q = make_quote(dev1_key, "dev1", txn, nonce, log, NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_VALIDATION_FAILED);
  assert_int_equal(res.status, 403);
  /* the device learns why */
  assert_non_null(strstr(res.detail, "os"));
  json_t *mm = json_object_get(res.json, "mismatches");
  assert_int_equal(json_array_size(mm), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(mm, 0), "component")),
                      "os");
  assert_string_equal(json_string_value(json_object_get(json_array_get(mm, 0), "digest")), bad);
  assert_string_equal(json_string_value(json_object_get(res.json, "result")), "failure");
  mcim_http_result_clear(&res);
  /* retry: the same problem again */
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_VALIDATION_FAILED);
  mcim_http_result_clear(&res);
  free(q);

  mcim_statement_t *v = queued_verdict(txn, 11, "dev1");
  assert_string_equal(mcim_statement_string(v, "result"), "failure");
  assert_string_equal(mcim_statement_string(v, "cause"), "VALIDATION_FAILED");
  assert_int_equal(json_array_size(json_object_get(v->payload, "mismatches")), 1);
  mcim_statement_free(v);
}

static void test_unknown_component_and_chain(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  /* a component without RIM and a missing one */
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  json_t *log = good_log(MODEL);
  json_object_set_new(json_array_get(log, 2), "component", json_string("debugger"));
  char *q = make_quote(dev1_key, "dev1", txn, nonce, log, NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_VALIDATION_FAILED);
  json_t *mm = json_object_get(res.json, "mismatches");
  assert_int_equal(json_array_size(mm), 2); /* debugger: no RIM; agent: not measured */
  mcim_http_result_clear(&res);
  free(q);

  /* a log that does not replay into the quoted digest */
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL),
                 "0000000000000000000000000000000000000000000000000000000000000000");
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_VALIDATION_FAILED);
  assert_non_null(strstr(res.detail, "replay"));
  mcim_http_result_clear(&res);
  free(q);
}

static void test_wrong_nonce(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  char other[65];
  memcpy(other, nonce, sizeof(other));
  other[0] = other[0] == 'a' ? 'b' : 'a';
  char *q = make_quote(dev1_key, "dev1", txn, other, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_QUOTE_INVALID);
  assert_int_equal(res.status, 400);
  mcim_http_result_clear(&res);
  free(q);
  /* a quote of another procedure (txn) */
  char txn2[33];
  new_txn(txn2);
  q = make_quote(dev1_key, "dev1", txn2, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_QUOTE_INVALID);
  mcim_http_result_clear(&res);
  free(q);
  /* not conclusive: no verdict yet, and the right quote still works */
  assert_int_equal(count("SELECT COUNT(*) FROM outbox WHERE txn = ?", txn), 0);
  q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  free(q);
}

/* A TPM device (issue 11 point 4): its attestation certificate is marked by the M2MES, so the
 * JWS quote alone is refused (ATTEST_MISSING), and so is TPM evidence that is not a quote
 * (ATTEST_MALFORMED); neither consumes the nonce. The quote and its refusals in a real TPM:
 * test_tre_tpm_quote. */
/* A TPM device (its attestation certificate marked by the M2MES, with the AK and model of its
 * enrolment) is judged on its TPM quote alone; a TPM device the M2MES certified without
 * enrolment (marked, no AK), or a software certificate sent with TPM evidence, is refused
 * with TPM_ENROLMENT_REQUIRED whatever it sends. */
static void test_tpm_device_needs_tpm_quote(void **state)
{
  char txn[33], id[33], nonce[65], path[128];
  struct mcim_http_result res;
  mcim_pki_ca_t *ca = NULL;
  EVP_PKEY *pk = NULL;
  X509 *x = NULL, *xu = NULL;
  char *cert = NULL, *unenrolled = NULL;
  (void)state;
  assert_int_equal(mcim_pki_lab_load_ca(lab.pki, MCIM_PKI_CA_M2MES, &ca), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(dev1_key, &pk), MCIM_OK);
  mcim_cert_request_t req = {.name = "dev1",
                             .usage = MCIM_CERT_TRE_ATTESTATION,
                             .key = pk,
                             .tpm_attestation = true,
                             .tpm_ak = pk,
                             .model = MODEL};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &cert), MCIM_OK);
  req.tpm_ak = NULL; /* marked, never enrolled */
  req.model = NULL;
  assert_int_equal(mcim_pki_issue(ca, &req, &xu), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(xu, &unenrolled), MCIM_OK);
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, cert, &res), MCIM_ATTEST_MISSING);
  assert_int_equal(res.status, 400);
  mcim_http_result_clear(&res);
  snprintf(path, sizeof(path), "/v1/validations/%s/quote", id);
  json_t *tpm = json_pack("{s:s,s:s,s:s}", "attest", "AAAA", "signature", "AAAA", "log", "x\n");
  assert_int_equal(call(dev_cli, "POST", path,
                        json_pack("{s:s,s:s,s:O}", "quote", q, "tre_cert", cert, "tpm", tpm), tok1,
                        &res),
                   MCIM_ATTEST_MALFORMED);
  mcim_http_result_clear(&res);
  /* not conclusive: no verdict, and the expiry verdict would name the last refusal */
  assert_int_equal(count("SELECT COUNT(*) FROM outbox WHERE txn = ?", txn), 0);
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'pending'"
                         " AND last_cause = 'ATTEST_MALFORMED'", txn),
                   1);
  /* certified without enrolment: refused with or without TPM evidence */
  assert_int_equal(post_quote(id, tok1, q, unenrolled, &res), MCIM_TPM_ENROLMENT_REQUIRED);
  assert_int_equal(res.status, 400);
  mcim_http_result_clear(&res);
  assert_int_equal(call(dev_cli, "POST", path,
                        json_pack("{s:s,s:s,s:O}", "quote", q, "tre_cert", unenrolled, "tpm", tpm),
                        tok1, &res),
                   MCIM_TPM_ENROLMENT_REQUIRED);
  mcim_http_result_clear(&res);
  /* TPM evidence with a software certificate: no enrolled AK to check it with */
  assert_int_equal(call(dev_cli, "POST", path,
                        json_pack("{s:s,s:s,s:O}", "quote", q, "tre_cert", dev1_cert, "tpm", tpm),
                        tok1, &res),
                   MCIM_TPM_ENROLMENT_REQUIRED);
  mcim_http_result_clear(&res);
  assert_int_equal(count("SELECT COUNT(*) FROM outbox WHERE txn = ?", txn), 0);
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'pending'"
                         " AND last_cause = 'TPM_ENROLMENT_REQUIRED'",
                         txn),
                   1);
  json_decref(tpm);
  /* the same quote with the unmarked certificate of the same key: the software path */
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  free(q);
  free(cert);
  free(unenrolled);
  X509_free(x);
  X509_free(xu);
  EVP_PKEY_free(pk);
  mcim_pki_ca_free(ca);
}

static void test_other_device(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  /* dev2's token cannot read dev1's nonce, nor answer dev1's validation */
  assert_int_equal(call(dev_cli, "GET", pending_path("dev1", txn), NULL, tok2, &res),
                   MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  char *q = make_quote(dev2_key, "dev2", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok2, q, dev2_cert, &res), MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  /* dev1's token with dev2's TRE certificate and quote: the certificate is not dev1's */
  assert_int_equal(post_quote(id, tok1, q, dev2_cert, &res), MCIM_CERT_INVALID);
  mcim_http_result_clear(&res);
  /* dev1's certificate with a quote signed by dev2's key */
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_QUOTE_INVALID);
  mcim_http_result_clear(&res);
  free(q);
  /* a quote by dev1's key claiming to be dev2 */
  q = make_quote(dev1_key, "dev2", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_QUOTE_INVALID);
  mcim_http_result_clear(&res);
  free(q);
  /* no token at all */
  q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, NULL, q, dev1_cert, &res), MCIM_NO_ACCESS);
  mcim_http_result_clear(&res);
  /* an unknown validation */
  assert_int_equal(post_quote("0123456789abcdef0123456789abcdef", tok1, q, dev1_cert, &res),
                   MCIM_NOT_FOUND);
  mcim_http_result_clear(&res);
  free(q);
  assert_int_equal(count("SELECT COUNT(*) FROM outbox WHERE txn = ?", txn), 0);
}

static void test_bad_cert(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  mcim_jose_key_t *k = NULL;
  char *pem = NULL;
  mcim_pki_ca_t *ops = NULL;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 0, id, nonce);
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  /* garbage */
  assert_int_equal(post_quote(id, tok1, q, "-----BEGIN CERTIFICATE-----\nAAAA\n", &res),
                   MCIM_CERT_INVALID);
  mcim_http_result_clear(&res);
  /* the right CN, but the operators' CA instead of the M2MES CA */
  assert_int_equal(mcim_pki_lab_load_ca(lab.pki, MCIM_PKI_CA_OPERATORS, &ops), MCIM_OK);
  assert_int_equal(lab_tre_key(&lab, "dev1", MCIM_CERT_TRE_ATTESTATION, ops, &k, &pem), 0);
  assert_int_equal(post_quote(id, tok1, q, pem, &res), MCIM_CERT_INVALID);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(k);
  free(pem);
  /* the M2MES CA, but a key-agreement certificate */
  assert_int_equal(lab_tre_key(&lab, "dev1", MCIM_CERT_TRE_KEY_AGREEMENT, NULL, &k, &pem), 0);
  assert_int_equal(post_quote(id, tok1, q, pem, &res), MCIM_CERT_INVALID);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(k);
  free(pem);
  mcim_pki_ca_free(ops);
  free(q);
  /* the last refusal is remembered for the expiry verdict */
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'pending'"
                         " AND last_cause = 'CERT_INVALID'",
                         txn),
                   1);
}

static void test_bad_requests(void **state)
{
  struct mcim_http_result res;
  char txn[33];
  (void)state;
  new_txn(txn);
  /* only SHOs ask for validations */
  assert_int_equal(call(m2mes_cli, "POST", "/v1/validations",
                        json_pack("{s:s,s:s}", "txn", txn, "device", "dev1"), NULL, &res),
                   MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  assert_int_equal(call(sho_cli, "POST", "/v1/validations",
                        json_pack("{s:s,s:s}", "txn", "xyz", "device", "dev1"), NULL, &res),
                   MCIM_BAD_HEX);
  mcim_http_result_clear(&res);
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", json_pack("{s:s}", "txn", txn), NULL,
                        &res),
                   MCIM_FIELD_MISSING);
  mcim_http_result_clear(&res);
  json_t *b = vbody(txn, "dev1");
  json_object_set_new(b, "aud", json_string("sho-b"));
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", b, NULL, &res), MCIM_FORBIDDEN);
  mcim_http_result_clear(&res);
  b = vbody(txn, "dev1");
  json_object_set_new(b, "step", json_integer(0));
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", b, NULL, &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  /* quote bodies */
  assert_int_equal(call(dev_cli, "POST", "/v1/validations/0123456789abcdef0123456789abcdef/quote",
                        json_pack("{s:s}", "quote", "x"), tok1, &res),
                   MCIM_FIELD_MISSING);
  mcim_http_result_clear(&res);
  assert_int_equal(call(dev_cli, "POST", "/v1/validations/0123456789abcdef0123456789abcdef/quote",
                        json_pack("{s:i,s:s}", "quote", 3, "tre_cert", "x"), tok1, &res),
                   MCIM_WRONG_TYPE);
  mcim_http_result_clear(&res);
  /* a token not signed by an access network */
  char *forged = lab_access_token(dev1_key, "dev1", "full");
  assert_int_not_equal(call(dev_cli, "GET", pending_path("dev1", txn), NULL, forged, &res),
                       MCIM_OK);
  mcim_http_result_clear(&res);
  free(forged);
}

/* Issue 8: the PVA validates only for an ordered (SHO, device, txn), proven by the RO's order
 * record; anything else is NOT_PARTY and leaves no validation behind. */
static void test_not_ordered(void **state)
{
  char txn[33], other[33];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  new_txn(other);
  struct {
    const char *what;
    char *record;
  } bad[] = {
      {"a record for another SHO", order_record(txn, "dev1", "sho-b")},
      {"a record for another device", order_record(txn, "dev2", "sho-a")},
      {"a record of another procedure", order_record(other, "dev1", "sho-a")},
      {"garbage", strdup("not.a.jws")},
  };
  /* a record signed by anyone but the RO (here sho-a's own key) */
  mcim_jose_key_t *not_ro = lab_role_key(&lab, "sho-a");
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = "ro", .sub = "dev1", .aud = "sho-a", .typ = "mcim-order-record+jwt",
                     .txn = txn, .iat = now, .exp = now + 300};
  char *forged = NULL;
  assert_int_equal(mcim_jws_sign(not_ro, &c, &forged), MCIM_OK);
  mcim_jose_key_free(not_ro);
  for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
    const char *rec = i < sizeof(bad) / sizeof(bad[0]) ? bad[i].record : forged;
    json_t *b = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", "dev1", "order_record", rec);
    mcim_cause_t rc = call(sho_cli, "POST", "/v1/validations", b, NULL, &res);
    if (rc != MCIM_NOT_PARTY)
      fail_msg("%s: %s", i < sizeof(bad) / sizeof(bad[0]) ? bad[i].what : "a forged record",
               mcim_cause_name(rc));
    assert_int_equal(res.status, 403);
    mcim_http_result_clear(&res);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    free(bad[i].record);
  free(forged);
  assert_int_equal(call(sho_cli, "POST", "/v1/validations",
                        json_pack("{s:s,s:s}", "txn", txn, "device", "dev1"), NULL, &res),
                   MCIM_FIELD_MISSING);
  mcim_http_result_clear(&res);
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ?", txn), 0);
  assert_int_equal(count("SELECT COUNT(*) FROM answers WHERE txn = ?", txn), 0);
}

/* Two procedures of one device at once: each nonce reaches only its own procedure. */
static void test_nonce_per_procedure(void **state)
{
  char a[33], b[33], ida[33], idb[33], na[65], nb[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(a);
  new_txn(b);
  create_validation(a, "dev1", 0, ida, na);
  create_validation(b, "dev1", 0, idb, nb);
  assert_int_equal(call(dev_cli, "GET", pending_path("dev1", a), NULL, tok1, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), na);
  mcim_http_result_clear(&res);
  assert_int_equal(call(dev_cli, "GET", pending_path("dev1", b), NULL, tok1, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), nb);
  mcim_http_result_clear(&res);
}

/* Store connections come from a pool, the last given back first (mcim_role_store): requests
 * one after the other, over fresh client connections that the server's four threads share
 * out, all take the same store connection. Counted by mcim_store_connections: the start-up
 * connection of the main thread, one for the requests, one for the worker when it runs
 * alongside. Each handler thread kept a connection of its own before (up to 4 + 2). */
static void test_store_pool(void **state)
{
  char txn[33];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  char id[33], nonce[65];
  create_validation(txn, "dev1", 0, id, nonce);
  for (int i = 0; i < 12; i++) {
    struct mcim_http_client *cli = lab_client(&lab, NULL);
    assert_non_null(cli);
    assert_int_equal(call(cli, "GET", pending_path("dev1", txn), NULL, tok1, &res), MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), nonce);
    mcim_http_result_clear(&res);
    mcim_http_client_free(cli);
  }
  double open = mcim_metric_value(&mcim_m_store_connections, NULL);
  assert_true(open >= 1);
  assert_true(open <= 3);
}

/* The change procedure: the SHO asks at step 3, the quote is step 4, the verdict step 5. */
static void test_change_steps(void **state)
{
  char txn[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev1", 3, id, nonce);
  assert_int_equal(call(dev_cli, "GET", pending_path("dev1", txn), NULL, tok1, &res),
                   MCIM_OK);
  assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 4);
  mcim_http_result_clear(&res);
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  free(q);
  mcim_statement_free(queued_verdict(txn, 5, "dev1"));
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ? AND step = 3", txn), 1);
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ? AND step = 4", txn), 2);
}

/* A nonce that expires without a good quote ends the validation with a failure verdict. */
static void test_expiry(void **state)
{
  char txn[33], id[33], nonce[65];
  (void)state;
  new_txn(txn);
  create_validation(txn, "dev2", 0, id, nonce);
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  assert_int_equal(mcim_store_exec(st,
                                   "UPDATE validations SET expires = 0, last_cause ="
                                   " 'QUOTE_INVALID' WHERE txn = ?",
                                   p, 1, NULL, NULL),
                   MCIM_OK);
  mcim_store_close(st);
  /* the worker ticks every 50 ms */
  for (int i = 0; i < 100 && count("SELECT COUNT(*) FROM outbox WHERE txn = ?", txn) == 0; i++)
    usleep(20000);
  mcim_statement_t *v = queued_verdict(txn, 11, "dev2");
  assert_string_equal(mcim_statement_string(v, "result"), "failure");
  assert_string_equal(mcim_statement_string(v, "cause"), "QUOTE_INVALID");
  mcim_statement_free(v);
  /* a late quote */
  struct mcim_http_result res;
  char *q = make_quote(dev2_key, "dev2", txn, nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(id, tok2, q, dev2_cert, &res), MCIM_NONCE_UNKNOWN);
  mcim_http_result_clear(&res);
  free(q);
}

/* Whatever a peer sends, the PVA goes on serving. */
static void test_garbage(void **state)
{
  struct mcim_http_result res;
  (void)state;
  const char *junk[] = {"", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "....", "x"};
  for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
    char txn[33], id[33], nonce[65];
    new_txn(txn);
    create_validation(txn, "dev1", 0, id, nonce);
    assert_int_not_equal(post_quote(id, tok1, junk[i], dev1_cert, &res), MCIM_OK);
    mcim_http_result_clear(&res);
    assert_int_not_equal(post_quote(id, junk[i][0] ? junk[i] : "x", junk[i], junk[i], &res),
                         MCIM_OK);
    mcim_http_result_clear(&res);
  }
  assert_int_equal(call(dev_cli, "GET", "/v1/health", NULL, NULL, &res), MCIM_OK);
  mcim_http_result_clear(&res);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peer_keys_fetched_first),
      cmocka_unit_test(test_firmware),
      cmocka_unit_test(test_rims),
      cmocka_unit_test(test_good_quote),
      cmocka_unit_test(test_replayed_nonce),
      cmocka_unit_test(test_tampered),
      cmocka_unit_test(test_unknown_component_and_chain),
      cmocka_unit_test(test_wrong_nonce),
      cmocka_unit_test(test_other_device),
      cmocka_unit_test(test_tpm_device_needs_tpm_quote),
      cmocka_unit_test(test_bad_cert),
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_change_steps),
      cmocka_unit_test(test_not_ordered),
      cmocka_unit_test(test_nonce_per_procedure),
      cmocka_unit_test(test_store_pool),
      cmocka_unit_test(test_expiry),
      cmocka_unit_test(test_garbage),
  };
  mcim_log_init("test-pva", MCIM_LOG_TEXT, MCIM_LOG_WARN, NULL);
  return cmocka_run_group_tests(tests, setup, teardown);
}
