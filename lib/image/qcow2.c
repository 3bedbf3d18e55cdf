/* qcow2: header parsing, creation, the driver table and file I/O helpers.
 *
 * The format is qemu's docs/interop/qcow2.txt.  This file owns the header:
 * it validates everything open() reads before any other code trusts it
 * (bad input gets an error naming the file and the field, never a crash),
 * preserves header extensions it does not understand when the header is
 * rewritten, and refuses unknown incompatible features.  The mapping code
 * is in qcow2-cluster.c, allocation in qcow2-refcount.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/direct-io.h"
#include "image/qcow2.h"

#define DIRECT_ALIGN SL_DIRECT_ALIGN

/* ---- file I/O: O_DIRECT's alignment is direct-io.c's business ---- */

int qcow2_io_read(struct qcow2_state *s, void *buf, size_t len, uint64_t off)
{
  int r = sl_image_io_read(s->img, buf, len, off);
  if (r < 0)
    return sl_error(-r, "%s: read of %zu bytes at 0x%" PRIx64 ": %s",
                    s->img->filename, len, off, strerror(-r));
  return 0;
}

/* A qcow2 file only grows by whole clusters, so it has no short tail. */
int qcow2_io_write(struct qcow2_state *s, const void *buf, size_t len,
                   uint64_t off)
{
  int r = sl_image_io_write(s->img, &s->rmw_lock, UINT64_MAX, buf, len, off);
  if (r < 0)
    return sl_error(-r, "%s: write of %zu bytes at 0x%" PRIx64 ": %s",
                    s->img->filename, len, off, strerror(-r));
  return 0;
}

int qcow2_sync(struct qcow2_state *s)
{
  /* cache=unsafe: the metadata still reaches the file (the OS), only the
   * trip to stable storage is skipped, as QEMU's BDRV_O_NO_FLUSH does. */
  if (s->img->no_flush)
    return 0;
  if (fdatasync(s->img->fd) < 0)
    return sl_error(errno, "%s: fdatasync: %s", s->img->filename,
                    strerror(errno));
  return 0;
}

uint64_t qcow2_file_size(struct qcow2_state *s)
{
  struct stat st;
  if (fstat(s->img->fd, &st) < 0)
    return 0;
  return (uint64_t)st.st_size;
}

/* ---- header ---- */

static bool qcow2_probe(const uint8_t *buf, size_t len)
{
  /* Any version: open() then names the unsupported one. */
  return len >= 4 && qcow2_be32(buf) == QCOW2_MAGIC;
}

static const char *compression_name(uint8_t t)
{
  return t == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";
}

/* The fixed header fields, the extensions and the backing name, all in
 * cluster 0.  Written in one pwrite so a crash leaves old or new. */
static int build_header(struct qcow2_state *s, const char *backing,
                        enum sl_format backing_fmt, uint8_t *h, size_t hlen)
{
  memset(h, 0, hlen);
  qcow2_put_be32(h, QCOW2_MAGIC);
  qcow2_put_be32(h + 4, s->version);
  qcow2_put_be32(h + 20, s->cluster_bits);
  qcow2_put_be64(h + 24, s->size);
  qcow2_put_be32(h + 36, s->l1_size);
  qcow2_put_be64(h + 40, s->l1_offset);
  qcow2_put_be64(h + 48, s->rt_offset);
  qcow2_put_be32(h + 56, s->rt_clusters);
  qcow2_put_be32(h + 60, s->nb_snapshots);
  qcow2_put_be64(h + 64, s->snapshots_offset);
  size_t p = 72; /* version 2 ends its header here */
  if (s->version >= 3) {
    qcow2_put_be64(h + 72, s->incompat);
    qcow2_put_be64(h + 80, s->compat);
    qcow2_put_be64(h + 88, s->autoclear);
    qcow2_put_be32(h + 96, s->refcount_order);
    qcow2_put_be32(h + 100, QCOW2_V3_HEADER_LEN);
    h[104] = s->compression_type;
    p = QCOW2_V3_HEADER_LEN;
  }
  if (backing && backing_fmt != SL_FORMAT_AUTO) {
    const char *fmt = sl_format_name(backing_fmt);
    size_t n = strlen(fmt);
    qcow2_put_be32(h + p, QCOW2_EXT_BACKING_FMT);
    qcow2_put_be32(h + p + 4, (uint32_t)n);
    memcpy(h + p + 8, fmt, n);
    p += 8 + SL_ROUND_UP(n, 8);
  }
  if (s->unknown_exts_len) {
    if (p + s->unknown_exts_len + 8 > hlen)
      return -ENOSPC;
    memcpy(h + p, s->unknown_exts, s->unknown_exts_len);
    p += s->unknown_exts_len;
  }
  p += 8; /* end-of-extensions marker (zeros) */
  if (backing) {
    size_t n = strlen(backing);
    if (p + n > hlen)
      return -ENOSPC;
    memcpy(h + p, backing, n);
    qcow2_put_be64(h + 8, p);
    qcow2_put_be32(h + 16, (uint32_t)n);
  }
  return 0;
}

/* Rewrite the header fields that change at run time (L1, refcount table,
 * feature bits), leaving extensions and backing name as they are. */
int qcow2_write_header_fields(struct qcow2_state *s)
{
  uint8_t h[72 + 32];
  int r = qcow2_io_read(s, h, sizeof h, 0);
  if (r < 0)
    return r;
  qcow2_put_be32(h + 36, s->l1_size);
  qcow2_put_be64(h + 40, s->l1_offset);
  qcow2_put_be64(h + 48, s->rt_offset);
  qcow2_put_be32(h + 56, s->rt_clusters);
  if (s->version >= 3) {
    qcow2_put_be64(h + 72, s->incompat);
    qcow2_put_be64(h + 80, s->compat);
    qcow2_put_be64(h + 88, s->autoclear);
  }
  return qcow2_io_write(s, h, s->version >= 3 ? 96 : 72, 0);
}

int qcow2_mark_corrupt(struct qcow2_state *s, const char *why)
{
  (void)why;
  if (!s->writable)
    return 0;
  /* No more writes from this open, whatever the header can record. */
  s->writable = false;
  if (s->version < 3)
    return 0;
  s->incompat |= QCOW2_INCOMPAT_CORRUPT;
  int r = qcow2_write_header_fields(s);
  if (r == 0)
    r = qcow2_sync(s);
  return r;
}

static int parse_extensions(struct qcow2_state *s, const uint8_t *c,
                            size_t clen, size_t start, uint64_t end,
                            enum sl_format *backing_fmt)
{
  const char *fn = s->img->filename;
  size_t p = start;
  while (p + 8 <= end) {
    uint32_t type = qcow2_be32(c + p), len = qcow2_be32(c + p + 4);
    /* The length is checked first, even the end marker's, as QEMU does. */
    if ((uint64_t)p + 8 + len > end)
      return sl_error(EINVAL, "%s: header extension 0x%08x of %u bytes "
                      "runs past the end of the header cluster", fn, type, len);
    if (type == QCOW2_EXT_END)
      return 0;
    const uint8_t *d = c + p + 8;
    size_t total = 8 + SL_ROUND_UP((size_t)len, 8);
    if (type == QCOW2_EXT_BACKING_FMT) {
      char name[16] = {0};
      memcpy(name, d, SL_MIN(len, sizeof name - 1));
      if (sl_format_parse(name, backing_fmt) < 0)
        return sl_error(ENOTSUP, "%s: backing format '%s' is not supported",
                        fn, name);
    } else if (type == QCOW2_EXT_DATA_FILE) {
      return sl_error(ENOTSUP, "%s: external data files are not supported", fn);
    } else if (type != QCOW2_EXT_FEATURE_NAMES) {
      if (type == QCOW2_EXT_BITMAPS && !s->bitmap_ext) {
        /* Parsed, and kept too: its fields are rewritten in place. */
        int r = qcow2_parse_bitmap_ext(s, d, len, p + 8);
        if (r < 0)
          return r;
      }
      /* Keep it verbatim for the next header rewrite. */
      size_t keep = SL_MIN(total, clen - p);
      uint8_t *n = realloc(s->unknown_exts, s->unknown_exts_len + keep);
      if (!n)
        return sl_error(ENOMEM, "%s: out of memory", fn);
      memcpy(n + s->unknown_exts_len, c + p, keep);
      s->unknown_exts = n;
      s->unknown_exts_len += keep;
    }
    p += total;
  }
  return 0;
}

static int table_in_file(const char *fn, const char *what, uint64_t off,
                         uint64_t bytes, uint64_t cs, uint64_t fsize,
                         bool for_check)
{
  if (for_check) /* check reports it; only alignment stops QEMU's open */
    fsize = UINT64_MAX;
  uint64_t end;
  if (off % cs)
    return sl_error(EINVAL, "%s: %s offset 0x%" PRIx64 " is not aligned to "
                    "a cluster", fn, what, off);
  if (off == 0 && bytes)
    return sl_error(EINVAL, "%s: %s at offset 0 overlaps the header", fn, what);
  if (!sl_add_ok(off, bytes, &end) || end > fsize)
    return sl_error(EINVAL, "%s: %s at 0x%" PRIx64 " (%" PRIu64 " bytes) lies "
                    "past the end of the file (%" PRIu64 " bytes)", fn, what,
                    off, bytes, fsize);
  return 0;
}

int qcow2_read_table(struct qcow2_state *s, uint64_t off, uint64_t n,
                     uint64_t **out)
{
  *out = NULL;
  if (n == 0)
    return 0;
  uint64_t *t;
  if (posix_memalign((void **)&t, DIRECT_ALIGN, SL_ROUND_UP(n * 8, DIRECT_ALIGN)))
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  uint64_t bytes = n * 8, fsize = qcow2_file_size(s);
  if (s->for_check) { /* what lies past the end of the file reads as 0 */
    uint64_t have = off < fsize ? SL_MIN(bytes, fsize - off) : 0;
    memset((uint8_t *)t + have, 0, bytes - have);
    bytes = have;
  }
  int r = bytes ? qcow2_io_read(s, t, bytes, off) : 0;
  if (r < 0) {
    free(t);
    return r;
  }
  for (uint64_t i = 0; i < n; i++)
    t[i] = be64toh(t[i]);
  *out = t;
  return 0;
}

void qcow2_free_state(struct qcow2_state *s)
{
  if (!s)
    return;
  qcow2_cache_destroy(&s->l2_cache);
  qcow2_cache_destroy(&s->rb_cache);
  free(s->l1);
  free(s->rt);
  free(s->unknown_exts);
  qcow2_free_snapshots(s);
  qcow2_free_bitmaps(s);
  free(s->snapshot_error);
  free(s->bitmap_error);
  free(s->info_snapshots);
  free(s->info_bitmaps);
  free(s->pending_free);
  free(s->inflight);
  pthread_cond_destroy(&s->alloc_done);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->rmw_lock);
  free(s);
}

static int parse_header(struct qcow2_state *s, enum sl_format *backing_fmt,
                        char **backing)
{
  struct sl_image *img = s->img;
  const char *fn = img->filename;
  uint64_t fsize = qcow2_file_size(s);
  if (fsize < 72)
    return sl_error(EINVAL, "%s: file is too short for a qcow2 header "
                    "(%" PRIu64 " bytes)", fn, fsize);
  uint8_t h[QCOW2_V3_HEADER_LEN] = {0};
  int r = qcow2_io_read(s, h, SL_MIN(sizeof h, fsize), 0);
  if (r < 0)
    return r;
  if (qcow2_be32(h) != QCOW2_MAGIC)
    return sl_error(EINVAL, "%s: not a qcow2 image (bad magic)", fn);
  s->version = qcow2_be32(h + 4);
  if (s->version != 2 && s->version != 3)
    return sl_error(ENOTSUP, "%s: qcow2 version %u is not supported", fn,
                    s->version);
  s->backing_file_offset = qcow2_be64(h + 8);
  s->backing_file_size = qcow2_be32(h + 16);
  s->cluster_bits = qcow2_be32(h + 20);
  s->size = qcow2_be64(h + 24);
  uint32_t crypt = qcow2_be32(h + 32);
  s->l1_size = qcow2_be32(h + 36);
  s->l1_offset = qcow2_be64(h + 40);
  s->rt_offset = qcow2_be64(h + 48);
  s->rt_clusters = qcow2_be32(h + 56);
  s->nb_snapshots = qcow2_be32(h + 60);
  s->snapshots_offset = qcow2_be64(h + 64);
  s->refcount_order = 4;
  s->header_length = 72;
  if (s->version >= 3) {
    if (fsize < 104)
      return sl_error(EINVAL, "%s: file is too short for a version 3 header", fn);
    s->incompat = qcow2_be64(h + 72);
    s->compat = qcow2_be64(h + 80);
    s->autoclear = qcow2_be64(h + 88);
    s->refcount_order = qcow2_be32(h + 96);
    s->header_length = qcow2_be32(h + 100);
    if (s->header_length < 104)
      return sl_error(EINVAL, "%s: header length %u is too small", fn,
                      s->header_length);
    if (s->header_length > 104)
      s->compression_type = h[104];
  }
  if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
      s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
    return sl_error(EINVAL, "%s: cluster_bits %u is out of range (9..21)", fn,
                    s->cluster_bits);
  s->cluster_size = 1ull << s->cluster_bits;
  if (s->header_length > s->cluster_size)
    return sl_error(EINVAL, "%s: header length %u is larger than a cluster",
                    fn, s->header_length);
  if (crypt != 0)
    return sl_error(ENOTSUP, "%s: encrypted qcow2 images are not supported", fn);
  uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
  if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
    return sl_error(ENOTSUP, "%s: external data files (incompatible feature "
                    "bit 2) are not supported", fn);
  if (unknown)
    return sl_error(ENOTSUP, "%s: unsupported incompatible feature bits "
                    "0x%" PRIx64, fn, unknown);
  if (s->refcount_order > 6)
    return sl_error(EINVAL, "%s: refcount_order %u is out of range (0..6)", fn,
                    s->refcount_order);
  if (s->compression_type > QCOW2_COMPRESSION_ZSTD)
    return sl_error(ENOTSUP, "%s: unknown compression type %u", fn,
                    s->compression_type);
  if (s->compression_type != QCOW2_COMPRESSION_ZLIB &&
      !(s->incompat & QCOW2_INCOMPAT_COMPRESSION))
    return sl_error(EINVAL, "%s: compression type %u without the compression "
                    "incompatible feature bit", fn, s->compression_type);
  s->refcount_bits = 1u << s->refcount_order;
  s->extended_l2 = (s->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
  if (s->extended_l2 && s->cluster_bits < 14)
    return sl_error(EINVAL, "%s: extended L2 entries need clusters of at "
                    "least 16 KiB", fn);
  s->l2_entry_size = s->extended_l2 ? 16 : 8;
  s->l2_entries = s->cluster_size / s->l2_entry_size;
  s->l2_bits = (uint32_t)__builtin_ctzll(s->l2_entries);
  s->subclusters = s->extended_l2 ? 32 : 1;
  s->subcluster_size = s->cluster_size / s->subclusters;
  s->rb_entries = s->cluster_size * 8 / s->refcount_bits;
  s->rb_bits = (uint32_t)__builtin_ctzll(s->rb_entries);

  if (s->size > (1ull << 62))
    return sl_error(EINVAL, "%s: virtual size %" PRIu64 " is absurd", fn,
                    s->size);
  uint64_t per_l1 = s->cluster_size * s->l2_entries;
  uint64_t need_l1 = SL_DIV_ROUND_UP(s->size, per_l1);
  if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
    return sl_error(EFBIG, "%s: L1 table of %u entries is too large", fn,
                    s->l1_size);
  if (s->l1_size < need_l1)
    return sl_error(EINVAL, "%s: L1 table (%u entries) is too small for the "
                    "virtual size %" PRIu64, fn, s->l1_size, s->size);
  r = table_in_file(fn, "L1 table", s->l1_offset, (uint64_t)s->l1_size * 8,
                    s->cluster_size, fsize, s->for_check);
  if (r < 0)
    return r;
  if (s->rt_clusters == 0)
    return sl_error(EINVAL, "%s: the refcount table is empty", fn);
  if ((uint64_t)s->rt_clusters * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES)
    return sl_error(EFBIG, "%s: refcount table of %u clusters is too large",
                    fn, s->rt_clusters);
  r = table_in_file(fn, "refcount table", s->rt_offset,
                    (uint64_t)s->rt_clusters * s->cluster_size,
                    s->cluster_size, fsize, s->for_check);
  if (r < 0)
    return r;
  uint64_t l1_end = s->l1_offset + (uint64_t)s->l1_size * 8;
  uint64_t rt_end = s->rt_offset + (uint64_t)s->rt_clusters * s->cluster_size;
  if (!s->for_check && s->l1_size && s->l1_offset < rt_end &&
      s->rt_offset < l1_end)
    return sl_error(EINVAL, "%s: L1 table at 0x%" PRIx64 " overlaps the "
                    "refcount table at 0x%" PRIx64, fn, s->l1_offset,
                    s->rt_offset);

  /* Extensions and the backing name live in cluster 0. */
  size_t clen = (size_t)SL_MIN(s->cluster_size, fsize);
  CLEANUP_FREE uint8_t *c = malloc(clen);
  if (!c)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  r = qcow2_io_read(s, c, clen, 0);
  if (r < 0)
    return r;
  uint64_t ext_end = s->backing_file_offset ? SL_MIN(s->backing_file_offset, clen)
                                            : clen;
  r = parse_extensions(s, c, clen, s->header_length, ext_end, backing_fmt);
  if (r < 0)
    return r;
  if (s->backing_file_offset) {
    uint64_t end;
    if (s->backing_file_size > 1023 ||
        !sl_add_ok(s->backing_file_offset, s->backing_file_size, &end) ||
        end > clen)
      return sl_error(EINVAL, "%s: backing file name (%u bytes at 0x%" PRIx64
                      ") does not fit in the header cluster", fn,
                      s->backing_file_size, s->backing_file_offset);
    if (s->backing_file_size) {
      *backing = strndup((char *)c + s->backing_file_offset,
                         s->backing_file_size);
      if (!*backing)
        return sl_error(ENOMEM, "%s: out of memory", fn);
    }
  }
  s->rt_size = (uint64_t)s->rt_clusters * s->cluster_size / 8;
  r = qcow2_read_snapshots(s);
  if (r == 0)
    r = qcow2_read_bitmaps(s);
  if (r == 0)
    r = qcow2_read_table(s, s->l1_offset, s->l1_size, &s->l1);
  if (r == 0)
    r = qcow2_read_table(s, s->rt_offset, s->rt_size, &s->rt);
  if (r == 0)
    qcow2_update_rt_used(s);
  return r;
}

int qcow2_open_state(struct sl_image *img, const char *path, int fd,
                     bool writable, bool for_check, size_t cache_bytes,
                     struct qcow2_state **out)
{
  (void)path;
  (void)fd;
  struct qcow2_state *s = calloc(1, sizeof *s);
  if (!s)
    return sl_error(ENOMEM, "%s: out of memory", img->filename);
  s->for_check = for_check;
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->rmw_lock, NULL);
  pthread_cond_init(&s->alloc_done, NULL);
  s->img = img;
  enum sl_format bfmt = SL_FORMAT_AUTO;
  char *backing = NULL;
  int r = parse_header(s, &bfmt, &backing);
  if (r < 0)
    goto fail;
  if (writable) {
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
      r = sl_error(EROFS, "%s: image is marked corrupt; it can only be opened "
                   "read-only (repair it with 'sluice check -r all')",
                   img->filename);
      goto fail;
    }
    if (s->snapshot_error) {
      r = sl_error(EINVAL, "%s (the image can only be opened read-only)",
                   s->snapshot_error);
      goto fail;
    }
    if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
      r = sl_error(EUCLEAN, "%s: image is dirty (lazy refcounts were not "
                   "written back); repair it with 'sluice check -r all' "
                   "before writing", img->filename);
      goto fail;
    }
  }
  s->writable = writable;
  if (writable) {
    r = qcow2_bitmaps_open_rw(s);
    if (r < 0)
      goto fail;
  }
  /* Budget: by default 1 MiB or enough L2 tables to map 8 GiB. */
  size_t l2_bytes, rb_bytes;
  if (cache_bytes) {
    l2_bytes = cache_bytes / 4 * 3;
    rb_bytes = cache_bytes / 4;
  } else {
    uint64_t cover = SL_MIN(s->size, 8ull << 30);
    uint64_t need = SL_DIV_ROUND_UP(cover, s->cluster_size) * s->l2_entry_size;
    l2_bytes = (size_t)SL_MAX(need, 1u << 20);
    rb_bytes = 256u << 10;
  }
  size_t l2_n = SL_MAX(l2_bytes / s->cluster_size, 4);
  size_t rb_n = SL_MAX(rb_bytes / s->cluster_size, 4);
  r = qcow2_cache_init(&s->l2_cache, "L2 table", l2_n, s->cluster_size);
  if (r == 0)
    r = qcow2_cache_init(&s->rb_cache, "refcount block", rb_n, s->cluster_size);
  if (r < 0) {
    r = sl_error(-r, "%s: out of memory for the metadata cache", img->filename);
    goto fail;
  }
  img->size = s->size;
  img->backing_file = backing;
  img->backing_fmt = backing ? bfmt : SL_FORMAT_AUTO;
  *out = s;
  return 0;
fail:
  free(backing);
  qcow2_free_state(s);
  return r;
}

static int qcow2_open(struct sl_image *img, const struct sl_image_open_opts *opts)
{
  struct qcow2_state *s;
  int r = qcow2_open_state(img, img->filename, img->fd, !img->read_only,
                           false, opts->metadata_cache_bytes, &s);
  if (r < 0)
    return r;
  img->priv = s;
  return 0;
}

/* Write every dirty table in dependency order (refcounts, L2, L1), apply
 * queued frees; the caller then fdatasyncs. */
static int write_metadata(struct qcow2_state *s)
{
  if (!s->writable)
    return 0;
  int r = qcow2_write_tables(s);
  if (r == 0)
    r = qcow2_apply_pending_frees(s);
  if (r == 0)
    r = qcow2_flush_refcounts(s);
  return r;
}

int qcow2_flush_locked(struct qcow2_state *s)
{
  int r = write_metadata(s);
  return r == 0 && s->writable ? qcow2_sync(s) : r;
}

static int qcow2_close(struct sl_image *img)
{
  struct qcow2_state *s = img->priv;
  int r = 0;
  if (s) {
    pthread_mutex_lock(&s->lock);
    r = qcow2_flush_locked(s);
    if (r == 0)
      r = qcow2_bitmaps_store(s);
    pthread_mutex_unlock(&s->lock);
    qcow2_free_state(s);
    img->priv = NULL;
  }
  return r;
}

/* ---- create ---- */

static int qcow2_create(const char *path, const struct sl_image_create_opts *opts,
                        uint64_t size)
{
  uint32_t cs = opts->cluster_size ? opts->cluster_size : 65536;
  if (!SL_IS_POWER_OF_2(cs) || cs < 512 || cs > (2u << 20))
    return sl_error(EINVAL, "%s: cluster size %u must be a power of two "
                    "between 512 and 2 MiB", path, cs);
  if (opts->extended_l2 && cs < 16384)
    return sl_error(EINVAL, "%s: extended_l2 needs a cluster size of at least "
                    "16 KiB", path);
  uint8_t ctype = QCOW2_COMPRESSION_ZLIB;
  if (opts->compression_type && strcmp(opts->compression_type, "zstd") == 0)
    ctype = QCOW2_COMPRESSION_ZSTD;
  else if (opts->compression_type && strcmp(opts->compression_type, "zlib"))
    return sl_error(EINVAL, "%s: unknown compression type '%s' (use zlib or "
                    "zstd)", path, opts->compression_type);
  if (size > (1ull << 61))
    return sl_error(EINVAL, "%s: size %" PRIu64 " is too large", path, size);
  int version = opts->compat ? opts->compat : 3;
  if (version != 2 && version != 3)
    return sl_error(EINVAL, "%s: compat level %d is not 0.10 (2) or 1.1 (3)",
                    path, version);
  unsigned rbits = opts->refcount_bits ? opts->refcount_bits : 16;
  if (rbits > 64 || !SL_IS_POWER_OF_2(rbits))
    return sl_error(EINVAL, "%s: refcount_bits %u is not a power of two up to "
                    "64", path, rbits);
  /* QEMU's rules: these need a version 3 header. */
  if (version == 2 && rbits != 16)
    return sl_error(EINVAL, "%s: different refcount widths than 16 bits "
                    "require compatibility level 1.1 or above (use compat=1.1)",
                    path);
  if (version == 2 && opts->lazy_refcounts)
    return sl_error(EINVAL, "%s: lazy refcounts only supported with "
                    "compatibility level 1.1 and above (use compat=1.1)", path);
  if (version == 2 && (opts->extended_l2 || ctype != QCOW2_COMPRESSION_ZLIB))
    return sl_error(EINVAL, "%s: extended_l2 and compression_type=zstd "
                    "require compatibility level 1.1 (use compat=1.1)", path);

  struct sl_image fake = {.filename = (char *)path, .fd = -1};
  struct qcow2_state st = {0};
  struct qcow2_state *s = &st;
  s->img = &fake;
  pthread_mutex_init(&s->rmw_lock, NULL);
  s->cluster_bits = (uint32_t)__builtin_ctz(cs);
  s->cluster_size = cs;
  s->size = size;
  s->version = (uint32_t)version;
  s->refcount_order = (uint32_t)__builtin_ctz(rbits);
  s->refcount_bits = rbits;
  s->compression_type = ctype;
  if (opts->lazy_refcounts)
    s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
  if (ctype == QCOW2_COMPRESSION_ZSTD)
    s->incompat |= QCOW2_INCOMPAT_COMPRESSION;
  if (opts->extended_l2)
    s->incompat |= QCOW2_INCOMPAT_EXTL2;
  uint64_t l2_entries = cs / (opts->extended_l2 ? 16 : 8);
  uint64_t l1_size = SL_DIV_ROUND_UP(size, (uint64_t)cs * l2_entries);
  if (l1_size * 8 > QCOW2_MAX_L1_BYTES)
    return sl_error(EFBIG, "%s: size %" PRIu64 " needs an L1 table larger than "
                    "32 MiB with %u-byte clusters", path, size, cs);
  uint64_t l1_clusters = SL_DIV_ROUND_UP(l1_size * 8, cs);
  /* Layout: header, refcount table, refcount block(s), L1 table. */
  uint64_t rb_entries = (uint64_t)cs * 8 / rbits;
  uint64_t nrb = 1, used;
  for (;;) {
    used = 2 + nrb + l1_clusters;
    uint64_t need = SL_DIV_ROUND_UP(used, rb_entries);
    if (need <= nrb)
      break;
    nrb = need;
  }
  uint64_t rt_clusters = SL_DIV_ROUND_UP(nrb * 8, cs);
  if (rt_clusters > 1) {
    used += rt_clusters - 1;
    nrb = SL_DIV_ROUND_UP(used, rb_entries);
    rt_clusters = SL_DIV_ROUND_UP(nrb * 8, cs);
  }
  s->rt_offset = cs;
  s->rt_clusters = (uint32_t)rt_clusters;
  uint64_t rb_first = 1 + rt_clusters;
  s->l1_offset = l1_size ? (rb_first + nrb) * cs : 0;
  s->l1_size = (uint32_t)l1_size;
  used = rb_first + nrb + l1_clusters;

  int fd = sl_create_open(path);
  if (fd < 0)
    return fd;
  fake.fd = fd;
  int r = 0;
  CLEANUP_FREE uint8_t *buf = calloc(1, cs);
  if (!buf) {
    r = sl_error(ENOMEM, "%s: out of memory", path);
    goto out;
  }
  r = build_header(s, opts->backing_file, opts->backing_format, buf, cs);
  if (r < 0) {
    r = sl_error(ENAMETOOLONG, "%s: backing file name does not fit in a "
                 "%u-byte header cluster", path, cs);
    goto out;
  }
  r = sl_pwrite_full(fd, buf, cs, 0);
  for (uint64_t i = 0; r == 0 && i < rt_clusters; i++) {
    memset(buf, 0, cs);
    for (uint64_t j = 0; j < cs / 8; j++) {
      uint64_t b = i * (cs / 8) + j;
      if (b < nrb)
        qcow2_put_be64(buf + j * 8, (rb_first + b) * cs);
    }
    r = sl_pwrite_full(fd, buf, cs, (1 + i) * cs);
  }
  for (uint64_t b = 0; r == 0 && b < nrb; b++) {
    memset(buf, 0, cs);
    for (uint64_t j = 0; j < rb_entries; j++) {
      uint64_t c = b * rb_entries + j;
      if (c < used)
        qcow2_rc_set_entry(s, buf, j, 1);
    }
    r = sl_pwrite_full(fd, buf, cs, (rb_first + b) * cs);
  }
  if (r == 0 && ftruncate(fd, (off_t)(used * cs)) < 0)
    r = -errno;
  if (r == 0 && fsync(fd) < 0)
    r = -errno;
  if (r < 0)
    r = sl_error(-r, "%s: cannot write the new image: %s", path, strerror(-r));
out:
  close(fd);
  pthread_mutex_destroy(&s->rmw_lock);
  if (r < 0)
    unlink(path);
  return r;
}

/* ---- driver entry points ---- */

static int qcow2_flush(struct sl_image *img);

static int qcow2_pread(struct sl_image *img, void *buf, size_t len, uint64_t off)
{
  return qcow2_read(img->priv, buf, len, off, false);
}

static int qcow2_pwrite(struct sl_image *img, const void *buf, size_t len,
                        uint64_t off, uint32_t flags)
{
  struct qcow2_state *s = img->priv;
  qcow2_bitmaps_mark(s, off, len);
  int r = qcow2_write(s, buf, len, off);
  if (r == 0 && (flags & SL_FUA))
    r = qcow2_flush(img);
  return r;
}

static int qcow2_flush(struct sl_image *img)
{
  struct qcow2_state *s = img->priv;
  int r;
  {
    SCOPED_LOCK(&s->lock);
    r = write_metadata(s);
  }
  /* The final sync needs no lock: writers carry on meanwhile. */
  return r == 0 ? qcow2_sync(s) : r;
}

static int qcow2_discard(struct sl_image *img, uint64_t off, uint64_t len)
{
  qcow2_bitmaps_mark(img->priv, off, len);
  return qcow2_zero_or_discard(img->priv, off, len, true, false);
}

static int qcow2_write_zeroes(struct sl_image *img, uint64_t off, uint64_t len,
                              uint32_t flags)
{
  qcow2_bitmaps_mark(img->priv, off, len);
  return qcow2_zero_or_discard(img->priv, off, len, false,
                               (flags & SL_NO_HOLE) != 0);
}

static int qcow2_block_status(struct sl_image *img, uint64_t off, uint64_t len,
                              struct sl_extent *ext)
{
  struct qcow2_state *s = img->priv;
  struct qcow2_map m;
  int r;
  {
    SCOPED_LOCK(&s->lock);
    r = qcow2_map(s, off, len, &m);
  }
  if (r < 0)
    return r;
  memset(ext, 0, sizeof *ext);
  ext->offset = off;
  ext->length = m.length;
  ext->depth = 0;
  switch (m.type) {
  case QMAP_UNALLOC: ext->type = SL_EXTENT_UNALLOCATED; ext->depth = -1; break;
  case QMAP_ZERO: ext->type = SL_EXTENT_ZERO; break;
  case QMAP_DATA: ext->type = SL_EXTENT_DATA; ext->file_offset = m.host; break;
  case QMAP_COMPRESSED: ext->type = SL_EXTENT_DATA; break;
  }
  return 0;
}

static void qcow2_get_info(const struct sl_image *img, struct sl_image_info *info)
{
  struct qcow2_state *s = img->priv;
  if (s->nsnapshots && !s->info_snapshots)
    s->info_snapshots = calloc(s->nsnapshots, sizeof *s->info_snapshots);
  if (s->info_snapshots) {
    for (uint32_t i = 0; i < s->nsnapshots; i++) {
      const struct qcow2_snapshot *sn = &s->snapshots[i];
      s->info_snapshots[i] = (struct sl_snapshot_info){
        .id = sn->id, .name = sn->name, .vm_state_size = sn->vm_state_size,
        .date_sec = sn->date_sec, .date_nsec = sn->date_nsec,
        .vm_clock_nsec = sn->vm_clock_nsec, .icount = sn->icount};
    }
    info->snapshots = s->info_snapshots;
    info->n_snapshots = s->nsnapshots;
  }
  if (s->bitmaps_valid && s->nbitmaps && !s->info_bitmaps)
    s->info_bitmaps = calloc(s->nbitmaps, sizeof *s->info_bitmaps);
  if (s->bitmaps_valid && s->info_bitmaps) {
    for (uint32_t i = 0; i < s->nbitmaps; i++) {
      const struct qcow2_bitmap *bm = &s->bitmaps[i];
      s->info_bitmaps[i] = (struct sl_bitmap_info){
        .name = bm->name, .granularity = 1ull << bm->granularity_bits,
        .in_use = (bm->flags & QCOW2_BME_IN_USE) != 0,
        .enabled = (bm->flags & QCOW2_BME_AUTO) != 0};
    }
    info->bitmaps = s->info_bitmaps;
    info->n_bitmaps = s->nbitmaps;
  }
  info->cluster_size = (uint32_t)s->cluster_size;
  info->qcow2_version = (int)s->version;
  info->refcount_bits = (int)s->refcount_bits;
  info->extended_l2 = s->extended_l2;
  info->lazy_refcounts = (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
  info->corrupt = (s->incompat & QCOW2_INCOMPAT_CORRUPT) != 0;
  info->dirty = (s->incompat & QCOW2_INCOMPAT_DIRTY) != 0;
  info->compression_type = compression_name(s->compression_type);
}

const struct sl_image_driver sl_qcow2_driver = {
  .name = "qcow2",
  .format = SL_FORMAT_QCOW2,
  .probe = qcow2_probe,
  .create = qcow2_create,
  .open = qcow2_open,
  .close = qcow2_close,
  .pread = qcow2_pread,
  .pwrite = qcow2_pwrite,
  .flush = qcow2_flush,
  .discard = qcow2_discard,
  .write_zeroes = qcow2_write_zeroes,
  .block_status = qcow2_block_status,
  .get_info = qcow2_get_info,
  .check = qcow2_check,
};
