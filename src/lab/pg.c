/* The lab's own PostgreSQL server (`mcim lab up --store postgres`): scripts/pg.sh's logic
 * in C, so an installed mcim needs no script. The server lives in <lab>/postgres (data/,
 * its log, its socket), listens on 127.0.0.1 at a free port with durability on, and has
 * one database per role (mcim_<name>, '-' as '_'). Its superuser "mcim" has a random
 * password, kept in <lab>/pgpass (0600, libpq's passfile format); the roles' locators name
 * that file instead of holding the password:
 *
 *   postgres://mcim@127.0.0.1:PORT/mcim_ro?passfile=<lab>/pgpass
 *
 * PostgreSQL refuses to run as root: then the server runs as "postgres" (Debian's package
 * makes it; "nobody" otherwise), and when that user cannot reach the lab folder (a folder
 * under /root, or made by mktemp: 0700), its files go to a private folder under /tmp
 * instead, named in lab.json and deleted by `mcim lab down`. A server in the lab folder is
 * kept by `down`, with the roles' databases, and started again by the next `up` (the SQLite
 * files of a lab stay the same way). */
#define _XOPEN_SOURCE 700 /* nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/util.h"

#define PG_LOG "server.log"

struct runner;
static void stop_server(const struct runner *r, const char *sdir);

/* Who runs the server: nobody to change to (not root), or that user. */
struct runner {
  bool as_other;
  uid_t uid;
  gid_t gid;
  char name[32];
};

static mcim_cause_t find_runner(struct runner *r)
{
  memset(r, 0, sizeof(*r));
  if (geteuid() != 0)
    return MCIM_OK;
  const char *const names[] = {"postgres", "nobody"};
  for (size_t i = 0; i < 2; i++) {
    struct passwd *pw = getpwnam(names[i]);
    if (pw) {
      r->as_other = true;
      r->uid = pw->pw_uid;
      r->gid = pw->pw_gid;
      snprintf(r->name, sizeof(r->name), "%s", names[i]);
      return MCIM_OK;
    }
  }
  fprintf(stderr, "mcim: PostgreSQL does not run as root, and there is no postgres user\n");
  return MCIM_UNSUPPORTED;
}

/* The server's programs: $MCIM_PG_BIN, else the newest /usr/lib/postgresql/N/bin. */
static mcim_cause_t find_bin(char *out, size_t len)
{
  const char *env = getenv("MCIM_PG_BIN");
  if (env && *env) {
    snprintf(out, len, "%s", env);
    return MCIM_OK;
  }
  DIR *d = opendir("/usr/lib/postgresql");
  long best = -1;
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      char *end = NULL;
      long v = strtol(e->d_name, &end, 10);
      char probe[PATH_MAX];
      snprintf(probe, sizeof(probe), "/usr/lib/postgresql/%s/bin/initdb", e->d_name);
      if (end && *end == '\0' && v > best && access(probe, X_OK) == 0) {
        best = v;
        snprintf(out, len, "/usr/lib/postgresql/%s/bin", e->d_name);
      }
    }
    closedir(d);
  }
  if (best < 0) {
    fprintf(stderr, "mcim: --store postgres needs the PostgreSQL server (Debian: apt-get install"
                    " postgresql), or MCIM_PG_BIN naming the folder of its initdb and pg_ctl\n");
    return MCIM_UNSUPPORTED;
  }
  return MCIM_OK;
}

/* Can `r`'s user search every folder down to `dir`? */
static bool reachable(const struct runner *r, const char *dir)
{
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s", dir);
  for (;;) {
    struct stat sb;
    if (stat(path[0] ? path : "/", &sb) != 0)
      return false;
    mode_t bit = sb.st_uid == r->uid ? S_IXUSR : sb.st_gid == r->gid ? S_IXGRP : S_IXOTH;
    if (!(sb.st_mode & bit))
      return false;
    if (!path[0])
      return true; /* "/" itself */
    char *slash = strrchr(path, '/');
    if (!slash)
      return true;
    *slash = '\0';
  }
}

/* Run a server program (as the runner), output appended to `log`; its exit status. */
static int run(const struct runner *r, char *const argv[], const char *log)
{
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    setsid(); /* the server outlives this command, and its terminal's signals */
    if (r->as_other && (setgroups(0, NULL) != 0 || setgid(r->gid) != 0 || setuid(r->uid) != 0)) {
      dprintf(2, "cannot become %s: %s\n", r->name, strerror(errno));
      _exit(126);
    }
    /* opened as the runner: the server's own log may be this file */
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
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
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void give(const struct runner *r, const char *path)
{
  if (r->as_other && chown(path, r->uid, r->gid) != 0)
    fprintf(stderr, "mcim: cannot give %s to %s: %s\n", path, r->name, strerror(errno));
}

static mcim_cause_t write_file(const struct runner *r, const char *path, const char *text,
                               int flags, mode_t mode)
{
  int fd = open(path, O_WRONLY | O_CREAT | flags, mode);
  if (fd < 0)
    return MCIM_IO_ERROR;
  size_t n = strlen(text);
  bool ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
  close(fd);
  if (!ok)
    return MCIM_IO_ERROR;
  give(r, path);
  return MCIM_OK;
}

static void print_tail(const char *path)
{
  FILE *f = fopen(path, "r");
  char line[512], tail[6][512];
  size_t n = 0;
  if (!f)
    return;
  while (fgets(line, sizeof(line), f))
    snprintf(tail[n++ % 6], sizeof(tail[0]), "%s", line);
  fclose(f);
  for (size_t i = n > 6 ? n - 6 : 0; i < n; i++)
    fprintf(stderr, "    %s", tail[i % 6]);
}

/* `pg_ctl start` on `port` (the configuration file is rewritten for it); exit status. */
static int start_on(const struct runner *r, const char *bin, const char *sdir, int port)
{
  char conf[PATH_MAX], text[1024], pg_ctl[PATH_MAX], data[PATH_MAX], log[PATH_MAX];
  (void)mcim_lab_join(conf, sizeof(conf), sdir, "/data/mcim.conf");
  if ((size_t)snprintf(text, sizeof(text),
           "listen_addresses = '127.0.0.1'\n"
           "port = %d\n"
           "unix_socket_directories = '%s'\n"
           "unix_socket_permissions = 0700\n"
           "fsync = on\n"
           "synchronous_commit = on\n"
           "full_page_writes = on\n"
           "max_connections = 300\n"
           "shared_buffers = 32MB\n"
           "log_min_messages = warning\n"
           "log_error_verbosity = terse\n",
           port, sdir) >= sizeof(text))
    return -1;
  if (write_file(r, conf, text, O_TRUNC, 0600) != MCIM_OK)
    return -1;
  (void)mcim_lab_join(pg_ctl, sizeof(pg_ctl), bin, "/pg_ctl");
  (void)mcim_lab_join(data, sizeof(data), sdir, "/data");
  (void)mcim_lab_join(log, sizeof(log), sdir, "/" PG_LOG);
  char *argv[] = {pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "start", NULL};
  return run(r, argv, log);
}

/* initdb in sdir/data with a fresh password; mcim.conf included from postgresql.conf. */
static mcim_cause_t init_server(const struct runner *r, const char *bin, const char *sdir,
                                const char *password)
{
  char pwfile[PATH_MAX], initdb[PATH_MAX], data[PATH_MAX], log[PATH_MAX], pwopt[PATH_MAX + 16];
  char conf[PATH_MAX];
  (void)mcim_lab_join(pwfile, sizeof(pwfile), sdir, "/pwfile");
  (void)mcim_lab_join(initdb, sizeof(initdb), bin, "/initdb");
  (void)mcim_lab_join(data, sizeof(data), sdir, "/data");
  (void)mcim_lab_join(log, sizeof(log), sdir, "/initdb.log");
  (void)mcim_lab_join(pwopt, sizeof(pwopt), "--pwfile=", pwfile);
  char line[80];
  if ((size_t)snprintf(line, sizeof(line), "%s\n", password) >= sizeof(line))
    return MCIM_TOO_LARGE;
  mcim_cause_t rc = write_file(r, pwfile, line, O_TRUNC | O_EXCL, 0600);
  if (rc != MCIM_OK)
    return rc;
  char *argv[] = {initdb,        "-D",     data,          "-U", "mcim", pwopt, "-E", "UTF8",
                  "--locale=C",  "--auth-local=trust", "--auth-host=scram-sha-256",
                  "--no-instructions", NULL};
  int st = run(r, argv, log);
  unlink(pwfile);
  if (st != 0) {
    fprintf(stderr, "mcim: initdb failed (exit %d); the end of %s:\n", st, log);
    print_tail(log);
    return MCIM_STORE_ERROR;
  }
  (void)mcim_lab_join(conf, sizeof(conf), data, "/postgresql.conf");
  return write_file(r, conf, "include 'mcim.conf'\n", O_APPEND, 0600);
}

/* The folder of the server's files for this lab: <lab>/postgres if the runner reaches it,
 * else a new private one under /tmp (`fresh` says so). */
static mcim_cause_t server_dir(mcim_lab_t *lab, const struct runner *r, char *out, size_t len,
                               bool *fresh)
{
  *fresh = false;
  if ((size_t)snprintf(out, len, "%s/postgres", lab->dir) >= len)
    return MCIM_TOO_LARGE;
  /* the socket's path must fit in sun_path (107 bytes) with ".s.PGSQL.65535" */
  if ((!r->as_other || reachable(r, lab->dir)) && strlen(out) <= 90) {
    if (mkdir(out, 0700) != 0 && errno != EEXIST)
      return MCIM_IO_ERROR;
    give(r, out);
    return MCIM_OK;
  }
  /* $TMPDIR if the runner reaches it (and the socket's path fits), else /tmp */
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp || strlen(tmp) >= 60 || (r->as_other && !reachable(r, tmp)))
    tmp = "/tmp";
  snprintf(out, len, "%s/mcim-lab-pg.XXXXXX", tmp);
  if (!mkdtemp(out))
    return MCIM_IO_ERROR;
  give(r, out);
  *fresh = true;
  return MCIM_OK;
}

static void random_hex(char *out, size_t nbytes)
{
  uint8_t b[32];
  if (nbytes > sizeof(b) || mcim_random(b, nbytes) != MCIM_OK)
    memset(b, 0x5a, sizeof(b));
  mcim_hex_encode(b, nbytes, out);
}

/* The password of a server this lab made before: from <lab>/pgpass ("host:port:*:mcim:PW"). */
static bool read_password(const char *pgpass, char *out, size_t len)
{
  FILE *f = fopen(pgpass, "r");
  char line[256];
  bool ok = false;
  if (!f)
    return false;
  if (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    const char *pw = strrchr(line, ':');
    if (pw && strlen(pw + 1) < len) {
      snprintf(out, len, "%s", pw + 1);
      ok = *out != '\0';
    }
  }
  fclose(f);
  return ok;
}

/* The role's database, made if missing. */
static mcim_cause_t create_database(const char *admin_locator, const char *db)
{
  PGconn *c = PQconnectdb(admin_locator);
  mcim_cause_t rc = MCIM_STORE_ERROR;
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "mcim: cannot connect to the lab's PostgreSQL server: %s",
            PQerrorMessage(c));
    goto cleanup;
  }
  const char *params[] = {db};
  PGresult *res = PQexecParams(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL,
                               params, NULL, NULL, 0);
  bool exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
  bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
  PQclear(res);
  if (ok && !exists) {
    char sql[160];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db); /* [a-z0-9_] only: made here */
    res = PQexec(c, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
      fprintf(stderr, "mcim: cannot create the database %s: %s", db, PQresultErrorMessage(res));
    PQclear(res);
  }
  rc = ok ? MCIM_OK : MCIM_STORE_ERROR;

cleanup:
  PQfinish(c);
  return rc;
}

void mcim_lab_pg_dbname(const char *role, char *out, size_t len)
{
  size_t o = snprintf(out, len, "mcim_");
  for (const char *p = role; *p && o + 1 < len; p++)
    out[o++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_');
  out[o < len ? o : len - 1] = '\0';
}

mcim_cause_t mcim_lab_pg_start(mcim_lab_t *lab, const char *const *roles, size_t nroles,
                               json_t **locators)
{
  struct runner r;
  char bin[PATH_MAX], sdir[PATH_MAX], pgpass[PATH_MAX], password[80] = "", locator[PATH_MAX];
  bool fresh = false;
  mcim_cause_t rc;
  int port = -1;

  *locators = NULL;
  rc = find_runner(&r);
  if (rc == MCIM_OK)
    rc = find_bin(bin, sizeof(bin));
  if (rc == MCIM_OK)
    rc = server_dir(lab, &r, sdir, sizeof(sdir), &fresh);
  if (rc != MCIM_OK)
    return rc;
  (void)mcim_lab_join(pgpass, sizeof(pgpass), lab->dir, "/pgpass");

  json_object_set_new(lab->json, "postgres",
                      json_pack("{s:s,s:i,s:b,s:s}", "dir", sdir, "port", 0, "temporary", fresh,
                                "user", r.as_other ? r.name : ""));
  stop_server(&r, sdir); /* a server an interrupted lab left running here */
  char version[PATH_MAX];
  (void)mcim_lab_join(version, sizeof(version), sdir, "/data/PG_VERSION");
  bool have = access(version, F_OK) == 0 && read_password(pgpass, password, sizeof(password));
  if (!have) {
    /* a server of an earlier lab without its password is of no use: made afresh */
    char data[PATH_MAX];
    (void)mcim_lab_join(data, sizeof(data), sdir, "/data");
    if (access(data, F_OK) == 0) {
      fprintf(stderr, "mcim: %s has no password file for %s: remove it, or the lab folder\n",
              lab->dir, data);
      return MCIM_CONFLICT;
    }
    random_hex(password, 24);
    rc = init_server(&r, bin, sdir, password);
    if (rc != MCIM_OK)
      goto fail;
  }
  int st = -1;
  for (int attempt = 0; attempt < 5 && st != 0; attempt++) {
    port = mcim_lab_free_port();
    if (port <= 0)
      break;
    st = start_on(&r, bin, sdir, port);
  }
  if (st != 0) {
    fprintf(stderr, "mcim: the lab's PostgreSQL server did not start; the end of %s/" PG_LOG
                    ":\n", sdir);
    char log[PATH_MAX];
    (void)mcim_lab_join(log, sizeof(log), sdir, "/" PG_LOG);
    print_tail(log);
    rc = MCIM_STORE_ERROR;
    goto fail;
  }
  char line[256];
  snprintf(line, sizeof(line), "127.0.0.1:%d:*:mcim:%s\n", port, password);
  rc = write_file(&(struct runner){0}, pgpass, line, O_TRUNC, 0600);
  if (rc != MCIM_OK)
    goto fail;
  json_object_set_new(json_object_get(lab->json, "postgres"), "port", json_integer(port));
  /* the roles' databases */
  *locators = json_object();
  for (size_t i = 0; i < nroles && rc == MCIM_OK; i++) {
    char db[80], admin[PATH_MAX];
    mcim_lab_pg_dbname(roles[i], db, sizeof(db));
    if ((size_t)snprintf(admin, sizeof(admin), "postgres://mcim@127.0.0.1:%d/postgres?passfile=%s",
                         port, pgpass) >= sizeof(admin) ||
        (size_t)snprintf(locator, sizeof(locator), "postgres://mcim@127.0.0.1:%d/%s?passfile=%s",
                         port, db, pgpass) >= sizeof(locator)) {
      rc = MCIM_TOO_LARGE;
      break;
    }
    rc = create_database(admin, db);
    json_object_set_new(*locators, roles[i], json_string(locator));
  }
  if (rc != MCIM_OK)
    goto fail;
  return MCIM_OK;

fail:
  json_decref(*locators);
  *locators = NULL;
  mcim_lab_pg_stop(lab);
  return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* pg_ctl stop of the server in `sdir`, if one runs there. */
static void stop_server(const struct runner *r, const char *sdir)
{
  char bin[PATH_MAX], pg_ctl[PATH_MAX], data[PATH_MAX], log[PATH_MAX], pidfile[PATH_MAX];
  (void)mcim_lab_join(data, sizeof(data), sdir, "/data");
  (void)mcim_lab_join(pidfile, sizeof(pidfile), data, "/postmaster.pid");
  (void)mcim_lab_join(log, sizeof(log), sdir, "/" PG_LOG);
  if (access(pidfile, F_OK) != 0 || find_bin(bin, sizeof(bin)) != MCIM_OK)
    return;
  (void)mcim_lab_join(pg_ctl, sizeof(pg_ctl), bin, "/pg_ctl");
  char *fast[] = {pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
  if (run(r, fast, log) != 0) {
    char *now[] = {pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop", NULL};
    (void)run(r, now, log);
  }
}

void mcim_lab_pg_stop(mcim_lab_t *lab)
{
  json_t *pg = json_object_get(lab->json, "postgres");
  const char *sdir = json_string_value(json_object_get(pg, "dir"));
  struct runner r;
  if (!sdir || find_runner(&r) != MCIM_OK)
    return;
  stop_server(&r, sdir);
  if (json_is_true(json_object_get(pg, "temporary"))) {
    nftw(sdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    json_object_del(lab->json, "postgres");
  }
}
