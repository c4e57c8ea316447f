/* The TPM commands of our ESAPI subset (tpm_esys.c says why it exists): each one a SAPI
 * _Prepare, mcim_esys_execute (authorisations, exchange, response HMACs) and a _Complete,
 * its outputs copied into memory of their own as ESAPI hands them (Esys_Free), and the TRs
 * it makes or ends. In the order of TPM 2.0 Part 3. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/util.h"
#include "tre/tpm/tpm_esys_priv.h"

/* Hand out several outputs: all of them, or none (the ones already made are freed). */
struct esys_output {
  void *out; /* T ** (NULL: not asked for) */
  const void *v;
  size_t n;
};

static TSS2_RC outputs(struct esys_output *o, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    TSS2_RC r = mcim_esys_out(o[i].out, o[i].v, o[i].n);
    if (r != TSS2_RC_SUCCESS) {
      for (size_t j = 0; j < i; j++)
        if (o[j].out) {
          free(*(void **)o[j].out);
          *(void **)o[j].out = NULL;
        }
      return r;
    }
  }
  return TSS2_RC_SUCCESS;
}

#define OUT(p, v) {(p), &(v), sizeof(v)}
#define OUTPUTS(...)                                                                               \
  outputs((struct esys_output[]){__VA_ARGS__},                                                     \
          sizeof((struct esys_output[]){__VA_ARGS__}) / sizeof(struct esys_output))

static bool no_sessions(ESYS_TR s1, ESYS_TR s2, ESYS_TR s3)
{
  return s1 == ESYS_TR_NONE && s2 == ESYS_TR_NONE && s3 == ESYS_TR_NONE;
}

/* ReadPublic and NV_ReadPublic by the TPM's handle (no TR needed yet) */
static TSS2_RC read_public(ESYS_CONTEXT *e, TPM2_HANDLE h, TPM2B_PUBLIC *pub, TPM2B_NAME *name,
                          TPM2B_NAME *qualified)
{
  struct mcim_esys_cmd c = {.s = {ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, e, &c, SYS(ReadPublic_Prepare)(e->sys, h));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(ReadPublic_Complete)(e->sys, pub, name, qualified);
  return r == TSS2_RC_SUCCESS ? mcim_esys_check_name(&pub->publicArea, name) : r;
}

static TSS2_RC nv_read_public(ESYS_CONTEXT *e, TPM2_HANDLE h, TPM2B_NV_PUBLIC *pub,
                              TPM2B_NAME *name)
{
  struct mcim_esys_cmd c = {.s = {ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, e, &c, SYS(NV_ReadPublic_Prepare)(e->sys, h));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(NV_ReadPublic_Complete)(e->sys, pub, name);
  return r == TSS2_RC_SUCCESS ? mcim_esys_check_nv_name(&pub->nvPublic, name) : r;
}

static bool is_nv(TPM2_HANDLE h)
{
  return h >> TPM2_HR_SHIFT == TPM2_HT_NV_INDEX;
}

/* ---- TRs of what is already in the TPM ---- */

TSS2_RC Esys_TR_FromTPMPublic(ESYS_CONTEXT *esysContext, TPM2_HANDLE tpm_handle,
                              ESYS_TR optionalSession1, ESYS_TR optionalSession2,
                              ESYS_TR optionalSession3, ESYS_TR *object)
{
  TPM2B_PUBLIC pub = {0};
  TPM2B_NV_PUBLIC nv = {0};
  TPM2B_NAME name = {0}, qualified = {0};
  TSS2_RC r;

  if (!esysContext || !object)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  if (!no_sessions(optionalSession1, optionalSession2, optionalSession3))
    return TSS2_ESYS_RC_BAD_VALUE;
  switch (tpm_handle >> TPM2_HR_SHIFT) {
  case TPM2_HT_NV_INDEX:
    r = nv_read_public(esysContext, tpm_handle, &nv, &name);
    break;
  case TPM2_HT_TRANSIENT:
  case TPM2_HT_PERSISTENT:
    r = read_public(esysContext, tpm_handle, &pub, &name, &qualified);
    break;
  default:
    return TSS2_ESYS_RC_BAD_VALUE; /* permanent handles have their constant TRs */
  }
  return r == TSS2_RC_SUCCESS ? mcim_esys_new(esysContext, tpm_handle, &name, object) : r;
}

TSS2_RC Esys_TR_GetName(ESYS_CONTEXT *esysContext, ESYS_TR handle, TPM2B_NAME **name)
{
  struct mcim_esys_res *res = mcim_esys_res(esysContext, handle);
  TPM2B_NAME n = {0};
  TPM2_HANDLE h;

  if (!esysContext || !name)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  if (res && is_nv(res->handle)) {
    /* an NV index's name changes with its attributes (TPMA_NV_WRITTEN): asked afresh, and
     * kept only once checked (a refused one must not become what later HMACs bind) */
    TPM2B_NV_PUBLIC nv = {0};
    TPM2B_NAME fresh = {0};
    TSS2_RC r = nv_read_public(esysContext, res->handle, &nv, &fresh);
    if (r != TSS2_RC_SUCCESS)
      return r;
    res->name = fresh;
  }
  if (res) {
    n = res->name;
  } else {
    TSS2_RC r = Esys_TR_GetTpmHandle(esysContext, handle, &h);
    if (r != TSS2_RC_SUCCESS)
      return r;
    n.size = 4;
    n.name[0] = (uint8_t)(h >> 24);
    n.name[1] = (uint8_t)(h >> 16);
    n.name[2] = (uint8_t)(h >> 8);
    n.name[3] = (uint8_t)h;
  }
  return mcim_esys_out(name, &n, sizeof(n));
}

/* ---- sessions and policies (Part 3, 11 and 23) ---- */

TSS2_RC Esys_StartAuthSession(ESYS_CONTEXT *esysContext, ESYS_TR tpmKey, ESYS_TR bind,
                              ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                              const TPM2B_NONCE *nonceCaller, TPM2_SE sessionType,
                              const TPMT_SYM_DEF *symmetric, TPMI_ALG_HASH authHash,
                              ESYS_TR *sessionHandle)
{
  struct mcim_esys_cmd c = {.s = {shandle1, shandle2, shandle3}};
  TPM2B_NONCE caller = {.size = 32}, tpm = {0};
  TPM2B_ENCRYPTED_SECRET no_salt = {0};
  TPMI_SH_AUTH_SESSION h = 0;
  struct mcim_esys_res *s;
  TSS2_RC r;

  if (!esysContext || !sessionHandle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  /* unbound, unsalted, no parameter encryption, SHA-256: all that is used here */
  if (tpmKey != ESYS_TR_NONE || bind != ESYS_TR_NONE || authHash != TPM2_ALG_SHA256 ||
      (symmetric && symmetric->algorithm != TPM2_ALG_NULL) ||
      (sessionType != TPM2_SE_POLICY && sessionType != TPM2_SE_TRIAL))
    return TSS2_ESYS_RC_BAD_VALUE;
  if (nonceCaller)
    caller = *nonceCaller;
  else if (mcim_random(caller.buffer, caller.size) != MCIM_OK)
    return TSS2_ESYS_RC_GENERAL_FAILURE;
  {
    const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
    MCIM_ESYS_RUN(r, esysContext, &c,
                  SYS(StartAuthSession_Prepare)(esysContext->sys, TPM2_RH_NULL, TPM2_RH_NULL,
                                                &caller, &no_salt, sessionType, &none,
                                                authHash));
  }
  if (r == TSS2_RC_SUCCESS)
    r = SYS(StartAuthSession_Complete)(esysContext->sys, &h, &tpm);
  if (r == TSS2_RC_SUCCESS) {
    /* a session's name is its handle (Part 1, 16) */
    TPM2B_NAME handle_name = {.size = 4,
                              .name = {(uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8),
                                       (uint8_t)h}};
    r = mcim_esys_new(esysContext, h, &handle_name, sessionHandle);
  }
  if (r != TSS2_RC_SUCCESS)
    return r;
  s = mcim_esys_res(esysContext, *sessionHandle);
  s->session = true;
  s->type = sessionType;
  s->attrs = TPMA_SESSION_CONTINUESESSION; /* ESAPI's default: the caller flushes it */
  s->nonce_caller = caller;
  s->nonce_tpm = tpm;
  return TSS2_RC_SUCCESS;
}

TSS2_RC Esys_PolicySecret(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR policySession,
                          ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                          const TPM2B_NONCE *nonceTPM, const TPM2B_DIGEST *cpHashA,
                          const TPM2B_NONCE *policyRef, INT32 expiration,
                          TPM2B_TIMEOUT **timeout, TPMT_TK_AUTH **policyTicket)
{
  struct mcim_esys_cmd c = {
      .tr = {authHandle, policySession}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  const TPM2B_NONCE no_nonce = {0};
  const TPM2B_DIGEST no_digest = {0};
  TPM2B_TIMEOUT t = {0};
  TPMT_TK_AUTH tk = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(PolicySecret_Prepare)(esysContext->sys, c.h[0], c.h[1],
                                          nonceTPM ? nonceTPM : &no_nonce,
                                          cpHashA ? cpHashA : &no_digest,
                                          policyRef ? policyRef : &no_nonce, expiration));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(PolicySecret_Complete)(esysContext->sys, &t, &tk);
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(timeout, t), OUT(policyTicket, tk)) : r;
}

TSS2_RC Esys_PolicyOR(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1,
                      ESYS_TR shandle2, ESYS_TR shandle3, const TPML_DIGEST *pHashList)
{
  struct mcim_esys_cmd c = {.tr = {policySession}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PolicyOR_Prepare)(esysContext->sys, c.h[0], pHashList));
  return r == TSS2_RC_SUCCESS ? SYS(PolicyOR_Complete)(esysContext->sys) : r;
}

TSS2_RC Esys_PolicyCommandCode(ESYS_CONTEXT *esysContext, ESYS_TR policySession,
                               ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPM2_CC code)
{
  struct mcim_esys_cmd c = {.tr = {policySession}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(PolicyCommandCode_Prepare)(esysContext->sys, c.h[0], code));
  return r == TSS2_RC_SUCCESS ? SYS(PolicyCommandCode_Complete)(esysContext->sys) : r;
}

TSS2_RC Esys_PolicyAuthValue(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1,
                             ESYS_TR shandle2, ESYS_TR shandle3)
{
  struct mcim_esys_cmd c = {.tr = {policySession}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  struct mcim_esys_res *s;
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PolicyAuthValue_Prepare)(esysContext->sys, c.h[0]));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(PolicyAuthValue_Complete)(esysContext->sys);
  /* the command this session authorises next is HMAC'd with the entity's authValue */
  if (r == TSS2_RC_SUCCESS && (s = mcim_esys_res(esysContext, policySession)) != NULL)
    s->auth_value_needed = true;
  return r;
}

TSS2_RC Esys_PolicyGetDigest(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1,
                             ESYS_TR shandle2, ESYS_TR shandle3, TPM2B_DIGEST **policyDigest)
{
  struct mcim_esys_cmd c = {.tr = {policySession}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_DIGEST d = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PolicyGetDigest_Prepare)(esysContext->sys, c.h[0]));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(PolicyGetDigest_Complete)(esysContext->sys, &d);
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(policyDigest, &d, sizeof(d)) : r;
}

/* ---- objects (Part 3, 12 and 24) ---- */

TSS2_RC Esys_CreatePrimary(ESYS_CONTEXT *esysContext, ESYS_TR primaryHandle, ESYS_TR shandle1,
                           ESYS_TR shandle2, ESYS_TR shandle3,
                           const TPM2B_SENSITIVE_CREATE *inSensitive, const TPM2B_PUBLIC *inPublic,
                           const TPM2B_DATA *outsideInfo, const TPML_PCR_SELECTION *creationPCR,
                           ESYS_TR *objectHandle, TPM2B_PUBLIC **outPublic,
                           TPM2B_CREATION_DATA **creationData, TPM2B_DIGEST **creationHash,
                           TPMT_TK_CREATION **creationTicket)
{
  struct mcim_esys_cmd c = {
      .tr = {primaryHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_PUBLIC pub = {0};
  TPM2B_CREATION_DATA data = {0};
  TPM2B_DIGEST hash = {0};
  TPMT_TK_CREATION ticket = {0};
  TPM2B_NAME name = {0};
  TPM2_HANDLE h = 0;
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC r;

  if (!objectHandle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(CreatePrimary_Prepare)(esysContext->sys, c.h[0], inSensitive, inPublic,
                                           outsideInfo, creationPCR));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(CreatePrimary_Complete)(esysContext->sys, &h, &pub, &data, &hash, &ticket, &name);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_new(esysContext, h, &name, &tr);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_check_name(&pub.publicArea, &name); /* else flushed below */
  if (r == TSS2_RC_SUCCESS && inSensitive)
    mcim_esys_res(esysContext, tr)->auth = inSensitive->sensitive.userAuth;
  if (r == TSS2_RC_SUCCESS)
    r = OUTPUTS(OUT(outPublic, pub), OUT(creationData, data), OUT(creationHash, hash),
                OUT(creationTicket, ticket));
  if (r != TSS2_RC_SUCCESS && tr != ESYS_TR_NONE) {
    (void)Esys_FlushContext(esysContext, tr);
    tr = ESYS_TR_NONE;
  }
  *objectHandle = tr;
  return r;
}

TSS2_RC Esys_Create(ESYS_CONTEXT *esysContext, ESYS_TR parentHandle, ESYS_TR shandle1,
                    ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_SENSITIVE_CREATE *inSensitive,
                    const TPM2B_PUBLIC *inPublic, const TPM2B_DATA *outsideInfo,
                    const TPML_PCR_SELECTION *creationPCR, TPM2B_PRIVATE **outPrivate,
                    TPM2B_PUBLIC **outPublic, TPM2B_CREATION_DATA **creationData,
                    TPM2B_DIGEST **creationHash, TPMT_TK_CREATION **creationTicket)
{
  struct mcim_esys_cmd c = {
      .tr = {parentHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_PRIVATE priv = {0};
  TPM2B_PUBLIC pub = {0};
  TPM2B_CREATION_DATA data = {0};
  TPM2B_DIGEST hash = {0};
  TPMT_TK_CREATION ticket = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Create_Prepare)(esysContext->sys, c.h[0], inSensitive, inPublic, outsideInfo,
                                    creationPCR));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Create_Complete)(esysContext->sys, &priv, &pub, &data, &hash, &ticket);
  return r == TSS2_RC_SUCCESS
             ? OUTPUTS(OUT(outPrivate, priv), OUT(outPublic, pub), OUT(creationData, data),
                       OUT(creationHash, hash), OUT(creationTicket, ticket))
             : r;
}

TSS2_RC Esys_Load(ESYS_CONTEXT *esysContext, ESYS_TR parentHandle, ESYS_TR shandle1,
                  ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_PRIVATE *inPrivate,
                  const TPM2B_PUBLIC *inPublic, ESYS_TR *objectHandle)
{
  struct mcim_esys_cmd c = {
      .tr = {parentHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_NAME name = {0};
  TPM2_HANDLE h = 0;
  TSS2_RC r;

  if (!objectHandle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Load_Prepare)(esysContext->sys, c.h[0], inPrivate, inPublic));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Load_Complete)(esysContext->sys, &h, &name);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_new(esysContext, h, &name, objectHandle);
  /* the name is that of what we loaded, not only what the TPM says it is */
  if (r == TSS2_RC_SUCCESS && inPublic &&
      mcim_esys_check_name(&inPublic->publicArea, &name) != TSS2_RC_SUCCESS) {
    (void)Esys_FlushContext(esysContext, *objectHandle);
    *objectHandle = ESYS_TR_NONE;
    r = TSS2_ESYS_RC_MALFORMED_RESPONSE;
  }
  return r;
}

TSS2_RC Esys_ReadPublic(ESYS_CONTEXT *esysContext, ESYS_TR objectHandle, ESYS_TR shandle1,
                        ESYS_TR shandle2, ESYS_TR shandle3, TPM2B_PUBLIC **outPublic,
                        TPM2B_NAME **name, TPM2B_NAME **qualifiedName)
{
  struct mcim_esys_cmd c = {.tr = {objectHandle}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_PUBLIC pub = {0};
  TPM2B_NAME n = {0}, q = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(ReadPublic_Prepare)(esysContext->sys, c.h[0]));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(ReadPublic_Complete)(esysContext->sys, &pub, &n, &q);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_check_name(&pub.publicArea, &n);
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(outPublic, pub), OUT(name, n), OUT(qualifiedName, q))
                              : r;
}

TSS2_RC Esys_ActivateCredential(ESYS_CONTEXT *esysContext, ESYS_TR activateHandle,
                                ESYS_TR keyHandle, ESYS_TR shandle1, ESYS_TR shandle2,
                                ESYS_TR shandle3, const TPM2B_ID_OBJECT *credentialBlob,
                                const TPM2B_ENCRYPTED_SECRET *secret, TPM2B_DIGEST **certInfo)
{
  struct mcim_esys_cmd c = {.tr = {activateHandle, keyHandle},
                            .n = 2,
                            .nauth = 2,
                            .s = {shandle1, shandle2, shandle3}};
  TPM2B_DIGEST info = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(ActivateCredential_Prepare)(esysContext->sys, c.h[0], c.h[1], credentialBlob,
                                                secret));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(ActivateCredential_Complete)(esysContext->sys, &info);
  r = r == TSS2_RC_SUCCESS ? mcim_esys_out(certInfo, &info, sizeof(info)) : r;
  OPENSSL_cleanse(&info, sizeof(info)); /* the credential's secret */
  return r;
}

TSS2_RC Esys_ObjectChangeAuth(ESYS_CONTEXT *esysContext, ESYS_TR objectHandle,
                              ESYS_TR parentHandle, ESYS_TR shandle1, ESYS_TR shandle2,
                              ESYS_TR shandle3, const TPM2B_AUTH *newAuth,
                              TPM2B_PRIVATE **outPrivate)
{
  struct mcim_esys_cmd c = {.tr = {objectHandle, parentHandle},
                            .n = 2,
                            .nauth = 1,
                            .s = {shandle1, shandle2, shandle3}};
  TPM2B_PRIVATE priv = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(ObjectChangeAuth_Prepare)(esysContext->sys, c.h[0], c.h[1], newAuth));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(ObjectChangeAuth_Complete)(esysContext->sys, &priv);
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(outPrivate, &priv, sizeof(priv)) : r;
}

/* ---- duplication (Part 3, 13) ---- */

TSS2_RC Esys_Duplicate(ESYS_CONTEXT *esysContext, ESYS_TR objectHandle, ESYS_TR newParentHandle,
                       ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                       const TPM2B_DATA *encryptionKeyIn, const TPMT_SYM_DEF_OBJECT *symmetricAlg,
                       TPM2B_DATA **encryptionKeyOut, TPM2B_PRIVATE **duplicate,
                       TPM2B_ENCRYPTED_SECRET **outSymSeed)
{
  struct mcim_esys_cmd c = {.tr = {objectHandle, newParentHandle},
                            .n = 2,
                            .nauth = 1,
                            .s = {shandle1, shandle2, shandle3}};
  TPM2B_DATA key = {0};
  TPM2B_PRIVATE dup = {0};
  TPM2B_ENCRYPTED_SECRET seed = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Duplicate_Prepare)(esysContext->sys, c.h[0], c.h[1], encryptionKeyIn,
                                       symmetricAlg));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Duplicate_Complete)(esysContext->sys, &key, &dup, &seed);
  return r == TSS2_RC_SUCCESS
             ? OUTPUTS(OUT(encryptionKeyOut, key), OUT(duplicate, dup), OUT(outSymSeed, seed))
             : r;
}

TSS2_RC Esys_Rewrap(ESYS_CONTEXT *esysContext, ESYS_TR oldParent, ESYS_TR newParent,
                    ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                    const TPM2B_PRIVATE *inDuplicate, const TPM2B_NAME *name,
                    const TPM2B_ENCRYPTED_SECRET *inSymSeed, TPM2B_PRIVATE **outDuplicate,
                    TPM2B_ENCRYPTED_SECRET **outSymSeed)
{
  struct mcim_esys_cmd c = {
      .tr = {oldParent, newParent}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_PRIVATE dup = {0};
  TPM2B_ENCRYPTED_SECRET seed = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Rewrap_Prepare)(esysContext->sys, c.h[0], c.h[1], inDuplicate, name,
                                    inSymSeed));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Rewrap_Complete)(esysContext->sys, &dup, &seed);
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(outDuplicate, dup), OUT(outSymSeed, seed)) : r;
}

TSS2_RC Esys_Import(ESYS_CONTEXT *esysContext, ESYS_TR parentHandle, ESYS_TR shandle1,
                    ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_DATA *encryptionKey,
                    const TPM2B_PUBLIC *objectPublic, const TPM2B_PRIVATE *duplicate,
                    const TPM2B_ENCRYPTED_SECRET *inSymSeed,
                    const TPMT_SYM_DEF_OBJECT *symmetricAlg, TPM2B_PRIVATE **outPrivate)
{
  struct mcim_esys_cmd c = {
      .tr = {parentHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_PRIVATE priv = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Import_Prepare)(esysContext->sys, c.h[0], encryptionKey, objectPublic,
                                    duplicate, inSymSeed, symmetricAlg));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Import_Complete)(esysContext->sys, &priv);
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(outPrivate, &priv, sizeof(priv)) : r;
}

/* ---- asymmetric and symmetric primitives (Part 3, 14 and 15) ---- */

TSS2_RC Esys_ECDH_ZGen(ESYS_CONTEXT *esysContext, ESYS_TR keyHandle, ESYS_TR shandle1,
                       ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_ECC_POINT *inPoint,
                       TPM2B_ECC_POINT **outPoint)
{
  struct mcim_esys_cmd c = {
      .tr = {keyHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_ECC_POINT z = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(ECDH_ZGen_Prepare)(esysContext->sys, c.h[0], inPoint));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(ECDH_ZGen_Complete)(esysContext->sys, &z);
  r = r == TSS2_RC_SUCCESS ? mcim_esys_out(outPoint, &z, sizeof(z)) : r;
  OPENSSL_cleanse(&z, sizeof(z)); /* a shared secret */
  return r;
}

TSS2_RC Esys_EncryptDecrypt2(ESYS_CONTEXT *esysContext, ESYS_TR keyHandle, ESYS_TR shandle1,
                             ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_MAX_BUFFER *inData,
                             TPMI_YES_NO decrypt, TPMI_ALG_CIPHER_MODE mode, const TPM2B_IV *ivIn,
                             TPM2B_MAX_BUFFER **outData, TPM2B_IV **ivOut)
{
  struct mcim_esys_cmd c = {
      .tr = {keyHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_MAX_BUFFER out = {0};
  TPM2B_IV iv = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(EncryptDecrypt2_Prepare)(esysContext->sys, c.h[0], inData, decrypt, mode,
                                             ivIn));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(EncryptDecrypt2_Complete)(esysContext->sys, &out, &iv);
  r = r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(outData, out), OUT(ivOut, iv)) : r;
  OPENSSL_cleanse(&out, sizeof(out)); /* Milenage's intermediate values */
  return r;
}

/* ---- signing and attestation (Part 3, 18 and 20) ---- */

TSS2_RC Esys_Certify(ESYS_CONTEXT *esysContext, ESYS_TR objectHandle, ESYS_TR signHandle,
                     ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                     const TPM2B_DATA *qualifyingData, const TPMT_SIG_SCHEME *inScheme,
                     TPM2B_ATTEST **certifyInfo, TPMT_SIGNATURE **signature)
{
  struct mcim_esys_cmd c = {.tr = {objectHandle, signHandle},
                            .n = 2,
                            .nauth = 2,
                            .s = {shandle1, shandle2, shandle3}};
  TPM2B_ATTEST info = {0};
  TPMT_SIGNATURE sig = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Certify_Prepare)(esysContext->sys, c.h[0], c.h[1], qualifyingData, inScheme));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Certify_Complete)(esysContext->sys, &info, &sig);
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(certifyInfo, info), OUT(signature, sig)) : r;
}

TSS2_RC Esys_Quote(ESYS_CONTEXT *esysContext, ESYS_TR signHandle, ESYS_TR shandle1,
                   ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_DATA *qualifyingData,
                   const TPMT_SIG_SCHEME *inScheme, const TPML_PCR_SELECTION *PCRselect,
                   TPM2B_ATTEST **quoted, TPMT_SIGNATURE **signature)
{
  struct mcim_esys_cmd c = {
      .tr = {signHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_ATTEST q = {0};
  TPMT_SIGNATURE sig = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Quote_Prepare)(esysContext->sys, c.h[0], qualifyingData, inScheme, PCRselect));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Quote_Complete)(esysContext->sys, &q, &sig);
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(quoted, q), OUT(signature, sig)) : r;
}

TSS2_RC Esys_Sign(ESYS_CONTEXT *esysContext, ESYS_TR keyHandle, ESYS_TR shandle1,
                  ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_DIGEST *digest,
                  const TPMT_SIG_SCHEME *inScheme, const TPMT_TK_HASHCHECK *validation,
                  TPMT_SIGNATURE **signature)
{
  struct mcim_esys_cmd c = {
      .tr = {keyHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPMT_SIGNATURE sig = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(Sign_Prepare)(esysContext->sys, c.h[0], digest, inScheme, validation));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Sign_Complete)(esysContext->sys, &sig);
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(signature, &sig, sizeof(sig)) : r;
}

/* ---- PCRs (Part 3, 22) ---- */

TSS2_RC Esys_PCR_Extend(ESYS_CONTEXT *esysContext, ESYS_TR pcrHandle, ESYS_TR shandle1,
                        ESYS_TR shandle2, ESYS_TR shandle3, const TPML_DIGEST_VALUES *digests)
{
  struct mcim_esys_cmd c = {
      .tr = {pcrHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PCR_Extend_Prepare)(esysContext->sys, c.h[0], digests));
  return r == TSS2_RC_SUCCESS ? SYS(PCR_Extend_Complete)(esysContext->sys) : r;
}

TSS2_RC Esys_PCR_Read(ESYS_CONTEXT *esysContext, ESYS_TR shandle1, ESYS_TR shandle2,
                      ESYS_TR shandle3, const TPML_PCR_SELECTION *pcrSelectionIn,
                      UINT32 *pcrUpdateCounter, TPML_PCR_SELECTION **pcrSelectionOut,
                      TPML_DIGEST **pcrValues)
{
  struct mcim_esys_cmd c = {.s = {shandle1, shandle2, shandle3}};
  TPML_PCR_SELECTION sel = {0};
  TPML_DIGEST values = {0};
  UINT32 counter = 0;
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PCR_Read_Prepare)(esysContext->sys, pcrSelectionIn));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(PCR_Read_Complete)(esysContext->sys, &counter, &sel, &values);
  if (r == TSS2_RC_SUCCESS && pcrUpdateCounter)
    *pcrUpdateCounter = counter;
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(pcrSelectionOut, sel), OUT(pcrValues, values)) : r;
}

TSS2_RC Esys_PCR_Reset(ESYS_CONTEXT *esysContext, ESYS_TR pcrHandle, ESYS_TR shandle1,
                       ESYS_TR shandle2, ESYS_TR shandle3)
{
  struct mcim_esys_cmd c = {
      .tr = {pcrHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(PCR_Reset_Prepare)(esysContext->sys, c.h[0]));
  return r == TSS2_RC_SUCCESS ? SYS(PCR_Reset_Complete)(esysContext->sys) : r;
}

/* ---- the TPM's resources (Part 3, 28 and 30) ---- */

TSS2_RC Esys_FlushContext(ESYS_CONTEXT *esysContext, ESYS_TR flushHandle)
{
  struct mcim_esys_cmd c = {.s = {ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE}};
  const struct mcim_esys_res *res;
  TPM2_HANDLE h = 0;
  TSS2_RC r;

  if (!esysContext)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  res = mcim_esys_res(esysContext, flushHandle);
  if (!res)
    return TSS2_ESYS_RC_BAD_TR;
  h = res->handle;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(FlushContext_Prepare)(esysContext->sys, h));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(FlushContext_Complete)(esysContext->sys);
  if (r == TSS2_RC_SUCCESS)
    mcim_esys_drop(esysContext, flushHandle);
  return r;
}

TSS2_RC Esys_EvictControl(ESYS_CONTEXT *esysContext, ESYS_TR auth, ESYS_TR objectHandle,
                          ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3,
                          TPMI_DH_PERSISTENT persistentHandle, ESYS_TR *newObjectHandle)
{
  struct mcim_esys_cmd c = {
      .tr = {auth, objectHandle}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  struct mcim_esys_res *obj;
  TSS2_RC r;

  if (!newObjectHandle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(EvictControl_Prepare)(esysContext->sys, c.h[0], c.h[1], persistentHandle));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(EvictControl_Complete)(esysContext->sys);
  if (r != TSS2_RC_SUCCESS)
    return r;
  /* a persistent object evicted: nothing new (its TR is the caller's to close); a transient
   * one made persistent: a TR for the copy, the same name and authValue */
  *newObjectHandle = ESYS_TR_NONE;
  if (c.h[1] >> TPM2_HR_SHIFT == TPM2_HT_PERSISTENT)
    return TSS2_RC_SUCCESS;
  obj = mcim_esys_res(esysContext, objectHandle);
  r = mcim_esys_new(esysContext, persistentHandle, obj ? &obj->name : NULL, newObjectHandle);
  if (r == TSS2_RC_SUCCESS && (obj = mcim_esys_res(esysContext, objectHandle)) != NULL)
    mcim_esys_res(esysContext, *newObjectHandle)->auth = obj->auth;
  return r;
}

TSS2_RC Esys_GetCapability(ESYS_CONTEXT *esysContext, ESYS_TR shandle1, ESYS_TR shandle2,
                           ESYS_TR shandle3, TPM2_CAP capability, UINT32 property,
                           UINT32 propertyCount, TPMI_YES_NO *moreData,
                           TPMS_CAPABILITY_DATA **capabilityData)
{
  struct mcim_esys_cmd c = {.s = {shandle1, shandle2, shandle3}};
  TPMS_CAPABILITY_DATA data = {0};
  TPMI_YES_NO more = 0;
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(GetCapability_Prepare)(esysContext->sys, capability, property,
                                           propertyCount));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(GetCapability_Complete)(esysContext->sys, &more, &data);
  if (r == TSS2_RC_SUCCESS && moreData)
    *moreData = more;
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(capabilityData, &data, sizeof(data)) : r;
}

/* ---- NV indices (Part 3, 31) ---- */

TSS2_RC Esys_NV_DefineSpace(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR shandle1,
                            ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_AUTH *auth,
                            const TPM2B_NV_PUBLIC *publicInfo, ESYS_TR *nvHandle)
{
  struct mcim_esys_cmd c = {
      .tr = {authHandle}, .n = 1, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  const TPM2B_AUTH no_auth = {0};
  TPM2B_NV_PUBLIC pub = {0};
  TPM2B_NAME name = {0};
  TSS2_RC r;

  if (!nvHandle || !publicInfo)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(NV_DefineSpace_Prepare)(esysContext->sys, c.h[0], auth ? auth : &no_auth,
                                            publicInfo));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(NV_DefineSpace_Complete)(esysContext->sys);
  /* its name as the TPM computes it, rather than our own hash of the public area */
  if (r == TSS2_RC_SUCCESS)
    r = nv_read_public(esysContext, publicInfo->nvPublic.nvIndex, &pub, &name);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_new(esysContext, publicInfo->nvPublic.nvIndex, &name, nvHandle);
  if (r == TSS2_RC_SUCCESS && auth)
    mcim_esys_res(esysContext, *nvHandle)->auth = *auth;
  return r;
}

TSS2_RC Esys_NV_UndefineSpace(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR nvIndex,
                              ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3)
{
  struct mcim_esys_cmd c = {
      .tr = {authHandle, nvIndex}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(NV_UndefineSpace_Prepare)(esysContext->sys, c.h[0], c.h[1]));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(NV_UndefineSpace_Complete)(esysContext->sys);
  if (r == TSS2_RC_SUCCESS)
    mcim_esys_drop(esysContext, nvIndex); /* gone from the TPM: ESAPI ends its TR too */
  return r;
}

TSS2_RC Esys_NV_ReadPublic(ESYS_CONTEXT *esysContext, ESYS_TR nvIndex, ESYS_TR shandle1,
                           ESYS_TR shandle2, ESYS_TR shandle3, TPM2B_NV_PUBLIC **nvPublic,
                           TPM2B_NAME **nvName)
{
  struct mcim_esys_cmd c = {.tr = {nvIndex}, .n = 1, .s = {shandle1, shandle2, shandle3}};
  struct mcim_esys_res *res;
  TPM2B_NV_PUBLIC pub = {0};
  TPM2B_NAME name = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(NV_ReadPublic_Prepare)(esysContext->sys, c.h[0]));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(NV_ReadPublic_Complete)(esysContext->sys, &pub, &name);
  if (r == TSS2_RC_SUCCESS)
    r = mcim_esys_check_nv_name(&pub.nvPublic, &name);
  if (r == TSS2_RC_SUCCESS && (res = mcim_esys_res(esysContext, nvIndex)) != NULL)
    res->name = name;
  return r == TSS2_RC_SUCCESS ? OUTPUTS(OUT(nvPublic, pub), OUT(nvName, name)) : r;
}

TSS2_RC Esys_NV_Increment(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR nvIndex,
                          ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3)
{
  struct mcim_esys_cmd c = {
      .tr = {authHandle, nvIndex}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c, SYS(NV_Increment_Prepare)(esysContext->sys, c.h[0], c.h[1]));
  return r == TSS2_RC_SUCCESS ? SYS(NV_Increment_Complete)(esysContext->sys) : r;
}

TSS2_RC Esys_NV_Read(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR nvIndex,
                     ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, UINT16 size,
                     UINT16 offset, TPM2B_MAX_NV_BUFFER **data)
{
  struct mcim_esys_cmd c = {
      .tr = {authHandle, nvIndex}, .n = 2, .nauth = 1, .s = {shandle1, shandle2, shandle3}};
  TPM2B_MAX_NV_BUFFER d = {0};
  TSS2_RC r;
  MCIM_ESYS_RUN(r, esysContext, &c,
                SYS(NV_Read_Prepare)(esysContext->sys, c.h[0], c.h[1], size, offset));
  if (r == TSS2_RC_SUCCESS)
    r = SYS(NV_Read_Complete)(esysContext->sys, &d);
  return r == TSS2_RC_SUCCESS ? mcim_esys_out(data, &d, sizeof(d)) : r;
}
