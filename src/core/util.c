#include "mcim/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static int hex_nibble(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

mcim_cause_t mcim_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen)
{
  if (!hex || !out)
    return MCIM_INVALID_ARGUMENT;
  if (hexlen != 2 * outlen)
    return MCIM_BAD_LENGTH;
  for (size_t i = 0; i < outlen; i++) {
    int hi = hex_nibble(hex[2 * i]);
    int lo = hex_nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return MCIM_BAD_HEX;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return MCIM_OK;
}

mcim_cause_t mcim_hex_decode_str(const char *hex, uint8_t *out, size_t outlen)
{
  if (!hex)
    return MCIM_INVALID_ARGUMENT;
  /* Check characters before length so "zz" reports BAD_HEX, not BAD_LENGTH. */
  size_t n = 0;
  for (; hex[n]; n++)
    if (hex_nibble(hex[n]) < 0)
      return MCIM_BAD_HEX;
  return mcim_hex_decode(hex, n, out, outlen);
}

void mcim_hex_encode(const uint8_t *in, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 0x0f];
  }
  out[2 * len] = '\0';
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t mcim_b64url_len(size_t len)
{
  return (len / 3) * 4 + ((len % 3) ? (len % 3) + 1 : 0);
}

char *mcim_b64url_dup(const uint8_t *in, size_t len)
{
  char *s = malloc(mcim_b64url_len(len) + 1);
  if (s)
    mcim_b64url_encode(in, len, s);
  return s;
}

size_t mcim_b64url_encode(const uint8_t *in, size_t len, char *out)
{
  size_t o = 0, i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64url_alphabet[(v >> 18) & 63];
    out[o++] = b64url_alphabet[(v >> 12) & 63];
    out[o++] = b64url_alphabet[(v >> 6) & 63];
    out[o++] = b64url_alphabet[v & 63];
  }
  if (len - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = b64url_alphabet[(v >> 18) & 63];
    out[o++] = b64url_alphabet[(v >> 12) & 63];
  } else if (len - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = b64url_alphabet[(v >> 18) & 63];
    out[o++] = b64url_alphabet[(v >> 12) & 63];
    out[o++] = b64url_alphabet[(v >> 6) & 63];
  }
  out[o] = '\0';
  return o;
}

/* Each byte's value in the alphabet, XX (high bit set) for a byte outside it. A table and not a
 * chain of range tests: a JWS payload's random characters made those branches mispredict, and
 * the decode was 1.5% of the RO's and an SHO's CPU under loadgen (1.9 -> 0.4 ns a character). */
#define XX 0xff
static const uint8_t b64url_values[256] = {
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, 62, XX, XX,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, XX, XX, XX, XX, XX, XX,
    XX,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, XX, XX, XX, XX, 63,
    XX, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
};
#undef XX

mcim_cause_t mcim_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap,
                                size_t *outlen)
{
  if (!in || !outlen || (!out && outcap))
    return MCIM_INVALID_ARGUMENT;
  if (inlen % 4 == 1)
    return MCIM_BAD_BASE64;
  size_t need = inlen / 4 * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
  if (need > outcap)
    return MCIM_TOO_LARGE;
  if (!out) { /* outcap 0 (checked above): only the empty string decodes */
    *outlen = 0;
    return MCIM_OK;
  }
  const unsigned char *s = (const unsigned char *)in;
  size_t i = 0, o = 0;
  uint32_t bad = 0; /* the values ORed: the high bit says a byte was outside the alphabet */
  for (; i + 4 <= inlen; i += 4) {
    uint32_t a = b64url_values[s[i]], b = b64url_values[s[i + 1]];
    uint32_t c = b64url_values[s[i + 2]], d = b64url_values[s[i + 3]];
    bad |= a | b | c | d;
    uint32_t v = a << 18 | b << 12 | c << 6 | d;
    out[o++] = (uint8_t)(v >> 16);
    out[o++] = (uint8_t)(v >> 8);
    out[o++] = (uint8_t)v;
  }
  if (bad & 0x80)
    return MCIM_BAD_BASE64;
  size_t rest = inlen - i; /* 0, 2 or 3 characters: 1 or 2 bytes, and 4 or 2 bits left over */
  if (rest > 0) {
    uint32_t v = 0;
    for (size_t k = 0; k < rest; k++) {
      uint32_t x = b64url_values[s[i + k]];
      if (x & 0x80)
        return MCIM_BAD_BASE64;
      v = v << 6 | x;
    }
    /* Leftover bits must be zero, or two encodings would decode to one value. */
    if (v & (rest == 2 ? 0xfu : 0x3u))
      return MCIM_BAD_BASE64;
    if (rest == 2) {
      out[o++] = (uint8_t)(v >> 4);
    } else {
      out[o++] = (uint8_t)(v >> 10);
      out[o++] = (uint8_t)(v >> 2);
    }
  }
  *outlen = o;
  return MCIM_OK;
}

bool mcim_digits(const char *s, size_t min, size_t max)
{
  size_t n = s ? strlen(s) : 0;
  if (n < min || n > max)
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

bool mcim_ct_equal(const void *a, const void *b, size_t len)
{
  return CRYPTO_memcmp(a, b, len) == 0;
}

void mcim_wipe(void *p, size_t len)
{
  if (p && len)
    OPENSSL_cleanse(p, len);
}

void *mcim_grow_wiped(void *p, size_t used, size_t size)
{
  if (size < used)
    return NULL;
  unsigned char *nb = malloc(size ? size : 1);
  if (!nb)
    return NULL;
  if (p && used) {
    memcpy(nb, p, used);
    mcim_wipe(p, used);
  }
  free(p);
  return nb;
}

mcim_cause_t mcim_random(uint8_t *out, size_t len)
{
  if (len > (size_t)INT32_MAX)
    return MCIM_INVALID_ARGUMENT;
  return RAND_bytes(out, (int)len) == 1 ? MCIM_OK : MCIM_CRYPTO_ERROR;
}

#define ID_POOL 512

static __thread struct {
  uint8_t buf[ID_POOL];
  size_t pos; /* bytes before it were handed out (wiped); ID_POOL: empty */
  pid_t pid;  /* the process that filled it */
  bool filled;
} id_pool;

mcim_cause_t mcim_random_id(uint8_t *out, size_t len)
{
  if (!out || len > 64)
    return MCIM_INVALID_ARGUMENT;
  pid_t pid = getpid();
  if (!id_pool.filled || id_pool.pid != pid || id_pool.pos + len > ID_POOL) {
    mcim_cause_t rc = mcim_random(id_pool.buf, ID_POOL);
    if (rc != MCIM_OK) {
      mcim_wipe(id_pool.buf, ID_POOL);
      id_pool.filled = false;
      return rc;
    }
    id_pool.pos = 0;
    id_pool.pid = pid;
    id_pool.filled = true;
  }
  memcpy(out, id_pool.buf + id_pool.pos, len);
  mcim_wipe(id_pool.buf + id_pool.pos, len);
  id_pool.pos += len;
  return MCIM_OK;
}

int64_t mcim_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec;
}

int64_t mcim_now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t mcim_monotonic_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MCIM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                  \
    __has_feature(memory_sanitizer)
#define MCIM_SANITIZED 1
#endif
#endif

int mcim_thread_start(pthread_t *t, size_t stack, void *(*fn)(void *), void *arg)
{
  pthread_attr_t attr;
  int rc = pthread_attr_init(&attr);
  if (rc != 0)
    return rc;
#ifndef MCIM_SANITIZED
  if (stack)
    rc = pthread_attr_setstacksize(&attr, stack);
#else
  (void)stack;
#endif
  if (rc == 0)
    rc = pthread_create(t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return rc;
}

void mcim_thread_name(const char *name)
{
  char n[16];
  snprintf(n, sizeof(n), "%s", name); /* the kernel keeps 15 bytes and the NUL */
  (void)prctl(PR_SET_NAME, n, 0, 0, 0);
}

uint64_t mcim_thread_cpu_ns(void)
{
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mcim_cpu_delta_ns(uint64_t before, uint64_t now)
{
  return before && now > before ? now - before : 0;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void mcim_sort_doubles(double *v, size_t n)
{
  if (n > 1)
    qsort(v, n, sizeof(double), cmp_double);
}

double mcim_percentile(const double *sorted, size_t n, double p)
{
  if (n == 0)
    return 0;
  size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  return sorted[(rank > n ? n : rank) - 1];
}

double mcim_median(double *v, size_t n)
{
  if (n == 0)
    return 0;
  mcim_sort_doubles(v, n);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void mcim_detailf(char *detail, size_t len, const char *fmt, ...)
{
  va_list ap;
  if (!detail || len == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(detail, len, fmt, ap);
  va_end(ap);
}
