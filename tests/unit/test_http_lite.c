/* The small HTTP client (src/net/http_lite.c; the device agent's): against the roles' HTTPS
 * server (libmicrohttpd, real TLS on loopback: round trips, problems, mTLS, reuse), against
 * the local server on a Unix socket, and against a TLS server of this test that misbehaves on
 * purpose (an answer then a close without saying so, chunked and close-delimited answers,
 * interim answers, garbage, answers too large, silence, a CBC-only policy, a certificate for
 * another address). Causes as the curl client gives them. Certificates from the openssl
 * command line; SSLKEYLOGFILE is set before the first client. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/http.h"
#include "mcim/jsonv.h"
#include "mcim/pki.h"

static char dir[] = "/tmp/mcim-http-lite-XXXXXX";
static char path_buf[10][256];

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

/* ---- the roles' server ---- */

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
                       json_pack("{s:O,s:s?,s:s?}", "name", json_object_get(req->json, "name"),
                                 "peer", req->peer, "bearer", req->bearer));
}

static void h_item(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  mcim_http_reply_json(resp, 200, json_pack("{s:s}", "a", req->params[0]));
}

static const struct mcim_http_route routes[] = {
    {"POST", "/v1/echo", h_echo, 0},
    {"POST", "/v1/secure", h_echo, MCIM_ROUTE_PEER_CERT},
    {"GET", "/v1/items/{a}", h_item, 0},
};

static struct mcim_http_server *srv;
static struct mcim_http_local *local;
static char base[64], sock[100];

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir) || make_pki() != 0)
    return -1;
  setenv("SSLKEYLOGFILE", p(9, "keys.log"), 1); /* before the first client */
  struct mcim_http_server_cfg cfg = {
      .role = "test", .cert_file = p(0, "server.crt"), .key_file = p(1, "server.key"),
      .client_ca_file = p(2, "ca.crt"), .threads = 2, .max_body = 4096,
      .routes = routes, .nroutes = 3,
  };
  if (mcim_http_server_start(&cfg, &srv) != MCIM_OK)
    return -1;
  snprintf(base, sizeof(base), "https://127.0.0.1:%u", mcim_http_server_port(srv));
  snprintf(sock, sizeof(sock), "%.60s/control.sock", dir);
  struct mcim_http_server_cfg lc = {.unix_path = sock, .threads = 1, .routes = routes,
                                    .nroutes = 3};
  return mcim_http_local_start(&lc, &local) == MCIM_OK ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_server_free(srv);
  mcim_http_local_free(local);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static struct mcim_http_lite *client(const char *cert, const char *key, long timeout_ms)
{
  struct mcim_http_client_cfg cc = {.ca_file = p(3, "ca.crt"), .timeout_ms = timeout_ms,
                                    .cert_file = cert, .key_file = key};
  struct mcim_http_lite *c = NULL;
  assert_int_equal(mcim_http_lite_new(&cc, &c), MCIM_OK);
  return c;
}

static char *url(const char *b, const char *path)
{
  static char u[4][256];
  static int i;
  i = (i + 1) % 4;
  snprintf(u[i], sizeof(u[i]), "%s%s", b, path);
  return u[i];
}

static void test_roundtrips(void **state)
{
  (void)state;
  struct mcim_http_lite *c = client(p(4, "client.crt"), p(5, "client.key"), 5000);
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "name", "dev1");

  for (int i = 0; i < 3; i++) { /* the same connection, kept alive */
    assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/echo"), body, "tok", &r),
                     MCIM_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "dev1");
    assert_string_equal(json_string_value(json_object_get(r.json, "bearer")), "tok");
    mcim_http_result_clear(&r);
  }
  /* mutual TLS: the server sees the client certificate's CN */
  assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/secure"), body, NULL, &r),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(r.json, "peer")), "client");
  mcim_http_result_clear(&r);
  /* a GET, a path capture; the name form of the host */
  char named[64];
  snprintf(named, sizeof(named), "https://localhost:%u", mcim_http_server_port(srv));
  assert_int_equal(mcim_http_lite_request(c, "GET", url(named, "/v1/items/x1"), NULL, NULL, &r),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(r.json, "a")), "x1");
  mcim_http_result_clear(&r);
  /* problems: the peer's cause and detail */
  assert_int_equal(mcim_http_lite_request(c, "GET", url(base, "/v1/none"), NULL, NULL, &r),
                   MCIM_ROUTE_NOT_FOUND);
  assert_int_equal(r.status, 404);
  mcim_http_result_clear(&r);
  json_object_set_new(body, "name", json_integer(1));
  assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/echo"), body, NULL, &r),
                   MCIM_WRONG_TYPE);
  assert_true(r.detail[0] != '\0');
  mcim_http_result_clear(&r);
  /* a body over the server's limit */
  char big[6000];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  json_object_set_new(body, "name", json_string(big));
  assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/echo"), body, NULL, &r),
                   MCIM_TOO_LARGE);
  mcim_http_result_clear(&r);
  json_decref(body);
  mcim_http_lite_free(c);
}

static void test_client_certs(void **state)
{
  (void)state;
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "name", "x");
  /* none: refused by the route */
  struct mcim_http_lite *c = client(NULL, NULL, 5000);
  assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/secure"), body, NULL, &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  assert_int_equal(r.status, 401);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  /* one of another CA: never a 2xx */
  c = client(p(4, "other.crt"), p(5, "other.key"), 5000);
  assert_int_not_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/secure"), body, NULL,
                                              &r), MCIM_OK);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  /* the server named: its certificate's CN must be that name (the CA and the host alone
   * would let any role of the same CA answer for another), and a connection verified for one
   * name is not reused for another */
  c = client(p(4, "client.crt"), p(5, "client.key"), 5000);
  char *pem = NULL;
  /* the server's certificate of a connection to a named peer (none yet) */
  assert_int_equal(mcim_http_lite_peer_cert(c, "server", &pem), MCIM_NOT_FOUND);
  assert_int_equal(mcim_http_lite_request_to(c, "server", "POST", url(base, "/v1/echo"), body,
                                             NULL, &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  assert_int_equal(mcim_http_lite_peer_cert(c, "server", &pem), MCIM_OK);
  X509 *shown = NULL;
  char *cn = NULL;
  assert_int_equal(mcim_pki_cert_from_pem(pem, strlen(pem), &shown), MCIM_OK);
  assert_int_equal(mcim_pki_cert_name(shown, &cn), MCIM_OK);
  assert_string_equal(cn, "server");
  free(cn);
  X509_free(shown);
  free(pem);
  pem = NULL;
  assert_int_equal(mcim_http_lite_peer_cert(c, "serve", &pem), MCIM_NOT_FOUND);
  assert_int_equal(mcim_http_lite_request_to(c, "sho-a", "POST", url(base, "/v1/echo"), body,
                                             NULL, &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  /* a connection that did not verify as sho-a shows nothing as sho-a's */
  assert_int_equal(mcim_http_lite_peer_cert(c, "sho-a", &pem), MCIM_NOT_FOUND);
  assert_null(pem);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.detail, "it is server's, not sho-a's"));
  mcim_http_result_clear(&r);
  assert_int_equal(mcim_http_lite_request_to(c, "server", "POST", url(base, "/v1/echo"), body,
                                             NULL, &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  /* a key that does not match the certificate */
  c = client(p(4, "client.crt"), p(5, "other.key"), 5000);
  assert_int_equal(mcim_http_lite_request(c, "POST", url(base, "/v1/echo"), body, NULL, &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  json_decref(body);
}

static void test_untrusted_and_unreachable(void **state)
{
  (void)state;
  struct mcim_http_result r;
  struct mcim_http_client_cfg cc = {.ca_file = p(3, "other.crt"), .timeout_ms = 5000};
  struct mcim_http_lite *c = NULL;
  assert_int_equal(mcim_http_lite_new(&cc, &c), MCIM_OK);
  assert_int_equal(mcim_http_lite_request(c, "GET", url(base, "/v1/items/a"), NULL, NULL, &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.detail, "certificate"));
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);

  c = client(NULL, NULL, 5000);
  /* a port nobody listens on */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  close(fd);
  char closed[64];
  snprintf(closed, sizeof(closed), "https://127.0.0.1:%u/v1/x", ntohs(a.sin_port));
  assert_int_equal(mcim_http_lite_request(c, "GET", closed, NULL, NULL, &r),
                   MCIM_PEER_UNREACHABLE);
  assert_non_null(strstr(r.detail, closed));
  mcim_http_result_clear(&r);
  /* not a URL of this client */
  assert_int_equal(mcim_http_lite_request(c, "GET", "http://127.0.0.1/v1/x", NULL, NULL, &r),
                   MCIM_INVALID_ARGUMENT);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
}

static void test_unix_socket(void **state)
{
  (void)state;
  struct mcim_http_client_cfg cc = {.unix_path = sock, .timeout_ms = 5000};
  struct mcim_http_lite *c = NULL;
  struct mcim_http_result r;
  assert_int_equal(mcim_http_lite_new(&cc, &c), MCIM_OK);
  for (int i = 0; i < 2; i++) { /* the server closes after each answer: a new connection */
    assert_int_equal(mcim_http_lite_request(c, "GET", "http://localhost/v1/items/u", NULL, NULL,
                                            &r), MCIM_OK);
    assert_string_equal(json_string_value(json_object_get(r.json, "a")), "u");
    mcim_http_result_clear(&r);
  }
  json_t *body = json_pack("{s:s}", "name", "local");
  assert_int_equal(mcim_http_lite_request(c, "POST", "http://localhost/v1/echo", body, "t", &r),
                   MCIM_OK);
  assert_string_equal(json_string_value(json_object_get(r.json, "bearer")), "t");
  mcim_http_result_clear(&r);
  json_decref(body);
  mcim_http_lite_free(c);
}

/* ---- a TLS server that misbehaves as told ---- */

enum mode {
  M_CLOSE_AFTER, /* answers (keep-alive implied) then closes the connection silently */
  M_CHUNKED,     /* a chunked answer */
  M_UNTIL_CLOSE, /* no length: the body ends with the connection */
  M_INTERIM,     /* 100 Continue, then the answer */
  M_GARBAGE,     /* not HTTP */
  M_HUGE,        /* Content-Length over 1 MiB */
  M_HUGE_CHUNKS, /* chunks adding up over 1 MiB */
  M_SILENT,      /* never answers */
  M_PROBLEM,     /* a problem+json answer */
  M_CHALLENGE,   /* 401 problems with WWW-Authenticate challenges, one kind a request */
};

struct tserver {
  int fd;
  unsigned port;
  SSL_CTX *ctx;
  enum mode mode;
  pthread_t th;
  pthread_mutex_t lock;
  int conns, requests;
};

static bool read_request(SSL *ssl)
{
  char buf[8192];
  size_t n = 0;
  while (n < sizeof(buf) - 1) {
    int r = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
    if (r <= 0)
      return false;
    n += (size_t)r;
    buf[n] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end) {
      const char *cl = strstr(buf, "Content-Length: ");
      size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
      while (n < want && n < sizeof(buf) - 1) {
        r = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
        if (r <= 0)
          return false;
        n += (size_t)r;
      }
      return true;
    }
  }
  return false;
}

static void put(SSL *ssl, const char *s)
{
  SSL_write(ssl, s, (int)strlen(s));
}

static void *tserve(void *arg)
{
  struct tserver *t = arg;
  for (;;) {
    int fd = accept(t->fd, NULL, NULL);
    if (fd < 0)
      break;
    pthread_mutex_lock(&t->lock);
    t->conns++;
    pthread_mutex_unlock(&t->lock);
    SSL *ssl = SSL_new(t->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      while (read_request(ssl)) {
        pthread_mutex_lock(&t->lock);
        t->requests++;
        pthread_mutex_unlock(&t->lock);
        static const char ok[] = "{\"ok\":true}";
        char head[256];
        switch (t->mode) {
        case M_CLOSE_AFTER:
          snprintf(head, sizeof(head),
                   "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu"
                   "\r\n\r\n%s", sizeof(ok) - 1, ok);
          put(ssl, head);
          goto close; /* without "Connection: close" */
        case M_CHUNKED:
          put(ssl, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "4\r\n{\"ok\r\n7;x=y\r\n\":true}\r\n0\r\nTrailer: 1\r\n\r\n");
          continue;
        case M_UNTIL_CLOSE:
          put(ssl, "HTTP/1.0 200 OK\r\n\r\n{\"ok\":true}");
          goto close;
        case M_INTERIM:
          put(ssl, "HTTP/1.1 100 Continue\r\n\r\n");
          snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                   sizeof(ok) - 1, ok);
          put(ssl, head);
          continue;
        case M_GARBAGE:
          put(ssl, "SSH-2.0-OpenSSH\r\n\r\n");
          goto close;
        case M_HUGE:
          put(ssl, "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n{");
          goto close;
        case M_HUGE_CHUNKS: {
          static char chunk[65536 + 16];
          put(ssl, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
          memset(chunk, 'z', sizeof(chunk));
          for (int i = 0; i < 20; i++) {
            put(ssl, "10000\r\n");
            if (SSL_write(ssl, chunk, 65536) <= 0)
              break;
            put(ssl, "\r\n");
          }
          goto close;
        }
        case M_SILENT:
          read_request(ssl); /* waits until the client gives up */
          goto close;
        case M_PROBLEM: {
          static const char pj[] = "{\"cause\":\"WRONG_STATE\",\"detail\":\"not now!!!\"}";
          snprintf(head, sizeof(head), "HTTP/1.1 409 Conflict\r\nContent-Type: "
                   "application/problem+json\r\nContent-Length: %zu\r\n\r\n%s",
                   sizeof(pj) - 1, pj);
          put(ssl, head);
          continue;
        }
        case M_CHALLENGE: { /* RFC 6750 3: a refused token, then challenges that are not ours */
          static const char ours[] =
              "WWW-Authenticate: Bearer realm=\"mcim\", error=\"invalid_token\"";
          static const char two[] = /* two headers, the Bearer one second */
              "WWW-Authenticate: MCIM-Statement realm=\"mcim\"\r\n"
              "WWW-Authenticate: Bearer error=\"invalid_token\"";
          static const char *const ch[] = {ours, "WWW-Authenticate: MCIM-Statement realm=\"x\"",
                                           "www-authenticate: bearer error=\"not a code\"",
                                           "WWW-Authenticate: Bearerx error=\"invalid_token\"",
                                           "WWW-Authenticate: bearer error=insufficient_scope",
                                           two};
          static const char pj[] = "{\"cause\":\"JWS_BAD_SIGNATURE\",\"detail\":\"x\"}";
          pthread_mutex_lock(&t->lock);
          int i = (t->requests - 1) % 6;
          pthread_mutex_unlock(&t->lock);
          snprintf(head, sizeof(head), "HTTP/1.1 401 Unauthorized\r\n%s\r\nContent-Type: "
                   "application/problem+json\r\nContent-Length: %zu\r\n\r\n%s",
                   ch[i], sizeof(pj) - 1, pj);
          put(ssl, head);
          continue;
        }
        }
      }
    }
  close:
    SSL_free(ssl);
    close(fd);
  }
  return NULL;
}

static struct tserver *tstart(enum mode mode, const char *ciphers, const char *addr)
{
  struct tserver *t = calloc(1, sizeof(*t));
  assert_non_null(t);
  t->mode = mode;
  pthread_mutex_init(&t->lock, NULL);
  t->ctx = SSL_CTX_new(TLS_server_method());
  assert_int_equal(SSL_CTX_use_certificate_file(t->ctx, p(6, "server.crt"), SSL_FILETYPE_PEM), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey_file(t->ctx, p(7, "server.key"), SSL_FILETYPE_PEM), 1);
  if (ciphers) {
    SSL_CTX_set_max_proto_version(t->ctx, TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_set_cipher_list(t->ctx, ciphers), 1);
  }
  t->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, addr ? addr : "127.0.0.1", &a.sin_addr);
  socklen_t al = sizeof(a);
  assert_int_equal(bind(t->fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(t->fd, 8), 0);
  assert_int_equal(getsockname(t->fd, (struct sockaddr *)&a, &al), 0);
  t->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&t->th, NULL, tserve, t), 0);
  return t;
}

static void tstop(struct tserver *t)
{
  shutdown(t->fd, SHUT_RDWR);
  pthread_join(t->th, NULL);
  close(t->fd);
  SSL_CTX_free(t->ctx);
  pthread_mutex_destroy(&t->lock);
  free(t);
}

static char *turl(const struct tserver *t, const char *host)
{
  static char u[128];
  snprintf(u, sizeof(u), "https://%s:%u/v1/x", host ? host : "127.0.0.1", t->port);
  return u;
}

/* The server closed a kept connection without saying so: the next call notices it (before
 * or after sending) and goes through on a new connection. */
static void test_closed_keepalive(void **state)
{
  (void)state;
  struct tserver *t = tstart(M_CLOSE_AFTER, NULL, NULL);
  struct mcim_http_lite *c = client(NULL, NULL, 5000);
  struct mcim_http_result r;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(mcim_http_lite_request(c, "POST", turl(t, NULL), NULL, NULL, &r), MCIM_OK);
    assert_true(json_is_true(json_object_get(r.json, "ok")));
    mcim_http_result_clear(&r);
  }
  pthread_mutex_lock(&t->lock);
  assert_int_equal(t->requests, 3);
  assert_int_equal(t->conns, 3);
  pthread_mutex_unlock(&t->lock);
  mcim_http_lite_free(c);
  tstop(t);
}

static void test_answer_shapes(void **state)
{
  (void)state;
  static const enum mode good[] = {M_CHUNKED, M_UNTIL_CLOSE, M_INTERIM};
  struct mcim_http_result r;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    struct tserver *t = tstart(good[i], NULL, NULL);
    struct mcim_http_lite *c = client(NULL, NULL, 5000);
    for (int j = 0; j < 2; j++) {
      assert_int_equal(mcim_http_lite_request(c, "GET", turl(t, NULL), NULL, NULL, &r), MCIM_OK);
      assert_int_equal(r.status, 200);
      assert_true(json_is_true(json_object_get(r.json, "ok")));
      mcim_http_result_clear(&r);
    }
    pthread_mutex_lock(&t->lock);
    /* chunked and interim answers keep the connection; a close-delimited one cannot */
    assert_int_equal(t->conns, good[i] == M_UNTIL_CLOSE ? 2 : 1);
    pthread_mutex_unlock(&t->lock);
    mcim_http_lite_free(c);
    tstop(t);
  }
  struct tserver *t = tstart(M_PROBLEM, NULL, NULL);
  struct mcim_http_lite *c = client(NULL, NULL, 5000);
  assert_int_equal(mcim_http_lite_request(c, "POST", turl(t, NULL), NULL, NULL, &r),
                   MCIM_WRONG_STATE);
  assert_int_equal(r.status, 409);
  assert_string_equal(r.detail, "not now!!!");
  assert_false(r.bearer_challenge);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  tstop(t);
  /* a refused token says so (RFC 6750 3); other schemes and a code that is not one do not
   * count as its error (the agent attaches again only on the first: dev_token_refused) */
  static const struct {
    bool challenge;
    const char *error, *value;
  } want[] = {{true, "invalid_token", "Bearer realm=\"mcim\", error=\"invalid_token\""},
              {false, "", "MCIM-Statement realm=\"x\""}, /* a statement's (RFC 9110 15.5.2) */
              {true, "", "bearer error=\"not a code\""},
              {false, "", "Bearerx error=\"invalid_token\""},
              {true, "insufficient_scope", "bearer error=insufficient_scope"},
              {true, "invalid_token", "MCIM-Statement realm=\"mcim\""}};
  /* both clients: the small one (the agent's) and libcurl (the daemons', mcim's) */
  struct mcim_http_client_cfg cc = {.ca_file = p(3, "ca.crt"), .timeout_ms = 5000};
  for (int lite = 1; lite >= 0; lite--) {
    struct mcim_http_lite *lc = lite ? client(NULL, NULL, 5000) : NULL;
    struct mcim_http_client *curl = NULL;
    if (!lite)
      assert_int_equal(mcim_http_client_new(&cc, &curl), MCIM_OK);
    t = tstart(M_CHALLENGE, NULL, NULL);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
      mcim_cause_t rc = lite ? mcim_http_lite_request(lc, "POST", turl(t, NULL), NULL, NULL, &r)
                             : mcim_http_request(curl, "POST", turl(t, NULL), NULL, NULL, &r);
      assert_int_equal(rc, MCIM_JWS_BAD_SIGNATURE);
      assert_int_equal(r.status, 401);
      assert_int_equal(r.bearer_challenge, want[i].challenge);
      assert_string_equal(r.bearer_error, want[i].error);
      assert_string_equal(r.challenge, want[i].value);
      mcim_http_result_clear(&r);
    }
    mcim_http_lite_free(lc);
    mcim_http_client_free(curl);
    tstop(t);
  }
}

static void test_bad_answers(void **state)
{
  (void)state;
  static const struct {
    enum mode mode;
    mcim_cause_t want;
  } cases[] = {
      {M_GARBAGE, MCIM_PEER_UNREACHABLE},
      {M_HUGE, MCIM_TOO_LARGE},
      {M_HUGE_CHUNKS, MCIM_TOO_LARGE},
      {M_SILENT, MCIM_TIMEOUT},
  };
  struct mcim_http_result r;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct tserver *t = tstart(cases[i].mode, NULL, NULL);
    struct mcim_http_lite *c = client(NULL, NULL, cases[i].mode == M_SILENT ? 300 : 5000);
    assert_int_equal(mcim_http_lite_request(c, "GET", turl(t, NULL), NULL, NULL, &r),
                     cases[i].want);
    assert_int_equal(r.status, 0);
    mcim_http_result_clear(&r);
    mcim_http_lite_free(c); /* closes the connection: the silent server's read ends */
    tstop(t);
  }
}

/* The client's policy: no CBC suite; a certificate that does not name the address. */
static void test_tls_policy(void **state)
{
  (void)state;
  struct mcim_http_result r;
  struct tserver *t = tstart(M_CHUNKED, "ECDHE-ECDSA-AES128-SHA", NULL);
  struct mcim_http_lite *c = client(NULL, NULL, 5000);
  assert_int_equal(mcim_http_lite_request(c, "GET", turl(t, NULL), NULL, NULL, &r),
                   MCIM_PEER_UNREACHABLE);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  tstop(t);
  t = tstart(M_CHUNKED, "ECDHE-ECDSA-CHACHA20-POLY1305", NULL);
  c = client(NULL, NULL, 5000);
  assert_int_equal(mcim_http_lite_request(c, "GET", turl(t, NULL), NULL, NULL, &r), MCIM_OK);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  tstop(t);
  /* the certificate names 127.0.0.1 and localhost, not 127.0.0.2 */
  t = tstart(M_CHUNKED, NULL, "127.0.0.2");
  c = client(NULL, NULL, 5000);
  assert_int_equal(mcim_http_lite_request(c, "GET", turl(t, "127.0.0.2"), NULL, NULL, &r),
                   MCIM_PEER_NOT_AUTHENTICATED);
  mcim_http_result_clear(&r);
  mcim_http_lite_free(c);
  tstop(t);
}

/* SSLKEYLOGFILE: the secrets of the connections above, in the NSS key log format. */
static void test_keylog(void **state)
{
  (void)state;
  FILE *f = fopen(p(8, "keys.log"), "r");
  assert_non_null(f);
  char line[512];
  int secrets = 0;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "CLIENT_HANDSHAKE_TRAFFIC_SECRET ", 32) == 0 ||
        strncmp(line, "CLIENT_RANDOM ", 14) == 0)
      secrets++;
  fclose(f);
  assert_true(secrets > 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrips),
      cmocka_unit_test(test_client_certs),
      cmocka_unit_test(test_untrusted_and_unreachable),
      cmocka_unit_test(test_unix_socket),
      cmocka_unit_test(test_closed_keepalive),
      cmocka_unit_test(test_answer_shapes),
      cmocka_unit_test(test_bad_answers),
      cmocka_unit_test(test_tls_policy),
      cmocka_unit_test(test_keylog),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
