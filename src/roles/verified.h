/* Verdicts a role keeps about what peers and devices show it again and again
 * (src/roles/verified.c): the key of a certificate that verified, and an access token that
 * verified. */
#ifndef MCIM_ROLES_VERIFIED_H
#define MCIM_ROLES_VERIFIED_H

#include <stdbool.h>
#include <openssl/x509.h>
#include <stdint.h>

#include "mcim/pki.h"
#include "mcim/role.h"

/* The public key of the certificate `cert_pem` (its kid: `name`) once it verified against
 * `ca` for `usage` and `name` (mcim_pki_cert_public_key), answered from a verdict kept for
 * the very same certificate bytes, CA, usage and name while the certificate and the CA are
 * both valid. What mcim_role_peer_key_from_pem and mcim_role_device_key_from_pem answer.
 * `name` is required (MCIM_INVALID_ARGUMENT without). */
mcim_cause_t mcim_role_cert_key(const char *cert_pem, X509 *ca, mcim_cert_usage_t usage,
                                const char *name, mcim_jose_key_t **out);
/* The same at the time `now` (what mcim_role_cert_key does at mcim_now()): tests give the
 * time instead of waiting for it. */
mcim_cause_t mcim_role_cert_key_at(const char *cert_pem, X509 *ca, mcim_cert_usage_t usage,
                                   const char *name, int64_t now, mcim_jose_key_t **out);

/* Access token verdicts: the id of a bearer token at this role (its bytes, the role's name,
 * kind, clock skew and operators' CA); false if it cannot be computed (then none is kept). */
bool mcim_role_access_id(struct mcim_role *r, const char *bearer, uint8_t id[32]);
/* true, and `out` filled as the full check filled it, if a verdict with this id is kept and
 * `now` is inside its window. */
bool mcim_role_access_known(const uint8_t id[32], int64_t now, struct mcim_access *out);
/* Keep the token's verdict for [not_before, not_after): the times its claims accept. */
void mcim_role_access_keep(const uint8_t id[32], const struct mcim_access *a, int64_t not_before,
                           int64_t not_after);

/* Forget every verdict of both kinds (tests, fuzzers). */
void mcim_role_verified_clear(void);

#endif
