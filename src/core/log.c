#include "mcim/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mcim/util.h"

static struct {
  char role[64];
  mcim_log_format_t fmt;
  mcim_log_level_t min_level;
  FILE *out;
  bool secret_debug;
  char *file_path; /* the file mcim_log_open_file opened (log_cfg.out), or NULL */
} log_cfg = {"mcim", MCIM_LOG_TEXT, MCIM_LOG_INFO, NULL, false, NULL};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};

void mcim_log_init(const char *role, mcim_log_format_t fmt, mcim_log_level_t min_level, FILE *out)
{
  pthread_mutex_lock(&log_lock);
  snprintf(log_cfg.role, sizeof(log_cfg.role), "%s", role ? role : "mcim");
  log_cfg.fmt = fmt;
  log_cfg.min_level = min_level;
  /* a log file this module opened is closed: the caller chose another output */
  FILE *old = log_cfg.file_path && log_cfg.out != out ? log_cfg.out : NULL;
  free(log_cfg.file_path);
  log_cfg.file_path = NULL;
  log_cfg.out = out;
  pthread_mutex_unlock(&log_lock);
  if (old)
    fclose(old);
  const char *env = getenv("MCIM_DEBUG_SECRETS");
  if (env && strcmp(env, "1") == 0)
    mcim_log_set_secret_debug(true);
}

void mcim_log_set_role(const char *role)
{
  pthread_mutex_lock(&log_lock);
  snprintf(log_cfg.role, sizeof(log_cfg.role), "%s", role ? role : "mcim");
  pthread_mutex_unlock(&log_lock);
}

static FILE *open_append(const char *path)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0)
    return NULL;
  FILE *f = fdopen(fd, "a");
  if (!f)
    close(fd);
  return f;
}

mcim_cause_t mcim_log_open_file(const char *path)
{
  if (!path || !*path)
    return MCIM_INVALID_ARGUMENT;
  char *copy = strdup(path);
  FILE *f = copy ? open_append(path) : NULL;
  if (!f) {
    int err = errno;
    free(copy);
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_IO_ERROR, "cannot open the log file %s: %s",
                   path, strerror(err));
    return MCIM_IO_ERROR;
  }
  pthread_mutex_lock(&log_lock);
  FILE *old = log_cfg.file_path ? log_cfg.out : NULL;
  free(log_cfg.file_path);
  log_cfg.file_path = copy;
  log_cfg.out = f;
  pthread_mutex_unlock(&log_lock);
  if (old)
    fclose(old);
  return MCIM_OK;
}

mcim_cause_t mcim_log_reopen(void)
{
  pthread_mutex_lock(&log_lock);
  char *path = log_cfg.file_path ? strdup(log_cfg.file_path) : NULL;
  bool owned = log_cfg.file_path != NULL;
  pthread_mutex_unlock(&log_lock);
  if (!owned)
    return MCIM_OK;
  mcim_cause_t rc = path ? mcim_log_open_file(path) : MCIM_NO_MEMORY;
  free(path);
  return rc;
}

int mcim_log_level_from_name(const char *name)
{
  for (size_t i = 0; name && i < sizeof(level_names) / sizeof(level_names[0]); i++)
    if (strcmp(name, level_names[i]) == 0)
      return (int)i;
  return -1;
}

int mcim_log_format_from_name(const char *name)
{
  if (name && strcmp(name, "text") == 0)
    return MCIM_LOG_TEXT;
  if (name && strcmp(name, "json") == 0)
    return MCIM_LOG_JSON;
  return -1;
}

const char *mcim_log_level_name(mcim_log_level_t level)
{
  if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
    return level_names[level];
  return "info";
}

static void timestamp(char *buf, size_t len)
{
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void emit(mcim_log_level_t level, const char *txn, int step, mcim_cause_t cause,
                 const char *msg)
{
  char ts[40];
  timestamp(ts, sizeof(ts));
  pthread_mutex_lock(&log_lock);
  FILE *out = log_cfg.out ? log_cfg.out : stderr;
  if (log_cfg.fmt == MCIM_LOG_JSON) {
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(mcim_log_level_name(level)));
    json_object_set_new(o, "role", json_string(log_cfg.role));
    if (txn)
      json_object_set_new(o, "txn", json_string(txn));
    if (step)
      json_object_set_new(o, "step", json_integer(step));
    if (cause != MCIM_OK)
      json_object_set_new(o, "cause", json_string(mcim_cause_name(cause)));
    json_object_set_new(o, "msg", json_string(msg));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (line) {
      fprintf(out, "%s\n", line);
      free(line);
    }
    json_decref(o);
  } else {
    /* One line, one write: stderr is unbuffered, and each fprintf was a write(2) of its own
     * (five per line, about 170 per procedure across the roles). */
    char line[1536];
    int n = snprintf(line, sizeof(line), "%s %-6s %s", ts, mcim_log_level_name(level),
                     log_cfg.role);
    if (txn && n >= 0 && (size_t)n < sizeof(line))
      n += snprintf(line + n, sizeof(line) - (size_t)n, " txn=%s", txn);
    if (step && n >= 0 && (size_t)n < sizeof(line))
      n += snprintf(line + n, sizeof(line) - (size_t)n, " step=%d", step);
    if (cause != MCIM_OK && n >= 0 && (size_t)n < sizeof(line))
      n += snprintf(line + n, sizeof(line) - (size_t)n, " cause=%s", mcim_cause_name(cause));
    if (n >= 0 && (size_t)n < sizeof(line))
      n += snprintf(line + n, sizeof(line) - (size_t)n, " %s\n", msg);
    if (n < 0 || (size_t)n >= sizeof(line)) { /* cut, never lost: the end of line kept */
      n = (int)sizeof(line) - 1;
      line[n - 1] = '\n';
    }
    fwrite(line, 1, (size_t)n, out);
  }
  fflush(out);
  pthread_mutex_unlock(&log_lock);
}

void mcim_log_event(mcim_log_level_t level, const char *txn, int step, mcim_cause_t cause,
                    const char *fmt, ...)
{
  if (level < log_cfg.min_level)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* Control characters from peer input must not forge extra log lines. */
  for (char *p = msg; *p; p++)
    if ((unsigned char)*p < 0x20)
      *p = ' ';
  emit(level, txn, step, cause, msg);
}

void mcim_log_set_secret_debug(bool on)
{
  if (on && !log_cfg.secret_debug)
    emit(MCIM_LOG_WARN, NULL, 0, MCIM_OK,
         "secret debugging is ON: key material will be written to this log");
  log_cfg.secret_debug = on;
}

bool mcim_log_secret_debug(void)
{
  return log_cfg.secret_debug;
}

void mcim_log_secret(const char *label, const uint8_t *buf, size_t len)
{
  if (!log_cfg.secret_debug) {
    mcim_log_event(MCIM_LOG_DEBUG, NULL, 0, MCIM_OK, "%s=<redacted>", label);
    return;
  }
  if (len > 256)
    len = 256;
  char hex[513];
  mcim_hex_encode(buf, len, hex);
  emit(MCIM_LOG_WARN, NULL, 0, MCIM_OK, "SECRET DEBUG");
  mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_OK, "%s=%s", label, hex);
  mcim_wipe(hex, sizeof(hex));
}
