/* M2MES CCIF: PCID credential renewal (src/roles/m2mes/ccif.c). */
#ifndef MCIM_ROLES_M2MES_CCIF_H
#define MCIM_ROLES_M2MES_CCIF_H

#include "mcim/http.h"
#include "mcim/jose.h"

/* Schema step of the M2MES: renewals in progress (K and OPc sealed until answered). */
extern const char mcim_ccif_schema_sql[];

/* POST /v1/ccif/pcid (the device, with an access token). */
void mcim_ccif_pcid(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp);

/* manufacture.c: the body of POST /v1/devices (the factory's manufacture request) as its handler
 * checks it after the caller: an object, owner_jwk an object if there, the TRE's JWKs
 * parsed (public EC P-256 only; tpm_storage_jwk optional), device and model by the field
 * table. On MCIM_OK the keys are the caller's (mcim_jose_key_free; *storage may be NULL);
 * else none and `err` says why. Pure; tests/fuzz/fuzz_role_request.c. */
mcim_cause_t mcim_m2mes_devices_body(const json_t *body, mcim_jose_key_t **att,
                                     mcim_jose_key_t **ka, mcim_jose_key_t **storage, char *err,
                                     size_t err_len);

/* enrol.c: enrolment of a device's TPM (docs/tre-tpm.md, "Enrolment"). POST
 * /v1/devices/enrolment (the factory): the challenge. */
void mcim_m2mes_enrolment(void *ctx, const struct mcim_http_request *req,
                          struct mcim_http_response *resp);
/* The "tpm" member of POST /v1/devices checked for `device` and the keys the request names
 * (`storage` may be NULL): EK certificate, AK, the enrolment token, the activated secret, the
 * certifications. *ak is the enrolled AK for the attestation certificate, *pcid_slot the
 * PCID's slot key as certify.pcid offers it ({"public", ...}: mcim_tre_wrap_k_slot wraps the
 * PCID credential's K to it; json_decref). Causes TPM_ENROLMENT_REQUIRED, TPM_EK_UNTRUSTED,
 * TPM_KEY_ATTRIBUTES, TPM_ACTIVATION_FAILED, TPM_CERTIFY_INVALID, TPM_SLOT_KEY_MISSING, with
 * `err`. */
struct mcim_role;
mcim_cause_t mcim_m2mes_tpm_check(struct mcim_role *r, const char *device, const json_t *tpm,
                                  const mcim_jose_key_t *att, const mcim_jose_key_t *ka,
                                  const mcim_jose_key_t *storage, EVP_PKEY **ak, json_t **pcid_slot,
                                  char *err, size_t errlen);

#endif
