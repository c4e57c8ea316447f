/* The role kinds, one per folder under src/roles/. */
#ifndef MCIM_ROLES_KINDS_H
#define MCIM_ROLES_KINDS_H

#include "mcim/role.h"

extern const struct mcim_role_kind mcim_role_ro;    /* src/roles/ro/: ICF, DRF, DPF */
extern const struct mcim_role_kind mcim_role_vno;   /* src/roles/vno/ */
extern const struct mcim_role_kind mcim_role_sho;   /* src/roles/sho/ */
extern const struct mcim_role_kind mcim_role_pva;   /* src/roles/pva/ */
extern const struct mcim_role_kind mcim_role_m2mes; /* src/roles/m2mes/ */

#endif
