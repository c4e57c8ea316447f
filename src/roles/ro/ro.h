/* The registration operator (RO) and its three functions (TR 33.812 5.1.3):
 * ICF (initial connectivity: PCID subscriptions and their AuC, AVs for access networks),
 * DRF (discovery and registration: which SHO a device subscribes to or was ordered at),
 * DPF (download and provisioning: relays sealed MCIM packages, collects status, reports). */
#ifndef MCIM_ROLES_RO_H
#define MCIM_ROLES_RO_H

#include "mcim/http.h"
#include "mcim/role.h"

/* Each handler's body as it checks it before any store access (the fields of
 * mcim_jsonv_check and what the body alone can refuse; not the caller, token or store): pure,
 * the handler and tests/fuzz/fuzz_role_request.c call these. MCIM_OK, or the cause and `err`. */
mcim_cause_t mcim_icf_pcids_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_icf_pcids_replace_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_icf_avs_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_icf_resync_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_order_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_register_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_discover_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_owner_register_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_owner_handover_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_drf_owner_query_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_dpf_package_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_dpf_fetch_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_dpf_status_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_dpf_release_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_dpf_notice_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_ro_admin_pcid_renew_body(const json_t *body, char *err, size_t err_len);

/* icf.c */
void mcim_icf_pcids(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_icf_avs(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_icf_resync(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* drf.c */
void mcim_drf_register(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_drf_discover(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_drf_order(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_drf_authorise(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* owners.c: the owner records that anchor orders */
void mcim_drf_owner_register(void *ctx, const struct mcim_http_request *req,
                             struct mcim_http_response *resp);
void mcim_drf_owner_handover(void *ctx, const struct mcim_http_request *req,
                             struct mcim_http_response *resp);
void mcim_drf_owner_query(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp);
/* The recorded owner key of `device` (MCIM_OWNER_UNKNOWN if none); `jwk` (may be NULL) gets
 * its public JWK text, free() it. */
mcim_cause_t mcim_ro_owner_key(mcim_store_t *st, const char *device, mcim_jose_key_t **key,
                               char **jwk);

/* An order the DRF holds (table drf_orders), keyed by txn. */
struct mcim_drf_order {
  char txn[40];
  char device[64];
  char sho[64];
  char endpoint[256];
  char procedure[16];
  char via[16];
  char state[16]; /* ordered -> authorised -> installed | failed; expired */
  char *record;   /* the RO-signed order record (mcim-order-record+jwt) */
  int64_t expires;
};
mcim_cause_t mcim_drf_order_load(mcim_store_t *st, const char *txn, struct mcim_drf_order *o);
void mcim_drf_order_clear(struct mcim_drf_order *o);
/* The live order of `txn` if it is for `device` and (unless NULL) at `sho`: MCIM_NOT_PARTY
 * when there is none such (unknown txn included: a stranger learns nothing), MCIM_NOT_ORDERED
 * when it expired. */
mcim_cause_t mcim_drf_order_of_party(mcim_store_t *st, const char *txn, const char *device,
                                     const char *sho, struct mcim_drf_order *o);
/* Worker tick: orders past order_lifetime expire, the DPF drops their packages. */
void mcim_drf_expire(struct mcim_role *r);
/* In the caller's transaction: the live orders past their expiry (of `device`, or of all
 * when NULL) marked expired and their DPF packages dropped; how many of each. */
mcim_cause_t mcim_drf_expire_due(mcim_store_t *st, const char *device, int64_t now,
                                 int64_t *orders, int64_t *packages);
/* "change" (old-SHO numbering) or "initial" (steps 4-15), as mcim_dpf_steps_for takes it. */
const char *mcim_drf_dpf_procedure(const struct mcim_drf_order *o);

/* dpf.c */
/* The package of step 12 (via_drf) or change step 6, with the PVA's verdict. */
void mcim_dpf_accept_package(struct mcim_role *r, const struct mcim_http_request *req,
                             struct mcim_http_response *resp, bool via_drf);
void mcim_dpf_package_put(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_dpf_package_fetch(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_dpf_status(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* release.c */
void mcim_dpf_release(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* relay.c: device notices for an SHO the device holds no live token of (DESIGN.md 10) */
void mcim_dpf_notice(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* The own checks of a TRE-signed statement of `device` addressed to SHO `to`, no store: the
 * TRE's signature (certificate `cert` from the M2MES CA, CN = `device`), aud = `to`, typ, txn
 * (the functions below, after their DRF look-up; tests/fuzz/fuzz_device_proof.c). */
mcim_cause_t mcim_ro_verify_statement(struct mcim_role *r, const char *device, const char *to,
                                      const char *txn, const char *typ, const char *jws,
                                      const char *cert, mcim_statement_t **out);
/* Verify a TRE-signed statement of `device` (certificate `cert`, M2MES CA) addressed to SHO
 * `to` (typ, txn), then that the DRF links `to` to that device: a live entry for a switch
 * notice (MCIM_REGISTRATION_PENDING with only an install of its MCIM on record), an entry in
 * any state or an install on record for a discard receipt; MCIM_SHO_NOT_LINKED otherwise. */
mcim_cause_t mcim_ro_device_statement(struct mcim_role *r, const char *device, const char *to,
                                      const char *txn, const char *typ, const char *jws,
                                      const char *cert, mcim_statement_t **out);
/* Whether the RO's own records link SHO `sho` to `device`, as an old SHO of a change must be
 * (release.c): a DRF entry of `sho` in any state, or an install of its package the device's
 * TRE reported. MCIM_NOT_PARTY if not. */
mcim_cause_t mcim_ro_sho_linked(struct mcim_role *r, const char *device, const char *sho);
/* Queue its relay to `to` (caller's transaction; a long retry budget): a discard receipt to
 * POST /v1/discards, a notice to POST /v1/notifications, in the device's chain of switch
 * notices of that txn when `chained` (relay.c). */
mcim_cause_t mcim_ro_relay_queue(struct mcim_role *r, mcim_store_t *st, const char *to,
                                 const char *typ, const char *txn, const char *device,
                                 const char *jws, const char *cert, const char *msg,
                                 bool chained);
/* pcid.c: PCID renewal (DPF, ICF, admin push) */
extern const char mcim_ro_pcid_schema_sql[];
void mcim_dpf_pcid(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_ro_admin_pcid_renew(void *ctx, const struct mcim_http_request *req,
                              struct mcim_http_response *resp);
/* POST /v1/icf/pcids with "replaces" (the M2MES renewed a PCID), called by mcim_icf_pcids. */
void mcim_icf_pcids_replace(struct mcim_role *r, const struct mcim_http_request *req,
                            struct mcim_http_response *resp);
/* Adds "renewal_due": true to an AV answer when `pcid` is flagged. */
void mcim_icf_renewal_note(mcim_store_t *st, const char *pcid, json_t *answer);

/* Names that are network roles but not SHOs (an SHO is any other operators' CA holder). */
bool mcim_ro_is_sho_name(const char *name);

/* Step numbers of the DPF's messages, by procedure (seed numbering). */
struct mcim_dpf_steps {
  const char *procedure; /* "initial" or "change" */
  int package, delivery, status, report;
};
const struct mcim_dpf_steps *mcim_dpf_steps_for(const char *procedure);

#endif
