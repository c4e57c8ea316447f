/* Seed step 2 at the device: the owner's instruction starts a procedure. One function for
 * every way an instruction arrives: the control API (POST /v1/procedures, control.c) and a
 * program that drives agents in its own process (mcim_device_instruct, `mcim loadgen`).
 *
 * The TRE records an instruction's jti as soon as it verifies it, so everything that can
 * refuse the instruction for another reason is checked first, on its unverified claims:
 * claims the agent would not run, a procedure already running, a device state the
 * procedure cannot start from. None of those spends the jti. An instruction for a txn the
 * agent already has is idempotent: once the TRE says it is the owner's (verified now, or a
 * replay of a verified one), the answer is that procedure. */
#include <stdio.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/util.h"

static json_t *proc_answer(const struct dev_proc *p)
{
  return json_pack("{s:s,s:s,s:s,s:s}", "txn", p->txn, "kind", p->kind, "sho", p->sho, "state",
                   p->state);
}

/* A procedure the agent already has: the same instruction again (or another one of the
 * owner for the same txn and the same claims) changes nothing. */
static mcim_cause_t known(const struct dev_proc *p, const struct dev_instruction *ins,
                          json_t **answer, char *err, size_t errlen)
{
  if (strcmp(p->kind, ins->kind) != 0 || strcmp(p->sho, ins->sho) != 0 ||
      strcmp(p->via, ins->via) != 0) {
    snprintf(err, errlen, "procedure %s is known as %s%s%s with %s, not as this instruction says",
             p->txn, p->kind, p->via[0] ? " via " : "", p->via, p->sho);
    return MCIM_CONFLICT;
  }
  *answer = proc_answer(p);
  return *answer ? MCIM_OK : MCIM_NO_MEMORY;
}

static mcim_cause_t refused(const char *txn, mcim_cause_t rc, const char *err)
{
  mcim_log_event(MCIM_LOG_WARN, txn, 2, rc, "instruction refused: %s", err);
  return rc;
}

mcim_cause_t dev_procedure_start(struct mcim_device *d, const char *jws, json_t **answer,
                                 char *err, size_t errlen)
{
  struct dev_instruction ins, ver;
  struct dev_proc p = {0};
  const char *stage = NULL;
  json_t *data = NULL;
  int n = 0;
  mcim_store_t *st;
  mcim_cause_t rc;

  *answer = NULL;
  err[0] = '\0';
  /* 1. What it asks, unverified: a refusal here spends nothing. */
  rc = dev_instruction_peek(d->name, jws, &ins, err, errlen);
  if (rc != MCIM_OK) {
    rc = refused(NULL, rc, err);
    goto cleanup;
  }
  /* 2. A procedure this agent already has: the same instruction again. */
  st = dev_store_lock(d);
  rc = dev_proc_load(st, ins.txn, &p);
  dev_store_unlock(d);
  if (rc == MCIM_OK) {
    rc = dev_instruction_check(d->tre, d->name, jws, &ver, err, errlen);
    rc = rc != MCIM_OK && rc != MCIM_REPLAY ? refused(ins.txn, rc, err)
                                             : known(&p, &ins, answer, err, errlen);
    goto cleanup;
  }
  if (rc != MCIM_NOT_FOUND) {
    snprintf(err, errlen, "cannot read the procedures");
    goto cleanup;
  }
  /* 3. Busy: one procedure at a time. */
  st = dev_store_lock(d);
  rc = dev_proc_running(st, &p);
  dev_store_unlock(d);
  if (rc == MCIM_OK) {
    snprintf(err, errlen, "procedure %s (%s) is running, step %d", p.txn, p.kind, p.n);
    rc = MCIM_DEVICE_BUSY;
    goto cleanup;
  }
  dev_proc_clear(&p);
  /* 4. Something this agent and its TRE run, from the state the device is in. */
  rc = dev_procedure_first(ins.kind, ins.via, &stage, &n);
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "this agent does not run \"%s\"%s%s", ins.kind,
             ins.via[0] ? " via " : "", ins.via);
    rc = MCIM_UNSUPPORTED;
    goto cleanup;
  }
  rc = dev_procedure_prepare(d, &ins, &data, err, errlen);
  if (rc != MCIM_OK) {
    rc = refused(ins.txn, rc, err);
    goto cleanup;
  }
  /* 5. Only now the TRE: signature, audience, lifetime, replay (the jti is spent). */
  rc = dev_instruction_check(d->tre, d->name, jws, &ver, err, errlen);
  if (rc == MCIM_OK && (strcmp(ver.txn, ins.txn) != 0 || strcmp(ver.kind, ins.kind) != 0 ||
                        strcmp(ver.via, ins.via) != 0 || strcmp(ver.sho, ins.sho) != 0)) {
    rc = MCIM_INTERNAL; /* the same bytes read twice: cannot differ */
    snprintf(err, errlen, "the verified claims differ from the payload's");
  }
  if (rc == MCIM_REPLAY) {
    /* the same instruction, twice at once: the other request may have recorded it */
    st = dev_store_lock(d);
    mcim_cause_t have = dev_proc_load(st, ins.txn, &p);
    dev_store_unlock(d);
    if (have == MCIM_OK) {
      rc = known(&p, &ins, answer, err, errlen);
      goto cleanup;
    }
  }
  if (rc != MCIM_OK) {
    rc = refused(ins.txn, rc, err);
    goto cleanup;
  }
  int64_t now = mcim_now();
  snprintf(p.txn, sizeof(p.txn), "%s", ins.txn);
  snprintf(p.kind, sizeof(p.kind), "%s", ins.kind);
  snprintf(p.via, sizeof(p.via), "%s", ins.via);
  snprintf(p.sho, sizeof(p.sho), "%s", ins.sho);
  snprintf(p.state, sizeof(p.state), "running");
  snprintf(p.stage, sizeof(p.stage), "%s", stage);
  p.n = n;
  p.created = p.since = p.updated = now;
  p.deadline = now + dev_cfg_int(d, "procedure_timeout");
  p.data = data;
  data = NULL;
  st = dev_store_lock(d);
  rc = dev_proc_insert(st, &p);
  if (rc == MCIM_OK)
    dev_trace_put(st, p.txn, 2, "subscriber", d->name,
                  strcmp(p.kind, "switch") == 0    ? "instruction: switch to the pre-provisioned MCIM"
                  : strcmp(p.kind, "preload") == 0 ? "instruction: pre-provision a second MCIM"
                                                   : "instruction: re-provision",
                  NULL, MCIM_OK);
  dev_store_unlock(d);
  if (rc == MCIM_CONFLICT) {
    /* the same instruction, twice at once: the other request recorded it */
    struct dev_proc other = {0};
    st = dev_store_lock(d);
    rc = dev_proc_load(st, ins.txn, &other);
    dev_store_unlock(d);
    if (rc == MCIM_OK)
      rc = known(&other, &ins, answer, err, errlen);
    else {
      snprintf(err, errlen, "procedure %s is already known", p.txn);
      rc = MCIM_CONFLICT;
    }
    dev_proc_clear(&other);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    snprintf(err, errlen,
             rc == MCIM_DEVICE_BUSY ? "another procedure started before %s"
                                    : "procedure %s not recorded",
             p.txn);
    goto cleanup;
  }
  dev_wake(d);
  mcim_metric_inc(&mcim_m_procedures_started, MCIM_LABELS(p.kind));
  mcim_log_event(MCIM_LOG_NOTICE, p.txn, 2, MCIM_OK, "owner instruction: %s%s%s with %s", p.kind,
                 p.via[0] ? " via " : "", p.via, p.sho);
  *answer = proc_answer(&p);
  if (!*answer)
    rc = MCIM_NO_MEMORY;
cleanup:
  json_decref(data);
  dev_proc_clear(&p);
  return rc;
}

mcim_cause_t mcim_device_instruct(struct mcim_device *d, const char *instruction,
                                  json_t **answer, char *detail, size_t detail_len)
{
  return dev_procedure_start(d, instruction, answer, detail, detail_len);
}
