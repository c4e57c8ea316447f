/* Network attach (DESIGN.md section 2, access network model), shared by the VNO (PCID
 * credential, AVs from the RO's ICF, `restricted` scope) and every SHO (MCIM credential,
 * AVs from its own AuC, `full` scope): UMTS AKA with the device, then an access token.
 *
 *   POST /v1/attach {identity...}          -> {attach_id, rand, autn}
 *   POST /v1/attach/{attach_id} {res}      -> {scope, token}
 *   POST /v1/attach/{attach_id} {auts}     -> resynchronise, then a new challenge
 *
 * XRES is kept sealed in the store between the two calls, compared in constant time,
 * and an attach session can be answered once. */
#ifndef MCIM_ROLES_ACCESS_H
#define MCIM_ROLES_ACCESS_H

#include "mcim/aka.h"
#include "mcim/role.h"

extern const char mcim_access_schema_sql[];

struct mcim_access_net {
  const char *scope;    /* scope of the token: "restricted" (VNO) or "full" (SHO) */
  const char *id_field; /* the body field naming the identity: "pcid" or "imsi" */
  /* One AV for `identity`; also the device id it belongs to (64 bytes). */
  mcim_cause_t (*get_av)(struct mcim_role *r, const char *txn, const char *identity,
                         struct mcim_aka_av *av, char *device);
  /* Resynchronise `identity` from AUTS for RAND. */
  mcim_cause_t (*resync)(struct mcim_role *r, const char *txn, const char *identity,
                         const uint8_t rand[16], const uint8_t auts[14]);
  /* Step numbers for the trace: attach request, authentication, connectivity (0: none). */
  int step_attach, step_auth, step_connect;
  /* Optional (NULL: nothing): what the AV source said about `identity` besides the AV, added
   * to the attach accept answer (the VNO: "renewal": "due" when the ICF flagged the PCID). */
  void (*accept_extra)(struct mcim_role *r, const char *identity, json_t *answer);
};

/* Delete attach sessions older than attach_lifetime (a worker tick): unauthenticated attempts
 * leave nothing that lasts. */
void mcim_access_purge(struct mcim_role *r);

/* The bodies of the attach and of the answer to its challenge as the two handlers check
 * them first (pure; tests/fuzz/fuzz_role_request.c). `id_field`: the net's. */
mcim_cause_t mcim_access_attach_body(const char *id_field, const json_t *body, char *err,
                                     size_t err_len);
mcim_cause_t mcim_access_answer_body(const json_t *body, char *err, size_t err_len);
void mcim_access_attach(struct mcim_role *r, const struct mcim_access_net *net,
                        const struct mcim_http_request *req, struct mcim_http_response *resp);
void mcim_access_answer(struct mcim_role *r, const struct mcim_access_net *net,
                        const struct mcim_http_request *req, struct mcim_http_response *resp);

#endif
