/* Locators: which backend opens "sqlite:PATH", a plain path, "postgres://..." and
 * "postgresql://...". Apart from the front end (store.c) so that a program that opens one
 * backend by itself (the device agent: SQLite, mcim_store_open_with) does not link the
 * others (libpq). */
#include <stdio.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/store.h"

/* Locator prefixes. A row without ops names a backend this build lacks (refused up front by
 * mcim_store_locator_supported). PostgreSQL takes the whole locator (a libpq URI). */
static const struct {
  const char *prefix;
  bool strip;
  const mcim_store_ops_t *ops;
} backends[] = {
    {"sqlite:", true, &mcim_store_sqlite_ops},
    {"postgres://", false, &mcim_store_postgres_ops},
    {"postgresql://", false, &mcim_store_postgres_ops},
};

bool mcim_store_locator_supported(const char *locator, char *why, size_t whylen)
{
  for (size_t i = 0; locator && i < sizeof(backends) / sizeof(backends[0]); i++) {
    size_t n = strlen(backends[i].prefix);
    if (strncmp(locator, backends[i].prefix, n) == 0 && !backends[i].ops) {
      if (why && whylen)
        snprintf(why, whylen, "this build has no store backend for %s locators",
                 backends[i].prefix);
      return false;
    }
  }
  return true;
}

mcim_cause_t mcim_store_open(const char *locator, const mcim_store_opts_t *opts, mcim_store_t **out)
{
  if (!locator || !out)
    return MCIM_INVALID_ARGUMENT;
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
    size_t n = strlen(backends[i].prefix);
    if (strncmp(locator, backends[i].prefix, n) != 0)
      continue;
    if (!backends[i].ops) {
      mcim_log_error("store: backend for \"%s\" is not built in", backends[i].prefix);
      return MCIM_UNSUPPORTED;
    }
    return mcim_store_open_with(backends[i].ops, backends[i].strip ? locator + n : locator, opts,
                                out);
  }
  /* A plain path is the embedded default. */
  return mcim_store_open_with(&mcim_store_sqlite_ops, locator, opts, out);
}
