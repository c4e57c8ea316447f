/* Shared by the JOSE files (jose.c: compact-form checks and JWS; jose_key.c: keys;
 * jose_jwe.c: JWE and sealed packages; jose_replay.c: the in-memory replay cache). Not part of
 * the library's interface: include/mcim/jose.h is. */
#ifndef MCIM_CRYPTO_JOSE_PRIV_H
#define MCIM_CRYPTO_JOSE_PRIV_H

#include <cjose/cjose.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/jose.h"

#define P256_LEN 32
#define ES256_SIG_LEN 64
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

/* The same P-256 key twice: as cjose needs it and as OpenSSL needs it (decryption). */
struct mcim_jose_key {
  _Atomic unsigned refs; /* mcim_jose_key_dup: shared by reference, freed by the last */
  cjose_jwk_t *jwk;
  EVP_PKEY *pkey;
  uint8_t fp[32]; /* SHA-256 of the public point, x || y: the key in signature verdicts */
  bool has_private;
  char *kid;
  /* mcim_jose_key_external: the private operations are these, elsewhere (a TPM) */
  const struct mcim_jose_key_ops *ext;
  void *ext_ctx;
};

/* One base64url part of a compact serialization, inside the caller's string. */
struct jose_part {
  const char *p;
  size_t len;
};

/* jose.c: the strict compact form (the rules in its head comment). */
mcim_cause_t jose_split_compact(const char *s, size_t len, struct jose_part *parts, size_t n);
mcim_cause_t jose_b64_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen);
bool jose_b64_decode_exact(const char *in, size_t len, uint8_t *out, size_t want);
mcim_cause_t jose_parse_header(const struct jose_part *p, json_t **out);
mcim_cause_t jose_header_require(json_t *hdr, const char *name, const char *allowed);
/* cjose's string copied with malloc, cjose's freed with cjose's deallocator */
char *jose_dup_cjose_string(char *s);
/* a checked P-256 key from raw coordinates (and d for a key pair) */
mcim_cause_t jose_p256_pkey(const uint8_t x[P256_LEN], const uint8_t y[P256_LEN], const uint8_t *d,
                            EVP_PKEY **out);
/* jose.c: a JWS statement's signature and claims; its jti against the replay cache */
mcim_cause_t jose_statement_verify(const char *compact, size_t len, const mcim_jose_key_t *key,
                                   const mcim_jws_expect_t *x, mcim_statement_t **out);
mcim_cause_t jose_replay_check(const mcim_jws_expect_t *x, const mcim_statement_t *st);

/* jose_key.c: a JWK coordinate, exactly P256_LEN bytes */
bool jose_jwk_coord(json_t *jwk, const char *name, uint8_t out[P256_LEN]);

#endif
