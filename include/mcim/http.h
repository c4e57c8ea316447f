/* HTTP/1.1 over TLS between roles: a server (libmicrohttpd on GnuTLS) with a
 * route table, and a client (libcurl on OpenSSL) with connection reuse; for the device agent,
 * which must stay small, a local server on a Unix socket and a client on OpenSSL alone, with
 * the same contracts and neither library.
 * Bodies are JSON (jansson); every error is an RFC 9457 problem+json with a
 * `cause` from the cause table and the seed `step` that failed.
 *
 * The server owns no protocol logic: handlers are plain functions that get a
 * parsed request and fill a response, so they can be unit tested without sockets. */
#ifndef MCIM_HTTP_H
#define MCIM_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

#define MCIM_HTTP_MAX_PARAMS 4
#define MCIM_HTTP_WAIT_KEY_LEN 96

struct mcim_http_request {
  const char *method;
  const char *path;
  const char *content_type; /* NULL when absent */
  const char *bearer;       /* token of "Authorization: Bearer ..." or NULL */
  const char *peer;         /* CN of the verified client certificate, or NULL */
  const uint8_t *body;
  size_t body_len;
  json_t *json;             /* parsed body for application/json requests, else NULL */
  const char *params[MCIM_HTTP_MAX_PARAMS]; /* captures of {name} path segments, in order */
  size_t nparams;
};

struct mcim_http_response {
  int status;
  json_t *json;        /* owned by the response */
  bool problem;        /* body is application/problem+json */
  mcim_cause_t cause;  /* for logs and metrics; MCIM_OK on success */
  char *text;               /* a body that is not JSON (GET /metrics), owned, or NULL; set
                               with mcim_http_reply_text, sent instead of `json` */
  const char *content_type; /* of `text` (a static string) */
  int retry_after;          /* > 0: a Retry-After header, seconds (the answer is "not yet") */
  /* Non-NULL: the access token was refused, said as RFC 6750 section 3 says it, a
   * `WWW-Authenticate: Bearer` challenge with this error code ("" none: no token came,
   * "invalid_token", "insufficient_scope"); a static string (mcim_role_access_challenge). */
  const char *bearer_error;
  /* A "not yet" answer the server may hold for a client that asked to wait (RFC 7240 Prefer:
   * wait): the event that may change it, woken by mcim_http_wake (mcim_http_reply_wait_on);
   * empty: sent at once. */
  char wait_key[MCIM_HTTP_WAIT_KEY_LEN];
};

typedef void (*mcim_http_handler_fn)(void *ctx, const struct mcim_http_request *req,
                                     struct mcim_http_response *resp);

enum {
  MCIM_ROUTE_PEER_CERT = 1u << 0, /* caller must present a client certificate of the lab CA */
  MCIM_ROUTE_RAW_BODY = 1u << 1,  /* do not require/parse a JSON body */
};

struct mcim_http_route {
  const char *method;  /* "GET", "POST", ... */
  const char *pattern; /* "/v1/icf/avs" or "/v1/orders/{id}"; {x} matches one segment */
  mcim_http_handler_fn fn;
  unsigned flags;
};

struct mcim_http_server_cfg {
  const char *role;           /* for logs */
  const char *bind_addr;      /* default "127.0.0.1" */
  uint16_t port;              /* 0: any free port, see mcim_http_server_port() */
  const char *unix_path;      /* listen on this Unix socket instead, plain HTTP (local control
                                 channels; file permissions protect it): no TLS files needed */
  const char *cert_file;      /* PEM server certificate (required unless unix_path) */
  const char *key_file;       /* PEM private key */
  const char *client_ca_file; /* PEM CA for client certificates; NULL: no mTLS */
  unsigned threads;           /* thread pool size, default 4 */
  size_t max_body;            /* default 256 KiB */
  /* Hostile-load bounds (TLS server only; 0 takes the default). A connection is a file
   * descriptor and a TLS session: without bounds, idle sockets exhaust them. */
  unsigned per_address_limit; /* connections one client IP address may hold, default 256 */
  unsigned connection_limit;  /* connections in all, default min(4096, open-file limit - 256);
                                 clamped to what the open-file limit allows */
  unsigned timeout_s;         /* TLS handshake not done this long after the accept, or no byte
                                 for this long: the connection is closed; default 10 */
  /* Long polls (src/net/http_wait.c): a "not yet" answer with a wait key is held up to the
   * client's Prefer: wait, at most long_poll_max_s (0: never held; TLS server only), and
   * dispatched again when woken, at its end, and every long_poll_recheck_ms when not 0
   * (another instance on the same database may do what it waits for). */
  unsigned long_poll_max_s;
  unsigned long_poll_recheck_ms;
  const struct mcim_http_route *routes;
  size_t nroutes;
  void *ctx; /* passed to every handler */
  /* Optional: called with ctx on the handler's thread after each request it handled (the
   * roles give their store connection back to their pool). */
  void (*after_request)(void *ctx);
};

struct mcim_http_server;

mcim_cause_t mcim_http_server_start(const struct mcim_http_server_cfg *cfg,
                                    struct mcim_http_server **out);
uint16_t mcim_http_server_port(const struct mcim_http_server *srv);
void mcim_http_server_free(struct mcim_http_server *srv);

/* The local server, without libmicrohttpd or TLS: plain HTTP/1.1 on `cfg->unix_path` (a
 * local control channel, created 0600: the file's permissions protect it), served by
 * `cfg->threads` threads blocked in accept() (an idle server never wakes up), one request per
 * connection (answers carry "Connection: close"), a connection silent for 30 s is closed.
 * Routes, bodies, problems and metrics as the HTTPS server. mcim_http_server_start() uses it
 * for a unix_path; the device agent calls it directly, so that it links neither library. */
struct mcim_http_local;
mcim_cause_t mcim_http_local_start(const struct mcim_http_server_cfg *cfg,
                                   struct mcim_http_local **out);
void mcim_http_local_free(struct mcim_http_local *srv);

/* Response helpers. reply_json steals `body`. */
void mcim_http_reply_json(struct mcim_http_response *resp, int status, json_t *body);
/* A text body (`text` malloc'd, stolen; NULL answers 503 NO_MEMORY) of `content_type`. */
void mcim_http_reply_text(struct mcim_http_response *resp, int status, const char *content_type,
                          char *text);
/* After a "not yet" answer: the server may hold it, for a client that asked to wait, until
 * mcim_http_wake() with the same key (at most MCIM_HTTP_WAIT_KEY_LEN - 1 bytes: a longer one
 * is not set, and the answer goes out at once). */
void mcim_http_reply_wait_on(struct mcim_http_response *resp, const char *key_fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* What `key` names may have happened (call it after the commit that made it true): the held
 * requests waiting on it are dispatched again now. Cheap when none waits. */
void mcim_http_wake(const char *key_fmt, ...) __attribute__((format(printf, 1, 2)));
/* Other instances of the role (one database, several processes): `fn(key, arg)` is called by
 * every mcim_http_wake of this process after its local wake, to tell them (src/roles/
 * wake_relay.c: a PostgreSQL NOTIFY). Set once, before serving; NULL unsets. */
void mcim_http_wake_relay(void (*fn)(const char *key, void *arg), void *arg);
/* A wake another instance sent: this process's held requests on `key` only, not relayed. */
void mcim_http_wake_local(const char *key);
/* Whether the relay delivers the other instances' wakes now. While it does, held requests are
 * not dispatched again every recheck interval (a wake reaches them); when it becomes live
 * (again), every held request is dispatched once, for the wakes it may have missed. */
void mcim_http_wake_live(bool live);
/* The calling thread waits for a wake of `key` (mcim_http_wake here, or another instance's
 * through the relay) that came at or after `since_ns` (mcim_monotonic_ns, taken before the
 * caller read the state it waits to change): at most `max_ms`, and while the relay is not live
 * at most `recheck_ms` (0: no recheck), as a held request. True when woken; false when the time
 * ran out (the caller reads the state again either way). For a handler that must wait within
 * its own call; it holds its thread meanwhile, so keep `max_ms` short. */
bool mcim_http_await_wake(const char *key, uint64_t since_ns, unsigned max_ms,
                          unsigned recheck_ms);
/* Run fn(arg) once the answer to the request this thread is handling has been sent (or the
 * request ended without one); outside a request handler of the HTTPS server, at once. For
 * work a handler sets off that need not compete with its own answer for a core (the outbox
 * worker's delivery of what the handler's commit queued). The same (fn, arg) runs once per
 * request; past MCIM_HTTP_AFTER_REPLY_MAX distinct ones, at once. */
#define MCIM_HTTP_AFTER_REPLY_MAX 4
void mcim_http_after_reply(void (*fn)(void *arg), void *arg);
/* Free what a response owns (the server does it after sending; for handler tests). */
void mcim_http_response_clear(struct mcim_http_response *resp);
void mcim_http_reply_problem(struct mcim_http_response *resp, mcim_cause_t cause, int step,
                             const char *detail_fmt, ...) __attribute__((format(printf, 4, 5)));
/* The problem+json object for a cause (RFC 9457: type, title, status, detail, plus cause and step). */
json_t *mcim_problem_new(mcim_cause_t cause, int step, const char *detail);

/* Match `path` against `pattern`; captures go to params. Exposed for tests. */
bool mcim_http_route_match(const char *pattern, const char *path, const char **params,
                           size_t *nparams, char *scratch, size_t scratch_len);

/* ---- client ---- */
struct mcim_http_client_cfg {
  const char *unix_path; /* talk plain HTTP over this Unix socket (URLs http://localhost/...) */
  const char *ca_file;   /* PEM CA that server certificates must chain to (pinned); required
                            unless unix_path */
  const char *cert_file; /* client certificate for mTLS, or NULL */
  const char *key_file;
  long timeout_ms;       /* whole request; default 10000 */
};

struct mcim_http_client;

/* One client per thread: it keeps its connections open for reuse. */
mcim_cause_t mcim_http_client_new(const struct mcim_http_client_cfg *cfg,
                                  struct mcim_http_client **out);
void mcim_http_client_free(struct mcim_http_client *cli);

/* The same contract without libcurl, on OpenSSL alone (src/net/http_lite.c): the device
 * agent's client, since libcurl's libraries (Kerberos, LDAP, GnuTLS, SSH, ...) cost it
 * megabytes of resident memory. HTTP/1.1 only, the same TLS policy and pinning, connections
 * kept and reused, SSLKEYLOGFILE honoured; see the file for the details. */
struct mcim_http_lite;
mcim_cause_t mcim_http_lite_new(const struct mcim_http_client_cfg *cfg,
                                struct mcim_http_lite **out);
void mcim_http_lite_free(struct mcim_http_lite *cli);
/* The next request asks the server to hold a "not yet" answer up to `seconds` (RFC 7240
 * "Prefer: wait"), and allows itself that much longer; 0: asks nothing. One request only. */
void mcim_http_lite_prefer_wait(struct mcim_http_lite *cli, int seconds);
/* From another thread: the call in progress (waiting on its socket, a held long poll included)
 * and every later one end at once, MCIM_TIMEOUT "interrupted: the client stops". For a stop:
 * the client is then only fit to be freed. */
void mcim_http_lite_interrupt(struct mcim_http_lite *cli);
/* Close the kept connections (the next call connects again: a full TLS handshake, sessions
 * are not resumed); bench/bench_floor.c times handshakes with it. */
void mcim_http_lite_close_connections(struct mcim_http_lite *cli);

struct mcim_http_result {
  long status;        /* HTTP status, 0 if no answer */
  json_t *json;       /* parsed body (NULL if none or not JSON); caller frees via _result_clear */
  mcim_cause_t cause; /* MCIM_OK for 2xx; the peer's cause for problem+json; else a transport cause */
  char detail[256];   /* peer's detail or the transport error text */
  long retry_after;   /* the answer's Retry-After in seconds, 0 if none (libcurl client only) */
  /* The answer's `WWW-Authenticate: Bearer` challenge (RFC 6750 section 3): the server refused
   * the access token, not something else of the request that fails with the same cause (a
   * TRE's statement); its error code, "" if it gave none */
  bool bearer_challenge;
  char bearer_error[24];
  /* The first WWW-Authenticate header as it came (truncated), "" if none: a refused statement
   * or proof has `MCIM-Statement realm="mcim"` (RFC 9110 15.5.2), for logs and tests */
  char challenge[64];
};

/* `body` may be NULL (no body); `bearer` may be NULL. Returns result->cause. */
mcim_cause_t mcim_http_request(struct mcim_http_client *cli, const char *method, const char *url,
                               const json_t *body, const char *bearer,
                               struct mcim_http_result *result);
void mcim_http_result_clear(struct mcim_http_result *result);
/* GET `url` for a body that is not JSON (e.g. /metrics): *text is the body as received,
 * NUL-terminated (free() it), NULL without an answer. */
mcim_cause_t mcim_http_get_text(struct mcim_http_client *cli, const char *url,
                                struct mcim_http_result *result, char **text);
/* mcim_http_request with the small client. */
mcim_cause_t mcim_http_lite_request(struct mcim_http_lite *cli, const char *method,
                                    const char *url, const json_t *body, const char *bearer,
                                    struct mcim_http_result *result);
/* The same, to the network role named `peer`: over https the server's certificate must name
 * it (CN), beside chaining to the CA and matching the host; PEER_NOT_AUTHENTICATED if not. */
mcim_cause_t mcim_http_lite_request_to(struct mcim_http_lite *cli, const char *peer,
                                       const char *method, const char *url, const json_t *body,
                                       const char *bearer, struct mcim_http_result *result);
/* The certificate (PEM, free()) the server showed on the most recent kept https connection
 * to `peer` (mcim_http_lite_request_to: chained to the CA, CN = peer, host matched at the
 * handshake). MCIM_NOT_FOUND without one. */
mcim_cause_t mcim_http_lite_peer_cert(struct mcim_http_lite *cli, const char *peer, char **pem);

#endif
