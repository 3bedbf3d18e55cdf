/* 2Q (Johnson & Shasha, VLDB'94), the full version: new blocks enter a
 * FIFO A1in (25% of the cache); blocks evicted from it leave their id in
 * a ghost FIFO A1out (ids for 50% of the cache); a miss found in A1out
 * goes to Am, an LRU holding the rest.  Hits in A1in change nothing, so a
 * burst of correlated references does not promote a block.
 */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

enum { NONE, AIN, AM, AOUT };

struct twoq {
  uint64_t capacity, in_cap, out_cap;
  struct sl_pool pool;
  struct sl_list list[4];
  struct sl_simhash index;
};

static void twoq_destroy(void *state)
{
  struct twoq *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *twoq_create(uint64_t capacity)
{
  struct twoq *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  c->in_cap = (uint64_t)((double)capacity * 0.25);
  c->out_cap = (uint64_t)((double)capacity * 0.50);
  for (int i = 0; i < 4; i++)
    sl_list_init(&c->list[i]);
  uint64_t nodes = capacity + c->out_cap + 2;
  if (sl_pool_init(&c->pool, nodes) < 0) {
    free(c);
    return NULL;
  }
  if (sl_simhash_init(&c->index, nodes) < 0) {
    sl_pool_free(&c->pool);
    free(c);
    return NULL;
  }
  return c;
}

static void forget(struct twoq *c, uint32_t n)
{
  sl_list_remove(&c->pool, &c->list[c->pool.where[n]], n);
  sl_simhash_del(&c->index, c->pool.key[n]);
  sl_pool_release(&c->pool, n);
}

static void evict(struct twoq *c)
{
  if (c->list[AIN].len > c->in_cap || c->list[AM].len == 0) {
    uint32_t n = c->list[AIN].tail;
    if (c->out_cap == 0) {
      forget(c, n);
      return;
    }
    if (c->list[AOUT].len >= c->out_cap)
      forget(c, c->list[AOUT].tail);
    sl_list_remove(&c->pool, &c->list[AIN], n);
    c->pool.where[n] = AOUT;
    sl_list_push_head(&c->pool, &c->list[AOUT], n);
  } else {
    forget(c, c->list[AM].tail);
  }
}

static bool twoq_access(void *state, uint64_t block, uint64_t next_use)
{
  struct twoq *c = state;
  (void)next_use;
  uint32_t n = sl_simhash_get(&c->index, block);
  bool ghost_hit = false;
  if (n != SL_SIMHASH_EMPTY) {
    switch (c->pool.where[n]) {
    case AM:
      sl_list_move_head(&c->pool, &c->list[AM], n);
      return true;
    case AIN:
      return true;
    default:
      forget(c, n);
      ghost_hit = true;
    }
  }
  if (c->capacity == 0)
    return false;
  while (c->list[AIN].len + c->list[AM].len >= c->capacity)
    evict(c);
  int to = ghost_hit ? AM : AIN;
  n = sl_pool_alloc(&c->pool, block);
  c->pool.where[n] = (uint8_t)to;
  sl_list_push_head(&c->pool, &c->list[to], n);
  sl_simhash_put(&c->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_2q = {
  .name = "2q",
  .description = "2Q: FIFO probation, ghost ids, LRU main (25%/50%)",
  .create = twoq_create,
  .access = twoq_access,
  .destroy = twoq_destroy,
};
