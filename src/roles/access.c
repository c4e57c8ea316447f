/* Attach and AKA with the device, shared by the VNO and the SHOs (see access.h). */
#include "roles/access.h"

#include <stdio.h>
#include <string.h>

#include "mcim/json_dump.h"
#include "mcim/jsonv.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/trace.h"
#include "mcim/util.h"

const char mcim_access_schema_sql[] =
    "CREATE TABLE attach (id TEXT PRIMARY KEY, txn TEXT, identity TEXT NOT NULL,"
    " device TEXT NOT NULL, rand BYTEA NOT NULL, xres BYTEA NOT NULL, state TEXT NOT NULL,"
    " created BIGINT NOT NULL)";

/* The attach's trace rows until the device answers (mcim_access_trace_at): a JSON array,
 * bodies redacted. Added to the table by the VNO's and the SHO's migrations after 2026-12-06. */
const char mcim_access_rows_sql[] = "ALTER TABLE attach ADD COLUMN trace TEXT";

void mcim_access_trace_at(struct mcim_role *r, json_t *rows, int64_t time_us, const char *txn,
                          int step, const char *from, const char *to, const char *msg,
                          const json_t *body, mcim_cause_t cause)
{
  if (!rows) {
    mcim_role_trace_at(r, time_us, txn, step, from, to, msg, body, cause);
    return;
  }
  json_t *row = json_pack("{s:I,s:i,s:s,s:s,s:s,s:i}", "time_us", (json_int_t)time_us, "step",
                          step, "from", from ? from : "", "to", to ? to : "", "msg", msg,
                          "cause", (int)cause);
  if (row && body)
    json_object_set_new(row, "body", mcim_trace_redact(body));
  if (!row || json_array_append_new(rows, row) != 0)
    mcim_log_event(MCIM_LOG_WARN, txn, step, MCIM_NO_MEMORY, "%s -> %s: %s: not kept to trace",
                   from, to, msg);
}

/* Trace the rows kept by mcim_access_trace_at, each at its own time (trace_rows_text: from
 * the text the session stored). */
static void trace_rows(struct mcim_role *r, const char *txn, const json_t *rows)
{
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    const char *msg = json_string_value(json_object_get(row, "msg"));
    if (msg)
      mcim_role_trace_at(r, json_integer_value(json_object_get(row, "time_us")), txn,
                         (int)json_integer_value(json_object_get(row, "step")),
                         json_string_value(json_object_get(row, "from")),
                         json_string_value(json_object_get(row, "to")), msg,
                         json_object_get(row, "body"),
                         (mcim_cause_t)json_integer_value(json_object_get(row, "cause")));
  }
}

static void trace_rows_text(struct mcim_role *r, const char *txn, const char *text)
{
  json_t *rows = text ? json_loads(text, 0, NULL) : NULL;
  if (text && !json_is_array(rows))
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_STORE_ERROR, "attach trace rows unreadable");
  trace_rows(r, txn, rows);
  json_decref(rows);
}

static mcim_cause_t get_av(struct mcim_role *r, const struct mcim_access_net *net,
                           const char *txn, const char *identity, struct mcim_aka_av *av,
                           char *device, json_t *rows)
{
  if (net->get_av_rows)
    return net->get_av_rows(r, txn, identity, av, device, rows);
  return net->get_av(r, txn, identity, av, device);
}

/* Metrics (docs/operations.md): an attach is an initial registration at this network
 * (TS 28.552 RM.RegInit*), its challenge an authentication request (AMF.Auth*). */
static void count_refusal(mcim_cause_t rc)
{
  mcim_metric_inc(&mcim_m_rm_reg_init_fail, MCIM_LABELS(mcim_cause_name(rc)));
  /* the device's proof refused: RES, or the MAC-S of its AUTS */
  if (rc == MCIM_RES_MISMATCH || rc == MCIM_AUTS_INVALID)
    mcim_metric_inc(&mcim_m_amf_auth_reject, NULL);
}

static void seal_ctx(char *out, size_t len, const char *id)
{
  snprintf(out, len, "attach/xres/%s", id);
}

/* At most attach_open_max challenges of one identity within attach_lifetime that did not end
 * in an attach: open, answered wrong or with an AUTS (DESIGN.md section 10: nothing a party
 * can flood is unbounded). Anyone may send an attach naming an identity heard on the air,
 * and each costs an AV (a durable SQN step at the AuC or the ICF) and the rows that trace
 * it; a device answers its challenge within seconds, and one that lost an answer, restarted
 * or resynchronised opens a few. Counted were the open ones only, so a stranger who answered
 * each with a wrong RES (or a forged AUTS) asked for AVs without end (review of 2026-12-07).
 * Counted twice: before the AV is asked for (a flood is refused there, at the price of a
 * read), and again in the transaction that writes the session (session_put), where the
 * writers' lock of the role's database makes the count exact across threads and instances.
 * Over the limit: MCIM_ATTACH_BUSY, *wait the seconds until the oldest lapses. */
static mcim_cause_t open_challenges_below_max(struct mcim_role *r, mcim_store_t *st,
                                              const char *identity, int64_t *wait)
{
  int64_t lifetime = mcim_config_duration(r->cfg, "attach_lifetime");
  mcim_val_t p[] = {MCIM_TEXT(identity), MCIM_INT(mcim_now() - lifetime)};
  /* the oldest lapses once older than attach_lifetime: a second after created + lifetime */
  return mcim_role_count_below(st,
                               "SELECT COUNT(*), MIN(created) FROM attach WHERE identity = ?"
                               " AND state IN ('challenged', 'failed', 'resync')"
                               " AND created >= ?",
                               p, 2, mcim_config_int(r->cfg, "attach_open_max"), lifetime + 1,
                               MCIM_ATTACH_BUSY, wait);
}

/* A new session: the AV's XRES sealed, RAND kept to resynchronise with; `rows` (may be NULL):
 * its trace rows until the device answers. Written relaxed (no fsync of its own; the next
 * durable commit carries it): a session a crash loses costs the device one attach again (its
 * answer finds no open session, WRONG_STATE, and the agent asks for a fresh challenge:
 * src/device/attach.c), while the AV's SQN step, the one thing that must never be lost, was
 * committed durably by the AuC (or the ICF) before. One fsync less an attach, at the SHO and
 * at the VNO (docs/performance.md). With `wait`, only below attach_open_max (counted in the
 * same transaction: exact across threads and instances; on PostgreSQL the transaction is
 * four round trips under the writers' lock where the insert alone was one), else
 * MCIM_ATTACH_BUSY and *wait; NULL after a resynchronisation, whose AUTS proved the device. */
static mcim_cause_t session_put(struct mcim_role *r, mcim_store_t *st, const char *id,
                                const char *txn, const char *identity, const char *device,
                                const struct mcim_aka_av *av, const char *rows, int64_t *wait)
{
  uint8_t sealed[sizeof(av->xres) + MCIM_SEAL_OVERHEAD];
  size_t slen = 0;
  char ctx[64];
  seal_ctx(ctx, sizeof(ctx), id);
  mcim_cause_t rc =
      mcim_seal(r->storage_key, ctx, av->xres, sizeof(av->xres), sealed, sizeof(sealed), &slen);
  if (rc != MCIM_OK)
    return rc;
  mcim_val_t p[] = {MCIM_TEXT(id),       MCIM_TEXT(txn),
                    MCIM_TEXT(identity), MCIM_TEXT(device),
                    MCIM_BLOB(av->rand, sizeof(av->rand)), MCIM_BLOB(sealed, slen),
                    MCIM_INT(mcim_now()), MCIM_TEXT(rows)};
  rc = mcim_store_begin_relaxed(st);
  if (rc != MCIM_OK)
    return rc;
  if (wait)
    rc = open_challenges_below_max(r, st, identity, wait);
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "INSERT INTO attach (id, txn, identity, device, rand, xres, state,"
                         " created, trace) VALUES (?, ?, ?, ?, ?, ?, 'challenged', ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
  if (rc == MCIM_OK)
    return mcim_store_commit(st);
  mcim_store_rollback(st);
  return rc;
}

/* Over attach_open_max: logged, never traced, 503 with Retry-After until the oldest lapses. */
static void refuse_busy(const struct mcim_access_net *net, struct mcim_http_response *resp,
                        const char *txn, int64_t wait)
{
  mcim_log_event(MCIM_LOG_WARN, txn, net->step_attach, MCIM_ATTACH_BUSY,
                 "attach refused: attach_open_max challenges of this %s open", net->id_field);
  count_refusal(MCIM_ATTACH_BUSY);
  resp->retry_after = (int)wait;
  mcim_http_reply_problem(resp, MCIM_ATTACH_BUSY, net->step_attach,
                          "too many unanswered challenges of this %s: retry in %lld s",
                          net->id_field, (long long)wait);
}

mcim_cause_t mcim_access_attach_body(const char *id_field, const json_t *body, char *err,
                                     size_t err_len)
{
  const struct mcim_jsonv_field fields[] = {
      {id_field, MCIM_JV_STRING, true, 15}, /* IMSI-shaped: at most 15 digits */
      {"txn", MCIM_JV_HEX, false, 32},
      {"device", MCIM_JV_STRING, false, 63},
  };
  return mcim_jsonv_check(body, fields, 3, err, err_len);
}

void mcim_access_attach(struct mcim_role *r, const struct mcim_access_net *net,
                        const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  char err[200], device[64] = "", id[33];
  uint8_t idb[16];
  struct mcim_aka_av av;
  json_t *rows = NULL;
  mcim_metric_inc(&mcim_m_rm_reg_init_req, NULL);
  mcim_cause_t rc = mcim_access_attach_body(net->id_field, req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_attach, "%s", err);
    return;
  }
  const char *identity = json_string_value(json_object_get(req->json, net->id_field));
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  int64_t wait = 0;
  mcim_store_t *st = mcim_role_store(r);
  rc = st ? open_challenges_below_max(r, st, identity, &wait) : MCIM_STORE_ERROR;
  if (rc == MCIM_ATTACH_BUSY) {
    /* no AV asked for: the flood stops here */
    refuse_busy(net, resp, txn, wait);
    return;
  }
  /* the AV source's rows (the VNO's call to the ICF) wait with the session for the answer */
  rows = json_array();
  if (rc == MCIM_OK)
    rc = rows ? get_av(r, net, txn, identity, &av, device, rows) : MCIM_NO_MEMORY;
  if (rc == MCIM_UNKNOWN_IDENTITY) {
    /* a stranger (an identity this network does not know): logged, never traced, so that a
     * flood of made-up identities and txns leaves the store as it was */
    mcim_log_event(MCIM_LOG_WARN, txn, net->step_attach, rc, "attach refused: unknown %s",
                   net->id_field);
  } else if (rc != MCIM_OK) {
    /* a refusal of an identity this network knows: traced as before, the AV source's rows
     * first (no session will keep them) */
    trace_rows(r, txn, rows);
    /* counted under the identity, not the body's `device`, which anyone names as they like */
    mcim_role_trace_refusal(r, identity, txn, net->step_attach, r->name,
                            json_string_value(json_object_get(req->json, "device"))
                                ? json_string_value(json_object_get(req->json, "device"))
                                : identity,
                            "attach refused", rc);
  }
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_attach, "no authentication vector for %s",
                            identity);
    /* not active yet (the install report or the old SHO's release still to come): a device
     * that asks to wait is answered when the SHO activates it (mcim_sho_activate's callers) */
    if (rc == MCIM_SUBSCRIPTION_NOT_ACTIVE)
      mcim_http_reply_wait_on(resp, "auc-active:%s", identity);
    json_decref(rows);
    return;
  }
  if (mcim_random(idb, sizeof(idb)) != MCIM_OK) {
    rc = MCIM_INTERNAL;
    goto out;
  }
  mcim_hex_encode(idb, sizeof(idb), id);
  char rand_hex[33], autn_hex[33];
  mcim_hex_encode(av.rand, sizeof(av.rand), rand_hex);
  mcim_hex_encode(av.autn, sizeof(av.autn), autn_hex);
  json_t *body = json_pack("{s:s,s:s,s:s}", "attach_id", id, "rand", rand_hex, "autn", autn_hex);
  /* The challenge is traced with the attach's other rows when it is answered (DESIGN.md
   * section 10: anyone may attach naming an identity heard on the air; whoever cannot answer
   * leaves no trace row). Without a txn nothing is traced: nothing to keep. */
  char *rows_text = NULL;
  if (body && txn) {
    mcim_access_trace_at(r, rows, mcim_now_us(), txn, net->step_auth, r->name, device,
                         "authentication request (RAND, AUTN)", body, MCIM_OK);
    rows_text = mcim_json_dumps(rows);
  }
  rc = !body || (txn && !rows_text)
           ? MCIM_NO_MEMORY
           : session_put(r, st, id, txn, identity, device, &av, rows_text, &wait);
  free(rows_text);
  if (rc == MCIM_ATTACH_BUSY) {
    /* others' attaches of this identity took the last places while the AV was made: the
     * AV is spent (its SQN step stays), the bound holds */
    json_decref(body);
    mcim_wipe(&av, sizeof(av));
    json_decref(rows);
    refuse_busy(net, resp, txn, wait);
    return;
  }
  if (rc != MCIM_OK) {
    json_decref(body);
    goto out;
  }
  mcim_metric_inc(&mcim_m_amf_auth_req, NULL);
  mcim_http_reply_json(resp, 200, body);
out:
  mcim_wipe(&av, sizeof(av));
  json_decref(rows);
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_attach, "cannot open an attach session");
  }
}

struct session {
  const mcim_storage_key_t *skey;
  const char *id;
  char txn[40];
  char identity[24];
  char device[64];
  uint8_t rand[16];
  uint8_t xres[8];
  char state[16];
  int64_t created;
  char *rows; /* the attach's trace rows to come (NULL: none): free() */
  mcim_cause_t rc;
};

static mcim_cause_t session_row(const mcim_row_t *row, void *arg)
{
  struct session *s = arg;
  size_t len = 0, got = 0;
  char ctx[64];
  snprintf(s->txn, sizeof(s->txn), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(s->identity, sizeof(s->identity), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  snprintf(s->device, sizeof(s->device), "%s", mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  const uint8_t *rand = mcim_row_blob(row, 3, &len);
  if (!rand || len != sizeof(s->rand))
    return MCIM_STORE_ERROR;
  memcpy(s->rand, rand, len);
  const uint8_t *xres = mcim_row_blob(row, 4, &len);
  seal_ctx(ctx, sizeof(ctx), s->id);
  if (!xres || mcim_unseal(s->skey, ctx, xres, len, s->xres, sizeof(s->xres), &got) != MCIM_OK ||
      got != sizeof(s->xres))
    return MCIM_UNSEAL_FAILED;
  snprintf(s->state, sizeof(s->state), "%s", mcim_row_text(row, 5) ? mcim_row_text(row, 5) : "");
  s->created = mcim_row_int(row, 6);
  free(s->rows);
  s->rows = mcim_row_text(row, 7) ? strdup(mcim_row_text(row, 7)) : NULL;
  return mcim_row_text(row, 7) && !s->rows ? MCIM_NO_MEMORY : MCIM_OK;
}

static mcim_cause_t session_close(mcim_store_t *st, const char *id, const char *state)
{
  /* Only a session still open can be closed: a second answer to one challenge loses. */
  mcim_val_t p[] = {MCIM_TEXT(state), MCIM_TEXT(id)};
  mcim_cause_t rc = mcim_store_exec(
      st, "UPDATE attach SET state = ? WHERE id = ? AND state = 'challenged'", p, 2, NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_WRONG_STATE;
  return rc;
}

/* iat_us: the issue time to the microsecond, on the clock the SHO stamps its DRF
 * registrations with (their seq, mcim_sho_decision_us): the RO tells a token of an ended
 * subscription from one of the next subscription of the same device at the same SHO, even
 * within one second, whichever instances decided them. Taken before the session closes, in
 * the answer's transaction, with the network's other checks at issue (net->token_issue): a
 * refusal leaves the challenge open. iat stays this instance's second (the decision clock is
 * never behind it; the RO takes iat_us up to clock_skew ahead of iat: peers.c). */
static mcim_cause_t token_time(struct mcim_role *r, const struct mcim_access_net *net,
                               const struct session *s, int64_t *now_us, int64_t *now)
{
  *now_us = mcim_now_us();
  *now = *now_us / 1000000;
  return net->token_issue ? net->token_issue(r, s->identity, s->device, now_us) : MCIM_OK;
}

static mcim_cause_t issue_token(struct mcim_role *r, const struct mcim_access_net *net,
                                const struct session *s, int64_t now_us, int64_t now,
                                char **token)
{
  json_t *extra = json_pack("{s:s,s:s,s:I}", "scope", net->scope, "imsi", s->identity, "iat_us",
                            (json_int_t)now_us);
  /* aud = the issuer: a token is honoured only by the network that issued it (and by the
   * RO and the PVA, which it reaches): mcim_role_check_access. */
  mcim_claims_t c = {.iss = r->name, .sub = s->device, .aud = r->name, .typ = "mcim-access+jwt",
                     .txn = s->txn[0] ? s->txn : "00000000000000000000000000000000",
                     .iat = now, .exp = now + mcim_role_token_lifetime(r), .extra = extra};
  mcim_cause_t rc = mcim_jws_sign(r->sign_key, &c, token);
  json_decref(extra);
  return rc;
}

mcim_cause_t mcim_access_answer_body(const json_t *body, char *err, size_t err_len)
{
  static const struct mcim_jsonv_field fields[] = {
      {"res", MCIM_JV_HEX, false, 16},
      {"auts", MCIM_JV_HEX, false, 28},
      {"txn", MCIM_JV_HEX, false, 32},
  };
  mcim_cause_t rc = mcim_jsonv_check(body, fields, 3, err, err_len);
  if (rc == MCIM_OK &&
      !json_string_value(json_object_get(body, "res")) ==
          !json_string_value(json_object_get(body, "auts"))) {
    rc = MCIM_FIELD_MISSING;
    snprintf(err, err_len, "send exactly one of \"res\" and \"auts\"");
  }
  return rc;
}

void mcim_access_answer(struct mcim_role *r, const struct mcim_access_net *net,
                        const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  char err[200];
  struct session s = {.skey = r->storage_key, .id = req->params[0]};
  mcim_store_t *st = mcim_role_store(r);
  char *token = NULL;
  mcim_cause_t rc = mcim_access_answer_body(req->json, err, sizeof(err));
  const char *res_hex = json_string_value(json_object_get(req->json, "res"));
  const char *auts_hex = json_string_value(json_object_get(req->json, "auts"));
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_auth, "%s", err);
    return;
  }
  if (!st) {
    count_refusal(MCIM_STORE_ERROR);
    mcim_http_reply_problem(resp, MCIM_STORE_ERROR, net->step_auth, "store unavailable");
    return;
  }
  mcim_val_t p[] = {MCIM_TEXT(s.id)};
  rc = mcim_store_query_one(st,
                            "SELECT txn, identity, device, rand, xres, state, created, trace"
                            " FROM attach WHERE id = ?",
                            p, 1, session_row, &s);
  int64_t lifetime = mcim_config_duration(r->cfg, "attach_lifetime");
  if (rc == MCIM_NOT_FOUND || (rc == MCIM_OK && (strcmp(s.state, "challenged") != 0 ||
                                                 mcim_now() - s.created > lifetime))) {
    count_refusal(MCIM_WRONG_STATE);
    mcim_http_reply_problem(resp, MCIM_WRONG_STATE, net->step_auth,
                            "no open attach session %s (unknown, answered or expired)", s.id);
    goto out;
  }
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_auth, "attach session unreadable");
    goto out;
  }
  const char *txn = s.txn[0] ? s.txn : NULL;
  if (auts_hex) {
    uint8_t auts[14];
    struct mcim_aka_av av;
    char device[64] = "";
    int64_t auts_us = mcim_now_us();
    json_t *rows = json_array();
    mcim_hex_decode_str(auts_hex, auts, sizeof(auts));
    mcim_metric_inc(&mcim_m_amf_auth_fail, MCIM_LABELS(mcim_cause_name(MCIM_SYNC_FAILURE)));
    rc = session_close(st, s.id, "resync");
    if (rc == MCIM_OK && !rows)
      rc = MCIM_NO_MEMORY;
    if (rc == MCIM_OK)
      rc = net->resync_rows ? net->resync_rows(r, txn, s.identity, s.rand, auts, rows)
                            : net->resync(r, txn, s.identity, s.rand, auts);
    /* An AUTS whose MAC-S is not the USIM's (AUTS_INVALID) is what anyone who cannot answer
     * sends: logged, never traced, and the attach's rows go with its session. Any other
     * outcome is traced as before, the attach's rows first, at the times they happened. */
    if (rc == MCIM_AUTS_INVALID) {
      mcim_log_event(MCIM_LOG_WARN, txn, net->step_auth, rc,
                     "%s -> %s: synchronisation failure (AUTS) refused, not traced", s.device,
                     r->name);
    } else if (rc != MCIM_WRONG_STATE) {
      trace_rows_text(r, txn, s.rows);
      mcim_role_trace_at(r, auts_us, txn, net->step_auth, s.device, r->name,
                         "synchronisation failure (AUTS)", req->json, MCIM_SYNC_FAILURE);
      trace_rows(r, txn, rows);
    }
    json_decref(rows);
    /* the device proved itself: the new challenge's rows are traced at once */
    if (rc == MCIM_OK)
      rc = get_av(r, net, txn, s.identity, &av, device, NULL);
    if (rc != MCIM_OK) {
      count_refusal(rc);
      mcim_http_reply_problem(resp, rc, net->step_auth, "resynchronisation failed");
      goto out;
    }
    uint8_t idb[16];
    char id[33], rand_hex[33], autn_hex[33];
    rc = mcim_random(idb, sizeof(idb));
    mcim_hex_encode(idb, sizeof(idb), id);
    if (rc == MCIM_OK)
      rc = session_put(r, st, id, txn, s.identity, device, &av, NULL, NULL);
    if (rc != MCIM_OK) {
      mcim_wipe(&av, sizeof(av));
      count_refusal(rc);
      mcim_http_reply_problem(resp, rc, net->step_auth, "cannot open an attach session");
      goto out;
    }
    mcim_hex_encode(av.rand, sizeof(av.rand), rand_hex);
    mcim_hex_encode(av.autn, sizeof(av.autn), autn_hex);
    mcim_wipe(&av, sizeof(av));
    json_t *body = json_pack("{s:s,s:s,s:s}", "attach_id", id, "rand", rand_hex, "autn", autn_hex);
    mcim_role_trace(r, txn, net->step_auth, r->name, device,
                    "authentication request after resynchronisation", body, MCIM_OK);
    mcim_metric_inc(&mcim_m_amf_auth_req, NULL);
    mcim_http_reply_json(resp, 200, body);
    goto out;
  }

  uint8_t res[8];
  mcim_cause_t dec = mcim_hex_decode_str(res_hex, res, sizeof(res));
  rc = dec == MCIM_OK ? mcim_aka_check_res(s.xres, sizeof(s.xres), res, sizeof(res)) : dec;
  mcim_wipe(res, sizeof(res));
  /* The answer, the session's end and the accept's trace rows in one transaction: the rows
   * cost no commit of their own. Without a transaction (store busy) each is its own, as
   * before. */
  int64_t res_us = mcim_now_us();
  bool in_txn = mcim_store_begin(st) == MCIM_OK;
  if (rc != MCIM_OK) {
    /* A wrong RES is what anyone who cannot answer sends (the attach_id is the attacher's,
     * whoever that is): logged, never traced, and the attach's rows go with its session. */
    mcim_log_event(MCIM_LOG_WARN, txn, net->step_auth, rc,
                   "%s -> %s: authentication response (RES) refused, not traced", s.device,
                   r->name);
    session_close(st, s.id, "failed");
    if (in_txn)
      mcim_store_commit(st);
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_auth, "authentication of %s failed", s.identity);
    goto out;
  }
  int64_t now_us = 0, now = 0;
  /* what the network decides at issue is read with the session's close, in one transaction:
   * without it (the store busy) a release could come between (review of 2026-12-07). The
   * device then attaches again (its agent never answers a challenge twice): one AV more,
   * and this challenge counts against attach_open_max until it lapses. */
  rc = net->token_issue && !in_txn ? MCIM_STORE_BUSY
                                   : token_time(r, net, &s, &now_us, &now);
  if (rc == MCIM_OK)
    rc = session_close(st, s.id, "attached");
  /* The device proved it holds the identity: the attach's rows, at the times they happened,
   * then the answer's (only by the answer that closed the session: one copy of each). */
  if (rc == MCIM_OK) {
    trace_rows_text(r, txn, s.rows);
    mcim_role_trace_at(r, res_us, txn, net->step_auth, s.device, r->name,
                       "authentication response (RES)", NULL, MCIM_OK);
  }
  if (rc == MCIM_OK)
    rc = issue_token(r, net, &s, now_us, now, &token);
  if (rc == MCIM_OK)
    mcim_role_trace(r, txn, net->step_connect, r->name, s.device,
                    strcmp(net->scope, "full") == 0
                        ? "attach accept: full connectivity"
                        : "attach accept: restricted connectivity (RO, PVA)",
                    NULL, MCIM_OK);
  /* the session closed (a second answer to this challenge loses) before the token goes out */
  if (in_txn)
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_commit(st), rc);
  if (rc != MCIM_OK) {
    count_refusal(rc);
    mcim_http_reply_problem(resp, rc, net->step_connect, "attach could not complete");
    goto out;
  }
  json_t *body = json_pack("{s:s,s:s,s:s}", "network", r->name, "scope", net->scope, "token", token);
  if (net->accept_extra)
    net->accept_extra(r, s.identity, body);
  mcim_metric_inc(&mcim_m_rm_reg_init_succ, NULL);
  mcim_http_reply_json(resp, 200, body);
out:
  free(token);
  free(s.rows);
  mcim_wipe(s.xres, sizeof(s.xres));
}

void mcim_access_purge(struct mcim_role *r)
{
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return;
  mcim_val_t p[] = {MCIM_INT(mcim_now() - mcim_config_duration(r->cfg, "attach_lifetime"))};
  mcim_cause_t rc = mcim_store_exec(st, "DELETE FROM attach WHERE created < ?", p, 1, NULL, NULL);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "stale attach sessions not purged");
}
