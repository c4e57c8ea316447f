/* What both HTTP servers do with a request once it is read (see http_priv.h): route it,
 * check and parse its body, run the handler, count and log the answer. No transport here:
 * neither libmicrohttpd nor GnuTLS, so the device agent's local server links without them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcim/crashpoint.h"
#include "mcim/json_dump.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "net/http_priv.h"

bool mcim_http_route_match(const char *pattern, const char *path, const char **params,
                           size_t *nparams, char *scratch, size_t scratch_len)
{
  size_t np = 0, used = 0;
  const char *p = pattern, *s = path;
  while (*p && *s) {
    if (*p == '{') {
      const char *pe = strchr(p, '}');
      if (!pe)
        return false;
      size_t n = strcspn(s, "/");
      if (n == 0 || np >= MCIM_HTTP_MAX_PARAMS || used + n + 1 > scratch_len)
        return false;
      memcpy(scratch + used, s, n);
      scratch[used + n] = '\0';
      params[np++] = scratch + used;
      used += n + 1;
      p = pe + 1;
      s += n;
      continue;
    }
    if (*p != *s)
      return false;
    p++;
    s++;
  }
  if (*p || *s)
    return false;
  *nparams = np;
  return true;
}

/* Metric labels: the route pattern (never the raw path: it holds ids), "unmatched" for a
 * path no route serves; the method when it is a standard one, else "other". */
static const char *route_label(const struct mcim_http_server_cfg *cfg, const char *url,
                               const char *method)
{
  const char *params[MCIM_HTTP_MAX_PARAMS];
  char scratch[512];
  const char *known = NULL;
  for (size_t i = 0; i < cfg->nroutes; i++) {
    size_t np = 0;
    if (!mcim_http_route_match(cfg->routes[i].pattern, url, params, &np, scratch,
                               sizeof(scratch)))
      continue;
    if (strcmp(cfg->routes[i].method, method) == 0)
      return cfg->routes[i].pattern;
    if (!known)
      known = cfg->routes[i].pattern;
  }
  return known ? known : "unmatched";
}

/* Answers slower than this are logged as warnings, with their time. */
#define SLOW_REQUEST_S 1.0

static const char *method_label(const char *method)
{
  static const char *const std[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
  for (size_t i = 0; i < sizeof(std) / sizeof(std[0]); i++)
    if (strcmp(method, std[i]) == 0)
      return std[i];
  return "other";
}

void mcim_http_count_(const struct mcim_http_server_cfg *cfg, const char *method,
                      const char *url, const struct mcim_http_response *resp,
                      const struct timespec *start, uint64_t cpu_ns)
{
  static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  const char *route = route_label(cfg, url, method);
  const char *m = method_label(method);
  int c = resp->status / 100;
  const char *code = c >= 1 && c <= 5 ? classes[c - 1] : "other";
  double secs = 0;
  mcim_metric_inc(&mcim_m_http_requests, MCIM_LABELS(m, route, mcim_cause_name(resp->cause)));
  if (cpu_ns)
    mcim_metric_add(&mcim_m_http_request_cpu, MCIM_LABELS(m, route), (double)cpu_ns / 1e9);
  if (start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    secs = (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
    mcim_metric_observe(&mcim_m_http_request_duration, MCIM_LABELS(m, route, code), secs);
  }
  /* A slow answer is said with its time: a caller may have given up on it already. */
  if (secs >= SLOW_REQUEST_S)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, resp->cause, "%s %s -> %d after %.1f s", method,
                   url, resp->status, secs);
  else
    mcim_log_event(resp->status >= 500 ? MCIM_LOG_WARN : MCIM_LOG_INFO, NULL, 0, resp->cause,
                   "%s %s -> %d", method, url, resp->status);
}

char *mcim_http_body_(const struct mcim_http_response *resp, const char **content_type)
{
  *content_type = NULL;
  if (resp->text) {
    *content_type = resp->content_type ? resp->content_type : "text/plain";
    return strdup(resp->text);
  }
  if (resp->json) {
    *content_type = resp->problem ? "application/problem+json" : "application/json";
    return mcim_json_dumps(resp->json);
  }
  return NULL;
}

static bool is_json_type(const char *ct)
{
  if (!ct)
    return false;
  size_t n = strlen("application/json");
  return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

/* The record names the route and the request's txn: its body's, else its answer's, else a path
 * parameter of 32 hex digits, else what its handler traced. */
static void crash_before_answer(const struct mcim_http_route *route,
                                const struct mcim_http_request *req,
                                const struct mcim_http_response *resp)
{
  char where[160];
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  if (!txn)
    txn = json_string_value(json_object_get(resp->json, "txn"));
  for (size_t i = 0; !txn && i < req->nparams; i++)
    if (req->params[i] && strlen(req->params[i]) == 32 &&
        strspn(req->params[i], "0123456789abcdef") == 32)
      txn = req->params[i];
  snprintf(where, sizeof(where), "%s %s", route->method, route->pattern);
  mcim_crashpoint_at(MCIM_CRASH_BEFORE_ANSWER, where, txn, -1);
}

void mcim_http_dispatch_(const struct mcim_http_server_cfg *cfg, const struct mcim_http_wire *w,
                         struct mcim_http_response *resp)
{
  struct mcim_http_request req = {0};
  char scratch[512];
  char cn[256];
  const struct mcim_http_route *route = NULL;
  bool path_known = false;

  for (size_t i = 0; i < cfg->nroutes && !route; i++) {
    size_t np = 0;
    if (!mcim_http_route_match(cfg->routes[i].pattern, w->path, req.params, &np, scratch,
                               sizeof(scratch)))
      continue;
    path_known = true;
    if (strcmp(cfg->routes[i].method, w->method) == 0) {
      route = &cfg->routes[i];
      req.nparams = np;
    }
  }
  if (!route) {
    mcim_http_reply_problem(resp, path_known ? MCIM_METHOD_NOT_ALLOWED : MCIM_ROUTE_NOT_FOUND, 0,
                            "%s", path_known ? "method not allowed here" : "unknown path");
    return;
  }

  req.method = w->method;
  req.path = w->path;
  req.content_type = w->content_type;
  if (w->authorization && strncasecmp(w->authorization, "Bearer ", 7) == 0)
    req.bearer = w->authorization + 7;
  if (w->peer_cn && w->peer_cn(w->conn, cn, sizeof(cn)))
    req.peer = cn;
  if ((route->flags & MCIM_ROUTE_PEER_CERT) && !req.peer) {
    mcim_http_reply_problem(resp, MCIM_PEER_NOT_AUTHENTICATED, 0, "%s",
                            "this resource needs a client certificate issued by the lab CA");
    return;
  }

  req.body = w->body;
  req.body_len = w->body_len;
  if (!(route->flags & MCIM_ROUTE_RAW_BODY) && w->body_len > 0) {
    if (!is_json_type(req.content_type)) {
      mcim_http_reply_problem(resp, MCIM_UNSUPPORTED_MEDIA_TYPE, 0, "%s",
                              "send the body as application/json");
      return;
    }
    json_error_t jerr;
    req.json = json_loadb((const char *)w->body, w->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req.json) {
      mcim_http_reply_problem(resp, MCIM_BAD_JSON, 0, "line %d column %d: %s", jerr.line,
                              jerr.column, jerr.text);
      return;
    }
  }

  resp->status = 500;
  if (mcim_crashpoint_armed())
    mcim_crashpoint_begin();
  route->fn(cfg->ctx, &req, resp);
  /* the handler's state committed (it leaves no transaction open), its answer not sent: a
   * crash point (test only; before after_request, which the record's store write needs) */
  if (mcim_crashpoint_armed() && resp->status >= 200 && resp->status < 300)
    crash_before_answer(route, &req, resp);
  if (cfg->after_request)
    cfg->after_request(cfg->ctx);
  if (!resp->json && resp->status >= 400)
    mcim_http_reply_problem(resp, MCIM_INTERNAL, 0, "handler gave no answer");
  json_decref(req.json);
}
