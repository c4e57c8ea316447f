/* The lab PKI on the OpenSSL 3 X509 API. Two CAs keep the trust domains apart: a certificate
 * from the M2MES CA (a device) can never pass as a network role, and the reverse. Usage is
 * encoded in keyUsage/extendedKeyUsage and checked on verification, so a key-agreement key
 * cannot pass as a signing key, nor an admin client certificate as a server.
 * This file: usage names, the file helpers (atomic writes), certificates read, cached and
 * verified. Keys are pki_key.c's, CAs and issuing pki_issue.c's, the lab PKI folder
 * pki_lab.c's; what they share is in pki_priv.h. */
#include "mcim/pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/objcache.h"
#include "crypto/pki_priv.h"
#include "crypto/pki_verdict.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

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

bool pki_usage_valid(mcim_cert_usage_t usage)
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
mcim_cause_t pki_write_bio(const char *path, BIO *bio, mode_t mode)
{
  char *data = NULL;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || !data)
    return MCIM_CRYPTO_ERROR;
  return write_atomic(path, data, (size_t)len, mode);
}

mcim_cause_t pki_open_for_read(const char *path, BIO **out)
{
  *out = BIO_new_file(path, "r");
  if (*out)
    return MCIM_OK;
  int e = errno;
  ERR_clear_error();
  return e == ENOENT ? MCIM_NOT_FOUND : MCIM_IO_ERROR;
}

/* Never prompt on a terminal for a pass phrase: lab keys have none. */
int pki_no_passphrase(char *buf, int size, int rwflag, void *u)
{
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

/* ---- certificates ------------------------------------------------------------------- */

mcim_cause_t mcim_pki_cert_write(const char *path, X509 *cert)
{
  if (!path || !cert)
    return MCIM_INVALID_ARGUMENT;
  BIO *bio = BIO_new(BIO_s_mem());
  mcim_cause_t rc = MCIM_CRYPTO_ERROR;
  if (bio && PEM_write_bio_X509(bio, cert) == 1)
    rc = pki_write_bio(path, bio, 0644);
  BIO_free(bio);
  if (rc != MCIM_OK)
    ERR_clear_error();
  return rc;
}

static mcim_cause_t read_cert(BIO *bio, X509 **out)
{
  X509 *cert = PEM_read_bio_X509(bio, NULL, pki_no_passphrase, NULL);
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
  mcim_cause_t rc = pki_open_for_read(path, &bio);
  if (rc == MCIM_OK)
    rc = read_cert(bio, out);
  BIO_free(bio);
  return rc;
}

/* Parsed certificates by the SHA-256 of their PEM (crypto/objcache.h): every statement a
 * device or a role checks comes with its certificate in PEM, and decoding one costs more
 * than verifying the signature it carries. Certificates are public; the caller still
 * verifies one (chain, name, usage, time) at every use. */
static int cert_up_ref(void *x) { return X509_up_ref(x); }

static void cert_free(void *x) { X509_free(x); }

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
  uint32_t ku = X509_get_key_usage(cert);           /* UINT32_MAX: no keyUsage extension */
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

mcim_cause_t mcim_pki_cert_verify(X509 *cert, X509 *ca, mcim_cert_usage_t usage, const char *name,
                                  int64_t now)
{
  X509_STORE *store = NULL;
  X509_STORE_CTX *ctx = NULL;
  char *cn = NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  if (!cert || !ca || !pki_usage_valid(usage))
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
