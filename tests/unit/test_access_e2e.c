/* Access network model against a real lab (mcimd processes on loopback, real TLS):
 * this test plays a device with a software USIM (Milenage, TS 33.102 USIM-side checks)
 * whose PCID it registers at the ICF as the M2MES would. It checks:
 *  - PCID attach at the VNO with AVs from the ICF, a `restricted` token;
 *  - a restricted token reaches the RO and the PVA but not an SHO's device services;
 *  - no token: nothing;
 *  - a wrong K: the USIM sees a MAC failure (the network's AUTN does not verify), and a
 *    wrong RES is refused by the VNO;
 *  - a USIM ahead of the ICF (SQN out of window): SYNC_FAILURE, AUTS, resynchronisation at
 *    the ICF, then success;
 *  - an expired PCID is refused at the ICF with CREDENTIAL_EXPIRED. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcim/aka.h"
#include "mcim/lab.h"
#include "mcim/pki.h"
#include "mcim/util.h"

static char dir[] = "/tmp/mcim-access-XXXXXX";
static mcim_lab_t *lab;
static struct mcim_http_client *m2mes_cli, *plain_cli;

static const uint8_t K[16] = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                              0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
static const uint8_t OPC[16] = {0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e,
                                0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf};

struct usim {
  uint8_t k[16], opc[16];
  struct mcim_sqn_params params;
  struct mcim_sqn_usim sqn;
};

static void usim_init(struct usim *u, const uint8_t k[16])
{
  memcpy(u->k, k, 16);
  memcpy(u->opc, OPC, 16);
  mcim_sqn_params_default(&u->params);
  assert_int_equal(mcim_sqn_usim_init(&u->params, &u->sqn), MCIM_OK);
}

static char *url(const char *role, const char *path)
{
  static char buf[512];
  snprintf(buf, sizeof(buf), "%s%s", mcim_lab_url(lab, role), path);
  return buf;
}

static void register_pcid(const char *pcid, const char *device, int64_t expires)
{
  char k[33], opc[33];
  mcim_hex_encode(K, 16, k);
  mcim_hex_encode(OPC, 16, opc);
  json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "pcid", pcid, "device", device, "k", k,
                           "opc", opc, "amf", "8000", "expires", (json_int_t)expires);
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(m2mes_cli, "POST", url("ro", "/v1/icf/pcids"), body, NULL, &r),
                   MCIM_OK);
  mcim_http_result_clear(&r);
  json_decref(body);
}

/* One challenge answered by the USIM. Returns the USIM's verdict (MCIM_OK, MAC_FAILURE,
 * SYNC_FAILURE...); on MCIM_OK the network's answer is in *net_rc and the token in token[]. */
static mcim_cause_t answer_challenge(struct usim *u, json_t *challenge, mcim_cause_t *net_rc,
                                     char *token, size_t token_len, json_t **next_challenge)
{
  uint8_t rand[16], autn[16];
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(challenge, "rand")), rand, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(challenge, "autn")), autn, 16), MCIM_OK);
  const char *id = json_string_value(json_object_get(challenge, "attach_id"));
  mcim_milenage_t *m = NULL;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, u->k, u->opc), MCIM_OK);
  struct mcim_sqn_usim next;
  struct mcim_aka_usim_out out;
  mcim_cause_t usim = mcim_aka_usim_check(m, &u->params, &u->sqn, rand, autn, &next, &out);
  mcim_milenage_free(m);
  char path[128], hex[33];
  snprintf(path, sizeof(path), "/v1/attach/%s", id);
  json_t *body = NULL;
  if (usim == MCIM_OK) {
    u->sqn = next; /* committed: the challenge was good */
    mcim_hex_encode(out.res, 8, hex);
    body = json_pack("{s:s}", "res", hex);
  } else if (usim == MCIM_SYNC_FAILURE) {
    mcim_hex_encode(out.auts, 14, hex);
    body = json_pack("{s:s}", "auts", hex);
  } else {
    return usim;
  }
  struct mcim_http_result r;
  *net_rc = mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r);
  if (*net_rc == MCIM_OK && json_object_get(r.json, "token"))
    snprintf(token, token_len, "%s", json_string_value(json_object_get(r.json, "token")));
  if (next_challenge)
    *next_challenge = *net_rc == MCIM_OK && json_object_get(r.json, "rand") ? json_incref(r.json) : NULL;
  mcim_http_result_clear(&r);
  json_decref(body);
  return usim;
}

static json_t *attach_start(const char *pcid, mcim_cause_t want)
{
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "pcid", pcid);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", "/v1/attach"), body, NULL, &r), want);
  json_decref(body);
  json_t *c = want == MCIM_OK ? json_incref(r.json) : NULL;
  mcim_http_result_clear(&r);
  return c;
}

static int setup(void **state)
{
  (void)state;
  if (!mkdtemp(dir))
    return -1;
  setenv("MCIM_BIN", MCIM_BIN_DIR, 1);
  char labdir[128];
  snprintf(labdir, sizeof(labdir), "%s/lab", dir);
  if (mcim_lab_up(labdir, NULL, &lab) != MCIM_OK)
    return -1;
  char ca[256], cert[256], key[256];
  snprintf(ca, sizeof(ca), "%s/pki/%s", mcim_lab_path(lab), MCIM_PKI_OPERATORS_CA_CERT);
  snprintf(cert, sizeof(cert), "%s/pki/m2mes/cert.pem", mcim_lab_path(lab));
  snprintf(key, sizeof(key), "%s/pki/m2mes/key.pem", mcim_lab_path(lab));
  struct mcim_http_client_cfg mc = {.ca_file = ca, .cert_file = cert, .key_file = key};
  struct mcim_http_client_cfg pc = {.ca_file = ca};
  if (mcim_http_client_new(&mc, &m2mes_cli) != MCIM_OK ||
      mcim_http_client_new(&pc, &plain_cli) != MCIM_OK)
    return -1;
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  mcim_http_client_free(m2mes_cli);
  mcim_http_client_free(plain_cli);
  if (lab)
    mcim_lab_down(lab);
  mcim_lab_free(lab);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_restricted_access(void **state)
{
  (void)state;
  struct usim u;
  char token[4096] = "";
  mcim_cause_t net;
  usim_init(&u, K);
  register_pcid("001019000000001", "soft1", mcim_now() + 3600);
  json_t *c = attach_start("001019000000001", MCIM_OK);
  assert_int_equal(answer_challenge(&u, c, &net, token, sizeof(token), NULL), MCIM_OK);
  json_decref(c);
  assert_int_equal(net, MCIM_OK);
  assert_true(strlen(token) > 20);

  struct mcim_http_result r;
  /* RO: the token is accepted (the DRF then says there is no order for this device) */
  json_t *body = json_pack("{s:s,s:s}", "txn", "00112233445566778899aabbccddeeff", "device", "soft1");
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("ro", "/v1/drf/discover"), body, token, &r),
                   MCIM_NOT_ORDERED);
  mcim_http_result_clear(&r);
  /* ... and refused without one */
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("ro", "/v1/drf/discover"), body, NULL, &r),
                   MCIM_NO_ACCESS);
  mcim_http_result_clear(&r);
  /* ... or for another device */
  json_object_set_new(body, "device", json_string("someone-else"));
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("ro", "/v1/drf/discover"), body, token, &r),
                   MCIM_FORBIDDEN);
  mcim_http_result_clear(&r);
  json_decref(body);
  /* PVA: reachable (nothing pending for us) */
  assert_int_equal(mcim_http_request(plain_cli, "GET", url("pva", "/v1/validations/pending/soft1"),
                                     NULL, token, &r),
                   MCIM_NOT_FOUND);
  mcim_http_result_clear(&r);
  /* an SHO's device services need full access */
  assert_int_equal(mcim_http_request(plain_cli, "GET", url("sho-a", "/v1/devices/soft1/subscription"),
                                     NULL, token, &r),
                   MCIM_SCOPE_RESTRICTED);
  mcim_http_result_clear(&r);
  /* a forged token (another signer) is refused */
  token[strlen(token) - 3] ^= 1;
  assert_int_not_equal(mcim_http_request(plain_cli, "GET", url("pva", "/v1/validations/pending/soft1"),
                                         NULL, token, &r),
                       MCIM_NOT_FOUND);
  mcim_http_result_clear(&r);
}

static void test_wrong_key(void **state)
{
  (void)state;
  struct usim u;
  uint8_t wrong[16];
  char token[4096] = "";
  mcim_cause_t net = MCIM_OK;
  memcpy(wrong, K, 16);
  wrong[0] ^= 0x80;
  usim_init(&u, wrong);
  register_pcid("001019000000002", "soft2", mcim_now() + 3600);
  json_t *c = attach_start("001019000000002", MCIM_OK);
  /* the USIM does not authenticate the network */
  assert_int_equal(answer_challenge(&u, c, &net, token, sizeof(token), NULL), MCIM_MAC_FAILURE);
  /* and a device that answers anyway is refused */
  char path[128];
  snprintf(path, sizeof(path), "/v1/attach/%s", json_string_value(json_object_get(c, "attach_id")));
  json_t *body = json_pack("{s:s}", "res", "0011223344556677");
  struct mcim_http_result r;
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r),
                   MCIM_RES_MISMATCH);
  mcim_http_result_clear(&r);
  /* a challenge is answered once */
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r),
                   MCIM_WRONG_STATE);
  mcim_http_result_clear(&r);
  json_decref(body);
  json_decref(c);
}

static void test_resync(void **state)
{
  (void)state;
  struct usim u;
  char token[4096] = "";
  mcim_cause_t net = MCIM_OK;
  usim_init(&u, K);
  register_pcid("001019000000003", "soft3", mcim_now() + 3600);
  /* The USIM has seen SQNs far ahead of the ICF (say, the HE lost its state): feed it a
   * run of vectors made with its own key. */
  struct mcim_sqn_he he, next;
  assert_int_equal(mcim_sqn_he_init(&u.params, &he), MCIM_OK);
  mcim_milenage_t *m = NULL;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, u.k, u.opc), MCIM_OK);
  for (int i = 0; i < 100; i++) {
    uint64_t sqn;
    uint8_t sqnb[6];
    struct mcim_aka_av av;
    struct mcim_sqn_usim un;
    struct mcim_aka_usim_out out;
    assert_int_equal(mcim_sqn_he_next(&u.params, &he, &next, &sqn), MCIM_OK);
    he = next;
    mcim_sqn_to_bytes(sqn, sqnb);
    assert_int_equal(mcim_aka_gen_av(m, NULL, sqnb, (const uint8_t *)"\x80\x00", &av), MCIM_OK);
    assert_int_equal(mcim_aka_usim_check(m, &u.params, &u.sqn, av.rand, av.autn, &un, &out), MCIM_OK);
    u.sqn = un;
  }
  mcim_milenage_free(m);

  json_t *c = attach_start("001019000000003", MCIM_OK), *again = NULL;
  assert_int_equal(answer_challenge(&u, c, &net, token, sizeof(token), &again), MCIM_SYNC_FAILURE);
  assert_int_equal(net, MCIM_OK);
  assert_non_null(again); /* the VNO resynchronised at the ICF and challenges again */
  assert_int_equal(answer_challenge(&u, again, &net, token, sizeof(token), NULL), MCIM_OK);
  assert_int_equal(net, MCIM_OK);
  assert_true(strlen(token) > 20);
  json_decref(c);
  json_decref(again);
}

static void test_expired_pcid(void **state)
{
  (void)state;
  register_pcid("001019000000004", "soft4", mcim_now() - 1);
  json_t *c = attach_start("001019000000004", MCIM_CREDENTIAL_EXPIRED);
  assert_null(c);
  assert_null(attach_start("001019999999999", MCIM_UNKNOWN_IDENTITY));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_restricted_access),
      cmocka_unit_test(test_wrong_key),
      cmocka_unit_test(test_resync),
      cmocka_unit_test(test_expired_pcid),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
