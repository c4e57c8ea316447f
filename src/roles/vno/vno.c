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

/* PCID renewal, network-initiated: the ICF's AV answer says `renewal_due` for a PCID; the
 * VNO keeps that (per PCID, in its store, between the attach request and the answer that
 * completes the AKA) and passes it on in the attach accept as "renewal": "due". */
static void renewal_record(struct mcim_role *r, const char *pcid, bool due)
{
  mcim_store_t *st = mcim_role_store(r);
  mcim_val_t p[] = {MCIM_TEXT(pcid)};
  mcim_val_t i[] = {MCIM_TEXT(pcid), MCIM_INT(mcim_now())};
  mcim_cause_t rc = !st ? MCIM_STORE_ERROR
                    : due
                        ? mcim_store_exec(st, "INSERT INTO pcid_renewal (pcid, since) VALUES (?, ?)",
                                          i, 2, NULL, NULL)
                        : mcim_store_exec(st, "DELETE FROM pcid_renewal WHERE pcid = ?", p, 1, NULL,
                                          NULL);
  if (rc != MCIM_OK && rc != MCIM_CONFLICT) /* CONFLICT: already recorded */
    mcim_log_event(MCIM_LOG_WARN, NULL, 5, rc, "renewal flag of PCID %s not recorded", pcid);
}

static void vno_accept_extra(struct mcim_role *r, const char *pcid, json_t *answer)
{
  int64_t n = 0;
  mcim_store_t *st = mcim_role_store(r);
  mcim_val_t p[] = {MCIM_TEXT(pcid)};
  if (st && mcim_store_query_int(st, "SELECT COUNT(*) FROM pcid_renewal WHERE pcid = ?", p, 1,
                                 &n) == MCIM_OK &&
      n > 0)
    json_object_set_new(answer, "renewal", json_string("due"));
}

/* One call to the ICF (step 5), AV in the answer parsed and checked. Its trace rows go to
 * `rows` (mcim_access_trace_at: NULL, traced at once). */
static mcim_cause_t icf_call(struct mcim_role *r, const char *path, json_t *body, const char *txn,
                             struct mcim_aka_av *av, char *device, bool *renewal_due,
                             json_t *rows)
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
  int64_t asked_us = mcim_now_us();
  rc = mcim_http_request(cli, "POST", url, body, NULL, &res);
  int64_t answered_us = mcim_now_us();
  /* traced once answered, at the time it was asked: a PCID the ICF does not know is a
   * stranger's, logged (below) and never traced; nor is an AUTS the ICF found not the
   * USIM's (access.c drops the rows) */
  if (rc != MCIM_UNKNOWN_IDENTITY)
    mcim_access_trace_at(r, rows, asked_us, txn, 5, r->name, "ro",
                         strstr(path, "resync") ? "ICF: resynchronise PCID (AUTS)"
                                                : "ICF: AVs for PCID",
                         body, MCIM_OK);
  /* The ICF's answer, as received: the ICF does not trace the vectors it gives (it cannot
   * know whether the device will answer), so the chart's copy of its answer is this one. */
  if (rc == MCIM_OK)
    mcim_access_trace_at(r, rows, answered_us, txn, 5, "ro", r->name, "ICF: AVs for PCID",
                         res.json, MCIM_OK);
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
  if (renewal_due)
    *renewal_due = json_is_true(json_object_get(res.json, "renewal_due"));
out:
  mcim_http_result_clear(&res);
  return rc;
}

static mcim_cause_t vno_get_av(struct mcim_role *r, const char *txn, const char *pcid,
                               struct mcim_aka_av *av, char *device, json_t *rows)
{
  json_t *body = json_pack("{s:s,s:i}", "pcid", pcid, "n", 1);
  if (txn)
    json_object_set_new(body, "txn", json_string(txn));
  bool due = false;
  mcim_cause_t rc = icf_call(r, "/v1/icf/avs", body, txn, av, device, &due, rows);
  if (rc == MCIM_OK)
    renewal_record(r, pcid, due);
  return rc;
}

static mcim_cause_t vno_resync(struct mcim_role *r, const char *txn, const char *pcid,
                               const uint8_t rand[16], const uint8_t auts[14], json_t *rows)
{
  char rand_hex[33], auts_hex[29], device[64];
  struct mcim_aka_av av;
  mcim_hex_encode(rand, 16, rand_hex);
  mcim_hex_encode(auts, 14, auts_hex);
  json_t *body = json_pack("{s:s,s:s,s:s}", "pcid", pcid, "rand", rand_hex, "auts", auts_hex);
  if (txn)
    json_object_set_new(body, "txn", json_string(txn));
  /* The ICF answers a resync with a fresh AV; the caller asks again for the one it uses. */
  mcim_cause_t rc = icf_call(r, "/v1/icf/resync", body, txn, &av, device, NULL, rows);
  mcim_wipe(&av, sizeof(av));
  return rc;
}

static const struct mcim_access_net vno_net = {
    .scope = "restricted",
    .id_field = "pcid",
    .get_av_rows = vno_get_av,
    .resync_rows = vno_resync,
    .step_attach = 4,
    .step_auth = 5,
    .step_connect = 6,
    .accept_extra = vno_accept_extra,
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
    {2, "PCIDs the ICF flagged for renewal",
     "CREATE TABLE pcid_renewal (pcid TEXT PRIMARY KEY, since BIGINT NOT NULL)"},
    {3, "stale attach sessions found by index (access.c)",
     "CREATE INDEX attach_created ON attach (created)"},
    {4, "open challenges counted by identity (access.c, attach_open_max)",
     "CREATE INDEX attach_identity ON attach (identity, state)"},
    {5, "an attach's trace rows kept until the device answers (access.c)", mcim_access_rows_sql},
};

/* Unanswered attach attempts leave nothing that lasts; one delete takes every stale one, so
 * nothing is left for the next poll. */
static bool vno_tick(struct mcim_role *r)
{
  mcim_access_purge(r);
  return false;
}

/* A renewal flag whose PCID never attached again (renewed, then terminated: no later answer
 * says "not due") went nowhere before 2026-12-06. Purged record_retention after it was set:
 * the ICF's answer to the next attach of that PCID sets it again before its accept reads it
 * (renewal_record, then vno_accept_extra, in one attach), so nothing is lost. */
static const char *const vno_purge[] = {
    "DELETE FROM pcid_renewal WHERE since < ?",
    NULL,
};

static const struct mcim_http_route vno_routes[] = {
    {"POST", "/v1/attach", h_attach, 0},
    {"POST", "/v1/attach/{id}", h_attach_answer, 0},
};

const struct mcim_role_kind mcim_role_vno = {
    .kind = "vno",
    .summary = "visited network: PCID attach with AVs from the RO's ICF, restricted access",
    .tick = vno_tick,
    .purge = vno_purge,
    .migrations = vno_migrations,
    .nmigrations = sizeof(vno_migrations) / sizeof(vno_migrations[0]),
    .routes = vno_routes,
    .nroutes = sizeof(vno_routes) / sizeof(vno_routes[0]),
};
