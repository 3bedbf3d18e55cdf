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
 *    writable open, and the bitmaps then count as inconsistent).
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
  if (s->bitmap_dir_offset + s->bitmap_dir_size > fsize) {
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
