/* twophase-shard: one shard of the twophase structure, internal to
 * lib/cache.  twophase.c (the public API of twophase.h) routes each key to
 * one shard and each slot to the shard that owns it; a shard is the whole
 * replacement engine (cold FIFO, ghost, hot clock ring) for its share of
 * the cache, with its own eviction lock.
 *
 * Slots here are the shard's own, numbered from 0; twophase.c adds the
 * shard's base.  Every function taking a key also takes HASH, which must be
 * sl_slot_index_hash(KEY): the caller computes it once per operation.
 * Parameters, results and thread safety are those of the matching
 * sl_twophase_* function in twophase.h, for this shard's keys and slots. */
#ifndef SLUICE_CACHE_TWOPHASE_SHARD_H
#define SLUICE_CACHE_TWOPHASE_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/twophase.h"

struct sl_tp_shard;

/* CAPACITY slots; P's capacity and shards are ignored, the rest (cold and
 * ghost fractions, adaptive, cold_hit) apply to this shard alone.  OWNER
 * identifies the whole structure (its shards share a request count): a
 * number no other structure of the process has. */
struct sl_tp_shard *sl_tp_shard_create(const struct sl_twophase_params *p, uint32_t capacity,
                                       uint64_t owner);
void sl_tp_shard_destroy(struct sl_tp_shard *t);
uint32_t sl_tp_shard_capacity(const struct sl_tp_shard *t);

/* Requests are reported by sl_tp_count_requests into a per-thread count
 * for OWNER (the whole structure); an insert credits that count to this
 * shard's hill climber if it is this shard's owner's, see
 * twophase-shard.c.  Lookups count nothing.  access: lookup, and insert
 * on a miss; true on a hit. */
void sl_tp_count_requests(uint64_t owner, uint64_t n);
uint32_t sl_tp_shard_lookup(struct sl_tp_shard *t, uint64_t key, uint32_t hash);
uint32_t sl_tp_shard_insert(struct sl_tp_shard *t, uint64_t key, uint32_t hash, bool pin,
                            uint64_t *evicted, bool *did_evict);
bool sl_tp_shard_access(struct sl_tp_shard *t, uint64_t key, uint32_t hash);
uint32_t sl_tp_shard_pin(struct sl_tp_shard *t, uint64_t key, uint32_t hash);
void sl_tp_shard_unpin(struct sl_tp_shard *t, uint32_t slot);
bool sl_tp_shard_remove(struct sl_tp_shard *t, uint64_t key, uint32_t hash);
char sl_tp_shard_where(struct sl_tp_shard *t, uint32_t slot);
uint64_t sl_tp_shard_slot_key(struct sl_tp_shard *t, uint32_t slot);
bool sl_tp_shard_in_ghost(struct sl_tp_shard *t, uint64_t key);
uint32_t sl_tp_shard_test_hand_step(struct sl_tp_shard *t, uint64_t *evicted,
                                    bool *did_evict);

/* Stats of this shard alone; ref_stores is the calling thread's count over
 * all shards (it is kept per thread, not per shard). */
void sl_tp_shard_get_stats(struct sl_tp_shard *t, struct sl_twophase_stats *s);
/* Metadata bytes that grow with the shard's capacity (slots, cold ring,
 * index); the ghost is reported per entry. */
size_t sl_tp_shard_meta_bytes(struct sl_tp_shard *t);
int sl_tp_shard_check(struct sl_tp_shard *t, char *msg, size_t len);

#endif
