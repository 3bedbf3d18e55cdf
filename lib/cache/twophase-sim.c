/* The twophase structure as a simulator policy: the real concurrent code
 * with its defaults, driven one request at a time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/twophase.h"
#include "sluice/error.h"
#include "sim/policy.h"

static void *tp_create(uint64_t capacity)
{
  struct sl_twophase_params p = {.capacity = capacity ? capacity : 1};
  return sl_twophase_create(&p);
}

static void *tp_classic_create(uint64_t capacity)
{
  struct sl_twophase_params p = {.capacity = capacity ? capacity : 1, .classic = true};
  return sl_twophase_create(&p);
}

/* "cold=F:ghost=F:classic=0|1:adaptive=0|1:age=N:climb=F:climbmax=F:step=F:fill=N:margin=N": the tunables of
 * struct sl_twophase_params, for parameter sweeps (bench/policy-cv.sh). */
static void *tp_create_args(uint64_t capacity, const char *args)
{
  struct sl_twophase_params p = {.capacity = capacity ? capacity : 1};
  const char *a = args;
  while (*a) {
    const char *end = strchr(a, ':');
    if (!end)
      end = a + strlen(a);
    const char *eq = memchr(a, '=', (size_t)(end - a));
    char *stop;
    double v = eq ? strtod(eq + 1, &stop) : 0;
    if (!eq || stop != end || !(v >= 0)) {
      sl_error(EINVAL, "\"%.*s\" is not KEY=NUMBER", (int)(end - a), a);
      return NULL;
    }
    size_t k = (size_t)(eq - a);
    if (k == 4 && !strncmp(a, "cold", 4) && v < 1)
      p.cold_fraction = v;
    else if (k == 5 && !strncmp(a, "ghost", 5) && v <= 16)
      p.ghost_fraction = v;
    else if (k == 7 && !strncmp(a, "classic", 7))
      p.classic = v != 0;
    else if (k == 8 && !strncmp(a, "adaptive", 8))
      p.adaptive = v != 0;
    else if (k == 3 && !strncmp(a, "age", 3) && v < 8)
      p.contest_min_age = (unsigned)v;
    /* here 0 means off (the structure's 0 means its default) */
    else if (k == 5 && !strncmp(a, "climb", 5) && v <= 1000)
      p.climb = v > 0 ? v : -1;
    else if (k == 4 && !strncmp(a, "fill", 4) && v < 18)
      p.fill_hot = v > 0 ? (int)v : -1;
    else if (k == 6 && !strncmp(a, "margin", 6) && v < 16)
      p.contest_margin = v > 0 ? (int)v : -1;
    else if (k == 8 && !strncmp(a, "climbmax", 8) && v < 1)
      p.climb_max = v;
    else if (k == 4 && !strncmp(a, "step", 4) && v > 0 && v < 1)
      p.climb_step = v;
    else {
      sl_error(EINVAL, "unknown or out-of-range twophase argument \"%.*s\" (cold<1, "
               "ghost<=16, classic, adaptive, age<8, climb<=1000, climbmax<1, 0<step<1, fill<18, margin<16; 0 = off)", (int)(end - a), a);
      return NULL;
    }
    a = *end ? end + 1 : end;
  }
  struct sl_twophase *t = sl_twophase_create(&p);
  if (!t)
    sl_error(ENOMEM, "cannot create twophase with \"%s\"", args);
  return t;
}

/* Each request is reported to the climber before it is made, as the
 * hit path counted it before it stopped counting (docs/cache-policy.md,
 * "Hit path cost"): the simulated miss ratios are the same. */
static bool tp_access(void *state, uint64_t block, uint64_t next_use)
{
  (void)next_use;
  sl_twophase_count_requests(state, 1);
  return sl_twophase_access(state, block);
}

static void tp_destroy(void *state)
{
  sl_twophase_destroy(state);
}

const struct sl_sim_policy sl_sim_policy_twophase = {
  .name = "twophase",
  .description = "cold FIFO + ghost + hot clock ring with two-phase eviction (sluice's own)",
  .needs_future = false,
  .create = tp_create,
  .create_args = tp_create_args,
  .access = tp_access,
  .destroy = tp_destroy,
};

const struct sl_sim_policy sl_sim_policy_twophase_classic = {
  .name = "twophase-classic",
  .description = "twophase as before issue 15: every ghost hit enters hot",
  .needs_future = false,
  .create = tp_classic_create,
  .access = tp_access,
  .destroy = tp_destroy,
};
