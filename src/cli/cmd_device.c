/* `mcim device status|attach`: the device's own view, through its agent's control channel. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab.h"

static void usage(FILE *out)
{
  fprintf(out,
          "usage: mcim device status NAME [--json] [--dir D]\n"
          "       mcim device attach NAME --to NET [--json] [--dir D]\n"
          "\n"
          "status  the TRE's view: PCID credential and its expiry, MCIM slots {sho, imsi, state}\n"
          "        (never a key)\n"
          "attach  attach to the VNO (NET = vno, with the PCID: restricted access) or to an SHO\n"
          "        (NET = its name, with that SHO's MCIM: full access); prints the scope, or the\n"
          "        cause and a non-zero exit\n"
          "\n"
          "examples:\n"
          "  mcim device status dev1 --json\n"
          "  mcim device attach dev1 --to sho-a\n");
}

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

int mcim_cmd_device(int argc, char **argv)
{
  const char *pos[2] = {NULL, NULL}, *dir = NULL, *net = NULL;
  size_t npos = 0;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return MCIM_EXIT_OK;
    } else if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--to") == 0 || strcmp(a, "--dir") == 0) {
      if (i + 1 >= argc)
        return mcim_usage_error("device: %s needs a value", a);
      if (strcmp(a, "--to") == 0)
        net = argv[++i];
      else
        dir = argv[++i];
    } else if (a[0] == '-') {
      return mcim_usage_error("device: unknown option %s (see mcim device --help)", a);
    } else if (npos < 2) {
      pos[npos++] = a;
    } else {
      return mcim_usage_error("device: too many arguments");
    }
  }
  if (npos != 2 || (strcmp(pos[0], "status") != 0 && strcmp(pos[0], "attach") != 0)) {
    usage(stderr);
    return MCIM_EXIT_USAGE;
  }
  if (strcmp(pos[0], "attach") == 0 && !net)
    return mcim_usage_error("device attach NAME --to NET");
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  int ex = strcmp(pos[0], "status") == 0 ? status(lab, pos[1], json) : attach(lab, pos[1], net, json);
  mcim_lab_free(lab);
  return ex;
}
