/* Trace events in a store (include/mcim/trace_store.h). */
#include "mcim/trace_store.h"

#include <stdlib.h>

#include "mcim/json_dump.h"
#include "mcim/trace.h"
#include "mcim/util.h"

/* The insert, of the event alone or (exists_sql set) only where that subquery finds a row. */
static mcim_cause_t put(mcim_store_t *st, int64_t time_us, const char *txn, int step,
                        const char *from, const char *to, const char *msg, const json_t *body,
                        mcim_cause_t cause, const char *exists_sql, const mcim_val_t *cond,
                        size_t ncond)
{
  char id[33];
  uint8_t b[16];
  char *text = NULL;
  char sql[512];
  if (!st || !txn || !from || !to || !msg || ncond > 8 || (ncond && !cond))
    return MCIM_INVALID_ARGUMENT;
  if (exists_sql) {
    int n = snprintf(sql, sizeof(sql),
                     "INSERT INTO trace (id, txn, step, from_name, to_name, msg, time_us, cause,"
                     " body) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (%s)",
                     exists_sql);
    if (n < 0 || (size_t)n >= sizeof(sql))
      return MCIM_INVALID_ARGUMENT;
  }
  mcim_cause_t rc = mcim_random_id(b, sizeof(b));
  if (rc != MCIM_OK)
    return rc;
  mcim_hex_encode(b, sizeof(b), id);
  if (body) {
    json_t *red = mcim_trace_redact(body);
    text = red ? mcim_json_dumps(red) : NULL;
    json_decref(red);
  }
  mcim_val_t p[9 + 8] = {
      MCIM_TEXT(id),     MCIM_TEXT(txn),
      MCIM_INT(step),    MCIM_TEXT(from),
      MCIM_TEXT(to),     MCIM_TEXT(msg),
      MCIM_INT(time_us), MCIM_TEXT(cause == MCIM_OK ? NULL : mcim_cause_name(cause)),
      MCIM_TEXT(text)};
  for (size_t i = 0; i < ncond; i++)
    p[9 + i] = cond[i];
  /* the trace is what happened, for people: not worth an fsync of its own */
  rc = mcim_store_exec_relaxed(st,
                               exists_sql ? sql
                                          : "INSERT INTO trace (id, txn, step, from_name, to_name,"
                                            " msg, time_us, cause, body) VALUES (?, ?, ?, ?, ?, ?,"
                                            " ?, ?, ?)",
                               p, 9 + ncond, NULL, NULL);
  free(text);
  return rc;
}

mcim_cause_t mcim_trace_store_put(mcim_store_t *st, int64_t time_us, const char *txn, int step,
                                  const char *from, const char *to, const char *msg,
                                  const json_t *body, mcim_cause_t cause)
{
  return put(st, time_us, txn, step, from, to, msg, body, cause, NULL, NULL, 0);
}

mcim_cause_t mcim_trace_store_put_if(mcim_store_t *st, int64_t time_us, const char *txn, int step,
                                     const char *from, const char *to, const char *msg,
                                     const json_t *body, mcim_cause_t cause, const char *exists_sql,
                                     const mcim_val_t *cond, size_t ncond)
{
  if (!exists_sql)
    return MCIM_INVALID_ARGUMENT;
  return put(st, time_us, txn, step, from, to, msg, body, cause, exists_sql, cond, ncond);
}

static const char *or_empty(const char *s)
{
  return s ? s : "";
}

static mcim_cause_t trace_row(const mcim_row_t *row, void *arg)
{
  json_t *events = arg;
  const char *body = mcim_row_text(row, 7);
  json_t *b = body ? json_loads(body, 0, NULL) : NULL;
  json_t *ev = json_pack("{s:s,s:I,s:s,s:s,s:s,s:I}", "txid", or_empty(mcim_row_text(row, 0)),
                         "n", (json_int_t)mcim_row_int(row, 1), "from",
                         or_empty(mcim_row_text(row, 2)), "to", or_empty(mcim_row_text(row, 3)),
                         "msg", or_empty(mcim_row_text(row, 4)), "time",
                         (json_int_t)mcim_row_int(row, 5));
  if (!ev) {
    json_decref(b);
    return MCIM_NO_MEMORY;
  }
  if (mcim_row_text(row, 6))
    json_object_set_new(ev, "cause", json_string(mcim_row_text(row, 6)));
  json_object_set_new(ev, "body", b ? b : json_null());
  json_array_append_new(events, ev);
  return MCIM_OK;
}

mcim_cause_t mcim_trace_store_load(mcim_store_t *st, const char *txn, json_t **events)
{
  *events = NULL;
  json_t *arr = json_array();
  if (!arr)
    return MCIM_NO_MEMORY;
  mcim_val_t p[] = {MCIM_TEXT(txn)};
  mcim_cause_t rc = mcim_store_exec(st,
                                    "SELECT txn, step, from_name, to_name, msg, time_us, cause,"
                                    " body FROM trace WHERE txn = ? ORDER BY time_us",
                                    p, 1, trace_row, arr);
  if (rc != MCIM_OK) {
    json_decref(arr);
    return rc;
  }
  *events = arr;
  return MCIM_OK;
}
