/* SHO: a selected home operator. Takes subscribers' orders (step 1), asks the PVA to
 * validate the device (pristine step 9 / change step 3), on a positive verdict makes the
 * MCIM, seals it to the device's TRE and hands it to the RO's DPF (step 12 / 6), activates
 * the subscription when the DPF reports success (step 15 / 13) and registers the device at
 * the DRF (change step 14). Its own AuC serves the devices that attach with its MCIMs
 * (`full` access).
 *
 * Here: the role's set-up (configuration, schema, routes, purge), the order's record, the
 * device's question about its subscription and the attach. The peers' messages about an
 * order (steps 8-15 / 3-14) and the table of their step numbers are in provision.c, the order
 * (step 1) in order.c, the old SHO's side of a change in change.c, expiry in expiry.c. */
#include <stdio.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/access.h"
#include "roles/auc.h"
#include "roles/auc_backend.h"
#include "roles/auc_sync.h"
#include "roles/kinds.h"
#include "roles/sho/sho.h"

/* The first column as text, into a buffer of TEXT0_CAP bytes. */
#define TEXT0_CAP 64
static mcim_cause_t text0(const mcim_row_t *row, void *arg);

/* ---- orders ---- */

static mcim_cause_t order_row(const mcim_row_t *row, void *arg)
{
  struct mcim_sho_order *o = arg;
  char *cols[] = {o->txn, o->device, o->imsi, o->state, o->cause, o->procedure, o->via};
  size_t lens[] = {sizeof(o->txn),   sizeof(o->device),    sizeof(o->imsi), sizeof(o->state),
                   sizeof(o->cause), sizeof(o->procedure), sizeof(o->via)};
  o->released = mcim_row_int(row, 8) != 0;
  for (size_t i = 0; i < 7; i++)
    snprintf(cols[i], lens[i], "%s", mcim_row_text(row, i) ? mcim_row_text(row, i) : "");
  free(o->ka_cert);
  free(o->owner_jwk);
  free(o->record);
  o->ka_cert = strdup(mcim_row_text(row, 7) ? mcim_row_text(row, 7) : "");
  o->owner_jwk = mcim_row_text(row, 9) ? strdup(mcim_row_text(row, 9)) : NULL;
  o->record = mcim_row_text(row, 10) ? strdup(mcim_row_text(row, 10)) : NULL;
  return o->ka_cert ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_sho_order_load(mcim_store_t *st, const char *txn, struct mcim_sho_order *o)
{
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  return mcim_store_query_one(st,
                              "SELECT txn, device, imsi, state, cause, procedure, via, ka_cert,"
                              " released, owner_jwk, record FROM orders WHERE txn = ?",
                              p, 1, order_row, o);
}

void mcim_sho_order_clear(struct mcim_sho_order *o)
{
  free(o->ka_cert);
  free(o->owner_jwk);
  free(o->record);
  o->ka_cert = o->owner_jwk = o->record = NULL;
}

mcim_cause_t mcim_sho_order_set_state(mcim_store_t *st, const char *txn, const char *from,
                                      const char *to, mcim_cause_t cause)
{
  mcim_val_t p[] = {MCIM_TEXT(to), MCIM_TEXT(cause == MCIM_OK ? NULL : mcim_cause_name(cause)),
                    MCIM_INT(mcim_now()), MCIM_TEXT(txn), MCIM_TEXT(from)};
  mcim_cause_t rc = mcim_store_exec(st,
                                    "UPDATE orders SET state = ?, cause = ?, updated = ?"
                                    " WHERE txn = ? AND state = ?",
                                    p, 5, NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_WRONG_STATE;
  return rc;
}

/* GET /v1/devices/{device}/subscription: the device asks its SHO about its subscription.
 * Device-facing and not part of attach, so it needs `full` access (a PCID's restricted
 * access reaches only the RO and the PVA). */
static void h_subscription(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_access acc;
  struct mcim_sho_order o = {0};
  mcim_cause_t rc = mcim_role_check_access(r, req, true, &acc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "this needs full network access");
    mcim_role_access_challenge(resp, rc);
    return;
  }
  if (strcmp(acc.device, req->params[0]) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "a device asks only about itself");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  char txn[TEXT0_CAP] = ""; /* text0 writes up to TEXT0_CAP bytes */
  mcim_val_t p[] = {MCIM_TEXT(req->params[0])};
  rc = st ? mcim_store_query_one(st,
                                 "SELECT txn FROM orders WHERE device = ? ORDER BY updated DESC"
                                 " LIMIT 1",
                                 p, 1, text0, txn)
          : MCIM_STORE_ERROR;
  if (rc == MCIM_OK)
    rc = mcim_sho_order_load(st, txn, &o);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc == MCIM_NOT_FOUND ? MCIM_UNKNOWN_IDENTITY : rc, 0,
                            "no subscription of %s here", req->params[0]);
    goto out;
  }
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:s,s:s}", "device", o.device, "sho", r->name, "imsi",
                                 o.imsi, "state", o.state));
out:
  mcim_sho_order_clear(&o);
}

/* ---- attach with an MCIM of ours (full access) ---- */

static mcim_cause_t text0(const mcim_row_t *row, void *arg)
{
  snprintf(arg, TEXT0_CAP, "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  return MCIM_OK;
}

static mcim_cause_t sho_get_av(struct mcim_role *r, const char *txn, const char *imsi,
                               struct mcim_aka_av *av, char *device)
{
  char detail[MCIM_AUC_DETAIL_LEN];
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_cause_t rc =
      mcim_auc_sync_gen_avs(r, st, imsi, 1, mcim_now(), av, detail, sizeof(detail));
  if (mcim_auc_cause_is_remote(rc))
    mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "%s", detail);
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(imsi)};
    rc = mcim_store_query_one(st, "SELECT device FROM auc WHERE imsi = ?", p, 1, text0, device);
  }
  return rc;
}

static mcim_cause_t sho_resync(struct mcim_role *r, const char *txn, const char *imsi,
                               const uint8_t rand[16], const uint8_t auts[14])
{
  char detail[MCIM_AUC_DETAIL_LEN];
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_cause_t rc = mcim_auc_sync_resync(r, st, imsi, rand, auts, 0, mcim_now(), NULL, detail,
                                         sizeof(detail));
  if (mcim_auc_cause_is_remote(rc))
    mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "%s", detail);
  return rc;
}

/* Why a clock in the database: the RO orders an SHO's registrations of a device by their seq
 * and revokes the SHO's tokens issued before a release by comparing the token's iat_us with
 * the release's seq. Each instance's own microsecond clock made the instances' clocks part
 * of that order: one a millisecond ahead could have its registration taken as newer than a
 * later one of another instance, or its token of an ended subscription as issued after the
 * release. The writers' lock orders the decisions; the clock follows that order. */
mcim_cause_t mcim_sho_decision_us(mcim_store_t *st, int64_t *us)
{
  int64_t last = 0;
  bool own = !mcim_store_in_txn(st);
  mcim_cause_t rc = own ? mcim_store_begin(st) : MCIM_OK;
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_store_query_int(st, "SELECT value FROM counters WHERE name = 'decision_us'", NULL,
                            0, &last);
  int64_t now = mcim_now_us();
  *us = now > last ? now : last + 1;
  mcim_val_t p[] = {MCIM_INT(*us)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st, "UPDATE counters SET value = ? WHERE name = 'decision_us'", p, 1,
                         NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_STORE_ERROR;
  if (own)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  return rc;
}

/* A token only for a live subscription of the device (mcim_auc_live, what every use of the
 * token is checked against too): its AV was made while it was, but a release (step 10, a
 * deferred notice) may have ended it before the device answered, and the RO would take a
 * token issued after the release for the next subscription's. */
static mcim_cause_t sho_token_issue(struct mcim_role *r, const char *imsi, const char *device,
                                    int64_t *iat_us)
{
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_cause_t rc = mcim_auc_live(st, imsi, device);
  return rc == MCIM_OK ? mcim_sho_decision_us(st, iat_us) : rc;
}

static const struct mcim_access_net sho_net = {
    .scope = "full",
    .id_field = "imsi",
    .get_av = sho_get_av,
    .resync = sho_resync,
    .token_issue = sho_token_issue,
};

static void h_attach(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  mcim_access_attach(ctx, &sho_net, req, resp);
}

static void h_attach_answer(void *ctx, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  mcim_access_answer(ctx, &sho_net, req, resp);
}

/* ---- the kind ---- */

static const mcim_migration_t sho_migrations[] = {
    {1, "AuC of the MCIMs this SHO issues", mcim_auc_schema_sql},
    {2, "attach sessions", mcim_access_schema_sql},
    {3, "orders and the IMSI counter",
     "CREATE TABLE orders (txn TEXT PRIMARY KEY, device TEXT NOT NULL, imsi TEXT NOT NULL,"
     " state TEXT NOT NULL, cause TEXT, procedure TEXT NOT NULL, via TEXT,"
     " attestation_cert TEXT NOT NULL, ka_cert TEXT NOT NULL, created BIGINT NOT NULL,"
     " updated BIGINT NOT NULL);"
     "CREATE INDEX orders_device ON orders (device, state);"
     "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);"
     "INSERT INTO counters (name, value) VALUES ('msin', 0)"},
    {4, "change via the old SHO: the release of the old subscription (step 11)",
     "ALTER TABLE orders ADD COLUMN released BIGINT NOT NULL DEFAULT 0"},
    {5, "orders anchored at the RO: the owner key it vouched for, its order record",
     "ALTER TABLE orders ADD COLUMN owner_jwk TEXT;"
     "ALTER TABLE orders ADD COLUMN record TEXT"},
    {6, "the sweeps find what they expire by index, not by scanning (expiry.c, access.c)",
     "CREATE INDEX orders_state_created ON orders (state, created);"
     "CREATE INDEX attach_created ON attach (created)"},
    {7, "the AuC by device: a discard asks for the device's other subscriptions (change.c)",
     "CREATE INDEX auc_device ON auc (device)"},
    {8, "the subscribers this SHO wants in its HLR, or out of it (auc_sync.c, issue 13)",
     mcim_auc_hlr_schema_sql},
    /* Two instances applied one intent at once (auc_sync.c, claim) */
    {9, "an HLR intent applied by one instance at a time", mcim_auc_hlr_lease_sql},
    {10, "open challenges counted by identity (access.c, attach_open_max)",
     "CREATE INDEX attach_identity ON attach (identity, state)"},
    {11, "an attach's trace rows kept until the device answers (access.c)",
     mcim_access_rows_sql},
    {12, "a subscription's newest suspend or resume notice applied (change.c, notice_in_order)",
     "ALTER TABLE auc ADD COLUMN notice_seq BIGINT NOT NULL DEFAULT 0"},
    /* IMSIs drawn at random, no longer from the counter of migration 3 (order.c, next_imsi) */
    {13, "orders by IMSI: a drawn IMSI is checked free, and never given twice",
     "CREATE UNIQUE INDEX orders_imsi ON orders (imsi)"},
    {14, "the decision clock: registrations' seq and tokens' iat_us (mcim_sho_decision_us)",
     "INSERT INTO counters (name, value) VALUES ('decision_us', 0)"},
    /* The RO's count of the device's handovers when the order was taken: a newer owner's
     * order ends an older one's (order.c, owner_epoch_turn) */
    {15, "orders: the owner epoch the DRF vouched for",
     "ALTER TABLE orders ADD COLUMN owner_epoch BIGINT"},
};

static const mcim_config_spec_t sho_spec[] = {
    {.name = "plmn", .type = MCIM_CFG_STRING, .required = true, .min = 5, .max = 6,
     .help = "MCC and MNC of this SHO (5 or 6 digits): its IMSIs start with it"},
    {.name = "msin_prefix", .type = MCIM_CFG_STRING, .min = 1, .max = 4,
     .help = "leading digits of every MSIN this SHO issues, e.g. its range in a shared HLR;"
             " the rest of the MSIN (at least 6 digits) is drawn at random"},
    {.name = "amf", .type = MCIM_CFG_STRING, .def = "8000", .min = 4, .max = 4,
     .help = "AMF of the MCIMs it issues (hex; separation bit set for E-UTRAN)"},
    {.name = "ro", .type = MCIM_CFG_STRING, .def = "ro", .min = 1, .max = 63,
     .help = "name of the RO instance (peers file)"},
    {.name = "pva", .type = MCIM_CFG_STRING, .def = "pva", .min = 1, .max = 63,
     .help = "name of the PVA instance (peers file)"},
    {.name = "order_lifetime", .type = MCIM_CFG_DURATION, .def = "1h", .min = 1,
     .max = 30LL * 86400,
     .help = "an order not provisioned within this time fails (TIMEOUT) and the MCIM made for it"
             " is terminated"},
    {.name = "orders_open_max", .type = MCIM_CFG_INT, .def = "4", .min = 1, .max = 1000,
     .help = "orders of one device and owner key that may be live here at once (ordered,"
             " validating, provisioning, within order_lifetime; a new owner's first order ends"
             " the old owner's); one more is answered 429 ORDERS_BUSY with Retry-After, nothing"
             " stored"},
};

static mcim_cause_t sho_start(struct mcim_role *r)
{
  const char *plmn = mcim_config_str(r->cfg, "plmn");
  const char *prefix = mcim_config_str(r->cfg, "msin_prefix");
  uint8_t amf[2];
  char imsi[24];
  if (!mcim_digits(plmn, 5, 6)) {
    mcim_log_error("%s: \"plmn\": expected 5 or 6 digits, got \"%s\"",
                   mcim_config_file(r->cfg), plmn);
    return MCIM_CONFIG_INVALID;
  }
  /* the draw itself says whether the prefix leaves enough random digits */
  if (prefix && (!mcim_digits(prefix, 1, 4) ||
                 mcim_sho_imsi_draw(plmn, prefix, imsi) == MCIM_INVALID_ARGUMENT)) {
    mcim_log_error("%s: \"msin_prefix\": expected digits that leave at least %d random digits"
                   " in the MSIN after the %zu-digit plmn, got \"%s\"",
                   mcim_config_file(r->cfg), MCIM_SHO_MSIN_RANDOM_MIN, strlen(plmn), prefix);
    return MCIM_CONFIG_INVALID;
  }
  if (mcim_hex_decode_str(mcim_config_str(r->cfg, "amf"), amf, 2) != MCIM_OK) {
    mcim_log_error("%s: \"amf\": expected 4 hex digits", mcim_config_file(r->cfg));
    return MCIM_CONFIG_INVALID;
  }
  return MCIM_OK;
}

static const struct mcim_http_route sho_routes[] = {
    {"POST", "/v1/orders", mcim_sho_order_post, 0},
    {"GET", "/v1/orders/{txn}", mcim_sho_order_get, 0},
    {"POST", "/v1/devices/ready", mcim_sho_device_ready, MCIM_ROUTE_PEER_CERT},
    {"GET", "/v1/devices/{device}/subscription", h_subscription, 0},
    {"POST", "/v1/discards", mcim_sho_discard, 0},
    {"POST", "/v1/releases", mcim_sho_release, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/notifications", mcim_sho_notification, 0},
    {"POST", "/v1/verdicts", mcim_sho_verdict, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/reports", mcim_sho_report, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/attach", h_attach, 0},
    {"POST", "/v1/attach/{id}", h_attach_answer, 0},
};

/* Orders that ended (failed: refused, timed out, never installed; released: the subscription
 * was terminated, its tokens revoked) and their terminated AuC entries, K and OPc with them,
 * record_retention after they ended (common.c). A live order stays: it is the device's
 * subscription here. */
static const char *const sho_purge[] = {
    "DELETE FROM auc WHERE state = 'terminated' AND imsi IN"
    " (SELECT imsi FROM orders WHERE state IN ('failed', 'released') AND updated < ?)",
    "DELETE FROM orders WHERE state IN ('failed', 'released') AND updated < ?",
    "DELETE FROM auc_hlr WHERE want = 'absent' AND done = 1 AND imsi NOT IN (SELECT imsi FROM"
    " auc) AND updated < ?",
    NULL,
};

const struct mcim_role_kind mcim_role_sho = {
    .kind = "sho",
    .summary = "selected home operator: orders, MCIM issue, AuC, full access",
    .spec = sho_spec,
    .nspec = sizeof(sho_spec) / sizeof(sho_spec[0]),
    .migrations = sho_migrations,
    .nmigrations = sizeof(sho_migrations) / sizeof(sho_migrations[0]),
    .routes = sho_routes,
    .nroutes = sizeof(sho_routes) / sizeof(sho_routes[0]),
    .start = sho_start,
    .tick = mcim_sho_expire,
    .purge = sho_purge,
    .auc = true,
};
