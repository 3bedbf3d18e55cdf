/* LRU: evict the least recently used block; a hit moves the block to the
 * head of the list.  The reference that the scoreboard compares against. */
#include "sim/policy.h"
#include "sim/policy-common.h"

static void *lru_create(uint64_t capacity)
{
  return sl_simcache_create(sizeof(struct sl_simcache), capacity,
                            capacity + 1);
}

static void lru_hit(void *state, uint32_t n)
{
  struct sl_simcache *c = state;
  sl_list_move_head(&c->pool, &c->list[0], n);
}

static bool lru_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  return sl_simcache_access_one_list(state, block, lru_hit,
                                     sl_simcache_evict_tail);
}

const struct sl_sim_policy sl_sim_policy_lru = {
  .name = "lru",
  .description = "least recently used",
  .create = lru_create,
  .access = lru_access,
  .destroy = sl_simcache_destroy,
};
