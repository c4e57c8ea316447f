/* The SHO's side of a change of subscription (seed 5.1.3.8.4.2-3) and of the variant
 * with pre-provisioned MCIMs:
 *  - as the OLD SHO: the device's discard receipt (change step 9, or the deferred notice of
 *    the pristine path) terminates the subscription; the acknowledgement (step 10) goes back;
 *  - as the NEW SHO: the RO's privacy-filtered release (step 11) lets it activate the new
 *    subscription (invariant 1: never active before the old one is released);
 *  - both: suspend/resume notifications switch between two pre-provisioned MCIMs. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/sho/sho.h"

/* A device statement (TRE attestation key, certificate from the M2MES CA) addressed to us. */
static mcim_cause_t verify_device_statement(struct mcim_role *r, const char *jws,
                                            const char *cert, const char *device,
                                            const char *typ, const char *txn,
                                            mcim_statement_t **out)
{
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc =
      mcim_role_device_key_from_pem(r, cert, device, MCIM_CERT_TRE_ATTESTATION, &key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = r->name, .typ = typ,
                            .txn = txn, .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .replay = mcim_role_replay(r)};
    rc = mcim_jws_verify(jws, strlen(jws), key, &ex, out);
  }
  mcim_jose_key_free(key);
  return rc;
}

static mcim_cause_t device_of_imsi(const mcim_row_t *row, void *arg)
{
  snprintf(arg, 64, "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  return MCIM_OK;
}

/* The IMSI must be one this SHO issued to this very device: a device cannot end another
 * device's subscription, and a statement about another SHO's slot is not ours to act on. */
static mcim_cause_t check_imsi_owner(mcim_store_t *st, const char *imsi, const char *device)
{
  char owner[64] = "";
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  mcim_cause_t rc = mcim_store_query_one(st, "SELECT device FROM auc WHERE imsi = ?", p, 1,
                                         device_of_imsi, owner);
  if (rc == MCIM_NOT_FOUND)
    return MCIM_UNKNOWN_IDENTITY;
  if (rc == MCIM_OK && strcmp(owner, device) != 0)
    return MCIM_SLOT_FORBIDDEN;
  return rc;
}

/* POST /v1/discards: the old SHO learns that the device discarded its MCIM (step 9, or the
 * pristine path's deferred notice); it terminates the subscription and acknowledges. */
void mcim_sho_discard(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},          {"device", MCIM_JV_STRING, true, 63},
      {"receipt", MCIM_JV_STRING, true, 16384}, {"tre_cert", MCIM_JV_STRING, true, 8192},
      {"step", MCIM_JV_INTEGER, false, 0},
  };
  char err[200];
  struct mcim_access acc;
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  char *ack = NULL;
  int status = 0;
  mcim_cause_t rc = mcim_role_check_access(r, req, true, &acc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 9, "the discard receipt needs full network access");
    return;
  }
  rc = mcim_jsonv_check(req->json, fields, 5, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 9, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  json_int_t step = json_object_get(req->json, "step")
                        ? json_integer_value(json_object_get(req->json, "step"))
                        : 9;
  if (step != 0 && step != 9)
    step = 9;
  int ack_step = step ? 10 : 0;
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, (int)step, "a device discards only its own");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, (int)step, "store unavailable");
    return;
  }
  /* A retried receipt gets the same acknowledgement. */
  if (mcim_role_answer_get(st, txn, 10, device, &status, &answer) == MCIM_OK) {
    mcim_http_reply_json(resp, status, answer);
    return;
  }
  rc = verify_device_statement(r, json_string_value(json_object_get(req->json, "receipt")),
                               json_string_value(json_object_get(req->json, "tre_cert")), device,
                               "mcim-discard+jwt", txn, &stmt);
  const char *imsi = stmt ? mcim_statement_string(stmt, "imsi") : NULL;
  const char *slot = stmt ? mcim_statement_string(stmt, "slot") : NULL;
  if (rc == MCIM_OK && (!imsi || !slot))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK && strcmp(slot, r->name) != 0)
    rc = MCIM_SLOT_FORBIDDEN;
  if (rc == MCIM_OK)
    rc = check_imsi_owner(st, imsi, device);
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, ack_step, r->name, device, "discard receipt refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, (int)step, "discard receipt of %s refused", device);
    goto out;
  }
  json_t *extra = json_pack("{s:b,s:s,s:s,s:I}", "released", 1, "imsi", imsi, "sho", r->name,
                            "at", (json_int_t)mcim_now());
  rc = mcim_role_sign(r, "mcim-discard-ack+jwt", device, mcim_config_str(r->cfg, "ro"), txn,
                      extra, &ack);
  json_decref(extra);
  if (rc == MCIM_OK) {
    answer = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "ack", ack);
    rc = mcim_store_begin(st);
  }
  /* Looked up again under the write lock: a copy of this receipt that arrived at the same
   * time (the device gave up waiting on a slow answer and sent it again, signed afresh) may
   * have been recorded since the lookup above; it gets the same answer, not a conflict. */
  json_t *stored = NULL;
  if (rc == MCIM_OK &&
      mcim_role_answer_get(st, txn, 10, device, &status, &stored) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, stored);
    goto out;
  }
  if (rc == MCIM_OK) {
    rc = mcim_auc_terminate(st, imsi);
    if (rc == MCIM_NOT_FOUND)
      rc = MCIM_OK;
  }
  if (rc == MCIM_OK) {
    int64_t now = mcim_now();
    mcim_val_t p[] = {MCIM_INT(now), MCIM_TEXT(device), MCIM_TEXT(imsi)};
    rc = mcim_store_exec(st,
                         "UPDATE orders SET state = 'released', updated = ? WHERE device = ?"
                         " AND imsi = ? AND state <> 'failed'",
                         p, 3, NULL, NULL);
  }
  if (rc == MCIM_OK)
    rc = mcim_sho_register(r, st, txn, device, "released", ack_step,
                           "DRF: M2ME no longer subscribes to this SHO");
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 10, device, 200, answer);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_CONFLICT &&
      mcim_role_answer_get(st, txn, 10, device, &status, &stored) == MCIM_OK) {
    mcim_http_reply_json(resp, status, stored); /* the copy above won on a store without it */
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, (int)step, "discard not recorded");
    goto out;
  }
  mcim_role_wake(r);
  mcim_log_event(MCIM_LOG_NOTICE, txn, (int)step, MCIM_OK,
                 "%s discarded its MCIM: subscription %s terminated, no more AVs", device, imsi);
  mcim_role_trace(r, txn, ack_step, r->name, device,
                  ack_step ? "acknowledgement: old subscription terminated"
                           : "acknowledgement of the deferred notice: subscription terminated",
                  answer, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  free(ack);
  mcim_statement_free(stmt);
}

/* POST /v1/releases (RO's DPF, step 11): the old subscription is released. */
void mcim_sho_release(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"release", MCIM_JV_STRING, true, 16384},
  };
  char err[200];
  struct mcim_sho_order o = {0};
  const mcim_jose_key_t *ro_key = NULL;
  mcim_statement_t *stmt = NULL;
  const char *ro = mcim_config_str(r->cfg, "ro");
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 3, err, sizeof(err));
  if (rc == MCIM_OK && (!req->peer || strcmp(req->peer, ro) != 0)) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "only the RO's DPF relays releases");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *release = json_string_value(json_object_get(req->json, "release"));
  mcim_store_t *st = mcim_role_store(r);
  rc = st ? mcim_sho_order_load(st, txn, &o) : MCIM_STORE_ERROR;
  if (rc == MCIM_OK && strcmp(o.device, device) != 0)
    rc = MCIM_CONFLICT;
  if (rc == MCIM_OK)
    rc = mcim_role_peer_key(r, ro, &ro_key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = ro, .aud = r->name, .sub = device,
                            .typ = "mcim-release+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(release, strlen(release), ro_key, &ex, &stmt);
  }
  json_t *released = stmt ? json_object_get(stmt->payload, "released") : NULL;
  if (rc == MCIM_OK && !json_is_true(released))
    rc = MCIM_CLAIM_MISMATCH;
  const struct mcim_sho_steps *steps = mcim_sho_steps_for(o.procedure, o.via);
  if (rc == MCIM_OK && !steps)
    rc = MCIM_WRONG_STATE;
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "release for %s refused", txn);
    goto out;
  }
  if (o.released) { /* a retried relay: the same answer */
    mcim_http_reply_json(resp, 200, json_pack("{s:s,s:b}", "txn", txn, "released", 1));
    goto out;
  }
  rc = mcim_store_begin(st);
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_INT(mcim_now()), MCIM_TEXT(txn)};
    rc = mcim_store_exec(st, "UPDATE orders SET released = 1, updated = ? WHERE txn = ?", p, 2,
                         NULL, NULL);
  }
  /* The report (step 13) may have come first: then this is the moment to go live. */
  if (rc == MCIM_OK && strcmp(o.state, "installed") == 0)
    rc = mcim_sho_activate(r, st, &o, "installed", steps);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 11, "release not recorded");
    goto out;
  }
  mcim_role_wake(r);
  if (strcmp(o.state, "installed") == 0) /* went live just now */
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS(o.procedure));
  mcim_log_event(MCIM_LOG_INFO, txn, 11, MCIM_OK,
                 "the previous subscription of %s is released (verified by the RO)", device);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:b}", "txn", txn, "released", 1));
out:
  mcim_statement_free(stmt);
  mcim_sho_order_clear(&o);
}

/* POST /v1/notifications: switch between pre-provisioned MCIMs. `suspend` (the slot being
 * left): AuC active -> standby; `resume` (the slot being entered): standby -> active and
 * the DRF learns the device subscribes here. */
void mcim_sho_notification(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},         {"device", MCIM_JV_STRING, true, 63},
      {"notice", MCIM_JV_STRING, true, 16384}, {"tre_cert", MCIM_JV_STRING, true, 8192},
  };
  char err[200];
  struct mcim_access acc;
  mcim_statement_t *stmt = NULL;
  mcim_cause_t rc = mcim_role_check_access(r, req, true, &acc);
  if (rc == MCIM_OK)
    rc = mcim_jsonv_check(req->json, fields, 4, err, sizeof(err));
  else
    snprintf(err, sizeof(err), "notifications need full network access");
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  if (rc == MCIM_OK && strcmp(acc.device, device) != 0) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "a device notifies only for itself");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  int status = 0;
  json_t *answer = NULL;
  if (st && mcim_role_answer_get(st, txn, 0, "notice", &status, &answer) == MCIM_OK) {
    mcim_http_reply_json(resp, status, answer); /* a retried notice: the same answer */
    return;
  }
  /* One transaction from here: the notice's jti is recorded with the stored answer, so a
   * duplicate racing this one waits for the lock and gets the answer, not a REPLAY. */
  rc = st ? mcim_store_begin(st) : MCIM_STORE_ERROR;
  bool in_txn = rc == MCIM_OK;
  if (in_txn && mcim_role_answer_get(st, txn, 0, "notice", &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    goto out;
  }
  if (rc == MCIM_OK)
    rc = verify_device_statement(r, json_string_value(json_object_get(req->json, "notice")),
                                 json_string_value(json_object_get(req->json, "tre_cert")), device,
                                 "mcim-notify+jwt", txn, &stmt);
  const char *event = stmt ? mcim_statement_string(stmt, "event") : NULL;
  const char *slot = stmt ? mcim_statement_string(stmt, "slot") : NULL;
  const char *imsi = stmt ? mcim_statement_string(stmt, "imsi") : NULL;
  if (rc == MCIM_OK && (!event || !slot || !imsi))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK && strcmp(slot, r->name) != 0)
    rc = MCIM_SLOT_FORBIDDEN; /* a statement for another SHO's slot is never ours */
  if (rc == MCIM_OK)
    rc = check_imsi_owner(st, imsi, device);
  bool resume = event && strcmp(event, "resume") == 0;
  if (rc == MCIM_OK && !resume && strcmp(event, "suspend") != 0)
    rc = MCIM_UNSUPPORTED;
  if (rc != MCIM_OK) {
    if (in_txn)
      mcim_store_rollback(st);
    mcim_http_reply_problem(resp, rc, 0, "notification refused");
    goto out;
  }
  char state[16] = "";
  rc = mcim_auc_state(st, imsi, state, NULL);
  const char *want = resume ? "active" : "standby";
  bool changed = rc == MCIM_OK && strcmp(state, want) != 0;
  if (rc == MCIM_OK && strcmp(state, want) != 0) {
    rc = mcim_auc_set_state(st, imsi, resume ? "standby" : "active", want);
    if (rc == MCIM_OK && resume)
      rc = mcim_sho_register(r, st, txn, device, "subscribed", 0,
                             "DRF: M2ME switched to its MCIM of this SHO");
    if (rc == MCIM_OK && !resume)
      rc = mcim_sho_register(r, st, txn, device, "preloaded", 0,
                             "DRF: M2ME switched away (MCIM kept in reserve)");
  }
  answer = json_pack("{s:s,s:s,s:s}", "txn", txn, "imsi", imsi, "state", want);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 0, "notice", 200, answer);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    json_decref(answer);
    mcim_http_reply_problem(resp, rc, 0, "subscription %s cannot be %s", imsi,
                            resume ? "resumed" : "suspended");
    goto out;
  }
  mcim_role_wake(r);
  if (resume && changed) /* the switch's end at the SHO it switched to */
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS("switch"));
  mcim_role_trace(r, txn, 0, r->name, device,
                  resume ? "subscription resumed (pre-provisioned MCIM active)"
                         : "subscription suspended (MCIM kept in reserve)",
                  NULL, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
out:
  mcim_statement_free(stmt);
}
