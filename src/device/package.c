/* The package's steps on the device, shared by every procedure's table (the step number
 * they trace with is the table's; initial provisioning's table heads initial.c): download
 * (13: the DPF's package, staged whole in the TRE), install (14), report (14: the TRE-signed
 * status to the DPF) and attach-sho (after 15: attach with the new MCIM until the SHO has
 * activated it). The engine that runs them is procedures.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/util.h"

/* ---- the package's steps ---- */

/* 13 (change: 7): the DPF's package for this procedure, staged whole in the TRE (which
 * checks the SHO's signature against the operators' CA, the claims, the replay cache, and
 * opens the JWE) before anything else happens. The SHO's certificate is the one the DRF's
 * discovery vouched for, or (a change via the old SHO has no discovery) the one the DPF
 * hands out with the package, verified here against the pinned CA with CN = the SHO the
 * owner chose, and by the TRE again. A package the TRE refuses is reported as a failure
 * (step 14 / 12), never installed. */
void dev_st_download(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *ro = dev_cfg_str(d, "ro");
  struct mcim_http_result res = {0};
  char path[160];
  json_t *body = NULL;
  char *token = dev_run_access_token(r);
  mcim_cause_t rc;

  if (!token)
    goto cleanup;
  snprintf(path, sizeof(path), "/v1/dpf/packages/%s/%s", d->name, p->txn);
  /* the package names the new SHO: the RO gives it to the device itself, not to a token */
  body = json_object();
  rc = body ? dev_request_proof(r, ro, "package", body) : MCIM_NO_MEMORY;
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE cannot sign the request for the package: %s",
                 mcim_cause_text(rc));
    goto cleanup;
  }
  dev_prefer_wait(r);
  rc = dev_call(d, r->cli, "POST", ro, path, body, token, &res);
  /* traced when answered: a request held until the package came (a long poll) was sent
   * before the SHO's steps that made it, and the trace orders steps by time */
  int64_t sent = dev_now_us();
  if (rc == MCIM_NOT_FOUND) {
    dev_run_wait(r, MCIM_OK, "waiting for the SHO's MCIM package at the DPF");
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    dev_run_call_failed(r, r->access_used, rc, &res, "DPF download");
    goto cleanup;
  }
  const char *txn = dev_json_hex(res.json, "txn", DEV_TXN_LEN);
  const char *sho = dev_json_str(res.json, "sho", 63);
  const char *pkg = dev_json_str(res.json, "package", MCIM_JOSE_MAX_LEN);
  if (!txn || !sho || !pkg) {
    dev_run_fail(r, MCIM_PEER_BAD_ANSWER, "DPF: the answer lacks txn, sho or package");
    goto cleanup;
  }
  if (strcmp(txn, p->txn) != 0) {
    dev_run_wait(r, MCIM_OK, "the DPF holds a package of procedure %s, not ours (yet)", txn);
    goto cleanup;
  }
  json_t *tb = json_pack("{s:s,s:s}", "txn", txn, "sho", sho);
  dev_trace_at(d, sent, p->txn, p->n, ro, "DPF: MCIM package request", tb, MCIM_OK);
  json_decref(tb);
  if (strcmp(sho, p->sho) != 0) {
    rc = MCIM_PACKAGE_INVALID;
    snprintf(r->detail, sizeof(r->detail), "the package comes from %.63s, the owner chose %s",
             sho, p->sho);
  } else {
    const char *cert = dev_data_str(p, "sho_cert");
    mcim_jose_key_t *k = NULL;
    rc = MCIM_OK;
    if (!cert) {
      cert = dev_json_str(res.json, "sho_cert", 16384);
      rc = dev_peer_key_from_pem(d, cert, p->sho, &k);
      mcim_jose_key_free(k);
      if (rc != MCIM_OK)
        snprintf(r->detail, sizeof(r->detail),
                 "the DPF's certificate of %s does not verify against the operators' CA: %s",
                 p->sho, mcim_cause_text(rc));
    }
    if (rc == MCIM_OK) {
      dev_tre_point(MCIM_CRASH_BEFORE_TRE);
      rc = d->tre->ops->stage(d->tre->ctx, p->txn, pkg, strlen(pkg), cert);
      if (rc == MCIM_OK)
        dev_tre_point(MCIM_CRASH_AFTER_TRE);
      snprintf(r->detail, sizeof(r->detail), "the TRE refused the package: %s",
               mcim_cause_text(rc));
    }
  }
  dev_trace(d, p->txn, p->n, "tre", "verify and stage the MCIM package (atomic)", NULL, rc);
  if (rc == MCIM_OK) {
    r->detail[0] = '\0';
    dev_data_set_bool(p, "staged", true);
    r->out = OUT_NEXT;
    goto cleanup;
  }
  /* Tell the network (step 14) instead of waiting for a timeout. */
  dev_data_set_str(p, "result", mcim_cause_name(rc));
  json_object_set_new(p->data, "failed_at", json_integer(p->n));
  dev_data_set_str(p, "failed_detail", r->detail);
  r->out = OUT_GOTO;
  r->next = "report";
cleanup:
  json_decref(body);
  mcim_http_result_clear(&res);
  free(token);
}

/* 14 (change: 12): install the staged MCIM into its slot: the TRE makes it the active
 * credential, or (preload) holds it inactive next to the active one. */
void dev_st_install(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  char slot[64] = "";
  bool inactive = strcmp(p->kind, "preload") == 0;
  dev_tre_point(MCIM_CRASH_BEFORE_TRE);
  mcim_cause_t rc = !inactive                    ? d->tre->ops->install(d->tre->ctx, p->txn, slot)
                    : d->tre->ops->install_inactive ? d->tre->ops->install_inactive(d->tre->ctx,
                                                                                 p->txn, slot)
                                                 : MCIM_UNSUPPORTED;
  if (rc == MCIM_OK)
    dev_tre_point(MCIM_CRASH_AFTER_TRE);
  json_t *tb = rc == MCIM_OK ? json_pack("{s:s,s:s}", "slot", slot, "state",
                                         inactive ? "inactive" : "active")
                             : NULL;

  dev_trace(d, p->txn, p->n, "tre",
            inactive ? "install MCIM into TRE (inactive: pre-provisioned)"
                     : "install MCIM into TRE",
            tb, rc);
  json_decref(tb);
  if (rc == MCIM_OK) {
    dev_data_set_str(p, "slot", slot);
    dev_data_set_bool(p, "installed", true);
    dev_data_set_str(p, "result", "success");
  } else {
    /* roll back: nothing of this package stays in the TRE */
    mcim_cause_t u = d->tre->ops->unstage(d->tre->ctx, p->txn);
    if (u != MCIM_OK && u != MCIM_NOT_FOUND)
      mcim_log_event(MCIM_LOG_WARN, p->txn, p->n, u, "unstage after a failed install");
    dev_data_set_bool(p, "staged", false);
    dev_data_set_str(p, "result", mcim_cause_name(rc));
    json_object_set_new(p->data, "failed_at", json_integer(p->n));
    char why[200];
    snprintf(why, sizeof(why), "the TRE could not install the MCIM: %s", mcim_cause_text(rc));
    dev_data_set_str(p, "failed_detail", why);
  }
  r->out = OUT_NEXT;
}

/* 14 (change: 12): the TRE-signed status to the DPF, success or the cause of the failure. */
void dev_st_report(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *ro = dev_cfg_str(d, "ro");
  const char *result = dev_data_str(p, "result");
  struct mcim_http_result res = {0};
  json_t *body = NULL, *extra = NULL, *tb = NULL;
  char *jws = NULL, *cert = NULL;
  char *token = NULL;
  mcim_cause_t rc;

  if (!result) {
    dev_run_fail(r, MCIM_INTERNAL, "nothing to report (no install result)");
    goto cleanup;
  }
  token = dev_run_access_token(r);
  if (!token)
    goto cleanup;
  if (!dev_data_str(p, "status")) {
    extra = json_pack("{s:s,s:s}", "result", result, "slot",
                      dev_data_str(p, "slot") ? dev_data_str(p, "slot") : p->sho);
    rc = extra ? d->tre->ops->sign(d->tre->ctx, "mcim-status+jwt", ro, p->txn, extra,
                                   dev_cfg_int(d, "statement_lifetime"), &jws)
               : MCIM_NO_MEMORY;
    if (rc != MCIM_OK) {
      dev_run_fail(r, rc, "the TRE cannot sign the status: %s", mcim_cause_text(rc));
      goto cleanup;
    }
    dev_data_set_str(p, "status", jws);
    if (dev_run_save(r) != MCIM_OK) {
      dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the status before sending it");
      goto cleanup;
    }
  }
  rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE has no attestation certificate");
    goto cleanup;
  }
  body = json_pack("{s:s,s:s,s:s,s:s}", "txn", p->txn, "device", d->name, "status",
                   dev_data_str(p, "status"), "tre_cert", cert);
  int64_t sent = dev_now_us();
  rc = body ? dev_call(d, r->cli, "POST", ro, "/v1/dpf/status", body, token, &res)
            : MCIM_NO_MEMORY;
  tb = json_pack("{s:s,s:s}", "txn", p->txn, "result", result);
  dev_trace_at(d, sent, p->txn, p->n, ro, "DPF: provisioning status", tb, rc);
  if (rc == MCIM_TOKEN_EXPIRED && !res.bearer_challenge &&
      dev_statement_expired(dev_data_str(p, "status"))) {
    dev_data_set_str(p, "status", NULL);
    dev_run_save(r);
    dev_run_wait(r, rc, "the status statement expired before the DPF took it; signing again");
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    /* the DPF's own refusal of the status: it did not take it (the roll back may discard) */
    if (res.status >= 400 && res.status < 500 && !dev_token_refused(rc, &res))
      dev_data_set_bool(p, "status_refused", true);
    dev_run_call_failed(r, r->access_used, rc, &res, "DPF status");
    goto cleanup;
  }
  dev_data_set_bool(p, "reported", true);
  if (strcmp(result, "success") == 0) {
    r->out = OUT_NEXT;
    goto cleanup;
  }
  int c = mcim_cause_from_name(result);
  json_t *at = json_object_get(p->data, "failed_at");
  dev_run_fail(r, c > 0 ? (mcim_cause_t)c : MCIM_PROCEDURE_FAILED, "%s (reported to the RO)",
       dev_data_str(p, "failed_detail") ? dev_data_str(p, "failed_detail") : result);
  r->fail_step = json_is_integer(at) ? (int)json_integer_value(at) : 0;
cleanup:
  json_decref(body);
  json_decref(extra);
  json_decref(tb);
  mcim_http_result_clear(&res);
  free(jws);
  free(cert);
  free(token);
}

/* After 15: attach with the new MCIM: the proof that provisioning worked (scope full);
 * until the SHO has the RO's report (step 15) it answers SUBSCRIPTION_NOT_ACTIVE. */
void dev_st_attach_sho(struct dev_run *r)
{
  struct dev_attach_result ar;
  /* at the address the DRF's discovery gave (kept in the procedure across a restart) */
  const char *endpoint = dev_data_str(r->p, "endpoint");
  if (endpoint)
    dev_network_learn(r->d, r->p->sho, endpoint);
  dev_prefer_wait(r); /* the attach's first request: held until the SHO activates it */
  mcim_cause_t rc = dev_attach(r->d, r->cli, r->p->sho, r->p->txn, &ar);

  if (rc == MCIM_OK && strcmp(ar.scope, "full") == 0) {
    r->out = OUT_NEXT; /* the last step, or the notifications of the pristine path */
  } else if (rc == MCIM_OK) {
    dev_run_fail(r, MCIM_SCOPE_RESTRICTED, "%s granted only %s access", r->p->sho, ar.scope);
  } else if (rc == MCIM_SUBSCRIPTION_NOT_ACTIVE) {
    /* Step 15 (the RO's report to the SHO) has not landed yet: the device learns that the
     * subscription is active by attaching, the only SHO service a PCID device may use. */
    dev_run_wait(r, MCIM_OK, "waiting for %s to activate the subscription", r->p->sho);
  } else if (dev_cause_retry(rc, ar.http_status)) {
    dev_run_wait(r, rc, "attach to %s: %s (retrying)", r->p->sho, ar.detail);
  } else {
    dev_run_fail(r, rc, "attach to %s with the new MCIM: %s", r->p->sho,
         ar.detail[0] ? ar.detail : mcim_cause_text(rc));
  }
}
