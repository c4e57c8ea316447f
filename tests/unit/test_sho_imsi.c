/* The SHO's IMSIs (src/roles/sho/order.c, mcim_sho_imsi_draw): the PLMN, the operator's
 * msin_prefix, then digits drawn at random, never a counter. A counter's IMSIs are each
 * other's neighbours: anyone could attach with each in turn, learn which are issued and in
 * which state, and hold every subscriber's open challenges at attach_open_max (review of
 * 2026-12-07). The draws are checked for their shape, and for randomness in every position
 * of the MSIN: a counter changes its last digits only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "roles/sho/sho.h"

#define DRAWS 200

static void assert_imsi(const char *imsi, const char *head)
{
  assert_int_equal(strlen(imsi), 15);
  assert_memory_equal(imsi, head, strlen(head));
  for (const char *p = imsi; *p; p++)
    assert_true(*p >= '0' && *p <= '9');
}

/* 200 draws of a 10-digit MSIN: each well-formed, all different (two alike: 2e-6), and every
 * position of the MSIN takes at least 5 of the 10 digits (fewer: below 1e-70). */
static void test_random_in_every_position(void **state)
{
  (void)state;
  static char imsis[DRAWS][24];
  for (int i = 0; i < DRAWS; i++) {
    assert_int_equal(mcim_sho_imsi_draw("00102", NULL, imsis[i]), MCIM_OK);
    assert_imsi(imsis[i], "00102");
    for (int j = 0; j < i; j++)
      assert_string_not_equal(imsis[i], imsis[j]);
  }
  for (size_t pos = 5; pos < 15; pos++) {
    bool seen[10] = {false};
    int distinct = 0;
    for (int i = 0; i < DRAWS; i++) {
      int d = imsis[i][pos] - '0';
      distinct += !seen[d];
      seen[d] = true;
    }
    assert_true(distinct >= 5);
  }
}

/* The operator's range: the prefix after the PLMN, the rest drawn. */
static void test_prefix(void **state)
{
  (void)state;
  char imsi[24];
  for (int i = 0; i < DRAWS; i++) {
    assert_int_equal(mcim_sho_imsi_draw("001020", "123", imsi), MCIM_OK);
    assert_imsi(imsi, "001020123");
  }
  assert_int_equal(mcim_sho_imsi_draw("00102", "7", imsi), MCIM_OK);
  assert_imsi(imsi, "001027");
}

/* Fewer than MCIM_SHO_MSIN_RANDOM_MIN random digits: refused, nothing written. */
static void test_too_few_random_digits(void **state)
{
  (void)state;
  char imsi[24] = "untouched";
  assert_int_equal(mcim_sho_imsi_draw("001020", "1234", imsi), MCIM_INVALID_ARGUMENT);
  assert_string_equal(imsi, "untouched");
  assert_int_equal(mcim_sho_imsi_draw("00102", "1234", imsi), MCIM_OK);
  assert_imsi(imsi, "001021234");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_in_every_position),
      cmocka_unit_test(test_prefix),
      cmocka_unit_test(test_too_few_random_digits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
