/* The fixture of the tests of slots in the TPM (test_tre_tpm_slots.c,
 * test_tre_tpm_slots_tre.c): a throw-away swtpm for the group (none installed is a failure),
 * a connection to it, the log the TRE writes, and the TPM's persistent handles of the slot
 * keys' range counted. Header-only (static functions), included after cmocka.h by each
 * program once. */
#ifndef MCIM_TEST_TRE_TPM_SLOTS_FIXTURE_H
#define MCIM_TEST_TRE_TPM_SLOTS_FIXTURE_H

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <tss2/tss2_mu.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/sqn.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/sho/sho.h"
#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_enrol.h"
#include "tre/tpm/tpm_lib.h" /* tpm2-tss's marshalling, loaded with dlopen() */
#include "tre/tpm/tpm_slot.h"
#include "swtpm_fixture.h"

#define DEVICE "dev1"
#define MODEL "model-x"
#define PCID1 "001010000000001"
#define IMSI_A "001020000000001"
#define IMSI_B "001030000000002"
#define TXN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TXN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

SWTPM_GROUP(false, "/tmp/mcim-tpmslots-XXXXXX")

static inline mcim_tpm_t *open_tpm(void) { return swtpm_open(sw); }

/* The connection's last failure names the TPM's response code `code` (e.g. "0x000009a2"). */
static inline void detail_has(mcim_tpm_t *t, const char *what)
{
  if (!strstr(mcim_tpm_detail(t), what))
    fail_msg("detail \"%s\" does not say \"%s\"", mcim_tpm_detail(t), what);
  print_message("  refused as expected: %s\n", mcim_tpm_detail(t));
}

static inline void log_reset(void)
{
  fflush(log_fp);
  assert_int_equal(ftruncate(fileno(log_fp), 0), 0);
  rewind(log_fp);
}

/* The persistent handles of the slot keys' range the TPM holds now. */
/* The PCID's slot key of the fixture's TRE (made at enrolment, docs/tre-tpm.md "The PCID
 * credential's K"): not an MCIM's, so not counted below. */
static TPM2_HANDLE pcid_handle FIXTURE_UNUSED;

static inline UINT32 slot_keys_in_tpm(mcim_tpm_t *t, TPM2_HANDLE *first)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, MCIM_TPM_SLOT_HANDLE_FIRST,
                                      MCIM_TPM_SLOT_HANDLES, &more, &cap),
                   TSS2_RC_SUCCESS);
  UINT32 n = 0;
  for (UINT32 i = 0; i < cap->data.handles.count; i++)
    if (cap->data.handles.handle[i] < MCIM_TPM_SLOT_HANDLE_FIRST + MCIM_TPM_SLOT_HANDLES &&
        (!pcid_handle || cap->data.handles.handle[i] != pcid_handle)) {
      if (first && n == 0)
        *first = cap->data.handles.handle[i];
      n++;
    }
  Esys_Free(cap);
  return n;
}

static inline bool slot_key_in_tpm(mcim_tpm_t *t, TPM2_HANDLE h)
{
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = TPM2_NO;
  assert_int_equal(Esys_GetCapability(mcim_tpm_esys(t), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, h, 1, &more, &cap),
                   TSS2_RC_SUCCESS);
  bool yes = cap->data.handles.count == 1 && cap->data.handles.handle[0] == h;
  Esys_Free(cap);
  return yes;
}

#endif
