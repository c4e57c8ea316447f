/* tpm2-tss loaded at run time (tpm_lib.h explains why). */
#define _GNU_SOURCE /* dl_iterate_phdr */
#define MCIM_TSS2_NO_MACROS
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_lib.h"

struct mcim_tss2_functions mcim_tss2;

/* The sonames of tpm2-tss 3 (Debian 12: libtss2-sys1, libtss2-tctildr0, libtss2-mu0,
 * libtss2-rc0; libtss2-dev depends on them all). */
static const char *const sonames[MCIM_TSS2_NLIBS] = {
    [MCIM_TSS2_TCTILDR] = "libtss2-tctildr.so.0",
    [MCIM_TSS2_RC] = "libtss2-rc.so.0",
    [MCIM_TSS2_SYS] = "libtss2-sys.so.1",
    [MCIM_TSS2_MU] = "libtss2-mu.so.0",
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static mcim_cause_t load_rc = MCIM_INTERNAL;
static char load_detail[256];

/* The dynamic linker's tables of tpm2-tss's libraries, let go once they are loaded.
 *
 * A shared library's first segment (read-only, at file offset 0) holds what only the dynamic
 * linker reads: its symbol, hash and version tables and its relocation records. They stay
 * mapped, resident, for nothing: relocations are done once, and after the load nothing looks
 * a symbol up in these libraries (loaded RTLD_LOCAL, they are not in the scope of the TCTI
 * loaded for each connection, which resolves its symbols in the program's libraries and its
 * own, libtss2-mu among them: that one keeps its tables). MADV_DONTNEED unmaps those pages:
 * clean pages of the file, never written (relocations write the writable segment), so
 * whatever reads them again (a dladdr(), a debugger) gets them back from the file unchanged.
 * Only a segment that is read-only, starts at offset 0 and overlaps no RELRO or writable
 * segment, of a library without text relocations, is let go (docs/tre-tpm.md, "Memory"). */
static const char *const dropped[] = {"libtss2-sys.so.1", "libtss2-tctildr.so.0",
                                      "libtss2-rc.so.0"};

static int drop_tables(struct dl_phdr_info *info, size_t size, void *data)
{
  const ElfW(Phdr) *first = NULL;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start, end;
  bool match = false;

  (void)size;
  (void)data;
  for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]) && info->dlpi_name; i++) {
    const char *base = strrchr(info->dlpi_name, '/');
    base = base ? base + 1 : info->dlpi_name;
    match = match || strncmp(base, dropped[i], strlen(dropped[i])) == 0;
  }
  if (!match)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && !first)
      first = ph;
    if (ph->p_type == PT_DYNAMIC) {
      for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
           d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_TEXTREL || (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_TEXTREL)))
          return 0;
    }
  }
  if (!first || first->p_offset != 0 || first->p_flags != PF_R)
    return 0;
  start = info->dlpi_addr + first->p_vaddr;
  end = (start + first->p_filesz) & ~(page - 1); /* whole pages of this segment only */
  if (start % page || end <= start)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t a = info->dlpi_addr + ph->p_vaddr;
    if ((ph->p_type == PT_GNU_RELRO || (ph->p_type == PT_LOAD && (ph->p_flags & PF_W))) &&
        a < end && a + ph->p_memsz > start)
      return 0;
  }
  (void)madvise((void *)start, end - start, MADV_DONTNEED); /* on a failure: more memory */
  return 0;
}

static void load(void)
{
  void *lib[MCIM_TSS2_NLIBS] = {0};
  struct mcim_tss2_functions f = {0};

  /* SAPI and the TCTIs print every failed command on stderr; we report each failure with
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
               "tpm2-tss not loadable: %s (Debian: libtss2-dev or libtss2-sys1, "
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
  dl_iterate_phdr(drop_tables, NULL); /* after the last dlsym() */
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
