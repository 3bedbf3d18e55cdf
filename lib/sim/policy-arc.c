/* ARC (Megiddo & Modha, FAST'03): two LRU lists, T1 for blocks seen once
 * recently and T2 for blocks seen at least twice, plus their ghosts B1
 * and B2.  A hit in a ghost list shifts the target size P of T1 towards
 * the list that would have hit, so the split between recency and
 * frequency adapts to the workload.  Written from the paper's pseudocode.
 */
#include "sim/policy.h"
#include "sim/simhash.h"
#include "sim/simlist.h"

enum { NONE, T1, T2, B1, B2 };

struct arc {
  uint64_t c;
  double p;
  struct sl_pool pool;
  struct sl_list list[5];
  struct sl_simhash index;
};

static void arc_destroy(void *state)
{
  struct arc *a = state;
  if (!a)
    return;
  sl_pool_free(&a->pool);
  sl_simhash_free(&a->index);
  free(a);
}

static void *arc_create(uint64_t capacity)
{
  struct arc *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  a->c = capacity;
  for (int i = 0; i < 5; i++)
    sl_list_init(&a->list[i]);
  if (sl_pool_init(&a->pool, 2 * capacity + 2) < 0) {
    free(a);
    return NULL;
  }
  if (sl_simhash_init(&a->index, 2 * capacity + 2) < 0) {
    sl_pool_free(&a->pool);
    free(a);
    return NULL;
  }
  return a;
}

static void move_to(struct arc *a, uint32_t n, int to)
{
  sl_list_remove(&a->pool, &a->list[a->pool.where[n]], n);
  a->pool.where[n] = (uint8_t)to;
  sl_list_push_head(&a->pool, &a->list[to], n);
}

static void drop_lru(struct arc *a, int from)
{
  uint32_t n = a->list[from].tail;
  sl_list_remove(&a->pool, &a->list[from], n);
  sl_simhash_del(&a->index, a->pool.key[n]);
  sl_pool_release(&a->pool, n);
}

/* Demote the LRU of T1 or T2 to its ghost list, as the paper's REPLACE. */
static void replace(struct arc *a, bool in_b2)
{
  uint64_t t1 = a->list[T1].len;
  if (t1 >= 1 && ((in_b2 && (double)t1 == a->p) || (double)t1 > a->p))
    move_to(a, a->list[T1].tail, B1);
  else if (a->list[T2].len > 0)
    move_to(a, a->list[T2].tail, B2);
  else
    move_to(a, a->list[T1].tail, B1);
}

static bool arc_access(void *state, uint64_t block, uint64_t next_use)
{
  struct arc *a = state;
  (void)next_use;
  uint32_t n = sl_simhash_get(&a->index, block);
  int where = n == SL_SIMHASH_EMPTY ? NONE : a->pool.where[n];
  if (where == T1 || where == T2) {
    move_to(a, n, T2);
    return true;
  }
  if (a->c == 0)
    return false;
  uint64_t b1 = a->list[B1].len, b2 = a->list[B2].len;
  if (where == B1) {
    double delta = b1 >= b2 ? 1.0 : (double)b2 / (double)b1;
    a->p = a->p + delta < (double)a->c ? a->p + delta : (double)a->c;
    replace(a, false);
    move_to(a, n, T2);
    return false;
  }
  if (where == B2) {
    double delta = b2 >= b1 ? 1.0 : (double)b1 / (double)b2;
    a->p = a->p - delta > 0 ? a->p - delta : 0;
    replace(a, true);
    move_to(a, n, T2);
    return false;
  }
  uint64_t t1 = a->list[T1].len, t2 = a->list[T2].len;
  if (t1 + b1 == a->c) {
    if (t1 < a->c) {
      drop_lru(a, B1);
      replace(a, false);
    } else {
      drop_lru(a, T1);
    }
  } else if (t1 + t2 + b1 + b2 >= a->c) {
    if (t1 + t2 + b1 + b2 == 2 * a->c)
      drop_lru(a, B2);
    replace(a, false);
  }
  n = sl_pool_alloc(&a->pool, block);
  a->pool.where[n] = T1;
  sl_list_push_head(&a->pool, &a->list[T1], n);
  sl_simhash_put(&a->index, block, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_arc = {
  .name = "arc",
  .description = "ARC: adaptive split between recency and frequency",
  .create = arc_create,
  .access = arc_access,
  .destroy = arc_destroy,
};
