/* Configuration files as the programs load them: a role's (mcimd --role KIND --config FILE and
 * its --check-config: mcim_role_check_config, src/roles/runtime.c: the common keys and the
 * kind's, src/core/config.c's loader, the database locator) and the device agent's
 * DEVICE_DIR/agent.json (mcim_device_check_config, src/device/agent.c: its "networks" and the
 * agent's keys).
 *
 * Input: one byte choosing the reader (modulo the number of role kinds + 1: each kind of
 * mcim_role_kinds in order, then the agent), then the file's bytes.
 * Seeds: tests/fuzz/corpus/fuzz_config/ (docs/examples/ and the files a lab writes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/device.h"
#include "mcim/role.h"

static char *role_dir, *role_path, *agent_dir, *agent_path;
static size_t nkinds;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  while (mcim_role_kinds[nkinds])
    nkinds++;
  role_dir = fuzz_tmpdir("config");
  agent_dir = fuzz_tmpdir("agent");
  role_path = malloc(strlen(role_dir) + 32);
  agent_path = malloc(strlen(agent_dir) + 32);
  sprintf(role_path, "%s/role.json", role_dir);
  sprintf(agent_path, "%s/agent.json", agent_dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[4096];
  if (size < 1)
    return 0;
  size_t which = data[0] % (nkinds + 1);
  data++;
  size--;
  if (which < nkinds) {
    fuzz_write_file(role_path, data, size);
    (void)mcim_role_check_config(mcim_role_kinds[which], role_path, err, sizeof(err));
  } else {
    fuzz_write_file(agent_path, data, size);
    (void)mcim_device_check_config(agent_dir, err, sizeof(err));
  }
  return 0;
}
