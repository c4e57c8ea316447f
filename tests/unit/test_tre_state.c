/* The software TRE (src/tre/), its state on disk: a write cut by a crash, a FIFO in place of
 * a slot, a TRE of format 1, tampered slots and key file, and threads on two handles at once.
 * Fixture: tre_fixture.h, tre_sealed_fixture.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre_fixture.h"
#include "tre_sealed_fixture.h"

/* ---- tests: crash, tamper ---------------------------------------------------------------- */

/* A write cut by a crash leaves the slot it was writing torn, next to the state before it:
 * the torn slot does not open, the previous state is used (with a warning), and the next
 * write goes over the torn slot. A left-over temporary file of the former format is ignored. */
static void test_crash_slot(void **state)
{
  struct fx *f = *state;
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0, gen_after = 0;

  file_write(path_in(f, "tre.sealed.tmp"), "garbage\x01\x02", 9);
  provision(f, &sho_a, TXN_A);
  /* a second MCIM, inactive: switching between the two is a write of one slot (a discard
   * is two: docs/tre.md, "Crypto-shredding") */
  struct pkg pb = pkg_default(f, &sho_b, TXN_B);
  char *pkg_b = pkg_make(&pb), slot[64];
  assert_int_equal(stage(f, TXN_B, pkg_b, &sho_b), MCIM_OK);
  assert_int_equal(f->tre->ops->install_inactive(f->tre->ctx, TXN_B, slot), MCIM_OK);
  free(pkg_b);
  check_persisted(f);
  json_t *before = status_of(f->tre);
  int newest = newest_slot(f, &gen);
  uint8_t *prev = file_read(path_in(f, slot_name(newest)), &len);

  /* the switch is written to the other slot, one generation up */
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(newest_slot(f, &gen_after), newest ^ 1);
  assert_true(gen_after == gen + 1);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");

  /* ... and cut: some of its blocks new, some not (what a crash in the middle of the
   * write can leave; here 16 bytes in the middle of the blob) */
  size_t nlen = 0;
  uint8_t *fresh = file_read(path_in(f, slot_name(newest ^ 1)), &nlen);
  assert_true(slot_header(fresh, nlen, &gen, &blob, &blob_len));
  FILE *fp = fopen(path_in(f, slot_name(newest ^ 1)), "r+b");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, (long)(blob + blob_len / 2), SEEK_SET), 0);
  uint8_t junk[16];
  memset(junk, 0xa5, sizeof(junk));
  assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
  fclose(fp);
  long mark = ftell(log_fp);
  json_t *after = status_of(f->tre);
  assert_true(json_equal(before, after)); /* the state before the cut write */
  assert_string_equal(slot_state(f, "sho-a"), "active");
  char *log = log_since(mark);
  assert_non_null(strstr(log, "does not open"));
  assert_non_null(strstr(log, "the newest state does not open"));
  free(log);
  check_persisted(f);

  /* the next write replaces the torn slot, and every handle agrees on it */
  assert_int_equal(f->tre->ops->activate(f->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(newest_slot(f, NULL), newest ^ 1);
  assert_string_equal(slot_state(f, "sho-a"), "inactive");
  check_persisted(f);

  /* both slots torn: nothing opens, nothing is invented */
  file_write(path_in(f, "tre.sealed"), prev, 30);
  file_write(path_in(f, "tre.sealed.1"), fresh, 30);
  mcim_tre_t *t = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  assert_null(t);
  json_decref(before);
  json_decref(after);
  free(prev);
  free(fresh);
}

/* A FIFO in place of a slot (someone else's file in the folder): refused at once, never waited
 * on. Reading and writing run in a child with an alarm: a blocking open would hang it. */
static void test_fifo_slot(void **state)
{
  struct fx *f = *state;

  provision(f, &sho_a, TXN_A);
  int older = newest_slot(f, NULL) ^ 1;
  const char *fifo = path_in(f, slot_name(older));
  (void)unlink(fifo);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(5);
    json_t *st = NULL;
    if (f->tre->ops->status(f->tre->ctx, &st) != MCIM_OK)
      _exit(1);
    json_decref(st);
    /* the next write goes to the FIFO's slot: refused, not blocked */
    if (f->tre->ops->discard(f->tre->ctx, "sho-a", NULL) == MCIM_OK)
      _exit(2);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status)); /* not killed by the alarm */
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(unlink(fifo), 0);
}

/* A TRE written before the slots (format 1: tre.sealed alone, no generation) opens, and its
 * next write goes to the second slot as generation 1. */
static void test_format_1(void **state)
{
  struct fx *f = *state;
  json_t *doc = state_read(f);
  json_t *before = status_of(f->tre);
  mcim_storage_key_t *key = NULL;
  const char hdr[] = "mcim-tre 1 " DEVICE "\n";
  char *text = json_dumps(doc, JSON_COMPACT);
  size_t n = strlen(text), out_len = 0;
  uint8_t *buf = malloc(strlen(hdr) + mcim_seal_len(n));
  assert_non_null(buf);
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  memcpy(buf, hdr, strlen(hdr));
  assert_int_equal(mcim_seal(key, "tre/" DEVICE, (const uint8_t *)text, n, buf + strlen(hdr),
                             mcim_seal_len(n), &out_len),
                   MCIM_OK);
  mcim_tre_close(f->tre);
  f->tre = NULL;
  unlink(path_in(f, "tre.sealed.1"));
  file_write(path_in(f, "tre.sealed"), buf, strlen(hdr) + out_len);
  assert_int_equal(chmod(path_in(f, "tre.sealed"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &f->tre), MCIM_OK);
  json_t *after = status_of(f->tre);
  assert_true(json_equal(before, after));
  /* one write (an AKA run commits its SQN): the second slot, generation 1 */
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  uint64_t gen = 0;
  assert_int_equal(newest_slot(f, &gen), 1);
  assert_true(gen == 1);
  check_persisted(f);
  provision(f, &sho_a, TXN_A);
  check_persisted(f);
  auc_free(&auc);
  mcim_storage_key_free(key);
  json_decref(doc);
  json_decref(before);
  json_decref(after);
  free(buf);
  free(text);
}

static void test_tampered(void **state)
{
  struct fx *f = *state;
  mcim_tre_t *t = NULL;
  size_t len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  /* the newest slot alone: no older state to fall back on */
  int newest = newest_slot(f, &gen);
  unlink(path_in(f, slot_name(newest ^ 1)));
  char slot[128]; /* path_in's buffers are reused */
  snprintf(slot, sizeof(slot), "%s", path_in(f, slot_name(newest)));
  uint8_t *orig = file_read(slot, &len);
  uint8_t *buf = malloc(len + 1);
  assert_non_null(buf);

  /* One flipped bit in the sealed blob. */
  memcpy(buf, orig, len);
  buf[len / 2] ^= 0x04;
  file_write(slot, buf, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* The open handle re-reads: it refuses too. */
  json_t *st = NULL;
  assert_int_equal(f->tre->ops->status(f->tre->ctx, &st), MCIM_UNSEAL_FAILED);
  /* Another device's name in the clear header (the context no longer matches). */
  memcpy(buf, orig, len);
  buf[strlen("mcim-tre 2 dev")] = '2';
  file_write(slot, buf, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* Truncated. */
  file_write(slot, orig, len - 1);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  file_write(slot, orig, 20);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  /* Intact again: fine. */
  file_write(slot, orig, len);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  mcim_tre_close(t);

  /* An older state relabelled as a later generation does not open (the generation is in
   * the seal's context): the true newest stands. */
  struct auc auc;
  struct mcim_aka_av av;
  uint8_t res[8], auts[14];
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  auc_av(&auc, &av);
  assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &av, res, auts), MCIM_OK);
  assert_int_equal(newest_slot(f, NULL), newest ^ 1);
  json_t *latest = status_of(f->tre);
  assert_true(slot_header(orig, len, &gen, &blob, &blob_len));
  char hdr[128];
  int hl = snprintf(hdr, sizeof(hdr), "mcim-tre 2 %s %llu %zu\n", DEVICE,
                    (unsigned long long)gen + 2, blob_len);
  uint8_t *forged = malloc((size_t)hl + blob_len);
  assert_non_null(forged);
  memcpy(forged, hdr, (size_t)hl);
  memcpy(forged + hl, orig + blob, blob_len);
  file_write(slot, forged, (size_t)hl + blob_len);
  assert_int_equal(newest_slot(f, NULL), newest);
  long mark = ftell(log_fp);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  json_t *seen = status_of(t);
  assert_true(json_equal(latest, seen));
  /* the state after the AKA run, not the one before: its challenge is spent */
  assert_int_equal(t->ops->aka(t->ctx, MCIM_TRE_PCID, av.rand, av.autn, res, auts),
                   MCIM_SYNC_FAILURE);
  char *log = log_since(mark);
  assert_non_null(strstr(log, "the newest state does not open"));
  free(log);
  mcim_tre_close(t);
  json_decref(seen);
  json_decref(latest);
  free(forged);
  auc_free(&auc);
  /* Another TRE's storage key. */
  uint8_t key[32];
  size_t klen = 0;
  uint8_t *k = file_read(path_in(f, "tre.key"), &klen);
  memcpy(key, k, 32);
  key[0] ^= 1;
  file_write(path_in(f, "tre.key"), key, 32);
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_UNSEAL_FAILED);
  file_write(path_in(f, "tre.key"), k, 32);
  /* A key file others can read is refused. */
  assert_int_equal(chmod(path_in(f, "tre.key"), 0644), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_KEY_FILE_INSECURE);
  assert_int_equal(chmod(path_in(f, "tre.key"), 0600), 0);
  assert_int_equal(mcim_tre_soft_open(f->dir, &t), MCIM_OK);
  mcim_tre_close(t);
  mcim_wipe(key, sizeof(key));
  free(k);
  free(buf);
  free(orig);
}

/* ---- tests: threads ---------------------------------------------------------------------- */

#define THREAD_AVS 8

struct worker {
  mcim_tre_t *tre;
  struct mcim_aka_av av[THREAD_AVS];
  mcim_cause_t rc[THREAD_AVS];
  uint8_t res[THREAD_AVS][8];
  mcim_cause_t status_rc;
};

static void *worker_run(void *arg)
{
  struct worker *w = arg;
  uint8_t auts[14];
  for (size_t i = 0; i < THREAD_AVS; i++) {
    w->rc[i] = w->tre->ops->aka(w->tre->ctx, MCIM_TRE_PCID, w->av[i].rand, w->av[i].autn,
                                w->res[i], auts);
    json_t *st = NULL;
    w->status_rc = w->tre->ops->status(w->tre->ctx, &st);
    json_decref(st);
  }
  return NULL;
}

static void test_threads(void **state)
{
  struct fx *f = *state;
  struct auc auc;
  struct worker w[3];
  pthread_t th[3];
  uint8_t res[8], auts[14];

  /* 3 x 8 vectors in 24 different IND slots: each is fresh whatever the interleaving, so
   * any failure would be a lost update. Workers 0 and 1 share the fixture's handle (its
   * mutex serialises them); worker 2 has a handle of its own on the same folder (the file
   * lock serialises it with them, as between the agent and another process). */
  mcim_tre_t *second = NULL;
  assert_int_equal(mcim_tre_soft_open(f->dir, &second), MCIM_OK);
  auc_init(&auc, f->pcid_k, f->pcid_opc);
  for (size_t t = 0; t < 3; t++) {
    memset(&w[t], 0, sizeof(w[t]));
    w[t].tre = t < 2 ? f->tre : second;
    for (size_t i = 0; i < THREAD_AVS; i++)
      auc_av(&auc, &w[t].av[i]);
  }
  for (size_t t = 0; t < 3; t++)
    assert_int_equal(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
  for (size_t t = 0; t < 3; t++)
    assert_int_equal(pthread_join(th[t], NULL), 0);
  mcim_tre_close(second);
  for (size_t t = 0; t < 3; t++) {
    assert_int_equal(w[t].status_rc, MCIM_OK);
    for (size_t i = 0; i < THREAD_AVS; i++) {
      assert_int_equal(w[t].rc[i], MCIM_OK);
      assert_memory_equal(w[t].res[i], w[t].av[i].xres, 8);
    }
  }
  check_persisted(f);
  /* Every one of them was committed: each replays as stale. */
  for (size_t t = 0; t < 3; t++)
    for (size_t i = 0; i < THREAD_AVS; i++)
      assert_int_equal(tre_aka(f, MCIM_TRE_PCID, &w[t].av[i], res, auts), MCIM_SYNC_FAILURE);
  auc_free(&auc);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_crash_slot, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_fifo_slot, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_format_1, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_tampered, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_threads, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_no_secret), /* last: the whole group's log */
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
