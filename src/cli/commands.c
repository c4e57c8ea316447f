#include <stddef.h>

#include "mcim/cli.h"

const struct mcim_cli_command mcim_cli_commands[] = {
    {"demo", "the main job: a lab, one device, the seed's procedures, their charts", mcim_cmd_demo},
    {"crypto", "cryptographic tools (Milenage test computations, self-test)", mcim_cmd_crypto},
    {"bench", "measure performance (Milenage AV generation)", mcim_cmd_bench},
    {"lab", "run every role on loopback: up, down, status, device add", mcim_cmd_lab},
    {"device", "a device's TRE view (status) and network attach", mcim_cmd_device},
    {"run", "run a procedure: initial provisioning, change of SHO", mcim_cmd_run},
    {"loadgen", "many simulated devices in one process: throughput, latency, invariants", mcim_cmd_loadgen},
    {"trace", "draw a procedure from what every role recorded", mcim_cmd_trace},
    {"pki", "create the lab PKI (operators' CA, M2MES CA, role certificates)", mcim_cmd_pki},
    {"pcid", "network-initiated PCID renewal: push DEVICE", mcim_cmd_pcid},
    {"version", "print the version and the git commit (as mcim --version)", mcim_cmd_version},
    {NULL, NULL, NULL},
};
