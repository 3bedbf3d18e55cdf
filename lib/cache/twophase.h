/* twophase: the cache replacement structure of the sluice cache daemon
 * (DESIGN.md, mechanism 1).  See docs/cache-policy.md for the design.
 *
 * Keys are 64-bit block ids (the daemon hashes (layer, block) into them).
 * Each resident key occupies one slot in [0, capacity); the slot number is
 * where the caller keeps the block's data, so it never moves while the key
 * stays resident -- promotion from cold to hot flips a state bit.
 *
 * Thread safety: lookups and hits are lock-free (at most one atomic
 * compare-and-swap on a hit, none when the reference level is saturated);
 * inserts, pins and removes take an eviction lock.  A large cache is split
 * into shards by key (params.shards), each a complete twophase structure
 * over its own range of slots with its own lock, so that misses on
 * different cores rarely wait for each other; a small cache is one shard.
 * Each shard evicts only among its own blocks: replacement is per shard,
 * and the shards' slot ranges partition [0, capacity). */
#ifndef SLUICE_CACHE_TWOPHASE_H
#define SLUICE_CACHE_TWOPHASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_twophase;

enum sl_cold_hit {
  SL_COLD_HIT_PROMOTE = 0,  /* a block hit while cold moves to hot when it leaves cold */
  SL_COLD_HIT_IGNORE,       /* cold hits are not remembered: only ghost hits reach hot */
};

/* Shards of at least this many slots when params.shards is 0: large
 * enough that each behaves like the whole cache (the simulator sees no
 * difference worth the name, docs/cache-policy.md), and at most
 * SL_TWOPHASE_MAX_SHARDS of them, so that two to a few dozen threads
 * rarely meet on one lock. */
#define SL_TWOPHASE_SHARD_MIN 4096

/* Defaults of the issue-15 tunables (chosen by bench/policy-cv.sh, see
 * docs/cache-policy.md): hill climbing on cold's target with samples of
 * 10 x the shard's capacity (Caffeine's length) and cold at most half the
 * shard; a ghost hit must beat the hot block by more than 1 count; blocks
 * seen 3 times fill hot while it is below its share. */
#define SL_TWOPHASE_CLIMB 10.0
#define SL_TWOPHASE_CLIMB_MAX 0.5
#define SL_TWOPHASE_CLIMB_STEP 0.045
#define SL_TWOPHASE_MARGIN 1
#define SL_TWOPHASE_FILL 3
#define SL_TWOPHASE_MAX_SHARDS 64

struct sl_twophase_params {
  uint64_t capacity;        /* resident blocks, cold + hot; below 2^30 */
  double cold_fraction;     /* cold's (initial) share of capacity; 0 = 0.10 */
  double ghost_fraction;    /* ghost entries per resident block; 0 = 1.0 */
  bool adaptive;            /* resize cold online from ghost hits (default off) */
  enum sl_cold_hit cold_hit;
  /* Shards (each with its own lock); 0 = automatic: capacity /
   * SL_TWOPHASE_SHARD_MIN, at least 1 and at most SL_TWOPHASE_MAX_SHARDS,
   * rounded down to a power of two (so that the shards' ghosts, each a
   * power of two of buckets, add up to one unsharded ghost); every cache
   * below 8192 blocks is one shard.  An explicit count is
   * lowered to capacity (no empty shard); above SL_TWOPHASE_MAX_SHARDS
   * create fails.  Shard sizes differ by at most one slot and add up to
   * capacity exactly.  The fractions, adaptive and cold_hit apply within
   * each shard. */
  unsigned shards;
  /* Issue 15: ghost hits enter hot only by winning a frequency contest
   * (docs/cache-policy.md, "Admission").  true = the fixed split of
   * before, where every ghost hit enters hot. */
  bool classic;
  /* Only ghost hits at least this old (0..7, the eighths of the ghost's
   * age range) contest; younger ones enter hot as in the classic mode. */
  unsigned contest_min_age;
  /* A ghost hit wins its contest only if the sketch has seen it more than
   * this many times more often than the block it would displace: ties and
   * the sketch's over-counts then keep the hot set. */
  int contest_margin;       /* 0 = SL_TWOPHASE_MARGIN; < 0 = none */
  /* Issue 15: hill climbing on cold's target, per shard.  Every CLIMB x
   * the shard's capacity requests, the shard compares its hit ratio with
   * the previous sample's, moves cold's target by a step, reverses the
   * direction when the hit ratio fell, and decays the step.
   * 0 = SL_TWOPHASE_CLIMB; < 0 = off (a fixed split; also off with
   * classic or adaptive). */
  double climb;
  /* Cold's largest target while climbing, as a share of the shard
   * (0 = SL_TWOPHASE_CLIMB_MAX); the smallest is 1%. */
  double climb_max;
  /* The climber's first (and largest) step, as a share of the shard
   * (0 = SL_TWOPHASE_CLIMB_STEP). */
  double climb_step;
  /* While hot holds less than its share (capacity - cold's target), a
   * block leaving cold unreferenced moves to hot instead of the ghost if
   * the sketch has seen it at least FILL_HOT times (1: always), so that
   * hot fills even when nothing is reused within the ghost's reach (a
   * loop many times the cache), but not with a scan.
   * 0 = SL_TWOPHASE_FILL; < 0 = never (also with classic). */
  int fill_hot;
};

struct sl_twophase_stats {
  uint64_t inserts;
  uint64_t ghost_hits;          /* misses found in the ghost: go straight to hot */
  uint64_t promotions;          /* cold entries referenced while cold, moved to hot */
  uint64_t demotions;           /* phase one: the hand cleared a reference */
  uint64_t hot_evictions;       /* phase two: unreferenced on the hand's next visit */
  uint64_t cold_evictions;      /* unreferenced cold entries, remembered in the ghost */
  uint64_t ref_stores;          /* hits that had to store a reference level, by the
                                 * calling thread (all structures): a per-thread
                                 * counter, so that hits share no cache line */
  uint64_t resident, cold, hot, pinned;
  uint64_t cold_target;         /* summed over shards, as are all the counts */
  uint64_t contests;            /* ghost hits that had to displace a hot block */
  uint64_t rejections;          /* ... and lost: they entered cold instead */
  uint64_t climbs;              /* hill-climbing samples taken (all shards) */
  double bytes_per_resident;    /* metadata per resident block */
  uint64_t ghost;               /* ghost entries remembered now (a scan) */
  uint64_t ghost_entries;       /* keys the ghost can hold: every shard's buckets
                                 * times their ways (power-of-two rounding makes
                                 * it 1-2x ghost_fraction * capacity) */
  uint64_t ghost_bytes;         /* what the ghost allocation takes, all shards */
  double bytes_per_ghost;       /* ghost_bytes / ghost_entries */
};

#define SL_TWOPHASE_NONE UINT32_MAX

/* NULL if P is invalid (capacity 0 or >= 2^30, too many shards) or out of
 * memory. */
struct sl_twophase *sl_twophase_create(const struct sl_twophase_params *p);
void sl_twophase_destroy(struct sl_twophase *t);

/* The slot of KEY (marking it referenced), or SL_TWOPHASE_NONE.  Counts
 * nothing: see sl_twophase_count_requests. */
uint32_t sl_twophase_lookup(struct sl_twophase *t, uint64_t key);

/* Issue 15: report N requests (lookups or accesses) the calling thread
 * makes of T, for the hill climber's hit ratio (params.climb).  Report
 * them before or as they are made, one at a time or in batches; each
 * miss (insert) credits the thread's pending count to its shard.  The
 * hit path counts nothing itself, so that a hit writes no memory for
 * the climber (docs/cache-policy.md, "Hit path cost").  If nothing is
 * reported during a sample, the climber does not step: cold keeps its
 * target (without reports, the fixed split).  Cheap: a thread-local add. */
void sl_twophase_count_requests(struct sl_twophase *t, uint64_t n);
#define SL_TWOPHASE_COUNT_REQUESTS 1 /* for harnesses built against older trees */

/* Make KEY resident after a miss and return its slot (the existing one if
 * another thread inserted it first).  If a block had to go, its key is
 * stored in *EVICTED and *DID_EVICT set.  With PIN the new entry is
 * returned pinned.  SL_TWOPHASE_NONE if every slot of KEY's shard is
 * pinned (with one shard: every slot), even if other shards have room. */
uint32_t sl_twophase_insert(struct sl_twophase *t, uint64_t key, bool pin,
                            uint64_t *evicted, bool *did_evict);

/* lookup, and insert on a miss; true on a hit.  For the simulator and the
 * benchmarks, which report their requests with
 * sl_twophase_count_requests. */
bool sl_twophase_access(struct sl_twophase *t, uint64_t key);

/* Pinned entries are never chosen as victims (a block being filled or
 * written back).  Pins nest.  pin returns the slot or SL_TWOPHASE_NONE. */
uint32_t sl_twophase_pin(struct sl_twophase *t, uint64_t key);
void sl_twophase_unpin(struct sl_twophase *t, uint32_t slot);

/* Drop KEY (its data became invalid).  false if absent or pinned. */
bool sl_twophase_remove(struct sl_twophase *t, uint64_t key);

/* Location of a resident slot, for tests: 'c' cold, 'h' hot, 0 free. */
char sl_twophase_where(struct sl_twophase *t, uint32_t slot);
/* The key a slot holds now (meaningful while the caller pins it). */
uint64_t sl_twophase_slot_key(struct sl_twophase *t, uint32_t slot);
bool sl_twophase_in_ghost(struct sl_twophase *t, uint64_t key);

/* For tests: one step of a clock hand over its shard's slots (a freed slot
 * stays free).  Returns the slot it freed, or SL_TWOPHASE_NONE.  With
 * several shards, successive calls step the shards in turn (shard 0, 1,
 * ..., n-1, 0, ...), so capacity calls take each hand about once round. */
uint32_t sl_twophase_test_hand_step(struct sl_twophase *t, uint64_t *evicted,
                                    bool *did_evict);

/* How many shards (each with its own eviction lock) T was built with. */
unsigned sl_twophase_shard_count(const struct sl_twophase *t);

/* Counts are summed over the shards, each read under its own lock, one
 * shard after the other (a consistent total only when T is idle). */
void sl_twophase_get_stats(struct sl_twophase *t, struct sl_twophase_stats *s);
/* Check every invariant of every shard, that the shards' slot ranges
 * partition [0, capacity) and that each resident key is in its own shard
 * (call when no other thread is using T); 0 if all hold, else -1 with a
 * description in MSG. */
int sl_twophase_check(struct sl_twophase *t, char *msg, size_t len);

#endif
