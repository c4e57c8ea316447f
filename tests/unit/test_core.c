/* Core helpers: codecs against RFC 4648 test vectors, the cause table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcim/cause.h"
#include "mcim/log.h"
#include "mcim/role.h"
#include "mcim/util.h"

static void test_hex_roundtrip(void **state)
{
  (void)state;
  uint8_t out[4];
  assert_int_equal(mcim_hex_decode_str("DeadBEEF", out, 4), MCIM_OK);
  assert_memory_equal(out, "\xde\xad\xbe\xef", 4);
  char hex[9];
  mcim_hex_encode(out, 4, hex);
  assert_string_equal(hex, "deadbeef");
}

static void test_hex_errors(void **state)
{
  (void)state;
  uint8_t out[4];
  assert_int_equal(mcim_hex_decode_str("deadbee", out, 4), MCIM_BAD_LENGTH);
  assert_int_equal(mcim_hex_decode_str("deadbeefaa", out, 4), MCIM_BAD_LENGTH);
  assert_int_equal(mcim_hex_decode_str("deadbeeg", out, 4), MCIM_BAD_HEX);
  assert_int_equal(mcim_hex_decode_str("", out, 4), MCIM_BAD_LENGTH);
  assert_int_equal(mcim_hex_decode_str(NULL, out, 4), MCIM_INVALID_ARGUMENT);
}

/* RFC 4648 section 10 vectors, in the URL-safe alphabet without padding. */
static void test_b64url_rfc4648(void **state)
{
  (void)state;
  static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char out[16];
    size_t n = mcim_b64url_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
    assert_int_equal(n, strlen(enc[i]));
    assert_string_equal(out, enc[i]);
    uint8_t dec[16];
    size_t dlen = 0;
    assert_int_equal(mcim_b64url_decode(enc[i], strlen(enc[i]), dec, sizeof(dec), &dlen), MCIM_OK);
    assert_int_equal(dlen, strlen(plain[i]));
    assert_memory_equal(dec, plain[i], dlen);
  }
}

static void test_b64url_errors(void **state)
{
  (void)state;
  uint8_t dec[16];
  size_t dlen;
  assert_int_equal(mcim_b64url_decode("Z", 1, dec, sizeof(dec), &dlen), MCIM_BAD_BASE64);
  assert_int_equal(mcim_b64url_decode("Zm9=", 4, dec, sizeof(dec), &dlen), MCIM_BAD_BASE64);
  assert_int_equal(mcim_b64url_decode("Zm+v", 4, dec, sizeof(dec), &dlen), MCIM_BAD_BASE64);
  assert_int_equal(mcim_b64url_decode("Zh", 2, dec, sizeof(dec), &dlen), MCIM_BAD_BASE64);
  assert_int_equal(mcim_b64url_decode("Zm9vYmFy", 8, dec, 3, &dlen), MCIM_TOO_LARGE);
}

/* The decoder against the encoder and its alphabet, byte by byte: each of the 256 byte values
 * in each position of a full group and of a 2- and 3-character tail (only the 64 of the
 * alphabet decode, each to its own value), the tails' leftover bits (not zero: refused), and
 * round trips of every length up to 3 groups past the longest tail. */
static void test_b64url_alphabet(void **state)
{
  (void)state;
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t dec[16];
  size_t dlen;
  for (int b = 0; b < 256; b++) {
    const char *at = b != 0 ? strchr(alphabet, b) : NULL;
    int value = at ? (int)(at - alphabet) : -1;
    for (size_t len = 2; len <= 8; len++) {
      if (len % 4 == 1)
        continue;
      for (size_t pos = 0; pos < len; pos++) {
        char in[8];
        memset(in, 'A', sizeof(in));
        in[pos] = (char)b;
        /* in a tail, the last character's leftover bits: the value's low bits */
        bool tail_last = len % 4 != 0 && pos == len - 1;
        int low = len % 4 == 2 ? 0xf : 0x3;
        mcim_cause_t want = value < 0 || (tail_last && (value & low)) ? MCIM_BAD_BASE64 : MCIM_OK;
        assert_int_equal(mcim_b64url_decode(in, len, dec, sizeof(dec), &dlen), want);
        if (want != MCIM_OK)
          continue;
        char again[12];
        assert_int_equal(mcim_b64url_encode(dec, dlen, again), len);
        assert_memory_equal(again, in, len);
      }
    }
  }
  uint8_t plain[20], back[20];
  char enc[32];
  for (size_t len = 0; len <= sizeof(plain); len++) {
    for (size_t i = 0; i < len; i++)
      plain[i] = (uint8_t)(i * 37 + len * 11 + 5);
    size_t n = mcim_b64url_encode(plain, len, enc);
    assert_int_equal(mcim_b64url_decode(enc, n, back, sizeof(back), &dlen), MCIM_OK);
    assert_int_equal(dlen, len);
    assert_memory_equal(back, plain, len);
  }
}

static void test_cause_table(void **state)
{
  (void)state;
  assert_string_equal(mcim_cause_name(MCIM_MAC_FAILURE), "MAC_FAILURE");
  assert_int_equal(mcim_cause_from_name("SYNC_FAILURE"), MCIM_SYNC_FAILURE);
  assert_int_equal(mcim_cause_from_name("NO_SUCH_CAUSE"), -1);
  assert_int_equal(mcim_cause_http_status(MCIM_BAD_JSON), 400);
  assert_string_equal(mcim_cause_name((mcim_cause_t)9999), "UNKNOWN");
}

static void test_ct_equal(void **state)
{
  (void)state;
  assert_true(mcim_ct_equal("abcd", "abcd", 4));
  assert_false(mcim_ct_equal("abcd", "abce", 4));
}

/* A growing buffer keeps its bytes (the HTTP bodies grow with it); a size below what is
 * used is refused with the buffer left as it was. */
static void test_grow_wiped(void **state)
{
  (void)state;
  char *b = mcim_grow_wiped(NULL, 0, 4);
  assert_non_null(b);
  memcpy(b, "K=01", 4);
  char *g = mcim_grow_wiped(b, 4, 4096);
  assert_non_null(g);
  assert_memory_equal(g, "K=01", 4);
  assert_null(mcim_grow_wiped(g, 4, 3));
  assert_memory_equal(g, "K=01", 4);
  mcim_wipe(g, 4);
  free(g);
}

/* Nearest-rank percentiles and the median, as loadgen and the benches report them. */
static void test_percentiles(void **state)
{
  (void)state;
  double v[] = {5, 1, 4, 2, 3, 10, 9, 8, 7, 6};
  mcim_sort_doubles(v, 10);
  assert_true(v[0] == 1 && v[9] == 10);
  assert_true(mcim_percentile(v, 10, 50) == 5);
  assert_true(mcim_percentile(v, 10, 95) == 10);
  assert_true(mcim_percentile(v, 10, 1) == 1);
  assert_true(mcim_percentile(v, 0, 50) == 0);
  double odd[] = {3, 1, 2}, even[] = {4, 1, 3, 2};
  assert_true(mcim_median(odd, 3) == 2);
  assert_true(mcim_median(even, 4) == 2.5);
}

/* The outbox's retry budgets: a count of deliveries (the message's own, or the configured
 * one), or until record_retention for what a procedure cannot do without (the RO telling an
 * old SHO that was away: issue 8, point 7). */
/* A text log line: one line per event, its fields in order, control characters from the
 * message never a line of their own, an over-long message cut with its end of line kept. */
static void test_log_lines(void **state)
{
  (void)state;
  FILE *f = tmpfile();
  assert_non_null(f);
  mcim_log_init("sho-a", MCIM_LOG_TEXT, MCIM_LOG_DEBUG, f);
  mcim_log_event(MCIM_LOG_WARN, "0123456789abcdef0123456789abcdef", 9, MCIM_TIMEOUT,
                 "delivery to %s failed\nforged line", "pva");
  mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK, "plain");
  char *huge = malloc(3000);
  assert_non_null(huge);
  memset(huge, 'x', 2999);
  huge[2999] = '\0';
  mcim_log_event(MCIM_LOG_ERROR, "0123456789abcdef0123456789abcdef", 12, MCIM_INTERNAL, "%s", huge);
  free(huge);
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_WARN, NULL);
  rewind(f);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int n = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    n++;
    assert_int_equal(line[len - 1], '\n');
    if (n == 1) {
      assert_non_null(strstr(line, " warn   sho-a txn=0123456789abcdef0123456789abcdef step=9"
                                   " cause=TIMEOUT delivery to pva failed forged line\n"));
    } else if (n == 2) {
      assert_non_null(strstr(line, " info   sho-a plain\n"));
      assert_null(strstr(line, "txn="));
    } else {
      assert_non_null(strstr(line, " error  sho-a txn=0123456789abcdef0123456789abcdef step=12"
                                   " cause=INTERNAL xxxx"));
      assert_true(len > 1000 && len < 1536);
    }
  }
  assert_int_equal(n, 3);
  free(line);
  fclose(f);
}

/* mcim_random_id: ids from a buffer of the thread's, refilled past its 512 bytes; no two
 * alike (over several refills), the bytes handed out wiped; too long a request refused; a
 * forked child does not hand out what its parent will (the buffer is the parent's). */
static void test_random_id(void **state)
{
  (void)state;
  enum { N = 200 }; /* 200 x 16 bytes: six refills */
  static uint8_t ids[N][16];
  uint8_t big[65];
  for (int i = 0; i < N; i++)
    assert_int_equal(mcim_random_id(ids[i], sizeof(ids[i])), MCIM_OK);
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      assert_memory_not_equal(ids[i], ids[j], sizeof(ids[i]));
  assert_int_equal(mcim_random_id(big, sizeof(big)), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_random_id(NULL, 16), MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_random_id(big, 64), MCIM_OK);

  /* the parent's buffer holds its next ids: a child must not hand them out */
  int fds[2];
  uint8_t mine[16], childs[16] = {0};
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    uint8_t b[16];
    close(fds[0]);
    _exit(mcim_random_id(b, sizeof(b)) == MCIM_OK && write(fds[1], b, sizeof(b)) == sizeof(b) ? 0
                                                                                              : 1);
  }
  close(fds[1]);
  assert_int_equal(read(fds[0], childs, sizeof(childs)), (ssize_t)sizeof(childs));
  close(fds[0]);
  int status = -1;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(mcim_random_id(mine, sizeof(mine)), MCIM_OK);
  assert_memory_not_equal(mine, childs, sizeof(mine));
}

static void test_outbox_budget(void **state)
{
  (void)state;
  const int64_t day = 86400000, retention = 30 * day;
  /* the configured budget (max_attempts 0), then the message's own */
  assert_false(mcim_outbox_gives_up(7, 0, 8, 0, retention));
  assert_true(mcim_outbox_gives_up(8, 0, 8, 0, retention));
  assert_false(mcim_outbox_gives_up(8, 20, 8, 0, retention));
  assert_true(mcim_outbox_gives_up(20, 20, 8, 0, retention));
  /* until retention: the number of attempts does not matter, the age does; a day and
   * 1,440 attempts (the old fixed budget) are not the end of it */
  assert_false(mcim_outbox_gives_up(1440, MCIM_OUTBOX_UNTIL_RETENTION, 8, day, retention));
  assert_false(mcim_outbox_gives_up(40000, MCIM_OUTBOX_UNTIL_RETENTION, 8, retention - 1,
                                    retention));
  assert_true(mcim_outbox_gives_up(1, MCIM_OUTBOX_UNTIL_RETENTION, 8, retention, retention));
}

/* A 409 is done only when its cause says the receiver has the message (outbox.c). */
static void test_outbox_outcome(void **state)
{
  (void)state;
  assert_int_equal(mcim_outbox_outcome_for(200, MCIM_OK), MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(202, MCIM_OK), MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_CONFLICT), MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_REPLAY), MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_NOTICE_OVERTAKEN), MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_REGISTRATION_OVERTAKEN),
                   MCIM_OUTBOX_DELIVERED);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_WRONG_STATE), MCIM_OUTBOX_RETRY);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_DEVICE_BUSY), MCIM_OUTBOX_RETRY);
  /* no problem+json cause (the client's PEER_ERROR), or a cause of another status */
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_PEER_ERROR), MCIM_OUTBOX_RETRY);
  assert_int_equal(mcim_outbox_outcome_for(409, MCIM_OK), MCIM_OUTBOX_RETRY);
  assert_int_equal(mcim_outbox_outcome_for(403, MCIM_FORBIDDEN), MCIM_OUTBOX_REFUSED);
  assert_int_equal(mcim_outbox_outcome_for(404, MCIM_NOT_FOUND), MCIM_OUTBOX_REFUSED);
  assert_int_equal(mcim_outbox_outcome_for(503, MCIM_ORDER_NOT_STORED_YET), MCIM_OUTBOX_RETRY);
  assert_int_equal(mcim_outbox_outcome_for(502, MCIM_PEER_ERROR), MCIM_OUTBOX_RETRY);
  assert_int_equal(mcim_outbox_outcome_for(0, MCIM_TIMEOUT), MCIM_OUTBOX_RETRY);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hex_roundtrip),  cmocka_unit_test(test_hex_errors),
      cmocka_unit_test(test_b64url_rfc4648), cmocka_unit_test(test_b64url_errors),
      cmocka_unit_test(test_b64url_alphabet),
      cmocka_unit_test(test_cause_table),    cmocka_unit_test(test_ct_equal),
      cmocka_unit_test(test_percentiles),    cmocka_unit_test(test_outbox_budget),
      cmocka_unit_test(test_log_lines),      cmocka_unit_test(test_outbox_outcome),
      cmocka_unit_test(test_random_id),      cmocka_unit_test(test_grow_wiped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
