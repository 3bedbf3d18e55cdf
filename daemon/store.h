/* The daemon's block store: the data area, the twophase policy over it, and
 * the layers whose blocks it holds.  See store.c for the design. */
#ifndef SLUICED_STORE_H
#define SLUICED_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cachesvc/protocol.h"

struct sl_twophase;
struct sd_rbd;
struct sd_closing;

/* Layer indices live in the top bits of a cache key (store.c), the block
 * number in the low SD_BLOCK_BITS. */
#define SD_BLOCK_BITS 40
#define SD_MAX_LAYERS (1u << 22)

struct sd_counters {
  _Atomic uint64_t hits, misses, fills, bytes_served, backend_bytes;
  _Atomic int64_t resident;
};

struct sd_layer {
  uint32_t index;                 /* in the key; reused only once nothing of
                                   * this layer is cached (store.c) */
  dev_t dev;
  ino_t ino;
  uint64_t size;
  struct timespec mtime, ctime;
  bool blockdev, private_, lease, direct; /* as registered: never change */
  char *rbd_id;                   /* an RBD snapshot's identity, or NULL */
  struct sd_rbd *rbd;             /* an RBD snapshot (rbd.c), open while
                                   * registered (under layers_lock); fd and
                                   * dfd are then -1 */
  bool lease_held;                /* under layers_lock: the lease is still ours */
  int fd;                         /* the daemon's own read-only descriptor */
  int dfd;                        /* the same file with O_DIRECT, or -1 */
  _Atomic bool dead;              /* changed: never served again */
  _Atomic uint64_t inval_gen;     /* bumped by every invalidation of this layer */
  _Atomic uint64_t refs;          /* registrations (connections' handles) */
  uint32_t busy;                  /* under layers_lock: the sweep is checking it */
  struct sd_counters c;
  char path[SL_CS_PATH_MAX];
  struct sd_layer *next_live;     /* the store's list of live layers, or of
                                   * dead ones not yet recycled */
};

struct sd_store {
  uint32_t block_size, shift;
  uint64_t nblocks;
  uint8_t *data;                  /* nblocks * block_size, allocated once */
  struct sl_twophase *tp;
  _Atomic uint64_t *tag;          /* per slot: key << 2 | state */
  _Atomic uint32_t *readers;      /* per slot: copies in progress */
  pthread_mutex_t fill_lock;      /* waiters for a fill in progress */
  pthread_cond_t fill_cv;
  pthread_mutex_t layers_lock;    /* registration, the live list, lookup */
  struct sd_layer *live;
  struct sd_layer *dead;          /* killed; recycled once nothing refers to them */
  uint32_t max_layers;            /* indices handed out: SD_MAX_LAYERS (tests: less) */
  uint32_t *free_idx;             /* indices of recycled layers, to reuse */
  size_t n_free, cap_free;
  uint64_t recycled;              /* layers recycled so far */
  /* Descriptors and RBD snapshots to close off the event loop thread:
   * closing a file on a FUSE file system waits for its server (FLUSH),
   * which a client may control, and closing a snapshot for the Ceph
   * cluster.  sd_store_reap closes them. */
  pthread_mutex_t close_lock;
  struct sd_closing *closeq;
  size_t n_close, cap_close;
  uint32_t live_rbd;              /* under layers_lock: RBD layers not dead */
  struct sd_layer **dir[SD_MAX_LAYERS >> 12]; /* index -> layer, under layers_lock */
  uint32_t next_index;
  _Atomic uint64_t inval_gen;     /* bumped by every invalidation of all layers */
  struct sd_counters c;           /* totals */
  _Atomic uint64_t fill_wait_spins; /* for tests: fills that waited for readers */
};

/* NBLOCKS blocks of BLOCK_SIZE (a power of two in [4 KiB, 2 MiB]). */
int sd_store_init(struct sd_store *s, uint64_t memory, uint32_t block_size);
void sd_store_fini(struct sd_store *s);

/* Register the layer open on FD (a descriptor the caller keeps: the store
 * reopens the file for itself).  CLIENT_PID (0: unknown) is the process
 * that passed it, to look for writable descriptors it holds.  Returns the
 * layer with one registration taken, or NULL with -errno in *ERR and a
 * message (sl_last_error). */
struct sd_layer *sd_layer_register(struct sd_store *s, int fd, bool private_,
                                   pid_t client_pid, int *err);
/* Register the RBD snapshot REQ names (rbd.c opens it as the client REQ
 * names; run off the event loop: it talks to the cluster).  As
 * sd_layer_register. */
struct sd_layer *sd_layer_register_rbd(struct sd_store *s, const struct sl_cs_register_rbd *req,
                                       int *err);
void sd_layer_unregister(struct sd_store *s, struct sd_layer *l);
/* Mark L dead (its file changed): none of its blocks is served again. */
void sd_layer_kill(struct sd_store *s, struct sd_layer *l, const char *why);
/* The layer whose descriptor is FD (a lease break names it), or NULL. */
struct sd_layer *sd_layer_by_fd(struct sd_store *s, int fd);
/* Re-check every live layer: dead if its lease is being broken, its
 * identity changed, or (unregistered) its file was deleted; then recycle
 * the indices of dead layers nothing refers to any more (no registration,
 * no resident block).  Called periodically and on SIGIO, off the event
 * loop: the checks (fstat) may block on a FUSE file, but never with
 * layers_lock held. */
void sd_layer_sweep(struct sd_store *s);
/* Queue FD to be closed by sd_store_reap (never blocks; closes at once
 * if the queue cannot grow). */
void sd_store_close_later(struct sd_store *s, int fd);
/* Close every queued descriptor and RBD snapshot (the housekeeping
 * thread: may block). */
void sd_store_reap(struct sd_store *s);
/* Under layers_lock (or when idle): the layer with INDEX, or NULL. */
struct sd_layer *sd_layer_at(struct sd_store *s, uint32_t index);
/* Once per batch and layer: -ESTALE if L is dead or (a layer without a
 * lease) its fstat identity changed, which kills it. */
int sd_layer_verify(struct sd_layer *l, struct sd_store *s);
/* Does sd_layer_verify make a system call for L (fstat: a file without a
 * lease)?  Then it must not run on the event loop thread. */
static inline bool sd_layer_needs_stat(const struct sd_layer *l)
{
  return !l->lease && !l->blockdev && !l->private_ && !l->rbd_id;
}
/* The real-time signal the kernel sends when a layer's lease breaks
 * (F_SETSIG; si_fd names the descriptor).  Block it before any thread. */
int sd_lease_signal(void);

/* Copy LEN bytes of layer L at OFF into DST, from the cache or filled
 * from the layer; *HIT is set when every block was a hit.  0 or -errno
 * (-ESTALE once L is dead, -EINVAL if OFF is not inside the layer).  The
 * hit path takes no lock (twophase's lookup, two atomics on the slot). */
int sd_store_read(struct sd_store *s, struct sd_layer *l, uint64_t off, uint32_t len,
                  uint8_t *dst, bool *hit);

/* sd_store_read's hit path alone: 1 if every block was cached and copied,
 * 0 if some block was not (DST may hold part of the bytes; nothing was
 * counted), -errno. */
int sd_store_read_cached(struct sd_store *s, struct sd_layer *l, uint64_t off, uint32_t len,
                         uint8_t *dst);

/* Forget L's blocks overlapping [off, off+len) (len UINT64_MAX: to the
 * end); L NULL: every block.  Blocks being filled are left alone. */
void sd_store_invalidate(struct sd_store *s, struct sd_layer *l, uint64_t off, uint64_t len);

struct sd_store_info {
  uint64_t ghost, metadata_bytes;
};
void sd_store_info(struct sd_store *s, struct sd_store_info *out);
/* Check the store's invariants (call when idle): twophase's own, every
 * valid tag's key resident in its slot, per-layer and total resident
 * counts equal to the valid tags, no readers left.  0 or -1 with MSG. */
int sd_store_check(struct sd_store *s, char *msg, size_t len);

#endif
