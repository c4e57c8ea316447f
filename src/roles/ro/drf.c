/* RO, DRF function: the registry of which SHO a device subscribes to (or was ordered at),
 * and discovery for devices (pristine steps 7-8; registration: change step 14). The seed
 * leaves discovery FFS; we answer with the SHO's name, endpoint and certificate, signed
 * by the RO, so the device can check the SHO's packages later. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

/* POST /v1/drf/registrations (an SHO). */
void mcim_drf_register(void *ctx, const struct mcim_http_request *req,
                       struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},         {"device", MCIM_JV_STRING, true, 63},
      {"sho", MCIM_JV_STRING, true, 63},      {"state", MCIM_JV_STRING, true, 16},
      {"endpoint", MCIM_JV_STRING, true, 255}, {"step", MCIM_JV_INTEGER, false, 0},
  };
  char err[200];
  mcim_cause_t rc = mcim_jsonv_check(req->json, fields, 6, err, sizeof(err));
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
  if (strcmp(state, "ordered") != 0 && strcmp(state, "subscribed") != 0 &&
      strcmp(state, "released") != 0 && strcmp(state, "preloaded") != 0) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 14,
                            "state must be ordered, subscribed, preloaded or released");
    return;
  }
  if (strncmp(endpoint, "https://", 8) != 0) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 14, "endpoint must be an https URL");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st || mcim_store_begin(st) != MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 14, "store unavailable");
    return;
  }
  int64_t now = mcim_now();
  /* One subscription per device on the network side (invariant 1): a new `subscribed`
   * entry releases any other. */
  if (strcmp(state, "subscribed") == 0) {
    mcim_val_t p[] = {MCIM_INT(now), MCIM_TEXT(device), MCIM_TEXT(sho)};
    rc = mcim_store_exec(st,
                         "UPDATE drf SET state = 'released', updated = ? WHERE device = ?"
                         " AND sho <> ? AND state = 'subscribed'",
                         p, 3, NULL, NULL);
  }
  if (rc == MCIM_OK) {
    mcim_val_t d[] = {MCIM_TEXT(device), MCIM_TEXT(sho)};
    rc = mcim_store_exec(st, "DELETE FROM drf WHERE device = ? AND sho = ?", d, 2, NULL, NULL);
  }
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(sho),  MCIM_TEXT(state),
                      MCIM_TEXT(endpoint), MCIM_TEXT(txn), MCIM_INT(now)};
    rc = mcim_store_exec(st,
                         "INSERT INTO drf (device, sho, state, endpoint, txn, updated)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         p, 6, NULL, NULL);
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

struct drf_hit {
  char sho[64];
  char state[16];
  char endpoint[256];
  char txn[40];
  bool found;
};

static mcim_cause_t drf_row(const mcim_row_t *row, void *arg)
{
  struct drf_hit *h = arg;
  snprintf(h->sho, sizeof(h->sho), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(h->state, sizeof(h->state), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  snprintf(h->endpoint, sizeof(h->endpoint), "%s", mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  snprintf(h->txn, sizeof(h->txn), "%s", mcim_row_text(row, 3) ? mcim_row_text(row, 3) : "");
  h->found = true;
  return MCIM_OK;
}

/* POST /v1/drf/discover (the device, pristine steps 7-8). */
void mcim_drf_discover(void *ctx, const struct mcim_http_request *req,
                       struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
  };
  char err[200];
  struct mcim_access acc;
  struct drf_hit hit = {0};
  char *jws = NULL, *cert = NULL;
  json_t *answer = NULL;
  int status = 0;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 7, "discovery needs network access");
    return;
  }
  rc = mcim_jsonv_check(req->json, fields, 2, err, sizeof(err));
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
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 8, "store unavailable");
    return;
  }
  /* A retry of this discovery gets the same answer and queues nothing twice. */
  if (mcim_role_answer_get(st, txn, 8, device, &status, &answer) == MCIM_OK) {
    mcim_http_reply_json(resp, status, answer);
    return;
  }
  /* A pending order wins over the current subscription: that is why the device asks. */
  mcim_val_t p[] = {MCIM_TEXT(device)};
  rc = mcim_store_exec(st,
                       "SELECT sho, state, endpoint, txn FROM drf WHERE device = ? AND state IN"
                       " ('ordered', 'subscribed') ORDER BY CASE state WHEN 'ordered' THEN 0"
                       " ELSE 1 END, updated DESC LIMIT 1",
                       p, 1, drf_row, &hit);
  if (rc == MCIM_OK && !hit.found)
    rc = MCIM_NOT_ORDERED;
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, 8, r->name, device, "DRF: no SHO for this M2ME", NULL, rc);
    mcim_http_reply_problem(resp, rc, 8, "no SHO known for device %s", device);
    return;
  }
  rc = mcim_role_peer_cert_pem(r, hit.sho, &cert);
  if (rc == MCIM_OK) {
    json_t *extra = json_pack("{s:s,s:s,s:s,s:s}", "sho", hit.sho, "endpoint", hit.endpoint,
                              "sho_cert", cert, "state", hit.state);
    rc = mcim_role_sign(r, "mcim-discovery+jwt", device, device, txn, extra, &jws);
    json_decref(extra);
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 8, "cannot vouch for SHO %s", hit.sho);
    goto out;
  }
  answer = json_pack("{s:s,s:s,s:s}", "sho", hit.sho, "endpoint", hit.endpoint, "discovery", jws);
  rc = mcim_store_begin(st);
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 8, device, 200, answer);
  if (rc == MCIM_OK && strcmp(hit.state, "ordered") == 0 &&
      strcmp(mcim_config_str(r->cfg, "drf_notify"), "yes") == 0) {
    json_t *ready = json_pack("{s:s,s:s}", "txn", txn, "device", device);
    rc = mcim_role_outbox_put(r, st, hit.sho, "/v1/devices/ready", ready, txn, 8,
                              "DRF: M2ME ready for provisioning");
    json_decref(ready);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 8, "discovery not recorded");
    goto out;
  }
  mcim_role_wake(r);
  mcim_role_trace(r, txn, 8, r->name, device, "DRF: new SHO (name, endpoint, certificate)",
                  answer, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  free(jws);
  free(cert);
}
