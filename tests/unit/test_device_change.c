/* The change of subscription and the pre-provisioned variant in the agent, what can be
 * tested without a network (src/device/change.c, preprovisioned.c, procedures.c): the step
 * tables and their seed numbers, what each procedure needs from the TRE's slots, the TRE's
 * inactive install, and the persistence of a change across a restart (resume at the persisted
 * step; a change via the old SHO that times out at step 9 keeps the new MCIM staged). The
 * network is unreachable (port 1) throughout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/http.h"
#include "mcim/log.h"
#include "unit/test_device_fixture.h"

#define TXN_A "000000000000000000000000000000aa"
#define TXN_B "000000000000000000000000000000bb"

struct ctx {
  struct fx fx;
  struct mcim_device *d;
  mcim_tre_t *tre; /* a second handle on the device's TRE (the state is shared) */
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  if (!c || fx_setup(&c->fx, ", \"procedure_timeout\": 60") != 0 ||
      mcim_tre_soft_open(c->fx.tre, &c->tre) != MCIM_OK)
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  mcim_device_free(c->d);
  mcim_tre_close(c->tre);
  fx_teardown(&c->fx);
  free(c);
  return 0;
}

static void start(struct ctx *c)
{
  assert_int_equal(mcim_device_start(c->fx.dir, &c->d), MCIM_OK);
}

/* ---- step tables ---- */

struct want {
  const char *name;
  int n;
};

static void table_is(const char *kind, const char *via, const struct want *w, size_t nw,
                     int last)
{
  const struct dev_procedure *pr = dev_procedure_find(kind, via);
  assert_non_null(pr);
  assert_int_equal(pr->nsteps, nw);
  for (size_t i = 0; i < nw; i++) {
    assert_string_equal(pr->steps[i].name, w[i].name);
    assert_int_equal(pr->steps[i].n, w[i].n);
    assert_non_null(pr->steps[i].run);
  }
  assert_int_equal(pr->last, last);
  const char *stage = NULL;
  int n = -1;
  assert_int_equal(dev_procedure_first(kind, via, &stage, &n), MCIM_OK);
  assert_string_equal(stage, w[0].name);
  assert_int_equal(n, w[0].n);
}

static void step_tables(void **state)
{
  (void)state;
  /* the seed's "Re-provisioning using connectivity provided by old SHO": 2, 4, 7, 8, 9,
   * 11, 12 are the device's; 14 is the last */
  static const struct want old_sho[] = {
      {"attach-old", 2}, {"pcid", 0},     {"nonce", 4},    {"quote", 4},
      {"download", 7},   {"discard", 8},  {"receipt", 9},  {"release", 11},
      {"install", 12},   {"report", 12},  {"attach-sho", 0},
  };
  table_is("change", "old-sho", old_sho, sizeof(old_sho) / sizeof(old_sho[0]), 14);
  /* "Going back to the pristine state": 3, then exactly initial provisioning 4-15 */
  static const struct want pristine[] = {
      {"pcid", 0},     {"discard", 3},  {"attach", 4},  {"discover", 7},
      {"nonce", 10},   {"quote", 10},   {"download", 13}, {"install", 14},
      {"report", 14},  {"attach-sho", 0}, {"notify", 0},
  };
  table_is("change", "pristine", pristine, sizeof(pristine) / sizeof(pristine[0]), 15);
  static const struct want initial[] = {
      {"attach", 4},    {"discover", 7}, {"nonce", 10},  {"quote", 10},
      {"download", 13}, {"install", 14}, {"report", 14}, {"attach-sho", 0},
  };
  table_is("initial", NULL, initial, sizeof(initial) / sizeof(initial[0]), 15);
  /* the pristine path's 4-15 are the initial steps, in order */
  for (size_t i = 0; i < sizeof(initial) / sizeof(initial[0]); i++) {
    assert_string_equal(pristine[i + 2].name, initial[i].name);
    assert_int_equal(pristine[i + 2].n, initial[i].n);
  }
  static const struct want preload[] = {
      {"attach", 4},   {"pcid", 0},      {"discover", 7}, {"nonce", 10},
      {"quote", 10},   {"download", 13}, {"install", 14}, {"report", 14},
  };
  table_is("preload", NULL, preload, sizeof(preload) / sizeof(preload[0]), 15);
  static const struct want sw[] = {
      {"attach-cur", 0}, {"suspend", 0}, {"resume", 0}, {"activate", 0}, {"attach-sho", 0},
  };
  table_is("switch", NULL, sw, sizeof(sw) / sizeof(sw[0]), 0);

  assert_false(dev_procedure_supported("change", NULL));
  assert_false(dev_procedure_supported("change", "usb"));
  assert_false(dev_procedure_supported("reboot", NULL));
  assert_false(dev_procedure_supported(NULL, NULL));
  assert_true(dev_procedure_supported("initial", NULL));
  assert_true(dev_procedure_supported("preload", NULL));
}

/* ---- what a procedure needs from the slots ---- */

static mcim_cause_t prepare(struct ctx *c, const char *kind, const char *via, const char *sho,
                            json_t **data)
{
  struct dev_instruction ins = {0};
  char err[256];
  snprintf(ins.txn, sizeof(ins.txn), "%s", TXN_B);
  snprintf(ins.kind, sizeof(ins.kind), "%s", kind);
  snprintf(ins.via, sizeof(ins.via), "%s", via ? via : "");
  snprintf(ins.sho, sizeof(ins.sho), "%s", sho);
  mcim_cause_t rc = dev_procedure_prepare(c->d, &ins, data, err, sizeof(err));
  assert_true(rc == MCIM_OK || err[0]);
  return rc;
}

static const char *jstr(json_t *o, const char *k)
{
  return json_string_value(json_object_get(o, k));
}

static void preconditions_by_slots(void **state)
{
  struct ctx *c = *state;
  json_t *data = NULL;
  start(c);

  /* pristine device */
  assert_int_equal(prepare(c, "initial", NULL, "sho-a", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "vno");
  json_decref(data);
  assert_int_equal(prepare(c, "change", "old-sho", "sho-b", &data), MCIM_WRONG_STATE);
  assert_null(data);
  assert_int_equal(prepare(c, "change", "pristine", "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "vno");
  assert_null(jstr(data, "old"));
  json_decref(data);
  assert_int_equal(prepare(c, "preload", NULL, "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "vno");
  json_decref(data);
  assert_int_equal(prepare(c, "switch", NULL, "sho-b", &data), MCIM_WRONG_STATE);

  /* sho-a active */
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001020000000001", TXN_A, FX_ACTIVE),
                   MCIM_OK);
  assert_int_equal(prepare(c, "change", "old-sho", "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "sho-a");
  assert_string_equal(jstr(data, "old"), "sho-a");
  json_decref(data);
  assert_int_equal(prepare(c, "change", "pristine", "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "vno");
  assert_string_equal(jstr(data, "old"), "sho-a");
  assert_string_equal(jstr(data, "renew_via"), "sho-a"); /* before step 3 removes it */
  json_decref(data);
  assert_int_equal(prepare(c, "change", "old-sho", "sho-a", &data), MCIM_WRONG_STATE);
  assert_int_equal(prepare(c, "preload", NULL, "sho-a", &data), MCIM_WRONG_STATE);
  assert_int_equal(prepare(c, "preload", NULL, "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "sho-a"); /* the current connectivity */
  json_decref(data);
  assert_int_equal(prepare(c, "switch", NULL, "sho-b", &data), MCIM_WRONG_STATE);
  assert_int_equal(prepare(c, "switch", NULL, "sho-a", &data), MCIM_WRONG_STATE);

  /* sho-b pre-provisioned next to it */
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-b", "001030000000001", TXN_B, FX_INACTIVE),
                   MCIM_OK);
  assert_int_equal(prepare(c, "switch", NULL, "sho-b", &data), MCIM_OK);
  assert_string_equal(jstr(data, "access"), "sho-a");
  assert_string_equal(jstr(data, "old"), "sho-a");
  json_decref(data);
}

/* The TRE change for the variant: install_inactive keeps the active MCIM active. */
static void tre_inactive_install(void **state)
{
  struct ctx *c = *state;
  char active[64], st[16], slot[64];
  assert_non_null(c->tre->ops->install_inactive);
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001020000000001", TXN_A, FX_ACTIVE),
                   MCIM_OK);
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-b", "001030000000001", TXN_B, FX_INACTIVE),
                   MCIM_OK);
  start(c);
  assert_int_equal(dev_tre_slots(c->d, active, "sho-b", st), MCIM_OK);
  assert_string_equal(active, "sho-a");
  assert_string_equal(st, "inactive");
  /* idempotent per txn */
  assert_int_equal(c->tre->ops->install_inactive(c->tre->ctx, TXN_B, slot), MCIM_OK);
  assert_string_equal(slot, "sho-b");
  /* an inactive MCIM never replaces the active one of the same SHO */
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001020000000002",
                                "000000000000000000000000000000cc", FX_INACTIVE),
                   MCIM_WRONG_STATE);
  assert_int_equal(dev_tre_slots(c->d, active, "sho-a", st), MCIM_OK);
  assert_string_equal(active, "sho-a");
  /* an inactive slot cannot attach; activation swaps */
  uint8_t rnd[16] = {0}, autn[16] = {0}, res[8], auts[14];
  assert_int_equal(c->tre->ops->aka(c->tre->ctx, "sho-b", rnd, autn, res, auts),
                   MCIM_WRONG_STATE);
  assert_int_equal(c->tre->ops->activate(c->tre->ctx, "sho-b"), MCIM_OK);
  assert_int_equal(dev_tre_slots(c->d, active, "sho-a", st), MCIM_OK);
  assert_string_equal(active, "sho-b");
  assert_string_equal(st, "inactive");
}

/* ---- persistence and resume ---- */

static void insert(struct ctx *c, const char *kind, const char *via, const char *sho,
                   const char *stage, int n, int64_t deadline, json_t *data)
{
  char db[256];
  mcim_store_t *st = NULL;
  struct dev_proc p = {0};
  snprintf(db, sizeof(db), "%s/agent.db", c->fx.dir);
  assert_int_equal(mcim_store_open(db, NULL, &st), MCIM_OK);
  assert_int_equal(dev_store_migrate(st), MCIM_OK);
  snprintf(p.txn, sizeof(p.txn), "%s", TXN_B);
  snprintf(p.kind, sizeof(p.kind), "%s", kind);
  snprintf(p.via, sizeof(p.via), "%s", via ? via : "");
  snprintf(p.sho, sizeof(p.sho), "%s", sho);
  snprintf(p.state, sizeof(p.state), "running");
  snprintf(p.stage, sizeof(p.stage), "%s", stage);
  p.n = n;
  p.created = p.since = p.updated = mcim_now();
  p.deadline = deadline;
  p.data = data;
  assert_int_equal(dev_proc_insert(st, &p), MCIM_OK);
  /* read back: every column and the data as written */
  struct dev_proc q = {0};
  assert_int_equal(dev_proc_load(st, TXN_B, &q), MCIM_OK);
  assert_string_equal(q.kind, kind);
  assert_string_equal(q.via, via ? via : "");
  assert_string_equal(q.stage, stage);
  assert_int_equal(q.n, n);
  assert_true(json_equal(q.data, data));
  dev_proc_clear(&q);
  dev_proc_clear(&p); /* releases data */
  mcim_store_close(st);
}

static struct dev_proc load(struct ctx *c)
{
  struct dev_proc p = {0};
  mcim_store_t *st = dev_store_lock(c->d);
  assert_int_equal(dev_proc_load(st, TXN_B, &p), MCIM_OK);
  dev_store_unlock(c->d);
  return p;
}

static bool staged(struct ctx *c, const char *txn)
{
  json_t *view = NULL, *e;
  size_t i;
  bool found = false;
  assert_int_equal(c->tre->ops->status(c->tre->ctx, &view), MCIM_OK);
  json_array_foreach(json_object_get(view, "staged"), i, e) {
    if (strcmp(json_string_value(json_object_get(e, "txn")), txn) == 0)
      found = true;
  }
  json_decref(view);
  return found;
}

/* A change via the old SHO that stopped at step 11 (after a restart: no session in memory,
 * the old MCIM gone) resumes there, reaching the RO through the VNO fallback. */
static void change_resumes_at_its_step(void **state)
{
  struct ctx *c = *state;
  json_t *data = json_pack("{s:s,s:s,s:s,s:b,s:b,s:s}", "access", "sho-a", "old", "sho-a",
                           "access_fallback", "vno", "discarded", 1, "staged", 1, "ack",
                           "e30.e30.c2ln");
  insert(c, "change", "old-sho", "sho-b", "release", 11, mcim_now() + 60, data);
  start(c);
  struct dev_proc p = {0};
  for (int i = 0; i < 200; i++) {
    p = load(c);
    if (strstr(p.detail, "vno"))
      break;
    dev_proc_clear(&p);
    usleep(20000);
  }
  assert_string_equal(p.state, "running");
  assert_string_equal(p.stage, "release");
  assert_int_equal(p.n, 11);
  assert_non_null(strstr(p.detail, "attach to vno")); /* the fallback, not the gone slot */
  assert_string_equal(dev_data_str(&p, "ack"), "e30.e30.c2ln");
  dev_proc_clear(&p);
  /* the view of the procedure never shows its data (tokens, statements) */
  json_t *j = NULL;
  p = load(c);
  j = dev_proc_json(&p);
  assert_null(json_object_get(j, "data"));
  assert_null(json_object_get(j, "ack"));
  json_decref(j);
  dev_proc_clear(&p);
}

/* The contract of step 9: an old SHO that cannot be reached until the deadline fails the
 * procedure at step 9, the new package stays staged (not installed), and the bearer token
 * kept for a restart is dropped from the store. */
static void receipt_timeout_keeps_package_staged(void **state)
{
  struct ctx *c = *state;
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-b", "001030000000001", TXN_B, FX_STAGED),
                   MCIM_OK);
  assert_true(staged(c, TXN_B));
  json_t *data = json_pack("{s:s,s:s,s:s,s:b,s:b,s:{s:s,s:s,s:s,s:I}}", "access", "sho-a", "old",
                           "sho-a", "access_fallback", "vno", "discarded", 1, "staged", 1,
                           "saved_token", "network", "sho-a", "token", "a.b.c", "scope", "full",
                           "expires", (json_int_t)(mcim_now() + 60));
  insert(c, "change", "old-sho", "sho-b", "receipt", 9, mcim_now() - 1, data);
  start(c);
  struct dev_proc p = {0};
  for (int i = 0; i < 200; i++) {
    p = load(c);
    if (strcmp(p.state, "running") != 0)
      break;
    dev_proc_clear(&p);
    usleep(20000);
  }
  assert_string_equal(p.state, "failed");
  assert_string_equal(p.cause, "TIMEOUT");
  assert_int_equal(p.n, 9);
  assert_null(json_object_get(p.data, "saved_token"));
  dev_proc_clear(&p);
  assert_true(staged(c, TXN_B));
}

/* Before step 8 nothing is lost: a change that fails drops what it staged. */
static void failure_before_discard_unstages(void **state)
{
  struct ctx *c = *state;
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-b", "001030000000001", TXN_B, FX_STAGED),
                   MCIM_OK);
  json_t *data = json_pack("{s:s,s:s,s:b}", "access", "sho-a", "old", "sho-a", "staged", 1);
  insert(c, "change", "old-sho", "sho-b", "discard", 8, mcim_now() - 1, data);
  start(c);
  struct dev_proc p = {0};
  for (int i = 0; i < 200; i++) {
    p = load(c);
    if (strcmp(p.state, "running") != 0)
      break;
    dev_proc_clear(&p);
    usleep(20000);
  }
  assert_string_equal(p.state, "failed");
  assert_int_equal(p.n, 8);
  dev_proc_clear(&p);
  assert_false(staged(c, TXN_B));
}

/* Wait (up to ~15 s) until the procedure leaves `stage` or ends. */
static struct dev_proc wait_past(struct ctx *c, const char *stage)
{
  struct dev_proc p = load(c);
  for (int i = 0; i < 750 && strcmp(p.state, "running") == 0 && strcmp(p.stage, stage) == 0;
       i++) {
    dev_proc_clear(&p);
    usleep(20000);
    p = load(c);
  }
  if (strcmp(p.state, "running") == 0 && strcmp(p.stage, stage) == 0)
    fprintf(stderr, "still at %s: %s\n", stage, p.detail);
  return p;
}

static bool has_slot(struct ctx *c, const char *slot)
{
  json_t *view = NULL, *e;
  size_t i;
  bool found = false;
  assert_int_equal(c->tre->ops->status(c->tre->ctx, &view), MCIM_OK);
  json_array_foreach(json_object_get(view, "slots"), i, e) {
    if (strcmp(json_string_value(json_object_get(e, "slot")), slot) == 0)
      found = true;
  }
  json_decref(view);
  return found;
}

/* Model finding F3: the agent died between the TRE's discard (step 8) and its own save of it,
 * and the old SHO's saved token expired by the restart. The stage runs again: the TRE did it
 * already, so it goes on (no session left: the receipt to the RO at once, step 11), instead
 * of attaching to the old SHO with the MCIM just destroyed (NOT_FOUND: the change failed
 * after step 8, the device with its PCID only). */
static void discard_done_before_restart_goes_on(void **state)
{
  struct ctx *c = *state;
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001010000000009", TXN_A, FX_ACTIVE),
                   MCIM_OK);
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-b", "001030000000001", TXN_B, FX_STAGED),
                   MCIM_OK);
  assert_int_equal(c->tre->ops->discard(c->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  json_t *data = json_pack("{s:s,s:s,s:b,s:{s:s,s:s,s:s,s:I}}", "access", "sho-a", "old",
                           "sho-a", "staged", 1, "saved_token", "network", "sho-a", "token",
                           "a.b.c", "scope", "full", "expires", (json_int_t)(mcim_now() - 1));
  insert(c, "change", "old-sho", "sho-b", "discard", 8, mcim_now() + 60, data);
  start(c);
  struct dev_proc p = wait_past(c, "discard");
  /* past step 8 (the fixture's TRE holds no M2MES certificates: the receipt stage stops at
   * step 9 for want of its attestation certificate, which is not what this tests) */
  assert_true(dev_data_bool(&p, "discarded"));
  assert_true(p.n >= 9);
  dev_proc_clear(&p);
  assert_true(staged(c, TXN_B));
  assert_false(has_slot(c, "sho-a"));
}

static int setup_short_pcid(void **state)
{
  /* 2 s, not 1: the credential is written at now + lifetime and installed later, and a
   * second boundary in between (ASan, a loaded machine) made the install refuse it expired */
  fx_pcid_lifetime = 2;
  int rc = setup(state);
  fx_pcid_lifetime = 3600;
  return rc;
}

/* Model finding F1: a change via the old SHO with an expired PCID it could not renew (the
 * network unreachable) is refused before step 8, CREDENTIAL_EXPIRED, the old MCIM kept: past
 * step 10 the device reaches the DPF through the VNO with the PCID (step 11), so going on
 * would discard the MCIM and then fail with no working credential at all. */
static void old_sho_expired_pcid_refused_before_discard(void **state)
{
  struct ctx *c = *state;
  json_t *view = NULL;
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001010000000009", TXN_A, FX_ACTIVE),
                   MCIM_OK);
  assert_int_equal(c->tre->ops->status(c->tre->ctx, &view), MCIM_OK);
  int64_t expires = json_integer_value(json_object_get(json_object_get(view, "pcid"), "expires"));
  json_decref(view);
  for (int i = 0; i < 250 && mcim_now() <= expires; i++) /* the PCID expires (2 s) */
    usleep(20000);
  assert_true(mcim_now() > expires);
  /* two renewal rounds failed already (the network unreachable): this is the last */
  json_t *data = json_pack("{s:s,s:s,s:i}", "access", "sho-a", "old", "sho-a", "renew_tries", 2);
  insert(c, "change", "old-sho", "sho-b", "pcid", 0, mcim_now() + 60, data);
  start(c);
  struct dev_proc p = wait_past(c, "pcid");
  assert_string_equal(p.state, "failed");
  assert_string_equal(p.cause, "CREDENTIAL_EXPIRED");
  assert_string_equal(p.stage, "pcid");
  assert_false(dev_data_bool(&p, "discarded"));
  dev_proc_clear(&p);
  assert_true(has_slot(c, "sho-a"));
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(step_tables),
      cmocka_unit_test_setup_teardown(preconditions_by_slots, setup, teardown),
      cmocka_unit_test_setup_teardown(tre_inactive_install, setup, teardown),
      cmocka_unit_test_setup_teardown(change_resumes_at_its_step, setup, teardown),
      cmocka_unit_test_setup_teardown(receipt_timeout_keeps_package_staged, setup, teardown),
      cmocka_unit_test_setup_teardown(failure_before_discard_unstages, setup, teardown),
      cmocka_unit_test_setup_teardown(discard_done_before_restart_goes_on, setup, teardown),
      cmocka_unit_test_setup_teardown(old_sho_expired_pcid_refused_before_discard,
                                      setup_short_pcid, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
