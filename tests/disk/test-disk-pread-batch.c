/* Batched reads through the filter stack (sl_disk_pread_batch, the
 * filter API's pread_batch), against qemu-img as the oracle.
 *
 * A qcow2 clone over two backing layers (the base with holes, a middle
 * layer over part of it) with its own writes in the top layer, read in
 * random batches of random reads -- each batch spanning the backing
 * layers sluiced caches, the top layer it does not, holes, and reads that
 * overlap -- from four threads at once:
 *   1. through the cache filter and a live sluiced: sl_disk_can_pread_batch
 *      says the batch reaches the cache filter whole, every read equals
 *      `qemu-img convert -O raw` of the clone, sluiced served hits;
 *   2. sluiced SIGKILLed while the threads read, then gone: every read
 *      still succeeds and equals the oracle (the daemon is an accelerator);
 *   3. the same disk without the filter (the core's one-pread-per-entry
 *      fallback, at the image), under a filter that has pread but not
 *      pread_batch (the core splits the batch there), and under stats and
 *      throttle, which pass batches on whole;
 *   4. an entry beyond the end of the disk fails alone, with EINVAL; the
 *      others of its batch are served;
 *   5. stats over throttle over the image, and stats over the cache filter
 *      with mode=off: sl_disk_can_pread_batch is false (nothing takes the
 *      batch as one), and batches still read right; batches of more than
 *      SL_READ_BATCH_MAX entries and of none, here and under the cache.
 * Exit 77 (skip) without qemu-img, qemu-io or a built sluiced. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include <sluice/filter.h>
#include "stack-test.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define DISK (8 * MiB)
#define THREADS 4
#define MAX_ENTRIES 48
#define MAX_LEN (128 * KiB)

static uint8_t *expect;
static struct sl_disk *disk;
static atomic_int errors;
static pid_t daemon_pid;

static void run(const char *cmd)
{
  if (system(cmd) != 0) {
    fprintf(stderr, "test setup failed: %s\n", cmd);
    exit(1);
  }
}

static bool have(const char *prog)
{
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
  return system(cmd) == 0;
}

/* A random batch on SEED's stream: random offsets (mostly 512-aligned,
 * some not), lengths 1 byte .. MAX_LEN, some reads repeating the last. */
static unsigned make_batch(unsigned *seed, struct sl_read_vec *v, uint8_t *bufs)
{
  unsigned n = 1 + (unsigned)rand_r(seed) % MAX_ENTRIES;
  for (unsigned i = 0; i < n; i++) {
    uint64_t len, off;
    if (i > 0 && rand_r(seed) % 8 == 0) {
      len = v[i - 1].len;      /* the same bytes as the last: an overlap */
      off = v[i - 1].off;
    } else {
      len = rand_r(seed) % 4 == 0 ? 1 + (unsigned)rand_r(seed) % MAX_LEN
                                  : 512u * (1 + (unsigned)rand_r(seed) % (MAX_LEN / 512));
      off = (uint64_t)rand_r(seed) % (DISK - len + 1);
      if (rand_r(seed) % 4)
        off &= ~(uint64_t)511;
    }
    v[i] = (struct sl_read_vec){.buf = bufs + (size_t)i * MAX_LEN, .len = len,
                                .off = off, .status = 1};
    memset(v[i].buf, 0xee, len);
  }
  return n;
}

/* N batches through H, each read compared with the oracle. */
static void read_batches(struct sl_handle *h, unsigned seed, unsigned n, const char *what)
{
  struct sl_read_vec v[MAX_ENTRIES];
  uint8_t *bufs = malloc((size_t)MAX_ENTRIES * MAX_LEN);
  if (!bufs)
    abort();
  for (unsigned b = 0; b < n; b++) {
    unsigned cnt = make_batch(&seed, v, bufs);
    int failed = sl_disk_pread_batch(h, v, cnt, 0);
    if (failed != 0) {
      fprintf(stderr, "%s: batch of %u: %d reads failed: %s\n", what, cnt, failed,
              sl_last_error());
      atomic_fetch_add(&errors, 1);
    }
    for (unsigned i = 0; i < cnt; i++) {
      if (v[i].status != 0 && failed == 0) {
        fprintf(stderr, "%s: read %u has status %d but the batch said none failed\n",
                what, i, v[i].status);
        atomic_fetch_add(&errors, 1);
      }
      if (v[i].status == 0 && memcmp(v[i].buf, expect + v[i].off, v[i].len) != 0) {
        fprintf(stderr, "%s: %zu bytes at %llu differ from qemu-img convert's\n", what,
                v[i].len, (unsigned long long)v[i].off);
        atomic_fetch_add(&errors, 1);
      }
    }
  }
  free(bufs);
}

struct job {
  struct sl_handle *h;
  unsigned seed, batches;
  const char *what;
};

static void *thread_main(void *arg)
{
  struct job *j = arg;
  read_batches(j->h, j->seed, j->batches, j->what);
  return NULL;
}

/* THREADS threads of BATCHES batches each; KILL_AFTER_MS >= 0: SIGKILL
 * the daemon that long after they start. */
static void storm(struct sl_handle *h, unsigned batches, int kill_after_ms, const char *what)
{
  pthread_t t[THREADS];
  struct job j[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    j[i] = (struct job){h, 1000u * (unsigned)kill_after_ms + 17u * i + 1u, batches, what};
    if (pthread_create(&t[i], NULL, thread_main, &j[i]) != 0)
      abort();
  }
  if (kill_after_ms >= 0) {
    usleep((useconds_t)kill_after_ms * 1000u);
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = 0;
  }
  for (unsigned i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
}

/* More entries than one call below takes (the core splits them into
 * calls of at most SL_READ_BATCH_MAX), and an empty batch. */
static void long_batch(struct sl_handle *h, const char *what)
{
  enum { N = 2 * SL_READ_BATCH_MAX + 37, LEN = 4096 };
  static struct sl_read_vec v[N];
  static uint8_t bufs[N][LEN];
  for (unsigned i = 0; i < N; i++)
    v[i] = (struct sl_read_vec){.buf = bufs[i], .len = LEN,
                                .off = (uint64_t)i * 7919u * 512u % (DISK - LEN),
                                .status = 1};
  int failed = sl_disk_pread_batch(h, v, N, 0);
  for (unsigned i = 0; i < N; i++)
    if (v[i].status != 0 || memcmp(bufs[i], expect + v[i].off, LEN) != 0) {
      fprintf(stderr, "%s: entry %u of %u: status %d or bytes differ (failed %d)\n",
              what, i, (unsigned)N, v[i].status, failed);
      atomic_fetch_add(&errors, 1);
      break;
    }
  if (failed != 0 || sl_disk_pread_batch(h, v, 0, 0) != 0) {
    fprintf(stderr, "%s: a long batch failed %d, or an empty one failed\n", what, failed);
    atomic_fetch_add(&errors, 1);
  }
}

static void start_daemon(void)
{
  const char *sluiced = getenv("SLUICED");
  daemon_pid = fork();
  if (daemon_pid == 0) {
    execl(sluiced, sluiced, "--socket", tpath("d.sock"), "--memory", "64M", "--quiet",
          (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 400; i++) {
    if (access(tpath("d.sock"), F_OK) == 0)
      return;
    usleep(25000);
  }
  fprintf(stderr, "sluiced did not start\n");
  exit(1);
}

static void stop_daemon(void)
{
  if (daemon_pid > 0) {
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, NULL, 0);
  }
}

static struct sl_disk *open_with(const char *const *filters, size_t n)
{
  struct sl_disk_open_opts o = {.read_only = true, .extra_filters = filters,
                                .n_extra_filters = n};
  struct sl_disk *d = NULL;
  if (sl_disk_open(tpath("clone.qcow2"), &o, &d) < 0)
    test_die("open clone.qcow2");
  return d;
}

int main(void)
{
  if (!have("qemu-img") || !have("qemu-io") || !getenv("SLUICED")) {
    fprintf(stderr, "SKIP: needs qemu-img, qemu-io and SLUICED\n");
    return 77;
  }
  static const char *const modules[] = {"cache", "passthru", "stats", "throttle", NULL};
  stack_test_setup("pread-batch", modules);
  atexit(stop_daemon);
  char cmd[2048];
  /* The base: random bytes with zero runs that convert -S leaves as holes. */
  snprintf(cmd, sizeof cmd,
           "cd '%s' && python3 -c \"import os; b=bytearray(os.urandom(%u));"
           "b[%u:%u]=bytes(%u); b[%u:%u]=bytes(%u); open('base.raw','wb').write(b)\" && "
           "qemu-img convert -q -S 4k -f raw -O qcow2 base.raw base.qcow2 && "
           "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
           "qemu-io -f qcow2 -c 'write -P 0x22 2M 1M' -c 'write -P 0x24 7M 64k' mid.qcow2 >/dev/null && "
           "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 clone.qcow2 && "
           "qemu-io -f qcow2 -c 'write -P 0x5a 1M 512k' -c 'write -P 0x33 2560k 96k' "
           "-c 'write -P 0x44 5M 4k' clone.qcow2 >/dev/null && "
           "qemu-img convert -q -O raw clone.qcow2 expect.raw",
           test_dir, DISK, 3 * MiB + 64 * KiB, 4 * MiB, MiB - 64 * KiB, 6 * MiB,
           7 * MiB, MiB);
  run(cmd);
  size_t elen = 0;
  expect = (uint8_t *)slurp(tpath("expect.raw"), &elen);
  if (elen != DISK) {
    fprintf(stderr, "expect.raw has %zu bytes\n", elen);
    return 1;
  }

  /* 1. Through the cache filter and a live sluiced. */
  start_daemon();
  char filt[600];
  snprintf(filt, sizeof filt, "cache:socket=%s,deadline-ms=10000", tpath("d.sock"));
  const char *cache_only[] = {filt};
  disk = open_with(cache_only, 1);
  struct sl_handle *h = sl_disk_top(disk);
  if (!sl_disk_can_pread_batch(h)) {
    fprintf(stderr, "the cache filter's batches do not reach it whole\n");
    return 1;
  }
  storm(h, 40, -1, "with sluiced");
  snprintf(cmd, sizeof cmd, "'%s' cache stats --socket '%s' --output=json | python3 -c "
           "\"import json,sys; t=json.load(sys.stdin)['total']; sys.exit(0 if t['hits'] > 0 else 1)\"",
           getenv("SLUICE"), tpath("d.sock"));
  if (getenv("SLUICE") && system(cmd) != 0) {
    fprintf(stderr, "sluiced served no hits to the batches\n");
    return 1;
  }

  /* 2. sluiced killed mid-run, then gone. */
  storm(h, 60, 30, "sluiced killed");
  storm(h, 10, -1, "sluiced gone");

  /* 4. One entry out of range fails alone. */
  uint8_t a[4096], b[4096];
  struct sl_read_vec v[3] = {
    {.buf = a, .len = sizeof a, .off = MiB},
    {.buf = b, .len = sizeof b, .off = DISK - 1024},
    {.buf = b, .len = 512, .off = DISK - 512},
  };
  int failed = sl_disk_pread_batch(h, v, 3, 0);
  if (failed != 1 || v[0].status != 0 || v[1].status != -EINVAL || v[2].status != 0 ||
      memcmp(a, expect + MiB, sizeof a) != 0 || memcmp(b, expect + DISK - 512, 512) != 0) {
    fprintf(stderr, "out-of-range entry: failed %d, statuses %d %d %d\n", failed,
            v[0].status, v[1].status, v[2].status);
    return 1;
  }
  sl_disk_close(disk);

  /* 3. The core's fallbacks: no filter at all, and a filter without
   * pread_batch above the cache filter. */
  disk = open_with(NULL, 0);
  if (sl_disk_can_pread_batch(sl_disk_top(disk))) {
    fprintf(stderr, "a bare image claims to take batches\n");
    return 1;
  }
  storm(sl_disk_top(disk), 10, -1, "no filter");
  sl_disk_close(disk);
  const char *split[] = {"passthru", filt};
  disk = open_with(split, 2);
  if (sl_disk_can_pread_batch(sl_disk_top(disk))) {
    fprintf(stderr, "passthru (no pread_batch) claims to take batches\n");
    return 1;
  }
  storm(sl_disk_top(disk), 10, -1, "split under passthru");
  sl_disk_close(disk);
  const char *whole[] = {"stats", "throttle:iops=1000000", filt};
  disk = open_with(whole, 3);
  if (!sl_disk_can_pread_batch(sl_disk_top(disk))) {
    fprintf(stderr, "stats and throttle do not pass batches on whole\n");
    return 1;
  }
  storm(sl_disk_top(disk), 10, -1, "under stats and throttle");
  long_batch(sl_disk_top(disk), "under stats and throttle");
  sl_disk_close(disk);

  /* 5. Forwarders with nothing below that takes a batch as one: gathering
   * reads would only serialize them (the image reads entry by entry). */
  const char *no_cache[] = {"stats", "throttle:iops=1000000"};
  const char *cache_off[] = {"stats", "cache:mode=off"};
  const char *const *never[] = {no_cache, cache_off};
  for (unsigned i = 0; i < 2; i++) {
    disk = open_with(never[i], 2);
    if (sl_disk_can_pread_batch(sl_disk_top(disk))) {
      fprintf(stderr, "%s over %s claims to take batches as one\n", never[i][0],
              never[i][1]);
      return 1;
    }
    storm(sl_disk_top(disk), 5, -1, never[i][1]);
    long_batch(sl_disk_top(disk), never[i][1]);
    sl_disk_close(disk);
  }

  free(expect);
  stack_test_teardown();
  int e = atomic_load(&errors);
  if (e)
    fprintf(stderr, "%d failures\n", e);
  return e ? 1 : 0;
}
