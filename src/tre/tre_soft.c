/* The software TRE (include/mcim/tre.h): manufacture, open/close, the read-only views and
 * the factory calls. The operations live next door: tre_aka.c (AKA, PCID credential),
 * tre_slots.c (packages and slots), tre_sign.c (statements, quote, owner, notifications);
 * the file and the state document in tre_store.c and tre_state.c. docs/tre.md explains. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

static void tre_op_close(void *ctx)
{
  tre_soft_free(ctx);
}

static mcim_cause_t tre_op_status(void *ctx, json_t **out)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !out)
    goto cleanup;
  rc = tre_begin_read(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = tre_status_build(st, out);
cleanup:
  if (held)
    tre_end_read(t, st);
  return rc;
}

static const char *cert_member(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? "attestation" : "ka";
}

static mcim_cause_t tre_op_cert(void *ctx, enum mcim_tre_cert which, char **pem)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !pem || (which != MCIM_TRE_CERT_ATTESTATION && which != MCIM_TRE_CERT_KA))
    goto cleanup;
  rc = tre_begin_read(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  const char *v = tre_str(json_object_get(st, "certs"), cert_member(which));
  rc = MCIM_NOT_FOUND;
  if (!v)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *pem = strdup(v);
  if (*pem)
    rc = MCIM_OK;
cleanup:
  if (held)
    tre_end_read(t, st);
  return rc;
}

static mcim_cause_t tre_op_identity(void *ctx, const char *cred, char imsi[24])
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  ssize_t idx = -1;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !cred || !imsi)
    goto cleanup;
  rc = tre_begin_read(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *obj = tre_cred_obj(st, cred, &idx);
  const char *id = obj ? (idx >= 0 ? tre_str(obj, "imsi") : tre_str(obj, "pcid")) : NULL;
  rc = MCIM_NOT_FOUND;
  if (!id || strlen(id) >= 24)
    goto cleanup;
  memcpy(imsi, id, strlen(id) + 1);
  rc = MCIM_OK;
cleanup:
  if (held)
    tre_end_read(t, st);
  return rc;
}

/* The two backends share every operation (tre_priv.h, struct tre_keys_ops: only where the
 * keys are differs), so their tables differ only by name. */
#define TRE_OPS(backend)                                                                           \
  {                                                                                                \
    .name = (backend), .close = tre_op_close, .status = tre_op_status, .cert = tre_op_cert,      \
    .aka = tre_op_aka, .identity = tre_op_identity, .sign = tre_op_sign,                         \
    .quote = tre_op_quote, .stage = tre_op_stage, .unstage = tre_op_unstage,                     \
    .discard = tre_op_discard, .pristine = tre_op_pristine, .install = tre_op_install,           \
    .install_inactive = tre_op_install_inactive, .activate = tre_op_activate,                    \
    .pending = tre_op_pending, .pending_done = tre_op_pending_done,                              \
    .verify_owner = tre_op_verify_owner, .owner_handover = tre_op_owner_handover,                \
    .pcid_install = tre_op_pcid_install, .pcid_renew = tre_op_pcid_renew,                        \
  }

static const struct mcim_tre_ops tre_soft_ops = TRE_OPS("soft");
static const struct mcim_tre_ops tre_tpm_ops = TRE_OPS("tpm");

/* ---- handles ---- */

static mcim_cause_t soft_new(const struct tre_keys_ops *keys, const char *tcti, const char *dir,
                             struct tre_soft **out)
{
  struct tre_soft *t = calloc(1, sizeof(*t));
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!t)
    return rc;
  t->lock_fd = -1;
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    free(t);
    return MCIM_INTERNAL;
  }
  tre_key_cache_hold(); /* released by tre_soft_free */
  t->keys = keys;
  rc = tre_paths(t, dir);
  if (rc == MCIM_OK && tcti && !(t->tcti = strdup(tcti)))
    rc = MCIM_NO_MEMORY;
  if (rc != MCIM_OK) {
    tre_soft_free(t);
    return rc;
  }
  *out = t;
  return MCIM_OK;
}

static mcim_cause_t key_path_load(const char *dir, bool create, mcim_storage_key_t **out)
{
  size_t n = strlen(dir) + sizeof("/" TRE_FILE_KEY);
  char *path = malloc(n);
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!path)
    return rc;
  snprintf(path, n, "%s/%s", dir, TRE_FILE_KEY);
  rc = create ? mcim_storage_key_load_or_create(path, out) : mcim_storage_key_load_file(path, out);
  free(path);
  return rc;
}

/* A handle opens only a TRE of its own backend: a TPM TRE's keys are not PEM, a software
 * TRE's are not in a TPM. */
static mcim_cause_t backend_check(const struct tre_keys_ops *keys, const char *dir, json_t *st)
{
  const char *have = tre_str(st, "backend") ? tre_str(st, "backend") : "soft";
  if (strcmp(have, keys->name) == 0)
    return MCIM_OK;
  if (strcmp(have, TRE_BACKEND_TPM) == 0)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                   "tre: %s is a TPM TRE (its keys are in a TPM): open it with the TPM backend"
                   " (agent.json: \"tre_backend\": \"tpm\" and its \"tpm_tcti\")",
                   dir);
  else
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                   "tre: %s is a %s TRE, not a %s one (agent.json: \"tre_backend\")", dir,
                   have, keys->name);
  return MCIM_CONFIG_INVALID;
}

mcim_cause_t tre_open(const struct tre_keys_ops *keys, const char *tcti, const char *dir,
                      mcim_tre_t **out)
{
  struct tre_soft *t = NULL;
  mcim_tre_t *tre = NULL;
  json_t *st = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!keys || !dir || !*dir || !out)
    goto cleanup;
  *out = NULL;
  rc = soft_new(keys, tcti, dir, &t);
  if (rc != MCIM_OK)
    goto cleanup;
  /* Load, never create: a new key could not open the existing state anyway. */
  rc = key_path_load(dir, false, &t->skey);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = tre_lock_open(t);
  if (rc != MCIM_OK)
    goto cleanup;
  /* First read: checks the state opens and learns the device id it is sealed for. */
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = backend_check(keys, dir, st);
  tre_end(t, st);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  tre = calloc(1, sizeof(*tre));
  if (!tre)
    goto cleanup;
  tre->ops = keys == &tre_keys_soft ? &tre_soft_ops : &tre_tpm_ops;
  tre->ctx = t;
  t = NULL;
  *out = tre;
  rc = MCIM_OK;
cleanup:
  tre_soft_free(t);
  return rc;
}

mcim_cause_t mcim_tre_soft_open(const char *dir, mcim_tre_t **out)
{
  return tre_open(&tre_keys_soft, NULL, dir, out);
}

mcim_cause_t mcim_tre_open(const char *dir, const char *backend, const char *tcti,
                           mcim_tre_t **out)
{
  if (!backend || strcmp(backend, "soft") == 0)
    return mcim_tre_soft_open(dir, out);
  if (strcmp(backend, TRE_BACKEND_TPM) == 0)
    return mcim_tre_tpm_open(dir, tcti, out);
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                 "tre: no TRE backend \"%s\" (soft or tpm)", backend);
  return MCIM_CONFIG_INVALID;
}

#ifndef MCIM_HAVE_TPM
/* Built without tpm2-tss (MCIM_TPM=OFF): a TPM TRE can be neither made nor opened. */
static mcim_cause_t no_tpm(const char *dir)
{
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_UNSUPPORTED,
                 "tre: %s: this build has no TPM TRE (built with MCIM_TPM=OFF: tpm2-tss's"
                 " headers were not found)",
                 dir ? dir : "?");
  return MCIM_UNSUPPORTED;
}

mcim_cause_t mcim_tre_tpm_create(const char *dir, const char *tcti, const char *device,
                                 const char *model, const char *owner_jwk,
                                 const char *operators_ca_pem, const char *m2mes_ca_pem)
{
  (void)tcti;
  (void)device;
  (void)model;
  (void)owner_jwk;
  (void)operators_ca_pem;
  (void)m2mes_ca_pem;
  return no_tpm(dir);
}

mcim_cause_t mcim_tre_tpm_open(const char *dir, const char *tcti, mcim_tre_t **out)
{
  (void)tcti;
  if (out)
    *out = NULL;
  return no_tpm(dir);
}

mcim_cause_t mcim_tre_wrap_k(EVP_PKEY *tpm_storage, const uint8_t k[16], json_t **k_tpm)
{
  (void)tpm_storage;
  (void)k;
  if (k_tpm)
    *k_tpm = NULL;
  return no_tpm("wrapping K for a TPM");
}

/* mcim_tre_slot_check and mcim_tre_pcid_slot_check: no slot key is checked without a TPM */
static mcim_cause_t no_tpm_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                      size_t errlen)
{
  (void)ak;
  (void)offer;
  (void)txn;
  mcim_detailf(err, errlen, "this build has no TPM TRE");
  return no_tpm("checking a TPM slot key");
}

mcim_cause_t mcim_tre_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                 size_t errlen)
{
  return no_tpm_slot_check(ak, offer, txn, err, errlen);
}

mcim_cause_t mcim_tre_pcid_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                      size_t errlen)
{
  return no_tpm_slot_check(ak, offer, txn, err, errlen);
}

mcim_cause_t mcim_tre_wrap_k_slot(const json_t *offer, const uint8_t k[16], json_t **k_tpm)
{
  (void)offer;
  (void)k;
  if (k_tpm)
    *k_tpm = NULL;
  return no_tpm("wrapping K for a TPM");
}
#endif

void mcim_tre_close(mcim_tre_t *tre)
{
  if (!tre)
    return;
  if (tre->ops && tre->ops->close)
    tre->ops->close(tre->ctx);
  free(tre);
}

/* The TRE behind a handle of either backend, or NULL for another kind (factory calls are
 * its own). */
static struct tre_soft *soft_of(mcim_tre_t *tre)
{
  return tre && (tre->ops == &tre_soft_ops || tre->ops == &tre_tpm_ops) ? tre->ctx : NULL;
}

/* ---- manufacture ---- */

static mcim_cause_t pem_canonical(const char *pem, json_t **out)
{
  X509 *cert = NULL;
  char *text = NULL;
  mcim_cause_t rc = mcim_pki_cert_from_pem(pem, strlen(pem), &cert);

  if (rc == MCIM_OK)
    rc = mcim_pki_cert_to_pem(cert, &text);
  if (rc == MCIM_OK) {
    *out = json_string(text);
    rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
  }
  free(text);
  X509_free(cert);
  return rc;
}

mcim_cause_t tre_owner_jwk_object(const char *owner_jwk, json_t **out)
{
  mcim_jose_key_t *key = NULL;
  char *pub = NULL;
  mcim_cause_t rc = mcim_jose_key_from_jwk(owner_jwk, strlen(owner_jwk), &key);

  if (rc != MCIM_OK)
    goto cleanup;
  /* The owner's private key has no business in a device. */
  rc = MCIM_KEY_INVALID;
  if (mcim_jose_key_has_private(key))
    goto cleanup;
  rc = mcim_jose_key_public_jwk(key, &pub);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = json_loads(pub, 0, NULL);
  if (*out)
    rc = MCIM_OK;
cleanup:
  free(pub);
  mcim_jose_key_free(key);
  return rc;
}

mcim_cause_t mcim_tre_soft_create(const char *dir, const char *device, const char *model,
                                  const char *owner_jwk, const char *operators_ca_pem,
                                  const char *m2mes_ca_pem)
{
  return tre_create(&tre_keys_soft, NULL, dir, device, model, owner_jwk, operators_ca_pem,
                    m2mes_ca_pem);
}

mcim_cause_t tre_create(const struct tre_keys_ops *keys, const char *tcti, const char *dir,
                        const char *device, const char *model, const char *owner_jwk,
                        const char *operators_ca_pem, const char *m2mes_ca_pem)
{
  struct tre_soft *t = NULL;
  json_t *st = NULL, *owner = NULL, *ops_ca = NULL, *m2mes_ca = NULL, *att = NULL, *ka = NULL;
  struct stat sb;
  bool locked = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!dir || !*dir || !device || !mcim_pki_name_valid(device) || !model || !*model ||
      !owner_jwk || !operators_ca_pem || !m2mes_ca_pem)
    goto cleanup;
  if ((rc = tre_owner_jwk_object(owner_jwk, &owner)) != MCIM_OK ||
      (rc = pem_canonical(operators_ca_pem, &ops_ca)) != MCIM_OK ||
      (rc = pem_canonical(m2mes_ca_pem, &m2mes_ca)) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: create %s: owner key or CA unusable",
                   device);
    goto cleanup;
  }
  rc = MCIM_IO_ERROR;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot create %s: %s", dir,
                   strerror(errno));
    goto cleanup;
  }
  if ((rc = soft_new(keys, tcti, dir, &t)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  t->device = strdup(device);
  if (!t->device)
    goto cleanup;
  /* the first write: slot 0, generation 1 */
  t->slot = 1;
  t->gen = 0;
  /* An earlier create that crashed before writing the state left a key: reuse it. */
  if ((rc = key_path_load(dir, true, &t->skey)) != MCIM_OK || (rc = tre_lock_open(t)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  if (flock(t->lock_fd, LOCK_EX) != 0)
    goto cleanup;
  locked = true;
  rc = MCIM_CONFLICT;
  if (lstat(t->path_state[0], &sb) == 0 || lstat(t->path_state[1], &sb) == 0) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s already holds a TRE; not replaced", dir);
    goto cleanup;
  }
  /* the keys are made inside the TRE: in this process (soft), or by the TPM (tpm) */
  if ((rc = keys->create(t, &att, &ka)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  st = json_pack("{s:i, s:s, s:s, s:I, s:{s:o, s:o}, s:{}, s:o, s:o, s:o, s:n, s:[], s:[], s:[],"
                 " s:[], s:[]}",
                 "version", TRE_STATE_VERSION, "device", device, "model", model, "created",
                 (json_int_t)mcim_now(), "keys", "attestation", att, "ka", ka, "certs",
                 "owner_jwk", owner, "operators_ca", ops_ca, "m2mes_ca", m2mes_ca, "pcid",
                 "slots", "staged", "measurements", "seen", "pending");
  /* json_pack "o" steals the references, even on failure. */
  att = ka = owner = ops_ca = m2mes_ca = NULL;
  if (!st)
    goto cleanup;
  if (keys != &tre_keys_soft && json_object_set_new(st, "backend", json_string(keys->name)))
    goto cleanup;
  /* the TPM TRE: the state bound to its monotonic counter from the first write on */
  if (keys->fresh_create && (rc = keys->fresh_create(t, st)) != MCIM_OK)
    goto cleanup;
  rc = tre_persist(t, st);
  if (rc == MCIM_OK)
    mcim_log_info("tre: created %s TRE of device %s (model %s) in %s",
                  keys == &tre_keys_soft ? "software" : keys->name, device, model, dir);
cleanup:
  if (locked)
    flock(t->lock_fd, LOCK_UN);
  tre_json_wipe_free(st);
  tre_json_wipe_free(att);
  tre_json_wipe_free(ka);
  json_decref(owner);
  json_decref(ops_ca);
  json_decref(m2mes_ca);
  tre_soft_free(t);
  return rc;
}

/* ---- factory calls ---- */

mcim_cause_t mcim_tre_soft_public_jwk(mcim_tre_t *tre, enum mcim_tre_cert which, char **jwk)
{
  struct tre_soft *t = soft_of(tre);
  mcim_jose_key_t *key = NULL;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !jwk || (which != MCIM_TRE_CERT_ATTESTATION && which != MCIM_TRE_CERT_KA))
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = tre_key_jose(t, st, which, &key);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(key, jwk); /* never carries "d" */
cleanup:
  mcim_jose_key_free(key);
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t mcim_tre_tpm_storage_jwk(mcim_tre_t *tre, char **jwk)
{
  struct tre_soft *t = soft_of(tre);
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *key = NULL;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !jwk)
    goto cleanup;
  *jwk = NULL;
  rc = MCIM_NOT_FOUND;
  if (!t->keys->storage_public)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = t->keys->storage_public(t, st, &pub);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pub, &key);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(key, jwk);
cleanup:
  mcim_jose_key_free(key);
  EVP_PKEY_free(pub);
  if (held)
    tre_end(t, st);
  return rc;
}

/* The TPM storage key a KA certificate certifies (MCIM_OID_TPM_STORAGE), if any, must be
 * the one this TRE imports K under: else SHOs would wrap K for a key this TRE cannot use. */
static mcim_cause_t storage_check(struct tre_soft *t, json_t *st, X509 *cert)
{
  EVP_PKEY *certified = NULL, *own = NULL;
  mcim_cause_t rc = mcim_pki_cert_tpm_storage_key(cert, &certified);
  if (rc == MCIM_NOT_FOUND)
    return MCIM_OK;
  if (rc == MCIM_OK)
    rc = t->keys->storage_public ? t->keys->storage_public(t, st, &own) : MCIM_KEY_INVALID;
  if (rc == MCIM_OK && EVP_PKEY_eq(certified, own) != 1)
    rc = MCIM_KEY_INVALID;
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: the KA certificate certifies a TPM storage"
                   " key that is not this TRE's");
  EVP_PKEY_free(own);
  EVP_PKEY_free(certified);
  return rc;
}

/* One M2MES certificate: verifies against the pinned M2MES CA for this device and usage,
 * and certifies exactly the TRE's own key. */
static mcim_cause_t cert_check(struct tre_soft *t, json_t *st, X509 *ca, enum mcim_tre_cert which,
                               const char *pem, json_t **out)
{
  X509 *cert = NULL;
  EVP_PKEY *pub = NULL, *priv = NULL;
  char *text = NULL;
  mcim_cert_usage_t usage =
      which == MCIM_TRE_CERT_ATTESTATION ? MCIM_CERT_TRE_ATTESTATION : MCIM_CERT_TRE_KEY_AGREEMENT;
  mcim_cause_t rc = mcim_pki_cert_from_pem(pem, strlen(pem), &cert);

  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_pki_cert_public_key(cert, ca, usage, tre_str(st, "device"), 0, &pub);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = tre_key_public(t, st, which, &priv); /* the TRE's own key, public part */
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (EVP_PKEY_eq(pub, priv) != 1)
    goto cleanup;
  /* a TPM storage key in it (K is wrapped for it) must be this TRE's; none without a TPM */
  if (which == MCIM_TRE_CERT_KA && (rc = storage_check(t, st, cert)) != MCIM_OK)
    goto cleanup;
  rc = mcim_pki_cert_to_pem(cert, &text);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = json_string(text);
  if (*out)
    rc = MCIM_OK;
cleanup:
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s certificate refused",
                   cert_member(which));
  free(text);
  EVP_PKEY_free(priv);
  EVP_PKEY_free(pub);
  X509_free(cert);
  return rc;
}

mcim_cause_t mcim_tre_soft_set_certs(mcim_tre_t *tre, const char *attestation_pem,
                                     const char *ka_pem)
{
  struct tre_soft *t = soft_of(tre);
  json_t *st = NULL, *att = NULL, *ka = NULL;
  X509 *ca = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !attestation_pem || !ka_pem)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  const char *ca_pem = tre_str(st, "m2mes_ca");
  rc = MCIM_INTERNAL;
  if (!ca_pem || mcim_pki_cert_from_pem(ca_pem, strlen(ca_pem), &ca) != MCIM_OK)
    goto cleanup;
  if ((rc = cert_check(t, st, ca, MCIM_TRE_CERT_ATTESTATION, attestation_pem, &att)) != MCIM_OK ||
      (rc = cert_check(t, st, ca, MCIM_TRE_CERT_KA, ka_pem, &ka)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  json_t *certs = json_pack("{s:o, s:o}", "attestation", att, "ka", ka);
  att = ka = NULL;
  if (!certs || json_object_set_new(st, "certs", certs))
    goto cleanup;
  rc = tre_commit(t, st);
cleanup:
  json_decref(att);
  json_decref(ka);
  X509_free(ca);
  if (held)
    tre_end(t, st);
  return rc;
}

static bool component_valid(const char *c)
{
  size_t n = c ? strlen(c) : 0;
  return n > 0 && n <= 64;
}

mcim_cause_t mcim_tre_soft_set_measurements(mcim_tre_t *tre, const json_t *log)
{
  struct tre_soft *t = soft_of(tre);
  json_t *st = NULL, *copy = NULL, *item;
  char digest[65];
  size_t i;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !json_is_array(log) || json_array_size(log) > MCIM_TRE_MAX_MEASUREMENTS)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  copy = json_array();
  if (!copy)
    goto cleanup;
  /* A normalised copy of the named fields only: the log goes into every quote. */
  json_array_foreach((json_t *)log, i, item) {
    rc = MCIM_INVALID_ARGUMENT;
    if (!component_valid(tre_str(item, "component")) ||
        tre_hex_field(item, "digest", 32, digest) != MCIM_OK)
      goto cleanup;
    rc = MCIM_NO_MEMORY;
    if (json_array_append_new(copy, json_pack("{s:s, s:s}", "component",
                                              tre_str(item, "component"), "digest", digest)))
      goto cleanup;
  }
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  /* the same boot measured again (a restart of unchanged images): nothing to write */
  rc = MCIM_OK;
  if (json_equal(json_object_get(st, "measurements"), copy))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  if (json_object_set(st, "measurements", copy))
    goto cleanup;
  rc = tre_commit(t, st);
cleanup:
  json_decref(copy);
  if (held)
    tre_end(t, st);
  return rc;
}
