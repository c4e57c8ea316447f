/* Crash points (include/mcim/crashpoint.h): armed only by MCIM_CRASHPOINT naming this process
 * and a well-formed point; an armed process records the point, then dies of SIGKILL there and
 * nowhere else; list mode records without killing. Each case runs in a child of its own (the
 * variable is read once per process). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/crashpoint.h"

static char record_path[64];

/* The test's recorder: one line per record, flushed before it returns, as the real ones
 * commit their row. */
static void record_line(void *ctx, const char *txn, int step, const char *what)
{
  (void)ctx;
  FILE *f = fopen(record_path, "a");
  if (!f)
    return;
  fprintf(f, "%s|%d|%s\n", txn, step, what);
  fclose(f);
}

static char *records(void)
{
  static char buf[4096];
  FILE *f = fopen(record_path, "r");
  size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
  buf[n] = '\0';
  if (f)
    fclose(f);
  return buf;
}

/* Runs the hooks of a request in a child armed with `env` as process `self`; returns its wait
 * status. The child notes txn t1 at step 9, then reaches five points. */
static int child_run(const char *env, const char *self)
{
  snprintf(record_path, sizeof(record_path), "/tmp/test_crashpoint.%d", (int)getpid());
  unlink(record_path);
  pid_t pid = fork();
  if (pid == 0) {
    if (env)
      setenv("MCIM_CRASHPOINT", env, 1);
    else
      unsetenv("MCIM_CRASHPOINT");
    mcim_crashpoint_init(self, record_line, NULL);
    mcim_crashpoint_init("other", record_line, NULL); /* read once: ignored */
    mcim_crashpoint_begin();
    mcim_crashpoint_note("t1", 9);
    mcim_crashpoint_note("t1", 8); /* the highest step of the exchange stays */
    mcim_crashpoint_at(MCIM_CRASH_BEFORE_ANSWER, "POST /v1/reports", NULL, -1);
    mcim_crashpoint_at(MCIM_CRASH_AFTER_SEND, "POST /v1/reports", "t2", 13);
    mcim_crashpoint_at(MCIM_CRASH_AFTER_SEND, "receipt", "t3", 9);
    mcim_crashpoint_at(MCIM_CRASH_BEFORE_TRE, "install", "t4", 14);
    mcim_crashpoint_at(MCIM_CRASH_AFTER_TRE, "install", "t4", 14);
    _exit(mcim_crashpoint_armed() ? 3 : 0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

static bool killed(int st)
{
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

static void test_unarmed(void **state)
{
  (void)state;
  /* unset, another process's name, a malformed point: never armed, nothing recorded */
  const char *envs[] = {NULL,
                        "",
                        "sho-b:POST /v1/reports:after-send",
                        "sho:POST /v1/reports:after-send",
                        "sho-a-x:receipt:after-send",
                        "sho-a:POST /v1/reports:before-send",
                        "sho-a:POST /v1/reports",
                        "sho-a::after-send",
                        "sho-a",
                        "sho-a:install:during-tre",
                        "sho-a:install:after-tre:",
                        "sho-a:install:"};
  for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
    int st = child_run(envs[i], "sho-a");
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_string_equal(records(), "");
  }
  unlink(record_path);
}

static void test_fires_where_named(void **state)
{
  (void)state;
  /* before-answer: the noted txn and step */
  int st = child_run("sho-a:POST /v1/reports:before-answer", "sho-a");
  assert_true(killed(st));
  assert_string_equal(records(), "t1|9|POST /v1/reports before-answer: SIGKILL\n");
  /* after-send of the same route: the first two hooks pass, the second kills */
  st = child_run("sho-a:POST /v1/reports:after-send", "sho-a");
  assert_true(killed(st));
  assert_string_equal(records(), "t2|13|POST /v1/reports after-send: SIGKILL\n");
  /* an agent's stage */
  st = child_run("dev1:receipt:after-send", "dev1");
  assert_true(killed(st));
  assert_string_equal(records(), "t3|9|receipt after-send: SIGKILL\n");
  /* an agent's TRE operation: before it, and (another run) after it, each where named */
  st = child_run("dev1:install:before-tre", "dev1");
  assert_true(killed(st));
  assert_string_equal(records(), "t4|14|install before-tre: SIGKILL\n");
  st = child_run("dev1:install:after-tre", "dev1");
  assert_true(killed(st));
  assert_string_equal(records(), "t4|14|install after-tre: SIGKILL\n");
  /* the TRE points of another stage, and the after-send of this one, are other points */
  st = child_run("dev1:discard:after-tre", "dev1");
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 3);
  st = child_run("dev1:install:after-send", "dev1");
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 3);
  assert_string_equal(records(), "");
  /* armed for a point never reached: lives */
  st = child_run("dev1:release:after-send", "dev1");
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 3);
  assert_string_equal(records(), "");
  unlink(record_path);
}

static void test_list(void **state)
{
  (void)state;
  int st = child_run("list", "ro");
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 3);
  assert_string_equal(records(), "t1|9|candidate: POST /v1/reports before-answer\n"
                                 "t2|13|candidate: POST /v1/reports after-send\n"
                                 "t3|9|candidate: receipt after-send\n"
                                 "t4|14|candidate: install before-tre\n"
                                 "t4|14|candidate: install after-tre\n");
  unlink(record_path);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unarmed),
      cmocka_unit_test(test_fires_where_named),
      cmocka_unit_test(test_list),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
