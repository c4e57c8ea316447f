/* USIM-side AKA inside the TRE, and the PCID credential (install and renewal). */
#include <stdlib.h>
#include <string.h>

#include "mcim/aka.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

mcim_cause_t tre_op_aka(void *ctx, const char *cred, const uint8_t rand[16],
                        const uint8_t autn[16], uint8_t res[8], uint8_t auts[14])
{
  struct tre_soft *t = ctx;
  struct mcim_sqn_params params;
  struct mcim_aka_usim_out out;
  struct tre_cred c;
  struct mcim_sqn_usim next;
  mcim_milenage_t *m = NULL;
  json_t *st = NULL;
  ssize_t slot = -1;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  memset(&out, 0, sizeof(out));
  memset(&c, 0, sizeof(c));
  if (!t || !cred || !rand || !autn || !res || !auts)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *obj = tre_cred_obj(st, cred, &slot);
  rc = MCIM_NOT_FOUND;
  if (!obj)
    goto cleanup;
  rc = MCIM_WRONG_STATE;
  if (slot >= 0 && strcmp(tre_str(obj, "state") ? tre_str(obj, "state") : "", "active") != 0) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: AKA refused: slot '%s' is not active", cred);
    goto cleanup;
  }
  rc = tre_cred_read(obj, &c);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_CREDENTIAL_EXPIRED;
  if (slot < 0 && c.expires <= mcim_now()) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: PCID credential %s expired at %lld", c.id,
                   (long long)c.expires);
    goto cleanup;
  }
  if (c.k_tpm) {
    /* K in the TPM: E_K is TPM2_EncryptDecrypt2 on the slot's key, loaded until tre_end() */
    rc = t->keys->k_milenage ? t->keys->k_milenage(t, st, c.k_tpm, &m) : MCIM_UNSUPPORTED;
    if (rc == MCIM_OK)
      rc = mcim_milenage_use_opc(m, c.opc);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: AKA with %s: its K in the TPM is"
                     " unusable", cred);
      goto cleanup;
    }
  } else if ((rc = mcim_milenage_new(&m)) != MCIM_OK ||
             (rc = mcim_milenage_set_opc(m, c.k, c.opc)) != MCIM_OK) {
    goto cleanup;
  }
  mcim_sqn_params_default(&params);
  mcim_op_count(MCIM_OP_AKA_USIM_CHECK);
  rc = mcim_aka_usim_check(m, &params, &c.sqn, rand, autn, &next, &out);
  if (rc == MCIM_SYNC_FAILURE) {
    memcpy(auts, out.auts, sizeof(out.auts));
    mcim_log_event(MCIM_LOG_INFO, NULL, 0, rc, "tre: AKA with %s: SQN %s, answering AUTS", cred,
                   mcim_sqn_verdict_name(out.verdict));
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: AKA with %s refused", cred);
    goto cleanup;
  }
  /* Commit the SQN state before RES leaves the TRE: a RES handed out for an SQN that a
   * restart could forget would let the same challenge be accepted twice (invariant 5). */
  rc = tre_cred_set_sqn(obj, &next);
  if (rc != MCIM_OK)
    goto cleanup;
  /* The renewed PCID credential works: the one it replaced is no longer needed (its slot key
   * evicted first; one that cannot be is kept, with its credential, for the next AKA). */
  if (strcmp(cred, MCIM_TRE_PCID) == 0 && json_object_get(st, "pcid_prev") &&
      tre_pcid_prev_drop(t, st) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_TPM_ERROR,
                   "tre: the previous PCID credential is kept: its slot key was not evicted");
  rc = tre_commit(t, st);
  if (rc != MCIM_OK)
    goto cleanup;
  memcpy(res, out.res, sizeof(out.res));
cleanup:
  mcim_wipe(&out, sizeof(out));
  mcim_wipe(&next, sizeof(next));
  tre_cred_wipe(&c);
  mcim_milenage_free(m);
  if (held)
    tre_end(t, st);
  return rc;
}

/* ---- PCID credential ---- */

/* {"pcid", "k" | "k_tpm", "opc", "amf", "expires"} from the JWE, validated into a new
 * credential object with a fresh SQN state (tre_priv.h). */
mcim_cause_t tre_pcid_parse(struct tre_soft *t, json_t *st, const uint8_t *plain, size_t len,
                            const char *renewal_txn, json_t **out)
{
  char k[33] = "", opc[33], amf[5];
  json_t *doc = NULL, *c = NULL, *k_tpm = NULL;
  mcim_cause_t rc = MCIM_BAD_JSON;

  doc = json_loadb((const char *)plain, len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(doc))
    goto cleanup;
  const char *pcid = tre_str(doc, "pcid");
  json_t *exp = json_object_get(doc, "expires");
  const json_t *dup = json_object_get(doc, "k_tpm");
  rc = MCIM_FIELD_MISSING;
  if (!pcid || !exp)
    goto cleanup;
  rc = MCIM_WRONG_TYPE;
  if (!tre_imsi_valid(pcid) || !json_is_integer(exp) || json_integer_value(exp) <= 0)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (dup && json_object_get(doc, "k")) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: PCID credential with both k and k_tpm");
    goto cleanup;
  }
  rc = MCIM_UNSUPPORTED;
  if (dup && !t->keys->k_import_pcid) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc,
                   "tre: PCID credential k_tpm: K wrapped for a TPM, and this TRE has none");
    goto cleanup;
  }
  /* a TPM TRE takes the PCID's K into its TPM only: K in clear would be in the agent's memory */
  rc = MCIM_FORBIDDEN;
  if (!dup && t->keys->k_import_pcid) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc,
                   "tre: PCID credential k: K in clear, and this TRE takes K into its TPM only");
    goto cleanup;
  }
  if ((!dup && (rc = tre_hex_field(doc, "k", 16, k)) != MCIM_OK) ||
      (rc = tre_hex_field(doc, "opc", 16, opc)) != MCIM_OK ||
      (rc = tre_hex_field(doc, "amf", 2, amf)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_CREDENTIAL_EXPIRED;
  if (json_integer_value(exp) <= mcim_now())
    goto cleanup;
  /* last: the TPM2_Import under the PCID's slot key, the TPM refusing a blob wrapped to any
   * other key (the storage primary included) */
  if (dup && (rc = renewal_txn ? t->keys->k_import_pcid_renewal(t, st, renewal_txn, dup, &k_tpm)
                               : t->keys->k_import_pcid(t, st, dup, &k_tpm)) != MCIM_OK)
    goto cleanup;
  rc = tre_cred_new("pcid", pcid, dup ? NULL : k, opc, amf, &c);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  if (json_object_set_new(c, "expires", json_integer(json_integer_value(exp))))
    goto cleanup;
  if (k_tpm) {
    json_t *kt = k_tpm;
    k_tpm = NULL; /* c's from here, also on failure (json_object_set_new) */
    if (json_object_set_new(c, "k_tpm", kt))
      goto cleanup;
  }
  *out = c;
  c = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
  tre_json_wipe_free(k_tpm);
  tre_json_wipe_free(c);
  tre_json_wipe_free(doc);
  return rc;
}

static bool same_secret(json_t *a, json_t *b, const char *name)
{
  const char *x = tre_str(a, name), *y = tre_str(b, name);
  return x && y && strlen(x) == strlen(y) && mcim_ct_equal(x, y, strlen(x));
}

/* The same K: the same hex, or (K in the TPM) the same imported object, whose public area's
 * unique field is a digest of the SHO's random seed value and K, so one blob imported again. */
static bool same_k(json_t *a, json_t *b)
{
  json_t *x = json_object_get(a, "k_tpm"), *y = json_object_get(b, "k_tpm");
  if (x || y)
    return x && y && same_secret(x, y, "tpm_public");
  return same_secret(a, b, "k");
}

/* Whether the slot key `rec` records is also that of `other` (its "k_tpm", or itself). */
static bool same_slot_key(const json_t *rec, const json_t *other)
{
  const char *a = tre_str((json_t *)rec, "tpm_parent"), *b = tre_str((json_t *)other, "tpm_parent");
  return a && b && strcmp(a, b) == 0 &&
         json_integer_value(json_object_get(rec, "tpm_handle")) ==
             json_integer_value(json_object_get(other, "tpm_handle"));
}

mcim_cause_t tre_pcid_prev_drop(struct tre_soft *t, json_t *st)
{
  json_t *prev = json_object_get(st, "pcid_prev");
  json_t *k = json_object_get(prev, "k_tpm");
  json_t *cur = json_object_get(json_object_get(st, MCIM_TRE_PCID), "k_tpm");
  json_t *rec = json_object_get(st, TRE_PCID_SLOT);
  mcim_cause_t rc = MCIM_OK;

  if (!prev)
    return MCIM_OK;
  /* K in the TPM: the slot key goes first, so no copy of the state loads that K again; a key
   * the current credential still uses (the same one delivered again) stays */
  if (k && !(cur && same_slot_key(k, cur)) && t->keys->k_destroy) {
    rc = t->keys->k_destroy(t, st, k);
    if (rc != MCIM_OK)
      return rc;
    mcim_log_info("tre: the previous PCID credential's slot key evicted");
    if (rec && same_slot_key(k, rec))
      json_object_del(st, TRE_PCID_SLOT);
  }
  tre_json_wipe(prev);
  json_object_del(st, "pcid_prev");
  return rc;
}

mcim_cause_t tre_pcid_put(struct tre_soft *t, json_t *st, json_t *fresh)
{
  json_t *cur = json_object_get(st, "pcid");
  mcim_cause_t rc;
  if (json_is_object(cur) && same_secret(cur, fresh, "pcid") && same_k(cur, fresh) &&
      same_secret(cur, fresh, "opc")) {
    /* Delivered again (a retry): the same USIM, so its SQN state stays; only the
     * lifetime and AMF may have moved. */
    if (json_object_set(cur, "expires", json_object_get(fresh, "expires")) ||
        json_object_set(cur, "amf", json_object_get(fresh, "amf")))
      return MCIM_NO_MEMORY;
    return MCIM_OK;
  }
  /* One write replaces both: the old credential becomes pcid_prev (a still older one is
   * wiped, its slot key evicted), the new one pcid. A crash leaves either the old document or
   * this one. */
  if ((rc = tre_pcid_prev_drop(t, st)) != MCIM_OK)
    return rc;
  if (json_is_object(cur) && json_object_set(st, "pcid_prev", cur))
    return MCIM_NO_MEMORY;
  if (json_object_set(st, "pcid", fresh))
    return MCIM_NO_MEMORY;
  return MCIM_OK;
}

mcim_cause_t tre_op_pcid_install(void *ctx, const char *jwe, size_t len)
{
  struct tre_soft *t = ctx;
  mcim_jose_key_t *ka = NULL;
  uint8_t *plain = NULL;
  size_t plain_len = 0;
  json_t *st = NULL, *fresh = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !jwe || !len)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  if ((rc = tre_key_jose(t, st, MCIM_TRE_CERT_KA, &ka)) != MCIM_OK ||
      (rc = mcim_jwe_decrypt(ka, jwe, len, &plain, &plain_len)) != MCIM_OK ||
      (rc = tre_pcid_parse(t, st, plain, plain_len, NULL, &fresh)) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: PCID credential refused");
    goto cleanup;
  }
  if ((rc = tre_pcid_put(t, st, fresh)) != MCIM_OK)
    goto cleanup;
  rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_info("tre: PCID credential %s installed, expires %lld", tre_str(fresh, "pcid"),
                  (long long)tre_int(fresh, "expires"));
cleanup:
  /* `fresh` may now be shared with `st`, which tre_end() wipes; wipe here too in case not. */
  tre_json_wipe_free(fresh);
  mcim_jose_secret_free(plain, plain_len);
  mcim_jose_key_free(ka);
  if (held)
    tre_end(t, st);
  return rc;
}
