/* The CPU time of this process's threads, by name (mcim_thread_cpu_seconds_total, metrics.c).
 *
 * Each thread's time comes from its own CPU clock, read from any thread of the process: the
 * clock id Linux gives a thread of one's own thread group (what glibc's
 * pthread_getcpuclockid builds), exact to the call and without /proc's schedstat, which
 * kernels without CONFIG_SCHED_INFO lack. Where that read fails, /proc/self/task/N/stat's
 * utime and stime (clock ticks). The name and the start time come from that stat line.
 *
 * A counter must not go down when a thread ends or renames itself: the threads seen are kept
 * by id and start time (an id the kernel gave again is another thread), with the time they
 * had when they took their name. A thread's time under its name goes to that name's base
 * when it ends (as last read: what it ran after the last call is lost) or takes another name
 * (what it ran up to the call before stays with the old one). A thread whose line cannot be
 * read for any reason but its end (out of descriptors, of memory) keeps its last figures. All
 * in ns. */
#include "core/thread_cpu.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


struct known {
  long tid;
  uint64_t start; /* its start time (ticks since boot): with tid, which thread this is */
  char name[16];
  uint64_t named_ns; /* its time when it took this name */
  uint64_t ns;       /* its time at the last read */
  bool seen;
};
struct named {
  char name[16];
  uint64_t ns;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct known *known;
static size_t nknown, cap_known;
static struct named *base; /* ended threads' and renamed threads' time, by name */
static size_t nbase, cap_base;

clockid_t mcim_thread_clock_id(long tid)
{
  return (clockid_t)((~(uint32_t)tid << 3) | 6u);
}

bool mcim_thread_stat_parse(const char *line, char name[16], uint64_t *start_ticks,
                            uint64_t *cpu_ticks)
{
  const char *open = strchr(line, '('), *close = strrchr(line, ')');
  if (!open || !close || close < open)
    return false;
  size_t n = (size_t)(close - open - 1);
  n = n < 15 ? n : 15;
  memcpy(name, open + 1, n);
  name[n] = '\0';
  uint64_t f[23] = {0}; /* fields 3 to 22 by their number; 3 (the state) is not a number */
  const char *p = close + 1;
  for (int field = 3; field <= 22; field++) {
    while (*p == ' ')
      p++;
    if (!*p || *p == '\n')
      return false;
    if (field > 3) {
      char *end = NULL;
      errno = 0;
      long long v = strtoll(p, &end, 10);
      if (end == p || errno != 0 || (*end != ' ' && *end != '\n' && *end != '\0'))
        return false;
      f[field] = v < 0 ? 0 : (uint64_t)v;
      p = end;
    } else {
      while (*p && *p != ' ')
        p++;
    }
  }
  *cpu_ticks = f[14] + f[15];
  *start_ticks = f[22];
  return true;
}

/* A thread's name into `dst` (16 bytes, as the kernel keeps it), cut at 15 and zero-filled. */
static void name_set(char dst[16], const char *src)
{
  memset(dst, 0, 16);
  memcpy(dst, src, strnlen(src, 15));
}

/* `name`'s entry in `v`, added if new; NULL when memory is out. */
static struct named *named_get(struct named **v, size_t *n, size_t *cap, const char *name)
{
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*v)[i].name, name) == 0)
      return &(*v)[i];
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    struct named *nv = realloc(*v, c * sizeof(*nv));
    if (!nv)
      return NULL;
    *v = nv;
    *cap = c;
  }
  struct named *e = &(*v)[(*n)++];
  e->ns = 0;
  name_set(e->name, name);
  return e;
}

static void to_base(const char *name, uint64_t ns)
{
  struct named *b = named_get(&base, &nbase, &cap_base, name);
  if (b)
    b->ns += ns;
}

static struct known *known_find(long tid)
{
  for (size_t i = 0; i < nknown; i++)
    if (known[i].tid == tid)
      return &known[i];
  return NULL;
}

/* A new thread's entry: its time so far all under its name. */
static void known_init(struct known *k, long tid, uint64_t start, const char *name)
{
  memset(k, 0, sizeof(*k));
  k->tid = tid;
  k->start = start;
  name_set(k->name, name);
}

/* Thread `tid` read: its entry updated, or added (NULL: memory is out). */
static struct known *known_update(long tid, uint64_t start, const char *name, uint64_t ns)
{
  struct known *k = known_find(tid);
  if (k && k->start != start) { /* the id of an ended thread, given again */
    to_base(k->name, k->ns - k->named_ns);
    known_init(k, tid, start, name);
  }
  if (!k) {
    if (nknown == cap_known) {
      size_t c = cap_known ? cap_known * 2 : 32;
      struct known *nv = realloc(known, c * sizeof(*nv));
      if (!nv)
        return NULL;
      known = nv;
      cap_known = c;
    }
    k = &known[nknown++];
    known_init(k, tid, start, name);
  }
  if (ns < k->ns)
    ns = k->ns; /* a coarser reading (the fallback) never takes time back */
  if (strcmp(k->name, name) != 0) { /* renamed: what it ran so far stays with the old name */
    to_base(k->name, k->ns - k->named_ns);
    k->named_ns = k->ns;
    name_set(k->name, name);
  }
  k->ns = ns;
  k->seen = true;
  return k;
}

/* One thread's line: false when it could not be read, *gone when that is because it ended. */
static bool read_stat(const char *tid, char *line, size_t len, bool *gone)
{
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/task/%.16s/stat", tid);
  *gone = false;
  FILE *f = fopen(path, "r");
  if (!f) {
    *gone = errno == ENOENT || errno == ESRCH;
    return false;
  }
  errno = 0;
  bool ok = fgets(line, (int)len, f) != NULL;
  if (!ok)
    *gone = errno == ESRCH || errno == ENOENT || errno == 0; /* read empty: it went */
  fclose(f);
  return ok;
}

/* Adds `ns` to `name` in out (n of max); names past max are left out whole. */
static void out_add(struct mcim_thread_cpu *out, size_t *n, size_t max, const char *name,
                    uint64_t ns, uint64_t *sums)
{
  size_t i = 0;
  while (i < *n && strcmp(out[i].name, name) != 0)
    i++;
  if (i == *n) {
    if (*n == max)
      return;
    name_set(out[i].name, name);
    sums[i] = 0;
    (*n)++;
  }
  sums[i] += ns;
}

size_t mcim_thread_cpu_by_name(struct mcim_thread_cpu *out, size_t max)
{
  size_t n = 0;
  uint64_t *sums = calloc(max ? max : 1, sizeof(*sums));
  DIR *d = sums ? opendir("/proc/self/task") : NULL;
  long hz = sysconf(_SC_CLK_TCK);
  if (!d) {
    free(sums);
    return 0;
  }
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < nknown; i++)
    known[i].seen = false;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    long tid = strtol(e->d_name, NULL, 10);
    char line[512], name[16];
    uint64_t start = 0, ticks = 0, ns = 0;
    bool gone = false;
    struct known *k = NULL;
    if (read_stat(e->d_name, line, sizeof(line), &gone) &&
        mcim_thread_stat_parse(line, name, &start, &ticks)) {
      struct timespec ts;
      if (clock_gettime(mcim_thread_clock_id(tid), &ts) == 0)
        ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
      else if (hz > 0)
        ns = ticks * (1000000000u / (uint64_t)hz);
      k = known_update(tid, start, name, ns);
    } else if (!gone && (k = known_find(tid)) != NULL) {
      k->seen = true; /* not readable now, not ended: its last figures */
    }
    if (k)
      out_add(out, &n, max, k->name, k->ns - k->named_ns, sums);
  }
  closedir(d);
  for (size_t i = 0; i < nknown;) { /* ended since the last call */
    if (known[i].seen) {
      i++;
      continue;
    }
    to_base(known[i].name, known[i].ns - known[i].named_ns);
    known[i] = known[--nknown];
  }
  for (size_t i = 0; i < nbase; i++)
    out_add(out, &n, max, base[i].name, base[i].ns, sums);
  pthread_mutex_unlock(&lock);
  for (size_t i = 0; i < n; i++)
    out[i].seconds = (double)sums[i] / 1e9;
  free(sums);
  return n;
}
