/* The fixture of the TPM TRE's key tests (test_tre_tpm_keys.c, test_tre_tpm_tre.c,
 * test_tre_tpm_k.c): a throw-away swtpm for the group (none installed is a failure, not a
 * skip), TPM keys made and loaded with their cause printed on failure, and a TPM TRE
 * manufactured per case as `mcim lab device add --tre tpm` does (keys in the TPM, certified by
 * the M2MES CA, the first PCID credential's K wrapped to its slot key), with SHO packages for
 * it. Header-only (static functions), included after cmocka.h by each program once. */
#ifndef MCIM_TEST_TRE_TPM_KEYS_FIXTURE_H
#define MCIM_TEST_TRE_TPM_KEYS_FIXTURE_H

#include <ftw.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_slot.h"
#include "swtpm_fixture.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define TXN_A "0123456789abcdef0123456789abcdef"

static char state_dir[64] FIXTURE_UNUSED;
static mcim_swtpm_t *sw FIXTURE_UNUSED;

/* ---- fixtures ------------------------------------------------------------------------ */

static inline mcim_swtpm_t *swtpm_on(const char *dir)
{
  char detail[512];
  mcim_swtpm_t *s = NULL;
  mcim_cause_t rc = mcim_swtpm_start(dir, MCIM_SWTPM_TIED, 20000, &s, detail, sizeof(detail));
  if (rc != MCIM_OK)
    print_error("cannot start swtpm: %s: %s\n", mcim_cause_name(rc), detail);
  assert_int_equal(rc, MCIM_OK);
  return s;
}

static inline int group_setup(void **state)
{
  (void)state;
  if (tpm_group_setup(false, "/tmp/mcim-tpmtest-XXXXXX", state_dir, sizeof(state_dir), &sw) != 0)
    return -1;
  print_message("swtpm pid %d on %s\n", (int)mcim_swtpm_pid(sw), mcim_swtpm_tcti(sw));
  return 0;
}

static inline int group_teardown(void **state)
{
  (void)state;
  return tpm_group_teardown(state_dir, sw);
}

static inline mcim_tpm_key_t *load_key(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                                       const struct mcim_tpm_blob *blob)
{
  mcim_tpm_key_t *k = NULL;
  mcim_cause_t rc = mcim_tpm_key_load(t, kind, blob, &k);
  if (rc != MCIM_OK)
    print_error("load: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
  return k;
}

static inline void create_key(mcim_tpm_t *t, enum mcim_tpm_key_kind kind, struct mcim_tpm_blob *out)
{
  mcim_cause_t rc = mcim_tpm_key_create(t, kind, out);
  if (rc != MCIM_OK)
    print_error("create: %s: %s\n", mcim_cause_name(rc), mcim_tpm_detail(t));
  assert_int_equal(rc, MCIM_OK);
}

/* The TPM's error number of a format-one response code (parameter, handle or session n). */
static inline TSS2_RC fmt1(TSS2_RC r)
{
  return (r & TPM2_RC_FMT1) ? (r & 0xbfu) : r;
}

/* An EC public key's coordinates. */
static inline void point_of(EVP_PKEY *k, uint8_t x[32], uint8_t y[32])
{
  BIGNUM *bx = NULL, *by = NULL;
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &bx), 1);
  assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &by), 1);
  assert_int_equal(BN_bn2binpad(bx, x, 32), 32);
  assert_int_equal(BN_bn2binpad(by, y, 32), 32);
  BN_free(bx);
  BN_free(by);
}

/* ---- a TPM TRE per case ---------------------------------------------------------------- */

struct fx {
  char dir[96];
  mcim_tre_t *tre;
  mcim_jose_key_t *att_pub, *ka_pub;
  char *att_pem, *ka_pem;
  uint8_t pcid_k[16], pcid_opc[16];
};

static inline char *path_in(const struct fx *f, const char *name)
{
  static char buf[2][256];
  static int n;
  n ^= 1;
  snprintf(buf[n], sizeof(buf[n]), "%s/%s", f->dir, name);
  return buf[n];
}

static inline char *cert_issue(const mcim_pki_ca_t *ca, const char *name, mcim_cert_usage_t usage,
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

static inline char *pcid_jwe(const mcim_jose_key_t *ka, const uint8_t k[16], const uint8_t opc[16])
{
  char kh[33], oh[33], text[256];
  char *jwe = NULL;
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}",
           PCID1, kh, oh, (long long)(mcim_now() + 3600));
  /* the existing encryptor (cjose), as the M2MES seals the first PCID credential */
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  return jwe;
}

/* Manufacture, as `mcim lab device add --tre tpm` does: the keys made in the TPM, their
 * public parts certified by the M2MES CA exactly as a software TRE's, the first PCID
 * credential sealed to the KA key. */
static inline int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *att_jwk = NULL, *ka_jwk = NULL;
  EVP_PKEY *att = NULL, *ka = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-tretpm-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  print_message("mcim_tre_tpm_create: %.1f ms\n", ms_since(t0));
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_CONFLICT);
  assert_int_equal(mcim_tre_open(f->dir, "tpm", mcim_swtpm_tcti(sw), &f->tre), MCIM_OK);
  assert_string_equal(f->tre->ops->name, "tpm");
  /* the restricted attestation key made as enrolment makes it (this swtpm has no EK
   * certificate: the M2MES's side is test_tre_tpm_enrol's): without it a TPM TRE does not
   * quote */
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(f->tre, &enrol);
  json_decref(enrol);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk), MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  assert_null(strstr(att_jwk, "\"d\""));
  assert_int_equal(mcim_jose_key_from_jwk(att_jwk, strlen(att_jwk), &f->att_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(ka_jwk, strlen(ka_jwk), &f->ka_pub), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(f->att_pub, &att), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(f->ka_pub, &ka), MCIM_OK);
  f->att_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, att);
  f->ka_pem = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_KEY_AGREEMENT, ka);
  /* each certificate must certify exactly its TPM key: the KA key under the attestation
   * usage is refused */
  char *wrong = cert_issue(m2mes_ca, DEVICE, MCIM_CERT_TRE_ATTESTATION, ka);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, wrong, f->ka_pem), MCIM_KEY_INVALID);
  free(wrong);
  assert_int_equal(mcim_tre_soft_set_certs(f->tre, f->att_pem, f->ka_pem), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_k, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->pcid_opc, 16), MCIM_OK);
  /* the PCID credential's K wrapped to the PCID's slot key enrolment made: K in clear is
   * refused (test_pcid_k_in_tpm) */
  char *jwe =
      tre_pcid_jwe_tpm(f->dir, DEVICE, PCID1, f->ka_pub, f->pcid_k, f->pcid_opc, mcim_now() + 3600);
  assert_int_equal(f->tre->ops->pcid_install(f->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  free(jwe);
  EVP_PKEY_free(att);
  EVP_PKEY_free(ka);
  free(att_jwk);
  free(ka_jwk);
  *state = f;
  return 0;
}

static inline int fx_teardown(void **state)
{
  struct fx *f = *state;
  mcim_tre_close(f->tre);
  mcim_jose_key_free(f->att_pub);
  mcim_jose_key_free(f->ka_pub);
  free(f->att_pem);
  free(f->ka_pem);
  rm_tree(f->dir);
  free(f);
  return 0;
}

/* The state document in clear: the newest slot, opened with the TRE's storage key. */
static inline json_t *state_read(const struct fx *f)
{
  return tre_state_read(f->dir, DEVICE, true);
}

static inline json_t *status_of(mcim_tre_t *tre)
{
  json_t *st = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &st), MCIM_OK);
  return st;
}

/* An SHO's package for this device: the MCIM sealed to the TRE's KA public key, signed. */
static inline char *sho_package(mcim_jose_key_t *sho, const mcim_jose_key_t *ka_pub,
                                const char *txn, const uint8_t k[16], const uint8_t opc[16])
{
  char kh[33], oh[33], text[256];
  char *pkg = NULL;
  mcim_hex_encode(k, 16, kh);
  mcim_hex_encode(opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"sho\":\"sho-a\",\"imsi\":\"001020000000007\",\"k\":\"%s\",\"opc\":\"%s\","
           "\"amf\":\"8000\"}",
           kh, oh);
  pkg = package_seal_text(sho, "sho-a", DEVICE, txn, ka_pub, text);
  return pkg;
}

/* A package whose content is `text` (any JSON the SHO might write), sealed and signed. */
static inline char *sho_package_text(mcim_jose_key_t *sho, const mcim_jose_key_t *ka_pub,
                                     const char *txn, const char *text)
{
  char *pkg = NULL;
  pkg = package_seal_text(sho, "sho-a", DEVICE, txn, ka_pub, text);
  return pkg;
}

/* The MCIM content with K wrapped for the slot key `slot` a procedure's quote offered
 * (mcim_tre_wrap_k_slot, what the SHO sends), or, with `storage`, for that key as the primary's
 * template (mcim_tre_wrap_k: what SHOs sent before every TPM device was enrolled). */
static inline char *k_tpm_content(const json_t *slot, EVP_PKEY *storage, const uint8_t k[16],
                                  const uint8_t opc[16])
{
  char oh[33];
  json_t *k_tpm = NULL;
  mcim_hex_encode(opc, 16, oh);
  assert_int_equal(storage ? mcim_tre_wrap_k(storage, k, &k_tpm)
                           : mcim_tre_wrap_k_slot(slot, k, &k_tpm),
                   MCIM_OK);
  json_t *c = json_pack("{s:s, s:s, s:o, s:s, s:s}", "sho", "sho-a", "imsi", "001020000000007",
                        "k_tpm", k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  json_decref(c);
  return text;
}

#endif
