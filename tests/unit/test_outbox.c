/* The outbox worker's rounds (src/roles/common.c, mcim_role_outbox_run) against a peer that
 * takes connections and never answers, so that every delivery lasts one peer timeout: a
 * round claims its messages together, sends while a delivery started then still ends inside
 * their lease, and releases the rest. Shown on a real PVA (its worker, its store), the
 * outbox read from the database meanwhile:
 *   - no claim is ever longer than two peer timeouts (a lease that grew with the position in
 *     the round held the last messages of a crashed instance for up to 17);
 *   - every message gets exactly one attempt, recorded with its cause: none is sent twice,
 *     none is lost by being released;
 *   - a round does not go on past its lease: while a message is out, the messages not yet
 *     tried are at most leased, and are released when the round ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pva_m2mes_fixture.h"
#include "roles/kinds.h"

#define MESSAGES 6
#define TIMEOUT_MS 300

static struct lab lab;
static struct mcim_role *pva;
static int hang_fd = -1;

/* A listening socket nobody accepts on: the kernel completes the TCP handshake, the TLS
 * handshake then waits for ever (until the client's timeout). */
static int hanging_listener(uint16_t *port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

static int setup(void **state)
{
  static const char *const roles[] = {"pva", "sho-a"};
  char cfg[256];
  uint16_t hang_port = 0;
  (void)state;
  if (lab_init(&lab, roles, 2) != 0 || (hang_fd = hanging_listener(&hang_port)) < 0)
    return -1;
  uint16_t pva_port = lab_free_port();
  lab_write_peers(&lab, "pva", (int)pva_port, "sho-a", (int)hang_port, (const char *)NULL);
  /* a failed delivery is retried only after 10 minutes: each message shows one attempt */
  json_t *extra = json_pack("{s:i,s:i,s:i,s:s}", "peer_timeout_ms", TIMEOUT_MS,
                            "outbox_backoff_ms", 600000, "outbox_max_attempts", 1000,
                            "log_level", "error");
  lab_write_config(&lab, "pva", pva_port, extra, cfg, sizeof(cfg));
  json_decref(extra);
  return mcim_role_start(&mcim_role_pva, cfg, &pva) == MCIM_OK ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_role_free(pva);
  if (hang_fd >= 0)
    close(hang_fd);
  lab_remove(&lab);
  return 0;
}

struct snapshot {
  int64_t now_ms;
  int attempted, pending_untried, leased_untried, attempts_max;
  int64_t lease_max_ms; /* the longest claim seen, from now */
  int with_cause;
};

static mcim_cause_t snap_row(const mcim_row_t *row, void *arg)
{
  struct snapshot *s = arg;
  int64_t attempts = mcim_row_int(row, 0), next_at = mcim_row_int(row, 1);
  const char *cause = mcim_row_text(row, 2);
  if (attempts > s->attempts_max)
    s->attempts_max = (int)attempts;
  if (attempts > 0) {
    s->attempted++;
    if (cause && *cause)
      s->with_cause++;
    return MCIM_OK;
  }
  s->pending_untried++;
  if (next_at > s->now_ms) {
    s->leased_untried++;
    if (next_at - s->now_ms > s->lease_max_ms)
      s->lease_max_ms = next_at - s->now_ms;
  }
  return MCIM_OK;
}

static void snapshot(mcim_store_t *st, struct snapshot *s)
{
  memset(s, 0, sizeof(*s));
  s->now_ms = mcim_now_us() / 1000;
  assert_int_equal(mcim_store_exec(st,
                                   "SELECT attempts, next_at, last_cause FROM outbox"
                                   " WHERE peer = 'sho-a' AND state = 'pending'",
                                   NULL, 0, snap_row, s),
                   MCIM_OK);
}

static void test_rounds_against_a_hanging_peer(void **state)
{
  (void)state;
  mcim_store_t *st = mcim_role_store(pva);
  assert_non_null(st);
  char txn[33];
  for (int i = 0; i < MESSAGES; i++) {
    snprintf(txn, sizeof(txn), "%032x", i + 1);
    json_t *body = json_pack("{s:s,s:i}", "txn", txn, "n", i);
    assert_int_equal(mcim_role_outbox_put(pva, st, "sho-a", "/v1/verdicts", body, txn, 11,
                                          "PVA: verdict"),
                     MCIM_OK);
    json_decref(body);
  }
  mcim_role_wake(pva);

  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  struct snapshot s;
  int64_t lease_max = 0, deadline = mcim_now_us() / 1000 + 30000;
  int samples = 0, out_with_leased = 0;
  for (;;) {
    snapshot(rd, &s);
    samples++;
    if (s.lease_max_ms > lease_max)
      lease_max = s.lease_max_ms;
    /* never a second attempt: the backoff is 10 minutes and nothing is sent twice */
    assert_true(s.attempts_max <= 1);
    if (s.leased_untried > 0)
      out_with_leased++;
    if (s.attempted == MESSAGES || s.now_ms > deadline)
      break;
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  print_message("%d samples, longest lease of an untried message %lld ms, %d samples with"
                " messages leased and untried\n",
                samples, (long long)lease_max, out_with_leased);
  /* every message tried once, each with its cause (the peer never answered) */
  assert_int_equal(s.attempted, MESSAGES);
  assert_int_equal(s.with_cause, MESSAGES);
  /* no claim longer than two peer timeouts (the clocks are the same: no skew to allow) */
  assert_true(lease_max <= 2 * TIMEOUT_MS);
  /* the rounds were seen holding untried messages (the check above had something to see) */
  assert_true(out_with_leased > 0);
  mcim_store_close(rd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rounds_against_a_hanging_peer),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
