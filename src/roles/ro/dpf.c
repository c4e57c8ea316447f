/* RO, DPF function: accepts sealed MCIM packages from an SHO (pristine step 12, change
 * step 6), hands them to the device (step 13 / 7), collects the device's install status
 * (step 14 / 12) and reports it to the SHO (step 15 / 13). The DPF checks the package's
 * origin (the SHO's signature) but cannot open the JWE inside: the RO never holds an
 * MCIM in clear (invariant 4). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/ro/ro.h"

struct pkg_row {
  char txn[40];
  char sho[64];
  char procedure[16];
  char *package;
  char state[16];
  bool found;
};

static mcim_cause_t pkg_cb(const mcim_row_t *row, void *arg)
{
  struct pkg_row *p = arg;
  snprintf(p->txn, sizeof(p->txn), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(p->sho, sizeof(p->sho), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  snprintf(p->procedure, sizeof(p->procedure), "%s", mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  free(p->package);
  p->package = strdup(mcim_row_text(row, 3) ? mcim_row_text(row, 3) : "");
  snprintf(p->state, sizeof(p->state), "%s", mcim_row_text(row, 4) ? mcim_row_text(row, 4) : "");
  p->found = p->package != NULL;
  return p->package ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_dpf_package_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"package", MCIM_JV_STRING, true, 65536},
      {"procedure", MCIM_JV_STRING, false, 16},
      {"verdict", MCIM_JV_STRING, true, MCIM_JOSE_MAX_LEN}, /* it carries the device's quote */
  };
  return mcim_jsonv_check(body, fields, 5, err, err_len);
}

/* The SHO's sealed MCIM for one procedure: pristine step 12 (through the DRF, which
 * authorises its DPF) or change step 6 (to the DPF). Either way the DPF takes a package only
 * for an (SHO, device, txn) the DRF holds as ordered by the device's owner (step 1) and
 * validated: the PVA's verdict for that very (SHO, device, txn) comes with it and is checked
 * here, so no SHO can park packages for devices it has no procedure with. */
void mcim_dpf_accept_package(struct mcim_role *r, const struct mcim_http_request *req,
                             struct mcim_http_response *resp, bool via_drf)
{
  char err[200];
  const mcim_jose_key_t *sho_key = NULL, *pva_key = NULL;
  mcim_statement_t *verdict = NULL;
  struct mcim_drf_order o = {0};
  int step = via_drf ? 12 : 6;
  mcim_store_t *st = mcim_role_store(r);
  mcim_cause_t rc = mcim_dpf_package_body(req->json, err, sizeof(err));
  if (rc == MCIM_OK && !mcim_ro_is_sho_name(req->peer)) {
    rc = MCIM_FORBIDDEN;
    snprintf(err, sizeof(err), "only an SHO sends MCIMs");
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *pkg = json_string_value(json_object_get(req->json, "package"));
  const char *vjws = json_string_value(json_object_get(req->json, "verdict"));
  rc = st ? mcim_drf_order_of_party(st, txn, device, req->peer, &o) : MCIM_STORE_ERROR;
  const struct mcim_dpf_steps *steps =
      rc == MCIM_OK ? mcim_dpf_steps_for(mcim_drf_dpf_procedure(&o)) : NULL;
  if (rc == MCIM_OK && !steps)
    rc = MCIM_INTERNAL;
  /* pristine steps through the DRF, the change via the old SHO straight to the DPF */
  if (rc == MCIM_OK && (strcmp(steps->procedure, "initial") == 0) != via_drf) {
    rc = MCIM_WRONG_STATE;
    snprintf(err, sizeof(err), "procedure %s sends its package to %s", txn,
             via_drf ? "the DPF (/v1/dpf/packages)" : "the DRF (/v1/drf/authorisations)");
  } else if (rc != MCIM_OK) {
    snprintf(err, sizeof(err), "%s has no order for %s in procedure %s at the DRF", req->peer,
             device, txn);
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, step, rc, "DPF: package from %s refused: %s", req->peer,
                   err);
    mcim_http_reply_problem(resp, rc, step, "%s", err);
    goto out;
  }
  step = steps->package;
  /* The PVA's positive verdict for this (SHO, device, txn). */
  const char *pva = mcim_config_str(r->cfg, "pva");
  rc = mcim_role_peer_key(r, pva, &pva_key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = pva, .aud = req->peer, .sub = device,
                            .typ = "mcim-verdict+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(vjws, strlen(vjws), pva_key, &ex, &verdict);
  }
  const char *result = verdict ? mcim_statement_string(verdict, "result") : NULL;
  if (rc == MCIM_OK && (!result || strcmp(result, "success") != 0))
    rc = MCIM_VALIDATION_FAILED;
  /* Origin and claims of the package, without decrypting: iss = the SHO on the TLS channel. */
  if (rc == MCIM_OK)
    rc = mcim_role_peer_key(r, req->peer, &sho_key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = req->peer, .aud = device, .sub = device,
                            .typ = "mcim-package+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_package_verify(pkg, strlen(pkg), sho_key, &ex, NULL);
  }
  if (rc != MCIM_OK) {
    mcim_role_trace(r, txn, step, r->name, req->peer,
                    via_drf ? "DRF: authorisation refused" : "DPF: MCIM package refused", NULL,
                    rc);
    mcim_http_reply_problem(resp, rc, step, "%s from %s does not verify",
                            result ? "package" : "verdict", req->peer);
    goto out;
  }
  int64_t now = mcim_now();
  rc = mcim_store_begin(st);
  /* The order again, under the writers' lock: the DRF's expiry (mcim_drf_expire, on any
   * instance) may have ended it while the signatures above were checked, and it abandons only
   * the packages it finds; stored after it, this one outlived its order, downloadable for good
   * (review of 2026-12-07). */
  if (rc == MCIM_OK) {
    struct mcim_drf_order live = {0};
    rc = mcim_drf_order_of_party(st, txn, device, req->peer, &live);
    mcim_drf_order_clear(&live);
  }
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device), MCIM_TEXT(req->peer),
                      MCIM_TEXT(steps->procedure), MCIM_TEXT(pkg), MCIM_INT(now), MCIM_INT(now)};
    rc = mcim_store_exec(st,
                         "INSERT INTO dpf_packages (txn, device, sho, procedure, package, state,"
                         " created, updated) VALUES (?, ?, ?, ?, ?, 'ready', ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  if (rc == MCIM_OK) {
    /* the DRF's authorisation of its DPF: the order moves on with the package */
    mcim_val_t u[] = {MCIM_INT(now), MCIM_TEXT(txn)};
    rc = mcim_store_exec(st,
                         "UPDATE drf_orders SET state = 'authorised', updated = ? WHERE txn = ?"
                         " AND state = 'ordered'",
                         u, 2, NULL, NULL);
  }
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_CONFLICT) {
    /* The same txn again is idempotent only if it is the same package from the same SHO. */
    struct pkg_row have = {0};
    mcim_val_t q[] = {MCIM_TEXT(txn)};
    if (mcim_store_query_one(st,
                             "SELECT txn, sho, procedure, package, state FROM dpf_packages"
                             " WHERE txn = ?",
                             q, 1, pkg_cb, &have) == MCIM_OK &&
        strcmp(have.sho, req->peer) == 0 && have.package && strcmp(have.package, pkg) == 0)
      rc = MCIM_OK;
    free(have.package);
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, step, "package not stored");
    goto out;
  }
  mcim_log_event(MCIM_LOG_INFO, txn, step, MCIM_OK,
                 "%ssealed MCIM for %s from %s held for download",
                 via_drf ? "DRF authorised its DPF: " : "DPF: ", device, req->peer);
  mcim_http_wake("dpf-package:%s/%s", device, txn); /* a device's download held for it */
  mcim_http_reply_json(resp, 202, json_pack("{s:s,s:s}", "txn", txn, "state", "ready"));
out:
  mcim_statement_free(verdict);
  mcim_drf_order_clear(&o);
}

/* POST /v1/dpf/packages (the new SHO, change step 6). */
void mcim_dpf_package_put(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  mcim_dpf_accept_package(ctx, req, resp, false);
}

mcim_cause_t mcim_dpf_fetch_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"proof", MCIM_JV_STRING, true, 16384},
      {"tre_cert", MCIM_JV_STRING, true, 8192},
  };
  return mcim_jsonv_check(body, fields, 2, err, err_len);
}

/* POST /v1/dpf/packages/{device}/{txn} {proof, tre_cert} (the device, step 13 / 7): the
 * package of this procedure only, so no other procedure's package (or a flood of them)
 * reaches or hides it; and to the device itself only (its TRE's request): the package and
 * its signer name the new SHO, which the network the device is on (the old SHO, in a change
 * via the old SHO) must not learn. A POST because the request carries that proof. */
void mcim_dpf_package_fetch(void *ctx, const struct mcim_http_request *req,
                            struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct mcim_access acc;
  struct pkg_row pr = {0};
  char *cert = NULL;
  const char *device = req->params[0];
  const char *txn = req->params[1];
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, 13, "the download");
    return;
  }
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 13, "a device downloads only its own MCIM");
    return;
  }
  rc = mcim_dpf_fetch_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 13, "%s", err);
    return;
  }
  if (mcim_role_require_device_request(r, req->json, device, txn, "package", 13, "the package",
                                       resp) != MCIM_OK)
    return;
  mcim_store_t *st = mcim_role_store(r);
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device)};
  rc = st ? mcim_store_exec(st,
                            "SELECT txn, sho, procedure, package, state FROM dpf_packages"
                            " WHERE txn = ? AND device = ? AND state IN ('ready', 'delivered')",
                            p, 2, pkg_cb, &pr)
          : MCIM_STORE_ERROR;
  if (rc == MCIM_OK && !pr.found) {
    mcim_http_reply_problem(resp, MCIM_NOT_FOUND, 13, "no MCIM package of procedure %s waiting"
                            " for %s", txn, device);
    mcim_http_reply_wait_on(resp, "dpf-package:%s/%s", device, txn);
    goto out;
  }
  const struct mcim_dpf_steps *steps = mcim_dpf_steps_for(pr.procedure);
  if (rc == MCIM_OK)
    rc = mcim_role_peer_cert_pem(r, pr.sho, &cert);
  if (rc != MCIM_OK || !steps) {
    mcim_http_reply_problem(resp, rc != MCIM_OK ? rc : MCIM_INTERNAL, 13, "package unavailable");
    goto out;
  }
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", pr.txn, "sho", pr.sho, "procedure",
                           pr.procedure, "package", pr.package, "sho_cert", cert);
  /* "delivered" and the trace row together, relaxed: the mark tells people the device has
   * fetched it (ready and delivered are served and expire alike), lost in a crash of the
   * machine it says "ready" again */
  bool in_txn = mcim_store_begin_relaxed(st) == MCIM_OK;
  mcim_val_t u[] = {MCIM_INT(mcim_now()), MCIM_TEXT(pr.txn)};
  mcim_store_exec(st, "UPDATE dpf_packages SET state = 'delivered', updated = ? WHERE txn = ?"
                      " AND state = 'ready'",
                  u, 2, NULL, NULL);
  mcim_role_trace(r, pr.txn, steps->delivery, r->name, device,
                  strcmp(pr.procedure, "change") == 0
                      ? "DPF: new MCIM (atomic download, old SHO connectivity)"
                      : "DPF: MCIM object download",
                  body, MCIM_OK);
  if (in_txn && mcim_store_commit(st) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, pr.txn, steps->delivery, MCIM_STORE_ERROR,
                   "the package's delivery not recorded: %s", mcim_store_errmsg(st));
  mcim_http_reply_json(resp, 200, body);
out:
  free(pr.package);
  free(cert);
}

mcim_cause_t mcim_dpf_status_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"status", MCIM_JV_STRING, true, 16384},
      {"tre_cert", MCIM_JV_STRING, true, 8192},
  };
  return mcim_jsonv_check(body, fields, 4, err, err_len);
}

/* POST /v1/dpf/status (the device, step 14 / 12): verify, record, report to the SHO. */
void mcim_dpf_status(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[200];
  struct mcim_access acc;
  struct pkg_row pr = {0};
  mcim_jose_key_t *dev_key = NULL;
  mcim_statement_t *stmt = NULL;
  json_t *answer = NULL;
  int status_code = 0;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);
  if (rc != MCIM_OK) {
    mcim_role_reply_access_refused(resp, rc, 14, "the status report");
    return;
  }
  rc = mcim_dpf_status_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 14, "%s", err);
    return;
  }
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *status = json_string_value(json_object_get(req->json, "status"));
  if (strcmp(acc.device, device) != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 14, "a device reports only for itself");
    return;
  }
  mcim_store_t *st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 14, "store unavailable");
    return;
  }
  rc = mcim_role_device_key_from_pem(r, json_string_value(json_object_get(req->json, "tre_cert")),
                                     device, MCIM_CERT_TRE_ATTESTATION, &dev_key);
  /* The TRE's status before anything is read (DESIGN.md section 10): the stored answer goes
   * only to a status of this device's TRE for this txn. Its jti is spent after the answer
   * is looked up: the device resends the status it saved, and that retry gets the answer. */
  int64_t skew = mcim_config_duration(r->cfg, "clock_skew");
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = r->name,
                            .typ = "mcim-status+jwt", .txn = txn, .skew = skew};
    rc = mcim_jws_verify(status, strlen(status), dev_key, &ex, &stmt);
  }
  const char *result = stmt ? mcim_statement_string(stmt, "result") : NULL;
  if (rc == MCIM_OK && !result)
    rc = MCIM_CLAIM_MISSING;
  /* The package row: what the status is about, and a refusal's step (traced if it exists) */
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device)};
  mcim_cause_t found = mcim_store_exec(st,
                                       "SELECT txn, sho, procedure, package, state FROM"
                                       " dpf_packages WHERE txn = ? AND device = ?",
                                       p, 2, pkg_cb, &pr);
  const struct mcim_dpf_steps *steps = mcim_dpf_steps_for(pr.procedure);
  if (found == MCIM_OK && (!pr.found || !steps))
    found = MCIM_NOT_FOUND;
  if (rc != MCIM_OK) {
    if (found == MCIM_OK)
      mcim_role_trace(r, txn, steps->status, r->name, device, "DPF: status refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, found == MCIM_OK ? steps->status : 14,
                            "status of %s does not verify", device);
    goto out;
  }
  /* One transaction from here: the status's jti is recorded with the stored answer, so a
   * duplicate that raced this one finds the answer rather than a replay. */
  rc = mcim_store_begin(st);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 14, "status not recorded");
    goto out;
  }
  if (mcim_role_answer_get(st, txn, 14, device, &status_code, &answer) == MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_json(resp, status_code, answer);
    answer = NULL;
    goto out;
  }
  if (found != MCIM_OK) {
    mcim_store_rollback(st);
    mcim_http_reply_problem(resp, found, 14, "no package %s for %s", txn, device);
    goto out;
  }
  /* a new status acts once: its jti kept while it verifies (exp + skew, saturated) */
  const mcim_replay_cache_t *rep = mcim_role_replay(r);
  rc = rep->check_and_insert(rep->ctx, stmt->claims.iss, stmt->claims.jti,
                             mcim_replay_expires(stmt->claims.exp, skew), mcim_now());
  if (rc != MCIM_OK) {
    mcim_store_rollback(st);
    mcim_role_trace(r, txn, steps->status, r->name, device, "DPF: status refused", NULL, rc);
    mcim_http_reply_problem(resp, rc, steps->status, "status of %s does not verify", device);
    goto out;
  }
  bool ok = strcmp(result, "success") == 0;
  /* The result is relayed to the SHO: only "success" or a cause name goes on. */
  if (!ok && mcim_cause_from_name(result) <= 0)
    result = mcim_cause_name(MCIM_PROCEDURE_FAILED);
  answer = json_pack("{s:s,s:s}", "txn", txn, "result", result);
  json_t *report = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "result", result);
  mcim_val_t u[] = {MCIM_TEXT(ok ? "installed" : "failed"), MCIM_TEXT(result),
                    MCIM_INT(mcim_now()), MCIM_TEXT(txn)};
  rc = mcim_store_exec(st,
                         "UPDATE dpf_packages SET state = ?, result = ?, package = '', updated = ?"
                       " WHERE txn = ?", /* delivered and reported: nothing left to hold */
                         u, 4, NULL, NULL);
  if (rc == MCIM_OK) {
    mcim_val_t o[] = {MCIM_TEXT(ok ? "installed" : "failed"), MCIM_INT(mcim_now()), MCIM_TEXT(txn)};
    rc = mcim_store_exec(st, "UPDATE drf_orders SET state = ?, updated = ? WHERE txn = ?", o, 3,
                         NULL, NULL);
  }
  if (rc == MCIM_OK)
    rc = mcim_role_outbox_put(r, st, pr.sho, "/v1/reports", report, txn, steps->report,
                              ok ? "DPF: provisioning succeeded" : "DPF: provisioning failed");
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, 14, device, 200, answer);
  rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  json_decref(report);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, steps->status, "status not recorded");
    goto out;
  }
  mcim_role_wake(r);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_statement_free(stmt);
  mcim_jose_key_free(dev_key);
  free(pr.package);
}
