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
#include "trace/cast.h"

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

/* A procedure with nothing recorded yet (a live view's first poll): sorting it is a no-op
 * (UBSan: qsort must not get the NULL array). */
static void test_sort_empty(void **state)
{
  (void)state;
  struct mcim_trace t = {0};
  mcim_trace_sort(&t);
  assert_int_equal(t.len, 0);
  assert_null(t.ev);
}

static void test_sort_and_text(void **state)
{
  (void)state;
  struct mcim_trace t;
  fill(&t);
  mcim_trace_sort(&t);
  assert_int_equal(t.len, 4); /* the duplicate is gone */
  char *text = render(&t, MCIM_TRACE_TEXT);
  /* the seed's entities: dev1 talks to the VNO, so it is the M2ME */
  assert_string_equal(text, "4) M2ME -> VNO: attach (PCID)\n"
                            "5) VNO -> RO: ICF: AVs for PCID\n"
                            "13) RO -> M2ME: DPF: MCIM package\n"
                            "14) M2ME -> RO: DPF: install status [FAILED: MAC_FAILURE]\n");
  free(text);
  /* the stored body was redacted on the way in */
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(t.ev[1].body, "avs"), 0), "ck")),
                      "<redacted>");
  mcim_trace_free(&t);
}

/* A refused attempt and the retry that succeeded are two messages; the receiver's copy of the
 * retry is not a third. */
static void test_sort_keeps_retry_after_failure(void **state)
{
  (void)state;
  struct mcim_trace t;
  mcim_trace_init(&t);
  ev(&t, 0, "dev1", "sho-a", "attach (IMSI)", 100, MCIM_SUBSCRIPTION_NOT_ACTIVE, NULL);
  ev(&t, 0, "dev1", "sho-a", "attach (IMSI)", 101, MCIM_SUBSCRIPTION_NOT_ACTIVE, NULL);
  ev(&t, 0, "dev1", "sho-a", "attach (IMSI)", 300, MCIM_OK, NULL);
  ev(&t, 0, "dev1", "sho-a", "attach (IMSI)", 301, MCIM_OK, NULL);
  mcim_trace_sort(&t);
  assert_int_equal(t.len, 2);
  assert_int_equal(t.ev[0].cause, MCIM_SUBSCRIPTION_NOT_ACTIVE);
  assert_int_equal(t.ev[1].cause, MCIM_OK);
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
  /* fixed order, not first use: M2ME, VNO, RO */
  assert_non_null(strstr(m, "  participant m2me as M2ME (dev1)\n"
                            "  participant vno as VNO\n"
                            "  participant ro as RO\n"));
  assert_non_null(strstr(m, "  ro->>m2me: 13) DPF: MCIM package\n"));
  assert_non_null(strstr(m, "  m2me-xro: 14) DPF: install status [FAILED: MAC_FAILURE]\n"));
  free(m);
  mcim_trace_free(&t);
}

/* A change via the old SHO, events in the order they happened (first use would put the new
 * SHO second). */
static void fill_change(struct mcim_trace *t)
{
  mcim_trace_init(t);
  ev(t, 1, "subscriber", "sho-b", "order: M2ME parameters", 10, MCIM_OK, NULL);
  ev(t, 1, "sho-b", "ro", "DRF: order registered", 11, MCIM_OK, NULL);
  ev(t, 2, "subscriber", "dev7", "instruction: re-provision", 12, MCIM_OK, NULL);
  ev(t, 0, "dev7", "sho-a", "attach (IMSI)", 13, MCIM_OK, NULL);
  ev(t, 3, "sho-b", "pva", "validate M2ME", 14, MCIM_OK, NULL);
  ev(t, 7, "ro", "dev7", "DPF: MCIM package (atomic download)", 15, MCIM_OK, NULL);
  ev(t, 8, "dev7", "tre", "discard the old SHO's MCIM and AVs", 16, MCIM_OK, NULL);
  ev(t, 9, "dev7", "sho-a", "discard receipt", 17, MCIM_PEER_UNREACHABLE, NULL);
  ev(t, 0, "m2mes", "ro", "CCIF: renewed PCID to the ICF", 18, MCIM_OK, NULL);
}

static void test_cast_change(void **state)
{
  (void)state;
  struct mcim_trace t;
  struct mcim_trace_cast c;
  fill_change(&t);
  mcim_trace_cast_of(&t, NULL, &c);
  const char *order[] = {"subscriber", "dev7", "tre", "ro", "pva", "sho-a", "sho-b", "m2mes"};
  const char *labels[] = {"M2ME subscriber", "M2ME (dev7)", "TRE", "RO", "PVA",
                          "old SHO (sho-a)", "new SHO (sho-b)", "M2MES"};
  assert_int_equal(c.len, 8);
  for (size_t i = 0; i < 8; i++) {
    assert_string_equal(c.actor[i].name, order[i]);
    assert_string_equal(c.actor[i].label, labels[i]);
  }
  assert_string_equal(mcim_trace_cast_find(&c, "sho-b")->id, "newsho");
  assert_string_equal(mcim_trace_cast_find(&c, "sho-a")->id, "oldsho");
  assert_null(mcim_trace_cast_find(&c, "nobody"));

  char *text = render(&t, MCIM_TRACE_TEXT);
  assert_non_null(strstr(text, "1) M2ME subscriber -> new SHO (sho-b): order: M2ME parameters\n"));
  assert_non_null(strstr(text, "7) RO -> M2ME: DPF: MCIM package (atomic download)\n"));
  assert_non_null(strstr(text, "8) M2ME -> TRE: discard the old SHO's MCIM and AVs\n"));
  assert_non_null(strstr(text, "9) M2ME -> old SHO (sho-a): discard receipt [FAILED: PEER_UNREACHABLE]\n"));
  assert_non_null(strstr(text, "-) M2ME -> old SHO (sho-a): attach (IMSI)\n"));
  free(text);
  char *msc = render(&t, MCIM_TRACE_MSC);
  assert_non_null(strstr(msc, "subscriber [label=\"M2ME subscriber\"], m2me [label=\"M2ME (dev7)\"]"));
  assert_non_null(strstr(msc, "  m2me -x oldsho [label=\"9) discard receipt [FAILED: PEER_UNREACHABLE]\", "
                              "textcolour=\"red\", linecolour=\"red\"];\n"));
  assert_non_null(strstr(msc, "  ro => m2me [label=\"7) DPF: MCIM package (atomic download)\"];\n"));
  free(msc);
  char *m = render(&t, MCIM_TRACE_MERMAID);
  assert_non_null(strstr(m, "  actor subscriber as M2ME subscriber\n"));
  assert_non_null(strstr(m, "  participant oldsho as old SHO (sho-a)\n"
                            "  participant newsho as new SHO (sho-b)\n"
                            "  participant m2mes as M2MES\n"));
  free(m);
  /* JSON stays raw: lab names (DESIGN.md section 8) */
  char *j = render(&t, MCIM_TRACE_JSON);
  assert_non_null(strstr(j, "\"from\": \"dev7\""));
  assert_non_null(strstr(j, "\"to\": \"sho-a\""));
  assert_null(strstr(j, "old SHO ("));
  assert_null(strstr(j, "\"M2ME\""));
  free(j);
  mcim_trace_free(&t);
}

static void test_cast_switch_and_unknown(void **state)
{
  (void)state;
  struct mcim_trace t;
  struct mcim_trace_cast c;
  /* a switch: no order; the SHO told to resume is the new one, the other the current one */
  mcim_trace_init(&t);
  ev(&t, 2, "subscriber", "d", "instruction: switch to the pre-provisioned MCIM", 1, MCIM_OK, NULL);
  ev(&t, 0, "d", "x-op", "notification: suspend the subscription of slot x-op", 2, MCIM_OK, NULL);
  ev(&t, 0, "d", "y-op", "notification: resume the subscription of slot y-op", 3, MCIM_OK, NULL);
  ev(&t, 0, "d", "tre", "activate the pre-provisioned MCIM", 4, MCIM_OK, NULL);
  mcim_trace_cast_of(&t, NULL, &c);
  assert_int_equal(c.len, 5);
  assert_string_equal(mcim_trace_cast_find(&c, "y-op")->label, "new SHO (y-op)");
  assert_string_equal(mcim_trace_cast_find(&c, "x-op")->label, "current SHO (x-op)");
  assert_string_equal(mcim_trace_cast_find(&c, "d")->term, "M2ME");
  mcim_trace_free(&t);

  /* nothing to tell who is who: names as they are; other procedures are ignored */
  mcim_trace_init(&t);
  ev(&t, 0, "alpha", "beta", "hello", 1, MCIM_OK, NULL);
  struct mcim_trace_event other = t.ev[0];
  snprintf(other.txn, sizeof(other.txn), "ffffffffffffffffffffffffffffffff");
  snprintf(other.from, sizeof(other.from), "gamma");
  other.body = NULL;
  assert_int_equal(mcim_trace_add(&t, &other), MCIM_OK);
  mcim_trace_cast_of(&t, "00112233445566778899aabbccddeeff", &c);
  assert_int_equal(c.len, 2);
  assert_string_equal(c.actor[0].label, "alpha");
  assert_string_equal(c.actor[0].id, "x1");
  assert_string_equal(c.actor[1].id, "x2");
  mcim_trace_free(&t);

  /* more names than lifelines: the last one stands for the rest, nothing is lost */
  mcim_trace_init(&t);
  for (int i = 0; i < 40; i++) {
    char a[16], b[16];
    snprintf(a, sizeof(a), "n%d", i);
    snprintf(b, sizeof(b), "n%d", i + 1);
    ev(&t, 0, a, b, "m", i, MCIM_OK, NULL);
  }
  mcim_trace_cast_of(&t, NULL, &c);
  assert_int_equal(c.len, MCIM_TRACE_MAX_ACTORS);
  assert_string_equal(mcim_trace_cast_find(&c, "n39")->id, "others");
  char *m = render(&t, MCIM_TRACE_MERMAID);
  assert_non_null(strstr(m, "  x1->>x2: m\n"));
  assert_non_null(strstr(m, "  others->>others: m\n"));
  free(m);
  char *text = render(&t, MCIM_TRACE_TEXT);
  assert_non_null(strstr(text, "-) n39 -> n40: m\n"));
  free(text);
  mcim_trace_free(&t);
}

static void test_msc_accepted_by_mscgen(void **state)
{
  (void)state;
  /* mscgen is a dependency (scripts/deps.sh installs it): missing, the test fails, it does
   * not skip (a skip counts as a pass) */
  if (system("command -v mscgen >/dev/null 2>&1") != 0)
    fail_msg("mscgen is missing (scripts/deps.sh installs it)");
  struct mcim_trace t;
  fill_change(&t);
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
      cmocka_unit_test(test_sort_empty),
      cmocka_unit_test(test_sort_and_text),
      cmocka_unit_test(test_sort_keeps_retry_after_failure),
      cmocka_unit_test(test_mermaid),
      cmocka_unit_test(test_cast_change),
      cmocka_unit_test(test_cast_switch_and_unknown),
      cmocka_unit_test(test_msc_accepted_by_mscgen),
      cmocka_unit_test(test_event_json_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
