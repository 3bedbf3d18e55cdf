/* sluice bench: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_bench(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("bench", "not implemented yet");
}
