/* The lab's programs and processes: where they are (the lab folder, the bin folder, the TPM
 * agent, a program by name), how long to wait (MCIM_TIME_SCALE), free ports, a JSON file
 * written whole, and the daemons' processes started, recognised (also under valgrind) and
 * stopped. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "lab/lab_priv.h"
#include "mcim/util.h"

const char *mcim_lab_dir(const char *opt_dir)
{
  if (opt_dir && *opt_dir)
    return opt_dir;
  const char *env = getenv("MCIM_LAB");
  return env && *env ? env : MCIM_LAB_DEFAULT_DIR;
}

const char *mcim_lab_bindir(void)
{
  static char dir[PATH_MAX];
  const char *env = getenv("MCIM_BIN");
  if (env && *env)
    return env;
  ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
  if (n <= 0)
    return ".";
  dir[n] = '\0';
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  return dir;
}

int mcim_lab_time_scale(void)
{
  const char *env = getenv("MCIM_TIME_SCALE");
  char *end = NULL;
  long n = env ? strtol(env, &end, 10) : 1;
  if (env && (end == env || *end != '\0'))
    return 1; /* not a number: as unset */
  return n >= 1 && n <= 100 ? (int)n : 1;
}

const char *mcim_lab_find_program(const char *name, const char *const *fixed, char *out,
                                  size_t outlen)
{
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof(buf), "%s", path ? path : "");
  for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(out, outlen, "%s/%s", d, name);
    if (d[0] == '/' && access(out, X_OK) == 0)
      return out;
  }
  for (size_t i = 0; fixed && fixed[i]; i++) {
    snprintf(out, outlen, "%s/%s", fixed[i], name);
    if (access(out, X_OK) == 0)
      return out;
  }
  return NULL;
}

mcim_cause_t mcim_lab_join(char *out, size_t n, const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la + lb + 1 > n) {
    if (n)
      out[0] = '\0';
    return MCIM_TOO_LARGE;
  }
  memcpy(out, a, la);
  memcpy(out + la, b, lb + 1);
  return MCIM_OK;
}

void mcim_lab_sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

int mcim_lab_free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int port = -1;
  if (fd < 0)
    return -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

mcim_cause_t mcim_lab_write_json(const char *path, const json_t *j, int mode)
{
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
    return MCIM_TOO_LARGE;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0)
    return MCIM_IO_ERROR;
  char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  mcim_cause_t rc = MCIM_IO_ERROR;
  if (text) {
    size_t n = strlen(text);
    if (write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
      rc = MCIM_OK;
    free(text);
  }
  close(fd);
  if (rc == MCIM_OK && rename(tmp, path) != 0)
    rc = MCIM_IO_ERROR;
  if (rc != MCIM_OK)
    unlink(tmp);
  return rc;
}

static const char *base_name(const char *path)
{
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* The whole of /proc/PID/NAME (at most len - 1 bytes) into buf, NUL-terminated: its length,
 * or -1 if it cannot be opened. Async-signal-safe (open, read, close; no stdio). */
static ssize_t read_proc(long pid, const char *name, char *buf, size_t len)
{
  char path[64] = "/proc/", digits[24];
  size_t nd = 0, at = strlen(path);
  for (unsigned long v = (unsigned long)pid; nd == 0 || v; v /= 10)
    digits[nd++] = (char)('0' + v % 10);
  while (nd)
    path[at++] = digits[--nd];
  path[at++] = '/';
  memcpy(path + at, name, strlen(name) + 1); /* "stat" or "cmdline": it fits */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  size_t n = 0;
  while (n < len - 1) {
    ssize_t r = read(fd, buf + n, len - 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  return (ssize_t)n;
}

/* Does `pid` still run `prog`? 1: itself; 2: under valgrind (scripts/valgrind.sh starts the
 * daemons and agents under memcheck: the command line is valgrind, its options, then the
 * program); 0: gone, a zombie, or a pid reused by another program (after a reboot), which is
 * never signalled. Async-signal-safe, for mcim_lab_stop_pids. */
static int pid_runs(long pid, const char *prog)
{
  char buf[4096];
  if (pid <= 0)
    return 0;
  if (read_proc(pid, "stat", buf, sizeof(buf)) < 0)
    return 0;
  const char *rp = strrchr(buf, ')');
  if (!rp || rp[1] != ' ' || rp[2] == 'Z' || rp[2] == 'X')
    return 0; /* gone, or a zombie waiting for its parent */
  ssize_t got = read_proc(pid, "cmdline", buf, sizeof(buf));
  if (got < 0)
    return 0;
  size_t n = (size_t)got;
  const char *arg0 = base_name(buf);
  if (strcmp(arg0, prog) == 0)
    return 1;
  if (strcmp(arg0, "valgrind") != 0 && strcmp(arg0, "valgrind.bin") != 0)
    return 0;
  for (const char *a = buf + strlen(buf) + 1; a < buf + n; a += strlen(a) + 1)
    if (*a != '-') /* valgrind's options are one word each: the first other is the program */
      return strcmp(base_name(a), prog) == 0 ? 2 : 0;
  return 0;
}

/* Is `pid` one of ours still running? Checks the command name so that a pid reused by an
 * unrelated process after a reboot is never signalled. */
bool mcim_lab_pid_alive(long pid, const char *prog)
{
  return pid_runs(pid, prog) != 0;
}

long mcim_lab_spawn(char *const argv[], const char *log_path)
{
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    setsid(); /* the daemon outlives the command that started it */
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int null = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (null >= 0)
      dup2(null, 0);
    for (int i = 3; i < 1024; i++)
      close(i);
    execv(argv[0], argv);
    dprintf(2, "cannot start %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

/* Whether `pid` has ended for mcim_lab_stop_pids (reaped first if it is our child). */
static bool stop_gone(pid_t pid, const char *prog)
{
  if (!prog) /* a zombie that is not our child still answers kill(0): not gone */
    return waitpid(pid, NULL, WNOHANG) == pid || (kill(pid, 0) != 0 && errno == ESRCH);
  (void)waitpid(pid, NULL, WNOHANG);
  return pid_runs(pid, prog) == 0; /* a zombie is gone here */
}

/* Has pids[i] ended? One seen gone is not looked at again (gone[i]): once reaped here, its
 * pid may be given to another process within the bound, which would then count as "not
 * gone" and get the SIGKILL (without `prog` nothing else tells them apart). */
static bool stop_gone_once(const pid_t *pids, bool *gone, size_t i, const char *prog)
{
  if (!gone[i])
    gone[i] = stop_gone(pids[i], prog);
  return gone[i];
}

void mcim_lab_stop_pids(const pid_t *pids, bool *gone, size_t n, const char *prog, int wait_ms)
{
  for (size_t i = 0; i < n; i++) {
    gone[i] = false;
    if (pids[i] > 0)
      kill(pids[i], SIGTERM);
  }
  for (int round = 0; round < wait_ms / 50; round++) {
    size_t left = 0;
    for (size_t i = 0; i < n; i++)
      if (pids[i] > 0 && !stop_gone_once(pids, gone, i, prog))
        left++;
    if (!left)
      break;
    mcim_lab_sleep_ms(50);
  }
  for (size_t i = 0; i < n; i++)
    if (pids[i] > 0 && !stop_gone_once(pids, gone, i, prog)) {
      kill(pids[i], SIGKILL);
      (void)waitpid(pids[i], NULL, WNOHANG); /* reap if it is our child and already gone */
    }
}

void mcim_lab_stop_pid(long pid, const char *prog)
{
  int runs = pid_runs(pid, prog);
  if (!runs)
    return;
  /* 5 s; under valgrind 120 s: its leak check at the exit takes seconds, and a SIGKILL
   * would lose the report scripts/valgrind.sh reads */
  const pid_t one = (pid_t)pid;
  bool gone;
  mcim_lab_stop_pids(&one, &gone, 1, prog, runs == 2 ? 120000 : 5000);
}
