/* Lab PKI: CAs, issuing per usage, verification (chain, validity, usage, name), PEM files
 * (keys 0600, atomic), the lab folder, and keys from certificates feeding JWS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "mcim/jose.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/util.h"

static mcim_pki_ca_t *ops, *m2mes;
static char tmpdir[64];

static void rm_tree(const char *path)
{
  struct stat st;
  if (lstat(path, &st) != 0)
    return;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      char child[1024];
      snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
      rm_tree(child);
    }
    if (d)
      closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/mcim-test-pki-XXXXXX");
  if (!mkdtemp(tmpdir))
    return -1;
  if (mcim_pki_ca_create("mcim operators CA", 30, &ops) != MCIM_OK ||
      mcim_pki_ca_create("mcim M2MES CA", 30, &m2mes) != MCIM_OK)
    return -1;
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  mcim_pki_ca_free(ops);
  mcim_pki_ca_free(m2mes);
  rm_tree(tmpdir);
  return 0;
}

/* A new key and a certificate for it. */
static X509 *issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
                   EVP_PKEY **key_out)
{
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  assert_int_equal(mcim_pki_key_generate(&key), MCIM_OK);
  mcim_cert_request_t req = {.name = name, .usage = usage, .key = key};
  assert_int_equal(mcim_pki_issue(ca, &req, &cert), MCIM_OK);
  if (key_out)
    *key_out = key;
  else
    EVP_PKEY_free(key);
  return cert;
}

static mode_t file_mode(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_mode & 0777;
}

static void test_names(void **state)
{
  (void)state;
  static const char *const good[] = {"ro", "sho-a", "sho-c", "dev1", "m2mes", "a.b", "x_1", "A9"};
  static const char *const bad[] = {"", "-ro", ".", "..", "a/b", "a b", "a,IP:1.2.3.4", "é",
                                    "a\nb", "0123456789012345678901234567890123456789012345678901234567890123"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    assert_true(mcim_pki_name_valid(good[i]));
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_false(mcim_pki_name_valid(bad[i]));
  assert_false(mcim_pki_name_valid(NULL));
  assert_int_equal(mcim_cert_usage_from_name("tre-ka"), MCIM_CERT_TRE_KEY_AGREEMENT);
  assert_int_equal(mcim_cert_usage_from_name("nope"), -1);
  assert_string_equal(mcim_cert_usage_name(MCIM_CERT_TLS_CLIENT), "tls-client");
}

/* A role certificate: right chain, SAN, usages; the other CA and other names refused. */
static void test_tls_role(void **state)
{
  (void)state;
  X509 *cert = issue(ops, "sho-c", MCIM_CERT_TLS, NULL);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-c", 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, NULL, 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS_CLIENT, NULL, 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-a", 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(cert, m2mes->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TRE_ATTESTATION, NULL, 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(X509_check_host(cert, "localhost", 0, 0, NULL), 1);
  assert_int_equal(X509_check_host(cert, "sho-c", 0, 0, NULL), 1);
  assert_int_equal(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
  assert_int_equal(X509_check_host(cert, "sho-a", 0, 0, NULL), 0);
  char *cn = NULL;
  assert_int_equal(mcim_pki_cert_name(cert, &cn), MCIM_OK);
  assert_string_equal(cn, "sho-c");
  free(cn);
  /* A CA certificate is not a leaf. */
  assert_int_equal(mcim_pki_cert_verify(ops->cert, ops->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_INVALID);
  X509_free(cert);
}

static void test_admin_client(void **state)
{
  (void)state;
  X509 *cert = issue(ops, "admin", MCIM_CERT_TLS_CLIENT, NULL);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS_CLIENT, "admin", 0),
                   MCIM_OK);
  /* A client certificate cannot serve TLS. */
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_INVALID);
  X509_free(cert);
}

/* Device TRE certificates from the M2MES CA: signing and key agreement kept apart. */
static void test_device(void **state)
{
  (void)state;
  X509 *att = issue(m2mes, "dev1", MCIM_CERT_TRE_ATTESTATION, NULL);
  X509 *ka = issue(m2mes, "dev1", MCIM_CERT_TRE_KEY_AGREEMENT, NULL);
  assert_int_equal(mcim_pki_cert_verify(att, m2mes->cert, MCIM_CERT_TRE_ATTESTATION, "dev1", 0),
                   MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(ka, m2mes->cert, MCIM_CERT_TRE_KEY_AGREEMENT, "dev1", 0),
                   MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(att, m2mes->cert, MCIM_CERT_TRE_KEY_AGREEMENT, NULL, 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(ka, m2mes->cert, MCIM_CERT_TRE_ATTESTATION, NULL, 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(att, ops->cert, MCIM_CERT_TRE_ATTESTATION, NULL, 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(att, m2mes->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_INVALID);
  X509_free(att);
  X509_free(ka);
}

/* A verdict kept (src/crypto/pki_verdict.c) answers only for the same certificate, CA,
 * usage and name, and only inside both validities: the chain is not verified again (the
 * operation count stays), and everything else is verified, and refused, in full. */
static void test_verdict_kept(void **state)
{
  (void)state;
  int64_t now = mcim_now();
  X509 *cert = issue(ops, "sho-v", MCIM_CERT_TLS, NULL);
  X509 *other = issue(ops, "sho-v", MCIM_CERT_TLS, NULL);
  mcim_pki_verdicts_clear();
  uint64_t before = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-v", 0), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), before + 1);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-v", 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-v", now + 3600),
                   MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), before + 1); /* from the verdict */
  /* outside the validity: verified, and refused with its cause */
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-v", now + 400 * 86400),
                   MCIM_CERT_EXPIRED);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-v", now - 86400),
                   MCIM_CERT_INVALID);
  /* another name, usage, CA or certificate: not this verdict */
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "sho-a", 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TRE_ATTESTATION, "sho-v", 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(cert, m2mes->cert, MCIM_CERT_TLS, "sho-v", 0),
                   MCIM_CERT_INVALID);
  uint64_t mid = mcim_op_read(MCIM_OP_CERT_VERIFY);
  assert_int_equal(mcim_pki_cert_verify(other, ops->cert, MCIM_CERT_TLS, "sho-v", 0), MCIM_OK);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY), mid + 1);
  assert_int_equal(mcim_op_read(MCIM_OP_CERT_VERIFY) - before, 7); /* every check but the kept ones */
  X509_free(cert);
  X509_free(other);
}

static void test_validity(void **state)
{
  (void)state;
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int64_t now = mcim_now();
  assert_int_equal(mcim_pki_key_generate(&key), MCIM_OK);
  mcim_cert_request_t req = {.name = "sho-old", .usage = MCIM_CERT_TLS, .key = key,
                             .not_before = now - 2 * 86400, .not_after = now - 86400};
  assert_int_equal(mcim_pki_issue(ops, &req, &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_EXPIRED);
  X509_free(cert);

  cert = issue(ops, "sho-c", MCIM_CERT_TLS, NULL);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, NULL, now + 400 * 86400),
                   MCIM_CERT_EXPIRED);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, NULL, now - 86400),
                   MCIM_CERT_INVALID); /* not yet valid */
  X509_free(cert);

  req.not_before = now;
  req.not_after = now;
  assert_int_equal(mcim_pki_issue(ops, &req, &cert), MCIM_INVALID_ARGUMENT);
  req.not_after = 0;
  req.name = "bad name";
  assert_int_equal(mcim_pki_issue(ops, &req, &cert), MCIM_INVALID_ARGUMENT);
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  req.name = "sho-c";
  req.key = p384;
  assert_int_equal(mcim_pki_issue(ops, &req, &cert), MCIM_INVALID_ARGUMENT);
  EVP_PKEY_free(p384);
  EVP_PKEY_free(key);
}

/* A CA with the same name but another key is not our CA. */
static void test_impostor_ca(void **state)
{
  (void)state;
  mcim_pki_ca_t *fake = NULL;
  assert_int_equal(mcim_pki_ca_create("mcim operators CA", 30, &fake), MCIM_OK);
  X509 *cert = issue(fake, "ro", MCIM_CERT_TLS, NULL);
  assert_int_equal(mcim_pki_cert_verify(cert, ops->cert, MCIM_CERT_TLS, "ro", 0),
                   MCIM_CERT_INVALID);
  EVP_PKEY *pub = NULL;
  assert_int_equal(mcim_pki_cert_public_key(cert, ops->cert, MCIM_CERT_TLS, "ro", 0, &pub),
                   MCIM_CERT_INVALID);
  assert_null(pub);
  X509_free(cert);
  mcim_pki_ca_free(fake);
}

static void test_files(void **state)
{
  (void)state;
  char key_path[128], cert_path[128], junk_path[128];
  snprintf(key_path, sizeof(key_path), "%s/k.pem", tmpdir);
  snprintf(cert_path, sizeof(cert_path), "%s/c.pem", tmpdir);
  snprintf(junk_path, sizeof(junk_path), "%s/junk.pem", tmpdir);
  EVP_PKEY *key = NULL, *loaded = NULL;
  X509 *cert = issue(ops, "ro", MCIM_CERT_TLS, &key), *lc = NULL;

  assert_int_equal(mcim_pki_key_write(key_path, key), MCIM_OK);
  assert_int_equal(file_mode(key_path), 0600);
  assert_int_equal(mcim_pki_key_write(key_path, key), MCIM_OK); /* replace, atomically */
  assert_int_equal(file_mode(key_path), 0600);
  assert_int_equal(mcim_pki_key_load(key_path, &loaded), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(key, loaded), 1);
  assert_int_equal(mcim_pki_cert_write(cert_path, cert), MCIM_OK);
  assert_int_equal(file_mode(cert_path), 0644);
  assert_int_equal(mcim_pki_cert_load(cert_path, &lc), MCIM_OK);
  assert_int_equal(X509_cmp(cert, lc), 0);

  /* No temporary file is left behind. */
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  while ((e = readdir(d)))
    assert_null(strstr(e->d_name, ".tmp"));
  closedir(d);

  char missing[160];
  snprintf(missing, sizeof(missing), "%s/none.pem", tmpdir);
  EVP_PKEY *k2 = NULL;
  X509 *c2 = NULL;
  assert_int_equal(mcim_pki_key_load(missing, &k2), MCIM_NOT_FOUND);
  assert_int_equal(mcim_pki_cert_load(missing, &c2), MCIM_NOT_FOUND);
  FILE *f = fopen(junk_path, "w");
  fputs("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n", f);
  fclose(f);
  assert_int_equal(mcim_pki_key_load(junk_path, &k2), MCIM_KEY_INVALID);
  assert_int_equal(mcim_pki_cert_load(junk_path, &c2), MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_key_load(cert_path, &k2), MCIM_KEY_INVALID);
  /* Not P-256: refused. */
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  assert_int_equal(mcim_pki_key_write(junk_path, p384), MCIM_OK);
  assert_int_equal(mcim_pki_key_load(junk_path, &k2), MCIM_KEY_INVALID);
  assert_null(k2);
  EVP_PKEY_free(p384);
  /* An operator's key in the older SEC1 form ("EC PRIVATE KEY") loads as well. */
  f = fopen(junk_path, "w");
  OSSL_ENCODER_CTX *enc = OSSL_ENCODER_CTX_new_for_pkey(key, OSSL_KEYMGMT_SELECT_KEYPAIR, "PEM",
                                                        "type-specific", NULL);
  assert_non_null(enc);
  assert_int_equal(OSSL_ENCODER_to_fp(enc, f), 1);
  OSSL_ENCODER_CTX_free(enc);
  fclose(f);
  assert_int_equal(mcim_pki_key_load(junk_path, &k2), MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(key, k2), 1);
  EVP_PKEY_free(k2);
  k2 = NULL;
  /* An encrypted key is refused, without asking for a passphrase (stdin is never read). */
  f = fopen(junk_path, "w");
  assert_int_equal(PEM_write_PKCS8PrivateKey(f, key, EVP_aes_128_cbc(), "secret", 6, NULL, NULL),
                   1);
  fclose(f);
  assert_int_equal(mcim_pki_key_load(junk_path, &k2), MCIM_KEY_INVALID);
  assert_null(k2);
  /* Not EC at all. */
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  assert_int_equal(mcim_pki_key_write(junk_path, rsa), MCIM_OK);
  assert_int_equal(mcim_pki_key_load(junk_path, &k2), MCIM_KEY_INVALID);
  assert_null(k2);
  EVP_PKEY_free(rsa);

  /* A CA whose key does not match its certificate. */
  mcim_pki_ca_t *ca = NULL;
  assert_int_equal(mcim_pki_ca_write(ops, cert_path, key_path), MCIM_OK);
  assert_int_equal(mcim_pki_ca_load(cert_path, key_path, &ca), MCIM_OK);
  assert_int_equal(X509_cmp(ca->cert, ops->cert), 0);
  mcim_pki_ca_free(ca);
  ca = NULL;
  assert_int_equal(mcim_pki_key_write(key_path, key), MCIM_OK);
  assert_int_equal(mcim_pki_ca_load(cert_path, key_path, &ca), MCIM_KEY_INVALID);
  assert_null(ca);

  EVP_PKEY_free(key);
  EVP_PKEY_free(loaded);
  X509_free(cert);
  X509_free(lc);
}

/* Our keys' own form (unencrypted PKCS#8 with the public point) is read without OpenSSL's
 * decoders (mcim_pki_key_read_bio's fast path); the same key without its public point still
 * loads (the decoders compute it), and a public point that is not on the curve is refused. */
static EVP_PKEY *read_pem(const char *pem, long len, mcim_cause_t want)
{
  EVP_PKEY *k = NULL;
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  assert_int_equal(mcim_pki_key_read_bio(bio, &k), want);
  BIO_free(bio);
  return k;
}

static void test_key_forms(void **state)
{
  (void)state;
  EVP_PKEY *key = NULL, *k = NULL;
  X509 *cert = issue(ops, "ro", MCIM_CERT_TLS, &key);
  BIO *out = BIO_new(BIO_s_mem());
  char *pem = NULL, *name = NULL, *header = NULL;
  unsigned char *der = NULL;
  long len = 0, dlen = 0;

  /* ours */
  assert_int_equal(PEM_write_bio_PrivateKey(out, key, NULL, NULL, 0, NULL, NULL), 1);
  len = BIO_get_mem_data(out, &pem);
  k = read_pem(pem, len, MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(key, k), 1);
  EVP_PKEY_free(k);

  /* a point off the curve (the last byte of y, the DER's last) */
  BIO *in = BIO_new_mem_buf(pem, (int)len);
  assert_int_equal(PEM_read_bio_ex(in, &name, &header, &der, &dlen, 0), 1);
  BIO_free(in);
  der[dlen - 1] ^= 0x01;
  BIO *bad = BIO_new(BIO_s_mem());
  assert_true(PEM_write_bio(bad, "PRIVATE KEY", "", der, dlen) > 0);
  char *bad_pem = NULL;
  long bad_len = BIO_get_mem_data(bad, &bad_pem);
  assert_null(read_pem(bad_pem, bad_len, MCIM_KEY_INVALID));
  BIO_free(bad);

  /* PKCS#8 without the public point */
  EVP_PKEY *nopub = EVP_PKEY_dup(key);
  assert_non_null(nopub);
  assert_int_equal(EVP_PKEY_set_int_param(nopub, OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, 0), 1);
  BIO *np = BIO_new(BIO_s_mem());
  assert_int_equal(PEM_write_bio_PrivateKey(np, nopub, NULL, NULL, 0, NULL, NULL), 1);
  char *np_pem = NULL;
  long np_len = BIO_get_mem_data(np, &np_pem);
  assert_true(np_len < len); /* the point is not in it */
  k = read_pem(np_pem, np_len, MCIM_OK);
  assert_int_equal(EVP_PKEY_eq(key, k), 1);
  EVP_PKEY_free(k);
  BIO_free(np);
  EVP_PKEY_free(nopub);

  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(der);
  BIO_free(out);
  EVP_PKEY_free(key);
  X509_free(cert);
}

static void test_pem_memory(void **state)
{
  (void)state;
  X509 *cert = issue(ops, "ro", MCIM_CERT_TLS, NULL), *back = NULL;
  char *pem = NULL;
  assert_int_equal(mcim_pki_cert_to_pem(cert, &pem), MCIM_OK);
  assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &back), MCIM_OK);
  assert_int_equal(X509_cmp(cert, back), 0);
  X509 *none = NULL;
  assert_int_equal(mcim_pki_cert_from_pem(pem, 40, &none), MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_from_pem("garbage", 7, &none), MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_from_pem(pem, 0, &none), MCIM_INVALID_ARGUMENT);
  assert_null(none);
  free(pem);
  X509_free(cert);
  X509_free(back);
}

/* The public key of a verified role certificate checks the role's statements. */
static void test_cert_key_for_jws(void **state)
{
  (void)state;
  EVP_PKEY *priv = NULL, *pub = NULL;
  X509 *cert = issue(ops, "sho-a", MCIM_CERT_TLS, &priv);
  assert_int_equal(mcim_pki_cert_public_key(cert, ops->cert, MCIM_CERT_TLS, "sho-a", 0, &pub),
                   MCIM_OK);
  mcim_jose_key_t *signer = NULL, *verifier = NULL;
  assert_int_equal(mcim_jose_key_from_pkey(priv, &signer), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pub, &verifier), MCIM_OK);
  assert_false(mcim_jose_key_has_private(verifier));
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = "sho-a", .sub = "dev1", .aud = "ro", .typ = "mcim-package+jwt",
                     .txn = "t1", .iat = now, .exp = now + 60};
  char *jws = NULL;
  assert_int_equal(mcim_jws_sign(signer, &c, &jws), MCIM_OK);
  mcim_jws_expect_t x = {.iss = "sho-a", .aud = "ro", .typ = "mcim-package+jwt", .skew = 5};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), verifier, &x, NULL), MCIM_OK);
  free(jws);
  mcim_jose_key_free(signer);
  mcim_jose_key_free(verifier);
  EVP_PKEY_free(priv);
  EVP_PKEY_free(pub);
  X509_free(cert);
}

static void test_lab_init(void **state)
{
  (void)state;
  char dir[128], path[256];
  snprintf(dir, sizeof(dir), "%s/lab/pki", tmpdir);
  static const char *const roles[] = {"ro", "sho-c"};
  assert_int_equal(mcim_pki_lab_init(dir, roles, 2, false, 0), MCIM_OK);
  assert_int_equal(mcim_pki_lab_init(dir, roles, 2, false, 0), MCIM_CONFLICT);

  static const char *const keys[] = {"ca/operators-ca.key", "ca/m2mes-ca.key", "ro/key.pem",
                                     "sho-c/key.pem", "admin/key.pem"};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, keys[i]);
    assert_int_equal(file_mode(path), 0600);
  }
  mcim_pki_ca_t *lab_ops = NULL, *lab_m2mes = NULL;
  assert_int_equal(mcim_pki_lab_load_ca(dir, MCIM_PKI_CA_OPERATORS, &lab_ops), MCIM_OK);
  assert_int_equal(mcim_pki_lab_load_ca(dir, MCIM_PKI_CA_M2MES, &lab_m2mes), MCIM_OK);
  X509 *cert = NULL;
  EVP_PKEY *key = NULL;
  assert_int_equal(mcim_pki_lab_load_role(dir, "sho-c", &cert, &key), MCIM_OK);
  assert_int_equal(X509_check_private_key(cert, key), 1);
  assert_int_equal(mcim_pki_cert_verify(cert, lab_ops->cert, MCIM_CERT_TLS, "sho-c", 0), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, lab_m2mes->cert, MCIM_CERT_TLS, NULL, 0),
                   MCIM_CERT_INVALID);
  X509_free(cert);
  EVP_PKEY_free(key);
  cert = NULL;
  assert_int_equal(mcim_pki_lab_load_role(dir, MCIM_PKI_ADMIN, &cert, NULL), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, lab_ops->cert, MCIM_CERT_TLS_CLIENT, "admin", 0),
                   MCIM_OK);
  X509_free(cert);
  assert_int_equal(mcim_pki_lab_load_role(dir, "vno", &cert, NULL), MCIM_NOT_FOUND);

  /* Manufacture: the lab's M2MES CA certifies a device. */
  cert = issue(lab_m2mes, "dev7", MCIM_CERT_TRE_ATTESTATION, NULL);
  assert_int_equal(
      mcim_pki_cert_verify(cert, lab_m2mes->cert, MCIM_CERT_TRE_ATTESTATION, "dev7", 0), MCIM_OK);
  X509_free(cert);

  /* --force makes new CAs: the old role certificates no longer verify. */
  assert_int_equal(mcim_pki_lab_init(dir, roles, 2, true, 10), MCIM_OK);
  mcim_pki_ca_t *new_ops = NULL;
  assert_int_equal(mcim_pki_lab_load_ca(dir, MCIM_PKI_CA_OPERATORS, &new_ops), MCIM_OK);
  assert_int_not_equal(X509_cmp(new_ops->cert, lab_ops->cert), 0);
  assert_int_equal(mcim_pki_lab_load_role(dir, "ro", &cert, NULL), MCIM_OK);
  assert_int_equal(mcim_pki_cert_verify(cert, lab_ops->cert, MCIM_CERT_TLS, "ro", 0),
                   MCIM_CERT_INVALID);
  assert_int_equal(mcim_pki_cert_verify(cert, new_ops->cert, MCIM_CERT_TLS, "ro", 0), MCIM_OK);
  X509_free(cert);
  mcim_pki_ca_free(new_ops);
  mcim_pki_ca_free(lab_ops);
  mcim_pki_ca_free(lab_m2mes);

  static const char *const bad[][2] = {{"admin", NULL}, {"ca", NULL}, {"a/b", NULL},
                                       {"", NULL},      {"ro", "ro"}};
  snprintf(dir, sizeof(dir), "%s/lab2", tmpdir);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(mcim_pki_lab_init(dir, bad[i], bad[i][1] ? 2 : 1, false, 0),
                     MCIM_INVALID_ARGUMENT);
  assert_int_equal(access(dir, F_OK), -1); /* nothing was created */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_tls_role),
      cmocka_unit_test(test_admin_client),
      cmocka_unit_test(test_device),
      cmocka_unit_test(test_validity),
      cmocka_unit_test(test_verdict_kept),
      cmocka_unit_test(test_impostor_ca),
      cmocka_unit_test(test_files),
      cmocka_unit_test(test_pem_memory),
      cmocka_unit_test(test_key_forms),
      cmocka_unit_test(test_cert_key_for_jws),
      cmocka_unit_test(test_lab_init),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
