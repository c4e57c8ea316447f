/* Internals of the M2ME agent (src/device/), shared by its files:
 *   agent.c       runtime: configuration, start/stop, the worker thread, access sessions
 *   boot.c        the software TRE and measured boot (the platform part)
 *   store.c       agent.db: procedures table and trace table
 *   control.c     the local control API on the Unix socket
 *   start.c       the owner's instruction starts a procedure (control API, embedded use)
 *   instruction.c the owner's instruction (verification and claims)
 *   procedures.c  the procedure engine: outcomes, data, access, the worker round
 *   initial.c     initial provisioning: its table, the steps attach, discover, nonce, quote
 *   package.c     the package's steps: download, install, report, attach-sho
 *   change.c      the change of subscription (via the old SHO, via the pristine state): its
 *                 steps and tables, and the PCID step of a change or a preload
 *   preprovisioned.c the pre-provisioned variant (preload, switch): its steps and tables
 *   notify.c      notifications the TRE queued (deferred discard receipts)
 *   pcid.c        renewal of the PCID credential (device- and network-initiated)
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
#include "mcim/crashpoint.h"
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

/* The procedure's data as text and parsed, one pair (src/device/store.c): what the worker's
 * rounds read back is the text they last wrote or read, so the parse is kept, keyed by the
 * exact bytes of the `data` column (never by a row, a version or a transaction). Whatever
 * wrote the row (another handle, the `mcim` CLI, a rolled-back save), the tree used is the
 * parse of the bytes read now; `tree` is never handed out, only copies of it. */
struct dev_data_memo {
  char *text; /* the exact column text (NUL-terminated), NULL when empty */
  size_t len;
  json_t *tree; /* json_loads(text), or a tree whose dump `text` is (the same object) */
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
  /* Network roles' certificates (PEM) the device verified, by name (dev_peer_key_kept):
   * fetched from GET /v1/certificate or named by the RO in a discovery; in memory only. */
  json_t *peer_certs;
  pthread_mutex_t peers_lock;

  /* Access sessions, by network; guarded by `lock`. */
  struct dev_session sessions[DEV_MAX_SESSIONS];

  /* One attach at a time: AKA moves the TRE's SQN state and the networks keep one open
   * challenge per attach; the worker and the control API both attach. */
  pthread_mutex_t attach_lock;

  struct mcim_http_local *control; /* the control API: the local server, no MHD (http.h) */
  pthread_t worker;
  bool worker_running;
  /* the worker's HTTP client, under `lock`: the stop interrupts its call in progress (a held
   * long poll would otherwise keep the stop waiting up to long_poll) */
  struct mcim_http_lite *worker_cli;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stopping;
  bool wake;
  bool locks_ready;
  int64_t backoff_ms; /* worker only: grows while the network keeps failing, 0 on progress */
  /* Set (under `lock`) by an attach: a `full` attach makes the queued notifications
   * deliverable; a VNO answer `renewal: "due"` asks for a new PCID credential. The worker
   * acts on them between procedures; the procedures act on them in their own steps. */
  bool notify_due;
  bool pcid_renew_due;
  /* When the next undo of a switch is due (ms, wall clock; 0: none), under `lock`
   * (preprovisioned.c). */
  int64_t undo_next_ms;
  /* Trace rows of the worker's current round, held (under store_lock) until the round's
   * save or its end writes them in one transaction (dev_trace_hold). */
  json_t *trace_held;
  pthread_t trace_holder;
  bool trace_holding;
  /* The running procedure's data the worker last read or saved (under store_lock). */
  struct dev_data_memo data_memo;
};

/* ---- agent.c ---- */
/* Load DEVICE_DIR/agent.json (problems logged): the scalar keys in `out`, the "networks"
 * object in `networks` (may be NULL; an empty object when absent). */
mcim_cause_t dev_config_load(const char *dir, mcim_config_t **out, json_t **networks);
/* Wake the worker (a new procedure). */
void dev_wake(struct mcim_device *d);
bool dev_stopping(struct mcim_device *d);
/* Sleep up to `ms` unless woken or stopping; ms < 0: until woken or stopping (no timeout).
 * Counts the wake-up (mcim_m2me_worker_wakeups_total). */
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
/* Any live session of scope `full`: its network (64 bytes) and a copy of its token (free()).
 * MCIM_NO_ACCESS if none. */
mcim_cause_t dev_session_full(struct mcim_device *d, char network[64], char **token);
/* Flags set by attaches (see struct mcim_device): test-and-clear. */
bool dev_flag_take(struct mcim_device *d, bool *flag);
void dev_flag_set(struct mcim_device *d, bool *flag);
/* [{network, scope, identity, expires}] without tokens. */
json_t *dev_sessions_json(struct mcim_device *d);

/* ---- start.c ---- */
/* Seed step 2: the owner's instruction `jws` starts a procedure (or names the one this txn
 * already started): *answer {txn, kind, sho, state}. Otherwise the cause, `err` says why. */
mcim_cause_t dev_procedure_start(struct mcim_device *d, const char *jws, json_t **answer,
                                 char *err, size_t errlen);

/* ---- control.c ---- */
/* Serve the control API on the configured Unix socket (d->control). */
mcim_cause_t dev_control_start(struct mcim_device *d);

/* ---- store.c ---- */
mcim_cause_t dev_store_migrate(mcim_store_t *st);

/* A procedure as persisted (table `procedures`). */
struct dev_proc {
  char txn[DEV_TXN_LEN + 1];
  char kind[16];   /* "initial" | "change" | "preload" | "switch" */
  char via[16];    /* "old-sho" | "pristine" | "" */
  char sho[64];    /* the new SHO the owner chose (switch: the slot to activate) */
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
/* The same without the data (an empty object): what dev_proc_json shows. */
mcim_cause_t dev_proc_view(mcim_store_t *st, const char *txn, struct dev_proc *p);
/* The running procedure (MCIM_NOT_FOUND if none). */
mcim_cause_t dev_proc_running(mcim_store_t *st, struct dev_proc *p);
/* How many procedures run (0 or 1), without reading a row: the idle rounds' question. */
mcim_cause_t dev_procs_running(mcim_store_t *st, int64_t *n);
/* dev_proc_running and dev_proc_save with a memo of the data's parse (may be NULL: as
 * without). A row whose data column is byte for byte the memo's text gets a copy of the
 * memo's tree instead of a parse; a save of data equal (json_equal) to the memo's tree writes
 * the memo's text instead of a new dump. The memo then holds the text just read or written;
 * a procedure saved as ended empties it. */
mcim_cause_t dev_proc_running_memo(mcim_store_t *st, struct dev_data_memo *m,
                                   struct dev_proc *p);
mcim_cause_t dev_proc_save_memo(mcim_store_t *st, struct dev_data_memo *m,
                                const struct dev_proc *p);
void dev_data_memo_clear(struct dev_data_memo *m);
/* The most recently updated procedure (MCIM_NOT_FOUND if none). */
mcim_cause_t dev_proc_latest(mcim_store_t *st, struct dev_proc *p);
/* {txn, kind, via, sho, state, result, cause, step, stage, detail, created, updated} */
json_t *dev_proc_json(const struct dev_proc *p);
/* agent.db's bound (docs/device.md, section 7): the ended procedures whose `updated` is
 * before now - retention (seconds), and those beyond the `max` most recent (by updated, then
 * txn), go with their trace rows; trace rows of no procedure go once older than retention.
 * The running procedure stays, and so does `keep` (the procedure that just ended, counted as
 * the most recent; NULL: none). One relaxed transaction: a purge lost in a power cut is
 * redone by the next one. Not inside a transaction. `procs` and `rows` (may be NULL) get how
 * many procedures and trace rows went. */
mcim_cause_t dev_store_purge(mcim_store_t *st, int64_t now, int64_t retention, int64_t max,
                             const char *keep, int64_t *procs, int64_t *rows);
/* The same with the agent's record_retention and records_max, logged (INFO when something
 * went, WARN on failure); the store is locked by the caller. Run when a procedure ends and
 * at start-up: an idle agent has no timer (section 9 of docs/device.md). */
void dev_records_purge(struct mcim_device *d, mcim_store_t *st, const char *keep);

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
/* Where network `name` is, as the RO's discovery vouched for it (an https URL): used for
 * every later call to it, in place of the configured address. */
mcim_cause_t dev_network_learn(struct mcim_device *d, const char *name, const char *url);
/* Locked wrappers on the agent's store: an event of this device (from = its name). */
void dev_trace(struct mcim_device *d, const char *txn, int n, const char *to, const char *msg,
               const json_t *body, mcim_cause_t cause);
void dev_trace_at(struct mcim_device *d, int64_t time_us, const char *txn, int n, const char *to,
                  const char *msg, const json_t *body, mcim_cause_t cause);
mcim_store_t *dev_store_lock(struct mcim_device *d);
void dev_store_unlock(struct mcim_device *d);
/* A worker round's trace rows (src/device/store.c): from dev_trace_hold on, the rows this
 * thread traces are held; dev_proc_save_held writes them in the transaction of a procedure
 * save, dev_trace_release (at the end of the round) in one relaxed transaction. */
void dev_trace_hold(struct mcim_device *d);
void dev_trace_release(struct mcim_device *d);
/* dev_proc_save with the held rows in its transaction; the store is locked by the caller. */
mcim_cause_t dev_proc_save_held(struct mcim_device *d, mcim_store_t *st, const struct dev_proc *p);

/* ---- instruction.c ---- */
struct dev_instruction {
  char txn[DEV_TXN_LEN + 1];
  char kind[16];
  char via[16];
  char sho[64];
};
/* Verify an owner-signed mcim-instruction+jwt with the TRE (owner key pinned at
 * manufacture, replay cache in the TRE: a verified jti is spent) and check its claims:
 * procedure initial|change|preload|switch, via old-sho|pristine (change only), sho a valid
 * SHO name, txn 32 lower-case hex digits, sub = the device. MCIM_NOT_OWNER (not the
 * owner's), MCIM_REPLAY (the owner's, used before), MCIM_CLAIM_MISSING, MCIM_CLAIM_MISMATCH,
 * MCIM_TOKEN_EXPIRED...; `err` says what. On MCIM_REPLAY `out` is still filled (the
 * signature verified before the replay cache was asked). */
mcim_cause_t dev_instruction_check(mcim_tre_t *tre, const char *device, const char *jws,
                                   struct dev_instruction *out, char *err, size_t errlen);
/* The same claim checks on the instruction's payload WITHOUT verifying anything and without
 * the TRE (so without spending its jti): what lets the agent refuse an instruction it would
 * not run, or recognise a procedure it already runs, before the TRE records the jti. The
 * result is only trusted once dev_instruction_check() agreed. */
mcim_cause_t dev_instruction_peek(const char *device, const char *jws,
                                  struct dev_instruction *out, char *err, size_t errlen);
/* True for a name an SHO may have (a certificate name that is not a fixed role name). */
bool dev_is_sho_name(const char *name);

/* ---- control.c: the control API's request bodies, checked before the handler acts ---- */
/* POST /v1/attach {network, txn?}: network the VNO `vno` or an SHO name, txn hex.
 * MCIM_OK or the refusal's cause, `err` saying why. */
mcim_cause_t dev_attach_body(const json_t *body, const char *vno, char *err, size_t errlen);
/* POST /v1/procedures {instruction}: one string (the JWS dev_procedure_start takes). */
mcim_cause_t dev_instruction_body(const json_t *body, char *err, size_t errlen);
/* POST /v1/owner {handover}: one string (the JWS the TRE's owner_handover takes). */
mcim_cause_t dev_handover_body(const json_t *body, char *err, size_t errlen);

/* ---- procedures.c: the engine ---- */
enum dev_outcome { OUT_NEXT, OUT_WAIT, OUT_GOTO, OUT_DONE, OUT_FAIL };

/* One round of one step. */
struct dev_run {
  struct mcim_device *d;
  struct mcim_http_lite *cli;
  struct dev_proc *p;
  enum dev_outcome out;
  const char *next;   /* OUT_GOTO: the step to go to */
  mcim_cause_t cause; /* OUT_FAIL: why; OUT_WAIT: the problem that made us wait, if any */
  int fail_step;      /* OUT_FAIL: the seed step that failed (0: the current step's) */
  char detail[256];
  char access_used[64]; /* the network whose token dev_run_access_token() handed out */
};

struct dev_step {
  const char *name;
  int n; /* the seed's step number (0: outside the numbered steps) */
  void (*run)(struct dev_run *r);
};

/* The stage the calling thread runs (set by the engine around a stage's round; name NULL
 * outside one): what an agent's after-send crash point names (include/mcim/crashpoint.h). */
struct dev_stage_now {
  const char *name;
  const char *txn;
  int n;
};
extern _Thread_local struct dev_stage_now dev_stage_now;

/* A crash point (test only) at the TRE operation that writes the current stage's change into
 * the TRE state file: MCIM_CRASH_BEFORE_TRE just before the call, MCIM_CRASH_AFTER_TRE once it
 * succeeded (durable) and before the agent saved its progress. Named by the stage; nothing
 * outside a stage's round (dev_stage_now.name NULL). Unarmed: a load and a branch. */
static inline void dev_tre_point(mcim_crash_at_t at)
{
  if (mcim_crashpoint_armed() && dev_stage_now.name)
    mcim_crashpoint_at(at, dev_stage_now.name, dev_stage_now.txn, dev_stage_now.n);
}

struct dev_procedure {
  const char *kind;
  const char *via; /* NULL: any */
  const struct dev_step *steps;
  size_t nsteps;
  int last; /* the seed step a successful procedure reports (its last numbered step) */
};

/* The procedure kinds the agent runs (instructions for others: MCIM_UNSUPPORTED). */
bool dev_procedure_supported(const char *kind, const char *via);
/* The table of a procedure, NULL if none. */
const struct dev_procedure *dev_procedure_find(const char *kind, const char *via);
/* First step of a procedure: stage name and seed step number. */
mcim_cause_t dev_procedure_first(const char *kind, const char *via, const char **stage, int *n);
/* What a new procedure needs from the device's present state, checked before the
 * instruction's jti is spent: the TRE can do it (install_inactive for a preload), the slots
 * are as the procedure requires (change: an active MCIM of another SHO; switch: an inactive
 * MCIM of the target and an active one to leave; preload: not the active SHO). `data` gets
 * the procedure's first data (access network, old SHO, ...). MCIM_WRONG_STATE or
 * MCIM_UNSUPPORTED with `err` saying why. */
mcim_cause_t dev_procedure_prepare(struct mcim_device *d, const struct dev_instruction *ins,
                                   json_t **data, char *err, size_t errlen);
/* One round of the worker: run the current procedure's current step. Returns how long to
 * wait before the next round, milliseconds (0: go on at once; -1: no procedure is running,
 * wait until woken). */
int64_t dev_procedure_round(struct mcim_device *d, struct mcim_http_lite *cli);

/* Helpers for the step functions (procedures.c). */
void dev_run_fail(struct dev_run *r, mcim_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dev_run_wait(struct dev_run *r, mcim_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A failed call: retry later when that can help (a refused token is dropped: the next
 * round attaches again), otherwise fail. */
void dev_run_call_failed(struct dev_run *r, const char *access, mcim_cause_t rc,
                         const struct mcim_http_result *res, const char *what);
/* Persist the procedure now (what a step made is on disk before the network hears of it). */
mcim_cause_t dev_run_save(struct dev_run *r);
const char *dev_data_str(const struct dev_proc *p, const char *key);
bool dev_data_bool(const struct dev_proc *p, const char *key);
void dev_data_set_str(struct dev_proc *p, const char *key, const char *v);
void dev_data_set_bool(struct dev_proc *p, const char *key, bool v);
/* The access token of the procedure's access network (data "access"), attaching when there
 * is none. NULL: the round's outcome is set. See procedures.c for the change's fallbacks. */
char *dev_run_access_token(struct dev_run *r);
/* The same for a given network. */
char *dev_run_token_for(struct dev_run *r, const char *net);
/* Put back in memory the session procedure `p` saved in its data ("saved_token") for `net`,
 * if it is still live and there is none in memory (after a restart). */
void dev_session_restore(struct mcim_device *d, const struct dev_proc *p, const char *net);
/* A token for `net` (the session in memory, else a new attach) without deciding the round's
 * outcome: the caller does (the PCID renewal is best effort; a switch's current SHO that does
 * not answer is waited for, then the RO gets the suspend). NULL with *rc, *status (the
 * attach's HTTP status) and `why` set. */
char *dev_quiet_token(struct dev_run *r, const char *net, mcim_cause_t *rc, long *status,
                      char *why, size_t len);
/* The TRE-signed `proof` (and `tre_cert`) that the device itself asks role `aud` for `what`
 * ("discovery", "package" of the RO; "nonce" of the PVA) of r's procedure, added to `body`
 * (net.c). */
mcim_cause_t dev_request_proof(struct dev_run *r, const char *aud, const char *what,
                               json_t *body);
/* Forget the procedure's proofs (dev_request_proof): the next request has the TRE sign new
 * ones (dev_run_call_failed, after any refusal). */
void dev_request_proofs_drop(struct dev_proc *p);
/* Whether a statement the agent persisted has expired (it must then be made again; initial.c). */
bool dev_statement_expired(const char *jws);
/* Shared steps (the same for every procedure; the step number is the table's): initial.c
 * (attach, discover, nonce, quote) and package.c (download, install, report, attach-sho). */
void dev_st_attach(struct dev_run *r);
void dev_st_discover(struct dev_run *r);
void dev_st_nonce(struct dev_run *r);
void dev_st_quote(struct dev_run *r);
void dev_st_download(struct dev_run *r);
void dev_st_install(struct dev_run *r);
void dev_st_report(struct dev_run *r);
void dev_st_attach_sho(struct dev_run *r);

/* ---- initial.c ---- */
extern const struct dev_procedure dev_proc_initial;

/* ---- change.c ---- */
extern const struct dev_procedure dev_proc_change_old_sho, dev_proc_change_pristine;
/* The PCID credential renewed first if near expiry (a change's and a preload's step). */
void dev_st_pcid(struct dev_run *r);
/* Keep the session of `net` in the procedure's data ("saved_token") for a restart: the old
 * SHO's in a change via the old SHO (from step 8), the current SHO's in a switch. */
mcim_cause_t dev_session_save(struct dev_run *r, const char *net);
/* Whether a counterpart waited for since `from` (the old SHO's acknowledgement, the current
 * SHO's attach and suspend) has had its time, and the RO gets the TRE's word in its place:
 * `ack_deadline`, or half of what was left of the procedure when the wait began, whichever
 * comes first. So the RO always gets the other half: a longer wait would let the procedure's
 * deadline come first, a veto again. */
bool dev_ack_deadline_passed(const struct dev_run *r, int64_t from);
/* The TRE's public view: the active slot's name (64 bytes, "" if none), and the state of
 * slot `slot` ("" if no such slot; may be NULL). */
mcim_cause_t dev_tre_slots(struct mcim_device *d, char active[64], const char *slot,
                           char state[16]);

/* ---- preprovisioned.c ---- */
extern const struct dev_procedure dev_proc_preload, dev_proc_switch;
/* What a procedure that ends without success undoes on the network (switch: a suspended
 * subscription is resumed). Best effort, with the worker's client. */
void dev_change_compensate(struct mcim_device *d, struct mcim_http_lite *cli, struct dev_proc *p);
/* The undos the RO has not taken yet (agent.db undo_due): load when the next is due (at
 * start), how long until then (ms; 0: now; -1: none), and run the one due (between
 * procedures, the worker). */
void dev_undo_load(struct mcim_device *d);
int64_t dev_undo_wait_ms(struct mcim_device *d);
void dev_undo_round(struct mcim_device *d, struct mcim_http_lite *cli);

/* ---- notify.c ---- */
/* Deliver every notification the TRE queued (discard receipts) through the RO's relay with
 * the session of `network` (token `token`); each one the RO accepted is dropped from the
 * queue (pending_done). Traced as step 0 under the notification's txn. Best effort: returns
 * how many were delivered, or -1 if the TRE could not be read; a failed delivery stays
 * queued for the next full attach. `transient` (may be NULL): set when a delivery failed in a
 * way worth trying again soon (the RO unreachable, a 5xx). */
int dev_notify_pending(struct mcim_device *d, struct mcim_http_lite *cli, const char *network,
                       const char *token, bool *transient);
/* Hand a TRE-signed statement addressed to SHO `to` (a discard receipt or a switch notice)
 * to the RO's DPF, which relays it (POST ro /v1/dpf/notices): how the device tells an SHO it
 * holds no live token of. `token`: any access that reaches the RO. Traced as step 0 `msg`. */
mcim_cause_t dev_notice_relay(struct mcim_device *d, struct mcim_http_lite *cli,
                              const char *txn, const char *to, const char *statement,
                              const char *cert, const char *token, const char *msg,
                              struct mcim_http_result *res);
/* Verify an old SHO's mcim-discard-ack+jwt (iss = sho, aud ro, sub = device, txn, released). */
mcim_cause_t dev_ack_verify(struct mcim_device *d, struct mcim_http_lite *cli, const char *sho,
                            const char *txn, const char *ack);
/* The worker between procedures: deliver queued notifications after a `full` attach,
 * renew the PCID the VNO said is due. */
void dev_idle_round(struct mcim_device *d, struct mcim_http_lite *cli);

/* ---- pcid.c ---- */
/* Whether the PCID credential expires within `pcid_renew_margin` (or has no expiry info:
 * false). `expires` (may be NULL) gets its expiry. */
bool dev_pcid_renewal_near(struct mcim_device *d, int64_t *expires);
/* Ask for a new PCID credential (DPF or M2MES CCIF, `pcid_renew_from`) with `token` (an
 * access token that reaches it) and install it with the TRE's pcid_renew. Traced under
 * `txn` as step 0. MCIM_UNSUPPORTED if the TRE cannot renew. `detail` says what failed. */
mcim_cause_t dev_pcid_renew(struct mcim_device *d, struct mcim_http_lite *cli, const char *txn,
                            const char *token, long *http_status, char *detail, size_t len);

/* ---- attach.c ---- */
struct dev_attach_result {
  char network[64];
  char scope[16];
  char identity[24];
  int64_t expires;
  int step;           /* the seed step where it stopped (failure) */
  bool renewal_due;   /* the VNO's answer said renewal: "due" (PCID credential) */
  long http_status;   /* the network's HTTP status of a failed call, 0 if none */
  bool session_gone;  /* our answer found no open session (answered, expired): attach again */
  char detail[256];   /* the peer's or the TRE's explanation (failure) */
};
/* Attach to `network` ("vno": PCID credential; an SHO name: that SHO's slot) and keep the
 * access session. `txn` may be NULL (an attach outside a procedure: not traced). */
mcim_cause_t dev_attach(struct mcim_device *d, struct mcim_http_lite *cli, const char *network,
                        const char *txn, struct dev_attach_result *out);
/* The same, traced with seed step `step` (the authentication too; with the VNO it is
 * `step` + 1, as 4-5 of the pristine steps), -1: the default (VNO 4 and 5, SHO 0). */
mcim_cause_t dev_attach_at(struct mcim_device *d, struct mcim_http_lite *cli,
                           const char *network, const char *txn, int step,
                           struct dev_attach_result *out);
/* A network's answer to an authentication (step 6), before the session is kept: the scope
 * the identity gets (`id_field` "pcid": restricted, the VNO's; "imsi": full), and a token
 * that says the same, unexpired at `now`: iss and aud the network attached to, sub this
 * device, that scope (peeked: the network signs it for itself). A network that answers
 * otherwise lies: a VNO claiming full access, a token for another device that the RO would
 * refuse the device's own notices with (review of 2026-12-07); also typ, the identity
 * attached with (imsi), jti, txn, an iat before exp, and alive past `margin` (the agent's
 * token_margin: a token it would never use). *exp: the token's expiry. MCIM_PEER_BAD_ANSWER
 * when not. */
struct dev_attach_expect {
  const char *network, *device;
  const char *id_field; /* "pcid" or "imsi" */
  const char *identity; /* the PCID or IMSI attached with */
  int64_t now, margin;
};
mcim_cause_t dev_attach_answer_check(const struct dev_attach_expect *want, const char *scope,
                                     const char *token, int64_t *exp);

/* ---- net.c ---- */
/* The HTTP client of one thread: server-authenticated TLS pinned to the operators' CA. */
mcim_cause_t dev_client_new(struct mcim_device *d, struct mcim_http_lite **out);
/* Base URL of a peer: agent.json "networks", else the peers file (re-read when the name is
 * unknown). MCIM_PEER_UNREACHABLE if neither has an https URL for it. */
mcim_cause_t dev_peer_url(struct mcim_device *d, const char *peer, char *url, size_t len);
/* The check dev_peer_url makes of a URL from either (pure; fuzz_peers): an https URL shorter
 * than 512 bytes and `len`, copied into `url` without its trailing slashes; else
 * MCIM_PEER_UNREACHABLE (NULL too). */
mcim_cause_t dev_peer_url_check(const char *u, char *url, size_t len);
/* The next dev_call of this round may be held by the server until what it asks for exists
 * (RFC 7240 Prefer: wait, the agent's `long_poll`, never past the procedure's deadline). */
void dev_prefer_wait(struct dev_run *r);
/* One call to `peer` at `path`. On failure `res->cause`/`res->detail` say why; an answer
 * that is not a JSON object where one is expected is MCIM_PEER_BAD_ANSWER. */
mcim_cause_t dev_call(struct mcim_device *d, struct mcim_http_lite *cli, const char *method,
                      const char *peer, const char *path, const json_t *body, const char *bearer,
                      struct mcim_http_result *res);
/* Whether a cause says the access token was not accepted (re-attach, then retry). */
bool dev_cause_token(mcim_cause_t c);
/* Whether a call failed for its access token: an answer says so by RFC 6750's challenge
 * (mcim_role_access_challenge), since the same causes also refuse the TRE's statement or
 * proof on the same routes; without an answer, by the cause (dev_cause_token). */
bool dev_token_refused(mcim_cause_t rc, const struct mcim_http_result *res);
/* What the agent asks again later rather than fail on: mcim_cause_transient's, and a server
 * that did not authenticate (PEER_NOT_AUTHENTICATED without an HTTP status). No party the
 * device called decided that: anyone on the path can present a certificate that does not
 * chain to the pinned CA, and failing at once handed them the procedure, after step 8 the
 * device's only MCIM (review of 2026-12-07; DESIGN.md section 10). A pin that is wrong waits
 * till the procedure's deadline, its cause in the procedure's detail. */
bool dev_cause_retry(mcim_cause_t c, long http_status);
/* Answer field helpers: a string member of at most `max` bytes, else NULL. */
const char *dev_json_str(const json_t *obj, const char *name, size_t max);
/* A lower-case hex string member of exactly `digits` digits (0: any even length <= max). */
const char *dev_json_hex(const json_t *obj, const char *name, size_t digits);
/* Verify a network role's certificate PEM against the pinned operators' CA, CN = name;
 * the public key as a JOSE key (kid = name). */
mcim_cause_t dev_peer_key_from_pem(struct mcim_device *d, const char *pem, const char *name,
                                   mcim_jose_key_t **out);
/* The same at the time `now` (seconds). A key that verified is kept for the span in which
 * the certificate and the CA are both valid, under the PEM, the CA, the usage and the name
 * (net.c says why it is safe); dev_peer_keys_clear drops every kept key (tests). */
mcim_cause_t dev_peer_key_from_pem_at(struct mcim_device *d, const char *pem, const char *name,
                                      int64_t now, mcim_jose_key_t **out);
void dev_peer_keys_clear(void);
/* GET {peer}/v1/certificate, verified as above. `pem` (may be NULL) gets a copy; free().
 * The certificate is kept for dev_peer_key_kept. */
mcim_cause_t dev_peer_key(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                          mcim_jose_key_t **key, char **pem);
/* The key of the certificate kept for `peer` (verified again now, as above), else as
 * dev_peer_key. `*kept`: it came from the kept certificate; a statement that then does not
 * verify under it (MCIM_JWS_BAD_SIGNATURE: the peer's key may have changed) is checked
 * again with dev_peer_key's fresh one (dev_peer_verify does both). */
mcim_cause_t dev_peer_key_kept(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                               mcim_jose_key_t **key, bool *kept);
/* Keep `pem` as the certificate of `peer` (call once it verified as dev_peer_key_from_pem). */
void dev_peer_cert_keep(struct mcim_device *d, const char *peer, const char *pem);
/* Verify the statement `jws` of `peer` (dev_peer_key_kept's key, then a fresh one if it
 * does not verify under a kept certificate). `*key_rc`: the key's own outcome (MCIM_OK when
 * the statement's check failed, not the key's). */
mcim_cause_t dev_peer_verify(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                             const char *jws, const mcim_jws_expect_t *ex, mcim_statement_t **out,
                             mcim_cause_t *key_rc);

#endif
