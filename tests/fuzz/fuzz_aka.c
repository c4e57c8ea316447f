/* The AKA messages a peer sends: RAND and AUTN of a challenge into the TRE's USIM side (the
 * TRE's aka operation, src/tre/tre_aka.c: MAC-A first, then the SQN against the credential's
 * state, TS 33.102 Annex C, committed only on success), and a device's AUTS for a RAND into
 * the AuC's resynchronisation (mcim_auc_resync, src/roles/auc.c: MAC-S, SQN_MS, the new
 * SEQ_HE in the store), followed by the next vector. A forged MAC stops both at once, so two
 * modes compute the MAC here with the subscriber's key (the fixture's PCID credential in the
 * TRE, an AuC subscriber in an SQLite store on tmpfs) over fuzzed SQN and AMF: the SQN logic
 * behind a valid MAC is what they reach. The TRE's state and the AuC's row are put back
 * before every input.
 *
 * Input: one mode byte, then (short inputs padded with zeros)
 *   0  RAND (16) || AUTN (16): the TRE's aka with its PCID credential;
 *   1  RAND (16) || SQN (6) || AMF (2): AUTN made here (K, OPc of the PCID credential), then 0;
 *   2  RAND (16) || AUTS (14): the AuC's resync of subscriber FUZZ_IMSI;
 *   3  RAND (16) || SQN_MS (6): AUTS made here (the subscriber's K, OPc), then 2.
 * Seeds: tests/fuzz/corpus/fuzz_aka/ (vectors the AuC generated, AUTS the USIM side made). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "mcim/aka.h"
#include "mcim/milenage.h"
#include "mcim/seal.h"
#include "mcim/store.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "roles/auc.h"

static char *dir;
static mcim_tre_t *tre;
static struct fuzz_tre_files files;
static mcim_milenage_t *pcid_m, *sub_m;
static mcim_store_t *store;
static mcim_storage_key_t *skey;
static struct mcim_auc_sub sub = {.imsi = FUZZ_IMSI, .device = FUZZ_DEVICE,
                                  .amf = {0x80, 0x00}};

static mcim_milenage_t *milenage(const char *k_hex, const char *opc_hex, uint8_t *k,
                                 uint8_t *opc)
{
  mcim_milenage_t *m = NULL;
  if (mcim_hex_decode_str(k_hex, k, 16) != MCIM_OK ||
      mcim_hex_decode_str(opc_hex, opc, 16) != MCIM_OK || mcim_milenage_new(&m) != MCIM_OK ||
      mcim_milenage_set_opc(m, k, opc) != MCIM_OK)
    fuzz_die("milenage");
  return m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  uint8_t k[16], opc[16];
  fuzz_quiet();
  dir = fuzz_tmpdir("aka");
  char tre_dir[1024], db[1024];
  snprintf(tre_dir, sizeof(tre_dir), "%s/tre", dir);
  snprintf(db, sizeof(db), "sqlite:%s/auc.db", dir);
  tre = fuzz_tre_make(tre_dir);
  fuzz_tre_save(tre_dir, &files);
  free(dir);
  dir = strdup(tre_dir);
  pcid_m = milenage(FUZZ_PCID_K, FUZZ_PCID_OPC, k, opc);
  sub_m = milenage(FUZZ_MCIM_K, FUZZ_MCIM_OPC, sub.k, sub.opc);
  static const mcim_migration_t steps[] = {{1, "AuC", mcim_auc_schema_sql}};
  if (mcim_store_open(db, NULL, &store) != MCIM_OK ||
      mcim_store_migrate(store, "auc", steps, 1) != MCIM_OK ||
      mcim_storage_key_generate(&skey) != MCIM_OK)
    fuzz_die("the AuC's store");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint8_t in[32] = {0};
  if (size < 1)
    return 0;
  uint8_t mode = data[0] % 4;
  memcpy(in, data + 1, size - 1 < sizeof(in) ? size - 1 : sizeof(in));
  const uint8_t *rand = in;
  if (mode <= 1) {
    uint8_t autn[16], res[8], auts[14];
    memcpy(autn, in + 16, 16);
    if (mode == 1) {
      struct mcim_aka_av av;
      if (mcim_aka_gen_av_rand(pcid_m, rand, in + 16, in + 22, &av) != MCIM_OK)
        return 0;
      memcpy(autn, av.autn, 16);
    }
    fuzz_tre_restore(dir, &files);
    (void)tre->ops->aka(tre->ctx, MCIM_TRE_PCID, rand, autn, res, auts);
    return 0;
  }
  uint8_t auts[14];
  memcpy(auts, in + 16, 14);
  if (mode == 3 && mcim_aka_gen_auts(sub_m, rand, in + 16, auts) != MCIM_OK)
    return 0;
  if (mcim_store_exec(store, "DELETE FROM auc", NULL, 0, NULL, NULL) != MCIM_OK ||
      mcim_auc_add(store, skey, &sub) != MCIM_OK)
    fuzz_die("the AuC's subscriber");
  if (mcim_auc_resync(store, skey, FUZZ_IMSI, rand, auts) == MCIM_OK) {
    struct mcim_aka_av avs[1];
    (void)mcim_auc_gen_avs(store, skey, FUZZ_IMSI, 1, FUZZ_NOW, avs);
  }
  return 0;
}
