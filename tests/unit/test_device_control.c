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
  /* the same instruction again: a replay */
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_DEVICE_BUSY);
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

static void change_not_yet(void **state)
{
  struct ctx *c = *state;
  struct mcim_http_result res;
  char *jws = fx_instruction(c->fx.owner, FX_DEVICE, FX_DEVICE, "change", "old-sho", "sho-b",
                             FX_TXN2, 60);
  assert_int_equal(call(c, "POST", "/v1/procedures", json_pack("{s:s}", "instruction", jws), &res),
                   MCIM_UNSUPPORTED);
  mcim_http_result_clear(&res);
  free(jws);
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
      cmocka_unit_test_setup_teardown(change_not_yet, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
