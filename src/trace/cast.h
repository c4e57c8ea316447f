/* The cast of a procedure's chart: which of the seed's entities each lab instance plays in
 * THAT procedure (M2ME subscriber, M2ME, TRE, VNO, RO, PVA, old SHO, new SHO, M2MES), in the
 * fixed order the charts draw them. Learnt from the events alone (rendering stays pure):
 *  - the new SHO is the one the subscriber's order (step 1) goes to; in a switch (no order)
 *    the one told to resume its subscription;
 *  - the M2ME is the one that talks to its TRE, receives the owner's instruction (step 2),
 *    talks to the VNO or sends an attach;
 *  - any other instance that is not a fixed role (vno, ro, pva, m2mes, tre, subscriber,
 *    admin) is an SHO: the old SHO in a change, the current SHO in a preload or a switch.
 * Private to the library (the CLI's live view and the renderers share it). */
#ifndef MCIM_TRACE_CAST_H
#define MCIM_TRACE_CAST_H

#include <stdio.h>

#include "mcim/trace.h"

#define MCIM_TRACE_MAX_ACTORS 24

struct mcim_trace_actor {
  char name[64];   /* lab instance name, as in the events */
  char entity[24]; /* the seed's entity: "M2ME subscriber", "M2ME", "new SHO", ... */
  char label[96];  /* lifeline heading: "M2ME (dev1)", "new SHO (sho-b)", "RO" */
  char term[96];   /* as a text line names it: "M2ME", "new SHO (sho-b)", "RO" */
  char id[24];     /* identifier in msc and mermaid: "m2me", "newsho", "oldsho2", ... */
  int rank;        /* place in the fixed order */
  size_t first;    /* first use (ties within a rank) */
};

struct mcim_trace_cast {
  struct mcim_trace_actor actor[MCIM_TRACE_MAX_ACTORS]; /* in chart order */
  size_t len;
};

/* The cast of procedure `txn` (NULL: every event of `t`). */
void mcim_trace_cast_of(const struct mcim_trace *t, const char *txn, struct mcim_trace_cast *c);
/* The actor of a lab name; never NULL for a name of the trace the cast was made from (past
 * MCIM_TRACE_MAX_ACTORS names, the last actor stands for the others). NULL otherwise. */
const struct mcim_trace_actor *mcim_trace_cast_find(const struct mcim_trace_cast *c,
                                                    const char *name);
/* One event as a line of the text chart, without the newline:
 * "7) RO -> M2ME: DPF: MCIM package (atomic download)", "-) M2ME -> new SHO (sho-b): attach
 * (IMSI) [FAILED: SUBSCRIPTION_NOT_ACTIVE]". A name not in the cast is written as is. */
void mcim_trace_text_line(const struct mcim_trace_cast *c, const struct mcim_trace_event *e,
                          FILE *out);

#endif
