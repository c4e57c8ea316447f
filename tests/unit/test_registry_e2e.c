/* Issue 8 on a real lab (mcimd processes on loopback, real TLS, real device agents): the
 * DRF's registry changes only on proof, and discovery is bound to the procedure. The hostile
 * parties are real clients holding a valid certificate of their role (sho-b registering for a
 * device it never installed on, or for sho-a; sho-b announcing step 8 to sho-a as the RO
 * does); every refusal is asserted by its cause.
 *   - step 14 / 15: a registration without proof (subscribed or preloaded with no install
 *     the DPF recorded, released of an entry not held, ordered, or for another SHO) is
 *     refused and leaves every store as it was;
 *   - a preload's install proves preloaded only: preloaded -> subscribed only after the
 *     device's switch; a retry of its own state is taken; registrations that overtook each
 *     other keep the newest (seq);
 *   - a step back to preloaded that overtook its registration is "not yet", never final; a
 *     `subscribed` whose proof was overtaken since is REGISTRATION_OVERTAKEN (409, changes
 *     nothing), and a discard receipt is relayed to an SHO whose registration never came;
 *   - step 7-8: the DRF answers ORDER_PENDING (503, Retry-After) to a device's discovery for
 *     a txn it holds no order of, while it holds another device's;
 *   - a device instructed before its order reached the DRF waits and completes once it is
 *     there; step 8's announcement is heard only from the RO, a repeat changes nothing, and
 *     an order again after a given-up announcement announces again, once.
 * The lab and the helpers are ownership_fixture.h's (shared with test_ownership_e2e.c). */
#define OWNERSHIP_LAB_DIR "/tmp/mcim-registry-XXXXXX"
#include "ownership_fixture.h"

/* ---- the DRF registry changes only on proof ---- */

/* An SHO's registration as `cli` sends it (POST ro /v1/drf/registrations): `sho` registers
 * `device` as `state` under `txn`, with `seq` (0: none) and `sho`'s lab endpoint. Its cause,
 * the HTTP status in *status. */
static mcim_cause_t register_at_drf(struct mcim_http_client *cli, const char *txn,
                                    const char *device, const char *sho, const char *state,
                                    json_int_t seq, long *status)
{
  json_t *b = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", device, "sho", sho,
                        "state", state, "endpoint", mcim_lab_url(lab, sho));
  if (seq)
    json_object_set_new(b, "seq", json_integer(seq));
  return req(cli, "POST", "ro", "/v1/drf/registrations", b, NULL, status);
}

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
    /* a release of an entry it does not hold (yet: its registration may have been
     * overtaken on the way) is "not yet", and changes nothing either */
    bool release = strcmp(states[i], "released") == 0;
    assert_int_equal(register_at_drf(sho_b_cli, txn, DEV, "sho-b", states[i], 0, &status),
                     release ? MCIM_REGISTRATION_PENDING : MCIM_NOT_PARTY);
    assert_int_equal(status, release ? 503 : 403);
  }
  /* "ordered" comes only as the owner's order */
  assert_int_equal(register_at_drf(sho_b_cli, txn, DEV, "sho-b", "ordered", 0, &status),
                   MCIM_INVALID_ARGUMENT);
  /* and nobody registers for another SHO */
  assert_int_equal(register_at_drf(sho_b_cli, txn, DEV, "sho-a", "released", 0, &status),
                   MCIM_FORBIDDEN);
  assert_unchanged(before, "registrations without proof");
}

/* An SHO holding a pre-provisioned MCIM cannot make itself the device's SHO on its own
 * word: preloaded -> subscribed needs the device's switch (its TRE-signed resume notice,
 * relayed by the RO for that txn). A retry of its own state and stepping back stay allowed. */
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
  assert_int_equal(register_at_drf(sho_b_cli, preload_txn, "pdev1", "sho-b", "subscribed", 0,
                                   &status),
                   MCIM_NOT_PARTY);
  free(preload_txn);
  new_txn(txn);
  assert_int_equal(register_at_drf(sho_b_cli, txn, "pdev1", "sho-b", "subscribed", 0, &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND"
                                    " sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  /* its own state again is a retry */
  assert_int_equal(register_at_drf(sho_b_cli, txn, "pdev1", "sho-b", "preloaded", 0, &status),
                   MCIM_OK);
  /* Registrations that overtook each other: the entry keeps the newest `seq` (the SHO's
   * time of deciding); an older one is answered as done ("superseded") and changes
   * nothing. */
  json_int_t newest = (json_int_t)mcim_now_us();
  assert_int_equal(
      register_at_drf(sho_b_cli, txn, "pdev1", "sho-b", "preloaded", newest, &status), MCIM_OK);
  assert_int_equal(register_at_drf(sho_b_cli, txn, "pdev1", "sho-b", "released",
                                   newest - 1000000, &status),
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
  /* sho-a, switched away from, cannot make itself subscribed again with its initial's txn:
   * the RO relayed the device's resume to sho-b after that install (set back a few seconds:
   * "after" is to the second) */
  char *initial = text_row("ro", "SELECT txn FROM dpf_packages WHERE device = 'pdev1' AND"
                                 " sho = 'sho-a' AND state = 'installed'");
  char sql[200];
  snprintf(sql, sizeof(sql), "UPDATE dpf_packages SET updated = updated - 10 WHERE txn = '%s'",
           initial);
  exec_sql("ro", sql);
  assert_int_equal(register_at_drf(sho_a_cli, initial, "pdev1", "sho-a", "subscribed",
                                   (json_int_t)mcim_now_us(), &status),
                   MCIM_REGISTRATION_OVERTAKEN);
  /* nor once the relay's stored answer is gone (answer_retention, a day): the RO keeps the
   * switch itself as long as the install it overtakes (before 2026-12-07 it was taken) */
  exec_sql("ro", "DELETE FROM answers WHERE what LIKE 'notice/pdev1/%'");
  assert_int_equal(register_at_drf(sho_a_cli, initial, "pdev1", "sho-a", "subscribed",
                                   (json_int_t)mcim_now_us(), &status),
                   MCIM_REGISTRATION_OVERTAKEN);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev1' AND"
                                    " state = 'subscribed'"),
                   1);
  free(initial);
}

/* Waits until the RO's registry holds `device` at `sho` in `state` (the SHO's registration
 * travels through its outbox after the procedure's end). */
static void await_entry(const char *device, const char *sho, const char *state)
{
  char q[256];
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM drf WHERE device = '%s' AND sho = '%s' AND state = '%s'",
           device, sho, state);
  for (int waited = 0; waited < 30000 && count_rows("ro", q) == 0; waited += 50)
    usleep(50 * 1000);
  if (count_rows("ro", q) != 1)
    fail_msg("%s never became %s at %s", device, state, sho);
}

/* A switch's proof is overtaken too: sho-b, which the device switched to and then away from
 * (back to sho-a), cannot make itself `subscribed` again with its first switch's txn (before
 * 2026-12-07 it could while the relay's stored answer lived, and the device had two
 * subscribed entries). The first switch is set a few seconds back: "later" is to the
 * second. */
static void test_stale_switch_proof(void **state)
{
  long status = 0;
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "pdev4", false), MCIM_OK);
  run_ok("pdev4", "initial", "sho-a");
  run_ok("pdev4", "preload", "sho-b");
  run_ok("pdev4", "switch", "sho-b");
  await_entry("pdev4", "sho-b", "subscribed");
  char *first = text_row("ro", "SELECT txn FROM drf_switches WHERE device = 'pdev4' AND"
                               " sho = 'sho-b'");
  exec_sql("ro", "UPDATE drf_switches SET relayed = relayed - 10 WHERE device = 'pdev4'");
  exec_sql("ro", "UPDATE dpf_packages SET updated = updated - 20 WHERE device = 'pdev4'");
  run_ok("pdev4", "switch", "sho-a");
  await_entry("pdev4", "sho-a", "subscribed");
  await_entry("pdev4", "sho-b", "preloaded");
  assert_int_equal(register_at_drf(sho_b_cli, first, "pdev4", "sho-b", "subscribed",
                                   (json_int_t)mcim_now_us(), &status),
                   MCIM_REGISTRATION_OVERTAKEN);
  assert_int_equal(status, 409);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'pdev4' AND"
                                    " state = 'subscribed'"),
                   1);
  /* one record per (device, SHO): the switch back to sho-a is sho-a's */
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf_switches WHERE device = 'pdev4'"),
                   2);
  free(first);
}

/* A step back to preloaded that overtook the registration it steps back from (the install's
 * `subscribed`, still in the SHO's outbox; a switch's suspend reaches the SHO straight from
 * the device, so nothing orders the two): taken, since an install of that SHO's MCIM on the
 * device is on record, and the older `subscribed` that lands after it is superseded by
 * `seq`. Refused as final (before 2026-12-06), the older `subscribed` arrived after it and
 * stood for good (the device then held two subscribed entries: integration/hlr_scale_out
 * under load). The entry is taken out of the RO's store to stand for "not arrived yet": the
 * outbox cannot be held back from outside. */
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
  assert_int_equal(
      register_at_drf(sho_a_cli, txn, "pdev2", "sho-a", "preloaded", decided, &status), MCIM_OK);
  /* the older registration arrives: answered as done, the newer stands */
  assert_int_equal(register_at_drf(sho_a_cli, installed, "pdev2", "sho-a", "subscribed",
                                   decided - 1000000, &status),
                   MCIM_OK);
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM drf WHERE device = 'pdev2' AND sho = 'sho-a' AND"
           " state = 'preloaded' AND seq = %lld",
           (long long)decided);
  assert_int_equal(count_rows("ro", sql), 1);
  /* an SHO with no install on this device is still refused for good */
  assert_int_equal(register_at_drf(sho_b_cli, txn, "pdev2", "sho-b", "preloaded", 0, &status),
                   MCIM_NOT_PARTY);
  assert_int_equal(status, 403);
  free(installed);
}

/* An SHO the device moved away from cannot make itself `subscribed` again with its old
 * install's txn: the RO recorded another SHO's install after it (the change), which the SHO
 * cannot forge. Before 2026-12-06 it could, and the device had two subscribed entries. Its
 * release, and a release of an entry it never got (its `subscribed` refused as overtaken, an
 * install of it on record), are taken. The first install is set a few seconds back: "later"
 * is to the second, and a lab runs both procedures within one. */
static void test_stale_install_proof(void **state)
{
  char sql[300];
  long status = 0;
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "sdev1", false), MCIM_OK);
  run_ok("sdev1", "initial", "sho-a");
  char *first = text_row("ro", "SELECT txn FROM dpf_packages WHERE device = 'sdev1' AND"
                               " sho = 'sho-a' AND state = 'installed'");
  snprintf(sql, sizeof(sql), "UPDATE dpf_packages SET updated = updated - 10 WHERE txn = '%s'",
           first);
  exec_sql("ro", sql);
  struct mcim_lab_run run = {.device = "sdev1", .procedure = "change", .sho = "sho-b",
                             .via = "old-sho", .timeout_s = 60};
  struct mcim_lab_run_result res;
  if (mcim_lab_run(lab, &run, &res) != MCIM_OK)
    fail_msg("change sdev1 to sho-b: %s (%s)", res.result, res.detail);
  mcim_lab_run_result_clear(&res);
  const char *a_released = "SELECT COUNT(*) FROM drf WHERE device = 'sdev1' AND sho = 'sho-a'"
                           " AND state = 'released'";
  for (int waited = 0; waited < 30000 && count_rows("ro", a_released) == 0; waited += 50)
    usleep(50 * 1000);
  assert_int_equal(count_rows("ro", a_released), 1);
  assert_int_equal(register_at_drf(sho_a_cli, first, "sdev1", "sho-a", "subscribed",
                                   (json_int_t)mcim_now_us(), &status),
                   MCIM_REGISTRATION_OVERTAKEN);
  assert_int_equal(status, 409);
  assert_int_equal(count_rows("ro", a_released), 1);
  assert_int_equal(count_rows("ro", "SELECT COUNT(*) FROM drf WHERE device = 'sdev1' AND"
                                    " state = 'subscribed'"),
                   1);
  /* without its entry (its own `subscribed` refused so), sho-a's release is taken */
  exec_sql("ro", "DELETE FROM drf WHERE device = 'sdev1' AND sho = 'sho-a'");
  assert_int_equal(register_at_drf(sho_a_cli, first, "sdev1", "sho-a", "released",
                                   (json_int_t)mcim_now_us(), &status),
                   MCIM_OK);
  assert_int_equal(count_rows("ro", a_released), 1);
  free(first);
}

/* The pristine path's deferred discard notice reaches the old SHO even when the old SHO's
 * own `subscribed` never reached the DRF: the RO relays a discard receipt on the install it
 * recorded. Before, it answered REGISTRATION_PENDING until that registration came; when it
 * came after the new SHO's install it was refused as overtaken, so it never came, and the old
 * SHO kept the subscription active beside the new one (integration/scale_out, with sho-a's
 * registration in the outbox of an instance killed). The entry is taken out of the RO's store
 * to stand for "not arrived": the outbox cannot be held back from outside. */
static void test_discard_without_registration(void **state)
{
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "sdev2", false), MCIM_OK);
  run_ok("sdev2", "initial", "sho-a");
  await_entry("sdev2", "sho-a", "subscribed");
  exec_sql("ro", "DELETE FROM drf WHERE device = 'sdev2'");
  struct mcim_lab_run run = {.device = "sdev2", .procedure = "change", .sho = "sho-b",
                             .via = "pristine", .timeout_s = 60};
  struct mcim_lab_run_result res;
  if (mcim_lab_run(lab, &run, &res) != MCIM_OK)
    fail_msg("change sdev2 to sho-b (pristine): %s (%s)", res.result, res.detail);
  mcim_lab_run_result_clear(&res);
  const char *a_active = "SELECT COUNT(*) FROM auc WHERE device = 'sdev2' AND state = 'active'";
  for (int waited = 0; waited < 30000 && count_rows("sho-a", a_active) != 0; waited += 50)
    usleep(50 * 1000);
  assert_int_equal(count_rows("sho-a", a_active), 0);
  assert_int_equal(count_rows("sho-b", a_active), 1);
  /* sho-a's release is taken on its install (no entry of its own) */
  await_entry("sdev2", "sho-a", "released");
}

/* ---- discovery is bound to the procedure ---- */

/* The owner instructs the device before ordering (seed step 2 before step 1 reached the
 * DRF): the DRF answers "not yet" (ORDER_PENDING, Retry-After) and the device keeps asking
 * until the order is there, then completes the procedure. */
static void test_device_waits_for_order(void **state)
{
  struct mcim_http_client *dev = NULL;
  char txn[33], stage[32], cause[128], result[48];
  mcim_jose_key_t *wowner = NULL;
  json_t *wparams = NULL;
  (void)state;
  device_and_owner("wdev1", &wowner, &wparams);
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
  /* Another device's order at the DRF (DEV's, at sho-a), placed here: when this test was in
   * test_ownership_e2e.c it counted on test_order_read's, which ran before it. */
  char other[33];
  long status = 0;
  new_txn(other);
  assert_int_equal(post_order(owner, "sho-a", "sho-a", other, &status), MCIM_OK);
  assert_int_equal(status, 201);
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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registrations),
      cmocka_unit_test(test_discovery_pending),
      cmocka_unit_test(test_preloaded_promotion),
      cmocka_unit_test(test_preloaded_overtaken),
      cmocka_unit_test(test_stale_install_proof),
      cmocka_unit_test(test_stale_switch_proof),
      cmocka_unit_test(test_discard_without_registration),
      cmocka_unit_test(test_device_waits_for_order),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
