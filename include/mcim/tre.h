/* The TRE (trusted environment) of an M2ME: where device keys, the PCID credential, the
 * MCIM slots, the measurement log and the owner's public key live, and where everything
 * that uses them runs (AKA, signing, opening sealed packages). The agent never sees K,
 * OPc, CK/IK of the MCIMs nor the TRE private keys: it asks the TRE to act.
 *
 * The TRE is an interface (a struct of function pointers, lpac style) so that a hardware
 * TRE (TPM, secure element) can replace the software one (src/tre/tre_soft.c: a sealed,
 * crash-safe file) without touching the agent.
 *
 * Slots: one MCIM slot per SHO (slot name = SHO name). A verified package is first held
 * `staged` (step 7), apart from the slots, so staging never disturbs the MCIM in use; once
 * installed, a slot is `active` (the credential the device attaches with; at most one) or
 * `inactive` (pre-provisioned, the variant with two MCIMs). Isolation: a package,
 * discard or activation concerning SHO X only ever touches slot X, and a statement
 * signed by SHO Y is never accepted for slot X. The PCID credential is never removed
 * (invariant 2): the pristine path stays available. */
#ifndef MCIM_TRE_H
#define MCIM_TRE_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/aka.h"
#include "mcim/cause.h"
#include "mcim/jose.h"

#define MCIM_TRE_PCID "pcid" /* credential name of the initial network access credential */
/* The PCID credential that a renewal replaced, kept until the new one has passed one AKA
 * (so a renewal the network has not caught up with yet never leaves the device without a
 * working initial credential). */
#define MCIM_TRE_PCID_PREV "pcid-prev"

/* Limits of the software TRE (the state is one sealed document; everything in it is bounded). */
#define MCIM_TRE_MAX_SLOTS 8          /* MCIM slots (one per SHO) */
#define MCIM_TRE_MAX_STAGED 4         /* staged packages; the oldest is dropped beyond this */
#define MCIM_TRE_MAX_PENDING 32       /* queued notifications */
#define MCIM_TRE_MAX_SEEN 512         /* replay cache (jti of accepted packages and instructions) */
#define MCIM_TRE_MAX_MEASUREMENTS 64  /* measurement log entries */
#define MCIM_TRE_MAX_LIFETIME (30 * 24 * 3600) /* longest lifetime of a statement the TRE signs,
                                                * and of one it reads (docs/tre.md) */
/* A queued notification is dropped this long after it was queued (s): the network keeps
 * nothing about the procedure longer (record_retention, 30 days by default), and one its SHO
 * never takes must not hold a place of MCIM_TRE_MAX_PENDING for good. */
#define MCIM_TRE_PENDING_LIFETIME (30 * 24 * 3600)
#define MCIM_TRE_SKEW 30              /* tolerated clock difference (s) on statements it reads */
/* Per-procedure key-agreement keys (docs/tre.md, "Crypto-shredding"): at most this many kept,
 * each at most this long (s) when its procedure never ends at this TRE. */
#define MCIM_TRE_MAX_TXN_KEYS 8
#define MCIM_TRE_TXN_KEY_LIFETIME (24 * 3600)

enum mcim_tre_cert { MCIM_TRE_CERT_ATTESTATION = 0, MCIM_TRE_CERT_KA = 1 };

struct mcim_tre_ops {
  const char *name; /* "soft" */
  void (*close)(void *ctx);

  /* Public view, no secret (no K, OPc, SQN state, private key, statement):
   * {"device", "model", "pcid": {"id", "expires"} | null, "pcid_prev": {"id", "expires"}
   * (only while kept), "slots": [{"slot", "sho", "imsi", "state", "txn"}] (state "active" or
   * "inactive"), "staged": [{"txn", "sho", "imsi"}], "pending": [{"to", "txn", "typ"}],
   * "owner_pinned": true, "certs": {"attestation": bool, "ka": bool}, "measurements": n}.
   * A staged package is listed under "staged", not as a slot: staging never touches a slot. */
  mcim_cause_t (*status)(void *ctx, json_t **out);
  /* PEM certificate of a TRE key (M2MES CA). free(). MCIM_NOT_FOUND before set_certs. */
  mcim_cause_t (*cert)(void *ctx, enum mcim_tre_cert which, char **pem);

  /* USIM-side AKA with credential `cred` (MCIM_TRE_PCID, MCIM_TRE_PCID_PREV or a slot name):
   * MAC first, then SQN (TS 33.102 Annex C); the SQN state is committed (persisted) only on
   * success, and RES is released only once it is. MCIM_OK: `res` (8 bytes) filled;
   * MCIM_SYNC_FAILURE: `auts` filled; MCIM_MAC_FAILURE; MCIM_CREDENTIAL_EXPIRED for an expired
   * PCID credential; MCIM_NOT_FOUND for no such credential; MCIM_WRONG_STATE for a slot that
   * is not the active one. A success with MCIM_TRE_PCID also drops MCIM_TRE_PCID_PREV. The
   * identity to present comes from identity(). CK and IK stay inside the TRE. */
  mcim_cause_t (*aka)(void *ctx, const char *cred, const uint8_t rand[16], const uint8_t autn[16],
                      uint8_t res[8], uint8_t auts[14]);
  /* The identity (PCID or IMSI) of a credential (a slot in any state); MCIM_NOT_FOUND. */
  mcim_cause_t (*identity)(void *ctx, const char *cred, char imsi[24]);

  /* Sign a device statement with the attestation key: iss = sub = device id, lifetime
   * `lifetime` seconds (1..MCIM_TRE_MAX_LIFETIME). Only device statement types are signed
   * (mcim-status+jwt, mcim-notify+jwt, mcim-renew+jwt, and mcim-request+jwt: the device
   * itself asks the RO for its discovery or package); anything else MCIM_FORBIDDEN, a discard
   * receipt (mcim-discard+jwt) too: only discard() and pristine() queue one, once the MCIM is
   * gone. A status with "result": "success" only for a txn whose MCIM a slot holds installed
   * (install or install_inactive of that txn; "slot", if given, that slot), else
   * MCIM_FORBIDDEN (MCIM_CLAIM_MISMATCH for another slot); a failure result for any txn.
   * A notice {"event": "suspend" | "resume", "slot", "imsi"} only in a txn whose owner's
   * instruction to switch verify_owner() verified, about the slot active then or the target,
   * before the switch is activated, and a resume only while the TRE vouches the other one
   * suspended: else MCIM_FORBIDDEN, MCIM_WRONG_STATE, MCIM_CLAIM_MISMATCH (the slot's IMSI)
   * or MCIM_NOT_FOUND (no such slot). `extra` (may be NULL) must not redefine a mandatory
   * claim. */
  mcim_cause_t (*sign)(void *ctx, const char *typ, const char *aud, const char *txn,
                       json_t *extra, int64_t lifetime, char **jws);
  /* Remote validation evidence (typ mcim-quote+jwt): the PVA's nonce, the measurement log
   * [{"component", "digest"}] and its digest (SHA-256 chain, like a TPM PCR extend:
   * d0 = 32 zero bytes, d(i+1) = SHA-256(d(i) || digest(i))), signed by the attestation key.
   * Claims "nonce", "log", "digest" (lower-case hex). */
  mcim_cause_t (*quote)(void *ctx, const char *aud, const char *txn, const char *nonce,
                        int64_t lifetime, char **jws);

  /* Step 7 (change) / 13 (initial): verify a sealed MCIM package and hold it, whole, staged
   * for slot = its issuer. The issuer's certificate must chain to the operators' CA pinned in
   * the TRE (usage TLS) with CN = the package's iss; aud and sub must be this device, typ
   * mcim-package+jwt, txn the given one; jti not seen before (the TRE's own replay cache);
   * the content decrypts with the TRE's key-agreement key and is a valid MCIM
   * {"sho","imsi","k","opc","amf"} with sho = iss; a TPM TRE takes "k_tpm" (K as a TPM
   * duplication blob, imported into its TPM here: mcim_tre_wrap_k) instead of "k", and
   * refuses "k" once its KA certificate certifies its storage key. Role names (ro, vno, pva, m2mes, admin)
   * and credential names (pcid, pcid-prev) are never slots. Nothing else changes; staging the
   * same package again for a txn already staged or installed is a no-op (MCIM_OK); another
   * package for such a txn is refused. MCIM_PACKAGE_INVALID with the precise cause logged. */
  mcim_cause_t (*stage)(void *ctx, const char *txn, const char *package, size_t len,
                        const char *issuer_cert_pem);
  /* Roll back a procedure that will not install: drop the staged package of `txn` (wiped).
   * MCIM_NOT_FOUND if none. */
  mcim_cause_t (*unstage)(void *ctx, const char *txn);
  /* Step 8 (change) / 3 (pristine): destroy the MCIM of slot `sho` and its security context
   * (K, OPc, SQN array). With a `txn`, a discard notification (mcim-discard+jwt to `sho`,
   * claims "slot", "imsi") is queued in the same atomic write, for pending() to hand out:
   * the receipt of change step 9, or the deferred notice of the pristine path. Retrying
   * with the same (sho, txn) after success is MCIM_OK. MCIM_NOT_FOUND if there is none. */
  mcim_cause_t (*discard)(void *ctx, const char *sho, const char *txn);
  /* Pristine step 3: back to the pristine state. Destroys EVERY MCIM (active and inactive
   * pre-provisioned slots) with its security context and, in the same atomic write, queues a
   * discard notice (as discard() does) to each slot's SHO, for `txn`. The PCID credentials
   * stay. `removed` (may be NULL) gets the slot names removed (a JSON array; empty when there
   * was none: a retry after success, or a device that was pristine already). */
  mcim_cause_t (*pristine)(void *ctx, const char *txn, json_t **removed);
  /* Step 12 (change) / 14 (initial): move the staged package of `txn` into its slot and make
   * it the active credential (any other active slot becomes inactive; a previous MCIM of
   * the same slot is replaced and wiped). `slot` (64 bytes) gets the slot name. Idempotent
   * for a txn already installed. MCIM_NOT_FOUND if neither staged nor installed. */
  mcim_cause_t (*install)(void *ctx, const char *txn, char slot[64]);
  /* Variant with pre-provisioned MCIMs (procedure "preload"): as install, but the new MCIM
   * goes into its slot `inactive` and the active slot (if any) stays active. A slot of the
   * same SHO that is the active one is not replaced: MCIM_WRONG_STATE. Idempotent for a txn
   * already installed. May be NULL in a TRE without pre-provisioning (the agent then
   * answers UNSUPPORTED). */
  mcim_cause_t (*install_inactive)(void *ctx, const char *txn, char slot[64]);
  /* Variant with pre-provisioned MCIMs: make slot `sho` the active one (no download); the
   * others become inactive. MCIM_NOT_FOUND if the slot holds no MCIM. */
  mcim_cause_t (*activate)(void *ctx, const char *sho);

  /* Notifications the device owes the network (discard receipts): each queued entry is
   * signed now with the attestation key (lifetime seconds; a fresh jti each time, the
   * receiver deduplicates by txn) -> [{"to", "txn", "typ", "statement"}]. Read-only. */
  mcim_cause_t (*pending)(void *ctx, int64_t lifetime, json_t **out);
  /* The receiver acknowledged: drop the entry (to, txn). MCIM_NOT_FOUND if none. */
  mcim_cause_t (*pending_done)(void *ctx, const char *to, const char *txn);

  /* Owner's management rights: verify a statement signed by the owner key pinned at
   * manufacture (typ as given, aud = device; iss is whatever the owner wrote: the key is what
   * is trusted), with replay protection (jti kept in the TRE, persisted before MCIM_OK).
   * MCIM_NOT_OWNER if the statement is malformed or the signature is not the owner's; the
   * claim causes (MCIM_CLAIM_MISMATCH, MCIM_TOKEN_EXPIRED, MCIM_REPLAY, ...) otherwise.
   * `out` may be NULL; mcim_statement_free() it. */
  mcim_cause_t (*verify_owner)(void *ctx, const char *jws, size_t len, const char *typ,
                               mcim_statement_t **out);
  /* A change of owner: `jws` is an mcim-handover+jwt the pinned owner signed (aud = sub = the
   * device, claim new_owner_jwk: a public key), checked as verify_owner checks, and the pinned
   * key becomes new_owner_jwk in the same atomic write as the jti. MCIM_KEY_INVALID if the
   * new key is not a public EC key (a private part is refused, never kept). May be NULL (a
   * TRE that cannot: MCIM_UNSUPPORTED). */
  mcim_cause_t (*owner_handover)(void *ctx, const char *jws, size_t len);

  /* Initial network access credential: install a PCID credential delivered as a JWE to the
   * TRE key-agreement key (from the DPF, the M2MES CCIF, or the factory for the first one):
   * {"pcid", "k", "opc", "amf", "expires"}. Done in one atomic write: the replaced credential
   * becomes MCIM_TRE_PCID_PREV (never zero working credentials). The same credential again
   * (same pcid, K, OPc) only updates amf/expires and keeps its SQN state. An already expired
   * one: MCIM_CREDENTIAL_EXPIRED. */
  mcim_cause_t (*pcid_install)(void *ctx, const char *jwe, size_t len);
  /* PCID renewal (docs/protocol.md, "PCID credential lifetime and renewal"): `package` is an
   * mcim-pcid+jwt sealed package from the RO's DPF or the M2MES CCIF. The issuer's
   * certificate must chain to the operators' CA pinned in the TRE (usage TLS) with CN `ro` or
   * `m2mes` = the package's iss; sub = aud = this device; jti not seen before (the TRE's
   * replay cache); the content decrypts with the key-agreement key and is a PCID credential
   * {"pcid", "k", "opc", "amf", "expires"}, then installed as pcid_install does (the
   * replaced one kept as MCIM_TRE_PCID_PREV until the new one passes an AKA). The same
   * package again after success is a no-op (MCIM_OK). Any refusal (an SHO or anyone else as
   * issuer, a bad signature or claim, a replay, an expired credential, bad content):
   * MCIM_PACKAGE_INVALID with the precise cause logged. */
  mcim_cause_t (*pcid_renew)(void *ctx, const char *package, size_t len,
                             const char *issuer_cert_pem);
};

typedef struct mcim_tre {
  const struct mcim_tre_ops *ops;
  void *ctx;
} mcim_tre_t;

/* ---- the software TRE ---- */

/* Manufacture (the M2MES factory): create a new TRE in `dir` (created 0700 if missing;
 * tre.sealed + tre.key + tre.lock, 0600): generates the attestation and key-agreement keys
 * inside it, pins the owner public key (JWK, no private part) and the operators' and M2MES
 * CA certificates, records the device id (a certificate name, mcim_pki_name_valid) and
 * model. MCIM_CONFLICT if a TRE is already there (never replaced). */
mcim_cause_t mcim_tre_soft_create(const char *dir, const char *device, const char *model,
                                  const char *owner_jwk, const char *operators_ca_pem,
                                  const char *m2mes_ca_pem);
/* Open an existing software TRE. MCIM_NOT_FOUND (no TRE), MCIM_UNSEAL_FAILED (wrong key,
 * altered or truncated state), MCIM_KEY_FILE_INSECURE. The state is re-read from disk, under
 * an exclusive file lock, by every operation, so several handles (threads or processes) on
 * one TRE see one state. */
mcim_cause_t mcim_tre_soft_open(const char *dir, mcim_tre_t **out);
void mcim_tre_close(mcim_tre_t *tre);

/* ---- the TPM TRE (docs/tre-tpm.md) ---- */

/* The software TRE's document and operations, with the attestation and key-agreement keys
 * made inside the TPM that `tcti` reaches ("swtpm:host=127.0.0.1,port=N", "device:/dev/tpmrm0")
 * as ECC P-256 keys under its storage primary, fixedTPM and fixedParent: their private parts
 * never exist outside that TPM, and the document keeps only the TPM's wrapped blobs (which
 * only that TPM can load). Same arguments as mcim_tre_soft_create, plus the TCTI.
 * MCIM_TPM_UNREACHABLE, MCIM_TPM_ERROR (the log has the TPM's answer), MCIM_UNSUPPORTED in a
 * build without the TPM TRE (MCIM_TPM=OFF) or without tpm2-tss installed. */
mcim_cause_t mcim_tre_tpm_create(const char *dir, const char *tcti, const char *device,
                                 const char *model, const char *owner_jwk,
                                 const char *operators_ca_pem, const char *m2mes_ca_pem);
/* Open a TPM TRE; its keys are used in the TPM of `tcti` (a connection per operation that
 * needs one, closed when it ends: the TPM serves one connection at a time). MCIM_CONFIG_INVALID
 * for a software TRE (and mcim_tre_soft_open says the same of a TPM TRE), and the causes of
 * mcim_tre_soft_open. The TPM is not contacted until a key is used. */
mcim_cause_t mcim_tre_tpm_open(const char *dir, const char *tcti, mcim_tre_t **out);
/* The TRE a device's configuration names: `backend` "soft" (or NULL; `tcti` unused) or
 * "tpm". MCIM_CONFIG_INVALID for another backend. */
mcim_cause_t mcim_tre_open(const char *dir, const char *backend, const char *tcti,
                           mcim_tre_t **out);

/* K in the TPM (docs/tre-tpm.md, "K in the TPM"). The SHO's side: K as a TPM 2.0
 * duplication blob to the storage key `tpm_storage` (P-256 public key; the one the M2MES
 * certified in the device's KA certificate, mcim_pki_cert_tpm_storage_key), for a package's
 * content "k_tpm": {"public", "duplicate", "seed"} (base64url; no secret in clear: only that
 * TPM can import it). OpenSSL and tpm2-tss's marshalling only, no TPM. MCIM_KEY_INVALID for a
 * key not on P-256, MCIM_UNSUPPORTED in a build without the TPM TRE or tpm2-tss. */
mcim_cause_t mcim_tre_wrap_k(EVP_PKEY *tpm_storage, const uint8_t k[16], json_t **k_tpm);
/* The procedure's slot key (docs/tre-tpm.md, "Slots in the TPM"): an enrolled TPM TRE's quote
 * offers "tpm_slot" {"public", "attest", "signature"}, a storage key made for that procedure
 * and certified (TPM2_Certify) by its restricted attestation key over the txn. The SHO checks
 * it with the AK of the device's attestation certificate (mcim_pki_cert_tpm_ak):
 * MCIM_TPM_SLOT_KEY_MISSING (no offer), MCIM_TPM_CERTIFY_INVALID (malformed, not signed by that
 * AK, or for another key), MCIM_TPM_SLOT_KEY_STALE (certified for another txn),
 * MCIM_TPM_KEY_ATTRIBUTES (not a slot key: its policy would let K be rewrapped out), `err` says
 * which. Then K is wrapped to it (mcim_tre_wrap_k_slot: "k_tpm", as mcim_tre_wrap_k), never to
 * the storage key. MCIM_UNSUPPORTED in a build without the TPM TRE or tpm2-tss. */
mcim_cause_t mcim_tre_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                 size_t errlen);
/* The same for the slot key a TPM TRE's PCID renewal request offers ("tpm_slot" of its
 * mcim-renew+jwt), certified over SHA-256("mcim-pcid-slot" || 0x00 || txn): the issuer (the
 * RO's DPF, the M2MES CCIF) checks it with the AK of the request's attestation certificate and
 * wraps the renewed K to it (docs/tre-tpm.md, "The PCID credential's K"). */
mcim_cause_t mcim_tre_pcid_slot_check(EVP_PKEY *ak, const json_t *offer, const char *txn, char *err,
                                      size_t errlen);
mcim_cause_t mcim_tre_wrap_k_slot(const json_t *offer, const uint8_t k[16], json_t **k_tpm);

/* Factory-only calls on an open TRE of either backend (before the device ships). */
/* The public JWK of the TPM storage key the TRE imports K under (the M2MES certifies it in
 * the KA certificate, so that an SHO can wrap K for this TPM). free(). MCIM_NOT_FOUND for a
 * TRE without a TPM (the software TRE). */
mcim_cause_t mcim_tre_tpm_storage_jwk(mcim_tre_t *tre, char **jwk);
/* Public JWKs of the TRE keys (to be certified by the M2MES). free(). */
mcim_cause_t mcim_tre_soft_public_jwk(mcim_tre_t *tre, enum mcim_tre_cert which, char **jwk);
/* Store the M2MES certificates of the TRE keys: each must verify against the pinned M2MES
 * CA with CN = device id and its usage, and certify exactly its TRE key (MCIM_KEY_INVALID). */
mcim_cause_t mcim_tre_soft_set_certs(mcim_tre_t *tre, const char *attestation_pem,
                                     const char *ka_pem);
/* Measured boot: record the measurement log [{"component", "digest"}] (hex SHA-256),
 * replacing the previous one; at most MCIM_TRE_MAX_MEASUREMENTS entries. */
mcim_cause_t mcim_tre_soft_set_measurements(mcim_tre_t *tre, const json_t *log);

#endif
