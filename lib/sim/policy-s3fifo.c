/* S3-FIFO (Yang et al., SOSP'23): a small FIFO (10% of the cache) that new
 * blocks enter, a main FIFO run as a 2-bit CLOCK, and a ghost FIFO of ids
 * (90% of the cache's entry count) remembering what the small queue
 * evicted.  A block leaving the small queue moves to main if it was hit at
 * least THRESHOLD times there, else its id goes to the ghost; a miss whose
 * id is in the ghost goes straight to main.
 *
 * Semantics follow libCacheSim's S3FIFO (which made the anchors): hit
 * counters saturate at 3, main reinserts with the counter minus one, a
 * block as large as the small queue is not admitted (so a cache of fewer
 * than 20 blocks admits nothing).  This is the version of libCacheSim
 * the anchors were made with (October 2024); later versions also send new
 * blocks to main while the cache is still filling, which changes the
 * figures by up to 10% relative.
 */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

enum { NONE, SMALL, MAIN, GHOST };

struct s3fifo {
  uint64_t capacity, small_cap, ghost_cap;
  int threshold;
  struct sl_pool pool;
  struct sl_list list[4];
  struct sl_simhash index;
};

static void s3fifo_destroy(void *state)
{
  struct s3fifo *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}

static void *s3fifo_create_threshold(uint64_t capacity, int threshold)
{
  struct s3fifo *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  c->small_cap = (uint64_t)((double)capacity * 0.10);
  c->ghost_cap = (uint64_t)((double)capacity * 0.90);
  c->threshold = threshold;
  for (int i = 0; i < 4; i++)
    sl_list_init(&c->list[i]);
  uint64_t nodes = capacity + c->ghost_cap + 2;
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

static void *s3fifo_create(uint64_t capacity)
{
  return s3fifo_create_threshold(capacity, 2);
}

static void *s3fifo1_create(uint64_t capacity)
{
  return s3fifo_create_threshold(capacity, 1);
}

static void move_to(struct s3fifo *c, uint32_t n, int to)
{
  sl_list_remove(&c->pool, &c->list[c->pool.where[n]], n);
  c->pool.where[n] = (uint8_t)to;
  sl_list_push_head(&c->pool, &c->list[to], n);
}

static void forget(struct s3fifo *c, uint32_t n)
{
  sl_list_remove(&c->pool, &c->list[c->pool.where[n]], n);
  sl_simhash_del(&c->index, c->pool.key[n]);
  sl_pool_release(&c->pool, n);
}

static void evict_small(struct s3fifo *c)
{
  while (c->list[SMALL].len > 0) {
    uint32_t n = c->list[SMALL].tail;
    if (c->pool.freq[n] >= c->threshold) {
      c->pool.freq[n] = 0;
      move_to(c, n, MAIN);
      continue;
    }
    if (c->ghost_cap == 0) {
      forget(c, n);
      return;
    }
    if (c->list[GHOST].len >= c->ghost_cap)
      forget(c, c->list[GHOST].tail);
    move_to(c, n, GHOST);
    return;
  }
}

static void evict_main(struct s3fifo *c)
{
  while (c->list[MAIN].len > 0) {
    uint32_t n = c->list[MAIN].tail;
    uint8_t f = c->pool.freq[n];
    if (f >= 1) {
      c->pool.freq[n] = (uint8_t)((f < 3 ? f : 3) - 1);
      sl_list_move_head(&c->pool, &c->list[MAIN], n);
      continue;
    }
    forget(c, n);
    return;
  }
}

static void evict(struct s3fifo *c)
{
  if (c->list[MAIN].len > c->capacity - c->small_cap ||
      c->list[SMALL].len == 0)
    evict_main(c);
  else
    evict_small(c);
}

static bool s3fifo_access(void *state, uint64_t block, uint64_t next_use)
{
  struct s3fifo *c = state;
  (void)next_use;
  uint32_t n = sl_simhash_get(&c->index, block);
  bool ghost_hit = false;
  if (n != SL_SIMHASH_EMPTY) {
    if (c->pool.where[n] != GHOST) {
      if (c->pool.freq[n] < 3)
        c->pool.freq[n]++;
      return true;
    }
    forget(c, n);
    ghost_hit = true;
  }
  if (c->small_cap < 1)
    return false; /* libCacheSim's can_insert: nothing fits */
  while (c->list[SMALL].len + c->list[MAIN].len >= c->capacity)
    evict(c);
  int to;
  if (ghost_hit)
    to = MAIN;
  else if (1 >= c->small_cap)
    return false; /* as large as the small queue: not admitted */
  else
    to = SMALL;
  n = sl_pool_alloc(&c->pool, block);
  c->pool.where[n] = (uint8_t)to;
  sl_list_push_head(&c->pool, &c->list[to], n);
  sl_simhash_put(&c->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_s3fifo = {
  .name = "s3fifo",
  .description = "S3-FIFO, move to main after 2 hits in the small queue",
  .create = s3fifo_create,
  .access = s3fifo_access,
  .destroy = s3fifo_destroy,
};

const struct sl_sim_policy sl_sim_policy_s3fifo1 = {
  .name = "s3fifo1",
  .description = "S3-FIFO, move to main after 1 hit (for block I/O)",
  .create = s3fifo1_create,
  .access = s3fifo_access,
  .destroy = s3fifo_destroy,
};
