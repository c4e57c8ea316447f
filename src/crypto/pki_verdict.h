/* Certificate verdicts kept (src/crypto/pki_verdict.c): mcim_pki_cert_verify's positive
 * answers, so that the same certificate checked again for the same use does not run the
 * chain verification again. */
#ifndef MCIM_CRYPTO_PKI_VERDICT_H
#define MCIM_CRYPTO_PKI_VERDICT_H

#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

#include "mcim/pki.h"

/* What a verdict is about: the certificate, the CA, the usage and the name, as one id.
 * false if it cannot be computed (then there is no verdict to keep or find). */
bool mcim_pki_verdict_id(X509 *cert, X509 *ca, mcim_cert_usage_t usage, const char *name,
                         uint8_t id[32]);
/* true if a verdict with this id was kept and `now` is inside the time it holds for. */
bool mcim_pki_verdict_known(const uint8_t id[32], int64_t now);
/* [not_before, not_after) in which both `cert` and `ca` are valid: the time a positive verdict
 * about them holds for. false if a time does not read. */
bool mcim_pki_both_valid(X509 *cert, X509 *ca, int64_t *not_before, int64_t *not_after);
/* Keep a positive verdict, for the time both certificates are valid. */
void mcim_pki_verdict_keep(const uint8_t id[32], X509 *cert, X509 *ca);

#endif
