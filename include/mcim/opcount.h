/* Process-wide counts of the costly cryptographic operations (issue 10, point 7): what a
 * procedure really does, measured, so that bench/bench_floor.c can price it. Each count is a
 * C11 atomic incremented with relaxed order where the operation is done (one uncontended
 * atomic add, nothing else on the hot path); every role's and the agent's /metrics show them
 * as mcim_crypto_operations_total{op} (read at scrape time); `mcim loadgen` reads its own
 * process's directly and scrapes the daemons' to report operations per procedure.
 *
 * What is counted, and where:
 *   es256_sign          a JWS signed (mcim_jws_sign: one ECDSA P-256 signature)
 *   es256_verify        a JWS signature checked (jws_check, src/crypto/jose.c: every
 *                       mcim_jws_verify, mcim_jws_check_signature and package verification)
 *   ecdh_es_encrypt     a JWE sealed (mcim_jwe_encrypt: an ephemeral P-256 key generated and
 *                       one ECDH with the recipient's key)
 *   ecdh_es_decrypt     a JWE opened or an ECDH-ES key derived (one ECDH)
 *   cert_verify         an X.509 chain verified by mcim_pki_cert_verify (one ECDSA
 *                       verification of the leaf by the CA; TLS's own chain checks are part of
 *                       the handshakes below)
 *   aka_av_generate     an authentication vector computed by an AuC (f1-f5 with a fresh RAND)
 *   aka_resync          an AUTS checked by an AuC (f1*, f5*)
 *   aka_usim_check      a challenge checked by the TRE (f5, f1, then f2-f4 if it verifies)
 *   tls_server_full     a TLS handshake completed by an HTTPS server (the first request of a
 *   tls_server_resumed  connection; resumed: a session ticket or id was accepted)
 *   tls_client_full     a TLS handshake completed by an HTTPS client (http_client.c, curl;
 *   tls_client_resumed  http_lite_conn.c, the agent's)
 * Not counted: AES-GCM of sealed files and JWE contents, SHA-256, key generation outside a
 * JWE, TLS record encryption.
 *
 * Beside them, in the same style, counts of the non-cryptographic work a procedure does, so
 * the floor can price that too (mcim_work_*; on /metrics as mcim_work_operations_total{op},
 * in the same family, MCIM_MF_CRYPTO; loadgen's "work_per_procedure"):
 *   http_requests          a request answered by an HTTP server of ours (http_server.c:
 *                          each answer queued, any route, any status; where
 *                          mcim_http_requests_total counts it)
 *   store_commits_durable  a transaction committed through mcim_store (store.c, SQLite and
 *   store_commits_relaxed  PostgreSQL): an explicit one or a batch, and a lone write outside
 *                          any (an autocommit: a statement that starts with INSERT, UPDATE,
 *                          DELETE or REPLACE; a write in a WITH, or a script, outside a
 *                          transaction is not counted as a commit); relaxed: begun relaxed
 *                          (begin_relaxed, a relaxed batch, exec_relaxed) and the backend
 *                          took it so
 *   store_statements       a statement executed through mcim_store, read or write: each
 *                          exec (query_one, query_int included), each statement of a batch
 *                          when it is committed, a script as one; not BEGIN, COMMIT, ROLLBACK
 *                          nor what a backend runs on its own (durability switches)
 *   tre_synced_writes      a write of the software TRE's files followed by its fdatasync or
 *                          fsync (tre_store.c: a state slot; tre_store_key.c: a key file put
 *                          or scrubbed); a folder's fsync alone is not counted */
#ifndef MCIM_OPCOUNT_H
#define MCIM_OPCOUNT_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum mcim_op {
  MCIM_OP_ES256_SIGN = 0,
  MCIM_OP_ES256_VERIFY,
  MCIM_OP_ECDH_ES_ENCRYPT,
  MCIM_OP_ECDH_ES_DECRYPT,
  MCIM_OP_CERT_VERIFY,
  MCIM_OP_AKA_AV_GENERATE,
  MCIM_OP_AKA_RESYNC,
  MCIM_OP_AKA_USIM_CHECK,
  MCIM_OP_TLS_SERVER_FULL,
  MCIM_OP_TLS_SERVER_RESUMED,
  MCIM_OP_TLS_CLIENT_FULL,
  MCIM_OP_TLS_CLIENT_RESUMED,
  MCIM_OP_COUNT_
} mcim_op_t;

extern _Atomic uint64_t mcim_op_counters_[MCIM_OP_COUNT_];

static inline void mcim_op_add(mcim_op_t op, uint64_t n)
{
  atomic_fetch_add_explicit(&mcim_op_counters_[op], n, memory_order_relaxed);
}
static inline void mcim_op_count(mcim_op_t op)
{
  mcim_op_add(op, 1);
}
static inline uint64_t mcim_op_read(mcim_op_t op)
{
  return atomic_load_explicit(&mcim_op_counters_[op], memory_order_relaxed);
}
/* "es256_sign"...; NULL for an op out of range. */
const char *mcim_op_name(mcim_op_t op);

typedef enum mcim_work {
  MCIM_WORK_HTTP_REQUEST = 0,
  MCIM_WORK_STORE_COMMIT_DURABLE,
  MCIM_WORK_STORE_COMMIT_RELAXED,
  MCIM_WORK_STORE_STATEMENT,
  MCIM_WORK_TRE_SYNCED_WRITE,
  MCIM_WORK_COUNT_
} mcim_work_t;

extern _Atomic uint64_t mcim_work_counters_[MCIM_WORK_COUNT_];

static inline void mcim_work_add(mcim_work_t w, uint64_t n)
{
  atomic_fetch_add_explicit(&mcim_work_counters_[w], n, memory_order_relaxed);
}
static inline void mcim_work_count(mcim_work_t w)
{
  mcim_work_add(w, 1);
}
static inline uint64_t mcim_work_read(mcim_work_t w)
{
  return atomic_load_explicit(&mcim_work_counters_[w], memory_order_relaxed);
}
/* "http_requests"...; NULL for one out of range. */
const char *mcim_work_name(mcim_work_t w);

#endif
