/* AKA sequence number management, TS 33.102 Annex C (see include/mcim/sqn.h).
 *
 * Why SEQ || IND and an array on the USIM
 * ----------------------------------------
 * A plain counter ("accept only if SQN > the last one") breaks as soon as
 * vectors are used out of order: the AuC hands batches of vectors to several
 * serving nodes (MSC, SGSN, MME/AMF, and in mcim the VNO and each SHO), and
 * the device may authenticate with a vector of batch B before the remaining
 * ones of an older batch A. With one counter, every vector left in A would be
 * refused and each refusal costs a resynchronisation round trip.
 *
 * Annex C therefore splits SQN into SEQ (high bits, a counter) and IND (low
 * ind_bits bits, an index). The USIM keeps one SEQ_MS(i) per index value
 * (C.2.1) and accepts SQN = SEQ || IND only if SEQ > SEQ_MS(IND), then stores
 * SEQ in that slot. A vector is thus only compared with vectors of its own
 * slot: vectors of different slots may be consumed in any order, while a
 * replayed vector (same SEQ in the same slot) is always refused. The network
 * side increments SEQ_HE for every vector and cycles IND through the slots
 * (C.3.2, C.1.2), so consecutive vectors land in different slots; a caller
 * that wants one slot per serving node passes the IND itself (he_next_at).
 *
 * The extra limits, and why
 * -------------------------
 * - C.2.2, delta: SEQ must not be more than `delta` above the highest SEQ the
 *   USIM ever accepted. Without it, one genuine vector with a huge SEQ (an AuC
 *   bug, a restored backup of another subscriber's counter) would push the
 *   USIM close to the end of the SEQ space forever: the counter can never go
 *   back, so the subscription would be burnt. With the limit the USIM answers
 *   with a resynchronisation instead.
 * - C.2.3, age limit L (optional): SEQ must not be more than L below the
 *   highest accepted SEQ, so that a vector kept unused for a long time in some
 *   serving node, in a slot that has seen no traffic, stops being valid.
 * - Wrap-around (reserve): SEQ has 48 - ind_bits bits. Neither side issues or
 *   accepts a SEQ in the top `reserve` values; the AuC reports
 *   MCIM_SQN_EXHAUSTED well before the counter could wrap (a wrapped counter
 *   would make every old vector fresh again). Re-provisioning K is then the
 *   only way out, which is why the USIM does not ask for a resync either.
 *
 * Resynchronisation (TS 33.102 6.3.5)
 * -----------------------------------
 * The USIM reports SQN_MS, its highest accepted SQN, in AUTS (see aka.c for the
 * MAC-S check that must come first). The AuC keeps SEQ_HE if the next SQN it
 * would issue (SEQ_HE + 1) is acceptable to that USIM, i.e. above SEQ_MS and
 * within delta of it: the refusal was about that particular vector (stale,
 * replayed, too old), not about the counter. Otherwise SEQ_HE := SEQ_MS, so
 * the next vector carries SEQ_MS + 1. That moves SEQ_HE forward when the AuC
 * was behind (restored database, subscriber moved between AuCs). It moves it
 * BACK only when the AuC is more than delta ahead of the USIM, which is what
 * 6.3.5 prescribes and the only way to recover: the USIM will never accept
 * those values anyway. Reusing a SEQ value the USIM never accepted is not a
 * replay: the new vector has a fresh RAND and is checked against SEQ_MS.
 *
 * Purity
 * ------
 * Every function below reads `cur` and writes `next`; none has side effects.
 * The caller commits `next` only when the whole procedure succeeded: USIM side
 * after the MAC verified AND the SQN was accepted AND the response went out;
 * AuC side before the vector leaves (so a crash never re-issues a SQN). */
#include "mcim/sqn.h"

#include <string.h>

static const uint8_t he_magic[4] = {'M', 'Q', 'S', 'H'};
static const uint8_t usim_magic[4] = {'M', 'Q', 'S', 'U'};
enum { ENC_VERSION = 1, USIM_HDR = 12 };

void mcim_sqn_params_default(struct mcim_sqn_params *p)
{
  if (!p)
    return;
  memset(p, 0, sizeof(*p));
  p->ind_bits = MCIM_SQN_IND_BITS_DEFAULT;
  p->delta = (uint64_t)1 << 28;
  p->use_age_limit = false;
  p->age_limit = 0;
  p->reserve = (uint64_t)1 << 28;
}

static uint64_t seq_space(unsigned ind_bits)
{
  return (uint64_t)1 << (MCIM_SQN_BITS - ind_bits);
}

mcim_cause_t mcim_sqn_params_check(const struct mcim_sqn_params *p)
{
  if (!p || p->ind_bits > MCIM_SQN_IND_BITS_MAX)
    return MCIM_INVALID_ARGUMENT;
  uint64_t space = seq_space(p->ind_bits);
  /* At least SEQ 1 must be issuable, and a jump of delta must fit. */
  if (p->reserve >= space - 1 || p->delta == 0 || p->delta >= space)
    return MCIM_INVALID_ARGUMENT;
  if (p->use_age_limit && p->age_limit >= space)
    return MCIM_INVALID_ARGUMENT;
  return MCIM_OK;
}

uint64_t mcim_sqn_seq_limit(const struct mcim_sqn_params *p)
{
  return seq_space(p->ind_bits) - 1 - p->reserve;
}

uint64_t mcim_sqn_make(const struct mcim_sqn_params *p, uint64_t seq, unsigned ind)
{
  uint64_t mask = ((uint64_t)1 << p->ind_bits) - 1;
  return ((seq << p->ind_bits) | (ind & mask)) & (((uint64_t)1 << MCIM_SQN_BITS) - 1);
}

uint64_t mcim_sqn_seq(const struct mcim_sqn_params *p, uint64_t sqn)
{
  return (sqn & (((uint64_t)1 << MCIM_SQN_BITS) - 1)) >> p->ind_bits;
}

unsigned mcim_sqn_ind(const struct mcim_sqn_params *p, uint64_t sqn)
{
  return (unsigned)(sqn & (((uint64_t)1 << p->ind_bits) - 1));
}

static void put48(uint8_t *out, uint64_t v)
{
  for (int i = 0; i < 6; i++)
    out[i] = (uint8_t)(v >> (8 * (5 - i)));
}

static uint64_t get48(const uint8_t *in)
{
  uint64_t v = 0;
  for (int i = 0; i < 6; i++)
    v = (v << 8) | in[i];
  return v;
}

void mcim_sqn_to_bytes(uint64_t sqn, uint8_t out[MCIM_SQN_LEN])
{
  put48(out, sqn);
}

uint64_t mcim_sqn_from_bytes(const uint8_t in[MCIM_SQN_LEN])
{
  return get48(in);
}

/* ---- Network side ---- */

mcim_cause_t mcim_sqn_he_init(const struct mcim_sqn_params *p, struct mcim_sqn_he *st)
{
  if (!st || mcim_sqn_params_check(p) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  memset(st, 0, sizeof(*st));
  st->ind_bits = (uint8_t)p->ind_bits;
  return MCIM_OK;
}

static mcim_cause_t he_valid(const struct mcim_sqn_params *p, const struct mcim_sqn_he *st)
{
  if (!st || mcim_sqn_params_check(p) != MCIM_OK || st->ind_bits != p->ind_bits ||
      st->ind_next >= (1u << p->ind_bits) || st->seq_he >= seq_space(p->ind_bits))
    return MCIM_INVALID_ARGUMENT;
  return MCIM_OK;
}

static mcim_cause_t he_issue(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                             unsigned ind, uint32_t ind_next, struct mcim_sqn_he *next,
                             uint64_t *sqn)
{
  if (he_valid(p, cur) != MCIM_OK || !next || !sqn || ind >= (1u << p->ind_bits))
    return MCIM_INVALID_ARGUMENT;
  uint64_t seq = cur->seq_he + 1;
  if (seq > mcim_sqn_seq_limit(p))
    return MCIM_SQN_EXHAUSTED;
  *next = *cur;
  next->seq_he = seq;
  next->ind_next = ind_next;
  *sqn = mcim_sqn_make(p, seq, ind);
  return MCIM_OK;
}

mcim_cause_t mcim_sqn_he_next(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                              struct mcim_sqn_he *next, uint64_t *sqn)
{
  if (he_valid(p, cur) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  uint32_t mask = (1u << p->ind_bits) - 1;
  return he_issue(p, cur, cur->ind_next, (cur->ind_next + 1) & mask, next, sqn);
}

mcim_cause_t mcim_sqn_he_next_at(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                                 unsigned ind, struct mcim_sqn_he *next, uint64_t *sqn)
{
  if (he_valid(p, cur) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  return he_issue(p, cur, ind, cur->ind_next, next, sqn);
}

mcim_cause_t mcim_sqn_he_resync(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                                uint64_t sqn_ms, struct mcim_sqn_he *next)
{
  if (he_valid(p, cur) != MCIM_OK || !next || sqn_ms >> MCIM_SQN_BITS)
    return MCIM_INVALID_ARGUMENT;
  uint64_t seq_ms = mcim_sqn_seq(p, sqn_ms);
  if (seq_ms > mcim_sqn_seq_limit(p))
    return MCIM_SQN_EXHAUSTED;
  *next = *cur;
  uint64_t candidate = cur->seq_he + 1;
  if (candidate > seq_ms && candidate - seq_ms <= p->delta)
    return MCIM_OK; /* our next vector will be accepted: keep the counter */
  next->seq_he = seq_ms;
  return MCIM_OK;
}

/* ---- USIM side ---- */

const char *mcim_sqn_verdict_name(enum mcim_sqn_verdict v)
{
  switch (v) {
  case MCIM_SQN_ACCEPTED:
    return "accepted";
  case MCIM_SQN_NOT_FRESH:
    return "not fresh (SEQ <= SEQ_MS(IND))";
  case MCIM_SQN_TOO_FAR:
    return "too far ahead (delta)";
  case MCIM_SQN_TOO_OLD:
    return "too old (age limit L)";
  case MCIM_SQN_IN_RESERVE:
    return "in the reserved top of the SEQ space";
  }
  return "unknown";
}

mcim_cause_t mcim_sqn_usim_init(const struct mcim_sqn_params *p, struct mcim_sqn_usim *st)
{
  if (!st || mcim_sqn_params_check(p) != MCIM_OK)
    return MCIM_INVALID_ARGUMENT;
  memset(st, 0, sizeof(*st));
  st->ind_bits = (uint8_t)p->ind_bits;
  return MCIM_OK;
}

mcim_cause_t mcim_sqn_usim_check(const struct mcim_sqn_params *p, const struct mcim_sqn_usim *cur,
                                 uint64_t sqn, struct mcim_sqn_usim *next,
                                 enum mcim_sqn_verdict *verdict)
{
  enum mcim_sqn_verdict v = MCIM_SQN_ACCEPTED;
  mcim_cause_t rc = MCIM_SYNC_FAILURE;

  if (!cur || !next || mcim_sqn_params_check(p) != MCIM_OK || cur->ind_bits != p->ind_bits ||
      sqn >> MCIM_SQN_BITS)
    return MCIM_INVALID_ARGUMENT;

  uint64_t seq = mcim_sqn_seq(p, sqn);
  unsigned ind = mcim_sqn_ind(p, sqn);
  uint64_t seq_max = mcim_sqn_seq(p, cur->sqn_ms);

  if (seq > mcim_sqn_seq_limit(p)) {
    v = MCIM_SQN_IN_RESERVE;
    rc = MCIM_SQN_EXHAUSTED;
    goto out;
  }
  if (seq <= cur->seq_ms[ind]) {
    v = MCIM_SQN_NOT_FRESH;
    goto out;
  }
  if (seq > seq_max && seq - seq_max > p->delta) {
    v = MCIM_SQN_TOO_FAR;
    goto out;
  }
  if (p->use_age_limit && seq < seq_max && seq_max - seq > p->age_limit) {
    v = MCIM_SQN_TOO_OLD;
    goto out;
  }
  *next = *cur;
  next->seq_ms[ind] = seq;
  if (seq > seq_max)
    next->sqn_ms = sqn;
  rc = MCIM_OK;
out:
  if (verdict)
    *verdict = v;
  return rc;
}

/* ---- Persistence ---- */

mcim_cause_t mcim_sqn_he_encode(const struct mcim_sqn_he *st, uint8_t out[MCIM_SQN_HE_ENCODED_LEN])
{
  if (!st || !out || st->ind_bits > MCIM_SQN_IND_BITS_MAX)
    return MCIM_INVALID_ARGUMENT;
  memcpy(out, he_magic, 4);
  out[4] = ENC_VERSION;
  out[5] = st->ind_bits;
  put48(out + 6, st->seq_he);
  out[12] = (uint8_t)(st->ind_next >> 8);
  out[13] = (uint8_t)st->ind_next;
  return MCIM_OK;
}

mcim_cause_t mcim_sqn_he_decode(const uint8_t *in, size_t len, struct mcim_sqn_he *st)
{
  struct mcim_sqn_he tmp;

  if (!in || !st)
    return MCIM_INVALID_ARGUMENT;
  if (len != MCIM_SQN_HE_ENCODED_LEN)
    return MCIM_BAD_LENGTH;
  if (memcmp(in, he_magic, 4) != 0)
    return MCIM_INVALID_ARGUMENT;
  if (in[4] != ENC_VERSION)
    return MCIM_UNSUPPORTED;
  memset(&tmp, 0, sizeof(tmp));
  tmp.ind_bits = in[5];
  tmp.seq_he = get48(in + 6);
  tmp.ind_next = (uint32_t)in[12] << 8 | in[13];
  if (tmp.ind_bits > MCIM_SQN_IND_BITS_MAX || tmp.ind_next >= (1u << tmp.ind_bits) ||
      tmp.seq_he >= seq_space(tmp.ind_bits))
    return MCIM_INVALID_ARGUMENT;
  *st = tmp;
  return MCIM_OK;
}

size_t mcim_sqn_usim_encoded_len(const struct mcim_sqn_usim *st)
{
  if (!st || st->ind_bits > MCIM_SQN_IND_BITS_MAX)
    return 0;
  return USIM_HDR + 6 * ((size_t)1 << st->ind_bits);
}

mcim_cause_t mcim_sqn_usim_encode(const struct mcim_sqn_usim *st, uint8_t *out, size_t cap,
                                  size_t *len)
{
  size_t need = mcim_sqn_usim_encoded_len(st);
  if (!need || !out || !len)
    return MCIM_INVALID_ARGUMENT;
  if (cap < need)
    return MCIM_TOO_LARGE;
  memcpy(out, usim_magic, 4);
  out[4] = ENC_VERSION;
  out[5] = st->ind_bits;
  put48(out + 6, st->sqn_ms);
  for (size_t i = 0; i < ((size_t)1 << st->ind_bits); i++)
    put48(out + USIM_HDR + 6 * i, st->seq_ms[i]);
  *len = need;
  return MCIM_OK;
}

mcim_cause_t mcim_sqn_usim_decode(const uint8_t *in, size_t len, struct mcim_sqn_usim *st)
{
  struct mcim_sqn_usim tmp; /* *st is written only once everything validated */
  uint64_t max = 0;

  if (!in || !st)
    return MCIM_INVALID_ARGUMENT;
  if (len < USIM_HDR)
    return MCIM_BAD_LENGTH;
  if (memcmp(in, usim_magic, 4) != 0)
    return MCIM_INVALID_ARGUMENT;
  if (in[4] != ENC_VERSION)
    return MCIM_UNSUPPORTED;
  if (in[5] > MCIM_SQN_IND_BITS_MAX)
    return MCIM_INVALID_ARGUMENT;
  memset(&tmp, 0, sizeof(tmp));
  tmp.ind_bits = in[5];
  size_t slots = (size_t)1 << tmp.ind_bits;
  if (len != USIM_HDR + 6 * slots)
    return MCIM_BAD_LENGTH;
  tmp.sqn_ms = get48(in + 6);
  uint64_t space = seq_space(tmp.ind_bits);
  for (size_t i = 0; i < slots; i++) {
    tmp.seq_ms[i] = get48(in + USIM_HDR + 6 * i);
    if (tmp.seq_ms[i] >= space)
      return MCIM_INVALID_ARGUMENT;
    if (tmp.seq_ms[i] > max)
      max = tmp.seq_ms[i];
  }
  /* sqn_ms must be the highest accepted SQN: its SEQ is the array's maximum
   * and sits in its own slot (or everything is still zero). */
  uint64_t seq = tmp.sqn_ms >> tmp.ind_bits;
  size_t ind = (size_t)(tmp.sqn_ms & (slots - 1));
  if (seq != max || tmp.seq_ms[ind] != seq)
    return MCIM_INVALID_ARGUMENT;
  *st = tmp;
  return MCIM_OK;
}
