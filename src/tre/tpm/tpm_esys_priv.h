/* Our ESAPI subset's internals, for tpm_esys.c (contexts, TRs, authorisations) and
 * tpm_esys_cmd.c (the commands). tpm_esys.c's head comment says why it exists. */
#ifndef MCIM_TRE_TPM_ESYS_PRIV_H
#define MCIM_TRE_TPM_ESYS_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_sys.h>

#include "tre/tpm/tpm_lib.h"

/* A SAPI call through the pointers tpm_lib.c loaded: SYS(Sign_Prepare)(...) */
#define SYS(fn) (mcim_tss2.Tss2_Sys_##fn)

/* What a TR (ESYS_TR) of ours stands for: an object, an NV index or a session in the TPM. */
struct mcim_esys_res {
  bool used;
  bool session;
  TPM2_HANDLE handle;
  TPM2B_NAME name; /* what the TPM said (Load, ReadPublic, NV_ReadPublic, CreatePrimary) */
  TPM2B_AUTH auth; /* Esys_TR_SetAuth, or the inSensitive of CreatePrimary */
  /* a session (unbound, unsalted: its session key is empty) */
  TPM2_SE type;
  TPMA_SESSION attrs;
  TPM2B_NONCE nonce_caller; /* ours, new for every command */
  TPM2B_NONCE nonce_tpm;    /* the TPM's last */
  bool auth_value_needed;   /* TPM2_PolicyAuthValue since the session's last use */
};

struct ESYS_CONTEXT {
  TSS2_SYS_CONTEXT *sys;
  size_t sys_size; /* ours to wipe: it holds the last command and answer (Z, E_K's output) */
  struct mcim_esys_res *res; /* TR i is MCIM_ESYS_TR_FIRST + i */
  size_t nres;
  TPM2B_AUTH owner, endorsement, lockout, platform; /* Esys_TR_SetAuth on the hierarchies */
};

#define MCIM_ESYS_TR_FIRST 0x1000u /* ESAPI's first TR of an object it tracks */

/* One command: the TRs of its handles in order, the first `nauth` of which are authorised
 * by the sessions s[0..nauth-1] (ESYS_TR_PASSWORD or a policy session); a session past
 * nauth (audit, parameter encryption) is refused: none is used here. */
struct mcim_esys_cmd {
  ESYS_TR tr[3];
  TPM2_HANDLE h[3]; /* the TPM's handles of tr[], set by mcim_esys_begin */
  size_t n, nauth;
  ESYS_TR s[3];
};

/* Resolve c->tr[] into c->h[] and check the sessions (TSS2_ESYS_RC_BAD_TR, _BAD_VALUE). */
TSS2_RC mcim_esys_begin(ESYS_CONTEXT *e, struct mcim_esys_cmd *c);
/* After a _Prepare: the authorisations (passwords, policy sessions' HMACs over the
 * command's cpHash), the exchange with the TPM, the response's HMACs checked and the
 * sessions' nonces rolled. The TPM's response code as it came. */
TSS2_RC mcim_esys_execute(ESYS_CONTEXT *e, struct mcim_esys_cmd *c);
/* Whether to send again: the TPM said RETRY, YIELDED or TESTING (at most a few times). */
bool mcim_esys_again(TSS2_RC r, int *tries);
/* *out = a copy of v in memory of its own (Esys_Free), when out is not NULL. */
TSS2_RC mcim_esys_out(void *out, const void *v, size_t n);
/* A new TR for a handle in the TPM, with its name. */
TSS2_RC mcim_esys_new(ESYS_CONTEXT *e, TPM2_HANDLE h, const TPM2B_NAME *name, ESYS_TR *tr);
/* Whether `name` is the name of that public area: nameAlg || H(nameAlg, the marshalled area)
 * (Part 1, 16). What the TPM says an object or NV index is, and the name our HMACs bind, are
 * then one: TSS2_ESYS_RC_MALFORMED_RESPONSE if not (or if its hash is not SHA-1 or -2). */
TSS2_RC mcim_esys_check_name(const TPMT_PUBLIC *pub, const TPM2B_NAME *name);
TSS2_RC mcim_esys_check_nv_name(const TPMS_NV_PUBLIC *pub, const TPM2B_NAME *name);
/* The resource of a TR of ours (NULL for a constant or an unknown one). */
struct mcim_esys_res *mcim_esys_res(ESYS_CONTEXT *e, ESYS_TR tr);
/* Forget a TR of ours (the TPM is not asked). */
void mcim_esys_drop(ESYS_CONTEXT *e, ESYS_TR tr);

/* Prepare and execute one command, again while the TPM asks for it: r is the result. */
#define MCIM_ESYS_RUN(r, e, c, prepare)                                                            \
  do {                                                                                             \
    int tries_ = 0;                                                                                \
    (r) = mcim_esys_begin((e), (c));                                                               \
    while ((r) == TSS2_RC_SUCCESS) {                                                               \
      (r) = (prepare);                                                                             \
      if ((r) == TSS2_RC_SUCCESS)                                                                  \
        (r) = mcim_esys_execute((e), (c));                                                         \
      if (!mcim_esys_again((r), &tries_))                                                          \
        break;                                                                                     \
      (r) = TSS2_RC_SUCCESS;                                                                       \
    }                                                                                              \
  } while (0)

#endif
