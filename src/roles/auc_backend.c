/* The AuC backend's dispatch and the built-in AuC behind it (src/roles/auc_backend.h). */
#include "roles/auc_backend.h"

#include <stdio.h>
#include <stdlib.h>

#include "roles/auc.h"

static void set_detail(char *detail, size_t dlen, mcim_cause_t rc, const char *imsi)
{
  if (detail && dlen)
    snprintf(detail, dlen, "AuC: %s for IMSI %s", mcim_cause_text(rc), imsi);
}

mcim_cause_t mcim_auc_backend_gen_avs(struct mcim_auc_backend *b, mcim_store_t *st,
                                      const char *imsi, int n, int64_t now,
                                      struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  if (detail && dlen)
    detail[0] = '\0';
  if (!b || !imsi || !avs || n < 1 || n > MCIM_AUC_MAX_AVS)
    return MCIM_INVALID_ARGUMENT;
  return b->ops->gen_avs(b, st, imsi, n, now, avs, detail, dlen);
}

mcim_cause_t mcim_auc_backend_resync(struct mcim_auc_backend *b, mcim_store_t *st,
                                     const char *imsi, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                     const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                     struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  if (detail && dlen)
    detail[0] = '\0';
  if (!b || !imsi || !rand || !auts || n < 0 || n > MCIM_AUC_MAX_AVS || (n > 0 && !avs))
    return MCIM_INVALID_ARGUMENT;
  return b->ops->resync(b, st, imsi, rand, auts, n, now, avs, detail, dlen);
}

mcim_cause_t mcim_auc_backend_create_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                         const struct mcim_auc_sub *sub, char *detail,
                                         size_t dlen)
{
  if (detail && dlen)
    detail[0] = '\0';
  if (!b || !sub || !sub->imsi)
    return MCIM_INVALID_ARGUMENT;
  return b->ops->create_sub(b, st, sub, detail, dlen);
}

mcim_cause_t mcim_auc_backend_delete_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                         const char *imsi, char *detail, size_t dlen)
{
  if (detail && dlen)
    detail[0] = '\0';
  if (!b || !imsi)
    return MCIM_INVALID_ARGUMENT;
  return b->ops->delete_sub(b, st, imsi, detail, dlen);
}

mcim_cause_t mcim_auc_backend_same_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                       const struct mcim_auc_sub *sub, char *detail,
                                       size_t dlen)
{
  if (detail && dlen)
    detail[0] = '\0';
  if (!b || !sub || !sub->imsi)
    return MCIM_INVALID_ARGUMENT;
  return b->ops->same_sub ? b->ops->same_sub(b, st, sub, detail, dlen) : MCIM_UNSUPPORTED;
}

const char *mcim_auc_backend_name(const struct mcim_auc_backend *b)
{
  return b ? b->ops->name : "none";
}

bool mcim_auc_cause_is_remote(mcim_cause_t rc)
{
  return rc == MCIM_PEER_UNREACHABLE || rc == MCIM_TIMEOUT || rc == MCIM_PEER_ERROR ||
         rc == MCIM_PEER_BAD_ANSWER;
}

void mcim_auc_backend_free(struct mcim_auc_backend *b)
{
  if (b)
    b->ops->free(b);
}

/* ---- the built-in AuC ---- */

struct builtin {
  struct mcim_auc_backend base;
  const mcim_storage_key_t *skey;
};

static mcim_cause_t builtin_gen_avs(struct mcim_auc_backend *b, mcim_store_t *st,
                                    const char *imsi, int n, int64_t now,
                                    struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  struct builtin *bi = (struct builtin *)b;
  mcim_cause_t rc = st ? mcim_auc_gen_avs(st, bi->skey, imsi, n, now, avs) : MCIM_STORE_ERROR;
  if (rc != MCIM_OK)
    set_detail(detail, dlen, rc, imsi);
  return rc;
}

static mcim_cause_t builtin_resync(struct mcim_auc_backend *b, mcim_store_t *st,
                                   const char *imsi, const uint8_t rand[MCIM_MILENAGE_RAND_LEN],
                                   const uint8_t auts[MCIM_AKA_AUTS_LEN], int n, int64_t now,
                                   struct mcim_aka_av *avs, char *detail, size_t dlen)
{
  struct builtin *bi = (struct builtin *)b;
  mcim_cause_t rc = st ? mcim_auc_resync(st, bi->skey, imsi, rand, auts) : MCIM_STORE_ERROR;
  if (rc == MCIM_OK && n > 0)
    rc = mcim_auc_gen_avs(st, bi->skey, imsi, n, now, avs);
  if (rc != MCIM_OK)
    set_detail(detail, dlen, rc, imsi);
  return rc;
}

static mcim_cause_t builtin_create_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                       const struct mcim_auc_sub *sub, char *detail, size_t dlen)
{
  struct builtin *bi = (struct builtin *)b;
  mcim_cause_t rc = st ? mcim_auc_add(st, bi->skey, sub) : MCIM_STORE_ERROR;
  if (rc != MCIM_OK)
    set_detail(detail, dlen, rc, sub->imsi);
  return rc;
}

static mcim_cause_t builtin_delete_sub(struct mcim_auc_backend *b, mcim_store_t *st,
                                       const char *imsi, char *detail, size_t dlen)
{
  (void)b;
  mcim_cause_t rc = st ? mcim_auc_terminate(st, imsi) : MCIM_STORE_ERROR;
  if (rc == MCIM_NOT_FOUND)
    rc = MCIM_UNKNOWN_IDENTITY;
  if (rc != MCIM_OK)
    set_detail(detail, dlen, rc, imsi);
  return rc;
}

static void builtin_free(struct mcim_auc_backend *b)
{
  free(b);
}

static const struct mcim_auc_backend_ops builtin_ops = {
    .name = "builtin",
    .gen_avs = builtin_gen_avs,
    .resync = builtin_resync,
    .create_sub = builtin_create_sub,
    .delete_sub = builtin_delete_sub,
    .free = builtin_free,
};

mcim_cause_t mcim_auc_builtin_new(const mcim_storage_key_t *skey, struct mcim_auc_backend **out)
{
  struct builtin *bi;

  if (!skey || !out)
    return MCIM_INVALID_ARGUMENT;
  bi = calloc(1, sizeof(*bi));
  if (!bi)
    return MCIM_NO_MEMORY;
  bi->base.ops = &builtin_ops;
  bi->skey = skey;
  *out = &bi->base;
  return MCIM_OK;
}
