/* The SHO's decision clock (src/roles/sho/sho.c, mcim_sho_decision_us), on SQLite and on
 * PostgreSQL (the server of the ctest fixture "pg"). The RO orders an SHO's registrations of
 * a device by their seq and revokes the SHO's tokens issued before a release by their
 * iat_us; both come from this clock, so that the SHO's instances' own clocks are no part of
 * that order (before 2026-12-07 each instance stamped them with its own microsecond clock:
 * one ahead of another could have its older registration kept as the newer). Checked:
 *  - a tick is now when nothing later was decided, and later than the last tick always;
 *  - after an instance whose clock is 10 s ahead decided, the next tick of any instance is
 *    one microsecond after that, not its own now;
 *  - two instances (two connections to one database) ticking at once, each in transactions
 *    of its own and inside a caller's, while the clock is ahead of theirs: together they get
 *    exactly the next 2 x 200 microseconds, none twice, none lost, and each sees its own
 *    ticks rise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mcim/role.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "pg_fixture.h"
#include "roles/kinds.h"
#include "roles/role_priv.h"
#include "roles/sho/sho.h"

#define TICKS 200

static mcim_store_t *open_sho(const char *locator)
{
  mcim_store_t *st = NULL;
  assert_int_equal(mcim_store_open(locator, NULL, &st), MCIM_OK);
  assert_int_equal(mcim_role_common_migrate(st), MCIM_OK);
  assert_int_equal(mcim_store_migrate(st, "sho", mcim_role_sho.migrations,
                                      mcim_role_sho.nmigrations),
                   MCIM_OK);
  return st;
}

static void set_last(mcim_store_t *st, int64_t us)
{
  mcim_val_t p[] = {MCIM_INT(us)};
  assert_int_equal(mcim_store_exec(st, "UPDATE counters SET value = ? WHERE name = 'decision_us'",
                                   p, 1, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_store_changes(st), 1);
}

/* One instance's ticks: every other one inside a transaction of the caller's (as a
 * registration is), the others in the clock's own. */
struct instance {
  pthread_t th;
  const char *locator;
  int64_t ticks[TICKS];
  mcim_cause_t rc;
};

static void *instance_main(void *arg)
{
  struct instance *in = arg;
  mcim_store_t *st = NULL;
  in->rc = mcim_store_open(in->locator, NULL, &st);
  for (int i = 0; i < TICKS && in->rc == MCIM_OK; i++) {
    bool caller = i % 2 == 1;
    if (caller && (in->rc = mcim_store_begin(st)) != MCIM_OK)
      break;
    in->rc = mcim_sho_decision_us(st, &in->ticks[i]);
    if (caller)
      in->rc = in->rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), in->rc);
  }
  mcim_store_close(st);
  return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void clock_on(const char *locator)
{
  mcim_store_t *st = open_sho(locator);
  int64_t a = 0, b = 0, before = mcim_now_us();
  assert_int_equal(mcim_sho_decision_us(st, &a), MCIM_OK);
  assert_int_equal(mcim_sho_decision_us(st, &b), MCIM_OK);
  assert_true(a >= before && a <= mcim_now_us());
  assert_true(b > a);

  /* an instance 10 s ahead decided: the others follow it, not their own clocks */
  int64_t ahead = mcim_now_us() + 10 * 1000000;
  set_last(st, ahead);
  assert_int_equal(mcim_sho_decision_us(st, &a), MCIM_OK);
  assert_int_equal(a, ahead + 1);
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_sho_decision_us(st, &b), MCIM_OK);
  assert_int_equal(mcim_store_commit(st), MCIM_OK);
  assert_int_equal(b, ahead + 2);
  /* a tick rolled back with its transaction leaves the clock where it was */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  assert_int_equal(mcim_sho_decision_us(st, &b), MCIM_OK);
  mcim_store_rollback(st);
  assert_int_equal(mcim_sho_decision_us(st, &b), MCIM_OK);
  assert_int_equal(b, ahead + 3);

  /* two instances at once, the clock a minute ahead of theirs: every tick is last + 1, so a
   * tick read outside the writers' lock would repeat one, and a lost update show a gap */
  ahead = mcim_now_us() + 60 * 1000000;
  set_last(st, ahead);
  struct instance in[2] = {{.locator = locator}, {.locator = locator}};
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&in[i].th, NULL, instance_main, &in[i]), 0);
  int64_t all[2 * TICKS];
  for (int i = 0; i < 2; i++) {
    assert_int_equal(pthread_join(in[i].th, NULL), 0);
    assert_int_equal(in[i].rc, MCIM_OK);
    for (int t = 0; t < TICKS; t++) {
      if (t > 0)
        assert_true(in[i].ticks[t] > in[i].ticks[t - 1]);
      all[i * TICKS + t] = in[i].ticks[t];
    }
  }
  qsort(all, 2 * TICKS, sizeof(all[0]), cmp_i64);
  for (int t = 0; t < 2 * TICKS; t++)
    if (all[t] != ahead + 1 + t)
      fail_msg("tick %d of both instances is %lld, not %lld", t, (long long)all[t],
               (long long)(ahead + 1 + t));
  int64_t last = 0;
  assert_int_equal(mcim_store_query_int(st, "SELECT value FROM counters WHERE name ="
                                            " 'decision_us'",
                                        NULL, 0, &last),
                   MCIM_OK);
  assert_int_equal(last, ahead + 2 * TICKS);
  mcim_store_close(st);
}

static void test_sqlite(void **state)
{
  (void)state;
  pg_fixture_run_sqlite("decision", clock_on);
}

static void test_postgres(void **state)
{
  (void)state;
  pg_fixture_run_postgres("decision", clock_on);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sqlite),
      cmocka_unit_test(test_postgres),
  };
  if (!pg_fixture_locator())
    return 1;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
