/* What `mcim loadgen`'s report measures besides the run itself (loadgen.c): latencies by name
 * (samples and their percentiles, per procedure and per step), the CPU of this process and of
 * the lab's daemons (/proc), and the cryptographic operations per procedure (this process's
 * counters and every daemon instance's /metrics). Apart from loadgen.c: measuring, not
 * driving devices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "lab/loadgen_priv.h"
#include "mcim/http.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

/* ---- samples: latencies in milliseconds, by name ---- */

struct series *lg_series_get(struct samples *sm, const char *name, int rank)
{
  for (size_t i = 0; i < sm->n; i++)
    if (strcmp(sm->s[i].name, name) == 0)
      return &sm->s[i];
  if (sm->n == sm->cap) {
    size_t cap = sm->cap ? sm->cap * 2 : 16;
    struct series *s = realloc(sm->s, cap * sizeof(*s));
    if (!s)
      return NULL;
    sm->s = s;
    sm->cap = cap;
  }
  struct series *s = &sm->s[sm->n++];
  memset(s, 0, sizeof(*s));
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->rank = rank;
  return s;
}

void lg_series_add(struct series *s, double ms)
{
  if (!s)
    return;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    double *v = realloc(s->v, cap * sizeof(*v));
    if (!v)
      return;
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = ms;
}

void lg_series_add_cpu(struct series *s, double ms, double cpu_ms, double owner_ms)
{
  if (!s)
    return;
  lg_series_add(s, ms);
  s->cpu_ms += cpu_ms;
  s->owner_ms += owner_ms;
}

double lg_round2(double x) { return (double)(long long)(x * 100.0 + 0.5) / 100.0; }

json_t *lg_latency_json(struct series *s)
{
  mcim_sort_doubles(s->v, s->n);
  return json_pack("{s:f,s:f,s:f,s:f}", "p50", lg_round2(mcim_percentile(s->v, s->n, 50)), "p95",
                   lg_round2(mcim_percentile(s->v, s->n, 95)), "p99",
                   lg_round2(mcim_percentile(s->v, s->n, 99)), "max",
                   lg_round2(s->n ? s->v[s->n - 1] : 0));
}

void lg_samples_free(struct samples *sm)
{
  for (size_t i = 0; i < sm->n; i++)
    free(sm->s[i].v);
  free(sm->s);
}

static int cmp_rank(const void *a, const void *b)
{
  const struct series *x = a, *y = b;
  return x->rank < y->rank ? -1 : x->rank > y->rank;
}

json_t *lg_series_report(struct samples *sm)
{
  json_t *o = json_object();
  if (sm->n > 1)
    qsort(sm->s, sm->n, sizeof(*sm->s), cmp_rank);
  for (size_t i = 0; o && i < sm->n; i++) {
    const struct series *s = &sm->s[i];
    double n = s->n ? (double)s->n : 1;
    json_t *e = json_pack("{s:I,s:o}", "count", (json_int_t)s->n, "latency_ms",
                          lg_latency_json(&sm->s[i]));
    if (e) /* the mean: a sum of CPU has no percentiles */
      json_object_set_new(e, "device_cpu_ms", json_real(lg_round2(s->cpu_ms / n)));
    if (e && s->owner_ms > 0)
      json_object_set_new(e, "owner_cpu_ms", json_real(lg_round2(s->owner_ms / n)));
    json_object_set_new(o, s->name, e);
  }
  return o;
}

/* CPU seconds (user + system) of the lab's daemons, from /proc. */
double lg_daemons_cpu(const json_t *lab_json)
{
  double total = 0;
  long hz = sysconf(_SC_CLK_TCK);
  size_t i;
  json_t *r;
  json_array_foreach (json_object_get(lab_json, "roles"), i, r) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%lld/stat",
             (long long)json_integer_value(json_object_get(r, "pid")));
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, stime = 0;
    /* after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    if (p &&
        /* the kernel's own numbers, never out of range */
        // NOLINTNEXTLINE(cert-err34-c)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stime) == 2)
      total += (double)(ut + stime) / (double)hz;
  }
  return total;
}

double lg_self_cpu(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- cryptographic operations per procedure (include/mcim/opcount.h) ----
 * This process's counts are read directly; every daemon instance's (lab.json "roles": one
 * entry per process, with its own url) from its /metrics, before and after the procedures
 * (after: once the outboxes are drained, so the deliveries that follow a procedure's end
 * count too). Taken out of the daemons' figures: the scrapes' own TLS handshakes, and one
 * full handshake per GET /v1/health (HAProxy's health checks when a role runs several
 * instances: a new connection each). */

void lg_self_ops(struct opsnap *s)
{
  for (int op = 0; op < MCIM_OP_COUNT_; op++)
    s->v[op] = (double)mcim_op_read((mcim_op_t)op);
  for (int w = 0; w < MCIM_WORK_COUNT_; w++)
    s->w[w] = (double)mcim_work_read((mcim_work_t)w);
  s->ok = true;
}

static double tls_client_ops(void)
{
  return (double)(mcim_op_read(MCIM_OP_TLS_CLIENT_FULL) + mcim_op_read(MCIM_OP_TLS_CLIENT_RESUMED));
}

static const char *crypto_name(int i)
{
  return mcim_op_name((mcim_op_t)i);
}

static const char *work_name(int i)
{
  return mcim_work_name((mcim_work_t)i);
}

/* A line of the family whose text up to its op's name is `prefix` (`NAME{op="`): -1 if the
 * line is not of it; else its value put in out[i] for the i that name(i) calls it, and 1, or
 * 0 for a line of another form or an op we do not know. */
static int op_line(char *line, const char *prefix, const char *(*name)(int), int n, double *out)
{
  size_t plen = strlen(prefix);
  if (strncmp(line, prefix, plen) != 0)
    return -1;
  char *op = line + plen, *q = strchr(op, '"');
  if (!q || q[1] != '}' || q[2] != ' ')
    return 0;
  *q = '\0';
  for (int i = 0; i < n; i++)
    if (strcmp(op, name(i)) == 0) {
      out[i] = strtod(q + 3, NULL);
      return 1;
    }
  return 0;
}

/* obj[key] += v (a real; created at v). */
static void json_add_real(json_t *obj, const char *key, double v)
{
  json_t *old = json_object_get(obj, key);
  json_object_set_new(obj, key, json_real(v + (old ? json_real_value(old) : 0)));
}

/* A line `NAME{a="x",b="y"} V` of the family `prefix` (`NAME{`): its label values joined by
 * spaces as a key of s->cpu, V added to it; false if the line is not of the family. */
static bool cpu_line(const char *line, const char *prefix, const char *tag, struct opsnap *s)
{
  size_t plen = strlen(prefix);
  if (strncmp(line, prefix, plen) != 0)
    return false;
  char key[256];
  size_t k = 0;
  if (tag) {
    int w = snprintf(key, sizeof(key), "%s ", tag);
    if (w < 0 || (size_t)w >= sizeof(key))
      return true;
    k = (size_t)w;
  }
  const char *p = line + plen;
  while (*p && *p != '}') {
    const char *q = strchr(p, '"'); /* name="value" */
    if (!q)
      return true;
    const char *e = strchr(q + 1, '"');
    if (!e)
      return true;
    if (k && key[k - 1] != ' ' && k + 1 < sizeof(key))
      key[k++] = ' ';
    for (q++; q < e && k + 1 < sizeof(key); q++)
      key[k++] = *q;
    p = e + 1;
    if (*p == ',')
      p++;
  }
  key[k] = '\0';
  if (*p != '}' || p[1] != ' ')
    return true;
  double v = strtod(p + 2, NULL);
  if (!s->cpu)
    s->cpu = json_object();
  json_add_real(s->cpu, key, v);
  return true;
}

void lg_opsnap_clear(struct opsnap *s, size_t n)
{
  for (size_t i = 0; s && i < n; i++) {
    json_decref(s[i].cpu);
    s[i].cpu = NULL;
  }
}

/* One instance's /metrics into *s (s->ok false if it did not answer). */
static void scrape_ops(mcim_lab_t *lab, const json_t *role, struct opsnap *s)
{
  static const char op_key[] = "mcim_crypto_operations_total{op=\"";
  static const char work_key[] = "mcim_work_operations_total{op=\"";
  static const char health_key[] =
      "mcim_http_requests_total{method=\"GET\",route=\"/v1/health\",cause=\"OK\"} ";
  char url[512], *text = NULL;
  struct mcim_http_result res;
  struct mcim_http_client *cli = mcim_lab_public_client(lab);
  const char *base = json_string_value(json_object_get(role, "url"));
  json_decref(s->cpu);
  memset(s, 0, sizeof(*s));
  if (!cli || !base)
    return;
  snprintf(url, sizeof(url), "%s/metrics", base);
  mcim_http_get_text(cli, url, &res, &text);
  mcim_http_result_clear(&res);
  if (res.status != 200 || !text) {
    free(text);
    return;
  }
  int seen = 0, seen_work = 0;
  for (char *line = text; line && *line;) {
    char *next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    int k;
    if ((k = op_line(line, op_key, crypto_name, MCIM_OP_COUNT_, s->v)) >= 0)
      seen += k;
    else if ((k = op_line(line, work_key, work_name, MCIM_WORK_COUNT_, s->w)) >= 0)
      seen_work += k;
    else if (strncmp(line, health_key, sizeof(health_key) - 1) == 0) {
      s->health = strtod(line + sizeof(health_key) - 1, NULL);
    } else if (!cpu_line(line, "mcim_http_request_cpu_seconds_total{", NULL, s))
      cpu_line(line, "mcim_thread_cpu_seconds_total{", "thread", s);
    line = next;
  }
  s->ok = seen == MCIM_OP_COUNT_ && seen_work == MCIM_WORK_COUNT_;
  free(text);
}

/* Every instance's /metrics; `scrape_tls[i]`: the TLS handshakes this process made to scrape
 * instance i (0 on a kept-alive connection). */
void lg_scrape_all(mcim_lab_t *lab, const json_t *lab_json, struct opsnap *snaps,
                   double *scrape_tls, size_t n)
{
  size_t i;
  json_t *r;
  json_array_foreach (json_object_get(lab_json, "roles"), i, r) {
    if (i >= n)
      break;
    double t0 = tls_client_ops();
    scrape_ops(lab, r, &snaps[i]);
    scrape_tls[i] = tls_client_ops() - t0;
  }
}

/* The report's "crypto_ops" and "crypto_ops_per_procedure". */
void lg_ops_report(const json_t *lab_json, const struct opsnap *self0, const struct opsnap *self1,
                   const struct opsnap *d0, const struct opsnap *d1, const double *scrape_tls,
                   size_t n, long done, json_t *report)
{
  double self[MCIM_OP_COUNT_], daemons[MCIM_OP_COUNT_] = {0}, health = 0, scrapes = 0;
  size_t scraped = 0;
  json_t *missing = json_array();
  for (size_t i = 0; i < n; i++) {
    const json_t *r = json_array_get(json_object_get(lab_json, "roles"), i);
    if (!d0[i].ok || !d1[i].ok) {
      const char *name = json_string_value(json_object_get(r, "name"));
      json_int_t k = json_integer_value(json_object_get(r, "instance"));
      char what[96];
      int w = snprintf(what, sizeof(what), "%s", name ? name : "?");
      if (k > 0 && w > 0 && (size_t)w < sizeof(what))
        snprintf(what + w, sizeof(what) - (size_t)w, "#%lld", (long long)k);
      json_array_append_new(missing, json_string(what));
      continue;
    }
    scraped++;
    for (int op = 0; op < MCIM_OP_COUNT_; op++)
      daemons[op] += d1[i].v[op] - d0[i].v[op];
    double h = d1[i].health - d0[i].health;
    health += h;
    scrapes += scrape_tls[i];
    daemons[MCIM_OP_TLS_SERVER_FULL] -= scrape_tls[i] + h;
  }
  if (daemons[MCIM_OP_TLS_SERVER_FULL] < 0) { /* health checks on resumed sessions */
    daemons[MCIM_OP_TLS_SERVER_RESUMED] += daemons[MCIM_OP_TLS_SERVER_FULL];
    daemons[MCIM_OP_TLS_SERVER_FULL] = 0;
  }
  json_t *jl = json_object(), *jd = json_object(), *per = json_object();
  for (int op = 0; op < MCIM_OP_COUNT_; op++) {
    const char *name = mcim_op_name((mcim_op_t)op);
    self[op] = self1->v[op] - self0->v[op];
    json_object_set_new(jl, name, json_integer((json_int_t)self[op]));
    json_object_set_new(jd, name, json_integer((json_int_t)daemons[op]));
    json_object_set_new(per, name,
                        json_real(done ? lg_round2((self[op] + daemons[op]) / (double)done) : 0));
  }
  json_object_set_new(report, "crypto_ops_per_procedure", per);
  json_object_set_new(report, "crypto_ops",
                      json_pack("{s:o,s:o,s:I,s:o,s:{s:I,s:I}}", "loadgen", jl, "daemons", jd,
                                "instances_scraped", (json_int_t)scraped, "instances_missing",
                                missing, "excluded", "scrape_handshakes", (json_int_t)scrapes,
                                "health_checks", (json_int_t)health));
}

/* The report's "work" and "work_per_procedure": the instances that did not answer are those
 * crypto_ops.instances_missing names. Taken out of the daemons' figures, per instance: the
 * first scrape's request (counted once answered, after its figures were read: inside the
 * window; the second one's is not), the second scrape's read of the outbox (runtime.c's
 * GET /metrics runs it before its figures are read: inside too; the first one's is not), and
 * the GET /v1/health answered in the window (no store work). */
void lg_work_report(const struct opsnap *self0, const struct opsnap *self1,
                    const struct opsnap *d0, const struct opsnap *d1, size_t n, long done,
                    json_t *report)
{
  double daemons[MCIM_WORK_COUNT_] = {0}, health = 0, scrapes = 0;
  for (size_t i = 0; i < n; i++) {
    if (!d0[i].ok || !d1[i].ok)
      continue;
    for (int w = 0; w < MCIM_WORK_COUNT_; w++)
      daemons[w] += d1[i].w[w] - d0[i].w[w];
    double h = d1[i].health - d0[i].health;
    health += h;
    scrapes += 1;
    daemons[MCIM_WORK_HTTP_REQUEST] -= 1 + h;
    daemons[MCIM_WORK_STORE_STATEMENT] -= 1;
  }
  for (int w = 0; w < MCIM_WORK_COUNT_; w++)
    if (daemons[w] < 0)
      daemons[w] = 0;
  json_t *jl = json_object(), *jd = json_object(), *per = json_object();
  for (int w = 0; w < MCIM_WORK_COUNT_; w++) {
    const char *name = mcim_work_name((mcim_work_t)w);
    double self = self1->w[w] - self0->w[w];
    json_object_set_new(jl, name, json_integer((json_int_t)self));
    json_object_set_new(jd, name, json_integer((json_int_t)daemons[w]));
    json_object_set_new(per, name,
                        json_real(done ? lg_round2((self + daemons[w]) / (double)done) : 0));
  }
  json_object_set_new(report, "work_per_procedure", per);
  json_object_set_new(report, "work",
                      json_pack("{s:o,s:o,s:{s:I,s:I}}", "loadgen", jl, "daemons", jd,
                                "excluded", "metrics_scrapes", (json_int_t)scrapes,
                                "health_checks", (json_int_t)health));
}

struct kv {
  const char *k;
  double v;
};

static int kv_larger_first(const void *a, const void *b)
{
  double x = ((const struct kv *)a)->v, y = ((const struct kv *)b)->v;
  return (x < y) - (x > y);
}

/* The report's "daemons_cpu": {"by_route_ms": {"ROLE METHOD ROUTE": ms per procedure},
 * "by_thread_ms": {"ROLE thread NAME": ms per procedure}}, the largest first, each summed
 * over the role's instances that answered both scrapes. A route's figure is its handlers'
 * CPU (mcim_http_request_cpu_seconds_total); what a thread's figure has beyond its routes' is
 * the TLS and HTTP around them. Left out of the routes: loadgen's own scrapes and HAProxy's
 * health checks (no procedure's work; their threads' time stays in by_thread_ms). */
void lg_cpu_report(const json_t *lab_json, const struct opsnap *d0, const struct opsnap *d1,
                   size_t n, long done, json_t *report)
{
  json_t *sum = json_object();
  for (size_t i = 0; i < n && done > 0; i++) {
    if (!d0[i].ok || !d1[i].ok || !d1[i].cpu)
      continue;
    const json_t *r = json_array_get(json_object_get(lab_json, "roles"), i);
    const char *role = json_string_value(json_object_get(r, "name"));
    const char *k;
    json_t *v;
    json_object_foreach (d1[i].cpu, k, v) {
      json_t *before = d0[i].cpu ? json_object_get(d0[i].cpu, k) : NULL;
      double ms = (json_real_value(v) - (before ? json_real_value(before) : 0)) * 1000.0 /
                  (double)done;
      if (ms < 0.005 || strcmp(k, "GET /metrics") == 0 || strcmp(k, "GET /v1/health") == 0)
        continue; /* nothing in the window; loadgen's scrapes, HAProxy's checks */
      char key[320];
      snprintf(key, sizeof(key), "%s %s", role ? role : "?", k);
      json_add_real(sum, key, ms);
    }
  }
  /* sorted by CPU, largest first: a JSON object keeps its keys in insertion order */
  size_t m = json_object_size(sum), j = 0;
  struct kv *all = calloc(m ? m : 1, sizeof(*all));
  json_t *routes = json_object(), *threads = json_object();
  const char *k;
  json_t *v;
  if (all) {
    json_object_foreach (sum, k, v) {
      all[j].k = k;
      all[j++].v = json_real_value(v);
    }
    qsort(all, j, sizeof(*all), kv_larger_first);
    for (size_t a = 0; a < j; a++)
      json_object_set_new(strstr(all[a].k, " thread ") ? threads : routes, all[a].k,
                          json_real(lg_round2(all[a].v)));
  }
  free(all);
  json_decref(sum);
  json_object_set_new(report, "daemons_cpu",
                      json_pack("{s:o,s:o}", "by_route_ms", routes, "by_thread_ms", threads));
}
