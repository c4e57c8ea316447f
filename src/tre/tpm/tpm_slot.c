/* A slot's own storage key in the TPM (tpm_slot.h: what it is and why). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/util.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"
#include "tre/tpm/tpm_quote.h"
#include "tre/tpm/tpm_slot.h"

#define SLOT_ATTRS                                                                                 \
  (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |              \
   TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)

static bool rc_is(TSS2_RC r, TSS2_RC want)
{
  return (r & 0xffffu & ~(TSS2_RC)TPM2_RC_N_MASK) == want;
}

static void be32(uint8_t out[4], uint32_t v)
{
  out[0] = (uint8_t)(v >> 24);
  out[1] = (uint8_t)(v >> 16);
  out[2] = (uint8_t)(v >> 8);
  out[3] = (uint8_t)v;
}

/* policyDigest' = SHA-256(policyDigest || data), TPM 2.0 Part 3's update of each command. */
static void extend(uint8_t digest[32], const uint8_t *data, size_t len)
{
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  unsigned int n = 0;
  /* SHA-256 of a few bytes cannot fail but for memory; a zero digest then fails the policy */
  if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, digest, 32) != 1 ||
      EVP_DigestUpdate(c, data, len) != 1 || EVP_DigestFinal_ex(c, digest, &n) != 1)
    memset(digest, 0, 32);
  EVP_MD_CTX_free(c);
}

/* PolicyAuthValue, then PolicyCommandCode(cc), from an empty digest. */
static void branch(TPM2_CC cc, uint8_t out[32])
{
  uint8_t b[8];
  memset(out, 0, 32);
  be32(b, TPM2_CC_PolicyAuthValue);
  extend(out, b, 4);
  be32(b, TPM2_CC_PolicyCommandCode);
  be32(b + 4, cc);
  extend(out, b, 8);
}

/* The commands a slot key serves: TPM2_Import (K under it), TPM2_Load (K for AKA), and
 * TPM2_Certify (its public area signed by the attestation key, so that an SHO can wrap K to
 * it: tpm_slot.h, mcim_tpm_slot_import_own), which reveals nothing secret. */
static const TPM2_CC slot_commands[] = {TPM2_CC_Import, TPM2_CC_Load, TPM2_CC_Certify};
#define SLOT_COMMANDS (sizeof(slot_commands) / sizeof(slot_commands[0]))

static void branches(TPML_DIGEST *list)
{
  memset(list, 0, sizeof(*list));
  list->count = SLOT_COMMANDS;
  for (size_t i = 0; i < SLOT_COMMANDS; i++) {
    list->digests[i].size = 32;
    branch(slot_commands[i], list->digests[i].buffer);
  }
}

void mcim_tpm_slot_policy(TPM2B_DIGEST *policy)
{
  TPML_DIGEST list;
  uint8_t buf[4 + SLOT_COMMANDS * 32];
  branches(&list);
  be32(buf, TPM2_CC_PolicyOR);
  for (size_t i = 0; i < SLOT_COMMANDS; i++)
    memcpy(buf + 4 + 32 * i, list.digests[i].buffer, 32);
  /* PolicyOR resets the digest to zero before its update */
  memset(policy, 0, sizeof(*policy));
  policy->size = 32;
  extend(policy->buffer, buf, sizeof(buf));
}

/* A policy session that satisfies the slot key's policy for `cc`, for the one command that
 * follows (flushed by the caller). */
mcim_cause_t mcim_tpm_slot_session(mcim_tpm_t *t, TPM2_CC cc, ESYS_TR *session)
{
  const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
  TPML_DIGEST list;
  TSS2_RC r;

  *session = ESYS_TR_NONE;
  branches(&list);
  r = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none, TPM2_ALG_SHA256, session);
  if (r != TSS2_RC_SUCCESS) {
    *session = ESYS_TR_NONE;
    return mcim_tpm_fail(t, "TPM2_StartAuthSession (slot key policy)", r);
  }
  r = Esys_PolicyAuthValue(t->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE);
  if (r == TSS2_RC_SUCCESS)
    r = Esys_PolicyCommandCode(t->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, cc);
  if (r == TSS2_RC_SUCCESS)
    r = Esys_PolicyOR(t->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &list);
  if (r != TSS2_RC_SUCCESS) {
    (void)Esys_FlushContext(t->esys, *session);
    *session = ESYS_TR_NONE;
    return mcim_tpm_fail(t, "slot key policy (PolicyAuthValue, PolicyCommandCode, PolicyOR)", r);
  }
  return MCIM_OK;
}

static void session_end(mcim_tpm_t *t, ESYS_TR *session)
{
  if (*session != ESYS_TR_NONE)
    (void)Esys_FlushContext(t->esys, *session);
  *session = ESYS_TR_NONE;
}

/* The object at the slot's handle, if it has the recorded name: *tr (ESYS_TR_NONE and
 * MCIM_NOT_FOUND for an empty handle, MCIM_CONFLICT for another key), with the slot's
 * authValue set when `auth`. */
static mcim_cause_t slot_open(mcim_tpm_t *t, const struct mcim_tpm_slot *s, bool auth, ESYS_TR *tr)
{
  TPM2B_NAME *n = NULL;
  TPM2B_AUTH a;
  mcim_cause_t rc = MCIM_OK;
  TSS2_RC r =
      Esys_TR_FromTPMPublic(t->esys, s->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
  if (r == TPM2_RC_OBJECT_MEMORY && mcim_tpm_flush_strays(t) == MCIM_OK)
    r = Esys_TR_FromTPMPublic(t->esys, s->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
  if (rc_is(r, TPM2_RC_HANDLE)) {
    *tr = ESYS_TR_NONE;
    return mcim_tpm_failf(t, MCIM_NOT_FOUND,
                          "no key at persistent handle 0x%08x: the slot's storage key was "
                          "destroyed (its MCIM discarded), or another TPM",
                          (unsigned)s->handle);
  }
  if (r != TSS2_RC_SUCCESS) {
    *tr = ESYS_TR_NONE;
    return mcim_tpm_fail(t, "TPM2_ReadPublic (slot key)", r);
  }
  r = Esys_TR_GetName(t->esys, *tr, &n);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "Esys_TR_GetName (slot key)", r);
    goto cleanup;
  }
  if (n->size != s->name.size || memcmp(n->name, s->name.name, n->size) != 0) {
    rc = mcim_tpm_failf(t, MCIM_CONFLICT,
                        "the key at persistent handle 0x%08x is not the slot's storage key "
                        "(another name): refused",
                        (unsigned)s->handle);
    goto cleanup;
  }
  if (auth) {
    memset(&a, 0, sizeof(a));
    a.size = MCIM_TPM_SLOT_AUTH_LEN;
    memcpy(a.buffer, s->auth, MCIM_TPM_SLOT_AUTH_LEN);
    r = Esys_TR_SetAuth(t->esys, *tr, &a);
    mcim_wipe(&a, sizeof(a));
    if (r != TSS2_RC_SUCCESS)
      rc = mcim_tpm_fail(t, "Esys_TR_SetAuth (slot key)", r);
  }
cleanup:
  Esys_Free(n);
  if (rc != MCIM_OK) {
    (void)Esys_TR_Close(t->esys, tr);
    *tr = ESYS_TR_NONE;
  }
  return rc;
}

/* A handle of the range that nothing occupies. */
static mcim_cause_t free_handle(mcim_tpm_t *t, TPM2_HANDLE *out)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  mcim_cause_t rc = MCIM_TOO_LARGE;
  TSS2_RC r =
      Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                         MCIM_TPM_SLOT_HANDLE_FIRST, MCIM_TPM_SLOT_HANDLES, &more, &cap);
  if (r != TSS2_RC_SUCCESS)
    return mcim_tpm_fail(t, "TPM2_GetCapability (persistent handles)", r);
  /* the TPM lists the handles from the first asked, ascending */
  TPM2_HANDLE h = MCIM_TPM_SLOT_HANDLE_FIRST;
  for (UINT32 i = 0; i < cap->data.handles.count && cap->data.handles.handle[i] == h; i++)
    h++;
  if (h < MCIM_TPM_SLOT_HANDLE_FIRST + MCIM_TPM_SLOT_HANDLES) {
    *out = h;
    rc = MCIM_OK;
  } else {
    rc = mcim_tpm_failf(t, MCIM_TOO_LARGE, "no free persistent handle for a slot key (0x%08x, %d)",
                        (unsigned)MCIM_TPM_SLOT_HANDLE_FIRST, MCIM_TPM_SLOT_HANDLES);
  }
  Esys_Free(cap);
  return rc;
}

mcim_cause_t mcim_tpm_slot_create(mcim_tpm_t *t, struct mcim_tpm_slot *out)
{
  TPM2B_SENSITIVE_CREATE sens = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  TPM2B_PUBLIC tmpl = {0};
  TPM2B_PRIVATE *priv = NULL;
  TPM2B_PUBLIC *pub = NULL;
  ESYS_TR parent = ESYS_TR_NONE, loaded = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t || !out)
    return rc;
  memset(out, 0, sizeof(*out));
  if ((rc = mcim_tpm_primary(t, &parent, NULL)) != MCIM_OK)
    goto cleanup;
  if ((rc = mcim_random(out->auth, sizeof(out->auth))) != MCIM_OK)
    goto cleanup;
  sens.sensitive.userAuth.size = MCIM_TPM_SLOT_AUTH_LEN;
  memcpy(sens.sensitive.userAuth.buffer, out->auth, MCIM_TPM_SLOT_AUTH_LEN);
  /* the storage primary's parameters (AES-128-CFB for the children, ECC P-256: what the
   * SHO's duplication seed is made for), with the slot's policy */
  TPMT_PUBLIC *p = &tmpl.publicArea;
  p->type = TPM2_ALG_ECC;
  p->nameAlg = TPM2_ALG_SHA256;
  p->objectAttributes = SLOT_ATTRS;
  mcim_tpm_slot_policy(&p->authPolicy);
  p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  p->parameters.eccDetail.symmetric.keyBits.aes = 128;
  p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  r = Esys_Create(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl,
                  &no_outside, &no_pcrs, &priv, &pub, NULL, NULL, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Create (slot key)", r);
    goto cleanup;
  }
  if ((rc = mcim_tpm_public_name(pub, &out->name)) != MCIM_OK)
    goto cleanup;
  r = Esys_Load(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &loaded);
  if (r == TPM2_RC_OBJECT_MEMORY && mcim_tpm_flush_strays(t) == MCIM_OK)
    r = Esys_Load(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub,
                  &loaded);
  if (r != TSS2_RC_SUCCESS) {
    loaded = ESYS_TR_NONE;
    rc = mcim_tpm_fail(t, "TPM2_Load (slot key)", r);
    goto cleanup;
  }
  if ((rc = free_handle(t, &out->handle)) != MCIM_OK)
    goto cleanup;
  /* persistent, and its private blob dropped below: the TPM holds the only copy, which
   * TPM2_EvictControl destroys (mcim_tpm_slot_destroy) */
  r = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                        ESYS_TR_NONE, out->handle, &persistent);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_EvictControl (slot key)", r);
    goto cleanup;
  }
  (void)Esys_TR_Close(t->esys, &persistent);
  rc = MCIM_OK;
cleanup:
  if (loaded != ESYS_TR_NONE)
    (void)Esys_FlushContext(t->esys, loaded);
  if (priv)
    OPENSSL_cleanse(priv, sizeof(*priv));
  Esys_Free(priv);
  Esys_Free(pub);
  mcim_wipe(&sens, sizeof(sens));
  if (rc != MCIM_OK)
    mcim_wipe(out, sizeof(*out));
  return rc;
}

/* TPM2_Import of `pub` (duplicate and seed wrapped to the slot key) under the open slot key. */
static mcim_cause_t import_under(mcim_tpm_t *t, ESYS_TR slot, const TPM2B_PUBLIC *pub,
                                 const TPM2B_PRIVATE *duplicate, const TPM2B_ENCRYPTED_SECRET *seed,
                                 struct mcim_tpm_blob *out)
{
  const TPM2B_DATA no_inner_key = {0};
  const TPMT_SYM_DEF_OBJECT no_inner = {.algorithm = TPM2_ALG_NULL};
  TPM2B_PRIVATE *priv = NULL;
  ESYS_TR session = ESYS_TR_NONE;
  mcim_cause_t rc = mcim_tpm_slot_session(t, TPM2_CC_Import, &session);
  TSS2_RC r;

  if (rc != MCIM_OK)
    return rc;
  r = Esys_Import(t->esys, slot, session, ESYS_TR_NONE, ESYS_TR_NONE, &no_inner_key, pub, duplicate,
                  seed, &no_inner, &priv);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Import (under the slot key)", r);
  } else {
    out->pub = *pub;
    out->priv = *priv;
  }
  session_end(t, &session);
  if (priv)
    OPENSSL_cleanse(priv, sizeof(*priv));
  Esys_Free(priv);
  return rc;
}

mcim_cause_t mcim_tpm_slot_import_own(mcim_tpm_t *t, const struct mcim_tpm_slot *s,
                                      const struct mcim_tpm_dup *dup, struct mcim_tpm_blob *out)
{
  ESYS_TR slot = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !s || !dup || !out)
    return rc;
  memset(out, 0, sizeof(*out));
  if ((rc = slot_open(t, s, true, &slot)) == MCIM_OK)
    rc = import_under(t, slot, &dup->pub, &dup->dup, &dup->seed, out);
  if (slot != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &slot);
  return rc;
}

mcim_cause_t mcim_tpm_slot_public(mcim_tpm_t *t, const struct mcim_tpm_slot *s, TPM2B_PUBLIC *out,
                                  ESYS_TR *tr)
{
  TPM2B_PUBLIC *pub = NULL;
  ESYS_TR slot = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (tr)
    *tr = ESYS_TR_NONE;
  if (!t || !s || !out)
    return rc;
  if ((rc = slot_open(t, s, tr != NULL, &slot)) != MCIM_OK)
    return rc;
  r = Esys_ReadPublic(t->esys, slot, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_ReadPublic (slot key)", r);
  } else {
    *out = *pub;
    rc = MCIM_OK;
  }
  Esys_Free(pub);
  if (rc == MCIM_OK && tr)
    *tr = slot;
  else
    (void)Esys_TR_Close(t->esys, &slot);
  return rc;
}

mcim_cause_t mcim_tpm_slot_load(mcim_tpm_t *t, const struct mcim_tpm_slot *s,
                                const struct mcim_tpm_blob *blob, mcim_tpm_aes_t **out)
{
  ESYS_TR slot = ESYS_TR_NONE, session = ESYS_TR_NONE, k = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r = TPM2_RC_OBJECT_MEMORY;

  if (!out)
    return rc;
  *out = NULL;
  if (!t || !s || !blob)
    return rc;
  rc = slot_open(t, s, true, &slot);
  if (rc != MCIM_OK)
    goto cleanup;
  /* a policy session serves one command: a second try (the strays flushed) needs another */
  for (int tries = 0; tries < 2 && r == TPM2_RC_OBJECT_MEMORY; tries++) {
    if (tries && mcim_tpm_flush_strays(t) != MCIM_OK)
      break;
    session_end(t, &session);
    if ((rc = mcim_tpm_slot_session(t, TPM2_CC_Load, &session)) != MCIM_OK)
      goto cleanup;
    r = Esys_Load(t->esys, slot, session, ESYS_TR_NONE, ESYS_TR_NONE, &blob->priv, &blob->pub, &k);
  }
  if (r != TSS2_RC_SUCCESS) {
    k = ESYS_TR_NONE;
    rc = mcim_tpm_fail(t, "TPM2_Load (K under the slot key)", r);
    goto cleanup;
  }
  rc = mcim_tpm_aes_adopt(t, k, out);
  k = ESYS_TR_NONE; /* the key's now, also on failure */
cleanup:
  session_end(t, &session);
  if (slot != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &slot);
  return rc;
}

mcim_cause_t mcim_tpm_slot_destroy(mcim_tpm_t *t, const struct mcim_tpm_slot *s, bool *gone)
{
  ESYS_TR slot = ESYS_TR_NONE, none = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (gone)
    *gone = false;
  if (!t || !s)
    return rc;
  rc = slot_open(t, s, false, &slot);
  if (rc == MCIM_NOT_FOUND || rc == MCIM_CONFLICT)
    return MCIM_OK; /* destroyed already; a key there now is another slot's, never ours */
  if (rc != MCIM_OK)
    return rc;
  r = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, slot, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                        ESYS_TR_NONE, s->handle, &none);
  if (r != TSS2_RC_SUCCESS) {
    (void)Esys_TR_Close(t->esys, &slot);
    return mcim_tpm_fail(t, "TPM2_EvictControl (destroying a slot key)", r);
  }
  /* ESAPI forgets an evicted object's handle itself */
  if (gone)
    *gone = true;
  return MCIM_OK;
}

/* ---- K wrapped by the SHO straight to a slot key ---- */

static mcim_cause_t slot_qual(const char *label, size_t label_len, const char *txn,
                              uint8_t out[MCIM_TPM_SLOT_QUAL_LEN])
{
  EVP_MD_CTX *c = NULL;
  unsigned int n = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!txn || !*txn || !out)
    return rc;
  rc = MCIM_CRYPTO_ERROR;
  c = EVP_MD_CTX_new();
  if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
      EVP_DigestUpdate(c, label, label_len) == 1 && EVP_DigestUpdate(c, txn, strlen(txn)) == 1 &&
      EVP_DigestFinal_ex(c, out, &n) == 1 && n == MCIM_TPM_SLOT_QUAL_LEN)
    rc = MCIM_OK;
  EVP_MD_CTX_free(c);
  return rc;
}

mcim_cause_t mcim_tpm_slot_qual(const char *txn, uint8_t out[MCIM_TPM_SLOT_QUAL_LEN])
{
  static const char label[] = "mcim-slot-key"; /* with its NUL: the txn follows */
  return slot_qual(label, sizeof(label), txn, out);
}

mcim_cause_t mcim_tpm_pcid_slot_qual(const char *txn, uint8_t out[MCIM_TPM_SLOT_QUAL_LEN])
{
  static const char label[] = "mcim-pcid-slot"; /* with its NUL: the txn follows */
  return slot_qual(label, sizeof(label), txn, out);
}

mcim_cause_t mcim_tpm_slot_certify(mcim_tpm_t *t, const struct mcim_tpm_slot *s, mcim_tpm_key_t *ak,
                                   const uint8_t *qual, size_t qual_len, uint8_t **attest,
                                   size_t *attest_len, uint8_t **sig, size_t *sig_len)
{
  TPMT_SIG_SCHEME scheme;
  TPM2B_DATA q = {0};
  TPM2B_PUBLIC pub;
  TPM2B_ATTEST *a = NULL;
  TPMT_SIGNATURE *sg = NULL;
  ESYS_TR slot = ESYS_TR_NONE, session = ESYS_TR_NONE;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (attest)
    *attest = NULL;
  if (sig)
    *sig = NULL;
  if (!t || !s || !ak || !attest || !attest_len || !sig || !sig_len || qual_len > sizeof(q.buffer))
    return rc;
  memset(&scheme, 0, sizeof(scheme));
  scheme.scheme = TPM2_ALG_NULL; /* the AK's own: ECDSA-SHA256 */
  q.size = (UINT16)qual_len;
  if (qual_len)
    memcpy(q.buffer, qual, qual_len);
  /* the key opened with its authValue set: the policy's Certify branch needs it */
  if ((rc = mcim_tpm_slot_public(t, s, &pub, &slot)) != MCIM_OK ||
      (rc = mcim_tpm_slot_session(t, TPM2_CC_Certify, &session)) != MCIM_OK)
    goto cleanup;
  r = Esys_Certify(t->esys, slot, mcim_tpm_key_handle(ak), session, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                   &q, &scheme, &a, &sg);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_Certify (slot key)", r);
    goto cleanup;
  }
  rc = mcim_tpm_attest_out(t, a, sg, NULL, attest, attest_len, sig, sig_len);
cleanup:
  session_end(t, &session);
  if (slot != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &slot);
  if (rc != MCIM_OK) {
    free(*attest);
    free(*sig);
    *attest = NULL;
    *sig = NULL;
  }
  Esys_Free(a);
  Esys_Free(sg);
  return rc;
}

bool mcim_tpm_slot_public_check(const TPM2B_PUBLIC *pub)
{
  TPM2B_DIGEST policy;
  if (!pub)
    return false;
  const TPMT_PUBLIC *p = &pub->publicArea;
  const TPMS_ECC_PARMS *e = &p->parameters.eccDetail;
  mcim_tpm_slot_policy(&policy);
  return p->type == TPM2_ALG_ECC && p->nameAlg == TPM2_ALG_SHA256 &&
         p->objectAttributes == SLOT_ATTRS && p->authPolicy.size == policy.size &&
         memcmp(p->authPolicy.buffer, policy.buffer, policy.size) == 0 &&
         e->symmetric.algorithm == TPM2_ALG_AES && e->symmetric.keyBits.aes == 128 &&
         e->symmetric.mode.aes == TPM2_ALG_CFB && e->scheme.scheme == TPM2_ALG_NULL &&
         e->curveID == TPM2_ECC_NIST_P256 && e->kdf.scheme == TPM2_ALG_NULL &&
         p->unique.ecc.x.size == 32 && p->unique.ecc.y.size == 32;
}
