/* sluice io: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_io(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("io", "not implemented yet");
}
