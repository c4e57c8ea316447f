/* M2MES internals shared by m2mes.c (the role: configuration, schema, the device row, the calls
 * to peers at manufacture) and manufacture.c (POST /v1/devices). */
#ifndef MCIM_ROLES_M2MES_PRIV_H
#define MCIM_ROLES_M2MES_PRIV_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/firmware.h"
#include "mcim/http.h"
#include "mcim/milenage.h"
#include "mcim/pki.h"
#include "mcim/seal.h"
#include "mcim/store.h"

#define PCID_MAX_DIGITS 15 /* an IMSI: MCC + MNC + MSIN */

struct mcim_role;

struct m2mes_state {
  mcim_pki_ca_t *ca;
  int64_t pcid_lifetime;
  const char *prefix; /* MCC + MNC of the PCID pool, from the configuration */
  int64_t pcid_space; /* 10^(15 - len(prefix)) */
  char agent_rim[MCIM_FIRMWARE_HEX_LEN + 1]; /* of "agent_executable", "" without it */
};

/* A row of the devices table. */
struct drow {
  char device[64];
  char model[64];
  char pcid[PCID_MAX_DIGITS + 1];
  char att_key[200];
  char ka_key[200];
  char state[16];
  int64_t expires;
  uint8_t k_sealed[MCIM_MILENAGE_K_LEN + MCIM_SEAL_OVERHEAD];
  size_t k_len;
  uint8_t opc_sealed[MCIM_MILENAGE_OP_LEN + MCIM_SEAL_OVERHEAD];
  size_t opc_len;
  char *answer; /* JSON text, malloc'd */
};

/* m2mes.c: a string member of `obj` wiped in place (jansson frees without wiping). */
void m2mes_wipe_json_string(json_t *obj, const char *key);

/* m2mes.c: the device row. */
void m2mes_drow_clear(struct drow *d);
mcim_cause_t m2mes_drow_load(mcim_store_t *st, const char *device, struct drow *d);
/* Next PCID of the pool, inside the caller's transaction. */
mcim_cause_t m2mes_pcid_allocate(struct m2mes_state *ms, mcim_store_t *st, char *pcid, size_t len);
/* The sealing context of a row's `what` ("k", "opc"), bound to the device. */
void m2mes_seal_context(char *out, size_t len, const char *what, const char *device);
/* A new device row: PCID, K and OPc (sealed), state `new`. Own transaction. */
mcim_cause_t m2mes_drow_create(struct mcim_role *r, mcim_store_t *st, const char *device,
                               const char *model, const char *att, const char *ka);

/* m2mes.c: steps 2, 3 and 4 of manufacture, the calls to peers; on failure the problem is in
 * `resp`. */
mcim_cause_t m2mes_icf_register(struct mcim_role *r, const struct drow *d, const uint8_t *k,
                                const uint8_t *opc, struct mcim_http_response *resp);
mcim_cause_t m2mes_pva_register(struct mcim_role *r, const char *model, const char *device,
                                struct mcim_http_response *resp);
mcim_cause_t m2mes_owner_register(struct mcim_role *r, const char *device, const json_t *owner,
                                  struct mcim_http_response *resp);

/* manufacture.c: POST /v1/devices (the factory, caller `admin`). */
void m2mes_devices(void *ctx, const struct mcim_http_request *req, struct mcim_http_response *resp);

#endif
