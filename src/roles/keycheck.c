/* The storage key and the database belong together.
 *
 * Every secret a role stores (K and OPc, attach XRES, the M2MES's keys) is sealed with its
 * storage key. Instances of a role that share a database must share that key; a host where
 * the key file is missing makes a new random one (mcim_storage_key_load_or_create), and an
 * instance with another key would answer UNSEAL_FAILED for every secret its sibling stored,
 * and store secrets its sibling cannot open. So the first start seals a known value into
 * the database (table key_check), and every start opens it: an instance whose key does not
 * open it refuses to start, saying why, before it serves anything. */
#include <string.h>

#include "mcim/log.h"
#include "mcim/seal.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "roles/role_priv.h"

#define KEY_CHECK_CONTEXT "mcim key_check"
static const char key_check_plain[] = "the storage key of this database";

static const mcim_migration_t keycheck_migrations[] = {
    {1, "storage key check",
     "CREATE TABLE key_check (name TEXT PRIMARY KEY, sealed BYTEA NOT NULL,"
     " created BIGINT NOT NULL)"},
};

static mcim_cause_t blob_cb(const mcim_row_t *row, void *arg)
{
  uint8_t *out = arg;
  size_t len = 0;
  const uint8_t *b = mcim_row_blob(row, 0, &len);
  if (!b || len == 0 || len > 255)
    return MCIM_BAD_LENGTH;
  out[0] = (uint8_t)len;
  memcpy(out + 1, b, len);
  return MCIM_OK;
}

/* The sealed check value, read back (out[0]: its length). */
static mcim_cause_t load(mcim_store_t *st, uint8_t out[256])
{
  mcim_val_t p[] = {MCIM_TEXT("storage_key")};
  return mcim_store_query_one(st, "SELECT sealed FROM key_check WHERE name = ?", p, 1, blob_cb,
                              out);
}

mcim_cause_t mcim_role_storage_key_check(struct mcim_role *r, mcim_store_t *st)
{
  uint8_t stored[256], sealed[128], plain[64];
  size_t sealed_len = 0, plain_len = 0;
  mcim_cause_t rc = mcim_store_migrate(st, "key_check", keycheck_migrations,
                                       sizeof(keycheck_migrations) / sizeof(keycheck_migrations[0]));
  if (rc == MCIM_OK)
    rc = load(st, stored);
  if (rc == MCIM_NOT_FOUND) {
    /* the first start on this database: ours is the key (a sibling starting at the same
     * moment may win the insert: then its value is the one checked below) */
    rc = mcim_seal(r->storage_key, KEY_CHECK_CONTEXT, (const uint8_t *)key_check_plain,
                   sizeof(key_check_plain) - 1, sealed, sizeof(sealed), &sealed_len);
    mcim_val_t p[] = {MCIM_TEXT("storage_key"), MCIM_BLOB(sealed, sealed_len),
                      MCIM_INT(mcim_now())};
    if (rc == MCIM_OK)
      rc = mcim_store_exec(st,
                           "INSERT INTO key_check (name, sealed, created) VALUES (?, ?, ?)"
                           " ON CONFLICT (name) DO NOTHING",
                           p, MCIM_NPARAMS(p), NULL, NULL);
    if (rc == MCIM_OK)
      rc = load(st, stored);
  }
  if (rc != MCIM_OK) {
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc, "storage key check: %s", mcim_store_errmsg(st));
    return rc;
  }
  rc = mcim_unseal(r->storage_key, KEY_CHECK_CONTEXT, stored + 1, stored[0], plain,
                   sizeof(plain), &plain_len);
  if (rc == MCIM_OK && (plain_len != sizeof(key_check_plain) - 1 ||
                        memcmp(plain, key_check_plain, plain_len) != 0))
    rc = MCIM_UNSEAL_FAILED;
  if (rc != MCIM_OK)
    mcim_log_event(MCIM_LOG_ERROR, NULL, 0, rc,
                   "storage key %s does not open this database's secrets: they were sealed with"
                   " another key. Every instance of a role on one database must use the same"
                   " storage key file (copy it from the first instance); a key made afresh"
                   " cannot open what is stored",
                   mcim_config_path(r->cfg, "storage_key"));
  return rc;
}
