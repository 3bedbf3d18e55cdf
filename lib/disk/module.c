/* Trusted filter modules (design mechanism 7).
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
 * outright: anyone who can write there can forge the manifest.
 *
 * Loaded modules are kept in a process-wide registry with a reference count.
 * The memfd stays open while the module is loaded: glibc recognises an
 * already loaded object by its name, and a reused descriptor number would
 * otherwise make a second module's "/proc/self/fd/N" match the first. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
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
#include "disk/module.h"
#include "cachesvc/host.h"

#define MANIFEST "MANIFEST"
#define MAX_MODULE_SIZE (256u << 20)

const char *sl_filter_dir(void)
{
  const char *d = getenv("SLUICE_FILTER_DIR");
  return d && *d ? d : SLUICE_FILTER_DIR_DEFAULT;
}

static int host_disk_open(const char *path, bool ro, struct sl_next **next,
                          void **handle);
static int host_disk_close(void *handle);

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
};

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

static bool valid_module_name(const char *s)
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
static int verified_memfd(const char *name)
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
  if (!valid_module_name(name))
    return sl_error(EINVAL, "'%s' is not a valid filter name", name);
  int mfd = verified_memfd(name);
  if (mfd < 0)
    return mfd;
  close(mfd);
  return 0;
}

/* ---- registry of loaded modules ----------------------------------------- */

struct sl_module {
  struct sl_module *next;
  char name[64];
  unsigned refs;
  int memfd;
  void *dl;
  struct sl_filter filter;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl_module *registry;

const struct sl_filter *sl_module_filter(const struct sl_module *m)
{
  return &m->filter;
}

/* dlopen the module in MFD (which it then owns, also on failure) and check
 * that it is a sluice filter called NAME. */
static int load_from_memfd(const char *name, int mfd, struct sl_module **out)
{
  char procpath[64];
  snprintf(procpath, sizeof procpath, "/proc/self/fd/%d", mfd);
  void *dl = dlopen(procpath, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    close(mfd);
    return sl_error(ENOEXEC, "filter %s: cannot load: %s", name, dlerror());
  }
  sl_filter_init_fn init = (sl_filter_init_fn)dlsym(dl, SL_FILTER_INIT_SYMBOL);
  const struct sl_filter *reg = init ? init() : NULL;
  int r = 0;
  if (!reg)
    r = sl_error(ENOEXEC, "filter %s: no %s() or it returned NULL", name,
                 SL_FILTER_INIT_SYMBOL);
  else if (reg->api_version != SL_FILTER_API_VERSION)
    r = sl_error(ENOEXEC, "filter %s: built for filter API version %u, this "
                 "sluice speaks version %u", name, reg->api_version,
                 SL_FILTER_API_VERSION);
  else if (reg->struct_size < offsetof(struct sl_filter, load))
    r = sl_error(ENOEXEC, "filter %s: registration record too short (%u "
                 "bytes)", name, reg->struct_size);
  else if (!reg->name || strcmp(reg->name, name) != 0)
    r = sl_error(ENOEXEC, "filter %s: module calls itself '%s'", name,
                 reg->name ? reg->name : "(null)");
  struct sl_module *m = r < 0 ? NULL : calloc(1, sizeof *m);
  if (r == 0 && !m)
    r = sl_error(ENOMEM, "out of memory");
  if (r == 0) {
    /* Copy what the module declares; fields it does not know stay NULL. */
    memcpy(&m->filter, reg, SL_MIN((size_t)reg->struct_size, sizeof m->filter));
    m->filter.struct_size = sizeof m->filter;
    if (m->filter.load && (r = m->filter.load(&sl_filter_host)) < 0)
      sl_error_prefix(-r, "filter %s: load", name);
  }
  if (r < 0) {
    free(m);
    dlclose(dl);
    close(mfd);
    return r;
  }
  snprintf(m->name, sizeof m->name, "%s", name);
  m->refs = 1;
  m->memfd = mfd;
  m->dl = dl;
  *out = m;
  return 0;
}

static void unload_module(struct sl_module *m)
{
  if (m->filter.unload)
    m->filter.unload();
  dlclose(m->dl);
  close(m->memfd);
  free(m);
}

static int load_module(const char *name, struct sl_module **out)
{
  int mfd = verified_memfd(name);
  return mfd < 0 ? mfd : load_from_memfd(name, mfd, out);
}

int sl_module_get(const char *name, struct sl_module **out)
{
  if (!valid_module_name(name))
    return sl_error(EINVAL, "'%s' is not a valid filter name", name);
  SCOPED_LOCK(&registry_lock);
  for (struct sl_module *m = registry; m; m = m->next)
    if (strcmp(m->name, name) == 0) {
      m->refs++;
      *out = m;
      return 0;
    }
  int r = load_module(name, out);
  if (r < 0)
    return r;
  (*out)->next = registry;
  registry = *out;
  return 0;
}

void sl_module_put(struct sl_module *m)
{
  if (!m)
    return;
  SCOPED_LOCK(&registry_lock);
  if (--m->refs > 0)
    return;
  for (struct sl_module **p = &registry; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  unload_module(m);
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
  if (!valid_module_name(name))
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
int sl_module_install(const char *src, struct sl_module_entry *entry)
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
  struct sl_module *m = NULL;
  if (mfd >= 0 && (r = load_from_memfd(name, mfd, &m)) < 0)
    r = sl_error_prefix(-r, "%s (not installed)", src);
  if (mfd < 0)
    r = mfd;
  if (r == 0)
    r = write_module_file(dir, name, m->memfd, (uint64_t)st.st_size, &e);
  if (m)
    unload_module(m);
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
  if (!valid_module_name(name))
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

/* ---- another disk as a `next` (for filters such as mirror) --------------- */

#include <sluice/disk.h>

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

static const struct sl_next_ops host_disk_ops = {
  .struct_size = sizeof host_disk_ops,
  .get_size = hd_size, .can_write = hd_can_write, .can_trim = hd_can_trim,
  .can_zero = hd_can_zero, .can_fua = hd_can_fua, .can_multi_conn = hd_can_mc,
  .pread = hd_pread, .pwrite = hd_pwrite, .flush = hd_flush,
  .discard = hd_discard, .write_zeroes = hd_zero, .block_status = hd_bs,
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
