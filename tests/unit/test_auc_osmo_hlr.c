/* The osmo-hlr AuC backend (src/roles/auc_osmo_hlr.c) against a REAL osmo-hlr: started here
 * in a temporary folder with its own configuration and database, on a loopback address of
 * its own, polled until its ports answer (tests/unit/osmo_hlr_fixture.h). A missing osmo-hlr
 * fails the test (scripts/deps.sh installs it).
 *
 * The subscriber is created over CTRL with TS 35.208 test set 1's K and OPc and ind_bitlen 5;
 * the vectors osmo-hlr generates go through mcim's own USIM side (mcim_aka_usim_check: MAC-A,
 * then the SQN of TS 33.102 Annex C with MCIM_SQN_IND_BITS_DEFAULT = 5) and must be accepted,
 * with RES = XRES, across many attaches and resynchronisations. The answers' checks are also
 * fed malformed GSUP, and a fake HLR's scripted bytes. A role's subscribers kept in the HLR
 * (src/roles/auc_sync.c) are test_auc_osmo_hlr_sync.c's. */
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
#include "osmo_hlr_fixture.h"


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
  };
  const struct CMUnitTest codec_tests[] = {
      cmocka_unit_test(test_malformed_answers),
      cmocka_unit_test(test_fake_hlr),
  };
  int failed = cmocka_run_group_tests_name("codec", codec_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("osmo-hlr", hlr_tests, setup, teardown);
  return failed;
}
