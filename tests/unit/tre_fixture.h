/* The software TRE's tests (tests/unit/test_tre_*.c, src/tre/) share this fixture, with real
 * crypto throughout: a throw-away PKI (operators' CA, M2MES CA, an unrelated CA), SHO keys with
 * operators' CA certificates, an owner key, the log captured (group_setup); per test a
 * manufactured TRE with a PCID credential and an AuC made of Milenage + AV generation + the HE
 * SQN state (fx_setup); MCIM packages made, staged and installed. Every mutating operation is
 * followed by a reopen from disk that must show the same state (check_persisted). The
 * white-box access to the sealed files is tre_sealed_fixture.h's. Header-only (static
 * functions): each test program includes it once, after the cmocka headers. */
#ifndef MCIM_TEST_TRE_FIXTURE_H
#define MCIM_TEST_TRE_FIXTURE_H

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

/* What some programs do not use. */
#define TRE_SHARED static __attribute__((unused))

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

TRE_SHARED mcim_pki_ca_t *ops_ca, *m2mes_ca, *evil_ca;
TRE_SHARED char *ops_ca_pem, *m2mes_ca_pem;
TRE_SHARED struct sho sho_a = {.name = "sho-a", .imsi = "001020000000007"};
TRE_SHARED struct sho sho_b = {.name = "sho-b", .imsi = "001030000000009"};
TRE_SHARED struct sho sho_ro = {.name = "ro", .imsi = "001010000000099"};  /* reserved name */
TRE_SHARED struct sho sho_evil = {.name = "sho-a", .imsi = "001020000000008"}; /* other CA */
TRE_SHARED struct sho sho_old = {.name = "sho-b", .imsi = "001030000000010"};  /* expired cert */
TRE_SHARED mcim_jose_key_t *owner, *stranger;
TRE_SHARED char *owner_jwk;
TRE_SHARED FILE *log_fp;

/* Every secret any test hands the TRE, to search outputs, the disk and the log for. */
TRE_SHARED char secrets[64][33];
TRE_SHARED size_t nsecrets;

TRE_SHARED void remember_secret(const uint8_t b[16])
{
  assert_true(nsecrets < sizeof(secrets) / sizeof(secrets[0]));
  mcim_hex_encode(b, 16, secrets[nsecrets++]);
}

TRE_SHARED char *cert_pem_issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
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

TRE_SHARED void sho_make(struct sho *s, const mcim_pki_ca_t *ca, int64_t nb, int64_t na)
{
  assert_int_equal(mcim_pki_key_generate(&s->pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(s->pkey, &s->key), MCIM_OK);
  s->cert_pem = cert_pem_issue(ca, s->name, MCIM_CERT_TLS, s->pkey, nb, na);
  assert_int_equal(mcim_random(s->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(s->opc, 16), MCIM_OK);
  remember_secret(s->k);
  remember_secret(s->opc);
}

TRE_SHARED void sho_free(struct sho *s)
{
  EVP_PKEY_free(s->pkey);
  mcim_jose_key_free(s->key);
  free(s->cert_pem);
}

TRE_SHARED int group_setup(void **state)
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

TRE_SHARED int group_teardown(void **state)
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
TRE_SHARED char *log_since(long from)
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

TRE_SHARED bool contains_ci(const char *hay, size_t len, const char *needle)
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

/* The whole group's log (each test_tre_* program's last test, test_log_no_secret): none of
 * the secrets any of its tests handed the TRE (remember_secret), no private key. */
TRE_SHARED void log_holds_no_secret(void)
{
  char *log = log_since(0);
  size_t n = strlen(log);
  assert_true(n > 0);
  for (size_t i = 0; i < nsecrets; i++)
    assert_false(contains_ci(log, n, secrets[i]));
  assert_false(contains_ci(log, n, "PRIVATE KEY"));
  free(log);
}

TRE_SHARED void test_log_no_secret(void **state)
{
  (void)state;
  log_holds_no_secret();
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

TRE_SHARED void auc_init(struct auc *a, const uint8_t k[16], const uint8_t opc[16])
{
  assert_int_equal(mcim_milenage_new(&a->m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(a->m, k, opc), MCIM_OK);
  mcim_sqn_params_default(&a->p);
  assert_int_equal(mcim_sqn_he_init(&a->p, &a->he), MCIM_OK);
}

TRE_SHARED uint64_t auc_av(struct auc *a, struct mcim_aka_av *av)
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

TRE_SHARED void auc_free(struct auc *a) { mcim_milenage_free(a->m); }

TRE_SHARED mcim_cause_t tre_aka(struct fx *f, const char *cred, const struct mcim_aka_av *av,
                                uint8_t res[8], uint8_t auts[14])
{
  return f->tre->ops->aka(f->tre->ctx, cred, av->rand, av->autn, res, auts);
}

TRE_SHARED json_t *status_of(mcim_tre_t *tre)
{
  json_t *st = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &st), MCIM_OK);
  assert_non_null(st);
  return st;
}

/* The state on disk is the state the handle reports: a second handle and a fresh one on the
 * same folder both see exactly it. */
TRE_SHARED void check_persisted(struct fx *f)
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
TRE_SHARED EVP_PKEY *jwk_to_pkey(const char *jwk)
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

TRE_SHARED char *pcid_jwe(const mcim_jose_key_t *ka, const char *pcid, const uint8_t k[16],
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

TRE_SHARED int fx_setup(void **state)
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

TRE_SHARED int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

TRE_SHARED int fx_teardown(void **state)
{
  struct fx *f = *state;
  mcim_tre_close(f->tre);
  mcim_jose_key_free(f->ka_pub);
  mcim_jose_key_free(f->att_pub);
  nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
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

TRE_SHARED struct pkg pkg_default(const struct fx *f, const struct sho *s, const char *txn)
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

TRE_SHARED char *pkg_make(const struct pkg *p)
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

TRE_SHARED mcim_cause_t stage(struct fx *f, const char *txn, const char *pkg,
                              const struct sho *cert)
{
  return f->tre->ops->stage(f->tre->ctx, txn, pkg, strlen(pkg), cert->cert_pem);
}

/* Stage and install the default package of `s` under `txn`. */
TRE_SHARED void provision(struct fx *f, const struct sho *s, const char *txn)
{
  struct pkg p = pkg_default(f, s, txn);
  char *pkg = pkg_make(&p);
  char slot[64] = "";
  assert_int_equal(stage(f, txn, pkg, s), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txn, slot), MCIM_OK);
  assert_string_equal(slot, s->name);
  free(pkg);
}

TRE_SHARED json_t *slot_of(json_t *status, const char *name)
{
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(status, "slots"), i, s) {
    if (strcmp(json_string_value(json_object_get(s, "slot")), name) == 0)
      return s;
  }
  return NULL;
}

TRE_SHARED const char *slot_state(struct fx *f, const char *name)
{
  static char buf[16];
  json_t *st = status_of(f->tre);
  json_t *s = slot_of(st, name);
  snprintf(buf, sizeof(buf), "%s", s ? json_string_value(json_object_get(s, "state")) : "none");
  json_decref(st);
  return buf;
}

/* Staging `pkg` is refused (PACKAGE_INVALID) and the log names `cause`. */
TRE_SHARED void expect_refused(struct fx *f, const char *txn, const char *pkg,
                               const struct sho *cert, const char *cause)
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


#endif
