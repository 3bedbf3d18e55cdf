/* SIEVE (Zhang et al., NSDI'24): a FIFO queue with a visited bit and a hand
 * that moves from the oldest entry towards the newest.
 *
 * Unlike CLOCK, a visited block is not moved: the hand clears its bit and
 * passes on, so survivors keep their place and new blocks (inserted at the
 * head) are the first to be examined after the hand wraps.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

struct sieve {
  struct sl_simcache c;   /* first: see policy-common.h */
  uint32_t hand;          /* SL_NIL: start from the tail */
};

static void *sieve_create(uint64_t capacity)
{
  struct sieve *s = sl_simcache_create(sizeof *s, capacity, capacity + 1);
  if (s)
    s->hand = SL_NIL;
  return s;
}

static void sieve_evict(void *state)
{
  struct sieve *s = state;
  struct sl_simcache *c = &s->c;
  uint32_t n = s->hand != SL_NIL ? s->hand : c->list[0].tail;
  while (c->pool.freq[n]) {
    c->pool.freq[n] = 0;
    n = c->pool.prev[n] != SL_NIL ? c->pool.prev[n] : c->list[0].tail;
  }
  s->hand = c->pool.prev[n];
  sl_simcache_forget(c, n);
}

static bool sieve_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  return sl_simcache_access_one_list(state, block,
                                     sl_simcache_mark_referenced, sieve_evict);
}

const struct sl_sim_policy sl_sim_policy_sieve = {
  .name = "sieve",
  .description = "SIEVE: FIFO with a visited bit and a non-moving hand",
  .create = sieve_create,
  .access = sieve_access,
  .destroy = sl_simcache_destroy,
};
