/* The lab PKI folder (`mcim pki init`, docs/jose-pki.md): the operators' CA, the M2MES CA and
 * the lab TPM vendor CA, a key and certificate per role and for the admin client, and the
 * loaders of a role's and a CA's files. Apart from pki.c and pki_issue.c: a layout of files
 * on top of them, nothing of X.509 itself. */
#include "mcim/pki.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcim/log.h"

const char *const mcim_pki_default_roles[] = {"vno", "ro", "pva", "m2mes", "sho-a", "sho-b", NULL};

static mcim_cause_t path_join(char *out, size_t cap, const char *a, const char *b)
{
  int n = snprintf(out, cap, "%s/%s", a, b);
  return (n < 0 || (size_t)n >= cap) ? MCIM_INVALID_ARGUMENT : MCIM_OK;
}

/* mkdir -p, then insist on a folder. */
static mcim_cause_t make_dirs(const char *path, mode_t mode)
{
  char buf[PATH_MAX];
  struct stat st;
  int n = snprintf(buf, sizeof(buf), "%s", path);
  if (n <= 0 || (size_t)n >= sizeof(buf))
    return MCIM_INVALID_ARGUMENT;
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
      goto fail;
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST)
    goto fail;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    mcim_log_error("%s is not a folder", path);
    return MCIM_IO_ERROR;
  }
  return MCIM_OK;
fail:
  mcim_log_error("cannot create folder %s: %s", buf, strerror(errno));
  return MCIM_IO_ERROR;
}

/* <dir>/<name>/{key,cert}.pem for one role (or admin), from the operators' CA. */
static mcim_cause_t issue_role(const mcim_pki_ca_t *ca, const char *dir, const char *name,
                               mcim_cert_usage_t usage, int days)
{
  char folder[PATH_MAX], path[PATH_MAX];
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  mcim_cert_request_t req = {.name = name, .usage = usage, .days = days};

  mcim_cause_t rc = path_join(folder, sizeof(folder), dir, name);
  if (rc != MCIM_OK || (rc = make_dirs(folder, 0755)) != MCIM_OK ||
      (rc = mcim_pki_key_generate(&key)) != MCIM_OK)
    goto cleanup;
  req.key = key;
  if ((rc = mcim_pki_issue(ca, &req, &cert)) != MCIM_OK ||
      (rc = path_join(path, sizeof(path), folder, "key.pem")) != MCIM_OK ||
      (rc = mcim_pki_key_write(path, key)) != MCIM_OK ||
      (rc = path_join(path, sizeof(path), folder, "cert.pem")) != MCIM_OK ||
      (rc = mcim_pki_cert_write(path, cert)) != MCIM_OK)
    goto cleanup;
cleanup:
  X509_free(cert);
  EVP_PKEY_free(key);
  return rc;
}

static mcim_cause_t roles_valid(const char *const *roles, size_t nroles)
{
  for (size_t i = 0; i < nroles; i++) {
    if (!mcim_pki_name_valid(roles[i]) || strcmp(roles[i], "ca") == 0 ||
        strcmp(roles[i], MCIM_PKI_ADMIN) == 0)
      return MCIM_INVALID_ARGUMENT;
    for (size_t j = 0; j < i; j++)
      if (strcmp(roles[i], roles[j]) == 0)
        return MCIM_INVALID_ARGUMENT;
  }
  return MCIM_OK;
}

static bool pki_exists(const char *dir)
{
  static const char *const files[] = {MCIM_PKI_OPERATORS_CA_CERT, MCIM_PKI_OPERATORS_CA_KEY,
                                      MCIM_PKI_M2MES_CA_CERT, MCIM_PKI_M2MES_CA_KEY};
  char path[PATH_MAX];
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
    if (path_join(path, sizeof(path), dir, files[i]) == MCIM_OK && access(path, F_OK) == 0)
      return true;
  return false;
}

static mcim_cause_t write_ca(const mcim_pki_ca_t *ca, const char *dir, const char *cert_rel,
                             const char *key_rel)
{
  char cert[PATH_MAX], key[PATH_MAX];
  mcim_cause_t rc = path_join(cert, sizeof(cert), dir, cert_rel);
  if (rc == MCIM_OK)
    rc = path_join(key, sizeof(key), dir, key_rel);
  return rc == MCIM_OK ? mcim_pki_ca_write(ca, cert, key) : rc;
}

mcim_cause_t mcim_pki_lab_init(const char *dir, const char *const *roles, size_t nroles, bool force,
                               int days)
{
  mcim_pki_ca_t *ops = NULL, *m2mes = NULL, *vendor = NULL;
  char ca_dir[PATH_MAX];

  if (!dir || !dir[0] || (nroles && !roles) || days < 0)
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = roles_valid(roles, nroles);
  if (rc != MCIM_OK)
    return rc;
  if (!force && pki_exists(dir))
    return MCIM_CONFLICT;
  if ((rc = make_dirs(dir, 0755)) != MCIM_OK ||
      (rc = path_join(ca_dir, sizeof(ca_dir), dir, "ca")) != MCIM_OK ||
      (rc = make_dirs(ca_dir, 0755)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim operators CA", days, &ops)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim M2MES CA", days, &m2mes)) != MCIM_OK ||
      (rc = mcim_pki_ca_create("mcim lab TPM vendor CA", days, &vendor)) != MCIM_OK)
    goto cleanup;
  for (size_t i = 0; i < nroles; i++)
    if ((rc = issue_role(ops, dir, roles[i], MCIM_CERT_TLS, days)) != MCIM_OK)
      goto cleanup;
  if ((rc = issue_role(ops, dir, MCIM_PKI_ADMIN, MCIM_CERT_TLS_CLIENT, days)) != MCIM_OK)
    goto cleanup;
  /* The CAs go last: a run that fails half-way leaves no CA behind, so it cannot be
   * mistaken for a complete PKI and a plain re-run starts over. */
  if ((rc = write_ca(vendor, dir, MCIM_PKI_TPM_VENDOR_CA_CERT, MCIM_PKI_TPM_VENDOR_CA_KEY)) !=
          MCIM_OK ||
      (rc = write_ca(m2mes, dir, MCIM_PKI_M2MES_CA_CERT, MCIM_PKI_M2MES_CA_KEY)) != MCIM_OK ||
      (rc = write_ca(ops, dir, MCIM_PKI_OPERATORS_CA_CERT, MCIM_PKI_OPERATORS_CA_KEY)) != MCIM_OK)
    goto cleanup;
cleanup:
  mcim_pki_ca_free(vendor);
  mcim_pki_ca_free(m2mes);
  mcim_pki_ca_free(ops);
  return rc;
}

mcim_cause_t mcim_pki_lab_load_role(const char *dir, const char *role, X509 **cert, EVP_PKEY **key)
{
  char folder[PATH_MAX], path[PATH_MAX];
  X509 *c = NULL;
  if (!dir || !mcim_pki_name_valid(role))
    return MCIM_INVALID_ARGUMENT;
  mcim_cause_t rc = path_join(folder, sizeof(folder), dir, role);
  if (rc != MCIM_OK)
    return rc;
  if (cert && ((rc = path_join(path, sizeof(path), folder, "cert.pem")) != MCIM_OK ||
               (rc = mcim_pki_cert_load(path, &c)) != MCIM_OK))
    return rc;
  if (key && ((rc = path_join(path, sizeof(path), folder, "key.pem")) != MCIM_OK ||
              (rc = mcim_pki_key_load(path, key)) != MCIM_OK)) {
    X509_free(c);
    return rc;
  }
  if (cert)
    *cert = c;
  return MCIM_OK;
}

mcim_cause_t mcim_pki_lab_load_ca(const char *dir, mcim_pki_lab_ca_t which, mcim_pki_ca_t **out)
{
  char cert[PATH_MAX], key[PATH_MAX];
  if (!dir || !out || (which != MCIM_PKI_CA_OPERATORS && which != MCIM_PKI_CA_M2MES))
    return MCIM_INVALID_ARGUMENT;
  bool ops = which == MCIM_PKI_CA_OPERATORS;
  mcim_cause_t rc =
      path_join(cert, sizeof(cert), dir, ops ? MCIM_PKI_OPERATORS_CA_CERT : MCIM_PKI_M2MES_CA_CERT);
  if (rc == MCIM_OK)
    rc = path_join(key, sizeof(key), dir, ops ? MCIM_PKI_OPERATORS_CA_KEY : MCIM_PKI_M2MES_CA_KEY);
  return rc == MCIM_OK ? mcim_pki_ca_load(cert, key, out) : rc;
}
