/* The lab: lab.json read and written (its roles, their addresses, the clients that call them),
 * its status, and its stop (`lab down`) and a role's restart. Starting a lab (`lab up`) is
 * up.c's, the programs and processes it runs process.c's. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/pki.h"
#include "mcim/util.h"

/* ---- lab.json ---- */

bool mcim_lab_realpath(const char *dir, char out[MCIM_LAB_DIR_MAX])
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
  if (!mcim_lab_realpath(dir, lab->dir)) {
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
