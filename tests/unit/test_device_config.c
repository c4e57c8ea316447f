/* agent.json (src/device/agent.c): the shape the lab writes is accepted, every problem is
 * named (unknown key, bad network URL, nowhere to reach the network, syntax, a TRE backend
 * without its TPM or a TPM without its backend), and a peers
 * file serves the names "networks" lacks, re-read for an SHO added later. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "device/device_priv.h"
#include "mcim/log.h"
#include "unit/test_device_fixture.h"

static mcim_cause_t check_with(struct fx *fx, const char *json, char *err, size_t errlen)
{
  fx_write(fx->dir, "agent.json", json);
  return mcim_device_check_config(fx->dir, err, errlen);
}

static void lab_shape_accepted(void **state)
{
  (void)state;
  struct fx fx;
  char err[2048];
  assert_int_equal(fx_setup(&fx, ""), 0);
  assert_int_equal(mcim_device_check_config(fx.dir, err, sizeof(err)), MCIM_OK);
  /* exactly what src/lab/device.c writes (absolute CA path, integer timeout) */
  char json[1024];
  snprintf(json, sizeof(json),
           "{\"device\": \"dev1\", \"operators_ca\": \"%s/operators-ca.pem\", \"networks\":"
           " {\"vno\": \"https://127.0.0.1:4001\", \"sho-a\": \"https://127.0.0.1:4005\"},"
           " \"poll_ms\": 50, \"procedure_timeout\": 60}",
           fx.dir);
  assert_int_equal(check_with(&fx, json, err, sizeof(err)), MCIM_OK);
  fx_teardown(&fx);
}

static void problems_named(void **state)
{
  (void)state;
  struct fx fx;
  char err[2048];
  assert_int_equal(fx_setup(&fx, ""), 0);

  assert_int_equal(check_with(&fx,
                              "{\"operators_ca\": \"operators-ca.pem\", \"networks\": {},"
                              " \"colour\": \"red\"}",
                              err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "colour"));

  assert_int_equal(check_with(&fx,
                              "{\"operators_ca\": \"operators-ca.pem\", \"networks\":"
                              " {\"vno\": \"http://127.0.0.1:1\"}, \"poll_ms\": 1}",
                              err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "\"vno\": expected an https URL")); /* both problems, */
  assert_non_null(strstr(err, "poll_ms"));                          /* one line each */

  assert_int_equal(check_with(&fx, "{\"operators_ca\": \"operators-ca.pem\", \"networks\": []}",
                              err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "networks"));

  assert_int_equal(check_with(&fx, "{\"operators_ca\": \"operators-ca.pem\"}", err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "where the network is"));

  assert_int_equal(check_with(&fx, "{\"networks\": {}}", err, sizeof(err)), MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, "operators_ca"));

  assert_int_equal(check_with(&fx, "{\"operators_ca\": \n \"x\",, }", err, sizeof(err)),
                   MCIM_CONFIG_INVALID);
  assert_non_null(strstr(err, ":2:"));

  assert_int_equal(check_with(&fx, "[1, 2]", err, sizeof(err)), MCIM_CONFIG_INVALID);
  unlink(strcat(strcpy(err, fx.dir), "/agent.json"));
  assert_int_equal(mcim_device_check_config(fx.dir, err, sizeof(err)), MCIM_CONFIG_MISSING);
  fx_teardown(&fx);
}

/* "tre_backend" and "tpm_tcti" (the TPM TRE, docs/tre-tpm.md): the TPM backend needs the TCTI
 * of its TPM, the software one has none, and each problem is named. */
static void tre_backend_checked(void **state)
{
  (void)state;
  struct fx fx;
  char err[2048];
  const char *head = "{\"operators_ca\": \"operators-ca.pem\", \"networks\": {}";
  char json[512];
  assert_int_equal(fx_setup(&fx, ""), 0);
  static const struct {
    const char *keys, *problem;
  } cases[] = {
      {", \"tre_backend\": \"tpm\"", "needs \"tpm_tcti\""},
      {", \"tpm_tcti\": \"swtpm:port=2321\"", "\"tpm_tcti\" is for \"tre_backend\": \"tpm\" only"},
      {", \"tre_backend\": \"soft\", \"tpm_tcti\": \"swtpm\"", "is for \"tre_backend\""},
      {", \"tre_backend\": \"hsm\"", "\"tre_backend\": expected one of \"soft\", \"tpm\""},
      {", \"tre_backend\": \"tpm\", \"tpm_tcti\": \"\"", "\"tpm_tcti\": expected a string"},
      {", \"tre_backend\": \"tpm\", \"tpm_tcti\": \":port=1\"", "expected NAME or NAME:CONF"},
      {", \"tre_backend\": \"tpm\", \"tpm_tcti\": \"sw tpm\"", "expected NAME or NAME:CONF"},
      {", \"tre_backend\": \"tpm\", \"tpm_tcti\": 2321", "\"tpm_tcti\": expected a string"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    snprintf(json, sizeof(json), "%s%s}", head, cases[i].keys);
    assert_int_equal(check_with(&fx, json, err, sizeof(err)), MCIM_CONFIG_INVALID);
#ifndef MCIM_HAVE_TPM /* without the TPM TRE, a well-typed "tpm" is refused for that first */
    if (strstr(cases[i].keys, "\"tpm\"") && strstr(err, "built without the TPM TRE"))
      continue;
#endif
    if (!strstr(err, cases[i].problem))
      print_error("%s: %s\n", json, err);
    assert_non_null(strstr(err, cases[i].problem));
  }
  /* what `mcim lab device add --tre tpm` writes; and the software default, said or not */
  static const char *const tpm[] = {
      ", \"tre_backend\": \"tpm\", \"tpm_tcti\": \"swtpm:host=127.0.0.1,port=2321\"",
      ", \"tre_backend\": \"tpm\", \"tpm_tcti\": \"device:/dev/tpmrm0\"",
      ", \"tre_backend\": \"tpm\", \"tpm_tcti\": \"tabrmd\""};
  static const char *const soft[] = {", \"tre_backend\": \"soft\"", ""};
  for (size_t i = 0; i < sizeof(tpm) / sizeof(tpm[0]); i++) {
    snprintf(json, sizeof(json), "%s%s}", head, tpm[i]);
#ifdef MCIM_HAVE_TPM
    assert_int_equal(check_with(&fx, json, err, sizeof(err)), MCIM_OK);
#else /* a build without the TPM TRE (MCIM_TPM=OFF) says so */
    assert_int_equal(check_with(&fx, json, err, sizeof(err)), MCIM_CONFIG_INVALID);
    assert_non_null(strstr(err, "built without the TPM TRE"));
#endif
  }
  for (size_t i = 0; i < sizeof(soft) / sizeof(soft[0]); i++) {
    snprintf(json, sizeof(json), "%s%s}", head, soft[i]);
    assert_int_equal(check_with(&fx, json, err, sizeof(err)), MCIM_OK);
  }
  fx_teardown(&fx);
}

static void wrong_device_refused(void **state)
{
  (void)state;
  struct fx fx;
  struct mcim_device *d = NULL;
  assert_int_equal(fx_setup(&fx, ""), 0);
  /* the TRE is dev1's: a configuration naming another device is refused at start */
  fx_write(fx.dir, "agent.json",
           "{\"device\": \"dev2\", \"operators_ca\": \"operators-ca.pem\", \"networks\": {}}");
  assert_int_equal(mcim_device_start(fx.dir, &d), MCIM_CONFIG_INVALID);
  assert_null(d);
  fx_teardown(&fx);
}

static void peers_file_fallback(void **state)
{
  (void)state;
  struct fx fx;
  struct mcim_device *d = NULL;
  char url[128];
  assert_int_equal(fx_setup(&fx, ""), 0);
  fx_write(fx.dir, "peers.json", "{\"vno\": \"https://127.0.0.1:9\", \"pva\": \"https://pva\"}");
  fx_write(fx.dir, "agent.json",
           "{\"operators_ca\": \"operators-ca.pem\", \"peers\": \"peers.json\","
           " \"networks\": {\"vno\": \"https://127.0.0.1:7/\"}}");
  assert_int_equal(mcim_device_start(fx.dir, &d), MCIM_OK);
  /* networks first (trailing slash dropped), then the file */
  assert_int_equal(dev_peer_url(d, "vno", url, sizeof(url)), MCIM_OK);
  assert_string_equal(url, "https://127.0.0.1:7");
  assert_int_equal(dev_peer_url(d, "pva", url, sizeof(url)), MCIM_OK);
  assert_string_equal(url, "https://pva");
  assert_int_equal(dev_peer_url(d, "sho-c", url, sizeof(url)), MCIM_PEER_UNREACHABLE);
  /* an SHO added to the lab later */
  fx_write(fx.dir, "peers.json",
           "{\"vno\": \"https://127.0.0.1:9\", \"sho-c\": \"https://127.0.0.1:8\"}");
  assert_int_equal(dev_peer_url(d, "sho-c", url, sizeof(url)), MCIM_OK);
  assert_string_equal(url, "https://127.0.0.1:8");
  /* never a clear-text or odd URL, never a name that is not one */
  fx_write(fx.dir, "peers.json", "{\"sho-d\": \"http://127.0.0.1:8\"}");
  assert_int_equal(dev_peer_url(d, "sho-d", url, sizeof(url)), MCIM_PEER_UNREACHABLE);
  assert_int_equal(dev_peer_url(d, "../x", url, sizeof(url)), MCIM_INVALID_ARGUMENT);
  mcim_device_free(d);
  fx_teardown(&fx);
}

int main(void)
{
  mcim_log_init("test", MCIM_LOG_TEXT, MCIM_LOG_ERROR, stderr);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lab_shape_accepted),
      cmocka_unit_test(problems_named),
      cmocka_unit_test(tre_backend_checked),
      cmocka_unit_test(wrong_device_refused),
      cmocka_unit_test(peers_file_fallback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
