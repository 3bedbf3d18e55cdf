/* qcow2 refcounts: reading and updating them, allocating clusters, and
 * growing the refcount structures as the image grows.
 *
 * A new refcount block for range R (clusters R*E .. R*E+E-1) is placed at
 * the first cluster of that range and counts itself: the range is free
 * (it had no block), so the block never needs a block elsewhere.  When the
 * refcount table is too small, the new blocks and the new, larger table go
 * together at the start of the first uncovered range, all counted by those
 * new blocks; the header is switched to the new table with one write after
 * both are on disk, then the old table is freed.
 *
 * The metadata overlap check (qcow2_overlap_check) also lives here, as in
 * QEMU: before any cluster is written, its range is compared with every
 * piece of metadata the image holds in memory -- header, active L1, active
 * L2 tables (through the L1), refcount table and blocks (through the
 * table), snapshot table, snapshots' L1 tables, bitmap directory.  That is
 * QEMU's default "cached" check: nothing is read from the file for it.
 * Metadata that points into other metadata (a refcount of 0 on an L2
 * table, an L2 entry naming the L1 table) would otherwise make the next
 * write overwrite it; the check refuses the write, marks the image corrupt
 * (incompatible bit 1) so that nothing writes to it until `check -r all`,
 * and the request fails with EIO.  Cost: a walk of the L1 table and of the
 * used part of the refcount table per write, a few hundred compares for
 * typical images, as QEMU pays.
 *
 * Callers hold s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

uint64_t qcow2_rc_get_entry(const struct qcow2_state *s, const uint8_t *blk,
                            uint64_t i)
{
  switch (s->refcount_order) {
  case 0: return (blk[i / 8] >> (i % 8)) & 1;
  case 1: return (blk[i / 4] >> (2 * (i % 4))) & 3;
  case 2: return (blk[i / 2] >> (4 * (i % 2))) & 15;
  case 3: return blk[i];
  case 4: return (uint64_t)blk[2 * i] << 8 | blk[2 * i + 1];
  case 5: return qcow2_be32(blk + 4 * i);
  default: return qcow2_be64(blk + 8 * i);
  }
}

void qcow2_rc_set_entry(const struct qcow2_state *s, uint8_t *blk, uint64_t i,
                        uint64_t v)
{
  switch (s->refcount_order) {
  case 0: case 1: case 2: {
    unsigned bits = 1u << s->refcount_order, per = 8 / bits;
    unsigned shift = bits * (unsigned)(i % per);
    uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
    blk[i / per] = (uint8_t)((blk[i / per] & ~mask) | ((v << shift) & mask));
    break;
  }
  case 3: blk[i] = (uint8_t)v; break;
  case 4: blk[2 * i] = (uint8_t)(v >> 8); blk[2 * i + 1] = (uint8_t)v; break;
  case 5: qcow2_put_be32(blk + 4 * i, (uint32_t)v); break;
  default: qcow2_put_be64(blk + 8 * i, v); break;
  }
}

static inline bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                                  uint64_t blen)
{
  return alen && blen && a < b + blen && b < a + alen;
}

void qcow2_update_rt_used(struct qcow2_state *s)
{
  uint64_t n = s->rt_size;
  while (n > 0 && s->rt[n - 1] == 0)
    n--;
  s->rt_used = n;
}

/* Which metadata (one QCOW2_OL_* bit) [off, off+len) overlaps, or 0. */
static unsigned overlap_kind(const struct qcow2_state *s, unsigned chk,
                             uint64_t off, uint64_t len)
{
  uint64_t cs = s->cluster_size;
#ifdef SL_QCOW2_NO_OVERLAP_CHECK
  /* Only for measuring what the check costs (bench/image-bench.sh
   * --baseline): never in a build that serves images. */
  (void)cs; (void)chk; (void)off; (void)len;
  return 0;
#endif
  if (len == 0)
    return 0;
  if ((chk & QCOW2_OL_HEADER) && off < cs)
    return QCOW2_OL_HEADER;
  /* Whole clusters: metadata owns the clusters it starts in. */
  uint64_t start = off & ~(cs - 1);
  uint64_t end = SL_ROUND_UP(off + len, cs);
  len = end - start;
  off = start;
  if ((chk & QCOW2_OL_ACTIVE_L1) &&
      ranges_overlap(off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
    return QCOW2_OL_ACTIVE_L1;
  if ((chk & QCOW2_OL_REFTABLE) &&
      ranges_overlap(off, len, s->rt_offset, (uint64_t)s->rt_clusters * cs))
    return QCOW2_OL_REFTABLE;
  if ((chk & QCOW2_OL_SNAPTABLE) &&
      ranges_overlap(off, len, s->snapshots_offset, s->snapshots_size))
    return QCOW2_OL_SNAPTABLE;
  if ((chk & QCOW2_OL_INACTIVE_L1) && s->snapshots)
    for (uint32_t i = 0; i < s->nsnapshots; i++)
      if (ranges_overlap(off, len, s->snapshots[i].l1_offset,
                         (uint64_t)s->snapshots[i].l1_size * 8))
        return QCOW2_OL_INACTIVE_L1;
  if ((chk & QCOW2_OL_BITMAP_DIR) && s->bitmap_ext &&
      ranges_overlap(off, len, s->bitmap_dir_offset, s->bitmap_dir_size))
    return QCOW2_OL_BITMAP_DIR;
  if ((chk & QCOW2_OL_ACTIVE_L2) && s->l1)
    for (uint32_t i = 0; i < s->l1_size; i++) {
      uint64_t t = s->l1[i] & QCOW2_OFFSET_MASK;
      if (t && t < end && off < t + cs)
        return QCOW2_OL_ACTIVE_L2;
    }
  if ((chk & QCOW2_OL_REFBLOCK) && s->rt)
    for (uint64_t i = 0; i < s->rt_used; i++) {
      uint64_t b = s->rt[i] & ~QCOW2_RT_RESERVED;
      if (b && b < end && off < b + cs)
        return QCOW2_OL_REFBLOCK;
    }
  return 0;
}

static const char *overlap_name(unsigned kind)
{
  switch (kind) {
  case QCOW2_OL_HEADER: return "qcow2_header";
  case QCOW2_OL_ACTIVE_L1: return "active L1 table";
  case QCOW2_OL_ACTIVE_L2: return "active L2 table";
  case QCOW2_OL_REFTABLE: return "refcount table";
  case QCOW2_OL_REFBLOCK: return "refcount block";
  case QCOW2_OL_SNAPTABLE: return "snapshot table";
  case QCOW2_OL_INACTIVE_L1: return "inactive L1 table";
  default: return "bitmap directory";
  }
}

int qcow2_overlap_check(struct qcow2_state *s, unsigned ign, uint64_t off,
                        uint64_t len)
{
  unsigned kind = overlap_kind(s, ~ign, off, len);
  if (!kind)
    return 0;
  const char *what = overlap_name(kind);
  qcow2_mark_corrupt(s, what);
  return sl_error(EIO, "%s: Preventing invalid write on metadata (overlaps "
                  "with %s) at 0x%" PRIx64 " (%" PRIu64 " bytes); the image "
                  "is marked corrupt: repair it with 'sluice check -r all'",
                  s->img->filename, what, off, len);
}

int qcow2_write_checked(struct qcow2_state *s, unsigned ign, const void *buf,
                        size_t len, uint64_t off)
{
  if (!s->writable) /* marked corrupt meanwhile: nothing more is written */
    return sl_error(EROFS, "%s: image is not writable", s->img->filename);
  int r = qcow2_overlap_check(s, ign, off, len);
  return r < 0 ? r : qcow2_io_write(s, buf, len, off);
}

static uint64_t rc_max(const struct qcow2_state *s)
{
  return s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
}

static int load_block(struct qcow2_state *s, uint64_t idx, uint8_t **blk)
{
  uint64_t off = s->rt[idx] & ~QCOW2_RT_RESERVED;
  if (off & (s->cluster_size - 1) || off < s->cluster_size ||
      off > (uint64_t)INT64_MAX - s->cluster_size)
    return sl_error(EIO, "%s: refcount block %" PRIu64 " at 0x%" PRIx64
                    " is misaligned or overlaps the header",
                    s->img->filename, idx, off);
  return qcow2_cache_get(s, &s->rb_cache, off, false, blk);
}

int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster, uint64_t *rc)
{
  uint64_t idx = cluster >> s->rb_bits;
  *rc = 0;
  if (idx >= s->rt_size || s->rt[idx] == 0)
    return 0;
  uint8_t *blk;
  int r = load_block(s, idx, &blk);
  if (r < 0)
    return r;
  *rc = qcow2_rc_get_entry(s, blk, cluster & (s->rb_entries - 1));
  qcow2_cache_put(&s->rb_cache, blk);
  return 0;
}

static int write_rt_entry(struct qcow2_state *s, uint64_t idx)
{
  uint8_t be[8];
  qcow2_put_be64(be, s->rt[idx]);
  return qcow2_write_checked(s, QCOW2_OL_REFTABLE, be, 8,
                             s->rt_offset + idx * 8);
}

/* Write a fresh refcount block for range RANGE at cluster AT, counting the
 * clusters [first, first+n) that lie in its range. */
static int write_new_block(struct qcow2_state *s, uint64_t range, uint64_t at,
                           uint64_t first, uint64_t n)
{
  uint8_t *blk;
  int r = qcow2_cache_get(s, &s->rb_cache, at * s->cluster_size, true, &blk);
  if (r < 0)
    return r;
  uint64_t lo = range * s->rb_entries, hi = lo + s->rb_entries;
  for (uint64_t c = SL_MAX(first, lo); c < SL_MIN(first + n, hi); c++)
    qcow2_rc_set_entry(s, blk, c - lo, 1);
  /* Not yet in the refcount table: checked against everything. */
  r = qcow2_write_checked(s, 0, blk, s->cluster_size, at * s->cluster_size);
  qcow2_cache_put(&s->rb_cache, blk);
  return r;
}

static int grow_table(struct qcow2_state *s, uint64_t range)
{
  const char *fn = s->img->filename;
  uint64_t cs = s->cluster_size, per_cluster = cs / 8;
  uint64_t start = range * s->rb_entries;
  uint64_t nblocks = 1, tclusters, entries;
  for (;;) {
    entries = SL_MAX(s->rt_size * 2, range + nblocks);
    tclusters = SL_DIV_ROUND_UP(entries, per_cluster);
    entries = tclusters * per_cluster;
    uint64_t need = SL_DIV_ROUND_UP(nblocks + tclusters, s->rb_entries);
    if (need <= nblocks)
      break;
    nblocks = need;
  }
  if (tclusters * cs > QCOW2_MAX_REFTABLE_BYTES)
    return sl_error(EFBIG, "%s: the refcount table would exceed 8 MiB", fn);
  uint64_t *nt = calloc(entries, 8);
  if (!nt)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  memcpy(nt, s->rt, s->rt_size * 8);
  int r = 0;
  for (uint64_t j = 0; j < nblocks && r == 0; j++) {
    nt[range + j] = (start + j) * cs;
    r = write_new_block(s, range + j, start + j, start, nblocks + tclusters);
  }
  if (r < 0) {
    free(nt);
    return r;
  }
  uint64_t old_off = s->rt_offset, old_clusters = s->rt_clusters;
  r = qcow2_install_reftable(s, nt, tclusters, (start + nblocks) * cs);
  if (r == 0)
    r = qcow2_queue_free(s, old_off, old_clusters * cs);
  return r;
}

/* Write TABLE (CLUSTERS clusters of entries) at OFF and make it durable
 * before the header points at it, so a crash leaves either the old table
 * or the new one, never a header naming a half-written table.  Takes
 * ownership of TABLE. */
int qcow2_install_reftable(struct qcow2_state *s, uint64_t *table,
                           uint64_t clusters, uint64_t off)
{
  uint64_t bytes = clusters * s->cluster_size, entries = bytes / 8;
  uint8_t *buf = NULL;
  int r = 0;
  if (posix_memalign((void **)&buf, 4096, bytes))
    r = sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  if (r == 0) {
    for (uint64_t i = 0; i < entries; i++)
      qcow2_put_be64(buf + i * 8, table[i]);
    r = qcow2_write_checked(s, 0, buf, bytes, off);
  }
  free(buf);
  if (r == 0)
    r = qcow2_sync(s);
  if (r < 0) {
    free(table);
    return r;
  }
  free(s->rt);
  s->rt = table;
  s->rt_size = entries;
  s->rt_offset = off;
  s->rt_clusters = (uint32_t)clusters;
  qcow2_update_rt_used(s);
  r = qcow2_write_header_fields(s);
  if (r == 0)
    r = qcow2_sync(s);
  return r;
}

/* Make sure range IDX has a refcount block. */
static int ensure_block(struct qcow2_state *s, uint64_t idx)
{
  if (idx < s->rt_size && s->rt[idx])
    return 0;
  if (idx >= s->rt_size)
    return grow_table(s, idx);
  uint64_t at = idx * s->rb_entries;
  int r = write_new_block(s, idx, at, at, 1);
  if (r == 0)
    r = qcow2_sync(s);
  if (r < 0)
    return r;
  s->rt[idx] = at * s->cluster_size;
  if (idx + 1 > s->rt_used)
    s->rt_used = idx + 1;
  r = write_rt_entry(s, idx);
  s->l2_needs_refcount_flush = true;
  return r;
}

int qcow2_update_refcount(struct qcow2_state *s, uint64_t cluster, int64_t delta)
{
  uint64_t idx = cluster >> s->rb_bits;
  if (delta > 0) {
    int r = ensure_block(s, idx);
    if (r < 0)
      return r;
  } else if (idx >= s->rt_size || s->rt[idx] == 0) {
    return sl_error(EIO, "%s: freeing cluster %" PRIu64 " that has no "
                    "refcount block", s->img->filename, cluster);
  }
  uint8_t *blk;
  int r = load_block(s, idx, &blk);
  if (r < 0)
    return r;
  uint64_t i = cluster & (s->rb_entries - 1);
  uint64_t v = qcow2_rc_get_entry(s, blk, i);
  if ((delta < 0 && v < (uint64_t)-delta) ||
      (delta > 0 && rc_max(s) - v < (uint64_t)delta)) {
    qcow2_cache_put(&s->rb_cache, blk);
    /* The metadata contradicts itself: stop writing before it gets worse. */
    if (delta < 0)
      qcow2_mark_corrupt(s, "refcount underflow");
    return sl_error(EIO, "%s: refcount of cluster %" PRIu64 " (%" PRIu64
                    ") cannot change by %" PRId64 "%s", s->img->filename,
                    cluster, v, delta,
                    delta < 0 ? "; image marked corrupt" : "");
  }
  v += (uint64_t)delta;
  qcow2_rc_set_entry(s, blk, i, v);
  qcow2_cache_mark_dirty(&s->rb_cache, blk);
  qcow2_cache_put(&s->rb_cache, blk);
  if (delta > 0)
    s->l2_needs_refcount_flush = true;
  if (v == 0) {
    if (cluster < s->free_hint)
      s->free_hint = cluster;
    qcow2_cache_forget(&s->l2_cache, cluster * s->cluster_size);
  }
  return 0;
}

/* The first free cluster at or after FROM, creating refcount blocks as
 * needed (a new block takes the first cluster of its range). */
static int find_free(struct qcow2_state *s, uint64_t from, uint64_t *out)
{
  uint64_t c = from;
  for (;;) {
    uint64_t idx = c >> s->rb_bits;
    int r = ensure_block(s, idx);
    if (r < 0)
      return r;
    uint8_t *blk;
    r = load_block(s, idx, &blk);
    if (r < 0)
      return r;
    uint64_t i = c & (s->rb_entries - 1);
    while (i < s->rb_entries && qcow2_rc_get_entry(s, blk, i) != 0)
      i++;
    qcow2_cache_put(&s->rb_cache, blk);
    c = (idx << s->rb_bits) + i;
    if (i < s->rb_entries) {
      *out = c;
      return 0;
    }
  }
}

int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset,
                         uint64_t *got)
{
  uint64_t c;
  int r = find_free(s, SL_MAX(s->free_hint, 1), &c);
  if (r < 0)
    return r;
  if (c + n > (QCOW2_OFFSET_MASK >> s->cluster_bits))
    return sl_error(ENOSPC, "%s: image file would exceed the qcow2 offset "
                    "limit", s->img->filename);
  uint64_t count = 1;
  while (count < n) {
    uint64_t nc = c + count, idx = nc >> s->rb_bits, rc;
    if (idx >= s->rt_size || s->rt[idx] == 0)
      break; /* the next range needs a block first: stop the run here */
    r = qcow2_get_refcount(s, nc, &rc);
    if (r < 0)
      return r;
    if (rc)
      break;
    count++;
  }
  for (uint64_t i = 0; i < count; i++) {
    r = qcow2_update_refcount(s, c + i, 1);
    if (r < 0)
      return r;
  }
  if (c <= s->free_hint + 1)
    s->free_hint = c + count;
  *offset = c << s->cluster_bits;
  *got = count;
  return 0;
}

int qcow2_queue_free(struct qcow2_state *s, uint64_t offset, uint64_t bytes)
{
  if (s->npending == s->pending_cap) {
    size_t cap = s->pending_cap ? s->pending_cap * 2 : 16;
    struct qcow2_free *n = realloc(s->pending_free, cap * sizeof *n);
    if (!n)
      return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
    s->pending_free = n;
    s->pending_cap = cap;
  }
  s->pending_free[s->npending++] = (struct qcow2_free){offset, bytes};
  return 0;
}

int qcow2_flush_refcounts(struct qcow2_state *s)
{
  bool dirty = s->l2_needs_refcount_flush;
  for (size_t i = 0; i < s->rb_cache.nslots && !dirty; i++)
    dirty = s->rb_cache.slots[i].dirty;
  if (!dirty)
    return 0;
  int r = qcow2_cache_flush(s, &s->rb_cache);
  if (r == 0)
    r = qcow2_sync(s);
  if (r == 0)
    s->l2_needs_refcount_flush = false;
  return r;
}

/* The crash-critical order, written once: refcount blocks first (a
 * cluster's refcount is on disk before any table that references it), then
 * the L2 tables, then the L1 table that points at them. */
int qcow2_write_tables(struct qcow2_state *s)
{
  int r = qcow2_flush_refcounts(s);
  if (r == 0)
    r = qcow2_cache_flush(s, &s->l2_cache);
  if (r == 0)
    r = qcow2_flush_l1(s);
  return r;
}

/* Decrement the refcounts of queued clusters, once no table on disk refers
 * to them any more. */
int qcow2_apply_pending_frees(struct qcow2_state *s)
{
  if (s->npending == 0)
    return 0;
  int r = qcow2_write_tables(s);
  if (r == 0)
    r = qcow2_sync(s);
  if (r < 0)
    return r;
  size_t n = s->npending;
  s->npending = 0;
  for (size_t i = 0; i < n; i++) {
    struct qcow2_free f = s->pending_free[i];
    uint64_t first = f.offset >> s->cluster_bits;
    uint64_t last = (f.offset + f.bytes - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
      r = qcow2_update_refcount(s, c, -1);
      if (r < 0)
        return r;
    }
  }
  return 0;
}
