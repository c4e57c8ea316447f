/* The fixture of the tests against a REAL osmo-hlr (test_auc_osmo_hlr.c,
 * test_auc_osmo_hlr_sync.c): an osmo-hlr started per case in a temporary folder with its own
 * configuration and database, on a loopback address of its own (127.0.x.y: GSUP 4222, VTY
 * 4258 and CTRL 4259 of that address are free), polled until its ports answer, with the
 * subscriber IMSI (TS 35.208 test set 1's K and OPc, ind_bitlen 5) created over CTRL; and its
 * CTRL interface. A missing osmo-hlr fails (scripts/deps.sh installs it). Header-only (static
 * functions), included after cmocka.h by each program once. */
#ifndef MCIM_TEST_OSMO_HLR_FIXTURE_H
#define MCIM_TEST_OSMO_HLR_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <osmocom/core/msgb.h>
#include <osmocom/gsm/gsup.h>

#include "mcim/aka.h"
#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_backend.h"
#include "roles/auc_sync.h"

/* TS 35.208 test set 1 */
static const char K_HEX[] = "465b5ce8b199b49faa5f0a2ee238a6bc";
static const char OPC_HEX[] = "cd63cb71954a9f4e48a5994e37a02baf";
static const char IMSI[] = "001010000000001";

struct hlr {
  char dir[64];
  char ip[INET_ADDRSTRLEN];
  pid_t pid;
  struct mcim_auc_backend *b;
  /* the USIM of IMSI */
  mcim_milenage_t *usim_m;
  struct mcim_sqn_params p;
  struct mcim_sqn_usim usim;
  uint8_t k[16], opc[16];
};

static inline int port_open(const char *ip, uint16_t port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
  inet_pton(AF_INET, ip, &a.sin_addr);
  ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

static inline void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static inline void dump_log(const struct hlr *h)
{
  char path[128], line[512];
  snprintf(path, sizeof(path), "%s/osmo-hlr.log", h->dir);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof(line), f))
    fprintf(stderr, "osmo-hlr: %s", line);
  if (f)
    fclose(f);
}

/* ---- CTRL (IPA, osmo extension 0x00, text commands) ---- */

static inline void ctrl_cmd(const struct hlr *h, const char *cmd, char *reply, size_t cap)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(4259)};
  uint8_t buf[1024];
  size_t len = strlen(cmd), got = 0;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {.tv_sec = 5};

  assert_true(fd >= 0 && len + 4 < sizeof(buf));
  inet_pton(AF_INET, h->ip, &a.sin_addr);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  buf[0] = (uint8_t)((len + 1) >> 8);
  buf[1] = (uint8_t)(len + 1);
  buf[2] = 0xee;
  buf[3] = 0x00;
  memcpy(buf + 4, cmd, len);
  assert_int_equal(send(fd, buf, len + 4, MSG_NOSIGNAL), (ssize_t)(len + 4));
  while (got < 3) {
    ssize_t r = recv(fd, buf + got, 3 - got, 0);
    assert_true(r > 0);
    got += (size_t)r;
  }
  size_t blen = ((size_t)buf[0] << 8) | buf[1];
  assert_true(blen >= 1 && blen < sizeof(buf) && buf[2] == 0xee);
  got = 0;
  while (got < blen) {
    ssize_t r = recv(fd, buf + got, blen - got, 0);
    assert_true(r > 0);
    got += (size_t)r;
  }
  close(fd);
  snprintf(reply, cap, "%.*s", (int)(blen - 1), (const char *)buf + 1);
}

/* The HLR's own view of a subscriber's 3G data ("" if it has none). */
static inline void ctrl_aud3g(const struct hlr *h, const char *imsi, char *out, size_t cap)
{
  char cmd[128], reply[300], want[128];
  snprintf(cmd, sizeof(cmd), "GET 7 subscriber.by-imsi-%s.aud3g", imsi);
  ctrl_cmd(h, cmd, reply, sizeof(reply));
  snprintf(want, sizeof(want), "GET_REPLY 7 subscriber.by-imsi-%s.aud3g ", imsi);
  snprintf(out, cap, "%s", strncmp(reply, want, strlen(want)) == 0 ? reply + strlen(want) : "");
}

/* ---- the HLR's life ---- */

static inline int setup(void **state)
{
  static struct hlr h;
  char cfg[512], path[128], db[128];
  memset(&h, 0, sizeof(h));

  if (system("command -v osmo-hlr >/dev/null") != 0)
    fail_msg("osmo-hlr is not installed (Debian: apt-get install osmo-hlr; scripts/deps.sh)");
  snprintf(h.dir, sizeof(h.dir), "/tmp/mcim-hlr-XXXXXX");
  assert_non_null(mkdtemp(h.dir));
  /* an address of our own: its 4222, 4258 and 4259 are free */
  for (unsigned i = 0;; i++) {
    assert_true(i < 200);
    unsigned x = ((unsigned)getpid() + i * 7919u) % 60000u;
    snprintf(h.ip, sizeof(h.ip), "127.66.%u.%u", (x >> 8) & 0xff, 2 + x % 250);
    if (!port_open(h.ip, 4222) && !port_open(h.ip, 4258) && !port_open(h.ip, 4259))
      break;
  }
  snprintf(cfg, sizeof(cfg),
           "log stderr\n logging filter all 1\n logging color 0\n logging print category 1\n"
           " logging level main notice\n logging level db notice\n logging level auc notice\n"
           "line vty\n bind %s\nctrl\n bind %s\nhlr\n gsup\n  bind ip %s\n",
           h.ip, h.ip, h.ip);
  snprintf(path, sizeof(path), "%s/osmo-hlr.cfg", h.dir);
  write_file(path, cfg);
  snprintf(db, sizeof(db), "%s/hlr.db", h.dir);
  h.pid = fork();
  assert_true(h.pid >= 0);
  if (h.pid == 0) {
    char logp[128];
    snprintf(logp, sizeof(logp), "%s/osmo-hlr.log", h.dir);
    FILE *lf = freopen(logp, "w", stderr);
    (void)lf;
    dup2(2, 1);
    execlp("osmo-hlr", "osmo-hlr", "-c", path, "-l", db, (char *)NULL);
    _exit(127);
  }
  /* poll GSUP and CTRL with a deadline; a dead child fails at once */
  uint64_t deadline = mcim_monotonic_ns() + 15ull * 1000000000u;
  for (;;) {
    int status;
    if (waitpid(h.pid, &status, WNOHANG) == h.pid) {
      h.pid = 0;
      dump_log(&h);
      fail_msg("osmo-hlr exited before listening (status %d)", status);
    }
    if (port_open(h.ip, 4222) && port_open(h.ip, 4259))
      break;
    if (mcim_monotonic_ns() > deadline) {
      dump_log(&h);
      fail_msg("osmo-hlr did not listen on %s:4222 and :4259 within 15 s", h.ip);
    }
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }

  struct mcim_auc_osmo_hlr_cfg c = {.gsup_addr = h.ip, .unit_name = "mcim-test-sho"};
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &h.b), MCIM_OK);
  assert_string_equal(mcim_auc_backend_name(h.b), "osmo-hlr");
  assert_int_equal(mcim_hex_decode_str(K_HEX, h.k, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(OPC_HEX, h.opc, 16), MCIM_OK);

  /* the subscriber, through the backend (CTRL), then as the HLR itself shows it */
  struct mcim_auc_sub sub = {.imsi = IMSI};
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200], want[200];
  memcpy(sub.k, h.k, 16);
  memcpy(sub.opc, h.opc, 16);
  assert_int_equal(mcim_auc_backend_create_sub(h.b, NULL, &sub, detail, sizeof(detail)),
                   MCIM_OK);
  ctrl_aud3g(&h, IMSI, aud3g, sizeof(aud3g));
  snprintf(want, sizeof(want), "MILENAGE,%s,OPC,%s,%u", K_HEX, OPC_HEX,
           (unsigned)MCIM_SQN_IND_BITS_DEFAULT);
  assert_string_equal(aud3g, want);
  assert_int_equal(mcim_milenage_new(&h.usim_m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(h.usim_m, h.k, h.opc), MCIM_OK);
  mcim_sqn_params_default(&h.p);
  assert_int_equal(h.p.ind_bits, 5);
  assert_int_equal(mcim_sqn_usim_init(&h.p, &h.usim), MCIM_OK);
  *state = &h;
  return 0;
}

static inline int teardown(void **state)
{
  struct hlr *h = *state;
  char cmd[128];
  if (!h)
    return 0;
  mcim_auc_backend_free(h->b);
  mcim_milenage_free(h->usim_m);
  if (h->pid > 0) {
    kill(h->pid, SIGCONT); /* a case that failed with it stopped (SIGSTOP) must not hang here */
    kill(h->pid, SIGTERM);
    waitpid(h->pid, NULL, 0);
  }
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
  assert_int_equal(system(cmd), 0);
  return 0;
}
#endif
