/* The CPU time of this process's threads by name (src/core/thread_cpu.c), for metrics.c's
 * mcim_thread_cpu_seconds_total, and the parts its test checks alone. */
#ifndef MCIM_CORE_THREAD_CPU_H
#define MCIM_CORE_THREAD_CPU_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>

/* The CPU time of this process's threads by name (src/core/thread_cpu.c): one entry per name,
 * its live threads' time and that of the threads that ended or took another name since the
 * first call (as last read). Fills at most `max` entries (names past it left out whole);
 * returns how many. */
#define MCIM_THREAD_NAMES_MAX 64
struct mcim_thread_cpu {
  char name[16];
  double seconds;
};
size_t mcim_thread_cpu_by_name(struct mcim_thread_cpu *out, size_t max);

/* Linux's CPU clock of thread `tid` of this process, as glibc's pthread_getcpuclockid
 * builds it: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), computed unsigned. */
clockid_t mcim_thread_clock_id(long tid);

/* A line of /proc/self/task/TID/stat: the thread's name (field 2, between the first '(' and
 * the last ')', at most 15 bytes kept), its start time (field 22) and utime + stime (fields 14
 * and 15), both in clock ticks. False when the line is not of that form. */
bool mcim_thread_stat_parse(const char *line, char name[16], uint64_t *start_ticks,
                            uint64_t *cpu_ticks);

#endif
