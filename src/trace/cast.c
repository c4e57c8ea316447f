/* Who plays which of the seed's entities in one procedure (see cast.h). */
#include "trace/cast.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum rank {
  RANK_SUBSCRIBER,
  RANK_OPERATOR,
  RANK_M2ME,
  RANK_TRE,
  RANK_VNO,
  RANK_RO,
  RANK_PVA,
  RANK_OLD_SHO,
  RANK_NEW_SHO,
  RANK_M2MES,
  RANK_OTHER,
};

/* Lab instances whose role is their name (DESIGN.md section 8), and the lifelines the
 * device agent and the CLI add: the TRE inside the M2ME, the subscriber, the lab admin. */
static const struct {
  const char *name, *entity, *term, *id;
  enum rank rank;
} fixed[] = {
    {"subscriber", "M2ME subscriber", "M2ME subscriber", "subscriber", RANK_SUBSCRIBER},
    {"admin", "operator", "operator (admin)", "admin", RANK_OPERATOR},
    {"tre", "TRE", "TRE", "tre", RANK_TRE},
    {"vno", "VNO", "VNO", "vno", RANK_VNO},
    {"ro", "RO", "RO", "ro", RANK_RO},
    {"pva", "PVA", "PVA", "pva", RANK_PVA},
    {"m2mes", "M2MES", "M2MES", "m2mes", RANK_M2MES},
};
#define NFIXED (sizeof(fixed) / sizeof(fixed[0]))

static int fixed_index(const char *name)
{
  for (size_t i = 0; i < NFIXED; i++)
    if (strcmp(fixed[i].name, name) == 0)
      return (int)i;
  return -1;
}

static bool in_txn(const struct mcim_trace_event *e, const char *txn)
{
  return !txn || strcmp(e->txn, txn) == 0;
}

static bool starts_with(const char *s, const char *prefix)
{
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The new SHO: where the subscriber's order went (step 1); in a switch, the SHO told to
 * resume its subscription. */
static const char *find_new_sho(const struct mcim_trace *t, const char *txn)
{
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (in_txn(e, txn) && e->n == 1 && strcmp(e->from, "subscriber") == 0 &&
        fixed_index(e->to) < 0)
      return e->to;
  }
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (in_txn(e, txn) && starts_with(e->msg, "notification: resume") && fixed_index(e->to) < 0)
      return e->to;
  }
  return NULL;
}

/* The M2ME: it talks to its TRE, gets the owner's instruction, talks to the VNO, attaches. */
static const char *find_device(const struct mcim_trace *t, const char *txn, const char *new_sho)
{
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (in_txn(e, txn) && strcmp(e->to, "tre") == 0 && fixed_index(e->from) < 0)
      return e->from;
  }
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (!in_txn(e, txn))
      continue;
    if (strcmp(e->from, "subscriber") == 0 && fixed_index(e->to) < 0 &&
        (!new_sho || strcmp(e->to, new_sho) != 0))
      return e->to;
    if (strcmp(e->to, "vno") == 0 && fixed_index(e->from) < 0)
      return e->from;
    if (strcmp(e->from, "vno") == 0 && fixed_index(e->to) < 0)
      return e->to;
    if (starts_with(e->msg, "attach (") && fixed_index(e->from) < 0)
      return e->from;
  }
  return NULL;
}

/* A preload or a switch keeps the device's SHO: it is the current SHO, not an old one. */
static bool keeps_current_sho(const struct mcim_trace *t, const char *txn)
{
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (in_txn(e, txn) && e->n == 2 && strcmp(e->from, "subscriber") == 0)
      return starts_with(e->msg, "instruction: switch") ||
             starts_with(e->msg, "instruction: pre-provision");
  }
  return false;
}

struct ctx {
  const char *new_sho, *device;
  bool current;
};

static void set_actor(struct mcim_trace_actor *a, const char *name_in, const struct ctx *x)
{
  /* a private copy: `name_in` may point into the actor being written */
  char name[sizeof(a->name)];
  snprintf(name, sizeof(name), "%s", name_in);
  int f = fixed_index(name);
  snprintf(a->name, sizeof(a->name), "%s", name);
  if (f >= 0) {
    snprintf(a->entity, sizeof(a->entity), "%s", fixed[f].entity);
    snprintf(a->label, sizeof(a->label), "%s", fixed[f].term);
    snprintf(a->term, sizeof(a->term), "%s", fixed[f].term);
    snprintf(a->id, sizeof(a->id), "%s", fixed[f].id);
    a->rank = fixed[f].rank;
  } else if (x->device && strcmp(name, x->device) == 0) {
    snprintf(a->entity, sizeof(a->entity), "M2ME");
    snprintf(a->label, sizeof(a->label), "M2ME (%.64s)", name);
    snprintf(a->term, sizeof(a->term), "M2ME");
    snprintf(a->id, sizeof(a->id), "m2me");
    a->rank = RANK_M2ME;
  } else if (x->new_sho && strcmp(name, x->new_sho) == 0) {
    snprintf(a->entity, sizeof(a->entity), "new SHO");
    snprintf(a->label, sizeof(a->label), "new SHO (%.64s)", name);
    snprintf(a->term, sizeof(a->term), "new SHO (%.64s)", name);
    snprintf(a->id, sizeof(a->id), "newsho");
    a->rank = RANK_NEW_SHO;
  } else if (x->device || x->new_sho) {
    /* every other instance of a procedure with a known M2ME or new SHO is an SHO */
    const char *what = x->current ? "current SHO" : x->new_sho ? "old SHO" : "SHO";
    snprintf(a->entity, sizeof(a->entity), "%s", what);
    snprintf(a->label, sizeof(a->label), "%s (%.64s)", what, name);
    snprintf(a->term, sizeof(a->term), "%s (%.64s)", what, name);
    snprintf(a->id, sizeof(a->id), "%s", x->current ? "cursho" : x->new_sho ? "oldsho" : "sho");
    a->rank = RANK_OLD_SHO;
  } else {
    snprintf(a->entity, sizeof(a->entity), "%s", "");
    snprintf(a->label, sizeof(a->label), "%s", name);
    snprintf(a->term, sizeof(a->term), "%s", name);
    snprintf(a->id, sizeof(a->id), "x");
    a->rank = RANK_OTHER;
  }
}

static void add(struct mcim_trace_cast *c, const char *name, size_t first, const struct ctx *x)
{
  for (size_t i = 0; i < c->len; i++)
    if (strcmp(c->actor[i].name, name) == 0)
      return;
  if (c->len == MCIM_TRACE_MAX_ACTORS)
    return; /* the catch-all is there already */
  struct mcim_trace_actor *a = &c->actor[c->len++];
  memset(a, 0, sizeof(*a));
  a->first = first;
  if (c->len == MCIM_TRACE_MAX_ACTORS) { /* the last place stands for the rest */
    snprintf(a->entity, sizeof(a->entity), "others");
    snprintf(a->label, sizeof(a->label), "others");
    snprintf(a->term, sizeof(a->term), "others");
    snprintf(a->id, sizeof(a->id), "others");
    a->rank = RANK_OTHER + 1;
    return;
  }
  set_actor(a, name, x);
}

static int actor_cmp(const void *pa, const void *pb)
{
  const struct mcim_trace_actor *a = pa, *b = pb;
  if (a->rank != b->rank)
    return a->rank < b->rank ? -1 : 1;
  return a->first < b->first ? -1 : a->first > b->first ? 1 : 0;
}

void mcim_trace_cast_of(const struct mcim_trace *t, const char *txn, struct mcim_trace_cast *c)
{
  memset(c, 0, sizeof(*c));
  struct ctx x = {0};
  x.new_sho = find_new_sho(t, txn);
  x.device = find_device(t, txn, x.new_sho);
  x.current = keeps_current_sho(t, txn);
  size_t k = 0;
  for (size_t i = 0; i < t->len; i++) {
    const struct mcim_trace_event *e = &t->ev[i];
    if (!in_txn(e, txn))
      continue;
    add(c, e->from, k++, &x);
    add(c, e->to, k++, &x);
  }
  qsort(c->actor, c->len, sizeof(c->actor[0]), actor_cmp);
  /* identifiers unique within the chart: oldsho, oldsho2, ...; x1, x2 for the unknown */
  char base[MCIM_TRACE_MAX_ACTORS][sizeof(c->actor[0].id)];
  for (size_t i = 0; i < c->len; i++)
    memcpy(base[i], c->actor[i].id, sizeof(base[i]));
  for (size_t i = 0; i < c->len; i++) {
    int seen = 1;
    for (size_t j = 0; j < i; j++)
      if (strcmp(base[j], base[i]) == 0)
        seen++;
    if (seen > 1 || strcmp(base[i], "x") == 0)
      snprintf(c->actor[i].id, sizeof(c->actor[i].id), "%.16s%d", base[i], seen % 1000);
  }
}

const struct mcim_trace_actor *mcim_trace_cast_find(const struct mcim_trace_cast *c,
                                                    const char *name)
{
  const struct mcim_trace_actor *others = NULL;
  for (size_t i = 0; i < c->len; i++) {
    if (c->actor[i].name[0] && strcmp(c->actor[i].name, name) == 0)
      return &c->actor[i];
    if (!c->actor[i].name[0])
      others = &c->actor[i];
  }
  return others;
}

void mcim_trace_text_line(const struct mcim_trace_cast *c, const struct mcim_trace_event *e,
                          FILE *out)
{
  const struct mcim_trace_actor *a = c ? mcim_trace_cast_find(c, e->from) : NULL;
  const struct mcim_trace_actor *b = c ? mcim_trace_cast_find(c, e->to) : NULL;
  if (e->n)
    fprintf(out, "%d) ", e->n);
  else
    fputs("-) ", out);
  fprintf(out, "%s -> %s: %s", a && a->name[0] ? a->term : e->from,
          b && b->name[0] ? b->term : e->to, e->msg);
  if (e->cause != MCIM_OK)
    fprintf(out, " [FAILED: %s]", mcim_cause_name(e->cause));
}
