/* CLOCK with one reference bit (libCacheSim's Clock, 1 bit).
 *
 * New blocks enter at the head with the bit clear; a hit sets it.  The
 * hand sits at the tail: a referenced block has its bit cleared and goes
 * back to the head (the "second chance"), an unreferenced one is evicted.
 * Kept as a list rather than a ring so the order of second chances is
 * exactly FIFO-with-reinsertion, which is what the anchors assume.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

static void *clock_create(uint64_t capacity)
{
  return sl_simcache_create(sizeof(struct sl_simcache), capacity,
                            capacity + 1);
}

static void clock_evict(void *state)
{
  struct sl_simcache *c = state;
  for (;;) {
    uint32_t n = c->list[0].tail;
    if (c->pool.freq[n]) {
      c->pool.freq[n] = 0;
      sl_list_move_head(&c->pool, &c->list[0], n);
      continue;
    }
    sl_simcache_forget(c, n);
    return;
  }
}

static bool clock_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  return sl_simcache_access_one_list(state, block,
                                     sl_simcache_mark_referenced, clock_evict);
}

const struct sl_sim_policy sl_sim_policy_clock = {
  .name = "clock",
  .description = "CLOCK, one reference bit (second chance)",
  .create = clock_create,
  .access = clock_access,
  .destroy = sl_simcache_destroy,
};
