/* qcow2 consistency check and repair, counting problems as `qemu-img check`
 * does so the two agree on injected leaks and corruptions.
 *
 * The walk computes the expected refcount of every cluster from what
 * references it (header, L1 tables of the image and of its snapshots, L2
 * tables, data and compressed clusters, the snapshot table, the refcount
 * table and blocks), then compares with the refcounts on disk:
 *   on disk > expected  -> "Leaked cluster N refcount=A reference=B" (leak)
 *   on disk < expected  -> "ERROR cluster N refcount=A reference=B" (corruption)
 * Then the COPIED flags of the active L1/L2 entries are compared with the
 * refcounts.  Repair rewrites refcounts (leaks with SL_CHECK_REPAIR_LEAKS,
 * everything with SL_CHECK_REPAIR_ALL) and COPIED flags, then the image is
 * checked again: corruptions/leaks report what remains, *_fixed what was
 * repaired.
 *
 * When the refcount structure itself is broken (a refcount table entry
 * misaligned or past the end of the file, or a referenced cluster with no
 * refcount block), single updates cannot repair it: `-r all` then writes
 * a whole new table and blocks from the walk's counts, as qemu-img's
 * rebuild does (rebuild_refcounts()).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

struct check {
  struct qcow2_state *s;
  struct sl_check_result *res;
  uint32_t *ref;      /* expected refcount per cluster */
  uint64_t nref;
  uint64_t file_clusters;
  uint64_t file_len;  /* bytes */
  bool rebuild;       /* the refcount structure itself is broken */
  uint64_t bad_rt_entries;
};

static int inc_refs(struct check *c, uint64_t off, uint64_t bytes)
{
  if (bytes == 0)
    return 0;
  struct qcow2_state *s = c->s;
  /* The last cluster may be partly past the end of the file; anything
   * further is a corruption and is not counted (as qemu-img does). */
  uint64_t end;
  if (!sl_add_ok(off, bytes, &end) ||
      (end > c->file_len && end - c->file_len >= s->cluster_size)) {
    fprintf(stderr, "ERROR: counting reference for region exceeding the "
            "end of the file by one cluster or more: offset 0x%" PRIx64
            " size 0x%" PRIx64 "\n", off, bytes);
    c->res->corruptions++;
    return 0;
  }
  uint64_t first = off >> s->cluster_bits;
  uint64_t last = (off + bytes - 1) >> s->cluster_bits;
  if (last >= c->nref) {
    uint64_t n = SL_MAX(last + 1, c->nref * 2);
    uint32_t *nr = realloc(c->ref, n * sizeof *nr);
    if (!nr)
      return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
    memset(nr + c->nref, 0, (n - c->nref) * sizeof *nr);
    c->ref = nr;
    c->nref = n;
  }
  for (uint64_t i = first; i <= last; i++)
    c->ref[i]++;
  return 0;
}

/* Read BYTES at OFF; what lies past the end of the file reads as zeros. */
static int read_padded(struct check *c, void *buf, uint64_t bytes, uint64_t off)
{
  uint64_t have = off < c->file_len ? SL_MIN(bytes, c->file_len - off) : 0;
  memset((uint8_t *)buf + have, 0, bytes - have);
  return have ? qcow2_io_read(c->s, buf, have, off) : 0;
}

static bool in_file(struct check *c, uint64_t off, uint64_t bytes)
{
  return off + bytes <= c->file_clusters << c->s->cluster_bits;
}

/* One L2 table.  ACTIVE: the image's own L1 (statistics count). */
static int check_l2(struct check *c, uint64_t l2off, bool active)
{
  struct qcow2_state *s = c->s;
  uint64_t cs = s->cluster_size;
  CLEANUP_FREE uint8_t *t = malloc(cs);
  if (!t)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  int r = read_padded(c, t, cs, l2off);
  if (r < 0)
    return r;
  uint64_t next = 0;
  for (uint64_t i = 0; i < s->l2_entries; i++) {
    uint64_t e = qcow2_be64(t + i * s->l2_entry_size);
    uint64_t b = s->extended_l2 ? qcow2_be64(t + i * 16 + 8) : 0;
    if (e & QCOW2_OFLAG_COMPRESSED) {
      if (e & QCOW2_OFLAG_COPIED) {
        fprintf(stderr, "ERROR: coffset=0x%" PRIx64 ": copied flag must never "
                "be set for compressed clusters\n", (uint64_t)(e & ~(3ull << 62)));
        c->res->corruptions++;
      }
      if (s->extended_l2 && b) {
        fprintf(stderr, "ERROR compressed cluster %" PRIu64 " with non-zero "
                "subcluster allocation bitmap, entry=0x%" PRIx64 "\n", i, e);
        c->res->corruptions++;
      }
      uint64_t host, bytes;
      qcow2_compressed_range(s, e, &host, &bytes);
      if (active) {
        c->res->allocated_clusters++;
        c->res->compressed_clusters++;
        c->res->fragmented_clusters++;
      }
      r = inc_refs(c, host, bytes);
      if (r < 0)
        return r;
      continue;
    }
    if (s->extended_l2) {
      uint32_t alloc = (uint32_t)b, zero = (uint32_t)(b >> 32);
      if ((alloc & zero) || (alloc && !(e & QCOW2_OFFSET_MASK))) {
        fprintf(stderr, "ERROR invalid cluster entry=0x%" PRIx64 " bitmap=0x%"
                PRIx64 "\n", e, b);
        c->res->corruptions++;
      }
    }
    if (e & QCOW2_L2_RESERVED) {
      fprintf(stderr, "ERROR found l2 entry with reserved bits set: %" PRIx64
              "\n", e);
      c->res->corruptions++;
    }
    uint64_t host = e & QCOW2_OFFSET_MASK;
    if (!host)
      continue;
    if (host & (cs - 1)) {
      fprintf(stderr, "ERROR offset=%" PRIx64 ": Cluster is not properly "
              "aligned; L2 entry corrupted.\n", host);
      c->res->corruptions++;
    }
    if (active) {
      c->res->allocated_clusters++;
      if (next && host != next)
        c->res->fragmented_clusters++;
      next = host + cs;
    }
    r = inc_refs(c, host, cs);
    if (r < 0)
      return r;
  }
  return 0;
}

static int check_l1(struct check *c, uint64_t l1off, uint64_t l1size,
                    bool active)
{
  struct qcow2_state *s = c->s;
  int r = inc_refs(c, l1off, l1size * 8);
  if (r < 0 || l1size == 0)
    return r;
  if (l1size * 8 > QCOW2_MAX_L1_BYTES) {
    fprintf(stderr, "ERROR: L1 table at 0x%" PRIx64 " (%" PRIu64 " entries) "
            "is too large\n", l1off, l1size);
    c->res->corruptions++;
    return 0;
  }
  CLEANUP_FREE uint64_t *l1 = malloc(l1size * 8);
  if (!l1)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  r = read_padded(c, l1, l1size * 8, l1off);
  if (r < 0)
    return r;
  for (uint64_t i = 0; i < l1size; i++) {
    l1[i] = be64toh(l1[i]);
    if (l1[i] & QCOW2_L1_RESERVED) {
      fprintf(stderr, "ERROR found L1 entry with reserved bits set: %" PRIx64
              "\n", l1[i]);
      c->res->corruptions++;
    }
    uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
    if (!l2off)
      continue;
    r = inc_refs(c, l2off, s->cluster_size);
    if (r < 0)
      return r;
    if (l2off & (s->cluster_size - 1)) {
      fprintf(stderr, "ERROR l2_offset=%" PRIx64 ": Table is not cluster "
              "aligned; L1 entry corrupted\n", l2off);
      c->res->corruptions++;
      continue;
    }
    if (!in_file(c, l2off, 1))
      continue; /* reported by inc_refs; reads as zeros */
    r = check_l2(c, l2off, active);
    if (r < 0)
      return r;
  }
  return 0;
}

static int check_snapshots(struct check *c)
{
  struct qcow2_state *s = c->s;
  if (s->nb_snapshots == 0)
    return 0;
  uint64_t off = s->snapshots_offset, start = off;
  if (s->nb_snapshots > 65536 || (off & (s->cluster_size - 1))) {
    fprintf(stderr, "ERROR snapshot table at 0x%" PRIx64 " is invalid\n", off);
    c->res->corruptions++;
    return 0;
  }
  for (uint32_t i = 0; i < s->nb_snapshots; i++) {
    uint8_t h[40];
    if (!in_file(c, off, 40)) {
      fprintf(stderr, "ERROR snapshot table entry %u is incomplete\n", i);
      c->res->corruptions++;
      return 0;
    }
    int r = qcow2_io_read(s, h, 40, off);
    if (r < 0)
      return r;
    uint64_t l1off = qcow2_be64(h);
    uint32_t l1size = qcow2_be32(h + 8);
    uint32_t id = (uint32_t)h[12] << 8 | h[13];
    uint32_t name = (uint32_t)h[14] << 8 | h[15];
    uint32_t extra = qcow2_be32(h + 36);
    off += SL_ROUND_UP(40 + (uint64_t)extra + id + name, 8);
    r = check_l1(c, l1off, l1size, false);
    if (r < 0)
      return r;
  }
  return inc_refs(c, start, off - start);
}

/* The bitmap directory, each bitmap table and its data clusters, counted
 * as qemu-img counts them: only while the extension is trusted (autoclear
 * bit 0 set); otherwise QEMU ignores it and its clusters are leaks. */
static int check_bitmaps(struct check *c)
{
  struct qcow2_state *s = c->s;
  if (!s->bitmap_ext || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
    return 0;
  if (s->bitmap_ext_bad)
    return 0;
  int r = inc_refs(c, s->bitmap_dir_offset, s->bitmap_dir_size);
  if (r < 0)
    return r;
  if (!s->bitmaps_valid) {
    fprintf(stderr, "ERROR %s\n", s->bitmap_error ? s->bitmap_error
                                                   : "broken bitmap directory");
    c->res->corruptions++;
    return 0;
  }
  for (uint32_t i = 0; i < s->nbitmaps; i++) {
    const struct qcow2_bitmap *bm = &s->bitmaps[i];
    uint64_t bytes = (uint64_t)bm->table_size * 8;
    r = inc_refs(c, bm->table_offset, bytes);
    if (r < 0)
      return r;
    if (!in_file(c, bm->table_offset, bytes)) {
      fprintf(stderr, "ERROR bitmap '%s': its table lies past the end of "
              "the file\n", bm->name);
      c->res->corruptions++;
      continue;
    }
    CLEANUP_FREE uint64_t *t = NULL;
    r = qcow2_read_table(s, bm->table_offset, bm->table_size, &t);
    if (r < 0)
      return r;
    for (uint32_t j = 0; j < bm->table_size; j++) {
      uint64_t off = t[j] & QCOW2_OFFSET_MASK;
      if ((t[j] & 0xff000000000001feull) || (off && (t[j] & 1)) ||
          (off & (s->cluster_size - 1))) {
        fprintf(stderr, "ERROR bitmap '%s': invalid bitmap table entry "
                "0x%" PRIx64 "\n", bm->name, t[j]);
        c->res->corruptions++;
        continue;
      }
      if (off) {
        r = inc_refs(c, off, s->cluster_size);
        if (r < 0)
          return r;
      }
    }
  }
  return 0;
}

static int check_refcount_structures(struct check *c)
{
  struct qcow2_state *s = c->s;
  int r = inc_refs(c, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size);
  for (uint64_t i = 0; r == 0 && i < s->rt_size; i++) {
    uint64_t off = s->rt[i] & ~QCOW2_RT_RESERVED;
    if (s->rt[i] & QCOW2_RT_RESERVED) {
      fprintf(stderr, "ERROR refcount table entry %" PRIu64 " has reserved "
              "bits set\n", i);
      c->res->corruptions++;
      c->rebuild = true;
      c->bad_rt_entries++;
      continue;
    }
    if (!off)
      continue;
    if (off & (s->cluster_size - 1)) {
      /* Kept: reading its refcounts then fails, as in qemu-img. */
      fprintf(stderr, "ERROR refcount block %" PRIu64 " is not cluster "
              "aligned; refcount table entry corrupted\n", i);
      c->res->corruptions++;
      c->rebuild = true;
      c->bad_rt_entries++;
      continue;
    }
    if (!in_file(c, off, s->cluster_size)) {
      fprintf(stderr, "ERROR refcount block %" PRIu64 " is outside image\n", i);
      c->res->corruptions++;
      /* Its refcounts read as zeros, unless the offset is beyond what a
       * file can hold: then reading them fails, as in qemu-img. */
      if (off <= (uint64_t)INT64_MAX - s->cluster_size)
        s->rt[i] = 0;
      c->rebuild = true;
      c->bad_rt_entries++;
      continue;
    }
    r = inc_refs(c, off, s->cluster_size);
    uint64_t k = off >> s->cluster_bits;
    if (r == 0 && k < c->nref && c->ref[k] != 1) {
      /* Over other metadata: updating it would overwrite that. */
      fprintf(stderr, "ERROR refcount block %" PRIu64 " refcount=%u\n", i,
              c->ref[k]);
      c->res->corruptions++;
      c->rebuild = true;
      c->bad_rt_entries++;
    }
  }
  return r;
}

static int compare_refcounts(struct check *c, unsigned repair, bool *fixed_any)
{
  struct qcow2_state *s = c->s;
  uint64_t n = SL_MAX(c->nref, c->file_clusters);
  uint64_t highest = 0;
  bool any = false;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t disk, want = i < c->nref ? c->ref[i] : 0;
    int r = qcow2_get_refcount(s, i, &disk);
    if (r < 0) {
      fprintf(stderr, "Can't get refcount for cluster %" PRIu64 ": %s\n", i,
              sl_last_error());
      c->res->check_errors++;
      continue;
    }
    if (disk || want) {
      highest = i;
      any = true;
    }
    if (disk == want)
      continue;
    bool leak = disk > want;
    if (disk == 0 && (repair & SL_CHECK_REPAIR_ALL) && !c->rebuild) {
      /* As qemu-img: a referenced cluster counted 0 means the refcount
       * structure cannot be trusted to say what is free. */
      c->rebuild = true;
    }
    bool fix = leak ? (repair & (SL_CHECK_REPAIR_LEAKS | SL_CHECK_REPAIR_ALL))
                    : (repair & SL_CHECK_REPAIR_ALL);
    fprintf(stderr, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%"
            PRIu64 "\n", fix ? "Repairing" : leak ? "Leaked" : "ERROR", i,
            disk, want);
    if (leak)
      c->res->leaks++;
    else
      c->res->corruptions++;
    if (!fix)
      continue;
    if (c->rebuild && (repair & SL_CHECK_REPAIR_ALL)) {
      /* rebuild_refcounts() writes every count afresh. */
      if (leak)
        c->res->leaks_fixed++;
      else
        c->res->corruptions_fixed++;
      continue;
    }
    r = qcow2_update_refcount(s, i, (int64_t)want - (int64_t)disk);
    if (r < 0) {
      fprintf(stderr, "ERROR could not repair cluster %" PRIu64 ": %s\n", i,
              sl_last_error());
      c->res->check_errors++;
      continue;
    }
    *fixed_any = true;
    if (leak)
      c->res->leaks_fixed++;
    else
      c->res->corruptions_fixed++;
  }
  c->res->image_end_offset = any ? (highest + 1) << s->cluster_bits : 0;
  return 0;
}

/* Does a referenced cluster lack a refcount block?  Then no update can
 * repair it: the structure is rebuilt. */
static bool needs_rebuild(struct check *c)
{
  struct qcow2_state *s = c->s;
  for (uint64_t i = 0; i < c->nref; i++) {
    uint64_t idx = i >> s->rb_bits;
    if (c->ref[i] && (idx >= s->rt_size || s->rt[idx] == 0))
      return true;
  }
  return false;
}

/* Write a new refcount table and blocks from the counts the walk found,
 * after the last cluster in use, and switch the header to them.
 *
 * Why at the end, whole: the old structure cannot be trusted to say which
 * clusters are free, and the walk's counts are the truth.  The new blocks
 * count every cluster still referenced plus themselves; the old table and
 * blocks are not counted, so they become free clusters.  The header
 * switch is one write after the new structure is durable, so a crash in
 * between leaves the old (broken, unchanged) structure in place. */
static int rebuild_refcounts(struct check *c)
{
  struct qcow2_state *s = c->s;
  const char *fn = s->img->filename;
  uint64_t cs = s->cluster_size;
  /* Uncount the old structure: the new one replaces it. */
  uint64_t rt_first = s->rt_offset >> s->cluster_bits;
  for (uint64_t i = 0; i < s->rt_clusters && rt_first + i < c->nref; i++)
    if (c->ref[rt_first + i])
      c->ref[rt_first + i]--;
  for (uint64_t i = 0; i < s->rt_size; i++) {
    /* Only the blocks check_refcount_structures() counted. */
    uint64_t off = s->rt[i] & ~QCOW2_RT_RESERVED;
    uint64_t b = off >> s->cluster_bits;
    if (!off || (s->rt[i] & QCOW2_RT_RESERVED) || (off & (cs - 1)) ||
        !in_file(c, off, cs))
      continue;
    if (b < c->nref && c->ref[b])
      c->ref[b]--;
  }
  uint64_t used = 0;
  for (uint64_t i = 0; i < c->nref; i++)
    if (c->ref[i])
      used = i + 1;
  uint64_t start = SL_MAX(used, c->file_clusters);
  /* Blocks for everything up to the end of the new structure, and a table
   * with an entry per block: grow both until they cover themselves. */
  uint64_t nblocks = 1, tclusters = 1;
  for (;;) {
    uint64_t total = start + nblocks + tclusters;
    uint64_t nb = SL_DIV_ROUND_UP(total, s->rb_entries);
    uint64_t tc = SL_DIV_ROUND_UP(nb * 8, cs);
    if (nb <= nblocks && tc <= tclusters)
      break;
    nblocks = SL_MAX(nb, nblocks);
    tclusters = SL_MAX(tc, tclusters);
  }
  if (tclusters * cs > QCOW2_MAX_REFTABLE_BYTES)
    return sl_error(EFBIG, "%s: a rebuilt refcount table would exceed 8 MiB",
                    fn);
  uint64_t total = start + nblocks + tclusters;
  if (total > c->nref) {
    uint32_t *nr = realloc(c->ref, total * sizeof *nr);
    if (!nr)
      return sl_error(ENOMEM, "%s: out of memory", fn);
    memset(nr + c->nref, 0, (total - c->nref) * sizeof *nr);
    c->ref = nr;
    c->nref = total;
  }
  for (uint64_t i = start; i < total; i++)
    c->ref[i] = 1;
  uint64_t max = s->refcount_bits == 64 ? UINT64_MAX
                                        : (1ull << s->refcount_bits) - 1;
  uint64_t rt_entries = tclusters * cs / 8;
  uint64_t *nt = calloc(rt_entries, 8);
  uint8_t *buf = calloc(1, cs);
  int r = 0;
  if (!nt || !buf)
    r = sl_error(ENOMEM, "%s: out of memory", fn);
  for (uint64_t b = 0; r == 0 && b < nblocks; b++) {
    memset(buf, 0, cs);
    for (uint64_t j = 0; j < s->rb_entries; j++) {
      uint64_t cl = b * s->rb_entries + j;
      uint64_t v = cl < c->nref ? c->ref[cl] : 0;
      if (v > max) {
        r = sl_error(ERANGE, "%s: cluster %" PRIu64 " has %" PRIu64
                     " references, more than %u-bit refcounts hold", fn, cl,
                     v, s->refcount_bits);
        break;
      }
      qcow2_rc_set_entry(s, buf, j, v);
    }
    nt[b] = (start + b) * cs;
    if (r == 0)
      r = qcow2_write_checked(s, 0, buf, cs, (start + b) * cs);
  }
  uint64_t toff = (start + nblocks) * cs;
  free(buf);
  if (r < 0) {
    free(nt);
    return r;
  }
  /* The cache holds blocks of the old structure. */
  for (size_t i = 0; i < s->rb_cache.nslots; i++) {
    s->rb_cache.slots[i].offset = 0;
    s->rb_cache.slots[i].dirty = false;
  }
  c->file_clusters = SL_MAX(c->file_clusters, total);
  r = qcow2_install_reftable(s, nt, tclusters, toff);
  if (r == 0)
    fprintf(stderr, "Rebuilt the refcount structure: %" PRIu64 " block(s) and "
            "a %" PRIu64 "-cluster table at 0x%" PRIx64 "\n", nblocks, tclusters,
            toff);
  return r;
}

/* COPIED must be set exactly when the refcount is 1. */
static int check_copied(struct check *c, unsigned repair, bool *fixed_any)
{
  struct qcow2_state *s = c->s;
  bool fix = repair & SL_CHECK_REPAIR_ALL;
  bool l1_changed = false;
  for (uint64_t i = 0; i < s->l1_size; i++) {
    uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK;
    if (!l2off || (l2off & (s->cluster_size - 1)) ||
        !in_file(c, l2off, s->cluster_size))
      continue;
    uint64_t rc;
    if (qcow2_get_refcount(s, l2off >> s->cluster_bits, &rc) < 0)
      continue;
    bool copied = (s->l1[i] & QCOW2_OFLAG_COPIED) != 0;
    if ((rc == 1) != copied) {
      fprintf(stderr, "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64
              " l1_entry=%" PRIx64 " refcount=%" PRIu64 "\n",
              fix ? "Repairing" : "ERROR", i, s->l1[i], rc);
      c->res->corruptions++;
      if (fix) {
        s->l1[i] = rc == 1 ? s->l1[i] | QCOW2_OFLAG_COPIED
                           : s->l1[i] & ~QCOW2_OFLAG_COPIED;
        l1_changed = true;
        c->res->corruptions_fixed++;
      }
    }
    CLEANUP_FREE uint8_t *t = malloc(s->cluster_size);
    if (!t)
      return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
    int r = qcow2_io_read(s, t, s->cluster_size, l2off);
    if (r < 0)
      return r;
    bool l2_changed = false;
    for (uint64_t j = 0; j < s->l2_entries; j++) {
      uint8_t *p = t + j * s->l2_entry_size;
      uint64_t e = qcow2_be64(p), host = e & QCOW2_OFFSET_MASK;
      if ((e & QCOW2_OFLAG_COMPRESSED) || !host || (host & (s->cluster_size - 1)))
        continue;
      if (qcow2_get_refcount(s, host >> s->cluster_bits, &rc) < 0)
        continue;
      copied = (e & QCOW2_OFLAG_COPIED) != 0;
      if ((rc == 1) == copied)
        continue;
      fprintf(stderr, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
              " refcount=%" PRIu64 "\n", fix ? "Repairing" : "ERROR", e, rc);
      c->res->corruptions++;
      if (fix) {
        qcow2_put_be64(p, rc == 1 ? e | QCOW2_OFLAG_COPIED
                                  : e & ~QCOW2_OFLAG_COPIED);
        l2_changed = true;
        c->res->corruptions_fixed++;
      }
    }
    if (l2_changed) {
      r = qcow2_write_checked(s, QCOW2_OL_ACTIVE_L2, t, s->cluster_size,
                              l2off);
      if (r < 0)
        return r;
      *fixed_any = true;
    }
  }
  if (l1_changed) {
    s->l1_dirty = true;
    int r = qcow2_flush_l1(s);
    if (r < 0)
      return r;
    *fixed_any = true;
  }
  return 0;
}

static int check_once(const char *path, unsigned repair,
                      struct sl_check_result *res, bool *fixed_any)
{
  memset(res, 0, sizeof *res);
  bool force_share = repair & SL_CHECK_FORCE_SHARE;
  repair &= ~SL_CHECK_FORCE_SHARE;
  struct sl_image img = {.filename = (char *)path, .fd = -1};
  img.fd = open(path, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (img.fd < 0)
    return sl_error(errno, "%s: cannot open: %s", path, strerror(errno));
  int lr = sl_lock_image_fd(img.fd, path, SL_FORMAT_QCOW2, !repair, force_share);
  if (lr < 0) {
    close(img.fd);
    return lr;
  }
  if (fstat(img.fd, &img.st) < 0) {
    int e = errno;
    close(img.fd);
    return sl_error(e, "%s: %s", path, strerror(e));
  }
  img.read_only = !repair;
  struct qcow2_state *s;
  int r = qcow2_open_state(&img, path, img.fd, false, true, 0, &s);
  if (r < 0) {
    close(img.fd);
    return r;
  }
  free(img.backing_file);
  s->writable = repair != 0;
  struct check c = {.s = s, .res = res};
  c.file_len = qcow2_file_size(s);
  c.file_clusters = SL_DIV_ROUND_UP(c.file_len, s->cluster_size);
  c.nref = SL_MAX(c.file_clusters, 1);
  c.ref = calloc(c.nref, sizeof *c.ref);
  if (!c.ref) {
    r = sl_error(ENOMEM, "%s: out of memory", path);
    goto out;
  }
  res->total_clusters = (int64_t)SL_DIV_ROUND_UP(s->size, s->cluster_size);
  r = inc_refs(&c, 0, s->cluster_size);
  if (r == 0)
    r = check_l1(&c, s->l1_offset, s->l1_size, true);
  if (r == 0)
    r = check_snapshots(&c);
  if (r == 0)
    r = check_bitmaps(&c);
  if (r == 0)
    r = check_refcount_structures(&c);
  if (r == 0 && (repair & SL_CHECK_REPAIR_ALL) && !c.rebuild)
    c.rebuild = needs_rebuild(&c);
  if (r == 0)
    r = compare_refcounts(&c, repair, fixed_any);
  if (r == 0 && c.rebuild && (repair & SL_CHECK_REPAIR_ALL)) {
    fprintf(stderr, "Rebuilding refcount structure\n");
    r = rebuild_refcounts(&c);
    if (r == 0)
      res->corruptions_fixed += (int64_t)c.bad_rt_entries;
    *fixed_any = true;
  }
  if (r == 0 && *fixed_any)
    r = qcow2_flush_refcounts(s);
  if (r == 0)
    r = check_copied(&c, repair, fixed_any);
  if (r == 0 && repair && (s->incompat & (QCOW2_INCOMPAT_DIRTY |
                                          QCOW2_INCOMPAT_CORRUPT))) {
    uint64_t left = (uint64_t)(res->corruptions - res->corruptions_fixed);
    if (left == 0 && (repair & SL_CHECK_REPAIR_ALL)) {
      s->incompat &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
      r = qcow2_write_header_fields(s);
      *fixed_any = true;
    }
  }
  if (r == 0 && repair) {
    r = qcow2_flush_refcounts(s);
    if (r == 0)
      r = qcow2_sync(s);
  }
out:
  free(c.ref);
  s->writable = false;
  qcow2_free_state(s);
  close(img.fd);
  return r;
}

int qcow2_check(const char *path, unsigned repair, struct sl_check_result *res)
{
  bool fixed = false;
  int r = check_once(path, repair, res, &fixed);
  if (r < 0 || !(repair & ~SL_CHECK_FORCE_SHARE))
    return r;
  /* Report what remains after the repair, like qemu-img's second pass. */
  struct sl_check_result again;
  bool dummy = false;
  r = check_once(path, 0, &again, &dummy);
  if (r < 0)
    return r;
  again.corruptions_fixed = res->corruptions_fixed;
  again.leaks_fixed = res->leaks_fixed;
  *res = again;
  return 0;
}
