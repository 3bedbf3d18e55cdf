/* Image locking compatible with QEMU's file-posix driver.
 *
 * QEMU (7.2, block/file-posix.c) describes what a user of an image file
 * does with it as two sets of permission bits: what it needs (perm) and what
 * it lets others do at the same time (shared).  Each bit i is published as a
 * one-byte shared (read) OFD lock: byte 100+i when the bit is in perm, byte
 * 200+i when the bit is NOT in shared.  A user may take bit i only if no
 * other open file description holds byte 200+i, and may refuse to share bit
 * i only if nobody holds byte 100+i.  Since every lock is a read lock, the
 * locks never block each other; conflicts are found by asking F_OFD_GETLK
 * whether a write lock on the byte would conflict.
 *
 * sluice takes the same bytes for the same access, so that sluice, qemu-img,
 * qemu-io, qemu-storage-daemon and QEMU guests refuse each other's
 * conflicting opens as QEMU refuses itself.  See docs/locking.md.
 *
 * OFD locks belong to the open file description, not the process: closing
 * another descriptor of the same file does not drop them (POSIX locks would
 * be dropped), and two opens of one file inside one process conflict like
 * two processes do.  The kernel reports the holder of an OFD lock as pid
 * -1, so the holder is found, best effort, by looking for the lock in
 * /proc/PID/fdinfo of every process we can read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <sluice/error.h>
#include "image/driver.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

static const char *perm_name(int bit)
{
  static const char *const names[] = {"consistent read", "write",
                                      "write unchanged", "resize"};
  return names[bit];
}

static int lock_byte(int fd, off_t off)
{
  struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = off,
                     .l_len = 1};
  return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 if another open file description holds a lock on byte OFF, 0 if not. */
static int byte_taken(int fd, off_t off)
{
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off,
                     .l_len = 1};
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
    return -errno;
  return fl.l_type != F_UNLCK;
}

/* Does this "lock:" line of an fdinfo file hold byte OFF of (DEV, INO)? */
static bool line_holds(const char *line, dev_t dev, ino_t ino, long long off)
{
  unsigned maj, min;
  unsigned long long i;
  long long start;
  char end[32];
  const char *p = strstr(line, "OFDLCK");
  if (!p)
    return false;
  /* "OFDLCK ADVISORY  READ -1 fe:00:10952706 100 101" */
  if (sscanf(p, "OFDLCK %*s %*s %*d %x:%x:%llu %lld %31s", &maj, &min, &i,
             &start, end) != 5)
    return false;
  if (maj != major(dev) || min != minor(dev) || i != (unsigned long long)ino)
    return false;
  long long last = strcmp(end, "EOF") == 0 ? off : atoll(end);
  return start <= off && off <= last;
}

/* Scan /proc/PID/fdinfo for a holder of byte OFF of the file FD; fills
 * WHO with "pid N (comm)" or leaves it empty. */
static void find_holder(int fd, long long off, char *who, size_t n)
{
  who[0] = '\0';
  struct stat st;
  if (fstat(fd, &st) < 0)
    return;
  DIR *proc = opendir("/proc");
  if (!proc)
    return;
  char self_fdinfo[64];
  snprintf(self_fdinfo, sizeof self_fdinfo, "%d/%d", (int)getpid(), fd);
  struct dirent *p;
  while (!who[0] && (p = readdir(proc))) {
    if (p->d_name[0] < '0' || p->d_name[0] > '9')
      continue;
    char dir[300];
    snprintf(dir, sizeof dir, "/proc/%s/fdinfo", p->d_name);
    DIR *fds = opendir(dir);
    if (!fds)
      continue;
    struct dirent *f;
    while (!who[0] && (f = readdir(fds))) {
      if (f->d_name[0] == '.')
        continue;
      char path[600];
      snprintf(path, sizeof path, "%s/%s", dir, f->d_name);
      char me[600];
      snprintf(me, sizeof me, "%s/%s", p->d_name, f->d_name);
      if (strcmp(me, self_fdinfo) == 0)
        continue; /* our own descriptor holds our own locks */
      FILE *fi = fopen(path, "re");
      if (!fi)
        continue;
      char line[256];
      while (fgets(line, sizeof line, fi)) {
        if (strncmp(line, "lock:", 5) == 0 && line_holds(line, st.st_dev,
                                                         st.st_ino, off)) {
          char comm[64] = "?";
          char cpath[300];
          snprintf(cpath, sizeof cpath, "/proc/%s/comm", p->d_name);
          FILE *c = fopen(cpath, "re");
          if (c) {
            if (fgets(comm, sizeof comm, c))
              comm[strcspn(comm, "\n")] = '\0';
            fclose(c);
          }
          snprintf(who, n, "pid %.20s, %.63s", p->d_name, comm);
          break;
        }
      }
      fclose(fi);
    }
    closedir(fds);
  }
  closedir(proc);
}

static int conflict(int fd, const char *path, bool shared, int bit, long long off)
{
  char who[400];
  find_holder(fd, off, who, sizeof who);
  return sl_error(EAGAIN, "%s: Failed to get %s\"%s\" lock: another process is "
                  "using the image (%s)%s", path, shared ? "shared " : "",
                  perm_name(bit),
                  who[0] ? who : "holder not found: OFD locks report no pid",
                  shared ? "; read-only users can pass -U (--force-share)" : "");
}

int sl_lock_byte_taken(int fd, long long off) { return byte_taken(fd, off); }

void sl_lock_holder(int fd, long long off, char *who, size_t n)
{
  find_holder(fd, off, who, n);
}

int sl_lock_fd(int fd, const char *path, unsigned perm, unsigned shared)
{
  /* Publish first, then look for conflicts, as QEMU does: of two users
   * racing, at least one sees the other. */
  for (int i = 0; i < SL_PERM_BITS; i++) {
    int r = 0;
    if (perm & (1u << i))
      r = lock_byte(fd, LOCK_PERM_BASE + i);
    if (r == 0 && !(shared & (1u << i)))
      r = lock_byte(fd, LOCK_SHARED_BASE + i);
    if (r == -EINVAL || r == -ENOLCK || r == -EOPNOTSUPP)
      return 0; /* no OFD locks on this file system: QEMU goes on too */
    if (r < 0)
      return sl_error(-r, "%s: cannot lock: %s", path, strerror(-r));
  }
  for (int i = 0; i < SL_PERM_BITS; i++) {
    int r = 0;
    if ((perm & (1u << i)) && (r = byte_taken(fd, LOCK_SHARED_BASE + i)) > 0)
      return conflict(fd, path, false, i, LOCK_SHARED_BASE + i);
    if (r == 0 && !(shared & (1u << i)) &&
        (r = byte_taken(fd, LOCK_PERM_BASE + i)) > 0)
      return conflict(fd, path, true, i, LOCK_PERM_BASE + i);
    if (r < 0)
      return sl_error(-r, "%s: cannot test locks: %s", path, strerror(-r));
  }
  return 0;
}

int sl_lock_image_fd(int fd, const char *path, enum sl_format fmt,
                     bool read_only, bool force_share)
{
  unsigned perm = SL_PERM_CONSISTENT_READ;
  /* Like qemu-io -r and like every backing file under QEMU: others may
   * read, and may rewrite with identical data, but not change or resize. */
  unsigned shared = SL_PERM_CONSISTENT_READ | SL_PERM_WRITE_UNCHANGED;
  if (force_share) {
    if (!read_only)
      return sl_error(EINVAL, "%s: force-share (-U) can only be used with "
                      "read-only opens", path);
    shared = SL_PERM_ALL;
  } else if (!read_only) {
    perm |= SL_PERM_WRITE;
    /* qcow2 grows its file; raw images are never resized by sluice. */
    if (fmt != SL_FORMAT_RAW)
      perm |= SL_PERM_RESIZE;
  }
  return sl_lock_fd(fd, path, perm, shared);
}

int sl_create_open(const char *path)
{
  /* Not O_TRUNC: the file may be an image someone uses.  As QEMU's
   * file-posix create: lock "write" and "resize" (others may not resize
   * while we do), check, and only then empty the file. */
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  int r = sl_lock_fd(fd, path, SL_PERM_WRITE | SL_PERM_RESIZE,
                     SL_PERM_ALL & ~SL_PERM_RESIZE);
  if (r == 0 && ftruncate(fd, 0) < 0)
    r = sl_error(errno, "%s: cannot truncate: %s", path, strerror(errno));
  if (r < 0) {
    close(fd);
    return r;
  }
  return fd;
}
