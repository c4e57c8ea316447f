/* A peer's HTTP answer as the device agent's client reads it off the wire: the small client
 * (src/net/http_lite.c, mcim_http_lite_request over its plain-HTTP Unix socket transport):
 * the status line and headers (parse_head: Content-Length, Transfer-Encoding, Connection,
 * 1xx answers first), the body by length, chunked (read_chunked, in place) or up to the
 * close, the size limits, and then the answer as JSON or problem+json
 * (mcim_http_result_from_answer_). A thread of this target plays the server on a Unix socket
 * on tmpfs: it takes the request and answers with the input's bytes, then closes.
 *
 * Input: the bytes of the answer.
 * Seeds: tests/fuzz/corpus/fuzz_http_answer/ (answers as the roles' server sends them: by
 * length, chunked, a problem+json, a 1xx first). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "mcim/http.h"

static struct mcim_http_lite *cli;
static int lfd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *answer; /* a copy: the server may still send it when the client gave up */
static size_t answer_len;

static void serve_one(int fd)
{
  char req[8192];
  size_t got = 0;
  /* the request head (the client sends GET: no body) */
  while (got < sizeof(req) - 1) {
    ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
    req[got] = '\0';
    if (strstr(req, "\r\n\r\n"))
      break;
  }
  pthread_mutex_lock(&mu);
  const uint8_t *p = answer;
  size_t left = answer_len;
  while (left) {
    ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    p += n;
    left -= (size_t)n;
  }
  pthread_mutex_unlock(&mu);
  shutdown(fd, SHUT_WR);
  /* drain until the client closes: the answer is never cut by a reset */
  char sink[512];
  while (recv(fd, sink, sizeof(sink), 0) > 0)
    ;
  close(fd);
}

static void *server(void *arg)
{
  (void)arg;
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return NULL;
    }
    serve_one(fd);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  char *dir = fuzz_tmpdir("http");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
  lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 8) != 0)
    fuzz_die("the answering socket");
  pthread_t t;
  if (pthread_create(&t, NULL, server, NULL) != 0)
    fuzz_die("the answering thread");
  pthread_detach(t);
  struct mcim_http_client_cfg cfg = {.unix_path = sa.sun_path, .timeout_ms = 5000};
  if (mcim_http_lite_new(&cfg, &cli) != MCIM_OK)
    fuzz_die("the client");
  free(dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  pthread_mutex_lock(&mu);
  free(answer);
  answer = malloc(size ? size : 1);
  if (!answer)
    fuzz_die("out of memory");
  if (size)
    memcpy(answer, data, size);
  answer_len = size;
  pthread_mutex_unlock(&mu);
  /* a new connection for every answer: nothing of one input is read with the next */
  mcim_http_lite_close_connections(cli);
  struct mcim_http_result res;
  (void)mcim_http_lite_request(cli, "GET", "http://localhost/v1/health", NULL, NULL, &res);
  mcim_http_result_clear(&res);
  return 0;
}
