/* The device side of the seed's procedures, as state machines: a procedure is a table of
 * steps, the current step's name is persisted in agent.db (table procedures), and one
 * worker round runs one step. A step either moves on (its results persisted first), waits
 * (a poll that found nothing yet, or a transient problem: the round is retried after the
 * poll interval), or fails with a cause. Whatever a step sends is idempotent at the
 * receiver per (txn, step), so a step interrupted by a crash is simply run again.
 *
 * The steps below are shared by every table; the step number they trace with is the
 * table's (the PVA exchange is step 10 of initial provisioning and step 4 of a change via
 * the old SHO). This file holds the engine and initial provisioning; change.c the change of
 * subscription and the pre-provisioned variant.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "device/tpm_evidence.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/role.h" /* mcim_jws_peek_claim */
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
  if (dev_cause_token(rc) && access && access[0]) {
    dev_session_drop(r->d, access);
    /* a token saved for a restart that the network refuses is no use either */
    json_t *saved = json_object_get(r->p->data, "saved_token");
    const char *snet = json_string_value(json_object_get(saved, "network"));
    if (snet && strcmp(snet, access) == 0) {
      json_object_del(r->p->data, "saved_token");
      dev_run_save(r);
    }
    dev_run_wait(r, rc, "%s: access token refused (%s), attaching again", what, detail);
  } else if (mcim_cause_transient(rc, res ? res->status : 0)) {
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
  if (mcim_cause_transient(rc, ar.http_status) && rc != MCIM_NO_ACCESS) {
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
  if (mcim_cause_transient(rc, ar.http_status)) {
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
  rc = body ? dev_request_proof(r, "discovery", body) : MCIM_NO_MEMORY;
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
    if (mcim_cause_transient(rc, 0)) /* the RO's certificate not fetched */
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
  if (rc == MCIM_CLAIM_MISMATCH) {
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
  dev_prefer_wait(r);
  rc = dev_call(d, r->cli, "GET", pva, path, NULL, token, &res);
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
  if ((rc == MCIM_QUOTE_INVALID || rc == MCIM_TOKEN_EXPIRED) &&
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
  rc = body ? dev_request_proof(r, "package", body) : MCIM_NO_MEMORY;
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
  if (rc == MCIM_TOKEN_EXPIRED && dev_statement_expired(dev_data_str(p, "status"))) {
    dev_data_set_str(p, "status", NULL);
    dev_run_save(r);
    dev_run_wait(r, rc, "the status statement expired before the DPF took it; signing again");
    goto cleanup;
  }
  if (rc != MCIM_OK) {
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
  } else if (mcim_cause_transient(rc, ar.http_status)) {
    dev_run_wait(r, rc, "attach to %s: %s (retrying)", r->p->sho, ar.detail);
  } else {
    dev_run_fail(r, rc, "attach to %s with the new MCIM: %s", r->p->sho,
         ar.detail[0] ? ar.detail : mcim_cause_text(rc));
  }
}

static const struct dev_step initial_steps[] = {
    {"attach", 4, dev_st_attach},     {"discover", 7, dev_st_discover},
    {"nonce", 10, dev_st_nonce},      {"quote", 10, dev_st_quote},
    {"download", 13, dev_st_download}, {"install", 14, dev_st_install},
    {"report", 14, dev_st_report},    {"attach-sho", 0, dev_st_attach_sho},
};

static const struct dev_procedure proc_initial = {
    "initial", NULL, initial_steps, sizeof(initial_steps) / sizeof(initial_steps[0]), 15};

static const struct dev_procedure *const procedures[] = {
    &proc_initial, &dev_proc_change_old_sho, &dev_proc_change_pristine, &dev_proc_preload,
    &dev_proc_switch,
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
 * activate what it was not told about). The PCID credential is never touched. One
 * exception, the contract of a change via the old SHO: once the old MCIM is discarded
 * (step 8) and the old SHO could not be told (step 9), the new package stays staged, not
 * installed, and the receipt stays queued in the TRE for a later delivery. */
static void roll_back(struct mcim_device *d, struct dev_proc *p)
{
  bool keep_staged = strcmp(p->kind, "change") == 0 && strcmp(p->via, "old-sho") == 0 &&
                     dev_data_bool(p, "discarded") && !dev_data_bool(p, "installed");
  if (dev_data_bool(p, "installed") && !dev_data_bool(p, "reported") && dev_data_str(p, "slot")) {
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
