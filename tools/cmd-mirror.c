/* sluice mirror resync DESC: copy the regions the mirror filter recorded as
 * dirty from the primary to the mirror.
 *
 * The mirror filter resynchronises whenever it is opened writable, so this
 * command opens the disk writable, asks each mirror filter in the stack
 * (query "mirror.dirty" v1) what, if anything, is still out of sync (exit 1
 * then), and closes it again. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include "tools/cli.h"

/* The reply to the mirror filter's "mirror.dirty" query, version 1 (see
 * sluice-filter-mirror(1)): the tool asks the filter, it never reads the
 * filter's bitmap file itself. */
struct mirror_dirty_v1 {
  uint64_t regions;
  uint64_t granularity;
};

int cmd_mirror(int argc, char **argv)
{
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf("Usage: sluice mirror resync DESC\n");
    return 0;
  }
  if (argc != 3 || strcmp(argv[1], "resync") != 0)
    return cli_fail("mirror", "usage: sluice mirror resync DESC");
  const char *desc = argv[2];
  struct sl_disk *disk;
  struct sl_disk_open_opts o = {0};
  if (sl_disk_open(desc, &o, &disk) < 0)
    return cli_fail("mirror", "%s", sl_last_error());
  /* Every mirror in the stack: the regions still dirty after the resync
   * that opening the disk writable ran. */
  uint64_t n = 0;
  for (int i = 0; i < sl_disk_filter_count(disk); i++) {
    struct sl_disk_filter_info info;
    if (sl_disk_filter_info(disk, i, &info) < 0 || strcmp(info.module, "mirror") != 0)
      continue;
    struct mirror_dirty_v1 d = {0};
    int r = sl_disk_filter_query(disk, i, "mirror.dirty", 1, &d, sizeof d);
    if (r < 0 || (size_t)r < sizeof d) {
      cli_fail("mirror", "%s: %s", desc, r < 0 ? sl_last_error() : "short reply to mirror.dirty");
      sl_disk_close(disk);
      return 1;
    }
    n += d.regions;
  }
  if (sl_disk_close(disk) < 0)
    return cli_fail("mirror", "%s", sl_last_error());
  if (n > 0)
    return cli_fail("mirror", "%s: %" PRIu64 " regions still differ from the mirror "
                    "(is the mirror reachable?)", desc, n);
  printf("%s: mirror in sync\n", desc);
  return 0;
}
