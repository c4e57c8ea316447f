/* Shared by `mcim loadgen`'s files (loadgen.c: the run; loadgen_report.c: latencies, CPU and
 * cryptographic operations; loadgen_check.c: the invariants). Not part of the library's
 * interface: include/mcim/loadgen.h is. */
#ifndef MCIM_LAB_LOADGEN_PRIV_H
#define MCIM_LAB_LOADGEN_PRIV_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab/lab_priv.h"
#include "mcim/device.h"
#include "mcim/loadgen.h"
#include "mcim/opcount.h"

#define LG_MAX_SHOS 16
#define LG_SEQ_MAX 3
/* Latencies in milliseconds, by name */
struct series {
  char name[64];
  int rank; /* the report's order: procedure, then seed step */
  double *v;
  size_t n, cap;
  double cpu_ms;   /* the device's CPU in its rounds (procedures and steps), summed */
  double owner_ms; /* the owner's (order and instruction: procedures), summed */
};

struct samples {
  struct series *s;
  size_t n, cap;
};
struct lg_proc {
  const char *label; /* initial, change-old-sho, change-pristine, preload, switch */
  const char *kind, *via;
  int target; /* 0: the device's first SHO, 1: its second */
  int rank;   /* its place in the report */
};
struct lg_seq {
  const struct lg_proc *p[LG_SEQ_MAX];
  int n;
};

struct lg_device {
  char expect[64]; /* the SHO its last procedure left it at ("": it failed) */
  char tre_problem[160];
  /* Kept open from its first start (phase 1) through its procedures, as an agent keeps its
   * store and TRE open across procedures; NULL past the bound (lg.keep_max): then opened
   * around its sequence, as before. */
  struct mcim_device *d;
  mcim_jose_key_t *owner;
  json_t *params;
};

struct lg {
  const struct mcim_loadgen_opts *o;
  char run[9];
  char base[MCIM_LAB_DIR_MAX + 32]; /* LAB/loadgen/RUN */
  const char *shos[LG_MAX_SHOS];
  size_t nshos;
  json_t *lab_json; /* keeps the SHO names alive */
  struct lg_device *dev;
  atomic_long next;
  atomic_long made, done, failed;
  long keep_max;        /* devices kept open from phase 1 to the end of phase 2, at most */
  atomic_long kept;     /* handed out so far (may pass keep_max: those are not kept) */
  pthread_mutex_t lock; /* samples and errors; and the phase's threads: */
  pthread_cond_t phase_cv; /* signalled (under lock) as a thread of the phase ends */
  int phase_running;       /* threads of the phase not yet ended */
  int64_t phase_end_ms;    /* when the last one ended (mono_ms) */
  struct samples procs, steps, all;
  json_t *errors;
  json_t *error_samples; /* a few details, for people */
};
/* Cryptographic operations and work counted (one process: loadgen_report.c) */
struct opsnap {
  double v[MCIM_OP_COUNT_];
  double w[MCIM_WORK_COUNT_];
  double health; /* GET /v1/health answered */
  json_t *cpu;   /* CPU seconds by "METHOD ROUTE" (requests) and "thread NAME" (threads) */
  bool ok;
};

/* loadgen.c */
void lg_dev_name(const struct lg *g, long i, char *out, size_t len);
void lg_sleep_ms(int64_t ms);

/* loadgen_report.c: samples */
struct series *lg_series_get(struct samples *sm, const char *name, int rank);
void lg_series_add(struct series *s, double ms);
/* lg_series_add with the CPU the sample took: the device's rounds and the owner's part */
void lg_series_add_cpu(struct series *s, double ms, double cpu_ms, double owner_ms);
double lg_round2(double x);
json_t *lg_latency_json(struct series *s);
void lg_samples_free(struct samples *sm);
json_t *lg_series_report(struct samples *sm);
/* loadgen_report.c: CPU seconds (user + system) of the lab's daemons, from /proc; this
 * process's */
double lg_daemons_cpu(const json_t *lab_json);
double lg_self_cpu(void);
/* loadgen_report.c: cryptographic operations: this process's; every instance's /metrics
 * (`scrape_tls[i]`: the TLS handshakes made to scrape instance i); the report's "crypto_ops"
 * and "crypto_ops_per_procedure" */
void lg_self_ops(struct opsnap *s);
void lg_scrape_all(mcim_lab_t *lab, const json_t *lab_json, struct opsnap *snaps,
                   double *scrape_tls, size_t n);
void lg_ops_report(const json_t *lab_json, const struct opsnap *self0, const struct opsnap *self1,
                   const struct opsnap *d0, const struct opsnap *d1, const double *scrape_tls,
                   size_t n, long done, json_t *report);
/* loadgen_report.c: the work counts (HTTP requests, store commits and statements, TRE synced
 * writes): the report's "work" and "work_per_procedure"; `self0`, `self1`: this process's
 * around the procedures alone, `d0`, `d1`: the instances' (as for lg_ops_report) */
void lg_work_report(const struct opsnap *self0, const struct opsnap *self1,
                    const struct opsnap *d0, const struct opsnap *d1, size_t n, long done,
                    json_t *report);

/* loadgen_report.c: the daemons' CPU by route and by thread, per procedure, summed over the
 * instances of each role (`d0`, `d1` as for lg_ops_report): the report's "daemons_cpu";
 * lg_opsnap_clear frees what a scrape kept */
void lg_cpu_report(const json_t *lab_json, const struct opsnap *d0, const struct opsnap *d1,
                   size_t n, long done, json_t *report);
void lg_opsnap_clear(struct opsnap *s, size_t n);

/* loadgen_check.c: DESIGN.md section 4, for every device of this run ("ok" or the problems) */
json_t *lg_invariants(struct lg *g);

#endif
