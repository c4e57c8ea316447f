/* The issuer's side of K in a TPM (docs/tre-tpm.md, "K in the TPM", "Slots in the TPM"): what
 * an SHO, the DPF, the CCIF and the M2MES run, never the device. K is wrapped as a duplication
 * blob to a TPM device's key (its storage key, or the slot key of a procedure or of the PCID),
 * after the slot key's offer is checked: certified by the device's attestation key over the
 * txn, a restricted-use key of the expected attributes (include/mcim/tre.h). The device's side
 * (import, AKA in the TPM) is tre_tpm_slots.c. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h"
#include "tre/tpm/tpm_slot.h"
#include "tre/tre_priv.h"

static mcim_cause_t wrap_to(const TPM2B_PUBLIC *parent, const uint8_t k[16], json_t **out);

mcim_cause_t mcim_tre_wrap_k(EVP_PKEY *tpm_storage, const uint8_t k[16], json_t **out)
{
  uint8_t x[32], y[32];
  BIGNUM *bx = NULL, *by = NULL;
  TPM2B_PUBLIC parent;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!tpm_storage || !k || !out)
    return rc;
  *out = NULL;
  rc = MCIM_KEY_INVALID;
  if (!EVP_PKEY_get_bn_param(tpm_storage, OSSL_PKEY_PARAM_EC_PUB_X, &bx) ||
      !EVP_PKEY_get_bn_param(tpm_storage, OSSL_PKEY_PARAM_EC_PUB_Y, &by) ||
      BN_bn2binpad(bx, x, 32) != 32 || BN_bn2binpad(by, y, 32) != 32)
    goto cleanup;
  mcim_tpm_primary_public_of(x, y, &parent);
  rc = wrap_to(&parent, k, out);
cleanup:
  BN_free(bx);
  BN_free(by);
  return rc;
}

/* K as a duplication blob to the storage key `parent`, as a package's "k_tpm". */
static mcim_cause_t wrap_to(const TPM2B_PUBLIC *parent, const uint8_t k[16], json_t **out)
{
  struct mcim_tpm_dup dup;
  struct mcim_tpm_blob b;
  char *pub = NULL, *priv = NULL, *seed = NULL;
  mcim_cause_t rc = mcim_tpm_dup_aes128(parent, k, MCIM_TPM_AES_ATTRS, &dup);
  if (rc != MCIM_OK)
    goto cleanup;
  b.pub = dup.pub;
  b.priv = dup.dup;
  rc = mcim_tpm_blob_encode(&b, &pub, &priv);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  seed = malloc(mcim_b64url_len(dup.seed.size) + 1);
  if (!seed)
    goto cleanup;
  mcim_b64url_encode(dup.seed.secret, dup.seed.size, seed);
  *out = json_pack("{s:s, s:s, s:s}", MCIM_TPM_DUP_PUBLIC, pub, MCIM_TPM_DUP_DUPLICATE, priv,
                   MCIM_TPM_DUP_SEED, seed);
  rc = *out ? MCIM_OK : MCIM_NO_MEMORY;
cleanup:
  free(pub);
  free(priv);
  free(seed);
  return rc;
}

/* The SHO's side of the procedure's slot key (include/mcim/tre.h). */

/* A base64url member of the offer, at most `cap` bytes. */
static bool offer_member(const json_t *offer, const char *name, uint8_t *buf, size_t cap,
                         size_t *len)
{
  const char *v = json_string_value(json_object_get(offer, name));
  return v && mcim_b64url_decode(v, strlen(v), buf, cap, len) == MCIM_OK && *len > 0;
}

static mcim_cause_t slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, bool pcid,
                               char *err, size_t errlen)
{
  uint8_t qual[MCIM_TPM_SLOT_QUAL_LEN], att[1024], sig[sizeof(TPMT_SIGNATURE)];
  size_t alen = 0, slen = 0, off = 0;
  uint8_t x[32], y[32];
  BIGNUM *bx = NULL, *by = NULL;
  TPM2B_PUBLIC pub, ak_pub;
  TPMS_ATTEST a;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!ak || !txn)
    goto cleanup;
  rc = MCIM_UNSUPPORTED; /* tpm2-tss's marshalling, loaded at run time: not the device's fault */
  if (mcim_tss2_load(err, errlen) != MCIM_OK)
    goto cleanup;
  rc = MCIM_TPM_SLOT_KEY_MISSING;
  if (!offer) {
    mcim_detailf(err, errlen,
                 pcid ? "the renewal request offers no slot key" : "the quote offers no slot key");
    goto cleanup;
  }
  rc = MCIM_TPM_CERTIFY_INVALID;
  if (!json_is_object(offer) || json_object_size(offer) != 3 ||
      mcim_tpm_public_decode(json_string_value(json_object_get(offer, "public")), &pub) !=
          MCIM_OK ||
      !offer_member(offer, "attest", att, sizeof(att), &alen) ||
      !offer_member(offer, "signature", sig, sizeof(sig), &slen)) {
    mcim_detailf(err, errlen, "the slot key offer is not {public, attest, signature}");
    goto cleanup;
  }
  /* the AK as the M2MES certified it (its point; the rest of its public area does not enter
   * the signature's check) */
  rc = MCIM_KEY_INVALID;
  if (!EVP_PKEY_get_bn_param(ak, OSSL_PKEY_PARAM_EC_PUB_X, &bx) ||
      !EVP_PKEY_get_bn_param(ak, OSSL_PKEY_PARAM_EC_PUB_Y, &by) || BN_bn2binpad(bx, x, 32) != 32 ||
      BN_bn2binpad(by, y, 32) != 32)
    goto cleanup;
  memset(&ak_pub, 0, sizeof(ak_pub));
  ak_pub.publicArea.type = TPM2_ALG_ECC;
  ak_pub.publicArea.nameAlg = TPM2_ALG_SHA256;
  ak_pub.publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  ak_pub.publicArea.unique.ecc.x.size = 32;
  memcpy(ak_pub.publicArea.unique.ecc.x.buffer, x, 32);
  ak_pub.publicArea.unique.ecc.y.size = 32;
  memcpy(ak_pub.publicArea.unique.ecc.y.buffer, y, 32);
  if ((rc = (pcid ? mcim_tpm_pcid_slot_qual : mcim_tpm_slot_qual)(txn, qual)) != MCIM_OK)
    goto cleanup;
  rc = mcim_tpm_certify_check(&ak_pub, &pub, qual, sizeof(qual), att, alen, sig, slen, err, errlen);
  if (rc == MCIM_TPM_CERTIFY_INVALID) {
    /* a genuine certification over another qualifying data: another procedure's key */
    memset(&a, 0, sizeof(a));
    if (Tss2_MU_TPMS_ATTEST_Unmarshal(att, alen, &off, &a) == TSS2_RC_SUCCESS &&
        mcim_tpm_certify_check(&ak_pub, &pub, a.extraData.buffer, a.extraData.size, att, alen, sig,
                               slen, NULL, 0) == MCIM_OK) {
      rc = MCIM_TPM_SLOT_KEY_STALE;
      mcim_detailf(err, errlen, "the slot key was certified for another procedure");
    }
  }
  if (rc == MCIM_OK && !mcim_tpm_slot_public_check(&pub)) {
    rc = MCIM_TPM_KEY_ATTRIBUTES;
    mcim_detailf(err, errlen,
                 "the certified key is not a slot key (attributes 0x%08x, or its policy, "
                 "parameters): K wrapped to it might be rewrapped out of the TPM",
                 (unsigned)pub.publicArea.objectAttributes);
  }
cleanup:
  BN_free(bx);
  BN_free(by);
  return rc;
}

mcim_cause_t mcim_tre_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                 size_t errlen)
{
  return slot_check(ak, offer, txn, false, err, errlen);
}

mcim_cause_t mcim_tre_pcid_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                      size_t errlen)
{
  return slot_check(ak, offer, txn, true, err, errlen);
}

mcim_cause_t mcim_tre_wrap_k_slot(const json_t *offer, const uint8_t k[16], json_t **out)
{
  TPM2B_PUBLIC pub;
  if (!offer || !k || !out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (mcim_tpm_public_decode(json_string_value(json_object_get(offer, "public")), &pub) !=
          MCIM_OK ||
      !mcim_tpm_slot_public_check(&pub))
    return MCIM_KEY_INVALID;
  return wrap_to(&pub, k, out);
}
