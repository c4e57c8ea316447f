/* Shared by the small HTTP client's files (http_lite.c: the client, a call, the request;
 * http_lite_conn.c: sockets, TLS and the kept connections; http_lite_answer.c: the exchange
 * on a connection and the answer's parsing). Not part of the library's interface:
 * include/mcim/http.h is. */
#ifndef MCIM_NET_HTTP_LITE_PRIV_H
#define MCIM_NET_HTTP_LITE_PRIV_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/http.h"

#define MAX_ANSWER (1u << 20) /* as the curl client */
#define HEAD_MAX 65536
#define LITE_CONNS 8

struct lite_conn {
  char key[400]; /* "peer@host:port" (or "host:port" for no pinned name); "" = free slot */
  int fd;
  SSL *ssl;      /* NULL: plain HTTP (Unix socket) */
  uint64_t used; /* LRU stamp */
};

struct mcim_http_lite {
  struct mcim_http_client_cfg cfg;
  char *unix_path, *ca_file, *cert_file, *key_file;
  SSL_CTX *ctx; /* made at the first https call */
  struct lite_conn conns[LITE_CONNS];
  uint64_t tick;
  int prefer_wait_s; /* the next request's Prefer: wait (mcim_http_lite_prefer_wait) */
  int stop_fd;       /* eventfd, readable once mcim_http_lite_interrupt was called */
  atomic_bool interrupted;
};

/* One call in progress. */
struct call {
  struct mcim_http_lite *cli;
  struct lite_conn *c;
  const char *peer;     /* the server certificate's CN must be this (NULL: any the CA signed) */
  uint64_t deadline_ms; /* monotonic */
  char *buf;            /* what was read of the answer */
  size_t len, cap, pos;
  mcim_cause_t cause; /* of a failure */
  char why[200];      /* for people */
};

/* The answer's head: status, and what says where its body ends. */
struct answer_head {
  int status;
  bool http10, close, chunked, has_length;
  unsigned long long length;
  bool bearer;           /* a WWW-Authenticate: Bearer challenge (RFC 6750 3) */
  char bearer_error[24]; /* its error="..." code, "" if none (or not a plain token) */
  char challenge[64];    /* the first WWW-Authenticate as it came (truncated) */
};

/* http_lite.c: a call's failure, its cause and words for people (k->cause, k->why) */
void lite_fail(struct call *k, mcim_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* http_lite.c: wait until `fd` is ready for `events`: 1 ready, 0 timed out or interrupted */
int lite_wait_fd(struct call *k, int fd, short events);
/* http_lite.c: past the deadline (k says so: timed out or interrupted) */
bool lite_timed_out(struct call *k);

/* http_lite_conn.c: the last OpenSSL error, for people */
const char *lite_ssl_reason(char *buf, size_t len);
/* http_lite_conn.c: a kept connection closed, its slot freed */
void lite_conn_close(struct lite_conn *c);
/* http_lite_conn.c: a connection to host:port for the call (a kept one if alive: *reused), or
 * NULL (k says why) */
struct lite_conn *lite_conn_get(struct call *k, const char *host, const char *port, bool *reused);

/* http_lite_answer.c: one exchange on k->c (the request sent, the answer's head in *h and its
 * body at k->buf + *body_at); *retry when a kept connection was found closed first */
bool lite_exchange(struct call *k, const char *req, size_t reqlen, const char *method,
                   struct answer_head *h, size_t *body_at, size_t *body_len, bool *retry);

#endif
