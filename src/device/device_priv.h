/* Internals of the M2ME agent (src/device/), shared by its files:
 *   agent.c       runtime: configuration, start/stop, the worker thread, access sessions
 *   boot.c        the software TRE and measured boot (the platform part)
 *   store.c       agent.db: procedures table and trace table
 *   control.c     the local control API on the Unix socket
 *   instruction.c the owner's instruction (verification and claims)
 *   procedures.c  the procedure state machines (a table of steps per procedure)
 *   attach.c      attach and AKA with the VNO or an SHO (client side of roles/access.c)
 *   net.c         calls to the network: URLs, TLS pinning, answer checks, trace */
#ifndef MCIM_DEVICE_PRIV_H
#define MCIM_DEVICE_PRIV_H

#include <jansson.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcim/config.h"
#include "mcim/device.h"
#include "mcim/http.h"
#include "mcim/store.h"
#include "mcim/tre.h"

#define DEV_MAX_SESSIONS 8
#define DEV_TXN_LEN 32

/* An access session: what a successful attach gave (DESIGN.md 2, access network model).
 * The token is a bearer credential: it stays in memory, never in a log, trace or answer. */
struct dev_session {
  char network[64]; /* "vno" or an SHO name */
  char scope[16];   /* "restricted" | "full" */
  char identity[24];/* PCID or IMSI that attached */
  char *token;      /* NULL: slot unused */
  int64_t expires;  /* the token's exp (epoch seconds) */
};

struct mcim_device {
  char *dir;
  mcim_config_t *cfg;
  char name[64]; /* device id (TRE) */
  mcim_tre_t *tre;
  X509 *operators_ca;

  /* The store: one SQLite handle for the agent, one thread at a time (store_lock). */
  mcim_store_t *store;
  pthread_mutex_t store_lock;

  /* Where the network is: agent.json "networks" {"vno": "https://...", ...}, then the
   * optional peers file (re-read when a name is unknown: an SHO added later). */
  json_t *networks;
  json_t *peers; /* NULL without a peers file */
  pthread_mutex_t peers_lock;

  /* Access sessions, by network; guarded by `lock`. */
  struct dev_session sessions[DEV_MAX_SESSIONS];

  /* One attach at a time: AKA moves the TRE's SQN state and the networks keep one open
   * challenge per attach; the worker and the control API both attach. */
  pthread_mutex_t attach_lock;

  struct mcim_http_server *control;
  pthread_t worker;
  bool worker_running;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stopping;
  bool wake;
  bool locks_ready;
  int64_t backoff_ms; /* worker only: grows while the network keeps failing, 0 on progress */
};

/* ---- agent.c ---- */
/* Load DEVICE_DIR/agent.json (problems logged): the scalar keys in `out`, the "networks"
 * object in `networks` (may be NULL; an empty object when absent). */
mcim_cause_t dev_config_load(const char *dir, mcim_config_t **out, json_t **networks);
/* Wake the worker (a new procedure). */
void dev_wake(struct mcim_device *d);
bool dev_stopping(struct mcim_device *d);
/* Sleep up to `ms` unless woken or stopping. */
void dev_sleep(struct mcim_device *d, int64_t ms);
/* Configuration getters with the agent's defaults. */
int64_t dev_cfg_int(const struct mcim_device *d, const char *name);
const char *dev_cfg_str(const struct mcim_device *d, const char *name);
/* Sessions. get: a copy of the token (free()) if a session for `network` is valid for at
 * least the configured margin; MCIM_NO_ACCESS otherwise. */
mcim_cause_t dev_session_get(struct mcim_device *d, const char *network, char **token,
                             char scope[16]);
void dev_session_put(struct mcim_device *d, const char *network, const char *scope,
                     const char *identity, const char *token, int64_t expires);
void dev_session_drop(struct mcim_device *d, const char *network);
/* [{network, scope, identity, expires}] without tokens. */
json_t *dev_sessions_json(struct mcim_device *d);

/* ---- control.c ---- */
/* Serve the control API on the configured Unix socket (d->control). */
mcim_cause_t dev_control_start(struct mcim_device *d);

/* ---- store.c ---- */
mcim_cause_t dev_store_migrate(mcim_store_t *st);

/* A procedure as persisted (table `procedures`). */
struct dev_proc {
  char txn[DEV_TXN_LEN + 1];
  char kind[16];   /* "initial" | "change" */
  char via[16];    /* "old-sho" | "pristine" | "" */
  char sho[64];    /* the new SHO the owner chose */
  char state[16];  /* "running" | "done" (result "success") | "failed" (result = cause) */
  char stage[32];  /* name of the current (or last) step of the state machine */
  int n;           /* its seed step number */
  char result[64]; /* "success" or a cause name, once finished */
  char cause[64];  /* cause name of a failure, "" otherwise */
  char detail[256];/* human text: why it failed, or the last retryable problem */
  json_t *data;    /* what earlier steps produced (sho_cert, validation id, statements...) */
  int64_t created, deadline, since, updated; /* epoch seconds; since = stage entered */
};
void dev_proc_clear(struct dev_proc *p);
/* Insert a new running procedure; MCIM_DEVICE_BUSY if one is running, MCIM_CONFLICT if the
 * txn is already known. */
mcim_cause_t dev_proc_insert(mcim_store_t *st, const struct dev_proc *p);
/* Write the mutable columns (state, stage, n, result, cause, detail, data, since, updated). */
mcim_cause_t dev_proc_save(mcim_store_t *st, const struct dev_proc *p);
mcim_cause_t dev_proc_load(mcim_store_t *st, const char *txn, struct dev_proc *p);
/* The running procedure (MCIM_NOT_FOUND if none). */
mcim_cause_t dev_proc_running(mcim_store_t *st, struct dev_proc *p);
/* The most recently updated procedure (MCIM_NOT_FOUND if none). */
mcim_cause_t dev_proc_latest(mcim_store_t *st, struct dev_proc *p);
/* {txn, kind, via, sho, state, result, cause, step, stage, detail, created, updated} */
json_t *dev_proc_json(const struct dev_proc *p);

/* Trace: same table and JSON as the roles' (src/roles/common.c) so `mcim trace` merges the
 * agent's events with theirs. The body is redacted before it is stored. Never fails the
 * caller (a trace that cannot be written is logged). */
void dev_trace_put(mcim_store_t *st, const char *txn, int n, const char *from, const char *to,
                   const char *msg, const json_t *body, mcim_cause_t cause);
/* The same with the time of the event: a request is stamped when it was sent (taken before
 * the call), so that it sorts before what the receiver recorded on its way. */
void dev_trace_put_at(mcim_store_t *st, int64_t time_us, const char *txn, int n, const char *from,
                      const char *to, const char *msg, const json_t *body, mcim_cause_t cause);
mcim_cause_t dev_trace_load(mcim_store_t *st, const char *txn, json_t **events);
/* Wall clock, microseconds since the epoch (the trace's time). */
int64_t dev_now_us(void);
/* Locked wrappers on the agent's store: an event of this device (from = its name). */
void dev_trace(struct mcim_device *d, const char *txn, int n, const char *to, const char *msg,
               const json_t *body, mcim_cause_t cause);
void dev_trace_at(struct mcim_device *d, int64_t time_us, const char *txn, int n, const char *to,
                  const char *msg, const json_t *body, mcim_cause_t cause);
mcim_store_t *dev_store_lock(struct mcim_device *d);
void dev_store_unlock(struct mcim_device *d);

/* ---- instruction.c ---- */
struct dev_instruction {
  char txn[DEV_TXN_LEN + 1];
  char kind[16];
  char via[16];
  char sho[64];
};
/* Verify an owner-signed mcim-instruction+jwt with the TRE (owner key pinned at
 * manufacture, replay cache in the TRE) and check its claims: procedure initial|change, via
 * old-sho|pristine (change), sho a valid SHO name, txn 32 lower-case hex digits, sub = the
 * device. MCIM_NOT_OWNER (not the owner's), MCIM_REPLAY, MCIM_CLAIM_MISSING,
 * MCIM_CLAIM_MISMATCH, MCIM_TOKEN_EXPIRED...; `err` says what. */
mcim_cause_t dev_instruction_check(mcim_tre_t *tre, const char *device, const char *jws,
                                   struct dev_instruction *out, char *err, size_t errlen);
/* True for a name an SHO may have (a certificate name that is not a fixed role name). */
bool dev_is_sho_name(const char *name);

/* ---- procedures.c ---- */
/* The procedure kinds the agent runs now (instructions for others: MCIM_UNSUPPORTED). */
bool dev_procedure_supported(const char *kind, const char *via);
/* First step of a procedure: stage name and seed step number. */
mcim_cause_t dev_procedure_first(const char *kind, const char *via, const char **stage, int *n);
/* One round of the worker: run the current procedure's current step. Returns how long to
 * wait before the next round, milliseconds (0: go on at once). */
int64_t dev_procedure_round(struct mcim_device *d, struct mcim_http_client *cli);

/* ---- attach.c ---- */
struct dev_attach_result {
  char network[64];
  char scope[16];
  char identity[24];
  int64_t expires;
  int step;           /* the seed step where it stopped (failure) */
  long http_status;   /* the network's HTTP status of a failed call, 0 if none */
  char detail[256];   /* the peer's or the TRE's explanation (failure) */
};
/* Attach to `network` ("vno": PCID credential; an SHO name: that SHO's slot) and keep the
 * access session. `txn` may be NULL (an attach outside a procedure: not traced). */
mcim_cause_t dev_attach(struct mcim_device *d, struct mcim_http_client *cli, const char *network,
                        const char *txn, struct dev_attach_result *out);

/* ---- net.c ---- */
/* The HTTP client of one thread: server-authenticated TLS pinned to the operators' CA. */
mcim_cause_t dev_client_new(struct mcim_device *d, struct mcim_http_client **out);
/* Base URL of a peer: agent.json "networks", else the peers file (re-read when the name is
 * unknown). MCIM_PEER_UNREACHABLE if neither has an https URL for it. */
mcim_cause_t dev_peer_url(struct mcim_device *d, const char *peer, char *url, size_t len);
/* One call to `peer` at `path`. On failure `res->cause`/`res->detail` say why; an answer
 * that is not a JSON object where one is expected is MCIM_PEER_BAD_ANSWER. */
mcim_cause_t dev_call(struct mcim_device *d, struct mcim_http_client *cli, const char *method,
                      const char *peer, const char *path, const json_t *body, const char *bearer,
                      struct mcim_http_result *res);
/* Whether a cause is worth retrying later (transport, busy peer, 5xx). */
bool dev_cause_transient(mcim_cause_t c, long http_status);
/* Whether a cause says the access token was not accepted (re-attach, then retry). */
bool dev_cause_token(mcim_cause_t c);
/* Answer field helpers: a string member of at most `max` bytes, else NULL. */
const char *dev_json_str(const json_t *obj, const char *name, size_t max);
/* A lower-case hex string member of exactly `digits` digits (0: any even length <= max). */
const char *dev_json_hex(const json_t *obj, const char *name, size_t digits);
/* Verify a network role's certificate PEM against the pinned operators' CA, CN = name;
 * the public key as a JOSE key (kid = name). */
mcim_cause_t dev_peer_key_from_pem(struct mcim_device *d, const char *pem, const char *name,
                                   mcim_jose_key_t **out);
/* GET {peer}/v1/certificate, verified as above. `pem` (may be NULL) gets a copy; free(). */
mcim_cause_t dev_peer_key(struct mcim_device *d, struct mcim_http_client *cli, const char *peer,
                          mcim_jose_key_t **key, char **pem);

#endif
