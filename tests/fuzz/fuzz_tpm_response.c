/* The TPM's answers as the TPM TRE takes them: our ESAPI subset (src/tre/tpm/tpm_esys.c,
 * tpm_esys_cmd.c) under a TCTI of the target's own whose receive() hands out the input's bytes
 * as the TPM's responses. A TPM's answers cross a bus (an interposer, a compromised resource
 * manager): they are peer input, and must never crash the process. No TPM needed.
 *
 * What runs: the Esys_* functions the TRE calls (src/tre/tpm/: tpm_primary.c, tpm_keys.c,
 * tpm_slot.c, tpm_aes.c, tpm_nv.c, tpm_quote.c, tpm_enrol.c), each with SAPI's unmarshalling
 * of the answer (tpm2-tss's libtss2-sys, loaded as the TRE loads it) and what we do with it:
 * the response HMAC of a policy session checked (Part 1, 19.6), the TPM's names checked
 * against the public areas it returned (ReadPublic, CreatePrimary, NV_ReadPublic) and
 * against the one we loaded (Load), the TRs made and ended, the outputs copied out (and
 * freed here with Esys_Free), a failed CreatePrimary's or Load's object flushed (which takes
 * the next response). The target aborts if Esys_TR_GetName refuses an NV index's answer but
 * takes the name it brought (get_name: the TR's name is what later HMACs bind); it did, on
 * what its first 80 s of fuzzing had found (fixed in tpm_esys_cmd.c; regressions/).
 *
 * Input: one byte N (N % 16 + 1 operations), N operation bytes, then the responses, each two
 * bytes of length (big-endian) and that many bytes; receive() takes the next one whenever
 * SAPI asks (a command the TPM said RETRY to is sent again: one more), and fails with
 * TSS2_TCTI_RC_IO_ERROR once they are spent. An operation byte: bits 0-4 the command
 * (modulo OPS, the table in run_op), bit 5 the second-newest object instead of the newest
 * (PolicyCommandCode: the code's low bit; StartAuthSession: a trial session; GetCapability:
 * the PCR banks; PolicyGetDigest: ActivateCredential instead), bit 6 the newest policy
 * session authorises the command instead of a password (FlushContext: the session is
 * flushed; PolicyCommandCode: the code's high bit), bit 7 the target puts the right HMAC
 * into the response of a command a policy session authorised (it knows the nonces and the
 * key's authValue, as the TPM would: fix_hmac), so that what follows the HMAC check (the
 * _Complete, the nonces, the TRs) is reached with mutated parameters, not only the refusal.
 * FUZZ_TPM_TRACE=1 prints what each operation came to.
 * Seeds: tests/fuzz/corpus/fuzz_tpm_response/, the answers of a throw-away swtpm to the same
 * operations (`fuzz-seedgen corpus`, through this file's recording TCTI: tpm_response_record):
 * keys created, loaded and used with passwords and through policy sessions, NV counters,
 * PCRs, a quote, a certification, a persistent key.
 *
 * Without tpm2-tss (MCIM_TPM=OFF) the target is built and does nothing. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

#ifdef MCIM_HAVE_TPM
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tre/tpm/tpm.h"
#include "tre/tpm/tpm_esys_priv.h"
#include "tre/tpm/tpm_lib.h"

#define MAX_OPS 16
#define MAX_OBJS 16
#define MAX_SESSIONS 4
#define CMD_MAX 4096
#define PERSISTENT 0x81000101u
#define PERSISTENT_NEW 0x81000102u
#define NV_INDEX 0x01800101u
#define PERSISTENT_FIRST 0x81000000u /* TPM2_PERSISTENT_FIRST shifts an int: UBSan */

/* The objects' authValue: not a secret, a fixture value the HMAC fix-up needs too. */
static const TPM2B_AUTH key_auth = {.size = 8, .buffer = "fuzzkey"};

struct fuzz_tcti {
  TSS2_TCTI_CONTEXT_COMMON_V2 common;
  const uint8_t *data; /* the responses left */
  size_t left;
  TSS2_TCTI_CONTEXT *inner; /* recording: the real TPM's TCTI, and what it answered */
  uint8_t *rec;
  size_t rec_len, rec_cap;
  uint8_t cmd[CMD_MAX]; /* the last command sent */
  size_t cmd_len;
  bool fix_hmac;
  ESYS_CONTEXT *esys;
};

static uint32_t be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}

/* The handles of a command and of its response, for the commands a policy session may
 * authorise here (Part 3); false for the others. */
static bool handle_counts(uint32_t cc, size_t *cmd, size_t *rsp)
{
  switch (cc) {
  case TPM2_CC_Load:
    *cmd = 1, *rsp = 1;
    return true;
  case TPM2_CC_Sign:
  case TPM2_CC_ECDH_ZGen:
  case TPM2_CC_EncryptDecrypt2:
  case TPM2_CC_Quote:
  case TPM2_CC_Import:
  case TPM2_CC_Create:
    *cmd = 1, *rsp = 0;
    return true;
  case TPM2_CC_Certify:
  case TPM2_CC_ActivateCredential:
  case TPM2_CC_NV_Read:
  case TPM2_CC_NV_Increment:
    *cmd = 2, *rsp = 0;
    return true;
  default:
    return false;
  }
}

/* A session and the entity it authorises, by their TPM handles, in our context. */
static struct mcim_esys_res *res_by_handle(ESYS_CONTEXT *e, TPM2_HANDLE h, bool session)
{
  for (size_t i = 0; e && i < e->nres; i++)
    if (e->res[i].used && e->res[i].handle == h && e->res[i].session == session)
      return &e->res[i];
  return NULL;
}

/* Put the HMAC the TPM would have computed into the response of a command that one policy
 * session authorised (Part 1, 19.6.6): key the entity's authValue if the session had
 * PolicyAuthValue, else empty; over rpHash, nonceTPM, nonceCaller and the attributes. */
static void fix_hmac(struct fuzz_tcti *t, uint8_t *rsp, size_t len)
{
  const uint8_t *c = t->cmd;
  size_t ch, rh, off;
  if (t->cmd_len < 10 || be16(c) != TPM2_ST_SESSIONS || len < 10 ||
      be16(rsp) != TPM2_ST_SESSIONS || be32(rsp + 6) != 0)
    return;
  uint32_t cc = be32(c + 6);
  if (!handle_counts(cc, &ch, &rh))
    return;
  /* the command: its first handle, then the first session: handle, nonceCaller */
  off = 10 + 4 * ch + 4;
  if (t->cmd_len < off + 4 + 2)
    return;
  TPM2_HANDLE entity = be32(c + 10), sh = be32(c + off);
  size_t nc_len = be16(c + off + 4);
  const uint8_t *nc = c + off + 6;
  if (t->cmd_len < off + 6 + nc_len)
    return;
  struct mcim_esys_res *s = res_by_handle(t->esys, sh, true);
  const struct mcim_esys_res *obj = res_by_handle(t->esys, entity, false);
  if (!s)
    return;
  /* the response: handles, parameterSize, parameters, then nonceTPM, attributes, HMAC */
  off = 10 + 4 * rh;
  if (len < off + 4)
    return;
  size_t plen = be32(rsp + off);
  const uint8_t *params = rsp + off + 4;
  off += 4;
  if (plen > len - off)
    return;
  off += plen;
  if (len < off + 2)
    return;
  size_t nt_len = be16(rsp + off);
  const uint8_t *nt = rsp + off + 2;
  off += 2 + nt_len;
  if (len < off + 1 + 2 + 32 || be16(rsp + off + 1) != 32)
    return;
  uint8_t attrs = rsp[off];
  uint8_t *hmac = rsp + off + 3;

  uint8_t rp[32], ccb[4] = {c[6], c[7], c[8], c[9]}, zero[4] = {0};
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
            EVP_DigestUpdate(md, zero, 4) == 1 && EVP_DigestUpdate(md, ccb, 4) == 1 &&
            EVP_DigestUpdate(md, params, plen) == 1 && EVP_DigestFinal_ex(md, rp, NULL) == 1;
  EVP_MD_CTX_free(md);
  if (!ok)
    return;
  uint8_t key[64] = {0};
  size_t klen = 0;
  if (s->auth_value_needed && obj) {
    klen = obj->auth.size <= sizeof(key) ? obj->auth.size : 0;
    memcpy(key, obj->auth.buffer, klen);
    while (klen && key[klen - 1] == 0)
      klen--;
  }
  uint8_t msg[32 + 2 * sizeof(TPMU_HA) + 1];
  size_t n = 0;
  if (nt_len > sizeof(TPMU_HA) || nc_len > sizeof(TPMU_HA))
    return;
  memcpy(msg, rp, 32), n = 32;
  memcpy(msg + n, nt, nt_len), n += nt_len;
  memcpy(msg + n, nc, nc_len), n += nc_len;
  msg[n++] = attrs;
  unsigned int hl = 0;
  /* an empty key: HMAC's zero padding, any non-NULL pointer */
  (void)HMAC(EVP_sha256(), key, (int)klen, msg, n, hmac, &hl);
}

static TSS2_RC tcti_transmit(TSS2_TCTI_CONTEXT *ctx, size_t size, const uint8_t *command)
{
  struct fuzz_tcti *t = (struct fuzz_tcti *)ctx;
  t->cmd_len = size <= sizeof(t->cmd) ? size : 0;
  if (t->cmd_len)
    memcpy(t->cmd, command, size);
  return t->inner ? Tss2_Tcti_Transmit(t->inner, size, command) : TSS2_RC_SUCCESS;
}

static void record(struct fuzz_tcti *t, const uint8_t *p, size_t n)
{
  if (t->rec_len + 2 + n > t->rec_cap) {
    size_t cap = (t->rec_len + 2 + n) * 2;
    uint8_t *b = realloc(t->rec, cap);
    if (!b)
      fuzz_die("out of memory");
    t->rec = b;
    t->rec_cap = cap;
  }
  t->rec[t->rec_len++] = (uint8_t)(n >> 8);
  t->rec[t->rec_len++] = (uint8_t)n;
  memcpy(t->rec + t->rec_len, p, n);
  t->rec_len += n;
}

static TSS2_RC tcti_receive(TSS2_TCTI_CONTEXT *ctx, size_t *size, uint8_t *response,
                            int32_t timeout)
{
  struct fuzz_tcti *t = (struct fuzz_tcti *)ctx;
  if (!size)
    return TSS2_TCTI_RC_BAD_REFERENCE;
  if (t->inner) {
    TSS2_RC r = Tss2_Tcti_Receive(t->inner, size, response, timeout);
    if (r == TSS2_RC_SUCCESS && response)
      record(t, response, *size);
    return r;
  }
  /* never TSS2_TCTI_RC_TRY_AGAIN: SAPI would ask again forever */
  if (t->left < 2)
    return TSS2_TCTI_RC_IO_ERROR;
  size_t n = be16(t->data);
  if (n > t->left - 2)
    n = t->left - 2;
  if (!response) { /* a caller asking for the size first */
    *size = n;
    return TSS2_RC_SUCCESS;
  }
  if (n > *size)
    return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
  memcpy(response, t->data + 2, n);
  *size = n;
  t->data += 2 + n;
  t->left -= 2 + n;
  if (t->fix_hmac)
    fix_hmac(t, response, n);
  return TSS2_RC_SUCCESS;
}

static void tcti_init(struct fuzz_tcti *t)
{
  memset(t, 0, sizeof(*t));
  t->common.v1.magic = 0x66757a7a74706d72ULL; /* "fuzztpmr" */
  t->common.v1.version = 2;
  t->common.v1.transmit = tcti_transmit;
  t->common.v1.receive = tcti_receive;
}

/* ---- the operations ---- */

struct state {
  ESYS_CONTEXT *e;
  struct fuzz_tcti *tcti;
  ESYS_TR obj[MAX_OBJS];
  size_t nobj;
  ESYS_TR sess[MAX_SESSIONS];
  size_t nsess;
  TPM2B_PUBLIC *pub; /* the last Create's, for Load and Import */
  TPM2B_PRIVATE *priv;
};

static void keep(ESYS_TR *list, size_t *n, size_t max, ESYS_TR tr)
{
  if (tr == ESYS_TR_NONE)
    return;
  if (*n == max) {
    memmove(list, list + 1, (max - 1) * sizeof(*list));
    (*n)--;
  }
  list[(*n)++] = tr;
}

/* A TR ended (flushed, closed, undefined): out of the list, as the TRE forgets it. */
static void forget(ESYS_TR *list, size_t *n, ESYS_TR tr)
{
  for (size_t i = 0; i < *n; i++)
    if (list[i] == tr) {
      memmove(list + i, list + i + 1, (*n - i - 1) * sizeof(*list));
      (*n)--;
      return;
    }
}

static ESYS_TR newest(const ESYS_TR *list, size_t n, bool second)
{
  if (n == 0)
    return ESYS_TR_NONE;
  return second && n >= 2 ? list[n - 2] : list[n - 1];
}

static void put32(uint8_t *p, uint32_t v)
{
  for (int j = 0; j < 4; j++)
    p[j] = (uint8_t)(v >> (24 - 8 * j));
}

/* PolicyAuthValue then PolicyCommandCode(cc), from an empty digest (tpm_slot.c's branch). */
static void branch(TPM2_CC cc, uint8_t out[32])
{
  uint8_t b[32 + 8] = {0};
  unsigned int n = 0;
  put32(b + 32, TPM2_CC_PolicyAuthValue);
  if (EVP_Digest(b, 36, out, &n, EVP_sha256(), NULL) != 1)
    fuzz_die("policy digest");
  memcpy(b, out, 32);
  put32(b + 32, TPM2_CC_PolicyCommandCode);
  put32(b + 36, cc);
  if (EVP_Digest(b, 40, out, &n, EVP_sha256(), NULL) != 1)
    fuzz_die("policy digest");
}

/* The commands a key's policy allows, one branch each of a PolicyOR. */
static const TPM2_CC policy_cc[] = {TPM2_CC_Sign, TPM2_CC_ECDH_ZGen, TPM2_CC_EncryptDecrypt2,
                                    TPM2_CC_Load};
#define POLICY_CCS (sizeof(policy_cc) / sizeof(policy_cc[0]))
static TPML_DIGEST branches;
static TPM2B_DIGEST key_policy;
static bool trace;

static void policy_init(void)
{
  /* PolicyOR: H(the digest it resets to zero || TPM_CC_PolicyOR || the branches) */
  uint8_t b[32 + 4 + 32 * POLICY_CCS] = {0};
  unsigned int n = 0;
  branches.count = POLICY_CCS;
  put32(b + 32, TPM2_CC_PolicyOR);
  for (size_t i = 0; i < POLICY_CCS; i++) {
    branches.digests[i].size = 32;
    branch(policy_cc[i], branches.digests[i].buffer);
    memcpy(b + 36 + 32 * i, branches.digests[i].buffer, 32);
  }
  if (EVP_Digest(b, sizeof(b), key_policy.buffer, &n, EVP_sha256(), NULL) != 1)
    fuzz_die("policy digest");
  key_policy.size = 32;
}

/* The templates: 0 a storage primary (as the TRE's, tpm_primary.c), 1 an ES256 signing key,
 * 2 an ECDH key, 3 an AES-128 key (tpm_aes.c); the last three with userWithAuth and the
 * policy above. */
static void template_of(int kind, TPM2B_PUBLIC *t)
{
  memset(t, 0, sizeof(*t));
  TPMT_PUBLIC *p = &t->publicArea;
  p->nameAlg = TPM2_ALG_SHA256;
  p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                        TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH;
  if (kind != 0)
    p->authPolicy = key_policy;
  if (kind == 3) {
    p->type = TPM2_ALG_SYMCIPHER;
    p->objectAttributes |= TPMA_OBJECT_DECRYPT | TPMA_OBJECT_SIGN_ENCRYPT;
    p->parameters.symDetail.sym.algorithm = TPM2_ALG_AES;
    p->parameters.symDetail.sym.keyBits.aes = 128;
    p->parameters.symDetail.sym.mode.aes = TPM2_ALG_NULL;
    return;
  }
  p->type = TPM2_ALG_ECC;
  p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  switch (kind) {
  case 0:
    p->objectAttributes |= TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    p->parameters.eccDetail.symmetric.keyBits.aes = 128;
    p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    break;
  case 1:
    p->objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
    p->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    p->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    break;
  default:
    p->objectAttributes |= TPMA_OBJECT_DECRYPT;
    break;
  }
}

/* The generator of P-256: a point on the curve for ECDH_ZGen. */
static const uint8_t p256_gx[32] = {
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96};
static const uint8_t p256_gy[32] = {
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5};

enum {
  OP_CREATE_PRIMARY,
  OP_CREATE_SIGN,
  OP_CREATE_ECDH,
  OP_CREATE_AES,
  OP_LOAD,
  OP_FROM_PERSISTENT,
  OP_READ_PUBLIC,
  OP_SIGN,
  OP_ECDH_ZGEN,
  OP_ENCRYPT_DECRYPT2,
  OP_START_SESSION,
  OP_POLICY_AUTH_VALUE,
  OP_POLICY_COMMAND_CODE,
  OP_POLICY_OR,
  OP_POLICY_GET_DIGEST,
  OP_FLUSH,
  OP_NV_DEFINE,
  OP_NV_FROM_INDEX,
  OP_NV_INCREMENT,
  OP_NV_READ,
  OP_NV_READ_PUBLIC,
  OP_NV_UNDEFINE,
  OP_GET_CAPABILITY,
  OP_PCR_READ,
  OP_PCR_EXTEND,
  OP_PCR_RESET,
  OP_QUOTE,
  OP_CERTIFY,
  OP_IMPORT,
  OP_EVICT,
  OP_POLICY_SECRET,
  OP_CLOSE,
  OPS
};

/* Esys_TR_GetName, and what must hold when it refuses the TPM's answer: the TR keeps the name
 * it had (an NV index's is asked afresh; the name is what the HMACs of later commands bind,
 * so one the check refused must not become it). */
static TSS2_RC get_name(ESYS_CONTEXT *e, ESYS_TR tr, TPM2B_NAME **name)
{
  const struct mcim_esys_res *res = mcim_esys_res(e, tr);
  TPM2B_NAME before = {0};
  if (res)
    before = res->name;
  TSS2_RC r = Esys_TR_GetName(e, tr, name);
  if (r != TSS2_RC_SUCCESS && res && memcmp(&before, &res->name, sizeof(before)) != 0) {
    fprintf(stderr, "fuzz_tpm_response: Esys_TR_GetName refused the TPM's answer (0x%08x) "
                    "but took its name\n", (unsigned)r);
    abort();
  }
  return r;
}

static void run_op(struct state *st, uint8_t op)
{
  ESYS_CONTEXT *e = st->e;
  bool second = op & 0x20, policy = op & 0x40;
  ESYS_TR obj = newest(st->obj, st->nobj, second), obj2 = newest(st->obj, st->nobj, !second);
  ESYS_TR sess = newest(st->sess, st->nsess, false);
  ESYS_TR auth = policy && sess != ESYS_TR_NONE ? sess : ESYS_TR_PASSWORD;
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC r = TSS2_RC_SUCCESS;
  const TPM2B_DATA no_data = {0};
  const TPML_PCR_SELECTION no_pcrs = {0};
  const TPML_PCR_SELECTION pcr10 = {
      .count = 1, .pcrSelections = {{.hash = TPM2_ALG_SHA256, .sizeofSelect = 3,
                                     .pcrSelect = {0x00, 0x04, 0x00}}}};
  TPM2B_SENSITIVE_CREATE sens = {.sensitive.userAuth = key_auth};
  TPM2B_PUBLIC tmpl;
  TPM2B_PUBLIC *pub = NULL;
  TPM2B_PRIVATE *priv = NULL;
  TPM2B_NAME *name = NULL, *qname = NULL;
  TPM2B_CREATION_DATA *cdata = NULL;
  TPM2B_DIGEST *digest = NULL;
  TPMT_TK_CREATION *ticket = NULL;
  TPMT_SIGNATURE *sig = NULL;
  TPM2B_ATTEST *attest = NULL;
  TPM2B_ECC_POINT *point = NULL;
  TPM2B_MAX_BUFFER *buf = NULL;
  TPM2B_IV *iv = NULL;
  TPM2B_NV_PUBLIC *nvpub = NULL;
  TPM2B_MAX_NV_BUFFER *nvbuf = NULL;
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPML_PCR_SELECTION *sel = NULL;
  TPML_DIGEST *values = NULL;
  TPM2B_TIMEOUT *timeout = NULL;
  TPMT_TK_AUTH *tk = NULL;
  const TPMT_SIG_SCHEME null_scheme = {.scheme = TPM2_ALG_NULL};
  const TPMT_SIG_SCHEME es256 = {.scheme = TPM2_ALG_ECDSA,
                                 .details.ecdsa.hashAlg = TPM2_ALG_SHA256};

  st->tcti->fix_hmac = op & 0x80;
  switch ((op & 0x1f) % OPS) {
  case OP_CREATE_PRIMARY:
    template_of(0, &tmpl);
    if ((r = Esys_CreatePrimary(e, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                &sens, &tmpl, &no_data, &no_pcrs, &tr, &pub, &cdata, &digest,
                                &ticket)) == TSS2_RC_SUCCESS)
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
    break;
  case OP_CREATE_SIGN:
  case OP_CREATE_ECDH:
  case OP_CREATE_AES:
    template_of((op & 0x1f) % OPS - OP_CREATE_PRIMARY, &tmpl);
    if ((r = Esys_Create(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl, &no_data, &no_pcrs,
                         &priv, &pub, &cdata, &digest, &ticket)) == TSS2_RC_SUCCESS) {
      Esys_Free(st->pub);
      Esys_Free(st->priv);
      st->pub = pub;
      st->priv = priv;
      pub = NULL;
      priv = NULL;
    }
    break;
  case OP_LOAD:
    if (st->pub && st->priv &&
        (r = Esys_Load(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, st->priv, st->pub, &tr)) ==
            TSS2_RC_SUCCESS) {
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
      r = Esys_TR_SetAuth(e, tr, &key_auth); /* ESAPI does not know it: as the TRE does */
    }
    break;
  case OP_FROM_PERSISTENT:
    if ((r = Esys_TR_FromTPMPublic(e, PERSISTENT, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr)) ==
        TSS2_RC_SUCCESS) {
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
      r = Esys_TR_SetAuth(e, tr, &key_auth);
      r = get_name(e, tr, &name);
    }
    break;
  case OP_READ_PUBLIC:
    r = Esys_ReadPublic(e, obj, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, &name, &qname);
    break;
  case OP_SIGN: {
    TPM2B_DIGEST d = {.size = 32};
    TPMT_TK_HASHCHECK check = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    memset(d.buffer, 0x5a, 32);
    r = Esys_Sign(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &d, &es256, &check, &sig);
    break;
  }
  case OP_ECDH_ZGEN: {
    TPM2B_ECC_POINT in = {.size = 68};
    in.point.x.size = 32;
    in.point.y.size = 32;
    memcpy(in.point.x.buffer, p256_gx, 32);
    memcpy(in.point.y.buffer, p256_gy, 32);
    r = Esys_ECDH_ZGen(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &in, &point);
    break;
  }
  case OP_ENCRYPT_DECRYPT2: {
    TPM2B_MAX_BUFFER in = {.size = 16};
    const TPM2B_IV no_iv = {0};
    memset(in.buffer, 0x11, 16);
    r = Esys_EncryptDecrypt2(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &in, TPM2_NO,
                             TPM2_ALG_ECB, &no_iv, &buf, &iv);
    break;
  }
  case OP_START_SESSION: {
    const TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
    if ((r = Esys_StartAuthSession(e, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, NULL, second ? TPM2_SE_TRIAL : TPM2_SE_POLICY,
                                   &none, TPM2_ALG_SHA256, &tr)) == TSS2_RC_SUCCESS)
      keep(st->sess, &st->nsess, MAX_SESSIONS, tr);
    break;
  }
  case OP_POLICY_AUTH_VALUE:
    r = Esys_PolicyAuthValue(e, sess, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE);
    break;
  case OP_POLICY_COMMAND_CODE:
    r = Esys_PolicyCommandCode(e, sess, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                               policy_cc[(second ? 1 : 0) + (policy ? 2 : 0)]);
    break;
  case OP_POLICY_OR:
    r = Esys_PolicyOR(e, sess, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &branches);
    break;
  case OP_POLICY_GET_DIGEST:
    if (!second) {
      r = Esys_PolicyGetDigest(e, sess, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &digest);
      break;
    }
    /* bit 5: ActivateCredential as the enrolment makes it (tpm_enrol.c): the newest object
     * by the second-newest, which a session with PolicySecret (or a password) authorises */
    {
      TPM2B_ID_OBJECT blob = {.size = 16};
      TPM2B_ENCRYPTED_SECRET secret = {.size = 16};
      r = Esys_ActivateCredential(e, obj, obj2, ESYS_TR_PASSWORD, auth, ESYS_TR_NONE, &blob,
                                  &secret, &digest);
    }
    break;
  case OP_FLUSH:
    tr = policy ? sess : obj;
    if ((r = Esys_FlushContext(e, tr)) == TSS2_RC_SUCCESS)
      forget(policy ? st->sess : st->obj, policy ? &st->nsess : &st->nobj, tr);
    break;
  case OP_NV_DEFINE: {
    TPM2B_NV_PUBLIC info = {
        .nvPublic = {.nvIndex = NV_INDEX,
                     .nameAlg = TPM2_ALG_SHA256,
                     .attributes = TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE | TPMA_NV_NO_DA |
                                   (TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT),
                     .dataSize = 8}};
    if ((r = Esys_NV_DefineSpace(e, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &key_auth, &info, &tr)) == TSS2_RC_SUCCESS)
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
    break;
  }
  case OP_NV_FROM_INDEX:
    if ((r = Esys_TR_FromTPMPublic(e, NV_INDEX, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr)) ==
        TSS2_RC_SUCCESS) {
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
      r = Esys_TR_SetAuth(e, tr, &key_auth);
      r = get_name(e, tr, &name); /* an NV index's: asked afresh */
    }
    break;
  case OP_NV_INCREMENT:
    r = Esys_NV_Increment(e, obj, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE);
    break;
  case OP_NV_READ:
    r = Esys_NV_Read(e, obj, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0, &nvbuf);
    break;
  case OP_NV_READ_PUBLIC:
    r = Esys_NV_ReadPublic(e, obj, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nvpub, &name);
    break;
  case OP_NV_UNDEFINE:
    if ((r = Esys_NV_UndefineSpace(e, ESYS_TR_RH_OWNER, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE)) == TSS2_RC_SUCCESS)
      forget(st->obj, &st->nobj, obj);
    break;
  case OP_GET_CAPABILITY: {
    TPMI_YES_NO more = TPM2_NO;
    r = Esys_GetCapability(e, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                           second ? TPM2_CAP_PCRS : TPM2_CAP_HANDLES,
                           second ? 0 : PERSISTENT_FIRST, 16, &more, &cap);
    break;
  }
  case OP_PCR_READ: {
    UINT32 counter = 0;
    r = Esys_PCR_Read(e, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pcr10, &counter, &sel,
                      &values);
    break;
  }
  case OP_PCR_EXTEND: {
    TPML_DIGEST_VALUES v = {.count = 1, .digests = {{.hashAlg = TPM2_ALG_SHA256}}};
    memset(v.digests[0].digest.sha256, 0x33, 32);
    r = Esys_PCR_Extend(e, ESYS_TR_PCR10, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &v);
    break;
  }
  case OP_PCR_RESET:
    r = Esys_PCR_Reset(e, ESYS_TR_PCR16, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
    break;
  case OP_QUOTE: {
    TPM2B_DATA nonce = {.size = 32};
    memset(nonce.buffer, 0x6e, 32);
    r = Esys_Quote(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &nonce, &null_scheme, &pcr10,
                   &attest, &sig);
    break;
  }
  case OP_CERTIFY:
    r = Esys_Certify(e, obj, obj2, auth, ESYS_TR_PASSWORD, ESYS_TR_NONE, &no_data, &es256,
                     &attest, &sig);
    break;
  case OP_IMPORT: {
    /* the TPM does not get to judge these: what it answers is what is fuzzed */
    TPM2B_PRIVATE dup = {.size = 16};
    TPM2B_ENCRYPTED_SECRET seed = {.size = 16};
    const TPMT_SYM_DEF_OBJECT no_sym = {.algorithm = TPM2_ALG_NULL};
    template_of(3, &tmpl);
    r = Esys_Import(e, obj, auth, ESYS_TR_NONE, ESYS_TR_NONE, &no_data,
                    st->pub ? st->pub : &tmpl, &dup, &seed, &no_sym, &priv);
    break;
  }
  case OP_EVICT:
    if ((r = Esys_EvictControl(e, ESYS_TR_RH_OWNER, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, second ? PERSISTENT_NEW : PERSISTENT, &tr)) ==
        TSS2_RC_SUCCESS)
      keep(st->obj, &st->nobj, MAX_OBJS, tr);
    break;
  case OP_POLICY_SECRET:
    r = Esys_PolicySecret(e, ESYS_TR_RH_ENDORSEMENT, sess, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, NULL, NULL, NULL, 0, &timeout, &tk);
    break;
  case OP_CLOSE:
    tr = obj;
    if ((r = Esys_TR_Close(e, &tr)) == TSS2_RC_SUCCESS)
      forget(st->obj, &st->nobj, obj);
    break;
  default:
    break;
  }
  if (trace) /* FUZZ_TPM_TRACE=1: what each operation came to (how the seeds were checked) */
    fprintf(stderr, "op %2d%s%s%s: 0x%08x\n", (op & 0x1f) % OPS, second ? " second" : "",
            policy ? " policy" : "", op & 0x80 ? " fix-hmac" : "", (unsigned)r);
  Esys_Free(pub);
  Esys_Free(priv);
  Esys_Free(name);
  Esys_Free(qname);
  Esys_Free(cdata);
  Esys_Free(digest);
  Esys_Free(ticket);
  Esys_Free(sig);
  Esys_Free(attest);
  Esys_Free(point);
  Esys_Free(buf);
  Esys_Free(iv);
  Esys_Free(nvpub);
  Esys_Free(nvbuf);
  Esys_Free(cap);
  Esys_Free(sel);
  Esys_Free(values);
  Esys_Free(timeout);
  Esys_Free(tk);
}

/* Run the operations over the TCTI t (its responses, or its inner TCTI). */
static void run_ops(struct fuzz_tcti *t, const uint8_t *ops, size_t nops)
{
  struct state st = {.tcti = t};
  if (Esys_Initialize(&st.e, (TSS2_TCTI_CONTEXT *)t, NULL) != TSS2_RC_SUCCESS)
    fuzz_die("Esys_Initialize");
  t->esys = st.e;
  for (size_t i = 0; i < nops; i++)
    run_op(&st, ops[i]);
  Esys_Free(st.pub);
  Esys_Free(st.priv);
  Esys_Finalize(&st.e);
  t->esys = NULL;
}

#ifdef FUZZ_TPM_RESPONSE_RECORDER
/* For fuzz-seedgen: run the operations against a real TPM's TCTI (a swtpm) and return the
 * seed: the operations as the target reads them, then what the TPM answered (free()). The
 * TPM's objects made here are flushed or made persistent as the operations say. */
uint8_t *tpm_response_record(TSS2_TCTI_CONTEXT *tpm, const uint8_t *ops, size_t nops,
                             size_t *len);
uint8_t *tpm_response_record(TSS2_TCTI_CONTEXT *tpm, const uint8_t *ops, size_t nops,
                             size_t *len)
{
  static struct fuzz_tcti t;
  if (nops == 0 || nops > MAX_OPS)
    fuzz_die("tpm_response_record: 1 to 16 operations");
  if (!branches.count)
    policy_init();
  tcti_init(&t);
  t.inner = tpm;
  t.rec = malloc(1 + nops);
  if (!t.rec)
    fuzz_die("out of memory");
  t.rec_cap = 1 + nops;
  t.rec[0] = (uint8_t)(nops - 1);
  memcpy(t.rec + 1, ops, nops);
  t.rec_len = 1 + nops;
  run_ops(&t, ops, nops);
  *len = t.rec_len;
  return t.rec;
}
#else
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  if (mcim_tss2_load(NULL, 0) != MCIM_OK)
    fuzz_die("tpm2-tss does not load");
  policy_init();
  trace = getenv("FUZZ_TPM_TRACE") != NULL;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static struct fuzz_tcti t;
  if (size < 1)
    return 0;
  size_t nops = data[0] % MAX_OPS + 1;
  if (size < 1 + nops)
    return 0;
  tcti_init(&t);
  t.data = data + 1 + nops;
  t.left = size - 1 - nops;
  run_ops(&t, data + 1, nops);
  return 0;
}
#endif

#else /* no tpm2-tss */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  (void)data;
  (void)size;
  return 0;
}
#endif
