/* The lab's firmware model and measured boot: what a device of a model runs, the reference
 * digests (RIMs) the M2MES registers at the PVA, and the measurement chain the TRE quotes and
 * the PVA replays. One definition here, used by the factory tool, the M2MES, the agent's
 * measured boot, the TRE and the PVA, so they cannot disagree (docs/protocol.md, "M2MES").
 *
 * Image of component C of model M: the text "mcim lab firmware M C v1\n".
 * RIM: SHA-256 of the image, 64 lower-case hex digits.
 * Chain (like a TPM PCR extend): d0 = 32 zero bytes, d(i+1) = SHA-256(d(i) || digest(i)). */
#ifndef MCIM_FIRMWARE_H
#define MCIM_FIRMWARE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "mcim/cause.h"

#define MCIM_FIRMWARE_DIGEST_LEN 32
#define MCIM_FIRMWARE_HEX_LEN 64
/* Most entries a measurement log may hold (peer input is bounded). */
#define MCIM_FIRMWARE_MAX_LOG 64

/* The components every lab model has, in boot order, NULL-terminated: boot, os, agent. */
extern const char *const mcim_firmware_components[];
#define MCIM_FIRMWARE_NCOMPONENTS 3

/* The image text of `component` of `model` (both mcim_pki_name_valid); free() it. */
mcim_cause_t mcim_firmware_image(const char *model, const char *component, char **out);
/* SHA-256 of any image bytes (what measured boot records), as 64 lower-case hex digits + NUL. */
mcim_cause_t mcim_firmware_measure(const uint8_t *image, size_t len,
                                   char hex[MCIM_FIRMWARE_HEX_LEN + 1]);
/* SHA-256 of the regular file open on `fd`, read from its start (at most 256 MiB: an
 * executable or an image, not a disk), as hex: what the measured launch extends for a file
 * and what the M2MES publishes as the RIM of the agent's executable. MCIM_IO_ERROR for
 * something not a regular file, MCIM_TOO_LARGE beyond the bound. */
mcim_cause_t mcim_firmware_measure_fd(int fd, char hex[MCIM_FIRMWARE_HEX_LEN + 1]);
/* The same of the file at `path`. */
mcim_cause_t mcim_firmware_measure_file(const char *path, char hex[MCIM_FIRMWARE_HEX_LEN + 1]);
/* The RIM of `component` of `model`: mcim_firmware_measure(mcim_firmware_image(...)). */
mcim_cause_t mcim_firmware_rim(const char *model, const char *component,
                               char hex[MCIM_FIRMWARE_HEX_LEN + 1]);

/* One extend step: d = SHA-256(d || m). */
mcim_cause_t mcim_firmware_extend(uint8_t d[MCIM_FIRMWARE_DIGEST_LEN],
                                  const uint8_t m[MCIM_FIRMWARE_DIGEST_LEN]);
/* The chain over a measurement log [{"component": name, "digest": 64 hex}, ...] (at most
 * MCIM_FIRMWARE_MAX_LOG entries; other members of an entry are refused): the final digest as
 * hex. MCIM_BAD_JSON for a log of the wrong shape, MCIM_BAD_HEX / MCIM_BAD_LENGTH for a bad
 * digest, MCIM_TOO_LARGE for too many entries; `err` (may be NULL) says which entry. */
mcim_cause_t mcim_firmware_log_digest(const json_t *log, char hex[MCIM_FIRMWARE_HEX_LEN + 1],
                                      char *err, size_t errlen);

#endif
