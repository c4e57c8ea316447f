/* The network roles' certificates the agent keeps (src/device/net.c: dev_peer_cert_keep,
 * dev_peer_key_kept, dev_peer_verify). A kept certificate is used without a request while it
 * verifies against the pinned operators' CA with CN = the peer; one that does not (another
 * CN, another CA) is not used and is forgotten; a statement that does not verify under the
 * kept key makes the agent fetch the certificate again (the peer's key may have changed),
 * while a statement refused for its claims does not. The network is unreachable (port 1)
 * throughout: a fetch shows as MCIM_PEER_UNREACHABLE, and a verified statement proves that
 * no fetch was needed. The key of a certificate that verified is kept for its exact bytes,
 * CA and name (dev_peer_key_from_pem_at): any other certificate, name or time is refused as
 * before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "unit/test_device_fixture.h"

struct ctx {
  struct fx fx;
  struct mcim_device *d;
  struct mcim_http_lite *cli;
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  if (!c || fx_setup(&c->fx, "") != 0 || mcim_device_open(c->fx.dir, &c->d) != MCIM_OK ||
      dev_client_new(c->d, &c->cli) != MCIM_OK)
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  mcim_http_lite_free(c->cli);
  mcim_device_free(c->d);
  fx_teardown(&c->fx);
  free(c);
  return 0;
}

/* A role's statement key and its certificate (PEM, free()) by `ca`, CN = `name`, valid in
 * [not_before, not_after) (0, 0: from now, for 30 days). */
static mcim_jose_key_t *role_key_valid(mcim_pki_ca_t *ca, const char *name, int64_t not_before,
                                       int64_t not_after, char **pem)
{
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  mcim_jose_key_t *key = NULL;
  assert_int_equal(mcim_pki_key_generate(&pk), MCIM_OK);
  mcim_cert_request_t req = {.name = name,
                             .usage = MCIM_CERT_TLS,
                             .key = pk,
                             .not_before = not_before,
                             .not_after = not_after,
                             .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &cert), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(cert, pem), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_pkey(pk, &key), MCIM_OK);
  assert_int_equal(mcim_jose_key_set_kid(key, name), MCIM_OK);
  X509_free(cert);
  EVP_PKEY_free(pk);
  return key;
}

static mcim_jose_key_t *role_key(mcim_pki_ca_t *ca, const char *name, char **pem)
{
  return role_key_valid(ca, name, 0, 0, pem);
}

static char *statement(const mcim_jose_key_t *key, const char *iss, const char *typ)
{
  int64_t now = mcim_now();
  char *jws = NULL;
  mcim_claims_t cl = {.iss = iss,
                      .sub = FX_DEVICE,
                      .aud = FX_DEVICE,
                      .typ = typ,
                      .txn = FX_TXN,
                      .iat = now,
                      .exp = now + 300};
  assert_int_equal(mcim_jws_sign(key, &cl, &jws), MCIM_OK);
  return jws;
}

static const mcim_jws_expect_t expect = {.iss = "sho-a",
                                         .aud = FX_DEVICE,
                                         .sub = FX_DEVICE,
                                         .typ = "mcim-discard-ack+jwt",
                                         .txn = FX_TXN,
                                         .skew = 30};

static bool kept(struct ctx *c, const char *peer)
{
  return json_object_get(c->d->peer_certs, peer) != NULL;
}

/* Kept and valid: the key without a request, the statement verified. */
static void kept_used_without_request(void **state)
{
  struct ctx *c = *state;
  char *pem = NULL;
  mcim_jose_key_t *key = role_key(c->fx.ops, "sho-a", &pem), *got = NULL;
  bool from_kept = false;
  /* nothing kept: a fetch, which cannot reach the network */
  assert_int_equal(dev_peer_key_kept(c->d, c->cli, "sho-a", &got, &from_kept),
                   MCIM_PEER_UNREACHABLE);
  assert_false(from_kept);
  dev_peer_cert_keep(c->d, "sho-a", pem);
  assert_int_equal(dev_peer_key_kept(c->d, c->cli, "sho-a", &got, &from_kept), MCIM_OK);
  assert_true(from_kept);
  mcim_jose_key_free(got);
  char *jws = statement(key, "sho-a", "mcim-discard-ack+jwt");
  mcim_statement_t *st = NULL;
  mcim_cause_t key_rc = MCIM_INTERNAL;
  assert_int_equal(dev_peer_verify(c->d, c->cli, "sho-a", jws, &expect, &st, &key_rc), MCIM_OK);
  assert_int_equal(key_rc, MCIM_OK);
  assert_string_equal(st->claims.iss, "sho-a");
  mcim_statement_free(st);
  free(jws);
  free(pem);
  mcim_jose_key_free(key);
}

/* Kept under a name it is not for, or from another CA: not used (a fetch), and forgotten. */
static void kept_not_verifying_not_used(void **state)
{
  struct ctx *c = *state;
  mcim_pki_ca_t *other = NULL;
  char *pem_b = NULL, *pem_x = NULL;
  mcim_jose_key_t *key_b = role_key(c->fx.ops, "sho-b", &pem_b), *got = NULL;
  assert_int_equal(mcim_pki_ca_create("another CA", 30, &other), MCIM_OK);
  mcim_jose_key_t *key_x = role_key(other, "sho-a", &pem_x);
  bool from_kept = true;

  dev_peer_cert_keep(c->d, "sho-a", pem_b); /* CN sho-b */
  assert_int_equal(dev_peer_key_kept(c->d, c->cli, "sho-a", &got, &from_kept),
                   MCIM_PEER_UNREACHABLE);
  assert_false(from_kept);
  assert_null(got);
  assert_false(kept(c, "sho-a"));

  dev_peer_cert_keep(c->d, "sho-a", pem_x); /* CN sho-a, not by the operators' CA */
  from_kept = true;
  assert_int_equal(dev_peer_key_kept(c->d, c->cli, "sho-a", &got, &from_kept),
                   MCIM_PEER_UNREACHABLE);
  assert_false(from_kept);
  assert_false(kept(c, "sho-a"));

  /* nor is a statement of that CA's key accepted through it */
  dev_peer_cert_keep(c->d, "sho-a", pem_x);
  char *jws = statement(key_x, "sho-a", "mcim-discard-ack+jwt");
  mcim_statement_t *st = NULL;
  mcim_cause_t key_rc = MCIM_OK;
  assert_int_equal(dev_peer_verify(c->d, c->cli, "sho-a", jws, &expect, &st, &key_rc),
                   MCIM_PEER_UNREACHABLE);
  assert_int_equal(key_rc, MCIM_PEER_UNREACHABLE);
  assert_null(st);
  free(jws);
  mcim_pki_ca_free(other);
  free(pem_b);
  free(pem_x);
  mcim_jose_key_free(key_b);
  mcim_jose_key_free(key_x);
}

/* A statement signed by another key than the kept certificate's (the peer's new key, or a
 * forgery): the certificate is fetched again, never the statement taken; one refused for its
 * claims under the kept key is refused with its cause and the certificate stays kept. */
static void other_key_fetches_again(void **state)
{
  struct ctx *c = *state;
  char *pem_old = NULL, *pem_new = NULL;
  mcim_jose_key_t *old_key = role_key(c->fx.ops, "sho-a", &pem_old);
  mcim_jose_key_t *new_key = role_key(c->fx.ops, "sho-a", &pem_new);
  mcim_statement_t *st = NULL;
  mcim_cause_t key_rc = MCIM_OK;

  dev_peer_cert_keep(c->d, "sho-a", pem_old);
  char *wrong_typ = statement(old_key, "sho-a", "mcim-discovery+jwt");
  assert_int_equal(dev_peer_verify(c->d, c->cli, "sho-a", wrong_typ, &expect, &st, &key_rc),
                   MCIM_CLAIM_MISMATCH);
  assert_int_equal(key_rc, MCIM_OK);
  assert_true(kept(c, "sho-a"));
  mcim_statement_free(st);
  st = NULL;

  char *jws = statement(new_key, "sho-a", "mcim-discard-ack+jwt");
  assert_int_equal(dev_peer_verify(c->d, c->cli, "sho-a", jws, &expect, &st, &key_rc),
                   MCIM_PEER_UNREACHABLE);
  assert_int_equal(key_rc, MCIM_PEER_UNREACHABLE);
  assert_null(st);
  assert_false(kept(c, "sho-a"));

  /* the new certificate kept (what the fetch would have done): verified without a request */
  dev_peer_cert_keep(c->d, "sho-a", pem_new);
  assert_int_equal(dev_peer_verify(c->d, c->cli, "sho-a", jws, &expect, &st, &key_rc), MCIM_OK);
  assert_int_equal(key_rc, MCIM_OK);
  mcim_statement_free(st);
  free(jws);
  free(wrong_typ);
  free(pem_old);
  free(pem_new);
  mcim_jose_key_free(old_key);
  mcim_jose_key_free(new_key);
}

/* The key of a certificate that verified is kept (the same key object comes back, no parse)
 * for that PEM, CA and name, inside both validities; everything else is checked in full and
 * refused with its cause: the same PEM for another name, or at a time it is expired or not
 * yet valid; a certificate of another key by another CA; an expired one; and another
 * certificate for the same name gives its own key, not the kept one. */
static void verified_key_kept_others_refused(void **state)
{
  struct ctx *c = *state;
  mcim_pki_ca_t *other = NULL;
  char *pem = NULL, *pem_x = NULL, *pem_old = NULL, *pem_new = NULL;
  int64_t now = mcim_now();
  mcim_jose_key_t *got = NULL, *again = NULL;
  mcim_jose_key_t *key = role_key(c->fx.ops, "sho-a", &pem);
  assert_int_equal(mcim_pki_ca_create("another CA", 30, &other), MCIM_OK);
  mcim_jose_key_t *key_x = role_key(other, "sho-a", &pem_x);
  mcim_jose_key_t *key_old = role_key_valid(c->fx.ops, "sho-a", now - 7200, now - 3600, &pem_old);
  mcim_jose_key_t *key_new = role_key(c->fx.ops, "sho-a", &pem_new);

  dev_peer_keys_clear();
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-a", now, &got), MCIM_OK);
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-a", now + 60, &again), MCIM_OK);
  assert_ptr_equal(again, got); /* kept */
  mcim_jose_key_free(again);
  again = NULL;
  char *jws = statement(key, "sho-a", "mcim-discard-ack+jwt");
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), got, &expect, NULL), MCIM_OK);
  free(jws);

  /* the kept bytes, for another name or outside their validity */
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-b", now, &again),
                   MCIM_CERT_INVALID);
  assert_null(again);
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-a", now + 31 * 86400, &again),
                   MCIM_CERT_EXPIRED);
  assert_null(again);
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-a", now - 3600, &again),
                   MCIM_CERT_INVALID);
  assert_null(again);
  /* other certificates for the same name: another key by another CA, an expired one */
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem_x, "sho-a", now, &again),
                   MCIM_CERT_INVALID);
  assert_null(again);
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem_old, "sho-a", now, &again),
                   MCIM_CERT_EXPIRED);
  assert_null(again);
  /* another key certified for the name: that key, and the statements of the first refused */
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem_new, "sho-a", now, &again), MCIM_OK);
  assert_ptr_not_equal(again, got);
  jws = statement(key, "sho-a", "mcim-discard-ack+jwt");
  assert_int_equal(mcim_jws_verify(jws, strlen(jws), again, &expect, NULL),
                   MCIM_JWS_BAD_SIGNATURE);
  free(jws);
  /* and the kept one still answers for its own bytes */
  mcim_jose_key_free(again);
  assert_int_equal(dev_peer_key_from_pem_at(c->d, pem, "sho-a", now, &again), MCIM_OK);
  assert_ptr_equal(again, got);

  mcim_jose_key_free(again);
  mcim_jose_key_free(got);
  dev_peer_keys_clear();
  mcim_pki_ca_free(other);
  free(pem);
  free(pem_x);
  free(pem_old);
  free(pem_new);
  mcim_jose_key_free(key);
  mcim_jose_key_free(key_x);
  mcim_jose_key_free(key_old);
  mcim_jose_key_free(key_new);
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(kept_used_without_request, setup, teardown),
      cmocka_unit_test_setup_teardown(kept_not_verifying_not_used, setup, teardown),
      cmocka_unit_test_setup_teardown(other_key_fetches_again, setup, teardown),
      cmocka_unit_test_setup_teardown(verified_key_kept_others_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
