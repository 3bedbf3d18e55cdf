/* Image file I/O under O_DIRECT (see direct-io.h).
 *
 * The raw and qcow2 drivers each had their own copy of this, and they
 * differed: raw read the first block of every partial write even when the
 * write began on it, qcow2 did not handle a file tail shorter than a block.
 * This is the union of what each got right, written once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "image/direct-io.h"

static bool aligned(const void *buf, size_t len, uint64_t off)
{
  return (((uintptr_t)buf | len | off) & (SL_DIRECT_ALIGN - 1)) == 0;
}

/* The aligned superset [*start, *start + *blen) of [off, off + len), and a
 * bounce buffer for it. */
static int bounce(size_t len, uint64_t off, uint64_t *start, size_t *blen,
                  char **b)
{
  *start = off & ~(uint64_t)(SL_DIRECT_ALIGN - 1);
  *blen = (size_t)SL_ROUND_UP(off + len - *start, SL_DIRECT_ALIGN);
  return posix_memalign((void **)b, SL_DIRECT_ALIGN, *blen) ? -ENOMEM : 0;
}

int sl_image_io_read_bounced(struct sl_image *img, void *buf, size_t len,
                             uint64_t off)
{
  uint64_t start;
  size_t blen;
  char *b;
  if (bounce(len, off, &start, &blen, &b) < 0)
    return -ENOMEM;
  int r = sl_pread_full(img->fd, b, blen, start);
  if (r == 0)
    memcpy(buf, b + (off - start), len);
  free(b);
  return r;
}

/* Past the last whole block of the file: a buffered descriptor of the same
 * file, and fdatasync so that the write is as durable as a direct one. */
static int write_buffered(struct sl_image *img, const void *buf, size_t len,
                          uint64_t off)
{
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", img->fd);
  int fd = open(proc, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int r = sl_pwrite_full(fd, buf, len, off);
  if (r == 0 && fdatasync(fd) < 0)
    r = -errno;
  close(fd);
  return r;
}

int sl_image_io_write(struct sl_image *img, pthread_mutex_t *rmw_lock,
                      uint64_t file_end, const void *buf, size_t len,
                      uint64_t off)
{
  if (!img->direct || aligned(buf, len, off))
    return sl_pwrite_full(img->fd, buf, len, off);
  uint64_t start;
  size_t blen;
  char *b;
  if (bounce(len, off, &start, &blen, &b) < 0)
    return -ENOMEM;
  if (start + blen > file_end) {
    free(b);
    return write_buffered(img, buf, len, off);
  }
  bool head = start != off;
  bool tail = ((off + len) & (SL_DIRECT_ALIGN - 1)) != 0;
  bool partial = head || tail;
  int r = 0;
  if (partial) {
    pthread_mutex_lock(rmw_lock);
    if (head)
      r = sl_pread_full(img->fd, b, SL_DIRECT_ALIGN, start);
    /* The last block, unless it is the first and was just read. */
    if (r == 0 && tail && !(head && blen == SL_DIRECT_ALIGN))
      r = sl_pread_full(img->fd, b + blen - SL_DIRECT_ALIGN, SL_DIRECT_ALIGN,
                        start + blen - SL_DIRECT_ALIGN);
  }
  if (r == 0) {
    memcpy(b + (off - start), buf, len);
    r = sl_pwrite_full(img->fd, b, blen, start);
  }
  if (partial)
    pthread_mutex_unlock(rmw_lock);
  free(b);
  return r;
}
