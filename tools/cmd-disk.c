/* sluice disk: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_disk(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("disk", "not implemented yet");
}
