/* The osmo-hlr AuC backend: authentication vectors and resynchronisation over GSUP.
 *
 * GSUP is Osmocom's MAP-like protocol, carried in IPA frames on TCP (3 bytes: length, then
 * protocol 0xEE "osmo extension" and the extension byte 0x05 "GSUP"; identity exchange in
 * protocol 0xFE "CCM"). libosmocore's codec (osmo_gsup_encode / osmo_gsup_decode) builds and
 * parses the messages; the framing and the socket are ours.
 *
 * Why not libosmo-gsup-client: it runs inside an osmocom select loop (osmo_select_main) on
 * one thread, answers through callbacks, and shares talloc contexts and timers that are not
 * thread-safe. mcimd answers requests on a pool of HTTP threads, each of which needs its
 * vectors before it can answer: here a request is a plain blocking exchange on a socket of
 * its own, with a deadline, made by the calling thread (connect, identity, SendAuthInfo,
 * answer, close; about a millisecond on loopback). One exchange at a time per backend: osmo-hlr
 * routes an answer by the peer's IPA name, and of two connections with one name at once only
 * one gets its answers (the other's are dropped: "GSUP client that sent this request not
 * found"), while a name of its own per connection would cost an IND slot of the USIM's each.
 * The codec's encoder needs a msgb: it is allocated per call on the NULL talloc context,
 * which touches no shared state.
 *
 * osmo-hlr's SQN scheme (libosmocore's Milenage, TS 33.102 C.3.2): SQN = SEQ || IND, IND of
 * ind_bitlen bits (5 unless the subscriber's aud3g says otherwise) chosen per GSUP peer
 * name; each vector takes SEQ + 1. mcim's USIM side (mcim_sqn_usim_check) must use the same
 * IND length: MCIM_SQN_IND_BITS_DEFAULT is 5, and the subscriber is created with
 * ind_bitlen 5 (docs/operations.md, "The AuC backend").
 *
 * Subscribers are created and deleted on osmo-hlr's CTRL interface (IPA, osmo extension 0x00,
 * text commands: SET subscriber.create IMSI, SET subscriber.by-imsi-IMSI.aud3g
 * milenage,K,OPC,OPc,IND_BITLEN, SET subscriber.delete IMSI). CTRL has no authentication and
 * shows K and OPc to anyone who asks: it must be bound to loopback.
 *
 * Everything in an answer is checked before it is used: the message type, the IMSI, the
 * number of vectors, each vector's kind (UMTS) and RES length (Milenage: 8 bytes). A
 * malformed answer is MCIM_PEER_BAD_ANSWER with a sentence saying what was wrong. */
#include "roles/auc_backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <osmocom/core/logging.h>
#include <osmocom/core/msgb.h>
#include <osmocom/gsm/gsup.h>
#include <osmocom/gsm/protocol/gsm_04_08_gprs.h>
#include <osmocom/gsm/protocol/ipaccess.h>

#include "mcim/util.h"

enum {
  IPA_HDR_LEN = 3,
  IPA_MAX_PAYLOAD = 4096, /* a SendAuthInfo result with 5 vectors is about 450 bytes */
  OHLR_DEFAULT_PORT = 4222,
  OHLR_DEFAULT_CTRL_PORT = 4259,
  OHLR_DEFAULT_TIMEOUT_MS = 3000,
  MILENAGE_RES_LEN = 8,
};

struct ohlr {
  struct mcim_auc_backend base;
  struct sockaddr_in addr;
  struct sockaddr_in ctrl;
  char unit_name[64];
  int timeout_ms;
  pthread_mutex_t lock; /* one GSUP exchange at a time (see above) */
  unsigned ctrl_id;     /* the last CTRL command's id (atomic) */
};

/* ---- the socket, with a deadline ---- */

static int ms_left(uint64_t deadline)
{
  uint64_t now = mcim_monotonic_ns();
  return now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1;
}

static mcim_cause_t wait_fd(int fd, short ev, uint64_t deadline)
{
  struct pollfd p = {.fd = fd, .events = ev};
  for (;;) {
    int left = ms_left(deadline);
    if (left == 0)
      return MCIM_TIMEOUT;
    int rc = poll(&p, 1, left);
    if (rc > 0)
      return MCIM_OK;
    if (rc < 0 && errno != EINTR)
      return MCIM_IO_ERROR;
  }
}

static mcim_cause_t conn_open(const struct ohlr *h, const struct sockaddr_in *to,
                              uint64_t deadline, int *out, char *detail, size_t dlen)
{
  char ip[INET_ADDRSTRLEN];
  const char *what = to == &h->ctrl ? "CTRL" : "GSUP";
  int fd = -1, err = 0, one = 1;
  socklen_t elen = sizeof(err);
  mcim_cause_t rc = MCIM_OK;

  inet_ntop(AF_INET, &to->sin_addr, ip, sizeof(ip));
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    rc = MCIM_IO_ERROR;
    mcim_detailf(detail, dlen, "osmo-hlr: socket: %s", strerror(errno));
    goto cleanup;
  }
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) != 0) {
    // NOLINTNEXTLINE(bugprone-branch-clone): each branch keeps its own call's errno
    if (errno != EINPROGRESS) {
      err = errno;
    }
    else if ((rc = wait_fd(fd, POLLOUT, deadline)) != MCIM_OK) {
      mcim_detailf(detail, dlen, "osmo-hlr: no connection to %s at %s:%u within %d ms", what, ip,
                   ntohs(to->sin_port), h->timeout_ms);
      goto cleanup;
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
      err = errno;
    }
  }
  if (err) {
    rc = MCIM_PEER_UNREACHABLE;
    mcim_detailf(detail, dlen, "osmo-hlr: cannot connect to %s at %s:%u: %s", what, ip,
                 ntohs(to->sin_port), strerror(err));
  }
cleanup:
  if (rc != MCIM_OK && fd >= 0) {
    close(fd);
    fd = -1;
  }
  *out = fd;
  return rc;
}

static mcim_cause_t send_all(int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
  while (len > 0) {
    ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
    if (w > 0) {
      buf += w;
      len -= (size_t)w;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return MCIM_PEER_UNREACHABLE;
    mcim_cause_t rc = wait_fd(fd, POLLOUT, deadline);
    if (rc != MCIM_OK)
      return rc;
  }
  return MCIM_OK;
}

/* MCIM_PEER_UNREACHABLE when the HLR closed the connection. */
static mcim_cause_t recv_all(int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
  while (len > 0) {
    ssize_t r = recv(fd, buf, len, 0);
    if (r > 0) {
      buf += r;
      len -= (size_t)r;
      continue;
    }
    if (r == 0)
      return MCIM_PEER_UNREACHABLE;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return MCIM_PEER_UNREACHABLE;
    mcim_cause_t rc = wait_fd(fd, POLLIN, deadline);
    if (rc != MCIM_OK)
      return rc;
  }
  return MCIM_OK;
}

/* One IPA frame: protocol byte, optional extension byte, payload. */
static mcim_cause_t ipa_send(int fd, uint8_t proto, int ext, const uint8_t *payload, size_t len,
                             uint64_t deadline)
{
  uint8_t buf[IPA_HDR_LEN + 1 + IPA_MAX_PAYLOAD];
  size_t hl = IPA_HDR_LEN + (ext >= 0 ? 1 : 0);
  size_t body = len + (ext >= 0 ? 1 : 0);

  if (len > IPA_MAX_PAYLOAD)
    return MCIM_TOO_LARGE;
  buf[0] = (uint8_t)(body >> 8);
  buf[1] = (uint8_t)body;
  buf[2] = proto;
  if (ext >= 0)
    buf[3] = (uint8_t)ext;
  memcpy(buf + hl, payload, len);
  mcim_cause_t rc = send_all(fd, buf, hl + len, deadline);
  /* a CTRL frame may carry K and OPc (aud3g): no copy of them is left on the stack */
  mcim_wipe(buf, hl + len);
  return rc;
}

/* ID_RESP to an ID_GET: every tag asked for, the unit name for the names, "" for the rest
 * (libosmocore's layout: 2-byte length counting the tag, the tag, a NUL-terminated string). */
static mcim_cause_t ccm_id_resp(int fd, const struct ohlr *h, const uint8_t *req, size_t len,
                                uint64_t deadline)
{
  uint8_t out[512];
  size_t o = 0;

  out[o++] = IPAC_MSGT_ID_RESP;
  for (size_t i = 1; i + 1 < len && o + 3 + sizeof(h->unit_name) < sizeof(out); i += 2) {
    uint8_t tag = req[i + 1];
    const char *v = (tag == IPAC_IDTAG_UNITNAME || tag == IPAC_IDTAG_SERNR) ? h->unit_name : "";
    size_t vl = strlen(v) + 1;
    out[o++] = (uint8_t)((vl + 1) >> 8);
    out[o++] = (uint8_t)(vl + 1);
    out[o++] = tag;
    memcpy(out + o, v, vl);
    o += vl;
  }
  return ipa_send(fd, IPAC_PROTO_IPACCESS, -1, out, o, deadline);
}

/* libosmocore logs the codec's complaints (an unknown IE, ...) to stderr until logging is
 * initialised; initialised without a target, they go nowhere: our own detail says it. */
static const struct log_info quiet_log = {.cat = NULL, .num_cat = 0};

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;

static void quiet_libosmocore(void)
{
  if (!osmo_log_info)
    (void)log_init(&quiet_log, NULL);
}

/* ---- the answer's checks ---- */

static mcim_cause_t gmm_cause(enum gsm48_gmm_cause c)
{
  switch (c) {
  case GMM_CAUSE_IMSI_UNKNOWN:
    return MCIM_UNKNOWN_IDENTITY;
  case GMM_CAUSE_ILLEGAL_MS:
  case GMM_CAUSE_GPRS_NOTALLOWED:
    return MCIM_SUBSCRIPTION_TERMINATED;
  default:
    return MCIM_PEER_ERROR;
  }
}

mcim_cause_t mcim_auc_osmo_hlr_check_answer_(const uint8_t *msg, size_t len, const char *imsi,
                                             int n, struct mcim_aka_av *avs, char *detail,
                                             size_t dlen)
{
  struct osmo_gsup_message g;
  mcim_cause_t rc = MCIM_PEER_BAD_ANSWER;
  int drc;

  pthread_once(&quiet_once, quiet_libosmocore);
  memset(&g, 0, sizeof(g));
  drc = osmo_gsup_decode(msg, len, &g);
  if (drc < 0) {
    mcim_detailf(detail, dlen, "osmo-hlr: GSUP answer does not decode (%d bytes, libosmocore: %d)",
                 (int)len, drc);
    goto cleanup;
  }
  if (strcmp(g.imsi, imsi) != 0) {
    mcim_detailf(detail, dlen, "osmo-hlr: GSUP answer for another IMSI (%.16s, asked %s)", g.imsi,
                 imsi);
    goto cleanup;
  }
  if (g.message_type == OSMO_GSUP_MSGT_SEND_AUTH_INFO_ERROR) {
    rc = gmm_cause(g.cause);
    mcim_detailf(detail, dlen, "osmo-hlr: SendAuthInfo refused for IMSI %s, GMM cause %d (%s)",
                 imsi, (int)g.cause, get_value_string(gsm48_gmm_cause_names, g.cause));
    goto cleanup;
  }
  if (g.message_type != OSMO_GSUP_MSGT_SEND_AUTH_INFO_RESULT) {
    mcim_detailf(detail, dlen, "osmo-hlr: GSUP answer of type 0x%02x, not a SendAuthInfo result",
                 (unsigned)g.message_type);
    goto cleanup;
  }
  if (g.num_auth_vectors != (size_t)n) {
    mcim_detailf(detail, dlen, "osmo-hlr: %zu vectors in the answer, %d asked", g.num_auth_vectors,
                 n);
    goto cleanup;
  }
  for (int i = 0; i < n; i++) {
    const struct osmo_auth_vector *v = &g.auth_vectors[i];
    if (!(v->auth_types & OSMO_AUTH_TYPE_UMTS)) {
      mcim_detailf(detail, dlen, "osmo-hlr: vector %d is not a UMTS quintet (no AUTN, CK, IK)",
                   i + 1);
      goto cleanup;
    }
    if (v->res_len != MILENAGE_RES_LEN) {
      mcim_detailf(detail, dlen, "osmo-hlr: vector %d has a RES of %u bytes, Milenage's is %d",
                   i + 1, (unsigned)v->res_len, MILENAGE_RES_LEN);
      goto cleanup;
    }
  }
  for (int i = 0; i < n; i++) {
    const struct osmo_auth_vector *v = &g.auth_vectors[i];
    memcpy(avs[i].rand, v->rand, sizeof(avs[i].rand));
    memcpy(avs[i].autn, v->autn, sizeof(avs[i].autn));
    memcpy(avs[i].xres, v->res, sizeof(avs[i].xres));
    memcpy(avs[i].ck, v->ck, sizeof(avs[i].ck));
    memcpy(avs[i].ik, v->ik, sizeof(avs[i].ik));
  }
  rc = MCIM_OK;
cleanup:
  mcim_wipe(g.auth_vectors, sizeof(g.auth_vectors));
  return rc;
}

/* ---- one SendAuthInfo exchange ---- */

static bool imsi_ok(const char *imsi)
{
  size_t n = strlen(imsi);
  return n >= 6 && n <= 15 && strspn(imsi, "0123456789") == n;
}

static mcim_cause_t encode_sai(const char *imsi, int n, const uint8_t *rand, const uint8_t *auts,
                               uint8_t *out, size_t cap, size_t *len, char *detail, size_t dlen)
{
  struct osmo_gsup_message g;
  struct msgb *m = NULL;
  mcim_cause_t rc = MCIM_INTERNAL;

  memset(&g, 0, sizeof(g));
  g.message_type = OSMO_GSUP_MSGT_SEND_AUTH_INFO_REQUEST;
  snprintf(g.imsi, sizeof(g.imsi), "%s", imsi);
  g.rand = rand;
  g.auts = auts;
  /* in a request, the number of vectors wanted (the codec's IE 0x52; without it osmo-hlr
   * answers 5) */
  g.num_auth_vectors = (size_t)n;
  m = msgb_alloc_c(NULL, IPA_MAX_PAYLOAD, "mcim-gsup");
  if (!m) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  if (osmo_gsup_encode(m, &g) < 0) {
    mcim_detailf(detail, dlen, "osmo-hlr: cannot encode a SendAuthInfo request for IMSI %s", imsi);
    goto cleanup;
  }
  if (msgb_length(m) > cap)
    goto cleanup;
  memcpy(out, msgb_data(m), msgb_length(m));
  *len = msgb_length(m);
  rc = MCIM_OK;
cleanup:
  msgb_free(m);
  return rc;
}

static mcim_cause_t sai(struct ohlr *h, const char *imsi, int n, const uint8_t *rand,
                        const uint8_t *auts, struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  uint64_t deadline = mcim_monotonic_ns() + (uint64_t)h->timeout_ms * 1000000u;
  uint8_t req[512], hdr[IPA_HDR_LEN], *body = NULL;
  size_t req_len = 0;
  int fd = -1, sent = 0;
  mcim_cause_t rc;

  if (detail && dlen)
    detail[0] = '\0';
  if (!imsi_ok(imsi)) {
    mcim_detailf(detail, dlen, "osmo-hlr: not an IMSI (6 to 15 digits)");
    return MCIM_INVALID_ARGUMENT;
  }
  rc = encode_sai(imsi, n, rand, auts, req, sizeof(req), &req_len, detail, dlen);
  if (rc != MCIM_OK)
    return rc;
  body = malloc(IPA_MAX_PAYLOAD);
  if (!body)
    return MCIM_NO_MEMORY;
  pthread_mutex_lock(&h->lock);
  rc = conn_open(h, &h->addr, deadline, &fd, detail, dlen);
  /* frames until the answer: the HLR's identity request first, pings, then GSUP */
  while (rc == MCIM_OK) {
    rc = recv_all(fd, hdr, sizeof(hdr), deadline);
    size_t blen = ((size_t)hdr[0] << 8) | hdr[1];
    if (rc == MCIM_OK && blen > IPA_MAX_PAYLOAD) {
      rc = MCIM_PEER_BAD_ANSWER;
      mcim_detailf(detail, dlen, "osmo-hlr: IPA frame of %zu bytes (at most %d expected)", blen,
                   IPA_MAX_PAYLOAD);
    }
    if (rc == MCIM_OK)
      rc = recv_all(fd, body, blen, deadline);
    if (rc != MCIM_OK)
      break;
    if (hdr[2] == IPAC_PROTO_IPACCESS && blen >= 1) {
      if (body[0] == IPAC_MSGT_PING) {
        rc = ipa_send(fd, IPAC_PROTO_IPACCESS, -1, (const uint8_t[]){IPAC_MSGT_PONG}, 1,
                      deadline);
      }
      else if (body[0] == IPAC_MSGT_ID_GET && !sent) {
        rc = ccm_id_resp(fd, h, body, blen, deadline);
        if (rc == MCIM_OK)
          rc = ipa_send(fd, IPAC_PROTO_OSMO, IPAC_PROTO_EXT_GSUP, req, req_len, deadline);
        sent = 1;
      }
      else if (body[0] == IPAC_MSGT_ID_NACK) {
        rc = MCIM_PEER_ERROR;
        mcim_detailf(detail, dlen, "osmo-hlr: refused our IPA identity (unit name \"%s\")",
                     h->unit_name);
      }
      continue; /* ID_ACK, PONG: nothing to do */
    }
    if (hdr[2] == IPAC_PROTO_OSMO && blen >= 1 && body[0] == IPAC_PROTO_EXT_GSUP && sent) {
      rc = mcim_auc_osmo_hlr_check_answer_(body + 1, blen - 1, imsi, n, avs, detail, dlen);
      break;
    }
    rc = MCIM_PEER_BAD_ANSWER;
    mcim_detailf(detail, dlen, "osmo-hlr: unexpected IPA frame (protocol 0x%02x, %zu bytes)",
                 hdr[2], blen);
  }
  if (rc == MCIM_TIMEOUT && (!detail || !detail[0]))
    mcim_detailf(detail, dlen, "osmo-hlr: no SendAuthInfo answer for IMSI %s within %d ms", imsi,
                 h->timeout_ms);
  else if (rc == MCIM_PEER_UNREACHABLE && (!detail || !detail[0]))
    mcim_detailf(detail, dlen, "osmo-hlr: the HLR closed the GSUP connection before answering");
  else if (rc != MCIM_OK && (!detail || !detail[0]))
    mcim_detailf(detail, dlen, "osmo-hlr: SendAuthInfo for IMSI %s failed: %s", imsi,
                 mcim_cause_text(rc));
  if (fd >= 0)
    close(fd);
  pthread_mutex_unlock(&h->lock);
  mcim_wipe(body, IPA_MAX_PAYLOAD);
  free(body);
  return rc;
}

static mcim_cause_t ohlr_gen_avs(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi,
                                 int n, int64_t now, struct mcim_aka_av *avs, char *detail,
                                 size_t dlen)
{
  (void)st;
  (void)now;
  return sai((struct ohlr *)b, imsi, n, NULL, NULL, avs, detail, dlen);
}

static mcim_cause_t ohlr_resync(struct mcim_auc_backend *b, mcim_store_t *st, const char *imsi,
                                const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  struct mcim_aka_av spare;
  mcim_cause_t rc;

  (void)st;
  (void)now;
  rc = sai((struct ohlr *)b, imsi, n > 0 ? n : 1, rand, auts, n > 0 ? avs : &spare, detail,
           dlen);
  if (rc == MCIM_UNKNOWN_IDENTITY) {
    /* osmo-hlr 1.5 answers an AUTS whose MAC-S does not verify with "IMSI unknown" too: a
     * plain request (one SQN spent) tells the two apart */
    char probe[MCIM_AUC_DETAIL_LEN];
    if (sai((struct ohlr *)b, imsi, 1, NULL, NULL, &spare, probe, sizeof(probe)) == MCIM_OK) {
      rc = MCIM_AUTS_INVALID;
      mcim_detailf(
          detail, dlen,
          "osmo-hlr: AUTS for IMSI %s refused (MAC-S does not verify; osmo-hlr says \"IMSI "
          "unknown\" for that, and the IMSI is known)",
          imsi);
    }
  }
  mcim_wipe(&spare, sizeof(spare));
  return rc;
}

/* ---- CTRL ---- */

/* One CTRL command ("SET <id> <var> <value>") and its reply's text after "<verb> <id> ":
 * MCIM_OK for a SET_REPLY / GET_REPLY, MCIM_PEER_ERROR for an ERROR (its text in `reply`). */
static mcim_cause_t ctrl_cmd(struct ohlr *h, const char *verb, const char *var,
                             const char *value, char *reply, size_t cap, char *detail,
                             size_t dlen)
{
  uint64_t deadline = mcim_monotonic_ns() + (uint64_t)h->timeout_ms * 1000000u;
  char cmd[320], want[32], err[32], *body = NULL;
  uint8_t hdr[IPA_HDR_LEN];
  unsigned id;
  int fd = -1, n;
  mcim_cause_t rc;

  reply[0] = '\0';
  if (detail && dlen)
    detail[0] = '\0';
  id = __atomic_add_fetch(&h->ctrl_id, 1, __ATOMIC_RELAXED);
  n = snprintf(cmd, sizeof(cmd), "%s %u %s%s%s", verb, id, var, value ? " " : "",
               value ? value : "");
  if (n < 0 || (size_t)n >= sizeof(cmd))
    return MCIM_INVALID_ARGUMENT;
  snprintf(want, sizeof(want), "%s_REPLY %u ", verb, id);
  snprintf(err, sizeof(err), "ERROR %u ", id);
  body = malloc(IPA_MAX_PAYLOAD + 1);
  if (!body) {
    mcim_wipe(cmd, sizeof(cmd));
    return MCIM_NO_MEMORY;
  }
  rc = conn_open(h, &h->ctrl, deadline, &fd, detail, dlen);
  if (rc == MCIM_OK)
    rc = ipa_send(fd, IPAC_PROTO_OSMO, IPAC_PROTO_EXT_CTRL, (const uint8_t *)cmd, (size_t)n,
                  deadline);
  while (rc == MCIM_OK) {
    rc = recv_all(fd, hdr, sizeof(hdr), deadline);
    size_t blen = ((size_t)hdr[0] << 8) | hdr[1];
    if (rc == MCIM_OK && blen > IPA_MAX_PAYLOAD) {
      rc = MCIM_PEER_BAD_ANSWER;
      mcim_detailf(detail, dlen, "osmo-hlr: CTRL frame of %zu bytes", blen);
    }
    if (rc == MCIM_OK)
      rc = recv_all(fd, (uint8_t *)body, blen, deadline);
    if (rc != MCIM_OK)
      break;
    body[blen] = '\0';
    if (hdr[2] == IPAC_PROTO_IPACCESS && blen >= 1 && body[0] == IPAC_MSGT_PING) {
      rc = ipa_send(fd, IPAC_PROTO_IPACCESS, -1, (const uint8_t[]){IPAC_MSGT_PONG}, 1,
                    deadline);
      continue;
    }
    if (hdr[2] != IPAC_PROTO_OSMO || blen < 1 || body[0] != IPAC_PROTO_EXT_CTRL)
      continue; /* not CTRL: identity, pong */
    if (strlen(body + 1) != blen - 1) {
      rc = MCIM_PEER_BAD_ANSWER;
      mcim_detailf(detail, dlen, "osmo-hlr: CTRL reply with a NUL byte");
    } else if (strncmp(body + 1, want, strlen(want)) == 0) {
      snprintf(reply, cap, "%s", body + 1 + strlen(want));
      break;
    } else if (strncmp(body + 1, err, strlen(err)) == 0) {
      snprintf(reply, cap, "%s", body + 1 + strlen(err));
      rc = MCIM_PEER_ERROR;
      break;
    }
    /* a TRAP or another id's reply: not ours */
  }
  if (rc == MCIM_TIMEOUT && (!detail || !detail[0]))
    mcim_detailf(detail, dlen, "osmo-hlr: no CTRL reply to %s %s within %d ms", verb, var,
                 h->timeout_ms);
  else if (rc == MCIM_PEER_UNREACHABLE && (!detail || !detail[0]))
    mcim_detailf(detail, dlen, "osmo-hlr: the HLR closed the CTRL connection before answering");
  if (fd >= 0)
    close(fd);
  mcim_wipe(cmd, sizeof(cmd));
  mcim_wipe(body, IPA_MAX_PAYLOAD + 1);
  free(body);
  return rc;
}

static mcim_cause_t ohlr_delete_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                    const char *imsi, char *detail, size_t dlen)
{
  char reply[160];
  mcim_cause_t rc;

  (void)st;
  if (!imsi_ok(imsi)) {
    mcim_detailf(detail, dlen, "osmo-hlr: not an IMSI (6 to 15 digits)");
    return MCIM_INVALID_ARGUMENT;
  }
  rc = ctrl_cmd((struct ohlr *)b, "SET", "subscriber.delete", imsi, reply, sizeof(reply), detail,
                dlen);
  if (rc == MCIM_PEER_ERROR) {
    /* osmo-hlr 1.5: "Subscriber doesn't exist." */
    rc = strstr(reply, "doesn't exist") || strstr(reply, "No such subscriber")
             ? MCIM_UNKNOWN_IDENTITY
             : MCIM_PEER_ERROR;
    mcim_detailf(detail, dlen, "osmo-hlr: subscriber.delete %s refused: %.100s", imsi, reply);
  }
  return rc;
}

/* The HLR's Milenage data of `sub` as CTRL's aud3g takes and answers it:
 * "milenage,<K>,OPC,<OPc>,<IND bits>" in hex (K and OPc in clear: the caller wipes `out`). */
static void aud3g_of(const struct mcim_auc_sub *sub, char *out, size_t n)
{
  char k[2 * MCIM_MILENAGE_K_LEN + 1], opc[2 * MCIM_MILENAGE_OP_LEN + 1];
  mcim_hex_encode(sub->k, sizeof(sub->k), k);
  mcim_hex_encode(sub->opc, sizeof(sub->opc), opc);
  snprintf(out, n, "milenage,%s,OPC,%s,%u", k, opc, (unsigned)MCIM_SQN_IND_BITS_DEFAULT);
  mcim_wipe(k, sizeof(k));
  mcim_wipe(opc, sizeof(opc));
}

static mcim_cause_t ohlr_create_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                    const struct mcim_auc_sub *sub, char *detail, size_t dlen)
{
  struct ohlr *h = (struct ohlr *)b;
  char var[64], value[128], reply[160];
  mcim_cause_t rc;

  (void)st;
  if (!imsi_ok(sub->imsi)) {
    mcim_detailf(detail, dlen, "osmo-hlr: not an IMSI (6 to 15 digits)");
    return MCIM_INVALID_ARGUMENT;
  }
  rc = ctrl_cmd(h, "SET", "subscriber.create", sub->imsi, reply, sizeof(reply), detail, dlen);
  if (rc == MCIM_PEER_ERROR) {
    /* osmo-hlr 1.5: "Subscriber already exists."; for another wording, ask */
    char probe[MCIM_AUC_DETAIL_LEN], answer[160];
    snprintf(var, sizeof(var), "subscriber.by-imsi-%s.info", sub->imsi);
    rc = strstr(reply, "already exists") ||
                 ctrl_cmd(h, "GET", var, NULL, answer, sizeof(answer), probe, sizeof(probe)) ==
                     MCIM_OK
             ? MCIM_CONFLICT
             : MCIM_PEER_ERROR;
    mcim_detailf(detail, dlen, "osmo-hlr: subscriber.create %s refused: %.60s%s", sub->imsi, reply,
                 rc == MCIM_CONFLICT ? " (the IMSI exists)" : "");
    return rc;
  }
  if (rc != MCIM_OK)
    return rc;
  snprintf(var, sizeof(var), "subscriber.by-imsi-%s.aud3g", sub->imsi);
  aud3g_of(sub, value, sizeof(value));
  rc = ctrl_cmd(h, "SET", var, value, reply, sizeof(reply), detail, dlen);
  if (rc == MCIM_PEER_ERROR)
    mcim_detailf(detail, dlen, "osmo-hlr: setting the Milenage data of %s refused: %.80s",
                 sub->imsi, reply);
  if (rc != MCIM_OK) {
    /* no subscriber without its keys: undone (if this fails too, a retry of the create
     * finds it and says CONFLICT) */
    char undo[MCIM_AUC_DETAIL_LEN];
    (void)ohlr_delete_sub(b, st, sub->imsi, undo, sizeof(undo));
  }
  mcim_wipe(value, sizeof(value));
  return rc;
}

/* The HLR's Milenage data of sub->imsi against sub's (GET ...aud3g answers "<var>
 * MILENAGE,K,OPC,OPc,IND_BITLEN", "<var> none" for a subscriber without 3G data (osmo-hlr
 * 1.5), an ERROR for an unknown IMSI). */
static mcim_cause_t ohlr_same_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                  const struct mcim_auc_sub *sub, char *detail, size_t dlen)
{
  struct ohlr *h = (struct ohlr *)b;
  char var[64], reply[300], want[200], ours[128];
  mcim_cause_t rc;

  (void)st;
  if (!imsi_ok(sub->imsi)) {
    mcim_detailf(detail, dlen, "osmo-hlr: not an IMSI (6 to 15 digits)");
    return MCIM_INVALID_ARGUMENT;
  }
  snprintf(var, sizeof(var), "subscriber.by-imsi-%s.aud3g", sub->imsi);
  rc = ctrl_cmd(h, "GET", var, NULL, reply, sizeof(reply), detail, dlen);
  if (rc == MCIM_PEER_ERROR) {
    char probe[MCIM_AUC_DETAIL_LEN], answer[160], info[64];
    snprintf(info, sizeof(info), "subscriber.by-imsi-%s.info", sub->imsi);
    rc = ctrl_cmd(h, "GET", info, NULL, answer, sizeof(answer), probe, sizeof(probe)) == MCIM_OK
             ? MCIM_NOT_FOUND
             : MCIM_UNKNOWN_IDENTITY;
    mcim_detailf(detail, dlen, "osmo-hlr: %s %s", sub->imsi,
                 rc == MCIM_NOT_FOUND ? "exists without Milenage data" : "is unknown");
    mcim_wipe(reply, sizeof(reply));
    return rc;
  }
  if (rc != MCIM_OK)
    return rc;
  snprintf(want, sizeof(want), "%s none", var); /* osmo-hlr 1.5: no 3G data */
  if (strcmp(reply, want) == 0) {
    mcim_detailf(detail, dlen, "osmo-hlr: %s exists without Milenage data", sub->imsi);
    return MCIM_NOT_FOUND;
  }
  aud3g_of(sub, ours, sizeof(ours));
  snprintf(want, sizeof(want), "%s %s", var, ours); /* it answers MILENAGE: compared caseless */
  rc = strcasecmp(reply, want) == 0 ? MCIM_OK : MCIM_CONFLICT;
  if (rc == MCIM_CONFLICT) /* never the keys themselves */
    mcim_detailf(detail, dlen, "osmo-hlr: %s exists with other Milenage data than ours",
                 sub->imsi);
  mcim_wipe(ours, sizeof(ours));
  mcim_wipe(want, sizeof(want));
  mcim_wipe(reply, sizeof(reply));
  return rc;
}

static void ohlr_free(struct mcim_auc_backend *b)
{
  struct ohlr *h = (struct ohlr *)b;
  pthread_mutex_destroy(&h->lock);
  free(h);
}

static const struct mcim_auc_backend_ops ohlr_ops = {
    .name = "osmo-hlr",
    .gen_avs = ohlr_gen_avs,
    .resync = ohlr_resync,
    .create_sub = ohlr_create_sub,
    .delete_sub = ohlr_delete_sub,
    .same_sub = ohlr_same_sub,
    .free = ohlr_free,
};

mcim_cause_t mcim_auc_osmo_hlr_new(const struct mcim_auc_osmo_hlr_cfg *cfg,
                                   struct mcim_auc_backend **out)
{
  struct ohlr *h;
  size_t nl;

  if (!cfg || !out || !cfg->gsup_addr || !cfg->unit_name)
    return MCIM_INVALID_ARGUMENT;
  nl = strlen(cfg->unit_name);
  /* at most 10 minutes: a larger one would overflow the int poll() takes (ms_left) */
  if (nl < 1 || nl > 63 || cfg->timeout_ms < 0 || cfg->timeout_ms > 600000)
    return MCIM_INVALID_ARGUMENT;
  pthread_once(&quiet_once, quiet_libosmocore);
  h = calloc(1, sizeof(*h));
  if (!h)
    return MCIM_NO_MEMORY;
  h->base.ops = &ohlr_ops;
  h->addr.sin_family = AF_INET;
  h->addr.sin_port = htons(cfg->gsup_port ? cfg->gsup_port : OHLR_DEFAULT_PORT);
  h->ctrl.sin_family = AF_INET;
  h->ctrl.sin_port = htons(cfg->ctrl_port ? cfg->ctrl_port : OHLR_DEFAULT_CTRL_PORT);
  if (inet_pton(AF_INET, cfg->gsup_addr, &h->addr.sin_addr) != 1 ||
      inet_pton(AF_INET, cfg->ctrl_addr ? cfg->ctrl_addr : cfg->gsup_addr, &h->ctrl.sin_addr) !=
          1) {
    free(h);
    return MCIM_INVALID_ARGUMENT;
  }
  memcpy(h->unit_name, cfg->unit_name, nl + 1);
  h->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : OHLR_DEFAULT_TIMEOUT_MS;
  h->base.request_timeout_ms = h->timeout_ms;
  pthread_mutex_init(&h->lock, NULL);
  *out = &h->base;
  return MCIM_OK;
}
