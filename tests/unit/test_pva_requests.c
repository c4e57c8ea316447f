/* The PVA role over real TLS on loopback (tests/unit/pva_fixture.h), its requests and
 * procedures: bad validation requests and who may make them (leaving no trace row), the
 * change procedure (the verdict at step 5), a validation without the RO's order, one nonce
 * per procedure, the handler threads sharing one store connection, the expiry of a nonce (its
 * verdict with the last refusal) and garbage on the wire. The SHO is not running: verdicts
 * stay in the outbox, which the test reads. The quotes' verification is test_pva.c's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>
#include "pva_fixture.h"
#include "roles/pva/pva.h"

/* The model's RIMs, registered by the M2MES as test_pva.c's test_rims does (which tests the
 * registration itself): the quotes here verify against them. */
static int setup_with_rims(void **state)
{
  if (setup(state) != 0)
    return -1;
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    struct mcim_http_result res;
    char rim[65];
    memset(&res, 0, sizeof(res));
    if (mcim_firmware_rim(MODEL, mcim_firmware_components[i], rim) != MCIM_OK)
      return -1;
    json_t *b = json_pack("{s:s,s:s,s:s}", "model", MODEL, "component",
                          mcim_firmware_components[i], "digest", rim);
    mcim_cause_t rc = call(m2mes_cli, "POST", "/v1/rims", b, NULL, &res);
    long status = res.status;
    mcim_http_result_clear(&res);
    if (rc != MCIM_OK || status != 201)
      return -1;
  }
  return 0;
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
  b = vbody(txn, "not a device id");
  assert_int_equal(call(sho_cli, "POST", "/v1/validations", b, NULL, &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  /* refused before the caller is shown a party of txn: logged, never traced under the txn
   * it named (it could be a rival's procedure) */
  assert_int_equal(count("SELECT COUNT(*) FROM trace WHERE txn = ?", txn), 0);
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
  assert_int_not_equal(get_pending(dev_cli, "dev1", txn, forged, &res),
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
  assert_int_equal(get_pending(dev_cli, "dev1", a, tok1, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "nonce")), na);
  mcim_http_result_clear(&res);
  assert_int_equal(get_pending(dev_cli, "dev1", b, tok1, &res), MCIM_OK);
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
    assert_int_equal(get_pending(cli, "dev1", txn, tok1, &res), MCIM_OK);
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
  assert_int_equal(get_pending(dev_cli, "dev1", txn, tok1, &res),
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

/* ---- revocations: bounded per peer, and for a day ---- */

/* The limit itself, at chosen times: `max` a minute per peer, the next minute afresh, each
 * peer its own count, and a full table of this minute's counts gives way at the smallest. */
static void test_peer_limit(void **state)
{
  struct mcim_peer_limit l;
  int64_t wait = -1, t = 6000000; /* on a minute's start */
  char peer[16];
  (void)state;
  mcim_peer_limit_init(&l, 60);
  for (int i = 0; i < 3; i++)
    assert_true(mcim_peer_limit_admit(&l, "sho-a", t + 10, 3, &wait));
  assert_false(mcim_peer_limit_admit(&l, "sho-a", t + 10, 3, &wait));
  assert_int_equal(wait, 50);
  assert_false(mcim_peer_limit_admit(&l, "sho-a", t + 59, 3, &wait));
  assert_int_equal(wait, 1);
  assert_true(mcim_peer_limit_admit(&l, "sho-b", t + 59, 3, &wait));
  assert_true(mcim_peer_limit_admit(&l, "sho-a", t + 60, 3, &wait));
  /* MCIM_PEER_LIMIT_SLOTS counts this minute: sho-a's 1 and sho-x0.. with 2 each; one more peer
   * takes the smallest (sho-a's), which starts again */
  for (int i = 0; i < MCIM_PEER_LIMIT_SLOTS - 1; i++) {
    snprintf(peer, sizeof(peer), "sho-x%d", i);
    assert_true(mcim_peer_limit_admit(&l, peer, t + 61, 3, &wait));
    assert_true(mcim_peer_limit_admit(&l, peer, t + 61, 3, &wait));
  }
  assert_true(mcim_peer_limit_admit(&l, "sho-new", t + 62, 3, &wait));
  for (int i = 0; i < 3; i++)
    assert_true(mcim_peer_limit_admit(&l, "sho-x0", t + 62, 3, &wait) == (i == 0));
  mcim_peer_limit_destroy(&l);
}

static mcim_cause_t post_revocation(struct mcim_http_client *cli, const char *imsi, long *status,
                           long *retry_after)
{
  char txn[33];
  struct mcim_http_result res;
  new_txn(txn);
  mcim_cause_t rc = call(cli, "POST", "/v1/revocations",
                         json_pack("{s:s,s:s,s:s}", "txn", txn, "device", "dev1", "imsi", imsi),
                         NULL, &res);
  *status = res.status;
  *retry_after = res.retry_after;
  mcim_http_result_clear(&res);
  return rc;
}

static bool stale_gone(void)
{
  return count("SELECT COUNT(*) FROM revocations WHERE imsi = ?", "001019999999999") == 0;
}

/* An SHO sends at most revocations_per_minute (3 here) a minute: the next is 503
 * REVOCATIONS_TOO_FAST with a Retry-After (its outbox asks again), recorded nowhere; another
 * SHO has its own count. A revocation goes a day (and the skew) after it came: the first tick
 * of a PVA purges one older, and keeps the new. */
static void test_revocations(void **state)
{
  long status = 0, retry = 0;
  char imsi[16];
  (void)state;
  int64_t base_rows = count("SELECT COUNT(*) FROM revocations", NULL);
  /* The limit counts whole minutes: start with at least 5 s of this one left (the four
   * requests take milliseconds), and check they were all made within it. */
  for (int waited = 0; waited < 6000 && mcim_now() % 60 >= 55; waited += 100) {
    struct timespec ms = {0, 100 * 1000000};
    nanosleep(&ms, NULL);
  }
  int64_t minute = mcim_now() / 60;
  int ok = 0;
  for (int i = 0; i < REVOCATIONS_PER_MINUTE; i++) {
    snprintf(imsi, sizeof(imsi), "001010%09d", i);
    ok += post_revocation(sho_cli, imsi, &status, &retry) == MCIM_OK && status == 200;
  }
  snprintf(imsi, sizeof(imsi), "001010%09d", 99);
  mcim_cause_t over = post_revocation(sho_cli, imsi, &status, &retry);
  assert_int_equal(mcim_now() / 60, minute);
  assert_int_equal(ok, REVOCATIONS_PER_MINUTE);
  assert_int_equal(over, MCIM_REVOCATIONS_TOO_FAST);
  assert_int_equal(status, 503);
  assert_true(retry >= 1 && retry <= 60);
  assert_int_equal(count("SELECT COUNT(*) FROM revocations WHERE imsi = ?", imsi), 0);
  assert_int_equal(post_revocation(sho_b_cli, "001010000000077", &status, &retry), MCIM_OK);
  assert_int_equal(status, 200);
  int64_t rows = count("SELECT COUNT(*) FROM revocations", NULL);
  assert_true(rows >= base_rows + REVOCATIONS_PER_MINUTE + 1);

  /* All instances count together (peer_counts, in the store): sho-b's count this minute as the
   * PVA's other instances would have left it, full, refuses sho-b here too, though this
   * instance took one of its revocations only. */
  mcim_store_t *st = lab_open_db(&lab, "pva");
  assert_non_null(st);
  assert_int_equal(count("SELECT n FROM peer_counts WHERE what = 'revocations' AND peer = ?",
                         "sho-b"),
                   1);
  mcim_val_t full[] = {MCIM_INT(REVOCATIONS_PER_MINUTE), MCIM_INT(minute * 60)};
  assert_int_equal(mcim_store_exec(st,
                                   "UPDATE peer_counts SET n = ? WHERE what = 'revocations'"
                                   " AND peer = 'sho-b' AND window_start = ?",
                                   full, 2, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
  over = post_revocation(sho_b_cli, "001010000000078", &status, &retry);
  assert_int_equal(mcim_now() / 60, minute); /* all within the minute (5 s were left) */
  assert_int_equal(over, MCIM_REVOCATIONS_TOO_FAST);
  assert_int_equal(status, 503);
  assert_int_equal(count("SELECT COUNT(*) FROM revocations WHERE imsi = ?", "001010000000078"),
                   0);

  mcim_val_t p[] = {MCIM_INT(mcim_now() - 86400 - 31)}; /* past a day and the 30 s skew */
  assert_int_equal(mcim_store_exec(st,
                                   "INSERT INTO revocations (network, imsi, device, created)"
                                   " VALUES ('sho-a', '001019999999999', 'dev1', ?)",
                                   p, 1, NULL, NULL),
                   MCIM_OK);
  mcim_store_close(st);
  assert_false(stale_gone());
  mcim_role_free(pva);
  pva = NULL;
  assert_int_equal(mcim_role_start(&mcim_role_pva, pva_cfg, &pva), MCIM_OK);
  for (int waited = 0; waited < 10000 && !stale_gone(); waited += 50) {
    struct timespec ms = {0, 50 * 1000000};
    nanosleep(&ms, NULL);
  }
  assert_true(stale_gone());
  assert_int_equal(count("SELECT COUNT(*) FROM revocations", NULL), rows);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_change_steps),
      cmocka_unit_test(test_not_ordered),
      cmocka_unit_test(test_nonce_per_procedure),
      cmocka_unit_test(test_store_pool),
      cmocka_unit_test(test_expiry),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_peer_limit),
      cmocka_unit_test(test_revocations),
  };
  mcim_log_init("test-pva", MCIM_LOG_TEXT, MCIM_LOG_WARN, NULL);
  return cmocka_run_group_tests(tests, setup_with_rims, teardown);
}
