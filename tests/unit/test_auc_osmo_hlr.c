/* The osmo-hlr AuC backend (src/roles/auc_osmo_hlr.c) against a REAL osmo-hlr: started here
 * in a temporary folder with its own configuration and database, on a loopback address of
 * its own (127.0.x.y: GSUP 4222, VTY 4258 and CTRL 4259 of that address are free), polled
 * until its ports answer. A missing osmo-hlr fails the test (scripts/deps.sh installs it).
 *
 * The subscriber is created over CTRL with TS 35.208 test set 1's K and OPc and ind_bitlen 5;
 * the vectors osmo-hlr generates go through mcim's own USIM side (mcim_aka_usim_check: MAC-A,
 * then the SQN of TS 33.102 Annex C with MCIM_SQN_IND_BITS_DEFAULT = 5) and must be accepted,
 * with RES = XRES, across many attaches and resynchronisations. The answers' checks are also
 * fed malformed GSUP. */
#define _GNU_SOURCE /* fopencookie, memmem: the role's log watched (test_avs_await_other) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

static int port_open(const char *ip, uint16_t port)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
  inet_pton(AF_INET, ip, &a.sin_addr);
  ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static void dump_log(const struct hlr *h)
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

static void ctrl_cmd(const struct hlr *h, const char *cmd, char *reply, size_t cap)
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
static void ctrl_aud3g(const struct hlr *h, const char *imsi, char *out, size_t cap)
{
  char cmd[128], reply[300], want[128];
  snprintf(cmd, sizeof(cmd), "GET 7 subscriber.by-imsi-%s.aud3g", imsi);
  ctrl_cmd(h, cmd, reply, sizeof(reply));
  snprintf(want, sizeof(want), "GET_REPLY 7 subscriber.by-imsi-%s.aud3g ", imsi);
  snprintf(out, cap, "%s", strncmp(reply, want, strlen(want)) == 0 ? reply + strlen(want) : "");
}

/* ---- the HLR's life ---- */

static int setup(void **state)
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

static int teardown(void **state)
{
  struct hlr *h = *state;
  char cmd[128];
  if (!h)
    return 0;
  mcim_auc_backend_free(h->b);
  mcim_milenage_free(h->usim_m);
  if (h->pid > 0) {
    kill(h->pid, SIGTERM);
    waitpid(h->pid, NULL, 0);
  }
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
  assert_int_equal(system(cmd), 0);
  return 0;
}

/* ---- the USIM side ---- */

/* The USIM's answer to a vector; on MCIM_OK its state is committed and RES, CK, IK checked. */
static mcim_cause_t usim_take(struct hlr *h, const struct mcim_aka_av *av,
                              struct mcim_aka_usim_out *out)
{
  struct mcim_sqn_usim next;
  mcim_cause_t rc = mcim_aka_usim_check(h->usim_m, &h->p, &h->usim, av->rand, av->autn, &next,
                                        out);
  if (rc == MCIM_OK) {
    assert_int_equal(mcim_aka_check_res(av->xres, sizeof(av->xres), out->res, sizeof(out->res)),
                     MCIM_OK);
    assert_memory_equal(out->ck, av->ck, 16);
    assert_memory_equal(out->ik, av->ik, 16);
    h->usim = next;
  }
  return rc;
}

static uint64_t accept_one(struct hlr *h)
{
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  char detail[MCIM_AUC_DETAIL_LEN];
  mcim_cause_t rc = mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 1, 0, &av, detail, sizeof(detail));
  if (rc != MCIM_OK)
    fail_msg("gen_avs: %s: %s", mcim_cause_name(rc), detail);
  rc = usim_take(h, &av, &out);
  if (rc != MCIM_OK)
    fail_msg("USIM refused osmo-hlr's vector: %s (%s)", mcim_cause_name(rc),
             mcim_sqn_verdict_name(out.verdict));
  return mcim_sqn_from_bytes(out.sqn);
}

/* One vector, then many attaches in a row: each accepted, SEQ + 1 at the same IND. */
static void test_vectors_accepted(void **state)
{
  struct hlr *h = *state;
  struct mcim_aka_av av0;
  char d0[MCIM_AUC_DETAIL_LEN];
  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 1, 0, &av0, d0, sizeof(d0)),
                   MCIM_OK);
  /* osmo-hlr 1.5 keeps no AMF per subscriber: its vectors carry 0000 */
  assert_int_equal(av0.autn[6], 0x00);
  assert_int_equal(av0.autn[7], 0x00);
  uint64_t first = accept_one(h), prev = first;
  for (int i = 0; i < 60; i++) {
    uint64_t sqn = accept_one(h);
    assert_int_equal(mcim_sqn_seq(&h->p, sqn), mcim_sqn_seq(&h->p, prev) + 1);
    assert_int_equal(mcim_sqn_ind(&h->p, sqn), mcim_sqn_ind(&h->p, first));
    prev = sqn;
  }
  /* batches of 5, used in order */
  for (int round = 0; round < 4; round++) {
    struct mcim_aka_av avs[5];
    struct mcim_aka_usim_out out;
    char detail[MCIM_AUC_DETAIL_LEN];
    assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 5, 0, avs, detail,
                                              sizeof(detail)),
                     MCIM_OK);
    for (int i = 0; i < 5; i++)
      assert_int_equal(usim_take(h, &avs[i], &out), MCIM_OK);
  }
}

/* An old vector is refused by the USIM with an AUTS; the HLR resynchronises on it and both
 * the vector of its answer and the next one are accepted. */
static void test_resync_old_vector(void **state)
{
  struct hlr *h = *state;
  struct mcim_aka_av old, av[2];
  struct mcim_aka_usim_out out;
  char detail[MCIM_AUC_DETAIL_LEN];

  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 1, 0, &old, detail,
                                            sizeof(detail)),
                   MCIM_OK);
  (void)accept_one(h);
  assert_int_equal(usim_take(h, &old, &out), MCIM_SYNC_FAILURE); /* not fresh at its IND */
  assert_int_equal(mcim_auc_backend_resync(h->b, NULL, IMSI, old.rand, out.auts, 2, 0, av,
                                           detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(usim_take(h, &av[0], &out), MCIM_OK);
  assert_int_equal(usim_take(h, &av[1], &out), MCIM_OK);
  (void)accept_one(h);
}

/* The USIM runs ahead (vectors of another AuC of the same K, far higher SEQ at the HLR's
 * IND): the HLR's next vector is stale, its AUTS moves the HLR to SEQ_MS + 1. */
static void test_resync_usim_ahead(void **state)
{
  struct hlr *h = *state;
  struct mcim_aka_av av, ahead;
  struct mcim_aka_usim_out out;
  char detail[MCIM_AUC_DETAIL_LEN];
  uint8_t sqn[MCIM_SQN_LEN];
  const uint8_t amf[2] = {0x00, 0x00};

  uint64_t last = accept_one(h);
  unsigned ind = mcim_sqn_ind(&h->p, last);
  uint64_t far = mcim_sqn_make(&h->p, mcim_sqn_seq(&h->p, last) + 100000, ind);
  mcim_sqn_to_bytes(far, sqn);
  assert_int_equal(mcim_aka_gen_av(h->usim_m, NULL, sqn, amf, &ahead), MCIM_OK);
  assert_int_equal(usim_take(h, &ahead, &out), MCIM_OK);

  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(usim_take(h, &av, &out), MCIM_SYNC_FAILURE);
  assert_int_equal(out.verdict, MCIM_SQN_NOT_FRESH);
  /* resync asking no vector: the HLR's answer's vector is dropped (one SQN lost) */
  assert_int_equal(mcim_auc_backend_resync(h->b, NULL, IMSI, av.rand, out.auts, 0, 0, NULL,
                                           detail, sizeof(detail)),
                   MCIM_OK);
  uint64_t next = accept_one(h);
  assert_true(mcim_sqn_seq(&h->p, next) > mcim_sqn_seq(&h->p, far));
  assert_true(mcim_sqn_seq(&h->p, next) <= mcim_sqn_seq(&h->p, far) + 2);
  for (int i = 0; i < 20; i++)
    (void)accept_one(h);
}

/* A forged AUTS (MAC-S wrong) is refused and moves nothing. */
static void test_resync_forged_auts(void **state)
{
  struct hlr *h = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  char detail[MCIM_AUC_DETAIL_LEN];

  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, IMSI, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_OK);
  (void)accept_one(h);
  assert_int_equal(usim_take(h, &av, &out), MCIM_SYNC_FAILURE);
  out.auts[13] ^= 0x01;
  mcim_cause_t rc = mcim_auc_backend_resync(h->b, NULL, IMSI, av.rand, out.auts, 1, 0, &av,
                                            detail, sizeof(detail));
  assert_int_equal(rc, MCIM_AUTS_INVALID);
  assert_non_null(strstr(detail, "MAC-S does not verify"));
  print_message("forged AUTS: %s: %s\n", mcim_cause_name(rc), detail);
  (void)accept_one(h);
}

/* Several threads on one backend at once (as mcimd's HTTP threads): every vector a fresh SQN. */
struct worker {
  struct mcim_auc_backend *b;
  uint64_t sqn[10];
  mcim_cause_t rc;
  pthread_t t;
};

static void *worker_main(void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < 10 && w->rc == MCIM_OK; i++) {
    struct mcim_aka_av av;
    mcim_milenage_t *m = NULL;
    uint8_t k[16], opc[16], sqn[MCIM_SQN_LEN], res[8], ck[16], ik[16];
    char detail[MCIM_AUC_DETAIL_LEN];
    w->rc = mcim_auc_backend_gen_avs(w->b, NULL, IMSI, 1, 0, &av, detail, sizeof(detail));
    if (w->rc != MCIM_OK) {
      print_message("worker: %s\n", detail);
      break;
    }
    /* the SQN of the vector: SQN xor AK with AK = f5(RAND) */
    mcim_hex_decode_str(K_HEX, k, 16);
    mcim_hex_decode_str(OPC_HEX, opc, 16);
    uint8_t ak[6];
    w->rc = mcim_milenage_new(&m);
    if (w->rc == MCIM_OK)
      w->rc = mcim_milenage_set_opc(m, k, opc);
    if (w->rc == MCIM_OK)
      w->rc = mcim_milenage_f2345(m, av.rand, res, ck, ik, ak);
    for (int j = 0; j < 6; j++)
      sqn[j] = av.autn[j] ^ ak[j];
    w->sqn[i] = mcim_sqn_from_bytes(sqn);
    mcim_milenage_free(m);
  }
  return NULL;
}

static void test_threads(void **state)
{
  struct hlr *h = *state;
  struct worker w[4];
  uint64_t all[40];
  for (int i = 0; i < 4; i++) {
    memset(&w[i], 0, sizeof(w[i]));
    w[i].b = h->b;
    assert_int_equal(pthread_create(&w[i].t, NULL, worker_main, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(w[i].t, NULL);
    if (w[i].rc != MCIM_OK)
      dump_log(h);
    assert_int_equal(w[i].rc, MCIM_OK);
    memcpy(all + 10 * i, w[i].sqn, sizeof(w[i].sqn));
  }
  for (int i = 0; i < 40; i++)
    for (int j = i + 1; j < 40; j++)
      assert_true(all[i] != all[j]);
  /* the USIM takes the HLR's next vector: its SQN is above all of them */
  (void)accept_one(h);
}

/* Create and delete through the backend: a second subscriber, its vectors accepted by a USIM
 * of its own; created twice: CONFLICT; deleted: the HLR refuses it vectors, and its data is
 * gone from the HLR; deleted twice: UNKNOWN_IDENTITY. */
static void test_create_delete(void **state)
{
  struct hlr *h = *state;
  static const char imsi2[] = "001010000000002";
  struct mcim_auc_sub sub = {.imsi = imsi2};
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim u, next;
  mcim_milenage_t *m = NULL;
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200];

  assert_int_equal(mcim_random(sub.k, 16), MCIM_OK);
  assert_int_equal(mcim_random(sub.opc, 16), MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &sub, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &sub, detail, sizeof(detail)),
                   MCIM_CONFLICT);
  assert_non_null(strstr(detail, "the IMSI exists"));
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, sub.k, sub.opc), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&h->p, &u), MCIM_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, imsi2, 1, 0, &av, detail,
                                              sizeof(detail)),
                     MCIM_OK);
    assert_int_equal(mcim_aka_usim_check(m, &h->p, &u, av.rand, av.autn, &next, &out), MCIM_OK);
    assert_int_equal(mcim_aka_check_res(av.xres, 8, out.res, 8), MCIM_OK);
    u = next;
  }
  mcim_milenage_free(m);
  assert_int_equal(mcim_auc_backend_delete_sub(h->b, NULL, imsi2, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, imsi2, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  ctrl_aud3g(h, imsi2, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, "");
  assert_int_equal(mcim_auc_backend_delete_sub(h->b, NULL, imsi2, detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  assert_non_null(strstr(detail, imsi2));
  /* the first subscriber is untouched */
  (void)accept_one(h);
}

static void test_unknown_imsi_and_down(void **state)
{
  struct hlr *h = *state;
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN];
  struct mcim_auc_backend *down = NULL;

  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, "001010000009999", 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  assert_non_null(strstr(detail, "001010000009999"));
  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, "00101abc", 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_INVALID_ARGUMENT);
  /* nothing listens on GSUP's port of another address of ours */
  struct mcim_auc_osmo_hlr_cfg c = {.gsup_addr = h->ip, .gsup_port = 4223, .unit_name = "x",
                                    .timeout_ms = 600001};
  /* a timeout poll() could not take is refused at once */
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &down), MCIM_INVALID_ARGUMENT);
  assert_null(down);
  c.timeout_ms = 2000;
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &down), MCIM_OK);
  assert_int_equal(mcim_auc_backend_gen_avs(down, NULL, IMSI, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_PEER_UNREACHABLE);
  assert_non_null(strstr(detail, "cannot connect"));
  mcim_auc_backend_free(down);
}

/* ---- malformed answers (no HLR needed) ---- */

static size_t encode(const struct osmo_gsup_message *g, uint8_t *out, size_t cap)
{
  struct msgb *m = msgb_alloc_c(NULL, 2048, "test");
  assert_non_null(m);
  assert_true(osmo_gsup_encode(m, g) >= 0);
  size_t len = msgb_length(m);
  assert_true(len <= cap);
  memcpy(out, msgb_data(m), len);
  msgb_free(m);
  return len;
}

static void test_malformed_answers(void **state)
{
  (void)state;
  struct osmo_gsup_message g;
  struct mcim_aka_av avs[5];
  char detail[MCIM_AUC_DETAIL_LEN];
  uint8_t buf[2048];
  size_t len;

  memset(&g, 0, sizeof(g));
  g.message_type = OSMO_GSUP_MSGT_SEND_AUTH_INFO_RESULT;
  snprintf(g.imsi, sizeof(g.imsi), "%s", IMSI);
  g.num_auth_vectors = 2;
  for (int i = 0; i < 2; i++) {
    g.auth_vectors[i].auth_types = OSMO_AUTH_TYPE_UMTS | OSMO_AUTH_TYPE_GSM;
    g.auth_vectors[i].res_len = 8;
    memset(g.auth_vectors[i].rand, 0x11 + i, 16);
  }
  len = encode(&g, buf, sizeof(buf));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, IMSI, 2, avs, detail,
                                                   sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(avs[1].rand[0], 0x12);
  /* every truncation, and every single-byte change, is refused or decodes to something checked;
   * none crashes */
  for (size_t cut = 0; cut < len; cut++)
    assert_int_not_equal(mcim_auc_osmo_hlr_check_answer_(buf, cut, IMSI, 2, avs, detail,
                                                         sizeof(detail)),
                         MCIM_OK);
  for (size_t i = 0; i < len; i++) {
    uint8_t copy[2048];
    memcpy(copy, buf, len);
    copy[i] ^= 0xa5;
    (void)mcim_auc_osmo_hlr_check_answer_(copy, len, IMSI, 2, avs, detail, sizeof(detail));
  }
  struct {
    const char *what;
    int n;
    const char *imsi;
  } wrong[] = {{"vectors", 3, IMSI}, {"another IMSI", 2, "001010000000002"}};
  for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
    assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, wrong[i].imsi, wrong[i].n, avs,
                                                     detail, sizeof(detail)),
                     MCIM_PEER_BAD_ANSWER);
    assert_non_null(strstr(detail, wrong[i].what));
  }
  g.auth_vectors[1].res_len = 4;
  len = encode(&g, buf, sizeof(buf));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, IMSI, 2, avs, detail,
                                                   sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "RES of 4 bytes"));
  g.auth_vectors[1].res_len = 8;
  g.auth_vectors[0].auth_types = OSMO_AUTH_TYPE_GSM;
  len = encode(&g, buf, sizeof(buf));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, IMSI, 2, avs, detail,
                                                   sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "not a UMTS quintet"));
  memset(&g, 0, sizeof(g));
  g.message_type = OSMO_GSUP_MSGT_UPDATE_LOCATION_RESULT;
  snprintf(g.imsi, sizeof(g.imsi), "%s", IMSI);
  len = encode(&g, buf, sizeof(buf));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, IMSI, 1, avs, detail,
                                                   sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "not a SendAuthInfo result"));
  g.message_type = OSMO_GSUP_MSGT_SEND_AUTH_INFO_ERROR;
  g.cause = GMM_CAUSE_NET_FAIL;
  len = encode(&g, buf, sizeof(buf));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_(buf, len, IMSI, 1, avs, detail,
                                                   sizeof(detail)),
                   MCIM_PEER_ERROR);
  assert_non_null(strstr(detail, "GMM cause 17"));
  assert_int_equal(mcim_auc_osmo_hlr_check_answer_((const uint8_t *)"\x0a\x01\x07garbage", 10,
                                                   IMSI, 1, avs, detail, sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
}

/* ---- a fake HLR answering with scripted bytes: the socket path never trusts a frame ---- */

struct fake {
  int lfd;
  uint16_t port;
  const uint8_t *script; /* sent after the ID_GET and the client's first bytes */
  size_t script_len;
  int send_id_get;
  pthread_t t;
};

static void *fake_main(void *arg)
{
  struct fake *f = arg;
  static const uint8_t id_get[] = {0x00, 0x03, 0xfe, 0x04, 0x01, 0x08};
  uint8_t buf[1024];
  struct timeval tv = {.tv_sec = 2};
  int fd = accept(f->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (f->send_id_get) {
    (void)!send(fd, id_get, sizeof(id_get), MSG_NOSIGNAL);
    (void)!recv(fd, buf, sizeof(buf), 0);
    if (f->script_len)
      (void)!send(fd, f->script, f->script_len, MSG_NOSIGNAL);
  }
  if (f->script_len || !f->send_id_get)
    while (recv(fd, buf, sizeof(buf), 0) > 0) /* until the client gives up */
      ;
  close(fd);
  return NULL;
}

static mcim_cause_t against_fake(const uint8_t *script, size_t len, int send_id_get,
                                 char *detail, size_t dlen)
{
  struct fake f = {.script = script, .script_len = len, .send_id_get = send_id_get};
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof(a);
  struct mcim_auc_backend *b = NULL;
  struct mcim_aka_av av;
  mcim_cause_t rc;

  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(f.lfd >= 0);
  assert_int_equal(bind(f.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(f.lfd, 1), 0);
  assert_int_equal(getsockname(f.lfd, (struct sockaddr *)&a, &alen), 0);
  assert_int_equal(pthread_create(&f.t, NULL, fake_main, &f), 0);
  struct mcim_auc_osmo_hlr_cfg c = {.gsup_addr = "127.0.0.1", .gsup_port = ntohs(a.sin_port),
                                    .unit_name = "fake", .timeout_ms = 500};
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &b), MCIM_OK);
  rc = mcim_auc_backend_gen_avs(b, NULL, IMSI, 1, 0, &av, detail, dlen);
  mcim_auc_backend_free(b);
  pthread_join(f.t, NULL);
  close(f.lfd);
  return rc;
}

static void test_fake_hlr(void **state)
{
  (void)state;
  char detail[MCIM_AUC_DETAIL_LEN];
  static const uint8_t huge[] = {0xff, 0xff, 0xee, 0x05};
  static const uint8_t junk[] = {0x00, 0x05, 0xee, 0x05, 0x0a, 0x01, 0x99, 0x00};
  static const uint8_t other[] = {0x00, 0x02, 0x00, 0x12, 0x34};

  assert_int_equal(against_fake(huge, sizeof(huge), 1, detail, sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "IPA frame of 65535 bytes"));
  assert_int_equal(against_fake(junk, sizeof(junk), 1, detail, sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "does not decode"));
  assert_int_equal(against_fake(other, sizeof(other), 1, detail, sizeof(detail)),
                   MCIM_PEER_BAD_ANSWER);
  assert_non_null(strstr(detail, "unexpected IPA frame"));
  assert_int_equal(against_fake(NULL, 0, 1, detail, sizeof(detail)), MCIM_PEER_UNREACHABLE);
  assert_non_null(strstr(detail, "closed the GSUP connection"));
  assert_int_equal(against_fake(NULL, 0, 0, detail, sizeof(detail)), MCIM_TIMEOUT);
  assert_non_null(strstr(detail, "within 500 ms"));
}


/* ---- a role's subscribers in the HLR (src/roles/auc_sync.c, issue 13 point 1) ---- */

struct syncfx {
  char db[96];
  mcim_store_t *st;
  mcim_storage_key_t *skey;
};

static void syncfx_open(struct syncfx *f, const struct hlr *h)
{
  static const mcim_migration_t steps[] = {{1, "AuC", mcim_auc_schema_sql},
                                           {2, "HLR intents", mcim_auc_hlr_schema_sql},
                                           {3, "their claims", mcim_auc_hlr_lease_sql}};
  snprintf(f->db, sizeof(f->db), "%s/role.db", h->dir);
  unlink(f->db);
  assert_int_equal(mcim_store_open(f->db, NULL, &f->st), MCIM_OK);
  assert_int_equal(mcim_store_migrate(f->st, "auc", steps, 3), MCIM_OK);
  assert_int_equal(mcim_storage_key_generate(&f->skey), MCIM_OK);
}

static void syncfx_close(struct syncfx *f)
{
  mcim_store_close(f->st);
  mcim_storage_key_free(f->skey);
  unlink(f->db);
}

/* A subscriber of the role, with its intent, in one transaction (what the SHO's verdict
 * does); its keys in `sub`. */
static void role_add(struct syncfx *f, const struct hlr *h, const char *imsi, const char *state,
                     struct mcim_auc_sub *sub)
{
  memset(sub, 0, sizeof(*sub));
  sub->imsi = imsi;
  sub->device = "dev1";
  sub->state = state;
  assert_int_equal(mcim_random(sub->k, 16), MCIM_OK);
  assert_int_equal(mcim_random(sub->opc, 16), MCIM_OK);
  assert_int_equal(mcim_store_begin(f->st), MCIM_OK);
  assert_int_equal(mcim_auc_add(f->st, f->skey, sub), MCIM_OK);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f->st, imsi, true), MCIM_OK);
  assert_int_equal(mcim_store_commit(f->st), MCIM_OK);
}

static void hlr_keys_are(const struct hlr *h, const struct mcim_auc_sub *sub)
{
  char aud3g[200], want[200], k[33], opc[33];
  mcim_hex_encode(sub->k, 16, k);
  mcim_hex_encode(sub->opc, 16, opc);
  for (char *c = k; *c; c++)
    *c = (char)(*c >= 'a' ? *c - 32 : *c);
  for (char *c = opc; *c; c++)
    *c = (char)(*c >= 'a' ? *c - 32 : *c);
  ctrl_aud3g(h, sub->imsi, aud3g, sizeof(aud3g));
  snprintf(want, sizeof(want), "MILENAGE,%s,OPC,%s,5", k, opc);
  assert_int_equal(strcasecmp(aud3g, want), 0);
}

static int64_t intent_int(struct syncfx *f, const char *imsi, const char *col)
{
  char sql[96];
  int64_t v = -1;
  mcim_val_t p[] = {MCIM_TEXT(imsi)};
  snprintf(sql, sizeof(sql), "SELECT %s FROM auc_hlr WHERE imsi = ?", col);
  assert_int_equal(mcim_store_query_int(f->st, sql, p, 1, &v), MCIM_OK);
  return v;
}

/* The intent recorded with the subscriber, applied after the commit: in the HLR with our keys,
 * once (a second run does nothing), its vectors accepted by the USIM; a crash before the apply
 * (the intent alone) converges at the next run or at the first attach; a create whose answer
 * was lost (the HLR has it, the intent is not done) is recognised as ours. */
static void test_sync_create(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a, c;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim u, next;
  mcim_milenage_t *m = NULL;
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000101", NULL, &a);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, ""); /* only intended so far */
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  hlr_keys_are(h, &a);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, a.k, a.opc), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&h->p, &u), MCIM_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                              detail, sizeof(detail)),
                     MCIM_OK);
    assert_int_equal(mcim_aka_usim_check(m, &h->p, &u, av.rand, av.autn, &next, &out), MCIM_OK);
    u = next;
  }
  mcim_milenage_free(m);

  /* the intent alone (a crash after the commit): the attach creates it */
  role_add(&f, h, "001010000000102", NULL, &c);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, c.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(intent_int(&f, c.imsi, "done"), 1);
  hlr_keys_are(h, &c);

  /* created, but the role never learnt it (the intent still pending): ours, done */
  struct mcim_auc_sub d;
  role_add(&f, h, "001010000000103", NULL, &d);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &d, detail, sizeof(detail)), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, d.imsi, "done"), 1);
  hlr_keys_are(h, &d);

  /* a pending or standby subscriber of the role gets no vector, whatever the HLR holds */
  struct mcim_auc_sub e;
  role_add(&f, h, "001010000000104", "pending", &e);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, e.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_SUBSCRIPTION_NOT_ACTIVE);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, "001010000000199", 1,
                                            mcim_now(), &av, detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  const char *all[] = {a.imsi, c.imsi, d.imsi, e.imsi}; /* the HLR as the other tests had it */
  for (size_t k = 0; k < 4; k++)
    (void)mcim_auc_backend_delete_sub(h->b, NULL, all[k], detail, sizeof(detail));
  mcim_wipe(&a, sizeof(a));
  syncfx_close(&f);
}

/* Someone else's subscriber under our IMSI (other keys): never taken for ours nor touched, the
 * intent stays pending with CONFLICT and backs off; a subscriber without Milenage data (a
 * create cut between its two CTRL commands) is made again with our keys. */
static void test_sync_conflict(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a, other, b;
  char detail[MCIM_AUC_DETAIL_LEN], reply[300], cmd[128];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000111", NULL, &a);
  other = a;
  assert_int_equal(mcim_random(other.k, 16), MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(h->b, NULL, &other, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_CONFLICT);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  assert_true(intent_int(&f, a.imsi, "next_try") > mcim_now());
  hlr_keys_are(h, &other);
  /* the batch leaves it to its backoff */
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));

  role_add(&f, h, "001010000000112", NULL, &b);
  snprintf(cmd, sizeof(cmd), "SET 9 subscriber.create %s", b.imsi);
  ctrl_cmd(h, cmd, reply, sizeof(reply));
  assert_int_equal(strncmp(reply, "SET_REPLY 9 ", 12), 0);
  assert_int_equal(mcim_auc_backend_same_sub(h->b, NULL, &b, detail, sizeof(detail)),
                   MCIM_NOT_FOUND);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, b.imsi), MCIM_OK);
  hlr_keys_are(h, &b);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, b.imsi, detail, sizeof(detail));
  assert_int_equal(mcim_auc_backend_same_sub(h->b, NULL, &b, detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  syncfx_close(&f);
}

/* Termination (step 10, a failed or expired order, a switch away): the subscriber terminated
 * and its intent turned to absent in one transaction; after the run it is gone from the HLR,
 * which itself refuses the old IMSI (GSUP SendAuthInfo: UNKNOWN_IDENTITY); a second run and a
 * delete of what is already gone are done. A create that raced a newer intent is not marked
 * done: the delete runs after it. */
static void test_sync_delete(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a;
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN], aud3g[200];

  syncfx_open(&f, h);
  role_add(&f, h, "001010000000121", NULL, &a);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  hlr_keys_are(h, &a);
  assert_int_equal(mcim_store_begin(f.st), MCIM_OK);
  assert_int_equal(mcim_auc_terminate(f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f.st, a.imsi, false), MCIM_OK);
  assert_int_equal(mcim_store_commit(f.st), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "gen"), 2);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, "");
  /* the HLR itself: no vector for the old IMSI */
  assert_int_equal(mcim_auc_backend_gen_avs(h->b, NULL, a.imsi, 1, 0, &av, detail,
                                            sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  /* and the role's record refuses it before asking */
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_SUBSCRIPTION_TERMINATED);
  /* again: already gone is done */
  assert_int_equal(mcim_store_exec(f.st, "UPDATE auc_hlr SET done = 0", NULL, 0, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);

  /* wanted, then unwanted before any run: the run deletes (nothing to create) */
  struct mcim_auc_sub b;
  role_add(&f, h, "001010000000122", NULL, &b);
  assert_int_equal(mcim_auc_sync_want_in(h->b, f.st, b.imsi, false), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  ctrl_aud3g(h, b.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, "");
  syncfx_close(&f);
}

/* Two instances of the role on one database (two store handles, as two processes have): an
 * intent another instance has claimed is left to it, by the attach's run and by the batch
 * alike (the HLR untouched, the intent pending); once that claim has run out (its instance
 * died) the next run applies it and gives its own claim back. Then a process of its own (no
 * shared mutex) and this one run every intent of a batch at once: each subscriber is made
 * once, with our keys, every intent done and unclaimed. */
static void test_sync_two_instances(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a;
  mcim_store_t *other = NULL;
  char aud3g[200], detail[MCIM_AUC_DETAIL_LEN];

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  role_add(&f, h, "001010000000141", NULL, &a);
  mcim_val_t p[] = {MCIM_INT(mcim_now() + 60), MCIM_TEXT(a.imsi)};
  assert_int_equal(mcim_store_exec(other, "UPDATE auc_hlr SET lease = ? WHERE imsi = ?", p, 2,
                                   NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  ctrl_aud3g(h, a.imsi, aud3g, sizeof(aud3g));
  assert_string_equal(aud3g, ""); /* left to the instance that holds it */
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 0);
  /* that instance died: its claim runs out */
  mcim_val_t q[] = {MCIM_INT(mcim_now() - 1), MCIM_TEXT(a.imsi)};
  assert_int_equal(mcim_store_exec(other, "UPDATE auc_hlr SET lease = ? WHERE imsi = ?", q, 2,
                                   NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, a.imsi), MCIM_OK);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  assert_int_equal(intent_int(&f, a.imsi, "lease"), 0);
  hlr_keys_are(h, &a);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));

  /* two processes, one batch of creates */
  enum { N = 12 };
  struct mcim_auc_sub subs[N];
  char imsis[N][16];
  for (int k = 0; k < N; k++) {
    snprintf(imsis[k], sizeof(imsis[k]), "0010100000002%02d", k);
    role_add(&f, h, imsis[k], NULL, &subs[k]);
  }
  mcim_store_close(other);
  other = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    mcim_store_t *mine = NULL;
    int bad = mcim_store_open(f.db, NULL, &mine) != MCIM_OK;
    for (int k = 0; !bad && k < N; k++)
      bad = mcim_auc_sync_run_in(h->b, f.skey, mine, imsis[k]) != MCIM_OK;
    mcim_store_close(mine);
    _exit(bad);
  }
  for (int k = N - 1; k >= 0; k--)
    assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, imsis[k]), MCIM_OK);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* whatever the child left claimed-and-done or not yet run: one more pass here */
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  for (int k = 0; k < N; k++) {
    assert_int_equal(intent_int(&f, imsis[k], "done"), 1);
    assert_int_equal(intent_int(&f, imsis[k], "lease"), 0);
    hlr_keys_are(h, &subs[k]);
    (void)mcim_auc_backend_delete_sub(h->b, NULL, imsis[k], detail, sizeof(detail));
  }
  syncfx_close(&f);
}

/* ---- a vector request waiting for another instance's create (test_avs_await_other) ---- */

#define AWAIT_NS 3000000000u /* ensure_applied's AWAIT_MS, src/roles/auc_sync.c */
#define GUARD_NS 30000000000u /* a hang guard only: no correct run comes near it */
/* A wait that runs to its bound takes the create up 3 s after the request began, a ms early
 * at most (its time left is counted in whole ms); taken up before this, 2.5 s after, it was by
 * a recheck or a wake (in about 10 ms when nothing is broken). */
#define TAKEN_UP_NS 2500000000u

/* The role's log as this test sees it: every line still goes to stderr, and the lines that
 * say a vector request found the create claimed by another instance and waits for it
 * ("subscriber IMSI being created by another instance: waiting") are counted, for the IMSI
 * watched: that instance's release can then come while the request waits, not before. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cv = PTHREAD_COND_INITIALIZER;
static char log_watched[96];
static int log_waits;

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
  (void)cookie;
  fwrite(buf, 1, n, stderr);
  pthread_mutex_lock(&log_mu);
  if (log_watched[0] && memmem(buf, n, log_watched, strlen(log_watched))) {
    log_waits++;
    pthread_cond_broadcast(&log_cv);
  }
  pthread_mutex_unlock(&log_mu);
  return (ssize_t)n;
}

static FILE *log_watch_start(void)
{
  FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t){.write = log_write});
  assert_non_null(f);
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_INFO, f);
  return f;
}

static void log_watch_end(FILE *f)
{
  mcim_log_init("mcim", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL); /* the defaults again */
  fclose(f);
}

static void log_watch(const char *imsi)
{
  pthread_mutex_lock(&log_mu);
  snprintf(log_watched, sizeof(log_watched), "subscriber %s being created by another instance",
           imsi);
  log_waits = 0;
  pthread_mutex_unlock(&log_mu);
}

static int log_waits_now(void)
{
  pthread_mutex_lock(&log_mu);
  int n = log_waits;
  pthread_mutex_unlock(&log_mu);
  return n;
}

/* Until the request watched says it waits, at most GUARD_NS: true if it did. */
static bool log_wait_seen(void)
{
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)(GUARD_NS / 1000000000u);
  pthread_mutex_lock(&log_mu);
  int rc = 0;
  while (log_waits == 0 && rc == 0)
    rc = pthread_cond_timedwait(&log_cv, &log_mu, &until);
  bool seen = log_waits > 0;
  pthread_mutex_unlock(&log_mu);
  return seen;
}

/* The other instance of test_avs_await_other: once the vector request says it waits for the
 * create this instance claimed, its apply "ends" (the claim given back, not done); with `wake`
 * the release also reaches the request as the wake relay delivers another instance's (its
 * NOTIFY). Then it watches the row for the waiting instance taking the create up (its own
 * claim, or the create done): `reacted_ns` is when it saw that. */
struct releaser {
  const char *db;
  const char *imsi;
  bool wake;
  bool ok;
  uint64_t reacted_ns;
};

static void *releaser_main(void *arg)
{
  struct releaser *rl = arg;
  mcim_store_t *other = NULL;
  mcim_val_t p[] = {MCIM_TEXT(rl->imsi)};
  if (mcim_store_open(rl->db, NULL, &other) != MCIM_OK || !log_wait_seen())
    goto out;
  if (mcim_store_exec(other, "UPDATE auc_hlr SET lease = 0 WHERE imsi = ?", p, 1, NULL, NULL) !=
      MCIM_OK)
    goto out;
  if (rl->wake) {
    char key[MCIM_HTTP_WAIT_KEY_LEN];
    snprintf(key, sizeof(key), "auc:%s", rl->imsi);
    mcim_http_wake_local(key);
  }
  const uint64_t guard = mcim_monotonic_ns() + GUARD_NS;
  while (mcim_monotonic_ns() < guard) {
    int64_t taken = 0;
    if (mcim_store_query_int(other,
                             "SELECT lease != 0 OR done = 1 FROM auc_hlr WHERE imsi = ?", p, 1,
                             &taken) != MCIM_OK)
      goto out;
    if (taken) {
      rl->reacted_ns = mcim_monotonic_ns();
      rl->ok = true;
      break;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
out:
  mcim_store_close(other);
  return NULL;
}

/* A subscriber added and its pending create claimed by "the other instance" for a minute. */
static void add_claimed(struct syncfx *f, const struct hlr *h, mcim_store_t *other, const char *imsi,
                        struct mcim_auc_sub *sub)
{
  role_add(f, h, imsi, NULL, sub);
  mcim_val_t p[] = {MCIM_INT(mcim_now() + 60), MCIM_TEXT(sub->imsi)};
  assert_int_equal(mcim_store_exec(other, "UPDATE auc_hlr SET lease = ? WHERE imsi = ?", p, 2,
                                   NULL, NULL),
                   MCIM_OK);
}

static void relay_none(const char *key, void *arg)
{
  (void)key;
  (void)arg;
}

/* Vectors asked while another instance holds the claim on the subscriber's pending create (two
 * instances, one HLR): they are waited for (the request says so), not refused with the HLR's
 * UNKNOWN_IDENTITY; once the claim is given back this instance takes the create up before its
 * wait's 3 s bound (found by a recheck of the row, or, with the relay live, by the release's
 * wake: nothing else could end the wait before that bound, the claim being for a minute), and
 * gets its vectors. A claim that never ends is waited for 3 s, not until the claim's end, then
 * the AuC's own answer goes back. */
static void test_avs_await_other(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a;
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN];
  mcim_store_t *other = NULL;
  pthread_t th;
  FILE *log = log_watch_start();

  syncfx_open(&f, h);
  assert_int_equal(mcim_store_open(f.db, NULL, &other), MCIM_OK);
  add_claimed(&f, h, other, "001010000000151", &a);
  log_watch(a.imsi);
  struct releaser rl = {.db = f.db, .imsi = a.imsi};
  uint64_t t0 = mcim_monotonic_ns();
  assert_int_equal(pthread_create(&th, NULL, releaser_main, &rl), 0);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, a.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  pthread_join(th, NULL);
  assert_int_equal(log_waits_now(), 1); /* waited for the other instance */
  assert_true(rl.ok);
  if (rl.reacted_ns - t0 >= TAKEN_UP_NS)
    fail_msg("the released create taken up after %llu ms: at the wait's bound, not by a"
             " recheck", (unsigned long long)((rl.reacted_ns - t0) / 1000000u));
  assert_int_equal(intent_int(&f, a.imsi, "done"), 1);
  hlr_keys_are(h, &a);

  /* a claim that does not end: waited for, bounded, then the HLR's answer. The bound is
   * measured by the clock the wait reads (at least 3 s, whatever the load); the claim runs a
   * minute, so a wait not bounded would last about 60 s, far past the guard. */
  struct mcim_auc_sub b;
  add_claimed(&f, h, other, "001010000000152", &b);
  log_watch(b.imsi);
  t0 = mcim_monotonic_ns();
  mcim_cause_t rc = mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, b.imsi, 1, mcim_now(), &av,
                                             detail, sizeof(detail));
  uint64_t took = mcim_monotonic_ns() - t0;
  assert_int_equal(log_waits_now(), 1);
  if (took < AWAIT_NS || took >= GUARD_NS)
    fail_msg("a claim that does not end waited %llu ms, not its 3 s bound",
             (unsigned long long)(took / 1000000u));
  assert_int_equal(rc, MCIM_UNKNOWN_IDENTITY);
  assert_int_equal(intent_int(&f, b.imsi, "done"), 0);

  /* the relay live (two instances on PostgreSQL): no rechecks of the row, the other instance's
   * release ends the wait through its wake; without that wake it would last the whole 3 s */
  struct mcim_auc_sub c;
  add_claimed(&f, h, other, "001010000000153", &c);
  log_watch(c.imsi);
  mcim_http_wake_relay(relay_none, NULL);
  mcim_http_wake_live(true);
  struct releaser rw = {.db = f.db, .imsi = c.imsi, .wake = true};
  t0 = mcim_monotonic_ns();
  assert_int_equal(pthread_create(&th, NULL, releaser_main, &rw), 0);
  assert_int_equal(mcim_auc_sync_gen_avs_in(h->b, f.skey, f.st, c.imsi, 1, mcim_now(), &av,
                                            detail, sizeof(detail)),
                   MCIM_OK);
  pthread_join(th, NULL);
  mcim_http_wake_relay(NULL, NULL);
  assert_int_equal(log_waits_now(), 1);
  assert_true(rw.ok);
  if (rw.reacted_ns - t0 >= TAKEN_UP_NS)
    fail_msg("the released create taken up after %llu ms: at the wait's bound, not by the"
             " release's wake", (unsigned long long)((rw.reacted_ns - t0) / 1000000u));
  assert_int_equal(intent_int(&f, c.imsi, "done"), 1);
  hlr_keys_are(h, &c);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, c.imsi, detail, sizeof(detail));
  mcim_store_close(other);
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  syncfx_close(&f);
  log_watch_end(log);
}

/* The HLR away: the intent stays pending with the cause and backs off; nothing lost. */
static void test_sync_hlr_down(void **state)
{
  struct hlr *h = *state;
  struct syncfx f;
  struct mcim_auc_sub a;
  struct mcim_auc_backend *down = NULL;
  char ip[INET_ADDRSTRLEN];

  syncfx_open(&f, h);
  /* an address of the same /8 where nothing listens */
  snprintf(ip, sizeof(ip), "127.65.%u.%u", (unsigned)getpid() % 250, 3);
  struct mcim_auc_osmo_hlr_cfg c = {.gsup_addr = ip, .unit_name = "mcim-test-down",
                                    .timeout_ms = 500};
  assert_int_equal(mcim_auc_osmo_hlr_new(&c, &down), MCIM_OK);
  role_add(&f, h, "001010000000131", NULL, &a);
  assert_int_equal(mcim_auc_sync_run_in(down, f.skey, f.st, a.imsi), MCIM_PEER_UNREACHABLE);
  assert_int_equal(intent_int(&f, a.imsi, "done"), 0);
  assert_int_equal(intent_int(&f, a.imsi, "attempts"), 1);
  /* the HLR back: the next run (its backoff passed) creates it */
  assert_int_equal(mcim_store_exec(f.st, "UPDATE auc_hlr SET next_try = 0", NULL, 0, NULL, NULL),
                   MCIM_OK);
  assert_int_equal(mcim_auc_sync_run_in(h->b, f.skey, f.st, NULL), MCIM_OK);
  hlr_keys_are(h, &a);
  char detail[MCIM_AUC_DETAIL_LEN];
  (void)mcim_auc_backend_delete_sub(h->b, NULL, a.imsi, detail, sizeof(detail));
  mcim_auc_backend_free(down);
  syncfx_close(&f);
}

int main(void)
{
  const struct CMUnitTest hlr_tests[] = {
      cmocka_unit_test(test_vectors_accepted),
      cmocka_unit_test(test_resync_old_vector),
      cmocka_unit_test(test_resync_usim_ahead),
      cmocka_unit_test(test_resync_forged_auts),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_create_delete),
      cmocka_unit_test(test_unknown_imsi_and_down),
      cmocka_unit_test(test_sync_create),
      cmocka_unit_test(test_sync_conflict),
      cmocka_unit_test(test_sync_delete),
      cmocka_unit_test(test_sync_hlr_down),
      cmocka_unit_test(test_sync_two_instances),
      cmocka_unit_test(test_avs_await_other),
  };
  const struct CMUnitTest codec_tests[] = {
      cmocka_unit_test(test_malformed_answers),
      cmocka_unit_test(test_fake_hlr),
  };
  int failed = cmocka_run_group_tests_name("codec", codec_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("osmo-hlr", hlr_tests, setup, teardown);
  return failed;
}
