/* White-box access to the software TRE's sealed files for the tests of tests/unit/test_tre_*.c
 * (the test holds the storage key): the slot files read and written, their headers, the newest
 * slot, the state document opened and written as the TRE would, and the search for secrets in
 * text and in a document with every MCIM's secrets opened. Header-only, after tre_fixture.h. */
#ifndef MCIM_TEST_TRE_SEALED_FIXTURE_H
#define MCIM_TEST_TRE_SEALED_FIXTURE_H

#include "tre_fixture.h"

TRE_SHARED char *path_in(const struct fx *f, const char *name)
{
  static char buf[4][128];
  static int n;
  char *p = buf[n++ % 4];
  snprintf(p, 128, "%s/%s", f->dir, name);
  return p;
}

TRE_SHARED uint8_t *file_read(const char *path, size_t *len)
{
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long n = ftell(fp);
  assert_true(n > 0);
  rewind(fp);
  uint8_t *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
  buf[n] = 0;
  fclose(fp);
  *len = (size_t)n;
  return buf;
}

TRE_SHARED void file_write(const char *path, const void *buf, size_t len)
{
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(buf, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

/* A slot's header: generation (0 for format 1), where the sealed blob starts, its length.
 * false when the file is missing or its header is not one of ours. */
TRE_SHARED bool slot_header(const uint8_t *buf, size_t len, uint64_t *gen, size_t *blob,
                            size_t *blob_len)
{
  const char v1[] = "mcim-tre 1 " DEVICE "\n", v2[] = "mcim-tre 2 " DEVICE " ";
  if (len >= strlen(v1) && memcmp(buf, v1, strlen(v1)) == 0) {
    *gen = 0;
    *blob = strlen(v1);
    *blob_len = len - *blob;
    return true;
  }
  if (len < strlen(v2) || memcmp(buf, v2, strlen(v2)) != 0)
    return false;
  unsigned long long g = 0;
  size_t n = 0;
  int used = 0;
  char head[128];
  size_t hl = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
  memcpy(head, buf, hl);
  head[hl] = '\0';
  if (sscanf(head + strlen(v2), "%llu %zu\n%n", &g, &n, &used) != 2 || used == 0)
    return false;
  *gen = g;
  *blob = strlen(v2) + (size_t)used;
  *blob_len = n;
  return *blob + n <= len;
}

TRE_SHARED const char *slot_name(int i) { return i == 0 ? "tre.sealed" : "tre.sealed.1"; }

/* The slot holding the newest generation (whether it opens or not), and that generation. */
TRE_SHARED int newest_slot(const struct fx *f, uint64_t *gen_out)
{
  int best = -1;
  uint64_t best_gen = 0;
  for (int i = 0; i < 2; i++) {
    size_t len = 0, blob = 0, blob_len = 0;
    uint64_t gen = 0;
    if (access(path_in(f, slot_name(i)), F_OK) != 0)
      continue;
    uint8_t *buf = file_read(path_in(f, slot_name(i)), &len);
    if (slot_header(buf, len, &gen, &blob, &blob_len) && (best < 0 || gen > best_gen)) {
      best = i;
      best_gen = gen;
    }
    free(buf);
  }
  assert_true(best >= 0);
  if (gen_out)
    *gen_out = best_gen;
  return best;
}

TRE_SHARED void gen_context(uint64_t gen, char *out, size_t n)
{
  if (gen == 0)
    snprintf(out, n, "tre/%s", DEVICE);
  else
    snprintf(out, n, "tre/%s/%llu", DEVICE, (unsigned long long)gen);
}

/* The state document in clear (the newest slot). */
TRE_SHARED json_t *state_read(const struct fx *f)
{
  mcim_storage_key_t *key = NULL;
  size_t len = 0, plain_len = 0, blob = 0, blob_len = 0;
  uint64_t gen = 0;
  char context[96];
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  uint8_t *buf = file_read(path_in(f, slot_name(newest_slot(f, NULL))), &len);
  assert_true(slot_header(buf, len, &gen, &blob, &blob_len));
  gen_context(gen, context, sizeof(context));
  uint8_t *plain = malloc(len);
  assert_non_null(plain);
  assert_int_equal(mcim_unseal(key, context, buf + blob, blob_len, plain, len, &plain_len),
                   MCIM_OK);
  json_t *st = json_loadb((const char *)plain, plain_len, 0, NULL);
  assert_non_null(st);
  free(plain);
  free(buf);
  mcim_storage_key_free(key);
  return st;
}

/* A new generation with this document, written as the TRE would: into the other slot. */
TRE_SHARED void state_write(const struct fx *f, json_t *st)
{
  mcim_storage_key_t *key = NULL;
  uint64_t gen = 0;
  int slot = newest_slot(f, &gen) ^ 1;
  char hdr[128], context[96];
  gen++;
  gen_context(gen, context, sizeof(context));
  char *text = json_dumps(st, JSON_COMPACT);
  assert_non_null(text);
  size_t n = strlen(text), out_len = 0;
  snprintf(hdr, sizeof(hdr), "mcim-tre 2 %s %llu %zu\n", DEVICE, (unsigned long long)gen,
           mcim_seal_len(n));
  uint8_t *buf = malloc(strlen(hdr) + mcim_seal_len(n));
  assert_non_null(buf);
  assert_int_equal(mcim_storage_key_load_file(path_in(f, "tre.key"), &key), MCIM_OK);
  memcpy(buf, hdr, strlen(hdr));
  assert_int_equal(mcim_seal(key, context, (const uint8_t *)text, n, buf + strlen(hdr),
                             mcim_seal_len(n), &out_len),
                   MCIM_OK);
  file_write(path_in(f, slot_name(slot)), buf, strlen(hdr) + out_len);
  assert_int_equal(chmod(path_in(f, slot_name(slot)), 0600), 0);
  mcim_storage_key_free(key);
  free(buf);
  free(text);
}

TRE_SHARED bool has_secret(const char *text, size_t len, const uint8_t b[16])
{
  char hex[33];
  mcim_hex_encode(b, 16, hex);
  return contains_ci(text, len, hex);
}

/* The document as text with every MCIM's secrets opened with its own key (per-slot keys,
 * docs/tre.md section 8): what whoever holds the document can read. free(). */
TRE_SHARED char *doc_text_opened(json_t *doc)
{
  char *text = json_dumps(doc, 0);
  const char *lists[] = {"slots", "staged"};
  size_t i, n = strlen(text);
  json_t *e;
  for (size_t l = 0; l < 2; l++) {
    json_array_foreach(json_object_get(doc, lists[l]), i, e) {
      const char *b64 = json_string_value(json_object_get(e, "secrets"));
      if (!b64)
        continue;
      uint8_t raw[32], sealed[256], plain[256];
      size_t sl = 0, pl = 0;
      char context[64];
      mcim_storage_key_t *k = NULL;
      snprintf(context, sizeof(context), "tre-slot/%s",
               json_string_value(json_object_get(e, "txn")));
      assert_int_equal(
          mcim_hex_decode_str(json_string_value(json_object_get(e, "slot_key")), raw, sizeof(raw)),
          MCIM_OK);
      assert_int_equal(mcim_b64url_decode(b64, strlen(b64), sealed, sizeof(sealed), &sl), MCIM_OK);
      assert_int_equal(mcim_storage_key_from_bytes(raw, sizeof(raw), &k), MCIM_OK);
      assert_int_equal(mcim_unseal(k, context, sealed, sl, plain, sizeof(plain), &pl), MCIM_OK);
      mcim_storage_key_free(k);
      char *more = realloc(text, n + pl + 1);
      assert_non_null(more);
      text = more;
      memcpy(text + n, plain, pl);
      n += pl;
      text[n] = '\0';
    }
  }
  return text;
}

#endif
