/* LRU: evict the least recently used block; a hit moves the block to the
 * head of the list.  The reference that the scoreboard compares against. */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

struct lru {
  uint64_t capacity;
  struct sl_pool pool;
  struct sl_list queue;
  struct sl_simhash index;
};

static void lru_destroy(void *state)
{
  struct lru *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *lru_create(uint64_t capacity)
{
  struct lru *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  sl_list_init(&c->queue);
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

static bool lru_access(void *state, uint64_t block, uint64_t next_use)
{
  struct lru *c = state;
  (void)next_use;
  uint32_t hit = sl_simhash_get(&c->index, block);
  if (hit != SL_SIMHASH_EMPTY) {
    sl_list_move_head(&c->pool, &c->queue, hit);
    return true;
  }
  if (c->capacity == 0)
    return false;
  if (c->queue.len >= c->capacity) {
    uint32_t victim = c->queue.tail;
    sl_list_remove(&c->pool, &c->queue, victim);
    sl_simhash_del(&c->index, c->pool.key[victim]);
    sl_pool_release(&c->pool, victim);
  }
  uint32_t n = sl_pool_alloc(&c->pool, block);
  sl_list_push_head(&c->pool, &c->queue, n);
  sl_simhash_put(&c->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_lru = {
  .name = "lru",
  .description = "least recently used",
  .create = lru_create,
  .access = lru_access,
  .destroy = lru_destroy,
};
