/* sluice create: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_create(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("create", "not implemented yet");
}
