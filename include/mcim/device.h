/* The M2ME device agent (`m2me --dir DEVICE_DIR`): drives the device side of the seed's
 * procedures with the TRE (include/mcim/tre.h), always as a client of the network, and
 * serves a local control API (plain HTTP on the Unix socket DEVICE_DIR/control.sock) to the
 * owner's tools (`mcim device ...`, `mcim run ...`). docs/device.md describes the folder,
 * agent.json and the control API; docs/protocol.md ("M2ME agent") is the contract.
 *
 * An agent is a TRE, a configuration, a store (DEVICE_DIR/agent.db: procedures and trace),
 * the control server and one worker thread that runs the current procedure step by step.
 * Each step is persisted before the network call that depends on it, so a restarted agent
 * resumes where it stopped. */
#ifndef MCIM_DEVICE_H
#define MCIM_DEVICE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "mcim/cause.h"
#include "mcim/tre.h"

/* The configuration file inside DEVICE_DIR. */
#define MCIM_DEVICE_CONFIG "agent.json"

struct mcim_device;

/* What the agent's process sets before anything else, threads and stores included (the m2me
 * program's main; docs/device.md, "Footprint"): one malloc arena, SQLite without lookaside
 * buffers nor a page cache allocated ahead, OpenSSL without its error strings. Process-wide:
 * not for a process that runs other things (tests running agents next to roles do without). */
void mcim_device_process_init(void);

/* Start the agent of DEVICE_DIR with its TRE (DEVICE_DIR/tre or agent.json "tre"): for the
 * software TRE, measured boot (SHA-256 of firmware/boot.img, os.img, agent.img recorded in
 * the TRE; a TPM TRE was measured by the launcher, mcim_device_measured_launch), then
 * the store, the control server and the worker. Errors are logged with their cause. */
mcim_cause_t mcim_device_start(const char *dir, struct mcim_device **out);

/* The measured launch of a TPM device (apps/m2me-boot.c; docs/tre-tpm.md, "Attestation at
 * the PVA"), run before its agent by the launcher, never by the agent: SHA-256 of
 * firmware/boot.img, firmware/os.img and of the executable `agent` (read from the descriptor
 * *agent_fd gets, which the launcher then fexecve()s: what runs is what was measured),
 * extended into the TPM's PCR 10 (agent.json "tpm_tcti") with their ima-ng lines appended to
 * TRE_DIR/measurements.ima (mcim_tpm_launch_measure). MCIM_UNSUPPORTED for a device whose
 * agent.json names no TPM; `detail` says why on failure, and may carry a warning on success
 * (a log lost: its quotes will be refused until the TPM restarts). */
mcim_cause_t mcim_device_measured_launch(const char *dir, const char *agent, int *agent_fd,
                                         char *detail, size_t detail_len);

/* Same with a TRE the caller opened (any implementation of the interface; no measured
 * boot: the TRE's platform did it). Takes ownership of `tre`, also on failure. */
mcim_cause_t mcim_device_start_with(const char *dir, mcim_tre_t *tre, struct mcim_device **out);

/* Stop the control server and the worker (an HTTP call in progress finishes or times out
 * first), close everything. The current procedure stays persisted. NULL is fine. */
void mcim_device_free(struct mcim_device *d);

/* Embedded agents, for a program that drives many devices in its own process (`mcim
 * loadgen`): the same agent, TRE and procedure code, without the control server and the
 * worker thread; the caller runs the rounds. open: measured boot and the software TRE, as
 * mcim_device_start; open_with: a TRE the caller opened (owned, also on failure). Freed with
 * mcim_device_free. */
mcim_cause_t mcim_device_open(const char *dir, struct mcim_device **out);
mcim_cause_t mcim_device_open_with(const char *dir, mcim_tre_t *tre, struct mcim_device **out);
/* Seed step 2: the owner's instruction (mcim-instruction+jwt) starts a procedure, exactly as
 * POST /v1/procedures on the control API: *answer {txn, kind, sho, state}; else the cause
 * and `detail`. */
mcim_cause_t mcim_device_instruct(struct mcim_device *d, const char *instruction,
                                  json_t **answer, char *detail, size_t detail_len);
/* The HTTP client the rounds use (TLS pinned to the operators' CA; mcim_http_lite_free). One
 * per thread; it may serve several devices of that thread in turn. */
struct mcim_http_lite;
mcim_cause_t mcim_device_client_new(struct mcim_device *d, struct mcim_http_lite **out);
/* One round of the worker: the current procedure's current step, then what is due between
 * procedures. Returns the milliseconds until the next round is due (0: at once; -1: nothing
 * is running). */
int64_t mcim_device_round(struct mcim_device *d, struct mcim_http_lite *cli);
/* A procedure as the control API shows it (GET /v1/procedures/{txn}); MCIM_NOT_FOUND. */
mcim_cause_t mcim_device_procedure(struct mcim_device *d, const char *txn, json_t **out);
/* The TRE's public status (slots, PCID): what `mcim device status` shows. */
mcim_cause_t mcim_device_tre_status(struct mcim_device *d, json_t **out);

/* The device id (the CN of its TRE attestation certificate, as the TRE reports it). */
const char *mcim_device_name(const struct mcim_device *d);

/* Validate DEVICE_DIR/agent.json only; problems go to `err`, one per line. */
mcim_cause_t mcim_device_check_config(const char *dir, char *err, size_t errlen);
/* Print the reference of the agent.json keys. */
void mcim_device_describe_config(FILE *out);

#endif
