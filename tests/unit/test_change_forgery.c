/* Forged statements against the change of subscription's steps 9 and 11, on a real lab.
 * Two devices are manufactured and provisioned with the CLI's library calls (fdev1 at sho-a,
 * fdev2 at sho-b) on a real lab (mcimd processes on loopback, real TLS, real device agents
 * with their software TREs; tests/unit/change_forgery_fixture.h); the test plays an attacker
 * who holds valid network access and, for some cases, a TRE key certified by the M2MES CA for
 * a device of its own ("mallory"). Access: restricted tokens from a real attach at the VNO (a
 * PCID credential of the test's own, registered at the ICF as the M2MES does, and a software
 * USIM, as test_access_e2e.c); full tokens signed with the SHO's key from the lab PKI, as the
 * SHO issues them after an attach ("the device holds a full token"). It sends:
 *  - discard receipts to the old SHO (POST /v1/discards, change step 9) signed by a key that
 *    is not the device's TRE: certified by another CA, or by the M2MES CA for another device;
 *    naming another device's IMSI, another SHO's slot, an IMSI the SHO does not know;
 *  - acknowledgements at step 11 (POST ro /v1/dpf/releases) while a real change of fdev1
 *    from sho-a to sho-b waits at step 9: signed by the new SHO itself, by a role that is
 *    not an SHO (pva), by an unknown key, with released=false, for another txn, about
 *    another device, for another audience, of another type; and a genuine one of an SHO the
 *    RO's records do not link to the device.
 * Every one is refused with its cause; afterwards the subscriptions are as they were (the
 * devices still attach with full access), nothing was relayed to the new SHO, and the real
 * change, let go, completes with the invariants of DESIGN.md section 4. Forged notifications
 * are test_change_forgery_notify.c's, tokens bound to their issuer
 * test_change_forgery_tokens.c's. */
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
#include "tre/tre_priv.h"

/* A receipt of a lab device's own TRE, as its pending op signs the one its discard queued
 * (tre_slots.c): the sign op the agent uses refuses this type, and the queued one is gone
 * once the SHO acknowledged it, so the test signs it from inside the TRE. */
static char *tre_receipt(const char *device, const char *sho, const char *txn, const char *imsi,
                         char **cert)
{
  mcim_tre_t *tre = NULL;
  json_t *st = NULL, *extra = json_pack("{s:s,s:s}", "slot", sho, "imsi", imsi);
  char *jws = NULL, path[512];
  snprintf(path, sizeof(path), "%s/devices/%s/tre", mcim_lab_path(lab), device);
  assert_int_equal(mcim_tre_soft_open(path, &tre), MCIM_OK);
  assert_int_equal(tre_begin(tre->ctx, &st), MCIM_OK);
  assert_int_equal(tre_sign_statement(tre->ctx, st, "mcim-discard+jwt", sho, txn, extra, 300,
                                      &jws),
                   MCIM_OK);
  tre_end(tre->ctx, st);
  assert_int_equal(tre->ops->cert(tre->ctx, MCIM_TRE_CERT_ATTESTATION, cert), MCIM_OK);
  mcim_tre_close(tre);
  json_decref(extra);
  return jws;
}


/* ---- step 9: forged discard receipts to the old SHO ---- */

static void test_forged_receipts(void **state)
{
  (void)state;
  char *rogue_pem = NULL, *mallory_pem = NULL, *r = NULL;
  /* a key that is not fdev1's TRE, certified by another CA for the name fdev1 */
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  /* mallory: a device of the attacker's own, properly certified by the M2MES CA */
  mcim_jose_key_t *mallory = tre_key(m2mes_ca, "mallory", &mallory_pem);
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);

  /* fdev1's receipt, signed by a key of another CA */
  r = receipt(rogue, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, rogue_pem), MCIM_CERT_INVALID);
  free(r);
  /* fdev1's receipt, signed by a key the M2MES CA certified for another device */
  r = receipt(mallory, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, mallory_pem), MCIM_CERT_INVALID);
  free(r);
  /* ... the same with mallory's own certificate and a receipt naming mallory: the body says
   * fdev1 (the token's device), the statement another: refused */
  r = receipt(mallory, "mallory", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tok1, TXN_F1, "fdev1", r, mallory_pem), MCIM_CERT_INVALID);
  free(r);
  /* mallory, with its own valid statement and access, names fdev1's IMSI */
  r = receipt(mallory, "mallory", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tokm, TXN_F1, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* ... another SHO's slot */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-b", imsi1);
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* ... an IMSI of another SHO (fdev2's at sho-b), sent to sho-a */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-a", imsi2);
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_UNKNOWN_IDENTITY);
  free(r);
  /* ... an IMSI nobody has */
  r = receipt(mallory, "mallory", "sho-a", TXN_F2, "sho-a", "001029999999999");
  assert_int_equal(discard("sho-a", tokm, TXN_F2, "mallory", r, mallory_pem), MCIM_UNKNOWN_IDENTITY);
  free(r);
  /* ... fdev2's IMSI at its own SHO: another device's subscription */
  char *tokm_b = token(key_sho_b, "sho-b", "mallory", "full", imsim_b);
  r = receipt(mallory, "mallory", "sho-b", TXN_F2, "sho-b", imsi2);
  assert_int_equal(discard("sho-b", tokm_b, TXN_F2, "mallory", r, mallory_pem), MCIM_SLOT_FORBIDDEN);
  free(r);
  /* a token of the VNO does not reach the SHO's discard service at all */
  char *tokr = vno_token("fdev1", "001019100000001");
  r = receipt(rogue, "fdev1", "sho-a", TXN_F1, "sho-a", imsi1);
  assert_int_equal(discard("sho-a", tokr, TXN_F1, "fdev1", r, rogue_pem), MCIM_TOKEN_WRONG_ISSUER);
  /* ... nor does a token of another device for fdev1's receipt */
  assert_int_equal(discard("sho-a", tokm, TXN_F1, "fdev1", r, rogue_pem), MCIM_FORBIDDEN);
  free(r);

  /* nothing changed: both subscriptions active, the devices attach with full access */
  char q[256];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi2);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_int_equal(db_int("sho-a", "SELECT COUNT(*) FROM answers WHERE step = 10"), 0);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE state = 'released'"), 0);
  assert_full_access("fdev1", "sho-a");
  assert_full_access("fdev2", "sho-b");

  free(tok1);
  free(tokm);
  free(tokm_b);
  free(tokr);
  free(rogue_pem);
  free(mallory_pem);
  mcim_jose_key_free(rogue);
  mcim_jose_key_free(mallory);
}


/* ---- step 11: forged acknowledgements while a real change waits at step 9 ---- */

struct bg_run {
  pthread_t th;
  struct mcim_lab_run run;
  struct mcim_lab_run_result res;
  mcim_cause_t rc;
};

static void *bg_main(void *arg)
{
  struct bg_run *b = arg;
  mcim_lab_t *own = NULL; /* the lab's clients are per thread: a handle of its own */
  b->rc = mcim_lab_open(labdir, &own);
  if (b->rc == MCIM_OK)
    b->rc = mcim_lab_run(own, &b->run, &b->res);
  mcim_lab_free(own);
  return NULL;
}


struct stage_wait {
  const char *device, *stage;
  char txn[40];
};

static bool at_stage(void *arg)
{
  struct stage_wait *w = arg;
  char stage[32];
  running_stage(w->device, stage, w->txn);
  return strcmp(stage, w->stage) == 0;
}

static bool package_held(void *arg)
{
  (void)arg;
  return db_int("ro", "SELECT COUNT(*) FROM dpf_packages WHERE device = 'fdev1' AND state = 'held'") == 1;
}

static bool pva_revoked(void *arg)
{
  char q[160];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM revocations WHERE network = 'sho-a' AND imsi = '%s'",
           (const char *)arg);
  return db_int("pva", q) == 1;
}

/* The PVA honours every network's token, so it is told when an SHO ends a subscription:
 * sho-a's outbox delivers the revocation of imsi1 (step 10), and from then on the PVA refuses
 * that subscription's tokens too. A revocation binds only its sender's tokens: sho-b
 * "revoking" mallory's sho-a IMSI changes nothing for sho-a's tokens, and a role that is not
 * an SHO (the M2MES, 403) or a caller without a certificate (401) cannot revoke at all. */
static void pva_revocation_checks(const char *txn, const char *revoked)
{
  char path[160];
  long status = 0;
  snprintf(path, sizeof(path), "/v1/validations/pending/fdev1/%s", txn);
  assert_true(wait_until(30, pva_revoked, imsi1));
  json_t *ans = NULL;
  assert_int_equal(post_keep("pva", path, revoked, json_object(), &ans, &status),
                   MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);
  json_decref(ans);

  struct mcim_http_client *sho_b_cli = NULL;
  struct mcim_http_client_cfg bc = {.ca_file = lab_file("pki/" MCIM_PKI_OPERATORS_CA_CERT),
                                    .cert_file = lab_file("pki/sho-b/cert.pem"),
                                    .key_file = lab_file("pki/sho-b/key.pem")};
  assert_int_equal(mcim_http_client_new(&bc, &sho_b_cli), MCIM_OK);
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s,s:s,s:s}", "txn", txn, "device", "mallory", "imsi", imsim_a);
  long long rows = db_int("pva", "SELECT COUNT(*) FROM revocations");
  /* not an SHO (the M2MES), no client certificate at all: refused, nothing recorded */
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_FORBIDDEN);
  assert_int_equal(r.status, 403);
  mcim_http_result_clear(&r);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&r);
  assert_int_equal(db_int("pva", "SELECT COUNT(*) FROM revocations"), rows);
  /* another SHO: recorded, but only as its own (it revokes nothing of sho-a's) */
  assert_int_equal(mcim_http_request(sho_b_cli, "POST", url("pva", "/v1/revocations"), body, NULL,
                                     &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  json_decref(body);
  mcim_http_client_free(sho_b_cli);
  char q[160];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM revocations WHERE network = 'sho-a' AND imsi = '%s'",
           imsim_a);
  assert_int_equal(db_int("pva", q), 0);
  char *live = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  snprintf(path, sizeof(path), "/v1/validations/pending/mallory/%s", txn);
  /* honoured: the request goes on to the device's own proof, which it lacks */
  assert_int_equal(post_keep("pva", path, live, json_object(), &ans, &status),
                   MCIM_FIELD_MISSING);
  assert_int_equal(status, 400);
  json_decref(ans);
  free(live);
}

static mcim_cause_t release(const char *bearer, const char *txn, const char *device,
                            const char *ack)
{
  return post("ro", "/v1/dpf/releases", bearer,
              json_pack("{s:s,s:s,s:s}", "txn", txn, "device", device, "ack", ack));
}

/* The old SHO's acknowledgement as src/roles/sho/change.c makes it, with what we vary. */
static char *ack(const mcim_jose_key_t *key, const char *iss, const char *sub, const char *aud,
                 const char *typ, const char *txn, bool released)
{
  return sign(key, typ, iss, sub, aud, txn,
              json_pack("{s:b,s:s,s:s,s:I}", "released", released, "imsi", imsi1, "sho", iss,
                        "at", (json_int_t)mcim_now()));
}

static void test_forged_acknowledgements(void **state)
{
  (void)state;
  struct bg_run b = {.run = {.device = "fdev1", .procedure = "change", .sho = "sho-b",
                             .via = "old-sho", .timeout_s = 90}};
  struct stage_wait w = {.device = "fdev1", .stage = "download"};
  char q[512], *a = NULL;

  /* The package sho-b sends for this change reaches the DPF but stays out of the device's
   * reach until sho-a has been paused: the device then stages it, discards the sho-a MCIM
   * (step 8) and waits on sho-a at step 9, with no acknowledgement relayed yet. */
  db_exec("ro", "CREATE TRIGGER hold_fdev1 AFTER INSERT ON dpf_packages"
                " WHEN NEW.device = 'fdev1' BEGIN"
                " UPDATE dpf_packages SET state = 'held' WHERE txn = NEW.txn; END;");
  assert_int_equal(pthread_create(&b.th, NULL, bg_main, &b), 0);
  assert_true(wait_until(60, package_held, NULL));
  assert_true(wait_until(30, at_stage, &w));
  paused = role_pid("sho-a");
  assert_int_equal(kill(paused, SIGSTOP), 0);
  db_exec("ro", "DROP TRIGGER hold_fdev1;"
                " UPDATE dpf_packages SET state = 'ready' WHERE state = 'held';");
  w.stage = "receipt";
  assert_true(wait_until(30, at_stage, &w));
  const char *txn = w.txn;
  assert_int_equal(strlen(txn), 32);

  /* the device's access: a restricted token of the VNO reaches the RO */
  char *tok = vno_token("fdev1", "001019100000002");
  char *mallory_tok = vno_token("fdev2", "001019100000003");
  mcim_jose_key_t *unknown = NULL;
  assert_int_equal(mcim_jose_key_generate(&unknown), MCIM_OK);

  /* signed by the new SHO itself */
  a = ack(key_sho_b, "sho-b", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* by a role that is not an SHO */
  a = ack(key_pva, "pva", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* in the old SHO's name, by an unknown key */
  a = ack(unknown, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_JWS_BAD_SIGNATURE);
  free(a);
  /* the old SHO's key, released = false */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, false);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... for another txn */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", TXN_F1, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  assert_int_equal(release(tok, TXN_F1, "fdev1", a), MCIM_NOT_FOUND); /* no such change */
  free(a);
  /* ... about another device */
  a = ack(key_sho_a, "sho-a", "fdev2", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... addressed to the new SHO instead of the RO */
  a = ack(key_sho_a, "sho-a", "fdev1", "sho-b", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* ... a statement of another type (an access token of sho-a) */
  a = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_CLAIM_MISMATCH);
  free(a);
  /* The old SHO asking who takes fdev1 over (review of 2026-12-07): an acknowledgement, or a
   * receipt with a junk certificate, naming each candidate as its signer or addressee, none
   * signed by it. The RO read the claimed SHO and compared it with the new one before the
   * signature: CLAIM_MISMATCH for sho-b alone. Now the signature is checked first: the same
   * answer for every candidate. */
  {
    const char *guesses[] = {"sho-b", "sho-a"};
    for (size_t i = 0; i < 2; i++) {
      a = ack(unknown, guesses[i], "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
      assert_int_equal(release(tok, txn, "fdev1", a), MCIM_JWS_BAD_SIGNATURE);
      free(a);
      a = sign(unknown, "mcim-discard+jwt", "fdev1", "fdev1", guesses[i], txn,
               json_pack("{s:s}", "slot", guesses[i]));
      assert_int_equal(post("ro", "/v1/dpf/releases", tok,
                            json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", "fdev1",
                                      "receipt", a, "tre_cert", "junk")),
                       MCIM_CERT_INVALID);
      free(a);
    }
  }
  /* a good-looking acknowledgement sent with another device's access */
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(mallory_tok, txn, "fdev1", a), MCIM_FORBIDDEN);
  free(a);
  /* A genuine acknowledgement, for this txn, of an SHO that the RO's records do not link to
   * fdev1 (no registry entry of it, no install of its package there): it releases nothing.
   * sho-a's links are renamed away for the moment, standing for a third SHO that never served
   * fdev1 and learned the txn (before the check, any SHO but the new one could). */
  db_exec("ro", "UPDATE drf SET sho = 'sho-unlinked' WHERE device = 'fdev1' AND sho = 'sho-a';"
                "UPDATE drf_orders SET sho = 'sho-unlinked' WHERE device = 'fdev1'"
                " AND sho = 'sho-a';");
  a = ack(key_sho_a, "sho-a", "fdev1", "ro", "mcim-discard-ack+jwt", txn, true);
  assert_int_equal(release(tok, txn, "fdev1", a), MCIM_NOT_PARTY);
  free(a);
  db_exec("ro", "UPDATE drf SET sho = 'sho-a' WHERE sho = 'sho-unlinked';"
                "UPDATE drf_orders SET sho = 'sho-a' WHERE sho = 'sho-unlinked';");

  /* The old SHO (sho-a knows this txn from step 9, and the RO honours a token it mints for
   * fdev1, still its subscriber) asks the RO who takes fdev1 over. The DRF's discovery and
   * the DPF's package go to the device itself only (its TRE's request, beside the token):
   * without that request FIELD_MISSING; with one signed by a key certified as fdev1 by a
   * rogue CA, or by another device's real M2MES certificate, CERT_INVALID; fdev1's own
   * request of another txn or for the other thing, CLAIM_MISMATCH. No answer names sho-b;
   * the RO stores and queues nothing (before the check, the discovery answered sho-b's name
   * and queued a step-8 announcement). */
  {
    char *own = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
    char pkg_path[128], *rogue_pem = NULL, *other_pem = NULL;
    snprintf(pkg_path, sizeof(pkg_path), "/v1/dpf/packages/fdev1/%s", txn);
    mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
    mcim_jose_key_t *other = tre_key(m2mes_ca, "mallory", &other_pem);
    long long answers0 = db_int("ro", "SELECT COUNT(*) FROM answers");
    long long outbox0 = db_int("ro", "SELECT COUNT(*) FROM outbox");
    static const struct {
      const char *path, *what, *other;
    } asks[] = {{"/v1/drf/discover", "discovery", "package"},
                {NULL, "package", "discovery"}};
    for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
      const char *path = asks[i].path ? asks[i].path : pkg_path;
      struct {
        const char *why;
        mcim_cause_t want;
        char *proof;
        const char *cert;
        char *cert_owned;
      } tries[5] = {
          {"no TRE request", MCIM_FIELD_MISSING, NULL, NULL, NULL},
          {"a rogue CA's fdev1", MCIM_CERT_INVALID,
           sign(rogue, "mcim-request+jwt", "fdev1", "fdev1", "ro", txn,
                json_pack("{s:s}", "for", asks[i].what)),
           rogue_pem, NULL},
          {"another device's", MCIM_CERT_INVALID,
           sign(other, "mcim-request+jwt", "fdev1", "fdev1", "ro", txn,
                json_pack("{s:s}", "for", asks[i].what)),
           other_pem, NULL},
          {"fdev1's for another txn", MCIM_CLAIM_MISMATCH, NULL, NULL, NULL},
          {"fdev1's for the other thing", MCIM_CLAIM_MISMATCH, NULL, NULL, NULL},
      };
      tries[3].proof = device_sign("fdev1", "mcim-request+jwt", "ro", TXN_F1,
                                   json_pack("{s:s}", "for", asks[i].what), &tries[3].cert_owned);
      tries[3].cert = tries[3].cert_owned;
      tries[4].proof = device_sign("fdev1", "mcim-request+jwt", "ro", txn,
                                   json_pack("{s:s}", "for", asks[i].other), &tries[4].cert_owned);
      tries[4].cert = tries[4].cert_owned;
      for (size_t j = 0; j < 5; j++) {
        json_t *body = asks[i].path ? json_pack("{s:s,s:s}", "txn", txn, "device", "fdev1")
                                    : json_object();
        if (tries[j].proof) {
          json_object_set_new(body, "proof", json_string(tries[j].proof));
          json_object_set_new(body, "tre_cert", json_string(tries[j].cert));
        }
        json_t *ans = NULL;
        long status = 0;
        mcim_cause_t rc = post_keep("ro", path, own, body, &ans, &status);
        char *text = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
        if (rc != tries[j].want || (text && strstr(text, "sho-b")))
          fprintf(stderr, "  %s with %s: %s (%ld) %s\n", path, tries[j].why,
                  mcim_cause_name(rc), status, text ? text : "");
        assert_int_equal(rc, tries[j].want);
        assert_int_equal(status, tries[j].want == MCIM_FIELD_MISSING ? 400 : 401);
        assert_null(text ? strstr(text, "sho-b") : NULL);
        free(text);
        json_decref(ans);
        free(tries[j].proof);
        free(tries[j].cert_owned);
      }
    }
    assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM answers"), answers0);
    assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox"), outbox0);
    mcim_jose_key_free(rogue);
    mcim_jose_key_free(other);
    free(rogue_pem);
    free(other_pem);
    free(own);
  }

  /* nothing was relayed: no answer stored, nothing queued for sho-b, its order not released
   * and not active, its MCIM not active */
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM answers WHERE txn = '%s' AND step = 11", txn);
  assert_int_equal(db_int("ro", q), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM outbox WHERE txn = '%s' AND path = '/v1/releases'", txn);
  assert_int_equal(db_int("ro", q), 0);
  snprintf(q, sizeof(q), "SELECT released FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(db_int("sho-b", q), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM orders WHERE txn = '%s' AND state = 'active'", txn);
  assert_int_equal(db_int("sho-b", q), 0);
  assert_int_equal(db_int("sho-b", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 0);

  /* let sho-a answer: the real change completes despite the forgeries */
  resume_paused();
  assert_int_equal(pthread_join(b.th, NULL), 0);
  if (b.rc != MCIM_OK)
    fprintf(stderr, "change: %s %s\n", b.res.result, b.res.detail);
  assert_int_equal(b.rc, MCIM_OK);
  mcim_lab_run_result_clear(&b.res);
  snprintf(q, sizeof(q), "SELECT released FROM orders WHERE txn = '%s'", txn);
  assert_int_equal(db_int("sho-b", q), 1);
  /* invariant 1: one active subscription, at sho-b; the old IMSI terminated at sho-a */
  assert_int_equal(db_int("sho-b", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 1);
  assert_int_equal(db_int("sho-a", "SELECT COUNT(*) FROM auc WHERE device = 'fdev1' AND state = 'active'"), 0);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'terminated'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE device = 'fdev1' AND state = 'subscribed'"), 1);
  assert_full_access("fdev1", "sho-b");

  /* The termination at step 10 revoked every token of the old subscription at once, and the
   * device dropped that session (it lists none of sho-a). */
  long status = 0;
  json_t *ans = NULL;
  char *revoked = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  assert_int_equal(get("sho-a", "/v1/devices/fdev1/subscription", revoked, &status),
                   MCIM_TOKEN_REVOKED);
  assert_int_equal(status, 401);
  /* ... at the RO too: a token sho-a issued before it released fdev1's registry entry */
  int64_t now = mcim_now();
  char *before = NULL;
  json_t *x = json_pack("{s:s,s:s}", "scope", "full", "imsi", imsi1);
  mcim_claims_t c = {.iss = "sho-a", .sub = "fdev1", .aud = "sho-a", .typ = "mcim-access+jwt",
                     .txn = ZERO_TXN, .iat = now - 120, .exp = now + 300, .extra = x};
  assert_int_equal(mcim_jws_sign(key_sho_a, &c, &before), MCIM_OK);
  json_decref(x);
  assert_int_equal(post("ro", "/v1/drf/discover", before,
                        json_pack("{s:s,s:s}", "txn", txn, "device", "fdev1")),
                   MCIM_TOKEN_REVOKED);
  free(before);
  pva_revocation_checks(txn, revoked);
  json_t *view = agent_get("fdev1", "/v1/status"), *acc;
  size_t i;
  json_array_foreach(json_object_get(view, "access"), i, acc)
    assert_string_not_equal(json_string_value(json_object_get(acc, "network")), "sho-a");
  json_decref(view);

  /* sho-a's stored acknowledgement (it names sho-a and the old IMSI) goes to nobody without
   * a valid receipt of fdev1 for this txn: not with the revoked token and a forged receipt,
   * not with another device's live token, not without a token */
  char *rogue_pem = NULL;
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  char *fake = receipt(rogue, "fdev1", "sho-a", txn, "sho-a", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  const char *bearers[] = {revoked, tokm, NULL};
  const mcim_cause_t want[] = {MCIM_CERT_INVALID, MCIM_FORBIDDEN, MCIM_NO_ACCESS};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(post_keep("sho-a", "/v1/discards", bearers[k],
                               json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", "fdev1",
                                         "receipt", fake, "tre_cert", rogue_pem, "step", 9),
                               &ans, &status),
                     want[k]);
    assert_null(json_object_get(ans, "ack"));
    json_decref(ans);
  }
  /* ... while the device itself, retrying with a receipt of its TRE, gets it back (the
   * very request that revoked its token) */
  char *cert = NULL;
  char *real = tre_receipt("fdev1", "sho-a", txn, imsi1, &cert);
  assert_int_equal(post_keep("sho-a", "/v1/discards", revoked,
                             json_pack("{s:s,s:s,s:s,s:s,s:i}", "txn", txn, "device", "fdev1",
                                       "receipt", real, "tre_cert", cert, "step", 9),
                             &ans, &status),
                   MCIM_OK);
  assert_non_null(json_string_value(json_object_get(ans, "ack")));
  json_decref(ans);
  free(real);
  free(cert);
  free(fake);
  free(tokm);
  free(rogue_pem);
  mcim_jose_key_free(rogue);
  free(revoked);

  free(tok);
  free(mallory_tok);
  mcim_jose_key_free(unknown);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forged_receipts),
      cmocka_unit_test(test_forged_acknowledgements),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
