/* The lab's stop (src/lab/process.c): mcim_lab_stop_pids, which `lab down` (through
 * mcim_lab_stop_pid) and `mcim demo`'s Ctrl-C handler share: SIGTERM to each pid, up to wait_ms
 * for them to end, then SIGKILL to those left. Children of this program that end on SIGTERM
 * and that ignore it, alone and several at once, and entries <= 0; through mcim_lab_stop_pid,
 * /bin/sleep under the right and a wrong program name, and ignoring SIGTERM (the 5 s bound).
 *
 * kill is wrapped (-Wl,--wrap=kill, tests/CMakeLists.txt): every signal the stop sends is
 * recorded, and one to a pid <= 0 is never forwarded: run as root, kill(-1) would reach every
 * process of the machine, and kill(0) would reach this program's group. waitpid is wrapped
 * too: a pid the stop reaped must not be signalled or probed again (it may be reused). Both
 * also simulate pids that no process can have (from FAKE_BASE): 300 at once, past the 256
 * that the stop once remembered as gone (in a fixed bitmap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/lab.h"

/* ---- kill, recorded ---- */

struct sent {
  pid_t pid;
  int sig;
};

static struct sent sent_log[64];
static size_t nsent;            /* signals other than 0 (kill(pid, 0) is a probe) */
static size_t sent_nonpositive; /* calls of any signal to a pid <= 0: never forwarded */

/* Any kill (a probe included) of a pid after the routine's own waitpid reaped it: once
 * reaped, the pid may belong to another process (pid reuse), which must not be touched. */
static size_t after_reap;
static pid_t reaped_log[64];
static size_t nreaped;

/* ---- simulated processes: pids FAKE_BASE.. (above PID_MAX_LIMIT, 2^22: never a real one),
 * never passed to the real kill or waitpid ---- */

#define FAKE_BASE ((pid_t)0x40000000)
#define NFAKE 300

enum fake_state {
  FAKE_RUNNING,
  FAKE_ZOMBIE, /* our child, ended, not reaped: still answers kill(pid, 0) */
  FAKE_ENDED,  /* not our child, ended: kill(pid, 0) says ESRCH once */
  FAKE_REUSED, /* seen gone by the stop, and at once given to an unrelated process */
};

struct fake {
  bool child;        /* waitpid reaps it; else ECHILD */
  bool ends_on_term; /* else it ignores SIGTERM */
  enum fake_state state;
  int nterm, nkill;
  int touched_after_gone; /* any kill (a probe included) once the stop saw it gone */
};

static struct fake fakes[NFAKE];

static struct fake *fake_of(pid_t pid)
{
  return pid >= FAKE_BASE && pid < FAKE_BASE + NFAKE ? &fakes[pid - FAKE_BASE] : NULL;
}

static int fake_kill(struct fake *f, int sig)
{
  if (f->state == FAKE_REUSED) {
    f->touched_after_gone++;
    return 0; /* the unrelated process is there */
  }
  if (sig == SIGTERM)
    f->nterm++;
  if (sig == SIGKILL)
    f->nkill++;
  if (f->state == FAKE_ENDED && sig == 0) {
    f->state = FAKE_REUSED;
    errno = ESRCH;
    return -1;
  }
  if (f->state == FAKE_RUNNING && (sig == SIGKILL || (sig == SIGTERM && f->ends_on_term)))
    f->state = f->child ? FAKE_ZOMBIE : FAKE_ENDED;
  return 0;
}

static pid_t fake_waitpid(pid_t pid, struct fake *f, int options)
{
  if (!f->child || f->state == FAKE_REUSED) {
    errno = ECHILD;
    return -1;
  }
  assert_true(options & WNOHANG); /* a blocking wait for a fake would never end */
  if (f->state != FAKE_ZOMBIE)
    return 0;
  f->state = FAKE_REUSED;
  return pid;
}

/* The names ld's --wrap gives: reserved, but not ours to choose. */
/* NOLINTBEGIN(bugprone-reserved-identifier) */
int __real_kill(pid_t pid, int sig);
int __wrap_kill(pid_t pid, int sig);
pid_t __real_waitpid(pid_t pid, int *status, int options);
pid_t __wrap_waitpid(pid_t pid, int *status, int options);
/* NOLINTEND(bugprone-reserved-identifier) */

int __wrap_kill(pid_t pid, int sig)
{
  if (pid <= 0) {
    sent_nonpositive++;
    errno = EPERM;
    return -1;
  }
  struct fake *f = fake_of(pid);
  if (f)
    return fake_kill(f, sig);
  for (size_t i = 0; i < nreaped; i++)
    if (reaped_log[i] == pid)
      after_reap++;
  if (sig != 0 && nsent < sizeof(sent_log) / sizeof(sent_log[0]))
    sent_log[nsent++] = (struct sent){pid, sig};
  return __real_kill(pid, sig);
}

pid_t __wrap_waitpid(pid_t pid, int *status, int options)
{
  struct fake *f = fake_of(pid);
  if (f)
    return fake_waitpid(pid, f, options);
  pid_t r = __real_waitpid(pid, status, options);
  if (r > 0 && nreaped < sizeof(reaped_log) / sizeof(reaped_log[0]))
    reaped_log[nreaped++] = r;
  return r;
}

static void sent_reset(void)
{
  nsent = 0;
  sent_nonpositive = 0;
  nreaped = 0;
  after_reap = 0;
}

/* How many times `sig` was sent to `pid` since sent_reset. */
static int sent_count(pid_t pid, int sig)
{
  int n = 0;
  for (size_t i = 0; i < nsent; i++)
    if (sent_log[i].pid == pid && sent_log[i].sig == sig)
      n++;
  return n;
}

/* ---- children ---- */

static pid_t children[16];
static size_t nchildren;

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_term(int sig)
{
  (void)sig;
  _exit(0);
}

/* The child's signals as a fresh program's (what cmocka or the parent set is not inherited),
 * and its end with this program's (a failed assertion leaves nothing running). */
static void child_signals(void)
{
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGTERM, SIG_DFL);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* A child of ours that ends on SIGTERM (its handler: _exit(0)) or ignores it (SIG_IGN), and
 * otherwise waits for signals; returned once it has set that up (it says so on a pipe). */
static pid_t spawn_waiter(bool ignore_term)
{
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_signals();
    struct sigaction sa = {.sa_handler = ignore_term ? SIG_IGN : on_term};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || write(fds[1], "r", 1) != 1)
      _exit(127);
    for (;;)
      pause();
  }
  close(fds[1]);
  children[nchildren++] = pid;
  char c = 0;
  assert_int_equal(read(fds[0], &c, 1), 1);
  close(fds[0]);
  return pid;
}

/* /bin/sleep 60 (program name "sleep"), ignoring SIGTERM or not; returned once it runs sleep:
 * the write end of the pipe is close-on-exec, so the read sees its end at the execve (an
 * execve that fails writes its errno first). */
static pid_t spawn_sleep(bool ignore_term)
{
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  assert_int_equal(fcntl(fds[1], F_SETFD, FD_CLOEXEC), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_signals();
    if (ignore_term)
      signal(SIGTERM, SIG_IGN); /* kept across execve */
    execl("/bin/sleep", "/bin/sleep", "60", (char *)NULL);
    int err = errno;
    ssize_t w = write(fds[1], &err, sizeof(err));
    (void)w;
    _exit(127);
  }
  close(fds[1]);
  children[nchildren++] = pid;
  int err = 0;
  ssize_t got;
  while ((got = read(fds[0], &err, sizeof(err))) < 0 && errno == EINTR)
    ;
  close(fds[0]);
  assert_int_equal(got, 0); /* EOF: the execve happened */
  return pid;
}

/* The child has ended and been reaped by the stop: not our child any more. */
static void assert_reaped(pid_t pid)
{
  errno = 0;
  assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

/* The child has ended by `sig`: a zombie left to us (its status says which signal), or reaped
 * by the stop. */
static void assert_ended_by(pid_t pid, int sig)
{
  int status = 0;
  pid_t got = waitpid(pid, &status, 0);
  if (got == -1) {
    assert_int_equal(errno, ECHILD);
    return;
  }
  assert_int_equal(got, pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), sig);
}

/* Still running: not ended (waitpid: our child, no status) and answering kill(pid, 0). */
static void assert_running(pid_t pid)
{
  assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
  assert_int_equal(kill(pid, 0), 0);
}

/* Whatever a case left running is killed and reaped. Only a pid that waitpid says is still
 * an unreaped child of ours is signalled (one the stop reaped may have been reused). */
static int teardown(void **state)
{
  (void)state;
  for (size_t i = 0; i < nchildren; i++) {
    if (waitpid(children[i], NULL, WNOHANG) == 0) {
      kill(children[i], SIGKILL);
      waitpid(children[i], NULL, 0);
    }
  }
  nchildren = 0;
  return 0;
}

/* ---- mcim_lab_stop_pids (prog NULL: as `mcim demo`'s Ctrl-C handler) ---- */

/* A child ending on SIGTERM: stopped by it, reaped, well before the bound. */
static void test_term_child_stopped(void **state)
{
  (void)state;
  pid_t pid = spawn_waiter(false);
  sent_reset();
  bool gone;
  int64_t t0 = now_ms();
  mcim_lab_stop_pids(&pid, &gone, 1, NULL, 5000);
  int64_t took = now_ms() - t0;
  assert_reaped(pid);
  assert_int_equal(sent_count(pid, SIGTERM), 1);
  assert_int_equal(sent_count(pid, SIGKILL), 0);
  assert_true(took < 4000); /* not the whole bound: the slack is for a loaded machine */
}

/* A child ignoring SIGTERM: SIGKILL once wait_ms has passed, and it ends by it. */
static void test_ignoring_child_killed(void **state)
{
  (void)state;
  pid_t pid = spawn_waiter(true);
  sent_reset();
  bool gone;
  int64_t t0 = now_ms();
  mcim_lab_stop_pids(&pid, &gone, 1, NULL, 300);
  int64_t took = now_ms() - t0;
  assert_int_equal(sent_count(pid, SIGTERM), 1);
  assert_int_equal(sent_count(pid, SIGKILL), 1);
  assert_true(took >= 300);
  assert_true(took < 300 + 3000);
  assert_ended_by(pid, SIGKILL);
}

/* Three ignoring and two ending children at once: all ended within about one bound (the
 * three ignoring ones waited for together, not one bound each). */
static void test_several_at_once(void **state)
{
  (void)state;
  pid_t pids[5];
  for (int i = 0; i < 5; i++)
    pids[i] = spawn_waiter(i % 2 == 0);
  sent_reset();
  bool gone[5];
  int64_t t0 = now_ms();
  mcim_lab_stop_pids(pids, gone, 5, NULL, 1000);
  int64_t took = now_ms() - t0;
  assert_true(took >= 1000);
  assert_true(took < 3 * 1000); /* one bound each would be 3 s at least */
  /* the two ending children were reaped in the first rounds; the others' second of waiting
   * probed them no more */
  assert_int_equal(after_reap, 0);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(sent_count(pids[i], SIGTERM), 1);
    assert_int_equal(gone[i], i % 2 != 0);
    if (i % 2 == 0) {
      assert_int_equal(sent_count(pids[i], SIGKILL), 1);
      assert_ended_by(pids[i], SIGKILL);
    } else {
      assert_int_equal(sent_count(pids[i], SIGKILL), 0);
      assert_reaped(pids[i]);
    }
  }
}

/* Entries <= 0 (this process's group: 0; every process: -1; a group: -pgid) get no signal,
 * not even a probe, and are not waited for; a real pid among them is stopped. */
static void test_nonpositive_ignored(void **state)
{
  (void)state;
  pid_t only[] = {0, -1, -getpgrp()};
  sent_reset();
  bool gone[4];
  int64_t t0 = now_ms();
  mcim_lab_stop_pids(only, gone, 3, NULL, 5000);
  assert_true(now_ms() - t0 < 4000); /* not waited for: the bound is 5 s */
  assert_int_equal(sent_nonpositive, 0);
  assert_int_equal(nsent, 0);

  pid_t pid = spawn_waiter(false);
  pid_t mixed[] = {0, pid, -1, -getpgrp()};
  sent_reset();
  mcim_lab_stop_pids(mixed, gone, 4, NULL, 2000);
  assert_int_equal(sent_nonpositive, 0);
  assert_int_equal(nsent, 1);
  assert_int_equal(sent_count(pid, SIGTERM), 1);
  assert_reaped(pid);

  /* mcim_lab_stop_pid too, with this program's own name */
  sent_reset();
  mcim_lab_stop_pid(0, "test_lab_stop");
  mcim_lab_stop_pid(-1, "test_lab_stop");
  assert_int_equal(sent_nonpositive, 0);
  assert_int_equal(nsent, 0);
}

/* 300 pids at once: each seen gone (reaped, or ESRCH) is at once given to an unrelated
 * process, the worst case of pid reuse. Those that ended on SIGTERM, at entries before and
 * past the 256th, are never probed nor signalled again, so not SIGKILLed; the others get
 * SIGKILL after one bound for all of them. */
static void test_many_pids_gone_not_signalled(void **state)
{
  (void)state;
  static pid_t pids[NFAKE];
  static bool gone[NFAKE];
  static const size_t ending[] = {10, 20, 280, 290, 299}; /* 10, 280, 299: children */
  memset(fakes, 0, sizeof(fakes));
  for (size_t i = 0; i < NFAKE; i++) {
    pids[i] = FAKE_BASE + (pid_t)i;
    fakes[i].child = true;
  }
  for (size_t k = 0; k < sizeof(ending) / sizeof(ending[0]); k++)
    fakes[ending[k]].ends_on_term = true;
  fakes[20].child = false;
  fakes[290].child = false;
  sent_reset();
  int64_t t0 = now_ms();
  mcim_lab_stop_pids(pids, gone, NFAKE, NULL, 200);
  int64_t took = now_ms() - t0;
  assert_true(took >= 200);
  assert_true(took < 200 + 3000);
  assert_int_equal(sent_nonpositive, 0);
  for (size_t i = 0; i < NFAKE; i++) {
    if (fakes[i].touched_after_gone)
      fail_msg("entry %zu: %d kill(s) after it was seen gone", i, fakes[i].touched_after_gone);
    assert_int_equal(fakes[i].nterm, 1);
    assert_int_equal(fakes[i].nkill, fakes[i].ends_on_term ? 0 : 1);
    assert_int_equal(gone[i], fakes[i].ends_on_term);
    assert_int_equal(fakes[i].state, FAKE_REUSED); /* the SIGKILLed ones reaped after it */
  }
}

/* ---- mcim_lab_stop_pid (`lab down`: a pid and its program's name) ---- */

/* A name that is not the program's (/proc/PID/cmdline's first word, its base name): nothing
 * is sent, the process runs on. The name it runs under: stopped by SIGTERM. */
static void test_stop_pid_by_name(void **state)
{
  (void)state;
  pid_t pid = spawn_sleep(false);
  sent_reset();
  mcim_lab_stop_pid(pid, "sleepy");
  mcim_lab_stop_pid(pid, "slee");
  mcim_lab_stop_pid(pid, "/bin/sleep");
  mcim_lab_stop_pid(pid, "test_lab_stop");
  assert_int_equal(nsent, 0);
  assert_running(pid);

  int64_t t0 = now_ms();
  mcim_lab_stop_pid(pid, "sleep");
  int64_t took = now_ms() - t0;
  assert_int_equal(sent_count(pid, SIGTERM), 1);
  assert_int_equal(sent_count(pid, SIGKILL), 0);
  assert_true(took < 2500); /* the bound is 5 s */
  assert_ended_by(pid, SIGTERM);
}

/* The program ignores SIGTERM: SIGKILL after mcim_lab_stop_pid's 5 s. */
static void test_stop_pid_kills_after_bound(void **state)
{
  (void)state;
  pid_t pid = spawn_sleep(true);
  sent_reset();
  int64_t t0 = now_ms();
  mcim_lab_stop_pid(pid, "sleep");
  int64_t took = now_ms() - t0;
  assert_int_equal(sent_count(pid, SIGTERM), 1);
  assert_int_equal(sent_count(pid, SIGKILL), 1);
  assert_true(took >= 5000);
  assert_true(took < 5000 + 2000);
  assert_ended_by(pid, SIGKILL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_term_child_stopped, teardown),
      cmocka_unit_test_teardown(test_ignoring_child_killed, teardown),
      cmocka_unit_test_teardown(test_several_at_once, teardown),
      cmocka_unit_test_teardown(test_nonpositive_ignored, teardown),
      cmocka_unit_test_teardown(test_many_pids_gone_not_signalled, teardown),
      cmocka_unit_test_teardown(test_stop_pid_by_name, teardown),
      cmocka_unit_test_teardown(test_stop_pid_kills_after_bound, teardown),
  };
  return cmocka_run_group_tests_name("lab stop", tests, NULL, NULL);
}
