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
#include "roles/auc_sync.h"
#include "roles/sho/sho.h"

/* Its jti is not spent here: record_jti() does that in the transaction that acts on it,
 * after a stored answer was looked up, so a retry gets the answer instead of REPLAY. */
mcim_cause_t mcim_sho_device_statement(struct mcim_role *r, const char *jws, const char *cert,
                                       const char *device, const char *typ, const char *txn,
                                       int64_t now, mcim_statement_t **out)
{
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc =
      mcim_role_device_key_from_pem(r, cert, device, MCIM_CERT_TRE_ATTESTATION, &key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = r->name, .typ = typ,
                            .txn = txn, .now = now,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(jws, strlen(jws), key, &ex, out);
  }
  mcim_jose_key_free(key);
  return rc;
}

/* Queue, in the caller's transaction, the PVA's notice that this subscription's tokens are
 * revoked (POST pva /v1/revocations, src/roles/pva/revocations.c). */
static mcim_cause_t revoke_at_pva(struct mcim_role *r, mcim_store_t *st, const char *txn,
                                  const char *device, const char *imsi, int step)
{
  json_t *body = json_pack("{s:s,s:s,s:s,s:i}", "txn", txn, "device", device, "imsi", imsi,
                           "step", step);
  if (!body)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_role_outbox_put(r, st, mcim_config_str(r->cfg, "pva"), "/v1/revocations",
                                         body, txn, step, "tokens of the ended subscription revoked");
  json_decref(body);
  return rc;
}

/* Spend the statement's jti (caller's transaction): a statement acts once. Kept as long as
 * mcim_sho_device_statement() would accept it (its exp plus clock_skew). */
static mcim_cause_t record_jti(struct mcim_role *r, const mcim_statement_t *stmt, int64_t now)
{
  const mcim_replay_cache_t *rep = mcim_role_replay(r);
  int64_t jti_until =
      mcim_replay_expires(stmt->claims.exp, mcim_config_duration(r->cfg, "clock_skew"));
  return rep->check_and_insert(rep->ctx, stmt->claims.iss, stmt->claims.jti, jti_until,
                               now ? now : mcim_now());
}

/* Who may hand this SHO a device statement (DESIGN.md section 10), for both endpoints below:
 *  - the device itself, with a `full` token this SHO issued to it (its own subscription);
 *  - the RO (mTLS, its certificate), relaying a statement the device addressed to us
 *    (POST ro /v1/dpf/notices, or a discard receipt the RO took in place of our
 *    acknowledgement): the statement itself is the proof, checked at the time the RO verified
 *    it (`verified_at`: a relay may reach us long after, when we come back).
 * A revoked token (the subscription it was issued for ended) is let through with `revoked`
 * set: only a retry of the very request that ended it may then get its stored answer. */
struct stmt_caller {
  bool relay, revoked;
  mcim_cause_t token; /* the token's refusal (mcim_role_access_challenge), MCIM_OK if none */
  int64_t now; /* 0: the wall clock */
};

static mcim_cause_t stmt_caller_check(struct mcim_role *r, const struct mcim_http_request *req,
                                      const char *device, struct stmt_caller *c, char *err,
                                      size_t len)
{
  struct mcim_access acc;
  const char *ro = mcim_config_str(r->cfg, "ro");
  memset(c, 0, sizeof(*c));
  if (req->peer && strcmp(req->peer, ro) == 0) {
    json_int_t at = json_integer_value(json_object_get(req->json, "verified_at"));
    c->relay = true;
    c->now = at > 0 && at <= mcim_now() ? (int64_t)at : 0;
    return MCIM_OK;
  }
  mcim_cause_t rc = mcim_role_check_access(r, req, true, &acc);
  if (rc == MCIM_TOKEN_REVOKED) {
    c->revoked = true;
    rc = MCIM_OK;
  }
  if (rc != MCIM_OK) {
    snprintf(err, len, "this needs full access with a token of %s (or the RO's relay)", r->name);
    c->token = rc;
    return rc;
  }
  if (strcmp(acc.device, device) != 0) {
    snprintf(err, len, "a device speaks only for itself");
    return MCIM_FORBIDDEN;
  }
  return MCIM_OK;
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

mcim_cause_t mcim_sho_discard_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},          {"device", MCIM_JV_STRING, true, 63},
      {"receipt", MCIM_JV_STRING, true, 16384}, {"tre_cert", MCIM_JV_STRING, true, 8192},
      {"step", MCIM_JV_INTEGER, false, 0},      {"verified_at", MCIM_JV_INTEGER, false, 0},
  };
  return mcim_jsonv_check(body, fields, 6, err, err_len);
}

/* POST /v1/discards: the old SHO learns that the device discarded its MCIM (change step 9,
 * the pristine path's deferred notice relayed by the RO, or a receipt the RO accepted in
 * place of our acknowledgement while we were away); it terminates the subscription (which
 * revokes its tokens) and acknowledges (step 10). The stored acknowledgement names this SHO
 * and the old IMSI: it goes only to a caller that passed every check of the first request. */
void mcim_sho_discard(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct stmt_caller caller = {0};
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL, *stored = NULL;
  char *ack = NULL;
  int status = 0;
  bool in_txn = false;
  mcim_store_t *st = NULL;
  const char *txn = NULL, *device = NULL;
  json_int_t step = 9;
  mcim_cause_t rc = mcim_sho_discard_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK) {
    txn = json_string_value(json_object_get(req->json, "txn"));
    device = json_string_value(json_object_get(req->json, "device"));
    if (json_object_get(req->json, "step"))
      step = json_integer_value(json_object_get(req->json, "step")) == 0 ? 0 : 9;
    rc = stmt_caller_check(r, req, device, &caller, err, sizeof(err));
    if (caller.relay)
      step = 0; /* told later, through the RO */
  }
  int ack_step = step ? 10 : 0;
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, (int)step, "%s", err);
    mcim_role_access_challenge(resp, caller.token);
    goto out;
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, (int)step, "store unavailable");
    goto out;
  }
  /* The same checks as the first request, then (only then) its stored answer. */
  rc = mcim_sho_device_statement(r, json_string_value(json_object_get(req->json, "receipt")),
                                 json_string_value(json_object_get(req->json, "tre_cert")), device,
                                 "mcim-discard+jwt", txn, caller.now, &stmt);
  const char *imsi = stmt ? mcim_statement_string(stmt, "imsi") : NULL;
  const char *slot = stmt ? mcim_statement_string(stmt, "slot") : NULL;
  if (rc == MCIM_OK && (!imsi || !slot))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK && strcmp(slot, r->name) != 0)
    rc = MCIM_SLOT_FORBIDDEN;
  if (rc == MCIM_OK)
    rc = check_imsi_owner(st, imsi, device);
  if (rc != MCIM_OK) {
    /* traced once the device's TRE signed it for this txn; before, anyone's: logged */
    if (stmt)
      mcim_role_trace(r, txn, ack_step, r->name, device, "discard receipt refused", NULL, rc);
    else
      mcim_log_event(MCIM_LOG_WARN, txn, ack_step, rc, "discard receipt of %s refused", device);
    mcim_http_reply_problem(resp, rc, (int)step, "discard receipt of %s refused", device);
    goto out;
  }
  /* A retried receipt (signed afresh, or the RO's relay again) gets the same answer. */
  if (mcim_role_answer_get(st, txn, 10, device, &status, &stored) == MCIM_OK) {
    mcim_http_reply_json(resp, status, stored);
    stored = NULL;
    goto out;
  }
  if (caller.revoked) {
    /* a token of a subscription that ended otherwise: not the caller of that ending */
    mcim_http_reply_problem(resp, MCIM_TOKEN_REVOKED, (int)step,
                            "the subscription this token was issued for has ended");
    mcim_role_access_challenge(resp, MCIM_TOKEN_REVOKED);
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
    in_txn = rc == MCIM_OK;
  }
  /* Looked up again under the write lock: a copy of this receipt that arrived at the same
   * time may have been recorded since the lookup above; it gets the same answer. */
  if (in_txn && mcim_role_answer_get(st, txn, 10, device, &status, &stored) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, stored);
    stored = NULL;
    goto out;
  }
  if (rc == MCIM_OK)
    rc = record_jti(r, stmt, caller.now);
  if (rc == MCIM_OK) {
    rc = mcim_auc_terminate(st, imsi);
    if (rc == MCIM_NOT_FOUND)
      rc = MCIM_OK;
  }
  if (rc == MCIM_OK) /* step 10: out of the HLR too (after the commit, then the tick) */
    rc = mcim_auc_sync_want(r, st, imsi, false);
  /* Its tokens are revoked here by the termination itself (token_live_at_issuer); the PVA,
   * which honours every network's tokens, is told in the same unit of work. */
  if (rc == MCIM_OK)
    rc = revoke_at_pva(r, st, txn, device, imsi, ack_step);
  if (rc == MCIM_OK) {
    int64_t now = mcim_now();
    mcim_val_t p[] = {MCIM_INT(now), MCIM_TEXT(device), MCIM_TEXT(imsi)};
    rc = mcim_store_exec(st,
                         "UPDATE orders SET state = 'released', updated = ? WHERE device = ?"
                         " AND imsi = ? AND state <> 'failed'",
                         p, 3, NULL, NULL);
  }
  /* The DRF entry is per (device, SHO): it is released only when no other subscription of
   * this device lives here (a pristine change that came back to us with a new MCIM, while
   * the notice about the old one was still on its way, keeps its entry). */
  int64_t others = 0;
  if (rc == MCIM_OK) {
    mcim_val_t q[] = {MCIM_TEXT(device), MCIM_TEXT(imsi)};
    rc = mcim_store_query_int(st,
                              "SELECT COUNT(*) FROM auc WHERE device = ? AND imsi <> ? AND state"
                              " IN ('pending', 'active', 'standby')",
                              q, 2, &others);
  }
  if (rc == MCIM_OK && others == 0)
    rc = mcim_sho_register(r, st, txn, device, "released", ack_step,
                           "DRF: M2ME no longer subscribes to this SHO");
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 10, device, 200, answer);
  if (rc == MCIM_OK) /* the trace row rides on the discard's commit */
    mcim_role_trace(r, txn, ack_step, r->name,
                    caller.relay ? mcim_config_str(r->cfg, "ro") : device,
                    ack_step ? "acknowledgement: old subscription terminated"
                             : "acknowledgement of the deferred notice: subscription terminated",
                    answer, MCIM_OK);
  if (in_txn)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_CONFLICT &&
      mcim_role_answer_get(st, txn, 10, device, &status, &stored) == MCIM_OK) {
    mcim_http_reply_json(resp, status, stored); /* the copy above won on a store without it */
    stored = NULL;
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, (int)step, "discard not recorded");
    goto out;
  }
  mcim_role_wake(r);
  (void)mcim_auc_sync_run(r, imsi);
  mcim_log_event(MCIM_LOG_NOTICE, txn, (int)step, MCIM_OK,
                 "%s discarded its MCIM: subscription %s terminated, no more AVs, its tokens"
                 " revoked%s", device, imsi, caller.relay ? " (told through the RO)" : "");
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  json_decref(stored);
  free(ack);
  mcim_statement_free(stmt);
}

mcim_cause_t mcim_sho_release_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"release", MCIM_JV_STRING, true, 16384},
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

/* POST /v1/releases (RO's DPF, step 11): the old subscription is released. */
void mcim_sho_release(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct mcim_sho_order o = {0};
  const mcim_jose_key_t *ro_key = NULL;
  mcim_statement_t *stmt = NULL;
  const char *ro = mcim_config_str(r->cfg, "ro");
  mcim_cause_t rc = mcim_sho_release_body(req->json, err, sizeof(err));
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
  /* The order again, under the writers' lock: the device's report (step 13) may have been
   * applied since `o` was read, by another thread or instance (mcim_sho_on_report reads
   * `released` under the same lock: one of the two sees the other's commit). */
  if (rc == MCIM_OK) {
    mcim_sho_order_clear(&o);
    rc = mcim_sho_order_load(st, txn, &o);
  }
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
  if (strcmp(o.state, "installed") == 0) { /* went live just now */
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS(o.procedure));
    mcim_http_wake("auc-active:%s", o.imsi); /* the device's attach held for it */
  }
  mcim_log_event(MCIM_LOG_INFO, txn, 11, MCIM_OK,
                 "the previous subscription of %s is released (verified by the RO)", device);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:b}", "txn", txn, "released", 1));
out:
  mcim_statement_free(stmt);
  mcim_sho_order_clear(&o);
}

mcim_cause_t mcim_sho_notification_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},          {"device", MCIM_JV_STRING, true, 63},
      {"notice", MCIM_JV_STRING, true, 16384}, {"tre_cert", MCIM_JV_STRING, true, 8192},
      {"verified_at", MCIM_JV_INTEGER, false, 0},
  };
  return mcim_jsonv_check(body, fields, 5, err, err_len);
}

/* A notice is applied only in the order its device's TRE signed it (tre_sign.c,
 * notify_check): a switch's notices and its undo's reach us by two roads, straight from the
 * device and through the RO's outbox, which keeps no order, and the state they leave must be
 * the last one the device asked for. A notice below the newest one applied to this
 * subscription is MCIM_NOTICE_OVERTAKEN, which the RO's outbox takes as delivered; the same
 * one again (a retry) passes. The conditional UPDATE is the check and the record at once, in
 * the handler's transaction, which holds the writers' lock (SQLite BEGIN IMMEDIATE; on
 * PostgreSQL the advisory lock taken at begin): two instances' notices for one subscription
 * are applied one after the other. */
static mcim_cause_t notice_in_order(mcim_store_t *st, const char *txn, const char *imsi,
                                    json_int_t seq, char *err, size_t err_len)
{
  mcim_val_t p[] = {MCIM_INT(seq), MCIM_TEXT(imsi), MCIM_INT(seq)};
  mcim_cause_t rc = mcim_store_exec(st,
                                    "UPDATE auc SET notice_seq = ? WHERE imsi = ?"
                                    " AND notice_seq <= ?",
                                    p, 3, NULL, NULL);
  if (rc != MCIM_OK || mcim_store_changes(st) > 0)
    return rc;
  /* or the row is gone since check_imsi_owner (purged once terminated): nothing to order */
  int64_t n = 0;
  mcim_val_t q[] = {MCIM_TEXT(imsi)};
  rc = mcim_store_query_int(st, "SELECT COUNT(*) FROM auc WHERE imsi = ?", q, 1, &n);
  if (rc != MCIM_OK)
    return rc;
  if (n == 0) {
    snprintf(err, err_len, "subscription %s is no longer known here", imsi);
    return MCIM_UNKNOWN_IDENTITY;
  }
  snprintf(err, err_len,
           "subscription %s: the device's TRE signed a later notice (beyond its order %lld),"
           " already applied here; this one changes nothing", imsi, (long long)seq);
  mcim_log_event(MCIM_LOG_INFO, txn, 0, MCIM_NOTICE_OVERTAKEN, "%s", err);
  return MCIM_NOTICE_OVERTAKEN;
}

/* POST /v1/notifications: switch between pre-provisioned MCIMs. `suspend` (the slot being
 * left): AuC active -> standby; `resume` (the slot being entered): standby -> active and
 * the DRF learns the device subscribes here. The device tells the SHO it leaves with that
 * SHO's own token; the SHO it enters hears it through the RO (it holds no live token of
 * that SHO yet, and never sends one SHO's token to another). Answers are kept per (txn,
 * device, event): never handed to another device, nor for the other event. */
void mcim_sho_notification(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], what[128];
  struct stmt_caller caller = {0};
  mcim_statement_t *stmt = NULL;
  mcim_store_t *st = NULL;
  json_t *answer = NULL;
  int status = 0;
  bool in_txn = false;
  const char *txn = NULL, *device = NULL;
  mcim_cause_t rc = mcim_sho_notification_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK) {
    txn = json_string_value(json_object_get(req->json, "txn"));
    device = json_string_value(json_object_get(req->json, "device"));
    rc = stmt_caller_check(r, req, device, &caller, err, sizeof(err));
  }
  if (rc == MCIM_OK && caller.revoked) {
    rc = MCIM_TOKEN_REVOKED;
    caller.token = rc;
    snprintf(err, sizeof(err), "the subscription this token was issued for has ended");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    mcim_role_access_challenge(resp, caller.token);
    goto out;
  }
  st = mcim_role_store(r);
  rc = st ? mcim_sho_device_statement(r, json_string_value(json_object_get(req->json, "notice")),
                                      json_string_value(json_object_get(req->json, "tre_cert")),
                                      device, "mcim-notify+jwt", txn, caller.now, &stmt)
          : MCIM_STORE_ERROR;
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
  json_int_t seq = mcim_notice_seq(stmt);
  if (rc == MCIM_OK && seq == 0)
    rc = MCIM_CLAIM_MISSING; /* the TRE's order of notices (tre_sign.c, notify_check) */
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "notification refused");
    goto out;
  }
  snprintf(what, sizeof(what), "notice/%s/%s/%lld", device, resume ? "resume" : "suspend",
           (long long)seq);
  /* a retried notice (the same checks passed): the same answer */
  if (mcim_role_answer_get(st, txn, 0, what, &status, &answer) == MCIM_OK) {
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  /* One transaction from here: the notice's jti is recorded with the stored answer, so a
   * duplicate racing this one waits for the lock and gets the answer, not a REPLAY. */
  rc = mcim_store_begin(st);
  in_txn = rc == MCIM_OK;
  if (in_txn && mcim_role_answer_get(st, txn, 0, what, &status, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status, answer);
    answer = NULL;
    goto out;
  }
  if (rc == MCIM_OK)
    rc = record_jti(r, stmt, caller.now);
  if (rc == MCIM_OK)
    rc = notice_in_order(st, txn, imsi, seq, err, sizeof(err));
  char state[16] = "";
  if (rc == MCIM_OK)
    rc = mcim_auc_state(st, imsi, state, NULL);
  const char *want = resume ? "active" : "standby";
  /* A switch to an MCIM whose install report (step 15) has not reached us yet: "not yet"
   * (the RO's outbox asks again), not WRONG_STATE, which it would take as done. */
  if (rc == MCIM_OK && resume && strcmp(state, "pending") == 0)
    rc = MCIM_REPORT_PENDING;
  bool changed = rc == MCIM_OK && strcmp(state, want) != 0;
  if (changed) {
    rc = mcim_auc_set_state(st, imsi, resume ? "standby" : "active", want);
    /* a switch: the MCIM switched to goes into the HLR, the one switched away from leaves
     * it (the HLR itself refuses it then; it comes back if the device switches back) */
    if (rc == MCIM_OK)
      rc = mcim_auc_sync_want(r, st, imsi, resume);
    if (rc == MCIM_OK && resume)
      rc = mcim_sho_register(r, st, txn, device, "subscribed", 0,
                             "DRF: M2ME switched to its MCIM of this SHO");
    if (rc == MCIM_OK && !resume)
      rc = mcim_sho_register(r, st, txn, device, "preloaded", 0,
                             "DRF: M2ME switched away (MCIM kept in reserve)");
  }
  answer = json_pack("{s:s,s:s,s:s}", "txn", txn, "imsi", imsi, "state", want);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 0, what, 200, answer);
  if (in_txn)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    if (rc == MCIM_REPORT_PENDING)
      resp->retry_after = 1; /* rolled back, its jti with it: the retry is no replay */
    if (rc == MCIM_NOTICE_OVERTAKEN || rc == MCIM_UNKNOWN_IDENTITY)
      mcim_http_reply_problem(resp, rc, 0, "%s", err);
    else
      mcim_http_reply_problem(resp, rc, 0, "subscription %s cannot be %s", imsi,
                              resume ? "resumed" : "suspended");
    goto out;
  }
  mcim_role_wake(r);
  if (changed)
    (void)mcim_auc_sync_run(r, imsi);
  if (resume && changed)
    mcim_http_wake("auc-active:%s", imsi); /* the device's attach held for it */
  if (resume && changed) /* the switch's end at the SHO it switched to */
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS("switch"));
  mcim_role_trace(r, txn, 0, r->name, caller.relay ? mcim_config_str(r->cfg, "ro") : device,
                  resume ? "subscription resumed (pre-provisioned MCIM active)"
                         : "subscription suspended (MCIM kept in reserve)",
                  NULL, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_statement_free(stmt);
}
