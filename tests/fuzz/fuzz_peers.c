/* The peers file (the lab's peers.json, a role's "peers" key, the agent's optional "peers"):
 * read as the role runtime (mcim_role_start) and the agent (mcim_device_open_with) read it,
 * json_load_file then refused unless an object; then, as both do when a name is unknown, the
 * file read again (here: the second file of the input) and merged into the first
 * (json_object_update); then every name of both files and a few fixed ones asked as the agent
 * asks (src/device/net.c dev_peer_url: agent.json's "networks" first, then the peers file,
 * then dev_peer_url_check: https only, under 512 bytes and the caller's buffer, trailing
 * slashes dropped) and as a role asks (mcim_role_peer_url: the string, used in
 * "%s/v1/certificate" and "%s%s" by peers.c and outbox.c with bounded snprintf; the role's
 * client takes https alone). A URL the check passed must start with https://, fit, and not
 * end with a slash after the host's first character: the fuzz target aborts otherwise.
 *
 * Input: the first file, a NUL byte, the second file (without a NUL: the second is the
 * first again).
 * Seeds: tests/fuzz/corpus/fuzz_peers/ (a lab's peers.json, one with an SHO added later). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_priv.h"
#include "fuzz_common.h"

static char *path_a, *path_b;
static json_t *networks;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  fuzz_quiet();
  char *dir = fuzz_tmpdir("peers");
  path_a = malloc(strlen(dir) + 32);
  path_b = malloc(strlen(dir) + 32);
  if (!path_a || !path_b)
    fuzz_die("out of memory");
  sprintf(path_a, "%s/peers.json", dir);
  sprintf(path_b, "%s/peers-later.json", dir);
  /* agent.json's "networks" of a lab device: asked before the peers file */
  networks = json_pack("{s:s}", "vno", "https://127.0.0.1:56063");
  free(dir);
  return 0;
}

static void ask(const json_t *peers, const char *name)
{
  char url[600], small[24];
  const char *u = json_string_value(json_object_get(networks, name));
  if (!u)
    u = json_string_value(json_object_get(peers, name));
  /* the agent's buffer (dev_call: 600 bytes), and a short one */
  char *bufs[] = {url, small};
  size_t lens[] = {sizeof(url), sizeof(small)};
  for (int i = 0; i < 2; i++) {
    if (dev_peer_url_check(u, bufs[i], lens[i]) != MCIM_OK)
      continue;
    size_t n = strlen(bufs[i]);
    if (strncmp(bufs[i], "https://", 8) != 0 || n >= lens[i] || n >= 512 ||
        (n > 8 && bufs[i][n - 1] == '/'))
      fuzz_die("dev_peer_url_check passed a URL it must refuse");
    char full[1200];
    snprintf(full, sizeof(full), "%s%s", bufs[i], "/v1/certificate");
  }
  /* the role's use of its peers' URLs */
  const char *base = json_string_value(json_object_get(peers, name));
  if (base) {
    char rurl[512];
    snprintf(rurl, sizeof(rurl), "%s/v1/certificate", base);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  size_t alen, blen;
  const uint8_t *b;
  fuzz_split(data, size, 0, &alen, &b, &blen);
  fuzz_write_file(path_a, data, alen);
  fuzz_write_file(path_b, b ? b : data, b ? blen : alen);
  json_error_t jerr;
  json_t *peers = json_load_file(path_a, 0, &jerr);
  if (!json_is_object(peers)) {
    json_decref(peers);
    return 0; /* refused at start-up: "peers file PATH: not an object" or jansson's text */
  }
  json_t *fresh = json_load_file(path_b, 0, NULL);
  if (json_is_object(fresh))
    json_object_update(peers, fresh);
  static const char *const fixed[] = {"vno", "ro", "pva", "m2mes", "sho-a", "sho-b", "x"};
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    ask(peers, fixed[i]);
  const char *key;
  json_t *val;
  json_object_foreach(peers, key, val) {
    (void)val;
    ask(peers, key);
  }
  json_decref(fresh);
  json_decref(peers);
  return 0;
}
