/* The owner's instruction as the agent checks it (src/device/instruction.c) with a real
 * software TRE: only the pinned owner key is obeyed, once, and only for what the claims
 * may ask. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "unit/test_device_fixture.h"

struct ctx {
  struct fx fx;
  mcim_tre_t *tre;
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  if (!c || fx_setup(&c->fx, "") != 0 || mcim_tre_soft_open(c->fx.tre, &c->tre) != MCIM_OK)
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  mcim_tre_close(c->tre);
  fx_teardown(&c->fx);
  free(c);
  return 0;
}

static mcim_cause_t check(struct ctx *c, char *jws, struct dev_instruction *ins)
{
  char err[300];
  mcim_cause_t rc = dev_instruction_check(c->tre, FX_DEVICE, jws, ins, err, sizeof(err));
  assert_true(rc == MCIM_OK || err[0] != '\0'); /* every refusal says why */
  free(jws);
  return rc;
}

static void owner_instruction_accepted(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins;
  char *jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN,
                             60);
  assert_int_equal(check(c, jws, &ins), MCIM_OK);
  assert_string_equal(ins.txn, FX_TXN);
  assert_string_equal(ins.kind, "initial");
  assert_string_equal(ins.sho, "sho-a");
  assert_string_equal(ins.via, "");

  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", "pristine", "sho-b", FX_TXN2,
                       60);
  assert_int_equal(check(c, jws, &ins), MCIM_OK);
  assert_string_equal(ins.kind, "change");
  assert_string_equal(ins.via, "pristine");
}

static void other_key_is_not_owner(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins;
  char *jws = fx_instruction(c->fx.other, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN,
                             60);
  assert_int_equal(check(c, jws, &ins), MCIM_NOT_OWNER);
  /* and not a statement at all */
  assert_int_equal(check(c, strdup("not.a.jws"), &ins), MCIM_NOT_OWNER);
  assert_int_equal(check(c, strdup(""), &ins), MCIM_NOT_OWNER);
}

static void replay_refused(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins;
  char *jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN,
                             60);
  char *again = strdup(jws);
  assert_int_equal(check(c, jws, &ins), MCIM_OK);
  assert_int_equal(check(c, again, &ins), MCIM_REPLAY);
}

static void claims_checked(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins;
  /* another device's instruction */
  assert_int_not_equal(check(c, fx_instruction(c->fx.owner, "dev2", "dev2", "initial", NULL,
                                               "sho-a", FX_TXN, 60),
                             &ins),
                       MCIM_OK);
  /* unknown procedure */
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "reboot", NULL,
                                           "sho-a", FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
  /* a change without via */
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", NULL,
                                           "sho-a", FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISSING);
  /* a bad via */
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", "usb",
                                           "sho-a", FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
  /* no SHO, or a role that is not an SHO */
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL,
                                           NULL, FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISSING);
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL,
                                           "ro", FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL,
                                           "../etc", FX_TXN, 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
  /* a txn that is not 32 lower-case hex digits */
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL,
                                           "sho-a", "0123456789ABCDEF0123456789ABCDEF", 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL,
                                           "sho-a", "1234", 60),
                         &ins),
                   MCIM_CLAIM_MISMATCH);
}

/* The new procedure values: via is for a change only (ignored otherwise). */
static void preload_and_switch(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins;
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "preload", NULL,
                                           "sho-b", FX_TXN, 60),
                         &ins),
                   MCIM_OK);
  assert_string_equal(ins.kind, "preload");
  assert_string_equal(ins.via, "");
  assert_int_equal(check(c, fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "switch",
                                           "pristine", "sho-b", FX_TXN2, 60),
                         &ins),
                   MCIM_OK);
  assert_string_equal(ins.kind, "switch");
  assert_string_equal(ins.via, "");
}

/* The peek reads what the instruction asks without the TRE: the jti stays unspent, and its
 * refusals are the verified check's. */
static void peek_spends_nothing(void **state)
{
  struct ctx *c = *state;
  struct dev_instruction ins, ver;
  char err[300];
  char *jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", "old-sho", "sho-b",
                             FX_TXN, 60);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(dev_instruction_peek(FX_DEVICE, jws, &ins, err, sizeof(err)), MCIM_OK);
    assert_string_equal(ins.txn, FX_TXN);
    assert_string_equal(ins.kind, "change");
    assert_string_equal(ins.via, "old-sho");
    assert_string_equal(ins.sho, "sho-b");
  }
  /* still fresh for the TRE */
  assert_int_equal(dev_instruction_check(c->tre, FX_DEVICE, jws, &ver, err, sizeof(err)), MCIM_OK);
  /* a replay: refused, but recognisable (the signature verified before the replay cache) */
  assert_int_equal(dev_instruction_check(c->tre, FX_DEVICE, jws, &ver, err, sizeof(err)),
                   MCIM_REPLAY);
  assert_string_equal(ver.txn, FX_TXN);
  assert_string_equal(ver.kind, "change");
  free(jws);
  /* a peek is no verification: anyone's signature peeks fine, the check says NOT_OWNER */
  jws = fx_instruction(c->fx.other, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN2, 60);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, jws, &ins, err, sizeof(err)), MCIM_OK);
  assert_int_equal(dev_instruction_check(c->tre, FX_DEVICE, jws, &ver, err, sizeof(err)),
                   MCIM_NOT_OWNER);
  free(jws);
  /* the peek's refusals */
  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "reboot", NULL, "sho-a", FX_TXN2, 60);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, jws, &ins, err, sizeof(err)),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = fx_instruction(c->fx.owner, "dev2", FX_DEVICE, "initial", NULL, "sho-a", FX_TXN2, 60);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, jws, &ins, err, sizeof(err)),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", NULL, "sho-a", FX_TXN2, 60);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, jws, &ins, err, sizeof(err)),
                   MCIM_CLAIM_MISSING);
  free(jws);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, "not.a.jws", &ins, err, sizeof(err)),
                   MCIM_NOT_OWNER);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, "a.b", &ins, err, sizeof(err)), MCIM_NOT_OWNER);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, "", &ins, err, sizeof(err)), MCIM_NOT_OWNER);
  assert_int_equal(dev_instruction_peek(FX_DEVICE, "a.b.c.d", &ins, err, sizeof(err)),
                   MCIM_NOT_OWNER);
}

static void sho_names(void **state)
{
  (void)state;
  assert_true(dev_is_sho_name("sho-a"));
  assert_true(dev_is_sho_name("operator7"));
  assert_false(dev_is_sho_name("ro"));
  assert_false(dev_is_sho_name("vno"));
  assert_false(dev_is_sho_name("pcid"));
  assert_false(dev_is_sho_name(""));
  assert_false(dev_is_sho_name(NULL));
  assert_false(dev_is_sho_name("a/b"));
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(owner_instruction_accepted, setup, teardown),
      cmocka_unit_test_setup_teardown(other_key_is_not_owner, setup, teardown),
      cmocka_unit_test_setup_teardown(replay_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(claims_checked, setup, teardown),
      cmocka_unit_test_setup_teardown(preload_and_switch, setup, teardown),
      cmocka_unit_test_setup_teardown(peek_spends_nothing, setup, teardown),
      cmocka_unit_test(sho_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
