/* Helpers shared by the cmocka tests of twophase (include after cmocka.h). */
#ifndef SLUICE_TESTS_TWOPHASE_TEST_H
#define SLUICE_TESTS_TWOPHASE_TEST_H

#include "cache/twophase.h"

/* A structure of CAP blocks in SHARDS shards (0: automatic), or the test fails. */
static inline struct sl_twophase *make_sharded(uint64_t cap, unsigned shards)
{
  struct sl_twophase_params p = {.capacity = cap, .shards = shards};
  struct sl_twophase *t = sl_twophase_create(&p);
  assert_non_null(t);
  return t;
}

static inline void assert_consistent(struct sl_twophase *t)
{
  char msg[256];
  if (sl_twophase_check(t, msg, sizeof msg) != 0)
    fail_msg("invariant broken: %s", msg);
}

#endif
