/* Keys of peers: network roles' statement keys (fetched from the peer, verified against
 * the operators' CA, cached) and the check of device access tokens. */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "crypto/verdicts.h"
#include "roles/auc.h"
#include "roles/pva/pva.h"
#include "roles/role_priv.h"
#include "roles/verified.h"

#define PEER_CACHE_MAX 64

static struct {
  pthread_mutex_t lock;
  struct {
    char name[64];
    mcim_jose_key_t *key;
    char *pem;
  } e[PEER_CACHE_MAX];
  size_t n;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int cache_index(const char *name)
{
  for (size_t i = 0; i < cache.n; i++)
    if (strcmp(cache.e[i].name, name) == 0)
      return (int)i;
  return -1;
}

static const mcim_jose_key_t *cache_find(const char *name)
{
  int i = cache_index(name);
  return i >= 0 ? cache.e[i].key : NULL;
}

/* `quiet`: a failure is not logged (the background fetch, which asks again). */
static mcim_cause_t peer_key(struct mcim_role *r, const char *name, const mcim_jose_key_t **out,
                             bool quiet)
{
  *out = NULL;
  if (!name || !mcim_pki_name_valid(name))
    return MCIM_CLAIM_MISMATCH;
  if (strcmp(name, r->name) == 0) {
    *out = r->sign_key;
    return MCIM_OK;
  }
  pthread_mutex_lock(&cache.lock);
  *out = cache_find(name);
  pthread_mutex_unlock(&cache.lock);
  if (*out)
    return MCIM_OK;

  const char *base = mcim_role_peer_url(r, name);
  if (!base)
    return MCIM_PEER_UNREACHABLE;
  struct mcim_http_client *cli = mcim_role_client(r);
  if (!cli)
    return MCIM_INTERNAL;
  char url[512];
  snprintf(url, sizeof(url), "%s/v1/certificate", base);
  struct mcim_http_result res;
  mcim_cause_t rc = mcim_http_request(cli, "GET", url, NULL, NULL, &res);
  mcim_jose_key_t *key = NULL;
  const char *pem = json_string_value(json_object_get(res.json, "cert"));
  char *pem_copy = NULL;
  if (rc == MCIM_OK)
    rc = mcim_role_peer_key_from_pem(r, pem, name, &key);
  if (rc == MCIM_OK) {
    pem_copy = strdup(pem);
    if (!pem_copy)
      rc = MCIM_NO_MEMORY;
  }
  mcim_http_result_clear(&res);
  if (rc != MCIM_OK) {
    if (!quiet)
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "no verified key for peer %s", name);
    mcim_jose_key_free(key);
    return rc;
  }
  pthread_mutex_lock(&cache.lock);
  const mcim_jose_key_t *have = cache_find(name);
  if (have) {
    mcim_jose_key_free(key);
    free(pem_copy);
    *out = have;
  } else if (cache.n < PEER_CACHE_MAX) {
    snprintf(cache.e[cache.n].name, sizeof(cache.e[cache.n].name), "%s", name);
    cache.e[cache.n].key = key;
    cache.e[cache.n].pem = pem_copy;
    cache.n++;
    *out = key;
  } else {
    mcim_jose_key_free(key);
    free(pem_copy);
    rc = MCIM_NO_MEMORY;
  }
  pthread_mutex_unlock(&cache.lock);
  return rc;
}

mcim_cause_t mcim_role_peer_key(struct mcim_role *r, const char *name,
                                const mcim_jose_key_t **out)
{
  return peer_key(r, name, out, false);
}

size_t mcim_role_peer_keys_prefetch(struct mcim_role *r, const json_t *names)
{
  size_t missing = 0, i;
  json_t *name;
  json_array_foreach((json_t *)names, i, name)
  {
    const mcim_jose_key_t *key;
    if (peer_key(r, json_string_value(name), &key, true) != MCIM_OK)
      missing++;
  }
  return missing;
}

mcim_cause_t mcim_role_peer_cert_pem(struct mcim_role *r, const char *name, char **pem)
{
  const mcim_jose_key_t *key;
  *pem = NULL;
  if (strcmp(name, r->name) == 0) {
    *pem = strdup(r->cert_pem);
    return *pem ? MCIM_OK : MCIM_NO_MEMORY;
  }
  mcim_cause_t rc = mcim_role_peer_key(r, name, &key);
  if (rc != MCIM_OK)
    return rc;
  pthread_mutex_lock(&cache.lock);
  int i = cache_index(name);
  if (i >= 0 && cache.e[i].pem)
    *pem = strdup(cache.e[i].pem);
  pthread_mutex_unlock(&cache.lock);
  return *pem ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t mcim_jws_peek_iss(const char *jws, char *iss, size_t iss_len)
{
  json_t *v = NULL;
  mcim_cause_t rc = mcim_jws_peek_claim(jws, "iss", &v);
  const char *s = json_string_value(v);
  if (rc == MCIM_OK && (!s || strlen(s) >= iss_len))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK)
    memcpy(iss, s, strlen(s) + 1);
  json_decref(v);
  return rc;
}

/* At the issuing SHO: the subscription the token was issued for must still be this device's
 * and not ended (active, or standby between two pre-provisioned MCIMs). Its termination
 * (step 10, or the deferred notice) revokes every token of it at once. */
static mcim_cause_t token_live_at_issuer(struct mcim_role *r, const struct mcim_access *a)
{
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_cause_t rc = mcim_auc_live(st, a->imsi, a->device);
  return rc == MCIM_SUBSCRIPTION_TERMINATED ? MCIM_TOKEN_REVOKED : rc;
}

/* At the RO: an SHO's token for a device whose registry entry at that SHO was released after
 * the token was issued (the SHO terminated the subscription it was issued for) is revoked
 * here too, without asking the SHO. "After" is on the SHO's own clock, to the microsecond:
 * the release's seq is when the SHO decided it, the token's iat_us when it was issued. In
 * whole seconds, a new subscription's token issued in the second of the old one's release
 * was taken for the old one's (seen in a demo: the pristine path's deferred notice refused
 * TOKEN_REVOKED). A row without seq (an older SHO) counts from its arrival; a token without
 * iat_us from the start of its second: both err towards revoking. */
static mcim_cause_t token_live_at_ro(struct mcim_role *r, const struct mcim_access *a)
{
  int64_t n = 0;
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  mcim_val_t p[] = {MCIM_TEXT(a->device), MCIM_TEXT(a->network), MCIM_INT(a->iat_us),
                    MCIM_INT(a->iat)};
  mcim_cause_t rc = mcim_store_query_int(st,
                                         "SELECT COUNT(*) FROM drf WHERE device = ? AND sho = ?"
                                         " AND state = 'released' AND (seq >= ?"
                                         " OR (seq <= 0 AND updated >= ?))",
                                         p, 4, &n);
  return rc == MCIM_OK && n > 0 ? MCIM_TOKEN_REVOKED : rc;
}

static bool access_net_here(const struct mcim_role *r)
{
  return strcmp(r->kind->kind, "sho") == 0 || strcmp(r->kind->kind, "vno") == 0;
}

/* The token's own checks, which hold for its bytes at this role whenever its claims accept the
 * time (everything but its revocation): `out` filled, and that span in [*nb, *na). */
static mcim_cause_t access_verify(struct mcim_role *r, const char *bearer, int64_t now,
                                  struct mcim_access *out, int64_t *nb, int64_t *na)
{
  char iss[64];
  const mcim_jose_key_t *key = NULL;
  mcim_statement_t *st = NULL;
  int64_t skew = mcim_config_duration(r->cfg, "clock_skew");
  mcim_cause_t rc = mcim_jws_peek_iss(bearer, iss, sizeof(iss));
  /* Only access networks grant access: a token signed by the RO, the PVA or the M2MES,
   * valid as its signature may be, is not an access token. */
  if (rc == MCIM_OK && !mcim_role_name_is_access_network(iss))
    rc = MCIM_CLAIM_MISMATCH;
  /* An access network honours only its own tokens: an SHO never acts on (nor reveals
   * anything to) a token another SHO or the VNO minted. The RO, the PVA and the M2MES are
   * what a token is for reaching, whoever issued it. */
  if (rc == MCIM_OK && access_net_here(r) && strcmp(iss, r->name) != 0)
    rc = MCIM_TOKEN_WRONG_ISSUER;
  if (rc == MCIM_OK)
    rc = mcim_role_peer_key(r, iss, &key);
  /* An issuer that is no peer of this role: a token it cannot take (its iss is wrong here).
   * A peer whose key could not be fetched now: the token may well be good, so the answer is
   * the peer's (502, no challenge: the device asks again with it). Before 2026-12-07 both
   * were NO_ACCESS, which reads "no token" and sent the device to attach again. */
  if (rc == MCIM_PEER_UNREACHABLE && !mcim_role_peer_url(r, iss))
    rc = MCIM_CLAIM_MISMATCH;
  if (rc != MCIM_OK)
    return rc;
  mcim_jws_expect_t ex = {
      .iss = iss, .aud = iss, .typ = "mcim-access+jwt", .skew = skew, .now = now};
  rc = mcim_jws_verify(bearer, strlen(bearer), key, &ex, &st);
  if (rc != MCIM_OK)
    return rc;
  const char *scope = mcim_statement_string(st, "scope");
  const char *imsi = mcim_statement_string(st, "imsi");
  if (!scope || (strcmp(scope, "full") != 0 && strcmp(scope, "restricted") != 0) || !imsi) {
    rc = MCIM_CLAIM_MISSING;
    goto out;
  }
  /* The scope its issuer may grant: the VNO (PCID access) restricted, an SHO full. */
  if (strcmp(scope, strcmp(iss, "vno") == 0 ? "restricted" : "full") != 0) {
    rc = MCIM_SCOPE_NOT_GRANTABLE;
    goto out;
  }
  snprintf(out->network, sizeof(out->network), "%s", iss);
  snprintf(out->device, sizeof(out->device), "%s", st->claims.sub);
  snprintf(out->scope, sizeof(out->scope), "%s", scope);
  snprintf(out->imsi, sizeof(out->imsi), "%s", imsi);
  out->iat = st->claims.iat;
  /* iat_us is on the issuing SHO's decision clock (mcim_sho_decision_us), never behind the
   * issuing instance's own clock that gave iat, and ahead of it by what another instance's
   * clock led by: taken up to `skew` ahead of iat's second. Beyond, or missing, the token
   * counts from the start of iat's second, which errs towards revoking. */
  json_t *us = json_object_get(st->payload, "iat_us");
  int64_t us_v = json_is_integer(us) ? (int64_t)json_integer_value(us) : -1;
  out->iat_us = us_v >= out->iat * 1000000 && us_v / 1000000 <= out->iat + skew
                    ? us_v
                    : out->iat * 1000000;
  /* check_claims (src/crypto/jose.c) accepts iat and nbf up to `skew` ahead, exp until
   * `skew` after */
  json_t *nbf = json_object_get(st->payload, "nbf");
  int64_t from = json_is_integer(nbf) && json_integer_value(nbf) > out->iat
                     ? (int64_t)json_integer_value(nbf)
                     : out->iat;
  *nb = from - skew;
  *na = mcim_replay_expires(st->claims.exp, skew);
out:
  mcim_statement_free(st);
  return rc;
}

/* The one answer to "whose token is honoured here, for what" (DESIGN.md section 10). A token
 * that verified here before, byte for byte and within the times its claims accept, is not
 * verified again (src/roles/verified.c); whether it was revoked since is asked every time. */
mcim_cause_t mcim_role_check_access(struct mcim_role *r, const struct mcim_http_request *req,
                                    bool need_full, struct mcim_access *out)
{
  return mcim_role_check_access_at(r, req, need_full, mcim_now(), out);
}

mcim_cause_t mcim_role_check_access_at(struct mcim_role *r, const struct mcim_http_request *req,
                                       bool need_full, int64_t now, struct mcim_access *out)
{
  uint8_t id[32];
  int64_t nb = 0, na = 0;
  memset(out, 0, sizeof(*out));
  if (!req->bearer || !*req->bearer)
    return MCIM_NO_ACCESS;
  bool have_id = mcim_role_access_id(r, req->bearer, id);
  mcim_cause_t rc = MCIM_OK;
  if (!have_id || !mcim_role_access_known(id, now, out)) {
    rc = access_verify(r, req->bearer, now, out, &nb, &na);
    if (rc != MCIM_OK)
      return rc;
    if (have_id)
      mcim_role_access_keep(id, out, nb, na);
  }
  if (strcmp(r->kind->kind, "sho") == 0)
    rc = token_live_at_issuer(r, out);
  else if (strcmp(r->kind->kind, "ro") == 0 && mcim_role_name_is_sho(out->network))
    rc = token_live_at_ro(r, out);
  else if (strcmp(r->kind->kind, "pva") == 0 && mcim_role_name_is_sho(out->network))
    rc = pva_token_live(r, out->network, out->imsi);
  if (rc == MCIM_OK && need_full && strcmp(out->scope, "full") != 0)
    rc = MCIM_SCOPE_RESTRICTED;
  return rc;
}

void mcim_role_access_challenge(struct mcim_http_response *resp, mcim_cause_t rc)
{
  switch (rc) {
  case MCIM_NO_ACCESS:
    resp->bearer_error = ""; /* RFC 6750 3.1: no error code when the request had no token */
    break;
  case MCIM_SCOPE_RESTRICTED:
    resp->bearer_error = "insufficient_scope";
    break;
  case MCIM_TOKEN_EXPIRED:
  case MCIM_TOKEN_NOT_YET_VALID:
  case MCIM_JWS_BAD_SIGNATURE:
  case MCIM_JWS_BAD_ALG:
  case MCIM_JOSE_MALFORMED:
  case MCIM_CLAIM_MISSING:
  case MCIM_CLAIM_MISMATCH:
  case MCIM_TOKEN_REVOKED:
  case MCIM_TOKEN_WRONG_ISSUER:
  case MCIM_SCOPE_NOT_GRANTABLE:
    resp->bearer_error = "invalid_token";
    break;
  default:
    break;
  }
}

void mcim_role_reply_access_refused(struct mcim_http_response *resp, mcim_cause_t rc, int step,
                                    const char *what)
{
  mcim_http_reply_problem(resp, rc, step, "%s needs network access", what);
  mcim_role_access_challenge(resp, rc);
}

/* The device itself asks (DESIGN.md section 10). A bearer token says which network the device
 * is on, and that network can mint one for any device it serves: in a change via the old SHO
 * it is the old SHO, which learns the txn at step 9 and must never learn who takes over. So
 * where an answer tells the device another operator's business (the DRF's discovery: which
 * SHO; the DPF's package: from which SHO; the PVA's nonce: whether another SHO's validation
 * is pending) the request carries the TRE's own word as well. The
 * proof is not spent: the device shows the same one on every retry and poll while it lives,
 * and nobody but the device and this role sees it (TLS, the role pinned by name). */
/* The device polls (its package) with the same proof: a proof that verified is taken again,
 * byte for byte the same with the same certificate, device, txn and purpose, by the same
 * role (its `aud`: roles that share a process share this cache), until the proof's own
 * expiry, without the chain check and the signature check again. Keyed by a SHA-256 over all
 * of it; a ring, the oldest verdict goes first. */
#define PROOF_CACHE_MAX 256
static struct {
  pthread_mutex_t lock;
  struct {
    uint8_t id[32];
    int64_t exp;
  } e[PROOF_CACHE_MAX];
  size_t next;
} proofs = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool proof_id(const char *const parts[6], uint8_t id[32])
{
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned len = 0;
  bool ok = md && EVP_DigestInit_ex(md, mcim_sha256(), NULL) == 1;
  for (int i = 0; ok && i < 6; i++) /* each with its NUL: no two splits hash alike */
    ok = EVP_DigestUpdate(md, parts[i], strlen(parts[i]) + 1) == 1;
  ok = ok && EVP_DigestFinal_ex(md, id, &len) == 1 && len == 32;
  EVP_MD_CTX_free(md);
  return ok;
}

static bool proof_known(const uint8_t id[32], int64_t now)
{
  bool hit = false;
  pthread_mutex_lock(&proofs.lock);
  for (size_t i = 0; i < PROOF_CACHE_MAX && !hit; i++)
    hit = proofs.e[i].exp > now && memcmp(proofs.e[i].id, id, 32) == 0;
  pthread_mutex_unlock(&proofs.lock);
  return hit;
}

static void proof_remember(const uint8_t id[32], int64_t exp)
{
  pthread_mutex_lock(&proofs.lock);
  memcpy(proofs.e[proofs.next].id, id, 32);
  proofs.e[proofs.next].exp = exp;
  proofs.next = (proofs.next + 1) % PROOF_CACHE_MAX;
  pthread_mutex_unlock(&proofs.lock);
}

mcim_cause_t mcim_role_check_device_request(struct mcim_role *r, const json_t *body,
                                            const char *device, const char *txn,
                                            const char *what)
{
  const char *proof = json_string_value(json_object_get(body, "proof"));
  const char *cert = json_string_value(json_object_get(body, "tre_cert"));
  mcim_jose_key_t *key = NULL;
  mcim_statement_t *stmt = NULL;
  uint8_t id[32];
  if (!proof || !cert)
    return MCIM_FIELD_MISSING;
  const char *const parts[6] = {proof, cert, device, txn, what, r->name};
  bool have_id = proof_id(parts, id);
  if (have_id && proof_known(id, mcim_now()))
    return MCIM_OK;
  mcim_cause_t rc = mcim_role_device_key_from_pem(r, cert, device, MCIM_CERT_TRE_ATTESTATION, &key);
  if (rc == MCIM_OK) {
    mcim_jws_expect_t ex = {.iss = device, .sub = device, .aud = r->name,
                            .typ = MCIM_DEVICE_REQUEST_TYP, .txn = txn,
                            .skew = mcim_config_duration(r->cfg, "clock_skew")};
    rc = mcim_jws_verify(proof, strlen(proof), key, &ex, &stmt);
  }
  if (rc == MCIM_OK) {
    const char *said = mcim_statement_string(stmt, "for");
    rc = !said ? MCIM_CLAIM_MISSING : strcmp(said, what) != 0 ? MCIM_CLAIM_MISMATCH : MCIM_OK;
  }
  if (rc == MCIM_OK && have_id)
    proof_remember(id, stmt->claims.exp);
  mcim_statement_free(stmt);
  mcim_jose_key_free(key);
  return rc;
}

mcim_cause_t mcim_role_require_device_request(struct mcim_role *r, const json_t *body,
                                              const char *device, const char *txn,
                                              const char *what, int step, const char *answer,
                                              struct mcim_http_response *resp)
{
  mcim_cause_t rc = mcim_role_check_device_request(r, body, device, txn, what);
  if (rc != MCIM_OK)
    mcim_http_reply_problem(resp, rc, step, "%s is for the device itself: its TRE's request"
                            " (proof, tre_cert) of procedure %s does not verify: %s",
                            answer, txn, mcim_cause_text(rc));
  return rc;
}
