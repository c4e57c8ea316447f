/* The HTTP server every role runs: libmicrohttpd (TLS by GnuTLS) with a thread
 * pool, a route table, body limits, JSON parsing and client-certificate checks.
 * Whatever a peer sends, the answer is a response (problem+json on error) and
 * the daemon goes on serving; nothing here asserts on peer input. */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/opcount.h"
#include "mcim/util.h"
#include "net/http_priv.h"

/* TLS 1.3, and TLS 1.2 with ECDHE and an AEAD cipher (AES-GCM, ChaCha20-Poly1305) only:
 * no CBC (padding oracles), no SHA1 MAC, no RSA key exchange (no forward secrecy), no
 * SHA1 signatures. The client side (http_client.c) offers the same set. The key exchange
 * prefers X25519, the group whose key share OpenSSL's clients (the agent's, libcurl's)
 * send first: with SECURE128's order (P-256 first) every TLS 1.3 handshake began with a
 * HelloRetryRequest, a round trip and a client key pair more. */
#define TLS_PRIORITIES                                                                     \
  "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"   \
  "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-SIGN-RSA-SHA1:"      \
  "-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"             \
  "+GROUP-SECP384R1:+GROUP-SECP521R1:%SERVER_PRECEDENCE"

#define DEFAULT_PER_ADDRESS 256 /* as the config default (src/roles/runtime_config.c) */
#define DEFAULT_TIMEOUT_S 10
#define DEFAULT_CONNECTION_CAP 4096 /* a connection costs ~50 KiB (MHD pool, TLS session) */
#define FD_RESERVE 256 /* descriptors left for stores, peer connections, logs, epoll */

/* Per-connection state (MHD socket context), for the timeout metric and the peer's
 * verified chain (peer_common_name). */
struct conn_state {
  struct timespec opened;
  bool had_request;
  const struct mcim_http_server *srv;
  /* The peer's chain as last verified on this connection (each certificate's DER after its
   * 4-byte length), its CN, and the time span the verdict holds: from the verification to
   * the earliest expiry in the chain or the trust CAs. NULL: not verified (yet). */
  unsigned char *peer_chain;
  size_t peer_chain_len;
  time_t peer_at;
  time_t peer_until;
  char peer_cn[256];
};

struct mcim_http_server {
  struct MHD_Daemon *daemon;
  struct mcim_http_local *local; /* cfg.unix_path: the local server instead of MHD */
  struct mcim_http_server_cfg cfg;
  char *cert_pem;
  char *key_pem;
  char *ca_pem;
  uint16_t port;
  unsigned timeout_s; /* in force (TLS server), for the timeout metric */
  time_t trust_until; /* the earliest expiry among the client CAs; 0: verify every request */
  atomic_uint held;   /* requests held (long polls) not yet dispatched again */
  /* held requests dispatched again whose answer is not sent yet (on_completed): a stop
   * waits for them too, or MHD_stop_daemon would close their connections unanswered */
  atomic_uint answering;
  atomic_bool stopping; /* mcim_http_server_free began: nothing is held any more */
};

/* Per-request state, kept across the access handler's calls while the body arrives. */
struct req_state {
  uint8_t *body;
  size_t len;
  size_t cap;
  bool too_large;
  bool huge;
  struct timespec start; /* arrival of the request (CLOCK_MONOTONIC), for the latency metric */
  uint64_t wait_until_ns; /* the client's Prefer: wait, bounded (CLOCK_MONOTONIC); 0: none */
  bool held;              /* held by http_wait.c: this call is its dispatch again */
  bool answering;         /* dispatched again after a hold: counted in srv->answering */
  uint64_t cpu_ns;        /* this thread's CPU in its dispatches so far (held ones added) */
  struct mcim_http_server *srv;
};

static char *read_text_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) != 0)
    goto out;
  long n = ftell(f);
  if (n < 0 || n > 1 << 20 || fseek(f, 0, SEEK_SET) != 0)
    goto out;
  buf = malloc((size_t)n + 1);
  if (!buf)
    goto out;
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
    goto out;
  }
  buf[n] = '\0';
out:
  fclose(f);
  return buf;
}

/* The peer's chain flattened: each certificate's DER after its length (4 bytes). */
static unsigned char *chain_flat(const gnutls_datum_t *chain, unsigned n, size_t *len)
{
  size_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total += 4 + chain[i].size;
  unsigned char *buf = malloc(total ? total : 1);
  if (!buf)
    return NULL;
  size_t off = 0;
  for (unsigned i = 0; i < n; i++) {
    unsigned sz = chain[i].size;
    buf[off] = (unsigned char)(sz >> 24);
    buf[off + 1] = (unsigned char)(sz >> 16);
    buf[off + 2] = (unsigned char)(sz >> 8);
    buf[off + 3] = (unsigned char)sz;
    memcpy(buf + off + 4, chain[i].data, sz);
    off += 4 + sz;
  }
  *len = total;
  return buf;
}

static bool chain_equals(const struct conn_state *cs, const gnutls_datum_t *chain, unsigned n)
{
  size_t off = 0;
  for (unsigned i = 0; i < n; i++) {
    unsigned sz = chain[i].size;
    if (off + 4 + (size_t)sz > cs->peer_chain_len)
      return false;
    const unsigned char *p = cs->peer_chain + off;
    if ((((unsigned)p[0] << 24) | ((unsigned)p[1] << 16) | ((unsigned)p[2] << 8) | p[3]) != sz ||
        memcmp(p + 4, chain[i].data, sz) != 0)
      return false;
    off += 4 + sz;
  }
  return off == cs->peer_chain_len;
}

static void conn_peer_clear(struct conn_state *cs)
{
  free(cs->peer_chain);
  cs->peer_chain = NULL;
  cs->peer_chain_len = 0;
}

/* Verify the peer's certificate chain against the trust CA and return its CN.
 * The verdict is kept on the connection: a later request on it with the very same chain
 * (byte for byte), within the verdict's time span (no certificate of the chain or trust CA
 * expired meanwhile, the clock not set back), gets the same answer without the chain
 * verification again; anything else verifies anew. The trust CAs do not change while the
 * server runs (MHD_OPTION_HTTPS_MEM_TRUST, no CRL). Before, every request on a kept-alive
 * connection verified the chain again (GnuTLS, about a tenth of the daemons' CPU). */
static bool peer_common_name(void *connection, char *cn, size_t cn_len)
{
  struct MHD_Connection *conn = connection;
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (!ci || !ci->tls_session)
    return false;
  gnutls_session_t session = (gnutls_session_t)ci->tls_session;
  const union MHD_ConnectionInfo *si =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  struct conn_state *cs = si ? si->socket_context : NULL;
  unsigned n = 0;
  const gnutls_datum_t *chain = gnutls_certificate_get_peers(session, &n);
  time_t now = time(NULL);
  if (cs && cs->peer_chain && chain && n > 0 && now >= cs->peer_at && now < cs->peer_until &&
      chain_equals(cs, chain, n) && strlen(cs->peer_cn) < cn_len) {
    memcpy(cn, cs->peer_cn, strlen(cs->peer_cn) + 1);
    return true;
  }
  if (cs)
    conn_peer_clear(cs);
  unsigned status = 0;
  if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS || status != 0)
    return false;
  chain = gnutls_certificate_get_peers(session, &n);
  if (!chain || n == 0)
    return false;
  gnutls_x509_crt_t crt;
  bool ok = false;
  if (gnutls_x509_crt_init(&crt) != GNUTLS_E_SUCCESS)
    return false;
  if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS) {
    size_t sz = cn_len;
    ok = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &sz) ==
         GNUTLS_E_SUCCESS;
  }
  gnutls_x509_crt_deinit(crt);
  if (!ok || !cs || !cs->srv || cs->srv->trust_until <= now ||
      strlen(cn) >= sizeof(cs->peer_cn))
    return ok;
  /* keep the verdict until the earliest expiry in the chain or the trust CAs */
  time_t until = cs->srv->trust_until;
  for (unsigned i = 0; i < n; i++) {
    gnutls_x509_crt_t c;
    if (gnutls_x509_crt_init(&c) != GNUTLS_E_SUCCESS)
      return ok;
    time_t exp = gnutls_x509_crt_import(c, &chain[i], GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS
                     ? gnutls_x509_crt_get_expiration_time(c)
                     : (time_t)-1;
    gnutls_x509_crt_deinit(c);
    if (exp == (time_t)-1)
      return ok;
    if (exp < until)
      until = exp;
  }
  if (until <= now)
    return ok;
  cs->peer_chain = chain_flat(chain, n, &cs->peer_chain_len);
  if (!cs->peer_chain)
    return ok;
  cs->peer_at = now;
  cs->peer_until = until;
  memcpy(cs->peer_cn, cn, strlen(cn) + 1);
  return ok;
}

/* The earliest expiry among the client CAs (PEM), 0 if any cannot be read. */
static time_t trust_expiry(const char *ca_pem)
{
  gnutls_x509_crt_t *list = NULL;
  unsigned n = 0;
  gnutls_datum_t d = {(unsigned char *)ca_pem, (unsigned)strlen(ca_pem)};
  if (gnutls_x509_crt_list_import2(&list, &n, &d, GNUTLS_X509_FMT_PEM, 0) != GNUTLS_E_SUCCESS)
    return 0;
  time_t until = 0;
  bool bad = n == 0;
  for (unsigned i = 0; i < n; i++) {
    time_t exp = gnutls_x509_crt_get_expiration_time(list[i]);
    if (exp == (time_t)-1)
      bad = true;
    else if (i == 0 || exp < until)
      until = exp;
    gnutls_x509_crt_deinit(list[i]);
  }
  gnutls_free(list);
  return bad ? 0 : until;
}

static enum MHD_Result send_response(const struct mcim_http_server *srv,
                                     struct MHD_Connection *conn, const char *method,
                                     const char *url, struct mcim_http_response *resp,
                                     const struct req_state *st)
{
  uint64_t cpu0 = st ? mcim_thread_cpu_ns() : 0; /* the answer's dump and queueing too */
  const char *type = NULL;
  char *body = mcim_http_body_(resp, &type);
  size_t len = body ? strlen(body) : 0;
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, body ? (void *)body : (void *)"", MHD_RESPMEM_MUST_COPY);
  free(body);
  if (!r)
    return MHD_NO;
  if (type)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  if (resp->retry_after > 0) { /* RFC 9110 10.2.3: "not yet", ask again in that many seconds */
    char ra[16];
    snprintf(ra, sizeof(ra), "%d", resp->retry_after);
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
  }
  char ch[64];
  if (mcim_http_challenge_(resp, ch, sizeof(ch))) /* RFC 6750 3, RFC 9110 15.5.2 */
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, ch);
  enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
  MHD_destroy_response(r);
  mcim_http_count_(&srv->cfg, method, url, resp, st ? &st->start : NULL,
                   st ? st->cpu_ns + mcim_cpu_delta_ns(cpu0, mcim_thread_cpu_ns()) : 0);
  /* where mcim_http_requests_total counts it: loadgen takes its scrapes and health checks out */
  mcim_work_count(MCIM_WORK_HTTP_REQUEST);
  return ret;
}

static enum MHD_Result problem_now(const struct mcim_http_server *srv,
                                   struct MHD_Connection *conn, const char *method,
                                   const char *url, mcim_cause_t cause, const char *detail,
                                   const struct req_state *st)
{
  struct mcim_http_response resp = {0};
  mcim_http_reply_problem(&resp, cause, 0, "%s", detail);
  enum MHD_Result ret = send_response(srv, conn, method, url, &resp, st);
  mcim_http_response_clear(&resp);
  return ret;
}

/* RFC 7240 "Prefer: wait=N" (N seconds), among other preferences (',' or ';' between them):
 * N bounded by the server's long_poll_max_s; 0 when absent, malformed or not allowed. */
static unsigned prefer_wait_s(const char *v, unsigned max)
{
  if (!v || !max)
    return 0;
  for (const char *p = v; (p = strstr(p, "wait=")) != NULL; p += 5) {
    if (p != v && p[-1] != ' ' && p[-1] != ',' && p[-1] != ';' && p[-1] != '\t')
      continue;
    unsigned n = 0;
    const char *d = p + 5;
    if (*d < '0' || *d > '9')
      return 0;
    for (; *d >= '0' && *d <= '9'; d++)
      n = n > max ? n : n * 10 + (unsigned)(*d - '0');
    return n < max ? n : max;
  }
  return 0;
}

/* mcim_http_after_reply: what this thread's request handler left to run once its answer is
 * sent (on_completed), or at once where there is no answer to wait for (a held request). A
 * connection stays on the pool thread that accepted it, so the request's end comes on the
 * thread that ran its handler. */
static __thread bool in_handler;
static __thread struct {
  void (*fn)(void *arg);
  void *arg;
} after_reply[MCIM_HTTP_AFTER_REPLY_MAX];
static __thread unsigned n_after_reply;

static void run_after_reply(void)
{
  while (n_after_reply > 0) {
    unsigned i = --n_after_reply;
    after_reply[i].fn(after_reply[i].arg);
  }
}

void mcim_http_after_reply(void (*fn)(void *arg), void *arg)
{
  if (!fn)
    return;
  if (!in_handler) {
    fn(arg);
    return;
  }
  for (unsigned i = 0; i < n_after_reply; i++)
    if (after_reply[i].fn == fn && after_reply[i].arg == arg)
      return;
  if (n_after_reply == MCIM_HTTP_AFTER_REPLY_MAX) {
    fn(arg);
    return;
  }
  after_reply[n_after_reply].fn = fn;
  after_reply[n_after_reply].arg = arg;
  n_after_reply++;
}

static enum MHD_Result dispatch(struct mcim_http_server *srv, struct MHD_Connection *conn,
                                const char *url, const char *method, struct req_state *st)
{
  struct mcim_http_response resp = {0};
  if (st->held) { /* dispatched again after its hold (woken, ended or recheck) */
    st->held = false;
    if (!st->answering) { /* until on_completed (a request may be held more than once) */
      st->answering = true;
      st->srv = srv;
      atomic_fetch_add(&srv->answering, 1);
    }
    atomic_fetch_sub(&srv->held, 1);
    mcim_metric_add(&mcim_m_http_long_polls_held, NULL, -1);
  }
  uint64_t began = mcim_monotonic_ns();
  uint64_t cpu0 = mcim_thread_cpu_ns();
  const struct mcim_http_wire w = {
      .method = method,
      .path = url,
      .content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"),
      .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
      .body = st->body,
      .body_len = st->len,
      .peer_cn = peer_common_name,
      .conn = conn,
  };
  run_after_reply(); /* left by a request that ended without on_completed: not lost */
  in_handler = true;
  mcim_http_dispatch_(&srv->cfg, &w, &resp);
  in_handler = false;
  /* "not yet", and the client asked to wait: held until what it waits for happens (a long
   * poll, http_wait.c), never past its wait nor while the server stops */
  if (resp.wait_key[0] && st->wait_until_ns && !atomic_load(&srv->stopping) &&
      mcim_monotonic_ns() + 1000000u < st->wait_until_ns) {
    atomic_fetch_add(&srv->held, 1);
    mcim_metric_add(&mcim_m_http_long_polls_held, NULL, 1); /* before: the resume may be first */
    int held = mcim_http_hold_(srv, conn, resp.wait_key, began, st->wait_until_ns,
                               srv->cfg.long_poll_recheck_ms);
    if (held > 0) {
      st->held = true;
      mcim_http_response_clear(&resp);
      run_after_reply(); /* no answer now to wait for */
      st->cpu_ns += mcim_cpu_delta_ns(cpu0, mcim_thread_cpu_ns());
      return MHD_YES;
    }
    atomic_fetch_sub(&srv->held, 1);
    mcim_metric_add(&mcim_m_http_long_polls_held, NULL, -1);
    /* woken between the read and now: once more at once (else too many held: answer) */
    if (held < 0) {
      mcim_http_response_clear(&resp);
      memset(&resp, 0, sizeof(resp));
      in_handler = true;
      mcim_http_dispatch_(&srv->cfg, &w, &resp);
      in_handler = false;
    }
  }
  st->cpu_ns += mcim_cpu_delta_ns(cpu0, mcim_thread_cpu_ns());
  enum MHD_Result ret = send_response(srv, conn, method, url, &resp, st);
  mcim_http_response_clear(&resp);
  if (ret != MHD_YES)
    run_after_reply(); /* no answer will be sent */
  return ret;
}

/* A completed TLS handshake, full or resumed (include/mcim/opcount.h). */
static void tls_counted(struct MHD_Connection *conn)
{
  const union MHD_ConnectionInfo *ti =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (ti && ti->tls_session)
    mcim_op_count(gnutls_session_is_resumed((gnutls_session_t)ti->tls_session)
                      ? MCIM_OP_TLS_SERVER_RESUMED
                      : MCIM_OP_TLS_SERVER_FULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
  struct mcim_http_server *srv = cls;
  struct req_state *st = *con_cls;
  (void)version;

  if (!st) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci && ci->socket_context && !((struct conn_state *)ci->socket_context)->had_request) {
      ((struct conn_state *)ci->socket_context)->had_request = true;
      tls_counted(conn); /* the connection's first request: its handshake is done */
    }
    st = calloc(1, sizeof(*st));
    if (!st)
      return MHD_NO;
    *con_cls = st;
    clock_gettime(CLOCK_MONOTONIC, &st->start);
    unsigned wait_s = prefer_wait_s(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Prefer"),
                                    srv->cfg.long_poll_max_s);
    if (wait_s)
      st->wait_until_ns = mcim_monotonic_ns() + (uint64_t)wait_s * 1000000000u;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
      char *end = NULL;
      unsigned long long n = strtoull(cl, &end, 10);
      if (!end || *end || n > srv->cfg.max_body)
        st->too_large = true;
      /* A body somewhat too large is read and dropped, so the client surely gets the 413
       * (answering mid-upload resets the connection under a client still sending); a huge
       * one is answered at once and the connection closed. */
      if (!end || *end || n > 16 * (unsigned long long)srv->cfg.max_body)
        st->huge = true;
    }
    if (st->huge) {
      char detail[96];
      snprintf(detail, sizeof(detail), "body larger than %zu bytes", srv->cfg.max_body);
      return problem_now(srv, conn, method, url, MCIM_TOO_LARGE, detail, st);
    }
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (st->too_large || st->len + n > srv->cfg.max_body) {
      st->too_large = true;
      return MHD_YES; /* drain the body, answer 413 at the end */
    }
    if (st->len + n > st->cap) {
      size_t cap = st->cap ? st->cap : 4096;
      while (cap < st->len + n)
        cap *= 2;
      uint8_t *nb = mcim_grow_wiped(st->body, st->len, cap); /* may carry secrets */
      if (!nb)
        return MHD_NO;
      st->body = nb;
      st->cap = cap;
    }
    memcpy(st->body + st->len, upload_data, n);
    st->len += n;
    return MHD_YES;
  }
  if (st->too_large) {
    char detail[96];
    snprintf(detail, sizeof(detail), "body larger than %zu bytes", srv->cfg.max_body);
    return problem_now(srv, conn, method, url, MCIM_TOO_LARGE, detail, st);
  }
  return dispatch(srv, conn, url, method, st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
  (void)cls;
  (void)conn;
  run_after_reply(); /* the answer is sent (or the request ended): what it set off */
  if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
    mcim_metric_inc(&mcim_m_http_connections_timed_out, NULL); /* a request that stalled */
  struct req_state *st = *con_cls;
  if (st) {
    if (st->answering)
      atomic_fetch_sub(&st->srv->answering, 1);
    mcim_wipe(st->body, st->len); /* K and OPc at registration, AVs: not left in the heap */
    free(st->body);
    free(st);
    *con_cls = NULL;
  }
}

/* MHD calls this when a connection opens (after the limits let it in) and closes. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
  const struct mcim_http_server *srv = cls;
  struct conn_state *cs = *socket_context;
  (void)conn;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    mcim_metric_add(&mcim_m_http_connections_open, NULL, 1);
    cs = calloc(1, sizeof(*cs)); /* NULL: only the metric and the verdict's reuse miss it */
    if (cs) {
      clock_gettime(CLOCK_MONOTONIC, &cs->opened);
      cs->srv = srv;
    }
    *socket_context = cs;
    return;
  }
  mcim_metric_add(&mcim_m_http_connections_open, NULL, -1);
  if (!cs)
    return;
  /* Closed before any request, the timeout after it opened: the timeout closed it. MHD
   * starts the timer at the accept and does not restart it during the TLS handshake, so a
   * handshake that never ends is closed after exactly that; the client closing by itself
   * that late (it would have to keep sending request bytes) is not told apart. */
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long long ms = (long long)(now.tv_sec - cs->opened.tv_sec) * 1000 +
                 (now.tv_nsec - cs->opened.tv_nsec) / 1000000;
  if (!cs->had_request && srv->timeout_s && ms + 50 >= (long long)srv->timeout_s * 1000)
    mcim_metric_inc(&mcim_m_http_connections_timed_out, NULL);
  conn_peer_clear(cs);
  free(cs);
  *socket_context = NULL;
}

/* MHD's logger (MHD_LogCallback): fmt is libmicrohttpd's own format string for ap. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
  (void)cls;
  /* MHD has no callback for a connection it closes at the per-address or global limit, nor
   * for a failed TLS handshake (it closes without an alert): only these messages (format
   * strings, untranslated; libmicrohttpd 0.9.75 daemon.c, connection_https.c). */
  if (strstr(fmt, "reached connection limit"))
    mcim_metric_inc(&mcim_m_http_connections_refused, NULL);
  else if (strstr(fmt, "handshake message out of context"))
    mcim_metric_inc(&mcim_m_http_tls_handshake_failures, NULL);
  char msg[512];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = '\0';
  mcim_log_event(MCIM_LOG_DEBUG, NULL, 0, MCIM_OK, "http: %s", msg);
}

/* Every connection is a descriptor: raise the soft open-file limit to the hard one so the
 * connection limit, not the descriptors, is what refuses a flood. Returns the soft limit. */
static unsigned raise_open_file_limit(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 1024;
  rlim_t hard = rl.rlim_max == RLIM_INFINITY ? 1u << 20 : rl.rlim_max;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < hard) {
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = hard;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
      mcim_log_info("open-file limit raised from %llu to %llu (the hard limit)",
                    (unsigned long long)old, (unsigned long long)hard);
    } else {
      mcim_log_warn("cannot raise the open-file limit from %llu to %llu",
                    (unsigned long long)old, (unsigned long long)hard);
      rl.rlim_cur = old;
    }
  }
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UINT32_MAX / 2)
    return UINT32_MAX / 2;
  return (unsigned)rl.rlim_cur;
}

/* The global limit: `wanted` (0: the default), never more than the descriptors left after
 * the reserve, never fewer than one per pool thread (MHD splits it between them). */
static unsigned connection_limit(unsigned wanted, unsigned nofile, unsigned threads)
{
  unsigned room = nofile > 2 * FD_RESERVE ? nofile - FD_RESERVE : nofile / 2;
  unsigned limit = wanted ? wanted : DEFAULT_CONNECTION_CAP;
  if (limit > room) {
    if (wanted)
      mcim_log_warn("max_connections %u lowered to %u: the open-file limit is %u", wanted,
                    room, nofile);
    limit = room;
  }
  return limit < threads ? threads : limit;
}

mcim_cause_t mcim_http_server_start(const struct mcim_http_server_cfg *cfg,
                                    struct mcim_http_server **out)
{
  mcim_cause_t rc = MCIM_INTERNAL;
  struct mcim_http_server *srv = NULL;
  struct sockaddr_in addr;

  *out = NULL;
  if (!cfg || (!cfg->unix_path && (!cfg->cert_file || !cfg->key_file)))
    return MCIM_INVALID_ARGUMENT;
  srv = calloc(1, sizeof(*srv));
  if (!srv)
    return MCIM_NO_MEMORY;
  srv->cfg = *cfg;
  if (!srv->cfg.threads)
    srv->cfg.threads = 4;
  if (!srv->cfg.max_body)
    srv->cfg.max_body = 256 * 1024;
  if (!srv->cfg.role)
    srv->cfg.role = "mcimd";

  if (cfg->unix_path) {
    /* plain HTTP on a Unix socket: the local server (http_local.c), no MHD, no TLS */
    rc = mcim_http_local_start(&srv->cfg, &srv->local);
    if (rc != MCIM_OK)
      goto fail;
    *out = srv;
    return MCIM_OK;
  }
  srv->cert_pem = read_text_file(cfg->cert_file);
  srv->key_pem = read_text_file(cfg->key_file);
  if (!srv->cert_pem || !srv->key_pem) {
    mcim_log_error("cannot read TLS certificate %s or key %s", cfg->cert_file, cfg->key_file);
    rc = MCIM_CONFIG_MISSING;
    goto fail;
  }
  if (cfg->client_ca_file) {
    srv->ca_pem = read_text_file(cfg->client_ca_file);
    if (!srv->ca_pem) {
      mcim_log_error("cannot read client CA %s", cfg->client_ca_file);
      rc = MCIM_CONFIG_MISSING;
      goto fail;
    }
    srv->trust_until = trust_expiry(srv->ca_pem);
  }

  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons(cfg->port);
  if (inet_pton(AF_INET, cfg->bind_addr ? cfg->bind_addr : "127.0.0.1", &addr.sin_addr) != 1) {
    rc = MCIM_CONFIG_INVALID;
    goto fail;
  }

  unsigned nofile = raise_open_file_limit();
  unsigned limit = connection_limit(srv->cfg.connection_limit, nofile, srv->cfg.threads);
  unsigned per_address = srv->cfg.per_address_limit ? srv->cfg.per_address_limit
                                                    : DEFAULT_PER_ADDRESS;
  srv->timeout_s = srv->cfg.timeout_s ? srv->cfg.timeout_s : DEFAULT_TIMEOUT_S;
  /* MHD_USE_POLL, not epoll (MHD_USE_AUTO) nor select. select() cannot watch a descriptor
   * above FD_SETSIZE (1024), so a thousand idle sockets left no room for anyone else. epoll
   * busy-waits through every TLS handshake in libmicrohttpd 0.9.75: gnutls reads the socket
   * itself, so MHD never sees the EAGAIN and keeps the connection "read-ready"; a worker
   * called recv() and epoll_wait(0) about every 25 us until the client's Finished arrived,
   * 2,200 recv() per procedure in the daemons (docs/performance.md). poll() asks gnutls which
   * way the handshake waits and sleeps on that. */
  unsigned flags =
      MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
  if (srv->cfg.long_poll_max_s)
    flags |= MHD_ALLOW_SUSPEND_RESUME; /* long polls: held requests are suspended */
  /* MHD_OPTION_CONNECTION_TIMEOUT is both timeouts: MHD closes a connection whose TLS
   * handshake is not done `timeout` after the accept (the handshake does not restart the
   * timer), and one that sends nothing for `timeout` afterwards (libmicrohttpd 0.9.75
   * connection.c, MHD_connection_handle_idle). */
  srv->daemon = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_HTTPS_MEM_CERT, srv->cert_pem, MHD_OPTION_HTTPS_MEM_KEY, srv->key_pem,
      MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES, MHD_OPTION_THREAD_POOL_SIZE,
      srv->cfg.threads, MHD_OPTION_CONNECTION_TIMEOUT, srv->timeout_s,
      MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
      /* the client CA (mutual TLS) last: without one, the list ends here */
      srv->ca_pem ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, srv->ca_pem, MHD_OPTION_END);
  if (!srv->daemon) {
    mcim_log_error("cannot start the HTTPS server on %s:%u (port in use, or bad certificate/key)",
                   cfg->bind_addr ? cfg->bind_addr : "127.0.0.1", (unsigned)cfg->port);
    rc = MCIM_IO_ERROR;
    goto fail;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
  srv->port = di ? di->port : cfg->port;
  mcim_log_info("connections: at most %u in all, %u per client address; closed when the TLS "
                "handshake is not done %u s after the accept, or nothing arrives for %u s",
                limit, per_address, srv->timeout_s, srv->timeout_s);
  *out = srv;
  return MCIM_OK;

fail:
  mcim_http_server_free(srv);
  return rc;
}

uint16_t mcim_http_server_port(const struct mcim_http_server *srv)
{
  return srv ? srv->port : 0;
}

void mcim_http_server_free(struct mcim_http_server *srv)
{
  if (!srv)
    return;
  if (srv->daemon) {
    /* no suspended connection may be left when MHD stops (its API's rule): every held one is
     * resumed and answered (nothing is held again once stopping is set) before it stops */
    atomic_store(&srv->stopping, true);
    mcim_http_release_(srv);
    for (int i = 0; i < 5000 && atomic_load(&srv->held) + atomic_load(&srv->answering) > 0;
         i++) {
      struct timespec ms = {0, 1000000};
      nanosleep(&ms, NULL);
      if (i % 100 == 99)
        mcim_http_release_(srv); /* one held again just before stopping was seen */
    }
    MHD_stop_daemon(srv->daemon);
  }
  mcim_http_local_free(srv->local);
  if (srv->key_pem) {
    mcim_wipe(srv->key_pem, strlen(srv->key_pem));
    free(srv->key_pem);
  }
  free(srv->cert_pem);
  free(srv->ca_pem);
  free(srv);
}
