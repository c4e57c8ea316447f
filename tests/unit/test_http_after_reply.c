/* mcim_http_after_reply (src/net/http_server.c): what a request handler of the HTTPS server
 * leaves to run after its answer runs once the answer has reached the client, not before;
 * registered twice, it runs once; outside a handler it runs at once. The roles use it for
 * the worker's wake after a handler's commit (mcim_role_wake), so that the delivery the
 * commit queued does not compete with the answer for a core.
 *
 * The proof is an ordering, not a timing: the function left by the handler waits for the
 * client to say it has the answer. Run before the answer was sent (in the handler, or before
 * the send), it would wait in vain (until its 10 s deadline) and say so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "pva_m2mes_fixture.h"

static struct lab lab;
static struct mcim_http_server *srv;
static struct mcim_http_client *cli;
static char url[96];

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool client_has_answer; /* set by the client once mcim_http_request returned */
  int runs;               /* times the function ran */
  bool saw_answer;        /* the function found the client holding the answer */
} after = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void after_answer(void *arg)
{
  (void)arg;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&after.mu);
  while (!after.client_has_answer && pthread_cond_timedwait(&after.cond, &after.mu, &until) == 0) {
  }
  after.saw_answer = after.client_has_answer;
  after.runs++;
  pthread_cond_broadcast(&after.cond);
  pthread_mutex_unlock(&after.mu);
}

static void h_commit(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_after_reply(after_answer, &after);
  mcim_http_after_reply(after_answer, &after); /* the same again: still once */
  mcim_http_reply_json(resp, 200, json_pack("{s:s}", "state", "committed"));
}

static int setup(void **state)
{
  static const char *const roles[] = {"ro"};
  static const struct mcim_http_route routes[] = {{"POST", "/v1/commit", h_commit, 0}};
  (void)state;
  if (lab_init(&lab, roles, 1) != 0)
    return -1;
  uint16_t port = lab_free_port();
  if (!(srv = lab_standin(&lab, "ro", port, routes, 1, NULL)) || !(cli = lab_client(&lab, NULL)))
    return -1;
  snprintf(url, sizeof(url), "https://localhost:%u/v1/commit", (unsigned)port);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_client_free(cli);
  mcim_http_server_free(srv);
  lab_remove(&lab);
  return 0;
}

static void test_runs_after_the_answer(void **state)
{
  (void)state;
  struct mcim_http_result res = {0};
  json_t *body = json_pack("{s:s}", "txn", "0");
  assert_int_equal(mcim_http_request(cli, "POST", url, body, NULL, &res), MCIM_OK);
  assert_int_equal(res.status, 200);
  mcim_http_result_clear(&res);
  json_decref(body);
  pthread_mutex_lock(&after.mu);
  after.client_has_answer = true;
  pthread_cond_broadcast(&after.cond);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 20;
  while (after.runs == 0 && pthread_cond_timedwait(&after.cond, &after.mu, &until) == 0) {
  }
  int runs = after.runs;
  bool saw = after.saw_answer;
  pthread_mutex_unlock(&after.mu);
  assert_int_equal(runs, 1); /* it ran, once though left twice */
  assert_true(saw);          /* after the client had the answer */
}

static void test_outside_a_handler_at_once(void **state)
{
  (void)state;
  pthread_mutex_lock(&after.mu);
  after.client_has_answer = true; /* nothing to wait for here */
  int before = after.runs;
  pthread_mutex_unlock(&after.mu);
  mcim_http_after_reply(after_answer, &after);
  pthread_mutex_lock(&after.mu);
  int runs = after.runs;
  pthread_mutex_unlock(&after.mu);
  assert_int_equal(runs, before + 1); /* returned having run it */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_runs_after_the_answer),
      cmocka_unit_test(test_outside_a_handler_at_once),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
