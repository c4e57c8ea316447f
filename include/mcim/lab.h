/* A lab: every role of the system as real daemons on loopback, in one folder
 * (DESIGN.md section 9): lab.json (roles, ports, pids), peers.json (the directory the
 * roles use to find each other), the PKI, one folder per role instance (config,
 * database, storage key, log) and one per device (TRE, firmware, agent).
 * `lab down` stops exactly the processes lab.json records, nothing else. */
#ifndef MCIM_LAB_H
#define MCIM_LAB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mcim/cause.h"
#include "mcim/http.h"

#define MCIM_LAB_DEFAULT_DIR "./mcim-lab"
#define MCIM_LAB_MAX_SHOS 16
#define MCIM_LAB_MAX_INSTANCES 4

typedef struct mcim_lab mcim_lab_t;

struct mcim_lab_up_opts {
  const char *store;                     /* "sqlite" (default) or "postgres" */
  const char *shos[MCIM_LAB_MAX_SHOS];   /* default: sho-a, sho-b */
  size_t nshos;
  int wait_ms;                           /* how long to wait for every role (default 15000) */
  int instances;                         /* mcimd per network role (default 1); more than one
                                            needs "postgres" and HAProxy in front of them */
  const char *auc;                       /* "builtin" (default) or "osmo-hlr": an osmo-hlr per
                                            SHO and one for the RO's ICF (src/lab/hlr.c) */
};

/* The lab folder: --dir, else $MCIM_LAB, else ./mcim-lab. */
const char *mcim_lab_dir(const char *opt_dir);

/* Start a lab in `dir` (created if needed). MCIM_CONFLICT if one is already up there. */
mcim_cause_t mcim_lab_up(const char *dir, const struct mcim_lab_up_opts *opts, mcim_lab_t **out);
/* Open the lab recorded in `dir`; MCIM_NOT_FOUND if there is none. */
mcim_cause_t mcim_lab_open(const char *dir, mcim_lab_t **out);
/* Stop every process of the lab (devices first), then forget their pids. */
mcim_cause_t mcim_lab_down(mcim_lab_t *lab);
void mcim_lab_free(mcim_lab_t *lab);
/* Stop processes of a lab as `lab down` does: SIGTERM to each of pids[0..n) (those > 0), up
 * to wait_ms for all of them to end, then SIGKILL to those left (a child of ours killed so
 * is reaped only if already dead: waitpid(pid, NULL, 0) to wait for it). Ended: with `prog`,
 * once the pid no longer runs it, a zombie included (mcim_lab_stop_pid); with NULL, once
 * reaped here or no longer there (a zombie that is not our child has not). gone[0..n) is the
 * caller's (no malloc here), overwritten: gone[i] once pids[i] is seen ended, after which
 * that pid is neither probed nor signalled again (it may have been given to another
 * process); on return, true for those that ended before the SIGKILL. Async-signal-safe
 * (kill, waitpid, nanosleep, open, read, close; no stdio, no malloc, no log): `mcim demo`'s
 * Ctrl-C handler calls it. */
void mcim_lab_stop_pids(const pid_t *pids, bool *gone, size_t n, const char *prog,
                        int wait_ms);

/* {"dir", "roles": [{"name", "kind", "url", "pid", "running", "healthy"}], "devices": [...]} */
mcim_cause_t mcim_lab_status(mcim_lab_t *lab, json_t **out);

const char *mcim_lab_path(const mcim_lab_t *lab); /* absolute folder */
/* Base URL of a role ("https://127.0.0.1:PORT"): its load balancer's when it runs several
 * instances, NULL if unknown. */
const char *mcim_lab_url(mcim_lab_t *lab, const char *name);
/* Kind of a role instance ("sho", ...), NULL if unknown. */
const char *mcim_lab_kind(mcim_lab_t *lab, const char *name);
/* Names of all roles, each once, in start order (borrowed; NULL-terminated). */
const char *const *mcim_lab_roles(mcim_lab_t *lab);
/* An HTTPS client with the lab's admin certificate (mTLS), pinning the operators' CA.
 * Owned by the lab. */
struct mcim_http_client *mcim_lab_admin_client(mcim_lab_t *lab);
/* A plain-TLS client (no client certificate): what a subscriber or device has. */
struct mcim_http_client *mcim_lab_public_client(mcim_lab_t *lab);

/* ---- traces ---- */
struct mcim_trace;
/* Every event of procedure `txn` recorded by the roles and the device agents, merged. */
mcim_cause_t mcim_lab_trace_collect(mcim_lab_t *lab, const char *txn, struct mcim_trace *t);

/* ---- devices ---- */

/* Manufacture an M2ME (M2MES factory: TRE keys, certificates, PCID credential, owner key,
 * firmware images; `tamper`: an `os` image that does not match its RIM) and start its
 * agent. MCIM_CONFLICT if the name is taken. */
mcim_cause_t mcim_lab_device_add(mcim_lab_t *lab, const char *name, bool tamper);
struct mcim_lab_device_opts {
  bool tamper;     /* as above */
  const char *tre; /* the TRE's backend: "soft" (NULL) or "tpm": the device gets a swtpm of its
                    * own (its state in DEVICE_DIR/tpm, started and stopped with the agent
                    * and by `lab down`) and its TRE's keys are made in it (docs/tre-tpm.md) */
};
/* The same with options; MCIM_INVALID_ARGUMENT for another backend, MCIM_UNSUPPORTED for
 * "tpm" in a build without the TPM TRE, MCIM_NOT_FOUND without swtpm. */
mcim_cause_t mcim_lab_device_add_with(mcim_lab_t *lab, const char *name,
                                      const struct mcim_lab_device_opts *opts);
/* Folder of a device (absolute), NULL if unknown. */
const char *mcim_lab_device_dir(mcim_lab_t *lab, const char *name);
/* A client on the device agent's control socket (owned by the caller: free it). */
mcim_cause_t mcim_lab_device_client(mcim_lab_t *lab, const char *name,
                                    struct mcim_http_client **out);
/* (Re)start a device's agent (after a crash test, or after `lab up` of a stopped lab); a
 * device with the TPM TRE gets its swtpm back first, on its state. */
mcim_cause_t mcim_lab_device_start(mcim_lab_t *lab, const char *name);
/* Stop a device's agent (SIGTERM, then SIGKILL after 5 s), then its swtpm if it has one. */
mcim_cause_t mcim_lab_device_stop(mcim_lab_t *lab, const char *name);
/* Stop and restart a role: each of its instances in turn (fault tests, restarts
 * mid-procedure). */
mcim_cause_t mcim_lab_role_restart(mcim_lab_t *lab, const char *name);

#endif
