/* PCID credential renewal (include/mcim/tre.h, pcid_renew; docs/protocol.md "PCID credential
 * lifetime and renewal"): a new initial network access credential from the RO's DPF or the
 * M2MES CCIF, as a sealed package (mcim-pcid+jwt, the credential as a JWE to the TRE
 * key-agreement key inside the issuer's JWS).
 *
 * Who may renew rests on one rule, as for MCIM slots: the issuer is the CN of the certificate
 * that verified the signature (the operators' CA pinned at manufacture vouches for it), and
 * only `ro` and `m2mes` are accepted. An SHO, with a perfectly valid operators' CA
 * certificate, cannot replace the PCID credential: it must never be able to take the pristine
 * path away from the device (invariant 2). */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

#define TRE_TYP_PCID "mcim-pcid+jwt"

static const char *const pcid_issuers[] = {"ro", "m2mes", NULL};

static bool pcid_issuer_allowed(const char *cn)
{
  for (const char *const *p = pcid_issuers; cn && *p; p++)
    if (strcmp(*p, cn) == 0)
      return true;
  return false;
}

static mcim_cause_t digest_hex(const char *data, size_t len, char out[65])
{
  uint8_t md[32];
  unsigned int mdlen = 0;
  if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
    return MCIM_CRYPTO_ERROR;
  mcim_hex_encode(md, sizeof(md), out);
  return MCIM_OK;
}

/* Verify and open the package; `fresh` gets the validated credential, `issuer` its CN. */
static mcim_cause_t renew_verify(struct tre_soft *t, json_t *st, const char *package, size_t len,
                                 const char *issuer_pem, const char **why, json_t **fresh,
                                 char **issuer)
{
  X509 *ca = NULL, *cert = NULL;
  EVP_PKEY *pub = NULL;
  mcim_jose_key_t *ikey = NULL, *ka = NULL;
  mcim_statement_t *stmt = NULL;
  uint8_t *plain = NULL;
  size_t plain_len = 0;
  char *cn = NULL;
  const char *device = tre_str(st, "device"), *ca_pem = tre_str(st, "operators_ca");
  struct tre_replay replay = {.seen = json_object_get(st, "seen")};
  mcim_replay_cache_t cache = tre_replay_cache(&replay);
  mcim_cause_t rc = MCIM_INTERNAL;

  *why = "pinned operators' CA unusable";
  if (!ca_pem || mcim_pki_cert_from_pem(ca_pem, strlen(ca_pem), &ca) != MCIM_OK)
    goto cleanup;
  *why = "issuer certificate unreadable";
  if ((rc = mcim_pki_cert_from_pem(issuer_pem, strlen(issuer_pem), &cert)) != MCIM_OK)
    goto cleanup;
  *why = "issuer certificate does not verify against the operators' CA";
  if ((rc = mcim_pki_cert_public_key(cert, ca, MCIM_CERT_TLS, NULL, 0, &pub)) != MCIM_OK)
    goto cleanup;
  *why = "issuer certificate has no usable name";
  if ((rc = mcim_pki_cert_name(cert, &cn)) != MCIM_OK)
    goto cleanup;
  rc = MCIM_FORBIDDEN;
  *why = "issuer is neither the RO nor the M2MES (only they renew the PCID credential)";
  if (!pcid_issuer_allowed(cn))
    goto cleanup;
  *why = "issuer or TRE key unusable";
  if ((rc = mcim_jose_key_from_pkey(pub, &ikey)) != MCIM_OK ||
      (rc = tre_key_jose(t, st, MCIM_TRE_CERT_KA, &ka)) != MCIM_OK)
    goto cleanup;
  mcim_jws_expect_t x = {.iss = cn,
                         .aud = device,
                         .sub = device,
                         .typ = TRE_TYP_PCID,
                         .skew = MCIM_TRE_SKEW,
                         .replay = &cache};
  *why = "package does not open (signature, claims, lifetime, replay or sealing)";
  rc = mcim_package_open(package, len, ikey, &x, ka, &stmt, &plain, &plain_len);
  if (rc != MCIM_OK)
    goto cleanup;
  /* a TPM TRE: K under the slot key this renewal's request offered, never in clear */
  *why = "content is not a valid, unexpired PCID credential (or its K not for this TRE)";
  rc = tre_pcid_parse(t, st, plain, plain_len, stmt->claims.txn, fresh);
  if (rc != MCIM_OK)
    goto cleanup;
  *issuer = cn;
  cn = NULL;
cleanup:
  mcim_jose_secret_free(plain, plain_len);
  mcim_statement_free(stmt);
  mcim_jose_key_free(ka);
  mcim_jose_key_free(ikey);
  EVP_PKEY_free(pub);
  X509_free(cert);
  X509_free(ca);
  free(cn);
  return rc;
}

mcim_cause_t tre_op_pcid_renew(void *ctx, const char *package, size_t len,
                               const char *issuer_cert_pem)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *fresh = NULL;
  char digest[65], *issuer = NULL;
  const char *why = "invalid argument";
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT, cause = MCIM_INVALID_ARGUMENT;

  if (!t || !package || !issuer_cert_pem)
    goto cleanup;
  /* Peer input from here on: every refusal is PACKAGE_INVALID with its cause logged. */
  if (!len || len > MCIM_JOSE_MAX_LEN) {
    cause = len ? MCIM_TOO_LARGE : MCIM_JOSE_MALFORMED;
    why = "package empty or larger than any package";
    rc = MCIM_PACKAGE_INVALID;
    goto cleanup;
  }
  if ((rc = digest_hex(package, len, digest)) != MCIM_OK)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  /* The same package again (a retry after a crash or a lost answer): already installed. */
  const char *have = tre_str(json_object_get(st, "pcid"), "package_sha256");
  if (have && strcmp(have, digest) == 0) {
    mcim_log_info("tre: PCID renewal already installed, nothing to do");
    rc = MCIM_OK;
    goto cleanup;
  }
  cause = renew_verify(t, st, package, len, issuer_cert_pem, &why, &fresh, &issuer);
  if (cause != MCIM_OK) {
    /* the TPM failing is no fault of the package: that cause, so the caller may retry */
    rc = tre_key_failure(cause) ? cause : MCIM_PACKAGE_INVALID;
    if (rc == cause)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, cause, "tre: PCID renewal not opened: %s", why);
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  if (json_object_set_new(fresh, "issuer", json_string(issuer)) ||
      json_object_set_new(fresh, "package_sha256", json_string(digest)))
    goto cleanup;
  rc = tre_pcid_put(t, st, fresh);
  if (rc != MCIM_OK)
    goto cleanup;
  /* the offered slot key is the new credential's now */
  if (json_object_get(fresh, "k_tpm"))
    json_object_del(st, TRE_PCID_OFFER);
  /* the same credential delivered again keeps its object: record the package there too */
  json_t *cur = json_object_get(st, "pcid");
  if (cur != fresh && (json_object_set_new(cur, "issuer", json_string(issuer)) ||
                       json_object_set_new(cur, "package_sha256", json_string(digest)))) {
    rc = MCIM_NO_MEMORY;
    goto cleanup;
  }
  rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_info("tre: PCID credential %s from %s installed, expires %lld (previous one kept"
                  " until the new one passes an AKA)",
                  tre_str(fresh, "pcid"), issuer, (long long)tre_int(fresh, "expires"));
cleanup:
  if (rc == MCIM_PACKAGE_INVALID)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, cause, "tre: PCID renewal refused: %s", why);
  /* `fresh` may be shared with `st`, which tre_end() wipes; wipe here too in case not. */
  tre_json_wipe_free(fresh);
  free(issuer);
  if (held)
    tre_end(t, st);
  return rc;
}
