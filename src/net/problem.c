/* problem+json (RFC 9457) bodies and response helpers shared by every role. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "net/http_priv.h"

json_t *mcim_problem_new(mcim_cause_t cause, int step, const char *detail)
{
  char type[96];
  snprintf(type, sizeof(type), "urn:mcim:cause:%s", mcim_cause_name(cause));
  json_t *p = json_object();
  if (!p)
    return NULL;
  json_object_set_new(p, "type", json_string(type));
  json_object_set_new(p, "title", json_string(mcim_cause_text(cause)));
  json_object_set_new(p, "status", json_integer(mcim_cause_http_status(cause)));
  json_object_set_new(p, "cause", json_string(mcim_cause_name(cause)));
  if (detail && *detail)
    json_object_set_new(p, "detail", json_string(detail));
  if (step > 0)
    json_object_set_new(p, "step", json_integer(step));
  return p;
}

void mcim_http_response_clear(struct mcim_http_response *resp)
{
  json_decref(resp->json);
  resp->json = NULL;
  free(resp->text);
  resp->text = NULL;
  resp->content_type = NULL;
  resp->bearer_error = NULL;
}

void mcim_http_bearer_parse_(const char *v, bool *bearer, char *error, size_t len)
{
  if (!v || strncasecmp(v, "Bearer", 6) != 0 ||
      (v[6] && v[6] != ' ' && v[6] != '\t' && v[6] != ','))
    return;
  *bearer = true;
  error[0] = '\0';
  const char *e = strstr(v + 6, "error=");
  if (!e)
    return;
  e += 6;
  bool quoted = *e == '"'; /* RFC 9110 11.2: a token or a quoted string */
  e += quoted;
  size_t n = strspn(e, "abcdefghijklmnopqrstuvwxyz_");
  char end = e[n];
  if (n == 0 || n >= len ||
      (quoted ? end != '"' : end && end != ',' && end != ' ' && end != '\t'))
    return;
  memcpy(error, e, n);
  error[n] = '\0';
}

bool mcim_http_challenge_(const struct mcim_http_response *resp, char *out, size_t len)
{
  if (resp->bearer_error && resp->bearer_error[0])
    snprintf(out, len, "Bearer realm=\"mcim\", error=\"%s\"", resp->bearer_error);
  else if (resp->bearer_error)
    snprintf(out, len, "Bearer realm=\"mcim\"");
  else if (resp->status == 401)
    snprintf(out, len, "MCIM-Statement realm=\"mcim\"");
  else
    return false;
  return true;
}

void mcim_http_reply_wait_on(struct mcim_http_response *resp, const char *key_fmt, ...)
{
  va_list ap;
  va_start(ap, key_fmt);
  int n = vsnprintf(resp->wait_key, sizeof(resp->wait_key), key_fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(resp->wait_key))
    resp->wait_key[0] = '\0';
}

void mcim_http_reply_text(struct mcim_http_response *resp, int status, const char *content_type,
                          char *text)
{
  if (!text) {
    mcim_http_reply_problem(resp, MCIM_NO_MEMORY, 0, "no memory for the answer");
    return;
  }
  mcim_http_response_clear(resp);
  resp->status = status;
  resp->text = text;
  resp->content_type = content_type;
  resp->problem = false;
  resp->cause = MCIM_OK;
}

void mcim_http_reply_json(struct mcim_http_response *resp, int status, json_t *body)
{
  mcim_http_response_clear(resp);
  resp->status = status;
  resp->json = body;
  resp->problem = false;
  resp->cause = MCIM_OK;
}

void mcim_http_reply_problem(struct mcim_http_response *resp, mcim_cause_t cause, int step,
                             const char *detail_fmt, ...)
{
  char detail[512] = "";
  if (detail_fmt) {
    va_list ap;
    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof(detail), detail_fmt, ap);
    va_end(ap);
  }
  mcim_http_response_clear(resp);
  resp->status = mcim_cause_http_status(cause);
  resp->json = mcim_problem_new(cause, step, detail);
  resp->problem = true;
  resp->cause = cause;
}

void mcim_http_result_clear(struct mcim_http_result *result)
{
  if (!result)
    return;
  json_decref(result->json);
  result->json = NULL;
}

void mcim_http_result_from_answer_(struct mcim_http_result *result, long status,
                                   const char *body, size_t len, const char *url)
{
  result->status = status;
  if (len) {
    json_error_t jerr;
    result->json = json_loadb(body, len, 0, &jerr);
  }
  if (status >= 200 && status < 300) {
    result->cause = MCIM_OK;
    return;
  }
  /* An error: take the peer's cause from its problem+json when it has one. */
  result->cause = MCIM_PEER_ERROR;
  if (result->json) {
    int peer = mcim_cause_from_name(json_string_value(json_object_get(result->json, "cause")));
    const char *detail = json_string_value(json_object_get(result->json, "detail"));
    if (peer > 0)
      result->cause = (mcim_cause_t)peer;
    snprintf(result->detail, sizeof(result->detail), "%s", detail ? detail : "");
  } else {
    snprintf(result->detail, sizeof(result->detail), "HTTP %ld from %.200s", status, url);
  }
}
