/* MCIM packages and slots: stage (verify and hold), unstage, install, discard, activate.
 * Isolation rests on one rule: the slot of a package is the CN of the certificate that
 * verified its signature (= iss = the content's "sho"), never a name the caller passes. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

/* Names that are never a slot: the credential names (aka() would confuse them) and the
 * roles that hold operators' CA certificates but are not home operators (the RO relays
 * packages and must not be able to plant an MCIM of its own). */
static const char *const reserved_slots[] = {MCIM_TRE_PCID, MCIM_TRE_PCID_PREV, "ro", "vno",
                                             "pva", "m2mes", "admin", NULL};

static bool slot_name_allowed(const char *name)
{
  if (!name || !mcim_pki_name_valid(name))
    return false;
  for (const char *const *r = reserved_slots; *r; r++)
    if (strcmp(*r, name) == 0)
      return false;
  return true;
}

static mcim_cause_t sha256_hex(const void *data, size_t len, char out[65])
{
  uint8_t md[32];
  unsigned int mdlen = 0;
  if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
    return MCIM_CRYPTO_ERROR;
  mcim_hex_encode(md, sizeof(md), out);
  return MCIM_OK;
}

/* Crypto-shredding of K in the TPM (docs/tre-tpm.md, "Slots in the TPM"): before an entry
 * whose K is in the TPM leaves the document, its slot key is destroyed, first, so that no
 * state, written or not, can use that K again. A TPM that cannot do it fails the operation. */
static mcim_cause_t k_destroy(struct tre_soft *t, json_t *st, const json_t *entry)
{
  const json_t *k = json_object_get(entry, "k_tpm");
  return k && t->keys->k_destroy ? t->keys->k_destroy(t, st, k) : MCIM_OK;
}

/* ---- stage ---- */

struct stage_ctx {
  const char *txn;
  const char *why; /* what failed, for the log */
};

/* K wrapped for this TRE's TPM ("k_tpm": the SHO's duplication blob, docs/tre-tpm.md "K in
 * the TPM"), imported now, at stage: a blob the TPM refuses is a refused package at step 7,
 * before the old MCIM is discarded, never a failed install at step 12 after it. The staged
 * entry keeps the TPM's wrapping of K ({"tpm_public", "tpm_private"}), never K. */
static mcim_cause_t k_tpm_import(struct tre_soft *t, struct stage_ctx *sc, json_t *st,
                                 const json_t *dup, json_t **out)
{
  sc->why = "content k_tpm: K wrapped for a TPM, and this TRE has none";
  if (!t->keys->k_import_txn)
    return MCIM_UNSUPPORTED;
  /* under the slot key this procedure's quote offered, and no other */
  sc->why = "content k_tpm does not import under this procedure's slot key";
  return t->keys->k_import_txn(t, st, sc->txn, dup, out);
}

/* The MCIM inside the package: {"sho","imsi","k" | "k_tpm","opc","amf"}, complete and for
 * `iss`. */
static mcim_cause_t content_parse(struct tre_soft *t, struct stage_ctx *sc, json_t *st,
                                  const uint8_t *plain, size_t len, const char *iss,
                                  const char *txn, const char *digest, json_t **entry)
{
  char k[33] = "", opc[33], amf[5];
  json_t *doc = json_loadb((const char *)plain, len, JSON_REJECT_DUPLICATES, NULL);
  json_t *k_tpm = NULL;
  mcim_cause_t rc = MCIM_BAD_JSON;

  sc->why = "content is not a JSON object";
  if (!json_is_object(doc))
    goto cleanup;
  const char *sho = tre_str(doc, "sho"), *imsi = tre_str(doc, "imsi");
  rc = MCIM_FIELD_MISSING;
  sc->why = "content lacks sho or imsi";
  if (!sho || !imsi)
    goto cleanup;
  rc = MCIM_SLOT_FORBIDDEN;
  sc->why = "content names another SHO than its issuer";
  if (strcmp(sho, iss) != 0)
    goto cleanup;
  rc = MCIM_WRONG_TYPE;
  sc->why = "content imsi is not an IMSI";
  if (!tre_imsi_valid(imsi))
    goto cleanup;
  const json_t *dup = json_object_get(doc, "k_tpm");
  rc = MCIM_INVALID_ARGUMENT;
  sc->why = "content has both k and k_tpm";
  if (dup && json_object_get(doc, "k"))
    goto cleanup;
  /* a TPM TRE takes K into its TPM only: K in clear would be in the agent's memory */
  rc = MCIM_FORBIDDEN;
  sc->why = "content k: K in clear, and this TRE takes K into its TPM only";
  if (!dup && t->keys->k_import_txn)
    goto cleanup;
  sc->why = "content k, opc or amf missing or not hex of the right length";
  if ((!dup && (rc = tre_hex_field(doc, "k", 16, k)) != MCIM_OK) ||
      (rc = tre_hex_field(doc, "opc", 16, opc)) != MCIM_OK ||
      (rc = tre_hex_field(doc, "amf", 2, amf)) != MCIM_OK)
    goto cleanup;
  if (dup && (rc = k_tpm_import(t, sc, st, dup, &k_tpm)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  sc->why = "out of memory";
  *entry = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "txn", txn, "sho", sho, "imsi",
                     imsi, "opc", opc, "amf", amf, "package_sha256", digest, "staged",
                     (json_int_t)mcim_now());
  if (*entry && (k_tpm ? json_object_set(*entry, "k_tpm", k_tpm)
                       : json_object_set_new(*entry, "k", json_string(k)))) {
    tre_json_wipe_free(*entry);
    *entry = NULL;
  }
  if (*entry)
    rc = MCIM_OK;
cleanup:
  json_decref(k_tpm);
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
  tre_json_wipe_free(doc);
  return rc;
}

/* Everything but the idempotency check; any failure here is logged by the caller. */
static mcim_cause_t stage_verify(struct tre_soft *t, struct stage_ctx *sc, json_t *st,
                                 const char *txn, const char *package, size_t len,
                                 const char *issuer_pem, const char *digest, json_t **entry)
{
  X509 *ca = NULL, *cert = NULL;
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *issuer = NULL, *ka = NULL;
  mcim_statement_t *stmt = NULL;
  uint8_t *plain = NULL;
  size_t plain_len = 0;
  char *cn = NULL;
  const char *device = tre_str(st, "device"), *ca_pem = tre_str(st, "operators_ca");
  struct tre_replay replay = {.seen = json_object_get(st, "seen")};
  mcim_replay_cache_t cache = tre_replay_cache(&replay);
  mcim_cause_t rc = MCIM_INTERNAL;

  sc->why = "pinned operators' CA unusable";
  if (!ca_pem || mcim_pki_cert_from_pem(ca_pem, strlen(ca_pem), &ca) != MCIM_OK)
    goto cleanup;
  sc->why = "issuer certificate unreadable";
  if ((rc = mcim_pki_cert_from_pem(issuer_pem, strlen(issuer_pem), &cert)) != MCIM_OK)
    goto cleanup;
  /* Verified first, then its CN read: the CN of a verified certificate is a name the
   * operators' CA vouches for, and the package's iss must be that name. */
  sc->why = "issuer certificate does not verify against the operators' CA";
  if ((rc = mcim_pki_cert_public_key(cert, ca, MCIM_CERT_TLS, NULL, 0, &pub)) != MCIM_OK)
    goto cleanup;
  sc->why = "issuer certificate has no usable name";
  if ((rc = mcim_pki_cert_name(cert, &cn)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_SLOT_FORBIDDEN;
  sc->why = "issuer is not an SHO (reserved name)";
  if (!slot_name_allowed(cn))
    goto cleanup;
  sc->why = "issuer or TRE key unusable";
  if ((rc = mcim_jose_key_from_pkey(pub, &issuer)) != MCIM_OK)
    goto cleanup;
  /* The procedure's own KA key when the TRE made one for this txn (its quote offered it):
   * then only that key, never the static one (tre_txn.c). The static key for a txn without
   * one: an SHO from before per-procedure keys, a package without a quote. */
  rc = tre_txn_key_jose(t, st, txn, &ka);
  bool per_txn = rc == MCIM_OK;
  if (rc == MCIM_NOT_FOUND)
    rc = tre_key_jose(t, st, MCIM_TRE_CERT_KA, &ka);
  if (rc != MCIM_OK)
    goto cleanup;
  mcim_jws_expect_t x = {.iss = cn,
                         .aud = device,
                         .sub = device,
                         .typ = TRE_TYP_PACKAGE,
                         .txn = txn,
                         .skew = MCIM_TRE_SKEW,
                         .replay = &cache};
  sc->why = per_txn ? "package does not open with this procedure's key-agreement key"
                      " (signature, claims, lifetime, replay or sealing)"
                    : "package does not open (signature, claims, lifetime, replay or sealing)";
  rc = mcim_package_open(package, len, issuer, &x, ka, &stmt, &plain, &plain_len);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = content_parse(t, sc, st, plain, plain_len, cn, txn, digest, entry);
  if (rc != MCIM_OK)
    goto cleanup;
  /* A new SHO needs a free slot at install; refuse now rather than then. */
  rc = MCIM_TOO_LARGE;
  sc->why = "no free slot for a new SHO";
  if (tre_find(json_object_get(st, "slots"), "slot", cn) < 0 &&
      json_array_size(json_object_get(st, "slots")) >= MCIM_TRE_MAX_SLOTS)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  if (rc != MCIM_OK && *entry) {
    (void)k_destroy(t, st, *entry); /* imported, then refused: no slot key is left behind */
    tre_json_wipe_free(*entry);
    *entry = NULL;
  }
  mcim_jose_secret_free(plain, plain_len);
  mcim_statement_free(stmt);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(issuer);
  EVP_PKEY_free(pub);
  X509_free(cert);
  X509_free(ca);
  free(cn);
  return rc;
}

mcim_cause_t tre_op_stage(void *ctx, const char *txn, const char *package, size_t len,
                          const char *issuer_cert_pem)
{
  struct tre_soft *t = ctx;
  struct stage_ctx sc = {.txn = txn, .why = "invalid argument"};
  json_t *st = NULL, *entry = NULL;
  char digest[65];
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT, cause = MCIM_INVALID_ARGUMENT;

  if (!t || !txn || !*txn || !package || !issuer_cert_pem)
    goto cleanup;
  /* Peer input from here on: every refusal is PACKAGE_INVALID with its cause logged. */
  if (!len || len > MCIM_JOSE_MAX_LEN) {
    cause = len ? MCIM_TOO_LARGE : MCIM_JOSE_MALFORMED;
    sc.why = "package empty or larger than any MCIM package";
    rc = MCIM_PACKAGE_INVALID;
    goto cleanup;
  }
  if ((rc = sha256_hex(package, len, digest)) != MCIM_OK)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *staged = json_object_get(st, "staged"), *slots = json_object_get(st, "slots");

  /* Idempotency per txn: the same bytes again (a retried download) change nothing; other
   * bytes for a txn already staged or installed are refused. */
  ssize_t i = tre_find(staged, "txn", txn);
  json_t *known = i >= 0 ? json_array_get(staged, (size_t)i) : NULL;
  if (!known && (i = tre_find(slots, "txn", txn)) >= 0)
    known = json_array_get(slots, (size_t)i);
  if (known) {
    const char *d = tre_str(known, "package_sha256");
    rc = d && strcmp(d, digest) == 0 ? MCIM_OK : MCIM_CONFLICT;
    if (rc == MCIM_OK) {
      mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: package already staged, nothing to do");
      goto cleanup;
    }
    cause = rc;
    sc.why = "another package was already staged or installed for this txn";
    rc = MCIM_PACKAGE_INVALID;
    goto cleanup;
  }

  cause = stage_verify(t, &sc, st, txn, package, len, issuer_cert_pem, digest, &entry);
  if (cause != MCIM_OK) {
    /* the TPM failing is no fault of the package: that cause, so the caller may retry */
    rc = tre_key_failure(cause) ? cause : MCIM_PACKAGE_INVALID;
    if (rc == cause)
      mcim_log_event(MCIM_LOG_ERROR, txn, 0, cause, "tre: package not opened: %s", sc.why);
    goto cleanup;
  }
  /* the MCIM's K and OPc under a key of its own from here on (tre_secrets_seal) */
  if ((rc = tre_secrets_seal(entry)) != MCIM_OK) {
    (void)k_destroy(t, st, entry); /* the new package's slot key, made for nothing */
    goto cleanup;
  }
  /* A bounded list: a procedure abandoned without unstage must not fill it. */
  while (json_array_size(staged) >= MCIM_TRE_MAX_STAGED) {
    mcim_log_event(MCIM_LOG_WARN, tre_str(json_array_get(staged, 0), "txn"), 0, MCIM_OK,
                   "tre: dropping the oldest staged package to make room");
    if ((rc = k_destroy(t, st, json_array_get(staged, 0))) != MCIM_OK) {
      (void)k_destroy(t, st, entry); /* the new package's slot key, made for nothing */
      goto cleanup;
    }
    tre_array_wipe_remove(staged, 0);
  }
  rc = MCIM_NO_MEMORY;
  if (json_array_append(staged, entry)) {
    (void)k_destroy(t, st, entry);
    goto cleanup;
  }
  /* K is under the slot key its quote offered (a TPM TRE with an attestation key): that key
   * is the staged MCIM's from this write on, not destroyed with the txn's KA key below */
  tre_txn_slot_taken(st, txn);
  /* The package is open: its procedure's KA key has done its one job and goes in this same
   * write, under a new storage key, so that no copy of the package opens again. */
  rc = tre_txn_key_drop(t, st, txn) ? tre_commit_shred(t, st) : tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: package of %s for IMSI %s staged",
                   tre_str(entry, "sho"), tre_str(entry, "imsi"));
cleanup:
  if (rc == MCIM_PACKAGE_INVALID)
    mcim_log_event(MCIM_LOG_WARN, txn, 0, cause, "tre: package refused: %s", sc.why);
  tre_json_wipe_free(entry);
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t tre_op_unstage(void *ctx, const char *txn)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !txn)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *staged = json_object_get(st, "staged");
  ssize_t i = tre_find(staged, "txn", txn);
  /* an abandoned procedure: its KA key goes too, whether or not a package came */
  bool key = tre_txn_key_drop(t, st, txn);
  rc = MCIM_NOT_FOUND;
  if (i < 0 && !key)
    goto cleanup;
  if (i >= 0 && (rc = k_destroy(t, st, json_array_get(staged, (size_t)i))) != MCIM_OK)
    goto cleanup;
  if (i >= 0)
    tre_array_wipe_remove(staged, (size_t)i);
  rc = tre_commit_shred(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: %s dropped",
                   i >= 0 ? "staged package" : "the procedure's key-agreement key");
  if (rc == MCIM_OK && i < 0)
    rc = MCIM_NOT_FOUND; /* no staged package, as before */
cleanup:
  if (held)
    tre_end(t, st);
  return rc;
}

/* ---- install, activate, discard ---- */

/* Invariant 2: at most one active MCIM. */
static void deactivate_all(json_t *slots)
{
  size_t i;
  json_t *s;
  json_array_foreach(slots, i, s) {
    const char *state = tre_str(s, "state");
    if (state && strcmp(state, "active") == 0)
      json_object_set_new(s, "state", json_string("inactive"));
  }
}

static mcim_cause_t slot_from_staged(json_t *e, json_t **out)
{
  json_t *slot = NULL;
  json_t *k_tpm = json_object_get(e, "k_tpm"); /* K in the TPM: its wrapping moves along */
  json_t *sealed = json_object_get(e, "secrets"); /* K, OPc under the MCIM's own key */
  mcim_cause_t rc = tre_cred_new("imsi", tre_str(e, "imsi"), k_tpm ? NULL : tre_str(e, "k"),
                                 tre_str(e, "opc"), tre_str(e, "amf"), &slot);
  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_NO_MEMORY;
  /* a copy: the staged entry is wiped when it is removed */
  if ((k_tpm && json_object_set_new(slot, "k_tpm", json_deep_copy(k_tpm))) ||
      (sealed &&
       (json_object_set_new(slot, "secrets", json_deep_copy(sealed)) ||
        json_object_set_new(slot, "slot_key", json_deep_copy(json_object_get(e, "slot_key"))))) ||
      json_object_set_new(slot, "slot", json_string(tre_str(e, "sho"))) ||
      json_object_set_new(slot, "sho", json_string(tre_str(e, "sho"))) ||
      json_object_set_new(slot, "state", json_string("active")) ||
      json_object_set_new(slot, "txn", json_string(tre_str(e, "txn"))) ||
      json_object_set_new(slot, "package_sha256", json_string(tre_str(e, "package_sha256"))) ||
      json_object_set_new(slot, "installed", json_integer(mcim_now()))) {
    tre_json_wipe_free(slot);
    return rc;
  }
  /* a package staged before per-slot keys: sealed now */
  if ((rc = tre_secrets_seal(slot)) != MCIM_OK) {
    tre_json_wipe_free(slot);
    return rc;
  }
  *out = slot;
  return MCIM_OK;
}

static void slot_name_out(const char *name, char slot[64])
{
  size_t n = strlen(name);
  n = n < 63 ? n : 63;
  memcpy(slot, name, n);
  slot[n] = '\0';
}

/* install (active: the new MCIM becomes the active one) and install_inactive (the variant
 * with pre-provisioned MCIMs: the new MCIM is held inactive, the active one stays). */
static mcim_cause_t install_slot(void *ctx, const char *txn, char slot[64], bool active)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *fresh = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !txn || !slot)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *staged = json_object_get(st, "staged"), *slots = json_object_get(st, "slots");
  ssize_t i = tre_find(staged, "txn", txn);
  if (i < 0) {
    /* Installed already (a retry after a crash or a lost answer): same answer. */
    ssize_t j = tre_find(slots, "txn", txn);
    rc = MCIM_NOT_FOUND;
    if (j < 0)
      goto cleanup;
    slot_name_out(tre_str(json_array_get(slots, (size_t)j), "slot"), slot);
    rc = MCIM_OK;
    goto cleanup;
  }
  json_t *e = json_array_get(staged, (size_t)i);
  const char *sho = tre_str(e, "sho");
  rc = MCIM_INTERNAL;
  if (!sho || !slot_name_allowed(sho))
    goto cleanup;
  rc = slot_from_staged(e, &fresh);
  if (rc != MCIM_OK)
    goto cleanup;
  /* The same SHO re-provisioning its own slot: the new MCIM replaces the old one. Not with
   * an inactive install: that would leave the device without the MCIM it uses. */
  ssize_t old = tre_find(slots, "slot", sho);
  const char *old_state = old >= 0 ? tre_str(json_array_get(slots, (size_t)old), "state") : NULL;
  rc = MCIM_WRONG_STATE;
  if (!active && old_state && strcmp(old_state, "active") == 0)
    goto cleanup;
  bool shred = tre_txn_key_drop(t, st, txn) || old >= 0;
  if (old >= 0) {
    mcim_log_event(MCIM_LOG_NOTICE, txn, 0, MCIM_OK, "tre: slot %s replaced by a new MCIM", sho);
    if ((rc = k_destroy(t, st, json_array_get(slots, (size_t)old))) != MCIM_OK)
      goto cleanup;
    tre_array_wipe_remove(slots, (size_t)old);
  }
  rc = MCIM_TOO_LARGE;
  if (json_array_size(slots) >= MCIM_TRE_MAX_SLOTS)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  if (active)
    deactivate_all(slots);
  else if (json_object_set_new(fresh, "state", json_string("inactive")))
    goto cleanup;
  if (json_array_append(slots, fresh))
    goto cleanup;
  slot_name_out(sho, slot); /* before the staged entry (and `sho`) goes */
  tre_array_wipe_remove(staged, (size_t)i);
  /* the MCIM replaced is shredded (docs/tre.md, "Crypto-shredding") */
  rc = shred ? tre_commit_shred(t, st) : tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: MCIM installed in slot %s, %s", slot,
                   active ? "active" : "inactive");
cleanup:
  tre_json_wipe_free(fresh);
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t tre_op_install(void *ctx, const char *txn, char slot[64])
{
  return install_slot(ctx, txn, slot, true);
}

mcim_cause_t tre_op_install_inactive(void *ctx, const char *txn, char slot[64])
{
  return install_slot(ctx, txn, slot, false);
}

mcim_cause_t tre_op_activate(void *ctx, const char *sho)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !sho)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *slots = json_object_get(st, "slots");
  ssize_t i = tre_find(slots, "slot", sho);
  rc = MCIM_NOT_FOUND;
  if (i < 0)
    goto cleanup;
  json_t *s = json_array_get(slots, (size_t)i);
  rc = MCIM_OK;
  if (strcmp(tre_str(s, "state") ? tre_str(s, "state") : "", "active") == 0)
    goto cleanup; /* already: nothing to write */
  deactivate_all(slots);
  rc = MCIM_NO_MEMORY;
  if (json_object_set_new(s, "state", json_string("active")))
    goto cleanup;
  rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_info("tre: slot %s is now the active MCIM", sho);
cleanup:
  if (held)
    tre_end(t, st);
  return rc;
}

/* Remove slot `i` and, with a `txn`, queue its discard notice (mcim-discard+jwt to the
 * slot's SHO, claims "slot", "imsi") in the same working copy: neither exists without the
 * other, whatever crashes in between. */
static mcim_cause_t discard_slot(struct tre_soft *t, json_t *st, json_t *slots, json_t *pending,
                                 size_t i, const char *txn)
{
  json_t *s = json_array_get(slots, i);
  const char *sho = tre_str(s, "slot");
  if (!sho)
    return MCIM_INTERNAL;
  if (txn && tre_find2(pending, "to", sho, "txn", txn) < 0) {
    /* expired notices make room first: only live ones can refuse a discard */
    tre_pending_prune(pending, mcim_now());
    if (json_array_size(pending) >= MCIM_TRE_MAX_PENDING) {
      mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_TOO_LARGE,
                     "tre: notification queue full, discard refused");
      return MCIM_TOO_LARGE;
    }
    if (json_array_append_new(pending,
                              json_pack("{s:s, s:s, s:s, s:{s:s, s:s?}, s:I}", "to", sho, "txn",
                                        txn, "typ", TRE_TYP_DISCARD, "extra", "slot", sho, "imsi",
                                        tre_str(s, "imsi"), "created", (json_int_t)mcim_now())))
      return MCIM_NO_MEMORY;
  }
  mcim_cause_t rc = k_destroy(t, st, s);
  if (rc != MCIM_OK)
    return rc;
  tre_array_wipe_remove(slots, i);
  return MCIM_OK;
}

mcim_cause_t tre_op_discard(void *ctx, const char *sho, const char *txn)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !sho || (txn && !*txn))
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *slots = json_object_get(st, "slots"), *pending = json_object_get(st, "pending");
  ssize_t i = tre_find(slots, "slot", sho);
  if (i < 0) {
    /* Discarded already by this procedure (a retry): converge on the same answer. */
    bool queued = txn && tre_find2(pending, "to", sho, "txn", txn) >= 0;
    rc = queued ? MCIM_OK : MCIM_NOT_FOUND;
    goto cleanup;
  }
  rc = discard_slot(t, st, slots, pending, (size_t)i, txn);
  /* a new storage key: no copy of the files opens to the discarded MCIM again */
  if (rc == MCIM_OK)
    rc = tre_commit_shred(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: MCIM of slot %s discarded", sho);
cleanup:
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t tre_op_pristine(void *ctx, const char *txn, json_t **removed)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *names = json_array();
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (removed)
    *removed = NULL;
  if (!t || !txn || !*txn || !names)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *slots = json_object_get(st, "slots"), *pending = json_object_get(st, "pending");
  /* Every MCIM, active and inactive (pre-provisioned): "back to the pristine state" leaves
   * only the PCID credential. A retry after success finds no slot and changes nothing. */
  while (rc == MCIM_OK && json_array_size(slots) > 0) {
    const char *sho = tre_str(json_array_get(slots, 0), "slot");
    if (!sho || json_array_append_new(names, json_string(sho)))
      rc = MCIM_INTERNAL;
    if (rc == MCIM_OK)
      rc = discard_slot(t, st, slots, pending, 0, txn);
  }
  if (rc == MCIM_OK && json_array_size(names) > 0)
    rc = tre_commit_shred(t, st);
  if (rc == MCIM_OK) {
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: back to the pristine state (%zu MCIMs removed)",
                   json_array_size(names));
    if (removed) {
      *removed = names;
      names = NULL;
    }
  }
cleanup:
  json_decref(names);
  if (held)
    tre_end(t, st);
  return rc;
}
