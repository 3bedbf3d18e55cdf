/* Belady's MIN: on a miss with a full cache, evict the resident block whose
 * next request lies furthest in the future (never requested again counts
 * as furthest).  The offline optimum for unit-size blocks, so it bounds
 * what any online policy can reach.
 *
 * The simulator hands every access the index of the block's next request.
 * Residents live in a max-heap keyed by that index; a hit does not search
 * the heap but pushes a fresh entry and lets the old one go stale (an
 * entry is live only while its node still carries the same next-use
 * index, and next-use indices are unique except "never").  The heap is
 * rebuilt from the residents when stale entries outnumber live ones.
 * As in libCacheSim (demand paging), the requested block is always
 * admitted, even when its own next use is the furthest.
 */
#include "sim/policy.h"
#include "sim/policy-common.h"

#define STALE (UINT64_MAX - 1)

enum { FREE, RESIDENT };

struct heap_entry {
  uint64_t next_use;
  uint32_t node;
};

struct belady {
  struct sl_simcache c;     /* first: see policy-common.h */
  uint64_t *node_next_use;
  struct heap_entry *heap;
  uint64_t heap_len, heap_cap;
};

static void belady_destroy(void *state)
{
  struct belady *b = state;
  if (!b)
    return;
  free(b->node_next_use);
  free(b->heap);
  sl_simcache_destroy(b);
}

static void *belady_create(uint64_t capacity)
{
  struct belady *b = sl_simcache_create(sizeof *b, capacity, capacity + 1);
  if (!b)
    return NULL;
  b->heap_cap = 2 * capacity + 64;
  b->heap = malloc(b->heap_cap * sizeof *b->heap);
  b->node_next_use = malloc((capacity + 1) * sizeof *b->node_next_use);
  if (!b->heap || !b->node_next_use) {
    belady_destroy(b);
    return NULL;
  }
  return b;
}

static void heap_sift_up(struct belady *b, uint64_t i)
{
  struct heap_entry e = b->heap[i];
  while (i > 0) {
    uint64_t parent = (i - 1) / 2;
    if (b->heap[parent].next_use >= e.next_use)
      break;
    b->heap[i] = b->heap[parent];
    i = parent;
  }
  b->heap[i] = e;
}

static void heap_sift_down(struct belady *b, uint64_t i)
{
  struct heap_entry e = b->heap[i];
  for (;;) {
    uint64_t child = 2 * i + 1;
    if (child >= b->heap_len)
      break;
    if (child + 1 < b->heap_len &&
        b->heap[child + 1].next_use > b->heap[child].next_use)
      child++;
    if (b->heap[child].next_use <= e.next_use)
      break;
    b->heap[i] = b->heap[child];
    i = child;
  }
  b->heap[i] = e;
}

/* Drop the stale entries: rebuild from the residents' current next use. */
static void heap_rebuild(struct belady *b)
{
  b->heap_len = 0;
  for (uint32_t n = 0; n < b->c.pool.size; n++)
    if (b->c.pool.where[n] == RESIDENT)
      b->heap[b->heap_len++] = (struct heap_entry){ b->node_next_use[n], n };
  for (uint64_t i = b->heap_len / 2; i-- > 0;)
    heap_sift_down(b, i);
}

static void heap_push(struct belady *b, uint64_t next_use, uint32_t node)
{
  if (b->heap_len == b->heap_cap)
    heap_rebuild(b);
  b->heap[b->heap_len] = (struct heap_entry){ next_use, node };
  heap_sift_up(b, b->heap_len++);
}

static void belady_evict(struct belady *b)
{
  for (;;) {
    struct heap_entry top = b->heap[0];
    b->heap[0] = b->heap[--b->heap_len];
    if (b->heap_len > 0)
      heap_sift_down(b, 0);
    uint32_t n = top.node;
    if (b->c.pool.where[n] != RESIDENT || b->node_next_use[n] != top.next_use)
      continue; /* stale */
    b->node_next_use[n] = STALE;
    sl_simcache_forget(&b->c, n);
    return;
  }
}

static bool belady_access(void *state, uint64_t block, uint64_t next_use)
{
  struct belady *b = state;
  uint32_t hit = sl_simcache_find(&b->c, block);
  if (hit != SL_NIL) {
    b->node_next_use[hit] = next_use;
    heap_push(b, next_use, hit);
    return true;
  }
  if (b->c.capacity == 0)
    return false;
  if (b->c.list[RESIDENT].len >= b->c.capacity)
    belady_evict(b);
  uint32_t n = sl_simcache_admit(&b->c, RESIDENT, block);
  b->node_next_use[n] = next_use;
  heap_push(b, next_use, n);
  return false;
}

const struct sl_sim_policy sl_sim_policy_belady = {
  .name = "belady",
  .description = "Belady's MIN, the offline optimum (needs the whole trace)",
  .needs_future = true,
  .create = belady_create,
  .access = belady_access,
  .destroy = belady_destroy,
};
