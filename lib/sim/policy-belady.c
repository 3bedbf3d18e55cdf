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
#include "sim/simhash.h"
#include "sim/simlist.h"

#define STALE (UINT64_MAX - 1)

struct heap_entry {
  uint64_t next_use;
  uint32_t node;
};

struct belady {
  uint64_t capacity, resident;
  struct sl_pool pool;
  uint64_t *node_next_use;
  struct sl_simhash index;
  struct heap_entry *heap;
  uint64_t heap_len, heap_cap;
};

static void belady_destroy(void *state)
{
  struct belady *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c->node_next_use);
  free(c->heap);
  free(c);
}

static void *belady_create(uint64_t capacity)
{
  struct belady *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  c->heap_cap = 2 * capacity + 64;
  c->heap = malloc(c->heap_cap * sizeof *c->heap);
  c->node_next_use = malloc((capacity + 1) * sizeof *c->node_next_use);
  if (!c->heap || !c->node_next_use ||
      sl_pool_init(&c->pool, capacity + 1) < 0) {
    free(c->heap);
    free(c->node_next_use);
    free(c);
    return NULL;
  }
  if (sl_simhash_init(&c->index, capacity + 1) < 0) {
    sl_pool_free(&c->pool);
    free(c->heap);
    free(c->node_next_use);
    free(c);
    return NULL;
  }
  return c;
}

static void heap_sift_up(struct belady *c, uint64_t i)
{
  struct heap_entry e = c->heap[i];
  while (i > 0) {
    uint64_t parent = (i - 1) / 2;
    if (c->heap[parent].next_use >= e.next_use)
      break;
    c->heap[i] = c->heap[parent];
    i = parent;
  }
  c->heap[i] = e;
}

static void heap_sift_down(struct belady *c, uint64_t i)
{
  struct heap_entry e = c->heap[i];
  for (;;) {
    uint64_t child = 2 * i + 1;
    if (child >= c->heap_len)
      break;
    if (child + 1 < c->heap_len &&
        c->heap[child + 1].next_use > c->heap[child].next_use)
      child++;
    if (c->heap[child].next_use <= e.next_use)
      break;
    c->heap[i] = c->heap[child];
    i = child;
  }
  c->heap[i] = e;
}

/* Drop the stale entries: rebuild from the residents' current next use. */
static void heap_rebuild(struct belady *c)
{
  c->heap_len = 0;
  for (uint32_t n = 0; n < c->pool.size; n++)
    if (c->pool.where[n])
      c->heap[c->heap_len++] = (struct heap_entry){ c->node_next_use[n], n };
  for (uint64_t i = c->heap_len / 2; i-- > 0;)
    heap_sift_down(c, i);
}

static void heap_push(struct belady *c, uint64_t next_use, uint32_t node)
{
  if (c->heap_len == c->heap_cap)
    heap_rebuild(c);
  c->heap[c->heap_len] = (struct heap_entry){ next_use, node };
  heap_sift_up(c, c->heap_len++);
}

static void belady_evict(struct belady *c)
{
  for (;;) {
    struct heap_entry top = c->heap[0];
    c->heap[0] = c->heap[--c->heap_len];
    if (c->heap_len > 0)
      heap_sift_down(c, 0);
    uint32_t n = top.node;
    if (!c->pool.where[n] || c->node_next_use[n] != top.next_use)
      continue; /* stale */
    sl_simhash_del(&c->index, c->pool.key[n]);
    c->pool.where[n] = 0;
    c->node_next_use[n] = STALE;
    sl_pool_release(&c->pool, n);
    c->resident--;
    return;
  }
}

static bool belady_access(void *state, uint64_t block, uint64_t next_use)
{
  struct belady *c = state;
  uint32_t hit = sl_simhash_get(&c->index, block);
  if (hit != SL_SIMHASH_EMPTY) {
    c->node_next_use[hit] = next_use;
    heap_push(c, next_use, hit);
    return true;
  }
  if (c->capacity == 0)
    return false;
  if (c->resident >= c->capacity)
    belady_evict(c);
  uint32_t n = sl_pool_alloc(&c->pool, block);
  c->pool.where[n] = 1;
  c->node_next_use[n] = next_use;
  sl_simhash_put(&c->index, block, n);
  c->resident++;
  heap_push(c, next_use, n);
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
