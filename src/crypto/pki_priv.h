/* Shared by the lab PKI's files (pki.c: usage names, files, certificates read and verified;
 * pki_key.c: keys; pki_issue.c: CAs and issuing; pki_lab.c: the lab PKI folder). Not part
 * of the library's interface: include/mcim/pki.h is. */
#ifndef MCIM_CRYPTO_PKI_PRIV_H
#define MCIM_CRYPTO_PKI_PRIV_H

#include <openssl/bio.h>
#include <stdbool.h>
#include <sys/types.h>

#include "mcim/pki.h"

/* pki.c: `usage` is one of mcim_cert_usage_t's */
bool pki_usage_valid(mcim_cert_usage_t usage);
/* pki.c: the contents of a memory BIO written to `path` atomically, with `mode` */
mcim_cause_t pki_write_bio(const char *path, BIO *bio, mode_t mode);
/* pki.c: `path` opened for reading; MCIM_NOT_FOUND when it does not exist */
mcim_cause_t pki_open_for_read(const char *path, BIO **out);
/* pki.c: OpenSSL's pass phrase callback that never prompts (lab keys have none) */
int pki_no_passphrase(char *buf, int size, int rwflag, void *u);

#endif
