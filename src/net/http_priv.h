/* Internals shared by the two HTTP servers of src/net/ (and, at the end, the two clients): the roles' HTTPS server
 * (http_server.c, libmicrohttpd on GnuTLS) and the local plain-HTTP server on a Unix socket
 * (http_local.c, the device agent's control channel, without either library). Both hand a
 * request read off the wire to mcim_http_dispatch_ and count its answer with
 * mcim_http_count_; routing, body checks, JSON parsing and metrics are therefore the same. */
#ifndef MCIM_NET_HTTP_PRIV_H
#define MCIM_NET_HTTP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mcim/http.h"

/* A request as the transport read it. */
struct mcim_http_wire {
  const char *method;
  const char *path;          /* decoded, without the query */
  const char *content_type;  /* NULL when absent */
  const char *authorization; /* NULL when absent */
  const uint8_t *body;
  size_t body_len;
  /* The CN of the verified client certificate (NULL: no verified certificate); asked only
   * for a request that matched a route. NULL callback: none. */
  bool (*peer_cn)(void *conn, char *cn, size_t cn_len);
  void *conn;
};

/* Route the request, check and parse its body, run the handler: `resp` is always filled (a
 * problem+json when the request is refused before the handler or the handler gave none). */
void mcim_http_dispatch_(const struct mcim_http_server_cfg *cfg, const struct mcim_http_wire *w,
                         struct mcim_http_response *resp);

/* After the answer went out: the request metrics (route pattern, method, cause; latency
 * since `start` (CLOCK_MONOTONIC) when not NULL; the CPU its handling took, `cpu_ns`, when
 * measured, else 0) and the log line. */
void mcim_http_count_(const struct mcim_http_server_cfg *cfg, const char *method,
                      const char *url, const struct mcim_http_response *resp,
                      const struct timespec *start, uint64_t cpu_ns);

/* The body of an answer (a JSON dump or the text, malloc'd; NULL: no body) and its type. */
char *mcim_http_body_(const struct mcim_http_response *resp, const char **content_type);
/* The WWW-Authenticate header of an answer, if it has one (false: none). A refused access
 * token (resp->bearer_error set): RFC 6750 section 3's `Bearer realm="mcim"`, with
 * `error="..."` when the code is not empty. Any other 401 refused a credential other than the
 * token (a signed statement or proof, a certificate, an AKA answer), which RFC 9110 15.5.2
 * still asks a challenge of: `MCIM-Statement realm="mcim"`, a scheme of ours that no Bearer
 * client takes for its token's. */
bool mcim_http_challenge_(const struct mcim_http_response *resp, char *out, size_t len);
/* A WWW-Authenticate value `v` (both clients): a Bearer challenge (RFC 6750 3, the scheme
 * case-insensitive) sets *bearer, and `error` (`len` bytes) to its error code when that is
 * made of lower-case letters and '_' and fits (RFC 6750 3.1's codes are), else "". Another
 * scheme is not ours: nothing set. Only the first challenge of the value is read. */
void mcim_http_bearer_parse_(const char *v, bool *bearer, char *error, size_t len);

/* The result of a call that got an answer (both clients): `status`, the body parsed as JSON
 * when it is JSON, and the cause: MCIM_OK for 2xx, else the peer's problem+json cause and
 * detail, else MCIM_PEER_ERROR with "HTTP <status> from <url>". */
void mcim_http_result_from_answer_(struct mcim_http_result *result, long status,
                                   const char *body, size_t len, const char *url);

/* Long polls (http_wait.c, the HTTPS server only). Hold the request on `conn` (suspended,
 * from its access handler) until mcim_http_wake(key), `until_ns`, or every `recheck_ms` (0:
 * never); MHD then calls the access handler again. 1: held; -1: not held, woken since
 * `since_ns` (when its dispatch began): dispatch it again now; 0: not held (too many held, no
 * thread): answer now. */
struct MHD_Connection;
int mcim_http_hold_(const void *srv, struct MHD_Connection *conn, const char *key,
                     uint64_t since_ns, uint64_t until_ns, unsigned recheck_ms);
/* Server `srv` stops: every request it holds is dispatched again now (and must not be held
 * again). How many were held. */
size_t mcim_http_release_(const void *srv);

#endif
