/* The agent's control API over its Unix socket (src/device/control.c), with the real agent
 * (measured boot into a software TRE, store, worker) and a network that does not answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/http.h"
#include "mcim/log.h"
#include "unit/test_device_fixture.h"

struct ctx {
  struct fx fx;
  struct mcim_device *d;
  struct mcim_http_client *cli;
};

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  if (!c || fx_setup(&c->fx, ", \"procedure_timeout\": 60") != 0 ||
      mcim_device_start(c->fx.dir, &c->d) != MCIM_OK)
    return -1;
  struct mcim_http_client_cfg cc = {.unix_path = c->fx.sock, .timeout_ms = 5000};
  if (mcim_http_client_new(&cc, &c->cli) != MCIM_OK)
    return -1;
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  mcim_http_client_free(c->cli);
  mcim_device_free(c->d);
  fx_teardown(&c->fx);
  free(c);
  return 0;
}

static mcim_cause_t call(struct ctx *c, const char *method, const char *path, json_t *body,
                         struct mcim_http_result *res)
{
  char url[256];
  snprintf(url, sizeof(url), "http://localhost%s", path);
  mcim_cause_t rc = mcim_http_request(c->cli, method, url, body, NULL, res);
  json_decref(body);
  return rc;
}

static void socket_is_private(void **state)
{
  struct ctx *c = *state;
  struct stat sb;
  assert_int_equal(stat(c->fx.sock, &sb), 0);
  assert_true(S_ISSOCK(sb.st_mode));
  assert_int_equal(sb.st_mode & 077, 0);
}

static void status_shows_tre_and_no_secret(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  assert_int_equal(call(c, "GET", "/v1/status", NULL, &res), MCIM_OK);
  assert_int_equal(res.status, 200);
  assert_string_equal(json_string_value(json_object_get(res.json, "device")), FX_DEVICE);
  assert_string_equal(json_string_value(json_object_get(json_object_get(res.json, "pcid"), "id")),
                      "001010000000001");
  assert_true(json_is_array(json_object_get(res.json, "slots")));
  assert_true(json_is_null(json_object_get(res.json, "procedure")));
  assert_true(json_is_array(json_object_get(res.json, "access")));
  /* measured boot recorded the three components */
  assert_int_equal(json_integer_value(json_object_get(res.json, "measurements")), 3);
  char *text = json_dumps(res.json, JSON_COMPACT);
  assert_null(strstr(text, "000102030405060708090a0b0c0d0e0f")); /* the PCID's K */
  assert_null(strstr(text, "PRIVATE"));
  free(text);
  mcim_http_result_clear(&res);
}

static void unknown_route_is_problem(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  assert_int_equal(call(c, "GET", "/v1/nothing/here", NULL, &res), MCIM_ROUTE_NOT_FOUND);
  assert_int_equal(res.status, 404);
  assert_string_equal(json_string_value(json_object_get(res.json, "cause")), "ROUTE_NOT_FOUND");
  mcim_http_result_clear(&res);
  assert_int_equal(call(c, "DELETE", "/v1/status", NULL, &res), MCIM_METHOD_NOT_ALLOWED);
  mcim_http_result_clear(&res);
  assert_int_equal(call(c, "GET", "/v1/procedures/" FX_TXN, NULL, &res), MCIM_NOT_FOUND);
  assert_int_equal(res.status, 404);
  mcim_http_result_clear(&res);
}

static void bad_instruction_not_owner(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  char *jws = fx_instruction(c->fx.other, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN,
                             60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_NOT_OWNER);
  assert_int_equal(res.status, 403);
  assert_string_equal(json_string_value(json_object_get(res.json, "cause")), "NOT_OWNER");
  assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 2);
  mcim_http_result_clear(&res);
  free(jws);
  /* garbage bodies */
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:i}", "instruction", 5), &res),
                   MCIM_WRONG_TYPE);
  mcim_http_result_clear(&res);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s,s:s}", "instruction", "x",
                                                               "extra", "y"),
                        &res),
                   MCIM_UNKNOWN_FIELD);
  mcim_http_result_clear(&res);
  assert_int_equal(call(c, "POST", "/v1/procedures", NULL, &res), MCIM_BAD_JSON);
  mcim_http_result_clear(&res);
  /* nothing started */
  assert_int_equal(call(c, "GET", "/v1/status", NULL, &res), MCIM_OK);
  assert_true(json_is_null(json_object_get(res.json, "procedure")));
  mcim_http_result_clear(&res);
}

static void attach_checks_and_causes(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  /* not an access network */
  assert_int_equal(call(c, "POST", "/v1/attach", json_pack("{s:s}", "network", "ro"), &res),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&res);
  /* the VNO does not answer: the cause says so, with the step */
  assert_int_equal(call(c, "POST", "/v1/attach", json_pack("{s:s}", "network", "vno"), &res),
                   MCIM_PEER_UNREACHABLE);
  assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 4);
  assert_string_equal(json_string_value(json_object_get(res.json, "network")), "vno");
  mcim_http_result_clear(&res);
  /* no MCIM of that SHO in the TRE: refused before any network call */
  assert_int_equal(call(c, "POST", "/v1/attach", json_pack("{s:s}", "network", "sho-a"), &res),
                   MCIM_NOT_FOUND);
  mcim_http_result_clear(&res);
}

static void procedure_lifecycle(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  char *jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN,
                             60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_OK);
  assert_int_equal(res.status, 202);
  assert_string_equal(json_string_value(json_object_get(res.json, "txn")), FX_TXN);
  mcim_http_result_clear(&res);
  /* the same instruction again: idempotent, the same procedure (no REPLAY, no BUSY) */
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_OK);
  assert_int_equal(res.status, 202);
  assert_string_equal(json_string_value(json_object_get(res.json, "txn")), FX_TXN);
  assert_string_equal(json_string_value(json_object_get(res.json, "state")), "running");
  mcim_http_result_clear(&res);
  free(jws);
  /* another instruction of the owner for the same txn and claims: the same answer */
  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN, 60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_OK);
  assert_int_equal(res.status, 202);
  mcim_http_result_clear(&res);
  free(jws);
  /* ... but not with other claims, and never for someone else's signature */
  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-b", FX_TXN, 60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_CONFLICT);
  mcim_http_result_clear(&res);
  free(jws);
  jws = fx_instruction(c->fx.other, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a", FX_TXN, 60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_NOT_OWNER);
  mcim_http_result_clear(&res);
  free(jws);
  /* another one while it runs: busy, and its jti is not spent */
  jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-b", FX_TXN2, 60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_DEVICE_BUSY);
  assert_string_equal(json_string_value(json_object_get(res.json, "cause")), "DEVICE_BUSY");
  mcim_http_result_clear(&res);
  free(jws);

  assert_int_equal(call(c, "GET", "/v1/procedures/" FX_TXN, NULL, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "kind")), "initial");
  assert_string_equal(json_string_value(json_object_get(res.json, "state")), "running");
  assert_true(json_is_integer(json_object_get(res.json, "step")));
  mcim_http_result_clear(&res);

  assert_int_equal(call(c, "GET", "/v1/status", NULL, &res), MCIM_OK);
  json_t *p = json_object_get(res.json, "procedure");
  assert_string_equal(json_string_value(json_object_get(p, "txn")), FX_TXN);
  mcim_http_result_clear(&res);

  /* the agent's trace: the owner's instruction, then the attach attempt (step 4) */
  bool attach_seen = false;
  for (int i = 0; i < 200 && !attach_seen; i++) {
    assert_int_equal(call(c, "GET", "/v1/admin/trace/" FX_TXN, NULL, &res), MCIM_OK);
    json_t *events = json_object_get(res.json, "events");
    assert_string_equal(json_string_value(json_object_get(res.json, "role")), FX_DEVICE);
    assert_string_equal(json_string_value(json_object_get(json_array_get(events, 0), "msg")),
                        "instruction: re-provision");
    size_t k;
    json_t *ev;
    json_array_foreach(events, k, ev) {
      if (json_integer_value(json_object_get(ev, "n")) == 4)
        attach_seen = true;
    }
    mcim_http_result_clear(&res);
    if (!attach_seen)
      usleep(20000);
  }
  assert_true(attach_seen);
}

static mcim_cause_t post_instruction(struct ctx *c, const char *jws, struct mcim_http_result *res)
{
  return call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), res);
}

/* Wait until procedure `txn` has a result; its state. */
static void wait_finished(struct ctx *c, const char *txn, char state[16])
{
  char path[96];
  snprintf(path, sizeof(path), "/v1/procedures/%s", txn);
  state[0] = '\0';
  for (int i = 0; i < 500; i++) {
    struct mcim_http_result res;
    assert_int_equal(call(c, "GET", path, NULL, &res), MCIM_OK);
    const char *st = json_string_value(json_object_get(res.json, "state"));
    snprintf(state, 16, "%s", st ? st : "");
    mcim_http_result_clear(&res);
    if (strcmp(state, "running") != 0)
      return;
    usleep(20000);
  }
}

/* A refused instruction keeps its jti: once the reason is gone, the very same instruction
 * is accepted (it would be REPLAY had the TRE recorded it). */
static void refused_instruction_keeps_its_jti(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  char st[16];
  char *busy = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-b",
                              FX_TXN2, 60);
  char *first = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "initial", NULL, "sho-a",
                               FX_TXN, 60);
  assert_int_equal(post_instruction(c, first, &res), MCIM_OK);
  mcim_http_result_clear(&res);
  assert_int_equal(post_instruction(c, busy, &res), MCIM_DEVICE_BUSY);
  mcim_http_result_clear(&res);
  /* the network does not answer: the first one times out (procedure_timeout 1 s) */
  wait_finished(c, FX_TXN, st);
  assert_string_equal(st, "failed");
  assert_int_equal(post_instruction(c, busy, &res), MCIM_OK);
  assert_int_equal(res.status, 202);
  mcim_http_result_clear(&res);
  /* and once recorded, it is idempotent, not a REPLAY */
  assert_int_equal(post_instruction(c, busy, &res), MCIM_OK);
  assert_int_equal(res.status, 202);
  mcim_http_result_clear(&res);
  /* a finished procedure's instruction again: 202 with its final state */
  assert_int_equal(post_instruction(c, first, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "state")), "failed");
  mcim_http_result_clear(&res);
  free(first);
  free(busy);
}

/* Procedures the device's state does not allow are refused before the TRE sees the
 * instruction (WRONG_STATE), and the same instruction works once the state is right. */
static void change_needs_the_right_slots(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  mcim_tre_t *tre = NULL;
  char *change = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", "old-sho", "sho-b",
                                FX_TXN2, 60);
  char *sw = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "switch", NULL, "sho-b",
                            "00000000000000000000000000000003", 60);
  char *pre_a = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "preload", NULL, "sho-a",
                               "00000000000000000000000000000004", 60);
  char *bad = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "reboot", NULL, "sho-a",
                             "00000000000000000000000000000005", 60);

  /* pristine device: no old SHO to change from, nothing to switch to */
  assert_int_equal(post_instruction(c, change, &res), MCIM_WRONG_STATE);
  assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 2);
  mcim_http_result_clear(&res);
  assert_int_equal(post_instruction(c, sw, &res), MCIM_WRONG_STATE);
  mcim_http_result_clear(&res);
  assert_int_equal(post_instruction(c, bad, &res), MCIM_CLAIM_MISMATCH);
  mcim_http_result_clear(&res);

  /* sho-a provisioned (the TRE is shared state: a second handle sees it) */
  assert_int_equal(mcim_tre_soft_open(c->fx.tre, &tre), MCIM_OK);
  assert_int_equal(fx_provision(&c->fx, tre, "sho-a", "001020000000001",
                                "00000000000000000000000000000001", FX_ACTIVE),
                   MCIM_OK);
  /* a preload of the active SHO, a switch to a slot that is not there */
  assert_int_equal(post_instruction(c, pre_a, &res), MCIM_WRONG_STATE);
  mcim_http_result_clear(&res);
  assert_int_equal(post_instruction(c, sw, &res), MCIM_WRONG_STATE);
  mcim_http_result_clear(&res);
  /* the same change instruction is now accepted: its jti was not spent */
  assert_int_equal(post_instruction(c, change, &res), MCIM_OK);
  assert_int_equal(res.status, 202);
  assert_string_equal(json_string_value(json_object_get(res.json, "kind")), "change");
  mcim_http_result_clear(&res);
  assert_int_equal(call(c, "GET", "/v1/procedures/" FX_TXN2, NULL, &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "via")), "old-sho");
  mcim_http_result_clear(&res);
  /* the procedure attaches to the old SHO first (step 2): the trace says so */
  bool attach_seen = false;
  for (int i = 0; i < 200 && !attach_seen; i++) {
    assert_int_equal(call(c, "GET", "/v1/admin/trace/" FX_TXN2, NULL, &res), MCIM_OK);
    size_t k;
    json_t *ev;
    json_array_foreach(json_object_get(res.json, "events"), k, ev) {
      const char *to = json_string_value(json_object_get(ev, "to"));
      if (to && strcmp(to, "sho-a") == 0)
        attach_seen = true;
    }
    mcim_http_result_clear(&res);
    if (!attach_seen)
      usleep(20000);
  }
  assert_true(attach_seen);
  mcim_tre_close(tre);
  free(change);
  free(sw);
  free(pre_a);
  free(bad);
}

static int setup_short(void **state)
{
  struct ctx *c = calloc(1, sizeof(*c));
  if (!c || fx_setup(&c->fx, ", \"procedure_timeout\": 1") != 0 ||
      mcim_device_start(c->fx.dir, &c->d) != MCIM_OK)
    return -1;
  struct mcim_http_client_cfg cc = {.unix_path = c->fx.sock, .timeout_ms = 5000};
  if (mcim_http_client_new(&cc, &c->cli) != MCIM_OK)
    return -1;
  *state = c;
  return 0;
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(socket_is_private, setup, teardown),
      cmocka_unit_test_setup_teardown(status_shows_tre_and_no_secret, setup, teardown),
      cmocka_unit_test_setup_teardown(unknown_route_is_problem, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_instruction_not_owner, setup, teardown),
      cmocka_unit_test_setup_teardown(attach_checks_and_causes, setup, teardown),
      cmocka_unit_test_setup_teardown(procedure_lifecycle, setup, teardown),
      cmocka_unit_test_setup_teardown(refused_instruction_keeps_its_jti, setup_short, teardown),
      cmocka_unit_test_setup_teardown(change_needs_the_right_slots, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
