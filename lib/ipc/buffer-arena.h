/* The buffer arena: request payload buffers carved out of one memfd.
 *
 * DESIGN.md ("Constraints from what comes later: Buffers") asks that
 * request buffers in the export path come from an arena that can be backed
 * by a memfd, so that the cache daemon can later fill and drain them
 * through a memory handle (mechanisms 2 and 3) with no extra copy.  An
 * arena is therefore one memfd, sealed so its size never changes
 * (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: a peer that maps it can never
 * be cut short), mapped once, and every buffer is a (offset, length) range
 * of it: sl_arena_fd() and sl_arena_offset() are what a memory handle will
 * name.
 *
 * Bounded: the arena never grows.  An allocation that does not fit waits
 * until enough is freed, which is the export's back-pressure (a client that
 * floods requests stops being read, it does not make the process grow).
 * Reusable: freed buffers coalesce with their neighbours (a binary buddy
 * allocator over blocks of SL_ARENA_MIN_BLOCK, last freed first), so a
 * busy connection recycles the same few pages and never faults them in
 * again.  Pages are only ever touched by payload, so resident memory is the
 * high-water mark of payload in flight, never more than the arena's size.
 */
#ifndef SLUICE_IPC_BUFFER_ARENA_H
#define SLUICE_IPC_BUFFER_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#define SL_ARENA_MIN_BLOCK 4096u

struct sl_arena;

/* An arena of SIZE bytes (a power of two, >= SL_ARENA_MIN_BLOCK); NAME
 * labels the memfd (/proc/PID/fd shows "memfd:NAME"). */
int sl_arena_create(const char *name, size_t size, struct sl_arena **out);
void sl_arena_destroy(struct sl_arena *a);
/* Write every page of a fresh arena now, so that all of it is allocated
 * (and charged) to this process: what sluiced asks of a memory handle.
 * Costs the arena's size in resident memory from then on. */
int sl_arena_populate(struct sl_arena *a);

/* A buffer of at least LEN bytes (LEN may be 0), aligned to
 * SL_ARENA_MIN_BLOCK.  Waits while the arena is full.  NULL (with a
 * message) if LEN can never fit, or once sl_arena_close() was called. */
void *sl_arena_alloc(struct sl_arena *a, size_t len);
/* As sl_arena_alloc, but NULL instead of waiting. */
void *sl_arena_try_alloc(struct sl_arena *a, size_t len);
void sl_arena_free(struct sl_arena *a, void *buf);
/* Wake every waiter with NULL from now on (shutdown). */
void sl_arena_close(struct sl_arena *a);

/* Fault in the first LEN bytes of an arena that may be in use, leaving
 * its bytes alone (MADV_POPULATE_WRITE; -ENOTSUP where the kernel lacks
 * it). */
int sl_arena_populate_in_use(struct sl_arena *a, size_t len);

/* Lending buffers to the cache daemon (lib/cachesvc/client.c).
 *
 * The daemon writes a read's bytes straight into the export's request
 * buffer when that buffer lies in an arena (found from the pointer alone:
 * the filter in between only passes a pointer).  A reply may come after
 * the client stopped waiting, so a buffer the daemon may still write into
 * must not be handed out again: the client holds it (sl_arena_hold) for
 * as long, and an owner's sl_arena_free of a held buffer takes effect at
 * the last sl_arena_release.  Each hold and each find keeps the arena
 * itself alive (sl_arena_destroy by the owner then only orphans it). */
/* The arena holding [P, P+LEN), with a reference (sl_arena_unref), and
 * the offset of P in it; NULL if P lies in none. */
struct sl_arena *sl_arena_find(const void *p, size_t len, size_t *off);
void sl_arena_ref(struct sl_arena *a);
void sl_arena_unref(struct sl_arena *a);
/* Hold the buffer in use that contains P: 0, -EBUSY if that would make
 * more than MAX_HELD bytes held, or -EINVAL if P lies in no buffer in use. */
int sl_arena_hold(struct sl_arena *a, const void *p, size_t max_held);
/* Does [P, P+LEN) lie in A (then *OFF is where)?  No lock: an arena's
 * place never changes. */
bool sl_arena_contains(const struct sl_arena *a, const void *p, size_t len, size_t *off);
void sl_arena_release(struct sl_arena *a, const void *p);
/* Bytes of buffers held now. */
size_t sl_arena_held_bytes(struct sl_arena *a);
/* Its owner destroyed it (only holds and finders keep it). */
bool sl_arena_orphaned(struct sl_arena *a);
size_t sl_arena_size(const struct sl_arena *a);

/* The memfd and where BUF lies in it: what a memory handle names. */
int sl_arena_fd(const struct sl_arena *a);
size_t sl_arena_offset(const struct sl_arena *a, const void *buf);
/* Bytes handed out and not yet freed (rounded up to blocks). */
size_t sl_arena_in_use(struct sl_arena *a);

#endif
