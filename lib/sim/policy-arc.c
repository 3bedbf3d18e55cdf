/* ARC (Megiddo & Modha, FAST'03): two LRU lists, T1 for blocks seen once
 * recently and T2 for blocks seen at least twice, plus their ghosts B1
 * and B2.  A hit in a ghost list shifts the target size P of T1 towards
 * the list that would have hit, so the split between recency and
 * frequency adapts to the workload.  Written from the paper's pseudocode.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

enum { NONE, T1, T2, B1, B2 };

struct arc {
  struct sl_simcache c;   /* first: see policy-common.h; capacity is ARC's c */
  double p;
};

static void *arc_create(uint64_t capacity)
{
  return sl_simcache_create(sizeof(struct arc), capacity, 2 * capacity + 2);
}

/* Demote the LRU of T1 or T2 to its ghost list, as the paper's REPLACE. */
static void replace(struct arc *a, bool in_b2)
{
  struct sl_simcache *c = &a->c;
  uint64_t t1 = c->list[T1].len;
  if (t1 >= 1 && ((in_b2 && (double)t1 == a->p) || (double)t1 > a->p))
    sl_simcache_move(c, c->list[T1].tail, B1);
  else if (c->list[T2].len > 0)
    sl_simcache_move(c, c->list[T2].tail, B2);
  else
    sl_simcache_move(c, c->list[T1].tail, B1);
}

static bool arc_access(void *state, uint64_t block, uint64_t next_use)
{
  struct arc *a = state;
  struct sl_simcache *c = &a->c;
  (void)next_use;
  uint32_t n = sl_simcache_find(c, block);
  int where = n == SL_NIL ? NONE : c->pool.where[n];
  if (where == T1 || where == T2) {
    sl_simcache_move(c, n, T2);
    return true;
  }
  uint64_t cap = c->capacity;
  if (cap == 0)
    return false;
  uint64_t b1 = c->list[B1].len, b2 = c->list[B2].len;
  if (where == B1) {
    double delta = b1 >= b2 ? 1.0 : (double)b2 / (double)b1;
    a->p = a->p + delta < (double)cap ? a->p + delta : (double)cap;
    replace(a, false);
    sl_simcache_move(c, n, T2);
    return false;
  }
  if (where == B2) {
    double delta = b2 >= b1 ? 1.0 : (double)b1 / (double)b2;
    a->p = a->p - delta > 0 ? a->p - delta : 0;
    replace(a, true);
    sl_simcache_move(c, n, T2);
    return false;
  }
  uint64_t t1 = c->list[T1].len, t2 = c->list[T2].len;
  if (t1 + b1 == cap) {
    if (t1 < cap) {
      sl_simcache_forget(c, c->list[B1].tail);
      replace(a, false);
    } else {
      sl_simcache_forget(c, c->list[T1].tail);
    }
  } else if (t1 + t2 + b1 + b2 >= cap) {
    if (t1 + t2 + b1 + b2 == 2 * cap)
      sl_simcache_forget(c, c->list[B2].tail);
    replace(a, false);
  }
  sl_simcache_admit(c, T1, block);
  return false;
}

const struct sl_sim_policy sl_sim_policy_arc = {
  .name = "arc",
  .description = "ARC: adaptive split between recency and frequency",
  .create = arc_create,
  .access = arc_access,
  .destroy = sl_simcache_destroy,
};
