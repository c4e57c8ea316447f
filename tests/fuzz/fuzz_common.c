/* The fuzz targets' shared fixture (fuzz_common.h). */
#define _XOPEN_SOURCE 700 /* nftw */
#include "fuzz_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/bio.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "net/http_priv.h"
#include "tre/tre_priv.h"

#ifndef MCIM_FUZZ_DATA
#error "MCIM_FUZZ_DATA (tests/fuzz/data) is defined by tests/fuzz/CMakeLists.txt"
#endif

void fuzz_die(const char *what)
{
  fprintf(stderr, "fuzz fixture: %s\n", what);
  abort();
}

void fuzz_quiet(void)
{
  static FILE *null;
  if (null)
    return;
  null = fopen("/dev/null", "w");
  if (!null)
    fuzz_die("cannot open /dev/null");
  mcim_log_init("fuzz", MCIM_LOG_TEXT, MCIM_LOG_ERROR, null);
}

uint8_t *fuzz_read_file(const char *path, size_t *len)
{
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return NULL;
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = (n + 4096 + 1) * 2;
      uint8_t *b = realloc(buf, cap);
      if (!b) {
        free(buf);
        fclose(fp);
        return NULL;
      }
      buf = b;
    }
    size_t got = fread(buf + n, 1, 4096, fp);
    n += got;
    if (got < 4096)
      break;
  }
  fclose(fp);
  buf[n] = '\0';
  *len = n;
  return buf;
}

char *fuzz_data(const char *name, size_t *len)
{
  char path[1024];
  size_t n = 0;
  snprintf(path, sizeof(path), "%s/%s", MCIM_FUZZ_DATA, name);
  char *text = (char *)fuzz_read_file(path, &n);
  if (!text) {
    fprintf(stderr, "fuzz fixture: %s: %s\n", path, strerror(errno));
    fuzz_die("a file of tests/fuzz/data is missing (fuzz-seedgen data makes them)");
  }
  if (len)
    *len = n;
  return text;
}

EVP_PKEY *fuzz_pkey(const char *name)
{
  char file[128];
  size_t len = 0;
  EVP_PKEY *key = NULL;
  snprintf(file, sizeof(file), "%s.key", name);
  char *pem = fuzz_data(file, &len);
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio || mcim_pki_key_read_bio(bio, &key) != MCIM_OK)
    fuzz_die("a fixture key does not load");
  BIO_free(bio);
  free(pem);
  return key;
}

mcim_jose_key_t *fuzz_jose_key(const char *name)
{
  EVP_PKEY *pkey = fuzz_pkey(name);
  mcim_jose_key_t *key = NULL;
  if (mcim_jose_key_from_pkey(pkey, &key) != MCIM_OK || mcim_jose_key_set_kid(key, name))
    fuzz_die("a fixture key is no JOSE key");
  EVP_PKEY_free(pkey);
  return key;
}

X509 *fuzz_cert(const char *name)
{
  char file[128];
  size_t len = 0;
  X509 *cert = NULL;
  snprintf(file, sizeof(file), "%s.crt", name);
  char *pem = fuzz_data(file, &len);
  if (mcim_pki_cert_from_pem(pem, len, &cert) != MCIM_OK)
    fuzz_die("a fixture certificate does not load");
  free(pem);
  return cert;
}

char *fuzz_sign_raw(EVP_PKEY *key, const uint8_t *header, size_t hlen, const uint8_t *payload,
                    size_t plen)
{
  size_t h64 = mcim_b64url_len(hlen), p64 = mcim_b64url_len(plen), s64 = mcim_b64url_len(64);
  size_t cap = h64 + 1 + p64 + 1 + s64 + 1, dlen = 0;
  char *out = malloc(cap);
  uint8_t der[80], sig[64];
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  ECDSA_SIG *es = NULL;
  bool ok = false;

  if (!out || !md)
    goto cleanup;
  size_t n = mcim_b64url_encode(header, hlen, out);
  out[n++] = '.';
  n += mcim_b64url_encode(payload, plen, out + n);
  dlen = sizeof(der);
  if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestSign(md, der, &dlen, (const uint8_t *)out, n) != 1)
    goto cleanup;
  const uint8_t *p = der;
  es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
  if (!es || BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
    goto cleanup;
  out[n++] = '.';
  n += mcim_b64url_encode(sig, sizeof(sig), out + n);
  out[n] = '\0';
  ok = true;
cleanup:
  ECDSA_SIG_free(es);
  EVP_MD_CTX_free(md);
  if (!ok) {
    free(out);
    out = NULL;
  }
  return out;
}

char *fuzz_strndup(const uint8_t *data, size_t len)
{
  char *s = malloc(len + 1);
  if (!s)
    fuzz_die("out of memory");
  if (len)
    memcpy(s, data, len);
  s[len] = '\0';
  return s;
}

void fuzz_split(const uint8_t *data, size_t len, uint8_t sep, size_t *alen, const uint8_t **b,
                size_t *blen)
{
  const uint8_t *at = len ? memchr(data, sep, len) : NULL;
  *alen = at ? (size_t)(at - data) : len;
  *b = at ? at + 1 : NULL;
  *blen = at ? len - *alen - 1 : 0;
}

/* ---- folders ---- */

static char *tmpdirs[16];
static size_t ntmpdirs;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void tmpdirs_remove(void)
{
  for (size_t i = 0; i < ntmpdirs; i++) {
    nftw(tmpdirs[i], rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(tmpdirs[i]);
  }
  ntmpdirs = 0;
}

char *fuzz_tmpdir(const char *tag)
{
  struct stat sb;
  const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) &&
                             access("/dev/shm", W_OK) == 0
                         ? "/dev/shm"
                         : "/tmp";
  char *dir = malloc(strlen(base) + strlen(tag) + 32);
  if (!dir || ntmpdirs >= sizeof(tmpdirs) / sizeof(tmpdirs[0]))
    fuzz_die("too many folders");
  sprintf(dir, "%s/mcim-fuzz-%s-XXXXXX", base, tag);
  if (!mkdtemp(dir))
    fuzz_die("mkdtemp");
  if (ntmpdirs == 0)
    atexit(tmpdirs_remove);
  tmpdirs[ntmpdirs++] = strdup(dir);
  return dir;
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    fuzz_die("cannot write a file");
  while (len) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fuzz_die("cannot write a file");
    data += n;
    len -= (size_t)n;
  }
  close(fd);
}

/* ---- the TRE ---- */

static void tre_put_key(struct tre_soft *t, const char *member, const char *name)
{
  json_t *st = NULL, *pem = NULL;
  EVP_PKEY *key = fuzz_pkey(name);
  if (tre_begin(t, &st) != MCIM_OK)
    fuzz_die("the fixture TRE does not open");
  if (tre_key_pem_json(key, &pem) != MCIM_OK ||
      json_object_set_new(json_object_get(st, "keys"), member, pem) != 0 ||
      tre_commit(t, st) != MCIM_OK)
    fuzz_die("cannot put a fixed key into the fixture TRE");
  tre_end(t, st);
  EVP_PKEY_free(key);
}

/* The per-procedure key-agreement key of FUZZ_TXN (src/tre/tre_txn.c: made at the quote, the
 * one a package of that procedure is sealed to) is the fixture's tre-ka too, so that the
 * seeds' packages, sealed to tre-ka, open at stage as the SHO's would. */
static void tre_put_txn_key(struct tre_soft *t, const char *txn, const char *name)
{
  json_t *st = NULL, *pem = NULL, *keys;
  EVP_PKEY *key = fuzz_pkey(name);
  if (tre_begin(t, &st) != MCIM_OK)
    fuzz_die("the fixture TRE does not open");
  if (!json_is_array(json_object_get(st, "txn_keys")))
    json_object_set_new(st, "txn_keys", json_array());
  keys = json_object_get(st, "txn_keys");
  if (tre_key_pem_json(key, &pem) != MCIM_OK || !keys ||
      json_array_append_new(keys, json_pack("{s:s,s:o,s:I}", "txn", txn, "key", pem, "created",
                                            (json_int_t)mcim_now())) != 0 ||
      tre_commit(t, st) != MCIM_OK)
    fuzz_die("cannot put a fixed procedure key into the fixture TRE");
  tre_end(t, st);
  EVP_PKEY_free(key);
}

mcim_tre_t *fuzz_tre_make(const char *dir)
{
  mcim_tre_t *tre = NULL;
  char *owner_jwk = NULL, *jwe = NULL;
  mcim_jose_key_t *owner = fuzz_jose_key("owner"), *ka = fuzz_jose_key("tre-ka");
  char *ops_ca = fuzz_data("operators-ca.crt", NULL), *m2mes_ca = fuzz_data("m2mes-ca.crt", NULL);
  char *att_pem = fuzz_data("tre-att.crt", NULL), *ka_pem = fuzz_data("tre-ka.crt", NULL);
  char cred[256];

  /* The fixture's storage key (a create reuses a key it finds): the slot files of the
   * seeds open with it. */
  char path[1024];
  size_t klen = 0;
  char *skey = fuzz_data("tre.key", &klen);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    fuzz_die("cannot make the TRE folder");
  snprintf(path, sizeof(path), "%s/%s", dir, TRE_FILE_KEY);
  fuzz_write_file(path, (const uint8_t *)skey, klen);
  free(skey);
  if (mcim_jose_key_set_kid(owner, NULL) != MCIM_OK ||
      mcim_jose_key_public_jwk(owner, &owner_jwk) != MCIM_OK)
    fuzz_die("owner key");
  if (mcim_tre_soft_create(dir, FUZZ_DEVICE, FUZZ_MODEL, owner_jwk, ops_ca, m2mes_ca) != MCIM_OK ||
      mcim_tre_soft_open(dir, &tre) != MCIM_OK)
    fuzz_die("cannot manufacture the fixture TRE");
  /* The TRE made its own keys; the fixture's replace them (white box: the storage key is in
   * the folder), so that what the seeds sealed to tre-ka opens here. */
  tre_put_key(tre->ctx, "attestation", "tre-att");
  tre_put_key(tre->ctx, "ka", "tre-ka");
  tre_put_txn_key(tre->ctx, FUZZ_TXN, "tre-ka");
  if (mcim_tre_soft_set_certs(tre, att_pem, ka_pem) != MCIM_OK)
    fuzz_die("the fixture's TRE certificates are refused");
  snprintf(cred, sizeof(cred),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}",
           FUZZ_PCID, FUZZ_PCID_K, FUZZ_PCID_OPC, (long long)FUZZ_EXP);
  if (mcim_jwe_encrypt(ka, (const uint8_t *)cred, strlen(cred), &jwe) != MCIM_OK ||
      tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)) != MCIM_OK)
    fuzz_die("the fixture's PCID credential is refused");
  free(jwe);
  free(owner_jwk);
  free(ops_ca);
  free(m2mes_ca);
  free(att_pem);
  free(ka_pem);
  mcim_jose_key_free(owner);
  mcim_jose_key_free(ka);
  return tre;
}

static const char *const slot_files[2] = {TRE_FILE_STATE, TRE_FILE_STATE_1};

void fuzz_tre_save(const char *dir, struct fuzz_tre_files *f)
{
  char path[1024];
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, slot_files[i]);
    f->buf[i] = fuzz_read_file(path, &f->len[i]);
  }
}

void fuzz_tre_restore(const char *dir, const struct fuzz_tre_files *f)
{
  char path[1024];
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, slot_files[i]);
    if (f->buf[i])
      fuzz_write_file(path, f->buf[i], f->len[i]);
    else
      unlink(path);
  }
}

void fuzz_post_json(const struct mcim_http_server_cfg *cfg, const char *path,
                    const uint8_t *body, size_t len)
{
  const struct mcim_http_wire w = {
      .method = "POST",
      .path = path,
      .content_type = "application/json",
      .body = body,
      .body_len = len,
  };
  struct mcim_http_response resp = {0};
  mcim_http_dispatch_(cfg, &w, &resp);
  mcim_http_response_clear(&resp);
}
