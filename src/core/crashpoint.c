/* Crash points for the crash-at-every-step test (include/mcim/crashpoint.h). */
#include "mcim/crashpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"

bool mcim_crashpoint_armed_;

static bool inited;
static bool list_mode;
static char want_where[160];
static mcim_crash_at_t want_at;
static atomic_bool fired;
static mcim_crash_record_fn recorder;
static void *recorder_ctx;

static _Thread_local char noted_txn[72];
static _Thread_local int noted_step;

static const char *const at_names[] = {
    [MCIM_CRASH_BEFORE_ANSWER] = "before-answer",
    [MCIM_CRASH_AFTER_SEND] = "after-send",
    [MCIM_CRASH_BEFORE_TRE] = "before-tre",
    [MCIM_CRASH_AFTER_TRE] = "after-tre",
};
#define N_AT (sizeof(at_names) / sizeof(at_names[0]))

static const char *at_name(mcim_crash_at_t at) { return (size_t)at < N_AT ? at_names[at] : "?"; }

void mcim_crashpoint_init(const char *self, mcim_crash_record_fn record, void *ctx)
{
  if (inited)
    return;
  inited = true;
  const char *env = getenv("MCIM_CRASHPOINT");
  if (!env || !*env || !self || !record)
    return;
  if (strcmp(env, "list") == 0) {
    list_mode = true;
    goto armed;
  }
  /* <name>:<where>:<point>; <where> may hold spaces and slashes, never a colon */
  const char *c1 = strchr(env, ':');
  const char *c2 = strrchr(env, ':');
  if (!c1 || c2 == c1 || (size_t)(c1 - env) != strlen(self) ||
      strncmp(env, self, strlen(self)) != 0)
    return; /* not ours (or malformed): stay unarmed */
  size_t wl = (size_t)(c2 - c1 - 1);
  if (wl == 0 || wl >= sizeof(want_where))
    goto malformed;
  size_t a = 0;
  while (a < N_AT && strcmp(c2 + 1, at_names[a]) != 0)
    a++;
  if (a == N_AT)
    goto malformed;
  want_at = (mcim_crash_at_t)a;
  memcpy(want_where, c1 + 1, wl);
  want_where[wl] = '\0';
armed:
  recorder = record;
  recorder_ctx = ctx;
  mcim_crashpoint_armed_ = true;
  mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_OK, "crash point armed (test only): %s", env);
  return;
malformed:
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_INVALID_ARGUMENT,
                 "MCIM_CRASHPOINT=%s: expected"
                 " NAME:WHERE:before-answer|after-send|before-tre|after-tre; ignored",
                 env);
}

void mcim_crashpoint_begin(void)
{
  noted_txn[0] = '\0';
  noted_step = 0;
}

void mcim_crashpoint_note(const char *txn, int step)
{
  if (!txn || strlen(txn) >= sizeof(noted_txn))
    return;
  memcpy(noted_txn, txn, strlen(txn) + 1);
  /* a handler traces what it received before what it answers: the highest step is the
   * exchange's */
  if (step > noted_step)
    noted_step = step;
}

void mcim_crashpoint_at(mcim_crash_at_t at, const char *where, const char *txn, int step)
{
  char what[256];

  if (!mcim_crashpoint_armed_ || !where)
    return;
  if (!txn || !*txn)
    txn = noted_txn[0] ? noted_txn : "-";
  if (step < 0)
    step = noted_step;
  if (list_mode) {
    snprintf(what, sizeof(what), "candidate: %s %s", where, at_name(at));
    recorder(recorder_ctx, txn, step, what);
    return;
  }
  if (at != want_at || strcmp(where, want_where) != 0)
    return;
  bool expected = false;
  if (!atomic_compare_exchange_strong(&fired, &expected, true))
    return; /* another thread is firing it */
  snprintf(what, sizeof(what), "%s %s: SIGKILL", where, at_name(at));
  recorder(recorder_ctx, txn, step, what);
  mcim_log_event(MCIM_LOG_WARN, txn, step, MCIM_OK, "crash point reached (test only): %s", what);
  raise(SIGKILL);
}
