/* qcow2 persistent dirty bitmaps (the "bitmaps" header extension).
 *
 * QEMU keeps a dirty bitmap per named bitmap in the image so that an
 * incremental backup copies only what changed since the last one.  A
 * writer that changes guest data without setting the bits would make
 * that backup silently miss the write, so this file does what QEMU does:
 *
 *  - open: the extension (nb_bitmaps, directory size and offset) and the
 *    bitmap directory are parsed and checked with QEMU's constraints.
 *    The extension is trusted only while autoclear bit 0 is set (the
 *    spec: a program that does not know bitmaps clears it on its first
 *    writable open, and the bitmaps then count as inconsistent); a
 *    writable open then removes the extension, as QEMU does.
 *  - writable open: every bitmap not already IN_USE is loaded into memory
 *    and marked IN_USE in the directory, which is written and synced
 *    before the first guest write.  A crash from then on leaves the
 *    bitmaps IN_USE, which QEMU reports as inconsistent: never clean but
 *    wrong.  A bitmap that was IN_USE at open is inconsistent already and
 *    is left exactly as it is.
 *  - every write, discard and write-zeroes sets the bits of the enabled
 *    (AUTO) bitmaps that it touches, at each bitmap's granularity.
 *    Disabled bitmaps never change.
 *  - close: each loaded bitmap is stored into newly allocated clusters
 *    (data clusters through the refcounted allocator, then the bitmap
 *    table), a new directory without IN_USE is written, made durable, and
 *    the header extension is switched to it in one small write; only then
 *    are the old directory, tables and data freed.  A crash at any point
 *    leaves either the IN_USE directory or the new one, plus leaked
 *    clusters at worst.
 *
 * The bitmap data layout is QEMU's: bit i of the bitmap (LSB first in
 * each byte) covers guest bytes [i << granularity_bits, (i + 1) << ...);
 * each data cluster holds cluster_size * 8 bits; a table entry is a data
 * cluster's offset, or 0 for all zeros, or 1 for all ones.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

#define BM_MAX_BITMAPS 65535u
#define BM_MAX_DIR_SIZE (1024u * BM_MAX_BITMAPS)
#define BM_MAX_TABLE_SIZE 0x8000000u
#define BM_MAX_PHYS_SIZE 0x20000000u
#define BM_MIN_GRANULARITY_BITS 9
#define BM_MAX_GRANULARITY_BITS 31
#define BM_MAX_NAME_SIZE 1023
#define BM_DIR_ENTRY_LEN 24
#define BM_TYPE_DIRTY_TRACKING 1

static void bitmap_fail(struct qcow2_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Remember why the extension cannot be used; read-only opens go on. */
static void bitmap_fail(struct qcow2_state *s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  free(s->bitmap_error);
  if (vasprintf(&s->bitmap_error, fmt, ap) < 0)
    s->bitmap_error = NULL;
  va_end(ap);
  qcow2_free_bitmaps(s);
}

void qcow2_free_bitmaps(struct qcow2_state *s)
{
  for (uint32_t i = 0; i < s->nbitmaps; i++) {
    free(s->bitmaps[i].name);
    free(s->bitmaps[i].dirty);
  }
  free(s->bitmaps);
  s->bitmaps = NULL;
  s->nbitmaps = 0;
}

int qcow2_parse_bitmap_ext(struct qcow2_state *s, const uint8_t *d,
                           uint32_t len, size_t pos)
{
  s->bitmap_ext = true;
  s->bitmap_ext_pos = pos;
  if (len != 24) {
    bitmap_fail(s, "%s: the bitmaps extension has %u bytes instead of 24",
                s->img->filename, len);
    s->bitmap_ext_bad = true;
    return 0;
  }
  s->nb_bitmaps = qcow2_be32(d);
  uint32_t reserved = qcow2_be32(d + 4);
  s->bitmap_dir_size = qcow2_be64(d + 8);
  s->bitmap_dir_offset = qcow2_be64(d + 16);
  const char *why = NULL;
  if (s->nb_bitmaps == 0)
    why = "nb_bitmaps is zero";
  else if (s->nb_bitmaps > BM_MAX_BITMAPS)
    why = "it has more than 65535 bitmaps";
  else if (reserved)
    why = "its reserved field is not zero";
  else if (s->bitmap_dir_size == 0 || s->bitmap_dir_size > BM_MAX_DIR_SIZE)
    why = "the bitmap directory size is invalid";
  else if (s->bitmap_dir_offset == 0 ||
           (s->bitmap_dir_offset & (s->cluster_size - 1)))
    why = "the bitmap directory offset is invalid";
  if (why) {
    bitmap_fail(s, "%s: bitmaps extension: %s", s->img->filename, why);
    s->bitmap_ext_bad = true;
  }
  return 0;
}

int qcow2_read_bitmaps(struct qcow2_state *s)
{
  const char *fn = s->img->filename;
  if (!s->bitmap_ext) {
    if (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)
      bitmap_fail(s, "%s: autoclear bit 0 (bitmaps) is set but the image "
                  "has no bitmaps extension", fn);
    return 0;
  }
  if (!(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
    /* Ignored, as QEMU ignores it: a program without bitmap support
     * wrote the image, so every bitmap is inconsistent. */
    bitmap_fail(s, "%s: the bitmaps extension is present but autoclear "
                "bit 0 is clear: the bitmaps were modified by a program "
                "without bitmap support and are inconsistent", fn);
    return 0;
  }
  if (s->bitmap_ext_bad)
    return 0;
  uint64_t fsize = qcow2_file_size(s);
  if (s->bitmap_dir_offset > fsize ||
      s->bitmap_dir_size > fsize - s->bitmap_dir_offset) {
    bitmap_fail(s, "%s: the bitmap directory lies past the end of the "
                "file", fn);
    return 0;
  }
  size_t dsz = (size_t)s->bitmap_dir_size;
  CLEANUP_FREE uint8_t *dir = malloc(dsz);
  if (!dir)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  int r = qcow2_io_read(s, dir, dsz, s->bitmap_dir_offset);
  if (r < 0)
    return r;
  s->bitmaps = calloc(s->nb_bitmaps, sizeof *s->bitmaps);
  if (!s->bitmaps)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  size_t p = 0;
  uint32_t n = 0;
  while (p < dsz) {
    if (p + BM_DIR_ENTRY_LEN > dsz) {
      bitmap_fail(s, "%s: broken bitmap directory", fn);
      return 0;
    }
    if (n >= s->nb_bitmaps) {
      bitmap_fail(s, "%s: more bitmaps found than the bitmaps extension "
                  "says (%u)", fn, s->nb_bitmaps);
      return 0;
    }
    const uint8_t *e = dir + p;
    struct qcow2_bitmap *bm = &s->bitmaps[n];
    bm->table_offset = qcow2_be64(e);
    bm->table_size = qcow2_be32(e + 8);
    bm->flags = qcow2_be32(e + 12);
    bm->type = e[16];
    bm->granularity_bits = e[17];
    uint32_t name_len = (uint32_t)e[18] << 8 | e[19];
    uint32_t extra = qcow2_be32(e + 20);
    uint64_t esz = SL_ROUND_UP((uint64_t)BM_DIR_ENTRY_LEN + extra + name_len, 8);
    if (p + esz > dsz) {
      bitmap_fail(s, "%s: broken bitmap directory", fn);
      return 0;
    }
    bm->dir_pos = p;
    bm->name = strndup((const char *)e + BM_DIR_ENTRY_LEN + extra, name_len);
    if (!bm->name)
      return sl_error(ENOMEM, "%s: out of memory", fn);
    s->nbitmaps = ++n;
    if (extra) {
      bitmap_fail(s, "%s: bitmap '%s' has extra data, which is not "
                  "supported", fn, bm->name);
      return 0;
    }
    uint64_t phys = (uint64_t)bm->table_size * s->cluster_size;
    bool bad = bm->table_size == 0 || bm->table_offset == 0 ||
               (bm->table_offset & (s->cluster_size - 1)) ||
               bm->table_size > BM_MAX_TABLE_SIZE ||
               bm->granularity_bits > BM_MAX_GRANULARITY_BITS ||
               bm->granularity_bits < BM_MIN_GRANULARITY_BITS ||
               (bm->flags & ~(QCOW2_BME_IN_USE | QCOW2_BME_AUTO)) ||
               name_len > BM_MAX_NAME_SIZE ||
               bm->type != BM_TYPE_DIRTY_TRACKING ||
               phys > BM_MAX_PHYS_SIZE ||
               (!(bm->flags & QCOW2_BME_IN_USE) &&
                s->size > ((phys * 8) << bm->granularity_bits));
    if (bad) {
      bitmap_fail(s, "%s: bitmap '%s' does not satisfy the constraints "
                  "(flags 0x%x, type %u, granularity bits %u, table of %u "
                  "entries at 0x%" PRIx64 ")", fn, bm->name, bm->flags,
                  bm->type, bm->granularity_bits, bm->table_size,
                  bm->table_offset);
      return 0;
    }
    p += esz;
  }
  if (n != s->nb_bitmaps) {
    bitmap_fail(s, "%s: fewer bitmaps found than the bitmaps extension "
                "says (%u)", fn, s->nb_bitmaps);
    return 0;
  }
  s->bitmaps_valid = true;
  return 0;
}

/* ---- writable opens: load, mark IN_USE, track, store on close ---- */

static uint64_t bitmap_nbits(const struct qcow2_state *s,
                             const struct qcow2_bitmap *bm)
{
  return SL_DIV_ROUND_UP(s->size, 1ull << bm->granularity_bits);
}

/* Bitmap table clusters needed: one data cluster holds cluster_size * 8
 * bits. */
static uint64_t bitmap_table_need(const struct qcow2_state *s,
                                  const struct qcow2_bitmap *bm)
{
  uint64_t bytes = SL_DIV_ROUND_UP(bitmap_nbits(s, bm), 8);
  return SL_DIV_ROUND_UP(bytes, s->cluster_size);
}

static bool table_entry_ok(const struct qcow2_state *s, uint64_t e)
{
  uint64_t off = e & QCOW2_OFFSET_MASK;
  if (e & 0xff000000000001feull)
    return false;
  return !off || (!(e & 1) && !(off & (s->cluster_size - 1)));
}

/* Read bitmap BM's data into memory (bm->dirty). */
static int load_bitmap(struct qcow2_state *s, struct qcow2_bitmap *bm)
{
  const char *fn = s->img->filename;
  uint64_t cs = s->cluster_size;
  uint64_t nbits = bitmap_nbits(s, bm);
  uint64_t nwords = SL_MAX(SL_DIV_ROUND_UP(nbits, 64), 1);
  if (bitmap_table_need(s, bm) != bm->table_size)
    return sl_error(EINVAL, "%s: bitmap '%s' has a table of %u entries where "
                    "the image size needs %" PRIu64, fn, bm->name,
                    bm->table_size, bitmap_table_need(s, bm));
  uint64_t fsize = qcow2_file_size(s);
  if (bm->table_offset > fsize ||
      (uint64_t)bm->table_size * 8 > fsize - bm->table_offset)
    return sl_error(EINVAL, "%s: the table of bitmap '%s' lies past the end "
                    "of the file", fn, bm->name);
  uint64_t *words = calloc(nwords, 8);
  if (!words)
    return sl_error(ENOMEM, "%s: out of memory for bitmap '%s'", fn, bm->name);
  CLEANUP_FREE uint64_t *t = NULL;
  CLEANUP_FREE uint8_t *buf = malloc(cs);
  int r = buf ? qcow2_read_table(s, bm->table_offset, bm->table_size, &t)
              : sl_error(ENOMEM, "%s: out of memory", fn);
  uint64_t total = nwords * 8;
  for (uint32_t i = 0; r == 0 && i < bm->table_size; i++) {
    uint64_t at = (uint64_t)i * cs;
    if (at >= total)
      break;
    uint64_t n = SL_MIN(cs, total - at);
    uint64_t off = t[i] & QCOW2_OFFSET_MASK;
    if (!table_entry_ok(s, t[i])) {
      r = sl_error(EINVAL, "%s: bitmap '%s' has an invalid table entry "
                   "0x%" PRIx64, fn, bm->name, t[i]);
    } else if (off) {
      r = qcow2_io_read(s, buf, cs, off);
      if (r == 0)
        memcpy((uint8_t *)words + at, buf, n);
    } else if (t[i] & 1) {
      memset((uint8_t *)words + at, 0xff, n);
    }
  }
  if (r < 0) {
    free(words);
    return r;
  }
  /* On disk the bits are little-endian; bits past the end stay clear. */
  for (uint64_t i = 0; i < nwords; i++)
    words[i] = le64toh(words[i]);
  if (nbits % 64)
    words[nwords - 1] &= (1ull << (nbits % 64)) - 1;
  bm->dirty = (_Atomic uint64_t *)words;
  bm->nbits = nbits;
  return 0;
}

/* The directory as it stands in memory, big-endian, DSZ bytes. */
static int build_directory(struct qcow2_state *s, uint8_t **out, size_t *dsz)
{
  size_t n = 0;
  for (uint32_t i = 0; i < s->nbitmaps; i++)
    n += SL_ROUND_UP(BM_DIR_ENTRY_LEN + strlen(s->bitmaps[i].name), 8);
  uint8_t *d = calloc(1, SL_MAX(n, 1));
  if (!d)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  size_t p = 0;
  for (uint32_t i = 0; i < s->nbitmaps; i++) {
    const struct qcow2_bitmap *bm = &s->bitmaps[i];
    size_t len = strlen(bm->name);
    qcow2_put_be64(d + p, bm->table_offset);
    qcow2_put_be32(d + p + 8, bm->table_size);
    qcow2_put_be32(d + p + 12, bm->flags);
    d[p + 16] = bm->type;
    d[p + 17] = bm->granularity_bits;
    d[p + 18] = (uint8_t)(len >> 8);
    d[p + 19] = (uint8_t)len;
    memcpy(d + p + BM_DIR_ENTRY_LEN, bm->name, len);
    p += SL_ROUND_UP(BM_DIR_ENTRY_LEN + len, 8);
  }
  *out = d;
  *dsz = n;
  return 0;
}

static int write_ext(struct qcow2_state *s)
{
  uint8_t e[24] = {0};
  qcow2_put_be32(e, s->nb_bitmaps);
  qcow2_put_be64(e + 8, s->bitmap_dir_size);
  qcow2_put_be64(e + 16, s->bitmap_dir_offset);
  return qcow2_io_write(s, e, sizeof e, s->bitmap_ext_pos);
}

static int header_sync(struct qcow2_state *s)
{
  int r = qcow2_write_header_fields(s);
  return r == 0 ? qcow2_sync(s) : r;
}

/* Remove the bitmaps extension from the header, as QEMU does on a
 * writable open when autoclear bit 0 is clear: the extensions after it
 * move up over it, in one write of the extension area.  Its clusters are
 * left to `check -r leaks`. */
static int drop_bitmap_ext(struct qcow2_state *s)
{
  const char *fn = s->img->filename;
  uint64_t fsize = qcow2_file_size(s);
  size_t clen = (size_t)SL_MIN(s->cluster_size, fsize);
  size_t limit = s->backing_file_offset
                     ? (size_t)SL_MIN(s->backing_file_offset, clen) : clen;
  size_t start = s->bitmap_ext_pos - 8;
  CLEANUP_FREE uint8_t *c = malloc(clen);
  if (!c)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  int r = qcow2_io_read(s, c, clen, 0);
  if (r < 0)
    return r;
  if (start + 8 > limit || qcow2_be32(c + start) != QCOW2_EXT_BITMAPS)
    return sl_error(EIO, "%s: the bitmaps extension moved under us", fn);
  size_t total = 8 + SL_ROUND_UP((size_t)qcow2_be32(c + start + 4), 8);
  size_t end = s->header_length;
  while (end + 8 <= limit) {
    uint32_t type = qcow2_be32(c + end), len = qcow2_be32(c + end + 4);
    if (type == QCOW2_EXT_END) {
      end += 8;
      break;
    }
    end += 8 + SL_ROUND_UP((size_t)len, 8);
  }
  end = SL_MIN(end, limit);
  if (start + total > end)
    return sl_error(EIO, "%s: the bitmaps extension runs past the header "
                    "extensions", fn);
  memmove(c + start, c + start + total, end - start - total);
  memset(c + end - total, 0, total);
  r = qcow2_io_write(s, c + start, end - start, start);
  if (r == 0)
    r = qcow2_sync(s);
  if (r == 0)
    s->bitmap_ext = false;
  return r;
}

int qcow2_bitmaps_open_rw(struct qcow2_state *s)
{
  const char *fn = s->img->filename;
  int r;
  if (s->bitmap_ext && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) &&
      !s->bitmaps_valid)
    return sl_error(EINVAL, "%s; the image can only be opened read-only "
                    "(QEMU refuses it too)", s->bitmap_error ? s->bitmap_error
                                                             : fn);
  /* Autoclear bits of features sluice does not maintain are cleared on
   * the first writable open (the qcow2 spec); bit 0 is the bitmaps. */
  uint64_t keep = s->autoclear & QCOW2_AUTOCLEAR_BITMAPS;
  if (keep != s->autoclear) {
    s->autoclear = keep;
    r = header_sync(s);
    if (r < 0)
      return r;
  }
  if (s->bitmap_ext && !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
    r = drop_bitmap_ext(s);
    if (r < 0)
      return r;
  }
  if (!s->bitmaps_valid)
    return 0;
  bool update = false;
  for (uint32_t i = 0; i < s->nbitmaps; i++) {
    struct qcow2_bitmap *bm = &s->bitmaps[i];
    if (bm->flags & QCOW2_BME_IN_USE)
      continue; /* inconsistent already: left as it is */
    if (bm->flags & QCOW2_BME_AUTO) {
      r = load_bitmap(s, bm);
      if (r < 0)
        return r;
      bm->track = true;
    }
    bm->flags |= QCOW2_BME_IN_USE;
    bm->opened_clean = true;
    update = true;
  }
  if (!update)
    return 0;
  /* IN_USE reaches the disk before any guest write.  The directory is
   * rewritten in place, so the extension is untrusted meanwhile (autoclear
   * clear): a torn directory write then counts as inconsistent bitmaps. */
  CLEANUP_FREE uint8_t *dir = NULL;
  size_t dsz;
  r = build_directory(s, &dir, &dsz);
  if (r < 0)
    return r;
  if (dsz != s->bitmap_dir_size)
    return sl_error(EINVAL, "%s: the bitmap directory changed size", fn);
  s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
  r = header_sync(s);
  if (r == 0)
    r = qcow2_write_checked(s, QCOW2_OL_BITMAP_DIR, dir, dsz, s->bitmap_dir_offset);
  if (r == 0)
    r = qcow2_sync(s);
  if (r < 0)
    return r;
  s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
  return header_sync(s);
}

void qcow2_bitmaps_mark(struct qcow2_state *s, uint64_t off, uint64_t len)
{
  if (len == 0)
    return;
  for (uint32_t i = 0; i < s->nbitmaps; i++) {
    struct qcow2_bitmap *bm = &s->bitmaps[i];
    if (!bm->track || !bm->dirty)
      continue;
    uint64_t first = off >> bm->granularity_bits;
    uint64_t last = (off + len - 1) >> bm->granularity_bits;
    if (first >= bm->nbits)
      continue;
    last = SL_MIN(last, bm->nbits - 1);
    for (uint64_t w = first / 64; w <= last / 64; w++) {
      uint64_t lo = w == first / 64 ? first % 64 : 0;
      uint64_t hi = w == last / 64 ? last % 64 : 63;
      uint64_t m = (hi == 63 ? ~0ull : (2ull << hi) - 1) & ~((1ull << lo) - 1);
      if ((atomic_load_explicit(&bm->dirty[w], memory_order_relaxed) & m) != m)
        atomic_fetch_or_explicit(&bm->dirty[w], m, memory_order_relaxed);
    }
  }
}

/* N contiguous clusters, allocated and counted. */
static int alloc_contiguous(struct qcow2_state *s, uint64_t n, uint64_t *off)
{
  for (int tries = 0; tries < 64; tries++) {
    uint64_t got;
    int r = qcow2_alloc_clusters(s, n, off, &got);
    if (r < 0)
      return r;
    if (got == n)
      return 0;
    r = qcow2_queue_free(s, *off, got * s->cluster_size);
    if (r < 0)
      return r;
  }
  return sl_error(ENOSPC, "%s: cannot allocate %" PRIu64 " contiguous "
                  "clusters for a bitmap", s->img->filename, n);
}

/* Write BM's bits into new data clusters and a new table. */
static int store_bitmap(struct qcow2_state *s, struct qcow2_bitmap *bm,
                        uint64_t *table_off, uint32_t *table_size)
{
  uint64_t cs = s->cluster_size;
  uint64_t tn = bitmap_table_need(s, bm);
  uint64_t nbytes = SL_DIV_ROUND_UP(bm->nbits, 8);
  CLEANUP_FREE uint64_t *t = calloc(tn, 8);
  CLEANUP_FREE uint8_t *buf = malloc(cs);
  if (!t || !buf)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  int r = 0;
  for (uint64_t i = 0; r == 0 && i < tn; i++) {
    uint64_t at = i * cs, n = SL_MIN(cs, nbytes - at);
    memset(buf, 0, cs);
    bool any = false;
    for (uint64_t b = 0; b < n; b += 8) {
      uint64_t w = atomic_load_explicit(&bm->dirty[(at + b) / 8],
                                        memory_order_relaxed);
      if (!w)
        continue;
      any = true;
      uint64_t le = htole64(w);
      memcpy(buf + b, &le, SL_MIN(8, n - b));
    }
    if (!any)
      continue; /* table entry 0: all zeros */
    uint64_t off;
    r = alloc_contiguous(s, 1, &off);
    if (r == 0)
      r = qcow2_write_checked(s, 0, buf, cs, off);
    t[i] = off;
  }
  uint64_t toff = 0, tbytes = tn * 8;
  if (r == 0)
    r = alloc_contiguous(s, SL_DIV_ROUND_UP(tbytes, cs), &toff);
  if (r == 0) {
    CLEANUP_FREE uint8_t *tb = calloc(1, SL_ROUND_UP(tbytes, cs));
    if (!tb)
      return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
    for (uint64_t i = 0; i < tn; i++)
      qcow2_put_be64(tb + i * 8, t[i]);
    r = qcow2_write_checked(s, 0, tb, SL_ROUND_UP(tbytes, cs), toff);
  }
  if (r < 0) {
    /* The new clusters leak (counted, never referenced): check -r leaks. */
    return r;
  }
  *table_off = toff;
  *table_size = (uint32_t)tn;
  return 0;
}

/* Queue the frees of a stored bitmap's old table and data clusters. */
static int free_bitmap_clusters(struct qcow2_state *s, uint64_t toff,
                                uint32_t tsize)
{
  CLEANUP_FREE uint64_t *t = NULL;
  int r = qcow2_read_table(s, toff, tsize, &t);
  for (uint32_t i = 0; r == 0 && i < tsize; i++)
    if (table_entry_ok(s, t[i]) && (t[i] & QCOW2_OFFSET_MASK))
      r = qcow2_queue_free(s, t[i] & QCOW2_OFFSET_MASK, s->cluster_size);
  if (r == 0)
    r = qcow2_queue_free(s, toff, (uint64_t)tsize * 8);
  return r;
}

int qcow2_bitmaps_store(struct qcow2_state *s)
{
  if (!s->writable || !s->bitmaps_valid)
    return 0;
  bool any = false;
  for (uint32_t i = 0; i < s->nbitmaps; i++)
    any |= s->bitmaps[i].opened_clean;
  if (!any)
    return 0;
  /* Everything the bitmaps describe is durable first. */
  int r = qcow2_flush_locked(s);
  if (r < 0)
    return r;
  struct old { uint64_t off; uint32_t size; } *old =
      calloc(s->nbitmaps, sizeof *old);
  if (!old)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  for (uint32_t i = 0; r == 0 && i < s->nbitmaps; i++) {
    struct qcow2_bitmap *bm = &s->bitmaps[i];
    if (!bm->opened_clean || !bm->track)
      continue;
    uint64_t toff = 0;
    uint32_t tsize = 0;
    r = store_bitmap(s, bm, &toff, &tsize);
    if (r == 0) {
      old[i] = (struct old){bm->table_offset, bm->table_size};
      bm->table_offset = toff;
      bm->table_size = tsize;
    }
  }
  CLEANUP_FREE uint8_t *dir = NULL;
  size_t dsz = 0;
  uint64_t doff = 0;
  if (r == 0) {
    for (uint32_t i = 0; i < s->nbitmaps; i++)
      if (s->bitmaps[i].opened_clean)
        s->bitmaps[i].flags &= ~QCOW2_BME_IN_USE;
    r = build_directory(s, &dir, &dsz);
  }
  if (r == 0)
    r = alloc_contiguous(s, SL_DIV_ROUND_UP(dsz, s->cluster_size), &doff);
  if (r == 0)
    r = qcow2_write_checked(s, 0, dir, dsz, doff);
  /* New data, tables, directory and their refcounts durable, then the
   * one small write that switches the extension to them. */
  if (r == 0)
    r = qcow2_flush_locked(s);
  uint64_t old_doff = s->bitmap_dir_offset, old_dsz = s->bitmap_dir_size;
  if (r == 0) {
    s->bitmap_dir_offset = doff;
    s->bitmap_dir_size = dsz;
    r = write_ext(s);
    if (r == 0)
      r = qcow2_sync(s);
  }
  if (r == 0) {
    for (uint32_t i = 0; r == 0 && i < s->nbitmaps; i++)
      if (old[i].off)
        r = free_bitmap_clusters(s, old[i].off, old[i].size);
    if (r == 0)
      r = qcow2_queue_free(s, old_doff, old_dsz);
    if (r == 0)
      r = qcow2_flush_locked(s);
  }
  free(old);
  for (uint32_t i = 0; i < s->nbitmaps; i++)
    s->bitmaps[i].opened_clean = false;
  return r;
}
