/* Slots in the TPM, in the TRE (src/tre/tpm/tre_tpm_slots.c; docs/tre-tpm.md, "Slots in the
 * TPM"): issue 11 point 7 and the TPM side of point 6, a discarded MCIM's K destroyed, against
 * a real TPM 2.0: a throw-away swtpm (none installed is a failure;
 * tests/unit/tre_tpm_slots_fixture.h). The TPM's side alone is test_tre_tpm_slots.c.
 *
 * With two pre-provisioned MCIMs from two SHOs (K wrapped by each for the TPM): the packages
 * of one SHO cannot reach the other's slot (each refusal with its cause, the other slot
 * unchanged and working), each slot works with the other's key destroyed behind the TRE's
 * back, and discard, unstage, re-provisioning and pristine destroy exactly the slot keys of
 * what they remove: a copy of the older files with the current TPM cannot use the discarded
 * K (no key at its handle; integrity under any other), and is refused whole by the rollback
 * counter anyway. An enrolled TRE offers a slot key in each procedure's quote, and takes K
 * wrapped to it only. */
#define _GNU_SOURCE /* memmem, nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <tss2/tss2_mu.h>
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
#include "roles/sho/sho.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h" /* tpm2-tss's marshalling, loaded with dlopen() */
#include "tre/tpm/tpm_slot.h"
#include "tre_tpm_slots_fixture.h"

/* ---- in the TRE: two SHOs, two pre-provisioned MCIMs ------------------------------------ */

struct sho {
  const char *name;
  mcim_jose_key_t *key;
  char *cert;
};

struct fx {
  char dir[96];
  mcim_tre_t *tre;
  mcim_jose_key_t *ka_pub;
  EVP_PKEY *storage;
  struct sho a, b;
  uint8_t k_a[16], opc_a[16], k_b[16], opc_b[16];
};

static void sho_make(struct sho *s, const char *name)
{
  EVP_PKEY *pkey = NULL;
  X509 *x = NULL;
  s->name = name;
  assert_int_equal(mcim_pki_key_generate(&pkey), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pkey, &s->key), MCIM_OK);
  mcim_cert_request_t req = {.name = name, .usage = MCIM_CERT_TLS, .key = pkey, .days = 30};
  assert_int_equal(mcim_pki_issue(ops_ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &s->cert), MCIM_OK);
  X509_free(x);
  EVP_PKEY_free(pkey);
}

static json_t *jws_payload(const char *jws);

/* A package as an SHO makes it for procedure `txn`: the TRE's quote of that txn offers its
 * key-agreement key and its slot key; K is wrapped to that slot key (mcim_tre_wrap_k_slot) and
 * the content sealed to that key-agreement key; signed by `signer` with iss `iss`, its content
 * naming `content_sho`. The quote of a txn offers the same keys each time. */
static char *package(struct fx *f, const struct sho *signer, const char *iss,
                     const char *content_sho, const char *imsi, const char *txn,
                     const uint8_t k[16], const uint8_t opc[16])
{
  char oh[33], *jws = NULL, *jwk = NULL;
  json_t *k_tpm = NULL;
  mcim_jose_key_t *ka = NULL;
  char *pkg = NULL;
  mcim_hex_encode(opc, 16, oh);
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn, "nonce", 300, &jws), MCIM_OK);
  json_t *q = jws_payload(jws);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  assert_non_null(jwk);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(q, "tpm_slot"), k, &k_tpm), MCIM_OK);
  json_t *c = json_pack("{s:s, s:s, s:o, s:s, s:s}", "sho", content_sho, "imsi", imsi, "k_tpm",
                        k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  pkg = package_seal_text(signer->key, iss, DEVICE, txn, ka, text);
  free(text);
  json_decref(c);
  json_decref(q);
  free(jwk);
  free(jws);
  mcim_jose_key_free(ka);
  return pkg;
}

static mcim_cause_t stage(struct fx *f, const char *txn, char *pkg, const char *cert)
{
  mcim_cause_t rc = f->tre->ops->stage(f->tre->ctx, txn, pkg, strlen(pkg), cert);
  free(pkg);
  return rc;
}

/* The PCID's slot key the TRE in `dir` made at enrolment: its handle, and (destroy) evicted. */
static TPM2_HANDLE pcid_slot_key(const char *dir, bool destroy)
{
  json_t *doc = tre_state_read(dir, DEVICE, false);
  json_t *rec = json_object_get(doc, "pcid_slot");
  struct mcim_tpm_slot s;
  size_t len = 0;
  bool gone = false;
  assert_non_null(rec);
  memset(&s, 0, sizeof(s));
  s.handle = (TPM2_HANDLE)json_integer_value(json_object_get(rec, "tpm_handle"));
  const char *name = json_string_value(json_object_get(rec, "tpm_parent"));
  assert_non_null(name);
  assert_int_equal(mcim_b64url_decode(name, strlen(name), s.name.name, sizeof(s.name.name), &len),
                   MCIM_OK);
  s.name.size = (UINT16)len;
  if (destroy) {
    mcim_tpm_t *t = open_tpm();
    assert_int_equal(mcim_tpm_slot_destroy(t, &s, &gone), MCIM_OK);
    assert_true(gone);
    mcim_tpm_free(t);
  }
  json_decref(doc);
  return s.handle;
}

/* A TPM device with two MCIMs: sho-a's installed (active), sho-b's pre-provisioned
 * (installed inactive), each K wrapped by its SHO for the TPM. */
static int fx_setup(void **state)
{
  struct fx *f = calloc(1, sizeof(*f));
  char *jwk = NULL, slot[64];
  mcim_jose_key_t *storage = NULL;
  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/mcim-tpmslots-tre-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(mcim_tre_tpm_create(f->dir, mcim_swtpm_tcti(sw), DEVICE, MODEL, owner_jwk,
                                       ops_ca_pem, m2mes_ca_pem),
                   MCIM_OK);
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &f->tre), MCIM_OK);
  /* the AK made as enrolment makes it (this swtpm has no EK certificate: the rest of the
   * enrolment, at the M2MES, is test_tre_tpm_enrol's): the TRE quotes and offers slot keys */
  json_t *enrol = NULL;
  (void)mcim_tre_tpm_enrol_begin(f->tre, &enrol);
  json_decref(enrol);
  pcid_handle = pcid_slot_key(f->dir, false);
  assert_int_equal(mcim_tre_soft_public_jwk(f->tre, MCIM_TRE_CERT_KA, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &f->ka_pub), MCIM_OK);
  free(jwk);
  assert_int_equal(mcim_tre_tpm_storage_jwk(f->tre, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &storage), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(storage, &f->storage), MCIM_OK);
  mcim_jose_key_free(storage);
  free(jwk);
  sho_make(&f->a, "sho-a");
  sho_make(&f->b, "sho-b");
  assert_int_equal(mcim_random(f->k_a, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->opc_a, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->k_b, 16), MCIM_OK);
  assert_int_equal(mcim_random(f->opc_b, 16), MCIM_OK);
  assert_int_equal(stage(f, TXN_A,
                         package(f, &f->a, "sho-a", "sho-a", IMSI_A, TXN_A, f->k_a, f->opc_a),
                         f->a.cert),
                   MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  assert_int_equal(stage(f, TXN_B,
                         package(f, &f->b, "sho-b", "sho-b", IMSI_B, TXN_B, f->k_b, f->opc_b),
                         f->b.cert),
                   MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  *state = f;
  return 0;
}

static int fx_teardown(void **state)
{
  struct fx *f = *state;
  json_t *removed = NULL;
  /* the TPM is shared by the group: no slot key left behind */
  if (f->tre)
    (void)f->tre->ops->pristine(f->tre->ctx, "ffffffffffffffffffffffffffffffff", &removed);
  json_decref(removed);
  mcim_tre_close(f->tre);
  if (pcid_handle)
    (void)pcid_slot_key(f->dir, true); /* and the PCID's */
  pcid_handle = 0;
  mcim_jose_key_free(f->ka_pub);
  EVP_PKEY_free(f->storage);
  mcim_jose_key_free(f->a.key);
  mcim_jose_key_free(f->b.key);
  free(f->a.cert);
  free(f->b.cert);
  rm_tree(f->dir);
  free(f);
  return 0;
}

static void file_copy(const char *from, const char *to)
{
  size_t len = 0;
  uint8_t *buf = file_read(from, &len);
  FILE *fp = fopen(to, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(buf, 1, len, fp), len);
  fclose(fp);
  assert_int_equal(chmod(to, 0600), 0);
  free(buf);
}

/* The state document in clear (the newest slot file of `dir`, opened with its tre.key). */
static json_t *state_read(const char *dir) { return tre_state_read(dir, DEVICE, false); }

/* A slot's "k_tpm" in a document: its blob and its slot key's record. */
static void slot_record(json_t *doc, const char *slot, struct mcim_tpm_blob *blob,
                        struct mcim_tpm_slot *s)
{
  json_t *slots = json_object_get(doc, "slots"), *e;
  size_t i, len = 0;
  json_t *kt = NULL;
  json_array_foreach (slots, i, e) {
    if (strcmp(json_string_value(json_object_get(e, "slot")), slot) == 0)
      kt = json_object_get(e, "k_tpm");
  }
  assert_non_null(kt);
  assert_int_equal(mcim_tpm_blob_decode(json_string_value(json_object_get(kt, "tpm_public")),
                                        json_string_value(json_object_get(kt, "tpm_private")),
                                        blob),
                   MCIM_OK);
  memset(s, 0, sizeof(*s));
  s->handle = (TPM2_HANDLE)json_integer_value(json_object_get(kt, "tpm_handle"));
  const char *name = json_string_value(json_object_get(kt, "tpm_parent"));
  const char *auth = json_string_value(json_object_get(kt, "tpm_auth"));
  assert_non_null(name);
  assert_non_null(auth);
  assert_int_equal(mcim_b64url_decode(name, strlen(name), s->name.name, sizeof(s->name.name), &len),
                   MCIM_OK);
  s->name.size = (UINT16)len;
  assert_int_equal(mcim_b64url_decode(auth, strlen(auth), s->auth, sizeof(s->auth), &len), MCIM_OK);
  assert_int_equal(len, sizeof(s->auth));
}

static char *slots_json(struct fx *f)
{
  json_t *doc = state_read(f->dir);
  char *text = json_dumps(json_object_get(doc, "slots"), JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(doc);
  return text;
}

/* One SHO's packages cannot reach the other's slot: each refusal has its cause, and the
 * other slot (its K's blob, its slot key) is unchanged and works. Each slot works with the
 * other's key gone: using one never needs the other's objects. */
static void test_two_shos(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  struct mcim_tpm_blob blob_a, blob_b;
  struct mcim_tpm_slot slot_a, slot_b;

  /* two slots, two slot keys: distinct handles, names and authValues */
  json_t *doc = state_read(f->dir);
  slot_record(doc, "sho-a", &blob_a, &slot_a);
  slot_record(doc, "sho-b", &blob_b, &slot_b);
  json_decref(doc);
  assert_int_not_equal(slot_a.handle, slot_b.handle);
  assert_memory_not_equal(slot_a.name.name, slot_b.name.name, slot_a.name.size);
  assert_memory_not_equal(slot_a.auth, slot_b.auth, sizeof(slot_a.auth));
  uint64_t t0 = mcim_monotonic_ns();
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 32);
  print_message("AKA, K under its slot key (ReadPublic, policy session, Load, two "
                "EncryptDecrypt2, commit): %.2f ms\n",
                (double)(mcim_monotonic_ns() - t0) / 1e6);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  aka_once(tre, "sho-b", f->k_b, f->opc_b, 32);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-a"), MCIM_OK);
  char *before = slots_json(f);

  /* sho-b's packages aimed at sho-a's slot, each refused with its cause */
  static const char *const txns[] = {"c0000000000000000000000000000001",
                                     "c0000000000000000000000000000002",
                                     "c0000000000000000000000000000003"};
  uint8_t k_x[16], opc_x[16];
  assert_int_equal(mcim_random(k_x, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc_x, 16), MCIM_OK);
  struct {
    const char *what, *iss, *content, *cert, *txn, *cause, *why;
  } cases[] = {
      {"content naming sho-a, signed by sho-b", "sho-b", "sho-a", f->b.cert, txns[0],
       "cause=SLOT_FORBIDDEN", "content names another SHO"},
      {"iss sho-a with sho-b's certificate", "sho-a", "sho-a", f->b.cert, txns[1],
       "cause=CLAIM_MISMATCH", "package does not open"},
      {"sho-a's certificate, sho-b's signature", "sho-a", "sho-a", f->a.cert, txns[2],
       "cause=JWS_BAD_SIGNATURE", "package does not open"},
      {"another package for sho-a's installed txn", "sho-b", "sho-b", f->b.cert, TXN_A,
       "cause=CONFLICT", "another package was already staged or installed"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    log_reset();
    char *pkg = package(f, &f->b, cases[i].iss, cases[i].content, IMSI_A, cases[i].txn, k_x, opc_x);
    assert_int_equal(stage(f, cases[i].txn, pkg, cases[i].cert), MCIM_PACKAGE_INVALID);
    if (!log_has(cases[i].cause, cases[i].why))
      fail_msg("%s: no log line with %s and \"%s\"", cases[i].what, cases[i].cause, cases[i].why);
    print_message("  refused: %s (%s)\n", cases[i].what, cases[i].cause);
    /* the procedure abandoned: the slot key its quote offered goes with its KA key */
    assert_int_equal(tre->ops->unstage(tre->ctx, cases[i].txn), MCIM_NOT_FOUND);
  }
  /* nothing moved: the slots are byte for byte as before, and only their two slot keys are
   * in the TPM (nothing imported for a refused package) */
  char *after = slots_json(f);
  assert_string_equal(before, after);
  free(after);
  mcim_tpm_t *t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 64);

  /* sho-b re-provisioning its own slot replaces its slot key alone (the old one destroyed);
   * sho-a's is untouched */
  static const char txn_b2[] = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
  char slot[64];
  assert_int_equal(stage(f, txn_b2,
                         package(f, &f->b, "sho-b", "sho-b", IMSI_B, txn_b2, f->k_b, f->opc_b),
                         f->b.cert),
                   MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 3); /* the staged one has its own already */
  assert_int_equal(tre->ops->install_inactive(tre->ctx, txn_b2, slot), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  assert_false(slot_key_in_tpm(t, slot_b.handle));
  assert_true(slot_key_in_tpm(t, slot_a.handle));
  doc = state_read(f->dir);
  struct mcim_tpm_blob blob_a2;
  struct mcim_tpm_slot slot_a2;
  slot_record(doc, "sho-a", &blob_a2, &slot_a2);
  assert_memory_equal(&slot_a2, &slot_a, sizeof(slot_a));
  assert_memory_equal(blob_a2.priv.buffer, blob_a.priv.buffer, blob_a.priv.size);
  slot_record(doc, "sho-b", &blob_b, &slot_b);
  json_decref(doc);

  /* each slot without the other's key: sho-b's destroyed behind the TRE's back (owner
   * hierarchy), sho-a still authenticates; sho-b's own AKA then fails in the TPM, with the
   * reason logged */
  ESYS_TR tr = ESYS_TR_NONE, none = ESYS_TR_NONE;
  assert_int_equal(Esys_TR_FromTPMPublic(mcim_tpm_esys(t), slot_b.handle, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, &tr),
                   TSS2_RC_SUCCESS);
  assert_int_equal(Esys_EvictControl(mcim_tpm_esys(t), ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD,
                                     ESYS_TR_NONE, ESYS_TR_NONE, slot_b.handle, &none),
                   TSS2_RC_SUCCESS);
  mcim_tpm_free(t);
  aka_once(tre, "sho-a", f->k_a, f->opc_a, 96);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  log_reset();
  uint8_t rand[16] = {0}, autn[16] = {0}, res[8], auts[14];
  assert_int_equal(tre->ops->aka(tre->ctx, "sho-b", rand, autn, res, auts), MCIM_TPM_ERROR);
  assert_true(log_has("cannot load the slot's K", "no key at persistent handle"));
  free(before);
}

/* Discard destroys the slot key first: a copy of the files from before the discard, with
 * the current TPM, cannot use the discarded K (its blob loads nowhere), and is refused whole
 * by the rollback counter. unstage and pristine destroy theirs too. */
static void test_discard_destroys(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *tre = f->tre;
  char old_dir[128], from[256], to[256];
  static const char *const files[] = {"tre.key", "tre.sealed", "tre.sealed.1"};
  struct mcim_tpm_blob blob_a, blob_b;
  struct mcim_tpm_slot slot_a, slot_b;
  mcim_tpm_aes_t *key = NULL;

  snprintf(old_dir, sizeof(old_dir), "%s/old", f->dir);
  assert_int_equal(mkdir(old_dir, 0700), 0);
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof(from), "%s/%s", f->dir, files[i]);
    snprintf(to, sizeof(to), "%s/%s", old_dir, files[i]);
    file_copy(from, to);
  }
  mcim_tpm_t *t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);

  assert_int_equal(tre->ops->discard(tre->ctx, "sho-a", "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"),
                   MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  assert_int_equal(tre->ops->activate(tre->ctx, "sho-b"), MCIM_OK);
  aka_once(tre, "sho-b", f->k_b, f->opc_b, 32);

  /* the files left behind: the old document still has sho-a's blob, slot key record and
   * authValue; with the current TPM none of it loads K */
  json_t *old = state_read(old_dir), *cur = state_read(f->dir);
  slot_record(old, "sho-a", &blob_a, &slot_a);
  slot_record(cur, "sho-b", &blob_b, &slot_b);
  json_decref(old);
  json_decref(cur);
  assert_false(slot_key_in_tpm(t, slot_a.handle));
  assert_int_equal(mcim_tpm_slot_load(t, &slot_a, &blob_a, &key), MCIM_NOT_FOUND);
  detail_has(t, "no key at persistent handle");
  assert_int_equal(mcim_tpm_slot_load(t, &slot_b, &blob_a, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_int_equal(mcim_tpm_aes_load(t, &blob_a, &key), MCIM_TPM_ERROR);
  detail_has(t, "(0x000001df)");
  assert_null(key);

  /* unstage: a staged package's slot key goes with it */
  static const char txn_c[] = "cccccccccccccccccccccccccccccccc";
  struct sho c;
  sho_make(&c, "sho-c");
  uint8_t k_c[16], opc_c[16];
  assert_int_equal(mcim_random(k_c, 16), MCIM_OK);
  assert_int_equal(mcim_random(opc_c, 16), MCIM_OK);
  assert_int_equal(
      stage(f, txn_c, package(f, &c, "sho-c", "sho-c", IMSI_A, txn_c, k_c, opc_c), c.cert),
      MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 2);
  assert_int_equal(tre->ops->unstage(tre->ctx, txn_c), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  /* a staged package dropped to make room (MCIM_TRE_MAX_STAGED) takes its slot key along */
  char txns[MCIM_TRE_MAX_STAGED + 1][33];
  for (int i = 0; i <= MCIM_TRE_MAX_STAGED; i++) {
    snprintf(txns[i], sizeof(txns[i]), "c%031d", i);
    assert_int_equal(
        stage(f, txns[i], package(f, &c, "sho-c", "sho-c", IMSI_A, txns[i], k_c, opc_c), c.cert),
        MCIM_OK);
  }
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1 + MCIM_TRE_MAX_STAGED);
  assert_int_equal(tre->ops->unstage(tre->ctx, txns[0]), MCIM_NOT_FOUND); /* the one dropped */
  for (int i = 1; i <= MCIM_TRE_MAX_STAGED; i++)
    assert_int_equal(tre->ops->unstage(tre->ctx, txns[i]), MCIM_OK);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 1);
  mcim_jose_key_free(c.key);
  free(c.cert);

  /* pristine: every slot key goes */
  json_t *removed = NULL;
  assert_int_equal(tre->ops->pristine(tre->ctx, "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0", &removed),
                   MCIM_OK);
  json_decref(removed);
  assert_int_equal(slot_keys_in_tpm(t, NULL), 0);
  mcim_tpm_free(t);

  /* the older files put back whole: the TRE refuses them (the counter), before any key */
  mcim_tre_close(tre);
  f->tre = NULL;
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof(from), "%s/%s", old_dir, files[i]);
    snprintf(to, sizeof(to), "%s/%s", f->dir, files[i]);
    file_copy(from, to);
  }
  assert_int_equal(mcim_tre_tpm_open(f->dir, mcim_swtpm_tcti(sw), &f->tre), MCIM_TRE_ROLLBACK);
  assert_null(f->tre);
}

/* The JSON payload of a compact JWS (not verified: the SHO's check is tested above). */
static json_t *jws_payload(const char *jws)
{
  const char *a = strchr(jws, '.'), *b = a ? strchr(a + 1, '.') : NULL;
  uint8_t buf[16384];
  size_t n = 0;
  assert_non_null(b);
  assert_int_equal(mcim_b64url_decode(a + 1, (size_t)(b - a - 1), buf, sizeof(buf), &n), MCIM_OK);
  json_t *j = json_loadb((const char *)buf, n, 0, NULL);
  assert_non_null(j);
  return j;
}

/* A package of `signer` (sho-a if NULL) for `txn` with K already wrapped (`k_tpm`), sealed to
 * `ka`. */
static char *package_by(struct fx *f, const struct sho *signer, const char *txn, const char *imsi,
                        json_t *k_tpm, const mcim_jose_key_t *ka)
{
  char oh[33], *pkg = NULL;
  if (!signer)
    signer = &f->a;
  mcim_hex_encode(f->opc_a, 16, oh);
  json_t *c = json_pack("{s:s, s:s, s:O, s:s, s:s}", "sho", signer->name, "imsi", imsi, "k_tpm",
                        k_tpm, "opc", oh, "amf", "8000");
  char *text = json_dumps(c, JSON_COMPACT);
  assert_non_null(text);
  pkg = package_seal_text(signer->key, signer->name, DEVICE, txn, ka, text);
  free(text);
  json_decref(c);
  return pkg;
}

/* The TRE's side of the procedure's slot key (docs/tre-tpm.md, "The procedure's slot key"),
 * once it has its restricted attestation key: its quote offers a slot key certified by that
 * key over the txn, the same at a second quote, and the SHO's check accepts it for that txn
 * only; K wrapped to the storage primary is refused (for that txn: TPM_RC_INTEGRITY under its
 * slot key; for a txn whose quote offered none: before the TPM), K wrapped to the offered key
 * imports under it (no Rewrap) and authenticates; a procedure that ends without its package
 * (unstage) destroys its slot key. */
static void test_enrolled_tre_slot_offer(void **state)
{
  struct fx *f = *state;
  mcim_tpm_t *t = NULL;
  json_t *out = NULL, *doc = NULL, *q = NULL, *k_tpm = NULL;
  TPM2B_PUBLIC ak_pub;
  EVP_PKEY *ak = NULL;
  mcim_jose_key_t *ka = NULL;
  char *jws = NULL, *jws2 = NULL, *jwk = NULL, err[256], slot[64];
  const char *txn_c = "cccccccccccccccccccccccccccccccc",
             *txn_d = "dddddddddddddddddddddddddddddddd",
             *txn_e = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", *imsi_c = "001020000000009";

  /* the AK made as enrolment makes it (the EK certificate is not needed for that part) */
  (void)mcim_tre_tpm_enrol_begin(f->tre, &out);
  json_decref(out);
  doc = state_read(f->dir);
  const char *akp = json_string_value(
      json_object_get(json_object_get(json_object_get(doc, "keys"), "quote"), "tpm_public"));
  assert_non_null(akp);
  assert_int_equal(mcim_tpm_public_decode(akp, &ak_pub), MCIM_OK);
  assert_int_equal(mcim_tpm_public_pkey(&ak_pub, &ak), MCIM_OK);
  json_decref(doc);

  t = open_tpm();
  UINT32 before = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_c, "n1", 300, &jws), MCIM_OK);
  uint64_t t1 = mcim_monotonic_ns();
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_c, "n2", 300, &jws2), MCIM_OK);
  print_message("first quote of a txn (KA key, slot key made and certified, a write): %.1f ms; "
                "the second (the same offer): %.1f ms\n",
                (double)(t1 - t0) / 1e6, (double)(mcim_monotonic_ns() - t1) / 1e6);
  q = jws_payload(jws);
  json_t *q2 = jws_payload(jws2);
  json_t *offer = json_object_get(q, "tpm_slot");
  assert_non_null(offer);
  assert_true(json_equal(offer, json_object_get(q2, "tpm_slot")));
  json_decref(q2);
  mcim_cause_t rc = mcim_tre_slot_check(ak, offer, txn_c, err, sizeof(err));
  if (rc != MCIM_OK)
    fail_msg("the SHO's check of the TRE's offer: %s: %s", mcim_cause_name(rc), err);
  assert_int_equal(mcim_tre_slot_check(ak, offer, txn_d, err, sizeof(err)),
                   MCIM_TPM_SLOT_KEY_STALE);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), before + 1);
  mcim_tpm_free(t);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);

  /* K wrapped to the storage primary, as SHOs did: refused, for this txn by the TPM under
   * the offered slot key, for a txn without an offer before the TPM */
  log_reset();
  assert_int_equal(mcim_tre_wrap_k(f->storage, f->k_a, &k_tpm), MCIM_OK);
  assert_int_equal(stage(f, txn_c, package_by(f, NULL, txn_c, imsi_c, k_tpm, ka), f->a.cert),
                   MCIM_PACKAGE_INVALID);
  assert_true(log_has("does not import under the procedure's slot key", "integrity check failed"));
  assert_int_equal(stage(f, txn_d, package_by(f, NULL, txn_d, imsi_c, k_tpm, f->ka_pub), f->a.cert),
                   MCIM_PACKAGE_INVALID);
  assert_true(log_has("offered no slot key", "FORBIDDEN"));
  json_decref(k_tpm);
  k_tpm = NULL;

  /* K wrapped as the SHO now wraps it: imported under the offered key, which is the MCIM's */
  assert_int_equal(mcim_tre_wrap_k_slot(offer, f->k_a, &k_tpm), MCIM_OK);
  log_reset();
  t0 = mcim_monotonic_ns();
  assert_int_equal(stage(f, txn_c, package_by(f, NULL, txn_c, imsi_c, k_tpm, ka), f->a.cert),
                   MCIM_OK);
  print_message("stage, K imported under the offered slot key (no Rewrap): %.1f ms\n",
                (double)(mcim_monotonic_ns() - t0) / 1e6);
  assert_true(log_has("K under the procedure's certified slot key", "no TPM2_Rewrap"));
  assert_false(log_has("TPM2_Rewrap (K to the slot key)", ""));
  assert_int_equal(f->tre->ops->install(f->tre->ctx, txn_c, slot), MCIM_OK);
  aka_once(f->tre, "sho-a", f->k_a, f->opc_a, 64);
  doc = state_read(f->dir);
  assert_null(json_object_get(doc, "txn_keys") ? json_array_get(json_object_get(doc, "txn_keys"), 0)
                                               : NULL);
  json_decref(doc);

  /* a procedure that ends without its package takes its slot key along */
  t = open_tpm();
  UINT32 installed = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  free(jws);
  jws = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_e, "n3", 300, &jws), MCIM_OK);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), installed + 1);
  mcim_tpm_free(t);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, txn_e), MCIM_NOT_FOUND);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), installed);
  mcim_tpm_free(t);

  /* a package refused after its K went under the offered key (no free slot for a new SHO)
   * leaves that key with its procedure: the same package, staged again once a slot is free,
   * imports under it */
  struct sho extra[6], z;
  char name[8], txn_x[33], imsi_x[16], *pkg_z = NULL;
  const char *txn_f = "ffffffffffffffffffffffffffff0001";
  for (int i = 0; i < 6; i++) {
    snprintf(name, sizeof(name), "sho-%c", 'c' + i);
    extra[i].name = NULL;
    sho_make(&extra[i], strdup(name));
    snprintf(txn_x, sizeof(txn_x), "0123456789abcdef0123456789abcd%02d", i);
    snprintf(imsi_x, sizeof(imsi_x), "0010400000000%02d", i);
    free(jws);
    jws = NULL;
    assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_x, "nx", 300, &jws), MCIM_OK);
    json_t *qx = jws_payload(jws), *kx = NULL;
    char *kaj = json_dumps(json_object_get(qx, "ka_jwk"), JSON_COMPACT);
    mcim_jose_key_t *kax = NULL;
    assert_int_equal(mcim_jose_key_from_jwk(kaj, strlen(kaj), &kax), MCIM_OK);
    assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(qx, "tpm_slot"), f->k_b, &kx), MCIM_OK);
    assert_int_equal(
        stage(f, txn_x, package_by(f, &extra[i], txn_x, imsi_x, kx, kax), extra[i].cert), MCIM_OK);
    assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, txn_x, slot), MCIM_OK);
    json_decref(kx);
    json_decref(qx);
    free(kaj);
    mcim_jose_key_free(kax);
  }
  sho_make(&z, "sho-z");
  free(jws);
  jws = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn_f, "nf", 300, &jws), MCIM_OK);
  json_decref(q);
  q = jws_payload(jws);
  free(jwk);
  jwk = json_dumps(json_object_get(q, "ka_jwk"), JSON_COMPACT);
  mcim_jose_key_free(ka);
  ka = NULL;
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka), MCIM_OK);
  json_decref(k_tpm);
  k_tpm = NULL;
  assert_int_equal(mcim_tre_wrap_k_slot(json_object_get(q, "tpm_slot"), f->k_b, &k_tpm), MCIM_OK);
  pkg_z = package_by(f, &z, txn_f, "001050000000001", k_tpm, ka);
  t = open_tpm();
  UINT32 offered = slot_keys_in_tpm(t, NULL);
  mcim_tpm_free(t);
  log_reset();
  assert_int_equal(stage(f, txn_f, strdup(pkg_z), z.cert), MCIM_PACKAGE_INVALID);
  assert_true(log_has("no free slot for a new SHO", "TOO_LARGE"));
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), offered);
  mcim_tpm_free(t);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-c", "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"),
                   MCIM_OK);
  assert_int_equal(stage(f, txn_f, pkg_z, z.cert), MCIM_OK);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, txn_f), MCIM_OK);
  t = open_tpm();
  assert_int_equal(slot_keys_in_tpm(t, NULL), offered - 2); /* sho-c's and sho-z's */
  mcim_tpm_free(t);
  for (int i = 0; i < 6; i++) {
    free((char *)extra[i].name);
    mcim_jose_key_free(extra[i].key);
    free(extra[i].cert);
  }
  mcim_jose_key_free(z.key);
  free(z.cert);

  json_decref(k_tpm);
  json_decref(q);
  mcim_jose_key_free(ka);
  EVP_PKEY_free(ak);
  free(jwk);
  free(jws);
  free(jws2);
}

int main(void)
{
  setenv("TSS2_LOG", "all+none", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_two_shos, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_discard_destroys, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_enrolled_tre_slot_offer, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
