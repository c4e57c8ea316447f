/* `mcim loadgen` (include/mcim/loadgen.h): N devices in one process against a running lab.
 *
 * Three phases, each timed on its own:
 *   1. manufacture: the M2MES makes every device (TRE keys, certificates, PCID credential,
 *      first owner at the RO) exactly as `mcim lab device add`, minus the agent process;
 *      the devices live in LAB/loadgen/RUN/ and are not listed in lab.json; each agent is
 *      started once in this process (mcim_device_open: measured boot, the software TRE,
 *      agent.db made) and, up to keep_bound(), kept open for phase 2;
 *   2. procedures: `concurrency` threads each take the next device, its agent kept open (or
 *      opened again, past the bound) and play its
 *      owner: the order at the SHO (step 1), the instruction to the device (step 2), then the
 *      agent's rounds (mcim_device_round, what m2me's worker thread runs) until the procedure
 *      ends; every step's time is taken as the agent moves from one stage to the next;
 *   3. invariants (DESIGN.md section 4), once every role's outbox is drained: per device, on
 *      the network side one active subscription, at the SHO it should be at, and one DRF
 *      entry `subscribed` there; on the device side (read when its sequence ended) at most
 *      one active MCIM, at that SHO, and the PCID credential kept.
 * CPU: this process's (devices and owners) and the daemons' (/proc), over phase 2.
 *
 * This file: the run (the procedures, the devices, the threads and phases) and its report.
 * What the report measures besides (latencies, CPU, cryptographic operations) is
 * loadgen_report.c's, the invariants' check loadgen_check.c's; what they share is in
 * loadgen_priv.h. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "lab/loadgen_priv.h"
#include "mcim/device.h"
#include "mcim/http.h"
#include "mcim/lab_run.h"
#include "mcim/loadgen.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/store.h"
#include "mcim/util.h"

/* ---- the run ---- */

static const struct lg_proc p_initial = {"initial", "initial", NULL, 0, 0};
static const struct lg_proc p_old_sho = {"change-old-sho", "change", "old-sho", 1, 1};
static const struct lg_proc p_pristine = {"change-pristine", "change", "pristine", 1, 2};
static const struct lg_proc p_preload = {"preload", "preload", NULL, 1, 3};
static const struct lg_proc p_switch = {"switch", "switch", NULL, 1, 4};

void lg_dev_name(const struct lg *g, long i, char *out, size_t len)
{
  snprintf(out, len, "lg%s-%ld", g->run, i);
}

static void dev_dir(const struct lg *g, long i, char *out, size_t len)
{
  char name[64];
  lg_dev_name(g, i, name, sizeof(name));
  snprintf(out, len, "%s/%s", g->base, name);
}

static int64_t mono_ms(void) { return (int64_t)(mcim_monotonic_ns() / 1000000u); }

void lg_sleep_ms(int64_t ms)
{
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static void error_count(struct lg *g, const char *cause, const char *device, const char *what,
                        const char *detail)
{
  pthread_mutex_lock(&g->lock);
  json_t *n = json_object_get(g->errors, cause);
  json_object_set_new(g->errors, cause, json_integer(n ? json_integer_value(n) + 1 : 1));
  if (json_array_size(g->error_samples) < 20)
    json_array_append_new(g->error_samples,
                          json_pack("{s:s,s:s,s:s,s:s}", "device", device, "procedure", what,
                                    "cause", cause, "detail", detail ? detail : ""));
  pthread_mutex_unlock(&g->lock);
}

/* A latency sample, with the CPU this thread spent on it (ms): in the device's rounds, and
 * as its owner (0 where none) */
static void sample(struct lg *g, struct samples *sm, const char *name, int rank, int64_t ms,
                   double cpu_ms, double owner_ms)
{
  pthread_mutex_lock(&g->lock);
  lg_series_add_cpu(lg_series_get(sm, name, rank), (double)ms, cpu_ms, owner_ms);
  pthread_mutex_unlock(&g->lock);
}

/* The CPU this thread spent since `*from` (ns of its clock), in ms; *from moves to now. */
static double cpu_since(uint64_t *from)
{
  uint64_t now = mcim_thread_cpu_ns(), d = mcim_cpu_delta_ns(*from, now);
  *from = now;
  return (double)d / 1e6;
}

static struct lg_seq sequence(const struct lg *g, long i)
{
  struct lg_seq s = {.p = {&p_initial}, .n = 1};
  const char *what = g->o->procedure;
  static const char *const mix[] = {"change-old-sho", "change-pristine", "switch"};
  if (strcmp(what, "mix") == 0)
    what = mix[i % 3];
  if (strcmp(what, "change-old-sho") == 0)
    s.p[s.n++] = &p_old_sho;
  else if (strcmp(what, "change-pristine") == 0)
    s.p[s.n++] = &p_pristine;
  else if (strcmp(what, "switch") == 0) {
    s.p[s.n++] = &p_preload;
    s.p[s.n++] = &p_switch;
  }
  return s;
}

/* One procedure of device `d` from the owner's order to its end. MCIM_OK: it succeeded. */
static mcim_cause_t one_procedure(struct lg *g, mcim_lab_t *lab, struct mcim_device *d,
                                  struct mcim_http_lite *cli, const char *name,
                                  const mcim_jose_key_t *owner, const json_t *params,
                                  const struct lg_proc *lp, const char *sho)
{
  char txn[33], detail[300] = "", stage[64] = "", step_name[128];
  int stage_n = 0;
  uint8_t rnd[16];
  char *jws = NULL;
  json_t *ans = NULL, *pj = NULL;
  int64_t t0 = mono_ms(), since = 0, deadline = t0 + (int64_t)g->o->timeout_s * 1000;
  /* CPU: the owner's order and instruction, the device's rounds in all and in this step. A
   * step's latency and CPU are the rounds that began at it (it showed before them); the
   * first step shown has the instruction's check and the first round as well. */
  uint64_t clock = mcim_thread_cpu_ns();
  double owner_ms = 0, device_ms = 0, step_ms = 0;
  mcim_cause_t rc = mcim_random(rnd, sizeof(rnd));
  if (rc == MCIM_OK)
    mcim_hex_encode(rnd, sizeof(rnd), txn);
  struct mcim_lab_run run = {.device = name, .procedure = lp->kind, .sho = sho, .via = lp->via};
  if (rc == MCIM_OK)
    rc = mcim_lab_order(lab, &run, owner, params, txn, detail, sizeof(detail));
  if (rc == MCIM_OK)
    rc = mcim_lab_instruction(owner, &run, txn, &jws);
  owner_ms = cpu_since(&clock);
  since = mono_ms(); /* the first step shown has the instruction's check and the first round */
  if (rc == MCIM_OK)
    rc = mcim_device_instruct(d, jws, &ans, detail, sizeof(detail));
  step_ms = device_ms = cpu_since(&clock);
  json_decref(ans);
  free(jws);
  const char *state = "failed", *result = NULL;
  while (rc == MCIM_OK) {
    int64_t delay = mcim_device_round(d, cli);
    double round_ms = cpu_since(&clock);
    device_ms += round_ms;
    step_ms += round_ms;
    json_decref(pj);
    pj = NULL;
    rc = mcim_device_procedure(d, txn, &pj);
    if (rc != MCIM_OK)
      break;
    state = json_string_value(json_object_get(pj, "state"));
    const char *st = json_string_value(json_object_get(pj, "stage"));
    int64_t now = mono_ms();
    if (st && strcmp(st, stage) != 0) {
      if (stage[0]) {
        snprintf(step_name, sizeof(step_name), "%s %d %s", lp->label, stage_n, stage);
        sample(g, &g->steps, step_name, lp->rank * 1000 + stage_n, now - since, step_ms, 0);
        step_ms = 0;
        since = now;
      }
      snprintf(stage, sizeof(stage), "%s", st);
      stage_n = (int)json_integer_value(json_object_get(pj, "step"));
    }
    if (!state || strcmp(state, "running") != 0)
      break;
    if (now > deadline) {
      rc = MCIM_TIMEOUT;
      snprintf(detail, sizeof(detail), "still at %s after %d s", stage, g->o->timeout_s);
      break;
    }
    if (delay > 0)
      lg_sleep_ms(delay > 1000 ? 1000 : delay);
    (void)cpu_since(&clock); /* following the procedure's view is loadgen's, not the device's */
  }
  if (rc == MCIM_OK) {
    result = json_string_value(json_object_get(pj, "result"));
    if (!result || strcmp(result, "success") != 0) {
      const char *cause = json_string_value(json_object_get(pj, "cause"));
      int c = cause ? mcim_cause_from_name(cause) : -1;
      rc = c > 0 ? (mcim_cause_t)c : MCIM_PROCEDURE_FAILED;
      snprintf(detail, sizeof(detail), "step %lld: %s",
               (long long)json_integer_value(json_object_get(pj, "step")),
               json_string_value(json_object_get(pj, "detail"))
                   ? json_string_value(json_object_get(pj, "detail"))
                   : "");
    }
  }
  int64_t end = mono_ms();
  if (stage[0]) {
    snprintf(step_name, sizeof(step_name), "%s %d %s", lp->label, stage_n, stage);
    sample(g, &g->steps, step_name, lp->rank * 1000 + stage_n, end - since, step_ms, 0);
  }
  if (rc == MCIM_OK) {
    /* what is due between procedures (a deferred discard notice after the new full attach):
     * the procedure's CPU, not its latency's */
    (void)cpu_since(&clock);
    mcim_device_round(d, cli);
    device_ms += cpu_since(&clock);
    sample(g, &g->procs, lp->label, lp->rank, end - t0, device_ms, owner_ms);
    sample(g, &g->all, "all", 0, end - t0, device_ms, owner_ms);
    atomic_fetch_add(&g->done, 1);
  } else {
    atomic_fetch_add(&g->failed, 1);
    error_count(g, mcim_cause_name(rc), name, lp->label, detail);
  }
  json_decref(pj);
  return rc;
}

/* The device side of the invariants, read from its TRE at the end of its sequence. */
static void tre_check(struct mcim_device *d, struct lg_device *ld)
{
  json_t *st = NULL, *slot;
  size_t i, active = 0;
  const char *at = "";
  if (mcim_device_tre_status(d, &st) != MCIM_OK) {
    snprintf(ld->tre_problem, sizeof(ld->tre_problem), "the TRE does not answer");
    return;
  }
  json_array_foreach (json_object_get(st, "slots"), i, slot) {
    const char *s = json_string_value(json_object_get(slot, "state"));
    if (s && strcmp(s, "active") == 0) {
      active++;
      at = json_string_value(json_object_get(slot, "sho"));
    }
  }
  if (active > 1)
    snprintf(ld->tre_problem, sizeof(ld->tre_problem), "%zu active MCIMs in the TRE", active);
  else if (!json_is_object(json_object_get(st, "pcid")))
    snprintf(ld->tre_problem, sizeof(ld->tre_problem), "the PCID credential is gone");
  else if (ld->expect[0] && (active != 1 || !at || strcmp(at, ld->expect) != 0))
    snprintf(ld->tre_problem, sizeof(ld->tre_problem), "the TRE's active MCIM is %s's, not %s's",
             active ? (at ? at : "?") : "nobody", ld->expect);
  json_decref(st);
}

static void run_device(struct lg *g, mcim_lab_t *lab, struct mcim_http_lite **cli, long i)
{
  char name[64], dir[PATH_MAX];
  struct mcim_device *d = NULL;
  mcim_jose_key_t *owner = NULL;
  json_t *params = NULL;
  struct lg_device *ld = &g->dev[i];
  struct lg_seq seq = sequence(g, i);
  const char *sho[2] = {g->shos[(size_t)i % g->nshos], g->shos[(size_t)(i + 1) % g->nshos]};
  lg_dev_name(g, i, name, sizeof(name));
  dev_dir(g, i, dir, sizeof(dir));
  mcim_cause_t rc = MCIM_OK;
  if (ld->d) { /* kept open since its first start: closed after the run */
    d = ld->d;
    owner = ld->owner;
    params = ld->params;
  } else {
    rc = mcim_device_open(dir, &d);
    if (rc == MCIM_OK)
      rc = mcim_lab_owner_load_dir(dir, &owner, &params);
  }
  if (rc == MCIM_OK && !*cli)
    rc = mcim_device_client_new(d, cli);
  if (rc != MCIM_OK) {
    atomic_fetch_add(&g->failed, 1);
    error_count(g, mcim_cause_name(rc), name, "start", "cannot open the device or its owner key");
    goto out;
  }
  for (int k = 0; k < seq.n; k++) {
    const struct lg_proc *lp = seq.p[k];
    rc = one_procedure(g, lab, d, *cli, name, owner, params, lp, sho[lp->target]);
    if (rc != MCIM_OK) {
      ld->expect[0] = '\0';
      break;
    }
    snprintf(ld->expect, sizeof(ld->expect), "%s", sho[lp->target]);
  }
  tre_check(d, ld);
out:
  if (ld->d)
    return;
  json_decref(params);
  mcim_jose_key_free(owner);
  mcim_device_free(d);
}

/* Phase 1, after the M2MES made device i: its agent's first start (agent.db created, the
 * boot measured), which a real device does once in its life and `mcim lab device add` does
 * when it starts the agent, so that phase 2 measures procedures, not first starts. Kept open
 * up to keep_max devices (their procedures then open nothing); past it, closed again. */
static mcim_cause_t first_start(struct lg *g, long i, const char *dir)
{
  struct lg_device *ld = &g->dev[i];
  struct mcim_device *d = NULL;
  mcim_cause_t rc = mcim_device_open(dir, &d);
  if (rc != MCIM_OK)
    return rc;
  if (atomic_fetch_add(&g->kept, 1) >= g->keep_max ||
      mcim_lab_owner_load_dir(dir, &ld->owner, &ld->params) != MCIM_OK) {
    mcim_jose_key_free(ld->owner);
    json_decref(ld->params);
    ld->owner = NULL;
    ld->params = NULL;
    mcim_device_free(d);
    return MCIM_OK;
  }
  ld->d = d;
  return MCIM_OK;
}

static void kept_free(struct lg *g)
{
  for (long i = 0; g->dev && i < g->o->devices; i++) {
    struct lg_device *ld = &g->dev[i];
    json_decref(ld->params);
    mcim_jose_key_free(ld->owner);
    mcim_device_free(ld->d);
    ld->d = NULL;
    ld->owner = NULL;
    ld->params = NULL;
  }
}

/* Open files of one kept device: agent.db, its WAL and shared memory, the TRE's lock, and a
 * margin. keep_max leaves half of RLIMIT_NOFILE to the rest (the threads' connections, the
 * lab's stores, the log). */
#define LG_KEEP_FDS 8
#define LG_KEEP_MAX 1024 /* and memory: about 0.2 MiB a kept device (VmHWM) */

static long keep_bound(long devices)
{
  struct rlimit rl;
  long n = LG_KEEP_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      (long)(rl.rlim_cur / 2 / LG_KEEP_FDS) < n)
    n = (long)(rl.rlim_cur / 2 / LG_KEEP_FDS);
  return devices < n ? devices : n;
}

struct lg_thread {
  struct lg *g;
  int phase; /* 1: manufacture, 2: procedures */
  pthread_t id;
};

/* The phase's duration ends when its last thread ends, not at the progress line's next
 * half-second tick: timed at those ticks, a run of 3 s or less read 0.5 s long (per_s 66.6
 * at concurrency 4, 8 and 16 alike, 200 procedures "in 3.0 s"). */
static void phase_thread_ended(struct lg *g)
{
  pthread_mutex_lock(&g->lock);
  g->phase_running--;
  g->phase_end_ms = mono_ms();
  pthread_cond_signal(&g->phase_cv);
  pthread_mutex_unlock(&g->lock);
}

static void *lg_thread_main(void *arg)
{
  struct lg_thread *t = arg;
  struct lg *g = t->g;
  mcim_lab_t *lab = NULL;
  struct mcim_http_lite *cli = NULL;
  if (mcim_lab_open(g->o->lab_dir, &lab) != MCIM_OK) {
    phase_thread_ended(g); /* or the phase would wait for this thread for ever */
    return NULL;
  }
  for (;;) {
    long i = atomic_fetch_add(&g->next, 1);
    if (i >= g->o->devices)
      break;
    if (t->phase == 1) {
      char name[64], dir[PATH_MAX];
      lg_dev_name(g, i, name, sizeof(name));
      dev_dir(g, i, dir, sizeof(dir));
      mcim_cause_t rc = mcim_lab_mkdir(dir);
      if (rc == MCIM_OK)
        rc = mcim_lab_manufacture(lab, name, dir, false, NULL);
      if (rc != MCIM_OK) {
        error_count(g, mcim_cause_name(rc), name, "manufacture", "the M2MES did not make it");
        g->dev[i].expect[0] = '\0';
      } else if ((rc = first_start(g, i, dir)) != MCIM_OK) {
        error_count(g, mcim_cause_name(rc), name, "manufacture", "its agent does not start");
        g->dev[i].expect[0] = '\0';
      }
      atomic_fetch_add(&g->made, 1);
    } else {
      run_device(g, lab, &cli, i);
    }
  }
  mcim_http_lite_free(cli);
  mcim_lab_free(lab);
  phase_thread_ended(g);
  return NULL;
}

static void progress(struct lg *g, int phase, int64_t t0, bool last)
{
  FILE *f = g->o->progress;
  if (!f)
    return;
  long total = g->o->devices, n = phase == 1 ? atomic_load(&g->made) : atomic_load(&g->next);
  if (n > total)
    n = total;
  double s = (double)(mono_ms() - t0) / 1000.0;
  int width = 30, fill = total ? (int)(n * width / total) : width;
  char bar[32];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  if (phase == 1)
    fprintf(f, "\rmanufacture [%s] %ld/%ld devices, %.1f/s   ", bar, n, total,
            s > 0 ? (double)n / s : 0);
  else {
    long done = atomic_load(&g->done), failed = atomic_load(&g->failed);
    fprintf(f, "\rprocedures  [%s] %ld/%ld devices started, %ld done (%.1f/s), %ld errors   ", bar,
            n, total, done, s > 0 ? (double)done / s : 0, failed);
  }
  if (last)
    fputc('\n', f);
  fflush(f);
}

static mcim_cause_t run_phase(struct lg *g, int phase, double *seconds)
{
  int nt = g->o->concurrency;
  struct lg_thread *t = calloc((size_t)nt, sizeof(*t));
  if (!t)
    return MCIM_NO_MEMORY;
  atomic_store(&g->next, 0);
  int64_t t0 = mono_ms();
  int started = 0;
  pthread_mutex_lock(&g->lock);
  g->phase_running = 0;
  g->phase_end_ms = t0;
  pthread_mutex_unlock(&g->lock);
  for (int i = 0; i < nt; i++) {
    t[i].g = g;
    t[i].phase = phase;
    pthread_mutex_lock(&g->lock);
    g->phase_running++; /* before the start: a thread may end before the next one starts */
    pthread_mutex_unlock(&g->lock);
    if (mcim_thread_start(&t[i].id, 0, lg_thread_main, &t[i]) != 0) {
      pthread_mutex_lock(&g->lock);
      g->phase_running--;
      pthread_mutex_unlock(&g->lock);
      break;
    }
    started++;
  }
  /* the progress line every half second, until every thread ended */
  pthread_mutex_lock(&g->lock);
  while (g->phase_running > 0) {
    uint64_t ns = mcim_monotonic_ns() + 500 * 1000000u;
    struct timespec until = {.tv_sec = (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
    if (pthread_cond_timedwait(&g->phase_cv, &g->lock, &until) == ETIMEDOUT) {
      pthread_mutex_unlock(&g->lock);
      progress(g, phase, t0, false);
      pthread_mutex_lock(&g->lock);
    }
  }
  int64_t end = g->phase_end_ms;
  pthread_mutex_unlock(&g->lock);
  for (int i = 0; i < started; i++)
    pthread_join(t[i].id, NULL);
  progress(g, phase, t0, true);
  *seconds = (double)(end - t0) / 1000.0;
  free(t);
  return started > 0 ? MCIM_OK : MCIM_INTERNAL;
}

bool mcim_loadgen_procedure_valid(const char *p)
{
  static const char *const known[] = {
      "initial", "change-old-sho", "change-pristine", "switch", "mix", NULL};
  for (size_t i = 0; p && known[i]; i++)
    if (strcmp(p, known[i]) == 0)
      return true;
  return false;
}

mcim_cause_t mcim_loadgen_run(const struct mcim_loadgen_opts *o, json_t **report)
{
  struct lg g;
  mcim_lab_t *lab = NULL;
  uint8_t rnd[4];
  double made_s = 0, run_s = 0;
  memset(&g, 0, sizeof(g));
  *report = NULL;
  g.o = o;
  pthread_mutex_init(&g.lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g.phase_cv, &ca);
  pthread_condattr_destroy(&ca);
  g.errors = json_object();
  g.error_samples = json_array();
  mcim_cause_t rc =
      o->devices > 0 && o->concurrency > 0 && mcim_loadgen_procedure_valid(o->procedure)
          ? MCIM_OK
          : MCIM_INVALID_ARGUMENT;
  if (rc == MCIM_OK)
    rc = mcim_lab_open(o->lab_dir, &lab);
  if (rc == MCIM_OK) {
    g.lab_json = json_incref(lab->json);
    /* each SHO once, whatever number of instances it runs (the names live in lab_json) */
    for (const char *const *n = mcim_lab_roles(lab); n && *n; n++) {
      const char *kind = mcim_lab_kind(lab, *n);
      if (kind && strcmp(kind, "sho") == 0 && g.nshos < LG_MAX_SHOS)
        g.shos[g.nshos++] = *n;
    }
    if (g.nshos < 2 && strcmp(o->procedure, "initial") != 0)
      rc = MCIM_CONFIG_MISSING; /* a change needs two SHOs */
    if (g.nshos == 0)
      rc = MCIM_CONFIG_MISSING;
  }
  if (rc == MCIM_OK)
    rc = mcim_random(rnd, sizeof(rnd));
  if (rc == MCIM_OK) {
    mcim_hex_encode(rnd, sizeof(rnd), g.run);
    snprintf(g.base, sizeof(g.base), "%s/loadgen", mcim_lab_path(lab));
    rc = mcim_lab_mkdir(g.base);
    snprintf(g.base, sizeof(g.base), "%s/loadgen/%s", mcim_lab_path(lab), g.run);
    if (rc == MCIM_OK)
      rc = mcim_lab_mkdir(g.base);
    /* the devices' agents log what m2me would log (retries, refusals): to a file of the run,
     * not over the report */
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/loadgen.log", g.base);
    mcim_log_init("loadgen", MCIM_LOG_TEXT, MCIM_LOG_INFO, stderr);
    if (rc == MCIM_OK)
      rc = mcim_log_open_file(log);
  }
  g.dev = rc == MCIM_OK ? calloc((size_t)o->devices, sizeof(*g.dev)) : NULL;
  if (rc == MCIM_OK && !g.dev)
    rc = MCIM_NO_MEMORY;
  g.keep_max = keep_bound(o->devices);
  if (rc == MCIM_OK)
    rc = run_phase(&g, 1, &made_s);
  size_t ninst = g.lab_json ? json_array_size(json_object_get(g.lab_json, "roles")) : 0;
  struct opsnap self0 = {0}, self1 = {0}, self1_work = {0},
                *d0 = calloc(ninst + 1, sizeof(*d0)), *d1 = calloc(ninst + 1, sizeof(*d1));
  double *scrape_tls = calloc(ninst + 1, sizeof(*scrape_tls));
  if (rc == MCIM_OK && (!d0 || !d1 || !scrape_tls))
    rc = MCIM_NO_MEMORY;
  if (rc == MCIM_OK) {
    lg_scrape_all(lab, g.lab_json, d0, scrape_tls, ninst);
    lg_self_ops(&self0);
  }
  double cpu_self0 = lg_self_cpu(), cpu_d0 = g.lab_json ? lg_daemons_cpu(g.lab_json) : 0;
  if (rc == MCIM_OK && json_object_size(g.errors) == 0)
    rc = run_phase(&g, 2, &run_s);
  double cpu_self = lg_self_cpu() - cpu_self0,
         cpu_d = g.lab_json ? lg_daemons_cpu(g.lab_json) - cpu_d0 : 0;
  /* this process's work, in the CPU's window: the agents' close and the invariants' reads of
   * the stores below are not a procedure's */
  lg_self_ops(&self1_work);
  long kept = atomic_load(&g.kept) < g.keep_max ? atomic_load(&g.kept) : g.keep_max;
  kept_free(&g); /* an agent's close, once in its life: not a procedure's */
  json_t *inv = rc == MCIM_OK ? lg_invariants(&g) : json_string("not checked");
  if (d1 && scrape_tls) {
    lg_self_ops(&self1);
    lg_scrape_all(lab, g.lab_json, d1, scrape_tls, ninst);
  }
  long done = atomic_load(&g.done);
  struct series *all = lg_series_get(&g.all, "all", 0);
  json_t *per_proc = lg_series_report(&g.procs), *per_step = lg_series_report(&g.steps);
  *report = json_pack(
      "{s:s,s:s,s:I,s:i,s:I,s:O,s:f,s:f,s:o,s:o,s:o,s:{s:f,s:f,s:f},s:{s:I,s:f,s:I},s:o,s:O}",
      "run", g.run, "procedure", o->procedure, "devices", (json_int_t)o->devices, "concurrency",
      o->concurrency, "procedures", (json_int_t)done, "errors", g.errors, "per_s",
      lg_round2(run_s > 0 ? (double)done / run_s : 0), "seconds", lg_round2(run_s), "latency_ms",
      all ? lg_latency_json(all) : json_object(), "per_procedure", per_proc, "per_step", per_step,
      "cpu", "loadgen_s", lg_round2(cpu_self), "daemons_s", lg_round2(cpu_d), "per_procedure_ms",
      lg_round2(done ? (cpu_self + cpu_d) * 1000.0 / (double)done : 0), "manufacture", "devices",
      (json_int_t)atomic_load(&g.made), "seconds", lg_round2(made_s), "kept_open", (json_int_t)kept,
      "invariants", inv, "error_samples", g.error_samples);
  if (*report && d0 && d1 && scrape_tls)
    lg_ops_report(g.lab_json, &self0, &self1, d0, d1, scrape_tls, ninst, done, *report);
  if (*report && d0 && d1)
    lg_work_report(&self0, &self1_work, d0, d1, ninst, done, *report);
  if (*report && d0 && d1)
    lg_cpu_report(g.lab_json, d0, d1, ninst, done, *report);
  lg_opsnap_clear(d0, ninst);
  lg_opsnap_clear(d1, ninst);
  free(d0);
  free(d1);
  free(scrape_tls);
  if (rc == MCIM_OK && (json_object_size(g.errors) > 0 || !json_is_string(inv) ||
                        strcmp(json_string_value(inv), "ok") != 0))
    rc = MCIM_PROCEDURE_FAILED;
  json_decref(g.errors);
  json_decref(g.error_samples);
  json_decref(g.lab_json);
  lg_samples_free(&g.procs);
  lg_samples_free(&g.steps);
  lg_samples_free(&g.all);
  free(g.dev);
  mcim_lab_free(lab);
  pthread_cond_destroy(&g.phase_cv);
  pthread_mutex_destroy(&g.lock);
  return rc;
}
