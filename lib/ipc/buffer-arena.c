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
#include <stdatomic.h>
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
  /* Lending (sl_arena_hold): per buffer head block, the holds on it, and
   * HOLD_FREED once its owner freed it while held. */
  uint32_t *holds;
  size_t held_bytes;            /* bytes of held buffers (at their size) */
  atomic_int refs;              /* the owner's and one per hold or finder */
  bool orphaned;                /* sl_arena_destroy was called */
  struct sl_arena *next_live;   /* the registry of live arenas */
};
#define HOLD_FREED 0x80000000u

/* Every arena that exists, so that a pointer can be traced to the memfd
 * under it (sl_arena_find): a few per process, so a list. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl_arena *registry;

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
  a->holds = calloc(a->n_blocks, sizeof *a->holds);
  atomic_init(&a->refs, 1);
  a->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int r = 0;
  if (!a->next || !a->prev || !a->free_order || !a->alloc_order || !a->holds)
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
  pthread_mutex_lock(&registry_lock);
  a->next_live = registry;
  registry = a;
  pthread_mutex_unlock(&registry_lock);
  *out = a;
  return 0;
}

static void arena_free_all(struct sl_arena *a);


int sl_arena_populate_in_use(struct sl_arena *a, size_t len)
{
  len = SL_MIN(len, a->size);
  /* In use: the pages hold payload, which only MADV_POPULATE_WRITE leaves
   * alone (a write of any byte could race with the owner's). */
#ifdef MADV_POPULATE_WRITE
  if (madvise(a->base, len, MADV_POPULATE_WRITE) == 0)
    return 0;
  return sl_error(errno, "buffer arena: MADV_POPULATE_WRITE: %s", strerror(errno));
#else
  return sl_error(ENOTSUP, "buffer arena: no MADV_POPULATE_WRITE");
#endif
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
  pthread_mutex_lock(&registry_lock);
  for (struct sl_arena **pp = &registry; *pp; pp = &(*pp)->next_live)
    if (*pp == a) {
      *pp = a->next_live;
      break;
    }
  pthread_mutex_unlock(&registry_lock);
  if (a->base != MAP_FAILED) {
    pthread_mutex_lock(&a->lock);
    a->orphaned = true;
    pthread_mutex_unlock(&a->lock);
  }
  sl_arena_unref(a);
}

void sl_arena_ref(struct sl_arena *a)
{
  atomic_fetch_add(&a->refs, 1);
}

void sl_arena_unref(struct sl_arena *a)
{
  if (a && atomic_fetch_sub(&a->refs, 1) == 1)
    arena_free_all(a);
}

struct sl_arena *sl_arena_find(const void *p, size_t len, size_t *off)
{
  struct sl_arena *found = NULL;
  pthread_mutex_lock(&registry_lock);
  for (struct sl_arena *a = registry; a; a = a->next_live)
    if ((const char *)p >= a->base && (size_t)((const char *)p - a->base) <= a->size &&
        len <= a->size - (size_t)((const char *)p - a->base)) {
      atomic_fetch_add(&a->refs, 1);
      *off = (size_t)((const char *)p - a->base);
      found = a;
      break;
    }
  pthread_mutex_unlock(&registry_lock);
  return found;
}

bool sl_arena_orphaned(struct sl_arena *a)
{
  SCOPED_LOCK(&a->lock);
  return a->orphaned;
}

size_t sl_arena_size(const struct sl_arena *a) { return a->size; }

/* Under a->lock: the head block of the buffer that holds block B, or -1. */
static int32_t head_of(const struct sl_arena *a, int32_t b)
{
  /* a buffer of order o starts at a multiple of 2^o blocks */
  for (int o = 0; o <= a->max_order; o++) {
    int32_t h = b & ~(((int32_t)1 << o) - 1);
    if (a->alloc_order[h] == o)
      return h;
  }
  return -1;
}

size_t sl_arena_held_bytes(struct sl_arena *a)
{
  SCOPED_LOCK(&a->lock);
  return a->held_bytes;
}

bool sl_arena_contains(const struct sl_arena *a, const void *p, size_t len, size_t *off)
{
  if ((const char *)p < a->base || (size_t)((const char *)p - a->base) > a->size ||
      len > a->size - (size_t)((const char *)p - a->base))
    return false;
  *off = (size_t)((const char *)p - a->base);
  return true;
}

int sl_arena_hold(struct sl_arena *a, const void *p, size_t max_held)
{
  int32_t b = (int32_t)(((const char *)p - a->base) / SL_ARENA_MIN_BLOCK);
  pthread_mutex_lock(&a->lock);
  int32_t h = head_of(a, b);
  if (h < 0 || (a->holds[h] & HOLD_FREED)) {
    pthread_mutex_unlock(&a->lock);
    return sl_error(EINVAL, "buffer arena: %p is not in a buffer in use", p);
  }
  if (a->holds[h] == 0 && a->held_bytes + ((size_t)SL_ARENA_MIN_BLOCK << a->alloc_order[h]) >
                              max_held) {
    pthread_mutex_unlock(&a->lock);
    return -EBUSY; /* (no message: the caller copies instead, as often as not) */
  }
  if ((a->holds[h] & ~HOLD_FREED) == 0)
    a->held_bytes += (size_t)SL_ARENA_MIN_BLOCK << a->alloc_order[h];
  a->holds[h]++;
  atomic_fetch_add(&a->refs, 1);
  pthread_mutex_unlock(&a->lock);
  return 0;
}

static void free_block_locked(struct sl_arena *a, int32_t b);

void sl_arena_release(struct sl_arena *a, const void *p)
{
  int32_t b = (int32_t)(((const char *)p - a->base) / SL_ARENA_MIN_BLOCK);
  pthread_mutex_lock(&a->lock);
  int32_t h = head_of(a, b);
  if (h < 0 || (a->holds[h] & ~HOLD_FREED) == 0)
    abort(); /* a release without its hold: the accounting is corrupt */
  a->holds[h]--;
  if ((a->holds[h] & ~HOLD_FREED) == 0) {
    a->held_bytes -= (size_t)SL_ARENA_MIN_BLOCK << a->alloc_order[h];
    if (a->holds[h] & HOLD_FREED) {
      a->holds[h] = 0;
      free_block_locked(a, h); /* its owner is done with it too */
    }
  }
  pthread_mutex_unlock(&a->lock);
  sl_arena_unref(a);
}

static void arena_free_all(struct sl_arena *a)
{
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
  free(a->holds);
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
  if (a->alloc_order[b] < 0 || (a->holds[b] & HOLD_FREED))
    abort(); /* not one of ours, or freed twice: memory is already corrupt */
  if (a->holds[b]) {
    /* lent out (the cache daemon may still write into it): freed on the
     * last release */
    a->holds[b] |= HOLD_FREED;
    pthread_mutex_unlock(&a->lock);
    return;
  }
  free_block_locked(a, b);
  pthread_mutex_unlock(&a->lock);
}

static void free_block_locked(struct sl_arena *a, int32_t b)
{
  int order = a->alloc_order[b];
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
