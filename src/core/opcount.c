/* The operation and work counts of include/mcim/opcount.h. */
#include "mcim/opcount.h"

#include <stddef.h>

_Atomic uint64_t mcim_op_counters_[MCIM_OP_COUNT_];

static const char *const op_names[MCIM_OP_COUNT_] = {
    "es256_sign",      "es256_verify",    "ecdh_es_encrypt",    "ecdh_es_decrypt",
    "cert_verify",     "aka_av_generate", "aka_resync",         "aka_usim_check",
    "tls_server_full", "tls_server_resumed", "tls_client_full", "tls_client_resumed",
};

const char *mcim_op_name(mcim_op_t op)
{
  return (unsigned)op < MCIM_OP_COUNT_ ? op_names[op] : NULL;
}

_Atomic uint64_t mcim_work_counters_[MCIM_WORK_COUNT_];

static const char *const work_names[MCIM_WORK_COUNT_] = {
    "http_requests",    "store_commits_durable", "store_commits_relaxed",
    "store_statements", "tre_synced_writes",
};

const char *mcim_work_name(mcim_work_t w)
{
  return (unsigned)w < MCIM_WORK_COUNT_ ? work_names[w] : NULL;
}
