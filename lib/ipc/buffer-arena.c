/* The buffer arena (see buffer-arena.h for why it exists).
 *
 * A binary buddy allocator over the blocks of one sealed memfd.  Block
 * bookkeeping lives outside the memfd (small arrays indexed by block
 * number), so the buffers themselves are never written by the allocator:
 * a peer mapping the memfd sees only payload, and untouched pages stay
 * unallocated in the kernel.  One mutex guards the arrays; allocations are
 * a handful of array operations, far cheaper than the syscall that fills
 * the buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "ipc/buffer-arena.h"

#define MAX_ORDERS 32

struct sl_arena {
  int fd;
  char *base;
  size_t size;
  uint32_t n_blocks;
  int max_order;                /* the whole arena is one block of this order */
  pthread_mutex_t lock;
  pthread_cond_t freed;
  bool closed;
  size_t in_use;
  int32_t head[MAX_ORDERS];     /* free list per order, -1 if empty */
  int32_t *next, *prev;         /* free list links, per block */
  int8_t *free_order;           /* order if the block heads a free run, else -1 */
  int8_t *alloc_order;          /* order if the block heads a buffer, else -1 */
};

static void list_push(struct sl_arena *a, int32_t b, int order)
{
  a->free_order[b] = (int8_t)order;
  a->prev[b] = -1;
  a->next[b] = a->head[order];
  if (a->head[order] >= 0)
    a->prev[a->head[order]] = b;
  a->head[order] = b;
}

static void list_remove(struct sl_arena *a, int32_t b)
{
  int order = a->free_order[b];
  if (a->prev[b] >= 0)
    a->next[a->prev[b]] = a->next[b];
  else
    a->head[order] = a->next[b];
  if (a->next[b] >= 0)
    a->prev[a->next[b]] = a->prev[b];
  a->free_order[b] = -1;
}

static int order_for(size_t len)
{
  size_t blocks = len <= SL_ARENA_MIN_BLOCK ? 1 : SL_DIV_ROUND_UP(len, SL_ARENA_MIN_BLOCK);
  int order = 0;
  while (((size_t)1 << order) < blocks)
    order++;
  return order;
}

int sl_arena_create(const char *name, size_t size, struct sl_arena **out)
{
  if (size < SL_ARENA_MIN_BLOCK || (size & (size - 1)) ||
      size / SL_ARENA_MIN_BLOCK > INT32_MAX)
    return sl_error(EINVAL, "buffer arena %s: size %zu is not a power of two "
                    ">= %u", name, size, SL_ARENA_MIN_BLOCK);
  struct sl_arena *a = calloc(1, sizeof *a);
  if (!a)
    return sl_error(ENOMEM, "buffer arena %s: out of memory", name);
  a->size = size;
  a->n_blocks = (uint32_t)(size / SL_ARENA_MIN_BLOCK);
  a->max_order = order_for(size);
  a->base = MAP_FAILED;
  a->next = malloc(a->n_blocks * sizeof *a->next);
  a->prev = malloc(a->n_blocks * sizeof *a->prev);
  a->free_order = malloc(a->n_blocks);
  a->alloc_order = malloc(a->n_blocks);
  a->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int r = 0;
  if (!a->next || !a->prev || !a->free_order || !a->alloc_order)
    r = sl_error(ENOMEM, "buffer arena %s: out of memory", name);
  else if (a->fd < 0 || ftruncate(a->fd, (off_t)size) < 0 ||
           fcntl(a->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    r = sl_error(errno, "buffer arena %s: memfd: %s", name, strerror(errno));
  else if ((a->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                           a->fd, 0)) == MAP_FAILED)
    r = sl_error(errno, "buffer arena %s: mmap of %zu bytes: %s", name, size,
                 strerror(errno));
  if (r < 0) {
    sl_arena_destroy(a);
    return r;
  }
  memset(a->free_order, -1, a->n_blocks);
  memset(a->alloc_order, -1, a->n_blocks);
  for (int i = 0; i < MAX_ORDERS; i++)
    a->head[i] = -1;
  list_push(a, 0, a->max_order);
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->freed, NULL);
  *out = a;
  return 0;
}

int sl_arena_populate(struct sl_arena *a)
{
  /* Writing makes the pages ours (charged to this process); the arena is
   * free, so nothing it holds is overwritten.  MADV_POPULATE_WRITE does it
   * in one call where the kernel has it (5.14). */
#ifdef MADV_POPULATE_WRITE
  if (madvise(a->base, a->size, MADV_POPULATE_WRITE) == 0)
    return 0;
#endif
  for (size_t off = 0; off < a->size; off += SL_ARENA_MIN_BLOCK)
    ((volatile char *)a->base)[off] = 0;
  return 0;
}

void sl_arena_destroy(struct sl_arena *a)
{
  if (!a)
    return;
  if (a->base != MAP_FAILED) {
    munmap(a->base, a->size);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->freed);
  }
  if (a->fd >= 0)
    close(a->fd);
  free(a->next);
  free(a->prev);
  free(a->free_order);
  free(a->alloc_order);
  free(a);
}

/* Take a free block of ORDER, splitting a larger one; -1 if none. */
static int32_t take_block(struct sl_arena *a, int order)
{
  int o = order;
  while (o <= a->max_order && a->head[o] < 0)
    o++;
  if (o > a->max_order)
    return -1;
  int32_t b = a->head[o];
  list_remove(a, b);
  while (o > order) {         /* keep the lower half, free the upper */
    o--;
    list_push(a, b + ((int32_t)1 << o), o);
  }
  a->alloc_order[b] = (int8_t)order;
  a->in_use += (size_t)SL_ARENA_MIN_BLOCK << order;
  return b;
}

static void *alloc_locked(struct sl_arena *a, size_t len, bool wait)
{
  int order = order_for(len);
  if (order > a->max_order) {
    sl_error(E2BIG, "buffer of %zu bytes is larger than the %zu-byte arena",
             len, a->size);
    return NULL;
  }
  for (;;) {
    if (a->closed) {
      sl_error(ESHUTDOWN, "buffer arena is shut down");
      return NULL;
    }
    int32_t b = take_block(a, order);
    if (b >= 0)
      return a->base + (size_t)b * SL_ARENA_MIN_BLOCK;
    if (!wait) {
      sl_error(EAGAIN, "buffer arena is full");
      return NULL;
    }
    pthread_cond_wait(&a->freed, &a->lock);
  }
}

void *sl_arena_alloc(struct sl_arena *a, size_t len)
{
  SCOPED_LOCK(&a->lock);
  return alloc_locked(a, len, true);
}

void *sl_arena_try_alloc(struct sl_arena *a, size_t len)
{
  SCOPED_LOCK(&a->lock);
  return alloc_locked(a, len, false);
}

void sl_arena_free(struct sl_arena *a, void *buf)
{
  if (!buf)
    return;
  int32_t b = (int32_t)(((char *)buf - a->base) / SL_ARENA_MIN_BLOCK);
  pthread_mutex_lock(&a->lock);
  int order = a->alloc_order[b];
  if (order < 0)
    abort(); /* not one of ours, or freed twice: memory is already corrupt */
  a->alloc_order[b] = -1;
  a->in_use -= (size_t)SL_ARENA_MIN_BLOCK << order;
  while (order < a->max_order) {
    int32_t buddy = b ^ ((int32_t)1 << order);
    if (a->free_order[buddy] != order)
      break;
    list_remove(a, buddy);
    b = SL_MIN(b, buddy);
    order++;
  }
  list_push(a, b, order);
  pthread_cond_broadcast(&a->freed);
  pthread_mutex_unlock(&a->lock);
}

void sl_arena_close(struct sl_arena *a)
{
  SCOPED_LOCK(&a->lock);
  a->closed = true;
  pthread_cond_broadcast(&a->freed);
}

int sl_arena_fd(const struct sl_arena *a) { return a->fd; }

size_t sl_arena_offset(const struct sl_arena *a, const void *buf)
{
  return (size_t)((const char *)buf - a->base);
}

size_t sl_arena_in_use(struct sl_arena *a)
{
  SCOPED_LOCK(&a->lock);
  return a->in_use;
}
