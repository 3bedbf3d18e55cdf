/* The trace simulator: replay one trace against (policy, cache size)
 * pairs and count misses.  Pairs are independent, so they run on a few
 * threads at once; each policy instance stays single-threaded.
 */
#ifndef SLUICE_SIM_SIM_H
#define SLUICE_SIM_SIM_H

#include <stdint.h>

#include "sim/policy.h"
#include "sim/trace.h"

struct sl_sim_job {
  const struct sl_sim_policy *policy;
  double size_fraction;
  uint64_t cache_blocks;   /* floor(size_fraction * footprint) */
  /* results */
  uint64_t misses;
  double miss_ratio;
  int error;               /* -errno if the policy could not be created */
};

/* Cache size in blocks for FRACTION of FOOTPRINT, rounded down as
 * libCacheSim does. */
uint64_t sl_sim_cache_blocks(double fraction, uint64_t footprint);

/* Replay T (with NEXT_USE, needed only if a job's policy needs_future;
 * may be NULL otherwise) for every job, on up to THREADS threads.
 * Returns 0, or the first job's error with a message. */
int sl_sim_run(const struct sl_trace *t, const uint64_t *next_use,
               struct sl_sim_job *jobs, unsigned njobs, unsigned threads);

#endif
