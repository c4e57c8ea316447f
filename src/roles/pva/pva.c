/* The PVA (platform validation authority), `mcimd --role pva`: the RIM database, the
 * nonces of pending validations and the verdicts (docs/protocol.md, "PVA").
 *
 * Seed steps (initial provisioning numbering; the change procedure passes step 3, so 4, 5):
 *   9  SHO -> PVA   POST /v1/validations                  validate this device
 *   10 PVA -> M2ME  POST /v1/validations/pending/{device}/{txn}  the nonce of that procedure
 *   10 M2ME -> PVA  POST /v1/validations/{id}/quote       the TRE quote
 *   11 PVA -> SHO   outbox POST /v1/verdicts              the signed verdict
 *   10 SHO -> PVA   POST /v1/revocations (revocations.c)  old SHO: tokens of an ended
 *                                                         subscription revoked (change step 10)
 *
 * A validation is `pending` until a properly signed quote over its nonce arrives (then
 * `success` or `failure`, once) or its nonce expires (`expired`, a failure verdict is sent so
 * the SHO never waits forever). A quote that cannot be attributed to the device's TRE (bad
 * certificate, signature, claims, nonce) is refused without consuming the nonce: the device
 * may try again while the nonce lives; the last refusal is kept as the cause of the expiry.
 *
 * This file: the kind (configuration, schema, routes, expiry), POST /v1/rims and the
 * validations (opened by the SHO, their nonce fetched by the device). The quote that
 * settles a validation is quote.c's, its evidence checks validate.c's and quote_tpm.c's. */
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/util.h"
#include "roles/kinds.h"
#include "roles/pva/pva.h"

#define NONCE_BYTES 32

struct pva_state {
  int64_t nonce_lifetime;
  int64_t revocations_purged; /* when the tick last purged expired revocations */
  struct mcim_peer_limit revocations; /* revocations_per_minute, per SHO */
};

struct mcim_peer_limit *pva_revocation_limit(struct mcim_role *r)
{
  struct pva_state *ps = r->state;
  return ps ? &ps->revocations : NULL;
}

static const mcim_config_spec_t pva_spec[] = {
    {.name = "nonce_lifetime", .type = MCIM_CFG_DURATION, .def = "2m", .min = 1, .max = 86400,
     .help = "how long a validation nonce waits for the device's quote"},
    {.name = "ro", .type = MCIM_CFG_STRING, .def = "ro", .min = 1, .max = 63,
     .help = "name of the RO instance whose order records prove an SHO's procedure"},
    {.name = "revocations_per_minute", .type = MCIM_CFG_INT, .def = "12000", .min = 1,
     .max = 10000000,
     .help = "revocations one SHO may send the PVA in a minute, all its instances together"
             " (POST /v1/revocations); more are answered 503 with Retry-After, and the SHO's"
             " outbox asks again"},
};

static const mcim_migration_t pva_migrations[] = {
    {1, "rims, validations",
     "CREATE TABLE rims (model TEXT NOT NULL, component TEXT NOT NULL, digest TEXT NOT NULL,"
     " created BIGINT NOT NULL, PRIMARY KEY (model, component, digest));"
     "CREATE TABLE validations (id TEXT PRIMARY KEY, txn TEXT NOT NULL, step BIGINT NOT NULL,"
     " device TEXT NOT NULL, sho TEXT NOT NULL, nonce TEXT NOT NULL UNIQUE,"
     " state TEXT NOT NULL, expires BIGINT NOT NULL, created_us BIGINT NOT NULL,"
     " fetched BIGINT NOT NULL, quote_sha TEXT, verdict TEXT, cause TEXT, last_cause TEXT,"
     " UNIQUE (txn, step));"
     "CREATE INDEX validations_device ON validations (device, state, expires);"
     "CREATE INDEX validations_due ON validations (state, expires)"},
    {2, "revoked tokens of ended subscriptions (revocations.c)",
     "CREATE TABLE revocations (network TEXT NOT NULL, imsi TEXT NOT NULL,"
     " device TEXT NOT NULL, created BIGINT NOT NULL, PRIMARY KEY (network, imsi))"},
    {3, "the purge finds what it deletes by index, not by scanning every validation and"
        " revocation under the writers' lock",
     "CREATE INDEX validations_created ON validations (created_us);"
     "CREATE INDEX revocations_created ON revocations (created)"},
};

static bool is_sho(const char *peer)
{
  return mcim_role_name_is_sho(peer);
}

/* Answer with a problem and, when the procedure is known, record the failed message. */
void pva_fail(struct mcim_role *r, struct mcim_http_response *resp, const char *txn, int step,
              const char *from, const char *to, const char *msg, mcim_cause_t cause,
              const char *fmt, ...)
{
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  mcim_http_reply_problem(resp, cause, step, "%s", detail);
  if (txn)
    mcim_role_trace(r, txn, step, from, to, msg, resp->json, cause);
  else
    mcim_log_event(MCIM_LOG_WARN, NULL, step, cause, "%s -> %s: %s refused: %s",
                   from ? from : "?", to, msg, detail);
}

/* A stored answer (idempotent retry): a problem when its status says so. */
void pva_reply_stored(struct mcim_http_response *resp, int status, json_t *answer)
{
  mcim_http_reply_json(resp, status, answer);
  if (status >= 400) {
    int c = mcim_cause_from_name(json_string_value(json_object_get(answer, "cause")));
    resp->problem = true;
    resp->cause = c >= 0 ? (mcim_cause_t)c : MCIM_INTERNAL;
  }
}

static void random_hex(size_t nbytes, char *out)
{
  uint8_t b[NONCE_BYTES];
  /* A failing DRBG must not yield predictable ids or nonces: the caller checks *out. */
  out[0] = '\0';
  if (nbytes <= sizeof(b) && mcim_random(b, nbytes) == MCIM_OK)
    mcim_hex_encode(b, nbytes, out);
}

static void lower(char *s)
{
  for (; *s; s++)
    if (*s >= 'A' && *s <= 'Z')
      *s = (char)(*s - 'A' + 'a');
}

/* ---- POST /v1/rims (manufacture, caller m2mes) ---- */

mcim_cause_t pva_rims_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"model", MCIM_JV_STRING, true, 63},
      {"component", MCIM_JV_STRING, true, 63},
      {"digest", MCIM_JV_HEX, true, 64},
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

static void h_rims(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  char err[160];
  char digest[65];
  mcim_cause_t rc;
  mcim_store_t *st;

  if (!req->peer || strcmp(req->peer, "m2mes") != 0) {
    pva_fail(r, resp, NULL, 0, req->peer, r->name, "RIM", MCIM_FORBIDDEN,
             "only the M2MES registers RIMs (caller \"%s\")", req->peer ? req->peer : "");
    return;
  }
  rc = pva_rims_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, 0, req->peer, r->name, "RIM", rc, "%s", err);
    return;
  }
  const char *model = json_string_value(json_object_get(req->json, "model"));
  const char *component = json_string_value(json_object_get(req->json, "component"));
  if (!mcim_pki_name_valid(model) || !mcim_pki_name_valid(component)) {
    pva_fail(r, resp, NULL, 0, req->peer, r->name, "RIM", MCIM_INVALID_ARGUMENT,
             "model and component must be names of 1-63 characters [A-Za-z0-9._-]");
    return;
  }
  snprintf(digest, sizeof(digest), "%s", json_string_value(json_object_get(req->json, "digest")));
  lower(digest);
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, 0, "store unavailable");
    return;
  }
  mcim_val_t p[] = {MCIM_TEXT(model), MCIM_TEXT(component), MCIM_TEXT(digest),
                    MCIM_INT(mcim_now())};
  rc = mcim_store_exec(st,
                       "INSERT INTO rims (model, component, digest, created) VALUES (?, ?, ?, ?)",
                       p, MCIM_NPARAMS(p), NULL, NULL);
  /* The same RIM again is an idempotent retry (primary key): 200 instead of 201. */
  if (rc != MCIM_OK && rc != MCIM_CONFLICT) {
    mcim_http_reply_problem(resp, rc, 0, "cannot store the RIM");
    return;
  }
  mcim_log_info("RIM %s/%s registered%s", model, component,
                rc == MCIM_CONFLICT ? " (already known)" : "");
  mcim_http_reply_json(resp, rc == MCIM_OK ? 201 : 200,
                       json_pack("{s:s,s:s,s:s}", "model", model, "component", component,
                                 "digest", digest));
}

/* ---- validations: rows ---- */
#define VROW_COLS                                                                              \
  "id, txn, step, device, sho, nonce, state, expires, fetched, quote_sha, last_cause"

static void copy_col(char *dst, size_t len, const mcim_row_t *row, size_t col)
{
  const char *s = mcim_row_text(row, col);
  snprintf(dst, len, "%s", s ? s : "");
}

static mcim_cause_t vrow_cb(const mcim_row_t *row, void *arg)
{
  struct vrow *v = arg;
  copy_col(v->id, sizeof(v->id), row, 0);
  copy_col(v->txn, sizeof(v->txn), row, 1);
  v->step = (int)mcim_row_int(row, 2);
  copy_col(v->device, sizeof(v->device), row, 3);
  copy_col(v->sho, sizeof(v->sho), row, 4);
  copy_col(v->nonce, sizeof(v->nonce), row, 5);
  copy_col(v->state, sizeof(v->state), row, 6);
  v->expires = mcim_row_int(row, 7);
  v->fetched = mcim_row_int(row, 8);
  copy_col(v->quote_sha, sizeof(v->quote_sha), row, 9);
  copy_col(v->last_cause, sizeof(v->last_cause), row, 10);
  return MCIM_OK;
}

mcim_cause_t pva_vrow_load(mcim_store_t *st, const char *id, struct vrow *v)
{
  memset(v, 0, sizeof(*v));
  mcim_val_t p[] = {MCIM_TEXT(id)};
  return mcim_store_query_one(st, "SELECT " VROW_COLS " FROM validations WHERE id = ?", p, 1,
                              vrow_cb, v);
}

/* ---- POST /v1/validations (step 9 / change 3, caller an SHO) ---- */

/* A stored answer for (txn, step) matches this request only if it is about the same device
 * and was asked by the same SHO; anything else reusing the procedure id is a conflict. */
static void answer_again(struct mcim_role *r, mcim_store_t *st, struct mcim_http_response *resp,
                         const char *txn, int step, const char *device, const char *sho,
                         int status, json_t *answer)
{
  struct vrow v;
  const char *id = json_string_value(json_object_get(answer, "validation_id"));
  if (!id || pva_vrow_load(st, id, &v) != MCIM_OK || strcmp(v.device, device) != 0 ||
      strcmp(v.sho, sho) != 0) {
    json_decref(answer);
    pva_fail(r, resp, txn, step, sho, r->name, "validate M2ME", MCIM_CONFLICT,
             "procedure %s already has a validation at step %d for another device or SHO", txn,
             step);
    return;
  }
  pva_reply_stored(resp, status, answer);
}

/* The RO-signed order record (mcim-order-record+jwt): iss the RO, aud the SHO asking, sub the
 * device, the txn. */
static mcim_cause_t check_order_record(struct mcim_role *r, const char *record, const char *sho,
                                       const char *device, const char *txn)
{
  const char *ro = mcim_config_str(r->cfg, "ro");
  const mcim_jose_key_t *ro_key = NULL;
  mcim_statement_t *stmt = NULL;
  mcim_cause_t rc = mcim_role_peer_key(r, ro, &ro_key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = ro, .aud = sho, .sub = device,
                            .typ = "mcim-order-record+jwt", .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(record, strlen(record), ro_key, &ex, &stmt);
  }
  mcim_statement_free(stmt);
  return rc;
}

mcim_cause_t pva_validation_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"txn", MCIM_JV_HEX, true, 32},
      {"device", MCIM_JV_STRING, true, 63},
      {"aud", MCIM_JV_STRING, false, 63},
      {"step", MCIM_JV_INTEGER, false, 0},
      {"order_record", MCIM_JV_STRING, true, 16384},
  };
  return mcim_jsonv_check(body, fields, 5, err, err_len);
}

static void h_validation_create(void *ctx, const struct mcim_http_request *req,
                                struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct pva_state *ps = r->state;
  char err[160];
  char txn[33];
  char id[33];
  char nonce[2 * NONCE_BYTES + 1];
  int status = 0;
  json_t *answer = NULL;
  mcim_cause_t rc;
  mcim_store_t *st;
  const char *sho = req->peer;
  int step = STEP_VALIDATE;

  if (!is_sho(sho)) {
    pva_fail(r, resp, NULL, step, sho, r->name, "validate M2ME", MCIM_FORBIDDEN,
             "only an SHO may ask for a validation (caller \"%s\")", sho ? sho : "");
    return;
  }
  rc = pva_validation_body(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, step, sho, r->name, "validate M2ME", rc, "%s", err);
    return;
  }
  snprintf(txn, sizeof(txn), "%s", json_string_value(json_object_get(req->json, "txn")));
  lower(txn);
  json_t *jstep = json_object_get(req->json, "step");
  if (jstep) {
    /* Steps 9 (initial) and 3 (change) are the seed's; step+2 must stay a step number. */
    json_int_t s = json_integer_value(jstep);
    if (s < 1 || s > 90) {
      pva_fail(r, resp, NULL, STEP_VALIDATE, sho, r->name, "validate M2ME", MCIM_INVALID_ARGUMENT,
               "step must be 1..90 (9: initial provisioning, 3: change of SHO)");
      return;
    }
    step = (int)s;
  }
  const char *device = json_string_value(json_object_get(req->json, "device"));
  const char *aud = json_string_value(json_object_get(req->json, "aud"));
  if (!mcim_pki_name_valid(device)) {
    pva_fail(r, resp, NULL, step, sho, r->name, "validate M2ME", MCIM_INVALID_ARGUMENT,
             "device must be a device id (1-63 characters [A-Za-z0-9._-])");
    return;
  }
  /* The verdict always goes to the caller: an SHO cannot direct it to another one. */
  if (aud && strcmp(aud, sho) != 0 && strcmp(aud, r->name) != 0) {
    pva_fail(r, resp, NULL, step, sho, r->name, "validate M2ME", MCIM_FORBIDDEN,
             "aud \"%s\": the verdict can only be addressed to the caller \"%s\"", aud, sho);
    return;
  }
  /* Only for a real procedure of the caller: the RO's record of the owner's order for this
   * (SHO, device, txn). Without it any SHO could open validations for any device. */
  rc = check_order_record(r, json_string_value(json_object_get(req->json, "order_record")), sho,
                          device, txn);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, step, rc, "validation asked by %s for %s refused", sho,
                   device);
    /* a record that does not verify proves nothing: NOT_PARTY; the RO's key out of reach is
     * not the caller's fault and may pass: answered as it is, so the SHO retries */
    bool transient = rc == MCIM_PEER_UNREACHABLE || rc == MCIM_TIMEOUT || rc == MCIM_PEER_ERROR ||
                     rc == MCIM_PEER_BAD_ANSWER || rc == MCIM_NO_MEMORY || rc == MCIM_INTERNAL;
    mcim_http_reply_problem(resp, transient ? rc : MCIM_NOT_PARTY, step,
                            "no order of %s for %s in procedure %s recorded by the RO (%s)", sho,
                            device, txn, mcim_cause_name(rc));
    return;
  }
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, step, "store unavailable");
    return;
  }
  rc = mcim_role_answer_get(st, txn, step, "validation", &status, &answer);
  if (rc == MCIM_OK) {
    answer_again(r, st, resp, txn, step, device, sho, status, answer);
    return;
  }
  random_hex(16, id);
  random_hex(NONCE_BYTES, nonce);
  if (!id[0] || !nonce[0]) {
    mcim_http_reply_problem(resp, MCIM_CRYPTO_ERROR, step, "no randomness for the nonce");
    return;
  }
  int64_t now = mcim_now();
  int64_t expires = now + ps->nonce_lifetime;
  /* microseconds: the device is given the newest pending validation, even within a second */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t created_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  answer = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i}", "validation_id", id, "txn", txn, "device",
                     device, "nonce", nonce, "expires", (json_int_t)expires, "step", step);
  if (!answer) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, step, "out of memory");
    return;
  }
  /* One batch (docs/store.md): on PostgreSQL BEGIN, the writers' lock, the three inserts
   * and COMMIT go in one round trip, without a savepoint per statement; begun, they were five
   * round trips and three savepoints, each waited for under the writers' lock
   * (bench/drf_pgstat.py; docs/performance.md, "The DRF at operator scale"). Still a durable
   * commit: the nonce the device is to fetch is in it. A batch has no statement-level
   * atomicity: a trace row that cannot be written fails the validation, which the SHO's
   * outbox asks for again (a store error), where it was dropped with a warning. */
  rc = mcim_store_begin_batch(st, false);
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_TEXT(id),  MCIM_TEXT(txn),   MCIM_INT(step),    MCIM_TEXT(device),
                      MCIM_TEXT(sho), MCIM_TEXT(nonce), MCIM_INT(expires), MCIM_INT(created_us)};
    rc = mcim_store_exec(st,
                         "INSERT INTO validations (id, txn, step, device, sho, nonce, state,"
                         " expires, created_us, fetched)"
                         " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, 0)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  }
  if (rc == MCIM_OK)
    rc = mcim_role_answer_put(st, txn, step, "validation", 201, answer);
  if (rc == MCIM_OK) /* the trace row rides on the validation's commit */
    mcim_role_trace(r, txn, step, sho, r->name, "validate M2ME", req->json, MCIM_OK);
  if (rc == MCIM_OK)
    rc = mcim_store_commit(st);
  if (rc != MCIM_OK) {
    if (mcim_store_in_txn(st))
      mcim_store_rollback(st);
    json_decref(answer);
    answer = NULL;
    /* A concurrent identical request won the race: answer what it answered. */
    if (rc == MCIM_CONFLICT &&
        mcim_role_answer_get(st, txn, step, "validation", &status, &answer) == MCIM_OK) {
      answer_again(r, st, resp, txn, step, device, sho, status, answer);
      return;
    }
    pva_fail(r, resp, txn, step, sho, r->name, "validate M2ME", rc,
             rc == MCIM_CONFLICT ? "procedure %s already has a validation at step %d"
                                 : "cannot record the validation of procedure %s (step %d)",
             txn, step);
    return;
  }
  mcim_http_wake("pva-pending:%s/%s", device, txn); /* a device's nonce request held for it */
  mcim_http_reply_json(resp, 201, answer);
}

/* ---- POST /v1/validations/pending/{device}/{txn} (step 10, the device) ----
 * Who may ask: the device itself. An access token naming it is not enough: any access
 * network mints one, and the old SHO of a change via the old SHO knows the txn (step 9), so
 * with a token alone it learnt whether the new SHO's validation was pending, decided or
 * expired, and its nonce. The body carries the TRE's own request (`proof`: for "nonce", aud
 * pva, this txn; `tre_cert`), checked before any validation is read: every refusal before it
 * is the same whatever the PVA holds. */

static void h_pending(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_access acc;
  struct vrow v;
  const char *device = req->params[0];
  const char *txn = req->params[1];
  int64_t now = mcim_now();
  mcim_store_t *st;
  mcim_cause_t rc = mcim_role_check_access(r, req, false, &acc);

  if (rc != MCIM_OK) {
    pva_fail(r, resp, NULL, STEP_VALIDATE + 1, device, r->name, "nonce", rc,
             "an access token of the device is needed (attach first): %s", mcim_cause_text(rc));
    mcim_role_access_challenge(resp, rc);
    return;
  }
  if (strcmp(acc.device, device) != 0) {
    pva_fail(r, resp, NULL, STEP_VALIDATE + 1, acc.device, r->name, "nonce", MCIM_FORBIDDEN,
             "the access token is for device \"%s\", not \"%s\"", acc.device, device);
    return;
  }
  if (mcim_role_require_device_request(r, req->json, device, txn, "nonce", STEP_VALIDATE + 1,
                                       "the nonce", resp) != MCIM_OK)
    return;
  st = mcim_role_store(r);
  if (!st) {
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, STEP_VALIDATE + 1, "store unavailable");
    return;
  }
  /* The nonce of this procedure only: another procedure's validation never reaches it. The
   * newest pending, unexpired one; else the newest of any state, to tell why there is none. */
  mcim_val_t p[] = {MCIM_TEXT(device), MCIM_TEXT(txn), MCIM_INT(now)};
  memset(&v, 0, sizeof(v));
  rc = mcim_store_query_one(st,
                            "SELECT " VROW_COLS " FROM validations WHERE device = ? AND txn = ?"
                            " ORDER BY (state = 'pending' AND expires > ?) DESC, created_us DESC,"
                            " id LIMIT 1",
                            p, 3, vrow_cb, &v);
  bool serving = rc == MCIM_OK && strcmp(v.state, "pending") == 0 && v.expires > now;
  /* expired unquoted: the tick marked it, or is about to (still pending, past its expiry) */
  bool expired = rc == MCIM_OK && !serving &&
                 (strcmp(v.state, "expired") == 0 || strcmp(v.state, "pending") == 0);
  if (rc == MCIM_OK && !serving && !expired)
    rc = MCIM_NOT_FOUND; /* quoted already, or held: nothing for the device now */
  if (expired) {
    /* No quote can settle this procedure's validation any more, and the SHO asks for none
     * again (its request is answered once per txn): the device ends the procedure now, with
     * why, instead of polling until its own deadline. */
    mcim_http_reply_problem(resp, MCIM_NONCE_EXPIRED, STEP_VALIDATE + 1,
                            "the nonce of procedure %s expired before device %s fetched it", txn,
                            device);
    return;
  }
  if (rc == MCIM_NOT_FOUND) {
    mcim_http_reply_problem(resp, MCIM_NOT_FOUND, STEP_VALIDATE + 1,
                            "no pending validation of procedure %s for device %s", txn, device);
    mcim_http_reply_wait_on(resp, "pva-pending:%s/%s", device, txn);
    return;
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, STEP_VALIDATE + 1, "cannot read the validations");
    return;
  }
  json_t *body = json_pack("{s:s,s:s,s:s,s:I,s:i}", "validation_id", v.id, "txn", v.txn, "nonce",
                           v.nonce, "expires", (json_int_t)v.expires, "step", v.step + 1);
  /* The device polls: the nonce is one message of the procedure, traced once. The mark and
   * the trace row together, relaxed: lost in a crash of the machine, the next poll traces the
   * nonce again, which is all the mark is for. */
  if (v.fetched == 0 && mcim_store_begin_relaxed(st) == MCIM_OK) {
    mcim_val_t u[] = {MCIM_INT(now), MCIM_TEXT(v.id)};
    if (mcim_store_exec(st, "UPDATE validations SET fetched = ? WHERE id = ? AND fetched = 0", u,
                        2, NULL, NULL) == MCIM_OK &&
        mcim_store_changes(st) == 1)
      mcim_role_trace(r, v.txn, v.step + 1, r->name, device, "nonce", body, MCIM_OK);
    if (mcim_store_commit(st) != MCIM_OK)
      mcim_log_event(MCIM_LOG_WARN, v.txn, v.step + 1, MCIM_STORE_ERROR,
                     "the nonce's first fetch not recorded: %s", mcim_store_errmsg(st));
  }
  mcim_http_reply_json(resp, 200, body);
}

/* ---- expiry (worker tick) ---- */

struct due {
  struct vrow v[16];
  size_t n;
};

static mcim_cause_t due_row(const mcim_row_t *row, void *arg)
{
  struct due *d = arg;
  if (d->n < sizeof(d->v) / sizeof(d->v[0]))
    vrow_cb(row, &d->v[d->n++]);
  return MCIM_OK;
}

/* A nonce that expired without a good quote: the SHO gets a failure verdict, so the
 * procedure ends instead of waiting. */
static void expire_one(struct mcim_role *r, mcim_store_t *st, const struct vrow *v)
{
  int c = v->last_cause[0] ? mcim_cause_from_name(v->last_cause) : -1;
  mcim_cause_t cause = c > 0 ? (mcim_cause_t)c : MCIM_TIMEOUT;
  char *verdict = NULL;
  json_t *extra = NULL, *body = NULL;
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc != MCIM_OK)
    return;
  mcim_val_t u[] = {MCIM_TEXT(mcim_cause_name(cause)), MCIM_TEXT(v->id)};
  rc = mcim_store_exec(st,
                       "UPDATE validations SET state = 'expired', cause = ? WHERE id = ? AND"
                       " state = 'pending'",
                       u, 2, NULL, NULL);
  if (rc != MCIM_OK || mcim_store_changes(st) != 1)
    goto cleanup; /* another instance did it */
  extra = json_pack("{s:s,s:s,s:[],s:s}", "result", "failure", "cause", mcim_cause_name(cause),
                    "mismatches", "validation_id", v->id);
  rc = extra ? mcim_role_sign(r, "mcim-verdict+jwt", v->device, v->sho, v->txn, extra, &verdict)
             : MCIM_NO_MEMORY;
  if (rc == MCIM_OK) {
    body = json_pack("{s:s,s:s,s:s}", "txn", v->txn, "device", v->device, "verdict", verdict);
    rc = body ? mcim_role_outbox_put(r, st, v->sho, "/v1/verdicts", body, v->txn, v->step + 2,
                                     "verdict")
              : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK) {
    mcim_val_t w[] = {MCIM_TEXT(verdict), MCIM_TEXT(v->id)};
    rc = mcim_store_exec(st, "UPDATE validations SET verdict = ? WHERE id = ?", w, 2, NULL, NULL);
  }
  if (rc == MCIM_OK)
    rc = mcim_store_commit(st);
  if (rc == MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, v->txn, v->step + 1, cause,
                   "no valid TRE quote from %s before the nonce expired: failure verdict to %s",
                   v->device, v->sho);
    mcim_role_wake(r);
  }
cleanup:
  if (mcim_store_in_txn(st))
    mcim_store_rollback(st);
  json_decref(body);
  json_decref(extra);
  free(verdict);
}

/* A revocation is needed while a token it covers can be alive: such a token was issued before
 * the subscription ended, so before the revocation reached us, and lives at most the longest
 * token_lifetime (1 day) and the clock skew. Purged once a minute. */
static void purge_revocations(struct mcim_role *r, mcim_store_t *st, int64_t now)
{
  struct pva_state *ps = r->state;
  if (!ps || now - ps->revocations_purged < 60)
    return;
  ps->revocations_purged = now;
  mcim_val_t p[] = {MCIM_INT(now - 86400 - mcim_config_duration(r->cfg, "clock_skew"))};
  (void)mcim_store_exec(st, "DELETE FROM revocations WHERE created < ?", p, 1, NULL, NULL);
}

static bool pva_tick(struct mcim_role *r)
{
  mcim_store_t *st = mcim_role_store(r);
  struct due d = {.n = 0};
  if (!st)
    return false;
  purge_revocations(r, st, mcim_now());
  mcim_val_t p[] = {MCIM_INT(mcim_now())};
  if (mcim_store_exec(st,
                      "SELECT " VROW_COLS " FROM validations WHERE state = 'pending' AND"
                      " expires <= ? ORDER BY expires LIMIT 16",
                      p, 1, due_row, &d) != MCIM_OK)
    return false;
  for (size_t i = 0; i < d.n; i++)
    expire_one(r, st, &d.v[i]);
  return d.n > 0;
}

/* ---- kind ---- */

static mcim_cause_t pva_start(struct mcim_role *r)
{
  struct pva_state *ps = calloc(1, sizeof(*ps));
  if (!ps)
    return MCIM_NO_MEMORY;
  ps->nonce_lifetime = mcim_config_duration(r->cfg, "nonce_lifetime");
  mcim_peer_limit_init(&ps->revocations, 60);
  r->state = ps;
  return MCIM_OK;
}

static void pva_stop(struct mcim_role *r)
{
  struct pva_state *ps = r->state;
  if (ps)
    mcim_peer_limit_destroy(&ps->revocations);
  free(ps);
  r->state = NULL;
}

static const struct mcim_http_route pva_routes[] = {
    {"POST", "/v1/rims", h_rims, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/validations", h_validation_create, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/validations/pending/{device}/{txn}", h_pending, 0},
    {"POST", "/v1/validations/{id}/quote", pva_quote, 0},
    {"POST", "/v1/revocations", pva_revocation, MCIM_ROUTE_PEER_CERT},
};

/* Validations with a verdict (or expired), record_retention after they were opened
 * (revocations: pva_tick, a day after they came). */
static const char *const pva_purge[] = {
    "DELETE FROM validations WHERE state <> 'pending' AND created_us < ? * 1000000",
    NULL,
};

const struct mcim_role_kind mcim_role_pva = {
    .kind = "pva",
    .summary = "platform validation authority: RIMs, nonces, TRE quotes, verdicts",
    .spec = pva_spec,
    .nspec = sizeof(pva_spec) / sizeof(pva_spec[0]),
    .migrations = pva_migrations,
    .nmigrations = sizeof(pva_migrations) / sizeof(pva_migrations[0]),
    .routes = pva_routes,
    .nroutes = sizeof(pva_routes) / sizeof(pva_routes[0]),
    .start = pva_start,
    .stop = pva_stop,
    .tick = pva_tick,
    .purge = pva_purge,
};
