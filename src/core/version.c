/* --version output shared by every program (the data itself is generated: cmake/version.cmake). */
#include "mcim/version.h"

void mcim_version_print(const char *program, FILE *out)
{
  fprintf(out, "%s %s (commit %s)\n", program, mcim_version_text(), mcim_version_commit());
  fprintf(out, "mcim: remote provisioning and change of subscription for M2M equipment "
               "(3GPP TR 33.812)\nLicense: Apache-2.0\n");
}
