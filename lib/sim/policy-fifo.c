/* FIFO: evict the block that entered first; hits change nothing.
 * The baseline every other policy is measured against. */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

struct fifo {
  uint64_t capacity;
  struct sl_pool pool;
  struct sl_list queue;
  struct sl_simhash index;
};

static void fifo_destroy(void *state)
{
  struct fifo *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *fifo_create(uint64_t capacity)
{
  struct fifo *c = calloc(1, sizeof *c);
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

static bool fifo_access(void *state, uint64_t block, uint64_t next_use)
{
  struct fifo *c = state;
  (void)next_use;
  if (sl_simhash_get(&c->index, block) != SL_SIMHASH_EMPTY)
    return true;
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

const struct sl_sim_policy sl_sim_policy_fifo = {
  .name = "fifo",
  .description = "first in, first out",
  .create = fifo_create,
  .access = fifo_access,
  .destroy = fifo_destroy,
};
