/* filter-stack: what a layer of the filter stack costs.
 *
 * Opens the same image several times in one process, each time under a
 * different number of pass-through filters (0, 1, 4 and 8 by default), and
 * sends 4K random reads to each in turn.  The disks run in short slices,
 * interleaved and in a rotating order, for several rounds; each keeps its
 * best and median slice.  A moment of contention on a shared machine then
 * hits every depth alike instead of one, and the ratios to 0 filters are
 * what to read.
 *
 * Reads are synchronous, one thread by default: with one request in flight
 * the time per request is the stack's cost plus the image's, nothing hides
 * it.  Offsets come from a hash of the request number, so every depth
 * reads the same offsets in the same slice of a round.
 *
 * Two clocks: the wall clock (IOPS as a user sees them) and the CPU time
 * of this process (IOPS per busy core).  On a machine shared with other
 * work the wall clock also counts the time the reader waited for a core,
 * which has nothing to do with the stack; page-cached reads are CPU-bound,
 * so the CPU-time figure is the steadier measure of what a layer costs.
 *
 *   filter-stack [--depths 0,1,4,8] [--rounds N] [--count N] [--threads N]
 *                [--filter NAME] IMAGE
 *
 * The filter module must be installed ($SLUICE_FILTER_DIR); bench/
 * filter-stack.sh sets that up. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>
#include "common/util.h"

#define MAX_DEPTHS 8
#define MAX_FILTERS 64
#define MAX_ROUNDS 2000
#define MAX_THREADS 16
#define BLOCK 4096

struct depth {
  int n;                              /* filters in the stack */
  struct sl_disk *disk;
  struct sl_handle *h;
  double iops[MAX_ROUNDS];       /* by the wall clock */
  double cpu_iops[MAX_ROUNDS];   /* by the process's CPU time */
};

struct slice {
  struct sl_handle *h;
  uint64_t first, count, blocks;
  int failed;
};

static void *reader(void *opaque)
{
  struct slice *s = opaque;
  void *buf;
  if (posix_memalign(&buf, BLOCK, BLOCK) != 0) {
    s->failed = 1;
    return NULL;
  }
  for (uint64_t i = s->first; i < s->first + s->count; i++) {
    uint64_t off = (sl_mix64(i) % s->blocks) * BLOCK;
    if (sl_disk_pread(s->h, buf, BLOCK, off, 0) < 0) {
      fprintf(stderr, "filter-stack: read at %" PRIu64 ": %s\n", off,
              sl_last_error());
      s->failed = 1;
      break;
    }
  }
  free(buf);
  return NULL;
}

static uint64_t cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* COUNT reads from THREADS threads, starting at request number FIRST;
 * returns requests per second by the wall clock (and in *cpu_rate by the
 * CPU time this process used), or -1. */
static double run_slice(struct sl_handle *h, uint64_t first, uint64_t count,
                        int threads, double *cpu_rate)
{
  struct slice s[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  uint64_t blocks = sl_disk_size(h) / BLOCK, per = count / (uint64_t)threads;
  uint64_t t0 = sl_now_ns(), c0 = cpu_ns();
  for (int t = 0; t < threads; t++) {
    s[t] = (struct slice){h, first + (uint64_t)t * per, per, blocks, 0};
    if (threads == 1)
      reader(&s[0]);
    else if (pthread_create(&tid[t], NULL, reader, &s[t]) != 0)
      return -1;
  }
  if (threads > 1)
    for (int t = 0; t < threads; t++)
      pthread_join(tid[t], NULL);
  double secs = (double)(sl_now_ns() - t0) / 1e9;
  double cpu_secs = (double)(cpu_ns() - c0) / 1e9;
  for (int t = 0; t < threads; t++)
    if (s[t].failed)
      return -1;
  if (cpu_rate)
    *cpu_rate = (double)(per * (uint64_t)threads) / cpu_secs;
  return (double)(per * (uint64_t)threads) / secs;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
  double s[MAX_ROUNDS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double best(const double *v, int n)
{
  double m = 0;
  for (int i = 0; i < n; i++)
    m = v[i] > m ? v[i] : m;
  return m;
}

/* The table, and the least-squares slope of CPU time per request against
 * the number of filters: what one more filter adds, in ns and as a share
 * of a request through no filter. */
static void report(const struct depth *depths, int nd, int rounds)
{
  double med0 = median(depths[0].iops, rounds);
  double cmed0 = median(depths[0].cpu_iops, rounds);
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  printf("| filters | best IOPS | median IOPS | ratio | CPU-time IOPS (median) "
         "| ratio | cost per filter |\n");
  printf("|--------:|----------:|------------:|------:|-----------------------:"
         "|------:|----------------:|\n");
  for (int k = 0; k < nd; k++) {
    double b = best(depths[k].iops, rounds), m = median(depths[k].iops, rounds);
    double cm = median(depths[k].cpu_iops, rounds);
    printf("| %7d | %9.0f | %11.0f | %5.3f | %22.0f | %5.3f |", depths[k].n,
           b, m, m / med0, cm, cm / cmed0);
    if (depths[k].n > 0)
      printf(" %14.2f%% |\n", (1 - cm / cmed0) * 100 / depths[k].n);
    else
      printf(" %15s |\n", "-");
    double x = depths[k].n, y = 1e9 / cm;
    sx += x; sy += y; sxx += x * x; sxy += x * y;
  }
  if (nd > 1 && nd * sxx - sx * sx > 0) {
    double slope = (nd * sxy - sx * sy) / (nd * sxx - sx * sx);
    double base = 1e9 / cmed0;
    printf("\nCPU time per request: %.0f ns through no filter; each filter "
           "adds %.1f ns (%.2f%%, least squares over the depths)\n",
           base, slope, slope / base * 100);
  }
}

/* Open IMAGE under N filters of module FILTER named FILTER1..FILTERn. */
static int open_depth(const char *image, const char *filter, struct depth *d)
{
  char specs[MAX_FILTERS][80];
  const char *extra[MAX_FILTERS];
  for (int i = 0; i < d->n; i++) {
    snprintf(specs[i], sizeof specs[i], "%s:name=%s%d", filter, filter, i + 1);
    extra[i] = specs[i];
  }
  struct sl_disk_open_opts o = {
    .read_only = true, .extra_filters = extra, .n_extra_filters = (size_t)d->n,
  };
  if (sl_disk_open(image, &o, &d->disk) < 0) {
    fprintf(stderr, "filter-stack: %s under %d %s filters: %s\n", image, d->n,
            filter, sl_last_error());
    return -1;
  }
  d->h = sl_disk_top(d->disk);
  return 0;
}

static void usage(FILE *f)
{
  fputs("Usage: filter-stack [--depths 0,1,4,8] [--rounds N] [--count N]\n"
        "                    [--threads N] [--filter NAME] IMAGE\n", f);
}

int main(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"depths", required_argument, NULL, 'd'},
    {"rounds", required_argument, NULL, 'r'},
    {"count", required_argument, NULL, 'c'},
    {"threads", required_argument, NULL, 't'},
    {"filter", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  static struct depth depths[MAX_DEPTHS];
  int nd = 0, rounds = 101, threads = 1;
  uint64_t count = 4000;
  const char *depth_list = "0,1,4,8", *filter = "passthru";
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 'd': depth_list = optarg; break;
    case 'r': rounds = atoi(optarg); break;
    case 'c': count = strtoull(optarg, NULL, 10); break;
    case 't': threads = atoi(optarg); break;
    case 'f': filter = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 1;
    }
  }
  if (optind != argc - 1 || rounds < 1 || rounds > MAX_ROUNDS || count < 1 ||
      threads < 1 || threads > MAX_THREADS) {
    usage(stderr);
    return 1;
  }
  for (const char *p = depth_list; *p && nd < MAX_DEPTHS;) {
    char *end;
    long n = strtol(p, &end, 10);
    if (end == p || n < 0 || n > MAX_FILTERS) {
      fprintf(stderr, "filter-stack: bad --depths '%s'\n", depth_list);
      return 1;
    }
    depths[nd++] = (struct depth){.n = (int)n};
    p = *end == ',' ? end + 1 : end;
  }
  const char *image = argv[optind];
  int ret = 1, opened = 0;
  for (; opened < nd; opened++)
    if (open_depth(image, filter, &depths[opened]) < 0)
      goto out;

  /* One warm-up slice each (page cache, L2 cache, branch predictors). */
  for (int k = 0; k < nd; k++)
    if (run_slice(depths[k].h, 0, count, threads, NULL) < 0)
      goto out;
  for (int r = 0; r < rounds; r++)
    for (int j = 0; j < nd; j++) {
      struct depth *d = &depths[(r + j) % nd];
      double v = run_slice(d->h, (uint64_t)r * count, count, threads,
                           &d->cpu_iops[r]);
      if (v < 0)
        goto out;
      d->iops[r] = v;
    }
  report(depths, nd, rounds);
  ret = 0;
out:
  for (int k = 0; k < opened; k++)
    sl_disk_close(depths[k].disk);
  return ret;
}
