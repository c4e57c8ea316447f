/* Crash points (issue 12, point 3): a process armed at start with
 *   MCIM_CRASHPOINT=<name>:<where>:<before-answer|after-send|before-tre|after-tre>
 * kills itself with SIGKILL the first time it reaches that point, after writing a row that
 * says so into its own store's trace (to_name "crashpoint"), so that a test proves from the
 * store, not from timing, where the kill landed (tests/integration/crash_every_step.sh,
 * docs/crash-testing.md).
 *
 * <name> is the process's own name (a role instance, "sho-a", or a device, "dev1"): any other
 * process leaves the variable alone. <where> names the point:
 *   before-answer  a server (a role's HTTPS server, the agent's control API) has run the
 *                  handler of the route "METHOD PATTERN" (e.g. "POST /v1/dpf/status"), its
 *                  transaction committed, and is about to send a 2xx answer;
 *   after-send     a client has sent its request and has a 2xx answer it has not processed
 *                  yet: a role's outbox delivery "POST PATH" (e.g. "POST /v1/reports"), or the
 *                  agent's first network call of the procedure stage WHERE (e.g. "receipt");
 *   before-tre     the agent's procedure stage WHERE (e.g. "install") is about to call the TRE
 *                  operation that writes the stage's change into the TRE state file;
 *   after-tre      that operation succeeded (its write is durable) and the agent has not yet
 *                  saved its own progress in agent.db (the stage's results, the next stage).
 *                  Neither TRE point is a message: nothing is answered and nothing goes over
 *                  the network, and the stage's after-send (download: the DPF's answer, before
 *                  the package is staged) is another moment of the same stage.
 * MCIM_CRASHPOINT=list arms every process to record each point it passes ("candidate: ..."
 * rows, no kill): how the test finds the points of a procedure.
 *
 * The variable is read once, at start; unset (production), every hook is one load and a
 * branch. Peer input cannot arm a process nor choose its point: it can only make an armed
 * process reach the point its operator named. */
#ifndef MCIM_CRASHPOINT_H
#define MCIM_CRASHPOINT_H

#include <stdbool.h>

typedef enum {
  MCIM_CRASH_BEFORE_ANSWER,
  MCIM_CRASH_AFTER_SEND,
  MCIM_CRASH_BEFORE_TRE,
  MCIM_CRASH_AFTER_TRE,
} mcim_crash_at_t;

/* Writes the durable record of a point reached: `txn` (never NULL), the seed step (0 if none
 * is known), `what` ("POST /v1/reports after-send: SIGKILL" or "candidate: ..."). Must not
 * return before the row is committed. */
typedef void (*mcim_crash_record_fn)(void *ctx, const char *txn, int step, const char *what);

/* Reads MCIM_CRASHPOINT (once per process; later calls are ignored) for the process named
 * `self`; arms the hooks only if it names `self` (or is "list"). Call before any thread that
 * can reach a hook starts. */
void mcim_crashpoint_init(const char *self, mcim_crash_record_fn record, void *ctx);

extern bool mcim_crashpoint_armed_;
static inline bool mcim_crashpoint_armed(void)
{
  return mcim_crashpoint_armed_;
}

/* A request starts on this thread: forget what the previous one noted. */
void mcim_crashpoint_begin(void);
/* The calling thread traced a message of `txn` at seed step `step`: the txn and the step a
 * before-answer record names when the request gives none. */
void mcim_crashpoint_note(const char *txn, int step);
/* The point `where` at `at` is reached on this thread (txn NULL and step < 0: what the thread
 * noted). Returns unless the process is armed for exactly this point. */
void mcim_crashpoint_at(mcim_crash_at_t at, const char *where, const char *txn, int step);

#endif
