/* The crypto floor of a procedure (issue 10, point 7): each costly operation mcim does, timed
 * alone with the library's own code, then priced by the operation counts `mcim loadgen`
 * measured (its --json report: crypto_ops_per_procedure, include/mcim/opcount.h).
 *
 * Operations (each the call mcim makes, in one thread, CPU time of that thread):
 *   es256_sign       mcim_jws_sign of a statement with the usual claims
 *   es256_verify     mcim_jws_verify of it (every claim checked, no replay cache; the
 *                    remembered signatures cleared before each, untimed: the verification)
 *   ecdh_es_encrypt  mcim_jwe_encrypt of 200 bytes (ephemeral key + ECDH + A256GCM, cjose)
 *   ecdh_es_decrypt  mcim_jwe_decrypt of it (ECDH + Concat KDF + A256GCM)
 *   cert_verify      mcim_pki_cert_verify of a lab role certificate against the operators' CA
 *                    (its kept verdicts cleared before each, untimed)
 *   aka_av_generate  as the AuC does it per request: a Milenage context keyed for the
 *                    subscriber (mcim_milenage_new, set_opc) and mcim_aka_gen_av, RAND from the
 *                    CSPRNG
 *   aka_resync       a context keyed, mcim_aka_resync of a valid AUTS
 *   aka_usim_check   as the TRE does it: a context keyed and mcim_aka_usim_check of a fresh
 *                    challenge (the TRE's own file and JSON work not included)
 *   tls_*_full       a full mutual-TLS handshake between the stacks mcim uses: GnuTLS as the
 *                    roles' server (libmicrohttpd's TLS) with their policy and credentials,
 *                    the client's certificate required and its chain verified; OpenSSL as the
 *                    agent's client (http_lite_conn.c's policy, the server verified against the
 *                    CA), presenting a client certificate as between roles. Both ends are
 *                    stepped in this thread over a socket pair, each side's CPU apart: the
 *                    handshake's own cost, no scheduling, no waiting. Also shown, not used
 *                    in the floor: the same through the real server on loopback
 *                    (mcim_http_server_start + mcim_http_lite, a GET on a new connection minus
 *                    a GET on a kept one), whose server side counts libmicrohttpd polling the
 *                    connection while the client waits to be scheduled.
 *   tls_*_resumed    priced as full (no resumption is measured here; mcim's clients rarely
 *                    resume: the counts say how often)
 * Rounds are interleaved and the median per operation is kept.
 *
 * usage: bench_floor [--counts FILE] [--round-ms MS] [--rounds N] [--cores N]
 *   FILE: a loadgen --json report (its last line that is a JSON object with
 *   crypto_ops_per_procedure) or that object itself. With it: the floor, CPU ms per procedure
 *   if only those operations ran, and its rate on N cores (default: the online CPUs).
 * The last line is JSON. */
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/http.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/opcount.h"
#include "mcim/pki.h"
#include "mcim/sqn.h"
#include "mcim/util.h"

#include "floor_work.h"

enum { MAX_ROUNDS = 51, BATCH = 16 };

struct fctx {
  mcim_jose_key_t *key, *pub;
  char *jws;
  char *jwe;
  X509 *leaf, *ca;
  uint8_t k[16], opc[16];
  struct mcim_sqn_params sqnp;
  struct mcim_sqn_usim usim;
  uint64_t he_sqn;
  uint8_t auts_rand[16], auts[MCIM_AKA_AUTS_LEN];
  struct mcim_http_server *srv;
  char url[128];
  struct mcim_http_client_cfg ccfg;
  struct mcim_http_lite *kept;  /* one connection kept alive */
  struct mcim_http_lite *fresh; /* a new connection per call (its TLS context kept) */
  struct floor_work work;       /* the design floor's units (floor_work.c) */
  double tls_server_ns; /* the server side of the last tls round, per handshake */
  /* the handshake alone, both ends in this thread over a socket pair */
  gnutls_certificate_credentials_t xcred;
  gnutls_priority_t prio;
  SSL_CTX *cctx;
  double pair_server_ns; /* the server side of the last pair round, per handshake */
};


static mcim_claims_t claims(void)
{
  mcim_claims_t c = {.iss = "sho-a", .sub = "dev1", .aud = "ro", .typ = "mcim-order+jwt",
                     .txn = "0123456789abcdef0123456789abcdef", .exp = mcim_now() + 300};
  return c;
}

/* Each op: n operations, CPU ns of what is timed (only the operation), -1 on failure. */
typedef int64_t (*op_fn)(struct fctx *f, int n);

static int64_t op_sign(struct fctx *f, int n)
{
  mcim_claims_t c = claims();
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    char *out = NULL;
    if (mcim_jws_sign(f->key, &c, &out) != MCIM_OK)
      return -1;
    free(out);
  }
  return bench_thread_ns() - t0;
}

static int64_t op_verify(struct fctx *f, int n)
{
  mcim_jws_expect_t x = {.iss = "sho-a", .aud = "ro", .typ = "mcim-order+jwt", .skew = 60};
  size_t len = strlen(f->jws);
  int64_t spent = 0;
  for (int i = 0; i < n; i++) {
    /* the same JWS again would be a remembered signature, not a verification */
    mcim_jws_verdicts_clear();
    int64_t t0 = bench_thread_ns();
    if (mcim_jws_verify(f->jws, len, f->pub, &x, NULL) != MCIM_OK)
      return -1;
    spent += bench_thread_ns() - t0;
  }
  return spent;
}

static const uint8_t content[200] = {'{', '"', 'k', '"'};

static int64_t op_encrypt(struct fctx *f, int n)
{
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    char *out = NULL;
    if (mcim_jwe_encrypt(f->pub, content, sizeof(content), &out) != MCIM_OK)
      return -1;
    free(out);
  }
  return bench_thread_ns() - t0;
}

static int64_t op_decrypt(struct fctx *f, int n)
{
  size_t len = strlen(f->jwe);
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    if (mcim_jwe_decrypt(f->key, f->jwe, len, &pt, &ptlen) != MCIM_OK)
      return -1;
    mcim_jose_secret_free(pt, ptlen);
  }
  return bench_thread_ns() - t0;
}

static int64_t op_cert(struct fctx *f, int n)
{
  int64_t spent = 0;
  for (int i = 0; i < n; i++) {
    mcim_pki_verdicts_clear(); /* a kept verdict is not a chain verification */
    int64_t t0 = bench_thread_ns();
    if (mcim_pki_cert_verify(f->leaf, f->ca, MCIM_CERT_TLS, "ro", 0) != MCIM_OK)
      return -1;
    spent += bench_thread_ns() - t0;
  }
  return spent;
}

static mcim_cause_t keyed(struct fctx *f, mcim_milenage_t **m)
{
  mcim_cause_t rc = mcim_milenage_new(m);
  return rc == MCIM_OK ? mcim_milenage_set_opc(*m, f->k, f->opc) : rc;
}

static int64_t op_av(struct fctx *f, int n)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  struct mcim_aka_av av;
  uint8_t sqn[MCIM_SQN_LEN];
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    mcim_milenage_t *m = NULL;
    mcim_sqn_to_bytes(++f->he_sqn << 5, sqn);
    mcim_cause_t rc = keyed(f, &m);
    if (rc == MCIM_OK)
      rc = mcim_aka_gen_av(m, NULL, sqn, amf, &av);
    mcim_milenage_free(m);
    if (rc != MCIM_OK)
      return -1;
  }
  int64_t t = bench_thread_ns() - t0;
  mcim_wipe(&av, sizeof(av));
  return t;
}

static int64_t op_resync(struct fctx *f, int n)
{
  uint8_t sqn_ms[MCIM_SQN_LEN];
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    mcim_milenage_t *m = NULL;
    mcim_cause_t rc = keyed(f, &m);
    if (rc == MCIM_OK)
      rc = mcim_aka_resync(m, f->auts_rand, f->auts, sqn_ms);
    mcim_milenage_free(m);
    if (rc != MCIM_OK)
      return -1;
  }
  return bench_thread_ns() - t0;
}

static int64_t op_usim(struct fctx *f, int n)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  struct mcim_aka_av av[BATCH];
  int64_t total = 0;
  for (int done = 0; done < n; done += BATCH) {
    int b = n - done < BATCH ? n - done : BATCH;
    mcim_milenage_t *m = NULL;
    if (keyed(f, &m) != MCIM_OK)
      return -1;
    for (int i = 0; i < b; i++) { /* the network's challenges, not timed */
      uint8_t sqn[MCIM_SQN_LEN];
      mcim_sqn_to_bytes(++f->he_sqn << 5, sqn);
      if (mcim_aka_gen_av(m, NULL, sqn, amf, &av[i]) != MCIM_OK)
        return -1;
    }
    mcim_milenage_free(m);
    int64_t t0 = bench_thread_ns();
    for (int i = 0; i < b; i++) {
      struct mcim_sqn_usim next;
      struct mcim_aka_usim_out out;
      m = NULL;
      mcim_cause_t rc = keyed(f, &m);
      if (rc == MCIM_OK)
        rc = mcim_aka_usim_check(m, &f->sqnp, &f->usim, av[i].rand, av[i].autn, &next, &out);
      mcim_milenage_free(m);
      if (rc != MCIM_OK)
        return -1;
      f->usim = next;
    }
    total += bench_thread_ns() - t0;
  }
  mcim_wipe(av, sizeof(av));
  return total;
}

static mcim_cause_t get(struct mcim_http_lite *cli, const char *url)
{
  struct mcim_http_result res;
  mcim_cause_t rc = mcim_http_lite_request(cli, "GET", url, NULL, NULL, &res);
  mcim_http_result_clear(&res);
  return rc;
}

/* A GET on a kept-alive connection, what op_tls subtracts: the client's CPU returned, the
 * server's in kept_server_ns. */
static double kept_server_ns;

static int64_t op_kept_server(struct fctx *f, int n)
{
  int64_t p0 = bench_process_ns(), t0 = bench_thread_ns();
  for (int i = 0; i < n; i++)
    if (get(f->kept, f->url) != MCIM_OK)
      return -1;
  int64_t client = bench_thread_ns() - t0;
  kept_server_ns = (double)(bench_process_ns() - p0 - client) / n;
  return client;
}

static int64_t op_tls(struct fctx *f, int n)
{
  int64_t client = 0, p0 = bench_process_ns();
  for (int i = 0; i < n; i++) {
    int64_t t0 = bench_thread_ns();
    mcim_http_lite_close_connections(f->fresh);
    mcim_cause_t rc = get(f->fresh, f->url);
    client += bench_thread_ns() - t0;
    if (rc != MCIM_OK)
      return -1;
  }
  f->tls_server_ns = (double)(bench_process_ns() - p0 - client) / n;
  return client;
}

/* The roles' server policy (src/net/http_server.c) and the agent's client's (http_lite_conn.c). */
#define TLS_PRIORITIES                                                                     \
  "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"   \
  "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-SIGN-RSA-SHA1:"      \
  "-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE"
#define TLS12_CIPHERS                                                                      \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"                           \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"  \
  "ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_CIPHERS "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

static mcim_cause_t pair_setup(struct fctx *f, const char *ca, const char *cert, const char *key,
                               const char *acert, const char *akey)
{
  if (gnutls_certificate_allocate_credentials(&f->xcred) < 0 ||
      gnutls_certificate_set_x509_key_file(f->xcred, cert, key, GNUTLS_X509_FMT_PEM) < 0 ||
      gnutls_certificate_set_x509_trust_file(f->xcred, ca, GNUTLS_X509_FMT_PEM) < 0 ||
      gnutls_priority_init(&f->prio, TLS_PRIORITIES, NULL) < 0)
    return MCIM_CRYPTO_ERROR;
  f->cctx = SSL_CTX_new(TLS_client_method());
  if (!f->cctx || !SSL_CTX_set_min_proto_version(f->cctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_cipher_list(f->cctx, TLS12_CIPHERS) ||
      !SSL_CTX_set_ciphersuites(f->cctx, TLS13_CIPHERS) ||
      SSL_CTX_load_verify_locations(f->cctx, ca, NULL) != 1 ||
      SSL_CTX_use_certificate_chain_file(f->cctx, acert) != 1 ||
      SSL_CTX_use_PrivateKey_file(f->cctx, akey, SSL_FILETYPE_PEM) != 1)
    return MCIM_CRYPTO_ERROR;
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(f->cctx),
                              X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_TRUSTED_FIRST);
  SSL_CTX_set_verify(f->cctx, SSL_VERIFY_PEER, NULL);
  return MCIM_OK;
}

/* One full handshake, GnuTLS server (the roles' credentials and policy, the client's
 * certificate required and its chain verified as the server does for an authenticated route)
 * and OpenSSL client (the agent's policy, the server verified against the CA), both ends
 * stepped in this thread over a socket pair: each side's own CPU, no waiting counted. */
static int64_t op_tls_pair(struct fctx *f, int n)
{
  int64_t client = 0, server = 0;
  for (int i = 0; i < n; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
      return -1;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    gnutls_session_t s = NULL;
    SSL *c = NULL;
    bool ok = false, cdone = false, sdone = false;
    int64_t t0 = bench_thread_ns();
    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) == 0 &&
        gnutls_priority_set(s, f->prio) == 0 &&
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, f->xcred) == 0) {
      gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
      gnutls_transport_set_int(s, sv[0]);
    }
    server += bench_thread_ns() - t0;
    t0 = bench_thread_ns();
    c = SSL_new(f->cctx);
    if (c) {
      SSL_set_fd(c, sv[1]);
      SSL_set_connect_state(c);
    }
    client += bench_thread_ns() - t0;
    for (int step = 0; s && c && step < 40 && !(cdone && sdone); step++) {
      if (!cdone) {
        t0 = bench_thread_ns();
        int r = SSL_do_handshake(c);
        client += bench_thread_ns() - t0;
        if (r == 1)
          cdone = true;
        else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
                 SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
          break;
      }
      if (!sdone) {
        t0 = bench_thread_ns();
        int g = gnutls_handshake(s);
        if (g == 0) {
          unsigned status = 1;
          sdone = gnutls_certificate_verify_peers2(s, &status) == 0 && status == 0;
          if (!sdone)
            step = 40;
        } else if (gnutls_error_is_fatal(g)) {
          step = 40;
        }
        server += bench_thread_ns() - t0;
      }
    }
    ok = cdone && sdone;
    t0 = bench_thread_ns();
    gnutls_deinit(s);
    server += bench_thread_ns() - t0;
    t0 = bench_thread_ns();
    SSL_free(c);
    client += bench_thread_ns() - t0;
    close(sv[0]);
    close(sv[1]);
    if (!ok)
      return -1;
  }
  f->pair_server_ns = (double)server / n;
  return client;
}

static void h_ping(void *ctx, const struct mcim_http_request *req,
                   struct mcim_http_response *resp)
{
  (void)ctx;
  (void)req;
  mcim_http_reply_json(resp, 200, json_pack("{s:b}", "ok", 1));
}

static const struct mcim_http_route routes[] = {{"GET", "/v1/ping", h_ping, 0},
                                                {"POST", "/v1/echo", floor_work_echo, 0}};

static char pki_dir[64];
static const char *store_locator; /* --store: the design floor's store units elsewhere */

static mcim_cause_t setup(struct fctx *f)
{
  static const char *const roles[] = {"ro"};
  char ca[128], cert[128], key[128], acert[128], akey[128];
  mcim_cause_t rc = mcim_jose_key_generate(&f->key);
  char *jwk = NULL;
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(f->key, &jwk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_jwk(jwk, strlen(jwk), &f->pub);
  free(jwk);
  mcim_claims_t c = claims();
  if (rc == MCIM_OK)
    rc = mcim_jws_sign(f->key, &c, &f->jws);
  if (rc == MCIM_OK)
    rc = mcim_jwe_encrypt(f->pub, content, sizeof(content), &f->jwe);
  /* a lab PKI: the operators' CA, the RO's TLS certificate, the admin client's */
  snprintf(pki_dir, sizeof(pki_dir), "/tmp/bench-floor-XXXXXX");
  if (rc == MCIM_OK && !mkdtemp(pki_dir))
    rc = MCIM_IO_ERROR;
  if (rc == MCIM_OK)
    rc = mcim_pki_lab_init(pki_dir, roles, 1, true, 30);
  snprintf(ca, sizeof(ca), "%s/%s", pki_dir, MCIM_PKI_OPERATORS_CA_CERT);
  snprintf(cert, sizeof(cert), "%s/ro/cert.pem", pki_dir);
  snprintf(key, sizeof(key), "%s/ro/key.pem", pki_dir);
  snprintf(acert, sizeof(acert), "%s/%s/cert.pem", pki_dir, MCIM_PKI_ADMIN);
  snprintf(akey, sizeof(akey), "%s/%s/key.pem", pki_dir, MCIM_PKI_ADMIN);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_load(cert, &f->leaf);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_load(ca, &f->ca);
  /* Milenage: a subscriber, the USIM's state, an AUTS for the resync */
  if (rc == MCIM_OK)
    rc = mcim_random(f->k, sizeof(f->k));
  if (rc == MCIM_OK)
    rc = mcim_random(f->opc, sizeof(f->opc));
  if (rc == MCIM_OK)
    rc = mcim_random(f->auts_rand, sizeof(f->auts_rand));
  mcim_sqn_params_default(&f->sqnp);
  if (rc == MCIM_OK)
    rc = mcim_sqn_usim_init(&f->sqnp, &f->usim);
  if (rc == MCIM_OK) {
    mcim_milenage_t *m = NULL;
    uint8_t sqn_ms[MCIM_SQN_LEN];
    mcim_sqn_to_bytes(7 << 5, sqn_ms);
    rc = keyed(f, &m);
    if (rc == MCIM_OK)
      rc = mcim_aka_gen_auts(m, f->auts_rand, sqn_ms, f->auts);
    mcim_milenage_free(m);
  }
  /* the TLS server, as every role runs it, and the agent's client */
  struct mcim_http_server_cfg scfg = {.role = "bench", .bind_addr = "127.0.0.1",
                                      .cert_file = cert, .key_file = key, .client_ca_file = ca,
                                      .threads = 2, .routes = routes, .nroutes = 2};
  if (rc == MCIM_OK)
    rc = mcim_http_server_start(&scfg, &f->srv);
  if (rc == MCIM_OK) {
    snprintf(f->url, sizeof(f->url), "https://127.0.0.1:%u/v1/ping",
             (unsigned)mcim_http_server_port(f->srv));
    static char ca_s[128], cert_s[128], key_s[128];
    snprintf(ca_s, sizeof(ca_s), "%s", ca);
    snprintf(cert_s, sizeof(cert_s), "%s", acert);
    snprintf(key_s, sizeof(key_s), "%s", akey);
    f->ccfg = (struct mcim_http_client_cfg){
        .ca_file = ca_s, .cert_file = cert_s, .key_file = key_s, .timeout_ms = 10000};
    rc = mcim_http_lite_new(&f->ccfg, &f->kept);
    if (rc == MCIM_OK)
      rc = mcim_http_lite_new(&f->ccfg, &f->fresh);
  }
  if (rc == MCIM_OK)
    rc = get(f->kept, f->url);
  if (rc == MCIM_OK)
    rc = pair_setup(f, ca, cert, key, acert, akey);
  if (rc == MCIM_OK) {
    char base[64];
    snprintf(base, sizeof(base), "https://127.0.0.1:%u", (unsigned)mcim_http_server_port(f->srv));
    rc = floor_work_setup(&f->work, pki_dir, store_locator, base, f->kept);
  }
  return rc;
}

static void teardown(struct fctx *f)
{
  floor_work_teardown(&f->work);
  mcim_http_lite_free(f->kept);
  mcim_http_lite_free(f->fresh);
  SSL_CTX_free(f->cctx);
  if (f->prio)
    gnutls_priority_deinit(f->prio);
  if (f->xcred)
    gnutls_certificate_free_credentials(f->xcred);
  mcim_http_server_free(f->srv);
  X509_free(f->leaf);
  X509_free(f->ca);
  free(f->jws);
  free(f->jwe);
  mcim_jose_key_free(f->key);
  mcim_jose_key_free(f->pub);
  if (pki_dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki_dir);
    if (system(cmd) != 0)
      fprintf(stderr, "bench_floor: could not remove %s\n", pki_dir);
  }
}


/* The design floor's units (floor_work.c), as op_fn. */
static double exchange_server_ns;

static int64_t op_exchange(struct fctx *f, int n)
{
  int64_t client = floor_op_exchange(&f->work, n);
  exchange_server_ns = f->work.server_ns;
  return client;
}

static int64_t op_statement(struct fctx *f, int n)
{
  return floor_op_statement(&f->work, n);
}

static int64_t op_txn_durable(struct fctx *f, int n)
{
  return floor_op_txn_durable(&f->work, n);
}

static int64_t op_txn_relaxed(struct fctx *f, int n)
{
  return floor_op_txn_relaxed(&f->work, n);
}

static int64_t op_synced_write(struct fctx *f, int n)
{
  return floor_op_synced_write(&f->work, n);
}

/* What is timed: the ops, the two helpers of the TLS figure, then the design floor's units. */
enum {
  T_SIGN, T_VERIFY, T_ENC, T_DEC, T_CERT, T_AV, T_RESYNC, T_USIM, T_PAIR, T_TLS, T_KEPT,
  T_EXCH, T_STMT, T_TXD, T_TXR, T_FSYNC, NT
};
static const op_fn fns[NT] = {op_sign,     op_verify,      op_encrypt,     op_decrypt,
                              op_cert,     op_av,          op_resync,      op_usim,
                              op_tls_pair, op_tls,         op_kept_server, op_exchange,
                              op_statement, op_txn_durable, op_txn_relaxed, op_synced_write};

/* Run fn for about `ms` of CPU: ns per operation. */
static double timed(op_fn fn, struct fctx *f, unsigned ms)
{
  int64_t spent = 0, n = 0, want = (int64_t)ms * 1000000;
  int step = 1;
  while (spent < want) {
    int64_t t = fn(f, step);
    if (t < 0)
      return -1;
    spent += t;
    n += step;
    if (t < want / 20 && step < 4096)
      step *= 2;
  }
  return (double)spent / (double)n;
}

/* The medians floor_work_prices needs, from this file's op table. */
static struct floor_medians work_medians(const double *med, double exch_server_ns)
{
  return (struct floor_medians){.exch_client = med[T_EXCH], .exch_server = exch_server_ns,
                                .statement = med[T_STMT], .txn_durable = med[T_TXD],
                                .txn_relaxed = med[T_TXR], .synced_write = med[T_FSYNC]};
}

static json_t *load_counts(const char *path)
{
  FILE *fp = fopen(path, "r");
  char *line = NULL;
  size_t cap = 0;
  json_t *found = NULL;
  if (!fp)
    return NULL;
  while (getline(&line, &cap, fp) > 0) {
    json_t *j = json_loads(line, 0, NULL);
    if (json_is_object(j) && json_is_object(json_object_get(j, "crypto_ops_per_procedure"))) {
      json_decref(found);
      found = j;
    } else {
      json_decref(j);
    }
  }
  free(line);
  fclose(fp);
  if (!found) /* the whole file as one object */
    found = json_load_file(path, 0, NULL);
  return found;
}

int main(int argc, char **argv)
{
  unsigned round_ms = 150;
  int rounds = 5;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const char *counts_path = NULL;
  bool only_tls = false, work_only = false;
  struct fctx f;
  double per[NT][MAX_ROUNDS], server[MAX_ROUNDS], kept_srv[MAX_ROUNDS], pair_srv[MAX_ROUNDS],
      exch_srv[MAX_ROUNDS], med[NT];
  int rc = 1;

  memset(&f, 0, sizeof(f));
  f.work.fd = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--round-ms") == 0 && i + 1 < argc)
      round_ms = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = (int)strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--counts") == 0 && i + 1 < argc)
      counts_path = argv[++i];
    else if (strcmp(argv[i], "--cores") == 0 && i + 1 < argc)
      cores = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--only-tls") == 0) /* for a profiler */
      only_tls = true;
    else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
      store_locator = argv[++i];
    else if (strcmp(argv[i], "--work-only") == 0)
      work_only = true;
    else {
      fprintf(stderr,
              "usage: bench_floor [--counts LOADGEN_JSON] [--round-ms MS] [--rounds N] "
              "[--cores N]\n"
              "       bench_floor --work-only [--store LOCATOR] [--round-ms MS] [--rounds N]\n"
              "  --work-only: only the design floor's units; --store: their store (default a\n"
              "  SQLite file of its own), e.g. a PostgreSQL locator\n");
      return 2;
    }
  }
  if (round_ms < 5 || round_ms > 60000 || rounds < 1 || rounds > MAX_ROUNDS || cores < 1) {
    fprintf(stderr, "bench_floor: --round-ms 5..60000, --rounds 1..%d, --cores >= 1\n",
            MAX_ROUNDS);
    return 2;
  }
  json_t *counts_doc = NULL, *counts = NULL;
  if (counts_path) {
    counts_doc = load_counts(counts_path);
    counts = json_object_get(counts_doc, "crypto_ops_per_procedure");
    if (!json_is_object(counts)) {
      fprintf(stderr, "bench_floor: %s has no crypto_ops_per_procedure\n", counts_path);
      json_decref(counts_doc);
      return 2;
    }
  }
  mcim_log_init("bench_floor", MCIM_LOG_TEXT, MCIM_LOG_WARN, stderr);
  mcim_cause_t sc = setup(&f);
  if (sc != MCIM_OK) {
    fprintf(stderr, "bench_floor: setup failed: %s\n", mcim_cause_name(sc));
    goto cleanup;
  }

  if (only_tls) {
    double ns = timed(op_tls, &f, round_ms * (unsigned)rounds);
    printf("tls: %.1f us client, %.1f us server per new connection and GET\n", ns / 1e3,
           f.tls_server_ns / 1e3);

    rc = ns < 0;
    goto cleanup;
  }
  /* --work-only: the design floor's units alone (T_EXCH..), e.g. on another store */
  int lo = work_only ? T_EXCH : 0, nt = NT - lo;
  for (int j = lo; j < NT; j++) /* warm-up */
    if (timed(fns[j], &f, 20) < 0)
      goto failed;
  for (int r = 0; r < rounds; r++)
    for (int j = 0; j < nt; j++) {
      int k = lo + (j + r) % nt;
      per[k][r] = timed(fns[k], &f, round_ms);
      if (per[k][r] < 0)
        goto failed;
      if (k == T_TLS)
        server[r] = f.tls_server_ns;
      if (k == T_KEPT)
        kept_srv[r] = kept_server_ns;
      if (k == T_PAIR)
        pair_srv[r] = f.pair_server_ns;
      if (k == T_EXCH)
        exch_srv[r] = exchange_server_ns;
    }
  for (int j = lo; j < NT; j++)
    med[j] = mcim_median(per[j], (size_t)rounds);
  if (work_only) {
    double work_price[FLOOR_NWORK];
    floor_work_prices(work_medians(med, mcim_median(exch_srv, (size_t)rounds)), work_price);
    json_t *wout = json_pack("{s:s,s:o}", "store", store_locator ? "given" : "sqlite",
                             "work_us_per_op", floor_work_report(work_price));
    char *text = wout ? json_dumps(wout, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(wout);
    rc = 0;
    goto cleanup;
  }
  double srv_hs = mcim_median(server, (size_t)rounds);
  double srv_kept = mcim_median(kept_srv, (size_t)rounds);
  /* through the daemons' own server: a new connection's GET minus a kept-alive GET */
  double mhd_cli_ns = med[T_TLS] - med[T_KEPT], mhd_srv_ns = srv_hs - srv_kept;
  /* the price: the handshake alone */
  double cli_ns = med[T_PAIR], srv_ns = mcim_median(pair_srv, (size_t)rounds);

  /* the price of every op of include/mcim/opcount.h */
  double price[MCIM_OP_COUNT_];
  for (int j = 0; j <= T_USIM; j++)
    price[j] = med[j]; /* T_SIGN..T_USIM are MCIM_OP_ES256_SIGN..MCIM_OP_AKA_USIM_CHECK */
  price[MCIM_OP_TLS_SERVER_FULL] = price[MCIM_OP_TLS_SERVER_RESUMED] = srv_ns;
  price[MCIM_OP_TLS_CLIENT_FULL] = price[MCIM_OP_TLS_CLIENT_RESUMED] = cli_ns;

  printf("bench_floor: 1 thread per operation, CPU time, %d rounds x %u ms, median\n", rounds,
         round_ms);
  printf("%-22s %12s %12s\n", "operation", "us/op", "ops/s");
  json_t *jops = json_object();
  for (int op = 0; op < MCIM_OP_COUNT_; op++) {
    const char *name = mcim_op_name((mcim_op_t)op);
    printf("%-22s %12.1f %12.0f%s\n", name, price[op] / 1e3, price[op] > 0 ? 1e9 / price[op] : 0,
           op == MCIM_OP_TLS_SERVER_RESUMED || op == MCIM_OP_TLS_CLIENT_RESUMED
               ? "  (priced as full)"
               : "");
    json_object_set_new(jops, name, json_real(price[op] / 1e3));
  }
  printf("(TLS: a full mutual-TLS handshake alone, GnuTLS server with the roles' policy and "
         "credentials, OpenSSL client with the agent's, in one thread over a socket pair.\n"
         " Through libmicrohttpd on loopback instead, a GET on a new connection minus one on a "
         "kept connection: client %.1f us, server %.1f us of the process's CPU: the server\n"
         " figure includes libmicrohttpd polling the connection while the client is not "
         "scheduled, and varies with the load)\n",
         mhd_cli_ns / 1e3, mhd_srv_ns / 1e3);

  json_t *out = json_pack("{s:o,s:i,s:{s:f,s:f}}", "us_per_op", jops, "cores", (int)cores,
                          "mhd_loopback_us", "client", mhd_cli_ns / 1e3, "server",
                          mhd_srv_ns / 1e3);
  double work_price[FLOOR_NWORK];
  floor_work_prices(work_medians(med, mcim_median(exch_srv, (size_t)rounds)), work_price);
  json_object_set_new(out, "work_us_per_op", floor_work_report(work_price));
  if (counts) {
    double floor_ns = 0, dev_ns = 0, net_ns = 0;
    const json_t *split = json_object_get(counts_doc, "crypto_ops");
    double done = (double)json_integer_value(json_object_get(counts_doc, "procedures"));
    printf("floor of one procedure (%s, %s):\n",
           json_string_value(json_object_get(counts_doc, "procedure"))
               ? json_string_value(json_object_get(counts_doc, "procedure"))
               : "counts given",
           counts_path);
    printf("%-22s %10s %12s\n", "operation", "per proc", "us per proc");
    json_t *jc = json_object();
    for (int op = 0; op < MCIM_OP_COUNT_; op++) {
      const char *name = mcim_op_name((mcim_op_t)op);
      double n = json_number_value(json_object_get(counts, name));
      floor_ns += n * price[op];
      if (done > 0) {
        dev_ns += json_number_value(json_object_get(json_object_get(split, "loadgen"), name)) /
                  done * price[op];
        net_ns += json_number_value(json_object_get(json_object_get(split, "daemons"), name)) /
                  done * price[op];
      }
      if (n > 0)
        printf("%-22s %10.2f %12.1f\n", name, n, n * price[op] / 1e3);
      json_object_set_new(jc, name, json_real(n));
    }
    double floor_ms = floor_ns / 1e6, rate = floor_ms > 0 ? (double)cores * 1000.0 / floor_ms : 0;
    printf("floor: %.2f ms of CPU per procedure (devices and owners %.2f, daemons %.2f); "
           "%.0f procedures/s on %ld cores\n",
           floor_ms, dev_ns / 1e6, net_ns / 1e6, rate, cores);
    const json_t *cpu = json_object_get(counts_doc, "cpu");
    double cpu_ms = json_number_value(json_object_get(cpu, "per_procedure_ms"));
    double per_s = json_number_value(json_object_get(counts_doc, "per_s"));
    if (cpu_ms > 0 && floor_ms > 0)
      printf("that loadgen run: %.1f ms CPU per procedure = %.1f x the floor; %.1f/s = %.3f of "
             "the floor's rate\n",
             cpu_ms, cpu_ms / floor_ms, per_s, rate > 0 ? per_s / rate : 0);
    json_object_set_new(out, "counts", jc);
    floor_design(counts_doc, work_price, floor_ms, cores, out);
    json_object_set_new(out, "floor_ms_per_procedure", json_real(floor_ms));
    json_object_set_new(out, "floor_devices_ms", json_real(dev_ns / 1e6));
    json_object_set_new(out, "floor_daemons_ms", json_real(net_ns / 1e6));
    json_object_set_new(out, "floor_per_s", json_real(rate));
    if (cpu_ms > 0 && floor_ms > 0) {
      json_object_set_new(out, "run_cpu_ms_per_procedure", json_real(cpu_ms));
      json_object_set_new(out, "run_cpu_x_floor", json_real(cpu_ms / floor_ms));
      json_object_set_new(out, "run_per_s", json_real(per_s));
      json_object_set_new(out, "run_fraction_of_floor_rate", json_real(per_s / rate));
    }
  }
  char *text = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(6));
  printf("%s\n", text ? text : "{}");
  free(text);
  json_decref(out);
  rc = 0;
  goto cleanup;
failed:
  fprintf(stderr, "bench_floor: an operation failed\n");
cleanup:
  teardown(&f);
  json_decref(counts_doc);
  return rc;
}
