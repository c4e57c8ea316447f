/* The lab PKI on the OpenSSL 3 X509 API. Two CAs keep the trust domains apart: a certificate
 * from the M2MES CA (a device) can never pass as a network role, and the reverse. Usage is
 * encoded in keyUsage/extendedKeyUsage and checked on verification, so a key-agreement key
 * cannot pass as a signing key, nor an admin client certificate as a server. */
#include "mcim/pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/jose_priv.h"
#include "crypto/objcache.h"
#include "crypto/pki_verdict.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

#define DEFAULT_DAYS 365
#define DAY_SECONDS 86400
/* Certificates start a little in the past: lab hosts' clocks are never exactly in step. */
#define BACKDATE_SECONDS 300

const char *const mcim_pki_default_roles[] = {"vno", "ro", "pva", "m2mes", "sho-a", "sho-b", NULL};

static const char *const usage_names[] = {"tls", "tls-client", "tre-attestation", "tre-ka"};

int mcim_cert_usage_from_name(const char *name)
{
  for (size_t i = 0; name && i < sizeof(usage_names) / sizeof(usage_names[0]); i++)
    if (strcmp(name, usage_names[i]) == 0)
      return (int)i;
  return -1;
}

const char *mcim_cert_usage_name(mcim_cert_usage_t usage)
{
  if ((size_t)usage >= sizeof(usage_names) / sizeof(usage_names[0]))
    return "unknown";
  return usage_names[usage];
}

static bool usage_valid(mcim_cert_usage_t usage)
{
  return (size_t)usage < sizeof(usage_names) / sizeof(usage_names[0]);
}

bool mcim_pki_name_valid(const char *name)
{
  if (!name || !name[0])
    return false;
  size_t n = strlen(name);
  if (n > 63)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    /* The first character rules out ".", ".." and option-looking names; the alphabet keeps
     * the name safe inside a subjectAltName list and as a folder name. */
    if (!alnum && (i == 0 || (c != '-' && c != '.' && c != '_')))
      return false;
  }
  return true;
}

/* ---- files -------------------------------------------------------------------------- */

static mcim_cause_t path_join(char *out, size_t cap, const char *a, const char *b)
{
  int n = snprintf(out, cap, "%s/%s", a, b);
  return (n < 0 || (size_t)n >= cap) ? MCIM_INVALID_ARGUMENT : MCIM_OK;
}

/* Make the rename durable: fsync the folder that holds `path`. */
static void fsync_parent(const char *path)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 0;
  if (n == 0 || n >= sizeof(dir)) {
    snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
  } else {
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

/* Write `data` to `path` so that readers see the old file or the whole new one, never a
 * part: temporary file in the same folder (mkstemp creates it 0600, so a key is never
 * readable by others, not even for a moment), fsync, rename, fsync the folder. */
static mcim_cause_t write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
  char tmp[PATH_MAX];
  int n = snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof(tmp))
    return MCIM_INVALID_ARGUMENT;
  int fd = mkstemp(tmp);
  if (fd < 0) {
    mcim_log_error("cannot create %s: %s", tmp, strerror(errno));
    return MCIM_IO_ERROR;
  }
  const uint8_t *p = data;
  size_t left = len;
  bool ok = fchmod(fd, mode) == 0;
  while (ok && left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR)
      continue;
    ok = w > 0;
    if (ok) {
      p += w;
      left -= (size_t)w;
    }
  }
  ok = ok && fsync(fd) == 0;
  ok = (close(fd) == 0) && ok;
  ok = ok && rename(tmp, path) == 0;
  if (!ok) {
    mcim_log_error("cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    return MCIM_IO_ERROR;
  }
  fsync_parent(path);
  return MCIM_OK;
}

/* Contents of a memory BIO written atomically. */
static mcim_cause_t write_bio(const char *path, BIO *bio, mode_t mode)
{
  char *data = NULL;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || !data)
    return MCIM_CRYPTO_ERROR;
  return write_atomic(path, data, (size_t)len, mode);
}

static mcim_cause_t open_for_read(const char *path, BIO **out)
{
  *out = BIO_new_file(path, "r");
  if (*out)
    return MCIM_OK;
  int e = errno;
  ERR_clear_error();
  return e == ENOENT ? MCIM_NOT_FOUND : MCIM_IO_ERROR;
}

/* Never prompt on a terminal for a pass phrase: lab keys have none. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

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
    rc = write_bio(path, bio, 0600);
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
  mcim_cause_t rc = open_for_read(path, &bio);
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
    if (!dec || OSSL_DECODER_CTX_set_pem_password_cb(dec, no_passphrase, NULL) != 1 ||
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

/* ---- certificates ------------------------------------------------------------------- */

/* The public half only, through its DER encoding. OpenSSL's X509_set_pubkey() keeps a
 * reference to the EVP_PKEY it is given, so without this an in-memory certificate would carry
 * (and X509_get_pubkey() hand out) the subject's private key. */
static EVP_PKEY *public_copy(EVP_PKEY *key)
{
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(key, &der);
  const unsigned char *p = der;
  EVP_PKEY *pub = len > 0 ? d2i_PUBKEY(NULL, &p, len) : NULL;
  OPENSSL_free(der);
  return pub;
}

mcim_cause_t mcim_pki_cert_write(const char *path, X509 *cert)
{
  if (!path || !cert)
    return MCIM_INVALID_ARGUMENT;
  BIO *bio = BIO_new(BIO_s_mem());
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  if (bio && PEM_write_bio_X509(bio, cert) == 1)
    rc = write_bio(path, bio, 0644);
  BIO_free(bio);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

static mcim_cause_t read_cert(BIO *bio, X509 **out)
{
  X509 *cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
  if (!cert) {
    ERR_clear_error();
    return MCIM_CERT_INVALID;
  }
  *out = cert;
  return MCIM_OK;
}

mcim_cause_t mcim_pki_cert_load(const char *path, X509 **out)
{
  BIO *bio = NULL;
  if (!path || !out)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = open_for_read(path, &bio);
  if (rc == MCIM_OK)
    rc = read_cert(bio, out);
  BIO_free(bio);
  return rc;
}

/* Parsed certificates by the SHA-256 of their PEM (crypto/objcache.h): every statement a
 * device or a role checks comes with its certificate in PEM, and decoding one costs more
 * than verifying the signature it carries. Certificates are public; the caller still
 * verifies one (chain, name, usage, time) at every use. */
static int cert_up_ref(void *x)
{
  return X509_up_ref(x);
}

static void cert_free(void *x)
{
  X509_free(x);
}

static struct mcim_objcache cert_cache = MCIM_OBJCACHE_INIT(cert_up_ref, cert_free, 128);

mcim_cause_t mcim_pki_cert_from_pem(const char *pem, size_t len, X509 **out)
{
  uint8_t id[32];
  if (!pem || !out || len == 0)
    return MCIM_INVALID_ARGUMENT;
  if (len > INT_MAX)
    return MCIM_TOO_LARGE;
  bool cacheable = mcim_objcache_id(pem, len, id);
  if (cacheable && (*out = mcim_objcache_get(&cert_cache, id)) != NULL)
    return MCIM_OK;
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = read_cert(bio, out);
  BIO_free(bio);
  if (rc == MCIM_OK && cacheable)
    mcim_objcache_put(&cert_cache, id, *out);
  return rc;
}

mcim_cause_t mcim_pki_cert_to_pem(X509 *cert, char **out)
{
  char *data = NULL;
  if (!cert || !out)
    return MCIM_INVALID_ARGUMENT;
  BIO *bio = BIO_new(BIO_s_mem());
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  if (!bio || PEM_write_bio_X509(bio, cert) != 1)
    goto cleanup;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = malloc((size_t)len + 1);
  if (!*out)
    goto cleanup;
  memcpy(*out, data, (size_t)len);
  (*out)[len] = '\0';
  rc = MCIM_OK;
cleanup:
  BIO_free(bio);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_name(X509 *cert, char **out)
{
  unsigned char *utf8 = NULL;
  if (!cert || !out)
    return MCIM_INVALID_ARGUMENT;
  X509_NAME *subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  X509_NAME_ENTRY *entry = idx >= 0 ? X509_NAME_get_entry(subject, idx) : NULL;
  int len = entry ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry)) : -1;
  mcim_cause_t rc = MCIM_CERT_INVALID;
  /* An embedded NUL would let "ro\0.evil" compare equal to "ro". */
  if (len <= 0 || strlen((const char *)utf8) != (size_t)len)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = strdup((const char *)utf8);
  if (*out)
    rc = MCIM_OK;
cleanup:
  OPENSSL_free(utf8);
  ERR_clear_error();
  return rc;
}

/* keyUsage and extendedKeyUsage as the usage demands (on top of OpenSSL's purpose check). */
static bool usage_matches(X509 *cert, mcim_cert_usage_t usage)
{
  uint32_t ku = X509_get_key_usage(cert);   /* UINT32_MAX: no keyUsage extension */
  uint32_t xku = X509_get_extended_key_usage(cert); /* UINT32_MAX: no EKU extension */
  bool ds = ku != UINT32_MAX && (ku & KU_DIGITAL_SIGNATURE);
  bool ka = ku != UINT32_MAX && (ku & KU_KEY_AGREEMENT);
  bool server = xku != UINT32_MAX && (xku & XKU_SSL_SERVER);
  bool client = xku != UINT32_MAX && (xku & XKU_SSL_CLIENT);

  if (X509_check_ca(cert) != 0) /* a CA is never a leaf of ours */
    return false;
  switch (usage) {
  case MCIM_CERT_TLS:
    return ds && server && client;
  case MCIM_CERT_TLS_CLIENT:
    return ds && client;
  case MCIM_CERT_TRE_ATTESTATION:
    return ds && !ka && xku == UINT32_MAX;
  case MCIM_CERT_TRE_KEY_AGREEMENT:
    return ka && !ds && xku == UINT32_MAX;
  }
  return false;
}

mcim_cause_t mcim_pki_cert_verify(X509 *cert, X509 *ca, mcim_cert_usage_t usage,
                                  const char *name, int64_t now)
{
  X509_STORE *store = NULL;
  X509_STORE_CTX *ctx = NULL;
  char *cn = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!cert || !ca || !usage_valid(usage))
    return MCIM_INVALID_ARGUMENT;
  /* the same certificate, CA, usage and name verified before, inside both validities */
  uint8_t id[32];
  bool have_id = mcim_pki_verdict_id(cert, ca, usage, name, id);
  if (!now)
    now = mcim_now();
  if (have_id && mcim_pki_verdict_known(id, now))
    return MCIM_OK;
  store = X509_STORE_new();
  ctx = X509_STORE_CTX_new();
  if (!store || !ctx || X509_STORE_add_cert(store, ca) != 1 ||
      X509_STORE_CTX_init(ctx, store, cert, NULL) != 1)
    goto cleanup;
  X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  X509_VERIFY_PARAM_set_time(param, (time_t)now);
  int purpose = usage == MCIM_CERT_TLS          ? X509_PURPOSE_SSL_SERVER
                : usage == MCIM_CERT_TLS_CLIENT ? X509_PURPOSE_SSL_CLIENT
                                                : X509_PURPOSE_ANY;
  if (X509_STORE_CTX_set_purpose(ctx, purpose) != 1)
    goto cleanup;
  mcim_op_count(MCIM_OP_CERT_VERIFY);
  if (X509_verify_cert(ctx) != 1) {
    int err = X509_STORE_CTX_get_error(ctx);
    mcim_log_debug("certificate does not verify: %s", X509_verify_cert_error_string(err));
    rc = err == X509_V_ERR_CERT_HAS_EXPIRED ? MCIM_CERT_EXPIRED : MCIM_CERT_INVALID;
    goto cleanup;
  }
  rc = MCIM_CERT_INVALID;
  if (!usage_matches(cert, usage)) {
    mcim_log_debug("certificate is not for usage %s", mcim_cert_usage_name(usage));
    goto cleanup;
  }
  if (name && (mcim_pki_cert_name(cert, &cn) != MCIM_OK || strcmp(cn, name) != 0)) {
    mcim_log_debug("certificate is for '%s', expected '%s'", cn ? cn : "?", name);
    goto cleanup;
  }
  rc = MCIM_OK;
  if (have_id)
    mcim_pki_verdict_keep(id, cert, ca);
cleanup:
  free(cn);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_public_key(X509 *cert, X509 *ca, mcim_cert_usage_t usage,
                                      const char *name, int64_t now, EVP_PKEY **out)
{
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = mcim_pki_cert_verify(cert, ca, usage, name, now);
  if (rc != MCIM_OK)
    return rc;
  /* The certificate's own key, by reference: a certificate only ever holds a public key
   * (cert_new gives it the public half), and decoding a copy costs more than the ECDSA
   * verification it is for. */
  EVP_PKEY *key = X509_get_pubkey(cert);
  if (!key || !mcim_pki_key_is_p256(key)) {
    EVP_PKEY_free(key);
    ERR_clear_error();
    return MCIM_KEY_INVALID;
  }
  *out = key;
  return MCIM_OK;
}

/* ---- issuing ------------------------------------------------------------------------ */

/* A version 3 certificate with a random 127-bit serial, the validity, subject and key. */
static mcim_cause_t cert_new(const char *cn, EVP_PKEY *key, int64_t nb, int64_t na, X509 **out)
{
  X509 *x = X509_new();
  BIGNUM *serial = BN_new();
  EVP_PKEY *pub = public_copy(key);
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  X509_NAME *subject = x ? X509_get_subject_name(x) : NULL;

  if (!x || !serial || !pub || X509_set_version(x, X509_VERSION_3) != 1 ||
      BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ODD) != 1 || /* odd: never 0 */
      !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
      !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
      !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) ||
      X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, (const unsigned char *)"mcim lab",
                                 -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                 0) != 1 ||
      X509_set_pubkey(x, pub) != 1)
    goto cleanup;
  *out = x;
  x = NULL;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(pub);
  BN_free(serial);
  X509_free(x);
  return rc;
}

/* One extension in openssl.cnf syntax; `issuer` provides the authority key id. */
static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  bool ok = ext && X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* Key identifiers, then the signature by the issuer's key. */
static mcim_cause_t finish(X509 *x, X509 *issuer, EVP_PKEY *issuer_key)
{
  if (!add_ext(x, issuer, NID_subject_key_identifier, "hash") ||
      !add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") ||
      X509_sign(x, issuer_key, EVP_sha256()) <= 0)
    return MCIM_CRYPTO_ERROR;
  return MCIM_OK;
}

void mcim_pki_ca_free(mcim_pki_ca_t *ca)
{
  if (!ca)
    return;
  EVP_PKEY_free(ca->key);
  X509_free(ca->cert);
  free(ca);
}

mcim_cause_t mcim_pki_ca_create(const char *name, int days, mcim_pki_ca_t **out)
{
  mcim_pki_ca_t *ca = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!name || !name[0] || strlen(name) > 64 || !out || days < 0)
    return MCIM_INVALID_ARGUMENT;
  rc = MCIM_NO_MEMORY;
  ca = calloc(1, sizeof(*ca));
  if (!ca)
    goto cleanup;
  int64_t nb = mcim_now() - BACKDATE_SECONDS;
  int64_t na = nb + (int64_t)(days ? days : DEFAULT_DAYS) * DAY_SECONDS;
  if ((rc = mcim_pki_key_generate(&ca->key)) != MCIM_OK ||
      (rc = cert_new(name, ca->key, nb, na, &ca->cert)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  /* Self-signed: issuer name = subject name. pathlen 0: it issues leaves only. */
  if (X509_set_issuer_name(ca->cert, X509_get_subject_name(ca->cert)) != 1 ||
      !add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign"))
    goto cleanup;
  rc = finish(ca->cert, ca->cert, ca->key);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = ca;
  ca = NULL;
cleanup:
  mcim_pki_ca_free(ca);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_ca_load(const char *cert_path, const char *key_path, mcim_pki_ca_t **out)
{
  if (!cert_path || !key_path || !out)
    return MCIM_INVALID_ARGUMENT;
  mcim_pki_ca_t *ca = calloc(1, sizeof(*ca));
  if (!ca)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_pki_cert_load(cert_path, &ca->cert);
  if (rc != MCIM_OK || (rc = mcim_pki_key_load(key_path, &ca->key)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (X509_check_ca(ca->cert) < 1 || X509_check_private_key(ca->cert, ca->key) != 1)
    goto cleanup;
  *out = ca;
  ca = NULL;
  rc = MCIM_OK;
cleanup:
  mcim_pki_ca_free(ca);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_ca_write(const mcim_pki_ca_t *ca, const char *cert_path,
                               const char *key_path)
{
  if (!ca || !cert_path || !key_path)
    return MCIM_INVALID_ARGUMENT;
  /* Key first: a certificate on disk always has its key next to it. */
  mcim_cause_t rc = mcim_pki_key_write(key_path, ca->key);
  return rc == MCIM_OK ? mcim_pki_cert_write(cert_path, ca->cert) : rc;
}

/* A non-critical extension `oid_txt` whose value is the DER `der` (`len` bytes; none if `len`
 * is not positive). */
static bool add_der_ext(X509 *x, const char *oid_txt, const unsigned char *der, int len)
{
  ASN1_OBJECT *oid = OBJ_txt2obj(oid_txt, 1);
  ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
  X509_EXTENSION *ext = NULL;
  bool ok = oid && value && len > 0 && ASN1_OCTET_STRING_set(value, der, len) == 1 &&
            (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value)) != NULL &&
            X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(value);
  ASN1_OBJECT_free(oid);
  return ok;
}

/* The TPM storage key as MCIM_OID_TPM_STORAGE (non-critical: a verifier that does not know
 * it still accepts the certificate, it just cannot wrap keys for the TPM). */
static bool add_key_ext(X509 *x, const char *oid_txt, EVP_PKEY *key)
{
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(key, &der);
  bool ok = add_der_ext(x, oid_txt, der, len);
  OPENSSL_free(der);
  return ok;
}

/* MCIM_OID_DEVICE_MODEL, its value the model as a DER UTF8String. */
static bool add_model(X509 *x, const char *model)
{
  ASN1_UTF8STRING *s = ASN1_UTF8STRING_new();
  unsigned char *der = NULL;
  int len = s && ASN1_STRING_set(s, model, -1) == 1 ? i2d_ASN1_UTF8STRING(s, &der) : 0;
  bool ok = add_der_ext(x, MCIM_OID_DEVICE_MODEL, der, len);
  OPENSSL_free(der);
  ASN1_UTF8STRING_free(s);
  return ok;
}

/* The data of the one extension `oid_txt` of `cert`: MCIM_NOT_FOUND without one,
 * MCIM_KEY_INVALID with two or an empty one. */
static mcim_cause_t ext_data(X509 *cert, const char *oid_txt, const unsigned char **p, long *len)
{
  ASN1_OBJECT *oid = OBJ_txt2obj(oid_txt, 1);
  mcim_cause_t rc = MCIM_NO_MEMORY;
  int i = oid ? X509_get_ext_by_OBJ(cert, oid, -1) : -1;
  if (!oid)
    goto cleanup;
  rc = MCIM_NOT_FOUND;
  if (i < 0)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  if (X509_get_ext_by_OBJ(cert, oid, i) >= 0)
    goto cleanup;
  X509_EXTENSION *ext = X509_get_ext(cert, i);
  ASN1_OCTET_STRING *value = ext ? X509_EXTENSION_get_data(ext) : NULL;
  *p = value ? ASN1_STRING_get0_data(value) : NULL;
  *len = value ? ASN1_STRING_length(value) : 0;
  if (*p && *len > 0)
    rc = MCIM_OK;
cleanup:
  ASN1_OBJECT_free(oid);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_model(X509 *cert, char *out, size_t out_len)
{
  const unsigned char *p = NULL;
  long len = 0;
  if (!cert || !out || out_len == 0)
    return MCIM_INVALID_ARGUMENT;
  out[0] = '\0';
  mcim_cause_t rc = ext_data(cert, MCIM_OID_DEVICE_MODEL, &p, &len);
  if (rc != MCIM_OK)
    return rc;
  const unsigned char *end = p + len;
  ASN1_UTF8STRING *s = d2i_ASN1_UTF8STRING(NULL, &p, len);
  int n = s ? ASN1_STRING_length(s) : 0;
  rc = MCIM_KEY_INVALID;
  if (s && p == end && n > 0 && (size_t)n < out_len) {
    memcpy(out, ASN1_STRING_get0_data(s), (size_t)n);
    out[n] = '\0';
    rc = mcim_pki_name_valid(out) ? MCIM_OK : MCIM_KEY_INVALID;
  }
  if (rc != MCIM_OK)
    out[0] = '\0';
  ASN1_UTF8STRING_free(s);
  ERR_clear_error();
  return rc;
}

/* MCIM_OID_TPM_ATTESTATION, its value an ASN.1 NULL (05 00). */
static bool add_tpm_attestation(X509 *x)
{
  static const unsigned char null_der[] = {0x05, 0x00};
  ASN1_OBJECT *oid = OBJ_txt2obj(MCIM_OID_TPM_ATTESTATION, 1);
  ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
  X509_EXTENSION *ext = NULL;
  bool ok = oid && value && ASN1_OCTET_STRING_set(value, null_der, sizeof(null_der)) == 1 &&
            (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value)) != NULL &&
            X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(value);
  ASN1_OBJECT_free(oid);
  return ok;
}

bool mcim_pki_cert_tpm_attestation(X509 *cert)
{
  ASN1_OBJECT *oid = cert ? OBJ_txt2obj(MCIM_OID_TPM_ATTESTATION, 1) : NULL;
  bool found = oid && X509_get_ext_by_OBJ(cert, oid, -1) >= 0;
  ASN1_OBJECT_free(oid);
  ERR_clear_error();
  return found;
}

/* The P-256 public key in the one extension `oid_txt` of `cert`. */
static mcim_cause_t cert_key_ext(X509 *cert, const char *oid_txt, EVP_PKEY **out)
{
  EVP_PKEY *key = NULL;
  const unsigned char *p = NULL;
  long len = 0;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!cert || !out)
    return rc;
  *out = NULL;
  /* one such extension, holding exactly one P-256 public key */
  rc = ext_data(cert, oid_txt, &p, &len);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_KEY_INVALID;
  const unsigned char *end = p + len;
  key = d2i_PUBKEY(NULL, &p, len);
  if (!key || p != end || !mcim_pki_key_is_p256(key))
    goto cleanup;
  *out = key;
  key = NULL;
  rc = MCIM_OK;
cleanup:
  EVP_PKEY_free(key);
  ERR_clear_error();
  return rc;
}

mcim_cause_t mcim_pki_cert_tpm_storage_key(X509 *cert, EVP_PKEY **out)
{
  return cert_key_ext(cert, MCIM_OID_TPM_STORAGE, out);
}

mcim_cause_t mcim_pki_cert_tpm_ak(X509 *cert, EVP_PKEY **out)
{
  return cert_key_ext(cert, MCIM_OID_TPM_AK, out);
}

mcim_cause_t mcim_pki_issue(const mcim_pki_ca_t *ca, const mcim_cert_request_t *req, X509 **out)
{
  X509 *x = NULL;
  char san[128];

  if (!ca || !ca->key || !ca->cert || !req || !out || !mcim_pki_name_valid(req->name) ||
      !usage_valid(req->usage) || !mcim_pki_key_is_p256(req->key) || req->days < 0 ||
      (req->tpm_storage &&
       (req->usage != MCIM_CERT_TRE_KEY_AGREEMENT || !mcim_pki_key_is_p256(req->tpm_storage))) ||
      (req->tpm_attestation && req->usage != MCIM_CERT_TRE_ATTESTATION) ||
      (req->tpm_ak &&
       (req->usage != MCIM_CERT_TRE_ATTESTATION || !mcim_pki_key_is_p256(req->tpm_ak))) ||
      (req->model && (req->usage != MCIM_CERT_TRE_ATTESTATION || !mcim_pki_name_valid(req->model))))
    return MCIM_INVALID_ARGUMENT;
  int64_t nb = req->not_before ? req->not_before : mcim_now() - BACKDATE_SECONDS;
  int64_t na = req->not_after ? req->not_after
                              : nb + (int64_t)(req->days ? req->days : DEFAULT_DAYS) * DAY_SECONDS;
  if (na <= nb)
    return MCIM_INVALID_ARGUMENT;

  mcim_cause_t rc = cert_new(req->name, req->key, nb, na, &x);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_CRYPTO_ERROR;
  if (X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
      !add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE"))
    goto cleanup;
  bool ok = false;
  switch (req->usage) {
  case MCIM_CERT_TLS:
    snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,DNS:%s", req->name);
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") &&
         add_ext(x, ca->cert, NID_subject_alt_name, san);
    break;
  case MCIM_CERT_TLS_CLIENT:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "clientAuth");
    break;
  case MCIM_CERT_TRE_ATTESTATION:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         (!req->tpm_attestation || add_tpm_attestation(x)) &&
         (!req->tpm_ak || add_key_ext(x, MCIM_OID_TPM_AK, req->tpm_ak)) &&
         (!req->model || add_model(x, req->model));
    break;
  case MCIM_CERT_TRE_KEY_AGREEMENT:
    ok = add_ext(x, ca->cert, NID_key_usage, "critical,keyAgreement") &&
         (!req->tpm_storage || add_key_ext(x, MCIM_OID_TPM_STORAGE, req->tpm_storage));
    break;
  }
  if (!ok)
    goto cleanup;
  rc = finish(x, ca->cert, ca->key);
  if (rc != MCIM_OK)
    goto cleanup;
  *out = x;
  x = NULL;
cleanup:
  X509_free(x);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

/* ---- the lab PKI folder ------------------------------------------------------------- */

/* mkdir -p, then insist on a folder. */
static mcim_cause_t make_dirs(const char *path, mode_t mode)
{
  char buf[PATH_MAX];
  struct stat st;
  int n = snprintf(buf, sizeof(buf), "%s", path);
  if (n <= 0 || (size_t)n >= sizeof(buf))
    return MCIM_INVALID_ARGUMENT;
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
      goto fail;
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST)
    goto fail;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    mcim_log_error("%s is not a folder", path);
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
fail:
  mcim_log_error("cannot create folder %s: %s", buf, strerror(errno));
  return MCIM_IO_ERROR;
}

/* <dir>/<name>/{key,cert}.pem for one role (or admin), from the operators' CA. */
static mcim_cause_t issue_role(const mcim_pki_ca_t *ca, const char *dir, const char *name,
                               mcim_cert_usage_t usage, int days)
{
  char folder[PATH_MAX], path[PATH_MAX];
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  mcim_cert_request_t req = {.name = name, .usage = usage, .days = days};

  mcim_cause_t rc = path_join(folder, sizeof(folder), dir, name);
  if (rc != MCIM_OK || (rc = make_dirs(folder, 0755)) != MCIM_OK ||
      (rc = mcim_pki_key_generate(&key)) != MCIM_OK)
    goto cleanup;
  req.key = key;
  if ((rc = mcim_pki_issue(ca, &req, &cert)) != MCIM_OK ||
      (rc = path_join(path, sizeof(path), folder, "key.pem")) != MCIM_OK ||
      (rc = mcim_pki_key_write(path, key)) != MCIM_OK ||
      (rc = path_join(path, sizeof(path), folder, "cert.pem")) != MCIM_OK ||
      (rc = mcim_pki_cert_write(path, cert)) != MCIM_OK)
    goto cleanup;
cleanup:
  X509_free(cert);
  EVP_PKEY_free(key);
  return rc;
}

static mcim_cause_t roles_valid(const char *const *roles, size_t nroles)
{
  for (size_t i = 0; i < nroles; i++) {
    if (!mcim_pki_name_valid(roles[i]) || strcmp(roles[i], "ca") == 0 ||
        strcmp(roles[i], MCIM_PKI_ADMIN) == 0)
      return MCIM_INVALID_ARGUMENT;
    for (size_t j = 0; j < i; j++)
      if (strcmp(roles[i], roles[j]) == 0)
        return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

static bool pki_exists(const char *dir)
{
  static const char *const files[] = {MCIM_PKI_OPERATORS_CA_CERT, MCIM_PKI_OPERATORS_CA_KEY,
                                      MCIM_PKI_M2MES_CA_CERT, MCIM_PKI_M2MES_CA_KEY};
  char path[PATH_MAX];
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
    if (path_join(path, sizeof(path), dir, files[i]) == MCIM_OK && access(path, F_OK) == 0)
      return true;
  return false;
}

static mcim_cause_t write_ca(const mcim_pki_ca_t *ca, const char *dir, const char *cert_rel,
                             const char *key_rel)
{
  char cert[PATH_MAX], key[PATH_MAX];
  mcim_cause_t rc = path_join(cert, sizeof(cert), dir, cert_rel);
  if (rc == MCIM_OK)
    rc = path_join(key, sizeof(key), dir, key_rel);
  return rc == MCIM_OK ? mcim_pki_ca_write(ca, cert, key) : rc;
}

mcim_cause_t mcim_pki_lab_init(const char *dir, const char *const *roles, size_t nroles,
                               bool force, int days)
{
  mcim_pki_ca_t *ops = NULL, *m2mes = NULL, *vendor = NULL;
  char ca_dir[PATH_MAX];

  if (!dir || !dir[0] || (nroles && !roles) || days < 0)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = roles_valid(roles, nroles);
  if (rc != MCIM_OK)
    return rc;
  if (!force && pki_exists(dir))
    return MCIM_CONFLICT;
  if ((rc = make_dirs(dir, 0755)) != MCIM_OK ||
      (rc = path_join(ca_dir, sizeof(ca_dir), dir, "ca")) != MCIM_OK ||
      (rc = make_dirs(ca_dir, 0755)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim operators CA", days, &ops)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim M2MES CA", days, &m2mes)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim lab TPM vendor CA", days, &vendor)) != MCIM_OK)
    goto cleanup;
  for (size_t i = 0; i < nroles; i++)
    if ((rc = issue_role(ops, dir, roles[i], MCIM_CERT_TLS, days)) != MCIM_OK)
      goto cleanup;
  if ((rc = issue_role(ops, dir, MCIM_PKI_ADMIN, MCIM_CERT_TLS_CLIENT, days)) != MCIM_OK)
    goto cleanup;
  /* The CAs go last: a run that fails half-way leaves no CA behind, so it cannot be
   * mistaken for a complete PKI and a plain re-run starts over. */
  if ((rc = write_ca(vendor, dir, MCIM_PKI_TPM_VENDOR_CA_CERT, MCIM_PKI_TPM_VENDOR_CA_KEY)) !=
          MCIM_OK ||
      (rc = write_ca(m2mes, dir, MCIM_PKI_M2MES_CA_CERT, MCIM_PKI_M2MES_CA_KEY)) != MCIM_OK ||
      (rc = write_ca(ops, dir, MCIM_PKI_OPERATORS_CA_CERT, MCIM_PKI_OPERATORS_CA_KEY)) != MCIM_OK)
    goto cleanup;
cleanup:
  mcim_pki_ca_free(vendor);
  mcim_pki_ca_free(m2mes);
  mcim_pki_ca_free(ops);
  return rc;
}

mcim_cause_t mcim_pki_lab_load_role(const char *dir, const char *role, X509 **cert,
                                    EVP_PKEY **key)
{
  char folder[PATH_MAX], path[PATH_MAX];
  X509 *c = NULL;
  if (!dir || !mcim_pki_name_valid(role))
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = path_join(folder, sizeof(folder), dir, role);
  if (rc != MCIM_OK)
    return rc;
  if (cert && ((rc = path_join(path, sizeof(path), folder, "cert.pem")) != MCIM_OK ||
               (rc = mcim_pki_cert_load(path, &c)) != MCIM_OK))
    return rc;
  if (key && ((rc = path_join(path, sizeof(path), folder, "key.pem")) != MCIM_OK ||
              (rc = mcim_pki_key_load(path, key)) != MCIM_OK)) {
    X509_free(c);
    return rc;
  }
  if (cert)
    *cert = c;
  return MCIM_OK;
}

mcim_cause_t mcim_pki_lab_load_ca(const char *dir, mcim_pki_lab_ca_t which, mcim_pki_ca_t **out)
{
  char cert[PATH_MAX], key[PATH_MAX];
  if (!dir || !out || (which != MCIM_PKI_CA_OPERATORS && which != MCIM_PKI_CA_M2MES))
    return MCIM_INVALID_ARGUMENT;
  bool ops = which == MCIM_PKI_CA_OPERATORS;
  mcim_cause_t rc =
      path_join(cert, sizeof(cert), dir, ops ? MCIM_PKI_OPERATORS_CA_CERT : MCIM_PKI_M2MES_CA_CERT);
  if (rc == MCIM_OK)
    rc = path_join(key, sizeof(key), dir, ops ? MCIM_PKI_OPERATORS_CA_KEY : MCIM_PKI_M2MES_CA_KEY);
  return rc == MCIM_OK ? mcim_pki_ca_load(cert, key, out) : rc;
}
