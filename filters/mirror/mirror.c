/* mirror: synchronous replication of every write to a second disk.
 *
 * Writes, discards and write-zeroes go to the primary (next) and then to the
 * target (target=PATH: an image or a disk descriptor, so the target may have
 * filters of its own).  Reads come from the primary only.  The primary's
 * result is the request's result: if the target fails, the disk keeps
 * working and the regions that now differ are recorded in a persistent
 * dirty bitmap (DESCRIPTOR.mirror-dirty, next to the descriptor) before the
 * request completes, so a crash cannot lose the knowledge.
 *
 * Writes that overlap must reach the two disks in the same order, or each
 * could end up holding a different one's data.  A write holds the locks of
 * the regions it touches (striped: region index modulo STRIPES, taken in
 * ascending order so two writes cannot deadlock) from its primary write to
 * its target write.  Writes to unrelated regions still run in parallel;
 * reads take no lock.
 *
 * Whenever the disk is opened writable, dirty regions are copied from the
 * primary to the target (`sluice mirror resync DESC` does just that).  A
 * missing bitmap means the two were never known to be in sync, so the first
 * writable open copies everything.  A read-only open touches neither the
 * target nor the bitmap.
 *
 * Bitmap file: 32-byte header ("SLMIRBM1", granularity, disk size, 0, all
 * little-endian u64) then one bit per granularity-sized region.
 *
 *   target=PATH        the mirror (relative to the descriptor's directory)
 *   granularity=SIZE   bytes per bitmap bit (default 64K, a power of two) */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "filter-util.h"

#define HDR 32
#define MAGIC "SLMIRBM1"
#define STRIPES 64

struct mirror {
  char *target_arg, *target_path, *bitmap_path;
  uint64_t gran, size, n_bits;
  void *target_handle;
  struct sl_next *target;
  int fd;                    /* bitmap file, -1 when read-only */
  unsigned char *bits;
  pthread_mutex_t lock;
  pthread_mutex_t stripe[STRIPES];   /* orders overlapping writes */
  bool lock_ready, warned;
};

static int mi_config(void *inst, const char *k, const char *v)
{
  struct mirror *m = inst;
  if (strcmp(k, "target") == 0) {
    free(m->target_arg);
    m->target_arg = strdup(v);
    return m->target_arg ? 0 : host->error(ENOMEM, "out of memory");
  }
  if (strcmp(k, "granularity") == 0) {
    int r = fu_parse_size("mirror", k, v, &m->gran);
    if (r == 0 && (m->gran < 512 || (m->gran & (m->gran - 1))))
      r = host->error(EINVAL, "granularity=%s must be a power of two of at "
                      "least 512", v);
    return r;
  }
  return host->error(EINVAL, "unknown parameter '%s' (expected target, "
                     "granularity)", k);
}

static int mi_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct mirror *m = inst;
  m->fd = -1;
  if (!m->target_arg)
    return host->error(EINVAL, "target=PATH is required");
  if (!m->gran)
    m->gran = 64 * 1024;
  m->target_path = fu_resolve(env, m->target_arg);
  const char *owner = env->descriptor ? env->descriptor : env->image;
  if (!m->target_path || asprintf(&m->bitmap_path, "%s.mirror-dirty", owner) < 0)
    return host->error(ENOMEM, "out of memory");
  pthread_mutex_init(&m->lock, NULL);
  for (int i = 0; i < STRIPES; i++)
    pthread_mutex_init(&m->stripe[i], NULL);
  m->lock_ready = true;
  return 0;
}

static void put_u64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* Write bytes [from, to) of the bitmap and make them durable. */
static int persist(struct mirror *m, uint64_t from, uint64_t to)
{
  if (m->fd < 0 || to <= from)
    return 0;
  ssize_t n = pwrite(m->fd, m->bits + from, to - from, (off_t)(HDR + from));
  if (n != (ssize_t)(to - from) || fdatasync(m->fd) < 0)
    return host->error(errno ? errno : EIO, "mirror: cannot record dirty "
                       "regions in %s: %s", m->bitmap_path, strerror(errno));
  return 0;
}

/* Load the bitmap, or start one with everything dirty. */
static int open_bitmap(struct mirror *m)
{
  size_t nbytes = (m->n_bits + 7) / 8;
  m->bits = calloc(1, nbytes ? nbytes : 1);
  if (!m->bits)
    return host->error(ENOMEM, "out of memory");
  m->fd = open(m->bitmap_path, O_RDWR | O_CLOEXEC);
  if (m->fd >= 0) {
    unsigned char h[HDR];
    if (pread(m->fd, h, HDR, 0) == HDR && memcmp(h, MAGIC, 8) == 0 &&
        get_u64(h + 8) == m->gran && get_u64(h + 16) == m->size &&
        pread(m->fd, m->bits, nbytes, HDR) == (ssize_t)nbytes)
      return 0;
    /* A bitmap for another geometry: trust nothing, copy everything. */
    close(m->fd);
  }
  m->fd = open(m->bitmap_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (m->fd < 0)
    return host->error(errno, "mirror: %s: %s", m->bitmap_path, strerror(errno));
  memset(m->bits, 0xff, nbytes);
  if (m->n_bits % 8)
    m->bits[nbytes - 1] = (unsigned char)((1u << (m->n_bits % 8)) - 1);
  unsigned char h[HDR] = MAGIC;
  put_u64(h + 8, m->gran);
  put_u64(h + 16, m->size);
  if (pwrite(m->fd, h, HDR, 0) != HDR)
    return host->error(errno ? errno : EIO, "mirror: %s: cannot write",
                       m->bitmap_path);
  return persist(m, 0, nbytes);
}

/* Record [off, off + len) as differing, durably.  If that cannot be made
 * durable the caller's request fails: succeeding would let a crash forget
 * that the mirror is stale. */
static int mark_dirty(struct mirror *m, uint64_t off, uint64_t len)
{
  if (len == 0)
    return 0;
  uint64_t first = off / m->gran, last = (off + len - 1) / m->gran;
  pthread_mutex_lock(&m->lock);
  for (uint64_t b = first; b <= last; b++)
    m->bits[b / 8] |= (unsigned char)(1u << (b % 8));
  int r = persist(m, first / 8, last / 8 + 1);
  pthread_mutex_unlock(&m->lock);
  return r;
}

/* Copy every dirty region from the primary; stops at the first failure. */
static int resync(struct mirror *m, struct sl_next *next)
{
  unsigned char *buf = malloc(m->gran);
  if (!buf)
    return host->error(ENOMEM, "out of memory");
  int r = 0;
  for (uint64_t b = 0; r == 0 && b < m->n_bits; b++) {
    if (!(m->bits[b / 8] & (1u << (b % 8))))
      continue;
    uint64_t off = b * m->gran;
    size_t len = (size_t)(m->size - off < m->gran ? m->size - off : m->gran);
    r = sl_next_pread(next, buf, len, off, 0);
    if (r == 0)
      r = sl_next_pwrite(m->target, buf, len, off, 0);
    if (r == 0)
      m->bits[b / 8] &= (unsigned char)~(1u << (b % 8));
  }
  free(buf);
  if (r == 0)
    r = sl_next_flush(m->target, 0);
  /* Record what was cleaned only once the target has it durably. */
  int r2 = r == 0 ? persist(m, 0, (m->n_bits + 7) / 8) : 0;
  return r < 0 ? r : r2;
}

static void degrade(struct mirror *m, const char *what)
{
  if (!m->warned) {
    m->warned = true;
    fprintf(stderr, "sluice: mirror %s: %s; recording dirty regions in %s "
            "(run 'sluice mirror resync')\n", m->target_path, what,
            m->bitmap_path);
  }
}

static int mi_open(void *inst, struct sl_next *next,
                   const struct sl_filter_env *env)
{
  struct mirror *m = inst;
  int64_t size = sl_next_get_size(next);
  if (size < 0)
    return (int)size;
  m->size = (uint64_t)size;
  m->n_bits = (m->size + m->gran - 1) / m->gran;
  if (env->read_only)
    return 0;          /* reads only: no target, no bitmap */
  int r = open_bitmap(m);
  if (r < 0)
    return r;
  if (host->disk_open(m->target_path, false, &m->target, &m->target_handle) < 0) {
    degrade(m, host->last_error());
    m->target = NULL;
    return 0;
  }
  int64_t tsize = sl_next_get_size(m->target);
  if (tsize != size) {
    host->disk_close(m->target_handle);
    m->target = NULL;
    return host->error(EINVAL, "mirror target %s is %" PRId64 " bytes, the "
                       "disk is %" PRId64, m->target_path, tsize, size);
  }
  if (resync(m, next) < 0)
    degrade(m, host->last_error());
  return 0;
}

static void mi_close(void *inst, struct sl_next *next)
{
  struct mirror *m = inst;
  if (m->target_handle && host->disk_close(m->target_handle) < 0)
    degrade(m, host->last_error());
  if (m->fd >= 0)
    close(m->fd);
  if (m->lock_ready) {
    pthread_mutex_destroy(&m->lock);
    for (int i = 0; i < STRIPES; i++)
      pthread_mutex_destroy(&m->stripe[i]);
  }
  free(m->bits);
  free(m->target_arg);
  free(m->target_path);
  free(m->bitmap_path);
}

/* The stripes of the regions [off, off + len) touches, as a bit mask. */
static uint64_t stripes_of(const struct mirror *m, uint64_t off, uint64_t len)
{
  if (len == 0)
    return 0;
  uint64_t first = off / m->gran, last = (off + len - 1) / m->gran;
  if (last - first >= STRIPES)
    return UINT64_MAX;
  uint64_t mask = 0;
  for (uint64_t b = first; b <= last; b++)
    mask |= 1ull << (b % STRIPES);
  return mask;
}

static uint64_t lock_regions(struct mirror *m, uint64_t off, uint64_t len)
{
  uint64_t mask = stripes_of(m, off, len);
  for (int i = 0; i < STRIPES; i++)
    if (mask >> i & 1)
      pthread_mutex_lock(&m->stripe[i]);
  return mask;
}

static void unlock_regions(struct mirror *m, uint64_t mask)
{
  for (int i = STRIPES - 1; i >= 0; i--)
    if (mask >> i & 1)
      pthread_mutex_unlock(&m->stripe[i]);
}

/* After the primary succeeded: replicate, or remember the region. */
static int replicate(struct mirror *m, int r, uint64_t off, uint64_t len)
{
  if (r < 0)
    degrade(m, host->last_error());
  if (r < 0 || !m->target)
    return mark_dirty(m, off, len);
  return 0;
}

/* The three ways a write reaches the disk, so that one function holds the
 * ordering all of them need: regions locked, primary first, then the
 * target, and a region the target missed recorded before the reply. */
enum mirror_write { MW_DATA, MW_ZERO, MW_DISCARD };

static int issue_write(struct sl_next *n, enum mirror_write kind,
                       const void *buf, uint64_t len, uint64_t off,
                       uint32_t flags)
{
  switch (kind) {
  case MW_DATA: return sl_next_pwrite(n, buf, len, off, flags);
  case MW_ZERO: return sl_next_write_zeroes(n, off, len, flags);
  case MW_DISCARD: return sl_next_discard(n, off, len, flags);
  }
  return -EINVAL;
}

/* Discarded data is unspecified, but the replica must read the same as
 * the primary: if the target cannot follow, replicate() marks the region
 * dirty so that resync copies it. */
static int mirrored_write(struct mirror *m, struct sl_next *next,
                          enum mirror_write kind, const void *buf,
                          uint64_t len, uint64_t off, uint32_t flags)
{
  uint64_t held = lock_regions(m, off, len);
  int r = issue_write(next, kind, buf, len, off, flags);
  if (r == 0) {
    int t = m->target ? issue_write(m->target, kind, buf, len, off, flags)
                      : 0;
    r = replicate(m, t, off, len);
  }
  unlock_regions(m, held);
  return r;
}

static int mi_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{
  return mirrored_write(inst, next, MW_DATA, buf, len, off, flags);
}

static int mi_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{
  return mirrored_write(inst, next, MW_ZERO, NULL, len, off, flags);
}

static int mi_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{
  return mirrored_write(inst, next, MW_DISCARD, NULL, len, off, flags);
}

static int mi_flush(void *inst, struct sl_next *next, uint32_t flags)
{
  struct mirror *m = inst;
  int r = sl_next_flush(next, flags);
  if (r == 0 && m->target && sl_next_flush(m->target, flags) < 0)
    degrade(m, host->last_error());
  return r;
}

static int mi_release(void *inst, struct sl_next *next)
{
  return mi_flush(inst, next, 0);
}

/* Query "mirror.dirty" version 1: struct sl_mirror_dirty_v1 (below), the
 * regions the mirror is known to differ in, as recorded in the bitmap. */
struct sl_mirror_dirty_v1 {
  uint64_t regions;          /* dirty bits set */
  uint64_t granularity;      /* bytes per region */
};

static int mi_query(void *inst, const char *what, uint32_t version, void *out,
                    size_t out_size)
{
  struct mirror *m = inst;
  if (strcmp(what, "mirror.dirty") != 0 || version != 1)
    return host->error(ENOTSUP, "mirror: no query %s version %u (it answers "
                       "mirror.dirty version 1)", what, version);
  struct sl_mirror_dirty_v1 d = {.granularity = m->gran};
  if (m->bits) {
    pthread_mutex_lock(&m->lock);
    for (uint64_t i = 0; i < (m->n_bits + 7) / 8; i++)
      d.regions += (uint64_t)__builtin_popcount(m->bits[i]);
    pthread_mutex_unlock(&m->lock);
  }
  size_t n = out_size < sizeof d ? out_size : sizeof d;
  memcpy(out, &d, n);
  return (int)n;
}

static const struct sl_filter mirror_filter = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "mirror",
  .description = "synchronous replication of writes to a second disk",
  .config_help = "target=PATH granularity=SIZE",
  .filter_class = SL_FILTER_CLASS_REPLICATION,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct mirror),
  .load = fu_load,
  .config = mi_config,
  .config_complete = mi_config_complete,
  .open = mi_open,
  .close = mi_close,
  .pwrite = mi_pwrite, .write_zeroes = mi_zero, .discard = mi_discard,
  .flush = mi_flush,
  .release = mi_release,
  .query = mi_query,
};

SL_REGISTER_FILTER(mirror_filter)
