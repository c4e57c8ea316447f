/* Rollback protection of the TPM TRE (issue 11 point 5; docs/tre-tpm.md, "Rollback"): the
 * sealed state is bound to a TPM NV monotonic counter, so that putting back an older copy of
 * tre.sealed / tre.sealed.1 (both slots, or one) is detected and refused (MCIM_TRE_ROLLBACK).
 *
 * The binding. At manufacture the TRE defines its own counter index (tpm_nv.c: owner range,
 * TPM_NT_COUNTER, incremented and read only with a random 32-byte authValue kept in the sealed
 * document; undefined only with the owner's authorisation; never reset), increments it once
 * and reads its value c0. The document records
 *
 *   "tpm_counter": {"index": N, "name": B64URL(NV name), "auth": B64URL(32 bytes),
 *                   "base": "c0"}
 *
 * and never changes it. Every write of the state is followed by exactly one TPM2_NV_Increment,
 * and the slot's generation g (in its header, authenticated as the seal's context) is the
 * counter's value minus the base: once the write of generation g has completed, counter ==
 * base + g. The document is not rewritten to record the counter: the generation already is
 * it, and a slot relabelled with another generation does not open.
 *
 * Order: the slot first, the increment after (why not the other way round). With C the
 * counter's value and g the generation of the newest slot that opens, a write of g+1 is
 *
 *   1. seal g+1 into the other slot, fdatasync     (counter C = base + g)
 *   2. TPM2_NV_Increment                           (counter C = base + g + 1)
 *
 * and a crash leaves one of:
 *   - before 1 is durable: the new slot torn (does not open) or still the older g-1; the
 *     newest that opens is g, and base + g == C: accepted, exactly as before the write;
 *   - between 1 and 2: slot g+1 whole, counter still base + g: base + g+1 == C + 1. This is
 *     the one state where the files are AHEAD of the counter by one; it can only be made by
 *     this TRE (a sealed slot of g+1 needs the storage key) and only be the newest state there
 *     is. It is accepted and the increment the crash skipped is done then (rolled forward);
 *   - after 2: base + g+1 == C: accepted.
 * So the rule at every load (tre_load, under the TRE's lock) for the newest slot that opens:
 *
 *   base + g == C      the current state: accepted
 *   base + g == C + 1  a write whose increment was lost: accepted, counter incremented now
 *   base + g <  C      an older state: REFUSED, MCIM_TRE_ROLLBACK (logged with both values)
 *   base + g >  C + 1  not this counter's state (cannot happen without the counter replaced):
 *                      REFUSED, MCIM_TRE_ROLLBACK
 *
 * Incrementing first would need the rule "accept base + g == C - 1" for the crash between the
 * increment and a slot write that never reached the disk; the newest state then looks exactly
 * like the state before the latest write, and a copy of the files taken before that write
 * would be accepted too: every write would leave a rollback window of one state (one AKA's SQN,
 * one discarded MCIM back). Incrementing after leaves none: a copy taken before any completed
 * write is at least one behind and refused. Its cost is the case above: a state written whose
 * increment failed (the TPM gone between the two) is durable and answered as written, and is
 * rolled forward by the next load, or by the next write of this handle before it writes
 * (t->fresh_lag); a write never goes ahead with the counter more than one behind.
 *
 * What this does not cover (docs/tre.md, side by side): the owner of the TPM (owner
 * authorisation) can undefine the index; a counter defined again starts no lower than the
 * highest value of any counter undefined before (TPM 2.0 Part 1, NV counters; libtpms keeps it
 * at TPM2_NV_UndefineSpace), so the files stay behind it and are refused, and the recorded name
 * (which hashes the index's type and attributes) refuses any other kind of index at the
 * handle. A TPM TRE's state without "tpm_counter" (every TPM TRE binds its first write to one)
 * cannot be vouched for: refused, MCIM_TRE_ROLLBACK. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_nv.h"
#include "tre/tpm/tpm_quote.h"
#include "tre/tre_priv.h"

#define MEMBER_COUNTER "tpm_counter"

struct counter {
  TPM2_HANDLE index;
  TPM2B_NAME name;
  uint8_t auth[MCIM_TPM_NV_AUTH_LEN];
  uint64_t base;
};

static mcim_cause_t b64_member(json_t *c, const char *m, uint8_t *out, size_t cap, size_t *len)
{
  const char *s = tre_str(c, m);
  if (!s || mcim_b64url_decode(s, strlen(s), out, cap, len) != MCIM_OK)
    return MCIM_KEY_INVALID;
  return MCIM_OK;
}

/* The document's counter. A TPM TRE's state has one from its first write on (fresh_create):
 * a state without one is not vouched for by the TPM, MCIM_TRE_ROLLBACK. */
static mcim_cause_t counter_of(struct tre_soft *t, json_t *st, struct counter *c)
{
  json_t *j = json_object_get(st, MEMBER_COUNTER);
  const char *base = NULL;
  char *end = NULL;
  size_t len = 0, alen = 0;
  json_int_t index = 0;

  memset(c, 0, sizeof(*c));
  const char *backend = tre_str(st, "backend");
  if (!backend || strcmp(backend, TRE_BACKEND_TPM) != 0) {
    /* another backend's state (tre_open says so too): not ours to vouch for */
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_CONFIG_INVALID,
                   "tre: %s is a %s TRE, not a tpm one (agent.json: \"tre_backend\")", t->dir,
                   backend ? backend : "soft");
    return MCIM_CONFIG_INVALID;
  }
  if (!j) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_TRE_ROLLBACK,
                   "tre: %s: the state is bound to no TPM counter: its freshness cannot be"
                   " proven; refused",
                   t->dir);
    return MCIM_TRE_ROLLBACK;
  }
  index = json_integer_value(json_object_get(j, "index"));
  base = tre_str(j, "base");
  if (!json_is_integer(json_object_get(j, "index")) ||
      index < (json_int_t)MCIM_TPM_NV_COUNTER_FIRST ||
      index >= (json_int_t)(MCIM_TPM_NV_COUNTER_FIRST + MCIM_TPM_NV_COUNTER_TRIES) || !base ||
      base[0] < '0' || base[0] > '9' ||
      b64_member(j, "name", c->name.name, sizeof(c->name.name), &len) != MCIM_OK ||
      b64_member(j, "auth", c->auth, sizeof(c->auth), &alen) != MCIM_OK ||
      alen != MCIM_TPM_NV_AUTH_LEN || len == 0)
    goto invalid;
  errno = 0;
  unsigned long long b = strtoull(base, &end, 10);
  if (errno || *end)
    goto invalid;
  c->base = (uint64_t)b;
  c->index = (TPM2_HANDLE)index;
  c->name.size = (UINT16)len;
  return MCIM_OK;
invalid:
  mcim_wipe(c, sizeof(*c));
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_KEY_INVALID,
                 "tre: the state's %s is not a TPM counter", MEMBER_COUNTER);
  return MCIM_KEY_INVALID;
}

__attribute__((format(printf, 2, 3))) static mcim_cause_t rollback(struct tre_soft *t,
                                                                   const char *fmt, ...)
{
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_TRE_ROLLBACK, "tre: %s: %s; refused", t->dir, what);
  return MCIM_TRE_ROLLBACK;
}

/* Manufacture: the counter, and its record in the document. */
mcim_cause_t tre_tpm_fresh_create(struct tre_soft *t, json_t *st)
{
  struct counter c = {0};
  mcim_tpm_t *tpm = NULL;
  char name[64], auth[64], base[24];
  json_t *j = NULL;
  mcim_cause_t rc = mcim_random(c.auth, sizeof(c.auth));

  if (rc == MCIM_OK)
    rc = tre_tpm_connection(t, &tpm);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = mcim_tpm_nv_counter_define(tpm, c.auth, &c.index, &c.name, &c.base);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: cannot make the TRE's counter: %s",
                   mcim_tpm_detail(tpm));
    goto cleanup;
  }
  mcim_b64url_encode(c.name.name, c.name.size, name);
  mcim_b64url_encode(c.auth, sizeof(c.auth), auth);
  snprintf(base, sizeof(base), "%" PRIu64, c.base);
  rc = MCIM_NO_MEMORY;
  j = json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)c.index, "name", name, "auth", auth,
                "base", base);
  if (!j || json_object_set_new(st, MEMBER_COUNTER, j) != 0)
    goto cleanup;
  mcim_log_info("tre: %s: state bound to TPM counter 0x%08x (base %s)", t->dir, (unsigned)c.index,
                base);
  rc = MCIM_OK;
cleanup:
  mcim_wipe(auth, sizeof(auth));
  mcim_wipe(&c, sizeof(c));
  return rc;
}

/* The rule of the block comment above, for the newest slot that opens (generation `gen`). */
mcim_cause_t tre_tpm_fresh_check(struct tre_soft *t, json_t *st, uint64_t gen)
{
  struct counter c;
  mcim_tpm_t *tpm = NULL;
  uint64_t now = 0;
  mcim_cause_t rc = counter_of(t, st, &c);

  if (rc != MCIM_OK)
    goto cleanup;
  if ((rc = tre_tpm_connection(t, &tpm)) != MCIM_OK)
    goto cleanup;
  rc = mcim_tpm_nv_counter_read(tpm, c.index, &c.name, c.auth, &now);
  if (rc == MCIM_NOT_FOUND || rc == MCIM_CONFLICT) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, MCIM_TRE_ROLLBACK,
                   "tre: %s: the TPM counter the state is bound to is gone or replaced (%s):"
                   " its freshness cannot be proven; refused",
                   t->dir, mcim_tpm_detail(tpm));
    rc = MCIM_TRE_ROLLBACK;
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s", mcim_tpm_detail(tpm));
    goto cleanup;
  }
  if (gen > UINT64_MAX - c.base || now < c.base) {
    rc = rollback(t, "generation %" PRIu64 " does not fit the TPM counter (%" PRIu64 ")", gen, now);
    goto cleanup;
  }
  uint64_t at = now - c.base; /* the generation of the last write whose increment completed */
  if (gen == at) {
    rc = MCIM_OK;
  } else if (gen == at + 1) {
    rc = mcim_tpm_nv_counter_increment(tpm, c.index, &c.name, c.auth);
    if (rc != MCIM_OK)
      mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s", mcim_tpm_detail(tpm));
    else
      mcim_log_event(MCIM_LOG_WARN, NULL, 0, MCIM_OK,
                     "tre: %s: generation %" PRIu64 " was written but its counter increment"
                     " was not (a crash, or the TPM away, between the two): counter"
                     " incremented now",
                     t->dir, gen);
  } else if (gen < at) {
    rc = rollback(t,
                  "the state is generation %" PRIu64 " but the TPM counter says generation %" PRIu64
                  " was written: an older state file was put back",
                  gen, at);
  } else {
    rc = rollback(t,
                  "the state is generation %" PRIu64 ", ahead of the TPM counter's %" PRIu64
                  ": not the counter this state was written with",
                  gen, at);
  }
cleanup:
  mcim_wipe(&c, sizeof(c));
  return rc;
}

/* After the slot of a new generation is durable: the one increment of the write. */
mcim_cause_t tre_tpm_fresh_advance(struct tre_soft *t, json_t *st)
{
  struct counter c;
  mcim_tpm_t *tpm = NULL;
  mcim_cause_t rc = counter_of(t, st, &c);

  if (rc == MCIM_OK && (rc = tre_tpm_connection(t, &tpm)) == MCIM_OK &&
      (rc = mcim_tpm_nv_counter_increment(tpm, c.index, &c.name, c.auth)) != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM: %s", mcim_tpm_detail(tpm));
  mcim_wipe(&c, sizeof(c));
  return rc;
}
