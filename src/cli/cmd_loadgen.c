/* `mcim loadgen`: many simulated devices in one process against a running lab. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/loadgen.h"
#include "mcim/opts.h"

static const char loadgen_usage[] =
    "mcim loadgen --devices N [--concurrency C] [--procedure P] [--timeout S] [--json] [--dir D]";

static const char loadgen_description[] =
    "Manufactures N devices at the lab's M2MES and runs their procedures, C at a time, in\n"
    "this one process: each device is a real agent (the m2me code, its own software TRE and\n"
    "agent.db, in LAB/loadgen/RUN/), and loadgen plays every owner (order, instruction).\n"
    "Procedures (P): initial; change-old-sho and change-pristine (initial, then a change of\n"
    "SHO); switch (initial, preload of a second MCIM, switch to it); mix (one of the three\n"
    "per device, in turn). The SHOs of the lab are used in turn.\n"
    "Reports throughput, latency percentiles (p50, p95, p99, max) per procedure and per step,\n"
    "errors by cause, CPU per procedure (this process and the daemons), then checks the\n"
    "invariants of DESIGN.md section 4 for every device. With --json the last line is one\n"
    "object: devices, procedures, errors, per_s, latency_ms, invariants, crypto_ops_per_procedure\n"
    "(signatures, verifications, key agreements, AKA runs, TLS handshakes: counted in this\n"
    "process and scraped from every daemon's /metrics), work_per_procedure (HTTP requests,\n"
    "store commits and statements, TRE synced writes: the same way), daemons_cpu (the\n"
    "daemons' CPU per procedure by role and route, and by role and thread), and the rest.\n"
    "Exit status 0 only without errors and with every invariant holding.";

static void print_latency(const char *name, const json_t *o)
{
  const json_t *l = json_object_get(o, "latency_ms");
  printf("  %-40s %6lld  p50 %8.1f  p95 %8.1f  p99 %8.1f  max %8.1f ms", name,
         (long long)json_integer_value(json_object_get(o, "count")),
         json_real_value(json_object_get(l, "p50")), json_real_value(json_object_get(l, "p95")),
         json_real_value(json_object_get(l, "p99")), json_real_value(json_object_get(l, "max")));
  const json_t *cpu = json_object_get(o, "device_cpu_ms");
  const json_t *own = json_object_get(o, "owner_cpu_ms");
  if (cpu)
    printf("  device CPU %6.2f ms", json_real_value(cpu));
  if (own)
    printf("  owner %5.2f ms", json_real_value(own));
  printf("\n");
}

static void print_report(const json_t *r)
{
  const char *k;
  json_t *v;
  printf("run %s: %lld devices, %s, concurrency %lld\n",
         json_string_value(json_object_get(r, "run")),
         (long long)json_integer_value(json_object_get(r, "devices")),
         json_string_value(json_object_get(r, "procedure")),
         (long long)json_integer_value(json_object_get(r, "concurrency")));
  const json_t *m = json_object_get(r, "manufacture");
  printf("manufactured %lld devices in %.1f s\n",
         (long long)json_integer_value(json_object_get(m, "devices")),
         json_real_value(json_object_get(m, "seconds")));
  printf("%lld procedures completed in %.1f s: %.1f/s\n",
         (long long)json_integer_value(json_object_get(r, "procedures")),
         json_real_value(json_object_get(r, "seconds")),
         json_real_value(json_object_get(r, "per_s")));
  printf("per procedure:\n");
  json_object_foreach((json_t *)json_object_get(r, "per_procedure"), k, v) print_latency(k, v);
  printf("per step:\n");
  json_object_foreach((json_t *)json_object_get(r, "per_step"), k, v) print_latency(k, v);
  const json_t *cpu = json_object_get(r, "cpu");
  printf("CPU: loadgen %.1f s, daemons %.1f s: %.1f ms per procedure\n",
         json_real_value(json_object_get(cpu, "loadgen_s")),
         json_real_value(json_object_get(cpu, "daemons_s")),
         json_real_value(json_object_get(cpu, "per_procedure_ms")));
  const json_t *ops = json_object_get(r, "crypto_ops_per_procedure");
  if (json_object_size(ops) > 0) {
    printf("crypto operations per procedure (devices, owners and daemons):");
    json_object_foreach((json_t *)ops, k, v) if (json_number_value(v) > 0)
        printf(" %s %.2f", k, json_number_value(v));
    printf("\n");
    size_t mi;
    json_t *mv;
    json_array_foreach(json_object_get(json_object_get(r, "crypto_ops"), "instances_missing"),
                       mi, mv) printf("  (not counted: %s did not answer /metrics)\n",
                                      json_string_value(mv));
  }
  const json_t *work = json_object_get(r, "work_per_procedure");
  if (json_object_size(work) > 0) {
    printf("work per procedure (devices, owners and daemons):");
    json_object_foreach((json_t *)work, k, v) printf(" %s %.2f", k, json_number_value(v));
    printf("\n");
  }
  const json_t *dcpu = json_object_get(r, "daemons_cpu");
  const json_t *threads = json_object_get(dcpu, "by_thread_ms");
  if (json_object_size(threads) > 0) {
    printf("daemons' CPU per procedure, by thread (ms):");
    json_object_foreach((json_t *)threads, k, v) printf(" %s %.2f;", k, json_number_value(v));
    printf("\n");
  }
  const json_t *routes = json_object_get(dcpu, "by_route_ms");
  if (json_object_size(routes) > 0) {
    int shown = 0;
    printf("daemons' handlers' CPU per procedure, the largest (ms):\n");
    json_object_foreach((json_t *)routes, k, v) if (shown++ < 10)
        printf("  %-48s %6.2f\n", k, json_number_value(v));
  }
  const json_t *errors = json_object_get(r, "errors");
  if (json_object_size(errors) == 0)
    printf("errors: none\n");
  json_object_foreach((json_t *)errors, k, v)
    printf("errors: %s x%lld\n", k, (long long)json_integer_value(v));
  size_t i;
  json_array_foreach((json_t *)json_object_get(r, "error_samples"), i, v)
    printf("  %s %s: %s %s\n", json_string_value(json_object_get(v, "device")),
           json_string_value(json_object_get(v, "procedure")),
           json_string_value(json_object_get(v, "cause")),
           json_string_value(json_object_get(v, "detail")));
  const json_t *inv = json_object_get(r, "invariants");
  if (json_is_string(inv))
    printf("invariants: %s\n", json_string_value(inv));
  else {
    printf("invariants: FAILED\n");
    json_array_foreach((json_t *)inv, i, v) printf("  %s\n", json_string_value(v));
  }
}

int mcim_cmd_loadgen(int argc, char **argv)
{
  const char *dir = NULL, *devices = NULL, *concurrency = NULL, *procedure = "mix",
             *timeout = NULL;
  bool json = false;
  const struct mcim_opt opts[] = {
      {.name = "devices", .arg = "N", .help = "devices to manufacture and run (required)",
       .value = &devices},
      {.name = "concurrency", .arg = "C", .help = "devices at work at the same time (default 16)",
       .value = &concurrency},
      {.name = "procedure", .arg = "P",
       .help = "initial, change-old-sho, change-pristine, switch or mix (default mix)",
       .value = &procedure},
      {.name = "timeout", .arg = "S", .help = "give a procedure up after S seconds (default 120)",
       .value = &timeout},
      {.name = "json", .help = "the report as one JSON object on the last line", .flag = &json},
      {.name = "dir", .arg = "D", .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)",
       .value = &dir},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim loadgen",
      .usage = loadgen_usage,
      .description = loadgen_description,
      .opts = opts,
      .examples = "mcim lab up && mcim loadgen --devices 200 --procedure mix\n"
                  "mcim loadgen --devices 1000 --concurrency 32 --procedure change-pristine --json",
      .max_args = 0,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  struct mcim_loadgen_opts o = {.concurrency = 16, .procedure = procedure, .timeout_s = 120};
  char *end = NULL;
  if (!devices)
    return mcim_opts_error(&cmd, "--devices N is required");
  o.devices = strtol(devices, &end, 10);
  if (*end || o.devices < 1 || o.devices > 10000000)
    return mcim_opts_error(&cmd, "--devices wants 1..10000000, got '%s'", devices);
  if (concurrency) {
    long c = strtol(concurrency, &end, 10);
    if (*end || c < 1 || c > 1024)
      return mcim_opts_error(&cmd, "--concurrency wants 1..1024, got '%s'", concurrency);
    o.concurrency = (int)c;
  }
  if (timeout) {
    long t = strtol(timeout, &end, 10);
    if (*end || t < 1 || t > 86400)
      return mcim_opts_error(&cmd, "--timeout wants seconds 1..86400, got '%s'", timeout);
    o.timeout_s = (int)t;
  }
  if (!mcim_loadgen_procedure_valid(procedure))
    return mcim_opts_error(&cmd,
                           "--procedure is initial, change-old-sho, change-pristine, switch or"
                           " mix, not '%s'",
                           procedure);
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s (start one with `mcim lab up`)\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  o.lab_dir = mcim_lab_path(lab);
  o.progress = isatty(STDERR_FILENO) ? stderr : NULL;
  json_t *report = NULL;
  mcim_cause_t rc = mcim_loadgen_run(&o, &report);
  if (rc == MCIM_CONFIG_MISSING)
    fprintf(stderr, "mcim: loadgen: %s (a change or a switch needs two SHOs in the lab)\n",
            mcim_cause_text(rc));
  else if (!report)
    fprintf(stderr, "mcim: loadgen: %s\n", mcim_cause_text(rc));
  if (report && json) {
    json_dumpf(report, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    putchar('\n');
  } else if (report) {
    print_report(report);
  }
  json_decref(report);
  mcim_lab_free(lab);
  return rc == MCIM_OK ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}
