/* One cause table for every error mcim reports: a stable number, a stable name
 * (the `cause` of a problem+json answer), the HTTP status it maps to, and human text.
 * Add new causes at the end of a group; never renumber. */
#ifndef MCIM_CAUSE_H
#define MCIM_CAUSE_H

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
  /* storage: 5xx */ \
  X(STORE_ERROR,             500, 500, "storage failure") \
  X(STORE_SCHEMA_TOO_NEW,    501, 500, "database schema is newer than this program") \
  X(SEAL_FAILED,             502, 500, "sealing a secret for storage failed") \
  X(UNSEAL_FAILED,           503, 500, "sealed secret cannot be opened (wrong storage key or altered)")

typedef enum mcim_cause {
#define MCIM_CAUSE_ENUM(name, code, http, text) MCIM_##name = code,
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

#endif
