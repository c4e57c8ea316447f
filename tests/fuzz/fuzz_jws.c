/* JWS compact statements as every role and the TRE verify them: mcim_jws_verify (form, ES256
 * only, signature, every mandatory claim, times, the replay cache), with a fixed key and
 * expectations, and mcim_jws_peek_claim, which roles call on the same bytes BEFORE
 * verification to pick the key (src/roles/peers.c, ro/drf.c, sho/order.c, the agent).
 *
 * Input: one mode byte, then
 *   0  a compact JWS, as received;
 *   1  a payload, signed here with the fixture's sho-a key under the header
 *      {"alg":"ES256","typ":"mcim-status+jwt"}: the claim checks behind a valid signature;
 *   2  header bytes, a NUL, payload bytes, signed here as they are.
 * Seeds: tests/fuzz/corpus/fuzz_jws/ (fuzz-seedgen corpus). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/jose.h"

static mcim_jose_key_t *key;
static EVP_PKEY *pkey;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  key = fuzz_jose_key(FUZZ_SHO);
  pkey = fuzz_pkey(FUZZ_SHO);
  return 0;
}

static const char header1[] = "{\"alg\":\"ES256\",\"typ\":\"mcim-status+jwt\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *jws = NULL;
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 3;
  data++;
  size--;
  if (mode == 0) {
    jws = fuzz_strndup(data, size);
  } else if (mode == 1) {
    jws = fuzz_sign_raw(pkey, (const uint8_t *)header1, strlen(header1), data, size);
  } else {
    size_t hlen, plen;
    const uint8_t *payload;
    fuzz_split(data, size, 0, &hlen, &payload, &plen);
    jws = fuzz_sign_raw(pkey, data, hlen, payload ? payload : (const uint8_t *)"", plen);
  }
  if (!jws)
    return 0;
  size_t len = mode == 0 ? size : strlen(jws);

  /* A verified signature is remembered (src/crypto/jose.c); forgotten here so that every
   * input is checked the whole way and a finding replays alone. */
  mcim_jws_verdicts_clear();
  mcim_replay_mem_t *mem = mcim_replay_mem_new(8);
  mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
  static const char *const issuers[] = {"ro", FUZZ_SHO, NULL};
  mcim_jws_expect_t x = {.iss = FUZZ_SHO, .aud = FUZZ_DEVICE, .typ = "mcim-status+jwt",
                         .sub = FUZZ_DEVICE, .txn = FUZZ_TXN, .now = FUZZ_NOW, .skew = 30,
                         .replay = &cache};
  mcim_statement_t *st = NULL;
  if (mcim_jws_verify(jws, len, key, &x, &st) == MCIM_OK) {
    (void)mcim_statement_string(st, "slot");
    /* the same statement again is a replay */
    if (mcim_jws_verify(jws, len, key, &x, NULL) != MCIM_REPLAY)
      abort();
  }
  mcim_statement_free(st);
  /* the set of issuers and no sub/txn, wall clock */
  mcim_jws_expect_t any = {.iss_any = issuers, .aud = FUZZ_DEVICE, .typ = "mcim-status+jwt"};
  st = NULL;
  (void)mcim_jws_verify(jws, len, key, &any, &st);
  mcim_statement_free(st);
  uint8_t *payload = NULL;
  size_t plen = 0;
  if (mcim_jws_check_signature(jws, len, key, &payload, &plen) == MCIM_OK)
    free(payload);
  /* the unverified peek, on the string as a handler has it */
  static const char *const claims[] = {"iss", "sub", "exp", "typ", "attestation_cert"};
  for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
    json_t *v = NULL;
    (void)mcim_jws_peek_claim(jws, claims[i], &v);
    json_decref(v);
  }
  mcim_replay_mem_free(mem);
  free(jws);
  return 0;
}
