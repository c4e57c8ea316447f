/* `mcim pki init DIR [--roles LIST] [--days N] [--force]`: the lab PKI (library: pki.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/opts.h"
#include "mcim/pki.h"

#define MAX_ROLES 64

static const char pki_description[] =
    "Creates the lab PKI in DIR (P-256 keys, written with mode 0600):\n"
    "  DIR/ca/operators-ca.{crt,key}  operators' CA: TLS certificates of the network roles\n"
    "  DIR/ca/m2mes-ca.{crt,key}      M2MES CA: device TRE certificates (at manufacture)\n"
    "  DIR/<role>/{cert,key}.pem      per role: TLS server and client certificate,\n"
    "                                 SAN DNS:localhost, IP:127.0.0.1, DNS:<role>\n"
    "  DIR/admin/{cert,key}.pem       TLS client certificate for the lab's admin paths\n"
    "An existing PKI in DIR is never replaced without --force (exit status 1).";

static const char pki_examples[] =
    "mcim pki init ./mcim-lab/pki --roles vno,ro,pva,m2mes,sho-a,sho-b,sho-c\n"
    "openssl verify -CAfile ./mcim-lab/pki/ca/operators-ca.crt ./mcim-lab/pki/sho-c/cert.pem\n"
    "mcim pki init /tmp/pki --days=30";

/* Split LIST in place into roles[]; usage errors are reported here. */
static int parse_roles(const struct mcim_cmd *cmd, char *list, const char **roles, size_t *nroles)
{
  char *save = NULL;
  size_t n = 0;
  if (!list[0] || list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
    return mcim_opts_error(cmd, "--roles has an empty name");
  for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == MAX_ROLES)
      return mcim_opts_error(cmd, "at most %d roles", MAX_ROLES);
    if (!mcim_pki_name_valid(tok) || strcmp(tok, "ca") == 0 || strcmp(tok, MCIM_PKI_ADMIN) == 0)
      return mcim_opts_error(cmd,
                             "'%s' is not a usable role name (letters, digits, '-', '.', '_'; "
                             "not 'ca' or 'admin')",
                             tok);
    for (size_t i = 0; i < n; i++)
      if (strcmp(roles[i], tok) == 0)
        return mcim_opts_error(cmd, "role '%s' given twice", tok);
    roles[n++] = tok;
  }
  *nroles = n;
  return MCIM_EXIT_OK;
}

static int parse_days(const struct mcim_cmd *cmd, const char *s, int *days)
{
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!s[0] || *end || v < 1 || v > 36500)
    return mcim_opts_error(cmd, "--days wants a number of days from 1 to 36500");
  *days = (int)v;
  return MCIM_EXIT_OK;
}

int mcim_cmd_pki(int argc, char **argv)
{
  const char *roles[MAX_ROLES];
  size_t nroles = 0;
  const char *roles_opt = NULL, *days_opt = NULL;
  char *list = NULL;
  bool force = false;
  int days = 0, rc = MCIM_EXIT_OK;
  const struct mcim_opt opts[] = {
      {.name = "roles", .arg = "LIST",
       .help = "comma-separated role names (default: vno,ro,pva,m2mes,sho-a,sho-b)",
       .value = &roles_opt},
      {.name = "days", .arg = "N", .help = "validity of the certificates in days (default: 365)",
       .value = &days_opt},
      {.name = "force", .help = "replace an existing PKI in DIR", .flag = &force},
      {0},
  };
  const struct mcim_cmd pki = {
      .name = "mcim pki",
      .usage = "mcim pki init DIR [--roles LIST] [--days N] [--force]",
      .description = pki_description,
      .opts = opts,
      .examples = pki_examples,
      .max_args = 2,
  };
  const struct mcim_cmd *cmd = &pki;
  struct mcim_args a;
  rc = mcim_opts_parse(cmd, argc, argv, &a);
  if (rc != MCIM_OPTS_RUN)
    return rc;
  rc = MCIM_EXIT_OK;
  if (a.n < 1)
    return mcim_opts_error(cmd, "missing the subcommand: init");
  if (strcmp(a.arg[0], "init") != 0)
    return mcim_opts_error(cmd, "unknown subcommand '%s'", a.arg[0]);
  const char *dir = a.n > 1 ? a.arg[1] : NULL;
  if (!dir || !dir[0])
    return mcim_opts_error(cmd, "init needs DIR");
  for (size_t i = 0; mcim_pki_default_roles[i]; i++)
    roles[nroles++] = mcim_pki_default_roles[i];
  if (roles_opt) {
    list = strdup(roles_opt);
    rc = list ? parse_roles(cmd, list, roles, &nroles) : MCIM_EXIT_FAIL;
  }
  if (rc == MCIM_EXIT_OK && days_opt)
    rc = parse_days(cmd, days_opt, &days);
  if (rc != MCIM_EXIT_OK)
    goto cleanup;

  mcim_cause_t cause = mcim_pki_lab_init(dir, roles, nroles, force, days);
  if (cause == MCIM_CONFLICT) {
    fprintf(stderr, "mcim: pki init: a PKI already exists in %s (use --force to replace it)\n",
            dir);
    rc = MCIM_EXIT_FAIL;
  } else if (cause != MCIM_OK) {
    fprintf(stderr, "mcim: pki init: %s (%s)\n", mcim_cause_text(cause), mcim_cause_name(cause));
    rc = MCIM_EXIT_FAIL;
  } else {
    printf("lab PKI in %s:\n  %s\n  %s\n", dir, MCIM_PKI_OPERATORS_CA_CERT, MCIM_PKI_M2MES_CA_CERT);
    for (size_t i = 0; i < nroles; i++)
      printf("  %s/cert.pem\n", roles[i]);
    printf("  %s/cert.pem\n", MCIM_PKI_ADMIN);
  }
cleanup:
  free(list);
  return rc;
}

