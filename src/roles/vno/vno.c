/* VNO: the visited network a pristine device attaches to with its PCID (seed, pristine
 * steps 4-6). It holds no credential: AVs come from the RO's ICF (step 5), and a
 * successful AKA yields a `restricted` access token (step 6: only the RO and the PVA are
 * reachable with it). */
#include <stdio.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/access.h"
#include "roles/kinds.h"

/* One call to the ICF (step 5), AV in the answer parsed and checked. */
static mcim_cause_t icf_call(struct mcim_role *r, const char *path, json_t *body, const char *txn,
                             struct mcim_aka_av *av, char *device)
{
  const char *base = mcim_role_peer_url(r, "ro");
  struct mcim_http_client *cli = mcim_role_client(r);
  struct mcim_http_result res = {0};
  char url[512];
  mcim_cause_t rc;
  if (!base || !cli) {
    json_decref(body);
    return MCIM_PEER_UNREACHABLE;
  }
  snprintf(url, sizeof(url), "%s%s", base, path);
  mcim_role_trace(r, txn, 5, r->name, "ro",
                  strstr(path, "resync") ? "ICF: resynchronise PCID (AUTS)" : "ICF: AVs for PCID",
                  body, MCIM_OK);
  rc = mcim_http_request(cli, "POST", url, body, NULL, &res);
  json_decref(body);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, txn, 5, rc, "ICF: %s", res.detail);
    /* What the device may learn is about its credential; anything else is our problem
     * with the ICF, not the device's. */
    if (rc != MCIM_UNKNOWN_IDENTITY && rc != MCIM_CREDENTIAL_EXPIRED &&
        rc != MCIM_SUBSCRIPTION_TERMINATED && rc != MCIM_AUTS_INVALID &&
        rc != MCIM_SQN_EXHAUSTED)
      rc = MCIM_PEER_ERROR;
    goto out;
  }
  json_t *first = json_array_get(json_object_get(res.json, "avs"), 0);
  const char *dev = json_string_value(json_object_get(res.json, "device"));
  const char *rand = json_string_value(json_object_get(first, "rand"));
  const char *autn = json_string_value(json_object_get(first, "autn"));
  const char *xres = json_string_value(json_object_get(first, "xres"));
  if (!dev || strlen(dev) > 63 || !rand || !autn || !xres ||
      mcim_hex_decode_str(rand, av->rand, sizeof(av->rand)) != MCIM_OK ||
      mcim_hex_decode_str(autn, av->autn, sizeof(av->autn)) != MCIM_OK ||
      mcim_hex_decode_str(xres, av->xres, sizeof(av->xres)) != MCIM_OK) {
    rc = MCIM_PEER_BAD_ANSWER;
    goto out;
  }
  snprintf(device, 64, "%s", dev);
out:
  mcim_http_result_clear(&res);
  return rc;
}

static mcim_cause_t vno_get_av(struct mcim_role *r, const char *txn, const char *pcid,
                               struct mcim_aka_av *av, char *device)
{
  json_t *body = json_pack("{s:s,s:i}", "pcid", pcid, "n", 1);
  if (txn)
    json_object_set_new(body, "txn", json_string(txn));
  return icf_call(r, "/v1/icf/avs", body, txn, av, device);
}

static mcim_cause_t vno_resync(struct mcim_role *r, const char *txn, const char *pcid,
                               const uint8_t rand[16], const uint8_t auts[14])
{
  char rand_hex[33], auts_hex[29], device[64];
  struct mcim_aka_av av;
  mcim_hex_encode(rand, 16, rand_hex);
  mcim_hex_encode(auts, 14, auts_hex);
  json_t *body = json_pack("{s:s,s:s,s:s}", "pcid", pcid, "rand", rand_hex, "auts", auts_hex);
  if (txn)
    json_object_set_new(body, "txn", json_string(txn));
  /* The ICF answers a resync with a fresh AV; the caller asks again for the one it uses. */
  mcim_cause_t rc = icf_call(r, "/v1/icf/resync", body, txn, &av, device);
  mcim_wipe(&av, sizeof(av));
  return rc;
}

static const struct mcim_access_net vno_net = {
    .scope = "restricted",
    .id_field = "pcid",
    .get_av = vno_get_av,
    .resync = vno_resync,
    .step_attach = 4,
    .step_auth = 5,
    .step_connect = 6,
};

static void h_attach(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  mcim_access_attach(ctx, &vno_net, req, resp);
}

static void h_attach_answer(void *ctx, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  mcim_access_answer(ctx, &vno_net, req, resp);
}

static const mcim_migration_t vno_migrations[] = {
    {1, "attach sessions", mcim_access_schema_sql},
};

static const struct mcim_http_route vno_routes[] = {
    {"POST", "/v1/attach", h_attach, 0},
    {"POST", "/v1/attach/{id}", h_attach_answer, 0},
};

const struct mcim_role_kind mcim_role_vno = {
    .kind = "vno",
    .summary = "visited network: PCID attach with AVs from the RO's ICF, restricted access",
    .migrations = vno_migrations,
    .nmigrations = 1,
    .routes = vno_routes,
    .nroutes = 2,
};
