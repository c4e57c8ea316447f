/* Trace events kept in a store (every role's and every agent's own database): one table
 * `trace (id, txn, step, from_name, to_name, msg, time_us, cause, body)`, written by
 * whoever sends a message, read back per procedure for `mcim trace`. One implementation
 * for the roles (src/roles/common.c) and the device agent (src/device/store.c). */
#ifndef MCIM_TRACE_STORE_H
#define MCIM_TRACE_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "mcim/store.h"

/* Insert one event; the body is redacted (mcim_trace_redact) before it is stored. */
mcim_cause_t mcim_trace_store_put(mcim_store_t *st, int64_t time_us, const char *txn, int step,
                                  const char *from, const char *to, const char *msg,
                                  const json_t *body, mcim_cause_t cause);
/* The same, only where `exists_sql` (a subquery of ours, never outside input, with `ncond`
 * parameters `cond`, at most 8) finds a row: "INSERT ... SELECT ... WHERE EXISTS (exists_sql)".
 * For a batch (mcim_store_begin_batch), whose statements cannot be made to depend on each
 * other's outcomes any other way: the outbox records a delivery's trace row only while the
 * message is still its round's (src/roles/outbox.c, outbox_record). */
mcim_cause_t mcim_trace_store_put_if(mcim_store_t *st, int64_t time_us, const char *txn, int step,
                                     const char *from, const char *to, const char *msg,
                                     const json_t *body, mcim_cause_t cause, const char *exists_sql,
                                     const mcim_val_t *cond, size_t ncond);
/* The events of `txn` in time order, as a JSON array of {txid, n, from, to, msg, time, cause?,
 * body} (the form mcim_trace_event_from_json reads). */
mcim_cause_t mcim_trace_store_load(mcim_store_t *st, const char *txn, json_t **events);

#endif
