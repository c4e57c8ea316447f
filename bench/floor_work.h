/* The price of the work a procedure does besides its cryptography (bench_floor's "design
 * floor"): an HTTP exchange on a kept connection, a store statement, a commit, a synced file
 * write. Counted per procedure by `mcim loadgen` (its report's work_per_procedure,
 * include/mcim/opcount.h), priced here with mcim's own code, one thread, CPU time. */
#ifndef MCIM_BENCH_FLOOR_WORK_H
#define MCIM_BENCH_FLOOR_WORK_H

#include <jansson.h>
#include <stdint.h>

#include "mcim/http.h"
#include "mcim/store.h"

struct floor_work {
  struct mcim_http_lite *cli; /* a kept-alive connection to the bench's server */
  char url[160];              /* its POST /v1/echo */
  mcim_store_t *st;           /* the roles' settings (SQLite: WAL, synchronous = FULL) */
  int fd;                     /* a TRE-like file written in place and synced */
  double server_ns;           /* the server's CPU per exchange in the last op_exchange */
  int64_t next_id;
};

/* CPU time of this thread and of the process, ns (what every op of bench_floor counts). */
int64_t bench_thread_ns(void);
int64_t bench_process_ns(void);

/* The bench server's POST /v1/echo: what every handler does at the least (the body parsed by
 * the server, an answer of a few fields built and sent). */
void floor_work_echo(void *ctx, const struct mcim_http_request *req,
                     struct mcim_http_response *resp);

/* `dir`: a private folder for the file (and the database when `locator` is NULL: SQLite,
 * dir/floor.db); `locator`: another store (mcim_store_open's), its table floor_rows made
 * and emptied; `url_base`: https://host:port. */
mcim_cause_t floor_work_setup(struct floor_work *w, const char *dir, const char *locator,
                              const char *url_base, struct mcim_http_lite *cli);
void floor_work_teardown(struct floor_work *w);

/* Each: n operations, the client thread's CPU ns (-1 on failure). */
int64_t floor_op_exchange(struct floor_work *w, int n);        /* + w->server_ns */
int64_t floor_op_statement(struct floor_work *w, int n);       /* SELECT by key */
int64_t floor_op_txn_durable(struct floor_work *w, int n);     /* BEGIN, INSERT, COMMIT */
int64_t floor_op_txn_relaxed(struct floor_work *w, int n);     /* the same, relaxed */
int64_t floor_op_synced_write(struct floor_work *w, int n);    /* pwrite 4 KiB, fdatasync */

/* ---- the design floor (bench_floor --counts): the crypto floor plus the work a procedure
 * does besides, each unit priced alone and counted by loadgen in the same run ---- */
enum { W_HTTP, W_STMT, W_DURABLE, W_RELAXED, W_FSYNC, FLOOR_NWORK };

/* The medians of the ops above, ns: what the units' prices are made of. */
struct floor_medians {
  double exch_client, exch_server, statement, txn_durable, txn_relaxed, synced_write;
};

/* ns per unit into price[FLOOR_NWORK], printed: an exchange both ends; a commit without its
 * one statement (counted apart). */
void floor_work_prices(struct floor_medians m, double *price);
/* {unit: us} */
json_t *floor_work_report(const double *price);
/* With a loadgen report `doc` (its work_per_procedure): the design floor printed, and its
 * figures added to `out`. `crypto_ms`: the crypto floor of the same counts. */
void floor_design(const json_t *doc, const double *price, double crypto_ms, long cores,
                  json_t *out);

#endif
