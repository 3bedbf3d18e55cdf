/* slot-index: the hash index from block keys to cache slots, shared by
 * twophase and by the comparators of bench/cache (so every policy in the
 * throughput benchmark pays for the same index).
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), 1.5 cells per slot.  Each cell is one 64-bit word:
 *
 *   high 32 bits  the key's 32-bit hash, which also fixes its home cell
 *   low 32 bits   slot + 1 (0 = empty cell)
 *
 * Keeping the hash in the cell is what makes the index cheap: a probe that
 * passes a cell of another key rejects it from the cell alone, a lookup of
 * an absent key touches no key at all, and a deletion shifts cells back
 * without reading their keys.  Only a cell whose hash matches is checked
 * against the caller's key array (a false match needs a 32-bit collision
 * within one probe run).
 *
 * Readers take no lock: they load cells atomically and validate against
 * KEYS[slot].  Writers (insert, remove) must be serialised by the caller.
 * A reader racing with a backward shift can miss a present key for an
 * instant; callers treat that as a miss and find the key again under
 * their lock.  The table size is not a power of two (the home cell is the
 * hash scaled into [0, size)), so the memory is exactly 12 bytes a slot. */
#ifndef SLUICE_CACHE_SLOT_INDEX_H
#define SLUICE_CACHE_SLOT_INDEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/util.h"

#define SL_SLOT_INDEX_NONE UINT32_MAX

struct sl_slot_index {
  _Atomic uint64_t *cells;
  uint32_t size;
};

/* The hash a key is indexed under; compute it once per operation. */
static inline uint32_t sl_slot_index_hash(uint64_t key)
{
  return (uint32_t)(sl_mix64(key) >> 32);
}

static inline uint32_t sl_slot_index_home(const struct sl_slot_index *ix, uint32_t hash)
{
  return (uint32_t)(((uint64_t)hash * ix->size) >> 32);
}

/* Cells for SLOTS slots; false if out of memory or too large. */
static inline bool sl_slot_index_init(struct sl_slot_index *ix, uint32_t slots)
{
  uint64_t size = (uint64_t)slots + slots / 2 + 1; /* always one empty cell */
  ix->size = 0;
  ix->cells = NULL;
  if (size > UINT32_MAX)
    return false;
  ix->cells = calloc(size, sizeof *ix->cells);
  if (!ix->cells)
    return false;
  ix->size = (uint32_t)size;
  return true;
}

static inline void sl_slot_index_fini(struct sl_slot_index *ix)
{
  free(ix->cells);
  ix->cells = NULL;
}

static inline size_t sl_slot_index_bytes(const struct sl_slot_index *ix)
{
  return (size_t)ix->size * sizeof *ix->cells;
}

/* The slot holding KEY (whose hash is HASH), or SL_SLOT_INDEX_NONE.  *POS
 * (if not NULL) gets the cell, for sl_slot_index_remove_at. */
static inline uint32_t sl_slot_index_find(const struct sl_slot_index *ix,
                                          const _Atomic uint64_t *keys, uint64_t key,
                                          uint32_t hash, uint32_t *pos)
{
  uint32_t p = sl_slot_index_home(ix, hash);
  /* Bounded only against writers racing past a reader for ever. */
  for (uint32_t probes = 0; probes < ix->size; probes++) {
    uint64_t cell = atomic_load_explicit(&ix->cells[p], memory_order_acquire);
    if (cell == 0)
      return SL_SLOT_INDEX_NONE;
    if ((uint32_t)(cell >> 32) == hash) {
      uint32_t slot = (uint32_t)cell - 1;
      if (atomic_load_explicit(&keys[slot], memory_order_relaxed) == key) {
        if (pos)
          *pos = p;
        return slot;
      }
    }
    p = p + 1 == ix->size ? 0 : p + 1;
  }
  return SL_SLOT_INDEX_NONE;
}

/* Index SLOT under HASH (the caller knows the key is absent). */
static inline void sl_slot_index_insert(struct sl_slot_index *ix, uint32_t hash, uint32_t slot)
{
  uint32_t p = sl_slot_index_home(ix, hash);
  while (atomic_load_explicit(&ix->cells[p], memory_order_relaxed) != 0)
    p = p + 1 == ix->size ? 0 : p + 1;
  atomic_store_explicit(&ix->cells[p], (uint64_t)hash << 32 | (slot + 1u),
                        memory_order_release);
}

/* Distance from A forward to B, wrapping. */
static inline uint32_t sl_slot_index_dist(const struct sl_slot_index *ix, uint32_t a, uint32_t b)
{
  return b >= a ? b - a : b + ix->size - a;
}

/* Empty cell HOLE, shifting later cells of the run back so that no probe
 * sequence is broken. */
static inline void sl_slot_index_remove_at(struct sl_slot_index *ix, uint32_t hole)
{
  uint32_t j = hole;
  for (;;) {
    j = j + 1 == ix->size ? 0 : j + 1;
    uint64_t cell = atomic_load_explicit(&ix->cells[j], memory_order_relaxed);
    if (cell == 0)
      break;
    uint32_t home = sl_slot_index_home(ix, (uint32_t)(cell >> 32));
    if (sl_slot_index_dist(ix, home, j) >= sl_slot_index_dist(ix, hole, j)) {
      atomic_store_explicit(&ix->cells[hole], cell, memory_order_release);
      hole = j;
    }
  }
  atomic_store_explicit(&ix->cells[hole], 0, memory_order_release);
}

/* Number of occupied cells (for invariant checks). */
static inline uint32_t sl_slot_index_count(const struct sl_slot_index *ix)
{
  uint32_t n = 0;
  for (uint32_t i = 0; i < ix->size; i++)
    n += atomic_load_explicit(&ix->cells[i], memory_order_relaxed) != 0;
  return n;
}

#endif
