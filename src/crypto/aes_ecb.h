/* Internal: AES-128-ECB from OpenSSL 3 with a key that changes often (one
 * Milenage subscriber after the other). Two ways into the same OpenSSL code:
 *
 *  EVP       EVP_EncryptInit_ex2 / EVP_EncryptUpdate. Portable and simple, but
 *            on OpenSSL 3.0 every re-key costs ~130 ns, most of it outside AES
 *            (EVP queries the key length through OSSL_PARAM string lookups).
 *  PROVIDER  the functions of the provider implementation that the EVP fetch
 *            of "AES-128-ECB" resolved to (same provider, same AES code, same
 *            key cleansing), called through OpenSSL's public provider dispatch
 *            API (OSSL_PROVIDER_query_operation). Re-key ~25 ns.
 *
 * AUTO picks PROVIDER when the provider exposes the needed functions, else EVP.
 * Neither is a home-made AES: both run OpenSSL's implementation. */
#ifndef MCIM_CRYPTO_AES_ECB_H
#define MCIM_CRYPTO_AES_ECB_H

#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"
#include "mcim/milenage.h"

typedef struct mcim_aes_ecb mcim_aes_ecb_t;

mcim_cause_t mcim_aes_ecb_new(mcim_milenage_aes_t backend, mcim_aes_ecb_t **out);
void mcim_aes_ecb_free(mcim_aes_ecb_t *a);
/* Expand a 128-bit key (replaces any previous one). */
mcim_cause_t mcim_aes_ecb_set_key(mcim_aes_ecb_t *a, const uint8_t key[16]);
/* Drop the key schedule (cleansed); set_key must come before the next encrypt. */
void mcim_aes_ecb_clear(mcim_aes_ecb_t *a);
/* ECB-encrypt `len` bytes, a multiple of 16, in one call. */
mcim_cause_t mcim_aes_ecb_encrypt(mcim_aes_ecb_t *a, const uint8_t *in, uint8_t *out, size_t len);
mcim_milenage_aes_t mcim_aes_ecb_backend(const mcim_aes_ecb_t *a);

#endif
