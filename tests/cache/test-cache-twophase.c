/* Unit tests of the twophase state machine (issue 3, acceptance 3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <inttypes.h>
#include <cmocka.h>

#include "cache/twophase.h"
#include "twophase-test.h"

#define NONE SL_TWOPHASE_NONE

static struct sl_twophase *make(uint64_t cap)
{
  return make_sharded(cap, 0);
}

static char where(struct sl_twophase *t, uint64_t key)
{
  uint32_t s = sl_twophase_pin(t, key);
  if (s == NONE)
    return 0;
  char w = sl_twophase_where(t, s);
  sl_twophase_unpin(t, s);
  return w;
}

/* Put keys [0, nhot) into hot: referenced while cold, then pushed out of
 * cold by unique fillers, which promotes them. */
static void fill_hot(struct sl_twophase *t, uint64_t cap, uint64_t nhot)
{
  for (uint64_t k = 0; k < nhot; k++)
    assert_false(sl_twophase_access(t, k));
  for (uint64_t k = 0; k < nhot; k++)
    assert_true(sl_twophase_access(t, k));
  for (uint64_t k = 0; k < cap; k++)
    sl_twophase_access(t, 1000000 + k);
  for (uint64_t k = 0; k < nhot; k++)
    assert_int_equal(where(t, k), 'h');
}

static void test_scan_leaves_hot_untouched(void **state)
{
  (void)state;
  const uint64_t cap = 1000;
  /* Without the hot fill (issue 15): with it, while hot is below its
   * share, the few scan blocks the sketch takes for repeats (doorkeeper
   * and counter collisions) may join hot -- without displacing any hot
   * block, which test_scan_fill_evicts_nothing checks. */
  struct sl_twophase_params p = {.capacity = cap, .fill_hot = -1};
  struct sl_twophase *t = sl_twophase_create(&p);
  assert_non_null(t);
  fill_hot(t, cap, 100);
  struct sl_twophase_stats before, after;
  sl_twophase_get_stats(t, &before);
  for (uint64_t k = 0; k < 2 * cap; k++) /* one pass, twice the cache */
    assert_false(sl_twophase_access(t, 5000000 + k));
  sl_twophase_get_stats(t, &after);
  for (uint64_t k = 0; k < 100; k++)
    assert_int_equal(where(t, k), 'h');
  assert_int_equal(after.hot_evictions, before.hot_evictions);
  assert_int_equal(after.demotions, before.demotions);
  assert_int_equal(after.hot, before.hot);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

static void test_scan_fill_evicts_nothing(void **state)
{
  (void)state;
  const uint64_t cap = 1000;
  struct sl_twophase *t = make(cap);
  fill_hot(t, cap, 100);
  struct sl_twophase_stats before, after;
  sl_twophase_get_stats(t, &before);
  for (uint64_t k = 0; k < 2 * cap; k++)
    assert_false(sl_twophase_access(t, 5000000 + k));
  sl_twophase_get_stats(t, &after);
  for (uint64_t k = 0; k < 100; k++)
    assert_int_equal(where(t, k), 'h');
  assert_int_equal(after.hot_evictions, before.hot_evictions);
  assert_true(after.hot >= before.hot);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

static void test_ghost_hit_promotes_to_hot(void **state)
{
  (void)state;
  struct sl_twophase *t = make(100);
  assert_false(sl_twophase_access(t, 42));
  for (uint64_t k = 0; k < 200; k++)
    sl_twophase_access(t, 1000 + k);
  assert_int_equal(where(t, 42), 0);            /* evicted ... */
  assert_true(sl_twophase_in_ghost(t, 42));     /* ... and remembered */
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  uint64_t ghost_hits = s.ghost_hits;
  assert_false(sl_twophase_access(t, 42));      /* a miss, but a ghost hit */
  assert_int_equal(where(t, 42), 'h');
  assert_false(sl_twophase_in_ghost(t, 42));
  sl_twophase_get_stats(t, &s);
  assert_int_equal(s.ghost_hits, ghost_hits + 1);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

/* Walk the hand once round the slot array. */
static void hand_pass(struct sl_twophase *t, uint64_t cap)
{
  uint64_t ev;
  bool did;
  for (uint64_t i = 0; i < cap; i++)
    sl_twophase_test_hand_step(t, &ev, &did);
}

static void test_two_phase_eviction(void **state)
{
  (void)state;
  const uint64_t cap = 64;
  struct sl_twophase *t = make(cap);
  fill_hot(t, cap, 8);
  /* Key 0 is referenced once more in hot; the other hot keys are not. */
  assert_true(sl_twophase_access(t, 0));
  hand_pass(t, cap);
  assert_int_equal(where(t, 0), 'h');     /* phase one: demoted, kept */
  for (uint64_t k = 1; k < 8; k++)        /* unreferenced: gone in one pass */
    assert_int_equal(where(t, k), 0);
  hand_pass(t, cap);
  assert_int_equal(where(t, 0), 0);       /* phase two: still unreferenced */
  assert_true(sl_twophase_in_ghost(t, 0));
  assert_consistent(t);
  sl_twophase_destroy(t);

  /* Referenced again between the passes: survives the second pass too. */
  t = make(cap);
  fill_hot(t, cap, 8);
  assert_true(sl_twophase_access(t, 0));
  hand_pass(t, cap);
  assert_true(sl_twophase_access(t, 0));
  hand_pass(t, cap);
  assert_int_equal(where(t, 0), 'h');
  sl_twophase_destroy(t);
}

static void test_pinned_never_evicted(void **state)
{
  (void)state;
  const uint64_t cap = 50;
  /* Without the hot fill: in a cache of 50 the sketch (64 counters a
   * row) takes every scan block for a repeat, fill would move the
   * unpinned blocks into hot, and only later contests would evict them. */
  struct sl_twophase_params p = {.capacity = cap, .fill_hot = -1};
  struct sl_twophase *t = sl_twophase_create(&p);
  assert_non_null(t);
  uint32_t slots[10];
  for (uint64_t k = 0; k < 10; k++) {
    slots[k] = sl_twophase_insert(t, k, true, NULL, NULL);
    assert_int_not_equal(slots[k], NONE);
  }
  fill_hot(t, cap, 0);
  for (uint64_t k = 0; k < 20 * cap; k++) {
    uint64_t ev;
    bool did;
    sl_twophase_insert(t, 100000 + k, false, &ev, &did);
    if (did)
      assert_true(ev >= 10);
  }
  for (uint64_t k = 0; k < 10; k++)
    assert_int_not_equal(sl_twophase_where(t, slots[k]), 0);
  for (uint64_t k = 0; k < 10; k++)
    sl_twophase_unpin(t, slots[k]);
  for (uint64_t k = 0; k < 20 * cap; k++)
    sl_twophase_access(t, 900000 + k);
  for (uint64_t k = 0; k < 10; k++)
    assert_int_equal(where(t, k), 0);   /* unpinned: free to go */
  assert_consistent(t);
  sl_twophase_destroy(t);
}

static void test_everything_pinned(void **state)
{
  (void)state;
  struct sl_twophase *t = make(8);
  for (uint64_t k = 0; k < 8; k++)
    assert_int_not_equal(sl_twophase_insert(t, k, true, NULL, NULL), NONE);
  assert_int_equal(sl_twophase_insert(t, 99, false, NULL, NULL), NONE);
  assert_consistent(t);
  sl_twophase_destroy(t);
}

static void test_hit_stores_only_until_saturated(void **state)
{
  (void)state;
  struct sl_twophase *t = make(16);
  sl_twophase_access(t, 7);
  struct sl_twophase_stats a, b;
  sl_twophase_get_stats(t, &a);
  for (int i = 0; i < 10; i++)
    assert_true(sl_twophase_access(t, 7));
  sl_twophase_get_stats(t, &b);
  /* Two-bit level: at most three stores, then none. */
  assert_true(b.ref_stores - a.ref_stores >= 1 && b.ref_stores - a.ref_stores <= 3);
  sl_twophase_get_stats(t, &a);
  for (int i = 0; i < 10; i++)
    sl_twophase_access(t, 7);
  sl_twophase_get_stats(t, &b);
  assert_int_equal(b.ref_stores, a.ref_stores);
  sl_twophase_destroy(t);
}

static void test_remove_and_memory(void **state)
{
  (void)state;
  const uint64_t cap = 200;
  struct sl_twophase *t = make(cap);
  fill_hot(t, cap, 20);
  assert_true(sl_twophase_remove(t, 3));        /* hot */
  assert_true(sl_twophase_remove(t, 1000000 + cap - 1)); /* cold */
  assert_false(sl_twophase_remove(t, 3));
  assert_int_equal(where(t, 3), 0);
  assert_consistent(t);
  for (uint64_t k = 0; k < 3 * cap; k++)
    sl_twophase_access(t, 7000000 + k);
  assert_consistent(t);
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  assert_true(s.resident <= cap);
  assert_true(s.bytes_per_resident <= 32.0);
  assert_true(s.bytes_per_ghost <= 8.0);
  sl_twophase_destroy(t);
}

/* The ghost is what the stats say it is: bytes per ghost entry is what the
 * allocation takes over the entries it can hold, the ghost can hold
 * between ghost_fraction and twice ghost_fraction times the cache (buckets
 * are a power of two per shard), and -- measured by behaviour -- after a
 * long stream of misses it remembers about as many evicted keys as it can
 * hold, never more.  A ghost allocated or sized many times too large fails
 * here. */
static void check_ghost_size(uint64_t cap, unsigned shards, double fraction)
{
  struct sl_twophase_params p = {.capacity = cap, .shards = shards,
                                 .ghost_fraction = fraction};
  struct sl_twophase *t = sl_twophase_create(&p);
  assert_non_null(t);
  struct sl_twophase_stats s;
  sl_twophase_get_stats(t, &s);
  double nominal = fraction * (double)cap;
  if (s.bytes_per_ghost < 3.99 || s.bytes_per_ghost > 4.01)
    fail_msg("%.2f bytes per ghost entry (%" PRIu64 " bytes for %" PRIu64 " entries), expected 4",
             s.bytes_per_ghost, s.ghost_bytes, s.ghost_entries);
  /* Per shard: at most twice its nominal share plus one bucket's rounding. */
  if ((double)s.ghost_entries < nominal ||
      (double)s.ghost_entries > 2 * nominal + 20.0 * SL_TWOPHASE_MAX_SHARDS)
    fail_msg("the ghost holds %" PRIu64 " entries for a nominal %.0f", s.ghost_entries, nominal);
  /* 5x the capacity of distinct keys: every one misses, and all but the
   * last cap are evicted (from cold, into the ghost). */
  const uint64_t base = 50000000, n = 5 * cap;
  for (uint64_t k = 0; k < n; k++)
    assert_false(sl_twophase_access(t, base + k));
  uint64_t remembered = 0;
  for (uint64_t k = 0; k < n; k++)
    remembered += sl_twophase_in_ghost(t, base + k);
  if (remembered > s.ghost_entries || (double)remembered < 0.85 * nominal)
    fail_msg("cache %" PRIu64 " (%u shards), ghost of %" PRIu64 " entries (nominal %.0f) "
             "remembers %" PRIu64 " evicted keys", cap, shards, s.ghost_entries, nominal,
             remembered);
  sl_twophase_destroy(t);
}

static void test_ghost_size(void **state)
{
  (void)state;
  check_ghost_size(1000, 1, 1.0);
  check_ghost_size(3000, 1, 0.5);
  check_ghost_size(40000, 0, 1.0);   /* automatic shards: 8 */
  check_ghost_size(20000, 4, 2.0);
}

static void test_contest_keeps_hot_on_a_loop(void **state)
{
  /* Issue 15: a loop 1.5 times the cache.  Once hot is full, every ghost
   * hit must win a frequency contest against the hand's victim; in a loop
   * all blocks are seen equally often, so most lose and enter cold, and
   * hot keeps the blocks it has (they hit on every round).  The classic
   * mode has no contest and every ghost hit displaces a hot block. */
  (void)state;
  const uint64_t cap = 400, n = 600;
  for (int classic = 0; classic < 2; classic++) {
    struct sl_twophase_params p = {.capacity = cap, .classic = classic};
    struct sl_twophase *t = sl_twophase_create(&p);
    assert_non_null(t);
    uint64_t hits = 0;
    for (uint64_t i = 0; i < 40 * n; i++)
      hits += sl_twophase_access(t, i % n);
    assert_consistent(t);
    struct sl_twophase_stats s;
    sl_twophase_get_stats(t, &s);
    if (classic) {
      assert_int_equal(s.contests, 0);
      assert_true(hits < 40 * n / 10);
    } else {
      assert_true(s.contests > 0);
      assert_true(s.rejections > s.contests / 2);
      assert_true(hits > 40 * n / 3);
      assert_true(s.bytes_per_resident <= 32.0);
    }
    sl_twophase_destroy(t);
  }
}

/* Issue 15: the hill climber (on by default) must move cold's target the
 * way each pattern wants it.  A loop over 1.5 times the cache is reused
 * in order: only a hot set held still hits, so the target must shrink
 * towards its 1% floor.  A zigzag over 1.5 times the cache was asserted
 * here to want a larger cold (a FIFO of what came last); measured with
 * the climber off (`sluice sim --trace zigzag:n=1500,len=300000 --format
 * synth`, 1000 blocks), it does not: cold at 1% misses 0.356, at 5% to 50%
 * 0.390-0.394, so the climber's earlier growth there came from its first
 * sample (the warm-up misses) making its first step up look right.  What
 * the zigzag checks now is that climbing costs nothing against the fixed
 * split it starts from.  The requests go through lookup and insert, as
 * the daemon makes them, each reported with sl_twophase_count_requests
 * before its lookup (so the climber sees what it saw when the hit path
 * counted). */
static uint64_t climb_run(uint64_t cap, bool zigzag, bool climb, uint64_t rounds,
                          struct sl_twophase_stats *s)
{
  /* the defaults climb */
  struct sl_twophase_params p = {.capacity = cap, .climb = climb ? 0 : -1};
  struct sl_twophase *t = sl_twophase_create(&p);
  assert_non_null(t);
  uint64_t n = cap * 3 / 2, hits = 0;
  for (uint64_t r = 0; r < rounds; r++)
    for (uint64_t i = 0; i < n; i++) {
      uint64_t key = zigzag && (r & 1) ? n - 1 - i : i;
      sl_twophase_count_requests(t, 1);
      if (sl_twophase_lookup(t, key) != SL_TWOPHASE_NONE)
        hits++;
      else
        assert_int_not_equal(sl_twophase_insert(t, key, false, NULL, NULL),
                             SL_TWOPHASE_NONE);
    }
  assert_consistent(t);
  sl_twophase_get_stats(t, s);
  sl_twophase_destroy(t);
  return hits;
}

static void test_climb_goes_the_right_way(void **state)
{
  (void)state;
  const uint64_t cap = 1000, rounds = 200;
  struct sl_twophase_stats s;
  uint64_t fixed = climb_run(cap, true, false, rounds, &s);
  assert_int_equal(s.climbs, 0);
  uint64_t hits = climb_run(cap, true, true, rounds, &s);
  print_message("zigzag: cold target %" PRIu64 ", %" PRIu64 " samples, hit ratio %.3f, "
                "fixed split %.3f\n", s.cold_target, s.climbs,
                (double)hits / (double)(rounds * cap * 3 / 2),
                (double)fixed / (double)(rounds * cap * 3 / 2));
  assert_true(s.climbs >= 20);
  assert_true(hits >= fixed);
  hits = climb_run(cap, false, true, rounds, &s);
  print_message("loop: cold target %" PRIu64 ", %" PRIu64 " samples, hit ratio %.3f\n",
                s.cold_target, s.climbs, (double)hits / (double)(rounds * cap * 3 / 2));
  assert_true(s.climbs >= 20);
  assert_true(s.cold_target < cap / 20);
  /* the loop's hot set: LIRS keeps 99% of the cache, 0.66 of the loop */
  assert_true(hits > rounds * cap * 3 / 2 * 6 / 10);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_scan_leaves_hot_untouched),
    cmocka_unit_test(test_scan_fill_evicts_nothing),
    cmocka_unit_test(test_ghost_hit_promotes_to_hot),
    cmocka_unit_test(test_two_phase_eviction),
    cmocka_unit_test(test_pinned_never_evicted),
    cmocka_unit_test(test_everything_pinned),
    cmocka_unit_test(test_hit_stores_only_until_saturated),
    cmocka_unit_test(test_remove_and_memory),
    cmocka_unit_test(test_ghost_size),
    cmocka_unit_test(test_contest_keeps_hot_on_a_loop),
    cmocka_unit_test(test_climb_goes_the_right_way),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
