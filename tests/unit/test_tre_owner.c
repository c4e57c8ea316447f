/* The software TRE (src/tre/), its owner: the owner's instructions verified (once, replays,
 * a stranger's key, junk, aud, typ, expiry, a flipped signature) and the owner's handover
 * to a new owner. Fixture: tre_fixture.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tre_fixture.h"

/* ---- tests: owner --------------------------------------------------------------------- */

static char *instruction(const mcim_jose_key_t *key, const char *aud, const char *typ,
                         int64_t iat, int64_t exp)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s, s:s, s:s}", "procedure", "change", "via", "old-sho", "sho",
                            "sho-b");
  mcim_claims_t c = {.iss = "subscriber", .sub = DEVICE, .aud = aud, .typ = typ, .txn = TXN_A,
                     .iat = iat, .exp = exp, .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static char *handover(const mcim_jose_key_t *by, const char *aud, json_t *new_owner)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_pack("{s:o?}", "new_owner_jwk", new_owner);
  mcim_claims_t c = {.iss = "subscriber", .sub = DEVICE, .aud = aud, .typ = "mcim-handover+jwt",
                     .txn = TXN_A, .iat = now, .exp = now + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(by, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static json_t *public_jwk(const mcim_jose_key_t *key)
{
  char *text = NULL;
  assert_int_equal(mcim_jose_key_public_jwk(key, &text), MCIM_OK);
  json_t *j = json_loads(text, 0, NULL);
  free(text);
  return j;
}

/* The owner hands the device over: only its own statement, for this device, with a usable
 * public key, replaces the pinned key (persisted); then only the new owner instructs. */
static void test_owner_handover(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  char *jws = handover(stranger, DEVICE, public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_NOT_OWNER);
  free(jws);
  jws = handover(owner, "dev2", public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = handover(owner, DEVICE, NULL);
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)),
                   MCIM_CLAIM_MISSING);
  free(jws);
  jws = handover(owner, DEVICE, json_pack("{s:s,s:s}", "kty", "EC", "crv", "P-256"));
  assert_int_not_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_OK);
  free(jws);
  /* none of those changed the pinned key */
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);

  jws = handover(owner, DEVICE, public_jwk(stranger));
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_OK);
  check_persisted(f);
  /* again: the old owner's key is no longer pinned */
  assert_int_equal(f->tre->ops->owner_handover(f->tre->ctx, jws, strlen(jws)), MCIM_NOT_OWNER);
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
  jws = instruction(stranger, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);
}

/* An owner instruction meant to live 10 years is refused for its claims, its jti not kept
 * (the replay list would hold it until then); the longest the TRE reads is taken. */
static void test_owner_lifetime_cap(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  char *jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 10LL * 365 * 86400);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + MCIM_TRE_MAX_LIFETIME);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_OK);
  free(jws);
}

static void test_owner(void **state)
{
  struct fx *f = *state;
  int64_t now = mcim_now();
  mcim_statement_t *stmt = NULL;
  char *jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);

  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, &stmt),
                   MCIM_OK);
  assert_string_equal(mcim_statement_string(stmt, "via"), "old-sho");
  mcim_statement_free(stmt);
  check_persisted(f);
  /* Replayed, after a restart too. */
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_REPLAY);
  free(jws);

  jws = instruction(stranger, DEVICE, TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, "junk", 4, TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  jws = instruction(owner, "dev2", TYP_INSTR, now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = instruction(owner, DEVICE, "mcim-order+jwt", now, now + 300);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_CLAIM_MISMATCH);
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now - 7200, now - 3600);
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_TOKEN_EXPIRED);
  /* One flipped signature byte. */
  free(jws);
  jws = instruction(owner, DEVICE, TYP_INSTR, now, now + 300);
  jws[strlen(jws) - 5] = jws[strlen(jws) - 5] == 'A' ? 'B' : 'A';
  assert_int_equal(f->tre->ops->verify_owner(f->tre->ctx, jws, strlen(jws), TYP_INSTR, NULL),
                   MCIM_NOT_OWNER);
  free(jws);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_owner, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_owner_handover, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_owner_lifetime_cap, fx_setup, fx_teardown),
      cmocka_unit_test(test_log_no_secret), /* last: the whole group's log */
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
