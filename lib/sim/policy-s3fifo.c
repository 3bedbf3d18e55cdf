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
#include "sim/policy-common.h"

enum { NONE, SMALL, MAIN, GHOST };

struct s3fifo {
  struct sl_simcache c;   /* first: see policy-common.h */
  uint64_t small_cap, ghost_cap;
  int threshold;
};

static void *s3fifo_create_threshold(uint64_t capacity, int threshold)
{
  uint64_t ghost_cap = (uint64_t)((double)capacity * 0.90);
  struct s3fifo *s = sl_simcache_create(sizeof *s, capacity,
                                        capacity + ghost_cap + 2);
  if (!s)
    return NULL;
  s->small_cap = (uint64_t)((double)capacity * 0.10);
  s->ghost_cap = ghost_cap;
  s->threshold = threshold;
  return s;
}

static void *s3fifo_create(uint64_t capacity)
{
  return s3fifo_create_threshold(capacity, 2);
}

static void *s3fifo1_create(uint64_t capacity)
{
  return s3fifo_create_threshold(capacity, 1);
}

static void evict_small(struct s3fifo *s)
{
  struct sl_simcache *c = &s->c;
  while (c->list[SMALL].len > 0) {
    uint32_t n = c->list[SMALL].tail;
    if (c->pool.freq[n] >= s->threshold) {
      c->pool.freq[n] = 0;
      sl_simcache_move(c, n, MAIN);
      continue;
    }
    if (s->ghost_cap == 0) {
      sl_simcache_forget(c, n);
      return;
    }
    if (c->list[GHOST].len >= s->ghost_cap)
      sl_simcache_forget(c, c->list[GHOST].tail);
    sl_simcache_move(c, n, GHOST);
    return;
  }
}

static void evict_main(struct sl_simcache *c)
{
  while (c->list[MAIN].len > 0) {
    uint32_t n = c->list[MAIN].tail;
    uint8_t f = c->pool.freq[n];
    if (f >= 1) {
      c->pool.freq[n] = (uint8_t)((f < 3 ? f : 3) - 1);
      sl_list_move_head(&c->pool, &c->list[MAIN], n);
      continue;
    }
    sl_simcache_forget(c, n);
    return;
  }
}

static void evict(struct s3fifo *s)
{
  struct sl_simcache *c = &s->c;
  if (c->list[MAIN].len > c->capacity - s->small_cap ||
      c->list[SMALL].len == 0)
    evict_main(c);
  else
    evict_small(s);
}

static bool s3fifo_access(void *state, uint64_t block, uint64_t next_use)
{
  struct s3fifo *s = state;
  struct sl_simcache *c = &s->c;
  (void)next_use;
  uint32_t n = sl_simcache_find(c, block);
  bool ghost_hit = false;
  if (n != SL_NIL) {
    if (c->pool.where[n] != GHOST) {
      if (c->pool.freq[n] < 3)
        c->pool.freq[n]++;
      return true;
    }
    sl_simcache_forget(c, n);
    ghost_hit = true;
  }
  if (s->small_cap < 1)
    return false; /* libCacheSim's can_insert: nothing fits */
  while (c->list[SMALL].len + c->list[MAIN].len >= c->capacity)
    evict(s);
  if (!ghost_hit && 1 >= s->small_cap)
    return false; /* as large as the small queue: not admitted */
  sl_simcache_admit(c, ghost_hit ? MAIN : SMALL, block);
  return false;
}

const struct sl_sim_policy sl_sim_policy_s3fifo = {
  .name = "s3fifo",
  .description = "S3-FIFO, move to main after 2 hits in the small queue",
  .create = s3fifo_create,
  .access = s3fifo_access,
  .destroy = sl_simcache_destroy,
};

const struct sl_sim_policy sl_sim_policy_s3fifo1 = {
  .name = "s3fifo1",
  .description = "S3-FIFO, move to main after 1 hit (for block I/O)",
  .create = s3fifo1_create,
  .access = s3fifo_access,
  .destroy = sl_simcache_destroy,
};
