/* The TRE state document: credentials, keys, the replay cache over "seen", the public
 * view. Layout in docs/tre.md section 2. */
#include <ctype.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/objcache.h"
#include "crypto/verdicts.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

const char *tre_str(json_t *obj, const char *name)
{
  return json_string_value(json_object_get(obj, name));
}

int64_t tre_int(json_t *obj, const char *name)
{
  return (int64_t)json_integer_value(json_object_get(obj, name));
}

ssize_t tre_find(json_t *array, const char *name, const char *value)
{
  size_t i;
  json_t *item;

  if (!value)
    return -1;
  json_array_foreach(array, i, item) {
    const char *v = tre_str(item, name);
    if (v && strcmp(v, value) == 0)
      return (ssize_t)i;
  }
  return -1;
}

ssize_t tre_find2(json_t *array, const char *n1, const char *v1, const char *n2, const char *v2)
{
  size_t i;
  json_t *item;

  if (!v1 || !v2)
    return -1;
  json_array_foreach(array, i, item) {
    const char *a = tre_str(item, n1), *b = tre_str(item, n2);
    if (a && b && strcmp(a, v1) == 0 && strcmp(b, v2) == 0)
      return (ssize_t)i;
  }
  return -1;
}

void tre_array_wipe_remove(json_t *array, size_t i)
{
  tre_json_wipe(json_array_get(array, i));
  json_array_remove(array, i);
}

json_t *tre_cred_obj(json_t *st, const char *cred, ssize_t *slot_index)
{
  json_t *obj = NULL;

  *slot_index = -1;
  if (!cred)
    return NULL;
  if (strcmp(cred, MCIM_TRE_PCID) == 0) {
    obj = json_object_get(st, "pcid");
  } else if (strcmp(cred, MCIM_TRE_PCID_PREV) == 0) {
    obj = json_object_get(st, "pcid_prev");
  } else {
    json_t *slots = json_object_get(st, "slots");
    *slot_index = tre_find(slots, "slot", cred);
    obj = *slot_index >= 0 ? json_array_get(slots, (size_t)*slot_index) : NULL;
  }
  return json_is_object(obj) ? obj : NULL;
}

bool tre_imsi_valid(const char *s)
{
  size_t n = s ? strlen(s) : 0;
  if (n < 6 || n > 15)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isdigit((unsigned char)s[i]))
      return false;
  return true;
}

mcim_cause_t tre_hex_field(json_t *obj, const char *name, size_t bytes, char *out)
{
  uint8_t tmp[32];
  json_t *v = json_object_get(obj, name);
  mcim_cause_t rc = MCIM_FIELD_MISSING;

  if (!v)
    goto cleanup;
  rc = MCIM_WRONG_TYPE;
  if (!json_is_string(v) || bytes > sizeof(tmp))
    goto cleanup;
  rc = mcim_hex_decode(json_string_value(v), json_string_length(v), tmp, bytes);
  if (rc != MCIM_OK)
    goto cleanup;
  mcim_hex_encode(tmp, bytes, out); /* lower case, as everything the TRE stores */
cleanup:
  mcim_wipe(tmp, sizeof(tmp));
  return rc;
}

void tre_cred_wipe(struct tre_cred *c)
{
  mcim_wipe(c, sizeof(*c));
}

/* ---- per-slot keys (docs/tre.md, section 8) ----
 * An MCIM's K and OPc (OPc only when K is in the TPM) are sealed under a key of their own,
 * made when its package is staged: "secrets" = B64URL(mcim_seal(slot_key, "tre-slot/<txn>",
 * {"k", "opc"})), "slot_key" = its hex. They are opened only by the operation that uses that
 * MCIM (AKA), never with the document; discarding the MCIM wipes its key with it. The key is in
 * the same sealed document: it adds no protection against whoever opens the document (the
 * storage key's rotation is what shreds a discarded MCIM), it keeps a slot's secrets out of
 * every operation but that slot's own. The SQN state stays in clear (no secret of the MCIM). */
#define SLOT_SECRETS "secrets"
#define SLOT_KEY "slot_key"
#define SLOT_PLAIN_MAX 128

static mcim_cause_t slot_context(json_t *obj, char *out, size_t n)
{
  const char *txn = tre_str(obj, "txn");
  int w = txn ? snprintf(out, n, "tre-slot/%s", txn) : -1;
  return w > 0 && (size_t)w < n ? MCIM_OK : MCIM_INTERNAL;
}

/* Wipe and remove a string member. */
static void del_wiped(json_t *obj, const char *name)
{
  json_t *v = json_object_get(obj, name);
  if (json_is_string(v))
    mcim_wipe((void *)json_string_value(v), json_string_length(v));
  json_object_del(obj, name);
}

mcim_cause_t tre_secrets_seal(json_t *obj)
{
  uint8_t raw[32], sealed[SLOT_PLAIN_MAX + MCIM_SEAL_OVERHEAD];
  char plain[SLOT_PLAIN_MAX], key_hex[65], context[64];
  char b64[2 * sizeof(sealed)];
  mcim_storage_key_t *key = NULL;
  size_t plain_len = 0, sealed_len = 0;
  const char *k = tre_str(obj, "k"), *opc = tre_str(obj, "opc");
  mcim_cause_t rc = MCIM_OK;

  if (json_object_get(obj, SLOT_SECRETS))
    goto cleanup; /* sealed already */
  rc = MCIM_INTERNAL;
  if (!opc || slot_context(obj, context, sizeof(context)) != MCIM_OK)
    goto cleanup;
  int w = k ? snprintf(plain, sizeof(plain), "{\"k\":\"%s\",\"opc\":\"%s\"}", k, opc)
            : snprintf(plain, sizeof(plain), "{\"opc\":\"%s\"}", opc);
  if (w <= 0 || (size_t)w >= sizeof(plain))
    goto cleanup;
  plain_len = (size_t)w;
  if ((rc = mcim_random(raw, sizeof(raw))) != MCIM_OK ||
      (rc = mcim_storage_key_from_bytes(raw, sizeof(raw), &key)) != MCIM_OK ||
      (rc = mcim_seal(key, context, (const uint8_t *)plain, plain_len, sealed, sizeof(sealed),
                      &sealed_len)) != MCIM_OK)
    goto cleanup;
  mcim_b64url_encode(sealed, sealed_len, b64);
  mcim_hex_encode(raw, sizeof(raw), key_hex);
  rc = MCIM_NO_MEMORY;
  if (json_object_set_new(obj, SLOT_SECRETS, json_string(b64)) ||
      json_object_set_new(obj, SLOT_KEY, json_string(key_hex)))
    goto cleanup;
  del_wiped(obj, "k");
  del_wiped(obj, "opc");
  rc = MCIM_OK;
cleanup:
  mcim_storage_key_free(key);
  mcim_wipe(raw, sizeof(raw));
  mcim_wipe(plain, sizeof(plain));
  mcim_wipe(key_hex, sizeof(key_hex));
  return rc;
}

/* K (unless `k` is NULL: K in the TPM) and OPc of a sealed slot. */
static mcim_cause_t secrets_open(json_t *obj, uint8_t *k, uint8_t opc[16])
{
  uint8_t raw[32], sealed[SLOT_PLAIN_MAX + MCIM_SEAL_OVERHEAD], plain[SLOT_PLAIN_MAX];
  char context[64];
  const char *b64 = tre_str(obj, SLOT_SECRETS);
  mcim_storage_key_t *key = NULL;
  size_t sealed_len = 0, plain_len = 0;
  json_t *doc = NULL;
  mcim_cause_t rc = MCIM_INTERNAL;

  if (!b64 || mcim_hex_decode_str(tre_str(obj, SLOT_KEY), raw, sizeof(raw)) != MCIM_OK ||
      mcim_b64url_decode(b64, strlen(b64), sealed, sizeof(sealed), &sealed_len) != MCIM_OK ||
      slot_context(obj, context, sizeof(context)) != MCIM_OK ||
      mcim_storage_key_from_bytes(raw, sizeof(raw), &key) != MCIM_OK ||
      mcim_unseal(key, context, sealed, sealed_len, plain, sizeof(plain), &plain_len) != MCIM_OK)
    goto cleanup;
  doc = json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, NULL);
  if ((k && mcim_hex_decode_str(tre_str(doc, "k"), k, 16) != MCIM_OK) ||
      (!k && json_object_get(doc, "k")) ||
      mcim_hex_decode_str(tre_str(doc, "opc"), opc, 16) != MCIM_OK)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  tre_json_wipe_free(doc);
  mcim_storage_key_free(key);
  mcim_wipe(raw, sizeof(raw));
  mcim_wipe(plain, sizeof(plain));
  return rc;
}

mcim_cause_t tre_cred_read(json_t *obj, struct tre_cred *c)
{
  uint8_t sqn[MCIM_SQN_USIM_ENCODED_MAX];
  const char *id = tre_str(obj, "pcid") ? tre_str(obj, "pcid") : tre_str(obj, "imsi");
  const char *sqn_hex = tre_str(obj, "sqn_usim");
  size_t sqn_len = sqn_hex ? strlen(sqn_hex) / 2 : 0;
  mcim_cause_t rc = MCIM_INTERNAL; /* the document is ours and sealed: this is a bug */

  memset(c, 0, sizeof(*c));
  if (!tre_imsi_valid(id) || !sqn_hex || sqn_len > sizeof(sqn))
    goto cleanup;
  snprintf(c->id, sizeof(c->id), "%s", id);
  /* an MCIM slot of a TPM TRE has K in the TPM (k_tpm) and no "k"; never both */
  c->k_tpm = json_object_get(obj, "k_tpm");
  bool sealed = json_object_get(obj, SLOT_SECRETS) != NULL; /* an MCIM with its own key */
  if ((c->k_tpm && (!json_is_object(c->k_tpm) || json_object_get(obj, "k"))) ||
      (sealed && secrets_open(obj, c->k_tpm ? NULL : c->k, c->opc) != MCIM_OK) ||
      (!sealed && !c->k_tpm &&
       mcim_hex_decode_str(tre_str(obj, "k"), c->k, sizeof(c->k)) != MCIM_OK) ||
      (!sealed && mcim_hex_decode_str(tre_str(obj, "opc"), c->opc, sizeof(c->opc)) != MCIM_OK) ||
      mcim_hex_decode_str(tre_str(obj, "amf"), c->amf, sizeof(c->amf)) != MCIM_OK ||
      mcim_hex_decode_str(sqn_hex, sqn, sqn_len) != MCIM_OK ||
      mcim_sqn_usim_decode(sqn, sqn_len, &c->sqn) != MCIM_OK)
    goto cleanup;
  c->expires = tre_int(obj, "expires");
  rc = MCIM_OK;
cleanup:
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: credential '%s' in the state is corrupt",
                   id ? id : "?");
    tre_cred_wipe(c);
  }
  return rc;
}

/* Replace a member, wiping the old string first (jansson would free it as is). */
static mcim_cause_t set_wiped(json_t *obj, const char *name, json_t *value)
{
  json_t *old = json_object_get(obj, name);
  if (!value)
    return MCIM_NO_MEMORY;
  if (json_is_string(old))
    mcim_wipe((void *)json_string_value(old), json_string_length(old));
  return json_object_set_new(obj, name, value) == 0 ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t tre_cred_set_sqn(json_t *obj, const struct mcim_sqn_usim *sqn)
{
  uint8_t buf[MCIM_SQN_USIM_ENCODED_MAX];
  char hex[2 * MCIM_SQN_USIM_ENCODED_MAX + 1];
  size_t len = 0;
  mcim_cause_t rc = mcim_sqn_usim_encode(sqn, buf, sizeof(buf), &len);

  if (rc != MCIM_OK)
    return rc;
  mcim_hex_encode(buf, len, hex);
  return set_wiped(obj, "sqn_usim", json_string(hex));
}

mcim_cause_t tre_cred_new(const char *id_name, const char *id, const char *k, const char *opc,
                          const char *amf, json_t **out)
{
  struct mcim_sqn_params params;
  struct mcim_sqn_usim sqn;
  mcim_cause_t rc = MCIM_NO_MEMORY;
  json_t *c = json_object();

  mcim_sqn_params_default(&params);
  if (!c || json_object_set_new(c, id_name, json_string(id)) ||
      (k && json_object_set_new(c, "k", json_string(k))) ||
      (opc && json_object_set_new(c, "opc", json_string(opc))) ||
      json_object_set_new(c, "amf", json_string(amf)))
    goto cleanup;
  /* A new K means a new USIM: its SQN array starts from zero (TS 33.102 C.2). */
  rc = mcim_sqn_usim_init(&params, &sqn);
  if (rc == MCIM_OK)
    rc = tre_cred_set_sqn(c, &sqn);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = c;
  c = NULL;
cleanup:
  tre_json_wipe_free(c);
  return rc;
}

/* ---- keys ---- */

static const char *key_member(enum mcim_tre_cert which)
{
  return which == MCIM_TRE_CERT_ATTESTATION ? "attestation" : "ka";
}

static int jose_up_ref(void *k)
{
  mcim_jose_key_t *ref = NULL;
  return mcim_jose_key_dup(k, &ref) == MCIM_OK;
}

static void jose_free(void *k)
{
  mcim_jose_key_free(k);
}

/* The TRE's keys as JOSE keys, kid set, kept by the id of their PEM: reading the PEM (90 us)
 * and building the JOSE key from it (a key check, cjose's own copy) cost more than the
 * signature each is for. Shared by reference, never changed once kept
 * (mcim_jose_key_set_kid refuses a shared key); the private part is zeroised when the last
 * reference goes. */
static struct mcim_objcache jose_cache = MCIM_OBJCACHE_INIT(jose_up_ref, jose_free, 64);
static pthread_mutex_t key_holders_mu = PTHREAD_MUTEX_INITIALIZER;
static long key_holders; /* open TRE handles: the keys are kept only while one is */

void tre_key_cache_hold(void)
{
  pthread_mutex_lock(&key_holders_mu);
  key_holders++;
  pthread_mutex_unlock(&key_holders_mu);
}

void tre_key_cache_release(void)
{
  pthread_mutex_lock(&key_holders_mu);
  if (key_holders > 0 && --key_holders == 0) {
    mcim_objcache_clear(&jose_cache);
  }
  pthread_mutex_unlock(&key_holders_mu);
}

/* The private key `which` of the document (PKCS#8 PEM), parsed; soft_jose keeps the result. */
static mcim_cause_t tre_key_pkey(json_t *st, enum mcim_tre_cert which, EVP_PKEY **out)
{
  json_t *pem = json_object_get(json_object_get(st, "keys"), key_member(which));
  BIO *bio = NULL;
  mcim_cause_t rc = MCIM_INTERNAL;

  if (!json_is_string(pem) || json_string_length(pem) > INT32_MAX)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  bio = BIO_new_mem_buf(json_string_value(pem), (int)json_string_length(pem));
  if (!bio)
    goto cleanup;
  rc = mcim_pki_key_read_bio(bio, out);
cleanup:
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s key in the state is unusable",
                   key_member(which));
  BIO_free(bio);
  return rc;
}

/* The software backend's key as a JOSE key (the private part in this process). */
static mcim_cause_t soft_jose(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                              mcim_jose_key_t **out)
{
  (void)t;
  json_t *pem = json_object_get(json_object_get(st, "keys"), key_member(which));
  const char *device = tre_str(st, "device");
  EVP_PKEY *pkey = NULL;
  mcim_jose_key_t *key = NULL;
  uint8_t id[32];
  /* the kid is part of what is kept: the same key under another device id is another entry */
  const void *parts[] = {key_member(which), device ? device : "", json_string_value(pem)};
  const size_t lens[] = {strlen(key_member(which)), device ? strlen(device) : 0,
                         json_is_string(pem) ? json_string_length(pem) : 0};
  bool cacheable = json_is_string(pem) && mcim_verdict_id(id, 3, parts, lens);

  if (cacheable && (*out = mcim_objcache_get(&jose_cache, id)) != NULL)
    return MCIM_OK;
  mcim_cause_t rc = tre_key_pkey(st, which, &pkey);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_jose_key_from_pkey(pkey, &key);
  if (rc != MCIM_OK)
    goto cleanup;
  /* Verifiers find the device's certificate by the kid of what it signs. */
  if (which == MCIM_TRE_CERT_ATTESTATION && (rc = mcim_jose_key_set_kid(key, device)) != MCIM_OK)
    goto cleanup;
  pthread_mutex_lock(&key_holders_mu);
  if (cacheable && key_holders > 0)
    mcim_objcache_put(&jose_cache, id, key);
  pthread_mutex_unlock(&key_holders_mu);
  *out = key;
  key = NULL;
cleanup:
  mcim_jose_key_free(key);
  EVP_PKEY_free(pkey);
  return rc;
}

static mcim_cause_t soft_public_key(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                                    EVP_PKEY **out)
{
  mcim_jose_key_t *key = NULL;
  mcim_cause_t rc = soft_jose(t, st, which, &key);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_pkey(key, out); /* the coordinates only */
  mcim_jose_key_free(key);
  return rc;
}

static mcim_cause_t new_key_pem(json_t **out)
{
  EVP_PKEY *key = NULL;
  mcim_cause_t rc = mcim_pki_key_generate(&key);
  if (rc == MCIM_OK)
    rc = tre_key_pem_json(key, out);
  EVP_PKEY_free(key);
  return rc;
}

static mcim_cause_t soft_create(struct tre_soft *t, json_t **attestation, json_t **ka)
{
  (void)t;
  mcim_cause_t rc = new_key_pem(attestation);
  if (rc == MCIM_OK)
    rc = new_key_pem(ka);
  return rc;
}

/* A per-procedure KA key (tre_txn.c): PEM in the document, like the static ones, but never
 * kept parsed in the process cache: it is to be gone once its procedure ends. */
static mcim_cause_t soft_txn_ka_create(struct tre_soft *t, json_t *st, json_t **out)
{
  (void)t;
  (void)st;
  return new_key_pem(out);
}

static mcim_cause_t soft_txn_ka_jose(struct tre_soft *t, json_t *st, json_t *key,
                                     mcim_jose_key_t **out)
{
  EVP_PKEY *pkey = NULL;
  BIO *bio = NULL;
  mcim_cause_t rc = MCIM_INTERNAL;
  (void)t;
  (void)st;

  if (!json_is_string(key) || json_string_length(key) > INT32_MAX)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  bio = BIO_new_mem_buf(json_string_value(key), (int)json_string_length(key));
  if (!bio)
    goto cleanup;
  if ((rc = mcim_pki_key_read_bio(bio, &pkey)) == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pkey, out);
cleanup:
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: a procedure's KA key is unusable");
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  return rc;
}

const struct tre_keys_ops tre_keys_soft = {
    .name = "soft",
    .create = soft_create,
    .public_key = soft_public_key,
    .jose = soft_jose,
    .txn_ka_create = soft_txn_ka_create,
    .txn_ka_jose = soft_txn_ka_jose,
};

mcim_cause_t tre_key_jose(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                          mcim_jose_key_t **out)
{
  return t->keys->jose(t, st, which, out);
}

mcim_cause_t tre_key_public(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                            EVP_PKEY **out)
{
  return t->keys->public_key(t, st, which, out);
}

bool tre_key_failure(mcim_cause_t rc)
{
  return rc == MCIM_TPM_ERROR || rc == MCIM_TPM_UNREACHABLE;
}

mcim_cause_t tre_key_pem_json(EVP_PKEY *key, json_t **out)
{
  /* A secure-memory BIO clears its buffer when freed: the PEM is a private key. */
  BIO *bio = BIO_new(BIO_s_secmem());
  char *data = NULL;
  long len = 0;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!bio)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
    goto cleanup;
  len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || !data)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = json_stringn(data, (size_t)len);
  if (*out)
    rc = MCIM_OK;
cleanup:
  BIO_free(bio);
  return rc;
}

/* ---- replay cache over the working copy ---- */

/* Entries {"iss", "jti", "exp"}; expired ones are dropped on every insert, so the list is
 * bounded by the statements still valid. Full of live entries: fail closed. The insert lands
 * in the working copy, so it becomes durable with the operation that accepted the statement
 * and vanishes with an operation that fails later. Every statement the TRE reads (packages,
 * owner instructions, PCID renewal answers) passes here with `expires` = exp + MCIM_TRE_SKEW
 * and iat <= now + MCIM_TRE_SKEW: one whose jti would be kept past now + MCIM_TRE_MAX_LIFETIME
 * + 2 skews has exp - iat > MCIM_TRE_MAX_LIFETIME and is refused, so no entry stays longer
 * (an issuer signing exp near INT64_MAX would otherwise add one for good per procedure).
 * Refused, not kept shorter: a jti forgotten while its statement still verifies replays. */
static mcim_cause_t replay_check_and_insert(void *ctx, const char *iss, const char *jti,
                                            int64_t expires, int64_t now)
{
  struct tre_replay *r = ctx;
  json_t *e = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!r || !json_is_array(r->seen) || !iss || !jti)
    goto cleanup;
  for (size_t i = json_array_size(r->seen); i-- > 0;)
    if (tre_int(json_array_get(r->seen, i), "exp") <= now)
      json_array_remove(r->seen, i);
  rc = MCIM_CLAIM_MISMATCH;
  if (expires > now + MCIM_TRE_MAX_LIFETIME + 2 * MCIM_TRE_SKEW)
    goto cleanup;
  rc = MCIM_REPLAY;
  if (tre_find2(r->seen, "iss", iss, "jti", jti) >= 0)
    goto cleanup;
  rc = MCIM_REPLAY_CACHE_FULL;
  if (json_array_size(r->seen) >= MCIM_TRE_MAX_SEEN)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  e = json_pack("{s:s, s:s, s:I}", "iss", iss, "jti", jti, "exp", (json_int_t)expires);
  if (!e || json_array_append_new(r->seen, e) != 0)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  return rc;
}

mcim_replay_cache_t tre_replay_cache(struct tre_replay *r)
{
  mcim_replay_cache_t c = {.check_and_insert = replay_check_and_insert, .ctx = r};
  return c;
}

/* ---- queued notifications ---- */

bool tre_pending_expired(json_t *item, int64_t now)
{
  json_t *c = json_object_get(item, "created");
  if (!json_is_integer(c))
    return true;
  int64_t created = (int64_t)json_integer_value(c);
  return created <= now - MCIM_TRE_PENDING_LIFETIME || created > now + MCIM_TRE_PENDING_LIFETIME;
}

size_t tre_pending_prune(json_t *pending, int64_t now)
{
  size_t n = 0;
  for (size_t i = json_array_size(pending); i-- > 0;)
    if (tre_pending_expired(json_array_get(pending, i), now) && json_array_remove(pending, i) == 0)
      n++;
  return n;
}

/* ---- public view ---- */

static json_t *pcid_view(json_t *p)
{
  if (!json_is_object(p))
    return json_null();
  return json_pack("{s:s?, s:I}", "id", tre_str(p, "pcid"), "expires",
                   (json_int_t)tre_int(p, "expires"));
}

/* Built member by member from named public fields (never a copy of a state object, which
 * would carry K and OPc along). */
mcim_cause_t tre_status_build(json_t *st, json_t **out)
{
  json_t *v = NULL, *slots = NULL, *staged = NULL, *pending = NULL, *item;
  json_t *certs = json_object_get(st, "certs");
  size_t i;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  slots = json_array();
  staged = json_array();
  pending = json_array();
  if (!slots || !staged || !pending)
    goto cleanup;
  json_array_foreach(json_object_get(st, "slots"), i, item) {
    if (json_array_append_new(slots, json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?}", "slot",
                                               tre_str(item, "slot"), "sho", tre_str(item, "sho"),
                                               "imsi", tre_str(item, "imsi"), "state",
                                               tre_str(item, "state"), "txn",
                                               tre_str(item, "txn"))))
      goto cleanup;
  }
  json_array_foreach(json_object_get(st, "staged"), i, item) {
    if (json_array_append_new(staged, json_pack("{s:s?, s:s?, s:s?}", "txn", tre_str(item, "txn"),
                                                "sho", tre_str(item, "sho"), "imsi",
                                                tre_str(item, "imsi"))))
      goto cleanup;
  }
  int64_t now = mcim_now();
  json_array_foreach(json_object_get(st, "pending"), i, item) {
    if (tre_pending_expired(item, now)) /* a read-only view: dropped at the next write */
      continue;
    if (json_array_append_new(pending, json_pack("{s:s?, s:s?, s:s?}", "to", tre_str(item, "to"),
                                                 "txn", tre_str(item, "txn"), "typ",
                                                 tre_str(item, "typ"))))
      goto cleanup;
  }
  int owner = json_is_object(json_object_get(st, "owner_jwk"));
  int att = json_is_string(json_object_get(certs, "attestation"));
  int ka = json_is_string(json_object_get(certs, "ka"));
  json_int_t nmeas = (json_int_t)json_array_size(json_object_get(st, "measurements"));
  v = json_pack("{s:s?, s:s?, s:o, s:O, s:O, s:O, s:b, s:{s:b, s:b}, s:I}", "device",
                tre_str(st, "device"), "model", tre_str(st, "model"), "pcid",
                pcid_view(json_object_get(st, "pcid")), "slots", slots, "staged", staged,
                "pending", pending, "owner_pinned", owner, "certs", "attestation", att, "ka", ka,
                "measurements", nmeas);
  if (!v)
    goto cleanup;
  if (json_is_object(json_object_get(st, "pcid_prev")) &&
      json_object_set_new(v, "pcid_prev", pcid_view(json_object_get(st, "pcid_prev"))))
    goto cleanup;
  *out = v;
  v = NULL;
  rc = MCIM_OK;
cleanup:
  json_decref(v);
  json_decref(slots);
  json_decref(staged);
  json_decref(pending);
  return rc;
}

mcim_cause_t tre_sign_statement(struct tre_soft *t, json_t *st, const char *typ, const char *aud,
                                const char *txn, json_t *extra, int64_t lifetime, char **jws)
{
  mcim_jose_key_t *key = NULL;
  const char *device = tre_str(st, "device");
  int64_t now = mcim_now();
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!typ || !aud || !*aud || !txn || !*txn || !jws || lifetime <= 0 ||
      lifetime > MCIM_TRE_MAX_LIFETIME || (extra && !json_is_object(extra)))
    goto cleanup;
  rc = tre_key_jose(t, st, MCIM_TRE_CERT_ATTESTATION, &key);
  if (rc != MCIM_OK)
    goto cleanup;
  mcim_claims_t c = {.iss = device,
                     .sub = device,
                     .aud = aud,
                     .typ = typ,
                     .txn = txn,
                     .iat = now,
                     .exp = now + lifetime,
                     .extra = extra};
  rc = mcim_jws_sign(key, &c, jws);
cleanup:
  mcim_jose_key_free(key);
  return rc;
}
