/* A request body of the device's control API through the validation its handler uses: the
 * owner's instruction (POST /v1/procedures {instruction}, seed step 2; mcim_device_instruct
 * and the control API both go through dev_procedure_start, src/device/start.c). The agent
 * first reads the claims unverified (dev_instruction_peek: a refusal there spends nothing),
 * then has the TRE verify the owner's signature, audience, lifetime and replay and checks the
 * claims again (dev_instruction_check, src/device/instruction.c); start.c takes the two
 * readings to be the same bytes read twice, and so does this target: when both accept, they
 * must agree (abort otherwise). Also the owner's handover statement (the TRE's
 * owner_handover: the pinned key replaced by new_owner_jwk), the other statement the owner
 * sends the device. The fixture TRE's owner key is the fixture's owner.key; its state is put
 * back before every input.
 *
 * Input: one mode byte, then
 *   0  the instruction (a compact JWS, as the body's string);
 *   1  an instruction payload, signed here with the owner's key under
 *      {"alg":"ES256","typ":"mcim-instruction+jwt"};
 *   2  header bytes, a NUL, payload bytes, signed here with the owner's key;
 *   3  a handover statement (compact JWS);
 *   4  a handover payload, signed here under {"alg":"ES256","typ":"mcim-handover+jwt"}.
 * Seeds: tests/fuzz/corpus/fuzz_instruction/. */
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "fuzz_common.h"
#include "mcim/tre.h"

static char *dir;
static mcim_tre_t *tre;
static struct fuzz_tre_files files;
static EVP_PKEY *owner;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  dir = fuzz_tmpdir("instruction");
  tre = fuzz_tre_make(dir);
  fuzz_tre_save(dir, &files);
  owner = fuzz_pkey("owner");
  return 0;
}

static const char header1[] = "{\"alg\":\"ES256\",\"typ\":\"mcim-instruction+jwt\"}";
static const char header4[] = "{\"alg\":\"ES256\",\"typ\":\"mcim-handover+jwt\"}";

static void instruction(const char *jws)
{
  struct dev_instruction peek, ver;
  char err[256];
  mcim_cause_t p = dev_instruction_peek(FUZZ_DEVICE, jws, &peek, err, sizeof(err));
  mcim_cause_t v = dev_instruction_check(tre, FUZZ_DEVICE, jws, &ver, err, sizeof(err));
  if (p == MCIM_OK && v == MCIM_OK &&
      (strcmp(peek.txn, ver.txn) != 0 || strcmp(peek.kind, ver.kind) != 0 ||
       strcmp(peek.via, ver.via) != 0 || strcmp(peek.sho, ver.sho) != 0))
    abort(); /* the unverified and the verified reading of one instruction differ */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 5;
  char *jws;
  data++;
  size--;
  if (mode == 0 || mode == 3) {
    jws = fuzz_strndup(data, size);
  } else if (mode == 1 || mode == 4) {
    const char *h = mode == 1 ? header1 : header4;
    jws = fuzz_sign_raw(owner, (const uint8_t *)h, strlen(h), data, size);
  } else {
    size_t hlen, plen;
    const uint8_t *payload;
    fuzz_split(data, size, 0, &hlen, &payload, &plen);
    jws = fuzz_sign_raw(owner, data, hlen, payload ? payload : (const uint8_t *)"", plen);
  }
  if (!jws)
    return 0;
  mcim_jws_verdicts_clear();
  fuzz_tre_restore(dir, &files);
  if (mode <= 2)
    instruction(jws);
  else
    (void)tre->ops->owner_handover(tre->ctx, jws, strlen(jws));
  free(jws);
  return 0;
}
