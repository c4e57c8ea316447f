/* What the agent keeps of a network's answer to an authentication (src/device/attach.c,
 * dev_attach_answer_check): the scope the identity gets, and a token of that network, for
 * this device, of that scope, alive. Tokens signed as the roles sign them (access.c: iss =
 * aud = the network, sub = the device, a scope claim), then each claim changed in turn: every
 * change is refused, and so is every other claim the RO and the PVA check (typ, imsi, jti,
 * txn, iat), and a token alive for less than the agent's margin. Before 2026-12-07 the agent
 * kept any scope and token: a VNO could label
 * its restricted session full, and a network could hand the device a token naming another
 * device, which the RO refuses the device's own queued notices with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define IMSI "001020123456789"

/* A token as the roles sign one (access.c), then one claim changed: `drop` removed, or
 * `claim` set to `value` (a string; "iat" an integer). */
struct change {
  const char *drop, *claim, *value;
};

static char *token_x(const char *iss, const char *aud, const char *sub, const char *scope,
                     int64_t exp, const struct change *x)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s,s:s}", "scope", scope, "imsi", IMSI);
  mcim_claims_t c = {.iss = iss, .sub = sub, .aud = aud, .typ = "mcim-access+jwt",
                     .txn = "00000000000000000000000000000000", .iat = exp - 600, .exp = exp,
                     .extra = extra};
  assert_int_equal(mcim_jws_sign(key, &c, &jws), MCIM_OK);
  json_decref(extra);
  if (!x || (!x->drop && !x->claim))
    return jws;
  /* the payload changed, its signature left out (the agent does not verify a network's
   * token: the network does) */
  json_t *p = NULL;
  assert_int_equal(mcim_jws_peek_payload(jws, &p), MCIM_OK);
  free(jws);
  if (x->drop)
    json_object_del(p, x->drop);
  if (x->claim && strcmp(x->claim, "iat") == 0)
    json_object_set_new(p, "iat", json_integer(exp + 1));
  else if (x->claim)
    json_object_set_new(p, x->claim, json_string(x->value));
  char *text = json_dumps(p, JSON_COMPACT);
  json_decref(p);
  assert_non_null(text);
  size_t n = strlen(text);
  size_t len = 21 + mcim_b64url_len(n) + 6;
  char *out = malloc(len);
  assert_non_null(out);
  snprintf(out, len, "%s", "eyJhbGciOiJFUzI1NiJ9."); /* {"alg":"ES256"} */
  size_t m = mcim_b64url_encode((const uint8_t *)text, n, out + 21);
  snprintf(out + 21 + m, len - 21 - m, "%s", ".c2ln"); /* a signature nobody checks here */
  free(text);
  return out;
}

static char *token(const char *iss, const char *aud, const char *sub, const char *scope,
                   int64_t exp)
{
  return token_x(iss, aud, sub, scope, exp, NULL);
}

static mcim_cause_t check_at(const char *network, const char *id_field, const char *scope,
                             const char *tok, int64_t now, int64_t *exp)
{
  const struct dev_attach_expect want = {.network = network, .device = "dev1",
                                         .id_field = id_field, .identity = IMSI, .now = now,
                                         .margin = 5};
  return dev_attach_answer_check(&want, scope, tok, exp);
}

static mcim_cause_t check(const char *network, const char *id_field, const char *scope,
                          char *tok, int64_t now)
{
  int64_t exp = -1;
  mcim_cause_t rc = check_at(network, id_field, scope, tok, now, &exp);
  free(tok);
  return rc;
}

static void test_as_the_roles_answer(void **state)
{
  (void)state;
  int64_t now = mcim_now(), exp = 0;
  char *t = token("sho-b", "sho-b", "dev1", "full", now + 600);
  assert_int_equal(check_at("sho-b", "imsi", "full", t, now, &exp), MCIM_OK);
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
    int expires_in;                        /* 0: in 600 s */
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
      {"expired", "sho-b", "imsi", "full", "sho-b", "sho-b", "dev1", "full", -1},
      {"expiring within the agent's margin (never used)", "sho-b", "imsi", "full", "sho-b",
       "sho-b", "dev1", "full", 4},
  };
  for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
    print_message("%s\n", lies[i].why);
    assert_int_equal(check(lies[i].network, lies[i].id_field, lies[i].scope,
                           token(lies[i].iss, lies[i].aud, lies[i].sub, lies[i].claimed,
                                 lies[i].expires_in ? now + lies[i].expires_in : in),
                           now),
                     MCIM_PEER_BAD_ANSWER);
  }
  /* The claims the RO and the PVA refuse a token for (peers.c), each changed: a network
   * whose token they would refuse would have the device's own requests refused for it. */
  static const struct change claims[] = {
      {NULL, "typ", "mcim-order+jwt"}, {NULL, "imsi", "001020123456780"},
      {"imsi", NULL, NULL},            {"jti", NULL, NULL},
      {"txn", NULL, NULL},             {"iat", NULL, NULL},
      {NULL, "iat", NULL}, /* after exp */
  };
  for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
    print_message("claim %s%s\n", claims[i].drop ? "without " : "",
                  claims[i].drop ? claims[i].drop : claims[i].claim);
    assert_int_equal(check("sho-b", "imsi", "full",
                           token_x("sho-b", "sho-b", "dev1", "full", in, &claims[i]), now),
                     MCIM_PEER_BAD_ANSWER);
  }
  /* no token, scope or JWS at all */
  assert_int_equal(check_at("sho-b", "imsi", "full", NULL, now, &exp), MCIM_PEER_BAD_ANSWER);
  assert_int_equal(check_at("sho-b", "imsi", NULL, "a.b.c", now, &exp), MCIM_PEER_BAD_ANSWER);
  assert_int_equal(check_at("sho-b", "imsi", "full", "not a jws", now, &exp),
                   MCIM_PEER_BAD_ANSWER);
}

/* What the agent waits on rather than fails for (dev_cause_retry, dev_cause_token: every
 * step's refusals go through them, dev_run_call_failed): a server that did not
 * authenticate, which anyone on the path can present (before 2026-12-07 a procedure failed
 * on it at once, after step 8 with the device's only MCIM), and the causes a token's issuer
 * decides, which send the agent to attach again. A refusal the party decided stays final. */
static void test_causes_no_party_decided(void **state)
{
  (void)state;
  assert_true(dev_cause_retry(MCIM_PEER_NOT_AUTHENTICATED, 0));
  assert_true(dev_cause_retry(MCIM_PEER_UNREACHABLE, 0));
  assert_true(dev_cause_retry(MCIM_STORE_ERROR, 503));
  assert_false(dev_cause_retry(MCIM_PEER_NOT_AUTHENTICATED, 401)); /* the party's answer */
  assert_false(dev_cause_retry(MCIM_NOT_PARTY, 403));
  assert_false(dev_cause_retry(MCIM_TOO_LARGE, 0));
  static const mcim_cause_t issuers[] = {MCIM_TOKEN_REVOKED, MCIM_TOKEN_WRONG_ISSUER,
                                         MCIM_SCOPE_NOT_GRANTABLE, MCIM_TOKEN_EXPIRED,
                                         MCIM_JWS_BAD_SIGNATURE};
  for (size_t i = 0; i < sizeof(issuers) / sizeof(issuers[0]); i++)
    assert_true(dev_cause_token(issuers[i]));
  assert_false(dev_cause_token(MCIM_NOT_PARTY));
  assert_false(dev_cause_token(MCIM_SHO_NOT_LINKED));
}

/* An answered refusal is the token's when the answer says so (RFC 6750's challenge,
 * dev_token_refused): the same JWS_BAD_SIGNATURE or TOKEN_EXPIRED of the TRE's statement or
 * proof sends the agent to sign again, not to attach again (2026-12-07). Without an answer
 * (no token held, the call not made), the cause alone decides, as before. */
static void test_token_refused_by_the_answer(void **state)
{
  (void)state;
  struct mcim_http_result res = {.status = 401, .bearer_challenge = true};
  snprintf(res.bearer_error, sizeof(res.bearer_error), "invalid_token");
  assert_true(dev_token_refused(MCIM_JWS_BAD_SIGNATURE, &res));
  assert_true(dev_token_refused(MCIM_TOKEN_REVOKED, &res));
  res.bearer_error[0] = '\0'; /* no token came: a challenge with no error code */
  assert_true(dev_token_refused(MCIM_NO_ACCESS, &res));
  /* a restricted token where full access is needed: no attach mends it */
  res.status = 403;
  snprintf(res.bearer_error, sizeof(res.bearer_error), "insufficient_scope");
  assert_false(dev_token_refused(MCIM_SCOPE_RESTRICTED, &res));
  /* the same causes without the challenge: the statement's or the proof's */
  res = (struct mcim_http_result){.status = 401};
  assert_false(dev_token_refused(MCIM_JWS_BAD_SIGNATURE, &res));
  assert_false(dev_token_refused(MCIM_TOKEN_EXPIRED, &res));
  assert_false(dev_token_refused(MCIM_JOSE_MALFORMED, &res));
  /* what only a token gets counts without it (a role older than the challenge) */
  assert_true(dev_token_refused(MCIM_TOKEN_REVOKED, &res));
  assert_true(dev_token_refused(MCIM_NO_ACCESS, &res));
  /* no answer: the cause */
  res = (struct mcim_http_result){0};
  assert_true(dev_token_refused(MCIM_NO_ACCESS, &res));
  assert_true(dev_token_refused(MCIM_TOKEN_EXPIRED, NULL));
  assert_false(dev_token_refused(MCIM_PEER_UNREACHABLE, &res));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_as_the_roles_answer),
      cmocka_unit_test(test_every_lie_refused),
      cmocka_unit_test(test_causes_no_party_decided),
      cmocka_unit_test(test_token_refused_by_the_answer),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
