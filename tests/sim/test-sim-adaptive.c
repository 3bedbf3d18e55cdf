/* Issue 15: the synthetic workloads of lib/sim/synth.c, and which way
 * twophase's admission contest moves the miss ratio on them.
 *
 * The generator must be deterministic and follow its spec (a loop is a
 * loop, a zigzag turns round, a Zipf has its popular blocks), because the
 * policy tests and bench/ both name workloads by spec.  Then the policy:
 *  - on a loop 1.5 times the cache, admitting every ghost hit (the fixed
 *    split of before, "twophase-classic") cycles the loop through hot and
 *    misses almost always; the contest keeps a hot set resident, so the
 *    new twophase must miss at least 0.3 less often.  (The goal,
 *    within 0.05 of LIRS, is not met: see docs/cache-policy.md.)
 *  - on a pure Zipf, where the fixed split was tuned, the contest must not
 *    cost more than 1% relative;
 *  - on a zigzag (LRU-friendly), it must not be worse than the classic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
  assert_true(now < classic - 0.3);
  sl_trace_free(&t);
}

static void test_zipf_unchanged(void **s)
{
  struct sl_trace t;
  assert_int_equal(sl_synth_generate("zipf:n=20000,alpha=0.9,len=400000", &t),
                   0);
  for (uint64_t cap = 500; cap <= 8000; cap *= 4) {
    double now = miss_ratio("twophase", &t, cap);
    double classic = miss_ratio("twophase-classic", &t, cap);
    print_message("zipf 0.9, %lu blocks: twophase %.4f, classic %.4f\n",
                  (unsigned long)cap, now, classic);
    assert_true(now <= classic * 1.01);
  }
  sl_trace_free(&t);
}

static void test_zigzag_not_worse(void **s)
{
  struct sl_trace t;
  assert_int_equal(sl_synth_generate("zigzag:n=1500,len=150000", &t), 0);
  for (uint64_t cap = 300; cap <= 1200; cap *= 2)
    assert_true(miss_ratio("twophase", &t, cap) <=
                miss_ratio("twophase-classic", &t, cap) + 1e-9);
  sl_trace_free(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_synth_shapes),
    cmocka_unit_test(test_loop_keeps_a_hot_set),
    cmocka_unit_test(test_zipf_unchanged),
    cmocka_unit_test(test_zigzag_not_worse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
