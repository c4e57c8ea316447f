/* The compact JSON writer (src/core/json_dump.c, mcim_json_dumpb/_dumps), which writes the
 * TRE's sealed state, the agent's procedures, every HTTPS answer, JWS header and payload and
 * trace row: for any document jansson parses, its text must be jansson's own JSON_COMPACT
 * text byte for byte (the JWS signatures and the sealed state's hashes are over these bytes),
 * at every buffer size the same length (the size a caller then allocates), and never a byte
 * written past the buffer (ASan). Where they may differ by design (a key that is not valid UTF-8, which jansson
 * writes as text that does not parse) jansson's parser never builds such a document.
 *
 * Input: the bytes of a JSON text (json_loadb, NUL bytes in strings allowed), then, when it is
 * an object or an array, the two writers compared; a buffer size taken from the input's
 * length (0 to the text's) for the bounds check.
 * Seeds: tests/fuzz/corpus/fuzz_json_dump/ (an agent's procedure data, an answer, escapes). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "mcim/json_dump.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_error_t err;
  json_t *doc = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &err);
  if (!doc)
    return 0;
  char *want = json_dumps(doc, JSON_COMPACT);
  char *got = mcim_json_dumps(doc);
  if (!want != !got || (want && strcmp(want, got) != 0))
    fuzz_die("mcim_json_dumps differs from jansson's JSON_COMPACT text");
  if (want) {
    size_t n = strlen(want);
    if (mcim_json_dumpb(doc, NULL, 0) != n)
      fuzz_die("mcim_json_dumpb's length without a buffer differs");
    /* a buffer of 0..n bytes, allocated to that size so that ASan sees a byte past it: what
     * a short buffer holds is unspecified (as jansson's: whole pieces only), its length not */
    size_t cut = size % (n + 1);
    char *buf = malloc(cut ? cut : 1);
    if (!buf)
      fuzz_die("out of memory");
    if (mcim_json_dumpb(doc, buf, cut) != n || (cut == n && memcmp(buf, want, n) != 0))
      fuzz_die("mcim_json_dumpb into a buffer of its size differs");
    free(buf);
  }
  free(want);
  free(got);
  json_decref(doc);
  return 0;
}
