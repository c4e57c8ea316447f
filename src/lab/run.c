/* The M2ME subscriber's side of a procedure (seed steps 1-2), then watching it run:
 *  1) order at the new SHO, signed by the owner key, with the M2ME's parameters;
 *  2) instruction to the device, signed by the owner key (the TRE checks it);
 * then the procedure's state is polled at the device and its trace gathered. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/jose.h"
#include "mcim/lab_run.h"
#include "mcim/pki.h"
#include "mcim/trace.h"
#include "mcim/util.h"
#include "trace/cast.h"

mcim_cause_t mcim_lab_owner_load_dir(const char *dir, mcim_jose_key_t **key, json_t **params)
{
  char path[PATH_MAX];
  EVP_PKEY *pk = NULL;
  mcim_lab_join(path, sizeof(path), dir, "/owner/owner.key");
  mcim_cause_t rc = mcim_pki_key_load(path, &pk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pk, key);
  EVP_PKEY_free(pk);
  mcim_lab_join(path, sizeof(path), dir, "/params.json");
  *params = rc == MCIM_OK ? json_load_file(path, 0, NULL) : NULL;
  if (rc == MCIM_OK && !*params)
    rc = MCIM_CONFIG_MISSING;
  return rc;
}

static mcim_cause_t load_owner(mcim_lab_t *lab, const char *device, mcim_jose_key_t **key,
                               json_t **params)
{
  const char *dir = mcim_lab_device_dir(lab, device);
  return dir ? mcim_lab_owner_load_dir(dir, key, params) : MCIM_NOT_FOUND;
}

mcim_cause_t mcim_lab_owner_sign(const mcim_jose_key_t *owner, const char *typ, const char *device,
                               const char *aud, const char *txn, json_t *extra, char **jws)
{
  int64_t now = mcim_now();
  mcim_claims_t c = {.iss = "subscriber", .sub = device, .aud = aud, .typ = typ, .txn = txn,
                     .iat = now, .exp = now + 600, .extra = extra};
  return mcim_jws_sign(owner, &c, jws);
}

/* The handover statement with `aud` (the RO, or the device), posted to `url` with `client`. */
static mcim_cause_t handover_post(struct mcim_http_client *client, const char *url,
                                  const mcim_jose_key_t *owner, const char *device,
                                  const char *aud, const char *txn, const char *new_jwk,
                                  struct mcim_http_result *res)
{
  char *jws = NULL;
  json_t *extra = json_pack("{s:o}", "new_owner_jwk", json_loads(new_jwk, 0, NULL));
  mcim_cause_t rc = extra ? mcim_lab_owner_sign(owner, "mcim-handover+jwt", device, aud, txn, extra, &jws)
                          : MCIM_NO_MEMORY;
  json_t *body = rc == MCIM_OK ? json_pack("{s:s}", "handover", jws) : NULL;
  if (rc == MCIM_OK)
    rc = body ? mcim_http_request(client, "POST", url, body, NULL, res) : MCIM_NO_MEMORY;
  json_decref(body);
  json_decref(extra);
  free(jws);
  return rc;
}

/* The new key's PEM replaces the lab's owner key file (written aside, then renamed). */
static mcim_cause_t owner_key_replace(const char *dir, const char *new_key)
{
  char path[PATH_MAX], tmp[PATH_MAX], buf[8192];
  FILE *in = fopen(new_key, "rb");
  size_t n = in ? fread(buf, 1, sizeof(buf), in) : 0;
  bool whole = in && feof(in) && !ferror(in);
  if (in)
    fclose(in);
  if (!whole || n == 0)
    return MCIM_IO_ERROR;
  mcim_lab_join(path, sizeof(path), dir, "/owner/owner.key");
  mcim_lab_join(tmp, sizeof(tmp), dir, "/owner/owner.key.new");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  bool ok = fd >= 0 && write(fd, buf, n) == (ssize_t)n && fsync(fd) == 0;
  if (fd >= 0)
    close(fd);
  mcim_wipe(buf, sizeof(buf));
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
}

mcim_cause_t mcim_lab_owner_handover(mcim_lab_t *lab, const char *device, const char *new_key,
                                     char *detail, size_t detail_len)
{
  mcim_jose_key_t *owner = NULL, *next = NULL;
  json_t *params = NULL;
  EVP_PKEY *pk = NULL;
  struct mcim_http_client *dev = NULL;
  struct mcim_http_result res = {0};
  char *new_jwk = NULL, txn[33], url[600];
  uint8_t rnd[16];
  detail[0] = '\0';
  mcim_cause_t rc = load_owner(lab, device, &owner, &params);
  if (rc != MCIM_OK) {
    snprintf(detail, detail_len, "no device %s (or no owner key) in this lab", device);
    goto out;
  }
  rc = mcim_pki_key_load(new_key, &pk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(pk, &next);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(next, &new_jwk);
  if (rc != MCIM_OK) {
    snprintf(detail, detail_len, "%.200s is not an EC private key in PEM", new_key);
    goto out;
  }
  rc = mcim_random(rnd, sizeof(rnd));
  mcim_hex_encode(rnd, sizeof(rnd), txn);
  const char *ro = mcim_lab_url(lab, "ro");
  snprintf(url, sizeof(url), "%s/v1/drf/owners/%s/handover", ro ? ro : "", device);
  if (rc == MCIM_OK)
    rc = ro ? handover_post(mcim_lab_public_client(lab), url, owner, device, "ro", txn, new_jwk,
                            &res)
            : MCIM_NOT_FOUND;
  if (rc != MCIM_OK) {
    snprintf(detail, detail_len, "at the RO: %.200s", res.detail[0] ? res.detail : "no RO");
    goto out;
  }
  mcim_http_result_clear(&res);
  memset(&res, 0, sizeof(res));
  rc = mcim_lab_device_client(lab, device, &dev);
  if (rc == MCIM_OK)
    rc = handover_post(dev, "http://localhost/v1/owner", owner, device, device, txn, new_jwk,
                       &res);
  if (rc != MCIM_OK) {
    snprintf(detail, detail_len,
             "at the device: %.200s (the RO already records the new owner: the new owner can"
             " order, not instruct)", res.detail);
    goto out;
  }
  rc = owner_key_replace(mcim_lab_device_dir(lab, device), new_key);
  if (rc != MCIM_OK)
    snprintf(detail, detail_len, "handed over, but the lab's owner key file was not replaced");
out:
  mcim_http_result_clear(&res);
  mcim_http_client_free(dev);
  EVP_PKEY_free(pk);
  mcim_jose_key_free(owner);
  mcim_jose_key_free(next);
  json_decref(params);
  free(new_jwk);
  return rc;
}

/* How long an owner keeps retrying an order that failed transiently. */
#define ORDER_RETRY_MS 30000

/* Step 1: the order at the new SHO. */
mcim_cause_t mcim_lab_order(mcim_lab_t *lab, const struct mcim_lab_run *run,
                          const mcim_jose_key_t *owner, const json_t *params, const char *txn,
                          char *detail, size_t detail_len)
{
  char *jws = NULL, url[512];
  struct mcim_http_result res = {0};
  json_t *extra = NULL, *body = NULL;
  const char *base = mcim_lab_url(lab, run->sho);
  mcim_cause_t rc = base ? MCIM_OK : MCIM_NOT_FOUND;
  /* A switch between pre-provisioned MCIMs needs no new subscription: nothing to order. */
  if (strcmp(run->procedure, "switch") == 0)
    return MCIM_OK;
  if (rc == MCIM_OK) {
    /* no key in the order: the SHO learns the owner's key from the RO (manufacture) */
    extra = json_pack("{s:O,s:O,s:s,s:s?}", "attestation_cert",
                      json_object_get(params, "attestation_cert"), "ka_cert",
                      json_object_get(params, "ka_cert"), "procedure", run->procedure, "via",
                      run->via);
    rc = extra ? mcim_lab_owner_sign(owner, "mcim-order+jwt", run->device, run->sho, txn, extra, &jws)
               : MCIM_INTERNAL;
  }
  if (rc == MCIM_OK) {
    snprintf(url, sizeof(url), "%s/v1/orders", base);
    body = json_pack("{s:s,s:s}", "txn", txn, "order", jws);
    /* The same signed order again is idempotent (the SHO and the DRF answer a known txn with
     * what they stored; the jti is spent only with the order stored): an owner retries a
     * transient failure (an SHO or DRF that is busy, restarting or slow to answer) for up to
     * ORDER_RETRY_MS, then reports the last failure. */
    int waited = 0;
    for (int pause = 250;; pause = pause < 2000 ? pause * 2 : 2000) {
      mcim_http_result_clear(&res);
      memset(&res, 0, sizeof(res));
      rc = mcim_http_request(mcim_lab_public_client(lab), "POST", url, body, NULL, &res);
      if (rc == MCIM_OK || !mcim_cause_transient(rc, res.status) || waited >= ORDER_RETRY_MS)
        break;
      mcim_lab_sleep_ms(pause);
      waited += pause;
    }
    if (rc != MCIM_OK)
      snprintf(detail, detail_len, "order at %.32s: %.200s", run->sho, res.detail);
  } else if (!base) {
    snprintf(detail, detail_len, "no SHO named %s in this lab", run->sho);
  }
  mcim_http_result_clear(&res);
  json_decref(body);
  json_decref(extra);
  free(jws);
  return rc;
}

mcim_cause_t mcim_lab_instruction(const mcim_jose_key_t *owner, const struct mcim_lab_run *run,
                                  const char *txn, char **jws)
{
  json_t *extra = json_pack("{s:s,s:s,s:s?}", "procedure", run->procedure, "sho", run->sho, "via",
                            run->via);
  mcim_cause_t rc = extra ? mcim_lab_owner_sign(owner, "mcim-instruction+jwt", run->device,
                                                run->device, txn, extra, jws)
                          : MCIM_NO_MEMORY;
  json_decref(extra);
  return rc;
}

/* Step 2: the instruction to the device, on its control API. */
static mcim_cause_t instruct(struct mcim_http_client *dev, const struct mcim_lab_run *run,
                             const mcim_jose_key_t *owner, const char *txn, char *detail,
                             size_t detail_len)
{
  char *jws = NULL;
  struct mcim_http_result res = {0};
  mcim_cause_t rc = mcim_lab_instruction(owner, run, txn, &jws);
  if (rc == MCIM_OK) {
    json_t *body = json_pack("{s:s}", "instruction", jws);
    rc = mcim_http_request(dev, "POST", "http://localhost/v1/procedures", body, NULL, &res);
    json_decref(body);
    if (rc != MCIM_OK)
      snprintf(detail, detail_len, "instruction to %.32s: %.200s", run->device, res.detail);
  }
  mcim_http_result_clear(&res);
  free(jws);
  return rc;
}

/* Live view: print the events not printed yet, named as the text chart names them (the
 * seed's entities). Events of other roles may arrive late with earlier timestamps, so
 * "printed" is remembered per event, not as a count, and an event is printed only once it is
 * SETTLE_US old (unless `final`): what arrives within that window still comes out in order. */
#define SETTLE_US 250000

struct printed_set {
  json_t *keys; /* object used as a set */
};

static int64_t wall_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void print_new_events(mcim_lab_t *lab, const char *txn, FILE *out, struct printed_set *ps,
                             bool final)
{
  struct mcim_trace t;
  struct mcim_trace_cast cast;
  char key[512];
  int64_t horizon = wall_us() - SETTLE_US;
  mcim_lab_trace_collect(lab, txn, &t);
  mcim_trace_cast_of(&t, txn, &cast);
  for (size_t i = 0; i < t.len; i++) {
    const struct mcim_trace_event *e = &t.ev[i];
    if (!final && e->time_us > horizon)
      break; /* sorted by time: the rest is younger still */
    snprintf(key, sizeof(key), "%d|%s|%s|%s|%d", e->n, e->from, e->to, e->msg, (int)e->cause);
    if (json_object_get(ps->keys, key))
      continue;
    json_object_set_new(ps->keys, key, json_true());
    fputs(e->n >= 10 ? "  " : "   ", out);
    mcim_trace_text_line(&cast, e, out);
    fputc('\n', out);
  }
  fflush(out);
  mcim_trace_free(&t);
}

mcim_cause_t mcim_lab_run(mcim_lab_t *lab, const struct mcim_lab_run *run,
                          struct mcim_lab_run_result *res)
{
  mcim_jose_key_t *owner = NULL;
  json_t *params = NULL;
  struct mcim_http_client *dev = NULL;
  uint8_t rnd[16];
  struct printed_set printed = {json_object()};
  uint64_t t0 = mcim_monotonic_ns();
  memset(res, 0, sizeof(*res));
  snprintf(res->result, sizeof(res->result), "PROCEDURE_FAILED");

  mcim_cause_t rc = mcim_random(rnd, sizeof(rnd));
  mcim_hex_encode(rnd, sizeof(rnd), res->txn);
  if (rc == MCIM_OK)
    rc = load_owner(lab, run->device, &owner, &params);
  if (rc == MCIM_OK)
    rc = mcim_lab_device_client(lab, run->device, &dev);
  if (rc != MCIM_OK) {
    snprintf(res->detail, sizeof(res->detail), "no device %s in this lab", run->device);
    goto out;
  }
  if (rc == MCIM_OK)
    rc = mcim_lab_order(lab, run, owner, params, res->txn, res->detail, sizeof(res->detail));
  if (rc == MCIM_OK)
    rc = instruct(dev, run, owner, res->txn, res->detail, sizeof(res->detail));
  if (rc != MCIM_OK)
    goto out;

  /* Watch the procedure at the device until it ends. */
  char url[128];
  snprintf(url, sizeof(url), "http://localhost/v1/procedures/%s", res->txn);
  int timeout_ms = (run->timeout_s > 0 ? run->timeout_s : 120 * mcim_lab_time_scale()) * 1000;
  rc = MCIM_TIMEOUT;
  for (int waited = 0; waited < timeout_ms; waited += 100) {
    struct mcim_http_result r = {0};
    if (run->live)
      print_new_events(lab, res->txn, run->live, &printed, false);
    if (mcim_http_request(dev, "GET", url, NULL, NULL, &r) == MCIM_OK) {
      const char *state = json_string_value(json_object_get(r.json, "state"));
      const char *result = json_string_value(json_object_get(r.json, "result"));
      const char *cause = json_string_value(json_object_get(r.json, "cause"));
      const char *detail = json_string_value(json_object_get(r.json, "detail"));
      /* finished once the device states a result */
      (void)state;
      if (result) {
        bool ok = result && strcmp(result, "success") == 0;
        snprintf(res->result, sizeof(res->result), "%s",
                 ok ? "success" : cause ? cause : result ? result : "PROCEDURE_FAILED");
        if (detail)
          snprintf(res->detail, sizeof(res->detail), "%s", detail);
        int c = mcim_cause_from_name(res->result);
        rc = ok ? MCIM_OK : c > 0 ? (mcim_cause_t)c : MCIM_PROCEDURE_FAILED;
        mcim_http_result_clear(&r);
        break;
      }
    }
    mcim_http_result_clear(&r);
    mcim_lab_sleep_ms(100);
  }
  if (rc == MCIM_TIMEOUT)
    snprintf(res->result, sizeof(res->result), "TIMEOUT");
  /* Outbox deliveries (reports, registrations) may land just after the device is done. */
  mcim_lab_sleep_ms(150);
out:
  /* everything recorded, a refused order or instruction included */
  if (run->live && res->txn[0])
    print_new_events(lab, res->txn, run->live, &printed, true);
  res->seconds = (double)(mcim_monotonic_ns() - t0) / 1e9;
  if (rc != MCIM_OK && rc != MCIM_TIMEOUT && strcmp(res->result, "PROCEDURE_FAILED") == 0)
    snprintf(res->result, sizeof(res->result), "%s", mcim_cause_name(rc));
  {
    struct mcim_trace t;
    mcim_lab_trace_collect(lab, res->txn, &t);
    res->steps = json_array();
    for (size_t i = 0; i < t.len; i++) {
      json_t *s = json_pack("{s:i,s:s,s:s,s:s}", "n", t.ev[i].n, "from", t.ev[i].from, "to",
                            t.ev[i].to, "msg", t.ev[i].msg);
      if (t.ev[i].cause != MCIM_OK)
        json_object_set_new(s, "cause", json_string(mcim_cause_name(t.ev[i].cause)));
      json_array_append_new(res->steps, s);
    }
    mcim_trace_free(&t);
  }
  mcim_http_client_free(dev);
  mcim_jose_key_free(owner);
  json_decref(params);
  json_decref(printed.keys);
  return rc;
}

void mcim_lab_run_result_clear(struct mcim_lab_run_result *res)
{
  json_decref(res->steps);
  res->steps = NULL;
}
