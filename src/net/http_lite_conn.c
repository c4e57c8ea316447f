/* The small HTTP client's connections (http_lite.c): a connected socket to host:port or to the
 * Unix socket; TLS on it (the context from the CA file and the client certificate, a socket
 * BIO that never raises SIGPIPE, SSLKEYLOGFILE, the handshake verifying the host and the
 * peer's CN, OpenSSL's failures in words); the kept-alive connections, reused by peer, host
 * and port. Apart from http_lite.c: the network and OpenSSL's TLS are all here. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "net/http_lite_priv.h"

/* The servers' policy (http_server.c), in OpenSSL's names (the curl client's lists). */
#define TLS12_CIPHERS                                                                              \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"                                   \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"         \
  "ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_CIPHERS "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

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

void lite_conn_close(struct lite_conn *c)
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

/* The TLS failures a peer or a network causes, in words: the device agent does not load
 * OpenSSL's error strings (mcim_device_process_init: about 0.3 MiB resident). */
/* clang-format off */
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
/* clang-format on */

/* The last OpenSSL error, for people: OpenSSL's string when it has loaded them, the words
 * above, else the code (`openssl errstr CODE` says what it is). */
const char *lite_ssl_reason(char *buf, size_t len)
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

static SSL_CTX *make_ctx(struct mcim_http_lite *cli, struct call *k)
{
  char why[160];
  pthread_once(&keylog_once, keylog_open);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
      !SSL_CTX_set_ciphersuites(ctx, TLS13_CIPHERS)) {
    lite_fail(k, MCIM_INTERNAL, "TLS set-up: %s", lite_ssl_reason(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (SSL_CTX_load_verify_locations(ctx, cli->ca_file, NULL) != 1) {
    lite_fail(k, MCIM_PEER_UNREACHABLE, "cannot use the CA file %.100s: %s", cli->ca_file,
              lite_ssl_reason(why, sizeof(why)));
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
    lite_fail(k, MCIM_PEER_NOT_AUTHENTICATED, "client certificate %.100s: %s", cli->cert_file,
              lite_ssl_reason(why, sizeof(why)));
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
      lite_fail(k, MCIM_PEER_UNREACHABLE, "socket path too long");
      return -1;
    }
    memcpy(sun.sun_path, cli->unix_path, strlen(cli->unix_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
      lite_fail(k, MCIM_PEER_UNREACHABLE, "connect to %.100s: %s", cli->unix_path, strerror(errno));
      if (fd >= 0)
        close(fd);
      return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }

  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV},
                  *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    lite_fail(k, MCIM_PEER_UNREACHABLE, "cannot resolve %.100s: %s", host, gai_strerror(gai));
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
      if (!lite_wait_fd(k, fd, POLLOUT)) {
        close(fd);
        freeaddrinfo(res);
        lite_timed_out(k);
        if (!k->cause)
          lite_fail(k, MCIM_TIMEOUT, "timed out after %ld ms", cli->cfg.timeout_ms);
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
    lite_fail(k, MCIM_PEER_UNREACHABLE, "connect to %.100s port %s: %s", host, port,
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
    lite_fail(k, MCIM_PEER_NOT_AUTHENTICATED, "server certificate: it is %.64s's, not %.64s's",
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
    lite_fail(k, MCIM_NO_MEMORY, "TLS: out of memory");
    return false;
  }
  BIO_set_data(bio, (void *)(intptr_t)c->fd);
  SSL_set_bio(c->ssl, bio, bio);
  bool ip = is_ip_literal(host);
  if (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1
         : (SSL_set1_host(c->ssl, host) != 1 || SSL_set_tlsext_host_name(c->ssl, host) != 1)) {
    lite_fail(k, MCIM_INVALID_ARGUMENT, "TLS: bad host name %.100s", host);
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
      if (!lite_wait_fd(k, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT)) {
        lite_timed_out(k);
        return false;
      }
      continue;
    }
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK)
      lite_fail(k, MCIM_PEER_NOT_AUTHENTICATED, "server certificate: %s",
                X509_verify_cert_error_string(v));
    else
      lite_fail(k, MCIM_PEER_UNREACHABLE, "TLS handshake: %s", lite_ssl_reason(why, sizeof(why)));
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

struct lite_conn *lite_conn_get(struct call *k, const char *host, const char *port, bool *reused)
{
  struct mcim_http_lite *cli = k->cli;
  char key[400];
  /* a connection verified for one name is never used for another */
  snprintf(key, sizeof(key), "%s%s%s:%s", k->peer ? k->peer : "", k->peer ? "@" : "", host, port);
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
      lite_conn_close(x);
    }
    if (!x->key[0] && (!c || c->key[0]))
      c = x;
    if (x->used < lru->used)
      lru = x;
  }
  if (!c) {
    c = lru;
    lite_conn_close(c);
  }
  c->fd = open_socket(k, host, port);
  if (c->fd < 0)
    return NULL;
  if (!cli->unix_path && !handshake(k, c, host)) {
    lite_conn_close(c);
    return NULL;
  }
  snprintf(c->key, sizeof(c->key), "%s", key);
  c->used = ++cli->tick;
  return c;
}
