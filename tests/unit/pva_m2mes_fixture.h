/* A small lab for the role tests of test_pva.c and test_pva_requests.c (through
 * pva_fixture.h), test_m2mes.c, test_outbox.c, test_worker_idle.c and test_http_after_reply.c:
 * a temporary folder with the lab PKI, role configurations on free loopback ports, a peers
 * file, stand-in HTTPS peers (test doubles for roles not under test), clients with the lab's
 * certificates, and device credentials (TRE keys certified by the M2MES CA, access tokens
 * signed by the vno key). Header-only (static functions): each test program includes it once. */
#ifndef MCIM_TEST_PVA_M2MES_FIXTURE_H
#define MCIM_TEST_PVA_M2MES_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "mcim/http.h"
#include "mcim/jose.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/store.h"
#include "mcim/util.h"

/* Helpers some programs do not use. */
#define LAB_FN static __attribute__((unused))

struct lab {
  char dir[64];
  char pki[128];
  char ops_ca[256];
  char m2mes_ca[256];
  char peers[256];
};

LAB_FN void lab_path(const struct lab *lab, char *out, size_t len, const char *rel)
{
  snprintf(out, len, "%s/%s", lab->dir, rel);
}

LAB_FN uint16_t lab_free_port(void)
{
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  socklen_t alen = sizeof(a);
  uint16_t port = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

LAB_FN int lab_write(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  fputs(text, f);
  return fclose(f);
}

/* The PKI for `roles` (plus admin) in a fresh temporary folder. */
LAB_FN int lab_init(struct lab *lab, const char *const *roles, size_t nroles)
{
  memset(lab, 0, sizeof(*lab));
  snprintf(lab->dir, sizeof(lab->dir), "/tmp/mcim-roletest-XXXXXX");
  if (!mkdtemp(lab->dir))
    return -1;
  snprintf(lab->pki, sizeof(lab->pki), "%s/pki", lab->dir);
  snprintf(lab->ops_ca, sizeof(lab->ops_ca), "%s/%s", lab->pki, MCIM_PKI_OPERATORS_CA_CERT);
  snprintf(lab->m2mes_ca, sizeof(lab->m2mes_ca), "%s/%s", lab->pki, MCIM_PKI_M2MES_CA_CERT);
  snprintf(lab->peers, sizeof(lab->peers), "%s/peers.json", lab->dir);
  return mcim_pki_lab_init(lab->pki, roles, nroles, false, 2) == MCIM_OK ? 0 : -1;
}

LAB_FN void lab_remove(struct lab *lab)
{
  char cmd[256];
  if (!lab->dir[0])
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", lab->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", lab->dir);
}

/* Peers file from pairs name, port, ..., NULL. */
LAB_FN int lab_write_peers(struct lab *lab, ...)
{
  va_list ap;
  json_t *peers = json_object();
  char url[64];
  va_start(ap, lab);
  for (const char *name = va_arg(ap, const char *); name; name = va_arg(ap, const char *)) {
    int port = va_arg(ap, int);
    snprintf(url, sizeof(url), "https://localhost:%d", port);
    json_object_set_new(peers, name, json_string(url));
  }
  va_end(ap);
  int rc = json_dump_file(peers, lab->peers, JSON_INDENT(2));
  json_decref(peers);
  return rc;
}

/* <dir>/<name>.json for role `name` on `port`; `extra` (may be NULL) adds kind keys. The
 * config path goes to `out`. */
LAB_FN int lab_write_config(struct lab *lab, const char *name, uint16_t port, const json_t *extra,
                            char *out, size_t len)
{
  char buf[512];
  json_t *c = json_object();
  json_object_set_new(c, "name", json_string(name));
  json_object_set_new(c, "listen_port", json_integer(port));
  snprintf(buf, sizeof(buf), "%s/%s/cert.pem", lab->pki, name);
  json_object_set_new(c, "tls_cert", json_string(buf));
  snprintf(buf, sizeof(buf), "%s/%s/key.pem", lab->pki, name);
  json_object_set_new(c, "tls_key", json_string(buf));
  json_object_set_new(c, "operators_ca", json_string(lab->ops_ca));
  json_object_set_new(c, "m2mes_ca", json_string(lab->m2mes_ca));
  snprintf(buf, sizeof(buf), "%s.db", name);
  json_object_set_new(c, "database", json_string(buf));
  snprintf(buf, sizeof(buf), "%s.storage.key", name);
  json_object_set_new(c, "storage_key", json_string(buf));
  json_object_set_new(c, "peers", json_string(lab->peers));
  json_object_set_new(c, "threads", json_integer(2));
  json_object_set_new(c, "tick_ms", json_integer(50));
  json_object_set_new(c, "peer_timeout_ms", json_integer(2000));
  if (extra)
    json_object_update(c, (json_t *)extra);
  snprintf(out, len, "%s/%s.json", lab->dir, name);
  int rc = json_dump_file(c, out, JSON_INDENT(2));
  json_decref(c);
  return rc;
}

/* A store handle on a role's database (the test reads what the role wrote). */
LAB_FN mcim_store_t *lab_open_db(struct lab *lab, const char *name)
{
  char path[256];
  char rel[80];
  mcim_store_t *st = NULL;
  snprintf(rel, sizeof(rel), "%s.db", name);
  lab_path(lab, path, sizeof(path), rel);
  return mcim_store_open(path, NULL, &st) == MCIM_OK ? st : NULL;
}

/* An HTTPS test double of a peer, with the certificate of lab role `name`. */
LAB_FN struct mcim_http_server *lab_standin(struct lab *lab, const char *name, uint16_t port,
                                            const struct mcim_http_route *routes, size_t nroutes,
                                            void *ctx)
{
  char cert[256], key[256];
  struct mcim_http_server *srv = NULL;
  snprintf(cert, sizeof(cert), "%s/%s/cert.pem", lab->pki, name);
  snprintf(key, sizeof(key), "%s/%s/key.pem", lab->pki, name);
  struct mcim_http_server_cfg cfg = {
      .role = name, .bind_addr = "127.0.0.1", .port = port, .cert_file = cert,
      .key_file = key, .client_ca_file = lab->ops_ca, .threads = 2, .routes = routes,
      .nroutes = nroutes, .ctx = ctx,
  };
  return mcim_http_server_start(&cfg, &srv) == MCIM_OK ? srv : NULL;
}

/* A client with the certificate of lab identity `name` (a role or "admin"), or none (NULL:
 * a device, which only pins the CA). */
LAB_FN struct mcim_http_client *lab_client(struct lab *lab, const char *name)
{
  char cert[256], key[256];
  struct mcim_http_client *cli = NULL;
  snprintf(cert, sizeof(cert), "%s/%s/cert.pem", lab->pki, name ? name : "");
  snprintf(key, sizeof(key), "%s/%s/key.pem", lab->pki, name ? name : "");
  struct mcim_http_client_cfg cfg = {.ca_file = lab->ops_ca,
                                     .cert_file = name ? cert : NULL,
                                     .key_file = name ? key : NULL,
                                     .timeout_ms = 5000};
  return mcim_http_client_new(&cfg, &cli) == MCIM_OK ? cli : NULL;
}

/* The jose key of lab role `name` (its TLS key, kid = name). */
LAB_FN mcim_jose_key_t *lab_role_key(struct lab *lab, const char *name)
{
  EVP_PKEY *pk = NULL;
  mcim_jose_key_t *k = NULL;
  if (mcim_pki_lab_load_role(lab->pki, name, NULL, &pk) == MCIM_OK &&
      mcim_jose_key_from_pkey(pk, &k) == MCIM_OK)
    mcim_jose_key_set_kid(k, name);
  EVP_PKEY_free(pk);
  return k;
}

/* A TRE key pair of `device` with a certificate of the M2MES CA (or of `ca` if given). */
LAB_FN int lab_tre_key(struct lab *lab, const char *device, mcim_cert_usage_t usage,
                       const mcim_pki_ca_t *ca, mcim_jose_key_t **key, char **cert_pem)
{
  mcim_pki_ca_t *m2mes_ca = NULL;
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  int rc = -1;
  if (!ca) {
    if (mcim_pki_lab_load_ca(lab->pki, MCIM_PKI_CA_M2MES, &m2mes_ca) != MCIM_OK)
      goto out;
    ca = m2mes_ca;
  }
  mcim_cert_request_t req = {.name = device, .usage = usage};
  if (mcim_pki_key_generate(&pk) != MCIM_OK)
    goto out;
  req.key = pk;
  if (mcim_pki_issue(ca, &req, &cert) != MCIM_OK ||
      mcim_pki_cert_to_pem(cert, cert_pem) != MCIM_OK ||
      mcim_jose_key_from_pkey(pk, key) != MCIM_OK)
    goto out;
  rc = 0;
out:
  X509_free(cert);
  EVP_PKEY_free(pk);
  mcim_pki_ca_free(m2mes_ca);
  return rc;
}

/* An access token for `device` as access network `iss` would sign it after attach. */
LAB_FN char *lab_access_token_of(const mcim_jose_key_t *key, const char *iss, const char *device,
                                 const char *scope)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:s,s:s}", "scope", scope, "imsi", "001010000000001");
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = iss, .sub = device, .aud = iss, .typ = "mcim-access+jwt",
                     .txn = "00000000000000000000000000000000", .iat = now, .exp = now + 300,
                     .extra = extra};
  if (mcim_jws_sign(key, &c, &jws) != MCIM_OK)
    jws = NULL;
  json_decref(extra);
  return jws;
}

/* An access token for `device` as the vno would sign it after attach. */
LAB_FN char *lab_access_token(const mcim_jose_key_t *vno, const char *device, const char *scope)
{
  return lab_access_token_of(vno, "vno", device, scope);
}

/* GET /v1/certificate of a stand-in (what mcim_role_peer_key fetches). */
LAB_FN void lab_h_certificate(void *ctx, const struct mcim_http_request *req,
                              struct mcim_http_response *resp)
{
  const char *const *nc = ctx; /* {name, cert_pem} */
  (void)req;
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s}", "name", nc[0], "cert", nc[1]));
}

LAB_FN char *lab_read_text(const char *path)
{
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  long n;
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    buf = calloc(1, (size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    }
  }
  fclose(f);
  return buf;
}

#endif
