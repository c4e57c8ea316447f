/* X.509 certificates as the PKI checks them: the PEM a peer sends (GET /v1/certificate, the
 * tre_cert of a device's request or quote, an order's attestation and key-agreement
 * certificates) read by mcim_pki_cert_from_pem and verified by the functions the roles call:
 * mcim_role_peer_key_from_pem (the operators' CA, usage TLS, CN = the peer's name) and
 * mcim_role_device_key_from_pem (the M2MES CA, usage TRE attestation or key agreement, CN =
 * the device), with the fixture's CAs as the role's trust anchors; then mcim_pki_cert_name.
 * Also the JWK decoder (mcim_jose_key_from_jwk: the owner's key of a handover statement).
 * mcim has no certificate signing requests: the M2MES certifies the TRE's public JWKs at
 * manufacture (src/lab/device.c), so there is no CSR decoder to fuzz.
 *
 * Input: one mode byte, then
 *   0  PEM, checked as a network role's certificate (sho-a);
 *   1  PEM, as a TRE attestation certificate of dev1;
 *   2  PEM, as a TRE key-agreement certificate of dev1;
 *   3  DER, put into PEM here, then as 0 (the fuzzer mutates the ASN.1, not the base64);
 *   4  DER, put into PEM here, then as 1;
 *   5  a JWK.
 * Seeds: tests/fuzz/corpus/fuzz_cert/ (the fixture's certificates, PEM and DER). */
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/pki.h"
#include "mcim/role.h"

static struct mcim_role role;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  role.kind = mcim_role_kind_find("pva");
  role.name = "pva";
  role.operators_ca = fuzz_cert("operators-ca");
  role.m2mes_ca = fuzz_cert("m2mes-ca");
  return 0;
}

static char *der_to_pem(const uint8_t *der, size_t len)
{
  BIO *bio = BIO_new(BIO_s_mem());
  char *data = NULL, *pem = NULL;
  if (bio && PEM_write_bio(bio, "CERTIFICATE", "", der, (long)len) > 0) {
    long n = BIO_get_mem_data(bio, &data);
    if (n > 0)
      pem = fuzz_strndup((const uint8_t *)data, (size_t)n);
  }
  BIO_free(bio);
  return pem;
}

static void check(const char *pem, int as)
{
  mcim_jose_key_t *key = NULL;
  mcim_pki_verdicts_clear();
  if (as == 0)
    (void)mcim_role_peer_key_from_pem(&role, pem, FUZZ_SHO, &key);
  else
    (void)mcim_role_device_key_from_pem(&role, pem, FUZZ_DEVICE,
                                        as == 1 ? MCIM_CERT_TRE_ATTESTATION
                                                : MCIM_CERT_TRE_KEY_AGREEMENT,
                                        &key);
  mcim_jose_key_free(key);
  X509 *cert = NULL;
  if (mcim_pki_cert_from_pem(pem, strlen(pem), &cert) == MCIM_OK) {
    char *cn = NULL;
    if (mcim_pki_cert_name(cert, &cn) == MCIM_OK)
      free(cn);
    /* the other trust domain never accepts it */
    if (mcim_pki_cert_verify(cert, as == 0 ? role.m2mes_ca : role.operators_ca,
                             as == 0 ? MCIM_CERT_TLS : MCIM_CERT_TRE_ATTESTATION, NULL, 0) ==
        MCIM_OK)
      abort();
    X509_free(cert);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 6;
  data++;
  size--;
  char *text = NULL;
  if (mode <= 2) {
    text = fuzz_strndup(data, size);
    check(text, mode);
  } else if (mode <= 4) {
    text = der_to_pem(data, size);
    if (text)
      check(text, mode - 3);
  } else {
    mcim_jose_key_t *key = NULL;
    char *pub = NULL;
    text = fuzz_strndup(data, size);
    if (mcim_jose_key_from_jwk(text, size, &key) == MCIM_OK &&
        mcim_jose_key_public_jwk(key, &pub) == MCIM_OK)
      free(pub);
    mcim_jose_key_free(key);
  }
  free(text);
  return 0;
}
