/* Store throughput on one backend, the role code's two shapes of work: a write transaction
 * (begin, read a counter, update it, commit: SQLite's write lock or PostgreSQL's writers'
 * lock, and a durable commit) and a read outside any transaction, from THREADS threads with
 * a connection each.
 *
 *   bench_store LOCATOR [THREADS [TRANSACTIONS]]
 *   bench_store /tmp/b.db 4                                    # SQLite
 *   bench_store "$(scripts/pg.sh start /tmp/pgb)" 4            # PostgreSQL (pg.sh stop after)
 *
 * Prints one line per shape: operations per second over all threads. The table `bench_c`
 * is made (again) in the database given. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mcim/log.h"
#include "mcim/store.h"

#define MAX_THREADS 64

static const char *locator;
static int per_thread = 2000;

static double now_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *writer(void *arg)
{
  long id = (long)arg;
  char key[32];
  mcim_store_t *st = NULL;
  long failed = 0;
  snprintf(key, sizeof(key), "k%ld", id);
  if (mcim_store_open(locator, NULL, &st) != MCIM_OK)
    return (void *)1;
  for (int i = 0; i < per_thread;) {
    int64_t v = 0;
    mcim_val_t k[] = {MCIM_TEXT(key)};
    if (mcim_store_begin(st) != MCIM_OK) {
      failed++;
      continue; /* busy: again */
    }
    mcim_val_t u[] = {MCIM_INT(0), MCIM_TEXT(key)};
    mcim_cause_t rc = mcim_store_query_int(st, "SELECT n FROM bench_c WHERE id = ?", k, 1, &v);
    u[0] = MCIM_INT(v + 1);
    if (rc == MCIM_OK)
      rc = mcim_store_exec(st, "UPDATE bench_c SET n = ? WHERE id = ?", u, 2, NULL, NULL);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
    if (rc == MCIM_OK)
      i++;
    else if (++failed > per_thread)
      break;
  }
  mcim_store_close(st);
  return failed > per_thread ? (void *)1 : NULL;
}

static void *reader(void *arg)
{
  (void)arg;
  mcim_store_t *st = NULL;
  if (mcim_store_open(locator, NULL, &st) != MCIM_OK)
    return (void *)1;
  for (int i = 0; i < per_thread * 5; i++) {
    int64_t v;
    mcim_val_t k[] = {MCIM_TEXT("k0")};
    if (mcim_store_query_int(st, "SELECT n FROM bench_c WHERE id = ?", k, 1, &v) != MCIM_OK) {
      mcim_store_close(st);
      return (void *)1;
    }
  }
  mcim_store_close(st);
  return NULL;
}

static int run(void *(*fn)(void *), int threads, double *seconds)
{
  pthread_t t[MAX_THREADS];
  int bad = 0;
  double t0 = now_s();
  for (long i = 0; i < threads; i++)
    if (pthread_create(&t[i], NULL, fn, (void *)i) != 0)
      return 1;
  for (int i = 0; i < threads; i++) {
    void *ret = NULL;
    pthread_join(t[i], &ret);
    bad |= ret != NULL;
  }
  *seconds = now_s() - t0;
  return bad;
}

int main(int argc, char **argv)
{
  int threads = argc > 2 ? atoi(argv[2]) : 1;
  if (argc > 3)
    per_thread = atoi(argv[3]);
  if (argc < 2 || threads < 1 || threads > MAX_THREADS || per_thread < 1) {
    fprintf(stderr, "usage: bench_store LOCATOR [THREADS (1..%d) [TRANSACTIONS per thread]]\n",
            MAX_THREADS);
    return 2;
  }
  locator = argv[1];
  mcim_log_init("bench", MCIM_LOG_TEXT, MCIM_LOG_ERROR, NULL);
  mcim_store_t *st = NULL;
  if (mcim_store_open(locator, NULL, &st) != MCIM_OK ||
      mcim_store_exec_script(st, "DROP TABLE IF EXISTS bench_c;"
                                 " CREATE TABLE bench_c (id TEXT PRIMARY KEY, n BIGINT NOT NULL)") !=
          MCIM_OK) {
    fprintf(stderr, "bench_store: cannot set up the table in %s\n", locator);
    mcim_store_close(st);
    return 1;
  }
  for (int i = 0; i < threads; i++) {
    char key[32];
    snprintf(key, sizeof(key), "k%d", i);
    mcim_val_t p[] = {MCIM_TEXT(key)};
    if (mcim_store_exec(st, "INSERT INTO bench_c (id, n) VALUES (?, 0)", p, 1, NULL, NULL) !=
        MCIM_OK)
      return 1;
  }
  double s = 0;
  if (run(writer, threads, &s) != 0) {
    fprintf(stderr, "bench_store: a writer failed\n");
    return 1;
  }
  printf("%s, %d thread(s): %.0f write transactions/s (begin, select, update, commit)\n",
         mcim_store_backend(st), threads, threads * per_thread / s);
  if (run(reader, threads, &s) != 0) {
    fprintf(stderr, "bench_store: a reader failed\n");
    return 1;
  }
  printf("%s, %d thread(s): %.0f reads/s outside a transaction\n", mcim_store_backend(st),
         threads, threads * per_thread * 5 / s);
  mcim_store_close(st);
  return 0;
}
