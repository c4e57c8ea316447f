/* The M2MES (equipment supplier), `mcimd --role m2mes`: the M2MES CA, the PCID pool share,
 * and the RIMs of its models (docs/protocol.md, "Manufacture" and "M2MES").
 *
 * POST /v1/devices (caller `admin`, the factory tool) manufactures one device's credentials:
 *   1. certificates of the TRE attestation and key-agreement keys (M2MES CA, CN = device),
 *   2. a PCID credential (PCID from the pool, random K, OPc from a random OP, AMF 8000, an
 *      expiry) registered at the RO's ICF,
 *   3. the model's RIMs registered at the PVA,
 *   4. (given `owner_jwk`) the device's first owner registered at the RO's DRF, the anchor
 *      every SHO's order is checked against,
 * and answers with the certificates and the PCID credential sealed (JWE) to the TRE
 * key-agreement key: K and OPc never appear in clear in an answer, a log or a trace.
 *
 * Manufacture is not a procedure (no txn, no seed step): the calls to the ICF and the PVA
 * are synchronous, and idempotency is per device. The row is written first (PCID allocated,
 * K and OPc sealed with the storage key) so a failed call to a peer can be retried with the
 * same request and converges on the same PCID and K; once the answer is made the sealed K and
 * OPc are deleted (the M2MES has no use for them afterwards).
 *
 * This file: the kind (configuration, schema, start and stop, routes), the device row and the
 * calls to peers (steps 2 to 4); the handler of POST /v1/devices is m2mes_devices in
 * manufacture.c, shared declarations in m2mes_priv.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/firmware.h"
#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/kinds.h"
#include "roles/m2mes/ccif.h"
#include "roles/m2mes/m2mes_priv.h"
#include "roles/pcid.h"

static const mcim_config_spec_t m2mes_spec[] = {
    {.name = "m2mes_ca_key",
     .type = MCIM_CFG_PATH,
     .required = true,
     .help = "PEM private key of the M2MES CA (its certificate is m2mes_ca)"},
    {.name = "pcid_lifetime",
     .type = MCIM_CFG_DURATION,
     .def = "30d",
     .min = 1,
     .max = 3650LL * 86400,
     .help = "lifetime of an issued PCID credential"},
    {.name = "pcid_prefix",
     .type = MCIM_CFG_STRING,
     .def = "00101",
     .min = 5,
     .max = 6,
     .help = "MCC + MNC of the PCID pool (the test PLMN 001/01); PCIDs are 15 digits"},
    {.name = "pcid_renewal_interval",
     .type = MCIM_CFG_DURATION,
     .def = "1d",
     .min = 1,
     .max = 30LL * 86400,
     .help = "a device renews its PCID credential at the CCIF at most once in this time (a new"
             " txn; a retry gets its answer)"},
    {.name = "model",
     .type = MCIM_CFG_STRING,
     .def = "m2me-lab-1",
     .min = 1,
     .max = 63,
     .help = "device model when a request names none"},
    {.name = "tpm_vendor_ca",
     .type = MCIM_CFG_PATH,
     .help = "PEM certificates of the TPM vendors whose endorsement keys this M2MES enrols "
             "(docs/tre-tpm.md, \"Enrolment\"); read at each enrolment. Without it no TPM "
             "device is manufactured (TPM_EK_UNTRUSTED)"},
    {.name = "agent_executable",
     .type = MCIM_CFG_PATH,
     .help = "the device agent's executable (m2me) the devices this M2MES makes run: its "
             "SHA-256, read at the start, is published to the PVA as a RIM of the \"agent\" "
             "component, what a TPM device's launcher measures (docs/tre-tpm.md, \"Attestation "
             "at the PVA\"). Without it a TPM device's agent matches no RIM"},
};

static const mcim_migration_t m2mes_migrations[] = {
    {1, "devices, PCID counter",
     "CREATE TABLE devices (device TEXT PRIMARY KEY, model TEXT NOT NULL,"
     " pcid TEXT NOT NULL UNIQUE, att_key TEXT NOT NULL, ka_key TEXT NOT NULL,"
     " state TEXT NOT NULL, expires BIGINT NOT NULL, k BYTEA, opc BYTEA, answer TEXT,"
     " created BIGINT NOT NULL, updated BIGINT NOT NULL);"
     "CREATE TABLE pcid_counter (id BIGINT PRIMARY KEY, next BIGINT NOT NULL);"
     "INSERT INTO pcid_counter (id, next) VALUES (1, 1)"},
    {2, "CCIF: PCID renewals", mcim_ccif_schema_sql},
    /* One renewal per device per pcid_renewal_interval (docs/pcid-renewal.md section 2) */
    {3, "CCIF: the last PCID renewal granted to each device", mcim_pcid_grants_sql},
};

/* ---- helpers ---- */

void m2mes_wipe_json_string(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);
  /* jansson frees without wiping; the buffer is its own, writable copy */
  if (json_is_string(v))
    mcim_wipe((char *)json_string_value(v), json_string_length(v));
}

/* ---- the device row ---- */

static void copy_col(char *dst, size_t len, const mcim_row_t *row, size_t col)
{
  const char *s = mcim_row_text(row, col);
  snprintf(dst, len, "%s", s ? s : "");
}

static void copy_blob(uint8_t *dst, size_t cap, size_t *len, const mcim_row_t *row, size_t col)
{
  size_t n = 0;
  const uint8_t *b = mcim_row_blob(row, col, &n);
  *len = b && n <= cap ? n : 0;
  if (*len)
    memcpy(dst, b, n);
}

static mcim_cause_t drow_cb(const mcim_row_t *row, void *arg)
{
  struct drow *d = arg;
  copy_col(d->device, sizeof(d->device), row, 0);
  copy_col(d->model, sizeof(d->model), row, 1);
  copy_col(d->pcid, sizeof(d->pcid), row, 2);
  copy_col(d->att_key, sizeof(d->att_key), row, 3);
  copy_col(d->ka_key, sizeof(d->ka_key), row, 4);
  copy_col(d->state, sizeof(d->state), row, 5);
  d->expires = mcim_row_int(row, 6);
  copy_blob(d->k_sealed, sizeof(d->k_sealed), &d->k_len, row, 7);
  copy_blob(d->opc_sealed, sizeof(d->opc_sealed), &d->opc_len, row, 8);
  free(d->answer);
  d->answer = mcim_row_text(row, 9) ? strdup(mcim_row_text(row, 9)) : NULL;
  return MCIM_OK;
}

void m2mes_drow_clear(struct drow *d)
{
  free(d->answer);
  memset(d, 0, sizeof(*d));
}

mcim_cause_t m2mes_drow_load(mcim_store_t *st, const char *device, struct drow *d)
{
  m2mes_drow_clear(d);
  mcim_val_t p[] = {MCIM_TEXT(device)};
  return mcim_store_query_one(st,
                              "SELECT device, model, pcid, att_key, ka_key, state, expires, k,"
                              " opc, answer FROM devices WHERE device = ?",
                              p, 1, drow_cb, d);
}

/* Next PCID of the pool, inside the caller's transaction (the counter row serializes
 * allocations between threads and instances). */
mcim_cause_t m2mes_pcid_allocate(struct m2mes_state *ms, mcim_store_t *st, char *pcid, size_t len)
{
  int64_t n = 0;
  mcim_cause_t rc = mcim_store_exec(st, "UPDATE pcid_counter SET next = next + 1 WHERE id = 1",
                                    NULL, 0, NULL, NULL);
  if (rc == MCIM_OK)
    rc = mcim_store_query_int(st, "SELECT next - 1 FROM pcid_counter WHERE id = 1", NULL, 0, &n);
  if (rc != MCIM_OK)
    return rc;
  if (n < 1 || n >= ms->pcid_space) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFLICT, "the PCID pool %s is exhausted",
                   ms->prefix);
    return MCIM_CONFLICT;
  }
  snprintf(pcid, len, "%s%0*lld", ms->prefix, (int)(PCID_MAX_DIGITS - strlen(ms->prefix)),
           (long long)n);
  return MCIM_OK;
}

void m2mes_seal_context(char *out, size_t len, const char *what, const char *device)
{
  /* bound to the row: a sealed K copied to another device does not open */
  snprintf(out, len, "m2mes/%s/%s", what, device);
}

/* A new device row: PCID, K and OPc (sealed), state `new`. Own transaction. */
mcim_cause_t m2mes_drow_create(struct mcim_role *r, mcim_store_t *st, const char *device,
                               const char *model, const char *att, const char *ka)
{
  struct m2mes_state *ms = r->state;
  uint8_t k[MCIM_MILENAGE_K_LEN], op[MCIM_MILENAGE_OP_LEN], opc[MCIM_MILENAGE_OP_LEN];
  uint8_t k_sealed[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD];
  uint8_t opc_sealed[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  size_t klen = 0, olen = 0;
  char pcid[PCID_MAX_DIGITS + 1];
  char ctx[96];
  int64_t now = mcim_now();

  mcim_cause_t rc = mcim_random(k, sizeof(k));
  if (rc == MCIM_OK)
    rc = mcim_random(op, sizeof(op));
  /* OP is per device and thrown away: only OPc is provisioned (TS 35.206 allows either). */
  if (rc == MCIM_OK)
    rc = mcim_milenage_opc(k, op, opc);
  m2mes_seal_context(ctx, sizeof(ctx), "k", device);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, ctx, k, sizeof(k), k_sealed, sizeof(k_sealed), &klen);
  m2mes_seal_context(ctx, sizeof(ctx), "opc", device);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, ctx, opc, sizeof(opc), opc_sealed, sizeof(opc_sealed), &olen);
  mcim_wipe(k, sizeof(k));
  mcim_wipe(op, sizeof(op));
  mcim_wipe(opc, sizeof(opc));
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_store_begin(st);
  if (rc != MCIM_OK)
    return rc;
  rc = m2mes_pcid_allocate(ms, st, pcid, sizeof(pcid));
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(model), MCIM_TEXT(pcid), MCIM_TEXT(att),
                      MCIM_TEXT(ka), MCIM_INT(now + ms->pcid_lifetime),
                      MCIM_BLOB(k_sealed, klen), MCIM_BLOB(opc_sealed, olen), MCIM_INT(now),
                      MCIM_INT(now)};
    rc = mcim_store_exec(st,
                         "INSERT INTO devices (device, model, pcid, att_key, ka_key, state,"
                         " expires, k, opc, created, updated)"
                         " VALUES (?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  if (rc == MCIM_OK)
    rc = mcim_store_commit(st);
  if (rc != MCIM_OK && mcim_store_in_txn(st))
    mcim_store_rollback(st);
  return rc;
}

/* ---- calls to peers ---- */

/* POST to a peer; on failure a problem for the factory tool naming the peer and what to do. */
static mcim_cause_t peer_post(struct mcim_role *r, const char *peer, const char *what,
                              const char *path, const json_t *body,
                              struct mcim_http_response *resp, const char *device)
{
  struct mcim_http_client *cli = mcim_role_client(r);
  const char *base = mcim_role_peer_url(r, peer);
  struct mcim_http_result res;
  char url[600];
  mcim_cause_t rc;

  memset(&res, 0, sizeof(res));
  if (!base) {
    mcim_http_reply_problem(resp, MCIM_PEER_UNREACHABLE, 0,
                            "%s: \"%s\" is not in the peers file; device %s is not manufactured",
                            what, peer, device);
    return MCIM_PEER_UNREACHABLE;
  }
  if (!cli) {
    mcim_http_reply_problem(resp, MCIM_INTERNAL, 0, "no HTTP client");
    return MCIM_INTERNAL;
  }
  snprintf(url, sizeof(url), "%s%s", base, path);
  rc = mcim_http_request(cli, "POST", url, body, NULL, &res);
  if (rc == MCIM_PEER_UNREACHABLE || rc == MCIM_TIMEOUT ||
             rc == MCIM_PEER_NOT_AUTHENTICATED) {
    /* what to do first: clients may keep only the start of a detail */
    mcim_http_reply_problem(resp, MCIM_PEER_UNREACHABLE, 0,
                            "%s: %s cannot be reached, device %s is not manufactured yet; send"
                            " the same request again (%s: %s)",
                            what, peer, device, mcim_cause_name(rc), res.detail);
    rc = MCIM_PEER_UNREACHABLE;
  } else if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, MCIM_PEER_ERROR, 0,
                            "%s: %s refused: %s: %s; device %s is not manufactured", what, peer,
                            mcim_cause_name(rc), res.detail, device);
    /* a 409 is returned as such: the caller may have a way out (another PCID) */
    rc = res.status == 409 ? MCIM_CONFLICT : MCIM_PEER_ERROR;
  }
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "%s for device %s: %s", what, device, res.detail);
  mcim_http_result_clear(&res);
  return rc;
}

/* Step 2 of manufacture: the PCID credential to the ICF. */
mcim_cause_t m2mes_icf_register(struct mcim_role *r, const struct drow *d, const uint8_t *k,
                                const uint8_t *opc, struct mcim_http_response *resp)
{
  char khex[2 * MCIM_MILENAGE_K_LEN + 1], ohex[2 * MCIM_MILENAGE_OP_LEN + 1];
  mcim_hex_encode(k, MCIM_MILENAGE_K_LEN, khex);
  mcim_hex_encode(opc, MCIM_MILENAGE_OP_LEN, ohex);
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "pcid", d->pcid, "device", d->device, "k",
                           khex, "opc", ohex, "amf", "8000", "expires", (json_int_t)d->expires);
  mcim_wipe(khex, sizeof(khex));
  mcim_wipe(ohex, sizeof(ohex));
  if (!body) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "out of memory");
    return MCIM_NO_MEMORY;
  }
  mcim_cause_t rc = peer_post(r, "ro", "PCID registration at the ICF", "/v1/icf/pcids", body,
                              resp, d->device);
  m2mes_wipe_json_string(body, "k");
  m2mes_wipe_json_string(body, "opc");
  json_decref(body);
  return rc;
}

/* Step 3 of manufacture: the model's RIMs to the PVA (idempotent there). */
mcim_cause_t m2mes_pva_register(struct mcim_role *r, const char *model, const char *device,
                                struct mcim_http_response *resp)
{
  mcim_cause_t rc = MCIM_OK;
  for (size_t i = 0; mcim_firmware_components[i] && rc == MCIM_OK; i++) {
    char rim[MCIM_FIRMWARE_HEX_LEN + 1];
    rc = mcim_firmware_rim(model, mcim_firmware_components[i], rim);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 0, "cannot compute the RIMs of model %s", model);
      break;
    }
    json_t *body = json_pack("{s:s,s:s,s:s}", "model", model, "component",
                             mcim_firmware_components[i], "digest", rim);
    rc = body ? peer_post(r, "pva", "RIM registration at the PVA", "/v1/rims", body, resp, device)
              : MCIM_NO_MEMORY;
    json_decref(body);
  }
  /* The agent's executable as built: what a TPM device's launcher measures (its "agent"),
   * beside the lab image the software TRE's agent measures of itself. */
  struct m2mes_state *ms = r->state;
  if (rc == MCIM_OK && ms->agent_rim[0]) {
    json_t *body =
        json_pack("{s:s,s:s,s:s}", "model", model, "component", "agent", "digest", ms->agent_rim);
    rc = body ? peer_post(r, "pva", "RIM registration at the PVA", "/v1/rims", body, resp, device)
              : MCIM_NO_MEMORY;
    json_decref(body);
  }
  return rc;
}

/* Step 4 of manufacture: the device's first owner to the RO (DRF), which checks every later
 * order against it (issue 8). The RO refuses a second, different owner: a device is
 * manufactured for one owner, later owners come by the owner's handover. */
mcim_cause_t m2mes_owner_register(struct mcim_role *r, const char *device, const json_t *owner,
                                  struct mcim_http_response *resp)
{
  json_t *body = json_pack("{s:s,s:O}", "device", device, "owner_jwk", owner);
  mcim_cause_t rc = body ? peer_post(r, "ro", "owner registration at the RO", "/v1/drf/owners",
                                     body, resp, device)
                         : MCIM_NO_MEMORY;
  json_decref(body);
  return rc;
}

/* ---- kind ---- */

static mcim_cause_t m2mes_start(struct mcim_role *r)
{
  struct m2mes_state *ms = calloc(1, sizeof(*ms));
  mcim_cause_t rc;
  if (!ms)
    return MCIM_NO_MEMORY;
  ms->pcid_lifetime = mcim_config_duration(r->cfg, "pcid_lifetime");
  ms->prefix = mcim_config_str(r->cfg, "pcid_prefix");
  for (const char *p = ms->prefix; *p; p++)
    if (*p < '0' || *p > '9') {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                     "%s: \"pcid_prefix\": expected 5 or 6 digits (MCC + MNC), got \"%s\"",
                     mcim_config_file(r->cfg), ms->prefix);
      free(ms);
      return MCIM_CONFIG_INVALID;
    }
  ms->pcid_space = 1;
  for (size_t i = strlen(ms->prefix); i < PCID_MAX_DIGITS; i++)
    ms->pcid_space *= 10;
  const char *agent = mcim_config_path(r->cfg, "agent_executable");
  if (agent) {
    rc = mcim_firmware_measure_file(agent, ms->agent_rim);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s: \"agent_executable\": cannot read %s",
                     mcim_config_file(r->cfg), agent);
      free(ms);
      return rc;
    }
    mcim_log_info("the agent's RIM: SHA-256 of %s, %s", agent, ms->agent_rim);
  }
  rc = mcim_pki_ca_load(mcim_config_path(r->cfg, "m2mes_ca"),
                        mcim_config_path(r->cfg, "m2mes_ca_key"), &ms->ca);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "m2mes_ca_key %s is not the key of the M2MES CA certificate %s",
                   mcim_config_path(r->cfg, "m2mes_ca_key"), mcim_config_path(r->cfg, "m2mes_ca"));
    free(ms);
    return rc;
  }
  r->state = ms;
  return MCIM_OK;
}

static void m2mes_stop(struct mcim_role *r)
{
  struct m2mes_state *ms = r->state;
  if (ms)
    mcim_pki_ca_free(ms->ca);
  free(ms);
  r->state = NULL;
}

/* CCIF renewals answered or refused by the ICF (K and OPc already deleted) record_retention
 * after they were, and those never answered (K and OPc sealed: the ICF could not be reached
 * and the device gave up) record_retention after their credential expired (common.c). A retry of an answered txn
 * gets the stored answer (answer_retention); once both are gone it is a new renewal. */
static const char *const m2mes_purge[] = {
    "DELETE FROM ccif_renewals WHERE state IN ('issued', 'refused') AND updated < ?",
    "DELETE FROM ccif_renewals WHERE state = 'new' AND expires < ?",
    NULL,
};

static const struct mcim_http_route m2mes_routes[] = {
    {"POST", "/v1/devices", m2mes_devices, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/devices/enrolment", mcim_m2mes_enrolment, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/ccif/pcid", mcim_ccif_pcid, 0},
};

const struct mcim_role_kind mcim_role_m2mes = {
    .kind = "m2mes",
    .summary = "equipment supplier: M2MES CA, PCID pool, RIMs (manufacture, CCIF)",
    .spec = m2mes_spec,
    .nspec = sizeof(m2mes_spec) / sizeof(m2mes_spec[0]),
    .migrations = m2mes_migrations,
    .nmigrations = sizeof(m2mes_migrations) / sizeof(m2mes_migrations[0]),
    .routes = m2mes_routes,
    .nroutes = sizeof(m2mes_routes) / sizeof(m2mes_routes[0]),
    .start = m2mes_start,
    .stop = m2mes_stop,
    .purge = m2mes_purge,
};
