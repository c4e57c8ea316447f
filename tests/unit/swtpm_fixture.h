/* What the TPM TRE's unit tests share: a swtpm on a temporary folder of its own, and the
 * folder removed whole afterwards. Included after cmocka.h, with _GNU_SOURCE defined (nftw). */
#ifndef MCIM_TESTS_SWTPM_FIXTURE_H
#define MCIM_TESTS_SWTPM_FIXTURE_H

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "mcim/cause.h"
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

#endif
