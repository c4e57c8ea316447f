/* Trace events: redaction, merge order, renderers (golden text; mscgen accepts the msc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/trace.h"

static void ev(struct mcim_trace *t, int n, const char *from, const char *to, const char *msg,
               int64_t time, mcim_cause_t cause, json_t *body)
{
  struct mcim_trace_event e = {0};
  snprintf(e.txn, sizeof(e.txn), "%s", "00112233445566778899aabbccddeeff");
  e.n = n;
  snprintf(e.from, sizeof(e.from), "%s", from);
  snprintf(e.to, sizeof(e.to), "%s", to);
  snprintf(e.msg, sizeof(e.msg), "%s", msg);
  e.time_us = time;
  e.cause = cause;
  e.body = body;
  assert_int_equal(mcim_trace_add(t, &e), MCIM_OK);
  json_decref(body);
}

static void fill(struct mcim_trace *t)
{
  mcim_trace_init(t);
  ev(t, 13, "ro", "dev1", "DPF: MCIM package", 300, MCIM_OK, NULL);
  ev(t, 4, "dev1", "vno", "attach (PCID)", 100, MCIM_OK, json_pack("{s:s}", "pcid", "001010000000001"));
  ev(t, 5, "vno", "ro", "ICF: AVs for PCID", 200, MCIM_OK,
     json_pack("{s:[{s:s,s:s}]}", "avs", "ck", "00ff", "rand", "1234"));
  ev(t, 5, "vno", "ro", "ICF: AVs for PCID", 201, MCIM_OK, NULL); /* receiver's copy */
  ev(t, 14, "dev1", "ro", "DPF: install status", 400, MCIM_MAC_FAILURE, NULL);
}

static void test_redact(void **state)
{
  (void)state;
  json_t *body = json_pack("{s:s,s:s,s:{s:s,s:s},s:[{s:s}]}", "imsi", "001020000000001", "k",
                           "000102030405060708090a0b0c0d0e0f", "mcim", "opc", "aa", "amf", "8000",
                           "avs", "ik", "bb");
  json_t *r = mcim_trace_redact(body);
  char *s = json_dumps(r, JSON_SORT_KEYS | JSON_COMPACT);
  assert_string_equal(s, "{\"avs\":[{\"ik\":\"<redacted>\"}],\"imsi\":\"001020000000001\","
                         "\"k\":\"<redacted>\",\"mcim\":{\"amf\":\"8000\",\"opc\":\"<redacted>\"}}");
  free(s);
  json_decref(r);
  json_decref(body);
}

static char *render(const struct mcim_trace *t, enum mcim_trace_format fmt)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  assert_int_equal(mcim_trace_render(t, NULL, fmt, f), MCIM_OK);
  fclose(f);
  return buf;
}

static void test_sort_and_text(void **state)
{
  (void)state;
  struct mcim_trace t;
  fill(&t);
  mcim_trace_sort(&t);
  assert_int_equal(t.len, 4); /* the duplicate is gone */
  char *text = render(&t, MCIM_TRACE_TEXT);
  assert_string_equal(text, "4) dev1 -> vno: attach (PCID)\n"
                            "5) vno -> ro: ICF: AVs for PCID\n"
                            "13) ro -> dev1: DPF: MCIM package\n"
                            "14) dev1 -> ro: DPF: install status  [FAILED: MAC_FAILURE]\n");
  free(text);
  /* the stored body was redacted on the way in */
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(t.ev[1].body, "avs"), 0), "ck")),
                      "<redacted>");
  mcim_trace_free(&t);
}

static void test_mermaid(void **state)
{
  (void)state;
  struct mcim_trace t;
  fill(&t);
  mcim_trace_sort(&t);
  char *m = render(&t, MCIM_TRACE_MERMAID);
  assert_non_null(strstr(m, "sequenceDiagram\n"));
  assert_non_null(strstr(m, "participant p0 as dev1\n"));
  assert_non_null(strstr(m, "p2->>p0: 13) DPF: MCIM package\n"));
  assert_non_null(strstr(m, "p0-xp2: 14) DPF: install status (FAILED: MAC_FAILURE)\n"));
  free(m);
  mcim_trace_free(&t);
}

static void test_msc_accepted_by_mscgen(void **state)
{
  (void)state;
  if (system("command -v mscgen >/dev/null 2>&1") != 0)
    skip();
  struct mcim_trace t;
  fill(&t);
  mcim_trace_sort(&t);
  char dir[] = "/tmp/mcim-trace-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char in[128], out[128], cmd[512];
  snprintf(in, sizeof(in), "%s/t.msc", dir);
  snprintf(out, sizeof(out), "%s/t.svg", dir);
  FILE *f = fopen(in, "w");
  assert_non_null(f);
  assert_int_equal(mcim_trace_render(&t, NULL, MCIM_TRACE_MSC, f), MCIM_OK);
  fclose(f);
  snprintf(cmd, sizeof(cmd), "mscgen -T svg -i %s -o %s 2>&1 && grep -q '<svg' %s", in, out, out);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
  mcim_trace_free(&t);
}

static void test_event_json_roundtrip(void **state)
{
  (void)state;
  struct mcim_trace t;
  fill(&t);
  json_t *j = mcim_trace_event_to_json(&t.ev[4]);
  struct mcim_trace_event e;
  assert_int_equal(mcim_trace_event_from_json(j, &e), MCIM_OK);
  assert_int_equal(e.n, 14);
  assert_int_equal(e.cause, MCIM_MAC_FAILURE);
  assert_string_equal(e.msg, "DPF: install status");
  json_decref(j);
  json_t *bad = json_pack("{s:s,s:i}", "txid", "x", "n", 3);
  assert_int_equal(mcim_trace_event_from_json(bad, &e), MCIM_FIELD_MISSING);
  json_decref(bad);
  mcim_trace_free(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redact),
      cmocka_unit_test(test_sort_and_text),
      cmocka_unit_test(test_mermaid),
      cmocka_unit_test(test_msc_accepted_by_mscgen),
      cmocka_unit_test(test_event_json_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
