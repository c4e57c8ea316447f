/* The lab's devices: the M2MES factory (`mcim lab device add`) and the device agents.
 *
 * Manufacture, in the order a real line would do it: firmware images written, TRE created
 * (its keys are generated inside it and never leave), the M2MES certifies the TRE's public
 * keys and issues the PCID credential sealed to the TRE (and registers PCID, RIMs and the
 * device's first owner in the network), the TRE stores both, the owner's key is pinned, then
 * the device boots.
 *
 * A device with the TPM TRE (`--tre tpm`, docs/tre-tpm.md) has a TPM of its own: a swtpm
 * with its state in DEVICE_DIR/tpm, started before the TRE is made (the TRE's keys are made
 * in it), recorded in lab.json ("swtpm_pid"), stopped and started with the agent, and
 * stopped by `mcim lab down`. Its ports are picked when it starts; agent.json's "tpm_tcti"
 * follows them. Its agent is started by the launcher, m2me-boot, which measures the boot and
 * os images and the m2me executable into the TPM's PCR 10 before it execs it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab/lab_priv.h"
#include "mcim/firmware.h"
#ifdef MCIM_HAVE_TPM
#include "tre/tpm/tpm.h"
#endif
#include "mcim/attest.h"
#include "mcim/jose.h"
#include "mcim/log.h"
#include "mcim/pki.h"
#include "mcim/tre.h"
#include "mcim/util.h"

#define LAB_MODEL "m2me-lab-1"

static json_t *device_entry(mcim_lab_t *lab, const char *name)
{
  size_t i;
  json_t *d;
  json_array_foreach(json_object_get(lab->json, "devices"), i, d)
    if (strcmp(json_string_value(json_object_get(d, "name")), name) == 0)
      return d;
  return NULL;
}

const char *mcim_lab_device_dir(mcim_lab_t *lab, const char *name)
{
  return json_string_value(json_object_get(device_entry(lab, name), "dir"));
}

static char *read_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    } else {
      buf[n] = '\0';
    }
  }
  fclose(f);
  return buf;
}

static mcim_cause_t write_file(const char *path, const char *text, int mode)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0)
    return MCIM_IO_ERROR;
  size_t n = strlen(text);
  mcim_cause_t rc = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0 ? MCIM_OK : MCIM_IO_ERROR;
  close(fd);
  return rc;
}

/* Firmware images of the lab model; a tampered device carries a modified `os`. */
static mcim_cause_t write_firmware(const char *dir, bool tamper)
{
  char path[PATH_MAX];
  mcim_lab_join(path, sizeof(path), dir, "/firmware");
  mcim_cause_t rc = mcim_lab_mkdir(path);
  for (size_t i = 0; rc == MCIM_OK && mcim_firmware_components[i]; i++) {
    const char *comp = mcim_firmware_components[i];
    char *img = NULL;
    rc = mcim_firmware_image(LAB_MODEL, comp, &img);
    if (rc != MCIM_OK)
      break;
    if (tamper && strcmp(comp, "os") == 0) {
      static const char implant[] = "injected: remote shell on port 4444\n";
      size_t n = strlen(img) + sizeof(implant);
      char *bad = malloc(n);
      if (bad)
        snprintf(bad, n, "%s%s", img, implant);
      free(img);
      img = bad;
      if (!img) {
        rc = MCIM_NO_MEMORY;
        break;
      }
    }
    char leaf[96];
    snprintf(leaf, sizeof(leaf), "/firmware/%.60s.img", comp);
    mcim_lab_join(path, sizeof(path), dir, leaf);
    rc = write_file(path, img, 0644);
    free(img);
  }
  return rc;
}

/* The owner (M2ME subscriber) key: kept in the lab for `mcim run`, its public half pinned
 * in the TRE. */
static mcim_cause_t make_owner_key(const char *dir, char **public_jwk)
{
  char path[PATH_MAX];
  EVP_PKEY *key = NULL;
  mcim_jose_key_t *jk = NULL;
  mcim_lab_join(path, sizeof(path), dir, "/owner");
  mcim_cause_t rc = mcim_lab_mkdir(path);
  if (rc == MCIM_OK)
    chmod(path, 0700);
  mcim_lab_join(path, sizeof(path), dir, "/owner/owner.key");
  if (rc == MCIM_OK)
    rc = mcim_pki_key_generate(&key);
  if (rc == MCIM_OK)
    rc = mcim_pki_key_write(path, key);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_from_pkey(key, &jk);
  if (rc == MCIM_OK)
    rc = mcim_jose_key_public_jwk(jk, public_jwk);
  mcim_jose_key_free(jk);
  EVP_PKEY_free(key);
  return rc;
}

/* The agent's configuration: where the network is, what it pins (docs/device.md); with
 * `tcti`, its TRE's backend is the TPM that reaches. */
static mcim_cause_t write_agent_config(mcim_lab_t *lab, const char *dir, const char *name,
                                       const char *tcti)
{
  char path[PATH_MAX];
  json_t *peers = json_object();
  for (const char *const *n = mcim_lab_roles(lab); n && *n; n++)
    json_object_set_new(peers, *n, json_string(mcim_lab_url(lab, *n)));
  snprintf(path, sizeof(path), "%s/pki/%s", lab->dir, MCIM_PKI_OPERATORS_CA_CERT);
  int scale = mcim_lab_time_scale();
  json_t *cfg = json_pack("{s:s,s:s,s:o,s:i,s:i}", "device", name, "operators_ca", path, "networks",
                          peers, "poll_ms", 50, "procedure_timeout", 60 * scale);
  /* the agent's default (5 s) unless the lab runs slowed down (MCIM_TIME_SCALE) */
  if (cfg && scale > 1 &&
      json_object_set_new(cfg, "request_timeout_ms", json_integer(5000 * scale)) != 0) {
    json_decref(cfg);
    cfg = NULL;
  }
  if (cfg && tcti &&
      (json_object_set_new(cfg, "tre_backend", json_string("tpm")) ||
       json_object_set_new(cfg, "tpm_tcti", json_string(tcti)))) {
    json_decref(cfg);
    cfg = NULL;
  }
  if (!cfg)
    return MCIM_NO_MEMORY;
  mcim_lab_join(path, sizeof(path), dir, "/agent.json");
  mcim_cause_t rc = mcim_lab_write_json(path, cfg, 0644);
  json_decref(cfg);
  return rc;
}

/* Enrolment of the device's TPM at the M2MES (src/roles/m2mes/enrol.c): *tpm is the "tpm"
 * member of the manufacture request. */
static mcim_cause_t enrol(mcim_tre_t *tre, const char *name, const char *base,
                          struct mcim_http_client *cli, json_t **tpm)
{
  struct mcim_http_result res = {0};
  json_t *begin = NULL, *answer = NULL, *req = NULL;
  char url[512];
  mcim_cause_t rc = mcim_tre_tpm_enrol_begin(tre, &begin);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: %s: the TPM gives no EK certificate or attestation key: %s\n", name,
            mcim_cause_text(rc));
    goto out;
  }
  snprintf(url, sizeof(url), "%s/v1/devices/enrolment", base);
  req = json_pack("{s:s,s:O,s:O}", "device", name, "ek_cert", json_object_get(begin, "ek_cert"),
                  "ak_public", json_object_get(begin, "ak_public"));
  rc = req ? mcim_http_request(cli, "POST", url, req, NULL, &res) : MCIM_NO_MEMORY;
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: the M2MES refused to enrol the TPM of %s: %s (%s)\n", name,
            res.detail[0] ? res.detail : mcim_cause_text(rc), mcim_cause_name(rc));
    goto out;
  }
  rc = mcim_tre_tpm_enrol_answer(tre, res.json, &answer);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: the TPM of %s did not activate the M2MES's credential: %s\n", name,
            mcim_cause_text(rc));
    goto out;
  }
  *tpm =
      json_pack("{s:O,s:O,s:O,s:O,s:O}", "ek_cert", json_object_get(begin, "ek_cert"), "ak_public",
                json_object_get(begin, "ak_public"), "token", json_object_get(res.json, "token"),
                "activation", json_object_get(answer, "activation"), "certify",
                json_object_get(answer, "certify"));
  rc = *tpm ? MCIM_OK : MCIM_PEER_BAD_ANSWER;
out:
  mcim_http_result_clear(&res);
  json_decref(begin);
  json_decref(answer);
  json_decref(req);
  return rc;
}

mcim_cause_t mcim_lab_manufacture(mcim_lab_t *lab, const char *name, const char *dir, bool tamper,
                                  const char *tcti)
{
  char path[PATH_MAX], tre_dir[PATH_MAX];
  char *owner_jwk = NULL, *ops_ca = NULL, *m2mes_ca = NULL, *att_jwk = NULL, *ka_jwk = NULL;
  char *storage_jwk = NULL;
  mcim_tre_t *tre = NULL;
  json_t *body = NULL, *tpm = NULL;
  struct mcim_http_result res = {0};
  mcim_cause_t rc = write_firmware(dir, tamper);
  if (rc == MCIM_OK)
    rc = make_owner_key(dir, &owner_jwk);
  snprintf(path, sizeof(path), "%s/pki/%s", lab->dir, MCIM_PKI_OPERATORS_CA_CERT);
  ops_ca = read_file(path);
  snprintf(path, sizeof(path), "%s/pki/%s", lab->dir, MCIM_PKI_M2MES_CA_CERT);
  m2mes_ca = read_file(path);
  if (rc == MCIM_OK && (!ops_ca || !m2mes_ca))
    rc = MCIM_CONFIG_MISSING;
  mcim_lab_join(tre_dir, sizeof(tre_dir), dir, "/tre");
  /* the TRE makes its keys: in this process (soft), or in the device's TPM */
  if (rc == MCIM_OK)
    rc = tcti ? mcim_tre_tpm_create(tre_dir, tcti, name, LAB_MODEL, owner_jwk, ops_ca, m2mes_ca)
              : mcim_tre_soft_create(tre_dir, name, LAB_MODEL, owner_jwk, ops_ca, m2mes_ca);
  if (rc == MCIM_OK)
    rc = mcim_tre_open(tre_dir, tcti ? "tpm" : "soft", tcti, &tre);
  if (rc == MCIM_OK)
    rc = mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_ATTESTATION, &att_jwk);
  if (rc == MCIM_OK)
    rc = mcim_tre_soft_public_jwk(tre, MCIM_TRE_CERT_KA, &ka_jwk);
  /* a TPM's storage key, certified with the KA key: SHOs wrap K for it (docs/tre-tpm.md) */
  if (rc == MCIM_OK && tcti)
    rc = mcim_tre_tpm_storage_jwk(tre, &storage_jwk);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: cannot create the TRE of %s: %s\n", name, mcim_cause_text(rc));
    goto out;
  }

  /* The M2MES certifies the TRE keys and issues the PCID credential (sealed to the TRE). A
   * TPM is enrolled first (docs/tre-tpm.md, "Enrolment"): its EK certificate and attestation
   * key to the M2MES, whose credential the TPM activates, and the TRE's keys certified by
   * that key over the M2MES's nonce go with the manufacture request. */
  const char *base = mcim_lab_url(lab, "m2mes");
  struct mcim_http_client *cli = mcim_lab_admin_client(lab);
  char url[512];
  if (!base || !cli) {
    rc = MCIM_PEER_UNREACHABLE;
    goto out;
  }
  if (tcti) {
    rc = enrol(tre, name, base, cli, &tpm);
    if (rc != MCIM_OK)
      goto out;
  }
  snprintf(url, sizeof(url), "%s/v1/devices", base);
  /* the owner's public key goes with it: the M2MES registers it at the RO as the first owner */
  body = json_pack("{s:s,s:s,s:s,s:s,s:o}", "device", name, "model", LAB_MODEL, "attestation_jwk",
                   att_jwk, "ka_jwk", ka_jwk, "owner_jwk", json_loads(owner_jwk, 0, NULL));
  if (body && ((storage_jwk &&
                json_object_set_new(body, "tpm_storage_jwk", json_loads(storage_jwk, 0, NULL))) ||
               (tpm && json_object_set(body, "tpm", tpm)))) {
    rc = MCIM_NO_MEMORY;
    goto out;
  }
  rc = mcim_http_request(cli, "POST", url, body, NULL, &res);
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: the M2MES refused to manufacture %s: %s (%s)\n", name,
            res.detail[0] ? res.detail : mcim_cause_text(rc), mcim_cause_name(rc));
    goto out;
  }
  const char *att_cert = json_string_value(json_object_get(res.json, "attestation_cert"));
  const char *ka_cert = json_string_value(json_object_get(res.json, "ka_cert"));
  const char *cred = json_string_value(json_object_get(res.json, "pcid_credential"));
  if (!att_cert || !ka_cert || !cred) {
    rc = MCIM_PEER_BAD_ANSWER;
    goto out;
  }
  rc = mcim_tre_soft_set_certs(tre, att_cert, ka_cert);
  if (rc == MCIM_OK)
    rc = tre->ops->pcid_install(tre->ctx, cred, strlen(cred));
  if (rc == MCIM_OK)
    rc = write_agent_config(lab, dir, name, tcti);
  if (rc == MCIM_OK) {
    /* The M2ME's parameters, as they come with the device: what its owner gives an SHO
     * when ordering a subscription (step 1). Public data only. */
    json_t *params = json_pack("{s:s,s:s,s:O,s:s,s:s}", "device", name, "model", LAB_MODEL,
                               "pcid", json_object_get(res.json, "pcid"), "attestation_cert",
                               att_cert, "ka_cert", ka_cert);
    mcim_lab_join(path, sizeof(path), dir, "/params.json");
    rc = mcim_lab_write_json(path, params, 0644);
    json_decref(params);
  }
out:
  mcim_http_result_clear(&res);
  json_decref(body);
  json_decref(tpm);
  mcim_tre_close(tre);
  free(owner_jwk);
  free(ops_ca);
  free(m2mes_ca);
  free(att_jwk);
  free(ka_jwk);
  free(storage_jwk);
  return rc;
}

/* ---- the TPM of a device with the TPM TRE ---- */

static bool device_tpm(const json_t *d)
{
  const char *tre = json_string_value(json_object_get(d, "tre"));
  return tre && strcmp(tre, "tpm") == 0;
}

/* The program name the device's agent runs under (its argv[0]), to find and stop it: what it
 * was started as. Every device is now started as m2me (device_up); a lab folder made by an
 * older build may have recorded "m2me-tpm", the TPM device's agent before tpm2-tss's SAPI
 * (CMakeLists.txt), whose process may still be running: it is stopped under that name, and
 * the device runs m2me when it is next started. */
static const char *device_agent(const json_t *d)
{
  const char *a = json_string_value(json_object_get(d, "agent"));
  return a && strcmp(a, "m2me-tpm") == 0 ? "m2me-tpm" : "m2me";
}

/* Start the device's swtpm on its state (DIR/tpm, made 0700 the first time, and then
 * manufactured: an EK and its certificate from the lab's TPM vendor CA): `tcti` gets how to
 * reach it, *pid its pid (it outlives this program; stopped by pid). */
static mcim_cause_t swtpm_start(mcim_lab_t *lab, const char *dir, const char *name, long *pid,
                                char *tcti, size_t tcti_len)
{
#ifdef MCIM_HAVE_TPM
  char state[PATH_MAX], detail[512] = "", permall[PATH_MAX];
  char vcert[PATH_MAX], vkey[PATH_MAX], vstate[PATH_MAX];
  mcim_swtpm_t *s = NULL;
  mcim_cause_t rc = mcim_lab_join(state, sizeof(state), dir, "/tpm");
  if (rc == MCIM_OK)
    rc = mcim_lab_mkdir(state);
  if (rc == MCIM_OK && chmod(state, 0700) != 0)
    rc = MCIM_IO_ERROR;
  if (rc == MCIM_OK)
    rc = mcim_lab_join(permall, sizeof(permall), state, "/tpm2-00.permall");
  snprintf(vcert, sizeof(vcert), "%s/pki/%s", lab->dir, MCIM_PKI_TPM_VENDOR_CA_CERT);
  snprintf(vkey, sizeof(vkey), "%s/pki/%s", lab->dir, MCIM_PKI_TPM_VENDOR_CA_KEY);
  snprintf(vstate, sizeof(vstate), "%s/pki/ca/tpm-vendor", lab->dir);
  /* a new TPM: its maker's line first (swtpm_setup), once */
  if (rc == MCIM_OK && access(permall, F_OK) != 0) {
    rc = mcim_lab_mkdir(vstate);
    if (rc == MCIM_OK)
      rc = mcim_swtpm_manufacture(state, vcert, vkey, vstate, detail, sizeof(detail));
    if (rc != MCIM_OK) {
      fprintf(stderr, "mcim: cannot manufacture the TPM of %s in %s: %s\n", name, state,
              detail[0] ? detail : mcim_cause_text(rc));
      return rc;
    }
  }
  if (rc == MCIM_OK)
    rc = mcim_swtpm_start(state, MCIM_SWTPM_DETACHED, 20000, &s, detail, sizeof(detail));
  if (rc != MCIM_OK) {
    fprintf(stderr, "mcim: cannot start the TPM (swtpm) of %s in %s: %s\n", name, state,
            detail[0] ? detail : mcim_cause_text(rc));
    return rc;
  }
  snprintf(tcti, tcti_len, "%s", mcim_swtpm_tcti(s));
  *pid = (long)mcim_swtpm_detach(s);
  return MCIM_OK;
#else
  (void)lab;
  (void)dir;
  (void)pid;
  (void)tcti;
  (void)tcti_len;
  fprintf(stderr, "mcim: %s: this mcim was built without the TPM TRE (MCIM_TPM=OFF)\n", name);
  return MCIM_UNSUPPORTED;
#endif
}

/* agent.json's "tpm_tcti" after the device's swtpm started again (on other ports). */
static mcim_cause_t agent_config_tcti(const char *dir, const char *tcti)
{
  char path[PATH_MAX];
  mcim_cause_t rc = mcim_lab_join(path, sizeof(path), dir, "/agent.json");
  json_t *cfg = rc == MCIM_OK ? json_load_file(path, 0, NULL) : NULL;
  if (rc == MCIM_OK)
    rc = json_is_object(cfg) && !json_object_set_new(cfg, "tpm_tcti", json_string(tcti))
             ? mcim_lab_write_json(path, cfg, 0644)
             : MCIM_CONFIG_INVALID;
  json_decref(cfg);
  return rc;
}

/* The device's swtpm running: started again on its state if it is not (after `lab down`, a
 * restart or a crash), agent.json following its new ports. *started says whether it was. */
static mcim_cause_t device_swtpm_up(mcim_lab_t *lab, json_t *d, bool *started)
{
  char tcti[128];
  long pid = (long)json_integer_value(json_object_get(d, "swtpm_pid"));
  const char *name = json_string_value(json_object_get(d, "name"));
  const char *dir = json_string_value(json_object_get(d, "dir"));
  mcim_cause_t rc = MCIM_OK;

  *started = false;
  if (!device_tpm(d) || mcim_lab_pid_alive(pid, "swtpm"))
    return MCIM_OK;
  rc = swtpm_start(lab, dir, name, &pid, tcti, sizeof(tcti));
  if (rc != MCIM_OK)
    return rc;
  *started = true;
  json_object_set_new(d, "swtpm_pid", json_integer(pid));
  rc = mcim_lab_save(lab);
  if (rc == MCIM_OK)
    rc = agent_config_tcti(dir, tcti);
  return rc;
}

static void device_swtpm_stop(json_t *d)
{
  if (!device_tpm(d))
    return;
  mcim_lab_stop_pid((long)json_integer_value(json_object_get(d, "swtpm_pid")), "swtpm");
  json_object_set_new(d, "swtpm_pid", json_integer(0));
}

void mcim_lab_devices_stop(mcim_lab_t *lab)
{
  size_t i;
  json_t *d;
  json_array_foreach(json_object_get(lab->json, "devices"), i, d) {
    mcim_lab_stop_pid((long)json_integer_value(json_object_get(d, "pid")), device_agent(d));
    json_object_set_new(d, "pid", json_integer(0));
    device_swtpm_stop(d); /* after its agent: nothing uses it any more */
  }
}

json_t *mcim_lab_device_status(const json_t *d)
{
  long pid = (long)json_integer_value(json_object_get(d, "pid"));
  json_t *e = json_pack("{s:O,s:I,s:b,s:s}", "name", json_object_get(d, "name"), "pid",
                        (json_int_t)pid, "running", mcim_lab_pid_alive(pid, device_agent(d)), "tre",
                        device_tpm(d) ? "tpm" : "soft");
  if (e && device_tpm(d)) {
    long tpid = (long)json_integer_value(json_object_get(d, "swtpm_pid"));
    json_object_set_new(e, "swtpm", json_pack("{s:I,s:b}", "pid", (json_int_t)tpid, "running",
                                              mcim_lab_pid_alive(tpid, "swtpm")));
  }
  return e;
}

mcim_cause_t mcim_lab_device_client(mcim_lab_t *lab, const char *name,
                                    struct mcim_http_client **out)
{
  char sock[PATH_MAX];
  const char *dir = mcim_lab_device_dir(lab, name);
  *out = NULL;
  if (!dir)
    return MCIM_NOT_FOUND;
  mcim_lab_join(sock, sizeof(sock), dir, "/control.sock");
  struct mcim_http_client_cfg cc = {.unix_path = sock, .timeout_ms = 10000 * mcim_lab_time_scale()};
  return mcim_http_client_new(&cc, out);
}

mcim_cause_t mcim_lab_device_start(mcim_lab_t *lab, const char *name)
{
  char m2me[PATH_MAX], boot[PATH_MAX], log[PATH_MAX];
  json_t *d = device_entry(lab, name);
  const char *dir = mcim_lab_device_dir(lab, name);
  bool tpm_started = false;
  if (!d || !dir)
    return MCIM_NOT_FOUND;
  /* a device with the TPM TRE: its TPM first, with the state it had */
  mcim_cause_t up = device_swtpm_up(lab, d, &tpm_started);
  if (up != MCIM_OK)
    return up;
  long apid = (long)json_integer_value(json_object_get(d, "pid"));
  if (mcim_lab_pid_alive(apid, device_agent(d))) {
    if (!tpm_started)
      return MCIM_OK;
    mcim_lab_stop_pid(apid, device_agent(d)); /* it was given the TPM's old address */
  }
  /* m2me for both TREs, whatever agent an older build recorded (device_agent) */
  snprintf(m2me, sizeof(m2me), "%s/m2me", mcim_lab_bindir());
  snprintf(boot, sizeof(boot), "%s/m2me-boot", mcim_lab_bindir());
  mcim_lab_join(log, sizeof(log), dir, "/agent.log");
  /* A TPM device starts as a platform would: its launcher measures the images and this m2me
   * into PCR 10, then becomes the agent (docs/tre-tpm.md, "Attestation at the PVA"). */
  char *argv[] = {m2me, "--dir", (char *)dir, NULL};
  char *tpm_argv[] = {boot, "--dir", (char *)dir, "--agent", m2me, NULL};
  long pid = mcim_lab_spawn(device_tpm(d) ? tpm_argv : argv, log);
  if (pid <= 0)
    return MCIM_IO_ERROR;
  json_object_set_new(d, "pid", json_integer(pid));
  json_object_set_new(d, "agent", json_string("m2me"));
  mcim_lab_save(lab);
  /* Up when its control channel answers. */
  struct mcim_http_client *cli = NULL;
  mcim_cause_t rc = mcim_lab_device_client(lab, name, &cli);
  int wait_ms = 15000 * mcim_lab_time_scale();
  for (int waited = 0; rc == MCIM_OK && waited < wait_ms; waited += 50) {
    struct mcim_http_result res;
    mcim_cause_t st = mcim_http_request(cli, "GET", "http://localhost/v1/status", NULL, NULL, &res);
    mcim_http_result_clear(&res);
    if (st == MCIM_OK)
      goto out;
    if (waitpid((pid_t)pid, NULL, WNOHANG) == (pid_t)pid) {
      fprintf(stderr, "mcim: the agent of %s exited at start; see %s\n", name, log);
      rc = MCIM_PROCEDURE_FAILED;
      goto out;
    }
    mcim_lab_sleep_ms(50);
  }
  if (rc == MCIM_OK)
    rc = MCIM_TIMEOUT;
out:
  mcim_http_client_free(cli);
  return rc;
}

mcim_cause_t mcim_lab_device_stop(mcim_lab_t *lab, const char *name)
{
  json_t *d = device_entry(lab, name);
  if (!d)
    return MCIM_NOT_FOUND;
  mcim_lab_stop_pid((long)json_integer_value(json_object_get(d, "pid")), device_agent(d));
  json_object_set_new(d, "pid", json_integer(0));
  device_swtpm_stop(d); /* its state stays in DEVICE_DIR/tpm for the next start */
  return mcim_lab_save(lab);
}

mcim_cause_t mcim_lab_device_add(mcim_lab_t *lab, const char *name, bool tamper)
{
  struct mcim_lab_device_opts o = {.tamper = tamper};
  return mcim_lab_device_add_with(lab, name, &o);
}

mcim_cause_t mcim_lab_device_add_with(mcim_lab_t *lab, const char *name,
                                      const struct mcim_lab_device_opts *opts)
{
  char dir[PATH_MAX], tcti[128];
  long swtpm = 0;
  bool tamper = opts && opts->tamper;
  const char *tre = opts && opts->tre ? opts->tre : "soft";
  if (!mcim_pki_name_valid(name) || mcim_lab_role(lab, name) || strcmp(name, "subscriber") == 0 ||
      strcmp(name, "tre") == 0)
    return MCIM_INVALID_ARGUMENT;
  if (strcmp(tre, "soft") != 0 && strcmp(tre, "tpm") != 0) {
    fprintf(stderr, "mcim: no TRE backend \"%s\" (soft or tpm)\n", tre);
    return MCIM_INVALID_ARGUMENT;
  }
  bool tpm = strcmp(tre, "tpm") == 0;
  if (device_entry(lab, name))
    return MCIM_CONFLICT;
  snprintf(dir, sizeof(dir), "%s/devices/%s", lab->dir, name);
  if (access(dir, F_OK) == 0) {
    /* left over from a lab that was torn down: a device name is forever */
    fprintf(stderr, "mcim: %s exists; remove it or pick another name\n", dir);
    return MCIM_CONFLICT;
  }
  mcim_cause_t rc = mcim_lab_mkdir(dir);
  /* the device's TPM first: the TRE's keys are made in it */
  if (rc == MCIM_OK && tpm)
    rc = swtpm_start(lab, dir, name, &swtpm, tcti, sizeof(tcti));
  if (rc == MCIM_OK)
    rc = mcim_lab_manufacture(lab, name, dir, tamper, tpm ? tcti : NULL);
  if (rc != MCIM_OK) {
    mcim_lab_stop_pid(swtpm, "swtpm");
    return rc;
  }
  json_t *entry = json_pack("{s:s,s:s,s:s,s:b,s:i,s:s}", "name", name, "dir", dir, "model",
                            LAB_MODEL, "tamper", tamper, "pid", 0, "tre", tre);
  if (entry && tpm)
    json_object_set_new(entry, "swtpm_pid", json_integer(swtpm));
  json_array_append_new(json_object_get(lab->json, "devices"), entry);
  rc = mcim_lab_save(lab);
  if (rc == MCIM_OK)
    rc = mcim_lab_device_start(lab, name);
  return rc;
}
