/* The role runtime: what every network role instance (`mcimd --role KIND`) has in
 * common. A role kind (ro, sho, pva, vno, m2mes) is a table: its configuration keys,
 * its schema, its routes, its start/stop hooks and an optional periodic tick. The
 * runtime gives it the rest: configuration loading, the HTTPS server, a store and an
 * HTTP client per thread, the storage key, the signing key, the peer directory,
 * trace recording, idempotent answers and the outbox worker.
 *
 * Daemons are stateless over their store (DESIGN.md section 7): anything that must
 * survive a restart or be shared between instances goes through the store. */
#ifndef MCIM_ROLE_H
#define MCIM_ROLE_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "mcim/config.h"
#include "mcim/http.h"
#include "mcim/jose.h"
#include "mcim/seal.h"
#include "mcim/store.h"

struct mcim_role;

struct mcim_role_kind {
  const char *kind;    /* "ro", "sho", ... */
  const char *summary; /* one line for --help */
  /* Keys of this kind, added to the common ones (mcim_role_common_spec). */
  const mcim_config_spec_t *spec;
  size_t nspec;
  /* Schema of this kind (component = kind). */
  const mcim_migration_t *migrations;
  size_t nmigrations;
  const struct mcim_http_route *routes;
  size_t nroutes;
  /* Called after config, keys, store and schema are ready, before the server starts;
   * may set r->state. */
  mcim_cause_t (*start)(struct mcim_role *r);
  /* Called after the server stopped. */
  void (*stop)(struct mcim_role *r);
  /* Called by the worker thread at each of its polls of the store (after the outbox): every
   * `tick_ms`, less often while the polls find nothing (doubling up to `idle_tick_max_ms`,
   * src/roles/runtime_worker.c). Returns true when it found something due (work done, or a full
   * batch that may have left more): the next poll then comes `tick_ms` later. */
  bool (*tick)(struct mcim_role *r);
  /* Records of finished procedures this kind deletes once they are `record_retention` old
   * (NULL-terminated; may be NULL): each statement takes that cutoff (seconds) as its one
   * parameter; they run in order, in one transaction, with the common ones (the trace). */
  const char *const *purge;
  /* The kind has an AuC (the SHO; the RO for its ICF): it takes the AuC backend's keys
   * (src/roles/auc_config.h) and the runtime makes r->auc from them. */
  bool auc;
};

/* The kinds this build knows (src/roles/kinds.c); NULL if none has that name. */
const struct mcim_role_kind *mcim_role_kind_find(const char *kind);
extern const struct mcim_role_kind *const mcim_role_kinds[];

/* Whether a certificate name (CN) is an SHO: any valid name that is not one of the lab's
 * fixed role names (ro, vno, pva, m2mes), the admin client, the subscriber or a TRE
 * credential name. One rule for every role. */
bool mcim_role_name_is_sho(const char *name);
/* Whether `name` is an access network (issues access tokens): the VNO or an SHO. */
bool mcim_role_name_is_access_network(const char *name);
/* Whether an instance of `kind` may be called `name`: what its peers make of the name (the
 * rule above) must be that kind, or they would take it for another (an RO or a second VNO
 * named like an SHO would be one to every peer, and could grant full access). The reason in
 * `err` when not. */
bool mcim_role_name_fits_kind(const char *kind, const char *name, char *err, size_t errlen);

/* Keys every role has (name, listen_addr, listen_port, tls_cert, tls_key, operators_ca,
 * m2mes_ca, database, storage_key, peers, threads, lifetimes, outbox retry policy, log). */
extern const mcim_config_spec_t mcim_role_common_spec[];
extern const size_t mcim_role_common_nspec;

struct mcim_role {
  const struct mcim_role_kind *kind;
  const char *name; /* instance name: "ro", "sho-a" (from the config) */
  mcim_config_t *cfg;
  mcim_storage_key_t *storage_key;
  mcim_jose_key_t *sign_key; /* the role's TLS key, also signing its statements (kid = name) */
  X509 *cert;                /* the role's certificate (operators' CA) */
  char *cert_pem;
  X509 *operators_ca;
  X509 *m2mes_ca;
  json_t *peers;             /* {"ro": "https://127.0.0.1:port", ...} */
  struct mcim_http_server *server;
  void *state;               /* the kind's own */
  /* where the SHO and the RO's ICF get their vectors (src/roles/auc_backend.h): the built-in
   * AuC, in this role's store with its storage key */
  struct mcim_auc_backend *auc;
  /* private to the runtime */
  struct mcim_role_priv *priv;
};

/* Load `config_path` for `kind`, open everything, start the server and the worker.
 * Errors are printed to the log with their cause. */
mcim_cause_t mcim_role_start(const struct mcim_role_kind *kind, const char *config_path,
                             struct mcim_role **out);
/* Stop the server and the worker, run kind->stop, free everything. */
void mcim_role_free(struct mcim_role *r);
/* Validate a configuration only (mcimd --check-config): problems go to `err`. */
mcim_cause_t mcim_role_check_config(const struct mcim_role_kind *kind, const char *config_path,
                                    char *err, size_t errlen);
/* Print the configuration reference of a kind. */
void mcim_role_describe_config(const struct mcim_role_kind *kind, FILE *out);

/* The calling thread's store handle: taken from the role's pool of connections on first use
 * (opened when the pool is empty) and held until mcim_role_store_release(), which the server
 * calls after each request and the worker after each round. */
mcim_store_t *mcim_role_store(struct mcim_role *r);
/* Give the calling thread's connection back to the pool (rolled back first if a transaction
 * was left open, which is a bug and logged). */
void mcim_role_store_release(struct mcim_role *r);
/* The calling thread's HTTP client: mTLS with the role's certificate, pins the operators' CA. */
struct mcim_http_client *mcim_role_client(struct mcim_role *r);
/* Base URL of a peer instance from the peer directory, NULL if unknown. */
const char *mcim_role_peer_url(struct mcim_role *r, const char *peer);
/* The replay cache of this role (store-backed, shared by all its instances). */
const mcim_replay_cache_t *mcim_role_replay(struct mcim_role *r);
/* Lifetimes from the configuration, seconds. */
int64_t mcim_role_statement_lifetime(struct mcim_role *r);
int64_t mcim_role_token_lifetime(struct mcim_role *r);

/* Record one trace event in this role's store (the body is redacted before it is stored).
 * Never fails the caller: a trace that cannot be written is logged. */
void mcim_role_trace(struct mcim_role *r, const char *txn, int step, const char *from,
                     const char *to, const char *msg, const json_t *body, mcim_cause_t cause);
/* The same with the time the message was sent (microseconds since the epoch). */
void mcim_role_trace_at(struct mcim_role *r, int64_t time_us, const char *txn, int step,
                        const char *from, const char *to, const char *msg, const json_t *body,
                        mcim_cause_t cause);
/* A refusal (cause not MCIM_OK), counted against traced_refusals_per_hour under `key` rather
 * than the message's other end: where that end is a name the caller chose (an attach's
 * `device`) or a peer asking for many devices (the VNO at the ICF), the identity it was
 * about, so that a flood naming it uses up no one else's count. */
void mcim_role_trace_refusal(struct mcim_role *r, const char *key, const char *txn, int step,
                             const char *from, const char *to, const char *msg,
                             mcim_cause_t cause);

/* A per-party bound on rows in the store (DESIGN.md section 10): `sql` selects COUNT(*) and
 * the MIN of a time (seconds) over the party's live rows. Below `max`: MCIM_OK. At it: `busy`,
 * *wait the seconds until that earliest time plus `lapse` (when the oldest stops counting),
 * at least 1. A store failure is its cause, never `busy`. */
mcim_cause_t mcim_role_count_below(mcim_store_t *st, const char *sql, const mcim_val_t *params,
                                   size_t nparams, int64_t max, int64_t lapse, mcim_cause_t busy,
                                   int64_t *wait);

/* The `seq` claim of a device's suspend or resume notice: its place in the order its TRE
 * signed them (notify_check, src/tre/tre_sign.c), which the SHO applies only upward. 0 when
 * absent or not a positive integer: refused CLAIM_MISSING by the RO's relay and the SHO. */
json_int_t mcim_notice_seq(const mcim_statement_t *stmt);

/* Idempotent answers, per (txn, step, what): a handler that changes state first looks up
 * the answer it gave before; after success it stores the answer in the same transaction as
 * the state change. get: MCIM_OK with *status and *answer (caller decrefs), or MCIM_NOT_FOUND. */
mcim_cause_t mcim_role_answer_get(mcim_store_t *st, const char *txn, int step, const char *what,
                                  int *status, json_t **answer);
mcim_cause_t mcim_role_answer_put(mcim_store_t *st, const char *txn, int step, const char *what,
                                  int status, const json_t *answer);

/* Outbox (DESIGN.md section 9): queue a POST to `peer` at `path`, in the caller's open
 * transaction, so the message exists if and only if the state change committed. The
 * worker delivers it with bounded retries and exponential backoff; the receiver
 * deduplicates by (txn, step). The delivery is traced as (step, r->name -> peer, msg). */
mcim_cause_t mcim_role_outbox_put(struct mcim_role *r, mcim_store_t *st, const char *peer,
                                  const char *path, const json_t *body, const char *txn, int step,
                                  const char *msg);
/* The same with a retry budget of its own: `max_attempts` deliveries (0: the configured
 * outbox_max_attempts), or MCIM_OUTBOX_UNTIL_RETENTION. */
mcim_cause_t mcim_role_outbox_put_budget(struct mcim_role *r, mcim_store_t *st, const char *peer,
                                         const char *path, const json_t *body, const char *txn,
                                         int step, const char *msg, int64_t max_attempts);
/* The budget of a message a procedure cannot do without, for a peer that may be away for
 * long (the RO telling an old SHO what happened while it was down, the step-8 announcement):
 * retried at the longest backoff (a minute) until record_retention after it was queued, as
 * long as the procedure's other records are kept; a refusal (4xx) still ends it. */
#define MCIM_OUTBOX_UNTIL_RETENTION (-1)
/* The same in a chain: messages written with one `chain` key are sent in the order they were
 * written. Each waits while the one written before it in its chain is pending (until it is
 * delivered, given up or purged): the worker holds it, without counting an attempt, with
 * `last_cause` EARLIER_UNDELIVERED, in whichever instance has it. The RO chains a device's
 * relayed switch notices of one txn (relay.c: the undo's resume of the current SHO after
 * the target's suspend). NULL `chain`: as the one above. */
mcim_cause_t mcim_role_outbox_put_chained(struct mcim_role *r, mcim_store_t *st,
                                          const char *peer, const char *path,
                                          const json_t *body, const char *txn, int step,
                                          const char *msg, int64_t max_attempts,
                                          const char *chain);

/* The longest an owner's statement (order, order query, handover) may be valid: the roles
 * keep its jti until it expires (DESIGN.md section 10: no pending thing lives as long as a
 * party likes). The owner's tools sign them for minutes. */
#define MCIM_OWNER_STATEMENT_MAX_LIFETIME (24 * 3600)
/* Whether the outbox gives up on a message after a failed delivery (pure): `attempts`
 * deliveries tried so far, the message's `max_attempts` (0: `configured`, or
 * MCIM_OUTBOX_UNTIL_RETENTION: `age_ms` since it was queued reached `retention_ms`). */
bool mcim_outbox_gives_up(int64_t attempts, int64_t max_attempts, int64_t configured,
                          int64_t age_ms, int64_t retention_ms);
/* What one delivery came to, from the answer's HTTP status (0: none came) and its cause
 * (pure; the rule and why: src/roles/outbox.c). */
typedef enum mcim_outbox_outcome {
  MCIM_OUTBOX_DELIVERED, /* 2xx, or 409 CONFLICT, REPLAY, NOTICE_OVERTAKEN or
                            REGISTRATION_OVERTAKEN: the receiver has it, or something newer */
  MCIM_OUTBOX_RETRY,     /* no answer, 5xx, any other 409 (WRONG_STATE, DEVICE_BUSY, unread) */
  MCIM_OUTBOX_REFUSED,   /* any other 4xx: final */
} mcim_outbox_outcome_t;
mcim_outbox_outcome_t mcim_outbox_outcome_for(long status, mcim_cause_t cause);
/* Messages not yet delivered (for tests and metrics). */
mcim_cause_t mcim_role_outbox_pending(struct mcim_role *r, int64_t *count);
/* Wake the worker (after queueing): now, or from a request handler once its answer is sent
 * (mcim_http_after_reply). */
void mcim_role_wake(struct mcim_role *r);

/* Signing helper: a statement by this role (iss = r->name, kid = r->name) about `sub`,
 * for `aud`, valid for the statement lifetime. `extra` may be NULL. */
mcim_cause_t mcim_role_sign(struct mcim_role *r, const char *typ, const char *sub,
                            const char *aud, const char *txn, json_t *extra, char **jws);

/* Peer identity: the public key of a network role from its certificate (PEM), verified
 * against the operators' CA with the expected name. */
mcim_cause_t mcim_role_peer_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                         const char *name, mcim_jose_key_t **out);
/* The statement key of network role `name`: fetched once from its GET /v1/certificate,
 * verified against the operators' CA (CN = name), then cached. */
mcim_cause_t mcim_role_peer_key(struct mcim_role *r, const char *name,
                                const mcim_jose_key_t **out);
/* Fetch and verify the keys of the peers named in `names` (a JSON array of strings) that are
 * not cached yet, without logging failures: the number still missing. */
size_t mcim_role_peer_keys_prefetch(struct mcim_role *r, const json_t *names);

/* The verified certificate (PEM) of network role `name`, as mcim_role_peer_key fetched it;
 * free(). */
mcim_cause_t mcim_role_peer_cert_pem(struct mcim_role *r, const char *name, char **pem);

/* The "iss" of a compact JWS, read WITHOUT verification, only to choose the key to verify
 * it with. */
mcim_cause_t mcim_jws_peek_iss(const char *jws, char *iss, size_t iss_len);
/* Any claim, unverified (same caveat): mcim_jws_peek_claim, include/mcim/jose.h. */

/* What a valid access token says (DESIGN.md section 2: access network model). */
struct mcim_access {
  char network[64]; /* who issued it: "vno" or an SHO name */
  char device[64];  /* the device id (sub) */
  char scope[16];   /* "restricted" or "full" */
  char imsi[24];    /* the identity that attached (PCID or IMSI) */
  int64_t iat;      /* when it was issued */
  int64_t iat_us;   /* the same in microseconds (iat_us claim; iat * 10^6 without it) */
};
/* Check the request's bearer token (DESIGN.md section 10): signed by an access network of
 * the operators' CA, typ mcim-access+jwt, aud = its issuer, not expired; honoured only at
 * its issuer or at a role that is not an access network (RO, PVA, M2MES), else
 * MCIM_TOKEN_WRONG_ISSUER; with the scope its issuer may grant (the VNO: restricted, an
 * SHO: full), else MCIM_SCOPE_NOT_GRANTABLE. At the issuing SHO the identity must still be
 * this device's live subscription (active or standby), else MCIM_TOKEN_REVOKED — `out` is
 * filled then, so that a retry of the very request that ended the subscription can be
 * recognised. At the RO an SHO's token issued before that SHO released the device's registry
 * entry is MCIM_TOKEN_REVOKED as well. `need_full`: a restricted token is refused with
 * MCIM_SCOPE_RESTRICTED.
 * MCIM_NO_ACCESS when there is no token. */
mcim_cause_t mcim_role_check_access(struct mcim_role *r, const struct mcim_http_request *req,
                                    bool need_full, struct mcim_access *out);
/* The same with the token's times checked at `now` (mcim_role_check_access is it at
 * mcim_now()): tests give the time instead of waiting for it. */
mcim_cause_t mcim_role_check_access_at(struct mcim_role *r, const struct mcim_http_request *req,
                                       bool need_full, int64_t now, struct mcim_access *out);
/* After the answer to a refusal of mcim_role_check_access (`rc`) is set: when `rc` refuses the
 * token itself, the answer carries RFC 6750's challenge (`WWW-Authenticate: Bearer`, error
 * "invalid_token", "insufficient_scope", none without a token). The device tells by it a
 * refused token (attach again) from the same cause of its TRE's statement or proof on the same
 * route (JWS_BAD_SIGNATURE, TOKEN_EXPIRED...), which attaching again does not mend. A
 * failure that is not the token's (the store, a peer's key not fetched) carries none. */
void mcim_role_access_challenge(struct mcim_http_response *resp, mcim_cause_t rc);
/* The answer to a refusal of mcim_role_check_access: the problem ("<what> needs network
 * access") and the challenge. */
void mcim_role_reply_access_refused(struct mcim_http_response *resp, mcim_cause_t rc, int step,
                                    const char *what);

/* The device's own request, beside its token, where the answer is another operator's
 * business (the DRF's discovery, the DPF's package, the PVA's nonce): `body` carries `proof`, a
 * MCIM_DEVICE_REQUEST_TYP statement its TRE signed with the attestation key (iss = sub =
 * `device`, aud = this role, `txn`, claim "for" = `what`), and `tre_cert`, that key's
 * certificate (M2MES CA, CN = `device`). MCIM_FIELD_MISSING without them, else the cause of
 * the first check that fails (CERT_INVALID, JWS_BAD_SIGNATURE, CLAIM_MISMATCH, TOKEN_EXPIRED...). */
#define MCIM_DEVICE_REQUEST_TYP "mcim-request+jwt"
mcim_cause_t mcim_role_check_device_request(struct mcim_role *r, const json_t *body,
                                            const char *device, const char *txn,
                                            const char *what);
/* mcim_role_check_device_request for a handler at seed step `step`: when the check fails,
 * `resp` gets the problem of its cause, "`answer` is for the device itself: its TRE's request
 * (proof, tre_cert) of procedure `txn` does not verify: <cause text>" (`answer`: what the
 * handler answers, "discovery", "the package"). Returns the check's cause: the handler goes on
 * only on MCIM_OK, when `resp` was not touched. */
mcim_cause_t mcim_role_require_device_request(struct mcim_role *r, const json_t *body,
                                              const char *device, const char *txn,
                                              const char *what, int step, const char *answer,
                                              struct mcim_http_response *resp);

/* A device's TRE key (attestation or key agreement) from its certificate PEM, verified
 * against the M2MES CA with the device id as CN. */
mcim_cause_t mcim_role_device_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                           const char *device, int usage, mcim_jose_key_t **out);

#endif
