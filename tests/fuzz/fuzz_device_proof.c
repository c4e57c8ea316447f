/* The device's TRE-signed statements as the roles verify them, with the keys a role holds:
 * roles built once (LLVMFuzzerInitialize) as the runtime builds one for what these checks
 * read (kind, name, the M2MES CA, clock_skew), the fixture's M2MES CA and the TRE's
 * attestation certificate of device FUZZ_DEVICE (tests/fuzz/data/tre-att.crt):
 *   the RO ("ro"): the device's own request beside its token, {proof, tre_cert}, as the DRF's
 *     discovery and the DPF's package fetch check it (mcim_role_check_device_request,
 *     src/roles/peers.c: the certificate against the M2MES CA with CN = the device, then
 *     mcim_jws_verify: iss = sub = the device, aud = the RO, typ mcim-request+jwt, txn, the
 *     "for" claim);
 *   the SHO (FUZZ_SHO): a discard receipt (mcim-discard+jwt) and a discard notice
 *     (mcim-notify+jwt) as its discard and notification handlers check them
 *     (mcim_sho_device_statement, src/roles/sho/change.c), at the wall clock and at a relay's
 *     verification time;
 *   the RO relaying such a statement to the SHO (mcim_ro_verify_statement, src/roles/ro/relay.c:
 *     the same checks with aud = the SHO, which its relay and the stand-in receipt make after
 *     their DRF look-up).
 * What follows a valid statement in those handlers reads the store (the stored answer, the
 * order, the jti spent in the transaction) and is not reached. The caches of verified
 * signatures, certificate chains and TRE certificates' keys are emptied before every input;
 * the RO's ring of proofs that verified is not (a proof taken from it is one that verified,
 * byte for byte).
 *
 * Input: one mode byte: its low 3 bits modulo 6 the form, bit 3 the variant (RO: "package"
 * instead of "discovery"; SHO: the notice instead of the receipt), bit 4 (SHO) checked at
 * FUZZ_NOW as a relay's verification time instead of the wall clock, bit 5 (3-5): the RO
 * relay's check instead of the SHO's; then
 *   0  the RO's request body (JSON: proof, tre_cert);
 *   1  a proof's payload, signed here with the TRE's attestation key under
 *      {"alg":"ES256","typ":"mcim-request+jwt"}, sent with the fixture's tre_cert;
 *   2  header bytes, a NUL, payload bytes, signed here, sent with the fixture's tre_cert;
 *   3  the SHO's statement (compact JWS) and, after a NUL, its certificate PEM (none: the
 *      fixture's);
 *   4  a statement's payload, signed here under the typ of the variant;
 *   5  header bytes, a NUL, payload bytes, signed here.
 * Seeds: tests/fuzz/corpus/fuzz_device_proof/ (made by the fixture TRE's own `sign`, as the
 * agent has them made; tests/fuzz/seedgen.c). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/config.h"
#include "mcim/role.h"
#include "roles/ro/ro.h"
#include "roles/sho/sho.h"
#include "roles/verified.h"

static struct mcim_role ro, sho;
static EVP_PKEY *att;
static char *att_pem;

static const mcim_config_spec_t spec[] = {
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 3600},
};

static void role_make(struct mcim_role *r, const char *kind, const char *name)
{
  r->kind = mcim_role_kind_find(kind);
  r->name = name;
  r->m2mes_ca = fuzz_cert("m2mes-ca");
  if (!r->kind || mcim_config_load_string("fuzz", "{}", NULL, spec, 1, &r->cfg, NULL, 0))
    fuzz_die("a role of the device proof target");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  role_make(&ro, "ro", "ro");
  role_make(&sho, "sho", FUZZ_SHO);
  att = fuzz_pkey("tre-att");
  att_pem = fuzz_data("tre-att.crt", NULL);
  return 0;
}

static const char header_request[] = "{\"alg\":\"ES256\",\"typ\":\"" MCIM_DEVICE_REQUEST_TYP "\"}";
static const char header_discard[] = "{\"alg\":\"ES256\",\"typ\":\"mcim-discard+jwt\"}";
static const char header_notify[] = "{\"alg\":\"ES256\",\"typ\":\"mcim-notify+jwt\"}";

/* Modes 1, 2, 4, 5: the input signed with the TRE's attestation key. */
static char *signed_input(int parts, const char *header, const uint8_t *data, size_t size)
{
  if (!parts)
    return fuzz_sign_raw(att, (const uint8_t *)header, strlen(header), data, size);
  size_t hlen, plen;
  const uint8_t *payload;
  fuzz_split(data, size, 0, &hlen, &payload, &plen);
  return fuzz_sign_raw(att, data, hlen, payload ? payload : (const uint8_t *)"", plen);
}

static void at_ro(uint8_t mode, bool package, const uint8_t *data, size_t size)
{
  json_t *body = NULL;
  if (mode == 0) {
    body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
  } else {
    char *proof = signed_input(mode == 2, header_request, data, size);
    if (proof)
      body = json_pack("{s:s,s:s}", "proof", proof, "tre_cert", att_pem);
    free(proof);
  }
  if (!body)
    return;
  (void)mcim_role_check_device_request(&ro, body, FUZZ_DEVICE, FUZZ_TXN,
                                       package ? "package" : "discovery");
  json_decref(body);
}

static void at_sho(uint8_t mode, bool notice, bool relayed, bool at_ro_relay, const uint8_t *data,
                   size_t size)
{
  char *jws = NULL, *cert = NULL;
  if (mode == 3) {
    size_t jlen, clen;
    const uint8_t *c;
    fuzz_split(data, size, 0, &jlen, &c, &clen);
    jws = fuzz_strndup(data, jlen);
    cert = c ? fuzz_strndup(c, clen) : NULL;
  } else {
    jws = signed_input(mode == 5, notice ? header_notify : header_discard, data, size);
  }
  mcim_statement_t *st = NULL;
  const char *typ = notice ? "mcim-notify+jwt" : "mcim-discard+jwt";
  if (jws && at_ro_relay)
    (void)mcim_ro_verify_statement(&ro, FUZZ_DEVICE, FUZZ_SHO, FUZZ_TXN, typ, jws,
                                   cert ? cert : att_pem, &st);
  else if (jws)
    (void)mcim_sho_device_statement(&sho, jws, cert ? cert : att_pem, FUZZ_DEVICE, typ, FUZZ_TXN,
                                    relayed ? FUZZ_NOW : 0, &st);
  mcim_statement_free(st);
  free(jws);
  free(cert);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = (data[0] & 7) % 6;
  bool variant = data[0] & 8, relayed = data[0] & 16, at_ro_relay = data[0] & 32;
  data++;
  size--;
  mcim_jws_verdicts_clear();
  mcim_pki_verdicts_clear();
  mcim_role_verified_clear();
  if (mode <= 2)
    at_ro(mode, variant, data, size);
  else
    at_sho(mode, variant, relayed, at_ro_relay, data, size);
  return 0;
}
