/* sluice mirror resync DESC: copy the regions the mirror filter recorded as
 * dirty from the primary to the mirror.
 *
 * The mirror filter resynchronises whenever it is opened writable, so this
 * command opens the disk writable and closes it again; it then reads the
 * dirty bitmap the filter keeps next to the descriptor and reports what, if
 * anything, is still out of sync (exit 1 then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include "tools/cli.h"

static long dirty_regions(const char *bitmap)
{
  FILE *f = fopen(bitmap, "re");
  if (!f)
    return 0;
  char magic[8];
  long count = 0;
  int c;
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "SLMIRBM1", 8) != 0) {
    fclose(f);
    return -1;
  }
  fseek(f, 32, SEEK_SET);   /* header: magic, granularity, size, reserved */
  while ((c = fgetc(f)) != EOF)
    count += __builtin_popcount((unsigned)c);
  fclose(f);
  return count;
}

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
  if (sl_disk_close(disk) < 0)
    return cli_fail("mirror", "%s", sl_last_error());
  char bitmap[4096];
  snprintf(bitmap, sizeof bitmap, "%s.mirror-dirty", desc);
  long n = dirty_regions(bitmap);
  if (n < 0)
    return cli_fail("mirror", "%s: not a mirror dirty bitmap", bitmap);
  if (n > 0)
    return cli_fail("mirror", "%s: %ld regions still differ from the mirror "
                    "(is the mirror reachable?)", desc, n);
  printf("%s: mirror in sync\n", desc);
  return 0;
}
