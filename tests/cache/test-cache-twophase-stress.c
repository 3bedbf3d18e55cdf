/* Many-threaded stress of twophase (issue 3, acceptance 4): a random mix
 * of lookups, inserts, pins and removes from several threads for a bounded
 * number of operations; a pinned block must stay resident for as long as
 * it is pinned, and every invariant must hold afterwards.  Run twice: one
 * shard (the automatic count for this capacity) and eight shards of
 * unequal sizes, where pins, unpins and lookups cross shards.  Built and
 * run under ThreadSanitizer by scripts/test.sh (suite concurrency). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "cache/twophase.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

#define THREADS 4
#define CAPACITY 4096
#define KEYS (4 * CAPACITY)

static struct sl_twophase *cache;
static atomic_int pin_violations;
static uint64_t ops_per_thread = 400000;

static uint64_t next_rand(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *worker(void *arg)
{
  uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
  for (uint64_t i = 0; i < ops_per_thread; i++) {
    uint64_t r = next_rand(&rng);
    /* Skewed keys: a quarter of the traffic on 1/16 of the keys. */
    uint64_t key = (r & 3) == 0 ? (r >> 8) % (KEYS / 16) : (r >> 8) % KEYS;
    unsigned op = (unsigned)((r >> 4) % 100);
    if (op < 60) {
      /* reported, so that the climber samples and steps under the load */
      sl_twophase_count_requests(cache, 1);
      if (sl_twophase_lookup(cache, key) == SL_TWOPHASE_NONE)
        sl_twophase_insert(cache, key, false, NULL, NULL);
    } else if (op < 80) {
      uint64_t ev;
      bool did;
      uint32_t s = sl_twophase_insert(cache, key, true, &ev, &did);
      if (s != SL_TWOPHASE_NONE) {
        for (int k = 0; k < 8; k++) /* churn while it is pinned */
          sl_twophase_insert(cache, KEYS + (next_rand(&rng) % KEYS), false, NULL, NULL);
        if (sl_twophase_where(cache, s) == 0 || sl_twophase_slot_key(cache, s) != key)
          atomic_fetch_add(&pin_violations, 1);
        sl_twophase_unpin(cache, s);
      }
    } else if (op < 95) {
      uint32_t s = sl_twophase_pin(cache, key);
      if (s != SL_TWOPHASE_NONE) {
        sl_twophase_insert(cache, KEYS * 2 + key, false, NULL, NULL);
        if (sl_twophase_where(cache, s) == 0 || sl_twophase_slot_key(cache, s) != key)
          atomic_fetch_add(&pin_violations, 1);
        sl_twophase_unpin(cache, s);
      }
    } else {
      sl_twophase_remove(cache, key);
    }
  }
  return NULL;
}

static void stress(unsigned shards, uint64_t capacity)
{
  if (UNDER_SANITIZER || getenv("SLUICE_STRESS_SHORT"))
    ops_per_thread = 60000; /* instrumented: keep the run bounded */
  atomic_store(&pin_violations, 0);
  struct sl_twophase_params p = {.capacity = capacity, .shards = shards};
  cache = sl_twophase_create(&p);
  assert_non_null(cache);
  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)i), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&pin_violations), 0);
  char msg[256];
  if (sl_twophase_check(cache, msg, sizeof msg) != 0)
    fail_msg("invariant broken after the stress: %s", msg);
  struct sl_twophase_stats s;
  sl_twophase_get_stats(cache, &s);
  assert_int_equal(s.pinned, 0);
  assert_true(s.resident <= capacity);
  assert_true(s.hot_evictions + s.cold_evictions > 0);
  /* the reported requests reached the climbers, which sampled */
  assert_true(s.climbs > 0);
  /* (check() above has already looked every resident block up through
   * the index: none was lost in the storm.) */
  sl_twophase_destroy(cache);
}

static void test_stress(void **state)
{
  (void)state;
  stress(0, CAPACITY);
}

static void test_stress_sharded(void **state)
{
  (void)state;
  stress(8, CAPACITY + 5); /* shards of 513 and 512 slots */
}

int main(void)
{
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_stress),
                                     cmocka_unit_test(test_stress_sharded)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
