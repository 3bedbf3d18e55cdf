/* The FUSE export: the disk appears as one regular file, mounted over FILE
 * itself (FUSE allows a file as mount point; the file system's root is the
 * disk).  A loop device over that file is a real block device, so the
 * kernel can put ext4 on a sluice disk without an nbd module.
 *
 * Every request goes to the disk handle, so filters apply.  direct_io keeps
 * the kernel's page cache out of the way: the NBD export may change the
 * same disk at the same time, and a cached page would go stale.
 *
 * When the disk's ownership is handed over (docs/ownership.md) the export
 * is quiesced before it stops: every request counts itself in and checks
 * a flag, so a request that arrives after the release fails with EIO
 * without touching the disk, and the release waits for the ones that
 * arrived before it, which get their real result -- a write the kernel
 * saw acknowledged is on the disk the next owner opens. */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "export/export.h"

struct sl_fuse_export {
  struct sl_handle *h;
  bool read_only;
  char *file;
  bool created;          /* FILE did not exist: remove it at stop */
  struct fuse *fuse;
  pthread_t thread;
  bool running;
  uid_t uid;
  gid_t gid;
  time_t started;         /* shown as the file's times */
  atomic_bool released;   /* quiesced: new requests fail with EIO */
  atomic_int in_flight;   /* requests between enter() and leave() */
};

static struct sl_fuse_export *export_of_context(void)
{
  return fuse_get_context()->private_data;
}

static void *fx_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  (void)conn;
  cfg->direct_io = 1;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->use_ino = 1;
  return export_of_context();
}

static int fx_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
  (void)fi;
  struct sl_fuse_export *fx = export_of_context();
  if (strcmp(path, "/") != 0)
    return -ENOENT;
  memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | (fx->read_only ? 0444 : 0644);
  st->st_nlink = 1;
  st->st_uid = fx->uid;
  st->st_gid = fx->gid;
  st->st_atime = st->st_mtime = st->st_ctime = fx->started;
  st->st_size = (off_t)sl_disk_size(fx->h);
  st->st_blksize = 4096;
  st->st_blocks = (blkcnt_t)SL_DIV_ROUND_UP(sl_disk_size(fx->h), 512);
  return 0;
}

static int fx_open(const char *path, struct fuse_file_info *fi)
{
  struct sl_fuse_export *fx = export_of_context();
  if (strcmp(path, "/") != 0)
    return -ENOENT;
  if (fx->read_only && (fi->flags & O_ACCMODE) != O_RDONLY)
    return -EROFS;
  fi->direct_io = 1;
  return 0;
}

/* Clip a request at the end of the disk, as a regular file would. */
/* Count a request in, then look at the flag; quiesce sets the flag, then
 * waits for the count: both sequentially consistent, so either the
 * quiesce waits for this request or this request sees the flag. */
static int enter(struct sl_fuse_export *fx)
{
  atomic_fetch_add(&fx->in_flight, 1);
  if (atomic_load(&fx->released)) {
    atomic_fetch_sub(&fx->in_flight, 1);
    return -EIO;
  }
  return 0;
}

static int leave(struct sl_fuse_export *fx, int r)
{
  atomic_fetch_sub(&fx->in_flight, 1);
  return r;
}

void sl_fuse_export_quiesce(struct sl_fuse_export *fx)
{
  if (!fx)
    return;
  atomic_store(&fx->released, true);
  while (atomic_load(&fx->in_flight) > 0)
    usleep(200);
}

static size_t clip(struct sl_fuse_export *fx, size_t len, off_t off)
{
  uint64_t size = sl_disk_size(fx->h);
  if (off < 0 || (uint64_t)off >= size)
    return 0;
  return (size_t)SL_MIN((uint64_t)len, size - (uint64_t)off);
}

static int fx_read(const char *path, char *buf, size_t len, off_t off,
                   struct fuse_file_info *fi)
{
  (void)path;
  (void)fi;
  struct sl_fuse_export *fx = export_of_context();
  len = clip(fx, len, off);
  if (len == 0)
    return 0;
  if (enter(fx) < 0)
    return -EIO;
  int r = sl_disk_pread(fx->h, buf, len, (uint64_t)off, 0);
  return leave(fx, r < 0 ? r : (int)len);
}

static int fx_write(const char *path, const char *buf, size_t len, off_t off,
                    struct fuse_file_info *fi)
{
  (void)path;
  struct sl_fuse_export *fx = export_of_context();
  if (fx->read_only)
    return -EROFS;
  size_t n = clip(fx, len, off);
  if (n < len && n == 0)
    return -ENOSPC; /* a disk does not grow */
  uint32_t flags = (fi && (fi->flags & O_DSYNC)) ? SL_FUA : 0;
  if (enter(fx) < 0)
    return -EIO;
  int r = sl_disk_pwrite(fx->h, buf, n, (uint64_t)off, flags);
  return leave(fx, r < 0 ? r : (int)n);
}

static int fx_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
  (void)path;
  (void)datasync;
  (void)fi;
  struct sl_fuse_export *fx = export_of_context();
  if (fx->read_only)
    return 0;
  if (enter(fx) < 0)
    return -EIO;
  return leave(fx, sl_disk_flush(fx->h));
}

static int fx_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
  (void)path;
  (void)fi;
  struct sl_fuse_export *fx = export_of_context();
  if (fx->read_only)
    return -EROFS;
  uint64_t size = sl_disk_size(fx->h);
  if (off < 0 || len <= 0 || (uint64_t)off > size || (uint64_t)len > size - (uint64_t)off)
    return (mode & FALLOC_FL_KEEP_SIZE) || mode == 0 ? -ENOSPC : -EINVAL;
  bool punch = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  if (punch || mode == FALLOC_FL_ZERO_RANGE ||
      mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
    if (enter(fx) < 0)
      return -EIO;
    return leave(fx, punch ? sl_disk_discard(fx->h, (uint64_t)off, (uint64_t)len)
                           : sl_disk_write_zeroes(fx->h, (uint64_t)off,
                                                  (uint64_t)len, SL_NO_HOLE));
  }
  if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE)
    return 0; /* the range exists already */
  return -EOPNOTSUPP;
}

static int fx_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
  (void)path;
  (void)fi;
  struct sl_fuse_export *fx = export_of_context();
  /* O_TRUNC opens and "truncate to the current size" are harmless. */
  return (uint64_t)size == sl_disk_size(fx->h) ? 0 : -EINVAL;
}

static const struct fuse_operations fx_ops = {
  .init = fx_init,
  .getattr = fx_getattr,
  .open = fx_open,
  .read = fx_read,
  .write = fx_write,
  .fsync = fx_fsync,
  .fallocate = fx_fallocate,
  .truncate = fx_truncate,
};

static void *loop_main(void *opaque)
{
  struct sl_fuse_export *fx = opaque;
  fuse_loop_mt(fx->fuse, 0);
  return NULL;
}

int sl_fuse_export_start(struct sl_handle *h, const char *file, bool read_only,
                         struct sl_fuse_export **out)
{
  struct sl_fuse_export *fx = calloc(1, sizeof *fx);
  if (!fx)
    return sl_error(ENOMEM, "out of memory");
  fx->h = h;
  fx->read_only = read_only || sl_disk_read_only(h);
  fx->uid = getuid();
  fx->gid = getgid();
  fx->started = time(NULL);
  fx->file = realpath(file, NULL);
  if (!fx->file) {
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      int e = errno;
      free(fx);
      return sl_error(e, "%s: cannot create the mount point: %s", file, strerror(e));
    }
    close(fd);
    fx->created = true;
    fx->file = realpath(file, NULL);
  }
  struct stat st;
  if (!fx->file || stat(fx->file, &st) < 0 || !S_ISREG(st.st_mode)) {
    sl_fuse_export_stop(fx);
    return sl_error(EINVAL, "%s: the FUSE export needs a regular file", file);
  }
  char *argv[] = {"sluice", "-o", "default_permissions", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  fx->fuse = fuse_new(&args, &fx_ops, sizeof fx_ops, fx);
  fuse_opt_free_args(&args);
  if (!fx->fuse) {
    sl_fuse_export_stop(fx);
    return sl_error(EIO, "%s: cannot set up FUSE", file);
  }
  if (fuse_mount(fx->fuse, fx->file) != 0) {
    fuse_destroy(fx->fuse);
    fx->fuse = NULL;
    sl_fuse_export_stop(fx);
    return sl_error(EIO, "%s: FUSE mount failed (is /dev/fuse available?)", file);
  }
  if (pthread_create(&fx->thread, NULL, loop_main, fx) != 0) {
    fuse_unmount(fx->fuse);
    fuse_destroy(fx->fuse);
    fx->fuse = NULL;
    sl_fuse_export_stop(fx);
    return sl_error(EAGAIN, "%s: cannot start the FUSE thread", file);
  }
  fx->running = true;
  *out = fx;
  return 0;
}

void sl_fuse_export_stop(struct sl_fuse_export *fx)
{
  if (!fx)
    return;
  if (fx->running) {
    fuse_exit(fx->fuse);
    /* Detach the mount first: once nothing uses it, the kernel ends the
     * connection and the loop's threads leave their reads with ENODEV
     * while the device descriptor is still open.  fuse_unmount closes that
     * descriptor, and closing it under threads that read it is a race (on
     * the descriptor's number).  If something still holds the file -- a
     * loop device, say -- the loop would go on serving it, so after a
     * second fall back to closing the descriptor under the loop. */
    bool joined = false;
    if (umount2(fx->file, MNT_DETACH) == 0) {
      struct timespec deadline;
      clock_gettime(CLOCK_REALTIME, &deadline);
      deadline.tv_sec += 1;
      joined = pthread_timedjoin_np(fx->thread, NULL, &deadline) == 0;
    }
    fuse_unmount(fx->fuse); /* closes the descriptor; wakes the loop if it still runs */
    if (!joined)
      pthread_join(fx->thread, NULL);
    fuse_destroy(fx->fuse);
  }
  if (fx->created && fx->file)
    unlink(fx->file);
  free(fx->file);
  free(fx);
}
