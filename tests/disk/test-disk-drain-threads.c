/* The disk's drain under concurrent requests.  Writer threads hammer a
 * disk (a raw image, no filters: this tests the core's entry path) with
 * writes of an ever-increasing counter to their own block, while the main
 * thread repeatedly drains the disk, checks that the image does not change
 * while it is drained (no request was in flight, none got in), and
 * resumes.  Afterwards every writer must have made progress across the
 * drains and every block must hold its writer's last counter.
 *
 * The request path counts requests in and out with atomics and takes a lock
 * only while a drain is under way; this test, in the concurrency suite, is
 * also run under ThreadSanitizer. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/sluice.h>

#define NWRITERS 4
#define BLOCK 4096
#define DRAINS 40

static struct sl_disk *disk;
static char path[256];
static atomic_bool stop;
static atomic_int failures;

struct writer {
  int id;
  uint64_t last;       /* the last counter written successfully */
  pthread_t tid;
};

static void *writer(void *arg)
{
  struct writer *w = arg;
  struct sl_handle *h = sl_disk_top(disk);
  uint8_t buf[BLOCK];
  for (uint64_t n = 1; !atomic_load(&stop); n++) {
    memset(buf, w->id + 1, sizeof buf);
    memcpy(buf, &n, sizeof n);
    if (sl_disk_pwrite(h, buf, BLOCK, (uint64_t)w->id * BLOCK, 0) < 0) {
      fprintf(stderr, "writer %d: %s\n", w->id, sl_last_error());
      atomic_fetch_add(&failures, 1);
      return NULL;
    }
    w->last = n;
  }
  return NULL;
}

/* Read what the image file holds now, bypassing the disk. */
static void snapshot(int fd, uint8_t *out)
{
  assert_int_equal(pread(fd, out, NWRITERS * BLOCK, 0), NWRITERS * BLOCK);
}

static void sleep_ms(long ms)
{
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

static void test_drain_under_writes(void **state)
{
  (void)state;
  static struct writer w[NWRITERS];
  static uint8_t a[NWRITERS * BLOCK], b[NWRITERS * BLOCK], prev[NWRITERS * BLOCK];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  for (int i = 0; i < NWRITERS; i++) {
    w[i].id = i;
    assert_int_equal(pthread_create(&w[i].tid, NULL, writer, &w[i]), 0);
  }
  uint64_t progress = 0;
  for (int k = 0; k < DRAINS; k++) {
    sleep_ms(2);
    assert_int_equal(sl_disk_drain(disk), 0);
    snapshot(fd, a);
    sleep_ms(3);       /* writers are spinning: any leak would show */
    snapshot(fd, b);
    assert_memory_equal(a, b, sizeof a);
    /* Writes went on between this drain and the last: resume works. */
    progress += k > 0 && memcmp(a, prev, sizeof a) != 0;
    memcpy(prev, a, sizeof a);
    sl_disk_resume(disk);
  }
  atomic_store(&stop, true);
  for (int i = 0; i < NWRITERS; i++)
    pthread_join(w[i].tid, NULL);
  assert_int_equal(atomic_load(&failures), 0);
  assert_true(progress > 0);
  /* Everything was written through the disk and nothing was lost. */
  assert_int_equal(sl_disk_flush(sl_disk_top(disk)), 0);
  snapshot(fd, a);
  for (int i = 0; i < NWRITERS; i++) {
    uint64_t got;
    memcpy(&got, a + i * BLOCK, sizeof got);
    assert_true(w[i].last > 0);
    assert_int_equal(got, w[i].last);
  }
  close(fd);
}

static int setup(void **state)
{
  (void)state;
  snprintf(path, sizeof path, "/tmp/test-disk-drain-%d.raw", (int)getpid());
  struct sl_image_create_opts co = {.format = SL_FORMAT_RAW, .size = 1 << 20};
  if (sl_image_create(path, &co) < 0)
    return -1;
  struct sl_disk_open_opts o = {.format = SL_FORMAT_RAW};
  return sl_disk_open(path, &o, &disk) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
  (void)state;
  int r = sl_disk_close(disk);
  unlink(path);
  return r < 0 ? -1 : 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_drain_under_writes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
