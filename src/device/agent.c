/* The agent runtime: agent.json, the store, the control server, the worker thread that runs
 * procedures, and the access sessions (tokens kept in memory only). */
#include <malloc.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto/subset.h"
#include "device/device_priv.h"
#include "mcim/crashpoint.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/pki.h"
#include "mcim/util.h"

static const char *const renew_from[] = {"dpf", "ccif", NULL};
static const char *const tre_backends[] = {"soft", "tpm", NULL};

/* The scalar keys of agent.json; "networks" (an object) is taken out before these are
 * checked, since the configuration reader handles flat files only (see dev_config_load). */
static const mcim_config_spec_t agent_spec[] = {
    {.name = "device", .type = MCIM_CFG_STRING, .min = 1, .max = 63,
     .help = "device id; must be the TRE's (default: the TRE's, which is authoritative)"},
    {.name = "peers", .type = MCIM_CFG_PATH,
     .help = "a peers file {\"vno\": \"https://...\", ...}, read for names \"networks\" lacks"
             " (re-read when a name is unknown: an SHO added later)"},
    {.name = "operators_ca", .type = MCIM_CFG_PATH, .required = true,
     .help = "PEM of the operators' CA: pinned for server TLS, RO and SHO certificates"},
    {.name = "tre", .type = MCIM_CFG_PATH, .def = "tre",
     .help = "folder of the TRE (its sealed state; with tre_backend tpm, its keys' TPM blobs)"},
    {.name = "tre_backend", .type = MCIM_CFG_ENUM, .def = "soft", .allowed = tre_backends,
     .help = "where the TRE's private keys are: soft (in its state, used in the agent) or tpm"
             " (made in the TPM of tpm_tcti, never out of it; docs/tre-tpm.md)"},
    {.name = "tpm_tcti", .type = MCIM_CFG_STRING, .min = 1, .max = 255,
     .help = "with tre_backend tpm (and only then): the TCTI of the TPM,"
             " e.g. \"swtpm:host=127.0.0.1,port=2321\" or \"device:/dev/tpmrm0\""},
    {.name = "firmware", .type = MCIM_CFG_PATH, .def = "firmware",
     .help = "folder with boot.img, os.img, agent.img (measured at start)"},
    {.name = "database", .type = MCIM_CFG_PATH, .def = "agent.db",
     .help = "SQLite file: procedures and trace"},
    {.name = "control_socket", .type = MCIM_CFG_PATH, .def = "control.sock",
     .help = "Unix socket of the control API (created 0600)"},
    {.name = "vno", .type = MCIM_CFG_STRING, .def = "vno", .min = 1, .max = 63,
     .help = "name of the visited network among the networks"},
    {.name = "ro", .type = MCIM_CFG_STRING, .def = "ro", .min = 1, .max = 63,
     .help = "name of the RO among the networks (and CN of its certificate)"},
    {.name = "pva", .type = MCIM_CFG_STRING, .def = "pva", .min = 1, .max = 63,
     .help = "name of the PVA among the networks (and the audience of quotes)"},
    {.name = "poll_ms", .type = MCIM_CFG_INT, .def = "500", .min = 10, .max = 600000,
     .help = "pause between two polls of the network (pending validation, package, order)"},
    /* the worker waits in the call; the agent's stop interrupts it (mcim_http_lite_interrupt) */
    {.name = "long_poll", .type = MCIM_CFG_DURATION, .def = "2s", .min = 0, .max = 60,
     .help = "ask the PVA for the nonce, the DPF for the package and the new SHO's attach to"
             " hold a \"not yet\" answer up to this long (RFC 7240 Prefer: wait) and answer when"
             " it comes, instead of polling every poll_ms; 0: poll only"},
    {.name = "procedure_timeout", .type = MCIM_CFG_DURATION, .def = "5m", .min = 1,
     .max = 7 * 86400, .help = "a procedure not finished by then fails with TIMEOUT"},
    {.name = "discovery_grace", .type = MCIM_CFG_DURATION, .def = "10s", .min = 0, .max = 3600,
     .help = "accepted for old agent.json files, no longer used: the DRF answers ORDER_PENDING"
             " until the order arrives and the device asks again until procedure_timeout"},
    {.name = "ack_deadline", .type = MCIM_CFG_DURATION, .def = "60s", .min = 0, .max = 86400,
     .help = "change via the old SHO: how long step 9 waits for the old SHO's acknowledgement"
             " before the RO is given the TRE-signed discard receipt in its place (step 11);"
             " switch: how long the current SHO may take to take its suspend before the RO is"
             " given it to relay. A wait ends at half of what was left of the procedure when it"
             " began, if that comes first"},
    {.name = "undo_retry", .type = MCIM_CFG_DURATION, .def = "30s", .min = 1, .max = 3600,
     .help = "a switch undone while the RO did not answer: first wait before its undo is sent"
             " again (doubled at each attempt, up to an hour); the current subscription stays"
             " suspended till the RO takes it"},
    {.name = "request_timeout_ms", .type = MCIM_CFG_INT, .def = "5000", .min = 100,
     .max = 600000, .help = "timeout of one HTTP call to the network"},
    {.name = "statement_lifetime", .type = MCIM_CFG_DURATION, .def = "5m", .min = 1,
     .max = MCIM_TRE_MAX_LIFETIME, .help = "lifetime of the statements the TRE signs (quote, status)"},
    {.name = "token_margin", .type = MCIM_CFG_DURATION, .def = "5s", .min = 0, .max = 3600,
     .help = "an access token this close to expiry is not used: the agent attaches again"},
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 3600,
     .help = "clock difference tolerated on the network's statements"},
    {.name = "max_resync", .type = MCIM_CFG_INT, .def = "2", .min = 0, .max = 5,
     .help = "AKA resynchronisations (AUTS) tried in one attach"},
    {.name = "threads", .type = MCIM_CFG_INT, .def = "2", .min = 1, .max = 16,
     .help = "threads of the control server"},
    {.name = "m2mes", .type = MCIM_CFG_STRING, .def = "m2mes", .min = 1, .max = 63,
     .help = "name of the M2MES among the networks (its CCIF renews PCID credentials)"},
    {.name = "pcid_renew_margin", .type = MCIM_CFG_DURATION, .def = "7d", .min = 0,
     .max = 366 * 86400,
     .help = "a change or preload starting when the PCID credential expires within this"
             " renews it first"},
    {.name = "pcid_renew_from", .type = MCIM_CFG_ENUM, .def = "dpf", .allowed = renew_from,
     .help = "who renews the PCID credential: the RO's DPF or the M2MES CCIF"},
    /* agent.db on a device's flash: bounded by age and by count (dev_store_purge) */
    {.name = "record_retention", .type = MCIM_CFG_DURATION, .def = "30d", .min = 60,
     .max = 3660 * 86400,
     .help = "an ended procedure last updated longer ago than this goes from agent.db with its"
             " trace, as do trace rows of no procedure (at a procedure's end and at start)"},
    {.name = "records_max", .type = MCIM_CFG_INT, .def = "200", .min = 1, .max = 10000,
     .help = "ended procedures agent.db keeps at most: beyond, the least recently updated go"
             " with their trace"},
};
#define AGENT_NSPEC (sizeof(agent_spec) / sizeof(agent_spec[0]))

static char *config_path(const char *dir)
{
  size_t n = strlen(dir) + sizeof("/" MCIM_DEVICE_CONFIG);
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, MCIM_DEVICE_CONFIG);
  return p;
}

/* "networks": {"name": "https://host:port", ...}; every name a certificate name, every URL
 * an https URL of sane length. Problems are appended to `err`. */
static bool networks_valid(const char *file, const json_t *nets, char *err, size_t errlen)
{
  const char *name;
  const json_t *url;
  size_t used = strlen(err);
  bool ok = true;

  if (!json_is_object(nets)) {
    snprintf(err + used, errlen - used, "%s%s: \"networks\": expected an object {\"name\":"
             " \"https://host:port\"}", used ? "\n" : "", file);
    return false;
  }
  json_object_foreach((json_t *)nets, name, url) {
    const char *u = json_string_value(url);
    if (mcim_pki_name_valid(name) && u && strncmp(u, "https://", 8) == 0 && strlen(u) < 512)
      continue;
    used = strlen(err);
    snprintf(err + used, errlen - used, "%s%s: \"networks\": \"%.63s\": expected an https URL",
             used ? "\n" : "", file, name);
    ok = false;
  }
  return ok;
}

/* "tre_backend" and "tpm_tcti" together: the TPM backend needs the TCTI of its TPM, in the
 * form "NAME" or "NAME:CONFIGURATION" (tctildr's; NAME a TCTI: swtpm, mssim, device, tabrmd,
 * ...), and the software backend has none; a build without the TPM TRE has no TPM backend.
 * Problems are appended to `err`. */
static bool tre_backend_valid(const mcim_config_t *cfg, const char *file, char *err,
                              size_t errlen)
{
  bool tpm = mcim_config_enum(cfg, "tre_backend") == 1;
  const char *tcti = mcim_config_str(cfg, "tpm_tcti");
  const char *why = NULL;
  size_t used = strlen(err), name = tcti ? strcspn(tcti, ":") : 0;

#ifndef MCIM_HAVE_TPM
  if (tpm)
    why = "\"tre_backend\": \"tpm\": this m2me was built without the TPM TRE (MCIM_TPM=OFF)";
#endif
  if (!why && tpm && !tcti)
    why = "\"tre_backend\": \"tpm\" needs \"tpm_tcti\", the TCTI of the TPM"
          " (e.g. \"swtpm:host=127.0.0.1,port=2321\")";
  if (!why && !tpm && tcti)
    why = "\"tpm_tcti\" is for \"tre_backend\": \"tpm\" only (the TRE is \"soft\")";
  for (size_t i = 0; !why && tcti && i < name; i++)
    if (!((tcti[i] >= 'a' && tcti[i] <= 'z') || (tcti[i] >= '0' && tcti[i] <= '9') ||
          tcti[i] == '-'))
      why = "\"tpm_tcti\": expected NAME or NAME:CONFIGURATION, NAME a TCTI (swtpm, device,"
            " mssim, tabrmd, ...)";
  if (!why && tcti && name == 0)
    why = "\"tpm_tcti\": expected NAME or NAME:CONFIGURATION, NAME a TCTI (swtpm, device,"
          " mssim, tabrmd, ...)";
  if (!why)
    return true;
  snprintf(err + used, errlen - used, "%s%s: %s", used ? "\n" : "", file, why);
  return false;
}

/* agent.json: the scalar keys through the configuration reader (unknown keys, types, ranges,
 * one line per problem), "networks" checked here. Either "networks" or "peers" must say
 * where the network is. */
static mcim_cause_t config_load(const char *dir, mcim_config_t **cfg, json_t **networks,
                                char *err, size_t errlen)
{
  json_error_t jerr;
  json_t *doc = NULL, *nets = NULL;
  char *text = NULL;
  char *path = dir ? config_path(dir) : NULL;
  mcim_cause_t rc = MCIM_NO_MEMORY;

  *cfg = NULL;
  if (networks)
    *networks = NULL;
  err[0] = '\0';
  if (!path)
    goto cleanup;
  doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!doc) {
    rc = jerr.line < 1 ? MCIM_CONFIG_MISSING : MCIM_CONFIG_INVALID;
    if (jerr.line < 1)
      snprintf(err, errlen, "%s: cannot read: %s", path, jerr.text);
    else
      snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    goto cleanup;
  }
  rc = MCIM_CONFIG_INVALID;
  if (!json_is_object(doc)) {
    snprintf(err, errlen, "%s: expected a JSON object", path);
    goto cleanup;
  }
  nets = json_incref(json_object_get(doc, "networks"));
  json_object_del(doc, "networks");
  bool nets_ok = !nets || networks_valid(path, nets, err, errlen);
  text = json_dumps(doc, JSON_COMPACT);
  if (!text) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  char rerr[1536] = "";
  rc = mcim_config_load_string(path, text, dir, agent_spec, AGENT_NSPEC, cfg, rerr, sizeof(rerr));
  if (rerr[0]) {
    size_t used = strlen(err);
    snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", rerr);
  }
  if (rc == MCIM_OK && !nets_ok)
    rc = MCIM_CONFIG_INVALID;
  if (rc == MCIM_OK && !tre_backend_valid(*cfg, path, err, errlen))
    rc = MCIM_CONFIG_INVALID;
  if (rc == MCIM_OK && !nets && !mcim_config_has(*cfg, "peers")) {
    snprintf(err, errlen, "%s: say where the network is: \"networks\" {\"vno\":"
             " \"https://...\", ...} and/or \"peers\" (a peers file)", path);
    rc = MCIM_CONFIG_INVALID;
  }
  if (rc != MCIM_OK)
    goto cleanup;
  if (networks) {
    *networks = nets ? nets : json_object();
    nets = NULL;
    if (!*networks)
      rc = MCIM_NO_MEMORY;
  }
cleanup:
  if (rc != MCIM_OK) {
    mcim_config_free(*cfg);
    *cfg = NULL;
  }
  json_decref(nets);
  json_decref(doc);
  free(text);
  free(path);
  return rc;
}

mcim_cause_t dev_config_load(const char *dir, mcim_config_t **out, json_t **networks)
{
  char err[2048];
  mcim_cause_t rc = config_load(dir, out, networks, err, sizeof(err));
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "%s", err[0] ? err : "cannot load agent.json");
  return rc;
}

mcim_cause_t mcim_device_check_config(const char *dir, char *err, size_t errlen)
{
  mcim_config_t *cfg = NULL;
  char buf[2048];
  mcim_cause_t rc = config_load(dir, &cfg, NULL, buf, sizeof(buf));
  if (err && errlen)
    snprintf(err, errlen, "%s", buf);
  mcim_config_free(cfg);
  return rc;
}

void mcim_device_describe_config(FILE *out)
{
  mcim_config_describe(agent_spec, AGENT_NSPEC, out);
}

int64_t dev_cfg_int(const struct mcim_device *d, const char *name)
{
  /* durations are read as seconds, integers as they are */
  for (size_t i = 0; i < AGENT_NSPEC; i++)
    if (strcmp(agent_spec[i].name, name) == 0)
      return agent_spec[i].type == MCIM_CFG_DURATION ? mcim_config_duration(d->cfg, name)
                                                     : mcim_config_int(d->cfg, name);
  return 0;
}

const char *dev_cfg_str(const struct mcim_device *d, const char *name)
{
  const char *s = mcim_config_str(d->cfg, name);
  return s ? s : "";
}

const char *mcim_device_name(const struct mcim_device *d)
{
  return d ? d->name : NULL;
}

/* ---- sessions ---- */

static struct dev_session *session_find(struct mcim_device *d, const char *network)
{
  for (size_t i = 0; i < DEV_MAX_SESSIONS; i++)
    if (d->sessions[i].token && strcmp(d->sessions[i].network, network) == 0)
      return &d->sessions[i];
  return NULL;
}

static void session_wipe(struct dev_session *s)
{
  if (s->token) {
    mcim_wipe(s->token, strlen(s->token));
    free(s->token);
  }
  memset(s, 0, sizeof(*s));
}

mcim_cause_t dev_session_get(struct mcim_device *d, const char *network, char **token,
                             char scope[16])
{
  mcim_cause_t rc = MCIM_NO_ACCESS;
  *token = NULL;
  pthread_mutex_lock(&d->lock);
  struct dev_session *s = session_find(d, network);
  if (s && s->expires - dev_cfg_int(d, "token_margin") > mcim_now()) {
    *token = strdup(s->token);
    snprintf(scope, 16, "%s", s->scope);
    rc = *token ? MCIM_OK : MCIM_NO_MEMORY;
  }
  pthread_mutex_unlock(&d->lock);
  return rc;
}

void dev_session_put(struct mcim_device *d, const char *network, const char *scope,
                     const char *identity, const char *token, int64_t expires)
{
  char *copy = strdup(token);
  if (!copy)
    return; /* the next call attaches again */
  pthread_mutex_lock(&d->lock);
  struct dev_session *s = session_find(d, network);
  for (size_t i = 0; !s && i < DEV_MAX_SESSIONS; i++)
    if (!d->sessions[i].token)
      s = &d->sessions[i];
  if (!s) {
    /* all taken: replace the one that expires first */
    s = &d->sessions[0];
    for (size_t i = 1; i < DEV_MAX_SESSIONS; i++)
      if (d->sessions[i].expires < s->expires)
        s = &d->sessions[i];
  }
  session_wipe(s);
  snprintf(s->network, sizeof(s->network), "%s", network);
  snprintf(s->scope, sizeof(s->scope), "%s", scope);
  snprintf(s->identity, sizeof(s->identity), "%s", identity);
  s->token = copy;
  s->expires = expires;
  pthread_mutex_unlock(&d->lock);
}

mcim_cause_t dev_session_full(struct mcim_device *d, char network[64], char **token)
{
  mcim_cause_t rc = MCIM_NO_ACCESS;
  int64_t best = 0;
  *token = NULL;
  pthread_mutex_lock(&d->lock);
  int64_t live = mcim_now() + dev_cfg_int(d, "token_margin");
  for (size_t i = 0; i < DEV_MAX_SESSIONS; i++) {
    const struct dev_session *s = &d->sessions[i];
    /* the one that lives longest */
    if (!s->token || strcmp(s->scope, "full") != 0 || s->expires <= live || s->expires <= best)
      continue;
    free(*token);
    *token = strdup(s->token);
    snprintf(network, 64, "%s", s->network);
    best = s->expires;
    rc = *token ? MCIM_OK : MCIM_NO_MEMORY;
  }
  pthread_mutex_unlock(&d->lock);
  return rc;
}

bool dev_flag_take(struct mcim_device *d, bool *flag)
{
  pthread_mutex_lock(&d->lock);
  bool v = *flag;
  *flag = false;
  pthread_mutex_unlock(&d->lock);
  return v;
}

void dev_flag_set(struct mcim_device *d, bool *flag)
{
  pthread_mutex_lock(&d->lock);
  *flag = true;
  pthread_mutex_unlock(&d->lock);
}

void dev_session_drop(struct mcim_device *d, const char *network)
{
  pthread_mutex_lock(&d->lock);
  struct dev_session *s = session_find(d, network);
  if (s)
    session_wipe(s);
  pthread_mutex_unlock(&d->lock);
}

json_t *dev_sessions_json(struct mcim_device *d)
{
  json_t *arr = json_array();
  int64_t now = mcim_now();
  pthread_mutex_lock(&d->lock);
  for (size_t i = 0; arr && i < DEV_MAX_SESSIONS; i++) {
    const struct dev_session *s = &d->sessions[i];
    if (!s->token || s->expires <= now)
      continue;
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I}", "network", s->network, "scope",
                                         s->scope, "identity", s->identity, "expires",
                                         (json_int_t)s->expires));
  }
  pthread_mutex_unlock(&d->lock);
  return arr;
}

/* ---- worker ---- */

bool dev_stopping(struct mcim_device *d)
{
  pthread_mutex_lock(&d->lock);
  bool s = d->stopping;
  pthread_mutex_unlock(&d->lock);
  return s;
}

void dev_wake(struct mcim_device *d)
{
  pthread_mutex_lock(&d->lock);
  d->wake = true;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

void dev_sleep(struct mcim_device *d, int64_t ms)
{
  struct timespec ts;
  pthread_mutex_lock(&d->lock);
  if (ms > 0) {
    /* the condition's clock is CLOCK_MONOTONIC (mcim_device_start_with): a step of the
     * wall clock neither shortens nor stretches a pause */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
  }
  if (ms != 0) {
    /* ms < 0: no timeout at all, only a signal (dev_wake, the stop) ends the wait */
    while (!d->stopping && !d->wake)
      if (ms < 0 ? pthread_cond_wait(&d->cond, &d->lock) != 0
                 : pthread_cond_timedwait(&d->cond, &d->lock, &ts) != 0)
        break; /* ETIMEDOUT: the pause is over */
    mcim_metric_inc(&mcim_m_m2me_worker_wakeups, NULL);
  }
  d->wake = false;
  pthread_mutex_unlock(&d->lock);
}

static void *worker_main(void *arg)
{
  mcim_thread_name("m2me-worker");
  struct mcim_device *d = arg;
  struct mcim_http_lite *cli = NULL;

  while (!dev_stopping(d)) {
    if (!cli && dev_client_new(d, &cli) != MCIM_OK) {
      mcim_log_error("cannot create the HTTP client (operators_ca %s)",
                     mcim_config_path(d->cfg, "operators_ca"));
      cli = NULL;
      dev_sleep(d, 1000);
      continue;
    }
    pthread_mutex_lock(&d->lock);
    d->worker_cli = cli;
    if (d->stopping) /* the stop came before the client: it interrupts nothing */
      mcim_http_lite_interrupt(cli);
    pthread_mutex_unlock(&d->lock);
    int64_t delay = dev_procedure_round(d, cli);
    /* between procedures: deferred notifications, a PCID renewal the network asked for, the
     * undo of a switch the RO has not taken yet (then the sleep ends when the next is due) */
    dev_idle_round(d, cli);
    if (delay < 0) {
      dev_undo_round(d, cli);
      delay = dev_undo_wait_ms(d);
    }
    /* delay < 0: no procedure is running; nothing is due until the control API (a new
     * procedure, an attach that made something deliverable) or the stop signals */
    if (delay != 0)
      dev_sleep(d, delay);
  }
  pthread_mutex_lock(&d->lock);
  d->worker_cli = NULL;
  pthread_mutex_unlock(&d->lock);
  mcim_http_lite_free(cli);
  return NULL;
}

/* ---- start / stop ---- */

static mcim_cause_t load_identity(struct mcim_device *d)
{
  json_t *st = NULL;
  mcim_cause_t rc = d->tre->ops->status(d->tre->ctx, &st);
  const char *dev = json_string_value(json_object_get(st, "device"));
  const char *want = mcim_config_str(d->cfg, "device");

  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "the TRE does not answer");
    goto cleanup;
  }
  rc = MCIM_CONFIG_INVALID;
  if (!dev || !mcim_pki_name_valid(dev)) {
    mcim_log_error("the TRE has no valid device id");
    goto cleanup;
  }
  if (want && strcmp(want, dev) != 0) {
    mcim_log_error("%s: \"device\" is \"%s\" but the TRE belongs to device \"%s\"",
                   mcim_config_file(d->cfg), want, dev);
    goto cleanup;
  }
  snprintf(d->name, sizeof(d->name), "%s", dev);
  rc = MCIM_OK;
cleanup:
  json_decref(st);
  return rc;
}

void mcim_device_process_init(void)
{
#ifdef M_ARENA_MAX
  /* One malloc arena (glibc gives every thread that allocates an arena of its own, whose
   * pages stay resident once touched): the worker runs one procedure at a time and the
   * control threads answer rare local requests, so they hardly ever contend for the lock. */
  mallopt(M_ARENA_MAX, 1);
#endif
  mcim_store_sqlite_small();
  /* OpenSSL without its error strings (thousands of them, put in a hash table at the first
   * TLS context: about 0.3 MiB resident): the agent's one use of them, the detail of a
   * failed TLS handshake, has words of its own for the usual reasons
   * (src/net/http_lite_conn.c) and the code for the others. Without the system's openssl.cnf
   * either: the agent's TLS settings are its own (http_lite_conn.c), and a configuration that activated a provider would
   * undo the subset below. Before anything initialises OpenSSL. */
  const uint64_t lean = OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS | OPENSSL_INIT_NO_LOAD_CONFIG;
  OPENSSL_init_crypto(lean, NULL);
  /* only the algorithms the agent uses (src/crypto/subset.h: about 0.2 MiB less at the peak) */
  if (!mcim_crypto_subset_init())
    mcim_log_error("OpenSSL: the algorithm subset could not be set up, the default provider"
                   " serves the agent");
  OPENSSL_init_ssl(lean | OPENSSL_INIT_NO_LOAD_SSL_STRINGS, NULL);
}

static mcim_cause_t open_store(struct mcim_device *d)
{
  const char *db = mcim_config_path(d->cfg, "database");
  /* A file in the device's folder: SQLite by name, so the agent links no other backend. */
  mcim_cause_t rc = mcim_store_open_with(&mcim_store_sqlite_ops, db, NULL, &d->store);
  if (rc == MCIM_OK)
    rc = dev_store_migrate(d->store);
  /* A page cache of 128 KiB (SQLite's default: 2 MiB): a procedure touches a few pages of
   * agent.db (its row, its trace rows, their indexes); the trace table, bounded only by
   * records_max procedures, would otherwise fill the default over the device's life. Pages
   * not cached are read from the file (the kernel's cache), only the agent's memory is
   * bounded. */
  if (rc == MCIM_OK)
    rc = mcim_store_exec(d->store, "PRAGMA cache_size = -128", NULL, 0, NULL, NULL);
  /* What ended while the agent was stopped, or a lowered bound: the purge otherwise runs only
   * when a procedure ends, and an agent that starts and idles would keep it all. A failure
   * is logged and harms nothing (the next end purges). No thread runs yet. */
  if (rc == MCIM_OK)
    dev_records_purge(d, d->store, NULL);
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "store %s: %s", db,
                   d->store ? mcim_store_errmsg(d->store) : "cannot open");
  return rc;
}

/* Everything an agent is but its threads: configuration, identity, pins, store. */
static mcim_cause_t device_new(const char *dir, mcim_tre_t *tre, struct mcim_device **out)
{
  json_error_t jerr;
  mcim_cause_t rc = MCIM_NO_MEMORY;
  struct mcim_device *d = calloc(1, sizeof(*d));

  *out = NULL;
  if (!d) {
    mcim_tre_close(tre);
    return rc;
  }
  d->tre = tre;
  pthread_mutex_init(&d->store_lock, NULL);
  pthread_mutex_init(&d->peers_lock, NULL);
  pthread_mutex_init(&d->attach_lock, NULL);
  pthread_mutex_init(&d->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&d->cond, &ca);
  pthread_condattr_destroy(&ca);
  d->locks_ready = true;
  d->dir = strdup(dir ? dir : "");
  if (!d->dir || !tre)
    goto fail;
  rc = dev_config_load(dir, &d->cfg, &d->networks);
  if (rc != MCIM_OK)
    goto fail;
  rc = load_identity(d);
  if (rc != MCIM_OK)
    goto fail;
  rc = mcim_pki_cert_load(mcim_config_path(d->cfg, "operators_ca"), &d->operators_ca);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "cannot load operators_ca %s",
                   mcim_config_path(d->cfg, "operators_ca"));
    goto fail;
  }
  /* A peers file is optional (networks may say it all) but, when named, must be readable. */
  if (mcim_config_has(d->cfg, "peers")) {
    d->peers = json_load_file(mcim_config_path(d->cfg, "peers"), 0, &jerr);
    if (!json_is_object(d->peers)) {
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID, "peers file %s: %s",
                     mcim_config_path(d->cfg, "peers"), d->peers ? "not an object" : jerr.text);
      rc = MCIM_CONFIG_INVALID;
      goto fail;
    }
  }
  rc = open_store(d);
  if (rc != MCIM_OK)
    goto fail;
  dev_undo_load(d); /* an undo still due when the agent stopped: the worker asks again */
  *out = d;
  return MCIM_OK;
fail:
  mcim_device_free(d);
  return rc;
}

mcim_cause_t mcim_device_open_with(const char *dir, mcim_tre_t *tre, struct mcim_device **out)
{
  return device_new(dir, tre, out);
}

/* A crash point's record (include/mcim/crashpoint.h): a trace row in agent.db, written at once
 * (never held for the round: the kill would lose it). */
static void crash_record(void *ctx, const char *txn, int step, const char *what)
{
  struct mcim_device *d = ctx;
  mcim_store_t *st = dev_store_lock(d);
  if (st && !mcim_store_in_txn(st))
    dev_trace_put_at(st, dev_now_us(), txn, step, d->name, "crashpoint", what, NULL, MCIM_OK);
  else
    mcim_log_event(MCIM_LOG_ERROR, txn, step, MCIM_STORE_ERROR, "crash point not recorded: %s",
                   what);
  dev_store_unlock(d);
}

mcim_cause_t mcim_device_start_with(const char *dir, mcim_tre_t *tre, struct mcim_device **out)
{
  struct mcim_device *d = NULL;
  mcim_cause_t rc = device_new(dir, tre, &d);
  *out = NULL;
  if (rc != MCIM_OK)
    return rc;
  mcim_crashpoint_init(d->name, crash_record, d); /* before its threads start */
  rc = dev_control_start(d);
  if (rc != MCIM_OK)
    goto fail;
  if (mcim_thread_start(&d->worker, MCIM_SMALL_STACK, worker_main, d) != 0) {
    rc = MCIM_INTERNAL;
    goto fail;
  }
  d->worker_running = true;
  mcim_log_info("m2me agent of %s: control API on %s", d->name,
                mcim_config_path(d->cfg, "control_socket"));
  *out = d;
  return MCIM_OK;
fail:
  mcim_device_free(d);
  return rc;
}

int64_t mcim_device_round(struct mcim_device *d, struct mcim_http_lite *cli)
{
  int64_t delay = dev_procedure_round(d, cli);
  dev_idle_round(d, cli);
  return delay;
}

mcim_cause_t mcim_device_client_new(struct mcim_device *d, struct mcim_http_lite **out)
{
  return dev_client_new(d, out);
}

mcim_cause_t mcim_device_procedure(struct mcim_device *d, const char *txn, json_t **out)
{
  struct dev_proc p = {0};
  mcim_store_t *st = dev_store_lock(d);
  mcim_cause_t rc = dev_proc_view(st, txn, &p);
  dev_store_unlock(d);
  *out = rc == MCIM_OK ? dev_proc_json(&p) : NULL;
  if (rc == MCIM_OK && !*out)
    rc = MCIM_NO_MEMORY;
  dev_proc_clear(&p);
  return rc;
}

mcim_cause_t mcim_device_tre_status(struct mcim_device *d, json_t **out)
{
  return d->tre->ops->status(d->tre->ctx, out);
}

void mcim_device_free(struct mcim_device *d)
{
  if (!d)
    return;
  /* The control server first: no handler may run while the rest goes away. */
  if (d->control) {
    mcim_http_local_free(d->control);
    d->control = NULL;
    if (d->cfg && mcim_config_path(d->cfg, "control_socket"))
      unlink(mcim_config_path(d->cfg, "control_socket"));
  }
  if (d->worker_running) {
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_signal(&d->cond);
    /* a call in progress ends now (TIMEOUT, retried at the next start like any), not at the
     * end of a held long poll */
    mcim_http_lite_interrupt(d->worker_cli);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->worker, NULL);
    d->worker_running = false;
  }
  for (size_t i = 0; i < DEV_MAX_SESSIONS; i++)
    session_wipe(&d->sessions[i]);
  mcim_store_close(d->store);
  json_decref(d->trace_held); /* released at the end of every round: empty */
  dev_data_memo_clear(&d->data_memo);
  mcim_tre_close(d->tre);
  X509_free(d->operators_ca);
  json_decref(d->peers);
  json_decref(d->peer_certs);
  json_decref(d->networks);
  mcim_config_free(d->cfg);
  if (d->locks_ready) {
    pthread_mutex_destroy(&d->store_lock);
    pthread_mutex_destroy(&d->peers_lock);
    pthread_mutex_destroy(&d->attach_lock);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
  }
  free(d->dir);
  free(d);
}
