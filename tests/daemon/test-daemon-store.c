/* Unit tests of sluiced's pieces without a socket: the block store
 * (daemon/store.c: hits, fills, single flight, eviction, invalidation, the
 * key namespace of layers, registration checks) and memory handles
 * (daemon/handles.c: which descriptors are refused, range and rights
 * checks, the bounded pool of mapped sections). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/util.h"
#include "handles.h"
#include "store.h"

static char dir[] = "/tmp/test-daemon-store.XXXXXX";

/* A file of SIZE bytes whose every 8-byte word says (SEED, offset). */
static int make_file(const char *name, size_t size, uint32_t seed, char *path)
{
  snprintf(path, 256, "%s/%s", dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  uint64_t *b = malloc(size);
  for (size_t i = 0; i < size / 8; i++)
    b[i] = (uint64_t)seed << 40 | (i * 8);
  assert_int_equal(pwrite(fd, b, size, 0), (ssize_t)size);
  free(b);
  close(fd);
  return open(path, O_RDONLY);
}

static void expect_bytes(const uint8_t *p, uint64_t off, size_t len, uint32_t seed)
{
  for (size_t i = 0; i < len; i++) {
    uint64_t at = off + i;
    uint64_t word = (uint64_t)seed << 40 | (at & ~7ull);
    uint8_t want = ((const uint8_t *)&word)[at & 7];
    if (p[i] != want)
      fail_msg("byte %zu (offset %llu) is %u, want %u", i, (unsigned long long)at, p[i], want);
  }
}

static void check_store(struct sd_store *s)
{
  char msg[256];
  if (sd_store_check(s, msg, sizeof msg) < 0)
    fail_msg("store invariant: %s", msg);
}

static void test_hits_and_fills(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 1 << 20, 4096), 0);
  char path[256];
  int fd = make_file("a", 256 << 10, 1, path);
  int err;
  struct sd_layer *l = sd_layer_register(&s, fd, false, 0, &err);
  assert_non_null(l);
  uint8_t buf[70000];
  bool hit;
  assert_int_equal(sd_store_read(&s, l, 1000, 65536, buf, &hit), 0);
  assert_false(hit);
  expect_bytes(buf, 1000, 65536, 1);
  uint64_t fills = atomic_load(&s.c.fills);
  assert_int_equal(fills, 17); /* blocks 0..16 */
  assert_int_equal(sd_store_read(&s, l, 1000, 65536, buf, &hit), 0);
  assert_true(hit);
  assert_int_equal(atomic_load(&s.c.fills), fills);
  assert_int_equal(sd_store_read_cached(&s, l, 4096, 8192, buf), 1);
  expect_bytes(buf, 4096, 8192, 1);
  assert_int_equal(sd_store_read_cached(&s, l, 200000, 100, buf), 0);
  /* the tail past the end reads as zeros; a start past it is refused */
  assert_int_equal(sd_store_read(&s, l, (256 << 10) - 10, 100, buf, &hit), 0);
  expect_bytes(buf, (256 << 10) - 10, 10, 1);
  for (int i = 10; i < 100; i++)
    assert_int_equal(buf[i], 0);
  assert_int_equal(sd_store_read(&s, l, 256 << 10, 10, buf, &hit), -EINVAL);
  check_store(&s);
  /* the same file registered again is the same layer (shared blocks) */
  struct sd_layer *l2 = sd_layer_register(&s, fd, false, 0, &err);
  assert_ptr_equal(l, l2);
  sd_layer_unregister(&s, l2);
  /* invalidation forgets blocks; reads refill them, still right */
  int64_t before = atomic_load(&s.c.resident);
  sd_store_invalidate(&s, l, 0, 8192);
  assert_int_equal(atomic_load(&s.c.resident), before - 2);
  assert_int_equal(sd_store_read(&s, l, 0, 8192, buf, &hit), 0);
  assert_false(hit);
  expect_bytes(buf, 0, 8192, 1);
  sd_store_invalidate(&s, NULL, 0, UINT64_MAX);
  assert_int_equal(atomic_load(&s.c.resident), 0);
  check_store(&s);
  sd_layer_unregister(&s, l);
  close(fd);
  sd_store_fini(&s);
}

/* Two files with the same offsets: each read returns its own file's bytes,
 * whatever the other has cached. */
static void test_layers_apart(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 64 << 10, 4096), 0); /* 16 blocks: evicts */
  char pa[256], pb[256];
  int fa = make_file("la", 128 << 10, 2, pa), fb = make_file("lb", 128 << 10, 3, pb);
  int err;
  struct sd_layer *a = sd_layer_register(&s, fa, false, 0, &err);
  struct sd_layer *b = sd_layer_register(&s, fb, false, 0, &err);
  assert_non_null(a);
  assert_non_null(b);
  assert_ptr_not_equal(a, b);
  uint8_t buf[4096];
  bool hit;
  for (int round = 0; round < 3; round++)
    for (uint64_t off = 0; off < (128 << 10); off += 4096) {
      assert_int_equal(sd_store_read(&s, a, off, 4096, buf, &hit), 0);
      expect_bytes(buf, off, 4096, 2);
      assert_int_equal(sd_store_read(&s, b, off, 4096, buf, &hit), 0);
      expect_bytes(buf, off, 4096, 3);
    }
  assert_true(atomic_load(&s.c.resident) <= 16);
  check_store(&s);
  /* a private layer of the same file has blocks of its own */
  struct sd_layer *p = sd_layer_register(&s, fa, true, 0, &err);
  assert_non_null(p);
  assert_ptr_not_equal(p, a);
  assert_int_equal(sd_store_read(&s, p, 0, 4096, buf, &hit), 0);
  assert_false(hit);
  expect_bytes(buf, 0, 4096, 2);
  sd_layer_unregister(&s, p);
  assert_true(atomic_load(&p->dead)); /* private layers die with their client */
  sd_layer_unregister(&s, a);
  sd_layer_unregister(&s, b);
  close(fa);
  close(fb);
  sd_store_fini(&s);
}

/* A layer whose size is not a block multiple: a read that crosses its end
 * gets zeros past it, never what the slot held for another layer before
 * (another client's bytes). */
static void test_tail_zeros(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 64 << 10, 4096), 0); /* 16 blocks */
  char pa[256], pb[256];
  size_t bsize = 8 * 4096 + 120;
  int fa = make_file("ta", 256 << 10, 4, pa), fb = make_file("tb", bsize, 5, pb);
  int err;
  struct sd_layer *a = sd_layer_register(&s, fa, false, 0, &err);
  struct sd_layer *b = sd_layer_register(&s, fb, false, 0, &err);
  assert_non_null(a);
  assert_non_null(b);
  uint8_t buf[4096], zeros[4096] = {0};
  bool hit;
  for (int round = 0; round < 4; round++) {
    /* every slot now holds A's bytes (none of them a whole zero page) */
    for (uint64_t off = 0; off < (256 << 10); off += 4096)
      assert_int_equal(sd_store_read(&s, a, off, 4096, buf, &hit), 0);
    memset(buf, 0xa5, sizeof buf);
    assert_int_equal(sd_store_read(&s, b, 8 * 4096, 4096, buf, &hit), 0);
    expect_bytes(buf, 8 * 4096, 120, 5);
    if (memcmp(buf + 120, zeros, 4096 - 120))
      fail_msg("round %d: bytes past the end of a %zu-byte layer are not zeros", round, bsize);
    /* and from the cache, straight after */
    memset(buf, 0xa5, sizeof buf);
    assert_int_equal(sd_store_read(&s, b, 8 * 4096 + 100, 3000, buf, &hit), 0);
    expect_bytes(buf, 8 * 4096 + 100, 20, 5);
    if (memcmp(buf + 20, zeros, 3000 - 20))
      fail_msg("round %d: cached bytes past the end are not zeros", round);
  }
  check_store(&s);
  sd_layer_unregister(&s, a);
  sd_layer_unregister(&s, b);
  close(fa);
  close(fb);
  sd_store_fini(&s);
}

static void test_register_refusals(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 1 << 20, 4096), 0);
  char path[256];
  int fd = make_file("r", 8192, 4, path);
  int err;
  /* open for writing */
  int w = open(path, O_RDWR);
  assert_null(sd_layer_register(&s, w, false, 0, &err));
  assert_int_equal(err, -ETXTBSY);
  /* a read-only descriptor while another writer holds the file: the
   * lease cannot be had */
  assert_null(sd_layer_register(&s, fd, false, 0, &err));
  assert_int_equal(err, -ETXTBSY);
  close(w);
  /* not a file */
  int d = open(dir, O_RDONLY | O_DIRECTORY);
  assert_null(sd_layer_register(&s, d, false, 0, &err));
  assert_int_equal(err, -EINVAL);
  close(d);
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  assert_null(sd_layer_register(&s, pfd[0], false, 0, &err));
  assert_int_equal(err, -EINVAL);
  close(pfd[0]);
  close(pfd[1]);
  /* O_PATH names the file without the right to read it */
  int op = open(path, O_PATH);
  assert_null(sd_layer_register(&s, op, false, 0, &err));
  assert_int_equal(err, -EBADF);
  close(op);
  /* now nobody writes: accepted, with a lease */
  struct sd_layer *l = sd_layer_register(&s, fd, false, 0, &err);
  assert_non_null(l);
  assert_true(l->lease);
  sd_layer_unregister(&s, l);
  close(fd);
  sd_store_fini(&s);
}

struct racer {
  struct sd_store *s;
  struct sd_layer *l;
  pthread_barrier_t *bar;
  int ret;
};

static void *race(void *opaque)
{
  struct racer *r = opaque;
  uint8_t buf[4096];
  bool hit;
  pthread_barrier_wait(r->bar);
  r->ret = sd_store_read(r->s, r->l, 8192, 4096, buf, &hit);
  if (r->ret == 0)
    expect_bytes(buf, 8192, 4096, 5);
  return NULL;
}

static void test_single_flight(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 1 << 20, 4096), 0);
  char path[256];
  int fd = make_file("sf", 64 << 10, 5, path);
  int err;
  struct sd_layer *l = sd_layer_register(&s, fd, false, 0, &err);
  assert_non_null(l);
  enum { N = 8 };
  pthread_t t[N];
  struct racer r[N];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, N);
  for (int i = 0; i < N; i++) {
    r[i] = (struct racer){&s, l, &bar, -1};
    pthread_create(&t[i], NULL, race, &r[i]);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(r[i].ret, 0);
  }
  assert_int_equal(atomic_load(&s.c.fills), 1);
  assert_int_equal(atomic_load(&s.c.backend_bytes), 4096);
  check_store(&s);
  sd_layer_unregister(&s, l);
  close(fd);
  sd_store_fini(&s);
}

static int make_memfd(size_t size, unsigned seals)
{
  int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  /* every page written: the daemon refuses pages a client never allocated */
  static const uint8_t zero[65536];
  for (size_t off = 0; off < size; off += sizeof zero)
    assert_true(pwrite(fd, zero, SL_MIN(sizeof zero, size - off), (off_t)off) > 0);
  if (seals)
    assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
  return fd;
}

static void test_handles(void **state)
{
  struct sd_handle *h;
  char path[256];
  int f = make_file("notmemfd", 4096, 6, path);
  assert_int_equal(sd_handle_create(f, 0, 4096, SL_CS_RIGHT_WRITE, &h), -EINVAL);
  close(f);
  int m = make_memfd(1 << 20, 0);
  assert_int_equal(sd_handle_create(m, 0, 4096, SL_CS_RIGHT_WRITE, &h), -EPERM);
  close(m);
  m = make_memfd(1 << 20, F_SEAL_SHRINK | F_SEAL_WRITE);
  assert_int_equal(sd_handle_create(m, 0, 4096, SL_CS_RIGHT_WRITE, &h), -EPERM);
  close(m);
  m = make_memfd(1 << 20, F_SEAL_SHRINK);
  assert_int_equal(sd_handle_create(m, 0, (1 << 20) + 1, SL_CS_RIGHT_WRITE, &h), -EINVAL);
  assert_int_equal(sd_handle_create(m, 4096, 1 << 20, SL_CS_RIGHT_WRITE, &h), -EINVAL);
  assert_int_equal(sd_handle_create(m, 0, 4096, 0, &h), -EINVAL);
  /* a read-only descriptor of the memfd cannot carry the write right */
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", m);
  int ro = open(self, O_RDONLY);
  assert_int_equal(sd_handle_create(ro, 0, 4096, SL_CS_RIGHT_WRITE, &h), -EACCES);
  close(ro);
  close(m);
  /* pages the client never allocated, or only fallocated (shmem: not yet
   * written), would be charged to the daemon when it writes them */
  m = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_int_equal(ftruncate(m, 1 << 20), 0);
  assert_int_equal(fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK), 0);
  assert_int_equal(sd_handle_create(m, 0, 1 << 20, SL_CS_RIGHT_WRITE, &h), -EFAULT);
  assert_int_equal(fallocate(m, 0, 0, 1 << 20), 0);
  assert_int_equal(sd_handle_create(m, 0, 1 << 20, SL_CS_RIGHT_WRITE, &h), -EFAULT);
  static const uint8_t one[8192] = {1};
  assert_int_equal(pwrite(m, one, sizeof one, 0), (ssize_t)sizeof one);
  assert_int_equal(sd_handle_create(m, 0, 8192, SL_CS_RIGHT_WRITE, &h), 0); /* written */
  assert_int_equal(sd_handle_create(m, 0, 8193, SL_CS_RIGHT_WRITE, &h), -EFAULT);
  struct sd_maps maps;
  assert_int_equal(sd_maps_init(&maps, 8), 0);
  sd_handle_destroy(&maps, h); /* closes m */
  sd_maps_fini(&maps);
}

static void test_sections(void **state)
{
  struct sd_maps maps;
  assert_int_equal(sd_maps_init(&maps, 8), 0);
  size_t size = 40u << 20;
  int m = make_memfd(size, F_SEAL_SHRINK);
  uint8_t *view = mmap(NULL, size, PROT_READ, MAP_SHARED, m, 0);
  assert_true(view != MAP_FAILED);
  struct sd_handle *h, *r;
  assert_int_equal(sd_handle_create(m, 4096, size - 8192, SL_CS_RIGHT_WRITE, &h), 0);
  int m2 = make_memfd(1 << 20, F_SEAL_SHRINK);
  assert_int_equal(sd_handle_create(m2, 0, 1 << 20, SL_CS_RIGHT_READ, &r), 0);
  struct sd_map *mp;
  int err;
  /* rights and range */
  assert_null(sd_handle_get(&maps, r, 0, 10, SL_CS_RIGHT_WRITE, &mp, &err));
  assert_int_equal(err, -EACCES);
  assert_null(sd_handle_get(&maps, h, size - 8192 - 10, 11, SL_CS_RIGHT_WRITE, &mp, &err));
  assert_int_equal(err, -EINVAL);
  assert_null(sd_handle_get(&maps, h, UINT64_MAX - 5, 10, SL_CS_RIGHT_WRITE, &mp, &err));
  assert_int_equal(err, -EINVAL);
  /* a piece never crosses a section */
  assert_int_equal(sd_handle_piece(h, (2 << 20) - 4096 - 100, 1000), 100);
  /* a hole punched before its section is mapped: refused, not faulted in */
  assert_int_equal(fallocate(m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 30 << 20, 4096), 0);
  assert_null(sd_handle_get(&maps, h, (30 << 20) - 4096, 4096, SL_CS_RIGHT_WRITE, &mp, &err));
  assert_int_equal(err, -EFAULT);
  assert_int_equal(pwrite(m, view, 4096, 30 << 20), 4096); /* the client allocates it */
  /* write through every section (more than the pool holds), twice */
  for (int pass = 0; pass < 2; pass++)
    for (uint64_t off = 0; off + 4096 <= size - 8192; off += 1 << 20) {
      uint32_t n = sd_handle_piece(h, off, 4096);
      uint8_t *p = sd_handle_get(&maps, h, off, n, SL_CS_RIGHT_WRITE, &mp, &err);
      assert_non_null(p);
      memset(p, (int)(off >> 20) + pass, n);
      sd_handle_put(mp);
      assert_int_equal(view[4096 + off], (uint8_t)((off >> 20) + pass));
      assert_true(atomic_load(&maps.mapped) <= 8);
    }
  sd_handle_destroy(&maps, h);
  sd_handle_destroy(&maps, r);
  assert_int_equal(atomic_load(&maps.mapped), 0);
  munmap(view, size);
  sd_maps_fini(&maps);
}

/* Layer indices are never reused while anything could reach the old
 * layer's blocks, and are reused once nothing can: a client that
 * registers and releases layers for ever does not exhaust them. */
static void test_recycle(void **state)
{
  struct sd_store s;
  assert_int_equal(sd_store_init(&s, 1 << 20, 4096), 0);
  s.max_layers = 4; /* indices 1..3 */
  char pa[256], pb[256];
  int fa = make_file("ra", 64 << 10, 4, pa), fb = make_file("rb", 64 << 10, 5, pb);
  int err;
  uint8_t buf[4096];
  bool hit;
  /* a dead layer that still has blocks cached keeps its index */
  struct sd_layer *held[3];
  for (int i = 0; i < 3; i++) {
    held[i] = sd_layer_register(&s, fa, true, 0, &err);
    assert_non_null(held[i]);
    assert_int_equal(sd_store_read(&s, held[i], 0, 4096, buf, &hit), 0);
    sd_layer_unregister(&s, held[i]);
  }
  assert_null(sd_layer_register(&s, fb, true, 0, &err));
  assert_int_equal(err, -ENOSPC);
  /* once its blocks are gone the index is free; the file behind it is new */
  uint32_t idx = held[1]->index;
  sd_store_invalidate(&s, held[1], 0, UINT64_MAX);
  struct sd_layer *b = sd_layer_register(&s, fb, true, 0, &err);
  assert_non_null(b);
  assert_int_equal(b->index, idx);
  assert_int_equal(sd_store_read(&s, b, 0, 4096, buf, &hit), 0);
  assert_false(hit);
  expect_bytes(buf, 0, 4096, 5);
  check_store(&s);
  sd_layer_unregister(&s, b);
  /* many registrations through the same few indices */
  sd_store_invalidate(&s, NULL, 0, UINT64_MAX);
  for (int i = 0; i < 1000; i++) {
    struct sd_layer *l = sd_layer_register(&s, i % 2 ? fa : fb, true, 0, &err);
    assert_non_null(l);
    assert_int_equal(sd_store_read(&s, l, 4096, 4096, buf, &hit), 0);
    expect_bytes(buf, 4096, 4096, i % 2 ? 4 : 5);
    sd_store_invalidate(&s, l, 0, UINT64_MAX);
    sd_layer_unregister(&s, l);
  }
  assert_true(s.recycled >= 998);
  check_store(&s);
  close(fa);
  close(fb);
  sd_store_fini(&s);
}

static int setup(void **state)
{
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hits_and_fills),
    cmocka_unit_test(test_layers_apart),
    cmocka_unit_test(test_tail_zeros),
    cmocka_unit_test(test_register_refusals),
    cmocka_unit_test(test_single_flight),
    cmocka_unit_test(test_handles),
    cmocka_unit_test(test_sections),
    cmocka_unit_test(test_recycle),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
