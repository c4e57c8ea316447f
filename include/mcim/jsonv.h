/* Validation of JSON request bodies against a field table: every field known,
 * of the right type, required ones present, strings within a length limit.
 * The first problem found is reported with the field's name. */
#ifndef MCIM_JSONV_H
#define MCIM_JSONV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "mcim/cause.h"

enum mcim_jsonv_type {
  MCIM_JV_STRING,
  MCIM_JV_INTEGER,
  MCIM_JV_BOOLEAN,
  MCIM_JV_OBJECT,
  MCIM_JV_ARRAY,
  MCIM_JV_HEX, /* string of lower-case hex digits, `max_len` = exact number of digits (0: any even length) */
};

struct mcim_jsonv_field {
  const char *name;
  enum mcim_jsonv_type type;
  bool required;
  size_t max_len; /* strings: maximum length in bytes (0: 4096) */
};

/* MCIM_OK, or MCIM_BAD_JSON (not an object), MCIM_UNKNOWN_FIELD, MCIM_WRONG_TYPE,
 * MCIM_FIELD_MISSING, MCIM_BAD_LENGTH, MCIM_BAD_HEX; `err` names the field. */
mcim_cause_t mcim_jsonv_check(const json_t *obj, const struct mcim_jsonv_field *fields,
                              size_t nfields, char *err, size_t err_len);

#endif
