/* Configuration files: JSON (jansson) checked against a declarative spec.
 * Messages are for the operator who edits the file: file, key, what was expected,
 * what was found (never the value of a key marked secret). No logging here: the
 * caller decides where the lines go, since logging is itself configured. */
#include "mcim/config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"

#define CONFIG_MAX_FILE (1024 * 1024)
#define GOT_MAX_CHARS 40

struct cfg_value {
  bool set;
  int64_t i; /* INT, DURATION */
  bool b;    /* BOOL */
  char *s;   /* STRING, PATH, ENUM */
  int e;     /* ENUM index */
};

struct mcim_config {
  char *file;
  const mcim_config_spec_t *spec;
  size_t n;
  struct cfg_value *v;
};

/* Where a load collects its problems. */
struct loader {
  const char *name;
  const char *base_dir;
  char *err;
  size_t errlen, used;
  mcim_cause_t first;
};

static void fail(struct loader *L, mcim_cause_t cause, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(struct loader *L, mcim_cause_t cause, const char *key, const char *fmt, ...)
{
  if (L->first == MCIM_OK)
    L->first = cause;
  if (!L->err || L->errlen == 0 || L->used + 1 >= L->errlen)
    return;
  char *p = L->err + L->used;
  size_t room = L->errlen - L->used;
  int n;
  if (key)
    n = snprintf(p, room, "%s%s: \"%s\": ", L->used ? "\n" : "", L->name, key);
  else
    n = snprintf(p, room, "%s%s: ", L->used ? "\n" : "", L->name);
  if (n < 0 || (size_t)n >= room) {
    L->used = L->errlen - 1;
    return;
  }
  p += n;
  room -= (size_t)n;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(p, room, fmt, ap);
  va_end(ap);
  L->used += (size_t)n + (m < 0 ? 0 : (size_t)m < room ? (size_t)m : room - 1);
}

/* ---- describing what was expected and what was found ---- */

static bool bounded(const mcim_config_spec_t *s)
{
  return !(s->min == 0 && s->max == 0);
}

static void describe_range(const mcim_config_spec_t *s, const char *unit, char *buf, size_t len)
{
  if (!bounded(s))
    snprintf(buf, len, "%s", "");
  else if (s->max == INT64_MAX)
    snprintf(buf, len, " >= %lld%s", (long long)s->min, unit);
  else if (s->min == INT64_MIN)
    snprintf(buf, len, " <= %lld%s", (long long)s->max, unit);
  else
    snprintf(buf, len, " %lld..%lld%s", (long long)s->min, (long long)s->max, unit);
}

static void describe_expected(const mcim_config_spec_t *s, char *buf, size_t len)
{
  char range[64];
  switch (s->type) {
  case MCIM_CFG_INT:
    describe_range(s, "", range, sizeof(range));
    snprintf(buf, len, "an integer%s", range);
    break;
  case MCIM_CFG_BOOL:
    snprintf(buf, len, "true or false");
    break;
  case MCIM_CFG_DURATION:
    describe_range(s, " seconds", range, sizeof(range));
    snprintf(buf, len, "a duration%s (seconds, or a string like \"90s\", \"5m\", \"2h\", \"1d\")",
             range);
    break;
  case MCIM_CFG_PATH:
    snprintf(buf, len, "a path (a non-empty string)");
    break;
  case MCIM_CFG_ENUM: {
    size_t o = (size_t)snprintf(buf, len, "one of");
    for (size_t i = 0; s->allowed && s->allowed[i] && o < len; i++)
      o += (size_t)snprintf(buf + o, len - o, "%s \"%s\"", i ? "," : "", s->allowed[i]);
    break;
  }
  default:
    describe_range(s, " bytes", range, sizeof(range));
    snprintf(buf, len, "a string%s%s", bounded(s) ? " of" : "", range);
    break;
  }
}

static const char *json_kind(const json_t *v)
{
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "an object";
  case JSON_ARRAY:
    return "an array";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a number";
  case JSON_TRUE:
  case JSON_FALSE:
    return "a boolean";
  default:
    return "null";
  }
}

/* A short, printable rendering of a found value. */
static void describe_got(const json_t *v, bool secret, char *buf, size_t len)
{
  if (secret && !json_is_null(v)) {
    snprintf(buf, len, "%s (value hidden)", json_kind(v));
    return;
  }
  switch (json_typeof(v)) {
  case JSON_STRING: {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), o = 0;
    if (len < 8) {
      snprintf(buf, len, "%s", "");
      return;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < n && i < GOT_MAX_CHARS && o + 6 < len; i++) {
      unsigned char c = (unsigned char)s[i];
      if (c == '"' || c == '\\')
        o += (size_t)snprintf(buf + o, len - o, "\\%c", c);
      else if (c < 0x20 || c >= 0x7f)
        o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
      else
        buf[o++] = (char)c;
    }
    snprintf(buf + o, len - o, "%s\"", n > GOT_MAX_CHARS ? "..." : "");
    break;
  }
  case JSON_INTEGER:
    snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    break;
  case JSON_REAL:
    snprintf(buf, len, "%g", json_real_value(v));
    break;
  case JSON_TRUE:
    snprintf(buf, len, "true");
    break;
  case JSON_FALSE:
    snprintf(buf, len, "false");
    break;
  default:
    snprintf(buf, len, "%s", json_kind(v));
    break;
  }
}

/* ---- value parsing ---- */

static bool in_range(const mcim_config_spec_t *s, int64_t v)
{
  return !bounded(s) || (v >= s->min && v <= s->max);
}

/* "300", "90s", "5m", "2h", "1d" -> seconds. */
static bool parse_duration(const char *str, int64_t *out)
{
  int64_t v = 0, mult = 1;
  size_t i = 0;
  if (!str || !(str[0] >= '0' && str[0] <= '9'))
    return false;
  for (; str[i] >= '0' && str[i] <= '9'; i++) {
    if (v > (INT64_MAX - 9) / 10)
      return false;
    v = v * 10 + (str[i] - '0');
  }
  switch (str[i]) {
  case '\0': /* seconds */
  case 's':
    break;
  case 'm':
    mult = 60;
    break;
  case 'h':
    mult = 3600;
    break;
  case 'd':
    mult = 86400;
    break;
  default:
    return false;
  }
  if (str[i] && str[i + 1])
    return false;
  if (v > INT64_MAX / mult)
    return false;
  *out = v * mult;
  return true;
}

static char *join_path(const char *dir, const char *rel)
{
  size_t n = strlen(dir) + 1 + strlen(rel) + 1;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, rel);
  return p;
}

/* Check one JSON value against its spec and store it. Returns false when the value
 * does not fit (the caller reports it); *nomem on allocation failure. */
static bool take_value(const struct loader *L, const mcim_config_spec_t *s, const json_t *j,
                       struct cfg_value *out, bool *nomem)
{
  const char *str = json_is_string(j) ? json_string_value(j) : NULL;
  int64_t v = 0;

  *nomem = false;
  switch (s->type) {
  case MCIM_CFG_INT:
    if (!json_is_integer(j))
      return false;
    v = (int64_t)json_integer_value(j);
    if (!in_range(s, v))
      return false;
    out->i = v;
    break;
  case MCIM_CFG_BOOL:
    if (!json_is_boolean(j))
      return false;
    out->b = json_is_true(j);
    break;
  case MCIM_CFG_DURATION:
    if (json_is_integer(j))
      v = (int64_t)json_integer_value(j);
    else if (!parse_duration(str, &v))
      return false;
    if (v < 0 || !in_range(s, v))
      return false;
    out->i = v;
    break;
  case MCIM_CFG_ENUM: {
    int found = -1;
    for (int i = 0; str && s->allowed && s->allowed[i]; i++)
      if (strcmp(str, s->allowed[i]) == 0)
        found = i;
    if (found < 0)
      return false;
    out->e = found;
    out->s = strdup(str);
    break;
  }
  case MCIM_CFG_PATH:
    if (!str || !*str)
      return false;
    if (str[0] != '/' && L->base_dir)
      out->s = join_path(L->base_dir, str);
    else
      out->s = strdup(str);
    break;
  default: /* STRING */
    if (!str || !in_range(s, (int64_t)json_string_length(j)))
      return false;
    out->s = strdup(str);
    break;
  }
  if ((s->type == MCIM_CFG_ENUM || s->type == MCIM_CFG_PATH || s->type == MCIM_CFG_STRING) &&
      !out->s) {
    *nomem = true;
    return false;
  }
  out->set = true;
  return true;
}

/* A default is text; make it the JSON value a file would hold. */
static json_t *default_json(const mcim_config_spec_t *s)
{
  if (s->type == MCIM_CFG_INT) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s->def, &end, 10);
    if (errno == 0 && end != s->def && *end == '\0')
      return json_integer(v);
  } else if (s->type == MCIM_CFG_BOOL) {
    if (strcmp(s->def, "true") == 0)
      return json_true();
    if (strcmp(s->def, "false") == 0)
      return json_false();
  }
  return json_string(s->def);
}

/* ---- spec sanity (bugs in a role, reported as such) ---- */

static bool check_spec(struct loader *L, const mcim_config_spec_t *spec, size_t n)
{
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    const mcim_config_spec_t *s = &spec[i];
    if (!s->name || !*s->name || (unsigned)s->type > MCIM_CFG_ENUM ||
        (s->type == MCIM_CFG_ENUM && (!s->allowed || !s->allowed[0])) || s->min > s->max) {
      fail(L, MCIM_INTERNAL, s->name ? s->name : "(null)", "malformed spec entry %zu", i);
      ok = false;
      continue;
    }
    for (size_t k = 0; k < i; k++)
      if (spec[k].name && strcmp(spec[k].name, s->name) == 0) {
        fail(L, MCIM_INTERNAL, s->name, "named twice in the spec");
        ok = false;
      }
  }
  return ok;
}

/* Edit distance, to suggest the key meant by a typo. */
static size_t distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b), row[65];
  if (la > 64 || lb > 64)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      if (up + 1 < best)
        best = up + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static const char *closest(const mcim_config_spec_t *spec, size_t n, const char *key)
{
  const char *best = NULL;
  size_t bestd = 3; /* suggest only near misses */
  for (size_t i = 0; i < n; i++) {
    size_t d = distance(key, spec[i].name);
    if (d < bestd) {
      bestd = d;
      best = spec[i].name;
    }
  }
  return best;
}

/* ---- loading ---- */

static void config_free_values(mcim_config_t *cfg)
{
  for (size_t i = 0; cfg->v && i < cfg->n; i++)
    if (cfg->v[i].s) {
      /* Strings may be secrets (a database password). */
      mcim_wipe(cfg->v[i].s, strlen(cfg->v[i].s));
      free(cfg->v[i].s);
    }
  free(cfg->v);
}

void mcim_config_free(mcim_config_t *cfg)
{
  if (!cfg)
    return;
  config_free_values(cfg);
  free(cfg->file);
  free(cfg);
}

static mcim_cause_t load_root(struct loader *L, json_t *root, const mcim_config_spec_t *spec,
                              size_t n, mcim_config_t **out)
{
  mcim_config_t *cfg = NULL;
  const char *key;
  json_t *val;
  char exp[256], got[128];
  bool nomem = false;

  if (!json_is_object(root)) {
    fail(L, MCIM_CONFIG_INVALID, NULL, "expected a JSON object at the top level, got %s",
         json_kind(root));
    goto cleanup;
  }
  cfg = calloc(1, sizeof(*cfg));
  if (cfg)
    cfg->v = calloc(n ? n : 1, sizeof(*cfg->v));
  if (cfg)
    cfg->file = strdup(L->name);
  if (!cfg || !cfg->v || !cfg->file) {
    fail(L, MCIM_NO_MEMORY, NULL, "out of memory");
    goto cleanup;
  }
  cfg->spec = spec;
  cfg->n = n;

  /* Keys of the file, in file order. */
  json_object_foreach(root, key, val) {
    size_t i = 0;
    while (i < n && strcmp(spec[i].name, key) != 0)
      i++;
    if (i == n) {
      const char *near = closest(spec, n, key);
      if (near)
        fail(L, MCIM_CONFIG_INVALID, key, "unknown key (did you mean \"%s\"?)", near);
      else
        fail(L, MCIM_CONFIG_INVALID, key, "unknown key");
      continue;
    }
    if (take_value(L, &spec[i], val, &cfg->v[i], &nomem))
      continue;
    if (nomem) {
      fail(L, MCIM_NO_MEMORY, key, "out of memory");
      continue;
    }
    describe_expected(&spec[i], exp, sizeof(exp));
    describe_got(val, spec[i].secret, got, sizeof(got));
    fail(L, MCIM_CONFIG_INVALID, key, "expected %s, got %s", exp, got);
  }

  /* Keys the file left out: defaults, or a missing required key. */
  for (size_t i = 0; i < n; i++) {
    const mcim_config_spec_t *s = &spec[i];
    if (json_object_get(root, s->name))
      continue;
    if (s->required) {
      describe_expected(s, exp, sizeof(exp));
      fail(L, MCIM_CONFIG_INVALID, s->name, "required key is missing (expected %s)", exp);
      continue;
    }
    if (!s->def)
      continue;
    json_t *dj = default_json(s);
    bool ok = dj && take_value(L, s, dj, &cfg->v[i], &nomem);
    json_decref(dj);
    if (!ok) {
      describe_expected(s, exp, sizeof(exp));
      fail(L, nomem || !dj ? MCIM_NO_MEMORY : MCIM_INTERNAL, s->name,
           "the built-in default does not fit its spec (expected %s)", exp);
    }
  }

  if (L->first == MCIM_OK) {
    *out = cfg;
    cfg = NULL;
  }

cleanup:
  mcim_config_free(cfg);
  return L->first == MCIM_OK ? MCIM_OK : L->first;
}

static mcim_cause_t load_text(struct loader *L, const char *text, size_t len,
                              const mcim_config_spec_t *spec, size_t n, mcim_config_t **out)
{
  json_error_t jerr;
  json_t *root = NULL;

  if (!check_spec(L, spec, n))
    goto cleanup;
  root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (L->first == MCIM_OK)
      L->first = MCIM_CONFIG_INVALID;
    /* Not through fail(): the location comes before the message. */
    if (L->err && L->errlen)
      snprintf(L->err + L->used, L->errlen - L->used, "%s%s:%d:%d: invalid JSON: %s",
               L->used ? "\n" : "", L->name, jerr.line, jerr.column, jerr.text);
    goto cleanup;
  }
  load_root(L, root, spec, n, out);

cleanup:
  json_decref(root);
  return L->first;
}

mcim_cause_t mcim_config_load_string(const char *name, const char *json, const char *base_dir,
                                     const mcim_config_spec_t *spec, size_t nspec,
                                     mcim_config_t **out, char *err, size_t errlen)
{
  struct loader L = {name ? name : "config", base_dir, err, errlen, 0, MCIM_OK};
  if (err && errlen)
    err[0] = '\0';
  if (!json || !out || (nspec && !spec))
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  return load_text(&L, json, strlen(json), spec, nspec, out);
}

mcim_cause_t mcim_config_load(const char *path, const mcim_config_spec_t *spec, size_t nspec,
                              mcim_config_t **out, char *err, size_t errlen)
{
  struct loader L = {path, NULL, err, errlen, 0, MCIM_OK};
  char *buf = NULL, *dir = NULL;
  size_t len = 0;
  FILE *f = NULL;

  if (err && errlen)
    err[0] = '\0';
  if (!path || !out || (nspec && !spec))
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;

  f = fopen(path, "rb");
  if (!f) {
    fail(&L, MCIM_CONFIG_MISSING, NULL, "cannot read: %s", strerror(errno));
    goto cleanup;
  }
  buf = malloc(CONFIG_MAX_FILE + 1);
  if (!buf) {
    fail(&L, MCIM_NO_MEMORY, NULL, "out of memory");
    goto cleanup;
  }
  len = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
  if (ferror(f)) {
    /* A directory opens but does not read. */
    fail(&L, MCIM_CONFIG_MISSING, NULL, "cannot read: %s", strerror(errno));
    goto cleanup;
  }
  if (len > CONFIG_MAX_FILE) {
    fail(&L, MCIM_CONFIG_INVALID, NULL, "larger than %d bytes", CONFIG_MAX_FILE);
    goto cleanup;
  }
  /* Relative paths in the file are relative to the file's folder. */
  const char *slash = strrchr(path, '/');
  if (slash) {
    dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (!dir) {
      fail(&L, MCIM_NO_MEMORY, NULL, "out of memory");
      goto cleanup;
    }
    L.base_dir = dir;
  }
  load_text(&L, buf, len, spec, nspec, out);

cleanup:
  if (f)
    fclose(f);
  if (buf) {
    mcim_wipe(buf, len);
    free(buf);
  }
  free(dir);
  return L.first;
}

/* ---- getters ---- */

static const char *type_name(mcim_cfg_type_t t)
{
  static const char *const names[] = {"string", "int", "bool", "path", "duration", "enum"};
  return (unsigned)t <= MCIM_CFG_ENUM ? names[t] : "?";
}

static const struct cfg_value *lookup(const mcim_config_t *cfg, const char *name,
                                      mcim_cfg_type_t t1, mcim_cfg_type_t t2)
{
  if (!cfg || !name)
    return NULL;
  for (size_t i = 0; i < cfg->n; i++) {
    if (strcmp(cfg->spec[i].name, name) != 0)
      continue;
    if (cfg->spec[i].type == t1 || cfg->spec[i].type == t2)
      return &cfg->v[i];
    break;
  }
  mcim_log_error("config %s: the program asked for \"%s\" as %s, which its spec does not define",
                 cfg->file, name, type_name(t1));
  return NULL;
}

const char *mcim_config_file(const mcim_config_t *cfg)
{
  return cfg ? cfg->file : NULL;
}

bool mcim_config_has(const mcim_config_t *cfg, const char *name)
{
  for (size_t i = 0; cfg && name && i < cfg->n; i++)
    if (strcmp(cfg->spec[i].name, name) == 0)
      return cfg->v[i].set;
  return false;
}

const char *mcim_config_str(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_STRING, MCIM_CFG_ENUM);
  return v && v->set ? v->s : NULL;
}

const char *mcim_config_path(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_PATH, MCIM_CFG_PATH);
  return v && v->set ? v->s : NULL;
}

int64_t mcim_config_int(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_INT, MCIM_CFG_INT);
  return v && v->set ? v->i : 0;
}

bool mcim_config_bool(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_BOOL, MCIM_CFG_BOOL);
  return v && v->set && v->b;
}

int64_t mcim_config_duration(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_DURATION, MCIM_CFG_DURATION);
  return v && v->set ? v->i : 0;
}

int mcim_config_enum(const mcim_config_t *cfg, const char *name)
{
  const struct cfg_value *v = lookup(cfg, name, MCIM_CFG_ENUM, MCIM_CFG_ENUM);
  return v && v->set ? v->e : -1;
}

void mcim_config_describe(const mcim_config_spec_t *spec, size_t nspec, FILE *out)
{
  char exp[256];
  for (size_t i = 0; spec && out && i < nspec; i++) {
    const mcim_config_spec_t *s = &spec[i];
    describe_expected(s, exp, sizeof(exp));
    fprintf(out, "%-24s %s", s->name, exp);
    if (s->required)
      fprintf(out, "; required");
    else if (s->def)
      fprintf(out, "; default %s", s->secret ? "(hidden)" : s->def);
    fprintf(out, "\n%-24s %s\n", "", s->help ? s->help : "");
  }
}
