/* `mcim bench milenage [--seconds S]`: single-thread authentication vector
 * generation rate, the way an AuC serving many subscribers pays for it.
 *
 * What one measured AV costs here:
 *  - switching subscriber: 1024 subscribers (random K, OPc) are cycled, one
 *    after the other, so EVERY vector re-keys the Milenage context (AES key
 *    schedule of K) — the worst case; an AuC answering a batch of vectors for
 *    one subscriber pays the key schedule once per batch;
 *  - a fresh RAND from the CSPRNG (OpenSSL RAND_bytes, drawn 1024 RANDs at a
 *    time by mcim_aka_rand_pool, each handed-out RAND wiped from the pool);
 *  - f1..f5 and AUTN assembly (mcim_aka_gen_av), AES through the default
 *    access (printed as aes_access=; see mcim/milenage.h).
 * Not included: SQN bookkeeping and storage (a counter stands in for SQN).
 * The last line is `av_per_s=N` (a contract: scripts read it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/aka.h"
#include "mcim/cli.h"
#include "mcim/milenage.h"
#include "mcim/opts.h"
#include "mcim/sqn.h"
#include "mcim/util.h"

enum { SUBSCRIBERS = 1024, CLOCK_EVERY = 1024 };

static const char bench_description[] =
    "milenage  measures single-thread Milenage AV generation for 1024 subscribers cycled\n"
    "          (key schedule on every AV), each AV with a fresh CSPRNG RAND. Prints the\n"
    "          figures, then `av_per_s=N` as the last line.";

static int parse_seconds(const char *s, double *out)
{
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end != '\0' || !(v > 0.0) || v > 3600.0)
    return -1;
  *out = v;
  return 0;
}

struct subscribers {
  uint8_t k[SUBSCRIBERS][16];
  uint8_t opc[SUBSCRIBERS][16];
};

static int run_bench(double seconds)
{
  struct subscribers *subs = NULL;
  mcim_milenage_t *m = NULL;
  mcim_aka_rand_pool_t *pool = NULL;
  struct mcim_aka_av av;
  static const uint8_t amf[2] = {0x80, 0x00};
  uint8_t sqn[MCIM_SQN_LEN];
  uint64_t n = 0, sink = 0;
  int rc = MCIM_EXIT_FAIL;

  memset(&av, 0, sizeof(av));
  subs = calloc(1, sizeof(*subs));
  if (!subs || mcim_random(&subs->k[0][0], sizeof(subs->k)) != MCIM_OK ||
      mcim_random(&subs->opc[0][0], sizeof(subs->opc)) != MCIM_OK ||
      mcim_milenage_new(&m) != MCIM_OK || mcim_aka_rand_pool_new(0, &pool) != MCIM_OK) {
    fprintf(stderr, "mcim bench milenage: set-up failed\n");
    goto cleanup;
  }

  uint64_t budget = (uint64_t)(seconds * 1e9);
  uint64_t t0 = mcim_monotonic_ns(), t1;
  for (;;) {
    for (int j = 0; j < CLOCK_EVERY; j++, n++) {
      unsigned s = (unsigned)(n % SUBSCRIBERS);
      mcim_sqn_to_bytes((n / SUBSCRIBERS + 1) << MCIM_SQN_IND_BITS_DEFAULT, sqn);
      if (mcim_milenage_set_opc(m, subs->k[s], subs->opc[s]) != MCIM_OK ||
          mcim_aka_gen_av(m, pool, sqn, amf, &av) != MCIM_OK) {
        fprintf(stderr, "mcim bench milenage: AV generation failed\n");
        goto cleanup;
      }
      sink += av.autn[15];
    }
    t1 = mcim_monotonic_ns();
    if (t1 - t0 >= budget)
      break;
  }
  double elapsed = (double)(t1 - t0) / 1e9;
  printf("bench milenage: 1 thread, %d subscribers cycled, re-key + CSPRNG RAND + f1-f5 per AV\n",
         SUBSCRIBERS);
  printf("aes_access=%s\n", mcim_milenage_aes_name(mcim_milenage_aes(m)));
  printf("avs=%llu\n", (unsigned long long)n);
  printf("seconds=%.3f\n", elapsed);
  printf("ns_per_av=%.1f\n", (double)(t1 - t0) / (double)n);
  printf("checksum=%llu\n", (unsigned long long)(sink & 0xffff)); /* keeps the work observable */
  printf("av_per_s=%.0f\n", (double)n / elapsed);
  rc = MCIM_EXIT_OK;
cleanup:
  mcim_wipe(&av, sizeof(av));
  if (subs) {
    mcim_wipe(subs, sizeof(*subs));
    free(subs);
  }
  mcim_aka_rand_pool_free(pool);
  mcim_milenage_free(m);
  return rc;
}

int mcim_cmd_bench(int argc, char **argv)
{
  double seconds = 2.0;
  const char *seconds_opt = NULL;
  const struct mcim_opt opts[] = {
      {.name = "seconds", .arg = "S", .help = "how long to measure (default 2, at most 3600)",
       .value = &seconds_opt, .once = true},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim bench",
      .usage = "mcim bench milenage [--seconds S]",
      .description = bench_description,
      .opts = opts,
      .examples = "mcim bench milenage --seconds 5\n"
                  "mcim bench milenage --seconds=0.5",
      .max_args = 1,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.n < 1)
    return mcim_opts_error(&cmd, "missing the subcommand: milenage");
  if (strcmp(a.arg[0], "milenage") != 0)
    return mcim_opts_error(&cmd, "unknown subcommand '%s'", a.arg[0]);
  if (seconds_opt && parse_seconds(seconds_opt, &seconds) != 0)
    return mcim_opts_error(&cmd, "--seconds: expected a number of seconds in (0, 3600], got '%s'",
                           seconds_opt);
  return run_bench(seconds);
}
