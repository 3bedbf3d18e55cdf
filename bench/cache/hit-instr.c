/* Instructions per operation of twophase, for callgrind (bench/cache/instr.sh).
 *
 * Wall-clock rates on a shared machine move by a factor of two between
 * runs (docs/benchmarks.md), too much to see a change of a tenth in the
 * hit path.  An instruction count does not move with the load: this
 * program replays cache-bench's workloads (a) and (b) on one thread --
 * Zipf(1.0) keys over a footprint, a cache of the whole footprint (all
 * hits after a warm-up pass) or of 10% of it -- for a given number of
 * passes, and instr.sh runs it under callgrind with 0 passes and with N,
 * so that the difference divided by the operations is what one operation
 * costs, setup and warm-up excluded.  It uses only the public API
 * (twophase.h), so it builds against an older tree's library as well.
 *   hit-instr a|b PASSES [FOOTPRINT]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/twophase.h"

static uint64_t hash64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

int main(int argc, char **argv)
{
  if (argc < 3 || (strcmp(argv[1], "a") != 0 && strcmp(argv[1], "b") != 0)) {
    fprintf(stderr, "usage: hit-instr a|b PASSES [FOOTPRINT]\n");
    return 2;
  }
  long passes = atol(argv[2]);
  uint64_t n = argc > 3 ? strtoull(argv[3], NULL, 0) : 1 << 20;
  if (passes < 0 || n < 100) {
    fprintf(stderr, "hit-instr: PASSES must be >= 0 and FOOTPRINT >= 100\n");
    return 2;
  }
  uint64_t nkeys = 2 * n;
  double *cdf = malloc(n * sizeof *cdf), sum = 0, acc = 0;
  uint64_t *keys = malloc(nkeys * sizeof *keys);
  if (!cdf || !keys)
    abort();
  for (uint64_t i = 0; i < n; i++)
    sum += 1.0 / (double)(i + 1);
  for (uint64_t i = 0; i < n; i++) {
    acc += 1.0 / (double)(i + 1) / sum;
    cdf[i] = acc;
  }
  /* the same stream as cache-bench's first thread */
  uint64_t s = 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t i = 0; i < nkeys; i++) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    double u = (double)(s >> 11) / 9007199254740992.0;
    uint64_t lo = 0, hi = n - 1;
    while (lo < hi) {
      uint64_t mid = (lo + hi) / 2;
      if (cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    keys[i] = hash64(lo + 1);
  }
  struct sl_twophase_params p = {.capacity = argv[1][0] == 'a' ? n : n / 10};
  struct sl_twophase *t = sl_twophase_create(&p);
  if (!t)
    abort();
  /* The stream in batches of 1024, as cache-bench replays it: a tree that
   * has sl_twophase_count_requests (issue 15, fifth round) learns its
   * requests from the caller, once a batch; older trees count them on
   * the hit path.  The inner loop is the same either way. */
  for (uint64_t c = 0; c < nkeys; c += 1024) { /* warm-up: one pass */
    uint64_t end = c + 1024 < nkeys ? c + 1024 : nkeys;
#ifdef SL_TWOPHASE_COUNT_REQUESTS
    sl_twophase_count_requests(t, end - c);
#endif
    for (uint64_t i = c; i < end; i++)
      sl_twophase_access(t, keys[i]);
  }
  uint64_t hits = 0;
  for (long r = 0; r < passes; r++)
    for (uint64_t c = 0; c < nkeys; c += 1024) {
      uint64_t end = c + 1024 < nkeys ? c + 1024 : nkeys;
#ifdef SL_TWOPHASE_COUNT_REQUESTS
      sl_twophase_count_requests(t, end - c);
#endif
      for (uint64_t i = c; i < end; i++)
        hits += sl_twophase_access(t, keys[i]);
    }
  printf("ops %" PRIu64 " hits %" PRIu64 "\n", (uint64_t)passes * nkeys, hits);
  sl_twophase_destroy(t);
  free(keys);
  free(cdf);
  return 0;
}
