/* sluice: the command-line front end.  Each subcommand lives in its own
 * tools/cmd-*.c; this file only dispatches and prints help. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <sluice/error.h>
#include <sluice/image.h>
#include "config.h"
#include "tools/cli.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} commands[] = {
  {"create", cmd_create, "create a qcow2 or raw image, optionally over a backing file"},
  {"info", cmd_info, "show an image, its backing chain or a disk's filter stack"},
  {"check", cmd_check, "check (and repair) a qcow2 image's metadata"},
  {"convert", cmd_convert, "copy an image, chain or disk to a new raw or qcow2 image"},
  {"bench", cmd_bench, "measure I/O on an image or disk (qemu-img bench options)"},
  {"io", cmd_io, "read, write, zero or discard a range of an image or disk"},
  {"sim", cmd_sim, "replay a block trace against cache replacement policies"},
  {"serve", cmd_serve, "export a disk over NBD and/or FUSE"},
  {"disk", cmd_disk, "create and show disk descriptors"},
  {"filter", cmd_filter, "install, list and remove filter modules; attach to disks"},
  {"mirror", cmd_mirror, "resynchronise a disk's mirror"},
  {"owner", cmd_owner, "show who owns a disk (holds it for writing)"},
  {"release", cmd_release, "ask the owner of a disk to release it"},
  {"cache", cmd_cache, "show or drop what the host cache daemon (sluiced) holds"},
  {"demo", cmd_demo, "boot storm of linked clones, without and with sluiced"},
};

static void usage(FILE *f)
{
  fprintf(f, "Usage: sluice COMMAND [OPTIONS]...\n\nCommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n'sluice COMMAND --help' describes a command; man sluice-COMMAND has more.\n");
}

static int vfail(const char *cmd, bool lib, const char *fmt, va_list ap)
{
  fprintf(stderr, "sluice %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  if (lib)
    fprintf(stderr, ": %s", sl_last_error());
  fputc('\n', stderr);
  return 1;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfail(cmd, false, fmt, ap);
  va_end(ap);
  return 1;
}

int cli_fail_lib(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfail(cmd, true, fmt, ap);
  va_end(ap);
  return 1;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return 1;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
    /* Optional features after a '+', so scripts (the RBD tests) can ask. */
    printf("sluice %s%s\n", SLUICE_VERSION, sl_image_have_rbd() ? " +rbd" : "");
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(cmd, commands[i].name) == 0)
      return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "sluice: unknown command '%s'\n", cmd);
  usage(stderr);
  return 1;
}
