/* hit-latency: what a 4 KiB cache hit through sluiced costs a client,
 * against pread(2) of 4 KiB from the kernel's page cache, in the same run.
 *
 *   hit-latency SOCKET FILE [SECONDS] [LOAD] [ROUNDS]
 *
 * FILE must fit the daemon's cache (it is read whole through the daemon
 * first, and through the page cache for pread).  For each contender the
 * measuring thread does one 4 KiB read at a time (queue depth 1) at random
 * aligned offsets for SECONDS and records every latency; "load" lines run
 * LOAD more threads doing the same as fast as they can meanwhile (each with
 * its own connection for the daemon).  Contenders alternate, ROUNDS times;
 * the line reports the median round's p50 and p99 and the ratio of the
 * daemon's to pread's.  DESIGN.md explains why the daemon's cost is the
 * hop (two wake-ups), not the copy. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/call.h"
#include "common/util.h"

static const char *sock_path, *file;
static uint64_t file_size;
static atomic_bool stop_load;

struct client {
  struct sl_cs_conn c;
  int mfd;
  uint32_t layer, handle;
  int fd;                         /* pread */
  uint8_t *buf;
  unsigned seed;
};

static void die(const char *what)
{
  fprintf(stderr, "hit-latency: %s: %s\n", what, sl_last_error());
  exit(1);
}

static void client_open(struct client *k, bool daemon, unsigned seed)
{
  memset(k, 0, sizeof *k);
  k->seed = seed;
  k->fd = open(file, O_RDONLY);
  if (k->fd < 0) {
    perror(file);
    exit(1);
  }
  if (!daemon) {
    k->buf = aligned_alloc(4096, 4096);
    return;
  }
  if (sl_cs_connect(sock_path, &k->c) < 0)
    die("connect");
  k->mfd = memfd_create("hit-latency", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (k->mfd < 0 || ftruncate(k->mfd, 1 << 20) < 0 || fcntl(k->mfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
    die("memfd");
  k->buf = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, k->mfd, 0);
  if (k->buf == MAP_FAILED)
    die("mmap");
  memset(k->buf, 0, 1 << 20); /* the daemon writes only into pages we allocated */
  struct sl_cs_register_handle h = {.length = 1 << 20, .rights = SL_CS_RIGHT_WRITE};
  if (sl_cs_call(&k->c, SL_CS_REGISTER_HANDLE, &h, sizeof h, k->mfd, 0) < 0)
    die("register handle");
  k->handle = ((const struct sl_cs_register_handle_reply *)sl_cs_reply_body(&k->c))->handle;
  struct sl_cs_register_layer l = {0};
  if (sl_cs_call(&k->c, SL_CS_REGISTER_LAYER, &l, sizeof l, k->fd, 0) < 0)
    die("register layer");
  k->layer = ((const struct sl_cs_register_layer_reply *)sl_cs_reply_body(&k->c))->layer;
}

static void client_close(struct client *k, bool daemon)
{
  if (daemon) {
    munmap(k->buf, 1 << 20);
    close(k->mfd);
    sl_cs_close(&k->c);
  } else {
    free(k->buf);
  }
  close(k->fd);
}

/* One 4 KiB read at OFF; false on error. */
static bool one_read(struct client *k, bool daemon, uint64_t off, bool *hit)
{
  if (!daemon)
    return pread(k->fd, k->buf, 4096, (off_t)off) == 4096;
  struct sl_cs_read_entry e = {.layer = k->layer, .handle = k->handle, .file_offset = off,
                               .length = 4096};
  uint64_t msg[12];
  long n = sl_cs_encode_read(msg, sizeof msg, k->c.version, k->c.next_id++, &e, 1);
  if (sl_cs_send_raw(&k->c, msg, (size_t)n, -1) < 0 || sl_cs_recv_msg(&k->c) < 0)
    return false;
  const struct sl_cs_read_result *r =
      (const void *)((const char *)sl_cs_reply_body(&k->c) + sizeof(struct sl_cs_read_reply));
  *hit = r->flags & SL_CS_RESULT_HIT;
  return r->status == 0;
}

static uint64_t random_off(struct client *k)
{
  return (uint64_t)(rand_r(&k->seed) % (unsigned)(file_size / 4096)) * 4096;
}

struct load_arg {
  bool daemon;
  unsigned seed;
  uint64_t ops;
};

static void *load_main(void *opaque)
{
  struct load_arg *a = opaque;
  struct client k;
  client_open(&k, a->daemon, a->seed);
  bool hit;
  while (!atomic_load_explicit(&stop_load, memory_order_relaxed)) {
    if (!one_read(&k, a->daemon, random_off(&k), &hit))
      break;
    a->ops++;
  }
  client_close(&k, a->daemon);
  return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

struct result {
  double p50, p99, ops;           /* microseconds; measuring thread's ops/s */
  uint64_t misses;
};

static struct result measure(bool daemon, int load, double seconds)
{
  pthread_t t[64];
  struct load_arg la[64];
  atomic_store(&stop_load, false);
  for (int i = 0; i < load; i++) {
    la[i] = (struct load_arg){daemon, 1000u + (unsigned)i, 0};
    pthread_create(&t[i], NULL, load_main, &la[i]);
  }
  struct client k;
  client_open(&k, daemon, 7);
  size_t cap = 1 << 22, n = 0;
  uint64_t *lat = malloc(cap * sizeof *lat);
  uint64_t misses = 0;
  uint64_t start = sl_now_ns(), end = start + (uint64_t)(seconds * 1e9);
  bool hit = true;
  /* a short warm-up, not recorded */
  for (int i = 0; i < 1000; i++)
    one_read(&k, daemon, random_off(&k), &hit);
  start = sl_now_ns();
  end = start + (uint64_t)(seconds * 1e9);
  for (uint64_t now = start; now < end && n < cap;) {
    uint64_t off = random_off(&k);
    uint64_t t0 = sl_now_ns();
    if (!one_read(&k, daemon, off, &hit))
      die("read");
    now = sl_now_ns();
    lat[n++] = now - t0;
    misses += !hit;
  }
  atomic_store(&stop_load, true);
  for (int i = 0; i < load; i++)
    pthread_join(t[i], NULL);
  client_close(&k, daemon);
  qsort(lat, n, sizeof *lat, cmp_u64);
  struct result r = {lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3,
                     (double)n / ((double)(sl_now_ns() - start) / 1e9), misses};
  free(lat);
  return r;
}

static int cmp_res(const void *a, const void *b)
{
  double x = ((const struct result *)a)->p50, y = ((const struct result *)b)->p50;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: hit-latency SOCKET FILE [SECONDS] [LOAD] [ROUNDS]\n");
    return 2;
  }
  sock_path = argv[1];
  file = argv[2];
  double seconds = argc > 3 ? atof(argv[3]) : 3;
  int load = argc > 4 ? atoi(argv[4]) : 3;
  int rounds = argc > 5 ? atoi(argv[5]) : 3;
  if (load < 0 || load > 64 || rounds < 1 || rounds > 15)
    return 2;
  struct stat st;
  if (stat(file, &st) < 0 || st.st_size < 65536) {
    fprintf(stderr, "hit-latency: %s: need a file of at least 64 KiB\n", file);
    return 2;
  }
  file_size = (uint64_t)st.st_size & ~4095ull;
  /* Warm both caches: every block through the daemon, the file through the
   * page cache. */
  struct client w;
  client_open(&w, true, 1);
  for (uint64_t off = 0; off < file_size; off += 4096) {
    bool hit;
    if (!one_read(&w, true, off, &hit))
      die("warming the daemon");
    uint8_t b[4096];
    if (pread(w.fd, b, sizeof b, (off_t)off) < 0)
      die("warming the page cache");
  }
  client_close(&w, true);

  printf("4 KiB reads at queue depth 1 (the measured thread), %d round(s) of %.1f s each; "
         "load = %d more threads doing the same\n", rounds, seconds, load);
  printf("%-14s %5s %9s %9s %11s %8s\n", "contender", "load", "p50 us", "p99 us",
         "ops/s", "misses");
  int loads[2] = {0, load};
  for (int li = 0; li < (load ? 2 : 1); li++) {
    struct result res[2][15];
    for (int r = 0; r < rounds; r++)
      for (int d = 0; d < 2; d++)
        res[d][r] = measure(d, loads[li], seconds);
    struct result med[2];
    for (int d = 0; d < 2; d++) {
      qsort(res[d], (size_t)rounds, sizeof res[d][0], cmp_res);
      med[d] = res[d][rounds / 2];
      printf("%-14s %5d %9.2f %9.2f %11.0f %8" PRIu64 "\n", d ? "sluiced hit" : "pread (cache)",
             loads[li], med[d].p50, med[d].p99, med[d].ops, med[d].misses);
    }
    printf("%-14s %5d %8.1fx %8.1fx %10.2fx\n", "daemon/pread", loads[li],
           med[1].p50 / med[0].p50, med[1].p99 / med[0].p99, med[1].ops / med[0].ops);
  }
  return 0;
}
