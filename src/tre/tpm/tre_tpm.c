/* The TPM TRE (include/mcim/tre.h, docs/tre-tpm.md): the software TRE's document, sealing and
 * operations (src/tre/), with its two keys inside a TPM. This file is the TPM's side of
 * struct tre_keys_ops (tre_priv.h): the keys are made by TPM2_Create under the storage
 * primary (tpm_keys.c) and the document keeps, for each, the TPM's blobs:
 *
 *   "keys": {"attestation": {"tpm_public": B64URL(TPM2B_PUBLIC),
 *                            "tpm_private": B64URL(TPM2B_PRIVATE)},
 *            "ka":          {... the same ...}},
 *   "backend": "tpm"
 *
 * The operations get each key as a JOSE key whose private operations go to the TPM
 * (mcim_jose_key_external): an ES256 signature is TPM2_Sign of the signing input's digest,
 * the ECDH of ECDH-ES is TPM2_ECDH_ZGen, each in the TPM and on a key loaded for that one
 * operation and flushed after it (swtpm has 3 transient slots). The connection is opened
 * by the first key operation of a transaction and closed at its end (tre_end): the TPM
 * serves one connection at a time, and the TRE's lock already orders the transactions of
 * every handle and process.
 *
 * The storage primary is persistent (MCIM_TPM_PRIMARY_HANDLE, tpm_primary.c), not re-created per
 * transaction. TPM2_CreatePrimary of the ECC key is a key generation the TPM did at every
 * transaction (about 40% of swtpm's CPU per change of SHO: bench/tre_backends.sh, docs/tre-tpm.md
 * "Measured"). The two ways to stop paying it per transaction were: keep the connection (and the
 * loaded primary) open for the handle's life, or make the primary persistent. Keeping the
 * connection would hold the TPM for as long as the agent runs wherever the TCTI keeps its
 * connection (/dev/tpm0 without a resource manager takes one opener at a time; swtpm serves one
 * client at a time): `m2me` commands and a second handle on the same TPM would then wait on a
 * connection the agent never closes, while the agent may wait on the TRE's lock they hold (a
 * deadlock). tpm2-tss 3.2.1's swtpm TCTI happens to connect per command (strace: 25 connections
 * for 5 transactions), but the TRE does not depend on which TCTI it is given. So connections stay
 * per transaction and the primary is made persistent once, at manufacture (TPM2_EvictControl in
 * the owner hierarchy), and its name (nameAlg || SHA-256 of its public area) recorded beside each
 * key in the sealed state as "tpm_parent". Each transaction then reads the persistent key's public
 * area (one TPM2_ReadPublic) and refuses to use it unless its name is the recorded one: another
 * key put at the handle is refused with a clear cause, before the TPM is given a blob under it
 * (which it would refuse anyway: the blob's integrity is bound to the primary's seed). Nothing is
 * weaker: the key is the same one (same template, same seed), and a document made before this
 * change (no "tpm_parent") still re-creates its primary per transaction. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_nv.h"
#include "tre/tpm/tpm_quote.h"
#include "tre/tpm/tpm_slot.h"
#include "tre/tre_priv.h"

#define MEMBER_PUBLIC "tpm_public"
#define MEMBER_PRIVATE "tpm_private"
#define MEMBER_PARENT "tpm_parent"

static const char *key_member(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? "attestation" : "ka";
}

static enum mcim_tpm_key_kind key_kind(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? MCIM_TPM_KEY_SIGN : MCIM_TPM_KEY_ECDH;
}

/* What a transaction holds in the TPM (t->keys_ctx): the connection, opened on first use,
 * and a slot's K while Milenage runs on it (k_milenage), flushed at the end. */
struct tpm_txn {
  mcim_tpm_t *tpm;
  mcim_tpm_aes_t *k;
};

static mcim_cause_t connection(struct tre_soft *t, mcim_tpm_t **out)
{
  struct tpm_txn *x = t->keys_ctx;
  char detail[320];
  mcim_cause_t rc = MCIM_OK;

  *out = NULL;
  if (!x) {
    x = calloc(1, sizeof(*x));
    if (!x)
      return MCIM_NO_MEMORY;
    t->keys_ctx = x;
  }
  if (!x->tpm) {
    rc = mcim_tpm_open(t->tcti, &x->tpm, detail, sizeof(detail));
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s", detail);
  }
  *out = x->tpm;
  return rc;
}

static void tpm_end(struct tre_soft *t)
{
  struct tpm_txn *x = t->keys_ctx;
  if (!x)
    return;
  mcim_tpm_aes_free(x->k); /* before the connection it was loaded through */
  mcim_tpm_free(x->tpm);   /* flushes the primary */
  free(x);
  t->keys_ctx = NULL;
}

static void log_tpm(mcim_tpm_t *tpm, mcim_cause_t rc, const char *what)
{
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s: %s", what, mcim_tpm_detail(tpm));
}

/* ---- the blobs in the document ---- */

static mcim_cause_t blob_of(json_t *st, enum mcim_tre_cert which, struct mcim_tpm_blob *out)
{
  json_t *k = json_object_get(json_object_get(st, "keys"), key_member(which));
  mcim_cause_t rc = mcim_tpm_blob_decode(tre_str(k, MEMBER_PUBLIC), tre_str(k, MEMBER_PRIVATE),
                                         out);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s key in the state is not a TPM blob",
                   key_member(which));
  return rc;
}

/* The recorded name of the persistent primary a key was made under; *has is false for a
 * document made before the primary was persistent (no member). */
static mcim_cause_t parent_of(json_t *st, enum mcim_tre_cert which, TPM2B_NAME *out,
                              bool *has)
{
  json_t *k = json_object_get(json_object_get(st, "keys"), key_member(which));
  const char *b64 = tre_str(k, MEMBER_PARENT);
  size_t len = 0;

  memset(out, 0, sizeof(*out));
  *has = b64 != NULL;
  if (!b64)
    return MCIM_OK;
  if (mcim_b64url_decode(b64, strlen(b64), out->name, sizeof(out->name), &len) != MCIM_OK ||
      len != 34) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_KEY_INVALID,
                   "tre: %s key in the state: %s is not a TPM name", key_member(which),
                   MEMBER_PARENT);
    return MCIM_KEY_INVALID;
  }
  out->size = (UINT16)len;
  return MCIM_OK;
}

static mcim_cause_t blob_json(const struct mcim_tpm_blob *blob, const TPM2B_NAME *parent,
                              json_t **out)
{
  char *pub = NULL, *priv = NULL, *name = NULL;
  mcim_cause_t rc = mcim_tpm_blob_encode(blob, &pub, &priv);
  if (rc == MCIM_OK) {
    rc = MCIM_NO_MEMORY;
    name = malloc(mcim_b64url_len(parent->size) + 1);
    if (!name)
      goto cleanup;
    mcim_b64url_encode(parent->name, parent->size, name);
    *out = json_pack("{s:s, s:s, s:s}", MEMBER_PUBLIC, pub, MEMBER_PRIVATE, priv, MEMBER_PARENT,
                     name);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
  }
cleanup:
  free(pub);
  free(priv);
  free(name);
  return rc;
}

/* ---- struct tre_keys_ops ---- */

static mcim_cause_t tpm_create(struct tre_soft *t, json_t **attestation, json_t **ka)
{
  struct mcim_tpm_blob sign = {0}, ecdh = {0};
  TPM2B_NAME parent = {0};
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = connection(t, &tpm);

  if (rc != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_primary_persist(tpm, &parent)) != MCIM_OK) {
    log_tpm(tpm, rc, "cannot make the storage key persistent");
    goto cleanup;
  }
  if ((rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_SIGN, &sign)) != MCIM_OK ||
      (rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_ECDH, &ecdh)) != MCIM_OK) {
    log_tpm(tpm, rc, "cannot create the TRE keys");
    goto cleanup;
  }
  if ((rc = blob_json(&sign, &parent, attestation)) == MCIM_OK)
    rc = blob_json(&ecdh, &parent, ka);
cleanup:
  if (rc != MCIM_OK) {
    json_decref(*attestation);
    *attestation = NULL;
  }
  return rc;
}

static mcim_cause_t tpm_public_key(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                                   EVP_PKEY **out)
{
  struct mcim_tpm_blob blob;
  mcim_cause_t rc = blob_of(st, which, &blob);
  (void)t;
  if (rc == MCIM_OK)
    rc = mcim_tpm_key_public(&blob, key_kind(which), out);
  return rc;
}

/* What an external JOSE key of the TRE needs to reach its key in the TPM. */
struct key_ref {
  struct tre_soft *t;
  enum mcim_tre_cert which;
  struct mcim_tpm_blob blob;
  TPM2B_NAME parent; /* the persistent primary's recorded name, if has_parent */
  bool has_parent;
};

static mcim_cause_t ref_load(struct key_ref *r, mcim_tpm_t **tpm, mcim_tpm_key_t **key)
{
  mcim_cause_t rc = connection(r->t, tpm);
  if (rc != MCIM_OK)
    return rc;
  if (r->has_parent && (rc = mcim_tpm_primary_use(*tpm, &r->parent)) != MCIM_OK) {
    log_tpm(*tpm, rc, "the TRE's storage key");
    return rc;
  }
  rc = mcim_tpm_key_load(*tpm, key_kind(r->which), &r->blob, key);
  if (rc != MCIM_OK)
    log_tpm(*tpm, rc, "cannot load the TRE key");
  return rc;
}

static mcim_cause_t ref_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
  struct key_ref *r = ctx;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  mcim_cause_t rc = ref_load(r, &tpm, &key);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_sign(key, digest, sig)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot sign");
  mcim_tpm_key_free(key);
  return rc;
}

static mcim_cause_t ref_ecdh(void *ctx, const uint8_t x[32], const uint8_t y[32], uint8_t z[32])
{
  struct key_ref *r = ctx;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  mcim_cause_t rc = ref_load(r, &tpm, &key);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_ecdh(key, x, y, z)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot compute the key agreement");
  mcim_tpm_key_free(key);
  return rc;
}

static void ref_free(void *ctx)
{
  free(ctx);
}

static const struct mcim_jose_key_ops tpm_sign_ops = {.sign = ref_sign, .free = ref_free};
static const struct mcim_jose_key_ops tpm_ecdh_ops = {.ecdh = ref_ecdh, .free = ref_free};

static mcim_cause_t tpm_jose(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                             mcim_jose_key_t **out)
{
  struct key_ref *r = calloc(1, sizeof(*r));
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!r)
    goto cleanup;
  r->t = t;
  r->which = which;
  if ((rc = blob_of(st, which, &r->blob)) != MCIM_OK ||
      (rc = parent_of(st, which, &r->parent, &r->has_parent)) != MCIM_OK ||
      (rc = mcim_tpm_key_public(&r->blob, key_kind(which), &pub)) != MCIM_OK)
    goto cleanup;
  /* each key does its one job only: the attestation key signs, the KA key agrees keys */
  rc = mcim_jose_key_external(pub, which == MCIM_TRE_CERT_ATTESTATION ? &tpm_sign_ops
                                                                      : &tpm_ecdh_ops,
                              r, &key);
  r = NULL; /* the key's now, also on failure */
  if (rc != MCIM_OK)
    goto cleanup;
  /* Verifiers find the device's certificate by the kid of what it signs. */
  if (which == MCIM_TRE_CERT_ATTESTATION &&
      (rc = mcim_jose_key_set_kid(key, tre_str(st, "device"))) != MCIM_OK)
    goto cleanup;
  *out = key;
  key = NULL;
cleanup:
  mcim_jose_key_free(key);
  EVP_PKEY_free(pub);
  free(r);
  return rc;
}

/* ---- K in the TPM (docs/tre-tpm.md, "K in the TPM") ---- */

/* The connection, with the persistent storage primary checked against the name recorded at
 * manufacture (that of the KA key's parent: one primary for every key of the TRE). */
static mcim_cause_t storage_use(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm)
{
  TPM2B_NAME parent;
  bool has = false;
  mcim_cause_t rc = parent_of(st, MCIM_TRE_CERT_KA, &parent, &has);
  if (rc == MCIM_OK)
    rc = connection(t, tpm);
  if (rc == MCIM_OK && has && (rc = mcim_tpm_primary_use(*tpm, &parent)) != MCIM_OK)
    log_tpm(*tpm, rc, "the TRE's storage key");
  return rc;
}

static mcim_cause_t tpm_storage_public(struct tre_soft *t, json_t *st, EVP_PKEY **out)
{
  const TPM2B_PUBLIC *pub = NULL;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_primary(tpm, NULL, &pub)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot read the storage key");
  if (rc != MCIM_OK)
    return rc;
  const TPMS_ECC_POINT *p = &pub->publicArea.unique.ecc;
  if (pub->publicArea.type != TPM2_ALG_ECC || p->x.size != 32 || p->y.size != 32)
    return MCIM_KEY_INVALID;
  return mcim_p256_public_pkey(p->x.buffer, p->y.buffer, out);
}

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

static mcim_cause_t tpm_k_milenage(struct tre_soft *t, json_t *st, const json_t *j,
                                   mcim_milenage_t **out)
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
  rc = storage_use(t, st, &tpm);
  if (rc != MCIM_OK)
    goto cleanup;
  x = t->keys_ctx;
  mcim_tpm_aes_free(x->k); /* one slot key loaded at a time (swtpm: 3 transient slots) */
  x->k = NULL;
  /* this slot's K only, under its own key and with its own authorisation: no other slot's
   * object is loaded */
  rc = mcim_tpm_slot_load(tpm, &slot, &blob, &x->k);
  if (rc != MCIM_OK) {
    log_tpm(tpm, rc, "cannot load the slot's K");
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
static mcim_cause_t slot_evict(struct tre_soft *t, json_t *st, const json_t *j)
{
  struct mcim_tpm_slot slot;
  bool has_slot = false, gone = false;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = slot_of(j, &slot, &has_slot);

  if (rc != MCIM_OK || !has_slot)
    return rc; /* no slot key recorded (a malformed entry): nothing in the TPM to destroy */
  rc = storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_destroy(tpm, &slot, &gone)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot destroy a slot's storage key");
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
static mcim_cause_t tpm_k_destroy(struct tre_soft *t, json_t *st, const json_t *j)
{
  if (offered_slot(st, j))
    return MCIM_OK;
  return slot_evict(t, st, j);
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
  if ((rc = storage_use(t, st, &tpm)) != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_slot_create(tpm, slot)) != MCIM_OK) {
    log_tpm(tpm, rc, "cannot make a slot key");
    goto cleanup;
  }
  made = true;
  if ((rc = tre_tpm_quote_key(t, st, &tpm, &ak)) != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_tpm_slot_certify(tpm, slot, ak, qual, qlen, &att, &alen, &sig, &slen)) !=
          MCIM_OK ||
      (rc = mcim_tpm_slot_public(tpm, slot, &pub, NULL)) != MCIM_OK) {
    log_tpm(tpm, rc, "cannot certify a new slot key");
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
    log_tpm(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
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

static mcim_cause_t tpm_txn_slot_create(struct tre_soft *t, json_t *st, const char *txn,
                                        json_t **out)
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
    rc = storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_import_own(tpm, &slot, &dup, &blob)) != MCIM_OK) {
    log_tpm(tpm, rc,
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
static mcim_cause_t tpm_k_import_txn(struct tre_soft *t, json_t *st, const char *txn,
                                     const json_t *j, json_t **out)
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
static mcim_cause_t tpm_k_import_pcid(struct tre_soft *t, json_t *st, const json_t *j, json_t **out)
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
static mcim_cause_t tpm_k_import_pcid_renewal(struct tre_soft *t, json_t *st, const char *txn,
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
static mcim_cause_t tpm_pcid_slot_offer(struct tre_soft *t, json_t *st, const char *txn,
                                        json_t **offer, bool *made)
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
    if ((rc = slot_evict(t, st, cur)) != MCIM_OK)
      return rc;
    json_object_del(st, TRE_PCID_OFFER);
    *made = true;
  }
  if ((rc = mcim_tpm_pcid_slot_qual(txn, qual)) != MCIM_OK ||
      (rc = certified_slot_make(t, st, qual, sizeof(qual), txn, "the renewed PCID credential",
                                &slot, &tpm, &rec)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *offer = json_pack("{s:O, s:O, s:O}", "public", json_object_get(rec, "public"), "attest",
                     json_object_get(rec, "attest"), "signature",
                     json_object_get(rec, "signature"));
  if (!*offer || json_object_set_new(rec, "txn", json_string(txn)) != 0 ||
      json_object_set(st, TRE_PCID_OFFER, rec) != 0) {
    json_decref(*offer);
    *offer = NULL;
    json_object_del(st, TRE_PCID_OFFER);
    if (mcim_tpm_slot_destroy(tpm, &slot, NULL) != MCIM_OK)
      log_tpm(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
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
  mcim_cause_t rc = storage_use(t, st, &tpm);

  if (rc == MCIM_OK && (rc = mcim_tpm_slot_create(tpm, &slot)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot make the PCID's slot key");
  made = rc == MCIM_OK;
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_public(tpm, &slot, &pub, NULL)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot read the PCID's slot key");
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
    log_tpm(tpm, MCIM_TPM_ERROR, "cannot destroy the new slot key again");
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
    rc = storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_slot_certify(tpm, &slot, ak, qual, qual_len, &att, &alen,
                                                   &sig, &slen)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot certify the PCID's slot key");
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

/* ---- per-procedure KA keys (tre_txn.c) ---- */

/* A new ECDH key under the storage primary, as the KA key is, for one procedure: the
 * document keeps its blobs and drops them when the procedure ends. */
static mcim_cause_t tpm_txn_ka_create(struct tre_soft *t, json_t *st, json_t **out)
{
  struct mcim_tpm_blob blob = {0};
  TPM2B_NAME parent;
  bool has = false;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = parent_of(st, MCIM_TRE_CERT_KA, &parent, &has);

  if (rc == MCIM_OK)
    rc = storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_ECDH, &blob)) != MCIM_OK)
    log_tpm(tpm, rc, "cannot create a procedure's KA key");
  if (rc == MCIM_OK && has)
    rc = blob_json(&blob, &parent, out);
  else if (rc == MCIM_OK) { /* a document from before the persistent primary */
    char *pub = NULL, *priv = NULL;
    if ((rc = mcim_tpm_blob_encode(&blob, &pub, &priv)) == MCIM_OK) {
      *out = json_pack("{s:s, s:s}", MEMBER_PUBLIC, pub, MEMBER_PRIVATE, priv);
      rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
    }
    free(pub);
    free(priv);
  }
  mcim_wipe(&blob, sizeof(blob));
  return rc;
}

static mcim_cause_t tpm_txn_ka_jose(struct tre_soft *t, json_t *st, json_t *key,
                                    mcim_jose_key_t **out)
{
  struct key_ref *r = calloc(1, sizeof(*r));
  EVP_PKEY *pub = NULL;
  const char *name = tre_str(key, MEMBER_PARENT);
  size_t len = 0;
  mcim_cause_t rc = MCIM_NO_MEMORY;
  (void)st;

  if (!r)
    goto cleanup;
  r->t = t;
  r->which = MCIM_TRE_CERT_KA;
  r->has_parent = name != NULL;
  rc = MCIM_KEY_INVALID;
  if (name && (mcim_b64url_decode(name, strlen(name), r->parent.name, sizeof(r->parent.name),
                                  &len) != MCIM_OK ||
               len != 34))
    goto cleanup;
  r->parent.size = (UINT16)len;
  if ((rc = mcim_tpm_blob_decode(tre_str(key, MEMBER_PUBLIC), tre_str(key, MEMBER_PRIVATE),
                                 &r->blob)) != MCIM_OK ||
      (rc = mcim_tpm_key_public(&r->blob, MCIM_TPM_KEY_ECDH, &pub)) != MCIM_OK)
    goto cleanup;
  rc = mcim_jose_key_external(pub, &tpm_ecdh_ops, r, out);
  r = NULL; /* the key's now, also on failure */
cleanup:
  EVP_PKEY_free(pub);
  free(r);
  return rc;
}

const struct tre_keys_ops tre_keys_tpm = {
    .name = TRE_BACKEND_TPM,
    .create = tpm_create,
    .public_key = tpm_public_key,
    .jose = tpm_jose,
    .end = tpm_end,
    .storage_public = tpm_storage_public,
    .k_milenage = tpm_k_milenage,
    .k_destroy = tpm_k_destroy,
    .fresh_create = tre_tpm_fresh_create, /* tre_tpm_nv.c */
    .fresh_check = tre_tpm_fresh_check,
    .fresh_advance = tre_tpm_fresh_advance,
    .txn_ka_create = tpm_txn_ka_create,
    .txn_ka_jose = tpm_txn_ka_jose,
    .k_import_txn = tpm_k_import_txn,
    .k_import_pcid = tpm_k_import_pcid,
    .k_import_pcid_renewal = tpm_k_import_pcid_renewal,
    .pcid_slot_offer = tpm_pcid_slot_offer,
    .txn_slot_create = tpm_txn_slot_create,
    .txn_slot_destroy = slot_evict, /* the same members: handle, name, authValue */
};

/* ---- manufacture and open ---- */

static bool tcti_given(const char *tcti, const char *dir)
{
  if (tcti && *tcti)
    return true;
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INVALID_ARGUMENT,
                 "tre: %s: a TPM TRE needs the TCTI of its TPM", dir ? dir : "?");
  return false;
}

mcim_cause_t mcim_tre_tpm_create(const char *dir, const char *tcti, const char *device,
                                 const char *model, const char *owner_jwk,
                                 const char *operators_ca_pem, const char *m2mes_ca_pem)
{
  char detail[320];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!tcti_given(tcti, dir))
    return rc;
  rc = mcim_tss2_load(detail, sizeof(detail));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s", detail);
    return rc;
  }
  return tre_create(&tre_keys_tpm, tcti, dir, device, model, owner_jwk, operators_ca_pem,
                    m2mes_ca_pem);
}

mcim_cause_t mcim_tre_tpm_open(const char *dir, const char *tcti, mcim_tre_t **out)
{
  char detail[320];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (out)
    *out = NULL;
  if (!tcti_given(tcti, dir))
    return rc;
  /* tpm2-tss now, while the caller (the agent's boot) has one thread: it sets TSS2_LOG */
  rc = mcim_tss2_load(detail, sizeof(detail));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s", detail);
    return rc;
  }
  return tre_open(&tre_keys_tpm, tcti, dir, out);
}

/* ---- for tre_quote.c (measured boot, TPM2_Quote) ---- */

mcim_cause_t tre_tpm_connection(struct tre_soft *t, mcim_tpm_t **tpm)
{
  return connection(t, tpm);
}
