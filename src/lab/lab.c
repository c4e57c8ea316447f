/* The lab: start, find, watch and stop the role daemons of one lab folder. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "lab/lab_priv.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"

const char *mcim_lab_dir(const char *opt_dir)
{
  if (opt_dir && *opt_dir)
    return opt_dir;
  const char *env = getenv("MCIM_LAB");
  return env && *env ? env : MCIM_LAB_DEFAULT_DIR;
}

const char *mcim_lab_bindir(void)
{
  static char dir[PATH_MAX];
  const char *env = getenv("MCIM_BIN");
  if (env && *env)
    return env;
  ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
  if (n <= 0)
    return ".";
  dir[n] = '\0';
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  return dir;
}

const char *mcim_lab_tpm_agent(char *path, size_t len)
{
  char buf[PATH_MAX];
  const char *name = "m2me-tpm";
  if (mcim_lab_join(buf, sizeof(buf), mcim_lab_bindir(), "/m2me-tpm") != MCIM_OK ||
      access(buf, X_OK) != 0)
    name = "m2me";
  if (path)
    snprintf(path, len, "%s/%s", mcim_lab_bindir(), name);
  return name;
}

int mcim_lab_time_scale(void)
{
  const char *env = getenv("MCIM_TIME_SCALE");
  int n = env ? atoi(env) : 1;
  return n >= 1 && n <= 100 ? n : 1;
}

const char *mcim_lab_find_program(const char *name, const char *const *fixed, char *out,
                                  size_t outlen)
{
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof(buf), "%s", path ? path : "");
  for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(out, outlen, "%s/%s", d, name);
    if (d[0] == '/' && access(out, X_OK) == 0)
      return out;
  }
  for (size_t i = 0; fixed && fixed[i]; i++) {
    snprintf(out, outlen, "%s/%s", fixed[i], name);
    if (access(out, X_OK) == 0)
      return out;
  }
  return NULL;
}

mcim_cause_t mcim_lab_join(char *out, size_t n, const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la + lb + 1 > n) {
    if (n)
      out[0] = '\0';
    return MCIM_TOO_LARGE;
  }
  memcpy(out, a, la);
  memcpy(out + la, b, lb + 1);
  return MCIM_OK;
}

void mcim_lab_sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

int mcim_lab_free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int port = -1;
  if (fd < 0)
    return -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

mcim_cause_t mcim_lab_write_json(const char *path, const json_t *j, int mode)
{
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
    return MCIM_TOO_LARGE;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0)
    return MCIM_IO_ERROR;
  char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  mcim_cause_t rc = MCIM_IO_ERROR;
  if (text) {
    size_t n = strlen(text);
    if (write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
      rc = MCIM_OK;
    free(text);
  }
  close(fd);
  if (rc == MCIM_OK && rename(tmp, path) != 0)
    rc = MCIM_IO_ERROR;
  if (rc != MCIM_OK)
    unlink(tmp);
  return rc;
}

static const char *base_name(const char *path)
{
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* Does `pid` still run `prog`? 1: itself; 2: under valgrind (scripts/valgrind.sh starts the
 * daemons and agents under memcheck: the command line is valgrind, its options, then the
 * program); 0: gone, a zombie, or a pid reused by another program (after a reboot), which is
 * never signalled. */
static int pid_runs(long pid, const char *prog)
{
  char path[64], buf[4096];
  if (pid <= 0)
    return 0;
  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *rp = strrchr(buf, ')');
  if (!rp || rp[1] != ' ' || rp[2] == 'Z' || rp[2] == 'X')
    return 0; /* gone, or a zombie waiting for its parent */
  snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
  f = fopen(path, "r");
  if (!f)
    return 0;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *arg0 = base_name(buf);
  if (strcmp(arg0, prog) == 0)
    return 1;
  if (strcmp(arg0, "valgrind") != 0 && strcmp(arg0, "valgrind.bin") != 0)
    return 0;
  for (const char *a = buf + strlen(buf) + 1; a < buf + n; a += strlen(a) + 1)
    if (*a != '-') /* valgrind's options are one word each: the first other is the program */
      return strcmp(base_name(a), prog) == 0 ? 2 : 0;
  return 0;
}

/* Is `pid` one of ours still running? Checks the command name so that a pid reused by an
 * unrelated process after a reboot is never signalled. */
bool mcim_lab_pid_alive(long pid, const char *prog)
{
  return pid_runs(pid, prog) != 0;
}

long mcim_lab_spawn(char *const argv[], const char *log_path)
{
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    setsid(); /* the daemon outlives the command that started it */
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int null = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (null >= 0)
      dup2(null, 0);
    for (int i = 3; i < 1024; i++)
      close(i);
    execv(argv[0], argv);
    dprintf(2, "cannot start %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

void mcim_lab_stop_pid(long pid, const char *prog)
{
  int runs = pid_runs(pid, prog);
  if (!runs)
    return;
  kill((pid_t)pid, SIGTERM);
  /* 5 s; under valgrind 120 s: its leak check at the exit takes seconds, and a SIGKILL
   * would lose the report scripts/valgrind.sh reads */
  for (int i = 0; i < (runs == 2 ? 2400 : 100); i++) {
    waitpid((pid_t)pid, NULL, WNOHANG); /* reap if it is our child */
    if (!mcim_lab_pid_alive(pid, prog))
      return;
    mcim_lab_sleep_ms(50);
  }
  kill((pid_t)pid, SIGKILL);
  waitpid((pid_t)pid, NULL, WNOHANG);
}

/* ---- lab.json ---- */

static bool lab_realpath(const char *dir, char out[MCIM_LAB_DIR_MAX])
{
  char full[PATH_MAX];
  if (!realpath(dir, full) || strlen(full) >= MCIM_LAB_DIR_MAX)
    return false;
  memcpy(out, full, strlen(full) + 1);
  return true;
}

const char *mcim_lab_path(const mcim_lab_t *lab)
{
  return lab->dir;
}

mcim_cause_t mcim_lab_save(mcim_lab_t *lab)
{
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/lab.json", lab->dir);
  return mcim_lab_write_json(path, lab->json, 0644);
}

json_t *mcim_lab_role(mcim_lab_t *lab, const char *name)
{
  size_t i;
  json_t *r;
  json_array_foreach(json_object_get(lab->json, "roles"), i, r)
    if (strcmp(json_string_value(json_object_get(r, "name")), name) == 0)
      return r;
  return NULL;
}

/* A role's address for its clients: the load balancer's when it runs several instances
 * (lab.json "balancer"), else its one instance's. */
const char *mcim_lab_url(mcim_lab_t *lab, const char *name)
{
  json_t *lb = json_object_get(json_object_get(lab->json, "balancer"), "urls");
  const char *url = json_string_value(json_object_get(lb, name));
  return url ? url : json_string_value(json_object_get(mcim_lab_role(lab, name), "url"));
}

const char *mcim_lab_kind(mcim_lab_t *lab, const char *name)
{
  return json_string_value(json_object_get(mcim_lab_role(lab, name), "kind"));
}

/* lab.json's "roles" are processes, one per instance: each name once. */
const char *const *mcim_lab_roles(mcim_lab_t *lab)
{
  if (!lab->role_names) {
    json_t *roles = json_object_get(lab->json, "roles");
    size_t n = json_array_size(roles), i, k = 0;
    json_t *r;
    lab->role_names = calloc(n + 1, sizeof(char *));
    if (!lab->role_names)
      return NULL;
    json_array_foreach(roles, i, r) {
      const char *name = json_string_value(json_object_get(r, "name"));
      bool seen = false;
      for (size_t j = 0; j < k && !seen; j++)
        seen = strcmp(lab->role_names[j], name) == 0;
      if (name && !seen)
        lab->role_names[k++] = name;
    }
  }
  return lab->role_names;
}

static mcim_cause_t lab_load(const char *dir, mcim_lab_t **out)
{
  char path[PATH_MAX];
  json_error_t jerr;
  mcim_lab_t *lab = calloc(1, sizeof(*lab));
  *out = NULL;
  if (!lab)
    return MCIM_NO_MEMORY;
  if (!lab_realpath(dir, lab->dir)) {
    free(lab);
    return MCIM_NOT_FOUND;
  }
  snprintf(path, sizeof(path), "%s/lab.json", lab->dir);
  lab->json = json_load_file(path, 0, &jerr);
  if (!lab->json) {
    free(lab);
    return access(path, F_OK) == 0 ? MCIM_BAD_JSON : MCIM_NOT_FOUND;
  }
  if (!json_is_array(json_object_get(lab->json, "roles"))) {
    mcim_lab_free(lab);
    return MCIM_BAD_JSON;
  }
  if (!json_is_array(json_object_get(lab->json, "devices")))
    json_object_set_new(lab->json, "devices", json_array());
  *out = lab;
  return MCIM_OK;
}

mcim_cause_t mcim_lab_open(const char *dir, mcim_lab_t **out)
{
  return lab_load(dir, out);
}

void mcim_lab_free(mcim_lab_t *lab)
{
  if (!lab)
    return;
  mcim_http_client_free(lab->admin);
  mcim_http_client_free(lab->public);
  json_decref(lab->json);
  free(lab->role_names);
  free(lab);
}

static mcim_cause_t lab_client(mcim_lab_t *lab, bool admin, struct mcim_http_client **slot)
{
  char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
  if (*slot)
    return MCIM_OK;
  snprintf(ca, sizeof(ca), "%s/pki/%s", lab->dir, MCIM_PKI_OPERATORS_CA_CERT);
  snprintf(cert, sizeof(cert), "%s/pki/%s/cert.pem", lab->dir, MCIM_PKI_ADMIN);
  snprintf(key, sizeof(key), "%s/pki/%s/key.pem", lab->dir, MCIM_PKI_ADMIN);
  struct mcim_http_client_cfg cc = {.ca_file = ca, .timeout_ms = 10000 * mcim_lab_time_scale()};
  if (admin) {
    cc.cert_file = cert;
    cc.key_file = key;
  }
  return mcim_http_client_new(&cc, slot);
}

struct mcim_http_client *mcim_lab_admin_client(mcim_lab_t *lab)
{
  return lab_client(lab, true, &lab->admin) == MCIM_OK ? lab->admin : NULL;
}

struct mcim_http_client *mcim_lab_public_client(mcim_lab_t *lab)
{
  return lab_client(lab, false, &lab->public) == MCIM_OK ? lab->public : NULL;
}

/* ---- up ---- */

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
  if (strcmp(kind, "m2mes") == 0) {
    json_object_set_new(c, "m2mes_ca_key", json_string("../pki/" MCIM_PKI_M2MES_CA_KEY));
    /* the lab's TPMs: EK certificates from its stand-in TPM vendor (docs/tre-tpm.md) */
    json_object_set_new(c, "tpm_vendor_ca", json_string("../pki/" MCIM_PKI_TPM_VENDOR_CA_CERT));
    /* the agent the lab's TPM devices run (m2me-tpm where built): its digest is the RIM a TPM
     * device's launcher is matched with */
    char bin[PATH_MAX];
    if (!realpath(mcim_lab_bindir(), bin))
      snprintf(bin, sizeof(bin), "%s", mcim_lab_bindir());
    char agent[16];
    snprintf(agent, sizeof(agent), "/%s", mcim_lab_tpm_agent(NULL, 0));
    if (mcim_lab_join(rel, sizeof(rel), bin, agent) == MCIM_OK)
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
  if (lab_load(dir, &lab) == MCIM_OK) {
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
  if (!lab || !lab_realpath(dir, lab->dir)) {
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

/* ---- status and down ---- */

mcim_cause_t mcim_lab_status(mcim_lab_t *lab, json_t **out)
{
  json_t *st = json_pack("{s:s,s:[],s:[]}", "dir", lab->dir, "roles", "devices");
  size_t i;
  json_t *r;
  json_array_foreach(json_object_get(lab->json, "roles"), i, r) {
    const char *name = json_string_value(json_object_get(r, "name"));
    long pid = (long)json_integer_value(json_object_get(r, "pid"));
    bool running = mcim_lab_pid_alive(pid, "mcimd");
    json_t *e = json_pack("{s:s,s:O,s:O,s:I,s:b,s:b}", "name", name, "kind",
                          json_object_get(r, "kind"), "url", json_object_get(r, "url"), "pid",
                          (json_int_t)pid, "running", running, "healthy",
                          running && mcim_lab_healthy_at(
                                         lab, json_string_value(json_object_get(r, "url")), name));
    if (json_object_get(r, "instance"))
      json_object_set(e, "instance", json_object_get(r, "instance"));
    json_array_append_new(json_object_get(st, "roles"), e);
  }
  json_t *lb = json_object_get(lab->json, "balancer");
  if (lb) {
    long pid = (long)json_integer_value(json_object_get(lb, "pid"));
    json_object_set_new(st, "balancer",
                        json_pack("{s:s,s:I,s:b,s:O}", "program", "haproxy", "pid",
                                  (json_int_t)pid, "running",
                                  mcim_lab_pid_alive(pid, "haproxy"), "urls",
                                  json_object_get(lb, "urls")));
  }
  json_array_foreach(json_object_get(lab->json, "devices"), i, r)
    json_array_append_new(json_object_get(st, "devices"), mcim_lab_device_status(r));
  if (json_object_get(lab->json, "hlrs"))
    json_object_set_new(st, "hlrs", mcim_lab_hlr_status(lab));
  *out = st;
  return MCIM_OK;
}

mcim_cause_t mcim_lab_down(mcim_lab_t *lab)
{
  json_t *r;
  mcim_lab_devices_stop(lab); /* agents, and their TPMs */
  /* The balancer before the instances behind it; then reverse start order: SHOs first,
   * the RO and the VNO last. */
  mcim_lab_balancer_stop(lab);
  json_t *roles = json_object_get(lab->json, "roles");
  for (size_t k = json_array_size(roles); k > 0; k--) {
    r = json_array_get(roles, k - 1);
    mcim_lab_stop_pid((long)json_integer_value(json_object_get(r, "pid")), "mcimd");
    json_object_set_new(r, "pid", json_integer(0));
  }
  /* the HLRs and the store last: no role uses them any more */
  mcim_lab_hlr_stop(lab);
  mcim_lab_pg_stop(lab);
  return mcim_lab_save(lab);
}

mcim_cause_t mcim_lab_role_restart(mcim_lab_t *lab, const char *name)
{
  size_t i;
  json_t *role;
  mcim_cause_t rc = MCIM_NOT_FOUND;
  /* one instance after the other: with a balancer in front the role never stops answering */
  json_array_foreach(json_object_get(lab->json, "roles"), i, role) {
    if (strcmp(json_string_value(json_object_get(role, "name")), name) != 0)
      continue;
    mcim_lab_stop_pid((long)json_integer_value(json_object_get(role, "pid")), "mcimd");
    rc = mcim_lab_start_role(lab, role, 15000 * mcim_lab_time_scale());
    mcim_lab_save(lab);
    if (rc != MCIM_OK)
      break;
  }
  return rc;
}
