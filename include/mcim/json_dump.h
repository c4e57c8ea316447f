/* Compact JSON text of a jansson document, the same bytes as jansson's own
 * json_dumpb/json_dumps(..., JSON_COMPACT), made several times faster (src/core/json_dump.c):
 * jansson looks up every container in a hash table of its parents (circular references) and
 * decodes each string one code point at a time through a callback. Used where documents are
 * dumped many times a procedure: the TRE state at each write, the procedure's data at each
 * save, the HTTPS answers and request bodies, JWS headers and payloads, trace rows
 * (tests/fuzz/fuzz_json_dump.c holds it to jansson's bytes). */
#ifndef MCIM_JSON_DUMP_H
#define MCIM_JSON_DUMP_H

#include <stddef.h>

#include <jansson.h>

/* As json_dumpb(json, buf, size, JSON_COMPACT): `json` an object or an array; writes into
 * `buf` only (no allocation, no copy of the text anywhere else) and returns the text's
 * length, which may be more than `size` (then call again with a buffer that large), or 0 on
 * error: not an object or array, a string or key that is not valid UTF-8, nesting deeper
 * than MCIM_JSON_DUMP_DEPTH (jansson's loads refuses it too; a circular document ends
 * there). `buf` may be NULL with `size` 0. No terminating NUL. */
#define MCIM_JSON_DUMP_DEPTH 2048
size_t mcim_json_dumpb(const json_t *json, char *buf, size_t size);
/* As json_dumps(json, JSON_COMPACT): the text, NUL-terminated, to free(); NULL on error. */
char *mcim_json_dumps(const json_t *json);

#endif
