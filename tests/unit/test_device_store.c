/* agent.db (src/device/store.c) and the resumption of a persisted procedure by a restarted
 * agent (src/device/procedures.c): one running procedure at a time, rows survive, the trace
 * has the roles' JSON with secrets redacted, and a restarted agent picks the procedure up at
 * its persisted step and fails it with a clear cause when the network never answers. */
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

static void unknown_stage_fails_cleanly(void **state)
{
  (void)state;
  struct fx fx;
  struct dev_proc a, got = {0};
  struct mcim_device *d = NULL;
  assert_int_equal(fx_setup(&fx, ""), 0);
  mcim_store_t *st = open_db(fx.dir);
  proc_init(&a, FX_TXN, "no-such-step", 9);
  assert_int_equal(dev_proc_insert(st, &a), MCIM_OK);
  mcim_store_close(st);
  assert_int_equal(mcim_device_start(fx.dir, &d), MCIM_OK);
  wait_done(fx.dir, FX_TXN, &got);
  mcim_device_free(d);
  assert_string_equal(got.state, "failed");
  assert_string_equal(got.cause, "INTERNAL");
  assert_non_null(strstr(got.detail, "no-such-step"));
  dev_proc_clear(&got);
  dev_proc_clear(&a);
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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
