/* RO, DRF function: the registry, which SHO a device subscribes to (table drf), each entry
 * changed only on proof from the party that holds it (DESIGN.md section 10).
 *
 *   step     who -> RO         request                          here
 *   14/15    SHO (mTLS)        POST /v1/drf/registrations       subscribed / preloaded /
 *   (switch)                   {txn, device, sho, state, seq}   released, each on proof
 *
 * The proofs are the RO's own records: the DPF's install reports (dpf.c), the orders
 * (drf.c), the switches it relayed (drf_switches, relay.c). An SHO registers only itself; `seq` (its
 * time of deciding) keeps the newest of its registrations of a device, whatever order its
 * outbox delivers them in. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

/* The count, or -1 when the store failed (the caller answers a store error, never a
 * refusal: a busy store must not turn a proven request into a permanent 403). */
static int64_t count_rows(mcim_store_t *st, const char *sql, mcim_val_t *p, size_t n)
{
  int64_t v = 0;
  return mcim_store_query_int(st, sql, p, n, &v) == MCIM_OK ? v : -1;
}

/* Whether a proof of `sho` on `device` dated `since` (an install's, a switch's) was overtaken
 * by what the RO itself recorded later, which an SHO cannot forge:
 *  - another SHO's install by an order that was no preload (a change, or the pristine path:
 *    this SHO's MCIM is gone);
 *  - another SHO subscribed by the device's `resume` the RO relayed to it (a switch away:
 *    this SHO's MCIM in reserve), as drf_switches records it (relay.c). Kept
 *    record_retention, as long as the installs it overtakes; before 2026-12-07 it was the
 *    relay's stored answer, kept answer_retention (a day), after which a switched-away SHO
 *    could claim `subscribed` again with its old install.
 * Not the registry's times: an SHO rewrites its own entry at will. "Later" is to the second
 * (the RO's clock); the same second counts as not later. 1, 0, or -1 when the store failed. */
static int64_t overtaken(mcim_store_t *st, const char *device, const char *sho, int64_t since)
{
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_INT(since),
                    MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_INT(since)};
  int64_t n = count_rows(st,
                         "SELECT CASE WHEN EXISTS (SELECT 1 FROM dpf_packages q JOIN drf_orders o"
                         " ON o.txn = q.txn WHERE q.device = ? AND q.sho <> ? AND"
                         " q.state = 'installed' AND o.procedure <> 'preload' AND q.updated > ?)"
                         " OR EXISTS (SELECT 1 FROM drf d JOIN drf_switches s ON"
                         " s.device = d.device AND s.sho = d.sho AND s.txn = d.txn"
                         " WHERE d.device = ? AND d.sho <> ? AND d.state = 'subscribed' AND"
                         " s.relayed > ?) THEN 1 ELSE 0 END",
                         p, 6);
  return n < 0 ? -1 : n > 0 ? 1 : 0;
}

/* The time of the proof `sql` selects (one value, NULL or no row: none), 0 when there is
 * none, -1 when the store failed. */
static int64_t proof_time(mcim_store_t *st, const char *sql, mcim_val_t *p, size_t n)
{
  int64_t v = 0;
  mcim_cause_t rc = mcim_store_query_int(st, sql, p, n, &v);
  return rc == MCIM_OK ? (v > 0 ? v : 1) : rc == MCIM_NOT_FOUND ? 0 : -1;
}

/* MCIM_OK when the proof dated `since` stands, MCIM_REGISTRATION_OVERTAKEN when it was
 * overtaken: the SHO did hold the device, and its registration arrived after the device moved
 * on (its outbox delayed by a restart or a lost instance). Not NOT_PARTY: that is the answer
 * to an SHO that never had a proof, a refusal its outbox gives up on as an error. */
static mcim_cause_t not_overtaken(mcim_store_t *st, const char *device, const char *sho,
                                  int64_t since)
{
  int64_t o = overtaken(st, device, sho, since);
  return o < 0 ? MCIM_STORE_ERROR : o > 0 ? MCIM_REGISTRATION_OVERTAKEN : MCIM_OK;
}

/* The proof a registration needs (DESIGN.md section 10: a registry entry changes only on proof
 * from the party that holds it).
 *  - subscribed / preloaded: the DPF recorded a successful install of this SHO's MCIM on this
 *    device for this txn (a preload's proves `preloaded` only), and for `subscribed` one not
 *    overtaken since (overtaken(): the device moved on, by a change or a switch away).
 *    Before 2026-12-06 an SHO whose entry was released could register itself `subscribed`
 *    again with its old install's txn.
 *  - Without such an install, only what a switch between pre-provisioned MCIMs does to an
 *    entry the SHO already holds: the same state again (a retry), preloaded (an SHO stepping
 *    back is its own business), or preloaded -> subscribed when this RO relayed the device's
 *    TRE-signed `resume` notice of this txn to that SHO (the device chose it; an SHO holding a
 *    pre-provisioned MCIM cannot make itself the device's SHO on its own word), not undone
 *    by the device's relayed `suspend` of the same txn, and not overtaken since (a switch
 *    back, or a change, after it: before 2026-12-07 an SHO switched away from could claim
 *    `subscribed` again with its old switch's txn).
 *  - released: the SHO's own entry, ended by its own termination (it alone calls this).
 *  - A release or a step back to preloaded with no entry yet: taken when an install of this
 *    SHO's MCIM on the device is on record (it served the device; the `subscribed` it ends may
 *    be on its way, or was refused as overtaken: `seq` orders what lands later), else
 *    REGISTRATION_PENDING (retried). */
static mcim_cause_t registration_proven(mcim_store_t *st, const char *txn, const char *device,
                                        const char *sho, const char *state)
{
  mcim_val_t own[] = {MCIM_TEXT(device), MCIM_TEXT(sho)};
  int64_t n;
  bool released = strcmp(state, "released") == 0;
  if (!released) {
    mcim_val_t inst[] = {MCIM_TEXT(txn), MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_TEXT(state)};
    n = proof_time(st,
                   "SELECT MAX(p.updated) FROM dpf_packages p JOIN drf_orders o ON o.txn = p.txn"
                   " WHERE p.txn = ? AND p.device = ? AND p.sho = ? AND p.state = 'installed'"
                   " AND (o.procedure <> 'preload' OR ? = 'preloaded')",
                   inst, 4);
    if (n < 0)
      return MCIM_STORE_ERROR;
    if (n > 0)
      return strcmp(state, "subscribed") == 0 ? not_overtaken(st, device, sho, n) : MCIM_OK;
  }
  mcim_val_t same[] = {MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_TEXT(state)};
  n = count_rows(st,
                 released ? "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ?"
                          : "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ? AND"
                            " (state = ? OR state = 'subscribed')",
                 same, released ? 2 : 3);
  if (n != 0) /* its own entry: released, a retry, or subscribed -> preloaded */
    return n < 0 ? MCIM_STORE_ERROR : MCIM_OK;
  if (released || strcmp(state, "preloaded") == 0) {
    /* No entry: one install of its MCIM here on record is enough (above). A switch away
     * reaches this SHO straight from the device, not through the registry, so its step back
     * can overtake the install's own `subscribed` (seen with two instances under load:
     * refused as final, the older `subscribed` then stood for good). */
    n = count_rows(st,
                   "SELECT COUNT(*) FROM dpf_packages WHERE device = ? AND sho = ?"
                   " AND state = 'installed'",
                   own, 2);
    if (n != 0)
      return n < 0 ? MCIM_STORE_ERROR : MCIM_OK;
    return released ? MCIM_REGISTRATION_PENDING : MCIM_NOT_PARTY;
  }
  if (strcmp(state, "subscribed") != 0)
    return MCIM_NOT_PARTY;
  n = count_rows(st,
                 "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ? AND state = 'preloaded'",
                 own, 2);
  if (n <= 0)
    return n < 0 ? MCIM_STORE_ERROR : MCIM_NOT_PARTY;
  /* the relay's record (relay.c, mcim_dpf_notice): the newest switch to each SHO */
  mcim_val_t resumed[] = {MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_TEXT(txn)};
  n = proof_time(st, "SELECT relayed FROM drf_switches WHERE device = ? AND sho = ? AND txn = ?",
                 resumed, 3);
  return n < 0 ? MCIM_STORE_ERROR : n > 0 ? not_overtaken(st, device, sho, n) : MCIM_NOT_PARTY;
}

mcim_cause_t mcim_drf_register_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},         {"device", MCIM_JV_STRING, true, 63},
      {"sho", MCIM_JV_STRING, true, 63},      {"state", MCIM_JV_STRING, true, 16},
      {"endpoint", MCIM_JV_STRING, true, 255}, {"step", MCIM_JV_INTEGER, false, 0},
      {"seq", MCIM_JV_INTEGER, false, 0},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 7, err, err_len);
  if (rc != MCIM_OK)
    return rc;
  const char *state = json_string_value(json_object_get(body, "state"));
  if (strcmp(state, "subscribed") != 0 && strcmp(state, "released") != 0 &&
      strcmp(state, "preloaded") != 0) {
    snprintf(err, err_len, "state must be subscribed, preloaded or released (orders reach the"
             " DRF as the owner's order: POST /v1/drf/orders)");
    return MCIM_INVALID_ARGUMENT;
  }
  if (strncmp(json_string_value(json_object_get(body, "endpoint")), "https://", 8) != 0) {
    snprintf(err, err_len, "endpoint must be an https URL");
    return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

/* POST /v1/drf/registrations (an SHO, about itself). */
void mcim_drf_register(void *ctx, const struct mcim_http_request *req,
                       struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  mcim_cause_t rc = mcim_drf_register_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 14, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *sho = json_string_value(json_object_get(req->json, "sho"));
  const char *state = json_string_value(json_object_get(req->json, "state"));
  const char *endpoint = json_string_value(json_object_get(req->json, "endpoint"));
  if (!mcim_ro_is_sho_name(req->peer) || strcmp(req->peer, sho) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 14, "an SHO registers only itself");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st || mcim_store_begin(st) != MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 14, "store unavailable");
    return;
  }
  rc = registration_proven(st, txn, device, sho, state);
  if (rc == MCIM_STORE_ERROR) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, rc, 14, "store unavailable (retry)");
    return;
  }
  if (rc == MCIM_REGISTRATION_PENDING) {
    mcim_store_rollback(st);
    resp->retry_after = 1;
    mcim_http_reply_problem(resp, rc, 14,
                            "%s holds no entry for this device yet: its %s waits for it", sho,
                            state);
    return;
  }
  if (rc == MCIM_REGISTRATION_OVERTAKEN) {
    mcim_store_rollback(st);
    mcim_log_event(MCIM_LOG_NOTICE, txn, 14, rc,
                   "DRF: %s's registration of %s as %s came after the device moved on: the"
                   " entry stays as it is", sho, device, state);
    mcim_http_reply_problem(resp, rc, 14,
                            "%s's proof for this procedure is older than a later install or"
                            " switch of this device to another SHO",
                            sho);
    return;
  }
  if (rc != MCIM_OK) {
    mcim_store_rollback(st);
    mcim_log_event(MCIM_LOG_WARN, txn, 14, MCIM_NOT_PARTY,
                   "DRF: %s may not register %s as %s (no proof)", sho, device, state);
    mcim_http_reply_problem(resp, MCIM_NOT_PARTY, 14,
                            strcmp(state, "released") == 0
                                ? "%s holds no entry for this device to release"
                                : "no successful install of %s's MCIM on this device recorded"
                                  " by the DPF for this procedure",
                            sho);
    return;
  }
  int64_t now = mcim_now();
  json_t *jseq = json_object_get(req->json, "seq");
  int64_t seq = jseq ? (int64_t)json_integer_value(jseq) : 0;
  mcim_val_t d[] = {MCIM_TEXT(device), MCIM_TEXT(sho)};
  /* An older registration than the entry's (overtaken on the way): the newer one stands;
   * answered as done, so the SHO's outbox stops. Without `seq` (an older SHO) the last
   * delivered wins, as before. */
  mcim_val_t newer[] = {MCIM_TEXT(device), MCIM_TEXT(sho), MCIM_INT(seq)};
  int64_t n = seq > 0 ? count_rows(st, "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ?"
                                       " AND seq > ?",
                                   newer, 3)
                      : 0;
  if (n != 0) {
    mcim_store_rollback(st);
    if (n < 0) {
      mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 14, "store unavailable (retry)");
      return;
    }
    mcim_log_event(MCIM_LOG_NOTICE, txn, 0, MCIM_OK,
                   "DRF: %s's registration of %s as %s overtaken by a newer one: kept the newer",
                   sho, device, state);
    mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s,s:s,s:b}", "device", device, "sho", sho,
                                              "state", state, "superseded", 1));
    return;
  }
  rc = mcim_store_exec(st, "DELETE FROM drf WHERE device = ? AND sho = ?", d, 2, NULL, NULL);
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(sho),  MCIM_TEXT(state), MCIM_TEXT(endpoint),
                      MCIM_TEXT(txn),    MCIM_INT(now),   MCIM_INT(seq)};
    rc = mcim_store_exec(st,
                         "INSERT INTO drf (device, sho, state, endpoint, txn, updated, seq)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 14, "registration not stored");
    return;
  }
  mcim_log_event(MCIM_LOG_INFO, txn, 0, MCIM_OK, "DRF: %s is %s at %s", device, state, sho);
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s,s:s}", "device", device, "sho", sho,
                                            "state", state));
}

