/* The twophase structure as a simulator policy: the real concurrent code
 * with its defaults, driven one request at a time. */
#include "cache/twophase.h"
#include "sim/policy.h"

static void *tp_create(uint64_t capacity)
{
  struct sl_twophase_params p = {.capacity = capacity ? capacity : 1};
  return sl_twophase_create(&p);
}

static bool tp_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  return sl_twophase_access(state, block);
}

static void tp_destroy(void *state)
{
  sl_twophase_destroy(state);
}

const struct sl_sim_policy sl_sim_policy_twophase = {
  .name = "twophase",
  .description = "cold FIFO + ghost + hot clock ring with two-phase eviction (sluice's own)",
  .needs_future = false,
  .create = tp_create,
  .access = tp_access,
  .destroy = tp_destroy,
};
