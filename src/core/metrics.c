/* The metrics registry (include/mcim/metrics.h): a fixed catalogue, series created on
 * first use, one mutex, Prometheus text exposition 0.0.4. */
#include "mcim/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/opcount.h"
#include "core/thread_cpu.h"
#include "mcim/version.h"

/* ---- the catalogue ---- */

/* 2 ms: the DRF's target for a discovery (issue 10, point 6), read off the histogram */
static const double http_buckets[] = {0.001, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,   0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define HTTP_NBUCKETS (sizeof(http_buckets) / sizeof(http_buckets[0]))

mcim_metric_t mcim_m_process_start_time = {
    "mcim_process_start_time_seconds", "Start time of the process, seconds since the epoch",
    MCIM_METRIC_GAUGE, MCIM_MF_PROCESS, {NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_build_info = {
    "mcim_build_info",
    "The build of the process: its version and the git commit it was built from (value 1)",
    MCIM_METRIC_GAUGE, MCIM_MF_PROCESS, {"version", "commit", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_thread_cpu = {
    "mcim_thread_cpu_seconds_total",
    "CPU time of this process's threads by thread name, ended threads' included"
    " (mcim-worker: the role's outbox deliveries, sweeps and housekeeping; MHD-worker: the"
    " HTTP server's threads)",
    MCIM_METRIC_COUNTER, MCIM_MF_PROCESS, {"thread", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_http_requests = {
    "mcim_http_requests_total",
    "HTTP requests answered, by method, route pattern and cause (OK when successful)",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {"method", "route", "cause", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_request_duration = {
    "mcim_http_request_duration_seconds",
    "Time from the request's arrival to its answer being queued, by method, route pattern"
    " and status class",
    MCIM_METRIC_HISTOGRAM, MCIM_MF_HTTP, {"method", "route", "code", NULL}, http_buckets,
    HTTP_NBUCKETS, NULL};
mcim_metric_t mcim_m_http_request_cpu = {
    "mcim_http_request_cpu_seconds_total",
    "CPU time of the thread that handled the request, from its dispatch to its answer queued"
    " (the handler, its store and its calls to peers; not the TLS and HTTP reading before"
    " it), by method and route pattern",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {"method", "route", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_connections_refused = {
    "mcim_http_connections_refused_total",
    "Connections closed at once: the client's address (max_connections_per_ip) or the"
    " server (max_connections) was at its limit",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_connections_timed_out = {
    "mcim_http_connections_timed_out_total",
    "Connections closed by connection_timeout before a request was complete: TLS handshake"
    " not done, or a request stalled",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_connections_open = {
    "mcim_http_connections_open",
    "Client connections open now (TLS handshake under way, idle or in a request)",
    MCIM_METRIC_GAUGE, MCIM_MF_HTTP, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_tls_handshake_failures = {
    "mcim_http_tls_handshake_failures_total",
    "TLS handshakes that failed: no common version or cipher suite (the policy is AEAD only),"
    " a malformed message, or the client left mid-handshake",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_store_connections = {
    "mcim_store_connections",
    "Store connections this process holds open (idle in the pool or in use by a request or"
    " the worker): at most threads + 2, usually far fewer",
    MCIM_METRIC_GAUGE, MCIM_MF_OUTBOX, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_outbox_pending = {
    "mcim_outbox_pending", "Outbox messages not yet delivered nor given up (read at scrape time)",
    MCIM_METRIC_GAUGE, MCIM_MF_OUTBOX, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_outbox_delivered = {
    "mcim_outbox_delivered_total",
    "Outbox messages delivered (2xx, or 409: the receiver already had it), by peer",
    MCIM_METRIC_COUNTER, MCIM_MF_OUTBOX, {"peer", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_outbox_attempt_failures = {
    "mcim_outbox_attempt_failures_total",
    "Outbox delivery attempts that failed (retried or not), by peer and cause",
    MCIM_METRIC_COUNTER, MCIM_MF_OUTBOX, {"peer", "cause", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_outbox_given_up = {
    "mcim_outbox_given_up_total",
    "Outbox messages given up (final refusal or attempts exhausted), by peer and cause",
    MCIM_METRIC_COUNTER, MCIM_MF_OUTBOX, {"peer", "cause", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_rm_reg_init_req = {
    "mcim_rm_reg_init_req_total",
    "Attach requests received (TS 28.552 RM.RegInitReq, initial registration requests)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_rm_reg_init_succ = {
    "mcim_rm_reg_init_succ_total",
    "Attaches accepted, access token issued (TS 28.552 RM.RegInitSucc, successful initial"
    " registrations)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_rm_reg_init_fail = {
    "mcim_rm_reg_init_fail_total",
    "Attach requests and answers refused, by cause (TS 28.552 RM.RegInitFail.cause, failed"
    " initial registrations)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {"cause", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_amf_auth_req = {
    "mcim_amf_auth_req_total",
    "Authentication challenges (RAND, AUTN) sent to devices, resynchronised ones included"
    " (TS 28.552 AMF.AuthReq)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_amf_auth_reject = {
    "mcim_amf_auth_reject_total",
    "Authentications refused by the network: RES does not match XRES, or resynchronisation"
    " failed (TS 28.552 AMF.AuthReject)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_amf_auth_fail = {
    "mcim_amf_auth_fail_total",
    "Authentication failures reported by devices, by cause: SYNC_FAILURE for an AUTS"
    " (TS 28.552 AMF.AuthFail.cause)",
    MCIM_METRIC_COUNTER, MCIM_MF_ACCESS, {"cause", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_auc_av_requests = {
    "mcim_auc_av_requests_total", "Authentication vector requests at the AuC",
    MCIM_METRIC_COUNTER, MCIM_MF_AUC, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_auc_av_generated = {
    "mcim_auc_av_generated_total", "Authentication vectors generated by the AuC",
    MCIM_METRIC_COUNTER, MCIM_MF_AUC, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_auc_av_failures = {
    "mcim_auc_av_failures_total",
    "Authentication vector requests refused by the AuC, by cause (UNKNOWN_IDENTITY,"
    " CREDENTIAL_EXPIRED, SUBSCRIPTION_TERMINATED...)",
    MCIM_METRIC_COUNTER, MCIM_MF_AUC, {"cause", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_auc_resync_requests = {
    "mcim_auc_resync_requests_total", "SQN resynchronisations (AUTS) requested at the AuC",
    MCIM_METRIC_COUNTER, MCIM_MF_AUC, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_auc_resync_failures = {
    "mcim_auc_resync_failures_total",
    "SQN resynchronisations refused by the AuC, by cause (AUTS_INVALID...)", MCIM_METRIC_COUNTER,
    MCIM_MF_AUC, {"cause", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_procedures_started = {
    "mcim_procedures_started_total",
    "Procedures started (SHO: order accepted; agent: owner instruction accepted), by"
    " procedure",
    MCIM_METRIC_COUNTER, MCIM_MF_PROCEDURE, {"procedure", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_procedures_succeeded = {
    "mcim_procedures_succeeded_total",
    "Procedures succeeded (SHO: subscription active, or standby for a preload, or resumed for"
    " a switch; agent: last step done), by procedure",
    MCIM_METRIC_COUNTER, MCIM_MF_PROCEDURE, {"procedure", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_procedures_failed = {
    "mcim_procedures_failed_total",
    "Procedures failed (SHO: failed verdict or failed provisioning report; agent: the"
    " procedure ended without success), by procedure and cause",
    MCIM_METRIC_COUNTER, MCIM_MF_PROCEDURE, {"procedure", "cause", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_m2me_attach_attempts = {
    "mcim_m2me_attach_attempts_total", "Attaches the device started, by access network",
    MCIM_METRIC_COUNTER, MCIM_MF_AGENT, {"network", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_m2me_attach_failures = {
    "mcim_m2me_attach_failures_total", "Attaches that failed, by access network and cause",
    MCIM_METRIC_COUNTER, MCIM_MF_AGENT, {"network", "cause", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_m2me_aka_challenges = {
    "mcim_m2me_aka_challenges_total", "Authentication challenges checked by the TRE",
    MCIM_METRIC_COUNTER, MCIM_MF_AGENT, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_m2me_aka_failures = {
    "mcim_m2me_aka_failures_total",
    "Challenges the TRE did not accept, by cause: MAC_FAILURE (the network is not"
    " authenticated), SYNC_FAILURE (answered with AUTS)",
    MCIM_METRIC_COUNTER, MCIM_MF_AGENT, {"cause", NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_m2me_worker_wakeups = {
    "mcim_m2me_worker_wakeups_total",
    "Times the agent's worker thread woke up: a procedure's poll or backoff pause ended, or"
    " it was signalled (a new procedure, an attach that made work due, the stop). Idle, it"
    " waits without a timeout",
    MCIM_METRIC_COUNTER, MCIM_MF_AGENT, {NULL}, NULL, 0, NULL};

mcim_metric_t mcim_m_http_long_poll_wakes = {
    "mcim_http_long_poll_wakes_total",
    "Held requests (long polls) dispatched again before their wait ended, by source: commit"
    " (this process's), instance (another instance's, through the database), relisten (all"
    " held requests, when the listening connection is back)",
    MCIM_METRIC_COUNTER, MCIM_MF_HTTP, {"source", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_http_long_polls_held = {
    "mcim_http_long_polls_held",
    "Requests held now (long polls: Prefer: wait), from the \"not yet\" until they are"
    " dispatched again (woken, their wait ended, or rechecked)",
    MCIM_METRIC_GAUGE, MCIM_MF_HTTP, {NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_crypto_operations = {
    "mcim_crypto_operations_total",
    "Cryptographic operations done by the process, by op: es256_sign, es256_verify,"
    " ecdh_es_encrypt, ecdh_es_decrypt (JWE), cert_verify (X.509 chain), aka_av_generate,"
    " aka_resync (AuC), aka_usim_check (TRE), tls_server_full, tls_server_resumed,"
    " tls_client_full, tls_client_resumed (completed handshakes)",
    MCIM_METRIC_COUNTER, MCIM_MF_CRYPTO, {"op", NULL}, NULL, 0, NULL};
mcim_metric_t mcim_m_work_operations = {
    "mcim_work_operations_total",
    "Non-cryptographic work done by the process, by op: http_requests (answered by its HTTP"
    " server), store_commits_durable, store_commits_relaxed (transactions committed),"
    " store_statements (executed), tre_synced_writes (software TRE files written and synced)",
    MCIM_METRIC_COUNTER, MCIM_MF_CRYPTO, {"op", NULL}, NULL, 0, NULL};

mcim_metric_t *const mcim_metrics_catalogue[] = {
    &mcim_m_process_start_time,
    &mcim_m_build_info,
    &mcim_m_thread_cpu,
    &mcim_m_http_requests,
    &mcim_m_http_request_duration,
    &mcim_m_http_request_cpu,
    &mcim_m_http_connections_refused,
    &mcim_m_http_connections_timed_out,
    &mcim_m_http_connections_open,
    &mcim_m_http_tls_handshake_failures,
    &mcim_m_http_long_poll_wakes,
    &mcim_m_http_long_polls_held,
    &mcim_m_store_connections,
    &mcim_m_outbox_pending,
    &mcim_m_outbox_delivered,
    &mcim_m_outbox_attempt_failures,
    &mcim_m_outbox_given_up,
    &mcim_m_rm_reg_init_req,
    &mcim_m_rm_reg_init_succ,
    &mcim_m_rm_reg_init_fail,
    &mcim_m_amf_auth_req,
    &mcim_m_amf_auth_reject,
    &mcim_m_amf_auth_fail,
    &mcim_m_auc_av_requests,
    &mcim_m_auc_av_generated,
    &mcim_m_auc_av_failures,
    &mcim_m_auc_resync_requests,
    &mcim_m_auc_resync_failures,
    &mcim_m_procedures_started,
    &mcim_m_procedures_succeeded,
    &mcim_m_procedures_failed,
    &mcim_m_m2me_attach_attempts,
    &mcim_m_m2me_attach_failures,
    &mcim_m_m2me_aka_challenges,
    &mcim_m_m2me_aka_failures,
    &mcim_m_m2me_worker_wakeups,
    &mcim_m_crypto_operations,
    &mcim_m_work_operations,
    NULL,
};

/* ---- series ---- */

struct series {
  char *values[MCIM_METRIC_MAX_LABELS];
  double value;     /* counter, gauge */
  uint64_t *counts; /* histogram: per bucket (not cumulative), then +Inf */
  uint64_t count;
  double sum;
};

struct mcim_metric_priv {
  struct series *s;
  size_t n, cap;
  bool full_logged;
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t nlabels(const mcim_metric_t *m)
{
  size_t n = 0;
  while (n < MCIM_METRIC_MAX_LABELS && m->labels[n])
    n++;
  return n;
}

static bool values_match(const mcim_metric_t *m, const char *const *values, size_t *n)
{
  size_t want = nlabels(m), got = 0;
  while (values && values[got] && got <= want)
    got++;
  *n = want;
  if (got == want)
    return true;
  static atomic_bool logged;
  if (!atomic_exchange(&logged, true)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INTERNAL,
                   "metric %s updated with %zu label values, it has %zu (ignored)", m->name, got,
                   want);
  }
  return false;
}

/* The series of `values`, created if needed; NULL if the metric is full or memory is out.
 * Called with the lock held. */
static struct series *series_get(mcim_metric_t *m, const char *const *values, size_t nl,
                                 bool create)
{
  struct mcim_metric_priv *p = m->priv;
  if (!p) {
    if (!create)
      return NULL;
    p = m->priv = calloc(1, sizeof(*p));
    if (!p)
      return NULL;
  }
  for (size_t i = 0; i < p->n; i++) {
    size_t j = 0;
    while (j < nl && strcmp(p->s[i].values[j], values[j]) == 0)
      j++;
    if (j == nl)
      return &p->s[i];
  }
  if (!create)
    return NULL;
  if (p->n >= MCIM_METRIC_MAX_SERIES) {
    if (!p->full_logged) {
      p->full_logged = true;
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_TOO_LARGE,
                     "metric %s has %d label combinations: new ones are dropped", m->name,
                     MCIM_METRIC_MAX_SERIES);
    }
    return NULL;
  }
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 8;
    struct series *ns = realloc(p->s, cap * sizeof(*ns));
    if (!ns)
      return NULL;
    p->s = ns;
    p->cap = cap;
  }
  struct series *s = &p->s[p->n];
  memset(s, 0, sizeof(*s));
  for (size_t j = 0; j < nl; j++) {
    s->values[j] = strdup(values[j]);
    if (!s->values[j])
      goto fail;
  }
  if (m->type == MCIM_METRIC_HISTOGRAM) {
    s->counts = calloc(m->nbuckets + 1, sizeof(*s->counts));
    if (!s->counts)
      goto fail;
  }
  p->n++;
  return s;
fail:
  for (size_t j = 0; j < nl; j++)
    free(s->values[j]);
  return NULL;
}

static void update(mcim_metric_t *m, const char *const *values, double v, int op)
{
  size_t nl;
  if (!m || !values_match(m, values, &nl) || isnan(v))
    return;
  pthread_mutex_lock(&metrics_lock);
  struct series *s = series_get(m, values, nl, true);
  if (s) {
    if (op == 0 && (m->type != MCIM_METRIC_COUNTER || v >= 0))
      s->value += v;
    else if (op == 1 && m->type == MCIM_METRIC_GAUGE)
      s->value = v;
    else if (op == 2 && m->type == MCIM_METRIC_HISTOGRAM) {
      size_t b = 0;
      while (b < m->nbuckets && v > m->buckets[b])
        b++;
      s->counts[b]++;
      s->count++;
      s->sum += v;
    }
  }
  pthread_mutex_unlock(&metrics_lock);
}

void mcim_metric_add(mcim_metric_t *m, const char *const *values, double v)
{
  update(m, values, v, 0);
}

void mcim_metric_set(mcim_metric_t *m, const char *const *values, double v)
{
  update(m, values, v, 1);
}

void mcim_metric_observe(mcim_metric_t *m, const char *const *values, double v)
{
  update(m, values, v, 2);
}

double mcim_metric_value(mcim_metric_t *m, const char *const *values)
{
  size_t nl;
  double v = 0;
  if (!m || !values_match(m, values, &nl))
    return 0;
  pthread_mutex_lock(&metrics_lock);
  struct series *s = series_get(m, values, nl, false);
  if (s)
    v = m->type == MCIM_METRIC_HISTOGRAM ? (double)s->count : s->value;
  pthread_mutex_unlock(&metrics_lock);
  return v;
}

/* ---- exposition ---- */

/* A label value: backslash, double quote and line feed escaped. */
static void put_label_value(FILE *f, const char *v)
{
  for (; *v; v++) {
    if (*v == '\\')
      fputs("\\\\", f);
    else if (*v == '"')
      fputs("\\\"", f);
    else if (*v == '\n')
      fputs("\\n", f);
    else
      fputc(*v, f);
  }
}

/* HELP text: backslash and line feed escaped. */
static void put_help(FILE *f, const char *v)
{
  for (; *v; v++) {
    if (*v == '\\')
      fputs("\\\\", f);
    else if (*v == '\n')
      fputs("\\n", f);
    else
      fputc(*v, f);
  }
}

static void put_number(FILE *f, double v)
{
  if (isinf(v))
    fputs(v > 0 ? "+Inf" : "-Inf", f);
  else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
    fprintf(f, "%lld", (long long)v);
  else {
    /* the shortest text that reads back as the same double */
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, sizeof(buf), "%.*g", prec, v);
      if (strtod(buf, NULL) == v)
        break;
    }
    fputs(buf, f);
  }
}

/* name{l1="v1",...[,le="x"]} */
static void put_series_name(FILE *f, const mcim_metric_t *m, const char *suffix,
                            const struct series *s, const char *le)
{
  size_t nl = nlabels(m);
  fprintf(f, "%s%s", m->name, suffix);
  if (nl == 0 && !le)
    return;
  fputc('{', f);
  for (size_t j = 0; j < nl; j++) {
    fprintf(f, "%s%s=\"", j ? "," : "", m->labels[j]);
    put_label_value(f, s->values[j]);
    fputc('"', f);
  }
  if (le)
    fprintf(f, "%sle=\"%s\"", nl ? "," : "", le);
  fputc('}', f);
}

static void render_metric(FILE *f, const mcim_metric_t *m)
{
  static const char *const types[] = {"counter", "gauge", "histogram"};
  fprintf(f, "# HELP %s ", m->name);
  put_help(f, m->help);
  fprintf(f, "\n# TYPE %s %s\n", m->name, types[m->type]);
  const struct mcim_metric_priv *p = m->priv;
  if ((!p || p->n == 0) && nlabels(m) == 0 && m->type != MCIM_METRIC_HISTOGRAM) {
    fprintf(f, "%s 0\n", m->name); /* shown from the start: rate() needs the zero */
    return;
  }
  for (size_t i = 0; p && i < p->n; i++) {
    const struct series *s = &p->s[i];
    if (m->type != MCIM_METRIC_HISTOGRAM) {
      put_series_name(f, m, "", s, NULL);
      fputc(' ', f);
      put_number(f, s->value);
      fputc('\n', f);
      continue;
    }
    uint64_t cum = 0;
    char le[32];
    for (size_t b = 0; b <= m->nbuckets; b++) {
      cum += s->counts[b];
      if (b < m->nbuckets)
        snprintf(le, sizeof(le), "%g", m->buckets[b]);
      else
        snprintf(le, sizeof(le), "+Inf");
      put_series_name(f, m, "_bucket", s, le);
      fprintf(f, " %llu\n", (unsigned long long)cum);
    }
    put_series_name(f, m, "_sum", s, NULL);
    fputc(' ', f);
    put_number(f, s->sum);
    fputc('\n', f);
    put_series_name(f, m, "_count", s, NULL);
    fprintf(f, " %llu\n", (unsigned long long)s->count);
  }
}

char *mcim_metrics_render(unsigned families)
{
  char *buf = NULL;
  size_t len = 0;
  /* The build never changes while the process runs: its one series is set here, so every
   * process that exposes the process family shows it without a call of its own. */
  if (families & MCIM_MF_PROCESS)
    mcim_metric_set(&mcim_m_build_info, MCIM_LABELS(mcim_version_text(), mcim_version_commit()),
                    1);
  /* read before the lock: /proc and a clock per thread, while other threads count */
  struct mcim_thread_cpu threads[MCIM_THREAD_NAMES_MAX];
  size_t nthreads =
      families & MCIM_MF_PROCESS ? mcim_thread_cpu_by_name(threads, MCIM_THREAD_NAMES_MAX) : 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return NULL;
  pthread_mutex_lock(&metrics_lock);
  for (size_t i = 0; i < nthreads; i++) {
    const char *name = threads[i].name;
    struct series *s = series_get(&mcim_m_thread_cpu, &name, 1, true);
    if (s && threads[i].seconds > s->value) /* a counter: two renders' reads may cross */
      s->value = threads[i].seconds;
  }
  if (families & MCIM_MF_CRYPTO) /* the atomic counts, as they are now */
    for (int op = 0; op < MCIM_OP_COUNT_; op++) {
      const char *name = mcim_op_name((mcim_op_t)op);
      struct series *s = series_get(&mcim_m_crypto_operations, &name, 1, true);
      if (s)
        s->value = (double)mcim_op_read((mcim_op_t)op);
    }
  if (families & MCIM_MF_CRYPTO)
    for (int w = 0; w < MCIM_WORK_COUNT_; w++) {
      const char *name = mcim_work_name((mcim_work_t)w);
      struct series *s = series_get(&mcim_m_work_operations, &name, 1, true);
      if (s)
        s->value = (double)mcim_work_read((mcim_work_t)w);
    }
  for (size_t i = 0; mcim_metrics_catalogue[i]; i++)
    if (mcim_metrics_catalogue[i]->family & families)
      render_metric(f, mcim_metrics_catalogue[i]);
  pthread_mutex_unlock(&metrics_lock);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}
