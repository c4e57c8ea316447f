/* Drawing a procedure: text (numbered lines as the seed writes its steps), mscgen input,
 * mermaid sequenceDiagram, JSON. Lifelines are the seed's entities, labelled by their part
 * in THIS procedure (cast.h), in a fixed order: subscriber, M2ME, TRE, VNO, RO, PVA, old
 * SHO, new SHO, M2MES. Arrows carry the step number; a failed step is marked. JSON stays raw
 * (lab names), as DESIGN.md section 8 fixes it. */
#include <string.h>

#include "mcim/trace.h"
#include "trace/cast.h"

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
  struct mcim_trace_cast c;
  mcim_trace_cast_of(t, txn, &c);
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    mcim_trace_text_line(&c, e, out);
    fputc('\n', out);
  }
}

/* An arrow's label: "7) MSG", "MSG [FAILED: CAUSE]". */
static void put_arrow_label(FILE *out, const struct mcim_trace_event *e)
{
  if (e->n)
    fprintf(out, "%d) ", e->n);
  put_label(out, e->msg);
  if (e->cause != MCIM_OK)
    fprintf(out, " [FAILED: %s]", mcim_cause_name(e->cause));
}

static const char *id_of(const struct mcim_trace_cast *c, const char *name)
{
  const struct mcim_trace_actor *a = mcim_trace_cast_find(c, name);
  return a ? a->id : "others";
}

static void render_msc(const struct mcim_trace *t, const char *txn, FILE *out)
{
  struct mcim_trace_cast c;
  mcim_trace_cast_of(t, txn, &c);
  fputs("msc {\n  hscale=\"2\", wordwraparcs=\"true\";\n  ", out);
  for (size_t i = 0; i < c.len; i++) {
    fprintf(out, "%s%s [label=\"", i ? ", " : "", c.actor[i].id);
    put_label(out, c.actor[i].label);
    fputs("\"]", out);
  }
  fputs(";\n", out);
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    fprintf(out, "  %s %s %s [label=\"", id_of(&c, e->from), e->cause != MCIM_OK ? "-x" : "=>",
            id_of(&c, e->to));
    put_arrow_label(out, e);
    if (e->cause != MCIM_OK)
      fputs("\", textcolour=\"red\", linecolour=\"red\"];\n", out);
    else
      fputs("\"];\n", out);
  }
  fputs("}\n", out);
}

static void render_mermaid(const struct mcim_trace *t, const char *txn, FILE *out)
{
  struct mcim_trace_cast c;
  mcim_trace_cast_of(t, txn, &c);
  fputs("sequenceDiagram\n", out);
  for (size_t i = 0; i < c.len; i++) {
    fprintf(out, "  %s %s as ", strcmp(c.actor[i].name, "subscriber") == 0 ? "actor" : "participant",
            c.actor[i].id);
    put_label(out, c.actor[i].label);
    fputc('\n', out);
  }
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (txn && strcmp(e->txn, txn) != 0)
      continue;
    fprintf(out, "  %s%s%s: ", id_of(&c, e->from), e->cause != MCIM_OK ? "-x" : "->>",
            id_of(&c, e->to));
    put_arrow_label(out, e);
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
