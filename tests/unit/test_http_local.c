/* The local HTTP server (plain HTTP/1.1 on a Unix socket, src/net/http_local.c; the device
 * agent's control API): the same routes, problems and limits as the HTTPS server, through
 * the HTTP client and through raw bytes (what a client may send: chunked bodies, Expect,
 * HEAD, encoded paths, garbage, bodies too large), and a stop while a client holds an idle
 * connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/http.h"
#include "mcim/jsonv.h"
#include "mcim/metrics.h"

static char dir[] = "/tmp/mcim-http-local-XXXXXX";
static char sock[100]; /* sun_path: 108 bytes */

static void h_echo(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  static const struct mcim_jsonv_field fields[] = {{"name", MCIM_JV_STRING, true, 32}};
  char err[160];
  mcim_cause_t c = mcim_jsonv_check(req->json, fields, 1, err, sizeof(err));
  if (c != MCIM_OK) {
    mcim_http_reply_problem(resp, c, 7, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:O,s:s?}", "name", json_object_get(req->json, "name"),
                                 "bearer", req->bearer));
}

static void h_item(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s}", "a", req->params[0], "b", req->params[1]));
}

static void h_later(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_reply_problem(resp, MCIM_ORDER_PENDING, 0, "not yet");
  resp->retry_after = 3;
}

/* 401s: a refused statement (GET /v1/refused/statement) and a refused token (/token). */
static void h_refused(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  (void)ctx;
  mcim_http_reply_problem(resp, MCIM_JWS_BAD_SIGNATURE, 0, "no");
  if (strcmp(req->params[0], "token") == 0)
    resp->bearer_error = "invalid_token";
}

static const struct mcim_http_route routes[] = {
    {"POST", "/v1/echo", h_echo, 0},
    {"GET", "/v1/items/{a}/sub/{b}", h_item, 0},
    {"GET", "/v1/later", h_later, 0},
    {"GET", "/v1/refused/{what}", h_refused, 0},
};

static struct mcim_http_local *srv;

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir))
    return -1;
  snprintf(sock, sizeof(sock), "%.60s/control.sock", dir);
  struct mcim_http_server_cfg cfg = {
      .role = "test", .unix_path = sock, .threads = 2, .max_body = 1024,
      .routes = routes, .nroutes = sizeof(routes) / sizeof(routes[0]),
  };
  return mcim_http_local_start(&cfg, &srv) == MCIM_OK ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_local_free(srv);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int connect_unix(void)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  return fd;
}

/* Send `req` (len bytes) and read the whole answer, up to the server's close. */
static char *raw(const char *req, size_t len)
{
  int fd = connect_unix();
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (w <= 0)
      break; /* the server may answer and close before all of it went */
    off += (size_t)w;
  }
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap + 1);
  assert_non_null(buf);
  for (;;) {
    ssize_t r = recv(fd, buf + n, cap - n, 0);
    if (r <= 0)
      break;
    n += (size_t)r;
    if (n == cap)
      break;
  }
  buf[n] = '\0';
  close(fd);
  return buf;
}

static char *raws(const char *req)
{
  return raw(req, strlen(req));
}

static struct mcim_http_client *client(void)
{
  struct mcim_http_client_cfg cc = {.unix_path = sock, .timeout_ms = 5000};
  struct mcim_http_client *c = NULL;
  assert_int_equal(mcim_http_client_new(&cc, &c), MCIM_OK);
  return c;
}

static void test_socket_mode(void **state)
{
  (void)state;
  struct stat st;
  assert_int_equal(stat(sock, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 077, 0); /* the owner's only */
}

static void test_routes_and_problems(void **state)
{
  (void)state;
  struct mcim_http_client *c = client();
  struct mcim_http_result res;

  json_t *body = json_pack("{s:s}", "name", "dev1");
  assert_int_equal(mcim_http_request(c, "POST", "http://localhost/v1/echo", body, "tok", &res),
                   MCIM_OK);
  assert_int_equal(res.status, 200);
  assert_string_equal(json_string_value(json_object_get(res.json, "name")), "dev1");
  assert_string_equal(json_string_value(json_object_get(res.json, "bearer")), "tok");
  mcim_http_result_clear(&res);
  /* the handler's own problem, with its step */
  json_object_set_new(body, "name", json_integer(3));
  assert_int_equal(mcim_http_request(c, "POST", "http://localhost/v1/echo", body, NULL, &res),
                   MCIM_WRONG_TYPE);
  assert_int_equal(res.status, 400);
  assert_int_equal(json_integer_value(json_object_get(res.json, "step")), 7);
  mcim_http_result_clear(&res);
  json_decref(body);

  assert_int_equal(mcim_http_request(c, "GET", "http://localhost/v1/items/x/sub/y", NULL, NULL,
                                     &res), MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(res.json, "a")), "x");
  assert_string_equal(json_string_value(json_object_get(res.json, "b")), "y");
  mcim_http_result_clear(&res);
  assert_int_equal(mcim_http_request(c, "GET", "http://localhost/v1/nothing", NULL, NULL, &res),
                   MCIM_ROUTE_NOT_FOUND);
  assert_int_equal(res.status, 404);
  mcim_http_result_clear(&res);
  assert_int_equal(mcim_http_request(c, "DELETE", "http://localhost/v1/echo", NULL, NULL, &res),
                   MCIM_METHOD_NOT_ALLOWED);
  assert_int_equal(res.status, 405);
  mcim_http_result_clear(&res);
  mcim_http_client_free(c);
}

static void test_raw_answers(void **state)
{
  (void)state;
  /* a plain GET: status line, type, length, the close */
  char *a = raws("GET /v1/items/a%62c/sub/d?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(a, "Content-Type: application/json\r\n"));
  assert_non_null(strstr(a, "Connection: close\r\n"));
  assert_non_null(strstr(a, "{\"a\":\"abc\",\"b\":\"d\"}")); /* %62 decoded, query dropped */
  free(a);
  /* bare LFs, HTTP/1.0 */
  a = raws("GET /v1/items/1/sub/2 HTTP/1.0\n\n");
  assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
  free(a);
  /* HEAD: the head only */
  a = raws("HEAD /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 405 Method Not Allowed\r\n"));
  assert_non_null(strstr(a, "Content-Type: application/problem+json\r\n"));
  assert_null(strstr(a, "{"));
  free(a);
  /* Retry-After */
  a = raws("GET /v1/later HTTP/1.1\r\n\r\n");
  assert_non_null(strstr(a, "Retry-After: 3\r\n"));
  assert_non_null(strstr(a, "ORDER_PENDING"));
  free(a);
  /* every 401 has a challenge (RFC 9110 15.5.2): a token's is Bearer (RFC 6750 3), any
   * other credential's ours; other answers none */
  a = raws("GET /v1/refused/statement HTTP/1.1\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 401 "));
  assert_non_null(strstr(a, "WWW-Authenticate: MCIM-Statement realm=\"mcim\"\r\n"));
  free(a);
  a = raws("GET /v1/refused/token HTTP/1.1\r\n\r\n");
  assert_non_null(
      strstr(a, "WWW-Authenticate: Bearer realm=\"mcim\", error=\"invalid_token\"\r\n"));
  free(a);
  a = raws("GET /v1/later HTTP/1.1\r\n\r\n");
  assert_null(strstr(a, "WWW-Authenticate"));
  free(a);
  /* not HTTP */
  a = raws("hello there\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 400 "));
  assert_non_null(strstr(a, "INVALID_ARGUMENT"));
  free(a);
  a = raws("GET /v1/later SPDY/3\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 400 "));
  free(a);
}

static void test_raw_bodies(void **state)
{
  (void)state;
  /* chunked, with a chunk extension and a trailer */
  char *a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n"
                 "5;ext=1\r\n{\"nam\r\n9\r\ne\":\"chk\"}\r\n0\r\nX-Trailer: 1\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
  assert_non_null(strstr(a, "\"name\":\"chk\""));
  free(a);
  /* Expect: 100-continue: the interim answer, then the final one */
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 14\r\n"
           "Expect: 100-continue\r\n\r\n{\"name\":\"exp\"}");
  assert_true(strncmp(a, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 42) == 0);
  free(a);
  /* wrong type, broken JSON, duplicate keys */
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
  assert_non_null(strstr(a, "UNSUPPORTED_MEDIA_TYPE"));
  free(a);
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
           "{\"name\":");
  assert_non_null(strstr(a, "BAD_JSON"));
  free(a);
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 21\r\n"
           "\r\n{\"name\":\"a\",\"name\":1}");
  assert_non_null(strstr(a, "BAD_JSON"));
  free(a);
  /* two different lengths, a bad one, an unknown coding */
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}");
  assert_non_null(strstr(a, "HTTP/1.1 400 "));
  free(a);
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Length: -2\r\n\r\n{}");
  assert_non_null(strstr(a, "HTTP/1.1 400 "));
  free(a);
  a = raws("POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 400 "));
  free(a);
}

static void test_limits(void **state)
{
  (void)state;
  /* a body over max_body (1024): read, dropped, 413 */
  size_t n = 3000;
  char *req = malloc(n + 200);
  assert_non_null(req);
  int h = snprintf(req, 200, "POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n", n);
  memset(req + h, 'x', n);
  char *a = raw(req, (size_t)h + n);
  assert_non_null(strstr(a, "HTTP/1.1 413 "));
  assert_non_null(strstr(a, "TOO_LARGE"));
  free(a);
  free(req);
  /* a huge one: refused at once, nothing read */
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\n"
           "Content-Length: 1000000000\r\n\r\n{");
  assert_non_null(strstr(a, "HTTP/1.1 413 "));
  free(a);
  /* chunk sizes that add up past 2^64: the total must not wrap under the limit */
  a = raws("POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\nffffffffffffffff\r\n\"\r\n0\r\n\r\n");
  assert_non_null(strstr(a, "HTTP/1.1 413 "));
  free(a);
  /* trailers that never end: counted like a head, not read for ever */
  size_t tl = 20000;
  req = malloc(tl + 256);
  assert_non_null(req);
  h = snprintf(req, 256, "POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n");
  for (size_t i = 0; i < tl / 100; i++)
    h += snprintf(req + h, 101, "X-T: %093zu\r\n", i);
  h += snprintf(req + h, 3, "\r\n");
  a = raw(req, (size_t)h);
  assert_non_null(strstr(a, "HTTP/1.1 413 "));
  free(a);
  free(req);
  /* a head that never ends */
  size_t big = 20000;
  req = malloc(big + 64);
  assert_non_null(req);
  h = snprintf(req, 64, "GET /v1/later HTTP/1.1\r\nX-Big: ");
  memset(req + h, 'y', big);
  a = raw(req, (size_t)h + big);
  assert_non_null(strstr(a, "HTTP/1.1 413 "));
  free(a);
  free(req);
}

static void test_counted(void **state)
{
  (void)state;
  char *a = raws("GET /v1/items/q/sub/r HTTP/1.1\r\n\r\n");
  free(a);
  char *m = mcim_metrics_render(MCIM_MF_HTTP);
  assert_non_null(m);
  assert_non_null(strstr(m, "route=\"/v1/items/{a}/sub/{b}\""));
  free(m);
}

/* A client that connected and sent nothing does not keep the server from stopping: its
 * connection is shut down and the threads end. */
static void test_stop_with_idle_client(void **state)
{
  (void)state;
  char s2[100];
  snprintf(s2, sizeof(s2), "%.60s/second.sock", dir);
  struct mcim_http_server_cfg cfg = {.unix_path = s2, .threads = 1, .routes = routes,
                                     .nroutes = 3};
  struct mcim_http_local *l = NULL;
  assert_int_equal(mcim_http_local_start(&cfg, &l), MCIM_OK);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", s2);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  assert_int_equal(send(fd, "GET /v1/la", 10, 0), 10); /* the thread is now reading it */
  mcim_http_local_free(l);
  char c;
  assert_true(recv(fd, &c, 1, 0) <= 0); /* closed without an answer */
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_socket_mode),
      cmocka_unit_test(test_routes_and_problems),
      cmocka_unit_test(test_raw_answers),
      cmocka_unit_test(test_raw_bodies),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_counted),
      cmocka_unit_test(test_stop_with_idle_client),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
