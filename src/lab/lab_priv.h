/* Lab internals shared by lab.c (lab.json, status, down), up.c (`lab up`), process.c (programs
 * and processes), device.c (devices) and the lab's other parts. */
#ifndef MCIM_LAB_PRIV_H
#define MCIM_LAB_PRIV_H

#include <limits.h>

#include "mcim/jose.h"
#include "mcim/lab.h"

/* Paths inside the lab are built as "<dir>/..." in PATH_MAX buffers: keeping the folder
 * name under half of that leaves room for any suffix we append. */
#define MCIM_LAB_DIR_MAX (PATH_MAX / 2)

struct mcim_lab {
  char dir[MCIM_LAB_DIR_MAX];
  json_t *json; /* lab.json */
  const char **role_names;
  struct mcim_http_client *admin;
  struct mcim_http_client *public;
};

const char *mcim_lab_bindir(void);
/* MCIM_TIME_SCALE (an integer 1..100, default 1): what the lab waits for and the deadlines it
 * gives agents (procedure_timeout, request_timeout_ms) are that many times longer, for
 * programs slowed down as a whole (valgrind's memcheck: scripts/valgrind.sh). */
int mcim_lab_time_scale(void);
/* The program `name` in PATH, else in `fixed` (NULL-terminated: the folders a user's PATH may
 * lack), into `out`; NULL when none is executable. */
const char *mcim_lab_find_program(const char *name, const char *const *fixed, char *out,
                                  size_t outlen);
/* out = a || b; MCIM_TOO_LARGE (and out empty) if it does not fit. */
mcim_cause_t mcim_lab_join(char *out, size_t n, const char *a, const char *b);
void mcim_lab_sleep_ms(int ms);
mcim_cause_t mcim_lab_write_json(const char *path, const json_t *j, int mode);
mcim_cause_t mcim_lab_mkdir(const char *path);
bool mcim_lab_pid_alive(long pid, const char *prog);
long mcim_lab_spawn(char *const argv[], const char *log_path);
void mcim_lab_stop_pid(long pid, const char *prog);
/* lab.c: `dir` resolved into `out`; false if it does not exist or its path is too long. */
bool mcim_lab_realpath(const char *dir, char out[MCIM_LAB_DIR_MAX]);
mcim_cause_t mcim_lab_save(mcim_lab_t *lab);
json_t *mcim_lab_role(mcim_lab_t *lab, const char *name);
/* Start one role instance (an entry of lab.json's "roles") and wait until it answers. */
mcim_cause_t mcim_lab_start_role(mcim_lab_t *lab, json_t *role, int wait_ms);
/* Whether `base` answers /v1/health as role `name` (not another role of the lab). */
bool mcim_lab_healthy_at(mcim_lab_t *lab, const char *base, const char *name);

/* The load balancer in front of roles with several instances (src/lab/balancer.c):
 * HAProxy in TCP mode, lab.json's "balancer" ({pid, urls: {role: url}}). */
const char *mcim_lab_balancer_program(void);
mcim_cause_t mcim_lab_balancer_start(mcim_lab_t *lab, int wait_ms);
void mcim_lab_balancer_stop(mcim_lab_t *lab);
/* A free TCP port on loopback (bound, read back, closed), or -1. */
int mcim_lab_free_port(void);

/* The lab's PostgreSQL server (src/lab/pg.c): started (made first if the lab has none),
 * one database per role made if missing, their locators in *locators ({name: locator});
 * lab.json's "postgres" says where it is. */
mcim_cause_t mcim_lab_pg_start(mcim_lab_t *lab, const char *const *roles, size_t nroles,
                               json_t **locators);
/* Stopped (and deleted when its files are outside the lab folder). */
void mcim_lab_pg_stop(mcim_lab_t *lab);

/* The lab's osmo-hlr per role with an AuC (hlr.c; `--auc osmo-hlr`): started before the roles
 * (their configurations name its address), stopped after them. */
const char *mcim_lab_hlr_program(void);
mcim_cause_t mcim_lab_hlr_start(mcim_lab_t *lab, const char *const *names, size_t n, int wait_ms);
void mcim_lab_hlr_stop(mcim_lab_t *lab);
/* The loopback address of `name`'s HLR (GSUP 4222, CTRL 4259), NULL if it has none. */
const char *mcim_lab_hlr_addr(mcim_lab_t *lab, const char *name);
json_t *mcim_lab_hlr_status(mcim_lab_t *lab); /* [{name, program, addr, pid, running}] */
/* The database of role `role`: mcim_ and the name with every character outside [a-z0-9] as _. */
void mcim_lab_pg_dbname(const char *role, char *out, size_t len);

/* Manufacture device `name` in folder `dir` (device.c): firmware, TRE, the M2MES's
 * certificates and PCID credential, agent.json, params.json, the owner key. With `tcti`, the
 * TRE is a TPM TRE whose keys are made in the TPM it reaches (NULL: a software TRE). The
 * device is not added to lab.json nor started (`mcim lab device add` does both; `mcim
 * loadgen` neither). */
mcim_cause_t mcim_lab_manufacture(mcim_lab_t *lab, const char *name, const char *dir,
                                  bool tamper, const char *tcti);
/* Stop every device's agent, then its TPM (swtpm) if it has one (`lab down`). */
void mcim_lab_devices_stop(mcim_lab_t *lab);
/* A device's entry of `lab status`: name, pid, running, tre, and swtpm {pid, running}. */
json_t *mcim_lab_device_status(const json_t *device);

/* The owner of the device in `dir` (run.c): its key (owner/owner.key) and parameters. */
mcim_cause_t mcim_lab_owner_load_dir(const char *dir, mcim_jose_key_t **key, json_t **params);
/* A statement of the owner (iss "subscriber"), valid 10 minutes. */
mcim_cause_t mcim_lab_owner_sign(const mcim_jose_key_t *owner, const char *typ,
                                 const char *device, const char *aud, const char *txn,
                                 json_t *extra, char **jws);
/* Step 2: the owner's instruction for run (procedure, sho, via) to run->device. */
struct mcim_lab_run;
mcim_cause_t mcim_lab_instruction(const mcim_jose_key_t *owner, const struct mcim_lab_run *run,
                                  const char *txn, char **jws);
/* Step 1: the owner's order at run->sho, retried while its failure is transient (a switch
 * between pre-provisioned MCIMs orders nothing: MCIM_OK at once). */
mcim_cause_t mcim_lab_order(mcim_lab_t *lab, const struct mcim_lab_run *run,
                            const mcim_jose_key_t *owner, const json_t *params, const char *txn,
                            char *detail, size_t detail_len);

#endif
