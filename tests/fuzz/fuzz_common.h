/* What the libFuzzer targets of tests/fuzz/ share (docs/fuzzing.md): the fixed fixture of
 * tests/fuzz/data/ (keys, CAs and certificates made once by `fuzz-seedgen data`, so that the
 * committed seeds verify and open under them), a signer of arbitrary header and payload bytes
 * (to reach the claim checks behind a valid signature), a throw-away folder, and a
 * manufactured software TRE with the fixture's keys.
 *
 * Nothing here validates anything: every target feeds its bytes to the project's own
 * functions. */
#ifndef MCIM_FUZZ_COMMON_H
#define MCIM_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mcim/jose.h"
#include "mcim/pki.h"
#include "mcim/tre.h"

/* The fixture's names and values (also those of the seeds). */
#define FUZZ_DEVICE "dev1"
#define FUZZ_MODEL "model-x"
#define FUZZ_SHO "sho-a"
#define FUZZ_VNO "vno"
#define FUZZ_TXN "0123456789abcdef0123456789abcdef"
#define FUZZ_PCID "001010000000001"
#define FUZZ_IMSI "001020000000007"
#define FUZZ_PCID_K "465b5ce8b199b49faa5f0a2ee238a6bc"
#define FUZZ_PCID_OPC "cd63cb71954a9f4e48a5994e37a02baf"
#define FUZZ_MCIM_K "fec86ba6eb707ed08905757b1bb44b8f"
#define FUZZ_MCIM_OPC "1006020f0a478bf6b699f15c062e42b3"
/* Statements of the seeds are issued at FUZZ_IAT and expire at FUZZ_EXP (2100): they stay
 * valid for the checks that use the wall clock. FUZZ_NOW is the clock of the targets that
 * give one. */
#define FUZZ_IAT 1700000000
#define FUZZ_EXP 4102444800
#define FUZZ_NOW 1800000000
/* The statement types the fixture signs. */
#define FUZZ_TYP_PACKAGE "mcim-package+jwt"
#define FUZZ_TYP_ACCESS "mcim-access+jwt"
#define FUZZ_TYP_QUOTE "mcim-quote+jwt"
/* The PVA's nonce of the quote target. */
#define FUZZ_NONCE "6e6f6e63656e6f6e63656e6f6e63656e6f6e63656e6f6e63656e6f6e63656e6f"

struct mcim_http_server_cfg;
/* `body` POSTed to `path` (application/json) through the server's own dispatch (routing,
 * body limit, JSON parsing, then the route's handler), as a request off the wire would be. */
void fuzz_post_json(const struct mcim_http_server_cfg *cfg, const char *path,
                    const uint8_t *body, size_t len);

/* Logs off (a refusal logs a line: millions of them), once per process. */
void fuzz_quiet(void);
/* Abort with a message: the fixture is broken (not a finding). */
void fuzz_die(const char *what) __attribute__((noreturn));

/* A file of tests/fuzz/data/, NUL-terminated (free()); dies when missing. */
char *fuzz_data(const char *name, size_t *len);
/* The private key `name`.key of tests/fuzz/data/ (EVP_PKEY_free()). */
EVP_PKEY *fuzz_pkey(const char *name);
/* The same as a JOSE key (mcim_jose_key_free()), kid = name. */
mcim_jose_key_t *fuzz_jose_key(const char *name);
/* The certificate `name`.crt of tests/fuzz/data/ (X509_free()). */
X509 *fuzz_cert(const char *name);

/* A compact JWS of exactly these header and payload bytes (base64url-encoded as they are),
 * signed ES256 with `key`: lets a target hand the project's verifier any header or payload
 * behind a signature that verifies. NULL on failure; free(). */
char *fuzz_sign_raw(EVP_PKEY *key, const uint8_t *header, size_t hlen, const uint8_t *payload,
                    size_t plen);

/* A NUL-terminated copy of the input (free()). */
char *fuzz_strndup(const uint8_t *data, size_t len);
/* Split at the first `sep`: *b and *blen are what follows it (NULL, 0 without one), *alen
 * the length before it. */
void fuzz_split(const uint8_t *data, size_t len, uint8_t sep, size_t *alen, const uint8_t **b,
                size_t *blen);

/* A folder of its own on tmpfs (/dev/shm when there is one: the TRE writes with fdatasync),
 * removed at exit. */
char *fuzz_tmpdir(const char *tag);
/* Write a whole file (0600); dies on failure. */
void fuzz_write_file(const char *path, const uint8_t *data, size_t len);
/* A whole file, or NULL; free(). */
uint8_t *fuzz_read_file(const char *path, size_t *len);

/* Manufacture a software TRE for FUZZ_DEVICE in `dir` as the M2MES does (mcim_tre_soft_create,
 * mcim_tre_soft_set_certs, the first PCID credential through pcid_install), with the
 * fixture's fixed attestation and key-agreement keys put into its state before the
 * certificates are set (so that packages sealed by the seeds open in it). Returns the open
 * handle. */
mcim_tre_t *fuzz_tre_make(const char *dir);

/* The TRE's two slot files as they are now, to put back before every input, so that what
 * one input changed (a staged package, an SQN, the replay cache) does not carry over. */
struct fuzz_tre_files {
  uint8_t *buf[2];
  size_t len[2];
};
void fuzz_tre_save(const char *dir, struct fuzz_tre_files *f);
void fuzz_tre_restore(const char *dir, const struct fuzz_tre_files *f);

#endif
