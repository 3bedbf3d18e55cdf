/* hangfs: a FUSE file system of one file, /disk.img (1 MiB of a pattern),
 * whose server stops answering on demand: while the control file exists,
 * every operation on disk.img waits.  For test-daemon-hang: a client may
 * pass sluiced a layer on such a file system, and the daemon's event loop
 * must keep serving everyone else while something waits for it.
 *
 *   hangfs MOUNTPOINT CONTROL_FILE [DELAY_MS]   (foreground; unmount to stop it)
 *
 * With DELAY_MS, every read also takes that long (slow storage: for
 * test-daemon-parallel-fill, whose reads must overlap).  FUSE serves
 * requests on several threads, so concurrent reads wait together.
 *
 * Attributes are never cached (timeouts 0), so fstat reaches the server. */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE (1u << 20)
static const char *control;
static unsigned delay_ms;

static void maybe_hang(void)
{
  while (access(control, F_OK) == 0)
    usleep(10000);
}

static void *hf_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  (void)conn;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  return NULL;
}

static int hf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
  (void)fi;
  memset(st, 0, sizeof *st);
  if (!strcmp(path, "/")) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp(path, "/disk.img"))
    return -ENOENT;
  maybe_hang();
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = SIZE;
  return 0;
}

static int hf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  (void)off, (void)fi, (void)flags;
  if (strcmp(path, "/"))
    return -ENOENT;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  fill(buf, "disk.img", NULL, 0, 0);
  return 0;
}

static int hf_open(const char *path, struct fuse_file_info *fi)
{
  if (strcmp(path, "/disk.img"))
    return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY)
    return -EACCES;
  maybe_hang();
  return 0;
}

static int hf_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
  (void)path, (void)fi;
  maybe_hang();
  if (delay_ms)
    usleep(delay_ms * 1000u);
  if (off >= SIZE)
    return 0;
  if (size > SIZE - (size_t)off)
    size = SIZE - (size_t)off;
  for (size_t i = 0; i < size; i++)
    buf[i] = (char)((off + (off_t)i) * 7 / 4096);
  return (int)size;
}

static int hf_flush(const char *path, struct fuse_file_info *fi)
{
  (void)path, (void)fi;
  maybe_hang();
  return 0;
}

static const struct fuse_operations ops = {
  .init = hf_init, .getattr = hf_getattr, .readdir = hf_readdir, .open = hf_open,
  .read = hf_read, .flush = hf_flush,
};

int main(int argc, char **argv)
{
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: hangfs MOUNTPOINT CONTROL_FILE [DELAY_MS]\n");
    return 2;
  }
  control = argv[2];
  if (argc == 4)
    delay_ms = (unsigned)atoi(argv[3]);
  char *fargv[] = {argv[0], "-f", "-o", "default_permissions,allow_other", argv[1], NULL};
  return fuse_main(5, fargv, &ops, NULL);
}
