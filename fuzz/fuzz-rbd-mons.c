/* libFuzzer target: the monitor list comparison (sl_rbd_mons_overlap,
 * lib/image/rbd-spec.c), which sluiced runs on the mon_host string every
 * REGISTER_RBD carries from a client.  The input is two lists separated
 * by the first newline; whatever they hold, the comparison must not crash
 * or read past either string, must be symmetric, and a list naming a
 * monitor must overlap itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/rbd-spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* Two separately allocated strings, so that ASan sees any overread. */
  const uint8_t *nl = memchr(data, '\n', size);
  size_t na = nl ? (size_t)(nl - data) : size, nb = nl ? size - na - 1 : 0;
  char *a = malloc(na + 1), *b = malloc(nb + 1);
  if (!a || !b) {
    free(a);
    free(b);
    return 0;
  }
  memcpy(a, data, na);
  a[na] = 0;
  if (nb)
    memcpy(b, nl + 1, nb);
  b[nb] = 0;
  if (sl_rbd_mons_overlap(a, b) != sl_rbd_mons_overlap(b, a))
    abort();
  /* Anything that overlaps something overlaps itself. */
  if (sl_rbd_mons_overlap(a, b) && !sl_rbd_mons_overlap(a, a))
    abort();
  free(a);
  free(b);
  return 0;
}
