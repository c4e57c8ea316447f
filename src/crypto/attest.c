/* TPM attestation evidence: the ima-ng log form and the verifier of a TPM2_Quote
 * (include/mcim/attest.h). Everything here reads peer input at the PVA: every length is
 * checked against what is left before it is used, nothing asserts. */
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/attest.h"
#include "mcim/util.h"

#define TPM_GENERATED_VALUE UINT32_C(0xff544347)
#define TPM_ST_ATTEST_QUOTE 0x8018
#define TPM_ALG_SHA256 0x000b
#define TPM_ALG_ECDSA 0x0018
#define NAME_MAX_BYTES 68 /* sizeof(TPMU_NAME): a TPMT_HA of SHA-512 */
#define DATA_MAX_BYTES 64 /* sizeof(TPMU_HA) */
#define PCR_SELECT_MAX 4  /* TPM2_PCR_SELECT_MAX of tpm2-tss */
#define PCR_BANKS_MAX 16  /* TPM2_NUM_PCR_BANKS */
#define ECC_PARAM_MAX 32  /* P-256 */
#define DIGEST_HEX 64

static bool sha256(const void *in, size_t len, uint8_t out[32])
{
  unsigned n = 0;
  return EVP_Digest(in, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

static bool name_ok(const char *name)
{
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > MCIM_ATTEST_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

static void le32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

mcim_cause_t mcim_attest_template_hash(const uint8_t digest[32], const char *name,
                                       uint8_t out[32])
{
  /* d-ng: "sha256:\0" || digest; n-ng: name || '\0'; each field after its LE32 length */
  static const char alg[] = "sha256:"; /* with its NUL: 8 bytes */
  uint8_t buf[4 + 8 + 32 + 4 + MCIM_ATTEST_NAME_MAX + 1];
  size_t n, off = 0;

  if (!digest || !out || !name_ok(name))
    return MCIM_INVALID_ARGUMENT;
  n = strlen(name) + 1;
  le32(buf + off, 8 + 32);
  off += 4;
  memcpy(buf + off, alg, 8);
  off += 8;
  memcpy(buf + off, digest, 32);
  off += 32;
  le32(buf + off, (uint32_t)n);
  off += 4;
  memcpy(buf + off, name, n);
  off += n;
  return sha256(buf, off, out) ? MCIM_OK : MCIM_CRYPTO_ERROR;
}

mcim_cause_t mcim_attest_log_line(const uint8_t digest[32], const char *name, char *out,
                                  size_t len)
{
  uint8_t th[32];
  char thx[DIGEST_HEX + 1], dx[DIGEST_HEX + 1];
  mcim_cause_t rc = mcim_attest_template_hash(digest, name, th);
  if (rc != MCIM_OK)
    return rc;
  mcim_hex_encode(th, 32, thx);
  mcim_hex_encode(digest, 32, dx);
  int n = snprintf(out, len, "%d %s ima-ng sha256:%s %s\n", MCIM_ATTEST_PCR, thx, dx, name);
  return n > 0 && (size_t)n < len ? MCIM_OK : MCIM_TOO_LARGE;
}

/* ---- TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12), big-endian, read with a cursor ---- */

struct rd {
  const uint8_t *p;
  size_t left;
  bool bad; /* sticky: once short, every later read fails too */
};

static bool take(struct rd *r, size_t n, const uint8_t **out)
{
  if (r->bad || n > r->left) {
    r->bad = true;
    return false;
  }
  *out = r->p;
  r->p += n;
  r->left -= n;
  return true;
}

static uint64_t be(struct rd *r, size_t n)
{
  const uint8_t *p;
  uint64_t v = 0;
  if (!take(r, n, &p))
    return 0;
  for (size_t i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* A TPM2B of at most `max` bytes: its buffer in *buf, its size in *len. */
static bool tpm2b(struct rd *r, size_t max, const uint8_t **buf, size_t *len)
{
  size_t n = (size_t)be(r, 2);
  if (r->bad || n > max) {
    r->bad = true;
    return false;
  }
  *len = n;
  return take(r, n, buf);
}

mcim_cause_t mcim_attest_parse(const uint8_t *buf, size_t len, struct mcim_attest_quote *out,
                               char *err, size_t errlen)
{
  struct rd r = {.p = buf, .left = buf ? len : 0};
  const uint8_t *b;
  size_t n;

  if (!out)
    return MCIM_INVALID_ARGUMENT;
  memset(out, 0, sizeof(*out));
  if (!buf || len > MCIM_ATTEST_MAX_ATTEST) {
    mcim_detailf(err, errlen, "TPMS_ATTEST: %zu bytes (at most %d)", len, MCIM_ATTEST_MAX_ATTEST);
    return MCIM_ATTEST_MALFORMED;
  }
  uint32_t magic = (uint32_t)be(&r, 4);
  uint16_t type = (uint16_t)be(&r, 2);
  if (r.bad)
    goto truncated;
  /* magic: only a TPM writes TPM_GENERATED_VALUE into what it signs */
  if (magic != TPM_GENERATED_VALUE) {
    mcim_detailf(err, errlen, "TPMS_ATTEST: magic 0x%08x is not TPM_GENERATED_VALUE", magic);
    return MCIM_ATTEST_MALFORMED;
  }
  if (type != TPM_ST_ATTEST_QUOTE) {
    mcim_detailf(err, errlen, "TPMS_ATTEST: type 0x%04x is not TPM_ST_ATTEST_QUOTE", type);
    return MCIM_ATTEST_MALFORMED;
  }
  if (!tpm2b(&r, NAME_MAX_BYTES, &b, &n)) /* qualifiedSigner */
    goto truncated;
  if (!tpm2b(&r, DATA_MAX_BYTES, &b, &n)) /* extraData */
    goto truncated;
  memcpy(out->extra, b, n);
  out->extra_len = n;
  out->clock = be(&r, 8); /* clockInfo */
  out->reset_count = (uint32_t)be(&r, 4);
  out->restart_count = (uint32_t)be(&r, 4);
  uint8_t safe = (uint8_t)be(&r, 1);
  out->firmware = be(&r, 8);
  uint32_t count = (uint32_t)be(&r, 4); /* TPMS_QUOTE_INFO: pcrSelect */
  if (r.bad)
    goto truncated;
  if (safe > 1 || count > PCR_BANKS_MAX) {
    mcim_detailf(err, errlen, "TPMS_ATTEST: %s out of range",
                 safe > 1 ? "clockInfo.safe" : "pcrSelect.count");
    return MCIM_ATTEST_MALFORMED;
  }
  for (uint32_t i = 0; i < count; i++) {
    uint16_t alg = (uint16_t)be(&r, 2);
    size_t size = (size_t)be(&r, 1);
    if (r.bad || size > PCR_SELECT_MAX || !take(&r, size, &b))
      goto truncated;
    uint32_t mask = 0;
    for (size_t j = 0; j < size; j++)
      mask |= (uint32_t)b[j] << (8 * j);
    if (alg == TPM_ALG_SHA256)
      out->pcr_sha256 |= mask;
    else if (mask)
      out->other_banks++;
  }
  if (!tpm2b(&r, sizeof(out->pcr_digest), &b, &n)) /* pcrDigest */
    goto truncated;
  memcpy(out->pcr_digest, b, n);
  out->pcr_digest_len = n;
  if (r.left) {
    mcim_detailf(err, errlen, "TPMS_ATTEST: %zu bytes after the quote", r.left);
    return MCIM_ATTEST_MALFORMED;
  }
  return MCIM_OK;
truncated:
  mcim_detailf(err, errlen, "TPMS_ATTEST: truncated, or a length out of range (%zu bytes)", len);
  return MCIM_ATTEST_MALFORMED;
}

/* TPMT_SIGNATURE {sigAlg ECDSA, hash SHA256, TPM2B r, TPM2B s} as a DER ECDSA-Sig-Value. */
static mcim_cause_t signature_der(const uint8_t *buf, size_t len, uint8_t **der, size_t *der_len,
                                  char *err, size_t errlen)
{
  struct rd r = {.p = buf, .left = len};
  const uint8_t *rb = NULL, *sb = NULL;
  size_t rn = 0, sn = 0;
  ECDSA_SIG *sig = NULL;
  BIGNUM *br = NULL, *bs = NULL;
  mcim_cause_t rc = MCIM_ATTEST_MALFORMED;

  *der = NULL;
  uint16_t alg = (uint16_t)be(&r, 2), hash = (uint16_t)be(&r, 2);
  if (r.bad || alg != TPM_ALG_ECDSA || hash != TPM_ALG_SHA256) {
    mcim_detailf(err, errlen, "TPMT_SIGNATURE: not ECDSA with SHA-256");
    goto cleanup;
  }
  if (!tpm2b(&r, ECC_PARAM_MAX, &rb, &rn) || !tpm2b(&r, ECC_PARAM_MAX, &sb, &sn) || r.left ||
      rn == 0 || sn == 0) {
    mcim_detailf(err, errlen, "TPMT_SIGNATURE: truncated, garbled or with trailing bytes");
    goto cleanup;
  }
  rc = MCIM_CRYPTO_ERROR;
  sig = ECDSA_SIG_new();
  br = BN_bin2bn(rb, (int)rn, NULL);
  bs = BN_bin2bn(sb, (int)sn, NULL);
  if (!sig || !br || !bs || ECDSA_SIG_set0(sig, br, bs) != 1)
    goto cleanup;
  br = bs = NULL; /* the signature's now */
  int n = i2d_ECDSA_SIG(sig, der);
  if (n <= 0)
    goto cleanup;
  *der_len = (size_t)n;
  rc = MCIM_OK;
cleanup:
  BN_free(br);
  BN_free(bs);
  ECDSA_SIG_free(sig);
  return rc;
}

static bool ecdsa_verify(EVP_PKEY *ak, const uint8_t *msg, size_t len, const uint8_t *der,
                         size_t der_len)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, ak) == 1 &&
            EVP_DigestVerify(ctx, der, der_len, msg, len) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

/* ---- the log ---- */

static bool hex32(const char *s, size_t n, uint8_t out[32])
{
  char tmp[DIGEST_HEX + 1];
  if (n != DIGEST_HEX)
    return false;
  for (size_t i = 0; i < n; i++) /* lower-case only: one spelling per digest */
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  return mcim_hex_decode_str(tmp, out, 32) == MCIM_OK;
}

/* One line (without its '\n'): "10 TH ima-ng sha256:D NAME"; its template hash recomputed. */
static mcim_cause_t log_entry(const char *line, size_t n, size_t idx, uint8_t th[32],
                              json_t *list, char *err, size_t errlen)
{
  static const char pcr[] = MCIM_ATTEST_PCR_TEXT " ";
  static const char mid[] = " ima-ng sha256:";
  uint8_t want[32], digest[32];
  char name[MCIM_ATTEST_NAME_MAX + 1], dx[DIGEST_HEX + 1];
  size_t off = sizeof(pcr) - 1;

  if (n < off + DIGEST_HEX + sizeof(mid) - 1 + DIGEST_HEX + 2 || memcmp(line, pcr, off) != 0 ||
      !hex32(line + off, DIGEST_HEX, th) ||
      memcmp(line + off + DIGEST_HEX, mid, sizeof(mid) - 1) != 0)
    goto form;
  off += DIGEST_HEX + sizeof(mid) - 1;
  if (!hex32(line + off, DIGEST_HEX, digest) || line[off + DIGEST_HEX] != ' ')
    goto form;
  off += DIGEST_HEX + 1;
  if (n - off > MCIM_ATTEST_NAME_MAX)
    goto form;
  memcpy(name, line + off, n - off);
  name[n - off] = '\0';
  if (!name_ok(name))
    goto form;
  if (mcim_attest_template_hash(digest, name, want) != MCIM_OK)
    return MCIM_CRYPTO_ERROR;
  if (memcmp(want, th, 32) != 0) {
    mcim_detailf(err, errlen,
                 "measurement log line %zu (%s): its template hash is not that of its digest "
                 "and name", idx + 1, name);
    return MCIM_ATTEST_LOG_MISMATCH;
  }
  mcim_hex_encode(digest, 32, dx);
  if (json_array_append_new(list, json_pack("{s:s,s:s}", "component", name, "digest", dx)) != 0)
    return MCIM_NO_MEMORY;
  return MCIM_OK;
form:
  mcim_detailf(err, errlen,
               "measurement log line %zu is not \"" MCIM_ATTEST_PCR_TEXT
               " <template hash> ima-ng sha256:<digest> "
               "<name>\" (lower-case hex, name of [a-z0-9._-])",
               idx + 1);
  return MCIM_ATTEST_LOG_MISMATCH;
}

/* Replay the log into the PCR from its reset value: *pcr_value the PCR it extends to. */
static mcim_cause_t log_replay(const char *log, json_t *list, uint8_t pcr_value[32], char *err,
                               size_t errlen)
{
  uint8_t pcr[64] = {0}; /* PCR || template hash */
  size_t len = strlen(log), idx = 0;
  const char *p = log, *end = log + len;

  if (len == 0 || len > MCIM_ATTEST_MAX_LOG || log[len - 1] != '\n') {
    mcim_detailf(err, errlen, "the measurement log is empty, over %d bytes or not ended by a "
                 "newline", MCIM_ATTEST_MAX_LOG);
    return MCIM_ATTEST_LOG_MISMATCH;
  }
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (idx == MCIM_ATTEST_MAX_ENTRIES) {
      mcim_detailf(err, errlen, "the measurement log has over %d lines", MCIM_ATTEST_MAX_ENTRIES);
      return MCIM_ATTEST_LOG_MISMATCH;
    }
    mcim_cause_t rc = log_entry(p, (size_t)(nl - p), idx, pcr + 32, list, err, errlen);
    if (rc != MCIM_OK)
      return rc;
    if (!sha256(pcr, 64, pcr)) /* TPM2_PCR_Extend: PCR = H(PCR || template hash) */
      return MCIM_CRYPTO_ERROR;
    p = nl + 1;
    idx++;
  }
  memcpy(pcr_value, pcr, 32);
  return MCIM_OK;
}

mcim_cause_t mcim_attest_log_replay(const char *log, uint8_t pcr[32], size_t *lines, char *err,
                                    size_t errlen)
{
  json_t *list = json_array();
  mcim_cause_t rc = MCIM_NO_MEMORY;
  if (!log || !pcr) {
    rc = MCIM_INVALID_ARGUMENT;
    goto cleanup;
  }
  if (list)
    rc = log_replay(log, list, pcr, err, errlen);
  if (rc == MCIM_OK && lines)
    *lines = json_array_size(list);
cleanup:
  json_decref(list);
  return rc;
}

static mcim_cause_t b64_member(const json_t *ev, const char *key, uint8_t *buf, size_t cap,
                               size_t *len, char *err, size_t errlen)
{
  const char *s = json_string_value(json_object_get(ev, key));
  if (!s || mcim_b64url_decode(s, strlen(s), buf, cap, len) != MCIM_OK) {
    mcim_detailf(err, errlen, "\"%s\" is not base64url of at most %zu bytes", key, cap);
    return MCIM_ATTEST_MALFORMED;
  }
  return MCIM_OK;
}

mcim_cause_t mcim_attest_verify(EVP_PKEY *ak, const json_t *evidence, const uint8_t *nonce,
                                size_t nonce_len, json_t **measurements, char *err,
                                size_t errlen)
{
  uint8_t attest[MCIM_ATTEST_MAX_ATTEST], sig[256], replayed[32];
  uint8_t *der = NULL;
  size_t attest_len = 0, sig_len = 0, der_len = 0;
  struct mcim_attest_quote q;
  json_t *list = NULL;
  const char *log = json_string_value(json_object_get(evidence, "log"));
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!ak || !nonce || !measurements)
    goto cleanup;
  *measurements = NULL;
  rc = MCIM_ATTEST_MALFORMED;
  if (!json_is_object(evidence) || json_object_size(evidence) != 3 || !log) {
    mcim_detailf(err, errlen, "the TPM evidence must be {\"attest\", \"signature\", \"log\"}");
    goto cleanup;
  }
  if ((rc = b64_member(evidence, "attest", attest, sizeof(attest), &attest_len, err, errlen)) ||
      (rc = b64_member(evidence, "signature", sig, sizeof(sig), &sig_len, err, errlen)))
    goto cleanup;
  /* Form first (bounds-checked, nothing trusted), then the signature over the exact bytes. */
  if ((rc = mcim_attest_parse(attest, attest_len, &q, err, errlen)) != MCIM_OK ||
      (rc = signature_der(sig, sig_len, &der, &der_len, err, errlen)) != MCIM_OK)
    goto cleanup;
  if (!ecdsa_verify(ak, attest, attest_len, der, der_len)) {
    rc = MCIM_ATTEST_SIGNATURE;
    mcim_detailf(err, errlen, "the quote's signature does not verify with the device's "
                 "certified attestation key (a quote of another TPM, or altered)");
    goto cleanup;
  }
  if (q.extra_len != nonce_len || !mcim_ct_equal(q.extra, nonce, nonce_len)) {
    rc = MCIM_ATTEST_NONCE;
    mcim_detailf(err, errlen, "the quote's qualifying data is not this validation's nonce (a "
                 "replayed or stale quote)");
    goto cleanup;
  }
  if (q.pcr_sha256 != (UINT32_C(1) << MCIM_ATTEST_PCR) || q.other_banks ||
      q.pcr_digest_len != 32) {
    rc = MCIM_ATTEST_MALFORMED;
    mcim_detailf(err, errlen, "the quote must select PCR %d of the SHA-256 bank and nothing else",
                 MCIM_ATTEST_PCR);
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  list = json_array();
  if (!list)
    goto cleanup;
  rc = log_replay(log, list, replayed, err, errlen);
  if (rc == MCIM_OK && !sha256(replayed, 32, replayed)) /* a quote of one PCR signs H(PCR) */
    rc = MCIM_CRYPTO_ERROR;
  if (rc != MCIM_OK)
    goto cleanup;
  if (memcmp(replayed, q.pcr_digest, 32) != 0) {
    rc = MCIM_ATTEST_LOG_MISMATCH;
    mcim_detailf(err, errlen, "the measurement log (%zu lines) does not replay to the PCR %d "
                 "digest the TPM quoted", json_array_size(list), MCIM_ATTEST_PCR);
    goto cleanup;
  }
  *measurements = list;
  list = NULL;
  rc = MCIM_OK;
cleanup:
  OPENSSL_free(der);
  json_decref(list);
  return rc;
}
