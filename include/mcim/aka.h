/* UMTS/EPS AKA on Milenage (TS 33.102 section 6.3): authentication vectors on
 * the network side, the USIM's check of a challenge, AUTS and resynchronisation.
 *
 *   AUTN = (SQN xor AK) || AMF || MAC-A          AK = f5(RAND), MAC-A = f1(SQN||RAND||AMF)
 *   AUTS = (SQN_MS xor AK*) || MAC-S             AK* = f5*(RAND), MAC-S = f1*(SQN_MS||RAND||AMF*)
 * with AMF* = 0x0000, the dummy AMF of TS 33.102 6.3.3 for resynchronisation.
 *
 * MACs and RES are always compared in constant time (mcim_ct_equal). The USIM
 * check verifies MAC-A BEFORE looking at SQN, so a forged challenge can neither
 * move the SQN state nor make the USIM emit an AUTS. SQN states are never
 * changed here: the functions write the next state for the caller to commit
 * (see mcim/sqn.h). Outputs holding key material (CK, IK, RES/XRES) are the
 * caller's to wipe. */
#ifndef MCIM_AKA_H
#define MCIM_AKA_H

#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "mcim/milenage.h"
#include "mcim/sqn.h"

enum {
  MCIM_AKA_AUTN_LEN = 16,
  MCIM_AKA_AUTS_LEN = 14,
};

/* One authentication vector (quintet) as the AuC hands it out. */
struct mcim_aka_av {
  uint8_t rand[MCIM_MILENAGE_RAND_LEN];
  uint8_t xres[MCIM_MILENAGE_RES_LEN];
  uint8_t ck[MCIM_MILENAGE_CK_LEN];
  uint8_t ik[MCIM_MILENAGE_IK_LEN];
  uint8_t autn[MCIM_AKA_AUTN_LEN];
};

/* RAND source: the OpenSSL CSPRNG, drawn in batches so that one AuC thread does
 * not pay a DRBG call per vector. Each RAND handed out is wiped from the pool.
 * Not thread-safe: one pool per thread. */
typedef struct mcim_aka_rand_pool mcim_aka_rand_pool_t;
/* `batch_rands` RANDs per refill (0: default 1024, i.e. 16 KiB per RAND_bytes call). */
mcim_cause_t mcim_aka_rand_pool_new(size_t batch_rands, mcim_aka_rand_pool_t **out);
void mcim_aka_rand_pool_free(mcim_aka_rand_pool_t *pool);
mcim_cause_t mcim_aka_rand_pool_take(mcim_aka_rand_pool_t *pool,
                                     uint8_t rand[MCIM_MILENAGE_RAND_LEN]);

/* ---- Network side (HE/AuC) ---- */

/* A vector for SQN and AMF with a fresh RAND (from `pool`, or straight from
 * the CSPRNG when pool is NULL). `m` is keyed for the subscriber. */
mcim_cause_t mcim_aka_gen_av(mcim_milenage_t *m, mcim_aka_rand_pool_t *pool,
                             const uint8_t sqn[MCIM_SQN_LEN],
                             const uint8_t amf[MCIM_MILENAGE_AMF_LEN], struct mcim_aka_av *av);
/* Same with a given RAND (tests, known-answer checks). */
mcim_cause_t mcim_aka_gen_av_rand(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                  const uint8_t sqn[MCIM_SQN_LEN],
                                  const uint8_t amf[MCIM_MILENAGE_AMF_LEN],
                                  struct mcim_aka_av *av);

/* Constant-time RES check: MCIM_OK or MCIM_RES_MISMATCH (also on a length
 * mismatch or an empty RES). */
mcim_cause_t mcim_aka_check_res(const uint8_t *xres, size_t xres_len, const uint8_t *res,
                                size_t res_len);

/* Resynchronisation, network side: verify MAC-S of AUTS (constant time) for the
 * RAND it answers, and recover SQN_MS. MCIM_AUTS_INVALID if MAC-S does not
 * verify (sqn_ms is then left zero). Feed sqn_ms to mcim_sqn_he_resync(). */
mcim_cause_t mcim_aka_resync(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                             const uint8_t auts[MCIM_AKA_AUTS_LEN],
                             uint8_t sqn_ms[MCIM_SQN_LEN]);

/* ---- USIM side ---- */

struct mcim_aka_usim_out {
  uint8_t res[MCIM_MILENAGE_RES_LEN];  /* on MCIM_OK */
  uint8_t ck[MCIM_MILENAGE_CK_LEN];    /* on MCIM_OK */
  uint8_t ik[MCIM_MILENAGE_IK_LEN];    /* on MCIM_OK */
  uint8_t auts[MCIM_AKA_AUTS_LEN];     /* on MCIM_SYNC_FAILURE */
  uint8_t sqn[MCIM_SQN_LEN];           /* the SQN recovered from AUTN (once MAC-A verified) */
  enum mcim_sqn_verdict verdict;       /* why the SQN was accepted or refused */
};

/* The USIM's answer to (RAND, AUTN), TS 33.102 6.3.3:
 *  1. AK = f5(RAND), SQN = (SQN xor AK) xor AK;
 *  2. XMAC = f1(SQN||RAND||AMF), compared with MAC-A in constant time:
 *     MCIM_MAC_FAILURE if it differs (nothing else computed or returned);
 *  3. SQN checked against `cur` (Annex C): MCIM_SYNC_FAILURE with out->auts
 *     built from cur's SQN_MS, or MCIM_SQN_EXHAUSTED;
 *  4. MCIM_OK: RES, CK, IK in `out` and the state to commit in `next`.
 * `next` is written only on MCIM_OK. */
mcim_cause_t mcim_aka_usim_check(mcim_milenage_t *m, const struct mcim_sqn_params *params,
                                 const struct mcim_sqn_usim *cur,
                                 const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                 const uint8_t autn[MCIM_AKA_AUTN_LEN],
                                 struct mcim_sqn_usim *next, struct mcim_aka_usim_out *out);

/* AUTS for SQN_MS and RAND (the USIM side of resynchronisation). */
mcim_cause_t mcim_aka_gen_auts(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                               const uint8_t sqn_ms[MCIM_SQN_LEN],
                               uint8_t auts[MCIM_AKA_AUTS_LEN]);

#endif
