/* The TPM TRE's side of enrolment at the M2MES (include/mcim/attest.h; docs/tre-tpm.md,
 * "Enrolment"), and the key its quotes are signed with.
 *
 * The attestation key proper (MCIM_TPM_KEY_AK: restricted signing) is a third key of the TRE,
 * kept in the state as "keys": {"quote": {"tpm_public", "tpm_private", "tpm_parent"}}, made
 * at the first enrolment step. It signs TPM2_Quote and TPM2_Certify only; the unrestricted
 * "attestation" key keeps signing the JWS statements (their signing input is not a
 * TPM-generated structure, which a restricted key would refuse). A TRE without it (never
 * enrolled) does not quote: TPM_ENROLMENT_REQUIRED. */
#include <stdlib.h>
#include <string.h>

#include "mcim/attest.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_quote.h"

#define MEMBER_QUOTE "quote"

static struct tre_soft *tpm_tre(struct mcim_tre *tre)
{
  if (!tre || !tre->ops || !tre->ops->name || strcmp(tre->ops->name, TRE_BACKEND_TPM) != 0)
    return NULL;
  struct tre_soft *t = tre->ctx;
  return t && t->keys == &tre_keys_tpm ? t : NULL;
}

/* The member `which` of "keys" ("attestation", "ka", "quote") as a blob; MCIM_NOT_FOUND if
 * absent. */
static mcim_cause_t key_blob(json_t *st, const char *which, struct mcim_tpm_blob *out)
{
  json_t *k = json_object_get(json_object_get(st, "keys"), which);
  if (!k)
    return MCIM_NOT_FOUND;
  return mcim_tpm_blob_decode(tre_str(k, "tpm_public"), tre_str(k, "tpm_private"), out);
}

/* The connection with the storage primary checked against the name the KA key records (one
 * primary for every key of the TRE); *parent is that name's base64url (NULL: a TRE whose
 * primary is not persistent). */
static mcim_cause_t storage(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm, const char **parent)
{
  const char *p = tre_str(json_object_get(json_object_get(st, "keys"), "ka"), "tpm_parent");
  TPM2B_NAME name = {0};
  size_t len = 0;
  mcim_cause_t rc = tre_tpm_connection(t, tpm);

  *parent = p;
  if (rc != MCIM_OK || !p)
    return rc;
  if (mcim_b64url_decode(p, strlen(p), name.name, sizeof(name.name), &len) != MCIM_OK || len != 34)
    return MCIM_KEY_INVALID;
  name.size = (UINT16)len;
  return mcim_tpm_primary_use(*tpm, &name);
}

static mcim_cause_t load(struct tre_soft *t, json_t *st, const char *which,
                         enum mcim_tpm_key_kind kind, mcim_tpm_t **tpm, mcim_tpm_key_t **key)
{
  struct mcim_tpm_blob blob;
  const char *parent = NULL;
  mcim_cause_t rc = key_blob(st, which, &blob);
  if (rc == MCIM_OK)
    rc = storage(t, st, tpm, &parent);
  if (rc == MCIM_OK)
    rc = mcim_tpm_key_load(*tpm, kind, &blob, key);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot load the %s key: %s", which,
                   *tpm ? mcim_tpm_detail(*tpm) : "no TPM connection");
  return rc;
}

mcim_cause_t tre_tpm_quote_key(struct tre_soft *t, json_t *st, mcim_tpm_t **tpm,
                               mcim_tpm_key_t **key)
{
  if (!json_object_get(json_object_get(st, "keys"), MEMBER_QUOTE)) {
    /* never enrolled: the unrestricted JWS key would sign a forged TPMS_ATTEST */
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_TPM_ENROLMENT_REQUIRED,
                   "tre: no attestation key (the TPM was never enrolled): no TPM quote");
    return MCIM_TPM_ENROLMENT_REQUIRED;
  }
  return load(t, st, MEMBER_QUOTE, MCIM_TPM_KEY_AK, tpm, key);
}

/* The AK made in the TPM and added to the working copy `st`. */
static mcim_cause_t ak_create(struct tre_soft *t, json_t *st)
{
  struct mcim_tpm_blob blob = {0};
  mcim_tpm_t *tpm = NULL;
  const char *parent = NULL;
  char *pub = NULL, *priv = NULL;
  json_t *k = NULL;
  mcim_cause_t rc = storage(t, st, &tpm, &parent);

  if (rc == MCIM_OK)
    rc = mcim_tpm_key_create(tpm, MCIM_TPM_KEY_AK, &blob);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: cannot create the attestation key: %s",
                   tpm ? mcim_tpm_detail(tpm) : "no TPM connection");
    goto cleanup;
  }
  rc = mcim_tpm_blob_encode(&blob, &pub, &priv);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  k = json_pack("{s:s,s:s}", "tpm_public", pub, "tpm_private", priv);
  if (!k || (parent && json_object_set_new(k, "tpm_parent", json_string(parent))) ||
      json_object_set(json_object_get(st, "keys"), MEMBER_QUOTE, k))
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  json_decref(k);
  free(pub);
  free(priv);
  return rc;
}

/* `*out` (NULL on entry) = {`name`: the base64url of `bin`, `other`: `val`}, the base64url
 * wiped once copied in; MCIM_NO_MEMORY without `val`. */
static mcim_cause_t b64_object(json_t **out, const char *name, const uint8_t *bin, size_t len,
                               const char *other, json_t *val)
{
  char *s = mcim_b64url_dup(bin, len);
  if (s && val)
    *out = json_pack("{s:s,s:O}", name, s, other, val);
  if (s)
    mcim_wipe(s, strlen(s));
  free(s);
  return *out ? MCIM_OK : MCIM_NO_MEMORY;
}

/* The PCID's slot key (docs/tre-tpm.md, "The PCID credential's K"), made once with the AK;
 * the caller commits. */
static mcim_cause_t pcid_slot(struct tre_soft *t, json_t *st)
{
  if (json_object_get(st, TRE_PCID_SLOT))
    return MCIM_OK;
  return tre_tpm_pcid_slot_create(t, st);
}

mcim_cause_t mcim_tre_tpm_enrol_begin(struct mcim_tre *tre, json_t **out)
{
  struct tre_soft *t = tpm_tre(tre);
  struct mcim_tpm_blob ak;
  mcim_tpm_t *tpm = NULL;
  json_t *st = NULL, *ak_json = NULL;
  uint8_t *der = NULL;
  size_t der_len = 0;
  char *ak64 = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_NOT_FOUND;

  if (out)
    *out = NULL;
  if (!t)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (!out)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  /* made once: a repeated enrolment (a retried manufacture) enrols the same AK, and the same
   * slot key for the PCID credential's K */
  if (!json_object_get(json_object_get(st, "keys"), MEMBER_QUOTE)) {
    rc = ak_create(t, st);
    if (rc == MCIM_OK)
      rc = pcid_slot(t, st);
    if (rc == MCIM_OK)
      rc = tre_commit(t, st);
    if (rc != MCIM_OK)
      goto cleanup;
  }
  rc = key_blob(st, MEMBER_QUOTE, &ak);
  if (rc == MCIM_OK)
    rc = tre_tpm_connection(t, &tpm);
  if (rc == MCIM_OK && (rc = mcim_tpm_ek_cert(tpm, &der, &der_len)) != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: the TPM's EK certificate: %s",
                   mcim_tpm_detail(tpm));
  if (rc == MCIM_OK)
    rc = mcim_tpm_public_encode(&ak.pub, &ak64);
  if (rc != MCIM_OK)
    goto cleanup;
  ak_json = json_string(ak64);
  rc = b64_object(out, "ek_cert", der, der_len, "ak_public", ak_json);
cleanup:
  if (held)
    tre_end(t, st);
  json_decref(ak_json);
  free(der);
  free(ak64);
  return rc;
}

/* A base64url member of the challenge into `buf` (at most `cap` bytes, not empty). */
static bool member(const json_t *j, const char *name, uint8_t *buf, size_t cap, size_t *len)
{
  const char *s = json_string_value(json_object_get(j, name));
  return s && mcim_b64url_decode(s, strlen(s), buf, cap, len) == MCIM_OK && *len > 0;
}

/* TPM2_Certify of `obj` (public area `pub`) by the AK: {"public", "attest", "signature"}. */
static mcim_cause_t certify_json(mcim_tpm_t *tpm, mcim_tpm_key_t *ak, ESYS_TR obj,
                                 const TPM2B_PUBLIC *pub, const uint8_t *qual, size_t qual_len,
                                 json_t *into, const char *name)
{
  uint8_t *att = NULL, *sig = NULL;
  size_t alen = 0, slen = 0;
  char *p64 = NULL, *a64 = NULL, *s64 = NULL;
  mcim_cause_t rc = mcim_tpm_certify(tpm, ak, obj, qual, qual_len, &att, &alen, &sig, &slen);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM2_Certify of the %s key: %s", name,
                   mcim_tpm_detail(tpm));
    goto cleanup;
  }
  rc = mcim_tpm_public_encode(pub, &p64);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  a64 = mcim_b64url_dup(att, alen);
  s64 = mcim_b64url_dup(sig, slen);
  if (a64 && s64 &&
      json_object_set_new(
          into, name, json_pack("{s:s,s:s,s:s}", "public", p64, "attest", a64, "signature", s64)) ==
          0)
    rc = MCIM_OK;
cleanup:
  free(att);
  free(sig);
  free(p64);
  free(a64);
  free(s64);
  return rc;
}

mcim_cause_t mcim_tre_tpm_enrol_answer(struct mcim_tre *tre, const json_t *challenge, json_t **out)
{
  struct tre_soft *t = tpm_tre(tre);
  TPM2B_ID_OBJECT cred = {0};
  TPM2B_ENCRYPTED_SECRET enc = {0};
  struct mcim_tpm_blob blob;
  uint8_t qual[64], secret[64];
  size_t len = 0, qual_len = 0, secret_len = sizeof(secret);
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *ak = NULL, *k = NULL;
  json_t *st = NULL, *certs = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_NOT_FOUND;

  if (out)
    *out = NULL;
  if (!t)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (!out || !member(challenge, "credential", cred.credential, sizeof(cred.credential), &len))
    goto cleanup;
  cred.size = (UINT16)len;
  if (!member(challenge, "seed", enc.secret, sizeof(enc.secret), &len))
    goto cleanup;
  enc.size = (UINT16)len;
  if (!member(challenge, "nonce", qual, sizeof(qual), &qual_len))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  certs = json_object();
  if (!certs)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = load(t, st, MEMBER_QUOTE, MCIM_TPM_KEY_AK, &tpm, &ak);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_tpm_activate_credential(tpm, ak, &cred, &enc, secret, &secret_len);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: %s", mcim_tpm_detail(tpm));
    goto cleanup;
  }
  /* The TRE's other keys, certified by the AK over the M2MES's nonce: one loaded at a time
   * beside the AK (swtpm has 3 transient slots). */
  static const struct {
    const char *member;
    enum mcim_tpm_key_kind kind;
  } keys[] = {{"attestation", MCIM_TPM_KEY_SIGN}, {"ka", MCIM_TPM_KEY_ECDH}};
  for (size_t i = 0; rc == MCIM_OK && i < sizeof(keys) / sizeof(keys[0]); i++) {
    rc = key_blob(st, keys[i].member, &blob);
    if (rc == MCIM_OK)
      rc = load(t, st, keys[i].member, keys[i].kind, &tpm, &k);
    if (rc == MCIM_OK)
      rc = certify_json(tpm, ak, mcim_tpm_key_handle(k), &blob.pub, qual, qual_len, certs,
                        keys[i].member);
    mcim_tpm_key_free(k);
    k = NULL;
  }
  ESYS_TR primary = ESYS_TR_NONE;
  const TPM2B_PUBLIC *ppub = NULL;
  if (rc == MCIM_OK)
    rc = mcim_tpm_primary(tpm, &primary, &ppub);
  if (rc == MCIM_OK)
    rc = certify_json(tpm, ak, primary, ppub, qual, qual_len, certs, "storage");
  /* the fourth: the slot key the M2MES wraps the PCID credential's K to (a TRE whose
   * enrolment began before there was one makes it now) */
  json_t *pc = NULL;
  if (rc == MCIM_OK && !json_object_get(st, TRE_PCID_SLOT) && (rc = pcid_slot(t, st)) == MCIM_OK)
    rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    rc = tre_tpm_pcid_slot_certify(t, st, ak, qual, qual_len, &pc);
  if (rc == MCIM_OK && json_object_set_new(certs, "pcid", pc))
    rc = MCIM_NO_MEMORY;
  if (rc != MCIM_OK)
    goto cleanup;
  rc = b64_object(out, "activation", secret, secret_len, "certify", certs);
cleanup:
  mcim_wipe(secret, sizeof(secret));
  mcim_tpm_key_free(k);
  mcim_tpm_key_free(ak); /* before tre_end closes the connection */
  if (held)
    tre_end(t, st);
  json_decref(certs);
  return rc;
}
