/* The roles' request bodies as their handlers check them before anything is read from or
 * written to a store: the dispatcher both HTTPS servers use (mcim_http_dispatch_,
 * src/net/http_route.c: the JSON content type, the parse with duplicate keys refused, the
 * route), then the handler's own check of the body, factored out of the handler into a pure
 * function that the handler calls (the mcim_jsonv_check field table and what the body alone
 * can refuse: digits of a PCID, n of the AVs, an https endpoint, a registration state, ack
 * or receipt with its certificate, exactly one of RES and AUTS, a device name):
 *   RO, ICF: POST /v1/icf/pcids (and its renewal form with "replaces"), /v1/icf/avs,
 *     /v1/icf/resync (src/roles/ro/icf.c, pcid.c);
 *   RO, DRF: /v1/drf/orders, /v1/drf/registrations, /v1/drf/discover, /v1/drf/owners and a
 *     handover (drf.c, owners.c);
 *   RO, DPF: a package (/v1/drf/authorisations, /v1/dpf/packages), a package fetch, a status,
 *     a release, a notice (dpf.c, release.c, relay.c); the admin's PCID push (pcid.c);
 *   VNO and SHO: an attach (by "pcid" and by "imsi") and the answer to its challenge
 *     (src/roles/access.c); RO and M2MES: a PCID renewal request (/v1/dpf/pcid,
 *     /v1/ccif/pcid: src/roles/pcid.c).
 *   SHO: the subscriber's order, a discard receipt, the RO's release, a notification
 *     (src/roles/sho/order.c, change.c), the peer messages about an order (the DRF's ready,
 *     the PVA's verdict, the DPF's report: provision.c peer_order_request);
 *   PVA: a token revocation (revocations.c), the M2MES's RIMs, an SHO's validation request,
 *     the device's quote request (pva.c; the quote itself is fuzz_pva_quote's);
 *   M2MES: the factory's manufacture request, its TRE JWKs parsed (manufacture.c).
 * The callers' access tokens are fuzz_access_token's; the statements inside the bodies are
 * fuzz_jws's and fuzz_package's.
 *
 * Input: one mode byte (the check: modulo the number of checks, 31, in the order of `checks`
 * below), then the body.
 * Seeds: tests/fuzz/corpus/fuzz_role_request/ (the bodies of a lab run's requests, as the
 * roles' trace recorded them). */
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/http.h"
#include "net/http_priv.h"
#include "roles/access.h"
#include "roles/m2mes/ccif.h"
#include "roles/pcid.h"
#include "roles/pva/pva.h"
#include "roles/ro/ro.h"
#include "roles/sho/sho.h"

typedef mcim_cause_t (*body_fn)(const json_t *body, char *err, size_t err_len);

static mcim_cause_t attach_pcid(const json_t *body, char *err, size_t err_len)
{
  return mcim_access_attach_body("pcid", body, err, err_len);
}

static mcim_cause_t attach_imsi(const json_t *body, char *err, size_t err_len)
{
  return mcim_access_attach_body("imsi", body, err, err_len);
}

static mcim_cause_t m2mes_devices(const json_t *body, char *err, size_t err_len)
{
  mcim_jose_key_t *att, *ka, *storage;
  mcim_cause_t rc = mcim_m2mes_devices_body(body, &att, &ka, &storage, err, err_len);
  if (rc == MCIM_OK && (!att || !ka))
    fuzz_die("the manufacture request accepted without its two keys");
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(storage);
  return rc;
}

static const struct {
  const char *what;
  body_fn fn;
} checks[] = {
    {"POST /v1/icf/pcids", mcim_icf_pcids_body},
    {"POST /v1/icf/pcids (replaces)", mcim_icf_pcids_replace_body},
    {"POST /v1/icf/avs", mcim_icf_avs_body},
    {"POST /v1/icf/resync", mcim_icf_resync_body},
    {"POST /v1/drf/orders", mcim_drf_order_body},
    {"POST /v1/drf/registrations", mcim_drf_register_body},
    {"POST /v1/drf/discover", mcim_drf_discover_body},
    {"POST /v1/drf/owners", mcim_drf_owner_register_body},
    {"POST /v1/drf/owners/{device}/handover", mcim_drf_owner_handover_body},
    {"POST /v1/drf/owner-queries", mcim_drf_owner_query_body},
    {"POST /v1/dpf/packages, /v1/drf/authorisations", mcim_dpf_package_body},
    {"POST /v1/dpf/packages/{device}/{txn}", mcim_dpf_fetch_body},
    {"POST /v1/dpf/status", mcim_dpf_status_body},
    {"POST /v1/dpf/releases", mcim_dpf_release_body},
    {"POST /v1/dpf/notices", mcim_dpf_notice_body},
    {"POST /v1/admin/pcid/{device}/renew", mcim_ro_admin_pcid_renew_body},
    {"POST /v1/attach (VNO: pcid)", attach_pcid},
    {"POST /v1/attach (SHO: imsi)", attach_imsi},
    {"POST /v1/attach/{id}", mcim_access_answer_body},
    {"POST /v1/dpf/pcid (RO), /v1/ccif/pcid (M2MES)", mcim_pcid_request_body},
    {"SHO: POST /v1/orders", mcim_sho_order_body},
    {"SHO: POST /v1/discards", mcim_sho_discard_body},
    {"SHO: POST /v1/releases", mcim_sho_release_body},
    {"SHO: POST /v1/notifications", mcim_sho_notification_body},
    {"PVA: POST /v1/revocations", pva_revocation_body},
    {"SHO: POST /v1/devices/ready", mcim_sho_ready_body},
    {"SHO: POST /v1/verdicts", mcim_sho_verdict_body},
    {"SHO: POST /v1/reports", mcim_sho_report_body},
    {"PVA: POST /v1/rims", pva_rims_body},
    {"PVA: POST /v1/validations", pva_validation_body},
    {"PVA: POST /v1/validations/{id}/quote", pva_quote_body},
    {"M2MES: POST /v1/devices", m2mes_devices},
};
#define NCHECKS (sizeof(checks) / sizeof(checks[0]))

static size_t current;

/* The one route of the fuzzed request: the check `current`, answered as the handler answers
 * a refusal. */
static void h_check(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  (void)ctx;
  char err[200] = "";
  mcim_cause_t rc = checks[current].fn(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    if (!err[0] || strlen(err) >= sizeof(err))
      fuzz_die("a refusal without its reason");
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 200, json_pack("{s:s}", "checked", checks[current].what));
}

static const struct mcim_http_route routes[] = {{"POST", "/v1/check", h_check, 0}};
static const struct mcim_http_server_cfg cfg = {
    .role = "fuzz", .routes = routes, .nroutes = 1, .max_body = 256 * 1024};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  current = data[0] % NCHECKS;
  fuzz_post_json(&cfg, "/v1/check", data + 1, size - 1);
  return 0;
}
