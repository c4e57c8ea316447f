/* A throw-away swtpm (tpm.h): the TPM 2.0 simulator that stands in for the chip in the lab and
 * in tests.
 *
 * swtpm 0.7.1 listens itself: its `--server fd=` takes a connected socket, not a listening
 * one, so we cannot bind the ports and hand them over. We find a free pair (P for commands,
 * P+1 for the control channel: the swtpm TCTI always uses port+1 for it), start swtpm on
 * them, and poll until its control channel answers CMD_GET_CAPABILITY (and the data port
 * accepts), with a deadline; never a fixed sleep. If swtpm exits first (the pair was taken
 * meanwhile), it is started again on another pair. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mcim/util.h"
#include "tre/tpm/tpm.h"

enum {
  PORT_PICKS = 64, /* tries at a free pair of ports */
  STARTS = 3,      /* swtpm starts when one exits before it is ready */
  POLL_MS = 5,     /* between two readiness probes */
  STOP_MS = 5000,  /* SIGTERM, then SIGKILL */
  CMD_GET_CAP = 1, /* swtpm control channel: CMD_GET_CAPABILITY */
};

struct mcim_swtpm {
  pid_t pid;
  uint16_t port;
  char tcti[64];
};

static int64_t now_ms(void)
{
  return (int64_t)(mcim_monotonic_ns() / 1000000u);
}

static void sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* The absolute path of `prog` on PATH, or false. */
static bool find_prog(const char *prog, char *out, size_t len)
{
  const char *path = getenv("PATH");
  char *copy = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
  bool found = false;

  if (!copy)
    return false;
  for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
       dir = strtok_r(NULL, ":", &save)) {
    if ((size_t)snprintf(out, len, "%s/%s", *dir ? dir : ".", prog) < len && access(out, X_OK) == 0)
      found = true;
  }
  free(copy);
  return found;
}

static int bind_loopback(uint16_t port, uint16_t *bound)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  socklen_t alen = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
    close(fd);
    return -1;
  }
  if (bound)
    *bound = ntohs(a.sin_port);
  return fd;
}

/* A port P with P and P+1 both free on loopback right now; 0 if none was found. */
static uint16_t pick_ports(void)
{
  for (int i = 0; i < PORT_PICKS; i++) {
    uint16_t p = 0;
    int a = bind_loopback(0, &p), b = -1;
    if (a >= 0 && p > 0 && p < 65535)
      b = bind_loopback((uint16_t)(p + 1), NULL);
    if (a >= 0)
      close(a);
    if (b >= 0) {
      close(b);
      return p;
    }
  }
  return 0;
}

static int connect_loopback(uint16_t port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Does swtpm serve? Its control channel answers CMD_GET_CAPABILITY with result 0 within
 * `wait_ms`, and its data port accepts a connection. */
static bool ready(uint16_t port, int wait_ms)
{
  uint8_t cmd[4] = {0, 0, 0, CMD_GET_CAP}, rsp[8];
  size_t got = 0;
  bool ok = false;
  int fd = connect_loopback((uint16_t)(port + 1));

  if (fd < 0)
    return false;
  if (write(fd, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
    goto cleanup;
  while (got < sizeof(rsp)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
      goto cleanup;
    ssize_t n = read(fd, rsp + got, sizeof(rsp) - got);
    if (n <= 0)
      goto cleanup;
    got += (size_t)n;
  }
  if (rsp[0] || rsp[1] || rsp[2] || rsp[3])
    goto cleanup;
  close(fd);
  fd = connect_loopback(port);
  ok = fd >= 0;
cleanup:
  if (fd >= 0)
    close(fd);
  return ok;
}

/* The first line of swtpm's error output, for the detail. */
static void first_line(const char *path, char *out, size_t len)
{
  FILE *f = fopen(path, "r");
  out[0] = '\0';
  if (!f)
    return;
  if (fgets(out, (int)len, f))
    out[strcspn(out, "\n")] = '\0';
  fclose(f);
}

/* Wait for `pid` up to `ms`; true if it is gone (reaped). */
static bool reap(pid_t pid, int ms, int *status)
{
  int64_t deadline = now_ms() + ms;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD))
      return true;
    if (now_ms() >= deadline)
      return false;
    sleep_ms(POLL_MS);
  }
}

static void stop_pid(pid_t pid)
{
  int status = 0;
  if (pid <= 0)
    return;
  kill(pid, SIGTERM);
  if (!reap(pid, STOP_MS, &status)) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
  }
}

/* One start on a fresh pair of ports. MCIM_CONFLICT: it exited before it was ready (retry). */
static mcim_cause_t start_once(const char *swtpm, const char *dir, unsigned flags, int64_t deadline,
                               struct mcim_swtpm *s, char *detail, size_t detail_len)
{
  char server[64], ctrl[64], state[4096 + 16], log[4096 + 32], err[4096 + 16], line[200];
  uint16_t port = pick_ports();
  pid_t parent = getpid(), pid;
  int status = 0;

  if (port == 0) {
    mcim_detailf(detail, detail_len, "no free pair of loopback ports for swtpm");
    return MCIM_IO_ERROR;
  }
  snprintf(server, sizeof(server), "type=tcp,port=%u,bindaddr=127.0.0.1", (unsigned)port);
  snprintf(ctrl, sizeof(ctrl), "type=tcp,port=%u,bindaddr=127.0.0.1", (unsigned)port + 1);
  /* The log at level 1 (errors). Level 2 and up dump every command and response, the
   * duplication blobs and Milenage's blocks included: never in a lab whose logs are kept. */
  if ((size_t)snprintf(state, sizeof(state), "dir=%s", dir) >= sizeof(state) ||
      (size_t)snprintf(log, sizeof(log), "file=%s/swtpm.log,level=1", dir) >= sizeof(log) ||
      (size_t)snprintf(err, sizeof(err), "%s/swtpm.err", dir) >= sizeof(err)) {
    mcim_detailf(detail, detail_len, "state directory path too long");
    return MCIM_INVALID_ARGUMENT;
  }
  char *const argv[] = {(char *)swtpm,
                        "socket",
                        "--tpm2",
                        "--server",
                        server,
                        "--ctrl",
                        ctrl,
                        "--tpmstate",
                        state,
                        "--flags",
                        "not-need-init,startup-clear",
                        "--log",
                        log,
                        NULL};

  pid = fork();
  if (pid < 0) {
    mcim_detailf(detail, detail_len, "fork: %s", strerror(errno));
    return MCIM_IO_ERROR;
  }
  if (pid == 0) { /* the child: async-signal-safe calls only, then exec */
    if ((flags & MCIM_SWTPM_TIED) && (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent))
      _exit(126);
    if ((flags & MCIM_SWTPM_DETACHED) && setsid() < 0)
      _exit(126);
    int in = open("/dev/null", O_RDONLY);
    int out = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
      _exit(126);
    /* a long-lived swtpm keeps nothing of its starter's open (a pipe someone waits on) */
    for (int fd = 3; (flags & MCIM_SWTPM_DETACHED) && fd < 1024; fd++)
      close(fd);
    execv(swtpm, argv);
    _exit(127);
  }

  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      first_line(err, line, sizeof(line));
      mcim_detailf(detail, detail_len, "swtpm exited (status %d) before it was ready: %s",
                   WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                   line[0] ? line : "(no output)");
      return MCIM_CONFLICT;
    }
    int64_t left = deadline - now_ms();
    if (ready(port, (int)(left > 1000 ? 1000 : left > 0 ? left : 1))) {
      s->pid = pid;
      s->port = port;
      snprintf(s->tcti, sizeof(s->tcti), "swtpm:host=127.0.0.1,port=%u", (unsigned)port);
      return MCIM_OK;
    }
    if (now_ms() >= deadline) {
      stop_pid(pid);
      mcim_detailf(detail, detail_len, "swtpm on port %u not ready in time", (unsigned)port);
      return MCIM_TIMEOUT;
    }
    sleep_ms(POLL_MS);
  }
}

mcim_cause_t mcim_swtpm_start(const char *state_dir, unsigned flags, int timeout_ms,
                              mcim_swtpm_t **out, char *detail, size_t detail_len)
{
  char swtpm[4096];
  struct mcim_swtpm *s = NULL;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;
  int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);

  mcim_detailf(detail, detail_len, "%s", "");
  if (!out || !state_dir || !*state_dir)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (!find_prog("swtpm", swtpm, sizeof(swtpm))) {
    mcim_detailf(detail, detail_len,
                 "swtpm not found on PATH (Debian package swtpm; scripts/deps.sh installs it)");
    return MCIM_NOT_FOUND;
  }
  s = calloc(1, sizeof(*s));
  if (!s)
    return MCIM_NO_MEMORY;
  for (int i = 0; i < STARTS; i++) {
    rc = start_once(swtpm, state_dir, flags, deadline, s, detail, detail_len);
    if (rc != MCIM_CONFLICT)
      break;
  }
  if (rc == MCIM_CONFLICT)
    rc = MCIM_IO_ERROR; /* exited every time: the detail has its last words */
  if (rc != MCIM_OK)
    goto cleanup;
  *out = s;
  s = NULL;
cleanup:
  free(s);
  return rc;
}

const char *mcim_swtpm_tcti(const mcim_swtpm_t *s)
{
  return s ? s->tcti : "";
}

uint16_t mcim_swtpm_port(const mcim_swtpm_t *s)
{
  return s ? s->port : 0;
}

pid_t mcim_swtpm_pid(const mcim_swtpm_t *s)
{
  return s ? s->pid : -1;
}

void mcim_swtpm_free(mcim_swtpm_t *s)
{
  if (!s)
    return;
  stop_pid(s->pid);
  free(s);
}

pid_t mcim_swtpm_detach(mcim_swtpm_t *s)
{
  pid_t pid = s ? s->pid : -1;
  free(s);
  return pid;
}

/* ---- the TPM's manufacture: an endorsement key and its certificate ---- */

static mcim_cause_t write_text(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  if (!f)
    return MCIM_IO_ERROR;
  bool ok = fputs(text, f) >= 0;
  return fclose(f) == 0 && ok ? MCIM_OK : MCIM_IO_ERROR;
}

mcim_cause_t mcim_swtpm_manufacture(const char *state_dir, const char *vendor_cert,
                                    const char *vendor_key, const char *vendor_state, char *detail,
                                    size_t detail_len)
{
  char setup[4096], localca[4096], conf[4096 + 32], ca_conf[4096 + 32], opts[4096 + 32];
  char log[4096 + 32], state[4096 + 16], text[4 * 4096 + 256], line[200];
  pid_t pid;
  int status = 0;

  mcim_detailf(detail, detail_len, "%s", "");
  if (!state_dir || !vendor_cert || !vendor_key || !vendor_state)
    return MCIM_INVALID_ARGUMENT;
  if (!find_prog("swtpm_setup", setup, sizeof(setup)) ||
      !find_prog("swtpm_localca", localca, sizeof(localca))) {
    mcim_detailf(detail, detail_len,
                 "swtpm_setup or swtpm_localca not found on PATH (Debian "
                 "package swtpm-tools; scripts/deps.sh installs it)");
    return MCIM_NOT_FOUND;
  }
  if ((size_t)snprintf(conf, sizeof(conf), "%s/swtpm_setup.conf", state_dir) >= sizeof(conf) ||
      (size_t)snprintf(ca_conf, sizeof(ca_conf), "%s/swtpm-localca.conf", state_dir) >=
          sizeof(ca_conf) ||
      (size_t)snprintf(opts, sizeof(opts), "%s/swtpm-localca.options", state_dir) >= sizeof(opts) ||
      (size_t)snprintf(log, sizeof(log), "%s/swtpm_setup.log", state_dir) >= sizeof(log) ||
      (size_t)snprintf(state, sizeof(state), "dir://%s", state_dir) >= sizeof(state)) {
    mcim_detailf(detail, detail_len, "state directory path too long");
    return MCIM_INVALID_ARGUMENT;
  }
  /* swtpm_localca signs with the vendor's key (it makes a CA of its own only when that key
   * is missing, which we never let happen: the M2MES trusts this one); its serial counter and
   * lock are the vendor's, shared by every TPM of the lab. */
  snprintf(text, sizeof(text),
           "statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s/certserial\n",
           vendor_state, vendor_key, vendor_cert, vendor_state);
  mcim_cause_t rc = access(vendor_key, R_OK) == 0 && access(vendor_cert, R_OK) == 0
                        ? write_text(ca_conf, text)
                        : MCIM_NOT_FOUND;
  if (rc == MCIM_NOT_FOUND)
    mcim_detailf(detail, detail_len, "no TPM vendor CA at %s", vendor_cert);
  if (rc == MCIM_OK)
    rc = write_text(opts, "--platform-manufacturer mcim-lab\n--platform-version 2.1\n"
                          "--platform-model m2me\n");
  snprintf(text, sizeof(text),
           "create_certs_tool = %s\ncreate_certs_tool_config = %s\n"
           "create_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
           localca, ca_conf, opts);
  if (rc == MCIM_OK)
    rc = write_text(conf, text);
  if (rc != MCIM_OK) {
    if (!detail || !detail[0])
      mcim_detailf(detail, detail_len, "cannot write swtpm_setup's configuration in %s", state_dir);
    return rc;
  }
  /* --create-ek-cert: the RSA 2048 and ECC EKs of the TCG EK profile's default templates,
   * persistent (0x81010001, 0x81010016), and their certificates in NV (0x01c00002, 0x01c00016),
   * locked (--lock-nvram: nobody rewrites them); only the SHA-256 PCR bank. */
  char *const argv[] = {
      setup, "--tpm2",    "--tpm-state", state, "--create-ek-cert", "--lock-nvram", "--config",
      conf,  "--logfile", log,           NULL};
  pid = fork();
  if (pid < 0) {
    mcim_detailf(detail, detail_len, "fork: %s", strerror(errno));
    return MCIM_IO_ERROR;
  }
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
      _exit(126);
    execv(setup, argv);
    _exit(127);
  }
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    first_line(log, line, sizeof(line));
    mcim_detailf(detail, detail_len, "swtpm_setup failed (status %d; %s): %s",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log,
                 line[0] ? line : "(no output)");
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
}
