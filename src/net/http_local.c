/* The local HTTP server (include/mcim/http.h, mcim_http_local_start): plain HTTP/1.1 on a
 * Unix socket, for the device agent's control API. It replaces libmicrohttpd there: linking
 * MHD brings GnuTLS, p11-kit, nettle, gmp and libtasn1, which initialise themselves in every
 * process that loads them (about 2.4 MiB resident in the agent; docs/device.md, "Footprint")
 * although this channel has no TLS at all.
 *
 * `threads` threads each block in accept() on the listening socket: an idle server never
 * wakes up. A thread reads one request, runs it through the dispatcher the HTTPS server uses
 * (http_route.c: the same routes, body checks, problems and metrics), answers with
 * "Connection: close" and closes, so no idle client can hold a thread. A connection that
 * sends nothing for 30 s (SO_RCVTIMEO) is closed. Stopping shuts the listening socket down
 * (every accept() returns) and the read side of the connections being served (a request
 * still arriving ends; a handler already running finishes and answers). Whatever a client
 * sends, the answer is a response or a closed connection; nothing here asserts on input. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/util.h"
#include "net/http_priv.h"

#define HEAD_MAX 16384     /* request line and headers */
#define IDLE_TIMEOUT_S 30  /* as libmicrohttpd's connection timeout had it on this socket */
#define DEFAULT_THREADS 2

struct mcim_http_local {
  struct mcim_http_server_cfg cfg;
  int fd;
  pthread_mutex_t lock;
  bool stopping;
  unsigned started;
  struct local_thread *threads;
};

struct local_thread {
  struct mcim_http_local *srv;
  pthread_t id;
  int conn; /* the connection being served, -1 (under srv->lock) */
};

/* One request off the wire. */
struct local_req {
  int fd;
  char head[HEAD_MAX + 1];
  size_t have;     /* bytes read into head */
  size_t head_len; /* the head's length, blank line included */
  char *method, *target, *content_type, *authorization, *te, *expect;
  const char *content_length;
  bool http10;
  uint8_t *body;
  size_t len, cap;
  bool timed_out;
  uint64_t cpu0; /* this thread's CPU at the dispatch (0: not dispatched) */
};

static const char *reason(int status)
{
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 413: return "Content Too Large";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Content";
  case 423: return "Locked";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Status";
  }
}

static bool write_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

/* Read what the peer sent, at most `n` bytes; 0: closed or timed out (r->timed_out). */
static size_t read_some(struct local_req *r, void *buf, size_t n)
{
  for (;;) {
    ssize_t got = recv(r->fd, buf, n, 0);
    if (got > 0)
      return (size_t)got;
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      r->timed_out = true;
    return 0;
  }
}

static void send_answer(struct mcim_http_local *srv, struct local_req *r, const char *method,
                        const char *path, struct mcim_http_response *resp,
                        const struct timespec *start)
{
  const char *type = NULL;
  char *body = mcim_http_body_(resp, &type);
  size_t len = body ? strlen(body) : 0;
  char head[512];
  int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n", resp->status, reason(resp->status));
  if (type)
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Type: %s\r\n", type);
  n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n", len);
  if (resp->retry_after > 0) /* RFC 9110 10.2.3: "not yet", ask again in that many seconds */
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Retry-After: %d\r\n", resp->retry_after);
  char ch[64];
  if (mcim_http_challenge_(resp, ch, sizeof(ch))) /* RFC 6750 3, RFC 9110 15.5.2 */
    n += snprintf(head + n, sizeof(head) - (size_t)n, "WWW-Authenticate: %s\r\n", ch);
  n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n\r\n");
  /* Counted before it is written, as the HTTPS server counts an answer queued: a client that
   * has its answer finds it in the next scrape. Its CPU from the dispatch to here
   * (mcim_http_request_cpu_seconds_total); a refusal before the dispatch is not timed. */
  mcim_http_count_(&srv->cfg, method, path, resp, start,
                   r->cpu0 ? mcim_cpu_delta_ns(r->cpu0, mcim_thread_cpu_ns()) : 0);
  if (write_all(r->fd, head, (size_t)n) && body && strcmp(method, "HEAD") != 0)
    write_all(r->fd, body, len);
  free(body);
}

static void refuse(struct mcim_http_local *srv, struct local_req *r, const char *method,
                   const char *path, mcim_cause_t cause, const char *detail,
                   const struct timespec *start)
{
  struct mcim_http_response resp = {0};
  mcim_http_reply_problem(&resp, cause, 0, "%s", detail);
  send_answer(srv, r, method ? method : "other", path ? path : "unmatched", &resp, start);
  mcim_http_response_clear(&resp);
}

/* The request line and the headers. false: nothing usable arrived (closed, timed out). */
static bool read_head(struct local_req *r, bool *too_large)
{
  *too_large = false;
  for (;;) {
    r->head[r->have] = '\0';
    /* the blank line that ends the head: CRLF CRLF, or bare LFs */
    for (size_t i = 0; i < r->have; i++) {
      if (r->head[i] != '\n')
        continue;
      size_t j = i + 1;
      if (j < r->have && r->head[j] == '\r')
        j++;
      if (j < r->have && r->head[j] == '\n') {
        r->head_len = j + 1;
        return true;
      }
    }
    if (r->have >= HEAD_MAX) {
      *too_large = true;
      return false;
    }
    size_t got = read_some(r, r->head + r->have, HEAD_MAX - r->have);
    if (got == 0)
      return false;
    r->have += got;
  }
}

static char *trim(char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

/* Split the head in place. false: not an HTTP/1.x request. */
static bool parse_head(struct local_req *r)
{
  char *p = r->head, *end = r->head + r->head_len;
  char *line = NULL;

  r->head[r->head_len - 1] = '\0';
  /* the request line (RFC 9112 2.2: empty lines before it are ignored) */
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
      return false;
    *nl = '\0';
    line = trim(p);
    p = nl + 1;
    if (*line)
      break;
  }
  if (!line || !*line)
    return false;
  char *sp1 = strchr(line, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1)
    return false;
  *sp1 = '\0';
  *sp2 = '\0';
  r->method = line;
  r->target = sp1 + 1;
  const char *version = sp2 + 1;
  if (strcmp(version, "HTTP/1.1") == 0)
    r->http10 = false;
  else if (strcmp(version, "HTTP/1.0") == 0)
    r->http10 = true;
  else
    return false;
  /* the headers */
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl)
      *nl = '\0';
    char *h = p;
    p = nl ? nl + 1 : end;
    size_t hl = strlen(h);
    if (hl && h[hl - 1] == '\r')
      h[--hl] = '\0';
    if (!*h)
      break;
    char *colon = strchr(h, ':');
    if (!colon || colon == h)
      return false;
    *colon = '\0';
    char *v = trim(colon + 1);
    if (strcasecmp(h, "Content-Type") == 0)
      r->content_type = v;
    else if (strcasecmp(h, "Authorization") == 0)
      r->authorization = v;
    else if (strcasecmp(h, "Transfer-Encoding") == 0)
      r->te = v;
    else if (strcasecmp(h, "Expect") == 0)
      r->expect = v;
    else if (strcasecmp(h, "Content-Length") == 0) {
      if (r->content_length && strcmp(r->content_length, v) != 0)
        return false; /* two different lengths: which one? */
      r->content_length = v;
    }
  }
  return true;
}

static int hex_digit(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The path of the target: without the query, %XX decoded (as libmicrohttpd passed it). */
static void decode_path(char *t)
{
  char *q = strchr(t, '?');
  if (q)
    *q = '\0';
  char *o = t;
  for (char *s = t; *s; s++) {
    int hi, lo;
    if (s[0] == '%' && s[1] && s[2] && (hi = hex_digit(s[1])) >= 0 &&
        (lo = hex_digit(s[2])) >= 0) {
      *o++ = (char)(hi * 16 + lo);
      s += 2;
    } else {
      *o++ = *s;
    }
  }
  *o = '\0';
}

/* Bytes of the body already in the head buffer, then from the socket. */
static size_t body_read(struct local_req *r, size_t *pos, void *buf, size_t n)
{
  if (*pos < r->have) {
    size_t k = r->have - *pos < n ? r->have - *pos : n;
    memcpy(buf, r->head + *pos, k);
    *pos += k;
    return k;
  }
  return read_some(r, buf, n);
}

static bool body_keep(struct local_req *r, const uint8_t *p, size_t n, size_t max)
{
  if (r->len + n > max)
    return false;
  if (r->len + n > r->cap) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + n)
      cap *= 2;
    uint8_t *nb = realloc(r->body, cap);
    if (!nb)
      return false;
    r->body = nb;
    r->cap = cap;
  }
  memcpy(r->body + r->len, p, n);
  r->len += n;
  return true;
}

enum body_result { BODY_OK, BODY_TOO_LARGE, BODY_HUGE, BODY_BAD, BODY_CUT };

/* Content-Length bytes: kept up to `max`, a body somewhat larger read and dropped (so the
 * client surely gets the 413: answering mid-upload resets the connection under a client
 * still sending), a huge one refused at once, as the HTTPS server does. */
static enum body_result read_sized(struct local_req *r, size_t *pos, unsigned long long n,
                                   size_t max)
{
  uint8_t buf[4096];
  bool too_large = n > max;
  while (n > 0) {
    size_t want = n < sizeof(buf) ? (size_t)n : sizeof(buf);
    size_t got = body_read(r, pos, buf, want);
    if (got == 0)
      return BODY_CUT;
    if (!too_large && !body_keep(r, buf, got, max))
      too_large = true;
    n -= got;
  }
  return too_large ? BODY_TOO_LARGE : BODY_OK;
}

/* One line of a chunked body (a chunk size, a trailer), without its CRLF. */
static bool chunk_line(struct local_req *r, size_t *pos, char *line, size_t cap)
{
  size_t n = 0;
  for (;;) {
    char c;
    if (body_read(r, pos, &c, 1) != 1)
      return false;
    if (c == '\n')
      break;
    if (n + 1 >= cap)
      return false;
    line[n++] = c;
  }
  if (n && line[n - 1] == '\r')
    n--;
  line[n] = '\0';
  return true;
}

static enum body_result read_chunked(struct local_req *r, size_t *pos, size_t max)
{
  uint8_t buf[4096];
  char line[256];
  unsigned long long total = 0;
  bool too_large = false;
  for (;;) {
    if (!chunk_line(r, pos, line, sizeof(line)))
      return BODY_CUT;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(line, &end, 16);
    if (end == line || errno || (*end && *end != ';' && *end != ' '))
      return BODY_BAD;
    if (n == 0)
      break;
    /* compared before adding: a chunk size near 2^64 must not wrap the total past the
     * limit (found by reading during the fuzzing work, docs/fuzzing.md) */
    if (n > 16 * (unsigned long long)max - total)
      return BODY_HUGE;
    total += n;
    while (n > 0) {
      size_t want = n < sizeof(buf) ? (size_t)n : sizeof(buf);
      size_t got = body_read(r, pos, buf, want);
      if (got == 0)
        return BODY_CUT;
      if (!too_large && !body_keep(r, buf, got, max))
        too_large = true;
      n -= got;
    }
    if (!chunk_line(r, pos, line, sizeof(line)) || line[0])
      return BODY_BAD; /* the CRLF after the data */
  }
  size_t trailers = 0;
  do { /* trailers, up to the blank line: at most a head's worth, not read for ever */
    if (!chunk_line(r, pos, line, sizeof(line)))
      return BODY_CUT;
    trailers += strlen(line) + 2;
    if (trailers > HEAD_MAX)
      return BODY_HUGE;
  } while (line[0]);
  return too_large ? BODY_TOO_LARGE : BODY_OK;
}

static void serve_connection(struct mcim_http_local *srv, int fd)
{
  struct local_req *r = calloc(1, sizeof(*r));
  struct timespec start;
  char detail[96];
  bool head_too_large;
  size_t pos;

  if (!r)
    return;
  r->fd = fd;
  if (!read_head(r, &head_too_large)) {
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (head_too_large) {
      snprintf(detail, sizeof(detail), "request head larger than %d bytes", HEAD_MAX);
      refuse(srv, r, NULL, NULL, MCIM_TOO_LARGE, detail, &start);
    } else if (r->have > 0 && r->timed_out) {
      mcim_metric_inc(&mcim_m_http_connections_timed_out, NULL); /* a request that stalled */
    }
    goto out;
  }
  clock_gettime(CLOCK_MONOTONIC, &start);
  if (!parse_head(r)) {
    refuse(srv, r, NULL, NULL, MCIM_INVALID_ARGUMENT, "not an HTTP/1.1 request", &start);
    goto out;
  }
  decode_path(r->target);

  /* the body: chunked, sized, or none */
  enum body_result br = BODY_OK;
  unsigned long long clen = 0;
  size_t max = srv->cfg.max_body;
  if (r->te && strcasecmp(r->te, "chunked") != 0) {
    refuse(srv, r, r->method, r->target, MCIM_INVALID_ARGUMENT,
           "only the chunked transfer coding is understood", &start);
    goto out;
  }
  if (!r->te && r->content_length) {
    char *end = NULL;
    errno = 0;
    clen = strtoull(r->content_length, &end, 10);
    if (end == r->content_length || *end || errno || r->content_length[0] == '-') {
      refuse(srv, r, r->method, r->target, MCIM_INVALID_ARGUMENT, "bad Content-Length",
             &start);
      goto out;
    }
    if (clen > 16 * (unsigned long long)max)
      br = BODY_HUGE;
  }
  if (br == BODY_OK && r->expect && strcasecmp(r->expect, "100-continue") == 0 && !r->http10 &&
      (r->te || clen > 0)) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!write_all(fd, cont, sizeof(cont) - 1))
      goto out;
  }
  pos = r->head_len;
  if (br == BODY_OK && r->te)
    br = read_chunked(r, &pos, max);
  else if (br == BODY_OK && clen > 0)
    br = read_sized(r, &pos, clen, max);
  switch (br) {
  case BODY_OK:
    break;
  case BODY_TOO_LARGE:
  case BODY_HUGE:
    snprintf(detail, sizeof(detail), "body larger than %zu bytes", max);
    refuse(srv, r, r->method, r->target, MCIM_TOO_LARGE, detail, &start);
    goto out;
  case BODY_BAD:
    refuse(srv, r, r->method, r->target, MCIM_INVALID_ARGUMENT, "bad chunked body", &start);
    goto out;
  case BODY_CUT:
  default:
    if (r->timed_out)
      mcim_metric_inc(&mcim_m_http_connections_timed_out, NULL);
    goto out;
  }

  struct mcim_http_response resp = {0};
  const struct mcim_http_wire w = {
      .method = r->method,
      .path = r->target,
      .content_type = r->content_type,
      .authorization = r->authorization,
      .body = r->body,
      .body_len = r->len,
  };
  r->cpu0 = mcim_thread_cpu_ns(); /* timed from the dispatch, as the HTTPS server's routes */
  mcim_http_dispatch_(&srv->cfg, &w, &resp);
  send_answer(srv, r, r->method, r->target, &resp, &start);
  mcim_http_response_clear(&resp);
out:
  if (r->authorization)
    mcim_wipe(r->head, sizeof(r->head)); /* a bearer token was in it */
  free(r->body);
  free(r);
}

static void *serve(void *arg)
{
  mcim_thread_name("mcim-control");
  struct local_thread *t = arg;
  struct mcim_http_local *srv = t->srv;

  for (;;) {
    int fd = accept(srv->fd, NULL, NULL);
    if (fd >= 0)
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (fd < 0) {
      pthread_mutex_lock(&srv->lock);
      bool stop = srv->stopping;
      pthread_mutex_unlock(&srv->lock);
      if (stop || errno == EINVAL || errno == EBADF || errno == ENOTSOCK)
        break;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* out of descriptors or memory: try again in a while, not in a hot loop */
        mcim_log_warn("control socket: accept: %s", strerror(errno));
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
      }
      continue; /* EINTR, ECONNABORTED, EPROTO...: the next one */
    }
    struct timeval tv = {.tv_sec = IDLE_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    pthread_mutex_lock(&srv->lock);
    bool stop = srv->stopping;
    if (!stop)
      t->conn = fd;
    pthread_mutex_unlock(&srv->lock);
    if (stop) {
      close(fd);
      break;
    }
    serve_connection(srv, fd);
    pthread_mutex_lock(&srv->lock);
    t->conn = -1;
    pthread_mutex_unlock(&srv->lock);
    close(fd);
  }
  return NULL;
}

mcim_cause_t mcim_http_local_start(const struct mcim_http_server_cfg *cfg,
                                   struct mcim_http_local **out)
{
  struct sockaddr_un sun;
  struct mcim_http_local *srv;

  *out = NULL;
  if (!cfg || !cfg->unix_path)
    return MCIM_INVALID_ARGUMENT;
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  if (strlen(cfg->unix_path) >= sizeof(sun.sun_path)) {
    mcim_log_error("unix socket path too long: %s", cfg->unix_path);
    return MCIM_IO_ERROR;
  }
  memcpy(sun.sun_path, cfg->unix_path, strlen(cfg->unix_path) + 1);
  srv = calloc(1, sizeof(*srv));
  if (!srv)
    return MCIM_NO_MEMORY;
  srv->cfg = *cfg;
  if (!srv->cfg.threads)
    srv->cfg.threads = DEFAULT_THREADS;
  if (!srv->cfg.max_body)
    srv->cfg.max_body = 256 * 1024;
  pthread_mutex_init(&srv->lock, NULL);
  srv->threads = calloc(srv->cfg.threads, sizeof(*srv->threads));
  unlink(cfg->unix_path); /* a stale socket of a previous run */
  srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  mode_t old = umask(077);
  int bound = srv->fd >= 0 ? bind(srv->fd, (struct sockaddr *)&sun, sizeof(sun)) : -1;
  umask(old);
  if (!srv->threads || bound != 0 || listen(srv->fd, 64) != 0) {
    mcim_log_error("cannot listen on %s", cfg->unix_path);
    mcim_http_local_free(srv);
    return MCIM_IO_ERROR;
  }
  for (unsigned i = 0; i < srv->cfg.threads; i++) {
    struct local_thread *t = &srv->threads[i];
    t->srv = srv;
    t->conn = -1;
    if (mcim_thread_start(&t->id, MCIM_SMALL_STACK, serve, t) != 0) {
      mcim_log_error("cannot start the threads of %s", cfg->unix_path);
      mcim_http_local_free(srv);
      return MCIM_INTERNAL;
    }
    srv->started++;
  }
  *out = srv;
  return MCIM_OK;
}

void mcim_http_local_free(struct mcim_http_local *srv)
{
  if (!srv)
    return;
  pthread_mutex_lock(&srv->lock);
  srv->stopping = true;
  for (unsigned i = 0; i < srv->started; i++)
    if (srv->threads[i].conn >= 0)
      shutdown(srv->threads[i].conn, SHUT_RD);
  pthread_mutex_unlock(&srv->lock);
  if (srv->fd >= 0)
    shutdown(srv->fd, SHUT_RDWR); /* every accept() returns */
  for (unsigned i = 0; i < srv->started; i++)
    pthread_join(srv->threads[i].id, NULL);
  if (srv->fd >= 0)
    close(srv->fd);
  pthread_mutex_destroy(&srv->lock);
  free(srv->threads);
  free(srv);
}
