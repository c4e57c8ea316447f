/* Access tokens as a role checks them: mcim_role_check_access (src/roles/peers.c), the one
 * answer to "whose token is honoured here, for what": the unverified peek at the issuer to
 * pick its key, the issuer's name rules, mcim_jws_verify with the token's expectations, the
 * scope the issuer may grant, the claims copied out. It runs here at a VNO (its own tokens,
 * key = its signing key: no store, no peer to fetch a key from), built as the runtime builds
 * a role for what this check reads (kind, name, signing key, clock_skew); the SHO's and the
 * RO's store look-ups after a valid token are not reached.
 *
 * Input: one mode byte (bit 2: the route needs a full-scope token), then
 *   0  the bearer token as the HTTP layer hands it (a string);
 *   1  a token payload, signed here by the fixture's vno key under
 *      {"alg":"ES256","typ":"mcim-access+jwt","kid":"vno"};
 *   2  header bytes, a NUL, payload bytes, signed here.
 * Seeds: tests/fuzz/corpus/fuzz_access_token/. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/config.h"
#include "mcim/http.h"
#include "mcim/role.h"
#include "roles/verified.h"

static struct mcim_role role;
static EVP_PKEY *vno_pkey;

static const mcim_config_spec_t spec[] = {
    {.name = "clock_skew", .type = MCIM_CFG_DURATION, .def = "30s", .min = 0, .max = 3600},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  role.kind = mcim_role_kind_find("vno");
  role.name = FUZZ_VNO;
  role.sign_key = fuzz_jose_key(FUZZ_VNO);
  vno_pkey = fuzz_pkey(FUZZ_VNO);
  if (!role.kind || mcim_config_load_string("fuzz", "{}", NULL, spec, 1, &role.cfg, NULL, 0))
    fuzz_die("the VNO of the access token target");
  return 0;
}

static const char header1[] =
    "{\"alg\":\"ES256\",\"typ\":\"" FUZZ_TYP_ACCESS "\",\"kid\":\"" FUZZ_VNO "\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 3;
  bool need_full = data[0] & 4;
  char *token;
  data++;
  size--;
  if (mode == 0) {
    token = fuzz_strndup(data, size);
  } else if (mode == 1) {
    token = fuzz_sign_raw(vno_pkey, (const uint8_t *)header1, strlen(header1), data, size);
  } else {
    size_t hlen, plen;
    const uint8_t *payload;
    fuzz_split(data, size, 0, &hlen, &payload, &plen);
    token = fuzz_sign_raw(vno_pkey, data, hlen, payload ? payload : (const uint8_t *)"", plen);
  }
  if (!token)
    return 0;
  mcim_jws_verdicts_clear();
  mcim_role_verified_clear();
  struct mcim_http_request req = {.method = "POST", .path = "/v1/attach", .bearer = token};
  struct mcim_access acc;
  (void)mcim_role_check_access(&role, &req, need_full, &acc);
  free(token);
  return 0;
}
