/* The request bodies of the agent's control API (src/device/control.c) through the
 * validation its handlers use: the dispatcher of the agent's local server
 * (mcim_http_dispatch_: the JSON content type, the parse with duplicate keys refused), then
 * the handler's own check of the body, factored out as a pure function the handler calls:
 *   POST /v1/attach {network, txn}: dev_attach_body (the VNO's name or an SHO name, txn hex);
 *   POST /v1/procedures {instruction}: dev_instruction_body, then what dev_procedure_start
 *     does with the string before any store access: dev_instruction_peek (unverified), then
 *     the TRE's check (dev_instruction_check); the two readings must agree (abort otherwise);
 *   POST /v1/owner {handover}: dev_handover_body, then the TRE's owner_handover.
 * The GETs take no body (their {txn} is a bound SQL parameter). fuzz_instruction fuzzes the
 * statements themselves behind a valid signature; here they come inside the body as sent.
 * The fixture TRE's state is put back before every input, the verdict caches emptied.
 *
 * Input: one mode byte (modulo 3: attach, procedures, owner), then the body.
 * Seeds: tests/fuzz/corpus/fuzz_control/ (the bodies `mcim run`, `mcim device attach` and
 * `mcim device handover` send; the statements signed with the fixture's owner key). */
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "fuzz_common.h"
#include "mcim/http.h"
#include "net/http_priv.h"

static char *dir;
static mcim_tre_t *tre;
static struct fuzz_tre_files files;
static unsigned current;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  dir = fuzz_tmpdir("control");
  tre = fuzz_tre_make(dir);
  fuzz_tre_save(dir, &files);
  return 0;
}

static mcim_cause_t procedure(const json_t *body, char *err, size_t errlen)
{
  struct dev_instruction peek, ver;
  mcim_cause_t rc = dev_instruction_body(body, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  const char *jws = json_string_value(json_object_get(body, "instruction"));
  rc = dev_instruction_peek(FUZZ_DEVICE, jws, &peek, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  rc = dev_instruction_check(tre, FUZZ_DEVICE, jws, &ver, err, errlen);
  if (rc == MCIM_OK && (strcmp(peek.txn, ver.txn) != 0 || strcmp(peek.kind, ver.kind) != 0 ||
                        strcmp(peek.via, ver.via) != 0 || strcmp(peek.sho, ver.sho) != 0))
    fuzz_die("the unverified and the verified reading of one instruction differ");
  return rc;
}

static mcim_cause_t owner(const json_t *body, char *err, size_t errlen)
{
  mcim_cause_t rc = dev_handover_body(body, err, errlen);
  if (rc != MCIM_OK)
    return rc;
  const char *jws = json_string_value(json_object_get(body, "handover"));
  rc = tre->ops->owner_handover(tre->ctx, jws, strlen(jws));
  if (rc != MCIM_OK)
    snprintf(err, errlen, "the TRE refused the handover");
  return rc;
}

/* The one route of the fuzzed request, answered as the handlers answer a refusal. */
static void h_check(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp)
{
  (void)ctx;
  char err[300] = "";
  mcim_cause_t rc = current == 0   ? dev_attach_body(req->json, "vno", err, sizeof(err))
                    : current == 1 ? procedure(req->json, err, sizeof(err))
                                   : owner(req->json, err, sizeof(err));
  if (rc != MCIM_OK) {
    if (!err[0] || strlen(err) >= sizeof(err))
      fuzz_die("a refusal without its reason");
    mcim_http_reply_problem(resp, rc, 0, "%s", err);
    return;
  }
  mcim_http_reply_json(resp, 200, json_pack("{s:i}", "checked", (int)current));
}

static const struct mcim_http_route routes[] = {{"POST", "/v1/check", h_check, 0}};
/* the agent's body limit (control.c) */
static const struct mcim_http_server_cfg cfg = {
    .role = "m2me", .routes = routes, .nroutes = 1, .max_body = MCIM_JOSE_MAX_LEN + 4096};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  current = data[0] % 3;
  mcim_jws_verdicts_clear();
  fuzz_tre_restore(dir, &files);
  fuzz_post_json(&cfg, "/v1/check", data + 1, size - 1);
  return 0;
}
