/* The configuration every role shares (include/mcim/role.h): the common keys
 * (mcim_role_common_spec) merged with the kind's and, for a kind with an AuC, the AuC
 * backend's; checked (`mcimd --check-config`) and described (`--describe-config`) without
 * starting anything; and the role names and kinds it accepts. Apart from runtime.c, which
 * starts a role from this configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/pki.h"
#include "mcim/role.h"
#include "roles/auc_config.h"
#include "roles/role_priv.h"

/* clang-format off */
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const log_levels[] = {"debug", "info", "notice", "warn", "error", NULL};

const mcim_config_spec_t mcim_role_common_spec[] = {
    {.name = "name", .type = MCIM_CFG_STRING, .required = true, .min = 1, .max = 63,
     .help = "instance name (certificate CN, trace lifeline): ro, vno, pva, m2mes, sho-a, ..."},
    {.name = "listen_addr", .type = MCIM_CFG_STRING, .def = "127.0.0.1", .min = 7, .max = 15,
     .help = "IPv4 address the HTTPS server binds"},
    {.name = "listen_port", .type = MCIM_CFG_INT, .required = true, .min = 1, .max = 65535,
     .help = "TCP port of the HTTPS server"},
    {.name = "tls_cert", .type = MCIM_CFG_PATH, .required = true,
     .help = "PEM certificate of this instance (operators' CA)"},
    {.name = "tls_key", .type = MCIM_CFG_PATH, .required = true,
     .help = "PEM private key of this instance (TLS and statement signing)"},
    {.name = "operators_ca", .type = MCIM_CFG_PATH, .required = true,
     .help = "PEM certificate of the operators' CA (peers' certificates chain to it)"},
    {.name = "m2mes_ca", .type = MCIM_CFG_PATH, .required = true,
     .help = "PEM certificate of the M2MES CA (device TRE certificates chain to it)"},
    /* secret: a PostgreSQL locator may carry a password, so a refused value is not echoed */
    {.name = "database", .type = MCIM_CFG_STRING, .required = true, .min = 1, .max = 1024,
     .secret = true, .help = "store locator: a SQLite file path (relative to the config folder), sqlite:PATH, or "
             "a PostgreSQL database postgres://USER@HOST[:PORT]/DB (libpq URI)"},
    {.name = "storage_key", .type = MCIM_CFG_PATH, .required = true,
     .help = "file with the 256-bit key that seals secrets at rest (created 0600 if missing)"},
    {.name = "peers", .type = MCIM_CFG_PATH, .required = true,
     .help = "JSON file {\"name\": \"https://host:port\", ...} of the other role instances"},
    {.name = "threads", .type = MCIM_CFG_INT, .def = "4", .min = 1, .max = 256,
     .help = "HTTPS server thread pool size"},
    {.name = "max_body", .type = MCIM_CFG_INT, .def = "262144", .min = 1024, .max = 16777216,
     .help = "largest request body accepted, bytes"},
    /* generous: many devices share one address behind a NAT, and a lab runs on one */
    {.name = "max_connections_per_ip", .type = MCIM_CFG_INT, .def = "256", .min = 1,
     .max = 65535,
     .help = "connections one client IP address may hold open; more are closed at once"},
    {.name = "max_connections", .type = MCIM_CFG_INT, .def = "0", .min = 0, .max = 1000000,
     .help = "connections held open in all; 0: 4096, or fewer if the open-file limit leaves "
             "less room"},
    {.name = "connection_timeout", .type = MCIM_CFG_DURATION, .def = "10s", .min = 1,
     .max = 3600,
     .help = "a connection is closed when its TLS handshake is not done this long after it "
             "opened, or when nothing arrives for this long"},
    {.name = "long_poll", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 300,
     .help = "longest a \"not yet\" answer (a package, a nonce) is held for a client that asks"
             " to wait (RFC 7240 Prefer: wait), answered when it comes; 0: never held"},
    {.name = "long_poll_recheck_ms", .type = MCIM_CFG_INT, .def = "250", .min = 10,
     .max = 60000,
     .help = "on PostgreSQL, while the role's LISTEN connection is down, a held request is asked"
             " again this often (another instance may store what it waits for); with it up, every"
             " instance's commits wake it at once (NOTIFY mcim_wake)"},
    {.name = "statement_lifetime", .type = MCIM_CFG_DURATION, .def = "5m", .min = 1,
     .max = 86400, .help = "validity of the statements this role signs"},
    {.name = "token_lifetime", .type = MCIM_CFG_DURATION, .def = "10m", .min = 1, .max = 86400,
     .help = "validity of access tokens (VNO, SHO)"},
    {.name = "attach_lifetime", .type = MCIM_CFG_DURATION, .def = "2m", .min = 1, .max = 3600,
     .help = "access networks (vno, sho): how long an attach challenge may be answered;"
             " unanswered and finished attach sessions are deleted after it"},
    {.name = "attach_open_max", .type = MCIM_CFG_INT, .def = "8", .min = 1, .max = 1000,
     .help = "access networks (vno, sho): challenges of one identity within attach_lifetime"
             " that did not end in an attach (open, answered wrong, resynchronised); one more"
             " attach is answered 503 ATTACH_BUSY with Retry-After, without an AV"},
    {.name = "traced_refusals_per_hour", .type = MCIM_CFG_INT, .def = "120", .min = 1,
     .max = 1000000,
     .help = "refusals the role traces per counterpart (a device, a peer) and hour, all its"
             " instances together; beyond it a refusal is logged only (a device whose TRE signs"
             " for any txn could add a row per request)"},
    {.name = "answer_retention", .type = MCIM_CFG_DURATION, .def = "1d", .min = 1,
     .max = 365LL * 86400,
     .help = "how long answers kept for retries (idempotency) and delivered outbox messages"
             " are kept"},
    {.name = "record_retention", .type = MCIM_CFG_DURATION, .def = "30d", .min = 1,
     .max = 3650LL * 86400,
     .help = "how long records of finished and abandoned procedures (orders, validations,"
             " packages, never-activated AuC entries, the orders and AuC entries of terminated"
             " subscriptions, the trace) are kept before they are deleted"},
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 3600,
     .help = "clock difference tolerated when checking statements"},
    {.name = "outbox_max_attempts", .type = MCIM_CFG_INT, .def = "8", .min = 1, .max = 1000,
     .help = "deliveries tried before an outbox message is given up (cause logged)"},
    {.name = "outbox_backoff_ms", .type = MCIM_CFG_INT, .def = "200", .min = 10,
     .max = 600000, .help = "first retry delay; doubles with each attempt"},
    {.name = "tick_ms", .type = MCIM_CFG_INT, .def = "200", .min = 10, .max = 60000,
     .help = "period of the worker's polls of the store (outbox retries, expiries, timers)"
             " while they find something; see idle_tick_max_ms"},
    {.name = "idle_tick_max_ms", .type = MCIM_CFG_INT, .def = "2000", .min = 10,
     .max = 600000,
     .help = "while the worker's polls of the store find nothing due, their period doubles from"
             " tick_ms up to this (not below tick_ms); what a poll finds (another instance's"
             " retry, a dead instance's message, an expiry, housekeeping) is handled at most"
             " this long after it is due; messages handed by their writers go at once, this"
             " instance's own retries when due"},
    {.name = "peer_timeout_ms", .type = MCIM_CFG_INT, .def = "5000", .min = 100,
     .max = 600000, .help = "timeout of one call to a peer"},
    {.name = "log_format", .type = MCIM_CFG_ENUM, .def = "text", .allowed = log_formats,
     .help = "text for people, json for machines"},
    {.name = "log_level", .type = MCIM_CFG_ENUM, .def = "info", .allowed = log_levels,
     .help = "least severe level written"},
    {.name = "log_file", .type = MCIM_CFG_PATH, .help = "append logs here instead of stderr"},
};
const size_t mcim_role_common_nspec = sizeof(mcim_role_common_spec) / sizeof(mcim_role_common_spec[0]);
/* clang-format on */

bool mcim_role_name_is_sho(const char *name)
{
  static const char *const not_sho[] = {"ro",    "vno",        "pva",  "m2mes",
                                        "admin", "subscriber", "pcid", "pcid-prev"};
  if (!name || !mcim_pki_name_valid(name))
    return false;
  for (size_t i = 0; i < sizeof(not_sho) / sizeof(not_sho[0]); i++)
    if (strcmp(name, not_sho[i]) == 0)
      return false;
  return true;
}

bool mcim_role_name_fits_kind(const char *kind, const char *name, char *err, size_t errlen)
{
  bool sho = strcmp(kind, "sho") == 0;
  /* the fixed names are the kinds' own (ro, vno, pva, m2mes) */
  if (sho ? mcim_role_name_is_sho(name) : (name && strcmp(name, kind) == 0))
    return true;
  snprintf(err, errlen,
           "name \"%s\" does not fit kind %s: %s (the peers tell the roles apart by name)",
           name ? name : "", kind,
           sho ? "an SHO may not take a fixed role name (ro, vno, pva, m2mes, admin, subscriber,"
                 " pcid, pcid-prev)"
               : "an instance of this kind must be named after it");
  return false;
}

bool mcim_role_name_is_access_network(const char *name)
{
  return name && (strcmp(name, "vno") == 0 || mcim_role_name_is_sho(name));
}

const struct mcim_role_kind *mcim_role_kind_find(const char *kind)
{
  for (size_t i = 0; kind && mcim_role_kinds[i]; i++)
    if (strcmp(mcim_role_kinds[i]->kind, kind) == 0)
      return mcim_role_kinds[i];
  return NULL;
}

/* Common keys followed by the kind's keys (and the AuC backend's, for a kind with an AuC). */
mcim_config_spec_t *mcim_role_merged_spec(const struct mcim_role_kind *kind, size_t *n)
{
  size_t nauc = kind->auc ? mcim_auc_config_nspec : 0;
  *n = mcim_role_common_nspec + kind->nspec + nauc;
  mcim_config_spec_t *spec = calloc(*n, sizeof(*spec));
  if (!spec)
    return NULL;
  memcpy(spec, mcim_role_common_spec, sizeof(mcim_role_common_spec));
  if (kind->nspec)
    memcpy(spec + mcim_role_common_nspec, kind->spec, kind->nspec * sizeof(*spec));
  if (nauc)
    memcpy(spec + mcim_role_common_nspec + kind->nspec, mcim_auc_config_spec, nauc * sizeof(*spec));
  return spec;
}

mcim_cause_t mcim_role_check_config(const struct mcim_role_kind *kind, const char *config_path,
                                    char *err, size_t errlen)
{
  size_t n;
  mcim_config_t *cfg = NULL;
  mcim_config_spec_t *spec = mcim_role_merged_spec(kind, &n);
  if (!spec)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_config_load(config_path, spec, n, &cfg, err, errlen);
  if (rc == MCIM_OK && !mcim_role_name_fits_kind(kind->kind, mcim_config_str(cfg, "name"), err,
                                                 errlen))
    rc = MCIM_CONFIG_INVALID;
  /* Refuse up front what this binary cannot do, not at the first request. */
  if (rc == MCIM_OK && !mcim_store_locator_supported(mcim_config_str(cfg, "database"), NULL, 0)) {
    char why[160];
    mcim_store_locator_supported(mcim_config_str(cfg, "database"), why, sizeof(why));
    snprintf(err, errlen, "%s: database: %s", config_path, why);
    rc = MCIM_UNSUPPORTED;
  }
  if (rc == MCIM_OK && kind->auc) /* the checks start-up makes, without connecting */
    rc = mcim_auc_config_backend(cfg, NULL, NULL, NULL, err, errlen);
  mcim_config_free(cfg);
  free(spec);
  return rc;
}

void mcim_role_describe_config(const struct mcim_role_kind *kind, FILE *out)
{
  size_t n;
  mcim_config_spec_t *spec = mcim_role_merged_spec(kind, &n);
  if (!spec)
    return;
  mcim_config_describe(spec, n, out);
  free(spec);
}
