/* A peer's answer as the HTTP clients read it: mcim_http_result_from_answer_ (src/net/
 * problem.c, what both clients, libcurl's and the agent's own, do with a status and a body:
 * the JSON, and for an error the problem+json's cause and detail), then what the outbox makes
 * of it (mcim_outbox_outcome_for: delivered, retried or refused) and the cause's text and
 * name, as the logs and the agent print them.
 *
 * Input: two bytes of HTTP status (big-endian, taken modulo 600), then the body.
 * Seeds: tests/fuzz/corpus/fuzz_problem/ (problem+json of every cause as mcim_problem_new
 * writes them, and answers of the roles). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/cause.h"
#include "mcim/http.h"
#include "mcim/role.h"
#include "net/http_priv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  long status = (long)(((unsigned)data[0] << 8 | data[1]) % 600);
  /* the clients keep the body as it came, in a buffer of its own */
  char *body = fuzz_strndup(data + 2, size - 2);
  struct mcim_http_result res;
  memset(&res, 0, sizeof(res));
  mcim_http_result_from_answer_(&res, status, body, size - 2, "https://127.0.0.1:8443/v1/x");
  (void)mcim_outbox_outcome_for(res.status, res.cause);
  (void)strlen(mcim_cause_text(res.cause));
  (void)strlen(mcim_cause_name(res.cause));
  (void)strlen(res.detail);
  mcim_http_result_clear(&res);
  free(body);
  return 0;
}
