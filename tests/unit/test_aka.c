/* AKA: vectors, the USIM check (MAC before SQN), AUTS and resynchronisation,
 * RES check. Known answers come from published data only: TS 35.208 test
 * sets (src/crypto/milenage_vectors.c) and RFC 5448 Appendix C test case 1,
 * whose AUTN was computed from TS 35.208 test set 19. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mcim/aka.h"
#include "mcim/util.h"

static const uint8_t amf_8000[2] = {0x80, 0x00};

/* One subscriber as both sides see it. */
struct sub {
  uint8_t k[16], opc[16];
  mcim_milenage_t *he_m, *usim_m;
  struct mcim_sqn_params p;
  struct mcim_sqn_he he;
  struct mcim_sqn_usim usim;
};

static void hex(const char *s, uint8_t *out, size_t len)
{
  assert_int_equal(mcim_hex_decode_str(s, out, len), MCIM_OK);
}

static int setup(void **state)
{
  static struct sub s;
  memset(&s, 0, sizeof(s));
  assert_int_equal(mcim_random(s.k, 16), MCIM_OK);
  assert_int_equal(mcim_random(s.opc, 16), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&s.he_m), MCIM_OK);
  assert_int_equal(mcim_milenage_new(&s.usim_m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(s.he_m, s.k, s.opc), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(s.usim_m, s.k, s.opc), MCIM_OK);
  mcim_sqn_params_default(&s.p);
  assert_int_equal(mcim_sqn_he_init(&s.p, &s.he), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&s.p, &s.usim), MCIM_OK);
  *state = &s;
  return 0;
}

static int teardown(void **state)
{
  struct sub *s = *state;
  mcim_milenage_free(s->he_m);
  mcim_milenage_free(s->usim_m);
  return 0;
}

/* HE side: next SQN (committed at once, as an AuC must before the vector leaves) and a vector. */
static void he_vector(struct sub *s, struct mcim_aka_av *av)
{
  struct mcim_sqn_he next;
  uint64_t sqn;
  uint8_t sqn_b[6];
  assert_int_equal(mcim_sqn_he_next(&s->p, &s->he, &next, &sqn), MCIM_OK);
  s->he = next;
  mcim_sqn_to_bytes(sqn, sqn_b);
  assert_int_equal(mcim_aka_gen_av(s->he_m, NULL, sqn_b, amf_8000, av), MCIM_OK);
}

/* Known answer: TS 35.208 test set 19 gives the AUTN published in RFC 5448 C.1. */
static void test_av_known_answer(void **state)
{
  (void)state;
  const struct mcim_milenage_vector *v = &mcim_milenage_vectors[18];
  uint8_t k[16], opc[16], rnd[16], sqn[6], amf[2], autn[16], xres[8], ck[16], ik[16];
  struct mcim_aka_av av;
  mcim_milenage_t *m = NULL;

  assert_non_null(strstr(v->name, "test set 19"));
  hex(v->k, k, 16);
  hex(v->opc, opc, 16);
  hex(v->rand, rnd, 16);
  hex(v->sqn, sqn, 6);
  hex(v->amf, amf, 2);
  hex("bb52e91c747ac3ab2a5c23d15ee351d5", autn, 16); /* RFC 5448 Appendix C, test case 1 */
  hex(v->f2, xres, 8);
  hex(v->f3, ck, 16);
  hex(v->f4, ik, 16);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, k, opc), MCIM_OK);
  assert_int_equal(mcim_aka_gen_av_rand(m, rnd, sqn, amf, &av), MCIM_OK);
  assert_memory_equal(av.rand, rnd, 16);
  assert_memory_equal(av.autn, autn, 16);
  assert_memory_equal(av.xres, xres, 8);
  assert_memory_equal(av.ck, ck, 16);
  assert_memory_equal(av.ik, ik, 16);
  mcim_milenage_free(m);
}

static void test_round_trip(void **state)
{
  struct sub *s = *state;
  for (int i = 0; i < 100; i++) {
    struct mcim_aka_av av;
    struct mcim_aka_usim_out out;
    struct mcim_sqn_usim next;
    he_vector(s, &av);
    assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                     MCIM_OK);
    assert_int_equal(out.verdict, MCIM_SQN_ACCEPTED);
    assert_int_equal(mcim_aka_check_res(av.xres, 8, out.res, 8), MCIM_OK);
    assert_memory_equal(out.ck, av.ck, 16);
    assert_memory_equal(out.ik, av.ik, 16);
    s->usim = next; /* the whole authentication succeeded: commit */
  }
  assert_int_equal(mcim_sqn_seq(&s->p, s->usim.sqn_ms), s->he.seq_he);
}

/* Different RANDs from the pool and from the CSPRNG. */
static void test_rand_sources(void **state)
{
  struct sub *s = *state;
  mcim_aka_rand_pool_t *pool = NULL;
  uint8_t r[3][16], sqn[6] = {0, 0, 0, 0, 0, 0x20};
  struct mcim_aka_av a, b;
  assert_int_equal(mcim_aka_rand_pool_new(1, &pool), MCIM_OK); /* refill on every take */
  for (int i = 0; i < 3; i++)
    assert_int_equal(mcim_aka_rand_pool_take(pool, r[i]), MCIM_OK);
  assert_memory_not_equal(r[0], r[1], 16);
  assert_memory_not_equal(r[1], r[2], 16);
  assert_int_equal(mcim_aka_gen_av(s->he_m, pool, sqn, amf_8000, &a), MCIM_OK);
  assert_int_equal(mcim_aka_gen_av(s->he_m, pool, sqn, amf_8000, &b), MCIM_OK);
  assert_memory_not_equal(a.rand, b.rand, 16);
  assert_memory_not_equal(a.xres, b.xres, 8);
  mcim_aka_rand_pool_free(pool);
  assert_int_equal(mcim_aka_rand_pool_new(100000, &pool), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aka_rand_pool_take(NULL, r[0]), MCIM_INVALID_ARGUMENT);
}

/* Wrong K or a tampered AUTN: MAC failure, nothing leaks, nothing changes. */
static void test_mac_failure(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next, before = s->usim;
  static const uint8_t zero[16];
  mcim_milenage_t *wrong = NULL;
  uint8_t k2[16];

  he_vector(s, &av);
  memcpy(k2, s->k, 16);
  k2[15] ^= 1;
  assert_int_equal(mcim_milenage_new(&wrong), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(wrong, k2, s->opc), MCIM_OK);
  memset(&next, 0x5a, sizeof(next));
  assert_int_equal(mcim_aka_usim_check(wrong, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_MAC_FAILURE);
  assert_memory_equal(out.res, zero, 8);
  assert_memory_equal(out.ck, zero, 16);
  assert_memory_equal(out.ik, zero, 16);
  assert_memory_equal(out.auts, zero, 14); /* no AUTS for a forged challenge */
  assert_int_equal(next.ind_bits, 0x5a);    /* next not written */
  assert_memory_equal(&s->usim, &before, sizeof(before));
  mcim_milenage_free(wrong);

  /* Any flipped bit in SQN^AK, AMF or MAC-A, or in RAND. */
  for (int byte = 0; byte < 16; byte++) {
    uint8_t autn[16];
    memcpy(autn, av.autn, 16);
    autn[byte] ^= 0x10;
    assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, autn, &next, &out),
                     MCIM_MAC_FAILURE);
  }
  uint8_t rnd[16];
  memcpy(rnd, av.rand, 16);
  rnd[0] ^= 1;
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, rnd, av.autn, &next, &out),
                   MCIM_MAC_FAILURE);
  /* The genuine one still works. */
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_OK);
}

/* A replayed vector is refused with a resynchronisation request. */
static void test_replay_rejected(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next;
  uint8_t sqn_ms[6];

  he_vector(s, &av);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_OK);
  s->usim = next;
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(out.verdict, MCIM_SQN_NOT_FRESH);
  /* The AUTS verifies at the HE and carries the USIM's highest SQN. */
  assert_int_equal(mcim_aka_resync(s->he_m, av.rand, out.auts, sqn_ms), MCIM_OK);
  assert_int_equal(mcim_sqn_from_bytes(sqn_ms), s->usim.sqn_ms);
}

/* HE state restored from an old backup: SYNC_FAILURE -> AUTS -> resync -> next AV accepted. */
static void test_resync_after_rollback(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next;
  struct mcim_sqn_he backup = s->he, he_next;
  uint8_t sqn_ms[6];

  for (int i = 0; i < 200; i++) { /* the USIM moves on ... */
    he_vector(s, &av);
    assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next,
                                         &out),
                     MCIM_OK);
    s->usim = next;
  }
  s->he = backup; /* ... and the AuC comes back from a backup */
  he_vector(s, &av);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(out.verdict, MCIM_SQN_NOT_FRESH);
  assert_int_equal(mcim_aka_resync(s->he_m, av.rand, out.auts, sqn_ms), MCIM_OK);
  assert_int_equal(mcim_sqn_he_resync(&s->p, &s->he, mcim_sqn_from_bytes(sqn_ms), &he_next),
                   MCIM_OK);
  assert_int_equal(he_next.seq_he, mcim_sqn_seq(&s->p, s->usim.sqn_ms));
  s->he = he_next;
  he_vector(s, &av);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_OK);
  s->usim = next;
}

/* SQN beyond delta (C.2.2) -> SYNC_FAILURE -> resync takes the HE back to SQN_MS. */
static void test_resync_out_of_window(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next;
  struct mcim_sqn_he he_next;
  uint8_t sqn_ms[6];

  s->he.seq_he = mcim_sqn_seq(&s->p, s->usim.sqn_ms) + s->p.delta + 5;
  he_vector(s, &av);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(out.verdict, MCIM_SQN_TOO_FAR);
  assert_int_equal(mcim_aka_resync(s->he_m, av.rand, out.auts, sqn_ms), MCIM_OK);
  assert_int_equal(mcim_sqn_he_resync(&s->p, &s->he, mcim_sqn_from_bytes(sqn_ms), &he_next),
                   MCIM_OK);
  s->he = he_next;
  he_vector(s, &av);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_OK);
  s->usim = next;
}

/* AUTS layout against published values, and MAC-S with the dummy AMF 0x0000. */
static void test_auts_structure(void **state)
{
  (void)state;
  const struct mcim_milenage_vector *v = &mcim_milenage_vectors[0];
  uint8_t k[16], opc[16], rnd[16], sqn[6], ak_star[6], f1s_b9b9[8], mac_s0[8], auts[14], back[6];
  static const uint8_t amf0[2] = {0, 0};
  mcim_milenage_t *m = NULL;

  hex(v->k, k, 16);
  hex(v->opc, opc, 16);
  hex(v->rand, rnd, 16);
  hex(v->sqn, sqn, 6);
  hex(v->f5star, ak_star, 6);
  hex(v->f1star, f1s_b9b9, 8);
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, k, opc), MCIM_OK);
  assert_int_equal(mcim_aka_gen_auts(m, rnd, sqn, auts), MCIM_OK);
  for (int i = 0; i < 6; i++) /* Conc(SQN_MS) = SQN_MS xor f5*(RAND), f5* published */
    assert_int_equal(auts[i], sqn[i] ^ ak_star[i]);
  assert_int_equal(mcim_milenage_f1(m, rnd, sqn, amf0, NULL, mac_s0), MCIM_OK);
  assert_memory_equal(auts + 6, mac_s0, 8);
  assert_memory_not_equal(auts + 6, f1s_b9b9, 8); /* not the AMF of the set */
  assert_int_equal(mcim_aka_resync(m, rnd, auts, back), MCIM_OK);
  assert_memory_equal(back, sqn, 6);
  mcim_milenage_free(m);
}

static void test_auts_invalid(void **state)
{
  struct sub *s = *state;
  uint8_t rnd[16], auts[14], sqn[6] = {0, 0, 0, 0, 0x10, 0x01}, out[6];
  static const uint8_t zero[6];
  mcim_milenage_t *wrong = NULL;
  uint8_t k2[16];

  assert_int_equal(mcim_random(rnd, 16), MCIM_OK);
  assert_int_equal(mcim_aka_gen_auts(s->usim_m, rnd, sqn, auts), MCIM_OK);
  for (int byte = 0; byte < 14; byte++) {
    uint8_t bad[14];
    memcpy(bad, auts, 14);
    bad[byte] ^= 0x80;
    assert_int_equal(mcim_aka_resync(s->he_m, rnd, bad, out), MCIM_AUTS_INVALID);
    assert_memory_equal(out, zero, 6);
  }
  memcpy(k2, s->k, 16);
  k2[0] ^= 1;
  assert_int_equal(mcim_milenage_new(&wrong), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(wrong, k2, s->opc), MCIM_OK);
  assert_int_equal(mcim_aka_resync(wrong, rnd, auts, out), MCIM_AUTS_INVALID);
  rnd[3] ^= 1; /* AUTS for another RAND */
  assert_int_equal(mcim_aka_resync(s->he_m, rnd, auts, out), MCIM_AUTS_INVALID);
  rnd[3] ^= 1;
  assert_int_equal(mcim_aka_resync(s->he_m, rnd, auts, out), MCIM_OK);
  assert_memory_equal(out, sqn, 6);
  mcim_milenage_free(wrong);
}

/* SQN in the reserve: refused without AUTS (resynchronising cannot help). */
static void test_exhausted(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next;
  static const uint8_t zero[14];
  uint8_t sqn[6];
  uint64_t limit = mcim_sqn_seq_limit(&s->p);

  mcim_sqn_to_bytes(mcim_sqn_make(&s->p, limit + 1, 0), sqn);
  assert_int_equal(mcim_aka_gen_av(s->he_m, NULL, sqn, amf_8000, &av), MCIM_OK);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, &s->p, &s->usim, av.rand, av.autn, &next, &out),
                   MCIM_SQN_EXHAUSTED);
  assert_int_equal(out.verdict, MCIM_SQN_IN_RESERVE);
  assert_memory_equal(out.auts, zero, 14);
}

static void test_check_res(void **state)
{
  (void)state;
  const uint8_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 5, 6, 7, 9};
  assert_int_equal(mcim_aka_check_res(a, 8, a, 8), MCIM_OK);
  assert_int_equal(mcim_aka_check_res(a, 8, b, 8), MCIM_RES_MISMATCH);
  assert_int_equal(mcim_aka_check_res(a, 8, a, 4), MCIM_RES_MISMATCH);
  assert_int_equal(mcim_aka_check_res(a, 0, a, 0), MCIM_RES_MISMATCH);
  assert_int_equal(mcim_aka_check_res(NULL, 8, a, 8), MCIM_RES_MISMATCH);
}

static void test_invalid_args(void **state)
{
  struct sub *s = *state;
  struct mcim_aka_av av;
  struct mcim_aka_usim_out out;
  struct mcim_sqn_usim next;
  uint8_t x[16] = {0};
  assert_int_equal(mcim_aka_gen_av(NULL, NULL, x, x, &av), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aka_gen_av(s->he_m, NULL, x, x, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aka_usim_check(s->usim_m, NULL, &s->usim, x, x, &next, &out),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aka_resync(s->he_m, x, NULL, x), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_aka_gen_auts(s->he_m, x, x, NULL), MCIM_INVALID_ARGUMENT);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_av_known_answer),
      cmocka_unit_test(test_auts_structure),
      cmocka_unit_test(test_check_res),
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rand_sources, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mac_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replay_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resync_after_rollback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resync_out_of_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auts_invalid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exhausted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
