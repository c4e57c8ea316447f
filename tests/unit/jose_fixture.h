/* The JOSE tests (tests/unit/test_jose.c, test_jose_jwe.c, test_jose_key.c) share this fixture:
 * three parties (issuer, recipient, other) with cjose and mcim keys made at group set-up, the
 * RFC examples' data, default claims and expectations, hand-made (hostile) JWS and a sealed
 * package's MCIM content. Header-only (static functions): each test program includes it once,
 * after the cmocka headers. */
#ifndef MCIM_TEST_JOSE_FIXTURE_H
#define MCIM_TEST_JOSE_FIXTURE_H

#include <cjose/cjose.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "mcim/jose.h"
#include "mcim/metrics.h"
#include "mcim/opcount.h"
#include "mcim/util.h"

/* What some programs do not use. */
#define JOSE_SHARED static __attribute__((unused))

#define NOW ((int64_t)1700000000)
#define TYP "mcim-package+jwt"

/* ---- fixtures ----------------------------------------------------------------------- */

struct party {
  cjose_jwk_t *jwk;     /* for hand-made (hostile) objects */
  mcim_jose_key_t *key; /* private */
  mcim_jose_key_t *pub; /* public only */
};

JOSE_SHARED struct party issuer, recipient, other;

JOSE_SHARED void party_make(struct party *p)
{
  cjose_err err;
  p->jwk = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
  assert_non_null(p->jwk);
  char *priv = cjose_jwk_to_json(p->jwk, true, &err);
  char *pub = cjose_jwk_to_json(p->jwk, false, &err);
  assert_int_equal(mcim_jose_key_from_jwk(priv, strlen(priv), &p->key), MCIM_OK);
  assert_int_equal(mcim_jose_key_from_jwk(pub, strlen(pub), &p->pub), MCIM_OK);
  mcim_wipe(priv, strlen(priv));
  free(priv);
  free(pub);
}

JOSE_SHARED void party_free(struct party *p)
{
  cjose_jwk_release(p->jwk);
  mcim_jose_key_free(p->key);
  mcim_jose_key_free(p->pub);
}

JOSE_SHARED int group_setup(void **state)
{
  (void)state;
  party_make(&issuer);
  party_make(&recipient);
  party_make(&other);
  return 0;
}

JOSE_SHARED int group_teardown(void **state)
{
  (void)state;
  party_free(&issuer);
  party_free(&recipient);
  party_free(&other);
  return 0;
}

JOSE_SHARED char *read_data(const char *name, size_t *len)
{
  char path[512];
  snprintf(path, sizeof(path), "%s/jose/%s", MCIM_TEST_DATA, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 16);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  fclose(f);
  if (len)
    *len = n;
  return buf;
}

JOSE_SHARED mcim_claims_t claims_default(void)
{
  return (mcim_claims_t){.iss = "sho-a", .sub = "dev1", .aud = "dev1", .typ = TYP,
                         .txn = "0123456789abcdef0123456789abcdef", .iat = NOW, .exp = NOW + 300};
}

JOSE_SHARED mcim_jws_expect_t expect_default(void)
{
  return (mcim_jws_expect_t){.iss = "sho-a", .aud = "dev1", .typ = TYP, .now = NOW, .skew = 30};
}

/* A claims object with every mandatory claim; tests then break one thing. */
JOSE_SHARED json_t *payload_default(void)
{
  json_t *p = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "iss", "sho-a", "sub", "dev1",
                        "aud", "dev1", "iat", (json_int_t)NOW, "exp", (json_int_t)(NOW + 300),
                        "jti", "jti-1", "txn", "t1", "typ", TYP);
  assert_non_null(p);
  return p;
}

/* Sign any payload (and one more string header member) with cjose directly. */
JOSE_SHARED char *sign_raw(cjose_jwk_t *jwk, const char *alg, json_t *payload,
                           const char *extra_name, const char *extra_value)
{
  cjose_err err;
  char *text = json_dumps(payload, JSON_COMPACT);
  cjose_header_t *h = cjose_header_new(&err);
  assert_true(cjose_header_set(h, CJOSE_HDR_ALG, alg, &err));
  if (extra_name)
    assert_true(cjose_header_set(h, extra_name, extra_value, &err));
  cjose_jws_t *jws = cjose_jws_sign(jwk, h, (const uint8_t *)text, strlen(text), &err);
  assert_non_null(jws);
  const char *ser = NULL;
  assert_true(cjose_jws_export(jws, &ser, &err));
  char *out = strdup(ser);
  cjose_jws_release(jws);
  cjose_header_release(h);
  free(text);
  return out;
}

/* The default payload, signed by the issuer. */
JOSE_SHARED char *sign_default(void)
{
  json_t *p = payload_default();
  char *jws = sign_raw(issuer.jwk, "ES256", p, NULL, NULL);
  json_decref(p);
  return jws;
}

/* Hand-made compact JWS: any header text, any payload, any signature text. */
JOSE_SHARED char *compact3(const char *header, const char *payload, const char *sig_b64)
{
  size_t hl = strlen(header), pl = strlen(payload);
  char *out = malloc(mcim_b64url_len(hl) + mcim_b64url_len(pl) + strlen(sig_b64) + 3);
  size_t o = mcim_b64url_encode((const uint8_t *)header, hl, out);
  out[o++] = '.';
  o += mcim_b64url_encode((const uint8_t *)payload, pl, out + o);
  out[o++] = '.';
  strcpy(out + o, sig_b64);
  return out;
}

JOSE_SHARED mcim_cause_t verify_str(const char *jws, const mcim_jws_expect_t *x)
{
  return mcim_jws_verify(jws, strlen(jws), issuer.pub, x, NULL);
}

JOSE_SHARED mcim_cause_t verify_payload(json_t *payload)
{
  char *jws = sign_raw(issuer.jwk, "ES256", payload, NULL, NULL);
  mcim_jws_expect_t x = expect_default();
  mcim_cause_t rc = verify_str(jws, &x);
  free(jws);
  json_decref(payload);
  return rc;
}

/* A sealed package's MCIM content. */
JOSE_SHARED const uint8_t mcim_content[] =
    "{\"imsi\":\"001020000000001\",\"k\":\"...\",\"opc\":\"...\"}";

#endif
