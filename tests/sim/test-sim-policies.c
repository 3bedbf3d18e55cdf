/* Unit tests of the comparison policies on tiny sequences: LRU and FIFO
 * differ where they should, Belady reaches the textbook optimum, S3-FIFO
 * promotes a ghost hit to main, LIRS follows the paper's rules step by
 * step and keeps a loop resident where LRU thrashes, and every policy
 * stays within the bounds any cache must respect (no better than Belady,
 * only compulsory misses when everything fits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim/policy.h"
#include "sim/sim.h"
#include "sim/trace.h"

static const char *const mine[] = { "fifo", "lru", "clock", "2q", "arc",
                                    "s3fifo", "s3fifo1", "sieve", "lirs",
                                    "belady" };

static uint64_t misses(const char *name, const uint64_t *seq, uint64_t n,
                       uint64_t capacity)
{
  const struct sl_sim_policy *p = sl_sim_policy_find(name);
  assert_non_null(p);
  struct sl_trace t = { .blocks = (uint64_t *)seq, .len = n };
  uint64_t *nu = NULL;
  if (p->needs_future)
    assert_int_equal(sl_trace_next_use(&t, &nu), 0);
  struct sl_sim_job job = { .policy = p, .cache_blocks = capacity };
  assert_int_equal(sl_sim_run(&t, nu, &job, 1, 1), 0);
  free(nu);
  return job.misses;
}

static void test_registry(void **s)
{
  for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
    assert_non_null(sl_sim_policy_find(mine[i]));
  assert_null(sl_sim_policy_find("nope"));
}

static void test_lru_vs_fifo(void **s)
{
  /* 1 is reused just before 4 arrives: LRU keeps it, FIFO drops it. */
  uint64_t seq[] = { 1, 2, 3, 1, 4, 1 };
  assert_int_equal(misses("lru", seq, 6, 3), 4);
  assert_int_equal(misses("fifo", seq, 6, 3), 5);
  /* CLOCK gives 1 a second chance too. */
  assert_int_equal(misses("clock", seq, 6, 3), 4);
}

static void test_belady_textbook(void **s)
{
  /* Silberschatz's reference string: OPT takes 9 faults with 3 frames,
   * LRU 12 and FIFO 15. */
  uint64_t seq[] = { 7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1 };
  assert_int_equal(misses("belady", seq, 20, 3), 9);
  assert_int_equal(misses("lru", seq, 20, 3), 12);
  assert_int_equal(misses("fifo", seq, 20, 3), 15);
}

static void test_s3fifo_ghost_promotion(void **s)
{
  /* Cache of 20: small queue 2, ghost 18.  Blocks 1..21 fill the cache
   * through the small queue; 21 pushes 1 out to the ghost.  The miss on 1
   * is then a ghost hit and puts 1 in main, where 20 new blocks passing
   * through the small queue do not disturb it. */
  uint64_t seq[64];
  uint64_t n = 0;
  for (uint64_t b = 1; b <= 21; b++)
    seq[n++] = b;
  seq[n++] = 1;               /* miss, ghost hit: goes to main */
  for (uint64_t b = 100; b < 120; b++)
    seq[n++] = b;
  seq[n++] = 1;               /* still cached */
  assert_int_equal(misses("s3fifo", seq, n, 20), n - 1);
  assert_int_equal(misses("s3fifo1", seq, n, 20), n - 1);
  /* FIFO and LRU lost 1 to the 20 new blocks. */
  assert_int_equal(misses("fifo", seq, n, 20), n);
  assert_int_equal(misses("lru", seq, n, 20), n);
}

static void test_bounds_all_policies(void **s)
{
  enum { N = 20000, SPACE = 400 };
  uint64_t *seq = malloc(N * sizeof *seq);
  uint64_t x = 12345;
  for (int i = 0; i < N; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    /* skewed: half the requests go to a tenth of the blocks */
    uint64_t r = x >> 33;
    seq[i] = (r & 1) ? r % (SPACE / 10) : r % SPACE;
  }
  struct sl_trace t = { .blocks = seq, .len = N };
  uint64_t footprint = (uint64_t)sl_trace_footprint(&t);
  for (uint64_t cap = 25; cap <= 100; cap += 75) {
    uint64_t opt = misses("belady", seq, N, cap);
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++) {
      uint64_t m = misses(mine[i], seq, N, cap);
      if (m < opt)
        fail_msg("%s beats Belady: %lu < %lu", mine[i], (unsigned long)m,
                 (unsigned long)opt);
      assert_true(m <= N);
    }
    /* Recency and frequency both pay on a skewed trace. */
    assert_true(misses("lru", seq, N, cap) < misses("fifo", seq, N, cap) + N / 50);
  }
  for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
    assert_int_equal(misses(mine[i], seq, N, footprint), footprint);
  /* A cache of zero blocks misses everything. */
  for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
    assert_int_equal(misses(mine[i], seq, N, 0), N);
  free(seq);
}

static void test_sieve_keeps_visited(void **s)
{
  /* 1 is hit, then new blocks stream through: SIEVE's hand skips 1 (and
   * clears its bit) while FIFO evicts it. */
  uint64_t seq[] = { 1, 2, 3, 1, 4, 5, 1 };
  assert_int_equal(misses("sieve", seq, 7, 3), 5);
  assert_int_equal(misses("fifo", seq, 7, 3), 6);
}

/* Replay SEQ against a fresh NAME cache of CAPACITY blocks and write 'H'
 * or 'M' per access into OUT (a string of N characters). */
static void hit_pattern(const char *name, const uint64_t *seq, size_t n,
                        uint64_t capacity, char *out)
{
  const struct sl_sim_policy *p = sl_sim_policy_find(name);
  assert_non_null(p);
  void *state = p->create(capacity);
  assert_non_null(state);
  for (size_t i = 0; i < n; i++)
    out[i] = p->access(state, seq[i], UINT64_MAX) ? 'H' : 'M';
  out[n] = '\0';
  p->destroy(state);
}

static void test_lirs_by_hand(void **s)
{
  /* A cache of 4 blocks: 2 for LIR blocks, 2 for resident HIR blocks
   * (the minimum).  Worked through with the paper's rules, S listed top
   * first, Q listed end first, g = non-resident:
   *  1 2       miss, fill the LIR set           S=2 1
   *  3 4       miss, resident HIR               S=4 3 2 1      Q=4 3
   *  5         miss, evicts 3 (stays in S)      S=5 4 3g 2 1   Q=5 4
   *  3         miss but in S: 4 evicted, 3 LIR, 1 demoted to Q
   *                                             S=3 5 4g 2     Q=1 5
   *  1         hit, HIR not in S: to top of S   S=1 3 5 4g 2   Q=1 5
   *  2         hit, LIR at the bottom: pruning drops 4g and 5
   *                                             S=2 1 3        Q=1 5
   *  4         miss, 4 was forgotten; 5 (not in S) evicted outright
   *                                             S=4 2 1 3      Q=4 1
   *  5         miss, evicts 1 (stays in S)      S=5 4 2 1g 3   Q=5 4
   *  1         miss but in S: 4 evicted, 1 LIR, 3 demoted
   *                                             S=1 5 4g 2     Q=3 5
   *  3         hit, HIR not in S                S=3 1 5 4g 2   Q=3 5
   *  4         miss but in S: 5 evicted, 4 LIR, 2 demoted; prune drops 5g
   *                                             S=4 3 1        Q=2 3
   *  2         hit, HIR not in S                S=2 4 3 1      Q=2 3
   *  5         miss, evicts 3 (stays in S)      S=5 2 4 3g 1   Q=5 2
   * LRU with 4 blocks hits 3 times where LIRS hits 4. */
  uint64_t seq[] = { 1, 2, 3, 4, 5, 3, 1, 2, 4, 5, 1, 3, 4, 2, 5 };
  char got[32];
  hit_pattern("lirs", seq, 15, 4, got);
  assert_string_equal(got, "MMMMMMHHMMMHMHM");
  hit_pattern("lru", seq, 15, 4, got);
  assert_string_equal(got, "MMMMMHMMMMHMHMM");
}

static void test_lirs_loop(void **s)
{
  /* A loop over 110 blocks with a cache of 100: LRU always evicts the
   * block needed next and misses every access.  LIRS keeps its 98 LIR
   * blocks (100 minus 2 for HIR blocks) and after the first passes misses
   * only the other 12 per pass. */
  enum { LOOP = 110, CAP = 100, PASSES = 30, LIR = CAP - 2 };
  uint64_t seq[LOOP * PASSES];
  for (size_t i = 0; i < LOOP * PASSES; i++)
    seq[i] = 1000 + i % LOOP;
  assert_int_equal(misses("lru", seq, LOOP * PASSES, CAP), LOOP * PASSES);
  uint64_t early = misses("lirs", seq, LOOP * (PASSES - 1), CAP);
  uint64_t all = misses("lirs", seq, LOOP * PASSES, CAP);
  assert_int_equal(all - early, LOOP - LIR);
  assert_true(all < LOOP * PASSES / 5);
}

static void test_lirs_scan_resistance(void **s)
{
  /* Blocks 1..8 used twice fill the LIR set of a 10-block cache; a
   * one-pass scan of 100 new blocks goes through the 2 HIR slots only, so
   * 1..8 all hit afterwards.  LRU has lost them all to the scan. */
  uint64_t seq[256];
  size_t n = 0;
  for (int pass = 0; pass < 2; pass++)
    for (uint64_t b = 1; b <= 8; b++)
      seq[n++] = b;
  for (uint64_t b = 100; b < 200; b++)
    seq[n++] = b;
  size_t before = n;
  for (uint64_t b = 1; b <= 8; b++)
    seq[n++] = b;
  assert_int_equal(misses("lirs", seq, n, 10),
                   misses("lirs", seq, before, 10));
  assert_int_equal(misses("lru", seq, n, 10),
                   misses("lru", seq, before, 10) + 8);
}

static void test_lirs_remembers_a_cache_worth(void **s)
{
  /* Non-resident blocks are remembered in S, at most as many as the cache
   * holds.  With 10 blocks (8 LIR), stream 1000 new blocks past a full
   * LIR set: 1095 is still remembered, so its miss makes it LIR and it
   * survives the next stream; 150 was forgotten long ago, comes back as
   * a HIR block and is evicted again. */
  uint64_t seq[2200];
  size_t n = 0;
  for (int pass = 0; pass < 2; pass++)
    for (uint64_t b = 1; b <= 8; b++)
      seq[n++] = b;
  for (uint64_t b = 100; b < 1100; b++)
    seq[n++] = b;
  seq[n++] = 1095;
  seq[n++] = 150;
  for (uint64_t b = 2000; b < 2050; b++)
    seq[n++] = b;
  seq[n++] = 1095;
  seq[n++] = 150;
  char got[2200];
  hit_pattern("lirs", seq, n, 10, got);
  assert_int_equal(got[n - 4 - 50], 'M'); /* 1095: non-resident */
  assert_int_equal(got[n - 3 - 50], 'M'); /* 150: forgotten */
  assert_int_equal(got[n - 2], 'H');      /* 1095: LIR now */
  assert_int_equal(got[n - 1], 'M');      /* 150: HIR, evicted */
}

static void test_wtinylfu_frequency_admission(void **s)
{
  /* 150 blocks used five times each, then a scan of 2000 new blocks, then
   * the 150 again, in a cache of 200: the scan's blocks were seen once, so
   * TinyLFU admission keeps them out of main and the hot set survives;
   * LRU loses it.  Below 100 blocks the 1% window is empty and nothing is
   * admitted (as in libCacheSim, whose figures the anchors are). */
  static uint64_t seq[3000];
  size_t n = 0;
  for (int pass = 0; pass < 5; pass++)
    for (uint64_t b = 1; b <= 150; b++)
      seq[n++] = b;
  for (uint64_t b = 1000; b < 3000 - 150 - 750; b++)
    seq[n++] = b;
  size_t before = n;
  for (uint64_t b = 1; b <= 150; b++)
    seq[n++] = b;
  const char *const w[] = { "wtinylfu", "wtinylfu-adapt", "wtinylfu-cbf" };
  for (size_t i = 0; i < 3; i++) {
    uint64_t extra = misses(w[i], seq, n, 200) - misses(w[i], seq, before, 200);
    /* the adaptive form's first climb (at 10 x capacity requests) widens
     * the window blindly mid-scan and costs part of the hot set */
    /* libCacheSim's form does not count window hits, so the hot blocks in
     * probation tie with the scan's (2 sightings each) and filter
     * collisions let some of the scan in */
    if (extra > (i == 0 ? 10 : i == 1 ? 75 : 45))
      fail_msg("%s: %lu of the hot set missed after the scan", w[i],
               (unsigned long)extra);
    assert_int_equal(misses(w[i], seq, n, 99), n);
  }
  assert_int_equal(misses("lru", seq, n, 200),
                   misses("lru", seq, before, 200) + 150);
}

static void test_lirs_tiny_caches(void **s)
{
  /* One block: no LIR set, the single slot acts as LRU. */
  uint64_t seq[] = { 1, 1, 2, 2, 1, 3, 3 };
  char got[8];
  hit_pattern("lirs", seq, 7, 1, got);
  assert_string_equal(got, "MHMHMMH");
  /* Two and three blocks keep a LIR block through a stream. */
  uint64_t seq2[] = { 1, 1, 5, 6, 7, 8, 1 };
  hit_pattern("lirs", seq2, 7, 2, got);
  assert_string_equal(got, "MHMMMMH");
  hit_pattern("lirs", seq2, 7, 3, got);
  assert_string_equal(got, "MHMMMMH");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_registry),
    cmocka_unit_test(test_lru_vs_fifo),
    cmocka_unit_test(test_belady_textbook),
    cmocka_unit_test(test_s3fifo_ghost_promotion),
    cmocka_unit_test(test_bounds_all_policies),
    cmocka_unit_test(test_sieve_keeps_visited),
    cmocka_unit_test(test_lirs_by_hand),
    cmocka_unit_test(test_lirs_loop),
    cmocka_unit_test(test_lirs_scan_resistance),
    cmocka_unit_test(test_lirs_remembers_a_cache_worth),
    cmocka_unit_test(test_lirs_tiny_caches),
    cmocka_unit_test(test_wtinylfu_frequency_admission),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
