/* The role runtime (include/mcim/role.h): start-up, per-thread resources, the
 * signing and peer keys, common routes (health, admin trace). The configuration every role
 * shares is runtime_config.c's, the worker thread and the peers' keys fetched in the
 * background runtime_worker.c's; what they share is in role_priv.h. */
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
#include "roles/auc_backend.h"
#include "roles/auc_config.h"
#include "roles/role_priv.h"
#include "roles/verified.h"
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
    // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sized as such
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

mcim_cause_t mcim_role_peer_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                         const char *name, mcim_jose_key_t **out)
{
  return mcim_role_cert_key(cert_pem, r->operators_ca, MCIM_CERT_TLS, name, out);
}

mcim_cause_t mcim_role_device_key_from_pem(struct mcim_role *r, const char *cert_pem,
                                           const char *device, int usage, mcim_jose_key_t **out)
{
  if (usage != MCIM_CERT_TRE_ATTESTATION && usage != MCIM_CERT_TRE_KEY_AGREEMENT)
    return MCIM_INVALID_ARGUMENT;
  return mcim_role_cert_key(cert_pem, r->m2mes_ca, (mcim_cert_usage_t)usage, device, out);
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
  /* One statement (store_statements): `mcim loadgen` takes one per scrape out of the daemons'
   * work counts (src/lab/loadgen_report.c); keep the two in step. */
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
  mcim_peer_limit_init(&r->priv->traced_refusals, 3600);
  pthread_cond_init(&r->priv->cond, NULL);
  pthread_cond_init(&r->priv->prefetch_cond, NULL);
  pthread_key_create(&r->priv->store_key, close_thread_store);
  pthread_key_create(&r->priv->client_key, free_thread_client);
  r->priv->keys_created = true;

  r->priv->spec = mcim_role_merged_spec(kind, &nspec);
  if (!r->priv->spec)
    goto fail;
  rc = mcim_config_load(config_path, r->priv->spec, nspec, &r->cfg, err, sizeof(err));
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s", err);
    goto fail;
  }
  r->name = mcim_config_str(r->cfg, "name");
  if (!mcim_role_name_fits_kind(kind->kind, r->name, err, sizeof(err))) {
    rc = MCIM_CONFIG_INVALID;
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s: %s", config_path, err);
    goto fail;
  }
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
  if (pthread_create(&r->priv->worker, NULL, mcim_role_worker_main, r) != 0) {
    rc = MCIM_INTERNAL;
    goto fail;
  }
  r->priv->worker_running = true;
  /* without it the role still works: keys are then fetched when first needed */
  r->priv->prefetch_running =
      pthread_create(&r->priv->prefetch, NULL, mcim_role_peer_prefetch_main, r) == 0;
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
