/* The PostgreSQL backend's values: parameters bound as libpq takes them, and result rows
 * mapped to mcim_val_t by column type (src/store/postgres.c says why each mapping). */
#include "store/postgres_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- results ---- */

enum col_kind { COL_TEXT, COL_INT, COL_BOOL, COL_NUMERIC, COL_BYTEA };

static enum col_kind kind_of(Oid t)
{
  switch (t) {
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
    return COL_INT;
  case OID_BOOL:
    return COL_BOOL;
  case OID_NUMERIC:
    return COL_NUMERIC;
  case OID_BYTEA:
    return COL_BYTEA;
  default:
    return COL_TEXT;
  }
}

static bool parse_int(const char *s, int64_t *v)
{
  char *end = NULL;
  if (!*s)
    return false;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (errno || !end || *end)
    return false;
  *v = (int64_t)x;
  return true;
}

static int hexval(char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static const uint8_t empty_blob[1];

/* bytea in hex output ("\x0aff..."), decoded into `buf` (room for len/2 bytes). */
static bool decode_bytea(const char *s, size_t len, uint8_t *buf, size_t *out)
{
  if (len < 2 || s[0] != '\\' || s[1] != 'x' || (len - 2) % 2)
    return false;
  size_t n = (len - 2) / 2;
  if (n && !buf)
    return false;
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 + 2 * i]), lo = hexval(s[3 + 2 * i]);
    if (hi < 0 || lo < 0)
      return false;
    buf[i] = (uint8_t)(hi << 4 | lo);
  }
  *out = n;
  return true;
}

mcim_cause_t mcim_pg_deliver_rows(struct pg_conn *c, const PGresult *res, mcim_row_cb cb, void *arg)
{
  mcim_cause_t rc = MCIM_NO_MEMORY;
  mcim_val_t stack_vals[ROW_STACK_COLS];
  const char *stack_names[ROW_STACK_COLS];
  enum col_kind stack_kinds[ROW_STACK_COLS];
  mcim_val_t *vals = stack_vals;
  const char **names = stack_names;
  enum col_kind *kinds = stack_kinds;
  uint8_t *blobs = NULL;
  size_t blobs_cap = 0;
  int nrows = PQntuples(res);
  size_t ncols = (size_t)PQnfields(res);

  if (!cb || nrows == 0)
    return MCIM_OK;
  if (ncols > ROW_STACK_COLS) {
    vals = calloc(ncols, sizeof(*vals));
    names = calloc(ncols, sizeof(*names));
    kinds = calloc(ncols, sizeof(*kinds));
    if (!vals || !names || !kinds)
      goto cleanup;
  }
  for (size_t i = 0; i < ncols; i++) {
    names[i] = PQfname(res, (int)i);
    kinds[i] = kind_of(PQftype(res, (int)i));
  }
  rc = MCIM_OK;
  for (int r = 0; r < nrows && rc == MCIM_OK; r++) {
    /* room for this row's blobs */
    size_t need = 0;
    for (size_t i = 0; i < ncols; i++)
      if (kinds[i] == COL_BYTEA && !PQgetisnull(res, r, (int)i))
        need += (size_t)PQgetlength(res, r, (int)i) / 2;
    if (need > blobs_cap) {
      uint8_t *bigger = realloc(blobs, need);
      if (!bigger) {
        rc = MCIM_NO_MEMORY;
        break;
      }
      blobs = bigger;
      blobs_cap = need;
    }
    size_t used = 0;
    for (size_t i = 0; i < ncols && rc == MCIM_OK; i++) {
      int col = (int)i;
      mcim_val_t *v = &vals[i];
      memset(v, 0, sizeof(*v));
      if (PQgetisnull(res, r, col))
        continue; /* MCIM_VAL_NULL */
      const char *s = PQgetvalue(res, r, col);
      size_t len = (size_t)PQgetlength(res, r, col);
      switch (kinds[i]) {
      case COL_INT:
      case COL_NUMERIC:
        if (parse_int(s, &v->i)) {
          v->type = MCIM_VAL_INT;
          break;
        }
        /* a fraction or out of range: its decimal text */
        v->type = MCIM_VAL_TEXT;
        v->s = s;
        v->len = len;
        break;
      case COL_BOOL:
        v->type = MCIM_VAL_INT;
        v->i = s[0] == 't';
        break;
      case COL_BYTEA: {
        size_t n = 0;
        if (!decode_bytea(s, len, blobs ? blobs + used : NULL, &n)) {
          mcim_pg_set_err(c, "bytea value not in hex output format");
          rc = MCIM_STORE_ERROR;
          break;
        }
        v->type = MCIM_VAL_BLOB;
        v->p = n ? blobs + used : empty_blob;
        v->len = n;
        used += n;
        break;
      }
      default:
        v->type = MCIM_VAL_TEXT;
        v->s = s;
        v->len = len;
        break;
      }
    }
    if (rc != MCIM_OK)
      break;
    mcim_row_t row = {ncols, vals, names};
    rc = cb(&row, arg);
  }

cleanup:
  free(blobs);
  if (vals != stack_vals)
    free(vals);
  if (names != stack_names)
    free((void *)names);
  if (kinds != stack_kinds)
    free(kinds);
  return rc;
}

/* The parameters as libpq takes them: text, or binary for a blob; `sig` one letter each
 * (the prepared statements' cache key). The arrays hold nparams entries (sig one more). */
mcim_cause_t mcim_pg_bind_params(struct pg_conn *c, const mcim_val_t *params, size_t nparams,
                                const char **values, int *lengths, int *formats, char (*ints)[24],
                                char *sig)
{
  for (size_t i = 0; i < nparams; i++) {
    const mcim_val_t *v = &params[i];
    values[i] = NULL;
    lengths[i] = 0;
    formats[i] = 0;
    switch (v->type) {
    case MCIM_VAL_NULL:
      sig[i] = 'n';
      break;
    case MCIM_VAL_INT:
      sig[i] = 'i';
      snprintf(ints[i], sizeof(ints[i]), "%lld", (long long)v->i);
      values[i] = ints[i];
      break;
    case MCIM_VAL_TEXT:
      sig[i] = v->s ? 't' : 'n';
      values[i] = v->s;
      break;
    case MCIM_VAL_BLOB:
      if (v->len && !v->p) {
        snprintf(c->errmsg, sizeof(c->errmsg), "cannot bind parameter %zu", i + 1);
        return MCIM_INVALID_ARGUMENT;
      }
      if (v->len > INT_MAX) {
        snprintf(c->errmsg, sizeof(c->errmsg), "parameter %zu is too large", i + 1);
        return MCIM_TOO_LARGE;
      }
      sig[i] = 'b';
      /* an empty blob is a zero-length value, not NULL: never a NULL pointer */
      values[i] = v->len ? (const char *)v->p : (const char *)empty_blob;
      lengths[i] = (int)v->len;
      formats[i] = 1;
      break;
    default:
      snprintf(c->errmsg, sizeof(c->errmsg), "cannot bind parameter %zu", i + 1);
      return MCIM_INVALID_ARGUMENT;
    }
  }
  sig[nparams] = '\0';
  return MCIM_OK;
}
