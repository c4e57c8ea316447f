/* `mcim loadgen`: many simulated devices in one process against a running lab (issue 10).
 * Each device is a real agent (the m2me code: src/device/, its software TRE, its agent.db)
 * driven round by round in this process instead of its own; the M2MES manufactures them in
 * bulk and the owners order and instruct as `mcim run` does. */
#ifndef MCIM_LOADGEN_H
#define MCIM_LOADGEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "mcim/cause.h"

struct mcim_loadgen_opts {
  const char *lab_dir;   /* the lab folder */
  long devices;          /* how many devices to manufacture and run */
  int concurrency;       /* devices at work at the same time */
  const char *procedure; /* initial | change-old-sho | change-pristine | switch | mix */
  int timeout_s;         /* per procedure (default 120) */
  FILE *progress;        /* a progress line while it runs (NULL: none) */
};

/* Sequences of procedures per device, by `procedure`:
 *   initial          initial provisioning at an SHO
 *   change-old-sho   initial, then a change of SHO via the old SHO
 *   change-pristine  initial, then a change of SHO via the pristine state
 *   switch           initial, a second MCIM pre-provisioned (preload), a switch to it
 *   mix              one of the three above per device, in turn
 * The SHOs are the lab's, taken in turn. *report (always set unless out of memory) holds
 * devices, procedures (completed), errors {cause: count}, per_s, seconds, latency_ms {p50,
 * p95, p99, max}, per procedure and per step the same, cpu (seconds of this process and of
 * the daemons, and per procedure), manufacture {devices, seconds}, and invariants ("ok" or
 * the list of what failed, DESIGN.md section 4, checked for every device). MCIM_OK only
 * without errors and with the invariants holding. */
mcim_cause_t mcim_loadgen_run(const struct mcim_loadgen_opts *o, json_t **report);
/* Whether `procedure` is one of the names above. */
bool mcim_loadgen_procedure_valid(const char *procedure);

#endif
