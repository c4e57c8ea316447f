/* The TPM 2.0 part of the TRE (issue 11; docs/tre-tpm.md): the foundation the TPM TRE
 * stands on. One file per concern:
 *
 *   tpm_conn.c     an ESAPI context on a TCTI ("swtpm:host=127.0.0.1,port=N", "device:...")
 *                  and the mapping of TSS2 return codes to causes, with a human detail
 *   tpm_esys.c     that ESAPI: ours, the part of it the TRE uses, on tpm2-tss's SAPI and
 *                  our OpenSSL (TRs, authorisations, policy sessions' HMACs, names);
 *                  tpm_esys_cmd.c its TPM commands
 *   tpm_primary.c  the storage primary key, from its template; the TRE's persistent one
 *   tpm_dup.c      the host side (the SHO, OpenSSL only): a TPM2_Import duplication blob of
 *                  a raw AES-128 key, wrapped to the primary's public key
 *   tpm_aes.c      import, load and use of that key inside the TPM: AES-128-ECB with
 *                  TPM2_EncryptDecrypt2, offered to Milenage as its E_K
 *                  (struct mcim_milenage_cipher_ops)
 *   tpm_keys.c     the TRE's own keys, made inside the TPM and never out of it: an ES256
 *                  signing key (TPM2_Sign) and an ECDH key (TPM2_ECDH_ZGen)
 *   tpm_lib.c      tpm2-tss loaded with dlopen() at first use (tpm_lib.h: why)
 *   tpm_swtpm.c    a throw-away swtpm (the lab's and the tests' stand-in for the chip)
 *
 * Every constructor has its _free(). Failures are causes: MCIM_TPM_UNREACHABLE (the TCTI
 * could not talk to the TPM), MCIM_TPM_ERROR (the TPM or ESAPI refused; the detail names the
 * command and the decoded response code), MCIM_NO_MEMORY, MCIM_CRYPTO_ERROR (OpenSSL, host
 * side), MCIM_UNSUPPORTED. The detail never holds key material. */
#ifndef MCIM_TRE_TPM_H
#define MCIM_TRE_TPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <sys/types.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tpm2_types.h>

#include "mcim/cause.h"
#include "mcim/milenage.h"

/* ---- tpm_lib.c ---- */
/* Load tpm2-tss (dlopen, once per process; tpm_lib.h says why). Every function below that
 * needs it loads it itself; calling this first only gets the failure early, with a detail
 * (may be NULL) naming the missing library. MCIM_UNSUPPORTED if it is not installed. */
mcim_cause_t mcim_tss2_load(char *detail, size_t detail_len);

/* ---- tpm_conn.c ---- */
/* One connection: an ESAPI context, not thread-safe (one per thread, or a lock around it);
 * the keys loaded through it live as long as it does. */
typedef struct mcim_tpm mcim_tpm_t;

/* Open an ESAPI context on `tcti` (a tctildr configuration string, e.g.
 * "swtpm:host=127.0.0.1,port=2321"). On failure `detail` (may be NULL) says why. */
mcim_cause_t mcim_tpm_open(const char *tcti, mcim_tpm_t **out, char *detail, size_t detail_len);
/* Flush the primary (if made) and close. NULL is a no-op. */
void mcim_tpm_free(mcim_tpm_t *t);
/* The last failure on this connection, human ("TPM2_Import: tpm:parameter(1):...");
 * "" when none. */
const char *mcim_tpm_detail(const mcim_tpm_t *t);
/* For the files of src/tre/tpm/ and the tests: the ESAPI context. */
ESYS_CONTEXT *mcim_tpm_esys(mcim_tpm_t *t);
/* Record a TSS2 failure of `what` in the connection's detail and map it to a cause. */
mcim_cause_t mcim_tpm_fail(mcim_tpm_t *t, const char *what, TSS2_RC rc);
/* Record a failure of our own (no TSS2 code) and return `cause`. */
mcim_cause_t mcim_tpm_failf(mcim_tpm_t *t, mcim_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The cause for a TSS2 return code (TCTI transport failures: MCIM_TPM_UNREACHABLE). */
mcim_cause_t mcim_tpm_cause(TSS2_RC rc);

/* ---- tpm_primary.c ---- */
/* The storage primary key under the owner hierarchy (ECC NIST P-256, AES-128-CFB, restricted
 * decrypt, fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA, empty unique: the
 * storage key template of the TCG provisioning guidance). Created on first use and kept
 * while the connection is open; the same template under the same owner seed gives the same
 * key after any restart (TPM2_Clear changes the seed and so the key, on purpose). `handle`
 * and `pub` (both may be NULL) stay valid until mcim_tpm_free(). */
mcim_cause_t mcim_tpm_primary(mcim_tpm_t *t, ESYS_TR *handle, const TPM2B_PUBLIC **pub);
/* The persistent storage primary of the TPM TRE (docs/tre-tpm.md, "Connections and
 * objects"): the key of mcim_tpm_primary's template, made persistent once, at manufacture,
 * by TPM2_EvictControl in the owner hierarchy at this handle (the owner range's storage
 * keys, 0x81000000-0x8100FFFF; not 0x81000001/2, which the TCG provisioning guidance gives
 * its RSA and ECC SRKs with another unique field). */
#define MCIM_TPM_PRIMARY_HANDLE UINT32_C(0x81004d43)
/* Manufacture: make the storage primary persistent at MCIM_TPM_PRIMARY_HANDLE (or find it
 * there already, made for another TRE of this TPM: the same template under the same seed is
 * the same key) and use it on this connection; `name` is its name, to be recorded. A handle
 * held by any other key is refused (MCIM_TPM_ERROR), never evicted. */
mcim_cause_t mcim_tpm_primary_persist(mcim_tpm_t *t, TPM2B_NAME *name);
/* Use the persistent storage primary on this connection, after checking that the key at
 * MCIM_TPM_PRIMARY_HANDLE has exactly the `recorded` name (so exactly the recorded public
 * area): none there, or another key, is MCIM_TPM_ERROR with the detail saying which. Cheap:
 * one TPM2_ReadPublic per connection, no key generation. */
mcim_cause_t mcim_tpm_primary_use(mcim_tpm_t *t, const TPM2B_NAME *recorded);
/* Host side (the SHO): the public area of a storage primary made from this template whose
 * public point is (x, y), e.g. the key an M2MES certified for a device's TPM: what
 * mcim_tpm_dup_aes128() wraps to. No TPM involved; the point is checked where it is used. */
void mcim_tpm_primary_public_of(const uint8_t x[32], const uint8_t y[32], TPM2B_PUBLIC *out);
/* The TPM2B_NAME of a public area (nameAlg || H(TPMT_PUBLIC)), computed on the host. */
mcim_cause_t mcim_tpm_public_name(const TPM2B_PUBLIC *pub, TPM2B_NAME *name);
/* Flush every transient object of the TPM but this connection's primary: objects a process
 * left loaded when it died (swtpm has no resource manager; it has 3 transient slots). Only
 * for a TPM this program is the one user of (the TRE calls it under its lock, when a
 * TPM2_Load or TPM2_CreatePrimary finds no free slot). Through a resource manager
 * (/dev/tpmrm0) a connection sees its own objects only, and there is nothing to flush. */
mcim_cause_t mcim_tpm_flush_strays(mcim_tpm_t *t);
struct mcim_tpm_blob;
/* TPM2_Load of a wrapped object under the storage primary, into *handle (ESYS_TR_NONE on
 * failure, with `what` in the detail); when the TPM has no free slot, the strays are flushed
 * and the load tried once more. */
mcim_cause_t mcim_tpm_load(mcim_tpm_t *t, const struct mcim_tpm_blob *blob, const char *what,
                           ESYS_TR *handle);

/* ---- tpm_dup.c: host side, OpenSSL only (no TPM needed) ---- */
/* The attributes of an imported AES key (docs/tre-tpm.md, "The AES key"): encrypt only
 * (sign), userWithAuth with an empty authValue, noDA. Not fixedTPM/fixedParent: TPM2_Import
 * refuses both (TPM 2.0 Part 3, TPM2_Import: TPM_RC_ATTRIBUTES). Not sensitiveDataOrigin: the
 * key came from outside. With an empty authPolicy TPM2_Duplicate (which needs a policy
 * session) can never be authorised, so the key cannot leave the TPM. */
#define MCIM_TPM_AES_ATTRS (TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA)

/* A duplication blob for TPM2_Import: everything the device receives. No secret in clear. */
struct mcim_tpm_dup {
  TPM2B_PUBLIC pub;            /* the key's public area (symcipher, AES-128, ECB) */
  TPM2B_PRIVATE dup;           /* outer HMAC || AES-CFB(TPM2B_SENSITIVE) */
  TPM2B_ENCRYPTED_SECRET seed; /* the outer wrapper's seed, ECDH (KDFe) to the parent */
};

/* Wrap the raw 16-byte `key` for the storage key `parent` (its public area: ECC P-256,
 * nameAlg SHA-256, AES-128-CFB; MCIM_UNSUPPORTED otherwise) as an AES-128-ECB symcipher
 * object with `attrs` (MCIM_TPM_AES_ATTRS), no inner wrapper, the outer wrapper of TPM 2.0
 * Part 1 "Duplication": seed by ECDH with a fresh ephemeral key and KDFe("DUPLICATE"),
 * AES-128-CFB under KDFa("STORAGE", name), HMAC-SHA-256 under KDFa("INTEGRITY"). Every
 * intermediate secret is wiped; `out` holds no secret in clear. */
mcim_cause_t mcim_tpm_dup_aes128(const TPM2B_PUBLIC *parent, const uint8_t key[16],
                                 TPMA_OBJECT attrs, struct mcim_tpm_dup *out);
/* A package's "k_tpm" {"public", "duplicate", "seed"} as the TRE reads it (tre_tpm_slots.c; peer
 * input): exactly those three base64url strings, an AES-128-ECB key of MCIM_TPM_AES_ATTRS, a
 * seed; MCIM_KEY_INVALID otherwise (MCIM_UNSUPPORTED without tpm2-tss). Pure: no TPM. */
struct json_t;
mcim_cause_t mcim_tpm_dup_decode(const struct json_t *j, struct mcim_tpm_dup *out);
/* That object's members (made by tre_tpm_wrap.c, read by mcim_tpm_dup_decode). */
#define MCIM_TPM_DUP_PUBLIC "public"
#define MCIM_TPM_DUP_DUPLICATE "duplicate"
#define MCIM_TPM_DUP_SEED "seed"

/* ---- tpm_aes.c ---- */
/* What the device keeps: the key's public area and its private part as the TPM wrapped it
 * under the primary (TPM2_Import's outPrivate). Opens only inside this TPM, under this
 * primary. */
struct mcim_tpm_blob {
  TPM2B_PUBLIC pub;
  TPM2B_PRIVATE priv;
};

/* TPM2_Import of `dup` under the primary: the TPM checks the outer HMAC (MCIM_TPM_ERROR,
 * "integrity", for an altered blob or one wrapped to another key) and rewraps the key under
 * the primary. */
mcim_cause_t mcim_tpm_aes_import(mcim_tpm_t *t, const struct mcim_tpm_dup *dup,
                                 struct mcim_tpm_blob *out);

/* An AES-128 key loaded in the TPM (a transient object). */
typedef struct mcim_tpm_aes mcim_tpm_aes_t;
/* TPM2_Load of `blob` under the primary. The connection must outlive the key. */
mcim_cause_t mcim_tpm_aes_load(mcim_tpm_t *t, const struct mcim_tpm_blob *blob,
                               mcim_tpm_aes_t **out);
/* Flush the object out of the TPM and free. NULL is a no-op. */
void mcim_tpm_aes_free(mcim_tpm_aes_t *k);
/* AES-128-ECB encryption of `len` bytes (a multiple of 16, at most 1024) in the TPM
 * (TPM2_EncryptDecrypt2). Our copies of the blocks are wiped; ESAPI's command buffer keeps
 * the last ones until the next command (docs/tre-tpm.md, "What the device keeps"). */
mcim_cause_t mcim_tpm_aes_encrypt(mcim_tpm_aes_t *k, const uint8_t *in, uint8_t *out, size_t len);
/* The key as Milenage's E_K (mcim_milenage_new_cipher). Valid while `k` is. */
mcim_milenage_cipher_t mcim_tpm_aes_cipher(mcim_tpm_aes_t *k);
/* The ESAPI handle of the loaded object (tests). */
ESYS_TR mcim_tpm_aes_handle(const mcim_tpm_aes_t *k);

/* ---- tpm_keys.c: the TRE's own keys, created inside the TPM ---- */
/* Attributes of every TRE key: fixedTPM and fixedParent (TPM2_Duplicate refuses the key,
 * whatever the authorisation: TPM_RC_ATTRIBUTES), sensitiveDataOrigin (the TPM made the
 * private part; nobody ever knew it), userWithAuth with an empty authValue, noDA; not
 * restricted (it signs digests of JWS signing inputs, which the TPM did not hash). Plus sign
 * (MCIM_TPM_KEY_SIGN) or decrypt (MCIM_TPM_KEY_ECDH), never both. */
#define MCIM_TPM_KEY_ATTRS                                                                         \
  (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |            \
   TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA)
enum mcim_tpm_key_kind {
  MCIM_TPM_KEY_SIGN = 1, /* ECC P-256, scheme ECDSA-SHA256: TPM2_Sign (ES256) */
  MCIM_TPM_KEY_ECDH = 2, /* ECC P-256, decrypt, scheme ECDH: TPM2_ECDH_ZGen (ECDH-ES) */
  /* The attestation key proper (tpm_enrol.c): ECC P-256, ECDSA-SHA256, sign and RESTRICTED,
   * so the TPM signs only structures it made itself (TPM2_Quote, TPM2_Certify), never a
   * digest it is given: a forged TPMS_ATTEST cannot be signed with it. */
  MCIM_TPM_KEY_AK = 3,
};
/* TPM2_Create of a new key of `kind` under the storage primary. `out` is what is kept: the
 * public area and the private part as the TPM wrapped it (loadable only in this TPM, under
 * this primary). */
mcim_cause_t mcim_tpm_key_create(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                                 struct mcim_tpm_blob *out);
typedef struct mcim_tpm_key mcim_tpm_key_t;
/* TPM2_Load of a key made by mcim_tpm_key_create (MCIM_KEY_INVALID, before the TPM is asked,
 * if its public area is not such a key of `kind`). A load that finds no free transient slot
 * flushes the strays (mcim_tpm_flush_strays) and tries once more. */
mcim_cause_t mcim_tpm_key_load(mcim_tpm_t *t, enum mcim_tpm_key_kind kind,
                               const struct mcim_tpm_blob *blob, mcim_tpm_key_t **out);
/* Flush the object and free. NULL is a no-op. */
void mcim_tpm_key_free(mcim_tpm_key_t *k);
ESYS_TR mcim_tpm_key_handle(const mcim_tpm_key_t *k);
/* TPM2_Sign of a SHA-256 digest, ECDSA: R || S, 32 bytes each (the JWS form). */
mcim_cause_t mcim_tpm_key_sign(mcim_tpm_key_t *k, const uint8_t digest[32], uint8_t sig[64]);
/* TPM2_ECDH_ZGen with the peer's point (x, y): Z, the x coordinate of d * P. A point off the
 * curve: MCIM_TPM_ERROR (TPM_RC_ECC_POINT). */
mcim_cause_t mcim_tpm_key_ecdh(mcim_tpm_key_t *k, const uint8_t x[32], const uint8_t y[32],
                               uint8_t z[32]);
/* Host side (no TPM): the public key of a blob of `kind` (MCIM_KEY_INVALID if it is not one,
 * or its point is not on P-256); the blob as two base64url strings (the marshalled
 * TPM2B_PUBLIC and TPM2B_PRIVATE, as the TRE's document keeps them: free() both) and back
 * (MCIM_KEY_INVALID for anything that is not exactly one of each). */
mcim_cause_t mcim_tpm_key_public(const struct mcim_tpm_blob *blob, enum mcim_tpm_key_kind kind,
                                 EVP_PKEY **out);
mcim_cause_t mcim_tpm_blob_encode(const struct mcim_tpm_blob *blob, char **pub, char **priv);
mcim_cause_t mcim_tpm_blob_decode(const char *pub, const char *priv, struct mcim_tpm_blob *out);

/* ---- tpm_swtpm.c ---- */
typedef struct mcim_swtpm mcim_swtpm_t;
enum {
  /* The swtpm dies with the thread that started it (PR_SET_PDEATHSIG): for tests, so that a
   * crashed test leaves no simulator behind. */
  MCIM_SWTPM_TIED = 1u << 0,
  /* The swtpm outlives the program that started it, in a session of its own (setsid): the
   * lab's, stopped by its pid (mcim lab down); release it with mcim_swtpm_detach(). */
  MCIM_SWTPM_DETACHED = 1u << 1,
};
/* Start a throw-away TPM 2.0 simulator: `swtpm socket --tpm2` on loopback, data port P and
 * control port P+1 (as the swtpm TCTI expects), both found free, state in `state_dir`
 * (must exist), --flags not-need-init,startup-clear. Ready once its control channel answers
 * a capability request, polled until `timeout_ms`; it is restarted on other ports if it
 * exits first (a port taken meanwhile). MCIM_NOT_FOUND if swtpm is not installed
 * (scripts/deps.sh installs it), MCIM_TIMEOUT, MCIM_IO_ERROR; `detail` says which. */
mcim_cause_t mcim_swtpm_start(const char *state_dir, unsigned flags, int timeout_ms,
                              mcim_swtpm_t **out, char *detail, size_t detail_len);
/* The TCTI configuration string for mcim_tpm_open(). */
const char *mcim_swtpm_tcti(const mcim_swtpm_t *s);
uint16_t mcim_swtpm_port(const mcim_swtpm_t *s);
pid_t mcim_swtpm_pid(const mcim_swtpm_t *s);
/* Stop it (SIGTERM, waited for up to 5 s, then SIGKILL) and free. The state directory is the
 * caller's. NULL is a no-op. */
void mcim_swtpm_free(mcim_swtpm_t *s);
/* Free the handle and leave the swtpm running (MCIM_SWTPM_DETACHED): its pid, to stop it by. */
pid_t mcim_swtpm_detach(mcim_swtpm_t *s);
/* The TPM's manufacture, before its first start on `state_dir` (empty): swtpm_setup makes the
 * endorsement keys (RSA 2048 at 0x81010001, ECC at 0x81010016, the TCG EK profile's default
 * templates) and their certificates in NV (0x01c00002, 0x01c00016), signed by swtpm_localca
 * with the TPM vendor's CA (`vendor_cert`, `vendor_key`; its serial counter in
 * `vendor_state`, which must exist). The lab's and the tests' stand-in for a TPM maker's
 * line (docs/tre-tpm.md, "Enrolment"). MCIM_NOT_FOUND without swtpm_setup or the CA. */
mcim_cause_t mcim_swtpm_manufacture(const char *state_dir, const char *vendor_cert,
                                    const char *vendor_key, const char *vendor_state, char *detail,
                                    size_t detail_len);

#endif
