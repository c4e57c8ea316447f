/* TPM attestation evidence (issue 11 point 4; docs/tre-tpm.md, "Attestation at the PVA"): the
 * measurement log of a TPM device and the TPM2_Quote over it, as the device makes them and
 * the PVA checks them. OpenSSL only, no TPM and no tpm2-tss: the verifier runs in the PVA of
 * any build.
 *
 * The log is in the IMA "ima-ng" ASCII form with SHA-256 template hashes (the kernel's
 * ascii_runtime_measurements_sha256), one line per measured image, in the order extended:
 *
 *   10 <template hash, 64 hex> ima-ng sha256:<image digest, 64 hex> <component>
 *
 * template hash = SHA-256 of the ima-ng template data: for each of its two fields, a 32-bit
 * little-endian length and the field: d-ng = "sha256" ':' '\0' digest (40 bytes), n-ng = the
 * name and its '\0'. Each line is one TPM2_PCR_Extend of PCR 10 (SHA-256 bank) with the
 * template hash, from the value TPM2_Startup(CLEAR) gives it (32 zero bytes). The measurer is
 * the launcher, m2me-boot (apps/m2me-boot.c, mcim_device_measured_launch()): it measures the
 * boot and os images and the agent's executable before it execs the agent, and appends to
 * the log of this TPM power cycle (an agent started again without a TPM restart adds its
 * three lines). PCR 10, as IMA's: a static PCR, which no locality may TPM2_PCR_Reset, so
 * that nothing that talks to the TPM (a compromised agent) can put it back to zero and
 * replay good values; only a TPM restart (the platform's reboot) clears it, and the log with
 * it. */
#ifndef MCIM_ATTEST_H
#define MCIM_ATTEST_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

#define MCIM_ATTEST_PCR 10           /* static (not resettable); IMA's PCR */
#define MCIM_ATTEST_PCR_TEXT "10"    /* the same, as the log lines begin */
#define MCIM_ATTEST_MAX_ENTRIES 64   /* lines of a log (MCIM_TRE_MAX_MEASUREMENTS) */
#define MCIM_ATTEST_MAX_LOG 16384    /* bytes of a log */
#define MCIM_ATTEST_MAX_ATTEST 1024  /* bytes of a TPMS_ATTEST (a P-256 quote is ~150) */
#define MCIM_ATTEST_NAME_MAX 64      /* a component name, [a-z0-9._-] */

/* The ima-ng template hash of one image measurement. MCIM_INVALID_ARGUMENT for a name that is
 * not 1..MCIM_ATTEST_NAME_MAX of [a-z0-9._-]. */
mcim_cause_t mcim_attest_template_hash(const uint8_t digest[32], const char *name,
                                       uint8_t out[32]);
/* One log line, '\n' included, into `out` (at least 256 bytes). */
mcim_cause_t mcim_attest_log_line(const uint8_t digest[32], const char *name, char *out,
                                  size_t len);

/* What a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE says. */
struct mcim_attest_quote {
  uint8_t extra[64]; /* extraData (the qualifying data: the PVA's nonce) */
  size_t extra_len;
  uint64_t clock, firmware;
  uint32_t reset_count, restart_count;
  uint32_t pcr_sha256; /* the SHA-256 bank's selection bitmap (bit n = PCR n) */
  int other_banks;     /* selections of other banks (the verifier wants none) */
  uint8_t pcr_digest[64];
  size_t pcr_digest_len;
};

/* Parse a marshalled TPMS_ATTEST (peer input: every length bounds-checked, nothing trusted,
 * no trailing byte): magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE.
 * MCIM_ATTEST_MALFORMED with the reason in `err`. */
mcim_cause_t mcim_attest_parse(const uint8_t *buf, size_t len, struct mcim_attest_quote *out,
                               char *err, size_t errlen);

/* The PVA's whole check of a TPM device's evidence (its "tpm" member, {"attest",
 * "signature": base64url of the marshalled TPMS_ATTEST and TPMT_SIGNATURE, "log": the ima-ng
 * text}) against the device's certified attestation key `ak` and the nonce the PVA issued
 * (its bytes: the quote's qualifying data). In order, each refusal its own cause, the reason
 * in `err`:
 *   MCIM_ATTEST_MALFORMED    not an object of those three strings, bad base64url, a
 *                            TPMS_ATTEST or TPMT_SIGNATURE truncated, garbled or with trailing
 *                            bytes, not a quote (magic, type), not ECDSA-SHA256, a PCR
 *                            selection other than the SHA-256 bank's PCR 10 alone;
 *   MCIM_ATTEST_SIGNATURE    the signature does not verify with `ak` (another TPM, altered);
 *   MCIM_ATTEST_NONCE        extraData is not this nonce (a replayed or stale quote);
 *   MCIM_ATTEST_LOG_MISMATCH a log line not in the form above, a template hash that is not
 *                            that of its digest and name, or a log whose replay is not the
 *                            quoted PCR digest.
 * On MCIM_OK, *measurements = [{"component", "digest"}] in log order (for the RIMs). */
/* Replay an ima-ng log (the form above) from PCR 10's reset value: *pcr = the PCR it extends
 * to, *lines (may be NULL) its lines. MCIM_ATTEST_LOG_MISMATCH with the reason in `err` for a
 * log not in that form. */
mcim_cause_t mcim_attest_log_replay(const char *log, uint8_t pcr[32], size_t *lines, char *err,
                                    size_t errlen);

mcim_cause_t mcim_attest_verify(EVP_PKEY *ak, const json_t *evidence, const uint8_t *nonce,
                                size_t nonce_len, json_t **measurements, char *err,
                                size_t errlen);

/* ---- the device's side: the TPM TRE (src/tre/tpm/tre_quote.c) ---- */
struct mcim_tre;
#define MCIM_ATTEST_LOG_FILE "measurements.ima" /* in the TRE's folder, beside its state */

/* The launcher's measurements (src/tre/tpm/tpm_launch.c), before the agent runs: each of
 * `log` ([{"component", "digest"}], boot order) extended into PCR 10 of the TPM at `tcti`
 * and appended to the ima-ng log at `log_path`. The log kept is the one that replays to the
 * PCR as read (this power cycle's: the agent was started again), or, if none does, a new one:
 * PCR 10 at zero (a TPM restart), or not (a log lost: the PVA refuses the evidence until the
 * TPM restarts, which `detail` says). The new log is written beside the old one first
 * (LOG_PATH.new) and renamed after the extends; a launch that died between the two leaves a
 * .new that replays, which the next launch keeps. MCIM_TOO_LARGE when the log would exceed
 * MCIM_ATTEST_MAX_ENTRIES lines or MCIM_ATTEST_MAX_LOG bytes (nothing extended: the agent
 * must not run unmeasured); MCIM_UNSUPPORTED in a build without the TPM TRE. */
mcim_cause_t mcim_tpm_launch_measure(const char *tcti, const char *log_path, const json_t *log,
                                     char *detail, size_t detail_len);
/* The evidence for the PVA's `nonce` (hex, at most 64 bytes: the quote's qualifying data):
 * under the TRE's lock, TPM2_Quote of PCR 10 by the TRE's attestation key (in the TPM), and
 * the log: *evidence = {"attest", "signature" (base64url of the marshalled TPMS_ATTEST and
 * TPMT_SIGNATURE), "log" (the ima-ng text)}. MCIM_NOT_FOUND for a TRE without a TPM. */
mcim_cause_t mcim_tre_tpm_quote(struct mcim_tre *tre, const char *nonce, json_t **evidence);

/* Enrolment at the M2MES (docs/tre-tpm.md, "Enrolment"; src/tre/tpm/tre_enrol.c), run by the
 * factory at manufacture. Step 1: the TRE's restricted attestation key for quotes (made in the
 * TPM the first time, kept in the state) and the TPM's EK certificate: *out = {"ek_cert":
 * base64url DER, "ak_public": base64url TPM2B_PUBLIC}. Step 2, with the M2MES's challenge
 * {"credential", "seed" (TPM2_MakeCredential's two outputs, base64url), "nonce"}:
 * TPM2_ActivateCredential with that key, and TPM2_Certify by it of the attestation, KA and
 * storage keys over the nonce: *out = {"activation": base64url, "certify": {"attestation",
 * "ka", "storage": {"public", "attest", "signature"}}}. MCIM_NOT_FOUND for a TRE without a
 * TPM. */
mcim_cause_t mcim_tre_tpm_enrol_begin(struct mcim_tre *tre, json_t **out);
mcim_cause_t mcim_tre_tpm_enrol_answer(struct mcim_tre *tre, const json_t *challenge, json_t **out);

#endif
