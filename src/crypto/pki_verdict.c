/* Certificate verdicts kept (src/crypto/pki_verdict.h).
 *
 * Why: a procedure shows the same device and role certificates again and again (the TRE's
 * attestation certificate with every quote and device request, its key-agreement
 * certificate with every order), and each check was a full chain verification, an ECDSA
 * verification and a parse of the chain's extensions: about 10 per procedure, a tenth of
 * the daemons' CPU (docs/performance.md).
 *
 * Why it is safe: mcim_pki_cert_verify's answer depends on nothing but the two
 * certificates, the usage, the name and the time (no CRL, no external store). The id is the
 * SHA-256 of both certificates' DER, the usage and the name, so a verdict never answers for
 * another certificate, CA, usage or name; the time is checked against the window in which
 * both certificates are valid, the only time-dependent part of the check, so an expired or
 * not yet valid certificate is verified (and refused) as before. Only positive verdicts are
 * kept: a refusal is always checked again, with its cause. The table is bounded (the oldest
 * goes). */
#include "crypto/pki_verdict.h"

#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#include "crypto/verdicts.h"

static struct mcim_verdicts verdicts = MCIM_VERDICTS_INIT;

static bool der_digest(X509 *x, uint8_t md[32])
{
  unsigned int n = 0;
  return X509_digest(x, mcim_sha256(), md, &n) == 1 && n == 32;
}

bool mcim_pki_verdict_id(X509 *cert, X509 *ca, mcim_cert_usage_t usage, const char *name,
                         uint8_t id[32])
{
  uint8_t cert_md[32], ca_md[32];
  int32_t u = (int32_t)usage;
  if (!der_digest(cert, cert_md) || !der_digest(ca, ca_md))
    return false;
  const void *parts[] = {cert_md, ca_md, &u, name};
  const size_t lens[] = {sizeof(cert_md), sizeof(ca_md), sizeof(u), name ? strlen(name) : 0};
  return mcim_verdict_id(id, 4, parts, lens);
}

bool mcim_pki_verdict_known(const uint8_t id[32], int64_t now)
{
  return mcim_verdict_known(&verdicts, id, now);
}

static bool asn1_seconds(const ASN1_TIME *t, int64_t *out)
{
  struct tm tm;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
    return false;
  *out = (int64_t)timegm(&tm);
  return true;
}

bool mcim_pki_both_valid(X509 *cert, X509 *ca, int64_t *not_before, int64_t *not_after)
{
  int64_t nb1, na1, nb2, na2;
  if (!asn1_seconds(X509_get0_notBefore(cert), &nb1) ||
      !asn1_seconds(X509_get0_notAfter(cert), &na1) ||
      !asn1_seconds(X509_get0_notBefore(ca), &nb2) || !asn1_seconds(X509_get0_notAfter(ca), &na2))
    return false;
  *not_before = nb1 > nb2 ? nb1 : nb2;
  *not_after = na1 < na2 ? na1 : na2;
  return true;
}

void mcim_pki_verdict_keep(const uint8_t id[32], X509 *cert, X509 *ca)
{
  int64_t nb, na;
  if (mcim_pki_both_valid(cert, ca, &nb, &na)) /* else not kept: checked in full next time */
    mcim_verdict_keep(&verdicts, id, nb, na);
}

void mcim_pki_verdicts_clear(void)
{
  mcim_verdict_clear(&verdicts);
}
