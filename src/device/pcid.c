/* Renewal of the initial network access credential (PCID credential), device side
 * (docs/protocol.md, "PCID credential lifetime and renewal"; the seed's last paragraphs):
 * the agent asks the RO's DPF (or the M2MES CCIF, agent config `pcid_renew_from`) with a
 * TRE-signed mcim-renew+jwt; the answer is an mcim-pcid+jwt package sealed to the TRE's
 * key-agreement key, which only the TRE opens (pcid_renew): the agent never sees K or OPc.
 * The TRE keeps the previous credential as pcid-prev until the new one passes an AKA, so a
 * renewal never leaves the device without a working initial credential. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/util.h"

bool dev_pcid_renewal_near(struct mcim_device *d, int64_t *expires)
{
  json_t *view = NULL;
  bool near = false;
  if (expires)
    *expires = 0;
  if (d->tre->ops->status(d->tre->ctx, &view) != MCIM_OK)
    return false;
  json_t *exp = json_object_get(json_object_get(view, "pcid"), "expires");
  if (json_is_integer(exp)) {
    int64_t e = json_integer_value(exp);
    if (expires)
      *expires = e;
    near = e - mcim_now() < dev_cfg_int(d, "pcid_renew_margin");
  }
  json_decref(view);
  return near;
}

mcim_cause_t dev_pcid_renew(struct mcim_device *d, struct mcim_http_lite *cli, const char *txn,
                            const char *token, long *http_status, char *detail, size_t len)
{
  bool ccif = strcmp(dev_cfg_str(d, "pcid_renew_from"), "ccif") == 0;
  const char *peer = dev_cfg_str(d, ccif ? "m2mes" : "ro");
  const char *path = ccif ? "/v1/ccif/pcid" : "/v1/dpf/pcid";
  const char *who = ccif ? "M2MES CCIF" : "DPF";
  char pcid[24] = "", fresh[24] = "", msg[96];
  char *request = NULL, *tre_cert = NULL, *ka_cert = NULL, *issuer_pem = NULL;
  mcim_jose_key_t *issuer = NULL;
  struct mcim_http_result res = {0};
  json_t *extra = NULL, *body = NULL, *tb = NULL;
  mcim_cause_t rc;

  *http_status = 0;
  detail[0] = '\0';
  if (!d->tre->ops->pcid_renew) {
    snprintf(detail, len, "this TRE cannot renew its PCID credential");
    return MCIM_UNSUPPORTED;
  }
  rc = d->tre->ops->identity(d->tre->ctx, MCIM_TRE_PCID, pcid);
  if (rc == MCIM_OK) {
    extra = json_pack("{s:s}", "pcid", pcid);
    rc = extra ? d->tre->ops->sign(d->tre->ctx, "mcim-renew+jwt", peer, txn, extra,
                                   dev_cfg_int(d, "statement_lifetime"), &request)
               : MCIM_NO_MEMORY;
  }
  if (rc == MCIM_OK)
    rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_ATTESTATION, &tre_cert);
  if (rc == MCIM_OK)
    rc = d->tre->ops->cert(d->tre->ctx, MCIM_TRE_CERT_KA, &ka_cert);
  if (rc != MCIM_OK) {
    snprintf(detail, len, "the TRE cannot make the renewal request: %s", mcim_cause_text(rc));
    goto cleanup;
  }
  body = json_pack("{s:s,s:s,s:s,s:s,s:s}", "txn", txn, "device", d->name, "request", request,
                   "tre_cert", tre_cert, "ka_cert", ka_cert);
  int64_t sent = dev_now_us();
  rc = body ? dev_call(d, cli, "POST", peer, path, body, token, &res) : MCIM_NO_MEMORY;
  tb = json_pack("{s:s,s:s}", "txn", txn, "pcid", pcid);
  snprintf(msg, sizeof(msg), "%s: PCID credential renewal request", who);
  dev_trace_at(d, sent, txn, 0, peer, msg, tb, rc);
  if (rc != MCIM_OK) {
    *http_status = res.status;
    snprintf(detail, len, "%s %s: %s", who, path, res.detail[0] ? res.detail : mcim_cause_text(rc));
    goto cleanup;
  }
  const char *package = dev_json_str(res.json, "package", MCIM_JOSE_MAX_LEN);
  if (!package) {
    rc = MCIM_PEER_BAD_ANSWER;
    snprintf(detail, len, "%s: the answer has no package", who);
    goto cleanup;
  }
  /* the issuer's certificate, verified here against the pinned CA (CN = the peer) and by
   * the TRE again, which also checks the package's signature, claims and replay */
  rc = dev_peer_key(d, cli, peer, &issuer, &issuer_pem);
  if (rc != MCIM_OK) {
    snprintf(detail, len, "certificate of %s: %s", peer, mcim_cause_text(rc));
    goto cleanup;
  }
  rc = d->tre->ops->pcid_renew(d->tre->ctx, package, strlen(package), issuer_pem);
  if (rc == MCIM_OK)
    d->tre->ops->identity(d->tre->ctx, MCIM_TRE_PCID, fresh);
  json_decref(tb);
  tb = rc == MCIM_OK ? json_pack("{s:s,s:s}", "pcid", fresh, "previous", pcid) : NULL;
  dev_trace(d, txn, 0, "tre", "install the renewed PCID credential (previous one kept until an AKA)",
            tb, rc);
  if (rc != MCIM_OK) {
    snprintf(detail, len, "the TRE refused the PCID package from %s: %s", peer,
             mcim_cause_text(rc));
    goto cleanup;
  }
  mcim_log_event(MCIM_LOG_NOTICE, txn, 0, MCIM_OK, "PCID credential renewed by the %s: %s -> %s",
                 who, pcid, fresh);
cleanup:
  json_decref(extra);
  json_decref(body);
  json_decref(tb);
  mcim_http_result_clear(&res);
  mcim_jose_key_free(issuer);
  free(request);
  free(tre_cert);
  free(ka_cert);
  free(issuer_pem);
  return rc;
}
