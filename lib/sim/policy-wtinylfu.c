/* W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient
 * Cache Admission Policy", 2017) and its adaptive form (Caffeine's hill
 * climber on the window size), as comparators for twophase.
 *
 * New blocks enter a small LRU window (1% of the cache).  The window's
 * victim does not simply leave: it competes with the main cache's victim,
 * and only the one the frequency sketch (sketch.h: 4-bit count-min with a
 * doorkeeper and periodic halving) has seen more often stays.  The main
 * cache is a segmented LRU, 20% probation and 80% protected: a block
 * enters probation, a hit there moves it to protected, protected's
 * overflow falls back to probation's head, and the victim is probation's
 * tail.
 *
 * Sizes follow libCacheSim's WTinyLFU (which made the anchors in
 * shared/traces/ANCHORS.md): window = floor(1% of the cache), main the
 * rest, probation floor(20% of main), protected floor(80% of main); with a
 * window or a probation of 0 blocks nothing is admitted (libCacheSim's
 * can_insert), which is why the fixed forms miss every time in caches
 * under 100 blocks.  While main has room, window victims move into it
 * without a contest, and a block is admitted only if its estimate is
 * strictly greater than the main victim's.
 *
 * Three forms:
 *  - "wtinylfu", the paper's design: the sketch counts every access and
 *    is halved after 10 x capacity of them (Caffeine's sample size);
 *  - "wtinylfu-cbf", libCacheSim's: a counting Bloom filter (cbf below)
 *    that counts misses, hits in main (not in the window) and every block
 *    leaving the window, ages after 32 x main-size hits in main, and goes
 *    on contesting after an admission until a window victim loses (so a
 *    won contest frees more than the one block needed).  It reproduces the anchors exactly, and is a weaker
 *    comparator than the paper's design on most traces (its filter, sized
 *    for main, saturates under a scan);
 *  - "wtinylfu-adapt", below.
 *
 * The adaptive form ("wtinylfu-adapt") moves the window's target size by
 * hill climbing, as Caffeine's simple climber does: every sample of
 * 10 x capacity requests it compares the hit ratio with the previous
 * sample's; if it fell, the direction reverses; the step starts at 6.25%
 * of the cache and decays by 2% a sample, and restarts at full size when
 * the hit ratio moves by more than 5 points (a phase change).  A window
 * above its target pushes its victim into the contest; one below it lets
 * main's victim go without one, so the sizes follow the target lazily.
 */
#include <math.h>

#include "sim/policy.h"
#include "sim/policy-common.h"
#include "cache/sketch.h"

enum { NONE, WINDOW, PROBATION, PROTECTED };

/* libCacheSim's frequency filter: a counting Bloom filter sized for the
 * main cache at a 0.1% error rate (14.4 counters per entry, 10 hashes by
 * double hashing), counters unbounded, every counter of a key incremented
 * on an add.  Kept only to reproduce the anchors ("wtinylfu-cbf"). */
struct cbf {
  uint32_t *bf;
  uint32_t n, hashes;
};

static int cbf_init(struct cbf *f, uint64_t entries)
{
  double bpe = -log(0.001) / 0.480453013918201;
  f->hashes = (uint32_t)ceil(0.693147180559945 * bpe);
  f->n = (uint32_t)ceil(bpe * (double)entries);
  if (f->n < 2 * f->hashes)
    f->n = 2 * f->hashes;
  f->bf = calloc(f->n, sizeof *f->bf);
  return f->bf ? 0 : -ENOMEM;
}

static uint64_t rotl64(uint64_t x, int r)
{
  return x << r | x >> (64 - r);
}

/* XXH64 (Yann Collet's published algorithm) of one 8-byte little-endian
 * value: libCacheSim hashes the 8-byte block id with it, and the filter's
 * collisions -- hence the anchors -- depend on the hash. */
static uint64_t xxh64_u64(uint64_t v, uint64_t seed)
{
  const uint64_t p1 = 0x9E3779B185EBCA87ULL, p2 = 0xC2B2AE3D27D4EB4FULL,
                 p3 = 0x165667B19E3779F9ULL, p4 = 0x85EBCA77C2B2AE63ULL,
                 p5 = 0x27D4EB2F165667C5ULL;
  uint64_t h = seed + p5 + 8;
  uint64_t k = rotl64(v * p2, 31) * p1;
  h ^= k;
  h = rotl64(h, 27) * p1 + p4;
  h ^= h >> 33;
  h *= p2;
  h ^= h >> 29;
  h *= p3;
  h ^= h >> 32;
  return h;
}

static uint32_t cbf_check_add(struct cbf *f, uint64_t key, bool add)
{
  uint32_t a = (uint32_t)xxh64_u64(key, 0x12345678);
  uint32_t b = (uint32_t)xxh64_u64(key, 0x12344321);
  uint32_t min = UINT32_MAX;
  for (uint32_t i = 0; i < f->hashes; i++) {
    uint32_t x = (a + i * b) % f->n;
    if (f->bf[x] < min)
      min = f->bf[x];
  }
  if (add)
    for (uint32_t i = 0; i < f->hashes; i++)
      f->bf[(a + i * b) % f->n]++;
  return min;
}

struct wtinylfu {
  struct sl_simcache c;   /* first: see policy-common.h */
  struct sl_sketch sketch;
  struct cbf cbf;
  bool use_cbf;
  uint64_t window_max, main_max, prob_max, prot_max;
  uint64_t main_hits, age_period;
  /* hill climbing (adaptive form only) */
  bool adaptive;
  uint64_t sample, sample_len, sample_hits;
  double prev_ratio, step, window_target;
};

static void freq_add(struct wtinylfu *w, uint64_t key)
{
  if (w->use_cbf)
    cbf_check_add(&w->cbf, key, true);
  else
    sl_sketch_add(&w->sketch, key);
}

static unsigned freq_estimate(struct wtinylfu *w, uint64_t key)
{
  return w->use_cbf ? cbf_check_add(&w->cbf, key, false)
                    : sl_sketch_estimate(&w->sketch, key);
}

static void freq_halve(struct wtinylfu *w)
{
  if (w->use_cbf)
    for (uint32_t i = 0; i < w->cbf.n; i++)
      w->cbf.bf[i] >>= 1;
  else
    sl_sketch_halve(&w->sketch);
}

static void *create_common(uint64_t capacity, bool adaptive, bool use_cbf)
{
  struct wtinylfu *w = sl_simcache_create(sizeof *w, capacity, capacity + 2);
  if (!w)
    return NULL;
  w->window_max = (uint64_t)((double)capacity * 0.01);
  w->main_max = capacity - w->window_max;
  w->prob_max = (uint64_t)(1.0 / 5 * (double)w->main_max);
  w->prot_max = (uint64_t)(4.0 / 5 * (double)w->main_max);
  w->age_period = use_cbf ? 32 * w->main_max : 10 * capacity;
  w->adaptive = adaptive;
  w->sample_len = 10 * capacity;
  w->prev_ratio = -1;
  w->step = 0.0625 * (double)capacity;
  w->window_target = (double)w->window_max;
  w->use_cbf = use_cbf;
  if (use_cbf ? cbf_init(&w->cbf, w->main_max)
              : sl_sketch_init(&w->sketch, 4 * w->main_max)) {
    sl_simcache_destroy(w);
    return NULL;
  }
  return w;
}

static void *wtinylfu_create(uint64_t capacity)
{
  return create_common(capacity, false, false);
}

static void *wtinylfu_adapt_create(uint64_t capacity)
{
  return create_common(capacity, true, false);
}

static void *wtinylfu_cbf_create(uint64_t capacity)
{
  return create_common(capacity, false, true);
}

static void wtinylfu_destroy(void *state)
{
  struct wtinylfu *w = state;
  if (w) {
    sl_sketch_free(&w->sketch);
    free(w->cbf.bf);
  }
  sl_simcache_destroy(w);
}

static uint64_t main_len(const struct wtinylfu *w)
{
  return w->c.list[PROBATION].len + w->c.list[PROTECTED].len;
}

/* Segmented LRU's insert: the lowest segment with room, else probation. */
static void main_insert(struct wtinylfu *w, uint32_t n)
{
  struct sl_simcache *c = &w->c;
  int to = PROBATION;
  if (c->list[PROBATION].len + 1 > w->prob_max &&
      c->list[PROTECTED].len + 1 <= w->prot_max)
    to = PROTECTED;
  sl_simcache_move(c, n, to);
}

static uint32_t main_victim(const struct wtinylfu *w)
{
  const struct sl_simcache *c = &w->c;
  return c->list[PROBATION].len ? c->list[PROBATION].tail
                                : c->list[PROTECTED].tail;
}

/* Make room for one block. */
static void evict(struct wtinylfu *w)
{
  struct sl_simcache *c = &w->c;
  for (;;) {
    if (c->list[WINDOW].len == 0 ||
        (w->adaptive && c->list[WINDOW].len <= w->window_max &&
         main_len(w) > 0)) {
      sl_simcache_forget(c, main_victim(w));
      return;
    }
    uint32_t v = c->list[WINDOW].tail;
    uint64_t vkey = c->pool.key[v];
    if (main_len(w) + 1 <= w->main_max) {
      main_insert(w, v);
      if (w->use_cbf)
        freq_add(w, vkey);
      continue;
    }
    uint32_t m = main_victim(w);
    if (freq_estimate(w, vkey) >
        freq_estimate(w, c->pool.key[m])) {
      sl_simcache_forget(c, m);
      main_insert(w, v);
      if (!w->use_cbf)
        return;
      /* libCacheSim goes on contesting after an admission, so a won
       * contest frees two or more blocks: reproduced for the anchors */
      freq_add(w, vkey);
      continue;
    }
    sl_simcache_forget(c, v);
    if (w->use_cbf)
      freq_add(w, vkey);
    return;
  }
}

/* Caffeine's simple hill climber, one step per sample. */
static void climb(struct wtinylfu *w)
{
  uint64_t cap = w->c.capacity;
  double ratio = (double)w->sample_hits / (double)w->sample;
  if (w->prev_ratio >= 0) {
    double delta = ratio - w->prev_ratio;
    if (delta < 0)
      w->step = -w->step;
    if (fabs(delta) >= 0.05)
      w->step = (w->step < 0 ? -1 : 1) * 0.0625 * (double)cap;
    else
      w->step *= 0.98;
  }
  w->prev_ratio = ratio;
  w->window_target += w->step;
  double lo = 1, hi = (double)cap * 0.8;
  if (w->window_target < lo)
    w->window_target = lo;
  if (w->window_target > hi)
    w->window_target = hi;
  w->window_max = (uint64_t)w->window_target;
  w->main_max = cap - w->window_max;
  w->prob_max = (uint64_t)(1.0 / 5 * (double)w->main_max);
  w->prot_max = w->main_max - w->prob_max;
  w->sample = w->sample_hits = 0;
}

static bool wtinylfu_access(void *state, uint64_t block, uint64_t next_use)
{
  struct wtinylfu *w = state;
  struct sl_simcache *c = &w->c;
  (void)next_use;
  uint32_t n = sl_simcache_find(c, block);
  bool hit = n != SL_NIL;
  int where = hit ? c->pool.where[n] : NONE;
  /* libCacheSim counts misses and main hits and ages by main hits; the
   * paper and Caffeine count every access and age by accesses. */
  if (!w->use_cbf || where == PROBATION || where == PROTECTED) {
    if (w->use_cbf || hit)
      freq_add(w, block);
    if ((hit || !w->use_cbf) && ++w->main_hits >= w->age_period) {
      w->main_hits = 0;
      freq_halve(w);
    }
  }
  if (where == WINDOW) {
    sl_list_move_head(&c->pool, &c->list[WINDOW], n);
  } else if (where == PROTECTED) {
    sl_list_move_head(&c->pool, &c->list[PROTECTED], n);
  } else if (where == PROBATION) {
    sl_simcache_move(c, n, PROTECTED);
    while (c->list[PROTECTED].len > w->prot_max) {
      sl_simcache_move(c, c->list[PROTECTED].tail, PROBATION);
      while (c->list[PROBATION].len > w->prob_max)
        sl_simcache_forget(c, c->list[PROBATION].tail);
    }
  } else if (w->window_max >= 1 && w->prob_max >= 1) {
    while (c->list[WINDOW].len + main_len(w) >= c->capacity)
      evict(w);
    sl_simcache_admit(c, WINDOW, block);
    freq_add(w, block);
  }
  if (w->adaptive) {
    w->sample_hits += hit;
    if (++w->sample >= w->sample_len)
      climb(w);
  }
  return hit;
}

const struct sl_sim_policy sl_sim_policy_wtinylfu = {
  .name = "wtinylfu",
  .description = "W-TinyLFU: 1% LRU window, SLRU main 20/80, TinyLFU admission",
  .create = wtinylfu_create,
  .access = wtinylfu_access,
  .destroy = wtinylfu_destroy,
};

const struct sl_sim_policy sl_sim_policy_wtinylfu_adapt = {
  .name = "wtinylfu-adapt",
  .description = "W-TinyLFU with the window sized by hill climbing (Caffeine)",
  .create = wtinylfu_adapt_create,
  .access = wtinylfu_access,
  .destroy = wtinylfu_destroy,
};

const struct sl_sim_policy sl_sim_policy_wtinylfu_cbf = {
  .name = "wtinylfu-cbf",
  .description = "W-TinyLFU with libCacheSim's counting Bloom filter (anchors)",
  .create = wtinylfu_cbf_create,
  .access = wtinylfu_access,
  .destroy = wtinylfu_destroy,
};
