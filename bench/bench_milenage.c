/* Milenage AV generation: mcim against libosmocore's osmo_auth_gen_vec, in one
 * process, interleaved rounds, median of the per-round rates.
 *
 * Every contender does the same job per vector: pick the next of 1024
 * subscribers (random K and OPc; OPc given, not OP), take a fresh RAND, compute
 * one UMTS vector. For mcim that includes re-keying its context (AES key
 * schedule) on every vector, since the subscriber changes every time.
 * libosmocore has no per-subscriber context: it expands the key inside each
 * AES call. Contenders:
 *   mcim        mcim_aka_gen_av, RAND from mcim_aka_rand_pool (RAND_bytes in batches)
 *   osmo/pool   osmo_auth_gen_vec, RAND from the same kind of pool (pure compute)
 *   osmo/getrnd osmo_auth_gen_vec, RAND from osmo_get_rand_id() per vector, as
 *               osmo-hlr does it
 * The ratio that counts is mcim / osmo/pool (same RAND source, so only the
 * vector computation differs).
 *
 * usage: bench_milenage [--round-ms MS] [--rounds N] */
#include <osmocom/crypt/auth.h>
#include <osmocom/gsm/gsm_utils.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/aka.h"
#include "mcim/milenage.h"
#include "mcim/sqn.h"
#include "mcim/util.h"

enum { SUBSCRIBERS = 1024, CHUNK = 256, MAX_ROUNDS = 101, NC = 4 };

struct subs {
  uint8_t k[SUBSCRIBERS][16];
  uint8_t opc[SUBSCRIBERS][16];
  struct osmo_sub_auth_data aud[SUBSCRIBERS];
};

struct ctx {
  struct subs *s;
  mcim_milenage_t *m;
  mcim_aka_rand_pool_t *pool;
  uint64_t n;    /* vectors generated so far by this contender */
  uint64_t sink; /* keeps results observable */
};

typedef int (*chunk_fn)(struct ctx *c);

static int chunk_mcim(struct ctx *c)
{
  static const uint8_t amf[2] = {0x80, 0x00};
  struct mcim_aka_av av;
  uint8_t sqn[MCIM_SQN_LEN];
  for (int j = 0; j < CHUNK; j++, c->n++) {
    unsigned i = (unsigned)(c->n % SUBSCRIBERS);
    mcim_sqn_to_bytes((c->n / SUBSCRIBERS + 1) << 5, sqn);
    if (mcim_milenage_set_opc(c->m, c->s->k[i], c->s->opc[i]) != MCIM_OK ||
        mcim_aka_gen_av(c->m, c->pool, sqn, amf, &av) != MCIM_OK)
      return -1;
    c->sink += av.autn[15];
  }
  mcim_wipe(&av, sizeof(av));
  return 0;
}

static int chunk_osmo(struct ctx *c, int use_getrandom)
{
  struct osmo_auth_vector vec;
  uint8_t rnd[16];
  for (int j = 0; j < CHUNK; j++, c->n++) {
    unsigned i = (unsigned)(c->n % SUBSCRIBERS);
    int rc = use_getrandom ? osmo_get_rand_id(rnd, sizeof(rnd))
                           : (mcim_aka_rand_pool_take(c->pool, rnd) == MCIM_OK ? 0 : -1);
    if (rc < 0 || osmo_auth_gen_vec(&vec, &c->s->aud[i], rnd) < 0)
      return -1;
    c->sink += vec.autn[15];
  }
  mcim_wipe(&vec, sizeof(vec));
  return 0;
}

static int chunk_mcim_evp(struct ctx *c)
{
  return chunk_mcim(c); /* its context was created with MCIM_MILENAGE_AES_EVP */
}

static int chunk_osmo_pool(struct ctx *c)
{
  return chunk_osmo(c, 0);
}

static int chunk_osmo_getrandom(struct ctx *c)
{
  return chunk_osmo(c, 1);
}

/* Run `fn` for about `ms` milliseconds; vectors per second. */
static double timed(chunk_fn fn, struct ctx *c, unsigned ms)
{
  uint64_t start_n = c->n, t0 = mcim_monotonic_ns(), t1;
  do {
    if (fn(c) != 0)
      return -1.0;
    t1 = mcim_monotonic_ns();
  } while (t1 - t0 < (uint64_t)ms * 1000000u);
  return (double)(c->n - start_n) * 1e9 / (double)(t1 - t0);
}


static const char *const names[NC] = {"mcim", "mcim/evp", "osmo/pool", "osmo/getrnd"};
static const chunk_fn fns[NC] = {chunk_mcim, chunk_mcim_evp, chunk_osmo_pool,
                                 chunk_osmo_getrandom};
static const mcim_milenage_aes_t aes[NC] = {MCIM_MILENAGE_AES_AUTO, MCIM_MILENAGE_AES_EVP,
                                            MCIM_MILENAGE_AES_AUTO, MCIM_MILENAGE_AES_AUTO};

int main(int argc, char **argv)
{
  unsigned round_ms = 300;
  int rounds = 9;
  struct subs *s = NULL;
  struct ctx c[NC];
  double rate[NC][MAX_ROUNDS], med[NC];
  int rc = 1;

  memset(c, 0, sizeof(c));
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--round-ms") == 0 && i + 1 < argc)
      round_ms = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_milenage [--round-ms MS] [--rounds N]\n");
      return 2;
    }
  }
  if (round_ms < 10 || round_ms > 60000 || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "bench_milenage: --round-ms 10..60000, --rounds 1..%d\n", MAX_ROUNDS);
    return 2;
  }

  s = calloc(1, sizeof(*s));
  if (!s || mcim_random(&s->k[0][0], sizeof(s->k)) != MCIM_OK ||
      mcim_random(&s->opc[0][0], sizeof(s->opc)) != MCIM_OK)
    goto cleanup;
  for (int i = 0; i < SUBSCRIBERS; i++) {
    struct osmo_sub_auth_data *a = &s->aud[i];
    a->type = OSMO_AUTH_TYPE_UMTS;
    a->algo = OSMO_AUTH_ALG_MILENAGE;
    memcpy(a->u.umts.k, s->k[i], 16);
    memcpy(a->u.umts.opc, s->opc[i], 16);
    a->u.umts.opc_is_op = 0;
    a->u.umts.amf[0] = 0x80;
    a->u.umts.ind_bitlen = 5;
  }
  for (int j = 0; j < NC; j++) {
    c[j].s = s;
    if (mcim_milenage_new_with(aes[j], &c[j].m) != MCIM_OK ||
        mcim_aka_rand_pool_new(0, &c[j].pool) != MCIM_OK)
      goto cleanup;
  }

  /* Sanity: both implementations agree on one vector before anything is timed. */
  {
    struct osmo_sub_auth_data a = s->aud[0];
    struct osmo_auth_vector vec;
    struct mcim_aka_av av;
    uint8_t rnd[16], sqn[6];
    if (mcim_random(rnd, 16) != MCIM_OK || osmo_auth_gen_vec(&vec, &a, rnd) < 0)
      goto cleanup;
    mcim_sqn_to_bytes(a.u.umts.sqn, sqn); /* the SQN libosmocore used */
    if (mcim_milenage_set_opc(c[0].m, s->k[0], s->opc[0]) != MCIM_OK ||
        mcim_aka_gen_av_rand(c[0].m, rnd, sqn, a.u.umts.amf, &av) != MCIM_OK ||
        memcmp(av.autn, vec.autn, 16) || memcmp(av.xres, vec.res, 8) ||
        memcmp(av.ck, vec.ck, 16) || memcmp(av.ik, vec.ik, 16)) {
      fprintf(stderr, "bench_milenage: mcim and libosmocore disagree on a vector\n");
      goto cleanup;
    }
  }

  /* Warm-up, then interleaved rounds so frequency drift hits all alike. */
  for (int j = 0; j < NC; j++)
    if (timed(fns[j], &c[j], 100) < 0)
      goto cleanup;
  for (int r = 0; r < rounds; r++)
    for (int j = 0; j < NC; j++) {
      int k = (j + r) % NC; /* rotate who goes first */
      rate[k][r] = timed(fns[k], &c[k], round_ms);
      if (rate[k][r] < 0)
        goto cleanup;
    }

  printf("bench_milenage: 1 thread, %d subscribers cycled, fresh RAND per AV, %d rounds x %u ms, "
         "median\n",
         SUBSCRIBERS, rounds, round_ms);
  printf("mcim AES access: %s\n", mcim_milenage_aes_name(mcim_milenage_aes(c[0].m)));
  for (int j = 0; j < NC; j++) {
    med[j] = mcim_median(rate[j], (size_t)rounds);
    printf("%-12s av_per_s=%.0f  ns_per_av=%.1f\n", names[j], med[j], 1e9 / med[j]);
  }
  printf("ratio_mcim_vs_osmo_pool=%.2f\n", med[0] / med[2]);
  printf("ratio_mcim_vs_osmo_getrandom=%.2f\n", med[0] / med[3]);
  printf("ratio_mcim_evp_vs_osmo_pool=%.2f\n", med[1] / med[2]);
  printf("checksum=%llu\n",
         (unsigned long long)((c[0].sink + c[1].sink + c[2].sink + c[3].sink) & 0xffff));
  rc = 0;
cleanup:
  if (rc)
    fprintf(stderr, "bench_milenage: failed\n");
  for (int j = 0; j < NC; j++) {
    mcim_milenage_free(c[j].m);
    mcim_aka_rand_pool_free(c[j].pool);
  }
  if (s) {
    mcim_wipe(s, sizeof(*s));
    free(s);
  }
  return rc;
}
