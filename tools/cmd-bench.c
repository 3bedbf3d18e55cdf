/* sluice bench: the I/O pattern of `qemu-img bench` (same options, same
 * defaults, same first lines of output) run through a sluice disk, so that
 * both tools can be compared on one file in one run.  --random, which
 * qemu-img bench lacks, picks buffer-aligned offsets uniformly.
 *
 * qemu-img keeps DEPTH requests in flight with AIO in one thread; the
 * sluice image API is synchronous and thread-safe, so DEPTH is served by a
 * pool of threads, one request in flight each.  How many threads pays
 * depends on where a request spends its time (measured on 2 cores, see
 * docs/benchmarks.md): with -t none a thread sleeps in the device, so the
 * device queue only fills with many threads (4K reads: 15k/s with 4,
 * 50k/s with 16-32); through the page cache a request is CPU-bound
 * copying, and beyond a few threads they only contend. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "tools/cli.h"

#define MAX_THREADS_DIRECT 32
#define MAX_THREADS_CACHED 4
#define MAX_THREADS MAX_THREADS_DIRECT

static const char usage_text[] =
  "Usage: sluice bench [-c COUNT] [-d DEPTH] [-f FMT] [-n] [-i AIO] [-o OFFSET]\n"
  "                    [-s BUFFER_SIZE] [-S STEP_SIZE] [-t CACHE] [-w] [-q] [-U]\n"
  "                    [--pattern=N] [--flush-interval=N] [--no-drain]\n"
  "                    [--random] [--at FILTER] FILE\n"
  "\n"
  "Send COUNT (75000) requests of BUFFER_SIZE (4K) bytes, DEPTH (64) at a time,\n"
  "starting at OFFSET (0) and STEP_SIZE (the buffer size) apart, wrapping at\n"
  "the end of the image; reads unless -w.  -t none bypasses the host page\n"
  "cache (O_DIRECT); writeback (default) uses it.  --random picks offsets at\n"
  "random instead of stepping.  -U (--force-share, without -w) reads an\n"
  "image another process writes.  Options as in qemu-img bench.\n";

struct bench {
  struct sl_handle *h;
  uint64_t count, size, offset, step, bufsize, flush_interval;
  bool write, random;
  int pattern;
  atomic_uint_fast64_t next;
  atomic_int failed;
};

/* splitmix64 (the golden-ratio step, then sl_mix64's finaliser): a
 * well-mixed hash of the request number, so --random visits the same
 * offsets in every run whatever the number of threads. */
static uint64_t mix64(uint64_t x)
{
  return sl_mix64(x + 0x9e3779b97f4a7c15ull);
}

static uint64_t request_offset(const struct bench *b, uint64_t i)
{
  uint64_t span = b->size - b->offset;
  if (b->random)
    return b->offset + (mix64(i) % (span / b->bufsize)) * b->bufsize;
  /* Positions wrap when a request would cross the end of the image. */
  uint64_t per_lap = (span - b->bufsize) / b->step + 1;
  return b->offset + (i % per_lap) * b->step;
}

static void *worker(void *opaque)
{
  struct bench *b = opaque;
  void *buf;
  if (posix_memalign(&buf, 4096, b->bufsize) != 0) {
    atomic_store(&b->failed, 1);
    return NULL;
  }
  memset(buf, b->pattern, b->bufsize);
  for (;;) {
    uint64_t i = atomic_fetch_add(&b->next, 1);
    if (i >= b->count || atomic_load(&b->failed))
      break;
    uint64_t off = request_offset(b, i);
    int r = b->write ? sl_disk_pwrite(b->h, buf, b->bufsize, off, 0)
                     : sl_disk_pread(b->h, buf, b->bufsize, off, 0);
    if (r == 0 && b->flush_interval && (i + 1) % b->flush_interval == 0)
      r = sl_disk_flush(b->h);
    if (r < 0) {
      if (!atomic_exchange(&b->failed, 1))
        cli_fail("bench", "%s at offset %" PRIu64 ": %s",
                 b->write ? "write" : "read", off, sl_last_error());
      break;
    }
  }
  free(buf);
  return NULL;
}

static int parse_num(const char *what, const char *s, uint64_t min, uint64_t *out)
{
  if (sl_parse_size(what, s, out) < 0 || *out < min)
    return cli_fail("bench", "%s: '%s' is not a valid number", what, s);
  return 0;
}

int cmd_bench(int argc, char **argv)
{
  enum { OPT_PATTERN = 256, OPT_FLUSH, OPT_NO_DRAIN, OPT_RANDOM, OPT_AT };
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"pattern", required_argument, NULL, OPT_PATTERN},
    {"flush-interval", required_argument, NULL, OPT_FLUSH},
    {"no-drain", no_argument, NULL, OPT_NO_DRAIN},
    {"random", no_argument, NULL, OPT_RANDOM},
    {"at", required_argument, NULL, OPT_AT},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
  };
  struct bench b = {.count = 75000, .bufsize = 4096, .pattern = 0};
  struct sl_disk_open_opts o = {0};
  uint64_t depth = 64, v;
  bool quiet = false, step_given = false;
  const char *at = NULL;
  int c;

  while ((c = getopt_long(argc, argv, "c:d:f:ni:o:s:S:t:wqUh", longopts, NULL)) != -1) {
    switch (c) {
    case 'c': if (parse_num("count", optarg, 1, &b.count)) return 1; break;
    case 'd': if (parse_num("depth", optarg, 1, &depth)) return 1; break;
    case 'f':
      if (sl_format_parse(optarg, &o.format) < 0)
        return cli_fail("bench", "%s", sl_last_error());
      break;
    case 'n': break; /* native AIO: our threads are the equivalent */
    case 'i':
      if (strcmp(optarg, "threads") && strcmp(optarg, "native") && strcmp(optarg, "io_uring"))
        return cli_fail("bench", "-i: '%s' is not threads, native or io_uring", optarg);
      break;
    case 'o': if (parse_num("offset", optarg, 0, &b.offset)) return 1; break;
    case 's': if (parse_num("buffer size", optarg, 1, &b.bufsize)) return 1; break;
    case 'S':
      if (parse_num("step size", optarg, 1, &b.step)) return 1;
      step_given = true;
      break;
    case 't':
      if (sl_cache_mode_parse(optarg, &o.direct, &o.dsync, &o.no_flush) < 0)
        return cli_fail("bench", "-t: %s", sl_last_error());
      break;
    case 'w': b.write = true; break;
    case 'q': quiet = true; break;
    case 'U': o.force_share = true; break;
    case OPT_PATTERN:
      if (sl_parse_uint("pattern", optarg, 0, 255, &v) < 0)
        return cli_fail("bench", "%s", sl_last_error());
      b.pattern = (int)v;
      break;
    case OPT_FLUSH: if (parse_num("flush interval", optarg, 0, &b.flush_interval)) return 1; break;
    case OPT_NO_DRAIN: break; /* flushes never wait for the others here */
    case OPT_RANDOM: b.random = true; break;
    case OPT_AT: at = optarg; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(usage_text, stderr);
    return cli_fail("bench", optind >= argc ? "no FILE given" : "too many arguments");
  }
  if (!step_given)
    b.step = b.bufsize;
  if (b.flush_interval && !b.write)
    return cli_fail("bench", "--flush-interval is only allowed with -w");
  const char *file = argv[optind];
  o.read_only = !b.write;
  if (o.force_share && b.write)
    return cli_fail("bench", "%s: -U (force-share) is for reads only, not -w", file);
  struct sl_disk *disk;
  if (sl_disk_open(file, &o, &disk) < 0)
    return cli_fail("bench", "%s", sl_last_error());
  b.h = at ? sl_disk_at(disk, at) : sl_disk_top(disk);
  if (!b.h) {
    sl_disk_close(disk);
    return cli_fail("bench", "%s: --at %s: %s", file, at, sl_last_error());
  }
  b.size = sl_disk_size(b.h);
  if (b.offset + b.bufsize > b.size) {
    sl_disk_close(disk);
    return cli_fail("bench", "%s: offset %" PRIu64 " + buffer size %" PRIu64
                    " exceed the image size %" PRIu64, file, b.offset, b.bufsize, b.size);
  }
  if (!quiet) {
    printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
           " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
           b.count, b.write ? "write" : "read", b.bufsize, depth, b.offset,
           b.random ? (uint64_t)0 : b.step);
    if (b.flush_interval)
      printf("Sending flush every %" PRIu64 " requests\n", b.flush_interval);
    fflush(stdout);
  }

  uint64_t cap = o.direct ? MAX_THREADS_DIRECT : MAX_THREADS_CACHED;
  int nthreads = (int)SL_MIN(depth, cap);
  pthread_t tids[MAX_THREADS];
  uint64_t t0 = sl_now_ns();
  int started = 0;
  for (; started < nthreads; started++)
    if (pthread_create(&tids[started], NULL, worker, &b) != 0)
      break;
  for (int i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  int r = atomic_load(&b.failed) ? -1 : sl_disk_flush(b.h);
  double secs = (double)(sl_now_ns() - t0) / 1e9;
  int close_r = sl_disk_close(disk);
  if (started == 0)
    return cli_fail("bench", "cannot start worker threads");
  if (r < 0 || atomic_load(&b.failed))
    return 1;
  if (close_r < 0)
    return cli_fail("bench", "%s: %s", file, sl_last_error());
  if (!quiet) {
    printf("Run completed in %.3f seconds.\n", secs);
    printf("%.0f requests/s, %.1f MiB/s\n", (double)b.count / secs,
           (double)b.count * (double)b.bufsize / secs / (1 << 20));
  }
  return 0;
}
