/* `mcim demo`: the main job. From nothing: a lab on loopback (two SHOs), one device,
 * the procedures of the seed one after the other, each step printed as it happens, a status
 * line per procedure, the charts written under ./mcim-demo/, the device's final state, the
 * lab stopped. Exit status 0 only if every procedure succeeded and its charts were written. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/lab_run.h"
#include "mcim/opts.h"
#include "mcim/trace.h"
#include "mcim/util.h"

#define DEMO_DEVICE "dev1"
#define DEMO_MARKER ".mcim-demo"

static const char demo_description[] =
    "Starts a lab on loopback (SQLite; vno, ro, pva, m2mes, sho-a, sho-b), manufactures\n"
    "one device (dev1; --tre tpm: its TRE in a TPM of its own, a swtpm), runs the seed's\n"
    "procedures one after the other and prints every step as it happens:\n"
    "  1. initial provisioning with sho-a (pristine steps 4-15)\n"
    "  2. change to sho-b via the old SHO's connectivity (steps 1-14)\n"
    "  3. change back to sho-a via the pristine state (steps 1-15)\n"
    "then writes each procedure's chart under DIR (default ./mcim-demo):\n"
    "  initial, change-old-sho, change-pristine  .svg (mscgen) .mmd (mermaid) .txt (text),\n"
    "  and .msc (mscgen input) .json (the raw trace)\n"
    "shows the device's final state and stops the lab (--keep leaves it running in\n"
    "DIR/lab: mcim lab down --dir DIR/lab). DIR is replaced at the next run; a folder that\n"
    "is not a demo's is never touched. Ctrl-C stops the lab too.\n"
    "Exit status 0 only if every procedure succeeded and its charts were written.";

static const char *const chart_names[] = {"initial", "change-old-sho", "change-pristine"};
static const char *const chart_exts[] = {"txt", "mmd", "msc", "json", "svg"};

/* ---- the output folder: only ever a demo's ---- */

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

/* Whether `entry` is something a demo writes in its folder. */
static bool demo_entry(const char *entry)
{
  if (strcmp(entry, "lab") == 0 || strcmp(entry, DEMO_MARKER) == 0)
    return true;
  for (size_t i = 0; i < sizeof(chart_names) / sizeof(chart_names[0]); i++) {
    size_t n = strlen(chart_names[i]);
    if (strncmp(entry, chart_names[i], n) != 0 || entry[n] != '.')
      continue;
    for (size_t k = 0; k < sizeof(chart_exts) / sizeof(chart_exts[0]); k++)
      if (strcmp(entry + n + 1, chart_exts[k]) == 0)
        return true;
  }
  return false;
}

/* Make `dir` an empty demo folder. A folder that exists must be a previous demo's (its
 * marker, or nothing but what a demo writes): anything else is left alone and refused. A
 * previous demo's lab that still runs (--keep, Ctrl-C at a bad moment) is stopped first. */
static int prepare_out(const char *dir, const char *lab_dir)
{
  struct stat sb;
  char path[PATH_MAX];
  if (stat(dir, &sb) != 0) {
    if (errno != ENOENT || mkdir(dir, 0755) != 0) {
      fprintf(stderr, "mcim demo: cannot create %s: %s\n", dir, strerror(errno));
      return -1;
    }
  } else if (!S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "mcim demo: %s exists and is not a folder\n", dir);
    return -1;
  } else {
    snprintf(path, sizeof(path), "%s/%s", dir, DEMO_MARKER);
    bool marked = access(path, F_OK) == 0;
    DIR *d = opendir(dir);
    if (!d) {
      fprintf(stderr, "mcim demo: cannot read %s: %s\n", dir, strerror(errno));
      return -1;
    }
    struct dirent *de;
    const char *foreign = NULL;
    char foreign_name[256] = "";
    while ((de = readdir(d))) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
        continue;
      if (!demo_entry(de->d_name) && !foreign) {
        snprintf(foreign_name, sizeof(foreign_name), "%s", de->d_name);
        foreign = foreign_name;
      }
    }
    closedir(d);
    if (foreign && !marked) {
      fprintf(stderr,
              "mcim demo: %s is not a demo's folder (it holds %s): choose another --out, or\n"
              "empty it yourself\n",
              dir, foreign);
      return -1;
    }
    mcim_lab_t *old = NULL;
    if (mcim_lab_open(lab_dir, &old) == MCIM_OK) {
      mcim_lab_down(old);
      mcim_lab_free(old);
    }
    if (rm_rf(lab_dir) != 0) {
      fprintf(stderr, "mcim demo: cannot remove the previous lab %s\n", lab_dir);
      return -1;
    }
    d = opendir(dir);
    while (d && (de = readdir(d))) {
      if (demo_entry(de->d_name) && strcmp(de->d_name, "lab") != 0) {
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
      }
    }
    if (d)
      closedir(d);
  }
  snprintf(path, sizeof(path), "%s/%s", dir, DEMO_MARKER);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "mcim demo: cannot write in %s: %s\n", dir, strerror(errno));
    return -1;
  }
  fputs("made by `mcim demo`: the next demo replaces this folder's demo files\n", f);
  fclose(f);
  return 0;
}

/* ---- Ctrl-C: the daemons run in their own sessions, so stop them ourselves ---- */

#define MAX_PIDS 32
static volatile sig_atomic_t npids;
static pid_t pids[MAX_PIDS];
static bool pids_gone[MAX_PIDS]; /* mcim_lab_stop_pids's memory: no malloc in the handler */

/* The daemons and agents get SIGTERM and up to 5 s to stop, as `lab down` gives them (a
 * role's stop waits for its handlers and its worker's delivery under way); what is left
 * then gets SIGKILL, and is waited for (a child of ours: gone at once; else ECHILD). Only
 * then "lab stopped" is said, and true. Async-signal-safe: mcim_lab_stop_pids, waitpid,
 * write. */
static void on_signal(int sig)
{
  int saved = errno;
  sig_atomic_t n = npids;
  mcim_lab_stop_pids(pids, pids_gone, (size_t)n, NULL, 5000);
  for (sig_atomic_t i = 0; i < n; i++)
    if (pids[i] > 0)
      (void)waitpid(pids[i], NULL, 0);
  errno = saved;
  static const char msg[] = "\nmcim demo: interrupted, lab stopped\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)w;
  signal(sig, SIG_DFL);
  raise(sig);
}

static void record_pids(mcim_lab_t *lab)
{
  json_t *st = NULL;
  if (mcim_lab_status(lab, &st) != MCIM_OK)
    return;
  const char *lists[] = {"devices", "roles"}; /* devices first, as lab down does */
  sig_atomic_t n = 0;
  for (size_t l = 0; l < 2; l++) {
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(st, lists[l]), i, r) {
      json_int_t pid = json_integer_value(json_object_get(r, "pid"));
      if (pid > 1 && n < MAX_PIDS)
        pids[n++] = (pid_t)pid;
    }
  }
  npids = n;
  json_decref(st);
}

static void forget_pids(void)
{
  npids = 0;
}

/* ---- charts ---- */

/* The procedure's trace once nothing more arrives (outbox deliveries and the deferred notice
 * of the pristine path land after the device is done): two collections 200 ms apart that
 * agree, within about 3 s. */
static void collect_settled(mcim_lab_t *lab, const char *txn, struct mcim_trace *t)
{
  mcim_lab_trace_collect(lab, txn, t);
  for (int i = 0; i < 15; i++) {
    struct mcim_trace again;
    nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    mcim_lab_trace_collect(lab, txn, &again);
    bool same = again.len == t->len;
    mcim_trace_free(t);
    *t = again;
    if (same)
      return;
  }
}

static int run_mscgen(const char *msc, const char *svg)
{
  pid_t pid = fork();
  if (pid == 0) {
    execlp("mscgen", "mscgen", "-T", "svg", "-i", msc, "-o", svg, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid > 0)
    waitpid(pid, &st, 0);
  if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "mcim demo: mscgen did not render %s%s\n", svg,
            WIFEXITED(st) && WEXITSTATUS(st) == 127 ? " (is it installed? scripts/deps.sh)" : "");
    return -1;
  }
  return 0;
}

/* The chart of one procedure: NAME.txt, NAME.mmd, NAME.svg (from NAME.msc), NAME.json. */
static int write_charts(mcim_lab_t *lab, const char *txn, const char *out_dir, const char *name)
{
  struct mcim_trace t;
  char path[PATH_MAX], msc[PATH_MAX];
  int ex = 0;
  collect_settled(lab, txn, &t);
  if (t.len == 0) {
    fprintf(stderr, "mcim demo: no event of %s (txid %s) in the lab\n", name, txn);
    ex = -1;
  }
  const struct {
    const char *ext;
    enum mcim_trace_format fmt;
  } outs[] = {{"txt", MCIM_TRACE_TEXT}, {"mmd", MCIM_TRACE_MERMAID}, {"msc", MCIM_TRACE_MSC},
              {"json", MCIM_TRACE_JSON}};
  for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s.%s", out_dir, name, outs[i].ext);
    FILE *f = fopen(path, "w");
    if (!f || mcim_trace_render(&t, txn, outs[i].fmt, f) != MCIM_OK) {
      fprintf(stderr, "mcim demo: cannot write %s\n", path);
      ex = -1;
    }
    if (f && fclose(f) != 0)
      ex = -1;
  }
  snprintf(msc, sizeof(msc), "%s/%s.msc", out_dir, name);
  snprintf(path, sizeof(path), "%s/%s.svg", out_dir, name);
  if (run_mscgen(msc, path) != 0)
    ex = -1;
  mcim_trace_free(&t);
  return ex;
}

/* ---- the device at the end: its TRE's public view ---- */

static void show_device(mcim_lab_t *lab, const char *name)
{
  struct mcim_http_client *cli = NULL;
  struct mcim_http_result r = {0};
  mcim_cause_t rc = mcim_lab_device_client(lab, name, &cli);
  if (rc == MCIM_OK)
    rc = mcim_http_request(cli, "GET", "http://localhost/v1/status", NULL, NULL, &r);
  mcim_http_client_free(cli);
  printf("\n== %s at the end (the TRE's public view: identities and states, never a key)\n", name);
  if (rc != MCIM_OK) {
    printf("  status unavailable: %s\n", mcim_cause_text(rc));
    mcim_http_result_clear(&r);
    return;
  }
  json_t *pcid = json_object_get(r.json, "pcid");
  time_t exp = (time_t)json_integer_value(json_object_get(pcid, "expires"));
  char when[32] = "?";
  struct tm tm;
  if (exp > 0 && gmtime_r(&exp, &tm))
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
  printf("  PCID %s (initial network access credential), expires %s\n",
         json_string_value(json_object_get(pcid, "id")), when);
  size_t i;
  json_t *slot;
  if (json_array_size(json_object_get(r.json, "slots")) == 0)
    printf("  no MCIM (pristine)\n");
  json_array_foreach(json_object_get(r.json, "slots"), i, slot)
    printf("  MCIM slot %-8s IMSI %-16s %s\n", json_string_value(json_object_get(slot, "slot")),
           json_string_value(json_object_get(slot, "imsi")),
           json_string_value(json_object_get(slot, "state")));
  mcim_http_result_clear(&r);
}

int mcim_cmd_demo(int argc, char **argv)
{
  const char *out_dir = "./mcim-demo";
  bool keep = false;
  const char *auc = NULL, *tre = NULL;
  const struct mcim_opt opts[] = {
      {.name = "out", .arg = "DIR", .help = "the folder of the charts and the lab (default\n"
                                             "./mcim-demo)",
       .value = &out_dir},
      {.name = "keep", .help = "leave the lab running in DIR/lab", .flag = &keep},
      {.name = "auc", .arg = "KIND",
       .help = "the SHOs' and the ICF's AuC: builtin (the default) or osmo-hlr (an osmo-hlr\n"
               "each, in the lab)",
       .value = &auc},
      {.name = "tre", .arg = "KIND",
       .help = "the device's TRE: soft (the default) or tpm (its keys, K and measured boot in\n"
               "a TPM of its own: a swtpm, docs/tre-tpm.md)",
       .value = &tre},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim demo",
      .usage = "mcim demo [--out DIR] [--keep] [--auc builtin|osmo-hlr] [--tre soft|tpm]",
      .description = demo_description,
      .opts = opts,
      .examples = "mcim demo\n"
                  "mcim demo --out /tmp/demo --keep\n"
                  "mcim demo --auc osmo-hlr --out /tmp/demo-hlr\n"
                  "mcim demo --tre tpm --out /tmp/demo-tpm\n"
                  "mcim demo --out=/tmp/demo",
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (!out_dir[0])
    return mcim_opts_error(&cmd, "--out needs a folder");
  if (auc && strcmp(auc, "builtin") != 0 && strcmp(auc, "osmo-hlr") != 0)
    return mcim_opts_error(&cmd, "--auc is builtin or osmo-hlr, not '%s'", auc);
  if (tre && strcmp(tre, "soft") != 0 && strcmp(tre, "tpm") != 0)
    return mcim_opts_error(&cmd, "--tre is soft or tpm, not '%s'", tre);
  bool tpm = tre && strcmp(tre, "tpm") == 0;
  char lab_dir[PATH_MAX];
  snprintf(lab_dir, sizeof(lab_dir), "%s/lab", out_dir);
  if (prepare_out(out_dir, lab_dir) != 0)
    return MCIM_EXIT_FAIL;

  uint64_t t0 = mcim_monotonic_ns();
  printf("== mcim demo: 3GPP TR 33.812 alternative 1, every role a real daemon on loopback\n");
  fflush(stdout);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);

  mcim_lab_t *lab = NULL;
  struct mcim_lab_up_opts up = {.store = "sqlite", .auc = auc};
  mcim_cause_t rc = mcim_lab_up(lab_dir, &up, &lab);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim demo: the lab did not come up: %s (logs: %s/*/*.log)\n",
            mcim_cause_text(rc), lab_dir);
    /* whatever did start is recorded in lab.json */
    if (mcim_lab_open(lab_dir, &lab) == MCIM_OK) {
      mcim_lab_down(lab);
      mcim_lab_free(lab);
    }
    return MCIM_EXIT_FAIL;
  }
  record_pids(lab);
  printf("lab up in %s:", mcim_lab_path(lab));
  for (const char *const *n = mcim_lab_roles(lab); n && *n; n++)
    printf(" %s", *n);
  printf("\n");
  const struct mcim_lab_device_opts dopts = {.tre = tpm ? "tpm" : NULL};
  rc = mcim_lab_device_add_with(lab, DEMO_DEVICE, &dopts);
  record_pids(lab);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim demo: manufacturing %s failed: %s%s\n", DEMO_DEVICE,
            mcim_cause_text(rc),
            tpm && (rc == MCIM_UNSUPPORTED || rc == MCIM_NOT_FOUND)
                ? " (--tre tpm needs a build with the TPM TRE and swtpm: scripts/deps.sh)"
                : "");
    mcim_lab_down(lab);
    forget_pids();
    mcim_lab_free(lab);
    return MCIM_EXIT_FAIL;
  }
  printf("%s manufactured by the M2MES: TRE keys certified, PCID credential in the TRE, owner "
         "key pinned\n",
         DEMO_DEVICE);
  if (tpm)
    printf("%s's TRE is in a TPM of its own (swtpm): its TPM enrolled at the M2MES (EK "
           "certificate, attestation key), its keys and every K made or imported in the TPM, "
           "its boot measured into PCR 10 by its launcher (m2me-boot)\n",
           DEMO_DEVICE);

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
  enum { NPLAN = sizeof(plan) / sizeof(plan[0]) };
  char status[NPLAN][400];
  int ok = 0, charts_ok = 1, ran = 0;
  for (int i = 0; i < NPLAN; i++) {
    struct mcim_lab_run run = {.device = DEMO_DEVICE, .procedure = plan[i].procedure,
                               .sho = plan[i].sho, .via = plan[i].via, .live = stdout};
    struct mcim_lab_run_result res;
    printf("\n== %d/%d %s\n", i + 1, NPLAN, plan[i].title);
    fflush(stdout);
    rc = mcim_lab_run(lab, &run, &res);
    ran++;
    snprintf(status[i], sizeof(status[i]), "%-16s %-8s %5.2f s  txid %s%s%.200s", plan[i].chart,
             rc == MCIM_OK ? "success" : res.result, res.seconds, res.txn,
             res.detail[0] && rc != MCIM_OK ? ": " : "", rc != MCIM_OK ? res.detail : "");
    printf("-- %s\n", status[i]);
    if (write_charts(lab, res.txn, out_dir, plan[i].chart) != 0)
      charts_ok = 0;
    mcim_lab_run_result_clear(&res);
    if (rc != MCIM_OK) {
      /* the next procedures start from this one's end state: stop here */
      fprintf(stderr, "mcim demo: %s failed; logs in %s/*/*.log and %s/devices/%s/, "
                      "steps: mcim trace TXID --dir %s%s\n",
              plan[i].chart, lab_dir, lab_dir, DEMO_DEVICE, lab_dir,
              keep ? "" : " (with --keep)");
      break;
    }
    ok++;
  }

  show_device(lab, DEMO_DEVICE);
  printf("\n== summary\n");
  for (int i = 0; i < ran; i++)
    printf("  %s\n", status[i]);
  for (int i = ran; i < NPLAN; i++)
    printf("  %-16s not run\n", plan[i].chart);
  printf("charts: %s/{", out_dir);
  for (int i = 0; i < ran; i++)
    printf("%s%s", i ? "," : "", plan[i].chart);
  printf("}.{svg,mmd,txt}%s\n", charts_ok ? "" : " (some could not be written, see above)");
  if (!keep) {
    mcim_lab_down(lab);
    forget_pids();
    printf("lab stopped\n");
  } else {
    forget_pids();
    printf("lab left running in %s (mcim lab down --dir %s)\n", lab_dir, lab_dir);
  }
  mcim_lab_free(lab);
  printf("== %d of %d procedures succeeded in %.1f s\n", ok, NPLAN,
         (double)(mcim_monotonic_ns() - t0) / 1e9);
  return ok == NPLAN && charts_ok ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}
