/* The TPM TRE's K (docs/tre-tpm.md, "K in the TPM", "Slots in the TPM", "The PCID
 * credential's K"): each K is imported under a slot key of its own, certified by the
 * restricted attestation key, never under the storage primary. Here: a package's "k_tpm"
 * decoded (mcim_tpm_dup_decode); K imported at stage, into the PCID credential and at its
 * renewal; a slot's K loaded for Milenage; its slot key evicted when the MCIM leaves the
 * document; the slot keys offered in a procedure's quote and a renewal's request, and the
 * PCID's made at enrolment. Apart from tre_tpm.c (the connection, the TRE's own keys,
 * manufacture and open), whose struct tre_keys_ops names these operations. */
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_quote.h"
#include "tre/tpm/tpm_slot.h"
#include "tre/tpm/tre_tpm_priv.h"
#include "tre/tre_priv.h"

/* A package's "k_tpm" {"public", "duplicate", "seed"} (base64url of the marshalled
 * TPM2B_PUBLIC, of the TPM2B_PRIVATE and of the seed's bytes): peer input, refused whole
 * (MCIM_KEY_INVALID) unless exactly that, an AES-128 key of our attributes. */
mcim_cause_t mcim_tpm_dup_decode(const json_t *j, struct mcim_tpm_dup *out)
{
  struct mcim_tpm_blob b;
  size_t len = 0;
  const char *seed = json_string_value(json_object_get(j, MCIM_TPM_DUP_SEED));
  mcim_cause_t rc = MCIM_KEY_INVALID;

  memset(out, 0, sizeof(*out));
  if (!json_is_object(j) || json_object_size(j) != 3 || !seed)
    return rc;
  rc = mcim_tpm_blob_decode(json_string_value(json_object_get(j, MCIM_TPM_DUP_PUBLIC)),
                            json_string_value(json_object_get(j, MCIM_TPM_DUP_DUPLICATE)), &b);
  if (rc != MCIM_OK)
    return rc == MCIM_UNSUPPORTED ? rc : MCIM_KEY_INVALID;
  rc = MCIM_KEY_INVALID;
  const TPMT_PUBLIC *p = &b.pub.publicArea;
  if (p->type != TPM2_ALG_SYMCIPHER || p->nameAlg != TPM2_ALG_SHA256 ||
      p->objectAttributes != MCIM_TPM_AES_ATTRS || p->authPolicy.size != 0 ||
      p->parameters.symDetail.sym.algorithm != TPM2_ALG_AES ||
      p->parameters.symDetail.sym.keyBits.aes != 128 ||
      p->parameters.symDetail.sym.mode.aes != TPM2_ALG_ECB)
    return rc;
  if (mcim_b64url_decode(seed, strlen(seed), out->seed.secret, sizeof(out->seed.secret), &len) !=
          MCIM_OK ||
      len == 0)
    return rc;
  out->seed.size = (UINT16)len;
  out->pub = b.pub;
  out->dup = b.priv;
  return MCIM_OK;
}

/* ---- each slot under its own storage key (docs/tre-tpm.md, "Slots in the TPM") ---- */

#define MEMBER_HANDLE "tpm_handle"
#define MEMBER_AUTH "tpm_auth"

/* The slot key a K blob of the document is under: *has false for a blob imported under the
 * storage primary, before slot keys. */
static mcim_cause_t slot_of(const json_t *j, struct mcim_tpm_slot *s, bool *has)
{
  const char *name = json_string_value(json_object_get(j, MEMBER_PARENT));
  const char *auth = json_string_value(json_object_get(j, MEMBER_AUTH));
  json_int_t handle = json_integer_value(json_object_get(j, MEMBER_HANDLE));
  size_t nlen = 0, alen = 0;

  memset(s, 0, sizeof(*s));
  *has = json_object_get(j, MEMBER_HANDLE) != NULL;
  if (!*has)
    return MCIM_OK;
  if (!name || !auth || handle < MCIM_TPM_SLOT_HANDLE_FIRST ||
      handle >= MCIM_TPM_SLOT_HANDLE_FIRST + MCIM_TPM_SLOT_HANDLES ||
      mcim_b64url_decode(name, strlen(name), s->name.name, sizeof(s->name.name), &nlen) !=
          MCIM_OK ||
      nlen != 34 ||
      mcim_b64url_decode(auth, strlen(auth), s->auth, sizeof(s->auth), &alen) != MCIM_OK ||
      alen != MCIM_TPM_SLOT_AUTH_LEN) {
    mcim_wipe(s, sizeof(*s));
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_KEY_INVALID,
                   "tre: a slot's K in the state: its slot key is not recorded right");
    return MCIM_KEY_INVALID;
  }
  s->handle = (TPM2_HANDLE)handle;
  s->name.size = (UINT16)nlen;
  return MCIM_OK;
}

static mcim_cause_t slot_json(const struct mcim_tpm_blob *blob, const struct mcim_tpm_slot *s,
                              json_t **out)
{
  char *pub = NULL, *priv = NULL, *name = NULL, *auth = NULL;
  mcim_cause_t rc = mcim_tpm_blob_encode(blob, &pub, &priv);
  if (rc != MCIM_OK)
    return rc;
  rc = MCIM_NO_MEMORY;
  name = malloc(mcim_b64url_len(s->name.size) + 1);
  auth = malloc(mcim_b64url_len(sizeof(s->auth)) + 1);
  if (name && auth) {
    mcim_b64url_encode(s->name.name, s->name.size, name);
    mcim_b64url_encode(s->auth, sizeof(s->auth), auth);
    *out = json_pack("{s:s, s:s, s:I, s:s, s:s}", MEMBER_PUBLIC, pub, MEMBER_PRIVATE, priv,
                     MEMBER_HANDLE, (json_int_t)s->handle, MEMBER_PARENT, name, MEMBER_AUTH, auth);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
  }
  free(pub);
  free(priv);
  free(name);
  if (auth)
    mcim_wipe(auth, strlen(auth));
  free(auth);
  return rc;
}

mcim_cause_t tpm_k_milenage(struct tre_soft *t, json_t *st, const json_t *j, mcim_milenage_t **out)
{
  struct mcim_tpm_blob blob;
  struct mcim_tpm_slot slot;
  bool has_slot = false;
  mcim_tpm_t *tpm = NULL;
  struct tpm_txn *x = NULL;
  mcim_cause_t rc = mcim_tpm_blob_decode(tre_str((json_t *)j, MEMBER_PUBLIC),
                                         tre_str((json_t *)j, MEMBER_PRIVATE), &blob);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: a slot's K in the state is not a TPM blob");
    return rc;
  }
  if ((rc = slot_of(j, &slot, &has_slot)) != MCIM_OK)
    return rc;
  if (!has_slot) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_KEY_INVALID,
                   "tre: a slot's K in the state has no slot key of its own");
    return MCIM_KEY_INVALID;
  }
  rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc != MCIM_OK)
    goto cleanup;
  x = t->keys_ctx;
  mcim_tpm_aes_free(x->k); /* one slot key loaded at a time (swtpm: 3 transient slots) */
  x->k = NULL;
  /* this slot's K only, under its own key and with its own authorisation: no other slot's
   * object is loaded */
  rc = mcim_tpm_slot_load(tpm, &slot, &blob, &x->k);
  if (rc != MCIM_OK) {
    tre_tpm_log(tpm, rc, "cannot load the slot's K");
    if (rc != MCIM_TPM_UNREACHABLE)
      rc = MCIM_TPM_ERROR;
    goto cleanup;
  }
  rc = mcim_milenage_new_cipher(mcim_tpm_aes_cipher(x->k), out);
cleanup:
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}

/* Evict the slot key a K blob (or a procedure's offer) of the document records. */
mcim_cause_t tpm_slot_evict(struct tre_soft *t, json_t *st, const json_t *j)
{
  struct mcim_tpm_slot slot;
  bool has_slot = false, gone = false;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = slot_of(j, &slot, &has_slot);

  if (rc != MCIM_OK || !has_slot)
    return rc; /* no slot key recorded (a malformed entry): nothing in the TPM to destroy */
  rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_destroy(tpm, &slot, &gone)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot destroy a slot's storage key");
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, NULL, 0, rc, "tre: slot key 0x%08x %s", (unsigned)slot.handle,
                   gone ? "destroyed (TPM2_EvictControl)" : "was gone already");
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}

/* Whether `j` is under the slot key a procedure's quote offered and still holds (a package
 * refused after its K was imported under it): that key is the procedure's, destroyed when the
 * procedure ends (txn_slot_destroy), and a retried stage imports under it again. */
static bool offered_slot(json_t *st, const json_t *j)
{
  const json_t *k, *e, *s;
  size_t i;
  json_int_t handle = json_integer_value(json_object_get(j, MEMBER_HANDLE));
  const char *name = json_string_value(json_object_get(j, MEMBER_PARENT));
  json_array_foreach (json_object_get(st, "txn_keys"), i, e) {
    s = json_object_get(e, "slot");
    k = s ? json_object_get(s, MEMBER_PARENT) : NULL;
    if (name && json_is_string(k) &&
        json_integer_value(json_object_get(s, MEMBER_HANDLE)) == handle &&
        strcmp(json_string_value(k), name) == 0)
      return true;
  }
  return false;
}

/* A staged or installed MCIM leaves the document (discard, unstage, replaced, dropped):
 * its slot key is evicted first, so that no copy of its blob, in any state, loads again. */
mcim_cause_t tpm_k_destroy(struct tre_soft *t, json_t *st, const json_t *j)
{
  if (offered_slot(st, j))
    return MCIM_OK;
  return tpm_slot_evict(t, st, j);
}

/* ---- the procedure's slot key, offered in its quote (docs/tre-tpm.md, "Slots in the TPM") ----
 *
 * The SHO's blob used to be wrapped to the storage primary, whose USER role is free: whoever
 * held the blob (the agent at stage, a kept package) could TPM2_Rewrap it to no parent and
 * read K. An enrolled TRE therefore makes the MCIM's slot key at the procedure's quote and has
 * the restricted attestation key certify it over the txn; the SHO checks that certification
 * and wraps K to that key, whose policy admits no TPM2_Rewrap; the TRE imports it there. */

static bool enrolled(json_t *st)
{
  return json_object_get(json_object_get(st, "keys"), "quote") != NULL;
}

/* A new slot key, certified by the restricted attestation key over `qual`: *rec is its record
 * with the certification {"tpm_handle", "tpm_parent", "tpm_auth", "public", "attest",
 * "signature"} and *slot the key (destroyed again by the caller if it cannot keep it). On a
 * failure nothing is left in the TPM. `what` names the key in the logs. */
static mcim_cause_t certified_slot_make(struct tre_soft *t, json_t *st, const uint8_t *qual,
                                        size_t qlen, const char *txn, const char *what,
                                        struct mcim_tpm_slot *slot, mcim_tpm_t **tpm_out,
                                        json_t **rec)
{
  uint8_t *att = NULL, *sig = NULL;
  size_t alen = 0, slen = 0;
  TPM2B_PUBLIC pub;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *ak = NULL;
  char *p64 = NULL, *a64 = NULL, *s64 = NULL, *n64 = NULL, *auth64 = NULL;
  bool made = false;
  mcim_cause_t rc;

  *rec = NULL;
  if ((rc = tre_tpm_storage_use(t, st, &tpm)) != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_slot_create(tpm, slot)) != MCIM_OK) {
    tre_tpm_log(tpm, rc, "cannot make a slot key");
    goto cleanup;
  }
  made = true;
  if ((rc = tre_tpm_quote_key(t, st, &tpm, &ak)) != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_slot_certify(tpm, slot, ak, qual, qlen, &att, &alen, &sig, &slen)) !=
          MCIM_OK ||
      (rc = mcim_tpm_slot_public(tpm, slot, &pub, NULL)) != MCIM_OK) {
    tre_tpm_log(tpm, rc, "cannot certify a new slot key");
    goto cleanup;
  }
  if ((rc = mcim_tpm_public_encode(&pub, &p64)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  a64 = mcim_b64url_dup(att, alen);
  s64 = mcim_b64url_dup(sig, slen);
  n64 = mcim_b64url_dup(slot->name.name, slot->name.size);
  auth64 = mcim_b64url_dup(slot->auth, sizeof(slot->auth));
  if (a64 && s64 && n64 && auth64)
    *rec = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", MEMBER_HANDLE, (json_int_t)slot->handle,
                     MEMBER_PARENT, n64, MEMBER_AUTH, auth64, "public", p64, "attest", a64,
                     "signature", s64);
  if (*rec) {
    rc = MCIM_OK;
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc,
                   "tre: slot key 0x%08x made for %s, certified by the attestation key",
                   (unsigned)slot->handle, what);
  }
cleanup:
  mcim_tpm_key_free(ak);
  if (rc != MCIM_OK && made && mcim_tpm_slot_destroy(tpm, slot, NULL) != MCIM_OK)
    tre_tpm_log(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
  if (auth64)
    mcim_wipe(auth64, strlen(auth64));
  free(auth64);
  free(n64);
  free(p64);
  free(a64);
  free(s64);
  free(att);
  free(sig);
  *tpm_out = tpm;
  return rc;
}

mcim_cause_t tpm_txn_slot_create(struct tre_soft *t, json_t *st, const char *txn, json_t **out)
{
  struct mcim_tpm_slot slot = {0};
  uint8_t qual[MCIM_TPM_SLOT_QUAL_LEN];
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc;

  *out = NULL;
  if (!enrolled(st)) {
    /* no restricted key to certify with: a TPM TRE that was never enrolled does not quote */
    rc = MCIM_TPM_ENROLMENT_REQUIRED;
    mcim_log_event(MCIM_LOG_ERROR, txn, 0, rc,
                   "tre: no attestation key (the TPM was never enrolled): no quote, no slot key");
    return rc;
  }
  rc = mcim_tpm_slot_qual(txn, qual);
  if (rc == MCIM_OK)
    rc = certified_slot_make(t, st, qual, sizeof(qual), txn, "this procedure", &slot, &tpm, out);
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}

/* K wrapped to the slot key `offered` records ({"tpm_handle", "tpm_parent", "tpm_auth"}):
 * TPM2_Import under it, no TPM2_Rewrap; *out is what a slot (or the PCID credential) keeps. */
static mcim_cause_t k_import_under(struct tre_soft *t, json_t *st, const char *txn,
                                   const json_t *offered, const json_t *j, json_t **out)
{
  struct mcim_tpm_dup dup;
  struct mcim_tpm_blob blob = {0};
  struct mcim_tpm_slot slot = {0};
  bool has = false;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = mcim_tpm_dup_decode(j, &dup);
  if (rc == MCIM_OK)
    rc = slot_of(offered, &slot, &has);
  if (rc == MCIM_OK && !has)
    rc = MCIM_KEY_INVALID;
  if (rc == MCIM_OK)
    rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_import_own(tpm, &slot, &dup, &blob)) != MCIM_OK) {
    tre_tpm_log(tpm, rc,
                txn ? "the package's K does not import under the procedure's slot key"
                    : "the PCID credential's K does not import under the PCID's slot key");
    /* wrapped to another key (the storage primary, another TPM's), or altered */
    if (rc == MCIM_TPM_ERROR)
      rc = MCIM_KEY_INVALID;
  }
  if (rc == MCIM_OK)
    rc = slot_json(&blob, &slot, out);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc,
                   "tre: K under the %s certified slot key 0x%08x (no TPM2_Rewrap)",
                   txn ? "procedure's" : "PCID's", (unsigned)slot.handle);
  mcim_wipe(&slot, sizeof(slot));
  mcim_wipe(&blob, sizeof(blob));
  mcim_wipe(&dup, sizeof(dup));
  return rc;
}

/* stage: K under the slot key this procedure's quote offered, as the SHO wrapped it: TPM2_Import
 * under it, no TPM2_Rewrap. The TRE takes K no other way: a blob wrapped to the storage primary
 * (an SHO that ignored the offer) is refused, since such a blob gives K to anyone who can
 * TPM2_Rewrap it to no parent. The key is the staged MCIM's once stage writes it
 * (tre_txn_slot_taken), the txn's until then. */
mcim_cause_t tpm_k_import_txn(struct tre_soft *t, json_t *st, const char *txn, const json_t *j,
                              json_t **out)
{
  const json_t *offered = tre_txn_slot(st, txn);
  if (!offered) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_FORBIDDEN,
                   "tre: k_tpm for a procedure whose quote offered no slot key: the TRE takes K "
                   "only under its procedure's certified slot key");
    return MCIM_FORBIDDEN;
  }
  return k_import_under(t, st, txn, offered, j, out);
}

/* The PCID credential's K (docs/tre-tpm.md, "The PCID credential's K"): under the PCID's slot
 * key, made at enrolment and certified by the AK (tre_tpm_pcid_slot_*), which the M2MES wrapped
 * K to. A TRE without one (never enrolled) takes no PCID credential: it has nothing the M2MES
 * could have wrapped K to. */
mcim_cause_t tpm_k_import_pcid(struct tre_soft *t, json_t *st, const json_t *j, json_t **out)
{
  const json_t *rec = json_object_get(st, TRE_PCID_SLOT);
  if (!rec) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_TPM_SLOT_KEY_MISSING,
                   "tre: the PCID credential's k_tpm, and this TRE has no PCID slot key (never "
                   "enrolled)");
    return MCIM_TPM_SLOT_KEY_MISSING;
  }
  return k_import_under(t, st, NULL, rec, j, out);
}

/* A renewal's k_tpm: under the slot key the renewal request of `txn` offered (TRE_PCID_OFFER),
 * which the issuer checked and wrapped K to; *out as tpm_k_import_pcid's. */
mcim_cause_t tpm_k_import_pcid_renewal(struct tre_soft *t, json_t *st, const char *txn,
                                       const json_t *j, json_t **out)
{
  const json_t *rec = json_object_get(st, TRE_PCID_OFFER);
  const char *for_txn = tre_str((json_t *)rec, "txn");
  if (!rec || !txn || !for_txn || strcmp(for_txn, txn) != 0) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_TPM_SLOT_KEY_MISSING,
                   "tre: a renewed PCID credential's k_tpm, and this renewal's request offered "
                   "no slot key");
    return MCIM_TPM_SLOT_KEY_MISSING;
  }
  return k_import_under(t, st, NULL, rec, j, out);
}

/* The renewal request's slot key (tre_op_sign of an mcim-renew+jwt): made once per renewal txn
 * and certified by the AK over SHA-256("mcim-pcid-slot" || 0x00 || txn); an offer of another
 * renewal that received nothing is destroyed first. *offer = {"public", "attest",
 * "signature"}; *made when the document changed. */
mcim_cause_t tpm_pcid_slot_offer(struct tre_soft *t, json_t *st, const char *txn, json_t **offer,
                                 bool *made)
{
  struct mcim_tpm_slot slot = {0};
  uint8_t qual[MCIM_TPM_SLOT_QUAL_LEN];
  mcim_tpm_t *tpm = NULL;
  json_t *cur = json_object_get(st, TRE_PCID_OFFER), *rec = NULL;
  mcim_cause_t rc;

  *offer = NULL;
  *made = false;
  if (!txn || !*txn)
    return MCIM_INVALID_ARGUMENT;
  if (cur && tre_str(cur, "txn") && strcmp(tre_str(cur, "txn"), txn) == 0) {
    *offer = json_pack("{s:s, s:s, s:s}", "public", tre_str(cur, "public"), "attest",
                       tre_str(cur, "attest"), "signature", tre_str(cur, "signature"));
    return *offer ? MCIM_OK : MCIM_NO_MEMORY;
  }
  if (!enrolled(st)) {
    mcim_log_event(MCIM_LOG_ERROR, txn, 0, MCIM_TPM_ENROLMENT_REQUIRED,
                   "tre: no attestation key (the TPM was never enrolled): no slot key for a "
                   "renewed PCID credential");
    return MCIM_TPM_ENROLMENT_REQUIRED;
  }
  if (cur) { /* another renewal's, which never got its package */
    if ((rc = tpm_slot_evict(t, st, cur)) != MCIM_OK)
      return rc;
    json_object_del(st, TRE_PCID_OFFER);
    *made = true;
  }
  if ((rc = mcim_tpm_pcid_slot_qual(txn, qual)) != MCIM_OK ||
      (rc = certified_slot_make(t, st, qual, sizeof(qual), txn, "the renewed PCID credential",
                                &slot, &tpm, &rec)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *offer =
      json_pack("{s:O, s:O, s:O}", "public", json_object_get(rec, "public"), "attest",
                json_object_get(rec, "attest"), "signature", json_object_get(rec, "signature"));
  if (!*offer || json_object_set_new(rec, "txn", json_string(txn)) != 0 ||
      json_object_set(st, TRE_PCID_OFFER, rec) != 0) {
    json_decref(*offer);
    *offer = NULL;
    json_object_del(st, TRE_PCID_OFFER);
    if (mcim_tpm_slot_destroy(tpm, &slot, NULL) != MCIM_OK)
      tre_tpm_log(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
    goto cleanup;
  }
  *made = true;
  rc = MCIM_OK;
cleanup:
  if (rc == MCIM_OK)
    json_decref(rec); /* the document holds it */
  else
    tre_json_wipe_free(rec); /* its tpm_auth, kept nowhere */
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}

/* ---- the PCID's slot key, made at enrolment ---- */

mcim_cause_t tre_tpm_pcid_slot_create(struct tre_soft *t, json_t *st)
{
  struct mcim_tpm_slot slot = {0};
  TPM2B_PUBLIC pub;
  mcim_tpm_t *tpm = NULL;
  char *p64 = NULL, *n64 = NULL, *auth64 = NULL;
  bool made = false;
  mcim_cause_t rc = tre_tpm_storage_use(t, st, &tpm);

  if (rc == MCIM_OK && (rc = mcim_tpm_slot_create(tpm, &slot)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot make the PCID's slot key");
  made = rc == MCIM_OK;
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_public(tpm, &slot, &pub, NULL)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot read the PCID's slot key");
  if (rc == MCIM_OK)
    rc = mcim_tpm_public_encode(&pub, &p64);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  n64 = mcim_b64url_dup(slot.name.name, slot.name.size);
  auth64 = mcim_b64url_dup(slot.auth, sizeof(slot.auth));
  if (n64 && auth64 &&
      json_object_set_new(st, TRE_PCID_SLOT,
                          json_pack("{s:I, s:s, s:s, s:s}", MEMBER_HANDLE, (json_int_t)slot.handle,
                                    MEMBER_PARENT, n64, MEMBER_AUTH, auth64, "public", p64)) == 0)
    rc = MCIM_OK;
  if (rc == MCIM_OK)
    mcim_log_info("tre: slot key 0x%08x made for the PCID credential's K", (unsigned)slot.handle);
cleanup:
  if (rc != MCIM_OK && made && mcim_tpm_slot_destroy(tpm, &slot, NULL) != MCIM_OK)
    tre_tpm_log(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
  if (auth64)
    mcim_wipe(auth64, strlen(auth64));
  free(auth64);
  free(n64);
  free(p64);
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}

mcim_cause_t tre_tpm_pcid_slot_certify(struct tre_soft *t, json_t *st, mcim_tpm_key_t *ak,
                                       const uint8_t *qual, size_t qual_len, json_t **out)
{
  struct mcim_tpm_slot slot;
  uint8_t *att = NULL, *sig = NULL;
  size_t alen = 0, slen = 0;
  bool has = false;
  mcim_tpm_t *tpm = NULL;
  char *a64 = NULL, *s64 = NULL;
  const json_t *rec = json_object_get(st, TRE_PCID_SLOT);
  mcim_cause_t rc = slot_of(rec, &slot, &has);

  *out = NULL;
  if (rc == MCIM_OK && !has)
    rc = MCIM_TPM_SLOT_KEY_MISSING;
  if (rc == MCIM_OK)
    rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_certify(tpm, &slot, ak, qual, qual_len, &att, &alen,
                                                   &sig, &slen)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot certify the PCID's slot key");
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  a64 = mcim_b64url_dup(att, alen);
  s64 = mcim_b64url_dup(sig, slen);
  /* a copy of the public area: tre_end() wipes every string of the document */
  if (a64 && s64 && tre_str((json_t *)rec, "public"))
    *out = json_pack("{s:s, s:s, s:s}", "public", tre_str((json_t *)rec, "public"), "attest", a64,
                     "signature", s64);
  if (*out)
    rc = MCIM_OK;
cleanup:
  free(att);
  free(sig);
  free(a64);
  free(s64);
  mcim_wipe(&slot, sizeof(slot));
  return rc;
}
