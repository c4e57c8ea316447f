/* M2MES, CCIF: PCID credential renewal from the equipment supplier (docs/protocol.md "PCID
 * credential lifetime and renewal", docs/pcid-renewal.md): POST /v1/ccif/pcid, the same body
 * and answer as the RO's POST /v1/dpf/pcid (src/roles/pcid.h), the new PCID from the M2MES's
 * own pool (pcid_prefix, the counter manufacture uses) and registered at the RO's ICF as at
 * manufacture, with `replaces` = the device's current PCID (the ICF checks it is the
 * device's and still active, and supersedes the older ones), before the answer.
 *
 * Convergence: the M2MES cannot register at the ICF and record its answer in one
 * transaction, so, as manufacture does, it writes a row first (txn, device, PCID, K and OPc
 * sealed with the storage key, state `new`); a failed call to the ICF is retried under the
 * same txn (with a new request statement: a verified one's jti is spent) and converges on
 * the same PCID and K (the ICF takes the same registration again). Once answered the row is `issued`, K and OPc are deleted, and the answer (the
 * sealed package, nothing in clear) is kept for retries of the same txn. */
#include "roles/m2mes/ccif.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/seal.h"
#include "mcim/util.h"
#include "roles/pcid.h"

#define ICF_ATTEMPTS 4 /* PCIDs tried when the ICF says one is held by another device */

const char mcim_ccif_schema_sql[] =
    "CREATE TABLE ccif_renewals (txn TEXT NOT NULL, device TEXT NOT NULL,"
    " pcid TEXT NOT NULL UNIQUE, k BYTEA, opc BYTEA, expires BIGINT NOT NULL,"
    " state TEXT NOT NULL, created BIGINT NOT NULL, updated BIGINT NOT NULL,"
    " PRIMARY KEY (txn, device))";

struct crow {
  char pcid[MCIM_PCID_DIGITS + 1];
  char state[16];
  int64_t expires;
  uint8_t k[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD];
  size_t k_len;
  uint8_t opc[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  size_t opc_len;
};

static void blob_col(uint8_t *dst, size_t cap, size_t *len, const mcim_row_t *row, size_t col)
{
  size_t n = 0;
  const uint8_t *b = mcim_row_blob(row, col, &n);
  *len = b && n <= cap ? n : 0;
  if (*len)
    memcpy(dst, b, n);
}

static mcim_cause_t crow_cb(const mcim_row_t *row, void *arg)
{
  struct crow *c = arg;
  snprintf(c->pcid, sizeof(c->pcid), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(c->state, sizeof(c->state), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  c->expires = mcim_row_int(row, 2);
  blob_col(c->k, sizeof(c->k), &c->k_len, row, 3);
  blob_col(c->opc, sizeof(c->opc), &c->opc_len, row, 4);
  return MCIM_OK;
}

static mcim_cause_t crow_load(mcim_store_t *st, const char *txn, const char *device,
                              struct crow *c)
{
  memset(c, 0, sizeof(*c));
  mcim_val_t p[] = {MCIM_TEXT(txn), MCIM_TEXT(device)};
  return mcim_store_query_one(st,
                              "SELECT pcid, state, expires, k, opc FROM ccif_renewals"
                              " WHERE txn = ? AND device = ?",
                              p, 2, crow_cb, c);
}

static void seal_context(char *out, size_t len, const char *what, const char *txn,
                         const char *device)
{
  /* bound to the row: a sealed K copied to another renewal does not open */
  snprintf(out, len, "m2mes/ccif/%s/%s/%s", what, txn, device);
}

/* A new row: PCID from the pool, fresh K and OPc sealed, the device's renewal granted (the
 * limit, MCIM_RENEWAL_TOO_EARLY and *wait). Own transaction. */
static mcim_cause_t crow_create(struct mcim_role *r, mcim_store_t *st,
                                const struct mcim_pcid_request *rq, int *wait)
{
  struct mcim_pcid_cred c;
  uint8_t ks[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD], os[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  size_t klen = 0, olen = 0;
  char ctx[160];
  int64_t now = mcim_now();

  memset(&c, 0, sizeof(c));
  mcim_cause_t rc = mcim_pcid_cred_secrets(r, &c);
  seal_context(ctx, sizeof(ctx), "k", rq->txn, rq->device);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, ctx, c.k, sizeof(c.k), ks, sizeof(ks), &klen);
  seal_context(ctx, sizeof(ctx), "opc", rq->txn, rq->device);
  if (rc == MCIM_OK)
    rc = mcim_seal(r->storage_key, ctx, c.opc, sizeof(c.opc), os, sizeof(os), &olen);
  if (rc == MCIM_OK)
    rc = mcim_store_begin(st);
  if (rc == MCIM_OK) {
    /* the limit again, in this transaction: another txn may have been granted meanwhile */
    rc = mcim_pcid_grant_take(r, st, rq->device, rq->txn, false, wait);
    if (rc == MCIM_OK)
      rc = mcim_pcid_allocate(r, st, c.pcid);
    mcim_val_t p[] = {MCIM_TEXT(rq->txn),  MCIM_TEXT(rq->device), MCIM_TEXT(c.pcid),
                      MCIM_BLOB(ks, klen), MCIM_BLOB(os, olen),   MCIM_INT(c.expires),
                      MCIM_INT(now),       MCIM_INT(now)};
    if (rc == MCIM_OK)
      rc = mcim_store_exec(st,
                           "INSERT INTO ccif_renewals (txn, device, pcid, k, opc, expires, state,"
                           " created, updated) VALUES (?, ?, ?, ?, ?, ?, 'new', ?, ?)",
                           p, MCIM_NPARAMS(p), NULL, NULL);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  }
  mcim_pcid_cred_wipe(&c);
  return rc;
}

static mcim_cause_t crow_unseal(struct mcim_role *r, const struct mcim_pcid_request *rq,
                                const struct crow *row, struct mcim_pcid_cred *c)
{
  char ctx[160];
  size_t n = 0;
  snprintf(c->pcid, sizeof(c->pcid), "%s", row->pcid);
  c->amf[0] = 0x80;
  c->amf[1] = 0x00;
  c->expires = row->expires;
  seal_context(ctx, sizeof(ctx), "k", rq->txn, rq->device);
  mcim_cause_t rc = mcim_unseal(r->storage_key, ctx, row->k, row->k_len, c->k, sizeof(c->k), &n);
  if (rc == MCIM_OK && n != sizeof(c->k))
    rc = MCIM_UNSEAL_FAILED;
  seal_context(ctx, sizeof(ctx), "opc", rq->txn, rq->device);
  if (rc == MCIM_OK)
    rc = mcim_unseal(r->storage_key, ctx, row->opc, row->opc_len, c->opc, sizeof(c->opc), &n);
  if (rc == MCIM_OK && n != sizeof(c->opc))
    rc = MCIM_UNSEAL_FAILED;
  return rc;
}

static void wipe_string(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);
  if (json_is_string(v))
    mcim_wipe((char *)json_string_value(v), json_string_length(v));
}

/* The new PCID to the ICF (as at manufacture, plus `replaces`). On failure a problem for the
 * device is in `resp`; MCIM_CONFLICT (held by another device) leaves it to the caller. */
static mcim_cause_t icf_register(struct mcim_role *r, const struct mcim_pcid_request *rq,
                                 const struct mcim_pcid_cred *c, struct mcim_http_response *resp)
{
  char khex[2 * MCIM_MILENAGE_K_LEN + 1], ohex[2 * MCIM_MILENAGE_OP_LEN + 1];
  struct mcim_http_client *cli = mcim_role_client(r);
  const char *base = mcim_role_peer_url(r, "ro");
  struct mcim_http_result res;
  char url[600];
  mcim_cause_t rc;

  memset(&res, 0, sizeof(res));
  if (!base || !cli) {
    mcim_http_reply_problem(resp, MCIM_PEER_UNREACHABLE, MCIM_PCID_STEP,
                            "the RO (ICF) is not reachable from this M2MES; retry later");
    return MCIM_PEER_UNREACHABLE;
  }
  mcim_hex_encode(c->k, sizeof(c->k), khex);
  mcim_hex_encode(c->opc, sizeof(c->opc), ohex);
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s}", "txn", rq->txn, "pcid", c->pcid,
                           "device", rq->device, "k", khex, "opc", ohex, "amf", "8000",
                           "expires", (json_int_t)c->expires, "replaces", rq->pcid);
  mcim_wipe(khex, sizeof(khex));
  mcim_wipe(ohex, sizeof(ohex));
  if (!body) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, MCIM_PCID_STEP, "out of memory");
    return MCIM_NO_MEMORY;
  }
  snprintf(url, sizeof(url), "%s/v1/icf/pcids", base);
  rc = mcim_http_request(cli, "POST", url, body, NULL, &res);
  wipe_string(body, "k");
  wipe_string(body, "opc");
  json_decref(body);
  if (rc == MCIM_OK) {
    mcim_role_trace(r, rq->txn, MCIM_PCID_STEP, r->name, "ro", "CCIF: renewed PCID to the ICF",
                    NULL, MCIM_OK);
  } else if (rc == MCIM_CLAIM_MISMATCH) {
    /* the device's claim: it may learn what the ICF says about its own PCID */
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "ICF: %s", res.detail);
  } else if (rc == MCIM_CONFLICT && res.status == 409) {
    mcim_log_event(MCIM_LOG_WARN, rq->txn, MCIM_PCID_STEP, rc, "ICF: %s", res.detail);
  } else if (rc == MCIM_PEER_UNREACHABLE || rc == MCIM_TIMEOUT ||
             rc == MCIM_PEER_NOT_AUTHENTICATED) {
    mcim_http_reply_problem(resp, MCIM_PEER_UNREACHABLE, MCIM_PCID_STEP,
                            "the RO (ICF) cannot be reached; retry later under the same txn");
    rc = MCIM_PEER_UNREACHABLE;
  } else {
    mcim_http_reply_problem(resp, MCIM_PEER_ERROR, MCIM_PCID_STEP,
                            "the RO (ICF) refused the new PCID: %s", mcim_cause_name(rc));
    rc = MCIM_PEER_ERROR;
  }
  if (rc != MCIM_OK && rc != MCIM_CONFLICT)
    mcim_role_trace(r, rq->txn, MCIM_PCID_STEP, r->name, "ro", "CCIF: renewed PCID to the ICF",
                    NULL, rc);
  mcim_http_result_clear(&res);
  return rc;
}

/* The ICF holds this PCID for another device: move the row to the next one of the pool. Only
 * from the PCID this copy tried (`c->pcid`): another copy of the txn that moved it first
 * already registers the next one, and this copy stops rather than register a third, which
 * would supersede the first's (review of 2026-12-07): MCIM_STORE_BUSY, which the agent asks
 * again for, and then gets that copy's answer. */
static mcim_cause_t crow_next_pcid(struct mcim_role *r, mcim_store_t *st,
                                   const struct mcim_pcid_request *rq, struct mcim_pcid_cred *c)
{
  char pcid[MCIM_PCID_DIGITS + 1];
  mcim_cause_t rc = mcim_store_begin(st);
  if (rc == MCIM_OK)
    rc = mcim_pcid_allocate(r, st, pcid);
  mcim_val_t u[] = {MCIM_TEXT(pcid), MCIM_INT(mcim_now()), MCIM_TEXT(rq->txn),
                    MCIM_TEXT(rq->device), MCIM_TEXT(c->pcid)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(st,
                         "UPDATE ccif_renewals SET pcid = ?, updated = ? WHERE txn = ? AND"
                         " device = ? AND state = 'new' AND pcid = ?",
                         u, MCIM_NPARAMS(u), NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_STORE_BUSY;
  if (st && mcim_store_in_txn(st))
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  if (rc == MCIM_OK)
    snprintf(c->pcid, sizeof(c->pcid), "%s", pcid);
  return rc;
}

void mcim_ccif_pcid(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  struct mcim_pcid_request rq;
  struct mcim_pcid_cred cred;
  struct crow row;
  json_t *answer = NULL;
  char what[80];
  int status = 0, wait = 0;
  mcim_store_t *st = mcim_role_store(r);

  memset(&cred, 0, sizeof(cred));
  memset(&row, 0, sizeof(row));
  /* no exemption for a renewal the network asked for: the ICF's flags are not seen here */
  if (!mcim_pcid_request_begin(r, req, resp, NULL, &rq))
    return;
  mcim_pcid_answer_what(rq.device, what);
  mcim_cause_t rc = st ? crow_load(st, rq.txn, rq.device, &row) : MCIM_STORE_ERROR;
  if (rc == MCIM_NOT_FOUND) {
    rc = crow_create(r, st, &rq, &wait);
    if (rc == MCIM_OK || rc == MCIM_CONFLICT) /* CONFLICT: the same txn raced in */
      rc = crow_load(st, rq.txn, rq.device, &row);
  }
  if (rc == MCIM_RENEWAL_TOO_EARLY) { /* another txn was granted since the check */
    mcim_log_event(MCIM_LOG_WARN, rq.txn, MCIM_PCID_STEP, rc,
                   "CCIF: PCID renewal of %s refused: within pcid_renewal_interval", rq.device);
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP,
                            "%s renewed its PCID credential less than pcid_renewal_interval"
                            " ago (another txn); renew in %d s",
                            rq.device, wait);
    resp->retry_after = wait;
    goto out;
  }
  if (rc == MCIM_OK && strcmp(row.state, "refused") == 0) {
    mcim_http_reply_problem(resp, MCIM_CLAIM_MISMATCH, MCIM_PCID_STEP,
                            "the ICF refused this renewal of %s (txn %s): its PCID claim is not"
                            " the device's",
                            rq.device, rq.txn);
    goto out;
  }
  if (rc == MCIM_OK && strcmp(row.state, "new") != 0)
    rc = MCIM_WRONG_STATE; /* issued, yet no answer stored: cannot happen (one transaction) */
  if (rc == MCIM_OK)
    rc = crow_unseal(r, &rq, &row, &cred);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, rq.txn, MCIM_PCID_STEP, rc, "CCIF: renewal of %s: %s",
                   rq.device, st ? mcim_store_errmsg(st) : "no store");
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP, "no PCID could be prepared for %s",
                            rq.device);
    goto out;
  }
  for (int attempt = 1;; attempt++) {
    rc = icf_register(r, &rq, &cred, resp);
    if (rc != MCIM_CONFLICT)
      break;
    mcim_cause_t moved = attempt == ICF_ATTEMPTS ? MCIM_CONFLICT
                                                 : crow_next_pcid(r, st, &rq, &cred);
    if (moved == MCIM_STORE_BUSY) {
      resp->retry_after = 1;
      mcim_http_reply_problem(resp, moved, MCIM_PCID_STEP,
                              "another copy of renewal %s is registering its PCID: ask again",
                              rq.txn);
      goto out;
    }
    if (moved != MCIM_OK) {
      mcim_http_reply_problem(resp, MCIM_CONFLICT, MCIM_PCID_STEP,
                              "the ICF holds PCIDs of pool %s for other devices",
                              mcim_config_str(r->cfg, "pcid_prefix"));
      goto out;
    }
  }
  if (rc == MCIM_CLAIM_MISMATCH) {
    /* Final: the ICF will not take this renewal. The row stays, refused, its sealed secrets
     * forgotten, and answers a retry of this txn: deleted, each retry (a new jti, the same
     * txn: the grant is that txn's) took another PCID of the pool and called the ICF again,
     * without end (review of 2026-12-07). Purged record_retention later. */
    mcim_val_t d[] = {MCIM_INT(mcim_now()), MCIM_TEXT(rq.txn), MCIM_TEXT(rq.device)};
    mcim_store_exec(st,
                    "UPDATE ccif_renewals SET state = 'refused', k = NULL, opc = NULL,"
                    " updated = ? WHERE txn = ? AND device = ? AND state = 'new'",
                    d, MCIM_NPARAMS(d), NULL, NULL);
  }
  if (rc != MCIM_OK)
    goto out; /* the problem is in resp */
  rc = mcim_pcid_answer(r, &rq, &cred, &answer);
  if (rc == MCIM_OK)
    rc = mcim_store_begin(st);
  if (rc == MCIM_OK) {
    mcim_val_t u[] = {MCIM_INT(mcim_now()), MCIM_TEXT(rq.txn), MCIM_TEXT(rq.device)};
    rc = mcim_role_answer_put(st, rq.txn, MCIM_PCID_STEP, what, 200, answer);
    if (rc == MCIM_OK)
      rc = mcim_store_exec(st,
                           "UPDATE ccif_renewals SET state = 'issued', k = NULL, opc = NULL,"
                           " updated = ? WHERE txn = ? AND device = ? AND state = 'new'",
                           u, MCIM_NPARAMS(u), NULL, NULL);
    rc = rc == MCIM_OK ? mcim_store_commit(st) : (mcim_store_rollback(st), rc);
  }
  if (rc == MCIM_CONFLICT) {
    /* a concurrent identical request answered first: its answer is the one */
    json_decref(answer);
    answer = NULL;
    rc = mcim_role_answer_get(st, rq.txn, MCIM_PCID_STEP, what, &status, &answer);
    if (rc == MCIM_OK) {
      mcim_http_reply_json(resp, status, answer);
      answer = NULL;
      goto out;
    }
  }
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, MCIM_PCID_STEP,
                            "renewal of %s not recorded; retry under the same txn", rq.device);
    goto out;
  }
  mcim_log_event(MCIM_LOG_INFO, rq.txn, MCIM_PCID_STEP, MCIM_OK,
                 "CCIF: PCID %s issued to %s (renews %s, expires %lld, via %s)", cred.pcid,
                 rq.device, rq.pcid, (long long)cred.expires, rq.network);
  mcim_role_trace(r, rq.txn, MCIM_PCID_STEP, r->name, rq.device,
                  "CCIF: new initial network access credential", answer, MCIM_OK);
  mcim_http_reply_json(resp, 200, answer);
  answer = NULL;
out:
  json_decref(answer);
  mcim_wipe(&row, sizeof(row));
  mcim_pcid_cred_wipe(&cred);
  mcim_pcid_request_clear(&rq);
}
