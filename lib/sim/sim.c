/* The replay loop and its thread pool.
 *
 * Jobs are handed out through one atomic counter, biggest first (Belady
 * and large caches take longest), so two cores stay busy to the end.
 */
#include "sim/sim.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "sluice/error.h"

uint64_t sl_sim_cache_blocks(double fraction, uint64_t footprint)
{
  if (fraction <= 0)
    return 0;
  /* The tiny epsilon keeps 0.1 * 1000 at 100 despite binary rounding. */
  double b = fraction * (double)footprint * (1 + 1e-12);
  return b >= (double)footprint ? footprint : (uint64_t)b;
}

static void replay(const struct sl_trace *t, const uint64_t *next_use,
                   struct sl_sim_job *job)
{
  const struct sl_sim_policy *p = job->policy;
  void *state = p->args && p->create_args ? p->create_args(job->cache_blocks, p->args)
                                           : p->create(job->cache_blocks);
  if (!state) {
    job->error = -ENOMEM;
    return;
  }
  uint64_t misses = 0;
  const uint64_t *blocks = t->blocks;
  uint64_t n = t->len;
  if (p->needs_future) {
    for (uint64_t i = 0; i < n; i++)
      misses += !p->access(state, blocks[i], next_use[i]);
  } else {
    for (uint64_t i = 0; i < n; i++)
      misses += !p->access(state, blocks[i], UINT64_MAX);
  }
  p->destroy(state);
  job->misses = misses;
  job->miss_ratio = n ? (double)misses / (double)n : 0.0;
  job->error = 0;
}

struct pool {
  const struct sl_trace *trace;
  const uint64_t *next_use;
  struct sl_sim_job *jobs;
  unsigned *order;
  unsigned njobs;
  atomic_uint next;
};

static void *worker(void *arg)
{
  struct pool *pool = arg;
  for (;;) {
    unsigned i = atomic_fetch_add(&pool->next, 1);
    if (i >= pool->njobs)
      return NULL;
    replay(pool->trace, pool->next_use, &pool->jobs[pool->order[i]]);
  }
}

static struct sl_sim_job *sort_jobs;
static int by_cost_desc(const void *a, const void *b)
{
  const struct sl_sim_job *x = &sort_jobs[*(const unsigned *)a];
  const struct sl_sim_job *y = &sort_jobs[*(const unsigned *)b];
  uint64_t cx = x->cache_blocks + (x->policy->needs_future ? 1ULL << 40 : 0);
  uint64_t cy = y->cache_blocks + (y->policy->needs_future ? 1ULL << 40 : 0);
  return cx < cy ? 1 : cx > cy ? -1 : 0;
}

int sl_sim_run(const struct sl_trace *t, const uint64_t *next_use,
               struct sl_sim_job *jobs, unsigned njobs, unsigned threads)
{
  for (unsigned i = 0; i < njobs; i++)
    if (jobs[i].policy->needs_future && !next_use)
      return sl_error(EINVAL, "policy %s needs next-use indices",
                      jobs[i].policy->name);
  unsigned *order = malloc((njobs ? njobs : 1) * sizeof *order);
  if (!order)
    return sl_error(ENOMEM, "out of memory");
  for (unsigned i = 0; i < njobs; i++)
    order[i] = i;
  sort_jobs = jobs;
  qsort(order, njobs, sizeof *order, by_cost_desc);

  struct pool pool = { t, next_use, jobs, order, njobs, 0 };
  if (threads < 1)
    threads = 1;
  if (threads > njobs)
    threads = njobs ? njobs : 1;
  pthread_t tids[64];
  if (threads > 64)
    threads = 64;
  unsigned started = 0;
  for (unsigned i = 1; i < threads; i++) {
    if (pthread_create(&tids[started], NULL, worker, &pool) != 0)
      break; /* run with fewer threads */
    started++;
  }
  worker(&pool);
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  free(order);

  for (unsigned i = 0; i < njobs; i++)
    if (jobs[i].error)
      return sl_error(-jobs[i].error, "policy %s with %llu blocks: %s",
                      jobs[i].policy->name,
                      (unsigned long long)jobs[i].cache_blocks,
                      "cannot allocate its state");
  return 0;
}
