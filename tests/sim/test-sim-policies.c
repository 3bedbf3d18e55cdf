/* Unit tests of the comparison policies on tiny sequences: LRU and FIFO
 * differ where they should, Belady reaches the textbook optimum, S3-FIFO
 * promotes a ghost hit to main, and every policy stays within the bounds
 * any cache must respect (no better than Belady, only compulsory misses
 * when everything fits). */
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
                                    "s3fifo", "s3fifo1", "sieve", "belady" };

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

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_registry),
    cmocka_unit_test(test_lru_vs_fifo),
    cmocka_unit_test(test_belady_textbook),
    cmocka_unit_test(test_s3fifo_ghost_promotion),
    cmocka_unit_test(test_bounds_all_policies),
    cmocka_unit_test(test_sieve_keeps_visited),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
