/* Unit tests of lib/cache/slot-index.h, the hash index twophase and the
 * benchmark comparators share: against a plain array model, through long
 * random runs of inserts and removes (backward shifts across the table's
 * end included), and with keys forced onto one hash so that only the key
 * check tells them apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "cache/slot-index.h"

#define NONE SL_SLOT_INDEX_NONE

static uint64_t next_rand(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Every resident slot is found under its key; absent keys are not. */
static void assert_matches_model(struct sl_slot_index *ix, _Atomic uint64_t *keys,
                                 const bool *resident, uint32_t slots, uint64_t absent_base)
{
  uint32_t live = 0;
  for (uint32_t s = 0; s < slots; s++) {
    uint64_t k = atomic_load(&keys[s]);
    if (resident[s]) {
      live++;
      assert_int_equal(sl_slot_index_find(ix, keys, k, sl_slot_index_hash(k), NULL), s);
    }
  }
  assert_int_equal(sl_slot_index_count(ix), live);
  for (uint64_t k = absent_base; k < absent_base + 64; k++)
    assert_int_equal(sl_slot_index_find(ix, keys, k, sl_slot_index_hash(k), NULL), NONE);
}

static void remove_key(struct sl_slot_index *ix, _Atomic uint64_t *keys, uint64_t key)
{
  uint32_t pos = 0;
  assert_int_not_equal(sl_slot_index_find(ix, keys, key, sl_slot_index_hash(key), &pos), NONE);
  sl_slot_index_remove_at(ix, pos);
}

static void test_random_against_model(void **state)
{
  (void)state;
  const uint32_t slots = 97; /* small: runs wrap round the end often */
  struct sl_slot_index ix;
  assert_true(sl_slot_index_init(&ix, slots));
  assert_true(sl_slot_index_bytes(&ix) <= slots * 12 + 8);
  _Atomic uint64_t keys[97];
  bool resident[97] = {false};
  uint64_t rng = 12345, next_key = 1;
  for (int round = 0; round < 20000; round++) {
    uint32_t s = (uint32_t)(next_rand(&rng) % slots);
    if (resident[s]) {
      remove_key(&ix, keys, atomic_load(&keys[s]));
      resident[s] = false;
    } else {
      uint64_t k = next_key++;
      atomic_store(&keys[s], k);
      sl_slot_index_insert(&ix, sl_slot_index_hash(k), s);
      resident[s] = true;
    }
    if (round % 97 == 0)
      assert_matches_model(&ix, keys, resident, slots, 1u << 30);
  }
  assert_matches_model(&ix, keys, resident, slots, 1u << 30);
  sl_slot_index_fini(&ix);
}

/* Keys sharing one hash: found by the key check, and removing any of them
 * leaves the others reachable. */
static void test_same_hash(void **state)
{
  (void)state;
  const uint32_t slots = 16;
  struct sl_slot_index ix;
  assert_true(sl_slot_index_init(&ix, slots));
  _Atomic uint64_t keys[16];
  const uint32_t hash = 0xfffffff0u; /* home near the end: the run wraps */
  for (uint32_t s = 0; s < slots; s++) {
    atomic_store(&keys[s], 1000 + s);
    sl_slot_index_insert(&ix, hash, s);
  }
  for (uint32_t s = 0; s < slots; s++)
    assert_int_equal(sl_slot_index_find(&ix, keys, 1000 + s, hash, NULL), s);
  assert_int_equal(sl_slot_index_find(&ix, keys, 999, hash, NULL), NONE);
  for (uint32_t s = 0; s < slots; s += 3) {
    uint32_t pos = 0;
    assert_int_equal(sl_slot_index_find(&ix, keys, 1000 + s, hash, &pos), s);
    sl_slot_index_remove_at(&ix, pos);
  }
  for (uint32_t s = 0; s < slots; s++)
    assert_int_equal(sl_slot_index_find(&ix, keys, 1000 + s, hash, NULL),
                     s % 3 == 0 ? NONE : s);
  sl_slot_index_fini(&ix);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_random_against_model),
    cmocka_unit_test(test_same_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
