/* Forged notifications against the switch between pre-provisioned MCIMs, on a real lab.
 * Two devices are manufactured and provisioned with the CLI's library calls (fdev1 at sho-a,
 * fdev2 at sho-b) on a real lab (mcimd processes on loopback, real TLS, real device agents
 * with their software TREs; tests/unit/change_forgery_fixture.h); the test plays an attacker
 * who holds valid network access and, for some cases, a TRE key certified by the M2MES CA for
 * a device of its own ("mallory"). Access: restricted tokens from a real attach at the VNO (a
 * PCID credential of the test's own, registered at the ICF as the M2MES does, and a software
 * USIM, as test_access_e2e.c); full tokens signed with the SHO's key from the lab PKI, as the
 * SHO issues them after an attach ("the device holds a full token"). It sends
 * notifications (POST /v1/notifications) for another SHO's slot or another device's IMSI:
 * each refused with its cause, the subscriptions as they were. And the switch the RO relays
 * before the new SHO can take it: to an SHO the device has no registration at yet
 * (REGISTRATION_PENDING, nothing queued; another device's token or an SHO it has nothing at
 * FORBIDDEN), and to an SHO that has not heard the MCIM's install report (REPORT_PENDING: the
 * RO keeps the message and asks again, the SHO changes nothing). */
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

/* A notice signed by a lab device's own TRE from inside it (tre_sign_statement): the sign op
 * signs one only within a switch the owner instructed (tre_sign.c), and these cases test
 * what the network checks of a notice its TRE did sign. */
static char *device_notice(const char *device, const char *typ, const char *aud,
                           const char *txn, json_t *extra, char **cert)
{
  mcim_tre_t *tre = NULL;
  json_t *st = NULL;
  char *jws = NULL, path[512];
  snprintf(path, sizeof(path), "%s/devices/%s/tre", mcim_lab_path(lab), device);
  assert_int_equal(mcim_tre_soft_open(path, &tre), MCIM_OK);
  assert_int_equal(tre_begin(tre->ctx, &st), MCIM_OK);
  assert_int_equal(tre_sign_statement(tre->ctx, st, typ, aud, txn, extra, 300, &jws), MCIM_OK);
  tre_end(tre->ctx, st);
  if (cert)
    assert_int_equal(tre->ops->cert(tre->ctx, MCIM_TRE_CERT_ATTESTATION, cert), MCIM_OK);
  mcim_tre_close(tre);
  json_decref(extra);
  return jws;
}

/* ---- notifications (switch between pre-provisioned MCIMs) ---- */

static mcim_cause_t notify(const char *sho, const char *bearer, const char *device,
                           const mcim_jose_key_t *key, const char *cert, const char *event,
                           const char *slot, const char *imsi)
{
  char *n = sign(key, "mcim-notify+jwt", device, device, sho, TXN_F3,
                 json_pack("{s:s,s:s,s:s}", "event", event, "slot", slot, "imsi", imsi));
  mcim_cause_t rc = post(sho, "/v1/notifications", bearer,
                         json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F3, "device", device, "notice",
                                   n, "tre_cert", cert));
  free(n);
  return rc;
}

/* A relayed notice to an SHO (POST ro /v1/dpf/notices): while the DRF holds mallory's
 * installed order at sho-b but not yet sho-b's registration (step 15, on sho-b's outbox: here
 * its entry is moved aside for the test), the RO answers "not yet" (503 REGISTRATION_PENDING,
 * Retry-After) and relays nothing. fdev2, whose orders are only at sho-b, relaying to sho-a
 * (no order, no entry) is SHO_NOT_LINKED, the one answer on which the device drops a notice;
 * fdev2's notice sent with mallory's token is FORBIDDEN, never SHO_NOT_LINKED (whatever
 * links exist), since the network that issued the token chose its device. */
static mcim_cause_t relay_leg(const char *device, const char *token, const char *to,
                              const char *imsi, const char *txn, const char *event, int seq,
                              const char *leg, long *status)
{
  char *cert = NULL;
  char *jws = device_notice(device, "mcim-notify+jwt", to, txn,
                          json_pack("{s:s,s:s,s:s,s:i,s:s}", "event", event, "slot", to, "imsi",
                                    imsi, "seq", seq, "leg", leg),
                          &cert);
  json_t *ans = NULL;
  mcim_cause_t rc = post_keep("ro", "/v1/dpf/notices", token,
                              json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", device, "to",
                                        to, "statement", jws, "tre_cert", cert),
                              &ans, status);
  json_decref(ans);
  free(jws);
  free(cert);
  return rc;
}

/* the leg of the slot the switch enters, as the TRE signs it (tre_sign.c) */
static mcim_cause_t relay_imsi(const char *device, const char *token, const char *to,
                               const char *imsi, const char *txn, const char *event, int seq,
                               long *status)
{
  return relay_leg(device, token, to, imsi, txn, event, seq, "to", status);
}

static mcim_cause_t relay_event(const char *device, const char *token, const char *to,
                                const char *txn, const char *event, int seq, long *status)
{
  return relay_imsi(device, token, to, strcmp(device, "mallory") == 0 ? imsim_b : imsi2, txn,
                    event, seq, status);
}

static mcim_cause_t relay_notice(const char *device, const char *token, const char *to,
                                 const char *txn, long *status)
{
  return relay_event(device, token, to, txn, "resume", 1, status);
}

/* A competitor reading the registry through the relay (review of 2026-12-07): sho-a, which
 * serves fdev2 nothing, mints a token for it and posts notices that do not verify (signed
 * with sho-a's key, fdev2's real TRE certificate beside them), "to" the SHO that serves fdev2
 * (sho-b), to one that does not (sho-a) and to one that does not exist, of both kinds. The RO
 * looked the registry up before it verified the statement, so its answers told them apart
 * (sho-b: JWS_BAD_SIGNATURE; the others: FORBIDDEN). Now every one gets the same answer, and
 * nothing is queued. */
static void test_registry_not_probed(void **state)
{
  (void)state;
  char *cert = NULL;
  char *genuine = device_notice("fdev2", "mcim-notify+jwt", "sho-b", TXN_F4,
                                json_pack("{s:s,s:s,s:s,s:i,s:s}", "event", "resume", "slot",
                                          "sho-b", "imsi", imsi2, "seq", 1, "leg", "to"),
                                &cert); /* for fdev2's TRE certificate */
  char *tok = token(key_sho_a, "sho-a", "fdev2", "full", imsim_a);
  const char *typs[] = {"mcim-discard+jwt", "mcim-notify+jwt"};
  const char *tos[] = {"sho-b", "sho-a", "sho-x"};
  long long queued = db_int("ro", "SELECT COUNT(*) FROM outbox");
  for (size_t i = 0; i < 2; i++) {
    for (size_t j = 0; j < 3; j++) {
      char *jws = sign(key_sho_a, typs[i], "fdev2", "fdev2", tos[j], TXN_F4,
                       json_pack("{s:s,s:s,s:s,s:i,s:s}", "event", "resume", "slot", tos[j],
                                 "imsi", imsi2, "seq", 1, "leg", "to"));
      json_t *ans = NULL;
      long status = 0;
      mcim_cause_t rc =
          post_keep("ro", "/v1/dpf/notices", tok,
                    json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "fdev2", "to",
                              tos[j], "statement", jws, "tre_cert", cert),
                    &ans, &status);
      assert_int_equal(rc, MCIM_JWS_BAD_SIGNATURE);
      assert_int_equal(status, 401);
      json_decref(ans);
      free(jws);
    }
  }
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox"), queued);
  free(tok);
  free(cert);
  free(genuine);
}

static void test_registration_pending(void **state)
{
  (void)state;
  long status = 0;
  char q[256];
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  char *tok2 = token(key_sho_b, "sho-b", "fdev2", "full", imsi2);
  assert_true(db_int("ro", "SELECT COUNT(*) FROM drf_orders WHERE device = 'mallory' AND sho = 'sho-b'"
                           " AND state = 'installed'") >= 1);
  db_exec("ro", "UPDATE drf SET device = 'mallory-aside' WHERE device = 'mallory' AND sho = 'sho-b'");
  long long queued = db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'");
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F4, &status),
                   MCIM_REGISTRATION_PENDING);
  assert_int_equal(status, 503);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  db_exec("ro", "UPDATE drf SET device = 'mallory' WHERE device = 'mallory-aside'");
  /* a device with neither an order nor an entry at that SHO, another device's token */
  assert_int_equal(relay_notice("fdev2", tok2, "sho-a", TXN_F4, &status), MCIM_SHO_NOT_LINKED);
  assert_int_equal(status, 403);
  /* The same for the suspend of the slot a switch leaves (leg "from"), which the RO relays
   * outside the device's chain when the current SHO did not take it (since 2026-12-08): to an
   * SHO with no order, entry or install of the device on record it is no link either, and
   * nothing is queued for it (before, untested). */
  long long to_sho_a = db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-a'");
  assert_int_equal(relay_leg("fdev2", tok2, "sho-a", imsi2, TXN_F4, "suspend", 2, "from",
                             &status),
                   MCIM_SHO_NOT_LINKED);
  assert_int_equal(status, 403);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-a'"), to_sho_a);
  assert_int_equal(relay_notice("fdev2", tokm, "sho-b", TXN_F4, &status), MCIM_FORBIDDEN);
  assert_int_equal(relay_notice("fdev2", tokm, "sho-a", TXN_F4, &status), MCIM_FORBIDDEN);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM drf WHERE device = 'mallory' AND sho = 'sho-b'");
  assert_int_equal(db_int("ro", q), 1);
  /* An entry `released` by an earlier subscription at sho-b is no link: still "not yet". */
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE device = 'mallory' AND"
                                " sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  db_exec("ro", "UPDATE drf SET state = 'released' WHERE device = 'mallory' AND sho = 'sho-b'");
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F4, &status),
                   MCIM_REGISTRATION_PENDING);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  db_exec("ro", "UPDATE drf SET state = 'preloaded' WHERE device = 'mallory' AND sho = 'sho-b'");
  free(tokm);
  free(tok2);
}

static void test_forged_notifications(void **state)
{
  (void)state;
  char *rogue_pem = NULL, *mallory_pem = NULL;
  mcim_jose_key_t *rogue = tre_key(rogue_ca, "fdev1", &rogue_pem);
  mcim_jose_key_t *mallory = tre_key(m2mes_ca, "mallory", &mallory_pem);
  char *tok1 = token(key_sho_a, "sho-a", "fdev1", "full", imsi1);
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);

  /* a notice for the other SHO's slot */
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "suspend", "sho-b", imsi2),
                   MCIM_SLOT_FORBIDDEN);
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "resume", "sho-b", imsi1),
                   MCIM_SLOT_FORBIDDEN);
  /* our slot, but another device's IMSI */
  assert_int_equal(notify("sho-a", tokm, "mallory", mallory, mallory_pem, "suspend", "sho-a", imsi1),
                   MCIM_SLOT_FORBIDDEN);
  /* fdev1's own IMSI, signed by a key of another CA */
  assert_int_equal(notify("sho-a", tok1, "fdev1", rogue, rogue_pem, "suspend", "sho-a", imsi1),
                   MCIM_CERT_INVALID);
  /* sho-b's slot sent to sho-b about fdev2's IMSI by mallory */
  char *tokm_b = token(key_sho_b, "sho-b", "mallory", "full", imsim_b);
  assert_int_equal(notify("sho-b", tokm_b, "mallory", mallory, mallory_pem, "suspend", "sho-b", imsi2),
                   MCIM_SLOT_FORBIDDEN);

  /* Stored answers are per (txn, device, event): fdev1 suspends its sho-a subscription under
   * TXN_F4 (a genuine notice of its TRE), then mallory, with a notice of ITS OWN for the same
   * txn, gets its own answer, never fdev1's (its IMSI); a forged one gets a refusal. Both
   * resume after (a standby subscription's token is still honoured). */
  json_t *ans = NULL;
  char *cert1 = NULL, *certm = NULL, *n;
  /* a notice without its place in the device's order (tre_sign.c signs one in each) */
  n = device_notice("fdev1", "mcim-notify+jwt", "sho-a", TXN_F4,
                  json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", "sho-a", "imsi", imsi1),
                  &cert1);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tok1,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "fdev1",
                                       "notice", n, "tre_cert", cert1),
                             &ans, NULL),
                   MCIM_CLAIM_MISSING);
  json_decref(ans);
  free(n);
  free(cert1);
  n = device_notice("fdev1", "mcim-notify+jwt", "sho-a", TXN_F4,
                  json_pack("{s:s,s:s,s:s,s:i}", "event", "suspend", "slot", "sho-a", "imsi", imsi1,
                            "seq", 1),
                  &cert1);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tok1,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "fdev1",
                                       "notice", n, "tre_cert", cert1),
                             &ans, NULL),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(ans, "imsi")), imsi1);
  json_decref(ans);
  free(n);
  n = sign(rogue, "mcim-notify+jwt", "mallory", "mallory", "sho-a", TXN_F4,
           json_pack("{s:s,s:s,s:s}", "event", "suspend", "slot", "sho-a", "imsi", imsim_a));
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tokm,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "mallory",
                                       "notice", n, "tre_cert", rogue_pem),
                             &ans, NULL),
                   MCIM_CERT_INVALID);
  assert_null(json_object_get(ans, "imsi"));
  json_decref(ans);
  free(n);
  n = device_notice("mallory", "mcim-notify+jwt", "sho-a", TXN_F4,
                  json_pack("{s:s,s:s,s:s,s:i}", "event", "suspend", "slot", "sho-a", "imsi",
                            imsim_a, "seq", 1),
                  &certm);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tokm,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", "mallory",
                                       "notice", n, "tre_cert", certm),
                             &ans, NULL),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(ans, "imsi")), imsim_a);
  json_decref(ans);
  free(n);
  for (int i = 0; i < 2; i++) {
    const char *dev = i ? "mallory" : "fdev1", *im = i ? imsim_a : imsi1;
    n = device_notice(dev, "mcim-notify+jwt", "sho-a", TXN_F4,
                    json_pack("{s:s,s:s,s:s,s:i}", "event", "resume", "slot", "sho-a", "imsi", im,
                              "seq", 2),
                    NULL);
    assert_int_equal(post_keep("sho-a", "/v1/notifications", i ? tokm : tok1,
                               json_pack("{s:s,s:s,s:s,s:s}", "txn", TXN_F4, "device", dev,
                                         "notice", n, "tre_cert", i ? certm : cert1),
                               &ans, NULL),
                     MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(ans, "state")), "active");
    json_decref(ans);
    free(n);
  }
  free(cert1);
  free(certm);

  /* still active (not in standby): full access */
  char q[256];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi1);
  assert_int_equal(db_int("sho-a", q), 1);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'active'", imsi2);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_full_access("fdev1", "sho-a");
  assert_full_access("fdev2", "sho-b");

  free(tok1);
  free(tokm);
  free(tokm_b);
  free(rogue_pem);
  free(mallory_pem);
  mcim_jose_key_free(rogue);
  mcim_jose_key_free(mallory);
}

static bool relay_retried(void *arg)
{
  return db_int("ro", (const char *)arg) > 0;
}

/* The RO relays mallory's switch (resume) to sho-b while sho-b has not heard the MCIM's
 * install report yet (its AuC entry still `pending`; set here): sho-b answers "not yet"
 * (503 REPORT_PENDING; a 409 the RO's outbox would take as delivered, and the device would
 * wait for an activation that never comes), the RO keeps the message pending and asks
 * again, and sho-b changed nothing. The message is then dropped (the test's lab stays as it
 * was). */
static void test_report_pending(void **state)
{
  (void)state;
  long status = 0;
  char q[256], seen[256];
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  snprintf(q, sizeof(q), "UPDATE auc SET state = 'pending' WHERE imsi = '%s' AND state = 'standby'",
           imsim_b);
  db_exec("sho-b", q);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'pending'",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_int_equal(relay_notice("mallory", tokm, "sho-b", TXN_F5, &status), MCIM_OK);
  snprintf(seen, sizeof(seen),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s' AND state = 'pending'"
           " AND attempts >= 2 AND last_cause = 'REPORT_PENDING'",
           TXN_F5);
  assert_true(wait_until(30, relay_retried, seen));
  assert_int_equal(db_int("sho-b", q), 1);
  snprintf(q, sizeof(q), "DELETE FROM outbox WHERE peer = 'sho-b' AND txn = '%s'", TXN_F5);
  db_exec("ro", q);
  snprintf(q, sizeof(q), "UPDATE auc SET state = 'standby' WHERE imsi = '%s' AND state = 'pending'",
           imsim_b);
  db_exec("sho-b", q);
  free(tokm);
}

/* The crossing of a switch's notices and its undo's (tre_sign.c, notify_check): the device
 * had the RO relay the target's resume (its TRE's order: 20), then undid the switch with the
 * target's suspend (21). The RO's outbox keeps no order, so sho-b may get the suspend first;
 * here it does, sent straight with mallory's sho-b token. The resume that comes after it is
 * older: sho-b answers 409 NOTICE_OVERTAKEN and changes nothing, the RO's outbox takes that as
 * delivered (no retries for a day) and its trace row names the cause. Before the order, the
 * resume made sho-b's subscription active beside the one the undo resumed. A retry of the
 * suspend, the same notice, gets its answer. */
static bool two_overtaken(void *arg)
{
  return db_int("ro", (const char *)arg) == 2;
}

static void test_notices_in_order(void **state)
{
  (void)state;
  long status = 0;
  char q[320], *cert = NULL;
  json_t *ans = NULL;
  const char *txn = "0000000000000000000000000000f007";
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  char *tokm_b = token(key_sho_b, "sho-b", "mallory", "full", imsim_b);
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'standby'",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  /* a notice without its place in the order: refused by the RO before it is queued (the SHO
   * would refuse it for good, and the device would have been told it is on its way) */
  long long queued = db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'");
  assert_int_equal(relay_event("mallory", tokm, "sho-b", txn, "resume", 0, &status),
                   MCIM_CLAIM_MISSING);
  assert_int_equal(status, 401);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b'"), queued);
  for (int i = 0; i < 2; i++) { /* the suspend, then its retry */
    char *n = device_notice("mallory", "mcim-notify+jwt", "sho-b", txn,
                            json_pack("{s:s,s:s,s:s,s:i}", "event", "suspend", "slot", "sho-b",
                                      "imsi", imsim_b, "seq", 21),
                            &cert);
    assert_int_equal(post_keep("sho-b", "/v1/notifications", tokm_b,
                               json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", "mallory",
                                         "notice", n, "tre_cert", cert),
                               &ans, NULL),
                     MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(ans, "state")), "standby");
    json_decref(ans);
    ans = NULL;
    free(n);
    free(cert);
    cert = NULL;
  }
  snprintf(q, sizeof(q), "SELECT notice_seq FROM auc WHERE imsi = '%s'", imsim_b);
  assert_int_equal(db_int("sho-b", q), 21);

  assert_int_equal(relay_event("mallory", tokm, "sho-b", txn, "resume", 20, &status), MCIM_OK);
  assert_int_equal(status, 202);
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s'"
           " AND state = 'delivered' AND attempts = 1",
           txn);
  assert_true(wait_until(30, relay_retried, q));
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM trace WHERE txn = '%s' AND from_name = 'ro'"
           " AND to_name = 'sho-b' AND cause = 'NOTICE_OVERTAKEN'",
           txn);
  assert_int_equal(db_int("ro", q), 1);
  /* sho-b as the suspend left it: in reserve, no second live subscription, not registered */
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'standby'"
                         " AND notice_seq = 21",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  assert_int_equal(db_int("ro", "SELECT COUNT(*) FROM drf WHERE device = 'mallory'"
                                " AND sho = 'sho-b' AND state = 'preloaded'"),
                   1);
  /* The RO keeps one answer per notice, its place in the order included: the same resume
   * again is answered as before, nothing more queued; another (19, as a TRE signs one when
   * the slot's record moved again in the txn) is relayed, and overtaken too. */
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s'", txn);
  assert_int_equal(relay_event("mallory", tokm, "sho-b", txn, "resume", 20, &status), MCIM_OK);
  assert_int_equal(status, 202);
  assert_int_equal(db_int("ro", q), 1);
  assert_int_equal(relay_event("mallory", tokm, "sho-b", txn, "resume", 19, &status), MCIM_OK);
  assert_int_equal(db_int("ro", q), 2);
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM trace WHERE txn = '%s' AND from_name = 'ro'"
           " AND to_name = 'sho-b' AND cause = 'NOTICE_OVERTAKEN'",
           txn);
  assert_true(wait_until(30, two_overtaken, q));
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'standby'"
                         " AND notice_seq = 21",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  /* the RO's record of the relayed resume: not the device's order, which the test reversed */
  db_exec("ro", "DELETE FROM drf_switches WHERE device = 'mallory' AND sho = 'sho-b'");
  free(tokm);
  free(tokm_b);
}

/* The undo of a switch as the RO orders it (relay.c: a device's switch notices of one txn go
 * out in the order the RO took them). mallory suspended sho-a (31, straight) and had the RO
 * relay sho-b's resume (32): sho-b active. The switch then failed before the TRE's activate,
 * and the device undid it through the RO: sho-b's suspend (33), then sho-a's resume (34),
 * while sho-b is down (SIGSTOP). The RO holds sho-a's resume (no attempt, last_cause
 * EARLIER_UNDELIVERED, waiting for the suspend's message) and sho-a stays in standby: before
 * the chains the device's straight resume made it active beside sho-b, and the RO's outbox
 * could deliver the relayed one first too. Once sho-b is back, the suspend lands first, then
 * the resume: one live subscription at every point. */
static bool sho_state_is(const char *sho, const char *imsi, const char *state)
{
  char q[200];
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = '%s'", imsi,
           state);
  return db_int(sho, q) == 1;
}

static bool sho_a_active(void *arg)
{
  (void)arg;
  return sho_state_is("sho-a", imsim_a, "active");
}

/* The RO's outbox delivered its message of `txn` to `peer` (within 30 s). */
static void wait_delivered(const char *peer, const char *txn)
{
  char q[256];
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = '%s' AND txn = '%s' AND state = 'delivered'",
           peer, txn);
  assert_true(wait_until(30, relay_retried, q));
}

static void test_undo_waits_for_suspend(void **state)
{
  (void)state;
  long status = 0;
  char q[512], *cert = NULL;
  json_t *ans = NULL;
  const char *txn = "0000000000000000000000000000f008";
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  assert_true(sho_state_is("sho-a", imsim_a, "active"));
  assert_true(sho_state_is("sho-b", imsim_b, "standby"));
  /* the switch: sho-a's suspend, straight */
  char *n = device_notice("mallory", "mcim-notify+jwt", "sho-a", txn,
                          json_pack("{s:s,s:s,s:s,s:i,s:s}", "event", "suspend", "slot", "sho-a",
                                    "imsi", imsim_a, "seq", 31, "leg", "from"),
                          &cert);
  assert_int_equal(post_keep("sho-a", "/v1/notifications", tokm,
                             json_pack("{s:s,s:s,s:s,s:s}", "txn", txn, "device", "mallory",
                                       "notice", n, "tre_cert", cert),
                             &ans, NULL),
                   MCIM_OK);
  json_decref(ans);
  ans = NULL;
  assert_true(sho_state_is("sho-a", imsim_a, "standby"));
  /* sho-a, which got that suspend straight and can mint mallory a token (or have a VNO it
   * runs mint one), brings it to the RO's relay to head mallory's chain and hold back what
   * follows (sho-b's resume) while it refuses it (reviews of 2026-12-06; the TRE signs the
   * suspend of the slot a switch leaves with leg "from"). The RO relays such a suspend, since
   * a device whose current SHO did not take it sends it there (preprovisioned.c), but
   * outside the chain: taken once (the second, with the VNO's token, gets the stored answer),
   * queued in no chain, and nothing of mallory's waits for it (below). Before 2026-12-08 it
   * was refused (NOTICE_NOT_RELAYED), which let the current SHO veto a switch. */
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE txn = '%s' AND peer = 'sho-a' AND chain IS NULL"
           " AND after_id IS NULL",
           txn);
  char *tokv = token(key_vno, "vno", "mallory", "restricted", imsim_a);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(post_keep("ro", "/v1/dpf/notices", i ? tokv : tokm,
                               json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device",
                                         "mallory", "to", "sho-a", "statement", n, "tre_cert",
                                         cert),
                               &ans, &status),
                     MCIM_OK);
    assert_int_equal(status, 202);
    assert_int_equal(db_int("ro", q), 1);
    json_decref(ans);
    ans = NULL;
  }
  /* and it records no switch (its undo's resume of sho-a is the record that counts) */
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM drf_switches WHERE device = 'mallory' AND txn = '%s'", txn);
  assert_int_equal(db_int("ro", q), 0);
  /* delivered: sho-a took it straight already, so its stored answer */
  wait_delivered("sho-a", txn);
  assert_true(sho_state_is("sho-a", imsim_a, "standby"));
  free(tokv);
  free(n);
  free(cert);
  /* sho-b's resume, relayed (in the chain, after nothing) and delivered */
  assert_int_equal(relay_imsi("mallory", tokm, "sho-b", imsim_b, txn, "resume", 32, &status),
                   MCIM_OK);
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s'"
           " AND chain IS NOT NULL AND after_id IS NULL",
           txn);
  assert_int_equal(db_int("ro", q), 1);
  wait_delivered("sho-b", txn);
  assert_true(sho_state_is("sho-b", imsim_b, "active"));
  /* the undo while sho-b is down: its suspend, then sho-a's resume, both taken by the RO */
  paused = role_pid("sho-b");
  assert_int_equal(kill(paused, SIGSTOP), 0);
  assert_int_equal(relay_imsi("mallory", tokm, "sho-b", imsim_b, txn, "suspend", 33, &status),
                   MCIM_OK);
  assert_int_equal(status, 202);
  assert_int_equal(relay_imsi("mallory", tokm, "sho-a", imsim_a, txn, "resume", 34, &status),
                   MCIM_OK);
  assert_int_equal(status, 202);
  /* held: never tried, waiting for the suspend's message, which was tried and failed */
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox r JOIN outbox s ON r.after_id = s.id"
           " WHERE r.peer = 'sho-a' AND r.txn = '%s' AND r.state = 'pending' AND r.attempts = 0"
           " AND r.last_cause = 'EARLIER_UNDELIVERED' AND s.peer = 'sho-b' AND s.txn = '%s'"
           " AND s.state = 'pending' AND s.attempts >= 1",
           txn, txn);
  assert_true(wait_until(60, relay_retried, q));
  /* and still held after the suspend's next attempt failed too */
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s'"
           " AND state = 'pending' AND attempts >= 2",
           txn);
  assert_true(wait_until(60, relay_retried, q));
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-a' AND txn = '%s' AND attempts = 0"
           " AND state = 'pending'",
           txn);
  assert_int_equal(db_int("ro", q), 1);
  assert_true(sho_state_is("sho-a", imsim_a, "standby"));
  resume_paused();
  /* sho-b back: the suspend lands, then the resume */
  assert_true(wait_until(60, sho_a_active, NULL));
  assert_true(sho_state_is("sho-b", imsim_b, "standby"));
  /* the RO records a delivery (its outcome and trace row, one transaction) after sho-a's
   * answer, so after sho-a went active: read its trace once all three are recorded (read at
   * once, the row of the resume could be missing: a flake of stop 33's check under load) */
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) = 4 FROM outbox WHERE txn = '%s' AND state = 'delivered'", txn);
  assert_true(wait_until(30, relay_retried, q));
  /* the RO's trace: its last delivery to sho-b (the suspend) before the one to sho-a */
  snprintf(q, sizeof(q),
           "SELECT (SELECT MAX(time_us) FROM trace WHERE txn = '%s' AND from_name = 'ro'"
           " AND to_name = 'sho-b' AND cause IS NULL) < (SELECT MIN(time_us) FROM trace"
           " WHERE txn = '%s' AND from_name = 'ro' AND to_name = 'sho-a' AND cause IS NULL"
           " AND msg NOT LIKE '%%not taken there%%')",
           txn, txn);
  if (db_int("ro", q) != 1) {
    snprintf(q, sizeof(q),
             "SELECT group_concat(time_us || ' ' || to_name || ' ' || COALESCE(cause, '-') ||"
             " ' ' || msg, ' | ') FROM trace WHERE txn = '%s' AND from_name = 'ro'",
             txn);
    fail_msg("the RO's deliveries, in the order of their trace: %s", lab_db_text(lab, "ro", q));
  }
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE txn = '%s' AND state = 'delivered'", txn);
  assert_int_equal(db_int("ro", q), 4);
  /* the RO's record of the switch (undone) and of the resume: as the undo left them */
  db_exec("ro", "DELETE FROM drf_switches WHERE device = 'mallory'");
  free(tokm);
}

/* A deferred discard notice to an SHO that released its entry before the notice came (its own
 * termination; or a hostile SHO pinning the device's notices): the RO relays it (202), since
 * an entry in any state links that SHO to the device, and sho-b takes it (its subscription
 * ends on the receipt). Held back as "not yet" (REGISTRATION_PENDING, before 2026-12-06), the
 * notice waited in the TRE for its 30 days. A switch notice to that entry stays "not yet"
 * (test_registration_pending). Last: it ends mallory's MCIM at sho-b. */
static bool relayed_to_sho_b(void *arg)
{
  return db_int("ro", (const char *)arg) == 0;
}

static void test_discard_to_released_entry(void **state)
{
  (void)state;
  long status = 0;
  char q[256], *cert = NULL;
  const char *txn = "0000000000000000000000000000f006";
  char *tokm = token(key_sho_a, "sho-a", "mallory", "full", imsim_a);
  db_exec("ro", "UPDATE drf SET state = 'released' WHERE device = 'mallory' AND sho = 'sho-b'");
  char *jws = device_notice("mallory", "mcim-discard+jwt", "sho-b", txn,
                            json_pack("{s:s,s:s}", "slot", "sho-b", "imsi", imsim_b), &cert);
  json_t *ans = NULL;
  assert_int_equal(post_keep("ro", "/v1/dpf/notices", tokm,
                             json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", "mallory",
                                       "to", "sho-b", "statement", jws, "tre_cert", cert),
                             &ans, &status),
                   MCIM_OK);
  assert_int_equal(status, 202);
  assert_string_equal(json_string_value(json_object_get(ans, "state")), "relayed");
  json_decref(ans);
  snprintf(q, sizeof(q),
           "SELECT COUNT(*) FROM outbox WHERE peer = 'sho-b' AND txn = '%s' AND state <> 'delivered'",
           txn);
  assert_true(wait_until(30, relayed_to_sho_b, q));
  snprintf(q, sizeof(q), "SELECT COUNT(*) FROM auc WHERE imsi = '%s' AND state = 'terminated'",
           imsim_b);
  assert_int_equal(db_int("sho-b", q), 1);
  free(jws);
  free(cert);
  free(tokm);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forged_notifications),
      cmocka_unit_test(test_registration_pending),
      cmocka_unit_test(test_registry_not_probed),
      cmocka_unit_test(test_report_pending),
      cmocka_unit_test(test_notices_in_order),
      cmocka_unit_test(test_undo_waits_for_suspend),
      cmocka_unit_test(test_discard_to_released_entry),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
