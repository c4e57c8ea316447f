/* The parts of src/core/thread_cpu.c that its test checks alone. */
#ifndef MCIM_CORE_THREAD_CPU_H
#define MCIM_CORE_THREAD_CPU_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Linux's CPU clock of thread `tid` of this process, as glibc's pthread_getcpuclockid
 * builds it: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), computed unsigned. */
clockid_t mcim_thread_clock_id(long tid);

/* A line of /proc/self/task/TID/stat: the thread's name (field 2, between the first '(' and
 * the last ')', at most 15 bytes kept), its start time (field 22) and utime + stime (fields 14
 * and 15), both in clock ticks. False when the line is not of that form. */
bool mcim_thread_stat_parse(const char *line, char name[16], uint64_t *start_ticks,
                            uint64_t *cpu_ticks);

#endif
