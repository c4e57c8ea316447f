/* The lab PKI's P-256 keys: generated, written (mode 600, atomically: pki.c), loaded, and read
 * from PEM, our own PKCS#8 form by a reader of its own (der_next, pkcs8_p256_raw, key_fast)
 * before OpenSSL's EC decoders. Apart from pki.c (certificates) because the key reader is
 * a parser of its own, on the path of every key a device loads. */
#include "mcim/pki.h"

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "crypto/jose_priv.h"
#include "crypto/pki_priv.h"
#include "mcim/log.h"
#include "mcim/util.h"

/* ---- keys --------------------------------------------------------------------------- */

mcim_cause_t mcim_pki_key_generate(EVP_PKEY **out)
{
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (*out)
    return MCIM_OK;
  ERR_clear_error();
  return MCIM_CRYPTO_ERROR;
}

bool mcim_pki_key_is_p256(const EVP_PKEY *key)
{
  char group[64];
  size_t len = 0;
  return key && EVP_PKEY_is_a(key, "EC") &&
         EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        &len) == 1 &&
         strcmp(group, "prime256v1") == 0;
}

mcim_cause_t mcim_pki_key_write(const char *path, EVP_PKEY *key)
{
  if (!path || !key)
    return MCIM_INVALID_ARGUMENT;
  /* A secure-memory BIO: the PEM text is wiped when the BIO is freed. */
  BIO *bio = BIO_new(BIO_s_secmem());
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1)
    rc = pki_write_bio(path, bio, 0600);
  BIO_free(bio);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_key_load(const char *path, EVP_PKEY **out)
{
  BIO *bio = NULL;
  struct stat st;
  if (!path || !out)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = pki_open_for_read(path, &bio);
  if (rc != MCIM_OK)
    return rc;
  if (stat(path, &st) == 0 && (st.st_mode & 077))
    mcim_log_warn("key file %s is accessible by group or others (mode %o, want 600)", path,
                  (unsigned)(st.st_mode & 0777));
  rc = mcim_pki_key_read_bio(bio, out);
  BIO_free(bio);
  return rc;
}

/* One DER element at *p (before `end`) with tag `tag`: its contents [*c, *c + *n), and *p
 * past it. Definite lengths of up to two bytes (a P-256 key's elements are all short). */
static bool der_next(const unsigned char **p, const unsigned char *end, unsigned char tag,
                     const unsigned char **c, size_t *n)
{
  const unsigned char *q = *p;
  if (end - q < 2 || *q != tag)
    return false;
  q++;
  size_t len = *q++;
  if (len & 0x80) {
    size_t k = len & 0x7f;
    if (k == 0 || k > 2 || (size_t)(end - q) < k)
      return false;
    for (len = 0; k > 0; k--)
      len = len << 8 | *q++;
  }
  if ((size_t)(end - q) < len)
    return false;
  *c = q;
  *n = len;
  *p = q + len;
  return true;
}

/* An unencrypted PKCS#8 P-256 key that carries its public point (RFC 5958 and RFC 5915's
 * ECPrivateKey, as PEM_write_bio_PrivateKey writes ours): d, x and y. false for anything
 * else, which the caller hands to OpenSSL's decoder. */
static bool pkcs8_p256_raw(const unsigned char *der, long len, uint8_t d[P256_LEN],
                           uint8_t x[P256_LEN], uint8_t y[P256_LEN])
{
  static const unsigned char p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x03, 0x01, 0x07};
  const ASN1_OBJECT *alg = NULL;
  const X509_ALGOR *algor = NULL;
  const unsigned char *pk = NULL, *c = NULL, *p = der;
  int pklen = 0, ptype = 0;
  const void *pval = NULL;
  size_t n = 0;
  bool ok = false;
  PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);

  if (!p8 || p != der + len || PKCS8_pkey_get0(&alg, &pk, &pklen, &algor, p8) != 1 ||
      OBJ_obj2nid(alg) != NID_X9_62_id_ecPublicKey)
    goto out;
  X509_ALGOR_get0(NULL, &ptype, &pval, algor);
  if (ptype != V_ASN1_OBJECT || OBJ_obj2nid(pval) != NID_X9_62_prime256v1 || pklen <= 0)
    goto out;
  /* ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, [0] parameters OPTIONAL,
   *                             [1] publicKey BIT STRING OPTIONAL } */
  const unsigned char *q = pk, *end = pk + pklen, *seq_end;
  if (!der_next(&q, end, 0x30, &c, &n) || q != end)
    goto out;
  q = c;
  seq_end = c + n;
  if (!der_next(&q, seq_end, 0x02, &c, &n) || n != 1 || c[0] != 1 ||
      !der_next(&q, seq_end, 0x04, &c, &n) || n != P256_LEN)
    goto out;
  memcpy(d, c, P256_LEN);
  if (q < seq_end && *q == 0xa0 &&
      (!der_next(&q, seq_end, 0xa0, &c, &n) || n != sizeof(p256_oid) ||
       memcmp(c, p256_oid, n) != 0))
    goto out;
  if (!der_next(&q, seq_end, 0xa1, &c, &n) || q != seq_end)
    goto out; /* no public point: the decoder computes it */
  const unsigned char *bits = c, *bits_end = c + n;
  if (!der_next(&bits, bits_end, 0x03, &c, &n) || bits != bits_end || n != 2 + 2 * P256_LEN ||
      c[0] != 0x00 || c[1] != 0x04)
    goto out;
  memcpy(x, c + 2, P256_LEN);
  memcpy(y, c + 2 + P256_LEN, P256_LEN);
  ok = true;
out:
  PKCS8_PRIV_KEY_INFO_free(p8); /* clears the key's octets */
  if (!ok)
    mcim_wipe(d, P256_LEN);
  ERR_clear_error();
  return ok;
}

/* The fast path of mcim_pki_key_read_bio: our own keys' form, without the decoders. The
 * whole PEM text is in `text`; *out stays NULL when it is not that form. */
static mcim_cause_t key_fast(const char *text, int len, EVP_PKEY **out)
{
  char *name = NULL, *header = NULL;
  unsigned char *der = NULL;
  long dlen = 0;
  uint8_t d[P256_LEN], x[P256_LEN], y[P256_LEN];
  mcim_cause_t rc = MCIM_OK;
  BIO *bio = BIO_new_mem_buf(text, len);

  *out = NULL;
  if (bio && PEM_read_bio_ex(bio, &name, &header, &der, &dlen, PEM_FLAG_SECURE) == 1 &&
      strcmp(name, PEM_STRING_PKCS8INF) == 0 && header[0] == '\0' &&
      pkcs8_p256_raw(der, dlen, d, x, y)) {
    /* the same checks as every P-256 key we build: on the curve, d in [1, n-1] */
    rc = jose_p256_pkey(x, y, d, out);
    mcim_wipe(d, sizeof(d));
  }
  /* PEM_FLAG_SECURE: all three from the secure heap (when there is one) */
  OPENSSL_secure_free(name);
  OPENSSL_secure_free(header);
  OPENSSL_secure_clear_free(der, dlen > 0 ? (size_t)dlen : 0);
  BIO_free(bio);
  ERR_clear_error();
  return rc;
}

/* OpenSSL 3's PEM_read_bio_PrivateKey() asks every decoder of every provider whether it
 * knows the text: about 350 us a key here, 15 signatures' worth, and most of a simulated
 * device's key handling under loadgen. Told up front that the key is EC in PEM (PKCS#8 or
 * SEC1), the decoder chain is built from the EC decoders only: about 90 us, still 1.5 M
 * instructions a key, for the TRE's per-procedure key twice a procedure (callgrind). Our
 * own keys' form (unencrypted PKCS#8, P-256, with its public point) is now read here
 * (key_fast: DER, then EVP_PKEY_fromdata with the quick checks); anything else still goes
 * to the EC decoders, and anything they do not take is not a key of ours (P-256 only) and
 * is refused the same way as before. */
mcim_cause_t mcim_pki_key_read_bio(BIO *bio, EVP_PKEY **out)
{
  EVP_PKEY *key = NULL;
  OSSL_DECODER_CTX *dec = NULL;
  BIO *text = NULL, *in = NULL;
  char buf[512], *data = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  int n;

  if (!bio || !out)
    return rc;
  /* the whole text, in memory that is wiped when freed: read once, tried twice */
  rc = MCIM_NO_MEMORY;
  text = BIO_new(BIO_s_secmem());
  if (!text)
    goto cleanup;
  while ((n = BIO_read(bio, buf, sizeof(buf))) > 0)
    if (BIO_write(text, buf, n) != n)
      goto cleanup;
  long len = BIO_get_mem_data(text, &data);
  rc = MCIM_KEY_INVALID;
  if (len <= 0 || len > INT_MAX)
    goto cleanup;
  if (key_fast(data, (int)len, &key) != MCIM_OK || (key && !mcim_pki_key_is_p256(key)))
    goto cleanup;
  if (!key) {
    in = BIO_new_mem_buf(data, (int)len);
    dec = in ? OSSL_DECODER_CTX_new_for_pkey(&key, "PEM", NULL, "EC", OSSL_KEYMGMT_SELECT_KEYPAIR,
                                             NULL, NULL)
             : NULL;
    /* no passphrase: our keys are never encrypted, and nothing may prompt on a terminal */
    if (!dec || OSSL_DECODER_CTX_set_pem_password_cb(dec, pki_no_passphrase, NULL) != 1 ||
        OSSL_DECODER_from_bio(dec, in) != 1 || !key || !mcim_pki_key_is_p256(key))
      goto cleanup;
  }
  *out = key;
  key = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_wipe(buf, sizeof(buf));
  OSSL_DECODER_CTX_free(dec);
  EVP_PKEY_free(key);
  BIO_free(in);
  BIO_free(text);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}
