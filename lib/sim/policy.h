/* The interface every replacement policy offers the trace simulator.
 *
 * The simulator replays a trace of block ids against one policy instance
 * of a fixed capacity (in blocks).  For each request it calls access(); the
 * policy answers hit or miss and, on a miss, admits the block, evicting as
 * it sees fit.  NEXT_USE is the index of the next request for the same
 * block (UINT64_MAX if never): only offline policies (Belady) may look at
 * it.  Instances are single-threaded here; the concurrent cache structure
 * behind `twophase` has its own API in lib/cache/twophase.h.
 */
#ifndef SLUICE_SIM_POLICY_H
#define SLUICE_SIM_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct sl_sim_policy {
  const char *name;          /* as on the command line: "lru", "s3fifo" ... */
  const char *description;   /* one line for --help */
  bool needs_future;         /* the simulator must compute NEXT_USE */
  void *(*create)(uint64_t capacity);
  /* Optional: create with ARGS, the text after "NAME:" on the command
   * line ("twophase:cold=0.05:classic=1"); NULL with a message (sl_error)
   * if ARGS is not understood.  A policy without it takes no arguments. */
  void *(*create_args)(uint64_t capacity, const char *args);
  const char *args;          /* set on the copy cmd-sim makes for "NAME:ARGS" */
  bool (*access)(void *state, uint64_t block, uint64_t next_use);
  void (*destroy)(void *state);
};

/* The registry (lib/sim/registry.c). */
const struct sl_sim_policy *sl_sim_policy_find(const char *name);
/* NULL-terminated list of every registered policy. */
const struct sl_sim_policy *const *sl_sim_policies(void);

#endif
