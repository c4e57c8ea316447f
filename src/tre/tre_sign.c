/* Statements the TRE signs (device statements, the quote, queued notifications) and the one
 * kind it verifies for the agent (the owner's instructions). */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

/* What the agent may have signed. The quote has its own op (its claims come from inside the
 * TRE), and nothing of another issuer's types: a compromised agent cannot make the TRE vouch
 * for an order, a package or a token. Nor a discard receipt: it is the TRE's word that the
 * MCIM is destroyed, so only the discard and pristine ops queue one (tre_slots.c). */
static const char *const device_types[] = {"mcim-status+jwt", "mcim-notify+jwt",
                                           "mcim-renew+jwt", "mcim-request+jwt", NULL};

/* The owner's switch instructions the TRE verified (verify_owner): the only authority for a
 * suspend or resume notice. "switches": [{"txn", "to", "from"?, "from_net", "to_net",
 * "created"}], the oldest dropped beyond TRE_MAX_SWITCHES. "from" is the slot active when the
 * instruction was verified; "from_net" and "to_net" what the TRE last vouched for that slot's
 * subscription ("active" or "standby"). */
#define TRE_SWITCHES "switches"
#define TRE_MAX_SWITCHES 8
/* The device's count of suspend and resume notices signed (notify_check). */
#define TRE_NOTICE_SEQ "notice_seq"
/* Moves of one switch's slot records: the switch (suspend from, resume to), its undo, the
 * switch again and its undo. Each move is a notice the SHO applies and the RO may relay and
 * keep: without a bound, one instruction of the owner's let an agent flip a subscription for
 * ever (review of 2026-12-06). */
#define TRE_MAX_SWITCH_MOVES 8

static bool slot_in_state(json_t *slots, const char *name, const char *state)
{
  ssize_t i = name ? tre_find(slots, "slot", name) : -1;
  const char *is = i >= 0 ? tre_str(json_array_get(slots, (size_t)i), "state") : NULL;
  return is && strcmp(is, state) == 0;
}

/* A status says "success" only for a txn whose MCIM this TRE holds installed: install and
 * install_inactive record the txn in its slot (tre_slots.c), and only they make one. The DPF
 * takes "success" as the install and the SHO activates the subscription on it. A failure, of
 * any cause, the device may report for any txn. */
static mcim_cause_t status_check(json_t *st, const char *txn, json_t *extra)
{
  json_t *result = json_object_get(extra, "result");
  if (!result)
    return MCIM_OK; /* claims nothing: the DPF refuses a status without a result */
  if (!json_is_string(result))
    return MCIM_INVALID_ARGUMENT;
  if (strcmp(json_string_value(result), "success") != 0)
    return MCIM_OK;
  json_t *slots = json_object_get(st, "slots"), *claimed = json_object_get(extra, "slot");
  ssize_t i = txn ? tre_find(slots, "txn", txn) : -1;
  json_t *s = i >= 0 ? json_array_get(slots, (size_t)i) : NULL;
  const char *name = tre_str(s, "slot"), *state = tre_str(s, "state");
  if (!name || !state || (strcmp(state, "active") != 0 && strcmp(state, "inactive") != 0)) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_FORBIDDEN,
                   "tre: refusing a success status: no MCIM installed for this txn");
    return MCIM_FORBIDDEN;
  }
  if (claimed && (!json_is_string(claimed) || strcmp(json_string_value(claimed), name) != 0)) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_CLAIM_MISMATCH,
                   "tre: refusing a success status for another slot than %s", name);
    return MCIM_CLAIM_MISMATCH;
  }
  return MCIM_OK;
}

/* A suspend or resume notice only within a switch the owner instructed (its txn recorded at
 * verify_owner), about its two slots, while the TRE holds them as the switch found them (the
 * one switched from active, the target inactive: after activate, nothing more), and never a
 * resume while the TRE vouches the other slot's subscription active (two live subscriptions).
 * That covers the switch (suspend from, resume to) and its undo (suspend to, resume from).
 *
 * *seq: the notice's place in this device's order of notices, which the SHO applies only
 * upward (change.c). The notices of a switch and of its undo reach an SHO by different roads
 * (straight, or through the RO's outbox, which keeps no order per peer), so the target's
 * resume can land after the undo's suspend: without the order, two live subscriptions. Each
 * move of a slot's record takes the next value of the device's counter (TRE_NOTICE_SEQ,
 * never reset, not even by pristine); a notice re-signed for the record as it is keeps the
 * value it had, so a retry is the same notice to the SHO. *changed: the record moved, the
 * caller commits before the notice leaves. */
/* How many times switch record j moved a slot's record (notify_check). */
static json_int_t switch_moves(const json_t *list, size_t j)
{
  return json_integer_value(json_object_get(json_array_get(list, j), "moves"));
}

static mcim_cause_t notify_check(json_t *st, const char *txn, json_t *extra, bool *changed,
                                 json_int_t *seq, const char **leg)
{
  const char *event = tre_str(extra, "event"), *slot = tre_str(extra, "slot");
  const char *imsi = tre_str(extra, "imsi");
  if (!event || !slot || !imsi)
    return MCIM_INVALID_ARGUMENT;
  bool resume = strcmp(event, "resume") == 0;
  if (!resume && strcmp(event, "suspend") != 0)
    return MCIM_INVALID_ARGUMENT;
  json_t *slots = json_object_get(st, "slots"), *list = json_object_get(st, TRE_SWITCHES);
  ssize_t i = tre_find(slots, "slot", slot);
  if (i < 0)
    return MCIM_NOT_FOUND;
  const char *held = tre_str(json_array_get(slots, (size_t)i), "imsi");
  if (!held || strcmp(held, imsi) != 0)
    return MCIM_CLAIM_MISMATCH;
  ssize_t k = txn ? tre_find(list, "txn", txn) : -1;
  json_t *sw = k >= 0 ? json_array_get(list, (size_t)k) : NULL;
  const char *to = tre_str(sw, "to"), *from = tre_str(sw, "from");
  bool is_to = to && strcmp(slot, to) == 0, is_from = from && strcmp(slot, from) == 0;
  if (!is_to && !is_from) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_FORBIDDEN,
                   "tre: refusing a %s notice for %s: no switch of the owner's in this txn "
                   "names it", event, slot);
    return MCIM_FORBIDDEN;
  }
  /* A later switch that moved a slot's record: this one's notices are over, its retries
   * included (an undo the agent asks again for, preprovisioned.c, must not resume a
   * subscription a newer switch suspended). Records are kept in the order instructed. */
  for (size_t j = (size_t)k + 1; j < json_array_size(list); j++)
    if (switch_moves(list, j) > 0) {
      mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_WRONG_STATE,
                     "tre: refusing a %s notice for %s: a later switch moved the slots", event,
                     slot);
      return MCIM_WRONG_STATE;
    }
  /* Which way the notice goes: the slot the switch leaves ("from": its suspend is sent
   * straight, to the SHO whose token the device holds) or enters ("to": relayed by the RO).
   * The RO relays a suspend of the "from" leg (the current SHO did not take it by the
   * device's ack_deadline) outside the device's chain only (relay.c): that SHO could bring it
   * there too. */
  *leg = is_to ? "to" : "from";
  const char *mine = is_to ? "to_net" : "from_net", *other = is_to ? "from_net" : "to_net";
  const char *other_net = tre_str(sw, other);
  if (!slot_in_state(slots, from, "active") || !slot_in_state(slots, to, "inactive") ||
      (resume && (!other_net || strcmp(other_net, "standby") != 0))) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_WRONG_STATE,
                   "tre: refusing a %s notice for %s: not in the state of the switch", event,
                   slot);
    return MCIM_WRONG_STATE;
  }
  const char *want = resume ? "active" : "standby", *was = tre_str(sw, mine);
  const char *mine_seq = is_to ? "to_seq" : "from_seq";
  *seq = json_integer_value(json_object_get(sw, mine_seq));
  if (was && strcmp(was, want) == 0 && *seq > 0)
    return MCIM_OK;
  json_int_t moves = switch_moves(list, (size_t)k);
  if (moves >= TRE_MAX_SWITCH_MOVES) {
    *seq = 0;
    mcim_log_event(MCIM_LOG_WARN, txn, 0, MCIM_WRONG_STATE,
                   "tre: refusing a %s notice for %s: this switch's slots moved %d times",
                   event, slot, TRE_MAX_SWITCH_MOVES);
    return MCIM_WRONG_STATE;
  }
  json_int_t last = json_integer_value(json_object_get(st, TRE_NOTICE_SEQ));
  if (last < 0 || last >= ((json_int_t)1 << 53))
    return MCIM_INTERNAL; /* our own state, never a peer's input */
  *seq = last + 1;
  *changed = true;
  if (json_object_set_new(st, TRE_NOTICE_SEQ, json_integer(*seq)) ||
      json_object_set_new(sw, mine_seq, json_integer(*seq)) ||
      json_object_set_new(sw, "moves", json_integer(moves + 1)) ||
      json_object_set_new(sw, mine, json_string(want)))
    return MCIM_NO_MEMORY;
  return MCIM_OK;
}

/* verify_owner: an instruction to switch, about this device, is recorded with the slot then
 * active, in the same write as its jti. The first instruction of a txn stays. */
static mcim_cause_t switch_record(json_t *st, const mcim_statement_t *stmt)
{
  const char *procedure = mcim_statement_string(stmt, "procedure");
  const char *sho = mcim_statement_string(stmt, "sho"), *txn = stmt->claims.txn;
  const char *sub = stmt->claims.sub, *device = tre_str(st, "device");
  if (!procedure || strcmp(procedure, "switch") != 0 || !sho || !txn || !*txn || !sub ||
      !device || strcmp(sub, device) != 0)
    return MCIM_OK;
  json_t *list = json_object_get(st, TRE_SWITCHES);
  if (!list && json_object_set_new(st, TRE_SWITCHES, list = json_array()))
    return MCIM_NO_MEMORY;
  if (tre_find(list, "txn", txn) >= 0)
    return MCIM_OK;
  /* Room for the new one: the oldest record that never moved a slot goes first (an
   * instruction the agent could not act on: an owner retrying a switch while the device's
   * undo of an earlier one is still owed, preprovisioned.c), then the oldest. A record that
   * moved is what an undo's notices are signed against: dropped, the undo is refused. */
  while (json_array_size(list) >= TRE_MAX_SWITCHES) {
    size_t drop = 0;
    for (size_t j = 0; j < json_array_size(list); j++)
      if (switch_moves(list, j) == 0) {
        drop = j;
        break;
      }
    json_array_remove(list, drop);
  }
  const char *from = NULL;
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(st, "slots"), i, s) {
    if (tre_str(s, "state") && strcmp(tre_str(s, "state"), "active") == 0)
      from = tre_str(s, "slot");
  }
  json_t *e = json_pack("{s:s, s:s, s:s?, s:s, s:s, s:I}", "txn", txn, "to", sho, "from", from,
                        "from_net", "active", "to_net", "standby", "created",
                        (json_int_t)mcim_now());
  return e && json_array_append_new(list, e) == 0 ? MCIM_OK : MCIM_NO_MEMORY;
}

mcim_cause_t tre_op_sign(void *ctx, const char *typ, const char *aud, const char *txn,
                         json_t *extra, int64_t lifetime, char **jws)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *mine = NULL;
  bool held = false, allowed = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !typ || !jws)
    goto cleanup;
  for (const char *const *d = device_types; *d; d++)
    allowed = allowed || strcmp(*d, typ) == 0;
  rc = MCIM_FORBIDDEN;
  if (!allowed) {
    mcim_log_event(MCIM_LOG_WARN, txn, 0, rc, "tre: refusing to sign a '%s'", typ);
    goto cleanup;
  }
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  bool moved = false;
  json_int_t seq = 0;
  const char *leg = NULL;
  if (strcmp(typ, "mcim-status+jwt") == 0)
    rc = status_check(st, txn, extra);
  else if (strcmp(typ, "mcim-notify+jwt") == 0)
    rc = notify_check(st, txn, extra, &moved, &seq, &leg);
  if (rc == MCIM_OK && moved)
    rc = tre_commit(t, st); /* what the TRE vouched for is durable before the notice leaves */
  if (rc != MCIM_OK)
    goto cleanup;
  if (seq > 0) { /* the TRE's order and the notice's leg, whatever the agent put there */
    mine = json_copy(extra);
    if (!mine || json_object_set_new(mine, "seq", json_integer(seq)) ||
        json_object_set_new(mine, "leg", json_string(leg))) {
      rc = MCIM_NO_MEMORY;
      goto cleanup;
    }
    extra = mine;
  }
  /* A PCID renewal request of a TPM TRE offers the slot key the issuer is to wrap the new K
   * to, certified by the AK over the txn (docs/tre-tpm.md, "The PCID credential's K"). */
  if (strcmp(typ, "mcim-renew+jwt") == 0 && t->keys->pcid_slot_offer && txn) {
    json_t *offer = NULL;
    bool made = false;
    rc = t->keys->pcid_slot_offer(t, st, txn, &offer, &made);
    if (rc == MCIM_OK && made)
      rc = tre_commit(t, st); /* before the offer leaves */
    if (rc == MCIM_OK) {
      mine = extra ? json_copy(extra) : json_object();
      if (!mine || json_object_set(mine, "tpm_slot", offer))
        rc = MCIM_NO_MEMORY;
    }
    json_decref(offer);
    if (rc != MCIM_OK)
      goto cleanup;
    extra = mine;
  }
  rc = tre_sign_statement(t, st, typ, aud, txn, extra, lifetime, jws);
cleanup:
  if (held)
    tre_end(t, st);
  json_decref(mine);
  return rc;
}

mcim_cause_t tre_log_digest(json_t *log, char out[65])
{
  uint8_t d[32] = {0}, m[32], buf[64];
  unsigned int len = 0;
  size_t i;
  json_t *item;

  /* d0 = 0^256, d(i+1) = SHA-256(d(i) || m(i)): a PCR extend, so the verifier replays the
   * log and compares one value, and the order of the log is bound too. */
  json_array_foreach(log, i, item) {
    if (mcim_hex_decode_str(tre_str(item, "digest"), m, sizeof(m)) != MCIM_OK)
      return MCIM_INTERNAL;
    memcpy(buf, d, 32);
    memcpy(buf + 32, m, 32);
    if (EVP_Digest(buf, sizeof(buf), d, &len, EVP_sha256(), NULL) != 1 || len != 32)
      return MCIM_CRYPTO_ERROR;
  }
  mcim_hex_encode(d, sizeof(d), out);
  return MCIM_OK;
}

mcim_cause_t tre_op_quote(void *ctx, const char *aud, const char *txn, const char *nonce,
                          int64_t lifetime, char **jws)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *extra = NULL, *ka = NULL, *slot = NULL;
  char digest[65];
  bool held = false, created = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !nonce || !*nonce || !txn || !*txn || !jws)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  /* The procedure's own KA key (tre_txn.c), which its package is to be sealed to: vouched
   * for by this signature (the PVA checks it, the SHO too) and made durable before its
   * public key leaves, so a restart never seals a package to a key that is gone. */
  rc = tre_txn_key_jwk(t, st, txn, &ka, &created);
  /* and, in a TPM TRE with an attestation key, the slot key the SHO is to wrap K to, certified
   * by that key over the txn (tre_txn.c); durable before it leaves, as the KA key */
  bool slot_made = false;
  if (rc == MCIM_OK)
    rc = tre_txn_slot_offer(t, st, txn, &slot, &slot_made);
  if (rc == MCIM_OK && (created || slot_made))
    rc = tre_commit(t, st);
  if (rc != MCIM_OK) {
    /* a slot key the state does not record would hold a persistent handle for ever */
    json_t *made = slot_made ? tre_txn_slot(st, txn) : NULL;
    if (made && t->keys->txn_slot_destroy)
      (void)t->keys->txn_slot_destroy(t, st, made);
    goto cleanup;
  }
  json_t *log = json_object_get(st, "measurements");
  rc = tre_log_digest(log, digest);
  if (rc != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  /* the PVA picks the RIMs of the device's model */
  extra = json_pack("{s:s, s:s?, s:O, s:s, s:O}", "nonce", nonce, "model", tre_str(st, "model"),
                    "log", log, "digest", digest, "ka_jwk", ka);
  if (!extra || (slot && json_object_set(extra, "tpm_slot", slot)))
    goto cleanup;
  rc = tre_sign_statement(t, st, TRE_TYP_QUOTE, aud, txn, extra, lifetime, jws);
cleanup:
  json_decref(ka);
  json_decref(slot);
  json_decref(extra);
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t tre_op_pending(void *ctx, int64_t lifetime, json_t **out)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL, *list = NULL, *item;
  char *jws = NULL;
  size_t i;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !out || lifetime <= 0 || lifetime > MCIM_TRE_MAX_LIFETIME)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = MCIM_NO_MEMORY;
  list = json_array();
  if (!list)
    goto cleanup;
  /* Signed when handed out, not when queued: a notice that waits for connectivity for
   * longer than a statement lives still arrives valid. */
  json_array_foreach(json_object_get(st, "pending"), i, item) {
    const char *to = tre_str(item, "to"), *txn = tre_str(item, "txn"), *typ = tre_str(item, "typ");
    json_t *extra = json_object_get(item, "extra");
    rc = tre_sign_statement(t, st, typ, to, txn, json_is_object(extra) ? extra : NULL, lifetime,
                            &jws);
    if (rc != MCIM_OK)
      goto cleanup;
    rc = MCIM_NO_MEMORY;
    if (json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s}", "to", to, "txn", txn,
                                              "typ", typ, "statement", jws)))
      goto cleanup;
    free(jws);
    jws = NULL;
  }
  *out = list;
  list = NULL;
  rc = MCIM_OK;
cleanup:
  free(jws);
  json_decref(list);
  if (held)
    tre_end(t, st);
  return rc;
}

mcim_cause_t tre_op_pending_done(void *ctx, const char *to, const char *txn)
{
  struct tre_soft *t = ctx;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !to || !txn)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  json_t *pending = json_object_get(st, "pending");
  ssize_t i = tre_find2(pending, "to", to, "txn", txn);
  rc = MCIM_NOT_FOUND;
  if (i < 0)
    goto cleanup;
  json_array_remove(pending, (size_t)i);
  rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, txn, 0, rc, "tre: notification to %s delivered", to);
cleanup:
  if (held)
    tre_end(t, st);
  return rc;
}

/* The iss claim of a JWS, read WITHOUT checking anything: only used as the expected issuer
 * of a statement whose signature the pinned owner key then has to verify. */
static mcim_cause_t peek_iss(const char *jws, size_t len, char **out)
{
  const char *dot1 = memchr(jws, '.', len);
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jws)) : NULL;
  uint8_t *body = NULL;
  size_t body_len = 0, cap;
  json_t *p = NULL;
  mcim_cause_t rc = MCIM_JOSE_MALFORMED;

  if (!dot2)
    goto cleanup;
  cap = (size_t)(dot2 - dot1 - 1);
  rc = MCIM_NO_MEMORY;
  body = malloc(cap + 1);
  if (!body)
    goto cleanup;
  rc = MCIM_JOSE_MALFORMED;
  if (mcim_b64url_decode(dot1 + 1, cap, body, cap, &body_len) != MCIM_OK)
    goto cleanup;
  p = json_loadb((const char *)body, body_len, JSON_REJECT_DUPLICATES, NULL);
  if (!tre_str(p, "iss"))
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  *out = strdup(tre_str(p, "iss"));
  if (*out)
    rc = MCIM_OK;
cleanup:
  json_decref(p);
  free(body);
  return rc;
}

static mcim_cause_t owner_key(json_t *st, mcim_jose_key_t **out)
{
  char *text = json_dumps(json_object_get(st, "owner_jwk"), JSON_COMPACT);
  mcim_cause_t rc = MCIM_INTERNAL;
  if (text)
    rc = mcim_jose_key_from_jwk(text, strlen(text), out);
  free(text);
  return rc;
}

/* A statement of the pinned owner, verified with the TRE state `st` held (its jti recorded
 * in `st`, not yet committed). */
static mcim_cause_t verify_owner_held(json_t *st, const char *jws, size_t len, const char *typ,
                                      mcim_statement_t **stmt)
{
  mcim_jose_key_t *key = NULL;
  char *iss = NULL;
  mcim_cause_t rc = owner_key(st, &key);
  if (rc == MCIM_OK)
    rc = peek_iss(jws, len, &iss);
  if (rc == MCIM_OK) {
    struct tre_replay replay = {.seen = json_object_get(st, "seen")};
    mcim_replay_cache_t cache = tre_replay_cache(&replay);
    mcim_jws_expect_t x = {.iss = iss,
                           .aud = tre_str(st, "device"),
                           .typ = typ,
                           .skew = MCIM_TRE_SKEW,
                           .replay = &cache};
    rc = mcim_jws_verify(jws, len, key, &x, stmt);
  }
  if (rc == MCIM_JOSE_MALFORMED || rc == MCIM_JWS_BAD_ALG || rc == MCIM_JWS_BAD_SIGNATURE) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: '%s' is not signed by the owner", typ);
    rc = MCIM_NOT_OWNER;
  } else if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_WARN, NULL, 0, rc, "tre: owner's '%s' refused", typ);
  }
  free(iss);
  mcim_jose_key_free(key);
  return rc;
}

mcim_cause_t tre_op_verify_owner(void *ctx, const char *jws, size_t len, const char *typ,
                                 mcim_statement_t **out)
{
  struct tre_soft *t = ctx;
  mcim_statement_t *stmt = NULL;
  json_t *st = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !jws || !len || len > MCIM_JOSE_MAX_LEN || !typ || !*typ)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = verify_owner_held(st, jws, len, typ, &stmt);
  if (rc == MCIM_OK && strcmp(typ, "mcim-instruction+jwt") == 0)
    rc = switch_record(st, stmt);
  if (rc != MCIM_OK)
    goto cleanup;
  /* The jti (and a switch's record) is durable before the instruction is acted on: a replay after a restart is
   * still a replay. */
  rc = tre_commit(t, st);
  if (rc != MCIM_OK)
    goto cleanup;
  if (out) {
    *out = stmt;
    stmt = NULL;
  }
cleanup:
  mcim_statement_free(stmt);
  if (held)
    tre_end(t, st);
  return rc;
}

/* The owner hands the device over: the key the TRE pins becomes the new owner's, in one
 * atomic write with the statement's jti (a crash leaves the old key and the statement
 * usable, or the new key and the statement spent). */
mcim_cause_t tre_op_owner_handover(void *ctx, const char *jws, size_t len)
{
  struct tre_soft *t = ctx;
  mcim_statement_t *stmt = NULL;
  json_t *st = NULL, *owner = NULL;
  char *jwk = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_INVALID_ARGUMENT;

  if (!t || !jws || !len || len > MCIM_JOSE_MAX_LEN)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  rc = verify_owner_held(st, jws, len, "mcim-handover+jwt", &stmt);
  if (rc == MCIM_OK && (!stmt->claims.sub || strcmp(stmt->claims.sub, tre_str(st, "device")) != 0))
    rc = MCIM_CLAIM_MISMATCH;
  const json_t *new_owner = rc == MCIM_OK ? json_object_get(stmt->payload, "new_owner_jwk") : NULL;
  if (rc == MCIM_OK && !json_is_object(new_owner))
    rc = MCIM_CLAIM_MISSING;
  if (rc == MCIM_OK)
    rc = (jwk = json_dumps(new_owner, JSON_COMPACT)) ? MCIM_OK : MCIM_NO_MEMORY;
  if (rc == MCIM_OK)
    rc = tre_owner_jwk_object(jwk, &owner);
  if (rc != MCIM_OK)
    goto cleanup;
  json_object_set_new(st, "owner_jwk", owner);
  owner = NULL;
  rc = tre_commit(t, st);
  if (rc == MCIM_OK)
    mcim_log_event(MCIM_LOG_INFO, NULL, 0, MCIM_OK, "tre: the owner key is replaced (handover)");
cleanup:
  json_decref(owner);
  free(jwk);
  mcim_statement_free(stmt);
  if (held)
    tre_end(t, st);
  return rc;
}
