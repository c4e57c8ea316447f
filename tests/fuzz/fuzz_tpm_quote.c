/* A TPM device's evidence at the PVA (the quote request's "tpm" member; src/roles/pva/
 * quote_tpm.c, src/crypto/attest.c): pva_tpm_evidence under the fixture's tre-att key and
 * the nonce FUZZ_NONCE, then pva_match against the RIMs of FUZZ_MODEL, as pva_quote does.
 *
 * Input: one mode byte, a 2-byte big-endian length L, L bytes of TPMS_ATTEST, then
 *   mode 0: a 2-byte length M, M bytes of TPMT_SIGNATURE, the rest the log text;
 *   mode 1: the rest the log text, and the TPMS_ATTEST signed here with tre-att (ECDSA,
 *           SHA-256, as a TPMT_SIGNATURE), so that the nonce, PCR selection and log replay
 *           checks behind the signature are reached too.
 * Seeds: tests/fuzz/corpus/fuzz_tpm_quote/: a quote of PCR 10 over FUZZ_NONCE whose ima-ng log
 * of the model's three RIMs replays to it, signed here (mode 1, accepted) and with a
 * signature that does not verify (mode 0); made by hand as attest.h describes the forms (PCR
 * 23 until the measured launch moved to PCR 10: its selection byte and the lines' "23 " were
 * changed, the replay is the same). */
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/firmware.h"
#include "mcim/util.h"
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

static char *b64(const uint8_t *in, size_t len)
{
  char *s = malloc(mcim_b64url_len(len) + 1);
  if (s)
    mcim_b64url_encode(in, len, s);
  return s;
}

/* TPMT_SIGNATURE {ECDSA, SHA256, r, s} of `msg` by tre-att; its length, 0 on failure. */
static size_t tpm_sign(const uint8_t *msg, size_t len, uint8_t out[80])
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  uint8_t der[80];
  size_t der_len = sizeof(der), n = 0;
  ECDSA_SIG *sig = NULL;
  const BIGNUM *r, *s;
  if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, att_pkey) == 1 &&
      EVP_DigestSign(ctx, der, &der_len, msg, len) == 1) {
    const uint8_t *p = der;
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
  }
  if (sig) {
    ECDSA_SIG_get0(sig, &r, &s);
    out[0] = 0x00, out[1] = 0x18, out[2] = 0x00, out[3] = 0x0b;
    out[4] = 0, out[5] = 32;
    out[38] = 0, out[39] = 32;
    if (BN_bn2binpad(r, out + 6, 32) == 32 && BN_bn2binpad(s, out + 40, 32) == 32)
      n = 72;
  }
  ECDSA_SIG_free(sig);
  EVP_MD_CTX_free(ctx);
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint8_t sig[80];
  const uint8_t *sig_p = sig;
  size_t sig_len = 0;

  if (size < 3)
    return 0;
  uint8_t mode = data[0] % 2;
  size_t alen = (size_t)data[1] << 8 | data[2];
  data += 3;
  size -= 3;
  if (alen > size)
    return 0;
  const uint8_t *attest = data;
  data += alen;
  size -= alen;
  if (mode == 0) {
    if (size < 2)
      return 0;
    sig_len = (size_t)data[0] << 8 | data[1];
    if (sig_len > size - 2)
      return 0;
    sig_p = data + 2;
    data += 2 + sig_len;
    size -= 2 + sig_len;
  } else {
    sig_len = tpm_sign(attest, alen, sig);
    if (!sig_len)
      return 0;
  }
  char *log = fuzz_strndup(data, size);
  char *a64 = b64(attest, alen), *s64 = b64(sig_p, sig_len);
  json_t *ev = log && a64 && s64 ? json_pack("{s:s,s:s,s:s}", "attest", a64, "signature", s64,
                                             "log", log)
                                 : NULL;
  if (ev) {
    char err[256], digest[65], detail[512], model[64];
    json_t *tpm_log = NULL;
    /* no certificate: the key itself (a device certified before enrolment) */
    if (pva_tpm_evidence(att, NULL, ev, FUZZ_NONCE, &tpm_log, digest, model, err, sizeof(err)) ==
        MCIM_OK) {
      json_t *mismatches = pva_match(FUZZ_MODEL, tpm_log, digest, rims);
      if (mismatches && json_array_size(mismatches))
        pva_mismatch_summary(mismatches, FUZZ_MODEL, detail, sizeof(detail));
      json_decref(mismatches);
    }
    json_decref(tpm_log);
  }
  json_decref(ev);
  free(log);
  free(a64);
  free(s64);
  return 0;
}
