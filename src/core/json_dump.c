/* Compact JSON dumps identical to jansson's (include/mcim/json_dump.h). The rules copied are
 * those of jansson's dump.c with JSON_COMPACT alone: members in the object's order, ":" and
 * "," without spaces, strings with \" \\ \b \f \n \r \t escaped and other control characters
 * as \u00XX (upper-case hex), everything else as it is (UTF-8 checked as jansson's
 * utf8_iterate does), integers in decimal, reals by jansson itself (its precision 17).
 * tests/unit/test_json_dump.c compares the two byte for byte. One difference: a key that is
 * not valid UTF-8 fails the dump here, where jansson's (which does not check its dump_string
 * for keys) writes text that does not parse (`{":true}`). */
#include "mcim/json_dump.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct out {
  char *buf;
  size_t size;
  size_t used;
};

/* As jansson's dump_to_buffer: a piece that fits is copied, the length counts all. */
static void put(struct out *o, const void *p, size_t n)
{
  if (n <= o->size && o->used <= o->size - n)
    memcpy(o->buf + o->used, p, n);
  o->used += n;
}

static void put_c(struct out *o, char c)
{
  if (o->used < o->size)
    o->buf[o->used] = c;
  o->used++;
}

/* The length of the UTF-8 sequence at p (2-4 bytes, *p >= 0x80), 0 if jansson's
 * utf8_iterate refuses it: a stray continuation byte, an overlong form, a surrogate, a code
 * point past U+10FFFF or a sequence cut by the end. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
  size_t n;
  uint32_t cp;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) {
    n = 2;
    cp = p[0] & 0x1Fu;
  } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
    n = 3;
    cp = p[0] & 0x0Fu;
  } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
    n = 4;
    cp = p[0] & 0x07u;
  } else {
    return 0;
  }
  if (avail < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0u) != 0x80u)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3Fu);
  }
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (n == 3 && cp < 0x800) ||
      (n == 4 && cp < 0x10000))
    return 0;
  return n;
}

static int put_string(struct out *o, const char *s, size_t len)
{
  static const char hex[] = "0123456789ABCDEF";
  const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;

  put_c(o, '"');
  while (p < end) {
    unsigned char c = *p;
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      p++;
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_seq(p, (size_t)(end - p));
      if (n == 0)
        return -1;
      p += n;
      continue;
    }
    put(o, run, (size_t)(p - run));
    char esc[6] = {'\\', 0, '0', '0', 0, 0};
    size_t elen = 2;
    switch (c) {
    case '"':
      esc[1] = '"';
      break;
    case '\\':
      esc[1] = '\\';
      break;
    case '\b':
      esc[1] = 'b';
      break;
    case '\f':
      esc[1] = 'f';
      break;
    case '\n':
      esc[1] = 'n';
      break;
    case '\r':
      esc[1] = 'r';
      break;
    case '\t':
      esc[1] = 't';
      break;
    default:
      esc[1] = 'u';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 0x0F];
      elen = 6;
      break;
    }
    put(o, esc, elen);
    run = ++p;
  }
  put(o, run, (size_t)(p - run));
  put_c(o, '"');
  return 0;
}

static void put_int(struct out *o, json_int_t v)
{
  char tmp[24];
  size_t i = sizeof(tmp);
  /* the magnitude as unsigned: INT64_MIN has no positive counterpart */
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    tmp[--i] = (char)('0' + (u % 10));
    u /= 10;
  } while (u);
  if (v < 0)
    tmp[--i] = '-';
  put(o, tmp + i, sizeof(tmp) - i);
}

static int dump(struct out *o, const json_t *j, int depth)
{
  switch (json_typeof(j)) {
  case JSON_NULL:
    put(o, "null", 4);
    return 0;
  case JSON_TRUE:
    put(o, "true", 4);
    return 0;
  case JSON_FALSE:
    put(o, "false", 5);
    return 0;
  case JSON_INTEGER:
    put_int(o, json_integer_value(j));
    return 0;
  case JSON_REAL: {
    /* jansson's own formatting (rare here: no document of ours holds a real) */
    char tmp[128];
    size_t n = json_dumpb(j, tmp, sizeof(tmp), JSON_COMPACT | JSON_ENCODE_ANY);
    if (n == 0 || n > sizeof(tmp))
      return -1;
    put(o, tmp, n);
    return 0;
  }
  case JSON_STRING:
    return put_string(o, json_string_value(j), json_string_length(j));
  case JSON_ARRAY: {
    size_t n = json_array_size(j);
    if (depth >= MCIM_JSON_DUMP_DEPTH)
      return -1;
    put_c(o, '[');
    for (size_t i = 0; i < n; i++) {
      if (i > 0)
        put_c(o, ',');
      if (dump(o, json_array_get(j, i), depth + 1) != 0)
        return -1;
    }
    put_c(o, ']');
    return 0;
  }
  case JSON_OBJECT: {
    if (depth >= MCIM_JSON_DUMP_DEPTH)
      return -1;
    put_c(o, '{');
    bool first = true;
    for (void *it = json_object_iter((json_t *)j); it;
         it = json_object_iter_next((json_t *)j, it)) {
      if (!first)
        put_c(o, ',');
      first = false;
      if (put_string(o, json_object_iter_key(it), json_object_iter_key_len(it)) != 0)
        return -1;
      put_c(o, ':');
      if (dump(o, json_object_iter_value(it), depth + 1) != 0)
        return -1;
    }
    put_c(o, '}');
    return 0;
  }
  }
  return -1;
}

size_t mcim_json_dumpb(const json_t *json, char *buf, size_t size)
{
  struct out o = {buf, buf ? size : 0, 0};
  if (!json_is_object(json) && !json_is_array(json))
    return 0;
  return dump(&o, json, 0) == 0 ? o.used : 0;
}

char *mcim_json_dumps(const json_t *json)
{
  size_t cap = 4096, n;
  char *text = malloc(cap);
  if (!text)
    return NULL;
  n = mcim_json_dumpb(json, text, cap - 1);
  if (n >= cap) {
    char *bigger = realloc(text, n + 1);
    if (!bigger) {
      free(text);
      return NULL;
    }
    text = bigger;
    cap = n + 1;
    if (mcim_json_dumpb(json, text, cap - 1) != n)
      n = 0;
  }
  if (n == 0) {
    free(text);
    return NULL;
  }
  text[n] = '\0';
  return text;
}
