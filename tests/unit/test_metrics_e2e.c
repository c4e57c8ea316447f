/* GET /metrics against a real lab (mcimd processes on loopback, real TLS, device agents):
 * a known sequence, then the exact counter values scraped from the roles and the agent.
 *
 *  - the exposition format of the registry itself (in this process): HELP/TYPE, label
 *    escaping, cumulative histogram buckets, the label-count check;
 *  - attach at the VNO with a software USIM (as tests/unit/test_access_e2e.c): a success,
 *    a wrong key (MAC failure at the USIM, then a forged RES: RES_MISMATCH, then a second
 *    answer: WRONG_STATE), a USIM ahead of the ICF (AUTS, resynchronisation, success), an
 *    expired PCID, an unknown PCID; then the VNO's RM.RegInit* / AMF.Auth* counters, its
 *    HTTP counters per route pattern, and the ICF's AuC counters at the RO;
 *  - an initial provisioning through mcim_lab_run (include/mcim/lab_run.h) and one with
 *    tampered firmware: the SHO's procedure counters, its access and AuC counters, its outbox,
 *    and the agents' counters (procedures, attaches, AKA at the device);
 *  - mcim_build_info (version and commit, value 1) on every role and on an agent;
 *  - the work counts (include/mcim/opcount.h): their names, a scrape's own request and
 *    statement, the SHO's commits, the agent's TRE synced writes. */
#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/aka.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/metrics.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "mcim/version.h"

#include "soft_device_fixture.h"

static char dir[] = "/tmp/mcim-metrics-XXXXXX";

/* ---- scraping ---- */

struct buf {
  char *p;
  size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
  struct buf *b = ud;
  size_t n = size * nmemb;
  char *np = realloc(b->p, b->n + n + 1);
  if (!np)
    return 0;
  b->p = np;
  memcpy(b->p + b->n, ptr, n);
  b->n += n;
  b->p[b->n] = '\0';
  return n;
}

/* The exposition text of a role (https) or a device agent (its control socket). */
static char *scrape(const char *role, const char *device)
{
  char url[512], sock[512];
  struct buf b = {0};
  char *ctype = NULL;
  long status = 0;
  CURL *c = curl_easy_init();
  assert_non_null(c);
  if (device) {
    snprintf(sock, sizeof(sock), "%s/control.sock", mcim_lab_device_dir(lab, device));
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    snprintf(url, sizeof(url), "http://localhost/metrics");
  } else {
    snprintf(url, sizeof(url), "%s/metrics", mcim_lab_url(lab, role));
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  assert_int_equal(curl_easy_perform(c), CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
  assert_int_equal(status, 200);
  assert_non_null(ctype);
  assert_string_equal(ctype, MCIM_METRICS_CONTENT_TYPE);
  curl_easy_cleanup(c);
  assert_non_null(b.p);
  return b.p;
}

/* The value of one series ("name" or "name{l=\"v\",...}", exactly as exposed); -1 when the
 * text has no such line. */
static double series(const char *text, const char *name)
{
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, name, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return -1;
}

/* The same, 0 for a series never created (what Prometheus sees as "no increase"). */
static double count(const char *text, const char *name)
{
  double v = series(text, name);
  return v < 0 ? 0 : v;
}

/* Every series of the family `prefix` (ending in '{') has the label cause="<cause>". */
static void only_cause(const char *text, const char *prefix, const char *cause)
{
  char want[80];
  snprintf(want, sizeof(want), "cause=\"%s\"", cause);
  size_t n = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (strncmp(p, prefix, n) != 0)
      continue;
    const char *hit = strstr(p, want);
    if (!hit || hit >= p + len)
      fail_msg("unexpected series: %.*s", (int)len, p);
  }
}

#define assert_metric(text, name, want)                                                       \
  do {                                                                                        \
    double got_ = count((text), (name));                                                      \
    if (got_ != (double)(want))                                                               \
      fail_msg("%s = %g, want %g", (name), got_, (double)(want));                             \
  } while (0)

/* mcim_build_info: one series, value 1, the version and commit of this build (the daemons
 * and the agents are built from the same tree as this test). */
static void assert_build_info(const char *text)
{
  char name[256];
  snprintf(name, sizeof(name), "mcim_build_info{version=\"%s\",commit=\"%s\"}",
           mcim_version_text(), mcim_version_commit());
  if (series(text, name) != 1)
    fail_msg("no \"%s 1\" in:\n%s", name, text);
  assert_non_null(strstr(text, "# TYPE mcim_build_info gauge\n"));
  const char *first = strstr(text, "\nmcim_build_info{");
  assert_non_null(first);
  assert_null(strstr(first + 1, "\nmcim_build_info{")); /* one series only */
}

/* The USIM answers; RES or AUTS to the VNO (soft_device_fixture.h). */
static mcim_cause_t answer(struct usim *u, json_t *challenge, mcim_cause_t *net_rc, json_t **next)
{
  return usim_answer(u, challenge, net_rc, NULL, 0, next);
}

/* ---- fixture ---- */

static int setup(void **state)
{
  (void)state;
  return soft_lab_up(dir);
}

static int teardown(void **state)
{
  (void)state;
  return soft_lab_down(dir);
}

static void test_exposition_format(void **state)
{
  (void)state;
  mcim_metric_inc(&mcim_m_amf_auth_fail, MCIM_LABELS("we\"ird\\va\nlue"));
  mcim_metric_observe(&mcim_m_http_request_duration, MCIM_LABELS("GET", "/x/{id}", "2xx"), 0.003);
  mcim_metric_observe(&mcim_m_http_request_duration, MCIM_LABELS("GET", "/x/{id}", "2xx"), 20.0);
  mcim_metric_add(&mcim_m_auc_av_generated, NULL, 5);
  mcim_metric_add(&mcim_m_auc_av_generated, NULL, -3); /* a counter never goes down */
  mcim_metric_inc(&mcim_m_amf_auth_fail, NULL);        /* wrong label count: ignored */
  mcim_metric_inc(&mcim_m_amf_auth_fail, MCIM_LABELS("a", "b"));
  char *t = mcim_metrics_render(MCIM_MF_ACCESS | MCIM_MF_HTTP | MCIM_MF_AUC);
  assert_non_null(t);
  assert_non_null(strstr(t, "# HELP mcim_amf_auth_fail_total "));
  assert_non_null(strstr(t, "AMF.AuthFail.cause"));
  assert_non_null(strstr(t, "# TYPE mcim_amf_auth_fail_total counter\n"));
  assert_non_null(strstr(t, "# TYPE mcim_http_request_duration_seconds histogram\n"));
  assert_metric(t, "mcim_amf_auth_fail_total{cause=\"we\\\"ird\\\\va\\nlue\"}", 1);
  assert_metric(t, "mcim_auc_av_generated_total", 5);
  assert_metric(t, "mcim_amf_auth_req_total", 0);
  assert_true(series(t, "mcim_amf_auth_req_total") == 0); /* shown while still 0 */
  const char *h = "mcim_http_request_duration_seconds_bucket{method=\"GET\",route=\"/x/{id}\","
                  "code=\"2xx\",le=";
  char name[256];
  snprintf(name, sizeof(name), "%s\"0.002\"}", h); /* the DRF's target, a bucket of its own */
  assert_metric(t, name, 0);
  snprintf(name, sizeof(name), "%s\"0.0025\"}", h);
  assert_metric(t, name, 0);
  snprintf(name, sizeof(name), "%s\"0.005\"}", h);
  assert_metric(t, name, 1);
  snprintf(name, sizeof(name), "%s\"10\"}", h);
  assert_metric(t, name, 1);
  snprintf(name, sizeof(name), "%s\"+Inf\"}", h);
  assert_metric(t, name, 2);
  assert_metric(t, "mcim_http_request_duration_seconds_count{method=\"GET\",route=\"/x/{id}\","
                   "code=\"2xx\"}", 2);
  assert_metric(t, "mcim_http_request_duration_seconds_sum{method=\"GET\",route=\"/x/{id}\","
                   "code=\"2xx\"}", 20.003);
  assert_null(strstr(t, "mcim_procedures_")); /* not a family asked for */
  assert_null(strstr(t, "mcim_build_info"));   /* nor the process family */
  assert_int_equal(mcim_metric_value(&mcim_m_amf_auth_fail, MCIM_LABELS("a")), 0);
  free(t);
  /* the process family: the build, however often it is rendered */
  for (int i = 0; i < 2; i++) {
    t = mcim_metrics_render(MCIM_MF_PROCESS);
    assert_non_null(t);
    assert_build_info(t);
    free(t);
  }
}

/* Attach at the VNO: every outcome once, then the exact counters of the VNO and the RO. */
static void test_vno_attach_counters(void **state)
{
  (void)state;
  struct usim u;
  mcim_cause_t net = MCIM_INTERNAL;
  json_t *again = NULL;

  /* 1. success */
  usim_init(&u, K);
  register_pcid("001019100000001", "msoft1", mcim_now() + 3600);
  json_t *c = attach_start("001019100000001", MCIM_OK);
  assert_int_equal(answer(&u, c, &net, NULL), MCIM_OK);
  assert_int_equal(net, MCIM_OK);
  json_decref(c);

  /* 2. wrong key: MAC failure at the USIM, a forged RES, then a second answer */
  uint8_t wrong[16];
  memcpy(wrong, K, 16);
  wrong[0] ^= 0x80;
  usim_init(&u, wrong);
  register_pcid("001019100000002", "msoft2", mcim_now() + 3600);
  c = attach_start("001019100000002", MCIM_OK);
  assert_int_equal(answer(&u, c, &net, NULL), MCIM_MAC_FAILURE);
  char path[128];
  snprintf(path, sizeof(path), "/v1/attach/%s", json_string_value(json_object_get(c, "attach_id")));
  json_t *body = json_pack("{s:s}", "res", "0011223344556677");
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r),
                   MCIM_RES_MISMATCH);
  mcim_http_result_clear(&r);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r),
                   MCIM_WRONG_STATE);
  mcim_http_result_clear(&r);
  json_decref(body);
  json_decref(c);

  /* 3. a USIM ahead of the ICF: AUTS, resynchronisation, a new challenge, success */
  usim_init(&u, K);
  register_pcid("001019100000003", "msoft3", mcim_now() + 3600);
  struct mcim_sqn_he he, nhe;
  assert_int_equal(mcim_sqn_he_init(&u.params, &he), MCIM_OK);
  mcim_milenage_t *m = NULL;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, u.k, u.opc), MCIM_OK);
  for (int i = 0; i < 100; i++) {
    uint64_t sqn;
    uint8_t sqnb[6];
    struct mcim_aka_av av;
    struct mcim_sqn_usim un;
    struct mcim_aka_usim_out out;
    assert_int_equal(mcim_sqn_he_next(&u.params, &he, &nhe, &sqn), MCIM_OK);
    he = nhe;
    mcim_sqn_to_bytes(sqn, sqnb);
    assert_int_equal(mcim_aka_gen_av(m, NULL, sqnb, (const uint8_t *)"\x80\x00", &av), MCIM_OK);
    assert_int_equal(mcim_aka_usim_check(m, &u.params, &u.sqn, av.rand, av.autn, &un, &out),
                     MCIM_OK);
    u.sqn = un;
  }
  mcim_milenage_free(m);
  c = attach_start("001019100000003", MCIM_OK);
  assert_int_equal(answer(&u, c, &net, &again), MCIM_SYNC_FAILURE);
  assert_int_equal(net, MCIM_OK);
  assert_non_null(again);
  assert_int_equal(answer(&u, again, &net, NULL), MCIM_OK);
  assert_int_equal(net, MCIM_OK);
  json_decref(c);
  json_decref(again);

  /* 4. an expired PCID, 5. an unknown one */
  register_pcid("001019100000004", "msoft4", mcim_now() - 1);
  assert_null(attach_start("001019100000004", MCIM_CREDENTIAL_EXPIRED));
  assert_null(attach_start("001019199999999", MCIM_UNKNOWN_IDENTITY));

  char *t = scrape("vno", NULL);
  /* RM.RegInitReq: 5 attaches; RM.RegInitSucc: 1 and 3 */
  assert_metric(t, "mcim_rm_reg_init_req_total", 5);
  assert_metric(t, "mcim_rm_reg_init_succ_total", 2);
  assert_metric(t, "mcim_rm_reg_init_fail_total{cause=\"RES_MISMATCH\"}", 1);
  assert_metric(t, "mcim_rm_reg_init_fail_total{cause=\"WRONG_STATE\"}", 1);
  assert_metric(t, "mcim_rm_reg_init_fail_total{cause=\"CREDENTIAL_EXPIRED\"}", 1);
  assert_metric(t, "mcim_rm_reg_init_fail_total{cause=\"UNKNOWN_IDENTITY\"}", 1);
  /* AMF.AuthReq: challenges of 1, 2, 3 and 3's after resynchronisation */
  assert_metric(t, "mcim_amf_auth_req_total", 4);
  /* AMF.AuthReject: the forged RES; AMF.AuthFail: 3's AUTS (the MAC failure of 2 stays in
   * the USIM: a device that does not verify the network does not answer) */
  assert_metric(t, "mcim_amf_auth_reject_total", 1);
  assert_metric(t, "mcim_amf_auth_fail_total{cause=\"SYNC_FAILURE\"}", 1);
  assert_metric(t, "mcim_amf_auth_fail_total{cause=\"MAC_FAILURE\"}", 0);
  /* HTTP: by route pattern (never the raw path) and cause */
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach\",cause=\"OK\"}", 3);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach\","
                   "cause=\"CREDENTIAL_EXPIRED\"}", 1);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach\","
                   "cause=\"UNKNOWN_IDENTITY\"}", 1);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach/{id}\","
                   "cause=\"OK\"}", 3);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach/{id}\","
                   "cause=\"RES_MISMATCH\"}", 1);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/attach/{id}\","
                   "cause=\"WRONG_STATE\"}", 1);
  assert_metric(t, "mcim_http_request_duration_seconds_count{method=\"POST\","
                   "route=\"/v1/attach/{id}\",code=\"4xx\"}", 2);
  assert_metric(t, "mcim_http_request_duration_seconds_bucket{method=\"POST\","
                   "route=\"/v1/attach/{id}\",code=\"2xx\",le=\"+Inf\"}", 3);
  assert_null(strstr(t, "001019")); /* no identity in any label */
  assert_null(strstr(t, "mcim_auc_")); /* the VNO has no AuC */
  /* an unknown path is "unmatched", whatever it is */
  assert_int_equal(mcim_http_request(plain_cli, "GET", url("vno", "/v1/no/such/001019100000001"),
                                     NULL, NULL, &r),
                   MCIM_ROUTE_NOT_FOUND);
  mcim_http_result_clear(&r);
  free(t);
  t = scrape("vno", NULL);
  assert_metric(t, "mcim_http_requests_total{method=\"GET\",route=\"unmatched\","
                   "cause=\"ROUTE_NOT_FOUND\"}", 1);
  assert_metric(t, "mcim_http_requests_total{method=\"GET\",route=\"/metrics\",cause=\"OK\"}", 1);
  assert_null(strstr(t, "001019"));
  free(t);

  /* The ICF's AuC at the RO: AVs for 1, 2, 3 (first, with the resync answer, and asked again
   * after it), none for 4 and 5. */
  t = scrape("ro", NULL);
  assert_metric(t, "mcim_auc_av_requests_total", 7);
  assert_metric(t, "mcim_auc_av_generated_total", 5);
  assert_metric(t, "mcim_auc_av_failures_total{cause=\"CREDENTIAL_EXPIRED\"}", 1);
  assert_metric(t, "mcim_auc_av_failures_total{cause=\"UNKNOWN_IDENTITY\"}", 1);
  assert_metric(t, "mcim_auc_resync_requests_total", 1);
  assert_null(strstr(t, "mcim_auc_resync_failures_total{"));
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/icf/avs\",cause=\"OK\"}", 4);
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/icf/resync\",cause=\"OK\"}",
                1);
  assert_null(strstr(t, "mcim_rm_reg_init")); /* the RO is no access network */
  free(t);
}

static void run_initial(const char *device, const char *sho, mcim_cause_t want)
{
  struct mcim_lab_run run = {.device = device, .procedure = "initial", .sho = sho,
                             .timeout_s = 60};
  struct mcim_lab_run_result res = {0};
  mcim_cause_t rc = mcim_lab_run(lab, &run, &res);
  if (rc != want)
    fail_msg("%s: %s (%s)", device, res.result, res.detail);
  mcim_lab_run_result_clear(&res);
}

/* The outbox drains asynchronously: wait until nothing is pending at `role`. */
static char *scrape_drained(const char *role)
{
  for (int i = 0; i < 100; i++) {
    char *t = scrape(role, NULL);
    if (series(t, "mcim_outbox_pending") == 0)
      return t;
    free(t);
    usleep(100 * 1000);
  }
  fail_msg("the outbox of %s does not drain", role);
  return NULL;
}

/* Initial provisioning with sho-a (success) and with tampered firmware at sho-b (failed
 * validation): the SHOs' and the agents' counters. */
static void test_procedure_counters(void **state)
{
  (void)state;
  assert_int_equal(mcim_lab_device_add(lab, "mdev1", false), MCIM_OK);
  assert_int_equal(mcim_lab_device_add(lab, "mbad1", true), MCIM_OK);
  run_initial("mdev1", "sho-a", MCIM_OK);
  run_initial("mbad1", "sho-b", MCIM_VALIDATION_FAILED);

  char *t = scrape_drained("sho-a");
  assert_metric(t, "mcim_procedures_started_total{procedure=\"initial\"}", 1);
  assert_metric(t, "mcim_procedures_succeeded_total{procedure=\"initial\"}", 1);
  assert_null(strstr(t, "mcim_procedures_failed_total{"));
  /* The device's attach with its new MCIM, AV from sho-a's own AuC. The device may attach
   * before the RO's report (step 15) has reached sho-a: that attach is refused with
   * SUBSCRIPTION_NOT_ACTIVE and repeated (package.c, dev_st_attach_sho), a race the
   * protocol allows. Each such refusal is one more request, counted by its cause; nothing
   * else fails, and exactly one attach succeeds with one challenge. */
  double early = count(t, "mcim_rm_reg_init_fail_total{cause=\"SUBSCRIPTION_NOT_ACTIVE\"}");
  assert_metric(t, "mcim_auc_av_failures_total{cause=\"SUBSCRIPTION_NOT_ACTIVE\"}", early);
  only_cause(t, "mcim_rm_reg_init_fail_total{", "SUBSCRIPTION_NOT_ACTIVE");
  only_cause(t, "mcim_auc_av_failures_total{", "SUBSCRIPTION_NOT_ACTIVE");
  assert_metric(t, "mcim_rm_reg_init_req_total", 1 + early);
  assert_metric(t, "mcim_rm_reg_init_succ_total", 1);
  assert_metric(t, "mcim_amf_auth_req_total", 1);
  assert_metric(t, "mcim_auc_av_requests_total", 1 + early);
  assert_metric(t, "mcim_auc_av_generated_total", 1);
  /* outbox: the step-12 authorisation (DRF) and the "subscribed" registration to the RO (the
   * order reaches the DRF synchronously at step 1), the validation request to the PVA */
  assert_metric(t, "mcim_outbox_delivered_total{peer=\"ro\"}", 2);
  assert_metric(t, "mcim_outbox_delivered_total{peer=\"pva\"}", 1);
  assert_null(strstr(t, "mcim_outbox_given_up_total{"));
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/orders\",cause=\"OK\"}", 1);
  assert_null(strstr(t, "mdev1")); /* no device id in any label */
  free(t);

  t = scrape_drained("sho-b");
  assert_metric(t, "mcim_procedures_started_total{procedure=\"initial\"}", 1);
  assert_metric(t, "mcim_procedures_failed_total{procedure=\"initial\",cause=\"VALIDATION_FAILED\"}",
                1);
  assert_null(strstr(t, "mcim_procedures_succeeded_total{"));
  assert_metric(t, "mcim_auc_av_generated_total", 0); /* no MCIM issued, no attach */
  free(t);

  /* the agents: procedures, attaches, challenges their TRE checked */
  t = scrape(NULL, "mdev1");
  assert_metric(t, "mcim_procedures_started_total{procedure=\"initial\"}", 1);
  assert_metric(t, "mcim_procedures_succeeded_total{procedure=\"initial\"}", 1);
  assert_metric(t, "mcim_m2me_attach_attempts_total{network=\"vno\"}", 1);
  /* the early attaches sho-a refused (see above), and no other failure */
  early = count(t, "mcim_m2me_attach_failures_total{network=\"sho-a\","
                   "cause=\"SUBSCRIPTION_NOT_ACTIVE\"}");
  only_cause(t, "mcim_m2me_attach_failures_total{", "SUBSCRIPTION_NOT_ACTIVE");
  assert_metric(t, "mcim_m2me_attach_attempts_total{network=\"sho-a\"}", 1 + early);
  assert_metric(t, "mcim_m2me_aka_challenges_total", 2);
  assert_null(strstr(t, "mcim_m2me_aka_failures_total{"));
  assert_metric(t, "mcim_http_requests_total{method=\"POST\",route=\"/v1/procedures\","
                   "cause=\"OK\"}", 1);
  assert_null(strstr(t, "mcim_outbox_")); /* not an agent family */
  free(t);
  t = scrape(NULL, "mbad1");
  assert_metric(t, "mcim_procedures_started_total{procedure=\"initial\"}", 1);
  assert_metric(t, "mcim_procedures_failed_total{procedure=\"initial\",cause=\"VALIDATION_FAILED\"}",
                1);
  assert_metric(t, "mcim_m2me_attach_attempts_total{network=\"vno\"}", 1);
  assert_metric(t, "mcim_m2me_aka_challenges_total", 1);
  free(t);
}

/* Every role of the lab and an agent expose mcim_build_info (last: a scrape counts as a
 * request in the HTTP counters the tests above check). */
static void test_build_info(void **state)
{
  (void)state;
  static const char *const roles[] = {"vno", "ro", "pva", "m2mes", "sho-a", "sho-b"};
  for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
    char *t = scrape(roles[i], NULL);
    assert_build_info(t);
    free(t);
  }
  char *t = scrape(NULL, "mdev1");
  assert_build_info(t);
  free(t);
}

/* The work counts: named as loadgen's report and bench_floor know them, every one shown (0
 * included) with the crypto family. At a role, a scrape's request is counted once answered,
 * after its figures were read, and its read of the outbox before: the next scrape shows one
 * more of each (what loadgen takes out per instance; background work may add statements).
 * The procedures above committed at the SHO and synced the agent's TRE. Last: it scrapes. */
static void test_work_counts(void **state)
{
  (void)state;
  static const char *const names[] = {"http_requests", "store_commits_durable",
                                       "store_commits_relaxed", "store_statements",
                                       "tre_synced_writes"};
  assert_int_equal(MCIM_WORK_COUNT_, sizeof(names) / sizeof(names[0]));
  char *t = mcim_metrics_render(MCIM_MF_CRYPTO), name[96];
  assert_non_null(t);
  assert_non_null(strstr(t, "# TYPE mcim_work_operations_total counter\n"));
  for (int w = 0; w < MCIM_WORK_COUNT_; w++) {
    assert_string_equal(mcim_work_name((mcim_work_t)w), names[w]);
    snprintf(name, sizeof(name), "mcim_work_operations_total{op=\"%s\"}", names[w]);
    assert_true(series(t, name) >= 0);
  }
  assert_null(mcim_work_name(MCIM_WORK_COUNT_));
  free(t);
  t = mcim_metrics_render(MCIM_MF_PROCESS);
  assert_non_null(t);
  assert_null(strstr(t, "mcim_work_operations_total")); /* not a family asked for */
  free(t);

  const char *req = "mcim_work_operations_total{op=\"http_requests\"}",
             *stmt = "mcim_work_operations_total{op=\"store_statements\"}",
             *durable = "mcim_work_operations_total{op=\"store_commits_durable\"}",
             *relaxed = "mcim_work_operations_total{op=\"store_commits_relaxed\"}",
             *tre = "mcim_work_operations_total{op=\"tre_synced_writes\"}";
  char *a = scrape("vno", NULL), *b = scrape("vno", NULL);
  assert_true(series(a, req) >= 1);
  assert_true(series(b, req) - series(a, req) == 1);
  assert_true(series(b, stmt) - series(a, stmt) >= 1);
  assert_true(series(b, tre) == 0); /* no TRE in a role */
  free(a);
  free(b);
  t = scrape("sho-a", NULL);
  assert_true(series(t, durable) > 0);
  assert_true(series(t, durable) + series(t, relaxed) <= series(t, stmt));
  free(t);
  t = scrape(NULL, "mdev1");
  assert_true(series(t, tre) > 0);
  assert_true(series(t, durable) > 0);
  free(t);
}

/* The sum of every series of the family `prefix` (ending in '{') whose labels contain
 * `label` (NULL: all). */
static double family_sum(const char *text, const char *prefix, const char *label)
{
  double sum = 0;
  size_t n = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    const char *end = strchr(p, '}');
    if (strncmp(p, prefix, n) != 0 || !end)
      continue;
    if (label) {
      const char *hit = strstr(p, label);
      if (!hit || hit > end)
        continue;
    }
    sum += strtod(end + 2, NULL);
  }
  return sum;
}

/* CPU by route and by thread: a request's handling is counted to its route once answered (a
 * scrape's own in the next scrape, and more than nothing), the role's threads by their names,
 * and what the routes took is part of what the HTTP server's threads took (the routes are
 * timed on those threads' clocks; 1 ms for threads whose time the kernel shows as of their
 * last tick); the agent's control API alike. */
static void test_cpu_by_route_and_thread(void **state)
{
  (void)state;
  const char *metrics_cpu =
      "mcim_http_request_cpu_seconds_total{method=\"GET\",route=\"/metrics\"}";
  static const char *const roles[] = {"vno", "ro", "sho-a"};
  for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
    char *a = scrape(roles[i], NULL), *b = scrape(roles[i], NULL);
    assert_non_null(strstr(b, "# TYPE mcim_http_request_cpu_seconds_total counter\n"));
    assert_non_null(strstr(b, "# TYPE mcim_thread_cpu_seconds_total counter\n"));
    assert_true(series(b, metrics_cpu) > 0);
    assert_true(series(b, metrics_cpu) > count(a, metrics_cpu));
    assert_true(series(b, "mcim_thread_cpu_seconds_total{thread=\"mcim-worker\"}") > 0);
    double routes = family_sum(b, "mcim_http_request_cpu_seconds_total{", NULL);
    double http = series(b, "mcim_thread_cpu_seconds_total{thread=\"MHD-worker\"}");
    if (!(routes > 0 && routes <= http + 0.001))
      fail_msg("%s: routes' CPU %.6f s, the HTTP threads' %.6f s", roles[i], routes, http);
    free(a);
    free(b);
  }
  /* the VNO's attach, earlier in this run, was timed */
  char *t = scrape("vno", NULL);
  assert_true(
      series(t, "mcim_http_request_cpu_seconds_total{method=\"POST\",route=\"/v1/attach\"}") > 0);
  free(t);
  /* and the agent's control API (its local server) times its routes too (since 2026-12-07):
   * a scrape's own, in the next one, within what its control thread took */
  char *a = scrape(NULL, "mdev1"), *b = scrape(NULL, "mdev1");
  assert_true(series(b, metrics_cpu) > 0);
  assert_true(series(b, metrics_cpu) > count(a, metrics_cpu));
  double control = series(b, "mcim_thread_cpu_seconds_total{thread=\"mcim-control\"}");
  if (!(series(b, metrics_cpu) <= control + 0.001))
    fail_msg("the agent's /metrics CPU %.6f s, its control threads' %.6f s",
             series(b, metrics_cpu), control);
  free(a);
  free(b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exposition_format),
      cmocka_unit_test(test_vno_attach_counters),
      cmocka_unit_test(test_procedure_counters),
      cmocka_unit_test(test_build_info),
      cmocka_unit_test(test_work_counts),
      cmocka_unit_test(test_cpu_by_route_and_thread),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
