#include <stdarg.h>
#include <stdio.h>

#include "mcim/cli.h"

const struct mcim_cli_command mcim_cli_commands[] = {
    {"crypto", "cryptographic tools (Milenage test computations, self-test)", mcim_cmd_crypto},
    {"bench", "measure performance (Milenage AV generation)", mcim_cmd_bench},
    {"pki", "create the lab PKI (operators' CA, M2MES CA, role certificates)", mcim_cmd_pki},
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
