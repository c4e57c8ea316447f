/* The HTTP client roles and the device agent use to call peers: libcurl on
 * OpenSSL, TLS 1.2+ with AEAD suites only, server certificate pinned to the lab CA, optional
 * client certificate (mTLS). One client per thread; its curl handle keeps
 * connections alive so consecutive calls to one peer reuse them. */
#include <curl/curl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcim/http.h"
#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/opcount.h"
#include "mcim/util.h"
#include "net/http_priv.h"

#define MAX_ANSWER (1u << 20)

/* The server's policy (http_server.c), in OpenSSL's names: TLS 1.2 with ECDHE and an AEAD
 * cipher only (no CBC, no SHA1 MAC, no RSA key exchange); TLS 1.3 suites are all AEAD, the
 * CCM ones are left out as the server does. */
#define TLS12_CIPHERS                                                                      \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"                           \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"  \
  "ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_CIPHERS "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

struct mcim_http_client {
  CURL *curl;
  struct mcim_http_client_cfg cfg;
  char *unix_path;
  char *ca_file;
  char *cert_file;
  char *key_file;
};

struct answer {
  char *buf;
  size_t len;
  bool overflow;
  CURL *curl;
  int tls_resumed; /* -1: not seen yet; else whether the connection's TLS session was resumed */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
  curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dup_or_null(const char *s)
{
  return s ? strdup(s) : NULL;
}

mcim_cause_t mcim_http_client_new(const struct mcim_http_client_cfg *cfg,
                                  struct mcim_http_client **out)
{
  *out = NULL;
  if (!cfg || (!cfg->ca_file && !cfg->unix_path))
    return MCIM_INVALID_ARGUMENT;
  pthread_once(&curl_once, curl_init_once);
  if (curl_init_rc != CURLE_OK)
    return MCIM_INTERNAL;
  struct mcim_http_client *cli = calloc(1, sizeof(*cli));
  if (!cli)
    return MCIM_NO_MEMORY;
  cli->cfg = *cfg;
  cli->unix_path = dup_or_null(cfg->unix_path);
  cli->ca_file = dup_or_null(cfg->ca_file);
  cli->cert_file = dup_or_null(cfg->cert_file);
  cli->key_file = dup_or_null(cfg->key_file);
  cli->curl = curl_easy_init();
  if (!cli->curl || (cfg->ca_file && !cli->ca_file) || (cfg->unix_path && !cli->unix_path)) {
    mcim_http_client_free(cli);
    return MCIM_NO_MEMORY;
  }
  if (cli->cfg.timeout_ms <= 0)
    cli->cfg.timeout_ms = 10000;
  *out = cli;
  return MCIM_OK;
}

void mcim_http_client_free(struct mcim_http_client *cli)
{
  if (!cli)
    return;
  if (cli->curl)
    curl_easy_cleanup(cli->curl);
  free(cli->unix_path);
  free(cli->ca_file);
  free(cli->cert_file);
  free(cli->key_file);
  free(cli);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct answer *a = userdata;
  size_t n = size * nmemb;
  if (a->len + n > MAX_ANSWER) {
    a->overflow = true;
    return 0; /* aborts the transfer */
  }
  char *nb = mcim_grow_wiped(a->buf, a->len, a->len + n + 1); /* may carry secrets (AVs) */
  if (!nb)
    return 0;
  a->buf = nb;
  memcpy(a->buf + a->len, ptr, n);
  a->len += n;
  a->buf[a->len] = '\0';
  return n;
}

/* The answer's first header line: whether its connection's TLS session was resumed (the
 * SSL object is only valid while the transfer runs). */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct answer *a = userdata;
  (void)ptr;
  if (a->tls_resumed < 0) {
    struct curl_tlssessioninfo *ti = NULL;
    a->tls_resumed = 0;
    if (curl_easy_getinfo(a->curl, CURLINFO_TLS_SSL_PTR, &ti) == CURLE_OK && ti &&
        ti->backend == CURLSSLBACKEND_OPENSSL && ti->internals)
      a->tls_resumed = SSL_session_reused((SSL *)ti->internals) ? 1 : 0;
  }
  return size * nmemb;
}

/* A TLS handshake the call made (include/mcim/opcount.h): a new connection over https that
 * got an answer. */
static void tls_counted(struct mcim_http_client *cli, const struct answer *a)
{
  long connects = 0;
  if (cli->unix_path || curl_easy_getinfo(cli->curl, CURLINFO_NUM_CONNECTS, &connects) != CURLE_OK ||
      connects <= 0)
    return;
  mcim_op_count(a->tls_resumed > 0 ? MCIM_OP_TLS_CLIENT_RESUMED : MCIM_OP_TLS_CLIENT_FULL);
}

static mcim_cause_t transport_cause(CURLcode cc)
{
  switch (cc) {
  case CURLE_OPERATION_TIMEDOUT:
    return MCIM_TIMEOUT;
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  /* A handshake cut short (the peer died or restarted mid-handshake) is a transport
   * failure, worth retrying; a certificate that does not verify is not. */
  case CURLE_SSL_CONNECT_ERROR:
    return MCIM_PEER_UNREACHABLE;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
    return MCIM_PEER_NOT_AUTHENTICATED;
  case CURLE_WRITE_ERROR:
    return MCIM_TOO_LARGE;
  default:
    return MCIM_PEER_UNREACHABLE;
  }
}

/* `raw`: the answer's body as received (NUL-terminated; NULL if none), for answers that are
 * not JSON. */
static mcim_cause_t request(struct mcim_http_client *cli, const char *method, const char *url,
                            const json_t *body, const char *bearer,
                            struct mcim_http_result *result, char **raw)
{
  struct curl_slist *hdrs = NULL;
  struct answer ans = {.curl = cli->curl, .tls_resumed = -1};
  char *text = NULL;
  char authz[4096];
  char errbuf[CURL_ERROR_SIZE] = "";
  CURL *c = cli->curl;

  memset(result, 0, sizeof(*result));
  result->cause = MCIM_INTERNAL;

  curl_easy_reset(c); /* keeps the connection cache, drops the previous call's options */
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, cli->cfg.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, cli->cfg.timeout_ms);
  if (cli->unix_path) {
    /* local control channel: plain HTTP on a socket only its owner can open */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, cli->unix_path);
  } else {
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_SSL_CIPHER_LIST, TLS12_CIPHERS);
    curl_easy_setopt(c, CURLOPT_TLS13_CIPHERS, TLS13_CIPHERS);
    curl_easy_setopt(c, CURLOPT_CAINFO, cli->ca_file);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  if (!cli->unix_path && cli->cert_file && cli->key_file) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, cli->cert_file);
    curl_easy_setopt(c, CURLOPT_SSLKEY, cli->key_file);
  }
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans);
  if (!cli->unix_path) {
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &ans);
  }
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);

  hdrs = curl_slist_append(hdrs, "Accept: application/json, application/problem+json");
  if (body) {
    text = mcim_json_dumps(body);
    if (!text) {
      result->cause = MCIM_NO_MEMORY;
      goto out;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
  }
  if (bearer) {
    if ((size_t)snprintf(authz, sizeof(authz), "Authorization: Bearer %s", bearer) >=
        sizeof(authz)) {
      result->cause = MCIM_TOO_LARGE;
      goto out;
    }
    hdrs = curl_slist_append(hdrs, authz);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

  CURLcode cc = curl_easy_perform(c);
  if (cc != CURLE_OK) {
    result->cause = ans.overflow ? MCIM_TOO_LARGE : transport_cause(cc);
    /* the detail is for people: a long URL or message may be cut */
    int n = snprintf(result->detail, sizeof(result->detail), "%.120s: ", url);
    if (n > 0 && (size_t)n < sizeof(result->detail))
      snprintf(result->detail + n, sizeof(result->detail) - (size_t)n, "%.120s",
               errbuf[0] ? errbuf : curl_easy_strerror(cc));
    goto out;
  }
  tls_counted(cli, &ans);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  mcim_http_result_from_answer_(result, status, ans.buf, ans.len, url);
  curl_off_t retry_after = 0; /* "not yet" answers say when to ask again (seconds form) */
  if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0)
    result->retry_after = (long)retry_after;
  /* RFC 6750 3: the access token refused. The first Bearer challenge among the answer's
   * WWW-Authenticate headers, as the small client takes it (http_lite_answer.c), and the first
   * header as it came. */
  struct curl_header *wa = NULL;
  for (size_t i = 0; !result->bearer_challenge && i < 8 &&
                     curl_easy_header(c, "WWW-Authenticate", i, CURLH_HEADER, -1, &wa) ==
                         CURLHE_OK &&
                     wa;
       i++) {
    mcim_http_bearer_parse_(wa->value, &result->bearer_challenge, result->bearer_error,
                            sizeof(result->bearer_error));
    if (i == 0)
      snprintf(result->challenge, sizeof(result->challenge), "%s", wa->value);
  }

out:
  mcim_log_event(MCIM_LOG_DEBUG, NULL, 0, result->cause, "%s %s -> %ld", method, url,
                 result->status);
  curl_slist_free_all(hdrs);
  /* the body and the answer may carry secrets (K and OPc at registration, AVs), the
   * header a bearer token: wiped, not only freed */
  if (text)
    mcim_wipe(text, strlen(text));
  free(text);
  mcim_wipe(authz, sizeof(authz));
  if (raw && result->status > 0) {
    *raw = ans.buf;
    ans.buf = NULL;
  }
  mcim_wipe(ans.buf, ans.len);
  free(ans.buf);
  return result->cause;
}

mcim_cause_t mcim_http_request(struct mcim_http_client *cli, const char *method, const char *url,
                               const json_t *body, const char *bearer,
                               struct mcim_http_result *result)
{
  return request(cli, method, url, body, bearer, result, NULL);
}

mcim_cause_t mcim_http_get_text(struct mcim_http_client *cli, const char *url,
                                struct mcim_http_result *result, char **text)
{
  *text = NULL;
  return request(cli, "GET", url, NULL, NULL, result, text);
}
