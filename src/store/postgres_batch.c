/* The PostgreSQL backend's batches (mcim_store_begin_batch): a transaction of writes in one
 * round trip (docs/store.md, "Batches"). */
#include "store/postgres_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct batch_stmt {
  struct plan pl;
  const char **values;
  int *lengths, *formats;
  char (*ints)[24];
  char *sig;
  bool parsed; /* its Parse, if it had one, succeeded */
};

static void batch_stmt_clear(struct batch_stmt *b)
{
  mcim_pg_plan_free(&b->pl);
  free((void *)b->values);
  free(b->lengths);
  free(b->formats);
  free(b->ints);
  free(b->sig);
}

static mcim_cause_t batch_stmt_make(struct pg_conn *c, const mcim_store_stmt_t *s,
                                    struct batch_stmt *b)
{
  size_t n = s->nparams;
  if (n > 65535) {
    mcim_pg_set_err(c, "more than 65535 parameters");
    return MCIM_INVALID_ARGUMENT;
  }
  b->values = calloc(n + 1, sizeof(*b->values));
  b->lengths = calloc(n + 1, sizeof(*b->lengths));
  b->formats = calloc(n + 1, sizeof(*b->formats));
  b->ints = calloc(n + 1, sizeof(*b->ints));
  b->sig = calloc(n + 1, 1);
  if (!b->values || !b->lengths || !b->formats || !b->ints || !b->sig)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc =
      mcim_pg_bind_params(c, s->params, n, b->values, b->lengths, b->formats, b->ints, b->sig);
  return rc == MCIM_OK ? mcim_pg_plan_stmt(c, s->sql, b->sig, n, &b->pl) : rc;
}

/* The whole transaction in one pipeline: BEGIN, [SET LOCAL synchronous_commit], the writers'
 * lock, each statement ([Parse] Bind/Execute), COMMIT, Sync: one round trip, where
 * begin/exec/commit take 2 + n, each waited for under the writers' lock; changes[i] gets the
 * rows the i-th statement changed (PQcmdTuples). After a failure the
 * server skips everything up to the Sync and the transaction stays open, aborted: rolled back
 * here. The statements are planned (and a cache slot freed, DEALLOCATE) before the pipeline,
 * outside any transaction. */
mcim_cause_t mcim_pg_commit_batch(void *conn, bool relaxed, const mcim_store_stmt_t *stmts,
                                  size_t n, int64_t *changes)
{
  struct pg_conn *c = conn;
  struct batch_stmt *b = NULL;
  enum cmd *cmds = NULL;
  size_t *of = NULL, ncmds = 0;
  bool sent = true;

  mcim_pg_set_err(c, "");
  if (c->txn || c->read_only) {
    mcim_pg_set_err(c, "a batch inside a transaction, or on a read-only handle");
    return MCIM_INVALID_ARGUMENT;
  }
  mcim_cause_t rc = mcim_pg_ensure_connected(c);
  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_NO_MEMORY;
  b = calloc(n ? n : 1, sizeof(*b));
  cmds = calloc(2 * n + 4, sizeof(*cmds));
  of = calloc(2 * n + 4, sizeof(*of));
  if (!b || !cmds || !of)
    goto cleanup;
  for (size_t i = 0; i < n; i++) {
    rc = batch_stmt_make(c, &stmts[i], &b[i]);
    if (rc != MCIM_OK)
      goto cleanup;
  }

  (void)mcim_pg_fixed_prepare(c);
  if (PQenterPipelineMode(c->db) != 1) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    rc = MCIM_STORE_ERROR;
    goto cleanup;
  }
  const enum pg_fixed head[] = {FIX_BEGIN, FIX_RELAX, FIX_LOCK};
  for (size_t k = 0; k < 3; k++) {
    if (head[k] == FIX_RELAX && !relaxed)
      continue;
    sent = sent && mcim_pg_send_fixed(c, head[k]) == 1;
    cmds[ncmds++] = CMD_WRAP;
  }
  for (size_t i = 0; i < n; i++) {
    struct plan *pl = &b[i].pl;
    if (pl->prepare) {
      sent =
          sent && PQsendPrepare(c->db, pl->name, pl->dsql, (int)stmts[i].nparams, pl->types) == 1;
      of[ncmds] = i;
      cmds[ncmds++] = CMD_PREPARE;
    }
    sent = sent && PQsendQueryPrepared(c->db, pl->name, (int)stmts[i].nparams, b[i].values,
                                       b[i].lengths, b[i].formats, 0) == 1;
    of[ncmds] = i;
    cmds[ncmds++] = CMD_EXEC;
  }
  sent = sent && mcim_pg_send_fixed(c, FIX_COMMIT) == 1;
  cmds[ncmds++] = CMD_COMMIT;
  sent = sent && PQpipelineSync(c->db) == 1;
  rc = MCIM_OK;
  if (!sent) {
    mcim_pg_set_err_line(c, PQerrorMessage(c->db));
    rc = MCIM_STORE_ERROR;
    ncmds = 0; /* nothing reliable to read: drained below */
  }
  for (size_t k = 0; k < ncmds; k++) {
    PGresult *res = mcim_pg_pipeline_next(c, &rc);
    if (!res)
      break;
    ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_PIPELINE_ABORTED) {
      PQclear(res); /* skipped after the failure, which is reported */
      continue;
    }
    if (!mcim_pg_result_ok(res)) {
      if (rc == MCIM_OK) {
        mcim_pg_set_err_result(c, res);
        rc = mcim_pg_result_cause(res);
      }
    } else if (cmds[k] == CMD_PREPARE) {
      b[of[k]].parsed = true;
    } else if (cmds[k] == CMD_EXEC) {
      changes[of[k]] = strtoll(PQcmdTuples(res), NULL, 10); /* "" (0) for other commands */
    } else if (cmds[k] == CMD_COMMIT && strcmp(PQcmdStatus(res), "COMMIT") != 0 && rc == MCIM_OK) {
      mcim_pg_set_err(c, "the transaction was rolled back: a statement in it failed");
      rc = MCIM_STORE_ERROR;
    }
    PQclear(res);
  }
  mcim_pg_pipeline_end(c);
  if (rc != MCIM_OK) {
    char keep[sizeof(c->errmsg)];
    memcpy(keep, c->errmsg, sizeof(keep));
    if (mcim_pg_in_txn(c))
      (void)mcim_pg_run_simple(c, "ROLLBACK");
    /* a statement never prepared is not kept; a stale one is prepared afresh next time */
    bool stale = mcim_pg_stale_statement(c);
    if (stale)
      c->fixed = false; /* the fixed ones too, if it was one of them */
    for (size_t i = 0; i < n; i++) {
      struct plan *pl = &b[i].pl;
      if (pl->slot && stale && !pl->prepare && !mcim_pg_in_txn(c)) {
        char dealloc[48]; /* as pg_exec does: names are never reused */
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", pl->slot->name);
        PQclear(PQexec(c->db, dealloc));
      }
      if (pl->slot && ((pl->prepare && !b[i].parsed) || stale))
        mcim_pg_cache_forget(pl->slot);
      pl->slot = NULL;
    }
    memcpy(c->errmsg, keep, sizeof(keep));
  }

cleanup:
  for (size_t i = 0; b && i < n; i++) {
    if (rc != MCIM_OK && b[i].pl.slot && b[i].pl.prepare && !b[i].parsed)
      mcim_pg_cache_forget(b[i].pl.slot); /* planned, never sent */
    batch_stmt_clear(&b[i]);
  }
  free(b);
  free(cmds);
  free(of);
  return rc;
}
