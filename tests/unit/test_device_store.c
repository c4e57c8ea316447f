/* agent.db (src/device/store.c) and the resumption of a persisted procedure by a restarted
 * agent (src/device/procedures.c): one running procedure at a time, rows survive, the trace
 * has the roles' JSON with secrets redacted, and a restarted agent picks the procedure up at
 * its persisted step and fails it with a clear cause when the network never answers. And the
 * bound of agent.db (dev_store_purge): by age, by count, at start and at a procedure's end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "mcim/trace.h"
#include "unit/test_device_fixture.h"

static mcim_store_t *open_db(const char *dir)
{
  char path[256];
  mcim_store_t *st = NULL;
  snprintf(path, sizeof(path), "%s/agent.db", dir);
  assert_int_equal(mcim_store_open(path, NULL, &st), MCIM_OK);
  assert_int_equal(dev_store_migrate(st), MCIM_OK);
  return st;
}

static void proc_init(struct dev_proc *p, const char *txn, const char *stage, int n)
{
  int64_t now = mcim_now();
  memset(p, 0, sizeof(*p));
  snprintf(p->txn, sizeof(p->txn), "%s", txn);
  snprintf(p->kind, sizeof(p->kind), "initial");
  snprintf(p->sho, sizeof(p->sho), "sho-a");
  snprintf(p->state, sizeof(p->state), "running");
  snprintf(p->stage, sizeof(p->stage), "%s", stage);
  p->n = n;
  p->created = p->since = p->updated = now;
  p->deadline = now + 300;
  p->data = json_pack("{s:s}", "access", "vno");
}

static void one_running_procedure(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc a, b, got = {0};
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  assert_int_equal(dev_store_migrate(st), MCIM_OK); /* twice is fine */

  assert_int_equal(dev_proc_running(st, &got), MCIM_NOT_FOUND);
  assert_int_equal(dev_proc_latest(st, &got), MCIM_NOT_FOUND);
  proc_init(&a, FX_TXN, "attach", 4);
  proc_init(&b, FX_TXN2, "attach", 4);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  assert_int_equal(dev_proc_insert(st, &b), MCIM_DEVICE_BUSY);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_DEVICE_BUSY);

  /* the first ends: the same txn cannot start again, another can */
  snprintf(a.state, sizeof(a.state), "failed");
  snprintf(a.cause, sizeof(a.cause), "TIMEOUT");
  assert_int_equal(dev_proc_save(st, &a), MCIM_OK);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_CONFLICT);
  assert_int_equal(dev_proc_insert(st, &b), MCIM_OK);
  assert_int_equal(dev_proc_running(st, &got), MCIM_OK);
  assert_string_equal(got.txn, FX_TXN2);
  assert_int_equal(dev_proc_latest(st, &got), MCIM_OK);
  assert_string_equal(got.txn, FX_TXN2);
  dev_proc_clear(&got);
  dev_proc_clear(&a);
  dev_proc_clear(&b);
  mcim_store_close(st);
  fx_teardown(&fx);
}

static void procedure_survives_reopen(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc a, got = {0};
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  proc_init(&a, FX_TXN, "attach", 4);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  /* a step persists its results and the next position */
  snprintf(a.stage, sizeof(a.stage), "quote");
  a.n = 10;
  json_object_set_new(a.data, "validation_id", json_string("00112233445566778899aabbccddeeff"));
  json_object_set_new(a.data, "quote", json_string("eyJ.x.y"));
  snprintf(a.detail, sizeof(a.detail), "waiting");
  assert_int_equal(dev_proc_save(st, &a), MCIM_OK);
  mcim_store_close(st);

  st = open_db(fx.dir);
  assert_int_equal(dev_proc_load(st, FX_TXN, &got), MCIM_OK);
  assert_string_equal(got.stage, "quote");
  assert_int_equal(got.n, 10);
  assert_string_equal(got.state, "running");
  assert_string_equal(got.detail, "waiting");
  assert_string_equal(json_string_value(json_object_get(got.data, "quote")), "eyJ.x.y");
  assert_string_equal(json_string_value(json_object_get(got.data, "access")), "vno");
  assert_int_equal(got.deadline, a.deadline);

  json_t *j = dev_proc_json(&got);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "txn")), FX_TXN);
  assert_int_equal(json_integer_value(json_object_get(j, "step")), 10);
  assert_true(json_is_null(json_object_get(j, "cause")));
  assert_null(json_object_get(j, "data")); /* statements and certificates stay inside */
  /* the view (no data parsed) shows exactly the same */
  struct dev_proc view = {0};
  assert_int_equal(dev_proc_view(st, FX_TXN, &view), MCIM_OK);
  assert_int_equal(json_object_size(view.data), 0);
  json_t *jv = dev_proc_json(&view);
  assert_true(json_equal(j, jv));
  json_decref(jv);
  dev_proc_clear(&view);
  assert_int_equal(dev_proc_view(st, FX_TXN2, &view), MCIM_NOT_FOUND);
  json_decref(j);

  assert_int_equal(dev_proc_load(st, FX_TXN2, &got), MCIM_NOT_FOUND);
  /* a save of a procedure that is not there says so */
  struct dev_proc ghost;
  proc_init(&ghost, FX_TXN2, "attach", 4);
  assert_int_equal(dev_proc_save(st, &ghost), MCIM_NOT_FOUND);
  dev_proc_clear(&ghost);
  dev_proc_clear(&got);
  dev_proc_clear(&a);
  mcim_store_close(st);
  fx_teardown(&fx);
}

/* The worker's memo of the data's parse (dev_proc_running_memo, dev_proc_save_memo) serves
 * only what the row holds now: a row another handle rewrote (even to text of the same length)
 * and a save whose transaction rolled back are read as they are on disk; a copy handed out
 * is the caller's; a save of unchanged data writes text that reads back as that data. */
static json_t *row_data(mcim_store_t *st, const char *txn)
{
  struct dev_proc got = {0};
  assert_int_equal(dev_proc_load(st, txn, &got), MCIM_OK);
  json_t *d = json_incref(got.data);
  dev_proc_clear(&got);
  return d;
}

static void memo_never_stale(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc a, got = {0}, other = {0};
  struct dev_data_memo memo = {0};
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  mcim_store_t *st2 = open_db(fx.dir); /* another writer: the `mcim` CLI, another process */
  proc_init(&a, FX_TXN, "attach", 4);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  json_object_set_new(a.data, "quote", json_string("eyJ.aaaa.bbbb"));
  assert_int_equal(dev_proc_save_memo(st, &memo, &a), MCIM_OK);
  assert_non_null(memo.tree);
  assert_true(json_equal(memo.tree, a.data));

  /* a hit: the memo's parse, as a copy the caller may change */
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  assert_true(json_equal(got.data, a.data));
  assert_ptr_not_equal(got.data, memo.tree);
  json_object_set_new(got.data, "quote", json_string("changed in memory only"));
  dev_proc_clear(&got);
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(got.data, "quote")), "eyJ.aaaa.bbbb");
  dev_proc_clear(&got);

  /* another handle rewrites the row, the data's text keeping its length */
  assert_int_equal(dev_proc_load(st2, FX_TXN, &other), MCIM_OK);
  json_object_set_new(other.data, "quote", json_string("eyJ.cccc.dddd"));
  assert_int_equal(dev_proc_save(st2, &other), MCIM_OK);
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(got.data, "quote")), "eyJ.cccc.dddd");
  dev_proc_clear(&got);

  /* a save through the memo whose transaction rolls back: the row keeps the other's data */
  assert_int_equal(mcim_store_begin(st), MCIM_OK);
  json_object_set_new(a.data, "quote", json_string("eyJ.eeee.ffff"));
  assert_int_equal(dev_proc_save_memo(st, &memo, &a), MCIM_OK);
  assert_true(json_equal(memo.tree, a.data)); /* kept before the commit was known */
  assert_int_equal(mcim_store_rollback(st), MCIM_OK);
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(got.data, "quote")), "eyJ.cccc.dddd");
  json_t *disk = row_data(st2, FX_TXN);
  assert_true(json_equal(got.data, disk));
  json_decref(disk);
  dev_proc_clear(&got);

  /* unchanged data saved again (the memo's text, no dump) after another writer changed the
   * row: the row then holds exactly that data */
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  assert_int_equal(dev_proc_save(st2, &a), MCIM_OK); /* "eeee" from the other handle */
  assert_int_equal(dev_proc_save_memo(st, &memo, &got), MCIM_OK);
  disk = row_data(st2, FX_TXN);
  assert_true(json_equal(disk, got.data));
  assert_string_equal(json_string_value(json_object_get(disk, "quote")), "eyJ.cccc.dddd");
  json_decref(disk);
  dev_proc_clear(&got);

  /* data that does not read back as an object (a string holding NUL) is not kept: the round
   * reads what a plain read reads */
  json_object_set_new(a.data, "odd", json_stringn("a\0b", 3));
  assert_int_equal(dev_proc_save_memo(st, &memo, &a), MCIM_OK);
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_OK);
  disk = row_data(st2, FX_TXN);
  assert_true(json_equal(got.data, disk));
  assert_false(json_equal(got.data, a.data));
  json_decref(disk);
  dev_proc_clear(&got);

  /* an ended procedure empties the memo */
  json_object_del(a.data, "odd");
  snprintf(a.state, sizeof(a.state), "done");
  assert_int_equal(dev_proc_save_memo(st, &memo, &a), MCIM_OK);
  assert_null(memo.tree);
  assert_null(memo.text);
  assert_int_equal(dev_proc_running_memo(st, &memo, &got), MCIM_NOT_FOUND);

  dev_data_memo_clear(&memo);
  dev_proc_clear(&other);
  dev_proc_clear(&a);
  mcim_store_close(st2);
  mcim_store_close(st);
  fx_teardown(&fx);
}

static void trace_roles_json_redacted(void **state)
{
  (void)state;
  struct fx fx;
  json_t *events = NULL;
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  json_t *body = json_pack("{s:s,s:s}", "pcid", "001010000000001", "k", "00112233");
  dev_trace_put(st, FX_TXN, 4, FX_DEVICE, "vno", "attach (PCID)", body, MCIM_OK);
  dev_trace_put(st, FX_TXN, 5, FX_DEVICE, "vno", "authentication response (RES)", NULL,
                MCIM_RES_MISMATCH);
  dev_trace_put(st, FX_TXN2, 7, FX_DEVICE, "ro", "DRF: where is my SHO?", NULL, MCIM_OK);
  json_decref(body);
  assert_int_equal(dev_trace_load(st, FX_TXN, &events), MCIM_OK);
  assert_int_equal(json_array_size(events), 2);
  json_t *e0 = json_array_get(events, 0), *e1 = json_array_get(events, 1);
  assert_string_equal(json_string_value(json_object_get(e0, "txid")), FX_TXN);
  assert_int_equal(json_integer_value(json_object_get(e0, "n")), 4);
  assert_string_equal(json_string_value(json_object_get(e0, "from")), FX_DEVICE);
  assert_string_equal(json_string_value(json_object_get(e0, "to")), "vno");
  assert_string_equal(json_string_value(json_object_get(e0, "msg")), "attach (PCID)");
  assert_true(json_is_integer(json_object_get(e0, "time")));
  assert_null(json_object_get(e0, "cause"));
  const char *k = json_string_value(json_object_get(json_object_get(e0, "body"), "k"));
  assert_non_null(k);
  assert_string_not_equal(k, "00112233");
  assert_string_equal(json_string_value(json_object_get(e1, "cause")), "RES_MISMATCH");
  assert_true(json_is_null(json_object_get(e1, "body")));
  /* the roles' reader understands it */
  struct mcim_trace_event ev;
  assert_int_equal(mcim_trace_event_from_json(e0, &ev), MCIM_OK);
  json_decref(ev.body);
  json_decref(events);
  mcim_store_close(st);
  fx_teardown(&fx);
}

/* Wait until procedure `txn` left `running` (the worker's rounds), at most ~10 s. */
static void wait_done(const char *dir, const char *txn, struct dev_proc *got)
{
  for (int i = 0; i < 500; i++) {
    mcim_store_t *st = open_db(dir);
    mcim_cause_t rc = dev_proc_load(st, txn, got);
    mcim_store_close(st);
    if (rc == MCIM_OK && strcmp(got->state, "running") != 0)
      return;
    usleep(20000);
  }
  fail_msg("procedure %s still running", txn);
}

static void restart_resumes_at_persisted_step(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc a, got = {0};
  struct mcim_device *d = NULL;
  /* a short timeout: the network of the fixture never answers */
  assert_int_equal(fx_setup(&fx, ", \"procedure_timeout\": 2"), 0);

  /* what a previous run left: the procedure at step 7, past its attach */
  mcim_store_t *st = open_db(fx.dir);
  proc_init(&a, FX_TXN, "discover", 7);
  a.deadline = mcim_now() + 2;
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  mcim_store_close(st);

  assert_int_equal(mcim_device_start(fx.dir, &d), MCIM_OK);
  assert_string_equal(mcim_device_name(d), FX_DEVICE);
  wait_done(fx.dir, FX_TXN, &got);
  mcim_device_free(d);

  /* it resumed at "discover" (needs access: attach first), retried the unreachable VNO
   * until the deadline, and says where it stopped and why */
  assert_string_equal(got.state, "failed");
  assert_string_equal(got.cause, "TIMEOUT");
  assert_string_equal(got.result, "TIMEOUT");
  assert_string_equal(got.stage, "discover");
  assert_int_equal(got.n, 7);
  assert_non_null(strstr(got.detail, "step 7"));
  assert_non_null(strstr(got.detail, "vno"));

  /* the attempts are in the trace, with the procedure's txn and the seed's step */
  json_t *events = NULL;
  st = open_db(fx.dir);
  assert_int_equal(dev_trace_load(st, FX_TXN, &events), MCIM_OK);
  assert_true(json_array_size(events) >= 1);
  json_t *e0 = json_array_get(events, 0);
  assert_int_equal(json_integer_value(json_object_get(e0, "n")), 4);
  assert_string_equal(json_string_value(json_object_get(e0, "msg")), "attach (PCID)");
  assert_string_equal(json_string_value(json_object_get(e0, "cause")), "PEER_UNREACHABLE");
  json_decref(events);
  mcim_store_close(st);
  dev_proc_clear(&got);
  dev_proc_clear(&a);
  fx_teardown(&fx);
}

/* A procedure FX_TXN at a stage no table has, run by a real agent in `st`'s folder until it
 * ends (it fails at once): *got is its final row. `st` is closed. */
static void run_unknown_stage(struct fx *fx, mcim_store_t *st, struct dev_proc *got)
{
  struct dev_proc a;
  struct mcim_device *d = NULL;
  proc_init(&a, FX_TXN, "no-such-step", 9);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  mcim_store_close(st);
  assert_int_equal(mcim_device_start(fx->dir, &d), MCIM_OK);
  wait_done(fx->dir, FX_TXN, got);
  mcim_device_free(d);
  dev_proc_clear(&a);
}

static void unknown_stage_fails_cleanly(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc got = {0};
  assert_int_equal(fx_setup(&fx, ""), 0);
  run_unknown_stage(&fx, open_db(fx.dir), &got);
  assert_string_equal(got.state, "failed");
  assert_string_equal(got.cause, "INTERNAL");
  assert_non_null(strstr(got.detail, "no-such-step"));
  dev_proc_clear(&got);
  fx_teardown(&fx);
}

/* ---- agent.db's bound (dev_store_purge) ---- */

#define DAY 86400

/* txn number i: 32 hex digits, in the order of i */
static void txn_of(int i, char txn[DEV_TXN_LEN + 1])
{
  snprintf(txn, DEV_TXN_LEN + 1, "%032x", (unsigned)i);
}

/* A procedure that ended (done) last updated at `updated`, with `rows` trace rows from
 * `rows` seconds before then. */
static void put_ended(mcim_store_t *st, const char *txn, int64_t updated, int rows)
{
  struct dev_proc p;
  proc_init(&p, txn, "report", 15);
  p.created = p.since = updated - 60;
  assert_int_equal(dev_proc_insert(st, &p), MCIM_OK);
  snprintf(p.state, sizeof(p.state), "done");
  snprintf(p.result, sizeof(p.result), "success");
  p.updated = updated;
  assert_int_equal(dev_proc_save(st, &p), MCIM_OK);
  for (int i = 0; i < rows; i++)
    dev_trace_put_at(st, (updated - rows + i) * 1000000, txn, 4 + i, FX_DEVICE, "vno", "attach",
                     NULL, MCIM_OK);
  dev_proc_clear(&p);
}

/* The running procedure, created and last updated at `at`, with two trace rows then. */
static void put_running(mcim_store_t *st, const char *txn, int64_t at)
{
  struct dev_proc p;
  proc_init(&p, txn, "attach", 4);
  p.created = p.since = p.updated = at;
  assert_int_equal(dev_proc_insert(st, &p), MCIM_OK);
  dev_trace_put_at(st, at * 1000000, txn, 2, "subscriber", FX_DEVICE, "instruction", NULL,
                   MCIM_OK);
  dev_trace_put_at(st, at * 1000000 + 1, txn, 4, FX_DEVICE, "vno", "attach", NULL, MCIM_OK);
  dev_proc_clear(&p);
}

static int64_t count_of(mcim_store_t *st, const char *sql, const char *txn)
{
  int64_t n = -1;
  mcim_val_t v[] = {MCIM_TEXT(txn)};
  assert_int_equal(mcim_store_query_int(st, sql, v, txn ? 1 : 0, &n), MCIM_OK);
  return n;
}

static int64_t procs_of(mcim_store_t *st, const char *txn)
{
  return count_of(st, "SELECT COUNT(*) FROM procedures WHERE txn = ?", txn);
}

static int64_t rows_of(mcim_store_t *st, const char *txn)
{
  return count_of(st, "SELECT COUNT(*) FROM trace WHERE txn = ?", txn);
}

/* record_retention: an ended procedure last updated before now - retention goes with its
 * trace, one updated since stays whole (an old trace row of its included); the running one
 * stays whatever its age; trace rows of no procedure go once older than the retention. */
static void purge_by_age(void **state)
{
  (void)state;
  struct fx fx;
  char old[DEV_TXN_LEN + 1], recent[DEV_TXN_LEN + 1], edge[DEV_TXN_LEN + 1];
  char running[DEV_TXN_LEN + 1], lone_old[DEV_TXN_LEN + 1], lone_new[DEV_TXN_LEN + 1];
  int64_t now = mcim_now(), procs = -1, rows = -1;
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  txn_of(1, old);
  txn_of(2, recent);
  txn_of(3, edge);
  txn_of(4, running);
  txn_of(5, lone_old);
  txn_of(6, lone_new);
  put_ended(st, old, now - 40 * DAY, 3);
  put_ended(st, recent, now - 10 * DAY, 2);
  dev_trace_put_at(st, (now - 35 * DAY) * 1000000, recent, 0, FX_DEVICE, "ro", "notice", NULL,
                   MCIM_OK);
  put_ended(st, edge, now - 30 * DAY, 2); /* exactly the retention: not older, stays */
  put_running(st, running, now - 40 * DAY);
  /* a PCID renewal between procedures, an attach of the control API: under txns of their own */
  dev_trace_put_at(st, (now - 31 * DAY) * 1000000, lone_old, 0, FX_DEVICE, "ro", "PCID", NULL,
                   MCIM_OK);
  dev_trace_put_at(st, (now - 29 * DAY) * 1000000, lone_new, 0, FX_DEVICE, "vno", "attach",
                   NULL, MCIM_OK);

  assert_int_equal(dev_store_purge(st, now, 30 * DAY, 200, NULL, &procs, &rows), MCIM_OK);
  assert_int_equal(procs, 1);
  assert_int_equal(rows, 3 + 1);
  assert_int_equal(procs_of(st, old), 0);
  assert_int_equal(rows_of(st, old), 0);
  assert_int_equal(procs_of(st, recent), 1);
  assert_int_equal(rows_of(st, recent), 3);
  assert_int_equal(procs_of(st, edge), 1);
  assert_int_equal(rows_of(st, edge), 2);
  assert_int_equal(procs_of(st, running), 1);
  assert_int_equal(rows_of(st, running), 2);
  assert_int_equal(rows_of(st, lone_old), 0);
  assert_int_equal(rows_of(st, lone_new), 1);
  struct dev_proc got = {0};
  assert_int_equal(dev_proc_running(st, &got), MCIM_OK);
  assert_string_equal(got.txn, running);
  dev_proc_clear(&got);

  /* again: nothing more goes */
  assert_int_equal(dev_store_purge(st, now, 30 * DAY, 200, NULL, &procs, &rows), MCIM_OK);
  assert_int_equal(procs, 0);
  assert_int_equal(rows, 0);
  assert_int_equal(count_of(st, "SELECT COUNT(*) FROM procedures", NULL), 3);
  assert_int_equal(count_of(st, "SELECT COUNT(*) FROM trace", NULL), 3 + 2 + 2 + 1);
  mcim_store_close(st);
  fx_teardown(&fx);
}

/* records_max: the `max` most recently updated ended procedures stay (a tie on `updated`
 * decided by txn), the rest go with their trace; the running one is not counted and stays;
 * `keep` (the procedure that just ended) counts as the most recent whatever its `updated` (a
 * clock stepped back) and is never cut. */
static void purge_by_count(void **state)
{
  (void)state;
  struct fx fx;
  char t[8][DEV_TXN_LEN + 1], running[DEV_TXN_LEN + 1];
  int64_t now = mcim_now(), procs = -1, rows = -1;
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  for (int i = 0; i < 8; i++)
    txn_of(10 + i, t[i]);
  txn_of(99, running);
  /* t[0] oldest ... t[5] newest; t[5] and t[6] end in the same second (t[6] the greater
   * txn: the more recent); t[7], the greatest txn, ended before all of them */
  for (int i = 0; i < 6; i++)
    put_ended(st, t[i], now - 100 + 10 * i, 2);
  put_ended(st, t[6], now - 50, 2);
  put_ended(st, t[7], now - 1000, 1);
  put_running(st, running, now - 5000);

  /* four: t[6], t[5], t[4], t[3]; t[7], t[0..2] go */
  assert_int_equal(dev_store_purge(st, now, 30 * DAY, 4, NULL, &procs, &rows), MCIM_OK);
  assert_int_equal(procs, 4);
  assert_int_equal(rows, 1 + 3 * 2);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(procs_of(st, t[i]), 0);
    assert_int_equal(rows_of(st, t[i]), 0);
  }
  assert_int_equal(procs_of(st, t[7]), 0);
  assert_int_equal(rows_of(st, t[7]), 0);
  for (int i = 3; i < 7; i++) {
    assert_int_equal(procs_of(st, t[i]), 1);
    assert_int_equal(rows_of(st, t[i]), 2);
  }
  assert_int_equal(procs_of(st, running), 1);
  assert_int_equal(rows_of(st, running), 2);

  /* two, with t[3] (the oldest left) the one that just ended: t[3] and the most recent other,
   * t[6] (over t[5], the same second) */
  assert_int_equal(dev_store_purge(st, now, 30 * DAY, 2, t[3], &procs, &rows), MCIM_OK);
  assert_int_equal(procs, 2);
  assert_int_equal(rows, 2 * 2);
  assert_int_equal(procs_of(st, t[3]), 1);
  assert_int_equal(rows_of(st, t[3]), 2);
  assert_int_equal(procs_of(st, t[6]), 1);
  assert_int_equal(rows_of(st, t[6]), 2);
  assert_int_equal(procs_of(st, t[4]) + procs_of(st, t[5]), 0);
  assert_int_equal(rows_of(st, t[4]) + rows_of(st, t[5]), 0);

  /* one, the one that just ended: everything else ended goes; the running one stays */
  assert_int_equal(dev_store_purge(st, now, 30 * DAY, 1, t[3], &procs, &rows), MCIM_OK);
  assert_int_equal(procs, 1);
  assert_int_equal(procs_of(st, t[6]), 0);
  assert_int_equal(rows_of(st, t[6]), 0);
  assert_int_equal(count_of(st, "SELECT COUNT(*) FROM procedures", NULL), 2);
  assert_int_equal(count_of(st, "SELECT COUNT(*) FROM trace", NULL), 2 + 2);
  assert_int_equal(procs_of(st, running), 1);
  assert_int_equal(rows_of(st, running), 2);
  mcim_store_close(st);
  fx_teardown(&fx);
}

/* The agent purges at its start (records_max from agent.json): what ended while it was
 * stopped beyond the bound goes before anything runs; the running procedure stays. */
static void agent_purges_at_start(void **state)
{
  (void)state;
  struct fx fx;
  char a[DEV_TXN_LEN + 1], b[DEV_TXN_LEN + 1];
  struct mcim_device *d = NULL;
  int64_t now = mcim_now();
  assert_int_equal(fx_setup(&fx, ", \"records_max\": 1"), 0);
  mcim_store_t *st = open_db(fx.dir);
  txn_of(1, a);
  txn_of(2, b);
  put_ended(st, a, now - 100, 2);
  put_ended(st, b, now - 50, 2);
  put_running(st, FX_TXN, now - 10);
  mcim_store_close(st);

  assert_int_equal(mcim_device_open(fx.dir, &d), MCIM_OK);
  mcim_device_free(d);
  st = open_db(fx.dir);
  assert_int_equal(procs_of(st, a), 0);
  assert_int_equal(rows_of(st, a), 0);
  assert_int_equal(procs_of(st, b), 1);
  assert_int_equal(rows_of(st, b), 2);
  assert_int_equal(procs_of(st, FX_TXN), 1);
  assert_int_equal(rows_of(st, FX_TXN), 2);
  mcim_store_close(st);
  fx_teardown(&fx);

  /* out of range: refused with the key named */
  char err[1024] = "";
  assert_int_equal(fx_setup(&fx, ", \"records_max\": 0, \"record_retention\": \"10s\""), 0);
  assert_int_equal(mcim_device_check_config(fx.dir, err, sizeof(err)), MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "records_max"));
  assert_non_null(strstr(err, "record_retention"));
  fx_teardown(&fx);
}

/* The agent purges when a procedure ends, and the one that ended stays even when another
 * ended record looks more recent (a clock set back): with records_max 1, only it is left. */
static void agent_purges_at_end(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc got = {0};
  assert_int_equal(fx_setup(&fx, ", \"records_max\": 1"), 0);
  mcim_store_t *st = open_db(fx.dir);
  put_ended(st, FX_TXN2, mcim_now() + 3600, 2);
  run_unknown_stage(&fx, st, &got);
  assert_string_equal(got.state, "failed");
  st = open_db(fx.dir);
  assert_int_equal(procs_of(st, FX_TXN2), 0);
  assert_int_equal(rows_of(st, FX_TXN2), 0);
  assert_int_equal(count_of(st, "SELECT COUNT(*) FROM procedures", NULL), 1);
  assert_int_equal(procs_of(st, FX_TXN), 1);
  mcim_store_close(st);
  dev_proc_clear(&got);
  fx_teardown(&fx);
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(one_running_procedure),
      cmocka_unit_test(procedure_survives_reopen),
      cmocka_unit_test(memo_never_stale),
      cmocka_unit_test(trace_roles_json_redacted),
      cmocka_unit_test(restart_resumes_at_persisted_step),
      cmocka_unit_test(unknown_stage_fails_cleanly),
      cmocka_unit_test(purge_by_age),
      cmocka_unit_test(purge_by_count),
      cmocka_unit_test(agent_purges_at_start),
      cmocka_unit_test(agent_purges_at_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
