/* twophase: the public structure (twophase.h), a set of shards
 * (twophase-shard.c) that split the keys between them.
 *
 * Why shards: a hit takes no lock, but a miss takes its shard's eviction
 * lock.  With one lock for the whole cache, every miss on one core pulled
 * the lock's cache line away from the other core, and on a Zipf workload
 * with ~17% misses two threads ran slower than one.  With N shards, misses
 * on different cores mostly take different locks.  Each shard is the whole
 * replacement engine over its own slots, so a shard of a few thousand
 * blocks or more behaves like the whole cache (docs/cache-policy.md
 * compares the simulated miss ratios); small caches are one shard and
 * behave exactly as an unsharded structure.
 *
 * Routing: a key goes to a shard chosen by a multiplicative hash of the
 * key (the odd constant is the 64-bit golden ratio; its high 32 bits are
 * range-reduced without a division).  It is independent of the index's
 * hash (sl_slot_index_hash, a full mix), which is computed once per
 * operation and handed to the shard, so a hit costs a multiply, a load of
 * the shard's pointer and a call more than an unsharded lookup, and still
 * one index probe, at most one CAS, no lock and no shared store.
 *
 * Slots are global: shard i owns [base_i, base_i + size_i).  The first
 * capacity % N shards have one slot more than the others, so the sizes add
 * up to capacity exactly (the simulator measures miss ratios at exact
 * sizes), and a slot's shard is found by arithmetic: below SPLIT (the
 * slots of the larger shards) it is slot / (q + 1), above it
 * big + (slot - SPLIT) / q.
 *
 * Everything in struct sl_twophase but the test hand's turn is written
 * once at creation, so hits on different cores share it read-only; the
 * shards are allocated separately, each in whole cache lines, so no two
 * shards' locks share a line.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/slot-index.h"
#include "cache/twophase-shard.h"
#include "cache/twophase.h"
#include "common/util.h"

#define NONE SL_TWOPHASE_NONE

struct shard_ref {
  struct sl_tp_shard *sh;
  uint32_t base, size;
};

struct sl_twophase {
  uint32_t nshards, capacity;
  uint32_t q;     /* slots of a small shard (the large ones have q + 1) */
  uint32_t big;   /* shards with q + 1 slots: the first ones */
  uint32_t split; /* big * (q + 1): the first slot of a small shard */
  struct shard_ref shard[SL_TWOPHASE_MAX_SHARDS];
  uint64_t id;    /* whose requests sl_twophase_count_requests reports */
  /* Only sl_twophase_test_hand_step writes this: its own line. */
  _Alignas(64) _Atomic uint32_t test_turn;
};

static inline uint32_t shard_of_key(const struct sl_twophase *t, uint64_t key)
{
  uint32_t h = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32);
  return (uint32_t)(((uint64_t)h * t->nshards) >> 32);
}

/* The shard owning SLOT (< capacity). */
static inline uint32_t shard_of_slot(const struct sl_twophase *t, uint32_t slot)
{
  if (slot < t->split)
    return slot / (t->q + 1);
  return t->big + (slot - t->split) / t->q;
}

static unsigned shard_count(const struct sl_twophase_params *p)
{
  uint64_t n = p->shards;
  if (n == 0) {
    n = p->capacity / SL_TWOPHASE_SHARD_MIN;
    if (n > SL_TWOPHASE_MAX_SHARDS)
      n = SL_TWOPHASE_MAX_SHARDS;
    /* A power of two: each shard rounds its ghost up to a power of two of
     * buckets, so only then do the shards' ghosts add up to the ghost of
     * one unsharded structure.  With 20 or 26 shards they held 1.25 to 1.6
     * times as much, and cpio_4k and cpio_4k_reads at 40% of their
     * footprint missed 5-6% more (docs/cache-policy.md). */
    while (n & (n - 1))
      n &= n - 1;
  }
  if (n > p->capacity)
    n = p->capacity; /* no empty shard */
  return n < 1 ? 1 : (unsigned)n;
}

struct sl_twophase *sl_twophase_create(const struct sl_twophase_params *p)
{
  if (!p || p->capacity == 0 || p->capacity >= (1u << 30) ||
      p->shards > SL_TWOPHASE_MAX_SHARDS)
    return NULL;
  struct sl_twophase *t = sl_zalloc_lines(sizeof *t);
  if (!t)
    return NULL;
  t->capacity = (uint32_t)p->capacity;
  t->nshards = shard_count(p);
  t->q = t->capacity / t->nshards;
  t->big = t->capacity % t->nshards;
  t->split = t->big * (t->q + 1);
  /* Its shards' climbers credit a thread's requests to it by this id
   * (twophase-shard.c); an address could be a destroyed structure's. */
  static _Atomic uint64_t last_id;
  uint64_t id = atomic_fetch_add_explicit(&last_id, 1, memory_order_relaxed) + 1;
  t->id = id;
  uint32_t base = 0;
  for (uint32_t i = 0; i < t->nshards; i++) {
    uint32_t size = t->q + (i < t->big);
    t->shard[i] = (struct shard_ref){.sh = sl_tp_shard_create(p, size, id), .base = base,
                                     .size = size};
    if (!t->shard[i].sh) {
      sl_twophase_destroy(t);
      return NULL;
    }
    base += size;
  }
  return t;
}

void sl_twophase_destroy(struct sl_twophase *t)
{
  if (!t)
    return;
  for (uint32_t i = 0; i < t->nshards; i++)
    sl_tp_shard_destroy(t->shard[i].sh);
  free(t);
}

/* ---- by key ------------------------------------------------------------ */

uint32_t sl_twophase_lookup(struct sl_twophase *t, uint64_t key)
{
  const struct shard_ref *r = &t->shard[shard_of_key(t, key)];
  uint32_t s = sl_tp_shard_lookup(r->sh, key, sl_slot_index_hash(key));
  return s == NONE ? NONE : r->base + s;
}

uint32_t sl_twophase_insert(struct sl_twophase *t, uint64_t key, bool pin,
                            uint64_t *evicted, bool *did_evict)
{
  const struct shard_ref *r = &t->shard[shard_of_key(t, key)];
  uint32_t s = sl_tp_shard_insert(r->sh, key, sl_slot_index_hash(key), pin, evicted,
                                  did_evict);
  return s == NONE ? NONE : r->base + s;
}

/* One call into the shard, which looks up and inserts on a miss (the
 * key's shard and hash computed once): a hit runs the instructions it ran
 * before the hill climber (docs/cache-policy.md, "Hit path cost"). */
bool sl_twophase_access(struct sl_twophase *t, uint64_t key)
{
  return sl_tp_shard_access(t->shard[shard_of_key(t, key)].sh, key, sl_slot_index_hash(key));
}

void sl_twophase_count_requests(struct sl_twophase *t, uint64_t n)
{
  sl_tp_count_requests(t->id, n);
}

uint32_t sl_twophase_pin(struct sl_twophase *t, uint64_t key)
{
  const struct shard_ref *r = &t->shard[shard_of_key(t, key)];
  uint32_t s = sl_tp_shard_pin(r->sh, key, sl_slot_index_hash(key));
  return s == NONE ? NONE : r->base + s;
}

bool sl_twophase_remove(struct sl_twophase *t, uint64_t key)
{
  return sl_tp_shard_remove(t->shard[shard_of_key(t, key)].sh, key,
                            sl_slot_index_hash(key));
}

bool sl_twophase_in_ghost(struct sl_twophase *t, uint64_t key)
{
  return sl_tp_shard_in_ghost(t->shard[shard_of_key(t, key)].sh, key);
}

/* ---- by slot ----------------------------------------------------------- */

void sl_twophase_unpin(struct sl_twophase *t, uint32_t slot)
{
  if (slot >= t->capacity)
    return;
  const struct shard_ref *r = &t->shard[shard_of_slot(t, slot)];
  sl_tp_shard_unpin(r->sh, slot - r->base);
}

char sl_twophase_where(struct sl_twophase *t, uint32_t slot)
{
  if (slot >= t->capacity)
    return 0;
  const struct shard_ref *r = &t->shard[shard_of_slot(t, slot)];
  return sl_tp_shard_where(r->sh, slot - r->base);
}

uint64_t sl_twophase_slot_key(struct sl_twophase *t, uint32_t slot)
{
  if (slot >= t->capacity)
    return 0;
  const struct shard_ref *r = &t->shard[shard_of_slot(t, slot)];
  return sl_tp_shard_slot_key(r->sh, slot - r->base);
}

/* ---- whole structure --------------------------------------------------- */

uint32_t sl_twophase_test_hand_step(struct sl_twophase *t, uint64_t *evicted,
                                    bool *did_evict)
{
  uint32_t i = atomic_fetch_add_explicit(&t->test_turn, 1, memory_order_relaxed) % t->nshards;
  const struct shard_ref *r = &t->shard[i];
  uint32_t s = sl_tp_shard_test_hand_step(r->sh, evicted, did_evict);
  return s == NONE ? NONE : r->base + s;
}

unsigned sl_twophase_shard_count(const struct sl_twophase *t)
{
  return t->nshards;
}

void sl_twophase_get_stats(struct sl_twophase *t, struct sl_twophase_stats *s)
{
  memset(s, 0, sizeof *s);
  size_t bytes = 0;
  for (uint32_t i = 0; i < t->nshards; i++) {
    struct sl_twophase_stats x;
    sl_tp_shard_get_stats(t->shard[i].sh, &x);
    s->inserts += x.inserts;
    s->ghost_hits += x.ghost_hits;
    s->promotions += x.promotions;
    s->contests += x.contests;
    s->rejections += x.rejections;
    s->climbs += x.climbs;
    s->demotions += x.demotions;
    s->hot_evictions += x.hot_evictions;
    s->cold_evictions += x.cold_evictions;
    s->resident += x.resident;
    s->cold += x.cold;
    s->hot += x.hot;
    s->pinned += x.pinned;
    s->ghost += x.ghost;
    s->ghost_bytes += x.ghost_bytes;
    s->cold_target += x.cold_target;
    s->ref_stores = x.ref_stores;       /* per thread, the same from every shard */
    s->ghost_entries += x.ghost_entries;
    bytes += sl_tp_shard_meta_bytes(t->shard[i].sh);
  }
  s->bytes_per_resident = (double)bytes / t->capacity;
  s->bytes_per_ghost = s->ghost_entries ? (double)s->ghost_bytes / (double)s->ghost_entries : 0;
}

int sl_twophase_check(struct sl_twophase *t, char *msg, size_t len)
{
  uint32_t base = 0;
  for (uint32_t i = 0; i < t->nshards; i++) {
    const struct shard_ref *r = &t->shard[i];
    if (r->base != base || r->size != sl_tp_shard_capacity(r->sh) ||
        (r->size != t->q && r->size != t->q + 1) || (r->size == t->q + 1) != (i < t->big)) {
      snprintf(msg, len, "shard %u: slots [%u, +%u) (engine: %u) do not follow [0, %u)", i,
               r->base, r->size, sl_tp_shard_capacity(r->sh), base);
      return -1;
    }
    base += r->size;
  }
  if (base != t->capacity) {
    snprintf(msg, len, "shards hold %u slots, capacity is %u", base, t->capacity);
    return -1;
  }
  for (uint32_t i = 0; i < t->nshards; i++) {
    const struct shard_ref *r = &t->shard[i];
    char sub[200];
    if (sl_tp_shard_check(r->sh, sub, sizeof sub) != 0) {
      if (t->nshards == 1)
        snprintf(msg, len, "%s", sub);
      else
        snprintf(msg, len, "shard %u: %s", i, sub);
      return -1;
    }
    for (uint32_t s = r->base; s < r->base + r->size; s++) {
      if (shard_of_slot(t, s) != i) {
        snprintf(msg, len, "slot %u of shard %u maps to shard %u", s, i, shard_of_slot(t, s));
        return -1;
      }
      if (sl_tp_shard_where(r->sh, s - r->base) == 0)
        continue;
      uint64_t k = sl_tp_shard_slot_key(r->sh, s - r->base);
      if (shard_of_key(t, k) != i) {
        snprintf(msg, len, "slot %u in shard %u holds key %llu of shard %u", s, i,
                 (unsigned long long)k, shard_of_key(t, k));
        return -1;
      }
    }
  }
  return 0;
}
