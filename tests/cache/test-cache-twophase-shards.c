/* Unit tests of twophase split into shards (lib/cache/twophase.c): exact
 * total capacity with unequal shard sizes, keys in their own shard's slot
 * range, operations by slot across shards, summed statistics, invariants
 * after a random workload, pins, and the automatic shard count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "cache/twophase.h"
#include "twophase-test.h"

#define NONE SL_TWOPHASE_NONE
#define SHARDS 4
#define CAP 1003 /* 1003 = 4 * 250 + 3: shards of 251, 251, 251 and 250 */


static uint64_t next_rand(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* The shard (0..SHARDS-1) whose range holds SLOT, from the documented
 * layout: the first CAP % SHARDS shards have one slot more. */
static unsigned shard_of_slot(uint32_t slot)
{
  const uint32_t q = CAP / SHARDS, big = CAP % SHARDS;
  if (slot < big * (q + 1))
    return slot / (q + 1);
  return big + (slot - big * (q + 1)) / q;
}

/* Fill every slot: more keys than the capacity, several passes. */
static void test_capacity_is_exact(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  struct sl_twophase_stats s;
  for (uint64_t k = 0; k < 20 * CAP; k++) {
    sl_twophase_access(t, k % (3 * CAP));
    if (k % 97 == 0) {
      sl_twophase_get_stats(t, &s);
      assert_true(s.resident <= CAP);
    }
  }
  sl_twophase_get_stats(t, &s);
  /* Every shard fills up (no removes): all CAP slots in use, none more. */
  assert_int_equal(s.resident, CAP);
  assert_int_equal(s.cold + s.hot, CAP);
  for (uint32_t slot = 0; slot < CAP; slot++)
    assert_int_not_equal(sl_twophase_where(t, slot), 0);
  assert_int_equal(sl_twophase_where(t, CAP), 0); /* out of range */
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* Which shard a key lands in is not specified, but all keys of one shard
 * must share its range, every shard must be used, and a key's slot must
 * stay in the same shard after it is evicted and inserted again. */
static void test_keys_stay_in_their_shard(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  enum { KEYS = 4000 };
  static int first_shard[KEYS];
  unsigned used[SHARDS] = {0};
  for (int round = 0; round < 3; round++)
    for (uint64_t k = 0; k < KEYS; k++) {
      uint32_t slot = sl_twophase_insert(t, k * 7919, false, NULL, NULL);
      assert_int_not_equal(slot, NONE);
      assert_true(slot < CAP);
      unsigned sh = shard_of_slot(slot);
      if (round == 0) {
        first_shard[k] = (int)sh;
        used[sh]++;
      } else {
        assert_int_equal(sh, first_shard[k]);
      }
      assert_int_equal(sl_twophase_slot_key(t, slot), k * 7919);
    }
  for (unsigned i = 0; i < SHARDS; i++) /* roughly even: 1000 each */
    assert_true(used[i] > KEYS / SHARDS / 2 && used[i] < KEYS / SHARDS * 2);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* pin returns a global slot; unpin, where and slot_key take it back to the
 * right shard. */
static void test_operations_by_slot(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  uint32_t slot[64];
  bool seen[SHARDS] = {false};
  for (uint64_t k = 0; k < 64; k++) {
    assert_false(sl_twophase_access(t, 100 + k));
    slot[k] = sl_twophase_pin(t, 100 + k);
    assert_int_not_equal(slot[k], NONE);
    seen[shard_of_slot(slot[k])] = true;
    assert_int_equal(sl_twophase_where(t, slot[k]), 'c');
    assert_int_equal(sl_twophase_slot_key(t, slot[k]), 100 + k);
    assert_int_equal(sl_twophase_lookup(t, 100 + k), slot[k]);
  }
  for (unsigned i = 0; i < SHARDS; i++)
    assert_true(seen[i]);
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.pinned, 64);
  for (uint64_t k = 0; k < 64; k++)
    sl_twophase_unpin(t, slot[k]);
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.pinned, 0);
  /* Unpinned, so remove succeeds; the slot is free afterwards. */
  for (uint64_t k = 0; k < 64; k++) {
    assert_true(sl_twophase_remove(t, 100 + k));
    assert_int_equal(sl_twophase_where(t, slot[k]), 0);
    assert_int_equal(sl_twophase_lookup(t, 100 + k), NONE);
  }
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* The sums over shards match what the caller did. */
static void test_stats_sum(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  struct sl_twophase_stats s;
  for (uint64_t k = 0; k < 500; k++)
    assert_false(sl_twophase_access(t, k));
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.inserts, 500);
  assert_int_equal(s.resident, 500);
  assert_int_equal(s.cold + s.hot, 500);
  assert_int_equal(s.cold_evictions + s.hot_evictions, 0);
  assert_true(s.bytes_per_resident <= 32.0);
  assert_true(s.bytes_per_ghost <= 8.0);
  /* Each shard's cold target is 10% of its own size. */
  assert_true(s.cold_target >= CAP / 10 - SHARDS && s.cold_target <= CAP / 10 + SHARDS);
  for (uint64_t k = 0; k < 3000; k++)
    sl_twophase_access(t, 10000 + k);
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.inserts, 3500);
  assert_int_equal(s.resident, CAP);
  /* Every insert beyond the capacity evicted exactly one block. */
  assert_int_equal(s.cold_evictions + s.hot_evictions, 3500 - CAP);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* A random mix of every operation, with check() all along. */
static void test_random_workload(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  uint64_t rng = 12345;
  uint32_t pinned_slot[16];
  uint64_t pinned_key[16];
  int npinned = 0;
  for (int i = 0; i < 200000; i++) {
    uint64_t r = next_rand(&rng);
    uint64_t key = (r & 3) ? (r >> 8) % 600 : (r >> 8) % 6000;
    unsigned op = (unsigned)((r >> 4) % 100);
    if (op < 70) {
      sl_twophase_access(t, key);
    } else if (op < 80 && npinned < 16) {
      uint64_t ev;
      bool did;
      uint32_t s = sl_twophase_insert(t, key, true, &ev, &did);
      assert_int_not_equal(s, NONE);
      pinned_slot[npinned] = s;
      pinned_key[npinned++] = key;
    } else if (op < 90 && npinned > 0) {
      npinned--;
      assert_int_equal(sl_twophase_slot_key(t, pinned_slot[npinned]), pinned_key[npinned]);
      assert_int_not_equal(sl_twophase_where(t, pinned_slot[npinned]), 0);
      sl_twophase_unpin(t, pinned_slot[npinned]);
    } else {
      sl_twophase_remove(t, key);
    }
    if (i % 20000 == 0)
      assert_consistent(t);
  }
  while (npinned > 0) {
    npinned--;
    sl_twophase_unpin(t, pinned_slot[npinned]);
  }
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  assert_true(s.resident <= CAP);
  assert_int_equal(s.pinned, 0);
  assert_true(s.cold_evictions + s.hot_evictions > 0);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* Pinned blocks survive any churn; a shard whose slots are all pinned
 * refuses its own keys while the other shards still take theirs. */
static void test_pins_per_shard(void **state)
{
  (void)state;
  const uint64_t cap = 43; /* shards of 11, 11, 11 and 10 */
  struct sl_twophase *t = make_sharded(cap, SHARDS);
  uint32_t slots[8];
  for (uint64_t k = 0; k < 8; k++)
    assert_int_not_equal(slots[k] = sl_twophase_insert(t, k, true, NULL, NULL), NONE);
  for (uint64_t k = 0; k < 50 * cap; k++) {
    uint64_t ev;
    bool did;
    assert_int_not_equal(sl_twophase_insert(t, 1000 + k, false, &ev, &did), NONE);
    if (did) {
      /* The evicted key is gone from its own shard and remembered in that
       * shard's ghost (in_ghost routes by key like everything else). */
      assert_true(ev >= 1000);
      assert_int_equal(sl_twophase_lookup(t, ev), NONE);
      assert_true(sl_twophase_in_ghost(t, ev));
    }
  }
  for (uint64_t k = 0; k < 8; k++) {
    assert_int_equal(sl_twophase_slot_key(t, slots[k]), k);
    assert_int_not_equal(sl_twophase_where(t, slots[k]), 0);
    sl_twophase_unpin(t, slots[k]);
  }
  assert_consistent(t);

  /* Pin keys until one shard is full of pins: a key that lands there
   * fails, and keys of the other shards still get in. */
  uint32_t pinned[64];
  unsigned per_shard[SHARDS] = {0}, full = SHARDS;
  int n = 0;
  for (uint64_t k = 5000; full == SHARDS && n < 64; k++) {
    uint32_t s = sl_twophase_insert(t, k, true, NULL, NULL);
    assert_int_not_equal(s, NONE);
    pinned[n++] = s;
    unsigned sh = s < 33 ? s / 11 : 3;
    if (++per_shard[sh] == (sh < 3 ? 11u : 10u))
      full = sh;
  }
  assert_int_not_equal(full, SHARDS);
  unsigned refused = 0, taken = 0;
  for (uint64_t k = 90000; k < 90200; k++) {
    uint32_t s = sl_twophase_insert(t, k, false, NULL, NULL);
    if (s == NONE) {
      refused++;
    } else {
      taken++;
      assert_int_not_equal(s < 33 ? s / 11 : 3, full);
    }
  }
  assert_true(refused > 0 && taken > 0);
  for (int i = 0; i < n; i++)
    sl_twophase_unpin(t, pinned[i]);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* Hits store a reference level at most three times per block, whichever
 * shard holds it, and the count is the calling thread's, not summed per
 * shard. */
static void test_hit_stores_per_shard(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  for (uint64_t k = 0; k < 16; k++)
    sl_twophase_access(t, k);
  struct sl_twophase_stats a, b;
  sl_twophase_get_stats(t, &a);
  for (int i = 0; i < 10; i++)
    for (uint64_t k = 0; k < 16; k++)
      assert_true(sl_twophase_access(t, k));
  sl_twophase_get_stats(t, &b);
  assert_true(b.ref_stores - a.ref_stores >= 16 && b.ref_stores - a.ref_stores <= 48);
  sl_twophase_get_stats(t, &a);
  for (uint64_t k = 0; k < 16; k++)
    sl_twophase_access(t, k);
  sl_twophase_get_stats(t, &b);
  assert_int_equal(b.ref_stores, a.ref_stores);
  sl_twophase_destroy(t);
}

/* The hand steps the shards in turn and returns global slots. */
static void test_hand_round_robin(void **state)
{
  (void)state;
  struct sl_twophase *t = make_sharded(CAP, SHARDS);
  /* Keys hit while cold go to hot when unique fillers push them out. */
  for (uint64_t k = 0; k < 200; k++)
    assert_false(sl_twophase_access(t, k));
  for (uint64_t k = 0; k < 200; k++)
    assert_true(sl_twophase_access(t, k));
  for (uint64_t k = 0; k < 2 * CAP; k++)
    sl_twophase_access(t, 1000000 + k);
  struct sl_twophase_stats st;
  sl_twophase_get_stats(t, &st);
  assert_true(st.hot >= 150);
  bool seen[SHARDS] = {false};
  unsigned freed = 0;
  for (uint64_t i = 0; i < 4 * CAP; i++) {
    uint64_t ev;
    bool did;
    uint32_t s = sl_twophase_test_hand_step(t, &ev, &did);
    if (s != NONE) {
      assert_true(did);
      assert_true(s < CAP);
      assert_int_equal(sl_twophase_where(t, s), 0);
      seen[shard_of_slot(s)] = true;
      freed++;
    }
  }
  assert_true(freed > 0);
  for (unsigned i = 0; i < SHARDS; i++)
    assert_true(seen[i]);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

static void test_shard_count(void **state)
{
  (void)state;
  struct sl_twophase_params p = {.capacity = 100, .shards = SL_TWOPHASE_MAX_SHARDS + 1};
  assert_null(sl_twophase_create(&p));
  /* More shards than slots: one slot each. */
  struct sl_twophase *t = make_sharded(3, 8);
  for (uint64_t k = 0; k < 100; k++)
    sl_twophase_access(t, k);
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.resident, 3);
  assert_consistent(t);
  sl_twophase_destroy(t);
  /* Automatic, small: one shard, which hands out slots 0, 1, 2, ... */
  t = make_sharded(2 * SL_TWOPHASE_SHARD_MIN - 1, 0);
  for (uint64_t k = 0; k < 100; k++)
    assert_int_equal(sl_twophase_insert(t, k * 7919, false, NULL, NULL), k);
  sl_twophase_destroy(t);
  /* Automatic, 6 * SHARD_MIN: rounded down to 4 shards of 6144, each of
   * which starts handing out slots at its base. */
  t = make_sharded(6 * SL_TWOPHASE_SHARD_MIN, 0);
  bool used[4] = {false};
  for (uint64_t k = 0; k < 1000; k++) {
    uint32_t slot = sl_twophase_insert(t, k * 7919, false, NULL, NULL);
    uint32_t base = slot / (6 * SL_TWOPHASE_SHARD_MIN / 4) * (6 * SL_TWOPHASE_SHARD_MIN / 4);
    assert_true(slot - base < 1000);
    used[slot / (6 * SL_TWOPHASE_SHARD_MIN / 4)] = true;
  }
  for (int i = 0; i < 4; i++)
    assert_true(used[i]);
  assert_consistent(t);
  sl_twophase_destroy(t);
  /* Automatic, large: 64 shards at most, the capacity exact all the same. */
  t = make_sharded(SL_TWOPHASE_SHARD_MIN * 100 + 7, 0);
  for (uint64_t k = 0; k < 2 * (SL_TWOPHASE_SHARD_MIN * 100 + 7); k++)
    sl_twophase_access(t, k);
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.resident, SL_TWOPHASE_SHARD_MIN * 100 + 7);
  assert_true(s.bytes_per_resident <= 32.0);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_capacity_is_exact),
    cmocka_unit_test(test_keys_stay_in_their_shard),
    cmocka_unit_test(test_operations_by_slot),
    cmocka_unit_test(test_stats_sum),
    cmocka_unit_test(test_random_workload),
    cmocka_unit_test(test_pins_per_shard),
    cmocka_unit_test(test_hit_stores_per_shard),
    cmocka_unit_test(test_hand_round_robin),
    cmocka_unit_test(test_shard_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
