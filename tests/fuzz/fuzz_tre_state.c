/* The software TRE's state file as the TRE opens it (src/tre/tre_store.c, tre_load: each slot's
 * header "mcim-tre 2 <device> <generation> <length>\n" or format 1's, the seal with the
 * context "tre/<device>/<generation>", the newest slot that opens, the fallback to the other,
 * the document's version and device), through mcim_tre_soft_open, and then the read-only
 * operations that take the document apart (status, identity, cert, pending: the latter signs
 * with the document's attestation key). The fixture TRE's folder holds the fixture's storage
 * key (tests/fuzz/data/tre.key), so the seeds' slot files open, and so this target can also
 * seal any bytes as the document: then the header and the seal are right and the document's
 * own checks are what is fuzzed.
 *
 * Input: one mode byte, then
 *   bit 0 = 0: two big-endian length bytes n, then n bytes written as DIR/tre.sealed and the
 *              rest as DIR/tre.sealed.1 (absent when empty);
 *   bit 0 = 1: the plaintext document, sealed here as generation 7 of dev1 into DIR/tre.sealed
 *              (as tre_persist writes it), DIR/tre.sealed.1 absent;
 *   bit 1:     DIR/tre.sealed.1 is the fixture's own valid slot (generation 4) instead.
 * Seeds: tests/fuzz/corpus/fuzz_tre_state/ (slot files and documents of the fixture TRE after
 * real operations). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "mcim/aka.h"
#include "mcim/milenage.h"
#include "mcim/seal.h"
#include "mcim/tre.h"
#include "mcim/util.h"
#include "tre/tre_priv.h"

static char *dir, *path0, *path1;
static struct fuzz_tre_files fixture;
static mcim_storage_key_t *skey;
static struct mcim_aka_av av; /* a challenge the fixture's PCID credential answers */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  dir = fuzz_tmpdir("tre-state");
  mcim_tre_t *tre = fuzz_tre_make(dir);
  mcim_tre_close(tre);
  fuzz_tre_save(dir, &fixture);
  size_t klen = 0;
  char *key = fuzz_data("tre.key", &klen);
  if (mcim_storage_key_from_bytes((const uint8_t *)key, klen, &skey) != MCIM_OK)
    fuzz_die("storage key");
  free(key);
  uint8_t k[16], opc[16], sqn[6] = {0, 0, 0, 0, 0, 0x40};
  static const uint8_t rand[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  static const uint8_t amf[2] = {0x80, 0x00};
  mcim_milenage_t *m = NULL;
  if (mcim_hex_decode_str(FUZZ_PCID_K, k, 16) != MCIM_OK ||
      mcim_hex_decode_str(FUZZ_PCID_OPC, opc, 16) != MCIM_OK || mcim_milenage_new(&m) != MCIM_OK ||
      mcim_milenage_set_opc(m, k, opc) != MCIM_OK ||
      mcim_aka_gen_av_rand(m, rand, sqn, amf, &av) != MCIM_OK)
    fuzz_die("AV");
  mcim_milenage_free(m);
  path0 = malloc(strlen(dir) + 32);
  path1 = malloc(strlen(dir) + 32);
  sprintf(path0, "%s/%s", dir, TRE_FILE_STATE);
  sprintf(path1, "%s/%s", dir, TRE_FILE_STATE_1);
  return 0;
}

/* What tre_persist writes for a document of these bytes. */
static void write_sealed(const uint8_t *doc, size_t len)
{
  const uint64_t gen = 7;
  char header[128], context[64];
  size_t slen = 0;
  int hlen = snprintf(header, sizeof(header), "%s%s %" PRIu64 " %zu\n", TRE_MAGIC, FUZZ_DEVICE,
                      gen, mcim_seal_len(len));
  snprintf(context, sizeof(context), "%s%s/%" PRIu64, TRE_CONTEXT_PREFIX, FUZZ_DEVICE, gen);
  size_t cap = (size_t)hlen + mcim_seal_len(len);
  uint8_t *file = malloc(cap);
  if (!file)
    fuzz_die("out of memory");
  memcpy(file, header, (size_t)hlen);
  if (mcim_seal(skey, context, doc, len, file + hlen, cap - (size_t)hlen, &slen) != MCIM_OK)
    fuzz_die("seal");
  fuzz_write_file(path0, file, (size_t)hlen + slen);
  free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  if (mode & 1) {
    if (size > MCIM_SEAL_MAX_PLAIN)
      return 0;
    write_sealed(data, size);
    unlink(path1);
  } else {
    size_t n = size >= 2 ? ((size_t)data[0] << 8 | data[1]) : 0;
    data += size >= 2 ? 2 : size;
    size -= size >= 2 ? 2 : size;
    if (n > size)
      n = size;
    fuzz_write_file(path0, data, n);
    if (size - n)
      fuzz_write_file(path1, data + n, size - n);
    else
      unlink(path1);
  }
  if (mode & 2)
    fuzz_write_file(path1, fixture.buf[1], fixture.len[1]);

  mcim_tre_t *tre = NULL;
  if (mcim_tre_soft_open(dir, &tre) != MCIM_OK)
    return 0;
  json_t *status = NULL, *pending = NULL;
  char imsi[24], *pem = NULL;
  if (tre->ops->status(tre->ctx, &status) == MCIM_OK)
    json_decref(status);
  (void)tre->ops->identity(tre->ctx, MCIM_TRE_PCID, imsi);
  (void)tre->ops->identity(tre->ctx, FUZZ_SHO, imsi);
  if (tre->ops->cert(tre->ctx, MCIM_TRE_CERT_KA, &pem) == MCIM_OK)
    free(pem);
  if (tre->ops->pending(tre->ctx, 60, &pending) == MCIM_OK)
    json_decref(pending);
  uint8_t res[8], auts[14];
  (void)tre->ops->aka(tre->ctx, MCIM_TRE_PCID, av.rand, av.autn, res, auts);
  mcim_tre_close(tre);
  return 0;
}
