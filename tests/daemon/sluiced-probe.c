/* sluiced-probe: a test client that speaks the sluiced protocol, for the
 * daemon's integration tests (tests/daemon/test-daemon-*.sh).
 *
 *   sluiced-probe SOCKET hostile FILE_A FILE_B DIR
 *       every hostile case of issue 13's acceptance item 3, each followed
 *       by a check that a well-behaved client is still served right
 *   sluiced-probe SOCKET stress FILE... -- THREADS SECONDS
 *       THREADS connections reading random ranges of the files at once,
 *       every byte compared with the file
 *   sluiced-probe SOCKET read FILE OFFSET LENGTH
 *       one read through the daemon, the bytes to stdout
 *   sluiced-probe SOCKET read-many FILE FIRST N STRIDE
 *       one READ of N entries of 4 KiB at FIRST, FIRST + STRIDE, ...; prints
 *       how many milliseconds the reply took, after checking the bytes
 *   sluiced-probe SOCKET rbd MON POOL IMAGE SNAP1 EXPORT1 SNAP2 EXPORT2 USER KEY
 *                         LIMITED_USER LIMITED_KEY
 *       RBD snapshots (REGISTER_RBD): each layer serves its own snapshot's
 *       bytes (compared with `rbd export`), forged layer numbers, monitors
 *       of a cluster the daemon was not configured for, a wrong
 *       key, an image head, missing snapshot and pool, a client whose
 *       capabilities forbid the pool, malformed and version 1 requests
 *   sluiced-probe SOCKET rbd-conns MON POOL IMAGE EXPORT FSID POOL_ID IMAGE_ID
 *                               USER:SNAP:SNAP_ID:KEY...
 *       more clients in turn than the daemon keeps Ceph connections each
 *       register and read a snapshot of their own and disconnect: none is
 *       refused for good
 *   sluiced-probe SOCKET rbd-unsupported
 *       a daemon built without librbd refuses REGISTER_RBD (ENOTSUP)
 *   sluiced-probe SOCKET stats-check
 *       STATS sanity (exit 1 if the totals contradict each other)
 *   sluiced-probe SOCKET stats-own FILE
 *       registers FILE, then STATS: this client sees the name of its own
 *       layer and of no other client's (exit 1 otherwise, or if no other
 *       client's layer was listed at all)
 *   sluiced-probe SOCKET hold-fds CONNECTIONS SECONDS
 *       CONNECTIONS clients that each leave 4 descriptors waiting in the
 *       daemon (a REGISTER message never completed), for SECONDS
 *   sluiced-probe SOCKET hang-register FUSE_FILE FILE
 *       registers FUSE_FILE (whose server hangs) twice without waiting, then
 *       checks that the daemon still serves others and refuses a third
 *       registration on that connection (EAGAIN); prints "hanging" once
 *       that is done and waits for the two replies
 *
 * Bytes are always checked against the file itself (pread), the oracle:
 * what the daemon serves must be exactly what the layer holds.  Exit 0 when
 * everything held, 1 with a message on stderr otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/call.h"
#include "common/util.h"
#include "ipc/socket.h"

static const char *sock_path;
static int failures;

#define FAIL(...)                                                            \
  do {                                                                       \
    fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__);                    \
    fprintf(stderr, __VA_ARGS__);                                            \
    fputc('\n', stderr);                                                     \
    failures++;                                                              \
  } while (0)

static void die(const char *what)
{
  fprintf(stderr, "sluiced-probe: %s: %s\n", what, sl_last_error());
  exit(1);
}

static void conn(struct sl_cs_conn *c)
{
  if (sl_cs_connect(sock_path, c) < 0)
    die("connect");
}

static int reg_layer_fd(struct sl_cs_conn *c, int fd, uint32_t flags)
{
  struct sl_cs_register_layer q = {.flags = flags};
  int r = sl_cs_call(c, SL_CS_REGISTER_LAYER, &q, sizeof q, fd, 0);
  if (r < 0)
    return r;
  const struct sl_cs_register_layer_reply *rep = sl_cs_reply_body(c);
  return (int)rep->layer;
}

static int reg_layer(struct sl_cs_conn *c, const char *path, uint32_t flags)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "sluiced-probe: %s: %s\n", path, strerror(errno));
    exit(1);
  }
  int r = reg_layer_fd(c, fd, flags);
  close(fd);
  return r;
}

static int reg_handle(struct sl_cs_conn *c, int fd, uint64_t off, uint64_t len, uint32_t rights)
{
  struct sl_cs_register_handle q = {.offset = off, .length = len, .rights = rights};
  int r = sl_cs_call(c, SL_CS_REGISTER_HANDLE, &q, sizeof q, fd, 0);
  if (r < 0)
    return r;
  const struct sl_cs_register_handle_reply *rep = sl_cs_reply_body(c);
  return (int)rep->handle;
}

/* A sealed memfd of SIZE bytes, filled with FILL, mapped at *MAP. */
static int memfd(size_t size, unsigned seals, int fill, uint8_t **map)
{
  int fd = memfd_create("probe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
    die("memfd");
  uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    die("mmap");
  memset(p, fill, size);
  if (map)
    *map = p;
  else
    munmap(p, size); /* before sealing: F_SEAL_WRITE needs no writable mapping */
  if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0) {
    fprintf(stderr, "sluiced-probe: sealing a memfd: %s\n", strerror(errno));
    exit(1);
  }
  return fd;
}

/* READ of N entries; the statuses into ST (and flags into FL if not NULL).
 * Returns the call's status. */
static int read_batch(struct sl_cs_conn *c, const struct sl_cs_read_entry *e, uint32_t n,
                      int32_t *st, uint32_t *fl)
{
  long len = sl_cs_encode_read(c->buf, SL_CS_MAX_MSG, c->version, c->next_id++, e, n);
  if (len < 0)
    return (int)len;
  int r = sl_cs_send_raw(c, c->buf, (size_t)len, -1);
  if (r < 0 || (r = sl_cs_recv_msg(c)) < 0)
    return r;
  if ((r = sl_cs_check_reply(c->buf, c->len, SL_CS_READ, n)) < 0)
    return r;
  const struct sl_cs_hdr *h = (const void *)c->buf;
  if (h->op != (SL_CS_READ | SL_CS_REPLY))
    return sl_error(EPROTO, "%s", sl_cs_error_text(c->buf, c->len));
  if (h->status < 0)
    return h->status;
  const struct sl_cs_read_result *res =
      (const void *)((const char *)sl_cs_reply_body(c) + sizeof(struct sl_cs_read_reply));
  for (uint32_t i = 0; i < n; i++) {
    st[i] = res[i].status;
    if (fl)
      fl[i] = res[i].flags;
  }
  return 0;
}

static int read1(struct sl_cs_conn *c, uint32_t layer, uint32_t handle, uint64_t foff,
                 uint64_t hoff, uint32_t len)
{
  struct sl_cs_read_entry e = {.layer = layer, .handle = handle, .file_offset = foff,
                               .handle_offset = hoff, .length = len};
  int32_t st = 0;
  int r = read_batch(c, &e, 1, &st, NULL);
  return r < 0 ? r : st;
}

/* Compare LEN bytes at P with the file at OFF (zeros past its end). */
static bool same_as_file(const char *path, uint64_t off, const uint8_t *p, size_t len)
{
  int fd = open(path, O_RDONLY);
  uint8_t *b = calloc(1, len);
  ssize_t n = pread(fd, b, len, (off_t)off);
  close(fd);
  bool ok = n >= 0 && memcmp(b, p, len) == 0;
  free(b);
  return ok;
}

/* A fresh, well-behaved client reads 16 random 64 KiB ranges of PATH and
 * gets the file's bytes. */
static void bystander(const char *path, const char *after)
{
  struct sl_cs_conn c;
  if (sl_cs_connect(sock_path, &c) < 0) {
    FAIL("after %s: a new client cannot connect: %s", after, sl_last_error());
    return;
  }
  struct stat st;
  stat(path, &st);
  uint8_t *m;
  int mfd = memfd(1 << 20, F_SEAL_SHRINK, 0, &m);
  int l = reg_layer(&c, path, 0), h = reg_handle(&c, mfd, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  close(mfd);
  if (l < 0 || h < 0) {
    FAIL("after %s: registration failed: %s", after, sl_last_error());
    sl_cs_close(&c);
    return;
  }
  for (int i = 0; i < 16; i++) {
    uint64_t off = (uint64_t)(rand() % (int)(st.st_size / 4096)) * 4096;
    int r = read1(&c, (uint32_t)l, (uint32_t)h, off, 0, 65536);
    if (r < 0 || !same_as_file(path, off, m, 65536)) {
      FAIL("after %s: read at %" PRIu64 " gave %s", after, off,
           r < 0 ? strerror(-r) : "wrong bytes");
      break;
    }
  }
  munmap(m, 1 << 20);
  sl_cs_close(&c);
}

static void expect(int got, int want, const char *what)
{
  if (got != want)
    FAIL("%s: got %d (%s), want %d (%s)", what, got, got < 0 ? strerror(-got) : "ok", want,
         want < 0 ? strerror(-want) : "ok");
}

/* The connection still answers (it was not closed by a refused request). */
static void alive(struct sl_cs_conn *c, const char *what)
{
  struct sl_cs_stats q = {0, 1};
  if (sl_cs_call(c, SL_CS_STATS, &q, sizeof q, -1, 0) < 0)
    FAIL("%s: the connection did not survive a refused request: %s", what, sl_last_error());
}

/* Limits per connection: layers and memory handles (EMFILE beyond them),
 * and the connection is still served. */
static void case_limits(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  int ids[300], n = 0, r;
  while (n < 300 && (r = reg_layer(&c, fa, 0)) > 0)
    ids[n++] = r;
  expect(r, -EMFILE, "a layer beyond the per-connection limit");
  if (n != 256)
    FAIL("%d layers registered on one connection, the limit is 256", n);
  int mfd = memfd(1 << 20, F_SEAL_SHRINK, 0, NULL);
  int hids[40], nh = 0;
  while (nh < 40 && (r = reg_handle(&c, mfd, 0, 1 << 20, SL_CS_RIGHT_WRITE)) > 0)
    hids[nh++] = r;
  expect(r, -EMFILE, "a memory handle beyond the per-connection limit");
  if (nh != 32)
    FAIL("%d memory handles registered on one connection, the limit is 32", nh);
  close(mfd);
  alive(&c, "limits");
  /* released ones make room again */
  struct sl_cs_unregister u = {.handle = (uint32_t)ids[7]};
  expect(sl_cs_call(&c, SL_CS_UNREGISTER_LAYER, &u, sizeof u, -1, 0), 0, "unregister");
  expect(reg_layer(&c, fa, 0) > 0, 1, "a layer after one was released");
  (void)hids;
  sl_cs_close(&c);
  bystander(fa, "connection limits");
}

/* A number kept after UNREGISTER names nothing, even once its slot holds a
 * new layer or memory handle. */
static void case_stale_ids(const char *fa, const char *fb)
{
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *m, *m2;
  int mfd = memfd(1 << 20, F_SEAL_SHRINK, 0, &m), mfd2 = memfd(1 << 20, F_SEAL_SHRINK, 0, &m2);
  int h = reg_handle(&c, mfd, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  int la = reg_layer(&c, fa, 0);
  expect(read1(&c, (uint32_t)la, (uint32_t)h, 0, 0, 4096), 0, "read A");
  struct sl_cs_unregister u = {.handle = (uint32_t)la};
  expect(sl_cs_call(&c, SL_CS_UNREGISTER_LAYER, &u, sizeof u, -1, 0), 0, "unregister A");
  int lb = reg_layer(&c, fb, 0);
  if (lb == la)
    FAIL("the layer registered after A's release got A's old number %d", la);
  if ((lb & 0xfff) != (la & 0xfff))
    FAIL("expected B in A's slot (numbers %#x, %#x)", la, lb);
  expect(read1(&c, (uint32_t)la, (uint32_t)h, 0, 0, 4096), -EBADF, "A's stale number");
  expect(read1(&c, (uint32_t)lb, (uint32_t)h, 0, 0, 65536), 0, "read B");
  if (!same_as_file(fb, 0, m, 65536))
    FAIL("B's number did not read B");
  /* memory handles alike */
  u.handle = (uint32_t)h;
  expect(sl_cs_call(&c, SL_CS_UNREGISTER_HANDLE, &u, sizeof u, -1, 0), 0, "unregister handle");
  int h2 = reg_handle(&c, mfd2, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  if (h2 == h)
    FAIL("a new memory handle got the released one's number %d", h);
  memset(m, 0xee, 65536);
  expect(read1(&c, (uint32_t)lb, (uint32_t)h, 0, 0, 4096), -EBADF, "a stale handle number");
  for (int i = 0; i < 4096; i++)
    if (m[i] != 0xee || m2[i] != 0) {
      FAIL("a stale handle number reached memory (byte %d)", i);
      break;
    }
  expect(read1(&c, (uint32_t)lb, (uint32_t)h2, 0, 0, 4096), 0, "read into the new handle");
  alive(&c, "stale ids");
  munmap(m, 1 << 20);
  munmap(m2, 1 << 20);
  close(mfd);
  close(mfd2);
  sl_cs_close(&c);
  bystander(fb, "stale ids");
}

/* Memory the client never allocated: refused at registration, and a hole
 * punched later is refused when its section is mapped, not filled by the
 * daemon (whose memory it would be). */
static void case_unallocated(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  int m = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m < 0 || ftruncate(m, 8 << 20) < 0 || fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
    die("memfd");
  expect(reg_handle(&c, m, 0, 8 << 20, SL_CS_RIGHT_WRITE), -EFAULT, "a sparse memfd");
  if (fallocate(m, 0, 0, 8 << 20) == 0)
    expect(reg_handle(&c, m, 0, 8 << 20, SL_CS_RIGHT_WRITE), -EFAULT,
           "a memfd only fallocated");
  uint8_t *p = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  if (p == MAP_FAILED)
    die("mmap");
  memset(p, 1, 8 << 20);
  int h = reg_handle(&c, m, 0, 8 << 20, SL_CS_RIGHT_WRITE);
  int l = reg_layer(&c, fa, 0);
  expect(h > 0, 1, "a written memfd");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 65536), 0, "read into section 0");
  if (fallocate(m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 6 << 20, 4096) < 0)
    die("punch");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 6 << 20, 4096), -EFAULT,
         "a read into a punched section");
  struct stat st;
  fstat(m, &st);
  if (st.st_blocks * 512 >= 8 << 20)
    FAIL("the punched page was allocated again (by the daemon)");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 4096, 65536, 4096), 0, "section 0 still served");
  alive(&c, "unallocated pages");
  munmap(p, 8 << 20);
  close(m);
  sl_cs_close(&c);
  bystander(fa, "unallocated pages");
}

static void case_not_memfd(const char *dir, const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  /* (not a layer file: opening one for writing would make it stale) */
  char other[4096];
  snprintf(other, sizeof other, "%s/not-a-memfd", dir);
  int f = open(other, O_RDWR | O_CREAT, 0600);
  if (f < 0 || ftruncate(f, 1 << 20) < 0)
    die("a plain file");
  expect(reg_handle(&c, f, 0, 4096, SL_CS_RIGHT_WRITE), -EINVAL, "regular file as handle");
  close(f);
  int p[2];
  if (pipe(p) < 0)
    die("pipe");
  expect(reg_handle(&c, p[0], 0, 4096, SL_CS_RIGHT_WRITE), -EINVAL, "pipe as handle");
  close(p[0]);
  close(p[1]);
  int z = open("/dev/zero", O_RDWR);
  expect(reg_handle(&c, z, 0, 4096, SL_CS_RIGHT_WRITE), -EINVAL, "/dev/zero as handle");
  close(z);
  /* a tmpfs file is shmem like a memfd, but not one */
  char shm[64];
  snprintf(shm, sizeof shm, "/dev/shm/sluiced-probe-%d", (int)getpid());
  int s = open(shm, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (s >= 0) {
    if (ftruncate(s, 1 << 20) == 0)
      expect(reg_handle(&c, s, 0, 4096, SL_CS_RIGHT_WRITE) < 0, 1, "/dev/shm file as handle");
    close(s);
    unlink(shm);
  }
  alive(&c, "not a memfd");
  sl_cs_close(&c);
  bystander(fa, "handles that are not memfds");
}

static void case_unsealed_shrunk(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  int m = memfd(1 << 20, 0, 0, NULL);
  expect(reg_handle(&c, m, 0, 4096, SL_CS_RIGHT_WRITE), -EPERM, "unsealed memfd");
  /* shrunk before registering: still unsealed, still refused; sealed only
   * against growing: refused */
  if (ftruncate(m, 4096) < 0)
    die("ftruncate");
  expect(reg_handle(&c, m, 0, 4096, SL_CS_RIGHT_WRITE), -EPERM, "shrunk unsealed memfd");
  if (fcntl(m, F_ADD_SEALS, F_SEAL_GROW) < 0)
    die("seal");
  expect(reg_handle(&c, m, 0, 4096, SL_CS_RIGHT_WRITE), -EPERM, "memfd sealed against growing");
  close(m);
  /* sealed against shrinking: the client can no longer shrink it under the
   * daemon's mappings, and the daemon writes its full range */
  uint8_t *map;
  m = memfd(4 << 20, F_SEAL_SHRINK, 0x55, &map);
  int l = reg_layer(&c, fa, 0), h = reg_handle(&c, m, 0, 4 << 20, SL_CS_RIGHT_WRITE);
  if (h < 0 || l < 0)
    FAIL("sealed memfd refused: %s", sl_last_error());
  if (ftruncate(m, 4096) == 0)
    FAIL("a memfd sealed against shrinking could be shrunk");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, (4 << 20) - 65536, 65536), 0,
         "read into the end of a sealed handle");
  if (!same_as_file(fa, 0, map + (4 << 20) - 65536, 65536))
    FAIL("bytes at the end of the handle differ from the file");
  munmap(map, 4 << 20);
  close(m);
  alive(&c, "unsealed/shrunk");
  sl_cs_close(&c);
  bystander(fa, "unsealed and shrunk handles");
}

static void case_range(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *map;
  size_t msize = 1 << 20;
  int m = memfd(msize, F_SEAL_SHRINK, 0xAA, &map);
  expect(reg_handle(&c, m, 0, msize + 1, SL_CS_RIGHT_WRITE), -EINVAL, "range past the memfd");
  expect(reg_handle(&c, m, msize, 1, SL_CS_RIGHT_WRITE), -EINVAL, "range starting at the end");
  int h = reg_handle(&c, m, 4096, 65536, SL_CS_RIGHT_WRITE);
  int l = reg_layer(&c, fa, 0);
  struct stat st;
  stat(fa, &st);
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 65536 - 100, 200), -EINVAL, "entry past the range");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 1ull << 62, 200), -EINVAL, "entry far off");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, (uint64_t)st.st_size, 0, 200), -EINVAL,
         "entry past the layer's end");
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 65536), 0, "entry filling the range");
  if (!same_as_file(fa, 0, map + 4096, 65536))
    FAIL("bytes in the range differ from the file");
  for (size_t i = 0; i < msize; i++)
    if ((i < 4096 || i >= 4096 + 65536) && map[i] != 0xAA) {
      FAIL("the daemon wrote outside the handle's range (byte %zu)", i);
      break;
    }
  munmap(map, msize);
  close(m);
  alive(&c, "out of range");
  sl_cs_close(&c);
  bystander(fa, "out-of-range requests");
}

static void case_rights(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *map;
  int m = memfd(1 << 20, F_SEAL_SHRINK, 0x11, &map);
  int l = reg_layer(&c, fa, 0);
  int h = reg_handle(&c, m, 0, 1 << 20, SL_CS_RIGHT_READ);
  if (h < 0)
    FAIL("read-only handle refused: %s", sl_last_error());
  expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 4096), -EACCES, "READ into a read-only handle");
  if (map[0] != 0x11)
    FAIL("the daemon wrote into a handle without the write right");
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", m);
  int ro = open(self, O_RDONLY);
  expect(reg_handle(&c, ro, 0, 4096, SL_CS_RIGHT_WRITE), -EACCES, "write right on an O_RDONLY memfd");
  close(ro);
  int w = memfd(1 << 20, F_SEAL_SHRINK | F_SEAL_WRITE, 0, NULL);
  expect(reg_handle(&c, w, 0, 4096, SL_CS_RIGHT_WRITE), -EPERM, "write right on a write-sealed memfd");
  close(w);
  expect(reg_handle(&c, m, 0, 4096, 0), -EINVAL, "no rights");
  munmap(map, 1 << 20);
  close(m);
  alive(&c, "rights");
  sl_cs_close(&c);
  bystander(fa, "wrong rights");
}

static void case_forged(const char *fa, const char *fb)
{
  struct sl_cs_conn a, b;
  conn(&a);
  conn(&b);
  uint8_t *ma, *mb;
  int fda = memfd(1 << 20, F_SEAL_SHRINK, 0, &ma), fdb = memfd(1 << 20, F_SEAL_SHRINK, 0, &mb);
  int la = reg_layer(&a, fa, 0), ha = reg_handle(&a, fda, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  int hb = reg_handle(&b, fdb, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  /* B names A's layer number, and numbers nobody was given */
  expect(read1(&b, (uint32_t)la, (uint32_t)hb, 0, 0, 4096), -EBADF, "another client's layer id");
  expect(read1(&b, 0, (uint32_t)hb, 0, 0, 4096), -EBADF, "layer id 0");
  expect(read1(&b, 0xffffffffu, (uint32_t)hb, 0, 0, 4096), -EBADF, "layer id 2^32-1");
  expect(read1(&b, 777, (uint32_t)hb, 0, 0, 4096), -EBADF, "layer id 777");
  expect(read1(&a, (uint32_t)la, (uint32_t)ha + 5, 0, 0, 4096), -EBADF, "forged memory handle");
  /* B's own layer 1 is B's file, whatever A's layer 1 is */
  int lb = reg_layer(&b, fb, 0);
  expect(read1(&a, (uint32_t)la, (uint32_t)ha, 0, 0, 65536), 0, "A reads its layer");
  expect(read1(&b, (uint32_t)lb, (uint32_t)hb, 0, 0, 65536), 0, "B reads its layer");
  if (!same_as_file(fa, 0, ma, 65536) || !same_as_file(fb, 0, mb, 65536))
    FAIL("a client got bytes that are not its own layer's");
  /* A's private namespace is A's alone; B's shared read of the same file is
   * still right */
  int pa = reg_layer(&a, fb, SL_CS_LAYER_PRIVATE);
  expect(read1(&a, (uint32_t)pa, (uint32_t)ha, 65536, 0, 65536), 0, "private read");
  expect(read1(&b, (uint32_t)pa, (uint32_t)hb, 65536, 0, 65536), (uint32_t)pa == (uint32_t)lb ? 0 : -EBADF,
         "another client's private layer");
  if (!same_as_file(fb, 65536, ma, 65536))
    FAIL("private layer read wrong bytes");
  /* invalidation: of one's own layer it only costs a refill; of a number
   * one was not given it names nothing */
  struct sl_cs_invalidate inv = {.layer = (uint32_t)pa, .offset = 0, .length = UINT64_MAX};
  expect(sl_cs_call(&a, SL_CS_INVALIDATE, &inv, sizeof inv, -1, 0), 0, "invalidate own layer");
  expect(read1(&a, (uint32_t)pa, (uint32_t)ha, 65536, 0, 65536), 0, "read after invalidate");
  if (!same_as_file(fb, 65536, ma, 65536))
    FAIL("wrong bytes after invalidate");
  inv.layer = 999;
  expect(sl_cs_call(&a, SL_CS_INVALIDATE, &inv, sizeof inv, -1, 0), -EBADF, "invalidate forged");
  struct sl_cs_drop dr = {.layer = 999};
  expect(sl_cs_call(&b, SL_CS_DROP, &dr, sizeof dr, -1, 0), -EBADF, "drop forged layer");
  /* unregistered numbers name nothing */
  struct sl_cs_unregister u = {.handle = (uint32_t)la};
  expect(sl_cs_call(&a, SL_CS_UNREGISTER_LAYER, &u, sizeof u, -1, 0), 0, "unregister");
  expect(read1(&a, (uint32_t)la, (uint32_t)ha, 0, 0, 4096), -EBADF, "unregistered layer id");
  expect(sl_cs_call(&a, SL_CS_UNREGISTER_LAYER, &u, sizeof u, -1, 0), -EBADF, "unregister twice");
  munmap(ma, 1 << 20);
  munmap(mb, 1 << 20);
  close(fda);
  close(fdb);
  alive(&a, "forged ids");
  alive(&b, "forged ids");
  sl_cs_close(&a);
  sl_cs_close(&b);
  bystander(fa, "forged layer ids");
}

static void write_pattern(const char *path, uint64_t off, size_t len, int v)
{
  int fd = open(path, O_WRONLY);
  if (fd < 0)
    die("open for writing");
  uint8_t *b = malloc(len);
  memset(b, v, len);
  if (pwrite(fd, b, len, (off_t)off) != (ssize_t)len)
    die("pwrite");
  free(b);
  close(fd);
}

static void case_modified(const char *dir, const char *fa)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/modified.img", dir);
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fa, path);
  if (system(cmd) != 0)
    die("cp");
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *m;
  int mfd = memfd(1 << 20, F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&c, mfd, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  /* the client holds it writable itself: refused */
  int w = open(path, O_RDWR);
  int ro = open(path, O_RDONLY);
  expect(reg_layer_fd(&c, ro, 0), -ETXTBSY, "layer the client holds open for writing");
  expect(reg_layer_fd(&c, w, 0), -ETXTBSY, "layer descriptor open for writing");
  close(w);
  int l = reg_layer_fd(&c, ro, 0);
  close(ro);
  if (l < 0)
    FAIL("read-only layer refused: %s", sl_last_error());
  for (int round = 0; round < 3; round++) {
    expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 131072), 0, "read before the change");
    expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 131072), 0, "hit before the change");
    if (!same_as_file(path, 0, m, 131072))
      FAIL("round %d: bytes before the change differ", round);
    /* change it (the open for writing breaks the daemon's lease first) */
    write_pattern(path, 4096, 65536, 0x30 + round);
    int r = read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 131072);
    if (r == 0 && !same_as_file(path, 0, m, 131072))
      FAIL("round %d: stale bytes served after the file changed", round);
    if (r != 0 && r != -ESTALE)
      FAIL("round %d: read after the change: %s", round, strerror(-r));
    /* registering again gives the new identity and the new bytes */
    l = reg_layer(&c, path, 0);
    if (l < 0) {
      FAIL("re-registering the changed file: %s", sl_last_error());
      break;
    }
    expect(read1(&c, (uint32_t)l, (uint32_t)h, 0, 0, 131072), 0, "read after re-register");
    if (!same_as_file(path, 0, m, 131072))
      FAIL("round %d: stale bytes after re-registering", round);
  }
  /* another client registering it now shares the new identity, never the old */
  struct sl_cs_conn d;
  conn(&d);
  uint8_t *m2;
  int mfd2 = memfd(1 << 20, F_SEAL_SHRINK, 0, &m2);
  int h2 = reg_handle(&d, mfd2, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  int l2 = reg_layer(&d, path, 0);
  expect(read1(&d, (uint32_t)l2, (uint32_t)h2, 0, 0, 131072), 0, "second client read");
  if (!same_as_file(path, 0, m2, 131072))
    FAIL("a second client got stale bytes");
  munmap(m, 1 << 20);
  munmap(m2, 1 << 20);
  close(mfd);
  close(mfd2);
  sl_cs_close(&c);
  sl_cs_close(&d);
  bystander(fa, "a modified layer");
}

static void case_flood(const char *fa)
{
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *m;
  int mfd = memfd(1 << 20, F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&c, mfd, 0, 1 << 20, SL_CS_RIGHT_WRITE);
  int l = reg_layer(&c, fa, 0);
  /* requests as fast as the socket takes them, never reading a reply */
  struct sl_cs_read_entry e = {.layer = (uint32_t)l, .handle = (uint32_t)h, .length = 4096};
  uint64_t msg[16];
  long n = sl_cs_encode_read(msg, sizeof msg, c.version, 1, &e, 1);
  fcntl(c.fd, F_SETFL, O_NONBLOCK);
  uint64_t sent = 0;
  time_t end = time(NULL) + 3;
  while (time(NULL) < end) {
    ssize_t k = send(c.fd, msg, (size_t)n, MSG_NOSIGNAL);
    if (k < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = c.fd, .events = POLLOUT};
      poll(&p, 1, 100);
      continue;
    }
    if (k < 0)
      break; /* the daemon gave up on us: fine */
    sent++;
  }
  fprintf(stderr, "flood: %" PRIu64 " requests sent\n", sent);
  /* while the flooder still holds its connection, others are served */
  bystander(fa, "a flood of requests (flooder connected)");
  /* a flood of registrations: refused with EMFILE at the limit, no more */
  struct sl_cs_conn r;
  conn(&r);
  int last = 0;
  for (int i = 0; i < 1100 && last >= 0; i++)
    last = reg_layer(&r, fa, 0);
  expect(last, -EMFILE, "the 1025th layer registration");
  alive(&r, "registration flood");
  munmap(m, 1 << 20);
  close(mfd);
  sl_cs_close(&c);
  sl_cs_close(&r);
  bystander(fa, "a flood of requests");
}

static void case_disconnect(const char *fb)
{
  struct stat st;
  stat(fb, &st);
  for (int i = 0; i < 20; i++) {
    struct sl_cs_conn c;
    conn(&c);
    if (i % 4 == 0) { /* drop it so that the batch really misses */
      struct sl_cs_drop d = {.flags = SL_CS_DROP_ALL};
      sl_cs_call(&c, SL_CS_DROP, &d, sizeof d, -1, 0);
    }
    uint8_t *m;
    size_t msize = 32u << 20;
    int mfd = memfd(msize, F_SEAL_SHRINK, 0, &m);
    int h = reg_handle(&c, mfd, 0, msize, SL_CS_RIGHT_WRITE);
    int l = reg_layer(&c, fb, 0);
    static struct sl_cs_read_entry e[512];
    uint32_t n = 0;
    for (uint64_t off = 0; off + 65536 <= (uint64_t)st.st_size && n < 512; off += 65536, n++)
      e[n] = (struct sl_cs_read_entry){.layer = (uint32_t)l, .handle = (uint32_t)h,
                                       .file_offset = off, .handle_offset = off,
                                       .length = 65536};
    long len = sl_cs_encode_read(c.buf, SL_CS_MAX_MSG, c.version, 99, e, n);
    sl_cs_send_raw(&c, c.buf, (size_t)len, -1);
    if (i % 2)
      usleep(200); /* sometimes mid-fill, sometimes before it starts */
    munmap(m, msize);
    close(mfd);
    sl_cs_close(&c); /* without waiting for the reply */
  }
  bystander(fb, "abrupt disconnects mid-fill");
}

static void case_garbage(const char *fa)
{
  /* not HELLO first */
  int fd = sl_ipc_connect_unix(sock_path);
  uint64_t buf[64];
  struct sl_cs_stats q = {0};
  long n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_STATS, 0, 5, &q, sizeof q);
  if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
    FAIL("send");
  char sink[4096];
  ssize_t k;
  size_t total = 0;
  while ((k = recv(fd, sink, sizeof sink, 0)) > 0)
    total += (size_t)k;
  if (total == 0)
    FAIL("no ERROR message before the close");
  close(fd);
  /* random bytes */
  for (int i = 0; i < 10; i++) {
    fd = sl_ipc_connect_unix(sock_path);
    unsigned char junk[4096];
    for (size_t j = 0; j < sizeof junk; j++)
      junk[j] = (unsigned char)rand();
    if (i % 2 == 0) { /* a valid header start, garbage after */
      struct sl_cs_hello h = {1, 1, 0};
      n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_HELLO, 0, 1, &h, sizeof h);
      memcpy(junk, buf, (size_t)n);
    }
    send(fd, junk, sizeof junk, MSG_NOSIGNAL);
    while (recv(fd, sink, sizeof sink, 0) > 0)
      ;
    close(fd);
  }
  /* an unknown version range */
  struct sl_cs_conn c;
  c.fd = sl_ipc_connect_unix(sock_path);
  c.buf = aligned_alloc(8, SL_CS_MAX_MSG);
  c.version = 0;
  c.next_id = 1;
  struct sl_cs_hello h = {5, 9, 0};
  expect(sl_cs_call(&c, SL_CS_HELLO, &h, sizeof h, -1, 0), -EPROTONOSUPPORT, "HELLO 5..9");
  sl_cs_close(&c);
  /* descriptors without a REGISTER message, and too many at once */
  conn(&c);
  int fds[8];
  for (int i = 0; i < 8; i++)
    fds[i] = open(fa, O_RDONLY);
  struct sl_cs_stats sq = {0};
  n = sl_cs_encode(buf, sizeof buf, c.version, SL_CS_STATS, 0, 5, &sq, sizeof sq);
  sl_ipc_send_fds(c.fd, buf, (size_t)n, fds, 8);
  while (recv(c.fd, sink, sizeof sink, 0) > 0)
    ;
  for (int i = 0; i < 8; i++)
    close(fds[i]);
  sl_cs_close(&c);
  /* a REGISTER without its descriptor */
  conn(&c);
  struct sl_cs_register_layer rl = {0};
  if (sl_cs_call(&c, SL_CS_REGISTER_LAYER, &rl, sizeof rl, -1, 0) != -EPROTO)
    FAIL("REGISTER_LAYER without a descriptor was not a protocol error");
  sl_cs_close(&c);
  bystander(fa, "malformed messages");
}

static int hostile(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: sluiced-probe SOCKET hostile FILE_A FILE_B DIR\n");
    return 2;
  }
  const char *fa = argv[0], *fb = argv[1], *dir = argv[2];
  srand(42);
  bystander(fa, "nothing");
  case_not_memfd(dir, fa);
  case_unsealed_shrunk(fa);
  case_range(fa);
  case_rights(fa);
  case_forged(fa, fb);
  case_modified(dir, fa);
  case_garbage(fa);
  case_disconnect(fb);
  case_flood(fa);
  case_limits(fa);
  case_stale_ids(fa, fb);
  case_unallocated(fa);
  bystander(fb, "everything");
  if (failures)
    fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}

/* ---- stress ------------------------------------------------------------ */

struct stress_arg {
  char **files;
  int nfiles;
  int seconds;
  unsigned seed;
  uint64_t reads, bad;
};

static void *stress_thread(void *opaque)
{
  struct stress_arg *a = opaque;
  struct sl_cs_conn c;
  if (sl_cs_connect(sock_path, &c) < 0) {
    a->bad++;
    return NULL;
  }
  uint8_t *m;
  size_t msize = 4u << 20;
  int mfd = memfd(msize, F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&c, mfd, 0, msize, SL_CS_RIGHT_WRITE);
  int l[16];
  uint64_t size[16];
  for (int i = 0; i < a->nfiles; i++) {
    l[i] = reg_layer(&c, a->files[i], 0);
    struct stat st;
    stat(a->files[i], &st);
    size[i] = (uint64_t)st.st_size;
    if (l[i] < 0)
      a->bad++;
  }
  time_t end = time(NULL) + a->seconds;
  while (time(NULL) < end && !a->bad) {
    struct sl_cs_read_entry e[8];
    int which[8];
    uint32_t n = 1 + rand_r(&a->seed) % 8;
    for (uint32_t i = 0; i < n; i++) {
      which[i] = (int)(rand_r(&a->seed) % (unsigned)a->nfiles);
      uint32_t len = 1 + rand_r(&a->seed) % 65536;
      uint64_t off = (uint64_t)rand_r(&a->seed) * 512 % (size[which[i]] - 1);
      e[i] = (struct sl_cs_read_entry){.layer = (uint32_t)l[which[i]], .handle = (uint32_t)h,
                                       .file_offset = off, .handle_offset = i * 65536ull,
                                       .length = len};
    }
    int32_t st[8];
    int r = read_batch(&c, e, n, st, NULL);
    if (r < 0) {
      fprintf(stderr, "stress: batch failed: %s\n", strerror(-r));
      a->bad++;
      break;
    }
    for (uint32_t i = 0; i < n; i++) {
      a->reads++;
      if (st[i] != 0 || !same_as_file(a->files[which[i]], e[i].file_offset,
                                      m + e[i].handle_offset, e[i].length)) {
        fprintf(stderr, "stress: entry %u (file %s offset %" PRIu64 " length %u): %s\n", i,
                a->files[which[i]], e[i].file_offset, e[i].length,
                st[i] ? strerror(-st[i]) : "wrong bytes");
        a->bad++;
      }
    }
  }
  munmap(m, msize);
  close(mfd);
  sl_cs_close(&c);
  return NULL;
}

static int stress(int argc, char **argv)
{
  int sep = 0;
  while (sep < argc && strcmp(argv[sep], "--"))
    sep++;
  if (sep == 0 || sep > 16 || argc - sep != 3) {
    fprintf(stderr, "usage: sluiced-probe SOCKET stress FILE... -- THREADS SECONDS\n");
    return 2;
  }
  int threads = atoi(argv[sep + 1]), seconds = atoi(argv[sep + 2]);
  pthread_t t[64];
  struct stress_arg a[64];
  if (threads < 1 || threads > 64)
    return 2;
  for (int i = 0; i < threads; i++) {
    a[i] = (struct stress_arg){argv, sep, seconds, (unsigned)i * 7919u + 1, 0, 0};
    pthread_create(&t[i], NULL, stress_thread, &a[i]);
  }
  uint64_t reads = 0, bad = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    reads += a[i].reads;
    bad += a[i].bad;
  }
  printf("stress: %d clients, %" PRIu64 " reads checked, %" PRIu64 " bad\n", threads, reads, bad);
  return bad || reads == 0 ? 1 : 0;
}

static int read_cmd(int argc, char **argv)
{
  if (argc != 3)
    return 2;
  uint64_t off = strtoull(argv[1], NULL, 0);
  uint32_t len = (uint32_t)strtoul(argv[2], NULL, 0);
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *m;
  int mfd = memfd(SL_ROUND_UP((size_t)len, 4096), F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&c, mfd, 0, len, SL_CS_RIGHT_WRITE);
  int l = reg_layer(&c, argv[0], 0);
  int r = l < 0 || h < 0 ? -EINVAL : read1(&c, (uint32_t)l, (uint32_t)h, off, 0, len);
  sl_cs_close(&c);
  close(mfd);
  if (r < 0) {
    fprintf(stderr, "sluiced-probe: read: %s\n", strerror(-r));
    return 1;
  }
  fwrite(m, 1, len, stdout);
  fflush(stdout);
  return 0;
}

static int read_many(int argc, char **argv)
{
  if (argc != 4)
    return 2;
  uint64_t first = strtoull(argv[1], NULL, 0), stride = strtoull(argv[3], NULL, 0);
  uint32_t n = (uint32_t)strtoul(argv[2], NULL, 0);
  if (n == 0 || n > 64)
    return 2;
  struct sl_cs_conn c;
  conn(&c);
  uint8_t *m;
  size_t len = (size_t)n * 4096;
  int mfd = memfd(len, F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&c, mfd, 0, len, SL_CS_RIGHT_WRITE);
  int l = reg_layer(&c, argv[0], 0);
  if (l < 0 || h < 0) {
    fprintf(stderr, "sluiced-probe: read-many: registration refused\n");
    return 1;
  }
  struct sl_cs_read_entry e[64];
  int32_t st[64];
  for (uint32_t i = 0; i < n; i++)
    e[i] = (struct sl_cs_read_entry){.layer = (uint32_t)l, .handle = (uint32_t)h,
                                     .file_offset = first + i * stride,
                                     .handle_offset = i * 4096u, .length = 4096};
  uint64_t t0 = sl_now_ns();
  int r = read_batch(&c, e, n, st, NULL);
  uint64_t ms = (sl_now_ns() - t0) / 1000000u;
  sl_cs_close(&c);
  for (uint32_t i = 0; r == 0 && i < n; i++)
    if (st[i] < 0)
      r = st[i];
    else if (!same_as_file(argv[0], e[i].file_offset, m + i * 4096u, 4096))
      r = -EIO;
  close(mfd);
  if (r < 0) {
    fprintf(stderr, "sluiced-probe: read-many: %s\n", strerror(-r));
    return 1;
  }
  printf("%llu\n", (unsigned long long)ms);
  return 0;
}

/* ---- RBD snapshots (protocol version 2) ---- */

/* The ids the client opened (what libsluice sends): the cluster's fsid,
 * the pool's and image's ids, and per snapshot name its id and size; a
 * name not among them gets an id no snapshot has. */
static struct {
  const char *fsid, *image_id;
  int64_t pool_id;
  const char *snap[2];
  uint64_t snap_id[2], size[2];
} ids;

static void rbd_req(struct sl_cs_register_rbd *q, const char *pool, const char *image,
                    const char *snap, const char *user, const char *key, const char *mon)
{
  memset(q, 0, sizeof *q);
  snprintf(q->fsid, sizeof q->fsid, "%s", ids.fsid ? ids.fsid : "unknown");
  snprintf(q->image_id, sizeof q->image_id, "%s", ids.image_id ? ids.image_id : "unknown");
  q->pool_id = ids.pool_id;
  q->snap_id = *snap ? 999999 : UINT64_MAX - 1;
  q->size = ids.size[0];
  for (int i = 0; i < 2; i++)
    if (ids.snap[i] && !strcmp(snap, ids.snap[i])) {
      q->snap_id = ids.snap_id[i];
      q->size = ids.size[i];
    }
  snprintf(q->pool, sizeof q->pool, "%s", pool);
  snprintf(q->image, sizeof q->image, "%s", image);
  snprintf(q->snap, sizeof q->snap, "%s", snap);
  snprintf(q->user, sizeof q->user, "%s", user);
  snprintf(q->key, sizeof q->key, "%s", key);
  snprintf(q->mon_host, sizeof q->mon_host, "%s", mon);
}

static int reg_rbd(struct sl_cs_conn *c, const struct sl_cs_register_rbd *q, uint64_t *size)
{
  int r = sl_cs_call(c, SL_CS_REGISTER_RBD, q, sizeof *q, -1, 0);
  if (r < 0)
    return r;
  const struct sl_cs_register_layer_reply *rep = sl_cs_reply_body(c);
  if (size)
    *size = rep->size;
  return (int)rep->layer;
}

/* LEN bytes of layer L at OFF through the daemon compared with FILE. */
static bool rbd_check_range(struct sl_cs_conn *c, uint32_t l, const char *file, uint64_t off,
                            uint32_t len, const char *what)
{
  uint8_t *m;
  int mfd = memfd(SL_ROUND_UP((size_t)len, 4096), F_SEAL_SHRINK, 0xee, &m);
  int h = reg_handle(c, mfd, 0, len, SL_CS_RIGHT_WRITE);
  int r = h < 0 ? h : read1(c, l, (uint32_t)h, off, 0, len);
  bool ok = r == 0 && same_as_file(file, off, m, len);
  if (r < 0)
    FAIL("%s: READ at %" PRIu64 ": %s", what, off, strerror(-r));
  else if (!ok)
    FAIL("%s: bytes at %" PRIu64 " differ from the snapshot's export", what, off);
  if (h >= 0) {
    struct sl_cs_unregister u = {.handle = (uint32_t)h};
    sl_cs_call(c, SL_CS_UNREGISTER_HANDLE, &u, sizeof u, -1, 0);
  }
  munmap(m, SL_ROUND_UP((size_t)len, 4096));
  close(mfd);
  return ok;
}

/*   sluiced-probe SOCKET rbd MON POOL IMAGE SNAP1 EXPORT1 SNAP2 EXPORT2 USER KEY
 *                            LIMITED_USER LIMITED_KEY FSID POOL_ID IMAGE_ID
 *                            SNAP_ID1 SNAP_ID2
 * SNAP1 and SNAP2 are snapshots of IMAGE with different bytes, EXPORT1/2
 * their `rbd export`; USER may read POOL, LIMITED_USER may not; the ids
 * are the cluster's (`ceph fsid`, the pool's, `rbd info`, `rbd snap ls`). */
static int rbd_cmd(int argc, char **argv)
{
  if (argc != 16)
    return 2;
  const char *mon = argv[0], *pool = argv[1], *image = argv[2], *s1 = argv[3],
             *x1 = argv[4], *s2 = argv[5], *x2 = argv[6], *user = argv[7], *key = argv[8],
             *luser = argv[9], *lkey = argv[10];
  struct stat xs1, xs2;
  if (stat(x1, &xs1) < 0 || stat(x2, &xs2) < 0)
    die("the exports");
  ids.fsid = argv[11];
  ids.pool_id = strtoll(argv[12], NULL, 10);
  ids.image_id = argv[13];
  ids.snap[0] = s1;
  ids.snap[1] = s2;
  ids.snap_id[0] = strtoull(argv[14], NULL, 10);
  ids.snap_id[1] = strtoull(argv[15], NULL, 10);
  ids.size[0] = (uint64_t)xs1.st_size;
  ids.size[1] = (uint64_t)xs2.st_size;
  struct sl_cs_register_rbd q;
  struct sl_cs_conn c, d;
  conn(&c);
  if (c.version < 2) {
    FAIL("the daemon speaks version %u, RBD needs 2", c.version);
    return 1;
  }
  /* Two snapshots of one image: each layer serves its own bytes. */
  uint64_t size1 = 0, size2 = 0;
  rbd_req(&q, pool, image, s1, user, key, mon);
  int l1 = reg_rbd(&c, &q, &size1);
  rbd_req(&q, pool, image, s2, user, key, mon);
  int l2 = reg_rbd(&c, &q, &size2);
  if (l1 < 0 || l2 < 0) {
    FAIL("registering the snapshots: %d %d (%s)", l1, l2, sl_last_error());
    return 1;
  }
  struct stat st;
  if (stat(x1, &st) < 0 || (uint64_t)st.st_size != size1)
    FAIL("snapshot size %" PRIu64 ", export %jd bytes", size1, (intmax_t)st.st_size);
  for (uint64_t off = 0; off + 65536 <= size1; off += size1 / 7 & ~4095ull) {
    rbd_check_range(&c, (uint32_t)l1, x1, off, 65536, "snapshot 1");
    rbd_check_range(&c, (uint32_t)l2, x2, off, 65536, "snapshot 2");
  }
  /* again: now from the cache, still each its own */
  rbd_check_range(&c, (uint32_t)l1, x1, 0, 65536, "snapshot 1 cached");
  rbd_check_range(&c, (uint32_t)l2, x2, 0, 65536, "snapshot 2 cached");
  /* a tail past the end reads zeros; a start past it is refused */
  if (size1 > 4096)
    rbd_check_range(&c, (uint32_t)l1, x1, size1 - 4096, 8192, "the tail");

  /* Another connection registers the same snapshot: shares its blocks,
   * but cannot use the first connection's numbers. */
  conn(&d);
  rbd_req(&q, pool, image, s1, user, key, mon);
  int dl = reg_rbd(&d, &q, NULL);
  if (dl < 0)
    FAIL("a second client: %s", sl_last_error());
  else
    rbd_check_range(&d, (uint32_t)dl, x1, 0, 65536, "second client");
  uint8_t *m;
  int mfd = memfd(65536, F_SEAL_SHRINK, 0, &m);
  int h = reg_handle(&d, mfd, 0, 65536, SL_CS_RIGHT_WRITE);
  for (int forged = 0; forged < 4; forged++) {
    uint32_t id = forged == 0 ? (uint32_t)l2 : forged == 1 ? (uint32_t)dl + 1
                : forged == 2 ? (uint32_t)dl + (1u << 12) : 0xfffu;
    if ((int)id == dl)
      continue;
    expect(read1(&d, id, (uint32_t)h, 0, 0, 4096), -EBADF, "a forged layer number");
  }
  munmap(m, 65536);
  close(mfd);
  alive(&d, "forged numbers");

  /* Refusals: each answered, the connection stays. */
  /* a well-formed key that is not the user's: one byte of the secret
   * changed (the first 16 characters are its type and creation time) */
  char wrong[SL_CS_RBD_KEY];
  snprintf(wrong, sizeof wrong, "%s", key);
  if (strlen(wrong) > 24)
    wrong[24] = wrong[24] == 'A' ? 'B' : 'A';
  rbd_req(&q, pool, image, s1, user, wrong, mon);
  expect(reg_rbd(&d, &q, NULL), -EACCES, "a wrong key");
  printf("wrong key: %s\n", sl_last_error());
  rbd_req(&q, pool, image, "", user, key, mon);
  expect(reg_rbd(&d, &q, NULL), -EROFS, "an image head (no snapshot)");
  printf("no snapshot: %s\n", sl_last_error());
  /* the daemon opens ids, not names: ids of nothing are stale */
  rbd_req(&q, pool, image, "no-such-snap", user, key, mon);
  expect(reg_rbd(&d, &q, NULL), -ESTALE, "a missing snapshot");
  rbd_req(&q, pool, image, s1, user, key, mon);
  q.pool_id = 99999;
  expect(reg_rbd(&d, &q, NULL), -ESTALE, "a missing pool");
  rbd_req(&q, pool, image, s1, user, key, mon);
  snprintf(q.image_id, sizeof q.image_id, "0123456789ab");
  expect(reg_rbd(&d, &q, NULL), -ESTALE, "a missing image");
  rbd_req(&q, pool, image, s1, user, key, mon);
  q.size += 4096;
  expect(reg_rbd(&d, &q, NULL), -ESTALE, "a size other than the snapshot's");
  rbd_req(&q, pool, image, s1, user, key, mon);
  snprintf(q.fsid, sizeof q.fsid, "00000000-1111-2222-3333-444444444444");
  expect(reg_rbd(&d, &q, NULL), -ESTALE, "another cluster's fsid");
  printf("stale ids: %s\n", sl_last_error());
  /* names are only shown: SNAP1's ids under SNAP2's name are SNAP1 */
  rbd_req(&q, pool, image, s1, user, key, mon);
  snprintf(q.snap, sizeof q.snap, "%s", s2);
  int ln = reg_rbd(&d, &q, NULL);
  if (ln < 0)
    FAIL("SNAP1's ids under another name: %s", sl_last_error());
  else
    rbd_check_range(&d, (uint32_t)ln, x1, 0, 65536, "SNAP1's ids under SNAP2's name");
  rbd_req(&q, pool, image, s1, luser, lkey, mon);
  expect(reg_rbd(&d, &q, NULL), -EACCES, "a client whose capabilities forbid the pool");
  printf("no capability: %s\n", sl_last_error());
  rbd_req(&q, pool, image, s1, "bad name!", key, mon);
  expect(reg_rbd(&d, &q, NULL), -EINVAL, "a client id with odd characters");
  /* Monitors of a cluster the daemon was not configured for (a client's
   * own, or nothing at all): refused before any connection is tried. */
  const char *foreign[] = {"127.0.0.1:1", "[v2:192.0.2.1:3300,v1:192.0.2.1:6789]"};
  for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
    rbd_req(&q, pool, image, s1, user, key, foreign[i]);
    expect(reg_rbd(&d, &q, NULL), -EPERM, "monitors of a cluster sluiced was not given");
  }
  printf("foreign monitors: %s\n", sl_last_error());
  alive(&d, "refused registrations");
  /* The first client is still served right. */
  rbd_check_range(&c, (uint32_t)l1, x1, 65536, 65536, "after the refusals");
  sl_cs_close(&d);

  /* Malformed: a field without its NUL ends the connection. */
  conn(&d);
  rbd_req(&q, pool, image, s1, user, key, mon);
  memset(q.image, 'x', sizeof q.image);
  expect(sl_cs_call(&d, SL_CS_REGISTER_RBD, &q, sizeof q, -1, 0), -EPROTO,
         "an unterminated image name");
  sl_cs_close(&d);
  /* ... and so does REGISTER_RBD on a version 1 connection. */
  d.fd = sl_ipc_connect_unix(sock_path);
  d.buf = aligned_alloc(8, SL_CS_MAX_MSG);
  d.version = 0;
  d.next_id = 1;
  struct sl_cs_hello hv = {1, 1, 0};
  expect(sl_cs_call(&d, SL_CS_HELLO, &hv, sizeof hv, -1, 0), 0, "HELLO 1..1");
  d.version = 1;
  rbd_req(&q, pool, image, s1, user, key, mon);
  expect(sl_cs_call(&d, SL_CS_REGISTER_RBD, &q, sizeof q, -1, 0), -EPROTO,
         "REGISTER_RBD on a version 1 connection");
  sl_cs_close(&d);
  rbd_check_range(&c, (uint32_t)l1, x1, 0, 65536, "after the protocol errors");
  sl_cs_close(&c);
  printf("rbd: %s\n", failures ? "FAILED" : "all cases held");
  return failures ? 1 : 0;
}

/*   sluiced-probe SOCKET rbd-conns MON POOL IMAGE EXPORT FSID POOL_ID IMAGE_ID
 *                                  USER:SNAP:SNAP_ID:KEY...
 * Each client in turn (more of them than the daemon keeps Ceph
 * connections, 16) registers its own snapshot of IMAGE (all with the
 * bytes of EXPORT) with its own key, reads it, and disconnects.  Each
 * snapshot stays cached; the daemon must release a client's connection
 * once the client's last registration goes all the same: else the clients
 * past the 16th are refused (EAGAIN) for good.  The release happens off
 * the event loop, soon after the disconnect: a refusal is retried for up
 * to 30 s.  Then the first client comes back and reads its snapshot, from
 * the cache, through the image its new registration opened. */
static int rbd_conns_cmd(int argc, char **argv)
{
  if (argc < 8)
    return 2;
  const char *mon = argv[0], *pool = argv[1], *image = argv[2], *x = argv[3];
  struct stat xs;
  if (stat(x, &xs) < 0 || xs.st_size < 65536)
    die("the export (64 KiB at least)");
  ids.fsid = argv[4];
  ids.pool_id = strtoll(argv[5], NULL, 10);
  ids.image_id = argv[6];
  ids.size[0] = (uint64_t)xs.st_size;
  int n = argc - 7, refused = 0;
  for (int k = 0; k <= n; k++) {
    int i = k < n ? 7 + k : 7; /* and the first once more */
    char user[SL_CS_RBD_USER], snap[SL_CS_RBD_NAME];
    unsigned long long snap_id;
    int key_at = 0;
    if (sscanf(argv[i], "%63[^:]:%127[^:]:%llu:%n", user, snap, &snap_id, &key_at) != 3 ||
        !key_at)
      return 2;
    ids.snap[0] = snap;
    ids.snap_id[0] = snap_id;
    struct sl_cs_register_rbd q;
    struct sl_cs_conn c;
    conn(&c);
    rbd_req(&q, pool, image, snap, user, argv[i] + key_at, mon);
    int l = -EAGAIN;
    for (int t = 0; t < 300 && (l = reg_rbd(&c, &q, NULL)) == -EAGAIN; t++) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (l == -EAGAIN)
      refused++;
    if (l < 0)
      FAIL("client %s (%d. of %d): %s", user, k + 1, n + 1, sl_last_error());
    else
      rbd_check_range(&c, (uint32_t)l, x, (uint64_t)k * 65536 % (xs.st_size & ~65535ull),
                      65536, user);
    sl_cs_close(&c);
  }
  printf("rbd-conns: %d clients in turn, %d refused for want of a connection\n", n + 1,
         refused);
  return failures ? 1 : 0;
}

/*   sluiced-probe SOCKET rbd-unsupported
 * A daemon built without librbd refuses REGISTER_RBD with ENOTSUP, says
 * so, and keeps the connection. */
static int rbd_unsupported(void)
{
  struct sl_cs_conn c;
  conn(&c);
  struct sl_cs_register_rbd q;
  rbd_req(&q, "rbd", "gold", "boot", "admin", "AQBz1XRlAAAAABAAdGhpcyBpcyBub3QgYSBrZXk=",
          "v2:127.0.0.1:6789");
  expect(reg_rbd(&c, &q, NULL), -ENOTSUP, "REGISTER_RBD to a daemon without librbd");
  if (!strstr(sl_last_error(), "without RBD support"))
    FAIL("the refusal does not say why: %s", sl_last_error());
  alive(&c, "a refused RBD registration");
  sl_cs_close(&c);
  return failures ? 1 : 0;
}

static int stats_check(void)
{
  struct sl_cs_conn c;
  conn(&c);
  struct sl_cs_stats q = {0, 0};
  if (sl_cs_call(&c, SL_CS_STATS, &q, sizeof q, -1, 0) < 0)
    die("stats");
  const struct sl_cs_stats_reply *s = sl_cs_reply_body(&c);
  printf("hits %" PRIu64 " misses %" PRIu64 " fills %" PRIu64 " resident %" PRIu64
         " capacity %" PRIu64 " backend %" PRIu64 " served %" PRIu64 "\n", s->total.hits,
         s->total.misses, s->total.fills, s->total.resident_blocks, s->capacity_blocks,
         s->total.backend_bytes, s->total.bytes_served);
  int bad = 0;
  if (s->total.resident_blocks > s->capacity_blocks)
    bad = printf("more resident blocks than capacity\n");
  if (s->total.fills > s->total.misses)
    bad = printf("more fills than misses\n");
  if (s->total.backend_bytes > s->total.fills * s->block_size + s->total.misses * s->block_size)
    bad = printf("backend bytes exceed what the misses can explain\n");
  sl_cs_close(&c);
  return bad ? 1 : 0;
}

static int stats_own(const char *path)
{
  struct sl_cs_conn c;
  conn(&c);
  int l = reg_layer(&c, path, 0);
  if (l < 0)
    die("register");
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  int own = 0, other = 0, bad = 0;
  uint32_t first = 0;
  while (first != UINT32_MAX) {
    struct sl_cs_stats q = {first, 0};
    if (sl_cs_call(&c, SL_CS_STATS, &q, sizeof q, -1, 0) < 0)
      die("stats");
    const struct sl_cs_stats_reply *s = sl_cs_reply_body(&c);
    const struct sl_cs_layer_stats *x = (const void *)(s + 1);
    for (uint32_t i = 0; i < s->count; i++) {
      const char *name = strrchr(x[i].path, '/');
      if (x[i].flags & SL_CS_LSTAT_OTHER) {
        other++;
        if (strchr(x[i].path, '/') || x[i].dev || x[i].ino)
          bad = printf("another client's layer %u shows %s (dev %" PRIu64 " ino %" PRIu64 ")\n",
                       x[i].index, x[i].path, x[i].dev, x[i].ino);
      } else if (name && !strcmp(name + 1, base)) {
        own++;
      } else {
        bad = printf("layer %u (%s) is listed as this client's\n", x[i].index, x[i].path);
      }
    }
    first = s->next;
  }
  printf("own %d other %d\n", own, other);
  sl_cs_close(&c);
  return bad || own != 1 || other == 0 ? 1 : 0;
}

static int hold_fds(int n, int seconds)
{
  struct sl_cs_conn *c = calloc((size_t)n, sizeof *c);
  int fds[4];
  for (int i = 0; i < 4; i++)
    fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int held = 0;
  for (int i = 0; i < n; i++) {
    if (sl_cs_connect(sock_path, &c[i]) < 0)
      break;
    /* one byte of a header, with four descriptors: they wait for REGISTER
     * messages that never come */
    if (sl_ipc_send_fds(c[i].fd, "S", 1, fds, 4) < 0)
      break;
    held++;
  }
  printf("holding %d connections\n", held);
  fflush(stdout);
  sleep((unsigned)seconds);
  return 0;
}

/* Send REGISTER_LAYER for FD with id ID, without waiting. */
static void send_register(struct sl_cs_conn *c, int fd, uint64_t id)
{
  uint64_t buf[8];
  struct sl_cs_register_layer q = {0};
  long n = sl_cs_encode(buf, sizeof buf, c->version, SL_CS_REGISTER_LAYER, 0, id, &q, sizeof q);
  if (n < 0 || sl_cs_send_raw(c, buf, (size_t)n, fd) < 0)
    die("send");
}

static int hang_register(const char *fuse_file, const char *file)
{
  struct sl_cs_conn a;
  conn(&a);
  int ff = open(fuse_file, O_RDONLY | O_CLOEXEC), f = open(file, O_RDONLY | O_CLOEXEC);
  if (ff < 0 || f < 0)
    die("open");
  printf("opened\n");
  fflush(stdout);
  /* the FUSE server starts hanging now (the script's doing, on "opened") */
  sleep(1);
  send_register(&a, ff, 101);
  send_register(&a, ff, 102);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  bystander(file, "two registrations hanging on a FUSE file");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (took > 20)
    FAIL("another client took %.1f s to be served while registrations hung", took);
  /* a third on the same connection: refused at once, not queued */
  send_register(&a, f, 103);
  if (sl_cs_recv_msg(&a) < 0)
    die("reply");
  const struct sl_cs_hdr *h = (const void *)a.buf;
  if (h->id != 103 || h->status != -EAGAIN)
    FAIL("a third registration while two hang: reply to %" PRIu64 " status %d, want 103 %d",
         h->id, h->status, -EAGAIN);
  printf("hanging\n");
  fflush(stdout);
  /* the script lets the FUSE server go: the two replies come */
  for (int i = 0; i < 2; i++) {
    if (sl_cs_recv_msg(&a) < 0)
      die("reply after the FUSE server came back");
    h = (const void *)a.buf;
    if (h->id != 101 && h->id != 102)
      FAIL("unexpected reply to %" PRIu64, h->id);
  }
  alive(&a, "after the FUSE server came back");
  sl_cs_close(&a);
  close(ff);
  close(f);
  return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: sluiced-probe SOCKET hostile|stress|read|stats-check ...\n");
    return 2;
  }
  sock_path = argv[1];
  if (!strcmp(argv[2], "hostile"))
    return hostile(argc - 3, argv + 3);
  if (!strcmp(argv[2], "rbd-unsupported"))
    return rbd_unsupported();
  if (!strcmp(argv[2], "rbd"))
    return rbd_cmd(argc - 3, argv + 3);
  if (!strcmp(argv[2], "rbd-conns"))
    return rbd_conns_cmd(argc - 3, argv + 3);
  if (!strcmp(argv[2], "stress"))
    return stress(argc - 3, argv + 3);
  if (!strcmp(argv[2], "read"))
    return read_cmd(argc - 3, argv + 3);
  if (!strcmp(argv[2], "read-many"))
    return read_many(argc - 3, argv + 3);
  if (!strcmp(argv[2], "stats-check"))
    return stats_check();
  if (!strcmp(argv[2], "stats-own") && argc == 4)
    return stats_own(argv[3]);
  if (!strcmp(argv[2], "hold-fds") && argc == 5)
    return hold_fds(atoi(argv[3]), atoi(argv[4]));
  if (!strcmp(argv[2], "hang-register") && argc == 5)
    return hang_register(argv[3], argv[4]);
  fprintf(stderr, "sluiced-probe: unknown command '%s'\n", argv[2]);
  return 2;
}
