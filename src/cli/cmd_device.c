/* `mcim device status|attach|handover`: the device's own view and its owner's rights,
 * through its agent's control channel. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/opts.h"

static int status(mcim_lab_t *lab, const char *name, bool json)
{
  struct mcim_http_client *cli = NULL;
  struct mcim_http_result r = {0};
  mcim_cause_t rc = mcim_lab_device_client(lab, name, &cli);
  if (rc == MCIM_OK)
    rc = mcim_http_request(cli, "GET", "http://localhost/v1/status", NULL, NULL, &r);
  mcim_http_client_free(cli);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: device %s: %s (%s)%s%s\n", name, mcim_cause_text(rc),
            mcim_cause_name(rc), r.detail[0] ? ": " : "", r.detail);
    mcim_http_result_clear(&r);
    return MCIM_EXIT_FAIL;
  }
  json_t *s = r.json;
  if (json) {
    json_dumpf(s, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
  } else {
    json_t *pcid = json_object_get(s, "pcid");
    printf("device %s\n  PCID %s, expires %lld\n", name,
           json_string_value(json_object_get(pcid, "id")),
           (long long)json_integer_value(json_object_get(pcid, "expires")));
    size_t i;
    json_t *slot;
    if (json_array_size(json_object_get(s, "slots")) == 0)
      printf("  no MCIM (pristine)\n");
    json_array_foreach(json_object_get(s, "slots"), i, slot)
      printf("  slot %-8s IMSI %-16s %s\n", json_string_value(json_object_get(slot, "slot")),
             json_string_value(json_object_get(slot, "imsi")),
             json_string_value(json_object_get(slot, "state")));
  }
  mcim_http_result_clear(&r);
  return MCIM_EXIT_OK;
}

static int attach(mcim_lab_t *lab, const char *name, const char *net, bool json)
{
  struct mcim_http_client *cli = NULL;
  struct mcim_http_result r = {0};
  json_t *body = json_pack("{s:s}", "network", net);
  mcim_cause_t rc = mcim_lab_device_client(lab, name, &cli);
  if (rc == MCIM_OK)
    rc = mcim_http_request(cli, "POST", "http://localhost/v1/attach", body, NULL, &r);
  mcim_http_client_free(cli);
  json_decref(body);
  const char *scope = json_string_value(json_object_get(r.json, "scope"));
  if (json) {
    json_t *o = rc == MCIM_OK && scope
                    ? json_pack("{s:s,s:s}", "network", net, "scope", scope)
                    : json_pack("{s:s,s:s,s:s}", "network", net, "cause", mcim_cause_name(rc),
                                "detail", r.detail);
    json_dumpf(o, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(o);
  } else if (rc == MCIM_OK && scope) {
    printf("%s attached to %s: %s access\n", name, net, scope);
  } else {
    fprintf(stderr, "mcim: %s cannot attach to %s: %s (%s)%s%s\n", name, net,
            mcim_cause_text(rc), mcim_cause_name(rc), r.detail[0] ? ": " : "", r.detail);
  }
  mcim_http_result_clear(&r);
  return rc == MCIM_OK && scope ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}

static int handover(mcim_lab_t *lab, const char *name, const char *key, bool json)
{
  char detail[400];
  mcim_cause_t rc = mcim_lab_owner_handover(lab, name, key, detail, sizeof(detail));
  if (json) {
    json_t *o = rc == MCIM_OK ? json_pack("{s:s,s:s}", "device", name, "owner", "replaced")
                              : json_pack("{s:s,s:s,s:s}", "device", name, "cause",
                                          mcim_cause_name(rc), "detail", detail);
    json_dumpf(o, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(o);
  } else if (rc == MCIM_OK) {
    printf("%s handed over: the RO and its TRE know the new owner; its key is now the lab's"
           " owner key of %s\n", name, name);
  } else {
    fprintf(stderr, "mcim: %s not handed over: %s (%s): %s\n", name, mcim_cause_text(rc),
            mcim_cause_name(rc), detail);
  }
  return rc == MCIM_OK ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}

int mcim_cmd_device(int argc, char **argv)
{
  const char *dir = NULL, *net = NULL, *new_owner_key = NULL;
  bool json = false;
  const struct mcim_opt opts[] = {
      {.name = "to", .arg = "NET", .help = "attach: vno, or the name of an SHO", .value = &net},
      {.name = "new-owner-key", .arg = "FILE",
       .help = "handover: the new owner's EC private key (PEM)", .value = &new_owner_key},
      {.name = "json", .help = "print JSON", .flag = &json},
      {.name = "dir", .arg = "D", .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)",
       .value = &dir},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim device",
      .usage = "mcim device status NAME [--json] [--dir D]\n"
               "mcim device attach NAME --to NET [--json] [--dir D]\n"
               "mcim device handover NAME --new-owner-key FILE [--json] [--dir D]",
      .description =
          "status  the TRE's view: PCID credential and its expiry, MCIM slots {sho, imsi, state}\n"
          "        (never a key)\n"
          "attach  attach to the VNO (NET = vno, with the PCID: restricted access) or to an SHO\n"
          "        (NET = its name, with that SHO's MCIM: full access); prints the scope, or the\n"
          "        cause and a non-zero exit\n"
          "handover\n"
          "        the owner hands the device to a new owner: the current owner key signs the\n"
          "        handover for the RO's owner record and for the device's TRE, which pins the\n"
          "        new key; FILE then becomes the lab's owner key of NAME",
      .opts = opts,
      .examples = "mcim device status dev1 --json\n"
                  "mcim device attach dev1 --to sho-a\n"
                  "mcim device attach dev1 --to=vno --dir=/tmp/lab\n"
                  "mcim device handover dev1 --new-owner-key new-owner.pem",
      .max_args = 2,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.n < 1)
    return mcim_opts_error(&cmd, "missing the subcommand: status, attach or handover");
  if (strcmp(a.arg[0], "status") != 0 && strcmp(a.arg[0], "attach") != 0 &&
      strcmp(a.arg[0], "handover") != 0)
    return mcim_opts_error(&cmd, "unknown subcommand '%s'", a.arg[0]);
  if (a.n < 2)
    return mcim_opts_error(&cmd, "missing NAME, the device");
  if (strcmp(a.arg[0], "attach") == 0 && !net)
    return mcim_opts_error(&cmd, "attach needs --to NET");
  if (strcmp(a.arg[0], "handover") == 0 && !new_owner_key)
    return mcim_opts_error(&cmd, "handover needs --new-owner-key FILE");
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  ex = strcmp(a.arg[0], "status") == 0     ? status(lab, a.arg[1], json)
       : strcmp(a.arg[0], "attach") == 0   ? attach(lab, a.arg[1], net, json)
                                           : handover(lab, a.arg[1], new_owner_key, json);
  mcim_lab_free(lab);
  return ex;
}
