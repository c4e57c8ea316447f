/* The PVA role under test (test_pva.c, test_pva_requests.c): a PVA over real TLS on
 * loopback in a lab of pva_m2mes_fixture.h, the access network (vno) and the RO as stand-ins
 * serving their certificates (the test signs the RO's order records), the SHO not running (its
 * verdicts stay in the outbox, which the test reads), clients for the SHO, the M2MES and a
 * device, and two devices' TRE keys and access tokens; with helpers for validation requests,
 * TRE quotes and the outbox. Header-only (static functions), included after cmocka.h by each
 * program once. */
#ifndef MCIM_TEST_PVA_FIXTURE_H
#define MCIM_TEST_PVA_FIXTURE_H

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
static struct mcim_http_client *sho_cli, *sho_b_cli, *m2mes_cli, *dev_cli;
static char base[64];
static char pva_cfg[256]; /* to start the PVA again (test_revocations: its first tick) */
#define REVOCATIONS_PER_MINUTE 3
/* dev1: the device under test; dev2: another device of the same M2MES */
static mcim_jose_key_t *dev1_key, *dev2_key;
static char *dev1_cert, *dev2_cert, *tok1, *tok2;

/* ---- helpers ---- */

static inline mcim_cause_t call(struct mcim_http_client *cli, const char *method, const char *path,
                                json_t *body, const char *bearer, struct mcim_http_result *res)
{
  char url[256];
  snprintf(url, sizeof(url), "%s%s", base, path);
  mcim_cause_t rc = mcim_http_request(cli, method, url, body, bearer, res);
  json_decref(body);
  return rc;
}

static inline void new_txn(char txn[33])
{
  uint8_t b[16];
  assert_int_equal(mcim_random(b, sizeof(b)), MCIM_OK);
  mcim_hex_encode(b, sizeof(b), txn);
}

static inline json_t *good_log(const char *model)
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
static inline char *make_quote(const mcim_jose_key_t *key, const char *iss, const char *txn,
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
static inline char *order_record(const char *txn, const char *device, const char *sho)
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
static inline json_t *vbody(const char *txn, const char *device)
{
  char *rec = order_record(txn, device, "sho-a");
  json_t *b = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "order_record", rec);
  free(rec);
  return b;
}

static char pending_path_buf[128];
static inline const char *pending_path(const char *device, const char *txn)
{
  snprintf(pending_path_buf, sizeof(pending_path_buf), "/v1/validations/pending/%s/%s", device,
           txn);
  return pending_path_buf;
}

/* The device's own request for the nonce of `txn` (the body of POST
 * /v1/validations/pending/{device}/{txn}): its TRE's `proof` (for "nonce", aud pva) and
 * `tre_cert`, with dev2's key and certificate for "dev2", dev1's for any other name. */
static inline json_t *pending_proof(const char *device, const char *txn, const char *what)
{
  bool two = strcmp(device, "dev2") == 0;
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:s}", "for", what);
  mcim_claims_t c = {.iss = device, .sub = device, .aud = "pva", .typ = "mcim-request+jwt",
                     .txn = txn, .iat = now, .exp = now + 120, .extra = extra};
  assert_int_equal(mcim_jws_sign(two ? dev2_key : dev1_key, &c, &jws), MCIM_OK);
  json_decref(extra);
  json_t *b = json_pack("{s:s,s:s}", "proof", jws, "tre_cert", two ? dev2_cert : dev1_cert);
  free(jws);
  return b;
}

/* The device asks for the nonce of `txn` with its token and its TRE's request. */
static inline mcim_cause_t get_pending(struct mcim_http_client *cli, const char *device,
                                       const char *txn, const char *token,
                                       struct mcim_http_result *res)
{
  return call(cli, "POST", pending_path(device, txn), pending_proof(device, txn, "nonce"), token,
              res);
}

/* SHO sho-a asks for a validation; returns its id and nonce. */
static inline void create_validation(const char *txn, const char *device, int step, char id[33],
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

static inline mcim_cause_t post_quote(const char *id, const char *token, const char *quote,
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

static inline mcim_cause_t outbox_cb(const mcim_row_t *row, void *arg)
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
static inline mcim_statement_t *queued_verdict(const char *txn, int64_t want_step,
                                               const char *device)
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

static inline int64_t count(const char *sql, const char *arg)
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

static inline void counted_certificate(void *ctx, const struct mcim_http_request *req,
                                       struct mcim_http_response *resp)
{
  const char *const *nc = ctx;
  atomic_fetch_add(strcmp(nc[0], "vno") == 0 ? &vno_cert_gets : &ro_cert_gets, 1);
  lab_h_certificate(ctx, req, resp);
}

/* ---- setup ---- */

static inline int setup(void **state)
{
  static const char *const roles[] = {"ro", "pva", "m2mes", "sho-a", "vno", "sho-b"};
  char path[256];
  (void)state;
  if (lab_init(&lab, roles, 6) != 0)
    return -1;
  uint16_t pva_port = lab_free_port(), vno_port = lab_free_port(), sho_port = lab_free_port();
  uint16_t ro_port = lab_free_port();
  /* sho-a is listed but not running: verdicts wait in the outbox */
  lab_write_peers(&lab, "pva", (int)pva_port, "vno", (int)vno_port, "sho-a", (int)sho_port, "ro",
                  (int)ro_port, (const char *)NULL);
  json_t *extra = json_pack("{s:s,s:i,s:i,s:s,s:i}", "nonce_lifetime", "1m", "outbox_backoff_ms",
                            600000, "outbox_max_attempts", 1000, "log_level", "warn",
                            "revocations_per_minute", REVOCATIONS_PER_MINUTE);
  lab_write_config(&lab, "pva", pva_port, extra, pva_cfg, sizeof(pva_cfg));
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
  if (mcim_role_start(&mcim_role_pva, pva_cfg, &pva) != MCIM_OK)
    return -1;
  snprintf(base, sizeof(base), "https://localhost:%u", pva_port);

  sho_cli = lab_client(&lab, "sho-a");
  sho_b_cli = lab_client(&lab, "sho-b");
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
  return sho_cli && sho_b_cli && m2mes_cli && dev_cli && tok1 && tok2 ? 0 : -1;
}

static inline int teardown(void **state)
{
  (void)state;
  mcim_role_free(pva);
  mcim_http_server_free(vno_srv);
  mcim_http_server_free(ro_srv);
  mcim_jose_key_free(ro_key);
  free(ro_cert);
  mcim_http_client_free(sho_cli);
  mcim_http_client_free(sho_b_cli);
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
#endif
