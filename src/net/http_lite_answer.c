/* The small HTTP client's exchange on one connection (http_lite.c): the request sent and the
 * answer read within the call's deadline, on TLS or the Unix socket: the head (status line,
 * Content-Length, Transfer-Encoding, Connection), 1xx answers skipped, the body by its
 * length, chunked or up to the close, at most MAX_ANSWER bytes. Apart from http_lite.c: this
 * parses what a peer sends (tests/fuzz/fuzz_http_answer.c feeds it). */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "net/http_lite_priv.h"
#include "net/http_priv.h"

/* ---- I/O on the connection, within the deadline ---- */

static bool send_all(struct call *k, const char *p, size_t n)
{
  struct lite_conn *c = k->c;
  while (n > 0) {
    if (c->ssl) {
      ERR_clear_error();
      int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
      if (w > 0) {
        p += w;
        n -= (size_t)w;
        continue;
      }
      int e = SSL_get_error(c->ssl, w);
      if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
          lite_wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
        continue;
    } else {
      ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        p += w;
        n -= (size_t)w;
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
          lite_wait_fd(k, c->fd, POLLOUT))
        continue;
    }
    if (!lite_timed_out(k))
      lite_fail(k, MCIM_PEER_UNREACHABLE, "send: %s",
                errno ? strerror(errno) : "connection closed");
    return false;
  }
  return true;
}

/* Read more of the answer into k->buf. 1: some bytes; 0: the peer closed; -1: failure (k
 * says why). */
static int fill(struct call *k)
{
  struct lite_conn *c = k->c;
  if (k->len == k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 16384;
    if (cap > MAX_ANSWER + HEAD_MAX + 1)
      cap = MAX_ANSWER + HEAD_MAX + 1;
    if (cap <= k->len) {
      lite_fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return -1;
    }
    char *nb = realloc(k->buf, cap + 1);
    if (!nb) {
      lite_fail(k, MCIM_NO_MEMORY, "out of memory");
      return -1;
    }
    k->buf = nb;
    k->cap = cap;
  }
  for (;;) {
    size_t room = k->cap - k->len;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, k->buf + k->len, room > INT32_MAX ? INT32_MAX : (int)room);
      if (r > 0) {
        k->len += (size_t)r;
        return 1;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (lite_wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
          continue;
        lite_timed_out(k);
        return -1;
      }
      if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return 0; /* closed without close_notify: the end of the answer if it has none */
      char why[160];
      lite_fail(k, MCIM_PEER_UNREACHABLE, "receive: %s", lite_ssl_reason(why, sizeof(why)));
      return -1;
    }
    ssize_t r = recv(c->fd, k->buf + k->len, room, 0);
    if (r > 0) {
      k->len += (size_t)r;
      return 1;
    }
    if (r == 0)
      return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (lite_wait_fd(k, c->fd, POLLIN))
        continue;
      lite_timed_out(k);
      return -1;
    }
    if (errno == ECONNRESET)
      return 0;
    lite_fail(k, MCIM_PEER_UNREACHABLE, "receive: %s", strerror(errno));
    return -1;
  }
}

static bool parse_head(char *head, struct answer_head *h)
{
  memset(h, 0, sizeof(*h));
  char *save = NULL;
  char *line = strtok_r(head, "\n", &save);
  if (!line)
    return false;
  line[strcspn(line, "\r")] = '\0';
  if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
    return false;
  h->http10 = line[7] == '0';
  char *end = NULL;
  long st = strtol(line + 9, &end, 10);
  if (end != line + 12 || st < 100 || st > 999 || (*end && *end != ' '))
    return false;
  h->status = (int)st;
  h->close = h->http10;
  while ((line = strtok_r(NULL, "\n", &save))) {
    line[strcspn(line, "\r")] = '\0';
    char *colon = strchr(line, ':');
    if (!colon)
      continue;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
      v[--vl] = '\0';
    if (strcasecmp(line, "Content-Length") == 0) {
      char *e = NULL;
      errno = 0;
      unsigned long long n = strtoull(v, &e, 10);
      if (e == v || *e || errno || v[0] == '-' || (h->has_length && n != h->length))
        return false;
      h->length = n;
      h->has_length = true;
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
      h->chunked = strcasecmp(v, "chunked") == 0;
      if (!h->chunked)
        return false;
    } else if (strcasecmp(line, "WWW-Authenticate") == 0 && !h->bearer) { /* the first */
      mcim_http_bearer_parse_(v, &h->bearer, h->bearer_error, sizeof(h->bearer_error));
      if (!h->challenge[0])
        snprintf(h->challenge, sizeof(h->challenge), "%s", v);
    } else if (strcasecmp(line, "Connection") == 0) {
      if (strcasecmp(v, "close") == 0)
        h->close = true;
      else if (strcasecmp(v, "keep-alive") == 0)
        h->close = false;
    }
  }
  return true;
}

/* Where the head ends in k->buf from k->pos (after the blank line), 0 if not yet. */
static size_t head_end(const struct call *k)
{
  for (size_t i = k->pos; i < k->len; i++) {
    if (k->buf[i] != '\n')
      continue;
    size_t j = i + 1;
    if (j < k->len && k->buf[j] == '\r')
      j++;
    if (j < k->len && k->buf[j] == '\n')
      return j + 1;
  }
  return 0;
}

/* Read until k->len >= want (bytes from the start of k->buf). false: closed or failed. */
static bool need(struct call *k, size_t want)
{
  while (k->len < want)
    if (fill(k) <= 0)
      return false;
  return true;
}

/* Decode a chunked body in place from k->pos; its length in *blen, starting at k->pos. */
static bool read_chunked(struct call *k, size_t *blen)
{
  size_t out = k->pos; /* where the decoded data goes */
  size_t in = out;     /* where the next chunk line is */
  for (;;) {
    /* the size line */
    size_t nl;
    for (;;) {
      char *p = k->len > in ? memchr(k->buf + in, '\n', k->len - in) : NULL;
      if (p) {
        nl = (size_t)(p - k->buf);
        break;
      }
      if (k->len - in > 1024 || fill(k) <= 0) {
        if (!k->cause)
          lite_fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
        return false;
      }
    }
    char *e = NULL;
    errno = 0;
    unsigned long long n = strtoull(k->buf + in, &e, 16);
    if (e == k->buf + in || errno || n > MAX_ANSWER) {
      lite_fail(k, n > MAX_ANSWER ? MCIM_TOO_LARGE : MCIM_PEER_UNREACHABLE, "bad chunk size");
      return false;
    }
    in = nl + 1;
    if (n == 0)
      break;
    if (out - k->pos + n > MAX_ANSWER) {
      lite_fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return false;
    }
    if (!need(k, in + n + 1)) {
      if (!k->cause)
        lite_fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
      return false;
    }
    memmove(k->buf + out, k->buf + in, n);
    out += n;
    in += n;
    /* CRLF (or LF) after the data */
    if (k->buf[in] == '\r') {
      if (!need(k, in + 2)) {
        if (!k->cause)
          lite_fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
        return false;
      }
      in++;
    }
    if (k->buf[in] != '\n') {
      lite_fail(k, MCIM_PEER_UNREACHABLE, "bad chunk");
      return false;
    }
    in++;
  }
  /* trailers up to the blank line */
  for (;;) {
    char *p = k->len > in ? memchr(k->buf + in, '\n', k->len - in) : NULL;
    if (!p) {
      if (k->len - in > 8192 || fill(k) <= 0) {
        if (!k->cause)
          lite_fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
        return false;
      }
      continue;
    }
    size_t ll = (size_t)(p - (k->buf + in));
    bool blank = ll == 0 || (ll == 1 && k->buf[in] == '\r');
    in = (size_t)(p - k->buf) + 1;
    if (blank)
      break;
  }
  *blen = out - k->pos;
  return true;
}

/* One exchange on k->c. false with k->cause = 0 and *fresh_fail: the kept connection was
 * found closed before any byte of the answer (worth one more try on a new connection). */
bool lite_exchange(struct call *k, const char *req, size_t reqlen, const char *method,
                   struct answer_head *h, size_t *body_at, size_t *body_len, bool *retry)
{
  *retry = false;
  if (!send_all(k, req, reqlen)) {
    *retry = k->cause == MCIM_PEER_UNREACHABLE;
    return false;
  }
  for (;;) { /* 1xx answers come before the real one */
    size_t he;
    while (!(he = head_end(k))) {
      if (k->len - k->pos > HEAD_MAX) {
        lite_fail(k, MCIM_PEER_UNREACHABLE, "answer head larger than %d bytes", HEAD_MAX);
        return false;
      }
      int r = fill(k);
      if (r < 0)
        return false;
      if (r == 0) {
        *retry = k->len == 0;
        lite_fail(k, MCIM_PEER_UNREACHABLE, "%s", k->len ? "answer cut short" : "empty answer");
        return false;
      }
    }
    char save = k->buf[he - 1];
    k->buf[he - 1] = '\0';
    bool ok = parse_head(k->buf + k->pos, h);
    k->buf[he - 1] = save;
    if (!ok) {
      lite_fail(k, MCIM_PEER_UNREACHABLE, "not an HTTP/1.x answer");
      return false;
    }
    k->pos = he;
    if (h->status >= 200)
      break;
  }
  *body_at = k->pos;
  if (strcmp(method, "HEAD") == 0 || h->status == 204 || h->status == 304) {
    *body_len = 0;
    return true;
  }
  if (h->chunked)
    return read_chunked(k, body_len);
  if (h->has_length) {
    if (h->length > MAX_ANSWER) {
      lite_fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return false;
    }
    if (!need(k, k->pos + h->length)) {
      if (!k->cause)
        lite_fail(k, MCIM_PEER_UNREACHABLE, "answer cut short");
      return false;
    }
    *body_len = h->length;
    return true;
  }
  /* up to the close */
  h->close = true;
  for (;;) {
    if (k->len - k->pos > MAX_ANSWER) {
      lite_fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return false;
    }
    int r = fill(k);
    if (r < 0)
      return false;
    if (r == 0)
      break;
  }
  *body_len = k->len - k->pos;
  return true;
}
