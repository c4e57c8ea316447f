/* `mcim lab up|down|status` and `mcim lab device add`: the lab on loopback (src/lab/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/opts.h"

static const char lab_description[] =
    "A lab runs every role of the system as real daemons on loopback, in one folder:\n"
    "  up      creates the PKI, writes one configuration per role, starts vno, ro, pva,\n"
    "          m2mes and the SHOs (default sho-a and sho-b) on free ports and waits until\n"
    "          each answers; --store postgres: the roles' stores are databases of a\n"
    "          PostgreSQL server of the lab's own, started first in the lab folder (needs\n"
    "          the postgresql package; as root, the server runs as the postgres user);\n"
    "          --instances N (with --store postgres): N mcimd of every role on the one\n"
    "          database, behind HAProxy in TCP mode (TLS passes through to the\n"
    "          instances), one address per role as with one instance; --auc osmo-hlr:\n"
    "          an osmo-hlr per SHO and one for the RO's ICF (each its own database and\n"
    "          loopback address, in the lab folder's hlr/), the roles' AuC backend\n"
    "  down    stops exactly the processes the lab recorded (devices first, the lab's\n"
    "          HLRs and PostgreSQL server last)\n"
    "  status  which roles and devices run and answer\n"
    "  device add NAME\n"
    "          manufactures an M2ME (M2MES: TRE keys and certificates, PCID credential,\n"
    "          owner key, firmware) and starts its agent; --tamper ships modified firmware\n"
    "          that fails platform validation; --tre tpm gives the device a TPM of its own\n"
    "          (a swtpm, state in the device's folder, started and stopped with its agent\n"
    "          and by `down`) and makes the TRE's keys in it, where they stay\n"
    "  restart NAME\n"
    "          stops and starts one role instance or device agent (its state is in its\n"
    "          store: procedures resume)";

struct lab_args {
  const char *dir;
  struct mcim_lab_up_opts up;
  bool json;
  bool tamper;
  const char *tre;
  const char *instances;
  const char *const *positional;
  int npos;
  const struct mcim_cmd *cmd;
};

static int fail(const char *what, mcim_cause_t rc)
{
  fprintf(stderr, "mcim: %s: %s (%s)\n", what, mcim_cause_text(rc), mcim_cause_name(rc));
  return MCIM_EXIT_FAIL;
}

static int open_lab(const char *dir, mcim_lab_t **lab)
{
  mcim_cause_t rc = mcim_lab_open(mcim_lab_dir(dir), lab);
  if (rc == MCIM_NOT_FOUND) {
    fprintf(stderr, "mcim: no lab in %s (start one with `mcim lab up`)\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  return rc == MCIM_OK ? MCIM_EXIT_OK : fail("lab", rc);
}

static int do_up(struct lab_args *a)
{
  mcim_lab_t *lab = NULL;
  for (size_t i = 0; i < a->up.nshos; i++)
    for (size_t j = 0; j < i; j++)
      if (strcmp(a->up.shos[i], a->up.shos[j]) == 0)
        return mcim_opts_error(a->cmd, "--sho %s given twice", a->up.shos[i]);
  mcim_cause_t rc = mcim_lab_up(mcim_lab_dir(a->dir), &a->up, &lab);
  if (rc == MCIM_CONFLICT) {
    fprintf(stderr, "mcim: a lab is already up in %s (mcim lab down first)\n",
            mcim_lab_dir(a->dir));
    return MCIM_EXIT_FAIL;
  }
  if (rc != MCIM_OK)
    return fail("lab up", rc);
  printf("lab up in %s\n", mcim_lab_path(lab));
  for (const char *const *n = mcim_lab_roles(lab); n && *n; n++)
    printf("  %-8s %-6s %s\n", *n, mcim_lab_kind(lab, *n), mcim_lab_url(lab, *n));
  mcim_lab_free(lab);
  return MCIM_EXIT_OK;
}

static int do_down(struct lab_args *a)
{
  mcim_lab_t *lab = NULL;
  int ex = open_lab(a->dir, &lab);
  if (ex != MCIM_EXIT_OK)
    return ex;
  mcim_cause_t rc = mcim_lab_down(lab);
  if (rc == MCIM_OK)
    printf("lab down in %s\n", mcim_lab_path(lab));
  mcim_lab_free(lab);
  return rc == MCIM_OK ? MCIM_EXIT_OK : fail("lab down", rc);
}

static int do_status(struct lab_args *a)
{
  mcim_lab_t *lab = NULL;
  json_t *st = NULL;
  int ex = open_lab(a->dir, &lab);
  if (ex != MCIM_EXIT_OK)
    return ex;
  mcim_lab_status(lab, &st);
  bool all = true;
  size_t i;
  json_t *r;
  json_array_foreach(json_object_get(st, "roles"), i, r)
    all &= json_is_true(json_object_get(r, "healthy"));
  json_t *balancer = json_object_get(st, "balancer");
  all &= !balancer || json_is_true(json_object_get(balancer, "running"));
  if (a->json) {
    json_dumpf(st, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
  } else {
    printf("lab %s: %s\n", mcim_lab_path(lab), all ? "up" : "not fully up");
    json_t *lb = json_object_get(st, "balancer");
    if (lb)
      printf("  %-8s %-6s %-24s pid %-7lld %s\n", "balancer", "", "haproxy",
             (long long)json_integer_value(json_object_get(lb, "pid")),
             json_is_true(json_object_get(lb, "running")) ? "running" : "stopped");
    json_array_foreach(json_object_get(st, "roles"), i, r) {
      char name[40];
      json_int_t k = json_integer_value(json_object_get(r, "instance"));
      if (k > 0)
        snprintf(name, sizeof(name), "%s#%lld", json_string_value(json_object_get(r, "name")),
                 (long long)k);
      else
        snprintf(name, sizeof(name), "%s", json_string_value(json_object_get(r, "name")));
      printf("  %-8s %-6s %-24s pid %-7lld %s\n", name,
             json_string_value(json_object_get(r, "kind")),
             json_string_value(json_object_get(r, "url")),
             (long long)json_integer_value(json_object_get(r, "pid")),
             json_is_true(json_object_get(r, "healthy"))
                 ? "answering"
                 : json_is_true(json_object_get(r, "running")) ? "running, not answering"
                                                               : "stopped");
    }
    json_array_foreach(json_object_get(st, "devices"), i, r) {
      json_t *tpm = json_object_get(r, "swtpm");
      printf("  %-8s %-6s %-24s pid %-7lld %s\n", json_string_value(json_object_get(r, "name")),
             "m2me", tpm ? "TRE: tpm" : "",
             (long long)json_integer_value(json_object_get(r, "pid")),
             json_is_true(json_object_get(r, "running")) ? "running" : "stopped");
      if (tpm)
        printf("  %-8s %-6s %-24s pid %-7lld %s\n", "", "swtpm", "",
               (long long)json_integer_value(json_object_get(tpm, "pid")),
               json_is_true(json_object_get(tpm, "running")) ? "running" : "stopped");
    }
  }
  json_decref(st);
  mcim_lab_free(lab);
  return all ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}

static int do_device_add(struct lab_args *a)
{
  mcim_lab_t *lab = NULL;
  if (a->npos != 3)
    return a->npos < 3 ? mcim_opts_error(a->cmd, "device add needs NAME")
                       : mcim_opts_error(a->cmd, "unexpected argument '%s'", a->positional[3]);
  int ex = open_lab(a->dir, &lab);
  if (ex != MCIM_EXIT_OK)
    return ex;
  struct mcim_lab_device_opts o = {.tamper = a->tamper, .tre = a->tre};
  mcim_cause_t rc = mcim_lab_device_add_with(lab, a->positional[2], &o);
  if (rc == MCIM_OK)
    printf("device %s manufactured%s%s, agent running (%s)\n", a->positional[2],
           a->tre && strcmp(a->tre, "tpm") == 0 ? " with its TRE keys in its TPM (swtpm)" : "",
           a->tamper ? " with TAMPERED firmware" : "", mcim_lab_device_dir(lab, a->positional[2]));
  mcim_lab_free(lab);
  if (rc == MCIM_CONFLICT) {
    fprintf(stderr, "mcim: a device named %s exists already\n", a->positional[2]);
    return MCIM_EXIT_FAIL;
  }
  return rc == MCIM_OK ? MCIM_EXIT_OK : fail("lab device add", rc);
}

static int do_restart(struct lab_args *a)
{
  mcim_lab_t *lab = NULL;
  if (a->npos != 2)
    return a->npos < 2 ? mcim_opts_error(a->cmd, "restart needs NAME")
                       : mcim_opts_error(a->cmd, "unexpected argument '%s'", a->positional[2]);
  int ex = open_lab(a->dir, &lab);
  if (ex != MCIM_EXIT_OK)
    return ex;
  const char *name = a->positional[1];
  mcim_cause_t rc;
  if (mcim_lab_kind(lab, name)) {
    rc = mcim_lab_role_restart(lab, name);
  } else if (mcim_lab_device_dir(lab, name)) {
    rc = mcim_lab_device_stop(lab, name);
    if (rc == MCIM_OK)
      rc = mcim_lab_device_start(lab, name);
  } else {
    fprintf(stderr, "mcim: no role or device named %s in this lab\n", name);
    mcim_lab_free(lab);
    return MCIM_EXIT_FAIL;
  }
  if (rc == MCIM_OK)
    printf("%s restarted\n", name);
  mcim_lab_free(lab);
  return rc == MCIM_OK ? MCIM_EXIT_OK : fail("lab restart", rc);
}

int mcim_cmd_lab(int argc, char **argv)
{
  struct lab_args a = {0};
  const struct mcim_opt opts[] = {
      {.name = "dir", .arg = "D",
       .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)", .value = &a.dir},
      {.name = "store", .arg = "KIND", .help = "up: the roles' stores: sqlite (a file each, the default) or postgres",
       .value = &a.up.store},
      {.name = "auc", .arg = "KIND",
       .help = "up: the AuC of the SHOs and the ICF: builtin (mcim's own, the default) or"
               " osmo-hlr (an osmo-hlr each, started and stopped with the lab)",
       .value = &a.up.auc},
      {.name = "instances", .arg = "N",
       .help = "up: mcimd per role, 1 to 4 (default 1; more than 1 needs --store postgres and"
               " haproxy)",
       .value = &a.instances},
      {.name = "sho", .arg = "NAME",
       .help = "up: an SHO instance (repeat for several; default sho-a and sho-b)",
       .list = a.up.shos, .count = &a.up.nshos, .max = MCIM_LAB_MAX_SHOS},
      {.name = "json", .help = "status: print JSON", .flag = &a.json},
      {.name = "tamper", .help = "device add: ship firmware that fails platform validation",
       .flag = &a.tamper},
      {.name = "tre", .arg = "KIND",
       .help = "device add: the TRE's backend: soft (the default: keys in the TRE's sealed"
               " state) or tpm (keys made in the device's own TPM, a swtpm, and never out of it)",
       .value = &a.tre},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim lab",
      .usage = "mcim lab up [--dir D] [--store sqlite|postgres] [--instances N] [--sho NAME]...\n"
               "            [--auc builtin|osmo-hlr]\n"
               "mcim lab down [--dir D]\n"
               "mcim lab status [--dir D] [--json]\n"
               "mcim lab device add NAME [--tamper] [--tre soft|tpm] [--dir D]\n"
               "mcim lab restart NAME [--dir D]",
      .description = lab_description,
      .opts = opts,
      .examples = "mcim lab up --sho sho-a --sho sho-b --sho sho-c\n"
                  "mcim lab up --store postgres --dir /tmp/pglab\n"
                  "mcim lab up --store postgres --instances 2 --dir /tmp/pglab2\n"
                  "mcim lab up --auc osmo-hlr --dir /tmp/hlrlab\n"
                  "mcim lab device add dev1\n"
                  "mcim lab device add dev2 --tre tpm\n"
                  "mcim lab status --json --dir=/tmp/lab\n"
                  "mcim lab down",
      .max_args = 4,
  };
  struct mcim_args args;
  int ex = mcim_opts_parse(&cmd, argc, argv, &args);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  a.positional = args.arg;
  a.npos = args.n;
  a.cmd = &cmd;
  if (a.tre && strcmp(a.tre, "soft") != 0 && strcmp(a.tre, "tpm") != 0)
    return mcim_opts_error(&cmd, "--tre is soft or tpm, not '%s'", a.tre);
  if (a.up.store && strcmp(a.up.store, "sqlite") != 0 && strcmp(a.up.store, "postgres") != 0)
    return mcim_opts_error(&cmd, "--store is sqlite or postgres, not '%s'", a.up.store);
  if (a.up.auc && strcmp(a.up.auc, "builtin") != 0 && strcmp(a.up.auc, "osmo-hlr") != 0)
    return mcim_opts_error(&cmd, "--auc is builtin or osmo-hlr, not '%s'", a.up.auc);
  if (a.instances) {
    char *end = NULL;
    long n = strtol(a.instances, &end, 10);
    if (!*a.instances || *end || n < 1 || n > MCIM_LAB_MAX_INSTANCES)
      return mcim_opts_error(&cmd, "--instances is a number from 1 to %d, not '%s'",
                             MCIM_LAB_MAX_INSTANCES, a.instances);
    if (n > 1 && (!a.up.store || strcmp(a.up.store, "postgres") != 0))
      return mcim_opts_error(&cmd, "--instances %ld needs --store postgres: the instances of a"
                                   " role share one database", n);
    a.up.instances = (int)n;
  }
  if (a.npos == 0)
    return mcim_opts_error(&cmd, "missing the subcommand: up, down, status, device add or restart");
  const char *sub = a.positional[0];
  bool plain = strcmp(sub, "up") == 0 || strcmp(sub, "down") == 0 || strcmp(sub, "status") == 0;
  if (plain && a.npos > 1)
    return mcim_opts_error(&cmd, "unexpected argument '%s'", a.positional[1]);
  if (strcmp(sub, "up") == 0)
    return do_up(&a);
  if (strcmp(sub, "down") == 0)
    return do_down(&a);
  if (strcmp(sub, "status") == 0)
    return do_status(&a);
  if (strcmp(sub, "restart") == 0)
    return do_restart(&a);
  if (strcmp(sub, "device") == 0 && a.npos >= 2 && strcmp(a.positional[1], "add") == 0)
    return do_device_add(&a);
  if (strcmp(sub, "device") == 0)
    return mcim_opts_error(&cmd, "the device subcommand is add");
  return mcim_opts_error(&cmd, "unknown subcommand '%s'", sub);
}
