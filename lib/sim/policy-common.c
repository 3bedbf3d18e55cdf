/* Create and destroy for the state every simulator policy shares
 * (policy-common.h says why it is shared). */
#include "sim/policy-common.h"

#include <stdlib.h>

void *sl_simcache_create(size_t size, uint64_t capacity, uint64_t nodes)
{
  struct sl_simcache *c = calloc(1, size);
  if (!c)
    return NULL;
  c->capacity = capacity;
  for (int i = 0; i < SL_SIMCACHE_LISTS; i++)
    sl_list_init(&c->list[i]);
  if (sl_pool_init(&c->pool, nodes) < 0) {
    free(c);
    return NULL;
  }
  if (sl_simhash_init(&c->index, nodes) < 0) {
    sl_pool_free(&c->pool);
    free(c);
    return NULL;
  }
  return c;
}

void sl_simcache_destroy(void *state)
{
  struct sl_simcache *c = state;
  if (!c)
    return;
  sl_pool_free(&c->pool);
  sl_simhash_free(&c->index);
  free(c);
}
