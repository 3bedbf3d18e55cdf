/* SIEVE (Zhang et al., NSDI'24): a FIFO queue with a visited bit and a hand
 * that moves from the oldest entry towards the newest.
 *
 * Unlike CLOCK, a visited block is not moved: the hand clears its bit and
 * passes on, so survivors keep their place and new blocks (inserted at the
 * head) are the first to be examined after the hand wraps.
 */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

struct sieve {
  uint64_t capacity;
  struct sl_pool pool;
  struct sl_list queue;
  struct sl_simhash index;
  uint32_t hand;        /* SL_NIL: start from the tail */
};

static void sieve_destroy(void *state)
{
  struct sieve *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *sieve_create(uint64_t capacity)
{
  struct sieve *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  c->hand = SL_NIL;
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

static void sieve_evict(struct sieve *c)
{
  uint32_t n = c->hand != SL_NIL ? c->hand : c->queue.tail;
  while (c->pool.freq[n]) {
    c->pool.freq[n] = 0;
    n = c->pool.prev[n] != SL_NIL ? c->pool.prev[n] : c->queue.tail;
  }
  c->hand = c->pool.prev[n];
  sl_list_remove(&c->pool, &c->queue, n);
  sl_simhash_del(&c->index, c->pool.key[n]);
  sl_pool_release(&c->pool, n);
}

static bool sieve_access(void *state, uint64_t block, uint64_t next_use)
{
  struct sieve *c = state;
  (void)next_use;
  uint32_t hit = sl_simhash_get(&c->index, block);
  if (hit != SL_SIMHASH_EMPTY) {
    c->pool.freq[hit] = 1;
    return true;
  }
  if (c->capacity == 0)
    return false;
  if (c->queue.len >= c->capacity)
    sieve_evict(c);
  uint32_t n = sl_pool_alloc(&c->pool, block);
  sl_list_push_head(&c->pool, &c->queue, n);
  sl_simhash_put(&c->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_sieve = {
  .name = "sieve",
  .description = "SIEVE: FIFO with a visited bit and a non-moving hand",
  .create = sieve_create,
  .access = sieve_access,
  .destroy = sieve_destroy,
};
