/* FIFO: evict the block that entered first; hits change nothing.
 * The baseline every other policy is measured against. */
#include "sim/policy.h"
#include "sim/policy-common.h"

static void *fifo_create(uint64_t capacity)
{
  return sl_simcache_create(sizeof(struct sl_simcache), capacity,
                            capacity + 1);
}

static bool fifo_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  return sl_simcache_access_one_list(state, block, NULL,
                                     sl_simcache_evict_tail);
}

const struct sl_sim_policy sl_sim_policy_fifo = {
  .name = "fifo",
  .description = "first in, first out",
  .create = fifo_create,
  .access = fifo_access,
  .destroy = sl_simcache_destroy,
};
