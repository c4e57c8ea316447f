/* Issue 8, points 1-4, on a real lab (mcimd processes on loopback, real TLS, a real device
 * agent): who may order, read an order, authorise the DPF, hand a device over, for which
 * device and which procedure (txn). The hostile parties are real clients holding a valid
 * certificate of their role (sho-b, sho-a acting for a device it has no order for) or none
 * (a stranger with a key of its own). Every refusal is asserted by its cause, and the stores
 * of every role are compared before and after: a refused request leaves nothing behind.
 *   - step 1: a stranger's order (its own key, the device's real TRE certificates) is
 *     NOT_OWNER at the SHO, 1,000 of them leave every store as it was; an owner's order
 *     for another SHO is refused; an SHO cannot get the DRF to record a stranger's order;
 *   - an order is readable only by its owner (owner-signed query) and the parties;
 *   - step 12 / 6: the DRF and the DPF take a package only from the SHO of the order, with
 *     the PVA's verdict;
 *   - the owner's statements (order, handover) are taken only while valid for at most a day;
 *   - an owner has at most orders_open_max (4) live orders of a device at an SHO: one more is
 *     429 ORDERS_BUSY with Retry-After, the RO not asked; a retry is answered as before, and
 *     an order that ended frees its place;
 *   - and at most drf_orders_open_max (16) at the DRF, across SHOs: one more, whichever SHO
 *     forwards it, is 429 ORDERS_BUSY with Retry-After at the owner, stored nowhere;
 *   - a handover ends the old owner's live orders (at the DRF at once, at an SHO with the new
 *     owner's first order there): an owner can hold the next one's orders off no more;
 *   - the owner hands the device over: the old owner's orders, queries and instructions are
 *     refused from then on, the new owner changes the device's SHO end to end;
 *   - the RO purges what an owner's orders leave (failed orders and packages, all but the
 *     newest installed order of a device at an SHO).
 * The registry and discovery (step 7-8, step 14 / 15) are test_registry_e2e.c's; the lab and
 * the helpers are ownership_fixture.h's. test_provision_then_handover and test_orders_purged
 * run last: the first hands DEV over, the second restarts the RO. */
#define OWNERSHIP_LAB_DIR "/tmp/mcim-ownership-XXXXXX"
#include "ownership_fixture.h"

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

/* ---- at most orders_open_max live orders of a device at an SHO ---- */

#define LIVE_DEV "SELECT COUNT(*) FROM orders WHERE device = '" DEV "' AND state IN"         \
                 " ('ordered', 'validating', 'provisioning')"

/* POST sho-a /v1/orders of `jws`: its cause, the answer's status and Retry-After. */
static mcim_cause_t order_answer(const char *txn, const char *jws, long *status, long *retry)
{
  struct mcim_http_result r;
  json_t *b = json_pack("{s:s,s:s}", "txn", txn, "order", jws);
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url("sho-a", "/v1/orders"), b, NULL, &r);
  *status = r.status;
  *retry = r.retry_after;
  mcim_http_result_clear(&r);
  json_decref(b);
  return rc;
}

/* Polls `role`'s store until `sql` counts `want` (20 s at most); fails otherwise. */
static void wait_count_at(const char *role, const char *sql, int64_t want, const char *what)
{
  for (int waited = 0; waited < 20000 && count_rows(role, sql) != want; waited += 100)
    usleep(100 * 1000);
  if (count_rows(role, sql) != want)
    fail_msg("%s: %lld, not %lld", what, (long long)count_rows(role, sql), (long long)want);
}

static void wait_count(const char *sql, int64_t want, const char *what)
{
  wait_count_at("sho-a", sql, want, what);
}

/* Each order reserves an IMSI at the SHO and is recorded at the DRF for order_lifetime: an
 * owner may have orders_open_max (4 by default) of one device live at an SHO. The next is
 * 429 ORDERS_BUSY with Retry-After (until the oldest expires), stored nowhere and, when its
 * signature is the owner's of the live orders, not even forwarded to the DRF; one the SHO
 * cannot check itself is refused where it would be stored. A retry of an accepted order still
 * gets its answer, another device's order is taken, and an order that ended (expired: aged
 * by the test, failed by the SHO's sweep) frees its place. Before 2026-12-06 every order was
 * taken. DEV's orders here all end at the end, for the tests that follow. */
static void test_orders_bounded(void **state)
{
  char txn[33], first[33] = "", *first_jws = NULL, *o, sql[200];
  long status = 0, retry = 0;
  int64_t before[NCOUNTED + 1];
  (void)state;
  /* test_order_read left one live order of DEV at sho-a: up to 4 */
  for (int64_t n = count_rows("sho-a", LIVE_DEV); n < 4; n++) {
    new_txn(txn);
    o = order_jws(owner, "sho-a", txn);
    assert_int_equal(order_answer(txn, o, &status, &retry), MCIM_OK);
    assert_int_equal(status, 201);
    if (!first[0]) {
      snprintf(first, sizeof(first), "%s", txn);
      first_jws = o;
    } else {
      free(o);
    }
  }
  assert_non_null(first_jws);
  assert_int_equal(count_rows("sho-a", LIVE_DEV), 4);
  snapshot(before);
  new_txn(txn);
  o = order_jws(owner, "sho-a", txn);
  assert_int_equal(order_answer(txn, o, &status, &retry), MCIM_ORDERS_BUSY);
  assert_int_equal(status, 429);
  assert_true(retry > 3600 - 300 && retry <= 3600);
  /* the same again: the same refusal, and its jti was not spent */
  assert_int_equal(order_answer(txn, o, &status, &retry), MCIM_ORDERS_BUSY);
  /* a retry of an accepted order: its answer, as before */
  assert_int_equal(order_answer(first, first_jws, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  /* nothing stored, the DRF not asked (its drf_orders, replay, trace unchanged) */
  assert_unchanged(before, "orders over the bound");

  /* another device's order at sho-a is taken */
  new_device_ordered("odev2");

  /* one order ends (past order_lifetime, the sweep fails it): the refused order is taken
   * now (its jti was not spent), the DRF answering it as a retry */
  snprintf(sql, sizeof(sql), "UPDATE orders SET created = created - 7200 WHERE txn = '%s'",
           first);
  exec_sql("sho-a", sql);
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM orders WHERE txn = '%s' AND state = 'failed' AND"
           " cause = 'TIMEOUT'",
           first);
  wait_count(sql, 1, "the aged order failed");
  assert_int_equal(order_answer(txn, o, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  free(o);
  free(first_jws);
  new_txn(txn);
  assert_int_equal(post_order(owner, "sho-a", "sho-a", txn, &status), MCIM_ORDERS_BUSY);

  /* The bound is per owner: live orders under another owner key (here the key hidden from
   * sho-a; in life the old owner's after a handover) neither block this owner's order nor
   * show to it. Before 2026-12-07 it was refused ORDERS_BUSY, which told a new owner the old
   * one's orders were there. */
  exec_sql("sho-a", "UPDATE orders SET owner_jwk = NULL WHERE device = '" DEV "' AND state IN"
                    " ('ordered', 'validating', 'provisioning')");
  new_txn(txn);
  assert_int_equal(post_order(owner, "sho-a", "sho-a", txn, &status), MCIM_OK);
  assert_int_equal(status, 201);
  /* No bound of all owners' orders together (until 2026-12-08 twice the bound, which an
   * owner could fill before a handover, holding the next owner off for order_lifetime): a
   * handover ends the old owner's orders instead (test_handover_ends_orders). */
  exec_sql("sho-a", "UPDATE orders SET owner_jwk = NULL WHERE device = '" DEV "' AND state IN"
                    " ('ordered', 'validating', 'provisioning')");
  for (int i = 0; i < 4; i++) {
    new_txn(txn);
    assert_int_equal(post_order(owner, "sho-a", "sho-a", txn, &status), MCIM_OK);
  }
  assert_int_equal(count_rows("sho-a", LIVE_DEV), 9);

  /* DEV's orders here end, as abandoned ones do */
  exec_sql("sho-a", "UPDATE orders SET created = created - 7200 WHERE device = '" DEV "' AND"
                    " state IN ('ordered', 'validating', 'provisioning')");
  wait_count(LIVE_DEV, 0, "DEV's live orders at sho-a");
}

/* ---- at most drf_orders_open_max live orders of a device at the DRF ---- */

#define DRF_LIVE_DEV                                                                        \
  "SELECT COUNT(*) FROM drf_orders WHERE device = '" DEV "' AND state IN ('ordered',"      \
  " 'authorised') AND expires > CAST(strftime('%s', 'now') AS INTEGER)"
#define SHO_C_TXN "00000000000000000000000000c0%04d"

/* POST `sho` /v1/orders: the owner's order `jws` for it; its cause, status and Retry-After. */
static mcim_cause_t order_answer_at(const char *sho, const char *txn, const char *jws,
                                    long *status, long *retry)
{
  struct mcim_http_result r;
  json_t *b = json_pack("{s:s,s:s}", "txn", txn, "order", jws);
  mcim_cause_t rc = mcim_http_request(plain_cli, "POST", url(sho, "/v1/orders"), b, NULL, &r);
  *status = r.status;
  *retry = r.retry_after;
  mcim_http_result_clear(&r);
  json_decref(b);
  return rc;
}

/* An order of DEV's at the DRF from "sho-c", a third SHO the lab does not run, set in the RO's
 * store: its txn SHO_C_TXN with `i`, recorded with `owner_jwk` (NULL: before RO migration 12). */
static void put_sho_c_order(int i, const char *state, int64_t now, int64_t expires,
                            const char *owner_jwk)
{
  char sql[600], owner_sql[64] = "NULL";
  if (owner_jwk)
    snprintf(owner_sql, sizeof(owner_sql), "'%s'", owner_jwk);
  snprintf(sql, sizeof(sql),
           "INSERT INTO drf_orders (txn, device, sho, endpoint, procedure, via, state, record,"
           " created, updated, expires, owner_jwk) VALUES ('" SHO_C_TXN "', '" DEV "', 'sho-c',"
           " 'https://sho-c', 'initial', '', '%s', 'r', %lld, %lld, %lld, %s)",
           i, state, (long long)now, (long long)now, (long long)expires, owner_sql);
  exec_sql("ro", sql);
}

/* The DRF records each order an SHO forwards for order_lifetime, and orders reach it beside
 * an SHO's own bound (orders_open_max, 4 per SHO): several SHOs, an order an SHO cannot
 * check yet, a new owner's. At most drf_orders_open_max (16 by default) live orders
 * (ordered, authorised, not expired) of a device at the DRF, across SHOs; the next, whichever
 * SHO forwards it, is 429 ORDERS_BUSY at the owner with Retry-After (until the oldest live
 * one expires), stored nowhere. A retry of an accepted order is answered as before (by the
 * SHO, and by the DRF to the SHO), another device's order is taken, and when a live order
 * ends the refused order itself is taken (its jti was not spent).
 * Real orders through sho-a and sho-b (2 each: below their own bound of 4, so each SHO
 * forwards the next) and the live ones the earlier tests left; the rest up to 16 are rows
 * set in the RO's store for orders of a third SHO, "sho-c": the lab has two SHOs, which
 * together forward at most 8 live orders of a device, and the bound is the RO's default.
 * Rows of ended orders (installed, failed, expired, and ordered but past `expires`, not yet
 * swept) are set beside them and must not count. Before 2026-12-06 every order was taken. */
static void test_drf_orders_bounded(void **state)
{
  char txn[33], sql[600], accepted[33] = "", *accepted_jws = NULL, *o;
  long status = 0, retry = 0;
  int64_t before[NCOUNTED + 1], now = mcim_now();
  (void)state;
  /* the earlier test left DEV's orders at sho-a ended there (still live at the DRF) */
  assert_int_equal(count_rows("sho-a", LIVE_DEV), 0);
  const char *shos[] = {"sho-a", "sho-a", "sho-b", "sho-b"};
  for (size_t i = 0; i < 4; i++) {
    new_txn(txn);
    o = order_jws(owner, shos[i], txn);
    assert_int_equal(order_answer_at(shos[i], txn, o, &status, &retry), MCIM_OK);
    assert_int_equal(status, 201);
    if (!accepted[0]) {
      snprintf(accepted, sizeof(accepted), "%s", txn);
      accepted_jws = o;
    } else {
      free(o);
    }
  }
  int64_t live = count_rows("ro", DRF_LIVE_DEV);
  assert_true(live >= 4 && live < 16);
  /* sho-c's live orders up to 16, the oldest expiring in 1800 s; its ended ones */
  for (int64_t i = 0; i < 16 - live + 4; i++) {
    static const char *const ended[] = {"installed", "failed", "expired", "ordered"};
    bool is_live = i < 16 - live;
    const char *st = is_live ? (i % 2 ? "authorised" : "ordered") : ended[i - (16 - live)];
    int64_t expires = is_live ? now + 1800 + 60 * i : now - 1;
    put_sho_c_order((int)i, st, now, expires, NULL);
  }
  assert_int_equal(count_rows("ro", DRF_LIVE_DEV), 16);
  assert_int_equal(count_rows("sho-a", LIVE_DEV), 2);

  /* one more, through sho-a (below its own bound: it asks the DRF) and through sho-b */
  snapshot(before);
  new_txn(txn);
  o = order_jws(owner, "sho-a", txn);
  assert_int_equal(order_answer_at("sho-a", txn, o, &status, &retry), MCIM_ORDERS_BUSY);
  assert_int_equal(status, 429);
  assert_true(retry > 1800 - 120 && retry <= 1800);
  char btxn[33];
  new_txn(btxn);
  char *ob = order_jws(owner, "sho-b", btxn);
  assert_int_equal(order_answer_at("sho-b", btxn, ob, &status, &retry), MCIM_ORDERS_BUSY);
  assert_int_equal(status, 429);
  assert_true(retry > 1800 - 120 && retry <= 1800);
  free(ob);
  /* a retry of an accepted order: the owner's at sho-a, and sho-a's own at the DRF */
  assert_int_equal(order_answer_at("sho-a", accepted, accepted_jws, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  assert_int_equal(req(sho_a_cli, "POST", "ro", "/v1/drf/orders",
                       json_pack("{s:s,s:s,s:s}", "txn", accepted, "order", accepted_jws,
                                 "endpoint", mcim_lab_url(lab, "sho-a")),
                       NULL, &status),
                   MCIM_OK);
  assert_int_equal(status, 200);
  free(accepted_jws);
  /* nothing stored at the RO (drf_orders, replay, trace) nor at the SHOs */
  assert_unchanged(before, "orders over the DRF's bound");

  /* another device's order is taken */
  new_device_ordered("odev3");

  /* one live order ends (sho-c's oldest is installed): the refused order itself is taken */
  snprintf(sql, sizeof(sql), "UPDATE drf_orders SET state = 'installed' WHERE txn = '" SHO_C_TXN
                             "'", 0);
  exec_sql("ro", sql);
  assert_int_equal(order_answer_at("sho-a", txn, o, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  free(o);
  assert_int_equal(count_rows("ro", DRF_LIVE_DEV), 16);

  /* The bound is per owner key (the sho-c rows above, recorded without one as before RO
   * migration 12, counted for every owner): 16 live orders under another key, in life the
   * old owner's after a handover, neither block this owner's order nor show to it. Before
   * 2026-12-06 it was refused ORDERS_BUSY, which told the new owner they were there. */
  exec_sql("ro", "UPDATE drf_orders SET owner_jwk = '{\"kty\":\"EC\",\"old\":1}' WHERE"
                 " device = '" DEV "' AND state IN ('ordered', 'authorised')");
  new_txn(txn);
  o = order_jws(owner, "sho-b", txn);
  assert_int_equal(order_answer_at("sho-b", txn, o, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  free(o);
  assert_int_equal(count_rows("ro", DRF_LIVE_DEV), 17);
  /* the order just taken carries the owner's key: the next one meets only it. The marker
   * is looked for with its quotes: SQLite's LIKE ignores case, and "old" in any case turns
   * up in one random key's x and y in about 400 (stop 33's CI met one). */
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM drf_orders WHERE txn = '%s' AND owner_jwk LIKE '{%%'"
           " AND owner_jwk NOT LIKE '%%\"old\"%%'",
           txn);
  assert_int_equal(count_rows("ro", sql), 1);
  /* No bound of all owners' orders together (until 2026-12-08 twice the bound, 32, which an
   * owner could fill before a handover): 15 more of an old key's, and this owner's next order
   * is still taken. A real handover ends them all (test_handover_ends_orders). */
  for (int i = 100; i < 115; i++)
    put_sho_c_order(i, "ordered", now, now + 1800, "{\"old\":2}");
  assert_int_equal(count_rows("ro", DRF_LIVE_DEV), 32);
  new_txn(txn);
  o = order_jws(owner, "sho-b", txn);
  assert_int_equal(order_answer_at("sho-b", txn, o, &status, &retry), MCIM_OK);
  assert_int_equal(status, 201);
  free(o);
  assert_int_equal(count_rows("ro", DRF_LIVE_DEV), 33);
  exec_sql("ro", "DELETE FROM drf_orders WHERE device = '" DEV "' AND txn LIKE"
                 " '00000000000000000000000000c00%'");

  /* DEV's orders end, at the SHOs as abandoned ones do, at the DRF expired; sho-c's go */
  for (size_t i = 0; i < 2; i++) {
    exec_sql(shos[2 * i], "UPDATE orders SET created = created - 7200 WHERE device = '" DEV
                          "' AND state IN ('ordered', 'validating', 'provisioning')");
    wait_count_at(shos[2 * i], LIVE_DEV, 0, "DEV's live orders at the SHO");
  }
  exec_sql("ro", "DELETE FROM drf_orders WHERE device = '" DEV "' AND sho = 'sho-c'");
  exec_sql("ro", "UPDATE drf_orders SET expires = strftime('%s', 'now') - 1 WHERE device = '"
                 DEV "' AND state IN ('ordered', 'authorised')");
  wait_count_at("ro", DRF_LIVE_DEV, 0, "DEV's live orders at the DRF");
}

/* ---- a handover ends the old owner's orders ---- */

/* `from` hands `device` over to `to` at the RO, the statement posted for device `at` (the
 * same, but to test a mix-up): the answer's cause and status. */
static mcim_cause_t hand_over_at(const mcim_jose_key_t *from, const mcim_jose_key_t *to,
                                 const char *device, const char *at, long *status)
{
  char txn[33], path[128], *jwk = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(to, &jwk), MCIM_OK);
  new_txn(txn);
  char *h = sign(from, "mcim-handover+jwt", "subscriber", device, "ro", txn,
                 json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  snprintf(path, sizeof(path), "/v1/drf/owners/%s/handover", at);
  mcim_cause_t rc =
      req(plain_cli, "POST", "ro", path, json_pack("{s:s}", "handover", h), NULL, status);
  free(h);
  free(jwk);
  return rc;
}

static mcim_cause_t hand_over(const mcim_jose_key_t *from, const mcim_jose_key_t *to,
                              const char *device, long *status)
{
  return hand_over_at(from, to, device, device, status);
}

#define HDEV "hdev1"
#define HDEV_LIVE_SHO                                                                       \
  "SELECT COUNT(*) FROM orders WHERE device = '" HDEV "' AND state IN ('ordered',"         \
  " 'validating', 'provisioning')"
#define HDEV_ENDED_SHO                                                                      \
  "SELECT COUNT(*) FROM orders WHERE device = '" HDEV "' AND state = 'failed' AND"          \
  " cause = 'NOT_OWNER'"
#define HDEV_LIVE_DRF                                                                       \
  "SELECT COUNT(*) FROM drf_orders WHERE device = '" HDEV "' AND state IN ('ordered',"     \
  " 'authorised') AND expires > CAST(strftime('%s', 'now') AS INTEGER)"

/* An owner's orders end when it hands the device over: at the DRF at once (the handover's
 * own transaction), at an SHO when the new owner's first order brings the RO's newer owner
 * epoch (there, those with no package yet). So an owner cannot hold the next owner's orders
 * off: before 2026-12-08 all owners' live orders of a device together were bounded at twice
 * the bound, and an owner that filled it (4 orders, a handover to a key of its own, 4 more)
 * and then sold the device held the buyer's orders off for order_lifetime (429 ORDERS_BUSY).
 * Nor can it hand the device to keys of its own to hold more live orders than the bound,
 * which that second bound was for. An order of an older epoch coming after a newer one's is
 * refused NOT_OWNER and ends nothing. */
static void test_handover_ends_orders(void **state)
{
  mcim_jose_key_t *a = NULL, *a2 = NULL, *b = NULL;
  json_t *dparams = NULL;
  char txn[33], packaged[33] = "";
  long status = 0;
  (void)state;
  device_and_owner(HDEV, &a, &dparams);
  assert_int_equal(mcim_jose_key_generate(&a2), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&b), MCIM_OK);
  /* the first owner at its bound at sho-a */
  for (int i = 0; i < 4; i++) {
    new_txn(txn);
    assert_int_equal(order_for(a, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_OK);
  }
  new_txn(txn);
  assert_int_equal(order_for(a, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_ORDERS_BUSY);
  assert_int_equal(count_rows("ro", HDEV_LIVE_DRF), 4);
  /* a package the DPF holds for one of them (set here, as the SHO's delivery stores it) */
  char sql[400];
  snprintf(sql, sizeof(sql),
           "INSERT INTO dpf_packages (txn, device, sho, procedure, package, state, created,"
           " updated) SELECT txn, device, sho, 'initial', 'a package', 'ready', created, created"
           " FROM drf_orders WHERE device = '" HDEV "' ORDER BY txn LIMIT 1");
  exec_sql("ro", sql);
  /* Nobody but the owner ends them: a handover signed by another key (a2, not yet the owner)
   * is 403 NOT_OWNER, and the owner's own statement for this device posted for another device
   * is refused as well; the orders, the package and the epoch stay as they were. */
  assert_int_equal(hand_over(a2, b, HDEV, &status), MCIM_NOT_OWNER);
  assert_int_equal(status, 403);
  assert_int_equal(hand_over_at(a, a2, HDEV, DEV, &status), MCIM_NOT_OWNER);
  assert_int_equal(status, 403);
  assert_int_equal(count_rows("ro", HDEV_LIVE_DRF), 4);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = '" HDEV
                                    "' AND state = 'ready'"),
                   1);
  assert_int_equal(count_rows("ro", "SELECT epoch FROM owners WHERE device = '" HDEV "'"), 0);
  assert_int_equal(count_rows("ro", "SELECT epoch FROM owners WHERE device = '" DEV "'"), 0);
  /* handed to a key of its own: the DRF's live orders of the device end with the handover,
   * expired, and the DPF drops their packages (in the same transaction: not at the sweep) */
  assert_int_equal(hand_over(a, a2, HDEV, &status), MCIM_OK);
  assert_int_equal(count_rows("ro", HDEV_LIVE_DRF), 0);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = '" HDEV
                                    "' AND state = 'abandoned' AND package = ''"),
                   1);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = '" HDEV
                                    "' AND state = 'expired'"),
                   4);
  assert_int_equal(count_rows("ro", "SELECT epoch FROM owners WHERE device = '" HDEV "'"), 1);
  /* the old key's orders are refused by the DRF: its key verifies no more */
  new_txn(txn);
  assert_int_equal(order_for(a, HDEV, dparams, "sho-b", txn, "initial", NULL), MCIM_NOT_OWNER);
  /* a handover to the key the device has already is refused, and ends nothing */
  assert_int_equal(hand_over(a2, a2, HDEV, &status), MCIM_CONFLICT);
  assert_int_equal(status, 409);
  assert_int_equal(count_rows("ro", "SELECT epoch FROM owners WHERE device = '" HDEV "'"), 1);
  /* the new key's first order at sho-a ends the old key's 4 there; it gets its own 4, no more */
  for (int i = 0; i < 4; i++) {
    new_txn(txn);
    assert_int_equal(order_for(a2, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_OK);
    if (i == 0)
      assert_int_equal(count_rows("sho-a", HDEV_ENDED_SHO), 4);
    snprintf(packaged, sizeof(packaged), "%s", txn);
  }
  new_txn(txn);
  assert_int_equal(order_for(a2, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_ORDERS_BUSY);
  assert_int_equal(count_rows("sho-a", HDEV_LIVE_SHO), 4);
  assert_int_equal(count_rows("sho-a", "SELECT COUNT(*) FROM orders WHERE device = '" HDEV
                                       "' AND owner_epoch = 1"),
                   4);
  /* One of them has its package (provisioning: the PVA's verdict taken; set here): the device
   * may hold its MCIM already, so no new owner's order ends it (its report, or order_lifetime,
   * does). */
  snprintf(sql, sizeof(sql),
           "UPDATE orders SET state = 'provisioning', created = created - 10 WHERE txn = '%s'",
           packaged); /* and older than the buyer's below, to the second */
  exec_sql("sho-a", sql);
  snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM orders WHERE txn = '%s' AND"
                             " state = 'provisioning'", packaged);
  assert_int_equal(count_rows("sho-a", sql), 1);
  /* sold: the buyer orders at once, at sho-a (the seller's orders there end) and at sho-b */
  assert_int_equal(hand_over(a2, b, HDEV, &status), MCIM_OK);
  assert_int_equal(count_rows("ro", HDEV_LIVE_DRF), 0);
  char bought[33];
  new_txn(bought);
  assert_int_equal(order_for(b, HDEV, dparams, "sho-a", bought, "initial", NULL), MCIM_OK);
  assert_int_equal(count_rows("sho-a", HDEV_ENDED_SHO), 7);
  assert_int_equal(count_rows("sho-a", sql), 1);
  assert_int_equal(count_rows("sho-a", HDEV_LIVE_SHO), 2);
  new_txn(txn);
  assert_int_equal(order_for(b, HDEV, dparams, "sho-b", txn, "initial", NULL), MCIM_OK);
  assert_int_equal(count_rows("ro", HDEV_LIVE_DRF), 2);

  /* Orders with their package are kept up to orders_open_max of the older epochs, the newest:
   * beyond that, an owner driving orders to their packages before each handover to a key of
   * its own would hold more live (review of 2026-12-08). The buyer's 4 with their package
   * (set here), sold on to c: with the seller's one, 5 of older epochs; c's first order ends
   * one of them (the oldest), its MCIM terminated with it. */
  for (int i = 0; i < 3; i++) {
    new_txn(txn);
    assert_int_equal(order_for(b, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_OK);
  }
  exec_sql("sho-a", "UPDATE orders SET state = 'provisioning' WHERE device = '" HDEV "' AND"
                    " state = 'ordered' AND owner_epoch = 2");
#define HDEV_PACKAGED_SHO                                                                   \
  "SELECT COUNT(*) FROM orders WHERE device = '" HDEV "' AND state = 'provisioning'"
  assert_int_equal(count_rows("sho-a", HDEV_PACKAGED_SHO), 5);
  mcim_jose_key_t *c = NULL;
  assert_int_equal(mcim_jose_key_generate(&c), MCIM_OK);
  assert_int_equal(hand_over(b, c, HDEV, &status), MCIM_OK);
  char sold_on[33];
  new_txn(sold_on);
  assert_int_equal(order_for(c, HDEV, dparams, "sho-a", sold_on, "initial", NULL), MCIM_OK);
  assert_int_equal(count_rows("sho-a", HDEV_PACKAGED_SHO), 4);
  assert_int_equal(count_rows("sho-a", HDEV_ENDED_SHO), 8);
  assert_int_equal(count_rows("sho-a", "SELECT COUNT(*) FROM orders WHERE device = '" HDEV
                                       "' AND state = 'failed' AND cause = 'NOT_OWNER' AND"
                                       " owner_epoch = 1"),
                   4); /* the seller's one with its package, the oldest, ended */

  /* An order of an older epoch than a live one here (the DRF answered it before a handover
   * and it arrives after the new owner's; here c's order set ahead to epoch 9) is refused and
   * ends nothing: one of b's orders back to `ordered` (epoch 2) stays so. */
  snprintf(sql, sizeof(sql), "UPDATE orders SET owner_epoch = 9 WHERE txn = '%s'", sold_on);
  exec_sql("sho-a", sql);
  exec_sql("sho-a", "UPDATE orders SET state = 'ordered' WHERE txn = (SELECT MIN(txn) FROM"
                    " orders WHERE device = '" HDEV "' AND state = 'provisioning')");
  int64_t live = count_rows("sho-a", HDEV_LIVE_SHO);
  new_txn(txn);
  assert_int_equal(order_for(c, HDEV, dparams, "sho-a", txn, "initial", NULL), MCIM_NOT_OWNER);
  assert_int_equal(count_rows("sho-a", HDEV_LIVE_SHO), live);
  assert_int_equal(count_rows("sho-a", HDEV_ENDED_SHO), 8);
  snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(count_rows("sho-a", sql), 0);

  /* The DRF answers the same order again (an SHO that lost it) only while it lives: one that
   * ended since (here past its expiry, as a handover leaves it) is 404 NOT_ORDERED, passed on
   * by the SHO, which stores nothing. */
  char again[33];
  new_txn(again);
  assert_int_equal(order_for(c, HDEV, dparams, "sho-b", again, "initial", NULL), MCIM_OK);
  snprintf(sql, sizeof(sql),
           "DELETE FROM orders WHERE txn = '%s'; DELETE FROM answers WHERE txn = '%s'", again,
           again);
  exec_sql("sho-b", sql);
  snprintf(sql, sizeof(sql),
           "UPDATE drf_orders SET expires = CAST(strftime('%%s', 'now') AS INTEGER) - 1 WHERE"
           " txn = '%s'",
           again);
  exec_sql("ro", sql);
  assert_int_equal(order_for(c, HDEV, dparams, "sho-b", again, "initial", NULL),
                   MCIM_NOT_ORDERED);
  snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM orders WHERE txn = '%s'", again);
  assert_int_equal(count_rows("sho-b", sql), 0);
  mcim_jose_key_free(c);
  json_decref(dparams);
  mcim_jose_key_free(a);
  mcim_jose_key_free(a2);
  mcim_jose_key_free(b);
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
  assert_int_equal(status, 403);
  /* a certificate of no SHO (the lab's admin), no certificate at all */
  assert_int_equal(req(mcim_lab_admin_client(lab), "POST", "ro", "/v1/drf/owner-queries",
                       json_incref(oqb), NULL, &status),
                   MCIM_FORBIDDEN);
  assert_int_equal(status, 403);
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
  const char *gone =
      "SELECT COUNT(*) FROM drf_orders WHERE txn = '0000000000000000000000000000a004'";
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
      cmocka_unit_test(test_orders_bounded),
      cmocka_unit_test(test_drf_orders_bounded),
      cmocka_unit_test(test_handover_ends_orders),
      cmocka_unit_test(test_provision_then_handover),
      cmocka_unit_test(test_orders_purged),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
