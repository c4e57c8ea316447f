/* The part of ESAPI (TCG's Enhanced System API) that src/tre/tpm/ uses, written here on
 * tpm2-tss's SAPI (libtss2-sys, libtss2-mu), with the agent's own OpenSSL.
 *
 * Why: tpm2-tss's ESAPI (libtss2-esys) needs the shared libcrypto.so.3. A TPM device's agent
 * then either mapped two OpenSSLs (its static one and ESAPI's: 11.7 MiB at its peak) or took
 * OpenSSL shared (m2me-tpm, now retired: 9.5 MiB), where issue 10 asks for under 8 MiB; with
 * this, the one static m2me runs a TPM device (docs/tre-tpm.md, "Memory"). SAPI has no
 * cryptography and no libcrypto: it marshals a command, sends it over the TCTI and unmarshals
 * the answer. What ESAPI added for us is small and is here: TRs that remember an object's
 * TPM handle, name and authValue; password authorisations; unbound, unsalted policy sessions
 * with the HMAC that TPM2_PolicyAuthValue asks for (TPM 2.0 Part 1, 19.6: cpHash, rpHash,
 * the rolling nonces); outputs in memory of their own, freed with Esys_Free. The functions
 * keep ESAPI's names and prototypes (tss2_esys.h declares them, so the compiler checks ours
 * against them), and nothing in mcim links or loads libtss2-esys (tpm_lib.c): two
 * definitions of Esys_Load in one process would be a bug.
 *
 * Not here, because nothing here uses it: HMAC sessions, bound or salted sessions, parameter
 * encryption, audit, ESAPI's asynchronous calls, serialised TRs. A command given such a
 * session is refused with TSS2_ESYS_RC_BAD_VALUE, never sent half-done.
 *
 * This file: the context, the TRs, the authorisation of one command. tpm_esys_cmd.c: the
 * commands, each a _Prepare, mcim_esys_execute and a _Complete. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/verdicts.h"
#include "mcim/util.h"
#include "tre/tpm/tpm_esys_priv.h"

#define SHA256_LEN 32
#define HMAC_BLOCK 64

/* ---- the context ---- */

TSS2_RC Esys_Initialize(ESYS_CONTEXT **esys_context, TSS2_TCTI_CONTEXT *tcti,
                        TSS2_ABI_VERSION *abiVersion)
{
  TSS2_ABI_VERSION abi = TSS2_ABI_VERSION_CURRENT;
  ESYS_CONTEXT *e = NULL;
  TSS2_RC r = TSS2_ESYS_RC_MEMORY;
  size_t size;

  if (!esys_context || !tcti)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  *esys_context = NULL;
  e = calloc(1, sizeof(*e));
  if (!e)
    goto cleanup;
  size = SYS(GetContextSize)(0);
  e->sys = calloc(1, size);
  if (!e->sys)
    goto cleanup;
  e->sys_size = size;
  r = SYS(Initialize)(e->sys, size, tcti, abiVersion ? abiVersion : &abi);
  if (r != TSS2_RC_SUCCESS) {
    free(e->sys);
    e->sys = NULL;
    goto cleanup;
  }
  *esys_context = e;
  e = NULL;
cleanup:
  if (e)
    Esys_Finalize(&e);
  return r;
}

void Esys_Finalize(ESYS_CONTEXT **context)
{
  ESYS_CONTEXT *e = context ? *context : NULL;
  if (!e)
    return;
  if (e->sys) {
    SYS(Finalize)(e->sys);
    OPENSSL_cleanse(e->sys, e->sys_size); /* the last answer: an ECDH Z, E_K's output */
  }
  free(e->sys);
  if (e->res)
    OPENSSL_cleanse(e->res, e->nres * sizeof(*e->res)); /* authValues */
  free(e->res);
  OPENSSL_cleanse(e, sizeof(*e));
  free(e);
  *context = NULL;
}

void Esys_Free(void *ptr)
{
  free(ptr);
}

/* ---- TRs ---- */

struct mcim_esys_res *mcim_esys_res(ESYS_CONTEXT *e, ESYS_TR tr)
{
  size_t i;
  if (!e || tr < MCIM_ESYS_TR_FIRST)
    return NULL;
  i = tr - MCIM_ESYS_TR_FIRST;
  return i < e->nres && e->res[i].used ? &e->res[i] : NULL;
}

TSS2_RC mcim_esys_new(ESYS_CONTEXT *e, TPM2_HANDLE h, const TPM2B_NAME *name, ESYS_TR *tr)
{
  size_t i;
  for (i = 0; i < e->nres && e->res[i].used; i++)
    ;
  if (i == e->nres) {
    size_t n = e->nres ? 2 * e->nres : 8;
    struct mcim_esys_res *grown;
    if (n > 0xefffu) /* TRs stay below ESYS_TR_NONE's range of constants, 0xfff... */
      return TSS2_ESYS_RC_MEMORY;
    grown = calloc(n, sizeof(*grown));
    if (!grown)
      return TSS2_ESYS_RC_MEMORY;
    if (e->res) {
      memcpy(grown, e->res, e->nres * sizeof(*grown));
      OPENSSL_cleanse(e->res, e->nres * sizeof(*grown));
      free(e->res);
    }
    e->res = grown;
    e->nres = n;
  }
  memset(&e->res[i], 0, sizeof(e->res[i]));
  e->res[i].used = true;
  e->res[i].handle = h;
  if (name)
    e->res[i].name = *name;
  *tr = (ESYS_TR)(MCIM_ESYS_TR_FIRST + i);
  return TSS2_RC_SUCCESS;
}

void mcim_esys_drop(ESYS_CONTEXT *e, ESYS_TR tr)
{
  struct mcim_esys_res *r = mcim_esys_res(e, tr);
  if (r)
    OPENSSL_cleanse(r, sizeof(*r));
}

/* A hierarchy's TR: its handle and where its authValue is kept. */
static bool hierarchy(ESYS_CONTEXT *e, ESYS_TR tr, TPM2_HANDLE *h, TPM2B_AUTH **auth)
{
  switch (tr) {
  case ESYS_TR_RH_OWNER:
    *h = TPM2_RH_OWNER;
    *auth = &e->owner;
    return true;
  case ESYS_TR_RH_ENDORSEMENT:
    *h = TPM2_RH_ENDORSEMENT;
    *auth = &e->endorsement;
    return true;
  case ESYS_TR_RH_LOCKOUT:
    *h = TPM2_RH_LOCKOUT;
    *auth = &e->lockout;
    return true;
  case ESYS_TR_RH_PLATFORM:
    *h = TPM2_RH_PLATFORM;
    *auth = &e->platform;
    return true;
  case ESYS_TR_RH_NULL:
    *h = TPM2_RH_NULL;
    *auth = NULL;
    return true;
  default:
    return false;
  }
}

/* The TPM handle, name and authValue (NULL: the empty one) of any TR a command may name. */
static TSS2_RC resolve(ESYS_CONTEXT *e, ESYS_TR tr, TPM2_HANDLE *h, TPM2B_NAME *name,
                       const TPM2B_AUTH **auth)
{
  struct mcim_esys_res *r;
  TPM2B_AUTH *a = NULL;

  *auth = NULL;
  if (tr <= ESYS_TR_PCR31 || hierarchy(e, tr, h, &a)) {
    if (tr <= ESYS_TR_PCR31)
      *h = TPM2_PCR_FIRST + tr;
    /* a PCR's or a permanent handle's name is the handle itself (Part 1, 16) */
    name->size = 4;
    name->name[0] = (uint8_t)(*h >> 24);
    name->name[1] = (uint8_t)(*h >> 16);
    name->name[2] = (uint8_t)(*h >> 8);
    name->name[3] = (uint8_t)*h;
    *auth = a;
    return TSS2_RC_SUCCESS;
  }
  r = mcim_esys_res(e, tr);
  if (!r)
    return TSS2_ESYS_RC_BAD_TR;
  *h = r->handle;
  *name = r->name;
  *auth = &r->auth;
  return TSS2_RC_SUCCESS;
}

TSS2_RC Esys_TR_SetAuth(ESYS_CONTEXT *esysContext, ESYS_TR handle, TPM2B_AUTH const *authValue)
{
  struct mcim_esys_res *r;
  TPM2B_AUTH *a = NULL;
  TPM2_HANDLE h;

  if (!esysContext)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  if (authValue && authValue->size > sizeof(authValue->buffer))
    return TSS2_ESYS_RC_BAD_VALUE;
  if (!hierarchy(esysContext, handle, &h, &a)) {
    r = mcim_esys_res(esysContext, handle);
    if (!r || r->session)
      return TSS2_ESYS_RC_BAD_TR;
    a = &r->auth;
  }
  if (!a)
    return TSS2_ESYS_RC_BAD_TR;
  OPENSSL_cleanse(a, sizeof(*a));
  if (authValue)
    *a = *authValue;
  return TSS2_RC_SUCCESS;
}

TSS2_RC Esys_TR_GetTpmHandle(ESYS_CONTEXT *esys_context, ESYS_TR esys_handle,
                             TPM2_HANDLE *tpm_handle)
{
  TPM2B_NAME name;
  const TPM2B_AUTH *auth;
  if (!esys_context || !tpm_handle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  return resolve(esys_context, esys_handle, tpm_handle, &name, &auth);
}

TSS2_RC Esys_TR_Close(ESYS_CONTEXT *esys_context, ESYS_TR *rsrc_handle)
{
  if (!esys_context || !rsrc_handle)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  if (!mcim_esys_res(esys_context, *rsrc_handle))
    return TSS2_ESYS_RC_BAD_TR;
  mcim_esys_drop(esys_context, *rsrc_handle);
  *rsrc_handle = ESYS_TR_NONE;
  return TSS2_RC_SUCCESS;
}

/* ---- names ---- */

static TSS2_RC check_name(TPMI_ALG_HASH alg, const uint8_t *area, size_t len,
                          const TPM2B_NAME *name)
{
  uint8_t h[EVP_MAX_MD_SIZE];
  unsigned int hlen = 0;
  const EVP_MD *md = alg == TPM2_ALG_SHA256   ? mcim_sha256()
                     : alg == TPM2_ALG_SHA384 ? EVP_sha384() /* an ECC EK's (P-384) */
                     : alg == TPM2_ALG_SHA512 ? EVP_sha512()
                     : alg == TPM2_ALG_SHA1   ? EVP_sha1()
                                              : NULL;
  if (!md)
    return TSS2_ESYS_RC_MALFORMED_RESPONSE;
  if (EVP_Digest(area, len, h, &hlen, md, NULL) != 1)
    return TSS2_ESYS_RC_GENERAL_FAILURE;
  if (name->size != 2 + hlen || name->name[0] != (uint8_t)(alg >> 8) ||
      name->name[1] != (uint8_t)alg || memcmp(h, name->name + 2, hlen) != 0)
    return TSS2_ESYS_RC_MALFORMED_RESPONSE;
  return TSS2_RC_SUCCESS;
}

TSS2_RC mcim_esys_check_name(const TPMT_PUBLIC *pub, const TPM2B_NAME *name)
{
  uint8_t area[sizeof(TPMT_PUBLIC)];
  size_t len = 0;
  TSS2_RC r = Tss2_MU_TPMT_PUBLIC_Marshal(pub, area, sizeof(area), &len);
  return r == TSS2_RC_SUCCESS ? check_name(pub->nameAlg, area, len, name) : r;
}

TSS2_RC mcim_esys_check_nv_name(const TPMS_NV_PUBLIC *pub, const TPM2B_NAME *name)
{
  uint8_t area[sizeof(TPMS_NV_PUBLIC)];
  size_t len = 0;
  TSS2_RC r = Tss2_MU_TPMS_NV_PUBLIC_Marshal(pub, area, sizeof(area), &len);
  return r == TSS2_RC_SUCCESS ? check_name(pub->nameAlg, area, len, name) : r;
}

/* ---- one command ---- */

TSS2_RC mcim_esys_begin(ESYS_CONTEXT *e, struct mcim_esys_cmd *c)
{
  if (!e || !e->sys)
    return TSS2_ESYS_RC_BAD_REFERENCE;
  for (size_t i = 0; i < c->n; i++) {
    TPM2B_NAME name;
    const TPM2B_AUTH *auth;
    TSS2_RC r = resolve(e, c->tr[i], &c->h[i], &name, &auth);
    if (r != TSS2_RC_SUCCESS)
      return r;
  }
  for (size_t i = 0; i < 3; i++) {
    struct mcim_esys_res *s = mcim_esys_res(e, c->s[i]);
    if (i >= c->nauth) {
      if (c->s[i] != ESYS_TR_NONE) /* an audit or encryption session: not done here */
        return TSS2_ESYS_RC_BAD_VALUE;
    } else if (c->s[i] == ESYS_TR_NONE) { /* an authorisation the command needs */
      return TSS2_ESYS_RC_BAD_VALUE;
    } else if (c->s[i] != ESYS_TR_PASSWORD && (!s || !s->session)) {
      return TSS2_ESYS_RC_BAD_TR;
    }
  }
  return TSS2_RC_SUCCESS;
}

bool mcim_esys_again(TSS2_RC r, int *tries)
{
  if (r != TPM2_RC_RETRY && r != TPM2_RC_YIELDED && r != TPM2_RC_TESTING)
    return false;
  return ++*tries < 5;
}

TSS2_RC mcim_esys_out(void *out, const void *v, size_t n)
{
  void *copy;
  if (!out)
    return TSS2_RC_SUCCESS;
  copy = malloc(n);
  if (!copy)
    return TSS2_ESYS_RC_MEMORY;
  memcpy(copy, v, n);
  *(void **)out = copy;
  return TSS2_RC_SUCCESS;
}

/* SHA-256 over the pieces, in order */
static bool sha256(const uint8_t *const *part, const size_t *len, size_t n, uint8_t *out)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestInit_ex(ctx, mcim_sha256(), NULL) == 1;
  for (size_t i = 0; ok && i < n; i++)
    ok = EVP_DigestUpdate(ctx, part[i], len[i]) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

/* HMAC-SHA-256 (RFC 2104) over the pieces, with the key the session uses: its session key
 * (empty: unbound and unsalted) then the entity's authValue without its trailing zero
 * octets (Part 1, 19.6.5), which may be empty too. (With an empty session key and an
 * authValue of at most 64 octets, HMAC's own zero padding makes the stripping change nothing;
 * it is done as the specification says, for whoever adds bound or salted sessions.) */
static bool session_hmac(const TPM2B_AUTH *auth, const uint8_t *const *part, const size_t *len,
                         size_t n, uint8_t *out)
{
  uint8_t key[HMAC_BLOCK] = {0}, pad[HMAC_BLOCK], inner[SHA256_LEN];
  const uint8_t *parts[8];
  size_t lens[8], klen = auth ? auth->size : 0;
  bool ok;

  if (n + 1 > sizeof(parts) / sizeof(parts[0]))
    return false;
  while (klen > 0 && auth->buffer[klen - 1] == 0)
    klen--;
  if (klen > HMAC_BLOCK) { /* a TPM2B_AUTH is at most 64 octets: never */
    return false;
  }
  if (klen)
    memcpy(key, auth->buffer, klen);
  for (size_t i = 0; i < HMAC_BLOCK; i++)
    pad[i] = key[i] ^ 0x36;
  parts[0] = pad;
  lens[0] = HMAC_BLOCK;
  for (size_t i = 0; i < n; i++) {
    parts[i + 1] = part[i];
    lens[i + 1] = len[i];
  }
  ok = sha256(parts, lens, n + 1, inner);
  for (size_t i = 0; i < HMAC_BLOCK; i++)
    pad[i] = key[i] ^ 0x5c;
  parts[1] = inner;
  lens[1] = SHA256_LEN;
  ok = ok && sha256(parts, lens, 2, out);
  OPENSSL_cleanse(key, sizeof(key));
  OPENSSL_cleanse(pad, sizeof(pad));
  OPENSSL_cleanse(inner, sizeof(inner));
  return ok;
}

/* cpHash (Part 1, 18.7): H(commandCode || name of each handle || the parameters) */
static TSS2_RC cp_hash(ESYS_CONTEXT *e, const struct mcim_esys_cmd *c, const uint8_t cc[4],
                       uint8_t *out)
{
  const uint8_t *part[5];
  size_t len[5], n = 0, cp_len = 0;
  const uint8_t *cp = NULL;
  TPM2B_NAME name[3];
  TSS2_RC r = SYS(GetCpBuffer)(e->sys, &cp_len, &cp);

  if (r != TSS2_RC_SUCCESS)
    return r;
  part[n] = cc;
  len[n++] = 4;
  for (size_t i = 0; i < c->n; i++) {
    TPM2_HANDLE h;
    const TPM2B_AUTH *auth;
    r = resolve(e, c->tr[i], &h, &name[i], &auth);
    if (r != TSS2_RC_SUCCESS)
      return r;
    part[n] = name[i].name;
    len[n++] = name[i].size;
  }
  part[n] = cp;
  len[n++] = cp_len;
  return sha256(part, len, n, out) ? TSS2_RC_SUCCESS : TSS2_ESYS_RC_GENERAL_FAILURE;
}

/* One session's authorisation of a command (Part 1, 19.6.4-19.6.5): a new nonce of ours, and
 * the HMAC over cpHash, the two nonces and the attributes. A policy session's HMAC is checked
 * by the TPM only once TPM2_PolicyAuthValue made the authValue needed (Part 1, 19.7.1); it is
 * computed alike either way, with the key it has then. */
static TSS2_RC session_auth(struct mcim_esys_res *s, const uint8_t *cp, const TPM2B_AUTH *auth,
                            TPMS_AUTH_COMMAND *a)
{
  s->nonce_caller.size = SHA256_LEN;
  if (mcim_random(s->nonce_caller.buffer, SHA256_LEN) != MCIM_OK)
    return TSS2_ESYS_RC_GENERAL_FAILURE;
  a->sessionHandle = s->handle;
  a->nonce = s->nonce_caller;
  a->sessionAttributes = s->attrs;
  const uint8_t *part[4] = {cp, s->nonce_caller.buffer, s->nonce_tpm.buffer,
                            &a->sessionAttributes};
  size_t len[4] = {SHA256_LEN, s->nonce_caller.size, s->nonce_tpm.size, 1};
  a->hmac.size = SHA256_LEN;
  return session_hmac(s->auth_value_needed ? auth : NULL, part, len, 4, a->hmac.buffer)
             ? TSS2_RC_SUCCESS
             : TSS2_ESYS_RC_GENERAL_FAILURE;
}

/* The TPM's answer for one session (Part 1, 19.6.6): its new nonce kept, and its HMAC over
 * rpHash, the nonces and the attributes checked with the command's key, in constant time. */
static TSS2_RC session_check(struct mcim_esys_res *s, const uint8_t *rp, const TPM2B_AUTH *auth,
                             const TPMS_AUTH_RESPONSE *a)
{
  uint8_t want[SHA256_LEN];
  bool ok;

  if (a->nonce.size > sizeof(s->nonce_tpm.buffer))
    return TSS2_ESYS_RC_MALFORMED_RESPONSE;
  s->nonce_tpm = a->nonce;
  const uint8_t *part[4] = {rp, s->nonce_tpm.buffer, s->nonce_caller.buffer,
                            &a->sessionAttributes};
  size_t len[4] = {SHA256_LEN, s->nonce_tpm.size, s->nonce_caller.size, 1};
  if (!session_hmac(s->auth_value_needed ? auth : NULL, part, len, 4, want))
    return TSS2_ESYS_RC_GENERAL_FAILURE;
  ok = a->hmac.size == SHA256_LEN && CRYPTO_memcmp(a->hmac.buffer, want, SHA256_LEN) == 0;
  return ok ? TSS2_RC_SUCCESS : TSS2_ESYS_RC_RSP_AUTH_FAILED;
}

/* rpHash (Part 1, 18.8): H(responseCode, which is success here || commandCode || the
 * response's parameters) */
static TSS2_RC rp_hash(ESYS_CONTEXT *e, const uint8_t cc[4], uint8_t *out)
{
  static const uint8_t success[4] = {0, 0, 0, 0};
  const uint8_t *rp = NULL;
  size_t rp_len = 0;
  TSS2_RC r = SYS(GetRpBuffer)(e->sys, &rp_len, &rp);
  if (r != TSS2_RC_SUCCESS)
    return r;
  const uint8_t *part[3] = {success, cc, rp};
  size_t len[3] = {4, 4, rp_len};
  return sha256(part, len, 3, out) ? TSS2_RC_SUCCESS : TSS2_ESYS_RC_GENERAL_FAILURE;
}

TSS2_RC mcim_esys_execute(ESYS_CONTEXT *e, struct mcim_esys_cmd *c)
{
  TSS2L_SYS_AUTH_COMMAND cmd = {.count = (uint16_t)c->nauth};
  TSS2L_SYS_AUTH_RESPONSE rsp = {0};
  uint8_t cc[4], cp[SHA256_LEN], rp[SHA256_LEN];
  const TPM2B_AUTH *auth[3] = {NULL, NULL, NULL};
  bool have_cp = false, have_rp = false;
  TSS2_RC r = SYS(GetCommandCode)(e->sys, cc);

  for (size_t i = 0; r == TSS2_RC_SUCCESS && i < c->nauth; i++) {
    struct mcim_esys_res *s = mcim_esys_res(e, c->s[i]);
    TPM2B_NAME name;
    TPM2_HANDLE h;

    r = resolve(e, c->tr[i], &h, &name, &auth[i]);
    if (r != TSS2_RC_SUCCESS)
      break;
    if (c->s[i] == ESYS_TR_PASSWORD) {
      cmd.auths[i].sessionHandle = TPM2_RH_PW;
      if (auth[i])
        cmd.auths[i].hmac = *auth[i]; /* the password itself: the TPM compares (19.8.4) */
      continue;
    }
    if (!s || !s->session) {
      r = TSS2_ESYS_RC_BAD_TR;
      break;
    }
    if (!have_cp && (r = cp_hash(e, c, cc, cp)) == TSS2_RC_SUCCESS)
      have_cp = true;
    if (r == TSS2_RC_SUCCESS)
      r = session_auth(s, cp, auth[i], &cmd.auths[i]);
  }
  if (r == TSS2_RC_SUCCESS && c->nauth)
    r = SYS(SetCmdAuths)(e->sys, &cmd);
  if (r == TSS2_RC_SUCCESS)
    r = SYS(Execute)(e->sys);
  OPENSSL_cleanse(&cmd, sizeof(cmd)); /* passwords */
  if (r != TSS2_RC_SUCCESS || !c->nauth)
    return r;
  r = SYS(GetRspAuths)(e->sys, &rsp);
  for (size_t i = 0; r == TSS2_RC_SUCCESS && i < c->nauth; i++) {
    struct mcim_esys_res *s = mcim_esys_res(e, c->s[i]);
    if (c->s[i] == ESYS_TR_PASSWORD || !s)
      continue;
    if (!have_rp && (r = rp_hash(e, cc, rp)) == TSS2_RC_SUCCESS)
      have_rp = true;
    if (r == TSS2_RC_SUCCESS)
      r = session_check(s, rp, auth[i], &rsp.auths[i]);
    if (r != TSS2_RC_SUCCESS)
      break;
    /* the TPM reset the policy (or ended the session) once it authorised the command */
    s->auth_value_needed = false;
    if (!(s->attrs & TPMA_SESSION_CONTINUESESSION))
      mcim_esys_drop(e, c->s[i]);
  }
  return r;
}
