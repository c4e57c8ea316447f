/* The AuC backend from a role's configuration (src/roles/auc_config.c): the keys `auc`,
 * `hlr_gsup`, `hlr_ctrl`, `hlr_unit_name`, `hlr_timeout_ms`, added to the kinds that have an
 * AuC (struct mcim_role_kind's `auc`: the SHO, the RO for its ICF). */
#ifndef MCIM_ROLES_AUC_CONFIG_H
#define MCIM_ROLES_AUC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "mcim/config.h"
#include "roles/auc_backend.h"

extern const mcim_config_spec_t mcim_auc_config_spec[];
extern const size_t mcim_auc_config_nspec;

/* The checks of those keys (a sentence naming the file and the key in `err` on failure:
 * MCIM_CONFIG_INVALID) and, when `out` is not NULL, the backend they select (the built-in AuC
 * with `skey`). `role_name`: the default IPA unit name (NULL: the "name" key). */
mcim_cause_t mcim_auc_config_backend(const mcim_config_t *cfg, const char *role_name,
                                     const mcim_storage_key_t *skey,
                                     struct mcim_auc_backend **out, char *err, size_t errlen);

/* Whether `b` is mcim's own AuC (whose store is the subscriber database itself). */
bool mcim_auc_is_builtin(const struct mcim_auc_backend *b);

#endif
