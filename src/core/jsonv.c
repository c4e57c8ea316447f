#include "mcim/jsonv.h"

#include <stdio.h>
#include <string.h>

static const char *type_name(enum mcim_jsonv_type t)
{
  switch (t) {
  case MCIM_JV_STRING:
    return "a string";
  case MCIM_JV_INTEGER:
    return "an integer";
  case MCIM_JV_BOOLEAN:
    return "a boolean";
  case MCIM_JV_OBJECT:
    return "an object";
  case MCIM_JV_ARRAY:
    return "an array";
  case MCIM_JV_HEX:
    return "a hex string";
  }
  return "?";
}

static bool type_ok(const json_t *v, enum mcim_jsonv_type t)
{
  switch (t) {
  case MCIM_JV_STRING:
  case MCIM_JV_HEX:
    return json_is_string(v);
  case MCIM_JV_INTEGER:
    return json_is_integer(v);
  case MCIM_JV_BOOLEAN:
    return json_is_boolean(v);
  case MCIM_JV_OBJECT:
    return json_is_object(v);
  case MCIM_JV_ARRAY:
    return json_is_array(v);
  }
  return false;
}

static bool is_hex(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    /* lower case only: ids like txn are compared as strings, so one spelling */
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  }
  return true;
}

mcim_cause_t mcim_jsonv_check(const json_t *obj, const struct mcim_jsonv_field *fields,
                              size_t nfields, char *err, size_t err_len)
{
  const char *key;
  json_t *val;

  if (!json_is_object(obj)) {
    snprintf(err, err_len, "body must be a JSON object");
    return MCIM_BAD_JSON;
  }
  json_object_foreach((json_t *)obj, key, val) {
    const struct mcim_jsonv_field *f = NULL;
    for (size_t i = 0; i < nfields && !f; i++)
      if (strcmp(fields[i].name, key) == 0)
        f = &fields[i];
    if (!f) {
      snprintf(err, err_len, "unknown field \"%.64s\"", key);
      return MCIM_UNKNOWN_FIELD;
    }
    if (!type_ok(val, f->type)) {
      snprintf(err, err_len, "field \"%s\" must be %s", f->name, type_name(f->type));
      return MCIM_WRONG_TYPE;
    }
    if (f->type == MCIM_JV_STRING || f->type == MCIM_JV_HEX) {
      size_t n = json_string_length(val);
      size_t max = f->max_len ? f->max_len : 4096;
      if (f->type == MCIM_JV_HEX) {
        if (!is_hex(json_string_value(val), n)) {
          snprintf(err, err_len, "field \"%s\" must be lower-case hexadecimal", f->name);
          return MCIM_BAD_HEX;
        }
        if ((f->max_len && n != f->max_len) || (!f->max_len && (n % 2 || n > 4096))) {
          snprintf(err, err_len, "field \"%s\" has %zu hex digits, expected %zu", f->name, n,
                   f->max_len);
          return MCIM_BAD_LENGTH;
        }
      } else if (n > max || strlen(json_string_value(val)) != n) {
        snprintf(err, err_len, "field \"%s\" is too long or contains NUL", f->name);
        return MCIM_BAD_LENGTH;
      }
    }
  }
  for (size_t i = 0; i < nfields; i++)
    if (fields[i].required && !json_object_get(obj, fields[i].name)) {
      snprintf(err, err_len, "missing field \"%s\"", fields[i].name);
      return MCIM_FIELD_MISSING;
    }
  return MCIM_OK;
}
