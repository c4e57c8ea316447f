/* The storage primary key (tpm.h), and names of public areas. */
#include <openssl/evp.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_priv.h"

/* The storage key template of the TCG "TPM v2.0 Provisioning Guidance" (ECC NIST P-256 SRK):
 * restricted decrypt, AES-128-CFB for its children, the unique field empty. Nothing in it is
 * random, so the TPM derives the same key from the owner hierarchy's seed every time. */
static const TPM2B_PUBLIC primary_template = {
    .publicArea =
        {
            .type = TPM2_ALG_ECC,
            .nameAlg = TPM2_ALG_SHA256,
            .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
            .parameters.eccDetail =
                {
                    .symmetric = {.algorithm = TPM2_ALG_AES,
                                  .keyBits.aes = 128,
                                  .mode.aes = TPM2_ALG_CFB},
                    .scheme = {.scheme = TPM2_ALG_NULL},
                    .curveID = TPM2_ECC_NIST_P256,
                    .kdf = {.scheme = TPM2_ALG_NULL},
                },
        },
};

mcim_cause_t mcim_tpm_primary(mcim_tpm_t *t, ESYS_TR *handle, const TPM2B_PUBLIC **pub)
{
  const TPM2B_SENSITIVE_CREATE no_auth = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  TSS2_RC r;

  if (!t)
    return MCIM_INVALID_ARGUMENT;
  if (t->primary == ESYS_TR_NONE) {
    r = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &no_auth, &primary_template, &no_outside, &no_pcrs, &t->primary,
                           &t->primary_pub, NULL, NULL, NULL);
    /* every slot taken by objects a dead process left (swtpm): free them, once */
    if (r == TPM2_RC_OBJECT_MEMORY && mcim_tpm_flush_strays(t) == MCIM_OK)
      r = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE, &no_auth, &primary_template, &no_outside, &no_pcrs,
                             &t->primary, &t->primary_pub, NULL, NULL, NULL);
    if (r != TSS2_RC_SUCCESS) {
      t->primary = ESYS_TR_NONE;
      return mcim_tpm_fail(t, "TPM2_CreatePrimary (storage key)", r);
    }
  }
  /* the persistent primary's public area is read only when someone asks for it */
  if (pub && !t->primary_pub) {
    r = Esys_ReadPublic(t->esys, t->primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                        &t->primary_pub, NULL, NULL);
    if (r != TSS2_RC_SUCCESS)
      return mcim_tpm_fail(t, "TPM2_ReadPublic (storage key)", r);
  }
  if (handle)
    *handle = t->primary;
  if (pub)
    *pub = t->primary_pub;
  return MCIM_OK;
}

void mcim_tpm_primary_public_of(const uint8_t x[32], const uint8_t y[32], TPM2B_PUBLIC *out)
{
  *out = primary_template;
  out->publicArea.unique.ecc.x.size = 32;
  memcpy(out->publicArea.unique.ecc.x.buffer, x, 32);
  out->publicArea.unique.ecc.y.size = 32;
  memcpy(out->publicArea.unique.ecc.y.buffer, y, 32);
}

static bool same_name(const TPM2B_NAME *a, const TPM2B_NAME *b)
{
  return a->size == b->size && a->size <= sizeof(a->name) &&
         memcmp(a->name, b->name, a->size) == 0;
}

/* The first bytes of a name's digest, for a log line. */
static void name_hex(const TPM2B_NAME *n, char out[17])
{
  static const char hex[] = "0123456789abcdef";
  size_t i = 0;
  for (; i < 8 && (size_t)2 + i < n->size; i++) {
    out[2 * i] = hex[n->name[2 + i] >> 4];
    out[2 * i + 1] = hex[n->name[2 + i] & 0xf];
  }
  out[2 * i] = '\0';
}

/* The key at MCIM_TPM_PRIMARY_HANDLE as an ESAPI object, and its name (ESAPI reads the public
 * area with TPM2_ReadPublic and computes the name from it). MCIM_NOT_FOUND when the handle
 * is empty. */
static mcim_cause_t persistent_lookup(mcim_tpm_t *t, ESYS_TR *tr, TPM2B_NAME *name)
{
  TPM2B_NAME *n = NULL;
  TSS2_RC r = Esys_TR_FromTPMPublic(t->esys, MCIM_TPM_PRIMARY_HANDLE, ESYS_TR_NONE,
                                    ESYS_TR_NONE, ESYS_TR_NONE, tr);
  /* a persistent object is read through a transient slot: all taken by objects a dead
   * process left (swtpm), free them, once */
  if (r == TPM2_RC_OBJECT_MEMORY && mcim_tpm_flush_strays(t) == MCIM_OK)
    r = Esys_TR_FromTPMPublic(t->esys, MCIM_TPM_PRIMARY_HANDLE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, tr);
  if ((r & 0xffffu & ~(TSS2_RC)TPM2_RC_N_MASK) == TPM2_RC_HANDLE) {
    *tr = ESYS_TR_NONE;
    return MCIM_NOT_FOUND;
  }
  if (r != TSS2_RC_SUCCESS) {
    *tr = ESYS_TR_NONE;
    return mcim_tpm_fail(t, "TPM2_ReadPublic (persistent storage key)", r);
  }
  r = Esys_TR_GetName(t->esys, *tr, &n);
  if (r != TSS2_RC_SUCCESS) {
    (void)Esys_TR_Close(t->esys, tr);
    return mcim_tpm_fail(t, "Esys_TR_GetName (persistent storage key)", r);
  }
  *name = *n;
  Esys_Free(n);
  return MCIM_OK;
}

/* Forget the transient primary (if any) and use `tr`, the persistent one. */
static void use_persistent(mcim_tpm_t *t, ESYS_TR tr)
{
  if (t->primary != ESYS_TR_NONE && !t->primary_persistent)
    (void)Esys_FlushContext(t->esys, t->primary);
  Esys_Free(t->primary_pub);
  t->primary_pub = NULL;
  t->primary = tr;
  t->primary_persistent = true;
}

mcim_cause_t mcim_tpm_primary_persist(mcim_tpm_t *t, TPM2B_NAME *name)
{
  const TPM2B_PUBLIC *pub = NULL;
  ESYS_TR transient = ESYS_TR_NONE, tr = ESYS_TR_NONE;
  TPM2B_NAME want = {0}, found = {0};
  char hw[17], hf[17];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t || !name)
    goto cleanup;
  /* the key the template gives under this owner seed, and its name */
  if ((rc = mcim_tpm_primary(t, &transient, &pub)) != MCIM_OK ||
      (rc = mcim_tpm_public_name(pub, &want)) != MCIM_OK)
    goto cleanup;
  if (t->primary_persistent)
    goto found; /* already in use on this connection */
  rc = persistent_lookup(t, &tr, &found);
  if (rc == MCIM_NOT_FOUND) {
    r = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, MCIM_TPM_PRIMARY_HANDLE, &tr);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "TPM2_EvictControl (storage key to 0x81004d43)", r);
      goto cleanup;
    }
    found = want;
  } else if (rc != MCIM_OK) {
    goto cleanup;
  }
  if (!same_name(&found, &want)) {
    name_hex(&found, hf);
    name_hex(&want, hw);
    rc = mcim_tpm_failf(t, MCIM_TPM_ERROR,
                        "persistent handle 0x%08x holds another key (name %s..., the storage "
                        "key's is %s...): not replaced",
                        (unsigned)MCIM_TPM_PRIMARY_HANDLE, hf, hw);
    (void)Esys_TR_Close(t->esys, &tr);
    goto cleanup;
  }
  use_persistent(t, tr);
found:
  *name = want;
  rc = MCIM_OK;
cleanup:
  return rc;
}

mcim_cause_t mcim_tpm_primary_use(mcim_tpm_t *t, const TPM2B_NAME *recorded)
{
  ESYS_TR tr = ESYS_TR_NONE;
  TPM2B_NAME found = {0};
  char hr[17], hf[17];
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !recorded)
    goto cleanup;
  if (t->primary_persistent) {
    TPM2B_NAME *n = NULL;
    TSS2_RC r = Esys_TR_GetName(t->esys, t->primary, &n);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "Esys_TR_GetName (persistent storage key)", r);
      goto cleanup;
    }
    found = *n;
    Esys_Free(n);
  } else {
    rc = persistent_lookup(t, &tr, &found);
    if (rc == MCIM_NOT_FOUND) {
      rc = mcim_tpm_failf(t, MCIM_TPM_ERROR,
                          "no key at persistent handle 0x%08x, where the TRE's storage key was "
                          "made persistent at manufacture: another TPM, or it was cleared",
                          (unsigned)MCIM_TPM_PRIMARY_HANDLE);
      goto cleanup;
    }
    if (rc != MCIM_OK)
      goto cleanup;
  }
  if (!same_name(&found, recorded)) {
    name_hex(&found, hf);
    name_hex(recorded, hr);
    rc = mcim_tpm_failf(t, MCIM_TPM_ERROR,
                        "the key at persistent handle 0x%08x (name %s...) is not the storage "
                        "key recorded in the TRE's state at manufacture (%s...): refused",
                        (unsigned)MCIM_TPM_PRIMARY_HANDLE, hf, hr);
    goto cleanup;
  }
  if (tr != ESYS_TR_NONE) {
    use_persistent(t, tr);
    tr = ESYS_TR_NONE;
  }
  rc = MCIM_OK;
cleanup:
  if (tr != ESYS_TR_NONE)
    (void)Esys_TR_Close(t->esys, &tr);
  return rc;
}

mcim_cause_t mcim_tpm_public_name(const TPM2B_PUBLIC *pub, TPM2B_NAME *name)
{
  uint8_t buf[sizeof(TPMT_PUBLIC)];
  size_t len = 0;
  unsigned int dlen = 0;

  if (!pub || !name)
    return MCIM_INVALID_ARGUMENT;
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    return MCIM_UNSUPPORTED;
  if (pub->publicArea.nameAlg != TPM2_ALG_SHA256)
    return MCIM_UNSUPPORTED;
  if (Tss2_MU_TPMT_PUBLIC_Marshal(&pub->publicArea, buf, sizeof(buf), &len) != TSS2_RC_SUCCESS)
    return MCIM_INVALID_ARGUMENT;
  /* nameAlg (big-endian) || SHA-256(TPMT_PUBLIC) */
  name->name[0] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
  name->name[1] = (uint8_t)(TPM2_ALG_SHA256 & 0xff);
  if (EVP_Digest(buf, len, name->name + 2, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
    return MCIM_CRYPTO_ERROR;
  name->size = (UINT16)(2 + dlen);
  return MCIM_OK;
}

mcim_cause_t mcim_tpm_flush_strays(mcim_tpm_t *t)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  TPM2_HANDLE mine = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  TSS2_RC r;

  if (!t)
    goto cleanup;
  if (t->primary != ESYS_TR_NONE &&
      (r = Esys_TR_GetTpmHandle(t->esys, t->primary, &mine)) != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "Esys_TR_GetTpmHandle", r);
    goto cleanup;
  }
  /* the first transient handle, 0x80000000: tss2's TPM2_TRANSIENT_FIRST shifts an int into
   * its sign bit (undefined behaviour) */
  r = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                         UINT32_C(0x80000000), TPM2_MAX_CAP_HANDLES, &more, &cap);
  if (r != TSS2_RC_SUCCESS) {
    rc = mcim_tpm_fail(t, "TPM2_GetCapability (transient handles)", r);
    goto cleanup;
  }
  for (UINT32 i = 0; i < cap->data.handles.count; i++) {
    TPM2_HANDLE h = cap->data.handles.handle[i];
    ESYS_TR tr = ESYS_TR_NONE;
    if (h == mine)
      continue;
    /* ESAPI flushes by its own handles: make one for the TPM's, then flush it */
    r = Esys_TR_FromTPMPublic(t->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
    if (r == TSS2_RC_SUCCESS)
      r = Esys_FlushContext(t->esys, tr);
    if (r != TSS2_RC_SUCCESS) {
      rc = mcim_tpm_fail(t, "TPM2_FlushContext (a stray object)", r);
      goto cleanup;
    }
  }
  rc = MCIM_OK;
cleanup:
  Esys_Free(cap);
  return rc;
}

mcim_cause_t mcim_tpm_load(mcim_tpm_t *t, const struct mcim_tpm_blob *blob, const char *what,
                           ESYS_TR *handle)
{
  ESYS_TR parent = ESYS_TR_NONE;
  mcim_cause_t rc = mcim_tpm_primary(t, &parent, NULL);
  TSS2_RC r;

  *handle = ESYS_TR_NONE;
  if (rc != MCIM_OK)
    return rc;
  r = Esys_Load(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &blob->priv,
                &blob->pub, handle);
  if (r == TPM2_RC_OBJECT_MEMORY && mcim_tpm_flush_strays(t) == MCIM_OK)
    r = Esys_Load(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &blob->priv,
                  &blob->pub, handle);
  if (r != TSS2_RC_SUCCESS) {
    *handle = ESYS_TR_NONE;
    return mcim_tpm_fail(t, what, r);
  }
  return MCIM_OK;
}
