/* Internals of the software TRE (include/mcim/tre.h), shared by the files of src/tre/, and
 * of the TPM TRE (src/tre/tpm/tre_tpm.c), which is the same with its keys in a TPM (struct
 * tre_keys_ops below).
 *
 * The whole TRE is one JSON document (docs/tre.md section 2), sealed with the storage key
 * into one of two slot files, DIR/tre.sealed and DIR/tre.sealed.1, each stamped with a
 * generation. Every operation runs as a transaction:
 *
 *   tre_begin()   thread mutex + exclusive flock on DIR/tre.lock, then read the slots and
 *                 unseal the newest that opens (the working copy: nobody else sees it)
 *   ...           compute the new state in the working copy
 *   tre_commit()  seal it with the next generation and write it over the OTHER slot, in
 *                 place, with one fdatasync
 *   tre_end()     wipe and free the working copy, unlock
 *
 * so a failure before tre_commit() leaves nothing behind (the working copy is dropped), and a
 * crash during it leaves the slot being written torn while the other still holds the state
 * before it: the next read finds the torn one does not open and takes the other. Re-reading
 * per operation also keeps several handles (the agent and a CLI, two threads with their own
 * handle) on one state. */
#ifndef MCIM_TRE_PRIV_H
#define MCIM_TRE_PRIV_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mcim/jose.h"
#include "mcim/milenage.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"

#define TRE_STATE_VERSION 1
#define TRE_FILE_STATE "tre.sealed"     /* slot 0 (the only file of format 1) */
#define TRE_FILE_STATE_1 "tre.sealed.1" /* slot 1 */
#define TRE_FILE_KEY "tre.key"
#define TRE_FILE_LOCK "tre.lock"
/* First line of a slot, in clear: "mcim-tre 2 <device> <generation> <sealed length>\n". The
 * device id and the generation name the seal context ("tre/<device>/<generation>"), which
 * must be known before unsealing; both are authenticated anyway (the context is the AAD), so
 * a slot relabelled with a higher generation does not open. Format 1, "mcim-tre 1
 * <device>\n" with context "tre/<device>" and the sealed blob to the end of the file, is
 * still read, as generation 0: the state of a TRE written before the slots. */
#define TRE_MAGIC_V1 "mcim-tre 1 "
#define TRE_MAGIC "mcim-tre 2 "
#define TRE_CONTEXT_PREFIX "tre/"

/* The document's "backend": absent in a software TRE (and in every document written before
 * the TPM TRE), "tpm" in a TPM TRE. A handle opens only a document of its own backend. */
#define TRE_BACKEND_TPM "tpm"

#define TRE_TYP_PACKAGE "mcim-package+jwt"
#define TRE_TYP_QUOTE "mcim-quote+jwt"
#define TRE_TYP_DISCARD "mcim-discard+jwt"

struct tre_soft;

/* Where the TRE's private keys are and who computes with them: the one thing the backends do
 * differently (docs/tre-tpm.md, "The key operations"). The software TRE's keys are PKCS#8
 * PEM in the document, used in this process (tre_state.c); the TPM TRE's are TPM objects
 * whose private parts never leave the TPM, the document holding only their TPM-wrapped blobs
 * (src/tre/tpm/tre_tpm.c). The document, its sealing, the slots and every check are shared:
 * each operation gets its keys through tre_key_jose() / tre_key_public(), which call these. */
struct tre_keys_ops {
  const char *name; /* "soft" or "tpm" (TRE_BACKEND_TPM) */
  /* Manufacture: two new keys as the document's "keys" members ("attestation", "ka"). */
  mcim_cause_t (*create)(struct tre_soft *t, json_t **attestation, json_t **ka);
  /* The public key of `which` from the working copy `st` (no private part). */
  mcim_cause_t (*public_key)(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                             EVP_PKEY **out);
  /* `which` as a JOSE key that signs ES256 (attestation: mcim_jws_sign, kid = the device) or
   * opens ECDH-ES JWEs (ka: mcim_jwe_decrypt, mcim_package_open). Valid until tre_end(). */
  mcim_cause_t (*jose)(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                       mcim_jose_key_t **out);
  /* End of a transaction (tre_end) and of the handle: release what the key operations held
   * (the TPM connection). May be NULL. */
  void (*end)(struct tre_soft *t);
  /* K in the TPM (docs/tre-tpm.md, "K in the TPM"); NULL in a backend without one (the
   * software TRE: a package's "k_tpm" is refused, MCIM_UNSUPPORTED). */
  /* The public key of the storage key K is imported under (what the M2MES certifies). */
  mcim_cause_t (*storage_public)(struct tre_soft *t, json_t *st, EVP_PKEY **out);
  /* TPM2_Import of a package's "k_tpm" {"public", "duplicate", "seed"} for procedure `txn`,
   * under the slot key its quote offered (txn_slot_create), with no TPM2_Rewrap: *out is what
   * a slot keeps, {"tpm_public", "tpm_private", "tpm_handle", "tpm_parent", "tpm_auth"} (K
   * wrapped by the TPM under that slot key, and the key's record). K is taken no other way: a
   * txn whose quote offered no slot key is MCIM_FORBIDDEN, a blob the TPM refuses (wrapped to
   * another key, the storage primary included, another TPM's, altered) MCIM_KEY_INVALID. */
  mcim_cause_t (*k_import_txn)(struct tre_soft *t, json_t *st, const char *txn, const json_t *dup,
                               json_t **out);
  /* The PCID credential's "k_tpm" (the M2MES's blob, docs/tre-tpm.md "The PCID credential's
   * K"): TPM2_Import under the PCID's slot key (TRE_PCID_SLOT, made and certified at
   * enrolment), no TPM2_Rewrap; *out as k_import_txn's. No such key (never enrolled):
   * MCIM_TPM_SLOT_KEY_MISSING; a blob the TPM refuses: MCIM_KEY_INVALID. NULL in the software
   * TRE (a credential's "k_tpm" refused, MCIM_UNSUPPORTED); not NULL: K in clear refused. */
  mcim_cause_t (*k_import_pcid)(struct tre_soft *t, json_t *st, const json_t *dup, json_t **out);
  /* A renewed PCID credential's "k_tpm" (renewal `txn`): under the slot key that renewal's
   * request offered (TRE_PCID_OFFER, pcid_slot_offer); none for that txn:
   * MCIM_TPM_SLOT_KEY_MISSING. */
  mcim_cause_t (*k_import_pcid_renewal)(struct tre_soft *t, json_t *st, const char *txn,
                                        const json_t *dup, json_t **out);
  /* The slot key a PCID renewal request offers ("tpm_slot" of the TRE-signed mcim-renew+jwt):
   * made once per renewal txn and certified by the AK over that txn (the same one at a repeated
   * request); *offer = {"public", "attest", "signature"}, *made when `st` changed (commit it).
   * MCIM_TPM_ENROLMENT_REQUIRED without the AK. NULL in the software TRE (no offer). */
  mcim_cause_t (*pcid_slot_offer)(struct tre_soft *t, json_t *st, const char *txn, json_t **offer,
                                  bool *made);
  /* A Milenage context whose E_K is the slot's K in the TPM (`blob` from k_import_txn), loaded
   * until tre_end(); OPc is the caller's to give (mcim_milenage_use_opc). */
  mcim_cause_t (*k_milenage)(struct tre_soft *t, json_t *st, const json_t *blob,
                             mcim_milenage_t **out);
  /* A staged or installed MCIM whose K is in the TPM leaves the document (discard, unstage,
   * replaced, dropped): destroy what makes `blob` usable (its slot key), before the write. */
  mcim_cause_t (*k_destroy)(struct tre_soft *t, json_t *st, const json_t *blob);
  /* Rollback protection (src/tre/tpm/tre_tpm_nv.c has the rule); NULL in the software TRE,
   * which cannot tell an older copy of its files from the current one (docs/tre.md). At
   * manufacture: bind the new document `st` to a monotonic counter. */
  mcim_cause_t (*fresh_create)(struct tre_soft *t, json_t *st);
  /* tre_load: the newest slot that opens (generation `gen`) is refused, MCIM_TRE_ROLLBACK,
   * when the counter says a later generation was written. */
  mcim_cause_t (*fresh_check)(struct tre_soft *t, json_t *st, uint64_t gen);
  /* tre_persist, once the new slot is durable: advance the counter. */
  mcim_cause_t (*fresh_advance)(struct tre_soft *t, json_t *st);
  /* A per-procedure key-agreement key (tre_txn.c): a new ECDH P-256 key as the document
   * keeps it (software: PKCS#8 PEM; TPM: its TPM blobs under the storage key), and that key
   * as a JOSE key that opens ECDH-ES JWEs, valid until tre_end(). */
  mcim_cause_t (*txn_ka_create)(struct tre_soft *t, json_t *st, json_t **out);
  mcim_cause_t (*txn_ka_jose)(struct tre_soft *t, json_t *st, json_t *key, mcim_jose_key_t **out);
  /* A slot key for one procedure, made at its quote and certified by the restricted
   * attestation key over the txn (docs/tre-tpm.md, "Slots in the TPM"): *out is what the txn's
   * entry keeps, {"tpm_handle", "tpm_parent", "tpm_auth", "public", "attest", "signature"}, the
   * last three the quote's "tpm_slot". MCIM_TPM_ENROLMENT_REQUIRED without the restricted
   * attestation key (a TPM TRE never enrolled: it cannot quote). NULL in the software TRE. */
  mcim_cause_t (*txn_slot_create)(struct tre_soft *t, json_t *st, const char *txn, json_t **out);
  /* Destroy a procedure's slot key that received no K (the procedure ended without it). */
  mcim_cause_t (*txn_slot_destroy)(struct tre_soft *t, json_t *st, const json_t *slot);
};
extern const struct tre_keys_ops tre_keys_soft;
#ifdef MCIM_HAVE_TPM
extern const struct tre_keys_ops tre_keys_tpm; /* src/tre/tpm/tre_tpm.c */
#endif

struct tre_soft {
  pthread_mutex_t mu;
  const struct tre_keys_ops *keys;
  char *tcti;     /* the TPM's TCTI (the TPM backend) */
  void *keys_ctx; /* the backend's, for one transaction (the TPM connection) */
  char *dir;
  char *path_state[2], *path_lock;
  char *device; /* from the file header, checked against the document */
  mcim_storage_key_t *skey;
  int lock_fd;
  /* Where the current state is: its slot and generation, as this handle last read or wrote
   * it (under the lock). The next write goes to the other slot, one generation up. */
  int slot;
  uint64_t gen;
  /* The unsealed document as this handle last read or wrote it, and the SHA-256 of the
   * sealed slot it came from: when the newest slot still holds exactly those bytes,
   * tre_load() copies it instead of unsealing and parsing them again (three quarters of an
   * operation's cost). Every write seals with a fresh nonce and a new generation, so another
   * handle's write, or an older copy put back, is different bytes and is read. */
  json_t *cache;
  uint8_t cache_id[32];
  /* A write of this handle is durable but its fresh_advance failed: the next write rolls the
   * counter forward (fresh_check) before it writes. */
  bool fresh_lag;
};

/* Tests only (NULL otherwise): called by tre_persist at "before-write" (the new slot not
 * written yet) and "after-write" (durable, the counter not advanced): a test's hook _exit()s
 * there, a crash at that point. */
extern void (*tre_crash_hook)(const char *where);

/* Unpacked credential (PCID or MCIM slot). Holds secrets: tre_cred_wipe() it. */
struct tre_cred {
  char id[24]; /* PCID or IMSI */
  uint8_t k[16], opc[16], amf[2];
  /* A slot whose K is in the TPM: its "k_tpm" (borrowed from the document), k all zero. */
  const json_t *k_tpm;
  int64_t expires; /* PCID only; 0 for an MCIM */
  struct mcim_sqn_usim sqn;
};

/* ---- tre_store.c: file, lock, seal (the storage key's rotation: tre_store_key.c) ---- */
mcim_cause_t tre_paths(struct tre_soft *t, const char *dir);
/* Read the slots and unseal the newest that opens; sets t->device when it is still NULL,
 * and t->slot, t->gen. A newest slot that does not open is a write cut by a crash (or an
 * altered file): the other is used, with a warning. */
mcim_cause_t tre_load(struct tre_soft *t, json_t **out);
/* Seal with the next generation and write over the other slot (crash-safe: see above). */
mcim_cause_t tre_persist(struct tre_soft *t, json_t *st);
mcim_cause_t tre_lock_open(struct tre_soft *t);
mcim_cause_t tre_begin(struct tre_soft *t, json_t **st);
/* For operations that only read the document (status, cert, identity): locked and loaded as
 * by tre_begin, but *st may be the handle's kept document itself, not a working copy: never
 * modified, never kept past tre_end_read, which ends the transaction (nothing is written). */
mcim_cause_t tre_begin_read(struct tre_soft *t, json_t **st);
void tre_end_read(struct tre_soft *t, json_t *st);
/* tre_persist, or tre_commit_shred when per-procedure keys expired in `st` (tre_txn.c). */
mcim_cause_t tre_commit(struct tre_soft *t, json_t *st);
/* Crypto-shredding (docs/tre.md, "Crypto-shredding"): a write that removes a secret (an MCIM,
 * a per-procedure KA key) goes under a NEW storage key, to both slots, and the old key is
 * overwritten in tre.key: neither the current key opens an older copy of the files nor does
 * the old key open the current ones. Crash-safe: the new key is written to tre.key.new first,
 * and tre_load() finishes a rotation cut after the slot was written. Every file in place, one
 * fdatasync each (tre_store_key.c says why in that order). */
mcim_cause_t tre_commit_shred(struct tre_soft *t, json_t *st);
void tre_end(struct tre_soft *t, json_t *st);
/* Wipe every string of a document (K, OPc, private keys are strings) and release it. Only
 * for documents nothing else references. */
void tre_json_wipe_free(json_t *doc);
/* Wipe every string under `v` in place (before it is released). */
void tre_json_wipe(json_t *v);
void tre_soft_free(struct tre_soft *t);

/* ---- tre_soft.c: manufacture and open, for either backend ---- */
mcim_cause_t tre_create(const struct tre_keys_ops *keys, const char *tcti, const char *dir,
                        const char *device, const char *model, const char *owner_jwk,
                        const char *operators_ca_pem, const char *m2mes_ca_pem);
mcim_cause_t tre_open(const struct tre_keys_ops *keys, const char *tcti, const char *dir,
                      mcim_tre_t **out);

/* ---- tre_state.c: the document ---- */
const char *tre_str(json_t *obj, const char *name);
int64_t tre_int(json_t *obj, const char *name);
/* Index of the element of `array` whose member `name` equals `value`, or -1. */
ssize_t tre_find(json_t *array, const char *name, const char *value);
/* Index of the element matching two members, or -1. */
ssize_t tre_find2(json_t *array, const char *n1, const char *v1, const char *n2, const char *v2);
/* A queued notification (an element of the document's "pending") past
 * MCIM_TRE_PENDING_LIFETIME at `now`, counted from its "created" (one without it, or queued
 * that long ahead of `now` by a clock set back since, counts as expired). */
bool tre_pending_expired(json_t *item, int64_t now);
/* Drop the expired notifications from `pending`: how many. */
size_t tre_pending_prune(json_t *pending, int64_t now);
/* Remove element `i` of `array`, wiping its strings first (a discarded MCIM leaves no copy
 * in the document; the freed memory holds zeros). */
void tre_array_wipe_remove(json_t *array, size_t i);
/* The credential object for a name: the PCID ones or a slot (index in *slot_index, else -1). */
json_t *tre_cred_obj(json_t *st, const char *cred, ssize_t *slot_index);
mcim_cause_t tre_cred_read(json_t *obj, struct tre_cred *c);
/* Per-slot keys (docs/tre.md, section 8): seal the "k" (if any) and "opc" of an MCIM entry
 * (staged or slot, with its "txn") under a new key of its own, as "secrets" and "slot_key",
 * and wipe them; tre_cred_read opens them. No-op for an entry sealed already. */
mcim_cause_t tre_secrets_seal(json_t *obj);
/* Write the SQN state into the credential object (hex of mcim_sqn_usim_encode). */
mcim_cause_t tre_cred_set_sqn(json_t *obj, const struct mcim_sqn_usim *sqn);
void tre_cred_wipe(struct tre_cred *c);
/* A fresh credential object {id_name: id, k, opc, amf, sqn} from validated strings; `k` may
 * be NULL for a slot whose K is in the TPM (the caller adds "k_tpm"), `k` and `opc` for a slot
 * whose secrets are sealed under its own key (the caller adds them, tre_secrets_seal). */
mcim_cause_t tre_cred_new(const char *id_name, const char *id, const char *k, const char *opc,
                          const char *amf, json_t **out);
/* Secret hex of exactly `bytes` bytes (lower-cased copy into out, 2*bytes+1). */
mcim_cause_t tre_hex_field(json_t *obj, const char *name, size_t bytes, char *out);
bool tre_imsi_valid(const char *s);
/* The software TRE's private keys (PKCS#8 PEM in the document) are parsed once per process
 * (OpenSSL 3's PEM decoder costs more than the signatures they make): kept as JOSE keys by the
 * SHA-256 of their PEM while a TRE handle is open (hold: soft_new; release: tre_soft_free;
 * the last release frees them all). A TRE's keys never change, so a kept key is always the
 * document's. */
void tre_key_cache_hold(void);
void tre_key_cache_release(void);
/* The TRE key `which` as a JOSE key (t->keys->jose) / its public key (t->keys->public_key),
 * whatever the backend. */
mcim_cause_t tre_key_jose(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                          mcim_jose_key_t **out);
mcim_cause_t tre_key_public(struct tre_soft *t, json_t *st, enum mcim_tre_cert which,
                            EVP_PKEY **out);
/* A failure of the TRE's keys themselves (the TPM gone or refusing), not of what they were
 * used on: operations on peer input pass these on instead of PACKAGE_INVALID. */
bool tre_key_failure(mcim_cause_t rc);
/* PKCS#8 PEM of a private key, as a JSON string (the PEM buffer is wiped). */
mcim_cause_t tre_key_pem_json(EVP_PKEY *key, json_t **out);
/* The replay cache interface over the "seen" array of a working copy. */
struct tre_replay {
  json_t *seen;
};
mcim_replay_cache_t tre_replay_cache(struct tre_replay *r);
/* The public view (status op). */
mcim_cause_t tre_status_build(json_t *st, json_t **out);
/* Sign a device statement (no typ check) with the attestation key. */
mcim_cause_t tre_sign_statement(struct tre_soft *t, json_t *st, const char *typ, const char *aud,
                                const char *txn, json_t *extra, int64_t lifetime, char **jws);

/* ---- tre_txn.c: per-procedure key-agreement keys ---- */
/* The public JWK (an object) of the KA key of `txn`, made now if there is none (*created:
 * the caller commits before the key leaves the TRE). */
mcim_cause_t tre_txn_key_jwk(struct tre_soft *t, json_t *st, const char *txn, json_t **jwk,
                             bool *created);
/* The KA key of `txn` as a JOSE key (until tre_end()). MCIM_NOT_FOUND if the TRE made none. */
mcim_cause_t tre_txn_key_jose(struct tre_soft *t, json_t *st, const char *txn,
                              mcim_jose_key_t **out);
/* Remove the KA key of `txn` (wiped), and destroy its slot key if no K went under it;
 * whether there was one (the caller then commits with tre_commit_shred). */
bool tre_txn_key_drop(struct tre_soft *t, json_t *st, const char *txn);
/* Remove the expired keys and the oldest beyond MCIM_TRE_MAX_TXN_KEYS; how many. */
size_t tre_txn_keys_prune(struct tre_soft *t, json_t *st, int64_t now);
/* The slot key offered for `txn` (made now, once, by a backend that offers them, after its KA
 * key: tre_txn_key_jwk): *offer is the quote's "tpm_slot" {"public", "attest", "signature"},
 * or NULL (none offered). *created: the caller commits before the offer leaves the TRE. */
mcim_cause_t tre_txn_slot_offer(struct tre_soft *t, json_t *st, const char *txn, json_t **offer,
                                bool *created);
/* The slot key of `txn` as its entry keeps it (borrowed), NULL if none; taken: K went under
 * it, so it is the staged MCIM's from now on and the txn's drop leaves it alone. */
json_t *tre_txn_slot(json_t *st, const char *txn);
void tre_txn_slot_taken(json_t *st, const char *txn);

/* ---- operations, one file per concern ---- */
/* tre_aka.c */
mcim_cause_t tre_op_aka(void *ctx, const char *cred, const uint8_t rand[16],
                        const uint8_t autn[16], uint8_t res[8], uint8_t auts[14]);
mcim_cause_t tre_op_pcid_install(void *ctx, const char *jwe, size_t len);
/* The PCID credential {"pcid","k" | "k_tpm","opc","amf","expires"} (plaintext of the JWE)
 * validated into a new credential object with a fresh SQN state; MCIM_CREDENTIAL_EXPIRED if
 * already expired. A TPM TRE (keys->k_import_pcid) takes "k_tpm" only, imported under the
 * PCID's slot key (the object keeps the TPM's wrapping, never K), and refuses "k", K in clear
 * (MCIM_FORBIDDEN); a renewal's (`renewal_txn`) under the slot key its request offered; the software
 * TRE refuses "k_tpm" (MCIM_UNSUPPORTED); both together: MCIM_INVALID_ARGUMENT. */
mcim_cause_t tre_pcid_parse(struct tre_soft *t, json_t *st, const uint8_t *plain, size_t len,
                            const char *renewal_txn, json_t **out);
/* Install `fresh` (from tre_pcid_parse) into the working copy: the current credential becomes
 * "pcid_prev" (an older one is wiped, its slot key evicted first); the same credential again
 * only updates amf/expires. */
mcim_cause_t tre_pcid_put(struct tre_soft *t, json_t *st, json_t *fresh);
/* Drop "pcid_prev" from the working copy: its K's slot key evicted first, unless the current
 * credential or TRE_PCID_SLOT still uses it. A key that cannot be evicted: its cause, and
 * "pcid_prev" stays. */
mcim_cause_t tre_pcid_prev_drop(struct tre_soft *t, json_t *st);
/* The PCID's slot key (the TPM TRE): {"tpm_handle", "tpm_parent", "tpm_auth", "public"} */
#define TRE_PCID_SLOT "pcid_slot"
/* The slot key a PCID renewal's request offered, until its package imports under it:
 * {"txn", "tpm_handle", "tpm_parent", "tpm_auth", "public", "attest", "signature"} */
#define TRE_PCID_OFFER "pcid_offer"
/* tre_pcid.c */
mcim_cause_t tre_op_pcid_renew(void *ctx, const char *package, size_t len,
                               const char *issuer_cert_pem);
/* tre_slots.c */
mcim_cause_t tre_op_stage(void *ctx, const char *txn, const char *package, size_t len,
                          const char *issuer_cert_pem);
mcim_cause_t tre_op_unstage(void *ctx, const char *txn);
mcim_cause_t tre_op_discard(void *ctx, const char *sho, const char *txn);
mcim_cause_t tre_op_pristine(void *ctx, const char *txn, json_t **removed);
mcim_cause_t tre_op_install(void *ctx, const char *txn, char slot[64]);
mcim_cause_t tre_op_install_inactive(void *ctx, const char *txn, char slot[64]);
mcim_cause_t tre_op_activate(void *ctx, const char *sho);
/* tre_sign.c */
mcim_cause_t tre_op_sign(void *ctx, const char *typ, const char *aud, const char *txn,
                         json_t *extra, int64_t lifetime, char **jws);
mcim_cause_t tre_op_quote(void *ctx, const char *aud, const char *txn, const char *nonce,
                          int64_t lifetime, char **jws);
mcim_cause_t tre_op_pending(void *ctx, int64_t lifetime, json_t **out);
mcim_cause_t tre_op_pending_done(void *ctx, const char *to, const char *txn);
mcim_cause_t tre_op_verify_owner(void *ctx, const char *jws, size_t len, const char *typ,
                                 mcim_statement_t **out);
mcim_cause_t tre_op_owner_handover(void *ctx, const char *jws, size_t len);
/* tre_soft.c: a public JWK object of `owner_jwk` (MCIM_KEY_INVALID for a private key) */
mcim_cause_t tre_owner_jwk_object(const char *owner_jwk, json_t **out);
/* The measurement log digest chain: lower-case hex (65 bytes) of d(n). */
mcim_cause_t tre_log_digest(json_t *log, char out[65]);

#endif
