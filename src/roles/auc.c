#include "roles/auc.h"

#include <stdio.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

const char mcim_auc_schema_sql[] =
    "CREATE TABLE auc (imsi TEXT PRIMARY KEY, device TEXT, k BYTEA NOT NULL,"
    " opc BYTEA NOT NULL, amf BYTEA NOT NULL, sqn_he BYTEA NOT NULL,"
    " state TEXT NOT NULL, expires BIGINT NOT NULL, created BIGINT NOT NULL)";

/* Where a sealed secret lives: a blob copied to another IMSI or column does not open. */
static void seal_context(char *out, size_t len, const char *what, const char *imsi)
{
  snprintf(out, len, "auc/%s/%s", what, imsi);
}

mcim_cause_t mcim_auc_add(mcim_store_t *st, const mcim_storage_key_t *skey,
                          const struct mcim_auc_sub *sub)
{
  uint8_t k_sealed[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD];
  uint8_t opc_sealed[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  uint8_t he[MCIM_SQN_HE_ENCODED_LEN];
  size_t klen = 0, olen = 0;
  char ctx[96];
  struct mcim_sqn_params params;
  struct mcim_sqn_he he_state;
  mcim_cause_t rc;

  mcim_sqn_params_default(&params);
  rc = mcim_sqn_he_init(&params, &he_state);
  if (rc == MCIM_OK)
    rc = mcim_sqn_he_encode(&he_state, he);
  seal_context(ctx, sizeof(ctx), "k", sub->imsi);
  if (rc == MCIM_OK)
    rc = mcim_seal(skey, ctx, sub->k, sizeof(sub->k), k_sealed, sizeof(k_sealed), &klen);
  seal_context(ctx, sizeof(ctx), "opc", sub->imsi);
  if (rc == MCIM_OK)
    rc = mcim_seal(skey, ctx, sub->opc, sizeof(sub->opc), opc_sealed, sizeof(opc_sealed), &olen);
  if (rc != MCIM_OK)
    return rc;
  mcim_val_t p[] = {MCIM_TEXT(sub->imsi),        MCIM_TEXT(sub->device),
                    MCIM_BLOB(k_sealed, klen),   MCIM_BLOB(opc_sealed, olen),
                    MCIM_BLOB(sub->amf, 2),      MCIM_BLOB(he, sizeof(he)),
                    MCIM_TEXT(sub->state ? sub->state : "active"),
                    MCIM_INT(sub->expires),      MCIM_INT(mcim_now())};
  return mcim_store_exec(st,
                         "INSERT INTO auc (imsi, device, k, opc, amf, sqn_he, state, expires,"
                         " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         p, MCIM_NPARAMS(p), NULL, NULL);
}

/* One subscriber row, unsealed. Holds secrets: wiped by sub_row_wipe(). */
struct sub_row {
  const mcim_storage_key_t *skey;
  const char *imsi;
  uint8_t k[MCIM_MILENAGE_K_LEN];
  uint8_t opc[MCIM_MILENAGE_OP_LEN];
  uint8_t amf[MCIM_MILENAGE_AMF_LEN];
  struct mcim_sqn_he he;
  char state[16];
  int64_t expires;
};

static void sub_row_wipe(struct sub_row *s)
{
  mcim_wipe(s->k, sizeof(s->k));
  mcim_wipe(s->opc, sizeof(s->opc));
}

static mcim_cause_t unseal_col(const struct sub_row *s, const mcim_row_t *row, size_t col,
                               const char *what, uint8_t *out, size_t want)
{
  size_t len = 0, got = 0;
  char ctx[96];
  const uint8_t *blob = mcim_row_blob(row, col, &len);
  if (!blob)
    return MCIM_STORE_ERROR;
  seal_context(ctx, sizeof(ctx), what, s->imsi);
  mcim_cause_t rc = mcim_unseal(s->skey, ctx, blob, len, out, want, &got);
  if (rc == MCIM_OK && got != want)
    rc = MCIM_UNSEAL_FAILED;
  return rc;
}

static mcim_cause_t sub_row_cb(const mcim_row_t *row, void *arg)
{
  struct sub_row *s = arg;
  size_t len = 0;
  mcim_cause_t rc = unseal_col(s, row, 0, "k", s->k, sizeof(s->k));
  if (rc == MCIM_OK)
    rc = unseal_col(s, row, 1, "opc", s->opc, sizeof(s->opc));
  if (rc != MCIM_OK)
    return rc;
  const uint8_t *amf = mcim_row_blob(row, 2, &len);
  if (!amf || len != 2)
    return MCIM_STORE_ERROR;
  memcpy(s->amf, amf, 2);
  const uint8_t *he = mcim_row_blob(row, 3, &len);
  if (!he)
    return MCIM_STORE_ERROR;
  rc = mcim_sqn_he_decode(he, len, &s->he);
  if (rc != MCIM_OK)
    return rc;
  snprintf(s->state, sizeof(s->state), "%s", mcim_row_text(row, 4) ? mcim_row_text(row, 4) : "");
  s->expires = mcim_row_int(row, 5);
  return MCIM_OK;
}

static mcim_cause_t load_sub(mcim_store_t *st, struct sub_row *s)
{
  mcim_val_t p[] = {MCIM_TEXT(s->imsi)};
  return mcim_store_query_one(st,
                              "SELECT k, opc, amf, sqn_he, state, expires FROM auc WHERE imsi = ?",
                              p, 1, sub_row_cb, s);
}

static mcim_cause_t store_he(mcim_store_t *st, const char *imsi, const struct mcim_sqn_he *he)
{
  uint8_t enc[MCIM_SQN_HE_ENCODED_LEN];
  mcim_cause_t rc = mcim_sqn_he_encode(he, enc);
  if (rc != MCIM_OK)
    return rc;
  mcim_val_t p[] = {MCIM_BLOB(enc, sizeof(enc)), MCIM_TEXT(imsi)};
  return mcim_store_exec(st, "UPDATE auc SET sqn_he = ? WHERE imsi = ?", p, 2, NULL, NULL);
}

mcim_cause_t mcim_auc_keys(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                           struct mcim_auc_sub *sub, char state[16])
{
  struct sub_row s = {.skey = skey, .imsi = imsi};
  mcim_cause_t rc = load_sub(st, &s);
  if (rc == MCIM_OK) {
    memcpy(sub->k, s.k, sizeof(sub->k));
    memcpy(sub->opc, s.opc, sizeof(sub->opc));
    memcpy(sub->amf, s.amf, sizeof(sub->amf));
    sub->expires = s.expires;
    if (state)
      memcpy(state, s.state, sizeof(s.state));
  }
  sub_row_wipe(&s);
  return rc;
}

mcim_cause_t mcim_auc_no_vectors(const char *state, int64_t expires, int64_t now, bool resync)
{
  if (strcmp(state, "active") != 0)
    return !resync && (strcmp(state, "pending") == 0 || strcmp(state, "standby") == 0)
               ? MCIM_SUBSCRIPTION_NOT_ACTIVE
               : MCIM_SUBSCRIPTION_TERMINATED;
  if (!resync && expires && now >= expires)
    return MCIM_CREDENTIAL_EXPIRED;
  return MCIM_OK;
}

/* A stranger's identity, or a subscription with no vectors to give, refused from a plain read
 * before the write lock (BEGIN IMMEDIATE): anyone may attach at the VNO or an SHO naming any
 * identity, and such a request no longer queues behind the AuC's writers nor holds them up
 * (before 2026-12-07 each took the write lock to find nothing). The transaction reads the row
 * again: a change in between is decided there. A failed read leaves it to the transaction. */
static mcim_cause_t refused_before_lock(mcim_store_t *st, const char *imsi, int64_t now,
                                        bool resync)
{
  char state[16] = "";
  int64_t expires = 0;
  mcim_cause_t rc = mcim_auc_state(st, imsi, state, &expires);
  if (rc == MCIM_NOT_FOUND)
    return MCIM_UNKNOWN_IDENTITY;
  return rc == MCIM_OK ? mcim_auc_no_vectors(state, expires, now, resync) : MCIM_OK;
}

mcim_cause_t mcim_auc_gen_avs(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                              int n, int64_t now, struct mcim_aka_av *avs)
{
  struct sub_row s = {.skey = skey, .imsi = imsi};
  struct mcim_sqn_params params;
  struct mcim_sqn_he next;
  uint64_t sqns[5];
  mcim_milenage_t *m = NULL;
  mcim_cause_t rc;

  if (n < 1 || n > 5)
    return MCIM_INVALID_ARGUMENT;
  mcim_metric_inc(&mcim_m_auc_av_requests, NULL);
  mcim_sqn_params_default(&params);
  rc = refused_before_lock(st, imsi, now, false);
  if (rc == MCIM_OK)
    rc = mcim_store_begin(st);
  if (rc != MCIM_OK) {
    mcim_metric_inc(&mcim_m_auc_av_failures, MCIM_LABELS(mcim_cause_name(rc)));
    return rc;
  }
  rc = load_sub(st, &s);
  if (rc == MCIM_NOT_FOUND)
    rc = MCIM_UNKNOWN_IDENTITY;
  if (rc != MCIM_OK)
    goto out;
  rc = mcim_auc_no_vectors(s.state, s.expires, now, false);
  if (rc != MCIM_OK)
    goto out;
  /* Reserve all n SQNs and persist SEQ_HE before computing anything that leaves. */
  for (int i = 0; i < n; i++) {
    rc = mcim_sqn_he_next(&params, &s.he, &next, &sqns[i]);
    if (rc != MCIM_OK)
      goto out;
    s.he = next;
  }
  rc = store_he(st, imsi, &s.he);
  if (rc != MCIM_OK)
    goto out;
  rc = mcim_store_commit(st);
  if (rc != MCIM_OK)
    goto out_nocommit;
  rc = mcim_milenage_new(&m);
  if (rc == MCIM_OK)
    rc = mcim_milenage_set_opc(m, s.k, s.opc);
  for (int i = 0; rc == MCIM_OK && i < n; i++) {
    uint8_t sqn[MCIM_SQN_LEN];
    mcim_sqn_to_bytes(sqns[i], sqn);
    rc = mcim_aka_gen_av(m, NULL, sqn, s.amf, &avs[i]);
  }
  goto out_nocommit;
out:
  mcim_store_rollback(st);
out_nocommit:
  if (rc == MCIM_OK) {
    mcim_metric_add(&mcim_m_auc_av_generated, NULL, n);
    mcim_op_add(MCIM_OP_AKA_AV_GENERATE, (uint64_t)n);
  }
  else
    mcim_metric_inc(&mcim_m_auc_av_failures, MCIM_LABELS(mcim_cause_name(rc)));
  mcim_milenage_free(m);
  sub_row_wipe(&s);
  return rc;
}

mcim_cause_t mcim_auc_resync(mcim_store_t *st, const mcim_storage_key_t *skey, const char *imsi,
                             const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                             const uint8_t auts[MCIM_AKA_AUTS_LEN])
{
  struct sub_row s = {.skey = skey, .imsi = imsi};
  struct mcim_sqn_params params;
  struct mcim_sqn_he next;
  uint8_t sqn_ms[MCIM_SQN_LEN];
  mcim_milenage_t *m = NULL;
  mcim_cause_t rc;

  mcim_sqn_params_default(&params);
  mcim_metric_inc(&mcim_m_auc_resync_requests, NULL);
  rc = refused_before_lock(st, imsi, 0, true);
  if (rc == MCIM_OK)
    rc = mcim_store_begin(st);
  if (rc != MCIM_OK) {
    mcim_metric_inc(&mcim_m_auc_resync_failures, MCIM_LABELS(mcim_cause_name(rc)));
    return rc;
  }
  rc = load_sub(st, &s);
  if (rc == MCIM_NOT_FOUND)
    rc = MCIM_UNKNOWN_IDENTITY;
  if (rc != MCIM_OK)
    goto out;
  rc = mcim_auc_no_vectors(s.state, 0, 0, true);
  if (rc != MCIM_OK)
    goto out;
  rc = mcim_milenage_new(&m);
  if (rc == MCIM_OK)
    rc = mcim_milenage_set_opc(m, s.k, s.opc);
  if (rc == MCIM_OK) {
    mcim_op_count(MCIM_OP_AKA_RESYNC);
    rc = mcim_aka_resync(m, rand, auts, sqn_ms);
  }
  if (rc == MCIM_OK)
    rc = mcim_sqn_he_resync(&params, &s.he, mcim_sqn_from_bytes(sqn_ms), &next);
  if (rc == MCIM_OK)
    rc = store_he(st, imsi, &next);
  if (rc == MCIM_OK) {
    rc = mcim_store_commit(st);
    goto done;
  }
out:
  mcim_store_rollback(st);
done:
  if (rc != MCIM_OK)
    mcim_metric_inc(&mcim_m_auc_resync_failures, MCIM_LABELS(mcim_cause_name(rc)));
  mcim_milenage_free(m);
  sub_row_wipe(&s);
  return rc;
}

mcim_cause_t mcim_auc_activate(mcim_store_t *st, const char *imsi)
{
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  mcim_cause_t rc = mcim_store_exec(
      st, "UPDATE auc SET state = 'active' WHERE imsi = ? AND state = 'pending'", p, 1, NULL, NULL);
  char state[16];
  /* already active is fine (a repeated report); anything else is not */
  if (rc == MCIM_OK && mcim_store_changes(st) == 0 &&
      (mcim_auc_state(st, imsi, state, NULL) != MCIM_OK || strcmp(state, "active") != 0))
    rc = MCIM_WRONG_STATE;
  return rc;
}

mcim_cause_t mcim_auc_set_state(mcim_store_t *st, const char *imsi, const char *from,
                                const char *to)
{
  mcim_val_t p[] = {MCIM_TEXT(to), MCIM_TEXT(imsi), MCIM_TEXT(from)};
  mcim_cause_t rc = mcim_store_exec(st, "UPDATE auc SET state = ? WHERE imsi = ? AND state = ?",
                                    p, 3, NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) != 1)
    rc = MCIM_WRONG_STATE;
  return rc;
}

mcim_cause_t mcim_auc_terminate(mcim_store_t *st, const char *imsi)
{
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  mcim_cause_t rc =
      mcim_store_exec(st, "UPDATE auc SET state = 'terminated' WHERE imsi = ?", p, 1, NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) == 0)
    rc = MCIM_NOT_FOUND;
  return rc;
}

struct state_out {
  char *state;
  int64_t *expires;
};

static mcim_cause_t state_cb(const mcim_row_t *row, void *arg)
{
  struct state_out *o = arg;
  snprintf(o->state, 16, "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  if (o->expires)
    *o->expires = mcim_row_int(row, 1);
  return MCIM_OK;
}

mcim_cause_t mcim_auc_state(mcim_store_t *st, const char *imsi, char *state, int64_t *expires)
{
  struct state_out o = {state, expires};
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  return mcim_store_query_one(st, "SELECT state, expires FROM auc WHERE imsi = ?", p, 1, state_cb,
                              &o);
}

mcim_cause_t mcim_auc_set_expires(mcim_store_t *st, const char *imsi, int64_t expires)
{
  mcim_val_t p[] = {MCIM_INT(expires), MCIM_TEXT(imsi)};
  mcim_cause_t rc =
      mcim_store_exec(st, "UPDATE auc SET expires = ? WHERE imsi = ?", p, 2, NULL, NULL);
  if (rc == MCIM_OK && mcim_store_changes(st) == 0)
    rc = MCIM_NOT_FOUND;
  return rc;
}

struct auc_holder {
  char state[16];
  char device[64];
};

static mcim_cause_t auc_holder_row(const mcim_row_t *row, void *arg)
{
  struct auc_holder *h = arg;
  snprintf(h->state, sizeof(h->state), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(h->device, sizeof(h->device), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  return MCIM_OK;
}

mcim_cause_t mcim_auc_live(mcim_store_t *st, const char *imsi, const char *device)
{
  struct auc_holder h = {"", ""};
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  mcim_cause_t rc = mcim_store_query_one(st, "SELECT state, device FROM auc WHERE imsi = ?", p,
                                         1, auc_holder_row, &h);
  if (rc == MCIM_NOT_FOUND ||
      (rc == MCIM_OK && (strcmp(h.device, device) != 0 ||
                         (strcmp(h.state, "active") != 0 && strcmp(h.state, "standby") != 0))))
    rc = MCIM_SUBSCRIPTION_TERMINATED;
  return rc;
}
