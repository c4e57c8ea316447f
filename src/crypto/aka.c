/* AKA on Milenage, TS 33.102 section 6.3 (see include/mcim/aka.h). */
#include "mcim/aka.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/util.h"

enum { RAND_LEN = MCIM_MILENAGE_RAND_LEN, POOL_DEFAULT_RANDS = 1024 };

/* TS 33.102 6.3.3: the AMF in MAC-S of a resynchronisation is a dummy of all zeros. */
static const uint8_t resync_amf[MCIM_MILENAGE_AMF_LEN] = {0x00, 0x00};

/* ---- RAND pool ---- */

struct mcim_aka_rand_pool {
  size_t size; /* bytes in buf, a multiple of RAND_LEN */
  size_t pos;  /* next unused byte; buf[0..pos) is already wiped */
  uint8_t buf[];
};

mcim_cause_t mcim_aka_rand_pool_new(size_t batch_rands, mcim_aka_rand_pool_t **out)
{
  if (!out)
    return MCIM_INVALID_ARGUMENT;
  *out = NULL;
  if (batch_rands == 0)
    batch_rands = POOL_DEFAULT_RANDS;
  if (batch_rands > 65536)
    return MCIM_INVALID_ARGUMENT;
  size_t size = batch_rands * RAND_LEN;
  mcim_aka_rand_pool_t *p = calloc(1, sizeof(*p) + size);
  if (!p)
    return MCIM_NO_MEMORY;
  p->size = size;
  p->pos = size; /* empty: the first take refills */
  *out = p;
  return MCIM_OK;
}

void mcim_aka_rand_pool_free(mcim_aka_rand_pool_t *pool)
{
  if (!pool)
    return;
  /* Unused RANDs are future challenges: do not leave them in freed memory. */
  mcim_wipe(pool->buf, pool->size);
  free(pool);
}

mcim_cause_t mcim_aka_rand_pool_take(mcim_aka_rand_pool_t *pool, uint8_t rand[RAND_LEN])
{
  if (!pool || !rand)
    return MCIM_INVALID_ARGUMENT;
  if (pool->pos + RAND_LEN > pool->size) {
    mcim_cause_t rc = mcim_random(pool->buf, pool->size);
    if (rc != MCIM_OK)
      return rc;
    pool->pos = 0;
  }
  memcpy(rand, pool->buf + pool->pos, RAND_LEN);
  mcim_wipe(pool->buf + pool->pos, RAND_LEN);
  pool->pos += RAND_LEN;
  return MCIM_OK;
}

/* ---- Network side ---- */

mcim_cause_t mcim_aka_gen_av_rand(mcim_milenage_t *m, const uint8_t rand[RAND_LEN],
                                  const uint8_t sqn[MCIM_SQN_LEN],
                                  const uint8_t amf[MCIM_MILENAGE_AMF_LEN],
                                  struct mcim_aka_av *av)
{
  struct mcim_milenage_out o;
  mcim_cause_t rc;

  if (!m || !rand || !sqn || !amf || !av)
    return MCIM_INVALID_ARGUMENT;
  /* f1..f5 only: f5* is not needed for a vector, so OUT5 is skipped. */
  rc = mcim_milenage_compute(m, rand, sqn, amf,
                             MCIM_MILENAGE_F1 | MCIM_MILENAGE_F2F5 | MCIM_MILENAGE_F3 |
                                 MCIM_MILENAGE_F4,
                             &o);
  if (rc != MCIM_OK)
    goto cleanup;
  memmove(av->rand, rand, RAND_LEN); /* rand may already point into av */
  memcpy(av->xres, o.res, sizeof(av->xres));
  memcpy(av->ck, o.ck, sizeof(av->ck));
  memcpy(av->ik, o.ik, sizeof(av->ik));
  for (int i = 0; i < MCIM_SQN_LEN; i++)
    av->autn[i] = (uint8_t)(sqn[i] ^ o.ak[i]);
  memcpy(av->autn + 6, amf, MCIM_MILENAGE_AMF_LEN);
  memcpy(av->autn + 8, o.mac_a, MCIM_MILENAGE_MAC_LEN);
cleanup:
  mcim_wipe(&o, sizeof(o));
  return rc;
}

mcim_cause_t mcim_aka_gen_av(mcim_milenage_t *m, mcim_aka_rand_pool_t *pool,
                             const uint8_t sqn[MCIM_SQN_LEN],
                             const uint8_t amf[MCIM_MILENAGE_AMF_LEN], struct mcim_aka_av *av)
{
  mcim_cause_t rc;

  if (!av)
    return MCIM_INVALID_ARGUMENT;
  rc = pool ? mcim_aka_rand_pool_take(pool, av->rand) : mcim_random(av->rand, RAND_LEN);
  if (rc != MCIM_OK)
    return rc;
  return mcim_aka_gen_av_rand(m, av->rand, sqn, amf, av);
}

mcim_cause_t mcim_aka_check_res(const uint8_t *xres, size_t xres_len, const uint8_t *res,
                                size_t res_len)
{
  /* The lengths are public (they are on the wire); only the bytes need
   * constant-time comparison. */
  if (!xres || !res || xres_len == 0 || xres_len != res_len)
    return MCIM_RES_MISMATCH;
  return mcim_ct_equal(xres, res, xres_len) ? MCIM_OK : MCIM_RES_MISMATCH;
}

/* MAC-S = f1*(SQN_MS || RAND || AMF*) and AK* = f5*(RAND). */
static mcim_cause_t resync_parts(mcim_milenage_t *m, const uint8_t rand[RAND_LEN],
                                 const uint8_t sqn_ms[MCIM_SQN_LEN], struct mcim_milenage_out *o)
{
  mcim_cause_t rc = mcim_milenage_compute(m, rand, NULL, NULL, MCIM_MILENAGE_F5STAR, o);
  if (rc != MCIM_OK || !sqn_ms)
    return rc;
  return mcim_milenage_compute(m, rand, sqn_ms, resync_amf, MCIM_MILENAGE_F1, o);
}

mcim_cause_t mcim_aka_gen_auts(mcim_milenage_t *m, const uint8_t rand[RAND_LEN],
                               const uint8_t sqn_ms[MCIM_SQN_LEN],
                               uint8_t auts[MCIM_AKA_AUTS_LEN])
{
  struct mcim_milenage_out o;
  mcim_cause_t rc;

  if (!m || !rand || !sqn_ms || !auts)
    return MCIM_INVALID_ARGUMENT;
  rc = resync_parts(m, rand, sqn_ms, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  for (int i = 0; i < MCIM_SQN_LEN; i++)
    auts[i] = (uint8_t)(sqn_ms[i] ^ o.ak_star[i]);
  memcpy(auts + MCIM_SQN_LEN, o.mac_s, MCIM_MILENAGE_MAC_LEN);
cleanup:
  mcim_wipe(&o, sizeof(o));
  return rc;
}

mcim_cause_t mcim_aka_resync(mcim_milenage_t *m, const uint8_t rand[RAND_LEN],
                             const uint8_t auts[MCIM_AKA_AUTS_LEN],
                             uint8_t sqn_ms[MCIM_SQN_LEN])
{
  struct mcim_milenage_out o;
  uint8_t sqn[MCIM_SQN_LEN];
  mcim_cause_t rc;

  if (!m || !rand || !auts || !sqn_ms)
    return MCIM_INVALID_ARGUMENT;
  memset(sqn_ms, 0, MCIM_SQN_LEN);
  rc = resync_parts(m, rand, NULL, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  for (int i = 0; i < MCIM_SQN_LEN; i++)
    sqn[i] = (uint8_t)(auts[i] ^ o.ak_star[i]);
  rc = resync_parts(m, rand, sqn, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  if (!mcim_ct_equal(o.mac_s, auts + MCIM_SQN_LEN, MCIM_MILENAGE_MAC_LEN)) {
    rc = MCIM_AUTS_INVALID;
    goto cleanup;
  }
  memcpy(sqn_ms, sqn, MCIM_SQN_LEN);
cleanup:
  mcim_wipe(&o, sizeof(o));
  mcim_wipe(sqn, sizeof(sqn));
  return rc;
}

/* ---- USIM side ---- */

mcim_cause_t mcim_aka_usim_check(mcim_milenage_t *m, const struct mcim_sqn_params *params,
                                 const struct mcim_sqn_usim *cur, const uint8_t rand[RAND_LEN],
                                 const uint8_t autn[MCIM_AKA_AUTN_LEN],
                                 struct mcim_sqn_usim *next, struct mcim_aka_usim_out *out)
{
  struct mcim_milenage_out o;
  uint8_t sqn[MCIM_SQN_LEN], sqn_ms[MCIM_SQN_LEN];
  mcim_cause_t rc;

  if (!m || !params || !cur || !rand || !autn || !next || !out)
    return MCIM_INVALID_ARGUMENT;
  memset(out, 0, sizeof(*out));
  memset(&o, 0, sizeof(o));
  out->verdict = MCIM_SQN_ACCEPTED;

  /* 1. Recover SQN with AK = f5(RAND). */
  rc = mcim_milenage_compute(m, rand, NULL, NULL, MCIM_MILENAGE_F2F5, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  for (int i = 0; i < MCIM_SQN_LEN; i++)
    sqn[i] = (uint8_t)(autn[i] ^ o.ak[i]);

  /* 2. MAC first: until it verifies, the challenge is just noise and must not
   *    reach the SQN logic (or an attacker could probe or move our state). */
  rc = mcim_milenage_compute(m, rand, sqn, autn + 6, MCIM_MILENAGE_F1, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  if (!mcim_ct_equal(o.mac_a, autn + 8, MCIM_MILENAGE_MAC_LEN)) {
    rc = MCIM_MAC_FAILURE;
    goto cleanup;
  }
  memcpy(out->sqn, sqn, MCIM_SQN_LEN);

  /* 3. Freshness (Annex C). */
  rc = mcim_sqn_usim_check(params, cur, mcim_sqn_from_bytes(sqn), next, &out->verdict);
  if (rc == MCIM_SYNC_FAILURE) {
    mcim_sqn_to_bytes(cur->sqn_ms, sqn_ms);
    mcim_cause_t arc = mcim_aka_gen_auts(m, rand, sqn_ms, out->auts);
    if (arc != MCIM_OK)
      rc = arc;
    goto cleanup;
  }
  if (rc != MCIM_OK)
    goto cleanup;

  /* 4. Accepted: the response and the session keys. */
  rc = mcim_milenage_compute(m, rand, NULL, NULL, MCIM_MILENAGE_F3 | MCIM_MILENAGE_F4, &o);
  if (rc != MCIM_OK)
    goto cleanup;
  memcpy(out->res, o.res, sizeof(out->res));
  memcpy(out->ck, o.ck, sizeof(out->ck));
  memcpy(out->ik, o.ik, sizeof(out->ik));
cleanup:
  if (rc != MCIM_OK) {
    /* Whatever was computed for a refused challenge stays inside. */
    mcim_wipe(out->res, sizeof(out->res));
    mcim_wipe(out->ck, sizeof(out->ck));
    mcim_wipe(out->ik, sizeof(out->ik));
    if (rc != MCIM_SYNC_FAILURE)
      mcim_wipe(out->auts, sizeof(out->auts));
  }
  mcim_wipe(&o, sizeof(o));
  mcim_wipe(sqn, sizeof(sqn));
  mcim_wipe(sqn_ms, sizeof(sqn_ms));
  return rc;
}
