/* The filter stack under concurrent requests (suite concurrency, so it also
 * runs under ThreadSanitizer).
 *
 * Stack: stats / crypt / mirror over a raw image, the mirror's target a
 * second raw image.  All filters declare SL_FILTER_PARALLEL, so requests
 * really do run at once:
 *
 *  - crypt read-modify-writes partial sectors: threads writing disjoint
 *    bytes of the same sectors must not lose each other's bytes;
 *  - mirror writes the primary and then the target: threads writing the
 *    same blocks at once must leave both images with the same last write
 *    (a mirror that lets two writes reach the two images in different
 *    orders leaves them different);
 *  - stats counts every request exactly once from many threads. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stack-test.h"

#define MiB (1024u * 1024u)
#define THREADS 4
#define PIECE 100                 /* bytes per piece in the shared area */
#define PIECES 160                /* per thread: 160 * 4 * 100 = 64000 bytes */
#define SAME_BLOCKS 256           /* blocks every thread writes, together */

static const char *const modules[] = {"stats", "crypt", "mirror", NULL};

struct worker {
  pthread_t tid;
  int id;
  struct sl_handle *h;
  int failures;
  char msg[256];
};

static void worker_fail(struct worker *w, const char *what, int r)
{
  if (!w->failures++)
    snprintf(w->msg, sizeof w->msg, "thread %d: %s: %d %s", w->id, what, r,
             sl_last_error());
}

/* Piece i of thread t: PIECE bytes at i * THREADS * PIECE + t * PIECE,
 * filled with a byte that depends on both. */
static unsigned char piece_byte(int t, int i) { return (unsigned char)(t * 61 + i * 7 + 1); }

static void *interleaved_writer(void *opaque)
{
  struct worker *w = opaque;
  unsigned char buf[PIECE];
  for (int i = 0; i < PIECES; i++) {
    memset(buf, piece_byte(w->id, i), sizeof buf);
    uint64_t off = (uint64_t)i * THREADS * PIECE + (uint64_t)w->id * PIECE;
    int r = sl_disk_pwrite(w->h, buf, PIECE, off, 0);
    if (r < 0)
      worker_fail(w, "pwrite", r);
  }
  return NULL;
}

static pthread_barrier_t barrier;

/* All threads write block b at once (a barrier before each), so which
 * write lands last is a race in every block: the mirror must let the same
 * one win on both images. */
static void *same_block_writer(void *opaque)
{
  struct worker *w = opaque;
  unsigned char buf[4096];
  for (int b = 0; b < SAME_BLOCKS; b++) {
    memset(buf, (unsigned char)(w->id * 64 + b % 64), sizeof buf);
    uint64_t off = MiB + (uint64_t)b * 4096;
    pthread_barrier_wait(&barrier);
    int r = sl_disk_pwrite(w->h, buf, sizeof buf, off, 0);
    if (r < 0)
      worker_fail(w, "pwrite", r);
    /* Reads race the writes (what they see is unspecified for
     * overlapping requests, so only their success is checked). */
    unsigned char back[4096];
    if ((r = sl_disk_pread(w->h, back, sizeof back, off, 0)) < 0)
      worker_fail(w, "pread", r);
  }
  return NULL;
}

static void run_threads(struct sl_handle *h, void *(*fn)(void *))
{
  struct worker w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (struct worker){.id = t, .h = h};
    assert_int_equal(pthread_create(&w[t].tid, NULL, fn, &w[t]), 0);
  }
  for (int t = 0; t < THREADS; t++)
    pthread_join(w[t].tid, NULL);
  for (int t = 0; t < THREADS; t++)
    if (w[t].failures)
      fail_msg("%s (%d failures)", w[t].msg, w[t].failures);
}

static struct sl_disk *open_stack(void)
{
  const char *desc = write_descriptor("t.disk", "p.raw",
      "stats file=t.stats print=no", "crypt key=t.key",
      "mirror target=m.raw granularity=4K", NULL);
  struct sl_disk *d = open_disk(desc, false);
  assert_non_null(d);
  return d;
}

static uint64_t write_ops(void)
{
  char *s = slurp(tpath("t.stats"), NULL);
  char *p = strstr(s, "  write ops ");
  uint64_t n = UINT64_MAX;
  if (p)
    sscanf(p + strlen("  write ops "), "%" SCNu64, &n);
  free(s);
  return n;
}

static void test_partial_sectors_from_many_threads(void **state)
{
  (void)state;
  struct sl_disk *d = open_stack();
  run_threads(sl_disk_top(d), interleaved_writer);
  /* Every thread's every piece survived the others' read-modify-writes. */
  unsigned char *all = malloc(THREADS * PIECES * PIECE);
  assert_int_equal(sl_disk_pread(sl_disk_top(d), all, THREADS * PIECES * PIECE,
                                 0, 0), 0);
  for (int i = 0; i < PIECES; i++)
    for (int t = 0; t < THREADS; t++) {
      const unsigned char *p = all + (size_t)i * THREADS * PIECE + (size_t)t * PIECE;
      for (int k = 0; k < PIECE; k++)
        if (p[k] != piece_byte(t, i))
          fail_msg("piece %d of thread %d lost (byte %d is %#x)", i, t, k, p[k]);
    }
  free(all);
  assert_int_equal(sl_disk_close(d), 0);
  assert_int_equal(write_ops(), THREADS * PIECES);
}

static void test_mirror_keeps_the_same_order(void **state)
{
  (void)state;
  struct sl_disk *d = open_stack();
  assert_int_equal(pthread_barrier_init(&barrier, NULL, THREADS), 0);
  run_threads(sl_disk_top(d), same_block_writer);
  pthread_barrier_destroy(&barrier);
  assert_int_equal(sl_disk_close(d), 0);
  assert_int_equal(write_ops(), THREADS * SAME_BLOCKS);
  /* Both images hold ciphertext; after the last write they must agree. */
  size_t np, nm;
  char *p = slurp(tpath("p.raw"), &np);
  char *m = slurp(tpath("m.raw"), &nm);
  assert_int_equal(np, nm);
  for (int b = 0; b < SAME_BLOCKS; b++)
    if (memcmp(p + MiB + b * 4096, m + MiB + b * 4096, 4096) != 0)
      fail_msg("block %d differs between the primary and the mirror", b);
  assert_memory_equal(p, m, np);
  free(p);
  free(m);
}

static int setup(void **state)
{
  (void)state;
  stack_test_setup("test-disk-stack-threads", modules);
  make_raw("p.raw", 2 * MiB);
  make_raw("m.raw", 2 * MiB);
  write_test_key("t.key", 13, 5);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  stack_test_teardown();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_partial_sectors_from_many_threads),
    cmocka_unit_test(test_mirror_keeps_the_same_order),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
