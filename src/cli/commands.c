#include <stdarg.h>
#include <stdio.h>

#include "mcim/cli.h"

const struct mcim_cli_command mcim_cli_commands[] = {
    {"demo", "the main job: a lab, one device, the seed's procedures, their charts", mcim_cmd_demo},
    {"crypto", "cryptographic tools (Milenage test computations, self-test)", mcim_cmd_crypto},
    {"bench", "measure performance (Milenage AV generation)", mcim_cmd_bench},
    {"lab", "run every role on loopback: up, down, status, device add", mcim_cmd_lab},
    {"device", "a device's TRE view (status) and network attach", mcim_cmd_device},
    {"run", "run a procedure: initial provisioning, change of SHO", mcim_cmd_run},
    {"trace", "draw a procedure from what every role recorded", mcim_cmd_trace},
    {"pki", "create the lab PKI (operators' CA, M2MES CA, role certificates)", mcim_cmd_pki},
    {"pcid", "network-initiated PCID renewal: push DEVICE", mcim_cmd_pcid},
    {NULL, NULL, NULL},
};

int mcim_usage_error(const char *fmt, ...)
{
  va_list ap;
  fputs("mcim: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return MCIM_EXIT_USAGE;
}
