/* What the TPM TRE's unit tests share: a swtpm on a temporary folder of its own, and the
 * folder removed whole afterwards; a group's set-up and teardown around it (the log, the CAs
 * and owner key); and the helpers several of them use (a TPM connection, the log read back, the
 * state document in clear, an SHO's package, one AKA). Included after cmocka.h, with
 * _GNU_SOURCE defined (nftw). */
#ifndef MCIM_TESTS_SWTPM_FIXTURE_H
#define MCIM_TESTS_SWTPM_FIXTURE_H

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/cause.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* `dir` and everything below it; nothing when `dir` is empty (a folder never made). */
static inline void rm_tree(const char *dir)
{
  if (dir[0])
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A swtpm on a new folder made from `tmpl`, a mkdtemp template ("/tmp/name-XXXXXX") rewritten
 * in place. MCIM_OK, or the cause printed and the folder removed. */
static inline mcim_cause_t swtpm_in_new_dir(char *tmpl, mcim_swtpm_t **sw)
{
  char detail[512];
  if (!mkdtemp(tmpl)) {
    print_error("mkdtemp %s failed\n", tmpl);
    tmpl[0] = '\0';
    return MCIM_IO_ERROR;
  }
  mcim_cause_t rc = mcim_swtpm_start(tmpl, MCIM_SWTPM_TIED, 20000, sw, detail, sizeof(detail));
  if (rc != MCIM_OK) {
    print_error("cannot start swtpm: %s: %s\n", mcim_cause_name(rc), detail);
    rm_tree(tmpl);
  }
  return rc;
}

/* The CAs and the owner key a TPM device's manufacture takes in these tests: the operators'
 * CA, the M2MES's CA (both with their PEM) and the owner's key (with its public JWK), made
 * once per group by tre_pki_make and freed by tre_pki_free. Unused where a test makes no
 * device (test_tre_tpm). */
#define FIXTURE_UNUSED __attribute__((unused))
static mcim_pki_ca_t *ops_ca FIXTURE_UNUSED, *m2mes_ca FIXTURE_UNUSED;
static char *ops_ca_pem FIXTURE_UNUSED, *m2mes_ca_pem FIXTURE_UNUSED, *owner_jwk FIXTURE_UNUSED;
static mcim_jose_key_t *owner FIXTURE_UNUSED;

static inline int tre_pki_make(void)
{
  return mcim_pki_ca_create("operators-ca", 30, &ops_ca) == MCIM_OK &&
                 mcim_pki_ca_create("m2mes-ca", 30, &m2mes_ca) == MCIM_OK &&
                 mcim_pki_cert_to_pem(ops_ca->cert, &ops_ca_pem) == MCIM_OK &&
                 mcim_pki_cert_to_pem(m2mes_ca->cert, &m2mes_ca_pem) == MCIM_OK &&
                 mcim_jose_key_generate(&owner) == MCIM_OK &&
                 mcim_jose_key_public_jwk(owner, &owner_jwk) == MCIM_OK
             ? 0
             : -1;
}

static inline void tre_pki_free(void)
{
  mcim_pki_ca_free(ops_ca);
  mcim_pki_ca_free(m2mes_ca);
  free(ops_ca_pem);
  free(m2mes_ca_pem);
  free(owner_jwk);
  mcim_jose_key_free(owner);
}

/* The library's log, at DEBUG, during a group: a temporary file (some tests read it back), or
 * stderr when `may_echo` and MCIM_TEST_LOG is set. test_log_close() puts it back. */
static FILE *log_fp FIXTURE_UNUSED;

static inline int test_log_open(bool may_echo)
{
  log_fp = may_echo && getenv("MCIM_TEST_LOG") ? stderr : tmpfile();
  if (!log_fp)
    return -1;
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, log_fp);
  return 0;
}

static inline void test_log_close(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL);
  if (log_fp != stderr)
    fclose(log_fp);
}

/* A group of tests on one swtpm: the log (test_log_open), a swtpm on a new folder made from
 * `tmpl` into `dir` (`dir_size` bytes), and the CAs and owner key (tre_pki_make). */
static inline int tpm_group_setup(bool may_echo, const char *tmpl, char *dir, size_t dir_size,
                                  mcim_swtpm_t **sw)
{
  if (test_log_open(may_echo) != 0)
    return -1;
  snprintf(dir, dir_size, "%s", tmpl);
  if (swtpm_in_new_dir(dir, sw) != MCIM_OK)
    return -1;
  return tre_pki_make();
}

static inline int tpm_group_teardown(char *dir, mcim_swtpm_t *sw)
{
  mcim_swtpm_free(sw);
  rm_tree(dir);
  tre_pki_free();
  test_log_close();
  return 0;
}

/* A group's `state_dir` and `sw`, and its group_setup and group_teardown on them
 * (tpm_group_setup with `may_echo` and `tmpl`, tpm_group_teardown). */
#define SWTPM_GROUP(may_echo, tmpl)                                                                \
  static char state_dir[64];                                                                       \
  static mcim_swtpm_t *sw;                                                                         \
  static int group_setup(void **state)                                                             \
  {                                                                                                \
    (void)state;                                                                                   \
    return tpm_group_setup(may_echo, tmpl, state_dir, sizeof(state_dir), &sw);                     \
  }                                                                                                \
  static int group_teardown(void **state)                                                          \
  {                                                                                                \
    (void)state;                                                                                   \
    return tpm_group_teardown(state_dir, sw);                                                      \
  }

/* A TPM connection to `s`, or the test fails with the cause. */
static inline mcim_tpm_t *swtpm_open(const mcim_swtpm_t *s)
{
  char detail[256];
  mcim_tpm_t *t = NULL;
  mcim_cause_t rc = mcim_tpm_open(mcim_swtpm_tcti(s), &t, detail, sizeof(detail));
  if (rc != MCIM_OK)
    print_error("mcim_tpm_open: %s: %s\n", mcim_cause_name(rc), detail);
  assert_int_equal(rc, MCIM_OK);
  return t;
}

/* A line of the log (since the last log_reset()) with `a`, and `b` too unless NULL. */
static inline bool log_has(const char *a, const char *b)
{
  char line[2048];
  bool found = false;
  fflush(log_fp);
  rewind(log_fp);
  while (!found && fgets(line, sizeof(line), log_fp))
    found = strstr(line, a) && (!b || strstr(line, b));
  fseek(log_fp, 0, SEEK_END);
  return found;
}

static inline double ms_since(uint64_t t0) { return (double)(mcim_monotonic_ns() - t0) / 1e6; }

/* A file's bytes (at most 1 MiB), malloc'd. */
static inline uint8_t *file_read(const char *path, size_t *len)
{
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  uint8_t *buf = malloc(1 << 20);
  assert_non_null(buf);
  *len = fread(buf, 1, 1 << 20, fp);
  fclose(fp);
  return buf;
}

/* The state document in clear of `device`'s TRE in `dir`: the newest slot file, opened with its
 * tre.key. With `each_opens`, every slot file there must open; without, one that does not is
 * passed over. */
static inline json_t *tre_state_read(const char *dir, const char *device, bool each_opens)
{
  char p[256];
  mcim_storage_key_t *key = NULL;
  json_t *best = NULL;
  unsigned long long best_gen = 0;
  snprintf(p, sizeof(p), "%s/tre.key", dir);
  assert_int_equal(mcim_storage_key_load_file(p, &key), MCIM_OK);
  for (int i = 0; i < 2; i++) {
    size_t len = 0, n = 0, plain_len = 0;
    unsigned long long gen = 0;
    int used = 0;
    char context[96], head[128], prefix[96];
    snprintf(p, sizeof(p), "%s/%s", dir, i ? "tre.sealed.1" : "tre.sealed");
    if (access(p, F_OK) != 0)
      continue;
    uint8_t *buf = file_read(p, &len);
    memcpy(head, buf, sizeof(head) - 1);
    head[sizeof(head) - 1] = '\0';
    int plen = snprintf(prefix, sizeof(prefix), "mcim-tre 2 %s ", device);
    assert_int_equal(strncmp(head, prefix, (size_t)plen), 0);
    assert_int_equal(sscanf(head + plen, "%llu %zu\n%n", &gen, &n, &used), 2);
    used += plen;
    snprintf(context, sizeof(context), "tre/%s/%llu", device, gen);
    uint8_t *plain = malloc(len);
    assert_non_null(plain);
    mcim_cause_t rc = mcim_unseal(key, context, buf + used, n, plain, len, &plain_len);
    if (each_opens)
      assert_int_equal(rc, MCIM_OK);
    if (rc == MCIM_OK) {
      json_t *st = json_loadb((const char *)plain, plain_len, 0, NULL);
      assert_non_null(st);
      if (!best || gen > best_gen) {
        json_decref(best);
        best = st;
        best_gen = gen;
      } else {
        json_decref(st);
      }
    }
    free(plain);
    free(buf);
  }
  mcim_storage_key_free(key);
  assert_non_null(best);
  return best;
}

/* The first PCID credential as the M2MES seals it for a TPM device (docs/tre-tpm.md, "The PCID
 * credential's K"): K wrapped to the PCID's slot key that the TRE in `dir` made at enrolment
 * (mcim_tre_tpm_enrol_begin), as "k_tpm", never "k", in a JWE to the TRE's KA key `ka`. */
static inline char *tre_pcid_jwe_tpm(const char *dir, const char *device, const char *pcid,
                                     const mcim_jose_key_t *ka, const uint8_t k[16],
                                     const uint8_t opc[16], int64_t expires)
{
  json_t *doc = tre_state_read(dir, device, false), *k_tpm = NULL;
  char oh[33], *text = NULL, *jwe = NULL;
  assert_non_null(json_object_get(doc, "pcid_slot"));
  assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(doc, "pcid_slot"), k, &k_tpm), MCIM_OK);
  mcim_hex_encode(opc, 16, oh);
  json_t *cred = json_pack("{s:s,s:o,s:s,s:s,s:I}", "pcid", pcid, "k_tpm", k_tpm, "opc", oh, "amf",
                           "8000", "expires", (json_int_t)expires);
  assert_non_null(cred);
  text = json_dumps(cred, JSON_COMPACT);
  assert_non_null(text);
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  free(text);
  json_decref(cred);
  json_decref(doc);
  return jwe;
}

/* A package for `device` and `txn` whose content is `text`, sealed to `to` and signed by `signer`
 * with iss `iss`, as an SHO makes it. */
static inline char *package_seal_text(const mcim_jose_key_t *signer, const char *iss,
                                      const char *device, const char *txn,
                                      const mcim_jose_key_t *to, const char *text)
{
  char *pkg = NULL;
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = iss,
                     .sub = device,
                     .aud = device,
                     .typ = "mcim-package+jwt",
                     .txn = txn,
                     .iat = now,
                     .exp = now + 300};
  assert_int_equal(mcim_package_seal(signer, &c, to, (const uint8_t *)text, strlen(text), &pkg),
                   MCIM_OK);
  return pkg;
}

/* One AKA of credential `cred` against an AuC of (k, opc): RES = XRES. */
static inline void aka_once(mcim_tre_t *tre, const char *cred, const uint8_t k[16],
                            const uint8_t opc[16], uint64_t sqn)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  mcim_milenage_t *m = NULL;
  struct mcim_aka_av av;
  uint8_t sqnb[MCIM_SQN_LEN], res[8], auts[14];
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, k, opc), MCIM_OK);
  mcim_sqn_to_bytes(sqn, sqnb);
  assert_int_equal(mcim_aka_gen_av(m, NULL, sqnb, amf, &av), MCIM_OK);
  assert_int_equal(tre->ops->aka(tre->ctx, cred, av.rand, av.autn, res, auts), MCIM_OK);
  assert_memory_equal(res, av.xres, 8);
  mcim_milenage_free(m);
}

#endif
