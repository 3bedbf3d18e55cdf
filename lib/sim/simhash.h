/* An open-addressing hash index from a 64-bit block id to a 32-bit slot,
 * shared by the simulator's policies.
 *
 * Why not a chained table: the policies replay millions of requests and
 * every one does a lookup; linear probing over two flat arrays is the
 * cache-friendly choice, and deletion by backward shift keeps probe chains
 * short without tombstones.  The table is sized once for the most entries
 * the policy can hold (at most half full), so it never grows.
 */
#ifndef SLUICE_SIM_SIMHASH_H
#define SLUICE_SIM_SIMHASH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include <stdlib.h>

#define SL_SIMHASH_EMPTY UINT32_MAX

struct sl_simhash {
  uint64_t *keys;
  uint32_t *vals;   /* SL_SIMHASH_EMPTY marks a free bucket */
  uint64_t mask;
  uint64_t count;
};

static inline uint64_t sl_simhash_mix(uint64_t x)
{
  return sl_mix64(x); /* block numbers are sequential: spread them */
}

/* Room for MAX_ENTRIES at a load factor of at most 1/2.  0 or -ENOMEM. */
static inline int sl_simhash_init(struct sl_simhash *h, uint64_t max_entries)
{
  uint64_t size = 16;
  while (size < 2 * max_entries + 2)
    size <<= 1;
  h->keys = malloc(size * sizeof *h->keys);
  h->vals = malloc(size * sizeof *h->vals);
  if (!h->keys || !h->vals) {
    free(h->keys);
    free(h->vals);
    h->keys = NULL;
    h->vals = NULL;
    return -12;
  }
  for (uint64_t i = 0; i < size; i++)
    h->vals[i] = SL_SIMHASH_EMPTY;
  h->mask = size - 1;
  h->count = 0;
  return 0;
}

static inline void sl_simhash_free(struct sl_simhash *h)
{
  free(h->keys);
  free(h->vals);
  h->keys = NULL;
  h->vals = NULL;
}

/* The slot stored for KEY, or SL_SIMHASH_EMPTY. */
static inline uint32_t sl_simhash_get(const struct sl_simhash *h, uint64_t key)
{
  for (uint64_t i = sl_simhash_mix(key) & h->mask;; i = (i + 1) & h->mask) {
    if (h->vals[i] == SL_SIMHASH_EMPTY)
      return SL_SIMHASH_EMPTY;
    if (h->keys[i] == key)
      return h->vals[i];
  }
}

/* Insert or overwrite. */
static inline void sl_simhash_put(struct sl_simhash *h, uint64_t key,
                                  uint32_t val)
{
  for (uint64_t i = sl_simhash_mix(key) & h->mask;; i = (i + 1) & h->mask) {
    if (h->vals[i] == SL_SIMHASH_EMPTY) {
      h->keys[i] = key;
      h->vals[i] = val;
      h->count++;
      return;
    }
    if (h->keys[i] == key) {
      h->vals[i] = val;
      return;
    }
  }
}

/* Remove KEY if present (backward-shift deletion, no tombstones). */
static inline bool sl_simhash_del(struct sl_simhash *h, uint64_t key)
{
  uint64_t i = sl_simhash_mix(key) & h->mask;
  for (;; i = (i + 1) & h->mask) {
    if (h->vals[i] == SL_SIMHASH_EMPTY)
      return false;
    if (h->keys[i] == key)
      break;
  }
  h->count--;
  for (uint64_t j = (i + 1) & h->mask;; j = (j + 1) & h->mask) {
    if (h->vals[j] == SL_SIMHASH_EMPTY)
      break;
    uint64_t home = sl_simhash_mix(h->keys[j]) & h->mask;
    /* Move J back into the hole at I unless its home lies cyclically in
     * (I, J]: then it is already as close to home as it can be. */
    bool home_between = i <= j ? (home > i && home <= j)
                               : (home > i || home <= j);
    if (!home_between) {
      h->keys[i] = h->keys[j];
      h->vals[i] = h->vals[j];
      i = j;
    }
  }
  h->vals[i] = SL_SIMHASH_EMPTY;
  return true;
}

#endif
