/* Many threads on one qcow2 image: writers own interleaved 4 KiB stripes
 * (so they share clusters and L2 tables and race on allocation), readers
 * read everywhere at once.  Every writer's data must read back, and the
 * image must be clean for qemu-img check afterwards. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include <sluice/image.h>

#define NWRITERS 6
#define NREADERS 3
#define STRIPE 4096
#define SIZE (24u << 20)

static struct sl_image *img;
static char path[256];
static int failures;

struct worker { int id; bool ext; };

static void *writer(void *arg)
{
  struct worker *w = arg;
  uint8_t buf[STRIPE], back[STRIPE];
  unsigned seed = (unsigned)w->id * 7919u;
  for (int pass = 0; pass < 2; pass++) {
    for (uint64_t s = (uint64_t)w->id; s < SIZE / STRIPE; s += NWRITERS) {
      memset(buf, (int)(w->id * 16 + pass + 1), sizeof buf);
      memcpy(buf, &s, sizeof s);
      if (sl_image_pwrite(img, buf, STRIPE, s * STRIPE, 0) < 0) {
        fprintf(stderr, "write: %s\n", sl_last_error());
        __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
        return NULL;
      }
      if (rand_r(&seed) % 64 == 0)
        sl_image_flush(img);
      if (rand_r(&seed) % 8 == 0) {
        if (sl_image_pread(img, back, STRIPE, s * STRIPE) < 0 ||
            memcmp(back, buf, STRIPE) != 0) {
          fprintf(stderr, "stripe %" PRIu64 " did not read back\n", s);
          __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
        }
      }
    }
  }
  return NULL;
}

static void *reader(void *arg)
{
  struct worker *w = arg;
  unsigned seed = (unsigned)w->id;
  uint8_t *buf = malloc(256 << 10);
  for (int i = 0; i < 400; i++) {
    uint64_t len = 1 + (uint64_t)rand_r(&seed) % (256 << 10);
    uint64_t off = (uint64_t)rand_r(&seed) % (SIZE - len);
    if (sl_image_pread(img, buf, len, off) < 0) {
      fprintf(stderr, "read: %s\n", sl_last_error());
      __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
      break;
    }
    struct sl_extent e;
    sl_image_block_status(img, off, len, &e);
  }
  free(buf);
  return NULL;
}

static void run(bool ext, uint32_t cs)
{
  struct sl_image_create_opts co = {.size = SIZE, .cluster_size = cs,
                                    .extended_l2 = ext};
  assert_int_equal(sl_image_create(path, &co), 0);
  struct sl_image_open_opts oo = {.metadata_cache_bytes = 64 << 10};
  assert_int_equal(sl_image_open(path, &oo, &img), 0);
  pthread_t t[NWRITERS + NREADERS];
  struct worker w[NWRITERS + NREADERS];
  for (int i = 0; i < NWRITERS + NREADERS; i++) {
    w[i] = (struct worker){i < NWRITERS ? i : i - NWRITERS, ext};
    pthread_create(&t[i], NULL, i < NWRITERS ? writer : reader, &w[i]);
  }
  for (int i = 0; i < NWRITERS + NREADERS; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(failures, 0);
  assert_int_equal(sl_image_close(img), 0);

  assert_int_equal(sl_image_open(path, NULL, &img), 0);
  uint8_t buf[STRIPE];
  for (uint64_t s = 0; s < SIZE / STRIPE; s++) {
    assert_int_equal(sl_image_pread(img, buf, STRIPE, s * STRIPE), 0);
    uint64_t tag;
    memcpy(&tag, buf, sizeof tag);
    assert_int_equal(tag, s);
    assert_int_equal(buf[100], (uint8_t)((s % NWRITERS) * 16 + 2));
  }
  assert_int_equal(sl_image_close(img), 0);
  struct sl_check_result res;
  assert_int_equal(sl_image_check(path, 0, &res), 0);
  assert_int_equal(res.corruptions, 0);
  assert_int_equal(res.leaks, 0);
  if (system("qemu-img --version >/dev/null 2>&1") == 0) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", path);
    assert_int_equal(system(cmd), 0);
  }
}

static void test_threads_standard(void **state) { (void)state; run(false, 65536); }
static void test_threads_small_clusters(void **state) { (void)state; run(false, 4096); }
static void test_threads_extended_l2(void **state) { (void)state; run(true, 65536); }

int main(void)
{
  char dir[] = "/tmp/sluice-qcow2-threads-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  snprintf(path, sizeof path, "%s/t.qcow2", dir);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_threads_standard),
    cmocka_unit_test(test_threads_small_clusters),
    cmocka_unit_test(test_threads_extended_l2),
  };
  int r = cmocka_run_group_tests(tests, NULL, NULL);
  unlink(path);
  rmdir(dir);
  return r;
}
