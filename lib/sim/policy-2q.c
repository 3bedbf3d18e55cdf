/* 2Q (Johnson & Shasha, VLDB'94), the full version: new blocks enter a
 * FIFO A1in (25% of the cache); blocks evicted from it leave their id in
 * a ghost FIFO A1out (ids for 50% of the cache); a miss found in A1out
 * goes to Am, an LRU holding the rest.  Hits in A1in change nothing, so a
 * burst of correlated references does not promote a block.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

enum { NONE, AIN, AM, AOUT };

struct twoq {
  struct sl_simcache c;   /* first: see policy-common.h */
  uint64_t in_cap, out_cap;
};

static void *twoq_create(uint64_t capacity)
{
  uint64_t out_cap = (uint64_t)((double)capacity * 0.50);
  struct twoq *q = sl_simcache_create(sizeof *q, capacity,
                                      capacity + out_cap + 2);
  if (!q)
    return NULL;
  q->in_cap = (uint64_t)((double)capacity * 0.25);
  q->out_cap = out_cap;
  return q;
}

static void evict(struct twoq *q)
{
  struct sl_simcache *c = &q->c;
  if (c->list[AIN].len > q->in_cap || c->list[AM].len == 0) {
    uint32_t n = c->list[AIN].tail;
    if (q->out_cap == 0) {
      sl_simcache_forget(c, n);
      return;
    }
    if (c->list[AOUT].len >= q->out_cap)
      sl_simcache_forget(c, c->list[AOUT].tail);
    sl_simcache_move(c, n, AOUT);
  } else {
    sl_simcache_forget(c, c->list[AM].tail);
  }
}

static bool twoq_access(void *state, uint64_t block, uint64_t next_use)
{
  struct twoq *q = state;
  struct sl_simcache *c = &q->c;
  (void)next_use;
  uint32_t n = sl_simcache_find(c, block);
  bool ghost_hit = false;
  if (n != SL_NIL) {
    switch (c->pool.where[n]) {
    case AM:
      sl_list_move_head(&c->pool, &c->list[AM], n);
      return true;
    case AIN:
      return true;
    default:
      sl_simcache_forget(c, n);
      ghost_hit = true;
    }
  }
  if (c->capacity == 0)
    return false;
  while (c->list[AIN].len + c->list[AM].len >= c->capacity)
    evict(q);
  sl_simcache_admit(c, ghost_hit ? AM : AIN, block);
  return false;
}

const struct sl_sim_policy sl_sim_policy_2q = {
  .name = "2q",
  .description = "2Q: FIFO probation, ghost ids, LRU main (25%/50%)",
  .create = twoq_create,
  .access = twoq_access,
  .destroy = sl_simcache_destroy,
};
