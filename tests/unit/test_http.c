/* HTTP server and client over real TLS on loopback: routes, captures, mTLS,
 * problem+json for every kind of bad request, connection reuse. Certificates
 * come from the openssl command line so this test does not depend on pki.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/http.h"
#include "mcim/jsonv.h"

static char dir[] = "/tmp/mcim-http-XXXXXX";
static char path_buf[8][256];

static const char *p(int i, const char *name)
{
  snprintf(path_buf[i], sizeof(path_buf[i]), "%s/%s", dir, name);
  return path_buf[i];
}

static int make_pki(void)
{
  char cmd[4096];
  snprintf(cmd, sizeof(cmd),
           "set -e; cd %s;"
           "openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null;"
           "openssl req -x509 -new -key ca.key -subj /CN=test-ca -days 2 -out ca.crt 2>/dev/null;"
           "for n in server client; do "
           " openssl ecparam -name prime256v1 -genkey -noout -out $n.key 2>/dev/null;"
           " openssl req -new -key $n.key -subj /CN=$n -out $n.csr 2>/dev/null;"
           " printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > $n.ext;"
           " openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
           "   -extfile $n.ext -out $n.crt 2>/dev/null;"
           "done;"
           "openssl ecparam -name prime256v1 -genkey -noout -out other.key 2>/dev/null;"
           "openssl req -x509 -new -key other.key -subj /CN=rogue -days 2 -out other.crt 2>/dev/null",
           dir);
  return system(cmd);
}

static void h_echo(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"name", MCIM_JV_STRING, true, 32},
      {"k", MCIM_JV_HEX, false, 32},
  };
  char err[160];
  mcim_cause_t c = mcim_jsonv_check(req->json, fields, 2, err, sizeof(err));
  if (c != MCIM_OK) {
    mcim_http_reply_problem(resp, c, 7, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:O,s:s?,s:s?}", "name", json_object_get(req->json, "name"),
                                 "peer", req->peer, "bearer", req->bearer));
}

static void h_item(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s}", "a", req->params[0], "b", req->params[1]));
}

static const struct mcim_http_route routes[] = {
    {"POST", "/v1/echo", h_echo, 0},
    {"POST", "/v1/secure", h_echo, MCIM_ROUTE_PEER_CERT},
    {"GET", "/v1/items/{a}/sub/{b}", h_item, 0},
};

static struct mcim_http_server *srv;
static char base[64];

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir) || make_pki() != 0)
    return -1;
  struct mcim_http_server_cfg cfg = {
      .role = "test", .cert_file = p(0, "server.crt"), .key_file = p(1, "server.key"),
      .client_ca_file = p(2, "ca.crt"), .threads = 2, .max_body = 1024,
      .routes = routes, .nroutes = 3,
  };
  if (mcim_http_server_start(&cfg, &srv) != MCIM_OK)
    return -1;
  snprintf(base, sizeof(base), "https://localhost:%u", mcim_http_server_port(srv));
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_server_free(srv);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static struct mcim_http_client *client(bool with_cert, bool rogue)
{
  struct mcim_http_client_cfg cc = {.ca_file = p(3, "ca.crt"), .timeout_ms = 5000};
  if (with_cert) {
    cc.cert_file = p(4, rogue ? "other.crt" : "client.crt");
    cc.key_file = p(5, rogue ? "other.key" : "client.key");
  }
  struct mcim_http_client *c = NULL;
  assert_int_equal(mcim_http_client_new(&cc, &c), MCIM_OK);
  return c;
}

static void test_roundtrip_and_reuse(void **state)
{
  (void)state;
  struct mcim_http_client *c = client(true, false);
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/echo", base);
  for (int i = 0; i < 3; i++) {
    struct mcim_http_result r;
    json_t *body = json_pack("{s:s}", "name", "dev1");
    assert_int_equal(mcim_http_request(c, "POST", url, body, "tok123", &r), MCIM_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "dev1");
    assert_string_equal(json_string_value(json_object_get(r.json, "peer")), "client");
    assert_string_equal(json_string_value(json_object_get(r.json, "bearer")), "tok123");
    mcim_http_result_clear(&r);
    json_decref(body);
  }
  snprintf(url, sizeof(url), "%s/v1/items/x1/sub/y2", base);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(c, "GET", url, NULL, NULL, &r), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(r.json, "a")), "x1");
  assert_string_equal(json_string_value(json_object_get(r.json, "b")), "y2");
  mcim_http_result_clear(&r);
  mcim_http_client_free(c);
}

static void expect_cause(struct mcim_http_client *c, const char *method, const char *path,
                         json_t *body, mcim_cause_t want, long status)
{
  char url[256];
  snprintf(url, sizeof(url), "%s%s", base, path);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(c, method, url, body, NULL, &r), want);
  assert_int_equal(r.status, status);
  mcim_http_result_clear(&r);
  json_decref(body);
}

static void test_bad_requests(void **state)
{
  (void)state;
  struct mcim_http_client *c = client(false, false);
  expect_cause(c, "GET", "/v1/nowhere", NULL, MCIM_ROUTE_NOT_FOUND, 404);
  expect_cause(c, "DELETE", "/v1/echo", NULL, MCIM_METHOD_NOT_ALLOWED, 405);
  expect_cause(c, "POST", "/v1/echo", json_pack("{s:i}", "name", 3), MCIM_WRONG_TYPE, 400);
  expect_cause(c, "POST", "/v1/echo", json_pack("{s:s,s:s}", "name", "a", "x", "y"),
               MCIM_UNKNOWN_FIELD, 400);
  expect_cause(c, "POST", "/v1/echo", json_pack("{}"), MCIM_FIELD_MISSING, 400);
  expect_cause(c, "POST", "/v1/echo", json_pack("{s:s,s:s}", "name", "a", "k", "zz"),
               MCIM_BAD_HEX, 400);
  expect_cause(c, "POST", "/v1/echo", json_pack("[]"), MCIM_BAD_JSON, 400);
  char big[2048];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  expect_cause(c, "POST", "/v1/echo", json_pack("{s:s}", "name", big), MCIM_TOO_LARGE, 413);
  /* no client certificate on a route that needs one */
  expect_cause(c, "POST", "/v1/secure", json_pack("{s:s}", "name", "a"),
               MCIM_PEER_NOT_AUTHENTICATED, 401);
  /* the server still serves */
  expect_cause(c, "POST", "/v1/echo", json_pack("{s:s}", "name", "ok"), MCIM_OK, 200);
  mcim_http_client_free(c);
}

static void test_wrong_content_type_and_syntax(void **state)
{
  (void)state;
  char cmd[2048];
  /* curl(1) sends what our client never would: broken JSON, a wrong type. */
  snprintf(cmd, sizeof(cmd),
           "curl -s --cacert %s -H 'Content-Type: text/plain' -d '{}' %s/v1/echo | grep -q UNSUPPORTED_MEDIA_TYPE && "
           "curl -s --cacert %s -H 'Content-Type: application/json' -d '{\"name\":' %s/v1/echo | grep -q BAD_JSON && "
           "curl -s --cacert %s -H 'Content-Type: application/json' -d '{\"name\":\"a\",\"name\":\"b\"}' %s/v1/echo | grep -q BAD_JSON",
           p(6, "ca.crt"), base, path_buf[6], base, path_buf[6], base);
  assert_int_equal(system(cmd), 0);
}

static void test_rogue_client_cert(void **state)
{
  (void)state;
  struct mcim_http_client *c = client(true, true);
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/secure", base);
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "name", "x");
  mcim_cause_t rc = mcim_http_request(c, "POST", url, body, NULL, &r);
  /* The server asks for a client certificate and verifies it itself (http_server.c,
   * peer_common_name): a certificate of another CA is refused with the cause that says so,
   * in an answer (401), never as a transport failure (PEER_UNREACHABLE would hide a server
   * that does not answer at all). */
  assert_string_equal(mcim_cause_name(rc), mcim_cause_name(MCIM_PEER_NOT_AUTHENTICATED));
  assert_int_equal(r.status, 401);
  mcim_http_result_clear(&r);
  json_decref(body);
  mcim_http_client_free(c);
}

static void test_untrusted_server(void **state)
{
  (void)state;
  struct mcim_http_client_cfg cc = {.ca_file = p(3, "other.crt"), .timeout_ms = 3000};
  struct mcim_http_client *c = NULL;
  assert_int_equal(mcim_http_client_new(&cc, &c), MCIM_OK);
  char url[128];
  snprintf(url, sizeof(url), "%s/v1/echo", base);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(c, "GET", url, NULL, NULL, &r), MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&r);
  mcim_http_client_free(c);
}

static void test_route_match(void **state)
{
  (void)state;
  const char *params[MCIM_HTTP_MAX_PARAMS];
  size_t n = 0;
  char scratch[64];
  assert_true(mcim_http_route_match("/v1/a/{x}", "/v1/a/42", params, &n, scratch, sizeof(scratch)));
  assert_int_equal(n, 1);
  assert_string_equal(params[0], "42");
  assert_false(mcim_http_route_match("/v1/a/{x}", "/v1/a/", params, &n, scratch, sizeof(scratch)));
  assert_false(mcim_http_route_match("/v1/a/{x}", "/v1/a/4/5", params, &n, scratch, sizeof(scratch)));
  assert_false(mcim_http_route_match("/v1/a", "/v1/ab", params, &n, scratch, sizeof(scratch)));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_match),
      cmocka_unit_test(test_roundtrip_and_reuse),
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_wrong_content_type_and_syntax),
      cmocka_unit_test(test_rogue_client_cert),
      cmocka_unit_test(test_untrusted_server),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
