/* The price of a procedure's work besides its cryptography: bench/floor_work.h. Each op does
 * what mcim's code does for that unit of work, through the same calls, with nothing of a
 * role's own logic: the least any implementation of this design pays per unit. */
#include "floor_work.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mcim/util.h"

int64_t bench_thread_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_process_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void floor_work_echo(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp)
{
  (void)ctx;
  const char *txn = json_string_value(json_object_get(req->json, "txn"));
  if (!txn || !json_is_string(json_object_get(req->json, "statement"))) {
    mcim_http_reply_json(resp, 400, json_pack("{s:s}", "title", "no txn or statement"));
    return;
  }
  mcim_http_reply_json(resp, 200, json_pack("{s:s,s:s,s:i}", "txn", txn, "state", "accepted",
                                            "step", 7));
}

/* A request of the usual shape: a txn and a signed statement (a compact JWS of ~900
 * characters, as an order or a device's request is). */
static json_t *request_body(void)
{
  char statement[901];
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < sizeof(statement) - 1; i++) {
    statement[i] = b64[(i * 7) % 64];
    if (i == 36 || i == 600) /* header.payload.signature */
      statement[i] = '.';
  }
  statement[sizeof(statement) - 1] = '\0';
  return json_pack("{s:s,s:s}", "txn", "0123456789abcdef0123456789abcdef", "statement",
                   statement);
}

int64_t floor_op_exchange(struct floor_work *w, int n)
{
  json_t *body = request_body();
  int64_t p0 = bench_process_ns(), t0 = bench_thread_ns();
  int64_t client = -1;
  if (!body)
    return -1;
  for (int i = 0; i < n; i++) {
    struct mcim_http_result res;
    mcim_cause_t rc = mcim_http_lite_request(w->cli, "POST", w->url, body, NULL, &res);
    bool ok = rc == MCIM_OK && res.status == 200 &&
              json_is_string(json_object_get(res.json, "state"));
    mcim_http_result_clear(&res);
    if (!ok)
      goto done;
  }
  client = bench_thread_ns() - t0;
  w->server_ns = (double)(bench_process_ns() - p0 - client) / n;
done:
  json_decref(body);
  return client;
}

static const char insert_sql[] = "INSERT INTO floor_rows (id, txn, body) VALUES (?, ?, ?)";

int64_t floor_op_statement(struct floor_work *w, int n)
{
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    int64_t len = 0;
    mcim_val_t k[] = {MCIM_INT(1)};
    if (mcim_store_query_int(w->st, "SELECT length(body) FROM floor_rows WHERE id = ?", k, 1,
                             &len) != MCIM_OK ||
        len <= 0)
      return -1;
  }
  return bench_thread_ns() - t0;
}

/* BEGIN, one INSERT of a row of the usual size (a procedure's state, ~300 bytes), COMMIT. */
static mcim_cause_t one_txn(struct floor_work *w, bool relaxed)
{
  static const uint8_t row[300] = {'{'};
  mcim_val_t v[] = {MCIM_INT(++w->next_id), MCIM_TEXT("0123456789abcdef0123456789abcdef"),
                    MCIM_BLOB(row, sizeof(row))};
  mcim_cause_t rc = relaxed ? mcim_store_begin_relaxed(w->st) : mcim_store_begin(w->st);
  if (rc != MCIM_OK)
    return rc;
  rc = mcim_store_exec(w->st, insert_sql, v, 3, NULL, NULL);
  if (rc != MCIM_OK) {
    (void)mcim_store_rollback(w->st);
    return rc;
  }
  return mcim_store_commit(w->st);
}

static int64_t txns(struct floor_work *w, int n, bool relaxed)
{
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++)
    if (one_txn(w, relaxed) != MCIM_OK)
      return -1;
  return bench_thread_ns() - t0;
}

int64_t floor_op_txn_durable(struct floor_work *w, int n)
{
  return txns(w, n, false);
}

int64_t floor_op_txn_relaxed(struct floor_work *w, int n)
{
  return txns(w, n, true);
}

/* As the software TRE writes a slot: in place, then fdatasync (src/tre/tre_store.c). */
int64_t floor_op_synced_write(struct floor_work *w, int n)
{
  uint8_t block[4096];
  memset(block, 0x5a, sizeof(block));
  int64_t t0 = bench_thread_ns();
  for (int i = 0; i < n; i++) {
    block[0] = (uint8_t)i;
    if (pwrite(w->fd, block, sizeof(block), 0) != (ssize_t)sizeof(block) ||
        fdatasync(w->fd) != 0)
      return -1;
  }
  return bench_thread_ns() - t0;
}

mcim_cause_t floor_work_setup(struct floor_work *w, const char *dir, const char *locator,
                              const char *url_base, struct mcim_http_lite *cli)
{
  char path[256];
  mcim_cause_t rc;
  memset(w, 0, sizeof(*w));
  w->fd = -1;
  w->cli = cli;
  if (snprintf(w->url, sizeof(w->url), "%s/v1/echo", url_base) >= (int)sizeof(w->url))
    return MCIM_INVALID_ARGUMENT;
  snprintf(path, sizeof(path), "%s/floor.db", dir);
  rc = mcim_store_open(locator ? locator : path, NULL, &w->st);
  /* the types the roles' migrations use, which both backends take */
  if (rc == MCIM_OK)
    rc = mcim_store_exec_script(w->st, "CREATE TABLE IF NOT EXISTS floor_rows (id BIGINT PRIMARY"
                                       " KEY, txn TEXT NOT NULL, body BYTEA NOT NULL);"
                                       "DELETE FROM floor_rows");
  if (rc == MCIM_OK)
    rc = one_txn(w, false); /* row 1, what floor_op_statement reads */
  snprintf(path, sizeof(path), "%s/tre-slot", dir);
  if (rc == MCIM_OK && (w->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
    rc = MCIM_IO_ERROR;
  return rc;
}

void floor_work_teardown(struct floor_work *w)
{
  mcim_store_close(w->st);
  w->st = NULL;
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
}

/* ---- the design floor: the crypto floor plus the work a procedure does besides, each unit
 * priced alone (floor_work.c) and counted by loadgen in the same run (work_per_procedure).
 * It is what this design costs if its messages, commits and statements had no code of their
 * own: no JSON of a role's, no trace row, no log line, no thread hand-off. */
static const char *const work_names[FLOOR_NWORK] = {
    "http_requests", "store_statements", "store_commits_durable", "store_commits_relaxed",
    "tre_synced_writes"};

/* ns per unit: an exchange both ends; a commit without its one statement (counted apart). */
void floor_work_prices(struct floor_medians m, double *price)
{
  price[W_HTTP] = m.exch_client + m.exch_server;
  price[W_STMT] = m.statement;
  price[W_DURABLE] = m.txn_durable > m.statement ? m.txn_durable - m.statement : 0;
  price[W_RELAXED] = m.txn_relaxed > m.statement ? m.txn_relaxed - m.statement : 0;
  price[W_FSYNC] = m.synced_write;
  printf("design floor's units (mcim's own calls, one thread, CPU):\n");
  printf("  %-22s %8.1f us  (POST of a ~1 KiB JSON statement on a kept TLS connection to the "
         "roles' server, the agent's client; client %.1f + server %.1f)\n",
         work_names[W_HTTP], price[W_HTTP] / 1e3, m.exch_client / 1e3, m.exch_server / 1e3);
  printf("  %-22s %8.1f us  (a SELECT by key, SQLite, prepared)\n", work_names[W_STMT],
         price[W_STMT] / 1e3);
  printf("  %-22s %8.1f us  (BEGIN, INSERT of 300 bytes, COMMIT with its fdatasync, minus one "
         "statement)\n",
         work_names[W_DURABLE], price[W_DURABLE] / 1e3);
  printf("  %-22s %8.1f us  (the same, synchronous = NORMAL)\n", work_names[W_RELAXED],
         price[W_RELAXED] / 1e3);
  printf("  %-22s %8.1f us  (pwrite of 4 KiB in place, fdatasync)\n", work_names[W_FSYNC],
         price[W_FSYNC] / 1e3);
}

json_t *floor_work_report(const double *price)
{
  json_t *j = json_object();
  for (int i = 0; i < FLOOR_NWORK; i++)
    json_object_set_new(j, work_names[i], json_real(price[i] / 1e3));
  return j;
}

void floor_design(const json_t *doc, const double *price, double crypto_ms, long cores,
                  json_t *out)
{
  const json_t *work = json_object_get(doc, "work_per_procedure");
  double work_ns = 0;
  if (!json_is_object(work)) {
    printf("(no work_per_procedure in the counts: no design floor)\n");
    return;
  }
  printf("design floor: the crypto floor and, per procedure,\n");
  json_t *jc = json_object();
  for (int i = 0; i < FLOOR_NWORK; i++) {
    double n = json_number_value(json_object_get(work, work_names[i]));
    work_ns += n * price[i];
    printf("  %-22s %8.2f x %7.1f us = %7.1f us\n", work_names[i], n, price[i] / 1e3,
           n * price[i] / 1e3);
    json_object_set_new(jc, work_names[i], json_real(n));
  }
  double ms = crypto_ms + work_ns / 1e6, rate = ms > 0 ? (double)cores * 1000.0 / ms : 0;
  printf("design floor: %.2f ms of CPU per procedure (crypto %.2f, the rest %.2f); %.0f "
         "procedures/s on %ld cores\n",
         ms, crypto_ms, work_ns / 1e6, rate, cores);
  double cpu_ms = json_number_value(json_object_get(json_object_get(doc, "cpu"),
                                                    "per_procedure_ms"));
  if (cpu_ms > 0 && ms > 0)
    printf("that loadgen run: %.1f ms CPU per procedure = %.2f x the design floor\n", cpu_ms,
           cpu_ms / ms);
  json_object_set_new(out, "work_counts", jc);
  json_object_set_new(out, "design_floor_ms_per_procedure", json_real(ms));
  json_object_set_new(out, "design_floor_per_s", json_real(rate));
  if (cpu_ms > 0 && ms > 0)
    json_object_set_new(out, "run_cpu_x_design_floor", json_real(cpu_ms / ms));
}
