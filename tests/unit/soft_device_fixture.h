/* A real lab (mcimd processes on loopback) and a device played by the test with a software
 * USIM: its PCID registered at the ICF with the M2MES certificate, attach and AKA at the VNO.
 * Shared by the tests that need the network side's real answers (test_access_e2e.c,
 * test_metrics_e2e.c). Header-only: include it once per test program. */
#ifndef MCIM_TEST_SOFT_DEVICE_FIXTURE_H
#define MCIM_TEST_SOFT_DEVICE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/aka.h"
#include "mcim/jose.h"
#include "mcim/lab.h"
#include "mcim/pki.h"
#include "mcim/util.h"

#define SOFT_FN static __attribute__((unused))

static mcim_lab_t *lab;
static struct mcim_http_client *m2mes_cli, *plain_cli;
static char ca[256];

/* TS 35.208 test set 1's K and OPc (any key would do; these are easy to recognise). */
static const uint8_t K[16] = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                              0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
static const uint8_t OPC[16] = {0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e,
                                0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf};

struct usim {
  uint8_t k[16], opc[16];
  struct mcim_sqn_params params;
  struct mcim_sqn_usim sqn;
};

SOFT_FN void usim_init(struct usim *u, const uint8_t k[16])
{
  memcpy(u->k, k, 16);
  memcpy(u->opc, OPC, 16);
  mcim_sqn_params_default(&u->params);
  assert_int_equal(mcim_sqn_usim_init(&u->params, &u->sqn), MCIM_OK);
}

SOFT_FN char *url(const char *role, const char *path)
{
  static char buf[512];
  snprintf(buf, sizeof(buf), "%s%s", mcim_lab_url(lab, role), path);
  return buf;
}

/* What the M2MES does at manufacture: the PCID and its K/OPc at the ICF. */
SOFT_FN void register_pcid(const char *pcid, const char *device, int64_t expires)
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

/* POST vno /v1/attach; the challenge on MCIM_OK (caller decrefs), NULL otherwise. */
SOFT_FN json_t *attach_start(const char *pcid, mcim_cause_t want)
{
  struct mcim_http_result r;
  json_t *body = json_pack("{s:s}", "pcid", pcid);
  assert_int_equal(mcim_http_request(plain_cli, "POST", url("vno", "/v1/attach"), body, NULL, &r),
                   want);
  json_decref(body);
  json_t *c = want == MCIM_OK ? json_incref(r.json) : NULL;
  mcim_http_result_clear(&r);
  return c;
}

/* The USIM checks a challenge (TS 33.102 6.3.3, MAC first); RES or AUTS goes to the VNO.
 * Returns the USIM's verdict (MCIM_OK, MCIM_SYNC_FAILURE, MCIM_MAC_FAILURE...); when
 * something was sent, the network's answer is in *net_rc, a token in `token` (may be NULL)
 * and a new challenge (after AUTS) in *next (may be NULL; caller decrefs). */
SOFT_FN mcim_cause_t usim_answer(struct usim *u, json_t *challenge, mcim_cause_t *net_rc,
                                 char *token, size_t token_len, json_t **next)
{
  uint8_t rand[16], autn[16];
  char path[128], hex[33];
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(challenge, "rand")), rand, 16), MCIM_OK);
  assert_int_equal(mcim_hex_decode_str(json_string_value(json_object_get(challenge, "autn")), autn, 16), MCIM_OK);
  mcim_milenage_t *m = NULL;
  assert_int_equal(mcim_milenage_new(&m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(m, u->k, u->opc), MCIM_OK);
  struct mcim_sqn_usim nsqn;
  struct mcim_aka_usim_out out;
  mcim_cause_t usim = mcim_aka_usim_check(m, &u->params, &u->sqn, rand, autn, &nsqn, &out);
  mcim_milenage_free(m);
  json_t *body = NULL;
  if (usim == MCIM_OK) {
    u->sqn = nsqn; /* committed: the challenge was good */
    mcim_hex_encode(out.res, 8, hex);
    body = json_pack("{s:s}", "res", hex);
  } else if (usim == MCIM_SYNC_FAILURE) {
    mcim_hex_encode(out.auts, 14, hex);
    body = json_pack("{s:s}", "auts", hex);
  } else {
    return usim;
  }
  snprintf(path, sizeof(path), "/v1/attach/%s",
           json_string_value(json_object_get(challenge, "attach_id")));
  struct mcim_http_result r;
  *net_rc = mcim_http_request(plain_cli, "POST", url("vno", path), body, NULL, &r);
  if (token && *net_rc == MCIM_OK && json_object_get(r.json, "token"))
    snprintf(token, token_len, "%s", json_string_value(json_object_get(r.json, "token")));
  if (next)
    *next = *net_rc == MCIM_OK && json_object_get(r.json, "rand") ? json_incref(r.json) : NULL;
  mcim_http_result_clear(&r);
  json_decref(body);
  return usim;
}

/* What the device's TRE adds where the RO answers the device itself (discovery, package):
 * `proof`, an mcim-request+jwt for `what` of `txn` signed by an attestation key of
 * `device` certified by the lab's M2MES CA (as at manufacture), and `tre_cert`. `key_out`
 * (may be NULL) gets that key, to sign more with. 0 on success. */
SOFT_FN int soft_device_proof(const char *device, const char *txn, const char *what,
                              json_t *body, mcim_jose_key_t **key_out)
{
  char pki[300];
  mcim_pki_ca_t *m2mes_ca = NULL;
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  char *cert_pem = NULL, *jws = NULL;
  mcim_jose_key_t *key = NULL;
  json_t *extra = json_pack("{s:s}", "for", what);
  int rc = -1;
  snprintf(pki, sizeof(pki), "%s/pki", mcim_lab_path(lab));
  mcim_cert_request_t req = {.name = device, .usage = MCIM_CERT_TRE_ATTESTATION};
  if (mcim_pki_lab_load_ca(pki, MCIM_PKI_CA_M2MES, &m2mes_ca) != MCIM_OK ||
      mcim_pki_key_generate(&pk) != MCIM_OK)
    goto out;
  req.key = pk;
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = device, .sub = device, .aud = "ro", .typ = "mcim-request+jwt",
                     .txn = txn, .iat = now, .exp = now + 300, .extra = extra};
  if (mcim_pki_issue(m2mes_ca, &req, &cert) != MCIM_OK ||
      mcim_pki_cert_to_pem(cert, &cert_pem) != MCIM_OK ||
      mcim_jose_key_from_pkey(pk, &key) != MCIM_OK || mcim_jws_sign(key, &c, &jws) != MCIM_OK)
    goto out;
  json_object_set_new(body, "proof", json_string(jws));
  json_object_set_new(body, "tre_cert", json_string(cert_pem));
  if (key_out) {
    *key_out = key;
    key = NULL;
  }
  rc = 0;
out:
  json_decref(extra);
  free(jws);
  free(cert_pem);
  mcim_jose_key_free(key);
  X509_free(cert);
  EVP_PKEY_free(pk);
  mcim_pki_ca_free(m2mes_ca);
  return rc;
}

/* Start a lab in a new folder made from `dir_template` (mkdtemp), with the clients. */
SOFT_FN int soft_lab_up(char *dir_template)
{
  char labdir[128], cert[256], key[256];
  if (!mkdtemp(dir_template))
    return -1;
  setenv("MCIM_BIN", MCIM_BIN_DIR, 1);
  snprintf(labdir, sizeof(labdir), "%s/lab", dir_template);
  if (mcim_lab_up(labdir, NULL, &lab) != MCIM_OK)
    return -1;
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

SOFT_FN int soft_lab_down(const char *dir)
{
  mcim_http_client_free(m2mes_cli);
  mcim_http_client_free(plain_cli);
  if (lab)
    mcim_lab_down(lab);
  mcim_lab_free(lab);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

#endif
