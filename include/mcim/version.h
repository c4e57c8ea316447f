/* The version of this build: the project's version (CMakeLists.txt `project(... VERSION)`) and
 * the git commit the tree was built from ("unknown" outside a git checkout, "-dirty" when the
 * tree had uncommitted changes). Every program's --version and the mcim_build_info metric
 * print these. */
#ifndef MCIM_VERSION_H
#define MCIM_VERSION_H

#include <stdio.h>

const char *mcim_version_text(void);   /* "0.1.0" */
const char *mcim_version_commit(void); /* "1a2b3c4d5e6f" or "unknown" */

/* "PROGRAM VERSION (commit COMMIT)" and a line naming the project, as --version prints. */
void mcim_version_print(const char *program, FILE *out);

#endif
