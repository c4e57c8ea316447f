/* tpm2-tss loaded at run time (tpm_lib.c), for the files of src/tre/tpm/ only.
 *
 * Nothing links tpm2-tss: its libraries (and, through ESAPI, a shared libcrypto) are loaded
 * with dlopen() the first time a TPM is used (mcim_tss2_load, tpm.h). A program that never
 * uses one, such as the agent of a device with the software TRE, maps none of them
 * (docs/device.md, "Footprint"; tests/integration/agent_footprint.sh); the agent of a TPM
 * device loads them when it opens its TRE.
 *
 * Each function of tpm2-tss that src/tre/tpm/ calls is a pointer in `mcim_tss2`, and the
 * macros below make a call read as the TSS documentation writes it: `Esys_Load(...)` here is
 * `(mcim_tss2.Esys_Load)(...)`. A new call needs its line in MCIM_TSS2_FUNCTIONS and its
 * macro. The pointers are set once, by mcim_tss2_load(), before anything can reach a call:
 * every entry point of src/tre/tpm/ that calls tpm2-tss loads it first. */
#ifndef MCIM_TRE_TPM_LIB_H
#define MCIM_TRE_TPM_LIB_H

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

/* X(library, function): the library is the index into tpm_lib.c's list of sonames. */
#define MCIM_TSS2_FUNCTIONS(X)                                                                     \
  X(MCIM_TSS2_TCTILDR, Tss2_TctiLdr_Initialize)                                                    \
  X(MCIM_TSS2_TCTILDR, Tss2_TctiLdr_Finalize)                                                      \
  X(MCIM_TSS2_RC, Tss2_RC_Decode)                                                                  \
  X(MCIM_TSS2_ESYS, Esys_Initialize)                                                               \
  X(MCIM_TSS2_ESYS, Esys_Finalize)                                                                 \
  X(MCIM_TSS2_ESYS, Esys_Free)                                                                     \
  X(MCIM_TSS2_ESYS, Esys_FlushContext)                                                             \
  X(MCIM_TSS2_ESYS, Esys_GetCapability)                                                            \
  X(MCIM_TSS2_ESYS, Esys_TR_FromTPMPublic)                                                         \
  X(MCIM_TSS2_ESYS, Esys_TR_GetTpmHandle)                                                          \
  X(MCIM_TSS2_ESYS, Esys_TR_Close)                                                               \
  X(MCIM_TSS2_ESYS, Esys_TR_GetName)                                                             \
  X(MCIM_TSS2_ESYS, Esys_ReadPublic)                                                             \
  X(MCIM_TSS2_ESYS, Esys_EvictControl)                                                           \
  X(MCIM_TSS2_ESYS, Esys_CreatePrimary)                                                            \
  X(MCIM_TSS2_ESYS, Esys_Create)                                                                   \
  X(MCIM_TSS2_ESYS, Esys_Load)                                                                     \
  X(MCIM_TSS2_ESYS, Esys_Import)                                                                   \
  X(MCIM_TSS2_ESYS, Esys_EncryptDecrypt2)                                                          \
  X(MCIM_TSS2_ESYS, Esys_Sign)                                                                     \
  X(MCIM_TSS2_ESYS, Esys_ECDH_ZGen)                                                                \
  X(MCIM_TSS2_ESYS, Esys_PCR_Reset)                                                                \
  X(MCIM_TSS2_ESYS, Esys_PCR_Extend)                                                               \
  X(MCIM_TSS2_ESYS, Esys_PCR_Read)                                                                 \
  X(MCIM_TSS2_ESYS, Esys_Quote)                                                                    \
  X(MCIM_TSS2_ESYS, Esys_TR_SetAuth)                                                               \
  X(MCIM_TSS2_ESYS, Esys_NV_DefineSpace)                                                           \
  X(MCIM_TSS2_ESYS, Esys_NV_Increment)                                                             \
  X(MCIM_TSS2_ESYS, Esys_NV_Read)                                                                  \
  X(MCIM_TSS2_ESYS, Esys_NV_ReadPublic)                                                            \
  X(MCIM_TSS2_ESYS, Esys_StartAuthSession)                                                         \
  X(MCIM_TSS2_ESYS, Esys_PolicySecret)                                                             \
  X(MCIM_TSS2_ESYS, Esys_ActivateCredential)                                                       \
  X(MCIM_TSS2_ESYS, Esys_Certify)                                                                  \
  X(MCIM_TSS2_ESYS, Esys_Rewrap)                                                                   \
  X(MCIM_TSS2_ESYS, Esys_PolicyAuthValue)                                                          \
  X(MCIM_TSS2_ESYS, Esys_PolicyCommandCode)                                                        \
  X(MCIM_TSS2_ESYS, Esys_PolicyOR)                                                                 \
  X(MCIM_TSS2_MU, Tss2_MU_TPMT_PUBLIC_Marshal)                                                     \
  X(MCIM_TSS2_MU, Tss2_MU_TPM2B_PUBLIC_Marshal)                                                    \
  X(MCIM_TSS2_MU, Tss2_MU_TPM2B_PUBLIC_Unmarshal)                                                  \
  X(MCIM_TSS2_MU, Tss2_MU_TPM2B_PRIVATE_Marshal)                                                   \
  X(MCIM_TSS2_MU, Tss2_MU_TPM2B_PRIVATE_Unmarshal)                                                 \
  X(MCIM_TSS2_MU, Tss2_MU_TPM2B_SENSITIVE_Marshal)                                                 \
  X(MCIM_TSS2_MU, Tss2_MU_TPMS_ECC_POINT_Marshal)                                                  \
  X(MCIM_TSS2_MU, Tss2_MU_TPMT_SIGNATURE_Marshal)                                                  \
  X(MCIM_TSS2_MU, Tss2_MU_TPMT_SIGNATURE_Unmarshal)                                                \
  X(MCIM_TSS2_MU, Tss2_MU_TPMS_ATTEST_Unmarshal)

enum { MCIM_TSS2_TCTILDR, MCIM_TSS2_RC, MCIM_TSS2_ESYS, MCIM_TSS2_MU, MCIM_TSS2_NLIBS };

/* fn is also the member's name, a declarator: no parentheses possible */
// NOLINTNEXTLINE(bugprone-macro-parentheses)
#define MCIM_TSS2_MEMBER(lib, fn) __typeof__(fn) *fn;
struct mcim_tss2_functions {
  MCIM_TSS2_FUNCTIONS(MCIM_TSS2_MEMBER)
};
#undef MCIM_TSS2_MEMBER
extern struct mcim_tss2_functions mcim_tss2;

#ifndef MCIM_TSS2_NO_MACROS /* tpm_lib.c sets the pointers by their names */
#define Tss2_TctiLdr_Initialize (mcim_tss2.Tss2_TctiLdr_Initialize)
#define Tss2_TctiLdr_Finalize (mcim_tss2.Tss2_TctiLdr_Finalize)
#define Tss2_RC_Decode (mcim_tss2.Tss2_RC_Decode)
#define Esys_Initialize (mcim_tss2.Esys_Initialize)
#define Esys_Finalize (mcim_tss2.Esys_Finalize)
#define Esys_Free (mcim_tss2.Esys_Free)
#define Esys_FlushContext (mcim_tss2.Esys_FlushContext)
#define Esys_GetCapability (mcim_tss2.Esys_GetCapability)
#define Esys_TR_FromTPMPublic (mcim_tss2.Esys_TR_FromTPMPublic)
#define Esys_TR_GetTpmHandle (mcim_tss2.Esys_TR_GetTpmHandle)
#define Esys_TR_Close (mcim_tss2.Esys_TR_Close)
#define Esys_TR_GetName (mcim_tss2.Esys_TR_GetName)
#define Esys_ReadPublic (mcim_tss2.Esys_ReadPublic)
#define Esys_EvictControl (mcim_tss2.Esys_EvictControl)
#define Esys_CreatePrimary (mcim_tss2.Esys_CreatePrimary)
#define Esys_Create (mcim_tss2.Esys_Create)
#define Esys_Load (mcim_tss2.Esys_Load)
#define Esys_Import (mcim_tss2.Esys_Import)
#define Esys_EncryptDecrypt2 (mcim_tss2.Esys_EncryptDecrypt2)
#define Esys_Sign (mcim_tss2.Esys_Sign)
#define Esys_ECDH_ZGen (mcim_tss2.Esys_ECDH_ZGen)
#define Esys_PCR_Reset (mcim_tss2.Esys_PCR_Reset)
#define Esys_PCR_Extend (mcim_tss2.Esys_PCR_Extend)
#define Esys_PCR_Read (mcim_tss2.Esys_PCR_Read)
#define Esys_Quote (mcim_tss2.Esys_Quote)
#define Esys_TR_SetAuth (mcim_tss2.Esys_TR_SetAuth)
#define Esys_NV_DefineSpace (mcim_tss2.Esys_NV_DefineSpace)
#define Esys_NV_Increment (mcim_tss2.Esys_NV_Increment)
#define Esys_NV_Read (mcim_tss2.Esys_NV_Read)
#define Esys_NV_ReadPublic (mcim_tss2.Esys_NV_ReadPublic)
#define Esys_StartAuthSession (mcim_tss2.Esys_StartAuthSession)
#define Esys_PolicySecret (mcim_tss2.Esys_PolicySecret)
#define Esys_ActivateCredential (mcim_tss2.Esys_ActivateCredential)
#define Esys_Certify (mcim_tss2.Esys_Certify)
#define Tss2_MU_TPMT_SIGNATURE_Unmarshal (mcim_tss2.Tss2_MU_TPMT_SIGNATURE_Unmarshal)
#define Tss2_MU_TPMS_ATTEST_Unmarshal (mcim_tss2.Tss2_MU_TPMS_ATTEST_Unmarshal)
#define Esys_Rewrap (mcim_tss2.Esys_Rewrap)
#define Esys_PolicyAuthValue (mcim_tss2.Esys_PolicyAuthValue)
#define Esys_PolicyCommandCode (mcim_tss2.Esys_PolicyCommandCode)
#define Esys_PolicyOR (mcim_tss2.Esys_PolicyOR)
#define Tss2_MU_TPMT_PUBLIC_Marshal (mcim_tss2.Tss2_MU_TPMT_PUBLIC_Marshal)
#define Tss2_MU_TPM2B_PUBLIC_Marshal (mcim_tss2.Tss2_MU_TPM2B_PUBLIC_Marshal)
#define Tss2_MU_TPM2B_PUBLIC_Unmarshal (mcim_tss2.Tss2_MU_TPM2B_PUBLIC_Unmarshal)
#define Tss2_MU_TPM2B_PRIVATE_Marshal (mcim_tss2.Tss2_MU_TPM2B_PRIVATE_Marshal)
#define Tss2_MU_TPM2B_PRIVATE_Unmarshal (mcim_tss2.Tss2_MU_TPM2B_PRIVATE_Unmarshal)
#define Tss2_MU_TPM2B_SENSITIVE_Marshal (mcim_tss2.Tss2_MU_TPM2B_SENSITIVE_Marshal)
#define Tss2_MU_TPMS_ECC_POINT_Marshal (mcim_tss2.Tss2_MU_TPMS_ECC_POINT_Marshal)
#define Tss2_MU_TPMT_SIGNATURE_Marshal (mcim_tss2.Tss2_MU_TPMT_SIGNATURE_Marshal)
#endif

#endif
