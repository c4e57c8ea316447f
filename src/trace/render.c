/* Drawing a procedure: text (as the seed numbers its steps), mscgen input,
 * mermaid sequenceDiagram, JSON. Participants appear in order of first use. */
#include <string.h>

#include "mcim/trace.h"

#define MAX_PARTICIPANTS 32

struct participants {
  const char *name[MAX_PARTICIPANTS];
  size_t len;
};

static size_t participant(struct participants *p, const char *name)
{
  for (size_t i = 0; i < p->len; i++)
    if (strcmp(p->name[i], name) == 0)
      return i;
  if (p->len == MAX_PARTICIPANTS)
    return MAX_PARTICIPANTS - 1;
  p->name[p->len] = name;
  return p->len++;
}

static void collect(const struct mcim_trace *t, const char *txn, struct participants *p)
{
  memset(p, 0, sizeof(*p));
  for (size_t i = 0; i < t->len; i++) {
    if (txn && strcmp(t->ev[i].txn, txn) != 0)
      continue;
    participant(p, t->ev[i].from);
    participant(p, t->ev[i].to);
  }
}

/* Labels go between double quotes in msc and after a colon in mermaid: keep them plain. */
static void put_label(FILE *out, const char *s)
{
  for (; *s; s++) {
    char c = *s;
    if (c == '"' || c == '\\' || c == ';' || c == '#' || (unsigned char)c < 0x20)
      c = '\'';
    fputc(c, out);
  }
}

int mcim_trace_format_from_name(const char *name)
{
  if (!name)
    return -1;
  if (strcmp(name, "text") == 0)
    return MCIM_TRACE_TEXT;
  if (strcmp(name, "msc") == 0 || strcmp(name, "svg") == 0)
    return MCIM_TRACE_MSC;
  if (strcmp(name, "mermaid") == 0)
    return MCIM_TRACE_MERMAID;
  if (strcmp(name, "json") == 0)
    return MCIM_TRACE_JSON;
  return -1;
}

static void render_text(const struct mcim_trace *t, const char *txn, FILE *out)
{
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    if (e->n)
      fprintf(out, "%d) ", e->n);
    else
      fputs("-) ", out);
    fprintf(out, "%s -> %s: %s", e->from, e->to, e->msg);
    if (e->cause != MCIM_OK)
      fprintf(out, "  [FAILED: %s]", mcim_cause_name(e->cause));
    fputc('\n', out);
  }
}

static void render_msc(const struct mcim_trace *t, const char *txn, FILE *out)
{
  struct participants p;
  collect(t, txn, &p);
  fputs("msc {\n  hscale=\"1.6\", wordwraparcs=\"true\";\n  ", out);
  for (size_t i = 0; i < p.len; i++) {
    fprintf(out, "%sp%zu [label=\"", i ? ", " : "", i);
    put_label(out, p.name[i]);
    fputs("\"]", out);
  }
  fputs(";\n", out);
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    size_t a = participant(&p, e->from), b = participant(&p, e->to);
    fprintf(out, "  p%zu %s p%zu [label=\"", a, e->cause != MCIM_OK ? "-x" : "=>", b);
    if (e->n)
      fprintf(out, "%d) ", e->n);
    put_label(out, e->msg);
    if (e->cause != MCIM_OK) {
      fprintf(out, " (FAILED: %s)\", textcolour=\"red\", linecolour=\"red\"];\n",
              mcim_cause_name(e->cause));
    } else {
      fputs("\"];\n", out);
    }
  }
  fputs("}\n", out);
}

static void render_mermaid(const struct mcim_trace *t, const char *txn, FILE *out)
{
  struct participants p;
  collect(t, txn, &p);
  fputs("sequenceDiagram\n", out);
  for (size_t i = 0; i < p.len; i++) {
    fprintf(out, "  participant p%zu as ", i);
    put_label(out, p.name[i]);
    fputc('\n', out);
  }
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    size_t a = participant(&p, e->from), b = participant(&p, e->to);
    fprintf(out, "  p%zu%sp%zu: ", a, e->cause != MCIM_OK ? "-x" : "->>", b);
    if (e->n)
      fprintf(out, "%d) ", e->n);
    put_label(out, e->msg);
    if (e->cause != MCIM_OK)
      fprintf(out, " (FAILED: %s)", mcim_cause_name(e->cause));
    fputc('\n', out);
  }
}

static mcim_cause_t render_json(const struct mcim_trace *t, const char *txn, FILE *out)
{
  json_t *root = json_object(), *events = json_array();
  json_object_set_new(root, "txid", json_string(txn ? txn : ""));
  for (size_t i = 0; i < t->len; i++)
    if (!txn || strcmp(t->ev[i].txn, txn) == 0)
      json_array_append_new(events, mcim_trace_event_to_json(&t->ev[i]));
  json_object_set_new(root, "events", events);
  int rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  fputc('\n', out);
  json_decref(root);
  return rc == 0 ? MCIM_OK : MCIM_IO_ERROR;
}

mcim_cause_t mcim_trace_render(const struct mcim_trace *t, const char *txn,
                               enum mcim_trace_format fmt, FILE *out)
{
  switch (fmt) {
  case MCIM_TRACE_TEXT:
    render_text(t, txn, out);
    break;
  case MCIM_TRACE_MSC:
    render_msc(t, txn, out);
    break;
  case MCIM_TRACE_MERMAID:
    render_mermaid(t, txn, out);
    break;
  case MCIM_TRACE_JSON:
    return render_json(t, txn, out);
  }
  return ferror(out) ? MCIM_IO_ERROR : MCIM_OK;
}
