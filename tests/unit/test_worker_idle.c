/* The worker's polls of the store back off while they find nothing
 * (src/roles/runtime_worker.c, mcim_role_worker_main; `idle_tick_max_ms`), and what must not
 * wait still does not. Shown on a real PVA (its worker, its SQLite store) delivering to a
 * stand-in SHO that records when each message arrives:
 *   - idle, the interval between polls doubles from tick_ms up to idle_tick_max_ms, and no
 *     two polls then come closer than that: the worker asks its store nothing in between;
 *   - a message handed by its writer's commit is sent at once, not at the next poll;
 *   - a delivery that fails is retried when its backoff says (outbox_backoff_ms), not at the
 *     next poll;
 *   - a message a dead instance left claimed is sent when its lease ends, not at the next
 *     poll after that (each poll reads when the next message in the store comes due);
 *   - a message found only by a look in the store (written by another instance, as a dead
 *     instance's message is once its lease ends) is sent by the first poll after it was
 *     written: at most idle_tick_max_ms later.
 * Waits are for what the PVA does (read from the stand-in and the worker's counters, with a
 * deadline), not fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "pva_m2mes_fixture.h"
#include "roles/kinds.h"
#include "roles/role_priv.h"

#define TICK_MS 10
#define IDLE_MAX_MS 4000
#define BACKOFF_MS 300 /* the first retry's delay */

static struct lab lab;
static struct mcim_role *pva;
static struct mcim_http_server *sho;

/* What the stand-in saw: each arrival's txn, wall-clock time and the worker's poll count. */
static struct {
  pthread_mutex_t mu;
  int n;
  char txn[16][33];
  int64_t at_ms[16];
  uint64_t polls[16];
  int refused; /* "retry" messages answered 500 so far (the first attempt of each) */
  char refused_txn[16][33];
} seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void h_verdict(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  (void)ctx;
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *mode = json_string_value(json_object_get(req->json, "mode"));
  uint64_t polls = 0;
  int64_t period = 0;
  mcim_role_worker_polls(pva, &polls, &period);
  pthread_mutex_lock(&seen.mu);
  bool refuse = mode && strcmp(mode, "retry") == 0 && txn && seen.refused < 16;
  for (int i = 0; refuse && i < seen.refused; i++)
    refuse = strcmp(seen.refused_txn[i], txn) != 0;
  if (seen.n < 16) {
    snprintf(seen.txn[seen.n], sizeof(seen.txn[0]), "%s", txn ? txn : "");
    seen.at_ms[seen.n] = mcim_now_us() / 1000;
    seen.polls[seen.n] = polls;
    seen.n++;
  }
  if (refuse)
    snprintf(seen.refused_txn[seen.refused++], sizeof(seen.refused_txn[0]), "%s", txn);
  pthread_mutex_unlock(&seen.mu);
  if (refuse)
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 11, "not now (test)");
  else
    mcim_http_reply_json(resp, 200, json_pack("{s:s}", "state", "validated"));
}

static int setup(void **state)
{
  static const char *const roles[] = {"pva", "sho-a"};
  static const struct mcim_http_route routes[] = {{"POST", "/v1/verdicts", h_verdict, 0}};
  char cfg[256];
  (void)state;
  if (lab_init(&lab, roles, 2) != 0)
    return -1;
  uint16_t pva_port = lab_free_port(), sho_port = lab_free_port();
  if (!(sho = lab_standin(&lab, "sho-a", sho_port, routes, 1, NULL)))
    return -1;
  lab_write_peers(&lab, "pva", (int)pva_port, "sho-a", (int)sho_port, (const char *)NULL);
  json_t *extra = json_pack("{s:i,s:i,s:i,s:s}", "tick_ms", TICK_MS, "idle_tick_max_ms",
                            IDLE_MAX_MS, "outbox_backoff_ms", BACKOFF_MS, "log_level", "error");
  lab_write_config(&lab, "pva", pva_port, extra, cfg, sizeof(cfg));
  json_decref(extra);
  return mcim_role_start(&mcim_role_pva, cfg, &pva) == MCIM_OK ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_role_free(pva);
  mcim_http_server_free(sho);
  lab_remove(&lab);
  return 0;
}

static int64_t now_ms(void) { return (int64_t)(mcim_monotonic_ns() / 1000000u); }

static void pause_ms(long ms)
{
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

/* Until the worker's polls have backed off all the way (deadline: the doublings' sum, 8 s). */
static void wait_backed_off(void)
{
  uint64_t polls = 0;
  int64_t period = 0, deadline = now_ms() + 30000;
  do {
    mcim_role_worker_polls(pva, &polls, &period);
    if (period == IDLE_MAX_MS)
      return;
    pause_ms(10);
  } while (now_ms() < deadline);
  fail_msg("the worker's poll period is %lld ms after 30 s idle, not %d", (long long)period,
           IDLE_MAX_MS);
}

/* Until the stand-in has seen `n` arrivals (deadline 30 s). */
static void wait_seen(int n)
{
  int64_t deadline = now_ms() + 30000;
  for (;;) {
    pthread_mutex_lock(&seen.mu);
    int got = seen.n;
    pthread_mutex_unlock(&seen.mu);
    if (got >= n)
      return;
    if (now_ms() >= deadline)
      fail_msg("the stand-in saw %d message(s) in 30 s, not %d", got, n);
    pause_ms(5);
  }
}

static void put_handed(const char *txn, const char *mode)
{
  mcim_store_t *st = mcim_role_store(pva);
  assert_non_null(st);
  json_t *body = json_pack("{s:s,s:s}", "txn", txn, "mode", mode);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(
      mcim_role_outbox_put(pva, st, "sho-a", "/v1/verdicts", body, txn, 11, "PVA: verdict"),
      MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK); /* handed to the worker here */
  json_decref(body);
  mcim_role_store_release(pva);
}

static void test_idle_polls_back_off(void **state)
{
  (void)state;
  wait_backed_off();
  uint64_t p0 = 0, p = 0;
  int64_t period = 0;
  mcim_role_worker_polls(pva, &p0, &period);
  int64_t t0 = now_ms();
  /* two more polls: the second comes at least 2 x IDLE_MAX_MS after the poll counted in p0,
   * which was at most IDLE_MAX_MS before t0 */
  int64_t deadline = t0 + 30000;
  do {
    pause_ms(10);
    mcim_role_worker_polls(pva, &p, &period);
  } while (p < p0 + 2 && now_ms() < deadline);
  int64_t took = now_ms() - t0;
  print_message("idle: polls %llu -> %llu in %lld ms (period %lld ms; at tick_ms %d: %lld)\n",
                (unsigned long long)p0, (unsigned long long)p, (long long)took, (long long)period,
                TICK_MS, (long long)(took / TICK_MS));
  assert_true(p >= p0 + 2);
  assert_true(took >= IDLE_MAX_MS);
  assert_int_equal(period, IDLE_MAX_MS);
  /* nothing was sent meanwhile */
  assert_int_equal(seen.n, 0);
}

static void test_handed_message_at_once(void **state)
{
  (void)state;
  wait_backed_off();
  int64_t t0 = mcim_now_us() / 1000;
  put_handed("00000000000000000000000000handed", "ok");
  wait_seen(1);
  int64_t took = seen.at_ms[0] - t0;
  print_message("handed: sent %lld ms after its commit (poll period %d ms)\n", (long long)took,
                IDLE_MAX_MS);
  assert_string_equal(seen.txn[0], "00000000000000000000000000handed");
  /* not at the next poll, which was up to IDLE_MAX_MS away */
  assert_true(took < IDLE_MAX_MS / 2);
}

static void test_retry_when_due(void **state)
{
  (void)state;
  wait_backed_off();
  put_handed("000000000000000000000000000retry", "retry");
  wait_seen(3); /* the refused attempt, then the retry */
  int64_t gap = seen.at_ms[2] - seen.at_ms[1];
  print_message("retry: again %lld ms after the refused attempt (backoff %d ms, poll period "
                "%d ms)\n",
                (long long)gap, BACKOFF_MS, IDLE_MAX_MS);
  assert_string_equal(seen.txn[1], "000000000000000000000000000retry");
  assert_string_equal(seen.txn[2], "000000000000000000000000000retry");
  assert_int_equal(seen.refused, 1);
  /* when due, not before (times of arrival at the stand-in: each delivery's own few ms on
   * either side), and not at the next poll either */
  assert_true(gap >= BACKOFF_MS * 3 / 4);
  assert_true(gap < IDLE_MAX_MS / 2);
}

/* A message another instance claimed and then died with (pending, leased): sent when the lease
 * ends, not at the first poll after that (up to IDLE_MAX_MS later). The poll before the end
 * reads when the next message in the store comes due. */
static void test_lease_end_when_due(void **state)
{
  (void)state;
  const char *txn = "000000000000000000000000000lease";
  wait_backed_off();
  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  int64_t now = mcim_now_us() / 1000, lease = now + IDLE_MAX_MS + 1000; /* a poll comes first */
  mcim_val_t v[] = {MCIM_TEXT(txn),
                    MCIM_TEXT("{\"txn\":\"000000000000000000000000000lease\",\"mode\":\"ok\"}"),
                    MCIM_TEXT(txn), MCIM_INT(lease), MCIM_INT(now)};
  assert_int_equal(mcim_store_exec(rd,
                                   "INSERT INTO outbox (id, peer, path, body, txn, step, msg,"
                                   " state, attempts, next_at, created) VALUES (?, 'sho-a',"
                                   " '/v1/verdicts', ?, ?, 11, 'PVA: verdict', 'pending', 0, ?,"
                                   " ?)",
                                   v, MCIM_NPARAMS(v), NULL, NULL),
                   MCIM_OK);
  mcim_store_close(rd);
  wait_seen(4);
  print_message("a dead instance's lease: sent %lld ms after it ended (poll period %d ms)\n",
                (long long)(seen.at_ms[3] - lease), IDLE_MAX_MS);
  assert_string_equal(seen.txn[3], txn);
  assert_true(seen.at_ms[3] >= lease); /* nobody takes a claimed message */
  assert_true(seen.at_ms[3] - lease < IDLE_MAX_MS / 4);
}

static void test_found_by_the_next_poll(void **state)
{
  (void)state;
  const char *txn = "0000000000000000000000000written";
  wait_backed_off();
  /* as another instance leaves it: pending, due now, not handed to this one */
  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  uint64_t p0 = 0;
  int64_t period = 0;
  mcim_role_worker_polls(pva, &p0, &period);
  int64_t t0 = mcim_now_us() / 1000;
  mcim_val_t v[] = {MCIM_TEXT(txn),
                    MCIM_TEXT("{\"txn\":\"0000000000000000000000000written\","
                              "\"mode\":\"ok\"}"),
                    MCIM_TEXT(txn), MCIM_INT(t0), MCIM_INT(t0)};
  assert_int_equal(mcim_store_exec(rd,
                                   "INSERT INTO outbox (id, peer, path, body, txn, step, msg,"
                                   " state, attempts, next_at, created) VALUES (?, 'sho-a',"
                                   " '/v1/verdicts', ?, ?, 11, 'PVA: verdict', 'pending', 0, ?,"
                                   " ?)",
                                   v, MCIM_NPARAMS(v), NULL, NULL),
                   MCIM_OK);
  mcim_store_close(rd);
  wait_seen(5);
  int64_t took = seen.at_ms[4] - t0;
  print_message("written by another: sent %lld ms after it was written, at poll %llu (%llu "
                "when written)\n",
                (long long)took, (unsigned long long)seen.polls[4], (unsigned long long)p0);
  assert_string_equal(seen.txn[4], txn);
  /* by the first poll after it was written (one may have been under way then: + 1) */
  assert_true(seen.polls[4] <= p0 + 1);
  assert_true(took <= IDLE_MAX_MS + IDLE_MAX_MS / 2);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_polls_back_off),    cmocka_unit_test(test_handed_message_at_once),
      cmocka_unit_test(test_retry_when_due),         cmocka_unit_test(test_lease_end_when_due),
      cmocka_unit_test(test_found_by_the_next_poll),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
