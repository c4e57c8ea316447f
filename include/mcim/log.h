/* Structured logging: one line per event with level, role, procedure id (txn),
 * seed step, cause and message; text for people, JSON for machines.
 *
 * Secrets: log lines never carry key material. The only way to print a key is
 * mcim_log_secret(), which prints "<redacted>" unless the process was started
 * with the explicit debug switch (mcim_log_set_secret_debug(true), set from
 * --debug-secrets or MCIM_DEBUG_SECRETS=1), and then says loudly that it does. */
#ifndef MCIM_LOG_H
#define MCIM_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mcim/cause.h"

typedef enum mcim_log_level {
  MCIM_LOG_DEBUG = 0,
  MCIM_LOG_INFO,
  MCIM_LOG_NOTICE,
  MCIM_LOG_WARN,
  MCIM_LOG_ERROR,
} mcim_log_level_t;

typedef enum mcim_log_format {
  MCIM_LOG_TEXT = 0,
  MCIM_LOG_JSON,
} mcim_log_format_t;

/* Process-wide settings; call once at start-up (before threads start).
 * `role` is the instance name ("ro", "sho-a", "dev1"); `out` NULL means stderr. */
void mcim_log_init(const char *role, mcim_log_format_t fmt, mcim_log_level_t min_level, FILE *out);
/* The instance name of later lines (the device agent learns its device id after start-up).
 * Safe while other threads log. */
void mcim_log_set_role(const char *role);
/* Append the log to `path` (created 0640 if missing) instead of the current output; the
 * previous log file, if this module opened one, is closed. MCIM_IO_ERROR if it cannot be
 * opened (the output is then unchanged). Safe while other threads log. */
mcim_cause_t mcim_log_open_file(const char *path);
/* Open the log file again under the same name (after logrotate moved it: SIGHUP). No-op
 * when logging to a stream the caller gave. */
mcim_cause_t mcim_log_reopen(void);
/* Parse "debug|info|notice|warn|error" / "text|json"; -1 if unknown. */
int mcim_log_level_from_name(const char *name);
int mcim_log_format_from_name(const char *name);
const char *mcim_log_level_name(mcim_log_level_t level);

/* One event. `txn` may be NULL, `step` 0 when not part of a numbered step,
 * `cause` MCIM_OK when none. */
void mcim_log_event(mcim_log_level_t level, const char *txn, int step, mcim_cause_t cause,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define mcim_log(level, ...) mcim_log_event((level), NULL, 0, MCIM_OK, __VA_ARGS__)
#define mcim_log_debug(...) mcim_log(MCIM_LOG_DEBUG, __VA_ARGS__)
#define mcim_log_info(...) mcim_log(MCIM_LOG_INFO, __VA_ARGS__)
#define mcim_log_warn(...) mcim_log(MCIM_LOG_WARN, __VA_ARGS__)
#define mcim_log_error(...) mcim_log(MCIM_LOG_ERROR, __VA_ARGS__)

/* The explicit switch for key dumps (off by default). */
void mcim_log_set_secret_debug(bool on);
bool mcim_log_secret_debug(void);
/* Key dump: prints `label=<hex>` only when the switch is on, `label=<redacted>` otherwise. */
void mcim_log_secret(const char *label, const uint8_t *buf, size_t len);

#endif
