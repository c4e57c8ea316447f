/* `mcim run initial|change ...`: a procedure run by the M2ME subscriber in the lab. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/lab_run.h"
#include "mcim/opts.h"

static const char run_usage[] =
    "mcim run initial NAME --sho SHO [--json] [--timeout S] [--dir D]\n"
    "mcim run change NAME --to SHO --via old-sho|pristine [--json] [--timeout S] [--dir D]\n"
    "mcim run preload NAME --sho SHO [--json] [--timeout S] [--dir D]\n"
    "mcim run switch NAME --to SHO [--json] [--timeout S] [--dir D]";

static const char run_description[] =
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
    "Exit status 0 only if the procedure succeeded.";

int mcim_cmd_run(int argc, char **argv)
{
  struct mcim_lab_run run = {0};
  const char *dir = NULL, *timeout = NULL;
  bool json = false;
  const struct mcim_opt opts[] = {
      {.name = "sho", .arg = "SHO", .help = "the SHO (initial, preload)", .value = &run.sho},
      {.name = "to", .arg = "SHO", .help = "the new SHO (change, switch)", .value = &run.sho},
      {.name = "via", .arg = "HOW", .help = "change: old-sho or pristine", .value = &run.via},
      {.name = "json", .help = "print {\"txid\", \"result\", \"steps\": [{\"n\", \"from\", \"to\", \"msg\"}]}",
       .flag = &json},
      {.name = "timeout", .arg = "S", .help = "give up after S seconds (default 120)",
       .value = &timeout},
      {.name = "dir", .arg = "D", .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)",
       .value = &dir},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim run",
      .usage = run_usage,
      .description = run_description,
      .opts = opts,
      .examples = "mcim run initial dev1 --sho sho-a\n"
                  "mcim run change dev1 --to sho-b --via old-sho --json\n"
                  "mcim run change dev1 --to=sho-a --via=pristine --timeout=60",
      .max_args = 2,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.n < 1)
    return mcim_opts_error(&cmd, "missing the procedure: initial, change, preload or switch");
  if (a.n < 2)
    return mcim_opts_error(&cmd, "missing NAME, the device");
  if (timeout) {
    /* strtol, not sscanf: "12abc" is refused, and the milliseconds (lab/run.c) stay an int */
    char *end = NULL;
    long t = strtol(timeout, &end, 10);
    if (end == timeout || *end || t < 1 || t > 86400)
      return mcim_opts_error(&cmd, "--timeout wants seconds, got '%s'", timeout);
    run.timeout_s = (int)t;
  }
  run.procedure = a.arg[0];
  run.device = a.arg[1];
  bool change = strcmp(run.procedure, "change") == 0;
  if (!change && strcmp(run.procedure, "initial") != 0 && strcmp(run.procedure, "preload") != 0 &&
      strcmp(run.procedure, "switch") != 0)
    return mcim_opts_error(&cmd, "the procedure is initial, change, preload or switch, not '%s'",
                           run.procedure);
  if (!run.sho)
    return mcim_opts_error(&cmd, "%s needs --%s SHO", run.procedure,
                           change || strcmp(run.procedure, "switch") == 0 ? "to" : "sho");
  if (change && !run.via)
    return mcim_opts_error(&cmd, "change needs --via old-sho|pristine");
  if (!change && run.via)
    return mcim_opts_error(&cmd, "--via is for change only");
  if (change && strcmp(run.via, "old-sho") != 0 && strcmp(run.via, "pristine") != 0)
    return mcim_opts_error(&cmd, "--via is old-sho or pristine, not '%s'", run.via);

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
