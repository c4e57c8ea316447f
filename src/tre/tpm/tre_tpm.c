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
 * change (no "tpm_parent") still re-creates its primary per transaction.
 *
 * This file: the connection, the keys' blobs, the TRE's two keys and the procedures' KA keys,
 * manufacture and open. K in the TPM under slot keys (import, Milenage, destruction, the slot
 * keys offered in quotes and renewals) is tre_tpm_slots.c's; what they share is in
 * tre_tpm_priv.h. */
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
#include "tre/tpm/tre_tpm_priv.h"
#include "tre/tre_priv.h"

static const char *key_member(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? "attestation" : "ka";
}

static enum mcim_tpm_key_kind key_kind(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? MCIM_TPM_KEY_SIGN : MCIM_TPM_KEY_ECDH;
}

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

void tre_tpm_log(mcim_tpm_t *tpm, mcim_cause_t rc, const char *what)
{
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s: %s", what, mcim_tpm_detail(tpm));
}

/* ---- the blobs in the document ---- */

static mcim_cause_t blob_of(json_t *st, enum mcim_tre_cert which, struct mcim_tpm_blob *out)
{
  json_t *k = json_object_get(json_object_get(st, "keys"), key_member(which));
  mcim_cause_t rc =
      mcim_tpm_blob_decode(tre_str(k, MEMBER_PUBLIC), tre_str(k, MEMBER_PRIVATE), out);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s key in the state is not a TPM blob",
                   key_member(which));
  return rc;
}

/* The recorded name of the persistent primary a key was made under; *has is false for a
 * document made before the primary was persistent (no member). */
static mcim_cause_t parent_of(json_t *st, enum mcim_tre_cert which, TPM2B_NAME *out, bool *has)
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
    *out =
        json_pack("{s:s, s:s, s:s}", MEMBER_PUBLIC, pub, MEMBER_PRIVATE, priv, MEMBER_PARENT, name);
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
    tre_tpm_log(tpm, rc, "cannot make the storage key persistent");
    goto cleanup;
  }
  if ((rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_SIGN, &sign)) != MCIM_OK ||
      (rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_ECDH, &ecdh)) != MCIM_OK) {
    tre_tpm_log(tpm, rc, "cannot create the TRE keys");
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
    tre_tpm_log(*tpm, rc, "the TRE's storage key");
    return rc;
  }
  rc = mcim_tpm_key_load(*tpm, key_kind(r->which), &r->blob, key);
  if (rc != MCIM_OK)
    tre_tpm_log(*tpm, rc, "cannot load the TRE key");
  return rc;
}

static mcim_cause_t ref_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
  struct key_ref *r = ctx;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  mcim_cause_t rc = ref_load(r, &tpm, &key);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_sign(key, digest, sig)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot sign");
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
    tre_tpm_log(tpm, rc, "cannot compute the key agreement");
  mcim_tpm_key_free(key);
  return rc;
}

static void ref_free(void *ctx) { free(ctx); }

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
  rc = mcim_jose_key_external(
      pub, which == MCIM_TRE_CERT_ATTESTATION ? &tpm_sign_ops : &tpm_ecdh_ops, r, &key);
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
mcim_cause_t tre_tpm_storage_use(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm)
{
  TPM2B_NAME parent;
  bool has = false;
  mcim_cause_t rc = parent_of(st, MCIM_TRE_CERT_KA, &parent, &has);
  if (rc == MCIM_OK)
    rc = connection(t, tpm);
  if (rc == MCIM_OK && has && (rc = mcim_tpm_primary_use(*tpm, &parent)) != MCIM_OK)
    tre_tpm_log(*tpm, rc, "the TRE's storage key");
  return rc;
}

static mcim_cause_t tpm_storage_public(struct tre_soft *t, json_t *st, EVP_PKEY **out)
{
  const TPM2B_PUBLIC *pub = NULL;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_primary(tpm, NULL, &pub)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot read the storage key");
  if (rc != MCIM_OK)
    return rc;
  const TPMS_ECC_POINT *p = &pub->publicArea.unique.ecc;
  if (pub->publicArea.type != TPM2_ALG_ECC || p->x.size != 32 || p->y.size != 32)
    return MCIM_KEY_INVALID;
  return mcim_p256_public_pkey(p->x.buffer, p->y.buffer, out);
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
    rc = tre_tpm_storage_use(t, st, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_ECDH, &blob)) != MCIM_OK)
    tre_tpm_log(tpm, rc, "cannot create a procedure's KA key");
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
    .txn_slot_destroy = tpm_slot_evict, /* the same members: handle, name, authValue */
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

mcim_cause_t tre_tpm_connection(struct tre_soft *t, mcim_tpm_t **tpm) { return connection(t, tpm); }
