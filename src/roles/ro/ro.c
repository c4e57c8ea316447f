/* The RO role kind: configuration, schema and routes of ICF, DRF and DPF. */
#include <string.h>

#include "roles/auc.h"
#include "roles/auc_sync.h"
#include "roles/kinds.h"
#include "roles/pcid.h"
#include "roles/ro/ro.h"

bool mcim_ro_is_sho_name(const char *name)
{
  return mcim_role_name_is_sho(name);
}

static const struct mcim_dpf_steps dpf_steps[] = {
    /* pristine steps 12-15 */
    {"initial", 12, 13, 14, 15},
    /* old-SHO change steps 6, 7, 12, 13 */
    {"change", 6, 7, 12, 13},
};

const struct mcim_dpf_steps *mcim_dpf_steps_for(const char *procedure)
{
  for (size_t i = 0; i < sizeof(dpf_steps) / sizeof(dpf_steps[0]); i++)
    if (procedure && strcmp(procedure, dpf_steps[i].procedure) == 0)
      return &dpf_steps[i];
  return NULL;
}

static char ro_schema_2[] =
    "CREATE TABLE drf (device TEXT NOT NULL, sho TEXT NOT NULL, state TEXT NOT NULL,"
    " endpoint TEXT NOT NULL, txn TEXT NOT NULL, updated BIGINT NOT NULL,"
    " PRIMARY KEY (device, sho));"
    "CREATE TABLE dpf_packages (txn TEXT PRIMARY KEY, device TEXT NOT NULL, sho TEXT NOT NULL,"
    " procedure TEXT NOT NULL, package TEXT NOT NULL, state TEXT NOT NULL, result TEXT,"
    " created BIGINT NOT NULL, updated BIGINT NOT NULL);"
    "CREATE INDEX dpf_packages_device ON dpf_packages (device, state)";

static const mcim_migration_t ro_migrations[] = {
    {1, "ICF: PCID subscriptions (AuC)", mcim_auc_schema_sql},
    {2, "DRF registry, DPF packages", ro_schema_2},
    {3, "PCID renewal: RO pool counter, ICF renewal-due flags", mcim_ro_pcid_schema_sql},
    {4, "owner records, orders by txn (issue 8)",
     "CREATE TABLE owners (device TEXT PRIMARY KEY, owner_jwk TEXT NOT NULL,"
     " registered_by TEXT NOT NULL, created BIGINT NOT NULL, updated BIGINT NOT NULL);"
     "CREATE TABLE drf_orders (txn TEXT PRIMARY KEY, device TEXT NOT NULL, sho TEXT NOT NULL,"
     " endpoint TEXT NOT NULL, procedure TEXT NOT NULL, via TEXT NOT NULL, state TEXT NOT NULL,"
     " record TEXT NOT NULL, created BIGINT NOT NULL, updated BIGINT NOT NULL,"
     " expires BIGINT NOT NULL);"
     "CREATE INDEX drf_orders_device ON drf_orders (device, state);"
     "CREATE INDEX drf_orders_expires ON drf_orders (state, expires)"},
    /* The purge of reported packages (each minute, under the writers' lock) scanned the whole
     * table (43 ms with 1,000,000 devices, bench/drf_scale.sh); the ICF's PCIDs are looked up
     * by device when the DPF renews one (pcid.c), which scanned every PCID. */
    {5, "indexes at operator scale: DPF packages by age, PCIDs by device",
     "CREATE INDEX dpf_packages_updated ON dpf_packages (state, updated);"
     "CREATE INDEX auc_device ON auc (device)"},
    /* An SHO's registrations of one device can overtake each other (two instances of the
     * SHO deliver in parallel, a retry waits in backoff): `seq` (the SHO's time of queueing,
     * microseconds) keeps the newest. */
    {6, "DRF registrations ordered by the SHO's sequence",
     "ALTER TABLE drf ADD COLUMN seq BIGINT NOT NULL DEFAULT 0"},
    {7, "ICF: the PCIDs it wants in its HLR, or out of it (auc_sync.c, issue 13)",
     mcim_auc_hlr_schema_sql},
    /* Two instances applied one intent at once (auc_sync.c, claim) */
    {8, "ICF: an HLR intent applied by one instance at a time", mcim_auc_hlr_lease_sql},
    /* One renewal per device per pcid_renewal_interval (docs/pcid-renewal.md section 2) */
    {9, "DPF: the last PCID renewal granted to each device", mcim_pcid_grants_sql},
    /* The proof of a switch and what overtakes older proofs (registry.c), for as long as the
     * installs it overtakes are kept: the relay's stored answer lived a day. */
    {10, "DRF: the newest switch the RO relayed to each SHO of a device",
     "CREATE TABLE drf_switches (device TEXT NOT NULL, sho TEXT NOT NULL, txn TEXT NOT NULL,"
     " relayed BIGINT NOT NULL, PRIMARY KEY (device, sho));"
     "CREATE INDEX drf_switches_relayed ON drf_switches (relayed)"},
    /* The DRF counts a device's live orders (drf.c, drf_orders_open_max) under the writers'
     * lock for every new order. Without statistics SQLite chose drf_orders_expires (state,
     * expires) for it: every live order of every device. With expires in the device index
     * the count is a covering search of that device's live orders; the old index is its
     * prefix, so every query that used it uses this one as well. */
    {11, "DRF: a device's live orders counted by one index",
     "DROP INDEX drf_orders_device;"
     "CREATE INDEX drf_orders_device_live ON drf_orders (device, state, expires)"},
    /* An old owner's live orders after a handover do not count against the new one (drf.c) */
    {12, "DRF: the owner key each order was verified with",
     "ALTER TABLE drf_orders ADD COLUMN owner_jwk TEXT"},
    /* One more at each handover: the SHOs end an older epoch's orders (drf.c, owner_epoch) */
    {13, "owner records: the handovers' count",
     "ALTER TABLE owners ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0"},
};

static const char *const yes_no[] = {"yes", "no", NULL};

static const mcim_config_spec_t ro_spec[] = {
    {.name = "icf_clients", .type = MCIM_CFG_STRING, .def = "vno", .min = 1, .max = 1024,
     .help = "comma-separated access networks allowed to fetch AVs from the ICF"},
    {.name = "drf_notify", .type = MCIM_CFG_ENUM, .def = "yes", .allowed = yes_no,
     .help = "tell the ordered SHO when its device discovers it (step 8)"},
    {.name = "pcid_prefix", .type = MCIM_CFG_STRING, .def = "0010190", .min = 5, .max = 14,
     .help = "digits of the RO's PCID pool (MCC + MNC + pool share) for renewals; PCIDs are 15"
             " digits"},
    {.name = "m2mes", .type = MCIM_CFG_STRING, .def = "m2mes", .min = 1, .max = 63,
     .help = "name of the M2MES instance: the one party that registers devices' first owners"},
    {.name = "pva", .type = MCIM_CFG_STRING, .def = "pva", .min = 1, .max = 63,
     .help = "name of the PVA instance whose verdicts authorise provisioning (step 12 / 6)"},
    {.name = "order_lifetime", .type = MCIM_CFG_DURATION, .def = "1h", .min = 1,
     .max = 30LL * 86400,
     .help = "how long an order (step 1) may take to be provisioned before the DRF drops it"},
    {.name = "drf_orders_open_max", .type = MCIM_CFG_INT, .def = "16", .min = 1, .max = 10000,
     .help = "orders of one device and owner key that may be live at the DRF at once, across"
             " all SHOs (ordered, authorised, within order_lifetime; a handover ends the old"
             " owner's); one more is answered 429 ORDERS_BUSY with Retry-After, nothing stored"},
    {.name = "pcid_lifetime", .type = MCIM_CFG_DURATION, .def = "30d", .min = 1,
     .max = 3650LL * 86400, .help = "lifetime of a PCID credential the DPF issues (renewal)"},
    {.name = "pcid_renewal_interval", .type = MCIM_CFG_DURATION, .def = "1d", .min = 1,
     .max = 30LL * 86400,
     .help = "a device renews its PCID credential at the DPF at most once in this time (a new"
             " txn; a retry gets its answer, a renewal the network asked for is not held back)"},
};

static const struct mcim_http_route ro_routes[] = {
    {"POST", "/v1/icf/pcids", mcim_icf_pcids, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/icf/avs", mcim_icf_avs, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/icf/resync", mcim_icf_resync, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/drf/owners", mcim_drf_owner_register, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/drf/owners/{device}/handover", mcim_drf_owner_handover, 0},
    {"POST", "/v1/drf/owner-queries", mcim_drf_owner_query, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/drf/orders", mcim_drf_order, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/drf/registrations", mcim_drf_register, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/drf/discover", mcim_drf_discover, 0},
    {"POST", "/v1/drf/authorisations", mcim_drf_authorise, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/dpf/packages", mcim_dpf_package_put, MCIM_ROUTE_PEER_CERT},
    {"POST", "/v1/dpf/packages/{device}/{txn}", mcim_dpf_package_fetch, 0},
    {"POST", "/v1/dpf/status", mcim_dpf_status, 0},
    {"POST", "/v1/dpf/releases", mcim_dpf_release, 0},
    {"POST", "/v1/dpf/notices", mcim_dpf_notice, 0},
    {"POST", "/v1/dpf/pcid", mcim_dpf_pcid, 0},
    {"POST", "/v1/admin/pcid/{device}/renew", mcim_ro_admin_pcid_renew, MCIM_ROUTE_PEER_CERT},
};

/* DRF orders past their lifetime (the order record they vouched for has expired too) and DPF
 * packages whose install was reported (installed or failed) or whose procedure was abandoned
 * (already emptied), once record_retention old (common.c); of the installed orders, all but
 * the newest of each (device, SHO): that one links the SHO to the device (relay.c) for as
 * long as the registry does, the older ones nothing (an owner's orders with new txns, one
 * failure each, added rows for good before 2026-12-06). The ICF's PCIDs a renewal terminated,
 * K and OPc with them, record_retention after their expiry (no claim, AV or re-registration
 * can use an expired PCID: the ICF refuses a renewed one already expired), once the HLR has
 * let them go, and then their done HLR intents. The switches relayed (drf_switches) as old
 * as the installs they overtake. The registry (drf), the owners and the live PCIDs stay. */
static const char *const ro_purge[] = {
    "DELETE FROM drf_orders WHERE state IN ('expired', 'authorised', 'failed') AND expires < ?",
    "DELETE FROM drf_orders WHERE state = 'installed' AND expires < ? AND EXISTS (SELECT 1 FROM"
    " drf_orders n WHERE n.device = drf_orders.device AND n.sho = drf_orders.sho AND"
    " n.state = 'installed' AND n.created > drf_orders.created)",
    "DELETE FROM dpf_packages WHERE state IN ('installed', 'failed', 'abandoned') AND updated < ?",
    "DELETE FROM drf_switches WHERE relayed < ?",
    "DELETE FROM auc WHERE state = 'terminated' AND expires < ? AND imsi NOT IN"
    " (SELECT imsi FROM auc_hlr WHERE done = 0)",
    "DELETE FROM auc_hlr WHERE want = 'absent' AND done = 1 AND imsi NOT IN (SELECT imsi FROM"
    " auc) AND updated < ?",
    NULL,
};

/* The DRF's sweeps, then what the ICF's HLR should hold and does not yet. */
static bool ro_tick(struct mcim_role *r)
{
  mcim_drf_expire(r); /* every expired order at once: nothing left for the next poll */
  return mcim_auc_sync_tick(r);
}

const struct mcim_role_kind mcim_role_ro = {
    .kind = "ro",
    .summary = "registration operator: ICF (PCID AuC), DRF (discovery), DPF (MCIM relay)",
    .spec = ro_spec,
    .nspec = sizeof(ro_spec) / sizeof(ro_spec[0]),
    .migrations = ro_migrations,
    .nmigrations = sizeof(ro_migrations) / sizeof(ro_migrations[0]),
    .routes = ro_routes,
    .nroutes = sizeof(ro_routes) / sizeof(ro_routes[0]),
    .tick = ro_tick,
    .purge = ro_purge,
    .auc = true,
};
