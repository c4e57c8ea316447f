/* `mcim loadgen`'s third phase (loadgen.c): the invariants of DESIGN.md section 4 for every
 * device of the run, once every role's outbox is drained, read from the roles' stores (the
 * SHOs' AuC, the RO's DRF) and from what each device's TRE showed at the end of its sequence.
 * Apart from loadgen.c: a check of the stores after the run, not the run. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lab/lab_priv.h"
#include "lab/loadgen_priv.h"
#include "mcim/store.h"

/* A role's store, as its configuration names it (a relative SQLite file: in its folder). */
static mcim_cause_t role_store(const struct lg *g, const char *role, mcim_store_t **out)
{
  char path[PATH_MAX], loc[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s/%s.json", g->o->lab_dir, role, role);
  json_t *cfg = json_load_file(path, 0, NULL);
  const char *db = json_string_value(json_object_get(cfg, "database"));
  if (!db) {
    json_decref(cfg);
    return MCIM_CONFIG_MISSING;
  }
  if (strstr(db, "://") || db[0] == '/')
    snprintf(loc, sizeof(loc), "%s", db);
  else
    snprintf(loc, sizeof(loc), "%s/%s/%s", g->o->lab_dir, role, db);
  json_decref(cfg);
  return mcim_store_open(loc, NULL, out);
}

struct owner_rows {
  json_t *map; /* device -> [sho, ...] */
  const char *sho;
};

static mcim_cause_t owner_row(const mcim_row_t *row, void *arg)
{
  struct owner_rows *o = arg;
  const char *dev = mcim_row_text(row, 0);
  const char *sho = o->sho ? o->sho : mcim_row_text(row, 1);
  if (!dev || !sho)
    return MCIM_OK;
  json_t *list = json_object_get(o->map, dev);
  if (!list) {
    list = json_array();
    json_object_set_new(o->map, dev, list);
  }
  json_array_append_new(list, json_string(sho));
  return MCIM_OK;
}

static bool outboxes_drained(const struct lg *g)
{
  size_t i;
  json_t *r;
  json_array_foreach (json_object_get(g->lab_json, "roles"), i, r) {
    mcim_store_t *st = NULL;
    int64_t n = 0;
    const char *name = json_string_value(json_object_get(r, "name"));
    /* a role's instances share its store: its first answers for all */
    if (!name || json_integer_value(json_object_get(r, "instance")) > 1 ||
        role_store(g, name, &st) != MCIM_OK)
      continue;
    mcim_cause_t rc = mcim_store_query_int(
        st, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'", NULL, 0, &n);
    mcim_store_close(st);
    if (rc == MCIM_OK && n > 0)
      return false;
  }
  return true;
}

static void problem(json_t *list, size_t *count, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(json_t *list, size_t *count, const char *fmt, ...)
{
  char buf[300];
  va_list ap;
  (*count)++;
  if (json_array_size(list) >= 50)
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  json_array_append_new(list, json_string(buf));
}

/* `arr` holds exactly one name, `want` (a row's name that is not a string counts as another). */
static bool only(const json_t *arr, const char *want)
{
  const char *v = json_string_value(json_array_get(arr, 0));
  return json_array_size(arr) == 1 && v && strcmp(v, want) == 0;
}

/* DESIGN.md section 4, for every device of this run. */
json_t *lg_invariants(struct lg *g)
{
  json_t *list = json_array(), *active = json_object(), *subscribed = json_object();
  size_t count = 0;
  char like[32];
  snprintf(like, sizeof(like), "lg%s-%%", g->run);
  for (int waited = 0; waited < 60000 && !outboxes_drained(g); waited += 200)
    lg_sleep_ms(200);
  if (!outboxes_drained(g))
    problem(list, &count, "the roles' outboxes were not drained within 60 s");
  for (size_t k = 0; k < g->nshos; k++) {
    mcim_store_t *st = NULL;
    struct owner_rows o = {.map = active, .sho = g->shos[k]};
    mcim_val_t p[] = {MCIM_TEXT(like)};
    if (role_store(g, g->shos[k], &st) != MCIM_OK ||
        mcim_store_exec(st, "SELECT device FROM auc WHERE state = 'active' AND device LIKE ?", p, 1,
                        owner_row, &o) != MCIM_OK)
      problem(list, &count, "cannot read %s's AuC", g->shos[k]);
    mcim_store_close(st);
  }
  mcim_store_t *ro = NULL;
  struct owner_rows o = {.map = subscribed, .sho = NULL};
  mcim_val_t p[] = {MCIM_TEXT(like)};
  if (role_store(g, "ro", &ro) != MCIM_OK ||
      mcim_store_exec(ro,
                      "SELECT device, sho FROM drf WHERE state = 'subscribed' AND device LIKE ?", p,
                      1, owner_row, &o) != MCIM_OK)
    problem(list, &count, "cannot read the DRF");
  mcim_store_close(ro);
  for (long i = 0; i < g->o->devices; i++) {
    char name[64];
    const struct lg_device *ld = &g->dev[i];
    lg_dev_name(g, i, name, sizeof(name));
    json_t *a = json_object_get(active, name), *s = json_object_get(subscribed, name);
    if (json_array_size(a) > 1)
      problem(list, &count, "%s: %zu active subscriptions on the network side", name,
              json_array_size(a));
    if (ld->expect[0]) {
      if (!only(a, ld->expect))
        problem(list, &count, "%s: not active at %s on the network side", name, ld->expect);
      if (!only(s, ld->expect))
        problem(list, &count, "%s: the DRF does not hold it subscribed at %s (%zu entries)", name,
                ld->expect, json_array_size(s));
    }
    if (ld->tre_problem[0])
      problem(list, &count, "%s: %s", name, ld->tre_problem);
  }
  json_decref(active);
  json_decref(subscribed);
  if (count == 0) {
    json_decref(list);
    return json_string("ok");
  }
  return list;
}
