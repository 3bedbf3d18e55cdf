/* Throughput of the twophase cache structure against lock-based
 * comparators (LRU, CLOCK, S3-FIFO behind one mutex), in one harness, at
 * 1, 2 and 4 threads, on three workloads:
 *   a  all hits: Zipf(1.0) keys over a footprint that fits in the cache;
 *   b  Zipf(1.0) keys, cache of 10% of the footprint;
 *   c  a scan: every request a new block (all misses).
 * Prints operations per second and ratios as a markdown table, plus the
 * metadata bytes per resident block and per ghost entry of twophase.
 *   cache-bench [--ops N] [--footprint N] */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/twophase.h"

/* ---- a shared open-addressing index for the comparators ---------------- */

struct index {
  uint64_t *keys;     /* key + 1, 0 = empty */
  uint32_t *vals;
  uint64_t mask;
};

static uint64_t hash64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static void index_init(struct index *ix, uint64_t n)
{
  uint64_t size = 1;
  while (size < n * 2)
    size <<= 1;
  ix->keys = calloc(size, sizeof *ix->keys);
  ix->vals = calloc(size, sizeof *ix->vals);
  ix->mask = size - 1;
}

static int64_t index_get(struct index *ix, uint64_t key)
{
  for (uint64_t p = hash64(key) & ix->mask;; p = (p + 1) & ix->mask) {
    if (ix->keys[p] == 0)
      return -1;
    if (ix->keys[p] == key + 1)
      return ix->vals[p];
  }
}

static void index_put(struct index *ix, uint64_t key, uint32_t v)
{
  uint64_t p = hash64(key) & ix->mask;
  while (ix->keys[p] != 0 && ix->keys[p] != key + 1)
    p = (p + 1) & ix->mask;
  ix->keys[p] = key + 1;
  ix->vals[p] = v;
}

static void index_del(struct index *ix, uint64_t key)
{
  uint64_t p = hash64(key) & ix->mask;
  while (ix->keys[p] != key + 1) {
    if (ix->keys[p] == 0)
      return;
    p = (p + 1) & ix->mask;
  }
  uint64_t hole = p;
  for (;;) {
    p = (p + 1) & ix->mask;
    if (ix->keys[p] == 0)
      break;
    uint64_t home = hash64(ix->keys[p] - 1) & ix->mask;
    if (((p - home) & ix->mask) >= ((p - hole) & ix->mask)) {
      ix->keys[hole] = ix->keys[p];
      ix->vals[hole] = ix->vals[p];
      hole = p;
    }
  }
  ix->keys[hole] = 0;
}

/* ---- comparators: one mutex each ---------------------------------------- */

struct locked {
  pthread_mutex_t lock;
  struct index ix;
  uint64_t cap, used;
  uint64_t *key;
  /* LRU: doubly linked list by slot; CLOCK/S3-FIFO: ring + bits. */
  uint32_t *prev, *next, head, tail;
  uint8_t *ref;
  uint32_t hand;
  /* S3-FIFO: small FIFO ring of slots, main ring by slot, ghost index. */
  uint32_t *small;
  uint64_t small_head, small_len, small_cap;
  uint8_t *in_small;
  struct index ghost;
  uint64_t *ghost_ring, ghost_pos, ghost_cap;
};

enum policy { P_TWOPHASE, P_LRU, P_CLOCK, P_S3FIFO, P_COUNT };
static const char *const policy_names[] = {"twophase", "LRU (global lock)",
                                           "CLOCK (global lock)", "S3-FIFO (global lock)"};

static void locked_init(struct locked *c, uint64_t cap)
{
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->lock, NULL);
  index_init(&c->ix, cap);
  c->cap = cap;
  c->key = calloc(cap, sizeof *c->key);
  c->prev = calloc(cap, sizeof *c->prev);
  c->next = calloc(cap, sizeof *c->next);
  c->ref = calloc(cap, 1);
  c->in_small = calloc(cap, 1);
  c->small = calloc(cap, sizeof *c->small);
  c->small_cap = cap / 10 ? cap / 10 : 1;
  c->ghost_cap = cap;
  c->ghost_ring = calloc(c->ghost_cap, sizeof *c->ghost_ring);
  index_init(&c->ghost, c->ghost_cap);
  c->head = c->tail = UINT32_MAX;
}

static void lru_unlink(struct locked *c, uint32_t s)
{
  if (c->prev[s] != UINT32_MAX) c->next[c->prev[s]] = c->next[s]; else c->head = c->next[s];
  if (c->next[s] != UINT32_MAX) c->prev[c->next[s]] = c->prev[s]; else c->tail = c->prev[s];
}

static void lru_push_front(struct locked *c, uint32_t s)
{
  c->prev[s] = UINT32_MAX;
  c->next[s] = c->head;
  if (c->head != UINT32_MAX) c->prev[c->head] = s; else c->tail = s;
  c->head = s;
}

static bool lru_access(struct locked *c, uint64_t key)
{
  pthread_mutex_lock(&c->lock);
  int64_t s = index_get(&c->ix, key);
  bool hit = s >= 0;
  if (hit) {
    lru_unlink(c, (uint32_t)s);
    lru_push_front(c, (uint32_t)s);
  } else {
    uint32_t slot;
    if (c->used < c->cap) {
      slot = (uint32_t)c->used++;
    } else {
      slot = c->tail;
      lru_unlink(c, slot);
      index_del(&c->ix, c->key[slot]);
    }
    c->key[slot] = key;
    index_put(&c->ix, key, slot);
    lru_push_front(c, slot);
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

static bool clock_access(struct locked *c, uint64_t key)
{
  pthread_mutex_lock(&c->lock);
  int64_t s = index_get(&c->ix, key);
  bool hit = s >= 0;
  if (hit) {
    c->ref[s] = 1;
  } else {
    uint32_t slot;
    if (c->used < c->cap) {
      slot = (uint32_t)c->used++;
    } else {
      while (c->ref[c->hand]) {
        c->ref[c->hand] = 0;
        c->hand = (uint32_t)((c->hand + 1) % c->cap);
      }
      slot = c->hand;
      c->hand = (uint32_t)((c->hand + 1) % c->cap);
      index_del(&c->ix, c->key[slot]);
    }
    c->key[slot] = key;
    c->ref[slot] = 0;
    index_put(&c->ix, key, slot);
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

/* S3-FIFO (threshold 1): small FIFO 10%, main CLOCK with 2-bit counters,
 * ghost of keys evicted from small. */
static uint32_t s3_evict_main(struct locked *c)
{
  for (;;) {
    uint32_t s = c->hand;
    c->hand = (uint32_t)((c->hand + 1) % c->cap);
    if (c->in_small[s])
      continue;
    if (c->ref[s]) {
      c->ref[s]--;
      continue;
    }
    index_del(&c->ix, c->key[s]);
    return s;
  }
}

static bool s3_access(struct locked *c, uint64_t key)
{
  pthread_mutex_lock(&c->lock);
  int64_t s = index_get(&c->ix, key);
  bool hit = s >= 0;
  if (hit) {
    if (c->ref[s] < 3)
      c->ref[s]++;
    pthread_mutex_unlock(&c->lock);
    return true;
  }
  bool ghost = index_get(&c->ghost, key) >= 0;
  if (ghost)
    index_del(&c->ghost, key);
  uint32_t slot;
  if (c->used < c->cap) {
    slot = (uint32_t)c->used++;
  } else if (c->small_len >= c->small_cap || c->small_len == c->used) {
    /* Free a slot from small: referenced blocks move to main first. */
    for (;;) {
      uint32_t v = c->small[c->small_head];
      c->small_head = (c->small_head + 1) % c->cap;
      c->small_len--;
      if (c->ref[v]) {
        c->ref[v] = 0;
        c->in_small[v] = 0; /* promoted in place */
        if (c->small_len == 0) {
          slot = s3_evict_main(c);
          break;
        }
        continue;
      }
      index_del(&c->ix, c->key[v]);
      uint64_t old = c->ghost_ring[c->ghost_pos];
      if (old)
        index_del(&c->ghost, old - 1);
      c->ghost_ring[c->ghost_pos] = c->key[v] + 1;
      c->ghost_pos = (c->ghost_pos + 1) % c->ghost_cap;
      index_put(&c->ghost, c->key[v], 1);
      slot = v;
      break;
    }
  } else {
    slot = s3_evict_main(c);
  }
  c->key[slot] = key;
  c->ref[slot] = 0;
  index_put(&c->ix, key, slot);
  if (ghost) {
    c->in_small[slot] = 0;
  } else {
    c->in_small[slot] = 1;
    c->small[(c->small_head + c->small_len) % c->cap] = slot;
    c->small_len++;
  }
  pthread_mutex_unlock(&c->lock);
  return false;
}

/* ---- harness ------------------------------------------------------------ */

struct run {
  enum policy p;
  struct sl_twophase *tp;
  struct locked *lk;
  const uint64_t *keys;
  uint64_t nkeys, ops;
  uint64_t hits;
};

static void *run_thread(void *opaque)
{
  struct run *r = opaque;
  uint64_t hits = 0;
  for (uint64_t i = 0; i < r->ops; i++) {
    uint64_t k = r->keys[i % r->nkeys];
    bool hit;
    switch (r->p) {
    case P_TWOPHASE: hit = sl_twophase_access(r->tp, k); break;
    case P_LRU: hit = lru_access(r->lk, k); break;
    case P_CLOCK: hit = clock_access(r->lk, k); break;
    default: hit = s3_access(r->lk, k); break;
    }
    hits += hit;
  }
  r->hits = hits;
  return NULL;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Zipf(1.0) samples over [0, n) by inverse CDF on a table. */
static uint64_t *zipf_keys(uint64_t n, uint64_t count, uint64_t seed)
{
  double *cdf = malloc(n * sizeof *cdf), sum = 0;
  for (uint64_t i = 0; i < n; i++)
    sum += 1.0 / (double)(i + 1);
  double acc = 0;
  for (uint64_t i = 0; i < n; i++) {
    acc += 1.0 / (double)(i + 1) / sum;
    cdf[i] = acc;
  }
  uint64_t *keys = malloc(count * sizeof *keys), s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t i = 0; i < count; i++) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    double u = (double)(s >> 11) / 9007199254740992.0;
    uint64_t lo = 0, hi = n - 1;
    while (lo < hi) {
      uint64_t mid = (lo + hi) / 2;
      if (cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    keys[i] = hash64(lo + 1); /* scatter ranks over the key space */
  }
  free(cdf);
  return keys;
}

static double measure(enum policy p, uint64_t cap, int threads, uint64_t **keys,
                      uint64_t nkeys, uint64_t ops, bool prefill, double *hit_ratio)
{
  struct sl_twophase *tp = NULL;
  struct locked *lk = NULL;
  if (p == P_TWOPHASE) {
    struct sl_twophase_params prm = {.capacity = cap};
    tp = sl_twophase_create(&prm);
  } else {
    lk = malloc(sizeof *lk);
    locked_init(lk, cap);
  }
  struct run r[8];
  if (prefill) /* warm: every key of every thread's stream, so (a) is all hits */
    for (int i = 0; i < threads; i++) {
      struct run w = {p, tp, lk, keys[i], nkeys, nkeys, 0};
      run_thread(&w);
    }
  pthread_t t[8];
  double t0 = now();
  for (int i = 0; i < threads; i++) {
    r[i] = (struct run){p, tp, lk, keys[i], nkeys, ops, 0};
    pthread_create(&t[i], NULL, run_thread, &r[i]);
  }
  uint64_t hits = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    hits += r[i].hits;
  }
  double secs = now() - t0;
  *hit_ratio = (double)hits / (double)(ops * (uint64_t)threads);
  if (tp)
    sl_twophase_destroy(tp);
  if (lk) {
    free(lk->ix.keys); free(lk->ix.vals); free(lk->key); free(lk->prev); free(lk->next);
    free(lk->ref); free(lk->in_small); free(lk->small); free(lk->ghost_ring);
    free(lk->ghost.keys); free(lk->ghost.vals); free(lk);
  }
  return (double)(ops * (uint64_t)threads) / secs;
}

int main(int argc, char **argv)
{
  uint64_t ops = 2000000, footprint = 1 << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--ops") == 0)
      ops = strtoull(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--footprint") == 0)
      footprint = strtoull(argv[i + 1], NULL, 0);
  }
  const int thread_counts[] = {1, 2, 4};
  uint64_t *zipf[4], *scan[4];
  for (int i = 0; i < 4; i++) {
    zipf[i] = zipf_keys(footprint, ops, (uint64_t)i + 1);
    scan[i] = malloc(ops * sizeof *scan[i]);
    for (uint64_t k = 0; k < ops; k++) /* disjoint, never repeating */
      scan[i][k] = hash64(((uint64_t)(i + 1) << 40) + k);
  }
  struct { const char *name; uint64_t cap; uint64_t **keys; bool prefill; } work[] = {
    {"a: all hits, Zipf 1.0", footprint, zipf, true},
    {"b: Zipf 1.0, cache 10% of footprint", footprint / 10, zipf, false},
    {"c: scan, all misses", footprint / 10, scan, false},
  };
  printf("| workload | policy | 1 thread | 2 threads | 4 threads | 2T/1T | hit ratio |\n");
  printf("|---|---|---|---|---|---|---|\n");
  double lru2[3] = {0}, tp2[3] = {0};
  for (int w = 0; w < 3; w++) {
    for (int p = 0; p < P_COUNT; p++) {
      double mops[3], hr = 0;
      for (int ti = 0; ti < 3; ti++) {
        double best = 0;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: the machine is shared */
          double v = measure((enum policy)p, work[w].cap, thread_counts[ti], work[w].keys,
                             ops, ops / (uint64_t)thread_counts[ti], work[w].prefill, &hr);
          if (v > best)
            best = v;
        }
        mops[ti] = best / 1e6;
      }
      if (p == P_LRU) lru2[w] = mops[1];
      if (p == P_TWOPHASE) tp2[w] = mops[1];
      printf("| %s | %s | %.2f M/s | %.2f M/s | %.2f M/s | %.2fx | %.3f |\n", work[w].name,
             policy_names[p], mops[0], mops[1], mops[2], mops[1] / mops[0], hr);
    }
  }
  printf("\ntwophase / global-lock LRU at 2 threads: a %.2fx, b %.2fx, c %.2fx\n",
         tp2[0] / lru2[0], tp2[1] / lru2[1], tp2[2] / lru2[2]);
  struct sl_twophase_params prm = {.capacity = footprint / 10};
  struct sl_twophase *tp = sl_twophase_create(&prm);
  struct sl_twophase_stats st;
  sl_twophase_get_stats(tp, &st);
  printf("twophase metadata: %.1f bytes per resident block, %.2f bytes per ghost entry\n",
         st.bytes_per_resident, st.bytes_per_ghost);
  sl_twophase_destroy(tp);
  return 0;
}
