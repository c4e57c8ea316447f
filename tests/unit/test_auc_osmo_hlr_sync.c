/* A role's subscribers in a REAL osmo-hlr (src/roles/auc_sync.c, issue 13 point 1): the
 * osmo-hlr started per case as in test_auc_osmo_hlr.c (tests/unit/osmo_hlr_fixture.h; a
 * missing osmo-hlr fails the test), a role's store beside it. Subscribers created, updated
 * and deleted in the HLR from the role's intents, a conflict with what the HLR holds, an HLR
 * that is down, two instances of the role on one HLR (an apply that outlived its claim
 * among them), and a vector request that waits for
 * another instance's create (test_avs_await_other, the role's log watched). */
#define _GNU_SOURCE /* fopencookie, memmem: the role's log watched (test_avs_await_other) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <osmocom/core/msgb.h>
#include <osmocom/gsm/gsup.h>

#include "mcim/aka.h"
#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_backend.h"
#include "roles/auc_sync.h"
#include "osmo_hlr_fixture.h"


struct syncfx {
  char db[96];
  mcim_store_t *st;
  mcim_storage_key_t *skey;
};

static void syncfx_open(struct syncfx *f, const struct hlr *h)
{
  static const mcim_migration_t steps[] = {{1, "AuC", mcim_auc_schema_sql},
                                           {2, "HLR intents", mcim_auc_hlr_schema_sql},
                                           {3, "their claims", mcim_auc_hlr_lease_sql}};
  snprintf(f->db, sizeof(f->db), "%s/role.db", h->dir);
  unlink(f->db);
  assert_int_equal(mcim_store_open(f->db, NULL, &f->st), MCIM_OK);
  assert_int_equal(mcim_store_migrate(f->st, "auc", steps, 3), MCIM_OK);
  assert_int_equal(mcim_storage_key_generate(&f->skey), MCIM_OK);
}

static void syncfx_close(struct syncfx *f)
{
  mcim_store_close(f->st);
  mcim_storage_key_free(f->skey);
  unlink(f->db);
}

/* A subscriber of the role, with its intent, in one transaction (what the SHO's verdict
 * does); its keys in `sub`. */
static void role_add(struct syncfx *f, const struct hlr *h, const char *imsi, const char *state,
                     struct mcim_auc_sub *sub)
{
  memset(sub, 0, sizeof(*sub));
  sub->imsi = imsi;
  sub->device = "dev1";
  sub->state = state;
  assert_int_equal(mcim_random(sub->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(sub->opc, 16), MCIM_OK);
  assert_int_equal(mcim_store_begin(f->st), MCIM_OK);
  assert_int_equal(mcim_auc_add(f->st, f->skey, sub), MCIM_OK);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f->st, imsi, true), MCIM_OK);
  assert_int_equal(mcim_store_commit(f->st), MCIM_OK);
}

static void hlr_keys_are(const struct hlr *h, const struct mcim_auc_sub *sub)
{
  char aud3g[200], want[200], k[33], opc[33];
  mcim_hex_encode(sub->k, 16, k);
  mcim_hex_encode(sub->opc, 16, opc);
  for (char *c = k; *c; c++)
    *c = (char)(*c >= 'a' ? *c - 32 : *c);
  for (char *c = opc; *c; c++)
    *c = (char)(*c >= 'a' ? *c - 32 : *c);
  ctrl_aud3g(h, sub->imsi, aud3g, sizeof(aud3g));
  snprintf(want, sizeof(want), "MILENAGE,%s,OPC,%s,5", k, opc);
  assert_int_equal(strcasecmp(aud3g, want), 0);
}

static int64_t intent_int(struct syncfx *f, const char *imsi, const char *col)
{
  char sql[96];
  int64_t v = -1;
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  snprintf(sql, sizeof(sql), "SELECT %s FROM auc_hlr WHERE imsi = ?", col);
  assert_int_equal(mcim_store_query_int(f->st, sql, p, 1, &v), MCIM_OK);
  return v;
}

/* Another instance's claim on `imsi`'s intent, until `lease` (0 or past: none), written from
 * its own connection. */
static mcim_cause_t set_lease(mcim_store_t *other, const char *imsi, int64_t lease)
{
  mcim_val_t p[] = {MCIM_INT(lease), MCIM_TEXT(imsi)};
  return mcim_store_exec(other, "UPDATE auc_hlr SET lease = ? WHERE imsi = ?", p, 2, NULL, NULL);
}

/* The intent recorded with the subscriber, applied after the commit: in the HLR with our keys,
 * once (a second run does nothing), its vectors accepted by the USIM; a crash before the apply
 * (the intent alone) converges at the next run or at the first attach; a create whose answer
 * was lost (the HLR has it, the intent is not done) is recognised as ours. */
static void test_sync_create(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a, c;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim u, next;
  mcim_milenage_t *m = NULL;
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000101", NULL, &a);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, ""); /* only intended so far */
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  hlr_keys_are(h, &a);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, a.k, a.opc), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&h->p, &u), MCIM_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                              detail, sizeof(detail)),
                     MCIM_OK);
    assert_int_equal(mcim_aka_usim_check(m, &h->p, &u, av.rand, av.autn, &next, &out), MCIM_OK);
    u = next;
  }
  mcim_milenage_free(m);

  /* the intent alone (a crash after the commit): the attach creates it */
  role_add(&f, h, "001010000000102", NULL, &c);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, c.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(intent_int(&f, c.imsi, "done"), 1);
  hlr_keys_are(h, &c);

  /* created, but the role never learnt it (the intent still pending): ours, done */
  struct mcim_auc_sub d;
  role_add(&f, h, "001010000000103", NULL, &d);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &d, detail, sizeof(detail)), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, d.imsi, "done"), 1);
  hlr_keys_are(h, &d);

  /* a pending or standby subscriber of the role gets no vector, whatever the HLR holds */
  struct mcim_auc_sub e;
  role_add(&f, h, "001010000000104", "pending", &e);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, e.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_SUBSCRIPTION_NOT_ACTIVE);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, "001010000000199", 1,
                                            mcim_now(), &av, detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  const char *all[] = {a.imsi, c.imsi, d.imsi, e.imsi}; /* the HLR as the other tests had it */
  for (size_t k = 0; k < 4; k++)
    (void)mcim_auc_backend_delete_sub(h->b, NULL, all[k], detail, sizeof(detail));
  mcim_wipe(&a, sizeof(a));
  syncfx_close(&f);
}

/* Someone else's subscriber under our IMSI (other keys): never taken for ours nor touched, the
 * intent stays pending with CONFLICT and backs off; a subscriber without Milenage data (a
 * create cut between its two CTRL commands) is made again with our keys. */
static void test_sync_conflict(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a, other, b;
  char detail[MCIM_AUC_DETAIL_LEN], reply[300], cmd[128];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000111", NULL, &a);
  other = a;
  assert_int_equal(mcim_random(other.k, 16), MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &other, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_CONFLICT);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  assert_true(intent_int(&f, a.imsi, "next_try") > mcim_now());
  hlr_keys_are(h, &other);
  /* the batch leaves it to its backoff */
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));

  role_add(&f, h, "001010000000112", NULL, &b);
  snprintf(cmd, sizeof(cmd), "SET 9 subscriber.create %s", b.imsi);
  ctrl_cmd(h, cmd, reply, sizeof(reply));
  assert_int_equal(strncmp(reply, "SET_REPLY 9 ", 12), 0);
  assert_int_equal(mcim_auc_backend_same_sub(h->b, NULL, &b, detail, sizeof(detail)),
                   MCIM_NOT_FOUND);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, b.imsi), MCIM_OK);
  hlr_keys_are(h, &b);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, b.imsi, detail, sizeof(detail));
  assert_int_equal(mcim_auc_backend_same_sub(h->b, NULL, &b, detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  syncfx_close(&f);
}

/* Termination (step 10, a failed or expired order, a switch away): the subscriber terminated
 * and its intent turned to absent in one transaction; after the run it is gone from the HLR,
 * which itself refuses the old IMSI (GSUP SendAuthInfo: UNKNOWN_IDENTITY); a second run and a
 * delete of what is already gone are done. A create that raced a newer intent is not marked
 * done: the delete runs after it. */
static void test_sync_delete(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000121", NULL, &a);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  hlr_keys_are(h, &a);
  assert_int_equal(mcim_store_begin(f.st), MCIM_OK);
  assert_int_equal(mcim_auc_terminate(f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f.st, a.imsi, false), MCIM_OK);
  assert_int_equal(mcim_store_commit(f.st), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "gen"), 2);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, "");
  /* the HLR itself: no vector for the old IMSI */
  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, a.imsi, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  /* and the role's record refuses it before asking */
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_SUBSCRIPTION_TERMINATED);
  /* again: already gone is done */
  assert_int_equal(mcim_store_exec(f.st, "UPDATE auc_hlr SET done = 0", NULL, 0, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);

  /* wanted, then unwanted before any run: the run deletes (nothing to create) */
  struct mcim_auc_sub b;
  role_add(&f, h, "001010000000122", NULL, &b);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f.st, b.imsi, false), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  ctrl_aud3g(h, b.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, "");
  syncfx_close(&f);
}

/* Two instances of the role on one database (two store handles, as two processes have): an
 * intent another instance has claimed is left to it, by the attach's run and by the batch
 * alike (the HLR untouched, the intent pending); once that claim has run out (its instance
 * died) the next run applies it and gives its own claim back. Then a process of its own (no
 * shared mutex) and this one run every intent of a batch at once: each subscriber is made
 * once, with our keys, every intent done and unclaimed. */
static void test_sync_two_instances(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  mcim_store_t *other = NULL;
  char aud3g[200], detail[MCIM_AUC_DETAIL_LEN];

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  role_add(&f, h, "001010000000141", NULL, &a);
  assert_int_equal(set_lease(other, a.imsi, mcim_now() + 60), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, ""); /* left to the instance that holds it */
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 0);
  /* that instance died: its claim runs out */
  assert_int_equal(set_lease(other, a.imsi, mcim_now() - 1), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  assert_int_equal(intent_int(&f, a.imsi, "lease"), 0);
  hlr_keys_are(h, &a);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));

  /* two processes, one batch of creates */
  enum { N = 12 };
  struct mcim_auc_sub subs[N];
  char imsis[N][16];
  for (int k = 0; k < N; k++) {
    snprintf(imsis[k], sizeof(imsis[k]), "0010100000002%02d", k);
    role_add(&f, h, imsis[k], NULL, &subs[k]);
  }
  mcim_store_close(other);
  other = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    mcim_store_t *mine = NULL;
    int bad = mcim_store_open(f.db, NULL, &mine) != MCIM_OK;
    for (int k = 0; !bad && k < N; k++)
      bad = mcim_auc_sync_run_in(h->b, f.skey, mine, imsis[k]) != MCIM_OK;
    mcim_store_close(mine);
    _exit(bad);
  }
  for (int k = N - 1; k >= 0; k--)
    assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, imsis[k]), MCIM_OK);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* whatever the child left claimed-and-done or not yet run: one more pass here */
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  for (int k = 0; k < N; k++) {
    assert_int_equal(intent_int(&f, imsis[k], "done"), 1);
    assert_int_equal(intent_int(&f, imsis[k], "lease"), 0);
    hlr_keys_are(h, &subs[k]);
    (void)mcim_auc_backend_delete_sub(h->b, NULL, imsis[k], detail, sizeof(detail));
  }
  syncfx_close(&f);
}

/* An apply that outlives its claim (test_sync_outcome_needs_the_claim). */
struct applier {
  struct hlr *h;
  struct syncfx *f;
  const char *imsi;
  mcim_cause_t rc;
};

static void *applier_main(void *arg)
{
  struct applier *a = arg;
  a->rc = mcim_auc_sync_run_in(a->h->b, a->f->skey, a->f->st, a->imsi);
  return NULL;
}

/* An apply of `ap->imsi`'s intent started on this connection while the HLR is stopped
 * (SIGSTOP): once it claimed the intent (its lease, returned), its request waits on the HLR,
 * until stalled_apply_end. 0: it did not claim within the guard (the HLR resumed already). */
static int64_t stalled_apply_start(struct applier *ap, mcim_store_t *other, pthread_t *th)
{
  int64_t lease = 0;
  mcim_val_t p[] = {MCIM_TEXT(ap->imsi)};
  assert_int_equal(kill(ap->h->pid, SIGSTOP), 0);
  if (pthread_create(th, NULL, applier_main, ap) != 0) {
    kill(ap->h->pid, SIGCONT);
    fail_msg("no thread for the apply");
  }
  const uint64_t guard = mcim_monotonic_ns() + 10000000000u;
  while (mcim_store_query_int(other, "SELECT lease FROM auc_hlr WHERE imsi = ?", p, 1,
                              &lease) == MCIM_OK &&
         lease == 0 && mcim_monotonic_ns() < guard) {
    struct timespec ms = {0, 2000000};
    nanosleep(&ms, NULL);
  }
  if (lease == 0) {
    kill(ap->h->pid, SIGCONT);
    pthread_join(*th, NULL);
  }
  return lease;
}

/* The HLR resumed: the stalled apply answers and ends. */
static void stalled_apply_end(struct applier *ap, pthread_t th)
{
  assert_int_equal(kill(ap->h->pid, SIGCONT), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
}

/* While the HLR is stopped (SIGSTOP) with an apply's request in it, that apply's claim is
 * taken over, as another instance does once a lease ran out. When the HLR answers, the first
 * apply's outcome is not written: the intent stays the other instance's (not done, its lease,
 * no attempt counted), so that its own outcome decides. Before 2026-12-07 the first apply
 * marked it done under the other's apply. */
static void test_sync_outcome_needs_the_claim(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  mcim_store_t *other = NULL;
  pthread_t th;
  char detail[MCIM_AUC_DETAIL_LEN];

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  role_add(&f, h, "001010000000151", NULL, &a);
  struct applier ap = {.h = h, .f = &f, .imsi = a.imsi, .rc = MCIM_INTERNAL};
  assert_int_not_equal(stalled_apply_start(&ap, other, &th), 0);
  /* another instance's claim, as once the first one's lease ran out */
  const int64_t theirs = mcim_now() + 600;
  mcim_cause_t took = set_lease(other, a.imsi, theirs);
  stalled_apply_end(&ap, th);
  assert_int_equal(took, MCIM_OK);
  assert_int_equal(ap.rc, MCIM_OK); /* the HLR has it... */
  hlr_keys_are(h, &a);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0); /* ...but the holder decides */
  assert_int_equal(intent_int(&f, a.imsi, "lease"), theirs);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 0);
  /* that claim runs out in turn: the next apply finds the create (ours) and marks it done */
  assert_int_equal(set_lease(other, a.imsi, mcim_now() - 1), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  assert_int_equal(intent_int(&f, a.imsi, "lease"), 0);
  mcim_store_close(other);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  syncfx_close(&f);
}

/* A stale apply after a newer intent: the delete of an ended subscription stalls past its
 * claim; meanwhile the subscription comes back (a switch back: a newer intent, present), and
 * another instance finds the subscriber still in the HLR and marks that intent done. Then the
 * stale delete lands. The newer intent is made due again under a generation of its own, and the
 * next apply creates the subscriber again: the HLR ends as the last intent says. Without it
 * (the stale apply writing nothing, a review of 7904f49) the intent stayed done with the
 * subscriber gone: attaches refused UNKNOWN_IDENTITY for good. */
static void test_sync_stale_apply_after_newer(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  mcim_store_t *other = NULL;
  pthread_t th;
  char detail[MCIM_AUC_DETAIL_LEN];

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  role_add(&f, h, "001010000000161", NULL, &a);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  hlr_keys_are(h, &a);
  /* the subscription ends: its delete is the intent, applied while the HLR is stopped */
  assert_int_equal(mcim_store_begin(f.st), MCIM_OK);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f.st, a.imsi, false), MCIM_OK);
  assert_int_equal(mcim_store_commit(f.st), MCIM_OK);
  struct applier ap = {.h = h, .f = &f, .imsi = a.imsi, .rc = MCIM_INTERNAL};
  assert_int_not_equal(stalled_apply_start(&ap, other, &th), 0);
  /* the subscription back (a newer intent), and another instance, its claim taken after the
   * stalled one's ran out, finds the subscriber still there: done */
  mcim_cause_t rc = mcim_store_begin(other);
  if (rc == MCIM_OK)
    rc = mcim_auc_sync_want_in(h->b, other, a.imsi, true);
  rc = rc == MCIM_OK ? mcim_store_commit(other) : (mcim_store_rollback(other), rc);
  int64_t gen = -1;
  mcim_val_t p[] = {MCIM_TEXT(a.imsi)};
  if (rc == MCIM_OK)
    rc = mcim_store_exec(other, "UPDATE auc_hlr SET done = 1, lease = 0 WHERE imsi = ?", p, 1,
                         NULL, NULL);
  if (rc == MCIM_OK)
    rc = mcim_store_query_int(other, "SELECT gen FROM auc_hlr WHERE imsi = ?", p, 1, &gen);
  stalled_apply_end(&ap, th); /* the stale delete lands */
  assert_int_equal(rc, MCIM_OK);
  assert_int_equal(ap.rc, MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "gen"), gen + 1);
  assert_int_equal(intent_int(&f, a.imsi, "next_try"), 0);
  /* the next apply makes the HLR what the last intent says */
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  hlr_keys_are(h, &a);
  mcim_store_close(other);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  syncfx_close(&f);
}

/* ---- a vector request waiting for another instance's create (test_avs_await_other) ---- */

#define AWAIT_NS 3000000000u /* ensure_applied's AWAIT_MS, src/roles/auc_sync.c */
#define GUARD_NS 30000000000u /* a hang guard only: no correct run comes near it */
/* A wait that runs to its bound takes the create up 3 s after the request began, a ms early
 * at most (its time left is counted in whole ms); taken up before this, 2.5 s after, it was by
 * a recheck or a wake (in about 10 ms when nothing is broken). */
#define TAKEN_UP_NS 2500000000u

/* The role's log as this test sees it: every line still goes to stderr, and the lines that
 * say a vector request found the create claimed by another instance and waits for it
 * ("subscriber IMSI being created by another instance: waiting") are counted, for the IMSI
 * watched: that instance's release can then come while the request waits, not before. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cv = PTHREAD_COND_INITIALIZER;
static char log_watched[96];
static int log_waits;

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
  (void)cookie;
  fwrite(buf, 1, n, stderr);
  pthread_mutex_lock(&log_mu);
  if (log_watched[0] && memmem(buf, n, log_watched, strlen(log_watched))) {
    log_waits++;
    pthread_cond_broadcast(&log_cv);
  }
  pthread_mutex_unlock(&log_mu);
  return (ssize_t)n;
}

static FILE *log_watch_start(void)
{
  FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t){.write = log_write});
  assert_non_null(f);
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_INFO, f);
  return f;
}

static void log_watch_end(FILE *f)
{
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL); /* the defaults again */
  fclose(f);
}

static void log_watch(const char *imsi)
{
  pthread_mutex_lock(&log_mu);
  snprintf(log_watched, sizeof(log_watched), "subscriber %s being created by another instance",
           imsi);
  log_waits = 0;
  pthread_mutex_unlock(&log_mu);
}

static int log_waits_now(void)
{
  pthread_mutex_lock(&log_mu);
  int n = log_waits;
  pthread_mutex_unlock(&log_mu);
  return n;
}

/* Until the request watched says it waits, at most GUARD_NS: true if it did. */
static bool log_wait_seen(void)
{
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)(GUARD_NS / 1000000000u);
  pthread_mutex_lock(&log_mu);
  int rc = 0;
  while (log_waits == 0 && rc == 0)
    rc = pthread_cond_timedwait(&log_cv, &log_mu, &until);
  bool seen = log_waits > 0;
  pthread_mutex_unlock(&log_mu);
  return seen;
}

/* The other instance of test_avs_await_other: once the vector request says it waits for the
 * create this instance claimed, its apply "ends" (the claim given back, not done); with `wake`
 * the release also reaches the request as the wake relay delivers another instance's (its
 * NOTIFY). Then it watches the row for the waiting instance taking the create up (its own
 * claim, or the create done): `reacted_ns` is when it saw that. */
struct releaser {
  const char *db;
  const char *imsi;
  bool wake;
  bool ok;
  uint64_t reacted_ns;
};

static void *releaser_main(void *arg)
{
  struct releaser *rl = arg;
  mcim_store_t *other = NULL;
  mcim_val_t p[] = {MCIM_TEXT(rl->imsi)};
  if (mcim_store_open(rl->db, NULL, &other) != MCIM_OK || !log_wait_seen())
    goto out;
  if (mcim_store_exec(other, "UPDATE auc_hlr SET lease = 0 WHERE imsi = ?", p, 1, NULL, NULL) !=
      MCIM_OK)
    goto out;
  if (rl->wake) {
    char key[MCIM_HTTP_WAIT_KEY_LEN];
    snprintf(key, sizeof(key), "auc:%s", rl->imsi);
    mcim_http_wake_local(key);
  }
  const uint64_t guard = mcim_monotonic_ns() + GUARD_NS;
  while (mcim_monotonic_ns() < guard) {
    int64_t taken = 0;
    if (mcim_store_query_int(other,
                             "SELECT lease != 0 OR done = 1 FROM auc_hlr WHERE imsi = ?", p, 1,
                             &taken) != MCIM_OK)
      goto out;
    if (taken) {
      rl->reacted_ns = mcim_monotonic_ns();
      rl->ok = true;
      break;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
out:
  mcim_store_close(other);
  return NULL;
}

/* A subscriber added and its pending create claimed by "the other instance" for a minute. */
static void add_claimed(struct syncfx *f, const struct hlr *h, mcim_store_t *other, const char *imsi,
                        struct mcim_auc_sub *sub)
{
  role_add(f, h, imsi, NULL, sub);
  assert_int_equal(set_lease(other, sub->imsi, mcim_now() + 60), MCIM_OK);
}

static void relay_none(const char *key, void *arg)
{
  (void)key;
  (void)arg;
}

/* Vectors asked while another instance holds the claim on the subscriber's pending create (two
 * instances, one HLR): they are waited for (the request says so), not refused with the HLR's
 * UNKNOWN_IDENTITY; once the claim is given back this instance takes the create up before its
 * wait's 3 s bound (found by a recheck of the row, or, with the relay live, by the release's
 * wake: nothing else could end the wait before that bound, the claim being for a minute), and
 * gets its vectors. A claim that never ends is waited for 3 s, not until the claim's end, then
 * the AuC's own answer goes back. */
static void test_avs_await_other(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN];
  mcim_store_t *other = NULL;
  pthread_t th;
  FILE *log = log_watch_start();

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  add_claimed(&f, h, other, "001010000000151", &a);
  log_watch(a.imsi);
  struct releaser rl = {.db = f.db, .imsi = a.imsi};
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(pthread_create(&th, NULL, releaser_main, &rl), 0);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  pthread_join(th, NULL);
  assert_int_equal(log_waits_now(), 1); /* waited for the other instance */
  assert_true(rl.ok);
  if (rl.reacted_ns - t0 >= TAKEN_UP_NS)
    fail_msg("the released create taken up after %llu ms: at the wait's bound, not by a"
             " recheck", (unsigned long long)((rl.reacted_ns - t0) / 1000000u));
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  hlr_keys_are(h, &a);

  /* a claim that does not end: waited for, bounded, then the HLR's answer. The bound is
   * measured by the clock the wait reads (at least 3 s, whatever the load); the claim runs a
   * minute, so a wait not bounded would last about 60 s, far past the guard. */
  struct mcim_auc_sub b;
  add_claimed(&f, h, other, "001010000000152", &b);
  log_watch(b.imsi);
  t0 = mcim_monotonic_ns();
  mcim_cause_t rc = mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, b.imsi, 1, mcim_now(), &av,
                                             detail, sizeof(detail));
  uint64_t took = mcim_monotonic_ns() - t0;
  assert_int_equal(log_waits_now(), 1);
  if (took < AWAIT_NS || took >= GUARD_NS)
    fail_msg("a claim that does not end waited %llu ms, not its 3 s bound",
             (unsigned long long)(took / 1000000u));
  assert_int_equal(rc, MCIM_UNKNOWN_IDENTITY);
  assert_int_equal(intent_int(&f, b.imsi, "done"), 0);

  /* the relay live (two instances on PostgreSQL): no rechecks of the row, the other instance's
   * release ends the wait through its wake; without that wake it would last the whole 3 s */
  struct mcim_auc_sub c;
  add_claimed(&f, h, other, "001010000000153", &c);
  log_watch(c.imsi);
  mcim_http_wake_relay(relay_none, NULL);
  mcim_http_wake_live(true);
  struct releaser rw = {.db = f.db, .imsi = c.imsi, .wake = true};
  t0 = mcim_monotonic_ns();
  assert_int_equal(pthread_create(&th, NULL, releaser_main, &rw), 0);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, c.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  pthread_join(th, NULL);
  mcim_http_wake_relay(NULL, NULL);
  assert_int_equal(log_waits_now(), 1);
  assert_true(rw.ok);
  if (rw.reacted_ns - t0 >= TAKEN_UP_NS)
    fail_msg("the released create taken up after %llu ms: at the wait's bound, not by the"
             " release's wake", (unsigned long long)((rw.reacted_ns - t0) / 1000000u));
  assert_int_equal(intent_int(&f, c.imsi, "done"), 1);
  hlr_keys_are(h, &c);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, c.imsi, detail, sizeof(detail));
  mcim_store_close(other);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  syncfx_close(&f);
  log_watch_end(log);
}

/* The HLR away: the intent stays pending with the cause and backs off; nothing lost. */
static void test_sync_hlr_down(void **state)
{
  struct hlr *h = *state;
  struct syncfx f = {.st = NULL};
  struct mcim_auc_sub a;
  struct mcim_auc_backend *down = NULL;
  char ip[INET_ADDRSTRLEN];

  syncfx_open(&f, h);
  /* an address of the same /8 where nothing listens */
  snprintf(ip, sizeof(ip), "127.65.%u.%u", (unsigned)getpid() % 250, 3u);
  struct mcim_auc_osmo_hlr_cfg c = {.gsup_addr = ip, .unit_name = "mcim-test-down",
                                    .timeout_ms = 500};
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &down), MCIM_OK);
  role_add(&f, h, "001010000000131", NULL, &a);
  assert_int_equal(mcim_auc_sync_run_in(down, f.skey, f.st, a.imsi), MCIM_PEER_UNREACHABLE);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  /* the HLR back: the next run (its backoff passed) creates it */
  assert_int_equal(mcim_store_exec(f.st, "UPDATE auc_hlr SET next_try = 0", NULL, 0, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  hlr_keys_are(h, &a);
  char detail[MCIM_AUC_DETAIL_LEN];
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  mcim_auc_backend_free(down);
  syncfx_close(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sync_create),
      cmocka_unit_test(test_sync_conflict),
      cmocka_unit_test(test_sync_delete),
      cmocka_unit_test(test_sync_hlr_down),
      cmocka_unit_test(test_sync_two_instances),
      cmocka_unit_test(test_sync_outcome_needs_the_claim),
      cmocka_unit_test(test_sync_stale_apply_after_newer),
      cmocka_unit_test(test_avs_await_other),
  };
  return cmocka_run_group_tests_name("osmo-hlr sync", tests, setup, teardown);
}
