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

/* POST /v1/attach {network}: attach now, synchronously (seed steps 4-6 for the VNO). */
static void h_attach(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"network", MCIM_JV_STRING, true, 63},
      {"txn", MCIM_JV_HEX, false, DEV_TXN_LEN},
  };
  char err[200];
  struct mcim_http_lite *cli = NULL;
  struct dev_attach_result ar;
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 2, err, sizeof(err));

  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  const char *network = json_string_value(json_object_get(req->json, "network"));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  if (strcmp(network, dev_cfg_str(d, "vno")) != 0 && !dev_is_sho_name(network)) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "network must be \"%s\" or an SHO name", dev_cfg_str(d, "vno"));
    goto cleanup;
  }
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

/* 202 for a procedure the agent already has: the same instruction again (or another one of
 * the owner for the same txn and the same claims) changes nothing. */
static void reply_known(struct mcim_http_response *resp, const struct dev_proc *p,
                        const struct dev_instruction *ins)
{
  if (strcmp(p->kind, ins->kind) != 0 || strcmp(p->sho, ins->sho) != 0 ||
      strcmp(p->via, ins->via) != 0) {
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 2,
                            "procedure %s is known as %s%s%s with %s, not as this instruction says",
                            p->txn, p->kind, p->via[0] ? " via " : "", p->via, p->sho);
    return;
  }
  mcim_http_reply_json(resp, 202, json_pack("{s:s,s:s,s:s,s:s}", "txn", p->txn, "kind", p->kind,
                                            "sho", p->sho, "state", p->state));
}

/* POST /v1/procedures {instruction}: the owner's instruction starts a procedure.
 *
 * The TRE records an instruction's jti as soon as it verifies it, so everything that can
 * refuse the instruction for another reason is checked first, on its unverified claims:
 * claims the agent would not run, a procedure already running, a device state the
 * procedure cannot start from. None of those spends the jti. An instruction for a txn the
 * agent already has is idempotent: once the TRE says it is the owner's (verified now, or a
 * replay of a verified one), the answer is 202 with that procedure. */
static void h_procedure_start(void *ctx, const struct mcim_http_request *req,
                              struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"instruction", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN},
  };
  char err[300];
  struct dev_instruction ins, ver;
  struct dev_proc p = {0};
  const char *stage = NULL;
  json_t *data = NULL;
  int n = 0;
  mcim_store_t *st;
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 1, err, sizeof(err));

  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 2, "%s", err);
    goto cleanup;
  }
  const char *jws = json_string_value(json_object_get(req->json, "instruction"));
  /* 1. What it asks, unverified: a refusal here spends nothing. */
  rc = dev_instruction_peek(d->name, jws, &ins, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 2, rc, "instruction refused: %s", err);
    mcim_http_reply_problem(resp, rc, 2, "%s", err);
    goto cleanup;
  }
  /* 2. A procedure this agent already has: the same instruction again. */
  st = dev_store_lock(d);
  rc = dev_proc_load(st, ins.txn, &p);
  dev_store_unlock(d);
  if (rc == MCIM_OK) {
    rc = dev_instruction_check(d->tre, d->name, jws, &ver, err, sizeof(err));
    if (rc != MCIM_OK && rc != MCIM_REPLAY) {
      mcim_log_event(MCIM_LOG_WARN, ins.txn, 2, rc, "instruction refused: %s", err);
      mcim_http_reply_problem(resp, rc, 2, "%s", err);
      goto cleanup;
    }
    reply_known(resp, &p, &ins);
    goto cleanup;
  }
  if (rc != MCIM_NOT_FOUND) {
    mcim_http_reply_problem(resp, rc, 2, "cannot read the procedures");
    goto cleanup;
  }
  /* 3. Busy: one procedure at a time. */
  st = dev_store_lock(d);
  rc = dev_proc_running(st, &p);
  dev_store_unlock(d);
  if (rc == MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_DEVICE_BUSY, 2, "procedure %s (%s) is running, step %d",
                            p.txn, p.kind, p.n);
    goto cleanup;
  }
  dev_proc_clear(&p);
  /* 4. Something this agent and its TRE run, from the state the device is in. */
  rc = dev_procedure_first(ins.kind, ins.via, &stage, &n);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_UNSUPPORTED, 2, "this agent does not run \"%s\"%s%s",
                            ins.kind, ins.via[0] ? " via " : "", ins.via);
    goto cleanup;
  }
  rc = dev_procedure_prepare(d, &ins, &data, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, ins.txn, 2, rc, "instruction refused: %s", err);
    mcim_http_reply_problem(resp, rc, 2, "%s", err);
    goto cleanup;
  }
  /* 5. Only now the TRE: signature, audience, lifetime, replay (the jti is spent). */
  rc = dev_instruction_check(d->tre, d->name, jws, &ver, err, sizeof(err));
  if (rc == MCIM_OK && (strcmp(ver.txn, ins.txn) != 0 || strcmp(ver.kind, ins.kind) != 0 ||
                        strcmp(ver.via, ins.via) != 0 || strcmp(ver.sho, ins.sho) != 0)) {
    rc = MCIM_INTERNAL; /* the same bytes read twice: cannot differ */
    snprintf(err, sizeof(err), "the verified claims differ from the payload's");
  }
  if (rc == MCIM_REPLAY) {
    /* the same instruction, twice at once: the other request may have recorded it */
    st = dev_store_lock(d);
    mcim_cause_t known = dev_proc_load(st, ins.txn, &p);
    dev_store_unlock(d);
    if (known == MCIM_OK) {
      reply_known(resp, &p, &ins);
      goto cleanup;
    }
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, ins.txn, 2, rc, "instruction refused: %s", err);
    mcim_http_reply_problem(resp, rc, 2, "%s", err);
    goto cleanup;
  }
  int64_t now = mcim_now();
  snprintf(p.txn, sizeof(p.txn), "%s", ins.txn);
  snprintf(p.kind, sizeof(p.kind), "%s", ins.kind);
  snprintf(p.via, sizeof(p.via), "%s", ins.via);
  snprintf(p.sho, sizeof(p.sho), "%s", ins.sho);
  snprintf(p.state, sizeof(p.state), "running");
  snprintf(p.stage, sizeof(p.stage), "%s", stage);
  p.n = n;
  p.created = p.since = p.updated = now;
  p.deadline = now + dev_cfg_int(d, "procedure_timeout");
  p.data = data;
  data = NULL;
  st = dev_store_lock(d);
  rc = dev_proc_insert(st, &p);
  if (rc == MCIM_OK)
    dev_trace_put(st, p.txn, 2, "subscriber", d->name,
                  strcmp(p.kind, "switch") == 0    ? "instruction: switch to the pre-provisioned MCIM"
                  : strcmp(p.kind, "preload") == 0 ? "instruction: pre-provision a second MCIM"
                                                   : "instruction: re-provision",
                  NULL, MCIM_OK);
  dev_store_unlock(d);
  if (rc == MCIM_CONFLICT) {
    /* the same instruction, twice at once: the other request recorded it */
    struct dev_proc known = {0};
    st = dev_store_lock(d);
    rc = dev_proc_load(st, ins.txn, &known);
    dev_store_unlock(d);
    if (rc == MCIM_OK)
      reply_known(resp, &known, &ins);
    else
      mcim_http_reply_problem(resp, MCIM_CONFLICT, 2, "procedure %s is already known", p.txn);
    dev_proc_clear(&known);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 2,
                            rc == MCIM_DEVICE_BUSY ? "another procedure started before %s"
                                                   : "procedure %s not recorded",
                            p.txn);
    goto cleanup;
  }
  dev_wake(d);
  mcim_metric_inc(&mcim_m_procedures_started, MCIM_LABELS(p.kind));
  mcim_log_event(MCIM_LOG_NOTICE, p.txn, 2, MCIM_OK, "owner instruction: %s%s%s with %s", p.kind,
                 p.via[0] ? " via " : "", p.via, p.sho);
  mcim_http_reply_json(resp, 202, json_pack("{s:s,s:s,s:s,s:s}", "txn", p.txn, "kind", p.kind,
                                            "sho", p.sho, "state", p.state));
cleanup:
  json_decref(data);
  dev_proc_clear(&p);
}

/* GET /v1/procedures/{txn} */
static void h_procedure_get(void *ctx, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  struct mcim_device *d = ctx;
  struct dev_proc p = {0};
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_load(st, req->params[0], &p);
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
  static const struct mcim_jsonv_field fields[] = {
      {"handover", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN},
  };
  char err[200];
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 1, err, sizeof(err));
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
                                           MCIM_MF_AGENT));
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
