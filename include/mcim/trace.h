/* Trace events: one per message of a procedure, recorded by the roles and the
 * agent, merged by `mcim trace`, drawn as the seed's flow charts.
 * Rendering is pure (events in, text out), so charts are golden-testable. */
#ifndef MCIM_TRACE_H
#define MCIM_TRACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mcim/cause.h"

struct mcim_trace_event {
  char txn[40];
  int n;              /* the seed's step number; 0 for messages outside numbered steps */
  char from[64];      /* lab instance name: subscriber, device name, vno, ro, pva, m2mes, SHO name */
  char to[64];
  char msg[160];      /* e.g. "DPF: MCIM package (atomic download)" */
  int64_t time_us;    /* wall clock, microseconds since the epoch */
  mcim_cause_t cause; /* MCIM_OK, or why the step failed */
  json_t *body;       /* owned; already redacted */
};

struct mcim_trace {
  struct mcim_trace_event *ev;
  size_t len;
  size_t cap;
};

void mcim_trace_init(struct mcim_trace *t);
void mcim_trace_free(struct mcim_trace *t);
/* Appends a copy of `ev`; the body is redacted on the way in (deep copy). */
mcim_cause_t mcim_trace_add(struct mcim_trace *t, const struct mcim_trace_event *ev);
/* Merge order: time, then step number, then insertion; drops exact duplicates (the same message
 * recorded by its sender and its receiver). */
void mcim_trace_sort(struct mcim_trace *t);

/* A deep copy of `body` in which every value under a secret-bearing key (k, opc, op, ck, ik,
 * xres, private keys, ...) is replaced by "<redacted>". */
json_t *mcim_trace_redact(const json_t *body);
/* Whether a JSON key names secret material. */
bool mcim_trace_key_is_secret(const char *key);

enum mcim_trace_format { MCIM_TRACE_TEXT, MCIM_TRACE_MSC, MCIM_TRACE_MERMAID, MCIM_TRACE_JSON };
int mcim_trace_format_from_name(const char *name); /* -1 if unknown ("svg" is msc + mscgen) */
mcim_cause_t mcim_trace_render(const struct mcim_trace *t, const char *txn,
                               enum mcim_trace_format fmt, FILE *out);

/* Event <-> JSON ({n, from, to, msg, time, body, cause?}); from_json validates. */
json_t *mcim_trace_event_to_json(const struct mcim_trace_event *ev);
mcim_cause_t mcim_trace_event_from_json(const json_t *j, struct mcim_trace_event *ev);
/* Adds the events of one trace answer ({"events": [...]}, what a role's or an agent's
 * GET /v1/admin/trace/{txn} answers) to `t`: each through mcim_trace_event_from_json, those
 * it refuses skipped. Returns how many were added. */
size_t mcim_trace_add_answer(struct mcim_trace *t, const json_t *answer);

#endif
