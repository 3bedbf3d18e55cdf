/* Issue 15: the synthetic workloads of lib/sim/synth.c, and which way
 * twophase's admission contest moves the miss ratio on them.
 *
 * The generator must be deterministic and follow its spec (a loop is a
 * loop, a zigzag turns round, a Zipf has its popular blocks), because the
 * policy tests and bench/ both name workloads by spec.  Then the policy:
 *  - on a loop 1.5 times the cache, admitting every ghost hit (the fixed
 *    split of before, "twophase-classic") cycles the loop through hot and
 *    misses almost always; the contest keeps a hot set resident and the
 *    hill climber shrinks cold, so twophase must miss within 0.05 of LIRS
 *    (the goal);
 *  - on a pure Zipf, where the fixed split was tuned, the contest and the
 *    climber must not cost much: the issue asks for 1% relative, asserted
 *    here at nine sizes from 2% to 40% of the footprint on two seeds.  The
 *    climber used to random-walk on a stationary workload (up to +3.3%);
 *    above its starting target it now moves only on a significant change
 *    (docs/cache-policy.md, "Hill climbing", fifth round);
 *  - on a zigzag (LRU-friendly), it must not be worse than the classic,
 *    and must stay within the 10% of LRU: +2.4%, +3.6%, +6.2% and
 *    +2.3% at the four sizes here.  (Before the climber's first step took
 *    its direction from the first sample's ghost hits, 900 blocks was
 *    +14%; tests/sim/test-sim-lru-friendly.sh checks the LIRS traces.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim/policy.h"
#include "sim/sim.h"
#include "sim/synth.h"
#include "sim/trace.h"

static double miss_ratio(const char *policy, const struct sl_trace *t,
                         uint64_t capacity)
{
  const struct sl_sim_policy *p = sl_sim_policy_find(policy);
  assert_non_null(p);
  struct sl_sim_job job = { .policy = p, .cache_blocks = capacity };
  assert_int_equal(sl_sim_run(t, NULL, &job, 1, 1), 0);
  return (double)job.misses / (double)t->len;
}

static void test_synth_shapes(void **s)
{
  struct sl_trace t;
  assert_int_equal(sl_synth_generate("loop:n=5,len=12", &t), 0);
  uint64_t loop[] = { 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1 };
  assert_int_equal(t.len, 12);
  assert_memory_equal(t.blocks, loop, sizeof loop);
  sl_trace_free(&t);
  assert_int_equal(sl_synth_generate("zigzag:n=3,len=8", &t), 0);
  uint64_t zz[] = { 0, 1, 2, 2, 1, 0, 0, 1 };
  assert_memory_equal(t.blocks, zz, sizeof zz);
  sl_trace_free(&t);
  /* deterministic, and a Zipf's most popular block is far above average */
  struct sl_trace a, b;
  assert_int_equal(sl_synth_generate("zipf:n=1000,alpha=1,len=50000", &a), 0);
  assert_int_equal(sl_synth_generate("zipf:n=1000,alpha=1,len=50000", &b), 0);
  assert_memory_equal(a.blocks, b.blocks, a.len * sizeof *a.blocks);
  uint64_t *count = calloc(1000, sizeof *count);
  uint64_t max = 0;
  for (uint64_t i = 0; i < a.len; i++) {
    assert_true(a.blocks[i] < 1000);
    if (++count[a.blocks[i]] > max)
      max = count[a.blocks[i]];
  }
  assert_true(max > 50 * (a.len / 1000)); /* H(1000) ~ 7.5: top ~13% */
  free(count);
  sl_trace_free(&a);
  sl_trace_free(&b);
  /* every other kind generates, and bad specs are refused */
  const char *ok[] = { "scanhot:hot=100,scan=0.5,len=1000",
                       "phases:n=100,phase=100,len=1000",
                       "zipfshift:n=100,len=1000,phases=3" };
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(sl_synth_generate(ok[i], &t), 0);
    assert_int_equal(t.len, 1000);
    sl_trace_free(&t);
  }
  const char *bad[] = { "spiral:n=3", "loop:n=0", "loop:n=3,len", "loop:x=1",
                        "loop:n=abc", ":n=3", "scanhot:scan=2" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_true(sl_synth_generate(bad[i], &t) < 0);
}

static void test_loop_keeps_a_hot_set(void **s)
{
  struct sl_trace t;
  assert_int_equal(sl_synth_generate("loop:n=1500,len=150000", &t), 0);
  double now = miss_ratio("twophase", &t, 1000);
  double classic = miss_ratio("twophase-classic", &t, 1000);
  double lirs = miss_ratio("lirs", &t, 1000);
  print_message("loop 1.5x cache: twophase %.3f, classic %.3f, LIRS %.3f\n",
                now, classic, lirs);
  assert_true(classic > 0.9);
  assert_true(now < lirs + 0.05);
  sl_trace_free(&t);
}

static void test_zipf_unchanged(void **s)
{
  /* 2% to 40% of the footprint (about 19800 blocks), as
   * docs/cache-policy.md measures it, on two seeds */
  static const uint64_t caps[] = { 395, 593, 989, 1385, 1978, 2572, 3957, 5936, 7915 };
  for (int seed = 1; seed <= 2; seed++) {
    char spec[64];
    snprintf(spec, sizeof spec, "zipf:n=20000,alpha=0.9,len=400000,seed=%d", seed);
    struct sl_trace t;
    assert_int_equal(sl_synth_generate(spec, &t), 0);
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
      double now = miss_ratio("twophase", &t, caps[i]);
      double classic = miss_ratio("twophase-classic", &t, caps[i]);
      print_message("zipf 0.9 seed %d, %lu blocks: twophase %.4f, classic %.4f (%+.2f%%)\n",
                    seed, (unsigned long)caps[i], now, classic, (now / classic - 1) * 100);
      assert_true(now <= classic * 1.01);
    }
    sl_trace_free(&t);
  }
}

static void test_zigzag_not_worse(void **s)
{
  struct sl_trace t;
  assert_int_equal(sl_synth_generate("zigzag:n=1500,len=150000", &t), 0);
  static const uint64_t caps[] = { 300, 600, 900, 1200 };
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    uint64_t cap = caps[i];
    double now = miss_ratio("twophase", &t, cap), lru = miss_ratio("lru", &t, cap);
    print_message("zigzag 1500, %lu blocks: twophase %.4f, LRU %.4f\n",
                  (unsigned long)cap, now, lru);
    assert_true(now <= miss_ratio("twophase-classic", &t, cap) + 1e-9);
    assert_true(now <= lru * 1.10);
  }
  sl_trace_free(&t);
}

/* The climber's request count is per thread and credited at the next
 * miss to the structure it was counted for.  That used to be told by the
 * structure's address, so a structure created where a destroyed one had
 * been (the simulator runs its jobs one after the other on one thread)
 * took over the old one's last run of hits, and one configuration's miss
 * ratio depended on what had run before it.  A run that ends on a long
 * streak of hits (a loop far smaller than the cache) must not change the
 * next run. */
static void test_runs_independent(void **s)
{
  struct sl_trace z, hits;
  assert_int_equal(sl_synth_generate("zipf:n=20000,alpha=0.9,len=200000", &z), 0);
  assert_int_equal(sl_synth_generate("loop:n=10,len=200000", &hits), 0);
  double fresh = miss_ratio("twophase", &z, 2000);
  for (int i = 0; i < 3; i++) {
    miss_ratio("twophase", &hits, 1000); /* ends with ~200000 hits counted */
    double after = miss_ratio("twophase", &z, 2000);
    assert_true(after == fresh);
  }
  sl_trace_free(&z);
  sl_trace_free(&hits);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_synth_shapes),
    cmocka_unit_test(test_loop_keeps_a_hot_set),
    cmocka_unit_test(test_zipf_unchanged),
    cmocka_unit_test(test_zigzag_not_worse),
    cmocka_unit_test(test_runs_independent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
