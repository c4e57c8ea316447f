/* Configuration: one JSON object per role instance (ro.json, sho-a.json, ...),
 * checked against a declarative spec the role defines:
 *
 *   static const char *const log_formats[] = {"text", "json", NULL};
 *   static const mcim_config_spec_t ro_spec[] = {
 *     {.name = "listen_port", .type = MCIM_CFG_INT, .required = true, .min = 1, .max = 65535,
 *      .help = "TCP port of the HTTPS server"},
 *     {.name = "database", .type = MCIM_CFG_PATH, .def = "ro.db", .help = "SQLite file"},
 *     {.name = "token_lifetime", .type = MCIM_CFG_DURATION, .def = "5m", .min = 1,
 *      .max = 86400, .help = "access token lifetime"},
 *     {.name = "log_format", .type = MCIM_CFG_ENUM, .def = "text", .allowed = log_formats},
 *   };
 *
 * Loading rejects unknown keys, wrong types, out-of-range values and missing
 * required keys, each with one line naming the file, the key and what was expected:
 *   ro.json: "listen_port": expected an integer 1..65535, got "abc"
 * JSON syntax errors give line and column. Every problem is reported, not only the
 * first. The file is flat: one level of keys with scalar values. */
#ifndef MCIM_CONFIG_H
#define MCIM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mcim/cause.h"

typedef enum mcim_cfg_type {
  MCIM_CFG_STRING = 0, /* JSON string; min/max bound its length in bytes */
  MCIM_CFG_INT,        /* JSON integer; min/max bound the value */
  MCIM_CFG_BOOL,       /* true / false */
  MCIM_CFG_PATH,       /* non-empty string; relative paths are taken from the file's folder */
  MCIM_CFG_DURATION,   /* seconds: an integer, or a string "90s", "5m", "2h", "1d"; min/max in seconds */
  MCIM_CFG_ENUM,       /* a string out of `allowed` */
} mcim_cfg_type_t;

typedef struct mcim_config_spec {
  const char *name;
  mcim_cfg_type_t type;
  bool required;
  /* Default, written as text the way the type reads it ("8443", "true", "5m",
   * "info", "ro.db"); NULL: none (the getter then returns 0 / false / NULL). */
  const char *def;
  /* Inclusive bounds; min == max == 0 means none. Use INT64_MIN / INT64_MAX for
   * one open side. */
  int64_t min, max;
  const char *const *allowed; /* ENUM: NULL-terminated list */
  bool secret;                /* never echo the value (errors, dumps) */
  const char *help;
} mcim_config_spec_t;

typedef struct mcim_config mcim_config_t;

/* Parse and validate `path` against `spec` (which must outlive the config).
 * Problems go to `err` (may be NULL), one line each, separated by '\n'.
 * MCIM_CONFIG_MISSING if the file cannot be read, MCIM_CONFIG_INVALID for syntax or
 * validation problems, MCIM_INTERNAL for a malformed spec (a bug in the role). */
mcim_cause_t mcim_config_load(const char *path, const mcim_config_spec_t *spec, size_t nspec,
                              mcim_config_t **out, char *err, size_t errlen);
/* Same from a string. `name` is used in messages; relative paths are resolved
 * against `base_dir` (NULL: left relative). */
mcim_cause_t mcim_config_load_string(const char *name, const char *json, const char *base_dir,
                                     const mcim_config_spec_t *spec, size_t nspec,
                                     mcim_config_t **out, char *err, size_t errlen);
void mcim_config_free(mcim_config_t *cfg);

/* The file name the config came from. */
const char *mcim_config_file(const mcim_config_t *cfg);
/* Has a value (from the file or a default). */
bool mcim_config_has(const mcim_config_t *cfg, const char *name);
/* Typed getters. Asking for a name the spec lacks, or with the wrong type, is a
 * bug: it is logged and the empty value returned. */
const char *mcim_config_str(const mcim_config_t *cfg, const char *name);  /* STRING, ENUM */
const char *mcim_config_path(const mcim_config_t *cfg, const char *name); /* PATH, resolved */
int64_t mcim_config_int(const mcim_config_t *cfg, const char *name);
bool mcim_config_bool(const mcim_config_t *cfg, const char *name);
int64_t mcim_config_duration(const mcim_config_t *cfg, const char *name); /* seconds */
/* ENUM: index of the value in `allowed`, -1 if unset. */
int mcim_config_enum(const mcim_config_t *cfg, const char *name);

/* A reference of the keys (for --help and docs): name, type, default, help. */
void mcim_config_describe(const mcim_config_spec_t *spec, size_t nspec, FILE *out);

#endif
