/* The lab's HLRs (issue 13 point 3, `mcim lab up --auc osmo-hlr`): one osmo-hlr per role with
 * an AuC (the RO for its ICF, each SHO), each with its own database under LAB/hlr/NAME/ and its
 * own loopback address. osmo-hlr 1.5 fixes GSUP at 4222 and VTY at 4258 (CTRL 4259 here too),
 * so the instances differ by address, not port: 127.77.X.Y, chosen where those three ports are
 * free (another lab or test on this machine may hold some). lab.json's "hlrs": {NAME: {addr,
 * pid}}; every port is bound to that loopback address only (CTRL shows K and OPc). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/util.h"

enum { HLR_GSUP_PORT = 4222, HLR_VTY_PORT = 4258, HLR_CTRL_PORT = 4259 };

const char *mcim_lab_hlr_program(void)
{
  static char found[512];
  static const char *const fixed[] = {"/usr/bin", "/usr/local/bin", NULL};
  return mcim_lab_find_program("osmo-hlr", fixed, found, sizeof(found));
}

/* Whether something accepts connections at ip:port. */
static bool listening(const char *ip, int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool yes;
  if (fd < 0)
    return false;
  inet_pton(AF_INET, ip, &a.sin_addr);
  yes = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return yes;
}

/* Whether this process could bind ip:port now (nobody holds it). */
static bool bindable(const char *ip, int port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  bool yes;
  if (fd < 0)
    return false;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  inet_pton(AF_INET, ip, &a.sin_addr);
  yes = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return yes;
}

/* An address of 127.77.0.0/16 whose three ports are free and that no HLR of this lab has. */
static bool pick_addr(mcim_lab_t *lab, unsigned seed, char ip[INET_ADDRSTRLEN])
{
  json_t *hlrs = json_object_get(lab->json, "hlrs");
  for (unsigned i = 0; i < 4000; i++) {
    unsigned x = (seed + i * 7919u) % 62000u;
    const char *k;
    json_t *v;
    bool mine = false;
    snprintf(ip, INET_ADDRSTRLEN, "127.77.%u.%u", (x / 250) % 250, 2 + x % 250);
    json_object_foreach(hlrs, k, v)
      mine |= strcmp(json_string_value(json_object_get(v, "addr")), ip) == 0;
    if (!mine && bindable(ip, HLR_GSUP_PORT) && bindable(ip, HLR_VTY_PORT) &&
        bindable(ip, HLR_CTRL_PORT))
      return true;
  }
  return false;
}

const char *mcim_lab_hlr_addr(mcim_lab_t *lab, const char *name)
{
  return json_string_value(
      json_object_get(json_object_get(json_object_get(lab->json, "hlrs"), name), "addr"));
}

static mcim_cause_t start_one(mcim_lab_t *lab, const char *prog, const char *name, int wait_ms)
{
  char dir[PATH_MAX], cfg[PATH_MAX], db[PATH_MAX], log[PATH_MAX], ip[INET_ADDRSTRLEN];
  FILE *f;
  if (!pick_addr(lab, (unsigned)getpid() * 31u + (unsigned)json_object_size(json_object_get(
                                                             lab->json, "hlrs")) * 977u,
                 ip)) {
    fprintf(stderr, "mcim: no free loopback address for %s's osmo-hlr\n", name);
    return MCIM_IO_ERROR;
  }
  if ((size_t)snprintf(dir, sizeof(dir), "%s/hlr/%s", lab->dir, name) >= sizeof(dir))
    return MCIM_TOO_LARGE;
  mcim_cause_t rc = mcim_lab_mkdir(dir);
  if (rc != MCIM_OK)
    return rc;
  if ((size_t)snprintf(cfg, sizeof(cfg), "%s/osmo-hlr.cfg", dir) >= sizeof(cfg) ||
      (size_t)snprintf(db, sizeof(db), "%s/hlr.db", dir) >= sizeof(db) ||
      (size_t)snprintf(log, sizeof(log), "%s/osmo-hlr.log", dir) >= sizeof(log))
    return MCIM_TOO_LARGE;
  f = fopen(cfg, "w");
  if (!f)
    return MCIM_IO_ERROR;
  /* every interface on the HLR's own loopback address: CTRL and VTY show K and OPc */
  fprintf(f,
          "log stderr\n logging filter all 1\n logging color 0\n logging print category 1\n"
          " logging timestamp 1\n logging level main notice\n logging level db notice\n"
          " logging level auc notice\n"
          "line vty\n bind %s\nctrl\n bind %s\nhlr\n gsup\n  bind ip %s\n",
          ip, ip, ip);
  if (fclose(f) != 0)
    return MCIM_IO_ERROR;
  char *const argv[] = {(char *)prog, "-c", cfg, "-l", db, NULL};
  long pid = mcim_lab_spawn(argv, log);
  if (pid <= 0)
    return MCIM_IO_ERROR;
  json_object_set_new(json_object_get(lab->json, "hlrs"), name,
                      json_pack("{s:s,s:I}", "addr", ip, "pid", (json_int_t)pid));
  mcim_lab_save(lab); /* the pid first: `down` stops it even if it never listens */
  for (int waited = 0;; waited += 20) {
    int status; /* our child (its name is ours until its exec: not mcim_lab_pid_alive) */
    if (waitpid((pid_t)pid, &status, WNOHANG) == (pid_t)pid) {
      fprintf(stderr, "mcim: %s's osmo-hlr exited at start (its log: %s)\n", name, log);
      return MCIM_INTERNAL;
    }
    if (listening(ip, HLR_GSUP_PORT) && listening(ip, HLR_CTRL_PORT))
      return MCIM_OK;
    if (waited >= wait_ms) {
      fprintf(stderr, "mcim: %s's osmo-hlr does not listen on %s:%d within %d ms (%s)\n", name,
              ip, HLR_GSUP_PORT, wait_ms, log);
      return MCIM_TIMEOUT;
    }
    mcim_lab_sleep_ms(20);
  }
}

mcim_cause_t mcim_lab_hlr_start(mcim_lab_t *lab, const char *const *names, size_t n, int wait_ms)
{
  const char *prog = mcim_lab_hlr_program();
  if (!prog) {
    fprintf(stderr, "mcim: --auc osmo-hlr needs osmo-hlr (Debian: apt-get install osmo-hlr;"
                    " scripts/deps.sh)\n");
    return MCIM_NOT_FOUND;
  }
  if (!json_object_get(lab->json, "hlrs"))
    json_object_set_new(lab->json, "hlrs", json_object());
  for (size_t i = 0; i < n; i++) {
    mcim_cause_t rc = start_one(lab, prog, names[i], wait_ms);
    if (rc != MCIM_OK)
      return rc;
  }
  return mcim_lab_save(lab);
}

void mcim_lab_hlr_stop(mcim_lab_t *lab)
{
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(lab->json, "hlrs"), k, v) {
    mcim_lab_stop_pid((long)json_integer_value(json_object_get(v, "pid")), "osmo-hlr");
    json_object_set_new(v, "pid", json_integer(0));
  }
}

json_t *mcim_lab_hlr_status(mcim_lab_t *lab)
{
  const char *k;
  json_t *v, *out = json_array();
  json_object_foreach(json_object_get(lab->json, "hlrs"), k, v) {
    long pid = (long)json_integer_value(json_object_get(v, "pid"));
    json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:I,s:b}", "name", k, "program",
                                         "osmo-hlr", "addr", json_object_get(v, "addr"), "pid",
                                         (json_int_t)pid, "running",
                                         mcim_lab_pid_alive(pid, "osmo-hlr")));
  }
  return out;
}
