/* A request as the device agent's local server reads it off its control socket
 * (src/net/http_local.c, mcim_http_local_start: the server the agent runs, started here on a
 * Unix socket on tmpfs with one serving thread): the head (read_head: CRLF or bare LF, the
 * 16 KiB bound), the request line and headers (parse_head: method, target, HTTP/1.0 or 1.1,
 * Content-Type, Authorization, Transfer-Encoding, Expect, two Content-Lengths), the path's
 * %XX decoding (decode_path), the body by Content-Length (read_sized) or chunked
 * (read_chunked: sizes, extensions, the CRLF after the data, trailers and their bound), the
 * limits (a body of at most max_body, 1 KiB here), then the dispatcher both servers use
 * (mcim_http_dispatch_, src/net/http_route.c: the route, the body's type and JSON, the
 * bearer token) into three routes like the agent's (a JSON body checked with
 * mcim_jsonv_check, a path with two parameters, a problem with Retry-After), and the answer.
 * The target is the client: it sends the input, closes its writing side and reads the
 * answer to the end (the server answers and closes, or closes), so one input is one
 * connection and nothing of it is left for the next.
 *
 * Input: the bytes a client sends (no mode byte).
 * Seeds: tests/fuzz/corpus/fuzz_http_local/ (requests as the mcim CLI's client sends them
 * to an agent: by length, chunked, with Expect, a bearer token, an encoded path). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "mcim/http.h"
#include "mcim/jsonv.h"

static struct sockaddr_un sa = {.sun_family = AF_UNIX};
static struct mcim_http_local *srv;

static void h_procedures(void *ctx, const struct mcim_http_request *req,
                         struct mcim_http_response *resp)
{
  (void)ctx;
  static const struct mcim_jsonv_field fields[] = {
      {"instruction", MCIM_JV_STRING, true, 64},
      {"txn", MCIM_JV_HEX, false, 32},
  };
  char err[160];
  mcim_cause_t c = mcim_jsonv_check(req->json, fields, 2, err, sizeof(err));
  if (c != MCIM_OK) {
    mcim_http_reply_problem(resp, c, 2, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 202,
                       json_pack("{s:O,s:s?}", "instruction",
                                 json_object_get(req->json, "instruction"), "bearer",
                                 req->bearer));
}

static void h_trace(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp)
{
  (void)ctx;
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:[]}", "role", req->params[0], "txid",
                                 req->params[1], "events"));
}

static void h_busy(void *ctx, const struct mcim_http_request *req,
                   struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_reply_problem(resp, MCIM_DEVICE_BUSY, 0, "a procedure is running");
  resp->retry_after = 1;
}

static const struct mcim_http_route routes[] = {
    {"POST", "/v1/procedures", h_procedures, 0},
    {"GET", "/v1/admin/{who}/trace/{txn}", h_trace, 0},
    {"GET", "/v1/status", h_busy, 0},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  char *dir = fuzz_tmpdir("local");
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", dir);
  struct mcim_http_server_cfg cfg = {
      .role = "fuzz", .unix_path = sa.sun_path, .threads = 1, .max_body = 1024,
      .routes = routes, .nroutes = sizeof(routes) / sizeof(routes[0]),
  };
  if (mcim_http_local_start(&cfg, &srv) != MCIM_OK)
    fuzz_die("the local server");
  free(dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
    fuzz_die("cannot connect to the local server");
  const uint8_t *p = data;
  size_t left = size;
  while (left) {
    ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* the server answered early and closed */
    p += n;
    left -= (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  /* to the end: the server has then finished with this connection */
  char answer[4096];
  for (;;) {
    ssize_t n = recv(fd, answer, sizeof(answer), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
  }
  close(fd);
  return 0;
}
