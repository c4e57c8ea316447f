/* Per-procedure key-agreement keys (docs/tre.md, "Crypto-shredding"). The quote of a
 * procedure (txn) carries the public key of a KA key made for that procedure alone, signed
 * by the attestation key; the SHO seals the MCIM package to it; the TRE deletes it once the
 * package is staged (or the procedure is abandoned, or the key expires), in a write under a
 * new storage key. So a package kept anywhere (the RO's DPF keeps them) can no longer be
 * opened by the device's state after its procedure, whatever leaks later. The static KA key
 * stays for what the M2MES and the RO send outside a procedure (the PCID credential).
 *
 * A TPM TRE with an attestation key also makes, at the same quote, the storage key the SHO is
 * to wrap K to (a slot key certified by that key over the txn: docs/tre-tpm.md, "Slots in the
 * TPM"); it lives in the same entry until K goes under it (stage) or the procedure ends
 * without it, when it is destroyed with the KA key.
 *
 *   "txn_keys": [{"txn", "key": (backend: PEM, or TPM blobs), "created", "slot"?}] */
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

#define TXN_KEYS "txn_keys"

static json_t *txn_keys(json_t *st, bool create)
{
  json_t *a = json_object_get(st, TXN_KEYS);
  if (!a && create && json_object_set_new(st, TXN_KEYS, json_array()) == 0)
    a = json_object_get(st, TXN_KEYS);
  return json_is_array(a) ? a : NULL;
}

mcim_cause_t tre_txn_key_jose(struct tre_soft *t, json_t *st, const char *txn,
                              mcim_jose_key_t **out)
{
  json_t *a = txn_keys(st, false);
  ssize_t i = txn ? tre_find(a, "txn", txn) : -1;
  *out = NULL;
  if (i < 0 || !t->keys->txn_ka_jose)
    return MCIM_NOT_FOUND;
  return t->keys->txn_ka_jose(t, st, json_object_get(json_array_get(a, (size_t)i), "key"), out);
}

mcim_cause_t tre_txn_key_jwk(struct tre_soft *t, json_t *st, const char *txn, json_t **jwk,
                             bool *created)
{
  mcim_jose_key_t *key = NULL;
  json_t *blob = NULL;
  char *text = NULL;
  mcim_cause_t rc = MCIM_UNSUPPORTED;

  *jwk = NULL;
  *created = false;
  if (!t->keys->txn_ka_create || !t->keys->txn_ka_jose)
    goto cleanup;
  rc = tre_txn_key_jose(t, st, txn, &key);
  if (rc == MCIM_NOT_FOUND) {
    json_t *a = txn_keys(st, true);
    rc = MCIM_NO_MEMORY;
    if (!a)
      goto cleanup;
    if ((rc = t->keys->txn_ka_create(t, st, &blob)) != MCIM_OK)
      goto cleanup;
    rc = MCIM_NO_MEMORY;
    if (json_array_append_new(a, json_pack("{s:s, s:O, s:I}", "txn", txn, "key", blob, "created",
                                           (json_int_t)mcim_now())))
      goto cleanup;
    json_decref(blob); /* the document's now: wiped with it, not here */
    blob = NULL;
    *created = true;
    rc = tre_txn_key_jose(t, st, txn, &key);
  }
  if (rc != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_jose_key_public_jwk(key, &text)) != MCIM_OK)
    goto cleanup;
  *jwk = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
  rc = json_is_object(*jwk) && !json_object_get(*jwk, "d") ? MCIM_OK : MCIM_INTERNAL;
cleanup:
  if (rc != MCIM_OK) {
    json_decref(*jwk);
    *jwk = NULL;
  }
  tre_json_wipe_free(blob);
  free(text);
  mcim_jose_key_free(key);
  return rc;
}

/* A slot key no K went under opens nothing (nothing is wrapped to it, and its authValue
 * leaves with the entry), so one that cannot be destroyed now only costs a persistent handle:
 * logged, and the entry goes anyway. */
static void slot_destroy(struct tre_soft *t, json_t *st, json_t *entry)
{
  json_t *slot = json_object_get(entry, "slot");
  if (!slot || !t->keys->txn_slot_destroy)
    return;
  mcim_cause_t rc = t->keys->txn_slot_destroy(t, st, slot);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, tre_str(entry, "txn"), 0, rc,
                   "tre: the procedure's unused slot key could not be destroyed");
}

bool tre_txn_key_drop(struct tre_soft *t, json_t *st, const char *txn)
{
  json_t *a = txn_keys(st, false);
  ssize_t i = txn ? tre_find(a, "txn", txn) : -1;
  if (i < 0)
    return false;
  slot_destroy(t, st, json_array_get(a, (size_t)i));
  tre_array_wipe_remove(a, (size_t)i);
  return true;
}

json_t *tre_txn_slot(json_t *st, const char *txn)
{
  json_t *a = txn_keys(st, false);
  ssize_t i = txn ? tre_find(a, "txn", txn) : -1;
  return i < 0 ? NULL : json_object_get(json_array_get(a, (size_t)i), "slot");
}

void tre_txn_slot_taken(json_t *st, const char *txn)
{
  json_t *a = txn_keys(st, false);
  ssize_t i = txn ? tre_find(a, "txn", txn) : -1;
  json_t *entry = i >= 0 ? json_array_get(a, (size_t)i) : NULL;
  json_t *slot = json_incref(json_object_get(entry, "slot"));
  if (slot && json_object_del(entry, "slot") == 0)
    tre_json_wipe_free(slot); /* its authValue stays with the staged MCIM's copy only */
  else
    json_decref(slot);
}

mcim_cause_t tre_txn_slot_offer(struct tre_soft *t, json_t *st, const char *txn, json_t **offer,
                                bool *created)
{
  json_t *a = txn_keys(st, false), *slot = NULL;
  ssize_t i = txn ? tre_find(a, "txn", txn) : -1;
  mcim_cause_t rc = MCIM_OK;

  *offer = NULL;
  *created = false;
  if (!t->keys->txn_slot_create)
    return MCIM_OK;
  if (i < 0)
    return MCIM_NOT_FOUND; /* made after the txn's KA key, in its entry */
  json_t *entry = json_array_get(a, (size_t)i);
  slot = json_object_get(entry, "slot");
  if (!slot) {
    /* once per txn: a repeated quote offers the same key and certification */
    json_t *made = NULL;
    rc = t->keys->txn_slot_create(t, st, txn, &made);
    if (rc != MCIM_OK)
      return rc;
    if (json_object_set(entry, "slot", made)) {
      (void)t->keys->txn_slot_destroy(t, st, made);
      tre_json_wipe_free(made);
      return MCIM_NO_MEMORY;
    }
    json_decref(made); /* the entry's now */
    slot = made;
    *created = true;
  }
  *offer =
      json_pack("{s:O, s:O, s:O}", "public", json_object_get(slot, "public"), "attest",
                json_object_get(slot, "attest"), "signature", json_object_get(slot, "signature"));
  return *offer ? MCIM_OK : MCIM_NO_MEMORY;
}

size_t tre_txn_keys_prune(struct tre_soft *t, json_t *st, int64_t now)
{
  json_t *a = txn_keys(st, false);
  size_t dropped = 0, i = 0;
  while (a && i < json_array_size(a)) {
    int64_t created = tre_int(json_array_get(a, i), "created");
    if (created + MCIM_TRE_TXN_KEY_LIFETIME < now) {
      mcim_log_event(MCIM_LOG_INFO, tre_str(json_array_get(a, i), "txn"), 0, MCIM_OK,
                     "tre: the procedure's key-agreement key expired unused: deleted");
      slot_destroy(t, st, json_array_get(a, i));
      tre_array_wipe_remove(a, i);
      dropped++;
    } else {
      i++;
    }
  }
  /* appended in creation order: the oldest first */
  while (a && json_array_size(a) > MCIM_TRE_MAX_TXN_KEYS) {
    mcim_log_event(MCIM_LOG_WARN, tre_str(json_array_get(a, 0), "txn"), 0, MCIM_OK,
                   "tre: too many open procedures: the oldest one's key-agreement key deleted");
    slot_destroy(t, st, json_array_get(a, 0));
    tre_array_wipe_remove(a, 0);
    dropped++;
  }
  return dropped;
}
