/* PVA internals shared by pva.c (routes, store, outbox), quote.c (the quote handler) and
 * validate.c (the evidence check, pure: no I/O, so it can be tested without sockets). */
#ifndef MCIM_ROLES_PVA_H
#define MCIM_ROLES_PVA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "mcim/jose.h"
#include "mcim/store.h"
#include "roles/peer_limit.h"

/* Claims of a verified quote (mcim-quote+jwt) that carry the evidence:
 *   nonce  the PVA's nonce (64 hex), model (name), log [{"component", "digest"}], digest (64 hex).
 * Checks the form of the evidence and that the nonce is `nonce`: MCIM_QUOTE_INVALID with the
 * reason in `err`. On success *model and *log point into the statement. */
mcim_cause_t pva_quote_evidence(const mcim_statement_t *quote, const char *nonce,
                                const char **model, const json_t **log, char *err,
                                size_t errlen);

/* Replay `log` into the chain and compare with the quoted digest, then match every
 * measurement against `rims` ({component: [digest hex, ...]} of the model). Returns a new
 * array of mismatches [{"component", "digest"?, "reason"}] (empty: the platform is good),
 * or NULL when out of memory. A component without RIM, a digest that is no RIM of its
 * component, a RIM component the log does not measure, an empty log and a log that does
 * not replay into the quoted digest are all mismatches. */
json_t *pva_match(const char *model, const json_t *log, const char *quoted_digest,
                  const json_t *rims);

/* A TPM device's evidence, the request's "tpm" member (quote_tpm.c): its TPM2_Quote must be
 * signed by the restricted attestation key the M2MES enrolled (MCIM_OID_TPM_AK in the
 * verified attestation certificate `tre_cert_pem`, beside the TPM mark and the model; a
 * certificate without all three is MCIM_TPM_ENROLMENT_REQUIRED) over `nonce` (this
 * validation's, hex), and its log replay to the quoted PCR; each refusal its own cause
 * (MCIM_ATTEST_MISSING without `tpm`; mcim_attest_verify: ATTEST_*), the reason in `err`.
 * `key` is the AK only when `tre_cert_pem` is NULL (tests, the fuzz target). On MCIM_OK,
 * *log = the TPM's log as [{"component", "digest"}] and `digest` its chain, for pva_match(),
 * and `model` the model the certificate names (empty without a certificate). */
mcim_cause_t pva_tpm_evidence(const mcim_jose_key_t *key, const char *tre_cert_pem,
                              const json_t *tpm, const char *nonce, json_t **log, char digest[65],
                              char model[64], char *err, size_t errlen);
/* Whether the (already verified) attestation certificate says the key is in a TPM
 * (MCIM_OID_TPM_ATTESTATION): then the quote is judged by pva_tpm_evidence() alone. */
bool pva_tpm_required(const char *tre_cert_pem);

/* One line for people (the device's problem detail): "os: digest 3f2a9c01... is not a RIM". */
void pva_mismatch_summary(const json_t *mismatches, const char *model, char *out, size_t len);

/* POST /v1/revocations (revocations.c): an SHO's ended subscription, its tokens revoked. */
struct mcim_role;
struct mcim_http_request;
struct mcim_http_response;
void pva_revocation(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp);
/* Its body as it checks it after the caller (pure; tests/fuzz/fuzz_role_request.c). */
mcim_cause_t pva_revocation_body(const json_t *body, char *err, size_t err_len);
/* pva.c, quote.c: the bodies of POST /v1/rims, /v1/validations and
 * /v1/validations/{id}/quote as their handlers check them first (pure; fuzz_role_request). */
mcim_cause_t pva_rims_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t pva_validation_body(const json_t *body, char *err, size_t err_len);
mcim_cause_t pva_quote_body(const json_t *body, char *err, size_t err_len);
/* MCIM_TOKEN_REVOKED when `network` revoked its tokens for `imsi`, else MCIM_OK. */
mcim_cause_t pva_token_live(struct mcim_role *r, const char *network, const char *imsi);

/* pva.c: the PVA's limit of revocations (NULL before pva_start). */
struct mcim_peer_limit *pva_revocation_limit(struct mcim_role *r);

/* ---- pva.c, for quote.c ---- */
#define STEP_VALIDATE 9 /* default step of POST /v1/validations */

/* A validation's row. */
struct vrow {
  char id[33];
  char txn[33];
  int step;
  char device[64];
  char sho[64];
  char nonce[65];
  char state[16];
  int64_t expires;
  int64_t fetched;
  char quote_sha[65];
  char last_cause[40];
};

/* Validation `id` into *v. */
mcim_cause_t pva_vrow_load(mcim_store_t *st, const char *id, struct vrow *v);
/* Answer with a problem and, when the procedure is known, record the failed message. */
void pva_fail(struct mcim_role *r, struct mcim_http_response *resp, const char *txn, int step,
              const char *from, const char *to, const char *msg, mcim_cause_t cause,
              const char *fmt, ...) __attribute__((format(printf, 9, 10)));
/* A stored answer (idempotent retry): a problem when its status says so. */
void pva_reply_stored(struct mcim_http_response *resp, int status, json_t *answer);

/* POST /v1/validations/{id}/quote (quote.c): the TRE's quote, the verdict. */
void pva_quote(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);

#endif
