/* Small helpers every module uses: hex and base64url codecs, constant-time
 * comparison, wiping of key material. Decoders take a buffer and a length,
 * never trust a terminator, and report a cause instead of crashing. */
#ifndef MCIM_UTIL_H
#define MCIM_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

/* Decode exactly `outlen` bytes from `hexlen` hex characters (either case).
 * MCIM_BAD_LENGTH if hexlen != 2*outlen, MCIM_BAD_HEX on a non-hex character. */
mcim_cause_t mcim_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen);
/* Same for a NUL-terminated string. */
mcim_cause_t mcim_hex_decode_str(const char *hex, uint8_t *out, size_t outlen);
/* Lower-case hex of `len` bytes into `out`, which holds 2*len+1 characters. */
void mcim_hex_encode(const uint8_t *in, size_t len, char *out);

/* base64url without padding (RFC 4648 section 5, as JOSE uses it).
 * encode: `out` holds mcim_b64url_len(len)+1 characters; returns the length written. */
size_t mcim_b64url_len(size_t len);
size_t mcim_b64url_encode(const uint8_t *in, size_t len, char *out);
/* The encoding of `len` bytes in a malloc'd string (free() it); NULL if out of memory. */
char *mcim_b64url_dup(const uint8_t *in, size_t len);
/* decode: writes at most `outcap` bytes, the decoded length in *outlen. */
mcim_cause_t mcim_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap,
                                size_t *outlen);

/* Whether `s` is min..max decimal digits and nothing else (NULL: no). */
bool mcim_digits(const char *s, size_t min, size_t max);
/* Constant-time equality of two buffers of the same length (MACs, RES). */
bool mcim_ct_equal(const void *a, const void *b, size_t len);
/* Wipe key material so the compiler cannot elide it. */
void mcim_wipe(void *p, size_t len);
/* A buffer `p` whose first `used` bytes matter, grown to `size` (>= used) without leaving a
 * copy behind: a new block, those bytes copied, the old block wiped and freed (realloc would
 * free the old copy as it is). NULL (and `p` untouched) when out of memory. For buffers that
 * may carry secrets (request and answer bodies: K and OPc at registration, AVs). */
void *mcim_grow_wiped(void *p, size_t used, size_t size);
/* A refusal's human detail into a caller's buffer (nothing when detail is NULL or len 0). */
void mcim_detailf(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill with bytes from the CSPRNG (OpenSSL's DRBG). MCIM_CRYPTO_ERROR if it fails. */
mcim_cause_t mcim_random(uint8_t *out, size_t len);
/* Random bytes for identifiers that are public once used (a JWS's jti, the ids of trace rows
 * and outbox messages), at most 64 at a time, never for a key, a nonce or anything secret:
 * taken from a buffer of this thread's, refilled from mcim_random 512 bytes at a time (each
 * RAND_bytes call costs more in OpenSSL 3's provider and DRBG machinery than 512 bytes of its
 * output; docs/performance.md). Bytes handed out are wiped from the buffer; a forked child
 * never hands out its parent's (the buffer is dropped when the process id changes). */
mcim_cause_t mcim_random_id(uint8_t *out, size_t len);

/* Seconds since the epoch (wall clock) and a monotonic clock in nanoseconds. */
int64_t mcim_now(void);
/* The wall clock in microseconds (trace timestamps). */
int64_t mcim_now_us(void);
uint64_t mcim_monotonic_ns(void);

/* Measurement summaries (loadgen, bench/): `v` sorted in place, ascending. */
void mcim_sort_doubles(double *v, size_t n);
/* The nearest-rank percentile `p` (0-100] of `sorted` (ascending); 0 when n is 0. */
double mcim_percentile(const double *sorted, size_t n, double p);
/* The median of `v` (sorted in place); 0 when n is 0. */
double mcim_median(double *v, size_t n);

/* The stack of the device agent's threads (its worker, its control server's): the deepest
 * stack they touch in a procedure is about 24 KiB (bench/agent_footprint.sh, smaps), and the
 * deepest JSON jansson parses (2048 levels, its limit: any answer or request body) takes
 * about 170 KiB; 512 KiB leaves twice that. Only reserved address space (and commit charge
 * where overcommit is off), not resident memory: 8 MiB is glibc's default. */
#define MCIM_SMALL_STACK (512u * 1024u)
/* pthread_create with a stack of `stack` bytes (0: the default), except in a sanitizer
 * build (its instrumentation needs far more stack): there, the default. */
int mcim_thread_start(pthread_t *t, size_t stack, void *(*fn)(void *), void *arg);
/* Names the calling thread (at most 15 bytes kept): what `top -H`, `perf` and the metric
 * mcim_thread_cpu_seconds_total show it as. */
void mcim_thread_name(const char *name);
/* The calling thread's CPU time so far, in nanoseconds (CLOCK_THREAD_CPUTIME_ID); 0 if the
 * clock cannot be read (a difference of two readings is then taken as 0: mcim_cpu_delta_ns). */
uint64_t mcim_thread_cpu_ns(void);
/* now - before, or 0 when a reading failed (either is 0) or the clock went back */
uint64_t mcim_cpu_delta_ns(uint64_t before, uint64_t now);

#endif
