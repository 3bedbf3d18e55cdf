/* qcow2 driver unit tests: round trips at several cluster sizes, overlays,
 * copy-on-write, discard/zero, refcount growth, images made by qemu-img and
 * qemu-io read identically to `qemu-img convert -O raw`, qemu-img check is
 * clean after sluice writes, and bad input is refused with a message. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include <sluice/image.h>

static char dir[256];
#define MAX_PATHS 4096
static char *paths[MAX_PATHS];
static size_t npaths;

static const char *path_in(const char *name)
{
  /* Kept until teardown so callers can hold several at once. */
  char *p;
  if (asprintf(&p, "%s/%s", dir, name) < 0 || npaths == MAX_PATHS)
    abort();
  paths[npaths++] = p;
  return p;
}

static int sh(const char *fmt, ...)
{
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool have_qemu(void)
{
  return sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version "
            ">/dev/null 2>&1") == 0;
}

/* cmocka's skip() counts as a pass in the program's exit status, and meson
 * would report a skipped check as passed.  Tests skip through this macro
 * instead, and main() exits 77 (meson's SKIP) when anything was skipped
 * and nothing failed. */
static int n_skipped;
#define SKIP_TEST(why)                                                   \
  do {                                                                   \
    fprintf(stderr, "SKIP: %s: %s\n", __func__, why);                   \
    n_skipped++;                                                         \
    skip();                                                              \
  } while (0)

static uint8_t *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*len + 1);
  assert_int_equal(fread(b, 1, *len, f), *len);
  fclose(f);
  return b;
}

/* Whole image through sluice equals qemu-img convert -O raw. */
static void assert_reads_like_qemu(const char *img)
{
  const char *raw = path_in("expect.raw");
  assert_int_equal(sh("qemu-img convert -O raw '%s' '%s'", img, raw), 0);
  size_t n;
  uint8_t *want = read_file(raw, &n);
  struct sl_image *im;
  struct sl_image_open_opts o = {.read_only = true};
  int r = sl_image_open(img, &o, &im);
  if (r < 0)
    fail_msg("open %s: %s", img, sl_last_error());
  assert_int_equal(sl_image_size(im), n);
  uint8_t *got = malloc(n + 1);
  /* Odd-sized pieces to cross cluster and table boundaries. */
  for (size_t off = 0; off < n;) {
    size_t len = ((n - off) < 77777 ? (n - off) : 77777);
    r = sl_image_pread(im, got + off, len, off);
    if (r < 0)
      fail_msg("read %s: %s", img, sl_last_error());
    off += len;
  }
  assert_memory_equal(got, want, n);
  sl_image_close(im);
  free(got);
  free(want);
}

static void test_qemu_made_images(void **state)
{
  (void)state;
  if (!have_qemu())
    SKIP_TEST("needs qemu-img and qemu-io");
  const char *a = path_in("q.qcow2");
  static const char *opts[] = {
    "cluster_size=4096", "cluster_size=65536", "cluster_size=2M",
    "cluster_size=65536,extended_l2=on", "compat=0.10",
    "cluster_size=512",
  };
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o %s '%s' 8M", opts[i], a), 0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'write -P 0xab 0 64k' "
                        "-c 'write -P 0x11 100000 5000' -c 'write -z 40000 30000' "
                        "-c 'write -P 0x22 4M 3M' -c 'discard 5M 1M' "
                        "-c 'write -P 0x33 8384000 4000' '%s' >/dev/null",
                        a), 0);
    assert_reads_like_qemu(a);
  }
  /* Compressed clusters with zlib and zstd. */
  const char *src = path_in("src.qcow2"), *c = path_in("c.qcow2");
  assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M && qemu-io -f qcow2 "
                      "-c 'write -P 0x5a 0 1M' -c 'write -P 0x07 2M 100k' '%s' "
                      ">/dev/null", src, src), 0);
  assert_int_equal(sh("qemu-img convert -c -O qcow2 '%s' '%s'", src, c), 0);
  assert_reads_like_qemu(c);
  assert_int_equal(sh("qemu-img convert -c -O qcow2 -o compression_type=zstd "
                      "'%s' '%s'", src, c), 0);
  assert_reads_like_qemu(c);
  assert_int_equal(sh("qemu-img convert -c -O qcow2 -o "
                      "cluster_size=65536,extended_l2=on '%s' '%s'", src, c), 0);
  assert_reads_like_qemu(c);
}

static void test_qemu_chain(void **state)
{
  (void)state;
  if (!have_qemu())
    SKIP_TEST("needs qemu-img and qemu-io");
  const char *b = path_in("base.qcow2"), *m = path_in("mid.qcow2"),
             *t = path_in("top.qcow2");
  assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 6M "
                      "&& qemu-io -f qcow2 -c 'write -P 1 0 6M' '%s' >/dev/null",
                      b, b), 0);
  assert_int_equal(sh("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 '%s' "
                      "&& qemu-io -f qcow2 -c 'write -P 2 1000 3000' "
                      "-c 'write -z 1M 200k' '%s' >/dev/null", m, m), 0);
  assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=65536,"
                      "extended_l2=on -b mid.qcow2 -F qcow2 '%s' 8M && qemu-io "
                      "-f qcow2 -c 'write -P 3 2000 100' -c 'discard 3M 1M' "
                      "-c 'write -P 4 7M 5000' '%s' >/dev/null", t, t), 0);
  assert_reads_like_qemu(t);
  struct sl_image *im;
  assert_int_equal(sl_image_open(t, NULL, &im), 0);
  assert_int_equal(sl_image_chain_length(im), 3);
  struct sl_extent e;
  assert_int_equal(sl_image_block_status(im, 4 << 20, 4096, &e), 0);
  assert_int_equal(e.depth, 2);
  assert_int_equal(e.type, SL_EXTENT_DATA);
  assert_int_equal(sl_image_block_status(im, 6 << 20, 1 << 20, &e), 0);
  assert_int_equal(e.type, SL_EXTENT_UNALLOCATED);
  assert_int_equal(e.length, 1 << 20);
  struct sl_image_info info;
  assert_int_equal(sl_image_get_info(im, &info), 0);
  assert_true(info.extended_l2);
  assert_string_equal(info.backing_format, "qcow2");
  sl_image_close(im);
}

/* Deterministic PRNG. */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void check_qemu_clean(const char *img)
{
  if (have_qemu()) {
    int rc = sh("qemu-img check -q '%s'", img);
    if (rc != 0) {
      sh("qemu-img check '%s' >&2", img);
      fail_msg("qemu-img check %s: exit %d", img, rc);
    }
  }
}

static void verify(struct sl_image *im, const uint8_t *model, uint64_t size)
{
  uint8_t *got = malloc(size);
  assert_int_equal(sl_image_pread(im, got, size, 0), 0);
  for (uint64_t i = 0; i < size; i++)
    if (got[i] != model[i])
      fail_msg("byte %" PRIu64 ": got 0x%02x want 0x%02x", i, got[i], model[i]);
  free(got);
}

/* Random writes, zeroes and discards against an in-memory model, on an
 * image over BACKING (or none); reopen, compare, qemu-img check. */
static bool use_direct;

static void roundtrip(uint32_t cs, bool ext, const char *backing,
                      const uint8_t *base, uint64_t size, int ops)
{
  const char *p = path_in("rt.qcow2");
  struct sl_image_create_opts co = {.size = backing ? 0 : size,
                                    .cluster_size = cs, .extended_l2 = ext,
                                    .backing_file = backing};
  int r = sl_image_create(p, &co);
  if (r < 0)
    fail_msg("create: %s", sl_last_error());
  uint8_t *model = calloc(1, size);
  if (base)
    memcpy(model, base, size);
  struct sl_image *im;
  struct sl_image_open_opts oo = {.direct = use_direct};
  r = sl_image_open(p, &oo, &im);
  if (r < 0)
    fail_msg("open: %s", sl_last_error());
  assert_int_equal(sl_image_size(im), size);
  uint8_t *buf = malloc((1 << 20) + 3 * cs + 100);
  for (int i = 0; i < ops; i++) {
    uint64_t kind = rnd() % 10;
    uint64_t len = 1 + rnd() % (kind < 2 ? (1 << 20) : 3 * cs + 100);
    uint64_t off = rnd() % size;
    if (off + len > size)
      len = size - off;
    if (kind < 7) {
      memset(buf, (int)(1 + i % 250), len);
      buf[0] = (uint8_t)i;
      r = sl_image_pwrite(im, buf, len, off, 0);
      memcpy(model + off, buf, len);
    } else if (kind < 9) {
      r = sl_image_write_zeroes(im, off, len, kind == 8 ? SL_NO_HOLE : 0);
      memset(model + off, 0, len);
    } else {
      /* Discard whole clusters only: partial ones are advisory. */
      uint64_t a = (off + cs - 1) / cs * cs, b = (off + len) / cs * cs;
      if (a < b) {
        r = sl_image_discard(im, a, b - a);
        memset(model + a, 0, b - a);
      }
    }
    if (r < 0)
      fail_msg("op %d: %s", i, sl_last_error());
    if (i % 50 == 0)
      assert_int_equal(sl_image_flush(im), 0);
  }
  verify(im, model, size);
  assert_int_equal(sl_image_close(im), 0);
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  verify(im, model, size);
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(p);
  if (have_qemu()) {
    const char *raw = path_in("rt.raw");
    assert_int_equal(sh("qemu-img convert -O raw '%s' '%s'", p, raw), 0);
    size_t n;
    uint8_t *q = read_file(raw, &n);
    assert_int_equal(n, size);
    assert_memory_equal(q, model, size);
    free(q);
  }
  free(buf);
  free(model);
}

static void test_roundtrip_cluster_sizes(void **state)
{
  (void)state;
  roundtrip(512, false, NULL, NULL, 3 << 20, 200);
  roundtrip(4096, false, NULL, NULL, 8 << 20, 200);
  roundtrip(65536, false, NULL, NULL, 16 << 20, 200);
  roundtrip(65536, true, NULL, NULL, 16 << 20, 200);
  roundtrip(2 << 20, false, NULL, NULL, 16 << 20, 60);
  roundtrip(2 << 20, true, NULL, NULL, 16 << 20, 60);
}

/* O_DIRECT with unaligned buffers, offsets and lengths (needs a file
 * system that supports it: not tmpfs). */
static void test_direct_io(void **state)
{
  (void)state;
  int fd = open(path_in("probe"), O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (fd < 0)
    SKIP_TEST("O_DIRECT not supported where the test directory is");
  close(fd);
  use_direct = true;
  roundtrip(65536, false, NULL, NULL, 4 << 20, 150);
  roundtrip(512, false, NULL, NULL, 1 << 20, 100);
  roundtrip(65536, true, NULL, NULL, 4 << 20, 100);
  use_direct = false;
  /* raw: unaligned writes and reads through the bounce path. */
  const char *p = path_in("d.raw");
  struct sl_image_create_opts co = {.format = SL_FORMAT_RAW, .size = 1000001};
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  struct sl_image_open_opts oo = {.direct = true};
  assert_int_equal(sl_image_open(p, &oo, &im), 0);
  uint8_t *model = calloc(1, 1000001), *buf = malloc(70001);
  for (int i = 0; i < 200; i++) {
    uint64_t off = rnd() % 1000001, len = 1 + rnd() % 70000;
    if (off + len > 1000001)
      len = 1000001 - off;
    memset(buf + 1, i + 1, len);
    assert_int_equal(sl_image_pwrite(im, buf + 1, len, off, 0), 0);
    memcpy(model + off, buf + 1, len);
  }
  uint8_t *got = malloc(1000001 + 1);
  assert_int_equal(sl_image_pread(im, got + 1, 1000001, 0), 0);
  assert_memory_equal(got + 1, model, 1000001);
  assert_int_equal(sl_image_close(im), 0);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_size, 1000001);
  free(got);
  free(model);
  free(buf);
}

/* A partial write that allocates a cluster must read zeros around the
 * request even when the allocator hands out a freed cluster that still
 * holds old bytes: the zero fill (FALLOC_FL_ZERO_RANGE, or written zeros
 * where the file system lacks it) has to cover the whole new cluster. */
static void zero_fill_reused(const char *p, bool direct)
{
  const uint64_t cs = 65536;
  struct sl_image_create_opts co = {.size = 4 << 20, .cluster_size = cs};
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  struct sl_image_open_opts oo = {.direct = direct};
  if (sl_image_open(p, &oo, &im) < 0)
    fail_msg("open %s: %s", p, sl_last_error());
  uint8_t *junk = aligned_alloc(4096, 4 * cs), *got = aligned_alloc(4096, 4 * cs);
  assert_true(junk && got);
  memset(junk, 0xee, 4 * cs);
  assert_int_equal(sl_image_pwrite(im, junk, 4 * cs, 0, 0), 0);
  assert_int_equal(sl_image_flush(im), 0);
  assert_int_equal(sl_image_discard(im, 0, 4 * cs), 0);
  assert_int_equal(sl_image_flush(im), 0);
  /* Four single-block writes into unallocated clusters: each takes one of
   * the freed host clusters. */
  memset(junk, 0x11, 4096);
  for (uint64_t i = 0; i < 4; i++)
    assert_int_equal(sl_image_pwrite(im, junk, 4096, (8 + i) * cs + i * 8192, 0), 0);
  struct sl_extent ext;
  assert_int_equal(sl_image_block_status(im, 8 * cs, cs, &ext), 0);
  assert_true(ext.file_offset < 8 * cs); /* really a reused cluster */
  assert_int_equal(sl_image_pread(im, got, 4 * cs, 8 * cs), 0);
  for (uint64_t i = 0; i < 4 * cs; i++) {
    uint64_t in = i % cs, c = i / cs;
    uint8_t want = in >= c * 8192 && in < c * 8192 + 4096 ? 0x11 : 0;
    if (got[i] != want)
      fail_msg("%s: byte %" PRIu64 " of cluster %" PRIu64 " is 0x%02x, want "
               "0x%02x", p, in, 8 + c, got[i], want);
  }
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(p);
  free(junk);
  free(got);
}

/* In an overlay, a partial write zero-fills only where the backing chain
 * reads as zeros; where the backing holds data that data is copied in. */
static void zero_fill_overlay(void)
{
  const uint64_t cs = 65536;
  const char *base = path_in("zfb.qcow2"), *top = path_in("zft.qcow2");
  struct sl_image_create_opts co = {.size = 2 << 20, .cluster_size = cs};
  assert_int_equal(sl_image_create(base, &co), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(base, NULL, &im), 0);
  uint8_t *buf = malloc(4 * cs), *want = calloc(1, 4 * cs);
  memset(buf, 0x77, cs);
  /* Base: cluster 1 data, cluster 2 a zero cluster, 0 and 3 unallocated;
   * the overlay's clusters 0-3 reuse none of it. */
  assert_int_equal(sl_image_pwrite(im, buf, cs, cs, 0), 0);
  assert_int_equal(sl_image_write_zeroes(im, 2 * cs, cs, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  memcpy(want + cs, buf, cs);
  struct sl_image_create_opts oc = {.cluster_size = cs, .backing_file = "zfb.qcow2"};
  assert_int_equal(sl_image_create(top, &oc), 0);
  assert_int_equal(sl_image_open(top, NULL, &im), 0);
  memset(buf, 0x12, 4096);
  for (uint64_t c = 0; c < 4; c++) {
    assert_int_equal(sl_image_pwrite(im, buf, 4096, c * cs + 8192, 0), 0);
    memset(want + c * cs + 8192, 0x12, 4096);
  }
  assert_int_equal(sl_image_pread(im, buf, 4 * cs, 0), 0);
  for (uint64_t i = 0; i < 4 * cs; i++)
    if (buf[i] != want[i])
      fail_msg("overlay byte %" PRIu64 " is 0x%02x, want 0x%02x", i, buf[i],
               want[i]);
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(top);
  free(buf);
  free(want);
}

static void test_zero_fill_reused_cluster(void **state)
{
  (void)state;
  zero_fill_overlay();
  zero_fill_reused(path_in("zf.qcow2"), false);
  int fd = open(path_in("probe"), O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0) {
    close(fd);
    zero_fill_reused(path_in("zf-direct.qcow2"), true);
  }
  /* tmpfs has no FALLOC_FL_ZERO_RANGE: the fallback writes zeros. */
  char shm[] = "/dev/shm/sluice-zf-XXXXXX";
  if (mkdtemp(shm)) {
    char p[64];
    snprintf(p, sizeof p, "%s/zf.qcow2", shm);
    zero_fill_reused(p, false);
    sh("rm -rf '%s'", shm);
  }
}

static uint8_t *make_base(const char *name, uint64_t size, enum sl_format fmt)
{
  const char *p = path_in(name);
  uint8_t *data = malloc(size);
  for (uint64_t i = 0; i < size; i++)
    data[i] = (uint8_t)(i * 7 + i / 4096);
  struct sl_image_create_opts co = {.format = fmt, .size = size,
                                    .cluster_size = 4096};
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  assert_int_equal(sl_image_pwrite(im, data, size, 0, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  return data;
}

static void test_overlay_partial_writes(void **state)
{
  (void)state;
  uint64_t size = 6 << 20;
  uint8_t *base = make_base("base.qcow2", size, SL_FORMAT_QCOW2);
  check_qemu_clean(path_in("base.qcow2"));
  roundtrip(65536, false, "base.qcow2", base, size, 200);
  roundtrip(65536, true, "base.qcow2", base, size, 200);
  roundtrip(4096, false, "base.qcow2", base, size, 200);
  free(base);
  base = make_base("base.raw", size, SL_FORMAT_RAW);
  roundtrip(65536, true, "base.raw", base, size, 100);
  free(base);
}

/* A discard in an overlay must read zeros, not the backing data. */
static void test_overlay_discard_hides_backing(void **state)
{
  (void)state;
  uint64_t size = 2 << 20;
  uint8_t *base = make_base("b2.qcow2", size, SL_FORMAT_QCOW2);
  const char *p = path_in("o2.qcow2");
  struct sl_image_create_opts co = {.backing_file = "b2.qcow2"};
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  uint8_t *buf = malloc(size);
  assert_int_equal(sl_image_pwrite(im, "x", 1, 70000, 0), 0);
  assert_int_equal(sl_image_discard(im, 0, 1 << 20), 0);
  assert_int_equal(sl_image_pread(im, buf, 1 << 20, 0), 0);
  for (size_t i = 0; i < (1 << 20); i++)
    assert_int_equal(buf[i], 0);
  assert_int_equal(sl_image_pread(im, buf, 4096, 1 << 20), 0);
  assert_memory_equal(buf, base + (1 << 20), 4096);
  struct sl_extent e;
  assert_int_equal(sl_image_block_status(im, 0, size, &e), 0);
  assert_int_equal(e.type, SL_EXTENT_ZERO);
  assert_int_equal(e.length, 1 << 20);
  assert_int_equal(e.depth, 0);
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(p);
  free(buf);
  free(base);
}

/* Copy-on-write of clusters shared with an internal snapshot (refcount 2)
 * and of compressed clusters. */
static void test_cow_shared_and_compressed(void **state)
{
  (void)state;
  if (!have_qemu())
    SKIP_TEST("needs qemu-img and qemu-io");
  const char *p = path_in("snap.qcow2");
  assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 2M && qemu-io -f qcow2 "
                      "-c 'write -P 0x61 0 2M' '%s' >/dev/null && qemu-img "
                      "snapshot -c s1 '%s'", p, p, p), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  assert_int_equal(sl_image_pwrite(im, "hello", 5, 1000, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(p);
  assert_int_equal(sh("qemu-img snapshot -a s1 '%s' && qemu-io -f qcow2 -c "
                      "'read -P 0x61 0 2M' '%s' >/dev/null", p, p), 0);

  const char *c = path_in("comp.qcow2");
  assert_int_equal(sh("qemu-img convert -c -O qcow2 '%s' '%s'", p, c), 0);
  assert_int_equal(sl_image_open(c, NULL, &im), 0);
  assert_int_equal(sl_image_pwrite(im, "abc", 3, 70000, 0), 0);
  assert_int_equal(sl_image_write_zeroes(im, 1 << 20, 65536, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  check_qemu_clean(c);
  assert_int_equal(sh("qemu-io -f qcow2 -c 'read -P 0x61 0 70000' -c "
                      "'read -P 0x61 70003 978573' -c 'read -P 0 1M 64k' "
                      "'%s' >/dev/null", c), 0);
}

/* 512-byte clusters: enough data for many refcount blocks and two
 * refcount-table growths. */
static void test_refcount_growth(void **state)
{
  (void)state;
  const char *p = path_in("grow.qcow2");
  uint64_t size = 24 << 20;
  struct sl_image_create_opts co = {.size = size, .cluster_size = 512};
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  uint8_t *buf = malloc(1 << 20);
  for (uint64_t off = 0; off < size; off += 1 << 20) {
    for (size_t i = 0; i < (1 << 20); i += 512)
      memset(buf + i, (int)((off + i) >> 9), 512);
    assert_int_equal(sl_image_pwrite(im, buf, 1 << 20, off, 0), 0);
  }
  assert_int_equal(sl_image_close(im), 0);
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  for (uint64_t off = 0; off < size; off += 1 << 20) {
    assert_int_equal(sl_image_pread(im, buf, 1 << 20, off), 0);
    for (size_t i = 0; i < (1 << 20); i += 512)
      assert_int_equal(buf[i + 100], (uint8_t)((off + i) >> 9));
  }
  assert_int_equal(sl_image_close(im), 0);
  free(buf);
  check_qemu_clean(p);
}

static void put_be32(int fd, off_t off, uint32_t v)
{
  uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
  assert_int_equal(pwrite(fd, b, 4, off), 4);
}
static void put_be64(int fd, off_t off, uint64_t v)
{
  put_be32(fd, off, (uint32_t)(v >> 32));
  put_be32(fd, off + 4, (uint32_t)v);
}

static void expect_open_error(const char *p, const char *needle)
{
  struct sl_image *im;
  struct sl_image_open_opts o = {.read_only = true};
  int r = sl_image_open(p, &o, &im);
  if (r == 0) {
    /* Some damage only shows on reading. */
    uint8_t *b = malloc(sl_image_size(im) ? 1 << 20 : 1);
    uint64_t n = sl_image_size(im) < (1 << 20) ? sl_image_size(im) : 1 << 20;
    r = sl_image_pread(im, b, n, 0);
    free(b);
    sl_image_close(im);
  }
  assert_true(r < 0);
  if (!strstr(sl_last_error(), needle) || !strstr(sl_last_error(), "bad.qcow2"))
    fail_msg("error '%s' does not mention '%s'", sl_last_error(), needle);
}

static void test_bad_input(void **state)
{
  (void)state;
  const char *p = path_in("bad.qcow2");
  struct sl_image_create_opts co = {.size = 1 << 20, .cluster_size = 65536};
  struct {
    off_t off;
    int width;
    uint64_t val;
    const char *needle;
  } cases[] = {
    {20, 32, 40, "cluster_bits"},
    {20, 32, 3, "cluster_bits"},
    {72, 64, 1ull << 40, "incompatible feature"},
    {40, 64, 1ull << 40, "L1 table"},
    {40, 64, 0, "header"},
    {36, 32, 0x7fffffff, "L1 table"},
    {48, 64, 1ull << 50, "refcount table"},
    {24, 64, UINT64_MAX, "size"},
    {4, 32, 9, "version"},
    {100, 32, 1u << 30, "header length"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(sl_image_create(p, &co), 0);
    int fd = open(p, O_RDWR);
    if (cases[i].width == 32)
      put_be32(fd, cases[i].off, (uint32_t)cases[i].val);
    else
      put_be64(fd, cases[i].off, cases[i].val);
    close(fd);
    expect_open_error(p, cases[i].needle);
  }
  /* L2 table pointing into the header, and past the end of the file. */
  assert_int_equal(sl_image_create(p, &co), 0);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  assert_int_equal(sl_image_pwrite(im, "x", 1, 0, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  int fd = open(p, O_RDWR);
  uint8_t h[8];
  assert_int_equal(pread(fd, h, 8, 40), 8);
  uint64_t l1 = 0;
  for (int i = 0; i < 8; i++)
    l1 = l1 << 8 | h[i];
  put_be64(fd, (off_t)l1, (1ull << 63) | 0);
  put_be64(fd, (off_t)l1, 512);
  close(fd);
  expect_open_error(p, "L2 table");
  fd = open(p, O_RDWR);
  put_be64(fd, (off_t)l1, 1ull << 40);
  close(fd);
  expect_open_error(p, "L2 table");
  /* Truncated. */
  assert_int_equal(truncate(p, 50), 0);
  expect_open_error(p, "too short");
}


static uint64_t get_be(int fd, off_t off, int bytes)
{
  uint8_t b[8];
  assert_int_equal(pread(fd, b, (size_t)bytes, off), bytes);
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v = v << 8 | b[i];
  return v;
}

/* Offset of the 16-bit refcount of cluster C (64 KiB clusters). */
static off_t refcount_at(int fd, uint64_t c)
{
  uint64_t rt = get_be(fd, 48, 8);
  uint64_t blk = get_be(fd, (off_t)(rt + (c / 32768) * 8), 8);
  return (off_t)(blk + (c % 32768) * 2);
}

static long json_num(const char *file, const char *key)
{
  size_t n;
  uint8_t *b = read_file(file, &n);
  b[n] = 0;
  char k[64];
  snprintf(k, sizeof k, "\"%s\": ", key);
  char *p = strstr((char *)b, k);
  long v = p ? strtol(p + strlen(k), NULL, 10) : 0;
  free(b);
  return v;
}

static void compare_check_with_qemu(const char *img)
{
  struct sl_check_result res;
  assert_int_equal(sl_image_check(img, 0, &res), 0);
  const char *js = path_in("check.json");
  sh("qemu-img check --output=json '%s' > '%s' 2>/dev/null", img, js);
  assert_int_equal(res.corruptions, json_num(js, "corruptions"));
  assert_int_equal(res.leaks, json_num(js, "leaks"));
  assert_int_equal(res.allocated_clusters, json_num(js, "allocated-clusters"));
  assert_int_equal(res.total_clusters, json_num(js, "total-clusters"));
  assert_int_equal(res.image_end_offset, json_num(js, "image-end-offset"));
}

static void test_check_agrees_with_qemu(void **state)
{
  (void)state;
  if (!have_qemu())
    SKIP_TEST("needs qemu-img and qemu-io");
  const char *p = path_in("chk.qcow2");
  struct sl_image_create_opts co = {.size = 32 << 20};
  for (int round = 0; round < 4; round++) {
    assert_int_equal(sl_image_create(p, &co), 0);
    struct sl_image *im;
    assert_int_equal(sl_image_open(p, NULL, &im), 0);
    uint8_t *buf = malloc(3 << 20);
    memset(buf, 0x42, 3 << 20);
    assert_int_equal(sl_image_pwrite(im, buf, 3 << 20, 0, 0), 0);
    assert_int_equal(sl_image_pwrite(im, buf, 5000, 20 << 20, 0), 0);
    assert_int_equal(sl_image_close(im), 0);
    free(buf);
    compare_check_with_qemu(p);
    struct sl_check_result res;
    assert_int_equal(sl_image_check(p, 0, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    int fd = open(p, O_RDWR);
    uint64_t l1 = get_be(fd, 40, 8);
    uint64_t l2 = get_be(fd, (off_t)l1, 8) & 0x00fffffffffffe00ull;
    uint64_t data3 = get_be(fd, (off_t)(l2 + 3 * 8), 8) & 0x00fffffffffffe00ull;
    if (round == 0) {          /* a leak: refcount 2 for a cluster used once */
      put_be32(fd, refcount_at(fd, data3 >> 16), 0x00020000 |
               (uint32_t)get_be(fd, refcount_at(fd, data3 >> 16) + 2, 2));
    } else if (round == 1) {   /* refcount too low */
      off_t o = refcount_at(fd, data3 >> 16);
      put_be32(fd, o, (uint32_t)get_be(fd, o + 2, 2));
    } else if (round == 2) {   /* two owners of one cluster */
      put_be64(fd, (off_t)(l2 + 10 * 8), get_be(fd, (off_t)(l2 + 3 * 8), 8));
    } else {                   /* an L2 entry pointing into the L1 table */
      put_be64(fd, (off_t)(l2 + 5 * 8), l1 | (1ull << 63));
    }
    close(fd);
    compare_check_with_qemu(p);
    assert_int_equal(sl_image_check(p, 0, &res), 0);
    assert_true(res.corruptions + res.leaks > 0);
    assert_int_equal(sl_image_check(p, SL_CHECK_REPAIR_ALL, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_true(res.corruptions_fixed + res.leaks_fixed > 0);
    check_qemu_clean(p);
  }
}

/* Feature bits: zstd sets the compression bit; a dirty image (lazy
 * refcounts) or a corrupt one opens read-only only, with a message; an
 * unknown incompatible bit is named; repair clears dirty; unknown header
 * extensions survive writes. */
static void test_feature_bits(void **state)
{
  (void)state;
  const char *p = path_in("feat.qcow2");
  struct sl_image_create_opts co = {.size = 4 << 20, .compression_type = "zstd"};
  assert_int_equal(sl_image_create(p, &co), 0);
  int fd = open(p, O_RDWR);
  assert_int_equal(get_be(fd, 72, 8), 1u << 3);
  assert_int_equal(get_be(fd, 104, 1), 1);
  close(fd);
  struct sl_image *im;
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  struct sl_image_info info;
  assert_int_equal(sl_image_get_info(im, &info), 0);
  assert_string_equal(info.compression_type, "zstd");
  assert_int_equal(info.qcow2_version, 3);
  assert_int_equal(info.refcount_bits, 16);
  assert_int_equal(sl_image_pwrite(im, "data", 4, 0, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  if (have_qemu())
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read -P 0x64 0 1' '%s' "
                        ">/dev/null", p), 0);

  /* Dirty. */
  fd = open(p, O_RDWR);
  put_be64(fd, 72, (1u << 3) | 1);
  close(fd);
  assert_true(sl_image_open(p, NULL, &im) < 0);
  assert_non_null(strstr(sl_last_error(), "dirty"));
  struct sl_image_open_opts ro = {.read_only = true};
  assert_int_equal(sl_image_open(p, &ro, &im), 0);
  assert_int_equal(sl_image_get_info(im, &info), 0);
  assert_true(info.dirty);
  sl_image_close(im);
  struct sl_check_result res;
  assert_int_equal(sl_image_check(p, SL_CHECK_REPAIR_ALL, &res), 0);
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  sl_image_close(im);

  /* Corrupt. */
  fd = open(p, O_RDWR);
  put_be64(fd, 72, (1u << 3) | 2);
  close(fd);
  assert_true(sl_image_open(p, NULL, &im) < 0);
  assert_non_null(strstr(sl_last_error(), "corrupt"));
  assert_int_equal(sl_image_open(p, &ro, &im), 0);
  sl_image_close(im);

  /* Unknown incompatible bit. */
  fd = open(p, O_RDWR);
  put_be64(fd, 72, (1u << 3) | (1ull << 40));
  close(fd);
  assert_true(sl_image_open(p, &ro, &im) < 0);
  assert_non_null(strstr(sl_last_error(), "0x10000000000"));

  /* An unknown header extension survives allocation and refcount growth. */
  co = (struct sl_image_create_opts){.size = 8 << 20, .cluster_size = 512};
  assert_int_equal(sl_image_create(p, &co), 0);
  fd = open(p, O_RDWR);
  uint8_t ext[24] = {0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  assert_int_equal(pwrite(fd, ext, sizeof ext, 112), (ssize_t)sizeof ext);
  close(fd);
  assert_int_equal(sl_image_open(p, NULL, &im), 0);
  uint8_t *buf = malloc(8 << 20);
  memset(buf, 0x5c, 8 << 20);
  assert_int_equal(sl_image_pwrite(im, buf, 8 << 20, 0, 0), 0);
  assert_int_equal(sl_image_close(im), 0);
  free(buf);
  fd = open(p, O_RDONLY);
  uint8_t back[24];
  assert_int_equal(pread(fd, back, sizeof back, 112), (ssize_t)sizeof back);
  close(fd);
  assert_memory_equal(back, ext, sizeof ext);
  check_qemu_clean(p);
}

static int setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/sluice-qcow2-XXXXXX");
  assert_non_null(mkdtemp(dir));
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  sh("rm -rf '%s'", dir);
  for (size_t i = 0; i < npaths; i++)
    free(paths[i]);
  npaths = 0;
  return 0;
}

/* The image API itself refuses I/O past the end and writes to a layer
 * opened read-only (the disk layer checks too, but tools and the daemon
 * call the image API directly), leaving the file as it was; and a layer's
 * identity tells two files apart even when their size and modification
 * time agree, and changes when a read-only layer is modified. */
static void test_range_read_only_identity(void **state)
{
  (void)state;
  static const enum sl_format fmts[] = {SL_FORMAT_QCOW2, SL_FORMAT_RAW};
  for (size_t f = 0; f < 2; f++) {
    const char *p = path_in(fmts[f] == SL_FORMAT_RAW ? "rng.raw" : "rng.qcow2");
    struct sl_image_create_opts co = {.format = fmts[f], .size = 1 << 20,
                                      .cluster_size = 65536};
    assert_int_equal(sl_image_create(p, &co), 0);
    struct sl_image *im;
    assert_int_equal(sl_image_open(p, NULL, &im), 0);
    char buf[4096];
    memset(buf, 0x5a, sizeof buf);
    assert_int_equal(sl_image_pwrite(im, buf, sizeof buf, 0, 0), 0);
    assert_int_equal(sl_image_pwrite(im, buf, sizeof buf, (1 << 20) - 2048, 0), -EINVAL);
    assert_non_null(strstr(sl_last_error(), "beyond the end"));
    assert_int_equal(sl_image_pread(im, buf, sizeof buf, (1 << 20) - 2048), -EINVAL);
    assert_int_equal(sl_image_pread(im, buf, 1, 1 << 20), -EINVAL);
    assert_int_equal(sl_image_pread(im, buf, 16, UINT64_MAX - 8), -EINVAL);
    assert_int_equal(sl_image_close(im), 0);
    struct stat before;
    assert_int_equal(stat(p, &before), 0);
    size_t len0;
    uint8_t *bytes0 = read_file(p, &len0);
    struct sl_image_open_opts ro = {.read_only = true};
    assert_int_equal(sl_image_open(p, &ro, &im), 0);
    memset(buf, 0x11, sizeof buf);
    assert_int_equal(sl_image_pwrite(im, buf, sizeof buf, 0, 0), -EROFS);
    assert_int_equal(sl_image_write_zeroes(im, 0, 65536, 0), -EROFS);
    assert_int_equal(sl_image_discard(im, 0, 65536), -EROFS);
    assert_int_equal(sl_image_pread(im, buf, sizeof buf, 0), 0);
    assert_int_equal(buf[0], 0x5a);
    assert_int_equal(sl_image_close(im), 0);
    size_t len1;
    uint8_t *bytes1 = read_file(p, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(bytes0, bytes1, len0);
    free(bytes0);
    free(bytes1);
  }

  /* Two raw files of the same size and mtime: only the inode differs. */
  const char *a = path_in("id-a.raw"), *b = path_in("id-b.raw");
  struct sl_image_create_opts co = {.format = SL_FORMAT_RAW, .size = 65536};
  assert_int_equal(sl_image_create(a, &co), 0);
  assert_int_equal(sl_image_create(b, &co), 0);
  assert_int_equal(sh("touch -r '%s' '%s'", a, b), 0);
  struct sl_image_open_opts ro = {.format = SL_FORMAT_RAW, .read_only = true};
  struct sl_image *ia, *ib, *ia2;
  assert_int_equal(sl_image_open(a, &ro, &ia), 0);
  assert_int_equal(sl_image_open(b, &ro, &ib), 0);
  assert_int_equal(sl_image_open(a, &ro, &ia2), 0);
  struct sl_layer_id ida, idb, ida2;
  assert_int_equal(sl_image_layer_id(ia, &ida), 0);
  assert_int_equal(sl_image_layer_id(ib, &idb), 0);
  assert_int_equal(sl_image_layer_id(ia2, &ida2), 0);
  assert_true(ida.size == idb.size && ida.mtime_ns == idb.mtime_ns);
  assert_true(memcmp(&ida, &idb, sizeof ida) != 0);   /* different files */
  assert_memory_equal(&ida, &ida2, sizeof ida);        /* the same file */
  /* A modified read-only layer gets a new identity. */
  assert_int_equal(sh("touch -d '2001-01-01' '%s'", a), 0);
  struct sl_layer_id ida3;
  assert_int_equal(sl_image_layer_id(ia, &ida3), 0);
  assert_true(memcmp(&ida, &ida3, sizeof ida) != 0);
  sl_image_close(ia);
  sl_image_close(ib);
  sl_image_close(ia2);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_qemu_made_images),
    cmocka_unit_test(test_qemu_chain),
    cmocka_unit_test(test_roundtrip_cluster_sizes),
    cmocka_unit_test(test_overlay_partial_writes),
    cmocka_unit_test(test_overlay_discard_hides_backing),
    cmocka_unit_test(test_cow_shared_and_compressed),
    cmocka_unit_test(test_refcount_growth),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_direct_io),
    cmocka_unit_test(test_zero_fill_reused_cluster),
    cmocka_unit_test(test_check_agrees_with_qemu),
    cmocka_unit_test(test_feature_bits),
    cmocka_unit_test(test_range_read_only_identity),
  };
  int failed = cmocka_run_group_tests(tests, setup, teardown);
  if (failed == 0 && n_skipped > 0) {
    fprintf(stderr, "SKIP: %d of the tests skipped\n", n_skipped);
    return 77;
  }
  return failed;
}
