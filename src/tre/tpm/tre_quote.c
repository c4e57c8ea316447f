/* The TPM2_Quote the PVA checks (include/mcim/attest.h), in the TPM TRE: PCR 10 and its log,
 * which the launcher (m2me-boot, tpm_launch.c) extended and wrote before the agent ran; the
 * agent measures nothing itself. Under the TRE's lock, so that two quotes of one agent do
 * not interleave on the TPM connection. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/attest.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "tre/tpm/tpm_quote.h"

/* The TRE of `tre` if its keys are in a TPM, else NULL. */
static struct tre_soft *tpm_tre(struct mcim_tre *tre)
{
  if (!tre || !tre->ops || !tre->ops->name || strcmp(tre->ops->name, TRE_BACKEND_TPM) != 0)
    return NULL;
  struct tre_soft *t = tre->ctx;
  return t && t->keys == &tre_keys_tpm ? t : NULL;
}

static char *path_of(const struct tre_soft *t, const char *suffix)
{
  size_t n = strlen(t->dir) + 1 + sizeof(MCIM_ATTEST_LOG_FILE) + strlen(suffix);
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s%s", t->dir, MCIM_ATTEST_LOG_FILE, suffix);
  return p;
}

/* The log as the launcher wrote it (a regular file, bounded). */
static mcim_cause_t read_log(const char *path, char **out)
{
  struct stat sb;
  char *buf = NULL;
  mcim_cause_t rc = MCIM_IO_ERROR;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

  *out = NULL;
  if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    goto cleanup;
  rc = MCIM_TOO_LARGE;
  if (sb.st_size <= 0 || sb.st_size > MCIM_ATTEST_MAX_LOG)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  buf = malloc((size_t)sb.st_size + 1);
  if (!buf)
    goto cleanup;
  rc = MCIM_IO_ERROR;
  if (read(fd, buf, (size_t)sb.st_size) != (ssize_t)sb.st_size)
    goto cleanup;
  buf[sb.st_size] = '\0';
  *out = buf;
  buf = NULL;
  rc = MCIM_OK;
cleanup:
  if (fd >= 0)
    close(fd);
  free(buf);
  return rc;
}

mcim_cause_t mcim_tre_tpm_quote(struct mcim_tre *tre, const char *nonce, json_t **evidence)
{
  struct tre_soft *t = tpm_tre(tre);
  uint8_t qual[64], *attest = NULL, *sig = NULL;
  size_t qlen = nonce ? strlen(nonce) / 2 : 0, alen = 0, slen = 0;
  char *path = NULL, *log = NULL, *a64 = NULL, *s64 = NULL;
  json_t *st = NULL;
  mcim_tpm_t *tpm = NULL;
  mcim_tpm_key_t *key = NULL;
  bool held = false;
  mcim_cause_t rc = MCIM_NOT_FOUND;

  if (evidence)
    *evidence = NULL;
  if (!t)
    goto cleanup;
  rc = MCIM_INVALID_ARGUMENT;
  if (!evidence || qlen == 0 || qlen > sizeof(qual) ||
      mcim_hex_decode(nonce, strlen(nonce), qual, qlen) != MCIM_OK)
    goto cleanup;
  rc = MCIM_NO_MEMORY;
  path = path_of(t, "");
  if (!path)
    goto cleanup;
  rc = tre_begin(t, &st);
  if (rc != MCIM_OK)
    goto cleanup;
  held = true;
  /* the AK first: a TRE never enrolled has none (TPM_ENROLMENT_REQUIRED), log or not */
  rc = tre_tpm_quote_key(t, st, &tpm, &key);
  if (rc == MCIM_TPM_ENROLMENT_REQUIRED)
    goto cleanup;
  if (rc == MCIM_OK && (rc = read_log(path, &log)) != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: no measurement log %s to quote", path);
    goto cleanup;
  }
  if (rc == MCIM_OK)
    rc = mcim_tpm_quote(tpm, key, MCIM_ATTEST_PCR, qual, qlen, &attest, &alen, &sig, &slen);
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "tre: TPM2_Quote: %s",
                   tpm ? mcim_tpm_detail(tpm) : "no TPM connection");
    goto cleanup;
  }
  rc = MCIM_NO_MEMORY;
  a64 = mcim_b64url_dup(attest, alen);
  s64 = mcim_b64url_dup(sig, slen);
  if (a64 && s64)
    *evidence = json_pack("{s:s,s:s,s:s}", "attest", a64, "signature", s64, "log", log);
  if (*evidence)
    rc = MCIM_OK;
cleanup:
  mcim_tpm_key_free(key); /* before tre_end closes its connection */
  if (held)
    tre_end(t, st);
  free(attest);
  free(sig);
  free(a64);
  free(s64);
  free(log);
  free(path);
  return rc;
}
