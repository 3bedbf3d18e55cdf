/* The host table (struct sl_filter_host): everything a filter module may
 * call in the core.  Filters link nothing of libsluice (the build links them
 * with -z defs and the sluice executable exports no symbols), so this table
 * IS the ABI in the core-to-filter direction; fields are only appended, and
 * a filter checks SL_FILTER_HOST_HAS() before using one added after the
 * version it was written for.
 *
 * disk_open lets a filter (mirror) open another disk through the public
 * disk API, like any other client of lib/disk: this file depends on
 * <sluice/disk.h> and nothing internal of lib/disk, and the disk layer
 * depends on it only for the table it hands to modules.  The cache
 * service's entries are lib/cachesvc's (cachesvc/host.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include "common/util.h"
#include "cachesvc/host.h"
#include "disk/host.h"

/* ---- another disk as a `next` (for filters such as mirror) --------------- */

struct host_disk {
  struct sl_next next;
  struct sl_disk *disk;
  struct sl_handle *h;
};

#define HD(n) ((struct host_disk *)(n))
static int64_t hd_size(struct sl_next *n) { return (int64_t)sl_disk_size(HD(n)->h); }
static int hd_can_write(struct sl_next *n) { return !sl_disk_read_only(HD(n)->h); }
static int hd_can_trim(struct sl_next *n) { return sl_disk_can_trim(HD(n)->h); }
static int hd_can_zero(struct sl_next *n) { return sl_disk_can_zero(HD(n)->h); }
static int hd_can_fua(struct sl_next *n) { return sl_disk_can_fua(HD(n)->h); }
static int hd_can_mc(struct sl_next *n) { return sl_disk_can_multi_conn(HD(n)->h); }
static int hd_pread(struct sl_next *n, void *b, size_t l, uint64_t o, uint32_t f)
{ return sl_disk_pread(HD(n)->h, b, l, o, f); }
static int hd_pwrite(struct sl_next *n, const void *b, size_t l, uint64_t o, uint32_t f)
{ return sl_disk_pwrite(HD(n)->h, b, l, o, f); }
static int hd_flush(struct sl_next *n, uint32_t f) { (void)f; return sl_disk_flush(HD(n)->h); }
static int hd_discard(struct sl_next *n, uint64_t o, uint64_t l, uint32_t f)
{ (void)f; return sl_disk_discard(HD(n)->h, o, l); }
static int hd_zero(struct sl_next *n, uint64_t o, uint64_t l, uint32_t f)
{ return sl_disk_write_zeroes(HD(n)->h, o, l, f); }
static int hd_bs(struct sl_next *n, uint64_t o, uint64_t l, struct sl_extent *e)
{ return sl_disk_block_status(HD(n)->h, o, l, e); }

static int hd_pread_batch(struct sl_next *n, struct sl_read_vec *v, unsigned c, uint32_t f)
{ return sl_disk_pread_batch(HD(n)->h, v, c, f); }

static const struct sl_next_ops host_disk_ops = {
  .struct_size = sizeof host_disk_ops,
  .get_size = hd_size, .can_write = hd_can_write, .can_trim = hd_can_trim,
  .can_zero = hd_can_zero, .can_fua = hd_can_fua, .can_multi_conn = hd_can_mc,
  .pread = hd_pread, .pwrite = hd_pwrite, .flush = hd_flush,
  .discard = hd_discard, .write_zeroes = hd_zero, .block_status = hd_bs,
  .pread_batch = hd_pread_batch,
};

static int host_disk_open(const char *path, bool ro, struct sl_next **next,
                          void **handle)
{
  struct host_disk *hd = calloc(1, sizeof *hd);
  if (!hd)
    return sl_error(ENOMEM, "out of memory");
  struct sl_disk_open_opts o = {.read_only = ro};
  int r = sl_disk_open(path, &o, &hd->disk);
  if (r < 0) {
    free(hd);
    return r;
  }
  hd->next.ops = &host_disk_ops;
  hd->h = sl_disk_top(hd->disk);
  *next = &hd->next;
  *handle = hd;
  return 0;
}

static int host_disk_close(void *handle)
{
  struct host_disk *hd = handle;
  if (!hd)
    return 0;
  int r = sl_disk_close(hd->disk);
  free(hd);
  return r;
}

static int host_parse_size(const char *what, const char *s, uint64_t *out)
{
  return sl_parse_size(what, s, out);
}

static int host_resolve_path(const struct sl_filter_env *env, const char *path,
                             char **out)
{
  *out = NULL;
  if (path[0] == '/' || !env->base_dir)
    *out = strdup(path);
  else if (asprintf(out, "%s/%s", env->base_dir, path) < 0)
    *out = NULL;
  return *out ? 0 : sl_error(ENOMEM, "out of memory");
}

const struct sl_filter_host sl_filter_host = {
  .struct_size = sizeof(struct sl_filter_host),
  .error = sl_error,
  .last_error = sl_last_error,
  .now_ns = sl_now_ns,
  .disk_open = host_disk_open,
  .disk_close = host_disk_close,
  .cache_attach = sl_cache_host_attach,
  .cache_detach = sl_cache_host_detach,
  .cache_read = sl_cache_host_read,
  .cache_invalidate = sl_cache_host_invalidate,
  .cache_stats = sl_cache_host_stats,
  .parse_size = host_parse_size,
  .resolve_path = host_resolve_path,
};
