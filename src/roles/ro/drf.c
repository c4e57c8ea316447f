/* RO, DRF function: which SHO a device was ordered at, for which procedure, and which SHO
 * it subscribes to.
 *
 *   step  who -> RO              request                              here
 *   1     new SHO (mTLS)         POST /v1/drf/orders                  the owner's order, checked
 *                                                                     against the owner record
 *   7-8   M2ME (access token     POST /v1/drf/discover {txn, proof}   the SHO of THAT procedure,
 *         and its TRE's request)                                      to the device itself only
 *   12    new SHO (mTLS)         POST /v1/drf/authorisations          positive verdict: the DRF
 *                                                                     authorises its DPF (dpf.c)
 *   14/15 SHO (mTLS)             POST /v1/drf/registrations           registry.c
 *
 * Orders are keyed by txn (issue 8): the DRF records one only from the owner-signed order the
 * SHO forwards, answers discovery only for the txn the device asks about (never "the newest
 * order of this device", which a concurrent procedure or a flood could change), and the
 * answer is RO-signed (SHO name, endpoint, certificate). The seed leaves discovery FFS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/trace_store.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

/* ---- orders (step 1) ---- */

/* The order's nine columns (ORDER_COLUMNS) from column `at` of a row. */
#define ORDER_COLUMNS "txn, device, sho, endpoint, procedure, via, state, record, expires"
static mcim_cause_t order_from_row(const mcim_row_t *row, size_t at, struct mcim_drf_order *o)
{
  char *cols[] = {o->txn, o->device, o->sho, o->endpoint, o->procedure, o->via, o->state};
  size_t lens[] = {sizeof(o->txn),       sizeof(o->device), sizeof(o->sho), sizeof(o->endpoint),
                   sizeof(o->procedure), sizeof(o->via),    sizeof(o->state)};
  for (size_t i = 0; i < 7; i++)
    snprintf(cols[i], lens[i], "%s",
             mcim_row_text(row, at + i) ? mcim_row_text(row, at + i) : "");
  free(o->record);
  o->record = strdup(mcim_row_text(row, at + 7) ? mcim_row_text(row, at + 7) : "");
  o->expires = mcim_row_int(row, at + 8);
  return o->record ? MCIM_OK : MCIM_NO_MEMORY;
}

static mcim_cause_t order_cb(const mcim_row_t *row, void *arg)
{
  return order_from_row(row, 0, arg);
}

mcim_cause_t mcim_drf_order_load(mcim_store_t *st, const char *txn, struct mcim_drf_order *o)
{
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  return mcim_store_query_one(st,
                              "SELECT " ORDER_COLUMNS " FROM drf_orders WHERE txn = ?", p, 1,
                              order_cb, o);
}

void mcim_drf_order_clear(struct mcim_drf_order *o)
{
  free(o->record);
  o->record = NULL;
}

/* Whether a loaded order (rc: its load's outcome) is live and names this device (and SHO). */
static mcim_cause_t order_party(mcim_cause_t rc, const struct mcim_drf_order *o,
                                const char *device, const char *sho)
{
  if (rc == MCIM_NOT_FOUND)
    return MCIM_NOT_PARTY;
  if (rc == MCIM_OK && (strcmp(o->device, device) != 0 || (sho && strcmp(o->sho, sho) != 0)))
    return MCIM_NOT_PARTY;
  if (rc == MCIM_OK && (strcmp(o->state, "expired") == 0 || o->expires <= mcim_now()))
    return MCIM_NOT_ORDERED;
  return rc;
}

mcim_cause_t mcim_drf_order_of_party(mcim_store_t *st, const char *txn, const char *device,
                                     const char *sho, struct mcim_drf_order *o)
{
  return order_party(mcim_drf_order_load(st, txn, o), o, device, sho);
}

/* The procedures an order may name, and how the DPF numbers them ("change": the old-SHO
 * steps; everything else runs the pristine steps 4-15). */
static bool order_procedure_valid(const char *procedure, const char *via)
{
  if (!procedure)
    return false;
  if (strcmp(procedure, "initial") == 0 || strcmp(procedure, "preload") == 0)
    return true;
  return strcmp(procedure, "change") == 0 && via &&
         (strcmp(via, "old-sho") == 0 || strcmp(via, "pristine") == 0);
}

const char *mcim_drf_dpf_procedure(const struct mcim_drf_order *o)
{
  return strcmp(o->procedure, "change") == 0 && strcmp(o->via, "old-sho") == 0 ? "change"
                                                                                 : "initial";
}

/* Verify an owner's order for `sho`: iss "subscriber", sub = the device, aud = the SHO that
 * forwards it, the txn, signed by the owner the RO records. A signature by any other key is
 * NOT_OWNER. The jti is not spent here: the caller spends it with the order's row. */
static mcim_cause_t verify_order(struct mcim_role *r, mcim_store_t *st, const char *order,
                                 const char *sho, const char *txn, mcim_statement_t **stmt,
                                 char **owner_jwk)
{
  json_t *sub = NULL;
  mcim_jose_key_t *owner = NULL;
  mcim_cause_t rc = mcim_jws_peek_claim(order, "sub", &sub);
  const char *device = json_string_value(sub);
  if (rc == MCIM_OK && (!device || !mcim_pki_name_valid(device)))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK)
    rc = mcim_ro_owner_key(st, device, &owner, owner_jwk);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = "subscriber", .aud = sho, .sub = device,
                            .typ = "mcim-order+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew"),
                            .max_lifetime = MCIM_OWNER_STATEMENT_MAX_LIFETIME};
    rc = mcim_jws_verify(order, strlen(order), owner, &ex, stmt);
    if (rc == MCIM_JWS_BAD_SIGNATURE)
      rc = MCIM_NOT_OWNER;
  }
  mcim_jose_key_free(owner);
  json_decref(sub);
  return rc;
}

/* The owner record's epoch (RO migration 13: one more at each handover) while `owner_jwk` is
 * still the device's owner key; NOT_OWNER once a handover replaced it. The SHO keeps it with
 * the order: an order of a newer epoch ends its older ones there (sho/order.c). */
static mcim_cause_t owner_epoch(mcim_store_t *st, const char *device, const char *owner_jwk,
                                int64_t *epoch)
{
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(owner_jwk)};
  mcim_cause_t rc = mcim_store_query_int(
      st, "SELECT epoch FROM owners WHERE device = ? AND owner_jwk = ?", p, 2, epoch);
  return rc == MCIM_NOT_FOUND ? MCIM_NOT_OWNER : rc;
}

static json_t *order_answer(const struct mcim_drf_order *o, const char *owner_jwk,
                            int64_t epoch)
{
  json_t *jwk = json_loads(owner_jwk, 0, NULL);
  return json_pack("{s:s,s:s,s:s,s:s,s:o?,s:I}", "txn", o->txn, "device", o->device, "sho",
                   o->sho, "record", o->record, "owner_jwk", jwk, "owner_epoch",
                   (json_int_t)epoch);
}

/* Step 8: tell the SHO that the device found it (the SHO then asks the PVA, step 9).
 * A long budget: without it the procedure cannot go on (caller's transaction). */
static mcim_cause_t queue_ready(struct mcim_role *r, mcim_store_t *st, const char *sho,
                                const char *txn, const char *device)
{
  json_t *ready = json_pack("{s:s,s:s}", "txn", txn, "device", device);
  mcim_cause_t rc = ready ? mcim_role_outbox_put_budget(r, st, sho, "/v1/devices/ready", ready,
                                                        txn, 8, "DRF: M2ME ready for provisioning",
                                                        MCIM_OUTBOX_UNTIL_RETENTION)
                          : MCIM_NO_MEMORY;
  json_decref(ready);
  return rc;
}

static mcim_cause_t count_one(const mcim_row_t *row, void *arg)
{
  *(int64_t *)arg = mcim_row_int(row, 0);
  return MCIM_OK;
}

/* The order `o` again from its SHO: if the device has discovered (a step-8 answer is
 * stored) and no announcement is on its way or delivered, queue one. */
static mcim_cause_t reannounce(struct mcim_role *r, mcim_store_t *st,
                               const struct mcim_drf_order *o)
{
  int64_t answered = 0, queued = 0;
  mcim_val_t a[] = {MCIM_TEXT(o->txn), MCIM_TEXT(o->device)};
  mcim_val_t q[] = {MCIM_TEXT(o->txn)};
  if (strcmp(mcim_config_str(r->cfg, "drf_notify"), "yes") != 0)
    return MCIM_OK;
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_store_exec(st, "SELECT COUNT(*) FROM answers WHERE txn = ? AND step = 8 AND what = ?",
                       a, 2, count_one, &answered);
  if (rc == MCIM_OK && answered > 0)
    rc = mcim_store_exec(st,
                         "SELECT COUNT(*) FROM outbox WHERE txn = ? AND step = 8 AND"
                         " path = '/v1/devices/ready' AND state IN ('pending', 'delivered')",
                         q, 1, count_one, &queued);
  if (rc == MCIM_OK && answered > 0 && queued == 0) {
    rc = queue_ready(r, st, o->sho, o->txn, o->device);
    if (rc == MCIM_OK)
      mcim_log_event(MCIM_LOG_NOTICE, o->txn, 8, MCIM_OK,
                     "DRF: %s ordered again by %s after %s discovered: announced again",
                     o->txn, o->sho, o->device);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_OK && queued == 0 && answered > 0)
    mcim_role_wake(r);
  return rc;
}

mcim_cause_t mcim_drf_order_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"order", MCIM_JV_STRING, true, 32768},
      {"endpoint", MCIM_JV_STRING, true, 255},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 3, err, err_len);
  if (rc == MCIM_OK &&
      strncmp(json_string_value(json_object_get(body, "endpoint")), "https://", 8) != 0) {
    rc = MCIM_INVALID_ARGUMENT;
    snprintf(err, err_len, "endpoint must be an https URL");
  }
  return rc;
}

/* At most drf_orders_open_max live orders of one device at the DRF, across all SHOs
 * (DESIGN.md section 10: nothing a party can flood is unbounded). An SHO bounds a device's
 * orders at itself (orders_open_max), but orders reach the DRF before or beside that check:
 * one the SHO cannot verify yet comes here to be checked against the owner record, a new
 * owner's after a handover, an owner's at several SHOs. Each is kept for order_lifetime.
 * Live: ordered or authorised (what mcim_drf_expire expires) and not yet expired; installed,
 * failed and expired orders are ended. Over the bound: MCIM_ORDERS_BUSY, *wait the seconds
 * until the oldest live one expires. Counted per owner key, as at the SHO (order.c): after a
 * handover the old owner's orders do not count against the new owner's nor show to it (a 429
 * told it they exist). An order recorded before the key was (RO migration 12) counts for
 * every owner. A handover ends every live order of the device (owners.c, lapse_orders), so an
 * owner handing the device to keys of its own gets no more live orders by it, and an old
 * owner's orders can neither block the new owner's (until 2026-12-08 all owners' together
 * were bounded at twice the bound, which an owner could fill before handing the device over,
 * holding the next owner's orders off for order_lifetime) nor go on under the new owner. The
 * search is drf_orders_device_live (device, state, expires; migration 11): that device's live
 * orders only. */
static mcim_cause_t drf_orders_below_max(struct mcim_role *r, mcim_store_t *st,
                                         const char *device, const char *owner_jwk, int64_t now,
                                         int64_t *wait)
{
  int64_t max = mcim_config_int(r->cfg, "drf_orders_open_max");
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_INT(now), MCIM_TEXT(owner_jwk)};
  mcim_cause_t rc = mcim_role_count_below(st,
                                          "SELECT COUNT(*), MIN(expires) FROM drf_orders WHERE"
                                          " device = ? AND state IN ('ordered', 'authorised')"
                                          " AND expires > ? AND (owner_jwk = ? OR owner_jwk IS"
                                          " NULL)",
                                          p, 3, max, 0, MCIM_ORDERS_BUSY, wait);
  return rc;
}

/* POST /v1/drf/orders (the new SHO, step 1): the subscriber's order as the owner signed it.
 * Only an order the recorded owner signed, addressed to the calling SHO, is recorded; the
 * answer is the RO-signed order record, which the SHO shows the PVA (step 9 / 3) as proof
 * that this (SHO, device, txn) is a real procedure. */
void mcim_drf_order(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  char *owner_jwk = NULL, *record = NULL;
  mcim_statement_t *stmt = NULL;
  struct mcim_drf_order o = {0};
  int64_t epoch = 0;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = mcim_drf_order_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK && !mcim_ro_is_sho_name(req->peer)) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "only an SHO forwards orders (caller \"%s\")",
             req->peer ? req->peer : "");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 1, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *order = json_string_value(json_object_get(req->json, "order"));
  const char *endpoint = json_string_value(json_object_get(req->json, "endpoint"));
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 1, "store unavailable");
    return;
  }
  /* The same order again (the SHO retrying): the same record, after the same checks. */
  rc = mcim_drf_order_load(st, txn, &o);
  if (rc == MCIM_OK) {
    rc = verify_order(r, st, order, req->peer, txn, &stmt, &owner_jwk);
    if (rc == MCIM_OK && (strcmp(o.sho, req->peer) != 0 || strcmp(o.device, stmt->claims.sub) != 0))
      rc = MCIM_CONFLICT;
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 1, "procedure %s is already ordered otherwise", txn);
      goto out;
    }
    /* Ended since (order_lifetime, or a handover: owners.c), as the DPF and discovery tell
     * it (order_party): the SHO must not keep it live */
    bool ended = order_party(MCIM_OK, &o, o.device, NULL) == MCIM_NOT_ORDERED;
    rc = ended ? MCIM_NOT_ORDERED : owner_epoch(st, o.device, owner_jwk, &epoch);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_NOTICE, txn, 1, rc, "DRF: order forwarded again by %s refused: %s",
                     req->peer, ended ? "it ended (expired, or the device was handed over)"
                                      : "the device was handed over since");
      mcim_http_reply_problem(resp, rc, 1, "procedure %s: %s", txn,
                              ended ? "the order ended (expired, or the device was handed over)"
                                    : "the device has another owner now");
      goto out;
    }
    /* The SHO asks again because it could not store the order we answered (a crash, its
     * store busy), and the device may have discovered meanwhile: that announcement went to
     * an SHO without the order and may have been given up. Again, so the procedure goes on. */
    rc = reannounce(r, st, &o);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 1, "procedure %s: announcement not queued", txn);
      goto out;
    }
    mcim_http_reply_json(resp, 200, order_answer(&o, owner_jwk, epoch));
    goto out;
  }
  /* The jti is spent below, with the order's row, in one transaction: spent alone, a crash
   * between the two would leave the SHO's retry of this very order refused as a replay
   * (seen: an RO instance killed mid-order). */
  rc = verify_order(r, st, order, req->peer, txn, &stmt, &owner_jwk);
  const char *procedure = stmt ? mcim_statement_string(stmt, "procedure") : NULL;
  const char *via = stmt ? mcim_statement_string(stmt, "via") : NULL;
  if (rc == MCIM_OK && !order_procedure_valid(procedure, via))
    rc = procedure ? MCIM_CLAIM_MISMATCH : MCIM_CLAIM_MISSING;
  if (rc != MCIM_OK) {
    /* Not traced: a stranger's orders must leave nothing behind in any store. */
    mcim_log_event(MCIM_LOG_WARN, NULL, 1, rc, "DRF: order forwarded by %s refused",
                   req->peer);
    mcim_http_reply_problem(resp, rc, 1, "the order is not the device owner's order for %s",
                            req->peer);
    goto out;
  }
  const char *device = stmt->claims.sub;
  int64_t now = mcim_now();
  int64_t expires = now + mcim_config_duration(r->cfg, "order_lifetime");
  /* The record is the SHO's proof of this procedure for as long as the order lives (the PVA
   * may see it only when the device turns up), not for a statement's few minutes. */
  json_t *extra = json_pack("{s:s,s:s,s:s?}", "sho", req->peer, "procedure", procedure, "via", via);
  mcim_claims_t c = {.iss = r->name, .sub = device, .aud = req->peer,
                     .typ = "mcim-order-record+jwt", .txn = txn, .iat = now, .exp = expires,
                     .extra = extra};
  rc = extra ? mcim_jws_sign(r->sign_key, &c, &record) : MCIM_NO_MEMORY;
  json_decref(extra);
  bool raced = false, in_tx = false;
  if (rc == MCIM_OK)
    in_tx = (rc = mcim_store_begin(st)) == MCIM_OK;
  /* A copy of this order stored meanwhile (the SHO retrying, another RO instance): its
   * record, as for a retry above. */
  if (rc == MCIM_OK && mcim_drf_order_load(st, txn, &o) == MCIM_OK) {
    raced = true;
    if (strcmp(o.sho, req->peer) != 0 || strcmp(o.device, device) != 0)
      rc = MCIM_CONFLICT;
  }
  /* The bound, counted in the transaction that inserts the order, after a copy's record
   * (raced) is answered: two orders at once cannot both pass it. A begun transaction holds
   * the writers' lock (SQLite BEGIN IMMEDIATE; on PostgreSQL the advisory lock taken at
   * begin, READ COMMITTED: this count sees every order committed before, by any RO
   * instance), so count and insert are one step. Refused before the jti is spent: the SHO
   * may forward the same order again after Retry-After. */
  int64_t wait = 0;
  /* The owner as it is now, under the same lock: a handover committed since verify_order()
   * read the key ended the device's live orders (owners.c), and an order of the key it
   * replaced must not be recorded after it, live under the new owner. */
  if (rc == MCIM_OK)
    rc = owner_epoch(st, device, owner_jwk, &epoch);
  if (rc == MCIM_OK && !raced)
    rc = drf_orders_below_max(r, st, device, owner_jwk, now, &wait);
  if (rc == MCIM_OK && !raced) {
    const mcim_replay_cache_t *replay = mcim_role_replay(r);
    /* kept as long as verify_order() would accept it: exp plus clock_skew */
    int64_t jti_until =
        mcim_replay_expires(stmt->claims.exp, mcim_config_duration(r->cfg, "clock_skew"));
    rc = replay->check_and_insert(replay->ctx, "subscriber", stmt->claims.jti, jti_until, now);
  }
  if (rc == MCIM_OK && !raced) {
    mcim_val_t p[] = {MCIM_TEXT(txn),       MCIM_TEXT(device), MCIM_TEXT(req->peer),
                      MCIM_TEXT(endpoint),  MCIM_TEXT(procedure), MCIM_TEXT(via ? via : ""),
                      MCIM_TEXT(record),    MCIM_INT(now),     MCIM_INT(now),
                      MCIM_INT(expires),    MCIM_TEXT(owner_jwk)};
    rc = mcim_store_exec(st,
                         "INSERT INTO drf_orders (txn, device, sho, endpoint, procedure, via, state,"
                         " record, created, updated, expires, owner_jwk)"
                         " VALUES (?, ?, ?, ?, ?, ?, 'ordered', ?, ?, ?, ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  if (in_tx)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_ORDERS_BUSY) {
    /* Logged, not traced: nothing of a refused order is stored. */
    mcim_log_event(MCIM_LOG_WARN, txn, 1, rc,
                   "DRF: order forwarded by %s refused: %s has drf_orders_open_max live orders",
                   req->peer, device);
    resp->retry_after = (int)wait;
    mcim_http_reply_problem(resp, rc, 1,
                            "too many live orders of this device at the DRF: order again in"
                            " %lld s",
                            (long long)wait);
    goto out;
  }
  if (rc == MCIM_NOT_OWNER) { /* owner_epoch(): a handover committed meanwhile */
    mcim_log_event(MCIM_LOG_NOTICE, txn, 1, rc,
                   "DRF: order forwarded by %s refused: %s was handed over while it was checked",
                   req->peer, device);
    mcim_http_reply_problem(resp, rc, 1, "order %s not recorded: the device has another owner now",
                            txn);
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 1, "order %s not recorded", txn);
    goto out;
  }
  if (raced) {
    mcim_http_reply_json(resp, 200, order_answer(&o, owner_jwk, epoch));
    goto out;
  }
  snprintf(o.txn, sizeof(o.txn), "%s", txn);
  snprintf(o.device, sizeof(o.device), "%s", device);
  snprintf(o.sho, sizeof(o.sho), "%s", req->peer);
  free(o.record);
  o.record = record;
  record = NULL;
  mcim_log_event(MCIM_LOG_INFO, txn, 1, MCIM_OK, "DRF: %s ordered at %s by its owner (%s)",
                 device, req->peer, procedure);
  mcim_http_reply_json(resp, 201, order_answer(&o, owner_jwk, epoch));
out:
  mcim_drf_order_clear(&o);
  mcim_statement_free(stmt);
  free(owner_jwk);
  free(record);
}

/* ---- discovery (steps 7-8) ---- */

mcim_cause_t mcim_drf_discover_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"proof", MCIM_JV_STRING, true, 16384},
      {"tre_cert", MCIM_JV_STRING, true, 8192},
  };
  return mcim_jsonv_check(body, fields, 4, err, err_len);
}

/* What a discovery reads, in one statement (one round trip on PostgreSQL, where the two
 * look-ups were two): the stored step-8 answer for this txn and device, and the order by txn;
 * always one row, each half NULL when there is none. Both are primary-key look-ups. */
struct discover_read {
  int status;
  json_t *answer; /* the stored answer, if any */
  mcim_cause_t order; /* MCIM_OK: `o` loaded; MCIM_NOT_FOUND: no order */
  struct mcim_drf_order *o;
};

static mcim_cause_t discover_row(const mcim_row_t *row, void *arg)
{
  struct discover_read *d = arg;
  if (!mcim_row_is_null(row, 0)) {
    d->status = (int)mcim_row_int(row, 0);
    d->answer = json_loads(mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "null",
                           JSON_DECODE_ANY, NULL);
    if (!d->answer)
      return MCIM_STORE_ERROR;
  }
  d->order = mcim_row_is_null(row, 2) ? MCIM_NOT_FOUND : order_from_row(row, 2, d->o);
  return d->order == MCIM_NOT_FOUND ? MCIM_OK : d->order;
}

static mcim_cause_t discover_load(mcim_store_t *st, const char *txn, const char *device,
                                  struct discover_read *d)
{
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device), MCIM_TEXT(txn)};
  return mcim_store_query_one(
      st,
      "SELECT a.status, a.answer, o.txn, o.device, o.sho, o.endpoint, o.procedure, o.via,"
      " o.state, o.record, o.expires FROM (SELECT 1 AS one) k"
      " LEFT JOIN answers a ON a.txn = ? AND a.step = 8 AND a.what = ?"
      " LEFT JOIN drf_orders o ON o.txn = ?",
      p, MCIM_NPARAMS(p), discover_row, d);
}

/* POST /v1/drf/discover (the device, pristine steps 7-8): the SHO of this procedure. */
void mcim_drf_discover(void *ctx, const struct mcim_http_request *req,
                       struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct mcim_access acc;
  struct mcim_drf_order o = {0};
  char *jws = NULL, *cert = NULL;
  json_t *answer = NULL;
  int status = 0;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, 7, "discovery");
    return;
  }
  rc = mcim_drf_discover_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 7, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  if (strcmp(device, acc.device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 7, "a device discovers only for itself");
    return;
  }
  /* The answer names the new SHO: to the device itself only, never to the network it is on
   * (in a change via the old SHO, the old SHO could mint a token for it). */
  if (mcim_role_require_device_request(r, req->json, device, txn, "discovery", 7, "discovery",
                                       resp) != MCIM_OK)
    return;
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 8, "store unavailable");
    return;
  }
  /* A retry of this discovery gets the same answer and queues nothing twice; the key holds
   * the device, so only the device that asked (its access token checked above) gets it. */
  struct discover_read dr = {.order = MCIM_NOT_FOUND, .o = &o};
  rc = discover_load(st, txn, device, &dr);
  if (rc != MCIM_OK) {
    json_decref(dr.answer);
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 8, "store unavailable (retry)");
    goto out;
  }
  if (dr.answer) {
    mcim_http_reply_json(resp, dr.status, dr.answer);
    goto out;
  }
  rc = order_party(dr.order, &o, device, NULL);
  if (rc == MCIM_NOT_PARTY) {
    /* The owner's order travels through the SHO (step 1) while the owner instructs the
     * device (step 2): "not yet", the device asks again until its own deadline. */
    resp->retry_after = 1;
    mcim_http_reply_problem(resp, MCIM_ORDER_PENDING, 8,
                            "no order for procedure %s of %s at the DRF (yet)", txn, device);
    goto out;
  }
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, 8, r->name, device, "DRF: no SHO for this M2ME", NULL, rc);
    mcim_http_reply_problem(resp, rc, 8, "procedure %s of %s has no live order", txn, device);
    goto out;
  }
  rc = mcim_role_peer_cert_pem(r, o.sho, &cert);
  if (rc == MCIM_OK) {
    json_t *extra = json_pack("{s:s,s:s,s:s,s:s}", "sho", o.sho, "endpoint", o.endpoint,
                              "sho_cert", cert, "state", "ordered");
    rc = mcim_role_sign(r, "mcim-discovery+jwt", device, device, txn, extra, &jws);
    json_decref(extra);
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 8, "cannot vouch for SHO %s", o.sho);
    goto out;
  }
  answer = json_pack("{s:s,s:s,s:s}", "sho", o.sho, "endpoint", o.endpoint, "discovery", jws);
  /* A relaxed commit: answered as soon as the database has it, without waiting for its WAL
   * (or SQLite WAL frames) to reach the disk. On PostgreSQL at operator scale that flush, under
   * the writers' lock, was most of a first discovery's time (bench/drf_scale.sh: p99 6.96 ms
   * durable; docs/performance.md, "The DRF at operator scale").
   *
   * Why losing it is safe. An mcimd crash loses nothing (the database has the commit); a crash
   * of the database server or of its OS within a moment after it (PostgreSQL: at most three
   * times wal_writer_delay) may lose it whole: the stored answer, the step-8 announcement in
   * the outbox and the trace row, never one without the others, and never a durable commit
   * that came after it (the WAL is flushed in order). Nothing else the procedure needs is in
   * it: the order (drf_orders) was committed durably at step 1 and does not change here. What
   * is lost is the announcement, which nobody at the RO would queue again, so the SHO would
   * never ask the PVA (step 9) and the device would wait for its nonce until its deadline.
   * The device repairs it: while it waits for the nonce after discovering, it asks the DRF
   * again for the same txn every DEV_REDISCOVER_S seconds (src/device/initial.c,
   * rediscover). Had this commit survived, the stored answer is returned (the
   * mcim_role_answer_get above: nothing queued twice); had it been lost, this is a first
   * discovery again and queues the announcement again, from the same durable order, so to the
   * same SHO (the device checks that). An announcement delivered before the loss and again
   * after it is one more repeat for the SHO, which answers a repeated announcement without
   * change (mcim_sho_device_ready). */
  /* One batch: on PostgreSQL the transaction (BEGIN, the writers' lock, the three inserts,
   * COMMIT) is one round trip instead of six, each waited for under the writers' lock
   * (bench/drf_scale.sh). The trace row rides on it: written after it, it was a second
   * commit per discovery. A batch has no statement-level atomicity, so a trace insert that
   * fails fails the discovery, which the device asks again (as for any store error). */
  rc = mcim_store_begin_batch(st, true);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 8, device, 200, answer);
  if (rc == MCIM_OK && strcmp(mcim_config_str(r->cfg, "drf_notify"), "yes") == 0)
    rc = queue_ready(r, st, o.sho, txn, device);
  if (rc == MCIM_OK &&
      mcim_trace_store_put(st, mcim_now_us(), txn, 8, r->name, device,
                           "DRF: new SHO (name, endpoint, certificate)", answer,
                           MCIM_OK) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, txn, 8, MCIM_STORE_ERROR, "trace event not recorded: %s",
                   mcim_store_errmsg(st));
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    json_t *stored = NULL; /* a racing copy of this request may have stored it first */
    if (rc == MCIM_CONFLICT &&
        mcim_role_answer_get(st, txn, 8, device, &status, &stored) == MCIM_OK) {
      mcim_http_reply_json(resp, status, stored);
      goto out;
    }
    mcim_http_reply_problem(resp, rc, 8, "discovery not recorded");
    goto out;
  }
  mcim_role_wake(r);
  mcim_log_event(MCIM_LOG_INFO, txn, 8, MCIM_OK, "%s -> %s: %s", r->name, device,
                 "DRF: new SHO (name, endpoint, certificate)");
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_drf_order_clear(&o);
  free(jws);
  free(cert);
}

/* POST /v1/drf/authorisations (the new SHO, pristine step 12): "upon receiving a positive
 * validation, authorises RO (DRF function) to authorize its DPF to provision the MCIM". */
void mcim_drf_authorise(void *ctx, const struct mcim_http_request *req,
                        struct mcim_http_response *resp)
{
  mcim_dpf_accept_package(ctx, req, resp, true);
}

/* ---- expiry (issue 8, point 8) ---- */

/* In the caller's transaction: the live orders past their expiry (of `device`; of every
 * device when NULL) expired, and the packages the DPF holds for them dropped. The SQL names
 * the device or not, rather than `? IS NULL`, which PostgreSQL cannot type. */
mcim_cause_t mcim_drf_expire_due(mcim_store_t *st, const char *device, int64_t now,
                                 int64_t *orders, int64_t *packages)
{
  mcim_val_t p[] = {MCIM_INT(now), MCIM_INT(now), MCIM_TEXT(device ? device : "")};
  size_t np = device ? 3 : 2;
  *orders = *packages = 0;
  mcim_cause_t rc = mcim_store_exec(
      st,
      device ? "UPDATE dpf_packages SET state = 'abandoned', package = '', updated = ? WHERE"
               " state IN ('ready', 'delivered') AND txn IN (SELECT txn FROM drf_orders WHERE"
               " state IN ('ordered', 'authorised') AND expires <= ? AND device = ?)"
             : "UPDATE dpf_packages SET state = 'abandoned', package = '', updated = ? WHERE"
               " state IN ('ready', 'delivered') AND txn IN (SELECT txn FROM drf_orders WHERE"
               " state IN ('ordered', 'authorised') AND expires <= ?)",
      p, np, NULL, NULL);
  if (rc == MCIM_OK) {
    *packages = (int64_t)mcim_store_changes(st);
    rc = mcim_store_exec(st,
                         device ? "UPDATE drf_orders SET state = 'expired', updated = ? WHERE"
                                  " state IN ('ordered', 'authorised') AND expires <= ? AND"
                                  " device = ?"
                                : "UPDATE drf_orders SET state = 'expired', updated = ? WHERE"
                                  " state IN ('ordered', 'authorised') AND expires <= ?",
                         p, np, NULL, NULL);
  }
  if (rc == MCIM_OK)
    *orders = (int64_t)mcim_store_changes(st);
  return rc;
}

/* Orders not provisioned within order_lifetime expire, and the DPF drops what it holds for
 * them: a package never fetched (or fetched and never reported) is not kept for ever. One
 * transaction, so a package never outlives its order's expiry. */
void mcim_drf_expire(struct mcim_role *r)
{
  mcim_store_t *st = mcim_role_store(r);
  int64_t now = mcim_now(), orders = 0, packages = 0;
  if (!st)
    return;
  mcim_val_t due[] = {MCIM_INT(now)};
  int64_t n = 0;
  if (mcim_store_query_int(st,
                           "SELECT COUNT(*) FROM drf_orders WHERE state IN ('ordered',"
                           " 'authorised') AND expires <= ?",
                           due, 1, &n) != MCIM_OK ||
      n <= 0)
    return;
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc == MCIM_OK)
    rc = mcim_drf_expire_due(st, NULL, now, &orders, &packages);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "DRF: expired orders not swept yet");
  else
    mcim_log_event(MCIM_LOG_NOTICE, NULL, 0, MCIM_OK,
                   "DRF: %lld abandoned order(s) expired, %lld package(s) dropped by the DPF",
                   (long long)orders, (long long)packages);
}
