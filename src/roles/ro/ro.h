/* The registration operator (RO) and its three functions (TR 33.812 5.1.3):
 * ICF (initial connectivity: PCID subscriptions and their AuC, AVs for access networks),
 * DRF (discovery and registration: which SHO a device subscribes to or was ordered at),
 * DPF (download and provisioning: relays sealed MCIM packages, collects status, reports). */
#ifndef MCIM_ROLES_RO_H
#define MCIM_ROLES_RO_H

#include "mcim/http.h"
#include "mcim/role.h"

/* icf.c */
void mcim_icf_pcids(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_icf_avs(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_icf_resync(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* drf.c */
void mcim_drf_register(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_drf_discover(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* dpf.c */
void mcim_dpf_package_put(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_dpf_package_get(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_dpf_status(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* release.c */
void mcim_dpf_release(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* relay.c: device notices for an SHO the device holds no live token of (DESIGN.md 10) */
void mcim_dpf_notice(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);
/* Verify a TRE-signed statement of `device` (certificate `cert`, M2MES CA) addressed to SHO
 * `to` (typ, txn), `to` being an SHO the DRF holds an entry of for that device
 * (MCIM_NOT_PARTY otherwise). */
mcim_cause_t mcim_ro_device_statement(struct mcim_role *r, const char *device, const char *to,
                                      const char *txn, const char *typ, const char *jws,
                                      const char *cert, mcim_statement_t **out);
/* Queue its relay to `to` (caller's transaction; a long retry budget): a discard receipt to
 * POST /v1/discards, a notice to POST /v1/notifications. */
mcim_cause_t mcim_ro_relay_queue(struct mcim_role *r, mcim_store_t *st, const char *to,
                                 const char *typ, const char *txn, const char *device,
                                 const char *jws, const char *cert, const char *msg);
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
