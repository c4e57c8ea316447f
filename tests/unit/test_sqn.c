/* SQN management per TS 33.102 Annex C: SEQ/IND, the USIM array, the delta
 * and age limits, wrap-around protection, resynchronisation, persistence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mcim/sqn.h"
#include "mcim/util.h"

static struct mcim_sqn_params small_params(void)
{
  struct mcim_sqn_params p;
  mcim_sqn_params_default(&p);
  p.delta = 16;
  p.reserve = 8;
  return p;
}

static void test_params(void **state)
{
  (void)state;
  struct mcim_sqn_params p;
  mcim_sqn_params_default(&p);
  assert_int_equal(p.ind_bits, 5);
  assert_int_equal(mcim_sqn_params_check(&p), MCIM_OK);
  assert_int_equal(mcim_sqn_seq_limit(&p), ((uint64_t)1 << 43) - 1 - ((uint64_t)1 << 28));
  p.ind_bits = MCIM_SQN_IND_BITS_MAX + 1;
  assert_int_equal(mcim_sqn_params_check(&p), MCIM_INVALID_ARGUMENT);
  mcim_sqn_params_default(&p);
  p.delta = 0;
  assert_int_equal(mcim_sqn_params_check(&p), MCIM_INVALID_ARGUMENT);
  mcim_sqn_params_default(&p);
  p.reserve = ((uint64_t)1 << 43) - 1;
  assert_int_equal(mcim_sqn_params_check(&p), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_sqn_params_check(NULL), MCIM_INVALID_ARGUMENT);
}

static void test_pack(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params();
  uint64_t sqn = mcim_sqn_make(&p, 0x123456789aULL, 17);
  assert_int_equal(sqn, (0x123456789aULL << 5) | 17);
  assert_int_equal(mcim_sqn_seq(&p, sqn), 0x123456789aULL);
  assert_int_equal(mcim_sqn_ind(&p, sqn), 17);
  uint8_t b[6];
  mcim_sqn_to_bytes(0xff9bb4d0b607ULL, b);
  assert_memory_equal(b, "\xff\x9b\xb4\xd0\xb6\x07", 6);
  assert_int_equal(mcim_sqn_from_bytes(b), 0xff9bb4d0b607ULL);
}

/* The HE increments SEQ for every vector and cycles IND; the input state is never touched. */
static void test_he_next_cycles_ind(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params();
  struct mcim_sqn_he he, next, before;
  uint64_t sqn;
  assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);
  for (unsigned i = 0; i < 70; i++) {
    before = he;
    assert_int_equal(mcim_sqn_he_next(&p, &he, &next, &sqn), MCIM_OK);
    assert_memory_equal(&he, &before, sizeof(he)); /* pure */
    assert_int_equal(mcim_sqn_seq(&p, sqn), i + 1);
    assert_int_equal(mcim_sqn_ind(&p, sqn), i % 32);
    he = next; /* commit */
  }
  /* A chosen IND leaves the cycle where it was. */
  assert_int_equal(mcim_sqn_he_next_at(&p, &he, 9, &next, &sqn), MCIM_OK);
  assert_int_equal(mcim_sqn_ind(&p, sqn), 9);
  assert_int_equal(mcim_sqn_seq(&p, sqn), 71);
  assert_int_equal(next.ind_next, he.ind_next);
  assert_int_equal(mcim_sqn_he_next_at(&p, &he, 32, &next, &sqn), MCIM_INVALID_ARGUMENT);
}

/* C.2.1: one SEQ_MS per IND: out-of-order across slots is fine, within a slot it is not. */
static void test_usim_ind_array(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params();
  struct mcim_sqn_usim u, next, junk;
  enum mcim_sqn_verdict v;
  assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);

  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 5, 3), &next, &v), MCIM_OK);
  assert_int_equal(v, MCIM_SQN_ACCEPTED);
  u = next;
  assert_int_equal(u.seq_ms[3], 5);
  assert_int_equal(u.sqn_ms, mcim_sqn_make(&p, 5, 3));
  /* An older vector from another slot is still fresh. */
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 4, 2), &next, &v), MCIM_OK);
  u = next;
  assert_int_equal(u.seq_ms[2], 4);
  assert_int_equal(u.sqn_ms, mcim_sqn_make(&p, 5, 3)); /* highest unchanged */
  /* Same slot, not higher: refused, and `next` is not written. */
  memset(&junk, 0xaa, sizeof(junk));
  next = junk;
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 4, 3), &next, &v),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(v, MCIM_SQN_NOT_FRESH);
  assert_memory_equal(&next, &junk, sizeof(next));
  /* Replay of an accepted SQN. */
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 5, 3), &next, &v),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(v, MCIM_SQN_NOT_FRESH);
  assert_string_equal(mcim_sqn_verdict_name(v), "not fresh (SEQ <= SEQ_MS(IND))");
}

/* C.2.2: SEQ at most delta above the highest accepted SEQ. */
static void test_usim_delta(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params(); /* delta 16 */
  struct mcim_sqn_usim u, next;
  enum mcim_sqn_verdict v;
  assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 17, 0), &next, &v),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(v, MCIM_SQN_TOO_FAR);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 16, 0), &next, &v), MCIM_OK);
  u = next;
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 33, 1), &next, &v),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(v, MCIM_SQN_TOO_FAR);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 32, 1), &next, &v), MCIM_OK);
}

/* C.2.3: optional age limit L below the highest accepted SEQ. */
static void test_usim_age_limit(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params();
  struct mcim_sqn_usim u, next;
  enum mcim_sqn_verdict v;
  p.delta = 1000;
  p.use_age_limit = true;
  p.age_limit = 10;
  assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 100, 0), &next, &v), MCIM_OK);
  u = next;
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 89, 1), &next, &v),
                   MCIM_SYNC_FAILURE);
  assert_int_equal(v, MCIM_SQN_TOO_OLD);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 90, 1), &next, &v), MCIM_OK);
  /* Without the option the same old vector is fine. */
  p.use_age_limit = false;
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 89, 1), &next, &v), MCIM_OK);
}

/* Wrap-around: the top `reserve` SEQ values are never issued nor accepted. */
static void test_wrap_around(void **state)
{
  (void)state;
  for (unsigned ind_bits = 0; ind_bits <= MCIM_SQN_IND_BITS_MAX; ind_bits += 4) {
    struct mcim_sqn_params p = small_params();
    p.ind_bits = ind_bits;
    uint64_t limit = mcim_sqn_seq_limit(&p);
    assert_int_equal(limit, ((uint64_t)1 << (48 - ind_bits)) - 1 - 8);

    struct mcim_sqn_he he, next;
    uint64_t sqn;
    assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);
    he.seq_he = limit - 1;
    assert_int_equal(mcim_sqn_he_next(&p, &he, &next, &sqn), MCIM_OK);
    assert_int_equal(mcim_sqn_seq(&p, sqn), limit);
    he = next;
    assert_int_equal(mcim_sqn_he_next(&p, &he, &next, &sqn), MCIM_SQN_EXHAUSTED);
    assert_int_equal(mcim_sqn_he_next_at(&p, &he, 0, &next, &sqn), MCIM_SQN_EXHAUSTED);

    struct mcim_sqn_usim u, un;
    enum mcim_sqn_verdict v;
    assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
    u.seq_ms[0] = limit - 4;
    u.sqn_ms = mcim_sqn_make(&p, limit - 4, 0);
    assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, limit + 1, 0), &un, &v),
                     MCIM_SQN_EXHAUSTED);
    assert_int_equal(v, MCIM_SQN_IN_RESERVE);
    assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, limit, 0), &un, &v), MCIM_OK);
    /* The very last 48-bit value is refused too. */
    assert_int_equal(mcim_sqn_usim_check(&p, &u, ((uint64_t)1 << 48) - 1, &un, &v),
                     MCIM_SQN_EXHAUSTED);
    /* Not an SQN at all. */
    assert_int_equal(mcim_sqn_usim_check(&p, &u, (uint64_t)1 << 48, &un, &v),
                     MCIM_INVALID_ARGUMENT);
  }
}

/* TS 33.102 6.3.5: keep SEQ_HE when in range, otherwise take SEQ_MS. */
static void test_he_resync(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params(); /* delta 16 */
  struct mcim_sqn_he he, next, before;
  assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);

  he.seq_he = 10; /* behind the USIM (restored backup): move forward */
  before = he;
  assert_int_equal(mcim_sqn_he_resync(&p, &he, mcim_sqn_make(&p, 500, 7), &next), MCIM_OK);
  assert_memory_equal(&he, &before, sizeof(he));
  assert_int_equal(next.seq_he, 500);
  assert_int_equal(next.ind_next, he.ind_next);

  he.seq_he = 505; /* 506 would be accepted by a USIM at 500: keep */
  assert_int_equal(mcim_sqn_he_resync(&p, &he, mcim_sqn_make(&p, 500, 7), &next), MCIM_OK);
  assert_int_equal(next.seq_he, 505);

  he.seq_he = 500 + 16; /* 517 is more than delta ahead: back to SEQ_MS (6.3.5) */
  assert_int_equal(mcim_sqn_he_resync(&p, &he, mcim_sqn_make(&p, 500, 7), &next), MCIM_OK);
  assert_int_equal(next.seq_he, 500);

  assert_int_equal(mcim_sqn_he_resync(&p, &he, mcim_sqn_make(&p, mcim_sqn_seq_limit(&p) + 1, 0),
                                      &next),
                   MCIM_SQN_EXHAUSTED);
  assert_int_equal(mcim_sqn_he_resync(&p, &he, (uint64_t)1 << 48, &next), MCIM_INVALID_ARGUMENT);
}

static void test_param_state_mismatch(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params(), q = small_params();
  struct mcim_sqn_usim u, un;
  struct mcim_sqn_he he, hn;
  uint64_t sqn;
  q.ind_bits = 4;
  assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
  assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_check(&q, &u, 64, &un, NULL), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_sqn_he_next(&q, &he, &hn, &sqn), MCIM_INVALID_ARGUMENT);
}

static void test_encode_roundtrip(void **state)
{
  (void)state;
  for (unsigned ind_bits = 0; ind_bits <= MCIM_SQN_IND_BITS_MAX; ind_bits++) {
    struct mcim_sqn_params p = small_params();
    p.ind_bits = ind_bits;
    p.delta = 1000;
    struct mcim_sqn_he he, he2, next;
    struct mcim_sqn_usim u, u2, un;
    uint8_t hbuf[MCIM_SQN_HE_ENCODED_LEN], ubuf[MCIM_SQN_USIM_ENCODED_MAX];
    uint64_t sqn;
    size_t len = 0;

    assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);
    assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
    for (int i = 0; i < 40; i++) {
      assert_int_equal(mcim_sqn_he_next(&p, &he, &next, &sqn), MCIM_OK);
      he = next;
      if (i % 3 == 0)
        continue; /* some vectors never reach the USIM */
      assert_int_equal(mcim_sqn_usim_check(&p, &u, sqn, &un, NULL), MCIM_OK);
      u = un;
    }
    assert_int_equal(mcim_sqn_he_encode(&he, hbuf), MCIM_OK);
    memset(&he2, 0, sizeof(he2));
    assert_int_equal(mcim_sqn_he_decode(hbuf, sizeof(hbuf), &he2), MCIM_OK);
    assert_int_equal(he2.ind_bits, he.ind_bits);
    assert_int_equal(he2.seq_he, he.seq_he);
    assert_int_equal(he2.ind_next, he.ind_next);

    assert_int_equal(mcim_sqn_usim_encoded_len(&u), 12 + 6 * ((size_t)1 << ind_bits));
    assert_int_equal(mcim_sqn_usim_encode(&u, ubuf, sizeof(ubuf), &len), MCIM_OK);
    assert_int_equal(len, mcim_sqn_usim_encoded_len(&u));
    memset(&u2, 0, sizeof(u2));
    assert_int_equal(mcim_sqn_usim_decode(ubuf, len, &u2), MCIM_OK);
    assert_int_equal(u2.ind_bits, u.ind_bits);
    assert_int_equal(u2.sqn_ms, u.sqn_ms);
    assert_memory_equal(u2.seq_ms, u.seq_ms, sizeof(u.seq_ms));
    assert_int_equal(mcim_sqn_usim_encode(&u, ubuf, len - 1, &len), MCIM_TOO_LARGE);
  }
}

/* Persisted state is input: truncated, extended, altered or random bytes never decode. */
static void test_decode_rejects_garbage(void **state)
{
  (void)state;
  struct mcim_sqn_params p = small_params();
  struct mcim_sqn_he he, out_he;
  struct mcim_sqn_usim u, out_u, un;
  uint8_t hbuf[MCIM_SQN_HE_ENCODED_LEN + 1], ubuf[MCIM_SQN_USIM_ENCODED_MAX + 1], tmp[sizeof(ubuf)];
  size_t ulen = 0;

  assert_int_equal(mcim_sqn_he_init(&p, &he), MCIM_OK);
  he.seq_he = 1234;
  he.ind_next = 7;
  assert_int_equal(mcim_sqn_he_encode(&he, hbuf), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&p, &u), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_check(&p, &u, mcim_sqn_make(&p, 9, 4), &un, NULL), MCIM_OK);
  u = un;
  assert_int_equal(mcim_sqn_usim_encode(&u, ubuf, sizeof(ubuf), &ulen), MCIM_OK);

  /* Every truncation, and one byte too many. */
  for (size_t n = 0; n < MCIM_SQN_HE_ENCODED_LEN; n++)
    assert_int_not_equal(mcim_sqn_he_decode(hbuf, n, &out_he), MCIM_OK);
  assert_int_equal(mcim_sqn_he_decode(hbuf, MCIM_SQN_HE_ENCODED_LEN + 1, &out_he), MCIM_BAD_LENGTH);
  for (size_t n = 0; n < ulen; n++)
    assert_int_not_equal(mcim_sqn_usim_decode(ubuf, n, &out_u), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_decode(ubuf, ulen + 1, &out_u), MCIM_BAD_LENGTH);

  /* Field by field. */
  memcpy(tmp, hbuf, MCIM_SQN_HE_ENCODED_LEN);
  tmp[0] ^= 1; /* magic */
  assert_int_equal(mcim_sqn_he_decode(tmp, MCIM_SQN_HE_ENCODED_LEN, &out_he), MCIM_INVALID_ARGUMENT);
  memcpy(tmp, hbuf, MCIM_SQN_HE_ENCODED_LEN);
  tmp[4] = 2; /* version */
  assert_int_equal(mcim_sqn_he_decode(tmp, MCIM_SQN_HE_ENCODED_LEN, &out_he), MCIM_UNSUPPORTED);
  memcpy(tmp, hbuf, MCIM_SQN_HE_ENCODED_LEN);
  tmp[13] = 32; /* ind_next out of range for 5 bits */
  assert_int_equal(mcim_sqn_he_decode(tmp, MCIM_SQN_HE_ENCODED_LEN, &out_he), MCIM_INVALID_ARGUMENT);
  memcpy(tmp, hbuf, MCIM_SQN_HE_ENCODED_LEN);
  tmp[6] = 0xff; /* seq_he beyond 43 bits */
  assert_int_equal(mcim_sqn_he_decode(tmp, MCIM_SQN_HE_ENCODED_LEN, &out_he), MCIM_INVALID_ARGUMENT);

  memcpy(tmp, ubuf, ulen);
  tmp[5] = 9; /* ind_bits */
  assert_int_not_equal(mcim_sqn_usim_decode(tmp, ulen, &out_u), MCIM_OK);
  memcpy(tmp, ubuf, ulen);
  tmp[5] = 4; /* ind_bits that does not match the length */
  assert_int_equal(mcim_sqn_usim_decode(tmp, ulen, &out_u), MCIM_BAD_LENGTH);
  memcpy(tmp, ubuf, ulen);
  tmp[12 + 6 * 1 + 5] = 50; /* slot 1 above the claimed highest SEQ */
  assert_int_equal(mcim_sqn_usim_decode(tmp, ulen, &out_u), MCIM_INVALID_ARGUMENT);
  memcpy(tmp, ubuf, ulen);
  tmp[11] ^= 1; /* sqn_ms names another slot */
  assert_int_equal(mcim_sqn_usim_decode(tmp, ulen, &out_u), MCIM_INVALID_ARGUMENT);
  memcpy(tmp, ubuf, ulen);
  tmp[12] = 0xff; /* slot 0 beyond 43 bits */
  assert_int_equal(mcim_sqn_usim_decode(tmp, ulen, &out_u), MCIM_INVALID_ARGUMENT);

  /* Random bytes of random lengths. */
  for (int i = 0; i < 2000; i++) {
    uint8_t r[2];
    assert_int_equal(mcim_random(r, 2), MCIM_OK);
    size_t n = ((size_t)r[0] << 8 | r[1]) % sizeof(tmp);
    assert_int_equal(mcim_random(tmp, sizeof(tmp)), MCIM_OK);
    if (i % 2) /* half of them with a valid header, to reach the deeper checks */
      memcpy(tmp, ubuf, 6);
    assert_int_not_equal(mcim_sqn_usim_decode(tmp, n, &out_u), MCIM_OK);
    assert_int_not_equal(mcim_sqn_he_decode(tmp, n % 20, &out_he), MCIM_OK);
  }
  assert_int_equal(mcim_sqn_usim_decode(NULL, 12, &out_u), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_sqn_he_decode(hbuf, MCIM_SQN_HE_ENCODED_LEN, NULL), MCIM_INVALID_ARGUMENT);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_params),
      cmocka_unit_test(test_pack),
      cmocka_unit_test(test_he_next_cycles_ind),
      cmocka_unit_test(test_usim_ind_array),
      cmocka_unit_test(test_usim_delta),
      cmocka_unit_test(test_usim_age_limit),
      cmocka_unit_test(test_wrap_around),
      cmocka_unit_test(test_he_resync),
      cmocka_unit_test(test_param_state_mismatch),
      cmocka_unit_test(test_encode_roundtrip),
      cmocka_unit_test(test_decode_rejects_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
