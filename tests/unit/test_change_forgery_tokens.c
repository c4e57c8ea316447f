/* Tokens bound to their issuer (DESIGN.md section 10), on the lab of the change of
 * subscription's forgery tests.
 * Two devices are manufactured and provisioned with the CLI's library calls (fdev1 at sho-a,
 * fdev2 at sho-b) on a real lab (mcimd processes on loopback, real TLS, real device agents
 * with their software TREs; tests/unit/change_forgery_fixture.h); the test plays an attacker
 * who holds valid network access and, for some cases, a TRE key certified by the M2MES CA for
 * a device of its own ("mallory"). Access: restricted tokens from a real attach at the VNO (a
 * PCID credential of the test's own, registered at the ICF as the M2MES does, and a software
 * USIM, as test_access_e2e.c); full tokens signed with the SHO's key from the lab PKI, as the
 * SHO issues them after an attach ("the device holds a full token"). An
 * SHO's token is good at that SHO only, for the device and identity it names: another SHO's
 * token, one in the old form, an identity that is not the device's, a `full` token of the
 * VNO, a restricted one of an SHO: refused, each with its cause; the RO honours every access
 * network's tokens. And a token issued before the device's last release is refused at the RO
 * (to the microsecond; an iat_us outside its second is not believed; a release recorded
 * without seq counts from its arrival). */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "change_forgery_fixture.h"

/* ---- tokens bound to their issuer (DESIGN.md section 10) ---- */

static void test_token_binding(void **state)
{
  (void)state;
  char path[128];
  long status = 0;
  json_t *ans = NULL;
  snprintf(path, sizeof(path), "/v1/devices/fdev1/subscription");

  /* a genuine token of sho-a for fdev1: its own subscription, at sho-a */
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", path, tok1, &status), MCIM_OK);
  /* sho-b's token (sho-b holds the real key: a competitor) for fdev1 at sho-a: refused with
   * its cause, whatever identity and audience it claims */
  char *tb = token(key_sho_b, "sho-b", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", path, tb, &status), MCIM_TOKEN_WRONG_ISSUER);
  assert_int_equal(status, 403);
  free(tb);
  tb = sign(key_sho_b, "mcim-access+jwt", "sho-b", "fdev1", "sho-a", ZERO_TXN,
            json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1));
  assert_int_equal(get("sho-a", path, tb, &status), MCIM_TOKEN_WRONG_ISSUER);
  free(tb);
  /* ... and sho-b cannot use one to act at sho-a either (a discard, a notice) */
  tb = token(key_sho_b, "sho-b", "fdev1", "full", imsi2);
  assert_int_equal(discard("sho-a", tb, TXN_F1, "fdev1", "x.y.z", "pem"), MCIM_TOKEN_WRONG_ISSUER);
  free(tb);
  /* a token of sho-a in the old form (aud "access") is not a token any more */
  char *old_form = sign(key_sho_a, "mcim-access+jwt", "sho-a", "fdev1", "access", ZERO_TXN,
                        json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1));
  assert_int_equal(get("sho-a", path, old_form, &status), MCIM_CLAIM_MISMATCH);
  free(old_form);
  /* sho-a's own signature on an identity that is not fdev1's: not a live subscription of
   * that device (mallory's IMSI for fdev1, fdev1's IMSI for mallory) */
  char *bad = token(key_sho_a, "sho-a", "fdev1", "full", imsim_a);
  assert_int_equal(get("sho-a", path, bad, &status), MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);
  free(bad);
  bad = token(key_sho_a, "sho-a", "mallory", "full", imsi1);
  assert_int_equal(get("sho-a", "/v1/devices/mallory/subscription", bad, &status),
                   MCIM_TOKEN_REVOKED);
  free(bad);

  /* the VNO grants restricted access only: a `full` token signed with the VNO's real key is
   * refused where VNO tokens are honoured (the RO, the PVA), and an SHO refuses it anyway */
  char *vfull = token(key_vno, "vno", "fdev1", "full", "001019100000009");
  assert_int_equal(post_keep("ro", "/v1/dpf/notices", vfull,
                             json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", TXN_F1, "device", "fdev1",
                                       "to", "sho-a", "statement", "x.y.z", "tre_cert", "pem"),
                             &ans, &status),
                   MCIM_SCOPE_NOT_GRANTABLE);
  assert_int_equal(status, 403);
  assert_string_equal(json_string_value(json_object_get(ans, "cause")), "SCOPE_NOT_GRANTABLE");
  json_decref(ans);
  assert_int_equal(post("ro", "/v1/drf/discover", vfull,
                        json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1")),
                   MCIM_SCOPE_NOT_GRANTABLE);
  assert_int_equal(get("sho-a", "/v1/devices/fdev1/subscription", vfull, &status),
                   MCIM_TOKEN_WRONG_ISSUER);
  free(vfull);
  /* ... nor may an SHO hand out restricted tokens (its scope is full) */
  char *srestr = token(key_sho_a, "sho-a", "fdev1", "restricted", imsi1);
  assert_int_equal(post("ro", "/v1/drf/discover", srestr,
                        json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1")),
                   MCIM_SCOPE_NOT_GRANTABLE);
  free(srestr);
  /* the RO honours the tokens of every access network (for reaching it): past the token
   * check, the DRF has nothing for this txn */
  mcim_cause_t rc = post("ro", "/v1/drf/discover", tok1,
                         json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "fdev1"));
  assert_true(rc != MCIM_TOKEN_WRONG_ISSUER && rc != MCIM_SCOPE_NOT_GRANTABLE && rc != MCIM_OK);
  free(tok1);
}

/* An SHO's access token issued at `iat_us`, saying so in its iat_us claim (`claim_us`: that
 * claim's value, -1 to leave it out). */
static char *token_at(const mcim_jose_key_t *net_key, const char *net, const char *device,
                      const char *identity, int64_t iat_us, int64_t claim_us)
{
  char *jws = NULL;
  int64_t iat = iat_us / 1000000;
  json_t *extra = json_pack("{s:s,s:s}", "scope", "full", "imsi", identity);
  if (claim_us >= 0)
    json_object_set_new(extra, "iat_us", json_integer(claim_us));
  mcim_claims_t c = {.iss = net, .sub = device, .aud = net, .typ = "mcim-access+jwt",
                     .txn = ZERO_TXN, .iat = iat, .exp = iat + 300, .extra = extra};
  assert_int_equal(mcim_jws_sign(net_key, &c, &jws), MCIM_OK);
  json_decref(extra);
  return jws;
}

static mcim_cause_t ro_discover_as(const char *tok)
{
  return post("ro", "/v1/drf/discover", tok,
              json_pack("{s:s,s:s}", "txn", TXN_F1, "device", "rdev"));
}

/* The RO revokes an SHO's tokens issued before the SHO released the device there, on the
 * SHO's clock to the microsecond (the release's seq against the token's iat_us): a token of
 * the next subscription at the same SHO, issued within the same second as the release, is
 * honoured (it was refused TOKEN_REVOKED in whole seconds: the pristine path's deferred
 * notice failed so in a demo); one issued before it, or without iat_us in that second, is
 * not; a release without seq (an older SHO) counts from its arrival. */
static void test_token_release_order(void **state)
{
  (void)state;
  char q[320];
  /* mid-second, so that both sides of the release fall in the same second */
  int64_t rel = (mcim_now() - 2) * 1000000 + 500000;
  snprintf(q, sizeof(q),
           "INSERT INTO drf (device, sho, state, endpoint, txn, updated, seq) VALUES"
           " ('rdev', 'sho-a', 'released', 'https://sho-a.invalid', '%s', %lld, %lld)",
           TXN_F1, (long long)(rel / 1000000), (long long)rel);
  db_exec("ro", q);

  char *before = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel - 1, rel - 1);
  char *after = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1, rel + 1);
  char *no_us = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1, -1);
  assert_int_equal(ro_discover_as(before), MCIM_TOKEN_REVOKED);
  assert_int_equal(ro_discover_as(no_us), MCIM_TOKEN_REVOKED);
  mcim_cause_t rc = ro_discover_as(after);
  assert_true(rc != MCIM_TOKEN_REVOKED && rc != MCIM_OK);
  /* An iat_us is believed up to clock_skew (30 s) after its iat's second began: the SHO's
   * decision clock runs ahead of the issuing instance's own when another instance's did
   * (2026-12-07; before, only within iat's second). Further after it: counted from the
   * start of iat's second. */
  char *ahead = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel - 400000, rel + 3000000);
  rc = ro_discover_as(ahead);
  assert_true(rc != MCIM_TOKEN_REVOKED && rc != MCIM_OK);
  free(ahead);
  char *lying = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel - 400000, rel + 40000000);
  assert_int_equal(ro_discover_as(lying), MCIM_TOKEN_REVOKED);
  free(lying);


  /* the same release recorded by an older SHO (no seq): from its arrival, in whole seconds */
  db_exec("ro", "UPDATE drf SET seq = 0 WHERE device = 'rdev' AND sho = 'sho-a'");
  assert_int_equal(ro_discover_as(after), MCIM_TOKEN_REVOKED);
  char *next = token_at(key_sho_a, "sho-a", "rdev", imsi1, rel + 1000000, rel + 1000000);
  rc = ro_discover_as(next);
  assert_true(rc != MCIM_TOKEN_REVOKED && rc != MCIM_OK);
  db_exec("ro", "DELETE FROM drf WHERE device = 'rdev'");
  free(before);
  free(after);
  free(no_us);
  free(next);
}
int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_token_binding),
      cmocka_unit_test(test_token_release_order),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
