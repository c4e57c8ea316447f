/* Remote validation of a TRE quote (seed step 10, change step 4): the quote's evidence is
 * checked for form and freshness, the measurement log is replayed into the SHA-256 chain
 * the TRE signed, and every measurement is matched against the model's RIMs. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mcim/firmware.h"
#include "mcim/pki.h"
#include "mcim/util.h"
#include "roles/pva/pva.h"

static bool hex64(const char *s)
{
  uint8_t b[MCIM_FIRMWARE_DIGEST_LEN];
  return s && strlen(s) == MCIM_FIRMWARE_HEX_LEN && mcim_hex_decode_str(s, b, sizeof(b)) == MCIM_OK;
}

mcim_cause_t pva_quote_evidence(const mcim_statement_t *quote, const char *nonce,
                                const char **model, const json_t **log, char *err,
                                size_t errlen)
{
  const json_t *p = quote ? quote->payload : NULL;
  const char *qnonce = mcim_statement_string(quote, "nonce");
  const char *qmodel = mcim_statement_string(quote, "model");
  const char *qdigest = mcim_statement_string(quote, "digest");
  const json_t *qlog = json_object_get(p, "log");

  *model = NULL;
  *log = NULL;
  if (!qnonce) {
    snprintf(err, errlen, "the quote has no \"nonce\" claim");
    return MCIM_QUOTE_INVALID;
  }
  /* Same length first: mcim_ct_equal compares equal-length buffers only. */
  if (!nonce || strlen(qnonce) != strlen(nonce) || !mcim_ct_equal(qnonce, nonce, strlen(nonce))) {
    snprintf(err, errlen, "the quote is over another nonce than this validation's");
    return MCIM_QUOTE_INVALID;
  }
  if (!qmodel || !mcim_pki_name_valid(qmodel)) {
    snprintf(err, errlen, "the quote has no valid \"model\" claim (the device model name)");
    return MCIM_QUOTE_INVALID;
  }
  if (!json_is_array(qlog)) {
    snprintf(err, errlen, "the quote has no \"log\" array (measurement log)");
    return MCIM_QUOTE_INVALID;
  }
  if (!hex64(qdigest)) {
    snprintf(err, errlen, "the quote's \"digest\" must be %d hex digits", MCIM_FIRMWARE_HEX_LEN);
    return MCIM_QUOTE_INVALID;
  }
  *model = qmodel;
  *log = qlog;
  return MCIM_OK;
}

static json_t *mismatch(const char *component, const char *digest, const char *reason)
{
  json_t *m = json_object();
  if (!m)
    return NULL;
  json_object_set_new(m, "component", json_string(component));
  if (digest)
    json_object_set_new(m, "digest", json_string(digest));
  json_object_set_new(m, "reason", json_string(reason));
  return m;
}

static bool digest_listed(const json_t *list, const char *digest)
{
  size_t i;
  const json_t *d;
  json_array_foreach(list, i, d) {
    if (json_is_string(d) && strcasecmp(json_string_value(d), digest) == 0)
      return true;
  }
  return false;
}

json_t *pva_match(const char *model, const json_t *log, const char *quoted_digest,
                  const json_t *rims)
{
  char chain[MCIM_FIRMWARE_HEX_LEN + 1];
  char err[160];
  char reason[200];
  json_t *out = json_array();
  json_t *seen = json_object();
  size_t i;
  const json_t *entry;
  const char *comp;
  const json_t *list;

  if (!out || !seen)
    goto fail;
  /* The signature covers log and digest; a log that does not replay into the digest means
   * the TRE's evidence is inconsistent, so no measurement in it can be trusted. */
  if (mcim_firmware_log_digest(log, chain, err, sizeof(err)) != MCIM_OK) {
    json_array_append_new(out, mismatch("*", NULL, err));
    goto done;
  }
  if (!quoted_digest || strcasecmp(chain, quoted_digest) != 0) {
    json_array_append_new(out, mismatch("*", quoted_digest,
                                        "the measurement log does not replay into the quoted "
                                        "digest"));
    goto done;
  }
  if (json_array_size(log) == 0)
    json_array_append_new(out, mismatch("*", NULL, "the measurement log is empty"));
  json_array_foreach(log, i, entry) {
    const char *c = json_string_value(json_object_get(entry, "component"));
    const char *d = json_string_value(json_object_get(entry, "digest"));
    json_object_set_new(seen, c, json_true());
    list = json_object_get(rims, c);
    if (!list) {
      snprintf(reason, sizeof(reason), "no RIM for component \"%.64s\" of model %s", c, model);
      json_array_append_new(out, mismatch(c, d, reason));
    } else if (!digest_listed(list, d)) {
      snprintf(reason, sizeof(reason), "digest is not a RIM of \"%.64s\" of model %s", c, model);
      json_array_append_new(out, mismatch(c, d, reason));
    }
  }
  /* A component the model has but the device did not measure is as suspect as a wrong one. */
  json_object_foreach((json_t *)rims, comp, list) {
    if (!json_object_get(seen, comp)) {
      snprintf(reason, sizeof(reason), "component not measured (model %s has a RIM for it)",
               model);
      json_array_append_new(out, mismatch(comp, NULL, reason));
    }
  }
done:
  json_decref(seen);
  return out;
fail:
  json_decref(seen);
  json_decref(out);
  return NULL;
}

void pva_mismatch_summary(const json_t *mismatches, const char *model, char *out, size_t len)
{
  size_t i, used;
  const json_t *m;
  int n = snprintf(out, len, "%zu measurement(s) do not match the RIMs of model %s:",
                   json_array_size(mismatches), model ? model : "?");
  used = n > 0 ? (size_t)n : 0;
  json_array_foreach(mismatches, i, m) {
    if (used >= len)
      break;
    const char *c = json_string_value(json_object_get(m, "component"));
    const char *d = json_string_value(json_object_get(m, "digest"));
    const char *r = json_string_value(json_object_get(m, "reason"));
    /* Digests shortened: the full list is in the answer's "mismatches". */
    n = snprintf(out + used, len - used, "%s %s%s%.12s%s (%s)", i ? ";" : "", c ? c : "?",
                 d ? " digest " : "", d ? d : "", d ? "..." : "", r ? r : "");
    if (n < 0)
      break;
    used += (size_t)n;
  }
}
