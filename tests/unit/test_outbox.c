/* The outbox worker's rounds (src/roles/outbox.c, mcim_role_outbox_run) against a peer that
 * takes connections and never answers, so that every delivery lasts one peer timeout: a
 * round claims its messages together, sends while a delivery started then still ends inside
 * their lease, and releases the rest. Shown on a real PVA (its worker, its store), the
 * outbox read from the database meanwhile:
 *   - no claim is ever longer than two peer timeouts (a lease that grew with the position in
 *     the round held the last messages of a crashed instance for up to 17);
 *   - every message gets exactly one attempt, recorded with its cause: none is sent twice,
 *     none is lost by being released;
 *   - a round does not go on past its lease: while a message is out, the messages not yet
 *     tried are at most leased, and are released when the round ends.
 * Then against a stand-in of the peer that answers each message with the answer the message
 * names (mcim_outbox_outcome_for): a 409 CONFLICT or REPLAY is delivered at once; a 409
 * WRONG_STATE, DEVICE_BUSY or without a cause is retried, pending at every attempt, until the
 * outbox gives up (failed, with that cause, and no trace row saying OK); a 403 is final; a
 * message another instance claimed while it was out keeps that claim, with no outcome and no
 * trace row of this round.
 * Last, a message queued in a transaction is claimed by its writer's instance in that same
 * transaction (no claim of its own) and handed to its worker: an instance killed with SIGKILL
 * right after such a commit, its delivery under way, has it delivered by another instance on
 * the same database once its lease ends, exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
  /* the rows as read, judged once the query is over (see snapshot) */
  int n;
  int64_t attempts[64], next_at[64];
  bool cause[64];
};

static mcim_cause_t snap_row(const mcim_row_t *row, void *arg)
{
  struct snapshot *s = arg;
  const char *cause = mcim_row_text(row, 2);
  if (s->n == 64)
    return MCIM_TOO_LARGE;
  s->attempts[s->n] = mcim_row_int(row, 0);
  s->next_at[s->n] = mcim_row_int(row, 1);
  s->cause[s->n] = cause && *cause;
  s->n++;
  return MCIM_OK;
}

/* "Now" is read after the query: a claim the query saw was made before it ended, so its lease
 * is at most now + 2 x timeout. Read before the query, a claim made while the query ran
 * looked a millisecond longer than it was (601 ms seen once). */
static void snapshot(mcim_store_t *st, struct snapshot *s)
{
  memset(s, 0, sizeof(*s));
  assert_int_equal(mcim_store_exec(st,
                                   "SELECT attempts, next_at, last_cause FROM outbox"
                                   " WHERE peer = 'sho-a' AND state = 'pending'",
                                   NULL, 0, snap_row, s),
                   MCIM_OK);
  s->now_ms = mcim_now_us() / 1000;
  for (int i = 0; i < s->n; i++) {
    if (s->attempts[i] > s->attempts_max)
      s->attempts_max = (int)s->attempts[i];
    if (s->attempts[i] > 0) {
      s->attempted++;
      if (s->cause[i])
        s->with_cause++;
      continue;
    }
    s->pending_untried++;
    if (s->next_at[i] > s->now_ms) {
      s->leased_untried++;
      if (s->next_at[i] - s->now_ms > s->lease_max_ms)
        s->lease_max_ms = s->next_at[i] - s->now_ms;
    }
  }
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

/* ---- 409 answers, by their cause ---- */

#define TRIES 3 /* outbox_max_attempts of the second PVA */

/* What the stand-in answers, by the message's "answer"; what it saw, by the same index. */
static const struct answer {
  const char *name;
  mcim_cause_t cause; /* MCIM_OK: a 409 without a problem+json cause */
  const char *state, *last_cause; /* the outbox row at the end (last_cause NULL: none) */
  int attempts;
  /* answered 200 once the stand-in has given the row a lease of its own, as another
   * instance whose round claimed it after this one's lease ran out: the outcome and the
   * trace row are that instance's to write, so this round writes neither */
  bool taken;
} answers[] = {
    {"CONFLICT", MCIM_CONFLICT, "delivered", NULL, 1, false},
    {"REPLAY", MCIM_REPLAY, "delivered", NULL, 1, false},
    {"WRONG_STATE", MCIM_WRONG_STATE, "failed", "WRONG_STATE", TRIES, false},
    {"DEVICE_BUSY", MCIM_DEVICE_BUSY, "failed", "DEVICE_BUSY", TRIES, false},
    {"409", MCIM_OK, "failed", "PEER_ERROR", TRIES, false},
    {"FORBIDDEN", MCIM_FORBIDDEN, "failed", "FORBIDDEN", 1, false},
    {"TAKEN", MCIM_OK, "pending", NULL, 0, true},
};
#define NANSWERS (sizeof(answers) / sizeof(answers[0]))

static struct standin {
  pthread_mutex_t mu;
  int calls[NANSWERS];
  int not_pending; /* deliveries whose outbox row was not pending, at attempts = calls so far */
  int out_of_order; /* deliveries of a chained message before the one before it ended */
  /* per txn: calls, and whether an answer delivered it (test_chain_in_order) */
  char txn[16][33];
  int txn_calls[16];
  bool txn_done[16];
  size_t ntxn;
} peer = {.mu = PTHREAD_MUTEX_INITIALIZER};
static struct mcim_http_server *peer_srv;

struct orow {
  char state[16], cause[32];
  int64_t attempts;
  bool found;
};

static mcim_cause_t orow_cb(const mcim_row_t *row, void *arg)
{
  struct orow *o = arg;
  snprintf(o->state, sizeof(o->state), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  o->attempts = mcim_row_int(row, 1);
  snprintf(o->cause, sizeof(o->cause), "%s", mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  o->found = true;
  return MCIM_OK;
}

static struct orow outbox_row_of(mcim_store_t *st, const char *txn)
{
  struct orow o = {.found = false};
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  mcim_store_exec(st, "SELECT state, attempts, last_cause FROM outbox WHERE txn = ?", p, 1,
                  orow_cb, &o);
  return o;
}

/* POST /v1/verdicts of the stand-in: while the PVA waits for this answer, its row must be
 * pending with the attempts made before this one. */
static void h_answer(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  (void)ctx;
  const char *name = json_string_value(json_object_get(req->json, "answer"));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  size_t i = 0;
  while (i < NANSWERS && (!name || strcmp(answers[i].name, name) != 0))
    i++;
  if (i == NANSWERS || !txn) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0, "no such answer");
    return;
  }
  mcim_store_t *rd = lab_open_db(&lab, "pva");
  struct orow o = rd ? outbox_row_of(rd, txn) : (struct orow){.found = false};
  const char *after = json_string_value(json_object_get(req->json, "after_txn"));
  bool stolen = false;
  if (rd && answers[i].taken) { /* leased for an hour by "another instance" */
    mcim_val_t p[] = {MCIM_INT(mcim_now_us() / 1000 + 3600 * 1000), MCIM_TEXT(txn)};
    stolen = mcim_store_exec(rd, "UPDATE outbox SET next_at = ? WHERE txn = ?", p, 2, NULL, NULL) ==
                 MCIM_OK &&
             mcim_store_changes(rd) == 1;
  }
  mcim_store_close(rd);
  pthread_mutex_lock(&peer.mu);
  if (!o.found || strcmp(o.state, "pending") != 0 || o.attempts != peer.calls[i] ||
      (answers[i].taken && !stolen))
    peer.not_pending++;
  /* A chained message comes only once the one before it ended at this peer: delivered by an
   * answer, or given up after its TRIES attempts (the outbox may not have recorded it yet:
   * the round records its outcomes together, after sending). */
  if (after) {
    size_t k = 0;
    while (k < peer.ntxn && strcmp(peer.txn[k], after) != 0)
      k++;
    if (k == peer.ntxn || (!peer.txn_done[k] && peer.txn_calls[k] < TRIES))
      peer.out_of_order++;
  }
  size_t t = 0;
  while (t < peer.ntxn && strcmp(peer.txn[t], txn) != 0)
    t++;
  if (t == peer.ntxn && peer.ntxn < sizeof(peer.txn) / sizeof(peer.txn[0]))
    snprintf(peer.txn[peer.ntxn++], sizeof(peer.txn[0]), "%s", txn);
  if (t < peer.ntxn) {
    peer.txn_calls[t]++;
    peer.txn_done[t] = peer.txn_done[t] || answers[i].taken || answers[i].cause == MCIM_CONFLICT ||
                       answers[i].cause == MCIM_REPLAY;
  }
  peer.calls[i]++;
  pthread_mutex_unlock(&peer.mu);
  if (answers[i].taken)
    mcim_http_reply_json(resp, 200, json_pack("{s:s}", "state", "validated"));
  else if (answers[i].cause == MCIM_OK)
    mcim_http_reply_json(resp, 409, json_pack("{s:s}", "detail", "a 409 without a cause"));
  else
    mcim_http_reply_problem(resp, answers[i].cause, 11, "answered %s", answers[i].name);
}

static int setup_answers(void **state)
{
  static const char *const roles[] = {"pva", "sho-a"};
  static const struct mcim_http_route routes[] = {{"POST", "/v1/verdicts", h_answer, 0}};
  char cfg[256];
  (void)state;
  if (lab_init(&lab, roles, 2) != 0)
    return -1;
  uint16_t pva_port = lab_free_port(), peer_port = lab_free_port();
  if (!(peer_srv = lab_standin(&lab, "sho-a", peer_port, routes, 1, NULL)))
    return -1;
  lab_write_peers(&lab, "pva", (int)pva_port, "sho-a", (int)peer_port, (const char *)NULL);
  /* retried at once (10 ms, then 20 ms), given up after TRIES */
  json_t *extra = json_pack("{s:i,s:i,s:i,s:s}", "outbox_backoff_ms", 10, "outbox_max_attempts",
                            TRIES, "tick_ms", 10, "log_level", "error");
  lab_write_config(&lab, "pva", pva_port, extra, cfg, sizeof(cfg));
  json_decref(extra);
  return mcim_role_start(&mcim_role_pva, cfg, &pva) == MCIM_OK ? 0 : -1;
}

static int teardown_answers(void **state)
{
  (void)state;
  mcim_role_free(pva);
  mcim_http_server_free(peer_srv);
  lab_remove(&lab);
  return 0;
}

static mcim_cause_t count_cb(const mcim_row_t *row, void *arg)
{
  *(int64_t *)arg = mcim_row_int(row, 0);
  return MCIM_OK;
}

static void test_409_by_cause(void **state)
{
  (void)state;
  mcim_store_t *st = mcim_role_store(pva);
  assert_non_null(st);
  char txn[NANSWERS][33];
  for (size_t i = 0; i < NANSWERS; i++) {
    snprintf(txn[i], sizeof(txn[i]), "%032zx", i + 0x409);
    json_t *body = json_pack("{s:s,s:s}", "txn", txn[i], "answer", answers[i].name);
    assert_int_equal(mcim_role_outbox_put(pva, st, "sho-a", "/v1/verdicts", body, txn[i], 11,
                                          "PVA: verdict"),
                     MCIM_OK);
    json_decref(body);
  }
  mcim_role_wake(pva);

  /* until no message is pending (the outcomes are read from the store, not timed) */
  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  int64_t pending = -1, deadline = mcim_now_us() / 1000 + 30000;
  while (mcim_now_us() / 1000 < deadline) {
    /* the taken one stays pending (leased): it is counted out once it was sent */
    int64_t now_ms = mcim_now_us() / 1000;
    assert_int_equal(mcim_store_exec(rd,
                                     "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND"
                                     " next_at < ?",
                                     (mcim_val_t[]){MCIM_INT(now_ms + 600 * 1000)}, 1, count_cb,
                                     &pending),
                     MCIM_OK);
    if (pending == 0)
      break;
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(pending, 0);

  for (size_t i = 0; i < NANSWERS; i++) {
    const struct answer *a = &answers[i];
    struct orow o = outbox_row_of(rd, txn[i]);
    print_message("409 test: %-11s -> %s after %lld attempt(s), last_cause %s\n", a->name,
                  o.state, (long long)o.attempts, o.cause[0] ? o.cause : "-");
    assert_true(o.found);
    assert_string_equal(o.state, a->state);
    assert_int_equal(o.attempts, a->attempts);
    assert_string_equal(o.cause, a->last_cause ? a->last_cause : "");
    assert_int_equal(peer.calls[i], a->taken ? 1 : a->attempts);
    /* one trace row: OK (cause NULL) only when delivered; a given-up one says why */
    int64_t ok = -1, with_cause = -1;
    mcim_val_t p[] = {MCIM_TEXT(txn[i])};
    assert_int_equal(mcim_store_exec(rd,
                                     "SELECT COUNT(*) FROM trace WHERE txn = ? AND cause IS NULL",
                                     p, 1, count_cb, &ok),
                     MCIM_OK);
    mcim_val_t q[] = {MCIM_TEXT(txn[i]), MCIM_TEXT(a->last_cause ? a->last_cause : "")};
    assert_int_equal(mcim_store_exec(rd, "SELECT COUNT(*) FROM trace WHERE txn = ? AND cause = ?",
                                     q, 2, count_cb, &with_cause),
                     MCIM_OK);
    assert_int_equal(ok, a->last_cause || a->taken ? 0 : 1);
    assert_int_equal(with_cause, a->last_cause ? 1 : 0);
  }
  /* every delivery, the retried ones' last included, found its message pending */
  assert_int_equal(peer.not_pending, 0);
  mcim_store_close(rd);
}

/* Chains (mcim_role_outbox_put_chained; the RO's undo of a switch, relay.c): a message goes
 * only once the one written before it in its chain is delivered or given up. "a2" waits while
 * "a1" is retried (WRONG_STATE) until the outbox gives up on it, then goes; in chain b, "b2"
 * goes once "b1" is delivered, and "b3" only once "b2" is given up. All five are written in
 * one transaction (one millisecond, most likely: positions, not times, order a chain), so
 * their first round has them all, in the order written, and the one before counts as its
 * outcome in that round says. The stand-in checks at every delivery of a chained message
 * that the one before it ended. A held message counts no attempt. */
static bool chain_row_is(mcim_store_t *rd, const char *txn, const char *state, int64_t attempts)
{
  struct orow o = outbox_row_of(rd, txn);
  return o.found && strcmp(o.state, state) == 0 && o.attempts == attempts;
}

#define CTXN(s) "000000000000000000000000000c0" s

static void test_chain_in_order(void **state)
{
  (void)state;
  static const struct {
    const char *txn, *answer, *after, *chain, *end;
    int attempts;
  } m[] = {
      {CTXN("a01"), "WRONG_STATE", NULL, "chain-a", "failed", TRIES},
      {CTXN("a02"), "CONFLICT", CTXN("a01"), "chain-a", "delivered", 1},
      {CTXN("b01"), "REPLAY", NULL, "chain-b", "delivered", 1},
      {CTXN("b02"), "WRONG_STATE", CTXN("b01"), "chain-b", "failed", TRIES},
      {CTXN("b03"), "CONFLICT", CTXN("b02"), "chain-b", "delivered", 1},
  };
  const size_t n = sizeof(m) / sizeof(m[0]);
  mcim_store_t *st = mcim_role_store(pva);
  assert_non_null(st);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  for (size_t i = 0; i < n; i++) {
    json_t *body = json_pack("{s:s,s:s,s:s?}", "txn", m[i].txn, "answer", m[i].answer,
                             "after_txn", m[i].after);
    assert_int_equal(mcim_role_outbox_put_chained(pva, st, "sho-a", "/v1/verdicts", body,
                                                  m[i].txn, 11, "PVA: verdict", 0, m[i].chain),
                     MCIM_OK);
    json_decref(body);
  }
  assert_int_equal(mcim_store_commit(st), MCIM_OK);
  mcim_role_wake(pva);

  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  /* each message after the first of its chain names the one before it, at the next position */
  int64_t linked = -1;
  assert_int_equal(mcim_store_exec(rd,
                                   "SELECT COUNT(*) FROM outbox s JOIN outbox f"
                                   " ON s.after_id = f.id AND s.chain = f.chain"
                                   " AND s.chain_pos = f.chain_pos + 1"
                                   " WHERE s.chain IN ('chain-a', 'chain-b')",
                                   NULL, 0, count_cb, &linked),
                   MCIM_OK);
  assert_int_equal(linked, 3);
  int64_t deadline = mcim_now_us() / 1000 + 30000;
  bool done = false;
  while (!done && mcim_now_us() / 1000 < deadline) {
    done = true;
    for (size_t i = 0; i < n; i++)
      done = done && chain_row_is(rd, m[i].txn, m[i].end, m[i].attempts);
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  for (size_t i = 0; i < n; i++) {
    struct orow o = outbox_row_of(rd, m[i].txn);
    print_message("chain test: %s %s -> %s after %lld attempt(s), last_cause %s\n", m[i].chain,
                  m[i].txn + 29, o.state, (long long)o.attempts, o.cause[0] ? o.cause : "-");
  }
  assert_true(done);
  assert_int_equal(peer.out_of_order, 0);
  mcim_store_close(rd);
}

/* ---- claimed at writing, its instance killed ---- */

#define KILL_TIMEOUT_MS 1000 /* the first instance's peer timeout: its lease is twice that */

static struct {
  pthread_mutex_t mu;
  int calls;
  int64_t first_ms;
} taker = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void h_take(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  pthread_mutex_lock(&taker.mu);
  if (taker.calls++ == 0)
    taker.first_ms = mcim_now_us() / 1000;
  pthread_mutex_unlock(&taker.mu);
  mcim_http_reply_json(resp, 200, json_pack("{s:s}", "state", "validated"));
}

struct krow {
  char state[16];
  int64_t attempts, next_at, created;
  bool found;
};

static mcim_cause_t krow_cb(const mcim_row_t *row, void *arg)
{
  struct krow *k = arg;
  snprintf(k->state, sizeof(k->state), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  k->attempts = mcim_row_int(row, 1);
  k->next_at = mcim_row_int(row, 2);
  k->created = mcim_row_int(row, 3);
  k->found = true;
  return MCIM_OK;
}

static struct krow krow_of(mcim_store_t *st, const char *txn)
{
  struct krow k = {.found = false};
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  mcim_store_exec(st, "SELECT state, attempts, next_at, created FROM outbox WHERE txn = ?", p, 1,
                  krow_cb, &k);
  return k;
}

static void test_claimed_at_writing_survives_sigkill(void **state)
{
  static const char *const roles[] = {"pva", "sho-a"};
  static const struct mcim_http_route routes[] = {{"POST", "/v1/verdicts", h_take, 0}};
  const char *txn = "0000000000000000000000000000dead";
  char cfg[256];
  uint16_t hang_port = 0;
  (void)state;
  assert_int_equal(lab_init(&lab, roles, 2), 0);
  assert_true((hang_fd = hanging_listener(&hang_port)) >= 0);
  uint16_t pva_port = lab_free_port();
  lab_write_peers(&lab, "pva", (int)pva_port, "sho-a", (int)hang_port, (const char *)NULL);
  json_t *extra = json_pack("{s:i,s:i,s:s}", "peer_timeout_ms", KILL_TIMEOUT_MS, "tick_ms", 20,
                            "log_level", "error");
  lab_write_config(&lab, "pva", pva_port, extra, cfg, sizeof(cfg));
  json_decref(extra);

  /* The first instance, in a process of its own: the message queued in a transaction, whose
   * commit hands it to the worker (which starts sending it to a peer that never answers);
   * the process killed at once. */
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    struct mcim_role *first = NULL;
    if (mcim_role_start(&mcim_role_pva, cfg, &first) != MCIM_OK)
      _exit(3);
    mcim_store_t *st = mcim_role_store(first);
    json_t *body = json_pack("{s:s}", "txn", txn);
    if (!st || !body || mcim_store_begin(st) != MCIM_OK ||
        mcim_role_outbox_put(first, st, "sho-a", "/v1/verdicts", body, txn, 11, "PVA: verdict") !=
            MCIM_OK ||
        mcim_store_commit(st) != MCIM_OK)
      _exit(4);
    raise(SIGKILL);
    _exit(5);
  }
  int status = 0;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  /* what the dead instance left: the message pending, never tried, claimed as it was
   * written (leased for two of its peer timeouts) */
  mcim_store_t *rd = lab_open_db(&lab, "pva");
  assert_non_null(rd);
  struct krow k = krow_of(rd, txn);
  assert_true(k.found);
  assert_string_equal(k.state, "pending");
  assert_int_equal(k.attempts, 0);
  assert_int_equal(k.next_at - k.created, 2 * KILL_TIMEOUT_MS);

  /* another instance on the same database, the peer answering now */
  uint16_t peer_port = lab_free_port();
  struct mcim_http_server *srv = lab_standin(&lab, "sho-a", peer_port, routes, 1, NULL);
  assert_non_null(srv);
  lab_write_peers(&lab, "pva", (int)lab_free_port(), "sho-a", (int)peer_port, (const char *)NULL);
  extra = json_pack("{s:i,s:s}", "tick_ms", 20, "log_level", "error");
  lab_write_config(&lab, "pva", lab_free_port(), extra, cfg, sizeof(cfg));
  json_decref(extra);
  struct mcim_role *second = NULL;
  assert_int_equal(mcim_role_start(&mcim_role_pva, cfg, &second), MCIM_OK);
  int64_t deadline = mcim_now_us() / 1000 + 20000;
  while (mcim_now_us() / 1000 < deadline) {
    k = krow_of(rd, txn);
    if (strcmp(k.state, "pending") != 0)
      break;
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  mcim_role_free(second);
  mcim_http_server_free(srv);
  print_message("claimed at writing: delivered %lld ms after it was queued, its lease %d ms\n",
                (long long)(taker.first_ms - k.created), 2 * KILL_TIMEOUT_MS);
  assert_string_equal(k.state, "delivered");
  assert_int_equal(k.attempts, 1);
  assert_int_equal(taker.calls, 1);
  /* not before the dead instance's lease ended: nobody else takes a claimed message */
  assert_true(taker.first_ms >= k.created + 2 * KILL_TIMEOUT_MS);
  int64_t traced = -1;
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  assert_int_equal(mcim_store_exec(rd, "SELECT COUNT(*) FROM trace WHERE txn = ? AND cause IS NULL",
                                   p, 1, count_cb, &traced),
                   MCIM_OK);
  assert_int_equal(traced, 1);
  mcim_store_close(rd);
  close(hang_fd);
  hang_fd = -1;
  lab_remove(&lab);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rounds_against_a_hanging_peer),
  };
  const struct CMUnitTest answer_tests[] = {
      cmocka_unit_test(test_409_by_cause),
      cmocka_unit_test(test_chain_in_order),
  };
  const struct CMUnitTest kill_tests[] = {
      cmocka_unit_test(test_claimed_at_writing_survives_sigkill),
  };
  int failed = cmocka_run_group_tests(tests, setup, teardown);
  failed += cmocka_run_group_tests(answer_tests, setup_answers, teardown_answers);
  return failed + cmocka_run_group_tests(kill_tests, NULL, NULL);
}
