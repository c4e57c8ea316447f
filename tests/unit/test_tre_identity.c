/* The software TRE (src/tre/), its own identity and credentials: manufacture (keys, files,
 * certificates refused for another device, key or usage), the PCID credential (AKA, resync,
 * MAC failures, expiry and renewal) seen by two handles, and its statements (quote, sign).
 * Fixture: tre_fixture.h; the other programs: test_tre_packages.c, test_tre_owner.c,
 * test_tre_shred.c, test_tre_state.c. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre_fixture.h"
#include "tre_sealed_fixture.h"

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

  /* Nothing installed for the txn: the TRE does not say it was (the DPF would take it as
   * the install, and the SHO activate a subscription the device does not hold). */
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, extra, 60, &jws),
                   MCIM_FORBIDDEN);
  assert_null(jws);
  /* a failure the device reports for any txn */
  json_t *failed = json_pack("{s:s, s:s}", "result", "PACKAGE_INVALID", "slot", "sho-a");
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, failed, 60,
                                     &jws),
                   MCIM_OK);
  free(jws);
  jws = NULL;
  json_decref(failed);
  provision(f, &sho_a, TXN_A);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, extra, 60, &jws),
                   MCIM_OK);
  mcim_jws_expect_t x = {.iss = DEVICE, .aud = "ro", .typ = "mcim-status+jwt", .sub = DEVICE,
                         .txn = TXN_A};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &stmt), MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "result"), "success");
  mcim_statement_free(stmt);
  free(jws);
  jws = NULL;
  /* another txn, or another slot than the txn's, is not that install */
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_B, extra, 60, &jws),
                   MCIM_FORBIDDEN);
  json_t *other = json_pack("{s:s, s:s}", "result", "success", "slot", "sho-b");
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_A, other, 60, &jws),
                   MCIM_CLAIM_MISMATCH);
  assert_null(jws);
  /* an MCIM pre-provisioned (install_inactive) is installed too */
  struct pkg p = pkg_default(f, &sho_b, TXN_B);
  char *pkg = pkg_make(&p), slot[64] = "";
  assert_int_equal(stage(f, TXN_B, pkg, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_B, other, 60, &jws),
                   MCIM_FORBIDDEN); /* staged is not installed */
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-status+jwt", "ro", TXN_B, other, 60, &jws),
                   MCIM_OK);
  free(jws);
  jws = NULL;
  free(pkg);
  json_decref(other);
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

/* An instruction of `by` for this device: procedure `procedure` to `sho` in `txn`. */
static char *owner_instruction(const mcim_jose_key_t *by, const char *procedure, const char *sho,
                               const char *txn)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:s, s:s}", "procedure", procedure, "sho", sho);
  mcim_claims_t c = {.iss = "subscriber", .sub = DEVICE, .aud = DEVICE, .typ = TYP_INSTR,
                     .txn = txn, .iat = now, .exp = now + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(by, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

/* The "seq" claim of the last notice notice() had signed: its place in the device's order. */
static json_int_t last_seq;
static char last_leg[8]; /* the notice's leg: "from" (sent straight) or "to" (relayed) */

static mcim_cause_t notice(mcim_tre_t *tre, const char *txn, const char *event,
                           const struct sho *s, const char *imsi)
{
  char *jws = NULL;
  /* the agent's "seq" is never the one signed: the TRE's order */
  json_t *extra = json_pack("{s:s, s:s, s:s, s:i}", "event", event, "slot", s->name, "imsi",
                            imsi ? imsi : s->imsi, "seq", 999999);
  mcim_cause_t rc = tre->ops->sign(tre->ctx, "mcim-notify+jwt", s->name, txn, extra, 60, &jws);
  assert_true(rc == MCIM_OK ? jws != NULL : jws == NULL);
  last_seq = 0;
  last_leg[0] = '\0';
  if (jws) {
    const char *p = strchr(jws, '.'), *e = p ? strchr(p + 1, '.') : NULL;
    uint8_t buf[4096];
    size_t n = 0;
    assert_non_null(e);
    assert_int_equal(mcim_b64url_decode(p + 1, (size_t)(e - p - 1), buf, sizeof(buf), &n),
                     MCIM_OK);
    json_t *claims = json_loadb((const char *)buf, n, 0, NULL);
    assert_non_null(claims);
    last_seq = json_integer_value(json_object_get(claims, "seq"));
    snprintf(last_leg, sizeof(last_leg), "%s",
             json_string_value(json_object_get(claims, "leg")) ? json_string_value(json_object_get(claims, "leg"))
                                                                 : "");
    json_decref(claims);
  }
  free(jws);
  json_decref(extra);
  return rc;
}

/* The owner instructs a switch to `sho` in `txn`, which the TRE takes (switch_record). */
static void instruct_switch(struct fx *f, const char *sho, const char *txn)
{
  char *jws = owner_instruction(owner, "switch", sho, txn);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);
}

/* Suspend and resume notices: only in a switch the owner instructed (verified by the TRE),
 * about its two slots, while the TRE holds them as the switch found them, never a resume
 * that would leave both subscriptions live; the switch and its undo pass. */
static void test_sign_notify(void **state)
{
  struct fx *f = *state;
  char slot[64] = "";
  mcim_tre_t *b = NULL;

  provision(f, &sho_a, TXN_A); /* active */
  struct pkg p = pkg_default(f, &sho_b, TXN_B);
  char *pkg = pkg_make(&p);
  assert_int_equal(stage(f, TXN_B, pkg, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  free(pkg);

  /* no owner's instruction: the agent alone cannot suspend or resume anything */
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_a, NULL), MCIM_FORBIDDEN);
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_b, NULL), MCIM_FORBIDDEN);
  /* an instruction of the owner's that is no switch, or a stranger's switch: neither */
  char *jws = owner_instruction(owner, "preload", "sho-b", TXN_D);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);
  assert_int_equal(notice(f->tre, TXN_D, "resume", &sho_b, NULL), MCIM_FORBIDDEN);
  jws = owner_instruction(stranger, "switch", "sho-b", TXN_C);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_b, NULL), MCIM_FORBIDDEN);

  instruct_switch(f, "sho-b", TXN_C);
  /* the target before the current one is suspended: two live subscriptions */
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_b, NULL), MCIM_WRONG_STATE);
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_a, "001020000000008"),
                   MCIM_CLAIM_MISMATCH);
  assert_int_equal(notice(f->tre, TXN_D, "suspend", &sho_a, NULL), MCIM_FORBIDDEN);
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_a, NULL), MCIM_OK);
  /* Each notice that moves a slot's record takes the device's next number (the SHO applies
   * them only upward, whatever road they took); a retry keeps its number. The current SHO's
   * leg is "from": the RO relays a suspend of it outside the device's chain only (relay.c). */
  assert_int_equal(last_seq, 1);
  assert_string_equal(last_leg, "from");
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 1);
  /* what the TRE vouched is in its state: another handle (a restart) goes on from it */
  assert_int_equal(mcim_tre_soft_open(f->dir, &b), MCIM_OK);
  assert_int_equal(notice(b, TXN_C, "resume", &sho_b, NULL), MCIM_OK);
  assert_int_equal(last_seq, 2);
  assert_string_equal(last_leg, "to");
  assert_int_equal(notice(b, TXN_C, "resume", &sho_b, NULL), MCIM_OK); /* a retry */
  assert_int_equal(last_seq, 2);
  /* the undo: the current one back only once the target is suspended again; the target's
   * suspend comes after its resume in the order, wherever the resume still is */
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_a, NULL), MCIM_WRONG_STATE);
  assert_int_equal(last_seq, 0);
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_b, NULL), MCIM_OK);
  assert_int_equal(last_seq, 3);
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 4);
  /* the switch again: suspend, resume, activate; then nothing more in that txn */
  assert_int_equal(notice(f->tre, TXN_C, "suspend", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 5);
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_b, NULL), MCIM_OK);
  assert_int_equal(last_seq, 6);
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(notice(b, TXN_C, "suspend", &sho_b, NULL), MCIM_WRONG_STATE);
  assert_int_equal(notice(b, TXN_C, "resume", &sho_a, NULL), MCIM_WRONG_STATE);
  assert_int_equal(notice(f->tre, TXN_C, "resume", &sho_b, NULL), MCIM_WRONG_STATE);

  /* One instruction, a bounded number of moves: the switch back to sho-a, undone, done
   * again, undone again (8 moves); a ninth is refused, as is every later one, and its
   * retries keep their number. Before the bound an agent flipped a subscription for ever. */
  instruct_switch(f, "sho-a", TXN_D);
  for (int round = 0; round < 2; round++) {
    assert_int_equal(notice(f->tre, TXN_D, "suspend", &sho_b, NULL), MCIM_OK);
    assert_int_equal(notice(f->tre, TXN_D, "resume", &sho_a, NULL), MCIM_OK);
    assert_int_equal(notice(f->tre, TXN_D, "suspend", &sho_a, NULL), MCIM_OK);
    assert_int_equal(notice(f->tre, TXN_D, "resume", &sho_b, NULL), MCIM_OK);
  }
  assert_int_equal(last_seq, 14);
  assert_int_equal(notice(f->tre, TXN_D, "resume", &sho_b, NULL), MCIM_OK); /* a retry */
  assert_int_equal(last_seq, 14);
  assert_int_equal(notice(f->tre, TXN_D, "suspend", &sho_b, NULL), MCIM_WRONG_STATE);
  assert_int_equal(notice(b, TXN_D, "suspend", &sho_b, NULL), MCIM_WRONG_STATE);

  /* A switch whose undo is still owed (E: the target's suspend signed, the current SHO's
   * resume not yet), then a later switch that moved the slots (F: its suspend): E's notices
   * are over, retries included, so an undo the agent asks again for never resumes a
   * subscription F suspended. */
  static const char txn_e[] = "00000000000000000000000000000005";
  static const char txn_f[] = "00000000000000000000000000000006";
  instruct_switch(f, "sho-a", txn_e);
  assert_int_equal(notice(f->tre, txn_e, "suspend", &sho_b, NULL), MCIM_OK);
  assert_int_equal(notice(f->tre, txn_e, "resume", &sho_a, NULL), MCIM_OK);
  assert_int_equal(notice(f->tre, txn_e, "suspend", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 17);
  /* Eight more instructions the agent could not act on (the owner retrying while E's undo is
   * owed): they make room among themselves, never by dropping E, which moved */
  for (int n = 0; n < 8; n++) {
    char txn_n[33];
    snprintf(txn_n, sizeof(txn_n), "000000000000000000000000000000%02x", 0x10 + n);
    instruct_switch(f, "sho-a", txn_n);
  }
  assert_int_equal(notice(f->tre, txn_e, "suspend", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 17);
  instruct_switch(f, "sho-a", txn_f);
  /* F instructed but not moved yet: E's undo goes on */
  assert_int_equal(notice(f->tre, txn_e, "suspend", &sho_a, NULL), MCIM_OK);
  assert_int_equal(last_seq, 17);
  assert_int_equal(notice(f->tre, txn_f, "suspend", &sho_b, NULL), MCIM_OK);
  assert_int_equal(last_seq, 18);
  assert_int_equal(notice(f->tre, txn_e, "resume", &sho_b, NULL), MCIM_WRONG_STATE);
  assert_int_equal(notice(b, txn_e, "suspend", &sho_a, NULL), MCIM_WRONG_STATE);
  mcim_tre_close(b);
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
      cmocka_unit_test_setup_teardown(test_sign_notify, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_no_secret), /* last: the whole group's log */
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
