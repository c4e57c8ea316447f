/* Versioned schema migrations.
 *
 * schema_version holds one row per component: the version applied last, its
 * description and when. Each missing step runs in its own transaction together
 * with the version bump, so a crash or a failing step leaves the database at the
 * previous version, never between two.
 *
 * Several processes may start at once (instances of a role on one PostgreSQL, or a
 * restart racing a stale process): inside each step's transaction the component's
 * row is locked (a no-op UPDATE: row lock on PostgreSQL, and BEGIN IMMEDIATE
 * already serializes SQLite) and the version re-read, so a step another process
 * applied meanwhile is skipped, not applied twice. */
#include "mcim/store.h"

#include "mcim/log.h"
#include "mcim/util.h"

static const char create_sql[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                 " component TEXT PRIMARY KEY,"
                                 " version BIGINT NOT NULL,"
                                 " description TEXT NOT NULL,"
                                 " applied_at BIGINT NOT NULL)";

static mcim_cause_t bootstrap(mcim_store_t *st, const char *component)
{
  /* Two PostgreSQL sessions creating the table at once can make one fail even
   * with IF NOT EXISTS; the second attempt then sees the table. */
  mcim_cause_t rc = mcim_store_exec_script(st, create_sql);
  if (rc != MCIM_OK)
    rc = mcim_store_exec_script(st, create_sql);
  if (rc != MCIM_OK)
    return rc;
  mcim_val_t p[] = {MCIM_TEXT(component), MCIM_TEXT("created"), MCIM_INT(mcim_now())};
  return mcim_store_exec(st,
                         "INSERT INTO schema_version (component, version, description, applied_at)"
                         " VALUES (?, 0, ?, ?) ON CONFLICT (component) DO NOTHING",
                         p, MCIM_NPARAMS(p), NULL, NULL);
}

mcim_cause_t mcim_store_schema_version(mcim_store_t *st, const char *component, int64_t *version)
{
  if (!st || !component || !version)
    return MCIM_INVALID_ARGUMENT;
  mcim_val_t p[] = {MCIM_TEXT(component)};
  mcim_cause_t rc = mcim_store_query_int(
      st, "SELECT version FROM schema_version WHERE component = ?", p, 1, version);
  if (rc == MCIM_NOT_FOUND) {
    *version = 0;
    rc = MCIM_OK;
  }
  return rc;
}

static mcim_cause_t check_steps(const char *component, const mcim_migration_t *steps, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (steps[i].version != (int64_t)i + 1 || !steps[i].sql || !steps[i].description) {
      mcim_log_error("schema %s: migration step %zu is malformed (versions must run 1, 2, 3 ...)",
                     component, i);
      return MCIM_INVALID_ARGUMENT;
    }
  }
  return MCIM_OK;
}

static mcim_cause_t too_new(const char *component, int64_t have, size_t known)
{
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_STORE_SCHEMA_TOO_NEW,
                 "schema %s: database is at version %lld, this program knows up to %zu;"
                 " run a newer program or restore a matching backup",
                 component, (long long)have, known);
  return MCIM_STORE_SCHEMA_TOO_NEW;
}

/* One step, in its own transaction. *applied tells whether it ran here. */
static mcim_cause_t apply_step(mcim_store_t *st, const char *component,
                               const mcim_migration_t *step, size_t nsteps, bool *applied)
{
  mcim_val_t who[] = {MCIM_TEXT(component)};
  int64_t cur = 0;
  mcim_cause_t rc;

  *applied = false;
  rc = mcim_store_begin(st);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_store_exec(st, "UPDATE schema_version SET version = version WHERE component = ?", who,
                       1, NULL, NULL);
  if (rc == MCIM_OK)
    rc = mcim_store_schema_version(st, component, &cur);
  if (rc != MCIM_OK)
    goto cleanup;
  if (cur > (int64_t)nsteps) {
    rc = too_new(component, cur, nsteps);
    goto cleanup;
  }
  if (cur >= step->version)
    goto cleanup; /* another process got here first */

  rc = mcim_store_exec_script(st, step->sql);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "schema %s: step %lld (%s) failed: %s", component,
                   (long long)step->version, step->description, mcim_store_errmsg(st));
    goto cleanup;
  }
  mcim_val_t p[] = {MCIM_INT(step->version), MCIM_TEXT(step->description), MCIM_INT(mcim_now()),
                    MCIM_TEXT(component)};
  rc = mcim_store_exec(st,
                       "UPDATE schema_version SET version = ?, description = ?, applied_at = ?"
                       " WHERE component = ?",
                       p, MCIM_NPARAMS(p), NULL, NULL);
  if (rc == MCIM_OK)
    *applied = true;

cleanup:
  if (rc == MCIM_OK) {
    rc = mcim_store_commit(st);
    if (rc != MCIM_OK)
      *applied = false;
  } else {
    (void)mcim_store_rollback(st);
  }
  return rc;
}

mcim_cause_t mcim_store_migrate(mcim_store_t *st, const char *component,
                                const mcim_migration_t *steps, size_t nsteps)
{
  int64_t cur = 0;
  mcim_cause_t rc;

  if (!st || !component || !*component || (nsteps && !steps) || mcim_store_in_txn(st))
    return MCIM_INVALID_ARGUMENT;
  rc = check_steps(component, steps, nsteps);
  if (rc != MCIM_OK)
    return rc;
  rc = bootstrap(st, component);
  if (rc == MCIM_OK)
    rc = mcim_store_schema_version(st, component, &cur);
  if (rc != MCIM_OK)
    return rc;
  /* Refuse before touching anything: an older program must not write to a
   * schema it does not know. */
  if (cur > (int64_t)nsteps)
    return too_new(component, cur, nsteps);

  for (size_t i = (size_t)cur; i < nsteps; i++) {
    bool applied = false;
    rc = apply_step(st, component, &steps[i], nsteps, &applied);
    if (rc != MCIM_OK)
      return rc;
    if (applied)
      mcim_log_info("schema %s: applied step %lld: %s", component, (long long)steps[i].version,
                    steps[i].description);
  }
  return MCIM_OK;
}
