/* src/store/pg_channel.c, LISTEN/NOTIFY on a real PostgreSQL server (the ctest fixture "pg":
 * scripts/pg.sh), each case on a database of its own:
 *   - what one channel sends the other receives, in order (and its own sends come back to it:
 *     the caller tells them apart, src/roles/wake_relay.c);
 *   - a channel whose server connection is killed (pg_terminate_backend) says so (live false),
 *     listens again (live true), and receives what is sent after;
 *   - what is refused: a channel that is not an identifier, a payload over PostgreSQL's limit.
 * Without the server the test fails (pg_fixture.h), it never skips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mcim/util.h"
#include "pg_fixture.h"
#include "store/pg_channel.h"

#define MAX_MSGS 32

/* What one channel's callbacks saw, under `mu`. */
struct seen {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char msgs[MAX_MSGS][64];
  int nmsgs;
  int lives, deaths; /* on_live(true) and on_live(false) calls */
  bool live;
};

static void on_message(const char *payload, void *arg)
{
  struct seen *s = arg;
  pthread_mutex_lock(&s->mu);
  if (s->nmsgs < MAX_MSGS)
    snprintf(s->msgs[s->nmsgs++], sizeof(s->msgs[0]), "%s", payload);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_live(bool live, void *arg)
{
  struct seen *s = arg;
  pthread_mutex_lock(&s->mu);
  s->live = live;
  if (live)
    s->lives++;
  else
    s->deaths++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void seen_init(struct seen *s)
{
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &a);
  pthread_condattr_destroy(&a);
}

static void seen_fini(struct seen *s)
{
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
}

/* Wait (at most 10 s) until `pred(s)` holds; its value then. */
static bool wait_for(struct seen *s, bool (*pred)(const struct seen *, int), int n)
{
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&s->mu);
  bool ok;
  while (!(ok = pred(s, n)) && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
    ;
  pthread_mutex_unlock(&s->mu);
  return ok;
}

static bool lives_reach(const struct seen *s, int n) { return s->live && s->lives >= n; }
static bool deaths_reach(const struct seen *s, int n) { return s->deaths >= n; }
static bool msgs_reach(const struct seen *s, int n) { return s->nmsgs >= n; }

struct ctx {
  char db[64];
  char locator[512];
};

static int setup(void **state)
{
  static struct ctx c;
  memset(&c, 0, sizeof(c));
  if (!pg_fixture_create_db("pgchan", c.db, c.locator, sizeof(c.locator)))
    return -1;
  *state = &c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  pg_fixture_drop_db(c->db);
  return 0;
}

/* A channel on `name` whose callbacks record into `s` (initialised here), listening (live)
 * before it returns. */
static mcim_pg_channel_t *listening(const struct ctx *c, const char *name, struct seen *s)
{
  mcim_pg_channel_t *ch = NULL;
  seen_init(s);
  const struct mcim_pg_channel_cbs cbs = {on_message, on_live, s};
  assert_int_equal(mcim_pg_channel_open(c->locator, name, &cbs, &ch), MCIM_OK);
  assert_true(wait_for(s, lives_reach, 1));
  return ch;
}

static void test_send_receive(void **state)
{
  struct ctx *c = *state;
  struct seen a, b;
  mcim_pg_channel_t *ca = listening(c, "mcim_test", &a);
  mcim_pg_channel_t *cb = listening(c, "mcim_test", &b);

  assert_true(mcim_pg_channel_send(ca, "one"));
  assert_true(mcim_pg_channel_send(ca, "two"));
  assert_true(mcim_pg_channel_send(ca, "three"));
  assert_true(wait_for(&b, msgs_reach, 3));
  assert_string_equal(b.msgs[0], "one");
  assert_string_equal(b.msgs[1], "two");
  assert_string_equal(b.msgs[2], "three");
  assert_true(wait_for(&a, msgs_reach, 3)); /* its own come back too */
  assert_string_equal(a.msgs[0], "one");

  /* B sends, A receives */
  assert_true(mcim_pg_channel_send(cb, "from b"));
  assert_true(wait_for(&a, msgs_reach, 4));
  assert_string_equal(a.msgs[3], "from b");

  mcim_pg_channel_close(ca);
  mcim_pg_channel_close(cb);
  assert_int_equal(a.deaths, 1); /* closed: no longer live */
  seen_fini(&a);
  seen_fini(&b);
}

/* The server drops B's session: B says it is not live, listens again, and receives what A
 * sends after. */
static void test_connection_lost(void **state)
{
  struct ctx *c = *state;
  struct seen a, b;
  mcim_pg_channel_t *ca = listening(c, "mcim_lost", &a);
  mcim_pg_channel_t *cb = listening(c, "mcim_lost", &b);

  /* every listening session of this database: A's and B's */
  char sql[256];
  snprintf(sql, sizeof(sql),
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'"
           " AND application_name = 'mcim-listen'",
           c->db);
  assert_true(pg_fixture_admin(sql));
  assert_true(wait_for(&b, deaths_reach, 1));
  assert_true(wait_for(&b, lives_reach, 2)); /* listening again */
  assert_true(wait_for(&a, lives_reach, 2));

  assert_true(mcim_pg_channel_send(ca, "after"));
  assert_true(wait_for(&b, msgs_reach, 1));
  assert_string_equal(b.msgs[b.nmsgs - 1], "after");

  mcim_pg_channel_close(ca);
  mcim_pg_channel_close(cb);
  seen_fini(&a);
  seen_fini(&b);
}

static void test_refused(void **state)
{
  struct ctx *c = *state;
  struct seen a;
  seen_init(&a);
  mcim_pg_channel_t *ch = NULL;
  const struct mcim_pg_channel_cbs cbs = {on_message, on_live, &a};
  assert_int_equal(mcim_pg_channel_open(c->locator, "no; DROP TABLE x", &cbs, &ch),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_pg_channel_open(c->locator, "", &cbs, &ch), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_pg_channel_open(c->locator, "Upper", &cbs, &ch), MCIM_INVALID_ARGUMENT);
  assert_null(ch);
  assert_int_equal(mcim_pg_channel_open(c->locator, "mcim_refused", &cbs, &ch), MCIM_OK);
  static char big[8001];
  memset(big, 'x', sizeof(big) - 1);
  assert_false(mcim_pg_channel_send(ch, big)); /* over PostgreSQL's 8000 bytes */
  assert_false(mcim_pg_channel_send(NULL, "x"));
  mcim_pg_channel_close(ch);
  mcim_pg_channel_close(NULL);
  seen_fini(&a);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_send_receive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_lost, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
