/* What every role keeps in its store besides its own tables: the outbox. A message to a peer
 * is written in the transaction that decides it (mcim_role_outbox_put), handed to this
 * instance's worker once that transaction commits, and sent by the worker, again after a
 * failure until it is delivered or its retry budget is spent; any instance's worker delivers a
 * message whose lease ran out. The outbox's table is in common.c's schema (component
 * "common"); its finished messages go with the housekeeping there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/crashpoint.h"
#include "mcim/log.h"
#include "mcim/metrics.h"
#include "mcim/trace_store.h"
#include "mcim/util.h"
#include "roles/role_priv.h"

static void random_id(char out[33])
{
  uint8_t b[16];
  if (mcim_random_id(b, sizeof(b)) != MCIM_OK)
    memset(b, 0, sizeof(b));
  mcim_hex_encode(b, sizeof(b), out);
}

/* ---- outbox ---- */

mcim_cause_t mcim_role_outbox_put(struct mcim_role *r, mcim_store_t *st, const char *peer,
                                  const char *path, const json_t *body, const char *txn, int step,
                                  const char *msg)
{
  return mcim_role_outbox_put_budget(r, st, peer, path, body, txn, step, msg, 0);
}

struct outbox_msg {
  char id[33];
  char after[33]; /* "" or the message this one waits for (mcim_role_outbox_put_chained) */
  char *peer, *path, *body, *txn, *msg;
  int64_t step, attempts, next_at, created;
  int64_t ready_at; /* 0, or when it was last held: its retry budget's age counts from then */
  bool was_held;    /* held by an earlier round (its last_cause): the hold is logged once */
  int64_t max_attempts; /* 0: the configured one; MCIM_OUTBOX_UNTIL_RETENTION */
};

static void outbox_msg_free(struct outbox_msg *m)
{
  free(m->peer);
  free(m->path);
  free(m->body);
  free(m->txn);
  free(m->msg);
}

/* A message claimed by the transaction that wrote it: staged on the writer's thread until
 * that transaction ends, then handed to the worker (committed) or dropped (rolled back). */
struct outbox_handed {
  struct outbox_handed *next;
  struct mcim_role *r;
  const mcim_store_t *st; /* the writer's handle, while staged: which transaction */
  struct outbox_msg m;    /* next_at: when it is due if released (its created) */
  int64_t lease;          /* next_at as written: the claim */
};

static __thread struct outbox_handed *staged;

static void handed_free(struct outbox_handed *h)
{
  outbox_msg_free(&h->m);
  free(h);
}

static void hand_to_worker(struct mcim_role *r, struct outbox_handed *h)
{
  struct mcim_role_priv *p = r->priv;
  h->next = NULL;
  pthread_mutex_lock(&p->lock);
  if (!p->handed_tail)
    p->handed_tail = &p->handed;
  *p->handed_tail = h;
  p->handed_tail = &h->next;
  pthread_mutex_unlock(&p->lock);
  mcim_role_wake(r); /* from a request handler: once its answer is sent */
}

/* The writer's transaction ended (mcim_store_on_end): its staged messages go to the worker
 * if it committed, in the order they were written. */
static void staged_end(void *arg, bool committed)
{
  struct outbox_handed **pp = &staged, *mine = NULL, **tail = &mine;
  while (*pp) {
    struct outbox_handed *h = *pp;
    if (h->st != arg) {
      pp = &h->next;
      continue;
    }
    *pp = h->next;
    h->next = NULL;
    *tail = h;
    tail = &h->next;
  }
  while (mine) {
    struct outbox_handed *h = mine;
    mine = h->next;
    if (committed)
      hand_to_worker(h->r, h);
    else
      handed_free(h);
  }
}

/* The message is written claimed by this instance, leased as a worker's round claims (two
 * peer timeouts, mcim_role_outbox_run), and handed to this instance's worker once the
 * transaction commits: no claim transaction of its own (it was one of every five commits of
 * a role under load, docs/performance.md). If this process dies first, its lease runs out
 * and any instance's worker delivers it then, as a message claimed by a round that died. */
mcim_cause_t mcim_role_outbox_put_budget(struct mcim_role *r, mcim_store_t *st, const char *peer,
                                         const char *path, const json_t *body, const char *txn,
                                         int step, const char *msg, int64_t max_attempts)
{
  return mcim_role_outbox_put_chained(r, st, peer, path, body, txn, step, msg, max_attempts,
                                      NULL);
}

struct chain_tail {
  char id[33];
  int64_t pos;
  bool open; /* not delivered nor given up: the new message waits for it */
};

static mcim_cause_t tail_row(const mcim_row_t *row, void *arg)
{
  struct chain_tail *t = arg;
  snprintf(t->id, sizeof(t->id), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  t->pos = mcim_row_int(row, 1);
  t->open = mcim_row_int(row, 2) != 0;
  return MCIM_OK;
}

/* The chain's last message, in the writer's transaction: the new one takes the next position
 * and waits for it while it is open. Positions, not `created`: the clocks of two instances
 * (or one stepped back) may disagree by more than the time between two messages, and two
 * messages may share a millisecond. Writers take turns (the store's writers' lock, on
 * PostgreSQL across instances), so no two messages of a chain get one position. A last
 * message that ended leaves nothing to wait for: the chain's earlier messages ended before it
 * (each waited for the one before). */
static mcim_cause_t chain_last(mcim_store_t *st, const char *chain, struct chain_tail *t)
{
  memset(t, 0, sizeof(*t));
  if (!chain)
    return MCIM_OK;
  mcim_val_t p[] = {MCIM_TEXT(chain)};
  return mcim_store_exec(st,
                         "SELECT id, chain_pos, state NOT IN ('delivered', 'failed') FROM outbox"
                         " WHERE chain = ? ORDER BY chain_pos DESC LIMIT 1",
                         p, 1, tail_row, t);
}

mcim_cause_t mcim_role_outbox_put_chained(struct mcim_role *r, mcim_store_t *st,
                                          const char *peer, const char *path,
                                          const json_t *body, const char *txn, int step,
                                          const char *msg, int64_t max_attempts,
                                          const char *chain)
{
  char id[33];
  struct chain_tail tail;
  random_id(id);
  mcim_cause_t crc = chain_last(st, chain, &tail);
  if (crc != MCIM_OK)
    return crc;
  const char *after = tail.open ? tail.id : "";
  char *text = json_dumps(body, JSON_COMPACT);
  if (!text)
    return MCIM_NO_MEMORY;
  int64_t now = mcim_now_us() / 1000;
  struct outbox_handed *h = r && r->priv ? calloc(1, sizeof(*h)) : NULL;
  if (h) {
    h->r = r;
    h->st = st;
    snprintf(h->m.id, sizeof(h->m.id), "%s", id);
    h->m.peer = strdup(peer ? peer : "");
    h->m.path = strdup(path ? path : "");
    h->m.body = strdup(text);
    h->m.txn = strdup(txn ? txn : "");
    h->m.msg = strdup(msg ? msg : "");
    h->m.step = step;
    h->m.next_at = h->m.created = now;
    h->m.max_attempts = max_attempts;
    snprintf(h->m.after, sizeof(h->m.after), "%s", after);
    h->lease = now + mcim_config_int(r->cfg, "peer_timeout_ms") * 2;
    /* handed on the transaction's end, or at once when the insert is its own transaction */
    if (!h->m.peer || !h->m.path || !h->m.body || !h->m.txn || !h->m.msg ||
        (mcim_store_in_txn(st) && mcim_store_on_end(st, staged_end, st) != MCIM_OK)) {
      handed_free(h);
      h = NULL; /* pending and unclaimed: the worker's next round finds it */
    }
  }
  if (!h && r && r->priv) { /* found only by a poll: the worker's backoff ends */
    pthread_mutex_lock(&r->priv->lock);
    r->priv->poll_soon = true;
    pthread_cond_signal(&r->priv->cond);
    pthread_mutex_unlock(&r->priv->lock);
  }
  int64_t next_at = h ? h->lease : now;
  mcim_val_t budget = max_attempts != 0 ? MCIM_INT(max_attempts) : MCIM_NULL;
  mcim_val_t p[] = {MCIM_TEXT(id),  MCIM_TEXT(peer), MCIM_TEXT(path),  MCIM_TEXT(text),
                    MCIM_TEXT(txn), MCIM_INT(step),  MCIM_TEXT(msg),   MCIM_INT(next_at),
                    MCIM_INT(now),  budget,          MCIM_TEXT(chain),
                    chain ? MCIM_INT(tail.pos + 1) : MCIM_NULL,
                    MCIM_TEXT(after[0] ? after : NULL)};
  mcim_cause_t rc = mcim_store_exec(
      st,
      "INSERT INTO outbox (id, peer, path, body, txn, step, msg, state, attempts, next_at,"
      " created, max_attempts, chain, chain_pos, after_id)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?)",
      p, MCIM_NPARAMS(p), NULL, NULL);
  free(text);
  if (!h)
    return rc;
  if (rc != MCIM_OK) {
    handed_free(h);
  } else if (!mcim_store_in_txn(st)) {
    hand_to_worker(r, h);
  } else { /* at the end: handed in the order they were written (staged_end) */
    struct outbox_handed **tail_p = &staged;
    while (*tail_p)
      tail_p = &(*tail_p)->next;
    h->next = NULL;
    *tail_p = h;
  }
  return rc;
}

mcim_cause_t mcim_role_outbox_pending(struct mcim_role *r, int64_t *count)
{
  mcim_store_t *st = mcim_role_store(r);
  if (!st)
    return MCIM_STORE_ERROR;
  return mcim_store_query_int(st, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'", NULL, 0,
                              count);
}

struct outbox_batch {
  struct outbox_msg m[16];
  size_t n;
};

static mcim_cause_t outbox_row(const mcim_row_t *row, void *arg)
{
  struct outbox_batch *b = arg;
  if (b->n == sizeof(b->m) / sizeof(b->m[0]))
    return MCIM_OK;
  struct outbox_msg *m = &b->m[b->n];
  snprintf(m->id, sizeof(m->id), "%s", mcim_row_text(row, 0) ? mcim_row_text(row, 0) : "");
  m->peer = strdup(mcim_row_text(row, 1) ? mcim_row_text(row, 1) : "");
  m->path = strdup(mcim_row_text(row, 2) ? mcim_row_text(row, 2) : "");
  m->body = strdup(mcim_row_text(row, 3) ? mcim_row_text(row, 3) : "null");
  m->txn = strdup(mcim_row_text(row, 4) ? mcim_row_text(row, 4) : "");
  m->step = mcim_row_int(row, 5);
  m->msg = strdup(mcim_row_text(row, 6) ? mcim_row_text(row, 6) : "");
  m->attempts = mcim_row_int(row, 7);
  m->next_at = mcim_row_int(row, 8);
  m->max_attempts = mcim_row_int(row, 9);
  m->created = mcim_row_int(row, 10);
  snprintf(m->after, sizeof(m->after), "%s", mcim_row_text(row, 11) ? mcim_row_text(row, 11) : "");
  m->ready_at = mcim_row_int(row, 12);
  m->was_held = mcim_row_text(row, 13) &&
                strcmp(mcim_row_text(row, 13), mcim_cause_name(MCIM_EARLIER_UNDELIVERED)) == 0;
  b->n++;
  return MCIM_OK;
}

bool mcim_outbox_gives_up(int64_t attempts, int64_t max_attempts, int64_t configured,
                          int64_t age_ms, int64_t retention_ms)
{
  if (max_attempts == MCIM_OUTBOX_UNTIL_RETENTION)
    return age_ms >= retention_ms;
  return attempts >= (max_attempts > 0 ? max_attempts : configured);
}

/* What one delivery came to, recorded with the others of its round. */
struct outbox_outcome {
  bool claimed, done;
  bool unsent;   /* claimed, but the round ran out of its lease first: released */
  int64_t held;  /* not sent: the message it waits for is pending; due again then (ms) */
  bool recorded; /* the outcome written while the lease was still this round's */
  int64_t lease; /* next_at as claimed: the round's rows are updated only while it holds */
  const char *state; /* delivered, pending (again, after a backoff) or failed */
  int64_t attempts, next_at, sent_us;
  mcim_cause_t rc;
  char detail[256];
  json_t *body;
};

/* Claim a round's messages, in one relaxed transaction: another instance of this role on
 * the same database may be looking too. Each is leased for two peer timeouts, as one message
 * was; the round sends only while a delivery started now ends inside the lease
 * (mcim_role_outbox_run) and releases the rest, so a lease never runs out under a delivery
 * and a crash holds nothing longer than before. Not durable: lost in a crash, the messages
 * are pending again and delivered again, which the receiver deduplicates (txn and step); the
 * same for the outcomes (outbox_record). Returns when the leases were taken (ms). */
static void outbox_claim(struct mcim_role *r, mcim_store_t *st, struct outbox_batch *b, size_t from,
                         struct outbox_outcome *out)
{
  int64_t now = mcim_now_us() / 1000;
  int64_t timeout = mcim_config_int(r->cfg, "peer_timeout_ms");
  if (mcim_store_begin_relaxed(st) != MCIM_OK)
    goto unclaimed;
  for (size_t i = from; i < b->n; i++) {
    out[i].lease = now + timeout * 2;
    mcim_val_t c[] = {MCIM_INT(out[i].lease), MCIM_TEXT(b->m[i].id), MCIM_INT(b->m[i].next_at)};
    if (mcim_store_exec(st,
                        "UPDATE outbox SET next_at = ? WHERE id = ? AND next_at = ?"
                        " AND state = 'pending'",
                        c, 3, NULL, NULL) != MCIM_OK) {
      mcim_store_rollback(st);
      goto unclaimed;
    }
    out[i].claimed = mcim_store_changes(st) == 1;
  }
  if (mcim_store_commit(st) == MCIM_OK)
    return;
unclaimed: /* nothing of what it found is ours: the next round tries again */
  for (size_t i = from; i < b->n; i++)
    out[i].claimed = false;
}

/* What an answer makes of a delivery. The receivers deduplicate by (txn, step), so done is
 * an answer that says the receiver has the message: a 2xx, or a 409 CONFLICT (it holds this
 * one, or another for the same txn), REPLAY (it acted on it already), NOTICE_OVERTAKEN (it
 * applied a later notice of the device's: this one must never be) or REGISTRATION_OVERTAKEN
 * (the DRF holds a later move of the device to another SHO). The other 409s refuse
 * it for now: WRONG_STATE (not in the state for it yet) and DEVICE_BUSY may take it later,
 * so they are retried like a 409 whose cause cannot be read, which could be either: taken
 * as done, a refused message would be lost with a trace row saying OK. Any other 4xx is a
 * final refusal; anything else (no answer, 5xx) is retried. Who answers what to a duplicate:
 * docs/architecture.md. */
mcim_outbox_outcome_t mcim_outbox_outcome_for(long status, mcim_cause_t cause)
{
  if (status >= 200 && status < 300)
    return MCIM_OUTBOX_DELIVERED;
  if (status == 409)
    return cause == MCIM_CONFLICT || cause == MCIM_REPLAY || cause == MCIM_NOTICE_OVERTAKEN ||
                   cause == MCIM_REGISTRATION_OVERTAKEN
               ? MCIM_OUTBOX_DELIVERED
               : MCIM_OUTBOX_RETRY;
  return status >= 400 && status < 500 ? MCIM_OUTBOX_REFUSED : MCIM_OUTBOX_RETRY;
}

/* One delivery; what its answer makes of it: mcim_outbox_outcome_for. A retried message
 * waits outbox_backoff_ms, doubled at each attempt until it passes a minute. */
static void outbox_send(struct mcim_role *r, const struct outbox_msg *m, struct outbox_outcome *o)
{
  int64_t now;
  const char *base = mcim_role_peer_url(r, m->peer);
  struct mcim_http_client *cli = mcim_role_client(r);
  struct mcim_http_result res = {0};
  char url[1024];

  o->sent_us = mcim_now_us();
  now = o->sent_us / 1000;
  o->body = json_loads(m->body, 0, NULL);
  if (!base) {
    o->rc = MCIM_PEER_UNREACHABLE;
    snprintf(res.detail, sizeof(res.detail), "peer \"%s\" is not in the peers file", m->peer);
  } else if (!cli || !o->body) {
    o->rc = MCIM_INTERNAL;
  } else {
    snprintf(url, sizeof(url), "%s%s", base, m->path);
    o->rc = mcim_http_request(cli, "POST", url, o->body, NULL, &res);
    /* delivered, the answer not yet recorded: a crash point (test only) */
    if (mcim_crashpoint_armed() && o->rc == MCIM_OK) {
      snprintf(url, sizeof(url), "POST %s", m->path);
      mcim_crashpoint_at(MCIM_CRASH_AFTER_SEND, url, m->txn, (int)m->step);
    }
  }
  mcim_outbox_outcome_t outcome = mcim_outbox_outcome_for(res.status, o->rc);
  o->done = outcome == MCIM_OUTBOX_DELIVERED;
  o->attempts = m->attempts + 1;
  o->state = o->done ? "delivered" : "pending";
  /* a message held for its chain (held_until) counts its age from its last hold: waiting
   * for the message before it spends none of its own budget */
  int64_t since = m->ready_at > m->created ? m->ready_at : m->created;
  if (!o->done && (outcome == MCIM_OUTBOX_REFUSED || mcim_outbox_gives_up(
                                o->attempts, m->max_attempts,
                                mcim_config_int(r->cfg, "outbox_max_attempts"), now - since,
                                mcim_config_duration(r->cfg, "record_retention") * 1000)))
    o->state = "failed";
  int64_t backoff = mcim_config_int(r->cfg, "outbox_backoff_ms");
  for (int64_t i = 1; i < o->attempts && backoff < 60000; i++)
    backoff *= 2;
  o->next_at = now + backoff;
  snprintf(o->detail, sizeof(o->detail), "%s", res.detail);
  mcim_http_result_clear(&res);
}

/* A message this round leaves pending comes due at `at_ms` (wall clock): the worker polls the
 * store then, whatever its backoff (mcim_role_worker_main, src/roles/runtime_worker.c). */
static void note_due(struct mcim_role *r, int64_t at_ms)
{
  struct mcim_role_priv *p = r->priv;
  pthread_mutex_lock(&p->lock);
  if (p->outbox_due_ms == 0 || at_ms < p->outbox_due_ms)
    p->outbox_due_ms = at_ms;
  pthread_mutex_unlock(&p->lock);
}

/* The round's outcomes and the trace rows of what was sent, in one relaxed transaction (a
 * transaction each cost more than the deliveries' own store work: docs/performance.md), and
 * that one a batch: on PostgreSQL one round trip, where statement by statement it was 2 + 2n
 * (BEGIN, each update and trace row, COMMIT), and the worker's delivery of the DRF's step-8
 * announcement spent more of its CPU on those than on the request itself. Each write holds
 * only while the row still carries this round's lease: had the lease run out and another
 * instance claimed the message, its claim, outcome and trace row stand. The trace row goes
 * first, under the same condition as the update after it (writers take turns, so the row
 * cannot change between the two): both or neither. A batch has no statement-level
 * atomicity: one that fails records nothing, and the messages are delivered again, which
 * the receivers deduplicate (as when this commit is lost in a crash). */
static void outbox_record(struct mcim_role *r, mcim_store_t *st, const struct outbox_batch *b,
                          struct outbox_outcome *out)
{
  static const char lease_holds[] =
      "SELECT 1 FROM outbox WHERE id = ? AND next_at = ? AND state = 'pending'";
  size_t at[sizeof(b->m) / sizeof(b->m[0])] = {0}; /* each message's update in the batch */
  size_t kept = 0;
  bool any = false;
  for (size_t i = 0; i < b->n; i++)
    any = any || out[i].claimed;
  if (!any) /* nothing of it was ours: no write at all */
    return;
  mcim_cause_t rc = mcim_store_begin_batch(st, true);
  for (size_t i = 0; rc == MCIM_OK && i < b->n; i++) {
    const struct outbox_msg *m = &b->m[i];
    const struct outbox_outcome *o = &out[i];
    if (!o->claimed)
      continue;
    if (o->unsent) { /* due again at once, for the next round */
      mcim_val_t rel[] = {MCIM_INT(m->next_at), MCIM_TEXT(m->id), MCIM_INT(o->lease)};
      rc = mcim_store_exec(st,
                           "UPDATE outbox SET next_at = ? WHERE id = ? AND next_at = ?"
                           " AND state = 'pending'",
                           rel, 3, NULL, NULL);
      kept++;
      continue;
    }
    if (o->held) { /* no attempt: due again when its predecessor is next tried */
      mcim_val_t h[] = {MCIM_INT(o->held), MCIM_TEXT(mcim_cause_name(MCIM_EARLIER_UNDELIVERED)),
                        MCIM_INT(mcim_now_us() / 1000), MCIM_TEXT(m->id), MCIM_INT(o->lease)};
      rc = mcim_store_exec(st,
                           "UPDATE outbox SET next_at = ?, last_cause = ?, ready_at = ?"
                           " WHERE id = ? AND next_at = ? AND state = 'pending'",
                           h, MCIM_NPARAMS(h), NULL, NULL);
      kept++;
      continue;
    }
    bool failed = strcmp(o->state, "failed") == 0;
    if (o->done || failed) {
      /* stamped when sent, so it sorts before what the receiver did with it */
      mcim_val_t cond[] = {MCIM_TEXT(m->id), MCIM_INT(o->lease)};
      if (mcim_crashpoint_armed())
        mcim_crashpoint_note(m->txn, (int)m->step);
      /* an overtaken notice or registration is delivered, and the chart says it changed
       * nothing */
      mcim_cause_t shown = o->done && o->rc != MCIM_NOTICE_OVERTAKEN &&
                                   o->rc != MCIM_REGISTRATION_OVERTAKEN
                               ? MCIM_OK
                               : o->rc;
      rc = mcim_trace_store_put_if(st, o->sent_us, m->txn, (int)m->step, r->name, m->peer, m->msg,
                                   o->body, shown, lease_holds, cond, 2);
      kept++;
    }
    mcim_val_t u[] = {MCIM_TEXT(o->state), MCIM_INT(o->attempts), MCIM_INT(o->next_at),
                      MCIM_TEXT(o->done ? NULL : mcim_cause_name(o->rc)), MCIM_TEXT(m->id),
                      MCIM_INT(o->lease)};
    if (rc == MCIM_OK)
      rc = mcim_store_exec(st,
                           "UPDATE outbox SET state = ?, attempts = ?, next_at = ?,"
                           " last_cause = ? WHERE id = ? AND next_at = ?"
                           " AND state = 'pending'",
                           u, MCIM_NPARAMS(u), NULL, NULL);
    at[i] = kept++;
  }
  if (rc == MCIM_OK)
    rc = mcim_store_commit(st);
  else if (mcim_store_in_txn(st))
    (void)mcim_store_rollback(st);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc,
                   "outbox outcomes not recorded (the messages are delivered again): %s",
                   mcim_store_errmsg(st));
    int64_t lease = 0; /* due again once their leases end */
    for (size_t i = 0; i < b->n; i++)
      if (out[i].claimed && out[i].lease > lease)
        lease = out[i].lease;
    note_due(r, lease);
    return;
  }
  for (size_t i = 0; i < b->n; i++) {
    const struct outbox_msg *m = &b->m[i];
    struct outbox_outcome *o = &out[i];
    if (!o->claimed)
      continue;
    if (o->unsent) { /* released: due again at once */
      note_due(r, m->next_at);
      continue;
    }
    if (o->held) { /* logged at its first hold only */
      if (!m->was_held)
        mcim_log_event(MCIM_LOG_INFO, m->txn, (int)m->step, MCIM_EARLIER_UNDELIVERED,
                       "%s -> %s held: %s waits for message %s", r->name, m->peer, m->msg,
                       m->after);
      note_due(r, o->held);
      continue;
    }
    o->recorded = mcim_store_batch_changes(st, at[i]) == 1;
    if (o->recorded && !o->done && strcmp(o->state, "pending") == 0)
      note_due(r, o->next_at); /* a retry */
    if (!o->recorded) {
      mcim_log_event(MCIM_LOG_INFO, m->txn, (int)m->step, MCIM_OK,
                     "delivery to %s outlived its claim: another round records it", m->peer);
      continue;
    }
    if (o->done || strcmp(o->state, "failed") == 0)
      mcim_log_event(o->done ? MCIM_LOG_INFO : MCIM_LOG_WARN, m->txn, (int)m->step,
                     o->done ? MCIM_OK : o->rc, "%s -> %s: %s", r->name, m->peer, m->msg);
  }
  for (size_t i = 0; i < b->n; i++) {
    const struct outbox_msg *m = &b->m[i];
    const struct outbox_outcome *o = &out[i];
    if (!o->recorded)
      continue;
    if (o->done) {
      mcim_metric_inc(&mcim_m_outbox_delivered, MCIM_LABELS(m->peer));
      continue;
    }
    mcim_metric_inc(&mcim_m_outbox_attempt_failures, MCIM_LABELS(m->peer, mcim_cause_name(o->rc)));
    if (strcmp(o->state, "failed") == 0) {
      mcim_metric_inc(&mcim_m_outbox_given_up, MCIM_LABELS(m->peer, mcim_cause_name(o->rc)));
      mcim_log_event(MCIM_LOG_ERROR, m->txn, (int)m->step, o->rc, "gave up delivering to %s: %s",
                     m->peer, o->detail);
    } else {
      mcim_log_event(MCIM_LOG_WARN, m->txn, (int)m->step, o->rc,
                     "delivery to %s failed (attempt %lld), retrying: %s", m->peer,
                     (long long)o->attempts, o->detail);
    }
  }
}

/* Up to `max` of the messages handed to the worker, claimed already (their leases), oldest
 * first; more left: the worker runs another round at once. */
static size_t take_handed(struct mcim_role *r, struct outbox_batch *b, struct outbox_outcome *out,
                          size_t max)
{
  struct mcim_role_priv *p = r->priv;
  pthread_mutex_lock(&p->lock);
  while (p->handed && b->n < max) {
    struct outbox_handed *h = p->handed;
    p->handed = h->next;
    b->m[b->n] = h->m;
    out[b->n].claimed = true;
    out[b->n].lease = h->lease;
    b->n++;
    free(h);
  }
  if (!p->handed)
    p->handed_tail = &p->handed;
  else
    p->wake = true;
  pthread_mutex_unlock(&p->lock);
  return b->n;
}

/* A handed message goes out only while its row is still as its writer left it: pending,
 * under the lease it was written with. Whatever changed it after that commit is obeyed, not
 * overridden from memory: a hold (tests/integration/discovery_recovery.sh keeps an
 * announcement back with a trigger that marks it `held`), a delete, an instance that claimed
 * it after the lease ran out. One primary-key read each, no transaction; a store that cannot
 * answer leaves the message to be sent, as the commit that wrote it stands. */
static void handed_check(mcim_store_t *st, const struct outbox_batch *b,
                         struct outbox_outcome *out, size_t handed)
{
  for (size_t i = 0; i < handed; i++) {
    int64_t n = 1;
    mcim_val_t p[] = {MCIM_TEXT(b->m[i].id), MCIM_INT(out[i].lease)};
    if (mcim_store_query_int(st,
                             "SELECT COUNT(*) FROM outbox WHERE id = ? AND state = 'pending'"
                             " AND next_at = ?",
                             p, 2, &n) == MCIM_OK &&
        n == 0)
      out[i].claimed = false;
  }
}

/* Whether message i of the round waits for its `after`, not yet delivered nor given up (the
 * RO's undo of a switch: the current SHO's resume after the target's suspend, relay.c): 0 if
 * not, else when to look again (ms). That is when the predecessor is next tried (a retry's
 * time, or the end of the lease of a round sending it now, in another instance), at least one
 * backoff and at most one lease (two peer timeouts) away: a held message costs a write per
 * retry of its predecessor, at most one per lease, and goes at most a lease after its
 * predecessor was delivered elsewhere. An `after` sent in this very round counts as its
 * outcome says; one the store cannot be asked about holds (never out of order). */
static int64_t held_until(struct mcim_role *r, mcim_store_t *st, const struct outbox_batch *b,
                          const struct outbox_outcome *out, size_t i)
{
  const struct outbox_msg *m = &b->m[i];
  int64_t now = mcim_now_us() / 1000, next = -1;
  int64_t soonest = now + mcim_config_int(r->cfg, "outbox_backoff_ms");
  int64_t latest = now + 2 * mcim_config_int(r->cfg, "peer_timeout_ms");
  bool in_round = false;
  if (!m->after[0])
    return 0;
  for (size_t j = 0; j < i && !in_round; j++)
    if (out[j].claimed && !out[j].unsent && !out[j].held && strcmp(b->m[j].id, m->after) == 0) {
      in_round = true;
      if (!out[j].done && strcmp(out[j].state, "failed") != 0)
        next = out[j].next_at;
    }
  mcim_val_t p[] = {MCIM_TEXT(m->after)};
  if (!in_round && mcim_store_query_int(st,
                                        "SELECT COALESCE(MAX(next_at), -1) FROM outbox"
                                        " WHERE id = ? AND state NOT IN ('delivered', 'failed')",
                                        p, 1, &next) != MCIM_OK)
    return soonest;
  if (next < 0)
    return 0;
  if (next > latest)
    next = latest;
  return next > soonest ? next : soonest;
}

/* One round of the outbox: the messages handed by their writers (claimed as they were
 * written), then, when the worker polls, up to 16 in all with those found due in the store
 * (claimed together), sent one after the other while each one's lease allows, their outcomes
 * recorded together. */
size_t mcim_role_outbox_run(struct mcim_role *r, bool poll)
{
  mcim_store_t *st = mcim_role_store(r);
  size_t found = 0;
  if (!st)
    return 0;
  struct outbox_batch b = {0};
  struct outbox_outcome out[sizeof(b.m) / sizeof(b.m[0])];
  memset(out, 0, sizeof(out));
  size_t handed = take_handed(r, &b, out, sizeof(b.m) / sizeof(b.m[0]));
  handed_check(st, &b, out, handed);
  int64_t now = mcim_now_us() / 1000;
  mcim_val_t p[] = {MCIM_INT(now)};
  /* Retries come due, and messages of an instance that died or not claimed as written: found
   * in the store, only when the worker polls (its own retries when due, the rest within
   * idle_tick_max_ms: mcim_role_worker_main); what is handed goes without a look. */
  mcim_cause_t prc = MCIM_OK;
  if (poll && handed == sizeof(b.m) / sizeof(b.m[0]))
    found = 1; /* no room to look: soon again */
  else if (poll &&
           (prc = mcim_store_exec(st,
                                  "SELECT id, peer, path, body, txn, step, msg, attempts,"
                                  " next_at, max_attempts, created, after_id, ready_at,"
                                  " last_cause FROM outbox"
                                  " WHERE state = 'pending' AND next_at <= ? ORDER BY created"
                                  " LIMIT 16",
                                  p, 1, outbox_row, &b)) == MCIM_OK &&
           b.n > handed) {
    found = b.n - handed;
    outbox_claim(r, st, &b, handed, out);
  }
  if (prc != MCIM_OK) /* retries and orphans wait for the next poll */
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, prc, "outbox: the store's due messages not read: %s",
                   mcim_store_errmsg(st));
  if (b.n == 0)
    goto cleanup;
  int64_t timeout = mcim_config_int(r->cfg, "peer_timeout_ms");
  for (size_t i = 0; i < b.n; i++) {
    if (!out[i].claimed)
      continue;
    /* A delivery takes one peer timeout at most, plus its own set-up: started in the
     * lease's first quarter, it ends well inside it (two timeouts). */
    if (mcim_now_us() / 1000 - (out[i].lease - 2 * timeout) >= timeout / 2)
      out[i].unsent = true;
    else if ((out[i].held = held_until(r, st, &b, out, i)) == 0)
      outbox_send(r, &b.m[i], &out[i]);
  }
  outbox_record(r, st, &b, out);
cleanup:
  for (size_t i = 0; i < b.n; i++) {
    json_decref(out[i].body);
    outbox_msg_free(&b.m[i]);
  }
  if (poll) { /* when the next message in the store comes due: a retry, a lease that ends */
    int64_t next = 0;
    mcim_val_t q[] = {MCIM_INT(mcim_now_us() / 1000)};
    if (mcim_store_query_int(st,
                             "SELECT COALESCE(MIN(next_at), 0) FROM outbox WHERE state = 'pending'"
                             " AND next_at > ?",
                             q, 1, &next) == MCIM_OK &&
        next > 0)
      note_due(r, next);
  }
  return found;
}

void mcim_role_outbox_stop(struct mcim_role *r)
{
  struct mcim_role_priv *p = r->priv;
  pthread_mutex_lock(&p->lock);
  struct outbox_handed *list = p->handed;
  p->handed = NULL;
  p->handed_tail = &p->handed;
  pthread_mutex_unlock(&p->lock);
  mcim_store_t *st = list ? mcim_role_store(r) : NULL;
  bool in_txn = st && mcim_store_begin_relaxed(st) == MCIM_OK;
  while (list) {
    struct outbox_handed *h = list;
    list = h->next;
    /* due at once, unless another instance has claimed it since (its lease ran out) */
    mcim_val_t rel[] = {MCIM_INT(h->m.created), MCIM_TEXT(h->m.id), MCIM_INT(h->lease)};
    if (in_txn)
      mcim_store_exec(st,
                      "UPDATE outbox SET next_at = ? WHERE id = ? AND next_at = ?"
                      " AND state = 'pending'",
                      rel, 3, NULL, NULL);
    handed_free(h);
  }
  if (in_txn && mcim_store_commit(st) != MCIM_OK)
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_STORE_ERROR,
                   "outbox messages not released at stop (sent once their leases end): %s",
                   mcim_store_errmsg(st));
}
