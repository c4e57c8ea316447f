/* The CPU of a process's threads by name (src/core/thread_cpu.c, behind the metric
 * mcim_thread_cpu_seconds_total): each thread under the name it gave itself, its time as its
 * own clock counts it, and a thread's time kept under its name after it ended, so that the
 * counter never goes down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>

#include "mcim/util.h"

/* The seconds `name` has in a fresh reading; -1 when it is not there. */
static double seconds_of(const char *name)
{
  struct mcim_thread_cpu v[MCIM_THREAD_NAMES_MAX];
  size_t n = mcim_thread_cpu_by_name(v, MCIM_THREAD_NAMES_MAX);
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].name, name) == 0)
      return v[i].seconds;
  return -1;
}

/* Spin until this thread's own clock has run `ms` ms. */
static void burn_ms(unsigned ms)
{
  uint64_t start = mcim_thread_cpu_ns();
  volatile uint64_t x = 0;
  while (mcim_cpu_delta_ns(start, mcim_thread_cpu_ns()) < (uint64_t)ms * 1000000u)
    x = x + 1;
}

struct burner {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage; /* 1: it burnt and waits; 2: it may end */
};

static void *burner_main(void *arg)
{
  struct burner *b = arg;
  mcim_thread_name("tcpu-burner");
  burn_ms(30);
  pthread_mutex_lock(&b->mu);
  b->stage = 1;
  pthread_cond_broadcast(&b->cv);
  while (b->stage != 2)
    pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

static void test_named_thread_counted_and_kept(void **state)
{
  (void)state;
  struct burner b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  pthread_t t;
  assert_true(seconds_of("tcpu-burner") < 0);
  assert_int_equal(pthread_create(&t, NULL, burner_main, &b), 0);
  pthread_mutex_lock(&b.mu);
  while (b.stage != 1)
    pthread_cond_wait(&b.cv, &b.mu);
  pthread_mutex_unlock(&b.mu);
  double alive = seconds_of("tcpu-burner"); /* 30 ms burnt, read from the other thread */
  if (alive < 0.030 || alive > 5)
    fail_msg("tcpu-burner alive: %f s", alive);
  pthread_mutex_lock(&b.mu);
  b.stage = 2;
  pthread_cond_broadcast(&b.cv);
  pthread_mutex_unlock(&b.mu);
  assert_int_equal(pthread_join(t, NULL), 0);
  double ended = seconds_of("tcpu-burner"); /* gone: its time as last read stays */
  if (ended < alive)
    fail_msg("tcpu-burner after its end: %f s, before %f s", ended, alive);
}

static void test_own_clock(void **state)
{
  (void)state;
  mcim_thread_name("tcpu-main-thread-long-name"); /* the kernel keeps 15 bytes */
  double before = seconds_of("tcpu-main-threa");
  assert_true(before >= 0);
  burn_ms(20);
  double after = seconds_of("tcpu-main-threa");
  if (after - before < 0.020)
    fail_msg("tcpu-main-threa: %f -> %f s after 20 ms", before, after);
  assert_true(seconds_of("tcpu-main-thread-long-name") < 0);
}

static void test_delta(void **state)
{
  (void)state;
  assert_int_equal(mcim_cpu_delta_ns(0, 500), 0);   /* a failed first reading */
  assert_int_equal(mcim_cpu_delta_ns(500, 0), 0);   /* a failed second one */
  assert_int_equal(mcim_cpu_delta_ns(500, 400), 0); /* never negative */
  assert_int_equal(mcim_cpu_delta_ns(400, 500), 100);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_named_thread_counted_and_kept),
      cmocka_unit_test(test_own_clock),
      cmocka_unit_test(test_delta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
