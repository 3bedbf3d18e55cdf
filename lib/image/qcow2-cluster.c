/* qcow2 cluster mapping: guest offsets to host offsets through L1/L2, and
 * the read, write, discard and write-zeroes paths.
 *
 * qcow2_map() turns a guest range into one extent of a single kind (data at
 * contiguous host offsets, zeros, unallocated, or one compressed cluster),
 * coalescing across clusters so that a sequential request becomes one
 * pread.  Reads map under s->lock and do the I/O outside it.  Writes into
 * clusters that are already allocated and owned (COPIED) do the same; all
 * other writes allocate under the lock: new clusters are filled from the
 * current contents (old cluster, backing layer or zeros) for the parts the
 * request does not cover, written, and only then referenced from the L2
 * table, whose write-back waits for the refcount increments to be durable.
 * References that are dropped (copy-on-write, discard) are queued and their
 * refcounts decremented only after the tables are on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

#define MAX_ALLOC_BYTES (8u << 20)

static inline uint64_t l2_get(const struct qcow2_state *s, const uint8_t *t,
                              uint64_t i)
{
  return qcow2_be64(t + i * s->l2_entry_size);
}

static inline uint64_t l2_bitmap(const struct qcow2_state *s, const uint8_t *t,
                                 uint64_t i)
{
  return s->extended_l2 ? qcow2_be64(t + i * 16 + 8) : 0;
}

static inline void l2_set(const struct qcow2_state *s, uint8_t *t, uint64_t i,
                          uint64_t e, uint64_t bitmap)
{
  qcow2_put_be64(t + i * s->l2_entry_size, e);
  if (s->extended_l2)
    qcow2_put_be64(t + i * 16 + 8, bitmap);
}

void qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
                            uint64_t *host, uint64_t *bytes)
{
  unsigned x = 62 - (s->cluster_bits - 8);
  uint64_t e = entry & ((1ull << 62) - 1);
  *host = e & ((1ull << x) - 1);
  uint64_t nsec = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;
  *bytes = nsec * 512 - (*host & 511);
}

static int bad_table(struct qcow2_state *s, const char *what, uint64_t idx,
                     uint64_t off, const char *problem)
{
  return sl_error(EIO, "%s: %s %" PRIu64 " at 0x%" PRIx64 " %s",
                  s->img->filename, what, idx, off, problem);
}

static bool overlaps_tables(const struct qcow2_state *s, uint64_t off)
{
  uint64_t l1_end = s->l1_offset + (uint64_t)s->l1_size * 8;
  uint64_t rt_end = s->rt_offset + (uint64_t)s->rt_clusters * s->cluster_size;
  return (off + s->cluster_size > s->l1_offset && off < l1_end) ||
         (off + s->cluster_size > s->rt_offset && off < rt_end);
}

static int check_l2_offset(struct qcow2_state *s, uint64_t l1i, uint64_t off)
{
  if (off & (s->cluster_size - 1))
    return bad_table(s, "L2 table", l1i, off, "is not cluster aligned");
  if (off < s->cluster_size)
    return bad_table(s, "L2 table", l1i, off, "overlaps the header");
  if (overlaps_tables(s, off))
    return bad_table(s, "L2 table", l1i, off,
                     "overlaps the L1 or refcount table");
  return 0;
}

/* A write found metadata that cannot be right (an L2 table over other
 * metadata or unaligned): as QEMU does, the image is marked corrupt so
 * that nothing writes to it until it is repaired.  Keeps the message. */
static int write_refused_corrupt(struct qcow2_state *s, int r)
{
  char msg[512];
  snprintf(msg, sizeof msg, "%s", sl_last_error());
  qcow2_mark_corrupt(s, msg);
  return sl_error(-r, "%s; the image is marked corrupt: repair it with "
                  "'sluice check -r all'", msg);
}

/* The L2 table for L1 index L1I, pinned, or NULL when there is none. */
static int l2_table_for_read(struct qcow2_state *s, uint64_t l1i, uint8_t **tbl)
{
  *tbl = NULL;
  if (l1i >= s->l1_size)
    return 0;
  uint64_t off = s->l1[l1i] & QCOW2_OFFSET_MASK;
  if (!off)
    return 0;
  int r = check_l2_offset(s, l1i, off);
  if (r < 0)
    return r;
  return qcow2_cache_get(s, &s->l2_cache, off, false, tbl);
}

/* Classify the bytes of guest cluster GC starting at in-cluster offset IN:
 * type, host offset of byte IN for data, and how many bytes share it. */
static int classify(struct qcow2_state *s, uint64_t gc, uint64_t e,
                    uint64_t bitmap, uint64_t in, struct qcow2_map *m)
{
  uint64_t cs = s->cluster_size;
  m->host = 0;
  m->l2_entry = 0;
  if (e & QCOW2_OFLAG_COMPRESSED) {
    m->type = QMAP_COMPRESSED;
    m->l2_entry = e;
    m->length = cs - in;
    return 0;
  }
  uint64_t host = e & QCOW2_OFFSET_MASK;
  if (host && (host & (cs - 1)))
    return sl_error(EIO, "%s: L2 entry for cluster %" PRIu64 " points to "
                    "misaligned offset 0x%" PRIx64, s->img->filename, gc, host);
  if (host && host < cs)
    return sl_error(EIO, "%s: L2 entry for cluster %" PRIu64 " points into "
                    "the header", s->img->filename, gc);
  if (!s->extended_l2) {
    m->length = cs - in;
    if ((e & QCOW2_OFLAG_ZERO) && s->version >= 3)
      m->type = QMAP_ZERO;
    else if (!host)
      m->type = QMAP_UNALLOC;
    else {
      m->type = QMAP_DATA;
      m->host = host + in;
    }
    return 0;
  }
  uint64_t scs = s->subcluster_size;
  unsigned sc = (unsigned)(in / scs);
  uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
  if (alloc & zero)
    return sl_error(EIO, "%s: L2 entry for cluster %" PRIu64 " has "
                    "subclusters both allocated and zero", s->img->filename, gc);
  if (alloc && !host)
    return sl_error(EIO, "%s: L2 entry for cluster %" PRIu64 " has allocated "
                    "subclusters but no host cluster", s->img->filename, gc);
  unsigned a = (alloc >> sc) & 1, z = (zero >> sc) & 1;
  unsigned end = sc + 1;
  while (end < 32 && ((alloc >> end) & 1) == a && ((zero >> end) & 1) == z)
    end++;
  m->length = end * scs - in;
  if (a) {
    m->type = QMAP_DATA;
    m->host = host + in;
  } else {
    m->type = z ? QMAP_ZERO : QMAP_UNALLOC;
  }
  return 0;
}

int qcow2_map(struct qcow2_state *s, uint64_t off, uint64_t len,
              struct qcow2_map *m)
{
  uint64_t cs = s->cluster_size;
  bool first = true;
  uint64_t pos = off, end = off + len;
  memset(m, 0, sizeof *m);
  while (pos < end) {
    uint64_t gc = pos >> s->cluster_bits;
    uint64_t l1i = gc >> s->l2_bits;
    uint8_t *tbl;
    int r = l2_table_for_read(s, l1i, &tbl);
    if (r < 0)
      return r;
    uint64_t table_end = (l1i + 1) << (s->l2_bits + s->cluster_bits);
    while (pos < end && pos < table_end) {
      gc = pos >> s->cluster_bits;
      uint64_t e = 0, b = 0;
      if (tbl) {
        e = l2_get(s, tbl, gc & (s->l2_entries - 1));
        b = l2_bitmap(s, tbl, gc & (s->l2_entries - 1));
      }
      struct qcow2_map piece;
      r = classify(s, gc, e, b, pos & (cs - 1), &piece);
      if (r < 0) {
        if (tbl)
          qcow2_cache_put(&s->l2_cache, tbl);
        return r;
      }
      piece.length = SL_MIN(piece.length, end - pos);
      if (first) {
        *m = piece;
        first = false;
      } else if (piece.type != m->type || piece.type == QMAP_COMPRESSED ||
                 (piece.type == QMAP_DATA && piece.host != m->host + m->length)) {
        if (tbl)
          qcow2_cache_put(&s->l2_cache, tbl);
        return 0;
      } else {
        m->length += piece.length;
      }
      pos += piece.length;
      if (m->type == QMAP_COMPRESSED)
        break;
    }
    if (tbl)
      qcow2_cache_put(&s->l2_cache, tbl);
    if (m->type == QMAP_COMPRESSED)
      break;
  }
  return 0;
}

static int read_compressed(struct qcow2_state *s, uint64_t entry, uint8_t *out)
{
  uint64_t host, bytes;
  qcow2_compressed_range(s, entry, &host, &bytes);
  if (host < s->cluster_size)
    return sl_error(EIO, "%s: compressed cluster at 0x%" PRIx64 " overlaps "
                    "the header", s->img->filename, host);
  uint64_t fsize = qcow2_file_size(s);
  if (host >= fsize)
    return sl_error(EIO, "%s: compressed cluster at 0x%" PRIx64 " lies past "
                    "the end of the file", s->img->filename, host);
  bytes = SL_MIN(bytes, fsize - host);
  CLEANUP_FREE uint8_t *src = malloc(bytes);
  if (!src)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  int r = qcow2_io_read(s, src, bytes, host);
  if (r < 0)
    return r;
  return qcow2_decompress(s, out, s->cluster_size, src, bytes);
}

int qcow2_read(struct qcow2_state *s, void *buf, size_t len, uint64_t off,
               bool locked)
{
  uint8_t *p = buf;
  while (len > 0) {
    struct qcow2_map m;
    int r;
    if (!locked)
      pthread_mutex_lock(&s->lock);
    r = qcow2_map(s, off, len, &m);
    if (!locked)
      pthread_mutex_unlock(&s->lock);
    if (r < 0)
      return r;
    size_t n = (size_t)m.length;
    switch (m.type) {
    case QMAP_UNALLOC:
      r = sl_image_read_backing(s->img, p, n, off);
      break;
    case QMAP_ZERO:
      memset(p, 0, n);
      break;
    case QMAP_DATA:
      r = qcow2_io_read(s, p, n, m.host);
      break;
    case QMAP_COMPRESSED: {
      uint8_t *c = malloc(s->cluster_size);
      if (!c)
        return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
      r = read_compressed(s, m.l2_entry, c);
      if (r == 0)
        memcpy(p, c + (off & (s->cluster_size - 1)), n);
      free(c);
      break;
    }
    }
    if (r < 0)
      return r;
    p += n;
    off += n;
    len -= n;
  }
  return 0;
}

/* ---- writing ---- */

int qcow2_flush_l1(struct qcow2_state *s)
{
  if (!s->l1_dirty)
    return 0;
  int r = 0;
  if (s->l2_needs_refcount_flush)
    r = qcow2_flush_refcounts(s);
  if (r < 0)
    return r;
  size_t bytes = (size_t)s->l1_size * 8;
  uint8_t *buf;
  if (posix_memalign((void **)&buf, 4096, SL_ROUND_UP(bytes, 4096)))
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  for (uint32_t i = 0; i < s->l1_size; i++)
    qcow2_put_be64(buf + i * 8, s->l1[i]);
  r = qcow2_write_checked(s, QCOW2_OL_ACTIVE_L1, buf, bytes, s->l1_offset);
  free(buf);
  if (r == 0)
    s->l1_dirty = false;
  return r;
}

/* The L2 table for L1I, pinned and private to this image (allocated, or
 * copied when it is shared with a snapshot). */
static int l2_table_for_write(struct qcow2_state *s, uint64_t l1i, uint8_t **tbl)
{
  if (l1i >= s->l1_size)
    return sl_error(EIO, "%s: L1 index %" PRIu64 " is out of range",
                    s->img->filename, l1i);
  uint64_t l1e = s->l1[l1i], off = l1e & QCOW2_OFFSET_MASK;
  int r;
  if (off) {
    r = check_l2_offset(s, l1i, off);
    if (r < 0)
      return write_refused_corrupt(s, r);
    if (l1e & QCOW2_OFLAG_COPIED)
      return qcow2_cache_get(s, &s->l2_cache, off, false, tbl);
    uint64_t rc;
    r = qcow2_get_refcount(s, off >> s->cluster_bits, &rc);
    if (r < 0)
      return r;
    if (rc == 1) {
      s->l1[l1i] = off | QCOW2_OFLAG_COPIED;
      s->l1_dirty = true;
      return qcow2_cache_get(s, &s->l2_cache, off, false, tbl);
    }
  }
  uint64_t nw, got;
  r = qcow2_alloc_clusters(s, 1, &nw, &got);
  if (r == 0) /* not in the L1 yet: checked against everything */
    r = qcow2_overlap_check(s, 0, nw, s->cluster_size);
  if (r < 0)
    return r;
  r = qcow2_cache_get(s, &s->l2_cache, nw, true, tbl);
  if (r < 0)
    return r;
  if (off) {
    uint8_t *old;
    r = qcow2_cache_get(s, &s->l2_cache, off, false, &old);
    if (r < 0) {
      qcow2_cache_put(&s->l2_cache, *tbl);
      return r;
    }
    memcpy(*tbl, old, s->cluster_size);
    qcow2_cache_put(&s->l2_cache, old);
    r = qcow2_queue_free(s, off, s->cluster_size);
  }
  qcow2_cache_mark_dirty(&s->l2_cache, *tbl);
  s->l1[l1i] = nw | QCOW2_OFLAG_COPIED;
  s->l1_dirty = true;
  return r;
}

static int queue_free_entry(struct qcow2_state *s, uint64_t e)
{
  if (e & QCOW2_OFLAG_COMPRESSED) {
    uint64_t host, bytes;
    qcow2_compressed_range(s, e, &host, &bytes);
    return qcow2_queue_free(s, host, bytes);
  }
  uint64_t host = e & QCOW2_OFFSET_MASK;
  return host ? qcow2_queue_free(s, host, s->cluster_size) : 0;
}

/* Current guest contents of [off, off+len) (zeros past the virtual size),
 * with s->lock held. */
static int read_current(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                        uint64_t off, bool locked)
{
  if (len == 0)
    return 0;
  uint64_t avail = off < s->size ? SL_MIN(len, s->size - off) : 0;
  if (avail < len)
    memset(buf + avail, 0, len - avail);
  return avail ? qcow2_read(s, buf, avail, off, locked) : 0;
}

/* Write [span_off, span_off+span_len) of the guest to HOST: the request's
 * bytes where it covers the span, current contents elsewhere. */
static int write_span(struct qcow2_state *s, uint64_t host, uint64_t span_off,
                      uint64_t span_len, const uint8_t *data, uint64_t off,
                      uint64_t len, bool locked)
{
  uint64_t dlo = SL_MAX(off, span_off);
  uint64_t dhi = SL_MIN(off + len, span_off + span_len);
  if (dlo == span_off && dhi == span_off + span_len)
    return qcow2_io_write(s, data + (dlo - off), span_len, host);
  uint8_t *buf;
  if (posix_memalign((void **)&buf, 4096, SL_ROUND_UP(span_len, 4096)))
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  int r = read_current(s, buf, dlo - span_off, span_off, locked);
  if (r == 0)
    r = read_current(s, buf + (dhi - span_off), span_off + span_len - dhi, dhi,
                     locked);
  if (r == 0) {
    memcpy(buf + (dlo - span_off), data + (dlo - off), dhi - dlo);
    r = qcow2_io_write(s, buf, span_len, host);
  }
  free(buf);
  return r;
}

/* What the guest reads, in this layer, where a new cluster for entry E is
 * not overwritten: zeros (no copy needed, only zeroing), old data to copy,
 * or whatever the backing layer holds there. */
enum fill_kind { FILL_ZERO, FILL_COPY, FILL_BACKING };

static enum fill_kind fill_kind(const struct qcow2_state *s, uint64_t e)
{
  if (e & QCOW2_OFLAG_COMPRESSED)
    return FILL_COPY;
  if (!s->extended_l2 && (e & QCOW2_OFLAG_ZERO) && s->version >= 3)
    return FILL_ZERO;
  if (e & QCOW2_OFFSET_MASK)
    return FILL_COPY; /* old data (a shared cluster) */
  return s->img->backing ? FILL_BACKING : FILL_ZERO;
}

/* Does the backing chain read as zeros over guest [off, off+len)?  Asked
 * through block status, which costs far less than reading the bytes; a
 * zero answer is only given when every layer below says so. */
static bool backing_reads_zero(struct qcow2_state *s, uint64_t off,
                               uint64_t len)
{
  struct sl_image *b = s->img->backing;
  uint64_t end = off + len;
  while (b && off < end) {
    if (off >= b->size)
      return true; /* past the backing file's end: zeros */
    struct sl_extent ext;
    uint64_t n = SL_MIN(end, b->size) - off;
    if (sl_image_block_status(b, off, n, &ext) < 0 || ext.length == 0 ||
        ext.type == SL_EXTENT_DATA)
      return false;
    off += ext.length;
  }
  return true;
}

/* Write the request's part of [span_off, span_off+span_len) to HOST, the
 * rest being zeros: the file system zeroes the span (FALLOC_FL_ZERO_RANGE,
 * metadata only: no zero bytes cross the bus, as qemu does for new
 * clusters) and only the request's bytes are written.  Where the file
 * system cannot, zeros are written like any other fill. */
static int write_span_zero_fill(struct qcow2_state *s, uint64_t host,
                                uint64_t span_off, uint64_t span_len,
                                const uint8_t *data, uint64_t off, uint64_t len)
{
  uint64_t dlo = SL_MAX(off, span_off);
  uint64_t dhi = SL_MIN(off + len, span_off + span_len);
  if (!atomic_load_explicit(&s->no_zero_range, memory_order_relaxed)) {
    if (fallocate(s->img->fd, FALLOC_FL_ZERO_RANGE, (off_t)host,
                  (off_t)span_len) == 0)
      return qcow2_io_write(s, data + (dlo - off), dhi - dlo,
                            host + (dlo - span_off));
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
      return sl_error(errno, "%s: zeroing %" PRIu64 " bytes at 0x%" PRIx64
                      ": %s", s->img->filename, span_len, host,
                      strerror(errno));
    atomic_store_explicit(&s->no_zero_range, true, memory_order_relaxed);
  }
  return write_span(s, host, span_off, span_len, data, off, len, false);
}

static inline uint32_t sc_mask(unsigned lo, unsigned hi) /* [lo, hi] */
{
  uint64_t m = ((2ull << hi) - 1) & ~((1ull << lo) - 1);
  return (uint32_t)m;
}

/* Can [off, off+len) of this entry be written in place? */
static bool writable_in_place(const struct qcow2_state *s, uint64_t e,
                              uint64_t bitmap, uint64_t in, uint64_t len)
{
  if (!(e & QCOW2_OFLAG_COPIED) || (e & QCOW2_OFLAG_COMPRESSED) ||
      !(e & QCOW2_OFFSET_MASK))
    return false;
  if (!s->extended_l2)
    return !(e & QCOW2_OFLAG_ZERO);
  unsigned lo = (unsigned)(in / s->subcluster_size);
  unsigned hi = (unsigned)((in + len - 1) / s->subcluster_size);
  uint32_t m = sc_mask(lo, hi);
  return ((uint32_t)bitmap & m) == m;
}

static bool inflight_overlaps(const struct qcow2_state *s, uint64_t gc,
                              uint64_t n)
{
  for (size_t i = 0; i < s->ninflight; i++)
    if (gc < s->inflight[i].first + s->inflight[i].count &&
        s->inflight[i].first < gc + n)
      return true;
  return false;
}

static int inflight_add(struct qcow2_state *s, uint64_t gc, uint64_t n)
{
  if (s->ninflight == s->inflight_cap) {
    size_t cap = s->inflight_cap ? s->inflight_cap * 2 : 8;
    struct qcow2_inflight *x = realloc(s->inflight, cap * sizeof *x);
    if (!x)
      return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
    s->inflight = x;
    s->inflight_cap = cap;
  }
  s->inflight[s->ninflight++] = (struct qcow2_inflight){gc, n};
  return 0;
}

static void inflight_remove(struct qcow2_state *s, uint64_t gc)
{
  for (size_t i = 0; i < s->ninflight; i++) {
    if (s->inflight[i].first == gc) {
      s->inflight[i] = s->inflight[--s->ninflight];
      break;
    }
  }
  pthread_cond_broadcast(&s->alloc_done);
}

/* One allocating step under s->lock, starting at OFF; returns the bytes
 * of the request it wrote through *DONE. */
static int write_alloc(struct qcow2_state *s, const uint8_t *data, uint64_t off,
                       uint64_t len, uint64_t *done)
{
  uint64_t cs = s->cluster_size, scs = s->subcluster_size;
  uint64_t gc0 = off >> s->cluster_bits, l1i = gc0 >> s->l2_bits;
  uint64_t l2i0 = gc0 & (s->l2_entries - 1);
  while (inflight_overlaps(s, gc0, 1))
    pthread_cond_wait(&s->alloc_done, &s->lock);
  uint8_t *tbl;
  int r = l2_table_for_write(s, l1i, &tbl);
  if (r < 0)
    return r;
  uint64_t e = l2_get(s, tbl, l2i0), b = l2_bitmap(s, tbl, l2i0);
  uint64_t in0 = off & (cs - 1);

  if (writable_in_place(s, e, b, in0, SL_MIN(len, cs - in0))) {
    /* Another thread allocated it meanwhile. */
    uint64_t n = SL_MIN(len, cs - in0);
    r = qcow2_write_checked(s, 0, data, n, (e & QCOW2_OFFSET_MASK) + in0);
    *done = n;
    goto out;
  }

  if (s->extended_l2 && !(e & QCOW2_OFLAG_COMPRESSED) &&
      (e & QCOW2_OFFSET_MASK) && (e & QCOW2_OFLAG_COPIED)) {
    /* Owned cluster, some touched subclusters unallocated.  Handle one run
     * of the same kind so that the fill below only ever reads and rewrites
     * unallocated subclusters, which no in-place writer can touch. */
    uint64_t n = SL_MIN(len, cs - in0);
    uint32_t alloc = (uint32_t)b;
    unsigned lo = (unsigned)(in0 / scs), last = (unsigned)((in0 + n - 1) / scs);
    if ((alloc >> lo) & 1) {
      unsigned k = lo;
      while (k < 32 && ((alloc >> k) & 1))
        k++;
      n = SL_MIN(n, k * scs - in0);
      r = qcow2_write_checked(s, 0, data, n, (e & QCOW2_OFFSET_MASK) + in0);
      *done = n;
      goto out;
    }
    unsigned hi = lo;
    while (hi < last && !((alloc >> (hi + 1)) & 1))
      hi++;
    n = SL_MIN(n, (hi + 1) * scs - in0);
    uint64_t span = gc0 * cs + lo * scs;
    r = qcow2_overlap_check(s, 0, (e & QCOW2_OFFSET_MASK) + lo * scs,
                            (hi - lo + 1) * scs);
    if (r == 0)
      r = write_span(s, (e & QCOW2_OFFSET_MASK) + lo * scs, span,
                     (hi - lo + 1) * scs, data, off, len, true);
    if (r == 0) {
      uint32_t m = sc_mask(lo, hi);
      b = (b | m) & ~((uint64_t)m << 32);
      l2_set(s, tbl, l2i0, e, b);
      qcow2_cache_mark_dirty(&s->l2_cache, tbl);
      /* The new bitmap bits must not reach the disk before the data. */
      s->l2_needs_refcount_flush = true;
    }
    *done = n;
    goto out;
  }

  /* Allocate new clusters.  With extended L2, a run of clusters with no
   * host cluster needs only the touched subclusters written; anything else
   * (compressed, shared) is copied whole. */
  bool sub = s->extended_l2 && !(e & QCOW2_OFLAG_COMPRESSED) &&
             !(e & QCOW2_OFFSET_MASK);
  bool cow_single = s->extended_l2 && !sub;
  uint64_t want = SL_DIV_ROUND_UP(in0 + len, cs);
  want = SL_MIN(want, s->l2_entries - l2i0);
  want = SL_MIN(want, SL_MAX(MAX_ALLOC_BYTES / cs, 1));
  if (cow_single)
    want = 1;
  uint64_t n = 1;
  while (n < want) {
    uint64_t en = l2_get(s, tbl, l2i0 + n), bn = l2_bitmap(s, tbl, l2i0 + n);
    bool ok = s->extended_l2
                  ? !(en & QCOW2_OFLAG_COMPRESSED) && !(en & QCOW2_OFFSET_MASK)
                  : !writable_in_place(s, en, bn, 0, cs);
    if (!ok || inflight_overlaps(s, gc0 + n, 1))
      break;
    n++;
  }
  uint64_t host, got;
  r = qcow2_alloc_clusters(s, n, &host, &got);
  /* Refcounts of 0 on metadata would hand it out as free: the new
   * clusters are checked before anything is written into them. */
  if (r == 0)
    r = qcow2_overlap_check(s, 0, host, got * cs);
  if (r == 0)
    r = inflight_add(s, gc0, got);
  if (r < 0)
    goto out;
  n = got;
  uint64_t wend = SL_MIN(off + len, (gc0 + n) * cs);
  uint64_t span_lo = gc0 * cs, span_hi = (gc0 + n) * cs;
  if (sub) {
    span_lo = gc0 * cs + in0 / scs * scs;
    span_hi = SL_ROUND_UP(wend, scs);
  }
  /* Only the first and last clusters can need a fill; the request covers
   * those between. */
  enum fill_kind head = fill_kind(s, e);
  enum fill_kind tail = fill_kind(s, l2_get(s, tbl, l2i0 + n - 1));
  /* The data goes out without the lock: the clusters are ours (counted,
   * unreferenced) and the guest range is marked in flight. */
  qcow2_cache_put(&s->l2_cache, tbl);
  pthread_mutex_unlock(&s->lock);
  uint64_t span_host = host + (span_lo - gc0 * cs);
  uint64_t dlo = SL_MAX(off, span_lo), dhi = SL_MIN(off + len, span_hi);
  bool covered = dlo == span_lo && dhi == span_hi;
  bool zero_fill = !covered && head != FILL_COPY && tail != FILL_COPY;
  if (zero_fill && (head == FILL_BACKING || tail == FILL_BACKING))
    zero_fill = backing_reads_zero(s, span_lo, dlo - span_lo) &&
                backing_reads_zero(s, dhi, span_hi - dhi);
  if (zero_fill)
    r = write_span_zero_fill(s, span_host, span_lo, span_hi - span_lo, data,
                             off, len);
  else
    r = write_span(s, span_host, span_lo, span_hi - span_lo, data, off, len,
                   false);
  pthread_mutex_lock(&s->lock);
  if (r == 0)
    r = l2_table_for_write(s, l1i, &tbl);
  if (r < 0) {
    inflight_remove(s, gc0); /* the clusters leak; no reference was made */
    return r;
  }
  for (uint64_t i = 0; i < n; i++) {
    uint64_t idx = l2i0 + i, old = l2_get(s, tbl, idx);
    uint64_t ob = l2_bitmap(s, tbl, idx), nb = 0;
    if (s->extended_l2) {
      if (sub) {
        uint64_t clo = SL_MAX(span_lo, (gc0 + i) * cs) - (gc0 + i) * cs;
        uint64_t chi = SL_MIN(span_hi, (gc0 + i + 1) * cs) - (gc0 + i) * cs;
        uint32_t m = sc_mask((unsigned)(clo / scs), (unsigned)((chi - 1) / scs));
        nb = (ob & 0xffffffff00000000ull & ~((uint64_t)m << 32)) | m;
      } else {
        nb = 0xffffffffull;
      }
    }
    l2_set(s, tbl, idx, (host + i * cs) | QCOW2_OFLAG_COPIED, nb);
    /* Whatever the entry held (set meanwhile by a discard or zeroing,
     * or before) is no longer referenced. */
    if (r == 0)
      r = queue_free_entry(s, old);
  }
  qcow2_cache_mark_dirty(&s->l2_cache, tbl);
  inflight_remove(s, gc0);
  *done = wend - off;
out:
  qcow2_cache_put(&s->l2_cache, tbl);
  return r;
}

/* In-place run: bytes from OFF that map to contiguous owned host clusters. */
static int in_place_run(struct qcow2_state *s, uint64_t off, uint64_t len,
                        uint64_t *host, uint64_t *n)
{
  uint64_t cs = s->cluster_size;
  *n = 0;
  uint64_t pos = off, end = off + len;
  uint64_t gc = pos >> s->cluster_bits, l1i = gc >> s->l2_bits;
  uint8_t *tbl;
  int r;
  if (l1i < s->l1_size && (s->l1[l1i] & QCOW2_OFFSET_MASK)) {
    r = check_l2_offset(s, l1i, s->l1[l1i] & QCOW2_OFFSET_MASK);
    if (r < 0)
      return write_refused_corrupt(s, r);
  }
  r = l2_table_for_read(s, l1i, &tbl);
  if (r < 0 || !tbl)
    return r;
  uint64_t table_end = ((gc >> s->l2_bits) + 1) << (s->l2_bits + s->cluster_bits);
  while (pos < end && pos < table_end) {
    gc = pos >> s->cluster_bits;
    uint64_t idx = gc & (s->l2_entries - 1);
    uint64_t e = l2_get(s, tbl, idx), b = l2_bitmap(s, tbl, idx);
    uint64_t in = pos & (cs - 1), chunk = SL_MIN(end - pos, cs - in);
    if (!writable_in_place(s, e, b, in, chunk))
      break;
    uint64_t h = (e & QCOW2_OFFSET_MASK) + in;
    if ((e & QCOW2_OFFSET_MASK) < cs) {
      r = sl_error(EIO, "%s: L2 entry for cluster %" PRIu64 " points into the "
                   "header", s->img->filename, gc);
      r = write_refused_corrupt(s, r);
      break;
    }
    if (*n == 0)
      *host = h;
    else if (*host + *n != h)
      break;
    *n += chunk;
    pos += chunk;
  }
  qcow2_cache_put(&s->l2_cache, tbl);
  return r;
}

int qcow2_write(struct qcow2_state *s, const void *buf, size_t len, uint64_t off)
{
  const uint8_t *p = buf;
  int r = 0;
  bool pending = false;
  while (len > 0) {
    uint64_t host = 0, n = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->writable) {
      pthread_mutex_unlock(&s->lock);
      return sl_error(EROFS, "%s: image is not writable (marked corrupt?)",
                      s->img->filename);
    }
    r = in_place_run(s, off, len, &host, &n);
    if (r == 0 && n)
      r = qcow2_overlap_check(s, 0, host, n);
    if (r == 0 && n == 0) {
      r = write_alloc(s, p, off, len, &n);
      pending |= s->npending > 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (r < 0)
      return r;
    if (host) {
      r = qcow2_io_write(s, p, n, host);
      if (r < 0)
        return r;
    }
    p += n;
    off += n;
    len -= n;
  }
  if (pending) {
    SCOPED_LOCK(&s->lock);
    r = qcow2_apply_pending_frees(s);
  }
  return r;
}

/* ---- discard and write-zeroes ---- */

static int zero_clusters(struct qcow2_state *s, uint64_t off, uint64_t len,
                         bool discard, bool keep_alloc)
{
  uint64_t cs = s->cluster_size, scs = s->subcluster_size;
  bool has_backing = s->img->backing_file != NULL;
  int r = 0;
  while (len > 0 && r == 0) {
    uint64_t gc = off >> s->cluster_bits, idx = gc & (s->l2_entries - 1);
    uint64_t in = off & (cs - 1), n = SL_MIN(len, cs - in);
    uint8_t *tbl;
    r = l2_table_for_write(s, gc >> s->l2_bits, &tbl);
    if (r < 0)
      return r;
    uint64_t e = l2_get(s, tbl, idx), b = l2_bitmap(s, tbl, idx);
    uint64_t host = e & QCOW2_OFFSET_MASK;
    uint64_t ne, nb = 0;
    bool whole = n == cs;
    if (!s->extended_l2) {
      bool keep = keep_alloc && !discard && host && (e & QCOW2_OFLAG_COPIED) &&
                  !(e & QCOW2_OFLAG_COMPRESSED);
      /* Version 2 has no zero flag: an unallocated entry reads as zeros
       * without a backing file, and qcow2_zero_or_discard never comes here
       * for a version 2 image with one. */
      if (keep)
        ne = host | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO;
      else if (s->version < 3)
        ne = 0;
      else
        ne = (discard && !has_backing) ? 0 : QCOW2_OFLAG_ZERO;
      if (!keep)
        r = queue_free_entry(s, e);
    } else if (e & QCOW2_OFLAG_COMPRESSED) {
      /* Only whole clusters reach here for compressed entries. */
      ne = 0;
      nb = (discard && !has_backing) ? 0 : 0xffffffff00000000ull;
      r = queue_free_entry(s, e);
    } else {
      uint32_t m = sc_mask((unsigned)(in / scs), (unsigned)((in + n - 1) / scs));
      uint32_t alloc = (uint32_t)b & ~m;
      uint32_t zero = (uint32_t)(b >> 32);
      if (discard && !has_backing)
        zero &= ~m;
      else
        zero |= m;
      ne = e;
      if (!alloc && host && !(keep_alloc && !discard && whole)) {
        r = queue_free_entry(s, e);
        ne = 0;
      }
      nb = (uint64_t)zero << 32 | alloc;
    }
    l2_set(s, tbl, idx, ne, nb);
    qcow2_cache_mark_dirty(&s->l2_cache, tbl);
    qcow2_cache_put(&s->l2_cache, tbl);
    off += n;
    len -= n;
  }
  return r;
}

static int write_zero_bytes(struct qcow2_state *s, uint64_t off, uint64_t len)
{
  CLEANUP_FREE uint8_t *z = calloc(1, (size_t)SL_MIN(len, 1u << 20));
  if (!z)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  while (len > 0) {
    uint64_t n = SL_MIN(len, 1u << 20);
    int r = qcow2_write(s, z, n, off);
    if (r < 0)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

/* Is the entry for guest cluster GC compressed? (lock held) */
static int is_compressed(struct qcow2_state *s, uint64_t gc, bool *out)
{
  uint8_t *tbl;
  *out = false;
  int r = l2_table_for_read(s, gc >> s->l2_bits, &tbl);
  if (r < 0 || !tbl)
    return r;
  *out = (l2_get(s, tbl, gc & (s->l2_entries - 1)) & QCOW2_OFLAG_COMPRESSED) != 0;
  qcow2_cache_put(&s->l2_cache, tbl);
  return 0;
}

int qcow2_zero_or_discard(struct qcow2_state *s, uint64_t off, uint64_t len,
                          bool discard, bool keep_alloc)
{
  uint64_t cs = s->cluster_size;
  uint64_t gran = s->subcluster_size;
  uint64_t end = off + len;
  /* The last cluster may be partial: its end counts as aligned. */
  uint64_t alo = SL_ROUND_UP(off, gran);
  uint64_t ahi = end == s->size ? end : end / gran * gran;
  /* Version 2 cannot record zeros in an allocated cluster, nor zeros over
   * a backing file: those zeros are written (QEMU falls back the same way).
   * A discard there would expose the backing file's stale data, so, as in
   * QEMU, it does nothing (a discard is advisory). */
  if (s->version < 3 && s->img->backing_file != NULL && discard)
    return 0;
  if (s->version < 3 && !discard &&
      (keep_alloc || s->img->backing_file != NULL))
    return write_zero_bytes(s, off, len);
  if (alo >= ahi) {
    return discard ? 0 : write_zero_bytes(s, off, len);
  }
  int r = 0;
  if (!discard && alo > off)
    r = write_zero_bytes(s, off, alo - off);
  if (r == 0 && !discard && ahi < end)
    r = write_zero_bytes(s, ahi, end - ahi);
  if (r < 0)
    return r;
  uint64_t pos = alo;
  while (pos < ahi && r == 0) {
    uint64_t gc = pos >> s->cluster_bits;
    uint64_t n = SL_MIN(ahi - pos, (gc + 1) * cs - pos);
    bool whole = (pos & (cs - 1)) == 0 && (n == cs || pos + n == s->size);
    bool comp = false;
    {
      SCOPED_LOCK(&s->lock);
      if (!s->writable)
        return sl_error(EROFS, "%s: image is not writable", s->img->filename);
      if (!whole)
        r = is_compressed(s, gc, &comp);
      if (r == 0 && !comp) {
        /* A batch of whole clusters, or one partial cluster. */
        uint64_t batch = n;
        if (whole)
          batch = ahi - pos;
        if (!whole || (s->extended_l2 && pos + batch > ahi))
          batch = n;
        if (whole && (ahi - pos) >= cs)
          batch = (ahi - pos) / cs * cs;
        r = zero_clusters(s, pos, batch, discard, keep_alloc);
        n = batch;
      }
    }
    if (r == 0 && comp && !discard)
      r = write_zero_bytes(s, pos, n);
    pos += n;
  }
  if (r == 0) {
    SCOPED_LOCK(&s->lock);
    r = qcow2_apply_pending_frees(s);
  }
  return r;
}
