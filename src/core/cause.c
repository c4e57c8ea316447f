#include "mcim/cause.h"

#include <string.h>

struct cause_row {
  int code;
  int http;
  const char *name;
  const char *text;
};

static const struct cause_row cause_rows[] = {
#define MCIM_CAUSE_ROW(name, code, http, text) {code, http, #name, text},
    MCIM_CAUSE_TABLE(MCIM_CAUSE_ROW)
#undef MCIM_CAUSE_ROW
};

static const struct cause_row *cause_find(mcim_cause_t c)
{
  for (size_t i = 0; i < sizeof(cause_rows) / sizeof(cause_rows[0]); i++)
    if (cause_rows[i].code == (int)c)
      return &cause_rows[i];
  return NULL;
}

const char *mcim_cause_name(mcim_cause_t c)
{
  const struct cause_row *r = cause_find(c);
  return r ? r->name : "UNKNOWN";
}

const char *mcim_cause_text(mcim_cause_t c)
{
  const struct cause_row *r = cause_find(c);
  return r ? r->text : "unknown cause";
}

int mcim_cause_http_status(mcim_cause_t c)
{
  const struct cause_row *r = cause_find(c);
  return r ? r->http : 500;
}

int mcim_cause_from_name(const char *name)
{
  if (!name)
    return -1;
  for (size_t i = 0; i < sizeof(cause_rows) / sizeof(cause_rows[0]); i++)
    if (strcmp(cause_rows[i].name, name) == 0)
      return cause_rows[i].code;
  return -1;
}

bool mcim_cause_transient(mcim_cause_t c, long http_status)
{
  switch (c) {
  case MCIM_PEER_UNREACHABLE:
  case MCIM_TIMEOUT:
  case MCIM_STORE_BUSY:
  case MCIM_NO_MEMORY:
  case MCIM_REPLAY_CACHE_FULL:
    return true;
  case MCIM_PEER_NOT_AUTHENTICATED:
  case MCIM_TOO_LARGE:
    /* a server that does not chain to the pinned CA is an attack or a misconfiguration,
     * and an oversized answer will not shrink: retrying cannot help */
    return false;
  default:
    /* a server-side failure may heal; a 4xx will not, nor a local (TRE, store) failure */
    return http_status >= 500;
  }
}
