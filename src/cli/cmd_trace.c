/* `mcim trace TXID [--format text|msc|mermaid|svg|json] [-o FILE]`: one procedure as the
 * seed draws it, from what every role and device recorded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/cli.h"
#include "mcim/lab.h"
#include "mcim/opts.h"
#include "mcim/trace.h"

/* svg: mscgen renders our msc (a dependency, not our own renderer). */
static int render_svg(const struct mcim_trace *t, const char *txn, const char *out_path)
{
  char tmp[] = "/tmp/mcim-trace-XXXXXX.msc";
  int fd = mkstemps(tmp, 4);
  if (fd < 0)
    return MCIM_EXIT_FAIL;
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    unlink(tmp);
    return MCIM_EXIT_FAIL;
  }
  mcim_trace_render(t, txn, MCIM_TRACE_MSC, f);
  fclose(f);
  pid_t pid = fork();
  if (pid == 0) {
    execlp("mscgen", "mscgen", "-T", "svg", "-i", tmp, "-o", out_path ? out_path : "-",
           (char *)NULL);
    _exit(127);
  }
  int status = 0;
  if (pid > 0)
    waitpid(pid, &status, 0);
  unlink(tmp);
  if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "mcim trace: mscgen failed (is it installed? scripts/deps.sh)\n");
    return MCIM_EXIT_FAIL;
  }
  return MCIM_EXIT_OK;
}

int mcim_cmd_trace(int argc, char **argv)
{
  const char *format = "text", *out_path = NULL, *dir = NULL;
  const struct mcim_opt opts[] = {
      {.name = "format", .arg = "F", .help = "text (default), msc, mermaid, svg or json",
       .value = &format},
      {.letter = 'o', .arg = "FILE", .help = "write to FILE instead of stdout", .value = &out_path},
      {.name = "dir", .arg = "D", .help = "the lab folder (default $MCIM_LAB, else ./mcim-lab)",
       .value = &dir},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim trace",
      .usage = "mcim trace TXID [--format text|msc|mermaid|svg|json] [-o FILE] [--dir D]",
      .description =
          "Gathers every message of procedure TXID from the lab's roles and devices and draws\n"
          "it: text (numbered lines as the seed writes its steps), msc (mscgen input), svg\n"
          "(rendered by mscgen), mermaid (a sequenceDiagram), json ({txid, events: [{n, from,\n"
          "to, msg, time, body}]}, lab names, bodies with secrets redacted).\n"
          "Charts name the seed's entities, in this order: M2ME subscriber, M2ME, TRE, VNO, RO\n"
          "(the function, ICF, DRF or DPF, starts each message), PVA, old SHO, new SHO, M2MES;\n"
          "an SHO is the new one if the subscriber's order (step 1) went to it. Each arrow\n"
          "carries the seed's step number (\"-\" or none: outside the numbered steps, e.g. an\n"
          "attach); a failed step is marked [FAILED: CAUSE] (red, -x, in msc and svg).",
      .opts = opts,
      .examples = "mcim trace 6f1c...e2 --format text\n"
                  "mcim trace 6f1c...e2 --format svg -o initial.svg\n"
                  "mcim trace 6f1c...e2 --format=mermaid -o initial.mmd",
      .max_args = 1,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.n < 1)
    return mcim_opts_error(&cmd, "missing TXID");
  const char *txn = a.arg[0];
  int fmt = mcim_trace_format_from_name(format);
  if (fmt < 0)
    return mcim_opts_error(&cmd, "--format is text, msc, mermaid, svg or json, not '%s'", format);
  mcim_lab_t *lab = NULL;
  if (mcim_lab_open(mcim_lab_dir(dir), &lab) != MCIM_OK) {
    fprintf(stderr, "mcim: no lab in %s\n", mcim_lab_dir(dir));
    return MCIM_EXIT_FAIL;
  }
  struct mcim_trace t;
  mcim_lab_trace_collect(lab, txn, &t);
  ex = MCIM_EXIT_OK;
  if (t.len == 0) {
    fprintf(stderr, "mcim: no event of procedure %s in this lab\n", txn);
    ex = MCIM_EXIT_FAIL;
  } else if (strcmp(format, "svg") == 0) {
    ex = render_svg(&t, txn, out_path);
  } else {
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
      fprintf(stderr, "mcim: cannot write %s\n", out_path);
      ex = MCIM_EXIT_FAIL;
    } else {
      if (mcim_trace_render(&t, txn, (enum mcim_trace_format)fmt, out) != MCIM_OK)
        ex = MCIM_EXIT_FAIL;
      if (out != stdout)
        fclose(out);
    }
  }
  mcim_trace_free(&t);
  mcim_lab_free(lab);
  return ex;
}
