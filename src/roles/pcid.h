/* PCID credential renewal, the part shared by the RO's DPF (`POST /v1/dpf/pcid`,
 * src/roles/ro/pcid.c) and the M2MES CCIF (`POST /v1/ccif/pcid`, src/roles/m2mes/ccif.c):
 * docs/protocol.md "PCID credential lifetime and renewal", docs/pcid-renewal.md.
 *
 *   request   {txn, device, request, tre_cert, ka_cert} with the device's access token
 *             (any scope); `request` is mcim-renew+jwt by the TRE attestation key (iss = sub
 *             = device, aud = this role, txn, claim `pcid` = the device's current PCID)
 *   answer    {package}: mcim-pcid+jwt by this role (iss = this role, sub = aud = device,
 *             txn) whose `jwe` is the new {pcid, k, opc, amf, expires} sealed to the TRE
 *             key-agreement key (ka_cert)
 *
 * Idempotent per (txn, device): the answer is stored (mcim_role_answer_put, step 0, what
 * "pcid/<device>") in the transaction that registers the new PCID, and a retry gets it back
 * once its certificates and TRE-signed request verified, before its jti is spent. The stored
 * answer holds K and OPc only inside the JWE to the TRE: nothing secret in clear.
 *
 * The pool: configuration keys `pcid_prefix` (digits, MCC + MNC and any pool share; PCIDs
 * are 15 digits) and `pcid_lifetime`, and a counter row (table pcid_counter, id 1) in the
 * role's own store. */
#ifndef MCIM_ROLES_PCID_H
#define MCIM_ROLES_PCID_H

#include <stdint.h>

#include "mcim/milenage.h"
#include "mcim/role.h"

#define MCIM_PCID_TYP_REQUEST "mcim-renew+jwt"
#define MCIM_PCID_TYP_PACKAGE "mcim-pcid+jwt"
#define MCIM_PCID_DIGITS 15
#define MCIM_PCID_STEP 0 /* the seed numbers no step for this: traced as step 0 */

/* Schema of the counter (one migration step of a role that allocates PCIDs). */
extern const char mcim_pcid_counter_sql[];
/* Schema of the per-device renewal limit (table pcid_grants: one row per device, the txn
 * and time of its last renewal granted here; docs/pcid-renewal.md section 2). */
extern const char mcim_pcid_grants_sql[];

/* A verified renewal request. */
struct mcim_pcid_request {
  char txn[33];
  char device[64];
  char pcid[24];         /* the claim: the device's current PCID, as the device sees it */
  char network[64];      /* who granted the access token */
  mcim_jose_key_t *ka;   /* the TRE key-agreement key (M2MES CA, CN = device) */
  json_t *tpm_slot;      /* a TPM device: the slot key its request offered, checked; K goes
                          * to it as "k_tpm" (docs/tre-tpm.md, "The PCID credential's K") */
};

/* A new PCID credential. Holds secrets: mcim_pcid_cred_wipe() it. */
struct mcim_pcid_cred {
  char pcid[MCIM_PCID_DIGITS + 1];
  uint8_t k[MCIM_MILENAGE_K_LEN];
  uint8_t opc[MCIM_MILENAGE_OP_LEN];
  uint8_t amf[MCIM_MILENAGE_AMF_LEN];
  int64_t expires;
};

/* Whether the network asked `device` to renew (the RO: the ICF's renewal-due flags): such a
 * renewal is not held back by pcid_renewal_interval. */
typedef bool (*mcim_pcid_due_fn)(mcim_store_t *st, const char *device);

/* The first half of the handler: the access token (any scope, device = its sub), the body,
 * then either the answer given before for this (txn, device) -- sent, returns false -- or the
 * TRE certificates, the request statement, the per-device limit (RENEWAL_TOO_EARLY with
 * Retry-After while another txn of the device was granted less than pcid_renewal_interval
 * ago, unless `due` says the network asked for it) and the request's jti (replay-checked) --
 * `out` filled, returns true. On false the response is complete (the stored answer or a
 * problem). `due` may be NULL. */
bool mcim_pcid_request_begin(struct mcim_role *r, const struct mcim_http_request *req,
                             struct mcim_http_response *resp, mcim_pcid_due_fn due,
                             struct mcim_pcid_request *out);

/* The limit, in the caller's open transaction that grants the renewal: records (device, txn,
 * now) unless another txn of the device was granted less than pcid_renewal_interval ago and
 * `due` is false; then MCIM_RENEWAL_TOO_EARLY and *wait the seconds left (concurrent
 * requests of two txns that both passed mcim_pcid_request_begin: one is granted). */
mcim_cause_t mcim_pcid_grant_take(struct mcim_role *r, mcim_store_t *st, const char *device,
                                  const char *txn, bool due, int *wait);
/* The body as mcim_pcid_request_begin checks it after the token (pure; fuzz_role_request). */
mcim_cause_t mcim_pcid_request_body(const json_t *body, char *err, size_t err_len);
void mcim_pcid_request_clear(struct mcim_pcid_request *rq);

/* Next PCID of this role's pool, inside the caller's open transaction. MCIM_CONFIG_INVALID
 * for a bad pcid_prefix, MCIM_CONFLICT when the pool is exhausted. */
mcim_cause_t mcim_pcid_allocate(struct mcim_role *r, mcim_store_t *st,
                                char pcid[MCIM_PCID_DIGITS + 1]);
/* Fresh secrets for `c` (random K, OPc from a random OP that is thrown away, AMF 8000) and
 * expires = now + pcid_lifetime; the PCID is the caller's. */
mcim_cause_t mcim_pcid_cred_secrets(struct mcim_role *r, struct mcim_pcid_cred *c);
void mcim_pcid_cred_wipe(struct mcim_pcid_cred *c);

/* The answer {package}: the credential sealed to rq->ka inside this role's mcim-pcid+jwt. */
mcim_cause_t mcim_pcid_answer(struct mcim_role *r, const struct mcim_pcid_request *rq,
                              const struct mcim_pcid_cred *c, json_t **answer);
/* Key of the stored answer ("pcid/<device>"). */
void mcim_pcid_answer_what(const char *device, char out[80]);

#endif
