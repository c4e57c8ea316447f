/* Process-wide metrics: counters, gauges and fixed-bucket histograms with labels,
 * exposed by every role (and the device agent) as GET /metrics in the Prometheus text
 * exposition format, version 0.0.4. docs/operations.md lists every metric and, where
 * there is one, the TS 28.552 measurement it stands for (named in its HELP text).
 *
 * The catalogue is fixed (below): code updates a metric by its object, e.g.
 *
 *   mcim_metric_inc(&mcim_m_amf_auth_fail, MCIM_LABELS(mcim_cause_name(rc)));
 *   mcim_metric_inc(&mcim_m_amf_auth_req, NULL);             (no labels)
 *
 * Label values are passed in the order of the metric's label names; a call with the
 * wrong number of values is ignored (and logged once). Label values must be bounded
 * sets (cause names, route patterns, role names, procedure names): never an
 * identifier of a device, a subscription or a procedure, never anything secret. A metric
 * keeps at most MCIM_METRIC_MAX_SERIES label combinations; more are dropped.
 *
 * Thread-safe (one mutex); updates are cheap enough for every request. */
#ifndef MCIM_METRICS_H
#define MCIM_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#define MCIM_METRIC_MAX_LABELS 4
#define MCIM_METRIC_MAX_SERIES 512

typedef enum mcim_metric_type {
  MCIM_METRIC_COUNTER = 0,
  MCIM_METRIC_GAUGE,
  MCIM_METRIC_HISTOGRAM,
} mcim_metric_type_t;

/* Families: which metrics a process exposes (mcim_metrics_render). */
enum {
  MCIM_MF_PROCESS = 1u << 0,   /* start time, build info */
  MCIM_MF_HTTP = 1u << 1,      /* the HTTP server: requests, latency */
  MCIM_MF_OUTBOX = 1u << 2,    /* role outbox */
  MCIM_MF_ACCESS = 1u << 3,    /* attach and AKA at an access network (VNO, SHO) */
  MCIM_MF_AUC = 1u << 4,       /* authentication centre (RO's ICF, SHO) */
  MCIM_MF_PROCEDURE = 1u << 5, /* procedures started / succeeded / failed (SHO, agent) */
  MCIM_MF_AGENT = 1u << 6,     /* device agent: attach and AKA seen by the device */
  MCIM_MF_CRYPTO = 1u << 7,    /* crypto operations and work counts (mcim/opcount.h) */
};

struct mcim_metric_priv;

typedef struct mcim_metric {
  const char *name; /* Prometheus name, e.g. "mcim_amf_auth_req_total" */
  const char *help; /* one line; names the TS 28.552 measurement when there is one */
  mcim_metric_type_t type;
  unsigned family;
  const char *labels[MCIM_METRIC_MAX_LABELS + 1]; /* label names, NULL-terminated */
  const double *buckets;                          /* histogram upper bounds, increasing */
  size_t nbuckets;
  struct mcim_metric_priv *priv; /* the series; private to src/core/metrics.c */
} mcim_metric_t;

/* Label values, in the order of the metric's label names. */
#define MCIM_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Counter or gauge: add `v` (a counter ignores v < 0). */
void mcim_metric_add(mcim_metric_t *m, const char *const *values, double v);
/* Gauge: set. */
void mcim_metric_set(mcim_metric_t *m, const char *const *values, double v);
/* Histogram: one observation. */
void mcim_metric_observe(mcim_metric_t *m, const char *const *values, double v);
static inline void mcim_metric_inc(mcim_metric_t *m, const char *const *values)
{
  mcim_metric_add(m, values, 1.0);
}
/* Current value of a counter or gauge series (a histogram: its count); 0 if the series
 * does not exist. For tests. */
double mcim_metric_value(mcim_metric_t *m, const char *const *values);

/* The exposition text of every metric of `families` (HELP, TYPE, one line per series;
 * an unlabelled counter or gauge is shown even when still 0). malloc'd; NULL on no memory. */
char *mcim_metrics_render(unsigned families);
/* The content type of that text. */
#define MCIM_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Every metric of the catalogue, NULL-terminated (docs, tests). */
extern mcim_metric_t *const mcim_metrics_catalogue[];

/* ---- the catalogue ---- */

/* process */
extern mcim_metric_t mcim_m_process_start_time;
extern mcim_metric_t mcim_m_build_info; /* {version, commit}, always 1; set by mcim_metrics_render */
extern mcim_metric_t mcim_m_thread_cpu; /* {thread} CPU seconds, set by mcim_metrics_render */

/* HTTP server (src/net/http_server.c) */
extern mcim_metric_t mcim_m_http_requests;         /* {method, route, cause} */
extern mcim_metric_t mcim_m_http_request_duration; /* {method, route, code} histogram */
extern mcim_metric_t mcim_m_http_request_cpu;      /* {method, route} CPU seconds handling */
extern mcim_metric_t mcim_m_http_connections_refused;   /* at the per-address or global limit */
extern mcim_metric_t mcim_m_http_connections_timed_out; /* handshake or request stalled */
extern mcim_metric_t mcim_m_http_connections_open;      /* gauge: open now */
extern mcim_metric_t mcim_m_http_tls_handshake_failures;
extern mcim_metric_t mcim_m_http_long_poll_wakes;
extern mcim_metric_t mcim_m_http_long_polls_held; /* gauge: requests held now */

/* outbox (src/roles/outbox.c) */
extern mcim_metric_t mcim_m_store_connections;      /* gauge: the role's store pool */
extern mcim_metric_t mcim_m_outbox_pending;         /* gauge, read from the store at scrape */
extern mcim_metric_t mcim_m_outbox_delivered;       /* {peer} */
extern mcim_metric_t mcim_m_outbox_attempt_failures;/* {peer, cause} */
extern mcim_metric_t mcim_m_outbox_given_up;        /* {peer, cause} */

/* access networks: attach and AKA (src/roles/access.c), network side */
extern mcim_metric_t mcim_m_rm_reg_init_req;   /* RM.RegInitReq */
extern mcim_metric_t mcim_m_rm_reg_init_succ;  /* RM.RegInitSucc */
extern mcim_metric_t mcim_m_rm_reg_init_fail;  /* RM.RegInitFail.cause {cause} */
extern mcim_metric_t mcim_m_amf_auth_req;      /* AMF.AuthReq */
extern mcim_metric_t mcim_m_amf_auth_reject;   /* AMF.AuthReject */
extern mcim_metric_t mcim_m_amf_auth_fail;     /* AMF.AuthFail.cause {cause} */

/* authentication centre (src/roles/auc.c) */
extern mcim_metric_t mcim_m_auc_av_requests;
extern mcim_metric_t mcim_m_auc_av_generated;
extern mcim_metric_t mcim_m_auc_av_failures;      /* {cause} */
extern mcim_metric_t mcim_m_auc_resync_requests;
extern mcim_metric_t mcim_m_auc_resync_failures;  /* {cause} */

/* procedures (SHO: src/roles/sho/; agent: src/device/) */
extern mcim_metric_t mcim_m_procedures_started;   /* {procedure} */
extern mcim_metric_t mcim_m_procedures_succeeded; /* {procedure} */
extern mcim_metric_t mcim_m_procedures_failed;    /* {procedure, cause} */

/* device agent (src/device/attach.c), device side */
extern mcim_metric_t mcim_m_m2me_attach_attempts;  /* {network} */
extern mcim_metric_t mcim_m_m2me_attach_failures;  /* {network, cause} */
extern mcim_metric_t mcim_m_m2me_aka_challenges;
extern mcim_metric_t mcim_m_m2me_aka_failures;     /* {cause}: MAC_FAILURE, SYNC_FAILURE... */
/* device agent (src/device/agent.c): the worker's wake-ups */
extern mcim_metric_t mcim_m_m2me_worker_wakeups;

/* cryptographic operations {op}: the atomic counts of include/mcim/opcount.h, copied into the
 * series by mcim_metrics_render (every op shown, 0 included) */
extern mcim_metric_t mcim_m_crypto_operations;
/* work {op}: the non-cryptographic counts of include/mcim/opcount.h (HTTP requests, store
 * commits and statements, TRE synced writes), shown with the crypto ones (same family) */
extern mcim_metric_t mcim_m_work_operations;

#endif
