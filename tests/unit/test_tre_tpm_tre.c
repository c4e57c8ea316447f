/* A TPM TRE (src/tre/tpm/tre_tpm.c; docs/tre-tpm.md) against a real TPM 2.0: a throw-away
 * swtpm started by the group setup (no swtpm installed is a failure, not a skip;
 * tests/unit/tre_tpm_keys_fixture.h).
 *
 * A TPM TRE end to end (manufacture, certificates, PCID credential, statements, quote, a
 * package staged and installed, AKA with its MCIM), a JWS it signs checked with the existing
 * verifier and a JWE or sealed package made by the existing encryptor opened through the
 * TPM, the document holding TPM blobs and no private key; then a TPM that goes away and
 * comes back with its state, a primary that is not recorded, objects left loaded by a
 * process that died, and the wrong backend. */
#define _GNU_SOURCE /* memmem, nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

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
#include "tre_tpm_keys_fixture.h"

/* ---- the TPM TRE ---------------------------------------------------------------------- */

/* Every operation of a TPM TRE that uses a key, its output checked with the existing
 * software verifiers, then the document and the files: TPM blobs, no private key. */
static void test_tre_end_to_end(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char *jws = NULL, *pem = NULL;
  mcim_statement_t *st = NULL;

  /* the certificates it keeps are the M2MES's */
  assert_int_equal(tre->ops->cert(tre->ctx, MCIM_TRE_CERT_ATTESTATION, &pem), MCIM_OK);
  free(pem);
  /* the PCID credential, opened through TPM2_ECDH_ZGen at manufacture, works */
  aka_once(tre, "pcid", f->pcid_k, f->pcid_opc, 32);

  /* a device statement signed by TPM2_Sign: the existing verifier accepts it */
  mcim_jws_verdicts_clear();
  json_t *extra = json_pack("{s:s}", "state", "installed");
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, extra, 300, &jws),
                   MCIM_OK);
  print_message("sign (one transaction: connection, primary, load, TPM2_Sign): %.2f ms\n",
                ms_since(t0));
  json_decref(extra);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .sub = DEVICE,
                         .txn = TXN_A, .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &st), MCIM_OK);
  assert_string_equal(st->kid, DEVICE);
  assert_string_equal(mcim_statement_string(st, "state"), "installed");
  mcim_statement_free(st);
  st = NULL;
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->ka_pub, &x, NULL), MCIM_JWS_BAD_SIGNATURE);
  free(jws);
  /* the quote */
  json_t *log = json_pack("[{s:s, s:s}]", "component", "boot", "digest",
                          "0000000000000000000000000000000000000000000000000000000000000001");
  assert_int_equal(mcim_tre_soft_set_measurements(tre, log), MCIM_OK);
  json_decref(log);
  assert_int_equal(tre->ops->quote(tre->ctx, "pva", TXN_A, "nonce-1", 300, &jws), MCIM_OK);
  mcim_jws_expect_t qx = {.iss = DEVICE, .aud = "pva", .typ = "mcim-quote+jwt", .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &qx, &st), MCIM_OK);
  assert_string_equal(mcim_statement_string(st, "nonce"), "nonce-1");
  /* the procedure's own KA key, a TPM object (docs/tre.md, "Crypto-shredding"), and the
   * slot key its MCIM's K is to be wrapped to, certified by the AK */
  mcim_jose_key_t *txn_ka = NULL;
  json_t *slot_offer = json_incref(json_object_get(st->payload, "tpm_slot"));
  assert_non_null(slot_offer);
  char *txn_jwk = json_dumps(json_object_get(st->payload, "ka_jwk"), JSON_COMPACT);
  assert_non_null(txn_jwk);
  assert_int_equal(mcim_jose_key_from_jwk(txn_jwk, strlen(txn_jwk), &txn_ka), MCIM_OK);
  assert_false(mcim_jose_key_has_private(txn_ka));
  free(txn_jwk);
  mcim_statement_free(st);
  st = NULL;
  free(jws);

  /* an SHO's package, sealed as the SHOs seal them: opens through the TPM, installs, and its
   * MCIM authenticates */
  EVP_PKEY *sho_pkey = NULL;
  mcim_jose_key_t *sho = NULL;
  uint8_t k[16], opc[16];
  assert_int_equal(mcim_pki_key_generate(&sho_pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(sho_pkey, &sho), MCIM_OK);
  char *sho_cert = cert_issue(ops_ca, "sho-a", MCIM_CERT_TLS, sho_pkey);
  assert_int_equal(mcim_random(k, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc, 16), MCIM_OK);
  /* sealed to the static KA key for a procedure that offered its own: refused */
  char *content = k_tpm_content(slot_offer, NULL, k, opc);
  json_decref(slot_offer);
  char *pkg = sho_package_text(sho, f->ka_pub, TXN_A, content);
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert),
                   MCIM_PACKAGE_INVALID);
  free(pkg);
  pkg = sho_package_text(sho, txn_ka, TXN_A, content);
  free(content);
  mcim_jose_key_free(txn_ka);
  t0 = mcim_monotonic_ns();
  assert_int_equal(tre->ops->stage(tre->ctx, TXN_A, pkg, strlen(pkg), sho_cert), MCIM_OK);
  print_message("stage (TPM2_ECDH_ZGen): %.2f ms\n", ms_since(t0));
  /* the procedure's key went with the package's opening: its blobs are out of the state */
  json_t *after_stage = state_read(f);
  assert_int_equal(json_array_size(json_object_get(after_stage, "txn_keys")), 0);
  json_decref(after_stage);
  char slot[64];
  assert_int_equal(tre->ops->install(tre->ctx, TXN_A, slot), MCIM_OK);
  assert_string_equal(slot, "sho-a");
  aka_once(tre, "sho-a", k, opc, 64);
  /* a package for another TRE's key does not open here */
  mcim_jose_key_t *stranger = NULL;
  assert_int_equal(mcim_jose_key_generate(&stranger), MCIM_OK);
  char *pkg2 = sho_package(sho, stranger, "fedcba9876543210fedcba9876543210", k, opc);
  assert_int_equal(tre->ops->stage(tre->ctx, "fedcba9876543210fedcba9876543210", pkg2,
                                   strlen(pkg2), sho_cert),
                   MCIM_PACKAGE_INVALID);
  free(pkg2);
  mcim_jose_key_free(stranger);

  /* a second handle, and one on a new process's view, see the same state */
  mcim_tre_t *again = NULL;
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &again), MCIM_OK);
  json_t *a = status_of(tre), *b = status_of(again);
  assert_true(json_equal(a, b));
  json_decref(a);
  json_decref(b);
  assert_int_equal(again->ops->sign(again->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, NULL), MCIM_OK);
  free(jws);
  mcim_tre_close(again);

  /* The document: TPM blobs where a software TRE has PEM private keys, and no private key
   * anywhere, neither in it nor in the files of the TRE. */
  json_t *doc = state_read(f);
  assert_string_equal(json_string_value(json_object_get(doc, "backend")), "tpm");
  const char *names[] = {"attestation", "ka"};
  for (int i = 0; i < 2; i++) {
    json_t *e = json_object_get(json_object_get(doc, "keys"), names[i]);
    assert_true(json_is_object(e));
    /* tpm_public, tpm_private and tpm_parent, nothing else */
    assert_int_equal(json_object_size(e), 3);
    /* tpm_parent: the name of the persistent storage key at its handle */
    mcim_tpm_t *t = swtpm_open(sw);
    TPM2B_NAME name;
    char name_b64[64];
    assert_int_equal(mcim_tpm_primary_persist(t, &name), MCIM_OK);
    mcim_b64url_encode(name.name, name.size, name_b64);
    assert_string_equal(json_string_value(json_object_get(e, "tpm_parent")), name_b64);
    mcim_tpm_free(t);
    struct mcim_tpm_blob blob;
    assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(e, "tpm_public")),
                                          json_string_value(json_object_get(e, "tpm_private")),
                                          &blob),
                     MCIM_OK);
    TPMA_OBJECT attrs = blob.pub.publicArea.objectAttributes;
    assert_true((attrs & MCIM_TPM_KEY_ATTRS) == MCIM_TPM_KEY_ATTRS);
    /* the private part is the TPM's wrapping (an HMAC-protected AES-CFB blob), not a scalar */
    assert_true(blob.priv.size > 32 + 32);
    EVP_PKEY *pub = NULL;
    assert_int_equal(mcim_tpm_key_public(&blob, i ? MCIM_TPM_KEY_ECDH : MCIM_TPM_KEY_SIGN, &pub),
                     MCIM_OK);
    EVP_PKEY *cert_pub = NULL;
    assert_int_equal(mcim_jose_key_public_pkey(i ? f->ka_pub : f->att_pub, &cert_pub), MCIM_OK);
    assert_int_equal(EVP_PKEY_eq(pub, cert_pub), 1);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(cert_pub);
  }
  char *text = json_dumps(doc, JSON_COMPACT);
  assert_null(strstr(text, "PRIVATE KEY"));
  assert_null(strstr(text, "\"d\""));
  free(text);
  json_decref(doc);
  for (int i = 0; i < 4; i++) {
    static const char *const files[] = {"tre.sealed", "tre.sealed.1", "tre.key", "tre.lock"};
    size_t len = 0;
    if (access(path_in(f, files[i]), F_OK) != 0)
      continue;
    uint8_t *buf = file_read(path_in(f, files[i]), &len);
    assert_null(memmem(buf, len, "PRIVATE KEY", 11));
    free(buf);
  }

  free(pkg);
  free(sho_cert);
  mcim_jose_key_free(sho);
  EVP_PKEY_free(sho_pkey);
}

/* Each backend opens only its own TREs, with the reason in the log. */
static void test_wrong_backend(void **state)
{
  struct fx *f = *state;
  char soft_dir[64];
  mcim_tre_t *t = NULL;
  long from = ftell(log_fp);

  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_CONFIG_INVALID);
  assert_null(t);
  assert_int_equal(mcim_tre_open(f->dir, "soft", NULL, &t), MCIM_CONFIG_INVALID);
  assert_int_equal(mcim_tre_open(f->dir, "hsm", NULL, &t), MCIM_CONFIG_INVALID);
  assert_int_equal(mcim_tre_tpm_open(f->dir, NULL, &t), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_tre_tpm_open(f->dir, "", &t), MCIM_INVALID_ARGUMENT);
  snprintf(soft_dir, sizeof(soft_dir), "/tmp/mcim-tresoft-XXXXXX");
  assert_non_null(mkdtemp(soft_dir));
  assert_int_equal(mcim_tre_soft_create(soft_dir, DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                        m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(soft_dir, mcim_swtpm_tcti(sw), &t), MCIM_CONFIG_INVALID);
  assert_null(t);
  assert_int_equal(mcim_tre_open(soft_dir, "soft", NULL, &t), MCIM_OK);
  assert_string_equal(t->ops->name, "soft");
  mcim_tre_close(t);
  rm_tree(soft_dir);
  fflush(log_fp);
  long end = ftell(log_fp);
  char *text = calloc(1, (size_t)(end - from) + 1);
  assert_int_equal(fseek(log_fp, from, SEEK_SET), 0);
  assert_int_equal(fread(text, 1, (size_t)(end - from), log_fp), (size_t)(end - from));
  assert_int_equal(fseek(log_fp, 0, SEEK_END), 0);
  assert_non_null(strstr(text, "is a TPM TRE (its keys are in a TPM)"));
  assert_non_null(strstr(text, "is a soft TRE, not a tpm one"));
  free(text);
}

/* The TPM goes away: key operations answer TPM_UNREACHABLE (a package is not called invalid
 * for it, and nothing changes); the TPM comes back with its state, on another port: the same
 * keys work again. */
static void test_tpm_gone_and_back(void **state)
{
  (void)state;
  char dir[64], *jws = NULL;
  mcim_tre_t *tre = NULL;
  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  mcim_swtpm_t *s = swtpm_on(dir);
  struct fx f = {0};
  snprintf(f.dir, sizeof(f.dir), "%.60s/tre", dir);
  assert_int_equal(mcim_tre_tpm_create(f.dir, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  char *jwk = NULL;
  mcim_jose_key_t *att = NULL, *ka = NULL;
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_ATTESTATION, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &att), MCIM_OK);
  free(jwk);
  assert_int_equal(mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  free(jwk);
  json_t *before = status_of(tre);

  mcim_swtpm_free(s); /* the state stays in `dir` */
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_UNREACHABLE);
  assert_null(jws);
  uint8_t k[16] = {1}, opc[16] = {2};
  char *jwe = pcid_jwe(ka, k, opc);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_TPM_UNREACHABLE);
  /* status needs no key, but the state it reads is vouched for by the TPM's counter
   * (rollback protection, tre_tpm_nv.c): refused while the TPM is away */
  json_t *after = NULL;
  assert_int_equal(tre->ops->status(tre->ctx, &after), MCIM_TPM_UNREACHABLE);
  mcim_tre_close(tre);

  /* back, with the same state, on whatever ports are free now */
  s = swtpm_on(dir);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  after = status_of(tre); /* the refused operations changed nothing */
  assert_true(json_equal(before, after));
  json_decref(after);
  /* a TPM TRE takes the PCID's K into its TPM only: enrolled, K wrapped to its PCID slot key */
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_FORBIDDEN);
  free(jwe);
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(tre, &enrol);
  json_decref(enrol);
  jwe = tre_pcid_jwe_tpm(f.dir, DEVICE, PCID1, ka, k, opc, mcim_now() + 3600);
  assert_int_equal(tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .skew = 30};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), att, &x, NULL), MCIM_OK);
  free(jws);
  free(jwe);
  json_decref(before);
  mcim_tre_close(tre);
  mcim_jose_key_free(att);
  mcim_jose_key_free(ka);
  mcim_swtpm_free(s);
  rm_tree(dir);
}

/* A key made persistent at the TRE's handle (MCIM_TPM_PRIMARY_HANDLE) under the template's
 * name, with another unique field: another key. */
static void impostor_at_handle(mcim_tpm_t *t)
{
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  const TPM2B_PUBLIC *pub = NULL;
  TPM2B_PUBLIC other = {0};
  ESYS_TR h = ESYS_TR_NONE, p = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
  const TPM2B_SENSITIVE_CREATE no_auth = {0};
  const TPM2B_DATA no_outside = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};

  assert_int_equal(mcim_tpm_primary(t, &h, &pub), MCIM_OK);
  other = *pub;
  other.publicArea.unique.ecc.x.size = 32;
  other.publicArea.unique.ecc.y.size = 32;
  memset(other.publicArea.unique.ecc.x.buffer, 'x', 32);
  memset(other.publicArea.unique.ecc.y.buffer, 'y', 32);
  assert_int_equal(Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE, &no_auth, &other, &no_outside, &no_pcrs, &p,
                                      NULL, NULL, NULL, NULL),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, p, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, MCIM_TPM_PRIMARY_HANDLE, &persistent),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_FlushContext(esys, p), TSS2_RC_SUCCESS);
  assert_int_equal(Esys_TR_Close(esys, &persistent), TSS2_RC_SUCCESS);
}

/* Remove whatever key is at the TRE's persistent handle. */
static void evict_at_handle(mcim_tpm_t *t)
{
  ESYS_CONTEXT *esys = mcim_tpm_esys(t);
  ESYS_TR tr = ESYS_TR_NONE, none = ESYS_TR_NONE;
  assert_int_equal(Esys_TR_FromTPMPublic(esys, MCIM_TPM_PRIMARY_HANDLE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, &tr),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, MCIM_TPM_PRIMARY_HANDLE, &none),
                   TSS2_RC_SUCCESS);
}

/* The storage primary is persistent, made so at manufacture, and its name recorded in the
 * state: a TRE refuses the key found at the handle unless it is the recorded one (another
 * key there, or none), and works again once the right one is back. Manufacture refuses a
 * handle held by another key rather than replacing it. Own swtpm: the test changes what is
 * at the handle. */
static void test_primary_not_recorded(void **state)
{
  (void)state;
  char dir[64], dir2[80], *jws = NULL;
  mcim_tre_t *tre = NULL;
  mcim_tpm_t *t = NULL;
  TPM2B_NAME name;
  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmtest-XXXXXX");
  assert_non_null(mkdtemp(dir));
  mcim_swtpm_t *s = swtpm_on(dir);
  struct fx f = {0};
  snprintf(f.dir, sizeof(f.dir), "%.60s/tre", dir);
  snprintf(dir2, sizeof(dir2), "%.60s/tre2", dir);
  assert_int_equal(mcim_tre_tpm_create(f.dir, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f.dir, mcim_swtpm_tcti(s), &tre), MCIM_OK);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  free(jws);
  jws = NULL;

  /* another key at the handle: refused, with the cause in the log */
  t = swtpm_open(s);
  evict_at_handle(t);
  impostor_at_handle(t);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_ERROR);
  assert_null(jws);
  assert_true(log_has("is not the storage key recorded in the TRE's state", NULL));
  /* and manufacture does not replace it */
  assert_int_equal(mcim_tre_tpm_create(dir2, mcim_swtpm_tcti(s), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_TPM_ERROR);
  assert_true(log_has("holds another key", NULL));

  /* no key at the handle: refused */
  t = swtpm_open(s);
  evict_at_handle(t);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_TPM_ERROR);
  assert_null(jws);
  assert_true(log_has("no key at persistent handle", NULL));

  /* the recorded one back (the same template under the same seed): works again */
  t = swtpm_open(s);
  assert_int_equal(mcim_tpm_primary_persist(t, &name), MCIM_OK);
  mcim_tpm_free(t);
  assert_int_equal(tre->ops->sign(tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300, &jws),
                   MCIM_OK);
  free(jws);
  mcim_tre_close(tre);
  mcim_swtpm_free(s);
  rm_tree(dir);
}

/* Objects a process left loaded when it died (swtpm has no resource manager, and 3 transient
 * slots): with two left, TPM2_Load finds no slot; with three, already the TPM2_ReadPublic of
 * the persistent storage key (read through a transient slot). Both times the TRE flushes
 * them and goes on. */
static void test_stray_objects(void **state)
{
  struct fx *f = *state;
  char *jws = NULL;
  json_t *doc = state_read(f);
  struct mcim_tpm_blob blob;
  json_t *e = json_object_get(json_object_get(doc, "keys"), "attestation");
  assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(e, "tpm_public")),
                                        json_string_value(json_object_get(e, "tpm_private")),
                                        &blob),
                   MCIM_OK);
  json_decref(doc);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .skew = 30};
  mcim_tpm_t *t = NULL;

  for (int strays = 2; strays <= 3; strays++) {
    /* load two keys and "die": close without flushing them; mcim_tpm_free flushes its
     * primary, unless ESAPI forgot it first (the third stray) */
    t = swtpm_open(sw);
    ESYS_TR primary = ESYS_TR_NONE, h = ESYS_TR_NONE;
    assert_int_equal(mcim_tpm_primary(t, &primary, NULL), MCIM_OK);
    for (int i = 0; i < 2; i++)
      assert_int_equal(Esys_Load(mcim_tpm_esys(t), primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                 ESYS_TR_NONE, &blob.priv, &blob.pub, &h),
                       TSS2_RC_SUCCESS);
    if (strays == 3)
      assert_int_equal(Esys_TR_Close(mcim_tpm_esys(t), &primary), TSS2_RC_SUCCESS);
    mcim_tpm_free(t);
    assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, NULL, 300,
                                       &jws),
                     MCIM_OK);
    assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, NULL), MCIM_OK);
    free(jws);
    jws = NULL;
    print_message("%d objects left loaded: flushed, signed\n", strays);
  }
  /* and nothing is left behind by the TRE itself */
  t = swtpm_open(sw);
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, UINT32_C(0x80000000) /* transient */,
                                      TPM2_MAX_CAP_HANDLES, &more, &cap),
                   TSS2_RC_SUCCESS);
  assert_int_equal(cap->data.handles.count, 0);
  Esys_Free(cap);
  mcim_tpm_free(t);
}

int main(void)
{
  /* ESAPI prints each refusal this test provokes on purpose; each is printed with its cause
   * instead. TSS2_LOG=all+warning shows them. */
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_tre_end_to_end, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_wrong_backend, fx_setup, fx_teardown),
      cmocka_unit_test(test_tpm_gone_and_back),
      cmocka_unit_test(test_primary_not_recorded),
      cmocka_unit_test_setup_teardown(test_stray_objects, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
