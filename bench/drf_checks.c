/* The checks a first discovery at the DRF (pristine steps 7-8) makes before its store work,
 * in-process and without a store (docs/performance.md, "The DRF at operator scale"):
 *   token    mcim_role_check_access on the same access token every time, as a device shows it
 *            with every request (here at the VNO that issued it: no peer key to fetch, no
 *            revocation to read);
 *   request  mcim_role_check_device_request at the RO on a new proof every time (a new
 *            procedure's) with the same TRE certificate.
 * Proofs are signed before the timing. Prints the best of ROUNDS rounds of N each, in us per
 * check; run it under `valgrind --tool=callgrind --toggle-collect=mcim_role_check_access
 * --toggle-collect=mcim_role_check_device_request` for instruction counts that do not depend
 * on the machine's load.
 *
 * Usage: drf_checks [N [ROUNDS]]   (default 1000 5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcim/config.h"
#include "mcim/http.h"
#include "mcim/jose.h"
#include "mcim/pki.h"
#include "mcim/role.h"
#include "mcim/util.h"

#define DEVICE "dev-bench"
#define TXN "00112233445566778899aabbccddeeff"

static const mcim_config_spec_t spec[] = {
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 3600},
};

static double now_us(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void die(const char *what)
{
  fprintf(stderr, "drf_checks: %s\n", what);
  exit(1);
}

static void role_make(struct mcim_role *r, const char *kind, const char *name, X509 *ops,
                      X509 *m2mes)
{
  r->kind = mcim_role_kind_find(kind);
  r->name = name;
  r->operators_ca = ops;
  r->m2mes_ca = m2mes;
  if (!r->kind || mcim_config_load_string("drf_checks", "{}", NULL, spec, 1, &r->cfg, NULL, 0))
    die("role");
}

int main(int argc, char **argv)
{
  int n = argc > 1 ? atoi(argv[1]) : 1000, rounds = argc > 2 ? atoi(argv[2]) : 5;
  mcim_pki_ca_t *ops = NULL, *m2mes = NULL;
  EVP_PKEY *att = NULL, *vk = NULL;
  mcim_jose_key_t *attj = NULL, *vj = NULL;
  X509 *x = NULL;
  char *pem = NULL, *token = NULL;
  struct mcim_role ro = {0}, vno = {0};
  if (n <= 0 || rounds <= 0)
    die("usage: drf_checks [N [ROUNDS]]");
  mcim_cert_request_t req = {.name = DEVICE, .usage = MCIM_CERT_TRE_ATTESTATION};
  if (mcim_pki_ca_create("ops", 30, &ops) || mcim_pki_ca_create("m2mes", 30, &m2mes) ||
      mcim_pki_key_generate(&att) || mcim_pki_key_generate(&vk) ||
      mcim_jose_key_from_pkey(att, &attj) || mcim_jose_key_from_pkey(vk, &vj) ||
      mcim_jose_key_set_kid(vj, "vno") || (req.key = att, mcim_pki_issue(m2mes, &req, &x)) ||
      mcim_pki_cert_to_pem(x, &pem))
    die("keys and certificates");
  role_make(&ro, "ro", "ro", ops->cert, m2mes->cert);
  role_make(&vno, "vno", "vno", ops->cert, m2mes->cert);
  vno.sign_key = vj;
  json_t *te = json_pack("{s:s,s:s}", "scope", "restricted", "imsi", "001010000000001");
  mcim_claims_t tc = {.iss = "vno",
                      .sub = DEVICE,
                      .aud = "vno",
                      .typ = "mcim-access+jwt",
                      .txn = TXN,
                      .exp = mcim_now() + 3600,
                      .extra = te};
  json_t *pe = json_pack("{s:s}", "for", "discovery");
  json_t **bodies = calloc((size_t)n * (size_t)rounds, sizeof(*bodies));
  if (!te || !pe || !bodies || mcim_jws_sign(vj, &tc, &token))
    die("token");
  for (int i = 0; i < n * rounds; i++) {
    mcim_claims_t pc = {.iss = DEVICE,
                        .sub = DEVICE,
                        .aud = "ro",
                        .typ = MCIM_DEVICE_REQUEST_TYP,
                        .txn = TXN,
                        .exp = mcim_now() + 3600,
                        .extra = pe};
    char *p = NULL;
    if (mcim_jws_sign(attj, &pc, &p) ||
        !(bodies[i] = json_pack("{s:s,s:s}", "proof", p, "tre_cert", pem)))
      die("proofs");
    free(p);
  }
  struct mcim_http_request hr = {.bearer = token};
  struct mcim_access a;
  double best_t = 1e9, best_r = 1e9;
  for (int r = 0; r < rounds; r++) {
    double t0 = now_us();
    for (int i = 0; i < n; i++)
      if (mcim_role_check_access(&vno, &hr, false, &a) != MCIM_OK)
        die("token refused");
    double t1 = now_us();
    for (int i = 0; i < n; i++)
      if (mcim_role_check_device_request(&ro, bodies[r * n + i], DEVICE, TXN, "discovery"))
        die("request refused");
    double t2 = now_us();
    best_t = (t1 - t0) / n < best_t ? (t1 - t0) / n : best_t;
    best_r = (t2 - t1) / n < best_r ? (t2 - t1) / n : best_r;
  }
  printf("token %.1f us, request (new proof, same certificate) %.1f us: best of %d rounds of %d\n",
         best_t, best_r, rounds, n);
  for (int i = 0; i < n * rounds; i++)
    json_decref(bodies[i]);
  free(bodies);
  json_decref(te);
  json_decref(pe);
  free(token);
  free(pem);
  X509_free(x);
  mcim_config_free(ro.cfg);
  mcim_config_free(vno.cfg);
  mcim_jose_key_free(attj);
  mcim_jose_key_free(vj);
  EVP_PKEY_free(att);
  EVP_PKEY_free(vk);
  mcim_pki_ca_free(ops);
  mcim_pki_ca_free(m2mes);
  return 0;
}
