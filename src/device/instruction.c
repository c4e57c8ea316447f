/* The owner's instruction (seed step 2, `mcim-instruction+jwt`): only the owner, whose
 * public key the TRE pinned at manufacture, may make the device re-provision (DESIGN.md 3,
 * management rights). The TRE checks the signature, aud = device, lifetime and replay
 * (its own jti cache, persisted before it says yes); the agent checks what the claims ask. */
#include <stdio.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/pki.h"

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
  if (rc != MCIM_OK) {
    snprintf(err, errlen, "the TRE refused the instruction: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  const char *procedure = mcim_statement_string(st, "procedure");
  const char *via = mcim_statement_string(st, "via");
  const char *sho = mcim_statement_string(st, "sho");
  const char *txn = st->claims.txn;
  rc = MCIM_CLAIM_MISSING;
  if (!procedure || !sho || !txn) {
    snprintf(err, errlen, "the instruction needs the claims procedure, sho and txn");
    goto cleanup;
  }
  rc = MCIM_CLAIM_MISMATCH;
  if (!st->claims.sub || strcmp(st->claims.sub, device) != 0) {
    snprintf(err, errlen, "the instruction is about device \"%s\", this is \"%s\"",
             st->claims.sub ? st->claims.sub : "", device);
    goto cleanup;
  }
  if (strcmp(procedure, "initial") != 0 && strcmp(procedure, "change") != 0) {
    snprintf(err, errlen, "procedure must be \"initial\" or \"change\"");
    goto cleanup;
  }
  if (strcmp(procedure, "change") == 0 && !via) {
    rc = MCIM_CLAIM_MISSING;
    snprintf(err, errlen, "a change needs the claim via (\"old-sho\" or \"pristine\")");
    goto cleanup;
  }
  if (via && strcmp(via, "old-sho") != 0 && strcmp(via, "pristine") != 0) {
    snprintf(err, errlen, "via must be \"old-sho\" or \"pristine\"");
    goto cleanup;
  }
  if (!dev_is_sho_name(sho)) {
    snprintf(err, errlen, "sho \"%.64s\" is not an SHO name", sho);
    goto cleanup;
  }
  if (!txn_valid(txn)) {
    snprintf(err, errlen, "txn must be 32 lower-case hex digits");
    goto cleanup;
  }
  snprintf(out->txn, sizeof(out->txn), "%s", txn);
  snprintf(out->kind, sizeof(out->kind), "%s", procedure);
  snprintf(out->via, sizeof(out->via), "%s", via && strcmp(procedure, "change") == 0 ? via : "");
  snprintf(out->sho, sizeof(out->sho), "%s", sho);
  rc = MCIM_OK;
cleanup:
  mcim_statement_free(st);
  return rc;
}
