/* The AuC backend from a role's configuration (issue 13): the keys an SHO and the RO (its ICF)
 * share to say where their vectors come from, their checks (mcimd --check-config and start-up
 * run the same ones), and the backend they make. */
#include "roles/auc_config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const auc_kinds[] = {"builtin", "osmo-hlr", NULL};

const mcim_config_spec_t mcim_auc_config_spec[] = {
    {.name = "auc", .type = MCIM_CFG_ENUM, .def = "builtin", .allowed = auc_kinds,
     .help = "where the vectors of this role's subscribers come from: builtin (mcim's own AuC,"
             " keys sealed in the role's store) or osmo-hlr (an osmo-hlr over GSUP and CTRL;"
             " hlr_gsup required)"},
    {.name = "hlr_gsup", .type = MCIM_CFG_STRING, .min = 7, .max = 21,
     .help = "auc osmo-hlr: the HLR's GSUP server, IPv4[:port] (port 4222 if left out)"},
    {.name = "hlr_ctrl", .type = MCIM_CFG_STRING, .min = 7, .max = 21,
     .help = "auc osmo-hlr: its CTRL interface, IPv4[:port] in 127.0.0.0/8 (K and OPc cross it"
             " in clear); default the GSUP address, port 4259"},
    {.name = "hlr_unit_name", .type = MCIM_CFG_STRING, .min = 1, .max = 63,
     .help = "auc osmo-hlr: the IPA unit name this role gives the HLR (the HLR picks the IND of"
             " the SQNs by it); default the role's name"},
    {.name = "hlr_timeout_ms", .type = MCIM_CFG_INT, .def = "3000", .min = 100, .max = 600000,
     .help = "auc osmo-hlr: the longest one request to the HLR may take"},
};
const size_t mcim_auc_config_nspec = sizeof(mcim_auc_config_spec) / sizeof(mcim_auc_config_spec[0]);

/* "a.b.c.d" or "a.b.c.d:port" into its parts; false if it is neither. */
static bool split_addr(const char *s, char addr[16], uint16_t *port)
{
  const char *colon = strchr(s, ':');
  size_t alen = colon ? (size_t)(colon - s) : strlen(s);
  struct in_addr a;
  *port = 0;
  if (alen < 7 || alen > 15)
    return false;
  memcpy(addr, s, alen);
  addr[alen] = '\0';
  if (inet_pton(AF_INET, addr, &a) != 1)
    return false;
  if (colon) {
    char *end = NULL;
    if (colon[1] < '0' || colon[1] > '9')
      return false;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535)
      return false;
    *port = (uint16_t)p;
  }
  return true;
}

mcim_cause_t mcim_auc_config_backend(const mcim_config_t *cfg, const char *role_name,
                                     const mcim_storage_key_t *skey,
                                     struct mcim_auc_backend **out, char *err, size_t errlen)
{
  static const char *const hlr_keys[] = {"hlr_gsup", "hlr_ctrl", "hlr_unit_name"};
  const char *file = mcim_config_file(cfg);
  const char *kind = mcim_config_str(cfg, "auc");
  char gaddr[16], caddr[16];
  uint16_t gport = 0, cport = 0;
  bool hlr = kind && strcmp(kind, "osmo-hlr") == 0;

  if (out)
    *out = NULL;
  if (!hlr) {
    /* an HLR address with the built-in AuC is a half-made change: say so, not ignore it */
    for (size_t i = 0; i < sizeof(hlr_keys) / sizeof(hlr_keys[0]); i++)
      if (mcim_config_has(cfg, hlr_keys[i])) {
        snprintf(err, errlen, "%s: \"%s\" is set but \"auc\" is \"builtin\" (set \"auc\":"
                              " \"osmo-hlr\" to use the HLR, or remove \"%s\")",
                 file, hlr_keys[i], hlr_keys[i]);
        return MCIM_CONFIG_INVALID;
      }
    return out ? mcim_auc_builtin_new(skey, out) : MCIM_OK;
  }
  const char *gsup = mcim_config_str(cfg, "hlr_gsup");
  if (!gsup) {
    snprintf(err, errlen, "%s: \"auc\" is \"osmo-hlr\": \"hlr_gsup\" (the HLR's GSUP address,"
                          " IPv4[:port]) is required", file);
    return MCIM_CONFIG_INVALID;
  }
  if (!split_addr(gsup, gaddr, &gport)) {
    snprintf(err, errlen, "%s: \"hlr_gsup\": expected IPv4[:port], e.g. \"127.0.0.1:4222\","
                          " got \"%s\"", file, gsup);
    return MCIM_CONFIG_INVALID;
  }
  const char *ctrl = mcim_config_str(cfg, "hlr_ctrl");
  if (ctrl && !split_addr(ctrl, caddr, &cport)) {
    snprintf(err, errlen, "%s: \"hlr_ctrl\": expected IPv4[:port], e.g. \"127.0.0.1:4259\","
                          " got \"%s\"", file, ctrl);
    return MCIM_CONFIG_INVALID;
  }
  if (!ctrl)
    memcpy(caddr, gaddr, sizeof(caddr));
  /* CTRL has no authentication and carries K and OPc in clear: loopback only */
  if (strncmp(caddr, "127.", 4) != 0) {
    snprintf(err, errlen, "%s: \"%s\": the HLR's CTRL interface must be on a loopback address"
                          " (127.0.0.0/8): mcim sends K and OPc over it in clear and it has no"
                          " authentication; got %s (docs/operations.md, \"The AuC backend\")",
             file, ctrl ? "hlr_ctrl" : "hlr_gsup", caddr);
    return MCIM_CONFIG_INVALID;
  }
  const char *unit = mcim_config_str(cfg, "hlr_unit_name");
  if (!unit)
    unit = role_name ? role_name : mcim_config_str(cfg, "name");
  if (!out)
    return MCIM_OK;
  struct mcim_auc_osmo_hlr_cfg hc = {
      .gsup_addr = gaddr,
      .gsup_port = gport,
      .ctrl_addr = caddr,
      .ctrl_port = cport,
      .unit_name = unit,
      .timeout_ms = (int)mcim_config_int(cfg, "hlr_timeout_ms"),
  };
  mcim_cause_t rc = mcim_auc_osmo_hlr_new(&hc, out);
  if (rc != MCIM_OK)
    snprintf(err, errlen, "%s: the osmo-hlr AuC backend refused its settings (%s)", file,
             mcim_cause_name(rc));
  return rc;
}

bool mcim_auc_is_builtin(const struct mcim_auc_backend *b)
{
  return !b || strcmp(mcim_auc_backend_name(b), "builtin") == 0;
}
