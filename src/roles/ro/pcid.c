/* RO: PCID credential renewal (docs/protocol.md "PCID credential lifetime and renewal",
 * docs/pcid-renewal.md).
 *
 * DPF  POST /v1/dpf/pcid               device-initiated: a new PCID from the RO's own pool,
 *                                      in its ICF before the answer, sealed to the TRE
 * ICF  POST /v1/icf/pcids {replaces}   the M2MES CCIF registers the PCID it renewed
 * RO   POST /v1/admin/pcid/{d}/renew   network-initiated: the device's PCID is marked
 *                                      `renewal due`; the ICF's AV answers then carry
 *                                      `renewal_due: true` (the VNO relays it to the device)
 *
 * The ICF's rule for a renewal (both paths): the claimed PCID must be one of the device's own
 * and still active (not superseded); the new one is added; every other PCID of the device is
 * terminated (a renewal the device never installed, or the one before the claimed one), so a
 * device has at most two live PCIDs at the ICF -- the one it uses and the new one -- the same
 * two its TRE keeps (pcid and pcid-prev). The claimed one stays until its own expiry or the
 * next renewal: the TRE keeps it until the new one has passed an AKA. The device's renewal
 * flags are cleared in the same transaction.
 *
 * The DPF grants a device one renewal (a new txn) per pcid_renewal_interval (roles/pcid.c,
 * table pcid_grants), but a renewal the network asked for (the device's renewal flags). */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_sync.h"
#include "roles/pcid.h"
#include "roles/ro/ro.h"

#define ALLOC_ATTEMPTS 8 /* PCIDs of the pool skipped when the ICF already has them */

const char mcim_ro_pcid_schema_sql[] =
    "CREATE TABLE pcid_counter (id BIGINT PRIMARY KEY, next BIGINT NOT NULL);"
    "INSERT INTO pcid_counter (id, next) VALUES (1, 1);"
    "CREATE TABLE icf_renewal (imsi TEXT PRIMARY KEY, device TEXT NOT NULL,"
    " since BIGINT NOT NULL, txn TEXT);"
    "CREATE INDEX icf_renewal_device ON icf_renewal (device)";

/* ---- the ICF's rule ---- */

struct pcid_row {
  char device[64];
  char state[16];
};

static mcim_cause_t pcid_row_cb(const mcim_row_t *row, void *arg)
{
  struct pcid_row *p = arg;
  snprintf(p->device, sizeof(p->device), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(p->state, sizeof(p->state), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  return MCIM_OK;
}

/* `old` must be an active PCID of `device`. */
static mcim_cause_t check_claim(mcim_store_t *st, const char *device, const char *old,
                                char *why, size_t whylen)
{
  struct pcid_row p = {{0}, {0}};
  mcim_val_t q[] = {MCIM_TEXT(old)};
  mcim_cause_t rc = mcim_store_query_one(st, "SELECT device, state FROM auc WHERE imsi = ?", q, 1,
                                         pcid_row_cb, &p);
  if (rc == MCIM_NOT_FOUND || (rc == MCIM_OK && strcmp(p.device, device) != 0)) {
    snprintf(why, whylen, "PCID %s is not a PCID of %s at the ICF", old, device);
    return MCIM_CLAIM_MISMATCH;
  }
  if (rc == MCIM_OK && strcmp(p.state, "active") != 0) {
    snprintf(why, whylen, "PCID %s of %s was superseded (%s): renew from the current one", old,
             device, p.state);
    return MCIM_CLAIM_MISMATCH;
  }
  if (rc != MCIM_OK)
    snprintf(why, whylen, "cannot read PCID %s", old);
  return rc;
}

/* After the new PCID is in the AuC: terminate the device's other PCIDs but the claimed one,
 * and clear its renewal flags. Caller's transaction. */
static mcim_cause_t supersede(struct mcim_role *r, mcim_store_t *st, const char *device,
                              const char *old, const char *fresh)
{
  mcim_val_t u[] = {MCIM_TEXT(device), MCIM_TEXT(old), MCIM_TEXT(fresh)};
  /* with an HLR, they leave it too (and the new one goes in: the caller) */
  mcim_cause_t rc = mcim_auc_sync_unwant_others(r, st, device, old, fresh);
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                                    "UPDATE auc SET state = 'terminated' WHERE device = ? AND"
                                    " imsi <> ? AND imsi <> ? AND state = 'active'",
                                    u, 3, NULL, NULL);
  int64_t n = rc == MCIM_OK ? mcim_store_changes(st) : 0;
  mcim_val_t d[] = {MCIM_TEXT(device)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st, "DELETE FROM icf_renewal WHERE device = ?", d, 1, NULL, NULL);
  if (rc == MCIM_OK && n > 0)
    mcim_log_info("ICF: %lld older PCID(s) of %s terminated (renewed from %s to %s)",
                  (long long)n, device, old, fresh);
  return rc;
}

void mcim_icf_renewal_note(mcim_store_t *st, const char *pcid, json_t *answer)
{
  int64_t n = 0;
  mcim_val_t p[] = {MCIM_TEXT(pcid)};
  if (st && mcim_store_query_int(st, "SELECT COUNT(*) FROM icf_renewal WHERE imsi = ?", p, 1,
                                 &n) == MCIM_OK &&
      n > 0)
    json_object_set_new(answer, "renewal_due", json_true());
}

/* ---- ICF: POST /v1/icf/pcids with "replaces" (the M2MES CCIF renewed a PCID) ---- */

mcim_cause_t mcim_icf_pcids_replace_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"pcid", MCIM_JV_STRING, true, 15}, {"device", MCIM_JV_STRING, true, 63},
      {"k", MCIM_JV_HEX, true, 32},       {"opc", MCIM_JV_HEX, true, 32},
      {"amf", MCIM_JV_HEX, true, 4},      {"expires", MCIM_JV_INTEGER, true, 0},
      {"txn", MCIM_JV_HEX, false, 32},    {"replaces", MCIM_JV_STRING, true, 15},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, sizeof(fields) / sizeof(fields[0]), err,
                                     err_len);
  const char *pcid = json_string_value(json_object_get(body, "pcid"));
  if (rc == MCIM_OK &&
      (strlen(pcid) != MCIM_PCID_DIGITS || strspn(pcid, "0123456789") != MCIM_PCID_DIGITS ||
       strcmp(pcid, json_string_value(json_object_get(body, "replaces"))) == 0)) {
    rc = MCIM_INVALID_ARGUMENT;
    snprintf(err, err_len, "pcid must be 15 digits and differ from the one it replaces");
  }
  return rc;
}

void mcim_icf_pcids_replace(struct mcim_role *r, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  char err[200];
  struct mcim_auc_sub sub = {0};
  struct pcid_row have = {{0}, {0}};
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = mcim_icf_pcids_replace_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "%s", err);
    return;
  }
  const char *old = json_string_value(json_object_get(req->json, "replaces"));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  sub.imsi = json_string_value(json_object_get(req->json, "pcid"));
  sub.device = json_string_value(json_object_get(req->json, "device"));
  sub.expires = json_integer_value(json_object_get(req->json, "expires"));
  if (sub.expires <= mcim_now()) {
    mcim_http_reply_problem(resp, MCIM_CREDENTIAL_EXPIRED, MCIM_PCID_STEP,
                            "a renewed PCID must not be expired already");
    return;
  }
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "k")), sub.k, sizeof(sub.k));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "opc")), sub.opc,
                      sizeof(sub.opc));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "amf")), sub.amf,
                      sizeof(sub.amf));
  rc = st ? mcim_store_begin(st) : MCIM_STORE_ERROR;
  if (rc != MCIM_OK) {
    mcim_wipe(&sub, sizeof(sub));
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "store unavailable");
    return;
  }
  /* The same registration again (the M2MES retrying) is idempotent. */
  mcim_val_t q[] = {MCIM_TEXT(sub.imsi)};
  rc = mcim_store_query_one(st, "SELECT device, state FROM auc WHERE imsi = ?", q, 1, pcid_row_cb,
                            &have);
  bool again = rc == MCIM_OK;
  if (again && strcmp(have.device, sub.device) != 0) {
    rc = MCIM_CONFLICT;
    snprintf(err, sizeof(err), "PCID %s is held by another device", sub.imsi);
  } else if (again && strcmp(have.state, "active") != 0) {
    rc = MCIM_CONFLICT;
    snprintf(err, sizeof(err), "PCID %s was already superseded", sub.imsi);
  } else {
    rc = check_claim(st, sub.device, old, err, sizeof(err));
    if (rc == MCIM_OK && !again)
      rc = mcim_auc_add(st, r->storage_key, &sub);
    if (rc == MCIM_OK && !again)
      rc = mcim_auc_sync_want(r, st, sub.imsi, true);
    if (rc == MCIM_OK)
      rc = supersede(r, st, sub.device, old, sub.imsi);
    if (rc != MCIM_OK && rc != MCIM_CLAIM_MISMATCH)
      snprintf(err, sizeof(err), "PCID %s not registered", sub.imsi);
  }
  mcim_wipe(&sub, sizeof(sub));
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  const char *pcid = json_string_value(json_object_get(req->json, "pcid"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, MCIM_PCID_STEP, r->name, req->peer, "ICF: renewed PCID refused", NULL,
                    rc);
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "%s", err);
    return;
  }
  (void)mcim_auc_sync_run(r, NULL);
  mcim_log_event(MCIM_LOG_INFO, txn, MCIM_PCID_STEP, MCIM_OK,
                 "ICF: PCID %s registered for device %s, renewing %s (from %s)", pcid, device, old,
                 req->peer);
  json_t *body = json_pack("{s:s,s:s,s:O,s:s}", "pcid", pcid, "device", device, "expires",
                           json_object_get(req->json, "expires"), "replaces", old);
  mcim_role_trace(r, txn, MCIM_PCID_STEP, r->name, req->peer,
                  "ICF: renewed PCID registered", body, MCIM_OK);
  mcim_http_reply_json(resp, 201, body);
}

/* ---- DPF: POST /v1/dpf/pcid ---- */

/* The network asked the device to renew (an admin push marked a PCID of it): such a renewal
 * is not held back by pcid_renewal_interval. */
static bool renewal_due(mcim_store_t *st, const char *device)
{
  int64_t n = 0;
  mcim_val_t d[] = {MCIM_TEXT(device)};
  return mcim_store_query_int(st, "SELECT COUNT(*) FROM icf_renewal WHERE device = ?", d, 1,
                              &n) == MCIM_OK &&
         n > 0;
}

void mcim_dpf_pcid(void *ctx, const struct mcim_http_request *req,
                   struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_pcid_request rq;
  struct mcim_pcid_cred cred;
  struct mcim_auc_sub sub = {0};
  json_t *answer = NULL;
  char what[80], why[200] = "";
  int wait = 0;
  mcim_store_t *st = mcim_role_store(r);

  memset(&cred, 0, sizeof(cred));
  if (!mcim_pcid_request_begin(r, req, resp, renewal_due, &rq))
    return;
  mcim_cause_t rc = st ? mcim_store_begin(st) : MCIM_STORE_ERROR;
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "store unavailable");
    goto out;
  }
  /* The stored answer again, under the writers' lock: a copy of this request on another
   * instance (or thread) may have answered since mcim_pcid_request_begin looked; it is the
   * answer, not a CONFLICT at the answer's key (review of 2026-12-07). */
  mcim_pcid_answer_what(rq.device, what);
  int stored_status = 0;
  if (mcim_role_answer_get(st, rq.txn, MCIM_PCID_STEP, what, &stored_status, &answer) ==
      MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, stored_status, answer);
    answer = NULL;
    goto out;
  }
  rc = check_claim(st, rq.device, rq.pcid, why, sizeof(why));
  /* the limit again, in this transaction: another txn may have been granted meanwhile */
  if (rc == MCIM_OK)
    rc = mcim_pcid_grant_take(r, st, rq.device, rq.txn, renewal_due(st, rq.device), &wait);
  if (rc == MCIM_RENEWAL_TOO_EARLY)
    snprintf(why, sizeof(why), "%s renewed its PCID credential less than pcid_renewal_interval"
             " ago (another txn); renew in %d s", rq.device, wait);
  /* A PCID of the pool the ICF already holds (registered by someone else): the next one. */
  for (int i = 0; rc == MCIM_OK; i++) {
    int64_t n = 0;
    rc = mcim_pcid_allocate(r, st, cred.pcid);
    mcim_val_t q[] = {MCIM_TEXT(cred.pcid)};
    if (rc == MCIM_OK)
      rc = mcim_store_query_int(st, "SELECT COUNT(*) FROM auc WHERE imsi = ?", q, 1, &n);
    if (rc != MCIM_OK || n == 0)
      break;
    mcim_log_event(MCIM_LOG_WARN, rq.txn, MCIM_PCID_STEP, MCIM_CONFLICT,
                   "PCID %s of the RO's pool is already at the ICF; check that no one else"
                   " uses pool %s",
                   cred.pcid, mcim_config_str(r->cfg, "pcid_prefix"));
    if (i + 1 == ALLOC_ATTEMPTS)
      rc = MCIM_CONFLICT;
  }
  if (rc != MCIM_OK && !why[0])
    snprintf(why, sizeof(why), "no PCID could be allocated from pool %s",
             mcim_config_str(r->cfg, "pcid_prefix"));
  if (rc == MCIM_OK)
    rc = mcim_pcid_cred_secrets(r, &cred);
  if (rc == MCIM_OK) {
    sub.imsi = cred.pcid;
    sub.device = rq.device;
    memcpy(sub.k, cred.k, sizeof(sub.k));
    memcpy(sub.opc, cred.opc, sizeof(sub.opc));
    memcpy(sub.amf, cred.amf, sizeof(sub.amf));
    sub.expires = cred.expires;
    rc = mcim_auc_add(st, r->storage_key, &sub);
    mcim_wipe(&sub, sizeof(sub));
  }
  if (rc == MCIM_OK)
    rc = mcim_auc_sync_want(r, st, cred.pcid, true);
  if (rc == MCIM_OK)
    rc = supersede(r, st, rq.device, rq.pcid, cred.pcid);
  if (rc == MCIM_OK)
    rc = mcim_pcid_answer(r, &rq, &cred, &answer);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, rq.txn, MCIM_PCID_STEP, what, 200, answer);
  if (rc != MCIM_OK && !why[0])
    snprintf(why, sizeof(why), "the new PCID of %s could not be registered", rq.device);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_RENEWAL_TOO_EARLY) /* another txn was granted since the check: logged */
    mcim_log_event(MCIM_LOG_WARN, rq.txn, MCIM_PCID_STEP, rc, "DPF: %s", why);
  else if (rc != MCIM_OK)
    mcim_role_trace(r, rq.txn, MCIM_PCID_STEP, r->name, rq.device,
                    "DPF: PCID renewal refused", NULL, rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "%s", why[0] ? why : "not renewed");
    resp->retry_after = rc == MCIM_RENEWAL_TOO_EARLY ? wait : 0;
    goto out;
  }
  (void)mcim_auc_sync_run(r, NULL); /* the new PCID into the HLR, the old ones out */
  mcim_log_event(MCIM_LOG_INFO, rq.txn, MCIM_PCID_STEP, MCIM_OK,
                 "DPF: PCID %s issued to %s (renews %s, expires %lld, via %s)", cred.pcid,
                 rq.device, rq.pcid, (long long)cred.expires, rq.network);
  mcim_role_trace(r, rq.txn, MCIM_PCID_STEP, r->name, rq.device,
                  "DPF: new initial network access credential", answer, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_pcid_cred_wipe(&cred);
  mcim_pcid_request_clear(&rq);
}

/* ---- RO admin: POST /v1/admin/pcid/{device}/renew ---- */

static mcim_cause_t imsi_list_cb(const mcim_row_t *row, void *arg)
{
  const char *s = mcim_row_text(row, 0);
  return s && json_array_append_new(arg, json_string(s)) == 0 ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_ro_admin_pcid_renew_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {{"txn", MCIM_JV_HEX, false, 32}};
  /* the body is optional: {} or {"txn"} (to find the push in the trace) */
  return body ? mcim_jsonv_check(body, fields, 1, err, err_len) : MCIM_OK;
}

void mcim_ro_admin_pcid_renew(void *ctx, const struct mcim_http_request *req,
                              struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  const char *device = req->params[0];
  char err[200];
  if (!req->peer || strcmp(req->peer, "admin") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, MCIM_PCID_STEP,
                            "a network-initiated renewal needs the lab admin certificate");
    return;
  }
  if (!mcim_pki_name_valid(device)) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, MCIM_PCID_STEP,
                            "device must be a name of 1-63 characters [A-Za-z0-9._-]");
    return;
  }
  mcim_cause_t rc = mcim_ro_admin_pcid_renew_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "%s", err);
    return;
  }
  const char *txn = req->json ? json_string_value(json_object_get(req->json, "txn")) : NULL;
  mcim_store_t *st = mcim_role_store(r);
  json_t *pcids = json_array();
  rc = st && pcids ? mcim_store_begin(st) : MCIM_STORE_ERROR;
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_INT(mcim_now()), MCIM_TEXT(txn), MCIM_TEXT(device)};
    rc = mcim_store_exec(st,
                         "INSERT INTO icf_renewal (imsi, device, since, txn)"
                         " SELECT imsi, device, ?, ? FROM auc WHERE device = ? AND"
                         " state = 'active' AND imsi NOT IN (SELECT imsi FROM icf_renewal)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  mcim_val_t q[] = {MCIM_TEXT(device)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "SELECT imsi FROM auc WHERE device = ? AND state = 'active'"
                         " ORDER BY created, imsi",
                         q, 1, imsi_list_cb, pcids);
  if (rc == MCIM_OK && json_array_size(pcids) == 0)
    rc = MCIM_NOT_FOUND;
  if (st && mcim_store_in_txn(st))
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    json_decref(pcids);
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP,
                            rc == MCIM_NOT_FOUND ? "device %s has no active PCID at the ICF"
                                                 : "renewal of %s not recorded",
                            device);
    return;
  }
  json_t *body = json_pack("{s:s,s:o,s:s}", "device", device, "pcids", pcids, "renewal", "due");
  mcim_log_event(MCIM_LOG_NOTICE, txn, MCIM_PCID_STEP, MCIM_OK,
                 "RO: PCID renewal of %s due (network-initiated)", device);
  if (txn)
    mcim_role_trace(r, txn, MCIM_PCID_STEP, req->peer, r->name,
                    "RO: PCID renewal due (network-initiated)", body, MCIM_OK);
  mcim_http_reply_json(resp, 202, body);
}
