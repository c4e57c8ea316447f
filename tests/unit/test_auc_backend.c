/* The AuC backend interface (src/roles/auc_backend.h) with the built-in AuC behind it: the
 * same vectors and resynchronisation as mcim_auc_gen_avs / mcim_auc_resync called directly
 * (the SQN sequence of two twin subscribers, one through each path, is the same), accepted by
 * the USIM side; refusals with their cause and a detail. osmo-hlr: test_auc_osmo_hlr.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcim/aka.h"
#include "mcim/store.h"
#include "mcim/util.h"
#include "roles/auc.h"
#include "roles/auc_backend.h"

static const char IMSI_B[] = "001010000000011"; /* through the backend */
static const char IMSI_D[] = "001010000000012"; /* direct calls */

struct fx {
  char db[64];
  mcim_store_t *st;
  mcim_storage_key_t *skey;
  struct mcim_auc_backend *b;
  mcim_milenage_t *m;
  struct mcim_sqn_params p;
  struct mcim_sqn_usim usim_b, usim_d;
};

static int setup(void **state)
{
  static struct fx f;
  static const mcim_migration_t steps[] = {{1, "AuC", mcim_auc_schema_sql}};
  struct mcim_auc_sub sub = {.amf = {0x80, 0x00}};
  int fd;

  memset(&f, 0, sizeof(f));
  snprintf(f.db, sizeof(f.db), "/tmp/mcim-auc-backend-XXXXXX");
  fd = mkstemp(f.db);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(mcim_store_open(f.db, NULL, &f.st), MCIM_OK);
  assert_int_equal(mcim_store_migrate(f.st, "auc", steps, 1), MCIM_OK);
  assert_int_equal(mcim_storage_key_generate(&f.skey), MCIM_OK);
  assert_int_equal(mcim_random(sub.k, sizeof(sub.k)), MCIM_OK);
  assert_int_equal(mcim_random(sub.opc, sizeof(sub.opc)), MCIM_OK);
  sub.imsi = IMSI_B;
  sub.device = "dev-b";
  assert_int_equal(mcim_auc_add(f.st, f.skey, &sub), MCIM_OK);
  sub.imsi = IMSI_D;
  sub.device = "dev-d";
  assert_int_equal(mcim_auc_add(f.st, f.skey, &sub), MCIM_OK);
  assert_int_equal(mcim_auc_builtin_new(f.skey, &f.b), MCIM_OK);
  assert_string_equal(mcim_auc_backend_name(f.b), "builtin");
  assert_int_equal(mcim_milenage_new(&f.m), MCIM_OK);
  assert_int_equal(mcim_milenage_set_opc(f.m, sub.k, sub.opc), MCIM_OK);
  mcim_sqn_params_default(&f.p);
  assert_int_equal(mcim_sqn_usim_init(&f.p, &f.usim_b), MCIM_OK);
  assert_int_equal(mcim_sqn_usim_init(&f.p, &f.usim_d), MCIM_OK);
  mcim_wipe(&sub, sizeof(sub));
  *state = &f;
  return 0;
}

static int teardown(void **state)
{
  struct fx *f = *state;
  mcim_auc_backend_free(f->b);
  mcim_milenage_free(f->m);
  mcim_store_close(f->st);
  mcim_storage_key_free(f->skey);
  unlink(f->db);
  return 0;
}

static mcim_cause_t take(struct fx *f, struct mcim_sqn_usim *u, const struct mcim_aka_av *av,
                         struct mcim_aka_usim_out *out)
{
  struct mcim_sqn_usim next;
  mcim_cause_t rc = mcim_aka_usim_check(f->m, &f->p, u, av->rand, av->autn, &next, out);
  if (rc == MCIM_OK) {
    assert_int_equal(mcim_aka_check_res(av->xres, 8, out->res, 8), MCIM_OK);
    *u = next;
  }
  return rc;
}

/* Twin subscribers, the same requests through both paths: the same SQNs, all accepted. */
static void test_same_as_direct(void **state)
{
  struct fx *f = *state;
  struct mcim_aka_av b[5], d[5];
  struct mcim_aka_usim_out ob, od;
  char detail[MCIM_AUC_DETAIL_LEN];
  const int sizes[] = {1, 5, 2, 1, 3};

  for (size_t r = 0; r < sizeof(sizes) / sizeof(sizes[0]); r++) {
    int n = sizes[r];
    assert_int_equal(
        mcim_auc_backend_gen_avs(f->b, f->st, IMSI_B, n, mcim_now(), b, detail, sizeof(detail)),
        MCIM_OK);
    assert_int_equal(mcim_auc_gen_avs(f->st, f->skey, IMSI_D, n, mcim_now(), d), MCIM_OK);
    for (int i = 0; i < n; i++) {
      assert_int_equal(take(f, &f->usim_b, &b[i], &ob), MCIM_OK);
      assert_int_equal(take(f, &f->usim_d, &d[i], &od), MCIM_OK);
      assert_memory_equal(ob.sqn, od.sqn, MCIM_SQN_LEN);
    }
  }
  /* a replayed vector: AUTS; resync through each path, then the next vector of each */
  assert_int_equal(take(f, &f->usim_b, &b[0], &ob), MCIM_SYNC_FAILURE);
  assert_int_equal(take(f, &f->usim_d, &d[0], &od), MCIM_SYNC_FAILURE);
  assert_int_equal(mcim_auc_backend_resync(f->b, f->st, IMSI_B, b[0].rand, ob.auts, 0,
                                           mcim_now(), NULL, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_resync(f->st, f->skey, IMSI_D, d[0].rand, od.auts), MCIM_OK);
  assert_int_equal(
      mcim_auc_backend_gen_avs(f->b, f->st, IMSI_B, 1, mcim_now(), b, detail, sizeof(detail)),
      MCIM_OK);
  assert_int_equal(mcim_auc_gen_avs(f->st, f->skey, IMSI_D, 1, mcim_now(), d), MCIM_OK);
  assert_int_equal(take(f, &f->usim_b, &b[0], &ob), MCIM_OK);
  assert_int_equal(take(f, &f->usim_d, &d[0], &od), MCIM_OK);
  assert_memory_equal(ob.sqn, od.sqn, MCIM_SQN_LEN);
}

/* A resync that asks for vectors answers them; a forged AUTS and an unknown IMSI are refused
 * with their cause and a detail naming the IMSI; out-of-range arguments are refused. */
static void test_resync_with_vectors_and_refusals(void **state)
{
  struct fx *f = *state;
  struct mcim_aka_av av[2], old;
  struct mcim_aka_usim_out out;
  char detail[MCIM_AUC_DETAIL_LEN];

  assert_int_equal(
      mcim_auc_backend_gen_avs(f->b, f->st, IMSI_B, 1, mcim_now(), &old, detail, sizeof(detail)),
      MCIM_OK);
  assert_int_equal(take(f, &f->usim_b, &old, &out), MCIM_OK);
  assert_int_equal(take(f, &f->usim_b, &old, &out), MCIM_SYNC_FAILURE); /* replayed */
  uint8_t forged[MCIM_AKA_AUTS_LEN];
  memcpy(forged, out.auts, sizeof(forged));
  forged[13] ^= 1;
  assert_int_equal(mcim_auc_backend_resync(f->b, f->st, IMSI_B, old.rand, forged, 1, mcim_now(),
                                           av, detail, sizeof(detail)),
                   MCIM_AUTS_INVALID);
  assert_non_null(strstr(detail, IMSI_B));
  assert_int_equal(mcim_auc_backend_resync(f->b, f->st, IMSI_B, old.rand, out.auts, 2,
                                           mcim_now(), av, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(take(f, &f->usim_b, &av[0], &out), MCIM_OK);
  assert_int_equal(take(f, &f->usim_b, &av[1], &out), MCIM_OK);

  assert_int_equal(mcim_auc_backend_gen_avs(f->b, f->st, "001010000000099", 1, mcim_now(), av,
                                            detail, sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  assert_non_null(strstr(detail, "001010000000099"));
  assert_int_equal(mcim_auc_backend_gen_avs(f->b, f->st, IMSI_B, 0, mcim_now(), av, detail,
                                            sizeof(detail)),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_auc_backend_gen_avs(f->b, f->st, IMSI_B, MCIM_AUC_MAX_AVS + 1,
                                            mcim_now(), av, detail, sizeof(detail)),
                   MCIM_INVALID_ARGUMENT);
  assert_int_equal(mcim_auc_backend_resync(f->b, f->st, IMSI_B, old.rand, out.auts, 1,
                                           mcim_now(), NULL, detail, sizeof(detail)),
                   MCIM_INVALID_ARGUMENT);
  assert_false(mcim_auc_cause_is_remote(MCIM_UNKNOWN_IDENTITY));
  assert_true(mcim_auc_cause_is_remote(MCIM_PEER_BAD_ANSWER));
}

/* Create and delete through the interface: the built-in AuC's row, CONFLICT for a second
 * create, terminated (no more vectors) after a delete, UNKNOWN_IDENTITY for a stranger. */
static void test_create_delete(void **state)
{
  struct fx *f = *state;
  struct mcim_auc_sub sub = {.imsi = "001010000000013", .device = "dev-c", .amf = {0x80, 0}};
  struct mcim_aka_av av;
  char detail[MCIM_AUC_DETAIL_LEN], st[16];

  assert_int_equal(mcim_random(sub.k, 16), MCIM_OK);
  assert_int_equal(mcim_random(sub.opc, 16), MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(f->b, f->st, &sub, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_backend_create_sub(f->b, f->st, &sub, detail, sizeof(detail)),
                   MCIM_CONFLICT);
  assert_int_equal(mcim_auc_backend_gen_avs(f->b, f->st, sub.imsi, 1, mcim_now(), &av, detail,
                                            sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_backend_delete_sub(f->b, f->st, sub.imsi, detail, sizeof(detail)),
                   MCIM_OK);
  assert_int_equal(mcim_auc_state(f->st, sub.imsi, st, NULL), MCIM_OK);
  assert_string_equal(st, "terminated");
  assert_int_equal(mcim_auc_backend_gen_avs(f->b, f->st, sub.imsi, 1, mcim_now(), &av, detail,
                                            sizeof(detail)),
                   MCIM_SUBSCRIPTION_TERMINATED);
  assert_int_equal(mcim_auc_backend_delete_sub(f->b, f->st, "001010000000098", detail,
                                               sizeof(detail)),
                   MCIM_UNKNOWN_IDENTITY);
  assert_non_null(strstr(detail, "001010000000098"));
}

/* A stranger's identity is refused without the write lock (2026-12-07): with another
 * connection holding the database's write lock, an AV request or a resynchronisation naming an
 * identity the AuC does not hold gets UNKNOWN_IDENTITY at once. Before, each took the write
 * lock (BEGIN IMMEDIATE) to find nothing, so it waited for every writer, and past
 * busy_timeout got STORE_BUSY; anyone may attach naming any identity. */
static void test_stranger_without_the_write_lock(void **state)
{
  struct fx *f = *state;
  struct mcim_aka_av av[2];
  uint8_t rand[MCIM_MILENAGE_RAND_LEN] = {0}, auts[MCIM_AKA_AUTS_LEN] = {0};
  mcim_store_t *writer = NULL;
  mcim_store_opts_t o = {.busy_timeout_ms = 100};

  assert_int_equal(mcim_store_open(f->db, &o, &writer), MCIM_OK);
  assert_int_equal(mcim_store_begin(writer), MCIM_OK); /* holds the write lock */
  assert_int_equal(mcim_auc_gen_avs(f->st, f->skey, "001010000000097", 1, mcim_now(), av),
                   MCIM_UNKNOWN_IDENTITY);
  assert_int_equal(mcim_auc_resync(f->st, f->skey, "001010000000097", rand, auts),
                   MCIM_UNKNOWN_IDENTITY);
  mcim_store_rollback(writer);
  mcim_store_close(writer);
  /* a subscriber's vectors still come, from the transaction */
  assert_int_equal(mcim_auc_gen_avs(f->st, f->skey, IMSI_D, 2, mcim_now(), av), MCIM_OK);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_as_direct),
      cmocka_unit_test(test_resync_with_vectors_and_refusals),
      cmocka_unit_test(test_create_delete),
      cmocka_unit_test(test_stranger_without_the_write_lock),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
