/* The disk: for now an image with no filters; the filter stack replaces
 * the body of this file (issue: the filter stack).  It already keeps the
 * public contract of disk.h: one handle at the top, range and read-only
 * checks in the core, drain with an in-flight count. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include "common/util.h"

struct sl_handle {
  struct sl_disk *disk;
};

struct sl_disk {
  struct sl_image *img;
  struct sl_handle top;
  bool read_only;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned in_flight;
  bool draining;
};

int sl_disk_open(const char *path, const struct sl_disk_open_opts *opts,
                 struct sl_disk **out)
{
  static const struct sl_disk_open_opts defaults;
  if (!opts)
    opts = &defaults;
  if (opts->n_extra_filters > 0)
    return sl_error(ENOTSUP, "%s: filters are not available yet", path);
  struct sl_disk *d = calloc(1, sizeof *d);
  if (!d)
    return sl_error(ENOMEM, "out of memory");
  struct sl_image_open_opts io = {
    .format = opts->format, .read_only = opts->read_only, .direct = opts->direct,
  };
  int r = sl_image_open(path, &io, &d->img);
  if (r < 0) {
    free(d);
    return r;
  }
  d->read_only = opts->read_only;
  d->top.disk = d;
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, NULL);
  *out = d;
  return 0;
}

int sl_disk_drain(struct sl_disk *d)
{
  pthread_mutex_lock(&d->lock);
  d->draining = true;
  while (d->in_flight > 0)
    pthread_cond_wait(&d->cond, &d->lock);
  pthread_mutex_unlock(&d->lock);
  return sl_image_flush(d->img);
}

void sl_disk_resume(struct sl_disk *d)
{
  pthread_mutex_lock(&d->lock);
  d->draining = false;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

int sl_disk_close(struct sl_disk *d)
{
  if (!d)
    return 0;
  int r = sl_disk_drain(d);
  int r2 = sl_image_close(d->img);
  pthread_cond_destroy(&d->cond);
  pthread_mutex_destroy(&d->lock);
  free(d);
  return r < 0 ? r : r2;
}

struct sl_handle *sl_disk_top(struct sl_disk *d) { return &d->top; }

struct sl_handle *sl_disk_at(struct sl_disk *d, const char *name)
{
  (void)d;
  sl_error(ENOENT, "no filter '%s' in the stack", name);
  return NULL;
}

struct sl_image *sl_disk_image(struct sl_disk *d) { return d->img; }
uint64_t sl_disk_size(struct sl_handle *h) { return sl_image_size(h->disk->img); }
bool sl_disk_read_only(struct sl_handle *h) { return h->disk->read_only; }
bool sl_disk_can_trim(struct sl_handle *h) { return !h->disk->read_only; }
bool sl_disk_can_zero(struct sl_handle *h) { return !h->disk->read_only; }
bool sl_disk_can_fua(struct sl_handle *h) { return !h->disk->read_only; }
bool sl_disk_can_multi_conn(struct sl_handle *h) { (void)h; return true; }

static int enter(struct sl_handle *h, bool write, uint64_t off, uint64_t len)
{
  struct sl_disk *d = h->disk;
  uint64_t end;
  if (write && d->read_only)
    return sl_error(EROFS, "disk is read-only");
  if (!sl_add_ok(off, len, &end) || end > sl_image_size(d->img))
    return sl_error(EINVAL, "request of %" PRIu64 " bytes at %" PRIu64
                    " is beyond the end of the disk", len, off);
  pthread_mutex_lock(&d->lock);
  while (d->draining)
    pthread_cond_wait(&d->cond, &d->lock);
  d->in_flight++;
  pthread_mutex_unlock(&d->lock);
  return 0;
}

static int leave(struct sl_handle *h, int r)
{
  struct sl_disk *d = h->disk;
  pthread_mutex_lock(&d->lock);
  if (--d->in_flight == 0)
    pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->lock);
  return r;
}

int sl_disk_pread(struct sl_handle *h, void *buf, size_t len, uint64_t off,
                  uint32_t flags)
{
  (void)flags;
  int r = enter(h, false, off, len);
  return r < 0 ? r : leave(h, sl_image_pread(h->disk->img, buf, len, off));
}

int sl_disk_pwrite(struct sl_handle *h, const void *buf, size_t len,
                   uint64_t off, uint32_t flags)
{
  int r = enter(h, true, off, len);
  return r < 0 ? r : leave(h, sl_image_pwrite(h->disk->img, buf, len, off, flags));
}

int sl_disk_flush(struct sl_handle *h)
{
  int r = enter(h, false, 0, 0);
  return r < 0 ? r : leave(h, sl_image_flush(h->disk->img));
}

int sl_disk_discard(struct sl_handle *h, uint64_t off, uint64_t len)
{
  int r = enter(h, true, off, len);
  return r < 0 ? r : leave(h, sl_image_discard(h->disk->img, off, len));
}

int sl_disk_write_zeroes(struct sl_handle *h, uint64_t off, uint64_t len,
                         uint32_t flags)
{
  int r = enter(h, true, off, len);
  return r < 0 ? r : leave(h, sl_image_write_zeroes(h->disk->img, off, len, flags));
}

int sl_disk_block_status(struct sl_handle *h, uint64_t off, uint64_t len,
                         struct sl_extent *ext)
{
  int r = enter(h, false, off, len);
  return r < 0 ? r : leave(h, sl_image_block_status(h->disk->img, off, len, ext));
}
