/* A role's request body through the validation its handler uses: the TRE quote a device
 * sends the PVA (POST /v1/validations/{id}/quote, pva_quote in src/roles/pva/quote.c). After the
 * token and the field table, the handler verifies the quote with mcim_jws_verify (iss = sub =
 * the device, aud = the PVA, typ mcim-quote+jwt, txn) under the certified attestation key,
 * then hands it to the evidence checks it keeps apart for this (src/roles/pva/validate.c,
 * pure): pva_quote_evidence (nonce, model, log, digest), pva_match (the log replayed into the
 * quoted digest, every measurement against the model's RIMs) and pva_mismatch_summary (the
 * problem's detail). Here the key is the fixture's tre-att, the nonce FUZZ_NONCE, the RIMs
 * those of the lab firmware of FUZZ_MODEL (mcim_firmware_rim), the clock FUZZ_NOW.
 *
 * Input: one mode byte, then
 *   0  the compact quote, as the body's "quote" string;
 *   1  a quote payload, signed here with tre-att under {"alg":"ES256","typ":"mcim-quote+jwt"};
 *   2  header bytes, a NUL, payload bytes, signed here.
 * Seeds: tests/fuzz/corpus/fuzz_pva_quote/ (quotes made by the fixture TRE's quote op). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/firmware.h"
#include "mcim/jose.h"
#include "roles/pva/pva.h"

static mcim_jose_key_t *att;
static EVP_PKEY *att_pkey;
static json_t *rims;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  att = fuzz_jose_key("tre-att");
  att_pkey = fuzz_pkey("tre-att");
  rims = json_object();
  for (const char *const *c = mcim_firmware_components; *c; c++) {
    char hex[MCIM_FIRMWARE_HEX_LEN + 1];
    if (mcim_firmware_rim(FUZZ_MODEL, *c, hex) != MCIM_OK)
      fuzz_die("RIM");
    json_object_set_new(rims, *c, json_pack("[s]", hex));
  }
  return 0;
}

static const char header1[] = "{\"alg\":\"ES256\",\"typ\":\"" FUZZ_TYP_QUOTE "\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 3;
  char *quote;
  data++;
  size--;
  if (mode == 0) {
    quote = fuzz_strndup(data, size);
  } else if (mode == 1) {
    quote = fuzz_sign_raw(att_pkey, (const uint8_t *)header1, strlen(header1), data, size);
  } else {
    size_t hlen, plen;
    const uint8_t *payload;
    fuzz_split(data, size, 0, &hlen, &payload, &plen);
    quote = fuzz_sign_raw(att_pkey, data, hlen, payload ? payload : (const uint8_t *)"", plen);
  }
  if (!quote)
    return 0;
  mcim_jws_verdicts_clear();
  mcim_replay_mem_t *mem = mcim_replay_mem_new(8);
  mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
  mcim_jws_expect_t x = {.iss = FUZZ_DEVICE, .sub = FUZZ_DEVICE, .aud = "pva",
                         .typ = FUZZ_TYP_QUOTE, .txn = FUZZ_TXN, .now = FUZZ_NOW, .skew = 30,
                         .replay = &cache};
  mcim_statement_t *q = NULL;
  /* the handler reads the body's string with strlen */
  if (mcim_jws_verify(quote, strlen(quote), att, &x, &q) == MCIM_OK) {
    const char *model = NULL;
    const json_t *log = NULL;
    char err[200], detail[512];
    if (pva_quote_evidence(q, FUZZ_NONCE, &model, &log, err, sizeof(err)) == MCIM_OK) {
      /* the PVA's RIMs of the quoted model: the fixture's model has them, any other none */
      json_t *model_rims = strcmp(model, FUZZ_MODEL) == 0 ? json_incref(rims) : json_object();
      json_t *mismatches =
          pva_match(model, log, mcim_statement_string(q, "digest"), model_rims);
      json_decref(model_rims);
      if (mismatches && json_array_size(mismatches))
        pva_mismatch_summary(mismatches, model, detail, sizeof(detail));
      json_decref(mismatches);
    }
  }
  mcim_statement_free(q);
  mcim_replay_mem_free(mem);
  free(quote);
  return 0;
}
