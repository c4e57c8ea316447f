/* `mcim demo`: the main job. From nothing: a lab on loopback (two SHOs), one device,
 * the procedures of the seed one after the other, each step printed as it happens, the
 * charts written under ./mcim-demo/, the device's final state, the lab stopped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/trace.h"

static void usage(FILE *out)
{
  fprintf(out,
          "usage: mcim demo [--out DIR] [--keep]\n"
          "\n"
          "Starts a lab on loopback (SQLite; vno, ro, pva, m2mes, sho-a, sho-b), manufactures\n"
          "one device (dev1), runs the seed's procedures one after the other and prints every\n"
          "step as it happens:\n"
          "  1. initial provisioning with sho-a (pristine steps 4-15)\n"
          "  2. change to sho-b via the old SHO's connectivity (steps 1-14)\n"
          "  3. change back to sho-a via the pristine state (steps 1-15)\n"
          "then writes each procedure's chart (svg, mermaid, text) under DIR (default\n"
          "./mcim-demo), shows the device's final state and stops the lab (--keep leaves it\n"
          "running in DIR/lab). Exit status 0 only if every procedure succeeded.\n");
}

static int rm_rf(const char *path)
{
  pid_t pid = fork();
  if (pid == 0) {
    execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid > 0)
    waitpid(pid, &st, 0);
  return pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The chart of one procedure in three formats: NAME.txt, NAME.mmd, NAME.svg. */
static int write_charts(mcim_lab_t *lab, const char *txn, const char *out_dir, const char *name)
{
  struct mcim_trace t;
  char path[1024], msc[1024];
  int ex = 0;
  mcim_lab_trace_collect(lab, txn, &t);
  const struct {
    const char *ext;
    enum mcim_trace_format fmt;
  } outs[] = {{"txt", MCIM_TRACE_TEXT}, {"mmd", MCIM_TRACE_MERMAID}, {"msc", MCIM_TRACE_MSC},
              {"json", MCIM_TRACE_JSON}};
  for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s.%s", out_dir, name, outs[i].ext);
    FILE *f = fopen(path, "w");
    if (!f || mcim_trace_render(&t, txn, outs[i].fmt, f) != MCIM_OK)
      ex = -1;
    if (f)
      fclose(f);
  }
  snprintf(msc, sizeof(msc), "%s/%s.msc", out_dir, name);
  snprintf(path, sizeof(path), "%s/%s.svg", out_dir, name);
  pid_t pid = fork();
  if (pid == 0) {
    execlp("mscgen", "mscgen", "-T", "svg", "-i", msc, "-o", path, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid > 0)
    waitpid(pid, &st, 0);
  if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    ex = -1;
  mcim_trace_free(&t);
  return ex;
}

int mcim_cmd_demo(int argc, char **argv)
{
  const char *out_dir = "./mcim-demo";
  bool keep = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return MCIM_EXIT_OK;
    } else if (strcmp(argv[i], "--keep") == 0) {
      keep = true;
    } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out_dir = argv[++i];
    } else {
      return mcim_usage_error("demo: unknown argument %s (see mcim demo --help)", argv[i]);
    }
  }
  char lab_dir[1024];
  snprintf(lab_dir, sizeof(lab_dir), "%s/lab", out_dir);
  /* A previous demo's lab: stop it if it still runs, then start from nothing. */
  mcim_lab_t *old = NULL;
  if (mcim_lab_open(lab_dir, &old) == MCIM_OK) {
    mcim_lab_down(old);
    mcim_lab_free(old);
  }
  if (rm_rf(out_dir) != 0 || mkdir(out_dir, 0755) != 0) {
    fprintf(stderr, "mcim demo: cannot prepare %s\n", out_dir);
    return MCIM_EXIT_FAIL;
  }

  printf("== mcim demo: 3GPP TR 33.812 alternative 1, every role a real daemon on loopback\n");
  mcim_lab_t *lab = NULL;
  struct mcim_lab_up_opts up = {.store = "sqlite"};
  mcim_cause_t rc = mcim_lab_up(lab_dir, &up, &lab);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim demo: the lab did not come up: %s\n", mcim_cause_text(rc));
    return MCIM_EXIT_FAIL;
  }
  printf("lab up in %s:", mcim_lab_path(lab));
  for (const char *const *n = mcim_lab_roles(lab); n && *n; n++)
    printf(" %s", *n);
  printf("\n");
  rc = mcim_lab_device_add(lab, "dev1", false);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim demo: manufacturing dev1 failed: %s\n", mcim_cause_text(rc));
    mcim_lab_down(lab);
    mcim_lab_free(lab);
    return MCIM_EXIT_FAIL;
  }
  printf("dev1 manufactured by the M2MES: TRE keys certified, PCID credential in the TRE\n");

  const struct {
    const char *title, *chart, *procedure, *sho, *via;
  } plan[] = {
      {"initial provisioning with sho-a (pristine steps 4-15)", "initial", "initial", "sho-a",
       NULL},
      {"change to sho-b via the old SHO's connectivity (steps 1-14)", "change-old-sho", "change",
       "sho-b", "old-sho"},
      {"change back to sho-a via the pristine state (steps 1-15)", "change-pristine", "change",
       "sho-a", "pristine"},
  };
  int ok = 0, total = (int)(sizeof(plan) / sizeof(plan[0]));
  for (int i = 0; i < total; i++) {
    struct mcim_lab_run run = {.device = "dev1", .procedure = plan[i].procedure,
                               .sho = plan[i].sho, .via = plan[i].via, .live = stdout};
    struct mcim_lab_run_result res;
    printf("\n== %d/%d %s\n", i + 1, total, plan[i].title);
    rc = mcim_lab_run(lab, &run, &res);
    printf("-- %s: %s in %.2f s (txid %s)%s%s\n", plan[i].chart, res.result, res.seconds, res.txn,
           res.detail[0] ? ": " : "", res.detail);
    if (write_charts(lab, res.txn, out_dir, plan[i].chart) != 0)
      fprintf(stderr, "mcim demo: could not write every chart of %s\n", plan[i].chart);
    mcim_lab_run_result_clear(&res);
    if (rc != MCIM_OK)
      break;
    ok++;
  }

  printf("\n== dev1 at the end\n");
  fflush(stdout);
  char *status_argv[] = {"device", "status", "dev1", "--dir", lab_dir, NULL};
  mcim_cmd_device(5, status_argv);
  printf("\ncharts: %s/{initial,change-old-sho,change-pristine}.{svg,mmd,txt}\n", out_dir);
  if (!keep)
    mcim_lab_down(lab);
  else
    printf("lab left running in %s (mcim lab down --dir %s)\n", lab_dir, lab_dir);
  mcim_lab_free(lab);
  printf("== %d of %d procedures succeeded\n", ok, total);
  return ok == total ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}
