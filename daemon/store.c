/* sluiced's block store: what is cached, who fills it, and how a hit stays
 * free of locks.
 *
 * The data area is allocated once (--memory, rounded down to whole blocks)
 * and divided into blocks; the twophase structure (lib/cache) decides which
 * keys are resident and its slot numbers index the area directly, so that
 * promotion and eviction never move data.  A key is (layer index << 40 |
 * block number): injective, so two layers can never share an entry, and a
 * layer index is reused only once no block of its former layer is cached
 * and nothing can reach that layer (recycle_locked), so a layer that
 * changed (a new identity, a new index) can never reach the blocks of its
 * former self, and a client that registers layers for ever cannot exhaust
 * the indices.
 *
 * Twophase knows keys and slots, not whether a slot's bytes are ready.  Each
 * slot therefore has a tag, key << 2 | state (EMPTY, FILLING, VALID), and a
 * reader count:
 *   hit:   lookup -> slot; readers++; tag == VALID(key)? copy; readers--.
 *   fill:  insert(pin) -> slot; CAS tag -> FILLING(key); wait for readers
 *          to reach 0; pread into the slot; tag = VALID(key); wake waiters.
 * Both sides use sequentially consistent atomics, so either the reader sees
 * the tag change (and does not copy) or the filler sees the reader (and
 * waits): no reader ever copies bytes that are being overwritten, so a
 * client's buffer never holds, even for an instant, bytes of another layer.
 * A hit costs twophase's lock-free lookup and two atomics on its slot.
 *
 * Single flight: the CAS to FILLING(key) succeeds for one thread; the others
 * find FILLING(key) and wait on a condition variable until it becomes
 * VALID(key) (or EMPTY, after a failed read: they then try themselves).  The
 * filler holds a twophase pin, so the slot cannot be evicted while it fills.
 * If every slot of a shard is pinned, the read goes straight from the layer
 * into the client's buffer, uncached.
 *
 * Layers.  A client passes a read-only descriptor; the store reopens the
 * file through /proc/self/fd (the same inode, checked; with O_DIRECT too
 * where the file system allows it), derives the identity from fstat, and
 * on a regular file takes a read lease.  The kernel grants a read lease only
 * while nobody holds the file open for writing, and breaks it (with a signal
 * to the daemon, SD_LEASE_SIGNAL) before it lets anyone open it for writing
 * or truncate it: the daemon then marks the layer dead before the writer
 * can proceed, so a modified layer is never served from the cache.  Where
 * no lease can be had (block devices, file systems without leases), the
 * client's own descriptors are inspected for writers and the identity is
 * re-checked with fstat before every batch (sd_layer_verify). */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <dirent.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cache/twophase.h"
#include "common/util.h"
#include "rbd.h"

/* RBD layers kept (cached, their images closed) once no registration
 * holds them; beyond, unregistered ones are dropped to make room. */
#define SD_MAX_RBD_LIVE 64

enum { ST_EMPTY = 0, ST_FILLING = 1, ST_VALID = 2 };

static inline uint64_t key_of(const struct sd_layer *l, uint64_t block)
{
  return (uint64_t)l->index << SD_BLOCK_BITS | block;
}
static inline uint64_t tag_of(uint64_t key, unsigned st) { return key << 2 | st; }
static inline uint32_t layer_of_key(uint64_t key) { return (uint32_t)(key >> SD_BLOCK_BITS); }

int sd_lease_signal(void) { return SIGRTMIN + 2; }

int sd_store_init(struct sd_store *s, uint64_t memory, uint32_t block_size)
{
  memset(s, 0, sizeof *s);
  if (!SL_IS_POWER_OF_2(block_size) || block_size < 4096 || block_size > (2u << 20))
    return sl_error(EINVAL, "block size %u: not a power of two in [4 KiB, 2 MiB]", block_size);
  s->block_size = block_size;
  s->shift = (uint32_t)__builtin_ctz(block_size);
  s->nblocks = memory / block_size;
  if (s->nblocks < 16)
    return sl_error(EINVAL, "memory %" PRIu64 " bytes: fewer than 16 blocks of %u bytes",
                    memory, block_size);
  if (s->nblocks >= (1u << 30))
    return sl_error(EINVAL, "memory %" PRIu64 " bytes: 2^30 blocks or more of %u bytes",
                    memory, block_size);
  /* Reserved once; pages are faulted in as blocks fill and stay (the area
   * never shrinks or moves). */
  void *d = mmap(NULL, s->nblocks * block_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (d == MAP_FAILED)
    return sl_error(errno, "cannot map a data area of %" PRIu64 " bytes: %s",
                    s->nblocks * block_size, strerror(errno));
  s->data = d;
  struct sl_twophase_params p = {.capacity = s->nblocks};
  s->tp = sl_twophase_create(&p);
  s->tag = sl_zalloc_lines(s->nblocks * sizeof *s->tag);
  s->readers = sl_zalloc_lines(s->nblocks * sizeof *s->readers);
  if (!s->tp || !s->tag || !s->readers) {
    sd_store_fini(s);
    return sl_error(ENOMEM, "out of memory for the metadata of %" PRIu64 " blocks", s->nblocks);
  }
  pthread_mutex_init(&s->fill_lock, NULL);
  pthread_cond_init(&s->fill_cv, NULL);
  pthread_mutex_init(&s->layers_lock, NULL);
  pthread_mutex_init(&s->close_lock, NULL);
  s->max_layers = SD_MAX_LAYERS;
  s->next_index = 1; /* index 0 is never a layer: a zero tag names nothing */
  return 0;
}

void sd_store_fini(struct sd_store *s)
{
  if (s->tp)
    sl_twophase_destroy(s->tp);
  free(s->tag);
  free(s->readers);
  if (s->data)
    munmap(s->data, s->nblocks * s->block_size);
  for (size_t i = 0; i < SL_ARRAY_SIZE(s->dir); i++) {
    if (!s->dir[i])
      continue;
    for (size_t j = 0; j < 4096; j++) {
      struct sd_layer *l = s->dir[i][j];
      if (!l)
        continue;
      if (l->fd >= 0)
        close(l->fd);
      if (l->dfd >= 0)
        close(l->dfd);
      sd_rbd_close(l->rbd);
      free(l->rbd_id);
      free(l);
    }
    free(s->dir[i]);
  }
  sd_store_reap(s);
  free(s->closeq);
  free(s->free_idx);
  memset(s, 0, sizeof *s);
}

/* ---- layers ------------------------------------------------------------ */

struct sd_layer *sd_layer_at(struct sd_store *s, uint32_t index)
{
  if (index >= SD_MAX_LAYERS || !s->dir[index >> 12])
    return NULL;
  return s->dir[index >> 12][index & 4095];
}

static bool same_identity(const struct sd_layer *l, const struct stat *st, uint64_t size)
{
  return l->dev == st->st_dev && l->ino == st->st_ino && l->size == size &&
         l->mtime.tv_sec == st->st_mtim.tv_sec && l->mtime.tv_nsec == st->st_mtim.tv_nsec &&
         l->ctime.tv_sec == st->st_ctim.tv_sec && l->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

static int file_size(int fd, const struct stat *st, uint64_t *size)
{
  if (S_ISREG(st->st_mode)) {
    *size = (uint64_t)st->st_size;
    return 0;
  }
  if (ioctl(fd, BLKGETSIZE64, size) < 0)
    return -errno;
  return 0;
}

/* Does process PID hold a descriptor open for writing on (DEV, INO)?  What
 * /proc lets us see: its fd table and each one's flags in fdinfo. */
static bool client_holds_writable(pid_t pid, dev_t dev, ino_t ino, bool blk, dev_t rdev)
{
  if (pid <= 0)
    return false;
  char dpath[64];
  snprintf(dpath, sizeof dpath, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(dpath);
  if (!d)
    return false;
  bool found = false;
  struct dirent *de;
  while (!found && (de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    char p[300];
    struct stat st;
    snprintf(p, sizeof p, "/proc/%d/fd/%s", (int)pid, de->d_name);
    if (stat(p, &st) < 0)
      continue;
    bool same = blk ? (S_ISBLK(st.st_mode) && st.st_rdev == rdev)
                    : (st.st_dev == dev && st.st_ino == ino);
    if (!same)
      continue;
    snprintf(p, sizeof p, "/proc/%d/fdinfo/%s", (int)pid, de->d_name);
    FILE *f = fopen(p, "re");
    if (!f)
      continue;
    char line[128];
    while (fgets(line, sizeof line, f)) {
      unsigned flags;
      if (sscanf(line, "flags: %o", &flags) == 1 && (flags & O_ACCMODE) != O_RDONLY)
        found = true;
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

/* What the queue holds: a descriptor, or an RBD snapshot (fd -1). */
struct sd_closing {
  int fd;
  struct sd_rbd *rbd;
};

static void close_now(struct sd_closing x)
{
  if (x.rbd)
    sd_rbd_close(x.rbd);
  else
    close(x.fd);
}

static void close_later(struct sd_store *s, struct sd_closing x)
{
  pthread_mutex_lock(&s->close_lock);
  if (s->n_close == s->cap_close) {
    size_t cap = s->cap_close ? 2 * s->cap_close : 64;
    struct sd_closing *q = realloc(s->closeq, cap * sizeof *q);
    if (!q) {
      pthread_mutex_unlock(&s->close_lock);
      close_now(x); /* out of memory: better a wait than a leak */
      return;
    }
    s->closeq = q;
    s->cap_close = cap;
  }
  s->closeq[s->n_close++] = x;
  pthread_mutex_unlock(&s->close_lock);
}

void sd_store_close_later(struct sd_store *s, int fd)
{
  if (fd >= 0)
    close_later(s, (struct sd_closing){.fd = fd});
}

static void rbd_close_later(struct sd_store *s, struct sd_rbd *r)
{
  if (r)
    close_later(s, (struct sd_closing){.fd = -1, .rbd = r});
}

void sd_store_reap(struct sd_store *s)
{
  for (;;) {
    pthread_mutex_lock(&s->close_lock);
    bool any = s->n_close > 0;
    struct sd_closing x = any ? s->closeq[--s->n_close] : (struct sd_closing){-1, NULL};
    pthread_mutex_unlock(&s->close_lock);
    if (!any)
      return;
    close_now(x);
  }
}

/* Under layers_lock.  The descriptors are closed by the housekeeping
 * thread, which is also the only one that uses them without the lock (the
 * sweep), so a number stays valid while the sweep looks at it. */
static void release_files(struct sd_store *s, struct sd_layer *l)
{
  if (l->lease_held)
    fcntl(l->fd, F_SETLEASE, F_UNLCK);
  l->lease_held = false;
  sd_store_close_later(s, l->fd);
  sd_store_close_later(s, l->dfd);
  l->fd = l->dfd = -1;
  rbd_close_later(s, l->rbd);
  l->rbd = NULL;
}

/* Under layers_lock: take L off the live list. */
static void unlink_live(struct sd_store *s, struct sd_layer *l)
{
  for (struct sd_layer **pp = &s->live; *pp; pp = &(*pp)->next_live)
    if (*pp == l) {
      *pp = l->next_live;
      l->next_live = NULL;
      return;
    }
}

/* Under layers_lock. */
static void kill_locked(struct sd_store *s, struct sd_layer *l, const char *why)
{
  if (atomic_exchange(&l->dead, true))
    return;
  fprintf(stderr, "sluiced: layer %u (%s) is stale from now on: %s\n", l->index, l->path, why);
  /* Let the writer go on (a broken lease is released only once the layer is
   * dead); the descriptors stay open while registrations may still be using
   * them in a fill, and close with the last one. */
  if (l->lease_held) {
    fcntl(l->fd, F_SETLEASE, F_UNLCK);
    l->lease_held = false;
  }
  unlink_live(s, l);
  if (l->rbd_id)
    s->live_rbd--;
  l->next_live = s->dead;
  s->dead = l;
  if (atomic_load(&l->refs) == 0)
    release_files(s, l);
}

/* Under layers_lock: free the dead layers nothing refers to any more and
 * keep their indices for reuse.  A layer index is part of every cache key
 * of the layer, so it may name a new file only once no slot holds a block
 * under it (resident 0: a VALID tag always counts in resident, and a fill
 * only runs under a registration) and no registration, no sweep and no
 * STATS page (all under this lock) can reach the old layer.  Keys of it
 * may linger in twophase (ghosts, or a slot whose tag moved on): they
 * only steer the policy, since bytes are served only under a VALID tag,
 * which a recycled index's new layer sets itself after filling. */
static void recycle_locked(struct sd_store *s)
{
  for (struct sd_layer **pp = &s->dead; *pp;) {
    struct sd_layer *l = *pp;
    if (atomic_load(&l->refs) != 0 || atomic_load(&l->c.resident) != 0 || l->busy) {
      pp = &l->next_live;
      continue;
    }
    if (s->n_free == s->cap_free) {
      size_t cap = s->cap_free ? 2 * s->cap_free : 256;
      uint32_t *f = realloc(s->free_idx, cap * sizeof *f);
      if (!f)
        return; /* try again on the next sweep */
      s->free_idx = f;
      s->cap_free = cap;
    }
    *pp = l->next_live;
    if (l->fd >= 0 || l->dfd >= 0 || l->rbd)
      release_files(s, l);
    s->dir[l->index >> 12][l->index & 4095] = NULL;
    s->free_idx[s->n_free++] = l->index;
    s->recycled++;
    free(l->rbd_id);
    free(l);
  }
}

void sd_layer_kill(struct sd_store *s, struct sd_layer *l, const char *why)
{
  pthread_mutex_lock(&s->layers_lock);
  kill_locked(s, l, why);
  pthread_mutex_unlock(&s->layers_lock);
}

struct sd_layer *sd_layer_by_fd(struct sd_store *s, int fd)
{
  pthread_mutex_lock(&s->layers_lock);
  struct sd_layer *l = s->live;
  while (l && l->fd != fd)
    l = l->next_live;
  pthread_mutex_unlock(&s->layers_lock);
  return l;
}

/* Under layers_lock: a new layer record with a free index (not yet
 * reachable), or NULL with -errno in *ERR and a message. */
static struct sd_layer *alloc_layer_locked(struct sd_store *s, int *err)
{
  if (s->next_index >= s->max_layers && s->n_free == 0)
    recycle_locked(s);
  if (s->next_index >= s->max_layers && s->n_free == 0) {
    *err = sl_error(ENOSPC, "no layer index left (%u layers known, live or still cached)",
                    s->max_layers - 1);
    return NULL;
  }
  bool fresh = s->next_index < s->max_layers;
  uint32_t idx = fresh ? s->next_index : s->free_idx[s->n_free - 1];
  struct sd_layer ***chunk = &s->dir[idx >> 12];
  if (!*chunk)
    *chunk = calloc(4096, sizeof **chunk);
  struct sd_layer *l = *chunk ? calloc(1, sizeof *l) : NULL;
  if (!l) {
    *err = sl_error(ENOMEM, "out of memory for a layer");
    return NULL;
  }
  if (fresh)
    s->next_index++;
  else
    s->n_free--;
  l->index = idx;
  l->fd = l->dfd = -1;
  return l;
}

/* Under layers_lock: make L (from alloc_layer_locked, filled in) live. */
static void publish_locked(struct sd_store *s, struct sd_layer *l)
{
  s->dir[l->index >> 12][l->index & 4095] = l;
  l->next_live = s->live;
  s->live = l;
}

struct sd_layer *sd_layer_register_rbd(struct sd_store *s, const struct sl_cs_register_rbd *req,
                                       int *err)
{
  char id[SL_CS_RBD_MON + 160], name[SL_CS_PATH_MAX];
  uint64_t size = 0;
  struct sd_rbd *r = NULL;
  int e = sd_rbd_open(req, &r, id, sizeof id, name, sizeof name, &size);
  if (e < 0) {
    *err = e;
    return NULL;
  }
  if ((size >> s->shift) >= (1ull << SD_BLOCK_BITS)) {
    sd_rbd_close(r);
    *err = sl_error(EFBIG, "%s: %" PRIu64 " bytes is too large for the cache", name, size);
    return NULL;
  }
  pthread_mutex_lock(&s->layers_lock);
  /* The same snapshot of the same cluster, registered before: share it
   * (this client has just shown that it may read it).  Unregistered, it
   * was closed: it takes this image. */
  for (struct sd_layer *l = s->live; l; l = l->next_live)
    if (l->rbd_id && !strcmp(l->rbd_id, id) && !atomic_load(&l->dead)) {
      atomic_fetch_add(&l->refs, 1);
      if (!l->rbd) {
        l->rbd = r;
        r = NULL;
      }
      pthread_mutex_unlock(&s->layers_lock);
      sd_rbd_close(r);
      return l;
    }
  /* Room for one more open snapshot: drop one nobody holds. */
  if (s->live_rbd >= SD_MAX_RBD_LIVE) {
    for (struct sd_layer *l = s->live; l; l = l->next_live)
      if (l->rbd_id && atomic_load(&l->refs) == 0) {
        kill_locked(s, l, "unregistered, making room for another RBD snapshot");
        break;
      }
  }
  if (s->live_rbd >= SD_MAX_RBD_LIVE) {
    pthread_mutex_unlock(&s->layers_lock);
    sd_rbd_close(r);
    *err = sl_error(EMFILE, "%s: %d RBD snapshots registered, the daemon's limit", name,
                    SD_MAX_RBD_LIVE);
    return NULL;
  }
  char *dup = strdup(id);
  struct sd_layer *l = dup ? alloc_layer_locked(s, err) : NULL;
  if (!l) {
    if (!dup)
      *err = sl_error(ENOMEM, "out of memory for a layer");
    pthread_mutex_unlock(&s->layers_lock);
    free(dup);
    sd_rbd_close(r);
    return NULL;
  }
  l->size = size;
  l->rbd = r;
  l->rbd_id = dup;
  atomic_init(&l->refs, 1);
  snprintf(l->path, sizeof l->path, "%s", name);
  s->live_rbd++;
  publish_locked(s, l);
  pthread_mutex_unlock(&s->layers_lock);
  return l;
}

struct sd_layer *sd_layer_register(struct sd_store *s, int fd, bool private_,
                                   pid_t client_pid, int *err)
{
  int fl = fcntl(fd, F_GETFL);
  struct stat st;
  if (fl < 0 || fstat(fd, &st) < 0) {
    *err = sl_error(EBADF, "layer descriptor: %s", strerror(errno));
    return NULL;
  }
  if (fl & O_PATH) {
    *err = sl_error(EBADF, "layer descriptor is an O_PATH descriptor: pass one open for reading");
    return NULL;
  }
  if ((fl & O_ACCMODE) != O_RDONLY) {
    *err = sl_error(ETXTBSY, "layer descriptor is open for writing: pass one open read-only");
    return NULL;
  }
  bool blk = S_ISBLK(st.st_mode);
  if (!S_ISREG(st.st_mode) && !blk) {
    *err = sl_error(EINVAL, "layer descriptor is neither a regular file nor a block device");
    return NULL;
  }
  if (blk && !private_) {
    /* Nothing tells the daemon when a writable device changes (no lease,
     * no useful times), so only a device the kernel holds read-only is
     * shared; a writable one may still be cached privately. */
    int ro = 0;
    if (ioctl(fd, BLKROGET, &ro) < 0 || !ro) {
      *err = sl_error(EROFS, "layer descriptor is a writable block device: only a read-only "
                             "device (blockdev --setro) is shared");
      return NULL;
    }
  }
  uint64_t size;
  int r = file_size(fd, &st, &size);
  if (r < 0) {
    *err = sl_error(-r, "layer descriptor: cannot read the device size: %s", strerror(-r));
    return NULL;
  }
  if ((size >> s->shift) >= (1ull << SD_BLOCK_BITS)) {
    *err = sl_error(EFBIG, "layer of %" PRIu64 " bytes is too large for the cache", size);
    return NULL;
  }

  /* The daemon's own descriptors on the same inode: a read-only one that
   * carries the lease, and an O_DIRECT one for fills where it works. */
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  int myfd = open(self, O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (myfd < 0)
    myfd = open(self, O_RDONLY | O_CLOEXEC);
  struct stat st2;
  if (myfd < 0 || fstat(myfd, &st2) < 0 || st2.st_dev != st.st_dev ||
      st2.st_ino != st.st_ino) {
    int e = myfd < 0 ? errno : EINVAL;
    if (myfd >= 0)
      close(myfd);
    *err = sl_error(e, "layer descriptor: cannot reopen the file it names: %s", strerror(e));
    return NULL;
  }
  int dfd = open(self, O_RDONLY | O_CLOEXEC | O_DIRECT | O_NOATIME);
  if (dfd < 0)
    dfd = open(self, O_RDONLY | O_CLOEXEC | O_DIRECT);

  bool lease = false;
  if (!private_ && !blk) {
    if (fcntl(myfd, F_SETSIG, sd_lease_signal()) == 0 &&
        fcntl(myfd, F_SETLEASE, F_RDLCK) == 0) {
      lease = true;
    } else if (errno == EAGAIN || errno == EBUSY) {
      close(myfd);
      if (dfd >= 0)
        close(dfd);
      *err = sl_error(ETXTBSY, "layer file is open for writing by some process: "
                      "only read-only layers are shared");
      return NULL;
    }
    /* EACCES, EINVAL (no lease support): fall back to the checks below */
  }
  if (!private_ && !lease &&
      client_holds_writable(client_pid, st.st_dev, st.st_ino, blk, st.st_rdev)) {
    close(myfd);
    if (dfd >= 0)
      close(dfd);
    *err = sl_error(ETXTBSY, "layer file is open for writing by the registering process");
    return NULL;
  }
  /* The identity as of now, after the lease: no writer can have moved it
   * since without breaking the lease. */
  if (fstat(myfd, &st2) < 0 || file_size(myfd, &st2, &size) < 0) {
    *err = sl_error(EIO, "layer descriptor: cannot stat the file");
    goto fail;
  }

  pthread_mutex_lock(&s->layers_lock);
  if (!private_) {
    for (struct sd_layer *l = s->live; l; l = l->next_live) {
      if (l->private_ || l->dev != st2.st_dev || l->ino != st2.st_ino)
        continue;
      if (same_identity(l, &st2, size) && !atomic_load(&l->dead)) {
        atomic_fetch_add(&l->refs, 1);
        pthread_mutex_unlock(&s->layers_lock);
        close(myfd); /* drops our second lease; the layer keeps its own */
        if (dfd >= 0)
          close(dfd);
        return l;
      }
      kill_locked(s, l, "its file changed (size or times)");
      break;
    }
  }
  struct sd_layer *l = alloc_layer_locked(s, err);
  if (!l) {
    pthread_mutex_unlock(&s->layers_lock);
    goto fail;
  }
  l->dev = st2.st_dev;
  l->ino = st2.st_ino;
  l->size = size;
  l->mtime = st2.st_mtim;
  l->ctime = st2.st_ctim;
  l->blockdev = blk;
  l->private_ = private_;
  l->lease = lease;
  l->lease_held = lease;
  l->direct = dfd >= 0;
  l->fd = myfd;
  l->dfd = dfd;
  atomic_init(&l->refs, 1);
  ssize_t n = readlink(self, l->path, sizeof l->path - 1);
  if (n < 0)
    snprintf(l->path, sizeof l->path, "(dev %ju ino %ju)", (uintmax_t)l->dev,
             (uintmax_t)l->ino);
  publish_locked(s, l);
  pthread_mutex_unlock(&s->layers_lock);
  return l;

fail:
  close(myfd);
  if (dfd >= 0)
    close(dfd);
  return NULL;
}

void sd_layer_unregister(struct sd_store *s, struct sd_layer *l)
{
  pthread_mutex_lock(&s->layers_lock);
  if (atomic_fetch_sub(&l->refs, 1) == 1) {
    /* Nobody can start a fill on it any more.  A private or unguarded
     * layer cannot be trusted once nobody holds it: it dies.  A leased one
     * stays cached (the lease still guards it) until its file changes or
     * is deleted. */
    if (!l->rbd_id && (l->private_ || !l->lease))
      kill_locked(s, l, l->private_ ? "private layer released" : "released (no lease)");
    if (atomic_load(&l->dead))
      release_files(s, l);
    /* An RBD snapshot stays cached, closed: its blocks need no open
     * image, and the image holds a Ceph connection, which then goes with
     * the last registration of its client (the daemon's connections are
     * few).  The next registration opens it again anyway, to check that
     * client's rights, and the layer keeps that image. */
    if (l->rbd) {
      rbd_close_later(s, l->rbd);
      l->rbd = NULL;
    }
  }
  pthread_mutex_unlock(&s->layers_lock);
}

int sd_layer_verify(struct sd_layer *l, struct sd_store *s)
{
  if (atomic_load_explicit(&l->dead, memory_order_acquire))
    return -ESTALE;
  if (l->lease || l->blockdev || l->private_ || l->rbd_id)
    return 0; /* guarded otherwise, or (RBD snapshots) immutable */
  struct stat st;
  uint64_t size;
  if (fstat(l->fd, &st) < 0 || file_size(l->fd, &st, &size) < 0 ||
      !same_identity(l, &st, size)) {
    sd_layer_kill(s, l, "its file changed (size or times)");
    return -ESTALE;
  }
  return 0;
}

void sd_layer_sweep(struct sd_store *s)
{
  /* Pin the live layers and note their descriptors under the lock, look at
   * them without it (fstat of a FUSE file waits for its server), decide
   * under it again.  The descriptors stay open meanwhile: only
   * sd_store_reap closes them, on the caller's thread. */
  struct pin {
    struct sd_layer *l;
    int fd;
    bool lease, blockdev, rbd;
    const char *why;
  } *p = NULL;
  size_t n = 0;
  pthread_mutex_lock(&s->layers_lock);
  for (struct sd_layer *l = s->live; l; l = l->next_live)
    n++;
  if (n)
    p = malloc(n * sizeof *p);
  n = 0;
  for (struct sd_layer *l = s->live; l && p; l = l->next_live) {
    l->busy++;
    p[n++] = (struct pin){l, l->fd, l->lease_held, l->blockdev, l->rbd_id != NULL, NULL};
  }
  pthread_mutex_unlock(&s->layers_lock);
  for (size_t i = 0; i < n; i++) {
    struct sd_layer *l = p[i].l;
    struct stat st = {.st_nlink = 1};
    uint64_t size;
    if (p[i].rbd)
      continue; /* a snapshot never changes */
    if (p[i].lease && fcntl(p[i].fd, F_GETLEASE) != F_RDLCK)
      p[i].why = "someone opened it for writing (lease broken)";
    else if (!p[i].blockdev &&
             (fstat(p[i].fd, &st) < 0 || file_size(p[i].fd, &st, &size) < 0 ||
              !same_identity(l, &st, size)))
      p[i].why = "its file changed (size or times)";
    else if (st.st_nlink == 0)
      p[i].why = "deleted and no longer registered"; /* if so, below */
  }
  pthread_mutex_lock(&s->layers_lock);
  for (size_t i = 0; i < n; i++) {
    struct sd_layer *l = p[i].l;
    l->busy--;
    bool deleted = p[i].why && !strncmp(p[i].why, "deleted", 7);
    if (p[i].why && (!deleted || atomic_load(&l->refs) == 0))
      kill_locked(s, l, p[i].why);
  }
  recycle_locked(s);
  pthread_mutex_unlock(&s->layers_lock);
  free(p);
}

/* ---- blocks ------------------------------------------------------------ */

static void wake_waiters(struct sd_store *s)
{
  pthread_mutex_lock(&s->fill_lock);
  pthread_cond_broadcast(&s->fill_cv);
  pthread_mutex_unlock(&s->fill_lock);
}

static void wait_fill(struct sd_store *s, uint32_t slot, uint64_t filling)
{
  pthread_mutex_lock(&s->fill_lock);
  while (atomic_load(&s->tag[slot]) == filling)
    pthread_cond_wait(&s->fill_cv, &s->fill_lock);
  pthread_mutex_unlock(&s->fill_lock);
}

/* Copy from a slot that holds KEY, under the reader protocol; false if the
 * slot does not (any more). */
static bool copy_if_valid(struct sd_store *s, uint32_t slot, uint64_t key, uint32_t in_off,
                          uint32_t len, uint8_t *dst)
{
  atomic_fetch_add(&s->readers[slot], 1);
  bool ok = atomic_load(&s->tag[slot]) == tag_of(key, ST_VALID);
  if (ok)
    memcpy(dst, s->data + ((size_t)slot << s->shift) + in_off, len);
  atomic_fetch_sub(&s->readers[slot], 1);
  return ok;
}

/* Read block BLOCK of L from the file into BUF (block_size bytes, aligned):
 * O_DIRECT when the layer allows it.  Every byte of the slot past what was
 * read is zeroed: the slot last held some other layer's block, possibly
 * another client's, and the last block of a layer whose size is not a
 * block multiple is copied out whole by a read that crosses the end.
 * Bytes read or -errno. */
static long read_block(struct sd_store *s, struct sd_layer *l, uint64_t block, uint8_t *buf)
{
  uint64_t off = block << s->shift;
  size_t want = s->block_size;
  if (off + want > l->size)
    want = (size_t)(l->size - off);
  if (l->rbd) {
    long n = sd_rbd_read(l->rbd, buf, want, off);
    if (n < 0)
      return n;
    /* librbd reads a whole range inside the snapshot (zeros for holes):
     * less is a fault, and caching zeros for it would serve wrong bytes
     * to every client until eviction */
    if ((size_t)n < want)
      return sl_error(EIO, "rbd: short read of %zu bytes at %" PRIu64 " (%ld read)", want,
                      off, n);
    memset(buf + want, 0, s->block_size - want);
    return (long)want;
  }
  /* the whole block, so that O_DIRECT sees an aligned length; a range that
   * does not take O_DIRECT is read buffered */
  long got = sl_pread_count(l->dfd >= 0 ? l->dfd : l->fd, l->fd, buf, s->block_size, off);
  if (got < 0)
    return got;
  if ((size_t)got > want) {
    memset(buf + want, 0, (size_t)got - want); /* the file grew: not ours */
    got = (long)want;
  }
  return got; /* sl_pread_count zeroed the rest of the block */
}

/* Bring block BLOCK of L into the cache (or wait for the thread that does)
 * and copy [in_off, in_off+len) of it to DST.  0 or -errno. */
static void forget_slot(struct sd_store *s, uint32_t slot, uint64_t t);

static int fill_and_copy(struct sd_store *s, struct sd_layer *l, uint64_t block,
                         uint32_t in_off, uint32_t len, uint8_t *dst)
{
  uint64_t key = key_of(l, block);
  for (int attempt = 0; attempt < 8; attempt++) {
    uint64_t evicted;
    bool did_evict;
    uint32_t slot = sl_twophase_insert(s->tp, key, true, &evicted, &did_evict);
    if (slot == SL_TWOPHASE_NONE)
      break; /* every slot of the shard pinned: read through below */
    uint64_t t = atomic_load(&s->tag[slot]);
    if (t == tag_of(key, ST_VALID)) {
      bool ok = copy_if_valid(s, slot, key, in_off, len, dst);
      sl_twophase_unpin(s->tp, slot);
      if (ok)
        return 0;
      continue;
    }
    if (t == tag_of(key, ST_FILLING)) {
      sl_twophase_unpin(s->tp, slot);
      wait_fill(s, slot, t);
      continue;
    }
    if (!atomic_compare_exchange_strong(&s->tag[slot], &t, tag_of(key, ST_FILLING))) {
      sl_twophase_unpin(s->tp, slot);
      continue;
    }
    /* Ours.  Account for the block it held, then let its readers finish. */
    if ((t & 3) == ST_VALID) {
      pthread_mutex_lock(&s->layers_lock);
      struct sd_layer *old = sd_layer_at(s, layer_of_key(t >> 2));
      pthread_mutex_unlock(&s->layers_lock);
      if (old)
        atomic_fetch_sub(&old->c.resident, 1);
      atomic_fetch_sub(&s->c.resident, 1);
    }
    while (atomic_load(&s->readers[slot]) != 0) {
      atomic_fetch_add_explicit(&s->fill_wait_spins, 1, memory_order_relaxed);
      sched_yield();
    }
    uint8_t *b = s->data + ((size_t)slot << s->shift);
    /* An invalidation that runs while we read finds this slot FILLING and
     * skips it; the generations tell us afterwards that it happened. */
    uint64_t gen = atomic_load(&l->inval_gen), sgen = atomic_load(&s->inval_gen);
    long n = read_block(s, l, block, b);
    if (n >= 0 && atomic_load(&l->dead))
      n = -ESTALE; /* changed while we read: keep nothing of it */
    if (n < 0) {
      atomic_store(&s->tag[slot], tag_of(0, ST_EMPTY));
      wake_waiters(s);
      sl_twophase_unpin(s->tp, slot);
      sl_twophase_remove(s->tp, key);
      return (int)n;
    }
    atomic_fetch_add_explicit(&l->c.fills, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->c.backend_bytes, (uint64_t)n, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->c.fills, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->c.backend_bytes, (uint64_t)n, memory_order_relaxed);
    atomic_fetch_add(&l->c.resident, 1);
    atomic_fetch_add(&s->c.resident, 1);
    memcpy(dst, b + in_off, len); /* pinned and ours: no reader protocol needed */
    atomic_store(&s->tag[slot], tag_of(key, ST_VALID));
    wake_waiters(s);
    sl_twophase_unpin(s->tp, slot);
    /* Published first, generations checked second (both seq_cst): either
     * an invalidation that overlapped the read sees VALID and forgets the
     * block, or we see its generation here and forget it ourselves.  The
     * caller keeps its copy: its read was concurrent with the write. */
    if (atomic_load(&l->inval_gen) != gen || atomic_load(&s->inval_gen) != sgen)
      forget_slot(s, slot, tag_of(key, ST_VALID));
    return 0;
  }
  /* No slot to be had: read this piece straight from the file. */
  uint64_t poff = (block << s->shift) + in_off;
  long got;
  if (l->rbd) {
    uint32_t n = poff >= l->size ? 0 : (uint32_t)SL_MIN((uint64_t)len, l->size - poff);
    got = n ? sd_rbd_read(l->rbd, dst, n, poff) : 0;
    if (got >= 0 && (uint64_t)got < n)
      got = sl_error(EIO, "rbd: short read of %u bytes at %" PRIu64 " (%ld read)", n, poff,
                     got);
    else if (got >= 0)
      memset(dst + n, 0, len - n); /* past the end of the snapshot */
  } else {
    got = sl_pread_count(l->fd, -1, dst, len, poff);
  }
  if (got < 0)
    return (int)got;
  atomic_fetch_add_explicit(&l->c.backend_bytes, (uint64_t)got, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->c.backend_bytes, (uint64_t)got, memory_order_relaxed);
  return atomic_load(&l->dead) ? -ESTALE : 0;
}

int sd_store_read(struct sd_store *s, struct sd_layer *l, uint64_t off, uint32_t len,
                  uint8_t *dst, bool *hit)
{
  *hit = true;
  if (atomic_load_explicit(&l->dead, memory_order_acquire))
    return -ESTALE;
  if (off >= l->size && !(off == 0 && l->size == 0))
    return -EINVAL;
  uint64_t hits = 0, misses = 0, unreported = 0;
  int ret = 0;
  while (len > 0) {
    uint64_t block = off >> s->shift;
    uint32_t in_off = (uint32_t)(off & (s->block_size - 1));
    uint32_t n = SL_MIN(len, s->block_size - in_off);
    if (off >= l->size) {
      memset(dst, 0, n); /* past the end: zeros, as from a sparse tail */
    } else {
      uint64_t key = key_of(l, block);
      uint32_t slot = sl_twophase_lookup(s->tp, key);
      unreported++;
      if (slot != SL_TWOPHASE_NONE && copy_if_valid(s, slot, key, in_off, n, dst)) {
        hits++;
      } else {
        misses++;
        *hit = false;
        /* the climber's requests, before the insert credits them */
        sl_twophase_count_requests(s->tp, unreported);
        unreported = 0;
        ret = fill_and_copy(s, l, block, in_off, n, dst);
        if (ret < 0)
          break;
      }
    }
    off += n;
    dst += n;
    len -= n;
  }
  /* A layer that died while we copied may have handed out bytes the
   * writer has since replaced: those requests raced with the write, which
   * is allowed; but report it, so a client that asked after it is told. */
  if (ret == 0 && atomic_load_explicit(&l->dead, memory_order_acquire))
    ret = -ESTALE;
  if (unreported)
    sl_twophase_count_requests(s->tp, unreported);
  if (hits) {
    atomic_fetch_add_explicit(&l->c.hits, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->c.hits, hits, memory_order_relaxed);
  }
  if (misses) {
    atomic_fetch_add_explicit(&l->c.misses, misses, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->c.misses, misses, memory_order_relaxed);
  }
  return ret;
}

int sd_store_read_cached(struct sd_store *s, struct sd_layer *l, uint64_t off, uint32_t len,
                         uint8_t *dst)
{
  if (atomic_load_explicit(&l->dead, memory_order_acquire))
    return -ESTALE;
  if (off >= l->size && !(off == 0 && l->size == 0))
    return -EINVAL;
  uint64_t hits = 0;
  while (len > 0) {
    uint64_t block = off >> s->shift;
    uint32_t in_off = (uint32_t)(off & (s->block_size - 1));
    uint32_t n = SL_MIN(len, s->block_size - in_off);
    if (off >= l->size) {
      memset(dst, 0, n);
    } else {
      uint64_t key = key_of(l, block);
      uint32_t slot = sl_twophase_lookup(s->tp, key);
      if (slot == SL_TWOPHASE_NONE || !copy_if_valid(s, slot, key, in_off, n, dst))
        return 0; /* the caller goes the slow way, which counts */
      hits++;
    }
    off += n;
    dst += n;
    len -= n;
  }
  if (atomic_load_explicit(&l->dead, memory_order_acquire))
    return -ESTALE;
  sl_twophase_count_requests(s->tp, hits); /* the climber's requests */
  atomic_fetch_add_explicit(&l->c.hits, hits, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->c.hits, hits, memory_order_relaxed);
  return 1;
}

/* Forget the block in SLOT if its tag is T (VALID): EMPTY, then out of
 * twophase. */
static void forget_slot(struct sd_store *s, uint32_t slot, uint64_t t)
{
  if (!atomic_compare_exchange_strong(&s->tag[slot], &t, tag_of(0, ST_EMPTY)))
    return;
  pthread_mutex_lock(&s->layers_lock);
  struct sd_layer *old = sd_layer_at(s, layer_of_key(t >> 2));
  pthread_mutex_unlock(&s->layers_lock);
  if (old)
    atomic_fetch_sub(&old->c.resident, 1);
  atomic_fetch_sub(&s->c.resident, 1);
  sl_twophase_remove(s->tp, t >> 2);
}

void sd_store_invalidate(struct sd_store *s, struct sd_layer *l, uint64_t off, uint64_t len)
{
  uint64_t first = off >> s->shift;
  uint64_t last = (len == UINT64_MAX || off + len < off) ? UINT64_MAX
                                                         : (off + len - 1) >> s->shift;
  if (len == 0)
    return;
  /* Before the scan: a fill in progress checks it after publishing. */
  if (l)
    atomic_fetch_add(&l->inval_gen, 1);
  else
    atomic_fetch_add(&s->inval_gen, 1);
  if (l && last != UINT64_MAX && last - first < s->nblocks) {
    for (uint64_t b = first; b <= last; b++) {
      uint64_t key = key_of(l, b);
      uint32_t slot = sl_twophase_pin(s->tp, key);
      if (slot == SL_TWOPHASE_NONE)
        continue;
      uint64_t t = atomic_load(&s->tag[slot]);
      sl_twophase_unpin(s->tp, slot);
      if (t == tag_of(key, ST_VALID))
        forget_slot(s, slot, t);
    }
    return;
  }
  /* A range larger than the cache: walk the slots instead. */
  for (uint64_t slot = 0; slot < s->nblocks; slot++) {
    uint64_t t = atomic_load(&s->tag[slot]);
    if ((t & 3) != ST_VALID)
      continue;
    uint64_t key = t >> 2;
    if (l && (layer_of_key(key) != l->index ||
              (key & ((1ull << SD_BLOCK_BITS) - 1)) < first ||
              (key & ((1ull << SD_BLOCK_BITS) - 1)) > last))
      continue;
    forget_slot(s, (uint32_t)slot, t);
  }
}

void sd_store_info(struct sd_store *s, struct sd_store_info *out)
{
  struct sl_twophase_stats st;
  sl_twophase_get_stats(s->tp, &st);
  out->ghost = st.ghost;
  out->metadata_bytes = (uint64_t)(st.bytes_per_resident * (double)s->nblocks) +
                        st.ghost_bytes + s->nblocks * (sizeof *s->tag + sizeof *s->readers);
}

int sd_store_check(struct sd_store *s, char *msg, size_t len)
{
  if (sl_twophase_check(s->tp, msg, len) < 0)
    return -1;
  int64_t valid = 0;
  pthread_mutex_lock(&s->layers_lock);
  uint32_t nl = s->next_index;
  int64_t *per = calloc(nl, sizeof *per);
  int ret = 0;
  for (uint64_t slot = 0; slot < s->nblocks && ret == 0; slot++) {
    uint64_t t = atomic_load(&s->tag[slot]);
    if (atomic_load(&s->readers[slot])) {
      snprintf(msg, len, "slot %" PRIu64 " has readers while idle", slot);
      ret = -1;
    } else if ((t & 3) == ST_FILLING) {
      snprintf(msg, len, "slot %" PRIu64 " is still filling while idle", slot);
      ret = -1;
    } else if ((t & 3) == ST_VALID) {
      uint64_t key = t >> 2;
      valid++;
      if (layer_of_key(key) == 0 || layer_of_key(key) >= nl) {
        snprintf(msg, len, "slot %" PRIu64 " holds key %#" PRIx64 " of no layer", slot, key);
        ret = -1;
      } else if (sl_twophase_slot_key(s->tp, (uint32_t)slot) != key ||
                 sl_twophase_where(s->tp, (uint32_t)slot) == 0) {
        snprintf(msg, len, "slot %" PRIu64 " is valid for key %#" PRIx64
                 " but twophase does not hold it there", slot, key);
        ret = -1;
      } else if (per) {
        per[layer_of_key(key)]++;
      }
    }
  }
  if (ret == 0 && valid != atomic_load(&s->c.resident)) {
    snprintf(msg, len, "%" PRId64 " valid slots, resident count %" PRId64, valid,
             (int64_t)atomic_load(&s->c.resident));
    ret = -1;
  }
  for (uint32_t i = 1; ret == 0 && per && i < nl; i++) {
    struct sd_layer *l = sd_layer_at(s, i);
    if (l && per[i] != atomic_load(&l->c.resident)) {
      snprintf(msg, len, "layer %u: %" PRId64 " valid slots, resident count %" PRId64, i,
               per[i], (int64_t)atomic_load(&l->c.resident));
      ret = -1;
    }
  }
  free(per);
  pthread_mutex_unlock(&s->layers_lock);
  return ret;
}
