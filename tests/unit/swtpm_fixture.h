/* What the TPM TRE's unit tests share: a swtpm on a temporary folder of its own, and the
 * folder removed whole afterwards. Included after cmocka.h, with _GNU_SOURCE defined (nftw). */
#ifndef MCIM_TESTS_SWTPM_FIXTURE_H
#define MCIM_TESTS_SWTPM_FIXTURE_H

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "mcim/cause.h"
#include "mcim/jose.h"
#include "mcim/pki.h"
#include "tre/tpm/tpm.h"

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* `dir` and everything below it; nothing when `dir` is empty (a folder never made). */
static inline void rm_tree(const char *dir)
{
  if (dir[0])
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A swtpm on a new folder made from `tmpl`, a mkdtemp template ("/tmp/name-XXXXXX") rewritten
 * in place. MCIM_OK, or the cause printed and the folder removed. */
static inline mcim_cause_t swtpm_in_new_dir(char *tmpl, mcim_swtpm_t **sw)
{
  char detail[512];
  if (!mkdtemp(tmpl)) {
    print_error("mkdtemp %s failed\n", tmpl);
    tmpl[0] = '\0';
    return MCIM_IO_ERROR;
  }
  mcim_cause_t rc = mcim_swtpm_start(tmpl, MCIM_SWTPM_TIED, 20000, sw, detail, sizeof(detail));
  if (rc != MCIM_OK) {
    print_error("cannot start swtpm: %s: %s\n", mcim_cause_name(rc), detail);
    rm_tree(tmpl);
  }
  return rc;
}

/* The CAs and the owner key a TPM device's manufacture takes in these tests: the operators'
 * CA, the M2MES's CA (both with their PEM) and the owner's key (with its public JWK), made
 * once per group by tre_pki_make and freed by tre_pki_free. Unused where a test makes no
 * device (test_tre_tpm). */
#define FIXTURE_UNUSED __attribute__((unused))
static mcim_pki_ca_t *ops_ca FIXTURE_UNUSED, *m2mes_ca FIXTURE_UNUSED;
static char *ops_ca_pem FIXTURE_UNUSED, *m2mes_ca_pem FIXTURE_UNUSED, *owner_jwk FIXTURE_UNUSED;
static mcim_jose_key_t *owner FIXTURE_UNUSED;

static inline int tre_pki_make(void)
{
  return mcim_pki_ca_create("operators-ca", 30, &ops_ca) == MCIM_OK &&
                 mcim_pki_ca_create("m2mes-ca", 30, &m2mes_ca) == MCIM_OK &&
                 mcim_pki_cert_to_pem(ops_ca->cert, &ops_ca_pem) == MCIM_OK &&
                 mcim_pki_cert_to_pem(m2mes_ca->cert, &m2mes_ca_pem) == MCIM_OK &&
                 mcim_jose_key_generate(&owner) == MCIM_OK &&
                 mcim_jose_key_public_jwk(owner, &owner_jwk) == MCIM_OK
             ? 0
             : -1;
}

static inline void tre_pki_free(void)
{
  mcim_pki_ca_free(ops_ca);
  mcim_pki_ca_free(m2mes_ca);
  free(ops_ca_pem);
  free(m2mes_ca_pem);
  free(owner_jwk);
  mcim_jose_key_free(owner);
}

#endif
