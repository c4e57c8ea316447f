/* The agent's queued notifications (src/device/notify.c: dev_notify_pending): a discard
 * notice the RO refuses with SHO_NOT_LINKED (no DRF entry links the device to that SHO any
 * more: it released it) leaves the TRE's queue, as one the RO accepted does; one refused with
 * REGISTRATION_PENDING (the SHO's entry on its way) or FORBIDDEN (the token's network named
 * another device: a hostile network could mint that) stays for the next full attach. A
 * stand-in RO (HTTPS, certificate of the operators' CA with CN "ro") answers the relay
 * (POST /v1/dpf/notices) as told and counts the calls. */
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
  struct mcim_http_lite *cli;
  mcim_tre_t *tre; /* a second handle on the device's TRE (the state is shared) */
  struct mcim_http_server *ro;
  mcim_pki_ca_t *m2mes; /* the M2MES CA this test's TRE pins (it certifies the TRE's keys) */
};

/* What the stand-in RO answers, and how often it was asked. */
static mcim_cause_t ro_answer;
static int ro_calls;

static void h_notices(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  __atomic_add_fetch(&ro_calls, 1, __ATOMIC_SEQ_CST);
  if (ro_answer == MCIM_OK)
    mcim_http_reply_json(resp, 200, json_pack("{s:b}", "accepted", 1));
  else
    mcim_http_reply_problem(resp, ro_answer, 0, "notice refused");
}

static const struct mcim_http_route routes[] = {{"POST", "/v1/dpf/notices", h_notices, 0}};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  char crt[256], key[256], cfg[1024];
  char *ops_pem = NULL, *m2mes_pem = NULL, *owner_jwk = NULL;
  if (!c || fx_setup(&c->fx, "") != 0)
    return -1;
  /* the fixture's TRE again, pinning an M2MES CA this test keeps */
  fx_rm_rf(c->fx.tre);
  if (mcim_pki_ca_create("test M2MES CA", 30, &c->m2mes) != MCIM_OK ||
      !(ops_pem = fx_ca_pem(c->fx.ops)) || !(m2mes_pem = fx_ca_pem(c->m2mes)) ||
      mcim_jose_key_public_jwk(c->fx.owner, &owner_jwk) != MCIM_OK ||
      mcim_tre_soft_create(c->fx.tre, FX_DEVICE, FX_MODEL, owner_jwk, ops_pem, m2mes_pem) !=
          MCIM_OK ||
      mcim_tre_soft_open(c->fx.tre, &c->tre) != MCIM_OK ||
      fx_install_pcid(c->tre, "001010000000001") != MCIM_OK)
    return -1;
  free(ops_pem);
  free(m2mes_pem);
  free(owner_jwk);
  /* the stand-in RO's TLS identity, by the operators' CA the device pins */
  mcim_cert_request_t req = {.name = "ro", .usage = MCIM_CERT_TLS, .days = 30};
  snprintf(crt, sizeof(crt), "%s/ro.crt", c->fx.dir);
  snprintf(key, sizeof(key), "%s/ro.key", c->fx.dir);
  if (mcim_pki_key_generate(&pk) != MCIM_OK)
    return -1;
  req.key = pk;
  if (mcim_pki_issue(c->fx.ops, &req, &cert) != MCIM_OK ||
      mcim_pki_cert_write(crt, cert) != MCIM_OK || mcim_pki_key_write(key, pk) != MCIM_OK)
    return -1;
  X509_free(cert);
  EVP_PKEY_free(pk);
  struct mcim_http_server_cfg sc = {.role = "ro", .cert_file = crt, .key_file = key,
                                    .routes = routes, .nroutes = 1};
  if (mcim_http_server_start(&sc, &c->ro) != MCIM_OK)
    return -1;
  snprintf(cfg, sizeof(cfg),
           "{\"device\": \"" FX_DEVICE "\", \"operators_ca\": \"operators-ca.pem\","
           " \"networks\": {\"vno\": \"https://127.0.0.1:1\", \"ro\": \"https://127.0.0.1:%u\","
           " \"pva\": \"https://127.0.0.1:1\", \"sho-a\": \"https://127.0.0.1:1\","
           " \"sho-b\": \"https://127.0.0.1:1\", \"m2mes\": \"https://127.0.0.1:1\"},"
           " \"poll_ms\": 20, \"request_timeout_ms\": 2000}",
           mcim_http_server_port(c->ro));
  fx_write(c->fx.dir, "agent.json", cfg);
  ro_calls = 0;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  mcim_http_lite_free(c->cli);
  if (!c->d)
    mcim_tre_close(c->tre);
  mcim_device_free(c->d);
  mcim_http_server_free(c->ro);
  mcim_pki_ca_free(c->m2mes);
  fx_teardown(&c->fx);
  free(c);
  return 0;
}

static size_t queued(struct ctx *c)
{
  json_t *view = NULL;
  assert_int_equal(c->tre->ops->status(c->tre->ctx, &view), MCIM_OK);
  size_t n = json_array_size(json_object_get(view, "pending"));
  json_decref(view);
  return n;
}

/* The TRE's certificate of `which` by `ca` (PEM, free()): the attestation one goes with every
 * relayed notice. */
static char *tre_cert(struct ctx *c, mcim_pki_ca_t *ca, enum mcim_tre_cert which,
                      mcim_cert_usage_t usage)
{
  char *jwk = NULL, *pem = NULL;
  mcim_jose_key_t *key = NULL;
  EVP_PKEY *pub = NULL;
  X509 *x = NULL;
  assert_int_equal(mcim_tre_soft_public_jwk(c->tre, which, &jwk), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(jwk, strlen(jwk), &key), MCIM_OK);
  assert_int_equal(mcim_jose_key_public_pkey(key, &pub), MCIM_OK);
  mcim_cert_request_t req = {.name = FX_DEVICE, .usage = usage, .key = pub, .days = 30};
  assert_int_equal(mcim_pki_issue(ca, &req, &x), MCIM_OK);
  assert_int_equal(mcim_pki_cert_to_pem(x, &pem), MCIM_OK);
  X509_free(x);
  EVP_PKEY_free(pub);
  mcim_jose_key_free(key);
  free(jwk);
  return pem;
}

/* sho-a's MCIM discarded by procedure TXN_B: its notice queued in the TRE; then the agent
 * starts (the discard rotated the storage key, which a handle opened before does not have) */
static void queue_notice(struct ctx *c)
{
  assert_int_equal(fx_provision(&c->fx, c->tre, "sho-a", "001020000000007", TXN_A, FX_ACTIVE),
                   MCIM_OK);
  assert_int_equal(c->tre->ops->discard(c->tre->ctx, "sho-a", TXN_B), MCIM_OK);
  assert_int_equal(queued(c), 1);
  char *att = tre_cert(c, c->m2mes, MCIM_TRE_CERT_ATTESTATION, MCIM_CERT_TRE_ATTESTATION);
  char *ka = tre_cert(c, c->m2mes, MCIM_TRE_CERT_KA, MCIM_CERT_TRE_KEY_AGREEMENT);
  assert_int_equal(mcim_tre_soft_set_certs(c->tre, att, ka), MCIM_OK);
  free(att);
  free(ka);
  mcim_tre_close(c->tre);
  c->tre = NULL;
  assert_int_equal(mcim_device_open(c->fx.dir, &c->d), MCIM_OK);
  assert_int_equal(dev_client_new(c->d, &c->cli), MCIM_OK);
  c->tre = c->d->tre; /* the agent's own handle from here on */
}

/* SHO_NOT_LINKED: final. The notice leaves the queue; the next full attach posts nothing.
 * Before: kept, signed and posted again at every full attach, a place of the 32 held for
 * good. */
static void test_not_linked_is_final(void **state)
{
  struct ctx *c = *state;
  bool transient = false;
  queue_notice(c);
  ro_answer = MCIM_SHO_NOT_LINKED;
  assert_int_equal(dev_notify_pending(c->d, c->cli, "vno", "token", &transient), 0);
  assert_int_equal(ro_calls, 1);
  assert_false(transient);
  assert_int_equal(queued(c), 0);
  assert_int_equal(dev_notify_pending(c->d, c->cli, "vno", "token", &transient), 0);
  assert_int_equal(ro_calls, 1);
}

/* A refusal that is not final: the notice stays for the next full attach, which posts it
 * again, and the RO's acceptance then removes it. Whether the first call found the refusal
 * transient. */
static bool stays_until_relayed(struct ctx *c, mcim_cause_t refusal)
{
  bool transient = false, later = false;
  queue_notice(c);
  ro_answer = refusal;
  assert_int_equal(dev_notify_pending(c->d, c->cli, "vno", "token", &transient), 0);
  assert_int_equal(ro_calls, 1);
  assert_int_equal(queued(c), 1);
  ro_answer = MCIM_OK;
  assert_int_equal(dev_notify_pending(c->d, c->cli, "vno", "token", &later), 1);
  assert_int_equal(ro_calls, 2);
  assert_int_equal(queued(c), 0);
  return transient;
}

/* FORBIDDEN (the RO's answer to a token whose network named another device): the notice
 * stays, and goes with the next full attach's token. Before 2026-12-07 it was dropped for
 * good: a hostile network could make the device lose the old SHO's discard notice. */
static void test_forbidden_stays(void **state)
{
  assert_false(stays_until_relayed(*state, MCIM_FORBIDDEN));
}

/* REGISTRATION_PENDING: try later. */
static void test_registration_pending_stays(void **state)
{
  stays_until_relayed(*state, MCIM_REGISTRATION_PENDING);
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_not_linked_is_final, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forbidden_stays, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registration_pending_stays, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
