/* The raw driver: the file is the disk.  Holes are reported as zero
 * extents (SEEK_DATA/SEEK_HOLE), discard punches holes, write-zeroes uses
 * fallocate where the file system can.  With O_DIRECT, requests whose
 * buffer, offset or length are not block aligned go through an aligned
 * bounce buffer (read-modify-write for writes, serialised so two partial
 * writes to one block cannot lose each other's bytes). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/direct-io.h"
#include "image/driver.h"

static bool raw_probe(const uint8_t *buf, size_t len)
{
  (void)buf;
  (void)len;
  return true; /* the fallback for anything no other driver claims */
}

static int raw_create(const char *path, const struct sl_image_create_opts *opts,
                      uint64_t size)
{
  if (opts->backing_file)
    return sl_error(ENOTSUP, "%s: raw images cannot have a backing file", path);
  int fd = sl_create_open(path);
  if (fd < 0)
    return fd;
  if (ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    close(fd);
    return sl_error(e, "%s: cannot set size: %s", path, strerror(e));
  }
  if (close(fd) < 0)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  return 0;
}

static int raw_open(struct sl_image *img, const struct sl_image_open_opts *opts)
{
  (void)opts;
  img->size = (uint64_t)img->st.st_size;
  if (S_ISBLK(img->st.st_mode)) {
    off_t end = lseek(img->fd, 0, SEEK_END);
    if (end < 0)
      return sl_error(errno, "%s: %s", img->filename, strerror(errno));
    img->size = (uint64_t)end;
  }
  return 0;
}

static int raw_close(struct sl_image *img)
{
  (void)img;
  return 0;
}

/* Serialises read-modify-write of partial blocks under O_DIRECT. */
static pthread_mutex_t rmw_lock = PTHREAD_MUTEX_INITIALIZER;

static int raw_io_read(struct sl_image *img, void *buf, size_t len, uint64_t off)
{
  return sl_image_io_read(img, buf, len, off);
}

/* The file is the disk: its end is the disk's, and may not be aligned. */
static int raw_io_write(struct sl_image *img, const void *buf, size_t len,
                        uint64_t off)
{
  return sl_image_io_write(img, &rmw_lock, img->size, buf, len, off);
}

static int raw_pread(struct sl_image *img, void *buf, size_t len, uint64_t off)
{
  int r = raw_io_read(img, buf, len, off);
  return r < 0 ? sl_error(-r, "%s: read at %" PRIu64 ": %s", img->filename, off,
                          strerror(-r)) : 0;
}

static int raw_pwrite(struct sl_image *img, const void *buf, size_t len,
                      uint64_t off, uint32_t flags)
{
  int r = raw_io_write(img, buf, len, off);
  if (r < 0)
    return sl_error(-r, "%s: write at %" PRIu64 ": %s", img->filename, off,
                    strerror(-r));
  if ((flags & SL_FUA) && !img->no_flush && fdatasync(img->fd) < 0)
    return sl_error(errno, "%s: fdatasync: %s", img->filename, strerror(errno));
  return 0;
}

static int raw_flush(struct sl_image *img)
{
  if (img->no_flush)
    return 0;   /* cache=unsafe */
  if (fdatasync(img->fd) < 0)
    return sl_error(errno, "%s: fdatasync: %s", img->filename, strerror(errno));
  return 0;
}

static int raw_discard(struct sl_image *img, uint64_t off, uint64_t len)
{
  if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                (off_t)len) == 0)
    return 0;
  if (errno == EOPNOTSUPP || errno == ENOSYS)
    return 0; /* discard is advisory */
  return sl_error(errno, "%s: discard: %s", img->filename, strerror(errno));
}

static int raw_write_zeroes(struct sl_image *img, uint64_t off, uint64_t len,
                            uint32_t flags)
{
  int mode = (flags & SL_NO_HOLE) ? FALLOC_FL_ZERO_RANGE
                                  : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (fallocate(img->fd, mode, (off_t)off, (off_t)len) == 0)
    return 0;
  static const char zeros[65536];
  while (len > 0) {
    size_t n = (size_t)SL_MIN(len, sizeof zeros);
    int r = raw_pwrite(img, zeros, n, off, 0);
    if (r < 0)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

static int raw_block_status(struct sl_image *img, uint64_t off, uint64_t len,
                            struct sl_extent *ext)
{
  ext->offset = off;
  ext->depth = 0;
  off_t data = lseek(img->fd, (off_t)off, SEEK_DATA);
  if (data < 0 && errno == ENXIO) {
    data = (off_t)img->size; /* a hole up to the end */
  } else if (data < 0) {
    ext->type = SL_EXTENT_DATA; /* cannot tell: say data */
    ext->length = len;
    ext->file_offset = off;
    return 0;
  }
  if ((uint64_t)data > off) {
    ext->type = SL_EXTENT_ZERO;
    ext->length = SL_MIN(len, (uint64_t)data - off);
    ext->file_offset = 0;
    return 0;
  }
  off_t hole = lseek(img->fd, (off_t)off, SEEK_HOLE);
  if (hole < 0 || (uint64_t)hole <= off)
    hole = (off_t)(off + len);
  ext->type = SL_EXTENT_DATA;
  ext->length = SL_MIN(len, (uint64_t)hole - off);
  ext->file_offset = off;
  return 0;
}

static void raw_get_info(const struct sl_image *img, struct sl_image_info *info)
{
  (void)img;
  (void)info; /* the generic fields say everything */
}

static int raw_check(const char *path, unsigned repair, struct sl_check_result *res)
{
  (void)path;
  (void)repair;
  memset(res, 0, sizeof *res);
  return 0;
}

const struct sl_image_driver sl_raw_driver = {
  .name = "raw",
  .format = SL_FORMAT_RAW,
  .probe = raw_probe,
  .create = raw_create,
  .open = raw_open,
  .close = raw_close,
  .pread = raw_pread,
  .pwrite = raw_pwrite,
  .flush = raw_flush,
  .discard = raw_discard,
  .write_zeroes = raw_write_zeroes,
  .block_status = raw_block_status,
  .get_info = raw_get_info,
  .check = raw_check,
};
