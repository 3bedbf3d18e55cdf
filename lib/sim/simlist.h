/* Doubly linked lists threaded through preallocated index arrays.
 *
 * The simulator's policies keep their entries in one pool of nodes
 * (key, prev, next, a few state bytes) allocated once at create time; a
 * node sits in at most one list (e.g. ARC's T1, T2, B1, B2).  Indices
 * instead of pointers halve the memory and keep everything in flat arrays
 * that are freed in one go.  HEAD is the newest entry, TAIL the oldest.
 */
#ifndef SLUICE_SIM_SIMLIST_H
#define SLUICE_SIM_SIMLIST_H

#include <stdint.h>
#include <stdlib.h>

#define SL_NIL UINT32_MAX

struct sl_pool {
  uint64_t *key;
  uint32_t *prev, *next;
  uint8_t *where;       /* which list the node is in (policy-defined) */
  uint8_t *freq;        /* a small per-node counter / reference bits */
  uint32_t free_head;   /* free nodes chained through next[] */
  uint32_t size;
};

struct sl_list {
  uint32_t head, tail;
  uint64_t len;
};

static inline int sl_pool_init(struct sl_pool *p, uint64_t nodes)
{
  if (nodes >= SL_NIL)
    return -75; /* EOVERFLOW */
  if (nodes == 0)
    nodes = 1;
  p->key = malloc(nodes * sizeof *p->key);
  p->prev = malloc(nodes * sizeof *p->prev);
  p->next = malloc(nodes * sizeof *p->next);
  p->where = calloc(nodes, 1);
  p->freq = calloc(nodes, 1);
  if (!p->key || !p->prev || !p->next || !p->where || !p->freq) {
    free(p->key); free(p->prev); free(p->next); free(p->where); free(p->freq);
    return -12;
  }
  for (uint64_t i = 0; i < nodes; i++)
    p->next[i] = i + 1 < nodes ? (uint32_t)(i + 1) : SL_NIL;
  p->free_head = 0;
  p->size = (uint32_t)nodes;
  return 0;
}

static inline void sl_pool_free(struct sl_pool *p)
{
  free(p->key); free(p->prev); free(p->next); free(p->where); free(p->freq);
}

/* A free node for KEY (the caller sized the pool so one is always left). */
static inline uint32_t sl_pool_alloc(struct sl_pool *p, uint64_t key)
{
  uint32_t n = p->free_head;
  if (n == SL_NIL)
    abort(); /* a policy bug: its pool was sized too small */
  p->free_head = p->next[n];
  p->key[n] = key;
  p->freq[n] = 0;
  p->where[n] = 0;
  return n;
}

static inline void sl_pool_release(struct sl_pool *p, uint32_t n)
{
  p->next[n] = p->free_head;
  p->free_head = n;
}

static inline void sl_list_init(struct sl_list *l)
{
  l->head = l->tail = SL_NIL;
  l->len = 0;
}

/* The list operations work on any pair of link arrays, so a policy can
 * thread a node through a second list as well (LIRS keeps a block in its
 * stack S and its queue Q at once); the pool's own links are the usual
 * case. */
struct sl_links {
  uint32_t *prev, *next;
};

static inline struct sl_links sl_pool_links(const struct sl_pool *p)
{
  return (struct sl_links){ p->prev, p->next };
}

static inline void sl_links_push_head(struct sl_links k, struct sl_list *l,
                                      uint32_t n)
{
  k.prev[n] = SL_NIL;
  k.next[n] = l->head;
  if (l->head != SL_NIL)
    k.prev[l->head] = n;
  else
    l->tail = n;
  l->head = n;
  l->len++;
}

static inline void sl_links_remove(struct sl_links k, struct sl_list *l,
                                   uint32_t n)
{
  if (k.prev[n] != SL_NIL)
    k.next[k.prev[n]] = k.next[n];
  else
    l->head = k.next[n];
  if (k.next[n] != SL_NIL)
    k.prev[k.next[n]] = k.prev[n];
  else
    l->tail = k.prev[n];
  l->len--;
}

static inline void sl_links_move_head(struct sl_links k, struct sl_list *l,
                                      uint32_t n)
{
  if (l->head == n)
    return;
  sl_links_remove(k, l, n);
  sl_links_push_head(k, l, n);
}

static inline void sl_list_push_head(struct sl_pool *p, struct sl_list *l,
                                     uint32_t n)
{
  sl_links_push_head(sl_pool_links(p), l, n);
}

static inline void sl_list_remove(struct sl_pool *p, struct sl_list *l,
                                  uint32_t n)
{
  sl_links_remove(sl_pool_links(p), l, n);
}

static inline void sl_list_move_head(struct sl_pool *p, struct sl_list *l,
                                     uint32_t n)
{
  sl_links_move_head(sl_pool_links(p), l, n);
}

#endif
