/* Signed statements (JWS, ES256) and sealed packages (JWE ECDH-ES + A256GCM inside the
 * issuer's JWS), on cjose. See docs/jose-pki.md for the formats.
 *
 * Only one algorithm of each kind is accepted: ES256 for signatures, ECDH-ES with A256GCM for
 * encryption, P-256 keys. Everything else ("none", HS*, RS*, other curves) is refused with
 * MCIM_JWS_BAD_ALG before any cryptography runs, so an attacker cannot pick the algorithm.
 *
 * Inputs from peers are (buffer, length) pairs, never trusted to be terminated, and any
 * garbage yields a cause, never a crash. Every constructor has a matching _free(). */
#ifndef MCIM_JOSE_H
#define MCIM_JOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "mcim/cause.h"

/* Largest compact serialization accepted (packages are small; this stops memory abuse). */
#define MCIM_JOSE_MAX_LEN (256u * 1024u)
/* A generated jti: 16 random bytes, base64url (22 characters). */
#define MCIM_JTI_LEN 22

/* ---- keys --------------------------------------------------------------------------- */

/* A P-256 key (private or public only), with an optional key id. */
typedef struct mcim_jose_key mcim_jose_key_t;

/* A fresh random P-256 key pair. */
mcim_cause_t mcim_jose_key_generate(mcim_jose_key_t **out);
/* From an OpenSSL key (EC P-256 only, else MCIM_KEY_INVALID); copies the private part if the
 * EVP_PKEY has one. The caller keeps ownership of `pkey`. */
mcim_cause_t mcim_jose_key_from_pkey(const EVP_PKEY *pkey, mcim_jose_key_t **out);
/* From a JWK (RFC 7517) of kty "EC", crv "P-256"; "kid" is kept. */
mcim_cause_t mcim_jose_key_from_jwk(const char *json, size_t len, mcim_jose_key_t **out);
/* The public JWK as a NUL-terminated JSON string; free() it. Never contains "d". */
mcim_cause_t mcim_jose_key_public_jwk(const mcim_jose_key_t *key, char **out);
/* A P-256 public key from its raw coordinates (32 bytes each), the point checked to be on the
 * curve (MCIM_KEY_INVALID otherwise); EVP_PKEY_free() it. */
mcim_cause_t mcim_p256_public_pkey(const uint8_t x[32], const uint8_t y[32], EVP_PKEY **out);
/* The public part as an OpenSSL key (e.g. to certify it); EVP_PKEY_free() it. */
mcim_cause_t mcim_jose_key_public_pkey(const mcim_jose_key_t *key, EVP_PKEY **out);
/* Key id written into the "kid" header of what this key signs (NULL clears it).
 * MCIM_INVALID_ARGUMENT on a key shared by reference (mcim_jose_key_dup): others read it. */
mcim_cause_t mcim_jose_key_set_kid(mcim_jose_key_t *key, const char *kid);
const char *mcim_jose_key_kid(const mcim_jose_key_t *key);
bool mcim_jose_key_has_private(const mcim_jose_key_t *key);
/* Another reference to the same key, not a copy (thread-safe; each is freed with
 * mcim_jose_key_free, the key with the last): only for keys nobody changes any more (no
 * mcim_jose_key_set_kid on a shared key). */
mcim_cause_t mcim_jose_key_dup(const mcim_jose_key_t *key, mcim_jose_key_t **out);
void mcim_jose_key_free(mcim_jose_key_t *key);

/* A key whose private part is not in this process (a TPM: docs/tre-tpm.md): whoever holds it
 * computes the two private operations JOSE needs, and this module does the rest. */
struct mcim_jose_key_ops {
  /* ES256 over the SHA-256 `digest` of the JWS signing input: the signature as R || S (RFC
   * 7518 section 3.4: 32 bytes each, big-endian, left-padded). */
  mcim_cause_t (*sign)(void *ctx, const uint8_t digest[32], uint8_t sig[64]);
  /* ECDH with the peer's P-256 point (x, y), already checked to be on the curve: Z, the
   * x coordinate of d * (x, y), 32 bytes. */
  mcim_cause_t (*ecdh)(void *ctx, const uint8_t x[32], const uint8_t y[32], uint8_t z[32]);
  /* Release `ctx` with the key (may be NULL). */
  void (*free)(void *ctx);
};
/* A key with the public part `pub` (EC P-256; any private part it has is ignored) whose
 * private operations are `ops` on `ctx` (owned by the key from here on, also on failure:
 * ops->free). mcim_jws_sign assembles the compact JWS itself (protected header and payload
 * as for any key, the signature from ops->sign); mcim_jwe_decrypt and mcim_package_open take
 * Z from ops->ecdh and run the same Concat KDF and AES-GCM. Either op may be NULL: that use
 * is MCIM_KEY_INVALID. A failure of an op is its cause, passed on unchanged. The key counts
 * as private (mcim_jose_key_has_private). Keep it with its maker, out of any cache: its ctx
 * may be bound to the maker's state (the TPM TRE's: its transaction's TPM connection). */
mcim_cause_t mcim_jose_key_external(const EVP_PKEY *pub, const struct mcim_jose_key_ops *ops,
                                    void *ctx, mcim_jose_key_t **out);

/* ---- claims ------------------------------------------------------------------------- */

/* The claims every mcim statement carries (DESIGN.md section 2). Strings are borrowed. */
typedef struct mcim_claims {
  const char *iss; /* issuer: role instance name ("ro", "sho-a") or device id */
  const char *sub; /* subject: the device id */
  const char *aud; /* audience: one role instance name or device id */
  const char *typ; /* statement type, e.g. "mcim-package+jwt" */
  const char *jti; /* unique id for the replay cache; NULL when signing: a random one */
  const char *txn; /* procedure id */
  int64_t iat;     /* issued at (epoch seconds); 0 when signing: now */
  int64_t exp;     /* expires at; must be > iat (lifetimes come from configuration) */
  /* More claims (a JSON object) or NULL. Signing: borrowed, merged into the payload; it may
   * not redefine a mandatory claim. Verified statement: the whole payload (borrowed). */
  json_t *extra;
} mcim_claims_t;

/* New random jti (MCIM_JTI_LEN characters + NUL). */
mcim_cause_t mcim_jose_new_jti(char out[MCIM_JTI_LEN + 1]);

/* ---- replay cache (injected, like stores and transports) ---------------------------- */

/* check_and_insert: if (iss, jti) was recorded and has not expired at `now`, MCIM_REPLAY;
 * otherwise record it until `expires` and return MCIM_OK. Any other cause is a failure and
 * the statement is refused (a broken cache must never read as "fresh"). Must be atomic. */
typedef struct mcim_replay_cache {
  mcim_cause_t (*check_and_insert)(void *ctx, const char *iss, const char *jti, int64_t expires,
                                   int64_t now);
  void *ctx;
} mcim_replay_cache_t;

/* Until when the jti of a statement verified with `skew` must be kept (the `expires` to give
 * check_and_insert): verification accepts it until exp + skew. Saturates at INT64_MAX (exp is
 * peer input, any positive int64); a skew <= 0 keeps it until exp. */
int64_t mcim_replay_expires(int64_t exp, int64_t skew);

/* In-memory implementation for tests and small daemons: at most `capacity` live entries,
 * expired ones are reused; when full of live entries, MCIM_REPLAY_CACHE_FULL (fail closed).
 * Thread-safe. The store-backed implementation lives with the stores. */
typedef struct mcim_replay_mem mcim_replay_mem_t;
mcim_replay_mem_t *mcim_replay_mem_new(size_t capacity);
void mcim_replay_mem_free(mcim_replay_mem_t *mem);
/* The interface bound to `mem` (valid while `mem` lives). */
mcim_replay_cache_t mcim_replay_mem_cache(mcim_replay_mem_t *mem);
/* Live entries (for tests and metrics). */
size_t mcim_replay_mem_count(mcim_replay_mem_t *mem, int64_t now);

/* ---- JWS statements ----------------------------------------------------------------- */

/* What the verifier expects. iss (or iss_any), aud and typ are required: a verifier must say
 * whom it trusts and what it is reading. sub and txn are checked when given. */
typedef struct mcim_jws_expect {
  const char *iss;             /* the one accepted issuer, or NULL and ... */
  const char *const *iss_any;  /* ... a NULL-terminated set of accepted issuers */
  const char *aud;             /* required: who we are */
  const char *typ;             /* required: statement type */
  const char *sub;             /* optional: the device this must be about */
  const char *txn;             /* optional: the procedure this must belong to */
  int64_t now;                 /* 0: wall clock */
  int64_t skew;                /* tolerated clock difference, seconds (>= 0) */
  const mcim_replay_cache_t *replay; /* optional; NULL: jti not checked against replays */
  int64_t max_lifetime;        /* > 0: exp at most this many seconds (and skew) after now, else
                                  MCIM_LIFETIME_TOO_LONG: a jti is kept until exp, and the
                                  issuer must not choose how long */
} mcim_jws_expect_t;

/* A verified statement: its claims point into `payload`, which it owns. */
typedef struct mcim_statement {
  mcim_claims_t claims;
  json_t *payload; /* the whole claims object */
  char *kid;       /* "kid" of the protected header, or NULL */
} mcim_statement_t;
void mcim_statement_free(mcim_statement_t *st);
/* A string claim of the statement, NULL if absent or not a string. */
const char *mcim_statement_string(const mcim_statement_t *st, const char *name);

/* Sign `claims` with `key` (must hold the private part): compact JWS, NUL-terminated; free().
 * MCIM_INVALID_ARGUMENT if a mandatory claim is missing or empty, or exp <= iat. */
mcim_cause_t mcim_jws_sign(const mcim_jose_key_t *key, const mcim_claims_t *claims, char **out);

/* Verify a compact JWS with the signer's public `key` and check every mandatory claim.
 * Order: form (MCIM_JOSE_MALFORMED), alg (MCIM_JWS_BAD_ALG), signature (MCIM_JWS_BAD_SIGNATURE),
 * claim presence and types (MCIM_CLAIM_MISSING), values (MCIM_CLAIM_MISMATCH), times
 * (MCIM_TOKEN_NOT_YET_VALID, MCIM_TOKEN_EXPIRED), then the replay cache (MCIM_REPLAY), so a
 * refused statement never consumes its jti. `out` may be NULL. A signature that verified is
 * remembered (the SHA-256 of the compact JWS and of the key's public point): the same bytes
 * under the same key are not verified again; the claims, times and replay always are. */
mcim_cause_t mcim_jws_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
                             const mcim_jws_expect_t *expect, mcim_statement_t **out);

/* Forget the remembered signatures (tests). */
void mcim_jws_verdicts_clear(void);

/* Form, algorithm (ES256 only) and signature, nothing else: for published test vectors and
 * payloads that are not statements. Statements must go through mcim_jws_verify().
 * `payload` is a new buffer; free() it. */
mcim_cause_t mcim_jws_check_signature(const char *compact, size_t len, const mcim_jose_key_t *key,
                                      uint8_t **payload, size_t *payload_len);

/* ---- JWE ---------------------------------------------------------------------------- */

/* Encrypt to `recipient` (its public part is used): compact JWE, alg ECDH-ES, enc A256GCM,
 * "kid" of the recipient key if it has one. free() the result. */
mcim_cause_t mcim_jwe_encrypt(const mcim_jose_key_t *recipient, const uint8_t *plain, size_t len,
                              char **out);
/* Decrypt with the recipient's private key. MCIM_JWS_BAD_ALG for any other alg/enc,
 * MCIM_JOSE_MALFORMED for a broken form, MCIM_JWE_DECRYPT_FAILED for a wrong key or altered
 * content. The plaintext (a secret) is released with mcim_jose_secret_free(). */
mcim_cause_t mcim_jwe_decrypt(const mcim_jose_key_t *recipient, const char *compact, size_t len,
                              uint8_t **plain, size_t *plain_len);
/* ECDH-ES key derivation (RFC 7518 section 4.6): ECDH of `priv` with `peer`, then the Concat
 * KDF with AlgorithmID `alg_id` (the "enc" value for direct agreement), PartyUInfo `apu`,
 * PartyVInfo `apv`, keydatalen 8 * out_len. Exposed for test vectors (RFC 7518 Appendix C). */
mcim_cause_t mcim_jose_ecdh_es_derive(const mcim_jose_key_t *priv, const mcim_jose_key_t *peer,
                                      const char *alg_id, const uint8_t *apu, size_t apu_len,
                                      const uint8_t *apv, size_t apv_len, uint8_t *out,
                                      size_t out_len);
/* Wipe and free a secret returned by this module. */
void mcim_jose_secret_free(void *p, size_t len);

/* ---- sealed packages: JWE inside the issuer's JWS ----------------------------------- */

/* Claim that carries the JWE compact string inside the package statement. */
#define MCIM_PACKAGE_CLAIM "jwe"

/* Encrypt `content` to `recipient` and sign claims + {"jwe": ...} with `issuer`. */
mcim_cause_t mcim_package_seal(const mcim_jose_key_t *issuer, const mcim_claims_t *claims,
                               const mcim_jose_key_t *recipient, const uint8_t *content,
                               size_t len, char **out);
/* Relay (DPF): check origin and claims with the issuer's public key, without decrypting.
 * Also checks that the "jwe" claim is a well-formed ECDH-ES/A256GCM JWE. */
mcim_cause_t mcim_package_verify(const char *pkg, size_t len, const mcim_jose_key_t *issuer,
                                 const mcim_jws_expect_t *expect, mcim_statement_t **out);
/* Recipient: verify as above, then decrypt with the recipient's private key. The jti is
 * recorded in the replay cache only once both succeed. `st` may be NULL; `content` is a
 * secret: mcim_jose_secret_free(). */
mcim_cause_t mcim_package_open(const char *pkg, size_t len, const mcim_jose_key_t *issuer,
                               const mcim_jws_expect_t *expect, const mcim_jose_key_t *recipient,
                               mcim_statement_t **st, uint8_t **content, size_t *content_len);

/* Any claim of a compact JWS, read WITHOUT verification (only to pick the key to verify it
 * with, or a lifetime to plan by: verify before trusting anything in it); *out is a new
 * reference. Here, not with the roles' peer helpers, so that the device agent links no role
 * code (docs/device.md, "Footprint"). */
mcim_cause_t mcim_jws_peek_claim(const char *jws, const char *name, json_t **out);
/* The payload at once (its JSON, a new reference: an object if the JWS is well formed), with
 * the same warning: for a caller that reads several claims. */
mcim_cause_t mcim_jws_peek_payload(const char *jws, json_t **out);

#endif
