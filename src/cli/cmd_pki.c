/* `mcim pki init DIR [--roles LIST] [--days N] [--force]`: the lab PKI (library: pki.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/pki.h"

#define MAX_ROLES 64

static void usage(FILE *out)
{
  fprintf(out,
          "usage: mcim pki init DIR [--roles LIST] [--days N] [--force]\n"
          "\n"
          "Creates the lab PKI in DIR (P-256 keys, written with mode 0600):\n"
          "  DIR/ca/operators-ca.{crt,key}  operators' CA: TLS certificates of the network roles\n"
          "  DIR/ca/m2mes-ca.{crt,key}      M2MES CA: device TRE certificates (at manufacture)\n"
          "  DIR/<role>/{cert,key}.pem      per role: TLS server and client certificate,\n"
          "                                 SAN DNS:localhost, IP:127.0.0.1, DNS:<role>\n"
          "  DIR/admin/{cert,key}.pem       TLS client certificate for the lab's admin paths\n"
          "An existing PKI in DIR is never replaced without --force.\n"
          "\n"
          "options:\n"
          "  --roles LIST  comma-separated role names (default: vno,ro,pva,m2mes,sho-a,sho-b)\n"
          "  --days N      validity of the certificates in days (default: 365)\n"
          "  --force       replace an existing PKI in DIR\n"
          "\n"
          "example:\n"
          "  mcim pki init ./mcim-lab/pki --roles vno,ro,pva,m2mes,sho-a,sho-b,sho-c\n"
          "  openssl verify -CAfile ./mcim-lab/pki/ca/operators-ca.crt ./mcim-lab/pki/sho-c/cert.pem\n");
}

/* Split LIST in place into roles[]; usage errors are reported here. */
static int parse_roles(char *list, const char **roles, size_t *nroles)
{
  char *save = NULL;
  size_t n = 0;
  if (!list[0] || list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
    return mcim_usage_error("pki init: --roles has an empty name");
  for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == MAX_ROLES)
      return mcim_usage_error("pki init: at most %d roles", MAX_ROLES);
    if (!mcim_pki_name_valid(tok) || strcmp(tok, "ca") == 0 || strcmp(tok, MCIM_PKI_ADMIN) == 0)
      return mcim_usage_error("pki init: '%s' is not a usable role name (letters, digits, "
                              "'-', '.', '_'; not 'ca' or 'admin')", tok);
    for (size_t i = 0; i < n; i++)
      if (strcmp(roles[i], tok) == 0)
        return mcim_usage_error("pki init: role '%s' given twice", tok);
    roles[n++] = tok;
  }
  *nroles = n;
  return MCIM_EXIT_OK;
}

static int parse_days(const char *s, int *days)
{
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!s[0] || *end || v < 1 || v > 36500)
    return mcim_usage_error("pki init: --days wants a number of days from 1 to 36500");
  *days = (int)v;
  return MCIM_EXIT_OK;
}

static int cmd_init(int argc, char **argv)
{
  const char *dir = NULL;
  const char *roles[MAX_ROLES];
  size_t nroles = 0;
  char *list = NULL;
  bool force = false;
  int days = 0, rc = MCIM_EXIT_OK;

  for (size_t i = 0; mcim_pki_default_roles[i]; i++)
    roles[nroles++] = mcim_pki_default_roles[i];
  for (int i = 1; i < argc && rc == MCIM_EXIT_OK; i++) {
    const char *a = argv[i];
    const char *value = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      goto cleanup;
    } else if (strcmp(a, "--force") == 0) {
      force = true;
    } else if (strcmp(a, "--roles") == 0 || strncmp(a, "--roles=", 8) == 0 ||
               strcmp(a, "--days") == 0 || strncmp(a, "--days=", 7) == 0) {
      const char *eq = strchr(a, '=');
      if (eq)
        value = eq + 1;
      else if (i + 1 < argc)
        value = argv[++i];
      else
        rc = mcim_usage_error("pki init: %s needs a value", a);
      if (rc == MCIM_EXIT_OK && a[2] == 'r') {
        free(list);
        list = strdup(value);
        rc = list ? parse_roles(list, roles, &nroles) : MCIM_EXIT_FAIL;
      } else if (rc == MCIM_EXIT_OK) {
        rc = parse_days(value, &days);
      }
    } else if (a[0] == '-') {
      rc = mcim_usage_error("pki init: unknown option '%s' (see mcim pki --help)", a);
    } else if (dir) {
      rc = mcim_usage_error("pki init: only one DIR, got '%s' and '%s'", dir, a);
    } else {
      dir = a;
    }
  }
  if (rc != MCIM_EXIT_OK)
    goto cleanup;
  if (!dir || !dir[0]) {
    rc = mcim_usage_error("pki init: DIR is missing (see mcim pki --help)");
    goto cleanup;
  }

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

int mcim_cmd_pki(int argc, char **argv)
{
  if (argc < 2)
    return mcim_usage_error("pki: which one? (mcim pki init DIR; see mcim pki --help)");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return MCIM_EXIT_OK;
  }
  if (strcmp(argv[1], "init") == 0)
    return cmd_init(argc - 1, argv + 1);
  return mcim_usage_error("pki: unknown subcommand '%s' (see mcim pki --help)", argv[1]);
}
