/* Sealed MCIM packages (a JWE inside the issuing SHO's JWS) and JWEs, as the device's TRE
 * opens them: the TRE's stage operation (src/tre/tre_slots.c: the issuer certificate against
 * the pinned operators' CA, mcim_package_open with the TRE's expectations and replay cache,
 * then the MCIM content), the PCID credential install (a bare JWE to the TRE's key-agreement
 * key, tre_aka.c), and mcim_package_open / mcim_package_verify (the DPF's relay check) with
 * fixed keys and clock. The fixture TRE (fuzz_tre_make) is made once; its state is put back
 * before every input.
 *
 * Input: one mode byte, then
 *   0  a compact package: mcim_package_verify and mcim_package_open (issuer sho-a, recipient
 *      tre-ka, aud = sub = dev1, txn, clock FUZZ_NOW);
 *   1  a compact package: the TRE's stage for FUZZ_TXN with sho-a's certificate;
 *   2  a compact JWE: mcim_jwe_decrypt with tre-ka, then the TRE's pcid_install;
 *   3  package content (the MCIM JSON), sealed here to the TRE by sho-a, then staged;
 *   4  a package payload (claims with "jwe"), signed here by sho-a, then staged.
 * Seeds: tests/fuzz/corpus/fuzz_package/. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/jose.h"
#include "mcim/tre.h"

static mcim_jose_key_t *issuer, *ka;
static EVP_PKEY *issuer_pkey;
static char *issuer_pem, *dir;
static mcim_tre_t *tre;
static struct fuzz_tre_files files;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  issuer = fuzz_jose_key(FUZZ_SHO);
  issuer_pkey = fuzz_pkey(FUZZ_SHO);
  ka = fuzz_jose_key("tre-ka");
  issuer_pem = fuzz_data(FUZZ_SHO ".crt", NULL);
  dir = fuzz_tmpdir("package");
  tre = fuzz_tre_make(dir);
  fuzz_tre_save(dir, &files);
  return 0;
}

static const char header4[] = "{\"alg\":\"ES256\",\"typ\":\"" FUZZ_TYP_PACKAGE "\"}";

static void open_direct(const char *pkg, size_t len)
{
  mcim_jws_verdicts_clear();
  mcim_replay_mem_t *mem = mcim_replay_mem_new(8);
  mcim_replay_cache_t cache = mcim_replay_mem_cache(mem);
  mcim_jws_expect_t x = {.iss = FUZZ_SHO, .aud = FUZZ_DEVICE, .sub = FUZZ_DEVICE,
                         .typ = FUZZ_TYP_PACKAGE, .txn = FUZZ_TXN, .now = FUZZ_NOW, .skew = 30,
                         .replay = &cache};
  mcim_statement_t *st = NULL;
  if (mcim_package_verify(pkg, len, issuer, &x, &st) == MCIM_OK)
    mcim_statement_free(st);
  mcim_replay_mem_free(mem);
  mem = mcim_replay_mem_new(8);
  cache = mcim_replay_mem_cache(mem);
  st = NULL;
  uint8_t *content = NULL;
  size_t clen = 0;
  if (mcim_package_open(pkg, len, issuer, &x, ka, &st, &content, &clen) == MCIM_OK) {
    mcim_jose_secret_free(content, clen);
    mcim_statement_free(st);
  }
  mcim_replay_mem_free(mem);
}

static void stage(const char *pkg, size_t len)
{
  mcim_jws_verdicts_clear();
  fuzz_tre_restore(dir, &files);
  if (tre->ops->stage(tre->ctx, FUZZ_TXN, pkg, len, issuer_pem) == MCIM_OK) {
    /* a staged package installs, and the slot answers */
    char slot[64], imsi[24];
    if (tre->ops->install(tre->ctx, FUZZ_TXN, slot) == MCIM_OK)
      (void)tre->ops->identity(tre->ctx, slot, imsi);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 5;
  data++;
  size--;
  char *text = NULL;
  switch (mode) {
  case 0:
    text = fuzz_strndup(data, size);
    open_direct(text, size);
    break;
  case 1:
    text = fuzz_strndup(data, size);
    stage(text, size);
    break;
  case 2: {
    text = fuzz_strndup(data, size);
    uint8_t *plain = NULL;
    size_t plen = 0;
    if (mcim_jwe_decrypt(ka, text, size, &plain, &plen) == MCIM_OK)
      mcim_jose_secret_free(plain, plen);
    fuzz_tre_restore(dir, &files);
    (void)tre->ops->pcid_install(tre->ctx, text, size);
    break;
  }
  case 3: {
    mcim_claims_t c = {.iss = FUZZ_SHO, .sub = FUZZ_DEVICE, .aud = FUZZ_DEVICE,
                       .typ = FUZZ_TYP_PACKAGE, .jti = "fuzz-package-jti", .txn = FUZZ_TXN,
                       .iat = FUZZ_IAT, .exp = FUZZ_EXP};
    if (size && mcim_package_seal(issuer, &c, ka, data, size, &text) == MCIM_OK)
      stage(text, strlen(text));
    break;
  }
  default:
    text = fuzz_sign_raw(issuer_pkey, (const uint8_t *)header4, strlen(header4), data, size);
    if (text)
      stage(text, strlen(text));
    break;
  }
  free(text);
  return 0;
}
