/* Trace events: collection, redaction, merge order. */
#include "mcim/trace.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const secret_keys[] = {
    "k", "opc", "op", "ck", "ik", "kc", "xres", "key", "private_key", "storage_key",
    "secret", "password", "d", /* JWK private scalar */
};

bool mcim_trace_key_is_secret(const char *key)
{
  for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++)
    if (strcasecmp(key, secret_keys[i]) == 0)
      return true;
  return false;
}

json_t *mcim_trace_redact(const json_t *body)
{
  if (!body)
    return NULL;
  if (json_is_object(body)) {
    json_t *out = json_object();
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val) {
      if (mcim_trace_key_is_secret(key))
        json_object_set_new(out, key, json_string("<redacted>"));
      else
        json_object_set_new(out, key, mcim_trace_redact(val));
    }
    return out;
  }
  if (json_is_array(body)) {
    json_t *out = json_array();
    size_t i;
    json_t *val;
    json_array_foreach(body, i, val)
      json_array_append_new(out, mcim_trace_redact(val));
    return out;
  }
  return json_deep_copy(body);
}

void mcim_trace_init(struct mcim_trace *t)
{
  memset(t, 0, sizeof(*t));
}

void mcim_trace_free(struct mcim_trace *t)
{
  for (size_t i = 0; i < t->len; i++)
    json_decref(t->ev[i].body);
  free(t->ev);
  memset(t, 0, sizeof(*t));
}

mcim_cause_t mcim_trace_add(struct mcim_trace *t, const struct mcim_trace_event *ev)
{
  if (t->len == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 32;
    struct mcim_trace_event *n = realloc(t->ev, cap * sizeof(*n));
    if (!n)
      return MCIM_NO_MEMORY;
    t->ev = n;
    t->cap = cap;
  }
  t->ev[t->len] = *ev;
  t->ev[t->len].body = ev->body ? mcim_trace_redact(ev->body) : NULL;
  t->len++;
  return MCIM_OK;
}

static int event_cmp(const void *a, const void *b)
{
  const struct mcim_trace_event *x = a, *y = b;
  if (x->time_us != y->time_us)
    return x->time_us < y->time_us ? -1 : 1;
  if (x->n != y->n)
    return x->n < y->n ? -1 : 1;
  return 0;
}

/* The two ends' copies of one message agree on whether it failed; a failed attempt and the
 * retry that succeeded are two messages (a chart must show both). */
static bool same_message(const struct mcim_trace_event *x, const struct mcim_trace_event *y)
{
  return x->n == y->n && (x->cause == MCIM_OK) == (y->cause == MCIM_OK) &&
         strcmp(x->txn, y->txn) == 0 && strcmp(x->from, y->from) == 0 &&
         strcmp(x->to, y->to) == 0 && strcmp(x->msg, y->msg) == 0;
}

void mcim_trace_sort(struct mcim_trace *t)
{
  if (t->len == 0)
    return; /* nothing recorded yet (ev may be NULL, which qsort must not get) */
  /* qsort is not stable; ties on (time, n) are rare (microsecond clocks) and harmless. */
  qsort(t->ev, t->len, sizeof(t->ev[0]), event_cmp);
  size_t w = 0;
  for (size_t r = 0; r < t->len; r++) {
    bool dup = false;
    /* The receiver's copy of a message lands within a short window after the sender's. */
    for (size_t k = w; k > 0 && k + 8 > w; k--)
      if (same_message(&t->ev[k - 1], &t->ev[r])) {
        dup = true;
        break;
      }
    if (dup) {
      json_decref(t->ev[r].body);
      continue;
    }
    t->ev[w++] = t->ev[r];
  }
  t->len = w;
}

json_t *mcim_trace_event_to_json(const struct mcim_trace_event *ev)
{
  json_t *j = json_object();
  json_object_set_new(j, "txid", json_string(ev->txn));
  json_object_set_new(j, "n", json_integer(ev->n));
  json_object_set_new(j, "from", json_string(ev->from));
  json_object_set_new(j, "to", json_string(ev->to));
  json_object_set_new(j, "msg", json_string(ev->msg));
  json_object_set_new(j, "time", json_integer(ev->time_us));
  if (ev->cause != MCIM_OK)
    json_object_set_new(j, "cause", json_string(mcim_cause_name(ev->cause)));
  json_object_set_new(j, "body", ev->body ? mcim_trace_redact(ev->body) : json_null());
  return j;
}

static bool copy_str(const json_t *j, const char *key, char *dst, size_t dst_len)
{
  const char *s = json_string_value(json_object_get(j, key));
  if (!s || strlen(s) >= dst_len)
    return false;
  memcpy(dst, s, strlen(s) + 1);
  return true;
}

mcim_cause_t mcim_trace_event_from_json(const json_t *j, struct mcim_trace_event *ev)
{
  memset(ev, 0, sizeof(*ev));
  if (!json_is_object(j))
    return MCIM_BAD_JSON;
  if (!copy_str(j, "txid", ev->txn, sizeof(ev->txn)) ||
      !copy_str(j, "from", ev->from, sizeof(ev->from)) ||
      !copy_str(j, "to", ev->to, sizeof(ev->to)) || !copy_str(j, "msg", ev->msg, sizeof(ev->msg)))
    return MCIM_FIELD_MISSING;
  json_t *n = json_object_get(j, "n"), *time = json_object_get(j, "time");
  if (!json_is_integer(n) || !json_is_integer(time) || json_integer_value(n) < 0 ||
      json_integer_value(n) > 99)
    return MCIM_WRONG_TYPE;
  ev->n = (int)json_integer_value(n);
  ev->time_us = json_integer_value(time);
  const char *cause = json_string_value(json_object_get(j, "cause"));
  if (cause) {
    int c = mcim_cause_from_name(cause);
    ev->cause = c > 0 ? (mcim_cause_t)c : MCIM_INTERNAL;
  }
  json_t *body = json_object_get(j, "body");
  ev->body = (body && !json_is_null(body)) ? mcim_trace_redact(body) : NULL;
  return MCIM_OK;
}

size_t mcim_trace_add_answer(struct mcim_trace *t, const json_t *answer)
{
  size_t i, added = 0;
  json_t *e;
  json_array_foreach(json_object_get(answer, "events"), i, e) {
    struct mcim_trace_event ev;
    if (mcim_trace_event_from_json(e, &ev) != MCIM_OK)
      continue;
    if (mcim_trace_add(t, &ev) == MCIM_OK)
      added++;
    json_decref(ev.body);
  }
  return added;
}
