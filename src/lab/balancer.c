/* The lab's load balancer: HAProxy in front of every role that runs several instances
 * (`mcim lab up --instances N`).
 *
 * Why HAProxy, in TCP mode, rather than lists of endpoints in the clients: the clients are
 * devices as well as roles, and a device learns its SHO's address from the DRF (one
 * https URL, signed); an operator publishes one address per role whatever runs behind it.
 * TCP mode passes TLS through untouched, so every instance still terminates mutual TLS
 * itself: the caller's certificate reaches the daemon that decides on it (DESIGN.md section
 * 10), and the balancer holds no key. A health check per instance (TLS, GET /v1/health,
 * verified against the operators' CA, one TLS handshake a second) takes a killed instance
 * out within about a second; a connection attempt refused by a dead instance is redispatched
 * to a live one meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/pki.h"

/* Where the haproxy program is (PATH, then the sbin folders a non-root PATH lacks). */
const char *mcim_lab_balancer_program(void)
{
  static char found[512];
  static const char *const fixed[] = {"/usr/sbin", "/usr/local/sbin", "/sbin", NULL};
  return mcim_lab_find_program("haproxy", fixed, found, sizeof(found));
}

/* One frontend and one backend per role, in lab.json's order. */
static mcim_cause_t write_config(mcim_lab_t *lab, const char *path)
{
  json_t *urls = json_object_get(json_object_get(lab->json, "balancer"), "urls");
  FILE *f = fopen(path, "w");
  if (!f)
    return MCIM_IO_ERROR;
  fprintf(f,
          "# Written by `mcim lab up --instances N` (src/lab/balancer.c): TCP mode, TLS passes\n"
          "# through to the instances, which authenticate their callers themselves.\n"
          "global\n"
          "  maxconn 8192\n"
          "defaults\n"
          "  mode tcp\n"
          "  timeout connect 2s\n"
          "  timeout client 120s\n"
          "  timeout server 120s\n"
          "  timeout check 2s\n"
          "  retries 3\n"
          "  option redispatch\n");
  const char *const *names = mcim_lab_roles(lab);
  for (size_t n = 0; names && names[n]; n++) {
    const char *url = json_string_value(json_object_get(urls, names[n]));
    const char *port = url ? strrchr(url, ':') : NULL;
    if (!port)
      continue;
    fprintf(f,
            "frontend %s\n"
            "  bind 127.0.0.1%s\n"
            "  default_backend %s\n"
            "backend %s\n"
            "  balance roundrobin\n"
            "  option httpchk GET /v1/health\n"
            "  http-check expect status 200\n",
            names[n], port, names[n], names[n]);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(lab->json, "roles"), i, r) {
      if (strcmp(json_string_value(json_object_get(r, "name")), names[n]) != 0)
        continue;
      fprintf(f,
              "  server %s-%lld 127.0.0.1:%lld check check-ssl verify required ca-file"
              " %s/pki/%s inter 1000 fall 1 rise 2\n",
              names[n], (long long)json_integer_value(json_object_get(r, "instance")),
              (long long)json_integer_value(json_object_get(r, "port")), lab->dir,
              MCIM_PKI_OPERATORS_CA_CERT);
    }
  }
  int err = ferror(f);
  return fclose(f) == 0 && !err ? MCIM_OK : MCIM_IO_ERROR;
}

mcim_cause_t mcim_lab_balancer_start(mcim_lab_t *lab, int wait_ms)
{
  json_t *lb = json_object_get(lab->json, "balancer");
  const char *prog = mcim_lab_balancer_program();
  char cfg[PATH_MAX], log[PATH_MAX];
  if (!lb)
    return MCIM_OK;
  if (!prog)
    return MCIM_NOT_FOUND;
  snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", lab->dir);
  snprintf(log, sizeof(log), "%s/haproxy.log", lab->dir);
  mcim_cause_t rc = write_config(lab, cfg);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: cannot write %s\n", cfg);
    return rc;
  }
  /* -db: in the foreground (our child, its pid is the one we stop); -q: no warnings on
   * stdout for every health check that changes state */
  char *argv[] = {(char *)prog, "-db", "-q", "-f", cfg, NULL};
  long pid = mcim_lab_spawn(argv, log);
  if (pid <= 0)
    return MCIM_IO_ERROR;
  json_object_set_new(lb, "pid", json_integer(pid));
  /* Up when every role answers through it as itself. */
  const char *const *names = mcim_lab_roles(lab);
  for (int waited = 0; waited < wait_ms; waited += 50) {
    bool all = true;
    for (size_t n = 0; names && names[n] && all; n++)
      all = mcim_lab_healthy_at(lab, mcim_lab_url(lab, names[n]), names[n]);
    if (all)
      return MCIM_OK;
    if (waitpid((pid_t)pid, NULL, WNOHANG) == (pid_t)pid) {
      fprintf(stderr, "mcim: haproxy exited at start; see %s\n", log);
      return MCIM_PROCEDURE_FAILED;
    }
    mcim_lab_sleep_ms(50);
  }
  fprintf(stderr, "mcim: the roles did not answer through haproxy within %d ms; see %s\n",
          wait_ms, log);
  return MCIM_TIMEOUT;
}

void mcim_lab_balancer_stop(mcim_lab_t *lab)
{
  json_t *lb = json_object_get(lab->json, "balancer");
  if (!lb)
    return;
  mcim_lab_stop_pid((long)json_integer_value(json_object_get(lb, "pid")), "haproxy");
  json_object_set_new(lb, "pid", json_integer(0));
}
