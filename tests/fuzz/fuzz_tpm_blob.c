/* The TPM TRE's parsing of what it did not make in this run, without a TPM: the key blobs of
 * its state document (src/tre/tpm/tre_tpm.c blob_of and the slots' K: the marshalled
 * TPM2B_PUBLIC and TPM2B_PRIVATE as base64url, mcim_tpm_blob_decode in tpm_keys.c: the
 * base64url, tpm2-tss's unmarshalling, nothing left over), then what the host side reads of
 * a decoded blob (mcim_tpm_key_public for both key kinds: the template, the point on P-256;
 * mcim_tpm_public_name), and a package's duplication blob "k_tpm" {"public", "duplicate",
 * "seed"} (mcim_tpm_dup_decode: peer input, the SHO's wrapping of K for this TPM). A blob that
 * decoded must encode (mcim_tpm_blob_encode) and decode again to the same structures: the
 * target aborts otherwise. Loading into a TPM, importing and using keys are the TPM's work
 * (swtpm, tests/unit/test_tre_tpm*.c), not fuzzed here.
 *
 * Input: one mode byte (modulo 4), then
 *   0  two bytes (big-endian) n, n bytes of TPM2B_PUBLIC, then the TPM2B_PRIVATE's bytes:
 *      base64url-encoded here, then decoded as the document's blobs are;
 *   1  the document's two strings, public NUL private;
 *   2  the JSON of a package's "k_tpm";
 *   3  two bytes n, two bytes m, n bytes of public, m of duplicate, then the seed's bytes:
 *      base64url-encoded here into a "k_tpm".
 * Seeds: tests/fuzz/corpus/fuzz_tpm_blob/ (keys a swtpm made, a K wrapped by
 * mcim_tre_wrap_k for a swtpm's storage primary, as the SHO does). Without tpm2-tss
 * (MCIM_TPM=OFF) the target is built and does nothing. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/util.h"

#ifdef MCIM_HAVE_TPM
#include "tre/tpm/tpm.h"

static char *b64(const uint8_t *p, size_t n)
{
  char *s = malloc(mcim_b64url_len(n) + 1);
  if (!s)
    fuzz_die("out of memory");
  mcim_b64url_encode(p, n, s);
  return s;
}

static uint16_t be16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}

static void blob(const char *pub, const char *priv)
{
  struct mcim_tpm_blob b, again;
  char *p2 = NULL, *q2 = NULL;
  if (mcim_tpm_blob_decode(pub, priv, &b) != MCIM_OK)
    return;
  for (int kind = MCIM_TPM_KEY_SIGN; kind <= MCIM_TPM_KEY_ECDH; kind++) {
    EVP_PKEY *pk = NULL;
    (void)mcim_tpm_key_public(&b, (enum mcim_tpm_key_kind)kind, &pk);
    EVP_PKEY_free(pk);
  }
  TPM2B_NAME name;
  (void)mcim_tpm_public_name(&b.pub, &name);
  if (mcim_tpm_blob_encode(&b, &p2, &q2) != MCIM_OK ||
      mcim_tpm_blob_decode(p2, q2, &again) != MCIM_OK ||
      memcmp(&b, &again, sizeof(b)) != 0)
    fuzz_die("a blob that decoded does not encode and decode to itself");
  free(p2);
  free(q2);
}

static void dup(const json_t *j)
{
  struct mcim_tpm_dup d;
  if (mcim_tpm_dup_decode(j, &d) == MCIM_OK) {
    TPM2B_NAME name;
    (void)mcim_tpm_public_name(&d.pub, &name);
  }
}
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
#ifdef MCIM_HAVE_TPM
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    fuzz_die("tpm2-tss does not load");
#endif
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef MCIM_HAVE_TPM
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 4;
  data++;
  size--;
  if (mode == 0 && size >= 2) {
    size_t n = be16(data);
    if (n > size - 2)
      n = size - 2;
    char *pub = b64(data + 2, n), *priv = b64(data + 2 + n, size - 2 - n);
    blob(pub, priv);
    free(pub);
    free(priv);
  } else if (mode == 1) {
    size_t alen, blen;
    const uint8_t *b;
    fuzz_split(data, size, 0, &alen, &b, &blen);
    char *pub = fuzz_strndup(data, alen), *priv = b ? fuzz_strndup(b, blen) : NULL;
    blob(pub, priv);
    free(pub);
    free(priv);
  } else if (mode == 2) {
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    dup(j);
    json_decref(j);
  } else if (mode == 3 && size >= 4) {
    size_t n = be16(data), m = be16(data + 2);
    const uint8_t *p = data + 4;
    size_t left = size - 4;
    if (n > left)
      n = left;
    if (m > left - n)
      m = left - n;
    char *pub = b64(p, n), *dp = b64(p + n, m), *seed = b64(p + n + m, left - n - m);
    json_t *j = json_pack("{s:s,s:s,s:s}", "public", pub, "duplicate", dp, "seed", seed);
    dup(j);
    json_decref(j);
    free(pub);
    free(dp);
    free(seed);
  }
#else
  (void)data;
  (void)size;
#endif
  return 0;
}
