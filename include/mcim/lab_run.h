/* Running a procedure in a lab as the M2ME subscriber does (seed steps 1-2), and
 * watching it to the end. Used by `mcim run` and `mcim demo`. */
#ifndef MCIM_LAB_RUN_H
#define MCIM_LAB_RUN_H

#include <jansson.h>
#include <stdio.h>

#include "mcim/lab.h"

struct mcim_lab_run {
  const char *device;
  const char *procedure; /* "initial" or "change" */
  const char *sho;       /* the new SHO */
  const char *via;       /* change only: "old-sho" or "pristine" */
  int timeout_s;         /* default 120 */
  FILE *live;            /* print each step as it happens (NULL: quiet) */
};

struct mcim_lab_run_result {
  char txn[33];
  char result[48];   /* "success" or a cause name */
  char detail[256];
  double seconds;
  json_t *steps;     /* [{n, from, to, msg, cause?}] in the order they happened */
};

/* The owner hands `device` over to the owner of the EC private key in PEM file `new_key`:
 * two statements of the current owner (mcim-handover+jwt, claim new_owner_jwk), one to the
 * RO's owner record, one to the device's TRE (POST /v1/owner); then `new_key` becomes the
 * lab's owner key of the device. `detail` says which step refused and why. */
mcim_cause_t mcim_lab_owner_handover(mcim_lab_t *lab, const char *device, const char *new_key,
                                     char *detail, size_t detail_len);
/* MCIM_OK only if the procedure succeeded. */
mcim_cause_t mcim_lab_run(mcim_lab_t *lab, const struct mcim_lab_run *run,
                          struct mcim_lab_run_result *res);
void mcim_lab_run_result_clear(struct mcim_lab_run_result *res);

#endif
