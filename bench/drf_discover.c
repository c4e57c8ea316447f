/* DRF discovery as devices really do it, timed (bench/drf_scale.sh drives it; issue 10,
 * point 6). For each device named (manufactured by the lab, its agent stopped here so this
 * program holds its TRE):
 *   - ORDERS owner-signed orders of an initial provisioning at the device's SHO, through the
 *     lab exactly as `mcim run` orders (mcim_lab_order: the SHO checks the order and
 *     forwards it to the DRF, which records it by txn);
 *   - a real attach at the VNO with the device's own agent code and software TRE (UMTS AKA
 *     with its PCID credential, dev_attach): the restricted access token of pristine step 4-5;
 *   - POST ro /v1/drf/discover {txn, device} with that token, through the agent's own HTTP
 *     client (dev_call: TLS pinned to the operators' CA, CN = ro, kept alive).
 * Phases, each timed per request on the client, and on the server from the RO's
 * mcim_http_request_duration_seconds histogram (its /metrics before and after the phase):
 *   first    each ordered txn discovered once: the full path (token check, stored-answer
 *            miss, the order by txn, the RO-signed statement, answer + outbox in one
 *            transaction, trace)
 *   repeat   REPEATS more rounds over the same txns: the stored answer (a device's retry)
 *   pending  as many unknown txns: ORDER_PENDING (503), what a device gets before its order
 * Every answer is checked: 200 with the ordered SHO, the "discovery" statement verified as
 * the RO's (outside the timing), the same statement again on a repeat; 503 ORDER_PENDING for
 * an unknown txn. Nothing timed is asserted.
 *
 * Pacing: with RATE=R in the environment (requests per second, > 0) each phase sends on a
 * fixed schedule, request k at start + k/R, instead of back to back, and a request's latency
 * counts from its scheduled time, so one sent late (the one before it slow) is charged its
 * wait too (no coordinated omission). Back to back, every discovery runs while the work the
 * previous one set off (step 8 to the SHO, the SHO's and the PVA's commits) shares the same
 * cores; paced below the lab's rate, it measures the DRF at an arrival rate it sustains.
 *
 * Hook: with PHASE_HOOK=CMD in the environment, `CMD before PHASE` runs (through the shell)
 * before each phase is timed and `CMD after PHASE` once it is done, outside the timing: how
 * bench/drf_pgstat.py counts what PostgreSQL does for one phase (a failing hook ends the run).
 *
 * Usage: drf_discover LAB_DIR ORDERS REPEATS DEVICE:SHO [DEVICE:SHO ...]
 * Output: a line per phase, "sample txn=... device=...", then one JSON line (the last). Exit 1
 * if any answer was wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "device/device_priv.h"
#include "lab/lab_priv.h"
#include "mcim/device.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/util.h"

#define MAX_DEV 16

struct dev {
  const char *name;
  const char *sho;
  struct mcim_device *d;
  struct mcim_http_lite *cli;
  mcim_jose_key_t *owner, *ro_key;
  json_t *params;
  char *token;
};

struct order {
  struct dev *dev;
  char txn[33];
  char *statement; /* the first answer's "discovery" */
  char *proof;     /* the device's request for this txn, signed once as the agent does */
};

struct phase {
  const char *name;
  double *ms;
  size_t n, errors, wrong;
  json_t *causes; /* cause name -> count, for the unexpected ones */
  double srv_count, srv_sum, srv_le1, srv_le2, srv_le25, srv_le5; /* server-side histogram deltas */
  char srv_p50[16], srv_p99[16];
};

/* PHASE_HOOK's command with `when` and the phase's name; 0 without a hook. */
static int phase_hook(const char *when, const char *phase)
{
  const char *hook = getenv("PHASE_HOOK");
  if (!hook || !*hook)
    return 0;
  char cmd[1024];
  if ((size_t)snprintf(cmd, sizeof(cmd), "%s %s %s", hook, when, phase) >= sizeof(cmd)) {
    fprintf(stderr, "drf_discover: PHASE_HOOK too long\n");
    return -1;
  }
  fflush(stdout);
  int st = system(cmd);
  if (st != 0)
    fprintf(stderr, "drf_discover: PHASE_HOOK %s %s failed (status %d)\n", when, phase, st);
  return st;
}

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The RO's histogram of POST /v1/drf/discover, by bucket bound (le), summed over codes. */
#define NB 16
struct hist {
  double le[NB], count[NB], sum, total;
  int n;
};

static void hist_read(mcim_lab_t *lab, struct hist *h)
{
  char url[512];
  memset(h, 0, sizeof(*h));
  snprintf(url, sizeof(url), "%s/metrics", mcim_lab_url(lab, "ro"));
  /* /metrics is text, which mcim_http_request does not keep: curl with the lab's admin
   * certificate */
  FILE *p = NULL;
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "curl -sS --cacert '%s/pki/ca/operators-ca.crt' --cert '%s/pki/admin/cert.pem'"
           " --key '%s/pki/admin/key.pem' '%s'",
           mcim_lab_path(lab), mcim_lab_path(lab), mcim_lab_path(lab), url);
  p = popen(cmd, "r");
  if (!p)
    return;
  char line[1024];
  while (fgets(line, sizeof(line), p)) {
    if (!strstr(line, "route=\"/v1/drf/discover\""))
      continue;
    double v = strtod(strrchr(line, ' ') + 1, NULL);
    if (strncmp(line, "mcim_http_request_duration_seconds_bucket", 41) == 0) {
      const char *le = strstr(line, "le=\"");
      double bound = le && strncmp(le + 4, "+Inf", 4) == 0 ? 1e9 : le ? strtod(le + 4, NULL) : 0;
      int i = 0;
      while (i < h->n && h->le[i] != bound)
        i++;
      if (i == h->n && h->n < NB)
        h->le[h->n++] = bound;
      if (i < NB)
        h->count[i] += v;
    } else if (strncmp(line, "mcim_http_request_duration_seconds_sum", 38) == 0) {
      h->sum += v;
    } else if (strncmp(line, "mcim_http_request_duration_seconds_count", 40) == 0) {
      h->total += v;
    }
  }
  pclose(p);
}

static void bound_text(double le, char out[16])
{
  if (le >= 1e9)
    snprintf(out, 16, "+Inf");
  else
    snprintf(out, 16, "%g", le * 1000);
}

static void hist_delta(const struct hist *a, const struct hist *b, struct phase *ph)
{
  ph->srv_count = b->total - a->total;
  ph->srv_sum = b->sum - a->sum;
  strcpy(ph->srv_p50, "?");
  strcpy(ph->srv_p99, "?");
  bool got50 = false, got99 = false;
  for (int i = 0; i < b->n; i++) { /* buckets are cumulative and listed in order */
    double before = 0;
    for (int j = 0; j < a->n; j++)
      if (a->le[j] == b->le[i])
        before = a->count[j];
    double c = b->count[i] - before;
    if (b->le[i] == 0.001)
      ph->srv_le1 = c;
    if (b->le[i] == 0.002)
      ph->srv_le2 = c;
    if (b->le[i] == 0.0025)
      ph->srv_le25 = c;
    if (b->le[i] == 0.005)
      ph->srv_le5 = c;
    if (!got50 && ph->srv_count > 0 && c >= 0.5 * ph->srv_count) {
      bound_text(b->le[i], ph->srv_p50);
      got50 = true;
    }
    if (!got99 && ph->srv_count > 0 && c >= 0.99 * ph->srv_count) {
      bound_text(b->le[i], ph->srv_p99);
      got99 = true;
    }
  }
}

static void cause_count(struct phase *ph, const char *cause)
{
  json_t *v = json_object_get(ph->causes, cause);
  json_object_set_new(ph->causes, cause, json_integer(json_integer_value(v) + 1));
}

static mcim_cause_t attach(struct dev *v)
{
  struct dev_attach_result ar;
  char scope[16];
  free(v->token);
  v->token = NULL;
  if (dev_session_get(v->d, dev_cfg_str(v->d, "vno"), &v->token, scope) == MCIM_OK)
    return MCIM_OK;
  mcim_cause_t rc = dev_attach(v->d, v->cli, dev_cfg_str(v->d, "vno"), NULL, &ar);
  if (rc == MCIM_OK)
    rc = dev_session_get(v->d, dev_cfg_str(v->d, "vno"), &v->token, scope);
  if (rc != MCIM_OK)
    fprintf(stderr, "drf_discover: %s: attach at the VNO: %s %s\n", v->name, mcim_cause_name(rc),
            ar.detail);
  return rc;
}

/* One discovery of `txn` by `v`, timed; the answer kept in *res. The device's own request
 * (the TRE's proof) is signed outside the timing, once per txn when `kept` is given (the
 * agent shows the same one on every ask, so the RO checks it once), else for this ask. */
static mcim_cause_t discover(struct dev *v, const char *txn, char **kept,
                             struct mcim_http_result *res, double *ms)
{
  json_t *body = json_pack("{s:s,s:s}", "txn", txn, "device", v->name);
  char *fresh = NULL, *cert = NULL;
  mcim_cause_t prc = MCIM_OK;
  memset(res, 0, sizeof(*res));
  if (!kept || !*kept) {
    json_t *extra = json_pack("{s:s}", "for", "discovery");
    prc = v->d->tre->ops->sign(v->d->tre->ctx, "mcim-request+jwt", dev_cfg_str(v->d, "ro"), txn,
                               extra, 300, &fresh);
    json_decref(extra);
    if (prc == MCIM_OK && kept) {
      *kept = fresh;
      fresh = NULL;
    }
  }
  if (prc == MCIM_OK)
    prc = v->d->tre->ops->cert(v->d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (prc != MCIM_OK) {
    json_decref(body);
    free(fresh);
    return prc;
  }
  json_object_set_new(body, "proof", json_string(kept ? *kept : fresh));
  json_object_set_new(body, "tre_cert", json_string(cert));
  free(fresh);
  free(cert);
  double t0 = now_ms();
  mcim_cause_t rc = dev_call(v->d, v->cli, "POST", dev_cfg_str(v->d, "ro"), "/v1/drf/discover",
                             body, v->token, res);
  *ms = now_ms() - t0;
  json_decref(body);
  return rc;
}

/* The answer of a first discovery: 200, the ordered SHO, a statement the RO signed for this
 * device and txn naming that SHO. */
static bool answer_right(struct dev *v, const char *txn, const json_t *answer)
{
  const char *sho = dev_json_str(answer, "sho", 63);
  const char *jws = dev_json_str(answer, "discovery", MCIM_JOSE_MAX_LEN);
  if (!sho || strcmp(sho, v->sho) != 0 || !jws)
    return false;
  mcim_statement_t *st = NULL;
  mcim_jws_expect_t ex = {.iss = dev_cfg_str(v->d, "ro"), .aud = v->name, .sub = v->name,
                          .typ = "mcim-discovery+jwt", .txn = txn, .skew = 300};
  bool ok = mcim_jws_verify(jws, strlen(jws), v->ro_key, &ex, &st) == MCIM_OK;
  const char *s = ok ? mcim_statement_string(st, "sho") : NULL;
  ok = ok && s && strcmp(s, v->sho) == 0 && mcim_statement_string(st, "sho_cert");
  mcim_statement_free(st);
  return ok;
}

static void report(struct phase *ph, json_t *out)
{
  mcim_sort_doubles(ph->ms, ph->n);
  double sum = 0;
  for (size_t i = 0; i < ph->n; i++)
    sum += ph->ms[i];
  double mean = ph->n ? sum / (double)ph->n : 0;
  double srv_mean = ph->srv_count > 0 ? ph->srv_sum * 1000 / ph->srv_count : 0;
  printf("%-8s n=%zu errors=%zu wrong=%zu  client ms: p50 %.3f p95 %.3f p99 %.3f max %.3f mean %.3f"
         "  server: n=%.0f mean %.3f ms, <=1ms %.1f%%, <=2ms %.1f%%, <=2.5ms %.1f%%, p50 <= %s ms, "
         "p99 <= %s ms\n",
         ph->name, ph->n, ph->errors, ph->wrong, mcim_percentile(ph->ms, ph->n, 50), mcim_percentile(ph->ms, ph->n, 95),
         mcim_percentile(ph->ms, ph->n, 99), ph->n ? ph->ms[ph->n - 1] : 0, mean, ph->srv_count, srv_mean,
         ph->srv_count > 0 ? 100 * ph->srv_le1 / ph->srv_count : 0,
         ph->srv_count > 0 ? 100 * ph->srv_le2 / ph->srv_count : 0,
         ph->srv_count > 0 ? 100 * ph->srv_le25 / ph->srv_count : 0, ph->srv_p50, ph->srv_p99);
  json_object_set_new(
      out, ph->name,
      json_pack("{s:I,s:I,s:I,s:o,s:{s:f,s:f,s:f,s:f,s:f},s:{s:I,s:f,s:f,s:f,s:f,s:s,s:s}}", "n",
                (json_int_t)ph->n, "errors", (json_int_t)ph->errors, "wrong",
                (json_int_t)ph->wrong, "causes", json_deep_copy(ph->causes), "client_ms", "p50",
                mcim_percentile(ph->ms, ph->n, 50), "p95", mcim_percentile(ph->ms, ph->n, 95), "p99",
                mcim_percentile(ph->ms, ph->n, 99), "max", ph->n ? ph->ms[ph->n - 1] : 0, "mean", mean,
                "server", "n", (json_int_t)ph->srv_count, "mean_ms", srv_mean, "le_1ms",
                ph->srv_count > 0 ? ph->srv_le1 / ph->srv_count : 0, "le_2ms",
                ph->srv_count > 0 ? ph->srv_le2 / ph->srv_count : 0, "le_2_5ms",
                ph->srv_count > 0 ? ph->srv_le25 / ph->srv_count : 0, "p50_le_ms", ph->srv_p50,
                "p99_le_ms", ph->srv_p99));
}

int main(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: drf_discover LAB_DIR ORDERS REPEATS DEVICE:SHO [DEVICE:SHO ...]\n");
    return 2;
  }
  int orders = atoi(argv[2]), repeats = atoi(argv[3]);
  size_t ndev = (size_t)(argc - 4);
  if (orders < 1 || repeats < 0 || ndev > MAX_DEV) {
    fprintf(stderr, "drf_discover: ORDERS >= 1, REPEATS >= 0, at most %d devices\n", MAX_DEV);
    return 2;
  }
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(argv[1], &lab) != MCIM_OK) {
    fprintf(stderr, "drf_discover: no lab in %s\n", argv[1]);
    return 1;
  }
  struct dev devs[MAX_DEV];
  memset(devs, 0, sizeof(devs));
  for (size_t i = 0; i < ndev; i++) {
    struct dev *v = &devs[i];
    char *colon = strchr(argv[4 + i], ':');
    if (!colon) {
      fprintf(stderr, "drf_discover: %s: DEVICE:SHO expected\n", argv[4 + i]);
      return 2;
    }
    *colon = '\0';
    v->name = argv[4 + i];
    v->sho = colon + 1;
    const char *dir = mcim_lab_device_dir(lab, v->name);
    mcim_cause_t rc = dir ? MCIM_OK : MCIM_NOT_FOUND;
    if (rc == MCIM_OK)
      mcim_lab_device_stop(lab, v->name); /* this program holds its TRE now */
    if (rc == MCIM_OK)
      rc = mcim_device_open(dir, &v->d);
    if (rc == MCIM_OK)
      rc = mcim_device_client_new(v->d, &v->cli);
    if (rc == MCIM_OK)
      rc = mcim_lab_owner_load_dir(dir, &v->owner, &v->params);
    if (rc == MCIM_OK)
      rc = dev_peer_key(v->d, v->cli, dev_cfg_str(v->d, "ro"), &v->ro_key, NULL);
    if (rc != MCIM_OK) {
      fprintf(stderr, "drf_discover: device %s: %s\n", v->name, mcim_cause_name(rc));
      return 1;
    }
  }

  /* the orders, as the owner makes them (step 1), interleaved across the devices */
  size_t norders = ndev * (size_t)orders;
  struct order *ord = calloc(norders, sizeof(*ord));
  double t0 = now_ms();
  for (size_t k = 0; k < norders; k++) {
    struct order *o = &ord[k];
    uint8_t b[16];
    char detail[256] = "";
    o->dev = &devs[k % ndev];
    mcim_random(b, sizeof(b));
    mcim_hex_encode(b, sizeof(b), o->txn);
    struct mcim_lab_run run = {.device = o->dev->name, .procedure = "initial", .sho = o->dev->sho};
    mcim_cause_t rc = mcim_lab_order(lab, &run, o->dev->owner, o->dev->params, o->txn, detail,
                                     sizeof(detail));
    if (rc != MCIM_OK) {
      fprintf(stderr, "drf_discover: order %zu of %s: %s %s\n", k, o->dev->name,
              mcim_cause_name(rc), detail);
      return 1;
    }
  }
  double order_s = (now_ms() - t0) / 1000;
  printf("orders   %zu in %.1f s (%.1f/s), through the SHOs to the DRF\n", norders, order_s,
         norders / order_s);

  for (size_t i = 0; i < ndev; i++)
    if (attach(&devs[i]) != MCIM_OK)
      return 1;

  double rate = getenv("RATE") ? atof(getenv("RATE")) : 0;
  if (rate < 0 || rate > 100000) {
    fprintf(stderr, "drf_discover: RATE must be between 0 (back to back) and 100000/s\n");
    return 2;
  }
  struct phase ph[3] = {{.name = "first"}, {.name = "repeat"}, {.name = "pending"}};
  size_t sizes[3] = {norders, norders * (size_t)repeats, norders};
  json_t *out = json_object();
  bool bad = false;
  for (int p = 0; p < 3; p++) {
    struct hist h0, h1;
    ph[p].ms = calloc(sizes[p] ? sizes[p] : 1, sizeof(double));
    ph[p].causes = json_object();
    if (phase_hook("before", ph[p].name) != 0)
      return 1;
    hist_read(lab, &h0);
    double start = now_ms();
    for (size_t k = 0; k < sizes[p]; k++) {
      double late = 0;
      if (rate > 0) { /* open loop: wait for this request's slot; if past it, charge the lag */
        double due = start + (double)k * 1000.0 / rate, wait = due - now_ms();
        if (wait > 0) {
          struct timespec ts = {(time_t)(wait / 1000), (long)(fmod(wait, 1000.0) * 1e6)};
          nanosleep(&ts, NULL);
        } else {
          late = -wait;
        }
      }
      struct order *o = &ord[k % norders];
      struct dev *v = o->dev;
      struct mcim_http_result res;
      char txn[33];
      double ms = 0;
      if (p == 2) { /* a txn no order has: "not yet" */
        uint8_t b[16];
        mcim_random(b, sizeof(b));
        mcim_hex_encode(b, sizeof(b), txn);
      } else {
        snprintf(txn, sizeof(txn), "%s", o->txn);
      }
      if (!v->token || attach(v) != MCIM_OK) /* a token near its expiry: attach again */
        return 1;
      char **kept = p == 2 ? NULL : &o->proof;
      mcim_cause_t rc = discover(v, txn, kept, &res, &ms);
      if (dev_cause_token(rc)) { /* expired between the check and the call: not timed */
        mcim_http_result_clear(&res);
        free(v->token);
        v->token = NULL;
        if (attach(v) != MCIM_OK)
          return 1;
        rc = discover(v, txn, kept, &res, &ms);
      }
      ph[p].ms[ph[p].n++] = ms + late;
      if (p == 2) {
        if (rc != MCIM_ORDER_PENDING || res.status != 503) {
          ph[p].wrong++;
          cause_count(&ph[p], mcim_cause_name(rc));
        }
      } else if (rc != MCIM_OK) {
        ph[p].errors++;
        cause_count(&ph[p], mcim_cause_name(rc));
      } else if (!answer_right(v, txn, res.json)) {
        ph[p].wrong++;
        cause_count(&ph[p], "WRONG_ANSWER");
      } else {
        const char *jws = dev_json_str(res.json, "discovery", MCIM_JOSE_MAX_LEN);
        if (p == 0)
          o->statement = strdup(jws);
        else if (!o->statement || strcmp(o->statement, jws) != 0) {
          ph[p].wrong++; /* a retry must get the stored answer */
          cause_count(&ph[p], "NOT_THE_STORED_ANSWER");
        }
      }
      mcim_http_result_clear(&res);
    }
    hist_read(lab, &h1);
    if (phase_hook("after", ph[p].name) != 0)
      return 1;
    hist_delta(&h0, &h1, &ph[p]);
    report(&ph[p], out);
    bad = bad || ph[p].errors || ph[p].wrong;
  }
  printf("sample txn=%s device=%s\n", ord[0].txn, ord[0].dev->name);
  json_object_set_new(out, "rate", json_real(rate));
  json_object_set_new(out, "orders", json_integer((json_int_t)norders));
  json_object_set_new(out, "order_seconds", json_real(order_s));
  json_object_set_new(out, "devices", json_integer((json_int_t)ndev));
  json_object_set_new(out, "sample_txn", json_string(ord[0].txn));
  json_object_set_new(out, "sample_device", json_string(ord[0].dev->name));
  char *text = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(6));
  printf("%s\n", text);
  free(text);
  json_decref(out);
  for (int p = 0; p < 3; p++) {
    free(ph[p].ms);
    json_decref(ph[p].causes);
  }
  for (size_t k = 0; k < norders; k++) {
    free(ord[k].statement);
    free(ord[k].proof);
  }
  free(ord);
  for (size_t i = 0; i < ndev; i++) {
    free(devs[i].token);
    mcim_jose_key_free(devs[i].owner);
    mcim_jose_key_free(devs[i].ro_key);
    json_decref(devs[i].params);
    mcim_http_lite_free(devs[i].cli);
    mcim_device_free(devs[i].d);
  }
  mcim_lab_free(lab);
  return bad ? 1 : 0;
}
