/* sluice serve: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_serve(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("serve", "not implemented yet");
}
