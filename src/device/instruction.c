/* The owner's instruction (seed step 2, `mcim-instruction+jwt`): only the owner, whose
 * public key the TRE pinned at manufacture, may make the device re-provision (DESIGN.md 3,
 * management rights). The TRE checks the signature, aud = device, lifetime and replay
 * (its own jti cache, persisted before it says yes); the agent checks what the claims ask. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/pki.h"
#include "mcim/util.h"

/* Fixed role names of a lab (DESIGN.md 8) and the TRE's credential names: never an SHO. */
static const char *const not_sho[] = {"ro",      "vno",  "pva",       "m2mes", "admin",
                                      "subscriber", "tre", MCIM_TRE_PCID, MCIM_TRE_PCID_PREV,
                                      NULL};

bool dev_is_sho_name(const char *name)
{
  if (!name || !mcim_pki_name_valid(name))
    return false;
  for (size_t i = 0; not_sho[i]; i++)
    if (strcmp(name, not_sho[i]) == 0)
      return false;
  return true;
}

static bool txn_valid(const char *txn)
{
  if (!txn || strlen(txn) != DEV_TXN_LEN)
    return false;
  for (size_t i = 0; i < DEV_TXN_LEN; i++)
    if (!((txn[i] >= '0' && txn[i] <= '9') || (txn[i] >= 'a' && txn[i] <= 'f')))
      return false;
  return true;
}

/* The claims the agent acts on, whoever read them (the TRE after verification, or a peek). */
static mcim_cause_t claims_check(const char *device, const char *sub, const char *procedure,
                                 const char *via, const char *sho, const char *txn,
                                 struct dev_instruction *out, char *err, size_t errlen)
{
  if (!procedure || !sho || !txn) {
    snprintf(err, errlen, "the instruction needs the claims procedure, sho and txn");
    return MCIM_CLAIM_MISSING;
  }
  if (!sub || strcmp(sub, device) != 0) {
    snprintf(err, errlen, "the instruction is about device \"%.63s\", this is \"%s\"",
             sub ? sub : "", device);
    return MCIM_CLAIM_MISMATCH;
  }
  bool change = strcmp(procedure, "change") == 0;
  if (strcmp(procedure, "initial") != 0 && !change && strcmp(procedure, "preload") != 0 &&
      strcmp(procedure, "switch") != 0) {
    snprintf(err, errlen, "procedure must be \"initial\", \"change\", \"preload\" or \"switch\"");
    return MCIM_CLAIM_MISMATCH;
  }
  if (change && !via) {
    snprintf(err, errlen, "a change needs the claim via (\"old-sho\" or \"pristine\")");
    return MCIM_CLAIM_MISSING;
  }
  if (via && strcmp(via, "old-sho") != 0 && strcmp(via, "pristine") != 0) {
    snprintf(err, errlen, "via must be \"old-sho\" or \"pristine\"");
    return MCIM_CLAIM_MISMATCH;
  }
  if (!dev_is_sho_name(sho)) {
    snprintf(err, errlen, "sho \"%.64s\" is not an SHO name", sho);
    return MCIM_CLAIM_MISMATCH;
  }
  if (!txn_valid(txn)) {
    snprintf(err, errlen, "txn must be 32 lower-case hex digits");
    return MCIM_CLAIM_MISMATCH;
  }
  snprintf(out->txn, sizeof(out->txn), "%s", txn);
  snprintf(out->kind, sizeof(out->kind), "%s", procedure);
  /* via means something for a change only */
  snprintf(out->via, sizeof(out->via), "%s", via && change ? via : "");
  snprintf(out->sho, sizeof(out->sho), "%s", sho);
  return MCIM_OK;
}

mcim_cause_t dev_instruction_check(mcim_tre_t *tre, const char *device, const char *jws,
                                   struct dev_instruction *out, char *err, size_t errlen)
{
  mcim_statement_t *st = NULL;
  mcim_cause_t rc = MCIM_NOT_OWNER;
  size_t len = jws ? strlen(jws) : 0;

  memset(out, 0, sizeof(*out));
  snprintf(err, errlen, "%s", "");
  if (len == 0 || len > MCIM_JOSE_MAX_LEN) {
    snprintf(err, errlen, "the instruction is not a compact JWS of a sane size");
    goto cleanup;
  }
  rc = tre->ops->verify_owner(tre->ctx, jws, len, "mcim-instruction+jwt", &st);
  if (rc == MCIM_REPLAY) {
    /* The owner's (the signature and the claims verified before the replay cache was
     * asked), used before: the caller may recognise its procedure. The claims are the
     * payload's, which the signature covers. */
    char why[200];
    if (dev_instruction_peek(device, jws, out, why, sizeof(why)) != MCIM_OK)
      memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "the TRE refused the instruction: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "the TRE refused the instruction: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  rc = claims_check(device, st->claims.sub, mcim_statement_string(st, "procedure"),
                    mcim_statement_string(st, "via"), mcim_statement_string(st, "sho"),
                    st->claims.txn, out, err, errlen);
cleanup:
  mcim_statement_free(st);
  return rc;
}

/* A string claim of the payload, unverified (NULL if absent or not a string). */
static const char *peek_str(json_t *payload, const char *name)
{
  return json_string_value(json_object_get(payload, name));
}

mcim_cause_t dev_instruction_peek(const char *device, const char *jws,
                                  struct dev_instruction *out, char *err, size_t errlen)
{
  size_t len = jws ? strlen(jws) : 0;
  uint8_t *buf = NULL;
  json_t *payload = NULL;
  mcim_cause_t rc = MCIM_NOT_OWNER;

  memset(out, 0, sizeof(*out));
  snprintf(err, errlen, "%s", "");
  const char *d1 = len && len <= MCIM_JOSE_MAX_LEN ? strchr(jws, '.') : NULL;
  const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
  if (!d2 || strchr(d2 + 1, '.')) {
    snprintf(err, errlen, "the instruction is not a compact JWS of a sane size");
    goto cleanup;
  }
  size_t b64 = (size_t)(d2 - d1 - 1), cap = b64 / 4 * 3 + 3, n = 0;
  rc = MCIM_NO_MEMORY;
  buf = malloc(cap);
  if (!buf)
    goto cleanup;
  rc = MCIM_NOT_OWNER;
  if (mcim_b64url_decode(d1 + 1, b64, buf, cap, &n) != MCIM_OK ||
      !(payload = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL)) ||
      !json_is_object(payload)) {
    snprintf(err, errlen, "the instruction's payload is not a JSON object");
    goto cleanup;
  }
  rc = claims_check(device, peek_str(payload, "sub"), peek_str(payload, "procedure"),
                    peek_str(payload, "via"), peek_str(payload, "sho"), peek_str(payload, "txn"),
                    out, err, errlen);
cleanup:
  json_decref(payload);
  free(buf);
  return rc;
}
