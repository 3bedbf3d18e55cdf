/* sluice mirror: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_mirror(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("mirror", "not implemented yet");
}
