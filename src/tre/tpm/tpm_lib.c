/* tpm2-tss loaded at run time (tpm_lib.h explains why). */
#define MCIM_TSS2_NO_MACROS
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"

struct mcim_tss2_functions mcim_tss2;

/* The sonames of tpm2-tss 3 (Debian 12: libtss2-esys-3.0.2-0, libtss2-tctildr0,
 * libtss2-mu0, libtss2-rc0; libtss2-dev depends on them all). */
static const char *const sonames[MCIM_TSS2_NLIBS] = {
    [MCIM_TSS2_TCTILDR] = "libtss2-tctildr.so.0",
    [MCIM_TSS2_RC] = "libtss2-rc.so.0",
    [MCIM_TSS2_ESYS] = "libtss2-esys.so.0",
    [MCIM_TSS2_MU] = "libtss2-mu.so.0",
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static mcim_cause_t load_rc = MCIM_INTERNAL;
static char load_detail[256];

static void load(void)
{
  void *lib[MCIM_TSS2_NLIBS] = {0};
  struct mcim_tss2_functions f = {0};

  /* ESAPI and the TCTIs print every failed command on stderr; we report each failure with
   * its decoded response code ourselves (mcim_tpm_detail), and some are expected (a flush of
   * an object that is gone). TSS2_LOG, when set, is left as it is. Set before any thread of
   * ours calls into tpm2-tss, which reads it once. */
  setenv("TSS2_LOG", "all+none", 0);
  for (int i = 0; i < MCIM_TSS2_NLIBS; i++) {
    /* never closed: the pointers stay valid for the life of the process */
    lib[i] = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib[i]) {
      const char *e = dlerror();
      snprintf(load_detail, sizeof(load_detail),
               "tpm2-tss not loadable: %s (Debian: libtss2-dev or libtss2-esys-3.0.2-0, "
               "libtss2-tctildr0; scripts/deps.sh installs them)",
               e ? e : sonames[i]);
      load_rc = MCIM_UNSUPPORTED;
      return;
    }
  }
#define MCIM_TSS2_RESOLVE(l, fn)                                                                   \
  *(void **)&f.fn = dlsym(lib[l], #fn);                                                            \
  if (!f.fn) {                                                                                     \
    snprintf(load_detail, sizeof(load_detail), "tpm2-tss: %s has no %s", sonames[l], #fn);        \
    load_rc = MCIM_UNSUPPORTED;                                                                    \
    return;                                                                                        \
  }
  MCIM_TSS2_FUNCTIONS(MCIM_TSS2_RESOLVE)
#undef MCIM_TSS2_RESOLVE
  mcim_tss2 = f;
  load_rc = MCIM_OK;
}

mcim_cause_t mcim_tss2_load(char *detail, size_t detail_len)
{
  pthread_once(&once, load);
  if (detail && detail_len)
    snprintf(detail, detail_len, "%s", load_rc == MCIM_OK ? "" : load_detail);
  return load_rc;
}
