/* The skeleton the simulator's policies share: a capacity, one pool of
 * nodes for resident and ghost entries, the hash index from block id to
 * node, and a few lists threaded through the pool.
 *
 * Every policy used to repeat the same create/destroy pair and the same
 * "allocate a node, put it on a list, index it" and "unlink, unindex,
 * release" sequences; here they are written once.  A policy's state is a
 * struct whose FIRST member is a struct sl_simcache, so the common
 * create/destroy can allocate and free it without knowing the rest.
 *
 * A node's where[] byte says which list it is on and indexes list[]:
 * policies name their lists with an enum (FIFO uses list 0 only; ARC
 * keeps list 0 for "not cached" and T1, T2, B1, B2 in 1..4).
 */
#ifndef SLUICE_SIM_POLICY_COMMON_H
#define SLUICE_SIM_POLICY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/simhash.h"
#include "sim/simlist.h"

#define SL_SIMCACHE_LISTS 5

struct sl_simcache {
  uint64_t capacity;          /* resident blocks at most */
  struct sl_pool pool;        /* resident and ghost entries */
  struct sl_simhash index;    /* block id -> node */
  struct sl_list list[SL_SIMCACHE_LISTS];
};

/* A zeroed state of SIZE bytes starting with a struct sl_simcache, with
 * room for NODES entries (the most the policy ever holds, ghosts
 * included), all lists empty.  NULL if out of memory. */
void *sl_simcache_create(size_t size, uint64_t capacity, uint64_t nodes);
/* Free what sl_simcache_create allocated (NULL is fine); usable as a
 * policy's destroy when it allocates nothing more. */
void sl_simcache_destroy(void *state);

/* The node holding BLOCK, or SL_NIL. */
static inline uint32_t sl_simcache_find(const struct sl_simcache *c,
                                        uint64_t block)
{
  return sl_simhash_get(&c->index, block);
}

/* Take a node for BLOCK, put it at the head of list WHERE, index it. */
static inline uint32_t sl_simcache_admit(struct sl_simcache *c, int where,
                                         uint64_t block)
{
  uint32_t n = sl_pool_alloc(&c->pool, block);
  c->pool.where[n] = (uint8_t)where;
  sl_list_push_head(&c->pool, &c->list[where], n);
  sl_simhash_put(&c->index, block, n);
  return n;
}

/* Drop node N entirely: off its list, out of the index, back to the pool
 * (with where[] cleared, so a scan of the pool sees it as unused). */
static inline void sl_simcache_forget(struct sl_simcache *c, uint32_t n)
{
  sl_list_remove(&c->pool, &c->list[c->pool.where[n]], n);
  sl_simhash_del(&c->index, c->pool.key[n]);
  c->pool.where[n] = 0;
  sl_pool_release(&c->pool, n);
}

/* Move node N from its list to the head of list TO. */
static inline void sl_simcache_move(struct sl_simcache *c, uint32_t n, int to)
{
  sl_list_remove(&c->pool, &c->list[c->pool.where[n]], n);
  c->pool.where[n] = (uint8_t)to;
  sl_list_push_head(&c->pool, &c->list[to], n);
}

/* Hit and eviction steps that several single-list policies share. */
static inline void sl_simcache_mark_referenced(void *state, uint32_t n)
{
  ((struct sl_simcache *)state)->pool.freq[n] = 1;
}

static inline void sl_simcache_evict_tail(void *state)
{
  struct sl_simcache *c = state;
  sl_simcache_forget(c, c->list[0].tail);
}

/* The whole access of a policy that keeps every resident block on list 0
 * and differs from the others only in what a hit does (ON_HIT, or nothing
 * if NULL) and which block a full cache gives up (EVICT): FIFO, LRU,
 * CLOCK, SIEVE.  STATE starts with the struct sl_simcache. */
static inline bool sl_simcache_access_one_list(
  void *state, uint64_t block, void (*on_hit)(void *state, uint32_t n),
  void (*evict)(void *state))
{
  struct sl_simcache *c = state;
  uint32_t n = sl_simcache_find(c, block);
  if (n != SL_NIL) {
    if (on_hit)
      on_hit(state, n);
    return true;
  }
  if (c->capacity == 0)
    return false;
  if (c->list[0].len >= c->capacity)
    evict(state);
  sl_simcache_admit(c, 0, block);
  return false;
}

#endif
