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
 * inserts, pins and removes take the structure's eviction lock. */
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

struct sl_twophase_params {
  uint64_t capacity;        /* resident blocks, cold + hot */
  double cold_fraction;     /* cold's (initial) share of capacity; 0 = 0.10 */
  double ghost_fraction;    /* ghost entries per resident block; 0 = 1.0 */
  bool adaptive;            /* resize cold online from ghost hits (default off) */
  enum sl_cold_hit cold_hit;
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
  uint64_t cold_target;
  double bytes_per_resident;    /* metadata per resident block */
  double bytes_per_ghost;       /* metadata per ghost entry */
};

#define SL_TWOPHASE_NONE UINT32_MAX

struct sl_twophase *sl_twophase_create(const struct sl_twophase_params *p);
void sl_twophase_destroy(struct sl_twophase *t);

/* The slot of KEY (marking it referenced), or SL_TWOPHASE_NONE. */
uint32_t sl_twophase_lookup(struct sl_twophase *t, uint64_t key);

/* Make KEY resident after a miss and return its slot (the existing one if
 * another thread inserted it first).  If a block had to go, its key is
 * stored in *EVICTED and *DID_EVICT set.  With PIN the new entry is
 * returned pinned.  SL_TWOPHASE_NONE if every slot is pinned. */
uint32_t sl_twophase_insert(struct sl_twophase *t, uint64_t key, bool pin,
                            uint64_t *evicted, bool *did_evict);

/* lookup, and insert on a miss; true on a hit.  For the simulator. */
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

/* For tests: one step of the clock hand over the slot array (a freed slot
 * stays free).  Returns the slot it freed, or SL_TWOPHASE_NONE. */
uint32_t sl_twophase_test_hand_step(struct sl_twophase *t, uint64_t *evicted,
                                    bool *did_evict);

void sl_twophase_get_stats(struct sl_twophase *t, struct sl_twophase_stats *s);
/* Check every invariant (call when no other thread is using T); 0 if all
 * hold, else -1 with a description in MSG. */
int sl_twophase_check(struct sl_twophase *t, char *msg, size_t len);

#endif
