/* Milenage (3GPP TS 35.206): the example algorithm set f1, f1*, f2, f3, f4, f5, f5*
 * for 3G/4G/5G AKA, built on AES-128 from OpenSSL 3 (no home-made AES), or on an injected
 * E_K whose key lives elsewhere (a TPM: struct mcim_milenage_cipher_ops below).
 *
 * A mcim_milenage_t is one subscriber's keyed context: it holds the AES key
 * schedule of K and the OPc. Build it once per subscriber (or re-key one
 * context per thread with mcim_milenage_set_opc() when switching subscriber)
 * and run as many computations as needed: the key schedule is not redone per
 * function. A context is not thread-safe; use one per thread.
 *
 * Nothing here logs or returns K. Outputs that are key material (CK, IK,
 * RES, AK) are the caller's to wipe (mcim_wipe) when no longer needed. */
#ifndef MCIM_MILENAGE_H
#define MCIM_MILENAGE_H

#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

enum {
  MCIM_MILENAGE_K_LEN = 16,
  MCIM_MILENAGE_OP_LEN = 16, /* OP and OPc */
  MCIM_MILENAGE_RAND_LEN = 16,
  MCIM_MILENAGE_SQN_LEN = 6,
  MCIM_MILENAGE_AMF_LEN = 2,
  MCIM_MILENAGE_MAC_LEN = 8, /* MAC-A (f1) and MAC-S (f1*) */
  MCIM_MILENAGE_RES_LEN = 8, /* f2: 64-bit RES, as Milenage defines it */
  MCIM_MILENAGE_CK_LEN = 16,
  MCIM_MILENAGE_IK_LEN = 16,
  MCIM_MILENAGE_AK_LEN = 6, /* f5 and f5* */
};

typedef struct mcim_milenage mcim_milenage_t;

/* How the context reaches OpenSSL's AES-128 (the AES itself is OpenSSL's in
 * every case). EVP: EVP_EncryptInit_ex2/EVP_EncryptUpdate. PROVIDER: the same
 * provider implementation EVP fetches, called through OpenSSL's public provider
 * dispatch API, because on OpenSSL 3.0 an EVP re-key costs ~130 ns of
 * bookkeeping around a ~20 ns key expansion (matters when every vector is for
 * a different subscriber). AUTO: PROVIDER when available, else EVP. */
typedef enum mcim_milenage_aes {
  MCIM_MILENAGE_AES_AUTO = 0,
  MCIM_MILENAGE_AES_EVP,
  MCIM_MILENAGE_AES_PROVIDER,
  /* E_K is an injected cipher (mcim_milenage_new_cipher): K is not in this process. */
  MCIM_MILENAGE_AES_EXTERNAL,
} mcim_milenage_aes_t;

/* E_K as an interface. Milenage needs one thing from K: AES-128 encryption of 16-byte
 * blocks. Every context calls E_K through this table: one built with mcim_milenage_new() or
 * _new_with() uses OpenSSL's AES keyed with K (set_opc/set_op give K); one built with
 * mcim_milenage_new_cipher() uses the caller's cipher, holding a key the context never sees
 * (the TPM TRE: src/tre/tpm/tpm_aes.c, K inside the TPM). The same f1..f5 code runs on both. */
struct mcim_milenage_cipher_ops {
  /* ECB-encrypt `len` bytes under K: a multiple of 16, at most MCIM_MILENAGE_CIPHER_MAX.
   * A cause, never a partial output, on failure. */
  mcim_cause_t (*encrypt)(void *ctx, const uint8_t *in, uint8_t *out, size_t len);
};
typedef struct mcim_milenage_cipher {
  const struct mcim_milenage_cipher_ops *ops;
  void *ctx;
} mcim_milenage_cipher_t;
/* The most one E_K call asks for: OUT1..OUT5 together (TEMP is one block on its own). */
#define MCIM_MILENAGE_CIPHER_MAX 80

/* Every output of one Milenage run. */
struct mcim_milenage_out {
  uint8_t mac_a[MCIM_MILENAGE_MAC_LEN];  /* f1  */
  uint8_t mac_s[MCIM_MILENAGE_MAC_LEN];  /* f1* */
  uint8_t res[MCIM_MILENAGE_RES_LEN];    /* f2  */
  uint8_t ck[MCIM_MILENAGE_CK_LEN];      /* f3  */
  uint8_t ik[MCIM_MILENAGE_IK_LEN];      /* f4  */
  uint8_t ak[MCIM_MILENAGE_AK_LEN];      /* f5  */
  uint8_t ak_star[MCIM_MILENAGE_AK_LEN]; /* f5* */
};

/* Which functions mcim_milenage_compute() evaluates; each costs one AES block
 * (OUT1..OUT5 of TS 35.206 section 4.1), on top of the one for TEMP. */
enum {
  MCIM_MILENAGE_F1 = 1u << 0,     /* OUT1: mac_a and mac_s (needs sqn, amf) */
  MCIM_MILENAGE_F2F5 = 1u << 1,   /* OUT2: res and ak */
  MCIM_MILENAGE_F3 = 1u << 2,     /* OUT3: ck */
  MCIM_MILENAGE_F4 = 1u << 3,     /* OUT4: ik */
  MCIM_MILENAGE_F5STAR = 1u << 4, /* OUT5: ak_star */
  MCIM_MILENAGE_ALL = 0x1fu,
};

/* A context with no key yet (AES access: AUTO). MCIM_NO_MEMORY / MCIM_CRYPTO_ERROR on failure. */
mcim_cause_t mcim_milenage_new(mcim_milenage_t **out);
/* Same with a chosen AES access; MCIM_UNSUPPORTED if PROVIDER is asked for and
 * the provider does not expose the functions. */
mcim_cause_t mcim_milenage_new_with(mcim_milenage_aes_t aes, mcim_milenage_t **out);
/* A context whose E_K is `cipher` (borrowed: it must outlive the context, which never frees
 * it). It has no K of its own: key it per subscriber with mcim_milenage_use_opc();
 * set_opc/set_op answer MCIM_UNSUPPORTED. MCIM_INVALID_ARGUMENT without an encrypt function. */
mcim_cause_t mcim_milenage_new_cipher(mcim_milenage_cipher_t cipher, mcim_milenage_t **out);
/* The AES access in use (EVP, PROVIDER or EXTERNAL) and its name ("evp", "provider",
 * "external"). */
mcim_milenage_aes_t mcim_milenage_aes(const mcim_milenage_t *m);
const char *mcim_milenage_aes_name(mcim_milenage_aes_t aes);
/* Wipes the key schedule and OPc, then frees. NULL is a no-op. */
void mcim_milenage_free(mcim_milenage_t *m);

/* Key the context for one subscriber: K and OPc (the form an AuC should store). */
mcim_cause_t mcim_milenage_set_opc(mcim_milenage_t *m, const uint8_t k[MCIM_MILENAGE_K_LEN],
                                   const uint8_t opc[MCIM_MILENAGE_OP_LEN]);
/* Key a context of mcim_milenage_new_cipher() for one subscriber: K is the cipher's, only
 * OPc is given. MCIM_UNSUPPORTED on a context that holds K itself (use set_opc). */
mcim_cause_t mcim_milenage_use_opc(mcim_milenage_t *m, const uint8_t opc[MCIM_MILENAGE_OP_LEN]);
/* Same from OP: derives OPc = OP xor E_K(OP) (TS 35.206 section 4.1). */
mcim_cause_t mcim_milenage_set_op(mcim_milenage_t *m, const uint8_t k[MCIM_MILENAGE_K_LEN],
                                  const uint8_t op[MCIM_MILENAGE_OP_LEN]);
/* Forget the subscriber (wipes key schedule and OPc; an injected cipher stays); the context
 * can be keyed again. */
void mcim_milenage_clear(mcim_milenage_t *m);
/* The OPc the context uses (to provision a USIM or store it instead of OP). */
mcim_cause_t mcim_milenage_get_opc(const mcim_milenage_t *m, uint8_t opc[MCIM_MILENAGE_OP_LEN]);

/* One-shot OPc derivation without a context. */
mcim_cause_t mcim_milenage_opc(const uint8_t k[MCIM_MILENAGE_K_LEN],
                               const uint8_t op[MCIM_MILENAGE_OP_LEN],
                               uint8_t opc[MCIM_MILENAGE_OP_LEN]);

/* Evaluate the functions selected in `which` (MCIM_MILENAGE_* bits) for RAND;
 * fields of `out` not selected are left untouched. `sqn` and `amf` are only
 * read for MCIM_MILENAGE_F1 and may be NULL otherwise. All selected AES blocks
 * go to OpenSSL in one call (they are independent once TEMP is known). */
mcim_cause_t mcim_milenage_compute(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                   const uint8_t sqn[MCIM_MILENAGE_SQN_LEN],
                                   const uint8_t amf[MCIM_MILENAGE_AMF_LEN], unsigned which,
                                   struct mcim_milenage_out *out);

/* The functions one by one (each a thin wrapper over mcim_milenage_compute).
 * Output pointers may be NULL when that output is not wanted. */
mcim_cause_t mcim_milenage_f1(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                              const uint8_t sqn[MCIM_MILENAGE_SQN_LEN],
                              const uint8_t amf[MCIM_MILENAGE_AMF_LEN],
                              uint8_t mac_a[MCIM_MILENAGE_MAC_LEN],
                              uint8_t mac_s[MCIM_MILENAGE_MAC_LEN]);
mcim_cause_t mcim_milenage_f2345(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                 uint8_t res[MCIM_MILENAGE_RES_LEN],
                                 uint8_t ck[MCIM_MILENAGE_CK_LEN],
                                 uint8_t ik[MCIM_MILENAGE_IK_LEN],
                                 uint8_t ak[MCIM_MILENAGE_AK_LEN]);
mcim_cause_t mcim_milenage_f5star(mcim_milenage_t *m, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                  uint8_t ak_star[MCIM_MILENAGE_AK_LEN]);

/* ---- Published test data (src/crypto/milenage_vectors.c) ----
 * Every test set of TS 35.208 (design conformance test data, 20 sets; sets 1
 * and 2 are identical in the specification) and the one TS 35.207
 * (implementors' test data, 6 sets) set that 35.208 does not repeat. Values
 * are lower-case hex strings, copied from the specifications' tables. */
struct mcim_milenage_vector {
  const char *name; /* e.g. "TS 35.208 test set 3 (= TS 35.207 test set 3)" */
  const char *k, *rand, *sqn, *amf, *op, *opc;
  const char *f1, *f1star, *f2, *f3, *f4, *f5, *f5star;
};

extern const struct mcim_milenage_vector mcim_milenage_vectors[];
extern const size_t mcim_milenage_vector_count;

/* Run one published set through this implementation with the given AES
 * access: OPc from OP, then every function with the published OPc. MCIM_OK if
 * all match; otherwise MCIM_INTERNAL and *bad_field names the first output
 * that differs ("opc", "f1", ..., "f5*"). */
mcim_cause_t mcim_milenage_vector_check(const struct mcim_milenage_vector *v,
                                        mcim_milenage_aes_t aes, const char **bad_field);

#endif
