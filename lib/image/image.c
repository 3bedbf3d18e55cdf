/* Generic image layer: driver selection, the backing chain, range checks.
 *
 * Drivers handle one layer each (driver.h).  This file opens the chain
 * below an image -- resolving each backing name relative to the directory
 * of the image that names it, refusing loops and over-deep chains -- and
 * resolves "unallocated here" down the chain for reads and block status.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/driver.h"
#include "image/rbd-spec.h"

#define DEFAULT_MAX_CHAIN 1024
#define PROBE_SECTOR 512u

/* Serialises writes to the first sector of probed raw images (rare). */
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct sl_image_driver *driver_for(enum sl_format fmt)
{
  switch (fmt) {
  case SL_FORMAT_RAW: return &sl_raw_driver;
  case SL_FORMAT_QCOW2: return &sl_qcow2_driver;
  default: return NULL;
  }
}

const char *sl_format_name(enum sl_format fmt)
{
  switch (fmt) {
  case SL_FORMAT_RAW: return "raw";
  case SL_FORMAT_QCOW2: return "qcow2";
  default: return "auto";
  }
}

int sl_format_parse(const char *name, enum sl_format *out)
{
  if (strcmp(name, "raw") == 0)
    *out = SL_FORMAT_RAW;
  else if (strcmp(name, "qcow2") == 0)
    *out = SL_FORMAT_QCOW2;
  else
    return sl_error(EINVAL, "unknown image format '%s' (use raw or qcow2)", name);
  return 0;
}

int sl_cache_mode_parse(const char *mode, bool *direct, bool *dsync,
                        bool *no_flush)
{
  static const struct { const char *name; bool direct, dsync, no_flush; } modes[] = {
    {"none", true, false, false},
    {"writeback", false, false, false},
    {"writethrough", false, true, false},
    {"directsync", true, true, false},
    {"unsafe", false, false, true},
  };
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    if (strcmp(mode, modes[i].name) == 0) {
      *direct = modes[i].direct;
      *dsync = modes[i].dsync;
      *no_flush = modes[i].no_flush;
      return 0;
    }
  }
  return sl_error(EINVAL, "unknown cache mode '%s' (use none, writeback, "
                  "writethrough, directsync or unsafe)", mode);
}

static int probe_fd(int fd, const char *path, const struct sl_image_driver **drv)
{
  /* Aligned for O_DIRECT, whose reads need a block-aligned buffer. */
  uint8_t buf[4096] __attribute__((aligned(4096)));
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  if (n < 0)
    return sl_error(errno, "%s: cannot read header: %s", path, strerror(errno));
  if (sl_qcow2_driver.probe(buf, (size_t)n)) {
    *drv = &sl_qcow2_driver;
    return 0;
  }
  if (n >= 4 && memcmp(buf, "QFI\xfb", 4) == 0)
    return sl_error(ENOTSUP, "%s: qcow2 support is not built in", path);
  *drv = &sl_raw_driver;
  return 0;
}

bool sl_image_path_is_rbd(const char *path) { return sl_rbd_is_path(path); }

bool sl_image_have_rbd(void) { return HAVE_RBD; }

/* An RBD layer: no file to open, stat or lock here; the driver connects,
 * and takes the RBD exclusive lock for a writable open (rbd.c). */
static int open_rbd_layer(struct sl_image *img, const struct sl_image_open_opts *opts,
                          enum sl_format fmt)
{
  const char *path = img->filename;
  if (fmt == SL_FORMAT_QCOW2)
    return sl_error(ENOTSUP, "%s: RBD images are opened as raw (qcow2 inside an "
                    "RBD image is not supported)", path);
#if HAVE_RBD
  img->drv = &sl_rbd_driver;
  int r = img->drv->open(img, opts);
  if (r < 0 || fmt != SL_FORMAT_AUTO)
    return r;
  /* Probed, as QEMU probes an rbd: name without a format: the same guard on
   * sector 0, and an image whose content is a qcow2 header is refused
   * rather than opened as something other than what QEMU would see. */
  img->probed_raw = true;
  uint8_t buf[PROBE_SECTOR];
  size_t n = (size_t)SL_MIN(img->size, (uint64_t)PROBE_SECTOR);
  if (n && (r = img->drv->pread(img, buf, n, 0)) < 0)
    return r;
  if (n && sl_qcow2_driver.probe(buf, n))
    return sl_error(ENOTSUP, "%s: the RBD image holds a qcow2 header: qcow2 "
                    "inside RBD is not supported (give -f raw to open it as raw)",
                    path);
  return 0;
#else
  struct sl_rbd_spec spec;
  int r = sl_rbd_spec_parse(path, &spec);
  if (r < 0)
    return r;
  sl_rbd_spec_clear(&spec);
  return sl_error(ENOTSUP, "%s: this sluice was built without RBD support "
                  "(librbd)", path);
#endif
}

/* BACKING resolved against the directory of OVERLAY, as qemu does. */
static char *resolve_backing(const char *overlay, const char *backing)
{
  char *res = NULL;
  if (backing[0] == '/' || !strchr(overlay, '/') || sl_rbd_is_path(backing) ||
      sl_rbd_is_path(overlay)) {
    res = strdup(backing); /* absolute, or the overlay is in the cwd */
  } else {
    CLEANUP_FREE char *copy = strdup(overlay);
    if (!copy)
      return NULL;
    const char *dir = dirname(copy);
    if (asprintf(&res, "%s/%s", dir, backing) < 0)
      res = NULL;
  }
  return res;
}

static void free_layer(struct sl_image *img)
{
  if (!img)
    return;
  if (img->fd >= 0)
    close(img->fd);
  free(img->filename);
  free(img->backing_file);
  free(img->backing_path);
  free(img);
}

static int open_layer(const char *path, const struct sl_image_open_opts *opts,
                      enum sl_format fmt, bool read_only, int depth,
                      struct sl_image **out)
{
  struct sl_image *img = calloc(1, sizeof *img);
  if (!img)
    return sl_error(ENOMEM, "%s: out of memory", path);
  img->fd = -1;
  img->depth = depth;
  img->read_only = read_only;
  img->direct = opts->direct;
  img->no_flush = opts->no_flush;
  img->filename = strdup(path);
  if (!img->filename) {
    free_layer(img);
    return sl_error(ENOMEM, "%s: out of memory", path);
  }
  if (sl_rbd_is_path(path)) {
    int r = open_rbd_layer(img, opts, fmt);
    if (r < 0) {
      if (img->priv)
        img->drv->close(img);
      free_layer(img);
      return r;
    }
    *out = img;
    return 0;
  }
  int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (opts->direct)
    flags |= O_DIRECT;
  if (opts->dsync && !read_only)
    flags |= O_DSYNC;
  img->fd = open(path, flags);
  if (img->fd < 0) {
    int e = errno;
    free_layer(img);
    return sl_error(e, "%s: cannot open: %s", path, strerror(e));
  }
  if (fstat(img->fd, &img->st) < 0) {
    int e = errno;
    free_layer(img);
    return sl_error(e, "%s: %s", path, strerror(e));
  }
  if (S_ISDIR(img->st.st_mode)) {
    free_layer(img);
    return sl_error(EISDIR, "%s: is a directory, not an image", path);
  }
  int r;
  if (fmt == SL_FORMAT_AUTO) {
    r = probe_fd(img->fd, path, &img->drv);
    img->probed_raw = r == 0 && img->drv == &sl_raw_driver;
  } else {
    img->drv = driver_for(fmt);
    r = img->drv ? 0 : sl_error(ENOTSUP, "%s: format %s is not built in", path,
                                sl_format_name(fmt));
  }
  /* Before the driver reads or writes anything (qcow2 sets its dirty bit on
   * a writable open): the same lock bytes QEMU takes for the same access. */
  if (r == 0)
    r = sl_lock_image_fd(img->fd, path, img->drv->format, read_only,
                         opts->force_share);
  if (r == 0)
    r = img->drv->open(img, opts);
  if (r < 0) {
    if (img->priv)
      img->drv->close(img);
    free_layer(img);
    return r;
  }
  *out = img;
  return 0;
}

int sl_image_open(const char *path, const struct sl_image_open_opts *opts,
                  struct sl_image **out)
{
  static const struct sl_image_open_opts defaults;
  if (!opts)
    opts = &defaults;
  int max_depth = opts->max_chain_depth > 0 ? opts->max_chain_depth
                                            : DEFAULT_MAX_CHAIN;
  struct sl_image *top = NULL;
  int r = open_layer(path, opts, opts->format, opts->read_only, 0, &top);
  if (r < 0)
    return r;

  struct sl_image *cur = top;
  while (!opts->no_backing && cur->backing_file) {
    if (cur->depth + 1 >= max_depth) {
      r = sl_error(ELOOP, "%s: backing chain is deeper than %d layers",
                   top->filename, max_depth);
      goto fail;
    }
    cur->backing_path = resolve_backing(cur->filename, cur->backing_file);
    if (!cur->backing_path) {
      r = sl_error(ENOMEM, "%s: out of memory", cur->filename);
      goto fail;
    }
    struct stat st;
    bool rbd = sl_rbd_is_path(cur->backing_path);
    /* An RBD parent is a snapshot, which has no parent of its own among
     * its children: no loop to look for, and nothing to stat. */
    if (!rbd && stat(cur->backing_path, &st) < 0) {
      int e = errno;
      r = sl_error(e, "%s: backing file '%s' (%s): %s", cur->filename,
                   cur->backing_file, cur->backing_path, strerror(e));
      goto fail;
    }
    for (struct sl_image *l = top; !rbd && l; l = l->backing) {
      if (l->fd >= 0 && l->st.st_dev == st.st_dev && l->st.st_ino == st.st_ino) {
        r = sl_error(ELOOP, "%s: backing file '%s' loops back to %s",
                     cur->filename, cur->backing_file, l->filename);
        goto fail;
      }
    }
    r = open_layer(cur->backing_path, opts, cur->backing_fmt, true,
                   cur->depth + 1, &cur->backing);
    if (r < 0) {
      sl_error_prefix(-r, "%s: backing file '%s'", cur->filename,
                      cur->backing_file);
      goto fail;
    }
    cur = cur->backing;
  }
  *out = top;
  return 0;

fail:
  while (top) {
    struct sl_image *next = top->backing;
    top->drv->close(top);
    free_layer(top);
    top = next;
  }
  return r;
}

int sl_image_close(struct sl_image *img)
{
  int ret = 0;
  while (img) {
    struct sl_image *next = img->backing;
    int r = img->drv->close(img);
    if (r < 0 && ret == 0)
      ret = r;
    free_layer(img);
    img = next;
  }
  return ret;
}

const char *sl_prealloc_name(enum sl_prealloc p)
{
  static const char *const names[] = {"off", "metadata", "falloc", "full"};
  return (unsigned)p < 4 ? names[p] : "?";
}

int sl_prealloc_parse(const char *name, enum sl_prealloc *out)
{
  for (int p = SL_PREALLOC_OFF; p <= SL_PREALLOC_FULL; p++)
    if (strcmp(name, sl_prealloc_name((enum sl_prealloc)p)) == 0) {
      *out = (enum sl_prealloc)p;
      return 0;
    }
  return sl_error(EINVAL, "preallocation '%s' is not off, metadata, falloc or "
                  "full", name);
}

/* Allocate every cluster of a new image (qcow2: by writing zeros through
 * the driver, so L2 tables and refcounts are what a write makes; raw:
 * fallocate or zeros).  The image is new, so nothing is overwritten. */
static int preallocate(const char *path, const struct sl_image_create_opts *o,
                       uint64_t size)
{
  int r = 0;
  if (o->format == SL_FORMAT_RAW) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
      return sl_error(errno, "%s: %s", path, strerror(errno));
    if (o->preallocation == SL_PREALLOC_FALLOC) {
      int e = size ? posix_fallocate(fd, 0, (off_t)size) : 0;
      if (e)
        r = sl_error(e, "%s: cannot preallocate: %s", path, strerror(e));
    } else {
      static const char zeros[65536];
      for (uint64_t off = 0; r == 0 && off < size; off += sizeof zeros)
        r = sl_pwrite_full(fd, zeros, (size_t)SL_MIN(size - off, sizeof zeros), off);
      if (r < 0)
        r = sl_error(-r, "%s: cannot preallocate: %s", path, strerror(-r));
    }
    if (r == 0 && fsync(fd) < 0)
      r = sl_error(errno, "%s: %s", path, strerror(errno));
    close(fd);
    return r;
  }
  struct sl_image_open_opts oo = {.format = o->format, .no_backing = true};
  struct sl_image *img;
  if ((r = sl_image_open(path, &oo, &img)) < 0)
    return r;
  const size_t chunk = 1u << 20;
  char *zeros = calloc(1, chunk);
  if (!zeros)
    r = sl_error(ENOMEM, "%s: out of memory", path);
  for (uint64_t off = 0; r == 0 && off < size; off += chunk)
    r = sl_image_pwrite(img, zeros, (size_t)SL_MIN(size - off, chunk), off, 0);
  free(zeros);
  int r2 = sl_image_close(img);
  return r < 0 ? r : r2;
}

int sl_image_create(const char *path, const struct sl_image_create_opts *opts)
{
  if (sl_rbd_is_path(path)) {
#if HAVE_RBD
    if (!opts->size_set && opts->size == 0)
      return sl_error(EINVAL, "%s: a size is needed for an RBD image", path);
    return sl_rbd_create(path, opts, opts->size);
#else
    return sl_error(ENOTSUP, "%s: this sluice was built without RBD support "
                    "(librbd)", path);
#endif
  }
  struct sl_image_create_opts o = *opts;
  if (o.format == SL_FORMAT_AUTO)
    o.format = SL_FORMAT_QCOW2;
  const struct sl_image_driver *drv = driver_for(o.format);
  if (!drv)
    return sl_error(ENOTSUP, "%s: format %s is not built in", path,
                    sl_format_name(o.format));
  /* qemu-img create's checks, before anything is touched. */
  uint64_t size = o.size;
  if (o.backing_file && strlen(o.backing_file) > 1023)
    return sl_error(EINVAL, "%s: backing file name too long (%zu bytes; qcow2 "
                    "allows at most 1023)", path, strlen(o.backing_file));
  if (o.format == SL_FORMAT_RAW && o.preallocation == SL_PREALLOC_METADATA)
    return sl_error(EINVAL, "%s: raw images take preallocation=off, falloc or "
                    "full, not metadata", path);
  if (o.backing_file && o.preallocation != SL_PREALLOC_OFF)
    return sl_error(EINVAL, "%s: a backing file and preallocation cannot be "
                    "used together", path);
  if (o.backing_file) {
    CLEANUP_FREE char *bpath = resolve_backing(path, o.backing_file);
    if (!bpath)
      return sl_error(ENOMEM, "%s: out of memory", path);
    /* Only the size and format are read: as qemu-img create, share all. */
    struct sl_image_open_opts bo = {.format = o.backing_format, .read_only = true,
                                    .force_share = true};
    struct sl_image *b;
    int r = sl_image_open(bpath, &bo, &b);
    if (r < 0)
      return sl_error_prefix(-r, "%s: backing file '%s'", path, o.backing_file);
    /* `create -b X X` would empty X before writing a header naming it. */
    r = sl_image_refuse_layer(b, path, "the new image");
    if (r < 0) {
      sl_image_close(b);
      return r;
    }
    if (size == 0 && !o.size_set)
      size = b->size;
    if (o.backing_format == SL_FORMAT_AUTO)
      o.backing_format = b->drv->format;
    sl_image_close(b);
  } else if (size == 0 && !o.size_set && o.format == SL_FORMAT_QCOW2) {
    return sl_error(EINVAL, "%s: a size is needed when there is no backing file",
                    path);
  }
  int r = drv->create(path, &o, size);
  if (r == 0 && o.preallocation != SL_PREALLOC_OFF)
    r = preallocate(path, &o, size);
  return r;
}

uint64_t sl_image_size(const struct sl_image *img) { return img->size; }
const char *sl_image_filename(const struct sl_image *img) { return img->filename; }
enum sl_format sl_image_format(const struct sl_image *img) { return img->drv->format; }
bool sl_image_read_only(const struct sl_image *img) { return img->read_only; }

static int check_range(const struct sl_image *img, const char *op, uint64_t off,
                       uint64_t len)
{
  uint64_t end;
  if (!sl_add_ok(off, len, &end) || end > img->size)
    return sl_error(EINVAL, "%s: %s of %" PRIu64 " bytes at %" PRIu64
                    " is beyond the end of the image (%" PRIu64 " bytes)",
                    img->filename, op, len, off, img->size);
  return 0;
}

static int check_writable(const struct sl_image *img)
{
  if (img->read_only)
    return sl_error(EROFS, "%s: image is open read-only", img->filename);
  return 0;
}

int sl_image_pread(struct sl_image *img, void *buf, size_t len, uint64_t off)
{
  int r = check_range(img, "read", off, len);
  if (r < 0 || len == 0)
    return r;
  return img->drv->pread(img, buf, len, off);
}

/* Magics by which QEMU 7.2 probes a format at offset 0 (qcow and qcow2,
 * QED, VMDK, LUKS, VHDX, VPC, Parallels).  A guest must not turn a probed
 * raw disk into one of them: the next probe would obey its header, e.g. a
 * qcow2 backing file naming any host file (CVE-2008-2004). */
static bool probes_as_other(const uint8_t *s)
{
  static const struct { const char *m; size_t n; } magics[] = {
    {"QFI\xfb", 4}, {"QED\0", 4}, {"KDMV", 4}, {"# Disk DescriptorFile", 21},
    {"LUKS\xba\xbe", 6}, {"vhdxfile", 8}, {"conectix", 8},
    {"WithoutFreeSpace", 16}, {"WithouFreSpacExt", 16},
  };
  for (size_t i = 0; i < SL_ARRAY_SIZE(magics); i++)
    if (memcmp(s, magics[i].m, magics[i].n) == 0)
      return true;
  return sl_qcow2_driver.probe(s, PROBE_SECTOR);
}

/* As QEMU's raw driver does for a probed image: a write to the first
 * sector is refused with EPERM if the sector would then probe as another
 * format.  Called with probe_lock held, so that two partial writes cannot
 * each pass against the old sector and together form a header. */
static int check_probe_write(struct sl_image *img, const void *buf, size_t len,
                             uint64_t off)
{
  uint8_t s[PROBE_SECTOR];
  memset(s, 0, sizeof s);
  if (off > 0 || len < PROBE_SECTOR) {
    uint64_t n = SL_MIN(img->size, (uint64_t)PROBE_SECTOR);
    int r = n ? img->drv->pread(img, s, (size_t)n, 0) : 0;
    if (r < 0)
      return r;
  }
  size_t wn = (size_t)SL_MIN((uint64_t)len, PROBE_SECTOR - off);
  memcpy(s + off, buf, wn);
  if (!probes_as_other(s))
    return 0;
  bool was = atomic_exchange(&img->warned_probe, true);
  if (!was)
    fprintf(stderr, "sluice: warning: %s: a write to sector 0 was refused: it "
            "would make the image probe as another format.  The format was "
            "probed as raw; give it explicitly (-f raw, or format raw in the "
            "disk descriptor) to allow such writes.\n", img->filename);
  return sl_error(EPERM, "%s: write to sector 0 refused: the image was probed "
                  "as raw and would then probe as another format (give the "
                  "format explicitly to allow it)", img->filename);
}

int sl_image_pwrite(struct sl_image *img, const void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  int r = check_writable(img);
  if (r == 0)
    r = check_range(img, "write", off, len);
  if (r < 0 || len == 0)
    return r;
  if (img->probed_raw && off < PROBE_SECTOR) {
    pthread_mutex_lock(&probe_lock);
    r = check_probe_write(img, buf, len, off);
    if (r == 0)
      r = img->drv->pwrite(img, buf, len, off, flags);
    pthread_mutex_unlock(&probe_lock);
    return r;
  }
  return img->drv->pwrite(img, buf, len, off, flags);
}

bool sl_image_probed_raw(const struct sl_image *img) { return img->probed_raw; }

int sl_image_flush(struct sl_image *img)
{
  if (img->read_only)
    return 0;
  return img->drv->flush(img);
}

int sl_image_discard(struct sl_image *img, uint64_t off, uint64_t len)
{
  int r = check_writable(img);
  if (r == 0)
    r = check_range(img, "discard", off, len);
  if (r < 0 || len == 0)
    return r;
  return img->drv->discard(img, off, len);
}

int sl_image_write_zeroes(struct sl_image *img, uint64_t off, uint64_t len,
                          uint32_t flags)
{
  int r = check_writable(img);
  if (r == 0)
    r = check_range(img, "write-zeroes", off, len);
  if (r < 0 || len == 0)
    return r;
  return img->drv->write_zeroes(img, off, len, flags);
}

int sl_image_read_backing(struct sl_image *img, void *buf, size_t len,
                          uint64_t off)
{
  struct sl_image *b = img->backing;
  uint64_t avail = 0;
  if (b && off < b->size)
    avail = SL_MIN((uint64_t)len, b->size - off);
  if (avail > 0) {
    int r = b->drv->pread(b, buf, (size_t)avail, off);
    if (r < 0)
      return r;
  }
  if (avail < len)
    memset((char *)buf + avail, 0, len - (size_t)avail);
  return 0;
}

int sl_image_block_status(struct sl_image *img, uint64_t off, uint64_t len,
                          struct sl_extent *ext)
{
  int r = check_range(img, "block status", off, len);
  if (r < 0)
    return r;
  memset(ext, 0, sizeof *ext);
  ext->offset = off;
  if (len == 0)
    return 0;
  for (struct sl_image *l = img; l; l = l->backing) {
    if (off >= l->size) {
      /* Past the end of this layer: reads as zeros, nobody holds it. */
      ext->type = SL_EXTENT_UNALLOCATED;
      ext->depth = -1;
      ext->length = len;
      return 0;
    }
    len = SL_MIN(len, l->size - off);
    struct sl_extent e;
    r = l->drv->block_status(l, off, len, &e);
    if (r < 0)
      return r;
    if (e.length == 0 || e.length > len)
      return sl_error(EIO, "%s: driver returned a bad extent", l->filename);
    len = e.length;
    if (e.type != SL_EXTENT_UNALLOCATED) {
      *ext = e;
      ext->offset = off;
      ext->depth = l->depth - img->depth;
      return 0;
    }
  }
  ext->type = SL_EXTENT_UNALLOCATED;
  ext->depth = -1;
  ext->length = len;
  return 0;
}

int sl_image_chain_length(const struct sl_image *img)
{
  int n = 0;
  for (; img; img = img->backing)
    n++;
  return n;
}

struct sl_image *sl_image_layer(struct sl_image *img, int depth)
{
  while (img && depth-- > 0)
    img = img->backing;
  return depth < 0 ? img : NULL;
}

int sl_image_refuse_layer(const struct sl_image *img, const char *path,
                          const char *what)
{
  if (sl_rbd_is_path(path)) {
#if HAVE_RBD
    struct sl_rbd_spec spec;
    if (sl_rbd_spec_parse(path, &spec) < 0)
      return 0; /* not a name that could be opened: not one of ours */
    const struct sl_image *same = NULL;
    for (const struct sl_image *l = img; l && !same; l = l->backing)
      if (l->drv == &sl_rbd_driver && sl_rbd_same_image(l, &spec))
        same = l;
    sl_rbd_spec_clear(&spec);
    if (same)
      return sl_error(EEXIST, "%s: %s is the same RBD image as %s (layer %d of "
                      "%s's chain): refusing to overwrite an input", path, what,
                      same->filename, same->depth - img->depth, img->filename);
#endif
    return 0;
  }
  struct stat st;
  if (stat(path, &st) < 0)
    return 0; /* absent (or unreachable): it cannot be one of our files */
  for (const struct sl_image *l = img; l; l = l->backing)
    if (l->fd >= 0 && l->st.st_dev == st.st_dev && l->st.st_ino == st.st_ino)
      return sl_error(EEXIST, "%s: %s is the same file as %s (layer %d of "
                      "%s's chain): refusing to overwrite an input", path,
                      what, l->filename, l->depth - img->depth, img->filename);
  return 0;
}

int sl_image_layer_id(const struct sl_image *img, struct sl_layer_id *id)
{
  memset(id, 0, sizeof *id);
  if (img->fd < 0) {
#if HAVE_RBD
    if (img->drv == &sl_rbd_driver)
      return sl_rbd_layer_id(img, id);
#endif
    return sl_error(ENOTSUP, "%s: layer has no identity", img->filename);
  }
  id->dev = (uint64_t)img->st.st_dev;
  id->ino = (uint64_t)img->st.st_ino;
  if (img->read_only) {
    struct stat st;
    if (fstat(img->fd, &st) < 0)
      return sl_error(errno, "%s: %s", img->filename, strerror(errno));
    id->size = (uint64_t)st.st_size;
    id->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  }
  return 0;
}

int sl_image_layer_fd(const struct sl_image *img)
{
  if (img->fd < 0)
    return sl_error(ENOTSUP, "%s: not a file (no descriptor to share)",
                    img->filename);
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", img->fd);
  int fd = open(proc, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sl_error(errno, "%s: cannot reopen read-only: %s", img->filename,
                    strerror(errno));
  return fd;
}

int sl_image_get_info(const struct sl_image *img, struct sl_image_info *info)
{
  memset(info, 0, sizeof *info);
  struct stat st = {0};
  if (img->fd >= 0 && fstat(img->fd, &st) < 0)
    return sl_error(errno, "%s: %s", img->filename, strerror(errno));
  info->format = img->drv->format;
  info->virtual_size = img->size;
  info->file_size = (uint64_t)st.st_size;
  info->actual_size = (uint64_t)st.st_blocks * 512;
  info->backing_file = img->backing_file;
  info->backing_format = img->backing_file && img->backing_fmt != SL_FORMAT_AUTO
                             ? sl_format_name(img->backing_fmt) : NULL;
  info->backing_path = img->backing_path;
  img->drv->get_info(img, info);
  return 0;
}

int sl_image_check(const char *path, unsigned repair, struct sl_check_result *res)
{
  if (sl_rbd_is_path(path))
    return sl_error(ENOTSUP, "%s: RBD images (raw) have no metadata to check",
                    path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return sl_error(errno, "%s: cannot open: %s", path, strerror(errno));
  const struct sl_image_driver *drv;
  int r = probe_fd(fd, path, &drv);
  close(fd);
  if (r < 0)
    return r;
  return drv->check(path, repair, res);
}
