/* The DPF's stored status answer (POST ro /v1/dpf/status, step 14 / 12) goes only to a status
 * of the device's own TRE for that txn (DESIGN.md section 10: the caller is checked "before
 * it reads or changes anything, stored answers included"), on the lab of
 * tests/unit/change_forgery_fixture.h (fdev2 provisioned at sho-b, its status reported and
 * answered). With a genuine access token of fdev2:
 *  - a status signed by another key (a rogue CA's, or the M2MES CA's for another device), or
 *    no valid status at all, is refused with its cause and gets no stored answer;
 *  - the device's own TRE status for the txn, a retry, gets the stored answer, again and
 *    again with the same statement (its jti is spent only by a status that acts), and
 *    nothing new is recorded or sent to the SHO. */
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

/* The txn of fdev2's provisioning, as the RO stored its status answer. */
static void status_txn(const char *device, char out[40])
{
  sqlite3 *db = NULL;
  sqlite3_stmt *s = NULL;
  char path[512];
  snprintf(path, sizeof(path), "%s/ro/ro.db", mcim_lab_path(lab));
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT txn FROM answers WHERE step = 14 AND what = ?",
                                      -1, &s, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  snprintf(out, 40, "%s", (const char *)sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  assert_int_equal(strlen(out), 32);
}

static mcim_cause_t report(const char *bearer, const char *txn, const char *status,
                           const char *cert, json_t **ans)
{
  return post_keep("ro", "/v1/dpf/status", bearer,
                   json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", "fdev2", "status", status,
                             "tre_cert", cert),
                   ans, NULL);
}

static void test_status_answer_needs_the_tre(void **state)
{
  (void)state;
  char txn[40], q[256];
  json_t *ans = NULL;
  status_txn("fdev2", txn);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM outbox WHERE txn = '%s'", txn);
  long long outbox0 = db_int("ro", q), answers0 = db_int("ro", "SELECT COUNT(*) FROM answers");
  char *tok = token(key_sho_b, "sho-b", "fdev2", "full", imsi2);

  /* statuses that are not fdev2's TRE's: a rogue CA's key named fdev2, the M2MES CA's key of
   * another device with fdev2's name in the claims, a status that is no JWS at all */
  char *rogue_pem = NULL, *other_pem = NULL;
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev2", &rogue_pem);
  mcim_jose_key_t *other = tre_key(m2mes_ca, "mallory", &other_pem);
  json_t *extra = json_pack("{s:s,s:s}", "result", "success", "slot", "sho-b");
  char *forged = sign(rogue, "mcim-status+jwt", "fdev2", "fdev2", "ro", txn, json_incref(extra));
  char *foreign = sign(other, "mcim-status+jwt", "fdev2", "fdev2", "ro", txn, json_incref(extra));
  char *cert = NULL;
  char *real = device_sign("fdev2", "mcim-status+jwt", "ro", txn, json_incref(extra), &cert);
  struct {
    const char *status, *cert;
    mcim_cause_t want;
  } tries[] = {
      {forged, rogue_pem, MCIM_CERT_INVALID},
      {foreign, other_pem, MCIM_CERT_INVALID},
      {forged, cert, MCIM_JWS_BAD_SIGNATURE}, /* fdev2's certificate, not its TRE's status */
      {"not.a.status", cert, MCIM_JOSE_MALFORMED},
  };
  for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
    assert_int_equal(report(tok, txn, tries[i].status, tries[i].cert, &ans), tries[i].want);
    assert_null(json_object_get(ans, "result")); /* the stored answer did not go out */
    json_decref(ans);
  }

  /* the device's own status for the txn: the stored answer, twice with the same statement */
  for (int k = 0; k < 2; k++) {
    assert_int_equal(report(tok, txn, real, cert, &ans), MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(ans, "txn")), txn);
    assert_string_equal(json_string_value(json_object_get(ans, "result")), "success");
    json_decref(ans);
  }
  /* ... and nothing acted again: no answer, no report to the SHO added */
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM answers"), answers0);
  assert_int_equal(db_int("ro", q), outbox0);

  json_decref(extra);
  free(real);
  free(cert);
  free(forged);
  free(foreign);
  free(rogue_pem);
  free(other_pem);
  mcim_jose_key_free(rogue);
  mcim_jose_key_free(other);
  free(tok);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_answer_needs_the_tre),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
