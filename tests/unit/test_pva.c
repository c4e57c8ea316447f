/* The PVA role over real TLS on loopback (tests/unit/pva_fixture.h): its peers' keys fetched
 * before any request, the firmware's RIMs and log digest, RIM registration (caller m2mes),
 * and the TRE quotes it verifies: good, tampered, wrong nonce, replayed nonce, an unknown
 * component or chain, another device, bad certificates, a TPM device's certificate with a
 * software quote; the verdict in the outbox (step 11) and traces. The access network (vno) is
 * a stand-in serving its certificate; the SHO is not running: verdicts stay in the outbox,
 * which the test reads. Bad requests, the change procedure's steps, orders, nonces and their
 * expiry are test_pva_requests.c's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>
#include "pva_fixture.h"

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
    assert_int_equal(get_pending(dev_cli, "dev1", txn, tok1, &res),
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
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok1, &res),
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

/* A validation whose nonce expired before the device fetched it: the device is told why
 * (410 NONCE_EXPIRED, at once), both before the PVA's tick marked it and after, and the SHO
 * gets its failure verdict; another procedure of the device is still only not there yet. */
static void test_nonce_expired(void **state)
{
  char txn[33], other[33], id[33], nonce[65];
  struct mcim_http_result res;
  (void)state;
  new_txn(txn);
  new_txn(other);
  create_validation(txn, "dev1", 0, id, nonce);
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_INT(mcim_now() - 1), MCIM_TEXT(id)};
  assert_int_equal(
      mcim_store_exec(st, "UPDATE validations SET expires = ? WHERE id = ?", p, 2, NULL, NULL),
      MCIM_OK);
  mcim_store_close(st);
  /* expired, maybe not marked yet: refused with its cause */
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok1, &res),
                   MCIM_NONCE_EXPIRED);
  assert_int_equal(res.status, 410);
  mcim_http_result_clear(&res);
  /* the tick marks it and queues the failure verdict (waited for, bounded) */
  for (int i = 0; i < 200 && count("SELECT COUNT(*) FROM validations WHERE txn = ? AND"
                                   " state = 'expired'",
                                   txn) != 1;
       i++)
    usleep(50 * 1000);
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'expired'",
                         txn),
                   1);
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok1, &res),
                   MCIM_NONCE_EXPIRED);
  assert_int_equal(res.status, 410);
  mcim_http_result_clear(&res);
  mcim_statement_t *v = queued_verdict(txn, 11, "dev1");
  assert_string_equal(mcim_statement_string(v, "result"), "failure");
  mcim_statement_free(v);
  /* the quote the device would have sent now: the nonce is gone */
  char *q = make_quote(dev1_key, "dev1", txn, nonce, good_log(MODEL), NULL);
  assert_int_not_equal(post_quote(id, tok1, q, dev1_cert, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  free(q);
  /* a procedure with no validation yet: not found, as before */
  assert_int_equal(get_pending(dev_cli, "dev1", other, tok1, &res),
                   MCIM_NOT_FOUND);
  mcim_http_result_clear(&res);
  /* another device's token: refused before anything is said about dev1's procedure */
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok2, &res),
                   MCIM_FORBIDDEN);
  assert_int_equal(res.status, 403);
  mcim_http_result_clear(&res);
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
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok2, &res),
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
  k = NULL;
  pem = NULL;
  /* the M2MES CA, but a key-agreement certificate */
  assert_int_equal(lab_tre_key(&lab, "dev1", MCIM_CERT_TRE_KEY_AGREEMENT, NULL, &k, &pem), 0);
  assert_int_equal(post_quote(id, tok1, q, pem, &res), MCIM_CERT_INVALID);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(k);
  free(pem);
  mcim_pki_ca_free(ops);
  free(q);
  /* Refused before the TRE's proof: nothing of the validation is read or changed. Before
   * 2026-12-07 the refusal was remembered for the expiry verdict, so anyone with a token
   * naming the device chose the cause of another SHO's failure verdict. */
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'pending'"
                         " AND last_cause IS NULL",
                         txn),
                   1);
}
/* For the tests that probe the PVA (a quote, a nonce) without the device's proof: two
 * validations of dev1, one pending (its id and nonce) and one decided (`success`), and dev1's
 * certificate from the M2MES CA beside a key it does not certify. */
struct probe_fixture {
  char pending_txn[33], decided_txn[33], pending[33], decided[33], nonce[65];
  mcim_jose_key_t *other;
  char *other_pem;
};

static void probe_setup(struct probe_fixture *f)
{
  char decided_nonce[65];
  memset(f, 0, sizeof(*f));
  new_txn(f->pending_txn);
  new_txn(f->decided_txn);
  create_validation(f->pending_txn, "dev1", 0, f->pending, f->nonce);
  create_validation(f->decided_txn, "dev1", 0, f->decided, decided_nonce);
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  mcim_val_t p[] = {MCIM_TEXT(f->decided)};
  assert_int_equal(mcim_store_exec(st, "UPDATE validations SET state = 'success' WHERE id = ?",
                                   p, 1, NULL, NULL),
                   MCIM_OK);
  mcim_store_close(st);
  assert_int_equal(lab_tre_key(&lab, "dev1", MCIM_CERT_TRE_ATTESTATION, NULL, &f->other,
                               &f->other_pem),
                   0);
}

static void probe_clear(struct probe_fixture *f)
{
  free(f->other_pem);
  mcim_jose_key_free(f->other);
}

/* A quote is checked as the TRE's own before any validation is read (2026-12-07): a junk
 * quote (signed by another key than the certificate's) gets QUOTE_INVALID whatever the id
 * names, none, a pending validation or a decided one, and leaves each as it was. Before,
 * the causes told them apart (NOT_FOUND, REPLAY "already used (success)"), so anyone with a
 * token naming the device learnt another SHO's verdict, and the refusal became the pending
 * one's last_cause, the cause of its failure verdict at expiry. */
static void test_no_probe_before_proof(void **state)
{
  struct probe_fixture f;
  struct mcim_http_result res;
  (void)state;
  probe_setup(&f);
  char *junk = make_quote(dev1_key, "dev1", f.pending_txn, f.nonce, good_log(MODEL), NULL);
  const char *ids[] = {"0123456789abcdef0123456789abcdef", f.pending, f.decided};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(post_quote(ids[i], tok1, junk, f.other_pem, &res), MCIM_QUOTE_INVALID);
    assert_int_equal(res.status, mcim_cause_http_status(MCIM_QUOTE_INVALID));
    mcim_http_result_clear(&res);
  }
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'pending'"
                         " AND last_cause IS NULL",
                         f.pending_txn),
                   1);
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND state = 'success'",
                         f.decided_txn),
                   1);
  free(junk);
  probe_clear(&f);
}

/* The nonce of a procedure is for the device itself (2026-12-07): a token naming the device
 * is not enough, since any access network mints one (the old SHO of a change via the old SHO
 * knows the txn). Without the TRE's request, or with one that does not verify (signed by
 * another key, for another txn, for the discovery, with another device's certificate), the
 * answer is the same whether the txn has a pending validation, a decided one or none, and the
 * nonce is not marked fetched. Before, the token alone got the nonce, NOT_FOUND or
 * NONCE_EXPIRED. */
static void test_nonce_for_the_device_only(void **state)
{
  struct probe_fixture f;
  char none_txn[33];
  struct mcim_http_result res;
  (void)state;
  probe_setup(&f);
  new_txn(none_txn);
  const char *txns[] = {f.pending_txn, f.decided_txn, none_txn};
  for (size_t i = 0; i < 3; i++) {
    const char *t = txns[i];
    json_t *forged = pending_proof("dev1", t, "nonce");
    json_object_set_new(forged, "tre_cert", json_string(f.other_pem));
    json_t *other_txn = pending_proof("dev1", i ? f.pending_txn : f.decided_txn, "nonce");
    json_t *wrong_cert = pending_proof("dev1", t, "nonce");
    json_object_set_new(wrong_cert, "tre_cert", json_string(dev2_cert));
    struct {
      json_t *body;
      mcim_cause_t want;
    } cases[] = {
        {json_object(), MCIM_FIELD_MISSING},
        {forged, MCIM_JWS_BAD_SIGNATURE},
        {other_txn, MCIM_CLAIM_MISMATCH},
        {pending_proof("dev1", t, "discovery"), MCIM_CLAIM_MISMATCH},
        {wrong_cert, MCIM_CERT_INVALID},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
      assert_int_equal(call(dev_cli, "POST", pending_path("dev1", t), cases[k].body, tok1, &res),
                       cases[k].want);
      assert_int_equal(res.status, mcim_cause_http_status(cases[k].want));
      mcim_http_result_clear(&res);
    }
  }
  /* nothing told, nothing marked: the pending one's nonce was never fetched */
  assert_int_equal(count("SELECT COUNT(*) FROM validations WHERE txn = ? AND fetched = 0",
                         f.pending_txn),
                   1);
  /* the device's own request gets it */
  assert_int_equal(get_pending(dev_cli, "dev1", f.pending_txn, tok1, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), f.nonce);
  mcim_http_result_clear(&res);
  probe_clear(&f);
}

/* A refused token says so (RFC 6750 3, `WWW-Authenticate: Bearer`), and a refused proof does
 * not, though both can be JWS_BAD_SIGNATURE (2026-12-07): by that the agent tells "attach
 * again" from "sign again". The proof's 401 has a challenge of its own (`MCIM-Statement`, RFC
 * 9110 15.5.2), which no Bearer client takes for its token's. Before, it took every such cause as its token's and attached
 * again, with the same refusal each time, until its deadline. */
static void test_token_refusal_says_so(void **state)
{
  struct probe_fixture f;
  struct mcim_http_result res;
  (void)state;
  probe_setup(&f);
  /* the token's signature broken: its last character changed */
  char *bad_tok = strdup(tok1);
  assert_non_null(bad_tok);
  size_t n = strlen(bad_tok);
  bad_tok[n - 2] = bad_tok[n - 2] == 'A' ? 'B' : 'A';
  json_t *forged = pending_proof("dev1", f.pending_txn, "nonce");
  json_object_set_new(forged, "tre_cert", json_string(f.other_pem));
  /* a token of an SHO that is no peer of the PVA: CLAIM_MISMATCH, the token's (before, the
   * key it could not fetch made it NO_ACCESS, which reads "no token") */
  char *stranger = lab_access_token_of(dev1_key, "sho-z", "dev1", "full");
  assert_non_null(stranger);
  struct {
    json_t *body;
    const char *token;
    mcim_cause_t want;
    bool challenge;
    const char *error;
  } cases[] = {
      {pending_proof("dev1", f.pending_txn, "nonce"), bad_tok, MCIM_JWS_BAD_SIGNATURE, true,
       "invalid_token"},
      {forged, tok1, MCIM_JWS_BAD_SIGNATURE, false, ""},
      {pending_proof("dev1", f.pending_txn, "nonce"), NULL, MCIM_NO_ACCESS, true, ""},
      {pending_proof("dev1", f.pending_txn, "nonce"), "junk", MCIM_JOSE_MALFORMED, true,
       "invalid_token"},
      {pending_proof("dev1", f.pending_txn, "nonce"), stranger, MCIM_CLAIM_MISMATCH, true,
       "invalid_token"},
  };
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    assert_int_equal(call(dev_cli, "POST", pending_path("dev1", f.pending_txn), cases[k].body,
                          cases[k].token, &res),
                     cases[k].want);
    assert_int_equal(res.bearer_challenge, cases[k].challenge);
    assert_string_equal(res.bearer_error, cases[k].error);
    /* every 401 has a challenge (RFC 9110 15.5.2): the proof's is not a Bearer one */
    const char *scheme = cases[k].challenge ? "Bearer realm=\"mcim\"" : "MCIM-Statement realm";
    if (cases[k].challenge || res.status == 401)
      assert_memory_equal(res.challenge, scheme, strlen(scheme));
    mcim_http_result_clear(&res);
  }
  /* the quote's route alike: a broken token, then a junk quote with a good one */
  char *junk = make_quote(dev1_key, "dev1", f.pending_txn, f.nonce, good_log(MODEL), NULL);
  assert_int_equal(post_quote(f.pending, bad_tok, junk, dev1_cert, &res), MCIM_JWS_BAD_SIGNATURE);
  assert_true(res.bearer_challenge);
  assert_string_equal(res.bearer_error, "invalid_token");
  mcim_http_result_clear(&res);
  assert_int_equal(post_quote(f.pending, tok1, junk, f.other_pem, &res), MCIM_QUOTE_INVALID);
  assert_false(res.bearer_challenge);
  assert_true(res.status == 401 ? strncmp(res.challenge, "MCIM-Statement ", 15) == 0
                                : res.challenge[0] == '\0');
  mcim_http_result_clear(&res);
  free(junk);
  free(bad_tok);
  free(stranger);
  probe_clear(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peer_keys_fetched_first),
      cmocka_unit_test(test_firmware),
      cmocka_unit_test(test_rims),
      cmocka_unit_test(test_good_quote),
      cmocka_unit_test(test_replayed_nonce),
      cmocka_unit_test(test_nonce_expired),
      cmocka_unit_test(test_tampered),
      cmocka_unit_test(test_unknown_component_and_chain),
      cmocka_unit_test(test_wrong_nonce),
      cmocka_unit_test(test_other_device),
      cmocka_unit_test(test_tpm_device_needs_tpm_quote),
      cmocka_unit_test(test_bad_cert),
      cmocka_unit_test(test_token_refusal_says_so),
      cmocka_unit_test(test_no_probe_before_proof),
      cmocka_unit_test(test_nonce_for_the_device_only),
  };
  mcim_log_init("test-pva", MCIM_LOG_TEXT, MCIM_LOG_WARN, NULL);
  return cmocka_run_group_tests(tests, setup, teardown);
}
