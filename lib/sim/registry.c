/* The list of policies the simulator knows.  Each lives in its own
 * policy-NAME.c; twophase comes from lib/cache/ and is declared weak so
 * that the simulator builds and runs whether or not it is linked in. */
#include <stddef.h>
#include <string.h>

#include "sim/policy.h"

extern const struct sl_sim_policy sl_sim_policy_fifo;
extern const struct sl_sim_policy sl_sim_policy_lru;
extern const struct sl_sim_policy sl_sim_policy_clock;
extern const struct sl_sim_policy sl_sim_policy_2q;
extern const struct sl_sim_policy sl_sim_policy_arc;
extern const struct sl_sim_policy sl_sim_policy_s3fifo;
extern const struct sl_sim_policy sl_sim_policy_s3fifo1;
extern const struct sl_sim_policy sl_sim_policy_sieve;
extern const struct sl_sim_policy sl_sim_policy_lirs;
extern const struct sl_sim_policy sl_sim_policy_belady;
extern const struct sl_sim_policy sl_sim_policy_wtinylfu;
extern const struct sl_sim_policy sl_sim_policy_wtinylfu_adapt;
extern const struct sl_sim_policy sl_sim_policy_wtinylfu_cbf;
extern const struct sl_sim_policy sl_sim_policy_twophase;
extern const struct sl_sim_policy sl_sim_policy_twophase_classic
  __attribute__((weak));

const struct sl_sim_policy *const *sl_sim_policies(void)
{
  static const struct sl_sim_policy *list[24];
  static int built;
  if (!built) {
    const struct sl_sim_policy *all[] = {
      &sl_sim_policy_fifo, &sl_sim_policy_lru, &sl_sim_policy_clock,
      &sl_sim_policy_2q, &sl_sim_policy_arc, &sl_sim_policy_s3fifo,
      &sl_sim_policy_s3fifo1, &sl_sim_policy_sieve, &sl_sim_policy_lirs,
      &sl_sim_policy_belady, &sl_sim_policy_wtinylfu,
      &sl_sim_policy_wtinylfu_adapt, &sl_sim_policy_wtinylfu_cbf,
      &sl_sim_policy_twophase, &sl_sim_policy_twophase_classic,
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
      if (all[i])
        list[n++] = all[i];
    list[n] = NULL;
    built = 1;
  }
  return list;
}

const struct sl_sim_policy *sl_sim_policy_find(const char *name)
{
  for (const struct sl_sim_policy *const *p = sl_sim_policies(); *p; p++)
    if (strcmp((*p)->name, name) == 0)
      return *p;
  return NULL;
}
