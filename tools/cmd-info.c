/* sluice info: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_info(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("info", "not implemented yet");
}
