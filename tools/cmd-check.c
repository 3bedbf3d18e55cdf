/* sluice check: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_check(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("check", "not implemented yet");
}
