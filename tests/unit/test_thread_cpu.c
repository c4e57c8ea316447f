/* The CPU of a process's threads by name (src/core/thread_cpu.c, behind the metric
 * mcim_thread_cpu_seconds_total): each thread under the name it gave itself, its time as its
 * own clock counts it (the clock id as glibc builds it), a thread's time kept under its name
 * after it ended and under its old name after it took another, so that the counter never
 * goes down; the /proc stat line's fields read right, odd names included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/thread_cpu.h"
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

/* Spin until this thread's own clock has run `ms` ms (failing after 10 s of wall time). */
static void burn_ms(unsigned ms)
{
  uint64_t start = mcim_thread_cpu_ns(), wall = mcim_monotonic_ns();
  volatile uint64_t x = 0;
  while (mcim_cpu_delta_ns(start, mcim_thread_cpu_ns()) < (uint64_t)ms * 1000000u) {
    x = x + 1;
    if (mcim_monotonic_ns() - wall > 10000000000u)
      fail_msg("this thread's CPU clock did not run %u ms in 10 s", ms);
  }
}

struct burner {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage; /* 1: it burnt and waits; 2: it may end */
  long tid;
};

static void *burner_main(void *arg)
{
  struct burner *b = arg;
  mcim_thread_name("tcpu-burner");
  burn_ms(30);
  pthread_mutex_lock(&b->mu);
  b->tid = (long)syscall(SYS_gettid);
  b->stage = 1;
  pthread_cond_broadcast(&b->cv);
  while (b->stage != 2)
    pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

/* After pthread_join the kernel may still list the thread a moment: wait until it does not
 * (bounded), so that the reading below is of an ended thread. */
static void wait_gone(long tid)
{
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/task/%ld", tid);
  uint64_t until = mcim_monotonic_ns() + 5000000000u;
  while (access(path, F_OK) == 0) {
    if (mcim_monotonic_ns() > until)
      fail_msg("thread %ld still listed 5 s after its join", tid);
    sched_yield();
  }
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
  wait_gone(b.tid);
  double ended = seconds_of("tcpu-burner"); /* gone: its time as last read stays */
  if (ended < alive)
    fail_msg("tcpu-burner after its end: %f s, before %f s", ended, alive);
}

static void test_own_clock_and_rename(void **state)
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
  /* renamed: what it ran stays with the old name, the new one counts from now */
  mcim_thread_name("tcpu-renamed");
  double old_name = seconds_of("tcpu-main-threa"), fresh = seconds_of("tcpu-renamed");
  burn_ms(20);
  if (old_name < after || seconds_of("tcpu-main-threa") != old_name)
    fail_msg("the old name after the rename: %f then %f s, before it %f s", old_name,
             seconds_of("tcpu-main-threa"), after);
  if (fresh < 0 || fresh > 0.015 || seconds_of("tcpu-renamed") - fresh < 0.020)
    fail_msg("the new name: %f s at the rename, %f s after 20 ms", fresh,
             seconds_of("tcpu-renamed"));
}

static void test_clock_id(void **state)
{
  (void)state;
  clockid_t glibc;
  assert_int_equal(pthread_getcpuclockid(pthread_self(), &glibc), 0);
  assert_int_equal(mcim_thread_clock_id((long)syscall(SYS_gettid)), glibc);
}

static void test_stat_parse(void **state)
{
  (void)state;
  char name[16];
  uint64_t start = 0, cpu = 0;
  /* a real line: utime 17, stime 4, start time 9914 */
  const char *line = "4242 (MHD-worker) S 1 4240 4240 0 -1 4194368 1186 0 0 0 17 4 0 0 20 0 "
                     "7 0 9914 489472000 6220 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 "
                     "-1 1 0 0 0 0 0\n";
  assert_true(mcim_thread_stat_parse(line, name, &start, &cpu));
  assert_string_equal(name, "MHD-worker");
  assert_int_equal(cpu, 21);
  assert_int_equal(start, 9914);
  /* a name with ") " and spaces in it: the last ')' ends it */
  assert_true(mcim_thread_stat_parse("7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 5 0 0 20 0 1 0 "
                                     "55 0 0\n",
                                     name, &start, &cpu));
  assert_string_equal(name, "a) b (c");
  assert_int_equal(cpu, 8);
  assert_int_equal(start, 55);
  /* a long name is cut to 15 bytes */
  assert_true(mcim_thread_stat_parse("7 (0123456789abcdefgh) S 1 7 7 0 -1 0 0 0 0 0 1 1 0 0 "
                                     "20 0 1 0 5 0 0\n",
                                     name, &start, &cpu));
  assert_string_equal(name, "0123456789abcde");
  /* cut short, no name, a field that is not a number: refused */
  assert_false(mcim_thread_stat_parse("4242 (x) S 1 4240 4240 0 -1 4194368 1186 0 0 0 17",
                                      name, &start, &cpu));
  assert_false(mcim_thread_stat_parse("4242 x S 1 2 3", name, &start, &cpu));
  assert_false(mcim_thread_stat_parse("7 (x) S 1 7 7 0 -1 0 0 0 0 0 1x 1 0 0 20 0 1 0 5 0 0",
                                      name, &start, &cpu));
  assert_false(mcim_thread_stat_parse(")(", name, &start, &cpu));
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
      cmocka_unit_test(test_own_clock_and_rename),
      cmocka_unit_test(test_clock_id),
      cmocka_unit_test(test_stat_parse),
      cmocka_unit_test(test_delta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
