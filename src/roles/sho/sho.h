/* SHO internals shared by its files (orders now; discard receipts and releases next). */
#ifndef MCIM_ROLES_SHO_H
#define MCIM_ROLES_SHO_H

#include <openssl/evp.h>
#include <stdbool.h>

#include "mcim/role.h"

/* The seed's step numbers of the SHO's messages, by procedure (the table heads provision.c). */
struct mcim_sho_steps {
  const char *procedure; /* "initial" (pristine 4-15) or "change" (old SHO 1-14) */
  int order, validate, verdict, package, report, reg;
};
const struct mcim_sho_steps *mcim_sho_steps_for(const char *procedure, const char *via);

struct mcim_sho_order {
  char txn[40];
  char device[64];
  char imsi[24];
  char state[16];
  char cause[48];
  char procedure[16];
  char via[16];
  bool released; /* the RO relayed the old SHO's release (change step 11) */
  char *ka_cert;
  char *owner_jwk; /* the owner key the RO vouched for (step 1) */
  char *record;    /* the RO-signed order record, shown to the PVA */
};

/* order.c: an IMSI of this PLMN, its MSIN `prefix` (may be NULL) then digits drawn at random,
 * at least MCIM_SHO_MSIN_RANDOM_MIN of them (else INVALID_ARGUMENT). */
#define MCIM_SHO_MSIN_RANDOM_MIN 6
mcim_cause_t mcim_sho_imsi_draw(const char *plmn, const char *prefix, char imsi[24]);

/* "change" (the old-SHO numbering) or "initial" (steps 4-15), for the DPF. */
const char *mcim_sho_dpf_procedure(const struct mcim_sho_order *o);

/* sho.c: the order's record. */
mcim_cause_t mcim_sho_order_load(mcim_store_t *st, const char *txn, struct mcim_sho_order *o);
void mcim_sho_order_clear(struct mcim_sho_order *o);
/* Compare-and-set of the order state, in the caller's transaction (MCIM_WRONG_STATE). */
mcim_cause_t mcim_sho_order_set_state(mcim_store_t *st, const char *txn, const char *from,
                                      const char *to, mcim_cause_t cause);
/* provision.c: apply the DPF's report (own transaction). */
mcim_cause_t mcim_sho_on_report(struct mcim_role *r, mcim_store_t *st,
                                const struct mcim_sho_order *o,
                                const struct mcim_sho_steps *steps, const char *result);

/* The SHO's decision clock: the microsecond of a decision the RO orders by (a DRF
 * registration's seq, an access token's iat_us), later than every earlier decision of any
 * instance of this SHO, as close to now as that allows: max(now, last + 1), kept in the
 * SHO's database under its writers' lock (the caller's transaction, or one of its own).
 * The instances' clocks need not agree. */
mcim_cause_t mcim_sho_decision_us(mcim_store_t *st, int64_t *us);

/* Queue a DRF registration of `device` at this SHO (caller's transaction). */
mcim_cause_t mcim_sho_register(struct mcim_role *r, mcim_store_t *st, const char *txn,
                               const char *device, const char *state, int step, const char *msg);
/* AuC pending -> active, order -> active, DRF `subscribed` (caller's transaction). */
mcim_cause_t mcim_sho_activate(struct mcim_role *r, mcim_store_t *st,
                               const struct mcim_sho_order *o, const char *from_state,
                               const struct mcim_sho_steps *steps);

/* order.c: the subscriber's order (step 1), anchored at the RO's owner record. */
void mcim_sho_order_post(void *ctx, const struct mcim_http_request *req,
                         struct mcim_http_response *resp);
void mcim_sho_order_get(void *ctx, const struct mcim_http_request *req,
                        struct mcim_http_response *resp);
/* What a device's two verified TRE certificates say of its TPM (docs/tre-tpm.md, "Enrolment"):
 * MCIM_OK with *storage and *ak NULL for a software TRE (no TPM extension), with both set
 * (EVP_PKEY_free) for an enrolled TPM (the KA certificate's storage key, the attestation
 * certificate's TPM mark and AK); MCIM_TPM_ENROLMENT_REQUIRED for any other mix: a TPM device
 * certified without enrolment, refused (its K could only be wrapped to the storage key, which
 * TPM2_Rewrap gives out in clear). Either out may be NULL. */
mcim_cause_t mcim_sho_tpm_device(const char *att_pem, const char *ka_pem, EVP_PKEY **storage,
                                 EVP_PKEY **ak);
/* Queue the validation request to the PVA (step 9 / 3), with the order record, in the
 * caller's transaction. */
mcim_cause_t mcim_sho_queue_validation(struct mcim_role *r, mcim_store_t *st,
                                       const struct mcim_sho_order *o,
                                       const struct mcim_sho_steps *steps);

/* expiry.c: abandoned orders fail (TIMEOUT) after `order_lifetime`, their MCIMs terminated;
 * stale attach sessions go (worker tick; true when it found something due). */
bool mcim_sho_expire(struct mcim_role *r);

/* What mcim_sho_orders_end_older ended, for its metrics and log lines once committed. */
#define MCIM_SHO_ENDED_MAX 64
struct mcim_sho_ended_order {
  char txn[40], state[16], procedure[16];
};
struct mcim_sho_ended {
  struct mcim_sho_ended_order o[MCIM_SHO_ENDED_MAX];
  size_t n; /* the first MCIM_SHO_ENDED_MAX of them */
};

/* In the caller's transaction: the device's orders of an owner epoch older than `epoch` (the
 * RO's count of handovers, kept with each order) failed with NOT_OWNER: those with no package
 * yet (ordered, validating), and the `provisioning` ones beyond the newest orders_open_max
 * (their MCIMs terminated). The new owner's order that brings the newer epoch calls it
 * (order.c), then mcim_sho_orders_ended_report after its commit. */
mcim_cause_t mcim_sho_orders_end_older(struct mcim_role *r, mcim_store_t *st, const char *device,
                                       int64_t epoch, struct mcim_sho_ended *ended);
void mcim_sho_orders_ended_report(const char *device, const struct mcim_sho_ended *ended);

/* change.c: the old SHO's side of a change and the pre-provisioned variant. */
void mcim_sho_discard(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp);
void mcim_sho_release(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp);
void mcim_sho_notification(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp);
/* A device statement (TRE attestation key, certificate `cert` from the M2MES CA, CN =
 * `device`) addressed to this SHO (aud = its name, typ, txn), checked at time `now` (0: the
 * wall clock; an RO relay: when the RO verified it): the discard receipt and the discard
 * notice of the handlers above (and tests/fuzz/fuzz_device_proof.c). */
mcim_cause_t mcim_sho_device_statement(struct mcim_role *r, const char *jws, const char *cert,
                                       const char *device, const char *typ, const char *txn,
                                       int64_t now, mcim_statement_t **out);
/* The bodies of the four handlers above as each checks it first, before the caller and any
 * store access (pure; tests/fuzz/fuzz_role_request.c). MCIM_OK, or the cause and `err`. */
mcim_cause_t mcim_sho_order_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_sho_discard_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_sho_release_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_sho_notification_body(const json_t *body, char *err, size_t err_len);
/* provision.c: the peer messages about an order: the DRF's ready (step 8), the PVA's verdict
 * (step 11 / 5), the DPF's report (step 15 / 13). */
void mcim_sho_device_ready(void *ctx, const struct mcim_http_request *req,
                           struct mcim_http_response *resp);
void mcim_sho_verdict(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp);
void mcim_sho_report(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp);
/* Their bodies, as peer_order_request checks them first (pure; fuzz_role_request). */
mcim_cause_t mcim_sho_ready_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_sho_verdict_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t mcim_sho_report_body(const json_t *body, char *err, size_t err_len);

#endif
