/* Unit tests of the buffer arena (lib/ipc) (DESIGN.md "Buffers"): buffers
 * are ranges of one sealed memfd, never overlap, are reused and coalesce
 * when freed, the arena is bounded (a full arena makes allocation wait,
 * and a free wakes it), and what is written to a buffer is what a peer
 * reads from the memfd at sl_arena_offset(). */
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include "ipc/buffer-arena.h"

#define BLOCK SL_ARENA_MIN_BLOCK

static struct sl_arena *make(size_t size)
{
  struct sl_arena *a = NULL;
  assert_int_equal(sl_arena_create("test-arena", size, &a), 0);
  assert_non_null(a);
  return a;
}

static void test_create_refuses_bad_sizes(void **state)
{
  (void)state;
  struct sl_arena *a = NULL;
  assert_int_equal(sl_arena_create("bad", 3 * BLOCK, &a), -EINVAL);
  assert_non_null(strstr(sl_last_error(), "power of two"));
  assert_int_equal(sl_arena_create("bad", BLOCK / 2, &a), -EINVAL);
  assert_null(a);
}

static void test_memfd_is_sealed(void **state)
{
  (void)state;
  struct sl_arena *a = make(64 * BLOCK);
  int fd = sl_arena_fd(a);
  int seals = fcntl(fd, F_GET_SEALS);
  assert_true(seals >= 0);
  assert_true(seals & F_SEAL_SHRINK);
  assert_true(seals & F_SEAL_GROW);
  assert_true(seals & F_SEAL_SEAL);
  /* Nobody -- not a peer holding the fd -- can cut it short. */
  assert_int_equal(ftruncate(fd, BLOCK), -1);
  assert_int_equal(errno, EPERM);
  assert_int_equal(lseek(fd, 0, SEEK_END), 64 * BLOCK);
  sl_arena_destroy(a);
}

static void test_buffer_is_visible_through_the_memfd(void **state)
{
  (void)state;
  struct sl_arena *a = make(64 * BLOCK);
  void *skip = sl_arena_alloc(a, 3 * BLOCK);  /* so the next is not at 0 */
  char *buf = sl_arena_alloc(a, 5000);
  assert_non_null(skip);
  assert_non_null(buf);
  size_t off = sl_arena_offset(a, buf);
  assert_true(off > 0);
  assert_int_equal(off % BLOCK, 0);
  memset(buf, 0x5c, 5000);
  char back[5000];
  assert_int_equal(pread(sl_arena_fd(a), back, sizeof back, (off_t)off), 5000);
  assert_memory_equal(back, buf, 5000);
  sl_arena_free(a, buf);
  sl_arena_free(a, skip);
  sl_arena_destroy(a);
}

static void test_bounded_and_reused(void **state)
{
  (void)state;
  enum { N = 32 };
  struct sl_arena *a = make(N * BLOCK);
  char *b[N];
  for (int i = 0; i < N; i++) {
    b[i] = sl_arena_try_alloc(a, i % 2 ? BLOCK : 1);
    assert_non_null(b[i]);
    assert_int_equal((uintptr_t)b[i] % BLOCK, 0);
    for (int j = 0; j < i; j++)
      assert_true(b[i] != b[j]);
  }
  assert_int_equal(sl_arena_in_use(a), N * BLOCK);
  /* Full: no more, not even a zero-length buffer. */
  assert_null(sl_arena_try_alloc(a, 0));
  assert_int_equal(sl_last_errno(), EAGAIN);
  /* A freed block is the next one handed out. */
  sl_arena_free(a, b[7]);
  char *again = sl_arena_try_alloc(a, 100);
  assert_ptr_equal(again, b[7]);
  b[7] = again;
  for (int i = 0; i < N; i++)
    sl_arena_free(a, b[i]);
  assert_int_equal(sl_arena_in_use(a), 0);
  /* Everything coalesced back into one block the size of the arena. */
  char *all = sl_arena_try_alloc(a, N * BLOCK);
  assert_non_null(all);
  sl_arena_free(a, all);
  /* Larger than the arena: refused, not waited for. */
  assert_null(sl_arena_alloc(a, N * BLOCK + 1));
  assert_int_equal(sl_last_errno(), E2BIG);
  sl_arena_destroy(a);
}

/* Random sizes and lifetimes: live buffers never overlap (each keeps its
 * own pattern) and the arena ends empty. */
static void test_random_patterns(void **state)
{
  (void)state;
  enum { LIVE = 24, ROUNDS = 4000 };
  struct sl_arena *a = make(256 * BLOCK);
  unsigned char *buf[LIVE] = {0};
  size_t len[LIVE] = {0};
  unsigned seed = 12345;
  for (int r = 0; r < ROUNDS; r++) {
    int i = rand_r(&seed) % LIVE;
    if (buf[i]) {
      for (size_t k = 0; k < len[i]; k += 97)
        assert_int_equal(buf[i][k], (unsigned char)(i * 31 + 7));
      sl_arena_free(a, buf[i]);
      buf[i] = NULL;
      continue;
    }
    len[i] = 1 + (size_t)rand_r(&seed) % (12 * BLOCK);
    buf[i] = sl_arena_try_alloc(a, len[i]);
    if (buf[i])
      memset(buf[i], i * 31 + 7, len[i]);
  }
  for (int i = 0; i < LIVE; i++)
    sl_arena_free(a, buf[i]);
  assert_int_equal(sl_arena_in_use(a), 0);
  sl_arena_destroy(a);
}

struct waiter {
  struct sl_arena *a;
  void *got;
  int err;                      /* errors are per thread: carried back */
};

static void *wait_for_buffer(void *opaque)
{
  struct waiter *w = opaque;
  w->got = sl_arena_alloc(w->a, BLOCK);
  w->err = w->got ? 0 : sl_last_errno();
  return NULL;
}

static void test_full_arena_waits_until_free(void **state)
{
  (void)state;
  struct sl_arena *a = make(4 * BLOCK);
  void *all = sl_arena_alloc(a, 4 * BLOCK);
  assert_non_null(all);
  struct waiter w = {a, (void *)1, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, wait_for_buffer, &w), 0);
  nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  sl_arena_free(a, all);
  pthread_join(t, NULL);
  assert_ptr_equal(w.got, all);   /* the freed space, reused */
  sl_arena_free(a, w.got);

  /* Closing wakes a waiter with NULL (shutdown cannot hang). */
  all = sl_arena_alloc(a, 4 * BLOCK);
  w.got = (void *)1;
  assert_int_equal(pthread_create(&t, NULL, wait_for_buffer, &w), 0);
  nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  sl_arena_close(a);
  pthread_join(t, NULL);
  assert_null(w.got);
  assert_int_equal(w.err, ESHUTDOWN);
  sl_arena_free(a, all);
  sl_arena_destroy(a);
}

/* A buffer lent to the cache daemon is not handed out again until it is
 * released, even after its owner freed it; the arena is found from any
 * pointer inside it and outlives its owner while lent. */
static void test_lent_buffers(void **state)
{
  struct sl_arena *a;
  assert_int_equal(sl_arena_create("lend", 64 << 10, &a), 0);
  char *p = sl_arena_alloc(a, 16 << 10);
  assert_non_null(p);
  size_t off = 1, off0 = 1;
  struct sl_arena *f = sl_arena_find(p + 5000, 100, &off);
  assert_ptr_equal(f, a);
  assert_ptr_equal(sl_arena_find(p, 0, &off0), a);
  assert_int_equal(off, off0 + 5000);
  sl_arena_unref(a); /* (the second find's reference) */
  int x;
  assert_null(sl_arena_find(&x, sizeof x, &off));
  assert_int_equal(sl_arena_hold(a, p + 5000, 64 << 10), 0); /* inside the buffer */
  assert_int_equal(sl_arena_held_bytes(a), 16u << 10);
  assert_int_equal(sl_arena_hold(a, p, 16 << 10), 0);  /* the same buffer again */
  sl_arena_release(a, p);
  void *o = sl_arena_alloc(a, 4096);
  assert_int_equal(sl_arena_hold(a, o, 16 << 10), -EBUSY); /* over the bound */
  sl_arena_free(a, o);
  sl_arena_free(a, p);
  /* held: the 48 KiB left can be had, the held 16 KiB cannot */
  void *q = sl_arena_try_alloc(a, 32 << 10);
  assert_non_null(q);
  assert_null(sl_arena_try_alloc(a, 32 << 10));
  void *r = sl_arena_try_alloc(a, 16 << 10);
  assert_non_null(r);
  assert_true((char *)r + (16 << 10) <= p || (char *)r >= p + (16 << 10));
  assert_null(sl_arena_try_alloc(a, 4096));
  sl_arena_release(a, p + 100);
  assert_int_equal(sl_arena_held_bytes(a), 0);
  void *t = sl_arena_try_alloc(a, 16 << 10); /* now it can */
  assert_ptr_equal(t, p);
  /* a hold outside any buffer in use is refused */
  sl_arena_free(a, t);
  assert_int_equal(sl_arena_hold(a, p, 64 << 10), -EINVAL);
  /* lent when the owner destroys it: orphaned, alive until released */
  assert_int_equal(sl_arena_hold(a, q, 64 << 10), 0);
  sl_arena_destroy(a);
  assert_true(sl_arena_orphaned(f));
  assert_null(sl_arena_find(q, 1, &off));
  memset(q, 7, 4096); /* still mapped */
  sl_arena_release(f, q);
  sl_arena_unref(f); /* the first find's reference: gone now */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_create_refuses_bad_sizes),
    cmocka_unit_test(test_memfd_is_sealed),
    cmocka_unit_test(test_buffer_is_visible_through_the_memfd),
    cmocka_unit_test(test_bounded_and_reused),
    cmocka_unit_test(test_random_patterns),
    cmocka_unit_test(test_full_arena_waits_until_free),
    cmocka_unit_test(test_lent_buffers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
