/* The role runtime (include/mcim/role.h): start-up, per-thread resources, the
 * worker thread, common routes (health, admin trace). */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcim/crashpoint.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/trace_store.h"
#include "mcim/util.h"
#include "crypto/objcache.h"
#include "crypto/verdicts.h"
#include "roles/auc_backend.h"
#include "roles/auc_config.h"
#include "roles/role_priv.h"

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
static mcim_config_spec_t *merged_spec(const struct mcim_role_kind *kind, size_t *n)
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
    memcpy(spec + mcim_role_common_nspec + kind->nspec, mcim_auc_config_spec,
           nauc * sizeof(*spec));
  return spec;
}

mcim_cause_t mcim_role_check_config(const struct mcim_role_kind *kind, const char *config_path,
                                    char *err, size_t errlen)
{
  size_t n;
  mcim_config_t *cfg = NULL;
  mcim_config_spec_t *spec = merged_spec(kind, &n);
  if (!spec)
    return MCIM_NO_MEMORY;
  mcim_cause_t rc = mcim_config_load(config_path, spec, n, &cfg, err, errlen);
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
  mcim_config_spec_t *spec = merged_spec(kind, &n);
  if (!spec)
    return;
  mcim_config_describe(spec, n, out);
  free(spec);
}

/* ---- per-thread resources ---- */

static void close_thread_store(void *p)
{
  if (p)
    mcim_metric_add(&mcim_m_store_connections, NULL, -1);
  mcim_store_close(p);
}

static void free_thread_client(void *p)
{
  mcim_http_client_free(p);
}

/* Why a pool, last in first out, instead of a connection per thread: SQLite drops a
 * connection's whole page cache when it starts a transaction after another connection's
 * commit, and a busy role commits all the time, so every thread's connection re-read its
 * pages (about 800 pread a procedure across the roles). The connection given back last is the
 * one that committed last: its cache is still good, and the next request takes it. The pool
 * grows to the number of threads that use the store at once, and no further. */
mcim_store_t *mcim_role_store(struct mcim_role *r)
{
  mcim_store_t *st = pthread_getspecific(r->priv->store_key);
  if (st)
    return st;
  pthread_mutex_lock(&r->priv->pool_lock);
  if (r->priv->npool > 0)
    st = r->priv->pool[--r->priv->npool];
  pthread_mutex_unlock(&r->priv->pool_lock);
  if (st) {
    pthread_setspecific(r->priv->store_key, st);
    return st;
  }
  if (mcim_store_open(r->priv->db_locator, NULL, &st) != MCIM_OK) {
    char shown[512];
    mcim_store_locator_for_log(r->priv->db_locator, shown, sizeof(shown));
    mcim_log_error("cannot open the store %s", shown);
    return NULL;
  }
  mcim_metric_add(&mcim_m_store_connections, NULL, 1);
  pthread_setspecific(r->priv->store_key, st);
  return st;
}

void mcim_role_store_release(struct mcim_role *r)
{
  mcim_store_t *st = pthread_getspecific(r->priv->store_key);
  if (!st)
    return;
  pthread_setspecific(r->priv->store_key, NULL);
  if (mcim_store_in_txn(st)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INTERNAL,
                   "a transaction was left open at the end of a request: rolled back");
    mcim_store_rollback(st);
  }
  pthread_mutex_lock(&r->priv->pool_lock);
  if (r->priv->npool == r->priv->pool_cap) {
    size_t cap = r->priv->pool_cap ? r->priv->pool_cap * 2 : 8;
    mcim_store_t **grown = realloc(r->priv->pool, cap * sizeof(*grown));
    if (grown) {
      r->priv->pool = grown;
      r->priv->pool_cap = cap;
    }
  }
  if (r->priv->npool < r->priv->pool_cap) {
    r->priv->pool[r->priv->npool++] = st;
    st = NULL;
  }
  pthread_mutex_unlock(&r->priv->pool_lock);
  close_thread_store(st); /* no room (out of memory): closed instead */
}

static void release_after_request(void *ctx)
{
  mcim_role_store_release(ctx);
}

struct mcim_http_client *mcim_role_client(struct mcim_role *r)
{
  struct mcim_http_client *cli = pthread_getspecific(r->priv->client_key);
  if (cli)
    return cli;
  struct mcim_http_client_cfg cc = {
      .ca_file = mcim_config_path(r->cfg, "operators_ca"),
      .cert_file = mcim_config_path(r->cfg, "tls_cert"),
      .key_file = mcim_config_path(r->cfg, "tls_key"),
      .timeout_ms = (long)mcim_config_int(r->cfg, "peer_timeout_ms"),
  };
  if (mcim_http_client_new(&cc, &cli) != MCIM_OK)
    return NULL;
  pthread_setspecific(r->priv->client_key, cli);
  return cli;
}

const char *mcim_role_peer_url(struct mcim_role *r, const char *peer)
{
  pthread_mutex_lock(&r->priv->peers_lock);
  /* The directory may grow (a new SHO): reload it when a name is unknown. */
  const char *url = json_string_value(json_object_get(r->peers, peer));
  if (!url) {
    json_t *fresh = json_load_file(mcim_config_path(r->cfg, "peers"), 0, NULL);
    if (json_is_object(fresh)) {
      /* keep the old object alive: callers may hold strings from it */
      json_object_update(r->peers, fresh);
      url = json_string_value(json_object_get(r->peers, peer));
    }
    json_decref(fresh);
  }
  pthread_mutex_unlock(&r->priv->peers_lock);
  return url;
}

int64_t mcim_role_statement_lifetime(struct mcim_role *r)
{
  return mcim_config_duration(r->cfg, "statement_lifetime");
}

int64_t mcim_role_token_lifetime(struct mcim_role *r)
{
  return mcim_config_duration(r->cfg, "token_lifetime");
}

/* ---- signing and peer keys ---- */

mcim_cause_t mcim_role_sign(struct mcim_role *r, const char *typ, const char *sub,
                            const char *aud, const char *txn, json_t *extra, char **jws)
{
  int64_t now = mcim_now();
  mcim_claims_t c = {
      .iss = r->name, .sub = sub, .aud = aud, .typ = typ, .txn = txn, .iat = now,
      .exp = now + mcim_role_statement_lifetime(r), .extra = extra,
  };
  return mcim_jws_sign(r->sign_key, &c, jws);
}

/* JOSE keys made from certificates, by the SHA-256 of the PEM and the name (the kid): making
 * one (cjose's JWK from the EVP key, the curve's group built anew) cost as much as the
 * signature check it is for, for the same device certificates all through a procedure. Only
 * handed out after the certificate was verified again (mcim_pki_cert_public_key: the chain's
 * verdict kept, its validity checked at every use). */
static int jose_key_up_ref(void *key)
{
  mcim_jose_key_t *ref = NULL;
  return mcim_jose_key_dup(key, &ref) == MCIM_OK;
}

static void jose_key_release(void *key)
{
  mcim_jose_key_free(key);
}

static struct mcim_objcache cert_keys =
    MCIM_OBJCACHE_INIT(jose_key_up_ref, jose_key_release, 64);

static bool cert_key_id(const char *cert_pem, const char *name, uint8_t id[32])
{
  const void *parts[] = {name, cert_pem};
  const size_t lens[] = {name ? strlen(name) : 0, strlen(cert_pem)};
  return mcim_verdict_id(id, 2, parts, lens);
}

static mcim_cause_t key_from_cert_pem(const char *cert_pem, X509 *ca, mcim_cert_usage_t usage,
                                      const char *name, mcim_jose_key_t **out)
{
  X509 *cert = NULL;
  EVP_PKEY *pub = NULL;
  mcim_cause_t rc;
  uint8_t id[32];
  *out = NULL;
  if (!cert_pem)
    return MCIM_CERT_INVALID;
  rc = mcim_pki_cert_from_pem(cert_pem, strlen(cert_pem), &cert);
  if (rc != MCIM_OK)
    goto out;
  rc = mcim_pki_cert_public_key(cert, ca, usage, name, 0, &pub);
  if (rc != MCIM_OK)
    goto out;
  bool have_id = cert_key_id(cert_pem, name, id);
  if (have_id && (*out = mcim_objcache_get(&cert_keys, id)) != NULL)
    goto out;
  rc = mcim_jose_key_from_pkey(pub, out);
  if (rc == MCIM_OK && name)
    rc = mcim_jose_key_set_kid(*out, name);
  if (rc == MCIM_OK && have_id)
    mcim_objcache_put(&cert_keys, id, *out);
out:
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*out);
    *out = NULL;
  }
  EVP_PKEY_free(pub);
  X509_free(cert);
  return rc;
}

mcim_cause_t mcim_role_peer_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                         const char *name, mcim_jose_key_t **out)
{
  return key_from_cert_pem(cert_pem, r->operators_ca, MCIM_CERT_TLS, name, out);
}

mcim_cause_t mcim_role_device_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                           const char *device, int usage, mcim_jose_key_t **out)
{
  if (usage != MCIM_CERT_TRE_ATTESTATION && usage != MCIM_CERT_TRE_KEY_AGREEMENT)
    return MCIM_INVALID_ARGUMENT;
  return key_from_cert_pem(cert_pem, r->m2mes_ca, (mcim_cert_usage_t)usage, device, out);
}

/* ---- common routes ---- */

static void h_health(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  (void)req;
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:s}", "name", r->name, "kind", r->kind->kind,
                                 "status", "ok"));
}

static void h_admin_trace(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  if (!req->peer || strcmp(req->peer, "admin") != 0) {
    mcim_http_reply_problem(resp, MCIM_FORBIDDEN, 0, "the trace needs the lab admin certificate");
    return;
  }
  json_t *events = NULL;
  mcim_cause_t rc = mcim_role_trace_load(r, req->params[0], &events);
  if (rc != MCIM_OK) {
    mcim_http_reply_problem(resp, rc, 0, "cannot read the trace");
    return;
  }
  mcim_http_reply_json(resp, 200,
                       json_pack("{s:s,s:s,s:o}", "role", r->name, "txid", req->params[0],
                                 "events", events));
}

static void h_certificate(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  (void)req;
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "name", r->name, "cert", r->cert_pem));
}

/* The metric families a kind exposes besides process, HTTP and outbox. */
static unsigned kind_metric_families(const struct mcim_role_kind *kind)
{
  unsigned f = MCIM_MF_PROCESS | MCIM_MF_HTTP | MCIM_MF_OUTBOX | MCIM_MF_CRYPTO;
  if (strcmp(kind->kind, "vno") == 0)
    f |= MCIM_MF_ACCESS;
  else if (strcmp(kind->kind, "sho") == 0)
    f |= MCIM_MF_ACCESS | MCIM_MF_AUC | MCIM_MF_PROCEDURE;
  else if (strcmp(kind->kind, "ro") == 0)
    f |= MCIM_MF_AUC;
  return f;
}

/* GET /metrics: Prometheus text exposition 0.0.4 (include/mcim/metrics.h). No
 * authentication, like /v1/health: counters only, no identifier nor secret. */
static void h_metrics(void *ctx, const struct mcim_http_request *req,
                      struct mcim_http_response *resp)
{
  struct mcim_role *r = ctx;
  int64_t pending = 0;
  (void)req;
  if (mcim_role_outbox_pending(r, &pending) == MCIM_OK)
    mcim_metric_set(&mcim_m_outbox_pending, NULL, (double)pending);
  mcim_http_reply_text(resp, 200, MCIM_METRICS_CONTENT_TYPE,
                       mcim_metrics_render(kind_metric_families(r->kind)));
}

static const struct mcim_http_route common_routes[] = {
    {"GET", "/v1/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/certificate", h_certificate, 0},
    {"GET", "/v1/admin/trace/{txn}", h_admin_trace, MCIM_ROUTE_PEER_CERT},
};

/* ---- worker ---- */

/* The worker. Each round sends the messages its role's handlers handed it (at once: their
 * commits wake it) and, when it polls, looks in the store for what only a look finds: the
 * outbox's messages due (retries, messages of an instance that died once their leases end,
 * or not handed as written), the kind's sweeps (expiries) and the housekeeping. A poll comes
 * tick_ms after the last one while polls find something; each that finds nothing doubles the
 * interval, up to idle_tick_max_ms, so an idle role does not keep its database busy (the lab's
 * six roles at tick_ms 50 cost its PostgreSQL about 5% of a core doing nothing,
 * docs/performance.md). Bounds: a handed message at once; a retry this instance recorded,
 * and a message the last poll saw in the store not due yet (a lease that ends), when it is
 * due (outbox_due_ms); a message written but not handed ends the backoff (poll_soon);
 * anything else a poll finds at most idle_tick_max_ms after it is due. Handed
 * messages do not end the backoff: under load the worker runs a round after nearly every
 * commit, and the polls need not come with them. */
static void *worker_main(void *arg)
{
  struct mcim_role *r = arg;
  struct mcim_role_priv *p = r->priv;
  int64_t tick = mcim_config_int(r->cfg, "tick_ms");
  int64_t idle_max = mcim_config_int(r->cfg, "idle_tick_max_ms");
  int64_t period = tick;
  uint64_t polled_ms = 0;
  bool polled = false;
  if (idle_max < tick)
    idle_max = tick;
  pthread_mutex_lock(&p->lock);
  p->poll_period_ms = period;
  while (!p->stopping) {
    uint64_t now_ms = mcim_monotonic_ns() / 1000000u;
    if (p->poll_soon) {
      p->poll_soon = false;
      period = tick;
    }
    bool poll = !polled || now_ms - polled_ms >= (uint64_t)period;
    bool due = p->outbox_due_ms != 0 && mcim_now_us() / 1000 >= p->outbox_due_ms;
    if (poll || due)
      p->outbox_due_ms = 0; /* what it finds is recorded again if still to be retried */
    pthread_mutex_unlock(&p->lock);
    size_t found = mcim_role_outbox_run(r, poll || due);
    if (poll) {
      polled = true;
      polled_ms = now_ms;
      mcim_role_housekeeping(r); /* at most once a second (its own check) */
      if (r->kind->tick && r->kind->tick(r))
        found++;
    }
    if (found > 0)
      period = tick;
    else if (poll)
      period = period * 2 < idle_max ? period * 2 : idle_max;
    mcim_role_store_release(r); /* its cache goes on to the next request */
    pthread_mutex_lock(&p->lock);
    if (poll) {
      p->polls++;
      p->poll_period_ms = period;
    }
    if (p->stopping)
      break;
    if (!p->wake) {
      if (p->poll_soon)
        period = tick;
      int64_t wait_ms =
          (int64_t)(polled_ms + (uint64_t)period) - (int64_t)(mcim_monotonic_ns() / 1000000u);
      if (p->outbox_due_ms != 0) {
        int64_t due_in = p->outbox_due_ms - mcim_now_us() / 1000;
        if (due_in < wait_ms)
          wait_ms = due_in;
      }
      if (wait_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        ts.tv_sec += (time_t)(wait_ms / 1000) + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&p->cond, &p->lock, &ts);
      }
    }
    p->wake = false;
  }
  pthread_mutex_unlock(&p->lock);
  mcim_role_outbox_stop(r); /* the server has stopped: nothing is handed any more */
  mcim_role_store_release(r);
  /* per-thread store and client are closed by their key destructors */
  return NULL;
}

void mcim_role_worker_polls(struct mcim_role *r, uint64_t *polls, int64_t *period_ms)
{
  pthread_mutex_lock(&r->priv->lock);
  *polls = r->priv->polls;
  *period_ms = r->priv->poll_period_ms;
  pthread_mutex_unlock(&r->priv->lock);
}

/* The peers' statement keys, fetched in the background from the start. Why: handler threads
 * call peers synchronously (the VNO asks the ICF at the RO for vectors; the RO checks a VNO
 * token with the VNO's key, fetched the first time it is needed). With the caches empty and
 * every thread of both pools in such a call, each side waited for the other until
 * peer_timeout_ms: the first discoveries of a fresh lab under loadgen answered 504 after
 * 5.0 s ("no verified key for peer vno"). Fetched before the load, the key is there. A peer
 * not reachable yet is asked again, 1 s later, then ever less often (up to a minute), until
 * every peer's key is known or the role stops. */
static void *peer_prefetch_main(void *arg)
{
  struct mcim_role *r = arg;
  struct mcim_role_priv *p = r->priv;
  int64_t wait_s = 1;
  for (;;) {
    json_t *names = json_array();
    const char *name;
    json_t *url;
    pthread_mutex_lock(&p->peers_lock);
    json_object_foreach(r->peers, name, url)
    {
      if (names && strcmp(name, r->name) != 0)
        json_array_append_new(names, json_string(name));
    }
    pthread_mutex_unlock(&p->peers_lock);
    size_t missing = names ? mcim_role_peer_keys_prefetch(r, names) : 1;
    json_decref(names);
    pthread_mutex_lock(&p->lock);
    if (missing == 0 || p->stopping) {
      pthread_mutex_unlock(&p->lock);
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_s;
    pthread_cond_timedwait(&p->prefetch_cond, &p->lock, &ts);
    bool stop = p->stopping;
    pthread_mutex_unlock(&p->lock);
    if (stop)
      break;
    wait_s = wait_s < 32 ? wait_s * 2 : 60;
  }
  return NULL;
}

static void wake_now(void *arg)
{
  struct mcim_role *r = arg;
  pthread_mutex_lock(&r->priv->lock);
  r->priv->wake = true;
  pthread_cond_signal(&r->priv->cond);
  pthread_mutex_unlock(&r->priv->lock);
}

/* From a request handler, once its answer is sent: what the handler's commit handed the
 * worker (a DRF discovery's step-8 announcement: a request to the SHO, which sets off the
 * SHO's and the PVA's work) then does not compete with the answer for the 2 cores it was
 * measured on (docs/performance.md, "The DRF at operator scale"). */
void mcim_role_wake(struct mcim_role *r)
{
  mcim_http_after_reply(wake_now, r);
}

/* ---- start / stop ---- */

static mcim_cause_t load_identity(struct mcim_role *r)
{
  EVP_PKEY *key = NULL;
  mcim_cause_t rc = mcim_pki_key_load(mcim_config_path(r->cfg, "tls_key"), &key);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot load tls_key %s",
                   mcim_config_path(r->cfg, "tls_key"));
    return rc;
  }
  rc = mcim_jose_key_from_pkey(key, &r->sign_key);
  EVP_PKEY_free(key);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_set_kid(r->sign_key, r->name);
  if (rc != MCIM_OK)
    return rc;
  const char *paths[3] = {mcim_config_path(r->cfg, "tls_cert"),
                          mcim_config_path(r->cfg, "operators_ca"),
                          mcim_config_path(r->cfg, "m2mes_ca")};
  X509 **certs[3] = {&r->cert, &r->operators_ca, &r->m2mes_ca};
  for (int i = 0; i < 3; i++) {
    rc = mcim_pki_cert_load(paths[i], certs[i]);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot load certificate %s", paths[i]);
      return rc;
    }
  }
  rc = mcim_pki_cert_verify(r->cert, r->operators_ca, MCIM_CERT_TLS, r->name, 0);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "tls_cert is not an operators' CA certificate for \"%s\"", r->name);
    return rc;
  }
  return mcim_pki_cert_to_pem(r->cert, &r->cert_pem);
}

static mcim_cause_t open_store(struct mcim_role *r)
{
  const char *db = mcim_config_str(r->cfg, "database");
  /* A plain path is a SQLite file relative to the configuration's folder. */
  if (strstr(db, "://") || strncmp(db, "sqlite:", 7) == 0 || db[0] == '/') {
    r->priv->db_locator = strdup(db);
  } else {
    const char *cfgfile = mcim_config_file(r->cfg);
    const char *slash = strrchr(cfgfile, '/');
    size_t dirlen = slash ? (size_t)(slash - cfgfile) : 0;
    size_t n = dirlen + strlen(db) + 2;
    r->priv->db_locator = malloc(n);
    if (r->priv->db_locator) {
      if (dirlen)
        snprintf(r->priv->db_locator, n, "%.*s/%s", (int)dirlen, cfgfile, db);
      else
        snprintf(r->priv->db_locator, n, "%s", db);
    }
  }
  if (!r->priv->db_locator)
    return MCIM_NO_MEMORY;
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_cause_t rc = mcim_role_common_migrate(st);
  if (rc == MCIM_OK && r->kind->nmigrations)
    rc = mcim_store_migrate(st, r->kind->kind, r->kind->migrations, r->kind->nmigrations);
  if (rc != MCIM_OK) {
    char shown[512];
    mcim_store_locator_for_log(r->priv->db_locator, shown, sizeof(shown));
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "schema of %s: %s", shown,
                   mcim_store_errmsg(st));
    return rc;
  }
  return mcim_role_storage_key_check(r, st);
}

/* A crash point's record (include/mcim/crashpoint.h): a trace row in the role's store,
 * committed on its own (the hooks are reached with no transaction open). */
static void crash_record(void *ctx, const char *txn, int step, const char *what)
{
  struct mcim_role *r = ctx;
  mcim_store_t *st = mcim_role_store(r);
  if (!st || mcim_store_in_txn(st) ||
      mcim_trace_store_put(st, mcim_now_us(), txn, step, r->name, "crashpoint", what, NULL,
                           MCIM_OK) != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, txn, step, MCIM_STORE_ERROR, "crash point not recorded: %s",
                   what);
}

mcim_cause_t mcim_role_start(const struct mcim_role_kind *kind, const char *config_path,
                             struct mcim_role **out)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  char err[2048] = "";
  size_t nspec = 0;
  struct mcim_role *r = calloc(1, sizeof(*r));
  *out = NULL;
  if (!r)
    return MCIM_NO_MEMORY;
  r->kind = kind;
  r->priv = calloc(1, sizeof(*r->priv));
  if (!r->priv)
    goto fail;
  pthread_mutex_init(&r->priv->lock, NULL);
  pthread_mutex_init(&r->priv->peers_lock, NULL);
  pthread_mutex_init(&r->priv->pool_lock, NULL);
  pthread_cond_init(&r->priv->cond, NULL);
  pthread_cond_init(&r->priv->prefetch_cond, NULL);
  pthread_key_create(&r->priv->store_key, close_thread_store);
  pthread_key_create(&r->priv->client_key, free_thread_client);
  r->priv->keys_created = true;

  r->priv->spec = merged_spec(kind, &nspec);
  if (!r->priv->spec)
    goto fail;
  rc = mcim_config_load(config_path, r->priv->spec, nspec, &r->cfg, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s", err);
    goto fail;
  }
  r->name = mcim_config_str(r->cfg, "name");
  char why[160];
  if (!mcim_store_locator_supported(mcim_config_str(r->cfg, "database"), why, sizeof(why))) {
    rc = MCIM_UNSUPPORTED; /* refused before anything is opened or created */
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "database: %s", why);
    goto fail;
  }

  rc = load_identity(r);
  if (rc != MCIM_OK)
    goto fail;
  json_error_t jerr;
  r->peers = json_load_file(mcim_config_path(r->cfg, "peers"), 0, &jerr);
  if (!json_is_object(r->peers)) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID, "peers file %s: %s",
                   mcim_config_path(r->cfg, "peers"), r->peers ? "not an object" : jerr.text);
    rc = MCIM_CONFIG_INVALID;
    goto fail;
  }
  rc = mcim_storage_key_load_or_create(mcim_config_path(r->cfg, "storage_key"), &r->storage_key);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "storage key %s",
                   mcim_config_path(r->cfg, "storage_key"));
    goto fail;
  }
  if (kind->auc) {
    rc = mcim_auc_config_backend(r->cfg, r->name, r->storage_key, &r->auc, err, sizeof(err));
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s", err);
      goto fail;
    }
  } else {
    rc = mcim_auc_builtin_new(r->storage_key, &r->auc);
    if (rc != MCIM_OK)
      goto fail;
  }
  rc = open_store(r);
  if (rc != MCIM_OK)
    goto fail;
  mcim_role_replay_init(r);

  if (kind->start) {
    rc = kind->start(r);
    if (rc != MCIM_OK) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s start-up failed", kind->kind);
      goto fail;
    }
    r->priv->started = true;
  }

  size_t nroutes = kind->nroutes + sizeof(common_routes) / sizeof(common_routes[0]);
  r->priv->routes = calloc(nroutes, sizeof(*r->priv->routes));
  if (!r->priv->routes) {
    rc = MCIM_NO_MEMORY;
    goto fail;
  }
  if (kind->nroutes)
    memcpy(r->priv->routes, kind->routes, kind->nroutes * sizeof(*kind->routes));
  memcpy(r->priv->routes + kind->nroutes, common_routes, sizeof(common_routes));

  struct mcim_http_server_cfg sc = {
      .role = r->name,
      .bind_addr = mcim_config_str(r->cfg, "listen_addr"),
      .port = (uint16_t)mcim_config_int(r->cfg, "listen_port"),
      .cert_file = mcim_config_path(r->cfg, "tls_cert"),
      .key_file = mcim_config_path(r->cfg, "tls_key"),
      .client_ca_file = mcim_config_path(r->cfg, "operators_ca"),
      .threads = (unsigned)mcim_config_int(r->cfg, "threads"),
      .max_body = (size_t)mcim_config_int(r->cfg, "max_body"),
      .per_address_limit = (unsigned)mcim_config_int(r->cfg, "max_connections_per_ip"),
      .connection_limit = (unsigned)mcim_config_int(r->cfg, "max_connections"),
      .timeout_s = (unsigned)mcim_config_duration(r->cfg, "connection_timeout"),
      .long_poll_max_s = (unsigned)mcim_config_duration(r->cfg, "long_poll"),
      /* SQLite: one instance writes the file, and its commits wake what they concern */
      .long_poll_recheck_ms = strncmp(r->priv->db_locator, "postgres", 8) == 0
                                  ? (unsigned)mcim_config_int(r->cfg, "long_poll_recheck_ms")
                                  : 0,
      .routes = r->priv->routes,
      .nroutes = nroutes,
      .ctx = r,
      .after_request = release_after_request,
  };
  mcim_metric_set(&mcim_m_process_start_time, NULL, (double)mcim_now());
  mcim_crashpoint_init(r->name, crash_record, r); /* before any thread can reach a hook */
  if (sc.long_poll_max_s > 0 && (rc = mcim_role_wake_relay_start(r)) != MCIM_OK)
    goto fail;
  rc = mcim_http_server_start(&sc, &r->server);
  if (rc != MCIM_OK)
    goto fail;
  if (pthread_create(&r->priv->worker, NULL, worker_main, r) != 0) {
    rc = MCIM_INTERNAL;
    goto fail;
  }
  r->priv->worker_running = true;
  /* without it the role still works: keys are then fetched when first needed */
  r->priv->prefetch_running =
      pthread_create(&r->priv->prefetch, NULL, peer_prefetch_main, r) == 0;
  mcim_log_info("%s \"%s\" serving on https://%s:%u", kind->kind, r->name,
                mcim_config_str(r->cfg, "listen_addr"), mcim_http_server_port(r->server));
  *out = r;
  return MCIM_OK;

fail:
  mcim_role_free(r);
  return rc;
}

void mcim_role_free(struct mcim_role *r)
{
  if (!r)
    return;
  if (r->server) {
    mcim_http_server_free(r->server);
    r->server = NULL;
  }
  if (r->priv && (r->priv->worker_running || r->priv->prefetch_running)) {
    pthread_mutex_lock(&r->priv->lock);
    r->priv->stopping = true;
    pthread_cond_signal(&r->priv->cond);
    pthread_cond_broadcast(&r->priv->prefetch_cond);
    pthread_mutex_unlock(&r->priv->lock);
    if (r->priv->worker_running)
      pthread_join(r->priv->worker, NULL);
    if (r->priv->prefetch_running)
      pthread_join(r->priv->prefetch, NULL);
  }
  if (r->priv)
    mcim_role_wake_relay_stop(r); /* no handler and no worker runs: none wakes */
  if (r->priv && r->priv->started && r->kind->stop)
    r->kind->stop(r);
  if (r->priv && r->priv->keys_created) {
    /* this thread's own resources (destructors run only for other threads) */
    close_thread_store(pthread_getspecific(r->priv->store_key));
    pthread_setspecific(r->priv->store_key, NULL);
    /* the server and the worker have stopped: nobody takes from the pool any more */
    for (size_t i = 0; i < r->priv->npool; i++)
      close_thread_store(r->priv->pool[i]);
    free(r->priv->pool);
    r->priv->pool = NULL;
    r->priv->npool = r->priv->pool_cap = 0;
    free_thread_client(pthread_getspecific(r->priv->client_key));
    pthread_setspecific(r->priv->client_key, NULL);
  }
  mcim_role_replay_fini(r);
  mcim_jose_key_free(r->sign_key);
  X509_free(r->cert);
  X509_free(r->operators_ca);
  X509_free(r->m2mes_ca);
  free(r->cert_pem);
  json_decref(r->peers);
  mcim_auc_backend_free(r->auc);
  mcim_storage_key_free(r->storage_key);
  mcim_config_free(r->cfg);
  if (r->priv) {
    free(r->priv->routes);
    free(r->priv->spec);
    free(r->priv->db_locator);
    free(r->priv);
  }
  free(r);
}
