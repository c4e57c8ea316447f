/* AKA sequence numbers, TS 33.102 Annex C: SQN = SEQ || IND (48 bits).
 *
 * Network side (HE/AuC): one SEQ_HE per subscriber, incremented for every
 * vector, and the IND (the low ind_bits bits) cycled through the 2^ind_bits
 * slots. USIM side: the array SEQ_MS[2^ind_bits] of TS 33.102 C.2.1 plus the
 * highest accepted SQN (reported as SQN_MS in AUTS).
 *
 * Every update is a PURE FUNCTION: it reads the current state through a const
 * pointer and writes the next state into a caller-provided struct. Nothing
 * changes until the caller commits that struct, which it must only do once
 * the whole authentication has succeeded (and, network side, persisted it
 * before the vector leaves the AuC: an SQN never goes backwards, restarts
 * included). src/crypto/sqn.c explains the checks and their reasons.
 *
 * States are fixed-size structs with a byte encoding (encode/decode below) so
 * a store can persist them; decode validates everything it reads. */
#ifndef MCIM_SQN_H
#define MCIM_SQN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

enum {
  MCIM_SQN_LEN = 6,               /* bytes on the wire */
  MCIM_SQN_BITS = 48,
  MCIM_SQN_IND_BITS_DEFAULT = 5,  /* a = 32 slots, the value TS 33.102 C.3.2 suggests */
  MCIM_SQN_IND_BITS_MAX = 8,      /* bounds the fixed-size USIM array */
  MCIM_SQN_SLOTS_MAX = 1 << MCIM_SQN_IND_BITS_MAX,
};

/* Operator parameters; the HE and the USIM of one subscriber must agree on them. */
struct mcim_sqn_params {
  unsigned ind_bits;   /* length of IND in bits, 0..MCIM_SQN_IND_BITS_MAX */
  uint64_t delta;      /* C.2.2: largest accepted jump SEQ - SEQ_MS(highest), >= 1 */
  bool use_age_limit;  /* C.2.3 is optional */
  uint64_t age_limit;  /* C.2.3: L, largest accepted SEQ_MS(highest) - SEQ */
  uint64_t reserve;    /* the top `reserve` SEQ values are never issued nor accepted */
};

/* Default: ind_bits 5, delta 2^28, no age limit, reserve 2^28. */
void mcim_sqn_params_default(struct mcim_sqn_params *p);
/* MCIM_OK, or MCIM_INVALID_ARGUMENT for out-of-range parameters. */
mcim_cause_t mcim_sqn_params_check(const struct mcim_sqn_params *p);
/* Highest SEQ that may ever be issued or accepted with these parameters. */
uint64_t mcim_sqn_seq_limit(const struct mcim_sqn_params *p);

/* SQN <-> (SEQ, IND) and the 6-byte big-endian wire form. */
uint64_t mcim_sqn_make(const struct mcim_sqn_params *p, uint64_t seq, unsigned ind);
uint64_t mcim_sqn_seq(const struct mcim_sqn_params *p, uint64_t sqn);
unsigned mcim_sqn_ind(const struct mcim_sqn_params *p, uint64_t sqn);
void mcim_sqn_to_bytes(uint64_t sqn, uint8_t out[MCIM_SQN_LEN]);
uint64_t mcim_sqn_from_bytes(const uint8_t in[MCIM_SQN_LEN]);

/* ---- Network side (HE/AuC) ---- */
struct mcim_sqn_he {
  uint8_t ind_bits;
  uint64_t seq_he;   /* SEQ of the last issued SQN (0: none issued yet) */
  uint32_t ind_next; /* IND the next vector gets (cycles through the slots) */
};

mcim_cause_t mcim_sqn_he_init(const struct mcim_sqn_params *p, struct mcim_sqn_he *st);
/* The SQN for the next vector: SEQ_HE + 1 with the next IND in the cycle.
 * MCIM_SQN_EXHAUSTED once SEQ would enter the reserve. */
mcim_cause_t mcim_sqn_he_next(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                              struct mcim_sqn_he *next, uint64_t *sqn);
/* Same with an IND chosen by the caller (e.g. one IND per serving node); the cycle is kept. */
mcim_cause_t mcim_sqn_he_next_at(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                                 unsigned ind, struct mcim_sqn_he *next, uint64_t *sqn);
/* Re-synchronisation (TS 33.102 6.3.5) from the SQN_MS of a VERIFIED AUTS:
 * keeps SEQ_HE when the next SQN it issues would be accepted, otherwise sets
 * SEQ_HE = SEQ_MS so that the next one is SEQ_MS + 1. */
mcim_cause_t mcim_sqn_he_resync(const struct mcim_sqn_params *p, const struct mcim_sqn_he *cur,
                                uint64_t sqn_ms, struct mcim_sqn_he *next);

/* ---- USIM side ---- */
struct mcim_sqn_usim {
  uint8_t ind_bits;
  uint64_t sqn_ms;                      /* highest accepted SQN (SEQ || IND); 0 at start */
  uint64_t seq_ms[MCIM_SQN_SLOTS_MAX];  /* SEQ_MS(i); only the first 2^ind_bits are used */
};

/* Why the USIM accepted or refused an SQN. */
enum mcim_sqn_verdict {
  MCIM_SQN_ACCEPTED = 0,
  MCIM_SQN_NOT_FRESH,  /* C.2.1: SEQ <= SEQ_MS(IND) (replay, or an older vector of that slot) */
  MCIM_SQN_TOO_FAR,    /* C.2.2: SEQ - SEQ_MS(highest) > delta */
  MCIM_SQN_TOO_OLD,    /* C.2.3: SEQ_MS(highest) - SEQ > L */
  MCIM_SQN_IN_RESERVE, /* SEQ in the reserved top of the space (wrap-around protection) */
};
const char *mcim_sqn_verdict_name(enum mcim_sqn_verdict v);

mcim_cause_t mcim_sqn_usim_init(const struct mcim_sqn_params *p, struct mcim_sqn_usim *st);
/* Check a received SQN (after its MAC verified!). MCIM_OK: *next is the state
 * to commit. MCIM_SYNC_FAILURE: not fresh / too far / too old, answer with
 * AUTS. MCIM_SQN_EXHAUSTED: in the reserve; resynchronising cannot help.
 * *next is written only on MCIM_OK; `verdict` may be NULL. */
mcim_cause_t mcim_sqn_usim_check(const struct mcim_sqn_params *p, const struct mcim_sqn_usim *cur,
                                 uint64_t sqn, struct mcim_sqn_usim *next,
                                 enum mcim_sqn_verdict *verdict);

/* ---- Persistence ----
 * HE: 14 bytes. USIM: 12 + 6 * 2^ind_bits bytes. Both start with a magic and a
 * version; decode refuses anything truncated, too long, out of range or
 * inconsistent with MCIM_BAD_LENGTH / MCIM_INVALID_ARGUMENT / MCIM_UNSUPPORTED. */
enum {
  MCIM_SQN_HE_ENCODED_LEN = 14,
  MCIM_SQN_USIM_ENCODED_MAX = 12 + 6 * MCIM_SQN_SLOTS_MAX,
};
mcim_cause_t mcim_sqn_he_encode(const struct mcim_sqn_he *st, uint8_t out[MCIM_SQN_HE_ENCODED_LEN]);
mcim_cause_t mcim_sqn_he_decode(const uint8_t *in, size_t len, struct mcim_sqn_he *st);
size_t mcim_sqn_usim_encoded_len(const struct mcim_sqn_usim *st);
mcim_cause_t mcim_sqn_usim_encode(const struct mcim_sqn_usim *st, uint8_t *out, size_t cap,
                                  size_t *len);
mcim_cause_t mcim_sqn_usim_decode(const uint8_t *in, size_t len, struct mcim_sqn_usim *st);

#endif
