/* The agent's local control API (docs/protocol.md, "M2ME agent"; docs/device.md): plain
 * HTTP on the Unix socket DEVICE_DIR/control.sock, created 0600 so only the device's owner
 * account reaches it. What re-provisions the device still needs the owner's signature: the
 * socket grants status and attach, the instruction grants procedures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/util.h"

/* GET /v1/status: the TRE's public view, the current (or last) procedure, the access
 * sessions (network, scope, expiry: never the tokens). */
static void h_status(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  struct dev_proc p = {0};
  json_t *view = NULL;
  (void)req;

  mcim_cause_t rc = d->tre->ops->status(d->tre->ctx, &view);
  if (rc != MCIM_OK || !json_is_object(view)) {
    mcim_http_reply_problem(resp, rc != MCIM_OK ? rc : MCIM_INTERNAL, 0,
                            "the TRE does not answer: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  mcim_store_t *st = dev_store_lock(d);
  rc = dev_proc_latest(st, &p);
  dev_store_unlock(d);
  if (rc == MCIM_OK)
    json_object_set_new(view, "procedure", dev_proc_json(&p));
  else
    json_object_set_new(view, "procedure", json_null());
  json_object_set_new(view, "access", dev_sessions_json(d));
  json_object_set_new(view, "agent", json_pack("{s:s}", "name", d->name));
  mcim_http_reply_json(resp, 200, view);
  view = NULL;
cleanup:
  json_decref(view);
  dev_proc_clear(&p);
}

/* The bodies of the control API's POSTs, checked before anything is done (the handlers
 * below and tests/fuzz/fuzz_control.c call these). */
mcim_cause_t dev_attach_body(const json_t *body, const char *vno, char *err, size_t errlen)
{
  static const struct mcim_jsonv_field fields[] = {
      {"network", MCIM_JV_STRING, true, 63},
      {"txn", MCIM_JV_HEX, false, DEV_TXN_LEN},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 2, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  const char *network = json_string_value(json_object_get(body, "network"));
  if (strcmp(network, vno) != 0 && !dev_is_sho_name(network)) {
    snprintf(err, errlen, "network must be \"%s\" or an SHO name", vno);
    return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

mcim_cause_t dev_instruction_body(const json_t *body, char *err, size_t errlen)
{
  static const struct mcim_jsonv_field fields[] = {
      {"instruction", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN},
  };
  return mcim_jsonv_check(body, fields, 1, err, errlen);
}

mcim_cause_t dev_handover_body(const json_t *body, char *err, size_t errlen)
{
  static const struct mcim_jsonv_field fields[] = {
      {"handover", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN},
  };
  return mcim_jsonv_check(body, fields, 1, err, errlen);
}

/* POST /v1/attach {network}: attach now, synchronously (seed steps 4-6 for the VNO). */
static void h_attach(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  char err[200];
  struct mcim_http_lite *cli = NULL;
  struct dev_attach_result ar;
  mcim_cause_t rc = dev_attach_body(req->json, dev_cfg_str(d, "vno"), err, sizeof(err));

  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  const char *network = json_string_value(json_object_get(req->json, "network"));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  /* a client of this request's own: a curl handle belongs to one thread */
  rc = dev_client_new(d, &cli);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot create an HTTP client");
    goto cleanup;
  }
  rc = dev_attach(d, cli, network, txn, &ar);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, ar.step, "attach to %s: %s", network,
                            ar.detail[0] ? ar.detail : mcim_cause_text(rc));
    json_object_set_new(resp->json, "network", json_string(network));
    goto cleanup;
  }
  /* queued notifications (full access) or a PCID renewal the VNO asked for: the worker */
  if (strcmp(ar.scope, "full") == 0 || ar.renewal_due)
    dev_wake(d);
  json_t *ans = json_pack("{s:s,s:s,s:s,s:I}", "network", network, "scope", ar.scope,
                          "identity", ar.identity, "expires", (json_int_t)ar.expires);
  if (ans && ar.renewal_due)
    json_object_set_new(ans, "renewal", json_string("due"));
  mcim_http_reply_json(resp, 200, ans);
cleanup:
  mcim_http_lite_free(cli);
}

/* POST /v1/procedures {instruction}: the owner's instruction starts a procedure (seed step
 * 2; the checks and their order are dev_procedure_start's, start.c). 202 with the procedure,
 * new or the one this txn already names. */
static void h_procedure_start(void *ctx, const struct mcim_http_request *req,
                              struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  char err[300];
  json_t *answer = NULL;
  mcim_cause_t rc = dev_instruction_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK)
    rc = dev_procedure_start(d, json_string_value(json_object_get(req->json, "instruction")),
                             &answer, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 2, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 202, answer);
}

/* GET /v1/procedures/{txn} */
static void h_procedure_get(void *ctx, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  struct dev_proc p = {0};
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_view(st, req->params[0], &p);
  dev_store_unlock(d);

  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "no procedure %.40s on this device", req->params[0]);
    goto cleanup;
  }
  json_t *j = dev_proc_json(&p);
  if (!j) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "out of memory");
    goto cleanup;
  }
  mcim_http_reply_json(resp, 200, j);
cleanup:
  dev_proc_clear(&p);
}

/* GET /v1/admin/trace/{txn}: the agent's events, in the roles' JSON. */
static void h_trace(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  json_t *events = NULL;
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_trace_load(st, req->params[0], &events);
  dev_store_unlock(d);

  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot read the trace");
    return;
  }
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:o}", "role", d->name, "txid", req->params[0],
                                 "events", events));
}

/* POST /v1/owner {handover}: the owner hands the device to a new owner (the statement the
 * RO took for its owner record has its own twin for the device: aud = the device). The TRE
 * checks it against the key it pins and pins the new one; from then on only the new owner's
 * instructions are taken. */
static void h_owner_handover(void *ctx, const struct mcim_http_request *req,
                             struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  char err[200];
  mcim_cause_t rc = dev_handover_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  const char *jws = json_string_value(json_object_get(req->json, "handover"));
  rc = d->tre->ops->owner_handover ? d->tre->ops->owner_handover(d->tre->ctx, jws, strlen(jws))
                                   : MCIM_UNSUPPORTED;
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "handover refused");
    mcim_http_reply_problem(resp, rc, 0, "the TRE refused the handover");
    return;
  }
  mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK, "owner handed over: a new owner key is pinned");
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "device", d->name, "owner", "replaced"));
}

static void h_health(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  (void)req;
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:s}", "name", d->name, "kind", "m2me", "status", "ok"));
}

/* GET /metrics: the agent's counters (include/mcim/metrics.h), Prometheus text 0.0.4. */
static void h_metrics(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_reply_text(resp, 200, MCIM_METRICS_CONTENT_TYPE,
                       mcim_metrics_render(MCIM_MF_PROCESS | MCIM_MF_HTTP | MCIM_MF_PROCEDURE |
                                           MCIM_MF_AGENT | MCIM_MF_CRYPTO));
}

static const struct mcim_http_route control_routes[] = {
    {"GET", "/v1/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/status", h_status, 0},
    {"POST", "/v1/attach", h_attach, 0},
    {"POST", "/v1/procedures", h_procedure_start, 0},
    {"POST", "/v1/owner", h_owner_handover, 0},
    {"GET", "/v1/procedures/{txn}", h_procedure_get, 0},
    {"GET", "/v1/admin/trace/{txn}", h_trace, 0},
};

mcim_cause_t dev_control_start(struct mcim_device *d)
{
  struct mcim_http_server_cfg sc = {
      .role = d->name,
      .unix_path = mcim_config_path(d->cfg, "control_socket"),
      .threads = (unsigned)dev_cfg_int(d, "threads"),
      .max_body = MCIM_JOSE_MAX_LEN + 4096,
      .routes = control_routes,
      .nroutes = sizeof(control_routes) / sizeof(control_routes[0]),
      .ctx = d,
  };
  mcim_metric_set(&mcim_m_process_start_time, NULL, (double)mcim_now());
  mcim_cause_t rc = mcim_http_local_start(&sc, &d->control);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot serve the control API on %s",
                   sc.unix_path);
  return rc;
}
