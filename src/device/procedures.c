/* The device side of the seed's procedures, as state machines: a procedure is a table of
 * steps, the current step's name is persisted in agent.db (table procedures), and one
 * worker round runs one step. A step either moves on (its results persisted first), waits
 * (a poll that found nothing yet, or a transient problem: the round is retried after the
 * poll interval), or fails with a cause. Whatever a step sends is idempotent at the
 * receiver per (txn, step), so a step interrupted by a crash is simply run again.
 *
 * The steps are shared by every table; the step number they trace with is the
 * table's (the PVA exchange is step 10 of initial provisioning and step 4 of a change via
 * the old SHO). This file holds the engine: a round's outcomes, the procedure's data and
 * access, the table of procedures and the worker round. initial.c holds initial provisioning
 * (its step table; the steps attach, discover, nonce, quote), package.c the package's steps
 * (download, install, report, attach-sho), change.c the change of subscription,
 * preprovisioned.c the pre-provisioned variant. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/util.h"

_Thread_local struct dev_stage_now dev_stage_now;

/* ---- outcomes ---- */

/* The detail is for people: a longer one is cut, never an error. */
static void set_outcome(struct dev_run *r, enum dev_outcome out, mcim_cause_t cause,
                        const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static void set_outcome(struct dev_run *r, enum dev_outcome out, mcim_cause_t cause,
                        const char *fmt, va_list ap)
{
  vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
  r->out = out;
  r->cause = cause;
}

void dev_run_fail(struct dev_run *r, mcim_cause_t cause, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  set_outcome(r, OUT_FAIL, cause, fmt, ap);
  va_end(ap);
}

void dev_run_wait(struct dev_run *r, mcim_cause_t cause, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  set_outcome(r, OUT_WAIT, cause, fmt, ap);
  va_end(ap);
}

void dev_run_call_failed(struct dev_run *r, const char *access, mcim_cause_t rc,
                         const struct mcim_http_result *res, const char *what)
{
  const char *detail = res && res->detail[0] ? res->detail : mcim_cause_text(rc);
  /* A refusal may be of the device's own request, where the agent sees a cause it also takes
   * for its token's (the proof expired at the role's clock, or signed by a key the TRE no
   * longer holds): shown again, the same proof was refused at every attach until the
   * deadline. The next request signs new ones ("not yet" answers never come here). */
  dev_request_proofs_drop(r->p);
  if (dev_token_refused(rc, res) && access && access[0]) {
    dev_session_drop(r->d, access);
    /* a token saved for a restart that the network refuses is no use either */
    json_t *saved = json_object_get(r->p->data, "saved_token");
    const char *snet = json_string_value(json_object_get(saved, "network"));
    if (snet && strcmp(snet, access) == 0) {
      json_object_del(r->p->data, "saved_token");
      dev_run_save(r);
    }
    dev_run_wait(r, rc, "%s: access token refused (%s), attaching again", what, detail);
  } else if (dev_cause_retry(rc, res ? res->status : 0)) {
    dev_run_wait(r, rc, "%s: %s (retrying)", what, detail);
  } else {
    dev_run_fail(r, rc, "%s: %s", what, detail);
  }
}

/* ---- procedure data ---- */

const char *dev_data_str(const struct dev_proc *p, const char *key)
{
  return json_string_value(json_object_get(p->data, key));
}

bool dev_data_bool(const struct dev_proc *p, const char *key)
{
  return json_is_true(json_object_get(p->data, key));
}

void dev_data_set_str(struct dev_proc *p, const char *key, const char *v)
{
  if (v)
    json_object_set_new(p->data, key, json_string(v));
  else
    json_object_del(p->data, key);
}

void dev_data_set_bool(struct dev_proc *p, const char *key, bool v)
{
  json_object_set_new(p->data, key, json_boolean(v));
}

mcim_cause_t dev_run_save(struct dev_run *r)
{
  r->p->updated = mcim_now();
  mcim_store_t *st = dev_store_lock(r->d);
  mcim_cause_t rc = dev_proc_save_held(r->d, st, r->p);
  dev_store_unlock(r->d);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, r->p->txn, r->p->n, rc, "procedure state not saved");
  return rc;
}

/* ---- access ---- */

/* A session the procedure saved in agent.db because it cannot attach to that network
 * again (change via the old SHO: the old SHO's token after step 8 destroyed the credential
 * it was obtained with): put back in memory after a restart while it lives. */
void dev_session_restore(struct mcim_device *d, const struct dev_proc *p, const char *net)
{
  json_t *saved = json_object_get(p->data, "saved_token");
  const char *snet = json_string_value(json_object_get(saved, "network"));
  const char *tok = json_string_value(json_object_get(saved, "token"));
  const char *scope = json_string_value(json_object_get(saved, "scope"));
  const char *id = json_string_value(json_object_get(saved, "identity"));
  json_int_t exp = json_integer_value(json_object_get(saved, "expires"));
  char *have = NULL, sc[16];
  if (!snet || !tok || strcmp(snet, net) != 0 || exp <= mcim_now())
    return;
  /* a session in memory is at least as fresh */
  if (dev_session_get(d, net, &have, sc) == MCIM_OK) {
    free(have);
    return;
  }
  dev_session_put(d, net, scope ? scope : "full", id ? id : "", tok, exp);
}

char *dev_run_token_for(struct dev_run *r, const char *net)
{
  char *token = NULL;
  char scope[16];
  struct dev_attach_result ar;

  snprintf(r->access_used, sizeof(r->access_used), "%s", net);
  if (dev_session_get(r->d, net, &token, scope) == MCIM_OK)
    return token;
  dev_session_restore(r->d, r->p, net);
  if (dev_session_get(r->d, net, &token, scope) == MCIM_OK)
    return token;
  mcim_cause_t rc = dev_attach(r->d, r->cli, net, r->p->txn, &ar);
  if (rc == MCIM_OK && dev_session_get(r->d, net, &token, scope) == MCIM_OK)
    return token;
  if (rc == MCIM_OK)
    rc = MCIM_NO_ACCESS;
  if (dev_cause_retry(rc, ar.http_status) && rc != MCIM_NO_ACCESS) {
    dev_run_wait(r, rc, "attach to %s: %s (retrying)", net, ar.detail);
  } else {
    dev_run_fail(r, rc, "attach to %s: %s", net, ar.detail[0] ? ar.detail : mcim_cause_text(rc));
    r->fail_step = ar.step;
  }
  return NULL;
}

/* The access token the procedure's network calls carry; attaches when there is none
 * (first round, after a restart, after expiry). A procedure whose access network can no
 * longer be attached to (the old SHO, after its MCIM was discarded) names a fallback
 * ("access_fallback": the VNO, whose restricted access reaches the RO and the PVA), used
 * once the old session has gone. NULL: the round's outcome is set. */
char *dev_run_access_token(struct dev_run *r)
{
  const char *net = dev_data_str(r->p, "access");
  const char *fallback = dev_data_str(r->p, "access_fallback");
  char *token = NULL;
  char scope[16];

  if (!net) {
    dev_run_fail(r, MCIM_INTERNAL, "the procedure has no access network");
    return NULL;
  }
  if (fallback) {
    if (dev_session_get(r->d, net, &token, scope) == MCIM_OK) {
      snprintf(r->access_used, sizeof(r->access_used), "%s", net);
      return token;
    }
    dev_session_restore(r->d, r->p, net);
    if (dev_session_get(r->d, net, &token, scope) == MCIM_OK) {
      snprintf(r->access_used, sizeof(r->access_used), "%s", net);
      return token;
    }
    net = fallback;
  }
  return dev_run_token_for(r, net);
}

static const struct dev_procedure *const procedures[] = {
    &dev_proc_initial, &dev_proc_change_old_sho, &dev_proc_change_pristine,
    &dev_proc_preload, &dev_proc_switch,
};

const struct dev_procedure *dev_procedure_find(const char *kind, const char *via)
{
  for (size_t i = 0; kind && i < sizeof(procedures) / sizeof(procedures[0]); i++)
    if (strcmp(procedures[i]->kind, kind) == 0 &&
        (!procedures[i]->via || (via && strcmp(procedures[i]->via, via) == 0)))
      return procedures[i];
  return NULL;
}

static int step_index(const struct dev_procedure *pr, const char *name)
{
  for (size_t i = 0; i < pr->nsteps; i++)
    if (strcmp(pr->steps[i].name, name) == 0)
      return (int)i;
  return -1;
}

bool dev_procedure_supported(const char *kind, const char *via)
{
  return dev_procedure_find(kind, via) != NULL;
}

mcim_cause_t dev_procedure_first(const char *kind, const char *via, const char **stage, int *n)
{
  const struct dev_procedure *pr = dev_procedure_find(kind, via);
  if (!pr)
    return MCIM_UNSUPPORTED;
  *stage = pr->steps[0].name;
  *n = pr->steps[0].n;
  return MCIM_OK;
}

/* ---- the worker round ---- */

/* A procedure that ends without success leaves nothing half done in the TRE: a staged
 * package is dropped, an MCIM installed but never reported is discarded (the SHO does not
 * activate what it was not told about). The PCID credential is never touched. Two
 * exceptions. The contract of a change via the old SHO: once the old MCIM is discarded
 * (step 8) and the old SHO could not be told (step 9), the new package stays staged, not
 * installed, and the receipt stays queued in the TRE for a later delivery. And an installed
 * MCIM whose status went out unanswered (the answer lost, the RO or the access network
 * unreachable till the deadline) stays: the RO may have taken it and the SHO activated the
 * subscription, which a discard would leave without its MCIM, and after a change via the
 * old SHO the device without any (review of 2026-12-07). If the RO never took it, the
 * SHO's order expires and ends the subscription; the MCIM stays unused till the next
 * procedure. */
static void roll_back(struct mcim_device *d, struct dev_proc *p)
{
  bool keep_staged = strcmp(p->kind, "change") == 0 && strcmp(p->via, "old-sho") == 0 &&
                     dev_data_bool(p, "discarded") && !dev_data_bool(p, "installed");
  bool unreported = dev_data_bool(p, "installed") && !dev_data_bool(p, "reported") &&
                    dev_data_str(p, "slot");
  if (unreported && dev_data_str(p, "status") && !dev_data_bool(p, "status_refused")) {
    mcim_log_event(MCIM_LOG_WARN, p->txn, p->n, MCIM_OK,
                   "the MCIM in slot %s stays installed: its status was sent and not answered,"
                   " so the RO may have taken it and %s activated it",
                   dev_data_str(p, "slot"), p->sho);
    dev_trace(d, p->txn, p->n, "tre", "roll back: the MCIM whose status went out stays", NULL,
              MCIM_OK);
  } else if (unreported) {
    mcim_cause_t rc = d->tre->ops->discard(d->tre->ctx, dev_data_str(p, "slot"), NULL);
    dev_trace(d, p->txn, p->n, "tre", "roll back: discard the unreported MCIM", NULL, rc);
    dev_data_set_bool(p, "installed", false);
  } else if (dev_data_bool(p, "staged") && !dev_data_bool(p, "installed") && !keep_staged) {
    mcim_cause_t rc = d->tre->ops->unstage(d->tre->ctx, p->txn);
    if (rc != MCIM_OK && rc != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_WARN, p->txn, p->n, rc, "roll back: unstage failed");
    dev_data_set_bool(p, "staged", false);
  } else if (keep_staged && dev_data_bool(p, "staged")) {
    mcim_log_event(MCIM_LOG_WARN, p->txn, p->n, MCIM_OK,
                   "the new MCIM stays staged (not installed); the discard receipt for %s stays"
                   " queued in the TRE", dev_data_str(p, "old") ? dev_data_str(p, "old") : "?");
  } else if (!dev_data_bool(p, "staged") && !dev_data_bool(p, "installed")) {
    /* No package came: the key-agreement key the quote offered for this procedure goes now,
     * not at its expiry (docs/tre.md, section 8). NOT_FOUND: there is nothing else to drop. */
    mcim_cause_t rc = d->tre->ops->unstage(d->tre->ctx, p->txn);
    if (rc != MCIM_OK && rc != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_WARN, p->txn, p->n, rc, "roll back: the procedure's key not dropped");
  }
}

static void finish(struct mcim_device *d, struct mcim_http_lite *cli, struct dev_proc *p,
                   mcim_cause_t cause, int step, const char *detail)
{
  int64_t now = mcim_now();
  if (cause != MCIM_OK) {
    roll_back(d, p);
    dev_change_compensate(d, cli, p);
  }
  /* a bearer token kept for a restart has no use any more */
  json_object_del(p->data, "saved_token");
  snprintf(p->state, sizeof(p->state), "%s", cause == MCIM_OK ? "done" : "failed");
  snprintf(p->result, sizeof(p->result), "%s", cause == MCIM_OK ? "success" : mcim_cause_name(cause));
  snprintf(p->cause, sizeof(p->cause), "%s", cause == MCIM_OK ? "" : mcim_cause_name(cause));
  if (step > 0)
    p->n = step;
  snprintf(p->detail, sizeof(p->detail), "%s", detail ? detail : "");
  p->updated = now;
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_save_held(d, st, p);
  /* agent.db's bound (section 7 of docs/device.md), here and at start-up only: an idle agent
   * wakes for nothing. Not after a failed save: the procedure would still count as running,
   * and a store that failed is left alone until the next end. */
  if (rc == MCIM_OK)
    dev_records_purge(d, st, p->txn);
  dev_store_unlock(d);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, p->txn, p->n, rc, "final state of the procedure not saved");
  if (cause == MCIM_OK)
    mcim_metric_inc(&mcim_m_procedures_succeeded, MCIM_LABELS(p->kind));
  else
    mcim_metric_inc(&mcim_m_procedures_failed, MCIM_LABELS(p->kind, mcim_cause_name(cause)));
  if (cause == MCIM_OK)
    mcim_log_event(MCIM_LOG_NOTICE, p->txn, p->n, MCIM_OK, "%s%s%s with %s succeeded", p->kind,
                   p->via[0] ? " via " : "", p->via, p->sho);
  else
    mcim_log_event(MCIM_LOG_ERROR, p->txn, p->n, cause, "%s procedure failed at step %d (%s): %s",
                   p->kind, p->n, p->stage, p->detail);
}

static mcim_cause_t enter(struct mcim_device *d, struct dev_proc *p, const struct dev_step *s)
{
  snprintf(p->stage, sizeof(p->stage), "%s", s->name);
  p->n = s->n;
  p->since = p->updated = mcim_now();
  p->detail[0] = '\0';
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_save_held(d, st, p);
  dev_store_unlock(d);
  return rc;
}

int64_t dev_procedure_round(struct mcim_device *d, struct mcim_http_lite *cli)
{
  struct dev_proc p = {0};
  struct dev_run r = {0};
  int64_t poll = dev_cfg_int(d, "poll_ms");
  int64_t delay = poll;
  char detail[256];

  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_running_memo(st, &d->data_memo, &p);
  dev_store_unlock(d);
  dev_trace_hold(d);
  if (rc == MCIM_NOT_FOUND) {
    delay = -1; /* idle: no timeout, a new procedure wakes the worker (dev_wake) */
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot read the current procedure");
    goto cleanup;
  }
  const struct dev_procedure *pr = dev_procedure_find(p.kind, p.via);
  int idx = pr ? step_index(pr, p.stage) : -1;
  if (!pr || idx < 0) {
    snprintf(detail, sizeof(detail), "no step \"%s\" in procedure %s (agent downgraded?)",
             p.stage, p.kind);
    finish(d, cli, &p, MCIM_INTERNAL, 0, detail);
    goto cleanup;
  }
  if (mcim_now() >= p.deadline) {
    snprintf(detail, sizeof(detail), "timed out at step %d (%s)%s%.200s", p.n, p.stage,
             p.detail[0] ? ": " : "", p.detail);
    finish(d, cli, &p, MCIM_TIMEOUT, 0, detail);
    goto cleanup;
  }

  r.d = d;
  r.cli = cli;
  r.p = &p;
  r.out = OUT_WAIT;
  dev_stage_now = (struct dev_stage_now){pr->steps[idx].name, p.txn, p.n};
  pr->steps[idx].run(&r);
  dev_stage_now = (struct dev_stage_now){0};

  switch (r.out) {
  case OUT_NEXT:
  case OUT_GOTO: {
    int next = r.out == OUT_NEXT ? idx + 1 : step_index(pr, r.next ? r.next : "");
    if (r.out == OUT_NEXT && next >= (int)pr->nsteps) {
      finish(d, cli, &p, MCIM_OK, pr->last, NULL);
      delay = 0;
      break;
    }
    if (next < 0) {
      finish(d, cli, &p, MCIM_INTERNAL, 0, "state machine: unknown next step");
      break;
    }
    /* the step's results and the new position, together, before the next step runs */
    rc = enter(d, &p, &pr->steps[next]);
    delay = rc == MCIM_OK ? 0 : poll;
    break;
  }
  case OUT_DONE:
    finish(d, cli, &p, MCIM_OK, pr->last, NULL);
    delay = 0;
    break;
  case OUT_FAIL:
    finish(d, cli, &p, r.cause, r.fail_step, r.detail);
    delay = 0;
    break;
  case OUT_WAIT:
  default:
    /* keep the reason visible in GET /v1/procedures/{txn}, without rewriting it each poll */
    if (strcmp(p.detail, r.detail) != 0) {
      snprintf(p.detail, sizeof(p.detail), "%s", r.detail);
      p.updated = mcim_now();
      st = dev_store_lock(d);
      dev_proc_save_held(d, st, &p);
      dev_store_unlock(d);
    }
    if (r.cause != MCIM_OK) {
      /* a failing network is retried ever less often (up to 16 polls apart): the agent
       * must not hammer it, nor fill the trace with the same refusal */
      d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : poll;
      if (d->backoff_ms > 16 * poll)
        d->backoff_ms = 16 * poll;
      delay = d->backoff_ms;
      mcim_log_event(MCIM_LOG_DEBUG, p.txn, p.n, r.cause, "%s", r.detail);
    }
    break;
  }
  if (r.out != OUT_WAIT || r.cause == MCIM_OK)
    d->backoff_ms = 0;
  /* wake up for the deadline, not after it */
  if (r.out == OUT_WAIT && (p.deadline - mcim_now()) * 1000 < delay)
    delay = p.deadline > mcim_now() ? (p.deadline - mcim_now()) * 1000 : 0;
cleanup:
  dev_trace_release(d);
  dev_proc_clear(&p);
  return delay;
}
