/* The software TRE's PCID renewal (pcid_renew, docs/protocol.md "PCID credential lifetime
 * and renewal"), with real crypto: a throw-away operators' CA with `ro`, `m2mes` and an SHO
 * certificate, an unrelated CA with its own `ro`, the M2MES CA certifying the TRE keys, and
 * Milenage AuCs for the old and the new credential. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"

#define DEVICE "dev1"
#define PCID1 "001010000000001"
#define PCID2 "001019000000002"
#define PCID3 "001019000000003"
#define TYP_PCID "mcim-pcid+jwt"
#define TXN "0123456789abcdef0123456789abcdef"

struct issuer {
  const char *name;
  EVP_PKEY *pkey;
  mcim_jose_key_t *key;
  char *cert_pem;
};

static mcim_pki_ca_t *ops_ca, *m2mes_ca, *evil_ca;
static char *ops_ca_pem, *m2mes_ca_pem, *owner_jwk;
static mcim_jose_key_t *owner;
static struct issuer ro = {.name = "ro"}, m2mes = {.name = "m2mes"}, sho = {.name = "sho-a"},
                     evil_ro = {.name = "ro"}, pva = {.name = "pva"};
static FILE *log_fp;

static char *cert_issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
                        EVP_PKEY *key)
{
  X509 *x = NULL;
  char *pem = NULL;
  mcim_cert_request_t req = {.name = name, .usage = usage, .key = key, .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  return pem;
}

static void issuer_make(struct issuer *i, const mcim_pki_ca_t *ca)
{
  assert_int_equal(mcim_pki_key_generate(&i->pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(i->pkey, &i->key), MCIM_OK);
  assert_int_equal(mcim_jose_key_set_kid(i->key, i->name), MCIM_OK);
  i->cert_pem = cert_issue(ca, i->name, MCIM_CERT_TLS, i->pkey);
}

static void issuer_free(struct issuer *i)
{
  EVP_PKEY_free(i->pkey);
  mcim_jose_key_free(i->key);
  free(i->cert_pem);
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
  issuer_make(&ro, ops_ca);
  issuer_make(&m2mes, ops_ca);
  issuer_make(&sho, ops_ca);
  issuer_make(&pva, ops_ca);
  issuer_make(&evil_ro, evil_ca);
  assert_int_equal(mcim_jose_key_generate(&owner), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(owner, &owner_jwk), MCIM_OK);
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  issuer_free(&ro);
  issuer_free(&m2mes);
  issuer_free(&sho);
  issuer_free(&pva);
  issuer_free(&evil_ro);
  mcim_pki_ca_free(ops_ca);
  mcim_pki_ca_free(m2mes_ca);
  mcim_pki_ca_free(evil_ca);
  free(ops_ca_pem);
  free(m2mes_ca_pem);
  free(owner_jwk);
  mcim_jose_key_free(owner);
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL);
  fclose(log_fp);
  return 0;
}

static char *log_since(long from)
{
  fflush(log_fp);
  long end = ftell(log_fp);
  char *buf = calloc(1, (size_t)(end - from) + 1);
  assert_non_null(buf);
  assert_int_equal(fseek(log_fp, from, SEEK_SET), 0);
  assert_int_equal((long)fread(buf, 1, (size_t)(end - from), log_fp), end - from);
  assert_int_equal(fseek(log_fp, 0, SEEK_END), 0);
  return buf;
}

/* ---- fixture: a manufactured TRE with its first PCID credential ---- */

struct cred {
  const char *pcid;
  uint8_t k[16], opc[16];
  int64_t expires;
  mcim_milenage_t *m;
  struct mcim_sqn_params p;
  struct mcim_sqn_he he;
};

struct fx {
  char dir[64];
  mcim_tre_t *tre;
  mcim_jose_key_t *ka_pub;
  struct cred c1, c2, c3;
};

static void cred_make(struct cred *c, const char *pcid, int64_t expires)
{
  c->pcid = pcid;
  c->expires = expires;
  assert_int_equal(mcim_random(c->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(c->opc, 16), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&c->m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(c->m, c->k, c->opc), MCIM_OK);
  mcim_sqn_params_default(&c->p);
  assert_int_equal(mcim_sqn_he_init(&c->p, &c->he), MCIM_OK);
}

static void cred_av(struct cred *c, struct mcim_aka_av *av)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  struct mcim_sqn_he next;
  uint64_t sqn = 0;
  uint8_t sqnb[MCIM_SQN_LEN];
  assert_int_equal(mcim_sqn_he_next(&c->p, &c->he, &next, &sqn), MCIM_OK);
  c->he = next;
  mcim_sqn_to_bytes(sqn, sqnb);
  assert_int_equal(mcim_aka_gen_av(c->m, NULL, sqnb, amf, av), MCIM_OK);
}

/* The credential as JSON text (the plaintext of the JWE). */
static void cred_text(const struct cred *c, char *out, size_t len)
{
  char kh[33], oh[33];
  mcim_hex_encode(c->k, 16, kh);
  mcim_hex_encode(c->opc, 16, oh);
  snprintf(out, len,
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}",
           c->pcid, kh, oh, (long long)c->expires);
}

static int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *att_jwk = NULL, *ka_jwk = NULL, text[256], *jwe = NULL;
  mcim_jose_key_t *att_pub = NULL;
  EVP_PKEY *att = NULL, *ka = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-trepcid-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(mcim_tre_soft_create(f->dir, DEVICE, "model-x", owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(att_jwk, strlen(att_jwk), &att_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(ka_jwk, strlen(ka_jwk), &f->ka_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(att_pub, &att), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(f->ka_pub, &ka), MCIM_OK);
  char *att_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, att);
  char *ka_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT, ka);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, att_pem, ka_pem), MCIM_OK);
  cred_make(&f->c1, PCID1, mcim_now() + 3600);
  cred_make(&f->c2, PCID2, mcim_now() + 7200);
  cred_make(&f->c3, PCID3, mcim_now() + 9000);
  cred_text(&f->c1, text, sizeof(text));
  assert_int_equal(mcim_jwe_encrypt(f->ka_pub, (const uint8_t *)text, strlen(text), &jwe),
                   MCIM_OK);
  mcim_wipe(text, sizeof(text));
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  free(att_pem);
  free(ka_pem);
  free(att_jwk);
  free(ka_jwk);
  EVP_PKEY_free(att);
  EVP_PKEY_free(ka);
  mcim_jose_key_free(att_pub);
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
  mcim_milenage_free(f->c1.m);
  mcim_milenage_free(f->c2.m);
  mcim_milenage_free(f->c3.m);
  nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* ---- packages ---- */

struct pkg {
  const struct issuer *signer;
  const char *iss, *aud, *sub, *typ;
  const mcim_jose_key_t *recipient;
  const struct cred *cred;
  const char *content; /* instead of the credential */
  int64_t exp;
};

static struct pkg pkg_default(const struct fx *f, const struct issuer *signer,
                              const struct cred *c)
{
  struct pkg p = {.signer = signer, .iss = signer->name, .aud = DEVICE, .sub = DEVICE,
                  .typ = TYP_PCID, .recipient = f->ka_pub, .cred = c};
  return p;
}

static char *pkg_make(const struct pkg *p)
{
  char text[256], *out = NULL;
  int64_t now = mcim_now();
  if (p->content)
    snprintf(text, sizeof(text), "%s", p->content);
  else
    cred_text(p->cred, text, sizeof(text));
  mcim_claims_t c = {.iss = p->iss, .sub = p->sub, .aud = p->aud, .typ = p->typ, .txn = TXN,
                     .iat = p->exp && p->exp < now ? p->exp - 300 : now,
                     .exp = p->exp ? p->exp : now + 300};
  assert_int_equal(mcim_package_seal(p->signer->key, &c, p->recipient, (const uint8_t *)text,
                                     strlen(text), &out),
                   MCIM_OK);
  mcim_wipe(text, sizeof(text));
  return out;
}

static mcim_cause_t renew(struct fx *f, const char *pkg, const struct issuer *cert)
{
  return f->tre->ops->pcid_renew(f->tre->ctx, pkg, strlen(pkg), cert->cert_pem);
}

static json_t *status_of(struct fx *f)
{
  json_t *st = NULL;
  assert_int_equal(f->tre->ops->status(f->tre->ctx, &st), MCIM_OK);
  return st;
}

static const char *pcid_id(json_t *st, const char *member)
{
  return json_string_value(json_object_get(json_object_get(st, member), "id"));
}

/* Reopen from disk: the state survived. */
static void reopen(struct fx *f)
{
  mcim_tre_close(f->tre);
  f->tre = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
}

static mcim_cause_t aka(struct fx *f, const char *which, struct cred *c)
{
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  cred_av(c, &av);
  mcim_cause_t rc = f->tre->ops->aka(f->tre->ctx, which, av.rand, av.autn, res, auts);
  if (rc == MCIM_OK)
    assert_memory_equal(res, av.xres, 8);
  return rc;
}

/* ---- tests ---- */

static void test_renew_from_ro(void **state)
{
  struct fx *f = *state;
  assert_int_equal(aka(f, MCIM_TRE_PCID, &f->c1), MCIM_OK);
  struct pkg p = pkg_default(f, &ro, &f->c2);
  char *pkg = pkg_make(&p);
  assert_int_equal(renew(f, pkg, &ro), MCIM_OK);
  reopen(f);
  json_t *st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID2);
  assert_string_equal(pcid_id(st, "pcid_prev"), PCID1);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "pcid"), "expires")),
                   f->c2.expires);
  json_decref(st);

  /* The same package again (a retry after a lost answer): a no-op, pcid-prev stays. */
  assert_int_equal(renew(f, pkg, &ro), MCIM_OK);
  st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID2);
  assert_string_equal(pcid_id(st, "pcid_prev"), PCID1);
  json_decref(st);

  /* Until the new one passes an AKA, the old one still works as pcid-prev. */
  assert_int_equal(aka(f, MCIM_TRE_PCID_PREV, &f->c1), MCIM_OK);
  assert_int_equal(aka(f, MCIM_TRE_PCID, &f->c2), MCIM_OK);
  reopen(f);
  st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID2);
  assert_null(json_object_get(st, "pcid_prev"));
  json_decref(st);
  assert_int_equal(aka(f, MCIM_TRE_PCID_PREV, &f->c1), MCIM_NOT_FOUND);

  /* Still idempotent after the AKA: the package is what is installed. */
  assert_int_equal(renew(f, pkg, &ro), MCIM_OK);
  st = status_of(f);
  assert_null(json_object_get(st, "pcid_prev"));
  json_decref(st);
  free(pkg);
}

static void test_renew_from_m2mes(void **state)
{
  struct fx *f = *state;
  struct pkg p = pkg_default(f, &m2mes, &f->c2);
  char *pkg = pkg_make(&p);
  assert_int_equal(renew(f, pkg, &m2mes), MCIM_OK);
  free(pkg);
  /* A second renewal before the first was used: the oldest is wiped, the middle one kept. */
  p = pkg_default(f, &ro, &f->c3);
  pkg = pkg_make(&p);
  assert_int_equal(renew(f, pkg, &ro), MCIM_OK);
  free(pkg);
  json_t *st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID3);
  assert_string_equal(pcid_id(st, "pcid_prev"), PCID2);
  json_decref(st);
  assert_int_equal(aka(f, MCIM_TRE_PCID_PREV, &f->c2), MCIM_OK);
  assert_int_equal(aka(f, MCIM_TRE_PCID, &f->c3), MCIM_OK);
}

/* A refusal: PACKAGE_INVALID, the reason in the log, nothing changed. */
static void expect_refused(struct fx *f, const char *pkg, size_t len, const struct issuer *cert,
                           const char *why)
{
  long from = ftell(log_fp);
  assert_int_equal(f->tre->ops->pcid_renew(f->tre->ctx, pkg, len, cert->cert_pem),
                   MCIM_PACKAGE_INVALID);
  char *log = log_since(from);
  if (!strstr(log, why))
    fail_msg("log lacks \"%s\": %s", why, log);
  free(log);
  json_t *st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID1);
  assert_null(json_object_get(st, "pcid_prev"));
  json_decref(st);
}

static void refused_pkg(struct fx *f, const struct pkg *p, const struct issuer *cert,
                        const char *why)
{
  char *pkg = pkg_make(p);
  expect_refused(f, pkg, strlen(pkg), cert, why);
  free(pkg);
}

static void test_refused(void **state)
{
  struct fx *f = *state;
  struct pkg p;

  /* An SHO (valid operators' CA certificate) may not touch the PCID credential. */
  p = pkg_default(f, &sho, &f->c2);
  refused_pkg(f, &p, &sho, "neither the RO nor the M2MES");
  /* Nor another network role. */
  p = pkg_default(f, &pva, &f->c2);
  refused_pkg(f, &p, &pva, "neither the RO nor the M2MES");
  /* An "ro" of another CA. */
  p = pkg_default(f, &evil_ro, &f->c2);
  refused_pkg(f, &p, &evil_ro, "does not verify against the operators' CA");
  /* Signed by the SHO, presented with the RO's certificate. */
  p = pkg_default(f, &sho, &f->c2);
  p.iss = "ro";
  refused_pkg(f, &p, &ro, "does not open");
  /* Signed by the RO but claiming to be the M2MES. */
  p = pkg_default(f, &ro, &f->c2);
  p.iss = "m2mes";
  refused_pkg(f, &p, &ro, "does not open");
  /* Another device, another audience, another type (an MCIM package). */
  p = pkg_default(f, &ro, &f->c2);
  p.sub = "dev2";
  refused_pkg(f, &p, &ro, "does not open");
  p = pkg_default(f, &ro, &f->c2);
  p.aud = "dev2";
  refused_pkg(f, &p, &ro, "does not open");
  p = pkg_default(f, &ro, &f->c2);
  p.typ = "mcim-package+jwt";
  refused_pkg(f, &p, &ro, "does not open");
  /* Sealed to another key. */
  p = pkg_default(f, &ro, &f->c2);
  p.recipient = owner;
  refused_pkg(f, &p, &ro, "does not open");
  /* An expired statement. */
  p = pkg_default(f, &ro, &f->c2);
  p.exp = mcim_now() - 600;
  refused_pkg(f, &p, &ro, "does not open");
  /* Content: an expired credential, missing K, not JSON, an MCIM instead of a PCID. */
  struct cred old = f->c2;
  old.expires = mcim_now() - 5;
  p = pkg_default(f, &ro, &old);
  refused_pkg(f, &p, &ro, "not a valid, unexpired PCID credential");
  p = pkg_default(f, &ro, &f->c2);
  p.content = "{\"pcid\":\"001019000000002\",\"opc\":\"00112233445566778899aabbccddeeff\","
              "\"amf\":\"8000\",\"expires\":99999999999}";
  refused_pkg(f, &p, &ro, "not a valid, unexpired PCID credential");
  p.content = "not json";
  refused_pkg(f, &p, &ro, "not a valid, unexpired PCID credential");
  p.content = "{\"sho\":\"ro\",\"imsi\":\"001019000000002\",\"k\":\"00112233445566778899aabbccddeeff\","
              "\"opc\":\"00112233445566778899aabbccddeeff\",\"amf\":\"8000\"}";
  refused_pkg(f, &p, &ro, "not a valid, unexpired PCID credential");
  /* Garbage, empty, a certificate that is not one. */
  expect_refused(f, "a.b.c", 5, &ro, "does not open");
  expect_refused(f, "", 0, &ro, "empty");
  static char junk_pem[] = "-----BEGIN CERTIFICATE-----\nAAAA\n";
  struct issuer junk = {.name = "ro", .cert_pem = junk_pem};
  p = pkg_default(f, &ro, &f->c2);
  refused_pkg(f, &p, &junk, "issuer certificate unreadable");
  /* The device's own TRE certificate is no issuer. */
  char *dev_cert = NULL;
  assert_int_equal(f->tre->ops->cert(f->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &dev_cert), MCIM_OK);
  struct issuer self = {.name = DEVICE, .cert_pem = dev_cert};
  refused_pkg(f, &p, &self, "does not verify against the operators' CA");
  free(dev_cert);
  assert_int_equal(f->tre->ops->pcid_renew(f->tre->ctx, NULL, 3, ro.cert_pem),
                   MCIM_INVALID_ARGUMENT);
  /* The first credential still works. */
  assert_int_equal(aka(f, MCIM_TRE_PCID, &f->c1), MCIM_OK);
}

static void test_replay(void **state)
{
  struct fx *f = *state;
  struct pkg p = pkg_default(f, &ro, &f->c2);
  char *first = pkg_make(&p);
  assert_int_equal(renew(f, first, &ro), MCIM_OK);
  p = pkg_default(f, &ro, &f->c3);
  char *second = pkg_make(&p);
  assert_int_equal(renew(f, second, &ro), MCIM_OK);
  /* The first package again, once another was installed: a replay (its jti was seen). */
  long from = ftell(log_fp);
  assert_int_equal(renew(f, first, &ro), MCIM_PACKAGE_INVALID);
  char *log = log_since(from);
  assert_non_null(strstr(log, "REPLAY"));
  free(log);
  json_t *st = status_of(f);
  assert_string_equal(pcid_id(st, "pcid"), PCID3);
  json_decref(st);
  free(first);
  free(second);
}

static bool has_hex(const char *text, const uint8_t b[16])
{
  char hex[33];
  mcim_hex_encode(b, 16, hex);
  return strstr(text, hex) != NULL;
}

static void test_no_secret_out(void **state)
{
  struct fx *f = *state;
  long from = ftell(log_fp);
  struct pkg p = pkg_default(f, &m2mes, &f->c2);
  char *pkg = pkg_make(&p);
  assert_int_equal(renew(f, pkg, &m2mes), MCIM_OK);
  free(pkg);
  json_t *st = status_of(f);
  char *view = json_dumps(st, 0);
  json_decref(st);
  char *log = log_since(from);
  assert_false(has_hex(view, f->c2.k) || has_hex(view, f->c2.opc));
  assert_false(has_hex(log, f->c2.k) || has_hex(log, f->c2.opc));
  free(view);
  free(log);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_renew_from_ro, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_renew_from_m2mes, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_refused, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_replay, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_no_secret_out, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
