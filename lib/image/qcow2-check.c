/* qcow2 consistency check (placeholder until the full walker lands). */
#include <errno.h>
#include <string.h>

#include <sluice/error.h>
#include "image/qcow2.h"

int qcow2_check(const char *path, unsigned repair, struct sl_check_result *res)
{
  (void)repair;
  memset(res, 0, sizeof *res);
  return sl_error(ENOTSUP, "%s: qcow2 check is not implemented yet", path);
}
