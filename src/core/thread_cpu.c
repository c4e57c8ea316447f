/* The CPU time of this process's threads, by name (mcim_thread_cpu_seconds_total, metrics.c).
 *
 * Each thread's time comes from its own CPU clock, read from any thread of the process: the
 * clock id Linux gives a thread of one's own thread group (what glibc's
 * pthread_getcpuclockid builds), exact to the call and without /proc's schedstat, which
 * kernels without CONFIG_SCHED_INFO lack. Where that read fails, /proc/self/task/N/stat's
 * utime and stime (clock ticks).
 *
 * A counter must not go down when a thread ends: the threads seen at the last call are kept
 * by id, and the last time read of one that is gone is added to its name's base. What an
 * ended thread ran between the last call and its end is lost (it is in no thread's clock
 * any more). */
#include "mcim/util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KNOWN_MAX 256 /* threads followed; those past it count while they run, not after */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct known {
  long tid;
  char name[16];
  uint64_t ns;
  bool seen;
} known[KNOWN_MAX];
static size_t nknown;
static struct mcim_thread_cpu base[MCIM_THREAD_NAMES_MAX]; /* ended threads, by name */
static size_t nbase;

/* Linux's CPU clock of thread `tid` of this process: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED),
 * computed unsigned (the kernel's ~tid is negative). */
static bool thread_clock_ns(long tid, uint64_t *ns)
{
  clockid_t id = (clockid_t)((~(uint32_t)tid << 3) | 6u);
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0)
    return false;
  *ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  return true;
}

/* utime + stime of /proc/self/task/TID/stat (fields 14 and 15, after the name in
 * parentheses, which may hold spaces), in ns. */
static bool thread_stat_ns(const char *tid, uint64_t *ns)
{
  char path[64], line[512];
  snprintf(path, sizeof(path), "/proc/self/task/%.16s/stat", tid);
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  bool ok = fgets(line, sizeof(line), f) != NULL;
  fclose(f);
  const char *p = ok ? strrchr(line, ')') : NULL;
  long hz = sysconf(_SC_CLK_TCK);
  if (!p || hz <= 0)
    return false;
  /* after ")": field 3 (the state) and on; 14 is utime, 15 stime */
  for (int field = 3; field <= 14; field++) {
    p = strchr(p + 1, ' ');
    if (!p)
      return false;
  }
  char *end = NULL;
  unsigned long long ut = strtoull(p + 1, &end, 10);
  if (end == p + 1 || *end != ' ')
    return false;
  const char *q = end;
  unsigned long long st = strtoull(q + 1, &end, 10);
  if (end == q + 1)
    return false;
  *ns = (ut + st) * (1000000000ull / (unsigned long long)hz);
  return true;
}

/* A thread's name into `dst` (16 bytes, as the kernel keeps it), cut if longer. */
static void name_copy(char dst[16], const char *src)
{
  size_t n = strnlen(src, 15);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* The entry of `name` in `v` (n of them, at most max), added if new; NULL when full. */
static struct mcim_thread_cpu *by_name(struct mcim_thread_cpu *v, size_t *n, size_t max,
                                       const char *name)
{
  for (size_t i = 0; i < *n; i++)
    if (strcmp(v[i].name, name) == 0)
      return &v[i];
  if (*n == max)
    return NULL;
  struct mcim_thread_cpu *e = &v[(*n)++];
  name_copy(e->name, name);
  e->seconds = 0;
  return e;
}

/* Thread `tid` read at `ns`: its entry updated or added. A time below the entry's is a new
 * thread that got an ended one's id: the ended one's time goes to its name's base first. */
static void known_update(long tid, const char *name, uint64_t ns)
{
  size_t i = 0;
  while (i < nknown && known[i].tid != tid)
    i++;
  if (i == nknown) {
    if (nknown == KNOWN_MAX)
      return;
    nknown++;
    known[i].ns = 0;
  } else if (ns < known[i].ns) {
    struct mcim_thread_cpu *b = by_name(base, &nbase, MCIM_THREAD_NAMES_MAX, known[i].name);
    if (b)
      b->seconds += (double)known[i].ns / 1e9;
  }
  known[i].tid = tid;
  name_copy(known[i].name, name);
  known[i].ns = ns;
  known[i].seen = true;
}

size_t mcim_thread_cpu_by_name(struct mcim_thread_cpu *out, size_t max)
{
  size_t n = 0;
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nknown; i++)
    known[i].seen = false;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    char path[64], name[32] = "";
    snprintf(path, sizeof(path), "/proc/self/task/%.16s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue; /* ended since the listing */
    if (!fgets(name, sizeof(name), f))
      name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    long tid = strtol(e->d_name, NULL, 10);
    uint64_t ns = 0;
    if (!thread_clock_ns(tid, &ns) && !thread_stat_ns(e->d_name, &ns))
      continue;
    known_update(tid, name, ns);
    struct mcim_thread_cpu *t = by_name(out, &n, max, name);
    if (t)
      t->seconds += (double)ns / 1e9;
  }
  closedir(d);
  /* the threads gone since the last call: their last time into their name's base */
  for (size_t i = 0; i < nknown;) {
    if (known[i].seen) {
      i++;
      continue;
    }
    struct mcim_thread_cpu *b = by_name(base, &nbase, MCIM_THREAD_NAMES_MAX, known[i].name);
    if (b)
      b->seconds += (double)known[i].ns / 1e9;
    known[i] = known[--nknown];
  }
  for (size_t i = 0; i < nbase; i++) {
    struct mcim_thread_cpu *t = by_name(out, &n, max, base[i].name);
    if (t)
      t->seconds += base[i].seconds;
  }
  pthread_mutex_unlock(&lock);
  return n;
}
