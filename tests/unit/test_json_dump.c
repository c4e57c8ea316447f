/* mcim_json_dumpb/mcim_json_dumps (src/core/json_dump.c) against jansson's own
 * json_dumpb/json_dumps with JSON_COMPACT: the same bytes for the same document, and the same
 * refusals (strings that are not valid UTF-8, neither object nor array). Documents: fixed
 * cases for every escape and UTF-8 rule, then many random ones (fixed seed). */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mcim/json_dump.h"

/* Whether a key somewhere in `j` is not valid UTF-8 (jansson's own check: json_stringn). */
static bool bad_key(const json_t *j)
{
  if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++)
      if (bad_key(json_array_get(j, i)))
        return true;
    return false;
  }
  if (!json_is_object(j))
    return false;
  for (void *it = json_object_iter((json_t *)j); it; it = json_object_iter_next((json_t *)j, it)) {
    json_t *k = json_stringn(json_object_iter_key(it), json_object_iter_key_len(it));
    json_decref(k);
    if (!k || bad_key(json_object_iter_value(it)))
      return true;
  }
  return false;
}

/* Both dumps of `j`: the same result (text or refusal), through dumpb with a buffer of each
 * size from 0 to past the length (the length returned never depends on it) and dumps. The
 * one difference: a key that is not valid UTF-8, which jansson's dump skips with the rest of
 * its string (its dump_string's failure is not checked for keys: `{":true}` for the key
 * "\xff"), text that no parser reads; ours refuses the document. */
static void same(const json_t *j)
{
  char *want = json_dumps(j, JSON_COMPACT);
  char *got = mcim_json_dumps(j);
  if (want && bad_key(j)) {
    /* jansson's text is not this document: it does not parse, or parses as another one */
    json_t *back = json_loads(want, JSON_ALLOW_NUL, NULL);
    assert_false(back && json_equal(back, j));
    json_decref(back);
    free(want);
    want = NULL;
  }
  if (!want) {
    assert_null(got);
    assert_int_equal(mcim_json_dumpb(j, NULL, 0), 0);
    return;
  }
  assert_non_null(got);
  assert_string_equal(got, want);
  size_t n = strlen(want);
  assert_int_equal(mcim_json_dumpb(j, NULL, 0), n);
  char *buf = malloc(n + 8);
  assert_non_null(buf);
  for (size_t cap = 0; cap <= n + 1; cap += (cap < 64 || cap + 64 > n) ? 1 : 61) {
    memset(buf, 0x5a, n + 8);
    assert_int_equal(mcim_json_dumpb(j, buf, cap), n);
    if (cap >= n)
      assert_memory_equal(buf, want, n);
    assert_int_equal((unsigned char)buf[cap], 0x5a); /* nothing past the buffer's size */
  }
  free(buf);
  free(want);
  free(got);
}

static void str_case(const char *s, size_t len)
{
  json_t *o = json_object();
  json_t *v = json_stringn_nocheck(s, len);
  assert_non_null(v);
  json_object_set_new(o, "k", v);
  same(o);
  /* as a key too */
  json_t *k = json_object();
  json_object_setn_new_nocheck(k, s, len, json_true());
  same(k);
  json_t *a = json_array();
  json_array_append(a, v);
  same(a);
  json_decref(a);
  json_decref(k);
  json_decref(o);
}

static void fixed_cases(void **state)
{
  (void)state;
  json_t *j =
      json_loads("{\"a\":1,\"b\":[true,false,null,-0.5,1e300,[],{}],\"c\":{\"d\":\"e\"}}", 0, NULL);
  assert_non_null(j);
  same(j);
  json_decref(j);
  json_t *e = json_object();
  same(e);
  json_decref(e);
  e = json_array();
  same(e);
  json_decref(e);
  /* integers at the ends of their range */
  json_t *ints = json_pack("[I,I,I,I,I]", (json_int_t)INT64_MIN, (json_int_t)INT64_MAX,
                           (json_int_t)0, (json_int_t)-1, (json_int_t)1234567890123LL);
  same(ints);
  json_decref(ints);
  /* reals */
  json_t *reals = json_pack("[f,f,f,f,f]", 0.1, -2.5e-308, 1.0, 123456789.125, -0.0);
  same(reals);
  json_decref(reals);
  /* every byte 0..255 alone (invalid UTF-8 refused by both) */
  for (int c = 0; c < 256; c++) {
    char b = (char)c;
    str_case(&b, 1);
  }
  /* escapes in runs, NUL inside, UTF-8 of each length, the limits of each rule */
  static const char *cases[] = {
      "plain",
      "a\"b\\c/d",
      "\b\f\n\r\t\x01\x1f\x7f",
      "caf\xc3\xa9",
      "\xe2\x82\xac",
      "\xf0\x9f\x98\x80",
      "\xf4\x8f\xbf\xbf", /* U+10FFFF */
      "\xf4\x90\x80\x80", /* past U+10FFFF */
      "\xed\x9f\xbf",
      "\xed\xa0\x80",
      "\xed\xbf\xbf",
      "\xee\x80\x80", /* around surrogates */
      "\xc0\x80",
      "\xc1\xbf",
      "\xc2\x80",
      "\xe0\x9f\xbf",
      "\xe0\xa0\x80", /* overlong limits */
      "\xf0\x8f\xbf\xbf",
      "\xf0\x90\x80\x80",
      "\xc3",
      "\xe2\x82",
      "\xf0\x9f\x98", /* cut */
      "\xc3\x28",
      "\xe2\x28\xa1",
      "\xf0\x28\x8c\xbc",
      "\x80",
      "\xbf",
      "\xf5\x80\x80\x80",
      "\xff",
      "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    str_case(cases[i], strlen(cases[i]));
  str_case("a\0b", 3);
  str_case("", 0);
  /* not an object or array */
  json_t *s = json_string("x");
  assert_int_equal(mcim_json_dumpb(s, NULL, 0), 0);
  assert_null(mcim_json_dumps(s));
  json_decref(s);
  assert_int_equal(mcim_json_dumpb(NULL, NULL, 0), 0);
}

/* A random document: strings drawn from bytes that need no escape, escapes, valid and invalid
 * UTF-8; nesting up to `depth`. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

static size_t rnd_bytes(char *out, size_t max)
{
  static const char *pieces[] = {"a",
                                 "Z",
                                 "0",
                                 " ",
                                 "\"",
                                 "\\",
                                 "/",
                                 "\n",
                                 "\x01",
                                 "\x1f",
                                 "\x7f",
                                 "\xc3\xa9",
                                 "\xe2\x82\xac",
                                 "\xf0\x9f\x98\x80",
                                 "~",
                                 "eyJhbGciOiJFUzI1NiJ9",
                                 "\xed\xa0\x80",
                                 "\x80",
                                 "\xc3"};
  size_t n = 0, want = rnd() % 40;
  for (size_t i = 0; i < want; i++) {
    /* invalid pieces rarely, so that most documents dump */
    size_t k = rnd() % 16;
    if (rnd() % 200 == 0)
      k = 16 + rnd() % 3;
    size_t l = strlen(pieces[k]);
    if (n + l > max)
      break;
    memcpy(out + n, pieces[k], l);
    n += l;
  }
  return n;
}

static json_t *rnd_value(int depth)
{
  char b[256];
  switch (rnd() % (depth > 0 ? 9 : 6)) {
  case 0:
    return json_null();
  case 1:
    return json_boolean(rnd() % 2);
  case 2:
    return json_integer((json_int_t)(((uint64_t)rnd() << 32) | rnd()) >> (rnd() % 64));
  case 3:
    return json_real((double)(int32_t)rnd() / (double)(rnd() | 1));
  case 4:
  case 5:
    return json_stringn_nocheck(b, rnd_bytes(b, sizeof(b)));
  case 6: {
    json_t *a = json_array();
    for (uint32_t i = rnd() % 6; i > 0; i--)
      json_array_append_new(a, rnd_value(depth - 1));
    return a;
  }
  default: {
    json_t *o = json_object();
    for (uint32_t i = rnd() % 8; i > 0; i--) {
      size_t kl = rnd_bytes(b, 32);
      json_object_setn_new_nocheck(o, b, kl, rnd_value(depth - 1));
    }
    return o;
  }
  }
}

static void random_documents(void **state)
{
  (void)state;
  int dumped = 0, refused = 0;
  for (int i = 0; i < 3000; i++) {
    json_t *o = json_object();
    for (uint32_t k = rnd() % 10; k > 0; k--) {
      char b[64];
      size_t kl = rnd_bytes(b, sizeof(b));
      json_object_setn_new_nocheck(o, b, kl, rnd_value(4));
    }
    /* members removed and added again: the object's order is not the insertion's alone */
    if (json_object_size(o) > 2 && rnd() % 2) {
      void *it = json_object_iter(o);
      const char *k0 = json_object_iter_key(it);
      char key[64];
      size_t kl = json_object_iter_key_len(it);
      memcpy(key, k0, kl);
      json_object_deln(o, key, kl);
      json_object_setn_new_nocheck(o, key, kl, json_integer(i));
    }
    char *t = json_dumps(o, JSON_COMPACT);
    if (t)
      dumped++;
    else
      refused++;
    free(t);
    same(o);
    json_decref(o);
  }
  /* both outcomes were exercised */
  assert_true(dumped > 1000);
  assert_true(refused > 10);
}

/* Deeper than jansson's parser takes: refused (jansson's dump would write it). */
static void too_deep(void **state)
{
  (void)state;
  json_t *root = json_array(), *cur = root;
  for (int i = 0; i < MCIM_JSON_DUMP_DEPTH; i++) {
    json_t *next = json_array();
    json_array_append_new(cur, next);
    cur = next;
  }
  assert_int_equal(mcim_json_dumpb(root, NULL, 0), 0);
  json_decref(root);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fixed_cases),
      cmocka_unit_test(random_documents),
      cmocka_unit_test(too_deep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
