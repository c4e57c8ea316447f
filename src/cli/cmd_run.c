/* `mcim run initial|change ...`: a procedure run by the M2ME subscriber in the lab. */
#include <stdio.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab_run.h"

static void usage(FILE *out)
{
  fprintf(out,
          "usage: mcim run initial NAME --sho SHO [--json] [--timeout S] [--dir D]\n"
          "       mcim run change NAME --to SHO --via old-sho|pristine [--json] [--timeout S]\n"
          "       mcim run preload NAME --sho SHO [--json]     (a second MCIM, kept inactive)\n"
          "       mcim run switch NAME --to SHO [--json]       (activate a pre-provisioned MCIM)\n"
          "\n"
          "Runs a procedure as the M2ME subscriber does: an order at the (new) SHO signed by\n"
          "the owner key (step 1), an owner-signed instruction to the device (step 2), then\n"
          "watches it to the end and lists every step with the seed's number.\n"
          "  initial  initial provisioning (pristine steps 4-15)\n"
          "  change   change of SHO via the old SHO's connectivity (steps 1-14) or via the\n"
          "           pristine state (steps 1-15)\n"
          "  preload  the seed's variant: the MCIM of a second SHO installed beside the\n"
          "           active one (inactive; that SHO holds the subscription in standby)\n"
          "  switch   make a pre-provisioned MCIM the active one without a download: the\n"
          "           current SHO suspends its subscription, the other resumes its own\n"
          "--json prints {\"txid\", \"result\", \"steps\": [{\"n\", \"from\", \"to\", \"msg\"}]}.\n"
          "Exit status 0 only if the procedure succeeded.\n"
          "\n"
          "examples:\n"
          "  mcim run initial dev1 --sho sho-a\n"
          "  mcim run change dev1 --to sho-b --via old-sho --json\n");
}

int mcim_cmd_run(int argc, char **argv)
{
  struct mcim_lab_run run = {0};
  const char *dir = NULL;
  bool json = false;
  const char *pos[2] = {NULL, NULL};
  size_t npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return MCIM_EXIT_OK;
    } else if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--sho") == 0 || strcmp(a, "--to") == 0 || strcmp(a, "--via") == 0 ||
               strcmp(a, "--dir") == 0 || strcmp(a, "--timeout") == 0) {
      if (i + 1 >= argc)
        return mcim_usage_error("run: %s needs a value", a);
      const char *v = argv[++i];
      if (strcmp(a, "--sho") == 0 || strcmp(a, "--to") == 0)
        run.sho = v;
      else if (strcmp(a, "--via") == 0)
        run.via = v;
      else if (strcmp(a, "--dir") == 0)
        dir = v;
      else if (sscanf(v, "%d", &run.timeout_s) != 1 || run.timeout_s < 1)
        return mcim_usage_error("run: --timeout wants seconds");
    } else if (a[0] == '-') {
      return mcim_usage_error("run: unknown option %s (see mcim run --help)", a);
    } else if (npos < 2) {
      pos[npos++] = a;
    } else {
      return mcim_usage_error("run: too many arguments");
    }
  }
  if (npos != 2) {
    usage(stderr);
    return MCIM_EXIT_USAGE;
  }
  run.procedure = pos[0];
  run.device = pos[1];
  if (strcmp(run.procedure, "initial") == 0) {
    if (!run.sho || run.via)
      return mcim_usage_error("run initial NAME --sho SHO");
  } else if (strcmp(run.procedure, "change") == 0) {
    if (!run.sho || !run.via)
      return mcim_usage_error("run change NAME --to SHO --via old-sho|pristine");
    if (strcmp(run.via, "old-sho") != 0 && strcmp(run.via, "pristine") != 0)
      return mcim_usage_error("run change: --via is old-sho or pristine");
  } else if (strcmp(run.procedure, "preload") == 0 || strcmp(run.procedure, "switch") == 0) {
    if (!run.sho || run.via)
      return mcim_usage_error("run %s NAME --%s SHO", run.procedure,
                              strcmp(run.procedure, "switch") == 0 ? "to" : "sho");
  } else {
    return mcim_usage_error("run: the procedure is initial, change, preload or switch");
  }

  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s (start one with `mcim lab up`)\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  struct mcim_lab_run_result res;
  if (!json) {
    printf("%s of %s with %s%s%s\n", run.procedure, run.device, run.sho,
           run.via ? " via " : "", run.via ? run.via : "");
    run.live = stdout;
  }
  mcim_cause_t rc = mcim_lab_run(lab, &run, &res);
  if (json) {
    json_t *o = json_pack("{s:s,s:s,s:O,s:f}", "txid", res.txn, "result", res.result, "steps",
                          res.steps ? res.steps : json_array(), "seconds", res.seconds);
    if (res.detail[0])
      json_object_set_new(o, "detail", json_string(res.detail));
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(o);
  } else {
    printf("%s: %s in %.2f s (txid %s)%s%s\n", run.procedure, res.result, res.seconds, res.txn,
           res.detail[0] ? ": " : "", res.detail);
  }
  mcim_lab_run_result_clear(&res);
  mcim_lab_free(lab);
  return rc == MCIM_OK ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}
