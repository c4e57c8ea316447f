/* Rollback protection (issue 11 point 5; src/tre/tpm/tre_tpm_nv.c has the rule,
 * docs/tre-tpm.md "Rollback"): the TPM TRE's state is bound to a TPM NV monotonic counter,
 * so an older copy of its state files put back is refused (MCIM_TRE_ROLLBACK); a crash
 * between a slot write and the counter's increment, or before the slot is written, still
 * opens; and the software TRE opens the older copy (its documented limit, asserted so that
 * docs/tre.md stays true). Against a throw-away swtpm (no swtpm is a failure, not a skip). And
 * the cost of the counter, timed against swtpm. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "swtpm_fixture.h"
#include "tre/tpm/tpm_nv.h"
#include "tre/tre_priv.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define CRASHED 42

SWTPM_GROUP(true, "/tmp/mcim-tpmrb-XXXXXX")

/* ---- a TRE with a PCID credential, and the AuC's side of it ---- */

/* The swtpm the devices use: the group's, or a test's own (dev_sw). */
static mcim_swtpm_t *dev_sw;
static const char *dev_tcti(void) { return mcim_swtpm_tcti(dev_sw ? dev_sw : sw); }

struct dev {
  char dir[64];
  bool tpm;
  mcim_tre_t *tre;
  uint8_t k[16], opc[16];
  uint64_t sqn; /* the AuC's */
};

static mcim_tre_t *dev_open(struct dev *d, mcim_cause_t want)
{
  mcim_tre_t *tre = NULL;
  mcim_cause_t rc =
      d->tpm ? mcim_tre_tpm_open(d->dir, dev_tcti(), &tre) : mcim_tre_soft_open(d->dir, &tre);
  assert_int_equal(rc, want);
  return tre;
}

static struct dev *dev_new(bool tpm)
{
  struct dev *d = calloc(1, sizeof(*d));
  char *ka_jwk = NULL, *jwe = NULL, kh[33], oh[33], text[256];
  mcim_jose_key_t *ka = NULL;
  assert_non_null(d);
  d->tpm = tpm;
  snprintf(d->dir, sizeof(d->dir), "/tmp/mcim-trerb-XXXXXX");
  assert_non_null(mkdtemp(d->dir));
  assert_int_equal(
      tpm ? mcim_tre_tpm_create(d->dir, dev_tcti(), DEVICE, MODEL, owner_jwk, ops_ca_pem,
                                m2mes_ca_pem)
          : mcim_tre_soft_create(d->dir, DEVICE, MODEL, owner_jwk, ops_ca_pem, m2mes_ca_pem),
      MCIM_OK);
  d->tre = dev_open(d, MCIM_OK);
  assert_int_equal(mcim_tre_soft_public_jwk(d->tre, MCIM_TRE_CERT_KA, &ka_jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(ka_jwk, strlen(ka_jwk), &ka), MCIM_OK);
  assert_int_equal(mcim_random(d->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(d->opc, 16), MCIM_OK);
  mcim_hex_encode(d->k, 16, kh);
  mcim_hex_encode(d->opc, 16, oh);
  snprintf(text, sizeof(text),
           "{\"pcid\":\"%s\",\"k\":\"%s\",\"opc\":\"%s\",\"amf\":\"8000\",\"expires\":%lld}", PCID1,
           kh, oh, (long long)(mcim_now() + 3600));
  assert_int_equal(mcim_jwe_encrypt(ka, (const uint8_t *)text, strlen(text), &jwe), MCIM_OK);
  if (tpm) {
    /* a TPM TRE takes the PCID's K into its TPM only: wrapped to the PCID's slot key that
     * enrolment makes (this swtpm has no EK certificate: the rest is test_tre_tpm_enrol's) */
    json_t *enrol = NULL;
    assert_int_equal(d->tre->ops->pcid_install(d->tre->ctx, jwe, strlen(jwe)), MCIM_FORBIDDEN);
    free(jwe);
    (void)mcim_tre_tpm_enrol_begin(d->tre, &enrol);
    json_decref(enrol);
    jwe = tre_pcid_jwe_tpm(d->dir, DEVICE, PCID1, ka, d->k, d->opc, mcim_now() + 3600);
  }
  assert_int_equal(d->tre->ops->pcid_install(d->tre->ctx, jwe, strlen(jwe)), MCIM_OK);
  d->sqn = 32;
  free(jwe);
  free(ka_jwk);
  mcim_jose_key_free(ka);
  return d;
}

static void dev_free(struct dev *d)
{
  mcim_tre_close(d->tre);
  rm_tree(d->dir);
  free(d);
}

/* The network's next authentication vector of the PCID credential. */
static void next_av(struct dev *d, struct mcim_aka_av *av)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  mcim_milenage_t *m = NULL;
  uint8_t sqnb[MCIM_SQN_LEN];
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, d->k, d->opc), MCIM_OK);
  d->sqn += 32;
  mcim_sqn_to_bytes(d->sqn, sqnb);
  assert_int_equal(mcim_aka_gen_av(m, NULL, sqnb, amf, av), MCIM_OK);
  mcim_milenage_free(m);
}

/* The USIM's answer to `av`: MCIM_OK (RES checked), or the cause. A state write on success. */
static mcim_cause_t aka(mcim_tre_t *tre, const struct mcim_aka_av *av)
{
  uint8_t res[8], auts[14];
  mcim_cause_t rc = tre->ops->aka(tre->ctx, MCIM_TRE_PCID, av->rand, av->autn, res, auts);
  if (rc == MCIM_OK)
    assert_memory_equal(res, av->xres, 8);
  return rc;
}

/* Both slot files to / from `aside` (DIR/aside.0, .1), byte for byte. */
static void copy_file(const char *from, const char *to)
{
  char buf[65536];
  int in = open(from, O_RDONLY), out = -1;
  ssize_t n;
  assert_true(in >= 0);
  out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(out >= 0);
  while ((n = read(in, buf, sizeof(buf))) > 0)
    assert_int_equal(write(out, buf, (size_t)n), n);
  assert_int_equal(n, 0);
  close(in);
  close(out);
}

static void slots_copy(const struct dev *d, bool aside)
{
  char slot[2][128], copy[2][128];
  snprintf(slot[0], sizeof(slot[0]), "%s/%s", d->dir, TRE_FILE_STATE);
  snprintf(slot[1], sizeof(slot[1]), "%s/%s", d->dir, TRE_FILE_STATE_1);
  for (int i = 0; i < 2; i++) {
    snprintf(copy[i], sizeof(copy[i]), "%s/aside.%d", d->dir, i);
    copy_file(aside ? slot[i] : copy[i], aside ? copy[i] : slot[i]);
  }
}

/* ---- the TPM TRE refuses its older state ---- */

static void test_tpm_older_state_refused(void **state)
{
  struct dev *d = dev_new(true);
  struct mcim_aka_av av1, av2;
  json_t *st = NULL;
  char slot0[128];
  (void)state;

  /* the state before an AKA, aside; the AKA writes the state (the SQN it accepted) */
  slots_copy(d, true);
  next_av(d, &av1);
  assert_int_equal(aka(d->tre, &av1), MCIM_OK);
  /* the older copy put back: the open handle's next operation and a new open refuse it
   * (else av1, replayed, would be accepted again: the old SQN state) */
  char now_aside[2][128];
  snprintf(now_aside[0], sizeof(now_aside[0]), "%s/now.0", d->dir);
  snprintf(now_aside[1], sizeof(now_aside[1]), "%s/now.1", d->dir);
  snprintf(slot0, sizeof(slot0), "%s/%s", d->dir, TRE_FILE_STATE);
  char slot1[128];
  snprintf(slot1, sizeof(slot1), "%s/%s", d->dir, TRE_FILE_STATE_1);
  copy_file(slot0, now_aside[0]);
  copy_file(slot1, now_aside[1]);
  slots_copy(d, false);
  assert_int_equal(aka(d->tre, &av1), MCIM_TRE_ROLLBACK);
  assert_int_equal(d->tre->ops->status(d->tre->ctx, &st), MCIM_TRE_ROLLBACK);
  assert_null(dev_open(d, MCIM_TRE_ROLLBACK));
  /* the current files back: the same handle works again, and av1 stays refused (replay) */
  copy_file(now_aside[0], slot0);
  copy_file(now_aside[1], slot1);
  assert_int_equal(d->tre->ops->status(d->tre->ctx, &st), MCIM_OK);
  json_decref(st);
  assert_int_equal(aka(d->tre, &av1), MCIM_SYNC_FAILURE);
  /* the newest slot destroyed: the older one that still opens is behind the counter too */
  next_av(d, &av2);
  assert_int_equal(aka(d->tre, &av2), MCIM_OK);
  mcim_tre_t *again = dev_open(d, MCIM_OK);
  mcim_tre_close(again);
  struct tre_soft *t = d->tre->ctx;
  assert_int_equal(truncate(t->path_state[t->slot], 40), 0);
  assert_null(dev_open(d, MCIM_TRE_ROLLBACK));
  dev_free(d);
}

/* A state without its counter: what whoever holds tre.key could write (the document opened,
 * "tpm_counter" taken out, sealed again as the next generation) to have an older state opened
 * unchecked. Every TPM TRE is bound to its counter from its first write: refused. */
static void test_tpm_state_without_counter(void **state)
{
  struct dev *d = dev_new(true);
  struct tre_soft *t = d->tre->ctx;
  json_t *st = NULL;
  (void)state;
  assert_int_equal(tre_begin(t, &st), MCIM_OK);
  assert_non_null(json_object_get(st, "tpm_counter"));
  assert_int_equal(json_object_del(st, "tpm_counter"), 0);
  /* written (the slot is durable), its increment refused: no counter to advance */
  assert_int_equal(tre_persist(t, st), MCIM_OK);
  tre_end(t, st);
  assert_true(log_has("bound to no TPM counter", NULL));
  st = NULL;
  assert_int_equal(d->tre->ops->status(d->tre->ctx, &st), MCIM_TRE_ROLLBACK);
  assert_null(dev_open(d, MCIM_TRE_ROLLBACK));
  dev_free(d);
}

/* ---- crashes in a write ---- */

static void crash_at(const char *where)
{
  extern char crash_where[];
  if (strcmp(where, crash_where) == 0)
    _exit(CRASHED);
}
char crash_where[32];

/* In a child: open the TRE, arm the hook at `where`, answer `av` (a write): the child dies
 * there. */
static void child_crashes(struct dev *d, const char *where, const struct mcim_aka_av *av)
{
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    mcim_tre_t *tre = NULL;
    if ((d->tpm ? mcim_tre_tpm_open(d->dir, dev_tcti(), &tre) : mcim_tre_soft_open(d->dir, &tre)) !=
        MCIM_OK)
      _exit(1);
    snprintf(crash_where, sizeof(crash_where), "%s", where);
    tre_crash_hook = crash_at;
    uint8_t res[8], auts[14];
    (void)tre->ops->aka(tre->ctx, MCIM_TRE_PCID, av->rand, av->autn, res, auts);
    _exit(2); /* the hook was not reached */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), CRASHED);
}

/* The slot written and synced, the process killed before TPM2_NV_Increment: the files are one
 * generation ahead of the counter. The new state opens (rolled forward: the counter is
 * incremented then), and the files from before the crashed write are refused after that. */
static void test_tpm_crash_between_write_and_increment(void **state)
{
  struct dev *d = dev_new(true);
  struct mcim_aka_av av;
  (void)state;

  mcim_tre_close(d->tre);
  d->tre = NULL;
  slots_copy(d, true);
  next_av(d, &av);
  child_crashes(d, "after-write", &av);
  d->tre = dev_open(d, MCIM_OK);
  /* the crashed write's state is the one in use: its SQN is kept, av is a replay now */
  assert_int_equal(aka(d->tre, &av), MCIM_SYNC_FAILURE);
  /* and the counter caught up: the state before the crashed write is refused */
  slots_copy(d, false);
  assert_null(dev_open(d, MCIM_TRE_ROLLBACK));
  dev_free(d);
}

/* Killed before the new slot is written: the previous state, whose increment completed,
 * opens; the AKA never happened for the TRE (av is accepted now). */
static void test_tpm_crash_before_write(void **state)
{
  struct dev *d = dev_new(true);
  struct mcim_aka_av av;
  (void)state;

  mcim_tre_close(d->tre);
  d->tre = NULL;
  next_av(d, &av);
  child_crashes(d, "before-write", &av);
  d->tre = dev_open(d, MCIM_OK);
  assert_int_equal(aka(d->tre, &av), MCIM_OK);
  dev_free(d);
}

/* The TPM goes away after the slot is durable, before the increment (the same point, without
 * a crash): the AKA is answered (its state is durable), the TPM comes back (same state, other
 * ports), and the next open rolls the counter forward; the files from before are refused. */
static mcim_swtpm_t *gone_sw;
static void tpm_goes(const char *where)
{
  if (strcmp(where, "after-write") == 0 && gone_sw) {
    mcim_swtpm_free(gone_sw);
    gone_sw = NULL;
  }
}

static void test_tpm_gone_between_write_and_increment(void **state)
{
  char dir[64], detail[512];
  struct mcim_aka_av av;
  (void)state;

  snprintf(dir, sizeof(dir), "/tmp/mcim-tpmrb2-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(mcim_swtpm_start(dir, MCIM_SWTPM_TIED, 20000, &dev_sw, detail, sizeof(detail)),
                   MCIM_OK);
  struct dev *d = dev_new(true);
  slots_copy(d, true);
  next_av(d, &av);
  gone_sw = dev_sw;
  tre_crash_hook = tpm_goes;
  assert_int_equal(aka(d->tre, &av), MCIM_OK);
  tre_crash_hook = NULL;
  assert_null(gone_sw); /* the hook ran: the swtpm was gone for the increment */
  dev_sw = NULL;
  mcim_tre_close(d->tre);
  assert_int_equal(mcim_swtpm_start(dir, MCIM_SWTPM_TIED, 20000, &dev_sw, detail, sizeof(detail)),
                   MCIM_OK);
  d->tre = dev_open(d, MCIM_OK);
  assert_int_equal(aka(d->tre, &av), MCIM_SYNC_FAILURE);
  slots_copy(d, false);
  assert_null(dev_open(d, MCIM_TRE_ROLLBACK));
  dev_free(d);
  mcim_swtpm_free(dev_sw);
  dev_sw = NULL;
  rm_tree(dir);
}

/* ---- the software TRE's limit (docs/tre.md): it cannot tell ---- */

static void test_soft_older_state_opens(void **state)
{
  struct dev *d = dev_new(false);
  struct mcim_aka_av av;
  (void)state;

  slots_copy(d, true);
  next_av(d, &av);
  assert_int_equal(aka(d->tre, &av), MCIM_OK);
  assert_int_equal(aka(d->tre, &av), MCIM_SYNC_FAILURE);
  slots_copy(d, false);
  /* the older copy opens, and the replayed vector is accepted again: undetectable here */
  mcim_tre_t *old = dev_open(d, MCIM_OK);
  assert_int_equal(aka(old, &av), MCIM_OK);
  mcim_tre_close(old);
  dev_free(d);
}

/* ---- the cost ---- */

/* What the counter adds, against swtpm: per write one mcim_tpm_nv_counter_increment
 * (TPM2_NV_ReadPublic + TPM2_NV_Increment), per load one mcim_tpm_nv_counter_read
 * (TPM2_NV_ReadPublic + TPM2_NV_Read); and an AKA (one load, one write) on each backend. */
static void test_cost(void **state)
{
  enum { N = 100, NAKA = 30 };
  char detail[256];
  uint8_t auth[MCIM_TPM_NV_AUTH_LEN];
  TPM2_HANDLE index = 0;
  TPM2B_NAME name;
  uint64_t v0 = 0, v = 0;
  mcim_tpm_t *tpm = NULL;
  (void)state;

  assert_int_equal(mcim_random(auth, sizeof(auth)), MCIM_OK);
  assert_int_equal(mcim_tpm_open(dev_tcti(), &tpm, detail, sizeof(detail)), MCIM_OK);
  assert_int_equal(mcim_tpm_nv_counter_define(tpm, auth, &index, &name, &v0), MCIM_OK);
  uint64_t t0 = mcim_monotonic_ns();
  for (int i = 0; i < N; i++)
    assert_int_equal(mcim_tpm_nv_counter_increment(tpm, index, &name, auth), MCIM_OK);
  double inc = ms_since(t0) / N;
  t0 = mcim_monotonic_ns();
  for (int i = 0; i < N; i++)
    assert_int_equal(mcim_tpm_nv_counter_read(tpm, index, &name, auth, &v), MCIM_OK);
  double rd = ms_since(t0) / N;
  assert_true(v == v0 + N); /* monotonic, one per increment */
  /* a wrong authValue neither reads nor increments */
  auth[0] ^= 1;
  assert_int_equal(mcim_tpm_nv_counter_increment(tpm, index, &name, auth), MCIM_TPM_ERROR);
  assert_int_equal(mcim_tpm_nv_counter_read(tpm, index, &name, auth, &v), MCIM_TPM_ERROR);
  /* the owner deletes it and a counter is defined again at that index: it starts above the
   * deleted one's value, so state bound to the old one stays behind it (docs/tre-tpm.md) */
  ESYS_TR tr = ESYS_TR_NONE;
  ESYS_CONTEXT *esys = mcim_tpm_esys(tpm);
  assert_int_equal(
      Esys_TR_FromTPMPublic(esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr),
      TSS2_RC_SUCCESS);
  assert_int_equal(Esys_NV_UndefineSpace(esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                         ESYS_TR_NONE),
                   TSS2_RC_SUCCESS);
  TPM2_HANDLE again = 0;
  uint64_t v2 = 0;
  assert_int_equal(mcim_tpm_nv_counter_define(tpm, auth, &again, &name, &v2), MCIM_OK);
  assert_int_equal(again, index);
  print_message("counter deleted at %llu, defined again: %llu\n", (unsigned long long)v,
                (unsigned long long)v2);
  assert_true(v2 > v);
  mcim_tpm_free(tpm);
  print_message("NV counter on swtpm: increment (a write) %.2f ms, read (a load) %.2f ms,"
                " mean of %d\n",
                inc, rd, N);

  for (int b = 0; b < 2; b++) {
    struct dev *d = dev_new(b == 1);
    struct mcim_aka_av av[NAKA];
    for (int i = 0; i < NAKA; i++)
      next_av(d, &av[i]);
    t0 = mcim_monotonic_ns();
    for (int i = 0; i < NAKA; i++)
      assert_int_equal(aka(d->tre, &av[i]), MCIM_OK);
    print_message("AKA (one load, one write), %s TRE: %.2f ms, mean of %d\n",
                  b ? "TPM" : "software", ms_since(t0) / NAKA, NAKA);
    dev_free(d);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tpm_older_state_refused),
      cmocka_unit_test(test_tpm_state_without_counter),
      cmocka_unit_test(test_tpm_crash_between_write_and_increment),
      cmocka_unit_test(test_tpm_crash_before_write),
      cmocka_unit_test(test_tpm_gone_between_write_and_increment),
      cmocka_unit_test(test_soft_older_state_opens),
      cmocka_unit_test(test_cost),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
