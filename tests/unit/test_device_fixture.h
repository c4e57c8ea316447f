/* Test fixture of the device agent tests (test_device_*.c): a device folder in a temporary
 * directory with a real software TRE (owner key pinned, a PCID credential, the lab CAs),
 * firmware images, a peers file whose URLs lead nowhere (nothing listens on port 1) and an
 * agent.json with short lifetimes. Header-only: each test program includes it once. */
#ifndef MCIM_TEST_DEVICE_FIXTURE_H
#define MCIM_TEST_DEVICE_FIXTURE_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/firmware.h"
#include "mcim/jose.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"

#define FX_DEVICE "dev1"
#define FX_MODEL "m2me-lab-1"

struct fx {
  char dir[128];
  char tre[160];
  char sock[160];
  mcim_jose_key_t *owner; /* the owner's key pair (the subscriber's) */
  mcim_jose_key_t *other; /* somebody else's */
  mcim_pki_ca_t *ops;     /* the operators' CA (SHO certificates for fx_provision) */
};

static __attribute__((unused)) void fx_write(const char *dir, const char *name, const char *text)
{
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f)
    abort();
  fputs(text, f);
  fclose(f);
}

static __attribute__((unused)) void fx_rm_rf(const char *path)
{
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *dd = opendir(path);
    struct dirent *e;
    while (dd && (e = readdir(dd)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      char sub[1024];
      snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
      fx_rm_rf(sub);
    }
    if (dd)
      closedir(dd);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static __attribute__((unused)) char *fx_ca_pem(mcim_pki_ca_t *ca)
{
  char *pem = NULL;
  if (mcim_pki_cert_to_pem(ca->cert, &pem) != MCIM_OK)
    abort();
  return pem;
}

/* A PCID credential for the TRE, sealed to its key-agreement key as the M2MES does. */
/* The lifetime of the PCID credential fx_setup installs (s): a test of an expired PCID sets
 * it short before fx_setup (the TRE refuses to install an expired one). */
static __attribute__((unused)) int64_t fx_pcid_lifetime = 3600;

static __attribute__((unused)) mcim_cause_t fx_install_pcid(mcim_tre_t *tre, const char *pcid)
{
  char *jwk = NULL, *jwe = NULL, doc[256];
  mcim_jose_key_t *ka = NULL;
  mcim_cause_t rc = mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &jwk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka);
  snprintf(doc, sizeof(doc),
           "{\"pcid\":\"%s\",\"k\":\"000102030405060708090a0b0c0d0e0f\","
           "\"opc\":\"101112131415161718191a1b1c1d1e1f\",\"amf\":\"8000\",\"expires\":%lld}",
           pcid, (long long)(mcim_now() + fx_pcid_lifetime));
  if (rc == MCIM_OK)
    rc = mcim_jwe_encrypt(ka, (const uint8_t *)doc, strlen(doc), &jwe);
  if (rc == MCIM_OK)
    rc = tre->ops->pcid_install(tre->ctx, jwe, strlen(jwe));
  free(jwk);
  free(jwe);
  mcim_jose_key_free(ka);
  return rc;
}

/* `extra_config`: more agent.json members (",\"key\": value" form), or "". */
static __attribute__((unused)) int fx_setup(struct fx *fx, const char *extra_config)
{
  mcim_pki_ca_t *ops = NULL, *m2mes = NULL;
  char *ops_pem = NULL, *m2mes_pem = NULL, *owner_jwk = NULL, fw[256], cfg[2048];
  mcim_tre_t *tre = NULL;
  int ok = -1;

  memset(fx, 0, sizeof(*fx));
  snprintf(fx->dir, sizeof(fx->dir), "/tmp/mcim-dev-XXXXXX");
  if (!mkdtemp(fx->dir))
    return -1;
  snprintf(fx->tre, sizeof(fx->tre), "%s/tre", fx->dir);
  snprintf(fx->sock, sizeof(fx->sock), "%s/control.sock", fx->dir);
  if (mcim_pki_ca_create("test operators CA", 30, &fx->ops) != MCIM_OK ||
      mcim_pki_ca_create("test M2MES CA", 30, &m2mes) != MCIM_OK)
    goto cleanup;
  ops = fx->ops;
  ops_pem = fx_ca_pem(ops);
  m2mes_pem = fx_ca_pem(m2mes);
  if (mcim_jose_key_generate(&fx->owner) != MCIM_OK ||
      mcim_jose_key_generate(&fx->other) != MCIM_OK ||
      mcim_jose_key_public_jwk(fx->owner, &owner_jwk) != MCIM_OK)
    goto cleanup;
  if (mcim_tre_soft_create(fx->tre, FX_DEVICE, FX_MODEL, owner_jwk, ops_pem, m2mes_pem) !=
          MCIM_OK ||
      mcim_tre_soft_open(fx->tre, &tre) != MCIM_OK ||
      fx_install_pcid(tre, "001010000000001") != MCIM_OK)
    goto cleanup;
  fx_write(fx->dir, "operators-ca.pem", ops_pem);
  snprintf(fw, sizeof(fw), "%s/firmware", fx->dir);
  mkdir(fw, 0700);
  for (size_t i = 0; mcim_firmware_components[i]; i++) {
    char *img = NULL, name[64];
    if (mcim_firmware_image(FX_MODEL, mcim_firmware_components[i], &img) != MCIM_OK)
      goto cleanup;
    snprintf(name, sizeof(name), "%s.img", mcim_firmware_components[i]);
    fx_write(fw, name, img);
    free(img);
  }
  /* the lab's shape (src/lab/device.c): the networks inline */
  snprintf(cfg, sizeof(cfg),
           "{\"device\": \"" FX_DEVICE "\", \"operators_ca\": \"operators-ca.pem\","
           " \"networks\": {\"vno\": \"https://127.0.0.1:1\", \"ro\": \"https://127.0.0.1:1\","
           " \"pva\": \"https://127.0.0.1:1\", \"sho-a\": \"https://127.0.0.1:1\","
           " \"sho-b\": \"https://127.0.0.1:1\", \"m2mes\": \"https://127.0.0.1:1\"},"
           " \"poll_ms\": 20, \"request_timeout_ms\": 500%s}",
           extra_config ? extra_config : "");
  fx_write(fx->dir, "agent.json", cfg);
  ok = 0;
cleanup:
  mcim_tre_close(tre);
  mcim_pki_ca_free(m2mes);
  free(ops_pem);
  free(m2mes_pem);
  free(owner_jwk);
  return ok;
}

static __attribute__((unused)) void fx_teardown(struct fx *fx)
{
  mcim_pki_ca_free(fx->ops);
  mcim_jose_key_free(fx->owner);
  mcim_jose_key_free(fx->other);
  fx_rm_rf(fx->dir);
}

/* An instruction signed by `key`; claims given, NULL to leave one out. */
static __attribute__((unused)) char *fx_instruction(const mcim_jose_key_t *key, const char *sub, const char *aud,
                            const char *procedure, const char *via, const char *sho,
                            const char *txn, int64_t lifetime)
{
  char *jws = NULL;
  int64_t now = mcim_now();
  json_t *extra = json_object();
  if (procedure)
    json_object_set_new(extra, "procedure", json_string(procedure));
  if (via)
    json_object_set_new(extra, "via", json_string(via));
  if (sho)
    json_object_set_new(extra, "sho", json_string(sho));
  mcim_claims_t c = {.iss = "subscriber", .sub = sub, .aud = aud,
                     .typ = "mcim-instruction+jwt", .txn = txn, .iat = now,
                     .exp = now + lifetime, .extra = extra};
  if (mcim_jws_sign(key, &c, &jws) != MCIM_OK)
    jws = NULL;
  json_decref(extra);
  return jws;
}

enum fx_mode { FX_STAGED, FX_ACTIVE, FX_INACTIVE };

/* An MCIM of SHO `sho` (IMSI `imsi`) in the TRE as a real SHO would send it: a package
 * signed by a key certified by the operators' CA (CN = sho), sealed to the TRE's
 * key-agreement key, staged under `txn`, then installed active or inactive (`mode`). */
static __attribute__((unused)) mcim_cause_t fx_provision(struct fx *fx, mcim_tre_t *tre,
                                                         const char *sho, const char *imsi,
                                                         const char *txn, enum fx_mode mode)
{
  EVP_PKEY *pk = NULL;
  X509 *cert = NULL;
  mcim_jose_key_t *key = NULL, *ka = NULL;
  char *pem = NULL, *jwk = NULL, *pkg = NULL, doc[256], slot[64];
  int64_t now = mcim_now();
  mcim_cause_t rc = mcim_pki_key_generate(&pk);
  mcim_cert_request_t req = {.name = sho, .usage = MCIM_CERT_TLS, .key = pk, .days = 30};
  if (rc == MCIM_OK)
    rc = mcim_pki_issue(fx->ops, &req, &cert);
  if (rc == MCIM_OK)
    rc = mcim_pki_cert_to_pem(cert, &pem);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pk, &key);
  if (rc == MCIM_OK)
    rc = mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &jwk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_jwk(jwk, strlen(jwk), &ka);
  snprintf(doc, sizeof(doc),
           "{\"sho\":\"%s\",\"imsi\":\"%s\",\"k\":\"202122232425262728292a2b2c2d2e2f\","
           "\"opc\":\"303132333435363738393a3b3c3d3e3f\",\"amf\":\"8000\"}",
           sho, imsi);
  mcim_claims_t c = {.iss = sho, .sub = FX_DEVICE, .aud = FX_DEVICE, .typ = "mcim-package+jwt",
                     .txn = txn, .iat = now, .exp = now + 600};
  if (rc == MCIM_OK)
    rc = mcim_package_seal(key, &c, ka, (const uint8_t *)doc, strlen(doc), &pkg);
  if (rc == MCIM_OK)
    rc = tre->ops->stage(tre->ctx, txn, pkg, strlen(pkg), pem);
  if (rc == MCIM_OK && mode != FX_STAGED)
    rc = mode == FX_ACTIVE ? tre->ops->install(tre->ctx, txn, slot)
                           : tre->ops->install_inactive(tre->ctx, txn, slot);
  EVP_PKEY_free(pk);
  X509_free(cert);
  mcim_jose_key_free(key);
  mcim_jose_key_free(ka);
  free(pem);
  free(jwk);
  free(pkg);
  return rc;
}

#define FX_TXN "0123456789abcdef0123456789abcdef"
#define FX_TXN2 "fedcba9876543210fedcba9876543210"

#endif
