/* RO, ICF function: the PCID subscriptions registered by the M2MES at manufacture and
 * their AuC; AVs for access networks (pristine step 5) and resynchronisation. */
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_sync.h"
#include "roles/auc_backend.h"
#include "roles/ro/ro.h"

static bool is_icf_client(struct mcim_role *r, const char *peer)
{
  const char *list = mcim_config_str(r->cfg, "icf_clients");
  size_t n = peer ? strlen(peer) : 0;
  for (const char *p = list; p && n;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len == n && strncmp(p, peer, n) == 0)
      return true;
    p = comma ? comma + 1 : NULL;
  }
  return false;
}

static mcim_cause_t text_col0(const mcim_row_t *row, void *arg)
{
  snprintf(arg, 64, "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  return MCIM_OK;
}

static mcim_cause_t device_of(mcim_store_t *st, const char *pcid, char device[64])
{
  mcim_val_t p[] = {MCIM_TEXT(pcid)};
  device[0] = '\0';
  return mcim_store_query_one(st, "SELECT device FROM auc WHERE imsi = ?", p, 1, text_col0, device);
}

mcim_cause_t mcim_icf_pcids_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"pcid", MCIM_JV_STRING, true, 15}, {"device", MCIM_JV_STRING, true, 63},
      {"k", MCIM_JV_HEX, true, 32},       {"opc", MCIM_JV_HEX, true, 32},
      {"amf", MCIM_JV_HEX, true, 4},      {"expires", MCIM_JV_INTEGER, true, 0},
      {"txn", MCIM_JV_HEX, false, 32},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 7, err, err_len);
  if (rc == MCIM_OK && !mcim_digits(json_string_value(json_object_get(body, "pcid")), 6, 15)) {
    rc = MCIM_INVALID_ARGUMENT;
    snprintf(err, err_len, "pcid must be 6 to 15 digits");
  }
  return rc;
}

/* POST /v1/icf/pcids (M2MES, manufacture). */
void mcim_icf_pcids(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], have[64];
  struct mcim_auc_sub sub = {0};
  mcim_store_t *st = mcim_role_store(r);
  if (!req->peer || strcmp(req->peer, "m2mes") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "only the M2MES registers PCIDs");
    return;
  }
  if (json_object_get(req->json, "replaces")) { /* a renewal (pcid.c) */
    mcim_icf_pcids_replace(r, req, resp);
    return;
  }
  mcim_cause_t rc = mcim_icf_pcids_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  sub.imsi = json_string_value(json_object_get(req->json, "pcid"));
  sub.device = json_string_value(json_object_get(req->json, "device"));
  sub.expires = json_integer_value(json_object_get(req->json, "expires"));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "k")), sub.k, sizeof(sub.k));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "opc")), sub.opc, sizeof(sub.opc));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "amf")), sub.amf, sizeof(sub.amf));
  if (!st) {
    rc = MCIM_STORE_ERROR;
  } else {
    /* with an HLR, the PCID is to be created there in the same unit of work */
    rc = mcim_store_begin(st);
    if (rc == MCIM_OK)
      rc = mcim_auc_add(st, r->storage_key, &sub);
    if (rc == MCIM_OK)
      rc = mcim_auc_sync_want(r, st, sub.imsi, true);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
    if (rc == MCIM_CONFLICT && device_of(st, sub.imsi, have) == MCIM_OK &&
        strcmp(have, sub.device) == 0)
      rc = MCIM_OK; /* the same registration again: idempotent */
  }
  mcim_wipe(&sub, sizeof(sub));
  if (rc == MCIM_OK)
    (void)mcim_auc_sync_run(r, json_string_value(json_object_get(req->json, "pcid")));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "PCID %s not registered",
                            json_string_value(json_object_get(req->json, "pcid")));
    return;
  }
  mcim_log_info("ICF: PCID %s registered for device %s",
                json_string_value(json_object_get(req->json, "pcid")),
                json_string_value(json_object_get(req->json, "device")));
  mcim_http_reply_json(resp, 201,
                       json_pack("{s:O,s:O,s:O}", "pcid", json_object_get(req->json, "pcid"),
                                 "device", json_object_get(req->json, "device"), "expires",
                                 json_object_get(req->json, "expires")));
}

static json_t *avs_json(const struct mcim_aka_av *avs, int n)
{
  json_t *arr = json_array();
  for (int i = 0; i < n; i++) {
    char rand[33], autn[33], xres[17];
    mcim_hex_encode(avs[i].rand, sizeof(avs[i].rand), rand);
    mcim_hex_encode(avs[i].autn, sizeof(avs[i].autn), autn);
    mcim_hex_encode(avs[i].xres, sizeof(avs[i].xres), xres);
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "rand", rand, "autn", autn, "xres", xres));
    mcim_wipe(xres, sizeof(xres));
  }
  return arr;
}

/* Answer n fresh AVs for a PCID (after an optional resync). */
static void reply_avs(struct mcim_role *r, const struct mcim_http_request *req,
                      struct mcim_http_response *resp, const char *pcid, int n, const char *txn)
{
  struct mcim_aka_av avs[5];
  char device[64], detail[MCIM_AUC_DETAIL_LEN];
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = st ? mcim_auc_sync_gen_avs(r, st, pcid, n, mcim_now(), avs, detail,
                                               sizeof(detail))
                       : MCIM_STORE_ERROR;
  if (mcim_auc_cause_is_remote(rc))
    mcim_log_event(MCIM_LOG_WARN, txn, 5, rc, "%s", detail);
  if (rc == MCIM_OK)
    rc = device_of(st, pcid, device);
  if (rc == MCIM_UNKNOWN_IDENTITY) /* a stranger's PCID: logged, never traced */
    mcim_log_event(MCIM_LOG_WARN, txn, 5, rc, "ICF: no AVs: unknown PCID (asked by %s)",
                   req->peer ? req->peer : "?");
  else if (rc != MCIM_OK) /* counted under the PCID: the VNO asks for every device */
    mcim_role_trace_refusal(r, pcid, txn, 5, r->name, req->peer, "ICF: no AVs for PCID", rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 5, "no AVs for PCID %s", pcid);
    mcim_wipe(avs, sizeof(avs));
    return;
  }
  json_t *body = json_pack("{s:s,s:o}", "device", device, "avs", avs_json(avs, n));
  mcim_wipe(avs, sizeof(avs));
  mcim_icf_renewal_note(st, pcid, body);
  /* Not traced here: anyone may attach at the VNO naming a PCID heard on the air, and the ICF
   * cannot know whether the device will answer. The VNO traces this answer as it received it
   * once the device has (vno.c, access.c); refusals above are traced here. */
  mcim_http_reply_json(resp, 200, body);
}

mcim_cause_t mcim_icf_avs_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"pcid", MCIM_JV_STRING, true, 15},
      {"n", MCIM_JV_INTEGER, false, 0},
      {"txn", MCIM_JV_HEX, false, 32},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 3, err, err_len);
  json_int_t n = json_object_get(body, "n") ? json_integer_value(json_object_get(body, "n")) : 1;
  if (rc == MCIM_OK && (n < 1 || n > 5)) {
    rc = MCIM_INVALID_ARGUMENT;
    snprintf(err, err_len, "n must be 1..5");
  }
  return rc;
}

/* POST /v1/icf/avs (an access network, pristine step 5). */
void mcim_icf_avs(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  if (!is_icf_client(r, req->peer)) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 5, "%s is not an access network of this ICF",
                            req->peer ? req->peer : "caller");
    return;
  }
  mcim_cause_t rc = mcim_icf_avs_body(req->json, err, sizeof(err));
  json_int_t n = json_object_get(req->json, "n") ? json_integer_value(json_object_get(req->json, "n")) : 1;
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 5, "%s", err);
    return;
  }
  reply_avs(r, req, resp, json_string_value(json_object_get(req->json, "pcid")), (int)n,
            json_string_value(json_object_get(req->json, "txn")));
}

mcim_cause_t mcim_icf_resync_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"pcid", MCIM_JV_STRING, true, 15},
      {"rand", MCIM_JV_HEX, true, 32},
      {"auts", MCIM_JV_HEX, true, 28},
      {"txn", MCIM_JV_HEX, false, 32},
  };
  return mcim_jsonv_check(body, fields, 4, err, err_len);
}

/* POST /v1/icf/resync (an access network relays the device's AUTS). */
void mcim_icf_resync(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200], detail[MCIM_AUC_DETAIL_LEN];
  uint8_t rand[16], auts[14];
  if (!is_icf_client(r, req->peer)) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 5, "not an access network of this ICF");
    return;
  }
  mcim_cause_t rc = mcim_icf_resync_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 5, "%s", err);
    return;
  }
  const char *pcid = json_string_value(json_object_get(req->json, "pcid"));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "rand")), rand, sizeof(rand));
  mcim_hex_decode_str(json_string_value(json_object_get(req->json, "auts")), auts, sizeof(auts));
  mcim_store_t *st = mcim_role_store(r);
  rc = st ? mcim_auc_sync_resync(r, st, pcid, rand, auts, 0, mcim_now(), NULL, detail,
                                 sizeof(detail))
          : MCIM_STORE_ERROR;
  if (mcim_auc_cause_is_remote(rc))
    mcim_log_event(MCIM_LOG_WARN, txn, 5, rc, "%s", detail);
  if (rc == MCIM_AUTS_INVALID) /* not the USIM's MAC-S: a stranger's, logged, never traced */
    mcim_log_event(MCIM_LOG_WARN, txn, 5, rc, "ICF: resynchronisation refused (asked by %s)",
                   req->peer ? req->peer : "?");
  else if (rc != MCIM_OK)
    mcim_role_trace_refusal(r, pcid, txn, 5, r->name, req->peer,
                            "ICF: resynchronisation refused", rc);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 5, "resynchronisation of %s failed", pcid);
    return;
  }
  reply_avs(r, req, resp, pcid, 1, txn);
}
