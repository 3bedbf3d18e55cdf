/* sluice sim: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_sim(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("sim", "not implemented yet");
}
