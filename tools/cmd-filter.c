/* sluice filter: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_filter(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("filter", "not implemented yet");
}
