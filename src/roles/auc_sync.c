/* A role's subscribers in a remote AuC: intents written with the subscriber's change, applied
 * after the commit until they hold (src/roles/auc_sync.h). */
#include "roles/auc_sync.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_config.h"

#define SYNC_BATCH 16
#define BACKOFF_MAX_S 300

/* want: 'present' or 'absent'; gen: bumped by every new intent, so that an apply that raced a
 * newer one does not mark it done; next_try: the backoff after a failure (seconds). */
const char mcim_auc_hlr_schema_sql[] =
    "CREATE TABLE auc_hlr (imsi TEXT PRIMARY KEY, want TEXT NOT NULL, gen BIGINT NOT NULL,"
    " done BIGINT NOT NULL, attempts BIGINT NOT NULL, next_try BIGINT NOT NULL, cause TEXT,"
    " updated BIGINT NOT NULL);"
    "CREATE INDEX auc_hlr_due ON auc_hlr (done, next_try)";

const char mcim_auc_hlr_lease_sql[] = "ALTER TABLE auc_hlr ADD COLUMN lease BIGINT NOT NULL"
                                      " DEFAULT 0";

mcim_cause_t mcim_auc_sync_want_in(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi,
                                   bool present)
{
  if (mcim_auc_is_builtin(b))
    return MCIM_OK;
  mcim_val_t p[] = {MCIM_TEXT(imsi), MCIM_TEXT(present ? "present" : "absent"),
                    MCIM_INT(mcim_now())};
  return mcim_store_exec(st,
                         "INSERT INTO auc_hlr (imsi, want, gen, done, attempts, next_try, cause,"
                         " updated) VALUES (?, ?, 1, 0, 0, 0, NULL, ?) ON CONFLICT (imsi) DO"
                         " UPDATE SET want = excluded.want, gen = auc_hlr.gen + 1, done = 0,"
                         " attempts = 0, next_try = 0, cause = NULL, updated = excluded.updated",
                         p, MCIM_NPARAMS(p), NULL, NULL);
}

mcim_cause_t mcim_auc_sync_unwant_others(struct mcim_role *r, mcim_store_t *st, const char *device,
                                         const char *keep1, const char *keep2)
{
  if (mcim_auc_is_builtin(r->auc))
    return MCIM_OK;
  mcim_val_t p[] = {MCIM_INT(mcim_now()), MCIM_TEXT(device), MCIM_TEXT(keep1), MCIM_TEXT(keep2)};
  return mcim_store_exec(st,
                         "UPDATE auc_hlr SET want = 'absent', gen = gen + 1, done = 0,"
                         " attempts = 0, next_try = 0, cause = NULL, updated = ? WHERE imsi IN"
                         " (SELECT imsi FROM auc WHERE device = ? AND imsi <> ? AND imsi <> ?"
                         " AND state = 'active')",
                         p, MCIM_NPARAMS(p), NULL, NULL);
}

struct intent {
  char imsi[24], want[16];
  int64_t gen, done, attempts, lease;
};

struct intents {
  struct intent v[SYNC_BATCH];
  size_t n;
};

static mcim_cause_t intent_row(const mcim_row_t *row, void *arg)
{
  struct intents *b = arg;
  if (b->n == SYNC_BATCH)
    return MCIM_OK;
  struct intent *i = &b->v[b->n++];
  snprintf(i->imsi, sizeof(i->imsi), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  snprintf(i->want, sizeof(i->want), "%s", mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  i->gen = mcim_row_int(row, 2);
  i->done = mcim_row_int(row, 3);
  i->attempts = mcim_row_int(row, 4);
  i->lease = mcim_row_int(row, 5);
  return MCIM_OK;
}

/* How long an apply may hold its intent: the most requests one makes (a create of two CTRL
 * commands, the check of a subscriber found, its delete, the create again) each at the
 * backend's timeout, and a second's margin (mcim_now() is in whole seconds). */
#define APPLY_REQUESTS 6
static int64_t lease_s(const struct mcim_auc_backend *b)
{
  return ((int64_t)APPLY_REQUESTS * b->request_timeout_ms + 999) / 1000 + 1;
}

/* Whether a claim taken until `lease` still covers one more request with its margin. */
static bool lease_holds(const struct mcim_auc_backend *b, int64_t lease)
{
  return mcim_now() + (b->request_timeout_ms + 999) / 1000 + 1 < lease;
}

/* Make the AuC hold `imsi` with the keys of our record (a create repeated after a crash finds
 * it: ours if the keys are). */
static mcim_cause_t apply_present(struct mcim_auc_backend *b, const mcim_storage_key_t *skey,
                                  mcim_store_t *st, const char *imsi, int64_t lease, bool *found,
                                  char *detail, size_t dlen)
{
  struct mcim_auc_sub sub = {.imsi = imsi};
  mcim_cause_t rc = mcim_auc_keys(st, skey, imsi, &sub, NULL);
  if (rc != MCIM_OK) {
    mcim_detailf(detail, dlen, "AuC: the record of %s is unreadable (%s)", imsi,
                 mcim_cause_name(rc));
    goto out;
  }
  rc = mcim_auc_backend_create_sub(b, st, &sub, detail, dlen);
  if (rc == MCIM_CONFLICT) {
    rc = mcim_auc_backend_same_sub(b, st, &sub, detail, dlen);
    *found = rc == MCIM_OK;
    if (rc == MCIM_NOT_FOUND && !lease_holds(b, lease)) {
      /* keyless, but our claim may end before the delete and the create: another instance
       * could be making it now; the next try (after the lease) looks again */
      mcim_detailf(detail, dlen, "AuC: the claim on %s ran out before its repair", imsi);
      rc = MCIM_TIMEOUT;
    } else if (rc == MCIM_NOT_FOUND) {
      /* a create cut between its two CTRL commands (a crash, or an apply whose claim ran
       * out): keyless, so nobody used it */
      rc = mcim_auc_backend_delete_sub(b, st, imsi, detail, dlen);
      if (rc == MCIM_OK || rc == MCIM_UNKNOWN_IDENTITY)
        rc = mcim_auc_backend_create_sub(b, st, &sub, detail, dlen);
    } else if (rc == MCIM_UNKNOWN_IDENTITY) {
      rc = mcim_auc_backend_create_sub(b, st, &sub, detail, dlen); /* deleted meanwhile */
    }
  }
out:
  mcim_wipe(&sub, sizeof(sub));
  return rc;
}

/* Claim the intent for this apply: one instance at a time applies an intent, whichever
 * process it runs in (several instances of a role on one database). Concurrent applies of
 * one create raced at the remote AuC: one saw the other's subscriber between its two CTRL
 * commands (keyless), took it for a create cut by a crash, deleted it, and an attach in
 * between was answered UNKNOWN_IDENTITY (change_procedures_hlr, under ASan). The claim is a
 * compare-and-set on the row's lease, so the database decides, not this process's memory; a
 * claimant that dies leaves the lease to run out (lease_s), and the next run takes it. The
 * outcome's update gives the lease back (release). *claimed false: someone else holds it. */
static mcim_cause_t claim(struct mcim_auc_backend *b, mcim_store_t *st, const struct intent *i,
                          int64_t *lease, bool *claimed)
{
  int64_t now = mcim_now();
  *lease = now + lease_s(b);
  mcim_val_t p[] = {MCIM_INT(*lease), MCIM_TEXT(i->imsi), MCIM_INT(i->gen), MCIM_INT(now)};
  mcim_cause_t rc = mcim_store_exec(st,
                                    "UPDATE auc_hlr SET lease = ? WHERE imsi = ? AND gen = ?"
                                    " AND done = 0 AND lease <= ?",
                                    p, MCIM_NPARAMS(p), NULL, NULL);
  *claimed = rc == MCIM_OK && mcim_store_changes(st) == 1;
  return rc;
}

/* The claim given back once the outcome is written, whatever intent came meanwhile (a newer
 * one is then due at once), unless it ran out and another apply holds the row now. */
static void release(mcim_store_t *st, const char *imsi, int64_t lease)
{
  mcim_val_t p[] = {MCIM_TEXT(imsi), MCIM_INT(lease)};
  if (mcim_store_exec(st, "UPDATE auc_hlr SET lease = 0 WHERE imsi = ? AND lease = ?", p,
                      MCIM_NPARAMS(p), NULL, NULL) == MCIM_OK &&
      mcim_store_changes(st) == 1)
    mcim_http_wake("auc:%s", imsi); /* a vector request of any instance waits for it */
}

/* An apply whose claim ran out, done at the HLR (or cut there) after a newer intent came: the
 * newer one's apply may have found the HLR as it wanted before this stale one changed it (a
 * delete after the create was found there, say) and marked it done. So the newer intent is
 * made due again under a generation of its own, which also keeps an apply of it still under
 * way from marking it done. The same intent redone by its holder needs nothing: both applies
 * want the same. */
static void stale_apply_done(mcim_store_t *st, const struct intent *i)
{
  mcim_val_t p[] = {MCIM_TEXT(i->imsi), MCIM_INT(i->gen)};
  if (mcim_store_exec(st,
                      "UPDATE auc_hlr SET gen = gen + 1, done = 0, next_try = 0"
                      " WHERE imsi = ? AND gen <> ?",
                      p, 2, NULL, NULL) == MCIM_OK &&
      mcim_store_changes(st) == 1)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_OK,
                   "AuC: an apply of %s outlived its claim after a newer intent: that one is"
                   " applied again", i->imsi);
}

/* One intent against the AuC, then its row: done (if no newer intent came meanwhile), or the
 * next try backed off. */
static mcim_cause_t apply(struct mcim_auc_backend *b, const mcim_storage_key_t *skey,
                          mcim_store_t *st, const struct intent *i)
{
  char detail[MCIM_AUC_DETAIL_LEN] = "";
  bool present = strcmp(i->want, "present") == 0, found = false, claimed = false;
  int64_t lease = 0;
  mcim_cause_t rc = claim(b, st, i, &lease, &claimed);
  if (rc != MCIM_OK || !claimed)
    return rc; /* another instance is applying it: its outcome, or its lease's end, decides */
  rc = present ? apply_present(b, skey, st, i->imsi, lease, &found, detail, sizeof(detail))
               : mcim_auc_backend_delete_sub(b, st, i->imsi, detail, sizeof(detail));
  if (!present && rc == MCIM_UNKNOWN_IDENTITY) {
    rc = MCIM_OK; /* already gone: what was wanted */
    found = true;
  }
  int64_t now = mcim_now();
  /* The outcome is written only while the claim is still ours (lease = ours): an apply that
   * outlived its lease (a stalled HLR, a paused process) may find another instance redoing
   * the intent, and marking it done, or counting an attempt, would decide for that apply,
   * whose own outcome (a repair cut halfway, say) would then be lost. Not ours: the holder's
   * outcome or its lease's end decides (stale_apply_done). */
  bool ours = false;
  if (rc == MCIM_OK) {
    mcim_val_t p[] = {MCIM_INT(i->gen), MCIM_INT(now), MCIM_TEXT(i->imsi), MCIM_INT(lease)};
    mcim_cause_t src = mcim_store_exec(st,
                                       "UPDATE auc_hlr SET done = CASE WHEN gen = ? THEN 1 ELSE"
                                       " 0 END, attempts = 0, cause = NULL, updated = ?"
                                       " WHERE imsi = ? AND lease = ?",
                                       p, MCIM_NPARAMS(p), NULL, NULL);
    ours = src == MCIM_OK && mcim_store_changes(st) == 1;
    if (src == MCIM_OK && !ours)
      stale_apply_done(st, i);
    release(st, i->imsi, lease);
    /* found: a concurrent apply (handler, tick, attach) or one before a crash did it */
    mcim_log_event(ours ? MCIM_LOG_INFO : MCIM_LOG_WARN, NULL, 0, MCIM_OK,
                   "AuC %s: subscriber %s %s%s", mcim_auc_backend_name(b), i->imsi,
                   present ? (found ? "already created (ours)" : "created")
                           : (found ? "already deleted" : "deleted"),
                   src != MCIM_OK || ours ? ""
                                          : ", but the claim ran out before the outcome: the"
                                            " instance that holds it now decides");
    return src;
  }
  int64_t wait = 1;
  for (int64_t a = 0; a < i->attempts && wait < BACKOFF_MAX_S; a++)
    wait *= 2;
  if (wait > BACKOFF_MAX_S)
    wait = BACKOFF_MAX_S;
  mcim_val_t p[] = {MCIM_INT(now + wait), MCIM_TEXT(mcim_cause_name(rc)), MCIM_INT(now),
                    MCIM_TEXT(i->imsi), MCIM_INT(i->gen),    MCIM_INT(lease)};
  ours = mcim_store_exec(st,
                         "UPDATE auc_hlr SET attempts = attempts + 1, next_try = ?, cause = ?,"
                         " updated = ? WHERE imsi = ? AND gen = ? AND lease = ?",
                         p, MCIM_NPARAMS(p), NULL, NULL) == MCIM_OK &&
         mcim_store_changes(st) == 1;
  if (!ours)
    stale_apply_done(st, i);
  release(st, i->imsi, lease);
  mcim_log_event(rc == MCIM_CONFLICT ? MCIM_LOG_ERROR : MCIM_LOG_WARN, NULL, 0, rc,
                 "AuC %s: subscriber %s not %s yet (attempt %lld, next in %llds%s): %s",
                 mcim_auc_backend_name(b), i->imsi, present ? "created" : "deleted",
                 (long long)i->attempts + 1, (long long)wait,
                 ours ? "" : "; not counted: a newer intent or another claim decides",
                 detail[0] ? detail : mcim_cause_text(rc));
  return rc;
}

/* One apply at a time in this process, the intents read under the same lock: the handler
 * after its commit, the worker's tick it woke and an attach that finds the create pending wait
 * for each other here and the later ones read the intent done (an attach then gets its
 * vectors), where the claim alone would send them on without the subscriber. Between
 * instances the claim (above) keeps it to one apply. Intents are rare (a subscription's
 * changes), so one lock costs nothing worth a finer one. */
static pthread_mutex_t apply_lock = PTHREAD_MUTEX_INITIALIZER;

static mcim_cause_t run_in(struct mcim_auc_backend *auc, const mcim_storage_key_t *skey,
                           mcim_store_t *st, const char *imsi, size_t *found)
{
  struct intents b = {.n = 0};
  mcim_cause_t rc;

  if (mcim_auc_is_builtin(auc))
    return MCIM_OK;
  if (!st)
    return MCIM_STORE_ERROR;
  pthread_mutex_lock(&apply_lock);
  if (imsi) {
    mcim_val_t p[] = {MCIM_TEXT(imsi)};
    rc = mcim_store_exec(
        st, "SELECT imsi, want, gen, done, attempts, lease FROM auc_hlr WHERE imsi = ?", p, 1,
        intent_row, &b);
    if (rc == MCIM_OK && b.n > 0 && !b.v[0].done)
      rc = apply(auc, skey, st, &b.v[0]);
    goto out;
  }
  mcim_val_t p[] = {MCIM_INT(mcim_now()), MCIM_INT(mcim_now())};
  rc = mcim_store_exec(st,
                       "SELECT imsi, want, gen, done, attempts, lease FROM auc_hlr WHERE done = 0"
                       " AND next_try <= ? AND lease <= ? ORDER BY next_try LIMIT 16",
                       p, 2, intent_row, &b);
  if (found)
    *found = b.n;
  for (size_t k = 0; rc == MCIM_OK && k < b.n; k++) {
    mcim_cause_t one = apply(auc, skey, st, &b.v[k]);
    if (mcim_auc_cause_is_remote(one))
      break; /* the AuC is away: the rest wait for their own next try */
  }
out:
  pthread_mutex_unlock(&apply_lock);
  return rc;
}

mcim_cause_t mcim_auc_sync_run_in(struct mcim_auc_backend *auc, const mcim_storage_key_t *skey,
                                  mcim_store_t *st, const char *imsi)
{
  return run_in(auc, skey, st, imsi, NULL);
}

/* Before vectors are asked of the AuC: a create still pending is applied now, and one that
 * another instance of the role is applying (its claim holds: two instances, one HLR) is waited
 * for, at most AWAIT_MS. Without the wait the AuC, which does not hold the subscriber yet,
 * refuses it (UNKNOWN_IDENTITY) and the device's attach fails, where one instance's apply_lock
 * would have made it wait for its own apply (found by tests/integration/hlr_scale_out.sh: a
 * switch's attach at the other instance). A claim is given back when its apply ends, so the
 * wait is that apply's few requests; past AWAIT_MS the AuC's own answer goes back.
 *
 * What ends the wait: the release's wake (release(): "auc:IMSI"), which reaches this process
 * through the wake relay when the other instance released it (a PostgreSQL NOTIFY after its
 * UPDATE, src/roles/wake_relay.c), the lease's end (an instance killed while it applied), or,
 * while the relay is not live (its connection lost, or SQLite: one instance, so only a claim
 * left by a process that died), a read of the row every AWAIT_RECHECK_MS. */
#define AWAIT_MS 3000
#define AWAIT_RECHECK_MS 10
static void ensure_applied(struct mcim_auc_backend *b, const mcim_storage_key_t *skey,
                           mcim_store_t *st, const char *imsi)
{
  char key[MCIM_HTTP_WAIT_KEY_LEN];
  snprintf(key, sizeof(key), "auc:%s", imsi);
  const uint64_t end = mcim_monotonic_ns() + (uint64_t)AWAIT_MS * 1000000u;
  for (bool told = false;;) {
    const uint64_t since = mcim_monotonic_ns(); /* a release from here on ends the wait */
    (void)run_in(b, skey, st, imsi, NULL);
    struct intents x = {.n = 0};
    mcim_val_t p[] = {MCIM_TEXT(imsi)};
    mcim_cause_t rc = mcim_store_exec(
        st, "SELECT imsi, want, gen, done, attempts, lease FROM auc_hlr WHERE imsi = ?", p, 1,
        intent_row, &x);
    int64_t now = mcim_now();
    if (rc != MCIM_OK || x.n == 0 || x.v[0].done || strcmp(x.v[0].want, "present") != 0 ||
        x.v[0].lease <= now || since >= end)
      return;
    if (!told)
      mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK,
                     "AuC %s: subscriber %s being created by another instance: waiting",
                     mcim_auc_backend_name(b), imsi);
    told = true;
    uint64_t left_ms = (end - since) / 1000000u;
    uint64_t lease_ms = (uint64_t)(x.v[0].lease - now) * 1000u; /* whole seconds: at most */
    (void)mcim_http_await_wake(key, since, (unsigned)(lease_ms < left_ms ? lease_ms : left_ms),
                               AWAIT_RECHECK_MS);
  }
}

/* The role's record decides (what the built-in AuC checks in mcim_auc_gen_avs). */
static mcim_cause_t record_allows(mcim_store_t *st, const char *imsi, int64_t now, bool resync,
                                  char *detail, size_t dlen)
{
  char state[16] = "";
  int64_t expires = 0;
  mcim_cause_t rc = mcim_auc_state(st, imsi, state, &expires);
  if (rc == MCIM_NOT_FOUND)
    rc = MCIM_UNKNOWN_IDENTITY;
  else if (rc == MCIM_OK)
    rc = mcim_auc_no_vectors(state, expires, now, resync);
  if (rc != MCIM_OK)
    mcim_detailf(detail, dlen, "AuC: %s for IMSI %s", mcim_cause_text(rc), imsi);
  return rc;
}

mcim_cause_t mcim_auc_sync_gen_avs_in(struct mcim_auc_backend *b, const mcim_storage_key_t *skey,
                                      mcim_store_t *st, const char *imsi, int n, int64_t now,
                                      struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  if (!mcim_auc_is_builtin(b)) {
    mcim_cause_t rc = record_allows(st, imsi, now, false, detail, dlen);
    if (rc != MCIM_OK)
      return rc;
    /* a create still pending: now (its failure is logged), or another instance's awaited */
    ensure_applied(b, skey, st, imsi);
  }
  return mcim_auc_backend_gen_avs(b, st, imsi, n, now, avs, detail, dlen);
}

mcim_cause_t mcim_auc_sync_resync(struct mcim_role *r, mcim_store_t *st, const char *imsi,
                                  const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                  const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                  struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  if (!mcim_auc_is_builtin(r->auc)) {
    mcim_cause_t rc = record_allows(st, imsi, now, true, detail, dlen);
    if (rc != MCIM_OK)
      return rc;
    ensure_applied(r->auc, r->storage_key, st, imsi);
  }
  return mcim_auc_backend_resync(r->auc, st, imsi, rand, auts, n, now, avs, detail, dlen);
}

/* ---- the role's forms ---- */

mcim_cause_t mcim_auc_sync_want(struct mcim_role *r, mcim_store_t *st, const char *imsi,
                                bool present)
{
  return mcim_auc_sync_want_in(r->auc, st, imsi, present);
}

mcim_cause_t mcim_auc_sync_run(struct mcim_role *r, const char *imsi)
{
  if (mcim_auc_is_builtin(r->auc))
    return MCIM_OK;
  return mcim_auc_sync_run_in(r->auc, r->storage_key, mcim_role_store(r), imsi);
}

bool mcim_auc_sync_tick(struct mcim_role *r)
{
  size_t found = 0;
  if (mcim_auc_is_builtin(r->auc))
    return false;
  (void)run_in(r->auc, r->storage_key, mcim_role_store(r), NULL, &found);
  return found > 0;
}

mcim_cause_t mcim_auc_sync_gen_avs(struct mcim_role *r, mcim_store_t *st, const char *imsi, int n,
                                   int64_t now, struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  return mcim_auc_sync_gen_avs_in(r->auc, r->storage_key, st, imsi, n, now, avs, detail, dlen);
}
