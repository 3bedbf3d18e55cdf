/* Trusted filter modules (design mechanism 7): the manifest, verification
 * into a sealed memfd, install and remove.  Loading what was verified is
 * module.c's business; this file never dlopen()s anything itself (install
 * proves a module loads through the probe module.c hands it).
 *
 * `sluice filter install` copies a module into the module directory and
 * records its SHA-256, size, mode and owner in MANIFEST.  The loader trusts a
 * module only if all of those still match, and it closes the gap between
 * check and load: the file is read ONCE into a memfd, the memfd is sealed
 * against any change, the sealed bytes are hashed, and dlopen() is given
 * /proc/self/fd/N of that memfd.  What was verified is what runs; replacing
 * or editing the file afterwards cannot affect a loaded module.
 *
 * A directory or manifest that others than its owner may write is refused
 * outright: anyone who can write there can forge the manifest. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <sluice/error.h>
#include "common/util.h"
#include "config.h"
#include "disk/trust.h"

#define MANIFEST "MANIFEST"
#define MAX_MODULE_SIZE (256u << 20)
const char *sl_filter_dir(void)
{
  const char *d = getenv("SLUICE_FILTER_DIR");
  return d && *d ? d : SLUICE_FILTER_DIR_DEFAULT;
}


/* ---- manifest ---------------------------------------------------------- */

static int check_not_shared_writable(const char *path, bool want_dir)
{
  struct stat st;
  if (lstat(path, &st) < 0)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
    return sl_error(EPERM, "%s: not a %s", path,
                    want_dir ? "directory" : "regular file");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return sl_error(EPERM, "%s: writable by others than its owner "
                    "(mode %04o): refusing to trust filter modules there",
                    path, (unsigned)(st.st_mode & 07777));
  return 0;
}

bool sl_module_name_valid(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n >= 64)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_'))
      return false;
  return true;
}

static int read_manifest(struct sl_module_entry **out, size_t *n)
{
  const char *dir = sl_filter_dir();
  CLEANUP_FREE char *path = NULL;
  *out = NULL;
  *n = 0;
  if (asprintf(&path, "%s/" MANIFEST, dir) < 0)
    return sl_error(ENOMEM, "out of memory");
  int r = check_not_shared_writable(dir, true);
  if (r < 0)
    return r;
  CLEANUP_FCLOSE FILE *f = fopen(path, "re");
  if (!f) {
    if (errno == ENOENT)
      return 0;
    return sl_error(errno, "%s: %s", path, strerror(errno));
  }
  if ((r = check_not_shared_writable(path, false)) < 0)
    return r;
  char line[512];
  unsigned lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    if (line[0] == '#' || line[0] == '\n')
      continue;
    struct sl_module_entry e = {0};
    unsigned mode, uid, gid;
    int fields = sscanf(line, "%63s %64s %" SCNu64 " %o %u %u %" SCNu64,
                        e.name, e.sha256, &e.size, &mode, &uid, &gid, &e.ino);
    /* Six fields: a manifest from before inodes were recorded. */
    if (fields < 6 || strlen(e.sha256) != 64) {
      free(*out);
      *out = NULL;
      return sl_error(EINVAL, "%s:%u: malformed manifest line", path, lineno);
    }
    e.mode = mode;
    e.uid = uid;
    e.gid = gid;
    struct sl_module_entry *ne = realloc(*out, (*n + 1) * sizeof *ne);
    if (!ne) {
      free(*out);
      *out = NULL;
      return sl_error(ENOMEM, "out of memory");
    }
    *out = ne;
    ne[(*n)++] = e;
  }
  return 0;
}

static int write_manifest(const struct sl_module_entry *e, size_t n)
{
  const char *dir = sl_filter_dir();
  CLEANUP_FREE char *path = NULL, *tmp = NULL;
  if (asprintf(&path, "%s/" MANIFEST, dir) < 0 ||
      asprintf(&tmp, "%s/." MANIFEST ".tmp%d", dir, (int)getpid()) < 0)
    return sl_error(ENOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return sl_error(errno, "%s: %s", tmp, strerror(errno));
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    return sl_error(ENOMEM, "out of memory");
  }
  fchmod(fd, 0644);
  fprintf(f, "# sluice filter manifest: NAME SHA256 SIZE MODE UID GID INODE\n"
          "# written by `sluice filter install`; do not edit\n");
  for (size_t i = 0; i < n; i++)
    fprintf(f, "%s %s %" PRIu64 " %04o %u %u %" PRIu64 "\n", e[i].name,
            e[i].sha256, e[i].size, (unsigned)e[i].mode, (unsigned)e[i].uid,
            (unsigned)e[i].gid, e[i].ino);
  int bad = fflush(f) != 0 || fsync(fd) != 0;
  if (fclose(f) != 0 || bad || rename(tmp, path) < 0) {
    int er = errno ? errno : EIO;
    unlink(tmp);
    return sl_error(er, "%s: cannot write: %s", path, strerror(er));
  }
  return 0;
}

int sl_module_list(struct sl_module_entry **out, size_t *n)
{
  return read_manifest(out, n);
}

static void hex(const unsigned char *d, unsigned n, char *out)
{
  for (unsigned i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", d[i]);
}

static int sha256_hex(const void *data, size_t len, char out[65])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
    return sl_error(EIO, "SHA-256 failed in libcrypto");
  hex(md, mdlen, out);
  return 0;
}

static int find_entry(const char *name, struct sl_module_entry *out)
{
  struct sl_module_entry *all;
  size_t n;
  int r = read_manifest(&all, &n);
  if (r < 0)
    return r;
  r = -ENOENT;
  for (size_t i = 0; i < n; i++)
    if (strcmp(all[i].name, name) == 0) {
      *out = all[i];
      r = 0;
    }
  free(all);
  if (r < 0)
    return sl_error(ENOENT, "filter %s: not installed in %s (no manifest "
                    "entry); install it with 'sluice filter install'",
                    name, sl_filter_dir());
  return 0;
}

/* ---- verification into a sealed memfd ----------------------------------- */

/* Copy SIZE bytes of FD, read once, into a memfd sealed against any change,
 * and hash the sealed bytes: these and only these are what dlopen maps.
 * Returns the memfd or -errno. */
static int sealed_copy(const char *name, const char *path, int fd,
                       uint64_t size, char digest[65])
{
  int mfd = memfd_create(name, MFD_ALLOW_SEALING | MFD_CLOEXEC);
  if (mfd < 0)
    return sl_error(errno, "filter %s: memfd_create: %s", name, strerror(errno));
  int r = 0;
  void *map = MAP_FAILED;
  if (ftruncate(mfd, (off_t)size) < 0 ||
      (map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)) ==
          MAP_FAILED)
    r = sl_error(errno, "filter %s: memfd: %s", name, strerror(errno));
  /* One read of the file; anything appended later is simply not loaded,
   * and a file that shrank fails here. */
  size_t got = 0;
  while (r == 0 && got < size) {
    ssize_t n = pread(fd, (char *)map + got, size - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  if (map != MAP_FAILED)
    munmap(map, size);
  if (r == 0 && got != size)
    r = sl_error(EPERM, "filter %s: untrusted: %s changed size while being "
                 "read", name, path);
  if (r == 0 && fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW |
                      F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
    r = sl_error(errno, "filter %s: sealing the memfd: %s", name,
                 strerror(errno));
  if (r == 0) {
    void *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, mfd, 0);
    if (ro == MAP_FAILED)
      r = sl_error(errno, "filter %s: mmap: %s", name, strerror(errno));
    else {
      r = sha256_hex(ro, size, digest);
      munmap(ro, size);
    }
  }
  if (r < 0) {
    close(mfd);
    return r;
  }
  return mfd;
}

/* Append "; WHAT" to the list of differences DIFF (of CAP bytes). */
__attribute__((format(printf, 3, 4)))
static void note_difference(char *diff, size_t cap, const char *fmt, ...)
{
  size_t used = strlen(diff);
  if (used && used + 2 < cap) {
    memcpy(diff + used, "; ", 3);
    used += 2;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(diff + used, cap - used, fmt, ap);
  va_end(ap);
}

/* Read NAME.so once into a sealed memfd and check it against the manifest.
 * Returns the memfd (>= 0), or -errno with a message that names the module
 * and lists everything that differs from what was installed. */
int sl_trust_verified_memfd(const char *name)
{
  struct sl_module_entry e;
  int r = find_entry(name, &e);
  if (r < 0)
    return r;
  CLEANUP_FREE char *path = NULL;
  if (asprintf(&path, "%s/%s.so", sl_filter_dir(), name) < 0)
    return sl_error(ENOMEM, "out of memory");
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return sl_error(errno, "filter %s: untrusted: %s: %s", name, path,
                    errno == ELOOP ? "is a symbolic link" : strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0)
    return sl_error(errno, "filter %s: %s: %s", name, path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return sl_error(EPERM, "filter %s: untrusted: %s is not a regular file",
                    name, path);
  if (e.size == 0 || e.size > MAX_MODULE_SIZE)
    return sl_error(EPERM, "filter %s: implausible module size %" PRIu64
                    " in the manifest", name, e.size);

  char diff[1024] = "";
  if ((st.st_mode & 07777) != e.mode)
    note_difference(diff, sizeof diff, "mode is %04o, was %04o",
                    (unsigned)(st.st_mode & 07777), (unsigned)e.mode);
  if (st.st_uid != e.uid || st.st_gid != e.gid)
    note_difference(diff, sizeof diff, "owner is %u:%u, was %u:%u",
                    (unsigned)st.st_uid, (unsigned)st.st_gid,
                    (unsigned)e.uid, (unsigned)e.gid);
  if (e.ino && (uint64_t)st.st_ino != e.ino)
    note_difference(diff, sizeof diff, "the file was replaced (inode %" PRIu64
                    ", installed as inode %" PRIu64 ")",
                    (uint64_t)st.st_ino, e.ino);
  int mfd = -1;
  if ((uint64_t)st.st_size != e.size) {
    note_difference(diff, sizeof diff, "size is %" PRIu64 " bytes, was %"
                    PRIu64, (uint64_t)st.st_size, e.size);
  } else {
    char digest[65];
    if ((mfd = sealed_copy(name, path, fd, e.size, digest)) < 0)
      return mfd;
    if (strcmp(digest, e.sha256) != 0)
      note_difference(diff, sizeof diff, "content changed (SHA-256 %.16s..., "
                      "was %.16s...)", digest, e.sha256);
  }
  if (diff[0]) {
    if (mfd >= 0)
      close(mfd);
    return sl_error(EPERM, "filter %s: untrusted: %s differs from what was "
                    "installed: %s (if the change is intended, install it "
                    "again with 'sluice filter install')", name, path, diff);
  }
  return mfd;
}

int sl_module_verify(const char *name)
{
  if (!sl_module_name_valid(name))
    return sl_error(EINVAL, "'%s' is not a valid filter name", name);
  int mfd = sl_trust_verified_memfd(name);
  if (mfd < 0)
    return mfd;
  close(mfd);
  return 0;
}

/* ---- install and remove ------------------------------------------------- */

static int module_name_from_path(const char *path, char name[64])
{
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (strncmp(base, "lib", 3) == 0)
    base += 3;
  if (strncmp(base, "sluice-filter-", 14) == 0)
    base += 14;
  size_t n = strlen(base);
  if (n > 3 && strcmp(base + n - 3, ".so") == 0)
    n -= 3;
  if (n == 0 || n >= 64)
    return sl_error(EINVAL, "%s: cannot derive a filter name from the file "
                    "name", path);
  memcpy(name, base, n);
  name[n] = '\0';
  if (!sl_module_name_valid(name))
    return sl_error(EINVAL, "%s: filter name '%s' must be lower-case "
                    "letters, digits, '-' or '_'", path, name);
  return 0;
}

/* Copy the sealed module in MFD to DST (via a temporary file and rename, so
 * a reader never sees half a module) and fill E's file metadata. */
static int write_module_file(const char *dir, const char *name, int mfd,
                             uint64_t size, struct sl_module_entry *e)
{
  CLEANUP_FREE char *dst = NULL, *tmp = NULL;
  if (asprintf(&dst, "%s/%s.so", dir, name) < 0 ||
      asprintf(&tmp, "%s/.%s.so.tmp%d", dir, name, (int)getpid()) < 0)
    return sl_error(ENOMEM, "out of memory");
  void *data = mmap(NULL, size, PROT_READ, MAP_SHARED, mfd, 0);
  if (data == MAP_FAILED)
    return sl_error(errno, "filter %s: mmap: %s", name, strerror(errno));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  int r = fd < 0 ? -errno : sl_pwrite_full(fd, data, size, 0);
  munmap(data, size);
  struct stat st;
  if (r == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0 || fstat(fd, &st) < 0))
    r = -errno;
  if (fd >= 0)
    close(fd);
  if (r == 0 && rename(tmp, dst) < 0)
    r = -errno;
  if (r < 0) {
    unlink(tmp);
    return sl_error(-r, "%s: %s", dst, strerror(-r));
  }
  e->size = size;
  e->mode = st.st_mode & 07777;
  e->uid = st.st_uid;
  e->gid = st.st_gid;
  e->ino = (uint64_t)st.st_ino;   /* rename keeps the inode */
  return 0;
}

/* Install: everything that can refuse is checked before anything in the
 * module directory changes (a refused install leaves the old module
 * trusted), and the bytes installed are the bytes that were hashed and
 * test-loaded. */
int sl_trust_install(const char *src, sl_trust_probe_fn probe, struct sl_module_entry *entry)
{
  char name[64];
  int r = module_name_from_path(src, name);
  if (r < 0)
    return r;
  const char *dir = sl_filter_dir();
  if (mkdir(dir, 0755) < 0 && errno != EEXIST)
    return sl_error(errno, "%s: %s", dir, strerror(errno));
  struct sl_module_entry *all;
  size_t n;
  if ((r = read_manifest(&all, &n)) < 0)   /* also checks dir and manifest */
    return r;
  CLEANUP_CLOSE int fd = open(src, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0)
    r = sl_error(errno, "%s: %s", src, strerror(errno));
  else if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
           (uint64_t)st.st_size > MAX_MODULE_SIZE)
    r = sl_error(EINVAL, "%s: not a plausible module file", src);
  struct sl_module_entry e = {0};
  snprintf(e.name, sizeof e.name, "%s", name);
  int mfd = r < 0 ? r : sealed_copy(name, src, fd, (uint64_t)st.st_size,
                                    e.sha256);
  /* Prove it is a sluice filter called NAME by loading the sealed copy. */
  if (mfd >= 0 && (r = probe(name, mfd)) < 0)
    r = sl_error_prefix(-r, "%s (not installed)", src);
  if (mfd < 0)
    r = mfd;
  if (r == 0)
    r = write_module_file(dir, name, mfd, (uint64_t)st.st_size, &e);
  if (mfd >= 0)
    close(mfd);
  size_t i;
  for (i = 0; r == 0 && i < n && strcmp(all[i].name, name) != 0; i++)
    ;
  if (r == 0 && i == n) {
    struct sl_module_entry *na = realloc(all, (n + 1) * sizeof *na);
    if (!na)
      r = sl_error(ENOMEM, "out of memory");
    else {
      all = na;
      n++;
    }
  }
  if (r == 0) {
    all[i] = e;
    r = write_manifest(all, n);
  }
  free(all);
  if (r == 0 && entry)
    *entry = e;
  return r;
}

int sl_module_remove(const char *name)
{
  if (!sl_module_name_valid(name))
    return sl_error(EINVAL, "'%s' is not a valid filter name", name);
  struct sl_module_entry *all;
  size_t n, k = 0;
  int r = read_manifest(&all, &n);
  if (r < 0)
    return r;
  bool found = false;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(all[i].name, name) == 0)
      found = true;
    else
      all[k++] = all[i];
  }
  if (!found) {
    free(all);
    return sl_error(ENOENT, "filter %s: not installed in %s", name,
                    sl_filter_dir());
  }
  r = write_manifest(all, k);
  free(all);
  if (r < 0)
    return r;
  CLEANUP_FREE char *path = NULL;
  if (asprintf(&path, "%s/%s.so", sl_filter_dir(), name) < 0)
    return sl_error(ENOMEM, "out of memory");
  if (unlink(path) < 0 && errno != ENOENT)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  return 0;
}
