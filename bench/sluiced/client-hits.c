/* client-hits: what the cache filter's client (lib/cachesvc/client.c)
 * costs per cache hit when many threads of one process ask at once, as an
 * NBD export's workers do under a queue-depth-8 guest.
 *
 *   client-hits SOCKET FILE [THREADS] [SECONDS]
 *
 * FILE is registered as a layer and read whole once (so that the daemon
 * holds it); then THREADS threads each read random 4K-64K pieces of it
 * through sl_csc_read for SECONDS, into buffers of a buffer arena (the zero
 * copy path the export takes).  Prints one JSON line: requests, and per
 * request this process's CPU microseconds, context switches (voluntary and
 * involuntary, from getrusage) -- the figures that do not depend on how
 * loaded the machine is, unlike the rate, which is printed too.  Run the
 * daemon under `perf stat` to see its side; bench/sluiced/client-hits.sh
 * does both. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cachesvc/client.h"
#include "common/util.h"
#include "ipc/buffer-arena.h"

#define PIECE (64u << 10)

static struct sl_csc *client;
static struct sl_csc_layer *layer;
static struct sl_arena *arena;
static uint64_t file_size;
static atomic_bool stop;
static atomic_uint_fast64_t done, served;

static void *reader(void *arg)
{
  uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  void *buf = sl_arena_alloc(arena, PIECE);
  if (!buf)
    return NULL;
  uint64_t n = 0, ok = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    uint32_t len = (uint32_t)(1 + seed % 16) * 4096u;
    uint64_t off = (seed >> 8) % (file_size / 4096) * 4096;
    if (off + len > file_size)
      len = (uint32_t)(file_size - off);
    struct sl_csc_io io = {.layer = layer, .file_offset = off, .length = len, .buf = buf};
    ok += (uint64_t)sl_csc_read(client, &io, 1, 5000000000ull);
    n++;
  }
  sl_arena_free(arena, buf);
  atomic_fetch_add(&done, n);
  atomic_fetch_add(&served, ok);
  return NULL;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: client-hits SOCKET FILE [THREADS] [SECONDS]\n");
    return 2;
  }
  unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 8;
  double seconds = argc > 4 ? atof(argv[4]) : 3;
  if (threads < 1 || threads > 256 || seconds <= 0) {
    fprintf(stderr, "client-hits: THREADS must be 1..256 and SECONDS > 0\n");
    return 2;
  }
  int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (off_t)PIECE) {
    fprintf(stderr, "client-hits: %s: cannot open, or smaller than 64 KiB\n", argv[2]);
    return 1;
  }
  file_size = (uint64_t)st.st_size;
  if (sl_csc_get(argv[1], &client) < 0 || sl_csc_layer_add(client, fd, false, &layer) < 0 ||
      sl_arena_create("client-hits", 64u << 20, &arena) < 0) {
    fprintf(stderr, "client-hits: setup failed\n");
    return 1;
  }
  /* Warm: every piece once, so that the timed part sees hits only. */
  void *buf = sl_arena_alloc(arena, PIECE);
  uint64_t warm = 0;
  for (uint64_t off = 0; off < file_size; off += PIECE) {
    struct sl_csc_io io = {.layer = layer, .file_offset = off,
                           .length = (uint32_t)SL_MIN(PIECE, file_size - off), .buf = buf};
    warm += (uint64_t)sl_csc_read(client, &io, 1, 5000000000ull);
  }
  sl_arena_free(arena, buf);
  if (warm == 0) {
    fprintf(stderr, "client-hits: the daemon at %s served nothing\n", argv[1]);
    return 1;
  }
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  uint64_t t0 = sl_now_ns();
  pthread_t t[256];
  for (unsigned i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1));
  struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  atomic_store(&stop, true);
  for (unsigned i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  uint64_t t1 = sl_now_ns();
  getrusage(RUSAGE_SELF, &r1);
  double n = (double)atomic_load(&done);
  double cpu_us = ((r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec)) * 1e6 +
                  ((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec));
  printf("{\"threads\": %u, \"requests\": %.0f, \"served\": %" PRIu64 ", \"rate\": %.0f, "
         "\"cpu_us_per_req\": %.2f, \"vcs_per_req\": %.3f, \"ivcs_per_req\": %.3f}\n",
         threads, n, (uint64_t)atomic_load(&served), n / ((t1 - t0) / 1e9), cpu_us / n,
         (r1.ru_nvcsw - r0.ru_nvcsw) / n, (r1.ru_nivcsw - r0.ru_nivcsw) / n);
  sl_arena_destroy(arena);
  sl_csc_layer_remove(client, layer);
  sl_csc_put(client);
  return 0;
}
