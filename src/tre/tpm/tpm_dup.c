/* The host side of TPM2_Import (tpm.h): a duplication blob of a raw AES-128 key, wrapped to
 * a TPM storage key's public key, built with OpenSSL alone. This is what an SHO will run to
 * send K to a device's TPM: neither the RO nor the device's agent can open the blob; only the
 * TPM that holds the storage key's private part can, and only to import it.
 *
 * TPM 2.0 Library Part 1, "Protected Storage" and "Duplication" (outer wrapper only, no
 * inner wrapper), for a storage key with an ECC P-256 key, nameAlg SHA-256, AES-128-CFB:
 *
 *   sensitive = TPMT_SENSITIVE {SYMCIPHER, authValue empty, seedValue 32 random bytes, K}
 *   public    = TPMT_PUBLIC {SYMCIPHER, SHA-256, attrs, authPolicy empty,
 *                            AES-128-ECB, unique = SHA-256(seedValue || K)}
 *   name      = 0x000b || SHA-256(public)
 *   (e, E)    = a fresh P-256 key;  Z = x(e * parent's public point)
 *   seed      = KDFe(SHA-256, Z, "DUPLICATE", E.x, parent.x, 256)
 *   symKey    = KDFa(SHA-256, seed, "STORAGE", name, "", 128)
 *   hmacKey   = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)
 *   encSens   = AES-128-CFB(symKey, IV = 0, TPM2B_SENSITIVE(sensitive))
 *   duplicate = TPM2B_DIGEST(HMAC-SHA-256(hmacKey, encSens || name)) || encSens
 *   inSymSeed = TPMS_ECC_POINT E
 *
 * Labels are NUL-terminated and the NUL is hashed (the TPM's KDFs add it). */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"

enum { DLEN = 32, PLEN = 32, SYMLEN = 16 }; /* SHA-256, P-256 coordinates, AES-128 */

static void be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* KDFa (SP 800-108 counter mode, HMAC-SHA-256) for at most one block: `bits` <= 256. */
static mcim_cause_t kdfa(const uint8_t seed[DLEN], const char *label, const uint8_t *ctx_u,
                         size_t ctx_u_len, uint32_t bits, uint8_t *out)
{
  uint8_t in[4 + 16 + sizeof(TPMU_NAME) + 4], mac[DLEN];
  size_t llen = strlen(label) + 1, n = 0, maclen = 0;
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;

  if (bits == 0 || bits > 8 * DLEN || llen > 16 || ctx_u_len > sizeof(TPMU_NAME))
    return MCIM_INVALID_ARGUMENT;
  be32(in, 1);
  n = 4;
  memcpy(in + n, label, llen); /* with its NUL */
  n += llen;
  if (ctx_u_len) {
    memcpy(in + n, ctx_u, ctx_u_len);
    n += ctx_u_len;
  }
  be32(in + n, bits);
  n += 4;
  if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, seed, DLEN, in, n, mac, sizeof(mac),
                 &maclen) ||
      maclen != DLEN)
    goto cleanup;
  memcpy(out, mac, bits / 8);
  rc = MCIM_OK;
cleanup:
  OPENSSL_cleanse(mac, sizeof(mac));
  OPENSSL_cleanse(in, sizeof(in));
  return rc;
}

/* KDFe (SP 800-56A concatenation, SHA-256) for one block: the seed of the outer wrapper. */
static mcim_cause_t kdfe(const uint8_t z[PLEN], const uint8_t party_u[PLEN],
                         const uint8_t party_v[PLEN], uint8_t seed[DLEN])
{
  static const char use[] = "DUPLICATE"; /* sizeof includes the NUL, which is hashed */
  uint8_t in[4 + PLEN + sizeof(use) + 2 * PLEN];
  unsigned int dlen = 0;
  size_t n = 0;
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;

  be32(in, 1);
  n = 4;
  memcpy(in + n, z, PLEN);
  n += PLEN;
  memcpy(in + n, use, sizeof(use));
  n += sizeof(use);
  memcpy(in + n, party_u, PLEN);
  n += PLEN;
  memcpy(in + n, party_v, PLEN);
  n += PLEN;
  if (EVP_Digest(in, n, seed, &dlen, EVP_sha256(), NULL) == 1 && dlen == DLEN)
    rc = MCIM_OK;
  OPENSSL_cleanse(in, sizeof(in));
  return rc;
}

/* The parent's public point as an OpenSSL key; its x coordinate (left-padded) in `x`. */
static mcim_cause_t parent_key(const TPMS_ECC_POINT *p, EVP_PKEY **out, uint8_t x[PLEN])
{
  uint8_t pt[1 + 2 * PLEN] = {0x04};
  OSSL_PARAM_BLD *bld = NULL;
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  mcim_cause_t rc = MCIM_KEY_INVALID;

  if (p->x.size == 0 || p->x.size > PLEN || p->y.size == 0 || p->y.size > PLEN)
    return MCIM_KEY_INVALID;
  memcpy(pt + 1 + PLEN - p->x.size, p->x.buffer, p->x.size);
  memcpy(pt + 1 + 2 * PLEN - p->y.size, p->y.buffer, p->y.size);
  memcpy(x, pt + 1, PLEN);
  bld = OSSL_PARAM_BLD_new();
  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)))
    goto cleanup;
  params = OSSL_PARAM_BLD_to_param(bld);
  ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
      EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
    goto cleanup; /* not a point on P-256 */
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  return rc;
}

/* A fresh ephemeral key E, its coordinates, and Z = x(e * parent). */
static mcim_cause_t ecdh(EVP_PKEY *parent, uint8_t ex[PLEN], uint8_t ey[PLEN], uint8_t z[PLEN])
{
  EVP_PKEY *eph = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  BIGNUM *bx = NULL, *by = NULL;
  size_t zlen = PLEN;
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;

  eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!eph || !EVP_PKEY_get_bn_param(eph, OSSL_PKEY_PARAM_EC_PUB_X, &bx) ||
      !EVP_PKEY_get_bn_param(eph, OSSL_PKEY_PARAM_EC_PUB_Y, &by) ||
      BN_bn2binpad(bx, ex, PLEN) != PLEN || BN_bn2binpad(by, ey, PLEN) != PLEN)
    goto cleanup;
  ctx = EVP_PKEY_CTX_new(eph, NULL);
  if (!ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, parent) != 1 ||
      EVP_PKEY_derive(ctx, z, &zlen) != 1 || zlen != PLEN)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  BN_free(bx);
  BN_free(by);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(eph); /* the ephemeral private key: OpenSSL clears it */
  return rc;
}

static mcim_cause_t aes128_cfb(const uint8_t key[SYMLEN], const uint8_t *in, size_t len,
                               uint8_t *out)
{
  static const uint8_t iv[16] = {0};
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n1 = 0, n2 = 0;
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;

  if (!ctx || len > INT32_MAX)
    goto cleanup;
  if (EVP_EncryptInit_ex2(ctx, EVP_aes_128_cfb128(), key, iv, NULL) != 1 ||
      EVP_EncryptUpdate(ctx, out, &n1, in, (int)len) != 1 ||
      EVP_EncryptFinal_ex(ctx, out + n1, &n2) != 1 || (size_t)n1 + (size_t)n2 != len)
    goto cleanup;
  rc = MCIM_OK;
cleanup:
  EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
  return rc;
}

/* The parent must be a storage key this code can wrap to. */
static bool parent_supported(const TPMT_PUBLIC *p)
{
  const TPMS_ECC_PARMS *e = &p->parameters.eccDetail;
  TPMA_OBJECT need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  return p->type == TPM2_ALG_ECC && p->nameAlg == TPM2_ALG_SHA256 &&
         e->curveID == TPM2_ECC_NIST_P256 && e->symmetric.algorithm == TPM2_ALG_AES &&
         e->symmetric.keyBits.aes == 128 && e->symmetric.mode.aes == TPM2_ALG_CFB &&
         (p->objectAttributes & need) == need;
}

/* Everything secret one wrap holds, wiped in one go. */
struct dup_scratch {
  TPM2B_SENSITIVE sens;
  uint8_t plain[sizeof(TPM2B_SENSITIVE)];
  uint8_t unique_in[DLEN + SYMLEN];
  uint8_t z[PLEN], seed[DLEN], sym_key[SYMLEN], hmac_key[DLEN];
};

mcim_cause_t mcim_tpm_dup_aes128(const TPM2B_PUBLIC *parent, const uint8_t key[16],
                                 TPMA_OBJECT attrs, struct mcim_tpm_dup *out)
{
  struct dup_scratch *s = NULL;
  TPMT_PUBLIC *pub = NULL;
  uint8_t *enc = NULL;
  TPM2B_NAME name = {0};
  TPMS_ECC_POINT eph = {0};
  EVP_PKEY *ppub = NULL;
  uint8_t px[PLEN], mac_in[sizeof(TPM2B_PRIVATE) + sizeof(TPMU_NAME)];
  uint8_t integrity[DLEN];
  size_t plain_len = 0, off = 0, maclen = 0;
  unsigned int dlen = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!parent || !key || !out)
    return MCIM_INVALID_ARGUMENT;
  memset(out, 0, sizeof(*out));
  if (!parent_supported(&parent->publicArea) || mcim_tss2_load(NULL, 0) != MCIM_OK)
    return MCIM_UNSUPPORTED;
  s = OPENSSL_secure_zalloc(sizeof(*s)); /* falls back to the heap without a secure arena */
  if (!s)
    return MCIM_NO_MEMORY;

  /* The object: sensitive (with a random seedValue: the unique field must not reveal K) and
   * public, bound by unique = H(seedValue || K). */
  s->sens.sensitiveArea.sensitiveType = TPM2_ALG_SYMCIPHER;
  s->sens.sensitiveArea.seedValue.size = DLEN;
  rc = mcim_random(s->sens.sensitiveArea.seedValue.buffer, DLEN);
  if (rc != MCIM_OK)
    goto cleanup;
  s->sens.sensitiveArea.sensitive.sym.size = SYMLEN;
  memcpy(s->sens.sensitiveArea.sensitive.sym.buffer, key, SYMLEN);
  memcpy(s->unique_in, s->sens.sensitiveArea.seedValue.buffer, DLEN);
  memcpy(s->unique_in + DLEN, key, SYMLEN);

  pub = &out->pub.publicArea;
  pub->type = TPM2_ALG_SYMCIPHER;
  pub->nameAlg = TPM2_ALG_SHA256;
  pub->objectAttributes = attrs;
  pub->parameters.symDetail.sym.algorithm = TPM2_ALG_AES;
  pub->parameters.symDetail.sym.keyBits.aes = 128;
  pub->parameters.symDetail.sym.mode.aes = TPM2_ALG_ECB; /* the only mode it can be used in */
  rc = MCIM_CRYPTO_ERROR;
  if (EVP_Digest(s->unique_in, sizeof(s->unique_in), pub->unique.sym.buffer, &dlen, EVP_sha256(),
                 NULL) != 1 ||
      dlen != DLEN)
    goto cleanup;
  pub->unique.sym.size = DLEN;
  rc = mcim_tpm_public_name(&out->pub, &name);
  if (rc != MCIM_OK)
    goto cleanup;

  /* The outer wrapper's seed, agreed with the parent's key. */
  rc = parent_key(&parent->publicArea.unique.ecc, &ppub, px);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = ecdh(ppub, eph.x.buffer, eph.y.buffer, s->z);
  if (rc != MCIM_OK)
    goto cleanup;
  eph.x.size = eph.y.size = PLEN;
  rc = kdfe(s->z, eph.x.buffer, px, s->seed);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = kdfa(s->seed, "STORAGE", name.name, name.size, 8 * SYMLEN, s->sym_key);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = kdfa(s->seed, "INTEGRITY", NULL, 0, 8 * DLEN, s->hmac_key);
  if (rc != MCIM_OK)
    goto cleanup;

  /* duplicate = TPM2B_DIGEST(integrity) || AES-CFB(TPM2B_SENSITIVE) */
  rc = MCIM_INTERNAL;
  if (Tss2_MU_TPM2B_SENSITIVE_Marshal(&s->sens, s->plain, sizeof(s->plain), &plain_len) !=
          TSS2_RC_SUCCESS ||
      2 + DLEN + plain_len > sizeof(out->dup.buffer))
    goto cleanup;
  enc = out->dup.buffer + 2 + DLEN;
  rc = aes128_cfb(s->sym_key, s->plain, plain_len, enc);
  if (rc != MCIM_OK)
    goto cleanup;
  memcpy(mac_in, enc, plain_len);
  memcpy(mac_in + plain_len, name.name, name.size);
  rc = MCIM_CRYPTO_ERROR;
  if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, s->hmac_key, DLEN, mac_in,
                 plain_len + name.size, integrity, sizeof(integrity), &maclen) ||
      maclen != DLEN)
    goto cleanup;
  out->dup.buffer[0] = (uint8_t)(DLEN >> 8);
  out->dup.buffer[1] = (uint8_t)DLEN;
  memcpy(out->dup.buffer + 2, integrity, DLEN);
  out->dup.size = (UINT16)(2 + DLEN + plain_len);

  rc = MCIM_INTERNAL;
  if (Tss2_MU_TPMS_ECC_POINT_Marshal(&eph, out->seed.secret, sizeof(out->seed.secret), &off) !=
      TSS2_RC_SUCCESS)
    goto cleanup;
  out->seed.size = (UINT16)off;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(ppub);
  OPENSSL_secure_clear_free(s, sizeof(*s));
  if (rc != MCIM_OK)
    OPENSSL_cleanse(out, sizeof(*out));
  return rc;
}
