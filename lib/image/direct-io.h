/* File I/O for image drivers, honouring O_DIRECT (cache=none/directsync):
 * one copy of the bounce-buffer and read-modify-write rule, shared by the
 * raw and qcow2 drivers (issue 12, item 5). */
#ifndef SLUICE_IMAGE_DIRECT_IO_H
#define SLUICE_IMAGE_DIRECT_IO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "image/driver.h"

/* The alignment O_DIRECT asks of buffers, offsets and lengths. */
#define SL_DIRECT_ALIGN 4096u

/* Through an aligned superset of the range (sl_image_io_read). */
int sl_image_io_read_bounced(struct sl_image *img, void *buf, size_t len,
                             uint64_t off);

/* Read LEN bytes at OFF of IMG's file.  Without O_DIRECT, or when all is
 * aligned, a plain full pread; otherwise through an aligned superset of
 * the range.  0 or -errno (no message: the driver names the request).
 * Inline: the buffered read is every request's path, and the call layers
 * this rule's move added cost about 65 instructions per 4K read (issue 12,
 * docs/benchmarks.md). */
static inline int sl_image_io_read(struct sl_image *img, void *buf, size_t len,
                                   uint64_t off)
{
  if (!img->direct ||
      (((uintptr_t)buf | len | off) & (SL_DIRECT_ALIGN - 1)) == 0)
    return sl_pread_full(img->fd, buf, len, off);
  return sl_image_io_read_bounced(img, buf, len, off);
}

/* Write LEN bytes at OFF.  Unaligned under O_DIRECT: the aligned superset
 * is read, patched and written back under RMW_LOCK, so two partial writes
 * to one block never lose each other's bytes; only the first and last
 * blocks are read from the file, and only when the range leaves part of
 * them.  A superset reaching past FILE_END (the end of a file whose size
 * is not a multiple of the alignment, which O_DIRECT cannot write without
 * growing it) is written through a buffered descriptor instead and made
 * durable; UINT64_MAX when the driver never needs that. */
int sl_image_io_write(struct sl_image *img, pthread_mutex_t *rmw_lock,
                      uint64_t file_end, const void *buf, size_t len,
                      uint64_t off);

#endif
