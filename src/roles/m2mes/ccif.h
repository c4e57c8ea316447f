/* M2MES CCIF: PCID credential renewal (src/roles/m2mes/ccif.c). */
#ifndef MCIM_ROLES_M2MES_CCIF_H
#define MCIM_ROLES_M2MES_CCIF_H

#include "mcim/http.h"

/* Schema step of the M2MES: renewals in progress (K and OPc sealed until answered). */
extern const char mcim_ccif_schema_sql[];

/* POST /v1/ccif/pcid (the device, with an access token). */
void mcim_ccif_pcid(void *ctx, const struct mcim_http_request *req,
                    struct mcim_http_response *resp);

#endif
