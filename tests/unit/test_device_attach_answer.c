/* What the agent keeps of a network's answer to an authentication (src/device/attach.c,
 * dev_attach_answer_check): the scope the identity gets, and a token of that network, for
 * this device, of that scope, alive. Tokens signed as the roles sign them (access.c: iss =
 * aud = the network, sub = the device, a scope claim), then each claim changed in turn: every
 * change is refused. Before 2026-12-07 the agent kept any scope and token: a VNO could label
 * its restricted session full, and a network could hand the device a token naming another
 * device, which the RO refuses the device's own queued notices with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/util.h"

static mcim_jose_key_t *key;

static int setup(void **state)
{
  (void)state;
  return mcim_jose_key_generate(&key) == MCIM_OK ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_jose_key_free(key);
  return 0;
}

static char *token(const char *iss, const char *aud, const char *sub, const char *scope,
                   int64_t exp)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s,s:s}", "scope", scope, "imsi", "001020123456789");
  mcim_claims_t c = {.iss = iss, .sub = sub, .aud = aud, .typ = "mcim-access+jwt",
                     .txn = "00000000000000000000000000000000", .iat = exp - 600, .exp = exp,
                     .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static mcim_cause_t check(const char *network, const char *id_field, const char *scope,
                          char *tok, int64_t now)
{
  int64_t exp = -1;
  mcim_cause_t rc = dev_attach_answer_check(network, "dev1", id_field, scope, tok, now, &exp);
  free(tok);
  return rc;
}

static void test_as_the_roles_answer(void **state)
{
  (void)state;
  int64_t now = mcim_now(), exp = 0;
  char *t = token("sho-b", "sho-b", "dev1", "full", now + 600);
  assert_int_equal(dev_attach_answer_check("sho-b", "dev1", "imsi", "full", t, now, &exp),
                   MCIM_OK);
  assert_int_equal(exp, now + 600);
  free(t);
  assert_int_equal(check("vno", "pcid", "restricted",
                         token("vno", "vno", "dev1", "restricted", now + 600), now),
                   MCIM_OK);
}

static void test_every_lie_refused(void **state)
{
  (void)state;
  int64_t now = mcim_now(), in = now + 600, exp = 0;
  static const struct {
    const char *why, *network, *id_field, *scope;              /* the answer */
    const char *iss, *aud, *sub, *claimed; /* its token */
    int expired;
  } lies[] = {
      {"a VNO that says full access", "vno", "pcid", "full", "vno", "vno", "dev1", "restricted", 0},
      {"... in its token too", "vno", "pcid", "full", "vno", "vno", "dev1", "full", 0},
      {"an SHO that gives an IMSI restricted access", "sho-b", "imsi", "restricted", "sho-b",
       "sho-b", "dev1", "restricted", 0},
      {"the answer's scope not the token's", "sho-b", "imsi", "full", "sho-b", "sho-b", "dev1",
       "restricted", 0},
      {"a token for another device", "sho-b", "imsi", "full", "sho-b", "sho-b", "dev2", "full", 0},
      {"of another network", "sho-b", "imsi", "full", "sho-a", "sho-a", "dev1", "full", 0},
      {"for another audience", "sho-b", "imsi", "full", "sho-b", "ro", "dev1", "full", 0},
      {"expired", "sho-b", "imsi", "full", "sho-b", "sho-b", "dev1", "full", 1},
  };
  for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
    print_message("%s\n", lies[i].why);
    assert_int_equal(check(lies[i].network, lies[i].id_field, lies[i].scope,
                           token(lies[i].iss, lies[i].aud, lies[i].sub, lies[i].claimed,
                                 lies[i].expired ? now : in),
                           now),
                     MCIM_PEER_BAD_ANSWER);
  }
  /* no token, scope or JWS at all */
  assert_int_equal(dev_attach_answer_check("sho-b", "dev1", "imsi", "full", NULL, now, &exp),
                   MCIM_PEER_BAD_ANSWER);
  assert_int_equal(dev_attach_answer_check("sho-b", "dev1", "imsi", NULL, "a.b.c", now, &exp),
                   MCIM_PEER_BAD_ANSWER);
  assert_int_equal(dev_attach_answer_check("sho-b", "dev1", "imsi", "full", "not a jws", now,
                                           &exp),
                   MCIM_PEER_BAD_ANSWER);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_as_the_roles_answer),
      cmocka_unit_test(test_every_lie_refused),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
