/* The software TRE (src/tre/), with real crypto throughout: a throw-away PKI (operators' CA,
 * M2MES CA, an unrelated CA), SHO keys with operators' CA certificates, an owner key, an AuC
 * made of Milenage + AV generation + the HE SQN state. Every mutating operation is followed
 * by a reopen from disk that must show the same state. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <cjose/cjose.h>
#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define PCID2 "001010000000002"
#define TYP_PKG "mcim-package+jwt"
#define TYP_INSTR "mcim-instruction+jwt"
#define TXN_A "0123456789abcdef0123456789abcdef"
#define TXN_B "fedcba9876543210fedcba9876543210"
#define TXN_C "00000000000000000000000000000001"
#define TXN_D "00000000000000000000000000000002"

/* ---- group fixtures: PKI, SHOs, owner, log capture ---------------------------------- */

struct sho {
  const char *name;
  EVP_PKEY *pkey;
  mcim_jose_key_t *key;
  char *cert_pem;          /* operators' CA */
  uint8_t k[16], opc[16];  /* the MCIM it issues */
  char imsi[16];
};

static mcim_pki_ca_t *ops_ca, *m2mes_ca, *evil_ca;
static char *ops_ca_pem, *m2mes_ca_pem;
static struct sho sho_a = {.name = "sho-a", .imsi = "001020000000007"};
static struct sho sho_b = {.name = "sho-b", .imsi = "001030000000009"};
static struct sho sho_ro = {.name = "ro", .imsi = "001010000000099"};  /* reserved name */
static struct sho sho_evil = {.name = "sho-a", .imsi = "001020000000008"}; /* other CA */
static struct sho sho_old = {.name = "sho-b", .imsi = "001030000000010"};  /* expired cert */
static mcim_jose_key_t *owner, *stranger;
static char *owner_jwk;
static FILE *log_fp;

/* Every secret any test hands the TRE, to search outputs, the disk and the log for. */
static char secrets[64][33];
static size_t nsecrets;

static void remember_secret(const uint8_t b[16])
{
  assert_true(nsecrets < sizeof(secrets) / sizeof(secrets[0]));
  mcim_hex_encode(b, 16, secrets[nsecrets++]);
}

static char *cert_pem_issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
                            EVP_PKEY *key, int64_t nb, int64_t na)
{
  X509 *x = NULL;
  char *pem = NULL;
  mcim_cert_request_t req = {
      .name = name, .usage = usage, .key = key, .not_before = nb, .not_after = na, .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  return pem;
}

static void sho_make(struct sho *s, const mcim_pki_ca_t *ca, int64_t nb, int64_t na)
{
  assert_int_equal(mcim_pki_key_generate(&s->pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(s->pkey, &s->key), MCIM_OK);
  s->cert_pem = cert_pem_issue(ca, s->name, MCIM_CERT_TLS, s->pkey, nb, na);
  assert_int_equal(mcim_random(s->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(s->opc, 16), MCIM_OK);
  remember_secret(s->k);
  remember_secret(s->opc);
}

static void sho_free(struct sho *s)
{
  EVP_PKEY_free(s->pkey);
  mcim_jose_key_free(s->key);
  free(s->cert_pem);
}

static int group_setup(void **state)
{
  (void)state;
  log_fp = tmpfile();
  assert_non_null(log_fp);
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, log_fp);
  assert_int_equal(mcim_pki_ca_create("operators-ca", 30, &ops_ca), MCIM_OK);
  assert_int_equal(mcim_pki_ca_create("m2mes-ca", 30, &m2mes_ca), MCIM_OK);
  assert_int_equal(mcim_pki_ca_create("evil-ca", 30, &evil_ca), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(ops_ca->cert, &ops_ca_pem), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(m2mes_ca->cert, &m2mes_ca_pem), MCIM_OK);
  int64_t now = mcim_now();
  sho_make(&sho_a, ops_ca, 0, 0);
  sho_make(&sho_b, ops_ca, 0, 0);
  sho_make(&sho_ro, ops_ca, 0, 0);
  sho_make(&sho_evil, evil_ca, 0, 0);
  sho_make(&sho_old, ops_ca, now - 7200, now - 3600);
  assert_int_equal(mcim_jose_key_generate(&owner), MCIM_OK);
  assert_int_equal(mcim_jose_key_generate(&stranger), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(owner, &owner_jwk), MCIM_OK);
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  sho_free(&sho_a);
  sho_free(&sho_b);
  sho_free(&sho_ro);
  sho_free(&sho_evil);
  sho_free(&sho_old);
  mcim_pki_ca_free(ops_ca);
  mcim_pki_ca_free(m2mes_ca);
  mcim_pki_ca_free(evil_ca);
  free(ops_ca_pem);
  free(m2mes_ca_pem);
  mcim_jose_key_free(owner);
  mcim_jose_key_free(stranger);
  free(owner_jwk);
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL);
  fclose(log_fp);
  return 0;
}

/* Log text written since `from`. */
static char *log_since(long from)
{
  fflush(log_fp);
  long end = ftell(log_fp);
  assert_true(end >= from);
  char *buf = calloc(1, (size_t)(end - from) + 1);
  assert_non_null(buf);
  assert_int_equal(fseek(log_fp, from, SEEK_SET), 0);
  size_t got = fread(buf, 1, (size_t)(end - from), log_fp);
  assert_int_equal((long)got, end - from);
  assert_int_equal(fseek(log_fp, 0, SEEK_END), 0);
  return buf;
}

/* ---- per-test fixture: a manufactured TRE with a PCID credential --------------------- */

struct auc {
  mcim_milenage_t *m;
  struct mcim_sqn_params p;
  struct mcim_sqn_he he;
};

struct fx {
  char dir[64];
  mcim_tre_t *tre;
  mcim_jose_key_t *ka_pub, *att_pub;
  uint8_t pcid_k[16], pcid_opc[16];
};

static void auc_init(struct auc *a, const uint8_t k[16], const uint8_t opc[16])
{
  assert_int_equal(mcim_milenage_new(&a->m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(a->m, k, opc), MCIM_OK);
  mcim_sqn_params_default(&a->p);
  assert_int_equal(mcim_sqn_he_init(&a->p, &a->he), MCIM_OK);
}

static uint64_t auc_av(struct auc *a, struct mcim_aka_av *av)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  struct mcim_sqn_he next;
  uint64_t sqn = 0;
  uint8_t sqnb[MCIM_SQN_LEN];
  assert_int_equal(mcim_sqn_he_next(&a->p, &a->he, &next, &sqn), MCIM_OK);
  a->he = next;
  mcim_sqn_to_bytes(sqn, sqnb);
  assert_int_equal(mcim_aka_gen_av(a->m, NULL, sqnb, amf, av), MCIM_OK);
  return sqn;
}

static void auc_free(struct auc *a)
{
  mcim_milenage_free(a->m);
}

static mcim_cause_t tre_aka(struct fx *f, const char *cred, const struct mcim_aka_av *av,
                            uint8_t res[8], uint8_t auts[14])
{
  return f->tre->ops->aka(f->tre->ctx, cred, av->rand, av->autn, res, auts);
}

static json_t *status_of(mcim_tre_t *tre)
{
  json_t *st = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &st), MCIM_OK);
  assert_non_null(st);
  return st;
}

/* The state on disk is the state the handle reports: a second handle and a fresh one on the
 * same folder both see exactly it. */
static void check_persisted(struct fx *f)
{
  mcim_tre_t *other = NULL;
  json_t *a = status_of(f->tre);
  assert_int_equal(mcim_tre_soft_open(f->dir, &other), MCIM_OK);
  json_t *b = status_of(other);
  mcim_tre_close(other);
  mcim_tre_close(f->tre);
  f->tre = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  json_t *c = status_of(f->tre);
  assert_true(json_equal(a, b));
  assert_true(json_equal(a, c));
  json_decref(a);
  json_decref(b);
  json_decref(c);
}

/* JWK (public, from the TRE) to an EVP_PKEY, as the M2MES does to certify it. */
static EVP_PKEY *jwk_to_pkey(const char *jwk)
{
  uint8_t pt[65], tmp[40];
  size_t len = 0;
  json_t *j = json_loads(jwk, 0, NULL);
  assert_non_null(j);
  assert_null(json_object_get(j, "d")); /* public only */
  pt[0] = 0x04;
  const char *x = json_string_value(json_object_get(j, "x"));
  const char *y = json_string_value(json_object_get(j, "y"));
  assert_int_equal(mcim_b64url_decode(x, strlen(x), tmp, sizeof(tmp), &len), MCIM_OK);
  assert_int_equal(len, 32);
  memcpy(pt + 1, tmp, 32);
  assert_int_equal(mcim_b64url_decode(y, strlen(y), tmp, sizeof(tmp), &len), MCIM_OK);
  assert_int_equal(len, 32);
  memcpy(pt + 33, tmp, 32);
  json_decref(j);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  assert_non_null(bld);
  assert_int_equal(
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), 1);
  assert_int_equal(
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)), 1);
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  EVP_PKEY *pkey = NULL;
  assert_true(params && ctx);
  assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
  assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  return pkey;
}

static char *pcid_jwe(const mcim_jose_key_t *ka, const char *pcid, const uint8_t k[16],
                      const uint8_t opc[16], int64_t expires)
{
  char kh[33], oh[33], text[256];
  char *jwe = NULL;
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}", pcid,
           kh, oh, (long long)expires);
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  mcim_wipe(text, sizeof(text));
  return jwe;
}

static int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *att_jwk = NULL, *ka_jwk = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-tre-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  /* Manufacture: keys inside the TRE, certificates from the M2MES CA, first PCID. */
  assert_int_equal(mcim_tre_soft_create(f->dir, DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  EVP_PKEY *att = jwk_to_pkey(att_jwk), *ka = jwk_to_pkey(ka_jwk);
  char *att_pem = cert_pem_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, att, 0, 0);
  char *ka_pem = cert_pem_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT, ka, 0, 0);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, att_pem, ka_pem), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(ka_jwk, strlen(ka_jwk), &f->ka_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(att_jwk, strlen(att_jwk), &f->att_pub), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_k, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_opc, 16), MCIM_OK);
  remember_secret(f->pcid_k);
  remember_secret(f->pcid_opc);
  char *jwe = pcid_jwe(f->ka_pub, PCID1, f->pcid_k, f->pcid_opc, mcim_now() + 3600);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  free(att_pem);
  free(ka_pem);
  EVP_PKEY_free(att);
  EVP_PKEY_free(ka);
  free(att_jwk);
  free(ka_jwk);
  *state = f;
  return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int fx_teardown(void **state)
{
  struct fx *f = *state;
  mcim_tre_close(f->tre);
  mcim_jose_key_free(f->ka_pub);
  mcim_jose_key_free(f->att_pub);
  nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* ---- white-box access to the sealed file (the test holds the storage key) ----------- */

static char *path_in(const struct fx *f, const char *name)
{
  static char buf[4][128];
  static int n;
  char *p = buf[n++ % 4];
  snprintf(p, 128, "%s/%s", f->dir, name);
  return p;
}

static uint8_t *file_read(const char *path, size_t *len)
{
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long n = ftell(fp);
  assert_true(n > 0);
  rewind(fp);
  uint8_t *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
  buf[n] = 0;
  fclose(fp);
  *len = (size_t)n;
  return buf;
}

static void file_write(const char *path, const void *buf, size_t len)
{
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(buf, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

/* A slot's header: generation (0 for format 1), where the sealed blob starts, its length.
 * false when the file is missing or its header is not one of ours. */
static bool slot_header(const uint8_t *buf, size_t len, uint64_t *gen, size_t *blob,
                        size_t *blob_len)
{
  const char v1[] = "mcim-tre 1 " DEVICE "\n", v2[] = "mcim-tre 2 " DEVICE " ";
  if (len >= strlen(v1) && memcmp(buf, v1, strlen(v1)) == 0) {
    *gen = 0;
    *blob = strlen(v1);
    *blob_len = len - *blob;
    return true;
  }
  if (len < strlen(v2) || memcmp(buf, v2, strlen(v2)) != 0)
    return false;
  unsigned long long g = 0;
  size_t n = 0;
  int used = 0;
  char head[128];
  size_t hl = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
  memcpy(head, buf, hl);
  head[hl] = '\0';
  if (sscanf(head + strlen(v2), "%llu %zu\n%n", &g, &n, &used) != 2 || used == 0)
    return false;
  *gen = g;
  *blob = strlen(v2) + (size_t)used;
  *blob_len = n;
  return *blob + n <= len;
}

static const char *slot_name(int i)
{
  return i == 0 ? "tre.sealed" : "tre.sealed.1";
}

/* The slot holding the newest generation (whether it opens or not), and that generation. */
static int newest_slot(const struct fx *f, uint64_t *gen_out)
{
  int best = -1;
  uint64_t best_gen = 0;
  for (int i = 0; i < 2; i++) {
    size_t len = 0, blob = 0, blob_len = 0;
    uint64_t gen = 0;
    if (access(path_in(f, slot_name(i)), F_OK) != 0)
      continue;
    uint8_t *buf = file_read(path_in(f, slot_name(i)), &len);
    if (slot_header(buf, len, &gen, &blob, &blob_len) && (best < 0 || gen > best_gen)) {
      best = i;
      best_gen = gen;
    }
    free(buf);
  }
  assert_true(best >= 0);
  if (gen_out)
    *gen_out = best_gen;
  return best;
}

static void gen_context(uint64_t gen, char *out, size_t n)
{
  if (gen == 0)
    snprintf(out, n, "tre/%s", DEVICE);
  else
    snprintf(out, n, "tre/%s/%llu", DEVICE, (unsigned long long)gen);
}

/* The state document in clear (the newest slot). */
static json_t *state_read(const struct fx *f)
{
  mcim_storage_key_t *key = NULL;
  size_t len = 0, plain_len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  char context[96];
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  uint8_t *buf = file_read(path_in(f, slot_name(newest_slot(f, NULL))), &len);
  assert_true(slot_header(buf, len, &gen, &blob, &blob_len));
  gen_context(gen, context, sizeof(context));
  uint8_t *plain = malloc(len);
  assert_non_null(plain);
  assert_int_equal(mcim_unseal(key, context, buf + blob, blob_len, plain, len, &plain_len),
                   MCIM_OK);
  json_t *st = json_loadb((const char *)plain, plain_len, 0, NULL);
  assert_non_null(st);
  free(plain);
  free(buf);
  mcim_storage_key_free(key);
  return st;
}

/* A new generation with this document, written as the TRE would: into the other slot. */
static void state_write(const struct fx *f, json_t *st)
{
  mcim_storage_key_t *key = NULL;
  uint64_t gen = 0;
  int slot = newest_slot(f, &gen) ^ 1;
  char hdr[128], context[96];
  gen++;
  gen_context(gen, context, sizeof(context));
  char *text = json_dumps(st, JSON_COMPACT);
  assert_non_null(text);
  size_t n = strlen(text), out_len = 0;
  snprintf(hdr, sizeof(hdr), "mcim-tre 2 %s %llu %zu\n", DEVICE, (unsigned long long)gen,
           mcim_seal_len(n));
  uint8_t *buf = malloc(strlen(hdr) + mcim_seal_len(n));
  assert_non_null(buf);
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  memcpy(buf, hdr, strlen(hdr));
  assert_int_equal(mcim_seal(key, context, (const uint8_t *)text, n, buf + strlen(hdr),
                             mcim_seal_len(n), &out_len),
                   MCIM_OK);
  file_write(path_in(f, slot_name(slot)), buf, strlen(hdr) + out_len);
  assert_int_equal(chmod(path_in(f, slot_name(slot)), 0600), 0);
  mcim_storage_key_free(key);
  free(buf);
  free(text);
}

static bool contains_ci(const char *hay, size_t len, const char *needle)
{
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++) {
    size_t j = 0;
    while (j < n && tolower((unsigned char)hay[i + j]) == tolower((unsigned char)needle[j]))
      j++;
    if (j == n)
      return true;
  }
  return false;
}

static bool has_secret(const char *text, size_t len, const uint8_t b[16])
{
  char hex[33];
  mcim_hex_encode(b, 16, hex);
  return contains_ci(text, len, hex);
}

/* The document as text with every MCIM's secrets opened with its own key (per-slot keys,
 * docs/tre.md section 8): what whoever holds the document can read. free(). */
static char *doc_text_opened(json_t *doc)
{
  char *text = json_dumps(doc, 0);
  const char *lists[] = {"slots", "staged"};
  size_t i, n = strlen(text);
  json_t *e;
  for (size_t l = 0; l < 2; l++) {
    json_array_foreach(json_object_get(doc, lists[l]), i, e) {
      const char *b64 = json_string_value(json_object_get(e, "secrets"));
      if (!b64)
        continue;
      uint8_t raw[32], sealed[256], plain[256];
      size_t sl = 0, pl = 0;
      char context[64];
      mcim_storage_key_t *k = NULL;
      snprintf(context, sizeof(context), "tre-slot/%s",
               json_string_value(json_object_get(e, "txn")));
      assert_int_equal(
          mcim_hex_decode_str(json_string_value(json_object_get(e, "slot_key")), raw, sizeof(raw)),
          MCIM_OK);
      assert_int_equal(mcim_b64url_decode(b64, strlen(b64), sealed, sizeof(sealed), &sl), MCIM_OK);
      assert_int_equal(mcim_storage_key_from_bytes(raw, sizeof(raw), &k), MCIM_OK);
      assert_int_equal(mcim_unseal(k, context, sealed, sl, plain, sizeof(plain), &pl), MCIM_OK);
      mcim_storage_key_free(k);
      char *more = realloc(text, n + pl + 1);
      assert_non_null(more);
      text = more;
      memcpy(text + n, plain, pl);
      n += pl;
      text[n] = '\0';
    }
  }
  return text;
}

/* ---- MCIM packages --------------------------------------------------------------------- */

struct pkg {
  const struct sho *signer;
  const char *iss, *aud, *sub, *typ, *txn, *content_sho;
  int64_t iat, exp;
  const char *jti;
  const mcim_jose_key_t *recipient;
  bool drop_k; /* incomplete content */
};

static struct pkg pkg_default(const struct fx *f, const struct sho *s, const char *txn)
{
  struct pkg p = {.signer = s,
                  .iss = s->name,
                  .aud = DEVICE,
                  .sub = DEVICE,
                  .typ = TYP_PKG,
                  .txn = txn,
                  .content_sho = s->name,
                  .recipient = f->ka_pub};
  return p;
}

static char *pkg_make(const struct pkg *p)
{
  char kh[33], oh[33], text[512];
  char *out = NULL;
  int64_t now = mcim_now();
  mcim_hex_encode(p->signer->k, 16, kh);
  mcim_hex_encode(p->signer->opc, 16, oh);
  if (p->drop_k)
    snprintf(text, sizeof(text), "{\"sho\":\"%s\",\"imsi\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\"}",
             p->content_sho, p->signer->imsi, oh);
  else
    snprintf(text, sizeof(text),
             "{\"sho\":\"%s\",\"imsi\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\"}",
             p->content_sho, p->signer->imsi, kh, oh);
  mcim_claims_t c = {.iss = p->iss,
                     .sub = p->sub,
                     .aud = p->aud,
                     .typ = p->typ,
                     .jti = p->jti,
                     .txn = p->txn,
                     .iat = p->iat ? p->iat : now,
                     .exp = p->exp ? p->exp : now + 600};
  assert_int_equal(mcim_package_seal(p->signer->key, &c, p->recipient, (const uint8_t *)text,
                                     strlen(text), &out),
                   MCIM_OK);
  mcim_wipe(text, sizeof(text));
  return out;
}

static mcim_cause_t stage(struct fx *f, const char *txn, const char *pkg, const struct sho *cert)
{
  return f->tre->ops->stage(f->tre->ctx, txn, pkg, strlen(pkg), cert->cert_pem);
}

/* Stage and install the default package of `s` under `txn`. */
static void provision(struct fx *f, const struct sho *s, const char *txn)
{
  struct pkg p = pkg_default(f, s, txn);
  char *pkg = pkg_make(&p);
  char slot[64] = "";
  assert_int_equal(stage(f, txn, pkg, s), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txn, slot), MCIM_OK);
  assert_string_equal(slot, s->name);
  free(pkg);
}

static json_t *slot_of(json_t *status, const char *name)
{
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(status, "slots"), i, s) {
    if (strcmp(json_string_value(json_object_get(s, "slot")), name) == 0)
      return s;
  }
  return NULL;
}

static const char *slot_state(struct fx *f, const char *name)
{
  static char buf[16];
  json_t *st = status_of(f->tre);
  json_t *s = slot_of(st, name);
  snprintf(buf, sizeof(buf), "%s", s ? json_string_value(json_object_get(s, "state")) : "none");
  json_decref(st);
  return buf;
}

/* ---- tests: manufacture --------------------------------------------------------------- */

static void test_manufacture(void **state)
{
  struct fx *f = *state;
  json_t *st = status_of(f->tre);
  assert_string_equal(json_string_value(json_object_get(st, "device")), DEVICE);
  assert_string_equal(json_string_value(json_object_get(st, "model")), MODEL);
  assert_true(json_is_true(json_object_get(st, "owner_pinned")));
  assert_true(json_is_true(json_object_get(json_object_get(st, "certs"), "attestation")));
  assert_true(json_is_true(json_object_get(json_object_get(st, "certs"), "ka")));
  assert_string_equal(json_string_value(json_object_get(json_object_get(st, "pcid"), "id")), PCID1);
  assert_int_equal(json_array_size(json_object_get(st, "slots")), 0);
  json_decref(st);
  check_persisted(f);

  /* Files: key and state 0600. */
  struct stat sb;
  assert_int_equal(stat(path_in(f, "tre.key"), &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  assert_int_equal(stat(path_in(f, "tre.sealed"), &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);

  /* A TRE is never replaced; nothing is opened where there is none. */
  assert_int_equal(mcim_tre_soft_create(f->dir, DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_CONFLICT);
  mcim_tre_t *none = NULL;
  assert_int_equal(mcim_tre_soft_open("/tmp/mcim-tre-does-not-exist", &none), MCIM_NOT_FOUND);
  /* The owner's private key is refused (a device must not hold it), and so is a device
   * id that is not a name. Both are checked before anything is written. */
  cjose_err err;
  cjose_jwk_t *cj = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
  assert_non_null(cj);
  char *priv = cjose_jwk_to_json(cj, true, &err);
  assert_non_null(strstr(priv, "\"d\""));
  assert_int_equal(mcim_tre_soft_create(path_in(f, "sub"), "dev2", MODEL, priv, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_KEY_INVALID);
  assert_int_equal(access(path_in(f, "sub"), F_OK), -1);
  mcim_wipe(priv, strlen(priv));
  free(priv);
  cjose_jwk_release(cj);
  assert_int_equal(mcim_tre_soft_create(path_in(f, "sub"), "bad name", MODEL, owner_jwk,
                                        ops_ca_pem, m2mes_ca_pem),
                   MCIM_INVALID_ARGUMENT);

  /* Certificates: the PEM comes back; a swapped pair (each cert for the other key) and a
   * certificate for another device are refused. */
  char *att_pem = NULL, *ka_pem = NULL;
  assert_int_equal(f->tre->ops->cert(f->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &att_pem), MCIM_OK);
  assert_int_equal(f->tre->ops->cert(f->tre->ctx, MCIM_TRE_CERT_KA, &ka_pem), MCIM_OK);
  assert_non_null(strstr(att_pem, "BEGIN CERTIFICATE"));
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, ka_pem, att_pem), MCIM_CERT_INVALID);
  char *jwk = NULL;
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_ATTESTATION, &jwk), MCIM_OK);
  assert_null(strstr(jwk, "\"d\""));
  EVP_PKEY *att = jwk_to_pkey(jwk);
  char *other = cert_pem_issue(m2mes_ca, "dev2", MCIM_CERT_TRE_ATTESTATION, att, 0, 0);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, other, ka_pem), MCIM_CERT_INVALID);
  /* Right name and usage, but another key. */
  EVP_PKEY *wrong = NULL;
  assert_int_equal(mcim_pki_key_generate(&wrong), MCIM_OK);
  char *wrong_pem = cert_pem_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, wrong, 0, 0);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, wrong_pem, ka_pem), MCIM_KEY_INVALID);
  /* The good pair again is fine. */
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, att_pem, ka_pem), MCIM_OK);
  check_persisted(f);
  EVP_PKEY_free(att);
  EVP_PKEY_free(wrong);
  free(wrong_pem);
  free(other);
  free(jwk);
  free(att_pem);
  free(ka_pem);
}

/* ---- tests: PCID AKA ------------------------------------------------------------------ */

static void test_pcid_aka(void **state)
{
  struct fx *f = *state;
  struct auc auc, wrong;
  struct mcim_aka_av av, av2, bad;
  uint8_t res[8], auts[14], sqn_ms[MCIM_SQN_LEN], wk[16];
  char id[24];

  assert_int_equal(f->tre->ops->identity(f->tre->ctx, MCIM_TRE_PCID, id), MCIM_OK);
  assert_string_equal(id, PCID1);
  assert_int_equal(f->tre->ops->identity(f->tre->ctx, "sho-a", id), MCIM_NOT_FOUND);

  auc_init(&auc, f->pcid_k, f->pcid_opc);
  uint64_t sqn1 = auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  check_persisted(f);

  /* The same challenge again (after a restart): the SQN was committed, so it is stale. */
  memset(auts, 0, sizeof(auts));
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_SYNC_FAILURE);
  assert_int_equal(mcim_aka_resync(auc.m, av.rand, auts, sqn_ms), MCIM_OK);
  assert_int_equal(mcim_sqn_from_bytes(sqn_ms), sqn1);
  struct mcim_sqn_he next;
  assert_int_equal(mcim_sqn_he_resync(&auc.p, &auc.he, sqn1, &next), MCIM_OK);
  auc.he = next;
  auc_av(&auc, &av2);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av2, res, auts), MCIM_OK);
  assert_memory_equal(res, av2.xres, 8);

  /* Wrong K: MAC failure, and nothing moves (the next genuine vector still works). */
  assert_int_equal(mcim_random(wk, 16), MCIM_OK);
  auc_init(&wrong, wk, f->pcid_opc);
  auc_av(&wrong, &bad);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &bad, res, auts), MCIM_MAC_FAILURE);
  /* A forged AUTN (one bit of MAC-A) as well. */
  auc_av(&auc, &av);
  av.autn[15] ^= 1;
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_MAC_FAILURE);
  av.autn[15] ^= 1;
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);

  assert_int_equal(tre_aka(f, "nobody", &av, res, auts), MCIM_NOT_FOUND);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID_PREV, &av, res, auts), MCIM_NOT_FOUND);
  auc_free(&auc);
  auc_free(&wrong);
}

static char *slurp(const char *path, size_t *len)
{
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  char *buf = malloc(65536);
  assert_non_null(buf);
  *len = fread(buf, 1, 65536, fp);
  fclose(fp);
  return buf;
}

/* Each handle keeps the document it last read or wrote (tre_store.c) and reads the slots
 * again only when the newest is another file: another handle's write is seen at once (the SQN
 * it committed makes the same challenge stale here too), and so are older copies of both
 * slots written back in place, which then open as they did before the cache (a software TRE
 * cannot detect that rollback: docs/tre.md). */
static void test_two_handles(void **state)
{
  struct fx *f = *state;
  struct auc auc;
  struct mcim_aka_av av, av2;
  uint8_t res[8], auts[14];
  size_t len[2] = {0, 0};
  char *before[2] = {NULL, NULL};
  mcim_tre_t *b = NULL;

  assert_int_equal(mcim_tre_soft_open(f->dir, &b), MCIM_OK);
  json_decref(status_of(b)); /* b's copy of the document is warm */
  for (int i = 0; i < 2; i++)
    if (access(path_in(f, slot_name(i)), F_OK) == 0)
      before[i] = slurp(path_in(f, slot_name(i)), &len[i]);

  auc_init(&auc, f->pcid_k, f->pcid_opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_int_equal(b->ops->aka(b->ctx, MCIM_TRE_PCID, av.rand, av.autn, res, auts),
                   MCIM_SYNC_FAILURE);
  /* b's own write is a's next read */
  auc_av(&auc, &av2);
  assert_int_equal(b->ops->aka(b->ctx, MCIM_TRE_PCID, av2.rand, av2.autn, res, auts), MCIM_OK);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av2, res, auts), MCIM_SYNC_FAILURE);

  /* the older copies back in place: both handles read them, and the old challenge passes */
  for (int i = 0; i < 2; i++) {
    if (!before[i]) {
      assert_int_equal(unlink(path_in(f, slot_name(i))), 0);
      continue;
    }
    FILE *fp = fopen(path_in(f, slot_name(i)), "r+b");
    assert_non_null(fp);
    assert_int_equal(fwrite(before[i], 1, len[i], fp), len[i]);
    assert_int_equal(ftruncate(fileno(fp), (off_t)len[i]), 0);
    fclose(fp);
  }
  assert_int_equal(b->ops->aka(b->ctx, MCIM_TRE_PCID, av.rand, av.autn, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  free(before[0]);
  free(before[1]);
  mcim_tre_close(b);
  auc_free(&auc);
}

static void test_pcid_expiry_and_renewal(void **state)
{
  struct fx *f = *state;
  struct auc old_auc, new_auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14], k2[16], opc2[16];

  auc_init(&old_auc, f->pcid_k, f->pcid_opc);
  /* A credential that is already expired is not installed. */
  assert_int_equal(mcim_random(k2, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc2, 16), MCIM_OK);
  remember_secret(k2);
  remember_secret(opc2);
  char *jwe = pcid_jwe(f->ka_pub, PCID2, k2, opc2, mcim_now() - 10);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)),
                   MCIM_CREDENTIAL_EXPIRED);
  free(jwe);
  /* Sealed to another key, or garbage: refused. */
  jwe = pcid_jwe(owner, PCID2, k2, opc2, mcim_now() + 3600);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)),
                   MCIM_JWE_DECRYPT_FAILED);
  free(jwe);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, "a.b.c.d.e", 9), MCIM_JOSE_MALFORMED);

  /* Renewal: the new credential is pcid, the old one pcid-prev until the new one works. */
  auc_av(&old_auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  jwe = pcid_jwe(f->ka_pub, PCID2, k2, opc2, mcim_now() + 7200);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  check_persisted(f);
  json_t *st = status_of(f->tre);
  assert_string_equal(json_string_value(json_object_get(json_object_get(st, "pcid"), "id")), PCID2);
  assert_string_equal(json_string_value(json_object_get(json_object_get(st, "pcid_prev"), "id")),
                      PCID1);
  json_decref(st);
  char id[24];
  assert_int_equal(f->tre->ops->identity(f->tre->ctx, MCIM_TRE_PCID_PREV, id), MCIM_OK);
  assert_string_equal(id, PCID1);
  /* The old one still authenticates (the network may not know the new one yet)... */
  auc_av(&old_auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID_PREV, &av, res, auts), MCIM_OK);
  /* ... the old K no longer answers as pcid ... */
  auc_av(&old_auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_MAC_FAILURE);
  /* ... and the first success of the new one drops the old one. */
  auc_init(&new_auc, k2, opc2);
  auc_av(&new_auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  check_persisted(f);
  st = status_of(f->tre);
  assert_null(json_object_get(st, "pcid_prev"));
  json_decref(st);

  /* The same credential delivered again: no-op that keeps the SQN state (the vector just
   * used stays stale). */
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_SYNC_FAILURE);
  st = status_of(f->tre);
  assert_null(json_object_get(st, "pcid_prev"));
  json_decref(st);
  free(jwe);

  /* Expiry while installed (edited on disk: nothing here waits for time to pass). */
  json_t *doc = state_read(f);
  json_object_set_new(json_object_get(doc, "pcid"), "expires", json_integer(mcim_now() - 1));
  state_write(f, doc);
  json_decref(doc);
  auc_av(&new_auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_CREDENTIAL_EXPIRED);
  auc_free(&old_auc);
  auc_free(&new_auc);
}

/* ---- tests: statements ------------------------------------------------------------------ */

static void digest_chain(const char *const *digests, size_t n, char out[65])
{
  uint8_t d[32] = {0}, buf[64];
  for (size_t i = 0; i < n; i++) {
    memcpy(buf, d, 32);
    assert_int_equal(mcim_hex_decode_str(digests[i], buf + 32, 32), MCIM_OK);
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(buf, 64, d, &len, EVP_sha256(), NULL), 1);
  }
  mcim_hex_encode(d, 32, out);
}

static void test_quote(void **state)
{
  struct fx *f = *state;
  static const char *const digests[] = {
      "0000000000000000000000000000000000000000000000000000000000000001",
      "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c",
      "7D865E959B2466918C9863AFCA942D0FB89D7C9AC0C99BAFC3749504DED97730"};
  static const char *const comps[] = {"boot", "os", "agent"};
  char want[65], *jws = NULL;
  mcim_statement_t *stmt = NULL;

  /* Empty log: digest = d0. */
  digest_chain(digests, 0, want);
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", TXN_A, "n0nce", 60, &jws), MCIM_OK);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "pva", .typ = "mcim-quote+jwt", .sub = DEVICE,
                         .txn = TXN_A};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "digest"), want);
  assert_string_equal(stmt->kid, DEVICE);
  mcim_statement_free(stmt);
  free(jws);

  json_t *log = json_array();
  for (size_t i = 0; i < 3; i++)
    json_array_append_new(log,
                          json_pack("{s:s, s:s}", "component", comps[i], "digest", digests[i]));
  assert_int_equal(mcim_tre_soft_set_measurements(f->tre, log), MCIM_OK);
  check_persisted(f);
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", TXN_A, "abc123", 60, &jws), MCIM_OK);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  digest_chain(digests, 3, want);
  assert_string_equal(mcim_statement_string(stmt, "digest"), want);
  assert_string_equal(mcim_statement_string(stmt, "nonce"), "abc123");
  json_t *qlog = json_object_get(stmt->payload, "log");
  assert_int_equal(json_array_size(qlog), 3);
  for (size_t i = 0; i < 3; i++) {
    json_t *e = json_array_get(qlog, i);
    assert_string_equal(json_string_value(json_object_get(e, "component")), comps[i]);
    char lower[65];
    for (size_t j = 0; j < 65; j++)
      lower[j] = (char)tolower((unsigned char)digests[i][j]);
    assert_string_equal(json_string_value(json_object_get(e, "digest")), lower);
  }
  mcim_statement_free(stmt);
  /* Another key (not the attestation key) does not verify it. */
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), owner, &x, NULL), MCIM_JWS_BAD_SIGNATURE);
  free(jws);

  /* A bad log is refused and the old one stays. */
  json_t *bad = json_pack("[{s:s, s:s}]", "component", "os", "digest", "zz");
  assert_int_equal(mcim_tre_soft_set_measurements(f->tre, bad), MCIM_INVALID_ARGUMENT);
  json_t *st = status_of(f->tre);
  assert_int_equal(json_integer_value(json_object_get(st, "measurements")), 3);
  json_decref(st);
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", TXN_A, "", 60, &jws),
                   MCIM_INVALID_ARGUMENT);
  json_decref(bad);
  json_decref(log);
}

static void test_sign(void **state)
{
  struct fx *f = *state;
  char *jws = NULL;
  mcim_statement_t *stmt = NULL;
  json_t *extra = json_pack("{s:s, s:s}", "result", "success", "slot", "sho-a");

  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, extra, 60, &jws),
                   MCIM_OK);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .sub = DEVICE,
                         .txn = TXN_A};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "result"), "success");
  mcim_statement_free(stmt);
  free(jws);
  jws = NULL;
  /* Not a device statement: the agent cannot make the TRE vouch for it. */
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, TYP_PKG, "ro", TXN_A, NULL, 60, &jws),
                   MCIM_FORBIDDEN);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-quote+jwt", "pva", TXN_A, NULL, 60, &jws),
                   MCIM_FORBIDDEN);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 0, &jws),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL,
                                     MCIM_TRE_MAX_LIFETIME + 1, &jws),
                   MCIM_INVALID_ARGUMENT);
  json_t *forge = json_pack("{s:s}", "iss", "sho-a");
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, forge, 60, &jws),
                   MCIM_INVALID_ARGUMENT);
  assert_null(jws);
  json_decref(forge);
  json_decref(extra);
}

/* ---- tests: packages, slots ------------------------------------------------------------ */

static void test_stage_install(void **state)
{
  struct fx *f = *state;
  struct pkg p = pkg_default(f, &sho_a, TXN_A);
  char *pkg = pkg_make(&p), slot[64] = "";
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  char id[24];

  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  check_persisted(f);
  /* Staged, not a slot: nothing else changed. */
  json_t *st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "slots")), 0);
  json_t *staged = json_array_get(json_object_get(st, "staged"), 0);
  assert_string_equal(json_string_value(json_object_get(staged, "sho")), "sho-a");
  assert_string_equal(json_string_value(json_object_get(staged, "txn")), TXN_A);
  json_decref(st);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_NOT_FOUND);
  /* Same txn, same package: a no-op (the jti is not consumed twice). */
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "staged")), 1);
  json_decref(st);

  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  assert_string_equal(slot, "sho-a");
  check_persisted(f);
  assert_string_equal(slot_state(f, "sho-a"), "active");
  assert_int_equal(f->tre->ops->identity(f->tre->ctx, "sho-a", id), MCIM_OK);
  assert_string_equal(id, sho_a.imsi);
  st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "staged")), 0);
  json_decref(st);
  /* Install and stage again for the same txn: same answers, nothing changes. */
  memset(slot, 0, sizeof(slot));
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  assert_string_equal(slot, "sho-a");
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  /* Another package for a txn already installed is refused. */
  char *pkg2 = pkg_make(&p);
  assert_int_equal(stage(f, TXN_A, pkg2, &sho_a), MCIM_PACKAGE_INVALID);
  free(pkg2);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_B, slot), MCIM_NOT_FOUND);

  /* The MCIM authenticates with the SHO's AuC. */
  auc_init(&auc, sho_a.k, sho_a.opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  check_persisted(f);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_SYNC_FAILURE);
  /* The PCID credential is still there (invariant 2). */
  assert_int_equal(f->tre->ops->identity(f->tre->ctx, MCIM_TRE_PCID, id), MCIM_OK);

  /* Unstage: a package staged and then abandoned goes away. */
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  char *pkgb = pkg_make(&pb);
  assert_int_equal(stage(f, TXN_B, pkgb, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_B), MCIM_OK);
  check_persisted(f);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_B), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_B, slot), MCIM_NOT_FOUND);
  /* Its jti is spent: the same package cannot be staged again. */
  assert_int_equal(stage(f, TXN_B, pkgb, &sho_b), MCIM_PACKAGE_INVALID);
  free(pkgb);

  /* The staged list is bounded: the oldest abandoned package makes room. */
  static const char *const txns[] = {"10000000000000000000000000000001",
                                     "10000000000000000000000000000002",
                                     "10000000000000000000000000000003",
                                     "10000000000000000000000000000004",
                                     "10000000000000000000000000000005"};
  for (size_t i = 0; i < 5; i++) {
    pb = pkg_default(f, &sho_b, txns[i]);
    pkgb = pkg_make(&pb);
    assert_int_equal(stage(f, txns[i], pkgb, &sho_b), MCIM_OK);
    free(pkgb);
  }
  st = status_of(f->tre);
  json_t *list = json_object_get(st, "staged");
  assert_int_equal(json_array_size(list), MCIM_TRE_MAX_STAGED);
  assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "txn")), txns[1]);
  json_decref(st);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txns[0], slot), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txns[4], slot), MCIM_OK);
  assert_string_equal(slot, "sho-b");
  assert_string_equal(slot_state(f, "sho-a"), "inactive");
  check_persisted(f);
  auc_free(&auc);
  free(pkg);
}

static void expect_refused(struct fx *f, const char *txn, const char *pkg, const struct sho *cert,
                           const char *cause)
{
  long from = ftell(log_fp);
  assert_int_equal(stage(f, txn, pkg, cert), MCIM_PACKAGE_INVALID);
  char *log = log_since(from);
  char want[64];
  snprintf(want, sizeof(want), "cause=%s", cause);
  if (!strstr(log, want))
    fail_msg("expected %s in the log, got: %s", want, log);
  free(log);
}

static void test_stage_refused(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  json_t *before = status_of(f->tre);
  json_t *doc_before = state_read(f);
  struct pkg p;
  char *pkg;

  /* For another device. */
  p = pkg_default(f, &sho_a, TXN_A);
  p.aud = "dev2";
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "CLAIM_MISMATCH");
  free(pkg);
  p = pkg_default(f, &sho_a, TXN_A);
  p.sub = "dev2";
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "CLAIM_MISMATCH");
  free(pkg);
  /* Sealed to another TRE's key. */
  p = pkg_default(f, &sho_a, TXN_A);
  p.recipient = owner;
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "JWE_DECRYPT_FAILED");
  free(pkg);
  /* Issuer certificate from another CA (same name). */
  p = pkg_default(f, &sho_evil, TXN_A);
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_evil, "CERT_INVALID");
  /* ... or the right CA's certificate of sho-a with the evil key's signature. */
  expect_refused(f, TXN_A, pkg, &sho_a, "JWS_BAD_SIGNATURE");
  free(pkg);
  /* Expired issuer certificate. */
  p = pkg_default(f, &sho_old, TXN_A);
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_old, "CERT_EXPIRED");
  free(pkg);
  /* Expired package. */
  p = pkg_default(f, &sho_a, TXN_A);
  p.iat = now - 7200;
  p.exp = now - 3600;
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "TOKEN_EXPIRED");
  free(pkg);
  /* Wrong typ, wrong txn. */
  p = pkg_default(f, &sho_a, TXN_A);
  p.typ = "mcim-order+jwt";
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "CLAIM_MISMATCH");
  free(pkg);
  p = pkg_default(f, &sho_a, TXN_B);
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "CLAIM_MISMATCH");
  free(pkg);
  /* An issuer that is not an SHO (the RO relays packages; it must not plant one). */
  p = pkg_default(f, &sho_ro, TXN_A);
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_ro, "SLOT_FORBIDDEN");
  free(pkg);
  /* Incomplete content. */
  p = pkg_default(f, &sho_a, TXN_A);
  p.drop_k = true;
  pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "FIELD_MISSING");
  free(pkg);
  /* One altered byte anywhere in the header, payload or signature. */
  p = pkg_default(f, &sho_a, TXN_A);
  pkg = pkg_make(&p);
  size_t n = strlen(pkg);
  const size_t where[] = {5, n / 2, n - 3};
  for (size_t i = 0; i < 3; i++) {
    char saved = pkg[where[i]];
    pkg[where[i]] = saved == 'A' ? 'B' : 'A';
    assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_PACKAGE_INVALID);
    pkg[where[i]] = saved;
  }
  /* Oversized. */
  char *huge = malloc(MCIM_JOSE_MAX_LEN + 2);
  assert_non_null(huge);
  memset(huge, 'A', MCIM_JOSE_MAX_LEN + 1);
  huge[MCIM_JOSE_MAX_LEN + 1] = 0;
  expect_refused(f, TXN_A, huge, &sho_a, "TOO_LARGE");
  free(huge);
  /* Garbage certificate. */
  assert_int_equal(f->tre->ops->stage(f->tre->ctx, TXN_A, pkg, strlen(pkg), "not a cert"),
                   MCIM_PACKAGE_INVALID);

  /* Nothing of that left a trace in the state: not even a jti. */
  json_t *after = status_of(f->tre);
  assert_true(json_equal(before, after));
  json_t *doc_after = state_read(f);
  assert_true(json_equal(doc_before, doc_after));
  json_decref(after);
  json_decref(doc_after);

  /* The untouched package still stages; replaying its jti (after a discard) does not. */
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  char slot[64];
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", NULL), MCIM_OK);
  check_persisted(f);
  expect_refused(f, TXN_A, pkg, &sho_a, "REPLAY");
  /* A different package reusing a spent jti (another txn) is a replay too. */
  json_t *doc = state_read(f);
  json_t *seen = json_object_get(doc, "seen");
  assert_int_equal(json_array_size(seen), 1);
  p = pkg_default(f, &sho_a, TXN_C);
  p.jti = json_string_value(json_object_get(json_array_get(seen, 0), "jti"));
  char *again = pkg_make(&p);
  expect_refused(f, TXN_C, again, &sho_a, "REPLAY");
  free(again);
  json_decref(doc);
  json_decref(before);
  json_decref(doc_before);
  free(pkg);
}

static void test_isolation(void **state)
{
  struct fx *f = *state;
  struct auc auc_a, auc_b;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  char slot[64];
  struct pkg p;
  char *pkg;

  provision(f, &sho_a, TXN_A);
  check_persisted(f);
  /* sho-b cannot address slot sho-a: neither by the content ... */
  p = pkg_default(f, &sho_b, TXN_B);
  p.content_sho = "sho-a";
  pkg = pkg_make(&p);
  expect_refused(f, TXN_B, pkg, &sho_b, "SLOT_FORBIDDEN");
  free(pkg);
  /* ... nor by claiming to be sho-a with its own certificate ... */
  p = pkg_default(f, &sho_b, TXN_B);
  p.iss = "sho-a";
  p.content_sho = "sho-a";
  pkg = pkg_make(&p);
  expect_refused(f, TXN_B, pkg, &sho_b, "CLAIM_MISMATCH");
  /* ... nor with sho-a's certificate (its key did not sign). */
  expect_refused(f, TXN_B, pkg, &sho_a, "JWS_BAD_SIGNATURE");
  free(pkg);
  json_t *st = status_of(f->tre);
  assert_string_equal(json_string_value(json_object_get(slot_of(st, "sho-a"), "imsi")), sho_a.imsi);
  assert_string_equal(json_string_value(json_object_get(slot_of(st, "sho-a"), "txn")), TXN_A);
  json_decref(st);

  /* Its own package lands in its own slot; sho-a's becomes inactive, untouched. */
  provision(f, &sho_b, TXN_B);
  check_persisted(f);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");
  assert_string_equal(slot_state(f, "sho-b"), "active");
  auc_init(&auc_a, sho_a.k, sho_a.opc);
  auc_init(&auc_b, sho_b.k, sho_b.opc);
  auc_av(&auc_a, &av);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_WRONG_STATE);
  auc_av(&auc_b, &av);
  assert_int_equal(tre_aka(f, "sho-b", &av, res, auts), MCIM_OK);
  /* sho-a's vector against slot sho-b: MAC failure (separate keys). */
  auc_av(&auc_a, &av);
  assert_int_equal(tre_aka(f, "sho-b", &av, res, auts), MCIM_MAC_FAILURE);

  /* Activation switches between pre-provisioned MCIMs; never two active. */
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-a"), MCIM_OK);
  check_persisted(f);
  assert_string_equal(slot_state(f, "sho-a"), "active");
  assert_string_equal(slot_state(f, "sho-b"), "inactive");
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-a"), MCIM_OK);
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-c"), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");

  /* Discarding sho-b leaves sho-a as it was. */
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-b", NULL), MCIM_OK);
  check_persisted(f);
  assert_string_equal(slot_state(f, "sho-b"), "none");
  assert_string_equal(slot_state(f, "sho-a"), "inactive");
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-a"), MCIM_OK);
  auc_av(&auc_a, &av);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_OK);

  /* Re-provisioning by the same SHO replaces its slot (new K, fresh SQN state). */
  p = pkg_default(f, &sho_a, TXN_C);
  pkg = pkg_make(&p);
  assert_int_equal(stage(f, TXN_C, pkg, &sho_a), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_C, slot), MCIM_OK);
  st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "slots")), 1);
  assert_string_equal(json_string_value(json_object_get(slot_of(st, "sho-a"), "txn")), TXN_C);
  json_decref(st);
  free(pkg);
  auc_free(&auc_a);
  auc_free(&auc_b);
}

/* Per-slot keys (docs/tre.md section 8): each MCIM's K and OPc sealed under a key of its own,
 * which opens no other slot's; a slot written before them (K, OPc in clear) still works. */
static void test_slot_keys(void **state)
{
  struct fx *f = *state;
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14], raw[32], sealed[256], plain[256];
  size_t sl = 0, pl = 0;
  char slot[64], k_hex[33], opc_hex[33];

  provision(f, &sho_a, TXN_A);
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  char *pkg_b = pkg_make(&pb);
  assert_int_equal(stage(f, TXN_B, pkg_b, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  free(pkg_b);
  json_t *doc = state_read(f);
  json_t *slots = json_object_get(doc, "slots");
  json_t *a = json_array_get(slots, 0), *b = json_array_get(slots, 1);
  assert_string_equal(json_string_value(json_object_get(a, "slot")), "sho-a");
  const char *ka = json_string_value(json_object_get(a, "slot_key"));
  const char *kb = json_string_value(json_object_get(b, "slot_key"));
  assert_non_null(ka);
  assert_non_null(kb);
  assert_string_not_equal(ka, kb);
  assert_null(json_object_get(a, "k"));
  assert_null(json_object_get(a, "opc"));
  /* sho-a's secrets do not open with sho-b's key */
  mcim_storage_key_t *key_b = NULL;
  const char *b64 = json_string_value(json_object_get(a, "secrets"));
  assert_int_equal(mcim_hex_decode_str(kb, raw, sizeof(raw)), MCIM_OK);
  assert_int_equal(mcim_storage_key_from_bytes(raw, sizeof(raw), &key_b), MCIM_OK);
  assert_int_equal(mcim_b64url_decode(b64, strlen(b64), sealed, sizeof(sealed), &sl), MCIM_OK);
  assert_int_equal(mcim_unseal(key_b, "tre-slot/" TXN_A, sealed, sl, plain, sizeof(plain), &pl),
                   MCIM_UNSEAL_FAILED);
  mcim_storage_key_free(key_b);

  /* a slot as written before per-slot keys: K and OPc in clear, still authenticates */
  mcim_hex_encode(sho_a.k, 16, k_hex);
  mcim_hex_encode(sho_a.opc, 16, opc_hex);
  json_object_del(a, "secrets");
  json_object_del(a, "slot_key");
  json_object_set_new(a, "k", json_string(k_hex));
  json_object_set_new(a, "opc", json_string(opc_hex));
  state_write(f, doc);
  json_decref(doc);
  auc_init(&auc, sho_a.k, sho_a.opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  auc_free(&auc);
}

static void test_discard(void **state)
{
  struct fx *f = *state;
  json_t *list = NULL;
  mcim_statement_t *stmt = NULL;

  provision(f, &sho_a, TXN_A);
  json_t *doc = state_read(f);
  char *text = json_dumps(doc, 0);
  /* sealed under the MCIM's own key: not in the document in clear ... */
  assert_false(has_secret(text, strlen(text), sho_a.k));
  assert_false(has_secret(text, strlen(text), sho_a.opc));
  free(text);
  text = doc_text_opened(doc);
  assert_true(has_secret(text, strlen(text), sho_a.k)); /* ... but there before ... */
  assert_true(has_secret(text, strlen(text), sho_a.opc));
  free(text);
  json_decref(doc);

  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  check_persisted(f);
  doc = state_read(f);
  text = doc_text_opened(doc);
  assert_false(has_secret(text, strlen(text), sho_a.k)); /* ... and gone after, with SQN */
  assert_false(has_secret(text, strlen(text), sho_a.opc));
  assert_int_equal(json_array_size(json_object_get(doc, "slots")), 0);
  free(text);
  json_decref(doc);
  struct mcim_aka_av av = {0};
  uint8_t res[8], auts[14];
  assert_int_equal(tre_aka(f, "sho-a", &av, res, auts), MCIM_NOT_FOUND);
  /* Retrying the same discard converges; a plain one finds nothing. */
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", NULL), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_C), MCIM_NOT_FOUND);

  /* The receipt: queued in the same write, signed when handed out. */
  json_t *st = status_of(f->tre);
  json_t *pend = json_array_get(json_object_get(st, "pending"), 0);
  assert_string_equal(json_string_value(json_object_get(pend, "to")), "sho-a");
  assert_string_equal(json_string_value(json_object_get(pend, "typ")), "mcim-discard+jwt");
  assert_null(json_object_get(pend, "statement"));
  json_decref(st);
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 1);
  const char *jws = json_string_value(json_object_get(json_array_get(list, 0), "statement"));
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "sho-a", .typ = "mcim-discard+jwt", .sub = DEVICE,
                         .txn = TXN_B};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "imsi"), sho_a.imsi);
  assert_string_equal(mcim_statement_string(stmt, "slot"), "sho-a");
  mcim_statement_free(stmt);
  json_decref(list);
  assert_int_equal(f->tre->ops->pending_done(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  check_persisted(f);
  assert_int_equal(f->tre->ops->pending_done(f->tre->ctx, "sho-a", TXN_B), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 0);
  json_decref(list);
}

/* Pristine step 3 (issue 8, point 6): back to the pristine state removes EVERY MCIM, the
 * active one and the inactive (pre-provisioned) one, with a discard notice for each slot's
 * SHO queued in the same write; the PCID credential stays. */
static void test_pristine(void **state)
{
  struct fx *f = *state;
  json_t *removed = NULL, *list = NULL, *e;
  mcim_statement_t *stmt = NULL;
  char slot[64];
  size_t i;

  provision(f, &sho_a, TXN_A);
  struct pkg p = pkg_default(f, &sho_b, TXN_B);
  char *pkg = pkg_make(&p);
  assert_int_equal(stage(f, TXN_B, pkg, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  free(pkg);
  assert_string_equal(slot_state(f, "sho-a"), "active");
  assert_string_equal(slot_state(f, "sho-b"), "inactive");

  assert_int_equal(f->tre->ops->pristine(f->tre->ctx, NULL, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(f->tre->ops->pristine(f->tre->ctx, TXN_C, &removed), MCIM_OK);
  check_persisted(f);
  assert_int_equal(json_array_size(removed), 2);
  json_decref(removed);
  json_t *doc = state_read(f);
  char *text = json_dumps(doc, 0);
  assert_int_equal(json_array_size(json_object_get(doc, "slots")), 0);
  assert_false(has_secret(text, strlen(text), sho_a.k));
  assert_false(has_secret(text, strlen(text), sho_b.k));
  free(text);
  json_decref(doc);
  json_t *st = status_of(f->tre);
  assert_true(json_is_object(json_object_get(st, "pcid"))); /* the pristine path stays open */
  json_decref(st);

  /* one notice per removed slot, each to its own SHO about its own IMSI */
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 2);
  json_array_foreach(list, i, e) {
    const char *to = json_string_value(json_object_get(e, "to"));
    const char *jws = json_string_value(json_object_get(e, "statement"));
    const struct sho *sh = strcmp(to, "sho-a") == 0 ? &sho_a : &sho_b;
    mcim_jws_expect_t x = {.iss = DEVICE, .aud = to, .typ = "mcim-discard+jwt", .sub = DEVICE,
                           .txn = TXN_C};
    assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
    assert_string_equal(mcim_statement_string(stmt, "slot"), to);
    assert_string_equal(mcim_statement_string(stmt, "imsi"), sh->imsi);
    mcim_statement_free(stmt);
  }
  json_decref(list);

  /* a retry (a crash after the write) changes nothing and removes nothing */
  assert_int_equal(f->tre->ops->pristine(f->tre->ctx, TXN_C, &removed), MCIM_OK);
  assert_int_equal(json_array_size(removed), 0);
  json_decref(removed);
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 2);
  json_decref(list);
}

/* ---- tests: owner --------------------------------------------------------------------- */

static char *instruction(const mcim_jose_key_t *key, const char *aud, const char *typ,
                         int64_t iat, int64_t exp)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s, s:s, s:s}", "procedure", "change", "via", "old-sho", "sho",
                            "sho-b");
  mcim_claims_t c = {.iss = "subscriber", .sub = DEVICE, .aud = aud, .typ = typ, .txn = TXN_A,
                     .iat = iat, .exp = exp, .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static char *handover(const mcim_jose_key_t *by, const char *aud, json_t *new_owner)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:o?}", "new_owner_jwk", new_owner);
  mcim_claims_t c = {.iss = "subscriber", .sub = DEVICE, .aud = aud, .typ = "mcim-handover+jwt",
                     .txn = TXN_A, .iat = now, .exp = now + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(by, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static json_t *public_jwk(const mcim_jose_key_t *key)
{
  char *text = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(key, &text), MCIM_OK);
  json_t *j = json_loads(text, 0, NULL);
  free(text);
  return j;
}

/* The owner hands the device over: only its own statement, for this device, with a usable
 * public key, replaces the pinned key (persisted); then only the new owner instructs. */
static void test_owner_handover(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  char *jws = handover(stranger, DEVICE, public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_NOT_OWNER);
  free(jws);
  jws = handover(owner, "dev2", public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = handover(owner, DEVICE, NULL);
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)),
                   MCIM_CLAIM_MISSING);
  free(jws);
  jws = handover(owner, DEVICE, json_pack("{s:s,s:s}", "kty", "EC", "crv", "P-256"));
  assert_int_not_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_OK);
  free(jws);
  /* none of those changed the pinned key */
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);

  jws = handover(owner, DEVICE, public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_OK);
  check_persisted(f);
  /* again: the old owner's key is no longer pinned */
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_NOT_OWNER);
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
  jws = instruction(stranger, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);
}

static void test_owner(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  mcim_statement_t *stmt = NULL;
  char *jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);

  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, &stmt),
                   MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "via"), "old-sho");
  mcim_statement_free(stmt);
  check_persisted(f);
  /* Replayed, after a restart too. */
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_REPLAY);
  free(jws);

  jws = instruction(stranger, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, "junk", 4, TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  jws = instruction(owner, "dev2", TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = instruction(owner, DEVICE, "mcim-order+jwt", now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now - 7200, now - 3600);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_TOKEN_EXPIRED);
  /* One flipped signature byte. */
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  jws[strlen(jws) - 5] = jws[strlen(jws) - 5] == 'A' ? 'B' : 'A';
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
}

/* ---- tests: secrets --------------------------------------------------------------------- */

static void test_no_secret_out(void **state)
{
  struct fx *f = *state;
  struct pkg p = pkg_default(f, &sho_b, TXN_B);
  char *pkg = pkg_make(&p);
  provision(f, &sho_a, TXN_A);
  assert_int_equal(stage(f, TXN_B, pkg, &sho_b), MCIM_OK); /* staged too */
  free(pkg);

  json_t *st = status_of(f->tre);
  char *text = json_dumps(st, 0);
  size_t n = strlen(text);
  for (size_t i = 0; i < nsecrets; i++)
    assert_false(contains_ci(text, n, secrets[i]));
  assert_false(contains_ci(text, n, "PRIVATE KEY"));
  assert_false(contains_ci(text, n, "\"d\""));
  assert_false(contains_ci(text, n, "sqn"));
  free(text);
  json_decref(st);

  /* At rest: nothing in clear. */
  size_t len = 0;
  uint8_t *file = file_read(path_in(f, "tre.sealed"), &len);
  for (size_t i = 0; i < nsecrets; i++)
    assert_false(contains_ci((const char *)file, len, secrets[i]));
  assert_false(contains_ci((const char *)file, len, "PRIVATE"));
  free(file);
}

/* Runs last: everything the TRE logged during the whole group. */
static void test_log_has_no_secret(void **state)
{
  (void)state;
  char *log = log_since(0);
  size_t n = strlen(log);
  assert_true(n > 0);
  for (size_t i = 0; i < nsecrets; i++)
    assert_false(contains_ci(log, n, secrets[i]));
  assert_false(contains_ci(log, n, "PRIVATE KEY"));
  /* The refusals named their precise causes. */
  assert_non_null(strstr(log, "package refused"));
  free(log);
}

/* ---- tests: crash, tamper ---------------------------------------------------------------- */

/* A write cut by a crash leaves the slot it was writing torn, next to the state before it:
 * the torn slot does not open, the previous state is used (with a warning), and the next
 * write goes over the torn slot. A left-over temporary file of the former format is ignored. */
/* A FIFO in place of a slot (someone else's file in the folder): refused at once, never waited
 * on. Reading and writing run in a child with an alarm: a blocking open would hang it. */
static void test_fifo_slot(void **state)
{
  struct fx *f = *state;

  provision(f, &sho_a, TXN_A);
  int older = newest_slot(f, NULL) ^ 1;
  const char *fifo = path_in(f, slot_name(older));
  (void)unlink(fifo);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(5);
    json_t *st = NULL;
    if (f->tre->ops->status(f->tre->ctx, &st) != MCIM_OK)
      _exit(1);
    json_decref(st);
    /* the next write goes to the FIFO's slot: refused, not blocked */
    if (f->tre->ops->discard(f->tre->ctx, "sho-a", NULL) == MCIM_OK)
      _exit(2);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status)); /* not killed by the alarm */
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(unlink(fifo), 0);
}

/* ---- crypto-shredding: what a discarded MCIM leaves behind (docs/tre.md, section 7) ---- */

/* One slot file as a copy: its bytes, generation and sealed blob. */
struct file_copy {
  uint8_t *buf;
  size_t len, blob, blob_len;
  uint64_t gen;
};

static void copy_take(const char *path, struct file_copy *c)
{
  c->buf = file_read(path, &c->len);
  assert_true(slot_header(c->buf, c->len, &c->gen, &c->blob, &c->blob_len));
}

/* The copy opened with `key`: the unseal's cause, and the document when it opens. */
static mcim_cause_t copy_open(const struct file_copy *c, const mcim_storage_key_t *key,
                              json_t **doc)
{
  char context[96];
  size_t plain_len = 0;
  uint8_t *plain = malloc(c->len);
  assert_non_null(plain);
  gen_context(c->gen, context, sizeof(context));
  mcim_cause_t rc =
      mcim_unseal(key, context, c->buf + c->blob, c->blob_len, plain, c->len, &plain_len);
  if (doc)
    *doc = rc == MCIM_OK ? json_loadb((const char *)plain, plain_len, 0, NULL) : NULL;
  free(plain);
  return rc;
}

/* A private key (PKCS#8 PEM) of a state document, as a JOSE key. */
static mcim_jose_key_t *pem_key(const char *pem)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
  assert_non_null(bio);
  assert_int_equal(mcim_pki_key_read_bio(bio, &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  BIO_free(bio);
  EVP_PKEY_free(pk);
  return k;
}

/* The JWE of a package (its "jwe" claim, what the DPF stores and relays) decrypted with every
 * private key the document `doc` holds: the static ones and any procedure's. How many open it;
 * every other one must fail exactly as a wrong recipient does. */
static int jwe_openers(json_t *doc, const char *jwe)
{
  const char *key;
  json_t *v, *e;
  size_t i;
  int opened = 0;
  json_t *pems = json_array();
  json_object_foreach(json_object_get(doc, "keys"), key, v) {
    json_array_append(pems, v);
  }
  json_array_foreach(json_object_get(doc, "txn_keys"), i, e) {
    json_array_append(pems, json_object_get(e, "key"));
  }
  assert_true(json_array_size(pems) >= 2);
  json_array_foreach(pems, i, v) {
    mcim_jose_key_t *k = pem_key(json_string_value(v));
    uint8_t *plain = NULL;
    size_t n = 0;
    mcim_cause_t rc = mcim_jwe_decrypt(k, jwe, strlen(jwe), &plain, &n);
    if (rc == MCIM_OK)
      opened++;
    else
      assert_int_equal(rc, MCIM_JWE_DECRYPT_FAILED);
    mcim_jose_secret_free(plain, n);
    mcim_jose_key_free(k);
  }
  json_decref(pems);
  return opened;
}

static mcim_storage_key_t *key_copy(const struct fx *f)
{
  mcim_storage_key_t *k = NULL;
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &k), MCIM_OK);
  return k;
}

/* The procedure's key the quote of `txn` offers, checked as the SHO checks it. */
static mcim_jose_key_t *quoted_ka(struct fx *f, const char *txn)
{
  char *jws = NULL, *jwk = NULL;
  mcim_statement_t *q = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn, "n0nce", 60, &jws), MCIM_OK);
  mcim_jws_expect_t x = {
      .iss = DEVICE, .aud = "pva", .typ = "mcim-quote+jwt", .sub = DEVICE, .txn = txn};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &q), MCIM_OK);
  json_t *offer = json_object_get(q->payload, "ka_jwk");
  assert_true(json_is_object(offer));
  assert_null(json_object_get(offer, "d"));
  jwk = json_dumps(offer, JSON_COMPACT);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &k), MCIM_OK);
  assert_false(mcim_jose_key_has_private(k));
  free(jwk);
  free(jws);
  mcim_statement_free(q);
  return k;
}

/* Issue 11, point 6, on the files: a package kept anywhere (the DPF keeps them) and copies of
 * the TRE's files taken at any point, then the MCIM discarded by a change of SHO. With the
 * device's state after that (its files and its key) the old package does not open and the
 * discarded K is nowhere; and the copies do not open with the current key. The same copies
 * opened with the keys of their time do give the package and K (the control: what the
 * rotation destroyed is exactly what was needed). */
static void test_shred_files_left_behind(void **state)
{
  struct fx *f = *state;
  struct file_copy before[2] = {{0}}, installed[2] = {{0}};
  char slot[64], k_hex[33];
  json_t *doc = NULL;

  mcim_jose_key_t *ka_a = quoted_ka(f, TXN_A);
  /* a second quote for the same procedure offers the same key */
  mcim_jose_key_t *again = quoted_ka(f, TXN_A);
  char *j1 = NULL, *j2 = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(ka_a, &j1), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(again, &j2), MCIM_OK);
  assert_string_equal(j1, j2);
  free(j1);
  free(j2);
  mcim_jose_key_free(again);

  /* the SHO's package, sealed to the procedure's key: the static key does not open it */
  struct pkg p = pkg_default(f, &sho_a, TXN_A);
  p.recipient = f->ka_pub;
  char *to_static = pkg_make(&p);
  p.recipient = ka_a;
  char *pkg = pkg_make(&p);
  json_t *jwe_claim = NULL;
  assert_int_equal(mcim_jws_peek_claim(pkg, "jwe", &jwe_claim), MCIM_OK);
  const char *jwe = json_string_value(jwe_claim);
  assert_non_null(jwe);

  /* the files while the procedure runs, and the key of that time */
  copy_take(path_in(f, "tre.sealed"), &before[0]);
  copy_take(path_in(f, "tre.sealed.1"), &before[1]);
  mcim_storage_key_t *key_before = key_copy(f);

  /* a package sealed to the static key is refused for a procedure that offered its own */
  expect_refused(f, TXN_A, to_static, &sho_a, "JWE_DECRYPT_FAILED");
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  copy_take(path_in(f, "tre.sealed"), &installed[0]);
  copy_take(path_in(f, "tre.sealed.1"), &installed[1]);
  mcim_storage_key_t *key_installed = key_copy(f);

  /* a change of SHO: sho-b's procedure, and sho-a's MCIM discarded (change step 8) */
  mcim_jose_key_t *ka_b = quoted_ka(f, TXN_B);
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  pb.recipient = ka_b;
  char *pkg_b = pkg_make(&pb);
  assert_int_equal(stage(f, TXN_B, pkg_b, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_B, slot), MCIM_OK);
  assert_string_equal(slot_state(f, "sho-a"), "none");
  mcim_tre_close(f->tre); /* what is left is the files */
  f->tre = NULL;

  /* the device's current state: its key and both slot files */
  mcim_storage_key_t *key_now = key_copy(f);
  struct file_copy now[2] = {{0}};
  copy_take(path_in(f, "tre.sealed"), &now[0]);
  copy_take(path_in(f, "tre.sealed.1"), &now[1]);
  mcim_hex_encode(sho_a.k, 16, k_hex);
  for (int i = 0; i < 2; i++) {
    /* both slots open with the current key (the crash fallback keeps working) ... */
    assert_int_equal(copy_open(&now[i], key_now, &doc), MCIM_OK);
    char *text = doc_text_opened(doc);
    /* ... and hold neither sho-a's K nor any key that opens the old package */
    assert_null(strstr(text, k_hex));
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
    assert_int_equal(jwe_openers(doc, jwe), 0);
    free(text);
    json_decref(doc);
    /* the keys of before do not open the current files */
    assert_int_equal(copy_open(&now[i], key_before, NULL), MCIM_UNSEAL_FAILED);
    assert_int_equal(copy_open(&now[i], key_installed, NULL), MCIM_UNSEAL_FAILED);
    /* the current key does not open the copies of before */
    assert_int_equal(copy_open(&before[i], key_now, NULL), MCIM_UNSEAL_FAILED);
    assert_int_equal(copy_open(&installed[i], key_now, NULL), MCIM_UNSEAL_FAILED);
  }

  /* the control: with the keys of their time, the copies give what was destroyed */
  int with_txn_key = 0, with_k = 0;
  for (int i = 0; i < 2; i++) {
    if (copy_open(&before[i], key_before, &doc) == MCIM_OK) {
      with_txn_key += jwe_openers(doc, jwe);
      json_decref(doc);
    }
    if (copy_open(&installed[i], key_installed, &doc) == MCIM_OK) {
      char *text = doc_text_opened(doc); /* K under the MCIM's key, which the copy holds */
      with_k += strstr(text, k_hex) != NULL;
      free(text);
      json_decref(doc);
    }
  }
  assert_true(with_txn_key >= 1);
  assert_true(with_k >= 1);

  /* and the TRE, reopened on the current files, refuses the old package */
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_PACKAGE_INVALID);

  for (int i = 0; i < 2; i++) {
    free(before[i].buf);
    free(installed[i].buf);
    free(now[i].buf);
  }
  mcim_storage_key_free(key_before);
  mcim_storage_key_free(key_installed);
  mcim_storage_key_free(key_now);
  mcim_jose_key_free(ka_a);
  mcim_jose_key_free(ka_b);
  json_decref(jwe_claim);
  free(to_static);
  free(pkg);
  free(pkg_b);
}

/* Between rotations tre.key.new holds no key: absent (a TRE that never rotated) or zeros, so
 * the only key on disk is tre.key. */
static void assert_no_spare_key(const struct fx *f)
{
  static const uint8_t zero[MCIM_STORAGE_KEY_LEN] = {0};
  size_t n = 0;
  if (access(path_in(f, "tre.key.new"), F_OK) != 0)
    return;
  uint8_t *k = file_read(path_in(f, "tre.key.new"), &n);
  assert_int_equal(n, MCIM_STORAGE_KEY_LEN);
  assert_memory_equal(k, zero, n);
  free(k);
}

/* A procedure abandoned before its package: unstage deletes its key (under a new storage key),
 * and a package for it then can only be one sealed to the static key, which is refused no more
 * than before per-procedure keys (the SHO never seals to it for a device that offered one). */
static void test_txn_key_lifecycle(void **state)
{
  struct fx *f = *state;
  mcim_storage_key_t *k0 = key_copy(f);
  mcim_jose_key_t *ka = quoted_ka(f, TXN_C);
  json_t *doc = state_read(f);
  assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 1);
  json_decref(doc);
  /* making the key is an ordinary write: same storage key */
  mcim_storage_key_t *k1 = key_copy(f);
  uint8_t probe[1] = {7}, sealed[64];
  size_t n = 0, m = 0;
  assert_int_equal(mcim_seal(k0, "probe", probe, 1, sealed, sizeof(sealed), &n), MCIM_OK);
  assert_int_equal(mcim_unseal(k1, "probe", sealed, n, probe, 1, &m), MCIM_OK);
  /* abandoned: no staged package, still NOT_FOUND, but the key is gone and the storage key
   * rotated */
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  doc = state_read(f);
  assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
  json_decref(doc);
  mcim_storage_key_t *k2 = key_copy(f);
  assert_int_equal(mcim_unseal(k2, "probe", sealed, n, probe, 1, &m), MCIM_UNSEAL_FAILED);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  check_persisted(f);
  /* no second copy of a key is left behind: tre.key.new holds zeros between rotations */
  assert_no_spare_key(f);

  /* a crash between the slot written under the new key and the key file's rename: the
   * next open finishes the rotation */
  mcim_jose_key_free(ka);
  ka = quoted_ka(f, TXN_C);
  uint8_t *cur = NULL;
  size_t cur_len = 0;
  cur = file_read(path_in(f, "tre.key"), &cur_len);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  json_t *after = status_of(f->tre);
  mcim_tre_close(f->tre);
  f->tre = NULL;
  assert_int_equal(rename(path_in(f, "tre.key"), path_in(f, "tre.key.new")), 0);
  file_write(path_in(f, "tre.key"), cur, cur_len); /* the old key back in place */
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(chmod(path_in(f, "tre.key.new"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  json_t *reopened = status_of(f->tre);
  assert_true(json_equal(after, reopened));
  assert_no_spare_key(f);
  check_persisted(f);
  json_decref(after);
  json_decref(reopened);
  free(cur);
  mcim_jose_key_free(ka);

  /* a handle still holding the key of before a rotation, and the rotation's second write cut
   * (the newest slot torn): the other slot, already under the new key, opens for it */
  mcim_tre_t *stale = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &stale), MCIM_OK);
  ka = quoted_ka(f, TXN_C);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  const char *newest = path_in(f, slot_name(newest_slot(f, NULL)));
  uint8_t *buf = file_read(newest, &len);
  assert_true(slot_header(buf, len, &gen, &blob, &blob_len));
  memset(buf + blob + blob_len / 2, 0xa5, 16);
  file_write(newest, buf, len);
  free(buf);
  json_t *seen = status_of(stale);
  json_t *now = status_of(f->tre);
  assert_true(json_equal(seen, now));
  json_decref(seen);
  json_decref(now);
  mcim_tre_close(stale);
  mcim_jose_key_free(ka);
  mcim_storage_key_free(k0);
  mcim_storage_key_free(k1);
  mcim_storage_key_free(k2);
}

static void test_crash_slot(void **state)
{
  struct fx *f = *state;
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0, gen_after = 0;

  file_write(path_in(f, "tre.sealed.tmp"), "garbage\x01\x02", 9);
  provision(f, &sho_a, TXN_A);
  /* a second MCIM, inactive: switching between the two is a write of one slot (a discard
   * is two: docs/tre.md, "Crypto-shredding") */
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  char *pkg_b = pkg_make(&pb), slot[64];
  assert_int_equal(stage(f, TXN_B, pkg_b, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  free(pkg_b);
  check_persisted(f);
  json_t *before = status_of(f->tre);
  int newest = newest_slot(f, &gen);
  uint8_t *prev = file_read(path_in(f, slot_name(newest)), &len);

  /* the switch is written to the other slot, one generation up */
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(newest_slot(f, &gen_after), newest ^ 1);
  assert_true(gen_after == gen + 1);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");

  /* ... and cut: some of its blocks new, some not (what a crash in the middle of the
   * write can leave; here 16 bytes in the middle of the blob) */
  size_t nlen = 0;
  uint8_t *fresh = file_read(path_in(f, slot_name(newest ^ 1)), &nlen);
  assert_true(slot_header(fresh, nlen, &gen, &blob, &blob_len));
  FILE *fp = fopen(path_in(f, slot_name(newest ^ 1)), "r+b");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, (long)(blob + blob_len / 2), SEEK_SET), 0);
  uint8_t junk[16];
  memset(junk, 0xa5, sizeof(junk));
  assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
  fclose(fp);
  long mark = ftell(log_fp);
  json_t *after = status_of(f->tre);
  assert_true(json_equal(before, after)); /* the state before the cut write */
  assert_string_equal(slot_state(f, "sho-a"), "active");
  char *log = log_since(mark);
  assert_non_null(strstr(log, "does not open"));
  assert_non_null(strstr(log, "the newest state does not open"));
  free(log);
  check_persisted(f);

  /* the next write replaces the torn slot, and every handle agrees on it */
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(newest_slot(f, NULL), newest ^ 1);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");
  check_persisted(f);

  /* both slots torn: nothing opens, nothing is invented */
  file_write(path_in(f, "tre.sealed"), prev, 30);
  file_write(path_in(f, "tre.sealed.1"), fresh, 30);
  mcim_tre_t *t = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  assert_null(t);
  json_decref(before);
  json_decref(after);
  free(prev);
  free(fresh);
}

/* ---- a rotation cut by a crash at each of its steps (tre_commit_shred) ---- */

#define ROTATE_CRASHED 42
static char rotate_where[32];

static void rotate_crash_at(const char *where)
{
  if (strcmp(where, rotate_where) == 0)
    _exit(ROTATE_CRASHED);
}

/* In a child: a handle of its own, the hook armed at `where`, then the unstage of `txn` (its
 * procedure's key dropped: a rotation); the child dies there. */
static void rotate_child_crashes(struct fx *f, const char *where, const char *txn)
{
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    mcim_tre_t *t = NULL;
    if (mcim_tre_soft_open(f->dir, &t) != MCIM_OK)
      _exit(1);
    snprintf(rotate_where, sizeof(rotate_where), "%s", where);
    tre_crash_hook = rotate_crash_at;
    (void)t->ops->unstage(t->ctx, txn);
    _exit(2); /* the hook was not reached */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), ROTATE_CRASHED);
}

/* Does `key` open the slot file i? */
static bool slot_opens(const struct fx *f, int i, const mcim_storage_key_t *key)
{
  struct file_copy c = {0};
  copy_take(path_in(f, slot_name(i)), &c);
  bool ok = copy_open(&c, key, NULL) == MCIM_OK;
  free(c.buf);
  return ok;
}

/* The rotation writes each file in place with one fdatasync: tre.key.new (the new key), the
 * other slot under it, the new key over the old in tre.key, the previous slot again, zeros over
 * tre.key.new. A process killed after each step (the files as it left them) always opens: on
 * the state before the unstage until the slot under the new key is written, on the state after
 * from then on, the rotation finished by the next load when tre.key did not get the new key
 * yet (also with tre.key's block torn in that write). Once a write follows, both slots open
 * with the current key, the key of before opens neither, and no second key is on disk. */
static void test_crash_rotation(void **state)
{
  struct fx *f = *state;
  static const struct {
    const char *where;
    bool after;    /* the state after the unstage is the one that opens */
    bool tear_key; /* tre.key's block torn too (a crash inside the write over it) */
  } cuts[] = {
      {"rotate-key-written", false, false},  {"before-write", false, false},
      {"rotate-slot-written", true, false},  {"rotate-slot-written", true, true},
      {"rotate-key-installed", true, false}, {"rotate-both-written", true, false},
  };

  /* uncut: right after it, both slots under the new key alone, and tre.key.new zeros */
  mcim_jose_key_free(quoted_ka(f, TXN_C));
  mcim_storage_key_t *k0 = key_copy(f);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  mcim_storage_key_t *k1 = key_copy(f);
  for (int i = 0; i < 2; i++) {
    assert_true(slot_opens(f, i, k1));
    assert_false(slot_opens(f, i, k0));
  }
  assert_no_spare_key(f);
  mcim_storage_key_free(k0);
  mcim_storage_key_free(k1);

  for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
    mcim_jose_key_free(quoted_ka(f, TXN_C)); /* the txn's key: the unstage drops it */
    json_t *doc = state_read(f);
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 1);
    json_decref(doc);
    mcim_storage_key_t *k_before = key_copy(f);
    mcim_tre_close(f->tre);
    f->tre = NULL;

    rotate_child_crashes(f, cuts[c].where, TXN_C);
    if (cuts[c].tear_key) {
      uint8_t junk[MCIM_STORAGE_KEY_LEN];
      memset(junk, 0x5a, sizeof(junk));
      file_write(path_in(f, "tre.key"), junk, sizeof(junk));
      assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
    }
    long mark = ftell(log_fp);
    assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
    doc = state_read(f); /* with tre.key as the load left it */
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), cuts[c].after ? 0 : 1);
    json_decref(doc);
    char *log = log_since(mark);
    bool finished = strstr(log, "rotation cut by a crash, finished") != NULL;
    free(log);
    assert_true(finished == (strcmp(cuts[c].where, "rotate-slot-written") == 0));
    if (strcmp(cuts[c].where, "rotate-both-written") == 0) { /* all but the zeros */
      mcim_storage_key_t *k = key_copy(f);
      for (int i = 0; i < 2; i++) {
        assert_true(slot_opens(f, i, k));
        assert_false(slot_opens(f, i, k_before));
      }
      mcim_storage_key_free(k);
    }
    check_persisted(f);

    /* the next write (an ordinary one): both slots under the current key, nothing else */
    mcim_jose_key_free(quoted_ka(f, TXN_D));
    assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_D), MCIM_NOT_FOUND);
    mcim_jose_key_free(quoted_ka(f, TXN_D));
    mcim_storage_key_t *k_now = key_copy(f);
    for (int i = 0; i < 2; i++) {
      assert_true(slot_opens(f, i, k_now));
      assert_false(slot_opens(f, i, k_before));
    }
    assert_no_spare_key(f);
    assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_D), MCIM_NOT_FOUND);
    if (!cuts[c].after) /* the cut unstage never happened: done now */
      assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
    doc = state_read(f);
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
    json_decref(doc);
    check_persisted(f);
    mcim_storage_key_free(k_before);
    mcim_storage_key_free(k_now);
  }
}

/* A TRE written before the slots (format 1: tre.sealed alone, no generation) opens, and its
 * next write goes to the second slot as generation 1. */
static void test_format_1(void **state)
{
  struct fx *f = *state;
  json_t *doc = state_read(f);
  json_t *before = status_of(f->tre);
  mcim_storage_key_t *key = NULL;
  const char hdr[] = "mcim-tre 1 " DEVICE "\n";
  char *text = json_dumps(doc, JSON_COMPACT);
  size_t n = strlen(text), out_len = 0;
  uint8_t *buf = malloc(strlen(hdr) + mcim_seal_len(n));
  assert_non_null(buf);
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  memcpy(buf, hdr, strlen(hdr));
  assert_int_equal(mcim_seal(key, "tre/" DEVICE, (const uint8_t *)text, n, buf + strlen(hdr),
                             mcim_seal_len(n), &out_len),
                   MCIM_OK);
  mcim_tre_close(f->tre);
  f->tre = NULL;
  unlink(path_in(f, "tre.sealed.1"));
  file_write(path_in(f, "tre.sealed"), buf, strlen(hdr) + out_len);
  assert_int_equal(chmod(path_in(f, "tre.sealed"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  json_t *after = status_of(f->tre);
  assert_true(json_equal(before, after));
  /* one write (an AKA run commits its SQN): the second slot, generation 1 */
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  uint64_t gen = 0;
  assert_int_equal(newest_slot(f, &gen), 1);
  assert_true(gen == 1);
  check_persisted(f);
  provision(f, &sho_a, TXN_A);
  check_persisted(f);
  auc_free(&auc);
  mcim_storage_key_free(key);
  json_decref(doc);
  json_decref(before);
  json_decref(after);
  free(buf);
  free(text);
}

static void test_tampered(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *t = NULL;
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  /* the newest slot alone: no older state to fall back on */
  int newest = newest_slot(f, &gen);
  unlink(path_in(f, slot_name(newest ^ 1)));
  char slot[128]; /* path_in's buffers are reused */
  snprintf(slot, sizeof(slot), "%s", path_in(f, slot_name(newest)));
  uint8_t *orig = file_read(slot, &len);
  uint8_t *buf = malloc(len + 1);
  assert_non_null(buf);

  /* One flipped bit in the sealed blob. */
  memcpy(buf, orig, len);
  buf[len / 2] ^= 0x04;
  file_write(slot, buf, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* The open handle re-reads: it refuses too. */
  json_t *st = NULL;
  assert_int_equal(f->tre->ops->status(f->tre->ctx, &st), MCIM_UNSEAL_FAILED);
  /* Another device's name in the clear header (the context no longer matches). */
  memcpy(buf, orig, len);
  buf[strlen("mcim-tre 2 dev")] = '2';
  file_write(slot, buf, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* Truncated. */
  file_write(slot, orig, len - 1);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  file_write(slot, orig, 20);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* Intact again: fine. */
  file_write(slot, orig, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  mcim_tre_close(t);

  /* An older state relabelled as a later generation does not open (the generation is in
   * the seal's context): the true newest stands. */
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_int_equal(newest_slot(f, NULL), newest ^ 1);
  json_t *latest = status_of(f->tre);
  assert_true(slot_header(orig, len, &gen, &blob, &blob_len));
  char hdr[128];
  int hl = snprintf(hdr, sizeof(hdr), "mcim-tre 2 %s %llu %zu\n", DEVICE,
                    (unsigned long long)gen + 2, blob_len);
  uint8_t *forged = malloc((size_t)hl + blob_len);
  assert_non_null(forged);
  memcpy(forged, hdr, (size_t)hl);
  memcpy(forged + hl, orig + blob, blob_len);
  file_write(slot, forged, (size_t)hl + blob_len);
  assert_int_equal(newest_slot(f, NULL), newest);
  long mark = ftell(log_fp);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  json_t *seen = status_of(t);
  assert_true(json_equal(latest, seen));
  /* the state after the AKA run, not the one before: its challenge is spent */
  assert_int_equal(t->ops->aka(t->ctx, MCIM_TRE_PCID, av.rand, av.autn, res, auts),
                   MCIM_SYNC_FAILURE);
  char *log = log_since(mark);
  assert_non_null(strstr(log, "the newest state does not open"));
  free(log);
  mcim_tre_close(t);
  json_decref(seen);
  json_decref(latest);
  free(forged);
  auc_free(&auc);
  /* Another TRE's storage key. */
  uint8_t key[32];
  size_t klen = 0;
  uint8_t *k = file_read(path_in(f, "tre.key"), &klen);
  memcpy(key, k, 32);
  key[0] ^= 1;
  file_write(path_in(f, "tre.key"), key, 32);
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  file_write(path_in(f, "tre.key"), k, 32);
  /* A key file others can read is refused. */
  assert_int_equal(chmod(path_in(f, "tre.key"), 0644), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_KEY_FILE_INSECURE);
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  mcim_tre_close(t);
  mcim_wipe(key, sizeof(key));
  free(k);
  free(buf);
  free(orig);
}

/* ---- tests: threads ---------------------------------------------------------------------- */

#define THREAD_AVS 8

struct worker {
  mcim_tre_t *tre;
  struct mcim_aka_av av[THREAD_AVS];
  mcim_cause_t rc[THREAD_AVS];
  uint8_t res[THREAD_AVS][8];
  mcim_cause_t status_rc;
};

static void *worker_run(void *arg)
{
  struct worker *w = arg;
  uint8_t auts[14];
  for (size_t i = 0; i < THREAD_AVS; i++) {
    w->rc[i] = w->tre->ops->aka(w->tre->ctx, MCIM_TRE_PCID, w->av[i].rand, w->av[i].autn,
                                w->res[i], auts);
    json_t *st = NULL;
    w->status_rc = w->tre->ops->status(w->tre->ctx, &st);
    json_decref(st);
  }
  return NULL;
}

static void test_threads(void **state)
{
  struct fx *f = *state;
  struct auc auc;
  struct worker w[3];
  pthread_t th[3];
  uint8_t res[8], auts[14];

  /* 3 x 8 vectors in 24 different IND slots: each is fresh whatever the interleaving, so
   * any failure would be a lost update. Workers 0 and 1 share the fixture's handle (its
   * mutex serialises them); worker 2 has a handle of its own on the same folder (the file
   * lock serialises it with them, as between the agent and another process). */
  mcim_tre_t *second = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &second), MCIM_OK);
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  for (size_t t = 0; t < 3; t++) {
    memset(&w[t], 0, sizeof(w[t]));
    w[t].tre = t < 2 ? f->tre : second;
    for (size_t i = 0; i < THREAD_AVS; i++)
      auc_av(&auc, &w[t].av[i]);
  }
  for (size_t t = 0; t < 3; t++)
    assert_int_equal(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
  for (size_t t = 0; t < 3; t++)
    assert_int_equal(pthread_join(th[t], NULL), 0);
  mcim_tre_close(second);
  for (size_t t = 0; t < 3; t++) {
    assert_int_equal(w[t].status_rc, MCIM_OK);
    for (size_t i = 0; i < THREAD_AVS; i++) {
      assert_int_equal(w[t].rc[i], MCIM_OK);
      assert_memory_equal(w[t].res[i], w[t].av[i].xres, 8);
    }
  }
  check_persisted(f);
  /* Every one of them was committed: each replays as stale. */
  for (size_t t = 0; t < 3; t++)
    for (size_t i = 0; i < THREAD_AVS; i++)
      assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &w[t].av[i], res, auts), MCIM_SYNC_FAILURE);
  auc_free(&auc);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_manufacture, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pcid_aka, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_two_handles, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pcid_expiry_and_renewal, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_quote, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_sign, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_stage_install, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_stage_refused, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_isolation, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_discard, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pristine, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_owner, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_owner_handover, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_no_secret_out, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_crash_slot, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_slot_keys, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_shred_files_left_behind, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_txn_key_lifecycle, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_crash_rotation, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_fifo_slot, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_format_1, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_tampered, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_threads, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_has_no_secret),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
