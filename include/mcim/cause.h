/* One cause table for every error mcim reports: a stable number, a stable name
 * (the `cause` of a problem+json answer), the HTTP status it maps to, and human text.
 * Add new causes at the end of a group; never renumber. */
#ifndef MCIM_CAUSE_H
#define MCIM_CAUSE_H

#include <stdbool.h>

/*  X(NAME,                 code, http, "human text") */
#define MCIM_CAUSE_TABLE(X) \
  X(OK,                        0, 200, "success") \
  /* generic: 1xx */ \
  X(INTERNAL,                100, 500, "internal error") \
  X(NO_MEMORY,               101, 503, "out of memory") \
  X(INVALID_ARGUMENT,        102, 400, "invalid argument") \
  X(BAD_HEX,                 103, 400, "value is not valid hexadecimal") \
  X(BAD_LENGTH,              104, 400, "value has the wrong length") \
  X(BAD_BASE64,              105, 400, "value is not valid base64url") \
  X(BAD_JSON,                106, 400, "malformed JSON") \
  X(IO_ERROR,                107, 500, "input/output error") \
  X(NOT_FOUND,               108, 404, "not found") \
  X(CONFLICT,                109, 409, "conflicting state") \
  X(TOO_LARGE,               110, 413, "input too large") \
  X(UNSUPPORTED,             111, 400, "unsupported value") \
  /* configuration: 2xx */ \
  X(CONFIG_INVALID,          200, 500, "configuration is invalid") \
  X(CONFIG_MISSING,          201, 500, "configuration file is missing or unreadable") \
  /* crypto and AKA: 3xx */ \
  X(CRYPTO_ERROR,            300, 500, "cryptographic library failure") \
  X(MAC_FAILURE,             301, 401, "AKA: MAC in AUTN does not verify (wrong key or forged challenge)") \
  X(SYNC_FAILURE,            302, 401, "AKA: SQN out of range, resynchronisation required") \
  X(AMF_INVALID,             303, 401, "AKA: AMF separation bit not acceptable") \
  X(AUTS_INVALID,            304, 401, "AKA: MAC-S in AUTS does not verify") \
  X(RES_MISMATCH,            305, 401, "AKA: RES does not match XRES") \
  X(SQN_EXHAUSTED,           306, 500, "AKA: sequence number space exhausted") \
  /* JOSE and PKI: 4xx */ \
  X(JOSE_MALFORMED,          400, 400, "JOSE object is malformed") \
  X(JWS_BAD_SIGNATURE,       401, 401, "JWS signature does not verify") \
  X(JWS_BAD_ALG,             402, 401, "JOSE algorithm not allowed") \
  X(CLAIM_MISSING,           403, 401, "a mandatory claim is missing or has the wrong type") \
  X(CLAIM_MISMATCH,          404, 401, "a claim does not have the expected value") \
  X(TOKEN_EXPIRED,           405, 401, "statement has expired") \
  X(TOKEN_NOT_YET_VALID,     406, 401, "statement is issued in the future") \
  X(REPLAY,                  407, 409, "statement was already used (replay)") \
  X(JWE_DECRYPT_FAILED,      408, 400, "sealed content cannot be opened (wrong recipient or altered)") \
  X(CERT_INVALID,            409, 401, "certificate does not verify against the trusted CA") \
  X(CERT_EXPIRED,            410, 401, "certificate has expired") \
  X(KEY_INVALID,             411, 400, "key is malformed or of the wrong type") \
  X(REPLAY_CACHE_FULL,       412, 503, "replay cache is full of unexpired entries, retry later") \
  X(LIFETIME_TOO_LONG,       413, 401, "statement is valid for longer than its verifier accepts (exp too far ahead)") \
  /* storage: 5xx */ \
  X(STORE_ERROR,             500, 500, "storage failure") \
  X(STORE_SCHEMA_TOO_NEW,    501, 500, "database schema is newer than this program") \
  X(SEAL_FAILED,             502, 500, "sealing a secret for storage failed") \
  X(UNSEAL_FAILED,           503, 500, "sealed secret cannot be opened (wrong storage key or altered)") \
  X(STORE_BUSY,              504, 503, "storage is busy (lock not obtained in time), retry") \
  X(KEY_FILE_INSECURE,       505, 500, "storage key file is accessible by group or others (must be 0600)") \
  /* HTTP and peers: 6xx */ \
  X(ROUTE_NOT_FOUND,         600, 404, "no such resource on this role") \
  X(METHOD_NOT_ALLOWED,      601, 405, "method not allowed on this resource") \
  X(UNSUPPORTED_MEDIA_TYPE,  602, 415, "request body must be application/json") \
  X(UNKNOWN_FIELD,           603, 400, "request has a field this API does not define") \
  X(WRONG_TYPE,              604, 400, "a field has the wrong JSON type") \
  X(FIELD_MISSING,           605, 400, "a required field is missing") \
  X(PEER_NOT_AUTHENTICATED,  606, 401, "client certificate missing or not issued by the lab CA") \
  X(FORBIDDEN,               607, 403, "the caller is not allowed to do this") \
  X(PEER_UNREACHABLE,        608, 502, "peer cannot be reached") \
  X(PEER_ERROR,              609, 502, "peer answered with an error") \
  X(PEER_BAD_ANSWER,         610, 502, "peer answered with something that is not a valid message") \
  X(TIMEOUT,                 611, 504, "peer did not answer in time") \
  /* procedures: 7xx */ \
  X(CREDENTIAL_EXPIRED,      700, 401, "the initial network access credential (PCID) has expired") \
  X(SUBSCRIPTION_TERMINATED, 701, 403, "the subscription was terminated; no more AVs for this identity") \
  X(UNKNOWN_IDENTITY,        702, 404, "no subscription for this identity") \
  X(NO_ACCESS,               703, 401, "no access token: attach to a network first") \
  X(SCOPE_RESTRICTED,        704, 403, "restricted access (PCID) reaches only the RO and the PVA") \
  X(NOT_ORDERED,             705, 404, "no subscriber order for this device at any SHO") \
  X(VALIDATION_FAILED,       706, 403, "platform validation failed: measurements do not match the RIMs") \
  X(QUOTE_INVALID,           707, 400, "TRE quote is malformed, unsigned or not for this nonce") \
  X(NONCE_UNKNOWN,           708, 404, "no pending validation with this nonce") \
  X(PACKAGE_INVALID,         709, 400, "MCIM package refused (wrong device, issuer, content or replay)") \
  X(SLOT_FORBIDDEN,          710, 403, "this SHO may not touch that TRE slot") \
  X(NOT_OWNER,               711, 403, "not signed by the device's owner key (as the RO knows the owner)") \
  X(PROCEDURE_FAILED,        712, 500, "the procedure did not complete") \
  X(PROCEDURE_PENDING,       713, 202, "the procedure is still running") \
  X(WRONG_STATE,             714, 409, "request does not fit the procedure's current state") \
  X(DEVICE_BUSY,             715, 409, "the device is already running a procedure") \
  X(SUBSCRIPTION_NOT_ACTIVE, 716, 403, "subscription not active yet: MCIM issued, installation not reported") \
  X(OWNER_UNKNOWN,           717, 403, "no owner is registered at the RO for this device (M2MES registers it at manufacture)") \
  X(ORDER_PENDING,           718, 503, "the order of this procedure has not reached the DRF yet; ask again after Retry-After") \
  X(NOT_PARTY,               719, 403, "the caller is not a party of this procedure (txn) for this device") \
  X(TOKEN_WRONG_ISSUER,      720, 403, "access token of another network: honoured only by its issuer (and the RO, PVA, M2MES)") \
  X(SCOPE_NOT_GRANTABLE,     721, 403, "the token's issuer may not grant that scope (the VNO grants restricted access only)") \
  X(TOKEN_REVOKED,           722, 401, "access token revoked by its issuer (the subscription it was issued for ended)") \
  X(REGISTRATION_PENDING,    723, 503, "the SHO's registration of this device has not reached the DRF yet; ask again after Retry-After") \
  X(ORDER_NOT_STORED_YET,    724, 503, "the SHO is still storing the order of this procedure; ask again after Retry-After") \
  X(REPORT_PENDING,          725, 503, "the SHO has not yet heard that this MCIM was installed; ask again after Retry-After") \
  X(ATTEST_MALFORMED,        726, 400, "TPM quote evidence is malformed: TPMS_ATTEST or signature truncated or garbled, not a quote, or not of PCR 10") \
  X(ATTEST_SIGNATURE,        727, 401, "TPM quote does not verify with the device's certified attestation key (another TPM, or altered)") \
  X(ATTEST_NONCE,            728, 401, "TPM quote is not over this validation's nonce (a replayed or stale quote)") \
  X(ATTEST_LOG_MISMATCH,     729, 400, "measurement log does not replay to the PCR digest the TPM quoted") \
  X(ATTEST_MISSING,          730, 400, "the device's attestation key is certified as in a TPM: a TPM quote is required") \
  X(RENEWAL_TOO_EARLY,       731, 429, "the device's PCID credential was renewed less than pcid_renewal_interval ago; renew after Retry-After") \
  X(REVOCATIONS_TOO_FAST,    732, 503, "this SHO sent the PVA more than revocations_per_minute revocations this minute; retry after Retry-After") \
  X(ATTACH_BUSY,             733, 503, "too many attach challenges of this identity did not end in an attach lately (open, answered wrong, resynchronised); retry after Retry-After") \
  X(ORDERS_BUSY,             734, 429, "this device has as many live orders as allowed (orders_open_max at the SHO, drf_orders_open_max at the DRF), none yet provisioned, failed or expired; order again after Retry-After") \
  X(NOTICE_OVERTAKEN,        735, 409, "the device's TRE signed a later suspend or resume notice for this subscription, already applied: this one is older and changes nothing") \
  X(NOTICE_NOT_RELAYED,      737, 403, "the RO relays no such suspend: it names no leg of a switch, or it is of the target (leg \"to\") with that SHO's own token") \
  X(EARLIER_UNDELIVERED,     736, 409, "an earlier message of this procedure to another party is not delivered yet: this one waits for it (a resume never overtakes the suspend of another subscription)") \
  X(NONCE_EXPIRED,           738, 410, "the nonce of this procedure's platform validation expired before a quote over it came: the PVA told the SHO (a failure verdict); start the procedure again") \
  X(SHO_NOT_LINKED,          739, 403, "the DRF holds no entry that links the device to that SHO (live, for a switch notice but the suspend of the SHO a switch leaves), nor an install of its package there: the RO relays nothing of this device to it") \
  X(REGISTRATION_OVERTAKEN,  740, 409, "the device moved on since the install or switch this registration rests on (a later install of another SHO's MCIM, or a later switch to another SHO, is on record): it is older and changes nothing") \
  /* hardware TRE: 8xx */ \
  X(TPM_ERROR,               800, 500, "the TPM refused or failed a command") \
  X(TPM_UNREACHABLE,         801, 503, "the TPM cannot be reached") \
  X(TRE_ROLLBACK,            802, 500, "the TRE state is older than the TPM's monotonic counter says (an older state file was put back): refused") \
  /* TPM enrolment at the M2MES (docs/tre-tpm.md, "Enrolment") */ \
  X(TPM_EK_UNTRUSTED,        810, 403, "the TPM's endorsement key certificate does not chain to a trusted TPM vendor CA") \
  X(TPM_ACTIVATION_FAILED,   811, 403, "the credential was not activated: the attestation key is not in the TPM of the certified endorsement key") \
  X(TPM_KEY_ATTRIBUTES,      812, 400, "a TPM key's attributes are not those required (fixedTPM, fixedParent, made in the TPM; the attestation key a restricted signing key)") \
  X(TPM_CERTIFY_INVALID,     813, 400, "a TPM2_Certify of a TRE key does not verify with the attestation key or certifies another key") \
  X(TPM_ENROLMENT_REQUIRED,  814, 400, "a TPM device is certified, validated and provisioned only once the M2MES enrolled its TPM (endorsement key certificate, activated credential, certified keys)") \
  /* K wrapped to a slot key the TRE's attestation key certified (docs/tre-tpm.md, "Slots in the TPM") */ \
  X(TPM_SLOT_KEY_MISSING,    815, 400, "a TPM-enrolled device's quote offers no slot key certified by its attestation key: K is wrapped to no other key") \
  X(TPM_SLOT_KEY_STALE,      816, 400, "the slot key's certification is for another procedure (its qualifying data is not this txn's)")

typedef enum mcim_cause {
#define MCIM_CAUSE_ENUM(name, code, http, text) MCIM_##name = (code),
  MCIM_CAUSE_TABLE(MCIM_CAUSE_ENUM)
#undef MCIM_CAUSE_ENUM
} mcim_cause_t;

/* Stable upper-case name, e.g. "MAC_FAILURE"; "UNKNOWN" for a value not in the table. */
const char *mcim_cause_name(mcim_cause_t c);
/* Human text for operators. */
const char *mcim_cause_text(mcim_cause_t c);
/* HTTP status a server answers with for this cause. */
int mcim_cause_http_status(mcim_cause_t c);
/* Reverse lookup of a name (as received in a peer's problem+json); -1 if unknown. */
int mcim_cause_from_name(const char *name);
/* Whether a call that failed with cause `c` (and `http_status`, 0 when no answer came) may
 * succeed if made again unchanged: the peer could not be reached or did not answer in time,
 * was busy, or failed on its side (5xx). A refusal (4xx), a peer that fails authentication
 * and an answer too large never heal. Callers retry only idempotent requests. */
bool mcim_cause_transient(mcim_cause_t c, long http_status);

#endif
