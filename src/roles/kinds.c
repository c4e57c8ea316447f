/* The role kinds this build knows (mcimd --role KIND). */
#include <stddef.h>

#include "roles/kinds.h"

const struct mcim_role_kind *const mcim_role_kinds[] = {
    &mcim_role_ro,
    &mcim_role_vno,
    &mcim_role_sho,
    &mcim_role_pva, &mcim_role_m2mes,
    NULL,
};
