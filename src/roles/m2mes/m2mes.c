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
 * OPc are deleted (the M2MES has no use for them afterwards). */
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

#define PCID_MAX_DIGITS 15 /* an IMSI: MCC + MNC + MSIN */
#define ICF_ATTEMPTS 4     /* PCIDs tried when the ICF says one is held by another device */

struct m2mes_state {
  mcim_pki_ca_t *ca;
  int64_t pcid_lifetime;
  const char *prefix; /* MCC + MNC of the PCID pool, from the configuration */
  int64_t pcid_space; /* 10^(15 - len(prefix)) */
  char agent_rim[MCIM_FIRMWARE_HEX_LEN + 1]; /* of "agent_executable", "" without it */
};

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
};

/* ---- helpers ---- */

static void wipe_json_string(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);
  /* jansson frees without wiping; the buffer is its own, writable copy */
  if (json_is_string(v))
    mcim_wipe((char *)json_string_value(v), json_string_length(v));
}

/* The identity of a public key, to compare two requests: "x.y" of its JWK. */
static mcim_cause_t key_identity(const mcim_jose_key_t *key, char *out, size_t len)
{
  char *jwk = NULL;
  mcim_cause_t rc = mcim_jose_key_public_jwk(key, &jwk);
  if (rc != MCIM_OK)
    return rc;
  json_t *j = json_loads(jwk, 0, NULL);
  const char *x = json_string_value(json_object_get(j, "x"));
  const char *y = json_string_value(json_object_get(j, "y"));
  rc = x && y && (size_t)snprintf(out, len, "%s.%s", x, y) < len ? MCIM_OK : MCIM_KEY_INVALID;
  json_decref(j);
  free(jwk);
  return rc;
}

/* A TRE public key from the request: a JWK object (or its JSON text), P-256, public only. */
static mcim_cause_t request_key(const json_t *v, const char *what, mcim_jose_key_t **out,
                                char *err, size_t errlen)
{
  char *text = NULL;
  mcim_cause_t rc = MCIM_KEY_INVALID;
  *out = NULL;
  if (json_is_object(v))
    text = json_dumps(v, JSON_COMPACT);
  else if (json_is_string(v))
    text = strdup(json_string_value(v));
  if (!text) {
    snprintf(err, errlen, "%s must be a JWK (object)", what);
    return json_is_object(v) || json_is_string(v) ? MCIM_NO_MEMORY : MCIM_WRONG_TYPE;
  }
  rc = mcim_jose_key_from_jwk(text, strlen(text), out);
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "%s is not an EC P-256 JWK: %s", what, mcim_cause_text(rc));
  } else if (mcim_jose_key_has_private(*out)) {
    /* A private key in a request means it left the TRE: refuse rather than certify it. */
    snprintf(err, errlen, "%s holds a private key (\"d\"): send the public key only", what);
    rc = MCIM_KEY_INVALID;
  }
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*out);
    *out = NULL;
  }
  mcim_wipe(text, strlen(text));
  free(text);
  return rc;
}

/* ---- the device row ---- */

struct drow {
  char device[64];
  char model[64];
  char pcid[PCID_MAX_DIGITS + 1];
  char att_key[200];
  char ka_key[200];
  char state[16];
  int64_t expires;
  uint8_t k_sealed[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD];
  size_t k_len;
  uint8_t opc_sealed[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  size_t opc_len;
  char *answer; /* JSON text, malloc'd */
};

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

static void drow_clear(struct drow *d)
{
  free(d->answer);
  memset(d, 0, sizeof(*d));
}

static mcim_cause_t drow_load(mcim_store_t *st, const char *device, struct drow *d)
{
  drow_clear(d);
  mcim_val_t p[] = {MCIM_TEXT(device)};
  return mcim_store_query_one(st,
                              "SELECT device, model, pcid, att_key, ka_key, state, expires, k,"
                              " opc, answer FROM devices WHERE device = ?",
                              p, 1, drow_cb, d);
}

/* Next PCID of the pool, inside the caller's transaction (the counter row serializes
 * allocations between threads and instances). */
static mcim_cause_t pcid_allocate(struct m2mes_state *ms, mcim_store_t *st, char *pcid,
                                  size_t len)
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

static void seal_context(char *out, size_t len, const char *what, const char *device)
{
  /* bound to the row: a sealed K copied to another device does not open */
  snprintf(out, len, "m2mes/%s/%s", what, device);
}

/* A new device row: PCID, K and OPc (sealed), state `new`. Own transaction. */
static mcim_cause_t drow_create(struct mcim_role *r, mcim_store_t *st, const char *device,
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
  seal_context(ctx, sizeof(ctx), "k", device);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, ctx, k, sizeof(k), k_sealed, sizeof(k_sealed), &klen);
  seal_context(ctx, sizeof(ctx), "opc", device);
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
  rc = pcid_allocate(ms, st, pcid, sizeof(pcid));
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
static mcim_cause_t icf_register(struct mcim_role *r, const struct drow *d, const uint8_t *k,
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
  wipe_json_string(body, "k");
  wipe_json_string(body, "opc");
  json_decref(body);
  return rc;
}

/* Step 3 of manufacture: the model's RIMs to the PVA (idempotent there). */
static mcim_cause_t pva_register(struct mcim_role *r, const char *model, const char *device,
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
static mcim_cause_t owner_register(struct mcim_role *r, const char *device, const json_t *owner,
                                   struct mcim_http_response *resp)
{
  json_t *body = json_pack("{s:s,s:O}", "device", device, "owner_jwk", owner);
  mcim_cause_t rc = body ? peer_post(r, "ro", "owner registration at the RO", "/v1/drf/owners",
                                     body, resp, device)
                         : MCIM_NO_MEMORY;
  json_decref(body);
  return rc;
}

/* ---- POST /v1/devices ---- */

/* `storage` (may be NULL): the TRE's TPM storage key, certified in the KA certificate; a
 * device enrolled with one has its attestation key in that TPM too, which its attestation
 * certificate says (MCIM_OID_TPM_ATTESTATION: the PVA then wants a TPM quote). */
static mcim_cause_t issue_cert(struct m2mes_state *ms, const mcim_jose_key_t *key,
                               const mcim_jose_key_t *storage, EVP_PKEY *ak, const char *device,
                               const char *model, mcim_cert_usage_t usage, char **pem)
{
  EVP_PKEY *pub = NULL, *spub = NULL;
  X509 *cert = NULL;
  mcim_cause_t rc = mcim_jose_key_public_pkey(key, &pub);
  bool ka = usage == MCIM_CERT_TRE_KEY_AGREEMENT;
  if (rc == MCIM_OK && storage && ka)
    rc = mcim_jose_key_public_pkey(storage, &spub);
  if (rc == MCIM_OK) {
    /* an enrolled TPM's attestation certificate names its AK and the model */
    mcim_cert_request_t req = {.name = device,
                               .usage = usage,
                               .key = pub,
                               .tpm_storage = spub,
                               .tpm_attestation = (storage || ak) && !ka,
                               .tpm_ak = ka ? NULL : ak,
                               .model = ka || !ak ? NULL : model};
    rc = mcim_pki_issue(ms->ca, &req, &cert);
  }
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_to_pem(cert, pem);
  X509_free(cert);
  EVP_PKEY_free(spub);
  EVP_PKEY_free(pub);
  return rc;
}

/* The PCID credential sealed to the TRE's KA key (the plaintext is wiped). For a TPM device (`pcid_slot`, the slot key
 * certify.pcid offered and enrol.c checked) K goes as "k_tpm", a duplication blob to that key
 * (docs/tre-tpm.md, "The PCID credential's K"), never as "k". */
static mcim_cause_t seal_credential(const struct drow *d, const uint8_t *k, const uint8_t *opc,
                                    const mcim_jose_key_t *ka, const json_t *pcid_slot, char **jwe)
{
  char khex[2 * MCIM_MILENAGE_K_LEN + 1], ohex[2 * MCIM_MILENAGE_OP_LEN + 1];
  json_t *k_tpm = NULL;
  mcim_hex_encode(k, MCIM_MILENAGE_K_LEN, khex);
  mcim_hex_encode(opc, MCIM_MILENAGE_OP_LEN, ohex);
  if (pcid_slot) {
    mcim_cause_t wrc = mcim_tre_wrap_k_slot(pcid_slot, k, &k_tpm);
    if (wrc != MCIM_OK) {
      mcim_wipe(khex, sizeof(khex));
      mcim_wipe(ohex, sizeof(ohex));
      return wrc;
    }
  }
  json_t *cred = k_tpm ? json_pack("{s:s,s:o,s:s,s:s,s:I}", "pcid", d->pcid, "k_tpm", k_tpm, "opc",
                                   ohex, "amf", "8000", "expires", (json_int_t)d->expires)
                       : json_pack("{s:s,s:s,s:s,s:s,s:I}", "pcid", d->pcid, "k", khex, "opc", ohex,
                                   "amf", "8000", "expires", (json_int_t)d->expires);
  char *text = cred ? json_dumps(cred, JSON_COMPACT) : NULL;
  mcim_cause_t rc = text ? mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), jwe)
                         : MCIM_NO_MEMORY;
  if (text) {
    mcim_wipe(text, strlen(text));
    free(text);
  }
  wipe_json_string(cred, "k");
  wipe_json_string(cred, "opc");
  json_decref(cred);
  mcim_wipe(khex, sizeof(khex));
  mcim_wipe(ohex, sizeof(ohex));
  return rc;
}

static mcim_cause_t unseal_secrets(struct mcim_role *r, const struct drow *d, uint8_t *k,
                                   uint8_t *opc)
{
  char ctx[96];
  size_t n = 0;
  seal_context(ctx, sizeof(ctx), "k", d->device);
  mcim_cause_t rc = mcim_unseal(r->storage_key, ctx, d->k_sealed, d->k_len, k,
                                MCIM_MILENAGE_K_LEN, &n);
  if (rc == MCIM_OK && n != MCIM_MILENAGE_K_LEN)
    rc = MCIM_UNSEAL_FAILED;
  seal_context(ctx, sizeof(ctx), "opc", d->device);
  if (rc == MCIM_OK)
    rc = mcim_unseal(r->storage_key, ctx, d->opc_sealed, d->opc_len, opc, MCIM_MILENAGE_OP_LEN,
                     &n);
  if (rc == MCIM_OK && n != MCIM_MILENAGE_OP_LEN)
    rc = MCIM_UNSEAL_FAILED;
  return rc;
}

/* The answer given before, if this request is the same manufacture (same keys and model). */
static bool reply_if_same(struct mcim_http_response *resp, const struct drow *d,
                          const char *model, const char *att, const char *ka)
{
  if (strcmp(d->state, "issued") != 0)
    return false;
  if (strcmp(d->att_key, att) != 0 || strcmp(d->ka_key, ka) != 0 ||
      strcmp(d->model, model) != 0) {
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                            "device %s was already manufactured with other keys or another "
                            "model; a device id is given once",
                            d->device);
    return true;
  }
  json_t *answer = d->answer ? json_loads(d->answer, 0, NULL) : NULL;
  if (!answer) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 0, "the stored answer of %s is unreadable",
                            d->device);
    return true;
  }
  mcim_http_reply_json(resp, 201, answer);
  return true;
}

mcim_cause_t mcim_m2mes_devices_body(const json_t *body, mcim_jose_key_t **att,
                                     mcim_jose_key_t **ka, mcim_jose_key_t **storage, char *err,
                                     size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"device", MCIM_JV_STRING, true, 63},
      {"model", MCIM_JV_STRING, false, 63},
  };
  json_t *rest = NULL;
  mcim_cause_t rc = MCIM_BAD_JSON;

  *att = *ka = *storage = NULL;
  if (!json_is_object(body)) {
    snprintf(err, err_len, "body must be a JSON object");
    goto cleanup;
  }
  /* The JWKs are checked by the key parser; the rest of the body by the field table. */
  const json_t *jatt = json_object_get(body, "attestation_jwk");
  const json_t *jka = json_object_get(body, "ka_jwk");
  const json_t *owner = json_object_get(body, "owner_jwk"); /* optional, an object */
  /* optional: a TRE on a TPM names the storage key K is to be imported under */
  const json_t *jstorage = json_object_get(body, "tpm_storage_jwk");
  rc = MCIM_WRONG_TYPE;
  if (owner && !json_is_object(owner)) {
    snprintf(err, err_len, "owner_jwk must be a JWK object");
    goto cleanup;
  }
  rc = MCIM_FIELD_MISSING;
  if (!jatt || !jka) {
    snprintf(err, err_len, "missing field \"%s\"", jatt ? "ka_jwk" : "attestation_jwk");
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  rest = json_copy((json_t *)body);
  if (!rest) {
    snprintf(err, err_len, "out of memory");
    goto cleanup;
  }
  json_object_del(rest, "attestation_jwk");
  json_object_del(rest, "ka_jwk");
  json_object_del(rest, "owner_jwk");
  json_object_del(rest, "tpm_storage_jwk");
  json_object_del(rest, "tpm"); /* checked by mcim_m2mes_tpm_check (enrol.c) */
  rc = mcim_jsonv_check(rest, fields, 2, err, err_len);
  if (rc == MCIM_OK)
    rc = request_key(jatt, "attestation_jwk", att, err, err_len);
  if (rc == MCIM_OK)
    rc = request_key(jka, "ka_jwk", ka, err, err_len);
  if (rc == MCIM_OK && jstorage)
    rc = request_key(jstorage, "tpm_storage_jwk", storage, err, err_len);
cleanup:
  json_decref(rest);
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*att);
    mcim_jose_key_free(*ka);
    mcim_jose_key_free(*storage);
    *att = *ka = *storage = NULL;
  }
  return rc;
}

static void h_devices(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct m2mes_state *ms = r->state;
  char err[200];
  char att_id[200], ka_id[200], storage_id[100];
  uint8_t k[MCIM_MILENAGE_K_LEN], opc[MCIM_MILENAGE_OP_LEN];
  struct drow d;
  mcim_jose_key_t *att = NULL, *ka = NULL, *storage = NULL;
  EVP_PKEY *ak = NULL;
  json_t *pcid_slot = NULL; /* a TPM device: the slot key the PCID credential's K goes to */
  json_t *answer = NULL;
  char *att_pem = NULL, *ka_pem = NULL, *jwe = NULL, *answer_text = NULL;
  mcim_store_t *st = NULL;
  mcim_cause_t rc;

  memset(&d, 0, sizeof(d));
  if (!req->peer || strcmp(req->peer, "admin") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0,
                            "only the factory (lab admin certificate) manufactures devices"
                            " (caller \"%s\")",
                            req->peer ? req->peer : "");
    goto cleanup;
  }
  rc = mcim_m2mes_devices_body(req->json, &att, &ka, &storage, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    goto cleanup;
  }
  const json_t *owner = json_object_get(req->json, "owner_jwk"); /* optional, an object */
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *model = json_string_value(json_object_get(req->json, "model"));
  if (!model)
    model = mcim_config_str(r->cfg, "model");
  if (!mcim_pki_name_valid(device) || !mcim_pki_name_valid(model)) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "device and model must be names of 1-63 characters [A-Za-z0-9._-]");
    goto cleanup;
  }
  if (key_identity(att, att_id, sizeof(att_id)) != MCIM_OK ||
      key_identity(ka, ka_id, sizeof(ka_id)) != MCIM_OK ||
      (storage && key_identity(storage, storage_id, sizeof(storage_id)) != MCIM_OK)) {
    mcim_http_reply_problem(resp, MCIM_KEY_INVALID, 0, "cannot read the TRE public keys");
    goto cleanup;
  }
  /* Key separation: a signing key must not also be the one packages are sealed to, nor
   * either of them the TPM's storage key. */
  if (strcmp(att_id, ka_id) == 0 ||
      (storage && (strcmp(storage_id, att_id) == 0 || strcmp(storage_id, ka_id) == 0))) {
    mcim_http_reply_problem(resp, MCIM_INVALID_ARGUMENT, 0,
                            "attestation_jwk, ka_jwk and tpm_storage_jwk must be different keys");
    goto cleanup;
  }
  /* The KA certificate certifies the storage key with it: the same KA key under another
   * storage key is another certificate, so another manufacture (the row keeps both). */
  size_t ka_len = strlen(ka_id);
  if (storage && (size_t)snprintf(ka_id + ka_len, sizeof(ka_id) - ka_len, "+tpm:%s",
                                  storage_id) >= sizeof(ka_id) - ka_len) {
    mcim_http_reply_problem(resp, MCIM_KEY_INVALID, 0, "cannot read the TRE public keys");
    goto cleanup;
  }
  /* A TPM's keys are certified as such only once its TPM is enrolled (enrol.c): the EK
   * certificate trusted, the credential activated by the AK, every key certified by it. */
  const json_t *tpm = json_object_get(req->json, "tpm");
  if (tpm || storage) {
    rc = mcim_m2mes_tpm_check(r, device, tpm, att, ka, storage, &ak, &pcid_slot, err, sizeof(err));
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "manufacture of %s refused: %s", device, err);
      mcim_http_reply_problem(resp, rc, 0, "%s", err);
      goto cleanup;
    }
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 0, "store unavailable");
    goto cleanup;
  }

  rc = drow_load(st, device, &d);
  if (rc == MCIM_NOT_FOUND) {
    rc = drow_create(r, st, device, model, att_id, ka_id);
    /* CONFLICT: the same device raced in (read it below), or the PCID pool is exhausted */
    if (rc == MCIM_OK || rc == MCIM_CONFLICT)
      rc = drow_load(st, device, &d);
    if (rc == MCIM_NOT_FOUND)
      rc = MCIM_CONFLICT;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0,
                            rc == MCIM_CONFLICT ? "no PCID left in pool %s" : "cannot record "
                            "device (pool %s)",
                            ms->prefix);
    goto cleanup;
  }
  if (reply_if_same(resp, &d, model, att_id, ka_id))
    goto cleanup;
  /* Not issued yet (an earlier attempt failed at a peer): the factory may have new keys or
   * another model by now; PCID, K and OPc stay, so the ICF sees the same registration. */
  if (strcmp(d.att_key, att_id) != 0 || strcmp(d.ka_key, ka_id) != 0 ||
      strcmp(d.model, model) != 0) {
    mcim_val_t u[] = {MCIM_TEXT(att_id), MCIM_TEXT(ka_id), MCIM_TEXT(model),
                      MCIM_INT(mcim_now()), MCIM_TEXT(device)};
    rc = mcim_store_exec(st,
                         "UPDATE devices SET att_key = ?, ka_key = ?, model = ?, updated = ?"
                         " WHERE device = ? AND state = 'new'",
                         u, MCIM_NPARAMS(u), NULL, NULL);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 0, "cannot update device %s", device);
      goto cleanup;
    }
    snprintf(d.model, sizeof(d.model), "%s", model);
  }
  rc = unseal_secrets(r, &d, k, opc);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "sealed PCID secrets of %s do not open", device);
    mcim_http_reply_problem(resp, rc, 0, "the PCID credential of %s cannot be read back", device);
    goto cleanup;
  }
  rc = issue_cert(ms, att, storage, ak, device, d.model, MCIM_CERT_TRE_ATTESTATION, &att_pem);
  if (rc == MCIM_OK)
    rc = issue_cert(ms, ka, storage, NULL, device, d.model, MCIM_CERT_TRE_KEY_AGREEMENT, &ka_pem);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot certify the TRE keys of %s", device);
    goto cleanup;
  }

  for (int attempt = 1;; attempt++) {
    rc = icf_register(r, &d, k, opc, resp);
    if (rc != MCIM_CONFLICT)
      break;
    /* The ICF has this PCID for another device (e.g. a pool share used twice): take the next
     * one; K and OPc stay, they were never accepted for that PCID. */
    if (attempt == ICF_ATTEMPTS) {
      mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                              "the ICF holds %d PCIDs of pool %s for other devices; check that"
                              " no other M2MES uses this pool",
                              ICF_ATTEMPTS, ms->prefix);
      goto cleanup;
    }
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "PCID %s is held by another device at the ICF",
                   d.pcid);
    char pcid[PCID_MAX_DIGITS + 1];
    rc = mcim_store_begin(st);
    if (rc == MCIM_OK)
      rc = pcid_allocate(ms, st, pcid, sizeof(pcid));
    if (rc == MCIM_OK) {
      mcim_val_t u[] = {MCIM_TEXT(pcid), MCIM_TEXT(device)};
      rc = mcim_store_exec(st, "UPDATE devices SET pcid = ? WHERE device = ? AND state = 'new'",
                           u, 2, NULL, NULL);
    }
    if (rc == MCIM_OK)
      rc = mcim_store_commit(st);
    if (rc != MCIM_OK) {
      mcim_http_reply_problem(resp, rc, 0, "cannot allocate another PCID for %s", device);
      goto cleanup;
    }
    snprintf(d.pcid, sizeof(d.pcid), "%s", pcid);
  }
  if (rc != MCIM_OK)
    goto cleanup; /* the problem is in resp */
  rc = pva_register(r, d.model, device, resp);
  if (rc == MCIM_OK && owner)
    rc = owner_register(r, device, owner, resp);
  if (rc != MCIM_OK)
    goto cleanup;

  rc = seal_credential(&d, k, opc, ka, pcid_slot, &jwe);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot seal the PCID credential to the TRE");
    goto cleanup;
  }
  answer = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s}", "device", device, "model", d.model, "pcid",
                     d.pcid, "pcid_expires", (json_int_t)d.expires, "attestation_cert", att_pem,
                     "ka_cert", ka_pem, "pcid_credential", jwe);
  answer_text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
  if (!answer_text) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "out of memory");
    goto cleanup;
  }
  /* Issued: keep the answer for retries, forget K and OPc. A concurrent identical request
   * may have finished first; then its answer is the one. */
  mcim_val_t u[] = {MCIM_TEXT(answer_text), MCIM_INT(mcim_now()), MCIM_TEXT(device),
                    MCIM_TEXT(att_id), MCIM_TEXT(ka_id)};
  rc = mcim_store_exec(st,
                       "UPDATE devices SET state = 'issued', answer = ?, k = NULL, opc = NULL,"
                       " updated = ? WHERE device = ? AND state = 'new' AND att_key = ? AND"
                       " ka_key = ?",
                       u, MCIM_NPARAMS(u), NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1) {
    rc = drow_load(st, device, &d);
    if (rc == MCIM_OK && reply_if_same(resp, &d, model, att_id, ka_id))
      goto cleanup;
    mcim_http_reply_problem(resp, MCIM_CONFLICT, 0,
                            "device %s changed during manufacture (concurrent request)", device);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot record device %s, send the same request again",
                            device);
    goto cleanup;
  }
  mcim_log_info("device %s (model %s) manufactured: PCID %s until %lld", device, d.model, d.pcid,
                (long long)d.expires);
  mcim_http_reply_json(resp, 201, answer);
  answer = NULL;

cleanup:
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
  drow_clear(&d);
  json_decref(answer);
  free(answer_text);
  free(jwe);
  free(att_pem);
  free(ka_pem);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(storage);
  EVP_PKEY_free(ak);
  json_decref(pcid_slot);
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

static const struct mcim_http_route m2mes_routes[] = {
    {"POST", "/v1/devices", h_devices, MCIM_ROUTE_PEER_CERT},
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
};
