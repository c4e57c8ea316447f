/* tpm2-tss loaded at run time (tpm_lib.h explains why). */
#define _GNU_SOURCE /* dl_iterate_phdr */
#define MCIM_TSS2_NO_MACROS
#include <dlfcn.h>
#include <link.h>
#include <openssl/rand.h>
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

/* ESAPI's random numbers from our OpenSSL.
 *
 * ESAPI (tpm2-tss 3.2.1, esys_crypto_ossl.c) draws the caller's nonce of a session, at
 * TPM2_StartAuthSession and again before every command that uses the session (the slot
 * keys' policy sessions: every attach and change), with RAND_bytes_ex() in an OpenSSL
 * library context it makes for that one call and frees after it: a DRBG chain instantiated
 * and seeded from the kernel for each nonce (OpenSSL's default CTR_DRBG, whose cipher fetch
 * builds every cipher of the default provider). tpm2-tss 3.2.1 has no crypto callbacks
 * (Esys_SetCryptoCallbacks is 4.0's), but RAND_bytes_ex() of OpenSSL 3 hands any library
 * context's request to a RAND_METHOD set for the process (the legacy hook, deprecated but
 * built in Debian's libcrypto3): its nonces then come from the agent's own DRBG (Hash_DRBG,
 * SHA-256, seeded from the kernel, src/crypto/subset.c), the private one of the default
 * context, which already makes every key of the agent. About 0.6 ms of CPU less per nonce
 * and 80-130 KiB less heap (docs/tre-tpm.md, "Memory"); the code of libcrypto that the first
 * nonce ran stays touched anyway: ESAPI's HMACs, in their own library contexts too, run the
 * same. In the static m2me the method is set on ESAPI's shared libcrypto and draws from the
 * agent's static OpenSSL. Where the agent uses that shared libcrypto itself (m2me-tpm, the
 * tests, MCIM_STATIC_AGENT=OFF) the method is set on its own OpenSSL: every request of every
 * library context then comes from that one DRBG, asked directly, not through RAND_bytes(). */
static __thread bool in_rand; /* never re-entered; if it were, fail rather than recurse */

static int rand_bytes(unsigned char *buf, int num)
{
  int ok = 1;
  if (in_rand || num < 0)
    return 0;
  in_rand = true;
  /* the DRBG itself, not RAND_bytes(): where ESAPI's libcrypto is the agent's own (m2me-tpm)
   * the method is set on this very OpenSSL, and RAND_bytes() would come back here */
  EVP_RAND_CTX *drbg = RAND_get0_private(NULL);
  for (int off = 0; ok == 1 && off < num; off += 4096) {
    size_t n = (size_t)(num - off < 4096 ? num - off : 4096);
    ok = drbg ? EVP_RAND_generate(drbg, buf + off, n, 0, 0, NULL, 0) : 0;
  }
  in_rand = false;
  return ok == 1;
}

/* ready when the DRBG is (RAND_status() would come back here too) */
static int rand_status(void)
{
  EVP_RAND_CTX *drbg = RAND_get0_private(NULL);
  return drbg && EVP_RAND_get_state(drbg) == EVP_RAND_STATE_READY;
}

static const RAND_METHOD rand_method = {
    .bytes = rand_bytes,
    .pseudorand = rand_bytes,
    .status = rand_status,
};

/* The name ESAPI's libcrypto has (tpm2-tss 3 on OpenSSL 3). */
#define MCIM_TSS2_LIBCRYPTO "libcrypto.so.3"

/* The dynamic linker's tables of ESAPI's libraries, let go once they are loaded.
 *
 * A shared library's first segment (read-only, at file offset 0) holds what only the dynamic
 * linker reads: its symbol, hash and version tables and its relocation records. Loading
 * libcrypto.so.3 reads all 788 KiB of them (17 000 relocations) and they stay mapped,
 * resident, for nothing: relocations are done once, and after the load nothing looks a symbol
 * up in ESAPI's libraries (loaded RTLD_LOCAL, they are not in the scope of the TCTI loaded
 * for each connection, which resolves its symbols in the program's libraries and its own,
 * libtss2-mu among them: that one keeps its tables). MADV_DONTNEED unmaps those pages: clean
 * pages of the file, never written (relocations write the writable segment), so whatever
 * reads them again (a dladdr(), a debugger) gets them back from the file unchanged. Only a
 * segment that is read-only, starts at offset 0 and overlaps no RELRO or writable segment,
 * of a library without text relocations, is let go. A TPM agent's peak: -0.7 MiB
 * (docs/tre-tpm.md, "Memory"). */
static const char *const dropped[] = {MCIM_TSS2_LIBCRYPTO, "libtss2-esys.so.0", "libtss2-sys.so.1",
                                      "libtss2-tctildr.so.0", "libtss2-rc.so.0"};

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

static void route_rand(void)
{
  int (*set_method)(const RAND_METHOD *);
  void *h = dlopen(MCIM_TSS2_LIBCRYPTO, RTLD_NOW | RTLD_NOLOAD);
  if (!h)
    return;
  *(void **)&set_method = dlsym(h, "RAND_set_rand_method");
  /* on a failure ESAPI keeps its own DRBGs: more memory, nothing weaker */
  if (set_method)
    (void)set_method(&rand_method);
  dlclose(h); /* still loaded: libtss2-esys needs it */
}

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
  route_rand();
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
