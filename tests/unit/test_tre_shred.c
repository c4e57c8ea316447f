/* The software TRE (src/tre/), crypto-shredding (docs/tre.md, section 7): what a discarded
 * MCIM leaves behind in the files, copies of them and a kept package; a procedure's key
 * through its life; a storage key rotation cut by a crash at each of its steps. Fixture:
 * tre_fixture.h, tre_sealed_fixture.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre_fixture.h"
#include "tre_sealed_fixture.h"

/* ---- crypto-shredding: what a discarded MCIM leaves behind (docs/tre.md, section 7) ---- */

/* One slot file as a copy: its bytes, generation and sealed blob. */
struct file_copy {
  uint8_t *buf;
  size_t len, blob, blob_len;
  uint64_t gen;
};

static void copy_take(const char *path, struct file_copy *c)
{
  c->buf = file_read(path, &c->len);
  assert_true(slot_header(c->buf, c->len, &c->gen, &c->blob, &c->blob_len));
}

/* The copy opened with `key`: the unseal's cause, and the document when it opens. */
static mcim_cause_t copy_open(const struct file_copy *c, const mcim_storage_key_t *key,
                              json_t **doc)
{
  char context[96];
  size_t plain_len = 0;
  uint8_t *plain = malloc(c->len);
  assert_non_null(plain);
  gen_context(c->gen, context, sizeof(context));
  mcim_cause_t rc =
      mcim_unseal(key, context, c->buf + c->blob, c->blob_len, plain, c->len, &plain_len);
  if (doc)
    *doc = rc == MCIM_OK ? json_loadb((const char *)plain, plain_len, 0, NULL) : NULL;
  free(plain);
  return rc;
}

/* A private key (PKCS#8 PEM) of a state document, as a JOSE key. */
static mcim_jose_key_t *pem_key(const char *pem)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
  assert_non_null(bio);
  assert_int_equal(mcim_pki_key_read_bio(bio, &pk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &k), MCIM_OK);
  BIO_free(bio);
  EVP_PKEY_free(pk);
  return k;
}

/* The JWE of a package (its "jwe" claim, what the DPF stores and relays) decrypted with every
 * private key the document `doc` holds: the static ones and any procedure's. How many open it;
 * every other one must fail exactly as a wrong recipient does. */
static int jwe_openers(json_t *doc, const char *jwe)
{
  const char *key;
  json_t *v, *e;
  size_t i;
  int opened = 0;
  json_t *pems = json_array();
  json_object_foreach(json_object_get(doc, "keys"), key, v) {
    json_array_append(pems, v);
  }
  json_array_foreach(json_object_get(doc, "txn_keys"), i, e) {
    json_array_append(pems, json_object_get(e, "key"));
  }
  assert_true(json_array_size(pems) >= 2);
  json_array_foreach(pems, i, v) {
    mcim_jose_key_t *k = pem_key(json_string_value(v));
    uint8_t *plain = NULL;
    size_t n = 0;
    mcim_cause_t rc = mcim_jwe_decrypt(k, jwe, strlen(jwe), &plain, &n);
    if (rc == MCIM_OK)
      opened++;
    else
      assert_int_equal(rc, MCIM_JWE_DECRYPT_FAILED);
    mcim_jose_secret_free(plain, n);
    mcim_jose_key_free(k);
  }
  json_decref(pems);
  return opened;
}

static mcim_storage_key_t *key_copy(const struct fx *f)
{
  mcim_storage_key_t *k = NULL;
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &k), MCIM_OK);
  return k;
}

/* The procedure's key the quote of `txn` offers, checked as the SHO checks it. */
static mcim_jose_key_t *quoted_ka(struct fx *f, const char *txn)
{
  char *jws = NULL, *jwk = NULL;
  mcim_statement_t *q = NULL;
  mcim_jose_key_t *k = NULL;
  assert_int_equal(f->tre->ops->quote(f->tre->ctx, "pva", txn, "n0nce", 60, &jws), MCIM_OK);
  mcim_jws_expect_t x = {
      .iss = DEVICE, .aud = "pva", .typ = "mcim-quote+jwt", .sub = DEVICE, .txn = txn};
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), f->att_pub, &x, &q), MCIM_OK);
  json_t *offer = json_object_get(q->payload, "ka_jwk");
  assert_true(json_is_object(offer));
  assert_null(json_object_get(offer, "d"));
  jwk = json_dumps(offer, JSON_COMPACT);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &k), MCIM_OK);
  assert_false(mcim_jose_key_has_private(k));
  free(jwk);
  free(jws);
  mcim_statement_free(q);
  return k;
}

/* Issue 11, point 6, on the files: a package kept anywhere (the DPF keeps them) and copies of
 * the TRE's files taken at any point, then the MCIM discarded by a change of SHO. With the
 * device's state after that (its files and its key) the old package does not open and the
 * discarded K is nowhere; and the copies do not open with the current key. The same copies
 * opened with the keys of their time do give the package and K (the control: what the
 * rotation destroyed is exactly what was needed). */
static void test_shred_files_left_behind(void **state)
{
  struct fx *f = *state;
  struct file_copy before[2] = {{0}}, installed[2] = {{0}};
  char slot[64], k_hex[33];
  json_t *doc = NULL;

  mcim_jose_key_t *ka_a = quoted_ka(f, TXN_A);
  /* a second quote for the same procedure offers the same key */
  mcim_jose_key_t *again = quoted_ka(f, TXN_A);
  char *j1 = NULL, *j2 = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(ka_a, &j1), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_jwk(again, &j2), MCIM_OK);
  assert_string_equal(j1, j2);
  free(j1);
  free(j2);
  mcim_jose_key_free(again);

  /* the SHO's package, sealed to the procedure's key: the static key does not open it */
  struct pkg p = pkg_default(f, &sho_a, TXN_A);
  p.recipient = f->ka_pub;
  char *to_static = pkg_make(&p);
  p.recipient = ka_a;
  char *pkg = pkg_make(&p);
  json_t *jwe_claim = NULL;
  assert_int_equal(mcim_jws_peek_claim(pkg, "jwe", &jwe_claim), MCIM_OK);
  const char *jwe = json_string_value(jwe_claim);
  assert_non_null(jwe);

  /* the files while the procedure runs, and the key of that time */
  copy_take(path_in(f, "tre.sealed"), &before[0]);
  copy_take(path_in(f, "tre.sealed.1"), &before[1]);
  mcim_storage_key_t *key_before = key_copy(f);

  /* a package sealed to the static key is refused for a procedure that offered its own */
  expect_refused(f, TXN_A, to_static, &sho_a, "JWE_DECRYPT_FAILED");
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_A, slot), MCIM_OK);
  copy_take(path_in(f, "tre.sealed"), &installed[0]);
  copy_take(path_in(f, "tre.sealed.1"), &installed[1]);
  mcim_storage_key_t *key_installed = key_copy(f);

  /* a change of SHO: sho-b's procedure, and sho-a's MCIM discarded (change step 8) */
  mcim_jose_key_t *ka_b = quoted_ka(f, TXN_B);
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  pb.recipient = ka_b;
  char *pkg_b = pkg_make(&pb);
  assert_int_equal(stage(f, TXN_B, pkg_b, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->discard(f->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  assert_int_equal(f->tre->ops->install(f->tre->ctx, TXN_B, slot), MCIM_OK);
  assert_string_equal(slot_state(f, "sho-a"), "none");
  mcim_tre_close(f->tre); /* what is left is the files */
  f->tre = NULL;

  /* the device's current state: its key and both slot files */
  mcim_storage_key_t *key_now = key_copy(f);
  struct file_copy now[2] = {{0}};
  copy_take(path_in(f, "tre.sealed"), &now[0]);
  copy_take(path_in(f, "tre.sealed.1"), &now[1]);
  mcim_hex_encode(sho_a.k, 16, k_hex);
  for (int i = 0; i < 2; i++) {
    /* both slots open with the current key (the crash fallback keeps working) ... */
    assert_int_equal(copy_open(&now[i], key_now, &doc), MCIM_OK);
    char *text = doc_text_opened(doc);
    /* ... and hold neither sho-a's K nor any key that opens the old package */
    assert_null(strstr(text, k_hex));
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
    assert_int_equal(jwe_openers(doc, jwe), 0);
    free(text);
    json_decref(doc);
    /* the keys of before do not open the current files */
    assert_int_equal(copy_open(&now[i], key_before, NULL), MCIM_UNSEAL_FAILED);
    assert_int_equal(copy_open(&now[i], key_installed, NULL), MCIM_UNSEAL_FAILED);
    /* the current key does not open the copies of before */
    assert_int_equal(copy_open(&before[i], key_now, NULL), MCIM_UNSEAL_FAILED);
    assert_int_equal(copy_open(&installed[i], key_now, NULL), MCIM_UNSEAL_FAILED);
  }

  /* the control: with the keys of their time, the copies give what was destroyed */
  int with_txn_key = 0, with_k = 0;
  for (int i = 0; i < 2; i++) {
    if (copy_open(&before[i], key_before, &doc) == MCIM_OK) {
      with_txn_key += jwe_openers(doc, jwe);
      json_decref(doc);
    }
    if (copy_open(&installed[i], key_installed, &doc) == MCIM_OK) {
      char *text = doc_text_opened(doc); /* K under the MCIM's key, which the copy holds */
      with_k += strstr(text, k_hex) != NULL;
      free(text);
      json_decref(doc);
    }
  }
  assert_true(with_txn_key >= 1);
  assert_true(with_k >= 1);

  /* and the TRE, reopened on the current files, refuses the old package */
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  assert_int_equal(stage(f, TXN_A, pkg, &sho_a), MCIM_PACKAGE_INVALID);

  for (int i = 0; i < 2; i++) {
    free(before[i].buf);
    free(installed[i].buf);
    free(now[i].buf);
  }
  mcim_storage_key_free(key_before);
  mcim_storage_key_free(key_installed);
  mcim_storage_key_free(key_now);
  mcim_jose_key_free(ka_a);
  mcim_jose_key_free(ka_b);
  json_decref(jwe_claim);
  free(to_static);
  free(pkg);
  free(pkg_b);
}

/* Between rotations tre.key.new holds no key: absent (a TRE that never rotated) or zeros, so
 * the only key on disk is tre.key. */
static void assert_no_spare_key(const struct fx *f)
{
  static const uint8_t zero[MCIM_STORAGE_KEY_LEN] = {0};
  size_t n = 0;
  if (access(path_in(f, "tre.key.new"), F_OK) != 0)
    return;
  uint8_t *k = file_read(path_in(f, "tre.key.new"), &n);
  assert_int_equal(n, MCIM_STORAGE_KEY_LEN);
  assert_memory_equal(k, zero, n);
  free(k);
}

/* A procedure abandoned before its package: unstage deletes its key (under a new storage key),
 * and a package for it then can only be one sealed to the static key, which is refused no more
 * than before per-procedure keys (the SHO never seals to it for a device that offered one). */
static void test_txn_key_lifecycle(void **state)
{
  struct fx *f = *state;
  mcim_storage_key_t *k0 = key_copy(f);
  mcim_jose_key_t *ka = quoted_ka(f, TXN_C);
  json_t *doc = state_read(f);
  assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 1);
  json_decref(doc);
  /* making the key is an ordinary write: same storage key */
  mcim_storage_key_t *k1 = key_copy(f);
  uint8_t probe[1] = {7}, sealed[64];
  size_t n = 0, m = 0;
  assert_int_equal(mcim_seal(k0, "probe", probe, 1, sealed, sizeof(sealed), &n), MCIM_OK);
  assert_int_equal(mcim_unseal(k1, "probe", sealed, n, probe, 1, &m), MCIM_OK);
  /* abandoned: no staged package, still NOT_FOUND, but the key is gone and the storage key
   * rotated */
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  doc = state_read(f);
  assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
  json_decref(doc);
  mcim_storage_key_t *k2 = key_copy(f);
  assert_int_equal(mcim_unseal(k2, "probe", sealed, n, probe, 1, &m), MCIM_UNSEAL_FAILED);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  check_persisted(f);
  /* no second copy of a key is left behind: tre.key.new holds zeros between rotations */
  assert_no_spare_key(f);

  /* a crash between the slot written under the new key and the key file's rename: the
   * next open finishes the rotation */
  mcim_jose_key_free(ka);
  ka = quoted_ka(f, TXN_C);
  uint8_t *cur = NULL;
  size_t cur_len = 0;
  cur = file_read(path_in(f, "tre.key"), &cur_len);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  json_t *after = status_of(f->tre);
  mcim_tre_close(f->tre);
  f->tre = NULL;
  assert_int_equal(rename(path_in(f, "tre.key"), path_in(f, "tre.key.new")), 0);
  file_write(path_in(f, "tre.key"), cur, cur_len); /* the old key back in place */
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(chmod(path_in(f, "tre.key.new"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  json_t *reopened = status_of(f->tre);
  assert_true(json_equal(after, reopened));
  assert_no_spare_key(f);
  check_persisted(f);
  json_decref(after);
  json_decref(reopened);
  free(cur);
  mcim_jose_key_free(ka);

  /* a handle still holding the key of before a rotation, and the rotation's second write cut
   * (the newest slot torn): the other slot, already under the new key, opens for it */
  mcim_tre_t *stale = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &stale), MCIM_OK);
  ka = quoted_ka(f, TXN_C);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  const char *newest = path_in(f, slot_name(newest_slot(f, NULL)));
  uint8_t *buf = file_read(newest, &len);
  assert_true(slot_header(buf, len, &gen, &blob, &blob_len));
  memset(buf + blob + blob_len / 2, 0xa5, 16);
  file_write(newest, buf, len);
  free(buf);
  json_t *seen = status_of(stale);
  json_t *now = status_of(f->tre);
  assert_true(json_equal(seen, now));
  json_decref(seen);
  json_decref(now);
  mcim_tre_close(stale);
  mcim_jose_key_free(ka);
  mcim_storage_key_free(k0);
  mcim_storage_key_free(k1);
  mcim_storage_key_free(k2);
}

/* ---- a rotation cut by a crash at each of its steps (tre_commit_shred) ---- */

#define ROTATE_CRASHED 42
static char rotate_where[32];

static void rotate_crash_at(const char *where)
{
  if (strcmp(where, rotate_where) == 0)
    _exit(ROTATE_CRASHED);
}

/* In a child: a handle of its own, the hook armed at `where`, then the unstage of `txn` (its
 * procedure's key dropped: a rotation); the child dies there. */
static void rotate_child_crashes(struct fx *f, const char *where, const char *txn)
{
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    mcim_tre_t *t = NULL;
    if (mcim_tre_soft_open(f->dir, &t) != MCIM_OK)
      _exit(1);
    snprintf(rotate_where, sizeof(rotate_where), "%s", where);
    tre_crash_hook = rotate_crash_at;
    (void)t->ops->unstage(t->ctx, txn);
    _exit(2); /* the hook was not reached */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), ROTATE_CRASHED);
}

/* Does `key` open the slot file i? */
static bool slot_opens(const struct fx *f, int i, const mcim_storage_key_t *key)
{
  struct file_copy c = {0};
  copy_take(path_in(f, slot_name(i)), &c);
  bool ok = copy_open(&c, key, NULL) == MCIM_OK;
  free(c.buf);
  return ok;
}

/* The rotation writes each file in place with one fdatasync: tre.key.new (the new key), the
 * other slot under it, the new key over the old in tre.key, the previous slot again, zeros over
 * tre.key.new. A process killed after each step (the files as it left them) always opens: on
 * the state before the unstage until the slot under the new key is written, on the state after
 * from then on, the rotation finished by the next load when tre.key did not get the new key
 * yet (also with tre.key's block torn in that write). Once a write follows, both slots open
 * with the current key, the key of before opens neither, and no second key is on disk. */
static void test_crash_rotation(void **state)
{
  struct fx *f = *state;
  static const struct {
    const char *where;
    bool after;    /* the state after the unstage is the one that opens */
    bool tear_key; /* tre.key's block torn too (a crash inside the write over it) */
  } cuts[] = {
      {"rotate-key-written", false, false},  {"before-write", false, false},
      {"rotate-slot-written", true, false},  {"rotate-slot-written", true, true},
      {"rotate-key-installed", true, false}, {"rotate-both-written", true, false},
  };

  /* uncut: right after it, both slots under the new key alone, and tre.key.new zeros */
  mcim_jose_key_free(quoted_ka(f, TXN_C));
  mcim_storage_key_t *k0 = key_copy(f);
  assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
  mcim_storage_key_t *k1 = key_copy(f);
  for (int i = 0; i < 2; i++) {
    assert_true(slot_opens(f, i, k1));
    assert_false(slot_opens(f, i, k0));
  }
  assert_no_spare_key(f);
  mcim_storage_key_free(k0);
  mcim_storage_key_free(k1);

  for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
    mcim_jose_key_free(quoted_ka(f, TXN_C)); /* the txn's key: the unstage drops it */
    json_t *doc = state_read(f);
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 1);
    json_decref(doc);
    mcim_storage_key_t *k_before = key_copy(f);
    mcim_tre_close(f->tre);
    f->tre = NULL;

    rotate_child_crashes(f, cuts[c].where, TXN_C);
    if (cuts[c].tear_key) {
      uint8_t junk[MCIM_STORAGE_KEY_LEN];
      memset(junk, 0x5a, sizeof(junk));
      file_write(path_in(f, "tre.key"), junk, sizeof(junk));
      assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
    }
    long mark = ftell(log_fp);
    assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
    doc = state_read(f); /* with tre.key as the load left it */
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), cuts[c].after ? 0 : 1);
    json_decref(doc);
    char *log = log_since(mark);
    bool finished = strstr(log, "rotation cut by a crash, finished") != NULL;
    free(log);
    assert_true(finished == (strcmp(cuts[c].where, "rotate-slot-written") == 0));
    if (strcmp(cuts[c].where, "rotate-both-written") == 0) { /* all but the zeros */
      mcim_storage_key_t *k = key_copy(f);
      for (int i = 0; i < 2; i++) {
        assert_true(slot_opens(f, i, k));
        assert_false(slot_opens(f, i, k_before));
      }
      mcim_storage_key_free(k);
    }
    check_persisted(f);

    /* the next write (an ordinary one): both slots under the current key, nothing else */
    mcim_jose_key_free(quoted_ka(f, TXN_D));
    assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_D), MCIM_NOT_FOUND);
    mcim_jose_key_free(quoted_ka(f, TXN_D));
    mcim_storage_key_t *k_now = key_copy(f);
    for (int i = 0; i < 2; i++) {
      assert_true(slot_opens(f, i, k_now));
      assert_false(slot_opens(f, i, k_before));
    }
    assert_no_spare_key(f);
    assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_D), MCIM_NOT_FOUND);
    if (!cuts[c].after) /* the cut unstage never happened: done now */
      assert_int_equal(f->tre->ops->unstage(f->tre->ctx, TXN_C), MCIM_NOT_FOUND);
    doc = state_read(f);
    assert_int_equal(json_array_size(json_object_get(doc, "txn_keys")), 0);
    json_decref(doc);
    check_persisted(f);
    mcim_storage_key_free(k_before);
    mcim_storage_key_free(k_now);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_shred_files_left_behind, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_txn_key_lifecycle, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_crash_rotation, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_no_secret), /* last: the whole group's log */
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
