/* `mcim pcid push DEVICE`: network-initiated PCID renewal (docs/protocol.md "PCID credential
 * lifetime and renewal"): the RO marks the device's PCID `renewal due`; the VNO's next attach
 * accept tells the device (`renewal: "due"`) and its agent renews. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/opts.h"
#include "mcim/pki.h"

static bool hex32(const char *s)
{
  if (strlen(s) != 32)
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

static int push(mcim_lab_t *lab, const char *device, const char *txn, bool json)
{
  struct mcim_http_client *cli = mcim_lab_admin_client(lab);
  const char *base = mcim_lab_url(lab, "ro");
  struct mcim_http_result r = {0};
  char url[600];
  mcim_cause_t rc = MCIM_PEER_UNREACHABLE;
  json_t *body = txn ? json_pack("{s:s}", "txn", txn) : json_object();
  if (!cli || !base) {
    snprintf(r.detail, sizeof(r.detail), "the lab has no RO or no admin certificate");
  } else {
    snprintf(url, sizeof(url), "%s/v1/admin/pcid/%s/renew", base, device);
    rc = mcim_http_request(cli, "POST", url, body, NULL, &r);
  }
  json_decref(body);
  json_t *pcids = json_object_get(r.json, "pcids");
  if (json) {
    json_t *o = rc == MCIM_OK ? json_pack("{s:s,s:O,s:s}", "device", device, "pcids",
                                          pcids ? pcids : json_null(), "renewal", "due")
                              : json_pack("{s:s,s:s,s:s}", "device", device, "cause",
                                          mcim_cause_name(rc), "detail", r.detail);
    json_dumpf(o, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(o);
  } else if (rc == MCIM_OK) {
    printf("PCID renewal of %s due:", device);
    size_t i;
    json_t *p;
    json_array_foreach(pcids, i, p)
      printf(" %s", json_string_value(p));
    printf("\n(the device renews at its next attach to the VNO)\n");
  } else {
    fprintf(stderr, "mcim: PCID renewal of %s not pushed: %s (%s)%s%s\n", device,
            mcim_cause_text(rc), mcim_cause_name(rc), r.detail[0] ? ": " : "", r.detail);
  }
  mcim_http_result_clear(&r);
  return rc == MCIM_OK ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}

int mcim_cmd_pcid(int argc, char **argv)
{
  const char *dir = NULL, *txn = NULL;
  bool json = false;
  const struct mcim_opt opts[] = {
      {.name = "txn", .arg = "HEX32", .help = "name the push in the RO's trace (32 hex digits)",
       .value = &txn},
      {.name = "json", .help = "print JSON", .flag = &json},
      {.name = "dir", .arg = "D", .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)",
       .value = &dir},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim pcid",
      .usage = "mcim pcid push DEVICE [--txn HEX32] [--json] [--dir D]",
      .description =
          "push  network-initiated renewal of a device's initial network access credential:\n"
          "      the RO (lab admin certificate) marks the device's PCID `renewal due`; at its\n"
          "      next attach the VNO answers `renewal: \"due\"` and the device renews its PCID\n"
          "      from the DPF (or the M2MES CCIF). Prints the PCIDs marked.",
      .opts = opts,
      .examples = "mcim pcid push dev1\n"
                  "mcim pcid push dev1 --json --dir=/tmp/lab",
      .max_args = 2,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.n < 1)
    return mcim_opts_error(&cmd, "missing the subcommand: push");
  if (strcmp(a.arg[0], "push") != 0)
    return mcim_opts_error(&cmd, "unknown subcommand '%s'", a.arg[0]);
  if (a.n < 2)
    return mcim_opts_error(&cmd, "missing DEVICE");
  if (!mcim_pki_name_valid(a.arg[1]))
    return mcim_opts_error(&cmd, "\"%s\" is not a device name", a.arg[1]);
  if (txn && !hex32(txn))
    return mcim_opts_error(&cmd, "--txn takes 32 lower-case hex digits");
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  ex = push(lab, a.arg[1], txn, json);
  mcim_lab_free(lab);
  return ex;
}
