/* Calls from the device to the network: the peer directory, the pinned TLS client, the
 * checks every answer goes through before anything in it is used, and network roles'
 * certificates (verified against the operators' CA the device pins). */
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/objcache.h"
#include "crypto/verdicts.h"
#include "device/device_priv.h"
#include "mcim/crashpoint.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"

mcim_cause_t dev_client_new(struct mcim_device *d, struct mcim_http_lite **out)
{
  struct mcim_http_client_cfg cc = {
      .ca_file = mcim_config_path(d->cfg, "operators_ca"),
      .timeout_ms = (long)dev_cfg_int(d, "request_timeout_ms"),
  };
  return mcim_http_lite_new(&cc, out);
}

mcim_cause_t dev_peer_url_check(const char *u, char *url, size_t len)
{
  /* Only https URLs of a sane length: the device never talks to the network in clear. */
  if (!u || strncmp(u, "https://", 8) != 0 || strlen(u) >= len || strlen(u) >= 512)
    return MCIM_PEER_UNREACHABLE;
  snprintf(url, len, "%s", u);
  /* no trailing slash: paths start with one */
  size_t n = strlen(url);
  while (n > 8 && url[n - 1] == '/')
    url[--n] = '\0';
  return MCIM_OK;
}

mcim_cause_t dev_peer_url(struct mcim_device *d, const char *peer, char *url, size_t len)
{
  mcim_cause_t rc;
  json_t *fresh = NULL;

  if (!peer || !mcim_pki_name_valid(peer))
    return MCIM_INVALID_ARGUMENT;
  pthread_mutex_lock(&d->peers_lock);
  const char *u = json_string_value(json_object_get(d->networks, peer));
  if (!u)
    u = json_string_value(json_object_get(d->peers, peer));
  if (!u && d->peers) {
    /* The lab may have added an SHO since we started: read the peers file again. */
    fresh = json_load_file(mcim_config_path(d->cfg, "peers"), 0, NULL);
    if (json_is_object(fresh)) {
      json_object_update(d->peers, fresh);
      u = json_string_value(json_object_get(d->peers, peer));
    }
  }
  rc = dev_peer_url_check(u, url, len);
  pthread_mutex_unlock(&d->peers_lock);
  json_decref(fresh);
  return rc;
}

mcim_cause_t dev_network_learn(struct mcim_device *d, const char *name, const char *url)
{
  if (!name || !mcim_pki_name_valid(name) || !url || strncmp(url, "https://", 8) != 0 ||
      strlen(url) >= 512)
    return MCIM_INVALID_ARGUMENT;
  pthread_mutex_lock(&d->peers_lock);
  if (!d->networks)
    d->networks = json_object();
  mcim_cause_t rc = d->networks && json_object_set_new(d->networks, name, json_string(url)) == 0
                        ? MCIM_OK
                        : MCIM_NO_MEMORY;
  pthread_mutex_unlock(&d->peers_lock);
  return rc;
}

/* The next call may be held by the server until what it asks for exists (a long poll):
 * `long_poll`, never past the procedure's deadline. */
void dev_prefer_wait(struct dev_run *r)
{
  int64_t w = dev_cfg_int(r->d, "long_poll"), left = r->p->deadline - mcim_now();
  mcim_http_lite_prefer_wait(r->cli, (int)(w < left ? w : left));
}

mcim_cause_t dev_call(struct mcim_device *d, struct mcim_http_lite *cli, const char *method,
                      const char *peer, const char *path, const json_t *body, const char *bearer,
                      struct mcim_http_result *res)
{
  char base[600], url[1200];
  mcim_cause_t rc;

  memset(res, 0, sizeof(*res));
  rc = dev_peer_url(d, peer, base, sizeof(base));
  if (rc != MCIM_OK) {
    res->cause = MCIM_PEER_UNREACHABLE;
    snprintf(res->detail, sizeof(res->detail), "no https URL for \"%s\" in the peers file",
             peer ? peer : "?");
    return res->cause;
  }
  if ((size_t)snprintf(url, sizeof(url), "%s%s", base, path) >= sizeof(url)) {
    res->cause = MCIM_TOO_LARGE;
    snprintf(res->detail, sizeof(res->detail), "URL too long");
    return res->cause;
  }
  /* the server must be `peer` itself, not any role the operators' CA certified */
  rc = mcim_http_lite_request_to(cli, peer, method, url, body, bearer, res);
  /* sent and answered, the answer not processed: a crash point (test only), at the stage's
   * first exchange (a certificate fetch is not one) */
  if (mcim_crashpoint_armed() && rc == MCIM_OK && dev_stage_now.name &&
      strcmp(path, "/v1/certificate") != 0)
    mcim_crashpoint_at(MCIM_CRASH_AFTER_SEND, dev_stage_now.name, dev_stage_now.txn,
                       dev_stage_now.n);
  /* A success must come with a JSON object: everything the device reads is one. */
  if (rc == MCIM_OK && !json_is_object(res->json)) {
    res->cause = rc = MCIM_PEER_BAD_ANSWER;
    snprintf(res->detail, sizeof(res->detail), "%s %s%s: the answer is not a JSON object",
             method, peer, path);
  }
  /* An error without a cause of our table: keep the HTTP status in the detail. */
  if (rc != MCIM_OK && !res->detail[0])
    snprintf(res->detail, sizeof(res->detail), "%s %s%s: HTTP %ld", method, peer, path,
             res->status);
  return rc;
}

/* Causes only a token gets: no statement or proof is refused with them. No token held, and
 * what the token's issuer decided, not the refusing party (review of 2026-12-07): its
 * revocation, its issuer honoured only by itself, a scope it may not grant. */
static bool token_only_cause(mcim_cause_t c)
{
  return c == MCIM_NO_ACCESS || c == MCIM_TOKEN_REVOKED || c == MCIM_TOKEN_WRONG_ISSUER ||
         c == MCIM_SCOPE_NOT_GRANTABLE;
}

bool dev_cause_token(mcim_cause_t c)
{
  switch (c) {
  case MCIM_TOKEN_EXPIRED:
  case MCIM_TOKEN_NOT_YET_VALID:
  case MCIM_JWS_BAD_SIGNATURE:
  case MCIM_JWS_BAD_ALG:
  case MCIM_JOSE_MALFORMED:
    return true;
  default:
    return token_only_cause(c);
  }
}

bool dev_token_refused(mcim_cause_t rc, const struct mcim_http_result *res)
{
  if (!res || res->status == 0)
    return dev_cause_token(rc);
  /* The token-only causes count without the challenge too (a role older than the challenge
   * still sends the device to attach again with them); the others (TOKEN_EXPIRED,
   * JWS_BAD_SIGNATURE...) only with it. A restricted token where full access is needed is no
   * problem an attach mends. */
  return token_only_cause(rc) ||
         (res->bearer_challenge && strcmp(res->bearer_error, "insufficient_scope") != 0);
}

bool dev_cause_retry(mcim_cause_t c, long http_status)
{
  return (c == MCIM_PEER_NOT_AUTHENTICATED && http_status == 0) ||
         mcim_cause_transient(c, http_status);
}

const char *dev_json_str(const json_t *obj, const char *name, size_t max)
{
  const json_t *v = json_object_get(obj, name);
  if (!json_is_string(v))
    return NULL;
  size_t n = json_string_length(v);
  const char *s = json_string_value(v);
  /* no embedded NUL: the C string must be the whole value */
  if (n == 0 || n > max || strlen(s) != n)
    return NULL;
  return s;
}

const char *dev_json_hex(const json_t *obj, const char *name, size_t digits)
{
  const char *s = dev_json_str(obj, name, digits ? digits : 4096);
  if (!s)
    return NULL;
  size_t n = strlen(s);
  if ((digits && n != digits) || n % 2)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return NULL;
  return s;
}

/* Keys of network roles' certificates that verified, kept (dev_peer_key_from_pem_at).
 *
 * Why: a kept certificate is checked again at every use (dev_peer_key_kept, a package's and
 * a discovery's SHO certificate), and each check parsed the PEM again (OpenSSL 3's decoders),
 * hashed it and its CA for the chain verdict (src/crypto/pki_verdict.c) and built the JOSE
 * key again (a P-256 group a key): a tenth of the device's instructions in a change of SHO
 * (docs/performance.md).
 *
 * Why it is safe: what the check reads is the PEM, the pinned CA, the usage (TLS), the name
 * and the time; a key is kept under the SHA-256 of the first four (the CA by its DER's
 * SHA-256) and given only inside the span in which both the certificate and the CA are
 * valid, the one time-dependent part of the check (no CRL, no store). Another byte, CA or
 * name, or a time outside the span, runs the full check with its cause; refusals are never
 * kept. The key is shared by reference (mcim_jose_key_set_kid refuses a shared key); the
 * table is bounded, the oldest key goes first. */
static int peer_key_up_ref(void *key)
{
  mcim_jose_key_t *ref = NULL;
  return mcim_jose_key_dup(key, &ref) == MCIM_OK;
}

static void peer_key_release(void *key) { mcim_jose_key_free(key); }

static struct mcim_objcache peer_keys =
    MCIM_OBJCACHE_INIT(peer_key_up_ref, peer_key_release, 64);

void dev_peer_keys_clear(void) { mcim_objcache_clear(&peer_keys); }

static bool asn1_seconds(const ASN1_TIME *t, int64_t *out)
{
  struct tm tm;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
    return false;
  *out = (int64_t)timegm(&tm);
  return true;
}

/* The id of the check of `pem` for `name` against `ca`; false if it cannot be computed. */
static bool peer_key_id(X509 *ca, const char *pem, const char *name, uint8_t id[32])
{
  uint8_t ca_md[32];
  unsigned int n = 0;
  int32_t usage = MCIM_CERT_TLS;
  if (!ca || X509_digest(ca, mcim_sha256(), ca_md, &n) != 1 || n != 32)
    return false;
  const void *parts[] = {"peer-key", pem, ca_md, &usage, name};
  const size_t lens[] = {8, strlen(pem), sizeof(ca_md), sizeof(usage), strlen(name)};
  return mcim_verdict_id(id, 5, parts, lens);
}

mcim_cause_t dev_peer_key_from_pem_at(struct mcim_device *d, const char *pem, const char *name,
                                      int64_t now, mcim_jose_key_t **out)
{
  X509 *cert = NULL;
  EVP_PKEY *pub = NULL;
  uint8_t id[32];
  int64_t nb1, na1, nb2, na2;
  bool have_id = false;
  mcim_cause_t rc = MCIM_CERT_INVALID;

  *out = NULL;
  if (!pem || !name)
    goto cleanup;
  have_id = peer_key_id(d->operators_ca, pem, name, id);
  if (have_id && (*out = mcim_objcache_get_at(&peer_keys, id, now)) != NULL)
    return MCIM_OK;
  rc = mcim_pki_cert_from_pem(pem, strlen(pem), &cert);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_pki_cert_public_key(cert, d->operators_ca, MCIM_CERT_TLS, name, now, &pub);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_jose_key_from_pkey(pub, out);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_set_kid(*out, name);
  if (rc != MCIM_OK) {
    mcim_jose_key_free(*out);
    *out = NULL;
    goto cleanup;
  }
  if (have_id && asn1_seconds(X509_get0_notBefore(cert), &nb1) &&
      asn1_seconds(X509_get0_notAfter(cert), &na1) &&
      asn1_seconds(X509_get0_notBefore(d->operators_ca), &nb2) &&
      asn1_seconds(X509_get0_notAfter(d->operators_ca), &na2))
    mcim_objcache_put_until(&peer_keys, id, *out, nb1 > nb2 ? nb1 : nb2, na1 < na2 ? na1 : na2);
cleanup:
  EVP_PKEY_free(pub);
  X509_free(cert);
  return rc;
}

mcim_cause_t dev_peer_key_from_pem(struct mcim_device *d, const char *pem, const char *name,
                                   mcim_jose_key_t **out)
{
  return dev_peer_key_from_pem_at(d, pem, name, mcim_now(), out);
}

mcim_cause_t dev_peer_key(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                          mcim_jose_key_t **key, char **pem)
{
  struct mcim_http_result res;
  mcim_cause_t rc;

  *key = NULL;
  if (pem)
    *pem = NULL;
  rc = dev_call(d, cli, "GET", peer, "/v1/certificate", NULL, NULL, &res);
  if (rc != MCIM_OK)
    goto cleanup;
  const char *cert = dev_json_str(res.json, "cert", 16384);
  rc = dev_peer_key_from_pem(d, cert, peer, key);
  if (rc != MCIM_OK) {
    snprintf(res.detail, sizeof(res.detail),
             "the certificate of \"%s\" does not verify against the operators' CA: %s", peer,
             mcim_cause_text(rc));
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "%s", res.detail);
    goto cleanup;
  }
  dev_peer_cert_keep(d, peer, cert);
  if (pem) {
    *pem = strdup(cert);
    if (!*pem) {
      rc = MCIM_NO_MEMORY;
      mcim_jose_key_free(*key);
      *key = NULL;
    }
  }
cleanup:
  if (rc != MCIM_OK && res.detail[0])
    mcim_log_event(MCIM_LOG_DEBUG, NULL, 0, rc, "certificate of %s: %s", peer, res.detail);
  mcim_http_result_clear(&res);
  return rc;
}

/* Network roles' certificates, kept (d->peer_certs, under peers_lock). A device checked
 * every statement of the RO or of an SHO with a certificate it fetched again for that one
 * statement (GET /v1/certificate: about one request a procedure); the certificate does not
 * change between procedures. Kept: the fetched ones, the SHO's certificate of a discovery,
 * and the certificate a peer's TLS server showed on the connection (the same certificate:
 * a role's statement key is its TLS key). A kept one is verified again at every use, as a
 * fetched one (the pinned CA, CN = the peer, usage, validity: dev_peer_key_from_pem), so an
 * expired or foreign one is never used; a peer whose key changed (or whose TLS certificate
 * is not its statement certificate) is fetched when a statement does not verify under the
 * kept one (dev_peer_verify). */
void dev_peer_cert_keep(struct mcim_device *d, const char *peer, const char *pem)
{
  if (!peer || !pem)
    return;
  pthread_mutex_lock(&d->peers_lock);
  if (!d->peer_certs)
    d->peer_certs = json_object();
  /* a name per network role: bounded by the peers the device talks to */
  if (d->peer_certs &&
      (json_object_size(d->peer_certs) < 64 || json_object_get(d->peer_certs, peer)))
    json_object_set_new(d->peer_certs, peer, json_string(pem));
  pthread_mutex_unlock(&d->peers_lock);
}

static char *peer_cert_kept(struct mcim_device *d, const char *peer)
{
  pthread_mutex_lock(&d->peers_lock);
  const char *pem = json_string_value(json_object_get(d->peer_certs, peer));
  char *copy = pem ? strdup(pem) : NULL;
  pthread_mutex_unlock(&d->peers_lock);
  return copy;
}

static void peer_cert_forget(struct mcim_device *d, const char *peer)
{
  pthread_mutex_lock(&d->peers_lock);
  json_object_del(d->peer_certs, peer);
  pthread_mutex_unlock(&d->peers_lock);
}

mcim_cause_t dev_peer_key_kept(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                               mcim_jose_key_t **key, bool *kept)
{
  char *pem = peer ? peer_cert_kept(d, peer) : NULL;
  bool from_tls = false;
  *kept = false;
  /* None kept: the certificate the peer's TLS server showed, if the device has a connection
   * to it (the statement to check usually came over it): a role's statement key is its TLS
   * key (GET /v1/certificate answers that certificate). */
  if (!pem && peer && mcim_http_lite_peer_cert(cli, peer, &pem) == MCIM_OK)
    from_tls = true;
  if (pem) {
    mcim_cause_t rc = dev_peer_key_from_pem(d, pem, peer, key);
    if (rc == MCIM_OK && from_tls)
      dev_peer_cert_keep(d, peer, pem);
    free(pem);
    if (rc == MCIM_OK) {
      *kept = true;
      return MCIM_OK;
    }
    if (!from_tls)
      peer_cert_forget(d, peer); /* expired, say: fetched again */
  }
  return dev_peer_key(d, cli, peer, key, NULL);
}

mcim_cause_t dev_peer_verify(struct mcim_device *d, struct mcim_http_lite *cli, const char *peer,
                             const char *jws, const mcim_jws_expect_t *ex, mcim_statement_t **out,
                             mcim_cause_t *key_rc)
{
  mcim_jose_key_t *key = NULL;
  bool kept = false;
  mcim_cause_t rc;

  *out = NULL;
  *key_rc = dev_peer_key_kept(d, cli, peer, &key, &kept);
  if (*key_rc != MCIM_OK)
    return *key_rc;
  rc = mcim_jws_verify(jws, strlen(jws), key, ex, out);
  if (rc == MCIM_JWS_BAD_SIGNATURE && kept) {
    /* the peer may have a new key since its certificate was kept */
    mcim_jose_key_free(key);
    key = NULL;
    mcim_statement_free(*out);
    *out = NULL;
    peer_cert_forget(d, peer);
    *key_rc = dev_peer_key(d, cli, peer, &key, NULL);
    if (*key_rc != MCIM_OK)
      return *key_rc;
    rc = mcim_jws_verify(jws, strlen(jws), key, ex, out);
  }
  mcim_jose_key_free(key);
  return rc;
}

/* The TRE's own word that this device asks role `aud` for `what` of its procedure (the RO:
 * "discovery" or "package"; the PVA: "nonce"), added to `body` as `proof` and `tre_cert`
 * (mcim_role_check_device_request there): the network the device is on holds a token for
 * it, not this. Signed once and shown again on every retry and poll until shortly before it
 * expires (kept in the procedure's data: a signed statement, no secret). */
void dev_request_proofs_drop(struct dev_proc *p)
{
  const char *key;
  json_t *v;
  void *tmp;
  json_object_foreach_safe (p->data, tmp, key, v) {
    if (strncmp(key, "proof_", 6) == 0)
      json_object_del(p->data, key);
  }
}

mcim_cause_t dev_request_proof(struct dev_run *r, const char *aud, const char *what,
                               json_t *body)
{
  struct mcim_device *d = r->d;
  struct dev_proc *p = r->p;
  int64_t lifetime = dev_cfg_int(d, "statement_lifetime");
  int64_t margin = lifetime / 4 < 60 ? lifetime / 4 : 60;
  char key[40];
  char *fresh = NULL, *cert = NULL;
  json_t *exp = NULL, *extra = NULL;
  mcim_cause_t rc = MCIM_OK;

  snprintf(key, sizeof(key), "proof_%s", what);
  const char *jws = dev_data_str(p, key);
  if (!jws || mcim_jws_peek_claim(jws, "exp", &exp) != MCIM_OK || !json_is_integer(exp) ||
      json_integer_value(exp) <= mcim_now() + margin) {
    extra = json_pack("{s:s}", "for", what);
    rc = extra ? d->tre->ops->sign(d->tre->ctx, "mcim-request+jwt", aud, p->txn, extra,
                                   lifetime, &fresh)
               : MCIM_NO_MEMORY;
    if (rc != MCIM_OK)
      goto cleanup;
    dev_data_set_str(p, key, fresh);
    jws = dev_data_str(p, key);
  }
  rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &cert);
  if (rc == MCIM_OK && (!jws || json_object_set_new(body, "proof", json_string(jws)) != 0 ||
                        json_object_set_new(body, "tre_cert", json_string(cert)) != 0))
    rc = MCIM_NO_MEMORY;
cleanup:
  json_decref(exp);
  json_decref(extra);
  free(fresh);
  free(cert);
  return rc;
}
