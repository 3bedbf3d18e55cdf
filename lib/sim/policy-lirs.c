/* LIRS (Jiang & Zhang, SIGMETRICS'02), written from the paper's
 * description.
 *
 * LRU ranks a block by its recency; LIRS ranks it by its inter-reference
 * recency (IRR: how many other distinct blocks were touched between its
 * last two accesses), and keeps the blocks with a low IRR -- the LIR set
 * -- resident whatever happens to the rest.  The cache is split into
 * Llirs blocks for LIR blocks and Lhirs (here 1% of the cache, at least
 * two blocks, as the paper suggests) for resident HIR blocks, which are
 * the only candidates for eviction.
 *
 * Two structures carry the state:
 *  - stack S, ordered by recency, holds the LIR blocks and every HIR
 *    block (resident or not) more recent than the least recent LIR
 *    block.  "Pruning" removes HIR blocks from the bottom so that the
 *    bottom is always a LIR block; a block found in S therefore has an
 *    IRR lower than the bottom LIR block's recency, and earns LIR status;
 *  - queue Q holds the resident HIR blocks; its front is the next victim.
 *
 * An access to a LIR block moves it to the top of S (pruning if it was at
 * the bottom).  An access to a HIR block found in S makes it LIR and
 * turns the bottom LIR block into a resident HIR block at the end of Q;
 * one not in S stays HIR, goes to the top of S and to the end of Q.  A
 * miss first evicts the front of Q (its entry stays in S, non-resident, if
 * it is there) and then treats the new block like a HIR access.  Until
 * the LIR set is full, every missed block simply becomes LIR.
 *
 * The paper lets S hold any number of non-resident entries; a simulator
 * with a preallocated pool needs a bound.  As in CLOCK-Pro (the same
 * authors' follow-up), at most as many non-resident blocks as the cache
 * holds are remembered: they are kept, in the order they left the cache,
 * on a ghost list threaded through the same links as Q (a non-resident
 * block is never in Q), and the oldest is dropped from S when there are
 * more.  With this bound the miss ratios agree with libCacheSim's LIRS in
 * shared/traces/ANCHORS.md (docs/benchmarks.md has the comparison); an
 * unbounded S does better on some traces and worse on others.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

/* where[]: a node's status.  freq[]: 1 while the node is in S. */
enum { FREE, LIR, HIR, GHOST };
enum { STACK };   /* S lives in list[STACK] on the pool's own links */

/* Non-resident entries remembered, per block of cache. */
#define GHOST_FACTOR 1

struct lirs {
  struct sl_simcache c;     /* first: see policy-common.h */
  struct sl_links qlink;    /* second links, for Q and the ghost list */
  struct sl_list q;         /* resident HIR blocks: head = end, tail = front */
  struct sl_list ghosts;    /* non-resident blocks in S: head = newest */
  uint64_t lir_cap, lir_count, ghost_cap;
};

static void lirs_destroy(void *state)
{
  struct lirs *l = state;
  if (!l)
    return;
  free(l->qlink.prev);
  free(l->qlink.next);
  sl_simcache_destroy(l);
}

/* Lhirs: 1% of the cache but at least 2 blocks, leaving at least one LIR
 * block (a cache of one block has no LIR set and acts as LRU). */
static uint64_t hir_share(uint64_t capacity)
{
  uint64_t hir = capacity / 100 < 2 ? 2 : capacity / 100;
  if (hir >= capacity)
    hir = capacity > 1 ? capacity - 1 : capacity;
  return hir;
}

static void *lirs_create(uint64_t capacity)
{
  uint64_t ghost_cap = GHOST_FACTOR * capacity;
  uint64_t nodes = capacity + ghost_cap + 1;
  struct lirs *l = sl_simcache_create(sizeof *l, capacity, nodes);
  if (!l)
    return NULL;
  l->qlink.prev = malloc(l->c.pool.size * sizeof *l->qlink.prev);
  l->qlink.next = malloc(l->c.pool.size * sizeof *l->qlink.next);
  if (!l->qlink.prev || !l->qlink.next) {
    lirs_destroy(l);
    return NULL;
  }
  sl_list_init(&l->q);
  sl_list_init(&l->ghosts);
  l->lir_cap = capacity - hir_share(capacity);
  l->ghost_cap = ghost_cap;
  return l;
}

static bool in_stack(const struct lirs *l, uint32_t n)
{
  return l->c.pool.freq[n];
}

/* With no LIR set (a one-block cache) S stays empty: there is no bottom
 * LIR block to measure against. */
static void stack_push(struct lirs *l, uint32_t n)
{
  if (l->lir_cap == 0)
    return;
  sl_list_push_head(&l->c.pool, &l->c.list[STACK], n);
  l->c.pool.freq[n] = 1;
}

static void stack_remove(struct lirs *l, uint32_t n)
{
  sl_list_remove(&l->c.pool, &l->c.list[STACK], n);
  l->c.pool.freq[n] = 0;
}

/* Drop a non-resident block from every structure. */
static void forget_ghost(struct lirs *l, uint32_t n)
{
  sl_links_remove(l->qlink, &l->ghosts, n);
  if (in_stack(l, n))
    stack_remove(l, n);
  sl_simhash_del(&l->c.index, l->c.pool.key[n]);
  l->c.pool.where[n] = FREE;
  sl_pool_release(&l->c.pool, n);
}

/* Remove HIR blocks from the bottom of S until a LIR block is there. */
static void prune(struct lirs *l)
{
  struct sl_list *s = &l->c.list[STACK];
  while (s->tail != SL_NIL && l->c.pool.where[s->tail] != LIR) {
    uint32_t n = s->tail;
    stack_remove(l, n);
    if (l->c.pool.where[n] == GHOST)
      forget_ghost(l, n); /* out of S, it carries no information */
  }
}

/* A block just became LIR: the LIR block at the bottom of S becomes a
 * resident HIR block at the end of Q, and S is pruned. */
static void demote_bottom(struct lirs *l)
{
  uint32_t n = l->c.list[STACK].tail;
  stack_remove(l, n);
  l->c.pool.where[n] = HIR;
  sl_links_push_head(l->qlink, &l->q, n);
  l->lir_count--;
  prune(l);
}

/* N (in S, resident or just admitted) becomes LIR at the top of S. */
static void promote(struct lirs *l, uint32_t n)
{
  sl_list_move_head(&l->c.pool, &l->c.list[STACK], n);
  l->c.pool.where[n] = LIR;
  l->lir_count++;
  demote_bottom(l);
}

/* Evict the front of Q; it stays in S as a non-resident block if it is
 * there, else it is forgotten. */
static void evict(struct lirs *l)
{
  uint32_t v = l->q.tail;
  sl_links_remove(l->qlink, &l->q, v);
  l->c.pool.where[v] = GHOST;
  sl_links_push_head(l->qlink, &l->ghosts, v);
  if (!in_stack(l, v))
    forget_ghost(l, v);
  else if (l->ghosts.len > l->ghost_cap)
    forget_ghost(l, l->ghosts.tail);
}

/* A node for a block not remembered at all, with STATUS, in no list yet. */
static uint32_t admit(struct lirs *l, uint64_t block, int status)
{
  uint32_t n = sl_pool_alloc(&l->c.pool, block);
  sl_simhash_put(&l->c.index, block, n);
  l->c.pool.where[n] = (uint8_t)status;
  return n;
}

static bool hit(struct lirs *l, uint32_t n)
{
  struct sl_list *s = &l->c.list[STACK];
  if (l->c.pool.where[n] == LIR) {
    bool was_bottom = s->tail == n;
    sl_list_move_head(&l->c.pool, s, n);
    if (was_bottom)
      prune(l);
  } else if (in_stack(l, n)) {
    sl_links_remove(l->qlink, &l->q, n);
    promote(l, n);
  } else {
    stack_push(l, n);
    sl_links_move_head(l->qlink, &l->q, n);
  }
  return true;
}

static bool lirs_access(void *state, uint64_t block, uint64_t next_use)
{
  struct lirs *l = state;
  struct sl_simcache *c = &l->c;
  (void)next_use;
  uint32_t n = sl_simcache_find(c, block);
  if (n != SL_NIL && c->pool.where[n] != GHOST)
    return hit(l, n);
  if (c->capacity == 0)
    return false;
  if (l->lir_count < l->lir_cap) {
    /* Filling the LIR set; nothing has been evicted, so BLOCK is new. */
    stack_push(l, admit(l, block, LIR));
    l->lir_count++;
    return false;
  }
  if (n != SL_NIL) /* non-resident, in S: about to be resident again */
    sl_links_remove(l->qlink, &l->ghosts, n);
  if (l->lir_count + l->q.len >= c->capacity)
    evict(l);
  if (n != SL_NIL) {
    promote(l, n);
    return false;
  }
  n = admit(l, block, HIR);
  stack_push(l, n);
  sl_links_push_head(l->qlink, &l->q, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_lirs = {
  .name = "lirs",
  .description = "LIRS: keeps blocks of low inter-reference recency",
  .create = lirs_create,
  .access = lirs_access,
  .destroy = lirs_destroy,
};
