/* `mcim crypto`: Milenage computations for test data, and the self-test
 * against every published test set (TS 35.207, TS 35.208).
 *
 * This is a lab tool: it prints CK/IK/RES for the K it is given on purpose.
 * It never prints K itself. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/cli.h"
#include "mcim/milenage.h"
#include "mcim/opts.h"
#include "mcim/util.h"

static const char milenage_usage[] =
    "mcim crypto milenage --k HEX (--op HEX | --opc HEX) --rand HEX --sqn HEX --amf HEX";

static const char milenage_description[] =
    "Runs Milenage (3GPP TS 35.206) once and prints one JSON object with the\n"
    "lower-case hex fields opc mac_a mac_s res ck ik ak ak_star autn, where\n"
    "mac_a = f1, mac_s = f1* (with the AMF given), res = f2, ck = f3, ik = f4,\n"
    "ak = f5, ak_star = f5*, autn = (SQN xor AK) || AMF || MAC-A.\n"
    "Hex digits in either case. Exit status: 0 ok, 2 usage error.";

static const char milenage_examples[] =
    "mcim crypto milenage --k 465b5ce8b199b49faa5f0a2ee238a6bc \\\n"
    "    --op cdc202d5123e20f62b6d676ac72cb318 --rand 23553cbe9637a89d218ae64dae47bf35 \\\n"
    "    --sqn ff9bb4d0b607 --amf b9b9                (TS 35.208 test set 1)\n"
    "mcim crypto milenage --k=465b5ce8b199b49faa5f0a2ee238a6bc \\\n"
    "    --opc=cd63cb71954a9f4e48a5994e37a02baf --rand=23553cbe9637a89d218ae64dae47bf35 \\\n"
    "    --sqn=ff9bb4d0b607 --amf=b9b9                (the same with OPc)";

static const char selftest_description[] =
    "Runs every published Milenage test set (TS 35.208 sets 1-20, TS 35.207 sets 1-6)\n"
    "through both ways into OpenSSL's AES; prints one line per set and a summary.\n"
    "Exit status 0 only if all pass.";

/* One --name HEX option of `milenage`. */
struct hex_opt {
  const char *name;
  size_t len;        /* bytes */
  const char *value; /* NULL until given */
  uint8_t *out;
};

static int is_hex_digit(char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Decode one option's value; names the field and the problem on error. */
static int decode_opt(const struct mcim_cmd *cmd, const struct hex_opt *o)
{
  size_t got = strlen(o->value);
  for (size_t i = 0; i < got; i++)
    if (!is_hex_digit(o->value[i]))
      return mcim_opts_error(cmd, "--%s: not hexadecimal (character '%c' at position %zu)",
                             o->name, o->value[i], i + 1);
  if (got != 2 * o->len)
    return mcim_opts_error(cmd, "--%s: expected %zu hex digits, got %zu", o->name, 2 * o->len,
                           got);
  if (mcim_hex_decode(o->value, got, o->out, o->len) != MCIM_OK)
    return mcim_opts_error(cmd, "--%s: cannot decode", o->name);
  return 0;
}

static int add_hex(json_t *obj, const char *key, const uint8_t *buf, size_t len)
{
  char hex[2 * 16 + 1];
  mcim_hex_encode(buf, len, hex);
  int rc = json_object_set_new(obj, key, json_string(hex));
  mcim_wipe(hex, sizeof(hex));
  return rc;
}

static int cmd_milenage(int argc, char **argv)
{
  uint8_t k[16], op[16], opc[16], rnd[16], sqn[6], amf[2], autn[16];
  struct mcim_milenage_out o;
  struct hex_opt opts[] = {
      {"k", 16, NULL, k},      {"op", 16, NULL, op},   {"opc", 16, NULL, opc},
      {"rand", 16, NULL, rnd}, {"sqn", 6, NULL, sqn}, {"amf", 2, NULL, amf},
  };
  struct hex_opt *o_op = &opts[1], *o_opc = &opts[2];
  mcim_milenage_t *m = NULL;
  json_t *obj = NULL;
  char *text = NULL;
  int rc = MCIM_EXIT_FAIL;

  memset(&o, 0, sizeof(o));
  const struct mcim_opt table[] = {
      {.name = "k", .arg = "HEX", .help = "subscriber key K, 32 hex digits",
       .value = &opts[0].value, .once = true},
      {.name = "op", .arg = "HEX",
       .help = "operator variant OP, 32 hex digits (OPc is derived), or",
       .value = &opts[1].value, .once = true},
      {.name = "opc", .arg = "HEX", .help = "OPc directly, 32 hex digits", .value = &opts[2].value,
       .once = true},
      {.name = "rand", .arg = "HEX", .help = "RAND, 32 hex digits", .value = &opts[3].value,
       .once = true},
      {.name = "sqn", .arg = "HEX", .help = "SQN, 12 hex digits", .value = &opts[4].value,
       .once = true},
      {.name = "amf", .arg = "HEX", .help = "AMF, 4 hex digits", .value = &opts[5].value,
       .once = true},
      {0},
  };
  const struct mcim_cmd cmd = {
      .name = "mcim crypto milenage",
      .usage = milenage_usage,
      .description = milenage_description,
      .opts = table,
      .examples = milenage_examples,
  };
  struct mcim_args a;
  rc = mcim_opts_parse(&cmd, argc, argv, &a);
  if (rc != MCIM_OPTS_RUN)
    goto cleanup;
  rc = MCIM_EXIT_USAGE;
  if (o_op->value && o_opc->value) {
    mcim_opts_error(&cmd, "--op, --opc: give one of them, not both");
    goto cleanup;
  }
  if (!o_op->value && !o_opc->value) {
    mcim_opts_error(&cmd, "--op or --opc: one of them is required");
    goto cleanup;
  }
  for (size_t j = 0; j < sizeof(opts) / sizeof(opts[0]); j++) {
    if (&opts[j] == o_op || &opts[j] == o_opc)
      continue;
    if (!opts[j].value) {
      mcim_opts_error(&cmd, "--%s: required (%zu hex digits)", opts[j].name, 2 * opts[j].len);
      goto cleanup;
    }
  }
  for (size_t j = 0; j < sizeof(opts) / sizeof(opts[0]); j++)
    if (opts[j].value && decode_opt(&cmd, &opts[j]) != 0)
      goto cleanup;

  rc = MCIM_EXIT_FAIL;
  if (mcim_milenage_new(&m) != MCIM_OK)
    goto crypto_error;
  if ((o_op->value ? mcim_milenage_set_op(m, k, op) : mcim_milenage_set_opc(m, k, opc)) != MCIM_OK)
    goto crypto_error;
  if (mcim_milenage_get_opc(m, opc) != MCIM_OK ||
      mcim_milenage_compute(m, rnd, sqn, amf, MCIM_MILENAGE_ALL, &o) != MCIM_OK)
    goto crypto_error;
  for (int i = 0; i < 6; i++)
    autn[i] = (uint8_t)(sqn[i] ^ o.ak[i]);
  memcpy(autn + 6, amf, 2);
  memcpy(autn + 8, o.mac_a, 8);

  obj = json_object();
  if (!obj || add_hex(obj, "opc", opc, 16) || add_hex(obj, "mac_a", o.mac_a, 8) ||
      add_hex(obj, "mac_s", o.mac_s, 8) || add_hex(obj, "res", o.res, 8) ||
      add_hex(obj, "ck", o.ck, 16) || add_hex(obj, "ik", o.ik, 16) ||
      add_hex(obj, "ak", o.ak, 6) || add_hex(obj, "ak_star", o.ak_star, 6) ||
      add_hex(obj, "autn", autn, 16))
    goto crypto_error;
  text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (!text)
    goto crypto_error;
  puts(text);
  rc = MCIM_EXIT_OK;
  goto cleanup;
crypto_error:
  fprintf(stderr, "mcim crypto milenage: %s\n", mcim_cause_text(MCIM_CRYPTO_ERROR));
cleanup:
  if (text) {
    mcim_wipe(text, strlen(text));
    free(text);
  }
  json_decref(obj);
  mcim_milenage_free(m);
  mcim_wipe(k, sizeof(k));
  mcim_wipe(op, sizeof(op));
  mcim_wipe(opc, sizeof(opc));
  mcim_wipe(&o, sizeof(o));
  return rc;
}

static int cmd_selftest(int argc, char **argv)
{
  size_t passed = 0, failed = 0;
  const struct mcim_cmd cmd = {
      .name = "mcim crypto selftest",
      .usage = "mcim crypto selftest",
      .description = selftest_description,
      .examples = "mcim crypto selftest",
  };
  struct mcim_args args;
  int ex = mcim_opts_parse(&cmd, argc, argv, &args);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  for (size_t i = 0; i < mcim_milenage_vector_count; i++) {
    const struct mcim_milenage_vector *v = &mcim_milenage_vectors[i];
    /* Both ways into OpenSSL's AES must give the published values. */
    const char *bad = NULL, *bad_evp = NULL;
    mcim_cause_t a = mcim_milenage_vector_check(v, MCIM_MILENAGE_AES_AUTO, &bad);
    mcim_cause_t b = mcim_milenage_vector_check(v, MCIM_MILENAGE_AES_EVP, &bad_evp);
    if (a == MCIM_OK && b == MCIM_OK) {
      printf("ok    %s\n", v->name);
      passed++;
    } else {
      printf("FAIL  %s: %s differs (%s)\n", v->name, a != MCIM_OK ? bad : bad_evp,
             a != MCIM_OK ? "default AES access" : "EVP");
      failed++;
    }
  }
  printf("milenage selftest: %zu passed, %zu failed (TS 35.208 sets 1-20, TS 35.207 sets 1-6)\n",
         passed, failed);
  return failed == 0 && passed > 0 ? MCIM_EXIT_OK : MCIM_EXIT_FAIL;
}

int mcim_cmd_crypto(int argc, char **argv)
{
  const struct mcim_cmd cmd = {
      .name = "mcim crypto",
      .usage = "mcim crypto milenage OPTIONS\n"
               "mcim crypto selftest",
      .description =
          "milenage  compute f1..f5* for the given inputs, print JSON; its options:\n"
          "          --k HEX (--op HEX | --opc HEX) --rand HEX --sqn HEX --amf HEX\n"
          "          (`mcim crypto milenage --help` describes each)\n"
          "selftest  run every published Milenage test set (TS 35.208 sets 1-20,\n"
          "          TS 35.207 sets 1-6); exit 0 only if all pass",
      .examples = "mcim crypto selftest\n"
                  "mcim crypto milenage --k 465b5ce8b199b49faa5f0a2ee238a6bc \\\n"
                  "    --op cdc202d5123e20f62b6d676ac72cb318 \\\n"
                  "    --rand 23553cbe9637a89d218ae64dae47bf35 --sqn ff9bb4d0b607 --amf b9b9",
      .subcommands = true,
  };
  struct mcim_args a;
  int ex = mcim_opts_parse(&cmd, argc, argv, &a);
  if (ex != MCIM_OPTS_RUN)
    return ex;
  if (a.next >= argc)
    return mcim_opts_error(&cmd, "missing the subcommand: milenage or selftest");
  if (strcmp(argv[a.next], "milenage") == 0)
    return cmd_milenage(argc - a.next, argv + a.next);
  if (strcmp(argv[a.next], "selftest") == 0)
    return cmd_selftest(argc - a.next, argv + a.next);
  return mcim_opts_error(&cmd, "unknown subcommand '%s'", argv[a.next]);
}
