/* Milenage against every published test set: TS 35.208 section 4.3 (sets
 * 1-20) and TS 35.207 (sets 1-6; set 2 is its own), each output checked on
 * its own, through both ways into OpenSSL's AES. The data lives in
 * src/crypto/milenage_vectors.c (copied from the specifications). The AES
 * kernel is checked against FIPS-197 Appendix C.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "crypto/aes_ecb.h"
#include "mcim/milenage.h"
#include "mcim/util.h"

static const mcim_milenage_aes_t backends[] = {MCIM_MILENAGE_AES_AUTO, MCIM_MILENAGE_AES_EVP,
                                               MCIM_MILENAGE_AES_PROVIDER};

struct vec {
  uint8_t k[16], rand[16], sqn[6], amf[2], op[16], opc[16];
  uint8_t f1[8], f1s[8], f2[8], f3[16], f4[16], f5[6], f5s[6];
};

static void decode(const struct mcim_milenage_vector *v, struct vec *d)
{
  assert_int_equal(mcim_hex_decode_str(v->k, d->k, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->rand, d->rand, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->sqn, d->sqn, 6), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->amf, d->amf, 2), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->op, d->op, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->opc, d->opc, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f1, d->f1, 8), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f1star, d->f1s, 8), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f2, d->f2, 8), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f3, d->f3, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f4, d->f4, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f5, d->f5, 6), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(v->f5star, d->f5s, 6), MCIM_OK);
}

static void test_vector_table(void **state)
{
  (void)state;
  /* 20 sets of TS 35.208 + TS 35.207 set 2. */
  assert_int_equal(mcim_milenage_vector_count, 21);
  assert_non_null(strstr(mcim_milenage_vectors[19].name, "35.208 test set 20"));
  assert_non_null(strstr(mcim_milenage_vectors[20].name, "35.207 test set 2"));
  /* TS 35.208 sets 1 and 2 are published identical. */
  assert_string_equal(mcim_milenage_vectors[0].f3, mcim_milenage_vectors[1].f3);
}

/* Every set, every function, one at a time, for each AES access. */
static void test_published_sets(void **state)
{
  (void)state;
  for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
    for (size_t i = 0; i < mcim_milenage_vector_count; i++) {
      const struct mcim_milenage_vector *v = &mcim_milenage_vectors[i];
      struct vec d;
      uint8_t opc[16], mac_a[8], mac_s[8], res[8], ck[16], ik[16], ak[6], aks[6];
      mcim_milenage_t *m = NULL;

      print_message("%s / %s\n", v->name, mcim_milenage_aes_name(backends[b]));
      decode(v, &d);
      /* OPc: the intermediate value of TS 35.207, one-shot and via a context. */
      assert_int_equal(mcim_milenage_opc(d.k, d.op, opc), MCIM_OK);
      assert_memory_equal(opc, d.opc, 16);
      assert_int_equal(mcim_milenage_new_with(backends[b], &m), MCIM_OK);
      assert_int_equal(mcim_milenage_set_op(m, d.k, d.op), MCIM_OK);
      assert_int_equal(mcim_milenage_get_opc(m, opc), MCIM_OK);
      assert_memory_equal(opc, d.opc, 16);

      /* From OP ... */
      assert_int_equal(mcim_milenage_f1(m, d.rand, d.sqn, d.amf, mac_a, mac_s), MCIM_OK);
      assert_memory_equal(mac_a, d.f1, 8);
      assert_memory_equal(mac_s, d.f1s, 8);
      /* ... and from OPc. */
      assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_OK);
      memset(mac_a, 0, 8);
      assert_int_equal(mcim_milenage_f1(m, d.rand, d.sqn, d.amf, mac_a, NULL), MCIM_OK);
      assert_memory_equal(mac_a, d.f1, 8);
      assert_int_equal(mcim_milenage_f2345(m, d.rand, res, ck, ik, ak), MCIM_OK);
      assert_memory_equal(res, d.f2, 8);
      assert_memory_equal(ck, d.f3, 16);
      assert_memory_equal(ik, d.f4, 16);
      assert_memory_equal(ak, d.f5, 6);
      assert_int_equal(mcim_milenage_f5star(m, d.rand, aks), MCIM_OK);
      assert_memory_equal(aks, d.f5s, 6);

      /* The library's own checker agrees (it is what `mcim crypto selftest` runs). */
      const char *bad = "x";
      assert_int_equal(mcim_milenage_vector_check(v, backends[b], &bad), MCIM_OK);
      assert_null(bad);
      mcim_milenage_free(m);
    }
  }
}

/* The checker the self-test relies on does catch a wrong value, and names it. */
static void test_vector_check_detects(void **state)
{
  (void)state;
  struct mcim_milenage_vector v = mcim_milenage_vectors[4];
  const char *bad = NULL;
  v.f3 = mcim_milenage_vectors[5].f3;
  assert_int_equal(mcim_milenage_vector_check(&v, MCIM_MILENAGE_AES_AUTO, &bad), MCIM_INTERNAL);
  assert_string_equal(bad, "f3");
  v = mcim_milenage_vectors[4];
  v.opc = mcim_milenage_vectors[5].opc;
  assert_int_equal(mcim_milenage_vector_check(&v, MCIM_MILENAGE_AES_EVP, &bad), MCIM_INTERNAL);
  assert_string_equal(bad, "opc");
  v = mcim_milenage_vectors[4];
  v.k = "00";
  assert_int_equal(mcim_milenage_vector_check(&v, MCIM_MILENAGE_AES_AUTO, &bad), MCIM_INTERNAL);
  assert_string_equal(bad, "input");
}

/* One context, switching subscriber back and forth: re-keying must not leak state. */
static void test_rekey_switching(void **state)
{
  (void)state;
  for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
    mcim_milenage_t *m = NULL;
    assert_int_equal(mcim_milenage_new_with(backends[b], &m), MCIM_OK);
    for (int round = 0; round < 3; round++)
      for (size_t i = 0; i < mcim_milenage_vector_count; i += 3) {
        struct vec d;
        struct mcim_milenage_out o;
        decode(&mcim_milenage_vectors[i], &d);
        assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_OK);
        assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                         MCIM_OK);
        assert_memory_equal(o.mac_a, d.f1, 8);
        assert_memory_equal(o.ck, d.f3, 16);
        assert_memory_equal(o.ak_star, d.f5s, 6);
      }
    mcim_milenage_free(m);
  }
}

/* Only the selected outputs are written. */
static void test_compute_subsets(void **state)
{
  (void)state;
  struct vec d;
  struct mcim_milenage_out o, untouched;
  mcim_milenage_t *m = NULL;

  decode(&mcim_milenage_vectors[3], &d);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_OK);
  memset(&untouched, 0xee, sizeof(untouched));

  o = untouched;
  assert_int_equal(mcim_milenage_compute(m, d.rand, NULL, NULL, MCIM_MILENAGE_F3, &o), MCIM_OK);
  assert_memory_equal(o.ck, d.f3, 16);
  assert_memory_equal(o.ik, untouched.ik, 16);
  assert_memory_equal(o.mac_a, untouched.mac_a, 8);
  assert_memory_equal(o.res, untouched.res, 8);

  o = untouched;
  assert_int_equal(mcim_milenage_compute(m, d.rand, NULL, NULL,
                                         MCIM_MILENAGE_F2F5 | MCIM_MILENAGE_F5STAR, &o),
                   MCIM_OK);
  assert_memory_equal(o.res, d.f2, 8);
  assert_memory_equal(o.ak, d.f5, 6);
  assert_memory_equal(o.ak_star, d.f5s, 6);
  assert_memory_equal(o.ck, untouched.ck, 16);
  mcim_milenage_free(m);
}

static void test_invalid_use(void **state)
{
  (void)state;
  struct vec d;
  struct mcim_milenage_out o;
  uint8_t opc[16];
  mcim_milenage_t *m = NULL;

  decode(&mcim_milenage_vectors[0], &d);
  assert_int_equal(mcim_milenage_new(NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_new_with((mcim_milenage_aes_t)7, &m), MCIM_INVALID_ARGUMENT);
  assert_null(m);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  /* Not keyed yet. */
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_get_opc(m, opc), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_OK);
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, 0, &o), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, 0x20, &o),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_compute(m, d.rand, NULL, d.amf, MCIM_MILENAGE_F1, &o),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_f2345(m, d.rand, NULL, NULL, NULL, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_f5star(m, d.rand, NULL), MCIM_INVALID_ARGUMENT);
  /* Cleared: the key is gone until keyed again. */
  mcim_milenage_clear(m);
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_OK);
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o), MCIM_OK);
  assert_memory_equal(o.res, d.f2, 8);
  mcim_milenage_free(m);
  mcim_milenage_free(NULL);
  mcim_milenage_clear(NULL);
}

/* FIPS-197 Appendix C.1 (AES-128): the kernel both accesses use. */
static void test_aes_kernel_fips197(void **state)
{
  (void)state;
  uint8_t key[16], pt[16], ct[16], out[32], in[32];
  assert_int_equal(mcim_hex_decode_str("000102030405060708090a0b0c0d0e0f", key, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str("00112233445566778899aabbccddeeff", pt, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str("69c4e0d86a7b0430d8cdb78070b4c55a", ct, 16), MCIM_OK);
  for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
    mcim_aes_ecb_t *a = NULL;
    assert_int_equal(mcim_aes_ecb_new(backends[b], &a), MCIM_OK);
    assert_int_equal(mcim_aes_ecb_encrypt(a, pt, out, 16), MCIM_INVALID_ARGUMENT); /* no key */
    assert_int_equal(mcim_aes_ecb_set_key(a, key), MCIM_OK);
    memcpy(in, pt, 16);
    memcpy(in + 16, pt, 16);
    assert_int_equal(mcim_aes_ecb_encrypt(a, in, out, 32), MCIM_OK); /* ECB: two equal blocks */
    assert_memory_equal(out, ct, 16);
    assert_memory_equal(out + 16, ct, 16);
    assert_int_equal(mcim_aes_ecb_encrypt(a, in, out, 15), MCIM_INVALID_ARGUMENT);
    assert_int_not_equal(mcim_aes_ecb_backend(a), MCIM_MILENAGE_AES_AUTO);
    if (backends[b] != MCIM_MILENAGE_AES_AUTO)
      assert_int_equal(mcim_aes_ecb_backend(a), backends[b]);
    mcim_aes_ecb_free(a);
  }
  assert_string_equal(mcim_milenage_aes_name(MCIM_MILENAGE_AES_EVP), "evp");
  assert_string_equal(mcim_milenage_aes_name(MCIM_MILENAGE_AES_PROVIDER), "provider");
}

/* E_K injected (struct mcim_milenage_cipher_ops): the context never holds K. Here the
 * injected cipher is OpenSSL's AES behind a counter; the TPM TRE injects a TPM key the same
 * way (tests/unit/test_tre_tpm.c runs the published sets there). */
struct counting_cipher {
  mcim_aes_ecb_t *aes;
  int calls;
  size_t max_len;
  mcim_cause_t fail; /* answer this instead when not MCIM_OK */
};

static mcim_cause_t counting_encrypt(void *ctx, const uint8_t *in, uint8_t *out, size_t len)
{
  struct counting_cipher *c = ctx;
  c->calls++;
  if (len > c->max_len)
    c->max_len = len;
  if (c->fail != MCIM_OK)
    return c->fail;
  return mcim_aes_ecb_encrypt(c->aes, in, out, len);
}

static const struct mcim_milenage_cipher_ops counting_ops = {.encrypt = counting_encrypt};

static void test_injected_cipher(void **state)
{
  (void)state;
  struct counting_cipher c = {0};
  mcim_milenage_cipher_t cipher = {&counting_ops, &c};
  mcim_milenage_t *m = NULL, *soft = NULL;
  struct mcim_milenage_out o, untouched;
  struct vec d;
  const mcim_milenage_cipher_t no_fn = {NULL, &c};

  assert_int_equal(mcim_milenage_new_cipher(no_fn, &m), MCIM_INVALID_ARGUMENT);
  assert_null(m);
  assert_int_equal(mcim_milenage_new_cipher(cipher, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aes_ecb_new(MCIM_MILENAGE_AES_AUTO, &c.aes), MCIM_OK);
  assert_int_equal(mcim_milenage_new_cipher(cipher, &m), MCIM_OK);
  assert_int_equal(mcim_milenage_aes(m), MCIM_MILENAGE_AES_EXTERNAL);
  assert_string_equal(mcim_milenage_aes_name(mcim_milenage_aes(m)), "external");

  for (size_t i = 0; i < mcim_milenage_vector_count; i++) {
    decode(&mcim_milenage_vectors[i], &d);
    /* K is the cipher's: the context cannot be given one. */
    assert_int_equal(mcim_milenage_set_opc(m, d.k, d.opc), MCIM_UNSUPPORTED);
    assert_int_equal(mcim_milenage_set_op(m, d.k, d.op), MCIM_UNSUPPORTED);
    assert_int_equal(mcim_aes_ecb_set_key(c.aes, d.k), MCIM_OK); /* "inside the TPM" */
    assert_int_equal(mcim_milenage_use_opc(m, d.opc), MCIM_OK);
    c.calls = 0;
    assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                     MCIM_OK);
    assert_int_equal(c.calls, 2); /* TEMP, then OUT1..OUT5 in one call */
    assert_memory_equal(o.mac_a, d.f1, 8);
    assert_memory_equal(o.mac_s, d.f1s, 8);
    assert_memory_equal(o.res, d.f2, 8);
    assert_memory_equal(o.ck, d.f3, 16);
    assert_memory_equal(o.ik, d.f4, 16);
    assert_memory_equal(o.ak, d.f5, 6);
    assert_memory_equal(o.ak_star, d.f5s, 6);
  }
  assert_int_equal(c.max_len, MCIM_MILENAGE_CIPHER_MAX);

  /* A failing cipher: its cause comes back and no output is written. */
  memset(&untouched, 0xee, sizeof(untouched));
  o = untouched;
  c.fail = MCIM_IO_ERROR;
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                   MCIM_IO_ERROR);
  assert_memory_equal(&o, &untouched, sizeof(o));
  c.fail = MCIM_OK;

  /* Cleared: no OPc until use_opc again; the cipher stays. */
  mcim_milenage_clear(m);
  assert_int_equal(mcim_milenage_compute(m, d.rand, d.sqn, d.amf, MCIM_MILENAGE_ALL, &o),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_milenage_use_opc(m, d.opc), MCIM_OK);
  assert_int_equal(mcim_milenage_compute(m, d.rand, NULL, NULL, MCIM_MILENAGE_F3, &o), MCIM_OK);
  assert_memory_equal(o.ck, d.f3, 16);
  mcim_milenage_free(m); /* the cipher is the caller's */

  /* A software context takes K with set_opc, not use_opc. */
  assert_int_equal(mcim_milenage_new(&soft), MCIM_OK);
  assert_int_equal(mcim_milenage_use_opc(soft, d.opc), MCIM_UNSUPPORTED);
  mcim_milenage_free(soft);
  mcim_aes_ecb_free(c.aes);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vector_table),   cmocka_unit_test(test_published_sets),
      cmocka_unit_test(test_vector_check_detects),
      cmocka_unit_test(test_rekey_switching), cmocka_unit_test(test_compute_subsets),
      cmocka_unit_test(test_invalid_use),    cmocka_unit_test(test_aes_kernel_fips197),
      cmocka_unit_test(test_injected_cipher),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
