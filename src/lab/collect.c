/* Gather one procedure's trace from every role instance (admin path, lab admin
 * certificate) and every device agent (control socket), merged in causal order. */
#include <stdio.h>
#include <string.h>

#include "lab/lab_priv.h"
#include "mcim/trace.h"

mcim_cause_t mcim_lab_trace_collect(mcim_lab_t *lab, const char *txn, struct mcim_trace *t)
{
  char url[512];
  struct mcim_http_client *admin = mcim_lab_admin_client(lab);
  size_t i;
  json_t *r;
  mcim_trace_init(t);
  if (!admin)
    return MCIM_INTERNAL;
  /* each role once: its instances share one store, so one answers for all */
  for (const char *const *n = mcim_lab_roles(lab); n && *n; n++) {
    struct mcim_http_result res;
    snprintf(url, sizeof(url), "%s/v1/admin/trace/%s", mcim_lab_url(lab, *n), txn);
    if (mcim_http_request(admin, "GET", url, NULL, NULL, &res) == MCIM_OK)
      mcim_trace_add_answer(t, res.json);
    mcim_http_result_clear(&res);
  }
  json_array_foreach(json_object_get(lab->json, "devices"), i, r) {
    struct mcim_http_client *cli = NULL;
    struct mcim_http_result res;
    const char *name = json_string_value(json_object_get(r, "name"));
    if (mcim_lab_device_client(lab, name, &cli) != MCIM_OK)
      continue;
    snprintf(url, sizeof(url), "http://localhost/v1/admin/trace/%s", txn);
    if (mcim_http_request(cli, "GET", url, NULL, NULL, &res) == MCIM_OK)
      mcim_trace_add_answer(t, res.json);
    mcim_http_result_clear(&res);
    mcim_http_client_free(cli);
  }
  mcim_trace_sort(t);
  return MCIM_OK;
}
