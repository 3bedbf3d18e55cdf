/* A frequency sketch for TinyLFU admission: a count-min sketch of 4-bit
 * counters with periodic halving, behind a doorkeeper.
 *
 * TinyLFU (Einziger, Friedman & Manes, 2017) admits a block into the main
 * cache only if it has been seen more often than the block it would
 * replace.  It needs an approximate, ageing frequency for every block
 * seen recently, resident or not, in far less memory than a counter per
 * block id:
 *  - four rows of 4-bit counters (16 to a 64-bit word), each row indexed
 *    by its own hash of the block; the estimate is the smallest of the
 *    four, so collisions can only over-count, and 15 is the ceiling
 *    (admission compares small counts; a larger range buys nothing);
 *  - a doorkeeper (one bit per slot of a Bloom filter) in front: the first
 *    sighting of a block sets the bit and leaves the counters alone, so
 *    the one-hit wonders that dominate block traces do not fill the
 *    counters; the estimate adds one for a block the doorkeeper holds;
 *  - ageing: every counter is halved and the doorkeeper cleared when a
 *    caller-chosen number of events has been counted, so yesterday's hot
 *    set does not keep out today's.
 *
 * Header-only and single-threaded: the simulator's W-TinyLFU owns one, and
 * each twophase shard one, used only under its eviction lock.
 */
#ifndef SLUICE_CACHE_SKETCH_H
#define SLUICE_CACHE_SKETCH_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/util.h"

struct sl_sketch {
  uint64_t *rows;      /* 4 rows of (mask + 1) 4-bit counters */
  uint64_t *door;      /* doorkeeper bits, (mask + 1) * 2 of them */
  uint64_t mask;       /* counters per row - 1 (a power of two - 1) */
  uint64_t row_words;  /* 64-bit words per row */
};

/* The block hash every table keyed by block uses (common/util.h). */
static inline uint64_t sl_sketch_mix(uint64_t x)
{
  return sl_mix64(x);
}

/* Each row gets the next power of two >= WIDTH counters (and at least
 * 32): W-TinyLFU gives 4 x its capacity (8 bytes per block over the four
 * rows, as Caffeine sizes its sketch), twophase its capacity (2 to 4
 * bytes per block, within its metadata budget).  -ENOMEM on failure. */
static inline int sl_sketch_init(struct sl_sketch *s, uint64_t width)
{
  uint64_t n = 32;
  while (n < width)
    n <<= 1;
  s->mask = n - 1;
  s->row_words = n / 16;
  s->rows = calloc(4 * s->row_words, sizeof *s->rows);
  s->door = calloc(n * 2 / 64, sizeof *s->door);
  if (!s->rows || !s->door) {
    free(s->rows);
    free(s->door);
    return -ENOMEM;
  }
  return 0;
}

/* Bytes the sketch allocated. */
static inline size_t sl_sketch_bytes(const struct sl_sketch *s)
{
  return (size_t)(4 * s->row_words + (s->mask + 1) * 2 / 64) * 8;
}

static inline void sl_sketch_free(struct sl_sketch *s)
{
  free(s->rows);
  free(s->door);
  s->rows = s->door = NULL;
}

/* The counter of BLOCK in row R: word index and shift.  H is already a
 * full mix of the block, so each row takes bits 32 and up of H times its
 * own odd constant (multiply-shift hashing): one multiply a row.  Until
 * 2026-12-07 each row mixed H again (sl_mix64 of H plus a row constant);
 * twophase counts and estimates on every miss and demotion under its
 * lock, and the four mixes were about a sixth of its miss path's
 * instructions (docs/benchmarks.md). */
static inline void sl_sketch_cell(const struct sl_sketch *s, uint64_t h,
                                  int r, uint64_t *word, unsigned *shift)
{
  static const uint64_t odd[4] = {0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
                                  0x165667b19e3779f9ULL, 0xd6e8feb86659fd93ULL};
  uint64_t i = ((h * odd[r]) >> 32) & s->mask;
  *word = (uint64_t)r * s->row_words + i / 16;
  *shift = (unsigned)(i % 16) * 4;
}

/* Two doorkeeper bits per block (a Bloom filter with k = 2). */
static inline bool sl_sketch_door_has(const struct sl_sketch *s, uint64_t h)
{
  uint64_t bits = (s->mask + 1) * 2 - 1;
  uint64_t a = h & bits, b = (h >> 32) & bits;
  return (s->door[a / 64] >> (a % 64) & 1) && (s->door[b / 64] >> (b % 64) & 1);
}

static inline void sl_sketch_door_set(struct sl_sketch *s, uint64_t h)
{
  uint64_t bits = (s->mask + 1) * 2 - 1;
  uint64_t a = h & bits, b = (h >> 32) & bits;
  s->door[a / 64] |= 1ULL << (a % 64);
  s->door[b / 64] |= 1ULL << (b % 64);
}

/* How often BLOCK was counted since the last halving, roughly (0..16). */
static inline unsigned sl_sketch_estimate(const struct sl_sketch *s,
                                          uint64_t block)
{
  uint64_t h = sl_sketch_mix(block);
  unsigned min = 15;
  for (int r = 0; r < 4; r++) {
    uint64_t w;
    unsigned sh;
    sl_sketch_cell(s, h, r, &w, &sh);
    unsigned v = (unsigned)(s->rows[w] >> sh) & 15;
    if (v < min)
      min = v;
  }
  return min + (sl_sketch_door_has(s, h) ? 1 : 0);
}

/* Count one sighting of BLOCK. */
static inline void sl_sketch_add(struct sl_sketch *s, uint64_t block)
{
  uint64_t h = sl_sketch_mix(block);
  if (!sl_sketch_door_has(s, h)) {
    sl_sketch_door_set(s, h);
    return;
  }
  for (int r = 0; r < 4; r++) {
    uint64_t w;
    unsigned sh;
    sl_sketch_cell(s, h, r, &w, &sh);
    if (((s->rows[w] >> sh) & 15) < 15)
      s->rows[w] += 1ULL << sh;
  }
}

/* Age: halve every counter, empty the doorkeeper. */
static inline void sl_sketch_halve(struct sl_sketch *s)
{
  for (uint64_t i = 0; i < 4 * s->row_words; i++)
    s->rows[i] = (s->rows[i] >> 1) & 0x7777777777777777ULL;
  for (uint64_t i = 0; i < (s->mask + 1) * 2 / 64; i++)
    s->door[i] = 0;
}

#endif
