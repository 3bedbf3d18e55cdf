/* sluice disk: create and show disk descriptors.
 *
 *   sluice disk create DESC IMAGE    a descriptor for IMAGE with no filters
 *   sluice disk show DESC            the disk as it opens: image and stack
 *
 * A descriptor is edited with `sluice filter attach|detach`; the format is
 * in sluice-disk(1). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include "disk/descriptor.h"
#include "tools/cli.h"

static int disk_usage(FILE *f)
{
  fprintf(f, "Usage: sluice disk create DESC IMAGE\n"
             "       sluice disk show DESC\n");
  return f == stdout ? 0 : 1;
}

static int disk_create(int argc, char **argv)
{
  if (argc != 3)
    return disk_usage(stderr);
  const char *path = argv[1], *image = argv[2];
  if (access(path, F_OK) == 0)
    return cli_fail("disk", "%s: already exists", path);
  struct sl_descriptor *d;
  if (sl_descriptor_new(path, image, &d) < 0)
    return cli_fail("disk", "%s", sl_last_error());
  /* The image must open (and say what it is) before we point at it. */
  struct sl_disk *disk;
  struct sl_disk_open_opts o = {.read_only = true};
  int r = sl_disk_open_descriptor(d, &o, &disk);
  /* Record the format found, so that the disk never probes again: a raw
   * image whose guest writes a qcow2 header must stay raw (issue 10). */
  if (r == 0) {
    if (!d->format &&
        !(d->format = strdup(sl_format_name(sl_image_format(sl_disk_image(disk))))))
      r = sl_error(ENOMEM, "out of memory");
    sl_disk_close(disk);
  }
  if (r == 0) {
    r = sl_descriptor_save(d, path);
  }
  sl_descriptor_free(d);
  if (r < 0)
    return cli_fail("disk", "%s", sl_last_error());
  return 0;
}

static int disk_show(int argc, char **argv)
{
  if (argc != 2)
    return disk_usage(stderr);
  struct sl_disk *disk;
  struct sl_disk_open_opts o = {.read_only = true};
  if (sl_disk_open(argv[1], &o, &disk) < 0)
    return cli_fail("disk", "%s", sl_last_error());
  sl_disk_describe(disk, stdout);
  sl_disk_close(disk);
  return 0;
}

int cmd_disk(int argc, char **argv)
{
  if (argc < 2)
    return disk_usage(stderr);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
    return disk_usage(stdout);
  if (strcmp(argv[1], "create") == 0)
    return disk_create(argc - 1, argv + 1);
  if (strcmp(argv[1], "show") == 0)
    return disk_show(argc - 1, argv + 1);
  cli_fail("disk", "unknown subcommand '%s'", argv[1]);
  return disk_usage(stderr), 1;
}
