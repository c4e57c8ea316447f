/* tpm2-tss loaded at run time (tpm_lib.c), for the files of src/tre/tpm/ only.
 *
 * Nothing links tpm2-tss: its libraries (SAPI, the marshalling, the TCTI loader and the
 * response-code decoder; none of them needs libcrypto) are loaded with dlopen() the first
 * time a TPM is used (mcim_tss2_load, tpm.h). A program that never uses one, such as the
 * agent of a device with the software TRE, maps none of them (docs/device.md, "Footprint";
 * tests/integration/agent_footprint.sh); the agent of a TPM device loads them when it opens
 * its TRE. ESAPI (libtss2-esys) is neither linked nor loaded: the part of it we use is ours,
 * tpm_esys.c, on these.
 *
 * Each function of tpm2-tss that src/tre/tpm/ calls is a pointer in `mcim_tss2`. The SAPI
 * calls are written SYS(Sign_Prepare)(...) (tpm_esys_priv.h); the others have a macro below
 * so that a call reads as the TSS documentation writes it: `Tss2_RC_Decode(rc)` here is
 * `(mcim_tss2.Tss2_RC_Decode)(rc)`. A new function needs its line in MCIM_TSS2_FUNCTIONS
 * (and its macro, outside SAPI). The pointers are set once, by mcim_tss2_load(), before
 * anything can reach a call: every entry point of src/tre/tpm/ that calls tpm2-tss loads it
 * first. */
#ifndef MCIM_TRE_TPM_LIB_H
#define MCIM_TRE_TPM_LIB_H

#include <tss2/tss2_esys.h>
#include <tss2/tss2_sys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

/* X(library, function): the library is the index into tpm_lib.c's list of sonames. */
#define MCIM_TSS2_FUNCTIONS(X)                                                                     \
  X(MCIM_TSS2_TCTILDR, Tss2_TctiLdr_Initialize)                                                    \
  X(MCIM_TSS2_TCTILDR, Tss2_TctiLdr_Finalize)                                                      \
  X(MCIM_TSS2_RC, Tss2_RC_Decode)                                                                  \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetContextSize)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_Initialize)                                                            \
  X(MCIM_TSS2_SYS, Tss2_Sys_Finalize)                                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetCommandCode)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetCpBuffer)                                                           \
  X(MCIM_TSS2_SYS, Tss2_Sys_SetCmdAuths)                                                           \
  X(MCIM_TSS2_SYS, Tss2_Sys_Execute)                                                               \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetRspAuths)                                                           \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetRpBuffer)                                                           \
  X(MCIM_TSS2_SYS, Tss2_Sys_FlushContext_Prepare)                                                  \
  X(MCIM_TSS2_SYS, Tss2_Sys_FlushContext_Complete)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetCapability_Prepare)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_GetCapability_Complete)                                                \
  X(MCIM_TSS2_SYS, Tss2_Sys_ReadPublic_Prepare)                                                    \
  X(MCIM_TSS2_SYS, Tss2_Sys_ReadPublic_Complete)                                                   \
  X(MCIM_TSS2_SYS, Tss2_Sys_EvictControl_Prepare)                                                  \
  X(MCIM_TSS2_SYS, Tss2_Sys_EvictControl_Complete)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_CreatePrimary_Prepare)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_CreatePrimary_Complete)                                                \
  X(MCIM_TSS2_SYS, Tss2_Sys_Create_Prepare)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_Create_Complete)                                                       \
  X(MCIM_TSS2_SYS, Tss2_Sys_Load_Prepare)                                                          \
  X(MCIM_TSS2_SYS, Tss2_Sys_Load_Complete)                                                         \
  X(MCIM_TSS2_SYS, Tss2_Sys_Import_Prepare)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_Import_Complete)                                                       \
  X(MCIM_TSS2_SYS, Tss2_Sys_EncryptDecrypt2_Prepare)                                               \
  X(MCIM_TSS2_SYS, Tss2_Sys_EncryptDecrypt2_Complete)                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_Sign_Prepare)                                                          \
  X(MCIM_TSS2_SYS, Tss2_Sys_Sign_Complete)                                                         \
  X(MCIM_TSS2_SYS, Tss2_Sys_ECDH_ZGen_Prepare)                                                     \
  X(MCIM_TSS2_SYS, Tss2_Sys_ECDH_ZGen_Complete)                                                    \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Reset_Prepare)                                                     \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Reset_Complete)                                                    \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Extend_Prepare)                                                    \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Extend_Complete)                                                   \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Read_Prepare)                                                      \
  X(MCIM_TSS2_SYS, Tss2_Sys_PCR_Read_Complete)                                                     \
  X(MCIM_TSS2_SYS, Tss2_Sys_Quote_Prepare)                                                         \
  X(MCIM_TSS2_SYS, Tss2_Sys_Quote_Complete)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_DefineSpace_Prepare)                                                \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_DefineSpace_Complete)                                               \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_Increment_Prepare)                                                  \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_Increment_Complete)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_Read_Prepare)                                                       \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_Read_Complete)                                                      \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_ReadPublic_Prepare)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_ReadPublic_Complete)                                                \
  X(MCIM_TSS2_SYS, Tss2_Sys_StartAuthSession_Prepare)                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_StartAuthSession_Complete)                                             \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicySecret_Prepare)                                                  \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicySecret_Complete)                                                 \
  X(MCIM_TSS2_SYS, Tss2_Sys_ActivateCredential_Prepare)                                            \
  X(MCIM_TSS2_SYS, Tss2_Sys_ActivateCredential_Complete)                                           \
  X(MCIM_TSS2_SYS, Tss2_Sys_Certify_Prepare)                                                       \
  X(MCIM_TSS2_SYS, Tss2_Sys_Certify_Complete)                                                      \
  X(MCIM_TSS2_SYS, Tss2_Sys_Rewrap_Prepare)                                                        \
  X(MCIM_TSS2_SYS, Tss2_Sys_Rewrap_Complete)                                                       \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyAuthValue_Prepare)                                               \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyAuthValue_Complete)                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyCommandCode_Prepare)                                             \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyCommandCode_Complete)                                            \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyOR_Prepare)                                                      \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyOR_Complete)                                                     \
  X(MCIM_TSS2_SYS, Tss2_Sys_Duplicate_Prepare)                                                     \
  X(MCIM_TSS2_SYS, Tss2_Sys_Duplicate_Complete)                                                    \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_UndefineSpace_Prepare)                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_NV_UndefineSpace_Complete)                                             \
  X(MCIM_TSS2_SYS, Tss2_Sys_ObjectChangeAuth_Prepare)                                              \
  X(MCIM_TSS2_SYS, Tss2_Sys_ObjectChangeAuth_Complete)                                             \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyGetDigest_Prepare)                                               \
  X(MCIM_TSS2_SYS, Tss2_Sys_PolicyGetDigest_Complete)                                              \
  X(MCIM_TSS2_MU, Tss2_MU_TPMS_NV_PUBLIC_Marshal)                                                  \
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

enum { MCIM_TSS2_TCTILDR, MCIM_TSS2_RC, MCIM_TSS2_SYS, MCIM_TSS2_MU, MCIM_TSS2_NLIBS };

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
#define Tss2_MU_TPMT_SIGNATURE_Unmarshal (mcim_tss2.Tss2_MU_TPMT_SIGNATURE_Unmarshal)
#define Tss2_MU_TPMS_ATTEST_Unmarshal (mcim_tss2.Tss2_MU_TPMS_ATTEST_Unmarshal)
#define Tss2_MU_TPMS_NV_PUBLIC_Marshal (mcim_tss2.Tss2_MU_TPMS_NV_PUBLIC_Marshal)
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
