/* CLOCK with one reference bit (libCacheSim's Clock, 1 bit).
 *
 * New blocks enter at the head with the bit clear; a hit sets it.  The
 * hand sits at the tail: a referenced block has its bit cleared and goes
 * back to the head (the "second chance"), an unreferenced one is evicted.
 * Kept as a list rather than a ring so the order of second chances is
 * exactly FIFO-with-reinsertion, which is what the anchors assume.
 */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

struct clock {
  uint64_t capacity;
  struct sl_pool pool;
  struct sl_list ring;
  struct sl_simhash index;
};

static void clock_destroy(void *state)
{
  struct clock *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *clock_create(uint64_t capacity)
{
  struct clock *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  sl_list_init(&c->ring);
  if (sl_pool_init(&c->pool, capacity + 1) < 0) {
    free(c);
    return NULL;
  }
  if (sl_simhash_init(&c->index, capacity + 1) < 0) {
    sl_pool_free(&c->pool);
    free(c);
    return NULL;
  }
  return c;
}

static void clock_evict(struct clock *c)
{
  for (;;) {
    uint32_t n = c->ring.tail;
    if (c->pool.freq[n]) {
      c->pool.freq[n] = 0;
      sl_list_move_head(&c->pool, &c->ring, n);
      continue;
    }
    sl_list_remove(&c->pool, &c->ring, n);
    sl_simhash_del(&c->index, c->pool.key[n]);
    sl_pool_release(&c->pool, n);
    return;
  }
}

static bool clock_access(void *state, uint64_t block, uint64_t next_use)
{
  struct clock *c = state;
  (void)next_use;
  uint32_t hit = sl_simhash_get(&c->index, block);
  if (hit != SL_SIMHASH_EMPTY) {
    c->pool.freq[hit] = 1;
    return true;
  }
  if (c->capacity == 0)
    return false;
  if (c->ring.len >= c->capacity)
    clock_evict(c);
  uint32_t n = sl_pool_alloc(&c->pool, block);
  sl_list_push_head(&c->pool, &c->ring, n);
  sl_simhash_put(&c->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_clock = {
  .name = "clock",
  .description = "CLOCK, one reference bit (second chance)",
  .create = clock_create,
  .access = clock_access,
  .destroy = clock_destroy,
};
