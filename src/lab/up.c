/* `mcim lab up`: a lab's folder made, its roles' configurations written (ports, peers, the
 * store, the AuC), the PostgreSQL server, the HLRs and the balancer it needs started, and
 * each role instance started and waited for until it answers as itself. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/pki.h"
#include "mcim/util.h"

static const char *const base_roles[][2] = {
    {"vno", "vno"}, {"ro", "ro"}, {"pva", "pva"}, {"m2mes", "m2mes"},
};

/* `database`: the role's store locator, NULL for its SQLite file. */
static json_t *role_config(mcim_lab_t *lab, const char *name, const char *kind, int port,
                           size_t sho_index, const char *database)
{
  char rel[PATH_MAX];
  json_t *c = json_object();
  json_object_set_new(c, "name", json_string(name));
  json_object_set_new(c, "listen_port", json_integer(port));
  snprintf(rel, sizeof(rel), "../pki/%s/cert.pem", name);
  json_object_set_new(c, "tls_cert", json_string(rel));
  snprintf(rel, sizeof(rel), "../pki/%s/key.pem", name);
  json_object_set_new(c, "tls_key", json_string(rel));
  json_object_set_new(c, "operators_ca", json_string("../pki/" MCIM_PKI_OPERATORS_CA_CERT));
  json_object_set_new(c, "m2mes_ca", json_string("../pki/" MCIM_PKI_M2MES_CA_CERT));
  snprintf(rel, sizeof(rel), "%s.db", name);
  json_object_set_new(c, "database", json_string(database ? database : rel));
  json_object_set_new(c, "storage_key", json_string("storage.key"));
  json_object_set_new(c, "peers", json_string("../peers.json"));
  /* Short lifetimes and quick retries suit a lab on loopback. */
  json_object_set_new(c, "tick_ms", json_integer(50));
  json_object_set_new(c, "outbox_backoff_ms", json_integer(100));
  if (strcmp(kind, "sho") == 0) {
    char plmn[8];
    snprintf(plmn, sizeof(plmn), "001%02zu", sho_index + 2);
    json_object_set_new(c, "plmn", json_string(plmn));
  }
  /* Slowed down as a whole (valgrind, MCIM_TIME_SCALE), a device's change held by a test
   * across a restart of the PVA could outlive the nonce it waits for (2 minutes): the nonce
   * gone, the device waited for its procedure's deadline (change_faults, "d/pva at step 4",
   * once under memcheck). The nonce lives as much longer as every other deadline: its default
   * (the PVA's `nonce_lifetime`, 2 minutes) times the scale. */
  if (strcmp(kind, "pva") == 0 && mcim_lab_time_scale() > 1)
    json_object_set_new(c, "nonce_lifetime", json_integer(120 * mcim_lab_time_scale()));
  if (strcmp(kind, "m2mes") == 0) {
    json_object_set_new(c, "m2mes_ca_key", json_string("../pki/" MCIM_PKI_M2MES_CA_KEY));
    /* the lab's TPMs: EK certificates from its stand-in TPM vendor (docs/tre-tpm.md) */
    json_object_set_new(c, "tpm_vendor_ca", json_string("../pki/" MCIM_PKI_TPM_VENDOR_CA_CERT));
    /* the agent the lab's TPM devices run, m2me: its digest is the RIM a TPM device's
     * launcher is matched with */
    char bin[PATH_MAX];
    if (!realpath(mcim_lab_bindir(), bin))
      snprintf(bin, sizeof(bin), "%s", mcim_lab_bindir());
    if (mcim_lab_join(rel, sizeof(rel), bin, "/m2me") == MCIM_OK)
      json_object_set_new(c, "agent_executable", json_string(rel));
  }
  const char *hlr = mcim_lab_hlr_addr(lab, name);
  if (hlr) { /* --auc osmo-hlr: the role's own HLR (CTRL on the same loopback address) */
    json_object_set_new(c, "auc", json_string("osmo-hlr"));
    json_object_set_new(c, "hlr_gsup", json_string(hlr));
  }
  return c;
}

static mcim_cause_t mkdir_p(const char *path)
{
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof(tmp), "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return MCIM_IO_ERROR;
      *p = '/';
    }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
    return MCIM_IO_ERROR;
  return MCIM_OK;
}

mcim_cause_t mcim_lab_mkdir(const char *path)
{
  return mkdir_p(path);
}

/* Whether `base` answers /v1/health as role `name`. */
bool mcim_lab_healthy_at(mcim_lab_t *lab, const char *base, const char *name)
{
  char url[512];
  struct mcim_http_client *cli = mcim_lab_admin_client(lab);
  struct mcim_http_result res;
  if (!base || !cli)
    return false;
  snprintf(url, sizeof(url), "%s/v1/health", base);
  /* That role, not merely a role of this lab: every role's certificate comes from the same
   * CA, and a daemon that could not bind its port leaves whoever holds it answering. */
  bool ok = mcim_http_request(cli, "GET", url, NULL, NULL, &res) == MCIM_OK &&
            json_is_string(json_object_get(res.json, "name")) &&
            strcmp(json_string_value(json_object_get(res.json, "name")), name) == 0;
  mcim_http_result_clear(&res);
  return ok;
}

static void print_log_tail(const char *path)
{
  FILE *f = fopen(path, "r");
  char line[512];
  char tail[8][512];
  size_t n = 0;
  if (!f)
    return;
  while (fgets(line, sizeof(line), f))
    snprintf(tail[n++ % 8], sizeof(tail[0]), "%s", line);
  fclose(f);
  for (size_t i = n > 8 ? n - 8 : 0; i < n; i++)
    fprintf(stderr, "    %s", tail[i % 8]);
}

/* The name of an instance's configuration and log in its role's folder: NAME, or NAME-K
 * for the K-th instance (K > 1) of a role that runs several. They share that folder, so its
 * storage key: the secrets in their common database are sealed with it. */
static void role_file_base(const json_t *role, char *out, size_t n)
{
  const char *name = json_string_value(json_object_get(role, "name"));
  json_int_t k = json_integer_value(json_object_get(role, "instance"));
  if (k > 1)
    snprintf(out, n, "%s-%lld", name, (long long)k);
  else
    snprintf(out, n, "%s", name);
}

mcim_cause_t mcim_lab_start_role(mcim_lab_t *lab, json_t *role, int wait_ms)
{
  char mcimd[PATH_MAX], cfg[PATH_MAX], log[PATH_MAX];
  const char *name = json_string_value(json_object_get(role, "name"));
  const char *kind = json_string_value(json_object_get(role, "kind"));
  const char *url = json_string_value(json_object_get(role, "url"));
  char file[80];
  role_file_base(role, file, sizeof(file));
  if ((size_t)snprintf(mcimd, sizeof(mcimd), "%s/mcimd", mcim_lab_bindir()) >= sizeof(mcimd) ||
      (size_t)snprintf(cfg, sizeof(cfg), "%s/%s/%s.json", lab->dir, name, file) >= sizeof(cfg) ||
      (size_t)snprintf(log, sizeof(log), "%s/%s/%s.log", lab->dir, name, file) >= sizeof(log)) {
    fprintf(stderr, "mcim: %s (%s): a path of the lab or of mcimd is too long\n", name, kind);
    return MCIM_TOO_LARGE;
  }
  char *argv[] = {mcimd, "--role", (char *)kind, "--config", cfg, NULL};
  long pid = mcim_lab_spawn(argv, log);
  if (pid <= 0)
    return MCIM_IO_ERROR;
  json_object_set_new(role, "pid", json_integer(pid));
  for (int waited = 0; waited < wait_ms; waited += 50) {
    if (mcim_lab_healthy_at(lab, url, name))
      return MCIM_OK;
    /* our own child: waitpid tells whether it died (its name is not "mcimd" until exec) */
    if (waitpid((pid_t)pid, NULL, WNOHANG) == (pid_t)pid) {
      fprintf(stderr, "mcim: %s (%s) exited at start; the end of %s:\n", name, kind, log);
      print_log_tail(log);
      return MCIM_PROCEDURE_FAILED;
    }
    mcim_lab_sleep_ms(50);
  }
  fprintf(stderr, "mcim: %s (%s) did not answer within %d ms; see %s\n", name, kind, wait_ms, log);
  return MCIM_TIMEOUT;
}

/* A free port on loopback not handed out yet in this lab (`taken`, `*ntaken`). The probe's
 * port is free again once probed: the kernel may hand it out twice. Two roles given one port
 * would have one daemon fail to bind and the other answer for both (seen: the demo's orders
 * for sho-b reached sho-a). */
static int lab_port(int *taken, size_t *ntaken)
{
  for (int tries = 0; tries < 32; tries++) {
    int port = mcim_lab_free_port();
    bool dup = port <= 0;
    for (size_t k = 0; k < *ntaken && !dup; k++)
      dup = taken[k] == port;
    if (!dup) {
      taken[(*ntaken)++] = port;
      return port;
    }
  }
  return -1;
}

mcim_cause_t mcim_lab_up(const char *dir, const struct mcim_lab_up_opts *opts, mcim_lab_t **out)
{
  static const char *const default_shos[] = {"sho-a", "sho-b"};
  const char *shos[MCIM_LAB_MAX_SHOS];
  size_t nshos = opts && opts->nshos ? opts->nshos : 2;
  const char *store = opts && opts->store ? opts->store : "sqlite";
  const char *auc = opts && opts->auc ? opts->auc : "builtin";
  int wait_ms = (opts && opts->wait_ms ? opts->wait_ms : 15000) * mcim_lab_time_scale();
  mcim_lab_t *lab = NULL;
  mcim_cause_t rc;
  char path[PATH_MAX];
  *out = NULL;

  if (nshos > MCIM_LAB_MAX_SHOS)
    return MCIM_INVALID_ARGUMENT;
  for (size_t i = 0; i < nshos; i++)
    shos[i] = opts && opts->nshos ? opts->shos[i] : default_shos[i];
  if (strcmp(store, "sqlite") != 0 && strcmp(store, "postgres") != 0) {
    fprintf(stderr, "mcim: --store %s is not available (sqlite or postgres)\n", store);
    return MCIM_UNSUPPORTED;
  }
  if (strcmp(auc, "builtin") != 0 && strcmp(auc, "osmo-hlr") != 0) {
    fprintf(stderr, "mcim: --auc %s is not available (builtin or osmo-hlr)\n", auc);
    return MCIM_UNSUPPORTED;
  }
  bool pg = strcmp(store, "postgres") == 0;
  int instances = opts && opts->instances > 0 ? opts->instances : 1;
  if (instances > MCIM_LAB_MAX_INSTANCES) {
    fprintf(stderr, "mcim: --instances %d: at most %d\n", instances, MCIM_LAB_MAX_INSTANCES);
    return MCIM_INVALID_ARGUMENT;
  }
  if (instances > 1 && !pg) {
    /* correctness comes from the one database the instances share */
    fprintf(stderr, "mcim: --instances %d needs --store postgres (a SQLite file is one"
                    " instance's)\n", instances);
    return MCIM_UNSUPPORTED;
  }
  if (instances > 1 && !mcim_lab_balancer_program()) {
    fprintf(stderr, "mcim: --instances %d needs HAProxy, the load balancer in front of each"
                    " role (Debian: apt-get install haproxy)\n", instances);
    return MCIM_NOT_FOUND;
  }
  json_t *locators = NULL;
  /* A lab already running here? */
  if (mcim_lab_open(dir, &lab) == MCIM_OK) {
    json_t *st = NULL;
    bool running = false;
    if (mcim_lab_status(lab, &st) == MCIM_OK) {
      size_t i;
      json_t *r;
      json_array_foreach(json_object_get(st, "roles"), i, r)
        running |= json_is_true(json_object_get(r, "running"));
    }
    json_decref(st);
    mcim_lab_free(lab);
    lab = NULL;
    if (running)
      return MCIM_CONFLICT;
  }
  rc = mkdir_p(dir);
  if (rc != MCIM_OK)
    return rc;
  lab = calloc(1, sizeof(*lab));
  if (!lab || !mcim_lab_realpath(dir, lab->dir)) {
    free(lab);
    return MCIM_IO_ERROR;
  }

  /* The PKI: every role's certificate, the admin client, both CAs. Kept across labs in
   * the same folder unless a role is new. */
  const char *names[4 + MCIM_LAB_MAX_SHOS];
  size_t nnames = 0;
  for (size_t i = 0; i < 4; i++)
    names[nnames++] = base_roles[i][0];
  for (size_t i = 0; i < nshos; i++)
    names[nnames++] = shos[i];
  snprintf(path, sizeof(path), "%s/pki", lab->dir);
  bool have_all = true;
  for (size_t i = 0; i < nnames; i++) {
    char cert[PATH_MAX];
    snprintf(cert, sizeof(cert), "%s/pki/%s/cert.pem", lab->dir, names[i]);
    have_all &= access(cert, R_OK) == 0;
  }
  if (!have_all) {
    rc = mcim_pki_lab_init(path, names, nnames, true, 365);
    if (rc != MCIM_OK)
      goto fail;
  }

  lab->json = json_pack("{s:s,s:s,s:s,s:I,s:[],s:[]}", "dir", lab->dir, "store", store, "auc",
                        auc, "created", (json_int_t)mcim_now(), "roles", "devices");
  if (pg) {
    /* the server first: a lab whose store cannot start starts no role */
    rc = mcim_lab_pg_start(lab, names, nnames, &locators);
    if (rc == MCIM_OK)
      rc = mcim_lab_save(lab);
    if (rc != MCIM_OK)
      goto fail;
  }
  if (strcmp(auc, "osmo-hlr") == 0) {
    /* the HLRs before the roles whose configurations name them: the RO (its ICF), the SHOs */
    const char *with_auc[1 + MCIM_LAB_MAX_SHOS];
    size_t nauc = 0;
    for (size_t i = 0; i < nnames; i++)
      if (i >= 4 || strcmp(base_roles[i][1], "ro") == 0)
        with_auc[nauc++] = names[i];
    rc = mcim_lab_hlr_start(lab, with_auc, nauc, wait_ms);
    if (rc != MCIM_OK)
      goto fail;
  }
  json_t *peers = json_object();
  json_t *roles = json_object_get(lab->json, "roles");
  json_t *lb_urls = instances > 1 ? json_object() : NULL;
  int taken[(4 + MCIM_LAB_MAX_SHOS) * (MCIM_LAB_MAX_INSTANCES + 1)];
  size_t ntaken = 0;
  if (lb_urls)
    json_object_set_new(lab->json, "balancer", json_pack("{s:i,s:o}", "pid", 0, "urls", lb_urls));
  for (size_t i = 0; i < nnames; i++) {
    const char *kind = i < 4 ? base_roles[i][1] : "sho";
    /* The role's address (the balancer's when it has several instances), then its instances'. */
    for (int k = instances > 1 ? 0 : 1; k <= instances; k++) {
      int port = lab_port(taken, &ntaken);
      char url[64];
      if (port <= 0) {
        rc = MCIM_IO_ERROR;
        json_decref(peers);
        goto fail;
      }
      snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
      if (k == 0) {
        json_object_set_new(lb_urls, names[i], json_string(url));
        json_object_set_new(peers, names[i], json_string(url));
        continue;
      }
      json_t *entry = json_pack("{s:s,s:s,s:i,s:s,s:i}", "name", names[i], "kind", kind, "port",
                                port, "url", url, "pid", 0);
      if (instances > 1)
        json_object_set_new(entry, "instance", json_integer(k));
      else
        json_object_set_new(peers, names[i], json_string(url));
      json_array_append(roles, entry);
      snprintf(path, sizeof(path), "%s/%s", lab->dir, names[i]);
      rc = mkdir_p(path);
      json_t *cfg = role_config(lab, names[i], kind, port, i < 4 ? 0 : i - 4,
                                json_string_value(json_object_get(locators, names[i])));
      char file[80];
      role_file_base(entry, file, sizeof(file));
      json_decref(entry);
      snprintf(path, sizeof(path), "%s/%s/%s.json", lab->dir, names[i], file);
      if (rc == MCIM_OK)
        rc = mcim_lab_write_json(path, cfg, 0644);
      json_decref(cfg);
      if (rc != MCIM_OK) {
        json_decref(peers);
        goto fail;
      }
    }
  }
  snprintf(path, sizeof(path), "%s/peers.json", lab->dir);
  rc = mcim_lab_write_json(path, peers, 0644);
  json_decref(peers);
  if (rc == MCIM_OK)
    rc = mcim_lab_save(lab);
  if (rc != MCIM_OK)
    goto fail;

  /* One instance after the other: the first of a role makes its storage key and schema. */
  size_t i;
  json_t *role;
  json_array_foreach(roles, i, role) {
    rc = mcim_lab_start_role(lab, role, wait_ms);
    mcim_lab_save(lab); /* record the pid even if it failed, so `down` can stop it */
    if (rc != MCIM_OK)
      goto fail;
  }
  if (instances > 1) {
    rc = mcim_lab_balancer_start(lab, wait_ms);
    mcim_lab_save(lab);
    if (rc != MCIM_OK)
      goto fail;
  }
  json_decref(locators);
  *out = lab;
  return MCIM_OK;

fail:
  json_decref(locators);
  if (lab && lab->json)
    mcim_lab_down(lab);
  mcim_lab_free(lab);
  return rc;
}
