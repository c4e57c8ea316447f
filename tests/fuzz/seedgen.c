/* fuzz-seedgen: the fuzz targets' fixture and seeds, made with the project's own functions.
 *
 *   fuzz-seedgen data DIR      the fixture (once; committed as tests/fuzz/data/): both CAs,
 *                              the keys and certificates of sho-a, vno, the owner and the
 *                              TRE (attestation, key agreement), the TRE's storage key.
 *                              Everything valid for 100 years.
 *   fuzz-seedgen corpus DIR    the seeds of every target into DIR/<target>/ (committed as
 *                              tests/fuzz/corpus/), from the fixture of tests/fuzz/data/:
 *                              statements signed with mcim_jws_sign, packages sealed with
 *                              mcim_package_seal, a TRE manufactured and used (its quote, its
 *                              slot files), problems from mcim_problem_new, AKA vectors from
 *                              Milenage, the sample configurations of docs/examples/.
 *
 * Each seed starts with the target's mode byte (see each target's header). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "mcim/aka.h"
#include "mcim/cause.h"
#include "mcim/firmware.h"
#include "mcim/http.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/seal.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"
#ifdef MCIM_HAVE_TPM
#include "tre/tpm/tpm.h"
#endif

#define CHECK(x)                                                                                   \
  do {                                                                                             \
    if ((x) != MCIM_OK) {                                                                          \
      fprintf(stderr, "seedgen: %s:%d: %s failed\n", __FILE__, __LINE__, #x);                      \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static const char *out_dir;

/* ---- data ---- */

static void write_key(const char *dir, const char *name, EVP_PKEY *key)
{
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s.key", dir, name);
  CHECK(mcim_pki_key_write(path, key));
}

static void write_cert(const char *dir, const char *name, X509 *cert)
{
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
  CHECK(mcim_pki_cert_write(path, cert));
}

static void leaf(const char *dir, const mcim_pki_ca_t *ca, const char *file, const char *cn,
                 mcim_cert_usage_t usage)
{
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  CHECK(mcim_pki_key_generate(&key));
  mcim_cert_request_t req = {.name = cn, .usage = usage, .key = key, .days = 36500};
  CHECK(mcim_pki_issue(ca, &req, &cert));
  write_key(dir, file, key);
  write_cert(dir, file, cert);
  EVP_PKEY_free(key);
  X509_free(cert);
}

static int make_data(const char *dir)
{
  mcim_pki_ca_t *ops = NULL, *m2mes = NULL;
  EVP_PKEY *owner = NULL;
  mcim_storage_key_t *skey = NULL;
  char path[1024];
  mkdir(dir, 0755);
  CHECK(mcim_pki_ca_create("operators-ca", 36500, &ops));
  CHECK(mcim_pki_ca_create("m2mes-ca", 36500, &m2mes));
  write_cert(dir, "operators-ca", ops->cert);
  write_key(dir, "operators-ca", ops->key);
  write_cert(dir, "m2mes-ca", m2mes->cert);
  write_key(dir, "m2mes-ca", m2mes->key);
  leaf(dir, ops, FUZZ_SHO, FUZZ_SHO, MCIM_CERT_TLS);
  leaf(dir, ops, FUZZ_VNO, FUZZ_VNO, MCIM_CERT_TLS);
  leaf(dir, m2mes, "tre-att", FUZZ_DEVICE, MCIM_CERT_TRE_ATTESTATION);
  leaf(dir, m2mes, "tre-ka", FUZZ_DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT);
  CHECK(mcim_pki_key_generate(&owner));
  write_key(dir, "owner", owner);
  snprintf(path, sizeof(path), "%s/tre.key", dir);
  CHECK(mcim_storage_key_create_file(path, &skey));
  mcim_storage_key_free(skey);
  EVP_PKEY_free(owner);
  mcim_pki_ca_free(ops);
  mcim_pki_ca_free(m2mes);
  return 0;
}

/* ---- seeds ---- */

static void seed(const char *target, const char *name, uint8_t mode, const void *a, size_t alen,
                 const void *b, size_t blen)
{
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", out_dir, target);
  mkdir(path, 0755);
  snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
  FILE *fp = fopen(path, "wb");
  if (!fp || fwrite(&mode, 1, 1, fp) != 1 || (alen && fwrite(a, 1, alen, fp) != alen) ||
      (blen && fwrite(b, 1, blen, fp) != blen) || fclose(fp) != 0) {
    fprintf(stderr, "seedgen: cannot write %s\n", path);
    exit(1);
  }
}

static void seed_str(const char *target, const char *name, uint8_t mode, const char *s)
{
  seed(target, name, mode, s, strlen(s), NULL, 0);
}

/* The header and the payload of a compact JWS, decoded. */
static void jws_parts(const char *jws, uint8_t **h, size_t *hlen, uint8_t **p, size_t *plen)
{
  const char *d1 = strchr(jws, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
  if (!d2)
    exit(1);
  *h = malloc((size_t)(d1 - jws) + 4);
  *p = malloc((size_t)(d2 - d1) + 4);
  CHECK(mcim_b64url_decode(jws, (size_t)(d1 - jws), *h, (size_t)(d1 - jws) + 4, hlen));
  CHECK(mcim_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), *p, (size_t)(d2 - d1) + 4, plen));
}

/* Seeds of modes 0 (compact), 1 (payload) and 2 (header NUL payload) of a JWS target. */
static void jws_seeds(const char *target, const char *name, const char *jws)
{
  uint8_t *h, *p, nul = 0;
  size_t hlen, plen;
  char file[128];
  jws_parts(jws, &h, &hlen, &p, &plen);
  snprintf(file, sizeof(file), "%s-compact", name);
  seed_str(target, file, 0, jws);
  snprintf(file, sizeof(file), "%s-payload", name);
  seed(target, file, 1, p, plen, NULL, 0);
  /* header NUL payload: one buffer */
  uint8_t *hp = malloc(hlen + 1 + plen);
  memcpy(hp, h, hlen);
  hp[hlen] = nul;
  memcpy(hp + hlen + 1, p, plen);
  snprintf(file, sizeof(file), "%s-parts", name);
  seed(target, file, 2, hp, hlen + 1 + plen, NULL, 0);
  free(hp);
  free(h);
  free(p);
}

static char *sign(mcim_jose_key_t *key, const char *typ, const char *iss, const char *aud,
                  json_t *extra)
{
  char *jws = NULL;
  mcim_claims_t c = {.iss = iss, .sub = FUZZ_DEVICE, .aud = aud, .typ = typ, .txn = FUZZ_TXN,
                     .iat = FUZZ_IAT, .exp = FUZZ_EXP, .extra = extra};
  CHECK(mcim_jws_sign(key, &c, &jws));
  json_decref(extra);
  return jws;
}

static void seeds_jws(void)
{
  mcim_jose_key_t *sho = fuzz_jose_key(FUZZ_SHO);
  char *a = sign(sho, "mcim-status+jwt", FUZZ_SHO, FUZZ_DEVICE,
                 json_pack("{s:s,s:[s,s]}", "slot", FUZZ_SHO, "list", "a", "b"));
  char *b = sign(sho, "mcim-discard+jwt", FUZZ_SHO, FUZZ_DEVICE,
                 json_pack("{s:s,s:s}", "slot", FUZZ_SHO, "imsi", FUZZ_IMSI));
  char *c = sign(sho, "mcim-status+jwt", "ro", "pva", NULL);
  jws_seeds("fuzz_jws", "status", a);
  jws_seeds("fuzz_jws", "discard", b);
  jws_seeds("fuzz_jws", "other-aud", c);
  /* RFC 7515 A.3, the published ES256 example */
  size_t len = 0;
  char path[1024];
  snprintf(path, sizeof(path), "%s/../../data/jose/rfc7515-a3.jws", MCIM_FUZZ_DATA);
  uint8_t *rfc = fuzz_read_file(path, &len);
  if (rfc) {
    while (len && (rfc[len - 1] == '\n' || rfc[len - 1] == '\r'))
      len--;
    seed("fuzz_jws", "rfc7515-a3", 0, rfc, len, NULL, 0);
    free(rfc);
  }
  free(a);
  free(b);
  free(c);
  mcim_jose_key_free(sho);
}

static char *package(mcim_jose_key_t *sho, mcim_jose_key_t *ka, const char *content)
{
  char *pkg = NULL;
  mcim_claims_t c = {.iss = FUZZ_SHO, .sub = FUZZ_DEVICE, .aud = FUZZ_DEVICE,
                     .typ = FUZZ_TYP_PACKAGE, .txn = FUZZ_TXN, .iat = FUZZ_IAT,
                     .exp = FUZZ_EXP};
  CHECK(mcim_package_seal(sho, &c, ka, (const uint8_t *)content, strlen(content), &pkg));
  return pkg;
}

static void seeds_package(void)
{
  mcim_jose_key_t *sho = fuzz_jose_key(FUZZ_SHO), *ka = fuzz_jose_key("tre-ka");
  char content[256], cred[256];
  snprintf(content, sizeof(content),
           "{\"sho\":\"%s\",\"imsi\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\"}",
           FUZZ_SHO, FUZZ_IMSI, FUZZ_MCIM_K, FUZZ_MCIM_OPC);
  snprintf(cred, sizeof(cred),
           "{\"pcid\":\"001010000000002\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\","
           "\"expires\":%lld}",
           FUZZ_MCIM_K, FUZZ_MCIM_OPC, (long long)FUZZ_EXP);
  char *pkg = package(sho, ka, content);
  char *other = package(sho, ka, "{\"sho\":\"sho-b\",\"imsi\":\"001020000000007\"}");
  char *jwe = NULL;
  CHECK(mcim_jwe_encrypt(ka, (const uint8_t *)cred, strlen(cred), &jwe));
  uint8_t *h, *p;
  size_t hlen, plen;
  jws_parts(pkg, &h, &hlen, &p, &plen);
  seed_str("fuzz_package", "open-direct", 0, pkg);
  seed_str("fuzz_package", "stage", 1, pkg);
  seed_str("fuzz_package", "stage-other-sho", 1, other);
  seed_str("fuzz_package", "pcid-jwe", 2, jwe);
  seed_str("fuzz_package", "content", 3, content);
  seed_str("fuzz_package", "content-short", 3, "{\"sho\":\"sho-a\",\"imsi\":\"0010\"}");
  seed("fuzz_package", "payload", 4, p, plen, NULL, 0);
  free(h);
  free(p);
  free(pkg);
  free(other);
  free(jwe);
  mcim_jose_key_free(sho);
  mcim_jose_key_free(ka);
}

static void seeds_access_token(void)
{
  mcim_jose_key_t *vno = fuzz_jose_key(FUZZ_VNO);
  char *t = sign(vno, FUZZ_TYP_ACCESS, FUZZ_VNO, FUZZ_VNO,
                 json_pack("{s:s,s:s}", "scope", "restricted", "imsi", FUZZ_PCID));
  char *full = sign(vno, FUZZ_TYP_ACCESS, FUZZ_VNO, FUZZ_VNO,
                    json_pack("{s:s,s:s}", "scope", "full", "imsi", FUZZ_PCID));
  char *sho = sign(vno, FUZZ_TYP_ACCESS, FUZZ_SHO, FUZZ_SHO,
                   json_pack("{s:s,s:s}", "scope", "full", "imsi", FUZZ_IMSI));
  jws_seeds("fuzz_access_token", "restricted", t);
  jws_seeds("fuzz_access_token", "full", full);
  seed_str("fuzz_access_token", "restricted-need-full", 6, t);
  seed_str("fuzz_access_token", "sho-token", 0, sho);
  free(t);
  free(full);
  free(sho);
  mcim_jose_key_free(vno);
}

static void cert_seed(const char *file, const char *name, uint8_t pem_mode)
{
  size_t len = 0;
  char *pem = fuzz_data(file, &len);
  char seedname[128];
  snprintf(seedname, sizeof(seedname), "%s-pem", name);
  seed("fuzz_cert", seedname, pem_mode, pem, len, NULL, 0);
  X509 *cert = NULL;
  CHECK(mcim_pki_cert_from_pem(pem, len, &cert));
  uint8_t *der = NULL;
  int n = i2d_X509(cert, &der);
  if (n > 0 && pem_mode <= 1) {
    snprintf(seedname, sizeof(seedname), "%s-der", name);
    seed("fuzz_cert", seedname, (uint8_t)(pem_mode + 3), der, (size_t)n, NULL, 0);
  }
  OPENSSL_free(der);
  X509_free(cert);
  free(pem);
}

static void seeds_cert(void)
{
  cert_seed(FUZZ_SHO ".crt", "sho-a", 0);
  cert_seed("operators-ca.crt", "operators-ca", 0);
  cert_seed("tre-att.crt", "tre-att", 1);
  cert_seed("tre-ka.crt", "tre-ka", 2);
  cert_seed("tre-ka.crt", "tre-ka-as-att", 1);
  mcim_jose_key_t *owner = fuzz_jose_key("owner");
  char *jwk = NULL;
  CHECK(mcim_jose_key_public_jwk(owner, &jwk));
  seed_str("fuzz_cert", "owner-jwk", 5, jwk);
  free(jwk);
  mcim_jose_key_free(owner);
}

/* A quote of the fixture TRE, its times set to the seeds' and signed again. */
static void seeds_quote(mcim_tre_t *tre)
{
  json_t *log = json_array();
  for (const char *const *c = mcim_firmware_components; *c; c++) {
    char hex[MCIM_FIRMWARE_HEX_LEN + 1];
    CHECK(mcim_firmware_rim(FUZZ_MODEL, *c, hex));
    json_array_append_new(log, json_pack("{s:s,s:s}", "component", *c, "digest", hex));
  }
  CHECK(mcim_tre_soft_set_measurements(tre, log));
  json_decref(log);
  char *quote = NULL;
  CHECK(tre->ops->quote(tre->ctx, "pva", FUZZ_TXN, FUZZ_NONCE, 300, &quote));
  uint8_t *h, *p;
  size_t hlen, plen;
  jws_parts(quote, &h, &hlen, &p, &plen);
  json_t *payload = json_loadb((const char *)p, plen, 0, NULL);
  json_object_set_new(payload, "iat", json_integer(FUZZ_IAT));
  json_object_set_new(payload, "exp", json_integer(FUZZ_EXP));
  char *text = json_dumps(payload, JSON_COMPACT);
  EVP_PKEY *att = fuzz_pkey("tre-att");
  char *good = fuzz_sign_raw(att, h, hlen, (const uint8_t *)text, strlen(text));
  jws_seeds("fuzz_pva_quote", "good", good);
  /* a measurement that is no RIM: the log replays, the match fails */
  json_t *l = json_object_get(payload, "log");
  json_object_set_new(json_array_get(l, 0), "component", json_string("bootloader"));
  char *text2 = json_dumps(payload, JSON_COMPACT);
  seed("fuzz_pva_quote", "unknown-component-payload", 1, text2, strlen(text2), NULL, 0);
  free(text);
  free(text2);
  free(good);
  free(quote);
  free(h);
  free(p);
  json_decref(payload);
  EVP_PKEY_free(att);
}

static void seeds_problem(void)
{
  static const struct {
    mcim_cause_t cause;
    int step;
    const char *detail;
  } p[] = {
      {MCIM_CONFLICT, 8, "another package for this txn"},
      {MCIM_REPLAY, 0, NULL},
      {MCIM_WRONG_STATE, 12, "the new MCIM is not pending"},
      {MCIM_ORDER_PENDING, 5, "no order yet"},
      {MCIM_NOT_PARTY, 4, "not a party"},
      {MCIM_TOKEN_EXPIRED, 0, "token expired"},
  };
  for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
    json_t *j = mcim_problem_new(p[i].cause, p[i].step, p[i].detail);
    char *text = json_dumps(j, JSON_COMPACT);
    int status = mcim_cause_http_status(p[i].cause);
    uint8_t st[2] = {(uint8_t)(status >> 8), (uint8_t)status};
    char name[64];
    snprintf(name, sizeof(name), "problem-%s", mcim_cause_name(p[i].cause));
    /* the status is the mode byte and the next one */
    seed("fuzz_problem", name, st[0], st + 1, 1, text, strlen(text));
    free(text);
    json_decref(j);
  }
  const char ok[] = "{\"state\":\"active\",\"device\":\"dev1\"}";
  seed("fuzz_problem", "ok-200", 0, "\xc8", 1, ok, strlen(ok));
  seed("fuzz_problem", "html-502", 1, "\xf6", 1, "<html>bad gateway</html>", 24);
}

/* The slot files and the document of the fixture TRE after staging and installing an MCIM. */
static void seeds_tre_state(mcim_tre_t *tre, const char *dir)
{
  mcim_jose_key_t *sho = fuzz_jose_key(FUZZ_SHO), *ka = fuzz_jose_key("tre-ka");
  char content[256], slot[64], *issuer = fuzz_data(FUZZ_SHO ".crt", NULL);
  snprintf(content, sizeof(content),
           "{\"sho\":\"%s\",\"imsi\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\"}",
           FUZZ_SHO, FUZZ_IMSI, FUZZ_MCIM_K, FUZZ_MCIM_OPC);
  char *pkg = package(sho, ka, content);
  CHECK(tre->ops->stage(tre->ctx, FUZZ_TXN, pkg, strlen(pkg), issuer));
  CHECK(tre->ops->install(tre->ctx, FUZZ_TXN, slot));
  CHECK(tre->ops->discard(tre->ctx, FUZZ_SHO, "fedcba9876543210fedcba9876543210"));
  struct fuzz_tre_files f;
  fuzz_tre_save(dir, &f);
  if (!f.buf[0] || !f.buf[1])
    exit(1);
  uint8_t n[2] = {(uint8_t)(f.len[0] >> 8), (uint8_t)f.len[0]};
  uint8_t *both = malloc(2 + f.len[0] + f.len[1]);
  memcpy(both, n, 2);
  memcpy(both + 2, f.buf[0], f.len[0]);
  memcpy(both + 2 + f.len[0], f.buf[1], f.len[1]);
  seed("fuzz_tre_state", "slots", 0, both, 2 + f.len[0] + f.len[1], NULL, 0);
  seed("fuzz_tre_state", "slot0-only", 0, n, 2, f.buf[0], f.len[0]);
  uint8_t n1[2] = {(uint8_t)(f.len[1] >> 8), (uint8_t)f.len[1]};
  seed("fuzz_tre_state", "slot1-torn-slot0", 0, n1, 2, f.buf[1], f.len[1] / 2);
  /* the document, in clear */
  json_t *st = NULL;
  CHECK(tre_begin(tre->ctx, &st));
  char *doc = json_dumps(st, JSON_COMPACT);
  tre_end(tre->ctx, st);
  seed_str("fuzz_tre_state", "document", 1, doc);
  seed_str("fuzz_tre_state", "document-fallback", 3, doc);
  /* format 1: "mcim-tre 1 <device>\n" and the blob sealed with "tre/<device>" */
  size_t klen = 0, slen = 0;
  char *key = fuzz_data("tre.key", &klen);
  mcim_storage_key_t *skey = NULL;
  CHECK(mcim_storage_key_from_bytes((const uint8_t *)key, klen, &skey));
  const char head[] = "mcim-tre 1 " FUZZ_DEVICE "\n";
  size_t cap = mcim_seal_len(strlen(doc));
  uint8_t *v1 = malloc(2 + strlen(head) + cap);
  size_t total = strlen(head) + cap;
  v1[0] = (uint8_t)(total >> 8);
  v1[1] = (uint8_t)total;
  memcpy(v1 + 2, head, strlen(head));
  CHECK(mcim_seal(skey, "tre/" FUZZ_DEVICE, (const uint8_t *)doc, strlen(doc),
                  v1 + 2 + strlen(head), cap, &slen));
  seed("fuzz_tre_state", "format1", 0, v1, 2 + strlen(head) + slen, NULL, 0);
  free(v1);
  free(key);
  mcim_storage_key_free(skey);
  free(doc);
  free(both);
  free(f.buf[0]);
  free(f.buf[1]);
  free(pkg);
  free(issuer);
  mcim_jose_key_free(sho);
  mcim_jose_key_free(ka);
}

static void seeds_config(void)
{
  /* the order of mcim_role_kinds (src/roles/kinds.c), then the agent */
  static const struct {
    const char *file;
    uint8_t which;
  } files[] = {{"ro.json", 0},  {"vno.json", 1},   {"sho-a.json", 2},
               {"pva.json", 3}, {"m2mes.json", 4}, {"agent.json", 5}};
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    char path[1024];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/../../../docs/examples/%s", MCIM_FUZZ_DATA, files[i].file);
    uint8_t *text = fuzz_read_file(path, &len);
    if (!text) {
      fprintf(stderr, "seedgen: %s missing\n", path);
      exit(1);
    }
    seed("fuzz_config", files[i].file, files[i].which, text, len, NULL, 0);
    free(text);
  }
  seed_str("fuzz_config", "agent-peers", 5,
           "{\"operators_ca\":\"ca.crt\",\"peers\":\"peers.json\",\"networks\":{\"vno\":"
           "\"https://[::1]:8441\"},\"max_resync\":\"2\"}");
}

static void seeds_aka(void)
{
  uint8_t k[16], opc[16], sqn[6] = {0, 0, 0, 0, 0, 0x40}, amf[2] = {0x80, 0};
  uint8_t rand[16] = {0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d,
                      0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35};
  uint8_t buf[32];
  mcim_milenage_t *m = NULL;
  struct mcim_aka_av av;
  CHECK(mcim_hex_decode_str(FUZZ_PCID_K, k, 16));
  CHECK(mcim_hex_decode_str(FUZZ_PCID_OPC, opc, 16));
  CHECK(mcim_milenage_new(&m));
  CHECK(mcim_milenage_set_opc(m, k, opc));
  CHECK(mcim_aka_gen_av_rand(m, rand, sqn, amf, &av));
  memcpy(buf, av.rand, 16);
  memcpy(buf + 16, av.autn, 16);
  seed("fuzz_aka", "tre-challenge", 0, buf, 32, NULL, 0);
  memcpy(buf + 16, sqn, 6);
  memcpy(buf + 22, amf, 2);
  seed("fuzz_aka", "tre-sqn", 1, buf, 24, NULL, 0);
  uint8_t old_sqn[6] = {0, 0, 0, 0, 0, 0x01}; /* behind the credential's state after 0x40 */
  memcpy(buf + 16, old_sqn, 6);
  seed("fuzz_aka", "tre-sqn-old", 1, buf, 24, NULL, 0);
  mcim_milenage_free(m);
  m = NULL;
  CHECK(mcim_hex_decode_str(FUZZ_MCIM_K, k, 16));
  CHECK(mcim_hex_decode_str(FUZZ_MCIM_OPC, opc, 16));
  CHECK(mcim_milenage_new(&m));
  CHECK(mcim_milenage_set_opc(m, k, opc));
  uint8_t sqn_ms[6] = {0, 0, 0, 0, 0x10, 0x20}, auts[14];
  CHECK(mcim_aka_gen_auts(m, rand, sqn_ms, auts));
  memcpy(buf, rand, 16);
  memcpy(buf + 16, auts, 14);
  seed("fuzz_aka", "auc-auts", 2, buf, 30, NULL, 0);
  memcpy(buf + 16, sqn_ms, 6);
  seed("fuzz_aka", "auc-sqn-ms", 3, buf, 22, NULL, 0);
  mcim_milenage_free(m);
}

static void seeds_instruction(void)
{
  mcim_jose_key_t *owner = fuzz_jose_key("owner"), *other = fuzz_jose_key(FUZZ_VNO);
  char *jwk = NULL;
  CHECK(mcim_jose_key_set_kid(other, NULL));
  CHECK(mcim_jose_key_public_jwk(other, &jwk));
  char *a = sign(owner, "mcim-instruction+jwt", "owner", FUZZ_DEVICE,
                 json_pack("{s:s,s:s,s:s}", "procedure", "change", "via", "old-sho", "sho",
                           "sho-b"));
  char *b = sign(owner, "mcim-instruction+jwt", "owner", FUZZ_DEVICE,
                 json_pack("{s:s,s:s}", "procedure", "initial", "sho", FUZZ_SHO));
  char *h = sign(owner, "mcim-handover+jwt", "owner", FUZZ_DEVICE,
                 json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  jws_seeds("fuzz_instruction", "change", a);
  jws_seeds("fuzz_instruction", "initial", b);
  uint8_t *hh, *hp;
  size_t hhlen, hplen;
  jws_parts(h, &hh, &hhlen, &hp, &hplen);
  seed_str("fuzz_instruction", "handover-compact", 3, h);
  seed("fuzz_instruction", "handover-payload", 4, hp, hplen, NULL, 0);
  free(hh);
  free(hp);
  free(a);
  free(b);
  free(h);
  free(jwk);
  mcim_jose_key_free(owner);
  mcim_jose_key_free(other);
}

/* The control API's bodies as `mcim device attach`, `mcim run` and `mcim device handover`
 * send them (src/lab/device.c, run.c), the statements signed with the fixture's owner key. */
static void seeds_control(void)
{
  mcim_jose_key_t *owner = fuzz_jose_key("owner"), *other = fuzz_jose_key(FUZZ_VNO);
  char *jwk = NULL;
  CHECK(mcim_jose_key_set_kid(other, NULL));
  CHECK(mcim_jose_key_public_jwk(other, &jwk));
  char *ins = sign(owner, "mcim-instruction+jwt", "owner", FUZZ_DEVICE,
                   json_pack("{s:s,s:s}", "procedure", "initial", "sho", FUZZ_SHO));
  char *chg =
      sign(owner, "mcim-instruction+jwt", "owner", FUZZ_DEVICE,
           json_pack("{s:s,s:s,s:s}", "procedure", "change", "via", "pristine", "sho", "sho-b"));
  char *ho = sign(owner, "mcim-handover+jwt", "owner", FUZZ_DEVICE,
                  json_pack("{s:o}", "new_owner_jwk", json_loads(jwk, 0, NULL)));
  const struct {
    const char *name;
    uint8_t mode;
    json_t *body;
  } b[] = {
      {"attach-vno", 0, json_pack("{s:s}", "network", FUZZ_VNO)},
      {"attach-sho-txn", 0, json_pack("{s:s,s:s}", "network", FUZZ_SHO, "txn", FUZZ_TXN)},
      {"procedure-initial", 1, json_pack("{s:s}", "instruction", ins)},
      {"procedure-change", 1, json_pack("{s:s}", "instruction", chg)},
      {"owner-handover", 2, json_pack("{s:s}", "handover", ho)},
  };
  for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
    char *text = json_dumps(b[i].body, JSON_COMPACT);
    seed_str("fuzz_control", b[i].name, b[i].mode, text);
    free(text);
    json_decref(b[i].body);
  }
  free(ins);
  free(chg);
  free(ho);
  free(jwk);
  mcim_jose_key_free(owner);
  mcim_jose_key_free(other);
}

/* One statement of the fixture TRE (`real`, as its `sign` or `pending` made it) as the seeds
 * of fuzz_device_proof: its payload with iat and exp moved to FUZZ_IAT and FUZZ_EXP (the
 * TRE signs for at most 30 days; the seeds must stay valid), signed again with the TRE's
 * attestation key under the same header. `ro`: the RO's forms (0-2), else the SHO's (3-5);
 * `bits`: the mode byte's variant bits (32: the RO relay's check of the SHO's statement). */
static void proof_seeds(const char *name, const char *real, bool ro, uint8_t bits)
{
  uint8_t *h, *p;
  size_t hlen, plen;
  char file[128];
  jws_parts(real, &h, &hlen, &p, &plen);
  json_t *claims = json_loadb((const char *)p, plen, 0, NULL);
  CHECK(claims && json_object_set_new(claims, "iat", json_integer(FUZZ_IAT)) == 0 &&
                json_object_set_new(claims, "exp", json_integer(FUZZ_EXP)) == 0
            ? MCIM_OK
            : MCIM_INTERNAL);
  char *payload = json_dumps(claims, JSON_COMPACT);
  EVP_PKEY *att = fuzz_pkey("tre-att");
  char *jws = fuzz_sign_raw(att, h, hlen, (const uint8_t *)payload, strlen(payload));
  char *pem = fuzz_data("tre-att.crt", NULL);
  uint8_t base = ro ? 0 : 3;
  if (ro) {
    json_t *body = json_pack("{s:s,s:s}", "proof", jws, "tre_cert", pem);
    char *text = json_dumps(body, JSON_COMPACT);
    snprintf(file, sizeof(file), "%s-body", name);
    seed_str("fuzz_device_proof", file, bits, text);
    free(text);
    json_decref(body);
  } else {
    snprintf(file, sizeof(file), "%s-compact", name);
    seed_str("fuzz_device_proof", file, 3 | bits, jws);
    snprintf(file, sizeof(file), "%s-compact-cert", name);
    uint8_t nul = 0;
    size_t jlen = strlen(jws), clen = strlen(pem);
    uint8_t *both = malloc(jlen + 1 + clen);
    memcpy(both, jws, jlen);
    both[jlen] = nul;
    memcpy(both + jlen + 1, pem, clen);
    seed("fuzz_device_proof", file, 3 | bits, both, jlen + 1 + clen, NULL, 0);
    free(both);
  }
  snprintf(file, sizeof(file), "%s-payload", name);
  seed("fuzz_device_proof", file, (uint8_t)((base + 1) | bits), payload, strlen(payload), NULL, 0);
  uint8_t *hp = malloc(hlen + 1 + strlen(payload));
  memcpy(hp, h, hlen);
  hp[hlen] = 0;
  memcpy(hp + hlen + 1, payload, strlen(payload));
  snprintf(file, sizeof(file), "%s-parts", name);
  seed("fuzz_device_proof", file, (uint8_t)((base + 2) | bits), hp, hlen + 1 + strlen(payload),
       NULL, 0);
  free(hp);
  free(pem);
  free(jws);
  EVP_PKEY_free(att);
  free(payload);
  json_decref(claims);
  free(h);
  free(p);
}

/* The device's statements as the agent has its TRE make them (the TRE's `sign`): the proof
 * of its own request to the RO (src/device/net.c), a discard notice to the SHO it leaves
 * (change.c), and the discard receipt the TRE queues when it discards a slot. */
static void seeds_device_proof(mcim_tre_t *tre)
{
  const char *const whats[] = {"discovery", "package"};
  for (int i = 0; i < 2; i++) {
    char *jws = NULL, name[64];
    json_t *extra = json_pack("{s:s}", "for", whats[i]);
    CHECK(tre->ops->sign(tre->ctx, MCIM_DEVICE_REQUEST_TYP, "ro", FUZZ_TXN, extra,
                         MCIM_TRE_MAX_LIFETIME, &jws));
    json_decref(extra);
    snprintf(name, sizeof(name), "request-%s", whats[i]);
    proof_seeds(name, jws, true, i ? 8 : 0);
    free(jws);
  }
  char *notice = NULL;
  json_t *st = NULL;
  json_t *extra =
      json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", FUZZ_SHO, "imsi", FUZZ_IMSI);
  /* from inside the TRE: its sign op signs a notice only in a switch the owner instructed,
   * about a slot it holds (tre_sign.c), and this TRE holds none */
  CHECK(tre_begin(tre->ctx, &st));
  CHECK(tre_sign_statement(tre->ctx, st, "mcim-notify+jwt", FUZZ_SHO, FUZZ_TXN, extra,
                           MCIM_TRE_MAX_LIFETIME, &notice));
  tre_end(tre->ctx, st);
  json_decref(extra);
  proof_seeds("notice", notice, false, 8);
  proof_seeds("notice-relayed", notice, false, 8 | 16);
  proof_seeds("notice-at-ro", notice, false, 8 | 32);
  free(notice);
  /* the receipt: what `pending` signs for a slot discarded for FUZZ_TXN (tre_slots.c:
   * typ mcim-discard+jwt to the slot's SHO, claims "slot" and "imsi") */
  char *receipt = NULL;
  st = NULL;
  extra = json_pack("{s:s,s:s}", "slot", FUZZ_SHO, "imsi", FUZZ_IMSI);
  /* from inside the TRE: its sign op refuses a discard receipt (tre_sign.c) */
  CHECK(tre_begin(tre->ctx, &st));
  CHECK(tre_sign_statement(tre->ctx, st, "mcim-discard+jwt", FUZZ_SHO, FUZZ_TXN, extra,
                           MCIM_TRE_MAX_LIFETIME, &receipt));
  tre_end(tre->ctx, st);
  json_decref(extra);
  proof_seeds("receipt", receipt, false, 0);
  proof_seeds("receipt-relayed", receipt, false, 16);
  proof_seeds("receipt-at-ro", receipt, false, 32);
  free(receipt);
}

static void seeds_http_answer(void)
{
  json_t *pj = mcim_problem_new(MCIM_WRONG_STATE, 12, "the new MCIM is not pending");
  char *problem = json_dumps(pj, JSON_COMPACT), head[256];
  snprintf(head, sizeof(head),
           "HTTP/1.1 409 Conflict\r\nContent-Type: application/problem+json\r\n"
           "Content-Length: %zu\r\n\r\n",
           strlen(problem));
  seed("fuzz_http_answer", "problem-by-length", 'H', head + 1, strlen(head) - 1, problem,
       strlen(problem));
  const char chunked[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"
                         "a\r\n{\"state\":\"\r\n8\r\nactive\"}\r\n0\r\nX-T: 1\r\n\r\n";
  seed("fuzz_http_answer", "chunked", 'H', chunked + 1, strlen(chunked) - 1, NULL, 0);
  const char cont[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Service Unavailable\r\n"
                      "Retry-After: 1\r\nConnection: keep-alive\r\n\r\n{\"cause\":"
                      "\"ORDER_PENDING\",\"detail\":\"not yet\"}";
  seed("fuzz_http_answer", "continue-then-close", 'H', cont + 1, strlen(cont) - 1, NULL, 0);
  const char empty[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
  seed("fuzz_http_answer", "no-content", 'H', empty + 1, strlen(empty) - 1, NULL, 0);
  free(problem);
  json_decref(pj);
}

/* A modeless target's seed: the bytes as they are. */
static void seed_raw(const char *target, const char *name, const char *s, size_t len)
{
  seed(target, name, (uint8_t)s[0], s + 1, len - 1, NULL, 0);
}

/* Requests as the mcim CLI's client (libcurl) sends them to an agent's control socket. */
static void seeds_http_local(void)
{
  static const char *const reqs[][2] = {
      {"status", "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
      {"by-length",
       "POST /v1/procedures HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n"
       "Content-Type: application/json\r\nContent-Length: 58\r\n\r\n"
       "{\"instruction\":\"eyJhbGciOiJFUzI1NiJ9.e30.c2ln\",\"txn\":\"00\"}"},
      {"chunked-expect",
       "POST /v1/procedures HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer eyJ0\r\n"
       "Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
       "Expect: 100-continue\r\n\r\nf;ext=1\r\n{\"instruction\":\r\n9\r\n\"abc\"}   \r\n0\r\n"
       "X-Trailer: t\r\n\r\n"},
      {"encoded-path",
       "GET /v1/admin/dev%31/trace/0123456789abcdef%30123456789abcdef?x=%zz HTTP/1.1\r\n"
       "Host: localhost\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"},
      {"http10-bare-lf", "\r\nGET /v1/status HTTP/1.0\nHost: localhost\n\n"},
      {"too-large",
       "POST /v1/procedures HTTP/1.1\r\nContent-Type: application/json\r\n"
       "Content-Length: 20000\r\n\r\n{\"instruction\":\"0000\"}"},
  };
  for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
    seed_raw("fuzz_http_local", reqs[i][0], reqs[i][1], strlen(reqs[i][1]));
}

/* Peers files as a lab writes them (src/lab/up.c: peers.json), and the same after an SHO
 * was added (the second file of the input: what a reload finds). */
static void seeds_peers(void)
{
  static const char lab[] =
      "{\n  \"vno\": \"https://127.0.0.1:56063\",\n  \"ro\": \"https://127.0.0.1:44123\",\n"
      "  \"pva\": \"https://127.0.0.1:54283\",\n  \"m2mes\": \"https://127.0.0.1:46039\",\n"
      "  \"sho-a\": \"https://127.0.0.1:39231\",\n  \"sho-b\": \"https://127.0.0.1:45715\"\n}";
  static const char later[] = "{\"sho-c\": \"https://127.0.0.1:40001/\", \"ro\": "
                              "\"http://127.0.0.1:44123\", \"pva\": 5}";
  seed_raw("fuzz_peers", "lab", lab, strlen(lab));
  char both[sizeof(lab) + sizeof(later)];
  memcpy(both, lab, sizeof(lab)); /* with its NUL: the separator */
  memcpy(both + sizeof(lab), later, sizeof(later) - 1);
  seed_raw("fuzz_peers", "lab-then-sho-added", both, sizeof(lab) + sizeof(later) - 1);
}

#ifdef MCIM_HAVE_TPM
/* A TPM2B blob's two base64url strings as the target's raw mode takes them: two bytes of the
 * public part's length, the public part, the private part. */
static void tpm_raw_seed(const char *name, const char *pub, const char *priv)
{
  uint8_t a[sizeof(TPM2B_PUBLIC)], b[sizeof(TPM2B_PRIVATE)], buf[2 + sizeof(a) + sizeof(b)];
  size_t alen = 0, blen = 0;
  CHECK(mcim_b64url_decode(pub, strlen(pub), a, sizeof(a), &alen));
  CHECK(mcim_b64url_decode(priv, strlen(priv), b, sizeof(b), &blen));
  buf[0] = (uint8_t)(alen >> 8);
  buf[1] = (uint8_t)alen;
  memcpy(buf + 2, a, alen);
  memcpy(buf + 2 + alen, b, blen);
  seed("fuzz_tpm_blob", name, 0, buf, 2 + alen + blen, NULL, 0);
}

/* The TPM TRE's blobs from a swtpm: its two keys as the state document keeps them, a K
 * wrapped for its storage primary as the SHO wraps it (mcim_tre_wrap_k), and that K after
 * TPM2_Import as a slot keeps it. Without swtpm, no seeds (said on stderr). */
static void seeds_tpm_blob(void)
{
  char detail[256], name[64];
  char *state = fuzz_tmpdir("swtpm");
  mcim_swtpm_t *sw = NULL;
  mcim_tpm_t *t = NULL;
  if (mcim_swtpm_start(state, MCIM_SWTPM_TIED, 10000, &sw, detail, sizeof(detail)) != MCIM_OK) {
    fprintf(stderr, "seedgen: no swtpm (%s): no seeds for fuzz_tpm_blob\n", detail);
    free(state);
    return;
  }
  CHECK(mcim_tpm_open(mcim_swtpm_tcti(sw), &t, detail, sizeof(detail)));
  for (int kind = MCIM_TPM_KEY_SIGN; kind <= MCIM_TPM_KEY_ECDH; kind++) {
    struct mcim_tpm_blob kb;
    char *pub = NULL, *priv = NULL;
    CHECK(mcim_tpm_key_create(t, (enum mcim_tpm_key_kind)kind, &kb));
    CHECK(mcim_tpm_blob_encode(&kb, &pub, &priv));
    snprintf(name, sizeof(name), "%s-key-doc", kind == MCIM_TPM_KEY_SIGN ? "sign" : "ecdh");
    seed("fuzz_tpm_blob", name, 1, pub, strlen(pub) + 1, priv, strlen(priv));
    snprintf(name, sizeof(name), "%s-key-raw", kind == MCIM_TPM_KEY_SIGN ? "sign" : "ecdh");
    tpm_raw_seed(name, pub, priv);
    free(pub);
    free(priv);
  }
  const TPM2B_PUBLIC *pp = NULL;
  EVP_PKEY *storage = NULL;
  json_t *k_tpm = NULL;
  static const uint8_t k[16] = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                                0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
  CHECK(mcim_tpm_primary(t, NULL, &pp));
  CHECK(mcim_p256_public_pkey(pp->publicArea.unique.ecc.x.buffer,
                              pp->publicArea.unique.ecc.y.buffer, &storage));
  CHECK(mcim_tre_wrap_k(storage, k, &k_tpm));
  char *text = json_dumps(k_tpm, JSON_COMPACT);
  seed_str("fuzz_tpm_blob", "k-tpm-json", 2, text);
  struct mcim_tpm_dup d;
  CHECK(mcim_tpm_dup_decode(k_tpm, &d));
  uint8_t raw[4 + sizeof(d.pub) + sizeof(d.dup) + sizeof(d.seed)];
  size_t off = 4, n = 0;
  const char *pub = json_string_value(json_object_get(k_tpm, "public"));
  const char *dp = json_string_value(json_object_get(k_tpm, "duplicate"));
  CHECK(mcim_b64url_decode(pub, strlen(pub), raw + off, sizeof(d.pub), &n));
  raw[0] = (uint8_t)(n >> 8);
  raw[1] = (uint8_t)n;
  off += n;
  CHECK(mcim_b64url_decode(dp, strlen(dp), raw + off, sizeof(d.dup), &n));
  raw[2] = (uint8_t)(n >> 8);
  raw[3] = (uint8_t)n;
  off += n;
  memcpy(raw + off, d.seed.secret, d.seed.size);
  off += d.seed.size;
  seed("fuzz_tpm_blob", "k-tpm-raw", 3, raw, off, NULL, 0);
  struct mcim_tpm_blob kb;
  char *kpub = NULL, *kpriv = NULL;
  CHECK(mcim_tpm_aes_import(t, &d, &kb));
  CHECK(mcim_tpm_blob_encode(&kb, &kpub, &kpriv));
  seed("fuzz_tpm_blob", "slot-k-doc", 1, kpub, strlen(kpub) + 1, kpriv, strlen(kpriv));
  free(kpub);
  free(kpriv);
  free(text);
  json_decref(k_tpm);
  EVP_PKEY_free(storage);
  mcim_tpm_free(t);
  mcim_swtpm_free(sw);
  free(state);
}

/* fuzz_tpm_response: the answers of a throw-away swtpm to the target's own operations, through
 * its recording TCTI (the target's file is included for it: the operations and the TCTI are
 * the target's, so a seed replays as it was recorded). The operation bytes are the target's
 * (its OP_* table; 0x20 the second-newest object, 0x40 the newest policy session authorises,
 * 0x80 the target fixes the response HMAC). Without swtpm, no seeds (said on stderr). */
#define FUZZ_TPM_RESPONSE_RECORDER
#include "fuzz_tpm_response.c"

static void seeds_tpm_response(void)
{
  static const struct {
    const char *name;
    uint8_t ops[MAX_OPS];
    size_t n;
  } runs[] = {
      /* CreatePrimary, Create (sign), Load, Sign, ReadPublic, FlushContext x2 */
      {"sign-password", {0, 1, 4, 7, 6, 15, 15}, 7},
      /* ... Sign through a policy session: StartAuthSession, PolicyAuthValue,
       * PolicyCommandCode(Sign), PolicyOR, Sign (response HMAC), flushes */
      {"sign-policy", {0, 1, 4, 10, 11, 12, 13, 7 | 0xc0, 15 | 0x40, 15, 15}, 11},
      {"ecdh-policy", {0, 2, 4, 8, 10, 11, 12 | 0x20, 13, 8 | 0xc0, 15 | 0x40, 15, 15}, 12},
      {"aes-policy", {0, 3, 4, 9, 10, 11, 12 | 0x40, 13, 9 | 0xc0, 15 | 0x40, 15, 15}, 12},
      /* a trial session's digest */
      {"trial-digest", {10 | 0x20, 11, 12, 13, 14, 15 | 0x40}, 6},
      /* an NV counter: define, increment, read, its public area, TR closed and made again
       * from the index (its name asked afresh), undefined */
      {"nv-counter", {16, 18, 19, 20, 31, 17, 21}, 7},
      /* capabilities, PCRs, a quote and a certification by a signing key */
      {"pcr-quote-certify", {22, 22 | 0x20, 23, 24, 25, 0, 1, 4, 26, 27 | 0x20, 15, 15}, 12},
      /* a persistent key: EvictControl, a TR from its handle, ReadPublic, evicted again */
      {"persistent", {0, 29, 5, 6, 29, 31, 31, 15}, 8},
      {"policy-secret", {10, 30, 14, 15 | 0x40}, 4},
      /* an Import the TPM refuses (an error response), and nothing at the handles */
      {"errors", {0, 3, 28, 15, 5, 17}, 6},
  };
  char detail[256];
  char *state = fuzz_tmpdir("swtpm-rsp");
  mcim_swtpm_t *sw = NULL;
  if (mcim_swtpm_start(state, MCIM_SWTPM_TIED, 10000, &sw, detail, sizeof(detail)) != MCIM_OK) {
    fprintf(stderr, "seedgen: no swtpm (%s): no seeds for fuzz_tpm_response\n", detail);
    free(state);
    return;
  }
  CHECK(mcim_tss2_load(detail, sizeof(detail)));
  for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
    TSS2_TCTI_CONTEXT *tcti = NULL;
    size_t len = 0;
    if (Tss2_TctiLdr_Initialize(mcim_swtpm_tcti(sw), &tcti) != TSS2_RC_SUCCESS)
      fuzz_die("swtpm's TCTI");
    uint8_t *rec = tpm_response_record(tcti, runs[i].ops, runs[i].n, &len);
    seed("fuzz_tpm_response", runs[i].name, rec[0], rec + 1, len - 1, NULL, 0);
    free(rec);
    Tss2_TctiLdr_Finalize(&tcti);
  }
  mcim_swtpm_free(sw);
  free(state);
}
#endif

static int make_corpus(const char *dir)
{
  out_dir = dir;
  mkdir(dir, 0755);
  fuzz_quiet();
  seeds_jws();
  seeds_package();
  seeds_access_token();
  seeds_cert();
  seeds_problem();
  seeds_config();
  seeds_aka();
  seeds_instruction();
  seeds_control();
  seeds_http_answer();
  seeds_http_local();
  seeds_peers();
#ifdef MCIM_HAVE_TPM
  seeds_tpm_blob();
  seeds_tpm_response();
#endif
  char *tre_dir = fuzz_tmpdir("seedgen");
  mcim_tre_t *tre = fuzz_tre_make(tre_dir);
  seeds_quote(tre);
  seeds_device_proof(tre);
  seeds_tre_state(tre, tre_dir);
  mcim_tre_close(tre);
  free(tre_dir);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 3 && strcmp(argv[1], "data") == 0)
    return make_data(argv[2]);
  if (argc == 3 && strcmp(argv[1], "corpus") == 0)
    return make_corpus(argv[2]);
  fprintf(stderr, "usage: fuzz-seedgen data DIR | corpus DIR\n");
  return 2;
}
