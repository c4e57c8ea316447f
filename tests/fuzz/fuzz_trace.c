/* Trace records as `mcim trace` reads them (src/lab/collect.c, src/cli/cmd_trace.c): a role's
 * or an agent's answer to GET /v1/admin/trace/{txn} as the client parses it
 * (mcim_http_result_from_answer_), its events through mcim_trace_add_answer
 * (mcim_trace_event_from_json: the fields, their lengths, n, time, the cause by name, the
 * body redacted), added twice (the sender's and the receiver's copies of one message, which
 * the merge drops), then mcim_trace_sort and every chart (mcim_trace_render: text, msc,
 * mermaid, json; the cast of src/trace/cast.c), for every event and for the first event's
 * procedure. The agent's rows come from its agent.db (the trace table, mcim_trace_store_load:
 * src/device/store.c dev_trace_load): a mode puts the input's rows into that table of an
 * SQLite store on tmpfs as they are, so what a damaged or tampered agent.db holds reaches
 * the same path.
 *
 * Input: one mode byte; bit 0 clear: the bytes of the answer; bit 0 set: rows separated by
 * 0x1e (at most 16), each: step (1 byte, signed), time (8 bytes, big-endian), then txn, from,
 * to, msg, cause and body (the body column's text) separated by NUL bytes (a missing one is
 * NULL); each rows' txn is then asked once.
 * Seeds: tests/fuzz/corpus/fuzz_trace/ (answers of the roles and an agent of a lab run). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/store.h"
#include "mcim/trace.h"
#include "mcim/trace_store.h"
#include "net/http_priv.h"

#define MAX_ROWS 16

static mcim_store_t *store;
static FILE *sink;

/* The agent's trace table (src/device/store.c, migration 1). */
static const char trace_sql[] =
    "CREATE TABLE trace (id TEXT PRIMARY KEY, txn TEXT NOT NULL, step BIGINT NOT NULL,"
    " from_name TEXT NOT NULL, to_name TEXT NOT NULL, msg TEXT NOT NULL,"
    " time_us BIGINT NOT NULL, cause TEXT, body TEXT);"
    "CREATE INDEX trace_txn ON trace (txn, time_us);";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  char *dir = fuzz_tmpdir("trace");
  char db[1024];
  snprintf(db, sizeof(db), "sqlite:%s/agent.db", dir);
  static const mcim_migration_t steps[] = {{1, "trace", trace_sql}};
  if (mcim_store_open(db, NULL, &store) != MCIM_OK ||
      mcim_store_migrate(store, "agent", steps, 1) != MCIM_OK)
    fuzz_die("the agent's store");
  sink = fopen("/dev/null", "w");
  if (!sink)
    fuzz_die("/dev/null");
  free(dir);
  return 0;
}

/* The next NUL-terminated field of [*p, end), NULL when none is left. */
static const char *field(char **p, char *end)
{
  if (*p >= end)
    return NULL;
  char *s = *p;
  *p += strlen(s) + 1;
  return s;
}

/* One row of the agent's trace table, as it is; false when the store refuses it. */
static bool put_row(char *row, size_t len, int n)
{
  uint8_t head[9] = {0};
  memcpy(head, row, len < sizeof(head) ? len : sizeof(head));
  int64_t time_us = 0;
  for (int i = 1; i < 9; i++)
    time_us = (int64_t)((uint64_t)time_us << 8 | head[i]);
  char *p = row + (len < sizeof(head) ? len : sizeof(head)), *end = row + len;
  const char *txn = field(&p, end), *from = field(&p, end), *to = field(&p, end);
  const char *msg = field(&p, end), *cause = field(&p, end), *body = field(&p, end);
  char id[16];
  snprintf(id, sizeof(id), "%d", n);
  mcim_val_t v[] = {MCIM_TEXT(id),      MCIM_TEXT(txn ? txn : ""), MCIM_INT((int8_t)head[0]),
                    MCIM_TEXT(from ? from : ""), MCIM_TEXT(to ? to : ""),
                    MCIM_TEXT(msg ? msg : ""),   MCIM_INT(time_us),
                    MCIM_TEXT(cause && *cause ? cause : NULL), MCIM_TEXT(body)};
  return mcim_store_exec(store,
                         "INSERT INTO trace (id, txn, step, from_name, to_name, msg, time_us,"
                         " cause, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         v, MCIM_NPARAMS(v), NULL, NULL) == MCIM_OK;
}

/* The answer of the agent's GET /v1/admin/trace/{txn} (src/device/control.c h_trace) for
 * the rows of the input: every row's txn is asked in turn, as `mcim trace` asks for one. */
static json_t *agent_answer(const uint8_t *data, size_t size)
{
  char *buf = malloc(size + 1), *rows[MAX_ROWS];
  size_t lens[MAX_ROWS], nrows = 0;
  json_t *all = json_array();
  if (!buf || !all)
    fuzz_die("out of memory");
  memcpy(buf, data, size);
  buf[size] = '\0';
  char *p = buf, *end = buf + size;
  while (p <= end && nrows < MAX_ROWS) {
    char *sep = memchr(p, 0x1e, (size_t)(end - p));
    char *stop = sep ? sep : end;
    *stop = '\0';
    rows[nrows] = p;
    lens[nrows++] = (size_t)(stop - p);
    p = stop + 1;
  }
  if (mcim_store_exec(store, "DELETE FROM trace", NULL, 0, NULL, NULL) != MCIM_OK)
    fuzz_die("the agent's store");
  for (size_t i = 0; i < nrows; i++)
    (void)put_row(rows[i], lens[i], (int)i);
  for (size_t i = 0; i < nrows; i++) {
    json_t *events = NULL;
    const char *txn = lens[i] > 9 ? rows[i] + 9 : "";
    bool asked = false; /* each procedure once */
    for (size_t k = 0; k < i && !asked; k++)
      asked = strcmp(lens[k] > 9 ? rows[k] + 9 : "", txn) == 0;
    if (!asked && mcim_trace_store_load(store, txn, &events) == MCIM_OK)
      json_array_extend(all, events);
    json_decref(events);
  }
  free(buf);
  return json_pack("{s:s,s:s,s:o}", "role", FUZZ_DEVICE, "txid", FUZZ_TXN, "events", all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  struct mcim_http_result res;
  memset(&res, 0, sizeof(res));
  json_t *answer = NULL;
  if (mode & 1) {
    answer = agent_answer(data, size);
  } else {
    /* the client keeps the body as it came, in a buffer of its own */
    char *body = fuzz_strndup(data, size);
    mcim_http_result_from_answer_(&res, 200, body, size, "https://127.0.0.1:8443/v1/admin/trace/x");
    free(body);
    answer = json_incref(res.json);
  }
  struct mcim_trace t;
  mcim_trace_init(&t);
  size_t n1 = mcim_trace_add_answer(&t, answer);
  size_t n2 = mcim_trace_add_answer(&t, answer);
  if (n1 != n2)
    fuzz_die("the same answer read twice gave two numbers of events");
  mcim_trace_sort(&t);
  if (t.len > n1 + n2)
    fuzz_die("the merge added events");
  char first[sizeof(t.ev[0].txn)] = "";
  if (t.len)
    memcpy(first, t.ev[0].txn, sizeof(first));
  for (int f = MCIM_TRACE_TEXT; f <= MCIM_TRACE_JSON; f++) {
    (void)mcim_trace_render(&t, NULL, (enum mcim_trace_format)f, sink);
    (void)mcim_trace_render(&t, first, (enum mcim_trace_format)f, sink);
  }
  mcim_trace_free(&t);
  json_decref(answer);
  mcim_http_result_clear(&res);
  return 0;
}
