/* The small HTTP client (include/mcim/http.h, mcim_http_lite_*): the contract of the
 * libcurl client (http_client.c) on OpenSSL alone, for the device agent. Debian's libcurl
 * brings Kerberos, LDAP (and with it GnuTLS), SASL, SSH, RTMP, nghttp2, brotli, zstd, psl and
 * idn2, all loaded and relocated in every process that links it: about 4 MiB resident in the
 * agent, which needs HTTP/1.1 over TLS to a handful of peers and nothing else
 * (docs/device.md, "Footprint").
 *
 * What it does, as the curl client did:
 *   - https:// URLs: TLS 1.2 with ECDHE and an AEAD suite, or TLS 1.3 (the servers' policy,
 *     http_server.c); the server's certificate must chain to `ca_file` (pinned: no system
 *     store; a CA in the file is a trust anchor even when not self-signed, as curl's
 *     partial-chain default) and name the host (DNS name or IP address); SNI for names; a
 *     client certificate when `cert_file`/`key_file` are given; SSLKEYLOGFILE honoured (the
 *     NSS key log, appended);
 *   - unix_path: plain HTTP on that socket (URLs http://localhost/...);
 *   - `timeout_ms` bounds the whole call (resolution, connection, handshake, request,
 *     answer), which waits in poll() on its socket only;
 *   - connections are kept alive and reused (up to LITE_CONNS, by host and port); a reused
 *     connection that turns out closed before any byte of the answer is replaced by a new one
 *     once (the request is sent again: every request of mcim is idempotent by txn and step);
 *   - answers up to 1 MiB (MCIM_TOO_LARGE beyond), Content-Length, chunked or up to the close;
 *   - the result and its cause as the curl client: mcim_http_result_from_answer_ (problem.c).
 * Host names are resolved with getaddrinfo(), which the deadline cannot interrupt (the lab
 * and the examples use addresses).
 *
 * This file: the client object, a call (its deadline and its failure), the URL and the
 * request. Connections and TLS are http_lite_conn.c's, the answer read off a connection
 * http_lite_answer.c's; what the three share is in http_lite_priv.h. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mcim/http.h"
#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "net/http_lite_priv.h"
#include "net/http_priv.h"

static uint64_t now_ms(void) { return mcim_monotonic_ns() / 1000000u; }

/* ---- the client ---- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

mcim_cause_t mcim_http_lite_new(const struct mcim_http_client_cfg *cfg, struct mcim_http_lite **out)
{
  *out = NULL;
  if (!cfg || (!cfg->ca_file && !cfg->unix_path))
    return MCIM_INVALID_ARGUMENT;
  struct mcim_http_lite *cli = calloc(1, sizeof(*cli));
  if (!cli)
    return MCIM_NO_MEMORY;
  cli->cfg = *cfg;
  cli->stop_fd = -1;
  cli->unix_path = dup_or_null(cfg->unix_path);
  cli->ca_file = dup_or_null(cfg->ca_file);
  cli->cert_file = dup_or_null(cfg->cert_file);
  cli->key_file = dup_or_null(cfg->key_file);
  for (size_t i = 0; i < LITE_CONNS; i++)
    cli->conns[i].fd = -1;
  cli->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (cli->stop_fd < 0) {
    mcim_http_lite_free(cli);
    return MCIM_IO_ERROR;
  }
  if ((cfg->ca_file && !cli->ca_file) || (cfg->unix_path && !cli->unix_path) ||
      (cfg->cert_file && !cli->cert_file) || (cfg->key_file && !cli->key_file)) {
    mcim_http_lite_free(cli);
    return MCIM_NO_MEMORY;
  }
  if (cli->cfg.timeout_ms <= 0)
    cli->cfg.timeout_ms = 10000;
  *out = cli;
  return MCIM_OK;
}

void mcim_http_lite_close_connections(struct mcim_http_lite *cli)
{
  for (size_t i = 0; cli && i < LITE_CONNS; i++)
    lite_conn_close(&cli->conns[i]);
}

void mcim_http_lite_free(struct mcim_http_lite *cli)
{
  if (!cli)
    return;
  for (size_t i = 0; i < LITE_CONNS; i++)
    lite_conn_close(&cli->conns[i]);
  SSL_CTX_free(cli->ctx);
  if (cli->stop_fd >= 0)
    close(cli->stop_fd);
  free(cli->unix_path);
  free(cli->ca_file);
  free(cli->cert_file);
  free(cli->key_file);
  free(cli);
}

void lite_fail(struct call *k, mcim_cause_t cause, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->why, sizeof(k->why), fmt, ap);
  va_end(ap);
  k->cause = cause;
}

/* Wait until `fd` is ready for `events`, the deadline, or the client's interruption: 1 ready,
 * 0 timed out or interrupted (the call's deadline is then now). */
int lite_wait_fd(struct call *k, int fd, short events)
{
  for (;;) {
    uint64_t now = now_ms();
    if (now >= k->deadline_ms)
      return 0;
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = k->cli->stop_fd, .events = POLLIN}};
    uint64_t left = k->deadline_ms - now;
    int r = poll(p, 2, left > 60000 ? 60000 : (int)left);
    if (r > 0 && (p[1].revents & POLLIN)) {
      k->deadline_ms = 0;
      return 0;
    }
    if (r > 0)
      return 1;
    if (r < 0 && errno != EINTR)
      return 1; /* let the read or write report it */
  }
}

bool lite_timed_out(struct call *k)
{
  if (now_ms() < k->deadline_ms)
    return false;
  if (atomic_load(&k->cli->interrupted))
    lite_fail(k, MCIM_TIMEOUT, "interrupted: the client stops");
  else
    lite_fail(k, MCIM_TIMEOUT, "timed out after %ld ms", k->cli->cfg.timeout_ms);
  return true;
}

void mcim_http_lite_interrupt(struct mcim_http_lite *cli)
{
  if (!cli)
    return;
  atomic_store(&cli->interrupted, true);
  uint64_t one = 1;
  ssize_t w = write(cli->stop_fd, &one, sizeof(one)); /* stays readable: never read back */
  (void)w;
}

/* URL -> host, port, path. Only the scheme this client speaks. */
static bool parse_url(const struct mcim_http_lite *cli, const char *url, char *host, size_t hostlen,
                      char *port, size_t portlen, const char **path)
{
  const char *scheme = cli->unix_path ? "http://" : "https://";
  size_t sl = strlen(scheme);
  if (strncasecmp(url, scheme, sl) != 0)
    return false;
  const char *h = url + sl;
  const char *end = h + strcspn(h, "/?#");
  const char *hp_end = end;
  const char *colon = NULL;
  if (*h == '[') { /* [IPv6]:port */
    const char *rb = memchr(h, ']', (size_t)(end - h));
    if (!rb)
      return false;
    if ((size_t)(rb - h - 1) >= hostlen)
      return false;
    memcpy(host, h + 1, (size_t)(rb - h - 1));
    host[rb - h - 1] = '\0';
    colon = rb[1] == ':' ? rb + 1 : NULL;
    if (!colon && rb + 1 != end)
      return false;
  } else {
    colon = memchr(h, ':', (size_t)(end - h));
    const char *he = colon ? colon : end;
    if (he == h || (size_t)(he - h) >= hostlen)
      return false;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
  }
  if (colon) {
    size_t n = (size_t)(hp_end - colon - 1);
    if (n == 0 || n >= portlen || strspn(colon + 1, "0123456789") < n)
      return false;
    memcpy(port, colon + 1, n);
    port[n] = '\0';
  } else {
    snprintf(port, portlen, "%s", cli->unix_path ? "80" : "443");
  }
  *path = *end == '/' ? end : "/";
  if (*end == '?')
    *path = end; /* "?query" with no path: sent as is after a slash below */
  return true;
}

void mcim_http_lite_prefer_wait(struct mcim_http_lite *cli, int seconds)
{
  if (cli)
    cli->prefer_wait_s = seconds > 0 && seconds <= 3600 ? seconds : 0;
}

mcim_cause_t mcim_http_lite_peer_cert(struct mcim_http_lite *cli, const char *peer, char **pem)
{
  struct lite_conn *best = NULL;
  size_t n = peer ? strlen(peer) : 0;
  if (!cli || !peer || !pem || n == 0)
    return MCIM_INVALID_ARGUMENT;
  *pem = NULL;
  /* a connection made for `peer` has the key "peer@host:port" (lite_conn_get) and was kept only
   * once its handshake verified the server as `peer` (peer_is) */
  for (size_t i = 0; i < LITE_CONNS; i++) {
    struct lite_conn *c = &cli->conns[i];
    if (c->key[0] && c->ssl && strncmp(c->key, peer, n) == 0 && c->key[n] == '@' &&
        (!best || c->used > best->used))
      best = c;
  }
  X509 *cert = best ? SSL_get0_peer_certificate(best->ssl) : NULL;
  return cert ? mcim_pki_cert_to_pem(cert, pem) : MCIM_NOT_FOUND;
}

mcim_cause_t mcim_http_lite_request(struct mcim_http_lite *cli, const char *method, const char *url,
                                    const json_t *body, const char *bearer,
                                    struct mcim_http_result *result)
{
  return mcim_http_lite_request_to(cli, NULL, method, url, body, bearer, result);
}

mcim_cause_t mcim_http_lite_request_to(struct mcim_http_lite *cli, const char *peer,
                                       const char *method, const char *url, const json_t *body,
                                       const char *bearer, struct mcim_http_result *result)
{
  struct call k = {.cli = cli, .peer = peer};
  char host[256], port[8];
  const char *path = NULL;
  char *text = NULL, *req = NULL;
  size_t reqlen = 0;

  int wait_s = cli->prefer_wait_s; /* one request only */
  cli->prefer_wait_s = 0;
  memset(result, 0, sizeof(*result));
  result->cause = MCIM_INTERNAL;
  k.deadline_ms = now_ms() + (uint64_t)cli->cfg.timeout_ms + (uint64_t)wait_s * 1000u;
  if (!parse_url(cli, url, host, sizeof(host), port, sizeof(port), &path)) {
    lite_fail(&k, MCIM_INVALID_ARGUMENT, "not a URL this client takes");
    goto out;
  }
  if (bearer && strlen(bearer) + sizeof("Authorization: Bearer ") > 4096) {
    lite_fail(&k, MCIM_TOO_LARGE, "bearer token too long");
    goto out;
  }
  if (body && !(text = mcim_json_dumps(body))) {
    lite_fail(&k, MCIM_NO_MEMORY, "out of memory");
    goto out;
  }
  size_t tlen = text ? strlen(text) : 0;
  size_t cap =
      strlen(method) + strlen(path) + strlen(host) + (bearer ? strlen(bearer) : 0) + tlen + 256;
  req = malloc(cap);
  if (!req) {
    lite_fail(&k, MCIM_NO_MEMORY, "out of memory");
    goto out;
  }
  bool v6 = strchr(host, ':') != NULL;
  bool default_port = strcmp(port, cli->unix_path ? "80" : "443") == 0;
  int n = snprintf(req, cap,
                   "%s %s%s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n"
                   "Accept: application/json, application/problem+json\r\n",
                   method, *path == '?' ? "/" : "", path, v6 ? "[" : "", host, v6 ? "]" : "",
                   default_port ? "" : ":", default_port ? "" : port);
  if (bearer)
    n += snprintf(req + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", bearer);
  if (wait_s > 0) /* RFC 7240: the server may hold a "not yet" answer that long */
    n += snprintf(req + n, cap - (size_t)n, "Prefer: wait=%d\r\n", wait_s);
  if (text)
    n += snprintf(req + n, cap - (size_t)n,
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n", tlen);
  else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0)
    n += snprintf(req + n, cap - (size_t)n, "Content-Length: 0\r\n");
  n += snprintf(req + n, cap - (size_t)n, "\r\n");
  if (text) {
    /* the body, counted by Content-Length: no terminator needed (nor sent) */
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
    memcpy(req + n, text, tlen);
    n += (int)tlen;
  }
  reqlen = (size_t)n;

  struct answer_head h;
  size_t body_at = 0, body_len = 0;
  bool ok = false;
  for (int attempt = 0; attempt < 2 && !ok; attempt++) {
    bool reused = false, retry = false;
    k.cause = MCIM_OK;
    k.why[0] = '\0';
    k.len = k.pos = 0;
    k.c = lite_conn_get(&k, host, port, &reused);
    if (!k.c)
      break;
    ok = lite_exchange(&k, req, (size_t)n, method, &h, &body_at, &body_len, &retry);
    if (!ok || h.close)
      lite_conn_close(k.c);
    if (!ok && !(reused && retry))
      break; /* a new connection that failed, or a failure past the first byte */
  }
  if (!ok)
    goto out;
  mcim_http_result_from_answer_(result, h.status, k.buf ? k.buf + body_at : NULL, body_len, url);
  result->bearer_challenge = h.bearer;
  snprintf(result->bearer_error, sizeof(result->bearer_error), "%s", h.bearer_error);
  snprintf(result->challenge, sizeof(result->challenge), "%s", h.challenge);
out:
  if (!result->status && k.cause != MCIM_OK) {
    result->cause = k.cause;
    /* the detail is for people: a long URL or message may be cut */
    snprintf(result->detail, sizeof(result->detail), "%.120s: %.120s", url, k.why);
  }
  mcim_log_event(MCIM_LOG_DEBUG, NULL, 0, result->cause, "%s %s -> %ld", method, url,
                 result->status);
  if (req && bearer)
    mcim_wipe(req, reqlen); /* the token was in it */
  free(req);
  free(text);
  free(k.buf);
  return result->cause;
}
