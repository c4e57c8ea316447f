/* Real attestation with the TPM TRE (issue 11 point 4; include/mcim/attest.h,
 * src/tre/tpm/tre_quote.c, src/roles/pva/quote_tpm.c) against two throw-away swtpms (the
 * device's and another one), started by the group setup as test_tre_tpm_keys does (no swtpm
 * installed is a failure, not a skip).
 *
 * The launcher measures the device's images into PCR 10 with an ima-ng log (appended at an
 * agent's restart without a TPM restart), which no TPM2_PCR_Reset can clear (the TPM refuses
 * it: TPM_RC_LOCALITY), the TPM quotes the PCR over the PVA's nonce with the TRE's
 * attestation key, and the PVA's check accepts it; then each
 * refusal with its cause: a modified image (the PVA's RIMs: VALIDATION_FAILED), a quote of
 * another TPM (ATTEST_SIGNATURE), a replayed quote (ATTEST_NONCE), a log that does not replay
 * to the quoted digest (ATTEST_LOG_MISMATCH), a truncated or garbled TPMS_ATTEST or signature
 * (ATTEST_MALFORMED, and never a crash); and the mark of a TPM device's attestation
 * certificate, on which the PVA wants the TPM's evidence (ATTEST_MISSING without it). */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/attest.h"
#include "mcim/firmware.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/pva/pva.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_quote.h"
#include "swtpm_fixture.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define NONCE1 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define NONCE2 "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static char state_dir[3][64];
static char cert_model[64]; /* the model an attestation certificate names (none here) */
static mcim_swtpm_t *sw[3]; /* the device's TPM, another TPM, one just started (one test) */
static bool quiet; /* the loops over every truncation print nothing */

static int group_setup(void **state)
{
  (void)state;
  if (test_log_open(false) != 0)
    return -1;
  for (int i = 0; i < 2; i++) {
    snprintf(state_dir[i], sizeof(state_dir[i]), "/tmp/mcim-tpmquote-XXXXXX");
    if (swtpm_in_new_dir(state_dir[i], &sw[i]) != MCIM_OK)
      return -1;
  }
  return tre_pki_make();
}

static int group_teardown(void **state)
{
  (void)state;
  for (int i = 0; i < 3; i++) {
    mcim_swtpm_free(sw[i]);
    if (state_dir[i][0])
      rm_tree(state_dir[i]);
  }
  tre_pki_free();
  test_log_close();
  return 0;
}

/* A TPM device: its TRE in TPM `which`, and its attestation key's public part as the PVA
 * has it (from the certificate the M2MES issued for it). */
struct dev {
  char dir[64];
  int which; /* its TPM */
  mcim_tre_t *tre;
  mcim_jose_key_t *ak;
};

/* A TPM TRE with its restricted attestation key (AK), made as enrolment makes it (these
 * swtpms have no EK certificate: the M2MES's side is test_tre_tpm_enrol's); d->ak is its
 * public key, what the M2MES certifies and the PVA verifies quotes with. */
static void dev_make(struct dev *d, int which)
{
  json_t *enrol = NULL;
  TPM2B_PUBLIC ak_pub;
  EVP_PKEY *pk = NULL;
  snprintf(d->dir, sizeof(d->dir), "/tmp/mcim-quotedev-XXXXXX");
  assert_non_null(mkdtemp(d->dir));
  d->which = which;
  assert_int_equal(mcim_tre_tpm_create(d->dir, mcim_swtpm_tcti(sw[which]), DEVICE, MODEL,
                                       owner_jwk, ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_open(d->dir, "tpm", mcim_swtpm_tcti(sw[which]), &d->tre), MCIM_OK);
  (void)mcim_tre_tpm_enrol_begin(d->tre, &enrol);
  json_decref(enrol);
  json_t *doc = tre_state_read(d->dir, DEVICE, false);
  const char *akp = json_string_value(
      json_object_get(json_object_get(json_object_get(doc, "keys"), "quote"), "tpm_public"));
  assert_non_null(akp);
  assert_int_equal(mcim_tpm_public_decode(akp, &ak_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak_pub, &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &d->ak), MCIM_OK);
  EVP_PKEY_free(pk);
  json_decref(doc);
}

static void dev_free(struct dev *d)
{
  mcim_tre_close(d->tre);
  mcim_jose_key_free(d->ak);
  rm_tree(d->dir);
}

/* The model's images as the factory writes them; `altered` changes one of them. */
static json_t *boot_log(const char *altered)
{
  json_t *log = json_array();
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    const char *c = mcim_firmware_components[i];
    char text[128], hex[MCIM_FIRMWARE_HEX_LEN + 1];
    if (altered && strcmp(altered, c) == 0) {
      snprintf(text, sizeof(text), "mcim lab firmware %s %s v1\n# patched\n", MODEL, c);
      assert_int_equal(mcim_firmware_measure((const uint8_t *)text, strlen(text), hex), MCIM_OK);
    } else {
      assert_int_equal(mcim_firmware_rim(MODEL, c, hex), MCIM_OK);
    }
    json_array_append_new(log, json_pack("{s:s,s:s}", "component", c, "digest", hex));
  }
  return log;
}

/* The RIMs the M2MES publishes for the model: {component: [digest]}. */
static json_t *rims_of_model(void)
{
  json_t *rims = json_object();
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    char hex[MCIM_FIRMWARE_HEX_LEN + 1];
    assert_int_equal(mcim_firmware_rim(MODEL, mcim_firmware_components[i], hex), MCIM_OK);
    json_object_set_new(rims, mcim_firmware_components[i], json_pack("[s]", hex));
  }
  return rims;
}

/* The launcher's measurements (mcim_tpm_launch_measure). PCR 10 lives as long as the TPM,
 * which the tests share: its log is the TPM's (beside its state), and each device's TRE
 * folder gets a copy of it, as a device's launcher would have written it there. */
static void boot(struct dev *d, const char *altered)
{
  char tpm_log[128], dev_log[128], detail[256];
  json_t *log = boot_log(altered);
  snprintf(tpm_log, sizeof(tpm_log), "%s/%s", state_dir[d->which], MCIM_ATTEST_LOG_FILE);
  snprintf(dev_log, sizeof(dev_log), "%s/%s", d->dir, MCIM_ATTEST_LOG_FILE);
  assert_int_equal(
      mcim_tpm_launch_measure(mcim_swtpm_tcti(sw[d->which]), tpm_log, log, detail, sizeof(detail)),
      MCIM_OK);
  FILE *in = fopen(tpm_log, "rb"), *out = fopen(dev_log, "wb");
  char buf[MCIM_ATTEST_MAX_LOG];
  assert_non_null(in);
  assert_non_null(out);
  size_t n = fread(buf, 1, sizeof(buf), in);
  assert_int_equal(fwrite(buf, 1, n, out), n);
  fclose(in);
  fclose(out);
  json_decref(log);
}

/* Lines of a log text. */
static size_t lines_of(const char *text)
{
  size_t n = 0;
  for (; text && *text; text++)
    n += *text == '\n';
  return n;
}

static json_t *quote(struct dev *d, const char *nonce)
{
  json_t *ev = NULL;
  assert_int_equal(mcim_tre_tpm_quote(d->tre, nonce, &ev), MCIM_OK);
  assert_non_null(ev);
  return ev;
}

/* The PVA's check; *log (may be NULL) gets the measurements it vouches for. */
static mcim_cause_t pva_check(const struct dev *d, const json_t *ev, const char *nonce,
                              json_t **log)
{
  char err[256] = "", digest[65];
  json_t *l = NULL;
  mcim_cause_t rc =
      pva_tpm_evidence(d->ak, NULL, ev, nonce, &l, digest, cert_model, err, sizeof(err));
  if (rc != MCIM_OK && !quiet)
    print_message("  refused: %s: %s\n", mcim_cause_name(rc), err);
  if (log)
    *log = l;
  else
    json_decref(l);
  return rc;
}

/* The whole PVA decision on good evidence: the verdict's cause. */
static mcim_cause_t pva_verdict(const struct dev *d, const json_t *ev, const char *nonce)
{
  char digest[65], err[256];
  json_t *log = NULL, *rims = rims_of_model();
  mcim_cause_t rc =
      pva_tpm_evidence(d->ak, NULL, ev, nonce, &log, digest, cert_model, err, sizeof(err));
  if (rc == MCIM_OK) {
    json_t *mm = pva_match(MODEL, log, digest, rims);
    assert_non_null(mm);
    rc = json_array_size(mm) == 0 ? MCIM_OK : MCIM_VALIDATION_FAILED;
    if (rc != MCIM_OK) {
      char line[512];
      pva_mismatch_summary(mm, MODEL, line, sizeof(line));
      print_message("  verdict: %s\n", line);
    }
    json_decref(mm);
  }
  json_decref(log);
  json_decref(rims);
  return rc;
}

static void test_quote_verifies(void **state)
{
  struct dev d;
  json_t *log = NULL, *want = boot_log(NULL);
  (void)state;
  dev_make(&d, 0);
  uint64_t t0 = mcim_monotonic_ns();
  boot(&d, NULL);
  double t_boot = ms_since(t0);
  t0 = mcim_monotonic_ns();
  json_t *ev = quote(&d, NONCE1);
  double t_quote = ms_since(t0);
  t0 = mcim_monotonic_ns();
  assert_int_equal(pva_check(&d, ev, NONCE1, &log), MCIM_OK);
  /* the cost, for docs/tre-tpm.md: measured boot (reset + 3 extends), the quote (key load +
   * TPM2_Quote), the PVA's check (OpenSSL) */
  print_message("measure %.1f ms, quote %.1f ms, PVA check %.2f ms\n", t_boot, t_quote,
                ms_since(t0));
  assert_true(json_equal(log, want)); /* the measurements the TPM vouches for, in boot order */
  assert_int_equal(pva_verdict(&d, ev, NONCE1), MCIM_OK);
  /* the log is kept beside the TRE's state, in the ima-ng form */
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", d.dir, MCIM_ATTEST_LOG_FILE);
  assert_int_equal(access(path, R_OK), 0);
  const char *text = json_string_value(json_object_get(ev, "log"));
  assert_non_null(strstr(text, " ima-ng sha256:"));
  assert_int_equal(strncmp(text, "10 ", 3), 0);
  /* The agent started again without a TPM restart: PCR 10 kept its value, the launcher
   * appended its three lines to the log, which still replays to the quoted PCR. */
  size_t before = lines_of(text);
  boot(&d, NULL);
  json_decref(ev);
  json_decref(log);
  ev = quote(&d, NONCE2);
  assert_int_equal(lines_of(json_string_value(json_object_get(ev, "log"))), before + 3);
  assert_int_equal(pva_check(&d, ev, NONCE2, &log), MCIM_OK);
  assert_int_equal(pva_verdict(&d, ev, NONCE2), MCIM_OK);
  /* the software TRE has no TPM: nothing to measure into, nothing to quote */
  json_t *none = NULL;
  assert_int_equal(mcim_tre_tpm_quote(NULL, NONCE1, &none), MCIM_NOT_FOUND);
  json_decref(ev);
  json_decref(log);
  json_decref(want);
  dev_free(&d);
}

static void test_soft_tre_has_no_quote(void **state)
{
  char dir[64];
  mcim_tre_t *tre = NULL;
  json_t *ev = NULL, *log = boot_log(NULL);
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/mcim-quotesoft-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(mcim_tre_soft_create(dir, DEVICE, MODEL, owner_jwk, ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_soft_open(dir, &tre), MCIM_OK);
  assert_int_equal(mcim_tre_tpm_quote(tre, NONCE1, &ev), MCIM_NOT_FOUND);
  assert_null(ev);
  mcim_tre_close(tre);
  json_decref(log);
  rm_tree(dir);
}

/* A TPM TRE that was never enrolled has only its unrestricted JWS key, which would sign any
 * digest (a forged TPMS_ATTEST included): it makes no TPM quote, and no JWS quote either (the
 * quote of a procedure offers a slot key certified by the AK it does not have). */
static void test_unenrolled_tre_does_not_quote(void **state)
{
  char dir[64], *jws = NULL;
  mcim_tre_t *tre = NULL;
  json_t *ev = NULL;
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/mcim-quotenoak-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(mcim_tre_tpm_create(dir, mcim_swtpm_tcti(sw[0]), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_open(dir, "tpm", mcim_swtpm_tcti(sw[0]), &tre), MCIM_OK);
  assert_int_equal(mcim_tre_tpm_quote(tre, NONCE1, &ev), MCIM_TPM_ENROLMENT_REQUIRED);
  assert_null(ev);
  assert_int_equal(
      tre->ops->quote(tre->ctx, "pva", "0123456789abcdef0123456789abcdef", NONCE1, 300, &jws),
      MCIM_TPM_ENROLMENT_REQUIRED);
  assert_null(jws);
  mcim_tre_close(tre);
  rm_tree(dir);
}

/* A modified agent image: the TPM's evidence is genuine and fresh, and shows it. */
static void test_modified_image(void **state)
{
  struct dev d;
  (void)state;
  dev_make(&d, 0);
  boot(&d, "agent");
  json_t *ev = quote(&d, NONCE1);
  assert_int_equal(pva_verdict(&d, ev, NONCE1), MCIM_VALIDATION_FAILED);
  json_decref(ev);
  boot(&d, "os");
  ev = quote(&d, NONCE1);
  assert_int_equal(pva_verdict(&d, ev, NONCE1), MCIM_VALIDATION_FAILED);
  json_decref(ev);
  dev_free(&d);
}

/* Another TPM quotes the same good measurements over the right nonce: not this device's key. */
static void test_other_tpm(void **state)
{
  struct dev d, other;
  (void)state;
  dev_make(&d, 0);
  dev_make(&other, 1);
  boot(&other, NULL);
  json_t *ev = quote(&other, NONCE1);
  assert_int_equal(pva_check(&other, ev, NONCE1, NULL), MCIM_OK); /* good for its own key */
  assert_int_equal(pva_check(&d, ev, NONCE1, NULL), MCIM_ATTEST_SIGNATURE);
  json_decref(ev);
  dev_free(&other);
  dev_free(&d);
}

/* A quote over an earlier nonce, sent again for a new validation. */
static void test_replayed_quote(void **state)
{
  struct dev d;
  (void)state;
  dev_make(&d, 0);
  boot(&d, NULL);
  json_t *old = quote(&d, NONCE1);
  assert_int_equal(pva_check(&d, old, NONCE1, NULL), MCIM_OK);
  assert_int_equal(pva_check(&d, old, NONCE2, NULL), MCIM_ATTEST_NONCE);
  json_decref(old);
  dev_free(&d);
}

static json_t *with_log(const json_t *ev, const char *log)
{
  json_t *c = json_deep_copy(ev);
  json_object_set_new(c, "log", json_string(log));
  return c;
}

/* The quoted PCR is the truth; logs that do not replay to it are refused. */
static void test_log_does_not_replay(void **state)
{
  struct dev d;
  char line[256], buf[2048];
  uint8_t digest[32];
  (void)state;
  dev_make(&d, 0);
  boot(&d, "agent"); /* a modified agent, measured as it is */
  json_t *ev = quote(&d, NONCE1);
  const char *log = json_string_value(json_object_get(ev, "log"));

  /* 1. the agent's line rewritten with the RIM, consistently (its own template hash) */
  assert_int_equal(mcim_firmware_rim(MODEL, "agent", line), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(line, digest, 32), MCIM_OK);
  const char *agent = strstr(log, " agent\n");
  assert_non_null(agent);
  const char *start = agent;
  while (start > log && start[-1] != '\n')
    start--;
  assert_int_equal(mcim_attest_log_line(digest, "agent", line, sizeof(line)), MCIM_OK);
  snprintf(buf, sizeof(buf), "%.*s%s", (int)(start - log), log, line);
  json_t *forged = with_log(ev, buf);
  assert_int_equal(pva_check(&d, forged, NONCE1, NULL), MCIM_ATTEST_LOG_MISMATCH);
  json_decref(forged);

  /* 2. the agent's line dropped */
  snprintf(buf, sizeof(buf), "%.*s", (int)(start - log), log);
  forged = with_log(ev, buf);
  assert_int_equal(pva_check(&d, forged, NONCE1, NULL), MCIM_ATTEST_LOG_MISMATCH);
  json_decref(forged);

  /* 3. the digest changed, the template hash left: the line contradicts itself */
  snprintf(buf, sizeof(buf), "%s", log);
  char *dg = strstr(buf, "sha256:");
  assert_non_null(dg);
  dg[7] = dg[7] == '0' ? '1' : '0';
  forged = with_log(ev, buf);
  assert_int_equal(pva_check(&d, forged, NONCE1, NULL), MCIM_ATTEST_LOG_MISMATCH);
  json_decref(forged);

  /* 4. lines swapped (the order is in the PCR too), an empty log, no final newline, garbage */
  const char *nl = strchr(log, '\n');
  snprintf(buf, sizeof(buf), "%s%.*s", nl + 1, (int)(nl + 1 - log), log);
  const char *bad[] = {buf, "", "23 00 ima-ng sha256:00 boot", "garbage\n", NULL};
  for (int i = 0; bad[i]; i++) {
    forged = with_log(ev, bad[i]);
    assert_int_equal(pva_check(&d, forged, NONCE1, NULL), MCIM_ATTEST_LOG_MISMATCH);
    json_decref(forged);
  }
  /* and the genuine log still passes the evidence check (the RIMs then refuse the agent) */
  assert_int_equal(pva_check(&d, ev, NONCE1, NULL), MCIM_OK);
  assert_int_equal(pva_verdict(&d, ev, NONCE1), MCIM_VALIDATION_FAILED);
  json_decref(ev);
  dev_free(&d);
}

static json_t *with_b64(const json_t *ev, const char *key, const uint8_t *buf, size_t len)
{
  char *s = malloc(mcim_b64url_len(len) + 1);
  assert_non_null(s);
  mcim_b64url_encode(buf, len, s);
  json_t *c = json_deep_copy(ev);
  json_object_set_new(c, key, json_string(s));
  free(s);
  return c;
}

static size_t decode(const json_t *ev, const char *key, uint8_t *buf, size_t cap)
{
  const char *s = json_string_value(json_object_get(ev, key));
  size_t len = 0;
  assert_int_equal(mcim_b64url_decode(s, strlen(s), buf, cap, &len), MCIM_OK);
  return len;
}

/* Hostile TPMS_ATTEST and TPMT_SIGNATURE: every truncation, a trailing byte, every single
 * bit flipped; each refused with a cause, none crashes (the ASan build runs this too). */
static void test_garbled_attest(void **state)
{
  struct dev d;
  uint8_t a[MCIM_ATTEST_MAX_ATTEST + 2], s[300];
  (void)state;
  dev_make(&d, 0);
  boot(&d, NULL);
  json_t *ev = quote(&d, NONCE1);
  size_t alen = decode(ev, "attest", a, sizeof(a));
  size_t slen = decode(ev, "signature", s, sizeof(s));
  assert_true(alen > 60 && alen < 200);

  quiet = true;
  for (size_t n = 0; n < alen; n++) { /* truncated */
    json_t *c = with_b64(ev, "attest", a, n);
    assert_int_equal(pva_check(&d, c, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
    json_decref(c);
  }
  a[alen] = 0; /* one byte more */
  json_t *c = with_b64(ev, "attest", a, alen + 1);
  assert_int_equal(pva_check(&d, c, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
  json_decref(c);
  for (size_t n = 0; n < slen; n++) {
    c = with_b64(ev, "signature", s, n);
    assert_int_equal(pva_check(&d, c, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
    json_decref(c);
  }
  quiet = false;
  /* magic and type: refused as not a quote, before any signature is checked */
  for (size_t i = 0; i < 6; i++) {
    a[i] ^= 0x01;
    c = with_b64(ev, "attest", a, alen);
    assert_int_equal(pva_check(&d, c, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
    json_decref(c);
    a[i] ^= 0x01;
  }
  /* any other bit: a length out of place (MALFORMED) or a signature that no longer verifies */
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, log_fp);
  for (size_t i = 0; i < alen * 8; i++) {
    a[i / 8] ^= (uint8_t)(1u << (i % 8));
    c = with_b64(ev, "attest", a, alen);
    char err[256], digest[65];
    json_t *l = NULL;
    mcim_cause_t rc =
        pva_tpm_evidence(d.ak, NULL, c, NONCE1, &l, digest, cert_model, err, sizeof(err));
    assert_true(rc == MCIM_ATTEST_MALFORMED || rc == MCIM_ATTEST_SIGNATURE);
    assert_null(l);
    json_decref(c);
    a[i / 8] ^= (uint8_t)(1u << (i % 8));
  }
  for (size_t i = 0; i < slen * 8; i++) {
    s[i / 8] ^= (uint8_t)(1u << (i % 8));
    c = with_b64(ev, "signature", s, slen);
    char err[256], digest[65];
    json_t *l = NULL;
    mcim_cause_t rc =
        pva_tpm_evidence(d.ak, NULL, c, NONCE1, &l, digest, cert_model, err, sizeof(err));
    assert_true(rc == MCIM_ATTEST_MALFORMED || rc == MCIM_ATTEST_SIGNATURE);
    json_decref(c);
    s[i / 8] ^= (uint8_t)(1u << (i % 8));
  }
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, log_fp);
  /* the evidence object itself: not base64url, a missing or an unknown member, wrong types */
  const char *bad[] = {"{\"attest\":\"***\",\"signature\":\"AA\",\"log\":\"x\\n\"}",
                       "{\"attest\":\"AA\",\"log\":\"x\\n\"}",
                       "{\"attest\":\"AA\",\"signature\":\"AA\",\"log\":\"x\\n\",\"more\":1}",
                       "{\"attest\":1,\"signature\":\"AA\",\"log\":\"x\\n\"}",
                       "{\"attest\":\"AA\",\"signature\":\"AA\",\"log\":[]}", "[]", NULL};
  for (int i = 0; bad[i]; i++) {
    json_t *j = json_loads(bad[i], 0, NULL);
    assert_non_null(j);
    assert_int_equal(pva_check(&d, j, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
    json_decref(j);
  }
  /* an attest over the size limit never reaches the parser's buffer */
  uint8_t big[MCIM_ATTEST_MAX_ATTEST + 8] = {0};
  c = with_b64(ev, "attest", big, sizeof(big));
  assert_int_equal(pva_check(&d, c, NONCE1, NULL), MCIM_ATTEST_MALFORMED);
  json_decref(c);
  assert_int_equal(pva_check(&d, ev, NONCE1, NULL), MCIM_OK);
  json_decref(ev);
  dev_free(&d);
}

/* The M2MES marks the attestation certificate of a device enrolled with a TPM storage key;
 * the PVA then refuses a quote without TPM evidence (pva.c: ATTEST_MISSING). */
static void test_tpm_required(void **state)
{
  EVP_PKEY *key = NULL;
  X509 *x = NULL;
  char *pem = NULL;
  mcim_jose_key_t *k = NULL;
  (void)state;
  assert_int_equal(mcim_jose_key_generate(&k), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(k, &key), MCIM_OK);
  for (int tpm = 0; tpm < 2; tpm++) {
    mcim_cert_request_t req = {.name = DEVICE, .usage = MCIM_CERT_TRE_ATTESTATION, .key = key,
                               .days = 30, .tpm_attestation = tpm};
    assert_int_equal(mcim_pki_issue(m2mes_ca, &req, &x), MCIM_OK);
    assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
    assert_int_equal(mcim_pki_cert_tpm_attestation(x), tpm);
    assert_int_equal(pva_tpm_required(pem), tpm);
    X509_free(x);
    free(pem);
  }
  /* only on an attestation certificate */
  mcim_cert_request_t ka = {.name = DEVICE, .usage = MCIM_CERT_TRE_KEY_AGREEMENT, .key = key,
                            .tpm_attestation = true};
  assert_int_equal(mcim_pki_issue(m2mes_ca, &ka, &x), MCIM_INVALID_ARGUMENT);
  assert_false(pva_tpm_required(NULL));
  assert_false(pva_tpm_required("not a certificate"));
  EVP_PKEY_free(key);
  mcim_jose_key_free(k);
}

/* PCR 10 cannot be reset: the TPM refuses TPM2_PCR_Reset of a static PCR at locality 0 with
 * TPM_RC_LOCALITY (0x907), so whatever talks to the TPM (a compromised agent) cannot zero it
 * and replay good values; PCR 23, the resettable one, it resets. The quote still verifies. */
static void test_pcr_reset_refused(void **state)
{
  struct dev d;
  mcim_tpm_t *t = NULL;
  uint8_t before[32], after[32];
  char detail[256];
  (void)state;
  dev_make(&d, 0);
  boot(&d, NULL);
  assert_int_equal(mcim_tpm_open(mcim_swtpm_tcti(sw[0]), &t, detail, sizeof(detail)), MCIM_OK);
  assert_int_equal(mcim_tpm_pcr_read(t, MCIM_ATTEST_PCR, before), MCIM_OK);
  assert_int_equal(mcim_tpm_pcr_reset(t, MCIM_ATTEST_PCR), MCIM_TPM_ERROR);
  print_message("  PCR %d reset: %s\n", MCIM_ATTEST_PCR, mcim_tpm_detail(t));
  assert_non_null(strstr(mcim_tpm_detail(t), "(0x00000907)")); /* TPM_RC_LOCALITY */
  assert_int_equal(mcim_tpm_pcr_read(t, MCIM_ATTEST_PCR, after), MCIM_OK);
  assert_memory_equal(before, after, 32);
  assert_int_equal(mcim_tpm_pcr_reset(t, 23), MCIM_OK);
  mcim_tpm_free(t);
  json_t *ev = quote(&d, NONCE1); /* the earlier tests' modified images are in its log */
  assert_int_equal(pva_check(&d, ev, NONCE1, NULL), MCIM_OK);
  json_decref(ev);
  dev_free(&d);
}

/* A TPM restart clears PCR 10: the launcher starts a new log then, the old one (of the last
 * power cycle) no longer replaying. Here: a TPM just started, its PCR 10 at zero, and a log
 * left from before that does not replay to it. */
static void test_new_log_after_tpm_restart(void **state)
{
  struct dev d;
  char path[128];
  (void)state;
  snprintf(state_dir[2], sizeof(state_dir[2]), "/tmp/mcim-tpmquote-XXXXXX");
  assert_int_equal(swtpm_in_new_dir(state_dir[2], &sw[2]), MCIM_OK);
  dev_make(&d, 2);
  snprintf(path, sizeof(path), "%s/%s", state_dir[2], MCIM_ATTEST_LOG_FILE);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("10 0000000000000000000000000000000000000000000000000000000000000000 ima-ng sha256:"
        "0000000000000000000000000000000000000000000000000000000000000000 boot\n",
        f);
  fclose(f);
  boot(&d, NULL);
  json_t *ev = quote(&d, NONCE1);
  assert_int_equal(lines_of(json_string_value(json_object_get(ev, "log"))), 3);
  assert_int_equal(pva_verdict(&d, ev, NONCE1), MCIM_OK);
  json_decref(ev);
  dev_free(&d);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quote_verifies),
      cmocka_unit_test(test_soft_tre_has_no_quote),
      cmocka_unit_test(test_modified_image),
      cmocka_unit_test(test_other_tpm),
      cmocka_unit_test(test_replayed_quote),
      cmocka_unit_test(test_log_does_not_replay),
      cmocka_unit_test(test_garbled_attest),
      cmocka_unit_test(test_tpm_required),
      cmocka_unit_test(test_pcr_reset_refused),
      cmocka_unit_test(test_new_log_after_tpm_restart),
      cmocka_unit_test(test_unenrolled_tre_does_not_quote),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
