/* The software TRE (src/tre/), its MCIM packages and slots: stage and install, the refusals
 * with their logged causes, the isolation of the SHOs' slots, per-slot keys, discard and back
 * to pristine; no secret in the status or at rest, none in the log of the whole run (the last
 * test). Fixture: tre_fixture.h, tre_sealed_fixture.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre_fixture.h"
#include "tre_sealed_fixture.h"

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

  /* A receipt says the MCIM is destroyed: the agent cannot have one signed through the
   * generic sign op (the slot still there), only the discard below queues it. */
  char *forged = NULL;
  json_t *claims = json_pack("{s:s,s:s}", "slot", "sho-a", "imsi", sho_a.imsi);
  assert_int_equal(f->tre->ops->sign(f->tre->ctx, "mcim-discard+jwt", "sho-a", TXN_B, claims,
                                     120, &forged),
                   MCIM_FORBIDDEN);
  json_decref(claims);
  assert_null(forged);
  assert_string_equal(slot_state(f, "sho-a"), "active");
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 0);
  json_decref(list);

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

/* A queued notice lives MCIM_TRE_PENDING_LIFETIME from its queuing (30 days, the network's
 * record_retention): one the RO never accepts (its SHO released the device) does not stay for
 * good. 31 such notices and a live one fill the queue: a discard still runs, evicting the
 * expired ones, and the live one stays. Before: MCIM_TOO_LARGE, no change of SHO again. */
static void test_pending_lifetime(void **state)
{
  struct fx *f = *state;
  json_t *list = NULL;
  char txn[40];
  int64_t now = mcim_now();

  provision(f, &sho_a, TXN_A);
  json_t *doc = state_read(f);
  json_t *pending = json_object_get(doc, "pending");
  assert_true(json_is_array(pending));
  for (int i = 0; i < MCIM_TRE_MAX_PENDING; i++) {
    snprintf(txn, sizeof(txn), "%032x", 0x1000 + i);
    /* the last one queued 29 days ago: alive */
    int64_t age = i == MCIM_TRE_MAX_PENDING - 1 ? 29 * 86400 : 31 * 86400;
    assert_int_equal(json_array_append_new(pending,
                                           json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:I}", "to",
                                                     "sho-b", "txn", txn, "typ",
                                                     "mcim-discard+jwt", "extra", "slot", "sho-b",
                                                     "imsi", sho_b.imsi, "created",
                                                     (json_int_t)(now - age))),
                     0);
  }
  state_write(f, doc);
  json_decref(doc);

  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  check_persisted(f);
  doc = state_read(f);
  pending = json_object_get(doc, "pending");
  assert_int_equal(json_array_size(pending), 2); /* the live one and the new one */
  snprintf(txn, sizeof(txn), "%032x", 0x1000 + MCIM_TRE_MAX_PENDING - 1);
  assert_true(tre_find2(pending, "to", "sho-b", "txn", txn) >= 0);
  assert_true(tre_find2(pending, "to", "sho-a", "txn", TXN_B) >= 0);
  json_decref(doc);
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 2);
  json_decref(list);
}

/* An expired notice is gone when the queue is read (pending, status), before any write: it
 * is never signed and handed out again, and pending_done finds nothing. */
static void test_pending_expired_read(void **state)
{
  struct fx *f = *state;
  json_t *list = NULL;
  int64_t now = mcim_now();

  json_t *doc = state_read(f);
  json_t *pending = json_object_get(doc, "pending");
  assert_true(json_is_array(pending));
  assert_int_equal(json_array_append_new(pending,
                                         json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:I}", "to",
                                                   "sho-a", "txn", TXN_C, "typ",
                                                   "mcim-discard+jwt", "extra", "slot", "sho-a",
                                                   "imsi", sho_a.imsi, "created",
                                                   (json_int_t)(now - 31 * 86400))),
                   0);
  assert_int_equal(json_array_append_new(pending,
                                         json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:I}", "to",
                                                   "sho-b", "txn", TXN_D, "typ",
                                                   "mcim-discard+jwt", "extra", "slot", "sho-b",
                                                   "imsi", sho_b.imsi, "created",
                                                   (json_int_t)(now - 3600))),
                   0);
  state_write(f, doc);
  json_decref(doc);

  json_t *st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "pending")), 1);
  json_decref(st);
  assert_int_equal(f->tre->ops->pending(f->tre->ctx, 120, &list), MCIM_OK);
  assert_int_equal(json_array_size(list), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "to")), "sho-b");
  json_decref(list);
  assert_int_equal(f->tre->ops->pending_done(f->tre->ctx, "sho-a", TXN_C), MCIM_NOT_FOUND);
  assert_int_equal(f->tre->ops->pending_done(f->tre->ctx, "sho-b", TXN_D), MCIM_OK);
  doc = state_read(f);
  assert_int_equal(json_array_size(json_object_get(doc, "pending")), 0);
  json_decref(doc);
}

/* The replay list cannot be filled for good: a package valid for 10 years would keep its jti
 * until then (512 procedures, and the list fails closed). The TRE reads nothing meant to
 * live longer than MCIM_TRE_MAX_LIFETIME: refused for its claims, its jti not kept. The
 * longest legitimate package (exp = iat + MCIM_TRE_MAX_LIFETIME, iat up to the skew ahead)
 * is taken. */
static void test_package_lifetime_cap(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  size_t i;
  json_t *e;

  struct pkg p = pkg_default(f, &sho_a, TXN_A);
  p.iat = now;
  p.exp = now + 10LL * 365 * 86400;
  p.jti = "jti-ten-years";
  char *pkg = pkg_make(&p);
  expect_refused(f, TXN_A, pkg, &sho_a, "CLAIM_MISMATCH");
  free(pkg);
  json_t *doc = state_read(f);
  json_array_foreach(json_object_get(doc, "seen"), i, e) {
    assert_string_not_equal(json_string_value(json_object_get(e, "jti")), "jti-ten-years");
    assert_true(json_integer_value(json_object_get(e, "exp")) <=
                now + 5 + MCIM_TRE_MAX_LIFETIME + 2 * MCIM_TRE_SKEW);
  }
  json_decref(doc);
  json_t *st = status_of(f->tre);
  assert_int_equal(json_array_size(json_object_get(st, "staged")), 0);
  json_decref(st);

  p = pkg_default(f, &sho_a, TXN_A);
  p.iat = now + MCIM_TRE_SKEW - 2;
  p.exp = p.iat + MCIM_TRE_MAX_LIFETIME;
  pkg = pkg_make(&p);
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  free(pkg);
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
  log_holds_no_secret();
  /* The refusals named their precise causes. */
  char *log = log_since(0);
  assert_non_null(strstr(log, "package refused"));
  free(log);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stage_install, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_stage_refused, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_isolation, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_discard, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pristine, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pending_lifetime, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_pending_expired_read, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_package_lifetime_cap, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_no_secret_out, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_slot_keys, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_has_no_secret),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
