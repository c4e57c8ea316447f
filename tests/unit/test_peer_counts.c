/* The flood bounds counted in the role's store (src/roles/peer_limit.c,
 * mcim_peer_limit_admit_db), on SQLite and on PostgreSQL (the server of the ctest fixture
 * "pg"), so that several instances of a role admit no more than one does (before 2026-12-07
 * each instance counted in its own memory: two PVAs took twice revocations_per_minute of an
 * SHO). Checked:
 *  - within a window, `max` admitted, the next refused with the seconds to the next window;
 *    another peer and another bound count apart; the next window counts afresh;
 *  - two instances (two connections to one database) asking at once, each in threads of its
 *    own: together exactly `max` admitted, whatever the interleaving;
 *  - the housekeeping's purge drops past windows only. */
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
#include "pg_fixture.h"
#include "roles/peer_limit.h"
#include "roles/role_priv.h"

#define T0 1800000000 /* a window start for both lengths: a multiple of 3600 */
#define RACE_MAX 50
#define RACE_ASKS 80 /* by each instance: 160 asks for 50 places */

static mcim_store_t *open_role(const char *locator)
{
  mcim_store_t *st = NULL;
  assert_int_equal(mcim_store_open(locator, NULL, &st), MCIM_OK);
  assert_int_equal(mcim_role_common_migrate(st), MCIM_OK);
  return st;
}

static bool admit(mcim_store_t *st, const char *what, const char *peer, int64_t now,
                  int64_t seconds, int64_t max, int64_t *retry)
{
  bool ok = false;
  assert_int_equal(mcim_peer_limit_admit_db(st, what, peer, now, seconds, max, &ok, retry),
                   MCIM_OK);
  return ok;
}

struct instance {
  pthread_t th;
  const char *locator;
  int admitted;
  mcim_cause_t rc;
};

static void *instance_main(void *arg)
{
  struct instance *in = arg;
  mcim_store_t *st = NULL;
  in->rc = mcim_store_open(in->locator, NULL, &st);
  for (int i = 0; i < RACE_ASKS && in->rc == MCIM_OK; i++) {
    bool ok = false;
    in->rc = mcim_peer_limit_admit_db(st, "revocations", "sho-race", T0 + 5, 60, RACE_MAX, &ok,
                                      NULL);
    in->admitted += ok;
  }
  mcim_store_close(st);
  return NULL;
}

static void counts_on(const char *locator)
{
  mcim_store_t *st = open_role(locator), *other = open_role(locator);
  int64_t retry = -1;
  /* one window of a minute: 3 admitted, from either instance, the 4th from both refused */
  assert_true(admit(st, "revocations", "sho-a", T0 + 1, 60, 3, &retry));
  assert_true(admit(other, "revocations", "sho-a", T0 + 2, 60, 3, &retry));
  assert_true(admit(st, "revocations", "sho-a", T0 + 3, 60, 3, &retry));
  assert_int_equal(retry, -1); /* untouched while admitted */
  assert_false(admit(other, "revocations", "sho-a", T0 + 10, 60, 3, &retry));
  assert_int_equal(retry, 50);
  assert_false(admit(st, "revocations", "sho-a", T0 + 59, 60, 3, &retry));
  assert_int_equal(retry, 1);
  /* another peer, another bound: counts of their own */
  assert_true(admit(other, "revocations", "sho-b", T0 + 10, 60, 3, NULL));
  assert_true(admit(other, "traced_refusals", "sho-a", T0 + 10, 3600, 3, NULL));
  /* the next window counts afresh */
  assert_true(admit(other, "revocations", "sho-a", T0 + 60, 60, 3, NULL));
  int64_t n = -1;
  assert_int_equal(mcim_store_query_int(st,
                                        "SELECT n FROM peer_counts WHERE what = 'revocations'"
                                        " AND peer = 'sho-a' AND window_start = 1800000000",
                                        NULL, 0, &n),
                   MCIM_OK);
  assert_int_equal(n, 3); /* refusals are not counted */

  /* two instances at once: exactly RACE_MAX admitted between them */
  struct instance in[2] = {{.locator = locator}, {.locator = locator}};
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&in[i].th, NULL, instance_main, &in[i]), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_join(in[i].th, NULL), 0);
  assert_int_equal(in[0].rc, MCIM_OK);
  assert_int_equal(in[1].rc, MCIM_OK);
  assert_int_equal(in[0].admitted + in[1].admitted, RACE_MAX);

  /* the purge: windows that began before the bound go, the others stay */
  assert_int_equal(mcim_peer_limit_purge_db(st, T0 + 60), MCIM_OK);
  assert_int_equal(mcim_store_query_int(st, "SELECT COUNT(*) FROM peer_counts", NULL, 0, &n),
                   MCIM_OK);
  assert_int_equal(n, 1);
  mcim_store_close(other);
  mcim_store_close(st);
}

static void test_sqlite(void **state)
{
  (void)state;
  pg_fixture_run_sqlite("peer-counts", counts_on);
}

static void test_postgres(void **state)
{
  (void)state;
  pg_fixture_run_postgres("peercounts", counts_on);
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
