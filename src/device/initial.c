/* Initial provisioning on the device: its step table (below; initial_steps at the end of
 * the file) and the steps attach, discover, nonce and quote. The package's steps (download,
 * install, report, attach-sho) are in package.c, the engine that runs them in procedures.c.
 * The steps are shared by every table; the step number they trace with is the table's (the
 * PVA exchange is step 10 here and step 4 of a change via the old SHO).
 *
 * Initial provisioning (seed "Going back to the pristine state", steps 4-15):
 *   attach      4-6  attach to the VNO with the PCID (restricted access)
 *   discover    7-8  DRF: the SHO of this txn -> RO-signed SHO name, endpoint, certificate
 *                    ("not yet" until the owner's order reached the DRF: asked again)
 *   nonce       10   poll the PVA for this txn's validation the SHO asked for (step 9);
 *                    meanwhile ask the DRF again every 10 s (its step 8 may have been lost)
 *   quote       10   TRE quote over the nonce -> PVA (verdict to the SHO: step 11)
 *   download    13   poll the DPF for this txn's package (step 12), stage it in the TRE
 *   install     14   install into the TRE
 *   report      14   TRE-signed status to the DPF (relayed to the SHO: step 15)
 *   attach-sho  -    attach to the SHO (at the discovered endpoint) with the new MCIM until it
 *                    is active (15): full access */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "device/tpm_evidence.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/role.h" /* mcim_jws_peek_claim */
#include "mcim/util.h"

/* ---- initial provisioning: the steps ---- */

/* 4-6: attach to the access network: the VNO with the PCID credential (initial
 * provisioning, pristine path), or the SHO of the active MCIM (preload, change via the old
 * SHO: that connectivity). A VNO that says the PCID credential is due for renewal gets it
 * renewed here, at that contact (best effort: the procedure goes on with the current one). */
void dev_st_attach(struct dev_run *r)
{
  struct dev_attach_result ar;
  const char *net = dev_data_str(r->p, "access");
  /* traced with the table's step for the VNO (4-5); an SHO attach is outside the numbered
   * steps (0), as the SHO traces it */
  bool vno = net && strcmp(net, dev_cfg_str(r->d, "vno")) == 0;
  mcim_cause_t rc = net ? dev_attach_at(r->d, r->cli, net, r->p->txn, vno ? r->p->n : -1, &ar)
                        : MCIM_INTERNAL;

  if (rc == MCIM_OK) {
    if (ar.renewal_due && dev_flag_take(r->d, &r->d->pcid_renew_due)) {
      char *token = NULL, scope[16], why[256] = "";
      long status = 0;
      mcim_cause_t c = dev_session_get(r->d, net, &token, scope);
      if (c == MCIM_OK)
        c = dev_pcid_renew(r->d, r->cli, r->p->txn, token, &status, why, sizeof(why));
      if (c != MCIM_OK) {
        mcim_log_event(MCIM_LOG_WARN, r->p->txn, 0, c,
                       "PCID renewal asked for by %s not done: %s (asked again at the next"
                       " contact)", net, why[0] ? why : mcim_cause_text(c));
      }
      free(token);
    }
    r->out = OUT_NEXT;
    return;
  }
  if (!net) {
    dev_run_fail(r, rc, "the procedure has no access network");
    return;
  }
  if (dev_cause_retry(rc, ar.http_status)) {
    dev_run_wait(r, rc, "attach to %s: %s (retrying)", net, ar.detail);
    return;
  }
  dev_run_fail(r, rc, "attach to %s: %s", net, ar.detail[0] ? ar.detail : mcim_cause_text(rc));
  r->fail_step = ar.step;
}

/* 7-8: ask the DRF for the SHO of this procedure and verify its answer: the statement is
 * trusted for its signature only (the RO's key comes from its certificate, verified against
 * the operators' CA the device pins, CN = the RO), and its SHO must be the one the owner
 * instructed (the DRF keeps its answer per txn, so asking again would not change it).
 * MCIM_OK: *stmt is the verified statement. Otherwise `why` says what, and *stmt is NULL;
 * MCIM_ORDER_PENDING is the DRF's "not yet", a call's failure is the call's cause (with
 * `res` for dev_run_call_failed), MCIM_CLAIM_MISMATCH another SHO. */
static mcim_cause_t discovery_ask(struct dev_run *r, const char *token, int64_t *sent,
                                  struct mcim_http_result *res, mcim_statement_t **stmt,
                                  char *why, size_t whylen)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *ro = dev_cfg_str(d, "ro");
  json_t *body = json_pack("{s:s,s:s}", "txn", p->txn, "device", d->name);
  mcim_cause_t rc;

  *stmt = NULL;
  why[0] = '\0';
  *sent = dev_now_us();
  /* the answer names the new SHO: the RO gives it to the device itself, not to a token */
  rc = body ? dev_request_proof(r, ro, "discovery", body) : MCIM_NO_MEMORY;
  if (rc == MCIM_OK)
    rc = dev_call(d, r->cli, "POST", ro, "/v1/drf/discover", body, token, res);
  if (rc != MCIM_OK) {
    snprintf(why, whylen, "%s", res->detail[0] ? res->detail : mcim_cause_text(rc));
    goto cleanup;
  }
  const char *jws = dev_json_str(res->json, "discovery", MCIM_JOSE_MAX_LEN);
  if (!jws) {
    rc = MCIM_PEER_BAD_ANSWER;
    snprintf(why, whylen, "DRF: the answer has no \"discovery\" statement");
    goto cleanup;
  }
  mcim_jws_expect_t ex = {.iss = ro, .aud = d->name, .sub = d->name,
                          .typ = "mcim-discovery+jwt", .txn = p->txn,
                          .skew = dev_cfg_int(d, "clock_skew")};
  mcim_cause_t key_rc = MCIM_OK;
  rc = dev_peer_verify(d, r->cli, ro, jws, &ex, stmt, &key_rc);
  if (key_rc != MCIM_OK) {
    snprintf(why, whylen, "RO certificate: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    snprintf(why, whylen, "DRF: the discovery statement does not verify as the RO's: %s",
             mcim_cause_text(rc));
    goto cleanup;
  }
  const char *sho = mcim_statement_string(*stmt, "sho");
  if (!sho || !mcim_statement_string(*stmt, "sho_cert")) {
    rc = MCIM_CLAIM_MISSING;
    snprintf(why, whylen, "DRF: the discovery statement lacks sho or sho_cert");
  } else if (strcmp(sho, p->sho) != 0) {
    /* The owner chose the SHO (instruction): a registry pointing elsewhere is not followed. */
    rc = MCIM_CLAIM_MISMATCH;
    snprintf(why, whylen, "DRF: points to SHO \"%.63s\", the owner instructed \"%s\"", sho,
             p->sho);
  }
cleanup:
  if (rc != MCIM_OK) {
    mcim_statement_free(*stmt);
    *stmt = NULL;
  }
  json_decref(body);
  return rc;
}

/* 7-8: DRF discovery (discovery_ask). The statement's jti and the time are kept: the nonce
 * step asks again while it waits (dev_st_nonce) and tells a stored answer from a new one. */
void dev_st_discover(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *ro = dev_cfg_str(d, "ro");
  struct mcim_http_result res = {0};
  mcim_jose_key_t *sho_key = NULL;
  mcim_statement_t *stmt = NULL;
  json_t *tb = NULL;
  char why[256];
  int64_t sent = 0;
  char *token = dev_run_access_token(r);
  mcim_cause_t rc;

  if (!token)
    goto cleanup;
  rc = discovery_ask(r, token, &sent, &res, &stmt, why, sizeof(why));
  if (rc == MCIM_ORDER_PENDING) {
    /* "Not yet": the owner's order (step 1) travels through the new SHO to the DRF while the
     * owner instructs us (step 2). Asked again until the procedure's deadline; not traced,
     * a poll is not a message of the procedure. */
    dev_run_wait(r, MCIM_OK, "DRF: the order of this procedure has not reached the RO yet");
    goto cleanup;
  }
  tb = json_pack("{s:s,s:s}", "txn", p->txn, "device", d->name);
  /* the call's outcome: a verification failure is ours, not the DRF's */
  dev_trace_at(d, sent, p->txn, p->n, ro, "DRF: where is my SHO?", tb,
               res.status / 100 == 2 ? MCIM_OK : rc);
  if (rc != MCIM_OK && res.status / 100 != 2) {
    dev_run_call_failed(r, r->access_used, rc, &res, "DRF discovery");
    goto cleanup;
  }
  r->fail_step = p->n + 1;
  if (rc != MCIM_OK) {
    if (dev_cause_retry(rc, 0)) /* the RO's certificate not fetched */
      dev_run_wait(r, rc, "%s (retrying)", why);
    else
      dev_run_fail(r, rc, "%s", why);
    goto cleanup;
  }
  const char *sho_cert = mcim_statement_string(stmt, "sho_cert");
  const char *endpoint = mcim_statement_string(stmt, "endpoint");
  rc = dev_peer_key_from_pem(d, sho_cert, p->sho, &sho_key);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "DRF: the certificate of %s does not verify against the operators' CA",
                 p->sho);
    goto cleanup;
  }
  /* The RO vouches for where the SHO is: that is the address the device uses from now on. */
  if (!endpoint || dev_network_learn(d, p->sho, endpoint) != MCIM_OK) {
    dev_run_fail(r, MCIM_PEER_BAD_ANSWER, "DRF: the endpoint of %s is not an https URL", p->sho);
    goto cleanup;
  }
  r->fail_step = 0;
  /* the RO's word for the SHO's certificate, verified: the SHO's statements later (its
   * discard acknowledgement, dev_ack_verify) need no fetch of it */
  dev_peer_cert_keep(d, p->sho, sho_cert);
  dev_data_set_str(p, "sho_cert", sho_cert);
  dev_data_set_str(p, "endpoint", endpoint);
  dev_data_set_str(p, "discovery_jti", stmt->claims.jti);
  json_object_set_new(p->data, "discovered_at", json_integer(mcim_now()));
  r->out = OUT_NEXT;
cleanup:
  mcim_statement_free(stmt);
  mcim_jose_key_free(sho_key);
  json_decref(tb);
  mcim_http_result_clear(&res);
  free(token);
}

/* While the device waits for its nonce after discovering, it asks the DRF again every
 * DEV_REDISCOVER_S seconds. The DRF commits its first answer relaxed (src/roles/ro/drf.c,
 * mcim_drf_discover, says why that is safe): a crash of its database may lose the answer and
 * the step-8 announcement with it, and then the SHO never asks the PVA for our nonce; asking
 * again makes the DRF announce us again. 10 s: a healthy procedure has its nonce within a
 * second or so of discovering (the SHO asks the PVA as soon as it is told), so it never asks
 * again; the loss needs the database server or its machine to crash and come back, which
 * takes longer than that; and a device waiting on a slow SHO costs the RO one stored-answer
 * lookup per 10 s (one request in 21 more than the nonce polls, at poll_ms 500). */
#define DEV_REDISCOVER_S 10

/* The seed step the procedure's discovery is traced with (7 in every table that has one). */
static int discover_step(const struct dev_proc *p)
{
  const struct dev_procedure *pr = dev_procedure_find(p->kind, p->via);
  for (size_t i = 0; pr && i < pr->nsteps; i++)
    if (strcmp(pr->steps[i].name, "discover") == 0)
      return pr->steps[i].n;
  return p->n;
}

/* Ask the DRF again (see DEV_REDISCOVER_S). Never fails the procedure on a hiccup ("not yet",
 * a network or store problem, a stored statement that expired meanwhile: logged, and the nonce
 * is waited for as before); only a verified answer naming another SHO does, as the first
 * would have. A stored answer (the same statement, same jti) is a poll and is not traced; a
 * new statement means the DRF had lost its answer and announced us again: traced, logged. */
static void rediscover(struct dev_run *r, const char *token)
{
  struct dev_proc *p = r->p;
  struct mcim_http_result res = {0};
  mcim_statement_t *stmt = NULL;
  char why[256];
  int64_t sent = 0;
  const char *jti = dev_data_str(p, "discovery_jti");
  json_int_t at = json_integer_value(json_object_get(p->data, "discovered_at"));

  if (!jti || mcim_now() - at < DEV_REDISCOVER_S)
    goto cleanup;
  json_object_set_new(p->data, "discovered_at", json_integer(mcim_now()));
  (void)dev_run_save(r); /* not again at once after a restart; a failure is logged */
  mcim_cause_t rc = discovery_ask(r, token, &sent, &res, &stmt, why, sizeof(why));
  /* the RO's own statement naming another SHO: not a refusal of the request (a problem's
   * CLAIM_MISMATCH is about the token, review of 2026-12-07) */
  if (rc == MCIM_CLAIM_MISMATCH && res.status >= 200 && res.status < 300) {
    dev_run_fail(r, rc, "asked again: %s", why);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_INFO, p->txn, discover_step(p), rc,
                   "DRF asked again while waiting for the nonce: %s (waiting on)", why);
    goto cleanup;
  }
  if (stmt->claims.jti && strcmp(stmt->claims.jti, jti) == 0) {
    mcim_log_event(MCIM_LOG_DEBUG, p->txn, discover_step(p), MCIM_OK,
                   "DRF asked again while waiting for the nonce: its stored answer");
    goto cleanup;
  }
  json_t *tb = json_pack("{s:s,s:s}", "txn", p->txn, "device", r->d->name);
  dev_trace_at(r->d, sent, p->txn, discover_step(p), dev_cfg_str(r->d, "ro"),
               "DRF: where is my SHO? (asked again: a new answer, the DRF had lost its first)",
               tb, MCIM_OK);
  json_decref(tb);
  mcim_log_event(MCIM_LOG_NOTICE, p->txn, discover_step(p), MCIM_OK,
                 "DRF asked again while waiting for the nonce: a new answer for %s (the DRF had"
                 " lost its first, and announced this device again)", p->sho);
  dev_data_set_str(p, "discovery_jti", stmt->claims.jti);
  (void)dev_run_save(r);
cleanup:
  mcim_statement_free(stmt);
  mcim_http_result_clear(&res);
}

/* 10: the PVA's nonce for this procedure (the SHO asked the PVA at step 9, after the DRF
 * told it at step 8: the device polls until it is there, and asks the DRF again every
 * DEV_REDISCOVER_S meanwhile in case the DRF lost step 8: rediscover). */
void dev_st_nonce(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *pva = dev_cfg_str(d, "pva");
  struct mcim_http_result res = {0};
  char path[160];
  char *token = dev_run_access_token(r);
  mcim_cause_t rc;

  if (!token)
    goto cleanup;
  snprintf(path, sizeof(path), "/v1/validations/pending/%s/%s", d->name, p->txn);
  int64_t sent = dev_now_us();
  /* the nonce of this procedure is for the device itself: its TRE's request, not the token
   * alone (which the network the device is on can mint) */
  json_t *body = json_object();
  rc = body ? dev_request_proof(r, pva, "nonce", body) : MCIM_NO_MEMORY;
  if (rc != MCIM_OK) {
    json_decref(body);
    dev_run_fail(r, rc, "the TRE cannot sign the request for the nonce: %s",
                 mcim_cause_text(rc));
    goto cleanup;
  }
  dev_prefer_wait(r);
  rc = dev_call(d, r->cli, "POST", pva, path, body, token, &res);
  json_decref(body);
  if (rc == MCIM_NOT_FOUND) {
    dev_run_wait(r, MCIM_OK, "waiting for the SHO's validation request at the PVA");
    rediscover(r, token);
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    dev_run_call_failed(r, r->access_used, rc, &res, "PVA nonce");
    goto cleanup;
  }
  const char *id = dev_json_hex(res.json, "validation_id", 32);
  const char *txn = dev_json_hex(res.json, "txn", DEV_TXN_LEN);
  const char *nonce = dev_json_hex(res.json, "nonce", 0);
  if (!id || !txn || !nonce || strlen(nonce) < 16 || strlen(nonce) > 256) {
    dev_run_fail(r, MCIM_PEER_BAD_ANSWER, "PVA: the pending validation lacks validation_id, txn or nonce");
    goto cleanup;
  }
  if (strcmp(txn, p->txn) != 0) {
    /* another procedure's validation, not ours (yet) */
    dev_run_wait(r, MCIM_OK, "the PVA's pending validation is for procedure %s", txn);
    rediscover(r, token);
    goto cleanup;
  }
  /* Not traced here: this is a poll, and the one that finds the nonce may have left
   * before the SHO's request (step 9) reached the PVA, which answers it only after. The
   * PVA traces its answer (10, "nonce"), which is the message of the procedure. */
  (void)sent;
  /* a new nonce needs a new quote */
  if (!dev_data_str(p, "validation_id") || strcmp(dev_data_str(p, "validation_id"), id) != 0)
    dev_data_set_str(p, "quote", NULL);
  dev_data_set_str(p, "validation_id", id);
  dev_data_set_str(p, "nonce", nonce);
  r->out = OUT_NEXT;
cleanup:
  mcim_http_result_clear(&res);
  free(token);
}

/* Whether a statement the agent persisted has expired (it must then be made again). */
bool dev_statement_expired(const char *jws)
{
  json_t *exp = NULL;
  bool expired = true;
  if (jws && mcim_jws_peek_claim(jws, "exp", &exp) == MCIM_OK && json_is_integer(exp))
    expired = json_integer_value(exp) <= mcim_now();
  json_decref(exp);
  return expired;
}

/* 10: the TRE's quote over the nonce, persisted before it is sent so a retry sends the same
 * one (the PVA answers a repeated quote with its stored verdict, another one as a replay). */
void dev_st_quote(struct dev_run *r)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  const char *pva = dev_cfg_str(d, "pva");
  const char *id = dev_data_str(p, "validation_id");
  const char *nonce = dev_data_str(p, "nonce");
  struct mcim_http_result res = {0};
  json_t *body = NULL, *tb = NULL;
  char *jws = NULL, *cert = NULL, path[160];
  char *token = NULL;
  mcim_cause_t rc;

  if (!id || !nonce) {
    r->out = OUT_GOTO;
    r->next = "nonce";
    goto cleanup;
  }
  token = dev_run_access_token(r);
  if (!token)
    goto cleanup;
  if (!dev_data_str(p, "quote")) {
    /* the TRE makes (durable) the procedure's key-agreement key the quote carries */
    dev_tre_point(MCIM_CRASH_BEFORE_TRE);
    rc = d->tre->ops->quote(d->tre->ctx, pva, p->txn, nonce, dev_cfg_int(d, "statement_lifetime"),
                            &jws);
    if (rc == MCIM_OK)
      dev_tre_point(MCIM_CRASH_AFTER_TRE);
    if (rc != MCIM_OK) {
      dev_run_fail(r, rc, "the TRE cannot quote: %s", mcim_cause_text(rc));
      goto cleanup;
    }
    dev_data_set_str(p, "quote", jws);
    /* a TPM TRE adds the TPM's quote over the same nonce and its measurement log */
    rc = dev_tpm_evidence(d, p, nonce);
    if (rc != MCIM_OK) {
      dev_run_fail(r, rc, "the TPM cannot quote: %s", mcim_cause_text(rc));
      goto cleanup;
    }
    if (dev_run_save(r) != MCIM_OK) {
      dev_run_wait(r, MCIM_STORE_ERROR, "cannot persist the quote before sending it");
      goto cleanup;
    }
  }
  rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc != MCIM_OK) {
    dev_run_fail(r, rc, "the TRE has no attestation certificate");
    goto cleanup;
  }
  body = json_pack("{s:s,s:s,s:s,s:s}", "quote", dev_data_str(p, "quote"), "tre_cert", cert, "txn",
                   p->txn, "device", d->name);
  if (body && dev_data_str(p, "tpm_quote"))
    json_object_set_new(body, "tpm", json_loads(dev_data_str(p, "tpm_quote"), 0, NULL));
  snprintf(path, sizeof(path), "/v1/validations/%s/quote", id);
  int64_t sent = dev_now_us();
  rc = body ? dev_call(d, r->cli, "POST", pva, path, body, token, &res) : MCIM_NO_MEMORY;
  tb = json_pack("{s:s,s:s}", "validation_id", id, "txn", p->txn);
  dev_trace_at(d, sent, p->txn, p->n, pva, "TRE quote", tb, rc);
  if (rc == MCIM_OK) {
    const char *result = dev_json_str(res.json, "result", 32);
    if (result && strcmp(result, "success") == 0)
      r->out = OUT_NEXT;
    else
      dev_run_fail(r, MCIM_VALIDATION_FAILED, "PVA: validation result \"%s\"", result ? result : "?");
    goto cleanup;
  }
  if ((rc == MCIM_QUOTE_INVALID || (rc == MCIM_TOKEN_EXPIRED && !res.bearer_challenge)) &&
      dev_statement_expired(dev_data_str(p, "quote"))) {
    /* our persisted quote outlived its lifetime before the PVA took it: make a fresh one */
    dev_data_set_str(p, "quote", NULL);
    dev_run_save(r);
    dev_run_wait(r, rc, "the quote expired before the PVA took it; quoting again");
    goto cleanup;
  }
  if (rc == MCIM_VALIDATION_FAILED) {
    dev_run_fail(r, rc, "PVA: %s", res.detail[0] ? res.detail : "the measurements do not match the RIMs");
    goto cleanup;
  }
  dev_run_call_failed(r, r->access_used, rc, &res, "PVA quote");
cleanup:
  json_decref(body);
  json_decref(tb);
  mcim_http_result_clear(&res);
  free(jws);
  free(cert);
  free(token);
}

static const struct dev_step initial_steps[] = {
    {"attach", 4, dev_st_attach},     {"discover", 7, dev_st_discover},
    {"nonce", 10, dev_st_nonce},      {"quote", 10, dev_st_quote},
    {"download", 13, dev_st_download}, {"install", 14, dev_st_install},
    {"report", 14, dev_st_report},    {"attach-sho", 0, dev_st_attach_sho},
};

const struct dev_procedure dev_proc_initial = {
    "initial", NULL, initial_steps, sizeof(initial_steps) / sizeof(initial_steps[0]), 15};
