/* libFuzzer target: the rbd: name parser (lib/image/rbd-spec.c).  The
 * input is a name; whatever it is, the parser must not crash, and a name
 * it accepts, printed back by sl_rbd_spec_format, must parse to the same
 * pool, namespace, image, snapshot and options -- the property backing
 * files of RBD clones rely on (rbd.c prints the parent's name that way). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/rbd-spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, const char *b)
{
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* Always a candidate: most inputs then reach past the "rbd:" check. */
  char *name = malloc(size + 5);
  if (!name)
    return 0;
  memcpy(name, "rbd:", 4);
  memcpy(name + 4, data, size);
  name[size + 4] = '\0';
  struct sl_rbd_spec a, b;
  if (sl_rbd_spec_parse(name, &a) == 0) {
    char *again = sl_rbd_spec_format(&a, a.pool, a.ns, a.image, a.snap);
    if (!again)
      abort();
    if (sl_rbd_spec_parse(again, &b) != 0)
      abort();
    if (!same(a.pool, b.pool) || !same(a.ns, b.ns) || !same(a.image, b.image) ||
        !same(a.snap, b.snap) || !same(a.conf, b.conf) || !same(a.user, b.user) ||
        a.n_opts != b.n_opts)
      abort();
    for (size_t i = 0; i < a.n_opts; i++)
      if (!same(a.keys[i], b.keys[i]) || !same(a.values[i], b.values[i]))
        abort();
    sl_rbd_spec_clear(&b);
    free(again);
    sl_rbd_spec_clear(&a);
  }
  free(name);
  return 0;
}
