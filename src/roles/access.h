/* Network attach (DESIGN.md section 2, access network model), shared by the VNO (PCID
 * credential, AVs from the RO's ICF, `restricted` scope) and every SHO (MCIM credential,
 * AVs from its own AuC, `full` scope): UMTS AKA with the device, then an access token.
 *
 *   POST /v1/attach {identity...}          -> {attach_id, rand, autn}
 *   POST /v1/attach/{attach_id} {res}      -> {scope, token}
 *   POST /v1/attach/{attach_id} {auts}     -> resynchronise, then a new challenge
 *
 * XRES is kept sealed in the store between the two calls, compared in constant time,
 * and an attach session can be answered once. The attach's trace rows (the challenge, the
 * VNO's call to the ICF) are kept with its session and traced, at the times they happened,
 * once the challenge is answered (a right RES, or an AUTS the AuC verified): whoever cannot
 * answer leaves no trace row. */
#ifndef MCIM_ROLES_ACCESS_H
#define MCIM_ROLES_ACCESS_H

#include "mcim/aka.h"
#include "mcim/role.h"

extern const char mcim_access_schema_sql[];
/* The attach's trace rows until the device answers (a migration after the schema's). */
extern const char mcim_access_rows_sql[];

struct mcim_access_net {
  const char *scope;    /* scope of the token: "restricted" (VNO) or "full" (SHO) */
  const char *id_field; /* the body field naming the identity: "pcid" or "imsi" */
  /* One AV for `identity`; also the device id it belongs to (64 bytes). */
  mcim_cause_t (*get_av)(struct mcim_role *r, const char *txn, const char *identity,
                         struct mcim_aka_av *av, char *device);
  /* Resynchronise `identity` from AUTS for RAND. */
  mcim_cause_t (*resync)(struct mcim_role *r, const char *txn, const char *identity,
                         const uint8_t rand[16], const uint8_t auts[14]);
  /* Instead of the two above, for an AV source whose calls are traced (the VNO's to the
   * ICF): the same, its trace rows given to mcim_access_trace_at with `rows`, which the
   * attach keeps until the device proves it holds the identity (NULL: traced at once). */
  mcim_cause_t (*get_av_rows)(struct mcim_role *r, const char *txn, const char *identity,
                              struct mcim_aka_av *av, char *device, json_t *rows);
  mcim_cause_t (*resync_rows)(struct mcim_role *r, const char *txn, const char *identity,
                              const uint8_t rand[16], const uint8_t auts[14], json_t *rows);
  /* Step numbers for the trace: attach request, authentication, connectivity (0: none). */
  int step_attach, step_auth, step_connect;
  /* Optional (NULL: nothing): what the AV source said about `identity` besides the AV, added
   * to the attach accept answer (the VNO: "renewal": "due" when the ICF flagged the PCID). */
  void (*accept_extra)(struct mcim_role *r, const char *identity, json_t *answer);
  /* Optional (NULL: nothing to check, iat_us this instance's clock): what the network
   * decides as it issues a token to `identity`, in the answer's transaction before the
   * session closes; any other cause than MCIM_OK refuses the token. The SHO: the subscription
   * is still live (a release between the challenge and the answer ended it), and *iat_us is
   * its decision clock's, which its DRF registrations' seq are on. */
  mcim_cause_t (*token_issue)(struct mcim_role *r, const char *identity, const char *device,
                              int64_t *iat_us);
};

/* A trace row of an attach: kept in `rows` (a JSON array, its body redacted) to be traced
 * once the device answers its challenge, at `time_us` (DESIGN.md section 10: whoever cannot
 * answer, a stranger who heard the identity on the air for all the network knows, leaves no
 * trace row); with `rows` NULL, traced at once (mcim_role_trace_at). */
void mcim_access_trace_at(struct mcim_role *r, json_t *rows, int64_t time_us, const char *txn,
                          int step, const char *from, const char *to, const char *msg,
                          const json_t *body, mcim_cause_t cause);

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
