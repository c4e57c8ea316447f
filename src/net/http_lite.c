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
 * and the examples use addresses). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "net/http_priv.h"

#define MAX_ANSWER (1u << 20) /* as the curl client */
#define HEAD_MAX 65536
#define LITE_CONNS 8

/* The servers' policy (http_server.c), in OpenSSL's names (the curl client's lists). */
#define TLS12_CIPHERS                                                                      \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"                           \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"  \
  "ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_CIPHERS "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

struct lite_conn {
  char key[400]; /* "peer@host:port" (or "host:port" for no pinned name); "" = free slot */
  int fd;
  SSL *ssl; /* NULL: plain HTTP (Unix socket) */
  uint64_t used; /* LRU stamp */
};

struct mcim_http_lite {
  struct mcim_http_client_cfg cfg;
  char *unix_path, *ca_file, *cert_file, *key_file;
  SSL_CTX *ctx; /* made at the first https call */
  struct lite_conn conns[LITE_CONNS];
  uint64_t tick;
  int prefer_wait_s; /* the next request's Prefer: wait (mcim_http_lite_prefer_wait) */
  int stop_fd;        /* eventfd, readable once mcim_http_lite_interrupt was called */
  atomic_bool interrupted;
};

/* One call in progress. */
struct call {
  struct mcim_http_lite *cli;
  struct lite_conn *c;
  const char *peer; /* the server certificate's CN must be this (NULL: any the CA signed) */
  uint64_t deadline_ms; /* monotonic */
  char *buf;            /* what was read of the answer */
  size_t len, cap, pos;
  mcim_cause_t cause;   /* of a failure */
  char why[200];        /* for people */
};

static uint64_t now_ms(void)
{
  return mcim_monotonic_ns() / 1000000u;
}

/* ---- SSLKEYLOGFILE ---- */

static pthread_once_t keylog_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t keylog_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *keylog_file;

static void keylog_open(void)
{
  const char *path = getenv("SSLKEYLOGFILE");
  if (path && *path) {
    keylog_file = fopen(path, "a");
    if (keylog_file)
      setvbuf(keylog_file, NULL, _IOLBF, 4096);
  }
}

static void keylog_line(const SSL *ssl, const char *line)
{
  (void)ssl;
  pthread_mutex_lock(&keylog_lock);
  if (keylog_file)
    fprintf(keylog_file, "%s\n", line);
  pthread_mutex_unlock(&keylog_lock);
}

/* ---- a socket BIO that never raises SIGPIPE (send with MSG_NOSIGNAL) ---- */

static int nbio_write(BIO *b, const char *in, int n)
{
  int fd = (int)(intptr_t)BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t w = send(fd, in, (size_t)n, MSG_NOSIGNAL);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_write(b);
  return (int)w;
}

static int nbio_read(BIO *b, char *out, int n)
{
  int fd = (int)(intptr_t)BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t r = recv(fd, out, (size_t)n, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_read(b);
  return (int)r;
}

static long nbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int nbio_create(BIO *b)
{
  BIO_set_init(b, 1);
  return 1;
}

static pthread_once_t nbio_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *nbio_method;

static void nbio_init(void)
{
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mcim socket");
  if (m && BIO_meth_set_write(m, nbio_write) && BIO_meth_set_read(m, nbio_read) &&
      BIO_meth_set_ctrl(m, nbio_ctrl) && BIO_meth_set_create(m, nbio_create))
    nbio_method = m;
  else
    BIO_meth_free(m);
}

/* ---- the client ---- */

static char *dup_or_null(const char *s)
{
  return s ? strdup(s) : NULL;
}

mcim_cause_t mcim_http_lite_new(const struct mcim_http_client_cfg *cfg,
                                struct mcim_http_lite **out)
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

static void conn_close(struct lite_conn *c)
{
  if (c->ssl) {
    /* no close_notify: the peer learns of the close from the socket, as with curl's
     * connection cache when it shrinks; nothing waits for an answer */
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->key[0] = '\0';
}

void mcim_http_lite_close_connections(struct mcim_http_lite *cli)
{
  for (size_t i = 0; cli && i < LITE_CONNS; i++)
    conn_close(&cli->conns[i]);
}

void mcim_http_lite_free(struct mcim_http_lite *cli)
{
  if (!cli)
    return;
  for (size_t i = 0; i < LITE_CONNS; i++)
    conn_close(&cli->conns[i]);
  SSL_CTX_free(cli->ctx);
  if (cli->stop_fd >= 0)
    close(cli->stop_fd);
  free(cli->unix_path);
  free(cli->ca_file);
  free(cli->cert_file);
  free(cli->key_file);
  free(cli);
}

static void fail(struct call *k, mcim_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct call *k, mcim_cause_t cause, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->why, sizeof(k->why), fmt, ap);
  va_end(ap);
  k->cause = cause;
}

/* The TLS failures a peer or a network causes, in words: the device agent does not load
 * OpenSSL's error strings (mcim_device_process_init: about 0.3 MiB resident). */
static const char *tls_reason_text(unsigned long e)
{
  if (ERR_GET_LIB(e) != ERR_LIB_SSL)
    return NULL;
  switch (ERR_GET_REASON(e)) {
  case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE: return "the server refused the handshake";
  case SSL_R_NO_SHARED_CIPHER: return "no shared cipher";
  case SSL_R_NO_CIPHERS_AVAILABLE: return "no cipher available";
  case SSL_R_NO_PROTOCOLS_AVAILABLE: return "no protocol version available";
  case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION: return "the server refused the protocol version";
  case SSL_R_UNSUPPORTED_PROTOCOL: return "unsupported protocol version";
  case SSL_R_WRONG_VERSION_NUMBER: return "wrong version number (not TLS?)";
  case SSL_R_PACKET_LENGTH_TOO_LONG: return "record too long (not TLS?)";
  case SSL_R_TLSV1_ALERT_UNKNOWN_CA: return "the server does not know our certificate's CA";
  case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE: return "the server refused our certificate";
  case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN: return "the server refused our certificate (unknown)";
  case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED: return "the server requires a client certificate";
  case SSL_R_TLSV1_ALERT_ACCESS_DENIED: return "the server denied access";
  case SSL_R_TLSV1_ALERT_DECRYPT_ERROR: return "the server could not verify the handshake";
  case SSL_R_TLSV1_ALERT_INTERNAL_ERROR: return "internal error at the server";
  case SSL_R_UNEXPECTED_EOF_WHILE_READING: return "connection closed during the exchange";
  case SSL_R_CERTIFICATE_VERIFY_FAILED: return "certificate verify failed";
  default: return NULL;
  }
}

/* The last OpenSSL error, for people: OpenSSL's string when it has loaded them, the words
 * above, else the code (`openssl errstr CODE` says what it is). */
static const char *ssl_reason(char *buf, size_t len)
{
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (!r && e)
    r = tls_reason_text(e);
  if (r)
    snprintf(buf, len, "%s", r);
  else if (e)
    snprintf(buf, len, "OpenSSL error %08lX", e);
  else
    snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
  return buf;
}

/* Wait until `fd` is ready for `events`, the deadline, or the client's interruption: 1 ready,
 * 0 timed out or interrupted (the call's deadline is then now). */
static int wait_fd(struct call *k, int fd, short events)
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

static bool timed_out(struct call *k)
{
  if (now_ms() < k->deadline_ms)
    return false;
  if (atomic_load(&k->cli->interrupted))
    fail(k, MCIM_TIMEOUT, "interrupted: the client stops");
  else
    fail(k, MCIM_TIMEOUT, "timed out after %ld ms", k->cli->cfg.timeout_ms);
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

static SSL_CTX *make_ctx(struct mcim_http_lite *cli, struct call *k)
{
  char why[160];
  pthread_once(&keylog_once, keylog_open);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
      !SSL_CTX_set_ciphersuites(ctx, TLS13_CIPHERS)) {
    fail(k, MCIM_INTERNAL, "TLS set-up: %s", ssl_reason(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (SSL_CTX_load_verify_locations(ctx, cli->ca_file, NULL) != 1) {
    fail(k, MCIM_PEER_UNREACHABLE, "cannot use the CA file %.100s: %s", cli->ca_file,
         ssl_reason(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return NULL;
  }
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx),
                              X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_TRUSTED_FIRST);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (cli->cert_file && cli->key_file &&
      (SSL_CTX_use_certificate_chain_file(ctx, cli->cert_file) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx, cli->key_file, SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(ctx) != 1)) {
    fail(k, MCIM_PEER_NOT_AUTHENTICATED, "client certificate %.100s: %s", cli->cert_file,
         ssl_reason(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return NULL;
  }
  /* an idle kept-alive connection holds no 16 KiB read and write buffers */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
  if (keylog_file)
    SSL_CTX_set_keylog_callback(ctx, keylog_line);
  return ctx;
}

/* URL -> host, port, path. Only the scheme this client speaks. */
static bool parse_url(const struct mcim_http_lite *cli, const char *url, char *host,
                      size_t hostlen, char *port, size_t portlen, const char **path)
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

static bool is_ip_literal(const char *host)
{
  struct in6_addr a6;
  struct in_addr a4;
  return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

/* A connected, non-blocking socket to host:port (or the Unix socket), or -1 (k says why). */
static int open_socket(struct call *k, const char *host, const char *port)
{
  struct mcim_http_lite *cli = k->cli;
  int fd = -1;

  if (cli->unix_path) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(cli->unix_path) >= sizeof(sun.sun_path)) {
      fail(k, MCIM_PEER_UNREACHABLE, "socket path too long");
      return -1;
    }
    memcpy(sun.sun_path, cli->unix_path, strlen(cli->unix_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
      fail(k, MCIM_PEER_UNREACHABLE, "connect to %.100s: %s", cli->unix_path, strerror(errno));
      if (fd >= 0)
        close(fd);
      return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }

  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV}, *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    fail(k, MCIM_PEER_UNREACHABLE, "cannot resolve %.100s: %s", host, gai_strerror(gai));
    return -1;
  }
  int err = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    if (errno == EINPROGRESS) {
      if (!wait_fd(k, fd, POLLOUT)) {
        close(fd);
        fd = -1;
        freeaddrinfo(res);
        timed_out(k);
        if (!k->cause)
          fail(k, MCIM_TIMEOUT, "timed out after %ld ms", cli->cfg.timeout_ms);
        return -1;
      }
      socklen_t sl = sizeof(err);
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0)
        break;
    } else {
      err = errno;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    fail(k, MCIM_PEER_UNREACHABLE, "connect to %.100s port %s: %s", host, port,
         strerror(err ? err : ECONNREFUSED));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* The server is the party the caller means to reach: every role's certificate comes from the
 * same operators' CA and, in a lab, names the same loopback address, so the host check alone
 * would let one operator's server answer for another's (a hostile SHO on the device's path
 * posing as the SHO the DRF named). The certificate's CN is the role's name. */
static bool peer_is(struct call *k, struct lite_conn *c)
{
  char *cn = NULL;
  if (!k->peer)
    return true;
  X509 *cert = SSL_get1_peer_certificate(c->ssl);
  mcim_cause_t rc = cert ? mcim_pki_cert_name(cert, &cn) : MCIM_PEER_NOT_AUTHENTICATED;
  X509_free(cert);
  bool same = rc == MCIM_OK && strcmp(cn, k->peer) == 0;
  if (!same)
    fail(k, MCIM_PEER_NOT_AUTHENTICATED, "server certificate: it is %.64s's, not %.64s's",
         cn ? cn : "nobody", k->peer);
  free(cn);
  return same;
}

/* The TLS handshake on c->fd, verifying the server as `host` (and as `k->peer`). */
static bool handshake(struct call *k, struct lite_conn *c, const char *host)
{
  char why[160];
  struct mcim_http_lite *cli = k->cli;
  if (!cli->ctx && !(cli->ctx = make_ctx(cli, k)))
    return false;
  pthread_once(&nbio_once, nbio_init);
  BIO *bio = nbio_method ? BIO_new(nbio_method) : NULL;
  c->ssl = bio ? SSL_new(cli->ctx) : NULL;
  if (!c->ssl) {
    BIO_free(bio);
    fail(k, MCIM_NO_MEMORY, "TLS: out of memory");
    return false;
  }
  BIO_set_data(bio, (void *)(intptr_t)c->fd);
  SSL_set_bio(c->ssl, bio, bio);
  bool ip = is_ip_literal(host);
  if (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1
         : (SSL_set1_host(c->ssl, host) != 1 || SSL_set_tlsext_host_name(c->ssl, host) != 1)) {
    fail(k, MCIM_INVALID_ARGUMENT, "TLS: bad host name %.100s", host);
    return false;
  }
  ERR_clear_error();
  for (;;) {
    int r = SSL_connect(c->ssl);
    if (r == 1) {
      mcim_op_count(SSL_session_reused(c->ssl) ? MCIM_OP_TLS_CLIENT_RESUMED
                                                : MCIM_OP_TLS_CLIENT_FULL);
      return peer_is(k, c);
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT)) {
        timed_out(k);
        return false;
      }
      continue;
    }
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK)
      fail(k, MCIM_PEER_NOT_AUTHENTICATED, "server certificate: %s",
           X509_verify_cert_error_string(v));
    else
      fail(k, MCIM_PEER_UNREACHABLE, "TLS handshake: %s", ssl_reason(why, sizeof(why)));
    return false;
  }
}

/* A kept connection is usable if the server has not closed it (nothing to read while we
 * have asked nothing: a close, an alert or garbage). */
static bool conn_alive(struct lite_conn *c)
{
  if (c->ssl && SSL_pending(c->ssl) > 0)
    return false;
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  return poll(&p, 1, 0) == 0;
}

static struct lite_conn *conn_get(struct call *k, const char *host, const char *port,
                                  bool *reused)
{
  struct mcim_http_lite *cli = k->cli;
  char key[400];
  /* a connection verified for one name is never used for another */
  snprintf(key, sizeof(key), "%s%s%s:%s", k->peer ? k->peer : "", k->peer ? "@" : "", host,
           port);
  *reused = false;
  struct lite_conn *c = NULL, *lru = &cli->conns[0];
  for (size_t i = 0; i < LITE_CONNS; i++) {
    struct lite_conn *x = &cli->conns[i];
    if (x->key[0] && strcmp(x->key, key) == 0) {
      if (conn_alive(x)) {
        x->used = ++cli->tick;
        *reused = true;
        return x;
      }
      conn_close(x);
    }
    if (!x->key[0] && (!c || c->key[0]))
      c = x;
    if (x->used < lru->used)
      lru = x;
  }
  if (!c) {
    c = lru;
    conn_close(c);
  }
  c->fd = open_socket(k, host, port);
  if (c->fd < 0)
    return NULL;
  if (!cli->unix_path && !handshake(k, c, host)) {
    conn_close(c);
    return NULL;
  }
  snprintf(c->key, sizeof(c->key), "%s", key);
  c->used = ++cli->tick;
  return c;
}

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
          wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
        continue;
    } else {
      ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        p += w;
        n -= (size_t)w;
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
          wait_fd(k, c->fd, POLLOUT))
        continue;
    }
    if (!timed_out(k))
      fail(k, MCIM_PEER_UNREACHABLE, "send: %s", errno ? strerror(errno) : "connection closed");
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
      fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return -1;
    }
    char *nb = realloc(k->buf, cap + 1);
    if (!nb) {
      fail(k, MCIM_NO_MEMORY, "out of memory");
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
        if (wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
          continue;
        timed_out(k);
        return -1;
      }
      if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return 0; /* closed without close_notify: the end of the answer if it has none */
      char why[160];
      fail(k, MCIM_PEER_UNREACHABLE, "receive: %s", ssl_reason(why, sizeof(why)));
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
      if (wait_fd(k, c->fd, POLLIN))
        continue;
      timed_out(k);
      return -1;
    }
    if (errno == ECONNRESET)
      return 0;
    fail(k, MCIM_PEER_UNREACHABLE, "receive: %s", strerror(errno));
    return -1;
  }
}

/* The answer's head: status, and what says where its body ends. */
struct answer_head {
  int status;
  bool http10, close, chunked, has_length;
  unsigned long long length;
};

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
  size_t in = out;      /* where the next chunk line is */
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
          fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
        return false;
      }
    }
    char *e = NULL;
    errno = 0;
    unsigned long long n = strtoull(k->buf + in, &e, 16);
    if (e == k->buf + in || errno || n > MAX_ANSWER) {
      fail(k, n > MAX_ANSWER ? MCIM_TOO_LARGE : MCIM_PEER_UNREACHABLE, "bad chunk size");
      return false;
    }
    in = nl + 1;
    if (n == 0)
      break;
    if (out - k->pos + n > MAX_ANSWER) {
      fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return false;
    }
    if (!need(k, in + n + 1)) {
      if (!k->cause)
        fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
      return false;
    }
    memmove(k->buf + out, k->buf + in, n);
    out += n;
    in += n;
    /* CRLF (or LF) after the data */
    if (k->buf[in] == '\r') {
      if (!need(k, in + 2)) {
        if (!k->cause)
          fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
        return false;
      }
      in++;
    }
    if (k->buf[in] != '\n') {
      fail(k, MCIM_PEER_UNREACHABLE, "bad chunk");
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
          fail(k, MCIM_PEER_UNREACHABLE, "chunked answer cut short");
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
static bool exchange(struct call *k, const char *req, size_t reqlen, const char *method,
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
        fail(k, MCIM_PEER_UNREACHABLE, "answer head larger than %d bytes", HEAD_MAX);
        return false;
      }
      int r = fill(k);
      if (r < 0)
        return false;
      if (r == 0) {
        *retry = k->len == 0;
        fail(k, MCIM_PEER_UNREACHABLE, "%s", k->len ? "answer cut short" : "empty answer");
        return false;
      }
    }
    char save = k->buf[he - 1];
    k->buf[he - 1] = '\0';
    bool ok = parse_head(k->buf + k->pos, h);
    k->buf[he - 1] = save;
    if (!ok) {
      fail(k, MCIM_PEER_UNREACHABLE, "not an HTTP/1.x answer");
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
      fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
      return false;
    }
    if (!need(k, k->pos + h->length)) {
      if (!k->cause)
        fail(k, MCIM_PEER_UNREACHABLE, "answer cut short");
      return false;
    }
    *body_len = h->length;
    return true;
  }
  /* up to the close */
  h->close = true;
  for (;;) {
    if (k->len - k->pos > MAX_ANSWER) {
      fail(k, MCIM_TOO_LARGE, "answer larger than %u bytes", MAX_ANSWER);
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
  /* a connection made for `peer` has the key "peer@host:port" (conn_get) and was kept only
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

mcim_cause_t mcim_http_lite_request(struct mcim_http_lite *cli, const char *method,
                                    const char *url, const json_t *body, const char *bearer,
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
    fail(&k, MCIM_INVALID_ARGUMENT, "not a URL this client takes");
    goto out;
  }
  if (bearer && strlen(bearer) + sizeof("Authorization: Bearer ") > 4096) {
    fail(&k, MCIM_TOO_LARGE, "bearer token too long");
    goto out;
  }
  if (body && !(text = json_dumps(body, JSON_COMPACT))) {
    fail(&k, MCIM_NO_MEMORY, "out of memory");
    goto out;
  }
  size_t tlen = text ? strlen(text) : 0;
  size_t cap = strlen(method) + strlen(path) + strlen(host) + (bearer ? strlen(bearer) : 0) +
               tlen + 256;
  req = malloc(cap);
  if (!req) {
    fail(&k, MCIM_NO_MEMORY, "out of memory");
    goto out;
  }
  bool v6 = strchr(host, ':') != NULL;
  bool default_port = strcmp(port, cli->unix_path ? "80" : "443") == 0;
  int n = snprintf(req, cap, "%s %s%s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n"
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
    k.c = conn_get(&k, host, port, &reused);
    if (!k.c)
      break;
    ok = exchange(&k, req, (size_t)n, method, &h, &body_at, &body_len, &retry);
    if (!ok || h.close)
      conn_close(k.c);
    if (!ok && !(reused && retry))
      break; /* a new connection that failed, or a failure past the first byte */
  }
  if (!ok)
    goto out;
  mcim_http_result_from_answer_(result, h.status, k.buf ? k.buf + body_at : NULL, body_len,
                                url);
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
